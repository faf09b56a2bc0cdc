/*
 * The coding agent's configuration (docs/agents.md): an argv template of
 * its own (fix.agent.argv) or a preset (fix.agent.preset: "claude_code",
 * "aider") that makes one, with the environment the agent needs set
 * explicitly and its key passed through the allow-list; and the budgets
 * a model-backed agent's runs count against (the analysis's llm.budget).
 *
 *   fix.agent.preset      "claude_code" | "aider" (absent: fix.agent.argv)
 *   fix.agent.program     the preset's program (default "claude" / "aider")
 *   fix.agent.model       the model to ask for (default: the agent's own)
 *   fix.agent.base_url    the model API's base URL (default: the agent's own)
 *   fix.agent.max_turns   claude_code: turns of the session (default 30)
 *   fix.agent.max_retries claude_code: retries of one API request (default 2)
 *   fix.agent.request_timeout_s  claude_code: the longest wait for one API
 *                         answer (default 300)
 *   fix.agent.key_env     the variable holding the agent's key (presets:
 *                         ANTHROPIC_API_KEY / OPENAI_API_KEY); a preset's
 *                         agent gets it under the name it reads
 *   fix.agent.env_allow   more variables passed through (secrets dropped
 *                         but for key_env)
 *   fix.agent.env         {"NAME": "value"} set for the agent (no secrets:
 *                         a secret-looking name is a configuration error)
 *   fix.agent.network     presets: true unless false; else false
 *   fix.agent.timeout_s   SelfHeal's own limit on a run (default 900)
 */
#ifndef SELF_HEAL_PORT_AGENT_H
#define SELF_HEAL_PORT_AGENT_H

#include <jansson.h>
#include <stddef.h>

#include "cmd.h"
#include "transcript.h"

typedef struct agent_config {
    char preset[32];   /* "claude_code", "aider", or "" (fix.agent.argv) */
    json_t *argv;      /* the argv template; NULL: no agent configured */
    json_t *env_allow; /* names passed through (the key's included) */
    char key_env[128]; /* the variable SelfHeal reads the agent's key from, or "" */
    char key_as[64];   /* the name the agent reads it under ("" : key_env's own) */
    json_t *env;       /* "NAME=value" strings set for the agent */
    int network;       /* it may reach the network */
    int timeout_ms;    /* SelfHeal's limit on a run */
} agent_config;

/* Reads fix.agent.*. sandboxed: the agent runs in the sandbox (a preset
 * then tells the agent so, e.g. IS_SANDBOX for Claude Code). Returns 0
 * (argv NULL when neither argv nor a preset is configured), or -1 with a
 * bad_config error. Free with agent_config_free. */
int agent_config_load(agent_config *cfg, port_ctx *ctx, int sandboxed, cmd_error *err);
void agent_config_free(agent_config *cfg);

/* A model-backed agent (a preset) asks the analysis's budgets
 * (llm.budget) before it runs: 0 when it may, 1 when over budget (why
 * says which limit), for the prompt's size. Other agents: 0. */
int agent_budget_reserve(port_ctx *ctx, const agent_config *cfg, size_t prompt_bytes, char *why,
                         size_t whylen);

/* What a run of a preset agent used, counted against the same budgets:
 * its tokens, its turns as calls beyond the one reserved, and its cost
 * (llm.budget's prices when set, else the agent's own figure). */
void agent_budget_record(port_ctx *ctx, const agent_config *cfg, const transcript *t);

#endif
