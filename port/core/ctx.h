/*
 * The port program's shared context: configuration, durable state, audit
 * log, scrubber, and the thread-safe way to send notifications. One
 * port_ctx lives for the whole process (self_heal_port.c); commands get it
 * as their first argument and may run on several worker threads at once.
 *
 * Lifetimes. `configure` replaces the configuration and the scrubber, and
 * a new state_dir replaces the state database and the audit log, while
 * commands on other threads may be using the old ones. Such a thread holds
 * a pin (port_pin): the objects current when the pin was taken, kept alive
 * until the pin is released; an object replaced meanwhile is freed by the
 * release of the last pin that holds it (or at once when none does). While
 * a thread has entered a pin, port_config_get, port_scrubber, port_state
 * and port_audit give it the pinned objects. The worker pool takes a pin
 * for each request when it arrives and releases it once the reply is
 * written, so a request runs with the configuration in effect when it
 * arrived; a thread the port starts outside the pool enters a pin taken by
 * the thread that starts it, or takes its own for each unit of work.
 * Without a pin these functions give the current objects, which stay valid
 * only until the next configure: that is safe on the thread that runs
 * configure (the reader thread) and in single-threaded use (run mode,
 * tests), nowhere else. Configure replaces one object after the other: a
 * pin taken on another thread in the middle of one may hold the new
 * configuration with the previous scrubber or state (each of them valid).
 */
#ifndef SELF_HEAL_PORT_CTX_H
#define SELF_HEAL_PORT_CTX_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "base.h"

typedef struct state_db state_db;       /* port/core/state.h */
typedef struct audit_log audit_log;     /* port/core/audit.h */
typedef struct sh_scrubber sh_scrubber; /* include/self_heal/scrub.h */
typedef struct port_pin port_pin;
typedef struct port_held port_held; /* ctx.c */

typedef struct port_ctx {
    pthread_mutex_t lock; /* guards config, the pointers below and the pins */
    json_t *config;       /* last `configure` object; replaced whole, never mutated; its
                             reference count only changes under lock */
    state_db *state;      /* NULL until configured with a state_dir */
    audit_log *audit;     /* NULL until configured with a state_dir */
    sh_scrubber *scrub;   /* built-in rules + config "scrub.patterns"; NULL: built-in only */
    port_pin *pins;       /* the pins taken and not yet released */
    char *state_dir;      /* the directory of state and audit, when known */
    port_held *held;      /* replaced state pairs pins still hold, by directory */
    atomic_int stopping;  /* set on EOF/SIGTERM: long jobs check it and give up */
    int one_shot;         /* `self_heal_port run CMD`: no job recovery, no background threads */
} port_ctx;

/* What a pin holds; the fields belong to ctx.c. */
struct port_pin {
    port_ctx *ctx;   /* NULL: not taken, or released */
    port_pin *next;  /* in ctx->pins */
    port_pin *outer; /* the pin its thread had entered before this one */
    json_t *config;  /* a reference counted under ctx->lock */
    sh_scrubber *scrub;
    state_db *state; /* NULL until the thread first asks for a state opened later */
    audit_log *audit;
};

/* Takes a pin on what the calling thread sees now: the objects of the pin
 * it has entered, else the current ones. Never fails. */
void port_pin_take(port_pin *pin, port_ctx *ctx);

/* The calling thread uses pin until port_pin_leave (pins nest). */
void port_pin_enter(port_pin *pin);
void port_pin_leave(port_pin *pin);

/* Releases a taken pin that no thread has entered any more: replaced
 * objects it was the last to hold are freed. Idempotent. */
void port_pin_release(port_pin *pin);

/* Waits up to ms until no pin is left (at shutdown: the threads that hold
 * them have ended their work); 0 then, else -1. */
int port_pins_wait(port_ctx *ctx, long long ms);

/* port_pin_take + port_pin_enter, and port_pin_leave + port_pin_release,
 * for a thread that pins itself. */
void port_pin_begin(port_pin *pin, port_ctx *ctx);
void port_pin_end(port_pin *pin);

/* Replacements, on the thread that runs configure (or at exit). Each takes
 * ownership of the new object (NULL: none); the old one is freed at once
 * when no pin holds it, else by the release of the last pin that does. */
void port_set_config(port_ctx *ctx, json_t *config);
void port_set_scrubber(port_ctx *ctx, sh_scrubber *scrub);
/* The state database and audit log (state_ctx_ensure opens new ones). */
void port_set_state(port_ctx *ctx, state_db *state, audit_log *audit);

/* On the thread that runs configure, switching to dir: when pins still
 * hold the state database or audit log a previous switch away from dir
 * replaced, they become current again (returns 1; state_ctx_ensure opens
 * what is missing), so one process never has two audit logs, each
 * verifying and appending to the same file, open on one directory. Else
 * returns 0 and changes nothing. */
int port_state_reuse(port_ctx *ctx, const char *dir);

/* Records that the current state database and audit log are dir's (after
 * state_ctx_ensure opened them for a configure): once replaced, they can
 * be found again by port_state_reuse while pins hold them. */
void port_state_opened(port_ctx *ctx, const char *dir);

/* With ctx->lock held (state_ctx_ensure, once it has opened them): the
 * calling thread's pin takes the current state database and audit log if
 * it holds none yet, so a configure right after cannot take them away. */
void port_pin_adopt_state_locked(port_ctx *ctx);

/* The state database, audit log and scrubber the calling thread may use
 * (its pin's, else the current ones; each may be NULL). */
state_db *port_state(port_ctx *ctx);
audit_log *port_audit(port_ctx *ctx);
const sh_scrubber *port_scrubber(port_ctx *ctx);

/* A copy of the value at a dotted path ("llm.provider") of the calling
 * thread's configuration (its pin's, else the current one), or NULL. The
 * caller owns it (json_decref); the shared object is never handed out, so
 * its reference count is never touched by two threads at once. */
json_t *port_config_get(port_ctx *ctx, const char *path);

/* A copy of the calling thread's whole configuration (an empty object when
 * none was sent); the caller owns it. */
json_t *port_config(port_ctx *ctx);

/* Convenience getters over port_config_get with a default. */
const char *port_config_string(port_ctx *ctx, const char *path, const char *dflt, char *buf,
                               size_t buflen);
long long port_config_int(port_ctx *ctx, const char *path, long long dflt);
double port_config_real(port_ctx *ctx, const char *path, double dflt);

#endif
