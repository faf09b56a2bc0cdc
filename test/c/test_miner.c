/* Template miner: routing, similarity, generalisation, siblings, ids,
 * snapshots, the cluster bound and hostile lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "self_heal/miner.h"

static uint64_t add(sh_miner *m, const char *line)
{
    uint64_t id = 0;
    assert_int_equal(sh_miner_add(m, &id, line, strlen(line)), 0);
    assert_true(id != 0);
    return id;
}

static sh_miner *miner(size_t max_clusters)
{
    sh_miner_config cfg = {.max_clusters = max_clusters};
    sh_miner *m;
    assert_int_equal(sh_miner_new(&m, &cfg), 0);
    return m;
}

typedef struct found {
    uint64_t id;
    char text[512];
    uint32_t params[16];
    size_t nparams;
    uint64_t count;
    int hit;
} found;

static int find_cb(void *arg, uint64_t id, uint64_t count, sh_slice text, const uint32_t *params,
                   size_t nparams)
{
    found *f = arg;
    if (id != f->id)
        return 0;
    snprintf(f->text, sizeof(f->text), "%.*s", (int)text.len, text.ptr);
    f->nparams = nparams < 16 ? nparams : 16;
    memcpy(f->params, params, f->nparams * sizeof(*params));
    f->count = count;
    f->hit = 1;
    return 1;
}

static found template_of(sh_miner *m, uint64_t id)
{
    found f;
    memset(&f, 0, sizeof(f));
    f.id = id;
    sh_miner_each(m, find_cb, &f);
    assert_true(f.hit);
    return f;
}

static void test_masked_values_share_a_cluster(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    uint64_t a = add(m, "Connection to 10.2.3.4:5432 refused after 3012 ms");
    uint64_t b = add(m, "Connection to 10.9.8.7:6543 refused after 12 ms");
    uint64_t c = add(m, "Connection to db.internal refused after 7 ms");
    uint64_t d = add(m, "Disk /dev/sda1 is 93% full");
    assert_int_equal(a, b);
    assert_int_equal(a, c); /* a host name is not a word: it generalises */
    assert_true(d != a);
    found f = template_of(m, a);
    assert_string_equal(f.text, "Connection to <*> refused after <dur>");
    assert_int_equal(f.nparams, 1);
    assert_int_equal(f.params[0], 2);
    assert_int_equal(f.count, 3);
    sh_miner_free(m);
}

static void test_token_count_and_leading_tokens_route(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    uint64_t a = add(m, "worker 7 stopped");
    uint64_t b = add(m, "worker 7 stopped unexpectedly");
    uint64_t c = add(m, "queue 7 stopped");
    assert_true(a != b); /* other token count */
    assert_true(a != c); /* other leading word */
    /* a leading token with a digit routes as a parameter */
    assert_int_equal(add(m, "x1 went down hard"), add(m, "x22 went down hard"));
    sh_miner_free(m);
}

static void test_similarity_threshold(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    /* numbered names (one shape each: values) */
    uint64_t a = add(m, "job v1 w2 x3 y4 done");
    /* 2 of 6 positions equal: below the threshold (0.4), a cluster of its own */
    uint64_t b = add(m, "job v5 w6 x7 y8 done");
    assert_true(a != b);
    /* 4 of 6 equal: joins */
    assert_int_equal(add(m, "job v1 w2 x7 y8 done"), a);
    sh_miner_free(m);
}

static void test_words_that_differ_are_different_events(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    uint64_t started = add(m, "[instance: 6b1c0c40-1b33-4c7f-9a5a-2f2b7c4b2c11] VM Started");
    uint64_t paused = add(m, "[instance: 6b1c0c40-1b33-4c7f-9a5a-2f2b7c4b2c11] VM Paused");
    assert_true(started != paused);
    assert_int_equal(add(m, "[instance: 0b1c0c40-1b33-4c7f-9a5a-2f2b7c4b2c12] VM Started"),
                     started);
    /* key=value pairs are split, so the value is a word of its own */
    assert_true(add(m, "login failed user=root") != add(m, "login failed user=guest"));
    sh_miner_free(m);
}

static void test_generalised_cluster_keeps_its_id(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    uint64_t a = add(m, "cache miss for key user:42:profile in shard-3");
    uint64_t b = add(m, "cache miss for key order:9:lines in shard-1");
    assert_int_equal(a, b);
    found f = template_of(m, a);
    assert_string_equal(f.text, "cache miss for key <*> in shard-<int>");
    /* the same first line in a fresh miner gives the same id */
    sh_miner *m2 = miner(0);
    assert_int_equal(add(m2, "cache miss for key user:42:profile in shard-3"), a);
    sh_miner_free(m2);
    sh_miner_free(m);
}

static const char *const USER_NAMES[] = {"root",  "admin",  "oracle", "test", "webmaster",
                                         "guest", "nagios", "backup", "ftp",  "mysql"};

/* "Invalid user" lines of ten users, `lines` in all, given by n ids, all
 * live in final, the only cluster, into which seven siblings merged (eight
 * make siblings merge). */
static void assert_users_merged(sh_miner *m, const uint64_t *ids, int n, uint64_t final,
                                uint64_t lines)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(sh_miner_resolve(m, ids[i]), final);
    found f = template_of(m, final);
    assert_string_equal(f.text, "Invalid user <*> from <ip>");
    assert_int_equal(f.count, lines);
    sh_miner_stats st;
    sh_miner_stats_get(m, &st);
    assert_int_equal(st.clusters, 1);
    assert_int_equal(st.merged, 7);
}

static void test_many_word_siblings_merge(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    uint64_t ids[10];
    for (int i = 0; i < 10; i++) {
        char line[128];
        snprintf(line, sizeof(line), "Invalid user %s from 173.234.31.%d", USER_NAMES[i], i + 1);
        ids[i] = add(m, line);
        sh_miner_stats st;
        sh_miner_stats_get(m, &st);
        /* the first seven are clusters of their own until the eighth comes */
        assert_int_equal(st.clusters, i < 7 ? (uint64_t)i + 1 : 1);
    }
    assert_users_merged(m, ids, 10, sh_miner_resolve(m, ids[9]), 10);
    sh_miner_free(m);
}

/* The sibling that survives a merge is an older one with more lines: the
 * new cluster and every other sibling go into it, and nothing reads the
 * new cluster after it was freed (ASan would say so). */
static void test_siblings_merge_into_an_older_cluster(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    uint64_t ids[8];
    /* root's cluster takes three lines, so it is the one that survives */
    for (int k = 0; k < 3; k++)
        ids[0] = add(m, "Invalid user root from 173.234.31.1");
    for (int i = 1; i < 8; i++) {
        char line[128];
        snprintf(line, sizeof(line), "Invalid user %s from 173.234.31.%d", USER_NAMES[i], i + 1);
        ids[i] = add(m, line);
    }
    assert_users_merged(m, ids, 8, ids[0], 10);
    sh_miner_free(m);
}

/*
 * Synthetic line generators, one per way a miner tuned to known logs
 * fails on others. Each interleaves the lines of two events, values
 * drawn from a fixed-seed generator, and checks that each event is one
 * cluster and the two are not.
 */
static uint32_t rnd(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* Adds n lines of two events made by gen(k, event, rng, line) and checks
 * that the lines of each event resolve to one cluster, another for each. */
typedef void (*line_gen)(int k, int event, uint32_t *rng, char *line, size_t cap);

static void assert_two_events(line_gen gen, int n)
{
    sh_miner *m = miner(0);
    uint64_t *ids = calloc((size_t)n, sizeof(*ids));
    uint32_t rng = 12345;
    assert_non_null(ids);
    for (int k = 0; k < n; k++) {
        char line[512];
        gen(k, k % 2, &rng, line, sizeof(line));
        ids[k] = add(m, line);
    }
    for (int k = 0; k < n; k++)
        assert_int_equal(sh_miner_resolve(m, ids[k]), sh_miner_resolve(m, ids[k % 2]));
    assert_true(sh_miner_resolve(m, ids[0]) != sh_miner_resolve(m, ids[1]));
    free(ids);
    sh_miner_free(m);
}

/* The same event with a different number of tokens: an optional
 * parenthesised value, a list of one to four values. */
static void gen_token_count(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    uint32_t r = rnd(rng);
    if (event == 0) {
        if (r % 2)
            snprintf(line, cap, "flushed %u records (%u.%u MB) to disk", r % 5000, r % 97, r % 10);
        else
            snprintf(line, cap, "flushed %u records to disk", r % 5000);
        return;
    }
    int n = snprintf(line, cap, "replicas [");
    for (uint32_t i = 0; i <= r % 4; i++)
        n += snprintf(line + n, cap - (size_t)n, "%s10.%u.0.%d", i ? ", " : "", r % 200, (int)i);
    snprintf(line + n, cap - (size_t)n, "] in sync after %d ms", k);
}

/* A list of one to four values without brackets. */
static void gen_list(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    uint32_t r = rnd(rng);
    int n = snprintf(line, cap, "nodes ");
    for (uint32_t i = 0; i <= r % 4; i++)
        n += snprintf(line + n, cap - (size_t)n, "%s10.%u.1.%d", i ? ", " : "", r % 200, (int)i);
    snprintf(line + n, cap - (size_t)n, " %s the ring at epoch %d", event ? "left" : "joined", k);
}

static void test_generated_token_counts(void **state)
{
    (void)state;
    assert_two_events(gen_token_count, 200);
    assert_two_events(gen_list, 100);
}

/* A plain-word parameter with few values (queue and user names) in lines
 * whose other values already made parameters of their clusters. */
static void gen_word_values(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    static const char *const QUEUES[] = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot"};
    static const char *const JOBS[] = {"job.resize", "job.mail", "job.index", "job.purge"};
    uint32_t r = rnd(rng);
    const char *q = QUEUES[(k / 2) % 6], *j = JOBS[r % 4];
    if (event == 0)
        snprintf(line, cap, "worker moved %s to queue %s", j, q);
    else
        snprintf(line, cap, "dispatching owner=%s job %s", q, j);
}

static void test_generated_word_values(void **state)
{
    (void)state;
    assert_two_events(gen_word_values, 120);
}

/* A component name with no digit heading the line: ending in ':', or
 * not (those fewer than make siblings merge, told apart from an event's
 * constants by recurring in both events). */
static void gen_leading_names(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    static const char *const NAMES[] = {"com.example.billing.nightly:",
                                        "com.example.auth.sessions:",
                                        "org.sample.cache.warmer:",
                                        "net.demo.mail.outbox:",
                                        "/usr/sbin/rotate:",
                                        "app.report.weekly:",
                                        "billing.nightly",
                                        "auth.sessions",
                                        "cache.warmer",
                                        "mail.outbox"};
    uint32_t r = rnd(rng);
    const char *c = NAMES[(r >> 4) % 10];
    if (event == 0)
        snprintf(line, cap, "%s nightly run finished in %u ms", c, r % 900);
    else
        snprintf(line, cap, "%s nightly run failed after %d retries", c, k % 7);
}

static void test_generated_leading_names(void **state)
{
    (void)state;
    assert_two_events(gen_leading_names, 120);
}

/* The same event with a different number of tokens that no bracket or
 * comma marks: a list of one to four addresses separated by blanks, an
 * optional size between two words. */
static void gen_blank_lists(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    uint32_t r = rnd(rng);
    int n = snprintf(line, cap, "members");
    for (uint32_t i = 0; i <= r % 4; i++)
        n += snprintf(line + n, cap - (size_t)n, " 10.%u.2.%u", r % 200, i);
    snprintf(line + n, cap - (size_t)n, " %s the ring at epoch %d", event ? "left" : "joined", k);
}

static void gen_optional_values(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    uint32_t r = rnd(rng);
    const char *size = r % 2 ? "" : r % 4 ? " 3.4 MB" : " 812 KB";
    if (event == 0)
        snprintf(line, cap, "flushed %u records%s to disk in %d ms", r % 5000, size, k);
    else
        snprintf(line, cap, "compacted %u segments%s into level %u", r % 90, size, r % 7);
}

static void test_generated_token_counts_without_marks(void **state)
{
    (void)state;
    assert_two_events(gen_blank_lists, 120);
    assert_two_events(gen_optional_values, 120);
}

/* Constants with digits or punctuation that tell events apart: protocol
 * names, enum-like states, Mod::method names, each of an event's lines
 * holding one of a few values of its own. */
static void gen_protocols(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    uint32_t r = rnd(rng);
    snprintf(line, cap, "negotiated %s with 10.0.%u.%u in %d ms", event ? "TLSv1" : "HTTP2",
             r % 250, (r >> 8) % 250, k);
}

static void gen_states(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    uint32_t r = rnd(rng);
    (void)k;
    snprintf(line, cap, "display %u changed to %s after %u ms", r % 4,
             event ? "SCREEN_OFF" : "SCREEN_ON", r % 900);
}

static void gen_methods(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    uint32_t r = rnd(rng);
    snprintf(line, cap, "slow call to Cache::%s took %u us for key k%d", event ? "evict" : "refill",
             r % 999, k);
}

static void test_generated_constants_with_digits(void **state)
{
    (void)state;
    assert_two_events(gen_protocols, 60);
    assert_two_events(gen_states, 60);
    assert_two_events(gen_methods, 60);
}

/* A plain-word parameter with fewer values than make siblings merge (user
 * names), named in two events, as text and as key=value. */
static void gen_few_users(int k, int event, uint32_t *rng, char *line, size_t cap)
{
    static const char *const USERS[] = {"alice", "bob", "carol"};
    uint32_t r = rnd(rng);
    const char *u = USERS[(r >> 4) % 3];
    (void)k;
    if (event == 0)
        snprintf(line, cap, "session opened for user %s by sshd", u);
    else
        snprintf(line, cap, "password check failed user=%s tries=%u", u, r % 5);
}

static void test_generated_few_word_values(void **state)
{
    (void)state;
    assert_two_events(gen_few_users, 120);
}

typedef struct collect {
    char text[8192];
    size_t n;
} collect;

static int collect_cb(void *arg, uint64_t id, uint64_t count, sh_slice text, const uint32_t *params,
                      size_t nparams)
{
    collect *c = arg;
    (void)params;
    int w = snprintf(c->text + c->n, sizeof(c->text) - c->n, "%016llx %llu %zu %.*s\n",
                     (unsigned long long)id, (unsigned long long)count, nparams, (int)text.len,
                     text.ptr);
    if (w > 0 && (size_t)w < sizeof(c->text) - c->n)
        c->n += (size_t)w;
    return 0;
}

static const char *const CORPUS[] = {
    "Connection to 10.2.3.4:5432 refused after 3012 ms",
    "session opened for user cyrus by (uid=0)",
    "Connection to 10.2.3.5:5432 refused after 12 ms",
    "Invalid user root from 1.2.3.4",
    "Invalid user admin from 1.2.3.5",
    "Invalid user oracle from 1.2.3.6",
    "Invalid user test from 1.2.3.7",
    "Invalid user guest from 1.2.3.8",
    "session opened for user news by (uid=0)",
    "Disk /dev/sda1 is 93% full",
};

static void test_snapshot_round_trip(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    for (size_t i = 0; i < sizeof(CORPUS) / sizeof(CORPUS[0]); i++)
        add(m, CORPUS[i]);
    sh_buf snap;
    sh_buf_init(&snap);
    assert_int_equal(sh_miner_snapshot(m, &snap), 0);

    sh_miner *r;
    const char *why = NULL;
    assert_int_equal(sh_miner_restore(&r, &why, snap.data, snap.len, NULL), 0);
    collect a = {{0}, 0}, b = {{0}, 0};
    sh_miner_each(m, collect_cb, &a);
    sh_miner_each(r, collect_cb, &b);
    if (strcmp(a.text, b.text) != 0)
        fprintf(stderr, "original:\n%s\nrestored:\n%s\n", a.text, b.text);
    assert_string_equal(a.text, b.text);
    sh_miner_stats sa, sb;
    sh_miner_stats_get(m, &sa);
    sh_miner_stats_get(r, &sb);
    assert_int_equal(sa.lines, sb.lines);
    assert_int_equal(sa.clusters, sb.clusters);
    /* both go on the same way, aliases included */
    const char *more[] = {"Connection to 9.9.9.9:1 refused after 1 ms",
                          "Invalid user x from 1.1.1.1", "Disk /dev/sdb2 is 12% full",
                          "brand new line"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(add(m, more[i]), add(r, more[i]));
    uint64_t zed = add(m, "session opened for user zed by (uid=0)");
    assert_int_equal(add(r, "session opened for user zed by (uid=0)"), zed);
    for (int i = 0; i < 8; i++)
        assert_int_equal(sh_miner_resolve(r, add(m, CORPUS[i])),
                         sh_miner_resolve(m, add(r, CORPUS[i])));

    /* a second snapshot of the restored miner is byte-identical */
    sh_buf snap2, snap3;
    sh_buf_init(&snap2);
    sh_buf_init(&snap3);
    assert_int_equal(sh_miner_snapshot(m, &snap2), 0);
    assert_int_equal(sh_miner_snapshot(r, &snap3), 0);
    assert_int_equal(snap2.len, snap3.len);
    assert_memory_equal(snap2.data, snap3.data, snap2.len);
    sh_buf_free(&snap2);
    sh_buf_free(&snap3);
    sh_buf_free(&snap);
    sh_miner_free(r);
    sh_miner_free(m);
}

/* Normalising lengthens a line ("1" is "<int>"), so a template's token may
 * be longer than the bytes of a line the miner reads: its snapshot still
 * restores with the same configuration. */
static void test_snapshot_of_tokens_longer_than_a_line(void **state)
{
    (void)state;
    sh_miner_config cfg = {.max_line = 64};
    sh_miner *m;
    assert_int_equal(sh_miner_new(&m, &cfg), 0);
    add(m, "1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9,1,2,3,4,5");
    sh_buf snap;
    sh_buf_init(&snap);
    assert_int_equal(sh_miner_snapshot(m, &snap), 0);
    sh_miner *r = NULL;
    const char *why = NULL;
    assert_int_equal(sh_miner_restore(&r, &why, snap.data, snap.len, &cfg), 0);
    sh_miner_stats st;
    sh_miner_stats_get(r, &st);
    assert_int_equal(st.clusters, 1);
    sh_buf_free(&snap);
    sh_miner_free(r);
    sh_miner_free(m);
}

static void test_snapshot_damage_is_refused(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    for (size_t i = 0; i < sizeof(CORPUS) / sizeof(CORPUS[0]); i++)
        add(m, CORPUS[i]);
    sh_buf snap;
    sh_buf_init(&snap);
    assert_int_equal(sh_miner_snapshot(m, &snap), 0);
    sh_miner *r = NULL;
    const char *why = NULL;
    /* every truncation and every single flipped byte */
    for (size_t cut = 0; cut < snap.len; cut++) {
        assert_int_equal(sh_miner_restore(&r, &why, snap.data, cut, NULL), -1);
        assert_non_null(why);
        assert_null(r);
    }
    for (size_t i = 0; i < snap.len; i++) {
        snap.data[i] ^= 0x20;
        assert_int_equal(sh_miner_restore(&r, &why, snap.data, snap.len, NULL), -1);
        assert_non_null(why);
        snap.data[i] ^= 0x20;
    }
    assert_int_equal(sh_miner_restore(&r, &why, "garbage", 7, NULL), -1);
    assert_string_equal(why, "not a miner snapshot");
    assert_int_equal(sh_miner_restore(&r, &why, snap.data, snap.len, NULL), 0);
    sh_miner_free(r);
    sh_buf_free(&snap);
    sh_miner_free(m);
}

static void test_eviction_at_the_bound(void **state)
{
    (void)state;
    sh_miner *m = miner(10);
    uint64_t first = add(m, "alpha event happened");
    const char *words[] = {"bravo", "charlie", "delta", "echo", "foxtrot", "golf",     "hotel",
                           "india", "juliet",  "kilo",  "lima", "mike",    "november", "oscar"};
    for (int i = 0; i < 14; i++) {
        char line[64];
        snprintf(line, sizeof(line), "%s event happened", words[i]);
        add(m, line);
        if (i == 8)
            add(m, "alpha event happened"); /* keeps alpha recently used */
    }
    sh_miner_stats st;
    sh_miner_stats_get(m, &st);
    assert_int_equal(st.clusters, 10);
    assert_int_equal(st.created, 15);
    assert_int_equal(st.evicted, 5);
    /* the least recently used went first: alpha was used after bravo..juliet */
    collect c = {{0}, 0};
    sh_miner_each(m, collect_cb, &c);
    assert_null(strstr(c.text, "bravo"));
    assert_null(strstr(c.text, "foxtrot"));
    assert_non_null(strstr(c.text, "oscar"));
    assert_non_null(strstr(c.text, "alpha"));
    assert_non_null(strstr(c.text, "golf"));
    /* an evicted template coming back gets its old id again */
    sh_miner *fresh = miner(0);
    assert_int_equal(add(m, "bravo event happened"), add(fresh, "bravo event happened"));
    sh_miner_free(fresh);
    (void)first;
    sh_miner_free(m);
}

/* ------------------------------------------------------------ prepared lines, budgets */

/* Letters only: a plain word ("aab", "aac", ...). */
static void word(char *out, unsigned i)
{
    out[0] = (char)('a' + i / 676 % 26);
    out[1] = (char)('a' + i / 26 % 26);
    out[2] = (char)('a' + i % 26);
    out[3] = 0;
}

/* A varied line: masked values, siblings that merge, one route with many
 * clusters (two different words each), routes of their own. */
static void varied_line(char *line, size_t size, unsigned i)
{
    char a[4], b[4];
    word(a, i % 300);
    word(b, (i * 7 + 11) % 300 + 300);
    switch (i % 6) {
    case 0:
        snprintf(line, size, "Connection to 10.0.%u.%u:5432 refused after %u ms", i % 250, i % 7,
                 i);
        break;
    case 1:
        snprintf(line, size, "Invalid user %s from 1.2.3.%u", a, i % 200);
        break;
    case 2:
        snprintf(line, size, "route here %s %s", a, b);
        break;
    case 3:
        snprintf(line, size, "%s started job %u", a, i);
        break;
    case 4:
        snprintf(line, size, "session opened for user %s by (uid=%u)", b, i % 5);
        break;
    default:
        snprintf(line, size, "tok%u tok%u tok%u", i % 3, i % 5, i);
    }
}

static void snapshot_of(sh_miner *m, sh_buf *out)
{
    sh_buf_init(out);
    assert_int_equal(sh_miner_snapshot(m, out), 0);
}

static void assert_same_miner(sh_miner *a, sh_miner *b)
{
    sh_buf sa, sb;
    snapshot_of(a, &sa);
    snapshot_of(b, &sb);
    assert_int_equal(sa.len, sb.len);
    assert_memory_equal(sa.data, sb.data, sa.len);
    sh_buf_free(&sa);
    sh_buf_free(&sb);
}

static void test_prepared_lines_add_like_sh_miner_add(void **state)
{
    (void)state;
    sh_miner *a = miner(500), *b = miner(500);
    sh_miner_line *l;
    assert_int_equal(sh_miner_line_new(&l), 0);
    for (unsigned i = 0; i < 5000; i++) {
        char line[256];
        varied_line(line, sizeof(line), i);
        uint64_t ida, idb;
        assert_int_equal(sh_miner_add(a, &ida, line, strlen(line)), 0);
        assert_int_equal(sh_miner_prepare(b, l, line, strlen(line)), 0);
        assert_int_equal(sh_miner_add_line(b, l, UINT64_MAX, &idb), 0);
        assert_int_equal(ida, idb);
    }
    assert_same_miner(a, b);
    /* a line cut at max_line counts as truncated either way */
    sh_miner_config small = {.max_line = 16};
    sh_miner *c;
    assert_int_equal(sh_miner_new(&c, &small), 0);
    assert_int_equal(sh_miner_prepare_work(c, 1000), 16);
    assert_int_equal(sh_miner_prepare_work(c, 5), 5);
    assert_int_equal(sh_miner_prepare(c, l, "a line longer than sixteen bytes", 32), 0);
    uint64_t id;
    assert_int_equal(sh_miner_add_line(c, l, UINT64_MAX, &id), 0);
    sh_miner_stats st;
    sh_miner_stats_get(c, &st);
    assert_int_equal(st.truncated, 1);
    sh_miner_free(c);
    sh_miner_line_free(l);
    sh_miner_free(a);
    sh_miner_free(b);
}

static void test_over_budget_changes_nothing(void **state)
{
    (void)state;
    sh_miner *m = miner(0), *copy = miner(0);
    /* 2,000 clusters on one route: two words differ in each line */
    for (unsigned i = 0; i < 2000; i++) {
        char line[64], a[4], b[4];
        word(a, i);
        word(b, i + 5000);
        snprintf(line, sizeof(line), "same route %s %s", a, b);
        add(m, line);
        add(copy, line);
    }
    sh_miner_line *l;
    assert_int_equal(sh_miner_line_new(&l), 0);
    const char *next = "same route zzz zzy";
    assert_int_equal(sh_miner_prepare(m, l, next, strlen(next)), 0);
    uint64_t id = 1;
    /* 2,000 candidates of 4 tokens: far more than 1,000 units */
    assert_int_equal(sh_miner_add_line(m, l, 1000, &id), 1);
    assert_int_equal(id, 0);
    assert_same_miner(m, copy);
    assert_int_equal(sh_miner_add_line(m, l, 1000000, &id), 0);
    assert_int_equal(id, add(copy, next));
    assert_same_miner(m, copy);

    /* a line of another route is cheap */
    const char *other = "another route entirely";
    assert_int_equal(sh_miner_prepare(m, l, other, strlen(other)), 0);
    assert_int_equal(sh_miner_add_line(m, l, 1000, &id), 0);
    sh_miner_line_free(l);
    sh_miner_free(m);
    sh_miner_free(copy);
}

static void test_unbudgeted_add_makes_room_for_budgeted_ones(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    /* 128 routes: the id and route tables (256 slots) are at their limit */
    for (unsigned i = 0; i < 128; i++) {
        char line[64], a[4];
        word(a, i);
        snprintf(line, sizeof(line), "%s happened here", a);
        add(m, line);
    }
    sh_miner_line *l;
    assert_int_equal(sh_miner_line_new(&l), 0);
    const char *again = "aaa happened here";
    assert_int_equal(sh_miner_prepare(m, l, again, strlen(again)), 0);
    uint64_t id;
    /* the next insert would grow them: more than the budget */
    assert_int_equal(sh_miner_add_line(m, l, 1000, &id), 1);
    /* without a budget it grows them first, so the next lines fit in it */
    assert_int_equal(sh_miner_add_line(m, l, UINT64_MAX, &id), 0);
    assert_int_equal(sh_miner_add_line(m, l, 1000, &id), 0);
    const char *fresh = "brand new route here";
    assert_int_equal(sh_miner_prepare(m, l, fresh, strlen(fresh)), 0);
    assert_int_equal(sh_miner_add_line(m, l, 1000, &id), 0);
    sh_miner_line_free(l);
    sh_miner_free(m);
}

/* ------------------------------------------------------------ walks */

typedef struct ids {
    uint64_t v[20000];
    size_t n;
} ids;

static int ids_cb(void *arg, uint64_t id, uint64_t count, sh_slice text, const uint32_t *params,
                  size_t nparams)
{
    (void)count;
    (void)text;
    (void)params;
    (void)nparams;
    ids *s = arg;
    assert_true(s->n < 20000);
    s->v[s->n++] = id;
    return 0;
}

static int has(const ids *s, uint64_t id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] == id)
            return 1;
    return 0;
}

static void all_ids(sh_miner *m, ids *out)
{
    out->n = 0;
    sh_miner_each(m, ids_cb, out);
}

static void test_walk_in_steps_sees_each_cluster_once(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    for (unsigned i = 0; i < 3000; i++) {
        char line[256];
        varied_line(line, sizeof(line), i);
        add(m, line);
    }
    static ids before, during, after, plain;
    all_ids(m, &before);
    /* without changes: the LRU order reversed (least recently used first) */
    assert_int_equal(sh_miner_walk_begin(m), 0);
    assert_int_equal(sh_miner_walk_begin(m), -1);
    sh_buf snap;
    sh_buf_init(&snap);
    assert_int_equal(sh_miner_snapshot_begin(m, &snap), -1);
    plain.n = 0;
    int rc;
    while ((rc = sh_miner_walk_step(m, 7, ids_cb, &plain)) == 0)
        ;
    assert_int_equal(rc, 1);
    sh_miner_walk_end(m);
    assert_int_equal(plain.n, before.n);
    for (size_t i = 0; i < plain.n; i++)
        assert_int_equal(plain.v[i], before.v[before.n - 1 - i]);

    /* with lines added between the steps: used, new and merged clusters */
    assert_int_equal(sh_miner_walk_begin(m), 0);
    during.n = 0;
    unsigned i = 3000;
    while ((rc = sh_miner_walk_step(m, 50, ids_cb, &during)) == 0) {
        for (int k = 0; k < 5; k++, i++) {
            char line[256];
            varied_line(line, sizeof(line), i % 3 == 0 ? i - 2900 : i);
            add(m, line);
        }
    }
    assert_int_equal(rc, 1);
    sh_miner_walk_end(m);
    all_ids(m, &after);
    for (size_t k = 0; k < during.n; k++) {
        assert_true(has(&before, during.v[k])); /* nothing made during the walk */
        for (size_t j = k + 1; j < during.n; j++)
            assert_true(during.v[j] != during.v[k]); /* nothing twice */
    }
    for (size_t k = 0; k < after.n; k++) /* every cluster that lived throughout */
        if (has(&before, after.v[k]))
            assert_true(has(&during, after.v[k]));
    /* the marker is gone: a plain listing and a new walk still work */
    assert_int_equal(sh_miner_walk_begin(m), 0);
    sh_miner_walk_end(m);
    sh_miner_free(m);
}

static void test_walk_survives_eviction_and_merges(void **state)
{
    (void)state;
    sh_miner *m = miner(200);
    for (unsigned i = 0; i < 1000; i++) {
        char line[256];
        varied_line(line, sizeof(line), i);
        add(m, line);
    }
    static ids before, during;
    all_ids(m, &before);
    assert_int_equal(sh_miner_walk_begin(m), 0);
    during.n = 0;
    int rc;
    unsigned i = 1000;
    while ((rc = sh_miner_walk_step(m, 3, ids_cb, &during)) == 0) {
        /* new clusters push the oldest out; sibling users merge */
        for (int k = 0; k < 3; k++, i++) {
            char line[256], a[4];
            word(a, i % 400);
            snprintf(line, sizeof(line), "%s event number %u", a, i);
            add(m, line);
            snprintf(line, sizeof(line), "Failed password for %s from 9.9.9.9", a);
            add(m, line);
        }
    }
    assert_int_equal(rc, 1);
    sh_miner_walk_end(m);
    sh_miner_stats st;
    sh_miner_stats_get(m, &st);
    assert_true(st.evicted > 0);
    assert_true(st.merged > 0);
    for (size_t k = 0; k < during.n; k++) {
        assert_true(has(&before, during.v[k]));
        for (size_t j = k + 1; j < during.n; j++)
            assert_true(during.v[j] != during.v[k]);
    }
    /* evicting down to the bound works around the marker */
    for (unsigned k = 0; k < 300; k++) {
        char line[64], a[4];
        word(a, k + 1000);
        snprintf(line, sizeof(line), "%s final line", a);
        add(m, line);
    }
    sh_miner_stats_get(m, &st);
    assert_int_equal(st.clusters, 200);
    sh_miner_free(m);
}

/* A snapshot in steps with lines added between them restores. */
static void snapshot_in_steps(sh_miner *m, sh_buf *out, size_t max_work, unsigned churn)
{
    sh_buf_init(out);
    assert_int_equal(sh_miner_snapshot_begin(m, out), 0);
    int rc;
    unsigned i = 0;
    sh_miner_seal seal = {0, 0, 0};
    while ((rc = sh_miner_snapshot_step(m, out, max_work)) == 0) {
        for (unsigned k = 0; k < churn; k++, i++) {
            char line[256], a[4];
            varied_line(line, sizeof(line), i * 13 + 7);
            add(m, line);
            word(a, i % 500 + 100);
            /* sibling users: merges, and so aliases, while it is written */
            snprintf(line, sizeof(line), "Accepted publickey for %s port 22", a);
            add(m, line);
        }
    }
    assert_int_equal(rc, 1);
    /* the checksum in parts as small as the steps (the miner may change) */
    add(m, "a line after the walk");
    while ((rc = sh_miner_snapshot_seal(out, 0, &seal, max_work)) == 0)
        ;
    assert_int_equal(rc, 1);
}

static void test_snapshot_in_steps(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    for (unsigned i = 0; i < 2000; i++) {
        char line[256];
        varied_line(line, sizeof(line), i);
        add(m, line);
    }
    /* no lines in between: the same bytes as sh_miner_snapshot */
    sh_buf whole, steps;
    snapshot_of(m, &whole);
    snapshot_in_steps(m, &steps, 64, 0);
    assert_int_equal(whole.len, steps.len);
    assert_memory_equal(whole.data, steps.data, whole.len);
    sh_buf_free(&steps);

    /* lines in between, down to one alias slot per step: it restores, with
     * the clusters it visited */
    for (size_t work = 1; work <= 4096; work *= 8) {
        snapshot_in_steps(m, &steps, work, 2);
        sh_miner *r;
        const char *why = NULL;
        assert_int_equal(sh_miner_restore(&r, &why, steps.data, steps.len, NULL), 0);
        sh_miner_stats st;
        sh_miner_stats_get(r, &st);
        assert_true(st.clusters > 0);
        /* and it goes on adding lines */
        add(r, "Accepted publickey for someone port 22");
        sh_miner_free(r);
        sh_buf_free(&steps);
    }
    sh_miner_stats st;
    sh_miner_stats_get(m, &st);
    assert_true(st.merged > 0);
    /* an aborted one leaves no walk behind */
    sh_buf out;
    sh_buf_init(&out);
    assert_int_equal(sh_miner_snapshot_begin(m, &out), 0);
    assert_int_equal(sh_miner_snapshot_step(m, &out, 10), 0);
    sh_miner_snapshot_abort(m);
    assert_int_equal(sh_miner_walk_begin(m), 0);
    sh_miner_walk_end(m);
    sh_buf_free(&out);
    sh_buf_free(&whole);
    sh_miner_free(m);
}

static int resolves_to_itself_cb(void *arg, uint64_t id, uint64_t count, sh_slice text,
                                 const uint32_t *params, size_t nparams)
{
    (void)count;
    (void)text;
    (void)params;
    (void)nparams;
    assert_int_equal(sh_miner_resolve(arg, id), id);
    return 0;
}

static void test_restore_ignores_an_alias_of_a_live_cluster(void **state)
{
    (void)state;
    sh_miner *m = miner(0);
    /* four sibling clusters, the oldest of all: the walk visits them first */
    const char *users[] = {"root", "admin", "oracle", "guest"};
    uint64_t old[4];
    for (int i = 0; i < 4; i++) {
        char line[64];
        snprintf(line, sizeof(line), "Accepted publickey for %s port 22", users[i]);
        old[i] = add(m, line);
    }
    for (unsigned i = 0; i < 100; i++) {
        char line[256];
        varied_line(line, sizeof(line), i);
        add(m, line);
    }
    /* the first step visits the oldest; then a fifth sibling merges them */
    sh_buf snap;
    snapshot_in_steps(m, &snap, 1, 1);
    assert_true(sh_miner_resolve(m, old[0]) != old[0]);
    sh_miner *r;
    const char *why = NULL;
    assert_int_equal(sh_miner_restore(&r, &why, snap.data, snap.len, NULL), 0);
    /* the snapshot holds old[0] and its alias: the cluster wins */
    static ids restored;
    all_ids(r, &restored);
    assert_true(has(&restored, old[0]));
    sh_miner_each(r, resolves_to_itself_cb, r);
    sh_miner_free(r);
    sh_buf_free(&snap);
    sh_miner_free(m);
}

static void test_hostile_lines(void **state)
{
    (void)state;
    sh_miner *m = miner(100);
    /* 1 MB line */
    size_t big = 1 << 20;
    char *line = malloc(big);
    assert_non_null(line);
    for (size_t i = 0; i < big; i++)
        line[i] = (char)('a' + i % 26);
    uint64_t id;
    assert_int_equal(sh_miner_add(m, &id, line, big), 0);
    /* 100,000 tokens */
    for (size_t i = 0; i < 200000; i++)
        line[i] = i % 2 ? ' ' : 'x';
    assert_int_equal(sh_miner_add(m, &id, line, 200000), 0);
    /* only delimiters, empty */
    memset(line, ' ', 5000);
    assert_int_equal(sh_miner_add(m, &id, line, 5000), 0);
    uint64_t blank = id;
    assert_int_equal(sh_miner_add(m, &id, "", 0), 0);
    assert_int_equal(id, blank);
    assert_int_equal(sh_miner_add(m, &id, "\t\r\n", 3), 0);
    assert_int_equal(id, blank);
    /* invalid UTF-8 and NUL bytes */
    const char bad[] = "caf\xc3 \xff\xfe \x00 oops \xe2\x82";
    assert_int_equal(sh_miner_add(m, &id, bad, sizeof(bad) - 1), 0);
    /* random bytes */
    uint32_t x = 7;
    for (int round = 0; round < 2000; round++) {
        size_t n = (x >> 8) % 300;
        for (size_t i = 0; i < n; i++) {
            x = x * 1664525u + 1013904223u;
            line[i] = (char)(x >> 24);
        }
        assert_int_equal(sh_miner_add(m, &id, line, n), 0);
    }
    sh_miner_stats st;
    sh_miner_stats_get(m, &st);
    assert_true(st.truncated >= 2);
    assert_true(st.clusters <= 100);
    sh_buf snap;
    sh_buf_init(&snap);
    assert_int_equal(sh_miner_snapshot(m, &snap), 0);
    sh_miner *r;
    const char *why;
    assert_int_equal(sh_miner_restore(&r, &why, snap.data, snap.len, NULL), 0);
    sh_miner_free(r);
    sh_buf_free(&snap);
    free(line);
    sh_miner_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masked_values_share_a_cluster),
        cmocka_unit_test(test_token_count_and_leading_tokens_route),
        cmocka_unit_test(test_similarity_threshold),
        cmocka_unit_test(test_words_that_differ_are_different_events),
        cmocka_unit_test(test_generalised_cluster_keeps_its_id),
        cmocka_unit_test(test_many_word_siblings_merge),
        cmocka_unit_test(test_siblings_merge_into_an_older_cluster),
        cmocka_unit_test(test_generated_token_counts),
        cmocka_unit_test(test_generated_word_values),
        cmocka_unit_test(test_generated_leading_names),
        cmocka_unit_test(test_generated_token_counts_without_marks),
        cmocka_unit_test(test_generated_constants_with_digits),
        cmocka_unit_test(test_generated_few_word_values),
        cmocka_unit_test(test_snapshot_round_trip),
        cmocka_unit_test(test_snapshot_damage_is_refused),
        cmocka_unit_test(test_snapshot_of_tokens_longer_than_a_line),
        cmocka_unit_test(test_eviction_at_the_bound),
        cmocka_unit_test(test_hostile_lines),
        cmocka_unit_test(test_prepared_lines_add_like_sh_miner_add),
        cmocka_unit_test(test_over_budget_changes_nothing),
        cmocka_unit_test(test_unbudgeted_add_makes_room_for_budgeted_ones),
        cmocka_unit_test(test_walk_in_steps_sees_each_cluster_once),
        cmocka_unit_test(test_walk_survives_eviction_and_merges),
        cmocka_unit_test(test_snapshot_in_steps),
        cmocka_unit_test(test_restore_ignores_an_alias_of_a_live_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
