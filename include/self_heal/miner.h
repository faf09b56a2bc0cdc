/*
 * Template miner: groups stackless log lines online, Drain-style.
 *
 * Each line is normalised (normalize.h: numbers, ids, addresses become
 * typed placeholders), split into tokens on blanks, and routed by its token
 * count and its first tokens (a token holding a digit routes as a
 * wildcard) to a small set of candidate clusters. The most similar
 * candidate (share of positions whose tokens are equal) takes the line when
 * the similarity reaches the threshold, and positions that differ become
 * parameters (<*>) of its template; otherwise the line starts a cluster.
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
 */
#ifndef SELF_HEAL_MINER_H
#define SELF_HEAL_MINER_H

#include "self_heal/common.h"

#define SH_MINER_SNAPSHOT_VERSION 1

typedef struct sh_miner_config {
    size_t max_clusters; /* default 10,000 */
    size_t max_tokens;   /* default 128 */
    size_t max_line;     /* bytes of a line that are read; default 16 KiB */
} sh_miner_config;

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
 * when out of memory (the miner stays usable). */
int sh_miner_add(sh_miner *miner, uint64_t *id, const char *line, size_t len);

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

/* Makes a miner from a snapshot. Returns 0, or -1 with *why set to a
 * static message when the snapshot is invalid or memory runs out. A
 * snapshot holding more clusters than config allows keeps the most
 * recently used ones. */
int sh_miner_restore(sh_miner **out, const char **why, const char *data, size_t len,
                     const sh_miner_config *config);

#endif
