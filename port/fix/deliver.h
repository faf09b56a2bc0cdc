/*
 * Delivery of a fix: always a dry-run patch and a report in
 * state_dir/fixes/ (<fingerprint>.patch, <fingerprint>.report.json and
 * .md); when fix.remote.url is configured and the fix was not rejected,
 * the branch is pushed over HTTPS with the token named by
 * fix.remote.token_env (libgit2) and a pull request is opened through
 * GitHub REST (tickets.github.*), or the open one of that branch reused.
 */
#ifndef SELF_HEAL_PORT_DELIVER_H
#define SELF_HEAL_PORT_DELIVER_H

#include <jansson.h>
#include <stddef.h>

#include "cmd.h"
#include "fix_config.h"

/* fix: the fix row; report: the validation report; patch: the diff text.
 * Returns {"mode": "dry_run" | "pull_request", "patch", "report",
 * "pr_url"?, "pr_number"?, "reused"?} or NULL + err (the patch and report
 * files are written before any network step). The pull request of the
 * fix's branch is reused when open (a repeated delivery pushes the same
 * commit and finds it); key (may be NULL), the delivery step's
 * idempotency key, is a marker in a new pull request's body. */
json_t *deliver_fix(port_ctx *ctx, const fix_config *cfg, json_t *fix, const char *patch,
                    size_t patch_len, json_t *report, int open_pr, const char *key, cmd_error *err);

#endif
