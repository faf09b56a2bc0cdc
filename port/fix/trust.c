/*
 * Earned trust and the first-consent question (trust.h, docs/recovery.md).
 */
#include "trust.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "ctx.h"
#include "effect.h"
#include "notify.h"
#include "state.h"

#define TRUST_STATE_MAX 4096

typedef struct trust_cfg {
    int enabled;
    long long after;
    int take; /* gate.trust.mode "take": rise without asking */
    policy_consent max;
    policy_consent floor;
    long long ask_after;
    char service[128];
} trust_cfg;

static void trust_cfg_load(port_ctx *ctx, trust_cfg *c)
{
    char buf[32];
    json_t *en = port_config_get(ctx, "gate.trust.enabled");
    c->enabled = json_is_true(en);
    json_decref(en);
    c->after = port_config_int(ctx, "gate.trust.after", 5);
    if (c->after < 1)
        c->after = 5;
    port_config_string(ctx, "gate.trust.mode", "offer", buf, sizeof(buf));
    c->take = strcmp(buf, "take") == 0;
    c->max =
        policy_consent_parse(port_config_string(ctx, "gate.trust.max", "repair", buf, sizeof(buf)));
    c->floor = policy_consent_parse(
        port_config_string(ctx, "gate.trust.floor", "diagnose", buf, sizeof(buf)));
    c->ask_after = port_config_int(ctx, "gate.trust.ask_after_errors", 0);
    port_config_string(ctx, "service.name", "default", c->service, sizeof(c->service));
}

static void state_key(char *out, size_t len, const trust_cfg *c)
{
    snprintf(out, len, "trust.%s", c->service);
}

/* The stored state (an object, new reference; empty when none). */
static json_t *load(state_db *db, const trust_cfg *c)
{
    char key[160], buf[TRUST_STATE_MAX];
    state_key(key, sizeof(key), c);
    json_t *st = NULL;
    if (state_kv_get(db, key, buf, sizeof(buf)) == 0)
        st = json_loads(buf, 0, NULL);
    if (!json_is_object(st)) {
        json_decref(st);
        st = json_object();
    }
    return st;
}

static int store(state_db *db, const trust_cfg *c, json_t *st)
{
    char key[160];
    state_key(key, sizeof(key), c);
    char *text = json_dumps(st, JSON_COMPACT);
    int rc = text != NULL ? state_kv_set(db, key, text) : -1;
    free(text);
    return rc;
}

static int has_level(json_t *st)
{
    return json_is_string(json_object_get(st, "level"));
}

static policy_consent level_of(json_t *st, policy_consent configured)
{
    json_t *l = json_object_get(st, "level");
    return json_is_string(l) ? policy_consent_parse(json_string_value(l)) : configured;
}

static policy_consent configured_consent(port_ctx *ctx)
{
    char buf[32];
    return policy_consent_parse(
        port_config_string(ctx, "gate.consent", "diagnose", buf, sizeof(buf)));
}

policy_consent trust_consent(port_ctx *ctx, policy_consent configured)
{
    state_db *db = port_state(ctx);
    if (db == NULL)
        return configured;
    trust_cfg c;
    trust_cfg_load(ctx, &c);
    json_t *st = load(db, &c);
    policy_consent level = level_of(st, configured);
    json_decref(st);
    return level;
}

static int effect_is_done(state_db *db, const char *key)
{
    json_t *e = state_effect_get(db, key);
    int done = e != NULL && strcmp(json_string_value(json_object_get(e, "status")) != NULL
                                       ? json_string_value(json_object_get(e, "status"))
                                       : "",
                                   "done") == 0;
    json_decref(e);
    return done;
}

/* Applies change (steals it: fields set on the state) and the audit record
 * (action, steals fields) under key in one transaction, then announces
 * text. Returns 0, 1 when key was already done, -1 on error. */
static int commit_change(port_ctx *ctx, const trust_cfg *c, const char *key, json_t *change,
                         const char *action, json_t *fields, const char *text)
{
    state_db *db = port_state(ctx);
    json_t *audit = NULL;
    json_object_set_new(fields, "service", json_string(c->service));
    effect_audit_add(&audit, action, fields);
    int rc = -1;
    if (state_txn_begin(db) == 0) {
        if (effect_is_done(db, key)) {
            rc = 1;
            state_txn_rollback(db);
        } else {
            json_t *st = load(db, c);
            json_object_update(st, change);
            json_t *result = json_pack("{s:s}", "action", action);
            rc =
                store(db, c, st) == 0 && state_effect_done(db, key, 0, result, audit) == 0 ? 0 : -1;
            json_decref(result);
            json_decref(st);
            if (rc == 0)
                rc = state_txn_commit(db);
            else
                state_txn_rollback(db);
        }
    }
    json_decref(change);
    json_decref(audit);
    if (rc != 0)
        return rc;
    effect_flush(ctx, key);
    if (text != NULL) {
        char nkey[EFFECT_KEY_MAX];
        if (effect_key(nkey, sizeof(nkey), key, "notify") == 0) {
            json_t *msg = json_pack("{s:s, s:s, s:s, s:s}", "kind", "consent", "fingerprint",
                                    c->service, "service", c->service, "error", text);
            json_decref(notify_send_once(ctx, msg, nkey, 0));
            json_decref(msg);
        }
        port_notify(
            ctx, "consent",
            json_pack("{s:s, s:s, s:s}", "service", c->service, "action", action, "text", text));
    }
    return 0;
}

void trust_on_verified(port_ctx *ctx, int64_t fix_id, int automatic)
{
    state_db *db = port_state(ctx);
    trust_cfg c;
    trust_cfg_load(ctx, &c);
    if (db == NULL || !c.enabled || automatic)
        return;
    char key[EFFECT_KEY_MAX];
    snprintf(key, sizeof(key), "trust/fix/%lld/verified", (long long)fix_id);
    json_t *st = load(db, &c);
    policy_consent now = level_of(st, configured_consent(ctx));
    long long streak = json_integer_value(json_object_get(st, "streak")) + 1;
    json_decref(st);
    char text[400];
    json_t *fields = json_pack("{s:I, s:I, s:I}", "fix_id", (json_int_t)fix_id, "streak",
                               (json_int_t)streak, "after", (json_int_t)c.after);
    if (streak < c.after || now >= c.max) {
        commit_change(ctx, &c, key, json_pack("{s:I}", "streak", (json_int_t)streak),
                      "trust_earned", fields, NULL);
        return;
    }
    policy_consent next = (policy_consent)(now + 1);
    json_object_set_new(fields, "from", json_string(policy_consent_name(now)));
    json_object_set_new(fields, "to", json_string(policy_consent_name(next)));
    if (c.take) {
        json_object_set_new(fields, "why", json_string("earned"));
        snprintf(text, sizeof(text),
                 "SelfHeal raised the consent level of service %s from %s to %s: %lld fixes a "
                 "human approved were deployed without a rollback.",
                 c.service, policy_consent_name(now), policy_consent_name(next), streak);
        commit_change(ctx, &c, key,
                      json_pack("{s:s, s:I, s:s, s:n}", "level", policy_consent_name(next),
                                "streak", (json_int_t)0, "by", "trust", "offered"),
                      "consent_changed", fields, text);
    } else {
        snprintf(text, sizeof(text),
                 "Service %s has earned the consent level %s (now %s): %lld fixes a human "
                 "approved were deployed without a rollback. To grant it: mix self_heal.consent "
                 "%s",
                 c.service, policy_consent_name(next), policy_consent_name(now), streak,
                 policy_consent_name(next));
        commit_change(ctx, &c, key,
                      json_pack("{s:I, s:s}", "streak", (json_int_t)streak, "offered",
                                policy_consent_name(next)),
                      "consent_offered", fields, text);
    }
}

void trust_on_rollback(port_ctx *ctx, int64_t fix_id, int breaker_open)
{
    state_db *db = port_state(ctx);
    trust_cfg c;
    trust_cfg_load(ctx, &c);
    if (db == NULL || !c.enabled)
        return;
    char key[EFFECT_KEY_MAX];
    snprintf(key, sizeof(key), "trust/fix/%lld/rollback", (long long)fix_id);
    json_t *st = load(db, &c);
    policy_consent now = level_of(st, configured_consent(ctx));
    json_decref(st);
    const char *why = breaker_open ? "rollback_breaker" : "rollback";
    json_t *fields = json_pack("{s:I, s:s, s:s, s:b}", "fix_id", (json_int_t)fix_id, "from",
                               policy_consent_name(now), "why", why, "breaker_open", breaker_open);
    if (now <= c.floor) {
        json_object_set_new(fields, "to", json_string(policy_consent_name(now)));
        commit_change(ctx, &c, key, json_pack("{s:I, s:n}", "streak", (json_int_t)0, "offered"),
                      "trust_lost", fields, NULL);
        return;
    }
    policy_consent next = (policy_consent)(now - 1);
    json_object_set_new(fields, "to", json_string(policy_consent_name(next)));
    char text[400];
    snprintf(text, sizeof(text),
             "SelfHeal lowered the consent level of service %s from %s to %s after fix %lld was "
             "rolled back%s.",
             c.service, policy_consent_name(now), policy_consent_name(next), (long long)fix_id,
             breaker_open ? " and the deploy circuit breaker opened" : "");
    commit_change(ctx, &c, key,
                  json_pack("{s:s, s:I, s:s, s:n}", "level", policy_consent_name(next), "streak",
                            (json_int_t)0, "by", "trust", "offered"),
                  "consent_changed", fields, text);
}

void trust_on_errors(port_ctx *ctx, const char *job_key, long long count)
{
    state_db *db = port_state(ctx);
    trust_cfg c;
    trust_cfg_load(ctx, &c);
    char key[EFFECT_KEY_MAX];
    if (db == NULL || c.ask_after <= 0 || count <= 0 ||
        effect_key(key, sizeof(key), job_key, "trust_errors") != 0)
        return;
    json_t *st = load(db, &c);
    long long total = json_integer_value(json_object_get(st, "errors")) + count;
    int ask = !has_level(st) && !json_is_true(json_object_get(st, "asked")) && total >= c.ask_after;
    json_decref(st);
    if (commit_change(ctx, &c, key, json_pack("{s:I}", "errors", (json_int_t)total), "trust_errors",
                      json_pack("{s:I}", "errors", (json_int_t)total), NULL) != 0 ||
        !ask)
        return;
    char text[500];
    snprintf(text, sizeof(text),
             "Service %s has reached %lld errors. Which consent level may SelfHeal take for it? "
             "observe (tickets only), diagnose (fixes, deployed when a human approves) or repair "
             "(automatic deploys within the gate). Answer with: mix self_heal.consent <level> "
             "(until then: %s)",
             c.service, total, policy_consent_name(configured_consent(ctx)));
    char akey[EFFECT_KEY_MAX];
    snprintf(akey, sizeof(akey), "trust/%s/ask", c.service);
    commit_change(
        ctx, &c, akey, json_pack("{s:b}", "asked", 1), "consent_asked",
        json_pack("{s:I, s:I}", "errors", (json_int_t)total, "threshold", (json_int_t)c.ask_after),
        text);
}

/* ------------------------------------------------------------ command */

static json_t *cmd_consent(port_ctx *ctx, json_t *args, cmd_error *err)
{
    state_db *db = port_state(ctx);
    if (db == NULL) {
        cmd_error_set(err, "no_state", "consent needs state_dir");
        return NULL;
    }
    trust_cfg c;
    trust_cfg_load(ctx, &c);
    json_t *level = json_object_get(args, "level");
    if (level != NULL) {
        const char *l = json_string_value(level);
        if (l == NULL ||
            (strcmp(l, "observe") != 0 && strcmp(l, "diagnose") != 0 && strcmp(l, "repair") != 0)) {
            cmd_error_set(err, "bad_args", "level must be observe, diagnose or repair");
            return NULL;
        }
        const char *by = json_string_value(json_object_get(args, "by"));
        if (by == NULL || by[0] == '\0' || strlen(by) > 100)
            by = "operator";
        json_t *st = load(db, &c);
        policy_consent from = level_of(st, configured_consent(ctx));
        json_decref(st);
        if (state_txn_begin(db) != 0) {
            cmd_error_set(err, "state", "could not store the consent level");
            return NULL;
        }
        st = load(db, &c);
        json_object_update_new(st, json_pack("{s:s, s:I, s:s, s:n}", "level", l, "streak",
                                             (json_int_t)0, "by", by, "offered"));
        if (store(db, &c, st) != 0 || state_txn_commit(db) != 0) {
            state_txn_rollback(db);
            json_decref(st);
            cmd_error_set(err, "state", "could not store the consent level");
            return NULL;
        }
        json_decref(st);
        json_t *fields = json_pack("{s:s, s:s, s:s, s:s, s:s}", "service", c.service, "from",
                                   policy_consent_name(from), "to", l, "why", "operator", "by", by);
        audit_log *log = port_audit(ctx);
        if (log != NULL)
            audit_append(log, "consent_changed", fields);
        json_decref(fields);
        char text[300];
        snprintf(text, sizeof(text), "%s set the consent level of service %s from %s to %s.", by,
                 c.service, policy_consent_name(from), l);
        json_t *msg = json_pack("{s:s, s:s, s:s, s:s}", "kind", "consent", "fingerprint", c.service,
                                "service", c.service, "error", text);
        json_decref(notify_send(ctx, msg));
        json_decref(msg);
        port_notify(ctx, "consent",
                    json_pack("{s:s, s:s, s:s}", "service", c.service, "action", "consent_changed",
                              "text", text));
    }
    json_t *st = load(db, &c);
    json_t *reply =
        json_pack("{s:s, s:s, s:O}", "service", c.service, "level",
                  policy_consent_name(level_of(st, configured_consent(ctx))), "state", st);
    json_decref(st);
    return reply;
}

const cmd_def *trust_commands(size_t *n)
{
    static const cmd_def cmds[] = {{"consent", cmd_consent, 0}};
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
