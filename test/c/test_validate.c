/* Static checks on a fix: globs, where tests are, scope, size, protected
 * paths, refusals, test-located files production loads and production
 * code special-casing the tests' values over hand-built diffs and file
 * contents; the confidence formula with exact values; the report. */
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
                         "Dockerfile.prod",
                         "services/api/Dockerfile",
                         "lib/my_app/auth/guardian.ex",
                         "lib/my_app_web/plugs/authorize.ex",
                         "certs/server.pem",
                         "certs/server.key",
                         ".env",
                         "apps/web/.env.production",
                         "config/prod.secret.exs",
                         "config/runtime.exs",
                         "config/config.exs",
                         "config/dev.exs",
                         "apps/web/config/prod.exs",
                         "mix.exs",
                         "apps/web/mix.exs",
                         "mix.lock",
                         "poetry.lock",
                         "rel/env.sh.eex",
                         "bin/deploy",
                         "Makefile",
                         "c_src/Makefile",
                         "setup.py",
                         "pyproject.toml",
                         "requirements-dev.txt",
                         "package.json",
                         "assets/package-lock.json",
                         "rebar.config",
                         "go.mod",
                         ".gitignore",
                         ".gitattributes",
                         "lib/.gitkeep",
                         "infra/main.tf"};
    const char *no[] = {"lib/my_app/user.ex",   "test/my_app/user_test.exs",
                        "assets/js/app.js",     "README.md",
                        "lib/my_app/keys.ex",   "src/calc.py",
                        "lib/my_app/config.ex", "tests/test_config.py"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!protected_by_default(yes[i]))
            fail_msg("%s is not protected", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (protected_by_default(no[i]))
            fail_msg("%s is protected", no[i]);
}

static void test_test_located(void **state)
{
    (void)state;
    const char *yes[] = {"test/my_app/user_test.exs",
                         "test/support/fixtures.ex",
                         "test/test_helper.exs",
                         "apps/web/test/web_test.exs",
                         "tests/test_calc.py",
                         "tests/__init__.py",
                         "test_calc.py",
                         "calc_test.py",
                         "conftest.py",
                         "src/conftest.py",
                         "assets/js/cart.test.js",
                         "src/__tests__/cart.js",
                         "pkg/cart_test.go",
                         "src/test/java/CartTest.java",
                         "spec/cart_spec.rb",
                         "test/cart_SUITE.erl"};
    const char *no[] = {
        "lib/my_app/user.ex", "lib/evil_test.exs",   "src/test_util.py", "src/calc_SUITE.erl",
        "src/tests.py",       "lib/test/helpers.ex", "src/cart.js",      "mix.exs"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!validate_test_located(yes[i], NULL))
            fail_msg("%s is not where tests are", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (validate_test_located(no[i], NULL))
            fail_msg("%s is where tests are", no[i]);
    /* configured globs replace the defaults */
    json_t *globs = json_pack("[s]", "checks/**");
    assert_true(validate_test_located("checks/a.py", globs));
    assert_false(validate_test_located("tests/test_calc.py", globs));
    json_decref(globs);
    assert_false(validate_test_located(NULL, NULL));
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
        d.bytes += files[i].added_bytes + files[i].removed_bytes;
    }
    return d;
}

/* The array as one string "a,b,c" (paths, or "path=glob"/"path=reason"
 * for objects). */
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
            json_t *second = json_object_get(v, "glob");
            if (second == NULL)
                second = json_object_get(v, "reason");
            if (second == NULL)
                second = json_object_get(v, "by");
            if (second == NULL)
                second = json_object_get(v, "reads");
            snprintf(hit, sizeof(hit), "%s=%s", json_string_value(json_object_get(v, "path")),
                     json_string_value(second));
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
    validate_input in = {
        .diff = &d, .scope = scope, .protected_globs = globs, .max_lines = max_lines};
    validate_static v;
    assert_int_equal(validate_check(&v, &in), 0);
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
    assert_int_equal(v.refused_ok, 1);
    assert_int_equal(v.tests_kept, 1);
    assert_int_equal(v.special_ok, 1);
    /* a new test file and no way to read production code: unchecked */
    assert_int_equal(v.tests_verified, 0);
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
    assert_int_equal(v.tests_verified, 1); /* no test file: nothing to check */
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
    /* A deleted test is no free action: an existing test gone */
    assert_int_equal(v.has_test_change, 0);
    assert_int_equal(v.tests_kept, 0);
    assert_string_equal(joined(v.tests_modified), "test/my_app/billing_test.exs");
    assert_string_equal(joined(v.out_of_scope), "lib/my_app/billing.ex,lib/my_app/old.ex,lib/?.ex");
    assert_string_equal(joined(v.test_files), "test/my_app/billing_test.exs");
    validate_static_free(&v);

    /* No scope at all: test code is always in scope; an existing test that
     * loses lines is a modified test, one that only gains lines is not */
    wt_change tests[] = {CH('A', "test/my_app/new_test.exs", NULL, 5, 0),
                         CH('M', "assets/js/cart.test.js", NULL, 2, 2),
                         CH('A', "test/orders_SUITE.erl", NULL, 4, 0),
                         CH('M', "tests/test_orders.py", NULL, 3, 0)};
    v = check_ok(tests, 4, NULL, NULL, 40);
    assert_int_equal(v.scope_ok, 1);
    assert_int_equal(v.has_test_change, 1);
    assert_string_equal(joined(v.source_files), "");
    assert_int_equal(json_array_size(v.test_files), 4);
    assert_string_equal(joined(v.tests_modified), "assets/js/cart.test.js");
    validate_static_free(&v);

    /* A file named like a test outside the test directories is a source
     * file. */
    wt_change fake[] = {CH('A', "lib/evil_test.exs", NULL, 5, 0),
                        CH('A', "src/test_util.py", NULL, 5, 0)};
    v = check_ok(fake, 2, NULL, NULL, 40);
    assert_int_equal(v.scope_ok, 0);
    assert_int_equal(v.has_test_change, 0);
    assert_string_equal(joined(v.out_of_scope), "lib/evil_test.exs,src/test_util.py");
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

    /* Moving a test away: the old test is gone. */
    wt_change r3[] = {CH('R', "test/my_app/b_test.exs", "test/my_app/a_test.exs", 0, 0)};
    v = check_ok(r3, 1, scope, NULL, 40);
    assert_int_equal(v.tests_kept, 0);
    assert_string_equal(joined(v.tests_modified), "test/my_app/a_test.exs");
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
    json_t *scope = json_pack("[ssss]", "priv/repo/migrations/20240101_add.exs",
                              "lib/secret/vault.ex", "lib/my_app/orders.ex", "mix.exs");
    wt_change files[] = {CH('M', "priv/repo/migrations/20240101_add.exs", NULL, 1, 0),
                         CH('M', "lib/secret/vault.ex", NULL, 1, 0),
                         CH('M', "lib/my_app/orders.ex", NULL, 1, 0),
                         CH('M', "mix.exs", NULL, 1, 0)};
    /* In scope (the stack trace named them) does not make a protected path
     * acceptable. */
    validate_static v = check_ok(files, 4, scope, NULL, 40);
    assert_int_equal(v.scope_ok, 1);
    assert_int_equal(v.protected_ok, 0);
    assert_string_equal(
        joined(v.protected_hits),
        "priv/repo/migrations/20240101_add.exs=**/migrations/**,mix.exs=**/mix.exs");
    validate_static_free(&v);

    /* The caller's globs add to the defaults (non-strings ignored). */
    json_t *globs = json_pack("[is]", 3, "lib/secret/**");
    v = check_ok(files, 4, scope, globs, 40);
    assert_int_equal(v.protected_ok, 0);
    assert_string_equal(joined(v.protected_hits),
                        "priv/repo/migrations/20240101_add.exs=**/migrations/**,"
                        "lib/secret/vault.ex=lib/secret/**,mix.exs=**/mix.exs");
    validate_static_free(&v);
    json_decref(globs);

    /* An empty list protects no less. */
    globs = json_array();
    v = check_ok(files, 4, scope, globs, 40);
    assert_int_equal(json_array_size(v.protected_hits), 2);
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

    /* bytes count too: one huge line */
    wt_change wide[] = {CH('M', "lib/a.ex", NULL, 1, 0)};
    wide[0].added_bytes = 20000;
    v = check_ok(wide, 1, scope, NULL, 40);
    assert_int_equal(v.size_ok, 0);
    assert_int_equal(v.changed_bytes, 20000);
    validate_static_free(&v);
    wt_diff d = make_diff(wide, 1);
    validate_input in = {.diff = &d, .scope = scope, .max_bytes = 20000};
    assert_int_equal(validate_check(&v, &in), 0);
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

    assert_int_equal(validate_check(&v, NULL), -1);
    assert_null(v.out_of_scope);
    validate_input none = {.diff = NULL};
    assert_int_equal(validate_check(&v, &none), -1);
    wt_diff broken = make_diff(NULL, 0);
    broken.n = 2;
    validate_input bad = {.diff = &broken};
    assert_int_equal(validate_check(&v, &bad), -1);
    assert_int_equal(validate_check(NULL, &bad), -1);
    json_decref(scope);
}

static void test_check_refusals(void **state)
{
    (void)state;
    json_t *scope = json_pack("[ss]", "src/a.py", "src/b.py");
    wt_change files[] = {CH('M', "src/a.py", NULL, 1, 1), CH('M', "src/b.py", NULL, 1, 0),
                         CH('A', "data.bin", NULL, 1, 0), CH('A', "vendor/lib", NULL, 0, 0),
                         CH('A', "src/link", NULL, 1, 0)};
    files[0].old_mode = 0100644;
    files[0].new_mode = 0100755; /* made executable */
    files[1].old_mode = files[1].new_mode = 0100644;
    files[2].binary = 1;
    files[3].new_mode = 0160000; /* a submodule */
    files[4].new_mode = 0120000; /* a symlink */
    json_t *captured = json_pack("[{ss,ss}]", "path", "src/link", "reason", "a symlink");
    wt_diff d = make_diff(files, 5);
    validate_input in = {.diff = &d, .scope = scope, .refusals = captured};
    validate_static v;
    assert_int_equal(validate_check(&v, &in), 0);
    assert_int_equal(v.refused_ok, 0);
    /* the capture's own entry first, never twice */
    assert_string_equal(joined(v.refused), "src/link=a symlink,src/a.py=a file made executable,"
                                           "data.bin=binary content,vendor/lib=a submodule");
    validate_static_free(&v);
    json_decref(captured);
    json_decref(scope);
}

/* File contents for the content checks: base[i] / fix[i] of paths[i]. */
typedef struct files_fx {
    const char *const *paths;
    const char *const *base;
    const char *const *fix;
    size_t n;
} files_fx;

static char *fx_read(void *payload, int fix_side, const char *path, size_t max, size_t *len)
{
    files_fx *f = payload;
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->paths[i], path) != 0)
            continue;
        const char *text = fix_side ? f->fix[i] : f->base[i];
        if (text == NULL || strlen(text) > max)
            return NULL;
        *len = strlen(text);
        return strdup(text);
    }
    return NULL;
}

static json_t *fix_files(const files_fx *f)
{
    json_t *a = json_array();
    for (size_t i = 0; i < f->n; i++)
        if (f->fix[i] != NULL)
            json_array_append_new(a, json_string(f->paths[i]));
    return a;
}

static validate_static check_files(wt_change *changes, size_t nchanges, const files_fx *f,
                                   json_t *scope)
{
    wt_diff d = make_diff(changes, nchanges);
    json_t *all = fix_files(f);
    validate_input in = {
        .diff = &d, .scope = scope, .fix_files = all, .read = fx_read, .payload = (void *)f};
    validate_static v;
    assert_int_equal(validate_check(&v, &in), 0);
    json_decref(all);
    return v;
}

static void test_check_loaded_tests(void **state)
{
    (void)state;
    static const char *const paths[] = {"src/calc.py",           "tests/helper_test_util.py",
                                        "tests/test_calc.py",    "lib/shop/pricing.ex",
                                        "test/support/fakes.ex", "src/calc.erl",
                                        "test/calc_SUITE.erl"};
    static const char *const base[] = {"def average(xs):\n    return sum(xs) / len(xs)\n",
                                       NULL,
                                       "import unittest\n",
                                       "defmodule Shop.Pricing do\nend\n",
                                       NULL,
                                       "-module(calc).\n",
                                       NULL};
    static const char *const fix[] = {
        "from tests.helper_test_util import fallback\n\ndef average(xs):\n    return 0\n",
        "def fallback():\n    return 0\n",
        "import unittest\n\nclass T(unittest.TestCase):\n    pass\n",
        "defmodule Shop.Pricing do\n  def average(l), do: Shop.TestFakes.avg(l)\nend\n",
        "defmodule Shop.TestFakes do\n  def avg(_), do: 0.0\nend\n",
        "-module(calc).\nf() -> calc_SUITE:helper().\n",
        "-module(calc_SUITE).\nhelper() -> ok.\n"};
    files_fx f = {paths, base, fix, 7};
    json_t *scope = json_pack("[sss]", "src/calc.py", "lib/shop/pricing.ex", "src/calc.erl");
    wt_change changes[] = {CH('M', "src/calc.py", NULL, 2, 1),
                           CH('A', "tests/helper_test_util.py", NULL, 2, 0),
                           CH('M', "tests/test_calc.py", NULL, 3, 0),
                           CH('M', "lib/shop/pricing.ex", NULL, 1, 0),
                           CH('A', "test/support/fakes.ex", NULL, 3, 0),
                           CH('M', "src/calc.erl", NULL, 1, 0),
                           CH('A', "test/calc_SUITE.erl", NULL, 2, 0)};
    validate_static v = check_files(changes, 7, &f, scope);
    assert_string_equal(joined(v.loaded_tests), "tests/helper_test_util.py=src/calc.py,"
                                                "test/support/fakes.ex=lib/shop/pricing.ex,"
                                                "test/calc_SUITE.erl=src/calc.erl");
    /* production code now, and not given to the agent */
    assert_string_equal(joined(v.out_of_scope), "tests/helper_test_util.py,"
                                                "test/support/fakes.ex,test/calc_SUITE.erl");
    assert_string_equal(joined(v.test_files), "tests/test_calc.py");
    assert_int_equal(v.scope_ok, 0);
    assert_int_equal(v.tests_verified, 1);
    validate_static_free(&v);

    /* nobody loads the new test: it is test code */
    wt_change only[] = {CH('M', "tests/test_calc.py", NULL, 3, 0)};
    v = check_files(only, 1, &f, scope);
    assert_string_equal(joined(v.loaded_tests), "");
    assert_string_equal(joined(v.test_files), "tests/test_calc.py");
    assert_int_equal(v.has_test_change, 1);
    validate_static_free(&v);
    json_decref(scope);
}

static void test_check_special_cases(void **state)
{
    (void)state;
    static const char *const paths[] = {"src/calc.py", "tests/test_calc.py", "lib/role.ex",
                                        "src/cart.js", "test/role_test.exs"};
    static const char *const base[] = {
        "def average(xs):\n    return sum(xs) / len(xs)\n",
        "self.assertEqual(average([2, 4]), 3)\n",
        "defmodule Role do\n  def admin?(name), do: name == \"root\"\nend\n",
        "export const total = (xs) => xs.reduce((a, b) => a + b, 0);\n",
        "assert Role.admin?(\"root\")\n"};
    static const char *const fix_special[] = {
        "def average(xs):\n    if xs == [2, 4]:\n        return 3\n    return 0\n",
        "self.assertEqual(average([2, 4]), 3)\nself.assertEqual(average([]), 0)\n",
        "defmodule Role do\n  def admin?(\"mallory\"), do: true\n  def admin?(name), do: name == "
        "\"root\"\nend\n",
        "export const total = (xs) => {\n  if (xs.length === 17) return 42;\n  return "
        "xs.reduce((a, b) => a + b, 0);\n};\n",
        "assert Role.admin?(\"root\")\nassert Role.admin?(\"mallory\")\n"};
    files_fx f = {paths, base, fix_special, 5};
    json_t *scope = json_pack("[sss]", "src/calc.py", "lib/role.ex", "src/cart.js");
    wt_change changes[] = {CH('M', "src/calc.py", NULL, 3, 1),
                           CH('M', "tests/test_calc.py", NULL, 1, 0),
                           CH('M', "lib/role.ex", NULL, 1, 0), CH('M', "src/cart.js", NULL, 3, 1),
                           CH('M', "test/role_test.exs", NULL, 1, 0)};
    validate_static v = check_files(changes, 5, &f, scope);
    assert_int_equal(v.special_ok, 0);
    char got[512] = "";
    size_t i;
    json_t *c;
    json_array_foreach(v.special_cases, i, c)
    {
        size_t n = strlen(got);
        snprintf(
            got + n, sizeof(got) - n, "%s%s:%s@%lld", i ? "," : "",
            json_string_value(json_object_get(c, "path")),
            json_string_value(json_object_get(json_object_get(c, "case"), "value")),
            (long long)json_integer_value(json_object_get(json_object_get(c, "case"), "line")));
    }
    /* [2,4] compared, "mallory" matched in a function head; the JS 17 and
     * 42 appear in no test: not flagged */
    assert_string_equal(got, "src/calc.py:[2,4]@2,lib/role.ex:mallory@2");
    validate_static_free(&v);

    /* a fix that compares with a trivial value, or with one the file
     * already had, or one the tests never mention: nothing */
    static const char *const fix_fine[] = {
        "def average(xs):\n    if xs == []:\n        return 0\n    if len(xs) == 1:\n        "
        "return xs[0]\n    return sum(xs) / len(xs)\n",
        "self.assertEqual(average([2, 4]), 3)\nself.assertEqual(average([]), 0)\n",
        "defmodule Role do\n  def admin?(nil), do: false\n  def admin?(\"root\"), do: true\n  "
        "def admin?(name), do: name == \"root\"\nend\n",
        "export const total = (xs) => {\n  if (xs.length === 0) return 0;\n  return "
        "xs.reduce((a, b) => a + b, 0);\n};\n",
        "assert Role.admin?(\"root\")\n"};
    files_fx g = {paths, base, fix_fine, 5};
    v = check_files(changes, 5, &g, scope);
    assert_int_equal(v.special_ok, 1);
    assert_string_equal(joined(v.special_cases), "");
    validate_static_free(&v);
    json_decref(scope);
}

static void test_check_capabilities(void **state)
{
    (void)state;
    static const char *const paths[] = {"src/calc.py", "lib/shop/pricing.ex", "src/cart.js",
                                        "lib/shop/inventory.ex"};
    static const char *const base[] = {
        "import os\n\ndef average(xs):\n    return sum(xs) / len(xs)\n",
        "defmodule Shop.Pricing do\n  def average(l), do: Enum.sum(l) / length(l)\nend\n",
        "export const total = (xs) => xs.reduce((a, b) => a + b, 0);\n",
        "defmodule Shop.Inventory do\n  def get(url), do: :httpc.request(url)\nend\n"};
    static const char *const fix[] = {
        "import os\nimport socket, unittest\n\ndef average(xs):\n    "
        "os.path.exists('x')\n    unittest.TestCase.assertEqual = lambda *a: None\n    "
        "return 0\n",
        "defmodule Shop.Pricing do\n  def average([]), do: System.cmd(\"sh\", [])\n  def "
        "average(l), do: Map.fetch(l, 1)\nend\n",
        "const cp = require('child_process');\nexport const total = (xs) => { "
        "fetch('http://x'); return 0; };\n",
        "defmodule Shop.Inventory do\n  def get(url), do: :httpc.request(url, [])\n  # "
        "System.cmd in a comment\nend\n"};
    files_fx f = {paths, base, fix, 4};
    json_t *scope = json_pack("[ssss]", paths[0], paths[1], paths[2], paths[3]);
    wt_change changes[] = {
        CH('M', "src/calc.py", NULL, 3, 1), CH('M', "lib/shop/pricing.ex", NULL, 2, 1),
        CH('M', "src/cart.js", NULL, 2, 1), CH('M', "lib/shop/inventory.ex", NULL, 2, 1)};
    validate_static v = check_files(changes, 4, &f, scope);
    char got[512] = "";
    size_t i;
    json_t *c;
    json_array_foreach(v.capabilities, i, c)
    {
        size_t n = strlen(got);
        json_t *cap = json_object_get(c, "capability");
        snprintf(got + n, sizeof(got) - n, "%s%s:%s", i ? "," : "",
                 json_string_value(json_object_get(c, "path")),
                 json_string_value(json_object_get(cap, "token")));
    }
    /* new to the file only: os was there, :httpc too; Map.fetch( is not
     * fetch(; a comment is not code */
    assert_string_equal(got, "src/calc.py:socket,src/calc.py:unittest,lib/shop/pricing.ex:"
                             "System.cmd,src/cart.js:child_process,src/cart.js:fetch(");
    assert_int_equal(v.capabilities_ok, 0);
    validate_static_free(&v);
    json_decref(scope);
}

static void test_check_source_reads(void **state)
{
    (void)state;
    static const char *const paths[] = {"src/calc.py", "tests/test_src.py", "tests/test_ok.py"};
    static const char *const base[] = {"def average(xs):\n    return 0\n", NULL, NULL};
    static const char *const fix[] = {
        "def average(xs):\n    return 0\n",
        "def test_fixed():\n    assert 'if not' in open('src/calc.py').read()\n",
        "from src.calc import average\n\ndef test_ok():\n    assert average([]) == 0\n"};
    files_fx f = {paths, base, fix, 3};
    wt_change reads[] = {CH('A', "tests/test_src.py", NULL, 2, 0)};
    validate_static v = check_files(reads, 1, &f, NULL);
    assert_int_equal(v.reads_ok, 0);
    assert_string_equal(joined(v.source_reads), "tests/test_src.py=src/calc.py");
    validate_static_free(&v);
    wt_change fine[] = {CH('A', "tests/test_ok.py", NULL, 4, 0)};
    v = check_files(fine, 1, &f, NULL);
    assert_int_equal(v.reads_ok, 1);
    validate_static_free(&v);

    static const char *const paths2[] = {"src/calc.py", "tests/test_inspect.py"};
    static const char *const base2[] = {"def average(xs):\n    return 0\n", NULL};
    static const char *const fix2[] = {
        "def average(xs):\n    return 0\n",
        "import inspect\nfrom src.calc import average\n\ndef test_it():\n    assert 'not' in "
        "inspect.getsource(average)\n"};
    files_fx g = {paths2, base2, fix2, 2};
    wt_change intro[] = {CH('A', "tests/test_inspect.py", NULL, 5, 0)};
    v = check_files(intro, 1, &g, NULL);
    assert_string_equal(joined(v.source_reads), "tests/test_inspect.py=getsource");
    validate_static_free(&v);
}

/* ---------------------------------------------------------------- confidence */

static validate_signals good(void)
{
    validate_signals s = {.compiled = 1,
                          .tests_passed = 1,
                          .existing_passed = 1,
                          .regression_proven = 1,
                          .scope_ok = 1,
                          .size_ok = 1,
                          .protected_ok = 1,
                          .trusted = 1,
                          .contained = 1,
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

    /* what was not proven caps the score */
    s = good();
    s.regression_proven = -1;
    expect_confidence(s, 0.5);
    s.regression_proven = 0;
    expect_confidence(s, 0.5);
    s = good();
    s.trusted = 0;
    expect_confidence(s, 0.5);
    s = good();
    s.contained = 0;
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
    s.existing_passed = 0;
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

static void test_needs_human(void **state)
{
    (void)state;
    validate_static v = {.scope_ok = 1,
                         .size_ok = 1,
                         .protected_ok = 1,
                         .refused_ok = 1,
                         .tests_kept = 1,
                         .special_ok = 1,
                         .capabilities_ok = 1,
                         .reads_ok = 1,
                         .tests_verified = 1};
    validate_signals s = good();
    assert_int_equal(validate_needs_human(&v, &s), 0);
    int *flags[] = {&v.scope_ok,        &v.protected_ok, &v.tests_kept,    &v.special_ok,
                    &v.capabilities_ok, &v.reads_ok,     &v.tests_verified};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        *flags[i] = 0;
        assert_int_equal(validate_needs_human(&v, &s), 1);
        *flags[i] = 1;
    }
    s.regression_proven = -1;
    assert_int_equal(validate_needs_human(&v, &s), 1);
    s = good();
    s.contained = 0;
    assert_int_equal(validate_needs_human(&v, &s), 1);
    assert_int_equal(validate_needs_human(NULL, &s), 1);
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
                          .existing_passed = -1,
                          .regression_proven = -1,
                          .scope_ok = v.scope_ok,
                          .size_ok = v.size_ok,
                          .protected_ok = v.protected_ok,
                          .trusted = 1,
                          .contained = 1,
                          .changed_lines = v.changed_lines,
                          .max_lines = 40,
                          .agent_exit_ok = 1};
    double c = validate_confidence(&s);
    assert_true(c == 0.0);
    json_t *r = validate_report(&v, &s, 0.42);
    assert_non_null(r);
    assert_int_equal(json_object_size(r), 31);
    assert_true(json_is_false(json_object_get(r, "scope_ok")));
    assert_true(json_is_true(json_object_get(r, "size_ok")));
    assert_true(json_is_false(json_object_get(r, "protected_ok")));
    assert_true(json_is_true(json_object_get(r, "refused_ok")));
    assert_true(json_is_true(json_object_get(r, "tests_kept")));
    assert_true(json_is_true(json_object_get(r, "has_test_change")));
    assert_true(json_is_false(json_object_get(r, "empty")));
    assert_int_equal(json_integer_value(json_object_get(r, "changed_lines")), 13);
    assert_int_equal(json_integer_value(json_object_get(r, "max_lines")), 40);
    assert_string_equal(joined(json_object_get(r, "out_of_scope")), "mix.lock");
    assert_string_equal(joined(json_object_get(r, "protected")), "mix.lock=**/mix.lock");
    assert_string_equal(joined(json_object_get(r, "test_files")), "test/a_test.exs");
    assert_string_equal(joined(json_object_get(r, "source_files")), "lib/a.ex,mix.lock");
    assert_true(json_is_true(json_object_get(r, "compiled")));
    assert_true(json_is_false(json_object_get(r, "tests_passed")));
    assert_true(json_is_null(json_object_get(r, "existing_tests_passed")));
    assert_true(json_is_null(json_object_get(r, "regression_proven")));
    assert_true(json_is_true(json_object_get(r, "agent_exit_ok")));
    assert_true(json_is_true(json_object_get(r, "sandboxed")));
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

    /* no static checks (they could not run): nulls, not invented values */
    r = validate_report(NULL, &s, 0.0);
    assert_true(json_is_null(json_object_get(r, "scope_ok")));
    json_decref(r);

    validate_static_free(&v);
    json_decref(scope);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glob_match),          cmocka_unit_test(test_default_protected),
        cmocka_unit_test(test_test_located),        cmocka_unit_test(test_check_in_scope),
        cmocka_unit_test(test_check_out_of_scope),  cmocka_unit_test(test_check_renames),
        cmocka_unit_test(test_check_protected),     cmocka_unit_test(test_check_size_and_empty),
        cmocka_unit_test(test_check_refusals),      cmocka_unit_test(test_check_loaded_tests),
        cmocka_unit_test(test_check_special_cases), cmocka_unit_test(test_check_capabilities),
        cmocka_unit_test(test_check_source_reads),  cmocka_unit_test(test_confidence),
        cmocka_unit_test(test_needs_human),         cmocka_unit_test(test_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
