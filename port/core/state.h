/*
 * Durable state: SQLite (WAL) in state_dir/self_heal.db with versioned
 * migrations (table schema_migrations). Functions returning int return 0
 * on success and a negative value on error (err filled when given; some
 * return 1 for "absent" or "already done", as noted), those returning
 * json_t * a new reference or NULL; all are safe from several threads
 * (one connection per state_db guarded by a recursive mutex, busy_timeout
 * set).
 *
 * Tables (see docs/state.md):
 *   jobs(id, kind, key UNIQUE, status, attempts, input, result, error,
 *        created_at, updated_at)        status: queued running done failed escalated
 *   job_events(id, job_id, from_status, to_status, detail, at)
 *   tickets(id, fingerprint, backend, external_id, url, status, title,
 *           severity, count, created_at, updated_at)   status: open closed
 *   ticket_fingerprints(ticket_id, fingerprint)  one ticket covers several
 *   deploys(id, fingerprint, job_id, kind, status, commit, detail, at,
 *           fix_id, auto)                 the deploy and rollback ledger
 *   budget(id, name, amount, at)               spend/calls/tokens records
 *   breaker(name PRIMARY KEY, state, failures, updated_at)
 *   fixes(...)                  one attempt to fix a fingerprint (fix.c)
 *   recurrences(fingerprint, count, at)    reported during verification
 *   ticket_notes(ticket_id, body, at)      comments on local tickets
 *   kv(key PRIMARY KEY, value)                  small settings (telegram offset, ...)
 *   effects(key PRIMARY KEY, job_id, status, result, audit, created_at,
 *           updated_at)        status: intent done; one row per step of a job
 *
 * Read-modify-writes are one statement (count = count + ?) or one
 * transaction; state_txn_begin makes the calls of one thread a single
 * transaction (docs/state.md).
 */
#ifndef SELF_HEAL_PORT_STATE_H
#define SELF_HEAL_PORT_STATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

#define STATE_PATH_MAX 4096
#define STATE_LIST_MAX 1000 /* the most rows a list returns */

typedef struct state_db state_db;

/* Opens (creating dir and file) and migrates. */
int state_open(state_db **out, const char *dir, char *err, size_t errlen);
void state_close(state_db *db);
int state_schema_version(state_db *db);

/* ---- transactions: every state_* call the thread makes between begin and
 * commit (or rollback) is part of one BEGIN IMMEDIATE transaction; other
 * threads wait for its end. Nestable (inner levels are savepoints). Never
 * wait for the network or a child process inside one. commit: 0, or -1
 * when it could not commit (then it is rolled back). */
int state_txn_begin(state_db *db);
int state_txn_commit(state_db *db);
void state_txn_rollback(state_db *db);

/* ---- jobs: idempotent units of work keyed by a caller-chosen key
 * ("analyze:<hash of input>", "ticket:<fingerprint>:<window>").
 * state_job_begin creates the job (status queued) unless the key exists;
 * *job_id is its id either way, *existed 1 when it existed, and `status`
 * (at least 16 bytes) receives its current status. */
int state_job_begin(state_db *db, const char *kind, const char *key, json_t *input, int64_t *job_id,
                    int *existed, char *status, size_t status_len);
/* Compare-and-set: moves the job from `from` to `to` (recording a
 * job_events row with `detail`, may be NULL) only when its status is
 * `from`; returns 1 when it was not (no change), 0 when moved.
 * `result`/`error_text` are stored when non-NULL. attempts++ on "running". */
int state_job_transition(state_db *db, int64_t job_id, const char *from, const char *to,
                         json_t *detail, json_t *result, const char *error_text);
/* The job as an object {id, kind, key, status, attempts, input, result,
 * error, created_at, updated_at, events:[...]} or NULL. */
json_t *state_job_get(state_db *db, int64_t job_id);
/* Jobs in a status (NULL: all), newest first, at most `limit`. */
json_t *state_jobs_list(state_db *db, const char *status, int limit);
/* At start: every job still "running" (the port died in the middle) goes
 * to "queued" when attempts < max_attempts, else to "escalated"; returns
 * the array of jobs so moved (with their new status). */
json_t *state_jobs_recover(state_db *db, int max_attempts);

/* ---- tickets */
/* The open ticket covering `fingerprint` (via ticket_fingerprints) or NULL. */
json_t *state_ticket_find_open(state_db *db, const char *fingerprint);
/* Inserts an open ticket with its fingerprints (array of strings); *id. */
int state_ticket_insert(state_db *db, json_t *fingerprints, const char *backend,
                        const char *external_id, const char *url, const char *title,
                        const char *severity, int64_t count, int64_t *id);
/* "open" or "closed"; -1 when there is no such ticket. */
int state_ticket_set_status(state_db *db, int64_t id, const char *status);
/* count = count + delta in one statement (status NULL keeps it); *total
 * (may be NULL) gets the new count. -1 when there is no such ticket. */
int state_ticket_add_count(state_db *db, int64_t id, int64_t delta, const char *status,
                           int64_t *total);
/* Links more fingerprints (array of strings) to a ticket; known ones are ignored. */
int state_ticket_add_fingerprints(state_db *db, int64_t id, json_t *fingerprints);
json_t *state_ticket_get(state_db *db, int64_t id);
json_t *state_tickets_list(state_db *db, const char *status, int limit);

/* ---- budgets: append a record, sum over a window */
int state_budget_add(state_db *db, const char *name, double amount);
/* Sum of `name` records with at >= now - window_s. */
double state_budget_sum(state_db *db, const char *name, int64_t window_s);
/* (On a database error the sum is -1.0, which no record set can produce
 * when amounts are non-negative.) */
typedef struct state_budget_check {
    const char *name; /* the records summed */
    int64_t window_s;
    int limited;  /* 0: no limit */
    double limit; /* the sum plus next must stay at or under it */
    double next;
    double sum; /* out: the sum found */
} state_budget_check;
/* In one transaction: sums each check's window; when none would pass its
 * limit, appends `amount` under `name` and returns 0; else returns 1 with
 * *over (may be NULL) the index of the first check over. -1 on error. */
int state_budget_reserve(state_db *db, state_budget_check *checks, size_t n, const char *name,
                         double amount, size_t *over);

/* ---- small persistent values */
int state_kv_set(state_db *db, const char *key, const char *value);
/* Copies into buf; returns 1 when absent. */
int state_kv_get(state_db *db, const char *key, char *buf, size_t buflen);
/* Stores the integer value unless the key holds a larger one (one
 * statement: an older value written later never wins). */
int state_kv_raise(state_db *db, const char *key, int64_t value);

/* ---- effects: the steps of jobs that act on the world or on the record
 * (docs/state.md). key: the idempotency key, "<job key>/<step>". */
/* {key, job_id, status, result, audit, created_at, updated_at} or NULL. */
json_t *state_effect_get(state_db *db, const char *key);
/* Records the intent (status "intent") unless the key is known: 0 recorded
 * now, 1 known before; `status` (may be NULL) gets the stored status. */
int state_effect_intent(state_db *db, const char *key, int64_t job_id, char *status,
                        size_t status_len);
/* Marks it done with its result (may be NULL) and the audit records still
 * to append (an array of {"action", "fields"}, may be NULL): 0 done now, 1
 * it was done before (nothing changes), -1 error. Inside a state_txn it
 * commits with the step's own writes. job_id <= 0: none. */
int state_effect_done(state_db *db, const char *key, int64_t job_id, json_t *result, json_t *audit);
/* Done effects whose audit records are not in the audit log yet, oldest
 * first: [{key, job_id, audit}]. */
json_t *state_effects_unaudited(state_db *db, int limit);
/* Their records are in the log: forgets them. */
int state_effect_audited(state_db *db, const char *key);

/* ---- fixes (fix.c): one row per attempt to fix a fingerprint.
 * status: fixing rejected failed escalated awaiting_approval approved
 *         skipped expired deploying verifying deployed rolled_back
 * A fingerprint has at most one fix in fixing, awaiting_approval,
 * approved, deploying or verifying (a unique index). */
/* Inserts a fix in status "fixing": 0 with *id, 1 when the fingerprint
 * already has a fix in flight, -1 on error. ticket_id <= 0: none. */
int state_fix_insert(state_db *db, const char *fingerprint, int64_t ticket_id, const char *severity,
                     json_t *input, int64_t *id);
/* Sets columns (keys of `fields`: status severity branch base_commit
 * fix_commit deploy_commit revert_commit confidence input validation
 * delivery decision detail approval_expires_at decided_by ticket_id) when
 * the fix's status is expect_status (NULL: any). 0 done, 1 status did not
 * match (nothing changed), 2 the change would put a second fix of the
 * fingerprint in flight, -1 error (unknown column included). */
int state_fix_set(state_db *db, int64_t id, const char *expect_status, json_t *fields);
/* Merges the object patch into a JSON column (RFC 7396, SQLite's
 * json_patch) in one statement; 0 or -1. */
int state_fix_patch(state_db *db, int64_t id, const char *column, json_t *patch);
json_t *state_fix_get(state_db *db, int64_t id);
/* Newest first; status and fingerprint NULL mean any. */
json_t *state_fixes_list(state_db *db, const char *status, const char *fingerprint, int limit);

/* ---- deploys ledger: kind deploy | rollback, status started | succeeded
 * | failed; automatic 1 when no human approved it. Steals detail (may be
 * NULL). */
int state_deploy_add(state_db *db, int64_t fix_id, const char *fingerprint, const char *kind,
                     const char *status, const char *commit, int automatic, json_t *detail);
/* Ledger rows of kind with status "started" in the last window_s seconds
 * (automatic ones only when automatic_only); -1 on error. */
long long state_deploy_count(state_db *db, const char *kind, int automatic_only, int64_t window_s);
json_t *state_deploys_list(state_db *db, int64_t fix_id, int limit);
/* The rows of one read-only SELECT (integer parameters ?1..?n) as JSON
 * objects; NULL on an error or a statement that writes. */
json_t *state_select(state_db *db, const char *sql, const int64_t *args, size_t nargs);

/* ---- circuit breakers: consecutive failures; open at threshold, closed
 * again only by state_breaker_reset (a human). */
int state_breaker_get(state_db *db, const char *name, int *open, long long *failures);
int state_breaker_record(state_db *db, const char *name, int failed, long long threshold,
                         int *open);
int state_breaker_reset(state_db *db, const char *name);

/* ---- recurrences of fingerprints reported by the collector */
int state_recurrence_add(state_db *db, const char *fingerprint, int64_t count);
/* Sum of counts reported at or after `since`; -1 on error. */
long long state_recurrence_count(state_db *db, const char *fingerprint, int64_t since);

/* ---- notes on local tickets (the fix loop's comments) */
int state_ticket_note(state_db *db, int64_t ticket_id, const char *body);
json_t *state_ticket_notes(state_db *db, int64_t ticket_id);

/* 1 when s is a job status: queued, running, done, failed, escalated. */
int state_job_status_valid(const char *s);

#endif
