/* Audit log: chain format, verification after each kind of edit, torn
 * tail repair, continuation across opens and writers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"

#define MAX_LINES 64

typedef struct logfile {
    char dir[128];
    char path[256];
} logfile;

static void logfile_make(logfile *l)
{
    const char *base = getenv("TMPDIR");
    snprintf(l->dir, sizeof(l->dir), "%s/sh_audit_XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(l->dir));
    snprintf(l->path, sizeof(l->path), "%s/audit.jsonl", l->dir);
}

static void logfile_remove(logfile *l)
{
    unlink(l->path);
    rmdir(l->dir);
}

static audit_log *open_log(logfile *l)
{
    audit_log *log = NULL;
    char err[256] = "";
    int rc = audit_open(&log, l->path, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "audit_open: %s\n", err);
    assert_int_equal(rc, 0);
    return log;
}

/* Writes n records "step" i = 1..n. */
static void write_records(logfile *l, int n)
{
    audit_log *log = open_log(l);
    for (int i = 1; i <= n; i++) {
        json_t *f = json_pack("{s:i, s:s}", "step", i, "note", "a \"quoted\"\nline");
        assert_int_equal(audit_append(log, "test_step", f), 0);
        json_decref(f);
    }
    audit_close(log);
}

/* The file as lines (newlines removed); returns the count. */
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

static json_t *verify(logfile *l)
{
    char err[256] = "";
    json_t *r = audit_verify(l->path, err, sizeof(err));
    if (r == NULL)
        fprintf(stderr, "audit_verify: %s\n", err);
    assert_non_null(r);
    return r;
}

static void assert_ok(logfile *l, long long records)
{
    json_t *r = verify(l);
    if (!json_is_true(json_object_get(r, "ok")))
        fprintf(stderr, "not ok: %s\n", json_string_value(json_object_get(r, "reason")));
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "records")), records);
    json_decref(r);
}

static void assert_broken_at(logfile *l, long long line)
{
    json_t *r = verify(l);
    assert_true(json_is_false(json_object_get(r, "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "broken_at")), line);
    assert_int_equal(json_integer_value(json_object_get(r, "records")), line - 1);
    assert_true(json_is_string(json_object_get(r, "reason")));
    json_decref(r);
}

static void sha256_hex(const char *s, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL), 1);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ------------------------------------------------------------ format */

static void test_record_format_and_chain(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 3);
    lines ls;
    lines_read(&ls, l.path);
    assert_int_equal(ls.n, 3);
    char prev[65] = "0000000000000000000000000000000000000000000000000000000000000000";
    for (size_t i = 0; i < ls.n; i++) {
        json_t *rec = json_loads(ls.line[i], 0, NULL);
        assert_non_null(rec);
        assert_int_equal(json_integer_value(json_object_get(rec, "seq")), i + 1);
        assert_string_equal(json_string_value(json_object_get(rec, "action")), "test_step");
        assert_string_equal(json_string_value(json_object_get(rec, "prev")), prev);
        const char *at = json_string_value(json_object_get(rec, "at"));
        assert_int_equal(strlen(at), 20); /* 2024-05-01T12:00:00Z */
        assert_int_equal(at[19], 'Z');
        assert_string_equal(json_string_value(json_object_get(rec, "note")), "a \"quoted\"\nline");
        /* seq, at, action first; prev last. */
        assert_int_equal(strncmp(ls.line[i], "{\"seq\":", 7), 0);
        assert_non_null(strstr(ls.line[i], ",\"prev\":\""));
        assert_int_equal(ls.line[i][strlen(ls.line[i]) - 1], '}');
        sha256_hex(ls.line[i], prev);
        json_decref(rec);
    }
    json_t *r = verify(&l);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "head")), prev);
    json_decref(r);
    lines_free(&ls);
    logfile_remove(&l);
}

static void test_bad_appends_are_refused(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    audit_log *log = open_log(&l);
    json_t *f = json_pack("{s:i}", "seq", 99);
    assert_int_equal(audit_append(log, "x", f), -1);
    json_decref(f);
    f = json_pack("{s:s}", "prev", "forged");
    assert_int_equal(audit_append(log, "x", f), -1);
    json_decref(f);
    assert_int_equal(audit_append(log, "", NULL), -1);
    json_t *arr = json_array();
    assert_int_equal(audit_append(log, "x", arr), -1);
    json_decref(arr);
    /* fields are not stolen */
    f = json_pack("{s:s}", "ticket", "7");
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
    lines_free(&ls);
    logfile_remove(&l);
}

static void test_modified_seq_is_caught_on_its_line(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 4);
    lines ls;
    lines_read(&ls, l.path);
    char *p = strstr(ls.line[1], "\"seq\":2");
    p[6] = '7';
    lines_write(&ls, l.path);
    assert_broken_at(&l, 2);
    lines_free(&ls);
    logfile_remove(&l);
}

static void test_deleted_line(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 6);
    lines ls;
    lines_read(&ls, l.path);
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
    lines_free(&ls);
    logfile_remove(&l);
}

static void test_reordered_lines(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 6);
    lines ls;
    lines_read(&ls, l.path);
    char *tmp = ls.line[1];
    ls.line[1] = ls.line[2];
    ls.line[2] = tmp;
    lines_write(&ls, l.path);
    assert_broken_at(&l, 2);
    lines_free(&ls);
    logfile_remove(&l);
}

static void test_inserted_line(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 6);
    lines ls;
    lines_read(&ls, l.path);
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
             "{\"seq\":3,\"at\":\"2024-01-01T00:00:00Z\",\"action\":\"deploy\",\"prev\":\"%s\"}",
             prev);
    free(ls.line[2]);
    ls.line[2] = strdup(forged);
    lines_write(&ls, l.path);
    assert_broken_at(&l, 4);
    lines_free(&ls);
    logfile_remove(&l);
}

static void test_truncated_mid_line(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 6);
    lines ls;
    lines_read(&ls, l.path);
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
    json_t *r = verify(&l);
    assert_int_equal(json_integer_value(json_object_get(r, "broken_at")), 6);
    assert_non_null(strstr(json_string_value(json_object_get(r, "reason")), "torn"));
    json_decref(r);
    lines_free(&ls);
    logfile_remove(&l);
}

/* ------------------------------------------------------------ open */

static void test_torn_tail_is_repaired_on_open(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 5);
    lines ls;
    lines_read(&ls, l.path);
    FILE *f = fopen(l.path, "ab");
    fputs("{\"seq\":6,\"at\":\"20", f); /* 17 bytes of a record being written */
    fclose(f);
    assert_broken_at(&l, 6);

    audit_log *log = open_log(&l);
    assert_int_equal(audit_append(log, "after_repair", NULL), 0);
    audit_close(log);
    assert_ok(&l, 7);
    lines_free(&ls);
    lines_read(&ls, l.path);
    json_t *rep = json_loads(ls.line[5], 0, NULL);
    assert_string_equal(json_string_value(json_object_get(rep, "action")), "audit_repaired");
    assert_int_equal(json_integer_value(json_object_get(rep, "seq")), 6);
    assert_int_equal(json_integer_value(json_object_get(rep, "dropped_bytes")), 17);
    json_decref(rep);
    lines_free(&ls);

    /* A file that is one torn line only. */
    f = fopen(l.path, "wb");
    fputs("{\"se", f);
    fclose(f);
    log = open_log(&l);
    audit_close(log);
    assert_ok(&l, 1);
    logfile_remove(&l);
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

static void test_corrupt_last_record_refuses_open(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    write_records(&l, 2);
    FILE *f = fopen(l.path, "ab");
    fputs("not json\n", f);
    fclose(f);
    audit_log *log = NULL;
    char err[256] = "";
    assert_int_equal(audit_open(&log, l.path, err, sizeof(err)), -1);
    assert_null(log);
    assert_non_null(strstr(err, "verify-audit"));
    assert_broken_at(&l, 3);
    logfile_remove(&l);
}

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
    audit_log *log = open_log(&l);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, append_many, log), 0);
    for (int i = 0; i < 4; i++) {
        void *ret = &ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    audit_close(log);
    assert_ok(&l, 200);
    logfile_remove(&l);
}

static void test_verify_empty_and_missing(void **unused)
{
    (void)unused;
    logfile l;
    logfile_make(&l);
    char err[256] = "";
    assert_null(audit_verify(l.path, err, sizeof(err)));
    assert_non_null(strstr(err, l.path));
    FILE *f = fopen(l.path, "wb");
    fclose(f);
    assert_ok(&l, 0);
    f = fopen(l.path, "wb");
    fputs("\n", f);
    fclose(f);
    assert_broken_at(&l, 1);
    logfile_remove(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_format_and_chain),
        cmocka_unit_test(test_bad_appends_are_refused),
        cmocka_unit_test(test_modified_field_breaks_the_next_link),
        cmocka_unit_test(test_modified_seq_is_caught_on_its_line),
        cmocka_unit_test(test_deleted_line),
        cmocka_unit_test(test_reordered_lines),
        cmocka_unit_test(test_inserted_line),
        cmocka_unit_test(test_truncated_mid_line),
        cmocka_unit_test(test_torn_tail_is_repaired_on_open),
        cmocka_unit_test(test_open_continues_the_chain),
        cmocka_unit_test(test_corrupt_last_record_refuses_open),
        cmocka_unit_test(test_two_writers_keep_one_chain),
        cmocka_unit_test(test_threads_append_one_chain),
        cmocka_unit_test(test_verify_empty_and_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
