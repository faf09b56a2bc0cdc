/*
 * The port program's shared context: configuration, durable state, audit
 * log, scrubber, and the thread-safe way to send notifications. One
 * port_ctx lives for the whole process (self_heal_port.c); commands get it
 * as their first argument and may run on several worker threads at once.
 */
#ifndef SELF_HEAL_PORT_CTX_H
#define SELF_HEAL_PORT_CTX_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct state_db state_db;       /* port/state.h */
typedef struct audit_log audit_log;     /* port/audit.h */
typedef struct sh_scrubber sh_scrubber; /* include/self_heal/scrub.h */

typedef struct port_ctx {
    pthread_mutex_t lock; /* guards config and the pointers below */
    json_t *config;       /* last `configure` object; replaced whole, never mutated */
    state_db *state;      /* NULL until configured with a state_dir */
    audit_log *audit;     /* NULL until configured with a state_dir */
    sh_scrubber *scrub;   /* built-in rules + config "scrub.patterns"; never NULL after init */
    atomic_int stopping;  /* set on EOF/SIGTERM: long jobs check it and give up */
    int one_shot;         /* `self_heal_port run CMD`: no job recovery, no background threads */
} port_ctx;

/* The state database, audit log and scrubber as they are now (read under
 * ctx->lock; each may be NULL). A replaced one stays alive until exit. */
state_db *port_state(port_ctx *ctx);
audit_log *port_audit(port_ctx *ctx);
const sh_scrubber *port_scrubber(port_ctx *ctx);

/* A new reference to the current configuration (an empty object when none
 * was sent). Thread-safe; the caller json_decref()s it. */
json_t *port_config(port_ctx *ctx);

/* The configuration value at a dotted path ("llm.provider"), as a new
 * reference, or NULL. */
json_t *port_config_get(port_ctx *ctx, const char *path);

/* Convenience getters over port_config_get with a default. */
const char *port_config_string(port_ctx *ctx, const char *path, const char *dflt, char *buf,
                               size_t buflen);
long long port_config_int(port_ctx *ctx, const char *path, long long dflt);
double port_config_real(port_ctx *ctx, const char *path, double dflt);

/* Sends a notification frame {"event": event, ...fields} to the BEAM (or
 * to stderr in shell mode). Thread-safe; steals `fields` (may be NULL).
 * Returns 0, or -1 when the frame could not be written. */
int port_notify(port_ctx *ctx, const char *event, json_t *fields);

/* Reads an environment variable named by config (secrets are never in the
 * configuration itself, only the names of the variables holding them).
 * Returns NULL when the name is NULL/empty or the variable is unset. */
const char *port_secret(const char *env_name);

/* Milliseconds of the monotonic clock. */
long long port_now_ms(void);

/* Sleeps ms in steps of at most 50 ms; returns 1 as soon as *cancel (may
 * be NULL) is non-zero, else 0 once the time has passed. */
int port_sleep_ms(long ms, const atomic_int *cancel);

/* The writer port_notify hands complete frames to (self_heal_port.c sets
 * it; without one, notifications go to stderr as JSON lines). It steals
 * msg and returns 0 or -1. */
typedef int (*port_notify_fn)(json_t *msg);
void port_set_notify_hook(port_notify_fn fn);

#endif
