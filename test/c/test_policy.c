/* The gate: each condition on its own withholds an automatic deploy; a
 * failed validation rejects; no target or consent observe means no
 * action; unknown consent levels and empty severity sets grant nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "policy.h"

static policy_input all_good(void)
{
    policy_input in = {
        .consent = POLICY_REPAIR,
        .severity = "high",
        .auto_severities = NULL,
        .validation_passed = 1,
        .needs_human = 0,
        .confidence = 0.9,
        .threshold = 0.8,
        .auto_deploys_last_hour = 0,
        .max_auto_deploys_per_hour = 5,
        .breaker_open = 0,
        .kill_switch = 0,
        .deploy_running = 0,
        .target_ok = 1,
    };
    return in;
}

static int has_reason(json_t *decision, const char *reason)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(decision, "reasons"), i, r)
    {
        if (strcmp(json_string_value(r), reason) == 0)
            return 1;
    }
    return 0;
}

static void test_all_conditions_deploy(void **unused)
{
    (void)unused;
    policy_input in = all_good();
    json_t *d = NULL;
    assert_int_equal(policy_decide(&in, &d), POLICY_DEPLOY);
    assert_string_equal(json_string_value(json_object_get(d, "action")), "deploy");
    assert_int_equal(json_array_size(json_object_get(d, "reasons")), 0);
    json_decref(d);
}

static void test_each_condition_withholds(void **unused)
{
    (void)unused;
    policy_input in;
    json_t *d;
#define EXPECT_APPROVAL(mutation, reason)                                                          \
    in = all_good();                                                                               \
    mutation;                                                                                      \
    d = NULL;                                                                                      \
    assert_int_equal(policy_decide(&in, &d), POLICY_APPROVAL);                                     \
    assert_true(has_reason(d, reason));                                                            \
    json_decref(d)
    EXPECT_APPROVAL(in.severity = "medium", "severity not in auto_deploy_severity");
    EXPECT_APPROVAL(in.needs_human = 1,
                    "the change needs a human (scope, protected path or regression proof)");
    EXPECT_APPROVAL(in.confidence = 0.79, "confidence below the threshold");
    EXPECT_APPROVAL(in.auto_deploys_last_hour = 5, "max_auto_deploys_per_hour reached");
    EXPECT_APPROVAL(in.auto_deploys_last_hour = -1, "max_auto_deploys_per_hour reached");
    EXPECT_APPROVAL(in.breaker_open = 1, "circuit breaker open: a human must reset it");
    EXPECT_APPROVAL(in.kill_switch = 1, "kill switch on");
    EXPECT_APPROVAL(in.deploy_running = 1, "another deploy is running");
    EXPECT_APPROVAL(in.consent = POLICY_DIAGNOSE, "consent is diagnose: a human deploys");
    EXPECT_APPROVAL(in.unconfined = 1, "the agent ran without the sandbox: a human deploys");
#undef EXPECT_APPROVAL
}

static void test_reject_and_none(void **unused)
{
    (void)unused;
    policy_input in = all_good();
    in.validation_passed = 0;
    assert_int_equal(policy_decide(&in, NULL), POLICY_REJECT);
    in = all_good();
    in.target_ok = 0;
    assert_int_equal(policy_decide(&in, NULL), POLICY_NONE);
    in = all_good();
    in.consent = POLICY_OBSERVE;
    assert_int_equal(policy_decide(&in, NULL), POLICY_NONE);
}

static void test_nothing_grants_more_than_asked(void **unused)
{
    (void)unused;
    assert_int_equal(policy_consent_parse("repair"), POLICY_REPAIR);
    assert_int_equal(policy_consent_parse("diagnose"), POLICY_DIAGNOSE);
    assert_int_equal(policy_consent_parse("Repair"), POLICY_OBSERVE);
    assert_int_equal(policy_consent_parse(""), POLICY_OBSERVE);
    assert_int_equal(policy_consent_parse(NULL), POLICY_OBSERVE);
    policy_input in = all_good();
    json_t *none = json_array();
    in.auto_severities = none; /* an empty set allows nothing, not everything */
    assert_int_equal(policy_decide(&in, NULL), POLICY_APPROVAL);
    json_t *some = json_pack("[s]", "critical");
    in.auto_severities = some;
    assert_int_equal(policy_decide(&in, NULL), POLICY_APPROVAL);
    in.severity = "critical";
    assert_int_equal(policy_decide(&in, NULL), POLICY_DEPLOY);
    in.severity = NULL;
    assert_int_equal(policy_decide(&in, NULL), POLICY_APPROVAL);
    json_decref(none);
    json_decref(some);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_conditions_deploy),
        cmocka_unit_test(test_each_condition_withholds),
        cmocka_unit_test(test_reject_and_none),
        cmocka_unit_test(test_nothing_grants_more_than_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
