/* The dashboard's read-only reports (port/core/dash.c): aggregates of a real
 * state database, read-only queries, the tail of an audit log (a filter,
 * a limit, a window that starts mid-line), and a fix's patch (only a file
 * of state_dir/fixes, never a link, cut at a code point, invalid bytes
 * replaced). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dash.h"
#include "state.h"

typedef struct tmpdir {
    char path[128];
} tmpdir;

static void tmpdir_make(tmpdir *t)
{
    const char *base = getenv("TMPDIR");
    snprintf(t->path, sizeof(t->path), "%s/sh_dash_XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(t->path));
}

static void rm_in(const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    unlink(p);
}

static void tmpdir_remove(tmpdir *t)
{
    static const char *const files[] = {"self_heal.db", "self_heal.db-wal", "self_heal.db-shm",
                                        "audit.jsonl",  "fixes/fp1.patch",  "fixes/link.patch",
                                        "outside.patch"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        rm_in(t->path, files[i]);
    char p[512];
    snprintf(p, sizeof(p), "%s/fixes", t->path);
    rmdir(p);
    rmdir(t->path);
}

static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* A state database in a new temporary directory. */
static state_db *open_db(tmpdir *t)
{
    tmpdir_make(t);
    state_db *db = NULL;
    char err[256] = "";
    assert_int_equal(state_open(&db, t->path, err, sizeof(err)), 0);
    return db;
}

static long long count_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

static void test_stats(void **state)
{
    (void)state;
    tmpdir t;
    state_db *db = open_db(&t);

    /* an empty database: zero everywhere, empty histograms */
    json_t *s = dash_stats(db, 1);
    assert_non_null(s);
    assert_int_equal(json_object_size(json_object_get(s, "fixes")), 0);
    json_t *h = json_object_get(json_object_get(s, "histograms"), "time_to_ticket");
    assert_int_equal(count_of(h, "count"), 0);
    assert_int_equal(json_array_size(json_object_get(h, "counts")), DASH_BUCKETS);
    json_decref(s);

    int64_t ticket = 0, f1 = 0, f2 = 0, f3 = 0;
    json_t *fps = json_pack("[s]", "fp1");
    assert_int_equal(state_ticket_insert(db, fps, "local", NULL, NULL, "t", "high", 3, &ticket), 0);
    json_decref(fps);
    json_t *in1 = json_pack("{s:{s:I}}", "group", "first_seen", (json_int_t)1000000);
    assert_int_equal(state_fix_insert(db, "fp1", ticket, "high", in1, &f1), 0);
    json_decref(in1);
    json_t *deployed = json_pack("{s:s}", "status", "deployed");
    assert_int_equal(state_fix_set(db, f1, NULL, deployed), 0);
    json_decref(deployed);
    json_t *in2 = json_pack("{s:{s:s}}", "group", "message", "no first_seen");
    assert_int_equal(state_fix_insert(db, "fp2", 0, "low", in2, &f2), 0);
    json_decref(in2);
    json_t *rejected = json_pack("{s:s}", "status", "rejected");
    assert_int_equal(state_fix_set(db, f2, NULL, rejected), 0);
    json_decref(rejected);
    /* input that is not JSON text is skipped, not an error */
    assert_int_equal(state_fix_insert(db, "fp3", 0, "low", NULL, &f3), 0);
    assert_int_equal(state_deploy_add(db, f1, "fp1", "deploy", "started", "c1", 1, NULL), 0);
    assert_int_equal(state_deploy_add(db, f1, "fp1", "deploy", "succeeded", "c1", 1, NULL), 0);
    assert_int_equal(state_deploy_add(db, f2, "fp2", "rollback", "succeeded", "c2", 0, NULL), 0);
    assert_int_equal(state_budget_add(db, "llm_cost_usd", 0.25), 0);
    assert_int_equal(state_budget_add(db, "llm_cost_usd", 0.5), 0);

    s = dash_stats(db, 1);
    assert_non_null(s);
    json_t *fixes = json_object_get(s, "fixes");
    assert_int_equal(count_of(fixes, "deployed"), 1);
    assert_int_equal(count_of(fixes, "rejected"), 1);
    assert_int_equal(count_of(fixes, "fixing"), 1);
    assert_int_equal(count_of(json_object_get(s, "tickets"), "open"), 1);
    json_t *cost = json_object_get(json_object_get(s, "budget"), "llm_cost_usd");
    assert_true(json_real_value(json_object_get(cost, "total")) > 0.74);
    assert_int_equal(count_of(cost, "n"), 2);
    json_t *deploys = json_object_get(s, "deploys");
    assert_int_equal(json_array_size(deploys), 3);
    json_t *d0 = json_array_get(deploys, 0);
    assert_string_equal(json_string_value(json_object_get(d0, "kind")), "deploy");
    assert_int_equal(count_of(d0, "auto"), 1);
    /* one fix has a first occurrence (1,000 s after the epoch): its
     * ticket, deploy and verification came long after, beyond every bucket */
    json_t *hist = json_object_get(s, "histograms");
    for (size_t k = 0; k < 3; k++) {
        static const char *const names[] = {"time_to_ticket", "time_to_deploy", "time_to_verified"};
        h = json_object_get(hist, names[k]);
        assert_int_equal(count_of(h, "count"), 1);
        assert_int_equal(json_integer_value(json_array_get(json_object_get(h, "counts"), 8)), 0);
        assert_true(json_real_value(json_object_get(h, "sum")) > 1e9);
    }
    json_decref(s);

    /* a first occurrence 100 s ago: within the 300 s bucket, not the 60 s one */
    int64_t f4 = 0;
    json_t *in4 =
        json_pack("{s:{s:I}}", "group", "first_seen", (json_int_t)((port_now() - 100) * 1000));
    assert_int_equal(state_fix_insert(db, "fp4", 0, "high", in4, &f4), 0);
    json_decref(in4);
    assert_int_equal(state_deploy_add(db, f4, "fp4", "deploy", "started", "c4", 0, NULL), 0);
    s = dash_stats(db, 1);
    h = json_object_get(json_object_get(s, "histograms"), "time_to_deploy");
    assert_int_equal(count_of(h, "count"), 2);
    json_t *counts = json_object_get(h, "counts");
    assert_int_equal(json_integer_value(json_array_get(counts, 0)), 0);
    assert_int_equal(json_integer_value(json_array_get(counts, 1)), 1);
    /* no ticket, no verification for that one */
    assert_int_equal(
        count_of(json_object_get(json_object_get(s, "histograms"), "time_to_ticket"), "count"), 1);
    json_decref(s);

    /* state_select only reads */
    assert_null(state_select(db, "DELETE FROM fixes", NULL, 0));
    int64_t arg = f1;
    json_t *rows = state_select(db, "SELECT status FROM fixes WHERE id = ?1", &arg, 1);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    s = dash_stats(db, 1);
    assert_int_equal(count_of(json_object_get(s, "fixes"), "deployed"), 1);
    json_decref(s);
    /* without the histograms */
    s = dash_stats(db, 0);
    assert_int_equal(json_object_size(json_object_get(s, "histograms")), 0);
    assert_int_equal(count_of(json_object_get(s, "fixes"), "deployed"), 1);
    json_decref(s);

    state_close(db);
    tmpdir_remove(&t);
}

/* A ticket job as port/analysis/ticket.c records it: the group's first occurrence
 * in its input, the ticket in its result. */
static int64_t ticket_by_job(state_db *db, const char *key, const char *fp, json_int_t first_ms)
{
    json_t *input = json_pack("{s:[s], s:I}", "fingerprints", fp, "first_seen", first_ms);
    int64_t job = 0, ticket = 0;
    int existed = 0;
    char status[16];
    assert_int_equal(
        state_job_begin(db, "ticket", key, input, &job, &existed, status, sizeof(status)), 0);
    json_decref(input);
    assert_int_equal(state_job_transition(db, job, "queued", "running", NULL, NULL, NULL), 0);
    json_t *fps = json_pack("[s]", fp);
    assert_int_equal(state_ticket_insert(db, fps, "local", NULL, NULL, "t", "high", 1, &ticket), 0);
    json_decref(fps);
    json_t *result = json_pack("{s:I, s:b}", "ticket_id", (json_int_t)ticket, "created", 1);
    assert_int_equal(state_job_transition(db, job, "running", "done", NULL, result, NULL), 0);
    json_decref(result);
    return ticket;
}

/* Every ticket counts in time_to_ticket (a fix or not); the groups of the
 * escalations not analysed yet are counted. */
static void test_tickets_and_pending(void **state)
{
    (void)state;
    tmpdir t;
    state_db *db = open_db(&t);
    json_int_t now_ms = (json_int_t)port_now() * 1000;

    /* two tickets without a fix: 100 s and 2,000 s after the first
     * occurrence; a ticket made without a job (no first occurrence known) */
    ticket_by_job(db, "k1", "fp1", now_ms - 100 * 1000);
    ticket_by_job(db, "k2", "fp2", now_ms - 2000 * 1000);
    int64_t bare = 0;
    json_t *fps = json_pack("[s]", "fp3");
    assert_int_equal(state_ticket_insert(db, fps, "local", NULL, NULL, "t", "low", 1, &bare), 0);
    json_decref(fps);
    /* a later job commenting on fp1's ticket does not move its start */
    json_t *input = json_pack("{s:[s], s:I}", "fingerprints", "fp1", "first_seen", now_ms);
    int64_t job = 0;
    int existed = 0;
    char status[16];
    assert_int_equal(
        state_job_begin(db, "ticket", "k3", input, &job, &existed, status, sizeof(status)), 0);
    json_decref(input);

    /* an escalation of three groups queued, one of two running, one done */
    const char *const keys[] = {"e1", "e2", "e3"};
    const int ngroups[] = {3, 2, 4};
    int64_t jobs[3];
    for (int k = 0; k < 3; k++) {
        json_t *groups = json_array();
        for (int g = 0; g < ngroups[k]; g++)
            json_array_append_new(groups, json_pack("{s:s}", "id", "fp"));
        json_t *in = json_pack("{s:o}", "groups", groups);
        assert_int_equal(state_job_begin(db, "escalate", keys[k], in, &jobs[k], &existed, status,
                                         sizeof(status)),
                         0);
        json_decref(in);
    }
    assert_int_equal(state_job_transition(db, jobs[1], "queued", "running", NULL, NULL, NULL), 0);
    assert_int_equal(state_job_transition(db, jobs[2], "queued", "running", NULL, NULL, NULL), 0);
    assert_int_equal(state_job_transition(db, jobs[2], "running", "done", NULL, NULL, NULL), 0);

    json_t *s = dash_stats(db, 1);
    assert_non_null(s);
    assert_int_equal(count_of(s, "escalations_pending"), 5);
    json_t *h = json_object_get(json_object_get(s, "histograms"), "time_to_ticket");
    assert_int_equal(count_of(h, "count"), 2);
    json_t *counts = json_object_get(h, "counts");
    assert_int_equal(json_integer_value(json_array_get(counts, 0)), 0); /* <= 60 s */
    assert_int_equal(json_integer_value(json_array_get(counts, 1)), 1); /* <= 300 s */
    assert_int_equal(json_integer_value(json_array_get(counts, 3)), 1); /* <= 1800 s */
    assert_int_equal(json_integer_value(json_array_get(counts, 4)), 2); /* <= 3600 s */
    double sum = json_real_value(json_object_get(h, "sum"));
    assert_true(sum >= 2100 && sum < 2110);
    json_decref(s);

    state_close(db);
    tmpdir_remove(&t);
}

static void test_audit_tail(void **state)
{
    (void)state;
    tmpdir t;
    tmpdir_make(&t);
    char path[512];
    snprintf(path, sizeof(path), "%s/audit.jsonl", t.path);
    cmd_error err = {NULL, ""};

    /* no log yet: no record */
    json_t *out = dash_audit_tail(path, 10, 0, 1 << 20, &err);
    assert_non_null(out);
    assert_int_equal(json_array_size(json_object_get(out, "records")), 0);
    json_decref(out);

    char text[8192] = "";
    size_t used = 0;
    for (int i = 1; i <= 40; i++)
        used += (size_t)snprintf(text + used, sizeof(text) - used,
                                 "{\"seq\":%d,\"action\":\"fix_stage\",\"fix_id\":%d}\n", i,
                                 i % 2 ? 7 : 8);
    used += (size_t)snprintf(text + used, sizeof(text) - used, "not json\n{\"seq\":41}");
    write_file(t.path, "audit.jsonl", text, used);

    out = dash_audit_tail(path, 5, 0, 1 << 20, &err);
    json_t *recs = json_object_get(out, "records");
    assert_int_equal(json_array_size(recs), 5);
    /* newest last, the line that is not JSON skipped, a last line without
     * its newline read */
    assert_int_equal(count_of(json_array_get(recs, 4), "seq"), 41);
    assert_int_equal(count_of(json_array_get(recs, 3), "seq"), 40);
    assert_int_equal(count_of(out, "from_offset"), 0);
    json_decref(out);

    out = dash_audit_tail(path, 100, 7, 1 << 20, &err);
    recs = json_object_get(out, "records");
    assert_int_equal(json_array_size(recs), 20);
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec) assert_int_equal(count_of(rec, "fix_id"), 7);
    json_decref(out);

    /* a window that starts inside a line drops that line */
    out = dash_audit_tail(path, 100, 0, 100, &err);
    recs = json_object_get(out, "records");
    assert_true(json_array_size(recs) >= 1 && json_array_size(recs) <= 3);
    assert_int_equal(count_of(json_array_get(recs, json_array_size(recs) - 1), "seq"), 41);
    assert_true(count_of(out, "from_offset") > 0);
    json_decref(out);

    tmpdir_remove(&t);
}

static void test_patch(void **state)
{
    (void)state;
    tmpdir t;
    tmpdir_make(&t);
    char dir[256], good[512], link[512], outside[512];
    snprintf(dir, sizeof(dir), "%s/fixes", t.path);
    assert_int_equal(mkdir(dir, 0700), 0);
    /* "é" is two bytes: a cut after 5 bytes keeps "+abc" and no half */
    const char patch[] = "+abc\xc3\xa9\xff\n";
    write_file(t.path, "fixes/fp1.patch", patch, sizeof(patch) - 1);
    write_file(t.path, "outside.patch", "x", 1);
    snprintf(good, sizeof(good), "%s/fixes/fp1.patch", t.path);
    snprintf(link, sizeof(link), "%s/fixes/link.patch", t.path);
    snprintf(outside, sizeof(outside), "%s/outside.patch", t.path);
    assert_int_equal(symlink(outside, link), 0);
    cmd_error err = {NULL, ""};

    json_t *out = dash_read_patch(t.path, good, 1 << 20, &err);
    assert_non_null(out);
    assert_string_equal(json_string_value(json_object_get(out, "patch")), "+abc\xc3\xa9?\n");
    assert_false(json_is_true(json_object_get(out, "truncated")));
    assert_int_equal(count_of(out, "bytes"), (long long)sizeof(patch) - 1);
    json_decref(out);

    out = dash_read_patch(t.path, good, 5, &err);
    assert_string_equal(json_string_value(json_object_get(out, "patch")), "+abc");
    assert_true(json_is_true(json_object_get(out, "truncated")));
    json_decref(out);

    const char *bad[] = {outside, link, NULL};
    char dotdot[600];
    snprintf(dotdot, sizeof(dotdot), "%s/fixes/../outside.patch", t.path);
    for (size_t i = 0; i < 2; i++) {
        err.code = NULL;
        assert_null(dash_read_patch(t.path, bad[i], 100, &err));
        assert_string_equal(err.code, "not_found");
    }
    assert_null(dash_read_patch(t.path, dotdot, 100, &err));
    assert_null(dash_read_patch(t.path, NULL, 100, &err));
    assert_null(dash_read_patch("", good, 100, &err));
    tmpdir_remove(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_tickets_and_pending),
        cmocka_unit_test(test_audit_tail),
        cmocka_unit_test(test_patch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
