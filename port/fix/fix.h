/*
 * The fix loop (docs/fix-loop.md): from a ticket to a validated change
 * delivered as a pull request or a dry-run patch, then the gate.
 *
 *   fix        {"fingerprint", "severity", "group": {...}, "ticket_id"?,
 *               "root_cause"?, "wait"?: bool}
 *              starts a fix (one per fingerprint in flight; at most
 *              fix.max_concurrent run at once, the others queue); answers
 *              {"fix_id", "status"} at once, or the finished fix with wait.
 *   fixes      {"status"?, "fingerprint"?, "limit"?}  -> {"fixes": [...]}
 *   fix_get    {"id"}                                 -> the fix + its deploys
 *   approve    {"id" | "token", "by"?}                a human's approval
 *   skip       {"id" | "token", "by"?}                a human's refusal
 *   recurrence {"fingerprint", "count"}               the collector saw it again
 *   kill_switch {"on"?: bool, "by"?}                  sets (or reads) the switch
 *   pause      {"on"?: bool, "by"?}                   pauses all automation (or reads it)
 *   breaker_reset {"by"?}                             closes the deploy breaker
 *   gate_status {}                                    switches, breaker, counts
 *
 * Each fix is a row of the fixes table (state.h) and a job (kind "fix");
 * a port killed mid-fix resumes it on restart (fix_resume) from what the
 * row records: an attempt that had not delivered starts again from a
 * fresh checkout; a delivered one goes on to the gate; a pull request is
 * looked up by branch before one is opened, so none is opened twice.
 */
#ifndef SELF_HEAL_PORT_FIX_H
#define SELF_HEAL_PORT_FIX_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"
#include "fix_config.h"

/* The deploy branch moved past the fix's base (deploy.c): the fix, its
 * commit replayed on the new tip, is validated again (a job), then the
 * gate decides anew. */
void fix_revalidate(port_ctx *ctx, int64_t id);

/* Called by the pipeline for each ticket it created: starts a fix when the
 * loop is enabled (never waits). issue: the analysis issue; members: its
 * groups; ticket: ticket_upsert's result. */
void fix_on_ticket(port_ctx *ctx, json_t *issue, json_t *members, json_t *ticket);

/* After configure (not in one-shot mode, and only when the fix loop is
 * configured): starts the scheduler thread that expires approvals and
 * starts deploys of approved fixes, once. */
void fix_start_scheduler(port_ctx *ctx);

/* A recovered job of kind "fix" or "deploy" (status queued or escalated). */
void fix_resume(port_ctx *ctx, json_t *job);

#endif
