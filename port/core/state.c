/*
 * Durable state in SQLite (WAL): jobs and their transitions, tickets,
 * budgets, small settings. One connection per state_db, guarded by a
 * mutex; every statement is prepared with bound parameters. Schema
 * changes are versioned migrations (docs/state.md).
 *
 * Also the state module's commands: jobs, job, verify-audit.
 */
#include "state.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base.h"
#include "self_heal/common.h"

#define STATE_DB_FILE "self_heal.db"
#define STATE_KEY_MAX 512
#define STATE_TEXT_MAX (1024 * 1024)
#define STATE_BUSY_MS 5000

struct state_db {
    sqlite3 *db;
    pthread_mutex_t lock; /* recursive: a state_txn_begin holds it until its end */
    int depth;            /* open transaction levels (under lock) */
};

/* ------------------------------------------------------------ migrations */

typedef struct migration {
    int version;
    const char *sql;
} migration;

/* Append only: a released migration is never edited. */
static const migration migrations[] = {
    {1, "CREATE TABLE jobs ("
        " id INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " key TEXT NOT NULL UNIQUE,"
        " status TEXT NOT NULL CHECK (status IN"
        "  ('queued','running','done','failed','escalated')),"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " input TEXT, result TEXT, error TEXT,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
        "CREATE INDEX jobs_status ON jobs(status, id);"
        "CREATE TABLE job_events ("
        " id INTEGER PRIMARY KEY,"
        " job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        " from_status TEXT, to_status TEXT NOT NULL, detail TEXT,"
        " at INTEGER NOT NULL);"
        "CREATE INDEX job_events_job ON job_events(job_id, id);"
        "CREATE TABLE tickets ("
        " id INTEGER PRIMARY KEY,"
        " fingerprint TEXT NOT NULL,"
        " backend TEXT NOT NULL,"
        " external_id TEXT, url TEXT,"
        " status TEXT NOT NULL CHECK (status IN ('open','closed')),"
        " title TEXT, severity TEXT,"
        " count INTEGER NOT NULL DEFAULT 0,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
        "CREATE TABLE ticket_fingerprints ("
        " ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,"
        " fingerprint TEXT NOT NULL,"
        " PRIMARY KEY (ticket_id, fingerprint));"
        "CREATE INDEX ticket_fingerprints_fp ON ticket_fingerprints(fingerprint);"
        "CREATE TABLE deploys ("
        " id INTEGER PRIMARY KEY,"
        " fingerprint TEXT,"
        " job_id INTEGER REFERENCES jobs(id),"
        " kind TEXT NOT NULL, status TEXT NOT NULL,"
        " \"commit\" TEXT, detail TEXT,"
        " at INTEGER NOT NULL);"
        "CREATE TABLE budget ("
        " id INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL, amount REAL NOT NULL, at INTEGER NOT NULL);"
        "CREATE INDEX budget_name_at ON budget(name, at);"
        "CREATE TABLE breaker ("
        " name TEXT PRIMARY KEY, state TEXT NOT NULL,"
        " failures INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL);"
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);"},
    {2, "CREATE TABLE fixes ("
        " id INTEGER PRIMARY KEY,"
        " fingerprint TEXT NOT NULL,"
        " ticket_id INTEGER,"
        " status TEXT NOT NULL,"
        " severity TEXT,"
        " branch TEXT, base_commit TEXT, fix_commit TEXT,"
        " deploy_commit TEXT, revert_commit TEXT,"
        " confidence REAL,"
        " input TEXT, validation TEXT, delivery TEXT, decision TEXT, detail TEXT,"
        " approval_expires_at INTEGER, decided_by TEXT,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
        "CREATE INDEX fixes_status ON fixes(status, id);"
        /* a fingerprint has at most one fix in flight */
        "CREATE UNIQUE INDEX fixes_active ON fixes(fingerprint) WHERE status IN"
        " ('fixing','awaiting_approval','approved','deploying','verifying');"
        "CREATE TABLE recurrences ("
        " id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL,"
        " count INTEGER NOT NULL, at INTEGER NOT NULL);"
        "CREATE INDEX recurrences_fp_at ON recurrences(fingerprint, at);"
        "CREATE TABLE ticket_notes ("
        " id INTEGER PRIMARY KEY, ticket_id INTEGER NOT NULL REFERENCES tickets(id),"
        " body TEXT NOT NULL, at INTEGER NOT NULL);"
        "ALTER TABLE deploys ADD COLUMN fix_id INTEGER;"
        "ALTER TABLE deploys ADD COLUMN auto INTEGER NOT NULL DEFAULT 0;"
        "CREATE INDEX deploys_kind_at ON deploys(kind, at);"},
    /* what a fix's attempts carry over: the files the agent was given, and
     * a rebase waiting to be validated again */
    {3, "ALTER TABLE fixes ADD COLUMN attempt TEXT;"},
    /* the effects of jobs, each under an idempotency key, committed with
     * the step that makes it; audit: the records still to append */
    {4, "CREATE TABLE effects ("
        " key TEXT PRIMARY KEY,"
        " job_id INTEGER REFERENCES jobs(id) ON DELETE CASCADE,"
        " status TEXT NOT NULL CHECK (status IN ('intent','done')),"
        " result TEXT, audit TEXT,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
        "CREATE INDEX effects_job ON effects(job_id);"
        "CREATE INDEX effects_unaudited ON effects(updated_at) WHERE audit IS NOT NULL;"},
};

#define MIGRATION_COUNT (sizeof(migrations) / sizeof(migrations[0]))
#define SCHEMA_LATEST (migrations[MIGRATION_COUNT - 1].version)

/* ------------------------------------------------------------ helpers */

static void set_err(char *err, size_t errlen, const char *what, const char *why)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", what, why);
}

static int db_exec(state_db *db, const char *sql)
{
    return sqlite3_exec(db->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* Transactions, under db->lock: BEGIN IMMEDIATE at the outer level, a
 * savepoint inside a transaction the thread already holds (state_txn_begin),
 * so the writes of several calls commit or roll back together. */
static int tx_begin(state_db *db)
{
    if (db_exec(db, db->depth == 0 ? "BEGIN IMMEDIATE" : "SAVEPOINT nested") != 0)
        return -1;
    db->depth++;
    return 0;
}

static void tx_rollback(state_db *db)
{
    if (db->depth <= 0)
        return;
    db->depth--;
    if (db->depth == 0) {
        db_exec(db, "ROLLBACK");
    } else {
        db_exec(db, "ROLLBACK TO nested");
        db_exec(db, "RELEASE nested");
    }
}

/* 0 committed (or released); -1 rolled back. */
static int tx_commit(state_db *db)
{
    if (db->depth <= 0)
        return -1;
    if (db_exec(db, db->depth == 1 ? "COMMIT" : "RELEASE nested") == 0) {
        db->depth--;
        return 0;
    }
    tx_rollback(db);
    return -1;
}

/* Ends a transaction: commits when ok is 0, else rolls back; 0 or -1. */
static int tx_end(state_db *db, int ok)
{
    if (ok == 0)
        return tx_commit(db);
    tx_rollback(db);
    return -1;
}

int state_txn_begin(state_db *db)
{
    pthread_mutex_lock(&db->lock);
    if (tx_begin(db) != 0) {
        pthread_mutex_unlock(&db->lock);
        return -1;
    }
    return 0;
}

int state_txn_commit(state_db *db)
{
    int rc = tx_commit(db);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

void state_txn_rollback(state_db *db)
{
    tx_rollback(db);
    pthread_mutex_unlock(&db->lock);
}

static sqlite3_stmt *db_prepare(state_db *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

static int bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (s == NULL)
        return sqlite3_bind_null(st, idx) == SQLITE_OK ? 0 : -1;
    return sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -1;
}

/* Binds a JSON value as its compact text (NULL binds SQL NULL). */
static int bind_json(sqlite3_stmt *st, int idx, json_t *v)
{
    if (v == NULL)
        return sqlite3_bind_null(st, idx) == SQLITE_OK ? 0 : -1;
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        return -1;
    int rc = strlen(text) > STATE_TEXT_MAX ? -1 : bind_text(st, idx, text);
    free(text);
    return rc;
}

int state_job_status_valid(const char *s)
{
    static const char *const all[] = {"queued", "running", "done", "failed", "escalated"};
    if (s == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (strcmp(s, all[i]) == 0)
            return 1;
    return 0;
}

/* The transitions a job may take (docs/state.md). */
static int allowed_transition(const char *from, const char *to)
{
    static const char *const pairs[][2] = {
        {"queued", "running"},    {"queued", "failed"},    {"queued", "escalated"},
        {"running", "done"},      {"running", "failed"},   {"running", "queued"},
        {"running", "escalated"}, {"failed", "queued"},    {"failed", "running"},
        {"failed", "escalated"},  {"escalated", "queued"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        if (strcmp(from, pairs[i][0]) == 0 && strcmp(to, pairs[i][1]) == 0)
            return 1;
    return 0;
}

static int is_json_column(const char *name)
{
    static const char *const json_columns[] = {"input",    "result",   "detail",  "validation",
                                               "delivery", "decision", "attempt", "audit"};
    for (size_t i = 0; i < sizeof(json_columns) / sizeof(json_columns[0]); i++)
        if (strcmp(name, json_columns[i]) == 0)
            return 1;
    return 0;
}

static json_t *column_json(sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        return json_integer((json_int_t)sqlite3_column_int64(st, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(st, i));
    case SQLITE_TEXT: {
        const char *text = (const char *)sqlite3_column_text(st, i);
        size_t len = (size_t)sqlite3_column_bytes(st, i);
        if (is_json_column(sqlite3_column_name(st, i))) {
            json_t *v = json_loadb(text, len, JSON_DECODE_ANY, NULL);
            if (v != NULL)
                return v;
        }
        json_t *s = json_stringn(text, len);
        return s != NULL ? s : json_null();
    }
    default:
        return json_null();
    }
}

/* The current row as an object keyed by column name. */
static json_t *row_json(sqlite3_stmt *st)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return NULL;
    int n = sqlite3_column_count(st);
    for (int i = 0; i < n; i++)
        json_object_set_new(obj, sqlite3_column_name(st, i), column_json(st, i));
    return obj;
}

/* All rows of a prepared, bound statement as an array; finalizes it. */
static json_t *rows_json(sqlite3_stmt *st)
{
    json_t *arr = json_array();
    int rc;
    while (arr != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, row_json(st));
    if (arr != NULL && rc != SQLITE_DONE) {
        json_decref(arr);
        arr = NULL;
    }
    sqlite3_finalize(st);
    return arr;
}

static int clamp_limit(int limit)
{
    return limit <= 0 || limit > STATE_LIST_MAX ? STATE_LIST_MAX : limit;
}

/* ------------------------------------------------------------ open */

static int mkdir_p(const char *dir, char *err, size_t errlen)
{
    char path[STATE_PATH_MAX];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof(path)) {
        set_err(err, errlen, "state_dir", "empty or too long path");
        return -1;
    }
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            set_err(err, errlen, path, strerror(errno));
            return -1;
        }
        path[i] = saved;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        set_err(err, errlen, dir, "not a directory");
        return -1;
    }
    return 0;
}

static int query_int(state_db *db, const char *sql, long long *out)
{
    sqlite3_stmt *st = db_prepare(db, sql);
    int rc = -1;
    if (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

static int set_wal(state_db *db)
{
    sqlite3_stmt *st = db_prepare(db, "PRAGMA journal_mode=WAL");
    int rc = -1;
    if (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        rc = mode != NULL && strcmp(mode, "wal") == 0 ? 0 : -1;
    }
    sqlite3_finalize(st);
    return rc;
}

static int apply_migration(state_db *db, const migration *m, char *err, size_t errlen)
{
    long long cur = 0;
    char num[32];
    snprintf(num, sizeof(num), "migration %d", m->version);
    if (db_exec(db, "BEGIN IMMEDIATE") != 0) {
        set_err(err, errlen, num, sqlite3_errmsg(db->db));
        return -1;
    }
    /* Another process may have applied it since we looked. */
    if (query_int(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &cur) != 0)
        goto fail;
    if (cur >= m->version)
        return db_exec(db, "COMMIT");
    if (db_exec(db, m->sql) != 0)
        goto fail;
    sqlite3_stmt *st =
        db_prepare(db, "INSERT INTO schema_migrations(version, applied_at) VALUES (?1, ?2)");
    if (st == NULL)
        goto fail;
    sqlite3_bind_int(st, 1, m->version);
    sqlite3_bind_int64(st, 2, port_now());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE || db_exec(db, "COMMIT") != 0)
        goto fail;
    return 0;
fail:
    set_err(err, errlen, num, sqlite3_errmsg(db->db));
    db_exec(db, "ROLLBACK");
    return -1;
}

static int migrate(state_db *db, char *err, size_t errlen)
{
    long long cur = 0;
    if (db_exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)") != 0 ||
        query_int(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &cur) != 0) {
        set_err(err, errlen, "schema_migrations", sqlite3_errmsg(db->db));
        return -1;
    }
    if (cur > SCHEMA_LATEST) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen,
                     "database schema version %lld is newer than this program's %d; "
                     "refusing to open it",
                     cur, SCHEMA_LATEST);
        return -1;
    }
    for (size_t i = 0; i < MIGRATION_COUNT; i++)
        if (migrations[i].version > cur && apply_migration(db, &migrations[i], err, errlen) != 0)
            return -1;
    return 0;
}

int state_open(state_db **out, const char *dir, char *err, size_t errlen)
{
    char path[STATE_PATH_MAX];
    state_db *db = NULL;
    *out = NULL;
    if (dir == NULL || mkdir_p(dir, err, errlen) != 0)
        goto fail;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, STATE_DB_FILE) >= sizeof(path)) {
        set_err(err, errlen, "state_dir", "path too long");
        goto fail;
    }
    db = calloc(1, sizeof(*db));
    if (db == NULL) {
        set_err(err, errlen, "state", "out of memory");
        goto fail;
    }
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&db->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (sqlite3_open_v2(path, &db->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        set_err(err, errlen, path, db->db ? sqlite3_errmsg(db->db) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(db->db, STATE_BUSY_MS);
    if (set_wal(db) != 0 || db_exec(db, "PRAGMA synchronous=NORMAL") != 0 ||
        db_exec(db, "PRAGMA foreign_keys=ON") != 0) {
        set_err(err, errlen, path, "cannot set WAL mode, synchronous or foreign keys");
        goto fail;
    }
    if (migrate(db, err, errlen) != 0)
        goto fail;
    /* private whatever the umask (the state directory may be searchable by
     * the sandbox's user, docs/security.md); SQLite gives the -wal and -shm
     * files the database's mode */
    for (int i = 0; i < 3; i++) {
        char p[STATE_PATH_MAX + 8];
        snprintf(p, sizeof(p), "%s%s", path, i == 0 ? "" : i == 1 ? "-wal" : "-shm");
        if (chmod(p, 0600) != 0 && errno != ENOENT) {
            set_err(err, errlen, p, "cannot make it private (mode 0600)");
            goto fail;
        }
    }
    *out = db;
    return 0;
fail:
    state_close(db);
    return -1;
}

void state_close(state_db *db)
{
    if (db == NULL)
        return;
    sqlite3_close(db->db);
    pthread_mutex_destroy(&db->lock);
    free(db);
}

int state_schema_version(state_db *db)
{
    long long v = -1;
    pthread_mutex_lock(&db->lock);
    if (query_int(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &v) != 0)
        v = -1;
    pthread_mutex_unlock(&db->lock);
    return (int)v;
}

/* ------------------------------------------------------------ jobs */

static int insert_event(state_db *db, int64_t job_id, const char *from, const char *to,
                        json_t *detail, int64_t now)
{
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO job_events(job_id, from_status, to_status,"
                                      " detail, at) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (st == NULL)
        return -1;
    int rc = -1;
    if (sqlite3_bind_int64(st, 1, job_id) == SQLITE_OK && bind_text(st, 2, from) == 0 &&
        bind_text(st, 3, to) == 0 && bind_json(st, 4, detail) == 0 &&
        sqlite3_bind_int64(st, 5, now) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    return rc;
}

static int job_insert(state_db *db, const char *kind, const char *key, json_t *input, int *created)
{
    int64_t now = port_now();
    sqlite3_stmt *st =
        db_prepare(db, "INSERT INTO jobs(kind, key, status, attempts, input, created_at,"
                       " updated_at) VALUES (?1, ?2, 'queued', 0, ?3, ?4, ?4)"
                       " ON CONFLICT(key) DO NOTHING");
    if (st == NULL)
        return -1;
    int rc = -1;
    if (bind_text(st, 1, kind) == 0 && bind_text(st, 2, key) == 0 && bind_json(st, 3, input) == 0 &&
        sqlite3_bind_int64(st, 4, now) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    if (rc != 0)
        return -1;
    *created = sqlite3_changes(db->db) > 0;
    if (*created)
        return insert_event(db, sqlite3_last_insert_rowid(db->db), NULL, "queued", NULL, now);
    return 0;
}

static int job_lookup(state_db *db, const char *key, int64_t *job_id, char *status,
                      size_t status_len)
{
    sqlite3_stmt *st = db_prepare(db, "SELECT id, status FROM jobs WHERE key = ?1");
    int rc = -1;
    if (st != NULL && bind_text(st, 1, key) == 0 && sqlite3_step(st) == SQLITE_ROW) {
        *job_id = sqlite3_column_int64(st, 0);
        const char *s = (const char *)sqlite3_column_text(st, 1);
        if (status != NULL && status_len > 0)
            snprintf(status, status_len, "%s", s != NULL ? s : "");
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int state_job_begin(state_db *db, const char *kind, const char *key, json_t *input, int64_t *job_id,
                    int *existed, char *status, size_t status_len)
{
    if (kind == NULL || key == NULL || key[0] == '\0' || strlen(key) > STATE_KEY_MAX ||
        strlen(kind) > 64)
        return -1;
    int created = 0;
    int rc = -1;
    pthread_mutex_lock(&db->lock);
    if (tx_begin(db) != 0)
        goto done;
    if (tx_end(db, job_insert(db, kind, key, input, &created) != 0 ||
                           job_lookup(db, key, job_id, status, status_len) != 0
                       ? -1
                       : 0) != 0)
        goto done;
    if (existed != NULL)
        *existed = !created;
    rc = 0;
done:
    pthread_mutex_unlock(&db->lock);
    return rc;
}

/* Inside a transaction: the CAS update. 0 moved, 1 not in `from`, -1 error. */
static int job_cas(state_db *db, int64_t job_id, const char *from, const char *to, json_t *result,
                   const char *error_text, int64_t now)
{
    sqlite3_stmt *st =
        db_prepare(db, "UPDATE jobs SET status = ?1, updated_at = ?2,"
                       " attempts = attempts + (CASE WHEN ?1 = 'running' THEN 1 ELSE 0 END),"
                       " result = COALESCE(?3, result), error = COALESCE(?4, error)"
                       " WHERE id = ?5 AND status = ?6");
    if (st == NULL)
        return -1;
    int rc = -1;
    if (error_text != NULL && strlen(error_text) > STATE_TEXT_MAX)
        error_text = "(error text too long)";
    if (bind_text(st, 1, to) == 0 && sqlite3_bind_int64(st, 2, now) == SQLITE_OK &&
        bind_json(st, 3, result) == 0 && bind_text(st, 4, error_text) == 0 &&
        sqlite3_bind_int64(st, 5, job_id) == SQLITE_OK && bind_text(st, 6, from) == 0 &&
        sqlite3_step(st) == SQLITE_DONE)
        rc = sqlite3_changes(db->db) > 0 ? 0 : 1;
    sqlite3_finalize(st);
    return rc;
}

static int job_exists(state_db *db, int64_t job_id)
{
    sqlite3_stmt *st = db_prepare(db, "SELECT 1 FROM jobs WHERE id = ?1");
    int found = 0;
    if (st != NULL && sqlite3_bind_int64(st, 1, job_id) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        found = 1;
    sqlite3_finalize(st);
    return found;
}

int state_job_transition(state_db *db, int64_t job_id, const char *from, const char *to,
                         json_t *detail, json_t *result, const char *error_text)
{
    if (!state_job_status_valid(from) || !state_job_status_valid(to) ||
        !allowed_transition(from, to))
        return -1;
    int64_t now = port_now();
    int rc = -1;
    pthread_mutex_lock(&db->lock);
    if (tx_begin(db) != 0)
        goto done;
    rc = job_cas(db, job_id, from, to, result, error_text, now);
    if (rc == 1 && !job_exists(db, job_id))
        rc = -1;
    if (rc == 0 && insert_event(db, job_id, from, to, detail, now) != 0)
        rc = -1;
    if (rc == 0)
        rc = tx_commit(db);
    else
        tx_rollback(db);
done:
    pthread_mutex_unlock(&db->lock);
    return rc;
}

#define JOB_COLUMNS "id, kind, key, status, attempts, input, result, error, created_at, updated_at"

static json_t *job_get_locked(state_db *db, int64_t job_id)
{
    sqlite3_stmt *st = db_prepare(db, "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1");
    json_t *job = NULL;
    if (st != NULL && sqlite3_bind_int64(st, 1, job_id) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        job = row_json(st);
    sqlite3_finalize(st);
    if (job == NULL)
        return NULL;
    st = db_prepare(db, "SELECT from_status AS \"from\", to_status AS \"to\", detail, at"
                        " FROM job_events WHERE job_id = ?1 ORDER BY id");
    json_t *events = NULL;
    if (st != NULL && sqlite3_bind_int64(st, 1, job_id) == SQLITE_OK)
        events = rows_json(st);
    else
        sqlite3_finalize(st);
    if (events == NULL) {
        json_decref(job);
        return NULL;
    }
    json_object_set_new(job, "events", events);
    return job;
}

json_t *state_job_get(state_db *db, int64_t job_id)
{
    pthread_mutex_lock(&db->lock);
    json_t *job = job_get_locked(db, job_id);
    pthread_mutex_unlock(&db->lock);
    return job;
}

json_t *state_jobs_list(state_db *db, const char *status, int limit)
{
    if (status != NULL && !state_job_status_valid(status))
        return json_array();
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT " JOB_COLUMNS " FROM jobs"
                                      " WHERE ?1 IS NULL OR status = ?1 ORDER BY id DESC LIMIT ?2");
    json_t *arr = NULL;
    if (st != NULL && bind_text(st, 1, status) == 0 &&
        sqlite3_bind_int(st, 2, clamp_limit(limit)) == SQLITE_OK)
        arr = rows_json(st);
    else
        sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return arr;
}

/* Inside a transaction: ids and attempts of the running jobs. */
static json_t *running_jobs(state_db *db)
{
    sqlite3_stmt *st =
        db_prepare(db, "SELECT id, attempts FROM jobs WHERE status = 'running' ORDER BY id");
    return st != NULL ? rows_json(st) : NULL;
}

static int recover_one(state_db *db, json_t *row, int max_attempts, int64_t now, json_t *moved)
{
    int64_t id = (int64_t)json_integer_value(json_object_get(row, "id"));
    long long attempts = (long long)json_integer_value(json_object_get(row, "attempts"));
    const char *to = attempts < max_attempts ? "queued" : "escalated";
    json_t *detail = json_pack("{s:s, s:I, s:i}", "reason",
                               "interrupted: the port stopped while"
                               " the job was running",
                               "attempts", (json_int_t)attempts, "max_attempts", max_attempts);
    int rc = job_cas(db, id, "running", to, NULL, NULL, now);
    if (rc == 0)
        rc = insert_event(db, id, "running", to, detail, now);
    json_decref(detail);
    if (rc != 0)
        return -1;
    json_t *job = job_get_locked(db, id);
    if (job == NULL)
        return -1;
    json_array_append_new(moved, job);
    return 0;
}

json_t *state_jobs_recover(state_db *db, int max_attempts)
{
    int64_t now = port_now();
    json_t *moved = json_array();
    json_t *rows = NULL;
    if (moved == NULL)
        return NULL;
    pthread_mutex_lock(&db->lock);
    if (tx_begin(db) != 0)
        goto fail;
    if ((rows = running_jobs(db)) == NULL)
        goto rollback;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        if (recover_one(db, row, max_attempts, now, moved) != 0)
            goto rollback;
    }
    if (tx_commit(db) != 0)
        goto fail;
    json_decref(rows);
    pthread_mutex_unlock(&db->lock);
    return moved;
rollback:
    tx_rollback(db);
fail:
    pthread_mutex_unlock(&db->lock);
    json_decref(rows);
    json_decref(moved);
    return NULL;
}

/* ------------------------------------------------------------ tickets */

#define TICKET_COLUMNS                                                                             \
    "t.id, t.fingerprint, t.backend, t.external_id, t.url, t.status, t.title, t.severity,"         \
    " t.count, t.created_at, t.updated_at"

/* Adds "fingerprints": [...] to a ticket row. */
static int ticket_add_fingerprints(state_db *db, json_t *ticket)
{
    int64_t id = (int64_t)json_integer_value(json_object_get(ticket, "id"));
    sqlite3_stmt *st = db_prepare(
        db, "SELECT fingerprint FROM ticket_fingerprints WHERE ticket_id = ?1 ORDER BY rowid");
    if (st == NULL || sqlite3_bind_int64(st, 1, id) != SQLITE_OK) {
        sqlite3_finalize(st);
        return -1;
    }
    json_t *rows = rows_json(st);
    json_t *fps = json_array();
    size_t i;
    json_t *row;
    if (rows == NULL || fps == NULL) {
        json_decref(rows);
        json_decref(fps);
        return -1;
    }
    json_array_foreach(rows, i, row) json_array_append(fps, json_object_get(row, "fingerprint"));
    json_decref(rows);
    json_object_set_new(ticket, "fingerprints", fps);
    return 0;
}

/* Runs a ticket query with one optional text and one int parameter. */
static json_t *ticket_query(state_db *db, const char *sql, const char *text, int64_t num)
{
    sqlite3_stmt *st = db_prepare(db, sql);
    if (st == NULL || bind_text(st, 1, text) != 0 || sqlite3_bind_int64(st, 2, num) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    json_t *rows = rows_json(st);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        if (ticket_add_fingerprints(db, row) != 0) {
            json_decref(rows);
            return NULL;
        }
    }
    return rows;
}

static json_t *first_or_null(json_t *rows)
{
    json_t *t = json_array_size(rows) > 0 ? json_incref(json_array_get(rows, 0)) : NULL;
    json_decref(rows);
    return t;
}

json_t *state_ticket_find_open(state_db *db, const char *fingerprint)
{
    if (fingerprint == NULL)
        return NULL;
    pthread_mutex_lock(&db->lock);
    json_t *rows =
        ticket_query(db,
                     "SELECT " TICKET_COLUMNS " FROM tickets t JOIN ticket_fingerprints f"
                     " ON f.ticket_id = t.id WHERE f.fingerprint = ?1"
                     " AND t.status = 'open' AND ?2 = ?2 ORDER BY t.id LIMIT 1",
                     fingerprint, 0);
    pthread_mutex_unlock(&db->lock);
    return first_or_null(rows);
}

json_t *state_ticket_get(state_db *db, int64_t id)
{
    pthread_mutex_lock(&db->lock);
    json_t *rows = ticket_query(db,
                                "SELECT " TICKET_COLUMNS " FROM tickets t"
                                " WHERE ?1 IS NULL AND t.id = ?2",
                                NULL, id);
    pthread_mutex_unlock(&db->lock);
    return first_or_null(rows);
}

json_t *state_tickets_list(state_db *db, const char *status, int limit)
{
    pthread_mutex_lock(&db->lock);
    json_t *rows = ticket_query(db,
                                "SELECT " TICKET_COLUMNS " FROM tickets t"
                                " WHERE ?1 IS NULL OR t.status = ?1 ORDER BY t.id DESC LIMIT ?2",
                                status, clamp_limit(limit));
    pthread_mutex_unlock(&db->lock);
    return rows;
}

static int insert_ticket_fingerprint(state_db *db, int64_t ticket_id, const char *fp)
{
    sqlite3_stmt *st = db_prepare(db, "INSERT OR IGNORE INTO ticket_fingerprints(ticket_id,"
                                      " fingerprint) VALUES (?1, ?2)");
    int rc = -1;
    if (st != NULL && sqlite3_bind_int64(st, 1, ticket_id) == SQLITE_OK &&
        bind_text(st, 2, fp) == 0 && sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    return rc;
}

static int valid_fingerprints(json_t *fingerprints)
{
    size_t i;
    json_t *fp;
    if (!json_is_array(fingerprints) || json_array_size(fingerprints) == 0)
        return 0;
    json_array_foreach(fingerprints, i, fp)
    {
        if (!json_is_string(fp) || json_string_length(fp) == 0 ||
            json_string_length(fp) > STATE_KEY_MAX)
            return 0;
    }
    return 1;
}

static int ticket_insert_locked(state_db *db, json_t *fingerprints, const char *backend,
                                const char *external_id, const char *url, const char *title,
                                const char *severity, int64_t count, int64_t *id)
{
    int64_t now = port_now();
    sqlite3_stmt *st =
        db_prepare(db, "INSERT INTO tickets(fingerprint, backend, external_id, url, status, title,"
                       " severity, count, created_at, updated_at)"
                       " VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?8, ?8)");
    int rc = -1;
    if (st != NULL && bind_text(st, 1, json_string_value(json_array_get(fingerprints, 0))) == 0 &&
        bind_text(st, 2, backend) == 0 && bind_text(st, 3, external_id) == 0 &&
        bind_text(st, 4, url) == 0 && bind_text(st, 5, title) == 0 &&
        bind_text(st, 6, severity) == 0 && sqlite3_bind_int64(st, 7, count) == SQLITE_OK &&
        sqlite3_bind_int64(st, 8, now) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    if (rc != 0)
        return -1;
    *id = sqlite3_last_insert_rowid(db->db);
    size_t i;
    json_t *fp;
    json_array_foreach(fingerprints, i, fp)
    {
        if (insert_ticket_fingerprint(db, *id, json_string_value(fp)) != 0)
            return -1;
    }
    return 0;
}

int state_ticket_insert(state_db *db, json_t *fingerprints, const char *backend,
                        const char *external_id, const char *url, const char *title,
                        const char *severity, int64_t count, int64_t *id)
{
    if (!valid_fingerprints(fingerprints) || backend == NULL || id == NULL)
        return -1;
    int rc = -1;
    pthread_mutex_lock(&db->lock);
    if (tx_begin(db) != 0)
        goto done;
    rc = tx_end(db, ticket_insert_locked(db, fingerprints, backend, external_id, url, title,
                                         severity, count, id));
done:
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int state_ticket_add_fingerprints(state_db *db, int64_t id, json_t *fingerprints)
{
    if (!valid_fingerprints(fingerprints))
        return -1;
    int rc = -1;
    pthread_mutex_lock(&db->lock);
    if (tx_begin(db) != 0)
        goto done;
    size_t i;
    json_t *fp;
    rc = 0;
    json_array_foreach(fingerprints, i, fp)
    {
        if (rc == 0 && insert_ticket_fingerprint(db, id, json_string_value(fp)) != 0)
            rc = -1;
    }
    rc = tx_end(db, rc);
done:
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int state_ticket_set_status(state_db *db, int64_t id, const char *status)
{
    if (status == NULL || (strcmp(status, "open") != 0 && strcmp(status, "closed") != 0))
        return -1;
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st =
        db_prepare(db, "UPDATE tickets SET status = ?1, updated_at = ?2 WHERE id = ?3");
    int rc = -1;
    if (st != NULL && bind_text(st, 1, status) == 0 &&
        sqlite3_bind_int64(st, 2, port_now()) == SQLITE_OK &&
        sqlite3_bind_int64(st, 3, id) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE &&
        sqlite3_changes(db->db) == 1)
        rc = 0;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int state_ticket_add_count(state_db *db, int64_t id, int64_t delta, const char *status,
                           int64_t *total)
{
    if (status != NULL && strcmp(status, "open") != 0 && strcmp(status, "closed") != 0)
        return -1;
    pthread_mutex_lock(&db->lock);
    /* one statement: the new count is computed where it is stored */
    sqlite3_stmt *st = db_prepare(db, "UPDATE tickets SET count = count + ?1,"
                                      " status = COALESCE(?2, status), updated_at = ?3"
                                      " WHERE id = ?4 RETURNING count");
    int rc = -1;
    if (st != NULL && sqlite3_bind_int64(st, 1, delta) == SQLITE_OK &&
        bind_text(st, 2, status) == 0 && sqlite3_bind_int64(st, 3, port_now()) == SQLITE_OK &&
        sqlite3_bind_int64(st, 4, id) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        if (total != NULL)
            *total = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

/* ------------------------------------------------------------ budget, kv */

int state_budget_add(state_db *db, const char *name, double amount)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > STATE_KEY_MAX)
        return -1;
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO budget(name, amount, at) VALUES (?1, ?2, ?3)");
    int rc = -1;
    if (st != NULL && bind_text(st, 1, name) == 0 &&
        sqlite3_bind_double(st, 2, amount) == SQLITE_OK &&
        sqlite3_bind_int64(st, 3, port_now()) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

double state_budget_sum(state_db *db, const char *name, int64_t window_s)
{
    if (name == NULL)
        return -1.0;
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT COALESCE(SUM(amount), 0.0) FROM budget"
                                      " WHERE name = ?1 AND at >= ?2");
    double sum = -1.0;
    if (st != NULL && bind_text(st, 1, name) == 0 &&
        sqlite3_bind_int64(st, 2, port_now() - window_s) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        sum = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return sum;
}

int state_budget_reserve(state_db *db, state_budget_check *checks, size_t n, const char *name,
                         double amount, size_t *over)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > STATE_KEY_MAX)
        return -1;
    pthread_mutex_lock(&db->lock);
    /* the sums and the record in one transaction: another process cannot
     * spend the same room between them */
    int began = tx_begin(db) == 0;
    int rc = began ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        checks[i].sum = 0;
        if (!checks[i].limited)
            continue;
        checks[i].sum = state_budget_sum(db, checks[i].name, checks[i].window_s);
        if (checks[i].sum < 0)
            rc = -1;
        else if (checks[i].sum + checks[i].next > checks[i].limit) {
            if (over != NULL)
                *over = i;
            rc = 1;
        }
    }
    if (rc == 0 && state_budget_add(db, name, amount) != 0)
        rc = -1;
    if (rc == 0)
        rc = tx_commit(db);
    else if (began)
        tx_rollback(db);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int state_kv_set(state_db *db, const char *key, const char *value)
{
    if (key == NULL || value == NULL || strlen(key) > STATE_KEY_MAX ||
        strlen(value) > STATE_TEXT_MAX)
        return -1;
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO kv(key, value) VALUES (?1, ?2)"
                                      " ON CONFLICT(key) DO UPDATE SET value = excluded.value");
    int rc = -1;
    if (st != NULL && bind_text(st, 1, key) == 0 && bind_text(st, 2, value) == 0 &&
        sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int state_kv_raise(state_db *db, const char *key, int64_t value)
{
    if (key == NULL || strlen(key) > STATE_KEY_MAX)
        return -1;
    pthread_mutex_lock(&db->lock);
    /* one statement: a smaller value written later never wins */
    sqlite3_stmt *st =
        db_prepare(db, "INSERT INTO kv(key, value) VALUES (?1, ?2)"
                       " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
                       " WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)");
    char text[32];
    snprintf(text, sizeof(text), "%lld", (long long)value);
    int rc = -1;
    if (st != NULL && bind_text(st, 1, key) == 0 && bind_text(st, 2, text) == 0 &&
        sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int state_kv_get(state_db *db, const char *key, char *buf, size_t buflen)
{
    if (key == NULL || buf == NULL || buflen == 0)
        return -1;
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT value FROM kv WHERE key = ?1");
    int rc = -1;
    if (st != NULL && bind_text(st, 1, key) == 0) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE) {
            rc = 1;
        } else if (step == SQLITE_ROW) {
            size_t len = (size_t)sqlite3_column_bytes(st, 0);
            const unsigned char *v = sqlite3_column_text(st, 0);
            if (v != NULL && len < buflen) {
                memcpy(buf, v, len + 1);
                rc = 0;
            }
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

/* ------------------------------------------------------------ effects */

static int bind_job(sqlite3_stmt *st, int idx, int64_t job_id)
{
    return (job_id > 0 ? sqlite3_bind_int64(st, idx, job_id) : sqlite3_bind_null(st, idx)) ==
                   SQLITE_OK
               ? 0
               : -1;
}

static int valid_effect_key(const char *key)
{
    return key != NULL && key[0] != '\0' && strlen(key) <= STATE_KEY_MAX;
}

json_t *state_effect_get(state_db *db, const char *key)
{
    if (!valid_effect_key(key))
        return NULL;
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT key, job_id, status, result, audit, created_at,"
                                      " updated_at FROM effects WHERE key = ?1");
    json_t *rows = NULL;
    if (st != NULL && bind_text(st, 1, key) == 0)
        rows = rows_json(st);
    else
        sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return first_or_null(rows);
}

int state_effect_intent(state_db *db, const char *key, int64_t job_id, char *status,
                        size_t status_len)
{
    if (!valid_effect_key(key))
        return -1;
    int64_t now = port_now();
    int rc = -1;
    pthread_mutex_lock(&db->lock);
    if (tx_begin(db) != 0)
        goto done;
    sqlite3_stmt *st =
        db_prepare(db, "INSERT INTO effects(key, job_id, status, created_at, updated_at)"
                       " VALUES (?1, ?2, 'intent', ?3, ?3) ON CONFLICT(key) DO NOTHING");
    if (st != NULL && bind_text(st, 1, key) == 0 && bind_job(st, 2, job_id) == 0 &&
        sqlite3_bind_int64(st, 3, now) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE)
        rc = sqlite3_changes(db->db) == 1 ? 0 : 1;
    sqlite3_finalize(st);
    if (rc >= 0) {
        st = db_prepare(db, "SELECT status FROM effects WHERE key = ?1");
        if (st != NULL && bind_text(st, 1, key) == 0 && sqlite3_step(st) == SQLITE_ROW) {
            if (status != NULL && status_len > 0)
                snprintf(status, status_len, "%s", (const char *)sqlite3_column_text(st, 0));
        } else {
            rc = -1;
        }
        sqlite3_finalize(st);
    }
    if (tx_end(db, rc < 0 ? -1 : 0) != 0)
        rc = -1;
done:
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int state_effect_done(state_db *db, const char *key, int64_t job_id, json_t *result, json_t *audit)
{
    if (!valid_effect_key(key))
        return -1;
    if (audit != NULL && (!json_is_array(audit) || json_array_size(audit) == 0))
        audit = NULL;
    pthread_mutex_lock(&db->lock);
    /* only an intent (or nothing) becomes done: a done effect keeps its
     * first result, and the caller learns it happened before */
    sqlite3_stmt *st =
        db_prepare(db, "INSERT INTO effects(key, job_id, status, result, audit, created_at,"
                       " updated_at) VALUES (?1, ?2, 'done', ?3, ?4, ?5, ?5)"
                       " ON CONFLICT(key) DO UPDATE SET status = 'done', result = excluded.result,"
                       " audit = excluded.audit, updated_at = excluded.updated_at"
                       " WHERE status = 'intent'");
    int rc = -1;
    if (st != NULL && bind_text(st, 1, key) == 0 && bind_job(st, 2, job_id) == 0 &&
        bind_json(st, 3, result) == 0 && bind_json(st, 4, audit) == 0 &&
        sqlite3_bind_int64(st, 5, port_now()) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE)
        rc = sqlite3_changes(db->db) == 1 ? 0 : 1;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

json_t *state_effects_unaudited(state_db *db, int limit)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT key, job_id, audit FROM effects"
                                      " WHERE audit IS NOT NULL ORDER BY updated_at, rowid"
                                      " LIMIT ?1");
    json_t *rows = NULL;
    if (st != NULL && sqlite3_bind_int(st, 1, clamp_limit(limit)) == SQLITE_OK)
        rows = rows_json(st);
    else
        sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rows;
}

int state_effect_audited(state_db *db, const char *key)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "UPDATE effects SET audit = NULL WHERE key = ?1");
    int rc = st != NULL && bind_text(st, 1, key) == 0 && sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

/* ------------------------------------------------------------ fixes */

/* Columns state_fix_set may write, and whether each holds JSON. */
static const struct {
    const char *name;
    int json;
} fix_columns[] = {
    {"status", 0},        {"severity", 0},
    {"branch", 0},        {"base_commit", 0},
    {"fix_commit", 0},    {"deploy_commit", 0},
    {"revert_commit", 0}, {"confidence", 0},
    {"input", 1},         {"validation", 1},
    {"delivery", 1},      {"decision", 1},
    {"detail", 1},        {"approval_expires_at", 0},
    {"decided_by", 0},    {"ticket_id", 0},
    {"attempt", 1},
};

static int fix_column(const char *name)
{
    for (size_t i = 0; i < sizeof(fix_columns) / sizeof(fix_columns[0]); i++)
        if (strcmp(name, fix_columns[i].name) == 0)
            return (int)i;
    return -1;
}

int state_fix_insert(state_db *db, const char *fingerprint, int64_t ticket_id, const char *severity,
                     json_t *input, int64_t *id)
{
    if (fingerprint == NULL || fingerprint[0] == '\0' || strlen(fingerprint) > STATE_KEY_MAX)
        return -1;
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(
        db, "INSERT INTO fixes(fingerprint, ticket_id, status, severity, input, created_at,"
            " updated_at) VALUES (?1, ?2, 'fixing', ?3, ?4, ?5, ?5)");
    int rc = -1;
    if (st != NULL && bind_text(st, 1, fingerprint) == 0 &&
        (ticket_id > 0 ? sqlite3_bind_int64(st, 2, ticket_id) : sqlite3_bind_null(st, 2)) ==
            SQLITE_OK &&
        bind_text(st, 3, severity) == 0 && bind_json(st, 4, input) == 0 &&
        sqlite3_bind_int64(st, 5, port_now()) == SQLITE_OK) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE) {
            *id = (int64_t)sqlite3_last_insert_rowid(db->db);
            rc = 0;
        } else if (sqlite3_extended_errcode(db->db) == SQLITE_CONSTRAINT_UNIQUE) {
            rc = 1;
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int state_fix_set(state_db *db, int64_t id, const char *expect_status, json_t *fields)
{
    if (!json_is_object(fields) || json_object_size(fields) == 0 ||
        json_object_size(fields) > sizeof(fix_columns) / sizeof(fix_columns[0]))
        return -1;
    sh_buf sql;
    sh_buf_init(&sql);
    sh_buf_append_str(&sql, "UPDATE fixes SET updated_at = ?1");
    const char *key;
    json_t *value;
    int n = 1;
    json_object_foreach(fields, key, value)
    {
        if (fix_column(key) < 0) {
            sh_buf_free(&sql);
            return -1;
        }
        sh_buf_appendf(&sql, ", %s = ?%d", key, ++n);
    }
    sh_buf_appendf(&sql, " WHERE id = ?%d", n + 1);
    if (expect_status != NULL)
        sh_buf_appendf(&sql, " AND status = ?%d", n + 2);
    sh_buf_append_byte(&sql, '\0');
    if (sql.oom) {
        sh_buf_free(&sql);
        return -1;
    }
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, sql.data);
    int rc = st != NULL && sqlite3_bind_int64(st, 1, port_now()) == SQLITE_OK ? 0 : -1;
    n = 1;
    json_object_foreach(fields, key, value)
    {
        if (rc != 0)
            break;
        ++n;
        if (fix_columns[fix_column(key)].json)
            rc = bind_json(st, n, json_is_null(value) ? NULL : value);
        else if (json_is_integer(value))
            rc = sqlite3_bind_int64(st, n, json_integer_value(value)) == SQLITE_OK ? 0 : -1;
        else if (json_is_real(value))
            rc = sqlite3_bind_double(st, n, json_real_value(value)) == SQLITE_OK ? 0 : -1;
        else if (json_is_string(value))
            rc = bind_text(st, n, json_string_value(value));
        else
            rc = sqlite3_bind_null(st, n) == SQLITE_OK ? 0 : -1;
    }
    if (rc == 0 && sqlite3_bind_int64(st, n + 1, id) != SQLITE_OK)
        rc = -1;
    if (rc == 0 && expect_status != NULL && bind_text(st, n + 2, expect_status) != 0)
        rc = -1;
    if (rc == 0) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE)
            rc = sqlite3_changes(db->db) == 1 ? 0 : 1;
        else
            rc = sqlite3_extended_errcode(db->db) == SQLITE_CONSTRAINT_UNIQUE ? 2 : -1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    sh_buf_free(&sql);
    return rc;
}

int state_fix_patch(state_db *db, int64_t id, const char *column, json_t *patch)
{
    int c = column != NULL ? fix_column(column) : -1;
    if (c < 0 || !fix_columns[c].json || !json_is_object(patch))
        return -1;
    char sql[160];
    /* one statement: the merge reads the column where it writes it */
    snprintf(sql, sizeof(sql),
             "UPDATE fixes SET %s = json_patch(COALESCE(%s, '{}'), ?1), updated_at = ?2"
             " WHERE id = ?3",
             fix_columns[c].name, fix_columns[c].name);
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, sql);
    int rc = st != NULL && bind_json(st, 1, patch) == 0 &&
                     sqlite3_bind_int64(st, 2, port_now()) == SQLITE_OK &&
                     sqlite3_bind_int64(st, 3, id) == SQLITE_OK &&
                     sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(db->db) == 1
                 ? 0
                 : -1;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

json_t *state_fix_get(state_db *db, int64_t id)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT * FROM fixes WHERE id = ?1");
    json_t *rows = NULL;
    if (st != NULL && sqlite3_bind_int64(st, 1, id) == SQLITE_OK)
        rows = rows_json(st);
    else
        sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return first_or_null(rows);
}

json_t *state_fixes_list(state_db *db, const char *status, const char *fingerprint, int limit)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st =
        db_prepare(db, "SELECT * FROM fixes WHERE (?1 IS NULL OR status = ?1)"
                       " AND (?2 IS NULL OR fingerprint = ?2) ORDER BY id DESC LIMIT ?3");
    json_t *rows = NULL;
    if (st != NULL && bind_text(st, 1, status) == 0 && bind_text(st, 2, fingerprint) == 0 &&
        sqlite3_bind_int(st, 3, clamp_limit(limit)) == SQLITE_OK)
        rows = rows_json(st);
    else
        sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rows;
}

/* ------------------------------------------------------------ deploys */

int state_deploy_add(state_db *db, int64_t fix_id, const char *fingerprint, const char *kind,
                     const char *status, const char *commit, int automatic, json_t *detail)
{
    if (kind == NULL || status == NULL) {
        json_decref(detail);
        return -1;
    }
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO deploys(fix_id, fingerprint, kind, status,"
                                      " \"commit\", auto, detail, at)"
                                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    int rc = -1;
    if (st != NULL && sqlite3_bind_int64(st, 1, fix_id) == SQLITE_OK &&
        bind_text(st, 2, fingerprint) == 0 && bind_text(st, 3, kind) == 0 &&
        bind_text(st, 4, status) == 0 && bind_text(st, 5, commit) == 0 &&
        sqlite3_bind_int(st, 6, automatic ? 1 : 0) == SQLITE_OK && bind_json(st, 7, detail) == 0 &&
        sqlite3_bind_int64(st, 8, port_now()) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    json_decref(detail);
    return rc;
}

long long state_deploy_count(state_db *db, const char *kind, int automatic_only, int64_t window_s)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT COUNT(*) FROM deploys WHERE kind = ?1"
                                      " AND status = 'started' AND (?2 = 0 OR auto = 1)"
                                      " AND at > ?3");
    long long count = -1;
    if (st != NULL && bind_text(st, 1, kind) == 0 &&
        sqlite3_bind_int(st, 2, automatic_only) == SQLITE_OK &&
        sqlite3_bind_int64(st, 3, port_now() - window_s) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        count = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return count;
}

json_t *state_deploys_list(state_db *db, int64_t fix_id, int limit)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT * FROM deploys WHERE (?1 <= 0 OR fix_id = ?1)"
                                      " ORDER BY id DESC LIMIT ?2");
    json_t *rows = NULL;
    if (st != NULL && sqlite3_bind_int64(st, 1, fix_id) == SQLITE_OK &&
        sqlite3_bind_int(st, 2, clamp_limit(limit)) == SQLITE_OK)
        rows = rows_json(st);
    else
        sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rows;
}

/* ------------------------------------------------------------ reports */

json_t *state_select(state_db *db, const char *sql, const int64_t *args, size_t nargs)
{
    /* read-only: a statement that would write is refused */
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, sql);
    json_t *rows = NULL;
    int ok = st != NULL && sqlite3_stmt_readonly(st);
    for (size_t i = 0; ok && i < nargs; i++)
        ok = sqlite3_bind_int64(st, (int)i + 1, args[i]) == SQLITE_OK;
    if (ok)
        rows = rows_json(st);
    else
        sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rows;
}

/* ------------------------------------------------------------ breaker */

int state_breaker_get(state_db *db, const char *name, int *open, long long *failures)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT state, failures FROM breaker WHERE name = ?1");
    int rc = -1;
    *open = 0;
    *failures = 0;
    if (st != NULL && bind_text(st, 1, name) == 0) {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            const char *state = (const char *)sqlite3_column_text(st, 0);
            *open = state != NULL && strcmp(state, "open") == 0;
            *failures = sqlite3_column_int64(st, 1);
            rc = 0;
        } else if (step == SQLITE_DONE) {
            rc = 0;
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int state_breaker_record(state_db *db, const char *name, int failed, long long threshold, int *open)
{
    pthread_mutex_lock(&db->lock);
    /* consecutive failures; a success closes nothing (only a human resets
     * an open breaker) but clears the count of a closed one */
    sqlite3_stmt *st = db_prepare(
        db,
        "INSERT INTO breaker(name, state, failures, updated_at) VALUES (?1,"
        " CASE WHEN ?2 AND 1 >= ?3 THEN 'open' ELSE 'closed' END, ?2, ?4)"
        " ON CONFLICT(name) DO UPDATE SET"
        " failures = CASE WHEN ?2 THEN failures + 1 WHEN state = 'open' THEN failures ELSE 0 END,"
        " state = CASE WHEN state = 'open' THEN 'open'"
        "  WHEN ?2 AND failures + 1 >= ?3 THEN 'open' ELSE 'closed' END,"
        " updated_at = ?4");
    int rc = -1;
    if (st != NULL && bind_text(st, 1, name) == 0 &&
        sqlite3_bind_int(st, 2, failed ? 1 : 0) == SQLITE_OK &&
        sqlite3_bind_int64(st, 3, threshold) == SQLITE_OK &&
        sqlite3_bind_int64(st, 4, port_now()) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    long long failures = 0;
    if (rc == 0 && open != NULL)
        rc = state_breaker_get(db, name, open, &failures);
    return rc;
}

int state_breaker_reset(state_db *db, const char *name)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO breaker(name, state, failures, updated_at)"
                                      " VALUES (?1, 'closed', 0, ?2) ON CONFLICT(name) DO UPDATE"
                                      " SET state = 'closed', failures = 0, updated_at = ?2");
    int rc = st != NULL && bind_text(st, 1, name) == 0 &&
                     sqlite3_bind_int64(st, 2, port_now()) == SQLITE_OK &&
                     sqlite3_step(st) == SQLITE_DONE
                 ? 0
                 : -1;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

/* ------------------------------------------------------------ recurrences */

int state_recurrence_add(state_db *db, const char *fingerprint, int64_t count)
{
    if (fingerprint == NULL || fingerprint[0] == '\0' || strlen(fingerprint) > STATE_KEY_MAX)
        return -1;
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO recurrences(fingerprint, count, at)"
                                      " VALUES (?1, ?2, ?3)");
    int rc = st != NULL && bind_text(st, 1, fingerprint) == 0 &&
                     sqlite3_bind_int64(st, 2, count) == SQLITE_OK &&
                     sqlite3_bind_int64(st, 3, port_now()) == SQLITE_OK &&
                     sqlite3_step(st) == SQLITE_DONE
                 ? 0
                 : -1;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

long long state_recurrence_count(state_db *db, const char *fingerprint, int64_t since)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = db_prepare(db, "SELECT COALESCE(SUM(count), 0) FROM recurrences"
                                      " WHERE fingerprint = ?1 AND at >= ?2");
    long long n = -1;
    if (st != NULL && bind_text(st, 1, fingerprint) == 0 &&
        sqlite3_bind_int64(st, 2, since) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return n;
}

/* ------------------------------------------------------------ ticket notes */

int state_ticket_note(state_db *db, int64_t ticket_id, const char *body)
{
    if (body == NULL || strlen(body) > STATE_TEXT_MAX)
        return -1;
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st =
        db_prepare(db, "INSERT INTO ticket_notes(ticket_id, body, at) VALUES (?1, ?2, ?3)");
    int rc = st != NULL && sqlite3_bind_int64(st, 1, ticket_id) == SQLITE_OK &&
                     bind_text(st, 2, body) == 0 &&
                     sqlite3_bind_int64(st, 3, port_now()) == SQLITE_OK &&
                     sqlite3_step(st) == SQLITE_DONE
                 ? 0
                 : -1;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

json_t *state_ticket_notes(state_db *db, int64_t ticket_id)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st =
        db_prepare(db, "SELECT id, body, at FROM ticket_notes WHERE ticket_id = ?1 ORDER BY id");
    json_t *rows = NULL;
    if (st != NULL && sqlite3_bind_int64(st, 1, ticket_id) == SQLITE_OK)
        rows = rows_json(st);
    else
        sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rows;
}
