/*
 * The fix loop's configuration and the helpers that its parts share: the
 * attempt (fix.c), delivery (deliver.c), deploys (deploy.c), the
 * scheduler (fix_schedule.c) and the commands (fix_cmd.c).
 */
#ifndef SELF_HEAL_PORT_FIX_CONFIG_H
#define SELF_HEAL_PORT_FIX_CONFIG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent.h"
#include "cmd.h"
#include "policy.h"
#include "sandbox.h"
#include "state.h"

#define FIX_PATH_MAX 4096
#define FIX_FP_MAX 128
#define FIX_BREAKER "deploy" /* the breaker that counts failed deploys and rollbacks */

/* The fix loop's configuration, read once per fix or deploy. */
typedef struct fix_config {
    int enabled; /* fix.repo set and consent is not observe */
    char state_dir[FIX_PATH_MAX];
    char repo[FIX_PATH_MAX];    /* fix.repo: the application's git repository */
    char base[256];             /* fix.base: the deployed commit (else the deploy branch) */
    char deploy_branch[256];    /* deploy.branch (default: the repo's current branch) */
    agent_config agent;         /* fix.agent.* (agent.h) */
    json_t *compile_argv;       /* fix.compile.argv */
    int compile_timeout_ms;     /* fix.compile.timeout_s (300) */
    json_t *test_argv;          /* fix.test.argv */
    int test_timeout_ms;        /* fix.test.timeout_s (600) */
    json_t *env_allow;          /* fix.env_allow: for compile, test, deploy, health */
    size_t max_output;          /* fix.max_output_bytes (8 MiB) */
    size_t max_lines;           /* fix.max_changed_lines (40) */
    size_t max_bytes;           /* fix.max_changed_bytes (8192) */
    json_t *test_paths;         /* fix.test.paths: where the test runner looks (NULL: defaults) */
    sandbox_config sandbox;     /* fix.sandbox (docs/sandbox.md) */
    char sandbox_error[512];    /* why no agent may run ("" when the sandbox works or is off) */
    json_t *protected_paths;    /* fix.protected_paths (NULL: defaults) */
    char descriptor[4096];      /* fix.descriptor */
    char remote_url[1024];      /* fix.remote.url (https): push + PR; "" = dry run */
    char remote_token_env[128]; /* fix.remote.token_env (GITHUB_TOKEN) */
    char remote_ca_file[1024];  /* fix.remote.ca_file: CAs of a self-hosted server, or "" */
    int max_concurrent;         /* fix.max_concurrent (2) */
    int retries;             /* fix.retries (1): agent runs after a mendable validation failure */
    policy_consent consent;  /* gate.consent (diagnose) */
    json_t *auto_severities; /* gate.auto_deploy_severity */
    double threshold;        /* gate.confidence_threshold (0.8) */
    long long max_per_hour;  /* gate.max_auto_deploys_per_hour (5) */
    long long breaker_threshold; /* gate.breaker_threshold (3) */
    int64_t approval_ttl_s;      /* gate.approval_ttl_s (86400) */
    json_t *deploy_argv;         /* deploy.argv */
    int deploy_timeout_ms;       /* deploy.timeout_s (600) */
    char health_url[1024];       /* deploy.health.url */
    json_t *health_argv;         /* deploy.health.argv */
    int health_timeout_ms;       /* deploy.health.timeout_s (60): until healthy after a deploy */
    int health_interval_ms;      /* deploy.health.interval_ms (2000) */
    int verify_window_s;         /* deploy.verify_window_s (300) */
    json_t *canary_argv;         /* deploy.canary.argv: NULL, no canary stage */
    int canary_window_s;         /* deploy.canary.window_s (60) */
    double canary_weight;        /* deploy.canary.weight (1.0): canary traffic / stable traffic */
    double canary_max_ratio;     /* deploy.canary.max_error_ratio (2.0) */
    long long canary_min_errors; /* deploy.canary.min_errors (5) */
    int pr_merge;                /* deploy.pull_request.merge (false): merge through GitHub */
    int pr_checks_timeout_ms;    /* deploy.pull_request.checks_timeout_s (900) */
    int pr_poll_ms;              /* deploy.pull_request.poll_ms (10000) */
    char pr_merge_method[16];    /* deploy.pull_request.merge_method (merge) */
} fix_config;

/* Reads the configuration; 0, or -1 with err (bad_config) when a value is
 * present but unusable. Free with fix_config_free. */
int fix_config_load(fix_config *cfg, port_ctx *ctx, cmd_error *err);
void fix_config_free(fix_config *cfg);

/* What configure answers about the fix loop: {"enabled", "sandbox":
 * "bwrap" | "none" | "unavailable" | "off", "error"? (why no agent can
 * run)}; NULL with err (bad_config) when its configuration is unusable. */
json_t *fix_config_status(port_ctx *ctx, cmd_error *err);

#define KV_KILL_SWITCH "gate.kill_switch"
#define KV_PAUSED "automation.paused"

/* Appends an audit record when an audit log is open (fields not stolen). */
void fix_audit(port_ctx *ctx, const char *action, json_t *fields);

/* A step of a fix: audited as "<prefix>_<stage>" and told to the BEAM as
 * {"event": "fix", "stage", "fix_id", "fingerprint", ...fields}. Steals
 * fields (may be NULL). */
void fix_stage(port_ctx *ctx, const char *prefix, int64_t fix_id, const char *fp, const char *stage,
               json_t *fields);

/* A note on the fix's ticket (status "open" / "closed" / NULL: unchanged),
 * when it has one. */
void fix_ticket_note(port_ctx *ctx, json_t *fix, const char *status, const char *text);

/* A notification of kind ("fix", "deploy") about the fix with text; with
 * links, Approve / Skip for action id fix-<id>. */
void fix_notify(port_ctx *ctx, json_t *fix, const char *kind, const char *text, int with_links);

/* The string at key of obj, or NULL. */
const char *fix_str(json_t *obj, const char *key);

/* Writes a file (0600, created or truncated, never through a symlink);
 * 0 or -1. */
int fix_write_file(const char *path, const char *data, size_t len);

/* The same with mode (set whatever the umask). */
int fix_write_mode(const char *path, const char *data, size_t len, mode_t mode);

/* The kill switch (config gate.kill_switch or the persistent one). */
int fix_kill_switch_on(port_ctx *ctx);

/* 1 while automation is paused (`pause` command, kept in the state
 * database): no escalation, no new fix, no deploy. */
int fix_paused(port_ctx *ctx);

/* A step of the fix loop proper: fix_stage with the prefix "fix". */
void fix_step(port_ctx *ctx, int64_t fix_id, const char *fp, const char *name, json_t *fields);

/* The fields of a stage record (steals fields, may be NULL). */
json_t *fix_stage_fields(int64_t fix_id, const char *fp, const char *stage, json_t *fields);

/* The audit record of a stage: a copy of its fields, where the gate's
 * "action" (a name the audit log keeps for its own) is "decision". */
json_t *fix_stage_record(json_t *fields);

/* fix_ticket_note and fix_notify, each once under key (NULL: no key). */
void fix_ticket_note_once(port_ctx *ctx, json_t *fix, const char *key, const char *status,
                          const char *text);
void fix_notify_once(port_ctx *ctx, json_t *fix, const char *key, const char *kind,
                     const char *text, int with_links);

/* 1 when fp is a usable fingerprint (at most FIX_FP_MAX characters). */
int fix_valid_fp(const char *fp);

/* v, or JSON null for NULL. */
json_t *fix_or_null(json_t *v);

/* Sets fields on the fix whose status is expect (steals them); 0 or -1. */
int fix_set(state_db *db, int64_t id, const char *expect, json_t *fields);

#endif
