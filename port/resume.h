/*
 * Jobs a previous process left in a state directory: recovered, resumed.
 */
#ifndef SELF_HEAL_PORT_RESUME_H
#define SELF_HEAL_PORT_RESUME_H

#include "ctx.h"
#include "state.h"

/* Recovers the jobs a previous process left running in db (the first
 * time this process opens its directory) and resumes escalations and
 * fixes on a thread of their own (in a pin taken now). */
void resume_left_jobs(port_ctx *ctx, state_db *db);

#endif
