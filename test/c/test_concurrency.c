/* Concurrency of the port program, as a real process: the binary named by
 * SELF_HEAL_PORT_BIN (priv/self_heal_port by default; `make ctest` and
 * `make ctest-tsan` give each build its own: plain, ASan + UBSan, TSan)
 * spoken to over its framing on stdin/stdout. Configure storms while
 * notify, scrub and analyze requests are in flight on every worker, well
 * past 64 reconfigurations; concurrent commands sharing one state
 * directory; state_dir switches under load; EOF and SIGTERM while commands
 * and a child process run. The port must answer every request exactly
 * once, exit 0, and its stderr must hold no sanitizer report. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "packet.h"
#include "modules.h"
#include "self_heal/scrub.h"
#include "state.h"
#include "tree.h"
#include "test_procs.h"

#define MAX_IDS 8192
#define ANSWER_MS 240000 /* generous: sanitizer builds on a loaded machine */
#define EXIT_MS 30000

/* ---------------------------------------------------------------- the port */

typedef struct port_run {
    pid_t pid;
    int in;  /* the port's stdin */
    int out; /* the port's stdout */
    char err_path[64];
    frame_writer w;
    pthread_t reader;
    pthread_mutex_t lock; /* guards what the reader thread fills in */
    json_t **replies;     /* by id */
    size_t answered;
    int duplicates;
    int null_ids;
    json_t *events; /* notifications, in arrival order */
    int eof;
} port_run;

static const char *port_bin(void)
{
    const char *bin = getenv("SELF_HEAL_PORT_BIN");
    return bin != NULL && bin[0] != '\0' ? bin : "priv/self_heal_port";
}

static void on_frame(void *opaque, frame_event ev, const char *payload, size_t len)
{
    port_run *run = opaque;
    json_t *msg = ev == FRAME_PAYLOAD ? json_loadb(payload, len, 0, NULL) : NULL;
    pthread_mutex_lock(&run->lock);
    json_t *id = json_object_get(msg, "id");
    if (json_object_get(msg, "event") != NULL) {
        json_array_append(run->events, msg);
    } else if (json_is_integer(id) && json_integer_value(id) > 0 &&
               json_integer_value(id) < MAX_IDS) {
        json_int_t i = json_integer_value(id);
        if (run->replies[i] != NULL) {
            run->duplicates++;
        } else {
            run->replies[i] = json_incref(msg);
            run->answered++;
        }
    } else {
        run->null_ids++;
    }
    pthread_mutex_unlock(&run->lock);
    json_decref(msg);
}

static void *read_replies(void *arg)
{
    port_run *run = arg;
    frame_reader *r = NULL;
    if (frame_reader_new(&r, 0) == 0) {
        char buf[65536];
        ssize_t n;
        while ((n = read(run->out, buf, sizeof(buf))) != 0) {
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                break;
            frame_reader_feed(r, buf, (size_t)n, on_frame, run);
        }
        frame_reader_free(r);
    }
    pthread_mutex_lock(&run->lock);
    run->eof = 1;
    pthread_mutex_unlock(&run->lock);
    return NULL;
}

static void cloexec(int fd)
{
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* The port started by the running test and not finished yet: a test that
 * fails midway leaves it to the teardown. */
static port_run *live_run;

static port_run *port_start(void)
{
    port_run *run = calloc(1, sizeof(*run));
    assert_non_null(run);
    run->replies = calloc(MAX_IDS, sizeof(*run->replies));
    run->events = json_array();
    assert_non_null(run->replies);
    pthread_mutex_init(&run->lock, NULL);
    snprintf(run->err_path, sizeof(run->err_path), "/tmp/sh_conc_err_XXXXXX");
    int err_fd = mkstemp(run->err_path);
    assert_true(err_fd >= 0);
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    cloexec(in[1]);
    cloexec(out[0]);
    run->pid = fork();
    assert_true(run->pid >= 0);
    if (run->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err_fd, 2);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execl(port_bin(), port_bin(), (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err_fd);
    run->in = in[1];
    run->out = out[0];
    assert_int_equal(frame_writer_init(&run->w, run->in), 0);
    assert_int_equal(pthread_create(&run->reader, NULL, read_replies, run), 0);
    live_run = run;
    return run;
}

/* Sends {"id", "cmd", "args"}; steals args (may be NULL). */
static void port_send(port_run *run, int id, const char *cmd, json_t *args)
{
    assert_true(id > 0 && id < MAX_IDS);
    json_t *req = json_pack("{s:i, s:s}", "id", id, "cmd", cmd);
    if (args != NULL)
        json_object_set_new(req, "args", args);
    frame_write_json(&run->w, req); /* a port that died shows in the replies */
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = text != NULL ? fread(text, 1, (size_t)(n > 0 ? n : 0), f) : 0;
    fclose(f);
    if (text != NULL)
        text[got] = '\0';
    return text;
}

/* The port's stderr, shown when something fails. */
static void show_stderr(port_run *run)
{
    char *text = slurp(run->err_path);
    if (text != NULL && text[0] != '\0')
        fprintf(stderr, "---- the port's stderr ----\n%s\n---- end ----\n", text);
    free(text);
}

/* Waits until ids from..n all have a reply; fails when the port is gone
 * or the time is up first. */
static void port_wait_range(port_run *run, int from, int n)
{
    long long deadline = now_ms() + ANSWER_MS;
    pthread_mutex_lock(&run->lock);
    for (;;) {
        int missing = 0;
        for (int i = from; i <= n && !missing; i++)
            missing = run->replies[i] == NULL;
        if (!missing || run->eof || now_ms() > deadline)
            break;
        pthread_mutex_unlock(&run->lock);
        nap_ms(5);
        pthread_mutex_lock(&run->lock);
    }
    int first_missing = 0;
    for (int i = from; i <= n && first_missing == 0; i++)
        if (run->replies[i] == NULL)
            first_missing = i;
    size_t answered = run->answered;
    int eof = run->eof;
    pthread_mutex_unlock(&run->lock);
    if (first_missing != 0) {
        int status = 0;
        pid_t w = eof ? waitpid(run->pid, &status, 0) : 0;
        show_stderr(run);
        if (w == run->pid && WIFSIGNALED(status))
            fail_msg("the port died of signal %d after %zu of %d replies", WTERMSIG(status),
                     answered, n);
        fail_msg("request %d unanswered (%zu of %d replies; port %s)", first_missing, answered, n,
                 eof ? "gone" : "still running");
    }
}

/* Waits until ids 1..n all have a reply. */
static void port_wait_answered(port_run *run, int n)
{
    port_wait_range(run, 1, n);
}

/* The reply to id (borrowed; NULL when none came). */
static json_t *reply_of(port_run *run, int id)
{
    pthread_mutex_lock(&run->lock);
    json_t *r = run->replies[id];
    pthread_mutex_unlock(&run->lock);
    return r;
}

static json_t *ok_of(port_run *run, int id)
{
    json_t *r = reply_of(run, id);
    json_t *ok = json_object_get(r, "ok");
    if (ok == NULL) {
        char *text = r != NULL ? json_dumps(r, JSON_COMPACT) : NULL;
        fail_msg("request %d: %s", id, text != NULL ? text : "no reply");
    }
    return ok;
}

/* The "status" of an answer ("none" without one). */
static const char *status_of(json_t *ok)
{
    const char *st = json_string_value(json_object_get(ok, "status"));
    return st != NULL ? st : "none";
}

/* Sends cmd (a copy of args each time) every 50 ms until done() accepts
 * its answer or the time is up; returns the last answer (borrowed). Steals
 * args (may be NULL). */
typedef int (*poll_done)(port_run *run, int *id, json_t *ok, void *arg);

static json_t *poll_until(port_run *run, int *id, const char *cmd, json_t *args, poll_done done,
                          void *arg)
{
    long long deadline = now_ms() + ANSWER_MS;
    json_t *ok = NULL;
    while (now_ms() < deadline) {
        port_send(run, ++*id, cmd, json_deep_copy(args));
        port_wait_range(run, *id, *id);
        ok = ok_of(run, *id);
        if (done(run, id, ok, arg))
            break;
        nap_ms(50);
    }
    json_decref(args);
    return ok;
}

/* Waits for ids 1..n, each answered ok. */
static void port_wait_all_ok(port_run *run, int n)
{
    port_wait_answered(run, n);
    for (int i = 1; i <= n; i++)
        ok_of(run, i);
}

static const char *error_code_of(port_run *run, int id)
{
    return json_string_value(json_object_get(json_object_get(reply_of(run, id), "error"), "code"));
}

/* Ends the port: closes its stdin (unless it was signalled), waits up to
 * ms for its exit, kills it when it is still there, collects the reader.
 * Returns 1 when it exited by itself; *status is its wait status. */
static int port_reap(port_run *run, int close_stdin, int ms, int *status)
{
    long long start = now_ms();
    if (close_stdin)
        close(run->in);
    pid_t w = 0;
    while ((w = waitpid(run->pid, status, WNOHANG)) == 0 && now_ms() - start < ms)
        nap_ms(5);
    if (w == 0) {
        kill(run->pid, SIGKILL);
        waitpid(run->pid, status, 0);
    }
    if (!close_stdin)
        close(run->in);
    frame_writer_close(&run->w);
    pthread_join(run->reader, NULL);
    close(run->out);
    live_run = NULL;
    return w != 0;
}

/* Closes stdin (or not, when the port was signalled) and waits for the
 * port's exit: it must exit 0 within ms, with no sanitizer report. */
static void port_finish(port_run *run, int close_stdin, int ms)
{
    int status = 0;
    int exited = port_reap(run, close_stdin, ms, &status);
    char *err = slurp(run->err_path);
    int reported =
        err != NULL && (strstr(err, "Sanitizer") != NULL || strstr(err, "runtime error") != NULL);
    if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || reported)
        show_stderr(run);
    free(err);
    assert_int_equal(run->duplicates, 0);
    if (!exited)
        fail_msg("the port did not exit within %d ms", ms);
    if (WIFSIGNALED(status))
        fail_msg("the port died of signal %d", WTERMSIG(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_false(reported);
}

static void port_free(port_run *run)
{
    unlink(run->err_path);
    for (int i = 0; i < MAX_IDS; i++)
        json_decref(run->replies[i]);
    free(run->replies);
    json_decref(run->events);
    pthread_mutex_destroy(&run->lock);
    free(run);
}

/* After each test that starts a port: one a failure left running is
 * killed, so it cannot hold anything the next test uses. */
static int teardown_port(void **state)
{
    (void)state;
    port_run *run = live_run;
    if (run != NULL) {
        int status = 0;
        kill(run->pid, SIGKILL);
        port_reap(run, 1, 0, &status);
        port_free(run);
    }
    return 0;
}

/* ---------------------------------------------------------------- payloads */

/* Scrubbing takes time on a long text: a configure arriving meanwhile
 * replaces the scrubber under it. */
static char *long_text(void)
{
    size_t cap = 16384, len = 0;
    char *t = malloc(cap);
    assert_non_null(t);
    while (len + 128 < cap)
        len += (size_t)snprintf(t + len, cap - len,
                                "order ord-12 invoice inv-34 password=hunter2 user bob@example.com "
                                "at 10.0.0.%zu; ",
                                len % 200);
    return t;
}

static json_t *round_config(const char *pattern, const char *state_dir)
{
    json_t *c = json_pack("{s:{s:i, s:i}, s:{s:[s]}, s:{s:[]}, s:{s:s}}", "port", "workers", 4,
                          "queue", 4096, "scrub", "patterns", pattern, "notify", "channels",
                          "tickets", "backend", "local");
    if (state_dir != NULL)
        json_object_set_new(c, "state_dir", json_string(state_dir));
    return c;
}

static json_t *notify_args(const char *text)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:i}", "kind", "ticket", "fingerprint", "fp-storm",
                     "service", "api", "error", text, "count", 3);
}

static json_t *analyze_args(const char *text, int n)
{
    char id[32];
    snprintf(id, sizeof(id), "g-%d", n);
    return json_pack("{s:[{s:s, s:I, s:I, s:i, s:s, s:s, s:s, s:s, s:[], s:[s]}]}", "groups", "id",
                     id, "first_seen", (json_int_t)1790000000000LL, "last_seen",
                     (json_int_t)1790000005000LL, "count", 10, "service", "api", "type",
                     "RuntimeError", "message", text, "severity", "high", "frames", "samples",
                     text);
}

/* A fresh directory base/leaf under /tmp; *base is what to remove. */
static char *make_dir(char **base, const char *leaf)
{
    char tmpl[] = "/tmp/sh_conc_XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    *base = strdup(tmpl);
    char *dir = malloc(strlen(tmpl) + strlen(leaf) + 2);
    assert_non_null(dir);
    sprintf(dir, "%s/%s", tmpl, leaf);
    assert_int_equal(mkdir(dir, 0700), 0);
    return dir;
}

/* Two state directories, a and b, in directories of their own. */
typedef struct two_dirs {
    char *base[2];
    char *dir[2];
} two_dirs;

static void two_dirs_make(two_dirs *d)
{
    d->dir[0] = make_dir(&d->base[0], "a");
    d->dir[1] = make_dir(&d->base[1], "b");
}

static void two_dirs_remove(two_dirs *d)
{
    for (int i = 0; i < 2; i++) {
        tree_remove(d->base[i]);
        free(d->base[i]);
        free(d->dir[i]);
    }
}

/* Whether s holds needle. */
static int has(const char *s, const char *needle)
{
    return s != NULL && strstr(s, needle) != NULL;
}

/* ---------------------------------------------------------------- storms */

#define STORM_ROUNDS 160
#define STORM_PER_ROUND 20

/* A model provider nobody listens for: analyze reserves and records its
 * budget in memory, fails fast and falls back to the offline analyzer. */
static json_t *unreachable_model(void)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:{s:i, s:i, s:i}}", "provider", "openai",
                     "endpoint", "http://127.0.0.1:9/v1", "api_key_env", "SH_CONC_MODEL_KEY",
                     "max_attempts", 1, "timeout_ms", 2000, "budget", "calls_per_hour", 1000000,
                     "spend_per_day_usd", 1000, "price_in_per_mtok", 1);
}

/* A configure, then 20 requests (notify, scrub, analyze) on four
 * workers, 160 times: each configure replaces the scrubber while workers
 * scrub with it (and every third one names a model, so analyses also
 * count budgets). Each scrub request sees the patterns of the configure
 * before it, not a later one. */
static void test_configure_storm(void **state)
{
    (void)state;
    char *text = long_text();
    int *round_of = calloc(MAX_IDS, sizeof(int));
    char *kind_of = calloc(MAX_IDS, 1);
    assert_non_null(round_of);
    assert_non_null(kind_of);
    setenv("SH_CONC_MODEL_KEY", "not-a-key", 1);
    port_run *run = port_start();
    int id = 0;
    for (int r = 0; r < STORM_ROUNDS; r++) {
        json_t *cfg = round_config(r % 2 ? "inv-[0-9]+" : "ord-[0-9]+", NULL);
        if (r % 3 == 0)
            json_object_set_new(cfg, "llm", unreachable_model());
        port_send(run, ++id, "configure", cfg);
        kind_of[id] = 'c';
        for (int k = 0; k < STORM_PER_ROUND; k++) {
            round_of[++id] = r;
            switch (k % 5) {
            case 0:
            case 1:
                kind_of[id] = 'n';
                port_send(run, id, "notify", notify_args(text));
                break;
            case 2:
            case 3:
                kind_of[id] = 's';
                port_send(run, id, "scrub", json_pack("{s:s}", "text", text));
                break;
            default:
                kind_of[id] = 'a';
                port_send(run, id, "analyze", analyze_args(text, id));
                break;
            }
        }
    }
    port_wait_answered(run, id);
    for (int i = 1; i <= id; i++) {
        json_t *ok = ok_of(run, i);
        if (kind_of[i] == 'c') {
            assert_true(json_is_true(json_object_get(ok, "configured")));
        } else if (kind_of[i] == 's') {
            const char *out = json_string_value(json_object_get(ok, "text"));
            int odd = round_of[i] % 2;
            if (has(out, odd ? "inv-34" : "ord-12") || !has(out, odd ? "ord-12" : "inv-34"))
                fail_msg("scrub %d (after configure %d) used another configuration's patterns", i,
                         round_of[i] + 1);
            assert_false(has(out, "hunter2"));
        } else if (kind_of[i] == 'a') {
            assert_string_equal(json_string_value(json_object_get(ok, "analyzer")), "offline");
        }
    }
    port_finish(run, 1, EXIT_MS);
    unsetenv("SH_CONC_MODEL_KEY");
    port_free(run);
    free(round_of);
    free(kind_of);
    free(text);
}

/* ---------------------------------------------------------------- shared state */

static json_t *ticket_issue(const char *fp, int count)
{
    return json_pack("{s:s, s:s, s:[s], s:f, s:[{s:s, s:i, s:s, s:s}]}", "root_cause",
                     "Database pool exhausted", "severity", "high", "group_ids", fp, "confidence",
                     0.5, "groups", "id", fp, "count", count, "message",
                     "pool timeout password=hunter2 ord-12", "service", "shop");
}

#define SHARED_N 48

/* Escalations (analysis, ticket, notification job, audit records each),
 * upserts of one ticket, job listings and audit checks at once on one
 * state directory, with configures in between: every request answered,
 * every escalation done, the audit chain intact. */
static void test_shared_state(void **state)
{
    (void)state;
    char *base = NULL;
    char *dir = make_dir(&base, "state");
    port_run *run = port_start();
    int id = 0;
    port_send(run, ++id, "configure", round_config("ord-[0-9]+", dir));
    int escalations[SHARED_N], upserts[SHARED_N];
    for (int i = 0; i < SHARED_N; i++) {
        char gid[32];
        snprintf(gid, sizeof(gid), "fp-shared-%d", i);
        escalations[i] = ++id;
        json_t *args = analyze_args("connection refused ord-12", i); /* {"groups": [g]} */
        json_object_set_new(json_array_get(json_object_get(args, "groups"), 0), "id",
                            json_string(gid));
        port_send(run, id, "escalate", args);
        upserts[i] = ++id;
        port_send(run, id, "ticket_upsert", ticket_issue("fp-one", i + 1));
        port_send(run, ++id, "jobs", json_pack("{s:i}", "limit", 50));
        if (i % 8 == 7)
            port_send(run, ++id, "configure",
                      round_config(i % 16 == 7 ? "inv-[0-9]+" : "ord-[0-9]+", dir));
        if (i % 12 == 11)
            port_send(run, ++id, "verify-audit", NULL);
    }
    port_wait_answered(run, id);
    for (int i = 0; i < SHARED_N; i++) {
        json_t *esc = ok_of(run, escalations[i]);
        assert_int_equal(json_array_size(json_object_get(esc, "tickets")), 1);
        /* one ticket, upserted by several workers at once: a second upsert
         * of the same job while the first runs is refused as in_progress
         * (its count is not asserted) */
        const char *code = error_code_of(run, upserts[i]);
        if (code != NULL)
            assert_string_equal(code, "in_progress");
    }
    for (int i = 1, u = 0; i <= id; i++) {
        if (u < SHARED_N && i == upserts[u])
            u++;
        else
            ok_of(run, i);
    }
    port_send(run, ++id, "verify-audit", NULL);
    port_send(run, ++id, "jobs", json_pack("{s:s, s:i}", "status", "done", "limit", 500));
    port_wait_answered(run, id);
    json_t *audit = ok_of(run, id - 1);
    assert_true(json_is_true(json_object_get(audit, "ok")));
    size_t i;
    json_t *job;
    int done = 0;
    json_array_foreach(json_object_get(ok_of(run, id), "jobs"), i, job) done +=
        strcmp(json_string_value(json_object_get(job, "kind")), "escalate") == 0;
    assert_int_equal(done, SHARED_N);
    port_finish(run, 1, EXIT_MS);
    port_free(run);
    tree_remove(base);
    free(base);
    free(dir);
}

/* Lines of path holding needle. */
static int count_lines(const char *path, const char *needle)
{
    char *text = slurp(path);
    int n = 0;
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        char *copy = strndup(line, len);
        n += has(copy, needle);
        free(copy);
        line = end != NULL ? end + 1 : NULL;
    }
    free(text);
    return n;
}

#define SWITCH_ROUNDS 100

/* The state directory switches between two at every configure while
 * analyses (each audited), listings, scrubs and notifications run: each
 * analysis is audited in the directory of the configure before it. */
static void test_state_dir_switches(void **state)
{
    (void)state;
    two_dirs dirs;
    two_dirs_make(&dirs);
    port_run *run = port_start();
    int id = 0;
    int per_dir[2] = {0, 0};
    for (int r = 0; r < SWITCH_ROUNDS; r++) {
        port_send(run, ++id, "configure", round_config("ord-[0-9]+", dirs.dir[r % 2]));
        for (int k = 0; k < 2; k++) {
            id++;
            port_send(run, id, "analyze", analyze_args("timeout ord-12", id));
            per_dir[r % 2]++;
        }
        port_send(run, ++id, "jobs", NULL);
        port_send(run, ++id, "ticket_list", NULL);
        port_send(run, ++id, "scrub", json_pack("{s:s}", "text", "ord-12 password=hunter2"));
        port_send(run, ++id, "notify", notify_args("ord-12"));
    }
    port_wait_all_ok(run, id);
    port_finish(run, 1, EXIT_MS);
    char path[512];
    snprintf(path, sizeof(path), "%s/audit.jsonl", dirs.dir[0]);
    assert_int_equal(count_lines(path, "\"action\":\"analysis\""), per_dir[0]);
    snprintf(path, sizeof(path), "%s/audit.jsonl", dirs.dir[1]);
    assert_int_equal(count_lines(path, "\"action\":\"analysis\""), per_dir[1]);
    port_free(run);
    two_dirs_remove(&dirs);
}

/* A TCP port on 127.0.0.1 that takes connections into its backlog and
 * never answers; *fd is the listening socket. */
static int silent_port(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    cloexec(*fd);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(*fd, 16), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

/* The status of the first job of kind in a "jobs" reply, or NULL. */
static const char *job_status(json_t *ok, const char *kind)
{
    size_t i;
    json_t *job;
    json_array_foreach(json_object_get(ok, "jobs"), i, job)
    {
        if (strcmp(json_string_value(json_object_get(job, "kind")), kind) == 0)
            return json_string_value(json_object_get(job, "status"));
    }
    return NULL;
}

/* The ticket job runs, or the upsert (request 2) has already answered. */
static int upsert_running(port_run *run, int *id, json_t *ok, void *arg)
{
    (void)id;
    (void)arg;
    const char *st = job_status(ok, "ticket");
    return (st != NULL && strcmp(st, "running") == 0) || reply_of(run, 2) != NULL;
}

/* A ticket upsert is still running on the database of A when configures
 * switch to B and back to A: opening A again must not recover that job
 * as if a previous process had left it running. */
static void test_state_dir_switch_back(void **state)
{
    (void)state;
    two_dirs dirs;
    two_dirs_make(&dirs);
    int listener = -1;
    char api[64];
    snprintf(api, sizeof(api), "http://127.0.0.1:%d", silent_port(&listener));
    setenv("SH_CONC_GH_TOKEN", "ghp_not_a_real_token", 1);
    json_t *cfg_a = round_config("ord-[0-9]+", dirs.dir[0]);
    json_object_set_new(cfg_a, "tickets",
                        json_pack("{s:s, s:{s:s, s:s, s:s, s:i, s:i}}", "backend", "github",
                                  "github", "api", api, "repo", "owner/app", "token_env",
                                  "SH_CONC_GH_TOKEN", "timeout_ms", 4000, "max_attempts", 1));
    port_run *run = port_start();
    port_send(run, 1, "configure", json_deep_copy(cfg_a));
    port_send(run, 2, "ticket_upsert", ticket_issue("fp-slow", 1));
    int id = 2;
    const char *st = job_status(poll_until(run, &id, "jobs", NULL, upsert_running, NULL), "ticket");
    if (st == NULL || strcmp(st, "running") != 0) {
        char *text = json_dumps(reply_of(run, 2), JSON_COMPACT);
        fail_msg("the upsert never ran long: %s", text != NULL ? text : "no reply");
    }
    port_send(run, ++id, "configure", round_config("ord-[0-9]+", dirs.dir[1]));
    port_send(run, ++id, "configure", json_deep_copy(cfg_a));
    port_wait_range(run, id - 1, id);
    ok_of(run, id - 1);
    ok_of(run, id);
    port_wait_answered(run, id); /* the upsert times out */
    assert_non_null(error_code_of(run, 2));
    port_send(run, ++id, "jobs", NULL);
    port_wait_answered(run, id);
    st = job_status(ok_of(run, id), "ticket");
    assert_string_equal(st != NULL ? st : "none", "failed");
    pthread_mutex_lock(&run->lock);
    size_t i;
    json_t *ev;
    int recovered = 0;
    json_array_foreach(run->events, i, ev) recovered +=
        has(json_string_value(json_object_get(ev, "event")), "job_recovered");
    pthread_mutex_unlock(&run->lock);
    assert_int_equal(recovered, 0);
    port_finish(run, 1, EXIT_MS);
    port_free(run);
    close(listener);
    unsetenv("SH_CONC_GH_TOKEN");
    json_decref(cfg_a);
    two_dirs_remove(&dirs);
}

/* ---------------------------------------------------------------- stopping */

/* The pid of the first child_started notification, waiting for it. */
static pid_t wait_child(port_run *run)
{
    long long deadline = now_ms() + ANSWER_MS;
    pid_t pid = 0;
    while (pid == 0 && now_ms() < deadline) {
        pthread_mutex_lock(&run->lock);
        size_t i;
        json_t *ev;
        json_array_foreach(run->events, i, ev)
        {
            if (pid == 0 && has(json_string_value(json_object_get(ev, "event")), "child_started"))
                pid = (pid_t)json_integer_value(json_object_get(ev, "pid"));
        }
        pthread_mutex_unlock(&run->lock);
        if (pid == 0)
            nap_ms(10);
    }
    assert_true(pid > 0);
    return pid;
}

/* EOF while both workers run (a child process, a long sleep), jobs wait
 * in the queue and configures and scrubs keep coming: the running and the
 * queued get "stopping", the configures their answer, the child is
 * killed, the port exits 0. */
static void test_eof_while_running(void **state)
{
    (void)state;
    port_run *run = port_start();
    json_t *cfg = round_config("ord-[0-9]+", NULL);
    json_object_set_new(json_object_get(cfg, "port"), "workers", json_integer(2));
    port_send(run, 1, "configure", cfg);
    port_send(run, 2, "spawn_sleep", json_pack("{s:i}", "seconds", 60));
    port_send(run, 3, "sleep", json_pack("{s:i}", "ms", 60000));
    pid_t child = wait_child(run);
    int id = 3;
    for (int i = 0; i < 6; i++)
        port_send(run, ++id, "sleep", json_pack("{s:i}", "ms", 10));
    for (int i = 0; i < 10; i++) {
        port_send(run, ++id, "configure", round_config(i % 2 ? "inv-[0-9]+" : "ord-[0-9]+", NULL));
        port_send(run, ++id, "scrub", json_pack("{s:s}", "text", "ord-12"));
    }
    port_wait_answered(run, 1);
    port_finish(run, 1, EXIT_MS);
    assert_true(wait_gone(child, 5000));
    for (int i = 2; i <= id; i++) {
        json_t *r = reply_of(run, i);
        if (r == NULL)
            fail_msg("request %d unanswered at the exit", i);
        const char *code = error_code_of(run, i);
        if (i <= 9)
            assert_string_equal(code != NULL ? code : "ok", "stopping");
        else if (i % 2 == 0) /* the configures, answered on the reader thread */
            assert_true(json_is_true(json_object_get(json_object_get(r, "ok"), "configured")));
        else if (code != NULL) /* a scrub that did not run first */
            assert_string_equal(code, "stopping");
    }
    port_free(run);
}

/* SIGTERM in the middle of a storm with a child running: the port stops
 * reading, kills the child, answers at most once per request and exits 0. */
static void test_sigterm_during_storm(void **state)
{
    (void)state;
    char *text = long_text();
    port_run *run = port_start();
    int id = 0;
    port_send(run, ++id, "configure", round_config("ord-[0-9]+", NULL));
    port_send(run, ++id, "spawn_sleep", json_pack("{s:i}", "seconds", 60));
    pid_t child = wait_child(run);
    for (int r = 0; r < 40; r++) {
        port_send(run, ++id, "configure", round_config(r % 2 ? "inv-[0-9]+" : "ord-[0-9]+", NULL));
        for (int k = 0; k < 10; k++)
            port_send(run, ++id, k % 2 ? "scrub" : "notify",
                      k % 2 ? json_pack("{s:s}", "text", text) : notify_args(text));
    }
    kill(run->pid, SIGTERM);
    port_finish(run, 0, EXIT_MS);
    assert_true(wait_gone(child, 5000));
    for (int i = 1; i <= id; i++) {
        json_t *r = reply_of(run, i);
        const char *code = error_code_of(run, i);
        if (r != NULL && json_object_get(r, "ok") == NULL)
            assert_string_equal(code != NULL ? code : "?", "stopping");
    }
    port_free(run);
    free(text);
}

/* ---------------------------------------------------------------- fix threads */

static void write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char *slash = strrchr(path, '/');
    for (char *p = path + strlen(dir) + 1; p <= slash; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

/* Runs argv (no shell) in dir; asserts exit 0. */
static void run_in(const char *dir, const char *const argv[])
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        if (chdir(dir) == 0)
            execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A Python project whose average() divides by zero on [], an agent that
 * fixes it and adds a test, a deploy script and a health check. */
static json_t *fix_setup(const char *base)
{
    char repo[256], path[320];
    snprintf(repo, sizeof(repo), "%s/app", base);
    assert_int_equal(mkdir(repo, 0700), 0);
    write_file(repo, "src/__init__.py", "", 0600);
    write_file(repo, "tests/__init__.py", "", 0600);
    write_file(repo, "src/calc.py", "def average(xs):\n    return sum(xs) / len(xs)\n", 0600);
    write_file(repo, "tests/test_calc.py",
               "import unittest\n\nfrom src.calc import average\n\n\n"
               "class AverageTest(unittest.TestCase):\n"
               "    def test_average(self):\n        self.assertEqual(average([2, 4]), 3)\n",
               0600);
    write_file(repo, ".gitignore", "__pycache__/\n*.pyc\n", 0600);
    const char *init[] = {"git", "init", "-q", "-b", "main", NULL};
    const char *add[] = {"git", "add", "-A", NULL};
    const char *commit[] = {"git",    "-c", "user.name=t", "-c",      "user.email=t@example.com",
                            "commit", "-q", "-m",          "initial", NULL};
    run_in(repo, init);
    run_in(repo, add);
    run_in(repo, commit);
    write_file(base, "agent.sh",
               "#!/bin/sh\ncd \"$1\" || exit 9\n"
               "cat > src/calc.py <<'PY'\ndef average(xs):\n    if not xs:\n        return 0\n"
               "    return sum(xs) / len(xs)\nPY\n"
               "cat >> tests/test_calc.py <<'PY'\n\n\nclass EmptyTest(unittest.TestCase):\n"
               "    def test_empty(self):\n        self.assertEqual(average([]), 0)\nPY\n"
               "echo fixed\n",
               0700);
    write_file(base, "deploy.sh",
               "#!/bin/sh\necho \"$1 $2\" >> \"$(dirname \"$0\")/deploys.log\"\n", 0700);
    write_file(base, "health.sh", "#!/bin/sh\nexit 0\n", 0700);
    snprintf(path, sizeof(path), "%s/state", base);
    json_t *cfg = round_config("ord-[0-9]+", path);
    snprintf(path, sizeof(path), "%s/agent.sh", base);
    json_t *fix =
        json_pack("{s:s, s:{s:[s, s, s], s:i}, s:{s:[s, s, s, s]}, s:{s:[s, s, s, s]}, s:s}",
                  "repo", repo, "agent", "argv", path, "{checkout}", "{prompt_file}", "timeout_s",
                  60, "compile", "argv", "python3", "-m", "py_compile", "src/calc.py", "test",
                  "argv", "python3", "-m", "unittest", "-q", "sandbox", "none");
    char deploy[320], health[320];
    snprintf(deploy, sizeof(deploy), "%s/deploy.sh", base);
    snprintf(health, sizeof(health), "%s/health.sh", base);
    json_object_set_new(cfg, "fix", fix);
    json_object_set_new(cfg, "gate", json_pack("{s:s}", "consent", "repair"));
    json_object_set_new(cfg, "deploy",
                        json_pack("{s:s, s:[s, s, s], s:{s:[s], s:i, s:i}, s:i}", "branch", "main",
                                  "argv", deploy, "{repo}", "{commit}", "health", "argv", health,
                                  "timeout_s", 3, "interval_ms", 200, "verify_window_s", 1));
    return cfg;
}

static json_t *fix_request(const char *fp, int wait)
{
    return json_pack(
        "{s:s, s:s, s:s, s:b, s:{s:s, s:s, s:s, s:s, s:i, s:s}}", "fingerprint", fp, "severity",
        "high", "root_cause", "average/1 divides by the length of an empty list", "wait", wait,
        "group", "id", fp, "type", "ZeroDivisionError", "message", "division by zero", "stacktrace",
        "Traceback (most recent call last):\n"
        "  File \"/srv/app/src/calc.py\", line 2, in average\n"
        "    return sum(xs) / len(xs)\nZeroDivisionError: division by zero\n",
        "count", 12, "service", "calc");
}

/* The fix has left approval and deploy; until then each look is followed
 * by a configure (arg). */
static int fix_settled(port_run *run, int *id, json_t *ok, void *arg)
{
    const char *st = status_of(ok);
    if (strcmp(st, "approved") != 0 && strcmp(st, "deploying") != 0 && strcmp(st, "verifying") != 0)
        return 1;
    port_send(run, ++*id, "configure", json_deep_copy(arg));
    return 0;
}

/* The threads the port starts outside its pool while configures keep
 * coming: a fix driven on a thread of its own (the agent, validation,
 * delivery), one driven on a worker, the scheduler's rounds, and the
 * deploy thread after an approval, up to the end of verification. */
static void test_fix_threads_during_storm(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/sh_conc_XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    json_t *cfg = fix_setup(tmpl);
    port_run *run = port_start();
    int id = 0;
    port_send(run, ++id, "configure", json_deep_copy(cfg));
    port_send(run, ++id, "fix", fix_request("fpcalc0002", 0)); /* a drive thread */
    int waited = ++id;
    port_send(run, waited, "fix", fix_request("fpcalc0001", 1)); /* driven on the worker */
    for (int r = 0; r < 80; r++) {
        json_t *c = json_deep_copy(cfg);
        json_array_set_new(json_object_get(json_object_get(c, "scrub"), "patterns"), 0,
                           json_string(r % 2 ? "inv-[0-9]+" : "ord-[0-9]+"));
        port_send(run, ++id, "configure", c);
        port_send(run, ++id, "scrub", json_pack("{s:s}", "text", "ord-12 inv-34"));
        port_send(run, ++id, "fixes", NULL);
        port_send(run, ++id, "gate_status", NULL);
        if (r % 10 == 0)
            nap_ms(100);
    }
    port_wait_all_ok(run, id);
    json_t *fix = ok_of(run, waited);
    json_int_t fix_id = json_integer_value(json_object_get(fix, "id"));
    /* unsandboxed: a human approves; then the scheduler deploys it */
    assert_string_equal(json_string_value(json_object_get(fix, "status")), "awaiting_approval");
    port_send(run, ++id, "approve", json_pack("{s:I, s:s}", "id", fix_id, "by", "test"));
    port_wait_answered(run, id);
    ok_of(run, id);
    json_t *last =
        poll_until(run, &id, "fix_get", json_pack("{s:I}", "id", fix_id), fix_settled, cfg);
    assert_string_equal(status_of(last), "deployed");
    port_finish(run, 1, EXIT_MS);
    port_free(run);
    json_decref(cfg);
    tree_remove(tmpl);
}

/* ---------------------------------------------------------------- recovery */

static int job_done(port_run *run, int *id, json_t *ok, void *arg)
{
    (void)run;
    (void)id;
    (void)arg;
    return strcmp(status_of(ok), "done") == 0;
}

/* An escalation a previous process left running is resumed on a thread
 * of its own when the state directory is opened, while configures and
 * requests keep coming. */
static void test_resume_during_storm(void **state)
{
    (void)state;
    char *base = NULL;
    char *dir = make_dir(&base, "state");
    state_db *db = NULL;
    char why[256];
    assert_int_equal(state_open(&db, dir, why, sizeof(why)), 0);
    int64_t job_id = 0;
    int existed = 0;
    char status[32];
    json_t *input = analyze_args("connection refused ord-12", 1);
    assert_int_equal(state_job_begin(db, "escalate", "escalate:left-running", input, &job_id,
                                     &existed, status, sizeof(status)),
                     0);
    json_decref(input);
    assert_int_equal(state_job_transition(db, job_id, "queued", "running", NULL, NULL, NULL), 0);
    state_close(db);

    port_run *run = port_start();
    int id = 0;
    for (int r = 0; r < 60; r++) {
        port_send(run, ++id, "configure", round_config(r % 2 ? "inv-[0-9]+" : "ord-[0-9]+", dir));
        port_send(run, ++id, "jobs", NULL);
        port_send(run, ++id, "scrub", json_pack("{s:s}", "text", "ord-12 inv-34"));
    }
    port_wait_all_ok(run, id);
    json_t *last =
        poll_until(run, &id, "job", json_pack("{s:I}", "id", (json_int_t)job_id), job_done, NULL);
    assert_string_equal(status_of(last), "done");
    port_finish(run, 1, EXIT_MS);
    port_free(run);
    tree_remove(base);
    free(base);
    free(dir);
}

/* ---------------------------------------------------------------- pins */

#define PIN_THREADS 6
#define PIN_ROUNDS 50 /* at least; rounds go on until the configures are done */
#define PIN_CONFIGURES 300

static const char pin_text[] = "order ord-12 invoice inv-34 password=hunter2";

typedef struct pin_worker {
    port_ctx *ctx;
    int index;
    atomic_int *failures;
    atomic_int *configured; /* set once every configure ran */
    int rounds;             /* rounds run */
    int writes;             /* state and audit writes made (state test) */
} pin_worker;

static int more_rounds(pin_worker *w, int r)
{
    w->rounds = r;
    return r < PIN_ROUNDS || !atomic_load(w->configured);
}

static char *scrubbed(const sh_scrubber *s)
{
    sh_buf out;
    sh_buf_init(&out);
    sh_scrub(s, pin_text, strlen(pin_text), &out, NULL);
    char *text = out.oom ? NULL : strndup(out.data != NULL ? out.data : "", out.len);
    sh_buf_free(&out);
    return text;
}

/* Within one pin the scrubber and the configuration stay what they were
 * when it was taken, however many configures run meanwhile; a pin taken
 * from a pinned thread holds the same ones. */
static void *pin_rounds(void *arg)
{
    pin_worker *w = arg;
    for (int r = 0; more_rounds(w, r); r++) {
        port_pin pin;
        port_pin_begin(&pin, w->ctx);
        const sh_scrubber *s = port_scrubber(w->ctx);
        json_t *patterns = port_config_get(w->ctx, "scrub.patterns");
        char *first = scrubbed(s);
        for (int k = 0; k < 4; k++) {
            sched_yield();
            json_t *again = port_config_get(w->ctx, "scrub.patterns");
            char *text = scrubbed(port_scrubber(w->ctx));
            if (port_scrubber(w->ctx) != s || !json_equal(again, patterns) || first == NULL ||
                text == NULL || strcmp(first, text) != 0)
                atomic_fetch_add(w->failures, 1);
            free(text);
            json_decref(again);
        }
        port_pin inherited; /* what a thread started now would get */
        port_pin_take(&inherited, w->ctx);
        if (inherited.scrub != pin.scrub || inherited.config != pin.config)
            atomic_fetch_add(w->failures, 1);
        port_pin_release(&inherited);
        free(first);
        json_decref(patterns);
        port_pin_end(&pin);
    }
    return NULL;
}

static json_t *pin_config(const char *pattern, const char *state_dir)
{
    json_t *c = json_pack("{s:{s:[s]}}", "scrub", "patterns", pattern);
    if (state_dir != NULL)
        json_object_set_new(c, "state_dir", json_string(state_dir));
    return c;
}

/* What configure does on the reader thread. */
static void configure(port_ctx *ctx, json_t *config)
{
    cmd_error err = {NULL, ""};
    port_set_config(ctx, config);
    if (port_configure_modules(ctx, &err) != 0)
        fail_msg("configure: %s", err.message);
}

/* A context configured with first; PIN_THREADS threads run fn on it while
 * PIN_CONFIGURES configures (next) replace what it holds. Then no failure
 * may have been counted and no pin be left; the context is closed. */
static void run_pin_workers(void *(*fn)(void *), pin_worker *w, json_t *first,
                            json_t *(*next)(int, void *), void *opaque)
{
    port_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    pthread_mutex_init(&ctx.lock, NULL);
    ctx.one_shot = 1; /* no recovery threads */
    configure(&ctx, first);
    pthread_t t[PIN_THREADS];
    atomic_int failures = 0, configured = 0;
    for (int i = 0; i < PIN_THREADS; i++) {
        w[i] =
            (pin_worker){.ctx = &ctx, .index = i, .failures = &failures, .configured = &configured};
        assert_int_equal(pthread_create(&t[i], NULL, fn, &w[i]), 0);
    }
    for (int c = 0; c < PIN_CONFIGURES; c++)
        configure(&ctx, next(c, opaque));
    atomic_store(&configured, 1);
    for (int i = 0; i < PIN_THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&failures), 0);
    assert_null(ctx.pins);
    port_close_modules(&ctx);
    pthread_mutex_destroy(&ctx.lock);
}

static json_t *next_patterns(int c, void *opaque)
{
    (void)opaque;
    return pin_config(c % 2 ? "inv-[0-9]+" : "ord-[0-9]+", NULL);
}

/* Threads pin, scrub and read the configuration while the scrubber and
 * the configuration are replaced 300 times (sanitizer builds catch a use
 * after free; leak checks catch a replaced scrubber never freed). */
static void test_pins_keep_what_configure_replaces(void **state)
{
    (void)state;
    pin_worker w[PIN_THREADS];
    run_pin_workers(pin_rounds, w, pin_config("ord-[0-9]+", NULL), next_patterns, NULL);
}
/* Each round: the state database and audit log a pinned thread gets stay
 * the same through the round and take its writes. */
static void *state_rounds(void *arg)
{
    pin_worker *w = arg;
    for (int r = 0; more_rounds(w, r); r++) {
        port_pin pin;
        port_pin_begin(&pin, w->ctx);
        cmd_error err = {NULL, ""};
        if (state_ctx_ensure(w->ctx, &err) == 0) {
            state_db *db = port_state(w->ctx);
            audit_log *log = port_audit(w->ctx);
            char key[32];
            snprintf(key, sizeof(key), "t%d-%d", w->index, r);
            json_t *fields = json_pack("{s:s}", "key", key);
            const char *failed = db == NULL || log == NULL                    ? "no state"
                                 : state_kv_set(db, key, "x") != 0            ? "state write"
                                 : audit_append(log, "pin_test", fields) != 0 ? "audit write"
                                 : port_state(w->ctx) != db || port_audit(w->ctx) != log
                                     ? "another state"
                                     : NULL;
            if (failed != NULL) {
                fprintf(stderr, "thread %d round %d: %s\n", w->index, r, failed);
                atomic_fetch_add(w->failures, 1);
            } else {
                w->writes++;
            }
            json_decref(fields);
        }
        port_pin_end(&pin);
    }
    return NULL;
}

static json_t *next_state_dir(int c, void *opaque)
{
    const two_dirs *dirs = opaque;
    return pin_config("ord-[0-9]+", dirs->dir[c % 2]);
}

/* The number of keys t<i>-<r> the workers wrote in the database of dir. */
static int keys_in(const char *dir, const pin_worker *w)
{
    state_db *db = NULL;
    char why[256], value[8];
    assert_int_equal(state_open(&db, dir, why, sizeof(why)), 0);
    int n = 0;
    for (int i = 0; i < PIN_THREADS; i++)
        for (int r = 0; r < w[i].rounds; r++) {
            char key[32];
            snprintf(key, sizeof(key), "t%d-%d", i, r);
            n += state_kv_get(db, key, value, sizeof(value)) == 0;
        }
    state_close(db);
    return n;
}

/* The same with the state directory switching between two at each of 300
 * configures: a replaced database and audit log are closed once the last
 * pin on them is released (leak checks), never while one is in use. */
static void test_pins_keep_replaced_state(void **state)
{
    (void)state;
    two_dirs dirs;
    two_dirs_make(&dirs);
    pin_worker w[PIN_THREADS];
    run_pin_workers(state_rounds, w, pin_config("ord-[0-9]+", dirs.dir[1]), next_state_dir, &dirs);
    int writes = 0;
    for (int i = 0; i < PIN_THREADS; i++)
        writes += w[i].writes;
    assert_true(writes > 0);
    assert_int_equal(keys_in(dirs.dir[0], w) + keys_in(dirs.dir[1], w), writes);
    two_dirs_remove(&dirs);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_configure_storm, teardown_port),
        cmocka_unit_test_teardown(test_shared_state, teardown_port),
        cmocka_unit_test_teardown(test_state_dir_switches, teardown_port),
        cmocka_unit_test_teardown(test_state_dir_switch_back, teardown_port),
        cmocka_unit_test_teardown(test_eof_while_running, teardown_port),
        cmocka_unit_test_teardown(test_sigterm_during_storm, teardown_port),
        cmocka_unit_test_teardown(test_fix_threads_during_storm, teardown_port),
        cmocka_unit_test_teardown(test_resume_during_storm, teardown_port),
        cmocka_unit_test(test_pins_keep_what_configure_replaces),
        cmocka_unit_test(test_pins_keep_replaced_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
