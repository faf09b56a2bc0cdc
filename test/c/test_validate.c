/* Static checks on a fix: globs, scope, size and protected paths over
 * hand-built diffs, the confidence formula with exact values, and the
 * report's JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "validate.h"

/* ---------------------------------------------------------------- globs */

static void expect_glob(const char *glob, const char *path, int want)
{
    int got = validate_glob_match(glob, path);
    if (got != want)
        fail_msg("glob \"%s\" on \"%s\": %d, expected %d", glob ? glob : "(null)",
                 path ? path : "(null)", got, want);
}

static void test_glob_match(void **state)
{
    (void)state;
    expect_glob("**/migrations/**", "priv/repo/migrations/20240101_add.exs", 1);
    expect_glob("**/migrations/**", "migrations/001.sql", 1);
    expect_glob("**/migrations/**", "lib/migrations.ex", 0);
    expect_glob("**/x", "x", 1); /* a leading ** also matches at the root */
    expect_glob("**/x", "a/b/x", 1);
    expect_glob("**/x", "ax", 0);
    expect_glob("**/x", "x/y", 0);
    expect_glob(".github/**", ".github/workflows/ci.yml", 1);
    expect_glob(".github/**", "lib/.github/x", 0);
    expect_glob(".github/**", "lib/.github.ex", 0);
    expect_glob("**/*secret*", "config/prod.secret.exs", 1);
    expect_glob("**/*secret*", ".secret", 1);          /* '*' matches a leading dot */
    expect_glob("**/*secret*", "lib/secrets/x.ex", 0); /* the directory, not the file */
    expect_glob("**/.env", ".env", 1);
    expect_glob("**/.env", "apps/web/.env", 1);
    expect_glob("**/.env", "apps/web/.envrc", 0);
    expect_glob("**/.env.*", "apps/web/.env.production", 1);
    expect_glob("lib/*.ex", "lib/a.ex", 1);
    expect_glob("lib/*.ex", "lib/sub/a.ex", 0); /* '*' never crosses '/' */
    expect_glob("lib/?.ex", "lib/c.ex", 1);
    expect_glob("lib/[ab].ex", "lib/b.ex", 1);
    expect_glob("lib/[ab].ex", "lib/c.ex", 0);
    expect_glob("a/**/b", "a/b", 1);
    expect_glob("a/**/b", "a/x/y/b", 1);
    expect_glob("a/**/b", "a/x/c", 0);
    expect_glob("a/**", "a", 1);
    expect_glob("**", "any/thing/at/all", 1);
    expect_glob("**/auth/**", "lib/my_app/auth/token.ex", 1);
    expect_glob("**/*auth*.ex", "lib/my_app_web/authentication.ex", 1);
    expect_glob("**/*auth*.ex", "lib/my_app_web/authentication.exs", 0);
    expect_glob("Dockerfile", "Dockerfile", 1);
    expect_glob("Dockerfile", "docker/Dockerfile", 0);
    expect_glob("**/*.pem", "lib/pem.ex", 0);
    expect_glob("./lib/*.ex", "lib//a.ex", 1); /* empty and "." segments are dropped */
    expect_glob(NULL, "x", 0);
    expect_glob("x", NULL, 0);
    expect_glob("**", "", 0);

    /* Too long: no match (not a crash). */
    static char longpath[5000];
    memset(longpath, 'a', sizeof(longpath) - 1);
    expect_glob("**", longpath, 0);

    /* Many "**" against a deep path stays quick. */
    char deep[1200];
    size_t n = 0;
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(deep + n, sizeof(deep) - n, "d/");
    snprintf(deep + n, sizeof(deep) - n, "f");
    clock_t t0 = clock();
    expect_glob("**/**/**/**/**/**/**/**/**/**/z", deep, 0);
    expect_glob("**/**/**/**/**/**/**/**/**/**/f", deep, 1);
    assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 1.0);
}

static int protected_by_default(const char *path)
{
    for (size_t i = 0; validate_default_protected[i] != NULL; i++)
        if (validate_glob_match(validate_default_protected[i], path))
            return 1;
    return 0;
}

static void test_default_protected(void **state)
{
    (void)state;
    const char *yes[] = {"priv/repo/migrations/20240101_add_users.exs",
                         ".github/workflows/ci.yml",
                         ".gitlab-ci.yml",
                         ".circleci/config.yml",
                         "Jenkinsfile",
                         "deploy/prod.yml",
                         "Dockerfile",
                         "services/api/Dockerfile",
                         "lib/my_app/auth/guardian.ex",
                         "lib/my_app_web/plugs/authorize.ex",
                         "certs/server.pem",
                         "certs/server.key",
                         ".env",
                         "apps/web/.env.production",
                         "config/prod.secret.exs",
                         "config/runtime.exs",
                         "mix.lock",
                         "assets/package-lock.json",
                         "infra/main.tf"};
    const char *no[] = {"lib/my_app/user.ex", "test/my_app/user_test.exs",
                        "assets/js/app.js",   "config/dev.exs",
                        "README.md",          "lib/my_app/keys.ex"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!protected_by_default(yes[i]))
            fail_msg("%s is not protected", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (protected_by_default(no[i]))
            fail_msg("%s is protected", no[i]);
}

/* ---------------------------------------------------------------- check */

#define CH(st, p, op, a, r)                                                                        \
    {                                                                                              \
        .path = (char *)(p), .old_path = (char *)(op), .status = (st), .added = (a),               \
        .removed = (r)                                                                             \
    }

static wt_diff make_diff(wt_change *files, size_t n)
{
    wt_diff d;
    memset(&d, 0, sizeof(d));
    d.files = files;
    d.n = n;
    for (size_t i = 0; i < n; i++) {
        d.added += files[i].added;
        d.removed += files[i].removed;
    }
    return d;
}

/* The array as one string "a,b,c" (paths, or "path=glob" for hits). */
static const char *joined(json_t *arr)
{
    static char buf[1024];
    size_t n = 0;
    size_t i;
    json_t *v;
    buf[0] = '\0';
    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(v);
        char hit[300];
        if (json_is_object(v)) {
            snprintf(hit, sizeof(hit), "%s=%s", json_string_value(json_object_get(v, "path")),
                     json_string_value(json_object_get(v, "glob")));
            s = hit;
        }
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", i > 0 ? "," : "", s);
        if (n >= sizeof(buf))
            break;
    }
    return buf;
}

static validate_static check_ok(wt_change *files, size_t n, json_t *scope, json_t *globs,
                                size_t max_lines)
{
    wt_diff d = make_diff(files, n);
    validate_static v;
    assert_int_equal(validate_check(&v, &d, scope, globs, max_lines), 0);
    return v;
}

static void test_check_in_scope(void **state)
{
    (void)state;
    json_t *scope = json_pack("[ss]", "lib/my_app/orders.ex", "lib/my_app/cart.ex");
    wt_change files[] = {CH('M', "lib/my_app/orders.ex", NULL, 3, 1),
                         CH('A', "test/my_app/orders_test.exs", NULL, 12, 0)};
    validate_static v = check_ok(files, 2, scope, NULL, 40);
    assert_int_equal(v.scope_ok, 1);
    assert_int_equal(v.size_ok, 1);
    assert_int_equal(v.protected_ok, 1);
    assert_int_equal(v.has_test_change, 1);
    assert_int_equal(v.empty, 0);
    assert_int_equal(v.changed_lines, 16);
    assert_string_equal(joined(v.out_of_scope), "");
    assert_string_equal(joined(v.test_files), "test/my_app/orders_test.exs");
    assert_string_equal(joined(v.source_files), "lib/my_app/orders.ex");
    validate_static_free(&v);
    assert_null(v.out_of_scope);
    validate_static_free(&v); /* twice is harmless */

    /* Scope given as context_gather's objects works the same. */
    json_t *objs = json_pack("[{ss}]", "path", "lib/my_app/orders.ex");
    v = check_ok(files, 1, objs, NULL, 40);
    assert_int_equal(v.scope_ok, 1);
    assert_int_equal(v.has_test_change, 0);
    validate_static_free(&v);
    json_decref(objs);
    json_decref(scope);
}

static void test_check_out_of_scope(void **state)
{
    (void)state;
    json_t *scope = json_pack("[s]", "lib/my_app/orders.ex");
    wt_change files[] = {
        CH('M', "lib/my_app/orders.ex", NULL, 1, 1), CH('M', "lib/my_app/billing.ex", NULL, 2, 0),
        CH('D', "lib/my_app/old.ex", NULL, 0, 9),
        CH('D', "test/my_app/billing_test.exs", NULL, 0, 20), CH('M', "lib/\xff.ex", NULL, 1, 0)};
    validate_static v = check_ok(files, 5, scope, NULL, 100);
    assert_int_equal(v.scope_ok, 0);
    assert_int_equal(v.protected_ok, 1);
    /* A deleted test is no free action: out of scope, and no test change. */
    assert_int_equal(v.has_test_change, 0);
    assert_string_equal(joined(v.out_of_scope), "lib/my_app/billing.ex,lib/my_app/old.ex,"
                                                "test/my_app/billing_test.exs,lib/?.ex");
    assert_string_equal(joined(v.test_files), "test/my_app/billing_test.exs");
    validate_static_free(&v);

    /* No scope at all: only new and changed tests are in scope. */
    wt_change tests[] = {CH('A', "test/my_app/new_test.exs", NULL, 5, 0),
                         CH('M', "assets/js/cart.test.js", NULL, 2, 2),
                         CH('A', "test/orders_SUITE.erl", NULL, 4, 0),
                         CH('M', "tests/test_orders.py", NULL, 1, 1)};
    v = check_ok(tests, 4, NULL, NULL, 40);
    assert_int_equal(v.scope_ok, 1);
    assert_int_equal(v.has_test_change, 1);
    assert_string_equal(joined(v.source_files), "");
    assert_int_equal(json_array_size(v.test_files), 4);
    validate_static_free(&v);

    /* A file named like a test outside test/ is a source file. */
    wt_change fake[] = {CH('A', "lib/evil_test.exs", NULL, 5, 0)};
    v = check_ok(fake, 1, NULL, NULL, 40);
    assert_int_equal(v.scope_ok, 0);
    assert_int_equal(v.has_test_change, 0);
    assert_string_equal(joined(v.out_of_scope), "lib/evil_test.exs");
    validate_static_free(&v);
    json_decref(scope);
}

static void test_check_renames(void **state)
{
    (void)state;
    json_t *scope = json_pack("[ss]", "lib/my_app/orders.ex", "lib/my_app/cart.ex");
    /* Renamed to an in-scope path, but from one that is not. */
    wt_change r1[] = {CH('R', "lib/my_app/orders.ex", "lib/my_app/legacy.ex", 1, 1)};
    validate_static v = check_ok(r1, 1, scope, NULL, 40);
    assert_int_equal(v.scope_ok, 0);
    assert_string_equal(joined(v.out_of_scope), "lib/my_app/legacy.ex");
    assert_string_equal(joined(v.source_files), "lib/my_app/orders.ex,lib/my_app/legacy.ex");
    validate_static_free(&v);

    /* Both ends in scope. */
    wt_change r2[] = {CH('R', "lib/my_app/cart.ex", "lib/my_app/orders.ex", 0, 0)};
    v = check_ok(r2, 1, scope, NULL, 40);
    assert_int_equal(v.scope_ok, 1);
    validate_static_free(&v);

    /* Moving a test away: the new test path is fine, the old one is not. */
    wt_change r3[] = {CH('R', "test/my_app/b_test.exs", "test/my_app/a_test.exs", 0, 0)};
    v = check_ok(r3, 1, scope, NULL, 40);
    assert_int_equal(v.scope_ok, 0);
    assert_string_equal(joined(v.out_of_scope), "test/my_app/a_test.exs");
    validate_static_free(&v);

    /* Renamed into a protected path. */
    wt_change r4[] = {CH('R', ".github/workflows/x.yml", "lib/my_app/cart.ex", 0, 0)};
    v = check_ok(r4, 1, scope, NULL, 40);
    assert_int_equal(v.protected_ok, 0);
    assert_string_equal(joined(v.protected_hits), ".github/workflows/x.yml=.github/**");
    validate_static_free(&v);
    json_decref(scope);
}

static void test_check_protected(void **state)
{
    (void)state;
    json_t *scope = json_pack("[sss]", "priv/repo/migrations/20240101_add.exs",
                              "lib/secret/vault.ex", "lib/my_app/orders.ex");
    wt_change files[] = {CH('M', "priv/repo/migrations/20240101_add.exs", NULL, 1, 0),
                         CH('M', "lib/secret/vault.ex", NULL, 1, 0),
                         CH('M', "lib/my_app/orders.ex", NULL, 1, 0)};
    /* In scope does not make a protected path acceptable. */
    validate_static v = check_ok(files, 3, scope, NULL, 40);
    assert_int_equal(v.scope_ok, 1);
    assert_int_equal(v.protected_ok, 0);
    assert_string_equal(joined(v.protected_hits),
                        "priv/repo/migrations/20240101_add.exs=**/migrations/**");
    validate_static_free(&v);

    /* The caller's globs replace the defaults. */
    json_t *globs = json_pack("[is]", 3, "lib/secret/**");
    v = check_ok(files, 3, scope, globs, 40);
    assert_int_equal(v.protected_ok, 0);
    assert_string_equal(joined(v.protected_hits), "lib/secret/vault.ex=lib/secret/**");
    validate_static_free(&v);
    json_decref(globs);

    /* An empty list protects nothing. */
    globs = json_array();
    v = check_ok(files, 3, scope, globs, 40);
    assert_int_equal(v.protected_ok, 1);
    validate_static_free(&v);
    json_decref(globs);
    json_decref(scope);
}

static void test_check_size_and_empty(void **state)
{
    (void)state;
    json_t *scope = json_pack("[s]", "lib/a.ex");
    wt_change over[] = {CH('M', "lib/a.ex", NULL, 30, 11)};
    validate_static v = check_ok(over, 1, scope, NULL, 40);
    assert_int_equal(v.size_ok, 0);
    assert_int_equal(v.changed_lines, 41);
    assert_int_equal(v.scope_ok, 1);
    validate_static_free(&v);

    wt_change exact[] = {CH('M', "lib/a.ex", NULL, 30, 10)};
    v = check_ok(exact, 1, scope, NULL, 40);
    assert_int_equal(v.size_ok, 1);
    validate_static_free(&v);
    v = check_ok(over, 1, scope, NULL, 0); /* 0: the default of 40 */
    assert_int_equal(v.size_ok, 0);
    validate_static_free(&v);
    v = check_ok(over, 1, scope, NULL, 41);
    assert_int_equal(v.size_ok, 1);
    validate_static_free(&v);

    v = check_ok(NULL, 0, scope, NULL, 40);
    assert_int_equal(v.empty, 1);
    assert_int_equal(v.scope_ok, 1);
    assert_int_equal(v.size_ok, 1);
    assert_int_equal(v.protected_ok, 1);
    assert_int_equal(v.has_test_change, 0);
    assert_int_equal(v.changed_lines, 0);
    assert_int_equal(json_array_size(v.source_files), 0);
    validate_static_free(&v);

    assert_int_equal(validate_check(&v, NULL, scope, NULL, 40), -1);
    assert_null(v.out_of_scope);
    wt_diff broken = make_diff(NULL, 0);
    broken.n = 2;
    assert_int_equal(validate_check(&v, &broken, scope, NULL, 40), -1);
    assert_int_equal(validate_check(NULL, &broken, scope, NULL, 40), -1);
    json_decref(scope);
}

/* ---------------------------------------------------------------- confidence */

static validate_signals good(void)
{
    validate_signals s = {.compiled = 1,
                          .tests_passed = 1,
                          .regression_proven = 1,
                          .scope_ok = 1,
                          .size_ok = 1,
                          .protected_ok = 1,
                          .changed_lines = 20,
                          .max_lines = 40,
                          .agent_exit_ok = 1};
    return s;
}

static void expect_confidence(validate_signals s, double want)
{
    double got = validate_confidence(&s);
    if (got != want)
        fail_msg("confidence %.17g, expected %.17g", got, want);
}

static void test_confidence(void **state)
{
    (void)state;
    validate_signals s = good();
    expect_confidence(s, 0.95); /* 0.4 + 0.3 + 0.1 + 0.1 + 0.1 * 0.5 */
    s.changed_lines = 10;
    expect_confidence(s, 0.98); /* 0.975, halves up */
    s.changed_lines = 40;
    expect_confidence(s, 0.9);
    s.changed_lines = 100; /* the size term never goes negative */
    expect_confidence(s, 0.9);
    s.changed_lines = 1;
    s.max_lines = 3;
    expect_confidence(s, 0.97); /* 0.9 + 0.0667 */
    s = good();
    s.max_lines = 0; /* 40 */
    expect_confidence(s, 0.95);

    s = good();
    s.regression_proven = -1;
    expect_confidence(s, 0.65);
    s.regression_proven = 0;
    expect_confidence(s, 0.5);
    s = good();
    s.compiled = -1;
    s.tests_passed = -1;
    expect_confidence(s, 0.75);
    s = good();
    s.agent_exit_ok = 0;
    expect_confidence(s, 0.85);
    s.agent_exit_ok = -1;
    expect_confidence(s, 0.95);

    s = good();
    s.scope_ok = 0;
    expect_confidence(s, 0.5);
    s = good();
    s.size_ok = 0;
    expect_confidence(s, 0.5);
    s = good();
    s.protected_ok = 0;
    expect_confidence(s, 0.5);

    s = good();
    s.compiled = 0;
    expect_confidence(s, 0.0);
    s = good();
    s.tests_passed = 0;
    expect_confidence(s, 0.0);
    s = good();
    s.changed_lines = 0;
    expect_confidence(s, 0.0);

    /* Under the cap already: the cap changes nothing. */
    s = good();
    s.regression_proven = 0;
    s.compiled = -1;
    s.tests_passed = -1;
    s.agent_exit_ok = 0;
    s.changed_lines = 40;
    expect_confidence(s, 0.3);
    assert_true(validate_confidence(NULL) == 0.0);
}

/* ---------------------------------------------------------------- report */

static void test_report(void **state)
{
    (void)state;
    json_t *scope = json_pack("[s]", "lib/a.ex");
    wt_change files[] = {CH('M', "lib/a.ex", NULL, 3, 1), CH('M', "mix.lock", NULL, 2, 2),
                         CH('A', "test/a_test.exs", NULL, 5, 0)};
    validate_static v = check_ok(files, 3, scope, NULL, 40);
    validate_signals s = {.compiled = 1,
                          .tests_passed = 0,
                          .regression_proven = -1,
                          .scope_ok = v.scope_ok,
                          .size_ok = v.size_ok,
                          .protected_ok = v.protected_ok,
                          .changed_lines = v.changed_lines,
                          .max_lines = 40,
                          .agent_exit_ok = 1};
    double c = validate_confidence(&s);
    assert_true(c == 0.0);
    json_t *r = validate_report(&v, &s, 0.42);
    assert_non_null(r);
    assert_int_equal(json_object_size(r), 16);
    assert_true(json_is_false(json_object_get(r, "scope_ok")));
    assert_true(json_is_true(json_object_get(r, "size_ok")));
    assert_true(json_is_false(json_object_get(r, "protected_ok")));
    assert_true(json_is_true(json_object_get(r, "has_test_change")));
    assert_true(json_is_false(json_object_get(r, "empty")));
    assert_int_equal(json_integer_value(json_object_get(r, "changed_lines")), 13);
    assert_int_equal(json_integer_value(json_object_get(r, "max_lines")), 40);
    assert_string_equal(joined(json_object_get(r, "out_of_scope")), "mix.lock");
    assert_string_equal(joined(json_object_get(r, "protected")), "mix.lock=mix.lock");
    assert_string_equal(joined(json_object_get(r, "test_files")), "test/a_test.exs");
    assert_string_equal(joined(json_object_get(r, "source_files")), "lib/a.ex,mix.lock");
    assert_true(json_is_true(json_object_get(r, "compiled")));
    assert_true(json_is_false(json_object_get(r, "tests_passed")));
    assert_true(json_is_null(json_object_get(r, "regression_proven")));
    assert_true(json_is_true(json_object_get(r, "agent_exit_ok")));
    assert_true(json_is_real(json_object_get(r, "confidence")));
    assert_true(json_real_value(json_object_get(r, "confidence")) == 0.42);
    /* It serialises (every string valid UTF-8). */
    char *text = json_dumps(r, JSON_COMPACT);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"regression_proven\":null"));
    free(text);
    json_decref(r);

    s.compiled = -1;
    s.agent_exit_ok = 0;
    s.max_lines = 0;
    r = validate_report(&v, &s, 0.0);
    assert_true(json_is_null(json_object_get(r, "compiled")));
    assert_true(json_is_false(json_object_get(r, "agent_exit_ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "max_lines")), 40);
    json_decref(r);

    validate_static_free(&v);
    json_decref(scope);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glob_match),
        cmocka_unit_test(test_default_protected),
        cmocka_unit_test(test_check_in_scope),
        cmocka_unit_test(test_check_out_of_scope),
        cmocka_unit_test(test_check_renames),
        cmocka_unit_test(test_check_protected),
        cmocka_unit_test(test_check_size_and_empty),
        cmocka_unit_test(test_confidence),
        cmocka_unit_test(test_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
