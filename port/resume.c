/*
 * Jobs a previous process left (resume.h): after a crash, those it left
 * running are recovered (state_jobs_recover) and reported to the BEAM as
 * notifications; escalations and fixes back in the queue (or never
 * started) are resumed on a thread of their own, the others escalated to
 * a human. The recovery actions under way resume first (recover.c).
 */
#include "resume.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "fix.h"
#include "pipeline.h"
#include "recover.h"
#include "state.h"

#define RECOVER_MAX_ATTEMPTS 3

typedef struct resume_arg {
    port_ctx *ctx;
    state_db *db;
    json_t *jobs;
    port_pin pin; /* taken by configure: db and what went with it */
} resume_arg;

static void *resume_jobs(void *p)
{
    resume_arg *arg = p;
    port_pin_enter(&arg->pin);
    size_t i;
    json_t *job;
    json_array_foreach(arg->jobs, i, job)
    {
        if (arg->ctx->stopping)
            break;
        const char *kind = json_string_value(json_object_get(job, "kind"));
        const char *status = json_string_value(json_object_get(job, "status"));
        json_int_t id = json_integer_value(json_object_get(job, "id"));
        if (kind != NULL && (strcmp(kind, "fix") == 0 || strcmp(kind, "deploy") == 0)) {
            fix_resume(arg->ctx, job);
            continue;
        }
        if (kind == NULL || status == NULL || strcmp(kind, "escalate") != 0 ||
            strcmp(status, "queued") != 0)
            continue;
        json_t *full = state_job_get(arg->db, id);
        json_t *groups = json_object_get(json_object_get(full, "input"), "groups");
        const char *key = json_string_value(json_object_get(full, "key"));
        cmd_error err = {NULL, ""};
        json_t *result = groups != NULL && key != NULL
                             ? pipeline_drive_job(arg->ctx, arg->db, id, key, groups, &err)
                             : NULL;
        port_notify(arg->ctx, "job_resumed",
                    json_pack("{s:I, s:s, s:s}", "job_id", id, "kind", kind, "status",
                              result != NULL ? "done" : "failed"));
        json_decref(result);
        json_decref(full);
    }
    json_decref(arg->jobs);
    port_pin_end(&arg->pin);
    free(arg);
    return NULL;
}

/* Adds the queued jobs of `queued` that `jobs` does not hold yet: jobs a
 * process recorded and died before it started them. */
static void add_queued(json_t *jobs, json_t *queued)
{
    size_t i, k;
    json_t *q, *j;
    json_array_foreach(queued, i, q)
    {
        const char *kind = json_string_value(json_object_get(q, "kind"));
        int known = kind == NULL || (strcmp(kind, "escalate") != 0 && strcmp(kind, "fix") != 0);
        json_array_foreach(jobs, k, j) known =
            known || json_equal(json_object_get(j, "id"), json_object_get(q, "id"));
        if (!known)
            json_array_append(jobs, q);
    }
}

void resume_left_jobs(port_ctx *ctx, state_db *db)
{
    recover_resume(ctx);
    json_t *moved = state_jobs_recover(db, RECOVER_MAX_ATTEMPTS);
    json_t *queued = state_jobs_list(db, "queued", 1000);
    if (moved == NULL) {
        json_decref(queued);
        return;
    }
    size_t i;
    json_t *job;
    json_array_foreach(moved, i, job)
    {
        const char *status = json_string_value(json_object_get(job, "status"));
        json_t *fields =
            json_pack("{s:O, s:O, s:O}", "job_id", json_object_get(job, "id"), "kind",
                      json_object_get(job, "kind"), "status", json_object_get(job, "status"));
        audit_log *log = port_audit(ctx);
        if (log != NULL)
            audit_append(log,
                         status != NULL && strcmp(status, "escalated") == 0 ? "job_escalated"
                                                                            : "job_recovered",
                         fields);
        port_notify(ctx, "job_recovered", fields);
    }
    add_queued(moved, queued);
    json_decref(queued);
    if (json_array_size(moved) == 0) {
        json_decref(moved);
        return;
    }
    resume_arg *arg = malloc(sizeof(*arg));
    pthread_t tid;
    if (arg == NULL) {
        json_decref(moved);
        return;
    }
    *arg = (resume_arg){.ctx = ctx, .db = db, .jobs = moved};
    port_pin_take(&arg->pin, ctx);
    if (pthread_create(&tid, NULL, resume_jobs, arg) != 0) {
        port_pin_release(&arg->pin);
        json_decref(moved);
        free(arg);
        return;
    }
    pthread_detach(tid);
}
