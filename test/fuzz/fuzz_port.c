/*
 * The port program's input: {packet,4} frames read in chunks of any size,
 * each payload parsed as a request and checked as self_heal_port.c checks
 * it, and the commands that need neither the network nor a child process
 * run with their arguments on a configured port (SQLite state and audit
 * log in a temporary directory, offline analysis, local tickets, signed
 * links). The reader is fed each input twice, whole and in small chunks,
 * and must report the same frames both times.
 *
 * self_heal_port.c is included (its main renamed) so that the requests go
 * through its own request_check, request_execute and on_frame; commands
 * run on this thread instead of its worker pool. Left out: configure (it
 * could point the state anywhere), sleep, spawn_sleep, spawn, fix,
 * approve, skip (children, agents, deploys), notify, telegram_poll (the
 * network). The state persists across inputs (docs/fuzzing.md).
 * FUZZ_PORT_REPLIES=1 writes the replies' frames to stderr.
 */
#define _XOPEN_SOURCE 700 /* nftw, mkdtemp */
#include <ftw.h>

#define main self_heal_port_main
int self_heal_port_main(int argc, char **argv);
#include "self_heal_port.c"
#undef main

#include "fuzz.h"

#define FUZZ_FRAME_MAX 4096
#define MAX_EVENTS 512

static char state_dir[64];

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_state(void)
{
    nftw(state_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (http_global_init() != 0)
        abort();
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(state_dir, sizeof(state_dir), "%s/self_heal_fuzz_XXXXXX", base);
    if (mkdtemp(state_dir) == NULL)
        abort();
    atexit(remove_state);
    setenv("SELF_HEAL_FUZZ_LINK_SECRET", "fuzz-link-secret-0123456789abcdef", 1);
    /* the replies go nowhere, or to stderr with FUZZ_PORT_REPLIES=1 */
    int fd = getenv("FUZZ_PORT_REPLIES") != NULL ? dup(2) : open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (frame_writer_init(&out, fd) != 0)
        abort();
    ctx.one_shot = 1; /* no job recovery, no scheduler, no fix threads */
    json_t *config = json_pack("{s:s, s:{s:s}, s:{s:s}, s:{s:{s:s, s:s}}}", "state_dir", state_dir,
                               "llm", "provider", "offline", "tickets", "backend", "local",
                               "notify", "links", "base_url", "https://ops.example/self_heal",
                               "secret_env", "SELF_HEAL_FUZZ_LINK_SECRET");
    cmd_error err = {NULL, ""};
    json_t *ok = cmd_configure(&ctx, config, &err);
    if (ok == NULL) {
        fprintf(stderr, "configure: %s: %s\n", err.code, err.message);
        abort();
    }
    json_decref(ok);
    json_decref(config);
    return 0;
}

static int runs_here(const char *name)
{
    static const char *const left_out[] = {"configure", "sleep", "spawn",  "spawn_sleep",  "fix",
                                           "approve",   "skip",  "notify", "telegram_poll"};
    for (size_t i = 0; i < sizeof(left_out) / sizeof(left_out[0]); i++)
        if (strcmp(name, left_out[i]) == 0)
            return 0;
    return 1;
}

/* What the reader reported: each event, its length and a hash of its
 * payload. */
typedef struct events {
    size_t n;
    frame_event ev[MAX_EVENTS];
    size_t len[MAX_EVENTS];
    uint64_t hash[MAX_EVENTS];
    int run; /* run the requests too */
} events;

static void on_fuzz_frame(void *opaque, frame_event ev, const char *payload, size_t len)
{
    events *e = opaque;
    FZ_CHECK(e->n < MAX_EVENTS);
    FZ_CHECK(ev != FRAME_PAYLOAD || len <= FUZZ_FRAME_MAX);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; payload != NULL && i < len; i++)
        h = (h ^ (unsigned char)payload[i]) * 1099511628211ULL;
    e->ev[e->n] = ev;
    e->len[e->n] = len;
    e->hash[e->n++] = h;
    if (!e->run)
        return;
    json_t *req =
        ev == FRAME_PAYLOAD ? json_loadb(payload, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(req)) {
        on_frame(NULL, ev, payload, len); /* its error reply */
        json_decref(req);
        return;
    }
    json_t *reply = NULL;
    const cmd_def *def = request_check(&reply, req);
    if (def != NULL && runs_here(def->name))
        reply = request_execute(def, json_object_get(req, "id"), json_object_get(req, "args"));
    if (def == NULL || runs_here(def->name)) {
        FZ_CHECK(reply != NULL);
        FZ_CHECK(json_object_get(reply, "ok") != NULL || json_object_get(reply, "error") != NULL);
        frame_write_json(&out, reply);
    }
    json_decref(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t chunk = 1 + data[0] % 61;
    const char *stream = (const char *)data + 1;
    size_t len = size - 1;
    static events whole, pieces;
    whole.n = pieces.n = 0;
    pieces.run = 1;
    frame_reader *a = NULL, *b = NULL;
    FZ_CHECK(frame_reader_new(&a, FUZZ_FRAME_MAX) == 0);
    FZ_CHECK(frame_reader_new(&b, FUZZ_FRAME_MAX) == 0);
    frame_reader_feed(a, stream, len, on_fuzz_frame, &whole);
    for (size_t at = 0; at < len; at += chunk)
        frame_reader_feed(b, stream + at, len - at < chunk ? len - at : chunk, on_fuzz_frame,
                          &pieces);
    FZ_CHECK(whole.n == pieces.n);
    FZ_CHECK(memcmp(whole.ev, pieces.ev, whole.n * sizeof(whole.ev[0])) == 0);
    FZ_CHECK(memcmp(whole.len, pieces.len, whole.n * sizeof(whole.len[0])) == 0);
    FZ_CHECK(memcmp(whole.hash, pieces.hash, whole.n * sizeof(whole.hash[0])) == 0);
    FZ_CHECK(frame_reader_pending(a) == frame_reader_pending(b));
    frame_reader_free(a);
    frame_reader_free(b);
    return 0;
}
