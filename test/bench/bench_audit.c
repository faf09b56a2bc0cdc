/*
 * What verifying the audit log costs, as the port does at every open: a
 * keyed log of N records (default 1,000,000) shaped like ticket records
 * (about 400 bytes a line) is written in bulk mode, then
 *   BENCH audit_open_ms_per_100k   ms of audit_open (the whole walk with the
 *                                  key, the anchor check) per 100,000 records
 *   BENCH audit_verify_ms_per_100k ms of audit_verify (the same walk,
 *                                  read-only) per 100,000 records
 *   BENCH audit_sha256_ms_per_100k ms of reading the file and hashing each
 *                                  line, the chain's own floor (baseline)
 *   BENCH audit_records            N
 * each the best of three runs, all in the same run of this program.
 *
 *   bench_audit [N]
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "self_heal/common.h"

static const char KEY[] = "bench-audit-key-0123456789abcdef";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Reads path in 1 MiB blocks and hashes every line: the floor of any walk
 * of the chain. Returns the lines hashed. */
static long long sha256_lines(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long long n = 0;
    char hex[SH_SHA256_HEX_LEN + 1];
    while ((got = getline(&line, &cap, f)) > 0) {
        if (sh_sha256_hex(hex, line, (size_t)got - 1) == 0)
            n++;
    }
    free(line);
    fclose(f);
    return n;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    long long n = argc > 1 ? atoll(argv[1]) : 1000000;
    if (n < 1000 || n > 100000000) {
        fprintf(stderr, "usage: bench_audit [N >= 1000]\n");
        return 2;
    }
    const char *base = getenv("TMPDIR");
    char dir[256], path[320];
    snprintf(dir, sizeof(dir), "%s/sh_bench_audit_XXXXXX", base != NULL ? base : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("bench_audit: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
    audit_keys keys = {KEY, strlen(KEY), NULL, 0};
    audit_log *log = NULL;
    char err[512] = "";
    int rc = 1;
    if (audit_open(&log, path, &keys, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_audit: %s\n", err);
        goto done;
    }
    audit_set_bulk(log, 1);
    json_t *fields = json_pack(
        "{s:I, s:s, s:s, s:s, s:[s, s], s:I, s:I}", "ticket_id", (json_int_t)1234, "backend",
        "github", "external_id", "4321", "url", "https://github.com/acme/shop/issues/4321",
        "fingerprints", "9f1c0a7b3e5d2c4f6a8b0c1d2e3f4a5b", "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "count", (json_int_t)31, "job_id", (json_int_t)987);
    double t0 = now_ms();
    for (long long i = 0; i < n; i++) {
        if (audit_append(log, i % 2 ? "ticket_commented" : "ticket_created", fields) != 0) {
            fprintf(stderr, "bench_audit: append %lld failed\n", i + 1);
            json_decref(fields);
            audit_close(log);
            goto done;
        }
    }
    json_decref(fields);
    audit_close(log); /* ends bulk mode: the anchor */
    fprintf(stderr, "bench_audit: wrote %lld keyed records in %.0f ms\n", n, now_ms() - t0);

    double best_open = 1e18, best_verify = 1e18, best_sha = 1e18;
    for (int run = 0; run < 3; run++) {
        t0 = now_ms();
        if (sha256_lines(path) != n) {
            fprintf(stderr, "bench_audit: the baseline did not read %lld lines\n", n);
            goto done;
        }
        double t = now_ms() - t0;
        best_sha = t < best_sha ? t : best_sha;

        t0 = now_ms();
        json_t *report = audit_verify(path, &keys, NULL, err, sizeof(err));
        t = now_ms() - t0;
        int ok = json_is_true(json_object_get(report, "ok")) &&
                 json_integer_value(json_object_get(report, "authenticated")) == n;
        json_decref(report);
        if (!ok) {
            fprintf(stderr, "bench_audit: verify did not authenticate %lld records %s\n", n, err);
            goto done;
        }
        best_verify = t < best_verify ? t : best_verify;

        t0 = now_ms();
        if (audit_open(&log, path, &keys, err, sizeof(err)) != 0) {
            fprintf(stderr, "bench_audit: %s\n", err);
            goto done;
        }
        t = now_ms() - t0;
        json_t *status = audit_status(log);
        ok = json_is_true(json_object_get(status, "ok"));
        json_decref(status);
        audit_close(log);
        if (!ok) {
            fprintf(stderr, "bench_audit: open did not find the log intact\n");
            goto done;
        }
        best_open = t < best_open ? t : best_open;
    }
    double per = 100000.0 / (double)n;
    printf("BENCH audit_open_ms_per_100k %.1f\n", best_open * per);
    printf("BENCH audit_verify_ms_per_100k %.1f\n", best_verify * per);
    printf("BENCH audit_sha256_ms_per_100k %.1f\n", best_sha * per);
    printf("BENCH audit_records %lld\n", n);
    rc = 0;
done:
    remove_dir(dir);
    return rc;
}
