/*
 * The fix loop's scheduler (fix.h, docs/fix-loop.md): a round every
 * 500 ms expires approvals and starts the next deploy of an approved fix,
 * one at a time, on a thread of its own.
 */
#include "fix_loop.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deploy.h"
#include "service.h"
#include "state.h"

static pthread_mutex_t sched_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sched_cond = PTHREAD_COND_INITIALIZER;
static int sched_started;

void fix_sched_wake(void)
{
    pthread_mutex_lock(&sched_lock);
    pthread_cond_broadcast(&sched_cond);
    pthread_mutex_unlock(&sched_lock);
}

static void expire_approvals(port_ctx *ctx, state_db *db)
{
    json_t *waiting = state_fixes_list(db, "awaiting_approval", NULL, 100);
    size_t i;
    json_t *f;
    int64_t now = port_now();
    json_array_foreach(waiting, i, f)
    {
        json_t *exp = json_object_get(f, "approval_expires_at");
        if (!json_is_integer(exp) || json_integer_value(exp) > now)
            continue;
        int64_t id = json_integer_value(json_object_get(f, "id"));
        if (fix_set(db, id, "awaiting_approval", json_pack("{s:s}", "status", "expired")) == 0) {
            SERVICE_SCOPE(scope, ctx, service_of_fix(f)); /* its service's tickets */
            fix_ticket_note(ctx, f, NULL, "The approval request for the SelfHeal fix expired.");
            fix_step(ctx, id, fix_str(f, "fingerprint"), "expired", NULL);
        }
    }
    json_decref(waiting);
}

typedef struct deploy_arg {
    port_ctx *ctx;
    int64_t id;
    int automatic;
    port_pin pin; /* the scheduler's round that chose the fix */
} deploy_arg;

static void *deploy_thread(void *p)
{
    deploy_arg *arg = p;
    fix_config cfg;
    cmd_error err = {NULL, ""};
    port_pin_enter(&arg->pin);
    if (fix_config_load(&cfg, arg->ctx, &err) == 0) {
        json_t *fix = deploy_run(arg->ctx, &cfg, arg->id, arg->automatic, &err);
        json_decref(fix);
        fix_config_free(&cfg);
    }
    port_pin_end(&arg->pin);
    fix_deploy_slot_set(0);
    fix_sched_wake();
    free(arg);
    return NULL;
}

/* The oldest approved fix, if the deploy slot is free and the switches
 * allow it: re-asks the gate for fixes the gate approved. */
static void start_next_deploy(port_ctx *ctx, state_db *db)
{
    int busy = fix_deploy_slot_busy();
    if (busy || fix_kill_switch_on(ctx) || fix_paused(ctx))
        return;
    json_t *approved = state_fixes_list(db, "approved", NULL, 1000);
    json_t *next = json_array_get(approved, json_array_size(approved) - 1); /* oldest */
    if (next == NULL) {
        json_decref(approved);
        return;
    }
    int64_t id = json_integer_value(json_object_get(next, "id"));
    SERVICE_SCOPE(scope, ctx, service_of_fix(next)); /* the gate and the deploy thread's pin */
    const char *by = fix_str(next, "decided_by");
    int automatic = by != NULL && strcmp(by, "gate") == 0;
    fix_config cfg;
    cmd_error err = {NULL, ""};
    if (fix_config_load(&cfg, ctx, &err) != 0) {
        json_decref(approved);
        return;
    }
    if (automatic) {
        json_t *report = json_object_get(next, "validation");
        json_t *conf = json_object_get(next, "confidence");
        json_t *decision = NULL;
        policy_action again =
            fix_gate(ctx, &cfg, db, next, json_is_true(json_object_get(report, "passed")),
                     !json_is_false(json_object_get(report, "needs_human")),
                     json_is_number(conf) ? json_number_value(conf) : 0.0, 0, &decision);
        if (again != POLICY_DEPLOY) {
            int64_t expires = port_now() + cfg.approval_ttl_s;
            fix_set(db, id, "approved",
                    json_pack("{s:s, s:O, s:I, s:n}", "status", "awaiting_approval", "decision",
                              decision, "approval_expires_at", (json_int_t)expires, "decided_by"));
            fix_step(ctx, id, fix_str(next, "fingerprint"), "gate", json_deep_copy(decision));
            json_t *fix = state_fix_get(db, id);
            fix_notify(
                ctx, fix, "fix",
                "The gate no longer allows this fix to deploy by itself; it waits for approval", 1);
            json_decref(fix);
            json_decref(decision);
            json_decref(approved);
            fix_config_free(&cfg);
            return;
        }
        json_decref(decision);
    }
    fix_config_free(&cfg);
    json_decref(approved);
    deploy_arg *arg = malloc(sizeof(*arg));
    if (arg == NULL)
        return;
    *arg = (deploy_arg){.ctx = ctx, .id = id, .automatic = automatic};
    port_pin_take(&arg->pin, ctx);
    fix_deploy_slot_set(1);
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&tid, &attr, deploy_thread, arg) != 0) {
        fix_deploy_slot_set(0);
        port_pin_release(&arg->pin);
        free(arg);
    }
    pthread_attr_destroy(&attr);
}

static void *scheduler(void *p)
{
    port_ctx *ctx = p;
    while (!ctx->stopping) {
        port_pin pin; /* each round runs with the configuration of its start */
        port_pin_begin(&pin, ctx);
        state_db *db = port_state(ctx);
        if (db != NULL) {
            expire_approvals(ctx, db);
            start_next_deploy(ctx, db);
        }
        port_pin_end(&pin);
        pthread_mutex_lock(&sched_lock);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 500 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&sched_cond, &sched_lock, &ts);
        pthread_mutex_unlock(&sched_lock);
    }
    return NULL;
}

void fix_start_scheduler(port_ctx *ctx)
{
    fix_config cfg;
    cmd_error err = {NULL, ""};
    if (ctx->one_shot || fix_config_load(&cfg, ctx, &err) != 0)
        return;
    int enabled = cfg.enabled || service_any_fix_enabled(ctx);
    fix_config_free(&cfg);
    if (!enabled)
        return; /* no fix loop configured: nothing to expire or deploy */
    pthread_mutex_lock(&sched_lock);
    int start = !sched_started;
    sched_started = 1;
    pthread_mutex_unlock(&sched_lock);
    if (!start)
        return;
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&tid, &attr, scheduler, ctx) != 0) {
        pthread_mutex_lock(&sched_lock);
        sched_started = 0;
        pthread_mutex_unlock(&sched_lock);
    }
    pthread_attr_destroy(&attr);
}
