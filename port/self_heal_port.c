/*
 * self_heal_port: the program that does SelfHeal's slow, networked and
 * dangerous work. The BEAM (SelfHeal.Port) drives it over stdin/stdout;
 * docs/port-protocol.md has the same grammar with the command list.
 *
 * Protocol (the BEAM opens it with {packet, 4}):
 *   frame        = length:32/big, payload:length/bytes   (length <= 8 MiB)
 *   payload      = a JSON object (UTF-8)
 *   request      = {"id": <integer>, "cmd": <string>, "args": <object, optional>}
 *   reply        = {"id": <same>, "ok": <object>}
 *                | {"id": <same or null>, "error": {"code": <string>, "message": <string>}}
 *   notification = {"event": <string>, ...}              (port -> BEAM only)
 *
 * Protocol error codes (commands add their own, e.g. "bad_args"):
 *   bad_json         the payload is not valid JSON              (id null)
 *   bad_request      not an object, no integer id, cmd not a string,
 *                    args not an object                         (id null when absent)
 *   unknown_command  no module declares cmd
 *   frame_too_large  declared length over 8 MiB; the payload is skipped
 *                    as it arrives, never buffered               (id null)
 *   busy             the worker queue is full; retry later
 *   stopping         the port is shutting down
 *   internal         out of memory or a command failed without a reason
 *
 * Threading: one reader thread polls stdin and a self-pipe fed by the
 * SIGTERM/SIGINT/SIGCHLD handlers. Commands flagged CMD_INLINE (version,
 * ping, configure) run on the reader thread, in arrival order; every other
 * command is queued to a fixed pool of worker threads ("port.workers",
 * 1..32, default 4; "port.queue", default 1024 waiting jobs), and its reply
 * is written by the worker that ran it. Replies may therefore come out of
 * request order: match them by id. Frames are written whole under one
 * mutex. A queued request holds a pin (port/core/ctx.h) on the configuration,
 * scrubber, state and audit log in effect when it arrived, released once
 * its reply is written: a later configure never changes or frees them
 * under it.
 *
 * Process lifetime: at start the process splits (port/core/watchdog.h): it
 * stays a watchdog, the parent, which forwards SIGTERM/SIGINT/SIGHUP,
 * kills what an earlier run killed whole (watchdog and server together)
 * left behind and, when the server dies however it dies, kills and reaps
 * everything the server started; its forked child serves. The server is a
 * child subreaper (every process it starts stays its descendant, whatever
 * its session or process group), reaps the orphans handed to it without
 * taking the exit status of a child a command waits for (port/core/proc.h), and
 * marks its children's environment with its run.
 *
 * Shutdown (EOF on stdin, SIGTERM, SIGINT or SIGHUP): stop reading, refuse
 * new children, drop queued jobs, SIGTERM every child process group and
 * every other descendant, SIGKILL them after 0.5 s (until none is left),
 * wait up to 1.5 s in all for the workers (running commands see
 * ctx.stopping), close the modules, exit 0. Workers still busy at the
 * deadline are abandoned: the process exits anyway (_exit). A frame cut
 * short by EOF is discarded. When the watchdog dies (kill -9 of the pid
 * the BEAM knows) the server freezes and kills every descendant and exits
 * at once, as a crash would, without a word more to the BEAM.
 *
 * Shell use: `self_heal_port run CMD [--args FILE] [--config FILE]` runs one
 * command on the main thread and prints the reply's JSON on stdout (exit 0
 * on ok, 1 on error, 2 on usage). `self_heal_port group` groups log lines
 * on stdin with the template miner (analysis/mine_cli.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "cmd.h"
#include "exec.h"
#include "packet.h"
#include "mine_cli.h"
#include "http.h"
#include "fix.h"
#include "modules.h"
#include "pool.h"
#include "proc.h"
#include "self_heal/scrub.h"
#include "service.h"
#include "watchdog.h"

#define SELF_HEAL_VERSION "0.1.0"
#define PROTOCOL_VERSION 1
#define READ_CHUNK 65536
#define SLEEP_MAX_MS 600000
#define SPAWN_SLEEP_MAX_S 3600
#define STEP_MS 10
#define CHILD_GRACE_MS 500
#define SHUTDOWN_MS 1500
#define LEFT_BEHIND_MS 2000 /* killing what an earlier run left, at start */

static port_ctx ctx = {.lock = PTHREAD_MUTEX_INITIALIZER};
static frame_writer out;
static port_pool *pool;
static int signal_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_requested; /* also set when the self-pipe is full */

/* ------------------------------------------------------------ commands */

static json_t *cmd_version(port_ctx *c, json_t *args, cmd_error *err)
{
    (void)c;
    (void)args;
    (void)err;
    return json_pack("{s:s, s:i, s:s}", "version", SELF_HEAL_VERSION, "protocol", PROTOCOL_VERSION,
                     "jansson", JANSSON_VERSION);
}

static json_t *cmd_ping(port_ctx *c, json_t *args, cmd_error *err)
{
    (void)c;
    (void)args;
    (void)err;
    return json_pack("{s:b}", "pong", 1);
}

/* configure: replaces the whole configuration, then lets the modules
 * (state, audit, scrubber) open what it names. */
static json_t *cmd_configure(port_ctx *c, json_t *args, cmd_error *err)
{
    if (args == NULL || !json_is_object(args)) {
        cmd_error_set(err, "bad_args", "configure needs an object");
        return NULL;
    }
    port_set_config(c, json_deep_copy(args)); /* pinned requests keep the old one */
    if (port_configure_modules(c, err) != 0)
        return NULL;
    json_t *fix = fix_config_status(c, err);
    if (fix == NULL)
        return NULL; /* the fix loop's configuration is unusable: said at once */
    if (service_fix_status(c, fix, err) != 0) { /* and each service's */
        json_decref(fix);
        return NULL;
    }
    /* what opening the audit log found: "ok": false after a broken chain */
    return json_pack("{s:b, s:o, s:o*}", "configured", 1, "fix", fix, "audit",
                     audit_status(port_audit(c)));
}

/* An integer argument in [lo, hi]; -1 with err set otherwise. */
static int int_arg(long long *out_v, json_t *args, const char *key, long long lo, long long hi,
                   cmd_error *err)
{
    json_t *v = args != NULL ? json_object_get(args, key) : NULL;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        cmd_error_set(err, "bad_args", "%s must be an integer from %lld to %lld", key, lo, hi);
        return -1;
    }
    *out_v = (long long)json_integer_value(v);
    return 0;
}

/* sleep {"ms": n}: waits n ms on a worker in small steps, giving up when the
 * port stops. For tests of concurrency and shutdown. */
static json_t *cmd_sleep(port_ctx *c, json_t *args, cmd_error *err)
{
    long long ms = 0;
    if (int_arg(&ms, args, "ms", 0, SLEEP_MAX_MS, err) != 0)
        return NULL;
    if (port_sleep_ms((long)ms, &c->stopping) != 0) {
        cmd_error_set(err, "stopping", "the port is shutting down");
        return NULL;
    }
    return json_pack("{s:I}", "slept_ms", (json_int_t)ms);
}

/* Runs argv as a child in its own process group, announces it with a
 * "child_started" notification ({"pid": pid, "pgid": pid}) and waits for
 * it (killing its group when the port stops). */
static json_t *spawn_and_wait(port_ctx *c, const char *const *argv, const char *const *envp,
                              cmd_error *err)
{
    proc_spec spec = {.argv = argv, .envp = envp};
    char reason[256];
    pid_t pid = 0;
    if (proc_spawn(&pid, &spec, reason, sizeof(reason)) != 0) {
        cmd_error_set(err, "spawn_failed", "%s", reason);
        return NULL;
    }
    port_notify(c, "child_started",
                json_pack("{s:I, s:I}", "pid", (json_int_t)pid, "pgid", (json_int_t)pid));
    int status = 0;
    int rc;
    while ((rc = proc_wait(&status, pid, 100)) == 1) {
        if (c->stopping) {
            proc_kill(pid, SIGKILL);
            proc_wait(NULL, pid, 1000);
            cmd_error_set(err, "stopping", "the port is shutting down");
            return NULL;
        }
    }
    if (rc != 0) {
        cmd_error_set(err, "internal", "lost track of child %lld", (long long)pid);
        return NULL;
    }
    if (c->stopping) { /* the shutdown killed it */
        cmd_error_set(err, "stopping", "the port is shutting down");
        return NULL;
    }
    if (WIFSIGNALED(status))
        return json_pack("{s:I, s:i}", "pid", (json_int_t)pid, "signal", WTERMSIG(status));
    return json_pack("{s:I, s:i}", "pid", (json_int_t)pid, "exit_status", WEXITSTATUS(status));
}

/* spawn_sleep {"seconds": n}: a diagnostic. Runs `sleep n` (spawn_and_wait),
 * so tests can check that shutdown leaves no child behind. */
static json_t *cmd_spawn_sleep(port_ctx *c, json_t *args, cmd_error *err)
{
    long long seconds = 0;
    if (int_arg(&seconds, args, "seconds", 0, SPAWN_SLEEP_MAX_S, err) != 0)
        return NULL;
    char arg[32];
    snprintf(arg, sizeof(arg), "%lld", seconds);
    const char *argv[] = {"sleep", arg, NULL};
    return spawn_and_wait(c, argv, NULL, err);
}

/* spawn {"argv": [...]}: a diagnostic for tests and benchmarks of process
 * lifetime. Runs argv (an argv vector, never through a shell) as
 * spawn_sleep runs sleep, with exec's base environment. Refused unless the
 * configuration sets port.diagnostics to true. */
static json_t *cmd_spawn(port_ctx *c, json_t *args, cmd_error *err)
{
    json_t *flag = port_config_get(c, "port.diagnostics");
    int allowed = json_is_true(flag);
    json_decref(flag);
    if (!allowed) {
        cmd_error_set(err, "disabled", "spawn needs port.diagnostics set to true");
        return NULL;
    }
    char why[256];
    char **argv = exec_expand(args != NULL ? json_object_get(args, "argv") : NULL, NULL, NULL, 0,
                              why, sizeof(why));
    if (argv == NULL) {
        cmd_error_set(err, "bad_args", "argv: %s", why);
        return NULL;
    }
    char **envp = exec_env(NULL, NULL, NULL, 0);
    json_t *reply = NULL;
    if (envp == NULL)
        cmd_error_set(err, "internal", "out of memory");
    else
        reply = spawn_and_wait(c, (const char *const *)argv, (const char *const *)envp, err);
    exec_argv_free(envp);
    exec_argv_free(argv);
    return reply;
}

/* scrub {"text": s}: s with secrets and personal data replaced by
 * [REDACTED:kind] markers (the configured scrubber, else the built-in
 * rules) -> {"text": scrubbed, "redactions": n}. */
static json_t *cmd_scrub(port_ctx *c, json_t *args, cmd_error *err)
{
    json_t *text = args != NULL ? json_object_get(args, "text") : NULL;
    if (!json_is_string(text)) {
        cmd_error_set(err, "bad_args", "text must be a string");
        return NULL;
    }
    sh_buf buf;
    sh_buf_init(&buf);
    sh_scrub_stats stats = {0};
    sh_scrub(port_scrubber(c), json_string_value(text), json_string_length(text), &buf, &stats);
    json_t *reply = NULL;
    if (buf.oom)
        cmd_error_set(err, "internal", "out of memory");
    else
        reply = json_pack("{s:s%, s:I}", "text", buf.data != NULL ? buf.data : "", buf.len,
                          "redactions", (json_int_t)stats.redactions);
    sh_buf_free(&buf);
    return reply;
}

const cmd_def *core_commands(size_t *n)
{
    static const cmd_def cmds[] = {
        {"version", cmd_version, CMD_INLINE},
        {"ping", cmd_ping, CMD_INLINE},
        {"configure", cmd_configure, CMD_INLINE},
        {"sleep", cmd_sleep, 0},
        {"spawn_sleep", cmd_spawn_sleep, 0},
        {"spawn", cmd_spawn, 0},
        {"scrub", cmd_scrub, 0},
    };
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}

typedef const cmd_def *(*cmd_table_fn)(size_t *n);
static const cmd_table_fn cmd_tables[] = {core_commands,   state_commands,  analyze_commands,
                                          ticket_commands, notify_commands, pipeline_commands,
                                          fix_commands,    dash_commands,   trust_commands};

static const cmd_def *find_command(const char *name)
{
    for (size_t t = 0; t < sizeof(cmd_tables) / sizeof(cmd_tables[0]); t++) {
        size_t n = 0;
        const cmd_def *defs = cmd_tables[t](&n);
        for (size_t i = 0; i < n; i++)
            if (defs[i].name != NULL && strcmp(defs[i].name, name) == 0)
                return &defs[i];
    }
    return NULL;
}

/* ------------------------------------------------------------ requests */

static json_t *error_reply(json_t *id, const char *code, const char *message)
{
    json_t *reply = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
    if (reply != NULL)
        json_object_set(reply, "id", json_is_integer(id) ? id : json_null());
    return reply;
}

/* Checks a request object. Returns its command, or NULL with the error
 * reply in *reply. */
static const cmd_def *request_check(json_t **reply, json_t *req)
{
    json_t *id = json_object_get(req, "id");
    json_t *cmd = json_object_get(req, "cmd");
    json_t *args = json_object_get(req, "args");
    const cmd_def *def = NULL;
    if (!json_is_integer(id))
        *reply = error_reply(NULL, "bad_request", "request needs an integer id");
    else if (!json_is_string(cmd))
        *reply = error_reply(id, "bad_request", "request needs a string cmd");
    else if (args != NULL && !json_is_object(args))
        *reply = error_reply(id, "bad_request", "args must be an object");
    else if ((def = find_command(json_string_value(cmd))) == NULL)
        *reply = error_reply(id, "unknown_command", "unknown command");
    return def;
}

/* Runs a command; returns the reply (NULL only when out of memory). */
static json_t *request_execute(const cmd_def *def, json_t *id, json_t *args)
{
    cmd_error err = {NULL, ""};
    json_t *ok = def->fn(&ctx, args, &err);
    if (ok == NULL)
        return error_reply(id, err.code != NULL ? err.code : "internal",
                           err.message[0] != '\0' ? err.message : "command failed");
    json_t *reply = json_object();
    if (reply == NULL) {
        json_decref(ok);
        return NULL;
    }
    json_object_set(reply, "id", id);
    json_object_set_new(reply, "ok", ok);
    return reply;
}

/* A request waiting for or running on a worker. It owns the request (no
 * other thread touches it) and a pin on the configuration, scrubber, state
 * and audit log in effect when the request arrived, released once the
 * reply is written. */
typedef struct port_job {
    const cmd_def *def;
    json_t *req;
    port_pin pin;
} port_job;

static void job_free(port_job *job)
{
    port_pin_release(&job->pin);
    json_decref(job->req);
    free(job);
}

/* A queued job the pool dropped at shutdown: answered, not run. */
static void job_drop(void *arg)
{
    port_job *job = arg;
    frame_write_json(&out, error_reply(json_object_get(job->req, "id"), "stopping",
                                       "the port is shutting down"));
    job_free(job);
}

static void job_run(void *arg)
{
    port_job *job = arg;
    port_pin_enter(&job->pin);
    frame_write_json(&out, request_execute(job->def, json_object_get(job->req, "id"),
                                           json_object_get(job->req, "args")));
    port_pin_leave(&job->pin);
    job_free(job);
}

static port_pool *pool_get(void)
{
    if (pool != NULL)
        return pool;
    long long workers = port_config_int(&ctx, "port.workers", POOL_DEFAULT_WORKERS);
    long long queue = port_config_int(&ctx, "port.queue", POOL_DEFAULT_QUEUE);
    if (workers < 1 || workers > POOL_MAX_WORKERS)
        workers = POOL_DEFAULT_WORKERS;
    if (queue < 1 || queue > POOL_MAX_QUEUE)
        queue = POOL_DEFAULT_QUEUE;
    if (pool_new(&pool, (size_t)workers, (size_t)queue) != 0)
        pool = NULL;
    return pool;
}

/* Inline commands run here; others go to the pool, or get "busy". Steals
 * req: a queued request belongs to its job alone. */
static void request_dispatch(json_t *req)
{
    json_t *reply = NULL;
    const cmd_def *def = request_check(&reply, req);
    json_t *id = json_object_get(req, "id");
    json_t *args = json_object_get(req, "args");
    port_pool *p = def != NULL && !(def->flags & CMD_INLINE) ? pool_get() : NULL;
    port_job *job = p != NULL ? malloc(sizeof(*job)) : NULL;
    if (def == NULL)
        frame_write_json(&out, reply);
    else if (def->flags & CMD_INLINE)
        frame_write_json(&out, request_execute(def, id, args));
    else if (job == NULL)
        frame_write_json(&out, error_reply(id, "internal", "cannot start a worker"));
    if (job == NULL) {
        json_decref(req);
        return;
    }
    job->def = def;
    job->req = req;
    port_pin_take(&job->pin, &ctx);
    if (pool_submit(p, job_run, job_drop, job) != 0) {
        frame_write_json(&out, error_reply(id, "busy", "too many requests in progress"));
        job_free(job);
    }
}

static void on_frame(void *opaque, frame_event ev, const char *payload, size_t len)
{
    (void)opaque;
    char message[128];
    if (ev == FRAME_TOO_LARGE) {
        snprintf(message, sizeof(message),
                 "frame of %zu bytes is over the %u byte limit; discarded", len, FRAME_MAX);
        frame_write_json(&out, error_reply(NULL, "frame_too_large", message));
        return;
    }
    if (ev == FRAME_NO_MEMORY) {
        frame_write_json(&out, error_reply(NULL, "internal", "out of memory; frame discarded"));
        return;
    }
    json_error_t jerr;
    json_t *req = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL) {
        frame_write_json(&out, error_reply(NULL, "bad_json", jerr.text));
        return;
    }
    if (!json_is_object(req)) {
        frame_write_json(&out, error_reply(NULL, "bad_request", "a request must be a JSON object"));
        json_decref(req);
        return;
    }
    request_dispatch(req);
}

/* ------------------------------------------------------------ serving */

static void on_signal(int sig)
{
    int saved = errno;
    if (sig != SIGCHLD)
        stop_requested = 1;
    unsigned char b = (unsigned char)sig;
    ssize_t r = write(signal_pipe[1], &b, 1);
    (void)r;
    errno = saved;
}

static int signals_setup(void)
{
    if (pipe(signal_pipe) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC);
        fcntl(signal_pipe[i], F_SETFL, O_NONBLOCK);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Drains the self-pipe. Returns 1 when a stop signal arrived. */
static int signals_drain(void)
{
    unsigned char sigs[64];
    int stop = stop_requested, child = 0;
    ssize_t n;
    while ((n = read(signal_pipe[0], sigs, sizeof(sigs))) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (sigs[i] == SIGCHLD)
                child = 1;
            else
                stop = 1;
        }
    if (child) {
        proc_on_sigchld();
        proc_reap_orphans();
    }
    return stop;
}

/* Stops children and workers; returns 0 when every worker was joined and
 * every other thread released its pin (the modules are then closed), -1
 * when some are still busy. */
static int serve_shutdown(void)
{
    long long start = port_now_ms();
    ctx.stopping = 1;
    proc_set_spawn_allowed(0);
    if (pool != NULL)
        pool_close(pool);
    proc_kill_all(SIGTERM);
    /* and what left its group or session (the port is their subreaper) */
    long others = proc_signal_descendants(SIGTERM);
    while ((proc_live_count() > 0 || others > 0) && port_now_ms() - start < CHILD_GRACE_MS) {
        port_sleep_ms(STEP_MS, NULL);
        others = proc_signal_descendants(0);
    }
    proc_kill_all(SIGKILL);
    proc_kill_descendants(SHUTDOWN_MS);
    if (pool != NULL) {
        long long left = SHUTDOWN_MS - (port_now_ms() - start);
        if (pool_join(pool, left > 0 ? (int)left : 0) != 0)
            return -1;
        pool_free(pool);
        pool = NULL;
    }
    /* fix, deploy and resume threads: gone (they see ctx.stopping), or the
     * caller leaves without running the libraries' exit handlers under them */
    long long left = SHUTDOWN_MS - (port_now_ms() - start);
    if (port_pins_wait(&ctx, left > 0 ? left : 0) != 0)
        return -1;
    port_close_modules(&ctx);
    return 0;
}

/* The server's start: split off the watchdog (which kills what an earlier
 * run left behind), become a subreaper, mark children with this run.
 * Returns the watchdog's pipe (-1: no watchdog). */
static int lifetime_start(void)
{
    int watch_fd = -1;
    pid_t watchdog = 0;
    if (watchdog_split(&watch_fd, &watchdog) != 0) {
        fprintf(stderr, "self_heal_port: no watchdog: %s\n", strerror(errno));
        proc_kill_left_behind(LEFT_BEHIND_MS);
    }
    if (proc_become_subreaper() != 0)
        fprintf(stderr, "self_heal_port: not a subreaper: %s\n", strerror(errno));
    proc_mark_children(watchdog > 0 ? watchdog : getpid());
    return watch_fd;
}

static int serve(void)
{
    frame_reader *reader = NULL;
    static char buf[READ_CHUNK];
    int watch_fd = lifetime_start();
    json_object_seed(0);
    if (signals_setup() != 0 || frame_writer_init(&out, STDOUT_FILENO) != 0 ||
        frame_reader_new(&reader, FRAME_MAX) != 0) {
        fprintf(stderr, "self_heal_port: cannot start: %s\n", strerror(errno));
        return 1;
    }
    frame_install_notify(&out);
    for (;;) {
        struct pollfd fds[3] = {
            {STDIN_FILENO, POLLIN, 0}, {signal_pipe[0], POLLIN, 0}, {watch_fd, POLLIN, 0}};
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if ((fds[2].revents & (POLLIN | POLLHUP | POLLERR)) && watchdog_gone(watch_fd))
            watchdog_lost(); /* kill -9 of the pid the BEAM knows */
        if (((fds[1].revents & POLLIN) && signals_drain()) || stop_requested)
            break;
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0)
                break; /* EOF: the BEAM side is gone; a partial frame is dropped */
            frame_reader_feed(reader, buf, (size_t)n, on_frame, NULL);
        }
    }
    frame_reader_free(reader);
    if (serve_shutdown() != 0)
        _exit(0); /* a worker or a fix thread is stuck in a command: leave without it */
    /* The writer stays installed: a fix, deploy or scheduler thread may
     * still send a notification until the process is gone. */
    return 0;
}

/* ------------------------------------------------------------ shell use */

static int run_once(int argc, char **argv)
{
    const char *cmd = argv[2];
    json_t *args = NULL;
    const char *config_file = getenv("SELF_HEAL_CONFIG");
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--args") == 0 && i + 1 < argc && args == NULL) {
            json_error_t jerr;
            args = json_load_file(argv[++i], JSON_REJECT_DUPLICATES, &jerr);
            if (args == NULL) {
                fprintf(stderr, "self_heal_port: %s: %s\n", argv[i], jerr.text);
                return 2;
            }
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_file = argv[++i];
        } else {
            fprintf(stderr, "usage: self_heal_port run CMD [--args FILE] [--config FILE]\n");
            json_decref(args);
            return 2;
        }
    }
    if (config_file != NULL && config_file[0] != '\0') {
        json_error_t jerr;
        json_t *config = json_load_file(config_file, JSON_REJECT_DUPLICATES, &jerr);
        if (config == NULL || !json_is_object(config)) {
            fprintf(stderr, "self_heal_port: %s: %s\n", config_file,
                    config == NULL ? jerr.text : "not a JSON object");
            json_decref(config);
            json_decref(args);
            return 2;
        }
        cmd_error err = {NULL, ""};
        port_set_config(&ctx, config);
        ctx.one_shot = 1;
        /* verify-audit only reads: opening the log would repair it first */
        if (strcmp(cmd, "verify-audit") != 0 && port_configure_modules(&ctx, &err) != 0) {
            fprintf(stderr, "self_heal_port: %s: %s\n", config_file, err.message);
            json_decref(args);
            port_close_modules(&ctx);
            return 1;
        }
    }
    json_t *req = json_pack("{s:i, s:s}", "id", 1, "cmd", cmd);
    if (args != NULL)
        json_object_set_new(req, "args", args);
    json_t *reply = NULL;
    const cmd_def *def = request_check(&reply, req);
    if (def != NULL) {
        /* Nothing the command started outlives it, whatever its session. */
        proc_become_subreaper();
        proc_mark_children(getpid());
        reply = request_execute(def, json_object_get(req, "id"), json_object_get(req, "args"));
        proc_kill_descendants(SHUTDOWN_MS);
    }
    json_decref(req);
    port_close_modules(&ctx);
    if (reply == NULL)
        return 1;
    int failed = json_object_get(reply, "error") != NULL;
    json_dumpf(reply, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(reply);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    /* libcurl's global state, before any thread exists */
    if (http_global_init() != 0) {
        fprintf(stderr, "self_heal_port: libcurl initialisation failed\n");
        return 1;
    }
    if (argc >= 3 && strcmp(argv[1], "run") == 0)
        return run_once(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "group") == 0)
        return group_main(argc, argv);
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("self_heal_port %s\n", SELF_HEAL_VERSION);
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: self_heal_port            (serve {packet,4} JSON on stdin)\n"
                        "       self_heal_port run CMD [--args FILE] [--config FILE]\n"
                        "       self_heal_port group [--stream] [--templates] [--state FILE]\n");
        return 2;
    }
    return serve();
}
