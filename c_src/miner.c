/*
 * Template miner (see include/self_heal/miner.h and docs/miner.md).
 *
 * Structures:
 *   - a cluster holds its template as tokens: a 64-bit hash per token
 *     (WILD for a parameter) and the token's text in the cluster's own
 *     buffer; its id; its count; links of the LRU list.
 *   - buckets: an open-addressing table from a routing key (token count and
 *     the first route_tokens tokens, a token holding a digit or a
 *     placeholder, a component name, or with the constant rule any token
 *     but a plain word, routing as WILD) to the clusters of that key.
 *   - ids: an open-addressing table from id to cluster.
 *   - pairs: a direct-mapped table of two values seen alternating at one
 *     position of a template, with that template (evidence that the
 *     position holds a value when they alternate in another one).
 *   - align_dp: the table of the alignment across token counts.
 * Tokens compare by hash; 64-bit hashes make a false match negligible.
 *
 * Walks (templates, snapshots in steps) keep their place with a marker
 * node in the LRU list, moving from the tail to the head: behind it the
 * visited clusters, before it the others. A cluster used during the walk
 * moves to the head, so it is still visited if it was not yet, and one
 * visited already carries the walk's generation in `seen` and is skipped
 * when met again; a cluster made during the walk carries it from birth.
 */
#include "self_heal/miner.h"
#include "self_heal/normalize.h"

#include <stdlib.h>
#include <string.h>

#define WILD 0ULL
/* The one configuration used for every source, the combination that
 * leave-one-system-out chose (docs/miner.md); sh_miner_config can vary
 * them for the benchmark that chooses them. */
#define ROUTE_TOKENS 2    /* leading tokens in the routing key */
#define SIM_THRESHOLD 0.4 /* share of equal positions to join a cluster */
#define SIBLINGS 8        /* clusters differing in one word that merge */
#define RULES SH_MINER_RULES_ALL
#define VALUE_GROUP_TOKENS 16 /* longest bracket group of values dropped */
#define PAIRS_MAX 65536       /* slots of the table of alternating values */
#define GAPS 4                /* most tokens a join across token counts skips */

typedef struct token {
    uint64_t hash; /* WILD for a parameter */
    uint32_t off;  /* text in the cluster's buffer */
    uint32_t len;
    uint8_t kind;   /* TOK_VALUE, TOK_WORD (is_word) or TOK_CONST (is_const) */
    uint64_t shape; /* hash with each run of digits as one '#' (shape_hash) */
} token;

#define TOK_VALUE 0
#define TOK_WORD 1
#define TOK_CONST 2

typedef struct cluster {
    uint64_t id;
    uint64_t count;
    uint64_t route; /* routing key */
    uint64_t seen;  /* the walk that visited it or during which it was made */
    uint32_t ntok;
    uint32_t bidx; /* index in its bucket's items */
    token *tok;
    char *text;
    struct cluster *prev, *next; /* LRU: head is most recent */
} cluster;

typedef struct bucket {
    uint64_t key; /* 0: empty slot */
    cluster **items;
    uint32_t n, cap;
} bucket;

struct sh_miner_line {
    sh_buf norm; /* the normalised line; tokens point into it */
    token *tok;
    size_t ntok, cap;
    int truncated;
    uint64_t route; /* routing key */
    uint64_t tid;   /* the id of a cluster made from it */
};

/* The state of a snapshot written in steps. */
typedef struct snap_state {
    int aliases;     /* writing the alias table (else clusters) */
    size_t start;    /* where the snapshot starts in the output */
    size_t count_at; /* where the cluster count goes */
    uint64_t nclusters;
    size_t aliases_at; /* where the alias count goes */
    uint64_t naliases;
    size_t alias_next, alias_cap; /* next slot; the table size it is read at */
} snap_state;

struct sh_miner {
    sh_miner_config cfg;
    sh_miner_stats stats;
    cluster *head, *tail;
    bucket *buckets;
    size_t nbuckets, bucket_cap; /* used slots, table size (power of 2) */
    cluster **ids;
    size_t ids_cap;
    /* ids of clusters merged into others: from -> to */
    uint64_t *alias_from, *alias_to;
    size_t aliases, alias_cap;
    uint32_t *pos_count; /* sibling counts per position (scratch) */
    /* values seen to alternate in one template: pair of values -> the
     * template around them (0: seen in two templates); direct-mapped, a
     * new pair takes the slot of an old one */
    uint64_t *pair_key, *pair_family;
    size_t pair_cap;
    int32_t *align_dp; /* align's table (scratch) */
    size_t align_cap;
    sh_miner_line cur; /* the line of sh_miner_add */
    /* the walk: its marker in the LRU list (not a cluster), generation,
     * template text and parameter positions, a snapshot's state */
    cluster mark;
    int walking;
    uint64_t walk_gen;
    sh_buf walk_text;
    uint32_t *walk_params;
    snap_state snap;
};

/* ------------------------------------------------------------ hashing */

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* hash_bytes in parts: begin with the whole length, then words, then the
 * tail (fewer than 8 bytes). */
static uint64_t hash_begin(size_t n)
{
    return 0x9E3779B97F4A7C15ULL ^ (n * 0x100000001B3ULL);
}

/* Hashes the whole words of p[0..n); returns how many bytes it took. */
static size_t hash_words(uint64_t *h, const char *p, size_t n)
{
    size_t done = 0;
    while (n - done >= 8) {
        uint64_t w;
        memcpy(&w, p + done, 8);
        *h = mix(*h ^ w);
        done += 8;
    }
    return done;
}

static uint64_t hash_end(uint64_t h, const char *p, size_t n)
{
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = mix(h ^ w ^ ((uint64_t)n << 56));
    return h == WILD ? 1 : h;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = hash_begin(n);
    size_t done = hash_words(&h, p, n);
    return hash_end(h, p + done, n - done);
}

/* ------------------------------------------------------------ config */

void sh_miner_config_default(sh_miner_config *config)
{
    config->max_clusters = 10000;
    config->max_tokens = 128;
    config->max_line = 16 * 1024;
    config->sim_threshold = SIM_THRESHOLD;
    config->siblings = SIBLINGS;
    config->route_tokens = ROUTE_TOKENS;
    config->rules = RULES;
}

static void config_fill(sh_miner_config *out, const sh_miner_config *in)
{
    sh_miner_config_default(out);
    if (in == NULL)
        return;
    if (in->max_clusters > 0)
        out->max_clusters = in->max_clusters;
    if (in->max_tokens > 0)
        out->max_tokens = in->max_tokens < 65535 ? in->max_tokens : 65535;
    if (in->max_line > 0)
        out->max_line = in->max_line;
    if (in->sim_threshold > 0 && in->sim_threshold <= 1)
        out->sim_threshold = in->sim_threshold;
    if (in->siblings > 0)
        out->siblings = in->siblings < 65535 ? in->siblings : 65535;
    if (in->route_tokens > 0)
        out->route_tokens = in->route_tokens < 16 ? in->route_tokens : 16;
    if (in->rules & SH_MINER_RULES_SET)
        out->rules = in->rules & SH_MINER_RULES_ALL;
}

int sh_miner_new(sh_miner **out, const sh_miner_config *config)
{
    *out = NULL;
    sh_miner *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -1;
    config_fill(&m->cfg, config);
    sh_buf_init(&m->cur.norm);
    sh_buf_init(&m->walk_text);
    m->bucket_cap = 256;
    m->buckets = calloc(m->bucket_cap, sizeof(*m->buckets));
    m->ids_cap = 256;
    m->ids = calloc(m->ids_cap, sizeof(*m->ids));
    m->pos_count = calloc(m->cfg.max_tokens + 1, sizeof(*m->pos_count));
    m->walk_params = calloc(m->cfg.max_tokens + 1, sizeof(*m->walk_params));
    for (m->pair_cap = 64; m->pair_cap < PAIRS_MAX && m->pair_cap < 2 * m->cfg.max_clusters;)
        m->pair_cap *= 2;
    m->pair_key = calloc(m->pair_cap, sizeof(*m->pair_key));
    m->pair_family = calloc(m->pair_cap, sizeof(*m->pair_family));
    if (m->buckets == NULL || m->ids == NULL || m->pos_count == NULL || m->walk_params == NULL ||
        m->pair_key == NULL || m->pair_family == NULL) {
        sh_miner_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

static void cluster_free(cluster *c)
{
    if (c == NULL)
        return;
    free(c->tok);
    free(c->text);
    free(c);
}

void sh_miner_free(sh_miner *m)
{
    if (m == NULL)
        return;
    cluster *c = m->head;
    while (c != NULL) {
        cluster *next = c->next;
        if (c != &m->mark)
            cluster_free(c);
        c = next;
    }
    for (size_t i = 0; m->buckets != NULL && i < m->bucket_cap; i++)
        free(m->buckets[i].items);
    free(m->buckets);
    free(m->ids);
    free(m->alias_from);
    free(m->alias_to);
    free(m->pos_count);
    free(m->pair_key);
    free(m->align_dp);
    free(m->pair_family);
    free(m->walk_params);
    free(m->cur.tok);
    sh_buf_free(&m->cur.norm);
    sh_buf_free(&m->walk_text);
    free(m);
}

void sh_miner_stats_get(const sh_miner *m, sh_miner_stats *out)
{
    *out = m->stats;
}

/* ------------------------------------------------------------ LRU list */

static void lru_unlink(sh_miner *m, cluster *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        m->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        m->tail = c->prev;
    c->prev = c->next = NULL;
}

static void lru_push_front(sh_miner *m, cluster *c)
{
    c->prev = NULL;
    c->next = m->head;
    if (m->head != NULL)
        m->head->prev = c;
    m->head = c;
    if (m->tail == NULL)
        m->tail = c;
}

static void lru_touch(sh_miner *m, cluster *c)
{
    if (m->head == c)
        return;
    lru_unlink(m, c);
    lru_push_front(m, c);
}

/* The least recently used cluster (the walk's marker is not one). */
static cluster *lru_last(sh_miner *m)
{
    cluster *c = m->tail;
    return c == &m->mark ? c->prev : c;
}

/* ------------------------------------------------------------ id table */

static size_t id_slot(const sh_miner *m, uint64_t id)
{
    size_t mask = m->ids_cap - 1;
    size_t i = (size_t)mix(id) & mask;
    while (m->ids[i] != NULL && m->ids[i]->id != id)
        i = (i + 1) & mask;
    return i;
}

static int ids_grow(sh_miner *m)
{
    size_t cap = m->ids_cap * 2;
    cluster **old = m->ids;
    size_t old_cap = m->ids_cap;
    cluster **ids = calloc(cap, sizeof(*ids));
    if (ids == NULL)
        return -1;
    m->ids = ids;
    m->ids_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i] != NULL)
            m->ids[id_slot(m, old[i]->id)] = old[i];
    free(old);
    return 0;
}

static cluster *ids_find(const sh_miner *m, uint64_t id)
{
    return m->ids[id_slot(m, id)];
}

/* Backward-shift deletion keeps probe chains intact. */
static void ids_remove(sh_miner *m, uint64_t id)
{
    size_t mask = m->ids_cap - 1;
    size_t i = id_slot(m, id);
    if (m->ids[i] == NULL)
        return;
    m->ids[i] = NULL;
    for (size_t j = (i + 1) & mask; m->ids[j] != NULL; j = (j + 1) & mask) {
        cluster *c = m->ids[j];
        m->ids[j] = NULL;
        m->ids[id_slot(m, c->id)] = c;
    }
}

/* ------------------------------------------------------------ buckets */

static bucket *bucket_find(sh_miner *m, uint64_t key)
{
    size_t mask = m->bucket_cap - 1;
    size_t i = (size_t)mix(key) & mask;
    while (m->buckets[i].key != 0 && m->buckets[i].key != key)
        i = (i + 1) & mask;
    return &m->buckets[i];
}

static int buckets_grow(sh_miner *m)
{
    size_t old_cap = m->bucket_cap;
    bucket *old = m->buckets;
    bucket *nb = calloc(old_cap * 2, sizeof(*nb));
    if (nb == NULL)
        return -1;
    m->buckets = nb;
    m->bucket_cap = old_cap * 2;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key != 0)
            *bucket_find(m, old[i].key) = old[i];
    free(old);
    return 0;
}

static int bucket_add(sh_miner *m, cluster *c)
{
    if ((m->nbuckets + 1) * 2 > m->bucket_cap && buckets_grow(m) != 0)
        return -1;
    bucket *b = bucket_find(m, c->route);
    if (b->key == 0) {
        b->key = c->route;
        b->items = NULL;
        b->n = b->cap = 0;
        m->nbuckets++;
    }
    if (b->n == b->cap) {
        uint32_t cap = b->cap ? b->cap * 2 : 4;
        cluster **items = realloc(b->items, cap * sizeof(*items));
        if (items == NULL)
            return -1;
        b->items = items;
        b->cap = cap;
    }
    c->bidx = b->n;
    b->items[b->n++] = c;
    return 0;
}

/* Moves the bucket's last item into c's place. An emptied bucket stays in
 * the table (its key may come back). */
static void bucket_remove(sh_miner *m, cluster *c)
{
    bucket *b = bucket_find(m, c->route);
    if (c->bidx >= b->n || b->items[c->bidx] != c)
        return; /* not in it (an insert that failed half-way) */
    cluster *last = b->items[--b->n];
    b->items[c->bidx] = last;
    last->bidx = c->bidx;
}

/* ------------------------------------------------------------ lines */

static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* A token that routes as a wildcard: it holds a digit or a placeholder. */
static int routes_wild(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((p[i] >= '0' && p[i] <= '9') || p[i] == '<')
            return 1;
    return 0;
}

static int is_letter(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A name in parts that heads a line: a '.' or '/' between two letters
 * and a ':' at its end ("a.b.c:", "/usr/sbin/cron:"). Such a prefix names
 * one of many components or files that print the same events. */
static int is_path(const char *p, size_t n)
{
    if (n < 4 || p[n - 1] != ':')
        return 0;
    for (size_t i = 1; i + 1 < n; i++)
        if ((p[i] == '.' || p[i] == '/') && is_letter(p[i - 1]) && is_letter(p[i + 1]))
            return 1;
    return 0;
}

/* A token that may name a constant although it is not a plain word: no
 * placeholder, a letter, and a digit or punctuation ("HTTP2", "TLSv1",
 * "STATE_IDLE", "Mod::method", "WWEN[enable]"), but no path or dotted
 * name ("/srv/a.txt", "com.example.app", "a.txt"): those name files,
 * hosts and packages, the values of events. Whether it is a constant is
 * left to the evidence (docs/miner.md). */
static int is_const(const char *p, size_t n)
{
    int letter = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '<' || p[i] == '/')
            return 0;
        letter = letter || is_letter(p[i]);
    }
    return letter;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The hash of a token without its numbers (runs of hex digits holding a
 * digit): "bglio716" and "bglio91", "U11" and "U01", "root3_domain" and
 * "root_domain", "Alarm{aa90550" and "Alarm{c1705d3" have one shape
 * (numbered instances of one name), "HTTP2" and "TLSv1" two. */
static uint64_t shape_hash(const char *p, size_t n)
{
    char buf[64];
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        int digit = 0;
        while (j < n && is_hex(p[j]))
            digit |= p[j++] <= '9';
        if (j == i)
            j++;
        else if (digit) {
            i = j;
            continue;
        }
        for (; i < j; i++) {
            if (k == sizeof(buf))
                return hash_bytes(p, n);
            buf[k++] = p[i];
        }
    }
    return hash_bytes(buf, k);
}

/* A plain word: letters only once leading ([{"' and trailing
 * ,.;:!?)]}"' are set aside ("Started", "(Lifecycle", "SPP."). Dotted
 * names, snake_case, paths and anything with a digit are not words. */
static int is_word(const char *p, size_t n)
{
    size_t i = 0, e = n;
    while (i < e && strchr("([{\"'", p[i]) != NULL)
        i++;
    while (e > i && strchr(",.;:!?)]}\"'", p[e - 1]) != NULL)
        e--;
    if (i == e)
        return 0;
    for (size_t k = i; k < e; k++) {
        unsigned char c = (unsigned char)p[k];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80))
            return 0;
    }
    return 1;
}

static uint8_t token_kind(const char *p, size_t n)
{
    return is_word(p, n) ? TOK_WORD : is_const(p, n) ? TOK_CONST : TOK_VALUE;
}

static int is_key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

/* The closing bracket of an opening one, or 0. */
static char closer(char c)
{
    return c == '(' ? ')' : c == '[' ? ']' : c == '{' ? '}' : 0;
}

/* Whether s[0..n) holds values only: placeholders, brackets, separators. */
static int values_only(const char *s, size_t n)
{
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '<') {
            const char *e = memchr(s + i, '>', n - i);
            if (e == NULL)
                return 0;
            i = (size_t)(e - s);
            any = 1;
        } else if (strchr("()[]{},;:/-.=| ", s[i]) == NULL) {
            return 0;
        }
    }
    return any;
}

/*
 * Drops the bracket groups that hold values only ("(<size>)",
 * "[<ip>, <ip>]"): an event prints them or not, and as many values as it
 * has, so they would make one event's lines differ in token count. A
 * group is one token or up to VALUE_GROUP_TOKENS tokens from an opening
 * bracket to its closing one. Returns the token count left.
 */
static size_t drop_value_groups(const char *s, token *tok, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n;) {
        const token *t = &tok[i];
        char want = t->len > 0 ? closer(s[t->off]) : 0;
        size_t end = i; /* the group's last token */
        int group = 0;
        for (size_t j = i; want != 0 && j < n && j < i + VALUE_GROUP_TOKENS; j++) {
            const token *u = &tok[j];
            if (u->len > 0 && s[u->off + u->len - 1] == want) {
                end = j;
                group = 1;
                break;
            }
        }
        if (group) {
            size_t from = t->off, to = tok[end].off + tok[end].len;
            if (values_only(s + from, to - from)) {
                i = end + 1;
                continue;
            }
        }
        /* a list without brackets ("<ip>, <ip>, <ip>") keeps its last */
        if (i + 1 < n && t->len > 1 && s[t->off + t->len - 1] == ',' &&
            values_only(s + t->off, t->len) && values_only(s + tok[i + 1].off, tok[i + 1].len)) {
            i++;
            continue;
        }
        tok[out++] = tok[i++];
    }
    return out;
}

/* Splits l->norm into l->tok; returns the token count or -1. */
static long tokenize(const sh_miner_config *cfg, sh_miner_line *l)
{
    const char *s = l->norm.data;
    size_t len = l->norm.len, n = 0;
    int kv = (cfg->rules & SH_MINER_RULE_KEYVALUE) != 0;
    for (size_t i = 0; i < len;) {
        while (i < len && is_blank((unsigned char)s[i]))
            i++;
        if (i >= len)
            break;
        size_t start = i;
        int key = 1;   /* the token so far could be a key */
        int digit = 0; /* it holds a digit */
        while (i < len && !is_blank((unsigned char)s[i])) {
            unsigned char c = (unsigned char)s[i++];
            /* key=value: the key (with its '=') and the value are tokens */
            if (c == '=' && key && kv && i - 1 > start && i < len &&
                !is_blank((unsigned char)s[i]) && s[i] != '=')
                break;
            key = key && is_key_char(c);
            digit |= c >= '0' && c <= '9';
        }
        if (n == cfg->max_tokens) {
            l->truncated = 1;
            break;
        }
        if (n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 64;
            token *t = realloc(l->tok, cap * sizeof(*t));
            if (t == NULL)
                return -1;
            l->tok = t;
            l->cap = cap;
        }
        l->tok[n].off = (uint32_t)start;
        l->tok[n].len = (uint32_t)(i - start);
        l->tok[n].hash = hash_bytes(s + start, i - start);
        l->tok[n].kind = token_kind(s + start, i - start);
        /* a component name heading the line is a value (route_key) */
        if (n < cfg->route_tokens && (cfg->rules & SH_MINER_RULE_ROUTE_WORDS) &&
            is_path(s + start, i - start))
            l->tok[n].kind = TOK_VALUE;
        l->tok[n].shape = l->tok[n].kind != TOK_CONST ? 0
                          : digit                     ? shape_hash(s + start, i - start)
                                                      : l->tok[n].hash;
        n++;
    }
    if (cfg->rules & SH_MINER_RULE_VALUE_GROUPS)
        n = drop_value_groups(s, l->tok, n);
    return (long)n;
}

/* The routing key of l's leading tokens with a token count of n. */
static uint64_t route_key(const sh_miner_config *cfg, const sh_miner_line *l, size_t n)
{
    uint64_t k = mix(0x5bd1e995ULL + n);
    for (size_t i = 0; i < n && i < l->ntok && i < cfg->route_tokens; i++) {
        const token *t = &l->tok[i];
        int wild =
            routes_wild(l->norm.data + t->off, t->len) ||
            ((cfg->rules & SH_MINER_RULE_ROUTE_WORDS) && is_path(l->norm.data + t->off, t->len)) ||
            ((cfg->rules & SH_MINER_RULE_CONSTS) && t->kind != TOK_WORD);
        uint64_t h = wild ? WILD : t->hash;
        k = mix(k ^ (h + 0x9E3779B97F4A7C15ULL * (i + 1)));
    }
    return k == 0 ? 1 : k;
}

/* Whether two different tokens of these kinds at one position make two
 * events: two plain words (the word rule), or two constants of which one
 * at least has a digit or punctuation (the constant rule). */
static int vetoes(const sh_miner_config *cfg, const token *a, const token *b)
{
    if (a->kind == TOK_VALUE || b->kind == TOK_VALUE)
        return 0;
    if (a->kind == TOK_WORD && b->kind == TOK_WORD)
        return (cfg->rules & SH_MINER_RULE_WORDS) != 0;
    /* numbered instances of one name are values */
    return (cfg->rules & SH_MINER_RULE_CONSTS) != 0 && a->shape != b->shape;
}

/* Share of the line's positions equal to the template's (parameters count
 * as not equal), and the template's parameter count. */
static double similarity(const sh_miner_config *cfg, const cluster *c, const token *line, size_t n,
                         uint32_t *params)
{
    uint32_t same = 0, wild = 0;
    for (size_t i = 0; i < n; i++) {
        if (c->tok[i].hash == WILD)
            wild++;
        else if (c->tok[i].hash == line[i].hash)
            same++;
        else if (vetoes(cfg, &c->tok[i], &line[i]))
            return -1; /* two different constants: two different events */
    }
    *params = wild;
    return n == 0 ? 1.0 : (double)same / (double)n;
}

static cluster *best_match(sh_miner *m, const sh_miner_line *l)
{
    size_t n = l->ntok;
    bucket *b = bucket_find(m, l->route);
    cluster *best = NULL;
    double best_sim = -1;
    uint32_t best_params = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        cluster *c = b->items[i];
        if (c->ntok != n)
            continue;
        uint32_t params = 0;
        double sim = similarity(&m->cfg, c, l->tok, n, &params);
        if (sim > best_sim || (sim == best_sim && params > best_params)) {
            best = c;
            best_sim = sim;
            best_params = params;
        }
    }
    if (best != NULL && (best_sim >= m->cfg.sim_threshold || n == 0))
        return best;
    return NULL;
}

/* Whether a token of a template (t) or of a line (l) may be left out of
 * an alignment: a parameter or a value. */
static int gap_ok(const token *t)
{
    return t->hash == WILD || t->kind == TOK_VALUE;
}

/*
 * Aligns a line with a template of another token count, by dynamic
 * programming over (tokens of the longer side consumed, tokens it
 * skipped, whether the last step skipped). The longer side skips exactly
 * as many tokens as it has more, each of them a value (gap_ok), and the
 * tokens right after a run of skipped ones are equal (so an event's
 * missing last value is not read as optional). The other tokens pair in
 * order: equal (a parameter equals anything) or substituted, where two
 * different constants veto. Returns the best share of the longer side's
 * positions that are equal, or -1. With `apply` the template's positions
 * that were skipped or substituted become parameters.
 */
#define ALIGN_NONE (-1)

static double align(sh_miner *m, cluster *c, const token *line, size_t n, int apply)
{
    size_t tn = c->ntok;
    int tlong = tn > n;
    size_t la = tlong ? tn : n, gaps = tlong ? tn - n : n - tn, w = gaps + 1;
    size_t cells = (la + 1) * w * 2;
    if (cells > m->align_cap) {
        int32_t *d = realloc(m->align_dp, cells * sizeof(*d));
        if (d == NULL)
            return -1;
        m->align_dp = d;
        m->align_cap = cells;
    }
    int32_t *dp = m->align_dp; /* (a, s, f) -> equal tokens so far, or ALIGN_NONE */
#define AT(a, s, f) dp[((a)*w + (s)) * 2 + (f)]
    for (size_t i = 0; i < cells; i++)
        dp[i] = ALIGN_NONE;
    AT(0, 0, 0) = 0;
    for (size_t a = 0; a < la; a++) {
        for (size_t s = 0; s < w; s++) {
            for (int f = 0; f < 2; f++) {
                int32_t v = AT(a, s, f);
                size_t b = a - s; /* tokens of the shorter side consumed */
                if (v == ALIGN_NONE || s > a)
                    continue;
                const token *x = tlong ? &c->tok[a] : &line[a];
                /* skip x */
                if (s < gaps && gap_ok(x) && AT(a + 1, s + 1, 1) < v)
                    AT(a + 1, s + 1, 1) = v;
                if (b >= (tlong ? n : tn))
                    continue;
                const token *t = tlong ? x : &c->tok[b], *u = tlong ? &line[b] : x;
                int32_t nv;
                if (t->hash == u->hash && t->hash != WILD)
                    nv = v + 1;
                else if (f || (t->hash != WILD && vetoes(&m->cfg, t, u)))
                    continue;
                else
                    nv = v;
                if (AT(a + 1, s, 0) < nv)
                    AT(a + 1, s, 0) = nv;
            }
        }
    }
    int32_t best = AT(la, gaps, 0);
    if (best == ALIGN_NONE)
        return -1;
    if (apply) {
        /* walk back: a step is a skip when the state it came from holds
         * the value; else a pair */
        size_t a = la, s = gaps;
        int f = 0;
        int32_t v = best;
        while (a > 0) {
            int skipped = f == 1;
            size_t pa = a - 1;
            if (skipped) {
                if (tlong)
                    c->tok[pa].hash = WILD;
                s--;
                f = AT(pa, s, 0) == v ? 0 : 1;
            } else {
                size_t b = pa - s;
                const token *t = tlong ? &c->tok[pa] : &c->tok[b];
                const token *u = tlong ? &line[b] : &line[pa];
                int eq = t->hash == u->hash && t->hash != WILD;
                if (!eq)
                    c->tok[tlong ? pa : b].hash = WILD;
                v -= eq;
                f = AT(pa, s, 0) == v ? 0 : 1;
            }
            a = pa;
        }
    }
#undef AT
    return (double)best / (double)la;
}

/* The most similar cluster of up to GAPS tokens more or fewer whose
 * alignment with l leaves only values out (align), or NULL. */
static cluster *match_other_lengths(sh_miner *m, const sh_miner_line *l)
{
    size_t n = l->ntok;
    cluster *best = NULL;
    double best_sim = -1;
    for (size_t d = 1; d <= GAPS; d++) {
        for (int side = 0; side < 2; side++) {
            if (side == 0 && d >= n)
                continue;
            size_t len = side == 0 ? n - d : n + d;
            bucket *b = bucket_find(m, route_key(&m->cfg, l, len));
            for (uint32_t i = 0; b->key != 0 && i < b->n; i++) {
                cluster *c = b->items[i];
                if (c->ntok != len)
                    continue;
                double sim = align(m, c, l->tok, n, 0);
                if (sim > best_sim) {
                    best = c;
                    best_sim = sim;
                }
            }
        }
        if (best != NULL && best_sim >= m->cfg.sim_threshold)
            return best;
    }
    return NULL;
}

/* The clusters that match_other_lengths may compare l with. */
static uint64_t other_lengths_work(sh_miner *m, const sh_miner_line *l)
{
    if (!(m->cfg.rules & SH_MINER_RULE_LENGTHS))
        return 0;
    uint64_t w = 0, n = l->ntok;
    for (size_t d = 1; d <= GAPS; d++)
        for (int side = 0; side < 2; side++) {
            if (side == 0 && d >= n)
                continue;
            const bucket *b = bucket_find(m, route_key(&m->cfg, l, side == 0 ? n - d : n + d));
            w += b->key != 0 ? (uint64_t)b->n * (n + d + 1) * 2 * (d + 1) : 0;
        }
    return w;
}

/* Makes the positions where line differs parameters; returns how many. */
static size_t generalize(cluster *c, const token *line, size_t n)
{
    size_t changed = 0;
    for (size_t i = 0; i < n; i++)
        if (c->tok[i].hash != WILD && c->tok[i].hash != line[i].hash) {
            c->tok[i].hash = WILD;
            changed++;
        }
    return changed;
}

/* A cluster from tokens (hash WILD = parameter) whose text is in src. */
static cluster *cluster_make(const token *toks, size_t n, const char *src, uint64_t id,
                             uint64_t count, uint64_t route)
{
    cluster *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += toks[i].len;
    c->tok = malloc((n ? n : 1) * sizeof(*c->tok));
    c->text = malloc(bytes ? bytes : 1);
    if (c->tok == NULL || c->text == NULL) {
        cluster_free(c);
        return NULL;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        c->tok[i].hash = toks[i].hash;
        c->tok[i].off = (uint32_t)off;
        c->tok[i].len = toks[i].len;
        c->tok[i].kind = toks[i].kind;
        c->tok[i].shape = toks[i].shape;
        memcpy(c->text + off, src + toks[i].off, toks[i].len);
        off += toks[i].len;
    }
    c->ntok = (uint32_t)n;
    c->id = id;
    c->count = count;
    c->route = route;
    return c;
}

static void evict_one(sh_miner *m)
{
    cluster *c = lru_last(m);
    if (c == NULL)
        return;
    lru_unlink(m, c);
    bucket_remove(m, c);
    ids_remove(m, c->id);
    cluster_free(c);
    m->stats.clusters--;
    m->stats.evicted++;
}

static void alias_remove(sh_miner *m, uint64_t from);

/* Registers a new cluster; its id is moved on while it is taken. */
static int cluster_insert(sh_miner *m, cluster *c)
{
    if ((m->stats.clusters + 1) * 2 > m->ids_cap && ids_grow(m) != 0)
        return -1;
    if (bucket_add(m, c) != 0)
        return -1;
    while (ids_find(m, c->id) != NULL)
        c->id = c->id == UINT64_MAX ? 1 : c->id + 1;
    m->ids[id_slot(m, c->id)] = c;
    alias_remove(m, c->id);
    c->seen = m->walking ? m->walk_gen : 0; /* a walk going on does not visit it */
    lru_push_front(m, c);
    m->stats.clusters++;
    while (m->stats.clusters > m->cfg.max_clusters && lru_last(m) != c)
        evict_one(m);
    return 0;
}

/* ------------------------------------------------------------ aliases */

static size_t alias_slot(const sh_miner *m, uint64_t from)
{
    size_t mask = m->alias_cap - 1;
    size_t i = (size_t)mix(from) & mask;
    while (m->alias_from[i] != 0 && m->alias_from[i] != from)
        i = (i + 1) & mask;
    return i;
}

/* The alias table's next size, or 0 when it may not grow: it is bounded
 * to 4 * max_clusters aliases. */
static size_t alias_next_cap(const sh_miner *m)
{
    size_t cap = m->alias_cap ? m->alias_cap * 2 : 256;
    return cap / 2 > 4 * m->cfg.max_clusters + 256 ? 0 : cap;
}

/* Whether adding `extra` aliases would grow the table. */
static int alias_would_grow(const sh_miner *m, uint64_t extra)
{
    return (m->aliases + extra) * 2 > m->alias_cap && alias_next_cap(m) != 0;
}

static int alias_grow(sh_miner *m)
{
    size_t cap = alias_next_cap(m);
    if (cap == 0)
        return -1;
    uint64_t *f = calloc(cap, sizeof(*f)), *t = calloc(cap, sizeof(*t));
    if (f == NULL || t == NULL) {
        free(f);
        free(t);
        return -1;
    }
    uint64_t *of = m->alias_from, *ot = m->alias_to;
    size_t ocap = m->alias_cap;
    m->alias_from = f;
    m->alias_to = t;
    m->alias_cap = cap;
    for (size_t i = 0; i < ocap; i++) {
        if (of[i] != 0) {
            size_t k = alias_slot(m, of[i]);
            m->alias_from[k] = of[i];
            m->alias_to[k] = ot[i];
        }
    }
    free(of);
    free(ot);
    return 0;
}

/* Records that `from` now lives on as `to`. Bounded: beyond
 * 4 * max_clusters aliases new ones are not kept (counted). */
static void alias_add(sh_miner *m, uint64_t from, uint64_t to)
{
    if ((m->aliases + 1) * 2 > m->alias_cap && alias_grow(m) != 0) {
        m->stats.aliases_dropped++;
        return;
    }
    size_t k = alias_slot(m, from);
    if (m->alias_from[k] == 0)
        m->aliases++;
    m->alias_from[k] = from;
    m->alias_to[k] = to;
}

/* A cluster made again under an id that was merged away is live again:
 * its alias goes (backward-shift deletion keeps probe chains intact). */
static void alias_remove(sh_miner *m, uint64_t from)
{
    if (m->alias_cap == 0)
        return;
    size_t mask = m->alias_cap - 1;
    size_t i = alias_slot(m, from);
    if (m->alias_from[i] == 0)
        return;
    m->alias_from[i] = 0;
    m->aliases--;
    for (size_t j = (i + 1) & mask; m->alias_from[j] != 0; j = (j + 1) & mask) {
        uint64_t f = m->alias_from[j], t = m->alias_to[j];
        m->alias_from[j] = 0;
        size_t k = alias_slot(m, f);
        m->alias_from[k] = f;
        m->alias_to[k] = t;
    }
}

uint64_t sh_miner_resolve(const sh_miner *m, uint64_t id)
{
    for (size_t hops = 0; m->alias_cap > 0 && hops < 64; hops++) {
        size_t k = alias_slot(m, id);
        if (m->alias_from[k] == 0)
            break;
        id = m->alias_to[k];
    }
    return id;
}

/* ------------------------------------------------------------ siblings */

/* The one position where a and b hold different constants while agreeing
 * everywhere else (parameters included), or -1. */
static long sibling_position(const sh_miner *m, const cluster *a, const cluster *b)
{
    if (a->ntok != b->ntok)
        return -1;
    long pos = -1;
    int params = (m->cfg.rules & SH_MINER_RULE_SIB_PARAMS) != 0;
    for (uint32_t i = 0; i < a->ntok; i++) {
        uint64_t ha = a->tok[i].hash, hb = b->tok[i].hash;
        if (ha == hb)
            continue;
        if ((ha == WILD || hb == WILD) && params)
            continue; /* a parameter agrees with any value */
        if (ha == WILD || hb == WILD || pos >= 0)
            return -1;
        pos = (long)i;
    }
    return pos;
}

/*
 * Evidence that the position where siblings a and b differ holds a value:
 * the same two tokens were seen alternating in another template (user
 * names after "session opened for user" and after "session closed for
 * user"). An event's constants alternate within their own template; the
 * values of an entity recur wherever the entity is named. Records the
 * pair and its template; returns 1 when the pair was met in another.
 */
/* The hash of a cluster's token without the punctuation around it. */
static uint64_t core_hash(const cluster *c, long pos)
{
    const char *p = c->text + c->tok[pos].off;
    size_t i = 0, e = c->tok[pos].len;
    while (i < e && strchr("([{\"'", p[i]) != NULL)
        i++;
    while (e > i && strchr(",.;:!?)]}\"'", p[e - 1]) != NULL)
        e--;
    return hash_bytes(p + i, e - i);
}

static int recurs(sh_miner *m, const cluster *a, const cluster *b, long pos)
{
    uint64_t x = core_hash(a, pos), y = core_hash(b, pos);
    uint64_t key = mix((x < y ? x : y) ^ mix(x < y ? y : x));
    /* the template: its constants in order, without its values, so that
     * one event printed with more or fewer values is one template */
    uint64_t family = 0x51afd7ed558ccdULL;
    for (uint32_t i = 0; i < a->ntok; i++)
        if ((long)i != pos && a->tok[i].hash == b->tok[i].hash && a->tok[i].hash != WILD &&
            a->tok[i].kind != TOK_VALUE)
            family = mix(family ^ a->tok[i].hash);
    key = key ? key : 1;
    family = family ? family : 1;
    size_t k = (size_t)key & (m->pair_cap - 1);
    if (m->pair_key[k] == key && m->pair_family[k] != family) {
        m->pair_family[k] = 0; /* met in two templates: a value */
        return 1;
    }
    if (m->pair_key[k] != key) {
        m->pair_key[k] = key;
        m->pair_family[k] = family;
    }
    return 0;
}

static void cluster_drop(sh_miner *m, cluster *c)
{
    lru_unlink(m, c);
    bucket_remove(m, c);
    ids_remove(m, c->id);
    cluster_free(c);
    m->stats.clusters--;
}

/* o's lines and id go to keep; o is dropped. Positions where they differ
 * become parameters of keep, except `pos` (the siblings' position, which
 * the caller makes one when they are all merged). */
static void merge_into(sh_miner *m, cluster *keep, cluster *o, long pos)
{
    keep->count += o->count;
    for (uint32_t i = 0; i < keep->ntok && i < o->ntok; i++)
        if ((long)i != pos && keep->tok[i].hash != o->tok[i].hash)
            keep->tok[i].hash = WILD; /* a sibling's parameter stays one */
    alias_add(m, o->id, keep->id);
    cluster_drop(m, o);
    m->stats.merged++;
}

/*
 * Words that differ are usually different events ("VM Started" and "VM
 * Paused"), so a line whose only difference from a cluster is a word
 * starts a sibling cluster. When SIBLINGS clusters differ from c at the
 * same single position, that position is a parameter after all (user
 * names, host names): they merge into the one with the most lines, the
 * others' ids becoming aliases of its id. Returns the cluster c now lives
 * in.
 */
/* Whether a is b with more parameters: equal wherever a has none. */
static int subsumes(const cluster *a, const cluster *b)
{
    if (a == b || a->ntok != b->ntok)
        return 0;
    for (uint32_t i = 0; i < a->ntok; i++)
        if (a->tok[i].hash != WILD && a->tok[i].hash != b->tok[i].hash)
            return 0;
    return 1;
}

static cluster *merge_siblings(sh_miner *m, cluster *c)
{
    bucket *b = bucket_find(m, c->route);
    uint32_t *count = m->pos_count;
    long best = -1;
    /* a cluster whose constants c has since seen vary is one of c's
     * values: it goes into c (a parameter agrees with any value) */
    for (uint32_t i = 0; (m->cfg.rules & SH_MINER_RULE_SIB_PARAMS) && i < b->n;) {
        if (subsumes(c, b->items[i])) {
            merge_into(m, c, b->items[i], -1); /* moves the bucket's last item to i */
            continue;
        }
        i++;
    }
    int recur = (m->cfg.rules & SH_MINER_RULE_RECUR) != 0;
    for (uint32_t i = 0; i < b->n; i++) {
        long p = b->items[i] == c ? -1 : sibling_position(m, c, b->items[i]);
        if (p < 0)
            continue;
        if (++count[p] + 1 >= (uint32_t)m->cfg.siblings || (recur && recurs(m, c, b->items[i], p)))
            best = p;
    }
    for (uint32_t i = 0; i < b->n; i++) {
        long p = b->items[i] == c ? -1 : sibling_position(m, c, b->items[i]);
        if (p >= 0)
            count[p] = 0;
    }
    if (best < 0)
        return c;
    cluster *keep = c;
    for (uint32_t i = 0; i < b->n; i++)
        if (sibling_position(m, c, b->items[i]) == best && b->items[i]->count > keep->count)
            keep = b->items[i];
    /* c is compared with every sibling, so it is dropped last */
    for (uint32_t i = 0; i < b->n;) {
        cluster *o = b->items[i];
        if (o != keep && o != c && sibling_position(m, c, o) == best) {
            merge_into(m, keep, o, best); /* moves the bucket's last item to i */
            continue;
        }
        i++;
    }
    if (c != keep)
        merge_into(m, keep, c, best);
    keep->tok[best].hash = WILD;
    lru_touch(m, keep);
    return keep;
}

/* The id of a new cluster: a hash of its first template. */
static uint64_t template_id(const sh_miner_line *l)
{
    uint64_t h = mix(l->ntok + 0x27d4eb2f165667c5ULL);
    for (size_t i = 0; i < l->ntok; i++)
        h = mix(h ^ l->tok[i].hash);
    return h == 0 ? 1 : h;
}

int sh_miner_line_new(sh_miner_line **out)
{
    *out = calloc(1, sizeof(**out));
    if (*out == NULL)
        return -1;
    sh_buf_init(&(*out)->norm);
    return 0;
}

void sh_miner_line_free(sh_miner_line *l)
{
    if (l == NULL)
        return;
    free(l->tok);
    sh_buf_free(&l->norm);
    free(l);
}

size_t sh_miner_prepare_work(const sh_miner *m, size_t len)
{
    return len < m->cfg.max_line ? len : m->cfg.max_line;
}

int sh_miner_prepare(const sh_miner *m, sh_miner_line *l, const char *line, size_t len)
{
    l->ntok = 0;
    l->truncated = 0;
    if (len > m->cfg.max_line) {
        len = sh_utf8_truncate(line, len, m->cfg.max_line);
        l->truncated = 1;
    }
    sh_buf_reset(&l->norm);
    if (sh_normalize(&l->norm, line, len) != 0)
        return -1;
    long nt = tokenize(&m->cfg, l);
    if (nt < 0)
        return -1;
    l->ntok = (size_t)nt;
    l->route = route_key(&m->cfg, l, l->ntok);
    l->tid = template_id(l);
    return 0;
}

/* Work units of sh_miner_add_line: one per token compared; a slot moved
 * by a table's growth counts WORK_SLOT (it touches memory all over). */
#define WORK_SLOT 8

/* Upper bound of the work of adding l, whose route has bn clusters: the
 * match, then for a new cluster its copy, the sibling passes, the merges
 * (each alias added and cluster dropped in O(1)), one eviction and the
 * growth of any table that is at its limit. */
static uint64_t add_work(const sh_miner *m, const sh_miner_line *l, uint64_t bn)
{
    uint64_t n = l->ntok + 1;
    uint64_t w = 6 * bn * n + n + l->norm.len + 4 * bn + 16 + other_lengths_work((sh_miner *)m, l);
    if ((m->stats.clusters + 1) * 2 > m->ids_cap)
        w += WORK_SLOT * (uint64_t)m->ids_cap;
    if ((m->nbuckets + 1) * 2 > m->bucket_cap)
        w += WORK_SLOT * (uint64_t)m->bucket_cap;
    if (alias_would_grow(m, bn))
        w += WORK_SLOT * 2 * (uint64_t)m->alias_cap;
    return w;
}

/* Grows the tables that the next line may grow (best effort: a failure
 * here is met again, and handled, where the line needs the room). */
static void reserve(sh_miner *m, uint64_t bn)
{
    if ((m->stats.clusters + 1) * 2 > m->ids_cap)
        (void)ids_grow(m);
    if ((m->nbuckets + 1) * 2 > m->bucket_cap)
        (void)buckets_grow(m);
    while (alias_would_grow(m, bn) && alias_grow(m) == 0)
        ;
}

int sh_miner_add(sh_miner *m, uint64_t *id, const char *line, size_t len)
{
    *id = 0;
    if (sh_miner_prepare(m, &m->cur, line, len) != 0)
        return -1;
    return sh_miner_add_line(m, &m->cur, UINT64_MAX, id);
}

int sh_miner_add_line(sh_miner *m, const sh_miner_line *l, uint64_t max_work, uint64_t *id)
{
    *id = 0;
    size_t n = l->ntok;
    const bucket *b = bucket_find(m, l->route);
    uint64_t bn = b->key != 0 ? b->n : 0;
    if (max_work != UINT64_MAX && add_work(m, l, bn) > max_work)
        return 1;
    if (max_work == UINT64_MAX)
        reserve(m, bn);
    m->stats.lines++;
    m->stats.truncated += (uint64_t)l->truncated;
    cluster *c = best_match(m, l);
    if (c == NULL && (m->cfg.rules & SH_MINER_RULE_LENGTHS) && n > 0 &&
        (c = match_other_lengths(m, l)) != NULL) {
        /* the same event with values more or fewer: its template keeps
         * its token count, and what the line did not match becomes a
         * parameter */
        (void)align(m, c, l->tok, n, 1);
        c->count++;
        lru_touch(m, c);
        *id = c->id;
        return 0;
    }
    if (c != NULL) {
        size_t changed = generalize(c, l->tok, n);
        c->count++;
        lru_touch(m, c);
        /* a new parameter can make it a sibling of clusters that differ
         * from it only there and in one word; evidence met in other
         * templates since it was made is looked at again as it grows */
        if ((changed > 0 && (m->cfg.rules & SH_MINER_RULE_SIB_PARAMS)) ||
            ((m->cfg.rules & SH_MINER_RULE_RECUR) && (c->count & (c->count - 1)) == 0))
            c = merge_siblings(m, c);
        *id = c->id;
        return 0;
    }
    c = cluster_make(l->tok, n, l->norm.data, l->tid, 1, l->route);
    if (c == NULL)
        return -1;
    if (cluster_insert(m, c) != 0) {
        bucket_remove(m, c);
        cluster_free(c);
        return -1;
    }
    m->stats.created++;
    c = merge_siblings(m, c);
    *id = c->id;
    return 0;
}

/* ------------------------------------------------------------ templates */

static void template_text(const cluster *c, sh_buf *out, uint32_t *params, size_t *nparams)
{
    *nparams = 0;
    for (uint32_t i = 0; i < c->ntok; i++) {
        if (i > 0)
            sh_buf_append_byte(out, ' ');
        if (c->tok[i].hash == WILD) {
            sh_buf_append(out, "<*>", 3);
            params[(*nparams)++] = i;
        } else {
            sh_buf_append(out, c->text + c->tok[i].off, c->tok[i].len);
        }
    }
}

void sh_miner_each(const sh_miner *m, sh_miner_visit_fn fn, void *arg)
{
    sh_buf text;
    sh_buf_init(&text);
    uint32_t *params = malloc((m->cfg.max_tokens + 1) * sizeof(*params));
    if (params == NULL)
        return;
    for (const cluster *c = m->head; c != NULL; c = c->next) {
        size_t np;
        if (c == &m->mark)
            continue;
        sh_buf_reset(&text);
        template_text(c, &text, params, &np);
        if (text.oom)
            break;
        sh_slice s = {text.data ? text.data : "", text.len};
        if (fn(arg, c->id, c->count, s, params, np) != 0)
            break;
    }
    free(params);
    sh_buf_free(&text);
}

/* ------------------------------------------------------------ walks */

int sh_miner_walk_begin(sh_miner *m)
{
    if (m->walking)
        return -1;
    m->walking = 1;
    m->walk_gen++;
    /* the marker starts behind the tail: nothing is visited yet */
    cluster *k = &m->mark;
    memset(k, 0, sizeof(*k));
    k->prev = m->tail;
    if (m->tail != NULL)
        m->tail->next = k;
    else
        m->head = k;
    m->tail = k;
    return 0;
}

void sh_miner_walk_end(sh_miner *m)
{
    if (!m->walking)
        return;
    lru_unlink(m, &m->mark);
    m->walking = 0;
}

/* The next cluster the walk meets (the marker moves past it toward the
 * head), or NULL at the head. Clusters the walk visited or made are met
 * again when they were used since; the caller skips them. */
static cluster *walk_next(sh_miner *m)
{
    cluster *k = &m->mark, *c = k->prev;
    if (c == NULL)
        return NULL;
    lru_unlink(m, k);
    k->next = c;
    k->prev = c->prev;
    if (c->prev != NULL)
        c->prev->next = k;
    else
        m->head = k;
    c->prev = k;
    return c;
}

/* The next cluster to visit, marked visited, or NULL when no cluster is
 * left or *work reached max_work. Each cluster met counts one, but the
 * ones to skip do not stop the search: every step visits one at least,
 * so a walk ends however fast lines come between its steps. (What it
 * skips was put before it by a line added since: no more than they.) */
static cluster *walk_visit(sh_miner *m, size_t *work, size_t max_work)
{
    if (*work >= max_work)
        return NULL;
    for (;;) {
        cluster *c = walk_next(m);
        if (c == NULL)
            return NULL;
        ++*work;
        if (c->seen != m->walk_gen) {
            c->seen = m->walk_gen;
            return c;
        }
    }
}

int sh_miner_walk_step(sh_miner *m, size_t max_work, sh_miner_visit_fn fn, void *arg)
{
    size_t work = 0;
    cluster *c;
    while ((c = walk_visit(m, &work, max_work)) != NULL) {
        size_t np;
        sh_buf_reset(&m->walk_text);
        template_text(c, &m->walk_text, m->walk_params, &np);
        if (m->walk_text.oom)
            return -1;
        sh_slice s = {m->walk_text.data ? m->walk_text.data : "", m->walk_text.len};
        if (fn(arg, c->id, c->count, s, m->walk_params, np) != 0)
            return -1;
        work += c->ntok + s.len;
    }
    return m->mark.prev == NULL ? 1 : 0;
}

/* ------------------------------------------------------------ snapshots */

/*
 * Layout (all integers little-endian):
 *   "SHMINER\0"  u32 version  u64 lines  u64 created  u64 evicted
 *   u64 truncated  u64 nclusters
 *   per cluster, least recently used first:
 *     u64 id  u64 count  u64 route  u32 ntok
 *     per token: u8 wild  u32 len  len bytes (wild tokens keep their text)
 *   u64 merged  u64 aliases_dropped  u64 naliases  per alias: u64 from  u64 to
 *   u64 checksum: hash_bytes of everything before it
 */
static const char MAGIC[8] = {'S', 'H', 'M', 'I', 'N', 'E', 'R', 0};

static void put_le(sh_buf *b, uint64_t v, int n)
{
    unsigned char x[8];
    for (int i = 0; i < n; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    sh_buf_append(b, x, (size_t)n);
}

static void put_u64(sh_buf *b, uint64_t v)
{
    put_le(b, v, 8);
}

static void put_u32(sh_buf *b, uint32_t v)
{
    put_le(b, v, 4);
}

/* Overwrites the u64 at out->data + at (a count written before it was
 * known). */
static void patch_u64(sh_buf *out, size_t at, uint64_t v)
{
    if (out->oom)
        return;
    for (int i = 0; i < 8; i++)
        out->data[at + (size_t)i] = (char)(unsigned char)(v >> (8 * i));
}

/* The header up to the cluster count; returns where the count is. */
static size_t put_header(const sh_miner *m, sh_buf *out)
{
    sh_buf_append(out, MAGIC, sizeof(MAGIC));
    put_u32(out, SH_MINER_SNAPSHOT_VERSION);
    put_u64(out, m->stats.lines);
    put_u64(out, m->stats.created);
    put_u64(out, m->stats.evicted);
    put_u64(out, m->stats.truncated);
    size_t at = out->len;
    put_u64(out, m->stats.clusters);
    return at;
}

static void put_cluster(sh_buf *out, const cluster *c)
{
    put_u64(out, c->id);
    put_u64(out, c->count);
    put_u64(out, c->route);
    put_u32(out, c->ntok);
    for (uint32_t i = 0; i < c->ntok; i++) {
        sh_buf_append_byte(out, c->tok[i].hash == WILD ? 1 : 0);
        put_u32(out, c->tok[i].len);
        sh_buf_append(out, c->text + c->tok[i].off, c->tok[i].len);
    }
}

/* The aliases in slots [from, to) of the table; returns how many. */
static uint64_t put_aliases(const sh_miner *m, sh_buf *out, size_t from, size_t to)
{
    uint64_t n = 0;
    for (size_t i = from; i < to; i++) {
        if (m->alias_from[i] != 0) {
            put_u64(out, m->alias_from[i]);
            put_u64(out, m->alias_to[i]);
            n++;
        }
    }
    return n;
}

static int put_checksum(sh_buf *out, size_t start)
{
    if (out->oom)
        return -1;
    put_u64(out, hash_bytes(out->data + start, out->len - start));
    return out->oom ? -1 : 0;
}

int sh_miner_snapshot(const sh_miner *m, sh_buf *out)
{
    size_t start = out->len;
    put_header(m, out);
    for (const cluster *c = m->tail; c != NULL; c = c->prev)
        if (c != &m->mark)
            put_cluster(out, c);
    put_u64(out, m->stats.merged);
    put_u64(out, m->stats.aliases_dropped);
    put_u64(out, m->aliases);
    put_aliases(m, out, 0, m->alias_cap);
    return put_checksum(out, start);
}

int sh_miner_snapshot_begin(sh_miner *m, sh_buf *out)
{
    if (sh_miner_walk_begin(m) != 0)
        return -1;
    snap_state *st = &m->snap;
    memset(st, 0, sizeof(*st));
    st->start = out->len;
    st->count_at = put_header(m, out);
    if (out->oom) {
        sh_miner_walk_end(m);
        return -1;
    }
    return 0;
}

void sh_miner_snapshot_abort(sh_miner *m)
{
    sh_miner_walk_end(m);
}

int sh_miner_snapshot_step(sh_miner *m, sh_buf *out, size_t max_work)
{
    snap_state *st = &m->snap;
    size_t work = 0;
    if (!st->aliases) {
        cluster *c;
        while ((c = walk_visit(m, &work, max_work)) != NULL) {
            size_t before = out->len;
            put_cluster(out, c);
            work += out->len - before;
            st->nclusters++;
        }
        if (out->oom || m->mark.prev != NULL) {
            if (!out->oom)
                return 0;
            sh_miner_walk_end(m);
            return -1;
        }
        patch_u64(out, st->count_at, st->nclusters);
        put_u64(out, m->stats.merged);
        put_u64(out, m->stats.aliases_dropped);
        st->aliases_at = out->len;
        put_u64(out, 0);
        st->aliases = 1;
        st->alias_cap = m->alias_cap;
    }
    if (m->alias_cap != st->alias_cap) {
        /* the table grew between two steps: read it again from the start */
        out->len = st->aliases_at + 8;
        st->naliases = 0;
        st->alias_next = 0;
        st->alias_cap = m->alias_cap;
    }
    size_t to = st->alias_next + (max_work > work ? (max_work - work) / 16 + 1 : 1);
    if (to > st->alias_cap)
        to = st->alias_cap;
    st->naliases += put_aliases(m, out, st->alias_next, to);
    st->alias_next = to;
    if (!out->oom && st->alias_next < st->alias_cap)
        return 0;
    sh_miner_walk_end(m);
    patch_u64(out, st->aliases_at, st->naliases);
    return out->oom ? -1 : 1;
}

int sh_miner_snapshot_seal(sh_buf *out, size_t start, sh_miner_seal *seal, size_t max_bytes)
{
    if (out->oom)
        return -1;
    size_t len = out->len - start;
    if (!seal->begun) {
        seal->hash = hash_begin(len);
        seal->pos = 0;
        seal->begun = 1;
    }
    if (max_bytes < 8)
        max_bytes = 8; /* at least a word a call, or it never ends */
    size_t n = len - seal->pos < max_bytes ? len - seal->pos : max_bytes;
    seal->pos += hash_words(&seal->hash, out->data + start + seal->pos, n);
    if (len - seal->pos >= 8)
        return 0;
    put_u64(out, hash_end(seal->hash, out->data + start + seal->pos, len - seal->pos));
    return out->oom ? -1 : 1;
}

typedef struct reader {
    const unsigned char *p, *end;
    int bad;
} reader;

/* A little-endian integer of n bytes; 0 and r->bad when too few remain. */
static uint64_t get_le(reader *r, int n)
{
    if (r->end - r->p < n) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    return v;
}

static uint64_t get_u64(reader *r)
{
    return get_le(r, 8);
}

static uint32_t get_u32(reader *r)
{
    return (uint32_t)get_le(r, 4);
}

/* Reads one cluster of a snapshot; NULL with *why on error. */
static cluster *read_cluster(reader *r, sh_miner *m, const char **why)
{
    uint64_t id = get_u64(r), count = get_u64(r), route = get_u64(r);
    uint32_t ntok = get_u32(r);
    if (r->bad || id == 0 || route == 0 || ntok > m->cfg.max_tokens) {
        *why = r->bad ? "snapshot truncated" : "snapshot holds an invalid cluster";
        return NULL;
    }
    token *toks = malloc((ntok ? ntok : 1) * sizeof(*toks));
    if (toks == NULL) {
        *why = "out of memory";
        return NULL;
    }
    const unsigned char *base = r->p;
    for (uint32_t i = 0; i < ntok; i++) {
        if (r->end - r->p < 1) {
            r->bad = 1;
            break;
        }
        int wild = *r->p++;
        uint32_t len = get_u32(r);
        /* a token is normalised text: up to 5 * max_line + 16 bytes */
        if (r->bad || wild > 1 || len > 5 * m->cfg.max_line + 16 || (size_t)(r->end - r->p) < len) {
            r->bad = 1;
            break;
        }
        toks[i].off = (uint32_t)(r->p - base);
        toks[i].len = len;
        toks[i].hash = wild ? WILD : hash_bytes((const char *)r->p, len);
        toks[i].kind = token_kind((const char *)r->p, len);
        toks[i].shape = toks[i].kind == TOK_CONST ? shape_hash((const char *)r->p, len) : 0;
        r->p += len;
    }
    cluster *c = NULL;
    if (r->bad)
        *why = "snapshot holds an invalid cluster";
    else if ((c = cluster_make(toks, ntok, (const char *)base, id, count, route)) == NULL)
        *why = "out of memory";
    free(toks);
    return c;
}

int sh_miner_restore(sh_miner **out, const char **why, const char *data, size_t len,
                     const sh_miner_config *config)
{
    *out = NULL;
    *why = NULL;
    if (len < sizeof(MAGIC) + 4 + 5 * 8 + 8 || memcmp(data, MAGIC, sizeof(MAGIC)) != 0) {
        *why = "not a miner snapshot";
        return -1;
    }
    uint64_t sum = 0;
    for (int i = 0; i < 8; i++)
        sum |= (uint64_t)(unsigned char)data[len - 8 + (size_t)i] << (8 * i);
    if (sum != hash_bytes(data, len - 8)) {
        *why = "snapshot checksum mismatch";
        return -1;
    }
    reader r = {(const unsigned char *)data + sizeof(MAGIC), (const unsigned char *)data + len - 8,
                0};
    if (get_u32(&r) != SH_MINER_SNAPSHOT_VERSION) {
        *why = "unsupported snapshot version";
        return -1;
    }
    sh_miner *m;
    if (sh_miner_new(&m, config) != 0) {
        *why = "out of memory";
        return -1;
    }
    sh_miner_stats st = {0};
    st.lines = get_u64(&r);
    st.created = get_u64(&r);
    st.evicted = get_u64(&r);
    st.truncated = get_u64(&r);
    uint64_t n = get_u64(&r);
    for (uint64_t i = 0; i < n && *why == NULL; i++) {
        cluster *c = read_cluster(&r, m, why);
        if (c == NULL)
            break;
        if (ids_find(m, c->id) != NULL) {
            *why = "snapshot holds a cluster id twice";
            cluster_free(c);
            break;
        }
        uint64_t evicted_before = m->stats.evicted;
        if (cluster_insert(m, c) != 0) {
            *why = "out of memory";
            bucket_remove(m, c);
            cluster_free(c);
            break;
        }
        st.evicted += m->stats.evicted - evicted_before;
    }
    if (*why == NULL) {
        st.merged = get_u64(&r);
        uint64_t dropped = get_u64(&r);
        uint64_t na = get_u64(&r);
        if (r.bad || na > (uint64_t)(r.end - r.p) / 16) {
            *why = "snapshot holds an invalid alias table";
        } else {
            for (uint64_t i = 0; i < na; i++) {
                uint64_t from = get_u64(&r), to = get_u64(&r);
                if (from == 0 || to == 0) {
                    *why = "snapshot holds an invalid alias table";
                    break;
                }
                /* a snapshot written in steps may hold a cluster merged
                 * away during its walk and that merge's alias */
                if (ids_find(m, from) == NULL)
                    alias_add(m, from, to);
            }
            st.aliases_dropped = dropped + m->stats.aliases_dropped;
        }
    }
    if (*why == NULL && (r.bad || r.p != r.end))
        *why = "snapshot has trailing or missing bytes";
    if (*why != NULL) {
        sh_miner_free(m);
        return -1;
    }
    st.clusters = m->stats.clusters;
    m->stats = st;
    *out = m;
    return 0;
}
