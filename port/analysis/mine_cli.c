/*
 * self_heal_port group [--stream] [--templates] [--state FILE]
 *
 * Reads log lines on stdin (LF or CRLF), groups them with the template
 * miner (docs/miner.md) and prints one cluster id per input line, as 16
 * hex digits, so that the grouping can be scored outside the BEAM.
 *
 *   default      ids are printed after the last line, each resolved to the
 *                cluster it ended in (clusters can merge later on)
 *   --stream     each id is printed as soon as its line is read
 *   --templates  then prints "id<TAB>count<TAB>template" per cluster on
 *                stderr
 *   --state FILE restores the miner from FILE when it exists and saves it
 *                there at the end (written to FILE.tmp, then renamed)
 *
 * A line longer than the miner's max_line is cut there (the rest is read
 * and dropped). Exit 0, 1 on a read, write or memory error, 2 on usage.
 */
#include "mine_cli.h"

#include "self_heal/miner.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_BYTES (16 * 1024)

static int usage(void)
{
    fprintf(stderr, "usage: self_heal_port group [--stream] [--templates] [--state FILE]\n");
    return 2;
}

static int load_state(sh_miner **m, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT)
            return sh_miner_new(m, NULL);
        fprintf(stderr, "self_heal_port group: %s: %s\n", path, strerror(errno));
        return -1;
    }
    sh_buf buf;
    sh_buf_init(&buf);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
        sh_buf_append(&buf, chunk, got);
    int err = ferror(f) || buf.oom;
    fclose(f);
    const char *why = "read error";
    int rc = err ? -1 : sh_miner_restore(m, &why, buf.data ? buf.data : "", buf.len, NULL);
    if (rc != 0)
        fprintf(stderr, "self_heal_port group: %s: %s\n", path, why);
    sh_buf_free(&buf);
    return rc;
}

static int save_state(const sh_miner *m, const char *path)
{
    sh_buf buf;
    sh_buf_init(&buf);
    int rc = sh_miner_snapshot(m, &buf);
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    FILE *f = NULL;
    if (rc == 0 && tmp != NULL) {
        memcpy(tmp, path, n);
        memcpy(tmp + n, ".tmp", 5);
        f = fopen(tmp, "wb");
    }
    if (f == NULL || fwrite(buf.data, 1, buf.len, f) != buf.len || fclose(f) != 0 ||
        rename(tmp, path) != 0) {
        fprintf(stderr, "self_heal_port group: cannot save %s\n", path);
        rc = -1;
    }
    free(tmp);
    sh_buf_free(&buf);
    return rc;
}

static int print_template(void *arg, uint64_t id, uint64_t count, sh_slice text,
                          const uint32_t *params, size_t nparams)
{
    (void)arg;
    (void)params;
    (void)nparams;
    fprintf(stderr, "%016llx\t%llu\t%.*s\n", (unsigned long long)id, (unsigned long long)count,
            (int)text.len, text.ptr);
    return 0;
}

/* Reads one line into line[0..*len) (cut at cap), without its line end.
 * Returns 1, or 0 at the end of input. */
static int read_line(FILE *in, char *line, size_t cap, size_t *len)
{
    int c;
    size_t n = 0;
    int any = 0;
    while ((c = getc(in)) != EOF) {
        any = 1;
        if (c == '\n')
            break;
        if (n < cap)
            line[n++] = (char)c;
    }
    if (!any)
        return 0;
    if (n > 0 && line[n - 1] == '\r')
        n--;
    *len = n;
    return 1;
}

int group_main(int argc, char **argv)
{
    int stream = 0, templates = 0;
    const char *state = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--stream") == 0)
            stream = 1;
        else if (strcmp(argv[i], "--templates") == 0)
            templates = 1;
        else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            state = argv[++i];
        else
            return usage();
    }
    sh_miner *m = NULL;
    if ((state != NULL ? load_state(&m, state) : sh_miner_new(&m, NULL)) != 0)
        return 1;
    char *line = malloc(LINE_MAX_BYTES);
    uint64_t *ids = NULL;
    size_t n = 0, cap = 0, len;
    int rc = line == NULL;
    while (rc == 0 && read_line(stdin, line, LINE_MAX_BYTES, &len)) {
        uint64_t id;
        if (sh_miner_add(m, &id, line, len) != 0) {
            rc = 1;
            break;
        }
        if (stream) {
            printf("%016llx\n", (unsigned long long)id);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            uint64_t *p = realloc(ids, cap * sizeof(*ids));
            if (p == NULL) {
                rc = 1;
                break;
            }
            ids = p;
        }
        ids[n++] = id;
    }
    if (ferror(stdin))
        rc = 1;
    for (size_t i = 0; rc == 0 && i < n; i++)
        printf("%016llx\n", (unsigned long long)sh_miner_resolve(m, ids[i]));
    if (fflush(stdout) != 0)
        rc = 1;
    if (rc == 0 && templates)
        sh_miner_each(m, print_template, NULL);
    if (rc == 0 && state != NULL && save_state(m, state) != 0)
        rc = 1;
    if (rc != 0)
        fprintf(stderr, "self_heal_port group: failed\n");
    free(ids);
    free(line);
    sh_miner_free(m);
    return rc;
}
