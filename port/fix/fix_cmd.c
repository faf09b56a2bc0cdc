/*
 * The fix loop's commands (fix.h): fix, fixes, fix_get, approve, skip,
 * recurrence, kill_switch, pause, breaker_reset, gate_status.
 */
#include "fix_loop.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deploy.h"
#include "notify.h"
#include "service.h"
#include "state.h"
#include "trust.h"

static state_db *need_state(port_ctx *ctx, cmd_error *err)
{
    return state_ctx_ensure(ctx, err) == 0 ? port_state(ctx) : NULL;
}

static json_t *fix_with_deploys(state_db *db, int64_t id)
{
    json_t *fix = state_fix_get(db, id);
    if (fix != NULL)
        json_object_set_new(fix, "deploys", state_deploys_list(db, id, 50));
    return fix;
}

static json_t *cmd_fix(port_ctx *ctx, json_t *args, cmd_error *err)
{
    SERVICE_SCOPE(scope, ctx, service_of_group(json_object_get(args, "group")));
    if (fix_paused(ctx)) {
        cmd_error_set(err, "paused", "automation is paused: no fix starts until it is resumed");
        return NULL;
    }
    fix_config cfg;
    if (fix_config_load(&cfg, ctx, err) != 0)
        return NULL;
    int enabled = cfg.enabled;
    policy_consent consent = cfg.consent;
    char cfg_sandbox_error[sizeof(cfg.sandbox_error)];
    snprintf(cfg_sandbox_error, sizeof(cfg_sandbox_error), "%s", cfg.sandbox_error);
    fix_config_free(&cfg);
    if (!enabled) {
        cmd_error_set(err, consent == POLICY_OBSERVE ? "consent" : "bad_config",
                      consent == POLICY_OBSERVE
                          ? "gate.consent is observe: SelfHeal does not attempt fixes"
                          : "the fix loop needs state_dir, fix.repo and fix.agent.argv");
        return NULL;
    }
    if (cfg_sandbox_error[0] != '\0') {
        cmd_error_set(err, "sandbox", "%s", cfg_sandbox_error);
        return NULL;
    }
    json_t *group = json_object_get(args, "group");
    const char *given = fix_str(args, "severity");
    json_t *input =
        json_pack("{s:O, s:s, s:O, s:O, s:O}", "fingerprint",
                  fix_or_null(json_object_get(args, "fingerprint")), "severity",
                  fix_gate_severity(given, fix_severity_rank(fix_str(group, "severity")), 1),
                  "ticket_id", fix_or_null(json_object_get(args, "ticket_id")), "root_cause",
                  fix_or_null(json_object_get(args, "root_cause")), "group",
                  fix_or_null(json_object_get(args, "group")));
    int64_t id = 0, job_id = 0;
    int rc = fix_create(ctx, input, &id, &job_id, err);
    json_decref(input);
    if (rc < 0)
        return NULL;
    state_db *db = port_state(ctx);
    if (rc == 1)
        return json_pack("{s:I, s:s, s:b}", "fix_id", (json_int_t)id, "status", "in_flight",
                         "started", 0);
    if (json_is_true(json_object_get(args, "wait"))) {
        fix_drive(ctx, id, job_id);
        json_t *fix = fix_with_deploys(db, id);
        json_object_set_new(fix, "fix_id", json_integer((json_int_t)id));
        json_object_set_new(fix, "started", json_true());
        return fix;
    }
    if (fix_spawn_drive(ctx, id, job_id) != 0) {
        state_job_transition(db, job_id, "queued", "escalated", NULL, NULL,
                             "too many fixes waiting");
        fix_set(db, id, NULL, json_pack("{s:s}", "status", "escalated"));
        cmd_error_set(err, "busy", "too many fixes waiting");
        return NULL;
    }
    return json_pack("{s:I, s:s, s:b}", "fix_id", (json_int_t)id, "status", "fixing", "started", 1);
}

static json_t *cmd_fixes(port_ctx *ctx, json_t *args, cmd_error *err)
{
    state_db *db = need_state(ctx, err);
    if (db == NULL)
        return NULL;
    json_t *limit = json_object_get(args, "limit");
    json_t *list = state_fixes_list(db, fix_str(args, "status"), fix_str(args, "fingerprint"),
                                    json_is_integer(limit) ? (int)json_integer_value(limit) : 100);
    if (list == NULL) {
        cmd_error_set(err, "state", "cannot read fixes");
        return NULL;
    }
    return json_pack("{s:o}", "fixes", list);
}

/* The fix id of {"id": n or "fix-n"} or of a signed {"token"} for action;
 * 0 with err on anything else (an empty or unknown target is no target). */
static int64_t target_id(port_ctx *ctx, json_t *args, const char *action, cmd_error *err)
{
    json_t *id = json_object_get(args, "id");
    json_t *token = json_object_get(args, "token");
    char id_text[80] = "";
    if (json_is_integer(id) && json_integer_value(id) > 0 && token == NULL)
        return json_integer_value(id);
    if (json_is_string(id) && token == NULL)
        snprintf(id_text, sizeof(id_text), "%s", json_string_value(id));
    if (json_is_string(token) && id == NULL) {
        char got_action[16], got_id[80];
        const char *secret = notify_link_secret(ctx, err);
        if (secret == NULL)
            return 0;
        int v = notify_verify(json_string_value(token), secret, port_now(), got_action,
                              sizeof(got_action), got_id, sizeof(got_id));
        if (v == 1) {
            cmd_error_set(err, "expired", "the link has expired");
            return 0;
        }
        if (v != 0 || strcmp(got_action, action) != 0) {
            cmd_error_set(err, "bad_signature", "the link is not valid for %s", action);
            return 0;
        }
        snprintf(id_text, sizeof(id_text), "%s", got_id);
    }
    const char *digits = strncmp(id_text, "fix-", 4) == 0 ? id_text + 4 : id_text;
    char *end = NULL;
    errno = 0;
    long long n = digits[0] >= '1' && digits[0] <= '9' ? strtoll(digits, &end, 10) : 0;
    if (n <= 0 || errno != 0 || end == NULL || *end != '\0') {
        cmd_error_set(err, "bad_args",
                      "%s needs one fix id (a positive number or fix-N) or a "
                      "signed token; nothing was done",
                      action);
        return 0;
    }
    return n;
}

static json_t *decide_human(port_ctx *ctx, json_t *args, const char *action, cmd_error *err)
{
    state_db *db = need_state(ctx, err);
    if (db == NULL)
        return NULL;
    int64_t id = target_id(ctx, args, action, err);
    if (id <= 0)
        return NULL;
    SERVICE_SCOPE_FIX(scope, ctx, id); /* its service's notifications and tickets */
    const char *by = fix_str(args, "by");
    char who[128];
    snprintf(who, sizeof(who), "%.100s", by != NULL && by[0] != '\0' ? by : "human");
    json_t *fix = state_fix_get(db, id);
    if (fix == NULL) {
        cmd_error_set(err, "not_found", "no fix %lld", (long long)id);
        return NULL;
    }
    const char *status = fix_str(fix, "status");
    json_t *exp = json_object_get(fix, "approval_expires_at");
    if (status == NULL || strcmp(status, "awaiting_approval") != 0) {
        cmd_error_set(err, "conflict", "fix %lld is %s, not awaiting approval", (long long)id,
                      status != NULL ? status : "unknown");
        json_decref(fix);
        return NULL;
    }
    if (json_is_integer(exp) && json_integer_value(exp) <= port_now()) {
        fix_set(db, id, "awaiting_approval", json_pack("{s:s}", "status", "expired"));
        fix_step(ctx, id, fix_str(fix, "fingerprint"), "expired", NULL);
        cmd_error_set(err, "expired", "the approval request for fix %lld has expired",
                      (long long)id);
        json_decref(fix);
        return NULL;
    }
    int approve = strcmp(action, "approve") == 0;
    int rc = fix_set(
        db, id, "awaiting_approval",
        json_pack("{s:s, s:s}", "status", approve ? "approved" : "skipped", "decided_by", who));
    if (rc != 0) {
        cmd_error_set(err, "conflict", "fix %lld changed meanwhile", (long long)id);
        json_decref(fix);
        return NULL;
    }
    fix_step(ctx, id, fix_str(fix, "fingerprint"), approve ? "approved" : "skipped",
             json_pack("{s:s}", "by", who));
    char text[256];
    snprintf(text, sizeof(text), "SelfHeal fix %lld %s by %s.", (long long)id,
             approve ? "approved" : "skipped", who);
    fix_ticket_note(ctx, fix, NULL, text);
    json_decref(fix);
    fix_sched_wake();
    return json_pack("{s:I, s:s, s:s}", "fix_id", (json_int_t)id, "status",
                     approve ? "approved" : "skipped", "by", who);
}

static json_t *cmd_approve(port_ctx *ctx, json_t *args, cmd_error *err)
{
    return decide_human(ctx, args, "approve", err);
}

static json_t *cmd_skip(port_ctx *ctx, json_t *args, cmd_error *err)
{
    return decide_human(ctx, args, "skip", err);
}

static json_t *cmd_fix_get(port_ctx *ctx, json_t *args, cmd_error *err)
{
    state_db *db = need_state(ctx, err);
    json_t *id = json_object_get(args, "id");
    if (db == NULL)
        return NULL;
    if (!json_is_integer(id) || json_integer_value(id) <= 0) {
        cmd_error_set(err, "bad_args", "fix_get needs an id");
        return NULL;
    }
    json_t *fix = fix_with_deploys(db, json_integer_value(id));
    if (fix == NULL)
        cmd_error_set(err, "not_found", "no fix %lld", (long long)json_integer_value(id));
    return fix;
}

static json_t *cmd_recurrence(port_ctx *ctx, json_t *args, cmd_error *err)
{
    const char *fp = fix_str(args, "fingerprint");
    json_t *count = json_object_get(args, "count");
    const char *track = fix_str(args, "track");
    int canary = track != NULL && strcmp(track, "canary") == 0;
    /* a fired watch recurs as "watch:<id>" (a recovery of it, docs/recovery.md) */
    int watch = fp != NULL && strncmp(fp, "watch:", 6) == 0 &&
                sh_token_ok(fp, strnlen(fp, FIX_FP_MAX + 1), FIX_FP_MAX, "-_:");
    if (!(fix_valid_fp(fp) || watch || (fp != NULL && strcmp(fp, DEPLOY_ALL_ERRORS) == 0)) ||
        !json_is_integer(count) || json_integer_value(count) < 1 ||
        (track != NULL && !canary && strcmp(track, "stable") != 0)) {
        cmd_error_set(err, "bad_args",
                      "recurrence needs a fingerprint (or \"*\", or \"watch:<id>\"), a count >= 1 "
                      "and a track \"stable\" (default) or \"canary\"");
        return NULL;
    }
    state_db *db = need_state(ctx, err);
    if (db == NULL)
        return NULL;
    char key[160];
    deploy_track_key(key, sizeof(key), fp, canary);
    if (state_recurrence_add(db, key, json_integer_value(count)) != 0) {
        cmd_error_set(err, "state", "could not record the recurrence");
        return NULL;
    }
    return json_pack("{s:b}", "recorded", 1);
}

static json_t *gate_status(port_ctx *ctx, state_db *db)
{
    int open = 0;
    long long failures = 0;
    state_breaker_get(db, FIX_BREAKER, &open, &failures);
    char consent[32];
    port_config_string(ctx, "gate.consent", "diagnose", consent, sizeof(consent));
    int running, fixing, waiting;
    fix_slots_counts(&running, &fixing, &waiting);
    return json_pack("{s:b, s:b, s:{s:s, s:I}, s:I, s:s, s:b, s:i, s:i, s:o}", "kill_switch",
                     fix_kill_switch_on(ctx), "paused", fix_paused(ctx), "breaker", "state",
                     open ? "open" : "closed", "failures", (json_int_t)failures,
                     "auto_deploys_last_hour",
                     (json_int_t)state_deploy_count(db, "deploy", 1, 3600), "consent",
                     policy_consent_name(trust_consent(ctx, policy_consent_parse(consent))),
                     "deploy_running", running, "fixes_running", fixing, "fixes_waiting", waiting,
                     "services", service_gate_status(ctx, db));
}

/* A durable switch (kill switch, pause): {"on"?: bool, "by"?}, stored
 * under kv, audited and announced as `event`; answers the gate status. */
static json_t *set_switch(port_ctx *ctx, json_t *args, cmd_error *err, const char *kv,
                          const char *event)
{
    state_db *db = need_state(ctx, err);
    if (db == NULL)
        return NULL;
    json_t *on = json_object_get(args, "on");
    if (on != NULL && !json_is_boolean(on)) {
        cmd_error_set(err, "bad_args", "on must be true or false");
        return NULL;
    }
    if (on != NULL) {
        if (state_kv_set(db, kv, json_is_true(on) ? "on" : "off") != 0) {
            cmd_error_set(err, "state", "could not store %s", event);
            return NULL;
        }
        const char *by = fix_str(args, "by");
        json_t *fields =
            json_pack("{s:b, s:s}", "on", json_is_true(on), "by", by != NULL ? by : "human");
        fix_audit(ctx, event, fields);
        port_notify(ctx, event, fields);
        fix_sched_wake();
    }
    return gate_status(ctx, db);
}

static json_t *cmd_kill_switch(port_ctx *ctx, json_t *args, cmd_error *err)
{
    return set_switch(ctx, args, err, KV_KILL_SWITCH, "kill_switch");
}

/* All automation: escalations, fixes and deploys (pipeline.c asks too). */
static json_t *cmd_pause(port_ctx *ctx, json_t *args, cmd_error *err)
{
    return set_switch(ctx, args, err, KV_PAUSED, "paused");
}

static json_t *cmd_breaker_reset(port_ctx *ctx, json_t *args, cmd_error *err)
{
    state_db *db = need_state(ctx, err);
    if (db == NULL)
        return NULL;
    if (service_breaker_reset(db, fix_str(args, "service")) != 0) {
        cmd_error_set(err, "state", "could not reset the breaker");
        return NULL;
    }
    const char *by = fix_str(args, "by");
    json_t *fields = json_pack("{s:s, s:s?}", "by", by != NULL ? by : "human", "service",
                               fix_str(args, "service"));
    fix_audit(ctx, "breaker_reset", fields);
    json_decref(fields);
    fix_sched_wake();
    return gate_status(ctx, db);
}

static json_t *cmd_gate_status(port_ctx *ctx, json_t *args, cmd_error *err)
{
    (void)args;
    state_db *db = need_state(ctx, err);
    return db != NULL ? gate_status(ctx, db) : NULL;
}

const cmd_def *fix_commands(size_t *n)
{
    static const cmd_def cmds[] = {
        {"fix", cmd_fix, 0},
        {"fixes", cmd_fixes, 0},
        {"fix_get", cmd_fix_get, 0},
        {"approve", cmd_approve, 0},
        {"skip", cmd_skip, 0},
        {"recurrence", cmd_recurrence, 0},
        {"kill_switch", cmd_kill_switch, 0},
        {"pause", cmd_pause, 0},
        {"breaker_reset", cmd_breaker_reset, 0},
        {"gate_status", cmd_gate_status, 0},
    };
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
