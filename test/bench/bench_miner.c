/*
 * Grouping accuracy and speed of the template miner on Loghub-format data.
 *
 *   bench_miner DIR
 *
 * For every DIR/<System>_*_structured.csv (sorted by name) it feeds the
 * Content column, line by line, to a fresh miner and prints
 *   BENCH ga_<System> <grouping accuracy>
 * then BENCH ga_average, and BENCH miner_lines_per_s: lines per second of
 * sh_miner_add over all datasets together (loaded in memory first, one
 * thread, best of 15 rounds, each round a fresh miner).
 *
 * Grouping accuracy as in LogPAI's evaluator: a line counts as right when
 * its predicted group holds exactly the lines of its true group (EventId).
 */
#define _POSIX_C_SOURCE 200809L
#include "self_heal/miner.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct dataset {
    char name[128];
    char **content;
    char **truth;
    size_t n, cap;
} dataset;

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *b = realloc(buf, cap * 2 + 1);
            if (b == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL)
        buf[n] = '\0';
    *len = n;
    return buf;
}

/* One RFC 4180 field starting at *p; returns a malloc'd copy, advances *p
 * past the field and sets *eol when it ended its row. */
static char *csv_field(const char **p, const char *end, int *eol)
{
    const char *s = *p;
    size_t cap = 64, n = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    int quoted = s < end && *s == '"';
    if (quoted)
        s++;
    while (s < end) {
        char c = *s;
        if (quoted) {
            if (c == '"') {
                if (s + 1 < end && s[1] == '"') {
                    c = '"';
                    s++;
                } else {
                    quoted = 0;
                    s++;
                    continue;
                }
            }
        } else if (c == ',' || c == '\n' || c == '\r') {
            break;
        }
        if (n + 2 > cap) {
            char *o = realloc(out, cap *= 2);
            if (o == NULL) {
                free(out);
                return NULL;
            }
            out = o;
        }
        out[n++] = c;
        s++;
    }
    out[n] = '\0';
    *eol = 1;
    if (s < end && *s == ',') {
        *eol = 0;
        s++;
    } else {
        if (s < end && *s == '\r')
            s++;
        if (s < end && *s == '\n')
            s++;
    }
    *p = s;
    return out;
}

static int load(dataset *d, const char *path)
{
    size_t len;
    char *text = read_file(path, &len);
    if (text == NULL)
        return -1;
    const char *p = text, *end = text + len;
    int col_content = -1, col_event = -1, col = 0, eol = 0;
    while (p < end && !eol) {
        char *h = csv_field(&p, end, &eol);
        if (h == NULL)
            return -1;
        if (strcmp(h, "Content") == 0)
            col_content = col;
        if (strcmp(h, "EventId") == 0)
            col_event = col;
        free(h);
        col++;
    }
    if (col_content < 0 || col_event < 0) {
        free(text);
        return -1;
    }
    while (p < end) {
        char *content = NULL, *truth = NULL;
        col = 0;
        eol = 0;
        while (p < end && !eol) {
            char *f = csv_field(&p, end, &eol);
            if (col == col_content)
                content = f;
            else if (col == col_event)
                truth = f;
            else
                free(f);
            col++;
        }
        if (content == NULL || truth == NULL || truth[0] == '\0') {
            free(content);
            free(truth);
            continue;
        }
        if (d->n == d->cap) {
            d->cap = d->cap ? d->cap * 2 : 1024;
            d->content = realloc(d->content, d->cap * sizeof(char *));
            d->truth = realloc(d->truth, d->cap * sizeof(char *));
        }
        d->content[d->n] = content;
        d->truth[d->n] = truth;
        d->n++;
    }
    free(text);
    return 0;
}

/* Grouping accuracy of predicted ids against the truth labels. */
typedef struct pair {
    uint64_t pred;
    const char *truth;
    size_t index;
} pair;

static int by_pred(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    if (x->pred != y->pred)
        return x->pred < y->pred ? -1 : 1;
    return strcmp(x->truth, y->truth);
}

static int by_truth(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    return strcmp(x->truth, y->truth);
}

static double grouping_accuracy(const dataset *d, const uint64_t *pred)
{
    pair *v = malloc(d->n * sizeof(*v));
    pair *t = malloc(d->n * sizeof(*t));
    for (size_t i = 0; i < d->n; i++)
        v[i] = t[i] = (pair){pred[i], d->truth[i], i};
    qsort(v, d->n, sizeof(*v), by_pred);
    qsort(t, d->n, sizeof(*t), by_truth);
    size_t correct = 0;
    for (size_t i = 0; i < d->n;) {
        size_t j = i;
        int pure = 1;
        while (j < d->n && v[j].pred == v[i].pred) {
            if (strcmp(v[j].truth, v[i].truth) != 0)
                pure = 0;
            j++;
        }
        if (pure) {
            /* the true group's size must equal the predicted group's */
            size_t lo = 0, hi = d->n;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (strcmp(t[mid].truth, v[i].truth) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            size_t k = lo;
            while (k < d->n && strcmp(t[k].truth, v[i].truth) == 0)
                k++;
            if (k - lo == j - i)
                correct += j - i;
        }
        i = j;
    }
    free(v);
    free(t);
    return d->n ? (double)correct / (double)d->n : 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    DIR *dir = opendir(argv[1]);
    if (dir == NULL) {
        perror(argv[1]);
        return 2;
    }
    char *names[256];
    size_t nnames = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && nnames < 256) {
        size_t l = strlen(e->d_name);
        if (l > 15 && strcmp(e->d_name + l - 15, "_structured.csv") == 0)
            names[nnames++] = strdup(e->d_name);
    }
    closedir(dir);
    qsort(names, nnames, sizeof(char *), by_name);
    if (nnames == 0) {
        fprintf(stderr, "%s: no *_structured.csv files\n", argv[1]);
        return 2;
    }
    dataset *sets = calloc(nnames, sizeof(*sets));
    double sum = 0;
    size_t total = 0;
    for (size_t i = 0; i < nnames; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], names[i]);
        dataset *d = &sets[i];
        size_t l = strcspn(names[i], "_");
        snprintf(d->name, sizeof(d->name), "%.*s", (int)l, names[i]);
        if (load(d, path) != 0) {
            fprintf(stderr, "%s: cannot read Content and EventId\n", path);
            return 2;
        }
        sh_miner *m;
        if (sh_miner_new(&m, NULL) != 0)
            return 1;
        uint64_t *pred = malloc(d->n * sizeof(*pred));
        for (size_t k = 0; k < d->n; k++)
            if (sh_miner_add(m, &pred[k], d->content[k], strlen(d->content[k])) != 0)
                return 1;
        for (size_t k = 0; k < d->n; k++)
            pred[k] = sh_miner_resolve(m, pred[k]);
        double ga = grouping_accuracy(d, pred);
        if (getenv("MINER_DUMP") != NULL && strcmp(getenv("MINER_DUMP"), d->name) == 0) {
            for (size_t k = 0; k < d->n; k++)
                fprintf(stderr, "%016llx\t%s\t%s\n", (unsigned long long)pred[k], d->truth[k],
                        d->content[k]);
        }
        printf("BENCH ga_%s %.4f\n", d->name, ga);
        fflush(stdout);
        sum += ga;
        total += d->n;
        free(pred);
        sh_miner_free(m);
    }
    printf("BENCH ga_average %.4f\n", sum / (double)nnames);

    double best = 1e30;
    for (int round = 0; round < 15; round++) {
        sh_miner *m;
        if (sh_miner_new(&m, NULL) != 0)
            return 1;
        double t0 = now();
        for (size_t i = 0; i < nnames; i++)
            for (size_t k = 0; k < sets[i].n; k++) {
                uint64_t id;
                sh_miner_add(m, &id, sets[i].content[k], strlen(sets[i].content[k]));
            }
        double t = now() - t0;
        if (t < best)
            best = t;
        sh_miner_free(m);
    }
    printf("BENCH miner_lines_per_s %.0f\n", (double)total / best);
    return 0;
}
