/*
 * The watch engine driven by a program of any bytes: watches added (valid
 * and invalid specs, ids that repeat), replaced and removed, events of up
 * to 8 fields observed at a clock that moves either way, lookups, listings
 * and walks in steps with changes between the steps, all on a small set so
 * its bounds are hit. After each step the set's own accounts agree.
 */
#include "fuzz.h"
#include "self_heal/watch.h"

static const char *const FIELDS[] = {"status", "level", "service", SH_WATCH_CLUSTER_FIELD,
                                     SH_WATCH_FINGERPRINT_FIELD};
#define NFIELDS (sizeof(FIELDS) / sizeof(FIELDS[0]))

/* A name: one of the usual ones, or up to 255 bytes of the input. */
static sh_slice name(fz *in)
{
    unsigned b = fz_byte(in);
    if (b < 200)
        return (sh_slice){FIELDS[b % NFIELDS], strlen(FIELDS[b % NFIELDS])};
    size_t len = fz_byte(in);
    if (len > in->n)
        len = in->n;
    sh_slice s = {in->p, len};
    in->p += len;
    in->n -= len;
    return s;
}

static sh_watch_value value(fz *in)
{
    switch (fz_byte(in) % 5) {
    case 0:
        return sh_watch_int((int64_t)fz_uint(in, 2) - 1000);
    case 1:
        return sh_watch_uint(fz_uint(in, 8));
    case 2: {
        double d;
        uint64_t bits = fz_uint(in, 8);
        memcpy(&d, &bits, sizeof(d)); /* NaN and infinities too */
        return sh_watch_float(d);
    }
    case 3: {
        sh_slice s = name(in);
        return sh_watch_str(s.ptr, s.len);
    }
    default:
        return sh_watch_int((int64_t)(fz_byte(in) % 4) * 100 + 200);
    }
}

static void add(sh_watch_set *set, fz *in)
{
    char id[2] = {(char)('a' + fz_byte(in) % 6), '\0'};
    sh_watch_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.id = fz_byte(in) < 240 ? (sh_slice){id, 1} : name(in);
    spec.kind = (sh_watch_kind)(fz_byte(in) % 4); /* 3 is no kind */
    spec.field = name(in);
    spec.op = (sh_watch_op)(fz_byte(in) % 9); /* 8 is no operator */
    spec.value = value(in);
    spec.cluster = fz_byte(in) % 4;
    spec.fingerprint = name(in);
    unsigned w = fz_byte(in);
    spec.window_ms = w < 250 ? (int64_t)w * 10 : (int64_t)fz_uint(in, 8);
    spec.threshold = fz_byte(in) < 250 ? 1 + fz_byte(in) % 8 : fz_uint(in, 8);
    size_t before = sh_watch_count(set);
    sh_watch_status st;
    const char *why = NULL;
    if (sh_watch_add(set, &spec, &st, &why) == 0) {
        FZ_CHECK(st == SH_WATCH_ADDED || st == SH_WATCH_REPLACED || st == SH_WATCH_UNCHANGED);
        FZ_CHECK(sh_watch_count(set) == before + (st == SH_WATCH_ADDED));
        sh_watch_info info;
        FZ_CHECK(sh_watch_get(set, spec.id, &info) == 0);
        FZ_CHECK(sh_slice_eq(info.spec->id, spec.id));
    } else {
        FZ_CHECK(st == SH_WATCH_EINVALID || st == SH_WATCH_EFULL || st == SH_WATCH_ENOMEM);
        FZ_CHECK(why != NULL && sh_watch_count(set) == before);
    }
}

static void observe(sh_watch_set *set, fz *in, int64_t now, sh_watch_fired *fired)
{
    sh_watch_field fields[8];
    size_t n = fz_byte(in) % 9;
    for (size_t i = 0; i < n; i++) {
        fields[i].key = name(in);
        fields[i].value = value(in);
    }
    sh_watch_event ev = {fields, n};
    (void)sh_watch_observe_work(set, &ev);
    sh_watch_fired_clear(fired);
    FZ_CHECK(sh_watch_observe(set, &ev, now, fired) == 0);
    for (size_t i = 0; i < fired->len; i++) {
        sh_watch_info info;
        FZ_CHECK(sh_watch_get(set, fired->ids[i], &info) == 0);
        FZ_CHECK(info.has_fired && info.count <= info.spec->threshold);
    }
}

static int visit(void *arg, const sh_watch_info *info)
{
    FZ_CHECK(info->count <= info->spec->threshold);
    ++*(size_t *)arg;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in = fz_of(data, size);
    sh_watch_config cfg = {1 + fz_byte(&in) % 8, 1 + fz_byte(&in) % 32};
    sh_watch_set *set = NULL;
    FZ_CHECK(sh_watch_set_new(&set, &cfg) == 0);
    sh_watch_fired fired;
    sh_watch_fired_init(&fired);
    int64_t now = 1000;
    int walking = 0;
    size_t walked = 0;
    while (in.n > 0) {
        unsigned op = fz_byte(&in);
        unsigned t = fz_byte(&in);
        now += t < 250 ? (int64_t)t * 7 : -(int64_t)fz_uint(&in, 2); /* sometimes back */
        switch (op % 7) {
        case 0:
        case 1:
            add(set, &in);
            break;
        case 2:
        case 3:
            observe(set, &in, now, &fired);
            break;
        case 4: {
            char id[2] = {(char)('a' + fz_byte(&in) % 6), '\0'};
            size_t before = sh_watch_count(set);
            int rc = sh_watch_remove(set, (sh_slice){id, 1});
            FZ_CHECK(sh_watch_count(set) == before - (rc == 0));
            break;
        }
        case 5:
            if (!walking) {
                FZ_CHECK(sh_watch_walk_begin(set) == 0);
                FZ_CHECK(sh_watch_walk_begin(set) == -1);
                walking = 1;
                walked = 0;
            }
            int rc = sh_watch_walk_step(set, 1 + fz_byte(&in) % 3, visit, &walked);
            FZ_CHECK(rc == 0 || rc == 1);
            if (rc == 1) {
                sh_watch_walk_end(set);
                walking = 0;
            }
            break;
        default: {
            size_t listed = 0;
            sh_watch_each(set, visit, &listed);
            sh_watch_stats st;
            sh_watch_stats_get(set, &st);
            FZ_CHECK(listed == sh_watch_count(set) && st.watches == listed);
            FZ_CHECK(st.watches <= cfg.max_watches && st.slots <= cfg.max_slots);
        }
        }
    }
    if (walking)
        sh_watch_walk_end(set);
    sh_watch_fired_free(&fired);
    sh_watch_set_free(set);
    return 0;
}
