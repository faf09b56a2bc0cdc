/*
 * Watch engine: sliding-window counters with thresholds. "A few 5xx are
 * normal, many in a minute are not."
 *
 * A watch set holds watches, added and removed at run time by id. A watch
 * has a match, a window (ms) and a threshold. A match is one of:
 *   - a field compared with a value: `status >= 500`, `level == "error"`,
 *     `service != "x"`, `path prefix "/api"`, `message contains "timeout"`;
 *   - a cluster id: the event's "cluster" field equals an integer (the
 *     template miner's cluster id);
 *   - a fingerprint: the event's "fingerprint" field equals a string.
 * An event is a small set of key/value fields (numbers or strings).
 *
 * Counting is exact at millisecond resolution: each watch keeps the
 * timestamps of its last `threshold` matching events in a ring, which is
 * all it takes to know whether at least `threshold` of them fall in the
 * window. An event observed at time s counts at time t while t - s <
 * window_ms. Time never runs backwards inside a set: an event observed
 * with an earlier now_ms than the latest one seen is counted at the latest.
 *
 * Firing (per watch): a watch starts armed. On a matching event at time t,
 * the timestamps that left the window are dropped; if fewer than threshold
 * remain the watch is (re-)armed; t is added; the watch fires when it is
 * armed, its count has reached threshold and it has not fired during the
 * last window_ms (t - last fire >= window_ms). Firing disarms it. So a
 * watch fires at most once per window, and fires again only after its
 * count has dropped below the threshold and reached it again. Counts that
 * leave the window are dropped quietly: nothing is reported.
 *
 * Memory is bounded: at most max_watches watches, and the thresholds of all
 * watches together at most max_slots (each threshold is that many 8-byte
 * timestamps, allocated when the watch is added). Ids, field names and
 * values are bounded in length; event values longer than
 * SH_WATCH_MAX_EVENT_VALUE are compared on their first bytes.
 *
 * A set is not thread-safe; callers that share one serialise access.
 */
#ifndef SELF_HEAL_WATCH_H
#define SELF_HEAL_WATCH_H

#include "self_heal/common.h"

#define SH_WATCH_DEFAULT_MAX_WATCHES 10000
#define SH_WATCH_MAX_WATCHES_LIMIT 1000000
#define SH_WATCH_DEFAULT_MAX_SLOTS (4u * 1024 * 1024) /* 32 MiB of timestamps */
#define SH_WATCH_MAX_SLOTS_LIMIT (256u * 1024 * 1024)
#define SH_WATCH_MAX_ID 128                 /* bytes */
#define SH_WATCH_MAX_FIELD 128              /* bytes of a field name */
#define SH_WATCH_MAX_VALUE 1024             /* bytes of a watch's string value */
#define SH_WATCH_MAX_EVENT_VALUE 65536      /* bytes of an event value compared */
#define SH_WATCH_MAX_FIELDS 256             /* fields of one event */
#define SH_WATCH_MAX_THRESHOLD 1000000      /* events */
#define SH_WATCH_MAX_WINDOW_MS 2592000000LL /* 30 days */

/* The fields the cluster and fingerprint matches read. */
#define SH_WATCH_CLUSTER_FIELD "cluster"
#define SH_WATCH_FINGERPRINT_FIELD "fingerprint"

typedef enum sh_watch_type {
    SH_WATCH_NONE = 0, /* no value (an absent field) */
    SH_WATCH_INT,      /* int64_t i */
    SH_WATCH_UINT,     /* uint64_t u (any; compared by value with INT) */
    SH_WATCH_FLOAT,    /* double f */
    SH_WATCH_STR       /* sh_slice s */
} sh_watch_type;

typedef struct sh_watch_value {
    sh_watch_type type;
    int64_t i;
    uint64_t u;
    double f;
    sh_slice s;
} sh_watch_value;

sh_watch_value sh_watch_int(int64_t i);
sh_watch_value sh_watch_uint(uint64_t u);
sh_watch_value sh_watch_float(double f);
sh_watch_value sh_watch_str(const char *ptr, size_t len);

typedef struct sh_watch_field {
    sh_slice key;
    sh_watch_value value;
} sh_watch_field;

/* An event: borrowed fields, valid for the call that reads them. A watch
 * matches when any field with its name matches (an event may carry a name
 * twice); it counts the event once. */
typedef struct sh_watch_event {
    const sh_watch_field *fields;
    size_t nfields; /* at most SH_WATCH_MAX_FIELDS */
} sh_watch_event;

typedef enum sh_watch_kind {
    SH_WATCH_MATCH_FIELD = 0,
    SH_WATCH_MATCH_CLUSTER,
    SH_WATCH_MATCH_FINGERPRINT
} sh_watch_kind;

/* Numbers compare by value (500 == 500.0; 64-bit integers exactly). Strings
 * compare bytewise: EQ, NE, PREFIX, CONTAINS. A field of the other type
 * than the watch's value matches NE only; an absent field matches nothing. */
typedef enum sh_watch_op {
    SH_WATCH_EQ = 0,
    SH_WATCH_NE,
    SH_WATCH_LT,
    SH_WATCH_LE,
    SH_WATCH_GT,
    SH_WATCH_GE,
    SH_WATCH_PREFIX,
    SH_WATCH_CONTAINS
} sh_watch_op;

typedef struct sh_watch_spec {
    sh_slice id; /* 1..SH_WATCH_MAX_ID bytes, any bytes */
    sh_watch_kind kind;
    sh_slice field;       /* FIELD: 1..SH_WATCH_MAX_FIELD bytes */
    sh_watch_op op;       /* FIELD */
    sh_watch_value value; /* FIELD: a number (not NaN) or a string */
    uint64_t cluster;     /* CLUSTER */
    sh_slice fingerprint; /* FINGERPRINT: 1..SH_WATCH_MAX_VALUE bytes */
    int64_t window_ms;    /* 1..SH_WATCH_MAX_WINDOW_MS */
    uint64_t threshold;   /* 1..SH_WATCH_MAX_THRESHOLD */
} sh_watch_spec;

typedef struct sh_watch_config {
    size_t max_watches; /* default SH_WATCH_DEFAULT_MAX_WATCHES */
    size_t max_slots;   /* sum of thresholds; default SH_WATCH_DEFAULT_MAX_SLOTS */
} sh_watch_config;

typedef struct sh_watch_set sh_watch_set;

/* config may be NULL for the defaults; zero fields take their default.
 * Returns 0, or -1 when a field is beyond its limit or memory runs out. */
int sh_watch_set_new(sh_watch_set **out, const sh_watch_config *config);
void sh_watch_set_free(sh_watch_set *set);

typedef enum sh_watch_status {
    SH_WATCH_ADDED = 0, /* a new id */
    SH_WATCH_REPLACED,  /* the id existed with another spec: its counts start over */
    SH_WATCH_UNCHANGED, /* the id existed with this very spec: kept as it was */
    SH_WATCH_EINVALID,  /* the spec is invalid (*why says how) */
    SH_WATCH_EFULL,     /* max_watches or max_slots would be exceeded */
    SH_WATCH_ENOMEM
} sh_watch_status;

/* Adds (or replaces) the watch spec->id. Returns 0 with *status ADDED,
 * REPLACED or UNCHANGED, or -1 with *status EINVALID, EFULL or ENOMEM and
 * *why a static message; on -1 the set is as it was. why may be NULL. */
int sh_watch_add(sh_watch_set *set, const sh_watch_spec *spec, sh_watch_status *status,
                 const char **why);

/* Removes a watch. Returns 0, or -1 when no watch has that id. */
int sh_watch_remove(sh_watch_set *set, sh_slice id);

size_t sh_watch_count(const sh_watch_set *set);

/* Ids of the watches that fired, in firing order. An id points into the
 * set: valid until that watch is removed or replaced, or the set freed. */
typedef struct sh_watch_fired {
    sh_slice *ids;
    size_t len;
    size_t cap;
} sh_watch_fired;

void sh_watch_fired_init(sh_watch_fired *fired);
void sh_watch_fired_clear(sh_watch_fired *fired); /* len = 0, memory kept */
void sh_watch_fired_free(sh_watch_fired *fired);

/* Counts one event at now_ms in every watch it matches and appends the ids
 * of the watches that fire to fired_out (which is not cleared first).
 * Returns 0, or -1 (nothing changed) when the event has more than
 * SH_WATCH_MAX_FIELDS fields or fired_out cannot grow. */
int sh_watch_observe(sh_watch_set *set, const sh_watch_event *event, int64_t now_ms,
                     sh_watch_fired *fired_out);

typedef struct sh_watch_info {
    const sh_watch_spec *spec; /* slices point into the set */
    uint64_t count;            /* events in the window at the set's clock, at most threshold */
    uint64_t matched;          /* matching events ever */
    uint64_t fired;            /* times fired */
    int armed;                 /* the next time count reaches threshold fires (hold-off aside) */
    int has_fired;
    int64_t last_fired_ms; /* when has_fired */
} sh_watch_info;

/* Looks a watch up by id. Returns 0, or -1 when there is none. */
int sh_watch_get(const sh_watch_set *set, sh_slice id, sh_watch_info *out);

/* Calls fn for every watch, in the order they were added (a replaced watch
 * keeps its place). Stops early when fn returns non-zero. */
typedef int (*sh_watch_visit_fn)(void *arg, const sh_watch_info *info);
void sh_watch_each(const sh_watch_set *set, sh_watch_visit_fn fn, void *arg);

/* An upper bound of the work sh_watch_observe would do for this event,
 * in units of about one watch compared (a string byte compared counts a
 * quarter): it reads how many watches share a chain with each field.
 * Callers that hold a shared set's lock use it to decide whether the
 * event is small enough to observe there (docs/nif.md). */
uint64_t sh_watch_observe_work(const sh_watch_set *set, const sh_watch_event *event);

/*
 * A walk over the watches in steps, in the order they were added, so that
 * a caller can release its lock between steps. Watches added during the
 * walk are not visited, a watch removed before its turn is not, a watch
 * replaced before its turn is visited as it is then. One walk at a time
 * per set; the set must not be freed during one. begin returns 0, or -1
 * when a walk is going on; step visits about max_work watches (one at
 * least) and returns 1 when every watch was visited, 0 when some remain,
 * -1 when fn returned non-zero.
 */
int sh_watch_walk_begin(sh_watch_set *set);
int sh_watch_walk_step(sh_watch_set *set, size_t max_work, sh_watch_visit_fn fn, void *arg);
void sh_watch_walk_end(sh_watch_set *set);

typedef struct sh_watch_stats {
    uint64_t watches;   /* now */
    uint64_t slots;     /* sum of the thresholds now */
    uint64_t events;    /* events observed */
    uint64_t evaluated; /* watch comparisons made (a measure of work) */
    uint64_t fired;     /* fires */
    int has_clock;
    int64_t clock_ms; /* the latest now_ms seen, when has_clock */
} sh_watch_stats;

void sh_watch_stats_get(const sh_watch_set *set, sh_watch_stats *out);

#endif
