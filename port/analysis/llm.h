/*
 * LLM providers for the analyzer and the triage model: configuration,
 * request bodies, reply envelopes, JSON extraction from model text, the
 * prompts (every untrusted text fenced, port/analysis/fence.h) and the budgets
 * (calls per hour, input tokens per call, spend per day).
 *
 * Wire formats:
 *   anthropic  POST {endpoint}/v1/messages         x-api-key, anthropic-version
 *   openai     POST {endpoint}/v1/chat/completions  Authorization: Bearer
 *   ollama     POST {endpoint}/api/chat             (no key)
 * The HTTP work (timeouts, retries, Retry-After) is port/core/http.h's.
 */
#ifndef SELF_HEAL_PORT_LLM_H
#define SELF_HEAL_PORT_LLM_H

#include <jansson.h>
#include <stddef.h>

#include "ctx.h"
#include "fence.h"
#include "self_heal/common.h"

typedef enum llm_provider {
    LLM_OFFLINE = 0,
    LLM_ANTHROPIC,
    LLM_OPENAI,
    LLM_OLLAMA,
} llm_provider;

typedef enum llm_json_mode {
    LLM_JSON_SCHEMA = 0, /* JSON schema (OpenAI) / a forced tool (Anthropic) */
    LLM_JSON_OBJECT,     /* {"type": "json_object"} / plain text asking for JSON */
    LLM_JSON_NONE,       /* nothing but the instructions in the prompt */
} llm_json_mode;

#define LLM_MAX_REPLY (1024u * 1024u) /* bytes of an HTTP reply body */

typedef struct llm_config {
    llm_provider provider;
    char provider_name[16];
    char model[128];
    char endpoint[512]; /* base URL without a trailing slash */
    char api_key_env[128];
    int key_required; /* 0 for ollama, or when api_key_env is "" */
    llm_json_mode json_mode;
    long timeout_ms;
    int max_attempts;
    long backoff_base_ms;
    long backoff_max_ms;
    long max_output_tokens;
    /* Budgets; a value <= 0 means no limit. */
    double calls_per_hour;
    long max_input_tokens;
    double spend_per_day_usd;
    double price_in_per_mtok;
    double price_out_per_mtok;
} llm_config;

/* Fills *out from a config object such as the value of "llm" (NULL or
 * not an object: the offline defaults). Returns 0, or -1 with a reason in
 * err (unknown provider, bad endpoint, oversize strings). */
int llm_config_from_json(llm_config *out, json_t *obj, char *err, size_t errlen);

/* The same for the configuration value at a dotted path ("llm"). */
int llm_config_load(llm_config *out, port_ctx *ctx, const char *path, char *err, size_t errlen);

typedef struct llm_reply {
    char *text; /* the model's answer text (owned, NUL-terminated) */
    size_t text_len;
    long input_tokens;  /* as reported by the provider, 0 when absent */
    long output_tokens; /* as reported by the provider, 0 when absent */
    char stop_reason[32];
    long status;   /* HTTP status of the last attempt */
    int attempts;  /* HTTP attempts */
    long total_ms; /* waits included */
    int reached;   /* 1 when an HTTP answer arrived (a call to bill) */
} llm_reply;

void llm_reply_free(llm_reply *r);

/* Return codes of llm_chat. */
enum {
    LLM_OK = 0,
    LLM_ERR_KEY = -1,      /* the key's environment variable is unset */
    LLM_ERR_HTTP = -2,     /* no answer, or a non-2xx status after the retries */
    LLM_ERR_ENVELOPE = -3, /* a 2xx answer whose body is not the provider's format */
    LLM_ERR_INTERNAL = -4, /* out of memory, bad configuration */
};

/* The JSON request body for one system + user exchange; `schema` (may be
 * NULL) is the JSON schema of the answer, called `schema_name`. Returns a
 * new string (free()) or NULL. Never contains the key. */
char *llm_request_body(const llm_config *cfg, const char *system, const char *user, json_t *schema,
                       const char *schema_name);

/* Parses a provider's reply body into out->text / tokens / stop_reason.
 * Returns 0, or -1 with a reason in err. */
int llm_parse_envelope(llm_reply *out, const llm_config *cfg, const char *body, size_t len,
                       char *err, size_t errlen);

/* One request with its retries. On LLM_ERR_ENVELOPE, out->text holds the
 * start of the raw body (for a repair request). err never holds a secret. */
int llm_chat(llm_reply *out, const llm_config *cfg, const char *system, const char *user,
             json_t *schema, const char *schema_name, const atomic_int *cancel, char *err,
             size_t errlen);

/* The first JSON object in text (```json fences and prose around it are
 * skipped); NULL when none parses. */
json_t *llm_extract_json(const char *text, size_t len);

/* ---------------------------------------------------------------- prompts */

/* The JSON schema of the analyzer's answer (new ref). */
json_t *llm_analyze_schema(void);

/* Builds the analyzer prompt. Each group (id, counts, first/last seen,
 * service, type, message, top frames, one sample) goes into its own fence;
 * so does the service descriptor (may be NULL; an object is serialised).
 * `level` sheds detail: 0 all, 1 no samples, 2 no samples nor frames,
 * 3 short messages too. Returns 0, or -1 when out of memory. */
int llm_prompt_analyze(sh_buf *system, sh_buf *user, const fence *f, json_t *groups,
                       json_t *descriptor, const sh_scrubber *scrub, int level);

/* The repair request: the original user text, then the previous reply and
 * the validation error, both fenced. */
int llm_prompt_repair(sh_buf *user, const fence *f, const char *original_user, const char *previous,
                      size_t previous_len, const char *error, const sh_scrubber *scrub);

/* The triage prompt for a batch of log lines (array of strings) from
 * `source` (may be NULL). */
json_t *llm_triage_schema(void);
int llm_prompt_triage(sh_buf *system, sh_buf *user, const fence *f, json_t *lines,
                      const char *source, const sh_scrubber *scrub);

/* Estimated tokens of a prompt: bytes / 4, rounded up. */
long llm_estimate_tokens(size_t bytes);

/* ---------------------------------------------------------------- budgets */

/* Checks the budgets before a call of about est_tokens input tokens and,
 * when there is room, records the call ("llm_calls") at once so that
 * concurrent callers cannot both take the last slot. Uses ctx->state when
 * set, otherwise counters kept in memory for the process. Returns 0 when
 * the call may go ahead, 1 when over budget (why says which). */
int llm_budget_reserve(port_ctx *ctx, const llm_config *cfg, long est_tokens, char *why,
                       size_t whylen);

/* Adds one record to a budget ("llm_calls", "llm_cost_usd", ...). */
void llm_budget_add(port_ctx *ctx, const char *name, double amount);

/* Records a reply's tokens and cost ("llm_input_tokens",
 * "llm_output_tokens", "llm_cost_usd"); returns the cost in USD. */
double llm_budget_record(port_ctx *ctx, const llm_config *cfg, const llm_reply *reply);

/* Sum of a budget record over the last window_s seconds. */
double llm_budget_sum(port_ctx *ctx, const char *name, long long window_s);

/* Forgets the in-memory budget records (tests). */
void llm_budget_reset_memory(void);

#endif
