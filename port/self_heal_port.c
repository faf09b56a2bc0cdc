/*
 * self_heal_port: the program that will do SelfHeal's slow, networked and
 * dangerous work (LLM calls, git, coding agents, deploys). For now it
 * answers the protocol's `version` request; later issues add commands.
 *
 * Protocol (the BEAM opens it with {packet, 4}; docs/port-protocol.md):
 *   frame        = length:32/big, payload:length/bytes     (length <= MAX_FRAME)
 *   payload      = a JSON object (UTF-8)
 *   request      = {"id": <integer>, "cmd": <string>, "args": <object, optional>}
 *   reply        = {"id": <same>, "ok": <object>}
 *                | {"id": <same or null>, "error": {"code": <string>, "message": <string>}}
 *   notification = {"event": <string>, ...}                (port -> BEAM only)
 * Error codes: "bad_json", "bad_request", "unknown_command", "frame_too_large".
 * An oversize frame is answered with frame_too_large (id null) and its bytes
 * are discarded as they arrive, never buffered. EOF on stdin, SIGTERM or
 * SIGINT: stop, kill every child process group, exit 0.
 *
 * Shell use: `self_heal_port run CMD [--args FILE]` runs one command and
 * prints the reply's JSON on stdout (exit 0 on ok, 1 on error, 2 on usage).
 * `self_heal_port group` groups log lines on stdin with the template miner
 * (port/group.c).
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
#include <unistd.h>

#include "cmd.h"
#include "group.h"
#include "pipeline.h"

#define SELF_HEAL_VERSION "0.1.0"
#define PROTOCOL_VERSION 1
#define MAX_FRAME (8u * 1024 * 1024)
#define READ_CHUNK 65536

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t r = write(signal_pipe[1], &b, 1);
    (void)r;
    errno = saved;
}

/* ------------------------------------------------------------ commands */

static port_ctx ctx = {.lock = PTHREAD_MUTEX_INITIALIZER};

static json_t *cmd_version(port_ctx *c, json_t *args, cmd_error *err)
{
    (void)c;
    (void)args;
    (void)err;
    return json_pack("{s:s, s:i, s:s}", "version", SELF_HEAL_VERSION, "protocol", PROTOCOL_VERSION,
                     "jansson", JANSSON_VERSION);
}

/* configure: replaces the whole configuration, then lets the modules
 * (state, audit, scrubber) open what it names. */
static json_t *cmd_configure(port_ctx *c, json_t *args, cmd_error *err)
{
    if (args == NULL || !json_is_object(args)) {
        cmd_error_set(err, "bad_args", "configure needs an object");
        return NULL;
    }
    pthread_mutex_lock(&c->lock);
    json_t *old = c->config;
    c->config = json_deep_copy(args);
    pthread_mutex_unlock(&c->lock);
    json_decref(old);
    if (port_configure_modules(c, err) != 0)
        return NULL;
    return json_pack("{s:b}", "configured", 1);
}

const cmd_def *core_commands(size_t *n)
{
    static const cmd_def cmds[] = {
        {"version", cmd_version, CMD_INLINE},
        {"configure", cmd_configure, CMD_INLINE},
    };
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}

typedef const cmd_def *(*cmd_table_fn)(size_t *n);
static const cmd_table_fn cmd_tables[] = {core_commands,   state_commands,  analyze_commands,
                                          ticket_commands, notify_commands, pipeline_commands};

static const cmd_def *find_command(const char *name)
{
    for (size_t t = 0; t < sizeof(cmd_tables) / sizeof(cmd_tables[0]); t++) {
        size_t n = 0;
        const cmd_def *defs = cmd_tables[t](&n);
        for (size_t i = 0; i < n; i++)
            if (strcmp(defs[i].name, name) == 0)
                return &defs[i];
    }
    return NULL;
}

/* Runs one request object; returns the reply object (never NULL unless out
 * of memory). */
static json_t *handle_request(json_t *req)
{
    json_t *id = json_object_get(req, "id");
    json_t *cmd = json_object_get(req, "cmd");
    json_t *args = json_object_get(req, "args");
    cmd_error err = {"bad_request", ""};
    json_t *ok = NULL;
    const cmd_def *def = NULL;
    if (!json_is_integer(id))
        snprintf(err.message, sizeof(err.message), "request needs an integer id");
    else if (!json_is_string(cmd))
        snprintf(err.message, sizeof(err.message), "request needs a string cmd");
    else if (args != NULL && !json_is_object(args))
        snprintf(err.message, sizeof(err.message), "args must be an object");
    else if ((def = find_command(json_string_value(cmd))) == NULL)
        cmd_error_set(&err, "unknown_command", "unknown command");
    else {
        err.code = NULL;
        ok = def->fn(&ctx, args, &err);
    }
    json_t *reply = json_object();
    if (reply == NULL) {
        json_decref(ok);
        return NULL;
    }
    json_object_set(reply, "id", json_is_integer(id) ? id : json_null());
    if (ok != NULL)
        json_object_set_new(reply, "ok", ok);
    else
        json_object_set_new(reply, "error",
                            json_pack("{s:s, s:s}", "code", err.code ? err.code : "internal",
                                      "message", err.message[0] ? err.message : "command failed"));
    return reply;
}

static json_t *error_reply(const char *code, const char *message)
{
    return json_pack("{s:n, s:{s:s, s:s}}", "id", "error", "code", code, "message", message);
}

/* ------------------------------------------------------------ framing */

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_frame(json_t *msg)
{
    if (msg == NULL)
        return -1;
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text == NULL)
        return -1;
    size_t len = strlen(text);
    unsigned char hdr[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                            (unsigned char)(len >> 8), (unsigned char)len};
    int rc =
        write_all(STDOUT_FILENO, hdr, 4) == 0 && write_all(STDOUT_FILENO, text, len) == 0 ? 0 : -1;
    free(text);
    return rc;
}

static void handle_payload(const char *payload, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL) {
        send_frame(error_reply("bad_json", jerr.text));
        return;
    }
    if (!json_is_object(req))
        send_frame(error_reply("bad_request", "a request must be a JSON object"));
    else
        send_frame(handle_request(req));
    json_decref(req);
}

/* Incremental {packet,4} reader with a size cap. */
typedef struct reader {
    unsigned char hdr[4];
    size_t hdr_have;
    char *payload;
    size_t want;    /* payload length of the current frame */
    size_t have;    /* payload bytes received */
    int discarding; /* current frame is oversize */
} reader;

static void reader_feed(reader *r, const char *buf, size_t n)
{
    while (n > 0) {
        if (r->hdr_have < 4) {
            r->hdr[r->hdr_have++] = (unsigned char)*buf++;
            n--;
            if (r->hdr_have < 4)
                continue;
            r->want = (size_t)r->hdr[0] << 24 | (size_t)r->hdr[1] << 16 | (size_t)r->hdr[2] << 8 |
                      r->hdr[3];
            r->have = 0;
            r->discarding = r->want > MAX_FRAME;
            if (r->discarding)
                send_frame(error_reply("frame_too_large", "frame larger than 8 MiB discarded"));
            else if ((r->payload = malloc(r->want ? r->want : 1)) == NULL)
                r->discarding = 1;
        }
        size_t take = r->want - r->have < n ? r->want - r->have : n;
        if (!r->discarding)
            memcpy(r->payload + r->have, buf, take);
        r->have += take;
        buf += take;
        n -= take;
        if (r->have == r->want) {
            if (!r->discarding)
                handle_payload(r->payload, r->want);
            free(r->payload);
            r->payload = NULL;
            r->hdr_have = 0;
        }
    }
}

static int serve(void)
{
    if (pipe(signal_pipe) != 0)
        return 1;
    fcntl(signal_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(signal_pipe[1], F_SETFD, FD_CLOEXEC);
    fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    reader r;
    memset(&r, 0, sizeof(r));
    static char buf[READ_CHUNK];
    for (;;) {
        struct pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {signal_pipe[0], POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents & POLLIN)
            break; /* SIGTERM/SIGINT: no children yet to stop */
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break; /* EOF: the BEAM side is gone */
            reader_feed(&r, buf, (size_t)n);
        }
    }
    free(r.payload);
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
        ctx.config = config;
        if (port_configure_modules(&ctx, &err) != 0) {
            fprintf(stderr, "self_heal_port: %s: %s\n", config_file, err.message);
            json_decref(args);
            return 1;
        }
    }
    json_t *req = json_pack("{s:i, s:s}", "id", 1, "cmd", cmd);
    if (args != NULL)
        json_object_set_new(req, "args", args);
    json_t *reply = handle_request(req);
    json_decref(req);
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
                        "       self_heal_port run CMD [--args FILE]\n"
                        "       self_heal_port group [--stream] [--templates] [--state FILE]\n");
        return 2;
    }
    return serve();
}
