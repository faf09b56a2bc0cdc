/*
 * Durable state: SQLite (WAL) in state_dir/self_heal.db with versioned
 * migrations (table schema_migrations). Every function returns 0 on
 * success, a negative value on error (err filled when given), and is safe
 * from several threads (one connection per state_db guarded by a mutex,
 * busy_timeout set).
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
 */
#ifndef SELF_HEAL_PORT_STATE_H
#define SELF_HEAL_PORT_STATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

typedef struct state_db state_db;

/* Opens (creating dir and file) and migrates. */
int state_open(state_db **out, const char *dir, char *err, size_t errlen);
void state_close(state_db *db);
int state_schema_version(state_db *db);

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
/* status NULL keeps it, count < 0 keeps it; -1 when there is no such ticket. */
int state_ticket_update(state_db *db, int64_t id, const char *status, int64_t count);
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

/* ---- small persistent values */
int state_kv_set(state_db *db, const char *key, const char *value);
/* Copies into buf; returns 1 when absent. */
int state_kv_get(state_db *db, const char *key, char *buf, size_t buflen);

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

/* Seconds since the epoch (overridable for tests with SELF_HEAL_NOW). */
int64_t state_now(void);

/* Opens ctx->state and ctx->audit from config "state_dir" when they are not
 * open yet (under ctx->lock); for commands run before the pipeline opened
 * them and for tests. Returns 0, or -1 with err code "no_state" when no
 * state_dir is configured or it cannot be opened. On 0 a pinned caller's
 * pin holds them from then on (ctx.h). It does not recover jobs:
 * state_jobs_recover belongs to the process start. */
int state_ctx_ensure(port_ctx *ctx, cmd_error *err);

#endif
