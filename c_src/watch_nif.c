/*
 * The watch engine's NIFs: a watch set (c_src/watch.c) in a resource of
 * type "self_heal_watch", shared by the processes that hold it under a
 * mutex. Rules (docs/nif.md, docs/watch.md):
 * - bad terms raise ArgumentError ({badarg, Reason}); nothing crashes the VM;
 * - every input is bounded (watch.h: ids, names, values, fields per event);
 * - watch_observe_nif/3 yields (enif_consume_timeslice + enif_schedule_nif)
 *   and carries every term it needs across yields in argv, never in C; the
 *   lock is held for one event at a time, and a normal scheduler only tries
 *   it: a busy set, or an event whose work (sh_watch_observe_work) is above
 *   dirty_above, moves the call to a dirty CPU scheduler;
 * - watch_add_nif/2, watch_remove_nif/2 (whose cost grows with the set)
 *   and watch_list_nif/1 run on dirty CPU schedulers; the list is read in
 *   steps with the lock released between them, as a chain of calls
 *   (sh_nif_walk_start).
 */
#include "nif_util.h"
#include "watch_nif.h"

#include <string.h>

#include "self_heal/watch.h"

#define TIMESLICE_EVENTS 16 /* events between clock reads */
#define TIMESLICE_WORK 4096 /* or this much work (sh_watch_observe_work) */
/* An event whose work is above this (about 10 ns a unit) is observed on a
 * dirty CPU scheduler. */
#define DEFAULT_DIRTY_ABOVE 16384
#define LIST_STEP 64      /* watches listed per hold of the lock (~30 µs) */
#define ATOM_TEXT_MAX 256 /* an atom's text, Latin-1 (OTP 25) or UTF-8 */

/* OTP 26 (NIF 2.17) reads atoms as UTF-8; OTP 25 only as Latin-1. */
#if ERL_NIF_MAJOR_VERSION > 2 || (ERL_NIF_MAJOR_VERSION == 2 && ERL_NIF_MINOR_VERSION >= 17)
#define WATCH_ATOM_ENCODING ERL_NIF_UTF8
#else
#define WATCH_ATOM_ENCODING ERL_NIF_LATIN1
#endif

/* ------------------------------------------------------------------ atoms */

static struct {
    ERL_NIF_TERM badarg, nil, true_, false_, ok, error, full, not_found, added, replaced, unchanged,
        id, kind, field, op, value, cluster, fingerprint, window_ms, threshold, max_watches,
        max_slots, yield_every, count, matched, fired, armed, last_fired_ms, dirty_above;
    ERL_NIF_TERM ops[8]; /* by sh_watch_op */
} watch_atoms;

static const char *const op_names[8] = {"==", "!=", "<", "<=", ">", ">=", "prefix", "contains"};

static void watch_init_atoms(ErlNifEnv *env)
{
#define A(field_, name) watch_atoms.field_ = enif_make_atom(env, name)
    A(badarg, "badarg");
    A(nil, "nil");
    A(true_, "true");
    A(false_, "false");
    A(ok, "ok");
    A(error, "error");
    A(full, "full");
    A(not_found, "not_found");
    A(added, "added");
    A(replaced, "replaced");
    A(unchanged, "unchanged");
    A(id, "id");
    A(kind, "kind");
    A(field, "field");
    A(op, "op");
    A(value, "value");
    A(cluster, "cluster");
    A(fingerprint, "fingerprint");
    A(window_ms, "window_ms");
    A(threshold, "threshold");
    A(max_watches, "max_watches");
    A(max_slots, "max_slots");
    A(yield_every, "yield_every");
    A(count, "count");
    A(matched, "matched");
    A(fired, "fired");
    A(armed, "armed");
    A(last_fired_ms, "last_fired_ms");
    A(dirty_above, "dirty_above");
#undef A
    for (int i = 0; i < 8; i++)
        watch_atoms.ops[i] = enif_make_atom(env, op_names[i]);
}

static ERL_NIF_TERM watch_raise_badarg(ErlNifEnv *env, const char *why)
{
    return sh_nif_raise_badarg(env, watch_atoms.badarg, why);
}

static ERL_NIF_TERM watch_make_bin(ErlNifEnv *env, sh_slice s)
{
    return sh_nif_make_bin(env, s.ptr, s.len);
}

/* --------------------------------------------------------------- resource */

/* Decoding room for one event, one per scheduler thread (made on first
 * use, kept for the thread's life; nothing in it outlives a call): the
 * atom texts of field i's key and value go to key_text[i] and
 * value_text[i]. */
typedef struct event_scratch {
    sh_watch_field fields[SH_WATCH_MAX_FIELDS];
    char key_text[SH_WATCH_MAX_FIELDS][SH_WATCH_MAX_FIELD + 1];
    char value_text[SH_WATCH_MAX_FIELDS][ATOM_TEXT_MAX + 1];
} event_scratch;

static _Thread_local event_scratch *thread_scratch;

/* `walking`: a list is going on (one at a time). */
typedef struct nif_watch {
    sh_nif_lock lock;
    _Atomic int walking;
    sh_watch_set *set;
    unsigned long yield_every;
    uint64_t dirty_above;
    sh_watch_fired fired; /* under the lock */
} nif_watch;

static ErlNifResourceType *watch_type;

static void free_set(void *set)
{
    sh_watch_set_free(set);
}

/* Safe on a partly built object. A large set is freed on a thread of its
 * own when this runs on a normal scheduler. */
static void watch_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_watch *w = obj;
    if (w->set != NULL && sh_watch_count(w->set) > SH_NIF_DEFER_ITEMS && sh_nif_on_normal())
        sh_nif_defer(free_set, w->set);
    else
        sh_watch_set_free(w->set);
    w->set = NULL;
    sh_watch_fired_free(&w->fired);
    sh_nif_lock_destroy(&w->lock);
}

int sh_watch_nif_load(ErlNifEnv *env)
{
    watch_init_atoms(env);
    ErlNifResourceFlags flags = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
    watch_type = enif_open_resource_type(env, NULL, "self_heal_watch", watch_dtor, flags, NULL);
    return watch_type == NULL ? 1 : 0;
}

static int get_watch(ErlNifEnv *env, ERL_NIF_TERM term, nif_watch **out)
{
    return enif_get_resource(env, term, watch_type, (void **)out) && (*out)->lock.mutex != NULL &&
           (*out)->set != NULL;
}

#define NOT_A_SET "watch set must be made by SelfHeal.Watch.new/1"

/* ------------------------------------------------------------------- new */

/* watch_new_nif(%{max_watches:, max_slots:, yield_every:, dirty_above:}) */
ERL_NIF_TERM sh_watch_nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    if (!enif_is_map(env, argv[0]))
        return watch_raise_badarg(env, "watch options must be a map");
    sh_watch_config cfg = {0, 0};
    unsigned long yield_every = 0;
    uint64_t dirty_above = DEFAULT_DIRTY_ABOVE;
    ERL_NIF_TERM v;
    ErlNifUInt64 n;
    if (enif_get_map_value(env, argv[0], watch_atoms.max_watches, &v)) {
        if (!enif_get_uint64(env, v, &n) || n < 1 || n > SH_WATCH_MAX_WATCHES_LIMIT)
            return watch_raise_badarg(env, "max_watches must be an integer in 1..1000000");
        cfg.max_watches = (size_t)n;
    }
    if (enif_get_map_value(env, argv[0], watch_atoms.max_slots, &v)) {
        if (!enif_get_uint64(env, v, &n) || n < 1 || n > SH_WATCH_MAX_SLOTS_LIMIT)
            return watch_raise_badarg(env, "max_slots must be an integer in 1..268435456");
        cfg.max_slots = (size_t)n;
    }
    if (enif_get_map_value(env, argv[0], watch_atoms.yield_every, &v)) {
        if (!enif_get_uint64(env, v, &n))
            return watch_raise_badarg(env, "yield_every must be a non-negative integer");
        yield_every = (unsigned long)n;
    }
    if (enif_get_map_value(env, argv[0], watch_atoms.dirty_above, &v)) {
        if (!enif_get_uint64(env, v, &n))
            return watch_raise_badarg(env, "dirty_above must be a non-negative integer");
        dirty_above = n;
    }
    nif_watch *w = enif_alloc_resource(watch_type, sizeof(*w));
    if (w == NULL)
        return watch_raise_badarg(env, "out of memory");
    memset(w, 0, sizeof(*w));
    sh_watch_fired_init(&w->fired);
    w->yield_every = yield_every;
    w->dirty_above = dirty_above;
    ERL_NIF_TERM term = enif_make_resource(env, w);
    enif_release_resource(w);
    atomic_init(&w->walking, 0);
    if (sh_nif_lock_init(&w->lock, "self_heal_watch") != 0 || sh_watch_set_new(&w->set, &cfg) != 0)
        return watch_raise_badarg(env, "out of memory");
    return term;
}

/* ------------------------------------------------------------------- add */

/* A binary or an atom as text (atom text into buf). 1 or 0. */
static int get_text(ErlNifEnv *env, ERL_NIF_TERM t, char *buf, size_t bufsize, sh_slice *out)
{
    ErlNifBinary bin;
    if (enif_inspect_binary(env, t, &bin)) {
        out->ptr = (const char *)bin.data;
        out->len = bin.size;
        return 1;
    }
    unsigned len;
    if (enif_get_atom_length(env, t, &len, WATCH_ATOM_ENCODING) && len < bufsize &&
        enif_get_atom(env, t, buf, (unsigned)bufsize, WATCH_ATOM_ENCODING) > 0) {
        out->ptr = buf;
        out->len = len;
        return 1;
    }
    return 0;
}

/* An integer (64-bit) or a float. 1 or 0. */
static int get_number(ErlNifEnv *env, ERL_NIF_TERM t, sh_watch_value *out)
{
    ErlNifSInt64 i;
    ErlNifUInt64 u;
    double d;
    if (enif_get_int64(env, t, &i)) {
        *out = sh_watch_int((int64_t)i);
        return 1;
    }
    if (enif_get_uint64(env, t, &u)) {
        *out = sh_watch_uint((uint64_t)u);
        return 1;
    }
    if (enif_get_double(env, t, &d)) {
        *out = sh_watch_float(d);
        return 1;
    }
    return 0;
}

/* Reads a spec map into spec (slices into the map's binaries and into
 * texts); NULL or the complaint. */
static const char *read_spec(ErlNifEnv *env, ERL_NIF_TERM map, sh_watch_spec *spec,
                             char texts[2][ATOM_TEXT_MAX + 1])
{
    if (!enif_is_map(env, map))
        return "a watch spec must be a map";
    memset(spec, 0, sizeof(*spec));
    ERL_NIF_TERM v;
    ErlNifBinary bin;
    ErlNifSInt64 i;
    ErlNifUInt64 u;
    if (!enif_get_map_value(env, map, watch_atoms.id, &v) || !enif_inspect_binary(env, v, &bin) ||
        bin.size == 0 || bin.size > SH_WATCH_MAX_ID)
        return "id must be a binary of 1..128 bytes";
    spec->id.ptr = (const char *)bin.data;
    spec->id.len = bin.size;
    if (!enif_get_map_value(env, map, watch_atoms.window_ms, &v) || !enif_get_int64(env, v, &i) ||
        i < 1 || i > SH_WATCH_MAX_WINDOW_MS)
        return "window_ms must be an integer in 1..2592000000 (30 days)";
    spec->window_ms = (int64_t)i;
    if (!enif_get_map_value(env, map, watch_atoms.threshold, &v) || !enif_get_uint64(env, v, &u) ||
        u < 1 || u > SH_WATCH_MAX_THRESHOLD)
        return "threshold must be an integer in 1..1000000";
    spec->threshold = (uint64_t)u;

    ERL_NIF_TERM field, cluster, fingerprint;
    int has_field = enif_get_map_value(env, map, watch_atoms.field, &field);
    int has_cluster = enif_get_map_value(env, map, watch_atoms.cluster, &cluster);
    int has_fingerprint = enif_get_map_value(env, map, watch_atoms.fingerprint, &fingerprint);
    if (has_field + has_cluster + has_fingerprint != 1)
        return "a watch spec has exactly one of field, cluster, fingerprint";
    if (has_cluster) {
        if (!enif_get_uint64(env, cluster, &u))
            return "cluster must be a non-negative integer (a cluster id)";
        spec->kind = SH_WATCH_MATCH_CLUSTER;
        spec->cluster = (uint64_t)u;
        return NULL;
    }
    if (has_fingerprint) {
        if (!enif_inspect_binary(env, fingerprint, &bin) || bin.size == 0 ||
            bin.size > SH_WATCH_MAX_VALUE)
            return "fingerprint must be a binary of 1..1024 bytes";
        spec->kind = SH_WATCH_MATCH_FINGERPRINT;
        spec->fingerprint.ptr = (const char *)bin.data;
        spec->fingerprint.len = bin.size;
        return NULL;
    }
    spec->kind = SH_WATCH_MATCH_FIELD;
    if (!get_text(env, field, texts[0], ATOM_TEXT_MAX + 1, &spec->field) || spec->field.len == 0 ||
        spec->field.len > SH_WATCH_MAX_FIELD)
        return "field must be a binary or an atom of 1..128 bytes";
    ERL_NIF_TERM op;
    int found = 0;
    if (enif_get_map_value(env, map, watch_atoms.op, &op)) {
        for (int k = 0; k < 8; k++) {
            if (enif_is_identical(op, watch_atoms.ops[k])) {
                spec->op = (sh_watch_op)k;
                found = 1;
            }
        }
    }
    if (!found)
        return "op must be one of :==, :!=, :<, :<=, :>, :>=, :prefix, :contains";
    if (!enif_get_map_value(env, map, watch_atoms.value, &v))
        return "a field watch needs a value";
    if (get_number(env, v, &spec->value))
        return NULL;
    sh_slice s;
    if (enif_is_identical(v, watch_atoms.nil) || !get_text(env, v, texts[1], ATOM_TEXT_MAX + 1, &s))
        return "value must be a number, a binary or an atom";
    spec->value = sh_watch_str(s.ptr, s.len);
    return NULL;
}

/* watch_add_nif(set, spec) -> {:ok, :added | :replaced | :unchanged} | {:error, :full} */
ERL_NIF_TERM sh_watch_nif_add(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_watch *w;
    if (!get_watch(env, argv[0], &w))
        return watch_raise_badarg(env, NOT_A_SET);
    sh_watch_spec spec;
    char texts[2][ATOM_TEXT_MAX + 1];
    const char *why = read_spec(env, argv[1], &spec, texts);
    if (why != NULL)
        return watch_raise_badarg(env, why);
    sh_watch_status status;
    sh_nif_lock_take(&w->lock, 1); /* a dirty NIF */
    int rc = sh_watch_add(w->set, &spec, &status, &why);
    sh_nif_lock_release(&w->lock);
    if (rc == 0) {
        ERL_NIF_TERM what = status == SH_WATCH_ADDED      ? watch_atoms.added
                            : status == SH_WATCH_REPLACED ? watch_atoms.replaced
                                                          : watch_atoms.unchanged;
        return enif_make_tuple2(env, watch_atoms.ok, what);
    }
    if (status == SH_WATCH_EFULL)
        return enif_make_tuple2(env, watch_atoms.error, watch_atoms.full);
    return watch_raise_badarg(env, why != NULL ? why : "out of memory");
}

/* ---------------------------------------------------------------- remove */

/* watch_remove_nif(set, id) -> :ok | {:error, :not_found} */
ERL_NIF_TERM sh_watch_nif_remove(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_watch *w;
    if (!get_watch(env, argv[0], &w))
        return watch_raise_badarg(env, NOT_A_SET);
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, argv[1], &bin))
        return watch_raise_badarg(env, "id must be a binary");
    sh_slice id = {(const char *)bin.data, bin.size};
    sh_nif_lock_take(&w->lock, 1); /* a dirty NIF */
    int rc = sh_watch_remove(w->set, id);
    sh_nif_lock_release(&w->lock);
    return rc == 0 ? watch_atoms.ok
                   : enif_make_tuple2(env, watch_atoms.error, watch_atoms.not_found);
}

/* --------------------------------------------------------------- observe */

/* Reads an event map into scratch->fields. Keys: binaries or atoms (others
 * and names longer than SH_WATCH_MAX_FIELD are skipped: no watch reads
 * them). Values: integers, floats, binaries, atoms (as their text; nil is
 * no value); others are skipped. Returns the field count, or -1 when the
 * event is not a map or has too many keys. */
static long read_event(ErlNifEnv *env, ERL_NIF_TERM map, event_scratch *sc)
{
    size_t size;
    if (!enif_get_map_size(env, map, &size))
        return -1;
    if (size > SH_WATCH_MAX_FIELDS)
        return -2;
    ErlNifMapIterator it;
    if (!enif_map_iterator_create(env, map, &it, ERL_NIF_MAP_ITERATOR_FIRST))
        return -1;
    size_t n = 0;
    ERL_NIF_TERM k, v;
    while (n < SH_WATCH_MAX_FIELDS && enif_map_iterator_get_pair(env, &it, &k, &v)) {
        enif_map_iterator_next(env, &it);
        sh_watch_field *f = &sc->fields[n];
        if (!get_text(env, k, sc->key_text[n], sizeof(sc->key_text[n]), &f->key) ||
            f->key.len == 0 || f->key.len > SH_WATCH_MAX_FIELD)
            continue;
        if (get_number(env, v, &f->value)) {
            n++;
            continue;
        }
        sh_slice s;
        if (enif_is_identical(v, watch_atoms.nil) ||
            !get_text(env, v, sc->value_text[n], sizeof(sc->value_text[n]), &s))
            continue;
        f->value = sh_watch_str(s.ptr, s.len);
        n++;
    }
    enif_map_iterator_destroy(env, &it);
    return (long)n;
}

static ERL_NIF_TERM observe_step(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
/* observe_step, its time reported (nif_util.h) */
SH_NIF_TIMED(observe_step_timed, observe_step)

static ERL_NIF_TERM observe_continue(ErlNifEnv *env, int dirty, ERL_NIF_TERM rest,
                                     const ERL_NIF_TERM argv[], ERL_NIF_TERM acc)
{
    ERL_NIF_TERM args[4] = {rest, argv[1], acc, argv[3]};
    return sh_nif_continue(env, "watch_observe", dirty, observe_step_timed, 4, args);
}

/* argv: [remaining events, set, fired ids so far (reversed), now_ms]. Runs
 * on either kind of scheduler: a normal one hands an event that finds the
 * set busy or is above dirty_above to a dirty one, which hands back after
 * its slice. */
static ERL_NIF_TERM observe_step(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_watch *w;
    ErlNifSInt64 now;
    if (!get_watch(env, argv[1], &w))
        return watch_raise_badarg(env, NOT_A_SET);
    if (!enif_get_int64(env, argv[3], &now))
        return watch_raise_badarg(env, "now_ms must be an integer (milliseconds)");
    if (thread_scratch == NULL && (thread_scratch = enif_alloc(sizeof(event_scratch))) == NULL)
        return watch_raise_badarg(env, "out of memory");
    event_scratch *sc = thread_scratch;
    int dirty = sh_nif_on_dirty();
    sh_nif_clock clock;
    sh_nif_clock_start(&clock, w->yield_every, TIMESLICE_EVENTS, TIMESLICE_WORK);
    ERL_NIF_TERM head, tail, rest = argv[0], acc = argv[2];
    while (enif_get_list_cell(env, rest, &head, &tail)) {
        long n = read_event(env, head, sc);
        if (n == -2)
            return watch_raise_badarg(env, "an event has more than 256 fields");
        if (n < 0)
            return watch_raise_badarg(env, "events must be maps");
        sh_watch_event event = {sc->fields, (size_t)n};
        if (!sh_nif_lock_take(&w->lock, dirty))
            return observe_continue(env, 1, rest, argv, acc);
        uint64_t work = sh_watch_observe_work(w->set, &event);
        if (!dirty && work > w->dirty_above) {
            sh_nif_lock_release(&w->lock);
            return observe_continue(env, 1, rest, argv, acc);
        }
        sh_watch_fired_clear(&w->fired);
        if (sh_watch_observe(w->set, &event, (int64_t)now, &w->fired) != 0) {
            sh_nif_lock_release(&w->lock);
            return watch_raise_badarg(env, "out of memory");
        }
        for (size_t i = 0; i < w->fired.len; i++)
            acc = enif_make_list_cell(env, watch_make_bin(env, w->fired.ids[i]), acc);
        sh_nif_lock_release(&w->lock);
        rest = tail;
        if (sh_nif_clock_tick(env, &clock, work) && !enif_is_empty_list(env, rest))
            return observe_continue(env, 0, rest, argv, acc);
    }
    if (!enif_is_empty_list(env, rest))
        return watch_raise_badarg(env, "events must be a proper list");
    ERL_NIF_TERM out;
    enif_make_reverse_list(env, acc, &out);
    return out;
}

/* watch_observe_nif(set, [event], now_ms) -> [fired id] */
ERL_NIF_TERM sh_watch_nif_observe(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    if (!enif_is_list(env, argv[1]))
        return watch_raise_badarg(env, "events must be a list of maps");
    ERL_NIF_TERM args[4] = {argv[1], argv[0], enif_make_list(env, 0), argv[2]};
    return observe_step_timed(env, 4, args);
}

/* ------------------------------------------------------------------ list */

typedef struct list_acc {
    ErlNifEnv *env;
    ERL_NIF_TERM list;
} list_acc;

static ERL_NIF_TERM value_term(ErlNifEnv *env, const sh_watch_value *v)
{
    switch (v->type) {
    case SH_WATCH_INT:
        return enif_make_int64(env, v->i);
    case SH_WATCH_UINT:
        return enif_make_uint64(env, v->u);
    case SH_WATCH_FLOAT:
        return enif_make_double(env, v->f);
    case SH_WATCH_STR:
        return watch_make_bin(env, v->s);
    default:
        return watch_atoms.nil;
    }
}

static int watch_term(void *arg, const sh_watch_info *info)
{
    list_acc *a = arg;
    ErlNifEnv *env = a->env;
    const sh_watch_spec *s = info->spec;
    ERL_NIF_TERM keys[12], vals[12];
    size_t n = 0;
#define KV(k, v) (keys[n] = (k), vals[n] = (v), n++)
    KV(watch_atoms.id, watch_make_bin(env, s->id));
    KV(watch_atoms.window_ms, enif_make_int64(env, s->window_ms));
    KV(watch_atoms.threshold, enif_make_uint64(env, s->threshold));
    KV(watch_atoms.count, enif_make_uint64(env, info->count));
    KV(watch_atoms.matched, enif_make_uint64(env, info->matched));
    KV(watch_atoms.fired, enif_make_uint64(env, info->fired));
    KV(watch_atoms.armed, info->armed ? watch_atoms.true_ : watch_atoms.false_);
    KV(watch_atoms.last_fired_ms,
       info->has_fired ? enif_make_int64(env, info->last_fired_ms) : watch_atoms.nil);
    switch (s->kind) {
    case SH_WATCH_MATCH_CLUSTER:
        KV(watch_atoms.kind, watch_atoms.cluster);
        KV(watch_atoms.cluster, enif_make_uint64(env, s->cluster));
        break;
    case SH_WATCH_MATCH_FINGERPRINT:
        KV(watch_atoms.kind, watch_atoms.fingerprint);
        KV(watch_atoms.fingerprint, watch_make_bin(env, s->fingerprint));
        break;
    default:
        KV(watch_atoms.kind, watch_atoms.field);
        KV(watch_atoms.field, watch_make_bin(env, s->field));
        KV(watch_atoms.op, watch_atoms.ops[s->op]);
        KV(watch_atoms.value, value_term(env, &s->value));
    }
#undef KV
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, vals, n, &map);
    a->list = enif_make_list_cell(env, map, a->list);
    return 0;
}

/* watch_count_nif(set) -> integer */
static ERL_NIF_TERM count_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    nif_watch *w;
    if (!get_watch(env, argv[0], &w))
        return watch_raise_badarg(env, NOT_A_SET);
    if (!sh_nif_lock_take(&w->lock, sh_nif_on_dirty()))
        return sh_nif_continue(env, "watch_count", 1, count_nif, argc, argv);
    size_t n = sh_watch_count(w->set);
    sh_nif_lock_release(&w->lock);
    return enif_make_uint64(env, (ErlNifUInt64)n);
}

ERL_NIF_TERM sh_watch_nif_count(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return sh_nif_timed(env, argc, argv, count_nif);
}

/* The list as a reader in steps (sh_nif_walk_start): maps consed in the
 * order added, reversed at the end. */
static int list_step(ErlNifEnv *env, void *owner, void *data, ERL_NIF_TERM *acc)
{
    (void)data;
    nif_watch *w = owner;
    list_acc a = {env, *acc};
    int rc = sh_watch_walk_step(w->set, LIST_STEP, watch_term, &a);
    *acc = a.list;
    if (rc != 0)
        sh_watch_walk_end(w->set);
    return rc;
}

static void list_stop(void *owner, void *data)
{
    (void)data;
    sh_watch_walk_end(((nif_watch *)owner)->set);
}

static int list_begin(void *owner, void *data)
{
    (void)data;
    return sh_watch_walk_begin(((nif_watch *)owner)->set);
}

static ERL_NIF_TERM list_result(ErlNifEnv *env, void *data, ERL_NIF_TERM acc)
{
    (void)data;
    ERL_NIF_TERM out;
    enif_make_reverse_list(env, acc, &out);
    return out;
}

static const sh_nif_walk_ops list_ops = {list_step, list_stop, NULL, list_result, NULL, NULL};

/* watch_list_nif(set) -> [map], in the order the watches were added
 * (dirty; LIST_STEP watches per hold of the lock, so events keep being
 * observed meanwhile; the walk stops when the calling process is gone) */
ERL_NIF_TERM sh_watch_nif_list(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_watch *w;
    if (!get_watch(env, argv[0], &w))
        return watch_raise_badarg(env, NOT_A_SET);
    return sh_nif_walk_start(env, watch_atoms.badarg, &list_ops, w, &w->lock, &w->walking,
                             list_begin, NULL);
}
