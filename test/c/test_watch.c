/* Watch engine: sliding windows, firing and re-arming, ops, bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "self_heal/watch.h"

static sh_slice S(const char *s)
{
    sh_slice out = {s, strlen(s)};
    return out;
}

static sh_watch_set *new_set(size_t max_watches, size_t max_slots)
{
    sh_watch_config cfg = {max_watches, max_slots};
    sh_watch_set *set;
    assert_int_equal(sh_watch_set_new(&set, &cfg), 0);
    return set;
}

static sh_watch_spec field_spec(const char *id, const char *field, sh_watch_op op,
                                sh_watch_value value, int64_t window_ms, uint64_t threshold)
{
    sh_watch_spec s;
    memset(&s, 0, sizeof(s));
    s.id = S(id);
    s.kind = SH_WATCH_MATCH_FIELD;
    s.field = S(field);
    s.op = op;
    s.value = value;
    s.window_ms = window_ms;
    s.threshold = threshold;
    return s;
}

static sh_watch_status add(sh_watch_set *set, sh_watch_spec spec)
{
    sh_watch_status st;
    const char *why = NULL;
    int rc = sh_watch_add(set, &spec, &st, &why);
    if (rc == 0)
        assert_true(st == SH_WATCH_ADDED || st == SH_WATCH_REPLACED || st == SH_WATCH_UNCHANGED);
    else
        assert_non_null(why);
    return st;
}

/* a watch "id": field >= 1 (numbers), window and threshold as given */
static void add_hits(sh_watch_set *set, const char *id, int64_t window_ms, uint64_t threshold)
{
    assert_int_equal(
        add(set, field_spec(id, "hit", SH_WATCH_GE, sh_watch_int(1), window_ms, threshold)),
        SH_WATCH_ADDED);
}

/* observes one event of one field; returns how many watches fired */
static size_t observe1(sh_watch_set *set, const char *key, sh_watch_value v, int64_t now)
{
    sh_watch_field f = {S(key), v};
    sh_watch_event e = {&f, 1};
    sh_watch_fired fired;
    sh_watch_fired_init(&fired);
    assert_int_equal(sh_watch_observe(set, &e, now, &fired), 0);
    size_t n = fired.len;
    sh_watch_fired_free(&fired);
    return n;
}

static size_t hit(sh_watch_set *set, int64_t now)
{
    return observe1(set, "hit", sh_watch_int(1), now);
}

static sh_watch_info info(sh_watch_set *set, const char *id)
{
    sh_watch_info i;
    assert_int_equal(sh_watch_get(set, S(id), &i), 0);
    return i;
}

/* does the one-field event match the one watch of a fresh set? */
static int matches(sh_watch_spec spec, const char *key, sh_watch_value v)
{
    sh_watch_set *set = new_set(0, 0);
    spec.window_ms = 1000;
    spec.threshold = 1;
    assert_int_equal(add(set, spec), SH_WATCH_ADDED);
    size_t n = observe1(set, key, v, 0);
    sh_watch_set_free(set);
    return (int)n;
}

/* ------------------------------------------------------------ windows */

static void test_window_boundaries_are_exact(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    add_hits(set, "w", 1000, 3);
    /* an event at s counts at t while t - s < 1000 */
    assert_int_equal(hit(set, 0), 0);
    assert_int_equal(hit(set, 500), 0);
    assert_int_equal(hit(set, 999), 1); /* 0, 500, 999 */
    assert_int_equal(info(set, "w").count, 3);
    sh_watch_set_free(set);

    set = new_set(0, 0);
    add_hits(set, "w", 1000, 3);
    assert_int_equal(hit(set, 0), 0);
    assert_int_equal(hit(set, 500), 0);
    assert_int_equal(hit(set, 1000), 0); /* 0 left the window at 1000 */
    assert_int_equal(info(set, "w").count, 2);
    assert_int_equal(hit(set, 1499), 1); /* 500, 1000, 1499 */
    sh_watch_set_free(set);
}

/* reference model: every timestamp kept, the rules of watch.h applied */
typedef struct model {
    int64_t *ts;
    size_t n;
    int armed, has_fired;
    int64_t last_fired;
    uint64_t fired;
} model;

static uint64_t model_count(const model *m, int64_t now, int64_t window)
{
    uint64_t c = 0;
    for (size_t i = 0; i < m->n; i++)
        if (now - m->ts[i] < window)
            c++;
    return c;
}

static int model_hit(model *m, int64_t now, int64_t window, uint64_t threshold)
{
    if (model_count(m, now, window) < threshold)
        m->armed = 1;
    m->ts[m->n++] = now;
    if (m->armed && model_count(m, now, window) >= threshold &&
        (!m->has_fired || now - m->last_fired >= window)) {
        m->armed = 0;
        m->has_fired = 1;
        m->last_fired = now;
        m->fired++;
        return 1;
    }
    return 0;
}

static void test_sliding_window_matches_a_brute_force_model(void **state)
{
    (void)state;
    const int64_t windows[] = {1, 7, 100, 1000};
    const uint64_t thresholds[] = {1, 2, 5, 17};
    uint32_t x = 12345;
    for (size_t wi = 0; wi < 4; wi++) {
        for (size_t ti = 0; ti < 4; ti++) {
            int64_t window = windows[wi];
            uint64_t threshold = thresholds[ti];
            sh_watch_set *set = new_set(0, 0);
            add_hits(set, "w", window, threshold);
            model m = {calloc(4000, sizeof(int64_t)), 0, 1, 0, 0, 0};
            int64_t now = -5000; /* negative clocks are fine (monotonic time) */
            for (int k = 0; k < 4000; k++) {
                x = x * 1664525u + 1013904223u;
                /* bursts and gaps at the window's scale */
                uint32_t r = x >> 24;
                now += r < 128 ? 0 : (r < 220 ? (int64_t)(r % 5) : window * (int64_t)(r % 4));
                assert_int_equal(hit(set, now), model_hit(&m, now, window, threshold));
                sh_watch_info i = info(set, "w");
                uint64_t c = model_count(&m, now, window);
                assert_int_equal(i.count, c < threshold ? c : threshold);
                assert_int_equal(i.fired, m.fired);
            }
            free(m.ts);
            sh_watch_set_free(set);
        }
    }
}

/* ------------------------------------------------------------- firing */

static void test_fires_once_then_rearms_below_threshold(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    add_hits(set, "w", 100, 3);
    assert_int_equal(hit(set, 0), 0);
    assert_int_equal(hit(set, 1), 0);
    assert_int_equal(hit(set, 2), 1);
    assert_false(info(set, "w").armed);
    /* a sustained storm keeps the count at the threshold: no second fire,
     * not even after a window */
    for (int64_t t = 3; t < 1000; t++)
        assert_int_equal(hit(set, t), 0);
    assert_int_equal(info(set, "w").fired, 1);
    /* quiet: the count drops below, the watch re-arms, a new burst fires */
    assert_int_equal(hit(set, 5000), 0);
    assert_true(info(set, "w").armed);
    assert_int_equal(hit(set, 5001), 0);
    assert_int_equal(hit(set, 5002), 1);
    sh_watch_info i = info(set, "w");
    assert_int_equal(i.fired, 2);
    assert_true(i.has_fired);
    assert_int_equal(i.last_fired_ms, 5002);
    assert_int_equal(i.matched, 1000 + 3);
    sh_watch_set_free(set);
}

static void test_at_most_once_per_window(void **state)
{
    (void)state;
    /* an event rate right at the threshold dips below and back on every
     * event; it still fires only once per window */
    sh_watch_set *set = new_set(0, 0);
    add_hits(set, "w", 100, 2);
    size_t fires = 0;
    for (int64_t t = 0; t <= 1000; t += 50)
        fires += hit(set, t);
    /* fires at 50 (0, 50), then the dips at 100, 150, ... re-arm it; the
     * hold-off lets it fire at 150, 250, ..., 950: one per 100 ms */
    assert_int_equal(fires, 10);
    sh_watch_set_free(set);

    /* threshold 1: every matching event reaches it, once per window */
    set = new_set(0, 0);
    add_hits(set, "one", 10, 1);
    assert_int_equal(hit(set, 0), 1);
    assert_int_equal(hit(set, 5), 0);
    assert_int_equal(hit(set, 9), 0);
    assert_int_equal(hit(set, 19), 1);
    assert_int_equal(hit(set, 20), 0);
    sh_watch_set_free(set);
}

static void test_fires_once_per_event_and_reports_ids(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    add_hits(set, "a", 100, 1);
    add_hits(set, "b", 100, 2);
    assert_int_equal(add(set, field_spec("c", "status", SH_WATCH_GE, sh_watch_int(500), 100, 1)),
                     SH_WATCH_ADDED);
    /* "hit" twice in one event counts once */
    sh_watch_field fields[] = {{S("hit"), sh_watch_int(1)},
                               {S("hit"), sh_watch_int(2)},
                               {S("status"), sh_watch_int(503)},
                               {S("other"), sh_watch_str("x", 1)}};
    sh_watch_event e = {fields, 4};
    sh_watch_fired fired;
    sh_watch_fired_init(&fired);
    assert_int_equal(sh_watch_observe(set, &e, 0, &fired), 0);
    assert_int_equal(fired.len, 2);
    assert_true(sh_slice_eq_cstr(fired.ids[0], "a"));
    assert_true(sh_slice_eq_cstr(fired.ids[1], "c"));
    assert_int_equal(info(set, "b").count, 1);
    /* fired_out is appended to, not cleared */
    assert_int_equal(sh_watch_observe(set, &e, 1, &fired), 0);
    assert_int_equal(fired.len, 3);
    assert_true(sh_slice_eq_cstr(fired.ids[2], "b"));
    sh_watch_fired_clear(&fired);
    assert_int_equal(fired.len, 0);
    sh_watch_fired_free(&fired);
    sh_watch_stats st;
    sh_watch_stats_get(set, &st);
    assert_int_equal(st.events, 2);
    assert_int_equal(st.fired, 3);
    assert_int_equal(st.watches, 3);
    assert_int_equal(st.slots, 4);
    assert_true(st.has_clock);
    assert_int_equal(st.clock_ms, 1);
    sh_watch_set_free(set);
}

static void test_expiry_is_quiet(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    add_hits(set, "w", 100, 3);
    assert_int_equal(hit(set, 0), 0);
    assert_int_equal(hit(set, 1), 0);
    assert_int_equal(hit(set, 2), 1);
    /* the window passes; other events report nothing */
    assert_int_equal(observe1(set, "other", sh_watch_int(1), 1000), 0);
    assert_int_equal(observe1(set, "hit", sh_watch_int(0), 2000), 0); /* no match */
    sh_watch_info i = info(set, "w");
    assert_int_equal(i.count, 0);
    assert_true(i.armed);
    assert_int_equal(i.fired, 1);
    assert_int_equal(i.matched, 3);
    sh_watch_set_free(set);
}

static void test_time_never_runs_backwards(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    add_hits(set, "w", 100, 3);
    assert_int_equal(hit(set, 1000), 0);
    assert_int_equal(hit(set, 10), 0); /* counted at 1000 */
    assert_int_equal(hit(set, -5), 1);
    assert_int_equal(info(set, "w").last_fired_ms, 1000);
    assert_int_equal(info(set, "w").count, 3);
    /* the extremes of the clock */
    sh_watch_set_free(set);
    set = new_set(0, 0);
    add_hits(set, "w", SH_WATCH_MAX_WINDOW_MS, 2);
    assert_int_equal(hit(set, INT64_MIN), 0);
    assert_int_equal(hit(set, INT64_MAX), 0); /* INT64_MIN left long ago */
    assert_int_equal(info(set, "w").count, 1);
    assert_int_equal(hit(set, INT64_MAX), 1);
    sh_watch_set_free(set);
}

/* ------------------------------------------------------- add / remove */

static int collect_ids(void *arg, const sh_watch_info *i)
{
    char *out = arg;
    strncat(out, i->spec->id.ptr, i->spec->id.len);
    strcat(out, ",");
    return 0;
}

static int stop_at_first(void *arg, const sh_watch_info *i)
{
    (void)i;
    (*(int *)arg)++;
    return 1;
}

static void test_add_and_remove_at_run_time(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    add_hits(set, "a", 1000, 2);
    add_hits(set, "b", 1000, 2);
    add_hits(set, "c", 1000, 2);
    assert_int_equal(sh_watch_count(set), 3);
    assert_int_equal(hit(set, 0), 0);

    /* the same spec again: unchanged, counts kept */
    assert_int_equal(add(set, field_spec("b", "hit", SH_WATCH_GE, sh_watch_int(1), 1000, 2)),
                     SH_WATCH_UNCHANGED);
    assert_int_equal(info(set, "b").count, 1);
    /* an equal UINT is the same spec */
    assert_int_equal(add(set, field_spec("b", "hit", SH_WATCH_GE, sh_watch_uint(1), 1000, 2)),
                     SH_WATCH_UNCHANGED);
    /* another spec: replaced, counts start over, place kept */
    assert_int_equal(add(set, field_spec("b", "hit", SH_WATCH_GE, sh_watch_int(1), 1000, 3)),
                     SH_WATCH_REPLACED);
    assert_int_equal(info(set, "b").count, 0);
    assert_int_equal(info(set, "b").spec->threshold, 3);
    char ids[64] = "";
    sh_watch_each(set, collect_ids, ids);
    assert_string_equal(ids, "a,b,c,");
    int visits = 0;
    sh_watch_each(set, stop_at_first, &visits);
    assert_int_equal(visits, 1);

    /* removed watches count no more; others go on */
    assert_int_equal(sh_watch_remove(set, S("a")), 0);
    assert_int_equal(sh_watch_remove(set, S("a")), -1);
    assert_int_equal(sh_watch_remove(set, S("nope")), -1);
    assert_int_equal(sh_watch_get(set, S("a"), &(sh_watch_info){0}), -1);
    assert_int_equal(hit(set, 1), 1); /* c: 0 and 1 */
    assert_int_equal(sh_watch_count(set), 2);

    /* added back: a fresh watch at the end */
    add_hits(set, "a", 1000, 1);
    ids[0] = '\0';
    sh_watch_each(set, collect_ids, ids);
    assert_string_equal(ids, "b,c,a,");
    /* a fires; b (threshold 3 now) counts 1 and 2; c stays at its threshold */
    assert_int_equal(hit(set, 2), 1);
    assert_int_equal(info(set, "b").count, 2);
    assert_false(info(set, "c").armed);

    /* remove everything, then many adds and removes through table growth */
    assert_int_equal(sh_watch_remove(set, S("a")), 0);
    assert_int_equal(sh_watch_remove(set, S("b")), 0);
    assert_int_equal(sh_watch_remove(set, S("c")), 0);
    assert_int_equal(sh_watch_count(set), 0);
    char id[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof(id), "w%d", i);
        add_hits(set, id, 1000, 1);
    }
    for (int i = 0; i < 2000; i += 2) {
        snprintf(id, sizeof(id), "w%d", i);
        assert_int_equal(sh_watch_remove(set, S(id)), 0);
    }
    assert_int_equal(hit(set, 10), 1000);
    sh_watch_stats st;
    sh_watch_stats_get(set, &st);
    assert_int_equal(st.watches, 1000);
    assert_int_equal(st.slots, 1000);
    sh_watch_set_free(set);
}

/* ---------------------------------------------------------------- ops */

static void test_numeric_ops(void **state)
{
    (void)state;
    struct {
        sh_watch_op op;
        int lt, eq, gt; /* expected for a value below, equal, above */
    } ops[] = {
        {SH_WATCH_EQ, 0, 1, 0}, {SH_WATCH_NE, 1, 0, 1}, {SH_WATCH_LT, 1, 0, 0},
        {SH_WATCH_LE, 1, 1, 0}, {SH_WATCH_GT, 0, 0, 1}, {SH_WATCH_GE, 0, 1, 1},
    };
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        sh_watch_spec s = field_spec("n", "status", ops[i].op, sh_watch_int(500), 0, 0);
        assert_int_equal(matches(s, "status", sh_watch_int(499)), ops[i].lt);
        assert_int_equal(matches(s, "status", sh_watch_int(500)), ops[i].eq);
        assert_int_equal(matches(s, "status", sh_watch_int(501)), ops[i].gt);
        /* numbers compare by value, whatever their type */
        assert_int_equal(matches(s, "status", sh_watch_float(499.5)), ops[i].lt);
        assert_int_equal(matches(s, "status", sh_watch_float(500.0)), ops[i].eq);
        assert_int_equal(matches(s, "status", sh_watch_uint(500)), ops[i].eq);
        assert_int_equal(matches(s, "status", sh_watch_float(500.25)), ops[i].gt);
        /* a float watch value */
        s.value = sh_watch_float(0.5);
        assert_int_equal(matches(s, "status", sh_watch_int(0)), ops[i].lt);
        assert_int_equal(matches(s, "status", sh_watch_float(0.5)), ops[i].eq);
        assert_int_equal(matches(s, "status", sh_watch_int(1)), ops[i].gt);
        /* a string, or another field, is not a number: only != holds, and
         * only for a field that is there */
        assert_int_equal(matches(s, "status", sh_watch_str("500", 3)), ops[i].op == SH_WATCH_NE);
        assert_int_equal(matches(s, "code", sh_watch_int(500)), 0);
        assert_int_equal(matches(s, "status", (sh_watch_value){0}), 0);
    }
}

static void test_numeric_extremes_are_exact(void **state)
{
    (void)state;
    /* 2^53 + 1 is no double: it must not equal 2^53 as a float */
    sh_watch_spec s = field_spec("n", "x", SH_WATCH_EQ, sh_watch_int(9007199254740993LL), 0, 0);
    assert_int_equal(matches(s, "x", sh_watch_float(9007199254740992.0)), 0);
    assert_int_equal(matches(s, "x", sh_watch_int(9007199254740993LL)), 1);
    s.op = SH_WATCH_GT;
    assert_int_equal(matches(s, "x", sh_watch_float(9007199254740994.0)), 1);
    s.value = sh_watch_float(9007199254740992.0);
    assert_int_equal(matches(s, "x", sh_watch_int(9007199254740993LL)), 1);

    /* uint64 beyond int64 */
    s = field_spec("n", "x", SH_WATCH_GT, sh_watch_int(INT64_MAX), 0, 0);
    assert_int_equal(matches(s, "x", sh_watch_uint(UINT64_MAX)), 1);
    assert_int_equal(matches(s, "x", sh_watch_uint((uint64_t)INT64_MAX)), 0);
    s = field_spec("n", "x", SH_WATCH_LT, sh_watch_uint(UINT64_MAX), 0, 0);
    assert_int_equal(matches(s, "x", sh_watch_int(INT64_MIN)), 1);
    assert_int_equal(matches(s, "x", sh_watch_uint(UINT64_MAX - 1)), 1);
    assert_int_equal(matches(s, "x", sh_watch_float(18446744073709551616.0)), 0);
    assert_int_equal(matches(s, "x", sh_watch_float(-1e300)), 1);
    s.op = SH_WATCH_EQ;
    assert_int_equal(matches(s, "x", sh_watch_uint(UINT64_MAX)), 1);
    assert_int_equal(matches(s, "x", sh_watch_float(18446744073709551615.0)), 0); /* = 2^64 */
    s = field_spec("n", "x", SH_WATCH_GT, sh_watch_float(-0.5), 0, 0);
    assert_int_equal(matches(s, "x", sh_watch_int(0)), 1);
    assert_int_equal(matches(s, "x", sh_watch_int(-1)), 0);
    assert_int_equal(matches(s, "x", sh_watch_uint(0)), 1);
    s = field_spec("n", "x", SH_WATCH_LT, sh_watch_float(-9223372036854775808.0), 0, 0);
    assert_int_equal(matches(s, "x", sh_watch_int(INT64_MIN)), 0);
    s.op = SH_WATCH_LE;
    assert_int_equal(matches(s, "x", sh_watch_int(INT64_MIN)), 1);
    /* infinities are values; NaN in an event matches only != */
    s = field_spec("n", "x", SH_WATCH_LT, sh_watch_float(INFINITY), 0, 0);
    assert_int_equal(matches(s, "x", sh_watch_uint(UINT64_MAX)), 1);
    double nan = NAN;
    assert_int_equal(matches(s, "x", sh_watch_float(nan)), 0);
    s.op = SH_WATCH_NE;
    assert_int_equal(matches(s, "x", sh_watch_float(nan)), 1);
    s.op = SH_WATCH_GE;
    assert_int_equal(matches(s, "x", sh_watch_float(nan)), 0);
}

static void test_string_ops(void **state)
{
    (void)state;
    sh_watch_spec s = field_spec("s", "level", SH_WATCH_EQ, sh_watch_str("error", 5), 0, 0);
    assert_int_equal(matches(s, "level", sh_watch_str("error", 5)), 1);
    assert_int_equal(matches(s, "level", sh_watch_str("errors", 6)), 0);
    assert_int_equal(matches(s, "level", sh_watch_str("Error", 5)), 0);
    assert_int_equal(matches(s, "level", sh_watch_int(5)), 0);
    s.op = SH_WATCH_NE;
    assert_int_equal(matches(s, "level", sh_watch_str("error", 5)), 0);
    assert_int_equal(matches(s, "level", sh_watch_str("warn", 4)), 1);
    assert_int_equal(matches(s, "level", sh_watch_int(5)), 1);        /* another type */
    assert_int_equal(matches(s, "service", sh_watch_str("x", 1)), 0); /* absent */

    s = field_spec("s", "path", SH_WATCH_PREFIX, sh_watch_str("/api/", 5), 0, 0);
    assert_int_equal(matches(s, "path", sh_watch_str("/api/users", 10)), 1);
    assert_int_equal(matches(s, "path", sh_watch_str("/api/", 5)), 1);
    assert_int_equal(matches(s, "path", sh_watch_str("/api", 4)), 0);
    assert_int_equal(matches(s, "path", sh_watch_str("/web/api/", 9)), 0);
    assert_int_equal(matches(s, "path", sh_watch_int(1)), 0);

    const char *contains[][2] = {
        {"timeout", "request failed: timeout"},
        {"aab", "aaab"},
        {"abab", "abaabab"},
        {"aaaa", "aaaa"},
        {"a\0b", "x\0a\0b"},
    };
    size_t lens[][2] = {{7, 23}, {3, 4}, {4, 7}, {4, 4}, {3, 5}};
    for (size_t i = 0; i < 5; i++) {
        s = field_spec("s", "message", SH_WATCH_CONTAINS, sh_watch_str(contains[i][0], lens[i][0]),
                       0, 0);
        assert_int_equal(matches(s, "message", sh_watch_str(contains[i][1], lens[i][1])), 1);
        assert_int_equal(matches(s, "message", sh_watch_str(contains[i][1], lens[i][1] - 1)), 0);
    }
    s = field_spec("s", "message", SH_WATCH_CONTAINS, sh_watch_str("abc", 3), 0, 0);
    assert_int_equal(matches(s, "message", sh_watch_str("ababab", 6)), 0);
    assert_int_equal(matches(s, "message", sh_watch_str("", 0)), 0);
    /* the empty string is a prefix and a part of every string */
    s.value = sh_watch_str("", 0);
    assert_int_equal(matches(s, "message", sh_watch_str("", 0)), 1);
    s.op = SH_WATCH_PREFIX;
    assert_int_equal(matches(s, "message", sh_watch_str("x", 1)), 1);
}

static void test_cluster_and_fingerprint(void **state)
{
    (void)state;
    sh_watch_spec s;
    memset(&s, 0, sizeof(s));
    s.id = S("c");
    s.kind = SH_WATCH_MATCH_CLUSTER;
    s.cluster = UINT64_MAX - 7; /* miner ids use all 64 bits */
    assert_int_equal(matches(s, "cluster", sh_watch_uint(UINT64_MAX - 7)), 1);
    assert_int_equal(matches(s, "cluster", sh_watch_uint(UINT64_MAX - 6)), 0);
    assert_int_equal(matches(s, "cluster_id", sh_watch_uint(UINT64_MAX - 7)), 0);
    assert_int_equal(matches(s, "cluster", sh_watch_str("18446744073709551608", 20)), 0);
    s.cluster = 42;
    assert_int_equal(matches(s, "cluster", sh_watch_int(42)), 1);
    assert_int_equal(matches(s, "cluster", sh_watch_uint(42)), 1);
    assert_int_equal(matches(s, "cluster", sh_watch_float(42.0)), 0); /* ids are integers */
    assert_int_equal(matches(s, "cluster", sh_watch_int(-42)), 0);

    memset(&s, 0, sizeof(s));
    s.id = S("f");
    s.kind = SH_WATCH_MATCH_FINGERPRINT;
    s.fingerprint = S("9b63a8f6");
    assert_int_equal(matches(s, "fingerprint", sh_watch_str("9b63a8f6", 8)), 1);
    assert_int_equal(matches(s, "fingerprint", sh_watch_str("9b63a8f", 7)), 0);
    assert_int_equal(matches(s, "fingerprint", sh_watch_str("9B63A8F6", 8)), 0);
    assert_int_equal(matches(s, "message", sh_watch_str("9b63a8f6", 8)), 0);

    /* many watches on one cluster id and others around it */
    sh_watch_set *set = new_set(0, 0);
    char id[32];
    for (uint64_t i = 0; i < 300; i++) {
        memset(&s, 0, sizeof(s));
        snprintf(id, sizeof(id), "c%u", (unsigned)i);
        s.id = S(id);
        s.kind = SH_WATCH_MATCH_CLUSTER;
        s.cluster = i % 100;
        s.window_ms = 1000;
        s.threshold = 2;
        assert_int_equal(add(set, s), SH_WATCH_ADDED);
    }
    assert_int_equal(observe1(set, "cluster", sh_watch_int(7), 0), 0);
    assert_int_equal(observe1(set, "cluster", sh_watch_int(7), 1), 3);
    assert_int_equal(info(set, "c107").count, 2);
    assert_int_equal(info(set, "c108").count, 0);
    sh_watch_set_free(set);
}

/* ------------------------------------------------------------- bounds */

static void test_bounds(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(3, 10);
    add_hits(set, "a", 1000, 4);
    add_hits(set, "b", 1000, 4);
    /* max_slots: 4 + 4 + 3 > 10 */
    sh_watch_spec s = field_spec("c", "hit", SH_WATCH_GE, sh_watch_int(1), 1000, 3);
    sh_watch_status st;
    const char *why = NULL;
    assert_int_equal(sh_watch_add(set, &s, &st, &why), -1);
    assert_int_equal(st, SH_WATCH_EFULL);
    assert_non_null(why);
    s.threshold = 2;
    assert_int_equal(add(set, s), SH_WATCH_ADDED);
    /* max_watches */
    s.id = S("d");
    s.threshold = 1;
    assert_int_equal(sh_watch_add(set, &s, &st, NULL), -1);
    assert_int_equal(st, SH_WATCH_EFULL);
    /* a replacement needs no new place, only slots: 10 - 4 + 3 */
    s.id = S("a");
    s.threshold = 3;
    assert_int_equal(sh_watch_add(set, &s, &st, NULL), 0);
    assert_int_equal(st, SH_WATCH_REPLACED);
    s.threshold = 5; /* 9 - 3 + 5 > 10 */
    assert_int_equal(sh_watch_add(set, &s, &st, NULL), -1);
    assert_int_equal(st, SH_WATCH_EFULL);
    assert_int_equal(info(set, "a").spec->threshold, 3); /* as it was */
    assert_int_equal(sh_watch_remove(set, S("b")), 0);
    s.id = S("d");
    s.threshold = 2;
    assert_int_equal(add(set, s), SH_WATCH_ADDED);
    sh_watch_set_free(set);

    /* configuration limits */
    sh_watch_config cfg = {SH_WATCH_MAX_WATCHES_LIMIT + 1, 0};
    assert_int_equal(sh_watch_set_new(&set, &cfg), -1);
    assert_null(set);
    cfg.max_watches = 0;
    cfg.max_slots = (size_t)SH_WATCH_MAX_SLOTS_LIMIT + 1;
    assert_int_equal(sh_watch_set_new(&set, &cfg), -1);
    assert_int_equal(sh_watch_set_new(&set, NULL), 0);
    sh_watch_set_free(set);
    sh_watch_set_free(NULL);
    sh_watch_fired_free(NULL);
}

static void test_invalid_specs(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    char big[SH_WATCH_MAX_VALUE + 2];
    memset(big, 'x', sizeof(big));
    sh_watch_spec ok = field_spec("ok", "status", SH_WATCH_GE, sh_watch_int(500), 60000, 50);
    sh_watch_spec bad[16];
    size_t n = 0;
    bad[n] = ok, bad[n++].id = (sh_slice){"", 0};
    bad[n] = ok, bad[n++].id = (sh_slice){big, SH_WATCH_MAX_ID + 1};
    bad[n] = ok, bad[n++].id = (sh_slice){NULL, 3};
    bad[n] = ok, bad[n++].field = (sh_slice){"", 0};
    bad[n] = ok, bad[n++].field = (sh_slice){big, SH_WATCH_MAX_FIELD + 1};
    bad[n] = ok, bad[n++].window_ms = 0;
    bad[n] = ok, bad[n++].window_ms = SH_WATCH_MAX_WINDOW_MS + 1;
    bad[n] = ok, bad[n++].threshold = 0;
    bad[n] = ok, bad[n++].threshold = SH_WATCH_MAX_THRESHOLD + 1;
    bad[n] = ok, bad[n++].value = sh_watch_str("500", 3); /* >= on a string */
    bad[n] = ok, bad[n].op = SH_WATCH_PREFIX, bad[n++].value = sh_watch_int(5);
    bad[n] = ok, bad[n].op = SH_WATCH_EQ, bad[n++].value = sh_watch_float(NAN);
    bad[n] = ok, bad[n].op = SH_WATCH_EQ, bad[n++].value = sh_watch_str(big, sizeof(big));
    bad[n] = ok, bad[n++].value = (sh_watch_value){0};
    bad[n] = ok, bad[n++].op = (sh_watch_op)99;
    bad[n] = ok, bad[n].kind = SH_WATCH_MATCH_FINGERPRINT, bad[n++].fingerprint = S("");
    for (size_t i = 0; i < n; i++) {
        sh_watch_status st = SH_WATCH_ADDED;
        const char *why = NULL;
        assert_int_equal(sh_watch_add(set, &bad[i], &st, &why), -1);
        assert_int_equal(st, SH_WATCH_EINVALID);
        assert_non_null(why);
    }
    assert_int_equal(sh_watch_count(set), 0);
    /* the limits themselves are fine */
    ok.id = (sh_slice){big, SH_WATCH_MAX_ID};
    ok.field = (sh_slice){big, SH_WATCH_MAX_FIELD};
    ok.window_ms = SH_WATCH_MAX_WINDOW_MS;
    ok.threshold = SH_WATCH_MAX_THRESHOLD;
    assert_int_equal(add(set, ok), SH_WATCH_ADDED);
    sh_watch_set_free(set);
}

static void test_hostile_events(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    assert_int_equal(
        add(set, field_spec("m", "message", SH_WATCH_CONTAINS, sh_watch_str("needle", 6), 1000, 1)),
        SH_WATCH_ADDED);
    add_hits(set, "h", 1000, 1000);
    sh_watch_fired fired;
    sh_watch_fired_init(&fired);

    /* too many fields: refused, nothing counted */
    sh_watch_field *many = calloc(SH_WATCH_MAX_FIELDS + 1, sizeof(*many));
    for (size_t i = 0; i <= SH_WATCH_MAX_FIELDS; i++)
        many[i] = (sh_watch_field){S("hit"), sh_watch_int(1)};
    sh_watch_event e = {many, SH_WATCH_MAX_FIELDS + 1};
    assert_int_equal(sh_watch_observe(set, &e, 0, &fired), -1);
    assert_int_equal(info(set, "h").matched, 0);
    e.nfields = SH_WATCH_MAX_FIELDS; /* at the limit: one count */
    assert_int_equal(sh_watch_observe(set, &e, 0, &fired), 0);
    assert_int_equal(info(set, "h").matched, 1);
    e.fields = NULL;
    assert_int_equal(sh_watch_observe(set, &e, 0, &fired), -1);
    e.nfields = 0;
    assert_int_equal(sh_watch_observe(set, &e, 0, &fired), 0);
    free(many);

    /* a long value is searched in its first SH_WATCH_MAX_EVENT_VALUE bytes */
    size_t len = SH_WATCH_MAX_EVENT_VALUE * 4;
    char *text = malloc(len);
    memset(text, 'a', len);
    memcpy(text + SH_WATCH_MAX_EVENT_VALUE - 6, "needle", 6);
    assert_int_equal(observe1(set, "message", sh_watch_str(text, len), 0), 1);
    memset(text, 'a', len);
    memcpy(text + SH_WATCH_MAX_EVENT_VALUE - 5, "needle", 6);
    assert_int_equal(observe1(set, "message", sh_watch_str(text, len), 5000), 0);
    free(text);

    /* long, empty and NULL names and values do not match nor crash */
    char name[SH_WATCH_MAX_FIELD * 2];
    memset(name, 'n', sizeof(name));
    sh_watch_field odd[] = {
        {{name, sizeof(name)}, sh_watch_int(1)},
        {{"", 0}, sh_watch_int(1)},
        {{NULL, 5}, sh_watch_int(1)},
        {S("hit"), (sh_watch_value){SH_WATCH_STR, 0, 0, 0, {NULL, 4}}},
        {S("hit"), (sh_watch_value){(sh_watch_type)77, 0, 0, 0, {NULL, 0}}},
        {S("cluster"), sh_watch_str(NULL, 9)},
        {S("fingerprint"), sh_watch_str(name, sizeof(name))},
    };
    e = (sh_watch_event){odd, sizeof(odd) / sizeof(odd[0])};
    assert_int_equal(sh_watch_observe(set, &e, 6000, &fired), 0);
    assert_int_equal(info(set, "h").matched, 1);

    /* random bytes as ids, field names and values */
    uint32_t x = 99;
    char buf[64][40];
    for (int round = 0; round < 64; round++) {
        for (int k = 0; k < 40; k++) {
            x = x * 1664525u + 1013904223u;
            buf[round][k] = (char)(x >> 24);
        }
        size_t n = 1 + (x >> 8) % 39;
        sh_watch_spec s = field_spec("", "", (sh_watch_op)((x >> 3) % 8),
                                     sh_watch_str(buf[round], n), 10, 1 + (x >> 5) % 3);
        s.id = (sh_slice){buf[round], n};
        s.field = (sh_slice){buf[round] + 1, n - 1 > 0 ? n - 1 : 1};
        sh_watch_status st;
        const char *why;
        int rc = sh_watch_add(set, &s, &st, &why);
        assert_true(rc == 0 || st == SH_WATCH_EINVALID);
        sh_watch_field f = {s.field, sh_watch_str(buf[round], n)};
        sh_watch_event one = {&f, 1};
        assert_int_equal(sh_watch_observe(set, &one, 7000 + round, &fired), 0);
    }
    sh_watch_fired_free(&fired);
    sh_watch_set_free(set);
}

static void test_ten_thousand_watches_on_one_field(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    char id[32];
    for (int i = 0; i < SH_WATCH_DEFAULT_MAX_WATCHES; i++) {
        snprintf(id, sizeof(id), "w%d", i);
        assert_int_equal(add(set, field_spec(id, "status", SH_WATCH_GE, sh_watch_int(i), 60000,
                                             1 + (uint64_t)(i % 3))),
                         SH_WATCH_ADDED);
    }
    assert_int_equal(
        add(set, field_spec("one-too-many", "status", SH_WATCH_GE, sh_watch_int(0), 60000, 1)),
        SH_WATCH_EFULL);
    /* status 5000 matches w0..w5000; thresholds 1, 2, 3 by turn */
    size_t fires = 0;
    for (int k = 0; k < 3; k++)
        fires += observe1(set, "status", sh_watch_int(5000), k);
    assert_int_equal(fires, 5001);
    sh_watch_stats st;
    sh_watch_stats_get(set, &st);
    assert_int_equal(st.evaluated, 3 * SH_WATCH_DEFAULT_MAX_WATCHES);
    sh_watch_set_free(set);
}

/* The work estimate is an upper bound of the comparisons observe makes,
 * grows with the watches on an event's fields, and follows adds, removes
 * and table growth. */
static void test_observe_work_bounds_the_comparisons(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(100000, 0);
    sh_watch_field f = {S("status"), sh_watch_int(503)};
    sh_watch_event e = {&f, 1};
    uint64_t empty = sh_watch_observe_work(set, &e);
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        add(set, field_spec(id, "status", SH_WATCH_GE, sh_watch_int(i), 1000, 1));
    }
    add(set, field_spec("other", "path", SH_WATCH_EQ, sh_watch_str("/x", 2), 1000, 1));
    uint64_t work = sh_watch_observe_work(set, &e);
    assert_true(work >= 5000 + empty);
    sh_watch_stats before, after;
    sh_watch_stats_get(set, &before);
    sh_watch_fired fired;
    sh_watch_fired_init(&fired);
    assert_int_equal(sh_watch_observe(set, &e, 0, &fired), 0);
    sh_watch_stats_get(set, &after);
    assert_true(after.evaluated - before.evaluated <= work);
    assert_int_equal(after.evaluated - before.evaluated, 5000);
    sh_watch_fired_free(&fired);
    /* another field meets none of them. The estimate counts a hash bucket,
     * and the set's seed is random: one name in table_cap shares the
     * watched field's bucket and is estimated high (an upper bound still).
     * Three names all doing so would be a broken estimate. */
    uint64_t least = UINT64_MAX;
    const char *others[] = {"service", "node", "region"};
    for (size_t i = 0; i < 3; i++) {
        sh_watch_field g = {S(others[i]), sh_watch_int(1)};
        sh_watch_event e2 = {&g, 1};
        uint64_t w = sh_watch_observe_work(set, &e2);
        least = w < least ? w : least;
    }
    assert_true(least < 100);
    /* a long string value costs with its length */
    char big[4096];
    memset(big, 'a', sizeof(big));
    sh_watch_field h = {S("status"), sh_watch_str(big, sizeof(big))};
    sh_watch_event e3 = {&h, 1};
    assert_true(sh_watch_observe_work(set, &e3) >= 5000 * (sizeof(big) / 4));
    /* removing brings it down again */
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        assert_int_equal(sh_watch_remove(set, S(id)), 0);
    }
    assert_true(sh_watch_observe_work(set, &e) < 100);
    sh_watch_set_free(set);
}

typedef struct listed {
    char ids[3000][16];
    size_t n;
} listed;

static int listed_cb(void *arg, const sh_watch_info *info)
{
    listed *l = arg;
    assert_true(l->n < 3000);
    snprintf(l->ids[l->n++], 16, "%.*s", (int)info->spec->id.len, info->spec->id.ptr);
    return 0;
}

static int listed_has(const listed *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->ids[i], id) == 0)
            return 1;
    return 0;
}

static void test_walk_in_steps_with_changes_between(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    char id[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "w%d", i);
        add(set, field_spec(id, "n", SH_WATCH_GE, sh_watch_int(i), 1000, 1));
    }
    static listed plain, each, walked;
    /* no changes: the order of sh_watch_each */
    each.n = plain.n = 0;
    sh_watch_each(set, listed_cb, &each);
    assert_int_equal(sh_watch_walk_begin(set), 0);
    assert_int_equal(sh_watch_walk_begin(set), -1);
    int rc;
    while ((rc = sh_watch_walk_step(set, 7, listed_cb, &plain)) == 0)
        ;
    assert_int_equal(rc, 1);
    sh_watch_walk_end(set);
    assert_int_equal(plain.n, each.n);
    for (size_t i = 0; i < plain.n; i++)
        assert_string_equal(plain.ids[i], each.ids[i]);

    /* between the steps: adds (grow the tables), removes, replaces */
    static listed gone; /* removed before their turn */
    walked.n = gone.n = 0;
    assert_int_equal(sh_watch_walk_begin(set), 0);
    int k = 0;
    while ((rc = sh_watch_walk_step(set, 10, listed_cb, &walked)) == 0) {
        snprintf(id, sizeof(id), "new%d", k);
        add(set, field_spec(id, "n", SH_WATCH_GE, sh_watch_int(k), 1000, 1));
        snprintf(id, sizeof(id), "w%d", 999 - k);
        if (!listed_has(&walked, id))
            snprintf(gone.ids[gone.n++], 16, "%.15s", id);
        assert_int_equal(sh_watch_remove(set, S(id)), 0);
        snprintf(id, sizeof(id), "w%d", 500 + k); /* replaced before or after its turn */
        add(set, field_spec(id, "m", SH_WATCH_LT, sh_watch_int(k), 2000, 2));
        k++;
    }
    assert_int_equal(rc, 1);
    sh_watch_walk_end(set);
    assert_true(k > 20);
    assert_true(gone.n > 20);
    for (size_t i = 0; i < walked.n; i++) {
        assert_true(strncmp(walked.ids[i], "new", 3) != 0); /* added during it */
        assert_false(listed_has(&gone, walked.ids[i]));
        for (size_t j = i + 1; j < walked.n; j++)
            assert_true(strcmp(walked.ids[i], walked.ids[j]) != 0);
    }
    for (int i = 0; i < 1000; i++) { /* every watch there throughout */
        snprintf(id, sizeof(id), "w%d", i);
        sh_watch_info info;
        if (sh_watch_get(set, S(id), &info) == 0)
            assert_true(listed_has(&walked, id));
    }
    /* adds and removes after the walk still find their way */
    assert_int_equal(sh_watch_remove(set, S("new0")), 0);
    each.n = 0;
    sh_watch_each(set, listed_cb, &each);
    assert_int_equal(each.n, sh_watch_count(set));
    sh_watch_set_free(set);
}

/* A set freed in the middle of nothing: a finished walk leaves no marker
 * behind, and one never begun costs nothing. */
static void test_walk_end_without_begin(void **state)
{
    (void)state;
    sh_watch_set *set = new_set(0, 0);
    sh_watch_walk_end(set);
    assert_int_equal(sh_watch_walk_begin(set), 0);
    assert_int_equal(sh_watch_walk_step(set, 10, listed_cb, NULL), 1);
    sh_watch_walk_end(set);
    sh_watch_set_free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_boundaries_are_exact),
        cmocka_unit_test(test_sliding_window_matches_a_brute_force_model),
        cmocka_unit_test(test_fires_once_then_rearms_below_threshold),
        cmocka_unit_test(test_at_most_once_per_window),
        cmocka_unit_test(test_fires_once_per_event_and_reports_ids),
        cmocka_unit_test(test_expiry_is_quiet),
        cmocka_unit_test(test_time_never_runs_backwards),
        cmocka_unit_test(test_add_and_remove_at_run_time),
        cmocka_unit_test(test_numeric_ops),
        cmocka_unit_test(test_numeric_extremes_are_exact),
        cmocka_unit_test(test_string_ops),
        cmocka_unit_test(test_cluster_and_fingerprint),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_invalid_specs),
        cmocka_unit_test(test_hostile_events),
        cmocka_unit_test(test_ten_thousand_watches_on_one_field),
        cmocka_unit_test(test_observe_work_bounds_the_comparisons),
        cmocka_unit_test(test_walk_in_steps_with_changes_between),
        cmocka_unit_test(test_walk_end_without_begin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
