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

#include "exec.h"
#include "http.h"
#include "notify.h"
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

/* The deploy command with {repo}, {commit}, {branch}; 1 ok, 0 failed. */
static int run_deploy_command(run *r, const char *commit, const char *log_leaf, char *desc,
                              size_t desclen)
{
    char err[256] = "";
    char log_path[FIX_PATH_MAX + 160];
    snprintf(log_path, sizeof(log_path), "%s/%s", r->log_dir, log_leaf);
    const char *keys[] = {"repo", "commit", "branch", "fingerprint"};
    const char *vals[] = {r->cfg->repo, commit, r->branch, r->fp};
    char **argv = exec_expand(r->cfg->deploy_argv, keys, vals, 4, err, sizeof(err));
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

/* Revert, redeploy, reopen, notify, count. */
static void rollback(run *r, const char *reason)
{
    char msg[512] = "";
    char revert[WT_OID_HEX] = "";
    char desc[160] = "";
    stage(r, "rollback", json_pack("{s:s}", "reason", reason));
    char message[256];
    snprintf(message, sizeof(message), "SelfHeal: revert fix %lld (%s)\n\n%s", (long long)r->id,
             r->fp, reason);
    int reverted =
        wt_revert_on(revert, r->repo, r->branch, r->deploy_commit, message, msg, sizeof(msg)) == 0;
    int redeployed = 0, healthy = 0;
    if (reverted) {
        state_deploy_add(r->db, r->id, r->fp, "rollback", "started", revert, r->automatic, NULL);
        redeployed = run_deploy_command(r, revert, "rollback.log", desc, sizeof(desc));
        healthy = redeployed && wait_healthy(r);
        state_deploy_add(r->db, r->id, r->fp, "rollback", healthy ? "succeeded" : "failed", revert,
                         r->automatic, json_pack("{s:s}", "deploy", desc));
    }
    int open = 0;
    state_breaker_record(r->db, FIX_BREAKER, 1, r->cfg->breaker_threshold, &open);
    set_fix(r, json_pack("{s:s, s:s?, s:{s:s, s:b, s:b, s:s}}", "status",
                         reverted ? "rolled_back" : "failed", "revert_commit",
                         revert[0] ? revert : NULL, "detail", "reason", reason, "redeployed",
                         redeployed, "healthy", healthy, "git", reverted ? "" : msg));
    stage(r, reverted ? "rolled_back" : "rollback_failed",
          json_pack("{s:s, s:s, s:b, s:s, s:s}", "reason", reason, "revert_commit", revert,
                    "healthy", healthy, "breaker", open ? "open" : "closed", "detail",
                    reverted ? desc : msg));
    char text[700];
    snprintf(text, sizeof(text),
             "SelfHeal rolled back fix %lld: %s. Revert commit %.12s, redeploy %s, health %s.%s",
             (long long)r->id, reason, revert[0] ? revert : "(none)", redeployed ? "ok" : "failed",
             healthy ? "ok" : "failing",
             open ? " The deploy circuit breaker is now open: automatic deploys stop until a "
                    "human resets it."
                  : "");
    tell(r, text, "open");
    trust_on_rollback(r->ctx, r->id, open);
    port_notify(r->ctx, "verify_end",
                json_pack("{s:s, s:s}", "fingerprint", r->fp, "result", "rolled_back"));
}

/* Watches the verification window; 1 passed, 0 rolled back, -1 stopping. */
static int verify(run *r)
{
    int64_t since = state_now();
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
        long long seen = state_recurrence_count(r->db, r->fp, since);
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
    long long seen = state_recurrence_count(r->db, r->fp, since);
    if (seen > 0) {
        rollback(r, "the error recurred during verification");
        return 0;
    }
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
    int deployed = run_deploy_command(&r, r.deploy_commit, "deploy.log", desc, sizeof(desc));
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
    state_breaker_record(r.db, FIX_BREAKER, 0, cfg->breaker_threshold, NULL);
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
