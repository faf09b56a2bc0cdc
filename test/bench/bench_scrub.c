/*
 * The scrubber on a corpus it was not tuned on (test/data/scrub_corpus,
 * written by gen.py there): real-looking log lines with planted secrets
 * and lines with benign look-alikes, dealt into a tuning half and a
 * held-out half. With the built-in rules only:
 *   BENCH scrub_leaks                 secrets left in the held-out half
 *   BENCH scrub_false_positives       benign values redacted in the held-out half
 *   BENCH scrub_heldout_secrets       secrets planted in the held-out half
 *   BENCH scrub_heldout_benign        benign values in the held-out half
 *   BENCH scrub_leaks_tune            the same two figures on the tuning half
 *   BENCH scrub_false_positives_tune
 * A secret is left when any 10-byte run of it (the whole secret when
 * shorter) is still in the output; a benign value is redacted when it is
 * not in the output byte for byte.
 *
 *   bench_scrub [DIR] [-v]     (-v prints each failure of the tuning half)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "self_heal/scrub.h"

typedef struct counts {
    size_t secrets, leaks, benign, false_positives;
} counts;

static int contains(const char *h, size_t hl, const char *n, size_t nl)
{
    if (nl == 0 || nl > hl)
        return nl == 0;
    for (size_t i = 0; i + nl <= hl; i++)
        if (h[i] == n[0] && memcmp(h + i, n, nl) == 0)
            return 1;
    return 0;
}

static int leaks(const sh_buf *out, const char *s, size_t len)
{
    size_t w = len < 10 ? len : 10;
    for (size_t i = 0; i + w <= len; i++)
        if (contains(out->data, out->len, s + i, w))
            return 1;
    return 0;
}

/* Decodes \\ \t \n \r in place; returns the new length. */
static size_t unescape(char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < len) {
            char e = s[++i];
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
        }
        s[o++] = c;
    }
    return o;
}

static int run(const char *dir, const char *name, counts *c, int verbose)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    sh_buf out;
    sh_buf_init(&out);
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[0] == '#' || n < 3)
            continue;
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        char *fields[32];
        size_t lens[32], nf = 0;
        for (char *p = line, *tab; nf < 32; p = tab + 1) {
            tab = strchr(p, '\t');
            fields[nf] = p;
            lens[nf] = tab != NULL ? (size_t)(tab - p) : strlen(p);
            lens[nf] = unescape(p, lens[nf]);
            nf++;
            if (tab == NULL)
                break;
        }
        if (nf < 3)
            continue;
        int secret = fields[0][0] == 'S';
        sh_buf_reset(&out);
        sh_scrub(NULL, fields[1], lens[1], &out, NULL);
        for (size_t k = 2; k < nf; k++) {
            int bad;
            if (secret) {
                c->secrets++;
                bad = leaks(&out, fields[k], lens[k]);
                c->leaks += (size_t)bad;
            } else {
                c->benign++;
                bad = !contains(out.data, out.len, fields[k], lens[k]);
                c->false_positives += (size_t)bad;
            }
            if (bad && verbose)
                printf("%s %.*s\n   out: %.*s\n", secret ? "LEAK" : "FALSE POSITIVE", (int)lens[k],
                       fields[k], (int)out.len, out.data);
        }
    }
    free(line);
    sh_buf_free(&out);
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = "test/data/scrub_corpus";
    int verbose = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0)
            verbose = 1;
        else
            dir = argv[i];
    }
    counts tune = {0}, held = {0};
    if (run(dir, "tune.txt", &tune, verbose) != 0 || run(dir, "heldout.txt", &held, 0) != 0)
        return 1;
    printf("BENCH scrub_leaks %zu\n", held.leaks);
    printf("BENCH scrub_false_positives %zu\n", held.false_positives);
    printf("BENCH scrub_heldout_secrets %zu\n", held.secrets);
    printf("BENCH scrub_heldout_benign %zu\n", held.benign);
    printf("BENCH scrub_leaks_tune %zu\n", tune.leaks);
    printf("BENCH scrub_false_positives_tune %zu\n", tune.false_positives);
    return 0;
}
