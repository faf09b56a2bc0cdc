/*
 * Deploy, verify, roll back (docs/fix-loop.md). One deploy at a time:
 * deploy_run merges the fix into the deploy branch (libgit2), with a
 * canary stage deploys it to the canary and watches it there (promoted or
 * rolled back at the canary), runs the
 * deploy command, waits for the health check, then watches a verification
 * window in which a recurrence of the fingerprint (reported by the
 * collector through the `recurrence` command) or a failed health check
 * rolls back: a revert commit on the deploy branch, the deploy command
 * again, the ticket reopened, people notified, the breaker counted.
 */
#ifndef SELF_HEAL_PORT_DEPLOY_H
#define SELF_HEAL_PORT_DEPLOY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"
#include "fix_config.h"

/* Runs the deploy of an approved fix (status "approved" -> "deploying" ->
 * "verifying" -> "deployed" | "rolled_back" | "failed"). automatic: no
 * human approved it. Returns the fix row at the end (new ref) or NULL +
 * err when it could not start. */
json_t *deploy_run(port_ctx *ctx, const fix_config *cfg, int64_t fix_id, int automatic,
                   cmd_error *err);

/* The fingerprint "*" counts every error event (canary stage: the error
 * rate); a canary's recurrences are kept under "<fingerprint>@canary". */
#define DEPLOY_ALL_ERRORS "*"
void deploy_track_key(char *out, size_t len, const char *fingerprint, int canary);

/* Whether a health check passes now (URL: a 2xx answer; argv: exit 0). */
int deploy_health_ok(port_ctx *ctx, const fix_config *cfg);

#endif
