/*
 * Earned trust (docs/recovery.md, "Earned trust"): the consent level a
 * service has earned, kept in the state database (kv "trust.<service>"),
 * overrides gate.consent once set. With gate.trust.enabled it rises one
 * level (offered or taken, gate.trust.mode) after gate.trust.after fixes a
 * human approved were deployed and verified without a rollback, and drops
 * one level (not below gate.trust.floor) after a rollback, which is also
 * what trips the breaker. The first time a service's errors reach
 * gate.trust.ask_after_errors with no level stored, the operator is asked
 * once which level to grant; the answer (command "consent") is stored.
 * Every change is announced (notification, "consent" event) and audited
 * ("consent_changed"), each under an effect key (port/core/effect.h).
 */
#ifndef SELF_HEAL_PORT_TRUST_H
#define SELF_HEAL_PORT_TRUST_H

#include <jansson.h>
#include <stdint.h>

#include "cmd.h"
#include "policy.h"

/* The level in force: the stored one, else configured (gate.consent). */
policy_consent trust_consent(port_ctx *ctx, policy_consent configured);

/* A fix was deployed and verified; automatic: without a human's approval
 * (those do not earn trust). */
void trust_on_verified(port_ctx *ctx, int64_t fix_id, int automatic);

/* A fix was rolled back (breaker_open: the rollback opened the breaker). */
void trust_on_rollback(port_ctx *ctx, int64_t fix_id, int breaker_open);

/* An escalation (job job_key) saw count errors: counts them once per job
 * and asks the first-consent question when they reach the threshold. */
void trust_on_errors(port_ctx *ctx, const char *job_key, long long count);

/* "consent": {} -> the trust state; {"level", "by"} stores the operator's
 * level. */
const cmd_def *trust_commands(size_t *n);

#endif
