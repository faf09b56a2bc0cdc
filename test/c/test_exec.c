/* Running configured commands: argv templates (placeholders inside
 * arguments, hostile values staying one argument), the allow-listed
 * environment, exit codes, timeouts and output caps killing the whole
 * group, the stopping flag, and reading the tail of an output file. The
 * scripts given to sh are fixed test text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"
#include "proc.h"
#include "test_procs.h"

static char dir[] = "/tmp/self_heal_test_exec_XXXXXX";

static void path_in_dir(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

static pid_t read_pid_file(const char *file)
{
    FILE *f = fopen(file, "r");
    int pid = 0;
    if (f == NULL)
        return -1;
    int got = fscanf(f, "%d", &pid);
    fclose(f);
    return got == 1 && pid > 0 ? (pid_t)pid : -1;
}

/* The whole file, malloc'ed and NUL-terminated (the caller frees). */
static char *slurp(const char *file)
{
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static long long file_size(const char *file)
{
    struct stat st;
    return stat(file, &st) == 0 ? (long long)st.st_size : -1;
}

static size_t argv_len(char **argv)
{
    size_t n = 0;
    while (argv[n] != NULL)
        n++;
    return n;
}

/* Runs argv with the environment envp, stdout to out_file. */
static exec_result run(char *const *argv, char *const *envp, const char *out_file, int timeout_ms)
{
    exec_spec spec = {
        .argv = argv, .envp = envp, .stdout_path = out_file, .timeout_ms = timeout_ms};
    exec_result r;
    char err[256] = "";
    if (exec_run(&r, &spec, err, sizeof(err)) != 0)
        fail_msg("exec_run %s: %s", argv[0], err);
    return r;
}

/* ---------------------------------------------------------------- expand */

static void test_expand_placeholders(void **state)
{
    (void)state;
    json_t *tmpl = json_pack("[ssssssssss]", "agent", "--message-file={prompt_file}",
                             "{worktree}/x{worktree}", "{unknown}", "{ } {", "{{prompt_file}}",
                             "{}", "[{empty}]", "a{prompt_file", "{value}");
    const char *keys[] = {"prompt_file", "worktree", "empty", "value"};
    const char *vals[] = {"/tmp/p.md", "/w", NULL, "{prompt_file} {worktree}"};
    char err[128] = "";
    char **argv = exec_expand(tmpl, keys, vals, 4, err, sizeof(err));
    assert_non_null(argv);
    assert_int_equal(argv_len(argv), 10);
    assert_string_equal(argv[0], "agent");
    assert_string_equal(argv[1], "--message-file=/tmp/p.md");
    assert_string_equal(argv[2], "/w/x/w");
    assert_string_equal(argv[3], "{unknown}");
    assert_string_equal(argv[4], "{ } {");
    assert_string_equal(argv[5], "{/tmp/p.md}");
    assert_string_equal(argv[6], "{}");
    assert_string_equal(argv[7], "[]"); /* a NULL value is empty */
    assert_string_equal(argv[8], "a{prompt_file");
    /* Substituted text is never expanded again. */
    assert_string_equal(argv[9], "{prompt_file} {worktree}");
    exec_argv_free(argv);

    /* No keys at all: everything stays. */
    argv = exec_expand(tmpl, NULL, NULL, 3, err, sizeof(err));
    assert_non_null(argv);
    assert_string_equal(argv[1], "--message-file={prompt_file}");
    exec_argv_free(argv);
    json_decref(tmpl);
}

/* A value with spaces, quotes, a command substitution, a pipe and a
 * newline reaches the program as one argument, byte for byte, and nothing
 * in it runs. */
static void test_hostile_value_is_one_argument(void **state)
{
    (void)state;
    char marker[256], out[256], value[1024];
    path_in_dir(marker, sizeof(marker), "pwned");
    path_in_dir(out, sizeof(out), "hostile.txt");
    unlink(marker);
    snprintf(value, sizeof(value),
             "it's \"quoted\" $(touch %s) `touch %s`; touch %s | rm -rf / && echo 'x'\n$HOME *",
             marker, marker, marker);
    json_t *tmpl = json_pack("[sss]", "printf", "[%s]\\n", "--msg={message}");
    assert_non_null(tmpl);
    const char *keys[] = {"message"};
    const char *vals[] = {value};
    char err[128] = "";
    char **argv = exec_expand(tmpl, keys, vals, 1, err, sizeof(err));
    assert_non_null(argv);
    assert_int_equal(argv_len(argv), 3);
    char **env = exec_env(NULL, NULL, NULL, 0);
    assert_non_null(env);
    exec_result r = run(argv, env, out, 5000);
    assert_true(exec_ok(&r));
    char expected[1200];
    snprintf(expected, sizeof(expected), "[--msg=%s]\n", value);
    char *got = slurp(out);
    assert_string_equal(got, expected);
    free(got);
    assert_int_equal(access(marker, F_OK), -1);
    exec_argv_free(env);
    exec_argv_free(argv);
    json_decref(tmpl);
}

static void expect_bad(json_t *tmpl, const char *const *keys, const char *const *vals, size_t n,
                       const char *why)
{
    char err[128] = "";
    char **argv = exec_expand(tmpl, keys, vals, n, err, sizeof(err));
    if (argv != NULL)
        fail_msg("template accepted, expected: %s", why);
    if (strstr(err, why) == NULL)
        fail_msg("error \"%s\" does not say \"%s\"", err, why);
    json_decref(tmpl);
}

static void test_expand_bad_templates(void **state)
{
    (void)state;
    expect_bad(NULL, NULL, NULL, 0, "not an array");
    expect_bad(json_string("sh -c x"), NULL, NULL, 0, "not an array");
    expect_bad(json_array(), NULL, NULL, 0, "0 arguments");
    expect_bad(json_pack("[si]", "x", 1), NULL, NULL, 0, "not a string");
    expect_bad(json_pack("[sn]", "x"), NULL, NULL, 0, "not a string");
    expect_bad(json_pack("[s]", ""), NULL, NULL, 0, "empty program");
    json_t *nul = json_array();
    json_array_append_new(nul, json_stringn("a\0b", 3));
    expect_bad(nul, NULL, NULL, 0, "NUL");

    /* EXEC_MAX_ARGS arguments pass, one more fails. */
    json_t *many = json_array();
    for (int i = 0; i < EXEC_MAX_ARGS; i++)
        json_array_append_new(many, json_string("a"));
    char err[128] = "";
    char **argv = exec_expand(many, NULL, NULL, 0, err, sizeof(err));
    assert_non_null(argv);
    assert_int_equal(argv_len(argv), EXEC_MAX_ARGS);
    exec_argv_free(argv);
    json_array_append_new(many, json_string("a"));
    expect_bad(many, NULL, NULL, 0, "129 arguments");

    /* EXEC_MAX_ARG_BYTES bytes pass, one more fails, before and after
     * expansion. */
    static char big[EXEC_MAX_ARG_BYTES + 2];
    memset(big, 'b', EXEC_MAX_ARG_BYTES);
    big[EXEC_MAX_ARG_BYTES] = '\0';
    json_t *t = json_pack("[ss]", "x", big);
    argv = exec_expand(t, NULL, NULL, 0, err, sizeof(err));
    assert_non_null(argv);
    assert_int_equal(strlen(argv[1]), EXEC_MAX_ARG_BYTES);
    exec_argv_free(argv);
    json_decref(t);
    big[EXEC_MAX_ARG_BYTES] = 'b';
    big[EXEC_MAX_ARG_BYTES + 1] = '\0';
    expect_bad(json_pack("[ss]", "x", big), NULL, NULL, 0, "over 8192 bytes");

    const char *keys[] = {"v"};
    const char *fits[] = {"12345678"};
    const char *too_long[] = {"123456789"};
    memset(big, 'b', sizeof(big));
    memcpy(big + EXEC_MAX_ARG_BYTES - 8, "{v}", 4); /* 8184 bytes, then the placeholder */
    t = json_pack("[ss]", "x", big);
    argv = exec_expand(t, keys, fits, 1, err, sizeof(err));
    assert_non_null(argv);
    assert_int_equal(strlen(argv[1]), EXEC_MAX_ARG_BYTES); /* 8184 + 8 */
    exec_argv_free(argv);
    json_decref(t);
    expect_bad(json_pack("[ss]", "x", big), keys, too_long, 1, "once expanded"); /* 8193 */
}

/* ---------------------------------------------------------------- environment */

/* The value of name in the env output (first line), count of its lines. */
static int env_lines(const char *text, const char *name, const char **value)
{
    size_t n = strlen(name);
    int count = 0;
    *value = NULL;
    for (const char *line = text; *line != '\0';) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, name, n) == 0 && line[n] == '=') {
            if (count++ == 0)
                *value = line + n + 1;
        }
        if (nl == NULL)
            break;
        line = nl + 1;
    }
    return count;
}

static int env_has(const char *text, const char *name, const char *value)
{
    const char *v;
    if (env_lines(text, name, &v) != 1)
        return 0;
    size_t len = strlen(value);
    return strncmp(v, value, len) == 0 && (v[len] == '\n' || v[len] == '\0');
}

static int env_absent(const char *text, const char *name)
{
    const char *v;
    return env_lines(text, name, &v) == 0;
}

static char *env_of_child(char *const *envp)
{
    char out[256];
    path_in_dir(out, sizeof(out), "env.txt");
    char *argv[] = {"/usr/bin/env", NULL};
    exec_result r = run(argv, envp, out, 5000);
    assert_true(exec_ok(&r));
    return slurp(out);
}

static void test_env(void **state)
{
    (void)state;
    setenv("SELF_HEAL_TEST_TOKEN", "tok-1", 1);
    setenv("self_heal_test_password", "pw", 1);
    setenv("GITHUB_SELF_HEAL_X", "gh", 1);
    setenv("SELF_HEAL_API_KEY", "the-key", 1);
    setenv("SELF_HEAL_HARMLESS", "harmless", 1);
    setenv("SELF_HEAL_NOT_ALLOWED", "x", 1);
    setenv("HOME", "/home/self-heal-test", 1);
    json_t *allow = json_pack("[sssssssisss]", "SELF_HEAL_TEST_TOKEN", "self_heal_test_password",
                              "GITHUB_SELF_HEAL_X", "SELF_HEAL_API_KEY", "SELF_HEAL_HARMLESS",
                              "SELF_HEAL_HARMLESS", "SELF_HEAL_UNSET", 7, "BAD=NAME", "",
                              "SELF_HEAL_NOT ALLOWED");
    assert_non_null(allow);

    /* No key granted: every secret-looking name is dropped. */
    char **env = exec_env(allow, NULL, NULL, 0);
    assert_non_null(env);
    char *text = env_of_child(env);
    assert_true(env_has(text, "PATH", getenv("PATH")));
    assert_true(env_has(text, "HOME", "/home/self-heal-test"));
    assert_true(env_has(text, "SELF_HEAL_HARMLESS", "harmless")); /* listed twice, passed once */
    assert_true(env_absent(text, "SELF_HEAL_TEST_TOKEN"));
    assert_true(env_absent(text, "self_heal_test_password"));
    assert_true(env_absent(text, "GITHUB_SELF_HEAL_X"));
    assert_true(env_absent(text, "SELF_HEAL_API_KEY"));
    assert_true(env_absent(text, "SELF_HEAL_NOT_ALLOWED"));
    assert_true(env_absent(text, "SELF_HEAL_UNSET"));
    assert_null(strstr(text, "tok-1"));
    free(text);
    exec_argv_free(env);

    /* The granted key passes, and only it; extra overrides, never doubles. */
    const char *extra[] = {"SELF_HEAL_HARMLESS=override",
                           "PATH=/usr/bin:/bin",
                           "SELF_HEAL_EXTRA=a=b",
                           "no-equals",
                           "=x",
                           NULL,
                           "SELF_HEAL_EXTRA=last"};
    env = exec_env(allow, "SELF_HEAL_API_KEY", extra, 7);
    assert_non_null(env);
    text = env_of_child(env);
    assert_true(env_has(text, "SELF_HEAL_API_KEY", "the-key"));
    assert_true(env_absent(text, "SELF_HEAL_TEST_TOKEN"));
    assert_true(env_absent(text, "GITHUB_SELF_HEAL_X"));
    assert_true(env_has(text, "SELF_HEAL_HARMLESS", "override"));
    assert_true(env_has(text, "PATH", "/usr/bin:/bin"));
    assert_true(env_has(text, "SELF_HEAL_EXTRA", "last"));
    assert_null(strstr(text, "no-equals"));
    free(text);
    /* No name twice in the vector itself. */
    for (size_t i = 0; env[i] != NULL; i++) {
        size_t n = (size_t)(strchr(env[i], '=') - env[i]);
        for (size_t j = i + 1; env[j] != NULL; j++)
            assert_false(strncmp(env[i], env[j], n) == 0 && env[j][n] == '=');
    }
    exec_argv_free(env);

    /* A run without an environment gets the base names, not the port's. */
    char out[256];
    path_in_dir(out, sizeof(out), "env.txt");
    char *argv[] = {"/usr/bin/env", NULL};
    exec_result r = run(argv, NULL, out, 5000);
    assert_true(exec_ok(&r));
    text = slurp(out);
    assert_true(env_has(text, "PATH", getenv("PATH")));
    assert_true(env_absent(text, "SELF_HEAL_HARMLESS"));
    assert_true(env_absent(text, "SELF_HEAL_TEST_TOKEN"));
    free(text);

    json_decref(allow);
    const char *names[] = {"SELF_HEAL_TEST_TOKEN", "self_heal_test_password",
                           "GITHUB_SELF_HEAL_X",   "SELF_HEAL_API_KEY",
                           "SELF_HEAL_HARMLESS",   "SELF_HEAL_NOT_ALLOWED"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unsetenv(names[i]);
}

/* ---------------------------------------------------------------- running */

static void test_run_exit_codes(void **state)
{
    (void)state;
    char out[256], err_file[256], desc[128];
    path_in_dir(out, sizeof(out), "run.out");
    path_in_dir(err_file, sizeof(err_file), "run.err");
    char **env = exec_env(NULL, NULL, NULL, 0);
    assert_non_null(env);

    char *ok[] = {"sh", "-c", "pwd; echo err >&2", NULL};
    exec_spec spec = {.argv = ok,
                      .envp = env,
                      .cwd = dir,
                      .stdout_path = out,
                      .stderr_path = err_file,
                      .timeout_ms = 5000};
    exec_result r;
    char err[256] = "";
    assert_int_equal(exec_run(&r, &spec, err, sizeof(err)), 0);
    assert_true(exec_ok(&r));
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(r.signal, 0);
    assert_false(r.timed_out || r.overflowed || r.stopped);
    exec_describe(&r, desc, sizeof(desc));
    assert_string_equal(desc, "exit 0");
    char expected[300];
    snprintf(expected, sizeof(expected), "%s\n", dir);
    char *text = slurp(out);
    assert_string_equal(text, expected);
    free(text);
    text = slurp(err_file);
    assert_string_equal(text, "err\n");
    free(text);

    char *fails[] = {"sh", "-c", "exit 3", NULL};
    r = run(fails, env, NULL, 5000);
    assert_false(exec_ok(&r));
    assert_int_equal(r.exit_code, 3);
    exec_describe(&r, desc, sizeof(desc));
    assert_string_equal(desc, "exit 3");

    char *killed[] = {"sh", "-c", "kill -9 $$", NULL};
    r = run(killed, env, NULL, 5000);
    assert_false(exec_ok(&r));
    assert_int_equal(r.exit_code, -1);
    assert_int_equal(r.signal, SIGKILL);
    exec_describe(&r, desc, sizeof(desc));
    assert_string_equal(desc, "killed by signal 9");

    char *missing[] = {"self-heal-no-such-program", NULL};
    spec = (exec_spec){.argv = missing, .envp = env};
    assert_int_equal(exec_run(&r, &spec, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not found"));
    spec.argv = NULL;
    assert_int_equal(exec_run(&r, &spec, err, sizeof(err)), -1);
    assert_int_equal(proc_live_count(), 0);
    exec_argv_free(env);
}

/* The timeout kills the group: the shell and the sleep it left in the
 * background are both gone when exec_run returns (or a moment later for
 * the kernel to finish the SIGKILL). */
static void test_timeout_kills_group(void **state)
{
    (void)state;
    char pid_file[256], desc[128];
    path_in_dir(pid_file, sizeof(pid_file), "grandchild.pid");
    unlink(pid_file);
    char *argv[] = {"sh", "-c", "sleep 30 & echo $! > \"$1\"; sleep 30", "sh", pid_file, NULL};
    char **env = exec_env(NULL, NULL, NULL, 0);
    long long t0 = now_ms();
    exec_result r = run(argv, env, NULL, 300);
    long long took = now_ms() - t0;
    assert_true(r.timed_out);
    assert_false(r.overflowed || r.stopped);
    assert_false(exec_ok(&r));
    assert_int_equal(r.signal, SIGTERM);
    assert_true(r.elapsed_ms >= 300 && took < 2000);
    exec_describe(&r, desc, sizeof(desc));
    assert_string_equal(desc, "timed out after 0.300 s");
    pid_t grandchild = read_pid_file(pid_file);
    assert_true(grandchild > 0);
    assert_true(wait_gone(grandchild, 2000));
    assert_int_equal(proc_live_count(), 0);
    exec_argv_free(env);
}

/* A group that ignores SIGTERM gets SIGKILL after the grace period. */
static void test_timeout_escalates_to_sigkill(void **state)
{
    (void)state;
    char pid_file[256];
    path_in_dir(pid_file, sizeof(pid_file), "stubborn.pid");
    unlink(pid_file);
    char *argv[] = {"sh", "-c",     "trap '' TERM; sleep 30 & echo $! > \"$1\"; wait",
                    "sh", pid_file, NULL};
    char **env = exec_env(NULL, NULL, NULL, 0);
    exec_result r = run(argv, env, NULL, 200);
    assert_true(r.timed_out);
    assert_int_equal(r.signal, SIGKILL);
    assert_true(r.elapsed_ms >= 2200 && r.elapsed_ms < 5000);
    pid_t grandchild = read_pid_file(pid_file);
    assert_true(grandchild > 0);
    assert_true(wait_gone(grandchild, 2000));
    assert_int_equal(proc_live_count(), 0);
    exec_argv_free(env);
}

static void test_output_overflow(void **state)
{
    (void)state;
    char out[256], err_file[256], desc[128], err[256];
    path_in_dir(out, sizeof(out), "yes.out");
    path_in_dir(err_file, sizeof(err_file), "yes.err");
    char **env = exec_env(NULL, NULL, NULL, 0);
    char *yes[] = {"yes", NULL};
    exec_spec spec = {
        .argv = yes, .envp = env, .stdout_path = out, .max_output = 64 * 1024, .timeout_ms = 20000};
    exec_result r;
    assert_int_equal(exec_run(&r, &spec, err, sizeof(err)), 0);
    assert_true(r.overflowed);
    assert_false(r.timed_out || r.stopped);
    assert_false(exec_ok(&r));
    assert_true(r.elapsed_ms < 5000);
    assert_int_equal(file_size(out), 64 * 1024); /* cut back to the cap */
    exec_describe(&r, desc, sizeof(desc));
    assert_string_equal(desc, "output over 65536 bytes");

    /* stderr counts too, in its own file. */
    char *yes_err[] = {"sh", "-c", "yes >&2", NULL};
    spec.argv = yes_err;
    spec.stderr_path = err_file;
    assert_int_equal(exec_run(&r, &spec, err, sizeof(err)), 0);
    assert_true(r.overflowed);
    assert_int_equal(file_size(out), 0);
    assert_int_equal(file_size(err_file), 64 * 1024);

    /* Output under the cap is not an overflow. */
    char *small[] = {"sh", "-c", "head -c 60000 /dev/zero", NULL};
    spec.argv = small;
    assert_int_equal(exec_run(&r, &spec, err, sizeof(err)), 0);
    assert_true(exec_ok(&r));
    assert_int_equal(file_size(out), 60000);
    assert_int_equal(proc_live_count(), 0);
    exec_argv_free(env);
}

static atomic_int stop_flag;

static void *set_stop_later(void *arg)
{
    (void)arg;
    nap_ms(200);
    stop_flag = 1;
    return NULL;
}

static void test_stopping(void **state)
{
    (void)state;
    char desc[128], err[256] = "";
    char **env = exec_env(NULL, NULL, NULL, 0);
    char *argv[] = {"sleep", "30", NULL};
    exec_spec spec = {.argv = argv, .envp = env, .stopping = &stop_flag, .timeout_ms = 20000};
    exec_result r;
    stop_flag = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, set_stop_later, NULL), 0);
    assert_int_equal(exec_run(&r, &spec, err, sizeof(err)), 0);
    pthread_join(t, NULL);
    assert_true(r.stopped);
    assert_false(r.timed_out || r.overflowed);
    assert_true(r.elapsed_ms >= 200 && r.elapsed_ms < 2000);
    assert_int_equal(r.signal, SIGTERM);
    exec_describe(&r, desc, sizeof(desc));
    assert_string_equal(desc, "stopped");

    /* Already stopping: nothing starts. */
    assert_int_equal(exec_run(&r, &spec, err, sizeof(err)), -1);
    assert_string_equal(err, "stopping");
    assert_int_equal(proc_live_count(), 0);
    stop_flag = 0;
    exec_argv_free(env);
}

/* ---------------------------------------------------------------- tail */

static void write_file(const char *file, const void *bytes, size_t len)
{
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

static void expect_tail(const char *file, size_t max, const char *expected)
{
    char *t = exec_tail(file, max);
    assert_non_null(t);
    assert_string_equal(t, expected);
    free(t);
}

static void test_tail(void **state)
{
    (void)state;
    char file[256];
    path_in_dir(file, sizeof(file), "tail.txt");
    write_file(file, "hello world", 11);
    expect_tail(file, 5, "world");
    expect_tail(file, 11, "hello world");
    expect_tail(file, 1000, "hello world");
    expect_tail(file, SIZE_MAX, "hello world");
    expect_tail(file, 0, "");
    expect_tail(dir, 10, "");
    expect_tail(NULL, 10, "");
    char missing[256];
    path_in_dir(missing, sizeof(missing), "missing.txt");
    expect_tail(missing, 10, "");

    /* A cut inside a UTF-8 sequence drops the partial character. */
    write_file(file, "a\xc3\xa9z", 4);
    expect_tail(file, 2, "z");
    expect_tail(file, 3, "\xc3\xa9z");

    /* NUL bytes do not end the string (what follows them is not hidden). */
    write_file(file, "ab\0\0cd\0", 7);
    expect_tail(file, 100, "ab??cd?");

    /* A big file: only the end is read. */
    size_t big = 1 << 20;
    char *bytes = malloc(big);
    assert_non_null(bytes);
    memset(bytes, 'x', big);
    memcpy(bytes + big - 4, "END\n", 4);
    write_file(file, bytes, big);
    free(bytes);
    char *t = exec_tail(file, 100);
    assert_non_null(t);
    assert_int_equal(strlen(t), 100);
    assert_string_equal(t + 96, "END\n");
    free(t);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char file[512];
        snprintf(file, sizeof(file), "%s/%s", dir, e->d_name);
        unlink(file);
    }
    closedir(d);
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expand_placeholders),
        cmocka_unit_test(test_hostile_value_is_one_argument),
        cmocka_unit_test(test_expand_bad_templates),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_run_exit_codes),
        cmocka_unit_test(test_timeout_kills_group),
        cmocka_unit_test(test_timeout_escalates_to_sigkill),
        cmocka_unit_test(test_output_overflow),
        cmocka_unit_test(test_stopping),
        cmocka_unit_test(test_tail),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
