/*
 * Template miner: groups stackless log lines online, Drain-style.
 *
 * Each line is normalised (normalize.h: numbers, ids, addresses become
 * typed placeholders), split into tokens on blanks, and routed by its token
 * count and its first tokens (a token holding a digit routes as a
 * wildcard) to a small set of candidate clusters. The most similar
 * candidate (share of positions whose tokens are equal) takes the line when
 * the similarity reaches the threshold, and positions that differ become
 * parameters (<*>) of its template; else a cluster of a few tokens more or
 * fewer whose alignment with the line leaves out only values takes it;
 * otherwise the line starts a cluster. Two different words or constants
 * at one position are two events until the evidence says the position
 * holds values (eight clusters differing there only, or the same two
 * values alternating in another template): then those clusters merge.
 * The details and the measured accuracy are in docs/miner.md.
 *
 * Ids are stable: a cluster's id is a 64-bit hash of the template it was
 * created with, kept when the template generalises later, and carried by
 * snapshots, so fingerprints derived from it survive both.
 *
 * Memory is bounded: at most max_clusters clusters (the least recently
 * used is evicted beyond that, and counted), at most max_tokens tokens and
 * max_line bytes of each line are used.
 *
 * A miner is not thread-safe; callers that share one serialise access.
 * The work of a line is split so that the part under a shared miner's lock
 * stays short and its cost is known before it starts:
 * sh_miner_prepare (normalise and tokenise; reads only the configuration,
 * so it needs no lock) and sh_miner_add_line (route, match, generalise or
 * insert, under a budget). Long readers walk the clusters in steps
 * (sh_miner_walk_*, sh_miner_snapshot_*), so a lock can be released
 * between steps while lines keep coming.
 */
#ifndef SELF_HEAL_MINER_H
#define SELF_HEAL_MINER_H

#include "self_heal/common.h"

#define SH_MINER_SNAPSHOT_VERSION 1

typedef struct sh_miner_config {
    size_t max_clusters; /* default 10,000 */
    size_t max_tokens;   /* default 128 */
    size_t max_line;     /* bytes of a line that are read; default 16 KiB */
    /* The grouping rules' constants (docs/miner.md). Zero takes the
     * default, which is the one configuration for every source; the
     * benchmark varies them to choose them by leave-one-system-out. */
    double sim_threshold; /* share of equal positions to join; default 0.4 */
    size_t siblings;      /* clusters differing at one position that merge */
    size_t route_tokens;  /* leading tokens in the routing key */
    unsigned rules;       /* SH_MINER_RULE_* | SH_MINER_RULES_SET; 0: default */
} sh_miner_config;

/* The rules that can be switched (docs/miner.md); the default set is the
 * one chosen by leave-one-system-out. */
#define SH_MINER_RULE_WORDS 0x01u        /* two different plain words veto */
#define SH_MINER_RULE_KEYVALUE 0x02u     /* key=value splits after '=' */
#define SH_MINER_RULE_ROUTE_WORDS 0x04u  /* only plain words route by text */
#define SH_MINER_RULE_SIB_PARAMS 0x08u   /* parameters agree in siblings */
#define SH_MINER_RULE_VALUE_GROUPS 0x10u /* value-only bracket groups go */
#define SH_MINER_RULE_CONSTS 0x20u       /* two different constants veto */
#define SH_MINER_RULE_RECUR 0x40u        /* values met in two templates */
#define SH_MINER_RULE_LENGTHS 0x80u      /* join across token counts */
#define SH_MINER_RULES_ALL 0xffu
#define SH_MINER_RULES_BEFORE_EVIDENCE 0x1fu /* the set before the last three */
#define SH_MINER_RULES_SET 0x80000000u       /* rules holds an explicit set */

typedef struct sh_miner_stats {
    uint64_t lines;           /* lines added */
    uint64_t clusters;        /* clusters now */
    uint64_t created;         /* clusters ever created */
    uint64_t evicted;         /* clusters evicted at the bound */
    uint64_t truncated;       /* lines cut at max_line or max_tokens */
    uint64_t merged;          /* clusters merged into a sibling */
    uint64_t aliases_dropped; /* merged ids whose alias was not kept */
} sh_miner_stats;

typedef struct sh_miner sh_miner;

void sh_miner_config_default(sh_miner_config *config);

/* config may be NULL for the defaults; zero fields take their default. */
int sh_miner_new(sh_miner **out, const sh_miner_config *config);
void sh_miner_free(sh_miner *miner);

/* Adds one line and stores the id of its cluster in *id. Returns 0, or -1
 * when out of memory (the miner stays usable). The same as
 * sh_miner_prepare then sh_miner_add_line without a budget. */
int sh_miner_add(sh_miner *miner, uint64_t *id, const char *line, size_t len);

/* A line normalised and tokenised for one miner's configuration, ready to
 * be added. Reusable: each sh_miner_prepare overwrites it. */
typedef struct sh_miner_line sh_miner_line;

int sh_miner_line_new(sh_miner_line **out);
void sh_miner_line_free(sh_miner_line *line);

/* The work sh_miner_prepare does on a line of len bytes: the bytes it
 * reads (at most max_line). About 1-25 ns each (normalize.c is O(n)). */
size_t sh_miner_prepare_work(const sh_miner *miner, size_t len);

/* Normalises and tokenises line[0..len) into out. Reads only the miner's
 * configuration, which never changes: safe without the miner's lock.
 * Returns 0, or -1 when out of memory. */
int sh_miner_prepare(const sh_miner *miner, sh_miner_line *out, const char *line, size_t len);

/* Adds a prepared line. The work it would take (token comparisons with
 * the clusters of its route, the table growth an insert or a merge may
 * cause, the eviction) is counted first: above max_work nothing is done
 * and 1 is returned. Returns 0 with *id set, 1 (over budget, the miner
 * unchanged), or -1 when out of memory. With max_work UINT64_MAX it also
 * grows the tables that are near their limit, so that the lines after it
 * fit in a small budget again. */
int sh_miner_add_line(sh_miner *miner, const sh_miner_line *line, uint64_t max_work, uint64_t *id);

void sh_miner_stats_get(const sh_miner *miner, sh_miner_stats *out);

/* The id a cluster id lives on as: itself, or, when its cluster was merged
 * into another, that cluster's id. */
uint64_t sh_miner_resolve(const sh_miner *miner, uint64_t id);

/* Calls fn for every cluster, most recently used first: its id, the
 * number of lines it took, its template (tokens joined by one space,
 * parameters written <*>) and the token positions that are parameters.
 * Stops early when fn returns non-zero. */
typedef int (*sh_miner_visit_fn)(void *arg, uint64_t id, uint64_t count, sh_slice template_text,
                                 const uint32_t *params, size_t nparams);
void sh_miner_each(const sh_miner *miner, sh_miner_visit_fn fn, void *arg);

/* Appends a versioned binary snapshot of the miner to out. */
int sh_miner_snapshot(const sh_miner *miner, sh_buf *out);

/*
 * Walks in steps. A walk visits the clusters least recently used first;
 * between two steps the caller may release its lock and other calls may
 * add lines: a cluster is visited at most once, in the state it has when
 * it is visited; clusters made after the walk began are not visited, and
 * clusters evicted or merged away before their turn are not either. One
 * walk at a time per miner (walk or snapshot); the miner must not be freed
 * during one.
 *
 * sh_miner_walk_begin returns 0, or -1 when a walk is already going on.
 * sh_miner_walk_step visits clusters until about max_work (tokens and
 * bytes of template) is spent; it returns 1 when every cluster has been
 * visited, 0 when some remain, -1 when fn returned non-zero.
 */
int sh_miner_walk_begin(sh_miner *miner);
int sh_miner_walk_step(sh_miner *miner, size_t max_work, sh_miner_visit_fn fn, void *arg);
void sh_miner_walk_end(sh_miner *miner);

/*
 * A snapshot written in steps over a walk (same format as
 * sh_miner_snapshot): begin writes the header, each step about max_work
 * bytes of clusters and then of the alias table; then
 * sh_miner_snapshot_seal appends the checksum, also in steps, and without
 * the miner (no lock needed). Counters are those of the moment the walk
 * began. The alias table is read as it is in the last steps; an alias
 * whose merged-away id is also one of the snapshot's clusters is ignored
 * by sh_miner_restore. begin returns 0, or -1 when a walk is going on;
 * step returns 1 when every cluster and alias is written (the walk is
 * over), 0 when there is more, -1 when out of memory (the walk is over).
 * abort ends an unfinished one.
 */
int sh_miner_snapshot_begin(sh_miner *miner, sh_buf *out);
int sh_miner_snapshot_step(sh_miner *miner, sh_buf *out, size_t max_work);
void sh_miner_snapshot_abort(sh_miner *miner);

/* The checksum of a snapshot written in steps from out->data + start:
 * zero it first; each call hashes about max_bytes more and the last one
 * appends the checksum. 1 when done, 0 when there is more, -1 when out of
 * memory. */
typedef struct sh_miner_seal {
    size_t pos;
    uint64_t hash;
    int begun;
} sh_miner_seal;
int sh_miner_snapshot_seal(sh_buf *out, size_t start, sh_miner_seal *seal, size_t max_bytes);

/* Makes a miner from a snapshot. Returns 0, or -1 with *why set to a
 * static message when the snapshot is invalid or memory runs out. A
 * snapshot holding more clusters than config allows keeps the most
 * recently used ones. */
int sh_miner_restore(sh_miner **out, const char **why, const char *data, size_t len,
                     const sh_miner_config *config);

#endif
