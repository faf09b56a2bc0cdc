/*
 * Read-only reports for operators: what the dashboard and the Prometheus
 * metrics of SelfHeal.Endpoint show (docs/dashboard.md). Nothing here
 * writes to the state database, the audit log or the fixes' files.
 *
 * Commands: stats, deploys, audit_tail, fix_patch.
 */
#ifndef SELF_HEAL_PORT_DASH_H
#define SELF_HEAL_PORT_DASH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"
#include "state.h"

/* The largest patch fix_patch returns, and its default. */
#define DASH_PATCH_MAX (4u << 20)
#define DASH_PATCH_DEFAULT (64u << 10)
/* How many audit records audit_tail returns at most. */
#define DASH_AUDIT_MAX 1000

/* The histograms' buckets (docs/dashboard.md). */
#define DASH_BUCKETS 9

/* Aggregates of the state database: {"fixes": {status: n}, "tickets":
 * {status: n}, "deploys": [{"kind", "status", "auto", "n"}], "budget":
 * {name: {"total", "n"}}, "jobs": [{"kind", "status", "n"}],
 * "histograms": {"time_to_ticket" | "time_to_deploy" | "time_to_verified":
 * {"le": [s ...], "counts": [cumulative ...], "sum" (s), "count"}} (from
 * the group's first occurrence: to the ticket over the latest 10,000
 * tickets whose creating job or fixes have a first_seen, to the deploy and
 * its verification over the latest 10,000 fixes whose group has one; {}
 * unless with_histograms), "escalations_pending": the groups of the
 * escalation jobs queued or running}. NULL when a query fails. */
json_t *dash_stats(state_db *db, int with_histograms);

/* The latest `limit` audit records of the file at path (newest last),
 * only those whose fix_id is fix_id when fix_id > 0, read from at most
 * the file's last `window` bytes: {"records": [...], "from_offset": n}.
 * NULL with err when the file cannot be read (a missing file is no
 * record). */
json_t *dash_audit_tail(const char *path, int limit, int64_t fix_id, size_t window, cmd_error *err);

/* The first max bytes of a fix's scrubbed patch (patch_path must be a
 * file in state_dir/fixes/, not a link), cut at a code point, invalid
 * UTF-8 bytes as '?': {"patch", "bytes" (the file's size), "truncated"}.
 * NULL with err otherwise. */
json_t *dash_read_patch(const char *state_dir, const char *patch_path, size_t max, cmd_error *err);

#endif
