/* Audit log: chain format, keyed records, the anchor, verification after
 * each kind of edit (keyed and not), torn tail repair with its bytes kept,
 * a broken chain moved aside at open, key changes, continuation across
 * opens and writers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"

#define MAX_LINES 64

static const char KEY1[] = "first-audit-key-0123456789abcdef";
static const char KEY2[] = "second-audit-key-0123456789abcde";
static const char KEY3[] = "attackers-own-key-0123456789abcd";
static const audit_keys K1 = {KEY1, sizeof(KEY1) - 1, NULL, 0};
static const audit_keys K2 = {KEY2, sizeof(KEY2) - 1, NULL, 0};
static const audit_keys K2_AFTER_K1 = {KEY2, sizeof(KEY2) - 1, KEY1, sizeof(KEY1) - 1};
static const audit_keys K3 = {KEY3, sizeof(KEY3) - 1, NULL, 0};

typedef struct logfile {
    char dir[128];
    char path[600];
    char anchor[600];
} logfile;

static void logfile_make(logfile *l)
{
    const char *base = getenv("TMPDIR");
    snprintf(l->dir, sizeof(l->dir), "%s/sh_audit_XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(l->dir));
    snprintf(l->path, sizeof(l->path), "%s/audit.jsonl", l->dir);
    snprintf(l->anchor, sizeof(l->anchor), "%s/audit.anchor", l->dir);
}

/* Removes the directory and the files in it (logs moved aside included). */
static void logfile_remove(logfile *l)
{
    DIR *d = opendir(l->dir);
    assert_non_null(d);
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", l->dir, e->d_name);
        assert_int_equal(unlink(path), 0);
    }
    closedir(d);
    assert_int_equal(rmdir(l->dir), 0);
}

static audit_log *open_keyed(const char *path, const audit_keys *keys)
{
    audit_log *log = NULL;
    char err[512] = "";
    int rc = audit_open(&log, path, keys, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "audit_open: %s\n", err);
    assert_int_equal(rc, 0);
    return log;
}

static audit_log *open_log(logfile *l)
{
    return open_keyed(l->path, NULL);
}

/* Writes n records "step" i = 1..n. */
static void write_keyed(const char *path, const audit_keys *keys, int n)
{
    audit_log *log = open_keyed(path, keys);
    for (int i = 1; i <= n; i++) {
        json_t *f = json_pack("{s:i, s:s}", "step", i, "note", "a \"quoted\"\nline");
        assert_int_equal(audit_append(log, "test_step", f), 0);
        json_decref(f);
    }
    audit_close(log);
}

static void write_records(logfile *l, int n)
{
    write_keyed(l->path, NULL, n);
}

/* The file as lines (newlines removed). */
typedef struct lines {
    char *line[MAX_LINES];
    size_t n;
} lines;

static void lines_read(lines *ls, const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    ls->n = 0;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&buf, &cap, f)) > 0) {
        assert_true(ls->n < MAX_LINES);
        if (buf[got - 1] == '\n')
            buf[got - 1] = '\0';
        ls->line[ls->n++] = strdup(buf);
    }
    free(buf);
    fclose(f);
}

static void lines_write(lines *ls, const char *path)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < ls->n; i++)
        fprintf(f, "%s\n", ls->line[i]);
    fclose(f);
}

static void lines_free(lines *ls)
{
    for (size_t i = 0; i < ls->n; i++)
        free(ls->line[i]);
    ls->n = 0;
}

static void lines_replace(lines *ls, size_t i, const char *line)
{
    free(ls->line[i]);
    ls->line[i] = strdup(line);
}

static char *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(4 * 1024 * 1024);
    *len = fread(buf, 1, 4 * 1024 * 1024 - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void file_copy(const char *from, const char *to)
{
    size_t len;
    char *buf = file_read(from, &len);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
    free(buf);
}

/* A fresh log of n records, keyed with K1 or not, read back as lines;
 * returns its keys. */
static const audit_keys *fresh_log(logfile *l, lines *ls, int keyed, int n)
{
    const audit_keys *keys = keyed ? &K1 : NULL;
    logfile_make(l);
    write_keyed(l->path, keys, n);
    lines_read(ls, l->path);
    return keys;
}

static void done(logfile *l, lines *ls)
{
    lines_free(ls);
    logfile_remove(l);
}

static json_t *verify_with(logfile *l, const audit_keys *keys, json_t *witnesses)
{
    char err[256] = "";
    json_t *r = audit_verify(l->path, keys, witnesses, err, sizeof(err));
    if (r == NULL)
        fprintf(stderr, "audit_verify: %s\n", err);
    assert_non_null(r);
    return r;
}

static json_t *verify(logfile *l)
{
    return verify_with(l, NULL, NULL);
}

static void assert_ok_with(logfile *l, const audit_keys *keys, long long records)
{
    json_t *r = verify_with(l, keys, NULL);
    if (!json_is_true(json_object_get(r, "ok")))
        fprintf(stderr, "not ok: %s\n", json_string_value(json_object_get(r, "reason")));
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "records")), records);
    json_decref(r);
}

static void assert_ok(logfile *l, long long records)
{
    assert_ok_with(l, NULL, records);
}

/* Asserts the report is broken at line and its reason contains `why`. */
static void assert_broken_with(logfile *l, const audit_keys *keys, json_t *witnesses,
                               long long line, const char *why)
{
    json_t *r = verify_with(l, keys, witnesses);
    const char *reason = json_string_value(json_object_get(r, "reason"));
    if (!json_is_false(json_object_get(r, "ok")) ||
        json_integer_value(json_object_get(r, "broken_at")) != line ||
        (why != NULL && (reason == NULL || strstr(reason, why) == NULL)))
        fprintf(stderr, "report: %s\n", json_dumps(r, JSON_COMPACT));
    assert_true(json_is_false(json_object_get(r, "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "broken_at")), line);
    assert_int_equal(json_integer_value(json_object_get(r, "records")), line - 1);
    assert_non_null(reason);
    if (why != NULL)
        assert_non_null(strstr(reason, why));
    json_decref(r);
}

static void assert_broken_at(logfile *l, long long line)
{
    assert_broken_with(l, NULL, NULL, line, NULL);
}

static void sha256_hex(const char *s, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL), 1);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void hmac_hex(const void *key, size_t keylen, const char *s, size_t len, char out[65],
                     unsigned char raw[32])
{
    unsigned char md[32];
    unsigned int n = 0;
    assert_non_null(HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)s, len, md, &n));
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    if (raw != NULL)
        memcpy(raw, md, 32);
}

/* A line with its prev replaced by the SHA-256 of `before` (chain
 * recomputed by someone without the key; a mac stays as it was). */
static char *with_prev(const char *line, const char *before)
{
    char prev[65];
    sha256_hex(before, prev);
    char *out = strdup(line);
    char *p = strstr(out, "\"prev\":\"");
    assert_non_null(p);
    memcpy(p + 8, prev, 64);
    return out;
}

/* Recomputes prev from line `from` (0-based) to the end. */
static void rechain(lines *ls, size_t from)
{
    for (size_t i = from; i < ls->n; i++) {
        char *fixed = with_prev(ls->line[i], ls->line[i - 1]);
        free(ls->line[i]);
        ls->line[i] = fixed;
    }
}

static json_t *record(const char *line)
{
    json_t *rec = json_loads(line, 0, NULL);
    assert_non_null(rec);
    return rec;
}

static json_t *anchor_json(logfile *l)
{
    json_t *a = json_load_file(l->anchor, 0, NULL);
    assert_non_null(a);
    return a;
}

static json_t *status_of(audit_log *log)
{
    json_t *s = audit_status(log);
    assert_non_null(s);
    return s;
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* ------------------------------------------------------------ format */

static void test_record_format_and_chain(void **unused)
{
    (void)unused;
    logfile l;
    lines ls;
    fresh_log(&l, &ls, 0, 3);
    assert_int_equal(ls.n, 3);
    char prev[65] = "0000000000000000000000000000000000000000000000000000000000000000";
    for (size_t i = 0; i < ls.n; i++) {
        json_t *rec = record(ls.line[i]);
        assert_int_equal(json_integer_value(json_object_get(rec, "seq")), i + 1);
        assert_string_equal(json_string_value(json_object_get(rec, "action")), "test_step");
        assert_string_equal(json_string_value(json_object_get(rec, "prev")), prev);
        assert_string_equal(json_string_value(json_object_get(rec, "chain")), "sha256");
        assert_null(json_object_get(rec, "mac"));
        const char *at = json_string_value(json_object_get(rec, "at"));
        assert_int_equal(strlen(at), 20); /* 2024-05-01T12:00:00Z */
        assert_int_equal(at[19], 'Z');
        assert_string_equal(json_string_value(json_object_get(rec, "note")), "a \"quoted\"\nline");
        /* seq, at, action first; prev and chain last. */
        assert_int_equal(strncmp(ls.line[i], "{\"seq\":", 7), 0);
        assert_non_null(strstr(ls.line[i], ",\"prev\":\""));
        assert_non_null(strstr(ls.line[i], "\",\"chain\":\"sha256\"}"));
        sha256_hex(ls.line[i], prev);
        json_decref(rec);
    }
    json_t *r = verify(&l);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "head")), prev);
    assert_string_equal(json_string_value(json_object_get(r, "chain")), "sha256");
    assert_true(json_is_false(json_object_get(r, "keyed")));
    assert_non_null(strstr(json_string_value(json_object_get(r, "warning")), "unkeyed"));
    json_decref(r);

    /* The anchor holds the last record and its head. */
    json_t *a = anchor_json(&l);
    assert_int_equal(json_integer_value(json_object_get(a, "seq")), 3);
    assert_int_equal(json_integer_value(json_object_get(a, "records")), 3);
    assert_string_equal(json_string_value(json_object_get(a, "head")), prev);
    assert_string_equal(json_string_value(json_object_get(a, "line")), ls.line[2]);
    json_decref(a);
    struct stat sb;
    assert_int_equal(stat(l.anchor, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    done(&l, &ls);
}

static void test_keyed_record_format(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_keyed(l.path, &K1, 2);
    lines ls;
    lines_read(&ls, l.path);
    assert_int_equal(ls.n, 2);
    /* The documented derivation: HMAC(secret, label) gives the record key
     * and the key id; the MAC covers the line without its mac member. */
    char hex[65];
    unsigned char rec_key[32];
    const char *rec_label = "self-heal audit record", *id_label = "self-heal audit key id";
    hmac_hex(KEY1, strlen(KEY1), rec_label, strlen(rec_label), hex, rec_key);
    hmac_hex(KEY1, strlen(KEY1), id_label, strlen(id_label), hex, NULL);
    char id[17];
    memcpy(id, hex, 16);
    id[16] = '\0';
    for (size_t i = 0; i < ls.n; i++) {
        json_t *rec = record(ls.line[i]);
        assert_string_equal(json_string_value(json_object_get(rec, "chain")), "hmac-sha256");
        assert_string_equal(json_string_value(json_object_get(rec, "key_id")), id);
        const char *mac = json_string_value(json_object_get(rec, "mac"));
        assert_non_null(mac);
        char *body = strdup(ls.line[i]);
        char *m = strstr(body, ",\"mac\":\"");
        assert_non_null(m);
        assert_int_equal(strlen(m), 8 + 64 + 2); /* the last member */
        strcpy(m, "}");
        char want[65];
        hmac_hex(rec_key, 32, body, strlen(body), want, NULL);
        assert_string_equal(mac, want);
        free(body);
        json_decref(rec);
    }
    assert_null(strstr(ls.line[0], KEY1));
    json_t *r = verify_with(&l, &K1, NULL);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_true(json_is_true(json_object_get(r, "keyed")));
    assert_string_equal(json_string_value(json_object_get(r, "key_id")), id);
    assert_int_equal(json_integer_value(json_object_get(r, "authenticated")), 2);
    assert_null(json_object_get(r, "warning"));
    json_decref(r);
    /* Without the key: structure only, and said so. */
    r = verify(&l);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_non_null(strstr(json_string_value(json_object_get(r, "warning")), "without its key"));
    json_decref(r);
    json_t *a = anchor_json(&l);
    assert_string_equal(json_string_value(json_object_get(a, "key_id")), id);
    assert_non_null(json_object_get(a, "mac"));
    json_decref(a);
    done(&l, &ls);
}

static void test_legacy_log_keeps_verifying(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    /* Records as written before schemes and anchors: no "chain". */
    lines ls = {{NULL}, 0};
    char prev[65] = "0000000000000000000000000000000000000000000000000000000000000000";
    for (int i = 1; i <= 3; i++) {
        char line[256];
        snprintf(line, sizeof(line),
                 "{\"seq\":%d,\"at\":\"2024-05-01T12:00:00Z\",\"action\":\"old\",\"prev\":\"%s\"}",
                 i, prev);
        ls.line[ls.n++] = strdup(line);
        sha256_hex(line, prev);
    }
    lines_write(&ls, l.path);
    json_t *r = verify(&l);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "records")), 3);
    assert_string_equal(json_string_value(json_object_get(r, "chain")), "sha256 (legacy records)");
    assert_true(json_is_null(json_object_get(r, "anchor")));
    json_decref(r);

    /* Opened: an anchor is made, the chain goes on with schemes. */
    audit_log *log = open_log(&l);
    json_t *s = status_of(log);
    assert_true(json_is_true(json_object_get(s, "ok")));
    assert_int_equal(json_integer_value(json_object_get(s, "records")), 3);
    json_decref(s);
    assert_true(file_exists(l.anchor));
    assert_int_equal(audit_append(log, "new", NULL), 0);
    audit_close(log);
    assert_ok(&l, 4);

    /* Now the anchor may not go missing. */
    unlink(l.anchor);
    assert_broken_with(&l, NULL, NULL, 5, "anchor was deleted");
    done(&l, &ls);
}

static void test_bad_appends_are_refused(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    audit_log *log = open_log(&l);
    const char *reserved[] = {"seq", "prev", "chain", "key_id", "mac"};
    for (size_t i = 0; i < 5; i++) {
        json_t *f = json_pack("{s:s}", reserved[i], "forged");
        assert_int_equal(audit_append(log, "x", f), -1);
        json_decref(f);
    }
    assert_int_equal(audit_append(log, "", NULL), -1);
    assert_int_equal(audit_append(log, "audit_repaired", NULL), -1); /* the log's own */
    json_t *arr = json_array();
    assert_int_equal(audit_append(log, "x", arr), -1);
    json_decref(arr);
    /* fields are not stolen */
    json_t *f = json_pack("{s:s}", "ticket", "7");
    assert_int_equal(audit_append(log, "ticket_created", f), 0);
    assert_int_equal(f->refcount, 1);
    json_decref(f);
    audit_close(log);
    assert_ok(&l, 1);
    logfile_remove(&l);
}

/* ------------------------------------------------------------ edits */

static void test_modified_field_breaks_the_next_link(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 6);
    assert_ok(&l, 6);
    lines ls;
    lines_read(&ls, l.path);
    char *p = strstr(ls.line[2], "\"step\":3");
    assert_non_null(p);
    p[7] = '9'; /* line 3 now says step 9 */
    lines_write(&ls, l.path);
    assert_broken_at(&l, 4);
    done(&l, &ls);
}

static void test_modified_seq_is_caught_on_its_line(void **unused)
{
    (void)unused;
    logfile l;
    lines ls;
    fresh_log(&l, &ls, 0, 4);
    char *p = strstr(ls.line[1], "\"seq\":2");
    p[6] = '7';
    lines_write(&ls, l.path);
    assert_broken_at(&l, 2);
    done(&l, &ls);
}

static void test_deleted_line(void **unused)
{
    (void)unused;
    logfile l;
    lines ls;
    fresh_log(&l, &ls, 0, 6);
    free(ls.line[2]);
    memmove(&ls.line[2], &ls.line[3], 3 * sizeof(char *));
    ls.n = 5;
    lines_write(&ls, l.path);
    assert_broken_at(&l, 3);
    lines_free(&ls);

    /* Deleting the first line breaks line 1 (its prev is not zeros). */
    lines_read(&ls, l.path);
    free(ls.line[0]);
    memmove(&ls.line[0], &ls.line[1], (ls.n - 1) * sizeof(char *));
    ls.n--;
    lines_write(&ls, l.path);
    assert_broken_at(&l, 1);
    done(&l, &ls);
}

static void test_reordered_lines(void **unused)
{
    (void)unused;
    logfile l;
    lines ls;
    fresh_log(&l, &ls, 0, 6);
    char *tmp = ls.line[1];
    ls.line[1] = ls.line[2];
    ls.line[2] = tmp;
    lines_write(&ls, l.path);
    assert_broken_at(&l, 2);
    done(&l, &ls);
}

static void test_inserted_line(void **unused)
{
    (void)unused;
    logfile l;
    lines ls;
    fresh_log(&l, &ls, 0, 6);
    /* A naive insertion at line 3. */
    memmove(&ls.line[3], &ls.line[2], 4 * sizeof(char *));
    ls.line[2] = strdup("{\"seq\":3,\"at\":\"2024-01-01T00:00:00Z\",\"action\":\"deploy\","
                        "\"prev\":\"0000\"}");
    ls.n = 7;
    lines_write(&ls, l.path);
    assert_broken_at(&l, 3);

    /* A forged one with the right prev and seq: caught on the next line. */
    char prev[65];
    sha256_hex(ls.line[1], prev);
    char forged[256];
    snprintf(forged, sizeof(forged),
             "{\"seq\":3,\"at\":\"2024-01-01T00:00:00Z\",\"action\":\"deploy\",\"prev\":\"%s\","
             "\"chain\":\"sha256\"}",
             prev);
    lines_replace(&ls, 2, forged);
    lines_write(&ls, l.path);
    assert_broken_at(&l, 4);
    done(&l, &ls);
}

static void test_truncated_mid_line(void **unused)
{
    (void)unused;
    logfile l;
    lines ls;
    fresh_log(&l, &ls, 0, 6);
    /* Cut inside line 4: lines 1-3 intact, line 4 torn. */
    FILE *f = fopen(l.path, "wb");
    for (size_t i = 0; i < 3; i++)
        fprintf(f, "%s\n", ls.line[i]);
    fwrite(ls.line[3], 1, 20, f);
    fclose(f);
    assert_broken_at(&l, 4);

    /* Cut just before the final newline: the record is complete but torn. */
    f = fopen(l.path, "wb");
    for (size_t i = 0; i < 6; i++)
        fprintf(f, i < 5 ? "%s\n" : "%s", ls.line[i]);
    fclose(f);
    assert_broken_with(&l, NULL, NULL, 6, "torn");
    done(&l, &ls);
}

/* A record appended with the right seq and prev, by someone who is not
 * the port: the anchor did not move (unkeyed), its MAC fails (keyed). */
static void test_forged_append(void **unused)
{
    (void)unused;
    for (int keyed = 0; keyed <= 1; keyed++) {
        logfile l;
        lines ls;
        const audit_keys *keys = fresh_log(&l, &ls, keyed, 5);
        char prev[65], forged[512];
        sha256_hex(ls.line[4], prev);
        json_t *last = record(ls.line[4]);
        if (keyed)
            snprintf(forged, sizeof(forged),
                     "{\"seq\":6,\"at\":\"2024-01-01T00:00:00Z\",\"action\":\"deploy_done\","
                     "\"prev\":\"%s\",\"chain\":\"hmac-sha256\",\"key_id\":\"%s\",\"mac\":\"%s\"}",
                     prev, json_string_value(json_object_get(last, "key_id")),
                     json_string_value(json_object_get(last, "mac")));
        else
            snprintf(forged, sizeof(forged),
                     "{\"seq\":6,\"at\":\"2024-01-01T00:00:00Z\",\"action\":\"deploy_done\","
                     "\"prev\":\"%s\",\"chain\":\"sha256\"}",
                     prev);
        json_decref(last);
        ls.line[ls.n++] = strdup(forged);
        lines_write(&ls, l.path);
        if (keyed) {
            assert_broken_with(&l, keys, NULL, 6, "MAC does not verify");
        } else {
            assert_broken_with(&l, NULL, NULL, 6, "appended without the anchor moving");
            /* The port does not adopt it either: the log is moved aside. */
            audit_log *log = open_log(&l);
            json_t *s = status_of(log);
            assert_true(json_is_false(json_object_get(s, "ok")));
            json_decref(s);
            audit_close(log);
        }
        /* Without a chain scheme at all: caught too. */
        if (keyed) {
            snprintf(forged, sizeof(forged),
                     "{\"seq\":6,\"at\":\"2024-01-01T00:00:00Z\",\"action\":\"deploy_done\","
                     "\"prev\":\"%s\"}",
                     prev);
            lines_replace(&ls, 5, forged);
            lines_write(&ls, l.path);
            assert_broken_with(&l, keys, NULL, 6, "without a chain scheme");
        }
        done(&l, &ls);
    }
}

static void test_last_line_edited(void **unused)
{
    (void)unused;
    for (int keyed = 0; keyed <= 1; keyed++) {
        logfile l;
        lines ls;
        const audit_keys *keys = fresh_log(&l, &ls, keyed, 5);
        char *p = strstr(ls.line[4], "\"step\":5");
        p[7] = '8';
        lines_write(&ls, l.path);
        assert_broken_with(&l, keys, NULL, 5,
                           keyed ? "MAC does not verify" : "not the one the anchor holds");
        if (keyed) /* the anchor catches it without the key too */
            assert_broken_with(&l, NULL, NULL, 5, "not the one the anchor holds");
        done(&l, &ls);
    }
}

static void test_last_line_deleted(void **unused)
{
    (void)unused;
    for (int keyed = 0; keyed <= 1; keyed++) {
        logfile l;
        lines ls;
        const audit_keys *keys = fresh_log(&l, &ls, keyed, 5);
        char *deleted = ls.line[4];
        ls.n = 4;
        lines_write(&ls, l.path);
        assert_broken_with(&l, keys, NULL, 5, "the anchor holds record 5");

        /* Opening puts it back from the anchor (a crash between the two
         * writes looks the same) and says so in the chain. */
        audit_log *log = open_keyed(l.path, keys);
        json_t *s = status_of(log);
        assert_true(json_is_true(json_object_get(s, "ok")));
        assert_non_null(strstr(json_string_value(json_object_get(s, "repaired")), "restored"));
        json_decref(s);
        audit_close(log);
        assert_ok_with(&l, keys, 6);
        lines_free(&ls);
        lines_read(&ls, l.path);
        assert_string_equal(ls.line[4], deleted);
        json_t *rep = record(ls.line[5]);
        assert_string_equal(json_string_value(json_object_get(rep, "action")), "audit_repaired");
        assert_int_equal(json_integer_value(json_object_get(rep, "restored_seq")), 5);
        json_decref(rep);
        free(deleted);

        /* Two lines removed: truncated, not restorable. */
        free(ls.line[5]);
        free(ls.line[4]);
        ls.n = 4;
        lines_write(&ls, l.path);
        assert_broken_with(&l, keys, NULL, 5, "truncated: the anchor says 6 records");
        done(&l, &ls);
    }
}

/* An edit in the middle with every later prev recomputed. */
static void test_edit_with_chain_recomputed(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 5);
    audit_log *log = open_log(&l);
    char published[160];
    assert_int_equal(audit_head_line(log, published, sizeof(published)), 0);
    audit_close(log);
    lines ls;
    lines_read(&ls, l.path);
    char *p = strstr(ls.line[1], "\"step\":2");
    p[7] = '7';
    rechain(&ls, 2);
    lines_write(&ls, l.path);
    /* Unkeyed: the chain holds, the anchor does not. */
    assert_broken_with(&l, NULL, NULL, 5, "not the one the anchor holds");

    /* The anchor rewritten to match as well: only a published head can
     * tell, which is what unkeyed means. */
    char head[65];
    sha256_hex(ls.line[4], head);
    json_t *a = json_pack("{s:i, s:i, s:s, s:s, s:s}", "seq", 5, "records", 5, "head", head, "line",
                          ls.line[4], "chain", "sha256");
    assert_int_equal(json_dump_file(a, l.anchor, JSON_COMPACT), 0);
    json_decref(a);
    json_t *r = verify(&l);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_non_null(strstr(json_string_value(json_object_get(r, "warning")), "unkeyed"));
    json_decref(r);
    json_t *wit = json_pack("[s]", published);
    assert_broken_with(&l, NULL, wit, 5, "head was published");
    json_decref(wit);
    done(&l, &ls);

    /* Keyed: the recomputed chain fails at the edited record, with or
     * without the anchor touched. */
    logfile_make(&l);
    write_keyed(l.path, &K1, 5);
    lines_read(&ls, l.path);
    p = strstr(ls.line[1], "\"step\":2");
    p[7] = '7';
    rechain(&ls, 2);
    lines_write(&ls, l.path);
    assert_broken_with(&l, &K1, NULL, 2, "MAC does not verify");
    done(&l, &ls);
}

/* The whole log replaced by another chain. */
static void test_whole_file_replaced(void **unused)
{
    (void)unused;
    logfile l, other;
    logfile_make(&l);
    logfile_make(&other);
    write_records(&l, 4);
    audit_log *log = open_log(&l);
    char published[160];
    audit_head_line(log, published, sizeof(published));
    audit_close(log);
    /* a valid chain of its own: a decoy, then records of the same shape */
    json_t *extra = json_pack("{s:s}", "forged", "yes");
    log = open_log(&other);
    assert_int_equal(audit_append(log, "decoy", extra), 0);
    audit_close(log);
    json_decref(extra);
    write_records(&other, 4);

    /* Unkeyed, the anchor kept: caught. */
    file_copy(other.path, l.path);
    assert_broken_with(&l, NULL, NULL, 4, "not the one the anchor holds");
    /* Unkeyed, the anchor replaced too: only a published head tells. */
    file_copy(other.anchor, l.anchor);
    assert_ok(&l, 5);
    json_t *wit = json_pack("[s]", published);
    assert_broken_with(&l, NULL, wit, 4, "head was published");
    json_decref(wit);
    logfile_remove(&other);
    logfile_remove(&l);

    /* Keyed: a replacement made without the key fails whichever way. */
    logfile_make(&l);
    logfile_make(&other);
    write_keyed(l.path, &K1, 4);
    write_keyed(other.path, NULL, 4); /* unkeyed, with its own anchor */
    file_copy(other.path, l.path);
    assert_broken_with(&l, &K1, NULL, 4, "anchor"); /* the keyed anchor does not match */
    file_copy(other.anchor, l.anchor);
    assert_broken_with(&l, &K1, NULL, 1, "unkeyed although a key is held");
    logfile_remove(&other);
    logfile_make(&other);
    write_keyed(other.path, &K3, 4); /* keyed with the attacker's own key */
    file_copy(other.path, l.path);
    file_copy(other.anchor, l.anchor);
    assert_broken_with(&l, &K1, NULL, 1, "not held");
    logfile_remove(&other);
    logfile_remove(&l);
}

static void test_witnesses(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 3);
    audit_log *log = open_log(&l);
    char line2[160], line3[160];
    assert_int_equal(audit_head_line(log, line3, sizeof(line3)), 0);
    assert_int_equal(strncmp(line3, "audit: seq 3 head ", 18), 0);
    assert_int_equal(strlen(line3), 18 + 64);
    audit_close(log);
    lines ls;
    lines_read(&ls, l.path);
    char head2[65];
    sha256_hex(ls.line[1], head2);
    snprintf(line2, sizeof(line2), "audit: seq 2 head %.16s", head2);
    /* Published heads that match, as lines and as objects (a prefix). */
    json_t *wit = json_pack("[s, s, {s:i, s:s}]", line3, line2, "seq", 2, "head", head2);
    json_t *r = verify_with(&l, NULL, wit);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "witnesses")), 3);
    json_decref(r);
    json_decref(wit);
    /* A head published for a record the log no longer has. */
    wit = json_pack("[{s:i, s:s}]", "seq", 9, "head", head2);
    assert_broken_with(&l, NULL, wit, 4, "past the end of the log");
    json_decref(wit);
    /* Malformed witnesses are refused. */
    char err[256] = "";
    wit = json_pack("[s]", "audit: seq 2 head 12ab");
    assert_null(audit_verify(l.path, NULL, wit, err, sizeof(err)));
    assert_non_null(strstr(err, "witness 1"));
    json_decref(wit);
    done(&l, &ls);
}

/* ------------------------------------------------------------ open */

static void test_torn_tail_is_repaired_on_open(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 5);
    lines ls;
    FILE *f = fopen(l.path, "ab");
    const char torn[] = "{\"seq\":6,\"at\":\"20"; /* 17 bytes of a record being written */
    fputs(torn, f);
    fclose(f);
    assert_broken_with(&l, NULL, NULL, 6, "torn");

    audit_log *log = open_log(&l);
    json_t *s = status_of(log);
    assert_true(json_is_true(json_object_get(s, "ok")));
    assert_non_null(strstr(json_string_value(json_object_get(s, "repaired")), "torn"));
    json_decref(s);
    assert_int_equal(audit_append(log, "after_repair", NULL), 0);
    audit_close(log);
    assert_ok(&l, 7);
    lines_read(&ls, l.path);
    json_t *rep = record(ls.line[5]);
    assert_string_equal(json_string_value(json_object_get(rep, "action")), "audit_repaired");
    assert_int_equal(json_integer_value(json_object_get(rep, "seq")), 6);
    assert_int_equal(json_integer_value(json_object_get(rep, "dropped_bytes")), 17);
    /* The torn bytes are kept, not dropped. */
    unsigned char decoded[64];
    const char *b64 = json_string_value(json_object_get(rep, "dropped_base64"));
    assert_non_null(b64);
    int n = EVP_DecodeBlock(decoded, (const unsigned char *)b64, (int)strlen(b64));
    assert_true(n >= 17);
    assert_memory_equal(decoded, torn, 17);
    char sha[65];
    sha256_hex(torn, sha);
    assert_string_equal(json_string_value(json_object_get(rep, "dropped_sha256")), sha);
    json_decref(rep);
    lines_free(&ls);

    /* verify reports the repair among the log's own records. */
    json_t *r = verify(&l);
    json_t *events = json_object_get(r, "audit_events");
    assert_int_equal(json_array_size(events), 1);
    json_t *e = json_array_get(events, 0);
    assert_string_equal(json_string_value(json_object_get(e, "action")), "audit_repaired");
    assert_int_equal(json_integer_value(json_object_get(e, "seq")), 6);
    assert_int_equal(json_integer_value(json_object_get(e, "dropped_bytes")), 17);
    json_decref(r);

    /* A file that is one torn line only (a first write cut short). */
    f = fopen(l.path, "wb");
    fputs("{\"se", f);
    fclose(f);
    unlink(l.anchor);
    log = open_log(&l);
    audit_close(log);
    assert_ok(&l, 1);
    logfile_remove(&l);
}

/* A crash after the anchor was written and before the record: the record
 * is restored; a torn half of it is kept too. */
static void test_torn_keyed_record_restored_from_anchor(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_keyed(l.path, &K1, 4);
    lines ls;
    lines_read(&ls, l.path);
    FILE *f = fopen(l.path, "wb");
    for (size_t i = 0; i < 3; i++)
        fprintf(f, "%s\n", ls.line[i]);
    fwrite(ls.line[3], 1, 30, f); /* record 4 half written */
    fclose(f);
    assert_broken_with(&l, &K1, NULL, 4, "the anchor holds the whole record");
    audit_log *log = open_keyed(l.path, &K1);
    audit_close(log);
    assert_ok_with(&l, &K1, 5);
    lines ls2;
    lines_read(&ls2, l.path);
    assert_string_equal(ls2.line[3], ls.line[3]);
    json_t *rep = record(ls2.line[4]);
    assert_int_equal(json_integer_value(json_object_get(rep, "dropped_bytes")), 30);
    assert_int_equal(json_integer_value(json_object_get(rep, "restored_seq")), 4);
    json_decref(rep);
    lines_free(&ls2);
    done(&l, &ls);
}

static void test_open_continues_the_chain(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 2);
    write_records(&l, 2);
    audit_log *log = open_log(&l);
    assert_int_equal(audit_append(log, "third_open", NULL), 0);
    audit_close(log);
    assert_ok(&l, 5);
    logfile_remove(&l);
}

/* A chain broken in the middle is not extended: it is moved aside, whole,
 * and a new chain starts with a record that pins it. */
static void test_broken_chain_moved_aside_on_open(void **unused)
{
    (void)unused;
    for (int keyed = 0; keyed <= 1; keyed++) {
        logfile l;
        lines ls;
        const audit_keys *keys = fresh_log(&l, &ls, keyed, 5);
        char *p = strstr(ls.line[1], "\"step\":2");
        p[7] = '4';
        lines_write(&ls, l.path);
        size_t before_len;
        char *before = file_read(l.path, &before_len);
        char before_sha[65];
        sha256_hex(before, before_sha);

        audit_log *log = open_keyed(l.path, keys);
        json_t *s = status_of(log);
        assert_true(json_is_false(json_object_get(s, "ok")));
        const char *error = json_string_value(json_object_get(s, "error"));
        assert_non_null(strstr(error, "broken at record"));
        assert_int_equal(json_integer_value(json_object_get(s, "broken_at")), keyed ? 2 : 3);
        char *moved = strdup(json_string_value(json_object_get(s, "moved_to")));
        assert_non_null(strstr(moved, "audit.jsonl.broken-"));
        char moved_path[512];
        snprintf(moved_path, sizeof(moved_path), "%s/%s", l.dir, moved);
        size_t moved_len;
        char *moved_bytes = file_read(moved_path, &moved_len);
        assert_int_equal(moved_len, before_len);
        assert_memory_equal(moved_bytes, before, before_len);
        free(moved_bytes);
        char moved_anchor[600];
        snprintf(moved_anchor, sizeof(moved_anchor), "%s.anchor", moved_path);
        assert_true(file_exists(moved_anchor));
        /* New records go to the new chain. */
        assert_int_equal(audit_append(log, "after_break", NULL), 0);
        json_decref(s);
        s = status_of(log);
        assert_true(json_is_false(json_object_get(s, "ok"))); /* sticky */
        assert_int_equal(json_integer_value(json_object_get(s, "records")), 2);
        json_decref(s);
        audit_close(log);
        assert_ok_with(&l, keys, 2);
        lines_free(&ls);
        lines_read(&ls, l.path);
        json_t *first = record(ls.line[0]);
        assert_string_equal(json_string_value(json_object_get(first, "action")),
                            "audit_chain_broken");
        assert_string_equal(json_string_value(json_object_get(first, "previous_log")), moved);
        assert_string_equal(json_string_value(json_object_get(first, "previous_sha256")),
                            before_sha);
        assert_int_equal(json_integer_value(json_object_get(first, "previous_bytes")), before_len);
        assert_int_equal(json_integer_value(json_object_get(first, "intact_records")),
                         keyed ? 1 : 2);
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(first, "previous_anchor"), "seq")),
            5);
        json_decref(first);
        /* The moved log still verifies as broken where it was. */
        logfile m = l;
        snprintf(m.path, sizeof(m.path), "%s", moved_path);
        assert_broken_with(&m, keys, NULL, keyed ? 2 : 3, NULL);
        free(before);
        free(moved);
        done(&l, &ls);
    }
}

static void test_corrupt_last_record_moved_aside(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 2);
    FILE *f = fopen(l.path, "ab");
    fputs("not json\n", f);
    fclose(f);
    assert_broken_at(&l, 3);
    audit_log *log = open_log(&l);
    json_t *s = status_of(log);
    assert_true(json_is_false(json_object_get(s, "ok")));
    assert_string_equal(json_string_value(json_object_get(s, "reason")), "not a JSON object");
    json_decref(s);
    audit_close(log);
    assert_ok(&l, 1);
    logfile_remove(&l);
}

/* Records added behind the port's back while it runs: the next append
 * notices and starts a new chain. */
static void test_tampering_while_open(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    audit_log *log = open_log(&l);
    for (int i = 0; i < 3; i++)
        assert_int_equal(audit_append(log, "running", NULL), 0);
    lines ls;
    lines_read(&ls, l.path);
    char prev[65], forged[256];
    sha256_hex(ls.line[2], prev);
    snprintf(forged, sizeof(forged),
             "{\"seq\":4,\"at\":\"2024-01-01T00:00:00Z\",\"action\":\"x\",\"prev\":\"%s\","
             "\"chain\":\"sha256\"}\n",
             prev);
    FILE *f = fopen(l.path, "ab");
    fputs(forged, f);
    fclose(f);
    assert_int_equal(audit_append(log, "next", NULL), 0);
    json_t *s = status_of(log);
    assert_true(json_is_false(json_object_get(s, "ok")));
    assert_int_equal(json_integer_value(json_object_get(s, "broken_at")), 4);
    assert_int_equal(json_integer_value(json_object_get(s, "records")), 2);
    json_decref(s);
    audit_close(log);
    assert_ok(&l, 2);
    done(&l, &ls);
}

/* ------------------------------------------------------------ keys */

static void test_key_change(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_keyed(l.path, &K1, 3);

    /* A keyed log is not continued without a key: refused, untouched. */
    size_t len_before;
    char *before = file_read(l.path, &len_before);
    audit_log *log = NULL;
    char err[512] = "";
    assert_int_equal(audit_open(&log, l.path, NULL, err, sizeof(err)), -1);
    assert_null(log);
    assert_non_null(strstr(err, "audit.key_env"));
    size_t len_after;
    char *after = file_read(l.path, &len_after);
    assert_int_equal(len_after, len_before);
    assert_memory_equal(after, before, len_before);
    free(after);
    free(before);

    /* The new key with the old one as previous: a new key epoch. */
    log = open_keyed(l.path, &K2_AFTER_K1);
    json_t *s = status_of(log);
    assert_true(json_is_true(json_object_get(s, "ok")));
    assert_true(json_is_true(json_object_get(s, "key_changed")));
    json_decref(s);
    assert_int_equal(audit_append(log, "under_k2", NULL), 0);
    audit_close(log);
    lines ls;
    lines_read(&ls, l.path);
    assert_int_equal(ls.n, 5);
    json_t *change = record(ls.line[3]);
    json_t *old = record(ls.line[2]);
    assert_string_equal(json_string_value(json_object_get(change, "action")), "audit_key_changed");
    assert_string_equal(json_string_value(json_object_get(change, "from_key")),
                        json_string_value(json_object_get(old, "key_id")));
    assert_string_not_equal(json_string_value(json_object_get(change, "key_id")),
                            json_string_value(json_object_get(old, "key_id")));
    json_decref(change);
    json_decref(old);
    /* The new key alone authenticates everything: the epoch record's MAC
     * covers the chain before it. */
    json_t *r = verify_with(&l, &K2, NULL);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "authenticated")), 5);
    json_decref(r);
    /* The old key alone does not vouch for the new records. */
    assert_broken_with(&l, &K1, NULL, 4, "not held");
    lines_free(&ls);

    /* A new key without the old one: the old chain cannot be
     * authenticated, so it is moved aside. */
    log = open_keyed(l.path, &K3);
    s = status_of(log);
    assert_true(json_is_false(json_object_get(s, "ok")));
    assert_non_null(strstr(json_string_value(json_object_get(s, "reason")), "previous_key_env"));
    json_decref(s);
    audit_close(log);
    assert_ok_with(&l, &K3, 1);
    logfile_remove(&l);

    /* An unkeyed log gets a key: the first keyed record says so. */
    logfile_make(&l);
    write_records(&l, 2);
    log = open_keyed(l.path, &K1);
    audit_close(log);
    lines_read(&ls, l.path);
    change = record(ls.line[2]);
    assert_string_equal(json_string_value(json_object_get(change, "action")), "audit_key_changed");
    assert_true(json_is_null(json_object_get(change, "from_key")));
    json_decref(change);
    assert_ok_with(&l, &K1, 3);
    done(&l, &ls);
}

static void test_keys_from_config(void **unused)
{
    (void)unused;
    audit_keys keys;
    char err[256];
    json_t *c = json_pack("{s:{s:s}}", "audit", "key_env", "SH_TEST_AUDIT_KEY");
    unsetenv("SH_TEST_AUDIT_KEY");
    assert_int_equal(audit_keys_from_config(c, &keys, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "SH_TEST_AUDIT_KEY"));
    setenv("SH_TEST_AUDIT_KEY", "tiny-secret", 1);
    assert_int_equal(audit_keys_from_config(c, &keys, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "too short"));
    assert_null(strstr(err, "tiny-secret")); /* the value is never shown */
    setenv("SH_TEST_AUDIT_KEY", KEY1, 1);
    assert_int_equal(audit_keys_from_config(c, &keys, err, sizeof(err)), 0);
    assert_int_equal(keys.key_len, strlen(KEY1));
    assert_null(keys.previous);
    json_decref(c);
    c = json_pack("{s:{s:s}}", "audit", "key_env", "BAD NAME");
    assert_int_equal(audit_keys_from_config(c, &keys, err, sizeof(err)), -1);
    json_decref(c);
    c = json_object();
    assert_int_equal(audit_keys_from_config(c, &keys, err, sizeof(err)), 0);
    assert_null(keys.key);
    json_decref(c);
    unsetenv("SH_TEST_AUDIT_KEY");
}

/* ------------------------------------------------------------ writers */

static void test_two_writers_keep_one_chain(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    audit_log *a = open_log(&l);
    audit_log *b = open_log(&l); /* as a second process would */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(audit_append(i % 3 == 0 ? b : a, "interleaved", NULL), 0);
    }
    json_t *s = status_of(a);
    assert_true(json_is_true(json_object_get(s, "ok")));
    json_decref(s);
    audit_close(a);
    audit_close(b);
    assert_ok(&l, 10);
    logfile_remove(&l);
}

static void *append_many(void *p)
{
    audit_log *log = p;
    for (int i = 0; i < 50; i++)
        if (audit_append(log, "threaded", NULL) != 0)
            return p;
    return NULL;
}

static void test_threads_append_one_chain(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    audit_log *log = open_keyed(l.path, &K1);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, append_many, log), 0);
    for (int i = 0; i < 4; i++) {
        void *ret = &ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    audit_close(log);
    assert_ok_with(&l, &K1, 200);
    logfile_remove(&l);
}

static void test_verify_empty_and_missing(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    char err[256] = "";
    assert_null(audit_verify(l.path, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, l.path));
    FILE *f = fopen(l.path, "wb");
    fclose(f);
    assert_ok(&l, 0);
    f = fopen(l.path, "wb");
    fputs("\n", f);
    fclose(f);
    assert_broken_at(&l, 1);
    /* A log removed beside its anchor is an emptied log. */
    unlink(l.path);
    write_records(&l, 2);
    unlink(l.path);
    assert_broken_with(&l, NULL, NULL, 1, "truncated: the anchor says 2 records");
    logfile_remove(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_format_and_chain),
        cmocka_unit_test(test_keyed_record_format),
        cmocka_unit_test(test_legacy_log_keeps_verifying),
        cmocka_unit_test(test_bad_appends_are_refused),
        cmocka_unit_test(test_modified_field_breaks_the_next_link),
        cmocka_unit_test(test_modified_seq_is_caught_on_its_line),
        cmocka_unit_test(test_deleted_line),
        cmocka_unit_test(test_reordered_lines),
        cmocka_unit_test(test_inserted_line),
        cmocka_unit_test(test_truncated_mid_line),
        cmocka_unit_test(test_forged_append),
        cmocka_unit_test(test_last_line_edited),
        cmocka_unit_test(test_last_line_deleted),
        cmocka_unit_test(test_edit_with_chain_recomputed),
        cmocka_unit_test(test_whole_file_replaced),
        cmocka_unit_test(test_witnesses),
        cmocka_unit_test(test_torn_tail_is_repaired_on_open),
        cmocka_unit_test(test_torn_keyed_record_restored_from_anchor),
        cmocka_unit_test(test_open_continues_the_chain),
        cmocka_unit_test(test_broken_chain_moved_aside_on_open),
        cmocka_unit_test(test_corrupt_last_record_moved_aside),
        cmocka_unit_test(test_tampering_while_open),
        cmocka_unit_test(test_key_change),
        cmocka_unit_test(test_keys_from_config),
        cmocka_unit_test(test_two_writers_keep_one_chain),
        cmocka_unit_test(test_threads_append_one_chain),
        cmocka_unit_test(test_verify_empty_and_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
