/*
 * The modules' setup run by configure, and their release at exit.
 */
#ifndef SELF_HEAL_PORT_MODULES_H
#define SELF_HEAL_PORT_MODULES_H

#include "cmd.h"

/* After a new configuration: opens the state database and the audit log
 * in "state_dir" (when set and changed), rebuilds the scrubber from
 * "scrub.patterns". Returns 0 or -1 with err set. */
int port_configure_modules(port_ctx *ctx, cmd_error *err);

/* Releases what port_configure_modules opened (at exit). */
void port_close_modules(port_ctx *ctx);

#endif
