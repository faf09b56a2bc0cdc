/*
 * Deploy, verify, roll back (deploy.h). Every step is audited and told to
 * the BEAM as a "fix" notification with its stage; the deploy ledger
 * (state.h deploys) records each deploy and rollback, automatic or not,
 * for the hourly limit; the breaker counts consecutive failures.
 */
#include "deploy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "effect.h"
#include "exec.h"
#include "fix.h"
#include "http.h"
#include "notify.h"
#include "service.h"
#include "state.h"
#include "ticket.h"
#include "tree.h"
#include "trust.h"
#include "worktree.h"

typedef struct run {
    port_ctx *ctx;
    const fix_config *cfg;
    state_db *db;
    json_t *fix;
    int64_t id;
    const char *fp;
    int automatic;
    int64_t job_id;
    wt_repo *repo;
    char branch[256];
    char deploy_commit[WT_OID_HEX];
    char log_dir[FIX_PATH_MAX + 64];
} run;

static void stage(run *r, const char *name, json_t *fields)
{
    fix_stage(r->ctx, "deploy", r->id, r->fp, name, fields);
}

static void set_fix(run *r, json_t *fields)
{
    if (fields != NULL)
        state_fix_set(r->db, r->id, NULL, fields);
    json_decref(fields);
}

/* The ticket's note (and its new status) and a notification. */
static void tell(run *r, const char *text, const char *ticket_status)
{
    fix_ticket_note(r->ctx, r->fix, ticket_status, text);
    fix_notify(r->ctx, r->fix, "deploy", text, 0);
}

void deploy_track_key(char *out, size_t len, const char *fingerprint, int canary)
{
    snprintf(out, len, "%s%s", fingerprint, canary ? "@canary" : "");
}

/* Recurrences of fingerprint reported since, on one track. */
static long long seen_on(run *r, const char *fingerprint, int canary, int64_t since)
{
    char key[300];
    deploy_track_key(key, sizeof(key), fingerprint, canary);
    return state_recurrence_count(r->db, key, since);
}

/* The deploy command (argv_tmpl: deploy.argv or deploy.canary.argv) with
 * {repo}, {commit}, {branch}, {fingerprint}; 1 ok, 0 failed. */
static int run_deploy_command(run *r, json_t *argv_tmpl, const char *commit, const char *log_leaf,
                              char *desc, size_t desclen)
{
    char err[256] = "";
    char log_path[FIX_PATH_MAX + 160];
    snprintf(log_path, sizeof(log_path), "%s/%s", r->log_dir, log_leaf);
    const char *keys[] = {"repo", "commit", "branch", "fingerprint"};
    const char *vals[] = {r->cfg->repo, commit, r->branch, r->fp};
    char **argv = exec_expand(argv_tmpl, keys, vals, 4, err, sizeof(err));
    char **envp = exec_env(r->cfg->env_allow, NULL, NULL, 0);
    exec_result res;
    memset(&res, 0, sizeof(res));
    int ok = 0;
    if (argv != NULL && envp != NULL) {
        exec_spec spec = {.argv = argv,
                          .envp = envp,
                          .cwd = r->cfg->repo,
                          .stdout_path = log_path,
                          .stderr_path = log_path,
                          .max_output = r->cfg->max_output,
                          .timeout_ms = r->cfg->deploy_timeout_ms};
        if (exec_run(&res, &spec, err, sizeof(err)) == 0) {
            ok = exec_ok(&res);
            exec_describe(&res, desc, desclen);
        } else {
            snprintf(desc, desclen, "could not start: %s", err);
        }
    } else {
        snprintf(desc, desclen, "bad deploy.argv: %s", err);
    }
    exec_argv_free(argv);
    exec_argv_free(envp);
    return ok;
}

int deploy_health_ok(port_ctx *ctx, const fix_config *cfg)
{
    if (cfg->health_url[0] != '\0') {
        http_request req;
        http_response res;
        memset(&req, 0, sizeof(req));
        req.method = "GET";
        req.url = cfg->health_url;
        req.timeout_ms = 5000;
        req.connect_timeout_ms = 2000;
        req.max_attempts = 1;
        req.max_response = 64 * 1024;
        req.cancel = &ctx->stopping;
        int ok = http_perform(&res, &req) == 0 && res.status >= 200 && res.status < 300;
        http_response_free(&res);
        if (!ok)
            return 0;
    }
    if (cfg->health_argv != NULL) {
        char err[256];
        const char *keys[] = {"repo"};
        const char *vals[] = {cfg->repo};
        char **argv = exec_expand(cfg->health_argv, keys, vals, 1, err, sizeof(err));
        char **envp = exec_env(cfg->env_allow, NULL, NULL, 0);
        exec_result res;
        int ok = 0;
        if (argv != NULL && envp != NULL) {
            exec_spec spec = {.argv = argv,
                              .envp = envp,
                              .cwd = cfg->repo,
                              .timeout_ms = 30000,
                              .stopping = &ctx->stopping};
            ok = exec_run(&res, &spec, err, sizeof(err)) == 0 && exec_ok(&res);
        }
        exec_argv_free(argv);
        exec_argv_free(envp);
        if (!ok)
            return 0;
    }
    return 1;
}

/* Polls the health check until it passes or health_timeout_ms passes. */
static int wait_healthy(run *r)
{
    long long deadline = port_now_ms() + r->cfg->health_timeout_ms;
    for (;;) {
        if (deploy_health_ok(r->ctx, r->cfg))
            return 1;
        if (port_now_ms() >= deadline || r->ctx->stopping)
            return 0;
        port_sleep_ms(r->cfg->health_interval_ms < 1000 ? r->cfg->health_interval_ms : 1000,
                      &r->ctx->stopping);
    }
}

/* Revert, redeploy, reopen, notify, count. at_canary: the fix never left
 * the canary, so the revert goes to the canary alone (deploy.canary.argv)
 * and the stable's health is not waited for. */
static void rollback_at(run *r, const char *reason, int at_canary)
{
    char msg[512] = "";
    char revert[WT_OID_HEX] = "";
    char desc[160] = "";
    stage(r, "rollback", json_pack("{s:s, s:b}", "reason", reason, "canary", at_canary));
    char message[256];
    snprintf(message, sizeof(message), "SelfHeal: revert fix %lld (%s)\n\n%s", (long long)r->id,
             r->fp, reason);
    int reverted =
        wt_revert_on(revert, r->repo, r->branch, r->deploy_commit, message, msg, sizeof(msg)) == 0;
    int redeployed = 0, healthy = 0;
    if (reverted) {
        state_deploy_add(r->db, r->id, r->fp, "rollback", "started", revert, r->automatic,
                         at_canary ? json_pack("{s:b}", "canary", 1) : NULL);
        redeployed = run_deploy_command(r, at_canary ? r->cfg->canary_argv : r->cfg->deploy_argv,
                                        revert, "rollback.log", desc, sizeof(desc));
        healthy = redeployed && (at_canary || wait_healthy(r));
        state_deploy_add(r->db, r->id, r->fp, "rollback", healthy ? "succeeded" : "failed", revert,
                         r->automatic,
                         json_pack("{s:s, s:b}", "deploy", desc, "canary", at_canary));
    }
    int open = 0;
    service_breaker_record(r->ctx, r->db, 1, r->cfg->breaker_threshold, &open);
    set_fix(r, json_pack("{s:s, s:s?, s:{s:s, s:b, s:b, s:b, s:s}}", "status",
                         reverted ? "rolled_back" : "failed", "revert_commit",
                         revert[0] ? revert : NULL, "detail", "reason", reason, "redeployed",
                         redeployed, "healthy", healthy, "canary", at_canary, "git",
                         reverted ? "" : msg));
    stage(r, reverted ? "rolled_back" : "rollback_failed",
          json_pack("{s:s, s:s, s:b, s:s, s:s, s:b}", "reason", reason, "revert_commit", revert,
                    "healthy", healthy, "breaker", open ? "open" : "closed", "detail",
                    reverted ? desc : msg, "canary", at_canary));
    char text[700];
    snprintf(text, sizeof(text),
             "SelfHeal rolled back fix %lld%s: %s. Revert commit %.12s, redeploy %s, health %s.%s",
             (long long)r->id, at_canary ? " at the canary" : "", reason,
             revert[0] ? revert : "(none)", redeployed ? "ok" : "failed",
             healthy ? "ok" : "failing",
             open ? " The deploy circuit breaker is now open: automatic deploys stop until a "
                    "human resets it."
                  : "");
    tell(r, text, "open");
    trust_on_rollback(r->ctx, r->id, open);
    port_notify(r->ctx, "verify_end",
                json_pack("{s:s, s:s}", "fingerprint", r->fp, "result", "rolled_back"));
}

static void rollback(run *r, const char *reason)
{
    rollback_at(r, reason, 0);
}

/* Watches the verification window; 1 passed, 0 rolled back, -1 stopping. */
static int verify(run *r)
{
    int64_t since = port_now();
    long long end = port_now_ms() + (long long)r->cfg->verify_window_s * 1000;
    long long next_health = port_now_ms() + r->cfg->health_interval_ms;
    set_fix(r, json_pack("{s:s}", "status", "verifying"));
    stage(r, "verifying",
          json_pack("{s:i, s:I}", "window_s", r->cfg->verify_window_s, "since", (json_int_t)since));
    port_notify(r->ctx, "verify",
                json_pack("{s:s, s:I}", "fingerprint", r->fp, "until",
                          (json_int_t)(since + r->cfg->verify_window_s)));
    while (port_now_ms() < end) {
        if (r->ctx->stopping)
            return -1;
        long long seen = seen_on(r, r->fp, 0, since) + seen_on(r, r->fp, 1, since);
        if (seen > 0) {
            char why[128];
            snprintf(why, sizeof(why), "the error recurred %lld time(s) during verification", seen);
            rollback(r, why);
            return 0;
        }
        if (port_now_ms() >= next_health) {
            if (!deploy_health_ok(r->ctx, r->cfg)) {
                rollback(r, "the health check failed during verification");
                return 0;
            }
            next_health = port_now_ms() + r->cfg->health_interval_ms;
        }
        port_sleep_ms(250, &r->ctx->stopping);
    }
    long long seen = seen_on(r, r->fp, 0, since) + seen_on(r, r->fp, 1, since);
    if (seen > 0) {
        rollback(r, "the error recurred during verification");
        return 0;
    }
    return 1;
}

/* The step "deploy:<fix id>/<step>" of this deploy: its intent now. */
static void step_begin(run *r, const char *step, char *key, size_t len)
{
    char job_key[64];
    snprintf(job_key, sizeof(job_key), "deploy:%lld", (long long)r->id);
    if (effect_key(key, len, job_key, step) == 0)
        effect_begin(r->ctx, key, r->job_id, NULL, NULL);
    else
        key[0] = '\0';
}

/* The step done: its ledger row (kind, status, detail: stolen; none when
 * status is NULL) and its effect row with result commit together. */
static void step_done_as(run *r, const char *key, const char *kind, const char *status,
                         json_t *detail, json_t *result)
{
    int rc = state_txn_begin(r->db);
    if (rc == 0) {
        if (status != NULL)
            rc = state_deploy_add(r->db, r->id, r->fp, kind, status, r->deploy_commit, r->automatic,
                                  detail);
        else
            json_decref(detail);
        detail = NULL;
        if (rc == 0 && key[0] != '\0' && state_effect_done(r->db, key, r->job_id, result, NULL) < 0)
            rc = -1;
        if (rc == 0 && key[0] != '\0')
            effect_crash_point(key, "done");
        if (rc == 0)
            rc = state_txn_commit(r->db);
        else
            state_txn_rollback(r->db);
    }
    if (rc == 0 && key[0] != '\0')
        effect_flush(r->ctx, key);
    json_decref(detail);
    json_decref(result);
}

static void step_done(run *r, const char *key, const char *status, json_t *detail, json_t *result)
{
    step_done_as(r, key, "canary", status, detail, result);
}

/* Why the canary fails now (into why), or 0 while it holds. The canary's
 * errors are weighed against the stable's other errors in the same time
 * (the fixed error still happens on the stable, which runs without the
 * fix): more than max_error_ratio x weight x those, and at least
 * min_errors, fail it. */
static int canary_failing(run *r, int64_t since, json_t **counts, char *why, size_t len)
{
    const fix_config *cfg = r->cfg;
    long long fixed = seen_on(r, r->fp, 1, since);
    long long errors = seen_on(r, DEPLOY_ALL_ERRORS, 1, since);
    long long stable = seen_on(r, DEPLOY_ALL_ERRORS, 0, since) - seen_on(r, r->fp, 0, since);
    if (stable < 0)
        stable = 0;
    double bound = cfg->canary_max_ratio * cfg->canary_weight * (double)stable;
    json_decref(*counts);
    *counts =
        json_pack("{s:I, s:I, s:I, s:f}", "fixed_on_canary", (json_int_t)fixed, "canary_errors",
                  (json_int_t)errors, "stable_errors", (json_int_t)stable, "bound", bound);
    if (fixed > 0) {
        snprintf(why, len, "the error recurred %lld time(s) on the canary", fixed);
        return 1;
    }
    if (errors >= cfg->canary_min_errors && (double)errors > bound) {
        snprintf(why, len,
                 "the canary logged %lld error(s) against a stable baseline of %lld (limit "
                 "%.1f)",
                 errors, stable, bound);
        return 1;
    }
    return 0;
}

/* The canary stage (deploy.canary.argv): the merged commit goes to the
 * canary alone, and for deploy.canary.window_s the fixed fingerprint on
 * the canary, or the canary's error rate against the stable's, rolls it
 * back there; else it is promoted. 1 promoted, 0 rolled back, -1 stopping.
 * Its steps are effects of the deploy job ("deploy:<id>/canary",
 * "/canary_verdict"); a deploy cut short is never run again by itself. */
static int canary(run *r)
{
    const fix_config *cfg = r->cfg;
    char key[EFFECT_KEY_MAX];
    char desc[160] = "";
    step_begin(r, "canary", key, sizeof(key));
    state_deploy_add(r->db, r->id, r->fp, "canary", "started", r->deploy_commit, r->automatic,
                     NULL);
    int ok =
        run_deploy_command(r, cfg->canary_argv, r->deploy_commit, "canary.log", desc, sizeof(desc));
    step_done(r, key, ok ? NULL : "failed", ok ? NULL : json_pack("{s:s}", "deploy", desc),
              json_pack("{s:b, s:s}", "ok", ok, "result", desc));
    stage(r, "canary_deployed",
          json_pack("{s:b, s:s, s:s}", "ok", ok, "result", desc, "commit", r->deploy_commit));
    if (!ok) {
        rollback_at(r, "the canary deploy command failed", 1);
        return 0;
    }
    int64_t since = port_now();
    stage(r, "canary_watching",
          json_pack("{s:i, s:I}", "window_s", cfg->canary_window_s, "since", (json_int_t)since));
    json_int_t until = (json_int_t)(since + cfg->canary_window_s);
    port_notify(r->ctx, "verify", json_pack("{s:s, s:I}", "fingerprint", r->fp, "until", until));
    port_notify(r->ctx, "verify",
                json_pack("{s:s, s:I}", "fingerprint", DEPLOY_ALL_ERRORS, "until", until));
    long long end = port_now_ms() + (long long)cfg->canary_window_s * 1000;
    char why[200] = "";
    json_t *counts = NULL;
    int failing = 0;
    for (;;) {
        if (r->ctx->stopping) {
            json_decref(counts);
            return -1;
        }
        failing = canary_failing(r, since, &counts, why, sizeof(why));
        if (failing || port_now_ms() >= end)
            break;
        port_sleep_ms(250, &r->ctx->stopping);
    }
    port_notify(r->ctx, "verify_end",
                json_pack("{s:s, s:s}", "fingerprint", DEPLOY_ALL_ERRORS, "result",
                          failing ? "rolled_back" : "promoted"));
    step_begin(r, "canary_verdict", key, sizeof(key));
    step_done(
        r, key, failing ? "failed" : "succeeded", json_incref(counts),
        json_pack("{s:s, s:O}", "verdict", failing ? "rolled_back" : "promoted", "counts", counts));
    if (failing) {
        stage(r, "canary_failed", json_pack("{s:s, s:O}", "reason", why, "counts", counts));
        json_decref(counts);
        rollback_at(r, why, 1);
        return 0;
    }
    stage(r, "promoted",
          json_pack("{s:i, s:O}", "window_s", cfg->canary_window_s, "counts", counts));
    json_decref(counts);
    return 1;
}

/* The deploy stops here: status escalated with why, people told. */
static void escalate(run *r, const char *stage_name, const char *why)
{
    set_fix(r, json_pack("{s:s, s:{s:s}}", "status", "escalated", "detail", "reason", why));
    stage(r, stage_name, json_pack("{s:s}", "reason", why));
    char text[600];
    snprintf(text, sizeof(text), "SelfHeal did not deploy fix %lld: %s. A human must look.",
             (long long)r->id, why);
    tell(r, text, NULL);
}

/* The pull request's merge, in the fix's delivery. */
static void note_merge(run *r, const char *sha, const char *by)
{
    json_t *patch =
        json_pack("{s:b, s:s?, s:s}", "merged", 1, "merge_commit", sha, "merged_by", by);
    state_fix_patch(r->db, r->id, "delivery", patch);
    json_decref(patch);
}

/* The checks of a commit on GitHub (its combined status and its check
 * runs): 1 all passed, 0 some pending, -1 one failed (named in why), -2
 * GitHub did not answer. A commit with no status and no check run has
 * nothing pending. */
static int pr_checks(run *r, const char *sha, char *why, size_t len)
{
    char path[200];
    json_t *status = NULL, *runs = NULL;
    cmd_error err;
    memset(&err, 0, sizeof(err));
    snprintf(path, sizeof(path), "/commits/%s/status", sha);
    int rc = -2;
    if (ticket_github_call(r->ctx, "GET", path, NULL, 200, &status, &err) != 0)
        goto out;
    snprintf(path, sizeof(path), "/commits/%s/check-runs?per_page=100", sha);
    if (ticket_github_call(r->ctx, "GET", path, NULL, 200, &runs, &err) != 0)
        goto out;
    rc = 1;
    const char *state = fix_str(status, "state");
    if (json_array_size(json_object_get(status, "statuses")) > 0 && state != NULL &&
        strcmp(state, "success") != 0) {
        if (strcmp(state, "pending") == 0) {
            rc = 0;
        } else {
            snprintf(why, len, "the commit status is %.20s", state);
            rc = -1;
            goto out;
        }
    }
    size_t i;
    json_t *run_;
    json_array_foreach(json_object_get(runs, "check_runs"), i, run_)
    {
        const char *st = fix_str(run_, "status");
        const char *conclusion = fix_str(run_, "conclusion");
        if (st == NULL || strcmp(st, "completed") != 0) {
            rc = 0;
        } else if (conclusion == NULL ||
                   (strcmp(conclusion, "success") != 0 && strcmp(conclusion, "neutral") != 0 &&
                    strcmp(conclusion, "skipped") != 0)) {
            const char *name = fix_str(run_, "name");
            snprintf(why, len, "the check run %.80s ended %.20s", name ? name : "?",
                     conclusion ? conclusion : "without a conclusion");
            rc = -1;
            goto out;
        }
    }
out:
    json_decref(status);
    json_decref(runs);
    return rc;
}

/* A fix delivered as a pull request and deployed without a human, with
 * deploy.pull_request.merge: the pull request is merged through GitHub's
 * API once every check of its head (the validated commit) has passed,
 * polled every poll_ms for checks_timeout_s. A human merge meanwhile is
 * recorded and the deploy goes on; a closed pull request, a head that is
 * not the validated commit, a failed check or the timeout stop it. 1 go
 * on, 0 stopped (status set), -1 stopping. */
static int merge_pull_request(run *r, const char *fix_commit)
{
    const fix_config *cfg = r->cfg;
    json_t *delivery = json_object_get(r->fix, "delivery");
    const char *mode = fix_str(delivery, "mode");
    json_t *num = json_object_get(delivery, "pr_number");
    if (!r->automatic || !cfg->pr_merge || mode == NULL || strcmp(mode, "pull_request") != 0 ||
        !json_is_integer(num))
        return 1;
    json_int_t n = json_integer_value(num);
    char path[64], why[300] = "";
    snprintf(path, sizeof(path), "/pulls/%lld", (long long)n);
    stage(r, "pr_checks",
          json_pack("{s:I, s:s, s:i}", "pr_number", n, "commit", fix_commit, "timeout_s",
                    cfg->pr_checks_timeout_ms / 1000));
    long long deadline = port_now_ms() + cfg->pr_checks_timeout_ms;
    for (;;) {
        json_t *pr = NULL;
        cmd_error err;
        memset(&err, 0, sizeof(err));
        int checks = -2;
        if (ticket_github_call(r->ctx, "GET", path, NULL, 200, &pr, &err) == 0) {
            const char *state = fix_str(pr, "state");
            const char *head = fix_str(json_object_get(pr, "head"), "sha");
            if (json_is_true(json_object_get(pr, "merged"))) {
                const char *by = fix_str(json_object_get(pr, "merged_by"), "login");
                const char *sha = fix_str(pr, "merge_commit_sha");
                state_deploy_add(r->db, r->id, r->fp, "pr_merge", "human", sha, r->automatic,
                                 json_pack("{s:I, s:s?}", "pr_number", n, "by", by));
                note_merge(r, sha, by != NULL ? by : "a human");
                stage(r, "pr_merged",
                      json_pack("{s:I, s:b, s:s?, s:s?}", "pr_number", n, "human", 1, "by", by,
                                "commit", sha));
                json_decref(pr);
                return 1;
            }
            if (state != NULL && strcmp(state, "closed") == 0) {
                json_decref(pr);
                state_deploy_add(r->db, r->id, r->fp, "pr_merge", "closed", NULL, r->automatic,
                                 json_pack("{s:I}", "pr_number", n));
                set_fix(r, json_pack("{s:s, s:{s:s}}", "status", "skipped", "detail", "reason",
                                     "the pull request was closed without a merge"));
                stage(r, "pr_closed", json_pack("{s:I}", "pr_number", n));
                tell(r,
                     "The pull request of this fix was closed without a merge; SelfHeal "
                     "does not deploy it.",
                     NULL);
                return 0;
            }
            if (head == NULL || strcmp(head, fix_commit) != 0) {
                snprintf(why, sizeof(why),
                         "the pull request's head (%.12s) is not the validated commit %.12s",
                         head ? head : "?", fix_commit);
                json_decref(pr);
                escalate(r, "pr_escalated", why);
                return 0;
            }
            checks = pr_checks(r, fix_commit, why, sizeof(why));
        }
        json_decref(pr);
        if (checks == 1)
            break;
        if (checks == -1) {
            char text[400];
            snprintf(text, sizeof(text), "a check of the pull request failed: %s", why);
            escalate(r, "pr_escalated", text);
            return 0;
        }
        if (r->ctx->stopping)
            return -1;
        if (port_now_ms() >= deadline) {
            snprintf(why, sizeof(why), "the pull request's checks did not pass within %d s",
                     cfg->pr_checks_timeout_ms / 1000);
            escalate(r, "pr_escalated", why);
            return 0;
        }
        port_sleep_ms(cfg->pr_poll_ms, &r->ctx->stopping);
    }
    /* the merge: its intent, the call, its ledger row and result together */
    char key[EFFECT_KEY_MAX], merge_path[80], title[200];
    snprintf(merge_path, sizeof(merge_path), "%s/merge", path);
    snprintf(title, sizeof(title), "SelfHeal: merge fix %lld (%s)", (long long)r->id, r->fp);
    json_t *body = json_pack("{s:s, s:s, s:s}", "sha", fix_commit, "merge_method",
                             cfg->pr_merge_method, "commit_title", title);
    json_t *merged = NULL;
    cmd_error err;
    memset(&err, 0, sizeof(err));
    step_begin(r, "merge_pr", key, sizeof(key));
    int ok = ticket_github_call(r->ctx, "PUT", merge_path, body, 200, &merged, &err) == 0 &&
             json_is_true(json_object_get(merged, "merged"));
    json_decref(body);
    const char *sha = fix_str(merged, "sha");
    step_done_as(r, key, "pr_merge", ok ? "succeeded" : "failed",
                 json_pack("{s:I, s:s?, s:s}", "pr_number", n, "commit", sha, "error", err.message),
                 json_pack("{s:b, s:s?}", "merged", ok, "sha", sha));
    if (!ok) {
        json_decref(merged);
        snprintf(why, sizeof(why), "GitHub did not merge the pull request: %.200s",
                 err.message[0] ? err.message : "no merge in its answer");
        escalate(r, "pr_escalated", why);
        return 0;
    }
    note_merge(r, sha, "self-heal");
    stage(r, "pr_merged",
          json_pack("{s:I, s:b, s:s?, s:s}", "pr_number", n, "human", 0, "commit", sha, "method",
                    cfg->pr_merge_method));
    json_decref(merged);
    return 1;
}

/* The deploy branch's tip is not the commit the fix was validated on: the
 * fix is replayed on the tip (a commit with the fix and the tip as
 * parents, so its branch only moves forward) and validated again, or,
 * when it does not apply, escalated. Returns the outcome. */
static const char *replay(run *r, const char *base, const char *fix_commit, const char *tip)
{
    char msg[512] = "";
    char tree[WT_OID_HEX] = "", commit[WT_OID_HEX] = "";
    int rb =
        base != NULL ? tree_rebase(tree, r->repo, base, fix_commit, tip, msg, sizeof(msg)) : -1;
    char branch[300];
    snprintf(branch, sizeof(branch), "self-heal/%s", r->fp);
    char message[200];
    snprintf(message, sizeof(message), "SelfHeal: fix %lld replayed on %.12s", (long long)r->id,
             tip);
    /* the tip first: a revert of the replayed commit (mainline 1) takes
     * back this fix alone */
    const char *parents[2] = {tip, fix_commit};
    if (rb == 0 &&
        tree_commit(commit, r->repo, branch, tree, parents, 2, message, msg, sizeof(msg)) != 0)
        rb = -1;
    if (rb != 0) {
        const char *why = rb == 1 ? "the deploy branch moved since the fix was validated, and the "
                                    "fix does not apply to its tip"
                                  : "the deploy branch moved since the fix was validated, and "
                                    "the fix could not be replayed on it";
        json_t *fields = json_pack("{s:s, s:{s:s, s:s, s:s}}", "status", "escalated", "detail",
                                   "reason", why, "tip", tip, "git", msg);
        state_fix_set(r->db, r->id, "deploying", fields);
        json_decref(fields);
        stage(r, "stale", json_pack("{s:s, s:s?, s:s}", "reason", why, "base", base, "tip", tip));
        char text[400];
        snprintf(text, sizeof(text), "SelfHeal did not deploy fix %lld: %s. A human must look.",
                 (long long)r->id, why);
        tell(r, text, NULL);
        return "escalated";
    }
    /* the move back to fixing and the attempt's new keys in one transaction */
    json_t *patch = json_pack("{s:b, s:s}", "revalidate", 1, "rebased_from", base);
    json_t *fields = json_pack("{s:s, s:s, s:s, s:n, s:n, s:n, s:n, s:n}", "status", "fixing",
                               "base_commit", tip, "fix_commit", commit, "validation", "delivery",
                               "decision", "confidence", "decided_by");
    int cas = state_txn_begin(r->db);
    if (cas == 0) {
        cas = state_fix_set(r->db, r->id, "deploying", fields);
        if (cas == 0 && state_fix_patch(r->db, r->id, "attempt", patch) != 0)
            cas = -1;
        if (cas == 0)
            cas = state_txn_commit(r->db);
        else
            state_txn_rollback(r->db);
    }
    json_decref(patch);
    json_decref(fields);
    stage(r, "rebased", json_pack("{s:s, s:s, s:s}", "from", base, "onto", tip, "commit", commit));
    if (cas == 0)
        fix_revalidate(r->ctx, r->id);
    return "rebased";
}

json_t *deploy_run(port_ctx *ctx, const fix_config *cfg, int64_t fix_id, int automatic,
                   cmd_error *err)
{
    run r;
    memset(&r, 0, sizeof(r));
    r.ctx = ctx;
    r.cfg = cfg;
    r.db = port_state(ctx);
    r.id = fix_id;
    r.automatic = automatic;
    if (r.db == NULL) {
        cmd_error_set(err, "no_state", "deploy needs a state_dir");
        return NULL;
    }
    json_t *moved = json_pack("{s:s}", "status", "deploying");
    int cas = state_fix_set(r.db, fix_id, "approved", moved);
    json_decref(moved);
    if (cas != 0) {
        cmd_error_set(err, "conflict", "fix %lld is not approved", (long long)fix_id);
        return NULL;
    }
    r.fix = state_fix_get(r.db, fix_id);
    r.fp = fix_str(r.fix, "fingerprint");
    const char *fix_commit = fix_str(r.fix, "fix_commit");
    snprintf(r.branch, sizeof(r.branch), "%s",
             cfg->deploy_branch[0] != '\0' ? cfg->deploy_branch : "main");
    snprintf(r.log_dir, sizeof(r.log_dir), "%s/fixes/%lld", cfg->state_dir, (long long)fix_id);

    /* a job, so that a port killed mid-deploy escalates it on restart */
    char key[64];
    snprintf(key, sizeof(key), "deploy:%lld", (long long)fix_id);
    int64_t job_id = 0;
    int existed = 0;
    char jstatus[32];
    json_t *input = json_pack("{s:I}", "fix_id", (json_int_t)fix_id);
    state_job_begin(r.db, "deploy", key, input, &job_id, &existed, jstatus, sizeof(jstatus));
    json_decref(input);
    state_job_transition(r.db, job_id, "queued", "running", NULL, NULL, NULL);
    r.job_id = job_id;

    char msg[512] = "";
    char desc[160] = "";
    const char *outcome = "failed";
    if (fix_commit == NULL || cfg->deploy_argv == NULL ||
        wt_repo_open(&r.repo, cfg->repo, msg, sizeof(msg)) != 0) {
        set_fix(&r, json_pack("{s:s, s:{s:s}}", "status", "failed", "detail", "reason",
                              fix_commit == NULL ? "no fix commit" : "no deploy target"));
        stage(&r, "failed", json_pack("{s:s}", "reason", msg[0] ? msg : "no deploy target"));
        goto done;
    }
    /* only onto the commit the fix was validated on */
    char tip[WT_OID_HEX];
    const char *base = fix_str(r.fix, "base_commit");
    if (wt_resolve(tip, r.repo, r.branch, msg, sizeof(msg)) != 0) {
        set_fix(&r, json_pack("{s:s, s:{s:s, s:s}}", "status", "failed", "detail", "reason",
                              "no deploy branch", "git", msg));
        stage(&r, "failed", json_pack("{s:s, s:s}", "reason", "no deploy branch", "git", msg));
        goto done;
    }
    if (base == NULL || strcmp(base, tip) != 0) {
        outcome = replay(&r, base, fix_commit, tip);
        goto done;
    }
    int merged = merge_pull_request(&r, fix_commit);
    if (merged <= 0) {
        outcome = merged < 0 ? "stopping" : "not_merged";
        goto done; /* stopping: escalated at restart, as any deploy cut short */
    }
    char message[256];
    snprintf(message, sizeof(message), "SelfHeal: deploy fix %lld (%s)", (long long)fix_id, r.fp);
    if (wt_merge_into(r.deploy_commit, r.repo, r.branch, fix_commit, message, msg, sizeof(msg)) !=
        0) {
        set_fix(&r, json_pack("{s:s, s:{s:s, s:s}}", "status", "failed", "detail", "reason",
                              "merge failed", "git", msg));
        stage(&r, "failed", json_pack("{s:s, s:s}", "reason", "merge failed", "git", msg));
        tell(&r, "SelfHeal could not merge the fix into the deploy branch; a human must look.",
             NULL);
        goto done;
    }
    set_fix(&r, json_pack("{s:s}", "deploy_commit", r.deploy_commit));
    state_deploy_add(r.db, fix_id, r.fp, "deploy", "started", r.deploy_commit, automatic, NULL);
    stage(&r, "merged",
          json_pack("{s:s, s:s, s:b}", "branch", r.branch, "commit", r.deploy_commit, "automatic",
                    automatic));
    if (cfg->canary_argv != NULL) {
        int c = canary(&r);
        if (c < 0)
            goto done; /* stopping: escalated at restart, as any deploy cut short */
        if (c == 0) {
            outcome = "rolled_back";
            goto done;
        }
    }
    int deployed =
        run_deploy_command(&r, cfg->deploy_argv, r.deploy_commit, "deploy.log", desc, sizeof(desc));
    stage(&r, "deployed", json_pack("{s:b, s:s}", "ok", deployed, "result", desc));
    if (!deployed) {
        state_deploy_add(r.db, fix_id, r.fp, "deploy", "failed", r.deploy_commit, automatic,
                         json_pack("{s:s}", "deploy", desc));
        rollback(&r, "the deploy command failed");
        outcome = "rolled_back";
        goto done;
    }
    if (!wait_healthy(&r)) {
        state_deploy_add(r.db, fix_id, r.fp, "deploy", "failed", r.deploy_commit, automatic,
                         json_pack("{s:s}", "health", "failing"));
        if (ctx->stopping)
            goto done;
        rollback(&r, "the health check failed after the deploy");
        outcome = "rolled_back";
        goto done;
    }
    stage(&r, "healthy", NULL);
    int v = verify(&r);
    if (v < 0)
        goto done; /* stopping: the job stays running and is escalated at restart */
    if (v == 0) {
        state_deploy_add(r.db, fix_id, r.fp, "deploy", "failed", r.deploy_commit, automatic,
                         json_pack("{s:s}", "verification", "failed"));
        outcome = "rolled_back";
        goto done;
    }
    state_deploy_add(r.db, fix_id, r.fp, "deploy", "succeeded", r.deploy_commit, automatic, NULL);
    service_breaker_record(ctx, r.db, 0, cfg->breaker_threshold, NULL);
    set_fix(&r, json_pack("{s:s}", "status", "deployed"));
    stage(&r, "verified",
          json_pack("{s:s, s:i}", "commit", r.deploy_commit, "window_s", cfg->verify_window_s));
    char text[300];
    snprintf(text, sizeof(text),
             "SelfHeal deployed fix %lld (commit %.12s); the error did not recur during the %d s "
             "verification window.",
             (long long)fix_id, r.deploy_commit, cfg->verify_window_s);
    tell(&r, text, "closed");
    port_notify(ctx, "verify_end",
                json_pack("{s:s, s:s}", "fingerprint", r.fp, "result", "verified"));
    trust_on_verified(ctx, fix_id, automatic);
    outcome = "deployed";
done:
    if (!ctx->stopping) {
        json_t *result = json_pack("{s:s}", "outcome", outcome);
        state_job_transition(r.db, job_id, "running", "done", NULL, result, NULL);
        json_decref(result);
    }
    wt_repo_free(r.repo);
    json_decref(r.fix);
    return state_fix_get(r.db, fix_id);
}
