/* The bubblewrap sandbox, against the real bwrap: the writable directory,
 * private /tmp and HOME, nothing else writable or visible, a private
 * /proc, the exact environment, no network unless asked, no process left
 * behind (daemons in their own sessions, SIGTERM-proof children, kills),
 * the process, memory, file size and tmpfs limits, the identity, the
 * read-only binds, the probe, the configuration, and re-owning a tree.
 * Every test is skipped (with the probe's reason) where bwrap cannot run.
 * The scripts given to sh are fixed test text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmd.h"
#include "ctx.h"
#include "exec.h"
#include "proc.h"
#include "sandbox.h"
#include "test_procs.h"

static char dir[] = "/tmp/self_heal_test_sandbox_XXXXXX";
static char work[512], out_file[512], err_file[512], prompt[512], tools[512], secret[512];
static int usable;          /* bwrap runs here */
static char why_not[512];   /* else the probe's reason */
static sandbox_config base; /* the defaults, loaded from an empty configuration */

#define SECRET_VALUE "s3cr3t-value-4242" /* planted in the test's own environment */

static void in_dir(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

/* The whole file, malloc'ed (the caller frees); "" when unreadable. */
static char *slurp(const char *file)
{
    FILE *f = fopen(file, "r");
    size_t cap = 1 << 16, len = 0, n;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    while (f != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
    }
    if (f != NULL)
        fclose(f);
    buf[len] = '\0';
    return buf;
}

static long long file_size(const char *file)
{
    struct stat st;
    return stat(file, &st) == 0 ? (long long)st.st_size : -1;
}

/* A configuration from JSON under "sb" through the loader. */
static int load(sandbox_config *cfg, const char *json, cmd_error *err)
{
    port_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    pthread_mutex_init(&ctx.lock, NULL);
    json_error_t jerr;
    ctx.config = json_loads(json, 0, &jerr);
    assert_non_null(ctx.config);
    memset(err, 0, sizeof(*err));
    int rc = sandbox_config_load(cfg, &ctx, "sb", err);
    json_decref(ctx.config);
    pthread_mutex_destroy(&ctx.lock);
    return rc;
}

static sandbox_config config(const char *json)
{
    sandbox_config cfg;
    cmd_error err;
    if (load(&cfg, json, &err) != 0)
        fail_msg("config %s: %s", json, err.message);
    return cfg;
}

#define NEED_SANDBOX()                                                                             \
    do {                                                                                           \
        if (!usable) {                                                                             \
            print_message("bwrap cannot run here: %s\n", why_not);                                 \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static char *const test_env[] = {"PATH=/usr/bin:/bin", "LANG=C", NULL};

typedef struct run_opts {
    const sandbox_config *cfg; /* NULL: base */
    int network;
    int timeout_ms;
    const char *dir_inside; /* NULL: "/work"; "" for the host path */
    char *const *argv;      /* NULL: sh -c script */
} run_opts;

/* Runs `sh -c script` in the sandbox over work (at /work), the prompt
 * bound at /task/prompt.md; stdout to out_file, stderr to err_file.
 * Returns the result; *output gets stdout (the caller frees). */
static exec_result run_in(const char *script, run_opts o, char **output)
{
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    sandbox_bind files[] = {{prompt, "/task/prompt.md"}};
    sandbox_run run = {
        .dir = work,
        .dir_inside = o.dir_inside == NULL ? "/work" : (o.dir_inside[0] ? o.dir_inside : NULL),
        .files = files,
        .nfiles = 1,
        .network = o.network,
    };
    exec_spec spec = {.argv = o.argv != NULL ? o.argv : argv,
                      .envp = test_env,
                      .stdout_path = out_file,
                      .stderr_path = err_file,
                      .timeout_ms = o.timeout_ms > 0 ? o.timeout_ms : 30000,
                      .sandbox = o.cfg != NULL ? o.cfg : &base,
                      .run = &run};
    exec_result r;
    char err[512] = "";
    if (exec_run(&r, &spec, err, sizeof(err)) != 0)
        fail_msg("exec_run: %s", err);
    if (output != NULL)
        *output = slurp(out_file);
    return r;
}

/* Host processes whose command line holds marker. */
static int count_marked(const char *marker)
{
    int found = 0;
    DIR *d = opendir("/proc");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9' || atoi(e->d_name) == (int)getpid())
            continue;
        char path[300], buf[4096];
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue; /* zombies and kernel threads have none */
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\0')
                buf[i] = ' ';
        buf[n] = '\0';
        if (strstr(buf, marker) != NULL)
            found++;
    }
    closedir(d);
    return found;
}

/* ---------------------------------------------------------------- files */

static void test_writable_dir_and_private_tmp(void **state)
{
    (void)state;
    NEED_SANDBOX();
    char *out = NULL;
    exec_result r = run_in("pwd; echo hi > f.txt && cat /work/f.txt; ls -A /tmp | wc -l; "
                           "ls -A \"$HOME\" | wc -l; echo \"$HOME $TMPDIR\"; "
                           "echo t > /tmp/t && echo h > \"$HOME/h\" && echo private-ok",
                           (run_opts){0}, &out);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(out, "/work\nhi\n0\n0\n/home/sandbox /tmp\nprivate-ok\n");
    free(out);
    char f[600];
    snprintf(f, sizeof(f), "%s/f.txt", work);
    char *text = slurp(f);
    assert_string_equal(text, "hi\n");
    free(text);
    struct stat st;
    assert_int_equal(stat(f, &st), 0);
    if (geteuid() == 0)
        assert_int_equal(st.st_uid, 65534);
    /* A second run starts with empty /tmp and HOME again. */
    r = run_in("ls -A /tmp \"$HOME\"", (run_opts){0}, &out);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(out, "/home/sandbox:\n\n/tmp:\n");
    free(out);
    unlink(f);
}

static void test_nothing_else_writable(void **state)
{
    (void)state;
    NEED_SANDBOX();
    char script[2048];
    snprintf(script, sizeof(script),
             "for p in /x /etc/x /usr/x /usr/bin/x /home/x /dev/x /task/x /task/prompt.md "
             "/proc/x /work/../x %s/x %s/x; do "
             "  if (echo w > \"$p\") 2>/dev/null; then echo \"wrote $p\"; fi; done; "
             /* the test's directory may be made again inside the private /tmp */
             "mkdir -p %s && echo private > %s/escape && echo made-private",
             dir, work, dir, dir);
    char *out = NULL;
    exec_result r = run_in(script, (run_opts){0}, &out);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(out, "made-private\n");
    free(out);
    char p[600];
    in_dir(p, sizeof(p), "escape");
    assert_int_equal(file_size(p), -1); /* never reached the host */
    in_dir(p, sizeof(p), "x");
    assert_int_equal(file_size(p), -1);
    snprintf(p, sizeof(p), "%s/x", work);
    assert_int_equal(file_size(p), -1);

    /* At its host path the directory's parent is a private tmpfs too. */
    run_opts at_host = {.dir_inside = ""};
    r = run_in("pwd; echo w > ../parent.txt; echo w > ./inside.txt", at_host, &out);
    assert_int_equal(r.exit_code, 0);
    char want[600];
    snprintf(want, sizeof(want), "%s\n", work);
    assert_string_equal(out, want);
    free(out);
    in_dir(p, sizeof(p), "parent.txt");
    assert_int_equal(file_size(p), -1);
    snprintf(p, sizeof(p), "%s/inside.txt", work);
    assert_int_equal(file_size(p), 2);
    unlink(p);
}

static void test_outside_invisible(void **state)
{
    (void)state;
    NEED_SANDBOX();
    char script[2048];
    snprintf(script, sizeof(script),
             "for p in %s %s /root /etc/shadow /etc/sudoers /etc/hostname /var /opt /srv /mnt "
             "/run /sys /boot /work/../secret.txt; do "
             "  if [ -e \"$p\" ]; then echo \"visible $p\"; fi; done; "
             "cat %s 2>/dev/null; ls /etc | tr '\\n' ' '",
             secret, dir, secret);
    char *out = NULL;
    exec_result r = run_in(script, (run_opts){0}, &out);
    assert_int_equal(r.exit_code, 0);
    assert_null(strstr(out, "visible"));
    assert_null(strstr(out, "top-secret"));
    /* /etc holds only the fixed list (whatever of it the host has). */
    const char *allowed[] = {"ld.so.cache", "ld.so.conf", "ld.so.conf.d",  "alternatives",
                             "passwd",      "group",      "nsswitch.conf", "hosts",
                             "localtime",   "timezone",   "ssl",           "ca-certificates",
                             "mime.types",  "protocols",  "services",      NULL};
    char *save = NULL;
    for (char *name = strtok_r(out, " ", &save); name != NULL; name = strtok_r(NULL, " ", &save)) {
        int ok = 0;
        for (size_t i = 0; allowed[i] != NULL && !ok; i++)
            ok = strcmp(name, allowed[i]) == 0;
        if (!ok)
            fail_msg("/etc/%s is visible in the sandbox", name);
    }
    free(out);
}

static void test_read_only_binds(void **state)
{
    (void)state;
    NEED_SANDBOX();
    char json[1024];
    snprintf(json, sizeof(json), "{\"sb\": {\"read_only\": [\"%s\"]}}", tools);
    sandbox_config cfg = config(json);
    char script[2048];
    snprintf(script, sizeof(script),
             "cat /task/prompt.md; (echo x >> /task/prompt.md) 2>/dev/null || echo prompt-ro; "
             "%s/hello.sh; (echo x > %s/new) 2>/dev/null || echo tools-ro; "
             "(echo x >> %s/hello.sh) 2>/dev/null || echo script-ro",
             tools, tools, tools);
    char *out = NULL;
    exec_result r = run_in(script, (run_opts){.cfg = &cfg}, &out);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(out, "# The task\nprompt-ro\nhello from tools\ntools-ro\nscript-ro\n");
    free(out);
    sandbox_config_free(&cfg);

    /* The command itself, an absolute path outside the system directories,
     * is bound read-only at its path; its neighbours are not. */
    char agent[600];
    in_dir(agent, sizeof(agent), "bin/agent.sh");
    char *argv[] = {agent, "one arg", NULL};
    r = run_in(NULL, (run_opts){.argv = argv}, &out);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(out, "agent 1 one arg\nother hidden\nro\n");
    free(out);
}

/* ---------------------------------------------------------------- processes */

static void test_private_proc(void **state)
{
    (void)state;
    NEED_SANDBOX();
    char script[1024];
    snprintf(script, sizeof(script),
             "[ -e /proc/%d ] && echo sees-test; "
             "tr '\\0' ' ' < /proc/1/cmdline | cut -d' ' -f1; "
             "ls /proc | grep -c '^[0-9][0-9]*$'; hostname; "
             "unshare -U true 2>/dev/null && echo nested-userns; echo done",
             (int)getpid());
    char *out = NULL;
    exec_result r = run_in(script, (run_opts){0}, &out);
    assert_int_equal(r.exit_code, 0);
    /* pid 1 is bwrap's init in the sandbox, not the host's; only the
     * sandbox's few processes exist there. */
    char first[64] = "";
    int procs = 0;
    char host[64] = "";
    assert_int_equal(sscanf(out, "%63s %d %63s", first, &procs, host), 3);
    assert_non_null(strstr(first, "bwrap"));
    assert_true(procs >= 2 && procs <= 6);
    assert_string_equal(host, "sandbox");
    assert_null(strstr(out, "sees-test"));
    assert_null(strstr(out, "nested-userns"));
    assert_non_null(strstr(out, "done"));
    free(out);
}

static void test_environment_exact(void **state)
{
    (void)state;
    NEED_SANDBOX();
    setenv("SELF_HEAL_SANDBOX_SECRET", SECRET_VALUE, 1);
    /* The pattern is written so that no command line holds the value. */
    char *out = NULL;
    exec_result r = run_in("tr '\\0' '\\n' < /proc/$$/environ | sort; "
                           "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | "
                           "tr '\\0' '\\n' | grep -c 's3cr3t-value-424[2]'; "
                           "env | grep -c SELF_HEAL_SANDBOX",
                           (run_opts){0}, &out);
    assert_int_equal(r.exit_code, 1); /* the last grep found nothing */
    assert_string_equal(out, "HOME=/home/sandbox\nLANG=C\nPATH=/usr/bin:/bin\nTMPDIR=/tmp\n0\n0\n");
    free(out);
    unsetenv("SELF_HEAL_SANDBOX_SECRET");
}

static void test_no_env_on_command_line(void **state)
{
    (void)state;
    NEED_SANDBOX();
    char *cmd[] = {"sh", "-c", "true", NULL};
    char *env[] = {"PATH=/usr/bin:/bin", "AGENT_API_KEY=key-on-no-cmdline", "HOME=/root",
                   "TMPDIR=/var/tmp", NULL};
    sandbox_run run = {.dir = work, .dir_inside = "/work"};
    sandbox_cmd sc;
    char err[512] = "";
    assert_int_equal(sandbox_cmd_build(&sc, &base, &run, cmd, env, err, sizeof(err)), 0);
    int unshare_all = 0, share_net = 0, die = 0, session = 0, resolv = 0;
    for (size_t i = 0; sc.argv[i] != NULL; i++) {
        assert_null(strstr(sc.argv[i], "key-on-no-cmdline"));
        unshare_all += strcmp(sc.argv[i], "--unshare-all") == 0;
        share_net += strcmp(sc.argv[i], "--share-net") == 0;
        die += strcmp(sc.argv[i], "--die-with-parent") == 0;
        session += strcmp(sc.argv[i], "--new-session") == 0;
        resolv += strcmp(sc.argv[i], "/etc/resolv.conf") == 0;
        assert_string_not_equal(sc.argv[i], "--setenv");
    }
    assert_int_equal(unshare_all + die + session, 3);
    assert_int_equal(share_net + resolv, 0);
    size_t n = 0;
    while (sc.envp[n] != NULL)
        n++;
    assert_int_equal(n, 4);
    assert_string_equal(sc.envp[0], "PATH=/usr/bin:/bin");
    assert_string_equal(sc.envp[1], "AGENT_API_KEY=key-on-no-cmdline");
    assert_string_equal(sc.envp[2], "HOME=/home/sandbox");
    assert_string_equal(sc.envp[3], "TMPDIR=/tmp");
    assert_int_equal(sc.nfds, 2); /* the directory and bwrap's report */
    assert_true(sc.info_fd >= 0);
    assert_int_equal(sc.limits.set, 1);
    assert_int_equal(sc.limits.core_off, 1);
    assert_int_equal(sc.limits.drop_uid, geteuid() == 0);
    sandbox_cmd_free(&sc);

    run.network = 1;
    assert_int_equal(sandbox_cmd_build(&sc, &base, &run, cmd, env, err, sizeof(err)), 0);
    share_net = 0;
    for (size_t i = 0; sc.argv[i] != NULL; i++)
        share_net += strcmp(sc.argv[i], "--share-net") == 0;
    assert_int_equal(share_net, 1);
    sandbox_cmd_free(&sc);
}

static int listen_local(int *port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s, 8), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return s;
}

static void test_network(void **state)
{
    (void)state;
    NEED_SANDBOX();
    int port = 0;
    int s = listen_local(&port);
    char script[512];
    snprintf(script, sizeof(script),
             "if bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' 2>/dev/null; then echo connected; "
             "else echo refused; fi; [ -e /etc/resolv.conf ] && echo resolv; echo end",
             port);
    char *out = NULL;
    exec_result r = run_in(script, (run_opts){0}, &out);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(out, "refused\nend\n");
    free(out);
    r = run_in(script, (run_opts){.network = 1}, &out);
    assert_int_equal(r.exit_code, 0);
    struct stat st;
    assert_string_equal(out, stat("/etc/resolv.conf", &st) == 0 ? "connected\nresolv\nend\n"
                                                                : "connected\nend\n");
    free(out);
    close(s);
}

/* Daemons (setsid, nohup), a child ignoring SIGTERM: none outlives the run,
 * whether the command ends by itself or is killed at its timeout. */
static void test_no_process_left(void **state)
{
    (void)state;
    NEED_SANDBOX();
    const char *start =
        "setsid sh -c 'sleep 300; : sbx-marker-a' & "
        "nohup sh -c 'sleep 300; : sbx-marker-b' >/dev/null 2>&1 & "
        "sh -c 'trap \"\" TERM HUP INT; while :; do sleep 1; done; : sbx-marker-c' & "
        "sleep 0.5; grep -l 'sbx-marke[r]-' /proc/[0-9]*/cmdline 2>/dev/null | "
        "wc -l; ";
    char script[1024];
    char *out = NULL;
    for (int killed = 0; killed <= 1; killed++) {
        snprintf(script, sizeof(script), "%s%s", start, killed ? "sleep 100" : "exit 0");
        long long t0 = now_ms();
        exec_result r = run_in(script, (run_opts){.timeout_ms = killed ? 2000 : 0}, &out);
        assert_int_equal(count_marked("sbx-marker-"), 0);
        /* They did run: the three, the script and bwrap's init name them. */
        assert_true(atoi(out) >= 4);
        free(out);
        if (killed) {
            assert_true(r.timed_out);
            assert_true(now_ms() - t0 < 10000);
        } else {
            assert_int_equal(r.exit_code, 0);
        }
    }
}

static void test_fork_bomb(void **state)
{
    (void)state;
    NEED_SANDBOX();
    sandbox_config cfg = config("{\"sb\": {\"processes\": 32}}");
    /* Bounded: forks until the kernel refuses, then the shell gives up. */
    char *out = NULL;
    exec_result r = run_in("i=0; while [ $i -lt 500 ]; do sleep 60 & i=$((i+1)); "
                           "echo $i > /work/forks; done; : sbx-bomb",
                           (run_opts){.cfg = &cfg, .timeout_ms = 20000}, &out);
    free(out);
    assert_false(r.timed_out);
    assert_int_not_equal(r.exit_code, 0);
    char f[600];
    snprintf(f, sizeof(f), "%s/forks", work);
    char *text = slurp(f);
    int forks = atoi(text);
    free(text);
    unlink(f);
    assert_true(forks > 5);
    assert_true(forks < 32);
    char *err = slurp(err_file);
    assert_non_null(strstr(err, "fork"));
    free(err);
    assert_int_equal(count_marked("sbx-bomb"), 0);

    /* The classic bomb, cut by the timeout; the host can still fork. */
    char *bomb[] = {"bash", "-c", "b() { b | b & }; b; wait; : sbx-classic", NULL};
    r = run_in(NULL, (run_opts){.cfg = &cfg, .timeout_ms = 3000, .argv = bomb}, NULL);
    assert_int_equal(count_marked("sbx-classic"), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    sandbox_config_free(&cfg);
}

/* ---------------------------------------------------------------- limits */

static void test_memory_limit(void **state)
{
    (void)state;
    NEED_SANDBOX();
    struct stat st;
    if (stat("/usr/bin/python3", &st) != 0)
        skip();
    sandbox_config cfg = config("{\"sb\": {\"memory_mb\": 64}}");
    char *out = NULL;
    exec_result r = run_in("python3 -c 'b = bytearray(16 << 20); print(\"16 MiB\")'; "
                           "python3 -c 'b = bytearray(128 << 20); print(\"128 MiB\")' "
                           "2>/dev/null || echo refused",
                           (run_opts){.cfg = &cfg}, &out);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(out, "16 MiB\nrefused\n");
    free(out);
    sandbox_config_free(&cfg);
}

static void test_file_and_tmpfs_limits(void **state)
{
    (void)state;
    NEED_SANDBOX();
    sandbox_config cfg = config("{\"sb\": {\"file_mb\": 1, \"tmp_mb\": 2}}");
    char *out = NULL;
    /* A file past 1 MiB: SIGXFSZ (exit 128 + 25). /tmp and HOME hold
     * 2 MiB each, whatever the number of files. */
    exec_result r = run_in("head -c 2097152 /dev/zero > /work/big; echo \"big $?\"; "
                           "for d in /tmp \"$HOME\"; do for i in 1 2 3; do "
                           "head -c 1000000 /dev/zero > $d/f$i 2>/dev/null || echo \"full $i\"; "
                           "done; done; df -k /tmp | tail -1 | tr -s ' ' | cut -d' ' -f2",
                           (run_opts){.cfg = &cfg}, &out);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(out, "big 153\nfull 3\nfull 3\n2048\n");
    free(out);
    char f[600];
    snprintf(f, sizeof(f), "%s/big", work);
    assert_int_equal(file_size(f), 1048576);
    unlink(f);
    sandbox_config_free(&cfg);
}

static void test_identity(void **state)
{
    (void)state;
    NEED_SANDBOX();
    char *out = NULL;
    exec_result r = run_in("id -u; id -g", (run_opts){0}, &out);
    assert_int_equal(r.exit_code, 0);
    char want[64];
    if (geteuid() == 0)
        snprintf(want, sizeof(want), "65534\n65534\n");
    else
        snprintf(want, sizeof(want), "%d\n%d\n", (int)getuid(), (int)getgid());
    assert_string_equal(out, want);
    free(out);
}

/* ---------------------------------------------------------------- probe, config, own */

static void test_probe(void **state)
{
    (void)state;
    char err[512] = "";
    sandbox_config cfg = config("{\"sb\": {\"bwrap\": \"/nonexistent/bwrap\"}}");
    assert_int_equal(sandbox_probe(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bwrap not found: /nonexistent/bwrap"));
    sandbox_config_free(&cfg);
    cfg = config("{\"sb\": {\"bwrap\": \"self-heal-no-such-bwrap\"}}");
    assert_int_equal(sandbox_probe(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bwrap not found: self-heal-no-such-bwrap"));
    sandbox_config_free(&cfg);
    cfg = config("{\"sb\": {\"mode\": \"none\", \"bwrap\": \"/nonexistent/bwrap\"}}");
    assert_int_equal(sandbox_probe(&cfg, err, sizeof(err)), 0);
    sandbox_config_free(&cfg);
    NEED_SANDBOX();
    assert_int_equal(sandbox_probe(&base, err, sizeof(err)), 0);
}

static void test_config(void **state)
{
    (void)state;
    sandbox_config cfg;
    cmd_error err;
    assert_int_equal(load(&cfg, "{}", &err), 0);
    assert_int_equal(cfg.mode, SANDBOX_BWRAP);
    assert_int_equal(cfg.cpu_s, 900);
    assert_int_equal(cfg.memory_mb, 4096);
    assert_int_equal(cfg.processes, 256);
    assert_int_equal(cfg.file_mb, 256);
    assert_int_equal(cfg.tmp_mb, 512);
    assert_int_equal(cfg.open_files, 1024);
    assert_int_equal(cfg.uid, 65534);
    assert_int_equal(cfg.gid, 65534);
    assert_null(cfg.read_only);
    sandbox_config_free(&cfg);

    struct {
        const char *json, *message;
    } bad[] = {
        {"{\"sb\": {\"mode\": \"bwarp\"}}", "sb.mode must be \"bwrap\" or \"none\""},
        {"{\"sb\": {\"mode\": false}}", "sb.mode must be"},
        {"{\"sb\": {\"uid\": 0}}", "sb.uid must not be 0"},
        {"{\"sb\": {\"gid\": 0}}", "sb.gid must not be 0"},
        {"{\"sb\": {\"cpu_s\": \"900\"}}", "sb.cpu_s must be an integer"},
        {"{\"sb\": {\"processes\": 2}}", "sb.processes must be an integer from 8"},
        {"{\"sb\": {\"read_only\": [\"relative/path\"]}}", "sb.read_only must be"},
        {"{\"sb\": {\"read_only\": [\"/\"]}}", "sb.read_only must be"},
        {"{\"sb\": {\"read_only\": [\"/opt/../etc\"]}}", "sb.read_only must be"},
        {"{\"sb\": {\"read_only\": \"/opt\"}}", "sb.read_only must be"},
        {"{\"sb\": {\"bwrap\": \"\"}}", "sb.bwrap must be"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(load(&cfg, bad[i].json, &err), -1);
        assert_string_equal(err.code, "bad_config");
        if (strstr(err.message, bad[i].message) == NULL)
            fail_msg("%s: %s", bad[i].json, err.message);
    }

    /* Mode none: the command as given, nothing bound, no limits. */
    cfg = config("{\"sb\": {\"mode\": \"none\"}}");
    char *cmd[] = {"make", "test", NULL};
    char *env[] = {"PATH=/usr/bin", "HOME=/root", NULL};
    sandbox_run run = {.dir = "/nonexistent"};
    sandbox_cmd sc;
    char msg[256];
    assert_int_equal(sandbox_cmd_build(&sc, &cfg, &run, cmd, env, msg, sizeof(msg)), 0);
    assert_string_equal(sc.argv[0], "make");
    assert_string_equal(sc.argv[1], "test");
    assert_null(sc.argv[2]);
    assert_string_equal(sc.envp[1], "HOME=/root");
    assert_null(sc.envp[2]);
    assert_int_equal(sc.nfds, 0);
    assert_int_equal(sc.info_fd, -1);
    assert_int_equal(sc.limits.set, 0);
    sandbox_cmd_free(&sc);
    sandbox_config_free(&cfg);
}

static void test_mode_none_and_half_a_sandbox(void **state)
{
    (void)state;
    /* Half a sandbox never runs (unsandboxed or otherwise). */
    char *argv[] = {"true", NULL};
    sandbox_run half = {.dir = work};
    exec_spec spec = {.argv = argv, .envp = test_env, .run = &half};
    exec_result res;
    char msg[256] = "";
    assert_int_equal(exec_run(&res, &spec, msg, sizeof(msg)), -1);
    assert_non_null(strstr(msg, "both"));
    spec.run = NULL;
    spec.sandbox = &base;
    assert_int_equal(exec_run(&res, &spec, msg, sizeof(msg)), -1);

    sandbox_config cfg = config("{\"sb\": {\"mode\": \"none\"}}");
    char *out = NULL;
    exec_result r = run_in("pwd; echo \"$HOME\"", (run_opts){.cfg = &cfg}, &out);
    assert_int_equal(r.exit_code, 0);
    char want[600];
    snprintf(want, sizeof(want), "%s\n\n", work);
    assert_string_equal(out, want);
    free(out);
    sandbox_config_free(&cfg);
}

/* bwrap resolves a bound path as the sandbox user: a parent it may not
 * search is refused up front, with the reason. */
static void test_unreachable_dir(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char closed[600], inner[700];
    in_dir(closed, sizeof(closed), "closed");
    snprintf(inner, sizeof(inner), "%s/work", closed);
    assert_int_equal(mkdir(closed, 0700), 0);
    assert_int_equal(mkdir(inner, 0700), 0);
    char *cmd[] = {"true", NULL};
    sandbox_run run = {.dir = inner, .dir_inside = "/work"};
    sandbox_cmd sc;
    char err[512] = "";
    assert_int_equal(sandbox_cmd_build(&sc, &base, &run, cmd, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot reach"));
    assert_non_null(strstr(err, closed));
    assert_int_equal(sc.nfds, 0);
    assert_int_equal(chmod(closed, 0711), 0);
    assert_int_equal(sandbox_cmd_build(&sc, &base, &run, cmd, NULL, err, sizeof(err)), 0);
    sandbox_cmd_free(&sc);
    rmdir(inner);
    rmdir(closed);
}

static void test_own_tree(void **state)
{
    (void)state;
    char root[600], p[700], outside[600], outside2[600];
    in_dir(root, sizeof(root), "owned");
    in_dir(outside, sizeof(outside), "outside.txt");
    in_dir(outside2, sizeof(outside2), "outside2.txt");
    write_file(outside, "outside\n", 0644);
    write_file(outside2, "outside2\n", 0644);
    assert_int_equal(mkdir(root, 0755), 0);
    snprintf(p, sizeof(p), "%s/sub", root);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/sub/deeper", root);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/a.txt", root);
    write_file(p, "a\n", 0644);
    snprintf(p, sizeof(p), "%s/sub/deeper/c.txt", root);
    write_file(p, "c\n", 0644);
    snprintf(p, sizeof(p), "%s/to-outside", root);
    assert_int_equal(symlink(outside, p), 0);
    snprintf(p, sizeof(p), "%s/sub/to-dir", root);
    assert_int_equal(symlink(dir, p), 0);
    snprintf(p, sizeof(p), "%s/hard", root);
    assert_int_equal(link(outside2, p), 0);

    char err[512] = "";
    assert_int_equal(sandbox_own(&base, root, err, sizeof(err)), 0);
    uid_t want = geteuid() == 0 ? 65534 : geteuid();
    const char *mine[] = {
        "", "/sub", "/sub/deeper", "/a.txt", "/sub/deeper/c.txt", "/to-outside", "/sub/to-dir"};
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++) {
        struct stat st;
        snprintf(p, sizeof(p), "%s%s", root, mine[i]);
        assert_int_equal(lstat(p, &st), 0);
        if (st.st_uid != want)
            fail_msg("%s is owned by %d", p, (int)st.st_uid);
    }
    /* Nothing reached through a link changed owner. */
    struct stat st;
    assert_int_equal(stat(outside, &st), 0);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(stat(outside2, &st), 0);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_uid, geteuid());

    /* Not a directory, a symlink to one: refused (as root; else a no-op). */
    int fails = geteuid() == 0 ? -1 : 0;
    assert_int_equal(sandbox_own(&base, outside, err, sizeof(err)), fails);
    snprintf(p, sizeof(p), "%s/sub/to-dir", root);
    assert_int_equal(sandbox_own(&base, p, err, sizeof(err)), fails);

    const char *rm[] = {"/sub/deeper/c.txt",
                        "/sub/deeper",
                        "/sub/to-dir",
                        "/sub",
                        "/a.txt",
                        "/to-outside",
                        "/hard",
                        ""};
    for (size_t i = 0; i < sizeof(rm) / sizeof(rm[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", root, rm[i]);
        if (unlink(p) != 0)
            rmdir(p);
    }
    unlink(outside);
    unlink(outside2);
}

/* ---------------------------------------------------------------- setup */

static int setup(void **state)
{
    (void)state;
    if (mkdtemp(dir) == NULL || chmod(dir, 0711) != 0)
        return -1;
    in_dir(work, sizeof(work), "work");
    in_dir(out_file, sizeof(out_file), "out.txt");
    in_dir(err_file, sizeof(err_file), "err.txt");
    in_dir(prompt, sizeof(prompt), "prompt.md");
    in_dir(tools, sizeof(tools), "tools");
    in_dir(secret, sizeof(secret), "secret.txt");
    if (mkdir(work, 0755) != 0 || mkdir(tools, 0755) != 0)
        return -1;
    char p[700];
    FILE *f;
    const struct {
        const char *name, *text;
        mode_t mode;
    } files[] = {
        {"prompt.md", "# The task\n", 0644},
        {"secret.txt", "top-secret\n", 0644},
        {"tools/hello.sh", "#!/bin/sh\necho hello from tools\n", 0755},
        {"bin/agent.sh",
         "#!/bin/sh\necho \"agent $# $1\"\n"
         "[ -e \"$(dirname \"$0\")/other.txt\" ] && echo other visible || echo other hidden\n"
         "(echo x >> \"$0\") 2>/dev/null && echo rw || echo ro\n",
         0755},
        {"bin/other.txt", "other\n", 0644},
    };
    in_dir(p, sizeof(p), "bin");
    if (mkdir(p, 0755) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        in_dir(p, sizeof(p), files[i].name);
        if ((f = fopen(p, "w")) == NULL)
            return -1;
        fputs(files[i].text, f);
        fclose(f);
        chmod(p, files[i].mode);
    }

    cmd_error cerr;
    port_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    pthread_mutex_init(&ctx.lock, NULL);
    ctx.config = json_object();
    int rc = sandbox_config_load(&base, &ctx, "sb", &cerr);
    json_decref(ctx.config);
    pthread_mutex_destroy(&ctx.lock);
    if (rc != 0)
        return -1;
    char err[512] = "";
    if (sandbox_own(&base, work, err, sizeof(err)) != 0) {
        fprintf(stderr, "sandbox_own: %s\n", err);
        return -1;
    }
    usable = sandbox_probe(&base, why_not, sizeof(why_not)) == 0;
    if (!usable)
        fprintf(stderr, "bwrap cannot run here, the sandbox tests are skipped: %s\n", why_not);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"out.txt",
                           "err.txt",
                           "prompt.md",
                           "secret.txt",
                           "tools/hello.sh",
                           "bin/agent.sh",
                           "bin/other.txt",
                           "tools",
                           "bin",
                           "work",
                           NULL};
    char p[700];
    for (size_t i = 0; names[i] != NULL; i++) {
        in_dir(p, sizeof(p), names[i]);
        if (unlink(p) != 0)
            rmdir(p);
    }
    sandbox_config_free(&base);
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_probe),
        cmocka_unit_test(test_writable_dir_and_private_tmp),
        cmocka_unit_test(test_nothing_else_writable),
        cmocka_unit_test(test_outside_invisible),
        cmocka_unit_test(test_read_only_binds),
        cmocka_unit_test(test_private_proc),
        cmocka_unit_test(test_environment_exact),
        cmocka_unit_test(test_no_env_on_command_line),
        cmocka_unit_test(test_network),
        cmocka_unit_test(test_no_process_left),
        cmocka_unit_test(test_fork_bomb),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_file_and_tmpfs_limits),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_mode_none_and_half_a_sandbox),
        cmocka_unit_test(test_unreachable_dir),
        cmocka_unit_test(test_own_tree),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
