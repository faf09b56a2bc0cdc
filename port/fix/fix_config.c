/*
 * The fix loop's configuration and the helpers its parts share (fix.c,
 * deliver.c, deploy.c, the scheduler and the commands): stages told and
 * audited, notes and notifications about a fix, the switches, files.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "fix_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "effect.h"
#include "exec.h"
#include "notify.h"
#include "state.h"
#include "ticket.h"
#include "trust.h"
#include "validate.h"

/* ------------------------------------------------------------ config */

static int ms_from_s(port_ctx *ctx, const char *path, long long dflt)
{
    long long s = port_config_int(ctx, path, dflt);
    if (s < 1 || s > 86400)
        s = dflt;
    return (int)(s * 1000);
}

/* 1 when a is b or lies above it (paths resolved when they exist). */
static int covers(const char *a, const char *b)
{
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    const char *x = ra != NULL ? ra : a, *y = rb != NULL ? rb : b;
    size_t n = strlen(x);
    while (n > 1 && x[n - 1] == '/')
        n--;
    int hit = strncmp(x, y, n) == 0 && (y[n] == '\0' || y[n] == '/' || (n == 1 && x[0] == '/'));
    free(ra);
    free(rb);
    return hit;
}

/* The sandbox's read-only paths must not show what it exists to hide: the
 * state directory, the repository (its .git, the deploy checkout). */
static int read_only_ok(const fix_config *cfg, cmd_error *err)
{
    size_t i;
    json_t *p;
    json_array_foreach(cfg->sandbox.read_only, i, p)
    {
        const char *path = json_string_value(p);
        const char *hidden[2] = {cfg->state_dir, cfg->repo};
        for (int k = 0; k < 2; k++) {
            if (path != NULL && hidden[k][0] != '\0' &&
                (covers(path, hidden[k]) || covers(hidden[k], path))) {
                cmd_error_set(err, "bad_config",
                              "fix.sandbox.read_only: %s would show the agent the %s", path,
                              k == 0 ? "state directory" : "repository");
                return -1;
            }
        }
    }
    return 0;
}

int fix_config_load(fix_config *cfg, port_ctx *ctx, cmd_error *err)
{
    memset(cfg, 0, sizeof(*cfg));
    char consent[32];
    if (cmd_config_string(ctx, "state_dir", "", cfg->state_dir, sizeof(cfg->state_dir), err) != 0 ||
        cmd_config_string(ctx, "fix.repo", "", cfg->repo, sizeof(cfg->repo), err) != 0 ||
        cmd_config_string(ctx, "fix.base", "", cfg->base, sizeof(cfg->base), err) != 0 ||
        cmd_config_string(ctx, "deploy.branch", "", cfg->deploy_branch, sizeof(cfg->deploy_branch),
                          err) != 0 ||
        cmd_config_string(ctx, "fix.descriptor", "", cfg->descriptor, sizeof(cfg->descriptor),
                          err) != 0 ||
        cmd_config_string(ctx, "fix.remote.url", "", cfg->remote_url, sizeof(cfg->remote_url),
                          err) != 0 ||
        cmd_config_string(ctx, "fix.remote.token_env", "GITHUB_TOKEN", cfg->remote_token_env,
                          sizeof(cfg->remote_token_env), err) != 0 ||
        cmd_config_string(ctx, "fix.remote.ca_file", "", cfg->remote_ca_file,
                          sizeof(cfg->remote_ca_file), err) != 0 ||
        cmd_config_string(ctx, "deploy.health.url", "", cfg->health_url, sizeof(cfg->health_url),
                          err) != 0 ||
        cmd_config_string(ctx, "gate.consent", "diagnose", consent, sizeof(consent), err) != 0 ||
        cmd_config_string(ctx, "deploy.pull_request.merge_method", "merge", cfg->pr_merge_method,
                          sizeof(cfg->pr_merge_method), err) != 0 ||
        cmd_config_argv(ctx, "fix.compile.argv", EXEC_MAX_ARGS, &cfg->compile_argv, err) != 0 ||
        cmd_config_argv(ctx, "fix.test.argv", EXEC_MAX_ARGS, &cfg->test_argv, err) != 0 ||
        cmd_config_argv(ctx, "deploy.argv", EXEC_MAX_ARGS, &cfg->deploy_argv, err) != 0 ||
        cmd_config_argv(ctx, "deploy.health.argv", EXEC_MAX_ARGS, &cfg->health_argv, err) != 0 ||
        cmd_config_argv(ctx, "deploy.canary.argv", EXEC_MAX_ARGS, &cfg->canary_argv, err) != 0 ||
        cmd_config_strings(ctx, "fix.env_allow", &cfg->env_allow, err) != 0 ||
        cmd_config_strings(ctx, "fix.protected_paths", &cfg->protected_paths, err) != 0 ||
        cmd_config_strings(ctx, "gate.auto_deploy_severity", &cfg->auto_severities, err) != 0 ||
        cmd_config_strings(ctx, "fix.test.paths", &cfg->test_paths, err) != 0 ||
        sandbox_config_load(&cfg->sandbox, ctx, "fix.sandbox", err) != 0 ||
        agent_config_load(&cfg->agent, ctx, cfg->sandbox.mode != SANDBOX_NONE, err) != 0) {
        fix_config_free(cfg);
        return -1;
    }
    if (cfg->remote_url[0] != '\0' && strncmp(cfg->remote_url, "https://", 8) != 0 &&
        cfg->remote_url[0] != '/' && strncmp(cfg->remote_url, "file://", 7) != 0) {
        cmd_error_set(err, "bad_config", "fix.remote.url must be an https URL or a local path");
        fix_config_free(cfg);
        return -1;
    }
    if (strcmp(cfg->pr_merge_method, "merge") != 0 && strcmp(cfg->pr_merge_method, "squash") != 0 &&
        strcmp(cfg->pr_merge_method, "rebase") != 0) {
        cmd_error_set(err, "bad_config",
                      "deploy.pull_request.merge_method must be merge, squash or rebase");
        fix_config_free(cfg);
        return -1;
    }
    if (read_only_ok(cfg, err) != 0) {
        fix_config_free(cfg);
        return -1;
    }
    if (cfg->remote_ca_file[0] != '\0' && access(cfg->remote_ca_file, R_OK) != 0) {
        cmd_error_set(err, "bad_config", "fix.remote.ca_file is not a readable file");
        fix_config_free(cfg);
        return -1;
    }
    cfg->consent = trust_consent(ctx, policy_consent_parse(consent));
    cfg->compile_timeout_ms = ms_from_s(ctx, "fix.compile.timeout_s", 300);
    cfg->test_timeout_ms = ms_from_s(ctx, "fix.test.timeout_s", 600);
    cfg->deploy_timeout_ms = ms_from_s(ctx, "deploy.timeout_s", 600);
    cfg->health_timeout_ms = ms_from_s(ctx, "deploy.health.timeout_s", 60);
    long long interval = port_config_int(ctx, "deploy.health.interval_ms", 2000);
    cfg->health_interval_ms = interval >= 100 && interval <= 600000 ? (int)interval : 2000;
    long long window = port_config_int(ctx, "deploy.verify_window_s", 300);
    cfg->verify_window_s = window >= 0 && window <= 7 * 86400 ? (int)window : 300;
    long long cwindow = port_config_int(ctx, "deploy.canary.window_s", 60);
    cfg->canary_window_s = cwindow >= 1 && cwindow <= 7 * 86400 ? (int)cwindow : 60;
    cfg->canary_weight = port_config_real(ctx, "deploy.canary.weight", 1.0);
    if (!(cfg->canary_weight > 0.0 && cfg->canary_weight <= 1000.0))
        cfg->canary_weight = 1.0;
    cfg->canary_max_ratio = port_config_real(ctx, "deploy.canary.max_error_ratio", 2.0);
    if (!(cfg->canary_max_ratio >= 0.0 && cfg->canary_max_ratio <= 1000.0))
        cfg->canary_max_ratio = 2.0;
    cfg->canary_min_errors = port_config_int(ctx, "deploy.canary.min_errors", 5);
    if (cfg->canary_min_errors < 1)
        cfg->canary_min_errors = 5;
    json_t *merge = port_config_get(ctx, "deploy.pull_request.merge");
    cfg->pr_merge = json_is_true(merge);
    json_decref(merge);
    cfg->pr_checks_timeout_ms = ms_from_s(ctx, "deploy.pull_request.checks_timeout_s", 900);
    long long poll = port_config_int(ctx, "deploy.pull_request.poll_ms", 10000);
    cfg->pr_poll_ms = poll >= 50 && poll <= 600000 ? (int)poll : 10000;
    long long out = port_config_int(ctx, "fix.max_output_bytes", 8 * 1024 * 1024);
    cfg->max_output = out >= 4096 && out <= (1LL << 30) ? (size_t)out : 8 * 1024 * 1024;
    long long lines = port_config_int(ctx, "fix.max_changed_lines", 40);
    cfg->max_lines = lines >= 1 && lines <= 100000 ? (size_t)lines : 40;
    long long bytes = port_config_int(ctx, "fix.max_changed_bytes", VALIDATE_DEFAULT_MAX_BYTES);
    cfg->max_bytes =
        bytes >= 1 && bytes <= (1LL << 26) ? (size_t)bytes : VALIDATE_DEFAULT_MAX_BYTES;
    long long conc = port_config_int(ctx, "fix.max_concurrent", 2);
    cfg->max_concurrent = conc >= 1 && conc <= 16 ? (int)conc : 2;
    long long retries = port_config_int(ctx, "fix.retries", 1);
    cfg->retries = retries >= 0 && retries <= 3 ? (int)retries : 1;
    cfg->threshold = port_config_real(ctx, "gate.confidence_threshold", 0.8);
    if (!(cfg->threshold >= 0.0 && cfg->threshold <= 1.0))
        cfg->threshold = 0.8;
    cfg->max_per_hour = port_config_int(ctx, "gate.max_auto_deploys_per_hour", 5);
    if (cfg->max_per_hour < 0)
        cfg->max_per_hour = 0;
    cfg->breaker_threshold = port_config_int(ctx, "gate.breaker_threshold", 3);
    if (cfg->breaker_threshold < 1)
        cfg->breaker_threshold = 3;
    cfg->approval_ttl_s = port_config_int(ctx, "gate.approval_ttl_s", 86400);
    if (cfg->approval_ttl_s < 1 || cfg->approval_ttl_s > 30 * 86400)
        cfg->approval_ttl_s = 86400;
    cfg->enabled = cfg->repo[0] != '\0' && cfg->state_dir[0] != '\0' && cfg->agent.argv != NULL &&
                   cfg->consent != POLICY_OBSERVE;
    char why[300] = "";
    if (cfg->enabled && cfg->sandbox.mode != SANDBOX_NONE &&
        sandbox_probe(&cfg->sandbox, why, sizeof(why)) != 0)
        snprintf(cfg->sandbox_error, sizeof(cfg->sandbox_error),
                 "the sandbox cannot be set up (%s): no agent runs; fix.sandbox.mode \"none\" "
                 "runs agents unconfined, and then every deploy waits for a human",
                 why);
    return 0;
}

void fix_config_free(fix_config *cfg)
{
    agent_config_free(&cfg->agent);
    json_decref(cfg->compile_argv);
    json_decref(cfg->test_argv);
    json_decref(cfg->env_allow);
    json_decref(cfg->protected_paths);
    json_decref(cfg->auto_severities);
    json_decref(cfg->deploy_argv);
    json_decref(cfg->health_argv);
    json_decref(cfg->canary_argv);
    json_decref(cfg->test_paths);
    sandbox_config_free(&cfg->sandbox);
    memset(cfg, 0, sizeof(*cfg));
}

/* ------------------------------------------------------------ helpers */

void fix_audit(port_ctx *ctx, const char *action, json_t *fields)
{
    audit_log *log = port_audit(ctx);
    if (log != NULL && fields != NULL)
        audit_append(log, action, fields);
}

/* The fields of a stage record (steals fields, may be NULL). */
json_t *fix_stage_fields(int64_t fix_id, const char *fp, const char *stage, json_t *fields)
{
    if (fields == NULL)
        fields = json_object();
    json_object_set_new(fields, "fix_id", json_integer((json_int_t)fix_id));
    json_object_set_new(fields, "fingerprint", json_string(fp));
    json_object_set_new(fields, "stage", json_string(stage));
    return fields;
}

/* The audit record of a stage: its fields, where the gate's "action" (a
 * name the audit log keeps for its own) is "decision". */
json_t *fix_stage_record(json_t *fields)
{
    json_t *rec = json_deep_copy(fields);
    json_t *action = json_object_get(rec, "action");
    if (action != NULL) {
        json_object_set(rec, "decision", action);
        json_object_del(rec, "action");
    }
    return rec;
}

void fix_stage(port_ctx *ctx, const char *prefix, int64_t fix_id, const char *fp, const char *stage,
               json_t *fields)
{
    fields = fix_stage_fields(fix_id, fp, stage, fields);
    char action[64];
    snprintf(action, sizeof(action), "%s_%s", prefix, stage);
    json_t *rec = fix_stage_record(fields);
    fix_audit(ctx, action, rec);
    json_decref(rec);
    port_notify(ctx, "fix", fields);
}

/* A step of the fix loop proper ("fix_*" in the audit log). */
void fix_step(port_ctx *ctx, int64_t fix_id, const char *fp, const char *name, json_t *fields)
{
    fix_stage(ctx, "fix", fix_id, fp, name, fields);
}

int fix_kill_switch_on(port_ctx *ctx)
{
    json_t *cfg = port_config_get(ctx, "gate.kill_switch");
    int on = json_is_true(cfg);
    json_decref(cfg);
    state_db *db = port_state(ctx);
    char buf[16];
    if (!on && db != NULL && state_kv_get(db, KV_KILL_SWITCH, buf, sizeof(buf)) == 0)
        on = strcmp(buf, "on") == 0;
    return on;
}

int fix_paused(port_ctx *ctx)
{
    state_db *db = port_state(ctx);
    char buf[16];
    return db != NULL && state_kv_get(db, KV_PAUSED, buf, sizeof(buf)) == 0 &&
           strcmp(buf, "on") == 0;
}

int fix_valid_fp(const char *fp)
{
    return fp != NULL && sh_token_ok(fp, strnlen(fp, FIX_FP_MAX + 1), FIX_FP_MAX, "-_");
}

/* Writes a file with mode (created or truncated, never through a
 * symlink, the mode set whatever the umask); 0 or -1. */
int fix_write_mode(const char *path, const char *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int rc = off == len && fchmod(fd, mode) == 0 ? 0 : -1;
    return close(fd) == 0 ? rc : -1;
}

int fix_write_file(const char *path, const char *data, size_t len)
{
    return fix_write_mode(path, data, len, 0600);
}

json_t *fix_or_null(json_t *v)
{
    return v != NULL ? v : json_null();
}

const char *fix_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Sets fields on the fix (steals them). */
int fix_set(state_db *db, int64_t id, const char *expect, json_t *fields)
{
    int rc = fields != NULL ? state_fix_set(db, id, expect, fields) : -1;
    json_decref(fields);
    return rc;
}

/* fix_notify, once under key (NULL: no key). */
void fix_notify_once(port_ctx *ctx, json_t *fix, const char *key, const char *kind,
                     const char *text, int with_links)
{
    char action_id[40] = "";
    json_int_t id = json_integer_value(json_object_get(fix, "id"));
    if (with_links)
        snprintf(action_id, sizeof(action_id), "fix-%lld", (long long)id);
    json_t *group = json_object_get(json_object_get(fix, "input"), "group");
    json_t *msg =
        json_pack("{s:s, s:s, s:s?, s:s?, s:s, s:s?}", "kind", kind, "fingerprint",
                  fix_str(fix, "fingerprint"), "severity", fix_str(fix, "severity"), "service",
                  fix_str(group, "service"), "error", text, "path", fix_str(group, "path"));
    if (msg == NULL)
        return;
    json_t *tid = json_object_get(fix, "ticket_id");
    if (json_is_integer(tid)) {
        char t[32];
        snprintf(t, sizeof(t), "%lld", (long long)json_integer_value(tid));
        json_object_set_new(msg, "ticket_id", json_string(t));
    }
    json_t *pr = json_object_get(json_object_get(fix, "delivery"), "pr_url");
    if (json_is_string(pr))
        json_object_set(msg, "url", pr);
    if (action_id[0] != '\0')
        json_object_set_new(msg, "action_id", json_string(action_id));
    /* a deploy's message shows the change */
    if (strcmp(kind, "deploy") == 0)
        notify_add_patch(ctx, msg, fix_str(json_object_get(fix, "delivery"), "patch"),
                         json_string_value(pr), (int64_t)id);
    json_decref(notify_send_once(ctx, msg, key, 0));
    json_decref(msg);
}

void fix_notify(port_ctx *ctx, json_t *fix, const char *kind, const char *text, int with_links)
{
    fix_notify_once(ctx, fix, NULL, kind, text, with_links);
}

/* fix_ticket_note, once under key (NULL: no key). */
void fix_ticket_note_once(port_ctx *ctx, json_t *fix, const char *key, const char *status,
                          const char *text)
{
    json_t *tid = json_object_get(fix, "ticket_id");
    if (!json_is_integer(tid))
        return;
    cmd_error err = {NULL, ""};
    ticket_note_once(ctx, key, (int64_t)json_integer_value(tid), status, text, &err);
}

void fix_ticket_note(port_ctx *ctx, json_t *fix, const char *status, const char *text)
{
    fix_ticket_note_once(ctx, fix, NULL, status, text);
}

json_t *fix_config_status(port_ctx *ctx, cmd_error *err)
{
    fix_config cfg;
    if (fix_config_load(&cfg, ctx, err) != 0)
        return NULL;
    const char *sandbox = !cfg.enabled                       ? "off"
                          : cfg.sandbox.mode == SANDBOX_NONE ? "none"
                          : cfg.sandbox_error[0] != '\0'     ? "unavailable"
                                                             : "bwrap";
    json_t *status = json_pack("{s:b, s:s}", "enabled", cfg.enabled, "sandbox", sandbox);
    if (cfg.sandbox_error[0] != '\0') {
        json_object_set_new(status, "error", json_string(cfg.sandbox_error));
        json_t *fields = json_pack("{s:s}", "reason", cfg.sandbox_error);
        fix_audit(ctx, "fix_sandbox_unavailable", fields);
        json_decref(fields);
    }
    fix_config_free(&cfg);
    return status;
}
