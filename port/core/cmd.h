/*
 * Port commands. A command is a function from (context, args object) to a
 * result object; on failure it returns NULL and fills `err` (code +
 * message, both safe to show: never a secret). Each module exports a table
 * of its commands; self_heal_port.c concatenates them and dispatches
 * requests to a pool of worker threads, so a command may block on the
 * network or a child process without stopping new requests.
 */
#ifndef SELF_HEAL_PORT_CMD_H
#define SELF_HEAL_PORT_CMD_H

#include <jansson.h>
#include <stddef.h>

#include "ctx.h"

typedef struct cmd_error {
    const char *code; /* static string: "bad_args", "unavailable", "budget", ... */
    char message[512];
} cmd_error;

/* printf-style; the message is cut to fit. */
void cmd_error_set(cmd_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Configuration readers that fail with a "bad_config" error naming the
 * path. A string: absent or null gives dflt; else a string without NUL
 * bytes shorter than len. */
int cmd_config_string(port_ctx *ctx, const char *path, const char *dflt, char *buf, size_t len,
                      cmd_error *err);
/* A list: absent or null gives *out NULL; else an array of at most 256
 * non-empty strings (*out a new reference). */
int cmd_config_strings(port_ctx *ctx, const char *path, json_t **out, cmd_error *err);
/* An argv template: absent or null gives *out NULL; else 1..max strings. */
int cmd_config_argv(port_ctx *ctx, const char *path, size_t max, json_t **out, cmd_error *err);

typedef json_t *(*cmd_fn)(port_ctx *ctx, json_t *args, cmd_error *err);

enum {
    CMD_INLINE = 1 /* cheap and non-blocking: runs on the reader thread, in order */
};

typedef struct cmd_def {
    const char *name;
    cmd_fn fn;
    int flags;
} cmd_def;

/* Command tables, one per module. Each sets *n and returns a static array. */
const cmd_def *core_commands(size_t *n);     /* self_heal_port.c: version, ping, configure, scrub */
const cmd_def *state_commands(size_t *n);    /* state_cmd.c: jobs, job, verify-audit */
const cmd_def *analyze_commands(size_t *n);  /* analyze.c: analyze, triage_batch */
const cmd_def *ticket_commands(size_t *n);   /* ticket.c: ticket_upsert, ticket_list */
const cmd_def *notify_commands(size_t *n);   /* notify.c: notify, telegram_poll, link_verify */
const cmd_def *pipeline_commands(size_t *n); /* pipeline.c: escalate, update */
const cmd_def *fix_commands(size_t *n);      /* fix_cmd.c: fix, fixes, approve, skip, ... */
const cmd_def *dash_commands(size_t *n);     /* dash.c: stats, deploys, audit_tail, fix_patch */
const cmd_def *trust_commands(size_t *n);    /* trust.c: consent */

/* Opens ctx->state and ctx->audit from config "state_dir" when they are not
 * open yet (under ctx->lock); for commands run before the pipeline opened
 * them and for tests. Returns 0, or -1 with err code "no_state" when no
 * state_dir is configured or it cannot be opened. On 0 a pinned caller's
 * pin holds them from then on. It does not recover jobs:
 * state_jobs_recover belongs to the process start. */
int state_ctx_ensure(port_ctx *ctx, cmd_error *err);

#endif
