/*
 * Recover first (docs/recovery.md): recovery actions a service declares
 * (recover.actions: restart a process, a systemd unit or a container,
 * clear a cache, scale up; each an argv vector, never a shell) run when a
 * watch fires or a group of a recover.severities severity is escalated,
 * before a code fix (recover.mode "before") or instead of one ("instead").
 * Attempts per fingerprint are kept in the state database (kv
 * "recover.<fingerprint>"): the n-th within an hour waits
 * recover.backoff_s * 2^(n-1) after the previous one, and at most
 * recover.max_per_hour run. After the actions, the same recurrence check
 * as a deploy's verification ("verify" event, recurrences reported by the
 * collector) watches the fingerprint for recover.verify_window_s: no
 * recurrence is "recovered". Each step has an effect key under the
 * escalation's job key, so a restarted job never runs an action twice.
 */
#ifndef SELF_HEAL_PORT_RECOVER_H
#define SELF_HEAL_PORT_RECOVER_H

#include <jansson.h>

#include "cmd.h"

/* For the groups of the escalation job_key: starts the recoveries due
 * (their actions and verification run on a thread of their own). Returns
 * the fingerprints a recovery handles instead of a code fix (an object
 * used as a set, new reference; empty when none). */
json_t *recover_on_escalation(port_ctx *ctx, const char *job_key, json_t *groups);

/* At start: carries on the runs a previous process left unfinished (kv
 * "recover.pending"); an action it had begun is not run again. */
void recover_resume(port_ctx *ctx);

#endif
