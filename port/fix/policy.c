/*
 * The gate (policy.h). Automatic deploy needs every one of:
 *   consent repair, severity in the allowed set (an empty set allows none),
 *   validation passed, nothing that needs a human, confidence >= threshold,
 *   fewer than max_auto_deploys_per_hour automatic deploys in the last
 *   hour, breaker closed, kill switch off, no deploy running, a target,
 *   and an agent that ran inside the sandbox.
 * A failed validation rejects; a missing target or consent observe means
 * no action; anything else waits for a human.
 */
#include "policy.h"

#include <string.h>

policy_consent policy_consent_parse(const char *s)
{
    if (s != NULL && strcmp(s, "repair") == 0)
        return POLICY_REPAIR;
    if (s != NULL && strcmp(s, "diagnose") == 0)
        return POLICY_DIAGNOSE;
    return POLICY_OBSERVE;
}

const char *policy_consent_name(policy_consent c)
{
    switch (c) {
    case POLICY_REPAIR:
        return "repair";
    case POLICY_DIAGNOSE:
        return "diagnose";
    default:
        return "observe";
    }
}

const char *policy_action_name(policy_action a)
{
    switch (a) {
    case POLICY_REJECT:
        return "reject";
    case POLICY_APPROVAL:
        return "approval";
    case POLICY_DEPLOY:
        return "deploy";
    default:
        return "none";
    }
}

static int severity_allowed(const char *severity, json_t *allowed)
{
    static const char *const dflt[] = {"critical", "high"};
    if (severity == NULL || severity[0] == '\0')
        return 0;
    if (allowed == NULL) {
        for (size_t i = 0; i < sizeof(dflt) / sizeof(dflt[0]); i++)
            if (strcmp(severity, dflt[i]) == 0)
                return 1;
        return 0;
    }
    size_t i;
    json_t *v;
    json_array_foreach(allowed, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), severity) == 0)
            return 1;
    }
    return 0;
}

/* Records one check; adds `reason` to reasons when it failed. */
static int check(json_t *checks, json_t *reasons, const char *name, int ok, const char *reason)
{
    if (checks != NULL)
        json_object_set_new(checks, name, json_boolean(ok));
    if (!ok && reasons != NULL)
        json_array_append_new(reasons, json_string(reason));
    return ok;
}

policy_action policy_decide(const policy_input *in, json_t **out)
{
    json_t *checks = out != NULL ? json_object() : NULL;
    json_t *reasons = out != NULL ? json_array() : NULL;
    policy_action action;

    int valid =
        check(checks, reasons, "validation", in->validation_passed != 0, "validation failed");
    int target =
        check(checks, reasons, "target", in->target_ok != 0, "no valid deploy target configured");
    int observing = in->consent == POLICY_OBSERVE;
    check(checks, reasons, "consent", in->consent == POLICY_REPAIR,
          observing ? "consent is observe" : "consent is diagnose: a human deploys");
    int ok = 1;
    ok &= check(checks, reasons, "severity", severity_allowed(in->severity, in->auto_severities),
                "severity not in auto_deploy_severity");
    ok &= check(checks, reasons, "scope", in->needs_human == 0,
                "the change needs a human (scope, protected path or regression proof)");
    ok &= check(checks, reasons, "confidence", in->confidence >= in->threshold,
                "confidence below the threshold");
    ok &= check(checks, reasons, "rate_limit",
                in->auto_deploys_last_hour >= 0 &&
                    in->auto_deploys_last_hour < in->max_auto_deploys_per_hour,
                "max_auto_deploys_per_hour reached");
    ok &= check(checks, reasons, "breaker", in->breaker_open == 0,
                "circuit breaker open: a human must reset it");
    ok &= check(checks, reasons, "kill_switch", in->kill_switch == 0, "kill switch on");
    ok &=
        check(checks, reasons, "deploy_slot", in->deploy_running == 0, "another deploy is running");
    ok &= check(checks, reasons, "sandbox", in->unconfined == 0,
                "the agent ran without the sandbox: a human deploys");

    if (!valid)
        action = POLICY_REJECT;
    else if (!target || observing)
        action = POLICY_NONE;
    else if (ok && in->consent == POLICY_REPAIR)
        action = POLICY_DEPLOY;
    else
        action = POLICY_APPROVAL;

    if (out != NULL)
        *out = json_pack("{s:s, s:o, s:o}", "action", policy_action_name(action), "reasons",
                         reasons, "checks", checks);
    return action;
}
