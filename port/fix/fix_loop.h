/*
 * What the files of the fix loop share among themselves: the attempt and
 * the gate (fix.c), the slots (fix_slots.c), the scheduler
 * (fix_schedule.c) and the commands (fix_cmd.c). Other modules use fix.h.
 */
#ifndef SELF_HEAL_PORT_FIX_LOOP_H
#define SELF_HEAL_PORT_FIX_LOOP_H

#include <jansson.h>
#include <stdint.h>

#include "fix.h"
#include "fix_config.h"
#include "policy.h"
#include "state.h"

/* ---- the attempt and the gate (fix.c) */

/* The gate's facts, gathered now. */
policy_action fix_gate(port_ctx *ctx, const fix_config *cfg, state_db *db, json_t *fix, int passed,
                       int needs_human, double confidence, int slot_busy, json_t **decision);

/* The gate for a delivered fix; sets the status it leads to. The decision
 * is a step: the status, its record and what it tells commit together. */
void fix_decide(port_ctx *ctx, fix_config *cfg, state_db *db, int64_t id);

/* Runs a fix from wherever its row says it is. */
void fix_drive(port_ctx *ctx, int64_t id, int64_t job_id);

/* fix_drive on a thread of its own (in a copy of the caller's pin); -1
 * when too many fixes wait or the thread cannot start. */
int fix_spawn_drive(port_ctx *ctx, int64_t id, int64_t job_id);

/* Records a fix from input scrubbed first: fixes.input and everything the
 * fix loop derives from it are at rest. */
int fix_create(port_ctx *ctx, json_t *input, int64_t *id, int64_t *job_id, cmd_error *err);

/* low 1, medium 2, high 3, critical 4; 0 for anything else. */
int fix_severity_rank(const char *s);

/* The severity the gate decides with: the deterministic triage's, which a
 * model's (or a caller's) may lower and never raise. triage 0 (unknown):
 * the model's word alone counts only when trusted (a caller of the fix
 * command), else "low". */
const char *fix_gate_severity(const char *model, int triage, int trust_model);

/* ---- the slots (fix_slots.c) */

/* Waits for one of max attempt slots (0), or -1 when the port stops. */
int fix_slot_acquire(port_ctx *ctx, int max);
void fix_slot_release(void);

/* 1 when max attempts run or wait already. */
int fix_slots_full(int max);

/* The one deploy slot: taken (1) or free (0). */
void fix_deploy_slot_set(int running);
int fix_deploy_slot_busy(void);

/* What gate_status reports. */
void fix_slots_counts(int *deploy_running, int *fixing, int *waiting);

/* ---- the scheduler (fix_schedule.c) */

/* Starts the scheduler's next round now. */
void fix_sched_wake(void);

#endif
