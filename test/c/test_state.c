/* Durable state: migrations, idempotent jobs, CAS transitions, recovery
 * after SIGKILL, tickets by fingerprint, budgets over a window, kv,
 * transactions over several calls, effects, counters from two processes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "state.h"

typedef struct tmpdir {
    char path[128];
} tmpdir;

static void tmpdir_make(tmpdir *t)
{
    const char *base = getenv("TMPDIR");
    snprintf(t->path, sizeof(t->path), "%s/sh_state_XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(t->path));
}

static void remove_dir(const char *dir)
{
    static const char *const files[] = {"self_heal.db", "self_heal.db-wal", "self_heal.db-shm",
                                        "audit.jsonl"};
    char p[1024];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, files[i]) >= sizeof(p))
            continue;
        unlink(p);
    }
    rmdir(dir);
}

static void tmpdir_remove(tmpdir *t)
{
    remove_dir(t->path);
}

static state_db *open_db(tmpdir *t)
{
    state_db *db = NULL;
    char err[256] = "";
    int rc = state_open(&db, t->path, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "state_open: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(db);
    return db;
}

/* Runs one query on the database file with a separate connection. */
static long long raw_int(tmpdir *t, const char *sql)
{
    char path[512];
    sqlite3 *raw = NULL;
    sqlite3_stmt *st = NULL;
    snprintf(path, sizeof(path), "%s/self_heal.db", t->path);
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(raw, sql, -1, &st, NULL), SQLITE_OK);
    long long v = -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        assert_int_equal(rc, SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(raw);
    return v;
}

static const char *jstr(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static long long jint(json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

static int64_t begin(state_db *db, const char *key, int *existed, char *status)
{
    int64_t id = 0;
    json_t *input = json_pack("{s:s}", "k", key);
    assert_int_equal(state_job_begin(db, "test", key, input, &id, existed, status, 16), 0);
    json_decref(input);
    return id;
}

/* ------------------------------------------------------------ migrations */

static void test_migrations_from_empty_and_reopen(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    assert_int_equal(state_schema_version(db), 4);
    assert_int_equal(state_kv_set(db, "k", "v"), 0);
    char wal[512];
    snprintf(wal, sizeof(wal), "%s/self_heal.db-wal", t.path);
    assert_int_equal(access(wal, F_OK), 0); /* WAL mode */
    state_close(db);
    assert_int_equal(raw_int(&t, "SELECT COUNT(*) FROM schema_migrations"), 4);

    db = open_db(&t);
    assert_int_equal(state_schema_version(db), 4);
    char buf[16];
    assert_int_equal(state_kv_get(db, "k", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "v");
    state_close(db);
    assert_int_equal(raw_int(&t, "SELECT COUNT(*) FROM schema_migrations"), 4);
    tmpdir_remove(&t);
}

static void test_newer_database_is_refused(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_close(open_db(&t));
    raw_int(&t, "INSERT INTO schema_migrations(version, applied_at) VALUES (99, 0)");
    state_db *db = NULL;
    char err[256] = "";
    assert_int_equal(state_open(&db, t.path, err, sizeof(err)), -1);
    assert_null(db);
    assert_non_null(strstr(err, "newer"));
    assert_non_null(strstr(err, "99"));
    tmpdir_remove(&t);
}

static void test_state_dir_is_created(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    char sub[512];
    snprintf(sub, sizeof(sub), "%s/a/b", t.path);
    state_db *db = NULL;
    char err[256] = "";
    assert_int_equal(state_open(&db, sub, err, sizeof(err)), 0);
    state_close(db);
    remove_dir(sub);
    snprintf(sub, sizeof(sub), "%s/a", t.path);
    rmdir(sub);
    /* A file where the directory should be is an error, not a crash. */
    snprintf(sub, sizeof(sub), "%s/self_heal.db", t.path);
    FILE *f = fopen(sub, "w");
    fclose(f);
    assert_int_equal(state_open(&db, sub, err, sizeof(err)), -1);
    unlink(sub);
    tmpdir_remove(&t);
}

/* ------------------------------------------------------------ jobs */

static void test_job_begin_is_idempotent(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    int existed = -1;
    char status[16];
    int64_t a = begin(db, "ticket:abc", &existed, status);
    assert_int_equal(existed, 0);
    assert_string_equal(status, "queued");
    int64_t b = begin(db, "ticket:abc", &existed, status);
    assert_int_equal(existed, 1);
    assert_true(a == b);
    /* Values are bound, never spliced into SQL. */
    int64_t c = begin(db, "x'); DROP TABLE jobs; --", &existed, status);
    assert_int_equal(existed, 0);
    assert_true(c != a);
    json_t *all = state_jobs_list(db, NULL, 10);
    assert_int_equal(json_array_size(all), 2);
    assert_string_equal(jstr(json_array_get(all, 0), "key"), "x'); DROP TABLE jobs; --");
    json_decref(all);
    state_close(db);
    assert_int_equal(raw_int(&t, "SELECT COUNT(*) FROM jobs WHERE key = 'ticket:abc'"), 1);
    tmpdir_remove(&t);
}

typedef struct race_arg {
    state_db *db;
    int64_t id;
} race_arg;

static void *race_begin(void *p)
{
    race_arg *a = p;
    int existed;
    char status[16];
    if (state_job_begin(a->db, "race", "race:key", NULL, &a->id, &existed, status, 16) != 0)
        a->id = -1;
    return NULL;
}

static void test_concurrent_begin_makes_one_job(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    pthread_t th[8];
    race_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i].db = db;
        assert_int_equal(pthread_create(&th[i], NULL, race_begin, &args[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_true(args[i].id > 0);
        assert_true(args[i].id == args[0].id);
    }
    state_close(db);
    assert_int_equal(raw_int(&t, "SELECT COUNT(*) FROM jobs"), 1);
    tmpdir_remove(&t);
}

static void test_transition_is_compare_and_set(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    int existed;
    char status[16];
    int64_t id = begin(db, "job:1", &existed, status);
    json_t *detail = json_pack("{s:s}", "worker", "w1");
    assert_int_equal(state_job_transition(db, id, "queued", "running", detail, NULL, NULL), 0);
    json_decref(detail);
    /* The second worker's CAS loses: the job is no longer queued. */
    assert_int_equal(state_job_transition(db, id, "queued", "running", NULL, NULL, NULL), 1);
    /* Not an allowed move, and no such job. */
    assert_int_equal(state_job_transition(db, id, "done", "running", NULL, NULL, NULL), -1);
    assert_int_equal(state_job_transition(db, id, "running", "bogus", NULL, NULL, NULL), -1);
    assert_int_equal(state_job_transition(db, 9999, "queued", "running", NULL, NULL, NULL), -1);
    json_t *result = json_pack("{s:i}", "ticket_id", 7);
    assert_int_equal(state_job_transition(db, id, "running", "done", NULL, result, NULL), 0);
    json_decref(result);

    json_t *job = state_job_get(db, id);
    assert_non_null(job);
    assert_string_equal(jstr(job, "status"), "done");
    assert_int_equal(jint(job, "attempts"), 1);
    assert_int_equal(jint(json_object_get(job, "result"), "ticket_id"), 7);
    assert_string_equal(jstr(json_object_get(job, "input"), "k"), "job:1");
    json_t *events = json_object_get(job, "events");
    assert_int_equal(json_array_size(events), 3);
    assert_true(json_is_null(json_object_get(json_array_get(events, 0), "from")));
    assert_string_equal(jstr(json_array_get(events, 1), "to"), "running");
    assert_string_equal(jstr(json_object_get(json_array_get(events, 1), "detail"), "worker"), "w1");
    json_decref(job);
    assert_null(state_job_get(db, 9999));

    json_t *done = state_jobs_list(db, "done", 10);
    assert_int_equal(json_array_size(done), 1);
    json_decref(done);
    json_t *queued = state_jobs_list(db, "queued", 10);
    assert_int_equal(json_array_size(queued), 0);
    json_decref(queued);
    state_close(db);
    tmpdir_remove(&t);
}

static void run_once(state_db *db, int64_t id)
{
    assert_int_equal(state_job_transition(db, id, "queued", "running", NULL, NULL, NULL), 0);
}

static void test_recover_requeues_or_escalates(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    int existed;
    char status[16];
    int64_t a = begin(db, "a", &existed, status);
    int64_t b = begin(db, "b", &existed, status);
    int64_t c = begin(db, "c", &existed, status);
    run_once(db, a); /* attempts 1 */
    for (int i = 0; i < 3; i++) {
        run_once(db, b);
        if (i < 2)
            assert_int_equal(state_job_transition(db, b, "running", "queued", NULL, NULL, NULL), 0);
    }        /* attempts 3, running */
    (void)c; /* stays queued */

    json_t *moved = state_jobs_recover(db, 3);
    assert_non_null(moved);
    assert_int_equal(json_array_size(moved), 2);
    json_t *ja = state_job_get(db, a);
    json_t *jb = state_job_get(db, b);
    json_t *jc = state_job_get(db, c);
    assert_string_equal(jstr(ja, "status"), "queued");
    assert_string_equal(jstr(jb, "status"), "escalated");
    assert_string_equal(jstr(jc, "status"), "queued");
    assert_int_equal(json_array_size(json_object_get(jc, "events")), 1);
    json_t *last = json_array_get(json_object_get(jb, "events"), 6);
    assert_string_equal(jstr(last, "from"), "running");
    assert_string_equal(jstr(last, "to"), "escalated");
    assert_non_null(jstr(json_object_get(last, "detail"), "reason"));
    json_decref(ja);
    json_decref(jb);
    json_decref(jc);
    json_decref(moved);
    /* Nothing running any more: a second recovery moves nothing. */
    moved = state_jobs_recover(db, 3);
    assert_int_equal(json_array_size(moved), 0);
    json_decref(moved);
    state_close(db);
    tmpdir_remove(&t);
}

/* A child opens the database, takes the job to running, tells the parent,
 * then keeps writing until it is killed with SIGKILL. */
static pid_t child_runs_job(tmpdir *t, const char *key)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        alarm(20);
        state_db *db = NULL;
        char err[256];
        int existed;
        int64_t id;
        char status[16];
        if (state_open(&db, t->path, err, sizeof(err)) != 0 ||
            state_job_begin(db, "test", key, NULL, &id, &existed, status, 16) != 0 ||
            state_job_transition(db, id, "queued", "running", NULL, NULL, NULL) != 0)
            _exit(3);
        char ok = 'r';
        if (write(fds[1], &ok, 1) != 1)
            _exit(4);
        for (long i = 0;; i++) {
            char v[32];
            snprintf(v, sizeof(v), "%ld", i);
            state_kv_set(db, "progress", v);
            state_budget_add(db, "calls", 1.0);
        }
    }
    close(fds[1]);
    char got = 0;
    assert_int_equal(read(fds[0], &got, 1), 1);
    assert_int_equal(got, 'r');
    close(fds[0]);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL); /* let it be in the middle of writes */
    assert_int_equal(kill(pid, SIGKILL), 0);
    int wstatus = 0;
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    assert_true(WIFSIGNALED(wstatus));
    assert_int_equal(WTERMSIG(wstatus), SIGKILL);
    return pid;
}

static void test_sigkill_mid_job_is_recovered(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    child_runs_job(&t, "kill:1");

    state_db *db = open_db(&t);
    char progress[32];
    assert_int_equal(state_kv_get(db, "progress", progress, sizeof(progress)), 0);
    json_t *running = state_jobs_list(db, "running", 10);
    assert_int_equal(json_array_size(running), 1);
    int64_t id = (int64_t)jint(json_array_get(running, 0), "id");
    json_decref(running);
    json_t *moved = state_jobs_recover(db, 2);
    assert_int_equal(json_array_size(moved), 1);
    assert_string_equal(jstr(json_array_get(moved, 0), "status"), "queued");
    assert_int_equal(jint(json_array_get(moved, 0), "attempts"), 1);
    json_decref(moved);
    state_close(db);

    /* The resumed run is killed too: at max attempts it escalates. */
    child_runs_job(&t, "kill:1");
    db = open_db(&t);
    moved = state_jobs_recover(db, 2);
    assert_int_equal(json_array_size(moved), 1);
    assert_true(jint(json_array_get(moved, 0), "id") == id);
    assert_string_equal(jstr(json_array_get(moved, 0), "status"), "escalated");
    assert_int_equal(jint(json_array_get(moved, 0), "attempts"), 2);
    json_decref(moved);
    json_t *all = state_jobs_list(db, NULL, 10);
    assert_int_equal(json_array_size(all), 1); /* never a second job for the key */
    json_decref(all);
    state_close(db);
    assert_int_equal(raw_int(&t, "SELECT COUNT(*) FROM jobs"), 1);
    tmpdir_remove(&t);
}

/* ------------------------------------------------------------ tickets */

static void test_tickets_find_open_by_any_fingerprint(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    json_t *fps = json_pack("[s, s]", "fp_a", "fp_b");
    int64_t id = 0;
    assert_int_equal(
        state_ticket_insert(db, fps, "local", NULL, NULL, "DB down", "critical", 31, &id), 0);
    json_decref(fps);
    json_t *bad = json_array();
    int64_t unused_id;
    assert_int_equal(state_ticket_insert(db, bad, "local", NULL, NULL, "x", "low", 1, &unused_id),
                     -1);
    json_decref(bad);

    json_t *found = state_ticket_find_open(db, "fp_b");
    assert_non_null(found);
    assert_true(jint(found, "id") == id);
    assert_string_equal(jstr(found, "fingerprint"), "fp_a");
    assert_string_equal(jstr(found, "status"), "open");
    assert_int_equal(jint(found, "count"), 31);
    assert_int_equal(json_array_size(json_object_get(found, "fingerprints")), 2);
    json_decref(found);
    assert_null(state_ticket_find_open(db, "fp_c"));

    int64_t total = 0;
    assert_int_equal(state_ticket_add_count(db, id, 9, NULL, &total), 0);
    assert_int_equal(total, 40);
    json_t *got = state_ticket_get(db, id);
    assert_int_equal(jint(got, "count"), 40);
    assert_string_equal(jstr(got, "status"), "open");
    json_decref(got);
    assert_int_equal(state_ticket_set_status(db, id, "closed"), 0);
    assert_int_equal(state_ticket_set_status(db, id, "bogus"), -1);
    assert_int_equal(state_ticket_set_status(db, 999, "closed"), -1);
    assert_int_equal(state_ticket_add_count(db, 999, 1, NULL, NULL), -1);
    assert_null(state_ticket_find_open(db, "fp_a"));
    got = state_ticket_get(db, id);
    assert_int_equal(jint(got, "count"), 40);
    json_decref(got);

    json_t *open = state_tickets_list(db, "open", 10);
    json_t *all = state_tickets_list(db, NULL, 10);
    assert_int_equal(json_array_size(open), 0);
    assert_int_equal(json_array_size(all), 1);
    json_decref(open);
    json_decref(all);
    state_close(db);
    tmpdir_remove(&t);
}

/* ------------------------------------------------------------ budget, kv */

static void test_budget_sums_over_a_window(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    setenv("SELF_HEAL_NOW", "1000", 1);
    assert_int_equal(port_now(), 1000);
    assert_int_equal(state_budget_add(db, "spend", 1.5), 0);
    setenv("SELF_HEAL_NOW", "2000", 1);
    assert_int_equal(state_budget_add(db, "spend", 2.0), 0);
    assert_int_equal(state_budget_add(db, "calls", 1.0), 0);
    setenv("SELF_HEAL_NOW", "2500", 1);
    assert_true(state_budget_sum(db, "spend", 600) == 2.0);  /* at >= 1900 */
    assert_true(state_budget_sum(db, "spend", 1500) == 3.5); /* at >= 1000: inclusive */
    assert_true(state_budget_sum(db, "spend", 1499) == 2.0);
    assert_true(state_budget_sum(db, "calls", 3600) == 1.0);
    assert_true(state_budget_sum(db, "tokens", 3600) == 0.0);
    setenv("SELF_HEAL_NOW", "not a number", 1);
    assert_true(port_now() > 1600000000);
    unsetenv("SELF_HEAL_NOW");
    state_close(db);
    tmpdir_remove(&t);
}

static void test_kv(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    char buf[8];
    assert_int_equal(state_kv_get(db, "telegram_offset", buf, sizeof(buf)), 1);
    assert_int_equal(state_kv_set(db, "telegram_offset", "41"), 0);
    assert_int_equal(state_kv_set(db, "telegram_offset", "42"), 0);
    assert_int_equal(state_kv_get(db, "telegram_offset", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "42");
    assert_int_equal(state_kv_set(db, "long", "0123456789"), 0);
    assert_int_equal(state_kv_get(db, "long", buf, sizeof(buf)), -1); /* never truncated */
    state_close(db);
    assert_int_equal(raw_int(&t, "SELECT COUNT(*) FROM kv"), 2);
    tmpdir_remove(&t);
}

/* One fix in flight per fingerprint; status compare-and-set; unknown
 * columns refused. */
static void test_fixes_one_in_flight(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    int64_t a = 0, b = 0, c = 0;
    assert_int_equal(state_fix_insert(db, "fp1", 7, "high", NULL, &a), 0);
    assert_int_equal(state_fix_insert(db, "fp1", 8, "high", NULL, &b), 1);
    assert_int_equal(state_fix_insert(db, "fp2", 0, NULL, NULL, &c), 0);
    json_t *f = json_pack("{s:s, s:f}", "status", "awaiting_approval", "confidence", 0.9);
    assert_int_equal(state_fix_set(db, a, "fixing", f), 0);
    assert_int_equal(state_fix_set(db, a, "fixing", f), 1); /* no longer fixing */
    json_decref(f);
    /* still in flight (awaiting approval): a second fix of fp1 is refused */
    assert_int_equal(state_fix_insert(db, "fp1", 8, "high", NULL, &b), 1);
    f = json_pack("{s:s}", "status", "skipped");
    assert_int_equal(state_fix_set(db, a, NULL, f), 0);
    json_decref(f);
    assert_int_equal(state_fix_insert(db, "fp1", 8, "high", NULL, &b), 0);
    assert_true(b > a);
    f = json_pack("{s:s}", "status); DROP TABLE fixes; --", "x");
    assert_int_equal(state_fix_set(db, a, NULL, f), -1);
    json_decref(f);
    json_t *row = state_fix_get(db, a);
    assert_string_equal(json_string_value(json_object_get(row, "status")), "skipped");
    assert_true(json_real_value(json_object_get(row, "confidence")) > 0.89);
    json_decref(row);
    json_t *list = state_fixes_list(db, NULL, "fp1", 10);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);
    state_close(db);
    tmpdir_remove(&t);
}

/* Breaker: consecutive failures open it at the threshold; a success
 * clears the count of a closed one but never closes an open one. */
static void test_breaker_and_ledger(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    int open = 1;
    long long failures = -1;
    assert_int_equal(state_breaker_get(db, "deploy", &open, &failures), 0);
    assert_int_equal(open, 0);
    assert_int_equal(failures, 0);
    assert_int_equal(state_breaker_record(db, "deploy", 1, 3, &open), 0);
    assert_int_equal(state_breaker_record(db, "deploy", 1, 3, &open), 0);
    assert_int_equal(open, 0);
    assert_int_equal(state_breaker_record(db, "deploy", 0, 3, &open), 0);
    state_breaker_get(db, "deploy", &open, &failures);
    assert_int_equal(failures, 0);
    for (int i = 0; i < 3; i++)
        state_breaker_record(db, "deploy", 1, 3, &open);
    assert_int_equal(open, 1);
    state_breaker_record(db, "deploy", 0, 3, &open);
    assert_int_equal(open, 1); /* only a human closes it */
    assert_int_equal(state_breaker_reset(db, "deploy"), 0);
    state_breaker_get(db, "deploy", &open, &failures);
    assert_int_equal(open, 0);
    assert_int_equal(failures, 0);

    assert_int_equal(state_deploy_add(db, 1, "fp", "deploy", "started", "abc", 1, NULL), 0);
    assert_int_equal(state_deploy_add(db, 2, "fp", "deploy", "started", "abd", 0, NULL), 0);
    assert_int_equal(state_deploy_add(db, 1, "fp", "deploy", "succeeded", "abc", 1,
                                      json_pack("{s:s}", "x", "y")),
                     0);
    assert_int_equal(state_deploy_count(db, "deploy", 1, 3600), 1);
    assert_int_equal(state_deploy_count(db, "deploy", 0, 3600), 2);

    assert_int_equal(state_recurrence_count(db, "fp", 0), 0);
    assert_int_equal(state_recurrence_add(db, "fp", 3), 0);
    assert_int_equal(state_recurrence_add(db, "fp", 2), 0);
    assert_int_equal(state_recurrence_count(db, "fp", 0), 5);
    assert_int_equal(state_recurrence_count(db, "fp", port_now() + 10), 0);
    state_close(db);
    tmpdir_remove(&t);
}

/* ------------------------------------------------------------ transactions */

/* An open local ticket of one fingerprint. */
static int64_t new_ticket(state_db *db, const char *fp, int64_t count)
{
    json_t *fps = json_pack("[s]", fp);
    int64_t id = 0;
    assert_int_equal(state_ticket_insert(db, fps, "local", NULL, NULL, "t", "high", count, &id), 0);
    json_decref(fps);
    return id;
}

static void test_txn_spans_calls(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    int64_t id = new_ticket(db, "fp_t", 1);

    /* rolled back: the count, the effect and the job's move all vanish */
    int existed;
    char status[16];
    int64_t job = begin(db, "txn:1", &existed, status);
    assert_int_equal(state_job_transition(db, job, "queued", "running", NULL, NULL, NULL), 0);
    assert_int_equal(state_txn_begin(db), 0);
    assert_int_equal(state_ticket_add_count(db, id, 5, NULL, NULL), 0);
    assert_int_equal(state_effect_done(db, "txn:1/comment", job, NULL, NULL), 0);
    assert_int_equal(state_job_transition(db, job, "running", "done", NULL, NULL, NULL), 0);
    state_txn_rollback(db);
    json_t *got = state_ticket_get(db, id);
    assert_int_equal(jint(got, "count"), 1);
    json_decref(got);
    assert_null(state_effect_get(db, "txn:1/comment"));
    got = state_job_get(db, job);
    assert_string_equal(jstr(got, "status"), "running");
    json_decref(got);

    /* committed: all of them; a nested call that fails rolls back its part */
    assert_int_equal(state_txn_begin(db), 0);
    assert_int_equal(state_ticket_add_count(db, id, 5, NULL, NULL), 0);
    assert_int_equal(state_job_transition(db, 999999, "queued", "running", NULL, NULL, NULL), -1);
    assert_int_equal(state_txn_begin(db), 0); /* nested */
    assert_int_equal(state_effect_done(db, "txn:1/comment", job, NULL, NULL), 0);
    assert_int_equal(state_txn_commit(db), 0);
    assert_int_equal(state_job_transition(db, job, "running", "done", NULL, NULL, NULL), 0);
    assert_int_equal(state_txn_commit(db), 0);
    got = state_ticket_get(db, id);
    assert_int_equal(jint(got, "count"), 6);
    json_decref(got);
    got = state_effect_get(db, "txn:1/comment");
    assert_string_equal(jstr(got, "status"), "done");
    json_decref(got);
    assert_int_equal(raw_int(&t, "SELECT COUNT(*) FROM jobs WHERE status = 'done'"), 1);
    state_close(db);
    tmpdir_remove(&t);
}

/* ------------------------------------------------------------ effects */

static void test_effects_intent_done_audit(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    char status[16] = "";
    assert_int_equal(state_effect_intent(db, "j/send", 0, status, sizeof(status)), 0);
    assert_string_equal(status, "intent");
    assert_int_equal(state_effect_intent(db, "j/send", 0, status, sizeof(status)), 1);
    assert_string_equal(status, "intent");

    json_t *audit = json_pack("[{s:s, s:{s:i}}]", "action", "sent", "fields", "n", 1);
    json_t *result = json_pack("{s:i}", "ok", 1);
    assert_int_equal(state_effect_done(db, "j/send", 0, result, audit), 0);
    json_t *other = json_pack("{s:i}", "ok", 2);
    assert_int_equal(state_effect_done(db, "j/send", 0, other, NULL), 1); /* first result kept */
    json_t *e = state_effect_get(db, "j/send");
    assert_string_equal(jstr(e, "status"), "done");
    assert_int_equal(jint(json_object_get(e, "result"), "ok"), 1);
    assert_true(json_equal(json_object_get(e, "audit"), audit));
    json_decref(e);
    assert_int_equal(state_effect_intent(db, "j/send", 0, status, sizeof(status)), 1);
    assert_string_equal(status, "done");

    /* a step wholly in the database needs no intent */
    assert_int_equal(state_effect_done(db, "j/count", 0, NULL, audit), 0);
    json_t *pending = state_effects_unaudited(db, 10);
    assert_int_equal(json_array_size(pending), 2);
    assert_string_equal(jstr(json_array_get(pending, 0), "key"), "j/send");
    json_decref(pending);
    assert_int_equal(state_effect_audited(db, "j/send"), 0);
    pending = state_effects_unaudited(db, 10);
    assert_int_equal(json_array_size(pending), 1);
    assert_string_equal(jstr(json_array_get(pending, 0), "key"), "j/count");
    json_decref(pending);
    assert_int_equal(state_effect_intent(db, "", 0, NULL, 0), -1);
    json_decref(audit);
    json_decref(result);
    json_decref(other);
    state_close(db);
    tmpdir_remove(&t);
}

/* ------------------------------------------------------------ two processes */

#define RACE_ROUNDS 2000

/* A child with its own connection: for each round, one reservation of a
 * budget of 1 under a name of its own, and one ticket count increment. */
static void race_child(tmpdir *t, int go_fd, int64_t ticket)
{
    state_db *db = NULL;
    char err[256];
    char go;
    alarm(60);
    if (state_open(&db, t->path, err, sizeof(err)) != 0 || read(go_fd, &go, 1) != 1)
        _exit(3);
    for (int r = 0; r < RACE_ROUNDS; r++) {
        char name[32];
        snprintf(name, sizeof(name), "round%d", r);
        state_budget_check c = {name, 3600, 1, 1.0, 1.0, 0};
        int rc = state_budget_reserve(db, &c, 1, name, 1.0, NULL);
        if (rc < 0 || state_ticket_add_count(db, ticket, 1, NULL, NULL) != 0)
            _exit(4);
    }
    state_close(db);
    _exit(0); /* 3 and 4 are the failures the parent looks for */
}

static void test_counters_from_two_processes(void **unused)
{
    (void)unused;
    tmpdir t;
    tmpdir_make(&t);
    state_db *db = open_db(&t);
    int64_t id = new_ticket(db, "fp_race", 0);
    state_close(db); /* the children inherit nothing of it */
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            close(go[1]);
            race_child(&t, go[0], id);
        }
    }
    close(go[0]);
    assert_int_equal(write(go[1], "gg", 2), 2);
    close(go[1]);
    for (int k = 0; k < 2; k++) {
        int ws = 0;
        assert_int_equal(waitpid(kids[k], &ws, 0), kids[k]);
        assert_true(WIFEXITED(ws));
        assert_true(WEXITSTATUS(ws) != 3 && WEXITSTATUS(ws) != 4);
    }
    db = open_db(&t);
    /* each round's budget of 1 was spent once, whichever process won it */
    assert_int_equal(raw_int(&t, "SELECT COUNT(*) FROM budget"), RACE_ROUNDS);
    assert_int_equal(raw_int(&t, "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM budget"
                                 " GROUP BY name)"),
                     1);
    json_t *got = state_ticket_get(db, id);
    assert_int_equal(jint(got, "count"), 2 * RACE_ROUNDS);
    json_decref(got);
    state_close(db);
    tmpdir_remove(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations_from_empty_and_reopen),
        cmocka_unit_test(test_newer_database_is_refused),
        cmocka_unit_test(test_state_dir_is_created),
        cmocka_unit_test(test_job_begin_is_idempotent),
        cmocka_unit_test(test_concurrent_begin_makes_one_job),
        cmocka_unit_test(test_transition_is_compare_and_set),
        cmocka_unit_test(test_recover_requeues_or_escalates),
        cmocka_unit_test(test_sigkill_mid_job_is_recovered),
        cmocka_unit_test(test_tickets_find_open_by_any_fingerprint),
        cmocka_unit_test(test_budget_sums_over_a_window),
        cmocka_unit_test(test_kv),
        cmocka_unit_test(test_fixes_one_in_flight),
        cmocka_unit_test(test_breaker_and_ledger),
        cmocka_unit_test(test_txn_spans_calls),
        cmocka_unit_test(test_effects_intent_done_audit),
        cmocka_unit_test(test_counters_from_two_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
