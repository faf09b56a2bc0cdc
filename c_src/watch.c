/*
 * Watch engine (see include/self_heal/watch.h and docs/watch.md).
 *
 * Structures:
 *   - a watch is one allocation: the struct, its ring of `threshold`
 *     timestamps, the KMP table of a CONTAINS value, and its text (id,
 *     field name, string value or fingerprint);
 *   - two chained hash tables over the same watches: by id (link 0) and by
 *     match key (link 1): a FIELD watch is keyed by its field name, a
 *     CLUSTER watch by its cluster id, a FINGERPRINT watch by its
 *     fingerprint, so an event's field only meets the watches that read
 *     that field (or that exact cluster / fingerprint);
 *   - a doubly linked list of all watches in the order they were added;
 *     a walk in steps keeps its place there with a marker node (not a
 *     watch), watches added during the walk carry its generation.
 * The number of watches on each chain of the key table is kept, so the
 * work an event will take is known before it is observed.
 * The ring holds the last `threshold` timestamps of matching events in
 * order (time never runs backwards in a set), so "count in window >=
 * threshold" is exact: it holds when the oldest of them is in the window.
 */
#include "self_heal/watch.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINK_ID 0
#define LINK_KEY 1
#define TABLE_MIN 16

#define SALT_ID 0x9E3779B97F4A7C15ULL
#define SALT_FIELD 0xC2B2AE3D27D4EB4FULL
#define SALT_CLUSTER 0x165667B19E3779F9ULL
#define SALT_FINGERPRINT 0x27D4EB2F165667C5ULL

typedef struct watch {
    struct watch *next[2]; /* chains: by id, by key */
    uint64_t hash[2];
    struct watch *prev_all, *next_all; /* order of addition */
    sh_watch_spec spec;                /* slices point into this block */
    int64_t *ring;                     /* spec.threshold slots */
    uint16_t *kmp;                     /* CONTAINS: failure table of the value */
    uint64_t head, len;                /* oldest at ring[head], len in use */
    uint64_t matched, fired;
    uint64_t seen;     /* epoch of the last event counted */
    uint64_t walk_gen; /* the walk during which it was added */
    int64_t last_fired_ms;
    int armed, has_fired;
} watch;

struct sh_watch_set {
    sh_watch_config cfg;
    uint64_t seed;
    watch **table[2];    /* heads of the chains, by link */
    uint32_t *key_count; /* watches on each chain of table[LINK_KEY] */
    size_t table_cap;    /* power of two, both tables */
    watch *first, *last;
    size_t count;
    uint64_t slots;
    uint64_t epoch;
    int has_clock;
    int64_t clock;
    uint64_t events, evaluated, fired;
    watch mark; /* a walk's place in the list of all watches */
    int walking;
    uint64_t walk_gen;
};

/* ------------------------------------------------------------ values */

sh_watch_value sh_watch_int(int64_t i)
{
    sh_watch_value v;
    memset(&v, 0, sizeof(v));
    v.type = SH_WATCH_INT;
    v.i = i;
    return v;
}

sh_watch_value sh_watch_uint(uint64_t u)
{
    if (u <= (uint64_t)INT64_MAX)
        return sh_watch_int((int64_t)u);
    sh_watch_value v;
    memset(&v, 0, sizeof(v));
    v.type = SH_WATCH_UINT;
    v.u = u;
    return v;
}

sh_watch_value sh_watch_float(double f)
{
    sh_watch_value v;
    memset(&v, 0, sizeof(v));
    v.type = SH_WATCH_FLOAT;
    v.f = f;
    return v;
}

sh_watch_value sh_watch_str(const char *ptr, size_t len)
{
    sh_watch_value v;
    memset(&v, 0, sizeof(v));
    v.type = SH_WATCH_STR;
    v.s.ptr = ptr != NULL ? ptr : "";
    v.s.len = ptr != NULL ? len : 0;
    return v;
}

static int is_number(const sh_watch_value *v)
{
    return v->type == SH_WATCH_INT || v->type == SH_WATCH_UINT || v->type == SH_WATCH_FLOAT;
}

#define CMP_UNORDERED 2

static int cmp3(int lt, int gt)
{
    return lt ? -1 : (gt ? 1 : 0);
}

/* i <=> d, exactly (no rounding of i to a double) */
static int cmp_i64_f(int64_t i, double d)
{
    if (d != d)
        return CMP_UNORDERED;
    if (d >= 9223372036854775808.0) /* 2^63 */
        return -1;
    if (d < -9223372036854775808.0)
        return 1;
    int64_t di = (int64_t)d; /* toward zero; exact in range */
    if (i != di)
        return cmp3(i<di, i> di);
    double t = (double)di;
    return cmp3(d > t, d < t);
}

static int cmp_u64_f(uint64_t u, double d)
{
    if (d != d)
        return CMP_UNORDERED;
    if (d >= 18446744073709551616.0) /* 2^64 */
        return -1;
    if (d < 0.0)
        return 1;
    uint64_t du = (uint64_t)d;
    if (u != du)
        return cmp3(u<du, u> du);
    double t = (double)du;
    return cmp3(d > t, d < t);
}

/* A UINT that fits an int64 behaves as that INT. */
static int big_uint(const sh_watch_value *v)
{
    return v->type == SH_WATCH_UINT && v->u > (uint64_t)INT64_MAX;
}

static int64_t small_int(const sh_watch_value *v)
{
    return v->type == SH_WATCH_INT ? v->i : (int64_t)v->u;
}

/* a <=> b for two numbers: -1, 0, 1, or CMP_UNORDERED (NaN) */
static int cmp_num(const sh_watch_value *a, const sh_watch_value *b)
{
    if (a->type == SH_WATCH_FLOAT && b->type == SH_WATCH_FLOAT) {
        if (a->f != a->f || b->f != b->f)
            return CMP_UNORDERED;
        return cmp3(a->f<b->f, a->f> b->f);
    }
    if (a->type == SH_WATCH_FLOAT) {
        int c = cmp_num(b, a);
        return c == CMP_UNORDERED ? c : -c;
    }
    if (b->type == SH_WATCH_FLOAT)
        return big_uint(a) ? cmp_u64_f(a->u, b->f) : cmp_i64_f(small_int(a), b->f);
    int abig = big_uint(a), bbig = big_uint(b);
    if (abig && bbig)
        return cmp3(a->u<b->u, a->u> b->u);
    if (abig || bbig)
        return abig ? 1 : -1;
    int64_t x = small_int(a), y = small_int(b);
    return cmp3(x<y, x> y);
}

/* ----------------------------------------------------------- hashing */

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(uint64_t seed, sh_slice s)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < s.len; i++) {
        h ^= (unsigned char)s.ptr[i];
        h *= 0x100000001b3ULL;
    }
    return mix(h ^ s.len);
}

static uint64_t hash_field(const sh_watch_set *set, sh_slice name)
{
    return hash_bytes(set->seed ^ SALT_FIELD, name);
}

static uint64_t hash_cluster(const sh_watch_set *set, uint64_t id)
{
    return mix(mix(id ^ set->seed) + SALT_CLUSTER);
}

static uint64_t hash_fingerprint(const sh_watch_set *set, sh_slice fp)
{
    return hash_bytes(set->seed ^ SALT_FINGERPRINT, fp);
}

static uint64_t hash_id(const sh_watch_set *set, sh_slice id)
{
    return hash_bytes(set->seed ^ SALT_ID, id);
}

static uint64_t key_hash(const sh_watch_set *set, const sh_watch_spec *spec)
{
    switch (spec->kind) {
    case SH_WATCH_MATCH_CLUSTER:
        return hash_cluster(set, spec->cluster);
    case SH_WATCH_MATCH_FINGERPRINT:
        return hash_fingerprint(set, spec->fingerprint);
    default:
        return hash_field(set, spec->field);
    }
}

/* ------------------------------------------------------------ tables */

static watch **chain_head(const sh_watch_set *set, int link, uint64_t hash)
{
    return &set->table[link][hash & (set->table_cap - 1)];
}

static void chain_insert(sh_watch_set *set, int link, watch *w)
{
    watch **head = chain_head(set, link, w->hash[link]);
    w->next[link] = *head;
    *head = w;
    if (link == LINK_KEY)
        set->key_count[w->hash[link] & (set->table_cap - 1)]++;
}

static void chain_remove(sh_watch_set *set, int link, watch *w)
{
    for (watch **p = chain_head(set, link, w->hash[link]); *p != NULL; p = &(*p)->next[link]) {
        if (*p == w) {
            *p = w->next[link];
            w->next[link] = NULL;
            if (link == LINK_KEY)
                set->key_count[w->hash[link] & (set->table_cap - 1)]--;
            return;
        }
    }
}

/* Doubles both tables; returns 0 or -1 (tables unchanged). */
static int tables_grow(sh_watch_set *set)
{
    size_t cap = set->table_cap * 2;
    watch **fresh[2] = {calloc(cap, sizeof(watch *)), calloc(cap, sizeof(watch *))};
    uint32_t *counts = calloc(cap, sizeof(uint32_t));
    if (fresh[0] == NULL || fresh[1] == NULL || counts == NULL) {
        free(fresh[0]);
        free(fresh[1]);
        free(counts);
        return -1;
    }
    free(set->table[0]);
    free(set->table[1]);
    free(set->key_count);
    set->table[0] = fresh[0];
    set->table[1] = fresh[1];
    set->key_count = counts;
    set->table_cap = cap;
    for (watch *w = set->first; w != NULL; w = w->next_all) {
        if (w == &set->mark)
            continue;
        chain_insert(set, LINK_ID, w);
        chain_insert(set, LINK_KEY, w);
    }
    return 0;
}

static watch *find_id(const sh_watch_set *set, sh_slice id)
{
    uint64_t h = hash_id(set, id);
    for (watch *w = *chain_head(set, LINK_ID, h); w != NULL; w = w->next[LINK_ID])
        if (w->hash[LINK_ID] == h && sh_slice_eq(w->spec.id, id))
            return w;
    return NULL;
}

/* ------------------------------------------------------------- set */

int sh_watch_set_new(sh_watch_set **out, const sh_watch_config *config)
{
    sh_watch_set *set = NULL;
    *out = NULL;
    sh_watch_config cfg = {SH_WATCH_DEFAULT_MAX_WATCHES, SH_WATCH_DEFAULT_MAX_SLOTS};
    if (config != NULL) {
        if (config->max_watches > SH_WATCH_MAX_WATCHES_LIMIT ||
            config->max_slots > SH_WATCH_MAX_SLOTS_LIMIT)
            goto cleanup;
        if (config->max_watches > 0)
            cfg.max_watches = config->max_watches;
        if (config->max_slots > 0)
            cfg.max_slots = config->max_slots;
    }
    set = calloc(1, sizeof(*set));
    if (set == NULL)
        goto cleanup;
    set->cfg = cfg;
    set->seed = mix((uint64_t)(uintptr_t)set ^ mix((uint64_t)time(NULL)));
    set->table_cap = TABLE_MIN;
    set->table[0] = calloc(TABLE_MIN, sizeof(watch *));
    set->table[1] = calloc(TABLE_MIN, sizeof(watch *));
    set->key_count = calloc(TABLE_MIN, sizeof(uint32_t));
    if (set->table[0] == NULL || set->table[1] == NULL || set->key_count == NULL)
        goto cleanup;
    *out = set;
    return 0;

cleanup:
    sh_watch_set_free(set);
    return -1;
}

static void watch_free(watch *w)
{
    free(w);
}

void sh_watch_set_free(sh_watch_set *set)
{
    if (set == NULL)
        return;
    watch *w = set->first;
    while (w != NULL) {
        watch *next = w->next_all;
        if (w != &set->mark)
            watch_free(w);
        w = next;
    }
    free(set->table[0]);
    free(set->table[1]);
    free(set->key_count);
    free(set);
}

size_t sh_watch_count(const sh_watch_set *set)
{
    return set->count;
}

/* ------------------------------------------------------------- add */

static const char *validate(const sh_watch_spec *spec)
{
    if (spec->id.len == 0 || spec->id.len > SH_WATCH_MAX_ID || spec->id.ptr == NULL)
        return "id must be 1..128 bytes";
    if (spec->window_ms < 1 || spec->window_ms > SH_WATCH_MAX_WINDOW_MS)
        return "window_ms must be an integer in 1..2592000000 (30 days)";
    if (spec->threshold < 1 || spec->threshold > SH_WATCH_MAX_THRESHOLD)
        return "threshold must be an integer in 1..1000000";
    switch (spec->kind) {
    case SH_WATCH_MATCH_FIELD:
        break;
    case SH_WATCH_MATCH_CLUSTER:
        return NULL;
    case SH_WATCH_MATCH_FINGERPRINT:
        if (spec->fingerprint.len == 0 || spec->fingerprint.len > SH_WATCH_MAX_VALUE ||
            spec->fingerprint.ptr == NULL)
            return "fingerprint must be 1..1024 bytes";
        return NULL;
    default:
        return "unknown match kind";
    }
    if (spec->field.len == 0 || spec->field.len > SH_WATCH_MAX_FIELD || spec->field.ptr == NULL)
        return "field must be 1..128 bytes";
    const sh_watch_value *v = &spec->value;
    switch (spec->op) {
    case SH_WATCH_EQ:
    case SH_WATCH_NE:
        if (!is_number(v) && v->type != SH_WATCH_STR)
            return "value must be a number or a string";
        break;
    case SH_WATCH_LT:
    case SH_WATCH_LE:
    case SH_WATCH_GT:
    case SH_WATCH_GE:
        if (!is_number(v))
            return "value of <, <=, >, >= must be a number";
        break;
    case SH_WATCH_PREFIX:
    case SH_WATCH_CONTAINS:
        if (v->type != SH_WATCH_STR)
            return "value of prefix and contains must be a string";
        break;
    default:
        return "unknown op";
    }
    if (v->type == SH_WATCH_FLOAT && v->f != v->f)
        return "value must not be NaN";
    if (v->type == SH_WATCH_STR && (v->s.len > SH_WATCH_MAX_VALUE || v->s.ptr == NULL))
        return "value must be at most 1024 bytes";
    return NULL;
}

static int value_identical(const sh_watch_value *a, const sh_watch_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case SH_WATCH_INT:
        return a->i == b->i;
    case SH_WATCH_UINT:
        return a->u == b->u;
    case SH_WATCH_FLOAT:
        return memcmp(&a->f, &b->f, sizeof(double)) == 0;
    case SH_WATCH_STR:
        return sh_slice_eq(a->s, b->s);
    default:
        return 1;
    }
}

/* the specs describe the same watch (the stored one is normalised) */
static int spec_identical(const sh_watch_spec *a, const sh_watch_spec *b)
{
    if (a->kind != b->kind || a->window_ms != b->window_ms || a->threshold != b->threshold)
        return 0;
    switch (a->kind) {
    case SH_WATCH_MATCH_CLUSTER:
        return a->cluster == b->cluster;
    case SH_WATCH_MATCH_FINGERPRINT:
        return sh_slice_eq(a->fingerprint, b->fingerprint);
    default:
        return a->op == b->op && sh_slice_eq(a->field, b->field) &&
               value_identical(&a->value, &b->value);
    }
}

/* the spec with a UINT that fits normalised to INT and unused parts zeroed */
static sh_watch_spec normalise(const sh_watch_spec *in)
{
    sh_watch_spec s;
    memset(&s, 0, sizeof(s));
    s.id = in->id;
    s.kind = in->kind;
    s.window_ms = in->window_ms;
    s.threshold = in->threshold;
    switch (in->kind) {
    case SH_WATCH_MATCH_CLUSTER:
        s.cluster = in->cluster;
        break;
    case SH_WATCH_MATCH_FINGERPRINT:
        s.fingerprint = in->fingerprint;
        break;
    default:
        s.field = in->field;
        s.op = in->op;
        switch (in->value.type) {
        case SH_WATCH_INT:
            s.value = sh_watch_int(in->value.i);
            break;
        case SH_WATCH_UINT:
            s.value = sh_watch_uint(in->value.u);
            break;
        case SH_WATCH_FLOAT:
            s.value = sh_watch_float(in->value.f);
            break;
        default:
            s.value = sh_watch_str(in->value.s.ptr, in->value.s.len);
        }
    }
    return s;
}

static void kmp_build(uint16_t *fail, sh_slice p)
{
    if (p.len == 0)
        return;
    fail[0] = 0;
    size_t k = 0;
    for (size_t i = 1; i < p.len; i++) {
        while (k > 0 && p.ptr[i] != p.ptr[k])
            k = fail[k - 1];
        if (p.ptr[i] == p.ptr[k])
            k++;
        fail[i] = (uint16_t)k;
    }
}

static int kmp_contains(const uint16_t *fail, sh_slice p, sh_slice text)
{
    if (p.len == 0)
        return 1;
    size_t k = 0;
    for (size_t i = 0; i < text.len; i++) {
        while (k > 0 && text.ptr[i] != p.ptr[k])
            k = fail[k - 1];
        if (text.ptr[i] == p.ptr[k] && ++k == p.len)
            return 1;
    }
    return 0;
}

static size_t copy_slice(char *dst, sh_slice *s)
{
    if (s->len > 0)
        memcpy(dst, s->ptr, s->len);
    s->ptr = dst;
    return s->len;
}

/* One block: struct, ring, KMP table, text. NULL when out of memory. */
static watch *watch_new(const sh_watch_set *set, const sh_watch_spec *spec)
{
    size_t ring = (size_t)spec->threshold * sizeof(int64_t);
    size_t kmp = spec->kind == SH_WATCH_MATCH_FIELD && spec->op == SH_WATCH_CONTAINS
                     ? spec->value.s.len * sizeof(uint16_t)
                     : 0;
    size_t text = spec->id.len + spec->field.len + spec->fingerprint.len +
                  (spec->value.type == SH_WATCH_STR ? spec->value.s.len : 0);
    watch *w = malloc(sizeof(watch) + ring + kmp + text);
    if (w == NULL)
        return NULL;
    memset(w, 0, sizeof(*w));
    w->spec = *spec;
    w->ring = (int64_t *)(void *)(w + 1);
    w->kmp = kmp > 0 ? (uint16_t *)(void *)((char *)w->ring + ring) : NULL;
    char *t = (char *)w->ring + ring + kmp;
    t += copy_slice(t, &w->spec.id);
    t += copy_slice(t, &w->spec.field);
    t += copy_slice(t, &w->spec.fingerprint);
    if (w->spec.value.type == SH_WATCH_STR)
        copy_slice(t, &w->spec.value.s);
    if (w->kmp != NULL)
        kmp_build(w->kmp, w->spec.value.s);
    w->hash[LINK_ID] = hash_id(set, w->spec.id);
    w->hash[LINK_KEY] = key_hash(set, &w->spec);
    w->armed = 1;
    w->walk_gen = set->walking ? set->walk_gen : 0;
    return w;
}

int sh_watch_add(sh_watch_set *set, const sh_watch_spec *spec, sh_watch_status *status,
                 const char **why)
{
    sh_watch_status st = SH_WATCH_EINVALID;
    const char *msg = NULL;
    watch *w = NULL;
    if (set == NULL || spec == NULL) {
        msg = "no set or spec";
        goto cleanup;
    }
    msg = validate(spec);
    if (msg != NULL)
        goto cleanup;
    sh_watch_spec s = normalise(spec);
    watch *old = find_id(set, s.id);
    if (old != NULL && spec_identical(&old->spec, &s)) {
        *status = SH_WATCH_UNCHANGED;
        return 0;
    }
    st = SH_WATCH_EFULL;
    if (old == NULL && set->count >= set->cfg.max_watches) {
        msg = "too many watches (max_watches)";
        goto cleanup;
    }
    if (set->slots - (old != NULL ? old->spec.threshold : 0) + s.threshold > set->cfg.max_slots) {
        msg = "the thresholds of all watches would exceed max_slots";
        goto cleanup;
    }
    st = SH_WATCH_ENOMEM;
    msg = "out of memory";
    if (old == NULL && set->count + 1 > set->table_cap && tables_grow(set) != 0)
        goto cleanup;
    w = watch_new(set, &s);
    if (w == NULL)
        goto cleanup;

    chain_insert(set, LINK_ID, w);
    chain_insert(set, LINK_KEY, w);
    if (old != NULL) {
        /* takes the old watch's place in the order (and in a walk) */
        w->walk_gen = old->walk_gen;
        chain_remove(set, LINK_ID, old);
        chain_remove(set, LINK_KEY, old);
        w->prev_all = old->prev_all;
        w->next_all = old->next_all;
        if (old->prev_all != NULL)
            old->prev_all->next_all = w;
        else
            set->first = w;
        if (old->next_all != NULL)
            old->next_all->prev_all = w;
        else
            set->last = w;
        set->slots -= old->spec.threshold;
        watch_free(old);
        st = SH_WATCH_REPLACED;
    } else {
        w->prev_all = set->last;
        if (set->last != NULL)
            set->last->next_all = w;
        else
            set->first = w;
        set->last = w;
        set->count++;
        st = SH_WATCH_ADDED;
    }
    set->slots += s.threshold;
    *status = st;
    return 0;

cleanup:
    *status = st;
    if (why != NULL)
        *why = msg;
    return -1;
}

/* Takes w out of the list of all watches. */
static void all_unlink(sh_watch_set *set, watch *w)
{
    if (w->prev_all != NULL)
        w->prev_all->next_all = w->next_all;
    else
        set->first = w->next_all;
    if (w->next_all != NULL)
        w->next_all->prev_all = w->prev_all;
    else
        set->last = w->prev_all;
    w->prev_all = w->next_all = NULL;
}

int sh_watch_remove(sh_watch_set *set, sh_slice id)
{
    if (id.ptr == NULL || id.len == 0 || id.len > SH_WATCH_MAX_ID)
        return -1;
    watch *w = find_id(set, id);
    if (w == NULL)
        return -1;
    chain_remove(set, LINK_ID, w);
    chain_remove(set, LINK_KEY, w);
    all_unlink(set, w);
    set->count--;
    set->slots -= w->spec.threshold;
    watch_free(w);
    return 0;
}

/* ----------------------------------------------------------- fired */

void sh_watch_fired_init(sh_watch_fired *fired)
{
    fired->ids = NULL;
    fired->len = 0;
    fired->cap = 0;
}

void sh_watch_fired_clear(sh_watch_fired *fired)
{
    fired->len = 0;
}

void sh_watch_fired_free(sh_watch_fired *fired)
{
    if (fired == NULL)
        return;
    free(fired->ids);
    sh_watch_fired_init(fired);
}

static int fired_reserve(sh_watch_fired *fired, size_t extra)
{
    if (extra <= fired->cap - fired->len)
        return 0;
    if (extra > SIZE_MAX / sizeof(sh_slice) - fired->len)
        return -1;
    size_t cap = fired->cap > 0 ? fired->cap : 16;
    while (cap < fired->len + extra)
        cap = cap > SIZE_MAX / sizeof(sh_slice) / 2 ? fired->len + extra : cap * 2;
    sh_slice *ids = realloc(fired->ids, cap * sizeof(sh_slice));
    if (ids == NULL)
        return -1;
    fired->ids = ids;
    fired->cap = cap;
    return 0;
}

/* ---------------------------------------------------------- observe */

/* b - a for a <= b, without overflow */
static uint64_t elapsed(int64_t a, int64_t b)
{
    return (uint64_t)b - (uint64_t)a;
}

static int64_t ring_at(const watch *w, uint64_t k)
{
    return w->ring[(w->head + k) % w->spec.threshold];
}

static void expire(watch *w, int64_t now)
{
    uint64_t window = (uint64_t)w->spec.window_ms;
    while (w->len > 0 && elapsed(w->ring[w->head], now) >= window) {
        w->head = (w->head + 1) % w->spec.threshold;
        w->len--;
    }
}

static void count_event(sh_watch_set *set, watch *w, int64_t now, sh_watch_fired *fired)
{
    uint64_t threshold = w->spec.threshold;
    w->seen = set->epoch;
    w->matched++;
    expire(w, now);
    if (w->len < threshold)
        w->armed = 1;
    if (w->len == threshold) { /* the oldest no longer matters */
        w->head = (w->head + 1) % threshold;
        w->len--;
    }
    w->ring[(w->head + w->len) % threshold] = now;
    w->len++;
    if (w->armed && w->len >= threshold &&
        (!w->has_fired || elapsed(w->last_fired_ms, now) >= (uint64_t)w->spec.window_ms)) {
        w->armed = 0;
        w->has_fired = 1;
        w->last_fired_ms = now;
        w->fired++;
        set->fired++;
        fired->ids[fired->len++] = w->spec.id;
    }
}

static int match_field(const watch *w, const sh_watch_value *v)
{
    const sh_watch_value *want = &w->spec.value;
    sh_watch_op op = w->spec.op;
    if (v->type == SH_WATCH_NONE)
        return 0;
    if (want->type == SH_WATCH_STR) {
        if (v->type != SH_WATCH_STR)
            return op == SH_WATCH_NE;
        sh_slice s = v->s;
        if (s.len > SH_WATCH_MAX_EVENT_VALUE)
            s.len = SH_WATCH_MAX_EVENT_VALUE;
        switch (op) {
        case SH_WATCH_EQ:
            return sh_slice_eq(s, want->s);
        case SH_WATCH_NE:
            return !sh_slice_eq(s, want->s);
        case SH_WATCH_PREFIX:
            return s.len >= want->s.len &&
                   (want->s.len == 0 || memcmp(s.ptr, want->s.ptr, want->s.len) == 0);
        case SH_WATCH_CONTAINS:
            return kmp_contains(w->kmp, want->s, s);
        default:
            return 0;
        }
    }
    if (!is_number(v))
        return op == SH_WATCH_NE;
    int c = cmp_num(v, want);
    switch (op) {
    case SH_WATCH_EQ:
        return c == 0;
    case SH_WATCH_NE:
        return c != 0;
    case SH_WATCH_LT:
        return c == -1;
    case SH_WATCH_LE:
        return c == -1 || c == 0;
    case SH_WATCH_GT:
        return c == 1;
    case SH_WATCH_GE:
        return c == 1 || c == 0;
    default:
        return 0;
    }
}

/* the event's integer as a cluster id, when it is a non-negative integer */
static int as_cluster(const sh_watch_value *v, uint64_t *id)
{
    if (v->type == SH_WATCH_UINT) {
        *id = v->u;
        return 1;
    }
    if (v->type == SH_WATCH_INT && v->i >= 0) {
        *id = (uint64_t)v->i;
        return 1;
    }
    return 0;
}

int sh_watch_observe(sh_watch_set *set, const sh_watch_event *event, int64_t now_ms,
                     sh_watch_fired *fired_out)
{
    if (set == NULL || event == NULL || fired_out == NULL || event->nfields > SH_WATCH_MAX_FIELDS ||
        (event->fields == NULL && event->nfields > 0))
        return -1;
    /* every watch fires at most once per event: room for all up front */
    if (fired_reserve(fired_out, set->count) != 0)
        return -1;
    if (!set->has_clock || now_ms > set->clock) {
        set->clock = now_ms;
        set->has_clock = 1;
    }
    int64_t now = set->clock;
    set->epoch++;
    set->events++;
    for (size_t i = 0; i < event->nfields; i++) {
        const sh_watch_field *f = &event->fields[i];
        if (f->key.len == 0 || f->key.len > SH_WATCH_MAX_FIELD || f->key.ptr == NULL ||
            f->value.type == SH_WATCH_NONE)
            continue;
        if (f->value.type == SH_WATCH_STR && f->value.s.ptr == NULL)
            continue;
        uint64_t h = hash_field(set, f->key);
        for (watch *w = *chain_head(set, LINK_KEY, h); w != NULL; w = w->next[LINK_KEY]) {
            if (w->hash[LINK_KEY] != h || w->spec.kind != SH_WATCH_MATCH_FIELD ||
                w->seen == set->epoch || !sh_slice_eq(w->spec.field, f->key))
                continue;
            set->evaluated++;
            if (match_field(w, &f->value))
                count_event(set, w, now, fired_out);
        }
        uint64_t cluster;
        if (sh_slice_eq_cstr(f->key, SH_WATCH_CLUSTER_FIELD) && as_cluster(&f->value, &cluster)) {
            h = hash_cluster(set, cluster);
            for (watch *w = *chain_head(set, LINK_KEY, h); w != NULL; w = w->next[LINK_KEY]) {
                if (w->hash[LINK_KEY] != h || w->spec.kind != SH_WATCH_MATCH_CLUSTER ||
                    w->seen == set->epoch)
                    continue;
                set->evaluated++;
                if (w->spec.cluster == cluster)
                    count_event(set, w, now, fired_out);
            }
        }
        if (sh_slice_eq_cstr(f->key, SH_WATCH_FINGERPRINT_FIELD) && f->value.type == SH_WATCH_STR &&
            f->value.s.len <= SH_WATCH_MAX_VALUE) {
            h = hash_fingerprint(set, f->value.s);
            for (watch *w = *chain_head(set, LINK_KEY, h); w != NULL; w = w->next[LINK_KEY]) {
                if (w->hash[LINK_KEY] != h || w->spec.kind != SH_WATCH_MATCH_FINGERPRINT ||
                    w->seen == set->epoch)
                    continue;
                set->evaluated++;
                if (sh_slice_eq(w->spec.fingerprint, f->value.s))
                    count_event(set, w, now, fired_out);
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------- read */

/* events in the window at the set's clock (binary search: the ring is in
 * time order) */
static uint64_t count_now(const sh_watch_set *set, const watch *w)
{
    if (!set->has_clock)
        return w->len;
    uint64_t lo = 0, hi = w->len, window = (uint64_t)w->spec.window_ms;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (elapsed(ring_at(w, mid), set->clock) >= window)
            lo = mid + 1;
        else
            hi = mid;
    }
    return w->len - lo;
}

static void info_of(const sh_watch_set *set, const watch *w, sh_watch_info *out)
{
    memset(out, 0, sizeof(*out));
    out->spec = &w->spec;
    out->count = count_now(set, w);
    out->matched = w->matched;
    out->fired = w->fired;
    out->armed = w->armed || out->count < w->spec.threshold;
    out->has_fired = w->has_fired;
    out->last_fired_ms = w->last_fired_ms;
}

int sh_watch_get(const sh_watch_set *set, sh_slice id, sh_watch_info *out)
{
    if (id.ptr == NULL || id.len == 0 || id.len > SH_WATCH_MAX_ID)
        return -1;
    const watch *w = find_id(set, id);
    if (w == NULL)
        return -1;
    info_of(set, w, out);
    return 0;
}

void sh_watch_each(const sh_watch_set *set, sh_watch_visit_fn fn, void *arg)
{
    for (const watch *w = set->first; w != NULL; w = w->next_all) {
        if (w == &set->mark)
            continue;
        sh_watch_info info;
        info_of(set, w, &info);
        if (fn(arg, &info) != 0)
            return;
    }
}

/* ------------------------------------------------------------- work */

static uint64_t chain_count(const sh_watch_set *set, uint64_t hash)
{
    return set->key_count[hash & (set->table_cap - 1)];
}

uint64_t sh_watch_observe_work(const sh_watch_set *set, const sh_watch_event *event)
{
    uint64_t work = 1;
    if (set == NULL || event == NULL || event->nfields > SH_WATCH_MAX_FIELDS)
        return work;
    for (size_t i = 0; i < event->nfields; i++) {
        const sh_watch_field *f = &event->fields[i];
        work++;
        if (f->key.len == 0 || f->key.len > SH_WATCH_MAX_FIELD || f->key.ptr == NULL ||
            f->value.type == SH_WATCH_NONE)
            continue;
        uint64_t per = 1;
        if (f->value.type == SH_WATCH_STR)
            per += (f->value.s.len < SH_WATCH_MAX_EVENT_VALUE ? f->value.s.len
                                                              : SH_WATCH_MAX_EVENT_VALUE) /
                   4;
        work += chain_count(set, hash_field(set, f->key)) * per;
        uint64_t cluster;
        if (sh_slice_eq_cstr(f->key, SH_WATCH_CLUSTER_FIELD) && as_cluster(&f->value, &cluster))
            work += chain_count(set, hash_cluster(set, cluster));
        if (sh_slice_eq_cstr(f->key, SH_WATCH_FINGERPRINT_FIELD) && f->value.type == SH_WATCH_STR &&
            f->value.s.len <= SH_WATCH_MAX_VALUE)
            work += chain_count(set, hash_fingerprint(set, f->value.s)) * per;
    }
    return work;
}

/* ------------------------------------------------------------- walks */

int sh_watch_walk_begin(sh_watch_set *set)
{
    if (set->walking)
        return -1;
    set->walking = 1;
    set->walk_gen++;
    watch *k = &set->mark;
    memset(k, 0, sizeof(*k));
    k->next_all = set->first; /* before the first: nothing visited yet */
    if (set->first != NULL)
        set->first->prev_all = k;
    else
        set->last = k;
    set->first = k;
    return 0;
}

void sh_watch_walk_end(sh_watch_set *set)
{
    if (!set->walking)
        return;
    all_unlink(set, &set->mark);
    set->walking = 0;
}

int sh_watch_walk_step(sh_watch_set *set, size_t max_work, sh_watch_visit_fn fn, void *arg)
{
    watch *k = &set->mark;
    size_t work = 0;
    while (work < max_work) {
        /* the next watch not added during the walk; the marker moves past
         * each one met */
        watch *w = k->next_all;
        while (w != NULL && w->walk_gen == set->walk_gen)
            w = w->next_all;
        watch *after = w != NULL ? w : set->last;
        if (after != k) {
            all_unlink(set, k);
            k->prev_all = after;
            k->next_all = after->next_all;
            if (after->next_all != NULL)
                after->next_all->prev_all = k;
            else
                set->last = k;
            after->next_all = k;
        }
        if (w == NULL)
            return 1;
        sh_watch_info info;
        info_of(set, w, &info);
        if (fn(arg, &info) != 0)
            return -1;
        work++;
    }
    return k->next_all == NULL ? 1 : 0;
}

void sh_watch_stats_get(const sh_watch_set *set, sh_watch_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->watches = set->count;
    out->slots = set->slots;
    out->events = set->events;
    out->evaluated = set->evaluated;
    out->fired = set->fired;
    out->has_clock = set->has_clock;
    out->clock_ms = set->clock;
}
