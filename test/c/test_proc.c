/* Child processes: own process group, group kills reaching grandchildren,
 * waiting with a timeout, outputs, environment, descriptors (and passed
 * ones), resource limits, the identity drop, and the parent-death signal.
 * Processes that leave their group or session: the process tree, the
 * subreaper's kills and reaping (which never takes a registered child's
 * status), the watchdog, the run marker. The scripts given to sh are fixed
 * test text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"
#include "ptree.h"
#include "test_procs.h"
#include "watchdog.h"

static char dir[] = "/tmp/self_heal_test_proc_XXXXXX";

static void path_in_dir(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* Reads a pid the script wrote to file, waiting for it to appear. */
static pid_t read_pid_file(const char *file)
{
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(file, "r");
        if (f != NULL) {
            int pid = 0;
            int got = fscanf(f, "%d", &pid);
            fclose(f);
            if (got == 1 && pid > 0)
                return (pid_t)pid;
        }
        nap_ms(10);
    }
    return -1;
}

static char *slurp(const char *file)
{
    static char buf[4096];
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static pid_t spawn_ok(const char *const *argv, const char *out, const char *err_path)
{
    proc_spec spec = {.argv = argv, .stdout_path = out, .stderr_path = err_path};
    char err[256] = "";
    pid_t pid = 0;
    int rc = proc_spawn(&pid, &spec, err, sizeof(err));
    if (rc != 0)
        fail_msg("spawn %s: %s", argv[0], err);
    return pid;
}

static void test_own_process_group(void **state)
{
    (void)state;
    const char *argv[] = {"sleep", "30", NULL};
    pid_t pid = spawn_ok(argv, NULL, NULL);
    assert_int_equal(getpgid(pid), pid);
    assert_int_not_equal(getpgid(pid), getpgrp());
    assert_int_equal(proc_live_count(), 1);
    assert_int_equal(proc_kill(pid, SIGTERM), 0);
    int status = 0;
    assert_int_equal(proc_wait(&status, pid, 2000), 0);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGTERM);
    assert_int_equal(proc_live_count(), 0);
    assert_int_equal(proc_wait(&status, pid, 0), -1); /* no longer registered */
    assert_int_equal(proc_kill(pid, SIGTERM), -1);
}

static void test_kill_all_reaches_grandchildren(void **state)
{
    (void)state;
    char file[256];
    path_in_dir(file, sizeof(file), "grandchild.pid");
    unlink(file);
    /* sh starts a grandchild in the background, records it, and waits. */
    const char *argv[] = {"sh", "-c", "sleep 30 & echo $! > \"$1\"; wait", "sh", file, NULL};
    pid_t pid = spawn_ok(argv, NULL, NULL);
    const char *argv2[] = {"sleep", "30", NULL};
    pid_t other = spawn_ok(argv2, NULL, NULL);
    pid_t grandchild = read_pid_file(file);
    assert_true(grandchild > 0);
    assert_int_equal(getpgid(grandchild), pid);
    assert_int_equal(proc_live_count(), 2);

    proc_kill_all(SIGTERM);
    int status = 0;
    assert_int_equal(proc_wait(&status, pid, 2000), 0);
    assert_int_equal(proc_wait(&status, other, 2000), 0);
    assert_true(wait_gone(grandchild, 2000));
    assert_int_equal(proc_live_count(), 0);
}

/* When a leader exits, what is left of its group is killed. */
static void test_leftovers_killed_when_leader_exits(void **state)
{
    (void)state;
    char file[256];
    path_in_dir(file, sizeof(file), "leftover.pid");
    unlink(file);
    const char *argv[] = {"sh", "-c", "sleep 30 & echo $! > \"$1\"; exit 4", "sh", file, NULL};
    pid_t pid = spawn_ok(argv, NULL, NULL);
    pid_t grandchild = read_pid_file(file);
    assert_true(grandchild > 0);
    int status = 0;
    assert_int_equal(proc_wait(&status, pid, 2000), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 4);
    assert_true(wait_gone(grandchild, 2000));
}

static void test_wait_timeout(void **state)
{
    (void)state;
    const char *argv[] = {"sleep", "30", NULL};
    pid_t pid = spawn_ok(argv, NULL, NULL);
    long long t0 = now_ms();
    assert_int_equal(proc_wait(NULL, pid, 150), 1);
    long long took = now_ms() - t0;
    assert_true(took >= 140 && took < 1000);
    assert_false(process_gone(pid));
    proc_kill(pid, SIGKILL);
    t0 = now_ms();
    assert_int_equal(proc_wait(NULL, pid, 2000), 0);
    assert_true(now_ms() - t0 < 1000);
}

static void test_outputs_and_environment(void **state)
{
    (void)state;
    char out[256], err[256], both[256];
    path_in_dir(out, sizeof(out), "out.txt");
    path_in_dir(err, sizeof(err), "err.txt");
    path_in_dir(both, sizeof(both), "both.txt");
    const char *env[] = {"PATH=/usr/bin:/bin", "SELF_HEAL_PROBE=probe-value", NULL};
    const char *argv[] = {"sh", "-c", "echo \"out:$SELF_HEAL_PROBE:${HOME:-nohome}\"; echo err >&2",
                          NULL};
    proc_spec spec = {.argv = argv, .envp = env, .stdout_path = out, .stderr_path = err};
    char reason[256];
    pid_t pid;
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), 0);
    int status = -1;
    assert_int_equal(proc_wait(&status, pid, 5000), 0);
    assert_int_equal(status, 0);
    assert_string_equal(slurp(out), "out:probe-value:nohome\n");
    assert_string_equal(slurp(err), "err\n");

    spec.stdout_path = both;
    spec.stderr_path = both;
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), 0);
    assert_int_equal(proc_wait(&status, pid, 5000), 0);
    assert_string_equal(slurp(both), "out:probe-value:nohome\nerr\n");
}

/* Only 0, 1 and 2 reach the program, even descriptors without CLOEXEC. */
static void test_no_descriptor_leaks(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0); /* not close-on-exec */
    char out[256];
    path_in_dir(out, sizeof(out), "fds.txt");
    const char *argv[] = {"sh", "-c", "ls /proc/$$/fd", NULL};
    pid_t pid = spawn_ok(argv, out, NULL);
    int status = -1;
    assert_int_equal(proc_wait(&status, pid, 5000), 0);
    assert_int_equal(status, 0);
    assert_string_equal(slurp(out), "0\n1\n2\n");
    close(p[0]);
    close(p[1]);
}

static void test_spawn_errors(void **state)
{
    (void)state;
    char reason[256] = "";
    pid_t pid = 0;
    const char *missing[] = {"self-heal-no-such-program", NULL};
    proc_spec spec = {.argv = missing};
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), -1);
    assert_non_null(strstr(reason, "not found"));

    char file[256];
    path_in_dir(file, sizeof(file), "not-executable");
    FILE *f = fopen(file, "w");
    fputs("#!/bin/sh\n", f);
    fclose(f);
    const char *noexec[] = {file, NULL};
    spec.argv = noexec;
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), -1);
    assert_non_null(strstr(reason, "cannot run"));
    assert_int_equal(proc_live_count(), 0);

    const char *empty[] = {NULL};
    spec.argv = empty;
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), -1);

    const char *argv[] = {"true", NULL};
    spec.argv = argv;
    spec.stdout_path = "/nonexistent-dir/x";
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), -1);
    spec.stdout_path = NULL;

    proc_set_spawn_allowed(0);
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), -1);
    assert_non_null(strstr(reason, "shutting down"));
    proc_set_spawn_allowed(1);
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), 0);
    assert_int_equal(proc_wait(NULL, pid, 5000), 0);
}

/* A process that dies without cleaning up (like the port under kill -9)
 * takes its children with it: PR_SET_PDEATHSIG. */
static void test_children_die_with_their_parent(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t middle = fork();
    assert_true(middle >= 0);
    if (middle == 0) {
        const char *argv[] = {"sleep", "30", NULL};
        proc_spec spec = {.argv = argv};
        char reason[256];
        pid_t pid = 0;
        if (proc_spawn(&pid, &spec, reason, sizeof(reason)) != 0)
            _exit(1);
        ssize_t w = write(p[1], &pid, sizeof(pid));
        (void)w;
        _exit(0); /* no proc_kill_all: the kernel must do it */
    }
    close(p[1]);
    pid_t child = 0;
    assert_int_equal(read(p[0], &child, sizeof(child)), sizeof(child));
    close(p[0]);
    int status = 0;
    assert_int_equal(waitpid(middle, &status, 0), middle);
    assert_true(child > 0);
    assert_true(wait_gone(child, 2000));
}

/* The soft limit on the line of /proc/<pid>/limits named name ("Max cpu
 * time"), as text ("unlimited" or a number). */
static const char *limit_of(const char *limits, const char *name, char out[64])
{
    const char *line = strstr(limits, name);
    assert_non_null(line);
    assert_int_equal(sscanf(line + strlen(name), "%63s", out), 1);
    return out;
}

static void test_limits_take_effect(void **state)
{
    (void)state;
    if (under_valgrind())
        skip();
    char out[256];
    path_in_dir(out, sizeof(out), "limits.txt");
    proc_limits limits = {.set = 1,
                          .cpu_s = 7,
                          .data_bytes = 64LL << 20,
                          .fsize_bytes = 1LL << 20,
                          .nproc = 4000,
                          .nofile = 100,
                          .core_off = 1};
    const char *argv[] = {"cat", "/proc/self/limits", NULL};
    proc_spec spec = {.argv = argv, .stdout_path = out, .limits = &limits};
    char reason[256] = "";
    pid_t pid = 0;
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), 0);
    int status = -1;
    assert_int_equal(proc_wait(&status, pid, 5000), 0);
    assert_int_equal(status, 0);
    const char *text = slurp(out);
    char v[64];
    assert_string_equal(limit_of(text, "Max cpu time", v), "7");
    assert_string_equal(limit_of(text, "Max data size", v), "67108864");
    assert_string_equal(limit_of(text, "Max file size", v), "1048576");
    assert_string_equal(limit_of(text, "Max processes", v), "4000");
    assert_string_equal(limit_of(text, "Max open files", v), "100");
    assert_string_equal(limit_of(text, "Max core file size", v), "0");
    /* Soft and hard alike: the child cannot raise them again. */
    const char *cpu = strstr(text, "Max cpu time");
    char soft[64], hard[64];
    assert_int_equal(sscanf(cpu + strlen("Max cpu time"), "%63s %63s", soft, hard), 2);
    assert_string_equal(hard, "7");
}

/* Writing past RLIMIT_FSIZE ends the writer with SIGXFSZ; the file stops
 * at the limit. */
static void test_file_size_limit_signal(void **state)
{
    (void)state;
    char big[256];
    path_in_dir(big, sizeof(big), "big.bin");
    proc_limits limits = {.set = 1, .fsize_bytes = 4096};
    const char *argv[] = {"head", "-c", "100000", "/dev/zero", NULL};
    proc_spec spec = {.argv = argv, .stdout_path = big, .limits = &limits};
    char reason[256] = "";
    pid_t pid = 0;
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), 0);
    int status = 0;
    assert_int_equal(proc_wait(&status, pid, 5000), 0);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGXFSZ);
    struct stat st;
    assert_int_equal(stat(big, &st), 0);
    assert_int_equal(st.st_size, 4096);
}

static int open_with(const char *file, const char *text)
{
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    int low = open(file, O_RDONLY | O_CLOEXEC);
    assert_true(low >= 0);
    int fd = fcntl(low, F_DUPFD_CLOEXEC, 60); /* away from 3 and 4 */
    close(low);
    assert_true(fd >= 60);
    return fd;
}

/* What the test process has on a descriptor, to put it back afterwards. */
typedef struct saved_fd {
    int fd, copy, flags;
} saved_fd;

static saved_fd save_fd(int fd)
{
    saved_fd s = {fd, fcntl(fd, F_DUPFD_CLOEXEC, 40), fcntl(fd, F_GETFD)};
    return s;
}

static void restore_fd(saved_fd s)
{
    if (s.copy < 0) {
        close(s.fd);
        return;
    }
    dup2(s.copy, s.fd);
    fcntl(s.fd, F_SETFD, s.flags);
    close(s.copy);
}

/* Passed descriptors arrive at 3, 4, ... in order, whatever their numbers
 * in the parent (here each sits on the other's target), and nothing else
 * leaks. */
static void test_pass_fds(void **state)
{
    (void)state;
    char a[256], b[256], out[256];
    path_in_dir(a, sizeof(a), "pass-a.txt");
    path_in_dir(b, sizeof(b), "pass-b.txt");
    path_in_dir(out, sizeof(out), "pass-out.txt");
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int leak = fcntl(null_fd, F_DUPFD, 50); /* not close-on-exec, not passed */
    assert_true(leak >= 50);
    close(null_fd);
    int fa = open_with(a, "AAA\n");
    int fb = open_with(b, "BBB\n");
    saved_fd s3 = save_fd(3), s4 = save_fd(4);
    /* B on 3 and A on 4, close-on-exec like the port's own descriptors. */
    assert_int_equal(dup2(fb, 3), 3);
    assert_int_equal(dup2(fa, 4), 4);
    fcntl(3, F_SETFD, FD_CLOEXEC);
    fcntl(4, F_SETFD, FD_CLOEXEC);
    int pass[] = {4, 3}; /* 4 (A) becomes 3, 3 (B) becomes 4 */
    const char *argv[] = {"sh", "-c", "ls /proc/$$/fd; cat <&3; cat <&4", NULL};
    proc_spec spec = {.argv = argv, .stdout_path = out, .pass_fds = pass, .npass_fds = 2};
    char reason[256] = "";
    pid_t pid = 0;
    int rc = proc_spawn(&pid, &spec, reason, sizeof(reason));
    restore_fd(s4);
    restore_fd(s3);
    close(fa);
    close(fb);
    close(leak);
    assert_int_equal(rc, 0);
    int status = -1;
    assert_int_equal(proc_wait(&status, pid, 5000), 0);
    assert_int_equal(status, 0);
    assert_string_equal(slurp(out), "0\n1\n2\n3\n4\nAAA\nBBB\n");

    int bad[] = {1000};
    spec.pass_fds = bad;
    spec.npass_fds = 1;
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), -1);
    assert_non_null(strstr(reason, "not open"));
}

/* As root the child switches to another uid and gid with no supplementary
 * groups, and still dies with its parent. */
static void test_drop_uid(void **state)
{
    (void)state;
    proc_limits limits = {.set = 1, .drop_uid = 1, .uid = 65534, .gid = 65534};
    const char *argv[] = {"sh", "-c", "id -u; id -g; id -G", NULL};
    char out[256], reason[256] = "";
    path_in_dir(out, sizeof(out), "id.txt");
    proc_spec spec = {.argv = argv, .stdout_path = out, .limits = &limits};
    pid_t pid = 0;
    if (geteuid() != 0) {
        assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), -1);
        assert_non_null(strstr(reason, "cannot switch to uid 65534 gid 65534"));
        skip();
    }
    assert_int_equal(proc_spawn(&pid, &spec, reason, sizeof(reason)), 0);
    int status = -1;
    assert_int_equal(proc_wait(&status, pid, 5000), 0);
    assert_int_equal(status, 0);
    assert_string_equal(slurp(out), "65534\n65534\n65534\n");

    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t middle = fork();
    assert_true(middle >= 0);
    if (middle == 0) {
        const char *sleeper[] = {"sleep", "30", NULL};
        proc_spec s2 = {.argv = sleeper, .limits = &limits};
        pid_t child = 0;
        if (proc_spawn(&child, &s2, reason, sizeof(reason)) != 0)
            _exit(1);
        ssize_t w = write(p[1], &child, sizeof(child));
        (void)w;
        _exit(0);
    }
    close(p[1]);
    pid_t child = 0;
    assert_int_equal(read(p[0], &child, sizeof(child)), sizeof(child));
    close(p[0]);
    assert_int_equal(waitpid(middle, &status, 0), middle);
    assert_true(child > 0);
    assert_true(wait_gone(child, 2000));
}

/* ------------------------------------------------------------ escapes */

/* Four ways out of the child's process group, each writing its pid to a
 * file once out: a new session, a double fork, nohup with SIGTERM and
 * SIGHUP ignored, a new process group. The script itself sleeps on. */
#define NESCAPES 4
static const char escape_script[] =
    "setsid sh -c 'echo $$ > \"$1\"; exec sleep 300' sh \"$1\" & "
    "(sh -c 'echo $$ > \"$1\"; exec sleep 300' sh \"$2\" &); "
    "(trap '' TERM HUP; nohup sh -c 'echo $$ > \"$1\"; exec sleep 300' sh \"$3\" "
    ">/dev/null 2>&1 &); "
    "perl -e 'setpgrp(0, 0); open(my $f, \">\", $ARGV[0]) or die; print $f \"$$\\n\"; "
    "close($f); exec(\"sleep\", \"300\")' \"$4\" & "
    "exec sleep 300";

static void escape_file(char *out, size_t len, int i)
{
    char name[32];
    snprintf(name, sizeof(name), "escape-%d.pid", i);
    path_in_dir(out, len, name);
}

/* Starts the script (proc_spawn) and returns its pid; out[] gets the pids
 * of the escaped processes. */
static pid_t start_escapes(pid_t out[NESCAPES])
{
    char files[NESCAPES][256];
    for (int i = 0; i < NESCAPES; i++) {
        escape_file(files[i], sizeof(files[i]), i);
        unlink(files[i]);
    }
    const char *argv[] = {"sh",     "-c",     escape_script, "sh", files[0],
                          files[1], files[2], files[3],      NULL};
    proc_spec spec = {.argv = argv};
    char err[256] = "";
    pid_t pid = 0;
    if (proc_spawn(&pid, &spec, err, sizeof(err)) != 0)
        return -1;
    for (int i = 0; i < NESCAPES; i++)
        out[i] = read_pid_file(files[i]);
    return pid;
}

/* Gone for good: no /proc entry at all (reaped, not a zombie). */
static int reaped_within(pid_t pid, int ms)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    long long deadline = now_ms() + ms;
    while (access(path, F_OK) == 0) {
        if (now_ms() > deadline)
            return 0;
        nap_ms(10);
    }
    return 1;
}

static void test_ptree(void **state)
{
    (void)state;
    /* A child with spaces and parentheses in its name, and one below it. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        prctl(PR_SET_NAME, "a) b (c");
        pid_t grandchild = fork();
        if (grandchild == 0) {
            close(p[0]);
            pause();
            _exit(0);
        }
        ssize_t w = write(p[1], &grandchild, sizeof(grandchild));
        (void)w;
        pause();
        _exit(0);
    }
    close(p[1]);
    pid_t grandchild = 0;
    assert_int_equal(read(p[0], &grandchild, sizeof(grandchild)), sizeof(grandchild));
    close(p[0]);

    ptree_proc one;
    assert_int_equal(ptree_stat(child, &one), 0);
    assert_int_equal(one.pid, child);
    assert_int_equal(one.ppid, getpid());
    assert_int_equal(one.pgid, getpgrp());
    assert_int_equal(one.sid, getsid(0));
    assert_true(one.start > 0);

    ptree t;
    assert_int_equal(ptree_read(&t), 0);
    assert_non_null(ptree_find(&t, getpid()));
    assert_null(ptree_find(&t, 0));
    unsigned char *marks = malloc(t.n);
    assert_non_null(marks);
    assert_true(ptree_descendants(&t, getpid(), marks) >= 2);
    const ptree_proc *c = ptree_find(&t, child), *g = ptree_find(&t, grandchild);
    assert_non_null(c);
    assert_non_null(g);
    assert_true(marks[c - t.procs] && marks[g - t.procs]);
    assert_false(marks[ptree_find(&t, getpid()) - t.procs]);
    assert_int_equal(ptree_descendants(&t, child, marks), 1);
    assert_true(marks[g - t.procs]);
    assert_int_equal(c->start, one.start);
    free(marks);
    ptree_free(&t);

    char value[64];
    assert_int_equal(ptree_environ_get(getpid(), "SELF_HEAL_NO_SUCH_VAR", value, sizeof(value)), 0);
    setenv("SELF_HEAL_PTREE_VAR", "x", 1);
    const char *argv[] = {"sleep", "30", NULL};
    const char *envp[] = {"A=1", "SELF_HEAL_PTREE_VAR_LONGER=no", "SELF_HEAL_PTREE_VAR=yes=1",
                          NULL};
    proc_spec spec = {.argv = argv, .envp = envp};
    char err[256];
    pid_t pid = 0;
    assert_int_equal(proc_spawn(&pid, &spec, err, sizeof(err)), 0);
    /* the environment it was started with, once exec has happened */
    int got = 0;
    for (int i = 0; i < 200 && got != 1; i++, nap_ms(10))
        got = ptree_environ_get(pid, "SELF_HEAL_PTREE_VAR", value, sizeof(value));
    assert_int_equal(got, 1);
    assert_string_equal(value, "yes=1");
    assert_int_equal(ptree_environ_get(pid, "SELF_HEAL_PTREE_VAR", value, 3), 1);
    assert_string_equal(value, "ye");
    proc_kill(pid, SIGKILL);
    assert_int_equal(proc_wait(NULL, pid, 2000), 0);
    assert_int_equal(ptree_environ_get(pid, "A", value, sizeof(value)), -1);
    unsetenv("SELF_HEAL_PTREE_VAR");

    kill(grandchild, SIGKILL);
    kill(child, SIGKILL);
    assert_int_equal(waitpid(child, NULL, 0), child);
    assert_true(wait_gone(grandchild, 2000));
}

/* As a subreaper, the kills reach processes in other sessions and groups,
 * daemons ignoring SIGTERM included, and reap them. */
static void test_descendants_killed_whatever_their_session(void **state)
{
    (void)state;
    assert_int_equal(proc_become_subreaper(), 0);
    pid_t escaped[NESCAPES];
    pid_t pid = start_escapes(escaped);
    assert_true(pid > 0);
    ptree_proc e[NESCAPES];
    for (int i = 0; i < NESCAPES; i++)
        assert_int_equal(ptree_stat(escaped[i], &e[i]), 0);
    assert_int_equal(e[0].sid, escaped[0]);  /* a session of its own */
    assert_int_equal(e[1].ppid, getpid());   /* an orphan, handed to this subreaper */
    assert_int_equal(e[2].ppid, getpid());   /* likewise, and deaf to SIGTERM and SIGHUP */
    assert_int_equal(e[3].pgid, escaped[3]); /* a process group of its own */
    assert_true(proc_signal_descendants(0) >= 1 + NESCAPES);

    /* SIGTERM: the nohup'd process ignores it. */
    proc_signal_descendants(SIGTERM);
    nap_ms(200);
    assert_false(process_gone(escaped[2]));

    assert_int_equal(proc_kill_descendants(5000), 0);
    int status = 0;
    assert_int_equal(proc_wait(&status, pid, 2000), 0); /* the registered child: its status */
    assert_true(WIFSIGNALED(status));
    for (int i = 0; i < NESCAPES; i++)
        assert_true(reaped_within(escaped[i], 2000));
    assert_int_equal(proc_signal_descendants(0), 0);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
}

/* Orphans handed to the subreaper are reaped; a registered child's exit
 * status still goes to its proc_wait caller. */
static void test_reaping_orphans_keeps_statuses(void **state)
{
    (void)state;
    assert_int_equal(proc_become_subreaper(), 0);
    enum { N = 6 };
    pid_t pids[N], orphans[N];
    char files[N][256];
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof(name), "orphan-%d.pid", i);
        path_in_dir(files[i], sizeof(files[i]), name);
        unlink(files[i]);
        /* a short-lived orphan (double fork) while the child lives on */
        const char *argv[] = {"sh", "-c",     "(sleep 0.1 & echo $! > \"$1\"); sleep 0.4; exit $2",
                              "sh", files[i], i % 2 ? "7" : "3",
                              NULL};
        pids[i] = spawn_ok(argv, NULL, NULL);
    }
    for (int i = 0; i < N; i++)
        orphans[i] = read_pid_file(files[i]);
    int done = 0, statuses[N];
    long long deadline = now_ms() + 20000;
    while (done < N && now_ms() < deadline) {
        proc_reap_orphans(); /* as the port's reader does on SIGCHLD */
        for (int i = 0; i < N; i++) {
            if (pids[i] == 0)
                continue;
            int status = 0;
            int rc = proc_wait(&status, pids[i], 5);
            assert_true(rc == 0 || rc == 1);
            if (rc == 0) {
                statuses[i] = status;
                pids[i] = 0;
                done++;
            }
        }
    }
    assert_int_equal(done, N);
    for (int i = 0; i < N; i++) {
        assert_true(WIFEXITED(statuses[i]));
        assert_int_equal(WEXITSTATUS(statuses[i]), i % 2 ? 7 : 3);
        assert_true(orphans[i] > 0);
        /* the orphan may still be sleeping on a loaded machine: reap
         * until it is gone, as the port's reader does on each SIGCHLD */
        long long until = now_ms() + 10000;
        while (!reaped_within(orphans[i], 20) && now_ms() < until)
            proc_reap_orphans();
        assert_true(reaped_within(orphans[i], 0));
    }
    prctl(PR_SET_CHILD_SUBREAPER, 0);
}

/* ------------------------------------------------------------ watchdog */

/* A port in miniature, in a forked process: it splits off its watchdog
 * (the forked process itself), starts the escapes in the server and
 * reports their pids and the server's on the pipe, then waits for the
 * watchdog's end as the port's reader does. */
static pid_t start_port_like(int report_fd)
{
    pid_t port = fork();
    if (port != 0)
        return port;
    int watch_fd = -1;
    pid_t watchdog = 0;
    if (watchdog_split(&watch_fd, &watchdog) != 0 || proc_become_subreaper() != 0)
        _exit(2);
    pid_t ids[NESCAPES + 2];
    ids[0] = getpid();
    ids[1] = start_escapes(ids + 2);
    ssize_t w = write(report_fd, ids, sizeof(ids));
    (void)w;
    for (;;) {
        struct pollfd p = {watch_fd, POLLIN, 0};
        if (poll(&p, 1, -1) == 1 && watchdog_gone(watch_fd))
            watchdog_lost();
    }
}

/* Starts the port in miniature; ids[0] the server, [1] the script, then
 * the escaped processes. */
static pid_t port_like(pid_t ids[NESCAPES + 2])
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t port = start_port_like(p[1]);
    assert_true(port > 0);
    close(p[1]);
    assert_int_equal(read(p[0], ids, sizeof(pid_t) * (NESCAPES + 2)),
                     (ssize_t)sizeof(pid_t) * (NESCAPES + 2));
    close(p[0]);
    for (int i = 0; i < NESCAPES + 2; i++)
        assert_true(ids[i] > 0);
    assert_int_equal(getppid() == ids[0], 0);
    return port;
}

/* Starts the port in miniature and sends sig to its server (to_server)
 * or its watchdog; the watchdog must end killed by want_sig (0: however)
 * and nothing the server started may be left. */
static void end_port_like(int to_server, int sig, int want_sig)
{
    pid_t ids[NESCAPES + 2];
    pid_t port = port_like(ids);
    assert_int_equal(kill(to_server ? ids[0] : port, sig), 0);
    int status = 0;
    assert_int_equal(waitpid(port, &status, 0), port);
    if (want_sig != 0) {
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), want_sig);
    }
    for (int i = 0; i < NESCAPES + 2; i++)
        assert_true(wait_gone(ids[i], 3000));
}

/* kill -9 of the server: the watchdog kills what it started and ends as
 * the server did. */
static void test_watchdog_server_killed(void **state)
{
    (void)state;
    end_port_like(1, SIGKILL, SIGKILL);
}

/* SIGTERM to the watchdog reaches the server (whose default action ends
 * it), and the watchdog ends the same way. */
static void test_watchdog_forwards_sigterm(void **state)
{
    (void)state;
    end_port_like(0, SIGTERM, SIGTERM);
}

/* kill -9 of the watchdog: the server kills what it started and exits. */
static void test_watchdog_killed(void **state)
{
    (void)state;
    end_port_like(0, SIGKILL, SIGKILL);
}

/* ------------------------------------------------------------ run marker */

static void test_run_marker(void **state)
{
    (void)state;
    char out[256];
    path_in_dir(out, sizeof(out), "marker-env.txt");
    const char *env_argv[] = {"/usr/bin/env", NULL};
    const char *envp[] = {"PATH=/usr/bin:/bin", "SELF_HEAL_PORT_RUN=stale", NULL};

    assert_int_equal(proc_mark_children(getpid()), 0);
    ptree_proc self;
    assert_int_equal(ptree_stat(getpid(), &self), 0);
    char want[128];
    snprintf(want, sizeof(want), "PATH=/usr/bin:/bin\nSELF_HEAL_PORT_RUN=%d:%llu\n", (int)getpid(),
             self.start);
    proc_spec spec = {.argv = env_argv, .envp = envp, .stdout_path = out};
    char err[256];
    pid_t pid = 0;
    assert_int_equal(proc_spawn(&pid, &spec, err, sizeof(err)), 0);
    assert_int_equal(proc_wait(NULL, pid, 5000), 0);
    assert_string_equal(slurp(out), want); /* in place of the one it had */

    spec.no_run_marker = 1; /* exactly as given */
    assert_int_equal(proc_spawn(&pid, &spec, err, sizeof(err)), 0);
    assert_int_equal(proc_wait(NULL, pid, 5000), 0);
    assert_string_equal(slurp(out), "PATH=/usr/bin:/bin\nSELF_HEAL_PORT_RUN=stale\n");

    assert_int_equal(proc_mark_children(0), 0);
    spec.no_run_marker = 0;
    assert_int_equal(proc_spawn(&pid, &spec, err, sizeof(err)), 0);
    assert_int_equal(proc_wait(NULL, pid, 5000), 0);
    assert_string_equal(slurp(out), "PATH=/usr/bin:/bin\nSELF_HEAL_PORT_RUN=stale\n");
    assert_int_equal(proc_mark_children(999999999), -1);
}

/* What a run left when it was killed whole (no watchdog, no port to kill
 * it) is found by its marker; a run whose owner lives is left alone. */
static void test_left_behind(void **state)
{
    (void)state;
    const char *argv[] = {"sleep", "30", NULL};
    pid_t owner = spawn_ok(argv, NULL, NULL);
    assert_int_equal(proc_mark_children(owner), 0);
    pid_t dead_run[NESCAPES];
    pid_t script = start_escapes(dead_run);
    assert_true(script > 0);
    assert_int_equal(proc_mark_children(getpid()), 0);
    pid_t live_run[NESCAPES];
    pid_t live_script = start_escapes(live_run);
    assert_true(live_script > 0);
    assert_int_equal(proc_mark_children(0), 0);
    for (int i = 0; i < NESCAPES; i++)
        assert_true(dead_run[i] > 0 && live_run[i] > 0);

    assert_int_equal(proc_kill_left_behind(2000), 0); /* the owner lives */
    proc_kill(owner, SIGKILL);
    assert_int_equal(proc_wait(NULL, owner, 2000), 0);
    assert_true(proc_kill_left_behind(5000) >= 1 + NESCAPES);
    for (int i = 0; i < NESCAPES; i++) {
        assert_true(wait_gone(dead_run[i], 2000));
        assert_false(process_gone(live_run[i]));
    }
    assert_int_equal(proc_wait(NULL, script, 2000), 0);

    for (int i = 0; i < NESCAPES; i++)
        kill(live_run[i], SIGKILL);
    proc_kill(live_script, SIGKILL);
    assert_int_equal(proc_wait(NULL, live_script, 2000), 0);
    for (int i = 0; i < NESCAPES; i++)
        assert_true(wait_gone(live_run[i], 2000));
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"grandchild.pid", "leftover.pid", "out.txt",      "err.txt",
                           "both.txt",       "fds.txt",      "limits.txt",   "big.bin",
                           "pass-a.txt",     "pass-b.txt",   "pass-out.txt", "id.txt",
                           "not-executable", "escape-0.pid", "escape-1.pid", "escape-2.pid",
                           "escape-3.pid",   "orphan-0.pid", "orphan-1.pid", "orphan-2.pid",
                           "orphan-3.pid",   "orphan-4.pid", "orphan-5.pid", "marker-env.txt"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char file[256];
        path_in_dir(file, sizeof(file), names[i]);
        unlink(file);
    }
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_process_group),
        cmocka_unit_test(test_kill_all_reaches_grandchildren),
        cmocka_unit_test(test_leftovers_killed_when_leader_exits),
        cmocka_unit_test(test_wait_timeout),
        cmocka_unit_test(test_outputs_and_environment),
        cmocka_unit_test(test_no_descriptor_leaks),
        cmocka_unit_test(test_spawn_errors),
        cmocka_unit_test(test_children_die_with_their_parent),
        cmocka_unit_test(test_limits_take_effect),
        cmocka_unit_test(test_file_size_limit_signal),
        cmocka_unit_test(test_pass_fds),
        cmocka_unit_test(test_drop_uid),
        cmocka_unit_test(test_ptree),
        cmocka_unit_test(test_descendants_killed_whatever_their_session),
        cmocka_unit_test(test_reaping_orphans_keeps_statuses),
        cmocka_unit_test(test_watchdog_server_killed),
        cmocka_unit_test(test_watchdog_forwards_sigterm),
        cmocka_unit_test(test_watchdog_killed),
        cmocka_unit_test(test_run_marker),
        cmocka_unit_test(test_left_behind),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
