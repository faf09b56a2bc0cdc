/*
 * The pipeline from settled groups to analysed tickets and notifications
 * (commands escalate and update).
 */
#ifndef SELF_HEAL_PORT_PIPELINE_H
#define SELF_HEAL_PORT_PIPELINE_H

#include <jansson.h>
#include <stdint.h>

#include "cmd.h"
#include "state.h"

/* Runs a queued escalation job to its end; returns its result (new ref),
 * or NULL with err (the job failed). For resumed jobs (resume.c). */
json_t *pipeline_drive_job(port_ctx *ctx, state_db *db, int64_t job_id, const char *job_key,
                           json_t *groups, cmd_error *err);

#endif
