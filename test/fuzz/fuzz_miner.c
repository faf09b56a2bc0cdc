/*
 * The template miner on a stream of lines, as the collector and the NIF
 * feed it: one miner takes every line of the input (plainly or prepared
 * and within a budget), and between lines it is snapshotted and restored,
 * walked, snapshotted in steps while lines keep coming, and listed.
 *
 * Input: 4 bytes of settings, then lines separated by '\n'. Settings: the
 * cluster bound (small, so eviction happens), the token and byte limits of
 * a line, how often the miner is snapshotted or walked, and a flag that
 * makes the rest of the input a snapshot to restore instead.
 */
#include "fuzz.h"
#include "self_heal/miner.h"

typedef struct seen {
    size_t clusters;
    size_t max_tokens;
} seen;

/* Every template is valid UTF-8 (a normalised line's tokens) and its
 * parameters are token positions, increasing. */
static int check_cluster(void *arg, uint64_t id, uint64_t count, sh_slice text,
                         const uint32_t *params, size_t nparams)
{
    seen *s = arg;
    FZ_CHECK(id != 0 && count >= 1);
    FZ_CHECK(fz_utf8_ok(text.ptr, text.len));
    FZ_CHECK(nparams <= s->max_tokens);
    for (size_t i = 1; i < nparams; i++)
        FZ_CHECK(params[i] > params[i - 1]);
    s->clusters++;
    return 0;
}

static void check_all(sh_miner *m, const sh_miner_config *cfg)
{
    seen s = {0, cfg->max_tokens};
    sh_miner_each(m, check_cluster, &s);
    sh_miner_stats st;
    sh_miner_stats_get(m, &st);
    FZ_CHECK(st.clusters == s.clusters && st.clusters <= cfg->max_clusters);
}

/* A snapshot restores into a miner whose own snapshot is the same bytes. */
static sh_miner *round_trip(sh_miner *m, const sh_miner_config *cfg)
{
    sh_buf a, b;
    sh_buf_init(&a);
    sh_buf_init(&b);
    FZ_CHECK(sh_miner_snapshot(m, &a) == 0);
    sh_miner *r = NULL;
    const char *why = NULL;
    if (sh_miner_restore(&r, &why, a.data, a.len, cfg) != 0)
        fprintf(stderr, "restore: %s\n", why);
    FZ_CHECK(r != NULL);
    FZ_CHECK(sh_miner_snapshot(r, &b) == 0);
    FZ_CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    sh_buf_free(&a);
    sh_buf_free(&b);
    sh_miner_free(m);
    return r;
}

static void add_next(sh_miner *m, sh_miner_line *prepared, fz *in, unsigned *nth)
{
    sh_slice line = fz_piece(in, '\n');
    uint64_t id = 0;
    if (++*nth % 3 == 0) {
        /* prepared, within a budget that some lines exceed */
        FZ_CHECK(sh_miner_prepare(m, prepared, line.ptr, line.len) == 0);
        int rc = sh_miner_add_line(m, prepared, line.len * 4, &id);
        FZ_CHECK(rc == 0 || rc == 1);
        FZ_CHECK(rc == 1 || id != 0);
    } else {
        FZ_CHECK(sh_miner_add(m, &id, line.ptr, line.len) == 0 && id != 0);
    }
    if (id != 0)
        FZ_CHECK(sh_miner_resolve(m, id) != 0);
}

static int count_cluster(void *arg, uint64_t id, uint64_t count, sh_slice text,
                         const uint32_t *params, size_t nparams)
{
    (void)id;
    (void)count;
    (void)text;
    (void)params;
    (void)nparams;
    ++*(size_t *)arg;
    return 0;
}

/* A walk in steps with lines added between them: ends, visits at most
 * the clusters there were. */
static void walk_while_adding(sh_miner *m, sh_miner_line *prepared, fz *in, unsigned *nth)
{
    sh_miner_stats st;
    sh_miner_stats_get(m, &st);
    size_t visited = 0;
    FZ_CHECK(sh_miner_walk_begin(m) == 0);
    int rc;
    while ((rc = sh_miner_walk_step(m, 2, count_cluster, &visited)) == 0 && in->n > 0)
        add_next(m, prepared, in, nth);
    sh_miner_walk_end(m);
    FZ_CHECK(rc >= 0 && visited <= st.clusters);
}

/* A snapshot in steps with lines added between them, then sealed: what
 * it wrote restores. */
static void snapshot_while_adding(sh_miner *m, sh_miner_line *prepared, fz *in, unsigned *nth,
                                  const sh_miner_config *cfg)
{
    sh_buf snap;
    sh_buf_init(&snap);
    FZ_CHECK(sh_miner_snapshot_begin(m, &snap) == 0);
    int rc;
    while ((rc = sh_miner_snapshot_step(m, &snap, 64)) == 0)
        if (in->n > 0)
            add_next(m, prepared, in, nth);
    FZ_CHECK(rc == 1);
    /* the checksum, in small parts, with lines still coming */
    sh_miner_seal seal = {0, 0, 0};
    while ((rc = sh_miner_snapshot_seal(&snap, 0, &seal, 97)) == 0)
        if (in->n > 0)
            add_next(m, prepared, in, nth);
    FZ_CHECK(rc == 1);
    sh_miner *r = NULL;
    const char *why = NULL;
    if (sh_miner_restore(&r, &why, snap.data, snap.len, cfg) != 0)
        fprintf(stderr, "restore: %s\n", why);
    FZ_CHECK(r != NULL);
    check_all(r, cfg);
    sh_miner_free(r);
    sh_buf_free(&snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in = fz_of(data, size);
    unsigned b0 = fz_byte(&in), b1 = fz_byte(&in), b2 = fz_byte(&in), every = fz_byte(&in);
    /* few siblings, so that sibling merges happen often */
    sh_miner_config cfg = {.max_clusters = 1 + (b0 & 31),
                           .max_tokens = 1 + b1 % 64,
                           .max_line = 8 + (size_t)b2 * 4,
                           .siblings = 2 + (b1 >> 6)};
    sh_miner *m = NULL;
    if (b0 & 0x80) {
        /* the rest is a snapshot: refused with a reason, or a usable miner */
        const char *why = NULL;
        if (sh_miner_restore(&m, &why, in.p, in.n, &cfg) != 0) {
            FZ_CHECK(why != NULL && m == NULL);
            return 0;
        }
        check_all(m, &cfg);
        uint64_t id;
        FZ_CHECK(sh_miner_add(m, &id, "Invalid user root from 1.2.3.4", 30) == 0);
        m = round_trip(m, &cfg);
        sh_miner_free(m);
        return 0;
    }
    FZ_CHECK(sh_miner_new(&m, &cfg) == 0);
    sh_miner_line *prepared = NULL;
    FZ_CHECK(sh_miner_line_new(&prepared) == 0);
    every = 1 + every % 16;
    unsigned nth = 0;
    for (unsigned k = 1; in.n > 0; k++) {
        add_next(m, prepared, &in, &nth);
        if (k % every != 0)
            continue;
        switch ((k / every) % 4) {
        case 0:
            m = round_trip(m, &cfg);
            break;
        case 1:
            walk_while_adding(m, prepared, &in, &nth);
            break;
        case 2:
            snapshot_while_adding(m, prepared, &in, &nth, &cfg);
            break;
        default:
            check_all(m, &cfg);
        }
    }
    check_all(m, &cfg);
    m = round_trip(m, &cfg);
    sh_miner_line_free(prepared);
    sh_miner_free(m);
    return 0;
}
