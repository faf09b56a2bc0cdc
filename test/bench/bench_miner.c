/*
 * Grouping accuracy and speed of the template miner on Loghub-format data.
 *
 *   bench_miner DIR
 *
 * For every DIR/<System>_*_structured.csv (sorted by name) it feeds the
 * Content column, line by line, to a fresh miner and prints
 *   BENCH ga_<System> <grouping accuracy>
 * (the default configuration) then BENCH ga_average, and BENCH
 * miner_lines_per_s: lines per second of sh_miner_add over all datasets
 * together (loaded in memory first, one thread, best of 15 rounds, each
 * round a fresh miner), and BENCH miner_lines_per_s_baseline: the same
 * with the rules the miner had before evidence (SH_MINER_RULES_BEFORE_
 * EVIDENCE), measured in the same run, rounds taking turns.
 *
 * Leave-one-system-out: every dataset is scored on a grid of
 * configurations (each switchable rule on or off, and the constants of
 * sh_miner_config); for each dataset the configuration with the best
 * average on the others is chosen and scored on it: BENCH ga_loso_<System>,
 * ga_loso_average, ga_loso_min; BENCH ga_grid_best is the average of the
 * configuration best on all of them (the one the defaults should hold).
 * MINER_NO_LOSO=1 skips that part (two to ten minutes, with the machine's
 * load); MINER_GRID=<n> scores
 * the n-th configuration of the grid instead of the defaults;
 * MINER_DUMP=<System> prints each line's cluster on stderr;
 * MINER_GRID_OUT=<file> writes every configuration's scores.
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

/* The grouping accuracy of a fresh miner with cfg on d. */
static double score(const dataset *d, const sh_miner_config *cfg, int dump)
{
    sh_miner *m;
    if (sh_miner_new(&m, cfg) != 0)
        exit(1);
    uint64_t *pred = malloc(d->n * sizeof(*pred));
    for (size_t k = 0; k < d->n; k++)
        if (sh_miner_add(m, &pred[k], d->content[k], strlen(d->content[k])) != 0)
            exit(1);
    for (size_t k = 0; k < d->n; k++)
        pred[k] = sh_miner_resolve(m, pred[k]);
    double ga = grouping_accuracy(d, pred);
    for (size_t k = 0; dump && k < d->n; k++)
        fprintf(stderr, "%016llx\t%s\t%s\n", (unsigned long long)pred[k], d->truth[k],
                d->content[k]);
    free(pred);
    sh_miner_free(m);
    return ga;
}

/* The grid of configurations that leave-one-system-out chooses from. */
static const double SIMS[] = {0.4, 0.5, 0.6};
static const size_t SIBS[] = {3, 5, 8};
static const size_t ROUTES[] = {2, 3};
#define LEN(a) (sizeof(a) / sizeof((a)[0]))
#define NRULES (SH_MINER_RULES_ALL + 1)
#define NGRID (NRULES * LEN(SIMS) * LEN(SIBS) * LEN(ROUTES))

static void grid_config(size_t g, sh_miner_config *cfg)
{
    sh_miner_config_default(cfg);
    /* the order ties are broken in (choose): rules vary fastest, all first */
    cfg->rules = (unsigned)(NRULES - 1 - g % NRULES) | SH_MINER_RULES_SET;
    g /= NRULES;
    cfg->sim_threshold = SIMS[g % LEN(SIMS)];
    g /= LEN(SIMS);
    cfg->siblings = SIBS[g % LEN(SIBS)];
    g /= LEN(SIBS);
    cfg->route_tokens = ROUTES[g % LEN(ROUTES)];
}

static void print_config(const char *what, const sh_miner_config *c)
{
    printf("# %s: rules 0x%02x sim %.2f siblings %zu route %zu\n", what,
           c->rules & SH_MINER_RULES_ALL, c->sim_threshold, c->siblings, c->route_tokens);
}

/* Configurations whose averages differ by less than half a line in 1,000
 * (one line of a 2,000-line dataset) are taken as equal. */
#define TIE 0.0005

/* The configuration best on every dataset but `leave` (none when it is
 * nsets): the first in the grid's order whose average is within TIE of
 * the best average. The order puts fewer route tokens first, then fewer
 * siblings, the lower threshold, and more rules. */
static size_t choose(const double *ga, const double *sum, size_t nsets, size_t leave)
{
    size_t others = leave < nsets ? nsets - 1 : nsets;
    double top = -1;
    for (size_t g = 0; g < NGRID; g++) {
        double v = (sum[g] - (leave < nsets ? ga[g * nsets + leave] : 0)) / (double)others;
        if (v > top)
            top = v;
    }
    for (size_t g = 0; g < NGRID; g++) {
        double v = (sum[g] - (leave < nsets ? ga[g * nsets + leave] : 0)) / (double)others;
        if (v >= top - TIE)
            return g;
    }
    return 0;
}

/* Scores every configuration of the grid on every dataset, then for each
 * dataset the one best on the others. MINER_GRID_OUT=<file> writes every
 * configuration's scores there. */
static void loso(const dataset *sets, size_t nsets)
{
    double *ga = malloc(NGRID * nsets * sizeof(*ga));
    double *sum = calloc(NGRID, sizeof(*sum));
    const char *out = getenv("MINER_GRID_OUT");
    FILE *grid = out != NULL ? fopen(out, "w") : NULL;
    for (size_t g = 0; g < NGRID; g++) {
        sh_miner_config cfg;
        grid_config(g, &cfg);
        if (grid != NULL)
            fprintf(grid, "%zu 0x%02x %.2f %zu %zu", g, cfg.rules & SH_MINER_RULES_ALL,
                    cfg.sim_threshold, cfg.siblings, cfg.route_tokens);
        for (size_t i = 0; i < nsets; i++) {
            ga[g * nsets + i] = score(&sets[i], &cfg, 0);
            sum[g] += ga[g * nsets + i];
            if (grid != NULL)
                fprintf(grid, " %.4f", ga[g * nsets + i]);
        }
        if (grid != NULL)
            fputc('\n', grid);
    }
    if (grid != NULL)
        fclose(grid);
    double total = 0, min = 1;
    for (size_t i = 0; i < nsets; i++) {
        size_t best = choose(ga, sum, nsets, i);
        double v = ga[best * nsets + i];
        sh_miner_config cfg;
        grid_config(best, &cfg);
        char what[160];
        snprintf(what, sizeof(what), "chosen without %s", sets[i].name);
        print_config(what, &cfg);
        printf("BENCH ga_loso_%s %.4f\n", sets[i].name, v);
        total += v;
        if (v < min)
            min = v;
    }
    size_t best = choose(ga, sum, nsets, nsets);
    sh_miner_config cfg;
    grid_config(best, &cfg);
    print_config("best on all", &cfg);
    printf("BENCH ga_loso_average %.4f\n", total / (double)nsets);
    printf("BENCH ga_loso_min %.4f\n", min);
    printf("BENCH ga_grid_best %.4f\n", sum[best] / (double)nsets);
    free(ga);
    free(sum);
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
        const char *dump = getenv("MINER_DUMP");
        sh_miner_config one;
        sh_miner_config_default(&one);
        if (getenv("MINER_GRID") != NULL) /* one configuration of the grid */
            grid_config((size_t)strtoul(getenv("MINER_GRID"), NULL, 0), &one);
        double ga = score(d, &one, dump != NULL && strcmp(dump, d->name) == 0);
        printf("BENCH ga_%s %.4f\n", d->name, ga);
        fflush(stdout);
        sum += ga;
        total += d->n;
    }
    printf("BENCH ga_average %.4f\n", sum / (double)nnames);
    fflush(stdout);
    if (getenv("MINER_NO_LOSO") == NULL)
        loso(sets, nnames);

    /* the defaults, and in the same run the rules the miner had before
     * evidence (a word rule only, no constants, recurrence or joins
     * across token counts) as the baseline, rounds interleaved so that
     * both see the same load */
    sh_miner_config base;
    sh_miner_config_default(&base);
    base.rules = SH_MINER_RULES_BEFORE_EVIDENCE | SH_MINER_RULES_SET;
    double best = 1e30, best_base = 1e30;
    for (int round = 0; round < 30; round++) {
        sh_miner *m;
        if (sh_miner_new(&m, round % 2 ? &base : NULL) != 0)
            return 1;
        double t0 = now();
        for (size_t i = 0; i < nnames; i++)
            for (size_t k = 0; k < sets[i].n; k++) {
                uint64_t id;
                sh_miner_add(m, &id, sets[i].content[k], strlen(sets[i].content[k]));
            }
        double t = now() - t0;
        double *b = round % 2 ? &best_base : &best;
        if (t < *b)
            *b = t;
        sh_miner_free(m);
    }
    printf("BENCH miner_lines_per_s_baseline %.0f\n", (double)total / best_base);
    printf("BENCH miner_lines_per_s %.0f\n", (double)total / best);
    return 0;
}
