/*
 * The pipeline from settled groups to analysed tickets and notifications
 * (commands escalate and update), and the module setup run by configure.
 */
#ifndef SELF_HEAL_PORT_PIPELINE_H
#define SELF_HEAL_PORT_PIPELINE_H

#include "cmd.h"

/* After a new configuration: opens the state database and the audit log
 * in "state_dir" (when set and changed), rebuilds the scrubber from
 * "scrub.patterns". Returns 0 or -1 with err set. */
int port_configure_modules(port_ctx *ctx, cmd_error *err);

/* Releases what port_configure_modules opened (at exit). */
void port_close_modules(port_ctx *ctx);

#endif
