/*
 * The coding agent's configuration and budgets (agent.h).
 *
 * Presets (docs/agents.md):
 *
 *   claude_code  <program> -p <instruction> --output-format stream-json
 *                --verbose --max-turns N --permission-mode bypassPermissions
 *                --tools Read,Edit,Write,Glob,Grep,Bash
 *                --no-session-persistence --strict-mcp-config [--model M]
 *                with CLAUDE_CODE_MAX_RETRIES, API_TIMEOUT_MS (a model that
 *                never answers ends the session), ANTHROPIC_BASE_URL (when
 *                base_url is set), CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,
 *                DISABLE_AUTOUPDATER, DISABLE_TELEMETRY,
 *                DISABLE_ERROR_REPORTING and, in the sandbox, IS_SANDBOX;
 *                its key in ANTHROPIC_API_KEY. Permissions are not asked:
 *                the sandbox is what confines it.
 *   aider        <program> --message-file {prompt_file} --yes-always
 *                --no-git --no-auto-commits --no-check-update --no-analytics
 *                [--model M], OPENAI_API_BASE from base_url, its key in
 *                OPENAI_API_KEY.
 */
#include "agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h"
#include "exec.h"
#include "llm.h"

#define AGENT_INSTRUCTION                                                                          \
    "Read {prompt_file}: it describes a production error to fix in this checkout and the "         \
    "constraints your change must keep to. Make the change with your file tools, run the tests "   \
    "if you can, and end with a short account of what you changed."

static int push(json_t *arr, const char *s)
{
    return json_array_append_new(arr, json_string(s));
}

static int push_env(json_t *env, const char *name, const char *value)
{
    char buf[2048];
    if ((size_t)snprintf(buf, sizeof(buf), "%s=%s", name, value) >= sizeof(buf))
        return -1;
    return push(env, buf);
}

/* fix.agent.env: plain settings, never secrets. */
static int load_env(agent_config *cfg, port_ctx *ctx, cmd_error *err)
{
    json_t *v = port_config_get(ctx, "fix.agent.env");
    int rc = 0;
    if (v != NULL && !json_is_null(v)) {
        const char *name;
        json_t *val;
        if (!json_is_object(v) || json_object_size(v) > 64)
            rc = -1;
        json_object_foreach(v, name, val)
        {
            if (rc != 0)
                break;
            int ok = json_is_string(val) && name[0] != '\0' && strchr(name, '=') == NULL &&
                     strlen(json_string_value(val)) == json_string_length(val);
            if (ok && exec_looks_secret(name)) {
                cmd_error_set(err, "bad_config",
                              "fix.agent.env.%.100s looks like a secret: keep it in the "
                              "environment and name it in fix.agent.key_env",
                              name);
                json_decref(v);
                return -1;
            }
            if (!ok || push_env(cfg->env, name, json_string_value(val)) != 0)
                rc = -1;
        }
    }
    json_decref(v);
    if (rc != 0)
        cmd_error_set(err, "bad_config",
                      "fix.agent.env must be an object of at most 64 NAME: \"value\" strings");
    return rc;
}

/* What every preset reads: its program, the model, the API's base URL. */
typedef struct preset_common {
    char program[1024], model[128], base_url[512];
} preset_common;

static int preset_read(preset_common *p, port_ctx *ctx, const char *program, cmd_error *err)
{
    return cmd_config_string(ctx, "fix.agent.program", program, p->program, sizeof(p->program),
                             err) != 0 ||
                   cmd_config_string(ctx, "fix.agent.model", "", p->model, sizeof(p->model), err) !=
                       0 ||
                   cmd_config_string(ctx, "fix.agent.base_url", "", p->base_url,
                                     sizeof(p->base_url), err) != 0
               ? -1
               : 0;
}

/* The argv (args, then --model), the base URL under base_env, the key
 * under key_name; rc: the preset's own pushes so far. */
static int preset_finish(agent_config *cfg, const preset_common *p, const char *const *args,
                         size_t n, const char *base_env, const char *key_name, int rc,
                         cmd_error *err)
{
    for (size_t i = 0; i < n; i++)
        rc |= push(cfg->argv, args[i]);
    if (p->model[0] != '\0')
        rc |= push(cfg->argv, "--model") | push(cfg->argv, p->model);
    if (p->base_url[0] != '\0')
        rc |= push_env(cfg->env, base_env, p->base_url);
    snprintf(cfg->key_as, sizeof(cfg->key_as), "%s", key_name);
    if (cfg->key_env[0] == '\0')
        snprintf(cfg->key_env, sizeof(cfg->key_env), "%s", key_name);
    if (rc != 0)
        cmd_error_set(err, "bad_config", "fix.agent: a preset setting is too long");
    return rc != 0 ? -1 : 0;
}

static int preset_claude_code(agent_config *cfg, port_ctx *ctx, int sandboxed, cmd_error *err)
{
    preset_common p;
    if (preset_read(&p, ctx, "claude", err) != 0)
        return -1;
    long long turns = port_config_int(ctx, "fix.agent.max_turns", 30);
    long long retries = port_config_int(ctx, "fix.agent.max_retries", 2);
    long long request_s = port_config_int(ctx, "fix.agent.request_timeout_s", 300);
    if (turns < 1 || turns > 500 || retries < 0 || retries > 10 || request_s < 1 ||
        request_s > 3600) {
        cmd_error_set(err, "bad_config",
                      "fix.agent.max_turns must be 1..500, fix.agent.max_retries 0..10 and "
                      "fix.agent.request_timeout_s 1..3600");
        return -1;
    }
    char turns_s[16], retries_s[16], request_ms[32];
    snprintf(turns_s, sizeof(turns_s), "%lld", turns);
    snprintf(retries_s, sizeof(retries_s), "%lld", retries);
    snprintf(request_ms, sizeof(request_ms), "%lld", request_s * 1000);
    const char *args[] = {p.program,
                          "-p",
                          AGENT_INSTRUCTION,
                          "--output-format",
                          "stream-json",
                          "--verbose",
                          "--max-turns",
                          turns_s,
                          "--permission-mode",
                          "bypassPermissions",
                          "--tools",
                          "Read,Edit,Write,Glob,Grep,Bash",
                          "--no-session-persistence",
                          "--strict-mcp-config"};
    int rc = push_env(cfg->env, "CLAUDE_CODE_MAX_RETRIES", retries_s);
    rc |= push_env(cfg->env, "API_TIMEOUT_MS", request_ms);
    rc |= push_env(cfg->env, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    rc |= push_env(cfg->env, "DISABLE_AUTOUPDATER", "1");
    rc |= push_env(cfg->env, "DISABLE_TELEMETRY", "1");
    rc |= push_env(cfg->env, "DISABLE_ERROR_REPORTING", "1");
    if (sandboxed)
        rc |= push_env(cfg->env, "IS_SANDBOX", "1");
    return preset_finish(cfg, &p, args, sizeof(args) / sizeof(args[0]), "ANTHROPIC_BASE_URL",
                         "ANTHROPIC_API_KEY", rc, err);
}

static int preset_aider(agent_config *cfg, port_ctx *ctx, cmd_error *err)
{
    preset_common p;
    if (preset_read(&p, ctx, "aider", err) != 0)
        return -1;
    const char *args[] = {p.program,  "--message-file",    "{prompt_file}",     "--yes-always",
                          "--no-git", "--no-auto-commits", "--no-check-update", "--no-analytics"};
    return preset_finish(cfg, &p, args, sizeof(args) / sizeof(args[0]), "OPENAI_API_BASE",
                         "OPENAI_API_KEY", 0, err);
}

int agent_config_load(agent_config *cfg, port_ctx *ctx, int sandboxed, cmd_error *err)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->env = json_array();
    if (cfg->env == NULL ||
        cmd_config_string(ctx, "fix.agent.preset", "", cfg->preset, sizeof(cfg->preset), err) !=
            0 ||
        cmd_config_string(ctx, "fix.agent.key_env", "", cfg->key_env, sizeof(cfg->key_env), err) !=
            0 ||
        cmd_config_strings(ctx, "fix.agent.env_allow", &cfg->env_allow, err) != 0 ||
        load_env(cfg, ctx, err) != 0)
        goto fail;
    if (cmd_config_argv(ctx, "fix.agent.argv", EXEC_MAX_ARGS, &cfg->argv, err) != 0)
        goto fail;
    if (cfg->argv != NULL && cfg->preset[0] != '\0') {
        cmd_error_set(err, "bad_config", "fix.agent: give either argv or a preset, not both");
        goto fail;
    }
    json_t *net = port_config_get(ctx, "fix.agent.network");
    int preset = cfg->preset[0] != '\0';
    if (preset) {
        cfg->argv = json_array();
        int rc = cfg->argv == NULL ? -1
                 : strcmp(cfg->preset, "claude_code") == 0
                     ? preset_claude_code(cfg, ctx, sandboxed, err)
                 : strcmp(cfg->preset, "aider") == 0 ? preset_aider(cfg, ctx, err)
                                                     : -2;
        if (rc == -2)
            cmd_error_set(err, "bad_config",
                          "fix.agent.preset must be \"claude_code\" or \"aider\"");
        if (rc != 0) {
            json_decref(net);
            goto fail;
        }
    }
    /* a preset calls its model's API: network unless said otherwise */
    cfg->network = preset ? !json_is_false(net) : json_is_true(net);
    json_decref(net);
    /* the key passes under its own name, unless the agent reads it under
     * another (then fix.c sets that name alone) */
    if (cfg->key_env[0] != '\0' &&
        (cfg->key_as[0] == '\0' || strcmp(cfg->key_as, cfg->key_env) == 0)) {
        if (cfg->env_allow == NULL)
            cfg->env_allow = json_array();
        int listed = 0;
        size_t i;
        json_t *a;
        json_array_foreach(cfg->env_allow, i, a) listed |=
            strcmp(json_string_value(a), cfg->key_env) == 0;
        if (cfg->env_allow == NULL || (!listed && push(cfg->env_allow, cfg->key_env) != 0)) {
            cmd_error_set(err, "bad_config", "out of memory");
            goto fail;
        }
    }
    long long t = port_config_int(ctx, "fix.agent.timeout_s", 900);
    cfg->timeout_ms = (int)((t >= 1 && t <= 86400 ? t : 900) * 1000);
    return 0;
fail:
    agent_config_free(cfg);
    return -1;
}

void agent_config_free(agent_config *cfg)
{
    json_decref(cfg->argv);
    json_decref(cfg->env_allow);
    json_decref(cfg->env);
    memset(cfg, 0, sizeof(*cfg));
}

int agent_budget_reserve(port_ctx *ctx, const agent_config *cfg, size_t prompt_bytes, char *why,
                         size_t whylen)
{
    if (cfg->preset[0] == '\0')
        return 0;
    llm_config lc;
    char err[256];
    if (llm_config_load(&lc, ctx, "llm", err, sizeof(err)) != 0)
        return 0; /* the analysis reports its own configuration errors */
    return llm_budget_reserve(ctx, &lc, (long)(prompt_bytes / 4 + 1), why, whylen) != 0 ? 1 : 0;
}

void agent_budget_record(port_ctx *ctx, const agent_config *cfg, const transcript *t)
{
    if (cfg->preset[0] == '\0' || t == NULL)
        return;
    llm_config lc;
    char err[256];
    if (llm_config_load(&lc, ctx, "llm", err, sizeof(err)) != 0)
        memset(&lc, 0, sizeof(lc));
    llm_reply r;
    memset(&r, 0, sizeof(r));
    r.input_tokens = t->input_tokens;
    r.output_tokens = t->output_tokens;
    double cost = llm_budget_record(ctx, &lc, &r);
    if (cost <= 0 && t->cost_usd > 0)
        llm_budget_add(ctx, "llm_cost_usd", t->cost_usd);
    if (t->turns > 1)
        llm_budget_add(ctx, "llm_calls", (double)(t->turns - 1));
}
