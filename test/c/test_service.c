/* The service registry (port/fix/service.c): a service's configuration merged
 * over the global one, the scope a job runs in (pins), the per-service and
 * global breakers and deploy counts on a real state database, and the
 * refusal to fix a service the registry does not name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "fix.h"
#include "llm.h"
#include "service.h"
#include "state.h"

#define CONFIG                                                                                     \
    "{\"fix\": {\"repo\": \"/srv/global\", \"base\": \"main\","                                    \
    "          \"compile\": {\"argv\": [\"make\"]}},"                                              \
    " \"gate\": {\"consent\": \"diagnose\", \"breaker_threshold\": 3,"                             \
    "           \"max_auto_deploys_per_hour\": 5},"                                                \
    " \"service\": {\"name\": \"global\"},"                                                        \
    " \"services\": {"                                                                             \
    "   \"shop\": {\"fix\": {\"repo\": \"/srv/shop\"},"                                            \
    "            \"gate\": {\"breaker_threshold\": 1, \"max_auto_deploys_per_hour\": 1},"          \
    "            \"descriptor\": \"the shop\", \"owners\": [\"team-shop\"],"                       \
    "            \"aliases\": [\"shop-web\"]},"                                                    \
    "   \"billing\": {\"fix\": {\"repo\": \"/srv/billing\"}, \"deploy\": {\"argv\": [\"d\"]}}}}"

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    if (v == NULL)
        fail_msg("bad JSON in the test: %s", e.text);
    return v;
}

static const char *str_at(json_t *obj, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *v = obj;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k != NULL;
         k = strtok_r(NULL, ".", &save))
        v = json_object_get(v, k);
    return json_string_value(v);
}

static void test_config_merged_over_the_global_one(void **state)
{
    (void)state;
    json_t *config = parse(CONFIG);
    json_t *shop = service_config(config, "shop");
    assert_non_null(shop);
    assert_string_equal(str_at(shop, "fix.repo"), "/srv/shop");
    /* what the service does not set, the global configuration gives */
    assert_string_equal(str_at(shop, "fix.base"), "main");
    assert_non_null(json_object_get(json_object_get(shop, "fix"), "compile"));
    assert_string_equal(str_at(shop, "gate.consent"), "diagnose");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(shop, "gate"), "breaker_threshold")), 1);
    /* the service's own keys: under service, not sections */
    assert_string_equal(str_at(shop, "service.name"), "shop");
    assert_string_equal(str_at(shop, "service.descriptor"), "the shop");
    assert_null(json_object_get(shop, "aliases"));
    assert_null(json_object_get(shop, "descriptor"));
    /* the global limits kept aside */
    json_t *global = json_object_get(json_object_get(shop, "service"), "global");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(global, "gate"), "breaker_threshold")),
        3);
    /* the global configuration is not changed */
    assert_string_equal(str_at(config, "fix.repo"), "/srv/global");
    assert_string_equal(str_at(config, "service.name"), "global");
    json_t *billing = service_config(config, "billing");
    assert_string_equal(str_at(billing, "fix.repo"), "/srv/billing");
    assert_non_null(json_object_get(json_object_get(billing, "deploy"), "argv"));
    /* aliases are resolved by the BEAM: only names are services here */
    assert_null(service_config(config, "shop-web"));
    assert_null(service_config(config, "ghost"));
    assert_null(service_config(config, NULL));
    json_t *none = parse("{\"fix\": {\"repo\": \"/srv/global\"}, \"services\": {}}");
    assert_null(service_config(none, "shop"));
    json_decref(none);
    json_decref(billing);
    json_decref(shop);
    json_decref(config);
}

typedef struct fixture {
    port_ctx ctx;
    char dir[64];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    pthread_mutex_init(&f->ctx.lock, NULL);
    f->ctx.config = parse(CONFIG);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_service_XXXXXX");
    char err[256];
    if (mkdtemp(f->dir) == NULL || state_open(&f->ctx.state, f->dir, err, sizeof(err)) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    state_close(f->ctx.state);
    json_decref(f->ctx.config);
    pthread_mutex_destroy(&f->ctx.lock);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void test_scope_gives_the_service_configuration(void **state)
{
    fixture *f = *state;
    port_ctx *ctx = &f->ctx;
    char buf[64];
    assert_int_equal(service_registry_on(ctx), 1);
    assert_int_equal(service_known(ctx, "shop"), 1);
    assert_int_equal(service_known(ctx, "ghost"), 0);
    assert_int_equal(service_known(ctx, NULL), 0);
    {
        SERVICE_SCOPE(scope, ctx, "shop");
        assert_int_equal(scope.entered, 1);
        assert_string_equal(port_config_string(ctx, "fix.repo", "", buf, sizeof(buf)), "/srv/shop");
        assert_string_equal(port_config_string(ctx, "service.name", "", buf, sizeof(buf)), "shop");
        /* entering the same service again changes nothing */
        SERVICE_SCOPE(inner, ctx, "shop");
        assert_int_equal(inner.entered, 0);
        /* a pin taken inside (a thread started from here) holds it too */
        port_pin copy;
        port_pin_take(&copy, ctx);
        assert_string_equal(str_at(copy.config, "fix.repo"), "/srv/shop");
        port_pin_release(&copy);
    }
    /* left: the global configuration again, no pin left behind */
    assert_string_equal(port_config_string(ctx, "fix.repo", "", buf, sizeof(buf)), "/srv/global");
    assert_null(ctx->pins);
    {
        SERVICE_SCOPE(scope, ctx, "ghost");
        assert_int_equal(scope.entered, 0);
        assert_string_equal(port_config_string(ctx, "fix.repo", "", buf, sizeof(buf)),
                            "/srv/global");
    }
}

static int64_t add_deploy(state_db *db, const char *fp, const char *service)
{
    int64_t id = 0;
    json_t *input = json_pack("{s:{s:s}}", "group", "service", service);
    assert_int_equal(state_fix_insert(db, fp, 0, "high", input, &id), 0);
    json_decref(input);
    assert_int_equal(state_deploy_add(db, id, fp, "deploy", "started", "c0ffee", 1, NULL), 0);
    return id;
}

static policy_input gate_input(port_ctx *ctx, state_db *db)
{
    policy_input in = {
        .auto_deploys_last_hour = state_deploy_count(db, "deploy", 1, 3600),
        .max_auto_deploys_per_hour = port_config_int(ctx, "gate.max_auto_deploys_per_hour", 5),
    };
    service_gate_facts(ctx, db, &in);
    return in;
}

static void test_budgets_and_breakers_per_service_and_global(void **state)
{
    fixture *f = *state;
    port_ctx *ctx = &f->ctx;
    state_db *db = ctx->state;
    add_deploy(db, "fpshop1", "shop");
    {
        /* shop used its one deploy an hour */
        SERVICE_SCOPE(scope, ctx, "shop");
        policy_input in = gate_input(ctx, db);
        assert_int_equal(in.auto_deploys_last_hour, 1);
        assert_int_equal(in.max_auto_deploys_per_hour, 1);
        assert_int_equal(in.breaker_open, 0);
    }
    {
        /* billing is held to the global count and limit */
        SERVICE_SCOPE(scope, ctx, "billing");
        policy_input in = gate_input(ctx, db);
        assert_int_equal(in.auto_deploys_last_hour, 1);
        assert_int_equal(in.max_auto_deploys_per_hour, 5);
    }
    int open = 0;
    long long failures = 0;
    {
        /* one failure opens shop's breaker (threshold 1), not the global one (3) */
        SERVICE_SCOPE(scope, ctx, "shop");
        assert_int_equal(service_breaker_record(ctx, db, 1, 1, &open), 0);
        assert_int_equal(open, 1);
        assert_int_equal(gate_input(ctx, db).breaker_open, 1);
    }
    assert_int_equal(state_breaker_get(db, FIX_BREAKER, &open, &failures), 0);
    assert_int_equal(open, 0);
    assert_int_equal(failures, 1);
    {
        SERVICE_SCOPE(scope, ctx, "billing");
        assert_int_equal(gate_input(ctx, db).breaker_open, 0);
        /* two more failures anywhere open the global one: it stops billing too */
        assert_int_equal(service_breaker_record(ctx, db, 1, 3, &open), 0);
        assert_int_equal(open, 0);
        assert_int_equal(service_breaker_record(ctx, db, 1, 3, &open), 0);
        assert_int_equal(open, 1);
    }
    json_t *status = service_gate_status(ctx, db);
    assert_string_equal(str_at(status, "shop.breaker.state"), "open");
    assert_string_equal(str_at(status, "billing.breaker.state"), "closed");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(status, "shop"),
                                                        "auto_deploys_last_hour")),
                     1);
    json_decref(status);
    /* a human closes shop's alone */
    assert_int_equal(service_breaker_reset(db, "shop"), 0);
    assert_int_equal(state_breaker_get(db, FIX_BREAKER, &open, &failures), 0);
    assert_int_equal(open, 1);
    assert_int_equal(service_breaker_reset(db, NULL), 0);
    assert_int_equal(state_breaker_get(db, FIX_BREAKER, &open, &failures), 0);
    assert_int_equal(open, 0);
}

static void test_unknown_service_not_fixed(void **state)
{
    fixture *f = *state;
    port_ctx *ctx = &f->ctx;
    json_t *ghost = parse("[{\"id\": \"fpghost\", \"service\": \"ghost\"}]");
    json_t *shop = parse("[{\"id\": \"fpshop\", \"service\": \"shop\"}]");
    json_t *none = parse("[{\"id\": \"fpnone\"}]");
    assert_int_equal(service_may_fix(ctx, ghost), 0);
    assert_int_equal(service_may_fix(ctx, none), 0);
    assert_int_equal(service_may_fix(ctx, shop), 1);
    /* without a registry every service is fixed as before */
    json_t *saved = ctx->config;
    ctx->config = parse("{\"fix\": {\"repo\": \"/srv/global\"}}");
    assert_int_equal(service_may_fix(ctx, ghost), 1);
    assert_int_equal(service_registry_on(ctx), 0);
    json_decref(ctx->config);
    ctx->config = saved;
    json_decref(ghost);
    json_decref(shop);
    json_decref(none);
}

/* Reserves one call of the model in the configuration of service (NULL:
 * the global one); why gets the reason when over. */
static int llm_call(port_ctx *ctx, const char *service, char *why, size_t whylen)
{
    SERVICE_SCOPE(scope, ctx, service);
    llm_config cfg;
    char err[160];
    assert_int_equal(llm_config_load(&cfg, ctx, "llm", err, sizeof(err)), 0);
    why[0] = '\0';
    return llm_budget_reserve(ctx, &cfg, 10, why, whylen);
}

static void test_llm_budgets_per_service_and_global(void **state)
{
    fixture *f = *state;
    port_ctx *ctx = &f->ctx;
    json_object_set_new(ctx->config, "state_dir", json_string(f->dir));
    json_object_set_new(ctx->config, "llm",
                        parse("{\"provider\": \"openai\", \"budget\": {\"calls_per_hour\": 3,"
                              " \"price_in_per_mtok\": 1000, \"spend_per_day_usd\": 100}}"));
    json_object_set_new(json_object_get(json_object_get(ctx->config, "services"), "shop"), "llm",
                        parse("{\"budget\": {\"calls_per_hour\": 1}}"));
    llm_budget_reset_memory();
    char why[256];
    /* billing's call does not count against shop's own budget of 1 */
    assert_int_equal(llm_call(ctx, "billing", why, sizeof(why)), 0);
    assert_int_equal(llm_call(ctx, "shop", why, sizeof(why)), 0);
    /* shop's second is over its own budget, and says so */
    assert_int_equal(llm_call(ctx, "shop", why, sizeof(why)), 1);
    assert_non_null(strstr(why, "services.shop.llm.budget.calls_per_hour (1)"));
    /* shop exhausting its budget does not stop billing */
    assert_int_equal(llm_call(ctx, "billing", why, sizeof(why)), 0);
    /* the global budget caps all: 3 calls of both services */
    assert_int_equal(llm_call(ctx, "billing", why, sizeof(why)), 1);
    assert_non_null(strstr(why, "3 call(s) in the last hour reach llm.budget.calls_per_hour (3)"));
    assert_int_equal(llm_call(ctx, NULL, why, sizeof(why)), 1);
    /* a reply's cost counted for the service and globally */
    {
        SERVICE_SCOPE(scope, ctx, "shop");
        llm_config cfg;
        char err[160];
        assert_int_equal(llm_config_load(&cfg, ctx, "llm", err, sizeof(err)), 0);
        llm_reply r;
        memset(&r, 0, sizeof(r));
        r.input_tokens = 1000;
        assert_float_equal(llm_budget_record(ctx, &cfg, &r), 1.0, 1e-9);
    }
    /* in SQLite, not in memory: a restart keeps every count */
    state_close(ctx->state);
    audit_close(ctx->audit);
    ctx->audit = NULL;
    ctx->state = NULL;
    llm_budget_reset_memory();
    char err[256];
    assert_int_equal(state_open(&ctx->state, f->dir, err, sizeof(err)), 0);
    assert_float_equal(state_budget_sum(ctx->state, "llm_calls", 3600), 3, 1e-9);
    assert_float_equal(state_budget_sum(ctx->state, "llm_calls:shop", 3600), 1, 1e-9);
    assert_float_equal(state_budget_sum(ctx->state, "llm_calls:billing", 3600), 2, 1e-9);
    assert_float_equal(state_budget_sum(ctx->state, "llm_cost_usd:shop", 86400), 1.0, 1e-9);
    assert_float_equal(state_budget_sum(ctx->state, "llm_cost_usd", 86400), 1.0, 1e-9);
    assert_int_equal(llm_call(ctx, "shop", why, sizeof(why)), 1);
    audit_close(ctx->audit);
    ctx->audit = NULL;
}

/* An entry holding keys that are not its sections (what SelfHeal.Config
 * refuses at boot, sent to the port some other way) changes nothing but
 * its sections: not the state directory, the audit key, the scrubber, the
 * registry, or the model (of llm only the budget). */
static void test_entry_cannot_move_what_is_not_its_own(void **state)
{
    (void)state;
    json_t *config =
        parse("{\"state_dir\": \"/srv/state\", \"audit\": {\"key_env\": \"AUDIT_KEY\"},"
              " \"scrub\": {\"patterns\": [\"ACME-[0-9]+\"]},"
              " \"llm\": {\"provider\": \"anthropic\", \"budget\": {\"calls_per_hour\": 9}},"
              " \"services\": {\"shop\": {\"state_dir\": \"/tmp/elsewhere\","
              "   \"audit\": {\"key_env\": \"HOME\"}, \"scrub\": {\"patterns\": []},"
              "   \"services\": {\"evil\": {}}, \"service\": {\"name\": \"billing\"},"
              "   \"llm\": {\"provider\": \"ollama\", \"budget\": {\"calls_per_hour\": 2}},"
              "   \"fix\": {\"repo\": \"/srv/shop\"}}}}");
    json_t *shop = service_config(config, "shop");
    assert_non_null(shop);
    assert_string_equal(str_at(shop, "state_dir"), "/srv/state");
    assert_string_equal(str_at(shop, "audit.key_env"), "AUDIT_KEY");
    assert_int_equal(json_array_size(json_object_get(json_object_get(shop, "scrub"), "patterns")),
                     1);
    assert_null(json_object_get(json_object_get(shop, "services"), "evil"));
    assert_string_equal(str_at(shop, "service.name"), "shop");
    assert_string_equal(str_at(shop, "llm.provider"), "anthropic");
    json_t *budget = json_object_get(json_object_get(shop, "llm"), "budget");
    assert_int_equal(json_integer_value(json_object_get(budget, "calls_per_hour")), 2);
    /* its sections still merge */
    assert_string_equal(str_at(shop, "fix.repo"), "/srv/shop");
    json_decref(shop);
    json_decref(config);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_merged_over_the_global_one),
        cmocka_unit_test(test_entry_cannot_move_what_is_not_its_own),
        cmocka_unit_test_setup_teardown(test_scope_gives_the_service_configuration, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_budgets_and_breakers_per_service_and_global, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_service_not_fixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_llm_budgets_per_service_and_global, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
