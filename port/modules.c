/*
 * The modules' setup on configure (modules.h): the scrubber from
 * "scrub.patterns"; state_dir/self_heal.db and audit.jsonl opened when
 * state_dir is set or changed, and the first time, the audit records the
 * previous process committed but did not append appended
 * (effect_recover) and the jobs it left resumed (resume.c); the fix
 * loop's scheduler started.
 */
#include "modules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "effect.h"
#include "fix.h"
#include "resume.h"
#include "self_heal/scrub.h"
#include "state.h"

static char open_dir[4096]; /* the state_dir open in ctx (ctx->lock) */

/* The state directories whose jobs this process has recovered (only the
 * reader thread, in configure, reads and adds them). */
typedef struct recovered_dir {
    struct recovered_dir *next;
    char path[];
} recovered_dir;

static recovered_dir *recovered_dirs;

static int build_scrubber(port_ctx *ctx, cmd_error *err)
{
    json_t *patterns = port_config_get(ctx, "scrub.patterns");
    const char *list[64];
    size_t n = 0;
    if (patterns != NULL && !json_is_array(patterns)) {
        json_decref(patterns);
        cmd_error_set(err, "bad_config", "scrub.patterns must be an array of strings");
        return -1;
    }
    size_t i;
    json_t *p;
    json_array_foreach(patterns, i, p)
    {
        if (!json_is_string(p) || n == 64) {
            json_decref(patterns);
            cmd_error_set(err, "bad_config", "scrub.patterns: at most 64 strings");
            return -1;
        }
        list[n++] = json_string_value(p);
    }
    sh_scrubber *s = NULL;
    char why[256] = "";
    int rc = sh_scrubber_new(&s, list, n, why, sizeof(why));
    json_decref(patterns);
    if (rc != 0) {
        cmd_error_set(err, "bad_config", "scrub.patterns: %s", why);
        return -1;
    }
    port_set_scrubber(ctx, s); /* the old one lives on in the pins that hold it */
    return 0;
}

/* 1 the first time this process opens dir (and remembers it), else 0: a
 * job running in a directory this process has opened before is one of its
 * own (a state_dir switched away and back while it ran), not one a crashed
 * process left. */
static int first_open(const char *dir)
{
    for (recovered_dir *d = recovered_dirs; d != NULL; d = d->next)
        if (strcmp(d->path, dir) == 0)
            return 0;
    size_t n = strlen(dir) + 1;
    recovered_dir *d = malloc(sizeof(*d) + n);
    if (d != NULL) {
        memcpy(d->path, dir, n);
        d->next = recovered_dirs;
        recovered_dirs = d;
    }
    return 1;
}

/* A first or different state_dir: what is open is dropped (closed once no
 * pin holds it) and state_ctx_ensure opens the new one, unless commands
 * still hold dir's from before (then those are current again); the first
 * time, what the previous process left is recovered: the audit records of
 * its effects, its running jobs. */
static int open_state(port_ctx *ctx, const char *dir, cmd_error *err)
{
    pthread_mutex_lock(&ctx->lock);
    int same = ctx->state != NULL && strcmp(open_dir, dir) == 0;
    snprintf(open_dir, sizeof(open_dir), "%s", dir);
    pthread_mutex_unlock(&ctx->lock);
    if (same)
        return 0;
    if (!port_state_reuse(ctx, dir)) /* a running command may still hold dir's */
        port_set_state(ctx, NULL, NULL);
    cmd_error open_err = {NULL, ""};
    if (state_ctx_ensure(ctx, &open_err) != 0) {
        cmd_error_set(err, "state", "state_dir: %s", open_err.message);
        return -1;
    }
    port_state_opened(ctx, dir);
    if (!ctx->one_shot && first_open(dir)) {
        /* the audit records a killed process committed but did not append
         * reach the log before any job resumes */
        effect_recover(ctx);
        resume_left_jobs(ctx, port_state(ctx));
    }
    return 0;
}

int port_configure_modules(port_ctx *ctx, cmd_error *err)
{
    if (build_scrubber(ctx, err) != 0)
        return -1;
    json_t *dir = port_config_get(ctx, "state_dir");
    int rc = 0;
    if (dir != NULL && !json_is_null(dir)) {
        if (!json_is_string(dir) || json_string_length(dir) == 0 ||
            json_string_length(dir) >= sizeof(open_dir)) {
            cmd_error_set(err, "bad_config", "state_dir must be a non-empty path");
            rc = -1;
        } else {
            rc = open_state(ctx, json_string_value(dir), err);
            if (rc == 0)
                fix_start_scheduler(ctx);
        }
    }
    json_decref(dir);
    return rc;
}

void port_close_modules(port_ctx *ctx)
{
    /* what a thread still running holds in its pin is freed by the pin's
     * release */
    port_set_scrubber(ctx, NULL);
    port_set_state(ctx, NULL, NULL);
    port_set_config(ctx, NULL);
}
