/*
 * Exactly-once effects of jobs (docs/state.md, "Effects"). Every step of
 * a job that acts on the world or on the record (a ticket created or
 * commented, a count changed, a notification, a fix started, an audit
 * record) has an idempotency key, "<job key>/<step>", kept in the effects
 * table and marked done in the same SQLite transaction as the step's own
 * writes, so a job resumed after kill -9 skips what already happened.
 *
 * The step's audit records are written into that transaction too and
 * reach the audit log right after the commit; a process that dies in
 * between appends them at its next start, unless the log already holds
 * them (each record carries "effect": key).
 *
 * An effect outside the database (an HTTP call) records its intent first:
 * a resumed job that finds an intent without a result looks for the effect
 * where the remote allows it (a marker carrying the key) before acting
 * again, or does not act again (at most once) where it cannot look.
 */
#ifndef SELF_HEAL_PORT_EFFECT_H
#define SELF_HEAL_PORT_EFFECT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

#define EFFECT_KEY_MAX 512

enum {
    EFFECT_ERROR = -1,
    EFFECT_NEW = 0,        /* intent recorded now: act */
    EFFECT_DONE = 1,       /* it happened; its stored result */
    EFFECT_INTERRUPTED = 2 /* an earlier run recorded the intent and died before the result */
};

/* "<job key>/<step>" into out; -1 when it does not fit. */
int effect_key(char *out, size_t len, const char *job_key, const char *step);

/* Before an effect outside the database: records the intent. One of the
 * values above; with EFFECT_DONE, *result (may be NULL) gets the stored
 * result (a new reference or NULL); with EFFECT_INTERRUPTED, *since (may be
 * NULL) the time the intent was recorded. Without a state database every
 * effect is new. */
int effect_begin(port_ctx *ctx, const char *key, int64_t job_id, json_t **result, int64_t *since);

/* The stored result of a done step (a new reference), or NULL when the
 * step has not happened. */
json_t *effect_result(port_ctx *ctx, const char *key);

/* Appends {"action", "fields"} to *audit (created when NULL); steals fields. */
void effect_audit_add(json_t **audit, const char *action, json_t *fields);

/* Marks the step done with its result and audit records (not stolen; may
 * be NULL), then appends the records (effect_flush). Inside a state_txn use
 * state_effect_done, commit, then effect_flush. 0 done now, 1 it was done
 * before (nothing changed, nothing appended), -1 error. */
int effect_done(port_ctx *ctx, const char *key, int64_t job_id, json_t *result, json_t *audit);

/* After the commit: appends the step's pending audit records to the log,
 * each with "effect": key, and forgets them. 0, or -1 when they stay
 * pending (appended at the next start). */
int effect_flush(port_ctx *ctx, const char *key);

/* At start, before jobs resume: the pending records of every step, each
 * appended unless the log already holds it. Returns how many were
 * appended, -1 on error. */
int effect_recover(port_ctx *ctx);

/* Tests only (docs/state.md): when SELF_HEAL_TEST_CRASH_AT is
 * "<step>:<where>" for the step of key (the part after the last '/'), the
 * process leaves with _exit(137) here; with SELF_HEAL_TEST_CRASH_ONCE
 * naming a file, only when it can create that file (once). where:
 * "intent" (recorded, not yet acted), "done" (acted, not yet committed),
 * "commit" (committed, audit records not yet appended), "audit" (appended,
 * not yet forgotten). */
void effect_crash_point(const char *key, const char *where);

#endif
