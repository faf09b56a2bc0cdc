/*
 * SelfHeal.Native: the Erlang NIF over the C core.
 *
 * Rules kept here (docs/nif.md says more):
 * - bad terms raise ArgumentError ({badarg, Reason}); nothing crashes the VM;
 * - every input is bounded: a message longer than max_event_bytes is cut at
 *   a UTF-8 boundary and flagged, at most MAX_FRAMES frames are read among
 *   the first MAX_STACK_ENTRIES entries of a stack;
 * - a normal scheduler does bounded work per call: the batch NIFs yield
 *   (enif_consume_timeslice + enif_schedule_nif, every term they need
 *   carried in argv, never in C), an item whose work is above dirty_above
 *   moves the call to a dirty CPU scheduler (and back after it), and a
 *   shared miner's lock is only tried (busy: move to a dirty scheduler);
 * - dedup/1, decode_json_lines/1 and /3, count_json_lines/2 and the
 *   miner's walks run on dirty CPU
 *   schedulers; the walks release the miner's lock between short steps.
 */
#include <erl_nif.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "self_heal/dedup.h"
#include "self_heal/fingerprint.h"
#include "self_heal/frames.h"
#include "self_heal/jsonl.h"
#include "self_heal/miner.h"
#include "nif_util.h"
#include "scrub_nif.h"
#include "watch_nif.h"
#include "self_heal/normalize.h"

#define DEFAULT_MAX_EVENT_BYTES 65536
#define MAX_EVENT_BYTES_LIMIT (16 * 1024 * 1024)
#define MAX_FRAMES 64
#define MAX_NAME 255
#define MAX_FILE 1024
#define MAX_CONFIG_ENTRIES 256
#define CONFIG_DIRTY_BYTES (32u * 1024)
#define MAX_JSONL_BODY (256u * 1024 * 1024)
/* decode_json_lines/1 returns a whole body's events at once: the process
 * that holds them frees them on a normal scheduler, about 0.4 ms for 8 MiB
 * of records (a 64 MiB body's took 3 ms); larger bodies go slice by slice
 * through decode_json_lines/3. */
#define MAX_JSONL_WHOLE_BODY (8u * 1024 * 1024)
#define MAX_JSONL_ERRORS 100
/* A term stack is read among its first MAX_STACK_ENTRIES entries, a
 * location among its first MAX_LOCATION_ENTRIES; an argument list longer
 * than MAX_ARGS (no function has more) makes its entry malformed. */
#define MAX_STACK_ENTRIES 1024
#define MAX_LOCATION_ENTRIES 32
#define MAX_ARGS 255
/* Work units: a byte of message normalised (1-25 ns, normalize.c is O(n)).
 * An event, a line or a message above DEFAULT_DIRTY_ABOVE units goes to a
 * dirty CPU scheduler. A text stack trace byte counts 1/4 (frames.c reads
 * about 1 ns a byte), a stack entry examined 4, a frame read 64. */
#define DEFAULT_DIRTY_ABOVE 8192
#define STACK_TEXT_SHIFT 2
#define WORK_PER_ENTRY 4
#define WORK_PER_FRAME 64
/* A miner line's addition on a normal scheduler may cost dirty_above *
 * MINER_ADD_PER_UNIT of sh_miner_add_line's units (token comparisons,
 * about 1 ns each). */
#define MINER_ADD_PER_UNIT 8
/* A miner walk step under the lock: about 40 templates or 1 KB of snapshot,
 * some 20 µs. */
#define WALK_STEP_WORK 1024
/* A snapshot's checksum is computed in parts of this many bytes (about
 * 0.3 ms), outside the lock. */
#define SEAL_PART (256u * 1024)
#define TIMESLICE_CHECK 8   /* items between clock reads */
#define TIMESLICE_WORK 2048 /* or this much work */

/* OTP 26 (NIF 2.17) reads atoms as UTF-8; OTP 25 only as Latin-1, where a
 * non-Latin-1 atom is not readable and its frame is skipped. */
#if ERL_NIF_MAJOR_VERSION > 2 || (ERL_NIF_MAJOR_VERSION == 2 && ERL_NIF_MINOR_VERSION >= 17)
#define ATOM_ENCODING ERL_NIF_UTF8
#else
#define ATOM_ENCODING ERL_NIF_LATIN1
#endif

static _Atomic long live_batches;

/* ------------------------------------------------------------------ atoms */

static struct {
    ERL_NIF_TERM nil, true_, false_, badarg, app, column, count, errors, events, file, fingerprint,
        first_seen, frames, function, in_app, in_app_apps, in_app_prefixes, kind, last_seen, level,
        line, malformed, max_event_bytes, message, metadata, module, normalized, sample, service,
        services, services_dropped, stacktrace, timestamp, top_frame, truncated, type, yield_every,
        k_elixir, k_erlang, k_js, k_python, k_java, k_go, k_unknown, blank_lines, miner,
        max_clusters, max_tokens, max_line, id, template_, params, cluster, lines, clusters,
        created, evicted, merged, aliases_dropped, ok, error, dirty_above;
} atoms;

static ERL_NIF_TERM make_atom(ErlNifEnv *env, const char *name)
{
    ERL_NIF_TERM atom;
    if (enif_make_existing_atom(env, name, &atom, ERL_NIF_LATIN1))
        return atom;
    return enif_make_atom(env, name);
}

static void init_atoms(ErlNifEnv *env)
{
#define A(field, name) atoms.field = make_atom(env, name)
    A(nil, "nil");
    A(true_, "true");
    A(false_, "false");
    A(badarg, "badarg");
    A(app, "app");
    A(column, "column");
    A(count, "count");
    A(errors, "errors");
    A(events, "events");
    A(file, "file");
    A(fingerprint, "fingerprint");
    A(first_seen, "first_seen");
    A(frames, "frames");
    A(function, "function");
    A(in_app, "in_app");
    A(in_app_apps, "in_app_apps");
    A(in_app_prefixes, "in_app_prefixes");
    A(kind, "kind");
    A(last_seen, "last_seen");
    A(level, "level");
    A(line, "line");
    A(malformed, "malformed");
    A(max_event_bytes, "max_event_bytes");
    A(message, "message");
    A(metadata, "metadata");
    A(module, "module");
    A(normalized, "normalized");
    A(sample, "sample");
    A(service, "service");
    A(services, "services");
    A(services_dropped, "services_dropped");
    A(stacktrace, "stacktrace");
    A(timestamp, "timestamp");
    A(top_frame, "top_frame");
    A(truncated, "truncated");
    A(type, "type");
    A(yield_every, "yield_every");
    A(miner, "miner");
    A(max_clusters, "max_clusters");
    A(max_tokens, "max_tokens");
    A(max_line, "max_line");
    A(id, "id");
    A(template_, "template");
    A(params, "params");
    A(cluster, "cluster");
    A(lines, "lines");
    A(clusters, "clusters");
    A(created, "created");
    A(evicted, "evicted");
    A(merged, "merged");
    A(aliases_dropped, "aliases_dropped");
    A(ok, "ok");
    A(error, "error");
    A(dirty_above, "dirty_above");
    A(k_elixir, "elixir");
    A(k_erlang, "erlang");
    A(k_js, "javascript");
    A(k_python, "python");
    A(k_java, "java");
    A(k_go, "go");
    A(k_unknown, "unknown");
    A(blank_lines, "blank_lines");
#undef A
}

static ERL_NIF_TERM raise_badarg(ErlNifEnv *env, const char *why)
{
    return sh_nif_raise_badarg(env, atoms.badarg, why);
}

static ERL_NIF_TERM make_bin(ErlNifEnv *env, const char *bytes, size_t len)
{
    return sh_nif_make_bin(env, bytes, len);
}

static ERL_NIF_TERM make_slice(ErlNifEnv *env, sh_slice s)
{
    return make_bin(env, s.ptr, s.len);
}

static ERL_NIF_TERM make_bool(int b)
{
    return b ? atoms.true_ : atoms.false_;
}

/* ----------------------------------------------------------------- config */

typedef struct nif_miner nif_miner;

typedef struct nif_config {
    nif_miner *miner; /* kept (enif_keep_resource) while the config lives */
    sh_inapp_config inapp;
    sh_slice *entries; /* apps then prefixes, pointing into storage */
    char *storage;
    size_t max_event_bytes;
    unsigned long yield_every;
    uint64_t dirty_above;
} nif_config;

static ErlNifResourceType *config_type;
static ErlNifResourceType *batch_type;
static ErlNifResourceType *miner_type;

/* A template miner shared by the processes that hold it. `lock` guards
 * the miner and is held for one line, or one walk step, at a time; a
 * normal scheduler only tries it. `walking`: a walk (templates, snapshot)
 * is going on (one at a time). */
struct nif_miner {
    sh_nif_lock lock;
    _Atomic int walking;
    sh_miner *miner;
    unsigned long yield_every;
    uint64_t dirty_above;
};
static nif_config *default_config;

static void config_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_config *c = obj;
    enif_free(c->entries);
    enif_free(c->storage);
    c->entries = NULL;
    c->storage = NULL;
    if (c->miner != NULL)
        enif_release_resource(c->miner);
    c->miner = NULL;
}

/* Reads a list of binaries or atoms into entries/storage. */
static int read_name_list(ErlNifEnv *env, ERL_NIF_TERM list, sh_slice *entries, size_t *n,
                          char **storage, size_t *used, size_t *cap)
{
    ERL_NIF_TERM head, tail = list;
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        if (*n >= MAX_CONFIG_ENTRIES)
            return 0;
        char atom_buf[MAX_NAME + 1];
        ErlNifBinary bin;
        const char *src;
        size_t len;
        if (enif_inspect_binary(env, head, &bin)) {
            src = (const char *)bin.data;
            len = bin.size;
        } else if (enif_get_atom(env, head, atom_buf, sizeof(atom_buf), ERL_NIF_LATIN1) > 0) {
            src = atom_buf;
            len = strlen(atom_buf);
        } else {
            return 0;
        }
        if (len == 0 || len > MAX_FILE)
            return 0;
        if (*used + len > *cap) {
            size_t ncap = (*cap ? *cap : 256);
            while (ncap < *used + len)
                ncap *= 2;
            char *s = enif_realloc(*storage, ncap);
            if (s == NULL)
                return 0;
            *storage = s;
            *cap = ncap;
        }
        memcpy(*storage + *used, src, len);
        /* store offsets for now; fixed up once storage stops moving */
        entries[*n].ptr = (const char *)(uintptr_t)*used;
        entries[*n].len = len;
        *used += len;
        (*n)++;
    }
    return enif_is_empty_list(env, tail);
}

/* The bytes of the binaries among the first MAX_CONFIG_ENTRIES + 1
 * elements of the map's value under key (the rest is checked when read). */
static size_t name_bytes(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM key)
{
    ERL_NIF_TERM head, tail;
    ErlNifBinary bin;
    size_t bytes = 0;
    if (!enif_get_map_value(env, map, key, &tail))
        return 0;
    for (int i = 0; i <= MAX_CONFIG_ENTRIES && enif_get_list_cell(env, tail, &head, &tail); i++)
        if (enif_is_binary(env, head) && enif_inspect_binary(env, head, &bin))
            bytes += bin.size;
    return bytes;
}

/* config_new(%{in_app_apps: [..], in_app_prefixes: [..], max_event_bytes: n, yield_every: n});
 * on a dirty scheduler when the names are more than CONFIG_DIRTY_BYTES
 * (copying them into fresh memory costs page faults: about 5 ms for the
 * largest allowed, 512 names of 1 KiB) */
static ERL_NIF_TERM config_new_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    if (!enif_is_map(env, argv[0]))
        return raise_badarg(env, "config must be a map");
    if (!sh_nif_on_dirty() && name_bytes(env, argv[0], atoms.in_app_apps) +
                                      name_bytes(env, argv[0], atoms.in_app_prefixes) >
                                  CONFIG_DIRTY_BYTES)
        return sh_nif_continue(env, "make_config", 1, config_new_nif, argc, argv);
    nif_config *c = enif_alloc_resource(config_type, sizeof(*c));
    if (c == NULL)
        return raise_badarg(env, "out of memory");
    memset(c, 0, sizeof(*c));
    ERL_NIF_TERM result = enif_make_resource(env, c);
    enif_release_resource(c);

    c->max_event_bytes = DEFAULT_MAX_EVENT_BYTES;
    c->dirty_above = DEFAULT_DIRTY_ABOVE;
    c->entries = enif_alloc(2 * MAX_CONFIG_ENTRIES * sizeof(sh_slice));
    if (c->entries == NULL)
        return raise_badarg(env, "out of memory");
    size_t napps = 0, nprefixes = 0, used = 0, cap = 0;
    ERL_NIF_TERM v;
    if (enif_get_map_value(env, argv[0], atoms.in_app_apps, &v) &&
        !read_name_list(env, v, c->entries, &napps, &c->storage, &used, &cap))
        return raise_badarg(env, "in_app_apps must be a list of at most 256 atoms or binaries");
    if (enif_get_map_value(env, argv[0], atoms.in_app_prefixes, &v) &&
        !read_name_list(env, v, c->entries + MAX_CONFIG_ENTRIES, &nprefixes, &c->storage, &used,
                        &cap))
        return raise_badarg(env, "in_app_prefixes must be a list of at most 256 binaries");
    for (size_t i = 0; i < napps; i++)
        c->entries[i].ptr = c->storage + (uintptr_t)c->entries[i].ptr;
    for (size_t i = 0; i < nprefixes; i++) {
        sh_slice *e = &c->entries[MAX_CONFIG_ENTRIES + i];
        e->ptr = c->storage + (uintptr_t)e->ptr;
    }
    c->inapp.apps = c->entries;
    c->inapp.napps = napps;
    c->inapp.prefixes = c->entries + MAX_CONFIG_ENTRIES;
    c->inapp.nprefixes = nprefixes;

    ErlNifUInt64 n;
    if (enif_get_map_value(env, argv[0], atoms.max_event_bytes, &v)) {
        if (!enif_get_uint64(env, v, &n) || n < 64 || n > MAX_EVENT_BYTES_LIMIT)
            return raise_badarg(env, "max_event_bytes must be an integer in 64..16777216");
        c->max_event_bytes = (size_t)n;
    }
    if (enif_get_map_value(env, argv[0], atoms.yield_every, &v)) {
        if (!enif_get_uint64(env, v, &n))
            return raise_badarg(env, "yield_every must be a non-negative integer");
        c->yield_every = (unsigned long)n;
    }
    if (enif_get_map_value(env, argv[0], atoms.dirty_above, &v)) {
        if (!enif_get_uint64(env, v, &n))
            return raise_badarg(env, "dirty_above must be a non-negative integer");
        c->dirty_above = n;
    }
    if (enif_get_map_value(env, argv[0], atoms.miner, &v) && !enif_is_identical(v, atoms.nil)) {
        nif_miner *mn;
        if (!enif_get_resource(env, v, miner_type, (void **)&mn))
            return raise_badarg(env, "miner must be nil or made by SelfHeal.Native.miner_new/1");
        enif_keep_resource(mn);
        c->miner = mn;
    }
    return result;
}

/* nil means the default configuration */
static int get_config(ErlNifEnv *env, ERL_NIF_TERM term, nif_config **out)
{
    if (enif_is_identical(term, atoms.nil)) {
        *out = default_config;
        return 1;
    }
    return enif_get_resource(env, term, config_type, (void **)out);
}

/* ------------------------------------------------------------ event view */

/* Text of atoms seen during one batch. Atoms are immediate terms that are
 * never collected, so an atom term is a stable key across yields. */
#define ATOM_CACHE_SLOTS 2048
#define ATOM_CACHE_TEXT (64 * 1024)

typedef struct atom_cache {
    ERL_NIF_TERM keys[ATOM_CACHE_SLOTS]; /* 0: empty (no atom is 0) */
    uint32_t off[ATOM_CACHE_SLOTS];
    uint16_t len[ATOM_CACHE_SLOTS];
    size_t nkeys;
    size_t used;
    char text[ATOM_CACHE_TEXT];
} atom_cache;

/* Keys and in-app flags of the term frames met in one NIF invocation
 * (one batch step, up to its yield), by (module, function, arity, file).
 * The file is a term compared with enif_is_identical, so entries are only
 * valid within the invocation that made them: each invocation starts a new
 * generation. Most of a batch repeats a few dozen frames, and a hit skips
 * reading the file charlist, the in-app decision and building the key. */
#define FRAME_CACHE_SLOTS 512
#define FRAME_CACHE_TEXT (32 * 1024)

typedef struct frame_cache_entry {
    uint64_t gen; /* 0: never used */
    ERL_NIF_TERM module, function, arity, file;
    uint32_t off;
    uint16_t len;
    uint8_t in_app;
    uint8_t has_file;
} frame_cache_entry;

typedef struct frame_cache {
    uint64_t gen;
    size_t used;
    frame_cache_entry slots[FRAME_CACHE_SLOTS];
    char text[FRAME_CACHE_TEXT];
} frame_cache;

/* Decoded view of one event term: slices into binaries of the term, into
 * the arena (names converted from atoms and charlists) and into the atom
 * cache when there is one. */
typedef struct event_view {
    sh_slice type;
    sh_slice message;
    sh_slice stack_text; /* a text stack trace, parsed by parse_stack_text */
    uint64_t work;       /* of the stack entries examined and frames read */
    int truncated;
    sh_frame frames[MAX_FRAMES];
    int in_app[MAX_FRAMES];
    sh_fp_frame prep[MAX_FRAMES]; /* what the fingerprint hashes per frame */
    size_t nframes;
    atom_cache *cache;   /* NULL outside batches */
    frame_cache *fcache; /* valid in fingerprint_batch steps only */
    sh_buf *key;
    char type_buf[MAX_NAME + 1];
    char arena[MAX_FRAMES * (3 * (MAX_NAME + 1) + 24 + MAX_FILE + 4)];
    size_t arena_used;
} event_view;

/* Working memory of one scheduler thread: an event view, the atom cache
 * and a SHA-256 context. A NIF call runs to its end (or its yield) on one
 * thread and nothing here is kept across a yield, so no lock is needed;
 * allocating it once per thread instead of per call saves the page faults
 * of ~200 KiB of fresh memory on every batch. It lives as long as the
 * thread. */
typedef struct scratch {
    event_view view;
    atom_cache cache;
    frame_cache frames;
    sh_buf key; /* a frame's key while it is built */
    sh_fp_ctx *ctx;
    sh_miner_line *line; /* a line prepared for a miner */
} scratch;

static _Thread_local scratch *thread_scratch;

static scratch *get_scratch(void)
{
    if (thread_scratch != NULL)
        return thread_scratch;
    scratch *s = enif_alloc(sizeof(*s));
    if (s == NULL)
        return NULL;
    if (sh_fp_ctx_new(&s->ctx) != 0) {
        enif_free(s);
        return NULL;
    }
    if (sh_miner_line_new(&s->line) != 0) {
        sh_fp_ctx_free(s->ctx);
        enif_free(s);
        return NULL;
    }
    memset(s->cache.keys, 0, sizeof(s->cache.keys));
    s->cache.nkeys = 0;
    s->cache.used = 0;
    s->view.cache = &s->cache;
    s->view.fcache = &s->frames;
    memset(s->frames.slots, 0, sizeof(s->frames.slots));
    s->frames.gen = 0;
    s->frames.used = 0;
    sh_buf_init(&s->key);
    s->view.key = &s->key;
    thread_scratch = s;
    return s;
}

static char *arena_take(event_view *v, size_t n)
{
    if (n > sizeof(v->arena) - v->arena_used)
        return NULL;
    char *p = v->arena + v->arena_used;
    v->arena_used += n;
    return p;
}

static size_t cache_slot(ERL_NIF_TERM atom)
{
    uint64_t h = (uint64_t)atom * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 40) & (ATOM_CACHE_SLOTS - 1);
}

static int cache_lookup(const atom_cache *c, ERL_NIF_TERM atom, sh_slice *out)
{
    for (size_t i = cache_slot(atom);; i = (i + 1) & (ATOM_CACHE_SLOTS - 1)) {
        if (c->keys[i] == 0)
            return 0;
        if (c->keys[i] == atom) {
            out->ptr = c->text + c->off[i];
            out->len = c->len[i];
            return 1;
        }
    }
}

/* Keeps the table at most half full; a full cache just stops caching. */
static void cache_insert(atom_cache *c, ERL_NIF_TERM atom, sh_slice *text)
{
    if (c->nkeys * 2 >= ATOM_CACHE_SLOTS || text->len > ATOM_CACHE_TEXT - c->used)
        return;
    size_t i = cache_slot(atom);
    while (c->keys[i] != 0)
        i = (i + 1) & (ATOM_CACHE_SLOTS - 1);
    memcpy(c->text + c->used, text->ptr, text->len);
    c->keys[i] = atom;
    c->off[i] = (uint32_t)c->used;
    c->len[i] = (uint16_t)text->len;
    c->nkeys++;
    c->used += text->len;
    text->ptr = c->text + c->off[i];
}

/* Atom text without Elixir's "Elixir." prefix. */
static int atom_slice(ErlNifEnv *env, ERL_NIF_TERM atom, event_view *v, sh_slice *out)
{
    if (v->cache != NULL && cache_lookup(v->cache, atom, out))
        return 1;
    char *p = v->arena + v->arena_used;
    size_t room = sizeof(v->arena) - v->arena_used;
    if (room > MAX_NAME + 1)
        room = MAX_NAME + 1;
    int n = enif_get_atom(env, atom, p, (unsigned)room, ATOM_ENCODING);
    if (n <= 0)
        return 0;
    size_t len = (size_t)n - 1;
    v->arena_used += len;
    out->ptr = p;
    out->len = len;
    if (len > 7 && memcmp(p, "Elixir.", 7) == 0) {
        out->ptr += 7;
        out->len -= 7;
    }
    if (v->cache != NULL)
        cache_insert(v->cache, atom, out);
    return 1;
}

/* A file name given as a charlist (code points, UTF-8 encoded here) or a
 * binary; cut at MAX_FILE bytes. */
static int file_slice(ErlNifEnv *env, ERL_NIF_TERM term, event_view *v, sh_slice *out)
{
    ErlNifBinary bin;
    if (enif_inspect_binary(env, term, &bin)) {
        size_t len = sh_utf8_truncate((const char *)bin.data, bin.size, MAX_FILE);
        out->ptr = (const char *)bin.data;
        out->len = len;
        return 1;
    }
    char *start = v->arena + v->arena_used;
    char *p = start;
    size_t room = sizeof(v->arena) - v->arena_used;
    char *end = start + (room < MAX_FILE + 4 ? room : MAX_FILE + 4);
    /* Fast path: an ASCII charlist, copied by the runtime in one call
     * (negative: cut to the buffer, which bounds it). */
    size_t fast_room = room < MAX_FILE + 1 ? room : MAX_FILE + 1;
    int got = enif_get_string(env, term, start, (unsigned)fast_room, ERL_NIF_LATIN1);
    if (got != 0) {
        size_t n = got > 0 ? (size_t)got - 1 : fast_room - 1;
        size_t k = 0;
        while (k < n && (unsigned char)start[k] < 0x80)
            k++;
        if (k == n) {
            v->arena_used += n;
            out->ptr = start;
            out->len = n;
            return 1;
        }
    }
    ERL_NIF_TERM head, tail = term;
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        unsigned int cp;
        if (!enif_get_uint(env, head, &cp) || cp > 0x10FFFF)
            return 0;
        if (end - p < 4 || (size_t)(p - start) >= MAX_FILE)
            break;
        if (cp < 0x80) {
            *p++ = (char)cp;
        } else if (cp < 0x800) {
            *p++ = (char)(0xC0 | (cp >> 6));
            *p++ = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *p++ = (char)(0xE0 | (cp >> 12));
            *p++ = (char)(0x80 | ((cp >> 6) & 0x3F));
            *p++ = (char)(0x80 | (cp & 0x3F));
        } else {
            *p++ = (char)(0xF0 | (cp >> 18));
            *p++ = (char)(0x80 | ((cp >> 12) & 0x3F));
            *p++ = (char)(0x80 | ((cp >> 6) & 0x3F));
            *p++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    v->arena_used += (size_t)(p - start);
    out->ptr = start;
    out->len = (size_t)(p - start);
    return 1;
}

/* The length of a proper list of at most max elements, walking no more
 * than max + 1 cells; 0 when it is longer or not a proper list. */
static int bounded_length(ErlNifEnv *env, ERL_NIF_TERM list, unsigned max, unsigned *out)
{
    ERL_NIF_TERM head, tail = list;
    unsigned n = 0;
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        if (++n > max)
            return 0;
    }
    *out = n;
    return enif_is_empty_list(env, tail);
}

/* {Module, Function, Arity | Args, Location} (or the 3-tuple form) */
static int term_frame(ErlNifEnv *env, ERL_NIF_TERM entry, event_view *v, sh_frame *f)
{
    const ERL_NIF_TERM *el;
    int arity;
    if (!enif_get_tuple(env, entry, &arity, &el) || arity < 3 || arity > 4)
        return 0;
    memset(f, 0, sizeof(*f));
    f->kind = SH_FRAME_ELIXIR;
    if (!atom_slice(env, el[0], v, &f->module))
        return 0;
    if (f->module.len > 0 && f->module.ptr[0] >= 'a' && f->module.ptr[0] <= 'z')
        f->kind = SH_FRAME_ERLANG;
    sh_slice fname;
    if (!atom_slice(env, el[1], v, &fname))
        return 0;
    unsigned int fun_arity = 0;
    if (!enif_get_uint(env, el[2], &fun_arity) && !bounded_length(env, el[2], MAX_ARGS, &fun_arity))
        return 0;
    /* "name/arity" */
    char *p = arena_take(v, fname.len + 12);
    if (p == NULL)
        return 0;
    if (fname.ptr != p)
        memmove(p, fname.ptr, fname.len);
    char digits[10];
    size_t nd = 0;
    do {
        digits[nd++] = (char)('0' + fun_arity % 10);
        fun_arity /= 10;
    } while (fun_arity > 0);
    char *q = p + fname.len;
    *q++ = '/';
    while (nd > 0)
        *q++ = digits[--nd];
    v->arena_used -= fname.len + 12 - (size_t)(q - p);
    f->function.ptr = p;
    f->function.len = (size_t)(q - p);
    f->file = SH_SLICE_EMPTY;
    if (arity == 4) {
        ERL_NIF_TERM head, tail = el[3];
        for (int k = 0; k < MAX_LOCATION_ENTRIES && enif_get_list_cell(env, tail, &head, &tail);
             k++) {
            const ERL_NIF_TERM *kv;
            int two;
            if (!enif_get_tuple(env, head, &two, &kv) || two != 2)
                continue;
            if (enif_is_identical(kv[0], atoms.file)) {
                if (!file_slice(env, kv[1], v, &f->file))
                    f->file = SH_SLICE_EMPTY;
            } else if (enif_is_identical(kv[0], atoms.line)) {
                unsigned int line;
                if (enif_get_uint(env, kv[1], &line))
                    f->line = line;
            }
        }
    }
    return 1;
}

/* The location's file term, or 0 when there is none (among its first
 * MAX_LOCATION_ENTRIES entries, like term_frame). */
static ERL_NIF_TERM location_file(ErlNifEnv *env, ERL_NIF_TERM location)
{
    ERL_NIF_TERM head, tail = location;
    for (int k = 0; k < MAX_LOCATION_ENTRIES && enif_get_list_cell(env, tail, &head, &tail); k++) {
        const ERL_NIF_TERM *kv;
        int two;
        if (enif_get_tuple(env, head, &two, &kv) && two == 2 &&
            enif_is_identical(kv[0], atoms.file))
            return kv[1];
    }
    return 0;
}

static frame_cache_entry *fcache_slot(frame_cache *c, ERL_NIF_TERM m, ERL_NIF_TERM f,
                                      ERL_NIF_TERM a)
{
    uint64_t h = ((uint64_t)m * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)f * 0xC2B2AE3D27D4EB4FULL) ^
                 ((uint64_t)a * 0x165667B19E3779F9ULL);
    return &c->slots[(h >> 40) & (FRAME_CACHE_SLOTS - 1)];
}

/* A cached frame for entry el[0..arity) (module and function atoms, an
 * integer arity), or NULL. *slot is where a miss may be stored. */
static const frame_cache_entry *fcache_find(ErlNifEnv *env, frame_cache *c, const ERL_NIF_TERM *el,
                                            int arity, frame_cache_entry **slot, ERL_NIF_TERM *file)
{
    *slot = NULL;
    *file = 0;
    if (!enif_is_atom(env, el[0]) || !enif_is_atom(env, el[1]) || !enif_is_number(env, el[2]))
        return NULL; /* argument lists are not cached */
    *file = arity == 4 ? location_file(env, el[3]) : 0;
    frame_cache_entry *e = fcache_slot(c, el[0], el[1], el[2]);
    *slot = e;
    if (e->gen != c->gen || e->module != el[0] || e->function != el[1] || e->arity != el[2] ||
        e->has_file != (*file != 0))
        return NULL;
    if (*file != 0 && !enif_is_identical(e->file, *file))
        return NULL;
    return e;
}

static void fcache_store(frame_cache *c, frame_cache_entry *e, const ERL_NIF_TERM *el,
                         ERL_NIF_TERM file, sh_fp_frame *prep)
{
    if (prep->key.len > FRAME_CACHE_TEXT - c->used || prep->key.len > UINT16_MAX)
        return;
    memcpy(c->text + c->used, prep->key.ptr, prep->key.len);
    *e = (frame_cache_entry){.gen = c->gen,
                             .module = el[0],
                             .function = el[1],
                             .arity = el[2],
                             .file = file,
                             .off = (uint32_t)c->used,
                             .len = (uint16_t)prep->key.len,
                             .in_app = (uint8_t)prep->in_app,
                             .has_file = file != 0};
    prep->key.ptr = c->text + c->used;
    c->used += prep->key.len;
}

/* Reads up to MAX_FRAMES frames among the first MAX_STACK_ENTRIES entries
 * (malformed ones are skipped, and counted as work), stopping early once
 * SH_FP_IN_APP_FRAMES in-app frames are known when `need_all` is false. In
 * a batch, frames met before in the same invocation come from the frame
 * cache and only their prepared form (key, in-app flag) is filled. */
static void read_term_frames(ErlNifEnv *env, ERL_NIF_TERM list, event_view *v,
                             const nif_config *cfg, int need_all)
{
    ERL_NIF_TERM head, tail = list;
    size_t in_app = 0, entries = 0;
    frame_cache *fc = need_all ? NULL : v->fcache;
    while (v->nframes < MAX_FRAMES && entries < MAX_STACK_ENTRIES &&
           enif_get_list_cell(env, tail, &head, &tail)) {
        entries++;
        size_t mark = v->arena_used;
        size_t i = v->nframes;
        sh_frame *f = &v->frames[i];
        sh_fp_frame *prep = &v->prep[i];
        const ERL_NIF_TERM *el;
        int arity;
        if (!enif_get_tuple(env, head, &arity, &el) || arity < 3 || arity > 4)
            continue;
        frame_cache_entry *slot = NULL;
        ERL_NIF_TERM file = 0;
        const frame_cache_entry *hit = fc ? fcache_find(env, fc, el, arity, &slot, &file) : NULL;
        if (hit != NULL) {
            memset(f, 0, sizeof(*f));
            *prep = (sh_fp_frame){NULL, {fc->text + hit->off, hit->len}, hit->in_app};
        } else {
            if (!term_frame(env, head, v, f)) {
                v->arena_used = mark; /* a malformed entry is skipped */
                continue;
            }
            *prep = (sh_fp_frame){f, {NULL, 0}, sh_frame_is_in_app(f, &cfg->inapp)};
            if (slot != NULL) {
                sh_buf_reset(v->key);
                sh_fp_frame_key(v->key, f);
                if (!v->key->oom) {
                    prep->key = (sh_slice){v->key->data, v->key->len};
                    fcache_store(fc, slot, el, file, prep);
                    if (prep->key.ptr == v->key->data)
                        prep->key = (sh_slice){NULL, 0}; /* not stored: built again later */
                }
            }
        }
        v->in_app[i] = prep->in_app;
        in_app += (size_t)prep->in_app;
        v->nframes++;
        if (!need_all && in_app >= SH_FP_IN_APP_FRAMES)
            break;
    }
    v->work += entries * WORK_PER_ENTRY + v->nframes * WORK_PER_FRAME;
}

static int get_text(ErlNifEnv *env, ERL_NIF_TERM t, event_view *v, sh_slice *out, char *atom_buf)
{
    ErlNifBinary bin;
    if (enif_is_identical(t, atoms.nil)) {
        *out = SH_SLICE_EMPTY;
        return 1;
    }
    if (enif_inspect_binary(env, t, &bin)) {
        out->ptr = (const char *)bin.data;
        out->len = bin.size;
        return 1;
    }
    if (atom_buf != NULL) {
        int n = enif_get_atom(env, t, atom_buf, MAX_NAME + 1, ATOM_ENCODING);
        if (n > 0) {
            out->ptr = atom_buf;
            out->len = (size_t)n - 1;
            if (out->len > 7 && memcmp(atom_buf, "Elixir.", 7) == 0) {
                out->ptr += 7;
                out->len -= 7;
            }
            return 1;
        }
    }
    (void)v;
    return 0;
}

/* Fills v from an event map, but for a text stack trace, which is only
 * found (v->stack_text) and cut: parse_stack_text reads it. Returns NULL
 * or the reason it is invalid. */
static const char *read_event(ErlNifEnv *env, ERL_NIF_TERM ev, const nif_config *cfg, event_view *v,
                              int need_all_frames)
{
    v->nframes = 0;
    v->arena_used = 0;
    v->truncated = 0;
    v->work = 0;
    v->stack_text = SH_SLICE_EMPTY;
    if (!enif_is_map(env, ev))
        return "event must be a map or a SelfHeal.Event struct";
    ERL_NIF_TERM t;
    v->type = SH_SLICE_EMPTY;
    if (enif_get_map_value(env, ev, atoms.type, &t) && !get_text(env, t, v, &v->type, v->type_buf))
        return "event type must be a binary, an atom or nil";
    v->message = SH_SLICE_EMPTY;
    if (enif_get_map_value(env, ev, atoms.message, &t) && !get_text(env, t, v, &v->message, NULL))
        return "event message must be a binary or nil";
    if (v->message.len > cfg->max_event_bytes) {
        v->message.len = sh_utf8_truncate(v->message.ptr, v->message.len, cfg->max_event_bytes);
        v->truncated = 1;
    }
    if (v->type.len > MAX_NAME) {
        v->type.len = sh_utf8_truncate(v->type.ptr, v->type.len, MAX_NAME);
        v->truncated = 1;
    }
    if (!enif_get_map_value(env, ev, atoms.stacktrace, &t) || enif_is_identical(t, atoms.nil))
        return NULL;
    ErlNifBinary bin;
    if (enif_inspect_binary(env, t, &bin)) {
        size_t len = bin.size;
        if (len > cfg->max_event_bytes) {
            len = cfg->max_event_bytes;
            v->truncated = 1;
        }
        v->stack_text = (sh_slice){(const char *)bin.data, len};
        return NULL;
    }
    if (enif_is_list(env, t)) {
        read_term_frames(env, t, v, cfg, need_all_frames);
        return NULL;
    }
    return "event stacktrace must be a binary, a list of stack entries or nil";
}

static void parse_stack_text(event_view *v, const nif_config *cfg)
{
    if (v->stack_text.len == 0)
        return;
    v->nframes = sh_frames_parse_text(v->frames, MAX_FRAMES, v->stack_text.ptr, v->stack_text.len);
    for (size_t i = 0; i < v->nframes; i++) {
        v->in_app[i] = sh_frame_is_in_app(&v->frames[i], &cfg->inapp);
        v->prep[i] = (sh_fp_frame){&v->frames[i], {NULL, 0}, v->in_app[i]};
    }
}

/* The work of an event read by read_event: its message normalised (twice
 * with a miner: for the miner and for the fingerprint), its text stack
 * trace, its term stack trace. */
static uint64_t event_work(const event_view *v, const nif_config *cfg)
{
    uint64_t msg = v->message.len;
    return msg * (cfg->miner != NULL ? 2 : 1) + (v->stack_text.len >> STACK_TEXT_SHIFT) + v->work;
}

/* The budget of a miner line's addition on a normal scheduler. */
static uint64_t miner_budget(uint64_t dirty_above)
{
    return dirty_above > UINT64_MAX / MINER_ADD_PER_UNIT - 1 ? UINT64_MAX - 1
                                                             : dirty_above * MINER_ADD_PER_UNIT;
}

/* Adds a line to a shared miner: prepared without its lock, added under
 * it. On a normal scheduler the lock is only tried and the addition kept
 * within budget: 1 means "go on on a dirty scheduler" (nothing added).
 * 0 with *id, or -1 when out of memory. The caller has checked that the
 * line's preparation is within its own budget. */
static int miner_add_one(nif_miner *mn, sh_miner_line *line, sh_slice text, int dirty,
                         uint64_t budget, uint64_t *id)
{
    if (sh_miner_prepare(mn->miner, line, text.ptr, text.len) != 0)
        return -1;
    if (!sh_nif_lock_take(&mn->lock, dirty))
        return 1;
    int rc = sh_miner_add_line(mn->miner, line, dirty ? UINT64_MAX : budget, id);
    sh_nif_lock_release(&mn->lock);
    return rc;
}

typedef enum ev_status {
    EV_DONE,
    EV_BAD,  /* *why says how */
    EV_FAIL, /* out of memory or OpenSSL */
    EV_MOVE  /* too much for a normal scheduler: nothing was changed */
} ev_status;

/* Reads and fingerprints one event (*r, *cluster, *work). An event
 * without frames, under a configuration with a miner, is grouped by the
 * miner and fingerprinted by its cluster (*cluster set, else 0). */
static ev_status fingerprint_event(ErlNifEnv *env, ERL_NIF_TERM ev, const nif_config *cfg,
                                   scratch *sc, int need_all, int dirty, sh_fp_result *r,
                                   uint64_t *cluster, const char **why, uint64_t *work)
{
    event_view *v = &sc->view;
    *cluster = 0;
    *why = read_event(env, ev, cfg, v, need_all);
    if (*why != NULL)
        return EV_BAD;
    *work = event_work(v, cfg);
    if (!dirty && *work > cfg->dirty_above)
        return EV_MOVE;
    parse_stack_text(v, cfg);
    if (v->nframes == 0 && cfg->miner != NULL) {
        int rc = miner_add_one(cfg->miner, sc->line, v->message, dirty,
                               miner_budget(cfg->dirty_above), cluster);
        if (rc != 0)
            return rc > 0 ? EV_MOVE : EV_FAIL;
        return sh_fingerprint_cluster(r, sc->ctx, v->type, v->message, *cluster) == 0 ? EV_DONE
                                                                                      : EV_FAIL;
    }
    return sh_fingerprint_frames(r, sc->ctx, v->type, v->message, v->prep, v->nframes) == 0
               ? EV_DONE
               : EV_FAIL;
}

#define FINGERPRINT_FAILED "fingerprint failed (out of memory or OpenSSL error)"

/* ------------------------------------------------------------- normalize */

static ERL_NIF_TERM normalize_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifBinary in;
    if (!enif_inspect_binary(env, argv[0], &in))
        return raise_badarg(env, "normalize/1 expects a binary");
    size_t len = in.size, max = default_config->max_event_bytes;
    int truncated = 0;
    if (len > max) {
        len = sh_utf8_truncate((const char *)in.data, len, max);
        truncated = 1;
    }
    if (len > default_config->dirty_above && !sh_nif_on_dirty())
        return sh_nif_continue(env, "normalize", 1, normalize_nif, argc, argv);
    sh_buf out;
    sh_buf_init(&out);
    if (sh_normalize(&out, (const char *)in.data, len) != 0) {
        sh_buf_free(&out);
        return raise_badarg(env, "out of memory");
    }
    if (truncated)
        sh_buf_append_str(&out, " <truncated>");
    ERL_NIF_TERM result = make_bin(env, out.data, out.len);
    sh_buf_free(&out);
    return result;
}

/* ----------------------------------------------------------- fingerprint */

static ERL_NIF_TERM frame_kind(sh_frame_kind k)
{
    switch (k) {
    case SH_FRAME_ELIXIR:
        return atoms.k_elixir;
    case SH_FRAME_ERLANG:
        return atoms.k_erlang;
    case SH_FRAME_JS:
        return atoms.k_js;
    case SH_FRAME_PYTHON:
        return atoms.k_python;
    case SH_FRAME_JAVA:
        return atoms.k_java;
    case SH_FRAME_GO:
        return atoms.k_go;
    default:
        return atoms.k_unknown;
    }
}

static ERL_NIF_TERM make_frame(ErlNifEnv *env, const sh_frame *f, int in_app)
{
    ERL_NIF_TERM keys[] = {atoms.kind, atoms.app,  atoms.module, atoms.function,
                           atoms.file, atoms.line, atoms.column, atoms.in_app};
    ERL_NIF_TERM vals[] = {
        frame_kind(f->kind),
        f->app.len ? make_slice(env, f->app) : atoms.nil,
        make_slice(env, f->module),
        make_slice(env, f->function),
        make_slice(env, f->file),
        f->line ? enif_make_uint(env, f->line) : atoms.nil,
        f->column ? enif_make_uint(env, f->column) : atoms.nil,
        make_bool(in_app),
    };
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, vals, sizeof(keys) / sizeof(keys[0]), &map);
    return map;
}

/* The normalised text a result carries: at most NORMALIZED_SHOWN bytes,
 * cut at a UTF-8 boundary (the fingerprint covers all of it). A 16 MiB
 * message's whole text was a fresh 16 MiB binary on every call. */
#define NORMALIZED_SHOWN (64u * 1024)

static sh_slice normalized_shown(sh_slice s)
{
    if (s.len <= NORMALIZED_SHOWN)
        return s;
    size_t n = NORMALIZED_SHOWN;
    while (n > 0 && ((unsigned char)s.ptr[n] & 0xC0) == 0x80)
        n--;
    s.len = n;
    return s;
}

/* fingerprint(event, config | nil) -> %{fingerprint:, normalized:, ...}
 * A heavy event moves the call to a dirty scheduler, where it runs again
 * from the start. */
static ERL_NIF_TERM fingerprint_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    nif_config *cfg;
    if (!get_config(env, argv[1], &cfg))
        return raise_badarg(env, "config must be nil or made by SelfHeal.Native.config/1");
    scratch *sc = get_scratch();
    if (sc == NULL)
        return raise_badarg(env, "out of memory");
    event_view *v = &sc->view;
    sh_fp_ctx *ctx = sc->ctx;
    ERL_NIF_TERM result;
    const char *why;
    sh_fp_result r;
    uint64_t cluster = 0, work;
    ev_status st =
        fingerprint_event(env, argv[0], cfg, sc, 1, sh_nif_on_dirty(), &r, &cluster, &why, &work);
    if (st == EV_MOVE) {
        result = sh_nif_continue(env, "fingerprint", 1, fingerprint_nif, argc, argv);
    } else if (st == EV_BAD) {
        result = raise_badarg(env, why);
    } else if (st == EV_FAIL) {
        result = raise_badarg(env, FINGERPRINT_FAILED);
    } else {
        ERL_NIF_TERM frames = enif_make_list(env, 0);
        for (size_t i = v->nframes; i-- > 0;)
            frames = enif_make_list_cell(env, make_frame(env, &v->frames[i], v->in_app[i]), frames);
        ERL_NIF_TERM top = r.top_frame >= 0
                               ? make_frame(env, &v->frames[r.top_frame], v->in_app[r.top_frame])
                               : atoms.nil;
        ERL_NIF_TERM keys[] = {atoms.fingerprint, atoms.normalized, atoms.type,   atoms.in_app,
                               atoms.truncated,   atoms.top_frame,  atoms.frames, atoms.cluster};
        ERL_NIF_TERM vals[] = {make_bin(env, r.hex, SH_FP_HEX_LEN),
                               make_slice(env, normalized_shown(sh_fp_ctx_normalized(ctx))),
                               make_slice(env, v->type),
                               make_bool(r.in_app),
                               make_bool(v->truncated),
                               top,
                               frames,
                               cluster ? enif_make_uint64(env, cluster) : atoms.nil};
        enif_make_map_from_arrays(env, keys, vals, sizeof(keys) / sizeof(keys[0]), &result);
    }
    return result;
}

/* ------------------------------------------------- fingerprint_batch (yields) */

/* Results are kept in fixed blocks rather than one growing array: blocks
 * this size come from the allocator's pooled carriers, where one large
 * array would be a fresh mapping (page faults) and copies on every growth. */
#define BATCH_BLOCK 2048

typedef struct batch_state {
    char (**blocks)[SH_FP_HEX_LEN];
    size_t nblocks;
    size_t blocks_cap;
    size_t n;
    size_t built; /* phase 2: how many results are still to be consed */
} batch_state;

static void batch_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    batch_state *s = obj;
    atomic_fetch_sub_explicit(&live_batches, 1, memory_order_relaxed);
    for (size_t i = 0; i < s->nblocks; i++)
        enif_free(s->blocks[i]);
    enif_free(s->blocks);
    s->blocks = NULL;
    s->nblocks = 0;
}

/* Room for one more result; NULL when out of memory. */
static char *batch_slot(batch_state *s)
{
    if (s->n == s->nblocks * BATCH_BLOCK) {
        if (s->nblocks == s->blocks_cap) {
            size_t cap = s->blocks_cap ? s->blocks_cap * 2 : 16;
            void *b = enif_realloc(s->blocks, cap * sizeof(*s->blocks));
            if (b == NULL)
                return NULL;
            s->blocks = b;
            s->blocks_cap = cap;
        }
        void *block = enif_alloc(BATCH_BLOCK * SH_FP_HEX_LEN);
        if (block == NULL)
            return NULL;
        s->blocks[s->nblocks++] = block;
    }
    size_t i = s->n++;
    return s->blocks[i / BATCH_BLOCK][i % BATCH_BLOCK];
}

static ERL_NIF_TERM batch_build(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
/* The continuations, their time reported (SH_NIF_TIMED). */
static ERL_NIF_TERM batch_step_timed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
static ERL_NIF_TERM batch_build_timed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
static ERL_NIF_TERM miner_add_step_timed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Continues fn(a, b, c) on a dirty scheduler or a normal one. */
static ERL_NIF_TERM continue3(ErlNifEnv *env, const char *name, int dirty,
                              ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]),
                              ERL_NIF_TERM a, ERL_NIF_TERM b, ERL_NIF_TERM c)
{
    ERL_NIF_TERM args[3] = {a, b, c};
    return sh_nif_continue(env, name, dirty, fn, 3, args);
}

/* argv: [remaining events, config, state]. Runs on either kind of
 * scheduler: a normal one hands a heavy event (and what follows, for a
 * while) to a dirty one, which hands back after its slice. */
static ERL_NIF_TERM batch_step(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_config *cfg;
    batch_state *s;
    if (!get_config(env, argv[1], &cfg) ||
        !enif_get_resource(env, argv[2], batch_type, (void **)&s))
        return raise_badarg(env, "internal: bad batch state");
    scratch *sc = get_scratch();
    if (sc == NULL)
        return raise_badarg(env, "out of memory");
    int dirty = sh_nif_on_dirty();
    /* a new generation: the cached file terms of the last invocation may be
     * gone */
    sc->frames.gen++;
    sc->frames.used = 0;
    sh_nif_clock clock;
    sh_nif_clock_start(&clock, cfg->yield_every, TIMESLICE_CHECK, TIMESLICE_WORK);
    ERL_NIF_TERM head, tail, rest = argv[0];
    while (enif_get_list_cell(env, rest, &head, &tail)) {
        const char *why;
        sh_fp_result r;
        uint64_t cluster, work;
        ev_status st = fingerprint_event(env, head, cfg, sc, 0, dirty, &r, &cluster, &why, &work);
        if (st == EV_MOVE)
            return continue3(env, "fingerprint_batch", 1, batch_step_timed, rest, argv[1], argv[2]);
        if (st == EV_BAD)
            return raise_badarg(env, why);
        if (st == EV_FAIL)
            return raise_badarg(env, FINGERPRINT_FAILED);
        char *slot = batch_slot(s);
        if (slot == NULL)
            return raise_badarg(env, "out of memory");
        memcpy(slot, r.hex, SH_FP_HEX_LEN);
        rest = tail;
        if (sh_nif_clock_tick(env, &clock, work))
            return continue3(env, "fingerprint_batch", 0, batch_step_timed, rest, argv[1], argv[2]);
    }
    if (!enif_is_empty_list(env, rest))
        return raise_badarg(env, "events must be a proper list");
    s->built = s->n;
    return batch_build(env, 3, (ERL_NIF_TERM[]){enif_make_list(env, 0), argv[1], argv[2]});
}

/* argv: [results so far, config, state]; conses from the end. */
static ERL_NIF_TERM batch_build(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_config *cfg;
    batch_state *s;
    if (!get_config(env, argv[1], &cfg) ||
        !enif_get_resource(env, argv[2], batch_type, (void **)&s))
        return raise_badarg(env, "internal: bad batch state");
    sh_nif_clock clock;
    sh_nif_clock_start(&clock, cfg->yield_every, 32, UINT64_MAX);
    ERL_NIF_TERM acc = argv[0];
    while (s->built > 0) {
        s->built--;
        const char *hex = s->blocks[s->built / BATCH_BLOCK][s->built % BATCH_BLOCK];
        acc = enif_make_list_cell(env, make_bin(env, hex, SH_FP_HEX_LEN), acc);
        if (s->built > 0 && sh_nif_clock_tick(env, &clock, 0))
            return continue3(env, "fingerprint_batch", 0, batch_build_timed, acc, argv[1], argv[2]);
    }
    return acc;
}

/* fingerprint_batch(events, config | nil) -> [fingerprint] */
static ERL_NIF_TERM fingerprint_batch_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_config *cfg;
    if (!get_config(env, argv[1], &cfg))
        return raise_badarg(env, "config must be nil or made by SelfHeal.Native.config/1");
    if (!enif_is_list(env, argv[0]))
        return raise_badarg(env, "events must be a list");
    batch_state *s = enif_alloc_resource(batch_type, sizeof(*s));
    if (s == NULL)
        return raise_badarg(env, "out of memory");
    memset(s, 0, sizeof(*s));
    atomic_fetch_add_explicit(&live_batches, 1, memory_order_relaxed);
    ERL_NIF_TERM state = enif_make_resource(env, s);
    enif_release_resource(s);
    return batch_step(env, 3, (ERL_NIF_TERM[]){argv[0], argv[1], state});
}

/* --------------------------------------------------------- dedup (dirty) */

static int get_timestamp(ErlNifEnv *env, ERL_NIF_TERM t, int64_t *out)
{
    ErlNifSInt64 v;
    if (enif_is_identical(t, atoms.nil)) {
        *out = 0;
        return 1;
    }
    if (!enif_get_int64(env, t, &v))
        return 0;
    *out = v;
    return 1;
}

static ERL_NIF_TERM make_group(ErlNifEnv *env, const sh_dedup *d, const sh_dedup_group *g,
                               ERL_NIF_TERM sample)
{
    char hex[SH_FP_HEX_LEN + 1];
    sh_fp_to_hex(hex, g->fingerprint);
    ERL_NIF_TERM services = enif_make_list(env, 0);
    for (uint32_t i = g->nservices; i-- > 0;)
        services = enif_make_list_cell(env, make_slice(env, sh_dedup_service(d, g->services[i])),
                                       services);
    ERL_NIF_TERM keys[] = {atoms.fingerprint,     atoms.count,  atoms.first_seen,
                           atoms.last_seen,       atoms.sample, atoms.services,
                           atoms.services_dropped};
    ERL_NIF_TERM vals[] = {make_bin(env, hex, SH_FP_HEX_LEN),
                           enif_make_uint64(env, g->count),
                           enif_make_int64(env, g->first_seen),
                           enif_make_int64(env, g->last_seen),
                           sample,
                           services,
                           enif_make_uint(env, g->services_dropped)};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, vals, sizeof(keys) / sizeof(keys[0]), &map);
    return map;
}

/* dedup(events) -> [group], groups in first-seen order. Dirty CPU: the
 * whole batch is one call, so sample terms stay valid throughout. */
static ERL_NIF_TERM dedup_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    unsigned len;
    if (!enif_get_list_length(env, argv[0], &len))
        return raise_badarg(env, "events must be a proper list");
    sh_dedup *d = NULL;
    ERL_NIF_TERM *samples = NULL;
    ERL_NIF_TERM result;
    if (sh_dedup_new(&d, len) != 0 ||
        (samples = enif_alloc((len + 1) * sizeof(*samples))) == NULL) {
        result = raise_badarg(env, "out of memory");
        goto done;
    }
    ERL_NIF_TERM head, tail = argv[0], t;
    size_t index = 0;
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        uint8_t fp[SH_FP_BYTES];
        ErlNifBinary fpbin, svc = {0};
        int64_t ts;
        if (!enif_is_map(env, head) || !enif_get_map_value(env, head, atoms.fingerprint, &t) ||
            !enif_inspect_binary(env, t, &fpbin) ||
            sh_fp_from_hex(fp, (const char *)fpbin.data, fpbin.size) != 0) {
            result = raise_badarg(env, "each event must be a map with a 32-hex-char :fingerprint");
            goto done;
        }
        if (!enif_get_map_value(env, head, atoms.timestamp, &t) || !get_timestamp(env, t, &ts)) {
            result = raise_badarg(env, "event :timestamp must be an integer or nil");
            goto done;
        }
        if (enif_get_map_value(env, head, atoms.service, &t) && !enif_is_identical(t, atoms.nil) &&
            !enif_inspect_binary(env, t, &svc)) {
            result = raise_badarg(env, "event :service must be a binary or nil");
            goto done;
        }
        size_t before = sh_dedup_count(d);
        if (sh_dedup_add(d, fp, ts, (const char *)svc.data, svc.size, index) != 0) {
            result = raise_badarg(env, "out of memory");
            goto done;
        }
        if (sh_dedup_count(d) > before)
            samples[before] = head;
        index++;
    }
    result = enif_make_list(env, 0);
    for (size_t i = sh_dedup_count(d); i-- > 0;)
        result = enif_make_list_cell(env, make_group(env, d, sh_dedup_group_at(d, i), samples[i]),
                                     result);
done:
    enif_free(samples);
    sh_dedup_free(d);
    return result;
}

/* ------------------------------------------------ decode_json_lines (dirty) */

/*
 * The strings of decoded events. A string longer than a heap binary (64
 * bytes) would be a binary of its own, off the process heap: a 64 MiB body
 * makes some 300,000 of them, and the process that holds the result frees
 * them one by one when it exits, on a normal scheduler (20 ms measured).
 * They are copied instead into shared chunks (enif_make_new_binary: its
 * bytes may be written until the NIF returns) of 4 KiB growing to 128 KiB,
 * and each is a sub-binary of its chunk: one off-heap binary per chunk. A
 * string of more than 16 KiB has a binary of its own, so that at most 16
 * KiB of a chunk are lost at its end, and an event kept long pins at most
 * a chunk.
 */
#define STRINGS_FIRST_CHUNK 4096
#define STRINGS_MAX_CHUNK (128u * 1024)
#define STRINGS_OWN_ABOVE (16u * 1024)
#define HEAP_BIN_MAX 64

typedef struct string_chunks {
    ERL_NIF_TERM chunk;
    unsigned char *data;
    size_t size, used;
} string_chunks;

static ERL_NIF_TERM chunk_string(ErlNifEnv *env, string_chunks *sc, const char *ptr, size_t len)
{
    if (len <= HEAP_BIN_MAX || len > STRINGS_OWN_ABOVE)
        return make_bin(env, ptr, len);
    if (sc->size - sc->used < len) {
        size_t size = sc->size == 0 ? STRINGS_FIRST_CHUNK : sc->size * 2;
        if (size > STRINGS_MAX_CHUNK)
            size = STRINGS_MAX_CHUNK;
        sc->data = enif_make_new_binary(env, size, &sc->chunk);
        sc->size = size;
        sc->used = 0;
    }
    memcpy(sc->data + sc->used, ptr, len);
    ERL_NIF_TERM t = enif_make_sub_binary(env, sc->chunk, sc->used, len);
    sc->used += len;
    return t;
}

static ERL_NIF_TERM chunk_slice(ErlNifEnv *env, string_chunks *sc, sh_slice s)
{
    return chunk_string(env, sc, s.ptr, s.len);
}

static ERL_NIF_TERM chunk_slice_or_nil(ErlNifEnv *env, string_chunks *sc, sh_slice s)
{
    return s.len ? chunk_slice(env, sc, s) : atoms.nil;
}

static ERL_NIF_TERM make_jsonl_event(ErlNifEnv *env, string_chunks *sc, const sh_jsonl_event *e)
{
    ERL_NIF_TERM meta = enif_make_new_map(env);
    for (size_t i = 0; i < e->nmeta; i++) {
        const sh_jsonl_meta *m = &e->meta[i];
        ERL_NIF_TERM v;
        switch (m->kind) {
        case SH_JSONL_STRING:
            v = chunk_slice(env, sc, m->string);
            break;
        case SH_JSONL_INTEGER:
            v = enif_make_int64(env, m->integer);
            break;
        case SH_JSONL_REAL:
            v = enif_make_double(env, m->real);
            break;
        case SH_JSONL_TRUE:
            v = atoms.true_;
            break;
        case SH_JSONL_FALSE:
            v = atoms.false_;
            break;
        default:
            v = atoms.nil;
        }
        enif_make_map_put(env, meta, chunk_string(env, sc, m->key, m->key_len), v, &meta);
    }
    ERL_NIF_TERM keys[] = {atoms.message, atoms.type,      atoms.stacktrace, atoms.service,
                           atoms.level,   atoms.timestamp, atoms.metadata};
    ERL_NIF_TERM vals[] = {chunk_slice(env, sc, e->message),
                           chunk_slice_or_nil(env, sc, e->type),
                           chunk_slice_or_nil(env, sc, e->stacktrace),
                           chunk_slice_or_nil(env, sc, e->service),
                           chunk_slice_or_nil(env, sc, e->level),
                           e->has_timestamp ? enif_make_int64(env, e->timestamp_us) : atoms.nil,
                           meta};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, vals, sizeof(keys) / sizeof(keys[0]), &map);
    return map;
}

/* Decodes the records of body from byte `off` until `max` records (valid
 * or malformed; blank lines do not count) have been read. The result map:
 * %{events: [map], malformed: n, blank_lines: n, errors: [{line, reason}]
 * (first 100, lines counted from `off`)}, plus next: the offset after the
 * last line read when `with_next` (the sliced form). */
static ERL_NIF_TERM decode_lines(ErlNifEnv *env, ErlNifBinary body, size_t off, size_t max,
                                 int with_next)
{
    const char *p = (const char *)body.data;
    size_t line_no = 0, records = 0, malformed = 0, blank = 0, nerrors = 0;
    ERL_NIF_TERM events = enif_make_list(env, 0), errors = enif_make_list(env, 0);
    sh_jsonl_event *e = enif_alloc(sizeof(*e));
    if (e == NULL)
        return raise_badarg(env, "out of memory");
    memset(e, 0, sizeof(*e));
    string_chunks strings = {0, NULL, 0, 0};
    while (off < body.size && records < max) {
        size_t next;
        size_t len = sh_jsonl_next_line(p + off, body.size - off, &next);
        const char *line = p + off;
        off += next;
        line_no++;
        if (sh_jsonl_blank(line, len)) {
            blank++;
            continue;
        }
        records++;
        char err[160];
        if (sh_jsonl_decode_line(e, line, len, err, sizeof(err)) == 0) {
            events = enif_make_list_cell(env, make_jsonl_event(env, &strings, e), events);
        } else {
            malformed++;
            if (nerrors < MAX_JSONL_ERRORS) {
                nerrors++;
                ERL_NIF_TERM reason = make_bin(env, err, strnlen(err, sizeof(err)));
                errors = enif_make_list_cell(
                    env, enif_make_tuple2(env, enif_make_uint64(env, line_no), reason), errors);
            }
        }
        sh_jsonl_event_clear(e);
        if (next == 0)
            break;
    }
    enif_free(e);
    ERL_NIF_TERM rev_events, rev_errors;
    enif_make_reverse_list(env, events, &rev_events);
    enif_make_reverse_list(env, errors, &rev_errors);
    ERL_NIF_TERM keys[] = {atoms.events, atoms.malformed, atoms.blank_lines, atoms.errors,
                           enif_make_atom(env, "next")};
    ERL_NIF_TERM vals[] = {rev_events, enif_make_uint64(env, malformed),
                           enif_make_uint64(env, blank), rev_errors, enif_make_uint64(env, off)};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, vals, with_next ? 5 : 4, &map);
    return map;
}

/* decode_json_lines(body): every record of the body.
 * decode_json_lines(body, offset, max_records): at most max_records from
 * byte offset, with next (a body decoded slice by slice never holds the
 * terms of more than one slice). */
static ERL_NIF_TERM decode_json_lines_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifBinary body;
    if (!enif_inspect_binary(env, argv[0], &body))
        return raise_badarg(env, "decode_json_lines expects a binary");
    if (body.size > MAX_JSONL_BODY)
        return raise_badarg(env, "body larger than 256 MiB");
    if (argc == 1) {
        if (body.size > MAX_JSONL_WHOLE_BODY)
            return raise_badarg(env, "body larger than 8 MiB: decode it in slices with "
                                     "decode_json_lines/3");
        return decode_lines(env, body, 0, SIZE_MAX, 0);
    }
    ErlNifUInt64 off, max;
    if (!enif_get_uint64(env, argv[1], &off) || off > body.size)
        return raise_badarg(env, "offset: 0..byte_size(body)");
    if (!enif_get_uint64(env, argv[2], &max) || max == 0)
        return raise_badarg(env, "max_records: a positive integer");
    return decode_lines(env, body, (size_t)off, (size_t)max, 1);
}

/* count_json_lines(body, limit) -> the records (non-blank lines) of body,
 * at most limit + 1: counted without decoding, before any term is built. */
static ERL_NIF_TERM count_json_lines_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    ErlNifBinary body;
    ErlNifUInt64 limit;
    if (!enif_inspect_binary(env, argv[0], &body))
        return raise_badarg(env, "count_json_lines expects a binary");
    if (!enif_get_uint64(env, argv[1], &limit) || limit > MAX_JSONL_BODY)
        return raise_badarg(env, "limit: 0..268435456");
    return enif_make_uint64(env, sh_jsonl_count((const char *)body.data, body.size, limit));
}

/* ------------------------------------------------------------------ misc */

static ERL_NIF_TERM yield_count_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    return enif_make_uint64(env, sh_nif_yields());
}

static ERL_NIF_TERM dirty_count_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    return enif_make_uint64(env, sh_nif_dirty_moves());
}

static ERL_NIF_TERM walk_steps_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    return enif_make_uint64(env, sh_nif_steps());
}

static ERL_NIF_TERM live_batches_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    return enif_make_int64(env, atomic_load(&live_batches));
}

/* ----------------------------------------------------------------- load */

/* ----------------------------------------------------------------- miner */

static void free_miner(void *m)
{
    sh_miner_free(m);
}

static void miner_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_miner *mn = obj;
    sh_miner_stats st = {0};
    if (mn->miner != NULL)
        sh_miner_stats_get(mn->miner, &st);
    if (st.clusters > SH_NIF_DEFER_ITEMS && sh_nif_on_normal())
        sh_nif_defer(free_miner, mn->miner);
    else
        sh_miner_free(mn->miner);
    mn->miner = NULL;
    sh_nif_lock_destroy(&mn->lock);
}

/* The tunables of a miner resource (not part of the C miner's config). */
typedef struct miner_tunables {
    unsigned long yield_every;
    uint64_t dirty_above;
} miner_tunables;

/* Reads the miner options of a map into cfg; NULL or the complaint. */
static const char *miner_options(ErlNifEnv *env, ERL_NIF_TERM opts, sh_miner_config *cfg,
                                 miner_tunables *t)
{
    if (!enif_is_map(env, opts))
        return "miner options must be a map";
    struct {
        ERL_NIF_TERM key;
        size_t *out;
        ErlNifUInt64 lo, hi;
        const char *why;
    } fields[] = {
        {atoms.max_clusters, &cfg->max_clusters, 1, 10000000,
         "max_clusters must be an integer in 1..10000000"},
        {atoms.max_tokens, &cfg->max_tokens, 1, 65535, "max_tokens must be an integer in 1..65535"},
        {atoms.max_line, &cfg->max_line, 16, 16777216,
         "max_line must be an integer in 16..16777216"},
    };
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        ERL_NIF_TERM v;
        ErlNifUInt64 n;
        if (!enif_get_map_value(env, opts, fields[i].key, &v))
            continue;
        if (!enif_get_uint64(env, v, &n) || n < fields[i].lo || n > fields[i].hi)
            return fields[i].why;
        *fields[i].out = (size_t)n;
    }
    ERL_NIF_TERM v;
    ErlNifUInt64 n;
    t->yield_every = 0;
    t->dirty_above = DEFAULT_DIRTY_ABOVE;
    if (enif_get_map_value(env, opts, atoms.yield_every, &v)) {
        if (!enif_get_uint64(env, v, &n))
            return "yield_every must be a non-negative integer";
        t->yield_every = (unsigned long)n;
    }
    if (enif_get_map_value(env, opts, atoms.dirty_above, &v)) {
        if (!enif_get_uint64(env, v, &n))
            return "dirty_above must be a non-negative integer";
        t->dirty_above = n;
    }
    return NULL;
}

/* A miner resource around m (taken over, freed on failure). */
static ERL_NIF_TERM make_miner(ErlNifEnv *env, sh_miner *m, const miner_tunables *t)
{
    nif_miner *mn = enif_alloc_resource(miner_type, sizeof(*mn));
    if (mn == NULL) {
        sh_miner_free(m);
        return raise_badarg(env, "out of memory");
    }
    mn->miner = m;
    mn->yield_every = t->yield_every;
    mn->dirty_above = t->dirty_above;
    atomic_init(&mn->walking, 0);
    int locked = sh_nif_lock_init(&mn->lock, "self_heal_miner");
    ERL_NIF_TERM term = enif_make_resource(env, mn);
    enif_release_resource(mn);
    if (locked != 0)
        return raise_badarg(env, "out of memory");
    return term;
}

/* miner_new(%{max_clusters:, max_tokens:, max_line:, yield_every:}) */
static ERL_NIF_TERM miner_new_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    sh_miner_config cfg;
    miner_tunables t;
    const char *why = miner_options(env, argv[0], &cfg, &t);
    if (why != NULL)
        return raise_badarg(env, why);
    sh_miner *m;
    if (sh_miner_new(&m, &cfg) != 0)
        return raise_badarg(env, "out of memory");
    return make_miner(env, m, &t);
}

static int get_miner(ErlNifEnv *env, ERL_NIF_TERM term, nif_miner **out)
{
    return enif_get_resource(env, term, miner_type, (void **)out) && (*out)->lock.mutex != NULL;
}

#define NOT_A_MINER "miner must be made by SelfHeal.Native.miner_new/1"

/* argv: [remaining lines, miner, ids so far (reversed)]. Runs on either
 * kind of scheduler, like batch_step: a long line, or a line the miner
 * cannot take at once (lock busy, addition over budget), goes on on a
 * dirty one. */
static ERL_NIF_TERM miner_add_step(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_miner *mn;
    if (!get_miner(env, argv[1], &mn))
        return raise_badarg(env, NOT_A_MINER);
    scratch *sc = get_scratch();
    if (sc == NULL)
        return raise_badarg(env, "out of memory");
    int dirty = sh_nif_on_dirty();
    uint64_t budget = miner_budget(mn->dirty_above);
    sh_nif_clock clock;
    sh_nif_clock_start(&clock, mn->yield_every, TIMESLICE_CHECK, TIMESLICE_WORK);
    ERL_NIF_TERM head, tail, rest = argv[0], acc = argv[2];
    while (enif_get_list_cell(env, rest, &head, &tail)) {
        ErlNifBinary line;
        uint64_t id;
        if (!enif_inspect_binary(env, head, &line))
            return raise_badarg(env, "lines must be binaries");
        size_t work = sh_miner_prepare_work(mn->miner, line.size);
        int rc = !dirty && work > mn->dirty_above
                     ? 1
                     : miner_add_one(mn, sc->line, (sh_slice){(const char *)line.data, line.size},
                                     dirty, budget, &id);
        if (rc > 0)
            return continue3(env, "miner_add", 1, miner_add_step_timed, rest, argv[1], acc);
        if (rc < 0)
            return raise_badarg(env, "out of memory");
        acc = enif_make_list_cell(env, enif_make_uint64(env, id), acc);
        rest = tail;
        if (sh_nif_clock_tick(env, &clock, work))
            return continue3(env, "miner_add", 0, miner_add_step_timed, rest, argv[1], acc);
    }
    if (!enif_is_empty_list(env, rest))
        return raise_badarg(env, "lines must be a proper list");
    ERL_NIF_TERM out;
    enif_make_reverse_list(env, acc, &out);
    return out;
}

/* miner_add(miner, [line]) -> [cluster id] */
static ERL_NIF_TERM miner_add_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    if (!enif_is_list(env, argv[1]))
        return raise_badarg(env, "lines must be a list of binaries");
    return miner_add_step(env, 3, (ERL_NIF_TERM[]){argv[1], argv[0], enif_make_list(env, 0)});
}

typedef struct templates_acc {
    ErlNifEnv *env;
    ERL_NIF_TERM list;
} templates_acc;

static int template_term(void *arg, uint64_t id, uint64_t count, sh_slice text,
                         const uint32_t *params, size_t nparams)
{
    templates_acc *a = arg;
    ErlNifEnv *env = a->env;
    ERL_NIF_TERM ps = enif_make_list(env, 0);
    for (size_t i = nparams; i-- > 0;)
        ps = enif_make_list_cell(env, enif_make_uint(env, params[i]), ps);
    ERL_NIF_TERM keys[] = {atoms.id, atoms.count, atoms.template_, atoms.params};
    ERL_NIF_TERM vals[] = {enif_make_uint64(env, id), enif_make_uint64(env, count),
                           make_slice(env, text), ps};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, vals, 4, &map);
    a->list = enif_make_list_cell(env, map, a->list);
    return 0;
}

/* The miner's readers (sh_nif_walk_start): templates, consed in the
 * order visited (least recently used first, so the list comes out most
 * recently used first), and snapshots into a buffer. */
static int templates_step(ErlNifEnv *env, void *owner, void *data, ERL_NIF_TERM *acc)
{
    (void)data;
    nif_miner *mn = owner;
    templates_acc a = {env, *acc};
    int rc = sh_miner_walk_step(mn->miner, WALK_STEP_WORK, template_term, &a);
    *acc = a.list;
    if (rc != 0)
        sh_miner_walk_end(mn->miner);
    return rc;
}

static void templates_stop(void *owner, void *data)
{
    (void)data;
    sh_miner_walk_end(((nif_miner *)owner)->miner);
}

static int templates_begin(void *owner, void *data)
{
    (void)data;
    return sh_miner_walk_begin(((nif_miner *)owner)->miner);
}

static ERL_NIF_TERM templates_result(ErlNifEnv *env, void *data, ERL_NIF_TERM acc)
{
    (void)env;
    (void)data;
    return acc;
}

static const sh_nif_walk_ops templates_ops = {templates_step,   templates_stop, NULL,
                                              templates_result, NULL,           NULL};

/* miner_templates(miner) -> [%{id:, count:, template:, params:}], most
 * recently used first (dirty: up to max_clusters entries, in steps) */
static ERL_NIF_TERM miner_templates_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_miner *mn;
    if (!get_miner(env, argv[0], &mn))
        return raise_badarg(env, NOT_A_MINER);
    return sh_nif_walk_start(env, atoms.badarg, &templates_ops, mn, &mn->lock, &mn->walking,
                             templates_begin, NULL);
}

/* miner_stats(miner) -> map of counters */
static ERL_NIF_TERM miner_stats_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    nif_miner *mn;
    if (!get_miner(env, argv[0], &mn))
        return raise_badarg(env, "miner must be made by SelfHeal.Native.miner_new/1");
    sh_miner_stats st;
    if (!sh_nif_lock_take(&mn->lock, sh_nif_on_dirty()))
        return sh_nif_continue(env, "miner_stats", 1, miner_stats_nif, argc, argv);
    sh_miner_stats_get(mn->miner, &st);
    sh_nif_lock_release(&mn->lock);
    ERL_NIF_TERM keys[] = {atoms.lines,     atoms.clusters, atoms.created,        atoms.evicted,
                           atoms.truncated, atoms.merged,   atoms.aliases_dropped};
    uint64_t v[] = {st.lines,     st.clusters, st.created,        st.evicted,
                    st.truncated, st.merged,   st.aliases_dropped};
    ERL_NIF_TERM vals[7];
    for (int i = 0; i < 7; i++)
        vals[i] = enif_make_uint64(env, v[i]);
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, vals, 7, &map);
    return map;
}

/* miner_resolve(miner, id) -> the id it lives on as */
static ERL_NIF_TERM miner_resolve_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    nif_miner *mn;
    ErlNifUInt64 id;
    if (!get_miner(env, argv[0], &mn))
        return raise_badarg(env, "miner must be made by SelfHeal.Native.miner_new/1");
    if (!enif_get_uint64(env, argv[1], &id))
        return raise_badarg(env, "cluster id must be a non-negative integer");
    if (!sh_nif_lock_take(&mn->lock, sh_nif_on_dirty()))
        return sh_nif_continue(env, "miner_resolve", 1, miner_resolve_nif, argc, argv);
    uint64_t r = sh_miner_resolve(mn->miner, id);
    sh_nif_lock_release(&mn->lock);
    return enif_make_uint64(env, r);
}

/* A snapshot being written: the bytes, then their checksum. */
typedef struct snapshot_data {
    sh_buf buf;
    sh_miner_seal seal;
} snapshot_data;

static int snapshot_step(ErlNifEnv *env, void *owner, void *data, ERL_NIF_TERM *acc)
{
    (void)env;
    (void)acc;
    snapshot_data *d = data;
    return sh_miner_snapshot_step(((nif_miner *)owner)->miner, &d->buf, WALK_STEP_WORK);
}

static void snapshot_stop(void *owner, void *data)
{
    (void)data;
    sh_miner_snapshot_abort(((nif_miner *)owner)->miner);
}

/* Grows the buffer before a step, outside the lock: a step writes about
 * WALK_STEP_WORK bytes and one cluster more. */
static void snapshot_room(void *data)
{
    snapshot_data *d = data;
    (void)sh_buf_reserve(&d->buf, 4 * WALK_STEP_WORK);
}

static int snapshot_begin(void *owner, void *data)
{
    snapshot_data *d = data;
    return sh_miner_snapshot_begin(((nif_miner *)owner)->miner, &d->buf);
}

/* Once every cluster and alias is written, without the lock: the
 * checksum, SEAL_PART bytes a call (11 MB for 150,000 clusters take
 * some 12 ms in all). */
static int snapshot_seal(void *data)
{
    snapshot_data *d = data;
    return sh_miner_snapshot_seal(&d->buf, 0, &d->seal, SEAL_PART);
}

static ERL_NIF_TERM snapshot_result(ErlNifEnv *env, void *data, ERL_NIF_TERM acc)
{
    (void)acc;
    snapshot_data *d = data;
    return make_bin(env, d->buf.data, d->buf.len);
}

static void snapshot_free(void *data)
{
    snapshot_data *d = data;
    sh_buf_free(&d->buf);
    enif_free(d);
}

static const sh_nif_walk_ops snapshot_ops = {snapshot_step,   snapshot_stop, snapshot_room,
                                             snapshot_result, snapshot_free, snapshot_seal};

/* miner_snapshot(miner) -> binary (dirty, in steps) */
static ERL_NIF_TERM miner_snapshot_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_miner *mn;
    if (!get_miner(env, argv[0], &mn))
        return raise_badarg(env, NOT_A_MINER);
    snapshot_data *d = enif_alloc(sizeof(*d));
    if (d == NULL)
        return raise_badarg(env, "out of memory");
    sh_buf_init(&d->buf);
    d->seal = (sh_miner_seal){0, 0, 0};
    return sh_nif_walk_start(env, atoms.badarg, &snapshot_ops, mn, &mn->lock, &mn->walking,
                             snapshot_begin, d);
}

/* miner_restore(snapshot, opts) -> {:ok, miner} | {:error, reason} (dirty) */
static ERL_NIF_TERM miner_restore_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    ErlNifBinary snap;
    if (!enif_inspect_binary(env, argv[0], &snap))
        return raise_badarg(env, "snapshot must be a binary");
    sh_miner_config cfg;
    miner_tunables t;
    const char *why = miner_options(env, argv[1], &cfg, &t);
    if (why != NULL)
        return raise_badarg(env, why);
    sh_miner *m;
    if (sh_miner_restore(&m, &why, (const char *)snap.data, snap.size, &cfg) != 0) {
        size_t n = strlen(why);
        return enif_make_tuple2(env, atoms.error, make_bin(env, why, n));
    }
    return enif_make_tuple2(env, atoms.ok, make_miner(env, m, &t));
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info)
{
    (void)priv;
    (void)info;
    init_atoms(env);
    ErlNifResourceFlags flags = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
    config_type = enif_open_resource_type(env, NULL, "self_heal_config", config_dtor, flags, NULL);
    batch_type = enif_open_resource_type(env, NULL, "self_heal_batch", batch_dtor, flags, NULL);
    miner_type = enif_open_resource_type(env, NULL, "self_heal_miner", miner_dtor, flags, NULL);
    if (config_type == NULL || batch_type == NULL || miner_type == NULL)
        return 1;
    if (sh_watch_nif_load(env) != 0 || sh_nif_walk_load(env) != 0)
        return 1;
    if (sh_scrub_nif_load(env) != 0)
        return 1;
    default_config = enif_alloc_resource(config_type, sizeof(*default_config));
    if (default_config == NULL)
        return 1;
    memset(default_config, 0, sizeof(*default_config));
    default_config->max_event_bytes = DEFAULT_MAX_EVENT_BYTES;
    default_config->dirty_above = DEFAULT_DIRTY_ABOVE;
    return 0; /* default_config keeps its reference for the library's life */
}

/* Every NIF that runs on a normal scheduler reports its time (nif_util.h:
 * a process calling it in a loop is scheduled out like one long call). */
SH_NIF_TIMED(batch_step_timed, batch_step)
SH_NIF_TIMED(batch_build_timed, batch_build)
SH_NIF_TIMED(miner_add_step_timed, miner_add_step)
SH_NIF_TIMED(normalize_timed, normalize_nif)
SH_NIF_TIMED(config_new_timed, config_new_nif)
SH_NIF_TIMED(fingerprint_timed, fingerprint_nif)
SH_NIF_TIMED(fingerprint_batch_timed, fingerprint_batch_nif)
SH_NIF_TIMED(miner_new_timed, miner_new_nif)
SH_NIF_TIMED(miner_add_timed, miner_add_nif)
SH_NIF_TIMED(miner_stats_timed, miner_stats_nif)
SH_NIF_TIMED(miner_resolve_timed, miner_resolve_nif)

static ErlNifFunc nif_funcs[] = {
    {"normalize", 1, normalize_timed, 0},
    {"make_config", 1, config_new_timed, 0},
    {"fingerprint", 2, fingerprint_timed, 0},
    {"fingerprint_batch", 2, fingerprint_batch_timed, 0},
    {"dedup", 1, dedup_nif, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"decode_json_lines", 1, decode_json_lines_nif, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"decode_json_lines", 3, decode_json_lines_nif, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"count_json_lines", 2, count_json_lines_nif, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"__yield_count__", 0, yield_count_nif, 0},
    {"__dirty_count__", 0, dirty_count_nif, 0},
    {"__live_batches__", 0, live_batches_nif, 0},
    {"__walk_steps__", 0, walk_steps_nif, 0},
    {"miner_new_nif", 1, miner_new_timed, 0},
    {"miner_add", 2, miner_add_timed, 0},
    {"miner_templates", 1, miner_templates_nif, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"miner_stats", 1, miner_stats_timed, 0},
    {"miner_resolve", 2, miner_resolve_timed, 0},
    {"miner_snapshot", 1, miner_snapshot_nif, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"miner_restore_nif", 2, miner_restore_nif, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    SH_WATCH_NIF_FUNCS,
    SH_SCRUB_NIF_FUNCS,
};

/* Frees handed to other threads (large miners and watch sets) run code of
 * this library: they end before it goes. */
static void unload(ErlNifEnv *env, void *priv)
{
    (void)env;
    (void)priv;
    sh_nif_deferred_wait();
}

ERL_NIF_INIT(Elixir.SelfHeal.Native, nif_funcs, load, NULL, NULL, unload)
