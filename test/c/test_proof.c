/* The regression proof: real test runner output (test/c/data/proof, see
 * its README) checked against real production traces of the same errors,
 * with the files resolved through a repository written to a temp dir.
 * Python (unittest, pytest's long, short, native and line formats,
 * chained exceptions), ExUnit, JavaScript (mocha, jest, node's test
 * runner), Java (JUnit), a plain "Type: message" line, coloured output;
 * and what must not count: another type or message, an error raised by
 * the test code itself, the right error from another function,
 * assertions, compile errors, an empty log, 20 MB of junk, NUL bytes and
 * invalid UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proof.h"

/* ---------------------------------------------------------------- the repository */

static char g_root[64];
static context_files *g_files;

static void write_file(const char *rel, const char *text)
{
    char path[512];
    assert_true(snprintf(path, sizeof(path), "%s/%s", g_root, rel) < (int)sizeof(path));
    for (char *p = path + strlen(g_root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        if (mkdir(path, 0700) != 0)
            assert_int_equal(errno, EEXIST);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d != NULL) {
            struct dirent *e;
            char sub[1024];
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
                remove_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int setup_repo(void **state)
{
    (void)state;
    static const char *const files[] = {
        "src/__init__.py",
        "src/calc.py",
        "src/app.py",
        "tests/__init__.py",
        "tests/test_calc.py",
        "tests/test_own.py",
        "tests/test_chain.py",
        "tests/test_compile.py",
        "mix.exs",
        "lib/shop/pricing.ex",
        "lib/shop_web/controllers/cart_controller.ex",
        "test/test_helper.exs",
        "test/shop/pricing_test.exs",
        "test/shop/broken_test.exs",
        "package.json",
        "src/cart.js",
        "run_plain.js",
        "test/cart.test.js",
        "test/cart_node.test.js",
        "src/main/java/shop/Pricing.java",
        "src/main/java/shop/Main.java",
        "src/test/java/shop/PricingTest.java",
        NULL,
    };
    snprintf(g_root, sizeof(g_root), "/tmp/sh-proof-XXXXXX");
    if (mkdtemp(g_root) == NULL)
        return -1;
    for (size_t k = 0; files[k] != NULL; k++)
        write_file(files[k], "# only the path matters\n");
    g_files = context_files_open(g_root, NULL);
    return g_files != NULL ? 0 : -1;
}

static int teardown_repo(void **state)
{
    (void)state;
    context_files_free(g_files);
    g_files = NULL;
    remove_tree(g_root);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

/* A fixture of test/c/data/proof (or $SELF_HEAL_TEST_DATA/proof), NUL-
 * terminated; *len its size. */
static char *load(const char *name, size_t *len)
{
    const char *dir = getenv("SELF_HEAL_TEST_DATA");
    char path[512];
    snprintf(path, sizeof(path), "%s/proof/%s", dir != NULL ? dir : "test/c/data", name);
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        fail_msg("cannot open %s (run from the repository root or set SELF_HEAL_TEST_DATA)", path);
    size_t cap = 1 << 20;
    char *data = malloc(cap);
    assert_non_null(data);
    size_t n = fread(data, 1, cap - 1, fp);
    fclose(fp);
    data[n] = '\0';
    if (len != NULL)
        *len = n;
    return data;
}

/* The detail is one printable line of valid UTF-8. */
static void assert_detail_clean(const proof_result *r)
{
    size_t n = strnlen(r->detail, sizeof(r->detail));
    assert_true(n > 0 && n < sizeof(r->detail));
    const unsigned char *u = (const unsigned char *)r->detail;
    for (size_t i = 0; i < n;) {
        size_t k = sh_utf8_seq_len(u + i, n - i);
        assert_true(k > 0);
        assert_true(u[i] >= 0x20 && u[i] != 0x7F);
        i += k;
    }
}

static proof_result check_text(const char *log, size_t len, const char *type, const char *message,
                               const char *stack)
{
    proof_target t = {type, message, stack};
    proof_result r;
    assert_int_equal(proof_check(&r, log, len, &t, g_files, proof_is_test_path, NULL), 0);
    assert_detail_clean(&r);
    if (r.reproduced) {
        assert_int_equal(strlen(r.fingerprint), SH_FP_HEX_LEN);
        assert_non_null(strstr(r.detail, "reproduced by failure"));
    } else {
        assert_string_equal(r.fingerprint, "");
        assert_int_equal(r.frames_matched, 0);
    }
    return r;
}

/* log and stack are fixture names (stack may be NULL, or literal text
 * when it starts with a blank, a '*' or a 'T'). */
static proof_result check(const char *log_name, const char *type, const char *message,
                          const char *stack)
{
    size_t len;
    char *log = load(log_name, &len);
    char *st = NULL;
    if (stack != NULL && strncmp(stack, "prod_", 5) == 0)
        st = load(stack, NULL);
    proof_result r = check_text(log, len, type, message, st != NULL ? st : stack);
    free(log);
    free(st);
    return r;
}

static void expect(const proof_result *r, int reproduced, size_t failures, size_t frames,
                   const char *in_detail)
{
    if (r->reproduced != reproduced || r->failures != failures || r->frames_matched != frames ||
        (in_detail != NULL && strstr(r->detail, in_detail) == NULL))
        print_error("reproduced %d, %zu failures, %zu frames: %s\n", r->reproduced, r->failures,
                    r->frames_matched, r->detail);
    assert_int_equal(r->reproduced, reproduced);
    assert_int_equal(r->failures, failures);
    assert_int_equal(r->frames_matched, frames);
    if (in_detail != NULL)
        assert_non_null(strstr(r->detail, in_detail));
}

/* The part of a fixture from the line holding `from` up to the line
 * holding `to` (excluded; NULL: to the end). */
static char *section(const char *name, const char *from, const char *to, size_t *len)
{
    char *text = load(name, NULL);
    char *s = strstr(text, from);
    assert_non_null(s);
    while (s > text && s[-1] != '\n')
        s--;
    char *e = to != NULL ? strstr(s, to) : NULL;
    if (e != NULL)
        while (e > s && e[-1] != '\n')
            e--;
    size_t n = e != NULL ? (size_t)(e - s) : strlen(s);
    char *out = malloc(n + 1);
    assert_non_null(out);
    memcpy(out, s, n);
    out[n] = '\0';
    free(text);
    *len = n;
    return out;
}

#define PY_DIV "division by zero"
#define JS_MSG "Cannot read properties of undefined (reading 'reduce')"
#define EX_ARITH "bad argument in arithmetic expression"

/* ---------------------------------------------------------------- Python */

static void test_python_unittest(void **state)
{
    (void)state;
    proof_result r = check("py_unittest.log", "ZeroDivisionError", PY_DIV, "prod_python.txt");
    expect(&r, 1, 2, 1, "average (src/calc.py)");

    /* the same error through pytest's formats: the same fingerprint */
    static const char *const formats[] = {"pytest_long.log", "pytest_short.log",
                                          "pytest_native.log"};
    for (size_t k = 0; k < 3; k++) {
        proof_result p = check(formats[k], "ZeroDivisionError", PY_DIV, "prod_python.txt");
        expect(&p, 1, 2, 1, "average (src/calc.py)");
        assert_string_equal(p.fingerprint, r.fingerprint);
    }

    /* a dotted type on one side only compares last segments */
    proof_result d =
        check("py_unittest.log", "builtins.ZeroDivisionError", PY_DIV, "prod_python.txt");
    expect(&d, 1, 2, 1, NULL);
    assert_string_equal(d.fingerprint, r.fingerprint);
    /* an empty type: the message and frames decide */
    proof_result e = check("py_unittest.log", "", PY_DIV, "prod_python.txt");
    expect(&e, 1, 2, 1, NULL);
}

static void test_python_chained(void **state)
{
    (void)state;
    /* the last block of the production traceback is the error; the log's
     * chains are one failure per traceback */
    proof_result r = check("py_unittest_chain.log", "KeyError", "'three'", "prod_python_chain.txt");
    expect(&r, 1, 4, 2, "fallback_qty (src/calc.py)");
    proof_result p = check("pytest_long_chain.log", "KeyError", "'three'", "prod_python_chain.txt");
    expect(&p, 1, 6, 2, "fallback_qty (src/calc.py)");
    assert_string_equal(p.fingerprint, r.fingerprint);

    /* the cause and the effect of `raise ... from` each reproduce */
    const char *lookup = "Traceback (most recent call last):\n"
                         "  File \"/srv/app/src/calc.py\", line 17, in lookup\n"
                         "    raise LookupError(\"unknown key \" + repr(key)) from e\n"
                         "LookupError: unknown key 'vat'\n";
    r = check("py_unittest_chain.log", "LookupError", "unknown key 'vat'", lookup);
    expect(&r, 1, 4, 1, "lookup (src/calc.py)");
    p = check("pytest_long_chain.log", "LookupError", "unknown key 'vat'", lookup);
    expect(&p, 1, 6, 1, NULL);
    assert_string_equal(p.fingerprint, r.fingerprint);
    r = check("py_unittest_chain.log", "KeyError", "'vat'",
              "  File \"/srv/app/src/calc.py\", line 15, in lookup\n");
    expect(&r, 1, 4, 1, NULL);
    /* same type, another message */
    r = check("py_unittest_chain.log", "KeyError", "'vat2'", lookup);
    expect(&r, 0, 4, 0, "another message than 'vat2'");
}

static void test_python_not_reproduced(void **state)
{
    (void)state;
    /* the test raises it, or divides by zero itself */
    proof_result r = check("py_unittest_own.log", "ZeroDivisionError", PY_DIV, "prod_python.txt");
    expect(&r, 0, 2, 0,
           "raised by the test code itself at test_divides_itself (tests/test_own.py)");
    r = check("pytest_long_chain.log", "ZeroDivisionError", PY_DIV, "prod_python.txt");
    expect(&r, 0, 6, 0, "raised by the test code itself");
    /* even when the production error has no stack */
    r = check("py_unittest_own.log", "ZeroDivisionError", PY_DIV, NULL);
    expect(&r, 0, 2, 0, "raised by the test code itself");

    /* another type; another message */
    r = check("py_unittest.log", "TypeError", PY_DIV, "prod_python.txt");
    expect(&r, 0, 2, 0, "another exception type than TypeError");
    r = check("py_unittest.log", "ZeroDivisionError", "float division by zero", "prod_python.txt");
    expect(&r, 0, 2, 0, "another message than float division by zero");

    /* the right error, from another production function */
    const char *ratio = "Traceback (most recent call last):\n"
                        "  File \"/srv/app/src/app.py\", line 9, in quote\n"
                        "    return calc.ratio(a, b)\n"
                        "  File \"/srv/app/src/calc.py\", line 10, in ratio\n"
                        "    return a / b\n"
                        "ZeroDivisionError: division by zero\n";
    r = check("py_unittest.log", "ZeroDivisionError", PY_DIV, ratio);
    expect(&r, 0, 2, 0, "raised at average (src/calc.py), not ratio (src/calc.py)");

    /* an assertion failure alone */
    size_t len;
    char *fail = section("py_unittest.log", "FAIL: test_average_value", "Ran 3 tests", &len);
    r = check_text(fail, len, "ZeroDivisionError", PY_DIV, NULL);
    expect(&r, 0, 1, 0, "another exception type");
    free(fail);

    /* a test file that does not compile */
    r = check("py_unittest_syntax.log", "ZeroDivisionError", PY_DIV, "prod_python.txt");
    expect(&r, 0, 1, 0, "another exception type");
    r = check("py_unittest_syntax.log", "SyntaxError", "expected ':'", NULL);
    expect(&r, 0, 1, 0, "raised by the test code itself");
}

static void test_pytest_line(void **state)
{
    (void)state;
    /* --tb=line names no function: it cannot match production frames */
    proof_result r = check("pytest_line.log", "ZeroDivisionError", PY_DIV, "prod_python.txt");
    expect(&r, 0, 2, 0, "raised at (src/calc.py), not average (src/calc.py)");
    /* but type and message decide for a stackless error, and the file
     * still tells production code from the test's */
    r = check("pytest_line.log", "ZeroDivisionError", PY_DIV, NULL);
    expect(&r, 1, 2, 0, "type and message");
    r = check("pytest_line.log", "AssertionError", "1.5 != 2", NULL);
    expect(&r, 0, 2, 0, "raised by the test code itself at (tests/test_calc.py)");
}

/* ---------------------------------------------------------------- ExUnit */

static void test_exunit(void **state)
{
    (void)state;
    /* 8 tests: 7 exceptions (one of them an exit with its EXIT reason),
     * and an assertion that is none */
    proof_result r = check("exunit.log", "Elixir.ArithmeticError", EX_ARITH, "prod_elixir.txt");
    expect(&r, 1, 8, 1, "Shop.Pricing.average/1 (lib/shop/pricing.ex)");
    proof_result p = check("exunit.log", "ArithmeticError", EX_ARITH, "prod_elixir.txt");
    assert_string_equal(p.fingerprint, r.fingerprint);

    /* a message of two lines, as ExUnit prints it */
    const char *describe = "** (ArgumentError) unknown sku 42\nknown skus: apple, pear\n"
                           "    (shop 0.1.0) lib/shop/pricing.ex:13: Shop.Pricing.describe/1\n"
                           "    (shop 0.1.0) lib/shop_web/controllers/cart_controller.ex:9: "
                           "ShopWeb.CartController.show/2\n";
    r = check("exunit.log", "ArgumentError", "unknown sku 42\nknown skus: apple, pear", describe);
    expect(&r, 1, 8, 1, "describe/1");
    r = check("exunit.log", "ArgumentError", "unknown sku 42", describe);
    expect(&r, 0, 8, 0, "another message");

    /* a function clause error: the message ends at the blank line */
    r = check("exunit.log", "FunctionClauseError",
              "no function clause matching in Shop.Pricing.discount/2\n\n"
              "The following arguments were given to Shop.Pricing.discount/2:\n\n    # 1\n    7\n",
              "    (shop 0.1.0) lib/shop/pricing.ex:10: Shop.Pricing.discount/2\n"
              "    (shop 0.1.0) lib/shop_web/controllers/cart_controller.ex:12: "
              "ShopWeb.CartController.update/2\n");
    expect(&r, 1, 8, 1, "discount/2");

    /* an exit, its reason on the next line (another pid in production) */
    r = check("exunit.log", "exit",
              "exited in: GenServer.call(#PID<0.2091.0>, :rate, 10)\n"
              "    ** (EXIT) no process: the process is not alive or there's no process currently "
              "associated with the given name, possibly because its application isn't started",
              "    (elixir 1.14.0) lib/gen_server.ex:1038: GenServer.call/3\n"
              "    (shop 0.1.0) lib/shop/pricing.ex:17: Shop.Pricing.fetch_rate/1\n"
              "    (shop 0.1.0) lib/shop_web/controllers/cart_controller.ex:20: "
              "ShopWeb.CartController.rate/2\n");
    expect(&r, 1, 8, 1, "fetch_rate/1");

    /* an Erlang error */
    r = check("exunit.log", "ErlangError", "Erlang error: {:badrate, 7}",
              "    (shop 0.1.0) lib/shop/pricing.ex:22: Shop.Pricing.erl_error/0\n");
    expect(&r, 1, 8, 1, "erl_error/0");
}

static void test_exunit_not_reproduced(void **state)
{
    (void)state;
    size_t len;
    /* raised by the test, divided by zero in the test */
    char *own = section("exunit.log", "7) test raises itself", NULL, &len);
    proof_result r = check_text(own, len, "ArithmeticError", EX_ARITH, NULL);
    expect(&r, 0, 2, 0, "raised by the test code itself at (test) (test/shop/pricing_test.exs)");
    free(own);

    /* an assertion failure is no exception */
    char *assertion = section("exunit.log", "2) test average of two", "3) test", &len);
    r = check_text(assertion, len, "ArithmeticError", EX_ARITH, NULL);
    expect(&r, 0, 0, 0, "no failure (exception) found");
    free(assertion);

    /* a test file that does not compile */
    r = check("exunit_compile_error.log", "ArithmeticError", EX_ARITH, "prod_elixir.txt");
    expect(&r, 0, 1, 0, "another exception type than ArithmeticError");

    /* the right error in another function of the same module */
    r = check("exunit.log", "ArithmeticError", EX_ARITH,
              "    (shop 0.1.0) lib/shop/pricing.ex:30: Shop.Pricing.total/1\n");
    expect(&r, 0, 8, 0, "not Shop.Pricing.total/1 (lib/shop/pricing.ex)");

    /* production frames the test run never reaches */
    r = check("exunit.log", "ArithmeticError", EX_ARITH,
              "    (shop 0.1.0) lib/shop_web/controllers/cart_controller.ex:7: "
              "ShopWeb.CartController.show/2\n");
    expect(&r, 0, 8, 0, "raised at Shop.Pricing.average/1");
}

/* ---------------------------------------------------------------- JavaScript */

static void test_javascript(void **state)
{
    (void)state;
    proof_result r = check("mocha.log", "TypeError", JS_MSG, "prod_node.txt");
    expect(&r, 1, 3, 1, "total (src/cart.js)");
    proof_result j = check("jest_notransform.log", "TypeError", JS_MSG, "prod_node.txt");
    expect(&j, 1, 2, 1, "total (src/cart.js)");
    assert_string_equal(j.fingerprint, r.fingerprint);

    /* node's test runner calls checkout: two frames */
    /* (the spec reporter prints the failures again at the end) */
    r = check("node_test_spec.log", "TypeError", JS_MSG, "prod_node.txt");
    expect(&r, 1, 4, 2, "total (src/cart.js)");
    proof_result t = check("node_test_tap.log", "TypeError", JS_MSG, "prod_node.txt");
    expect(&t, 1, 2, 2, "total (src/cart.js)");
    assert_string_equal(t.fingerprint, r.fingerprint);

    /* a browser stack: URL frames */
    r = check("mocha.log", "TypeError", JS_MSG,
              "TypeError: Cannot read properties of undefined (reading 'reduce')\n"
              "    at total (https://shop.example.com/src/cart.js?v=3:4:21)\n"
              "    at HTMLButtonElement.onclick (https://shop.example.com/:1:1)\n");
    expect(&r, 1, 3, 1, NULL);

    /* jest's default transform renames frames through source maps ("at
     * reduce" for total): a limitation of comparing function names */
    r = check("jest.log", "TypeError", JS_MSG, "prod_node.txt");
    expect(&r, 0, 2, 0, "raised at reduce (src/cart.js), not total (src/cart.js)");

    /* the test throws it itself */
    size_t len;
    char *own = section("mocha.log", "3) cart", NULL, &len);
    r = check_text(own, len, "TypeError", JS_MSG, "prod_node.txt");
    expect(&r, 0, 1, 0, "raised by the test code itself");
    free(own);
    /* an assertion */
    r = check("mocha.log", "AssertionError", "Expected values to be strictly equal:", NULL);
    expect(&r, 0, 3, 0, "raised by the test code itself");
}

/* ---------------------------------------------------------------- Java */

static void test_java(void **state)
{
    (void)state;
    /* 3 failures, one with a cause: 4 exceptions */
    proof_result r = check("junit4.log", "java.lang.IllegalStateException",
                           "cannot price an empty cart", "prod_java.txt");
    expect(&r, 1, 4, 1, "shop.Pricing.checkout (src/main/java/shop/Pricing.java)");
    /* an undotted type compares (and fingerprints) the last segments */
    proof_result u =
        check("junit4.log", "IllegalStateException", "cannot price an empty cart", "prod_java.txt");
    expect(&u, 1, 4, 1, NULL);

    /* the cause, reproduced by the Caused by: block (or the direct one) */
    r = check("junit4.log", "java.lang.ArithmeticException", "/ by zero",
              "Exception in thread \"main\" java.lang.ArithmeticException: / by zero\n"
              "\tat shop.Pricing.average(Pricing.java:14)\n"
              "\tat shop.Main.main(Main.java:10)\n");
    expect(&r, 1, 4, 1, "shop.Pricing.average");
    /* another dotted type */
    r = check("junit4.log", "javax.naming.IllegalStateException", "cannot price an empty cart",
              "prod_java.txt");
    expect(&r, 0, 4, 0, "another exception type");
    /* JUnit's assertion is thrown in the test */
    r = check("junit4.log", "java.lang.AssertionError", "expected:<2> but was:<1>", NULL);
    expect(&r, 0, 4, 0, "raised by the test code itself at shop.PricingTest.averageOfTwo");
}

/* ---------------------------------------------------------------- other languages */

static void test_plain_line(void **state)
{
    (void)state;
    /* a language without a frame parser: type and message decide */
    const char *log = "running 3 checks\n"
                      "check 1 ok\n"
                      "OtherError: something else\n"
                      "calc.rb:3:in `average': divided by 0\n"
                      "ZeroDivisionError: divided by 0\n"
                      "3 checks, 1 failure\n";
    const char *stack = "calc.rb:3:in `/'\ncalc.rb:3:in `average'\napp.rb:9:in `handle'\n";
    proof_result r = check_text(log, strlen(log), "ZeroDivisionError", "divided by 0", stack);
    expect(&r, 1, 1, 0, "type and message");
    r = check_text(log, strlen(log), "ZeroDivisionError", "divided by nothing", stack);
    expect(&r, 0, 1, 0, "another message");
    /* with production frames a line without frames never reproduces */
    r = check_text(log, strlen(log), "ZeroDivisionError", "divided by 0",
                   "  File \"/srv/app/src/calc.py\", line 6, in average\n");
    expect(&r, 0, 1, 0, "no production frame in its stack; expected average (src/calc.py)");
    /* without a target type there is no plain line to look for */
    r = check_text(log, strlen(log), NULL, "divided by 0", stack);
    expect(&r, 0, 0, 0, "no failure");
}

static void test_without_resolver(void **state)
{
    (void)state;
    /* files compared as written: ExUnit and production name the same
     * relative paths; leading "./" dropped */
    size_t len;
    char *log = load("exunit.log", &len);
    proof_target t = {"ArithmeticError", EX_ARITH,
                      "    (shop 0.1.0) ./lib/shop/pricing.ex:7: Shop.Pricing.average/1\n"
                      "    (elixir 1.14.0) lib/enum.ex:975: Enum.each/2\n"};
    proof_result r;
    assert_int_equal(proof_check(&r, log, len, &t, NULL, proof_is_test_path, NULL), 0);
    expect(&r, 1, 8, 1, "Shop.Pricing.average/1 (lib/shop/pricing.ex)");
    /* without a classifier the test's own frames are production frames */
    assert_int_equal(proof_check(&r, log, len, &t, NULL, NULL, NULL), 0);
    expect(&r, 1, 8, 1, NULL);
    free(log);

    /* Python's absolute paths differ between the two hosts */
    log = load("py_unittest.log", &len);
    char *stack = load("prod_python.txt", NULL);
    proof_target p = {"ZeroDivisionError", PY_DIV, stack};
    assert_int_equal(proof_check(&r, log, len, &p, NULL, proof_is_test_path, NULL), 0);
    expect(&r, 0, 2, 0, "raised at average (/tmp/shcap/py/src/calc.py)");
    free(log);
    free(stack);
}

/* ---------------------------------------------------------------- colours */

static void test_colour(void **state)
{
    (void)state;
    /* coloured output reads as the plain one: same failures, same
     * fingerprints */
    proof_result c = check("exunit_color.log", "ArithmeticError", EX_ARITH, "prod_elixir.txt");
    proof_result p = check("exunit.log", "ArithmeticError", EX_ARITH, "prod_elixir.txt");
    expect(&c, 1, 1, 1, "Shop.Pricing.average/1 (lib/shop/pricing.ex)");
    assert_string_equal(c.fingerprint, p.fingerprint);
    c = check("pytest_color.log", "ZeroDivisionError", PY_DIV, "prod_python.txt");
    p = check("pytest_long.log", "ZeroDivisionError", PY_DIV, "prod_python.txt");
    expect(&c, 1, 2, 1, "average (src/calc.py)");
    assert_string_equal(c.fingerprint, p.fingerprint);
    c = check("jest_color.log", "TypeError", JS_MSG, "prod_node.txt");
    p = check("jest_notransform.log", "TypeError", JS_MSG, "prod_node.txt");
    expect(&c, 1, 2, 1, "total (src/cart.js)");
    assert_string_equal(c.fingerprint, p.fingerprint);

    /* hyperlinks (OSC 8), cursor moves, a lone ESC and a cut sequence */
    const char *log =
        "\x1b[2K\x1b[1G\x1b]8;;file:///w/src/cart.js\x1b\\link\x1b]8;;\x07 \x1b\n"
        "\x1b[31mTypeError: Cannot read properties of undefined (reading "
        "'reduce')\x1b[0m\n"
        "    at \x1b[36mtotal\x1b[39m (\x1b]8;;file:///w/src/cart.js\x07src/cart.js:4:21"
        "\x1b]8;;\x07)\n\x1b[";
    proof_result r = check_text(log, strlen(log), "TypeError", JS_MSG,
                                "    at total (/srv/app/src/cart.js:4:21)\n");
    expect(&r, 1, 1, 1, "total (src/cart.js)");
}

/* ---------------------------------------------------------------- hostile logs */

static void test_empty_and_null(void **state)
{
    (void)state;
    proof_result r = check_text("", 0, "ZeroDivisionError", PY_DIV, NULL);
    expect(&r, 0, 0, 0, "no failure (exception) found in the test output");
    proof_target t = {"ZeroDivisionError", PY_DIV, NULL};
    assert_int_equal(proof_check(&r, NULL, 100, &t, g_files, NULL, NULL), 0);
    expect(&r, 0, 0, 0, "no failure");
    assert_int_equal(proof_check(&r, "x", 1, NULL, g_files, NULL, NULL), 0);
    assert_int_equal(r.reproduced, 0);
    assert_detail_clean(&r);
    assert_int_equal(proof_check(NULL, "x", 1, &t, g_files, NULL, NULL), -1);
    /* an empty target: no type, message or stack */
    proof_target none = {NULL, NULL, NULL};
    r = check("py_unittest.log", NULL, NULL, NULL);
    (void)none;
    expect(&r, 0, 2, 0, "another message");
}

/* 20 MB of junk shaped like every format, with one real failure at the
 * head or at the tail: only the last PROOF_SCAN_BYTES are read, so the
 * head's failure is never seen and the failures found are bounded by
 * what fits in those bytes (a count, not a clock). */
static void test_huge_junk(void **state)
{
    (void)state;
    static const char *const junk[] = {
        "TypeError: Cannot read properties of undefined (reading 'x')\n",
        "    at total (/tmp/w/src/cart.js:4:21)\n",
        "** (ArithmeticError) bad argument in arithmetic expression\n",
        "       (shop 0.1.0) lib/shop/pricing.ex:7: Shop.Pricing.average/1\n",
        "Traceback (most recent call last):\n",
        "  File \"/w/src/calc.py\", line 6, in average\n",
        "ZeroDivisionError: float division by zero\n",
        "=================================== FAILURES ===================================\n",
        "E       KeyError: 'x'\n",
        "src/calc.py:6: in average\n",
        "Caused by: java.lang.IllegalStateException: x\n",
        "\tat shop.Pricing.average(Pricing.java:14)\n",
        "\xff\xfe garbage \x01\x02 line\n",
        "Received:\n",
        "\x1b[31mcoloured\x1b[0m \x1b]8;;x\x07line\n",
    };
    size_t nj = sizeof(junk) / sizeof(*junk), block = 0;
    for (size_t k = 0; k < nj; k++)
        block += strlen(junk[k]);
    size_t real_len;
    char *real = section("mocha.log", "1) cart", "2) cart", &real_len);
    size_t total = 20u << 20;
    char *log = malloc(total + real_len + 1);
    assert_non_null(log);

    for (int tail = 0; tail <= 1; tail++) {
        size_t o = 0;
        if (!tail) {
            memcpy(log, real, real_len);
            o = real_len;
        }
        for (size_t k = 0; o + block < total; k++) {
            size_t n = strlen(junk[k % nj]);
            memcpy(log + o, junk[k % nj], n);
            o += n;
        }
        if (tail) {
            memcpy(log + o, real, real_len);
            o += real_len;
        }
        proof_target t = {"TypeError", JS_MSG, "    at total (/srv/app/src/cart.js:4:21)\n"};
        proof_result r;
        assert_int_equal(proof_check(&r, log, o, &t, g_files, proof_is_test_path, NULL), 0);
        assert_detail_clean(&r);
        assert_int_equal(r.reproduced, tail);
        /* at most 6 failures a block (JS, ExUnit, Python, pytest's E and
         * its frame, Java) in the last PROOF_SCAN_BYTES, plus the real one */
        size_t bound = (PROOF_SCAN_BYTES / block + 2) * 6 + 1;
        if (r.failures > bound || r.failures < PROOF_MAX_FAILURES)
            print_error("%zu failures (bound %zu): %s\n", r.failures, bound, r.detail);
        assert_true(r.failures <= bound);
        assert_true(r.failures > PROOF_MAX_FAILURES);
    }
    free(log);
    free(real);
}

/* Past PROOF_MAX_FAILURES failures with the target's type and message,
 * failures are counted, not compared. */
static void test_failure_cap(void **state)
{
    (void)state;
    char *stack = load("prod_node.txt", NULL);
    size_t len;
    char *real = section("mocha.log", "1) cart", "2) cart", &len);
    for (int within = 0; within <= 1; within++) {
        sh_buf b;
        sh_buf_init(&b);
        /* other types and messages cost no frame comparison */
        for (int k = 0; k < 1000; k++)
            sh_buf_appendf(
                &b, "RangeError: Invalid array length %d\n    at grow (/w/src/cart.js:9:3)\n", k);
        /* the right type and message from library code do */
        int n = within ? PROOF_MAX_FAILURES - 1 : PROOF_MAX_FAILURES;
        for (int k = 0; k < n; k++)
            sh_buf_appendf(&b, "TypeError: %s\n    at reduce (/w/node_modules/x/index.js:%d:3)\n",
                           JS_MSG, k + 1);
        sh_buf_append(&b, real, len);
        proof_result r = check_text(b.data, b.len, "TypeError", JS_MSG, stack);
        if (within)
            expect(&r, 1, 1000 + (size_t)n + 1, 1, NULL);
        else
            expect(&r, 0, 1000 + (size_t)n + 1, 0, "no production frame in its stack");
        sh_buf_free(&b);
    }
    free(real);
    free(stack);
}

static void test_nul_and_invalid_utf8(void **state)
{
    (void)state;
    size_t len;
    char *real = section("exunit.log", "1) test average of nothing", "2) test", &len);
    static const char junk[] =
        "\0\0\0\n** (ArithmeticError) bad \xff\xfe\0argument\n"
        "     stacktrace:\n"
        "       (shop 0.1.0) lib/shop/pricing.ex:7: Shop.Pricing.average/1\0\n"
        "\xc3\x28\xe2\x82 TypeError: \x80\x80\n"
        "** (ArithmeticError) \xe2\x80\xae\x1b[31mbad argument\xf0\x9f\n"
        "\0";
    char *stack = load("prod_elixir.txt", NULL);
    sh_buf b;
    sh_buf_init(&b);
    sh_buf_append(&b, junk, sizeof(junk) - 1);
    proof_result r = check_text(b.data, b.len, "ArithmeticError", EX_ARITH, stack);
    assert_int_equal(r.reproduced, 0);
    assert_int_equal(r.failures, 2);
    /* the real failure after it is found */
    sh_buf_append(&b, real, len);
    sh_buf_append(&b, junk, sizeof(junk) - 1);
    r = check_text(b.data, b.len, "ArithmeticError", EX_ARITH, stack);
    expect(&r, 1, 5, 1, NULL);
    free(stack);
    /* and a target with the same bytes does not crash either */
    r = check_text(b.data, b.len,
                   "Arithmetic\xff"
                   "Error",
                   "bad \xff\xfe"
                   " argument\x01",
                   b.data);
    assert_int_equal(r.reproduced, 0);
    sh_buf_free(&b);
    free(real);

    /* one line of 1 MiB, no newline */
    char *line = malloc(1u << 20);
    assert_non_null(line);
    memset(line, 'a', 1u << 20);
    memcpy(line, "TypeError: ", 11);
    r = check_text(line, 1u << 20, "TypeError", JS_MSG, NULL);
    expect(&r, 0, 1, 0, "another message");
    free(line);
}

static void test_is_test_path(void **state)
{
    (void)state;
    static const char *const yes[] = {"test/shop/pricing_test.exs",
                                      "test/support/fixtures.ex",
                                      "tests/test_calc.py",
                                      "tests/helpers.py",
                                      "src/test/java/shop/X.java",
                                      "assets/js/cart.test.js",
                                      "__tests__/cart.js",
                                      "spec/models/user_spec.rb",
                                      "lib/foo_test.go",
                                      NULL};
    static const char *const no[] = {"lib/shop/pricing.ex",
                                     "src/calc.py",
                                     "src/main/java/shop/Pricing.java",
                                     "test",
                                     "lib/testing/x.ex",
                                     "latest/x.py",
                                     NULL};
    for (size_t k = 0; yes[k] != NULL; k++)
        assert_int_equal(proof_is_test_path(NULL, yes[k]), 1);
    for (size_t k = 0; no[k] != NULL; k++)
        assert_int_equal(proof_is_test_path(NULL, no[k]), 0);
    assert_int_equal(proof_is_test_path(NULL, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_unittest),
        cmocka_unit_test(test_python_chained),
        cmocka_unit_test(test_python_not_reproduced),
        cmocka_unit_test(test_pytest_line),
        cmocka_unit_test(test_exunit),
        cmocka_unit_test(test_exunit_not_reproduced),
        cmocka_unit_test(test_javascript),
        cmocka_unit_test(test_java),
        cmocka_unit_test(test_plain_line),
        cmocka_unit_test(test_without_resolver),
        cmocka_unit_test(test_colour),
        cmocka_unit_test(test_empty_and_null),
        cmocka_unit_test(test_huge_junk),
        cmocka_unit_test(test_failure_cap),
        cmocka_unit_test(test_nul_and_invalid_utf8),
        cmocka_unit_test(test_is_test_path),
    };
    return cmocka_run_group_tests(tests, setup_repo, teardown_repo);
}
