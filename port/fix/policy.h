/*
 * The gate: whether a validated fix may be deployed without a human. Pure
 * decision over the facts gathered by fix.c (severity, validation,
 * confidence, the rolling count of automatic deploys, the circuit breaker,
 * the kill switch, the consent level, a deploy already running, a usable
 * deploy target), so every rule is testable on its own
 * (test/c/test_policy.c) and documented in docs/fix-loop.md.
 */
#ifndef SELF_HEAL_PORT_POLICY_H
#define SELF_HEAL_PORT_POLICY_H

#include <jansson.h>

/* Consent levels, from least to most SelfHeal may do on its own. */
typedef enum policy_consent {
    POLICY_OBSERVE = 0, /* capture, tickets, notifications; no fix attempts */
    POLICY_DIAGNOSE =
        1,            /* also fixes, validated and delivered; deploys only when a human approves */
    POLICY_REPAIR = 2 /* also automatic deploys when the gate allows */
} policy_consent;

/* "observe", "diagnose", "repair"; anything else (NULL, "", a typo) is
 * observe: an unknown level never grants more. */
policy_consent policy_consent_parse(const char *s);
const char *policy_consent_name(policy_consent c);

typedef struct policy_input {
    policy_consent consent;
    const char *severity;    /* the fix's severity */
    json_t *auto_severities; /* array of strings; NULL: ["critical", "high"]; empty: none */
    int validation_passed;   /* compile, tests, size, a change at all: the hard checks */
    int needs_human;         /* out of scope, protected path, regression not proven */
    double confidence;
    double threshold;
    long long auto_deploys_last_hour; /* < 0: unknown (counts as over the limit) */
    long long max_auto_deploys_per_hour;
    int breaker_open;
    int kill_switch;
    int deploy_running;
    int target_ok;  /* a deploy branch and command are configured and valid */
    int unconfined; /* the agent ran without the sandbox (fix.sandbox.mode "none") */
} policy_input;

typedef enum policy_action {
    POLICY_NONE = 0,     /* nothing to deploy to, or consent observe: keep the delivery only */
    POLICY_REJECT = 1,   /* validation failed: a human reads the report, nothing can deploy */
    POLICY_APPROVAL = 2, /* valid, but a human must approve */
    POLICY_DEPLOY = 3    /* deploy now, automatically */
} policy_action;

const char *policy_action_name(policy_action a);

/* Decides, and returns the decision as {"action", "reasons": [...],
 * "checks": {name: bool}} in *out (new reference, may be NULL when the
 * caller does not want it). Every unmet condition is listed in reasons. */
policy_action policy_decide(const policy_input *in, json_t **out);

#endif
