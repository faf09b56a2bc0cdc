/*
 * Recovery actions before or instead of a code fix (recover.h).
 */
#include "recover.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h"
#include "effect.h"
#include "exec.h"
#include "notify.h"
#include "state.h"

#define RECOVER_STATE_MAX 4096
#define RECOVER_ACTIONS_MAX 16
#define RECOVER_PENDING_MAX 64 /* runs kept for a restart to carry on */
#define RECOVER_PENDING_KEY "recover.pending"

/* The runs of this process, by key: a run is never started twice at once. */
static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *running;

typedef struct recover_cfg {
    json_t *actions; /* [{"name", "argv", "timeout_s"?}] */
    json_t *severities;
    int watches;
    int instead;
    long long window_s;
    long long backoff_s;
    long long max_per_hour;
    char service[128];
} recover_cfg;

static long long bounded(port_ctx *ctx, const char *path, long long dflt, long long lo,
                         long long hi)
{
    long long v = port_config_int(ctx, path, dflt);
    return v >= lo && v <= hi ? v : dflt;
}

static void recover_cfg_load(port_ctx *ctx, recover_cfg *c)
{
    char buf[32];
    c->actions = port_config_get(ctx, "recover.actions");
    if (!json_is_array(c->actions) || json_array_size(c->actions) > RECOVER_ACTIONS_MAX) {
        json_decref(c->actions);
        c->actions = NULL;
    }
    c->severities = port_config_get(ctx, "recover.severities");
    if (!json_is_array(c->severities)) {
        json_decref(c->severities);
        c->severities = json_pack("[s]", "critical");
    }
    json_t *w = port_config_get(ctx, "recover.watches");
    c->watches = w == NULL || json_is_true(w);
    json_decref(w);
    c->instead =
        strcmp(port_config_string(ctx, "recover.mode", "before", buf, sizeof(buf)), "instead") == 0;
    c->window_s = bounded(ctx, "recover.verify_window_s", 60, 0, 86400);
    c->backoff_s = bounded(ctx, "recover.backoff_s", 60, 0, 86400);
    c->max_per_hour = bounded(ctx, "recover.max_per_hour", 3, 1, 1000);
    port_config_string(ctx, "service.name", "default", c->service, sizeof(c->service));
}

static void recover_cfg_free(recover_cfg *c)
{
    json_decref(c->actions);
    json_decref(c->severities);
}

static const char *str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* Whether the group calls for recovery: a fired watch, or a listed severity. */
static int due(const recover_cfg *c, json_t *group)
{
    const char *type = str(group, "type");
    const char *fp = str(group, "id") != NULL ? str(group, "id") : str(group, "fingerprint");
    if (fp == NULL)
        return 0;
    if ((type != NULL && strcmp(type, "watch") == 0) || strncmp(fp, "watch:", 6) == 0)
        return c->watches;
    const char *sev = str(group, "severity");
    size_t i;
    json_t *s;
    json_array_foreach(c->severities, i, s) if (sev != NULL && json_is_string(s) &&
                                                strcmp(json_string_value(s), sev) == 0) return 1;
    return 0;
}

/* ------------------------------------------------------------ pending */

/* The runs not finished yet ([{"key", "fps", "attempt"}], kv
 * RECOVER_PENDING_KEY): add (entry not NULL) or remove key, in one
 * transaction. 0, or -1 (full, or a database error). */
static int pending_update(state_db *db, const char *key, json_t *entry)
{
    char buf[65536];
    if (state_txn_begin(db) != 0)
        return -1;
    json_t *list = state_kv_get(db, RECOVER_PENDING_KEY, buf, sizeof(buf)) == 0
                       ? json_loads(buf, 0, NULL)
                       : NULL;
    if (!json_is_array(list)) {
        json_decref(list);
        list = json_array();
    }
    size_t i;
    json_t *e;
    int found = 0;
    json_array_foreach(list, i, e)
    {
        if (strcmp(str(e, "key") != NULL ? str(e, "key") : "", key) == 0) {
            found = 1;
            break;
        }
    }
    int rc = 0;
    if (entry == NULL && found)
        json_array_remove(list, i);
    else if (entry != NULL && !found)
        rc = json_array_size(list) < RECOVER_PENDING_MAX ? json_array_append(list, entry) : -1;
    char *text = rc == 0 ? json_dumps(list, JSON_COMPACT) : NULL;
    if (text != NULL && strlen(text) < sizeof(buf) &&
        state_kv_set(db, RECOVER_PENDING_KEY, text) == 0)
        rc = state_txn_commit(db);
    else {
        state_txn_rollback(db);
        rc = -1;
    }
    free(text);
    json_decref(list);
    return rc;
}

/* Marks key running in this process; 0 when it already was. */
static int claim(const char *key)
{
    pthread_mutex_lock(&running_lock);
    if (running == NULL)
        running = json_object();
    int fresh = running != NULL && json_object_get(running, key) == NULL &&
                json_object_set_new(running, key, json_true()) == 0;
    pthread_mutex_unlock(&running_lock);
    return fresh;
}

static void unclaim(const char *key)
{
    pthread_mutex_lock(&running_lock);
    json_object_del(running, key);
    pthread_mutex_unlock(&running_lock);
}

/* ------------------------------------------------------------ the run */

typedef struct recover_run {
    port_ctx *ctx;
    port_pin pin;
    char key[EFFECT_KEY_MAX];
    char fp[256]; /* the first of fps: {fingerprint}, messages */
    json_t *fps;  /* every fingerprint the run recovers */
    long long attempt;
} recover_run;

/* One action, once (its effect key); 1 when it succeeded. */
static int run_action(recover_run *r, const recover_cfg *c, size_t i, json_t *action)
{
    char akey[EFFECT_KEY_MAX], step[32];
    snprintf(step, sizeof(step), "action%zu", i);
    if (effect_key(akey, sizeof(akey), r->key, step) != 0)
        return 0;
    const char *name = str(action, "name") != NULL ? str(action, "name") : step;
    json_t *prior = NULL;
    int e = effect_begin(r->ctx, akey, 0, &prior, NULL);
    if (e == EFFECT_DONE) {
        int ok = json_is_true(json_object_get(prior, "ok"));
        json_decref(prior);
        return ok;
    }
    if (e == EFFECT_ERROR)
        return 0;
    char desc[256] = "interrupted: not run again";
    int ok = 0;
    if (e == EFFECT_NEW) {
        const char *keys[] = {"fingerprint", "service"};
        const char *vals[] = {r->fp, c->service};
        char err[200] = "";
        char **argv = exec_expand(json_object_get(action, "argv"), keys, vals, 2, err, sizeof(err));
        char **envp = exec_env(NULL, NULL, NULL, 0);
        long long t = json_integer_value(json_object_get(action, "timeout_s"));
        exec_spec spec = {.argv = argv,
                          .envp = envp,
                          .timeout_ms = (int)((t > 0 && t <= 3600 ? t : 60) * 1000),
                          .stopping = &r->ctx->stopping};
        exec_result res;
        if (argv == NULL || envp == NULL) {
            snprintf(desc, sizeof(desc), "bad action: %s", err[0] ? err : "out of memory");
        } else if (exec_run(&res, &spec, err, sizeof(err)) != 0) {
            snprintf(desc, sizeof(desc), "could not run: %s", err);
        } else {
            exec_describe(&res, desc, sizeof(desc));
            ok = exec_ok(&res);
        }
        exec_argv_free(argv);
        exec_argv_free(envp);
    }
    json_t *audit = NULL;
    effect_audit_add(&audit, "recovery_action",
                     json_pack("{s:s, s:O, s:s, s:I, s:s, s:b, s:s}", "fingerprint", r->fp,
                               "fingerprints", r->fps, "service", c->service, "attempt",
                               (json_int_t)r->attempt, "name", name, "ok", ok, "result", desc));
    json_t *result = json_pack("{s:b, s:s}", "ok", ok, "result", desc);
    effect_done(r->ctx, akey, 0, result, audit);
    json_decref(result);
    json_decref(audit);
    return ok;
}

/* The recurrence check of a deploy's verification: 1 when the fingerprint
 * did not recur within the window, 0 when it did, -1 when stopping. */
static int verify(recover_run *r, const recover_cfg *c)
{
    state_db *db = port_state(r->ctx);
    int64_t since = port_now();
    size_t i;
    json_t *fp;
    json_array_foreach(r->fps, i, fp) port_notify(
        r->ctx, "verify",
        json_pack("{s:O, s:I}", "fingerprint", fp, "until", (json_int_t)(since + c->window_s)));
    long long end = port_now_ms() + c->window_s * 1000;
    int held = 1;
    while (held == 1) {
        json_array_foreach(r->fps, i, fp)
        {
            if (state_recurrence_count(db, json_string_value(fp), since) > 0)
                held = 0;
        }
        if (held == 0 || port_now_ms() >= end)
            break;
        if (port_sleep_ms(250, &r->ctx->stopping))
            held = -1;
    }
    json_array_foreach(r->fps, i, fp) port_notify(
        r->ctx, "verify_end",
        json_pack("{s:O, s:s}", "fingerprint", fp, "result", held == 1 ? "recovered" : "recurred"));
    return held;
}

static void run_recovery(recover_run *r)
{
    recover_cfg c;
    recover_cfg_load(r->ctx, &c);
    char vkey[EFFECT_KEY_MAX];
    json_t *before = NULL;
    if (effect_key(vkey, sizeof(vkey), r->key, "verified") != 0 ||
        (before = effect_result(r->ctx, vkey)) != NULL) {
        json_decref(before);
        pending_update(port_state(r->ctx), r->key, NULL);
        recover_cfg_free(&c);
        return;
    }
    int ok = 1;
    size_t i;
    json_t *action;
    json_array_foreach(c.actions, i, action) ok &= run_action(r, &c, i, action);
    int held = ok ? verify(r, &c) : 0;
    if (held < 0) {
        recover_cfg_free(&c);
        return; /* stopping: verified again when the job resumes */
    }
    const char *outcome = held ? "recovered" : ok ? "recurred" : "action_failed";
    json_t *audit = NULL;
    effect_audit_add(&audit, held ? "recovery_verified" : "recovery_failed",
                     json_pack("{s:s, s:O, s:s, s:I, s:s, s:I}", "fingerprint", r->fp,
                               "fingerprints", r->fps, "service", c.service, "attempt",
                               (json_int_t)r->attempt, "outcome", outcome, "window_s",
                               (json_int_t)c.window_s));
    json_t *result = json_pack("{s:s}", "outcome", outcome);
    int first = effect_done(r->ctx, vkey, 0, result, audit) == 0;
    json_decref(result);
    json_decref(audit);
    pending_update(port_state(r->ctx), r->key, NULL);
    if (first) {
        char text[400], nkey[EFFECT_KEY_MAX];
        if (held)
            snprintf(text, sizeof(text),
                     "SelfHeal recovered %s (attempt %lld): its recovery actions ran and the "
                     "error did not recur within %lld s.",
                     r->fp, r->attempt, c.window_s);
        else
            snprintf(text, sizeof(text),
                     "SelfHeal's recovery of %s (attempt %lld) did not hold (%s); a human or a "
                     "code fix must act.",
                     r->fp, r->attempt, outcome);
        if (effect_key(nkey, sizeof(nkey), vkey, "notify") == 0) {
            json_t *msg = json_pack("{s:s, s:s, s:s, s:s}", "kind", "recovery", "fingerprint",
                                    r->fp, "service", c.service, "error", text);
            json_decref(notify_send_once(r->ctx, msg, nkey, 0));
            json_decref(msg);
        }
        port_notify(r->ctx, "recovery",
                    json_pack("{s:s, s:O, s:s, s:I, s:I}", "fingerprint", r->fp, "fingerprints",
                              r->fps, "outcome", outcome, "attempt", (json_int_t)r->attempt,
                              "window_s", (json_int_t)c.window_s));
    }
    recover_cfg_free(&c);
}

static void *recover_thread(void *p)
{
    recover_run *r = p;
    port_pin_enter(&r->pin);
    run_recovery(r);
    unclaim(r->key);
    port_pin_end(&r->pin);
    json_decref(r->fps);
    free(r);
    return NULL;
}

/* One run for the fingerprints fps (steals it) of an escalation. */
static void spawn(port_ctx *ctx, const char *key, json_t *fps, long long attempt)
{
    recover_run *r = claim(key) ? calloc(1, sizeof(*r)) : NULL;
    if (r == NULL) {
        json_decref(fps);
        return;
    }
    r->ctx = ctx;
    snprintf(r->key, sizeof(r->key), "%s", key);
    snprintf(r->fp, sizeof(r->fp), "%s", json_string_value(json_array_get(fps, 0)));
    r->fps = fps;
    r->attempt = attempt;
    port_pin_take(&r->pin, ctx);
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&tid, &attr, recover_thread, r) != 0) {
        port_pin_release(&r->pin);
        unclaim(r->key);
        json_decref(r->fps);
        free(r);
    }
    pthread_attr_destroy(&attr);
}

/* ------------------------------------------------------------ admission */

/* Backoff and cap over the attempts of the last hour, recorded with the
 * step's effect in one transaction. Returns the attempt number (>= 1), 0
 * when skipped (why set), -1 on error. */
static long long admit(port_ctx *ctx, const recover_cfg *c, const char *key, const char *fp,
                       const char **why)
{
    state_db *db = port_state(ctx);
    char kvkey[300], buf[RECOVER_STATE_MAX];
    snprintf(kvkey, sizeof(kvkey), "recover.%s", fp);
    if (state_txn_begin(db) != 0)
        return -1;
    json_t *st = state_kv_get(db, kvkey, buf, sizeof(buf)) == 0 ? json_loads(buf, 0, NULL) : NULL;
    json_t *at = json_array();
    int64_t now = port_now();
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(st, "at"), i,
                       t) if (json_is_integer(t) && json_integer_value(t) > now - 3600)
        json_array_append(at, t);
    size_t n = json_array_size(at);
    long long attempt = 0;
    *why = NULL;
    if ((long long)n >= c->max_per_hour) {
        *why = "cap";
    } else if (n > 0) {
        long long wait = c->backoff_s << (n - 1 < 20 ? n - 1 : 20);
        if (now < json_integer_value(json_array_get(at, n - 1)) + wait)
            *why = "backoff";
    }
    if (*why == NULL) {
        json_array_append_new(at, json_integer((json_int_t)now));
        attempt = (long long)n + 1;
    }
    json_t *audit = NULL;
    effect_audit_add(&audit, *why == NULL ? "recovery_started" : "recovery_skipped",
                     json_pack("{s:s, s:s, s:I, s:s?, s:I}", "fingerprint", fp, "service",
                               c->service, "attempt", (json_int_t)attempt, "why", *why, "last_hour",
                               (json_int_t)n));
    json_t *result = json_pack("{s:I}", "attempt", (json_int_t)attempt);
    json_t *next = json_pack("{s:O}", "at", at);
    char *text = json_dumps(next, JSON_COMPACT);
    int rc = text != NULL && state_kv_set(db, kvkey, text) == 0 &&
                     state_effect_done(db, key, 0, result, audit) == 0
                 ? 0
                 : -1;
    if (rc == 0)
        rc = state_txn_commit(db);
    else
        state_txn_rollback(db);
    free(text);
    json_decref(next);
    json_decref(result);
    json_decref(audit);
    json_decref(at);
    json_decref(st);
    if (rc != 0)
        return -1;
    effect_flush(ctx, key);
    return attempt;
}

json_t *recover_on_escalation(port_ctx *ctx, const char *job_key, json_t *groups)
{
    json_t *instead = json_object();
    recover_cfg c;
    recover_cfg_load(ctx, &c);
    if (port_state(ctx) == NULL || c.actions == NULL || json_array_size(c.actions) == 0) {
        recover_cfg_free(&c);
        return instead;
    }
    json_t *fps = json_array();
    long long attempt = 0;
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        if (!due(&c, g))
            continue;
        const char *fp = str(g, "id") != NULL ? str(g, "id") : str(g, "fingerprint");
        char key[EFFECT_KEY_MAX], step[300];
        snprintf(step, sizeof(step), "recover:%s", fp);
        if (strlen(fp) > 200 || effect_key(key, sizeof(key), job_key, step) != 0)
            continue;
        /* admitted before (a resumed job): its run goes on where it stopped */
        json_t *done = effect_result(ctx, key);
        const char *why = NULL;
        long long n = done != NULL ? json_integer_value(json_object_get(done, "attempt"))
                                   : admit(ctx, &c, key, fp, &why);
        json_decref(done);
        if (n <= 0)
            continue;
        json_array_append_new(fps, json_string(fp));
        attempt = n > attempt ? n : attempt;
        if (c.instead)
            json_object_set_new(instead, fp, json_true());
    }
    /* one run for the escalation: a cascade restarts its service once */
    char key[EFFECT_KEY_MAX];
    if (json_array_size(fps) > 0 && effect_key(key, sizeof(key), job_key, "recover") == 0) {
        json_t *entry =
            json_pack("{s:s, s:O, s:I}", "key", key, "fps", fps, "attempt", (json_int_t)attempt);
        pending_update(port_state(ctx), key, entry);
        json_decref(entry);
        spawn(ctx, key, json_incref(fps), attempt);
    }
    json_decref(fps);
    recover_cfg_free(&c);
    return instead;
}

void recover_resume(port_ctx *ctx)
{
    state_db *db = port_state(ctx);
    char buf[65536];
    json_t *list = db != NULL && state_kv_get(db, RECOVER_PENDING_KEY, buf, sizeof(buf)) == 0
                       ? json_loads(buf, 0, NULL)
                       : NULL;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        json_t *fps = json_object_get(e, "fps");
        if (str(e, "key") != NULL && json_is_array(fps) && json_array_size(fps) > 0)
            spawn(ctx, str(e, "key"), json_incref(fps),
                  json_integer_value(json_object_get(e, "attempt")));
    }
    json_decref(list);
}
