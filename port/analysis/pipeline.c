/*
 * The pipeline from settled groups to analysed tickets and notifications.
 *
 *   escalate {"groups": [group, ...]}
 *       one job keyed by the groups (ids and first-seen times): analysis
 *       (analyze.c), one ticket per issue (ticket.c: created or commented),
 *       a notification per created ticket (notify.c), a fix per created
 *       ticket (fix.c). Each is a step with an idempotency key (effect.h):
 *       a resumed escalation skips what happened, keeps its first analysis,
 *       and never notifies twice. A repeated request with the same groups
 *       returns the stored result of the first. Answers {"job_id",
 *       "analysis", "issues", "tickets", "notifications"}.
 *   update {"fingerprint", "count", "last_seen"?, "reason"?, "service"?}
 *       a group triage held (already investigated, or below the minimum
 *       severity): the open ticket of its fingerprint gets count more
 *       occurrences, and a comment when that at least doubled its count
 *       (ticket_recurrence). Answers {"ticket_id": id | null, "commented":
 *       bool, "count"?}.
 */
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze.h"
#include "audit.h"
#include "effect.h"
#include "fix.h"
#include "notify.h"
#include "recover.h"
#include "scrub_json.h"
#include "self_heal/scrub.h"
#include "service.h"
#include "state.h"
#include "ticket.h"
#include "trust.h"

#define MAX_GROUPS 500
#define MAX_ID_LEN 128

/* ------------------------------------------------------------ helpers */

/* Appends an audit record when an audit log is open; steals fields. */
static void audit(port_ctx *ctx, const char *action, json_t *fields)
{
    audit_log *log = port_audit(ctx);
    if (log != NULL && fields != NULL)
        audit_append(log, action, fields);
    json_decref(fields);
}

static const char *group_id(json_t *group)
{
    json_t *id = json_object_get(group, "id");
    if (!json_is_string(id))
        id = json_object_get(group, "fingerprint");
    return json_is_string(id) ? json_string_value(id) : NULL;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "escalate:" + hex SHA-256 over the sorted "id@first_seen" of the groups. */
static int escalation_key(char *out, size_t outlen, json_t *groups)
{
    size_t n = json_array_size(groups);
    char **parts = calloc(n ? n : 1, sizeof(*parts));
    if (parts == NULL)
        return -1;
    int rc = -1;
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        json_t *first = json_object_get(g, "first_seen");
        char buf[MAX_ID_LEN + 32];
        snprintf(buf, sizeof(buf), "%s@%lld", group_id(g),
                 json_is_integer(first) ? (long long)json_integer_value(first) : 0LL);
        if ((parts[i] = strdup(buf)) == NULL)
            goto cleanup;
    }
    qsort(parts, n, sizeof(*parts), compare_strings);
    sh_buf joined;
    sh_buf_init(&joined);
    for (i = 0; i < n; i++)
        sh_buf_append(&joined, parts[i], strlen(parts[i]) + 1);
    char digest_hex[SH_SHA256_HEX_LEN + 1];
    if (!joined.oom && sh_sha256_hex(digest_hex, joined.data, joined.len) == 0) {
        snprintf(out, outlen, "escalate:%s", digest_hex);
        rc = 0;
    }
    sh_buf_free(&joined);
cleanup:
    for (i = 0; i < n; i++)
        free(parts[i]);
    free(parts);
    return rc;
}

/* Groups must be an array of 1..MAX_GROUPS objects with distinct ids of
 * at most MAX_ID_LEN bytes. */
static int check_groups(json_t *groups, cmd_error *err)
{
    if (!json_is_array(groups) || json_array_size(groups) == 0 ||
        json_array_size(groups) > MAX_GROUPS) {
        cmd_error_set(err, "bad_args", "groups must be an array of 1 to %d groups", MAX_GROUPS);
        return -1;
    }
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        const char *id = json_is_object(g) ? group_id(g) : NULL;
        if (id == NULL || id[0] == '\0' || strlen(id) > MAX_ID_LEN) {
            cmd_error_set(err, "bad_args", "group %zu needs an id of 1 to %d bytes", i, MAX_ID_LEN);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(group_id(json_array_get(groups, j)), id) == 0) {
                cmd_error_set(err, "bad_args", "group %zu repeats id %.64s", i, id);
                return -1;
            }
    }
    return 0;
}

/* The groups an issue covers, in the issue's order. */
static json_t *issue_groups(json_t *issue, json_t *groups)
{
    json_t *out = json_array();
    size_t i, j;
    json_t *id, *g;
    json_array_foreach(json_object_get(issue, "group_ids"), i, id)
    {
        json_array_foreach(groups, j, g)
        {
            const char *gid = group_id(g);
            if (json_is_string(id) && gid != NULL && strcmp(gid, json_string_value(id)) == 0)
                json_array_append(out, g);
        }
    }
    return out;
}

static long long sum_counts(json_t *groups)
{
    long long total = 0;
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        json_t *c = json_object_get(g, "count");
        if (json_is_integer(c) && json_integer_value(c) > 0)
            total += json_integer_value(c);
    }
    return total;
}

static json_t *string_or_null(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_incref(v) : json_null();
}

/* The notification for a created ticket: a step keyed by the ticket, so a
 * ticket is announced at most once, whichever job created it. */
static json_t *notify_ticket(port_ctx *ctx, int64_t job_id, json_t *issue, json_t *members,
                             json_t *ticket)
{
    json_t *ticket_id = json_object_get(ticket, "ticket_id");
    char key[96];
    snprintf(key, sizeof(key), "notify:ticket:%lld/notify",
             json_is_integer(ticket_id) ? (long long)json_integer_value(ticket_id) : -1LL);
    json_t *first = json_array_get(members, 0);
    json_t *message = json_pack(
        "{s:s, s:O, s:s?, s:O, s:o, s:o, s:o, s:I, s:o}", "kind", "ticket", "ticket_id",
        ticket_id ? ticket_id : json_null(), "fingerprint", group_id(first), "severity",
        json_object_get(issue, "severity") ? json_object_get(issue, "severity") : json_null(),
        "service", string_or_null(first, "service"), "error", string_or_null(issue, "root_cause"),
        "path", string_or_null(first, "path"), "count", (json_int_t)sum_counts(members), "url",
        string_or_null(ticket, "url"));
    if (message == NULL)
        return NULL;
    json_t *result = notify_send_once(ctx, message, key, job_id);
    json_decref(message);
    return result;
}

/* The escalation's first record and its analysis, each a step of the job:
 * a resumed job neither records them again nor asks the model again (it
 * goes on with the issues of its first analysis). */
static json_t *escalation_analysis(port_ctx *ctx, int64_t job_id, const char *job_key,
                                   json_t *groups, cmd_error *err)
{
    char key[EFFECT_KEY_MAX + 1];
    json_t *ids = json_array();
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g) json_array_append_new(ids, json_string(group_id(g)));
    json_t *records = NULL;
    effect_audit_add(&records, "escalation",
                     json_pack("{s:I, s:o, s:I}", "job_id", (json_int_t)job_id, "groups", ids,
                               "count", (json_int_t)sum_counts(groups)));
    int rc = effect_key(key, sizeof(key), job_key, "escalation") == 0
                 ? effect_done(ctx, key, job_id, NULL, records)
                 : -1;
    json_decref(records);
    records = NULL;
    if (rc < 0 || effect_key(key, sizeof(key), job_key, "analysis") != 0) {
        cmd_error_set(err, "state", "cannot record the escalation");
        return NULL;
    }
    json_t *analysis = effect_result(ctx, key);
    if (analysis != NULL)
        return analysis;
    json_t *record = NULL;
    analysis = analyze_groups(ctx, groups, &record, err);
    if (analysis == NULL) {
        json_decref(record);
        return NULL;
    }
    if (record != NULL) {
        json_object_set_new(record, "job_id", json_integer((json_int_t)job_id));
        effect_audit_add(&records, "analysis", record);
    }
    rc = effect_done(ctx, key, job_id, analysis, records);
    json_decref(records);
    if (rc != 0) {
        /* recorded by another run meanwhile (1): its analysis holds */
        json_decref(analysis);
        analysis = rc == 1 ? effect_result(ctx, key) : NULL;
        if (analysis == NULL)
            cmd_error_set(err, "state", "cannot record the analysis");
    }
    return analysis;
}

/* Whether a recovery handles one of members instead of a code fix. */
static int recovered_instead(json_t *recovering, json_t *members)
{
    size_t i;
    json_t *g;
    json_array_foreach(members, i, g)
    {
        const char *id = group_id(g);
        if (id != NULL && json_object_get(recovering, id) != NULL)
            return 1;
    }
    return 0;
}

/* Analysis, tickets, notifications for one escalation. */
static json_t *run_escalation(port_ctx *ctx, int64_t job_id, const char *job_key, json_t *groups,
                              cmd_error *err)
{
    /* recovery first: it does not wait for the analysis */
    trust_on_errors(ctx, job_key, sum_counts(groups));
    json_t *recovering = recover_on_escalation(ctx, job_key, groups);
    json_t *analysis = escalation_analysis(ctx, job_id, job_key, groups, err);
    if (analysis == NULL) {
        json_decref(recovering);
        return NULL;
    }
    json_t *issues = json_object_get(analysis, "issues");
    port_notify(ctx, "analysis",
                json_pack("{s:I, s:O}", "job_id", (json_int_t)job_id, "issues", issues));

    json_t *tickets = json_array();
    json_t *notifications = json_array();
    size_t i;
    json_t *issue;
    json_array_foreach(issues, i, issue)
    {
        json_t *members = issue_groups(issue, groups);
        json_t *input = json_deep_copy(issue);
        json_object_set(input, "groups", members);
        cmd_error terr = {NULL, ""};
        json_t *ticket = ticket_upsert(ctx, input, &terr);
        json_decref(input);
        if (ticket == NULL) {
            json_array_append_new(tickets,
                                  json_pack("{s:s, s:s}", "error", terr.code ? terr.code : "failed",
                                            "message", terr.message));
            json_decref(members);
            continue;
        }
        port_notify(ctx, "ticket", json_deep_copy(ticket));
        if (json_is_true(json_object_get(ticket, "created"))) {
            json_t *sent = notify_ticket(ctx, job_id, issue, members, ticket);
            if (sent != NULL)
                json_array_append_new(notifications, sent);
            if (!recovered_instead(recovering, members) && service_may_fix(ctx, members))
                fix_on_ticket(ctx, issue, members, ticket);
        }
        json_array_append_new(tickets, ticket);
        json_decref(members);
    }
    json_t *result = json_pack(
        "{s:I, s:{s:O, s:O, s:O}, s:O, s:o, s:o}", "job_id", (json_int_t)job_id, "analysis",
        "analyzer",
        json_object_get(analysis, "analyzer") ? json_object_get(analysis, "analyzer") : json_null(),
        "fallback",
        json_object_get(analysis, "fallback") ? json_object_get(analysis, "fallback") : json_null(),
        "usage",
        json_object_get(analysis, "usage") ? json_object_get(analysis, "usage") : json_null(),
        "issues", issues, "tickets", tickets, "notifications", notifications);
    json_decref(analysis);
    json_decref(recovering);
    return result;
}

/* Runs a queued escalation job to its end; returns its result (new ref). */
json_t *pipeline_drive_job(port_ctx *ctx, state_db *db, int64_t job_id, const char *job_key,
                           json_t *groups, cmd_error *err)
{
    SERVICE_SCOPE(scope, ctx, service_of_groups(groups)); /* the service's configuration */
    if (state_job_transition(db, job_id, "queued", "running", NULL, NULL, NULL) != 0)
        return json_pack("{s:I, s:s}", "job_id", (json_int_t)job_id, "status", "running");
    json_t *result = run_escalation(ctx, job_id, job_key, groups, err);
    if (result == NULL) {
        state_job_transition(db, job_id, "running", "failed", NULL, NULL, err->message);
        audit(ctx, "escalation_failed",
              json_pack("{s:I, s:s}", "job_id", (json_int_t)job_id, "reason", err->message));
        return NULL;
    }
    state_job_transition(db, job_id, "running", "done", NULL, result, NULL);
    return result;
}

/* ------------------------------------------------------------ commands */

static json_t *cmd_escalate(port_ctx *ctx, json_t *args, cmd_error *err)
{
    json_t *groups = json_object_get(args, "groups");
    if (check_groups(groups, err) != 0)
        return NULL;
    state_db *db = port_state(ctx);
    if (db == NULL) {
        cmd_error_set(err, "no_state", "escalate needs a state_dir in the configuration");
        return NULL;
    }
    if (fix_paused(ctx)) {
        cmd_error_set(err, "paused", "automation is paused: escalations wait until it is resumed");
        return NULL;
    }
    char key[112];
    if (escalation_key(key, sizeof(key), groups) != 0) {
        cmd_error_set(err, "internal", "out of memory");
        return NULL;
    }
    /* a replay (mix self_heal.replay) is a job of its own */
    json_t *replay = json_object_get(args, "replay");
    if (replay != NULL && (!json_is_integer(replay) || json_integer_value(replay) < 0)) {
        cmd_error_set(err, "bad_args", "replay must be a non-negative integer");
        return NULL;
    }
    if (replay != NULL) {
        size_t len = strlen(key);
        snprintf(key + len, sizeof(key) - len, ":replay-%lld",
                 (long long)json_integer_value(replay));
    }
    /* scrubbed before anything is stored: the job's input is at rest */
    json_t *clean = scrub_json(port_scrubber(ctx), groups);
    json_t *input = json_pack("{s:o}", "groups", clean);
    int64_t job_id = 0;
    int existed = 0;
    char status[32] = "";
    int rc = state_job_begin(db, "escalate", key, input, &job_id, &existed, status, sizeof(status));
    if (rc != 0) {
        json_decref(input);
        cmd_error_set(err, "state", "could not record the escalation job");
        return NULL;
    }
    if (existed && strcmp(status, "queued") != 0) {
        json_t *job = state_job_get(db, job_id);
        json_t *result = json_incref(json_object_get(job, "result"));
        json_decref(job);
        json_decref(input);
        if (result != NULL && strcmp(status, "done") == 0)
            return result;
        json_decref(result);
        return json_pack("{s:I, s:s}", "job_id", (json_int_t)job_id, "status", status);
    }
    json_t *result =
        pipeline_drive_job(ctx, db, job_id, key, json_object_get(input, "groups"), err);
    json_decref(input);
    return result;
}

static json_t *cmd_update(port_ctx *ctx, json_t *args, cmd_error *err)
{
    SERVICE_SCOPE(scope, ctx, fix_str(args, "service")); /* its tickets backend */
    json_t *fp = json_object_get(args, "fingerprint");
    json_t *count = json_object_get(args, "count");
    if (!json_is_string(fp) || json_string_length(fp) == 0 || json_string_length(fp) > MAX_ID_LEN ||
        !json_is_integer(count) || json_integer_value(count) < 0) {
        cmd_error_set(err, "bad_args", "update needs a fingerprint and a count");
        return NULL;
    }
    if (port_state(ctx) == NULL) {
        cmd_error_set(err, "no_state", "update needs a state_dir in the configuration");
        return NULL;
    }
    return ticket_recurrence(ctx, json_string_value(fp), (long long)json_integer_value(count),
                             json_object_get(args, "last_seen"), err);
}

const cmd_def *pipeline_commands(size_t *n)
{
    static const cmd_def cmds[] = {
        {"escalate", cmd_escalate, 0},
        {"update", cmd_update, 0},
    };
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
