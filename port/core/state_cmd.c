/*
 * The state directory's commands (cmd.h): jobs and job read the state
 * database (state.c), verify-audit checks the audit log (audit.c) without
 * opening it for writing.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "audit.h"
#include "cmd.h"
#include "state.h"

static state_db *ctx_state(port_ctx *ctx, cmd_error *err)
{
    if (state_ctx_ensure(ctx, err) != 0)
        return NULL;
    return port_state(ctx);
}

static json_t *cmd_jobs(port_ctx *ctx, json_t *args, cmd_error *err)
{
    json_t *status = json_object_get(args, "status");
    json_t *limit = json_object_get(args, "limit");
    if ((status != NULL && !json_is_null(status) &&
         (!json_is_string(status) || !state_job_status_valid(json_string_value(status)))) ||
        (limit != NULL && (!json_is_integer(limit) || json_integer_value(limit) < 1 ||
                           json_integer_value(limit) > STATE_LIST_MAX))) {
        cmd_error_set(err, "bad_args",
                      "status must be one of queued, running, done, failed, escalated; "
                      "limit an integer in 1..%d",
                      STATE_LIST_MAX);
        return NULL;
    }
    state_db *db = ctx_state(ctx, err);
    if (db == NULL)
        return NULL;
    json_t *jobs = state_jobs_list(db, json_string_value(status),
                                   limit != NULL ? (int)json_integer_value(limit) : 100);
    if (jobs == NULL) {
        cmd_error_set(err, "state", "cannot read jobs");
        return NULL;
    }
    return json_pack("{s:o}", "jobs", jobs);
}

static json_t *cmd_job(port_ctx *ctx, json_t *args, cmd_error *err)
{
    json_t *id = json_object_get(args, "id");
    if (!json_is_integer(id)) {
        cmd_error_set(err, "bad_args", "job needs an integer id");
        return NULL;
    }
    state_db *db = ctx_state(ctx, err);
    if (db == NULL)
        return NULL;
    json_t *job = state_job_get(db, (int64_t)json_integer_value(id));
    if (job == NULL)
        cmd_error_set(err, "not_found", "no job %lld", (long long)json_integer_value(id));
    return job;
}

/* verify-audit reads the files only: it never opens the log for writing,
 * so it never repairs or moves anything. */
static json_t *audit_cmd_verify(port_ctx *ctx, json_t *args, cmd_error *err)
{
    char path[AUDIT_PATH_MAX + 32];
    char msg[512] = "";
    json_t *p = json_object_get(args, "path");
    if (p != NULL && (!json_is_string(p) || json_string_length(p) == 0 ||
                      json_string_length(p) >= AUDIT_PATH_MAX)) {
        cmd_error_set(err, "bad_args", "path must be a non-empty string");
        return NULL;
    }
    if (p != NULL) {
        snprintf(path, sizeof(path), "%s", json_string_value(p));
    } else {
        char dir[AUDIT_PATH_MAX];
        if (port_config_string(ctx, "state_dir", NULL, dir, sizeof(dir)) == NULL ||
            dir[0] == '\0') {
            cmd_error_set(err, "no_state", "no state_dir configured and no path given");
            return NULL;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, AUDIT_FILE);
    }
    audit_keys keys;
    json_t *config = port_config(ctx);
    int rc = audit_keys_from_config(config, &keys, msg, sizeof(msg));
    json_decref(config);
    if (rc != 0) {
        cmd_error_set(err, "bad_config", "%s", msg);
        return NULL;
    }
    json_t *w = json_object_get(args, "witnesses");
    json_t *report = audit_verify(path, &keys, w, msg, sizeof(msg));
    if (report == NULL)
        cmd_error_set(err, w != NULL && strncmp(msg, "witness", 7) == 0 ? "bad_args" : "unreadable",
                      "%s", msg);
    return report;
}

const cmd_def *state_commands(size_t *n)
{
    static const cmd_def cmds[] = {
        {"jobs", cmd_jobs, 0},
        {"job", cmd_job, 0},
        {"verify-audit", audit_cmd_verify, 0},
    };
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
