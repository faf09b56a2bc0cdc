/*
 * The watch NIF's reading of terms (c_src/watch_nif.c): read_spec, which
 * every watch spec goes through (SelfHeal.Watch.add/2 from users, and the
 * triage model's proposals), read_event for the events observed, and the
 * listing's maps (watch_term) read back as specs. No BEAM runs under
 * libFuzzer, so this file includes watch_nif.c and gives it the erl_nif
 * functions it calls, over terms built from the fuzzer's bytes: atoms
 * (Latin-1, at most 255 bytes, as OTP 25 reads them), integers (64-bit or
 * larger), floats (finite), binaries (each in its own allocation, so ASan
 * sees a read past one), maps (unique keys), lists and tuples. The
 * functions the target never reaches (resources, scheduling, locks) abort.
 *
 * Properties: a refused spec says why; an accepted one stays within the
 * bounds of watch.h and is added, or refused by the set with a reason; an
 * event reads as at most SH_WATCH_MAX_FIELDS fields with names of 1..128
 * bytes; every listed watch read back as a spec is accepted and adds as
 * `unchanged`.
 */
#include "fuzz.h"

#include "../../c_src/watch_nif.c"

#include <math.h>
#include <stdarg.h>

/* ---------------------------------------------------------------- terms */

enum fz_tag { FT_ATOM = 1, FT_INT, FT_BIG, FT_FLOAT, FT_BIN, FT_MAP, FT_LIST, FT_NIL, FT_TUPLE };

typedef struct fz_term {
    enum fz_tag tag;
    int neg;                 /* FT_INT: the value is -mag when set (mag > 0) */
    uint64_t mag;            /* FT_INT */
    double f;                /* FT_FLOAT */
    char *bytes;             /* FT_ATOM, FT_BIN: own allocation */
    size_t len;              /* FT_ATOM, FT_BIN: bytes; FT_MAP: pairs; FT_TUPLE: elements */
    size_t items;            /* FT_MAP: keys at items, values at items + len; FT_TUPLE */
    ERL_NIF_TERM head, tail; /* FT_LIST */
} fz_term;

#define MAX_TERMS 8192
#define MAX_SLOTS 16384

static fz_term terms[MAX_TERMS];
static size_t nterms, nfixed; /* terms [0, nfixed) are the atoms made at load */
static ERL_NIF_TERM slots[MAX_SLOTS];
static size_t nslots;
static struct enif_environment_t *const env0 = NULL;

/* A term is its index + 1; 0 is no term. */
static fz_term *term_of(ERL_NIF_TERM t)
{
    return t >= 1 && t <= nterms ? &terms[t - 1] : NULL;
}

static ERL_NIF_TERM term_new(fz_term v)
{
    if (nterms == MAX_TERMS)
        return 0;
    terms[nterms++] = v;
    return nterms;
}

static char *copy_bytes(const char *p, size_t len)
{
    char *b = malloc(len > 0 ? len : 1);
    FZ_CHECK(b != NULL);
    if (len > 0)
        memcpy(b, p, len);
    return b;
}

static void terms_reset(void)
{
    for (size_t i = nfixed; i < nterms; i++)
        if (terms[i].tag == FT_BIN || terms[i].tag == FT_ATOM)
            free(terms[i].bytes);
    nterms = nfixed;
    nslots = 0;
}

static ERL_NIF_TERM atom_of(const char *p, size_t len)
{
    for (size_t i = 0; i < nterms; i++)
        if (terms[i].tag == FT_ATOM && terms[i].len == len && memcmp(terms[i].bytes, p, len) == 0)
            return i + 1;
    return term_new((fz_term){.tag = FT_ATOM, .bytes = copy_bytes(p, len), .len = len});
}

static ERL_NIF_TERM int_of(int neg, uint64_t mag)
{
    return term_new((fz_term){.tag = FT_INT, .neg = neg && mag > 0, .mag = mag});
}

static ERL_NIF_TERM bin_of(const char *p, size_t len)
{
    return term_new((fz_term){.tag = FT_BIN, .bytes = copy_bytes(p, len), .len = len});
}

/* Room for n terms in slots; NULL when full. */
static ERL_NIF_TERM *slots_take(size_t n, size_t *at)
{
    if (n > MAX_SLOTS - nslots)
        return NULL;
    *at = nslots;
    nslots += n;
    return &slots[*at];
}

static int identical(ERL_NIF_TERM a, ERL_NIF_TERM b);

/* The value of key in the map m (0 when absent). */
static ERL_NIF_TERM map_get(const fz_term *m, ERL_NIF_TERM key)
{
    for (size_t i = 0; i < m->len; i++)
        if (identical(slots[m->items + i], key))
            return slots[m->items + m->len + i];
    return 0;
}

static int identical(ERL_NIF_TERM a, ERL_NIF_TERM b)
{
    const fz_term *x = term_of(a), *y = term_of(b);
    if (x == NULL || y == NULL || x->tag != y->tag)
        return 0;
    switch (x->tag) {
    case FT_ATOM:
    case FT_BIN:
        return x->len == y->len && memcmp(x->bytes, y->bytes, x->len) == 0;
    case FT_INT:
        return x->neg == y->neg && x->mag == y->mag;
    case FT_FLOAT:
        return memcmp(&x->f, &y->f, sizeof(double)) == 0;
    case FT_MAP:
        if (x->len != y->len)
            return 0;
        for (size_t i = 0; i < x->len; i++) {
            ERL_NIF_TERM v = map_get(y, slots[x->items + i]);
            if (v == 0 || !identical(slots[x->items + x->len + i], v))
                return 0;
        }
        return 1;
    case FT_LIST:
        return identical(x->head, y->head) && identical(x->tail, y->tail);
    case FT_TUPLE:
        if (x->len != y->len)
            return 0;
        for (size_t i = 0; i < x->len; i++)
            if (!identical(slots[x->items + i], slots[y->items + i]))
                return 0;
        return 1;
    default:
        return a == b; /* FT_BIG, FT_NIL: each its own */
    }
}

/* A map of the pairs keys[i] => vals[i]; 0 when a key repeats. */
static ERL_NIF_TERM map_of(const ERL_NIF_TERM *keys, const ERL_NIF_TERM *vals, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (identical(keys[i], keys[j]))
                return 0;
    size_t at;
    ERL_NIF_TERM *s = slots_take(2 * n, &at);
    if (s == NULL)
        return 0;
    memcpy(s, keys, n * sizeof(*keys));
    memcpy(s + n, vals, n * sizeof(*vals));
    return term_new((fz_term){.tag = FT_MAP, .len = n, .items = at});
}

/* ------------------------------------------------- the erl_nif functions */

ERL_NIF_TERM enif_make_atom(ErlNifEnv *env, const char *name)
{
    (void)env;
    return atom_of(name, strlen(name));
}

int enif_is_identical(ERL_NIF_TERM a, ERL_NIF_TERM b)
{
    return identical(a, b);
}

int enif_is_map(ErlNifEnv *env, ERL_NIF_TERM t)
{
    (void)env;
    const fz_term *x = term_of(t);
    return x != NULL && x->tag == FT_MAP;
}

int enif_get_map_value(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM key, ERL_NIF_TERM *value)
{
    (void)env;
    const fz_term *m = term_of(map);
    ERL_NIF_TERM v = m != NULL && m->tag == FT_MAP ? map_get(m, key) : 0;
    if (v != 0)
        *value = v;
    return v != 0;
}

int enif_get_map_size(ErlNifEnv *env, ERL_NIF_TERM map, size_t *size)
{
    (void)env;
    const fz_term *m = term_of(map);
    if (m == NULL || m->tag != FT_MAP)
        return 0;
    *size = m->len;
    return 1;
}

int enif_make_map_from_arrays(ErlNifEnv *env, ERL_NIF_TERM keys[], ERL_NIF_TERM values[],
                              size_t cnt, ERL_NIF_TERM *map_out)
{
    (void)env;
    ERL_NIF_TERM m = map_of(keys, values, cnt);
    if (m != 0)
        *map_out = m;
    return m != 0;
}

int enif_map_iterator_create(ErlNifEnv *env, ERL_NIF_TERM map, ErlNifMapIterator *iter,
                             ErlNifMapIteratorEntry entry)
{
    (void)env;
    const fz_term *m = term_of(map);
    if (m == NULL || m->tag != FT_MAP || entry != ERL_NIF_MAP_ITERATOR_FIRST)
        return 0;
    memset(iter, 0, sizeof(*iter));
    iter->map = map;
    iter->size = m->len;
    return 1;
}

int enif_map_iterator_get_pair(ErlNifEnv *env, ErlNifMapIterator *iter, ERL_NIF_TERM *key,
                               ERL_NIF_TERM *value)
{
    (void)env;
    const fz_term *m = term_of(iter->map);
    if (iter->idx >= iter->size)
        return 0;
    *key = slots[m->items + iter->idx];
    *value = slots[m->items + m->len + iter->idx];
    return 1;
}

int enif_map_iterator_next(ErlNifEnv *env, ErlNifMapIterator *iter)
{
    (void)env;
    if (iter->idx < iter->size)
        iter->idx++;
    return iter->idx < iter->size;
}

void enif_map_iterator_destroy(ErlNifEnv *env, ErlNifMapIterator *iter)
{
    (void)env;
    iter->map = 0;
}

int enif_inspect_binary(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifBinary *bin)
{
    (void)env;
    const fz_term *x = term_of(t);
    if (x == NULL || x->tag != FT_BIN)
        return 0;
    memset(bin, 0, sizeof(*bin));
    bin->data = (unsigned char *)x->bytes;
    bin->size = x->len;
    return 1;
}

int enif_get_atom_length(ErlNifEnv *env, ERL_NIF_TERM atom, unsigned *len, ErlNifCharEncoding enc)
{
    (void)env;
    (void)enc; /* Latin-1: a byte a character */
    const fz_term *x = term_of(atom);
    if (x == NULL || x->tag != FT_ATOM)
        return 0;
    *len = (unsigned)x->len;
    return 1;
}

int enif_get_atom(ErlNifEnv *env, ERL_NIF_TERM atom, char *buf, unsigned size,
                  ErlNifCharEncoding enc)
{
    (void)env;
    (void)enc;
    const fz_term *x = term_of(atom);
    if (x == NULL || x->tag != FT_ATOM || x->len + 1 > size)
        return 0;
    memcpy(buf, x->bytes, x->len);
    buf[x->len] = '\0';
    return (int)x->len + 1;
}

int enif_get_int64(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifSInt64 *ip)
{
    (void)env;
    const fz_term *x = term_of(t);
    if (x == NULL || x->tag != FT_INT)
        return 0;
    if (!x->neg && x->mag <= (uint64_t)INT64_MAX)
        *ip = (ErlNifSInt64)x->mag;
    else if (x->neg && x->mag <= (uint64_t)INT64_MAX + 1)
        *ip = x->mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(ErlNifSInt64)x->mag;
    else
        return 0;
    return 1;
}

int enif_get_uint64(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifUInt64 *ip)
{
    (void)env;
    const fz_term *x = term_of(t);
    if (x == NULL || x->tag != FT_INT || x->neg)
        return 0;
    *ip = x->mag;
    return 1;
}

int enif_get_double(ErlNifEnv *env, ERL_NIF_TERM t, double *dp)
{
    (void)env;
    const fz_term *x = term_of(t);
    if (x == NULL || x->tag != FT_FLOAT)
        return 0;
    *dp = x->f;
    return 1;
}

ERL_NIF_TERM enif_make_int64(ErlNifEnv *env, ErlNifSInt64 i)
{
    (void)env;
    return int_of(i < 0, i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i);
}

ERL_NIF_TERM enif_make_uint64(ErlNifEnv *env, ErlNifUInt64 u)
{
    (void)env;
    return int_of(0, u);
}

ERL_NIF_TERM enif_make_double(ErlNifEnv *env, double d)
{
    (void)env;
    FZ_CHECK(isfinite(d)); /* the VM refuses NaN and infinities */
    return term_new((fz_term){.tag = FT_FLOAT, .f = d});
}

ERL_NIF_TERM enif_make_list_cell(ErlNifEnv *env, ERL_NIF_TERM car, ERL_NIF_TERM cdr)
{
    (void)env;
    return term_new((fz_term){.tag = FT_LIST, .head = car, .tail = cdr});
}

int enif_is_list(ErlNifEnv *env, ERL_NIF_TERM t)
{
    (void)env;
    const fz_term *x = term_of(t);
    return x != NULL && (x->tag == FT_LIST || x->tag == FT_NIL);
}

int enif_is_empty_list(ErlNifEnv *env, ERL_NIF_TERM t)
{
    (void)env;
    const fz_term *x = term_of(t);
    return x != NULL && x->tag == FT_NIL;
}

int enif_get_list_cell(ErlNifEnv *env, ERL_NIF_TERM list, ERL_NIF_TERM *head, ERL_NIF_TERM *tail)
{
    (void)env;
    const fz_term *x = term_of(list);
    if (x == NULL || x->tag != FT_LIST)
        return 0;
    *head = x->head;
    *tail = x->tail;
    return 1;
}

ERL_NIF_TERM enif_make_tuple(ErlNifEnv *env, unsigned cnt, ...)
{
    (void)env;
    size_t at;
    ERL_NIF_TERM *s = slots_take(cnt, &at);
    if (s == NULL)
        return 0;
    va_list ap;
    va_start(ap, cnt);
    for (unsigned i = 0; i < cnt; i++)
        s[i] = va_arg(ap, ERL_NIF_TERM);
    va_end(ap);
    return term_new((fz_term){.tag = FT_TUPLE, .len = cnt, .items = at});
}

/* Reached only by the NIF entry points, which the target does not call. */
#define UNREACHED()                                                                                \
    do {                                                                                           \
        fprintf(stderr, "%s is not modelled by fuzz_watch_nif\n", __func__);                       \
        abort();                                                                                   \
    } while (0)

void *enif_alloc(size_t size)
{
    (void)size;
    UNREACHED();
}

void *enif_alloc_resource(ErlNifResourceType *type, size_t size)
{
    (void)type;
    (void)size;
    UNREACHED();
}

void enif_release_resource(void *obj)
{
    (void)obj;
    UNREACHED();
}

ERL_NIF_TERM enif_make_resource(ErlNifEnv *env, void *obj)
{
    (void)env;
    (void)obj;
    UNREACHED();
}

int enif_get_resource(ErlNifEnv *env, ERL_NIF_TERM term, ErlNifResourceType *type, void **objp)
{
    (void)env;
    (void)term;
    (void)type;
    (void)objp;
    UNREACHED();
}

ErlNifResourceType *enif_open_resource_type(ErlNifEnv *env, const char *module_str,
                                            const char *name_str, ErlNifResourceDtor *dtor,
                                            ErlNifResourceFlags flags, ErlNifResourceFlags *tried)
{
    (void)env;
    (void)module_str;
    (void)name_str;
    (void)dtor;
    (void)flags;
    (void)tried;
    UNREACHED();
}

int enif_consume_timeslice(ErlNifEnv *env, int percent)
{
    (void)env;
    (void)percent;
    UNREACHED();
}

ERL_NIF_TERM enif_schedule_nif(ErlNifEnv *env, const char *fun_name, int flags,
                               ERL_NIF_TERM (*fp)(ErlNifEnv *, int, const ERL_NIF_TERM[]), int argc,
                               const ERL_NIF_TERM argv[])
{
    (void)env;
    (void)fun_name;
    (void)flags;
    (void)fp;
    (void)argc;
    (void)argv;
    UNREACHED();
}

ERL_NIF_TERM enif_make_list(ErlNifEnv *env, unsigned cnt, ...)
{
    (void)env;
    (void)cnt;
    UNREACHED();
}

int enif_make_reverse_list(ErlNifEnv *env, ERL_NIF_TERM list_in, ERL_NIF_TERM *list_out)
{
    (void)env;
    (void)list_in;
    (void)list_out;
    UNREACHED();
}

/* nif_util.c's helpers that watch_nif.c calls: the two it needs on the
 * paths fuzzed, the others never reached. */
ERL_NIF_TERM sh_nif_timed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[],
                          ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]))
{
    (void)env;
    (void)argc;
    (void)argv;
    (void)fn;
    UNREACHED();
}

ERL_NIF_TERM sh_nif_make_bin(ErlNifEnv *env, const char *bytes, size_t len)
{
    (void)env;
    return bin_of(bytes, len);
}

ERL_NIF_TERM sh_nif_raise_badarg(ErlNifEnv *env, ERL_NIF_TERM badarg_atom, const char *why)
{
    (void)env;
    (void)badarg_atom;
    (void)why;
    UNREACHED();
}

int sh_nif_on_dirty(void)
{
    UNREACHED();
}

int sh_nif_on_normal(void)
{
    UNREACHED();
}

ERL_NIF_TERM sh_nif_continue(ErlNifEnv *env, const char *name, int dirty,
                             ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]), int argc,
                             const ERL_NIF_TERM argv[])
{
    (void)env;
    (void)name;
    (void)dirty;
    (void)fn;
    (void)argc;
    (void)argv;
    UNREACHED();
}

int sh_nif_lock_init(sh_nif_lock *lock, const char *name)
{
    (void)lock;
    (void)name;
    UNREACHED();
}

void sh_nif_lock_destroy(sh_nif_lock *lock)
{
    (void)lock;
    UNREACHED();
}

int sh_nif_lock_take(sh_nif_lock *lock, int dirty)
{
    (void)lock;
    (void)dirty;
    UNREACHED();
}

void sh_nif_lock_release(sh_nif_lock *lock)
{
    (void)lock;
    UNREACHED();
}

void sh_nif_defer(void (*fn)(void *), void *arg)
{
    (void)fn;
    (void)arg;
    UNREACHED();
}

void sh_nif_clock_start(sh_nif_clock *c, unsigned long yield_every, unsigned long check_every,
                        uint64_t work_limit)
{
    (void)c;
    (void)yield_every;
    (void)check_every;
    (void)work_limit;
    UNREACHED();
}

int sh_nif_clock_tick(ErlNifEnv *env, sh_nif_clock *c, uint64_t work)
{
    (void)env;
    (void)c;
    (void)work;
    UNREACHED();
}

ERL_NIF_TERM sh_nif_walk_start(ErlNifEnv *env, ERL_NIF_TERM badarg_atom, const sh_nif_walk_ops *ops,
                               void *owner, sh_nif_lock *lock, _Atomic int *busy,
                               int (*begin)(void *owner, void *data), void *data)
{
    (void)env;
    (void)badarg_atom;
    (void)ops;
    (void)owner;
    (void)lock;
    (void)busy;
    (void)begin;
    (void)data;
    UNREACHED();
}

/* ------------------------------------------------- terms from the input */

/* The names read_spec and read_event look for, and a few others. */
static const char *const NAMES[] = {
    "id",   "window_ms", "threshold", "field", "cluster", "fingerprint", "op",       "value",
    "kind", "count",     "status",    "level", "service", "nil",         "true",     "==",
    "!=",   "<",         "<=",        ">",     ">=",      "prefix",      "contains", "error",
};
#define NNAMES (sizeof(NAMES) / sizeof(NAMES[0]))

/* Up to 255 bytes of the input, or a long run (up to 2047) of one byte. */
static sh_slice text_of(fz *in, char *scratch)
{
    unsigned b = fz_byte(in);
    if (b < 240) {
        size_t len = b % 64 < in->n ? b % 64 : in->n;
        sh_slice s = {in->p, len};
        in->p += len;
        in->n -= len;
        return s;
    }
    size_t len = fz_uint(in, 2) % 2048;
    memset(scratch, 'a' + (int)(fz_byte(in) % 26), len);
    return (sh_slice){scratch, len};
}

static ERL_NIF_TERM gen_term(fz *in, int depth);

static ERL_NIF_TERM gen_name(fz *in)
{
    unsigned b = fz_byte(in);
    if (b < 192)
        return enif_make_atom(env0, NAMES[b % NNAMES]);
    if (b < 224)
        return bin_of(NAMES[b % NNAMES], strlen(NAMES[b % NNAMES]));
    char scratch[2048];
    sh_slice s = text_of(in, scratch);
    return b < 240 ? atom_of(s.ptr, s.len > 255 ? 255 : s.len) : bin_of(s.ptr, s.len);
}

static ERL_NIF_TERM gen_number(fz *in)
{
    switch (fz_byte(in) % 6) {
    case 0:
        return int_of(0, fz_byte(in));
    case 1:
        return int_of(1, fz_uint(in, 2));
    case 2:
        return int_of(fz_byte(in) & 1, fz_uint(in, 8));
    case 3: {
        double d;
        uint64_t bits = fz_uint(in, 8);
        memcpy(&d, &bits, sizeof(d));
        return term_new((fz_term){.tag = FT_FLOAT, .f = isfinite(d) ? d : 0.5});
    }
    case 4:
        return term_new((fz_term){.tag = FT_BIG});
    default:
        return int_of(0, (uint64_t)(fz_byte(in) % 4) * 100 + 200 + fz_byte(in) % 8);
    }
}

static ERL_NIF_TERM gen_map(fz *in, int depth)
{
    ERL_NIF_TERM keys[24], vals[24];
    size_t n = fz_byte(in) % 24;
    for (size_t i = 0; i < n; i++) {
        keys[i] = gen_name(in);
        vals[i] = gen_term(in, depth + 1);
    }
    ERL_NIF_TERM m = map_of(keys, vals, n);
    return m != 0 ? m : map_of(keys, vals, 0);
}

static ERL_NIF_TERM gen_term(fz *in, int depth)
{
    unsigned b = fz_byte(in);
    if (depth > 3)
        b %= 3;
    switch (b % 8) {
    case 0:
        return gen_name(in);
    case 1:
    case 2:
        return gen_number(in);
    case 3: {
        char scratch[2048];
        sh_slice s = text_of(in, scratch);
        return bin_of(s.ptr, s.len);
    }
    case 4:
        return gen_map(in, depth);
    case 5:
        return enif_make_list_cell(env0, gen_term(in, depth + 1),
                                   term_new((fz_term){.tag = FT_NIL}));
    case 6:
        return enif_make_tuple(env0, 2, gen_term(in, depth + 1), gen_term(in, depth + 1));
    default:
        return term_new((fz_term){.tag = FT_NIL});
    }
}

/* A spec map: each of read_spec's keys present or not, with a plausible
 * value or any term. */
static ERL_NIF_TERM gen_spec(fz *in)
{
    static const char *const keys[] = {"id",          "window_ms", "threshold", "field",
                                       "fingerprint", "cluster",   "op",        "value"};
    ERL_NIF_TERM ks[12], vs[12];
    unsigned present = (unsigned)fz_uint(in, 2);
    size_t n = 0;
    for (size_t k = 0; k < 8; k++) {
        if (!(present & (1u << k)))
            continue;
        ks[n] = enif_make_atom(env0, keys[k]);
        unsigned how = fz_byte(in);
        if (how >= 200) {
            vs[n++] = gen_term(in, 1);
            continue;
        }
        switch (k) {
        case 0: {
            char id[2] = {(char)('a' + how % 6), '\0'};
            vs[n++] = bin_of(id, 1);
            break;
        }
        case 1:
            vs[n++] = int_of(0, 1 + how * 97);
            break;
        case 2:
            vs[n++] = int_of(0, 1 + how % 8);
            break;
        case 6:
            vs[n++] = enif_make_atom(env0, op_names[how % 8]);
            break;
        default:
            vs[n++] = how % 2 ? gen_name(in) : gen_number(in);
        }
    }
    if (present & (1u << 8)) { /* an extra key */
        ks[n] = gen_name(in);
        vs[n++] = gen_term(in, 1);
    }
    ERL_NIF_TERM m = map_of(ks, vs, n);
    return m != 0 ? m : map_of(ks, vs, 0);
}

/* ---------------------------------------------------------------- checks */

static int within(sh_slice s, size_t lo, size_t hi)
{
    return s.ptr != NULL && s.len >= lo && s.len <= hi;
}

static void add_spec(sh_watch_set *set, ERL_NIF_TERM map, int listed)
{
    sh_watch_spec spec;
    char texts[2][ATOM_TEXT_MAX + 1];
    const char *why = read_spec(env0, map, &spec, texts);
    if (why != NULL) {
        FZ_CHECK(!listed); /* a listed watch reads back */
        FZ_CHECK(*why != '\0');
        return;
    }
    FZ_CHECK(within(spec.id, 1, SH_WATCH_MAX_ID));
    FZ_CHECK(spec.window_ms >= 1 && spec.window_ms <= SH_WATCH_MAX_WINDOW_MS);
    FZ_CHECK(spec.threshold >= 1 && spec.threshold <= SH_WATCH_MAX_THRESHOLD);
    if (spec.kind == SH_WATCH_MATCH_FIELD)
        FZ_CHECK(within(spec.field, 1, SH_WATCH_MAX_FIELD) && (unsigned)spec.op < 8);
    else if (spec.kind == SH_WATCH_MATCH_FINGERPRINT)
        FZ_CHECK(within(spec.fingerprint, 1, SH_WATCH_MAX_VALUE));
    else
        FZ_CHECK(spec.kind == SH_WATCH_MATCH_CLUSTER);
    size_t before = sh_watch_count(set);
    sh_watch_status st;
    why = NULL;
    if (sh_watch_add(set, &spec, &st, &why) == 0) {
        FZ_CHECK(!listed || st == SH_WATCH_UNCHANGED);
        FZ_CHECK(sh_watch_count(set) == before + (st == SH_WATCH_ADDED));
    } else {
        FZ_CHECK(!listed);
        FZ_CHECK(st == SH_WATCH_EINVALID || st == SH_WATCH_EFULL || st == SH_WATCH_ENOMEM);
        FZ_CHECK(why != NULL && sh_watch_count(set) == before);
    }
}

static event_scratch scratch;

static void observe(sh_watch_set *set, fz *in, int64_t now, sh_watch_fired *fired)
{
    ERL_NIF_TERM ev = fz_byte(in) < 8 ? gen_term(in, 0) : gen_map(in, 0);
    long n = read_event(env0, ev, &scratch);
    if (n < 0) {
        FZ_CHECK(!enif_is_map(env0, ev) || n == -2);
        return;
    }
    FZ_CHECK(n <= SH_WATCH_MAX_FIELDS);
    for (long i = 0; i < n; i++) {
        FZ_CHECK(within(scratch.fields[i].key, 1, SH_WATCH_MAX_FIELD));
        FZ_CHECK(scratch.fields[i].value.type != SH_WATCH_NONE);
    }
    sh_watch_event event = {scratch.fields, (size_t)n};
    sh_watch_fired_clear(fired);
    FZ_CHECK(sh_watch_observe(set, &event, now, fired) == 0);
}

/* Every watch, as watch_list_nif lists it, read back as a spec. */
static void list_back(sh_watch_set *set)
{
    if (nterms > MAX_TERMS - 512 || nslots > MAX_SLOTS - 512)
        return; /* no room for the listing's terms (an input's terms filled it) */
    list_acc acc = {env0, term_new((fz_term){.tag = FT_NIL})};
    sh_watch_each(set, watch_term, &acc);
    size_t listed = 0;
    ERL_NIF_TERM head, tail = acc.list;
    while (enif_get_list_cell(env0, tail, &head, &tail)) {
        FZ_CHECK(enif_is_map(env0, head));
        add_spec(set, head, 1);
        listed++;
    }
    FZ_CHECK(listed == sh_watch_count(set));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    watch_init_atoms(env0);
    nfixed = nterms;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in = fz_of(data, size);
    /* a small set, so that its bounds are reached */
    sh_watch_set *set = NULL;
    sh_watch_config cfg = {.max_watches = 1 + fz_byte(&in) % 8};
    cfg.max_slots = 1 + fz_byte(&in) % 32;
    FZ_CHECK(sh_watch_set_new(&set, &cfg) == 0);
    static sh_watch_fired fired;
    int64_t now = 1000;
    /* room left for a listing of a full set (8 watches) */
    while (in.n > 0 && nterms < MAX_TERMS - 512 && nslots < MAX_SLOTS - 512) {
        unsigned op = fz_byte(&in);
        now += fz_byte(&in) * 7;
        switch (op % 5) {
        case 0:
        case 1:
            add_spec(set, op & 0x80 ? gen_term(&in, 0) : gen_spec(&in), 0);
            break;
        case 2:
            observe(set, &in, now, &fired);
            break;
        case 3:
            list_back(set);
            break;
        default: {
            char id[2] = {(char)('a' + fz_byte(&in) % 6), '\0'};
            (void)sh_watch_remove(set, (sh_slice){id, 1});
        }
        }
    }
    list_back(set);
    sh_watch_set_free(set);
    terms_reset();
    return 0;
}
