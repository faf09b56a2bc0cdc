/*
 * What every part of the port uses without the shared context (ctx.h,
 * which includes this): notifications to the BEAM, secrets by the name of
 * their environment variable, the clock.
 */
#ifndef SELF_HEAL_PORT_BASE_H
#define SELF_HEAL_PORT_BASE_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct port_ctx port_ctx;

/* Sends a notification frame {"event": event, ...fields} to the BEAM (or
 * to stderr in shell mode). Thread-safe; steals `fields` (may be NULL).
 * Returns 0, or -1 when the frame could not be written. */
int port_notify(port_ctx *ctx, const char *event, json_t *fields);

/* Reads an environment variable named by config (secrets are never in the
 * configuration itself, only the names of the variables holding them).
 * Returns NULL when the name is NULL/empty or the variable is unset. */
const char *port_secret(const char *env_name);

/* The clock: seconds since the epoch (overridable for tests with
 * SELF_HEAL_NOW). */
int64_t port_now(void);

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
