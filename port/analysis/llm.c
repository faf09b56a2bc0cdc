/*
 * LLM providers (see llm.h): configuration, request bodies, reply
 * envelopes, JSON extraction, the fenced prompts and the budgets.
 */
#include "llm.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "http.h"
#include "service.h"
#include "state.h"

#define ANTHROPIC_VERSION "2023-06-01"
#define DEFAULT_TIMEOUT_MS 60000L
#define DEFAULT_ATTEMPTS 4
#define DEFAULT_OUTPUT_TOKENS 4096L
#define RAW_KEEP 4096 /* bytes of an unparsable body kept for the repair request */
#define EXTRACT_TRIES 32
#define EXTRACT_DEPTH 256

/* Per-group text limits by prompt level (0..3). */
static const size_t group_max[] = {8192, 4096, 2048, 1024};
static const size_t message_max[] = {2000, 1500, 1000, 240};
static const size_t sample_max = 2000;
static const int frames_max[] = {10, 10, 0, 0};
#define DESCRIPTOR_MAX 8192
#define PREVIOUS_MAX 16384
#define ERROR_MAX 2048
#define TRIAGE_LINE_MAX 2000
#define TRIAGE_TOTAL_MAX 65536

/* ---------------------------------------------------------------- helpers */

static const char *buf_cstr(sh_buf *b)
{
    if (sh_buf_reserve(b, 1) != 0)
        return "";
    b->data[b->len] = '\0';
    return b->data;
}

static void wipe(char *p, size_t n)
{
    volatile char *v = p;
    while (n-- > 0)
        *v++ = 0;
}

static int copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

static int env_name_ok(const char *s)
{
    if (s[0] == '\0')
        return 1; /* "": no key */
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_'))
            return 0;
    return 1;
}

/* ---------------------------------------------------------------- config */

static const char *provider_names[] = {"offline", "anthropic", "openai", "ollama"};
static const char *default_endpoints[] = {"", "https://api.anthropic.com", "https://api.openai.com",
                                          "http://127.0.0.1:11434"};
static const char *default_models[] = {"", "claude-sonnet-4-5", "gpt-4o-mini", "llama3.1"};
static const char *default_key_envs[] = {"", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", ""};

static long get_long(json_t *obj, const char *key, long dflt, long lo, long hi)
{
    json_t *v = json_object_get(obj, key);
    double d = json_is_number(v) ? json_number_value(v) : (double)dflt;
    if (d < (double)lo)
        return lo;
    if (d > (double)hi)
        return hi;
    return (long)d;
}

static double get_real(json_t *obj, const char *key, double dflt)
{
    json_t *v = json_object_get(obj, key);
    double d = json_is_number(v) ? json_number_value(v) : dflt;
    return d == d ? d : dflt; /* NaN */
}

static int config_string(char *dst, size_t cap, json_t *obj, const char *key, const char *dflt,
                         char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    const char *s = json_is_string(v) ? json_string_value(v) : dflt;
    if (v != NULL && !json_is_string(v) && !json_is_null(v)) {
        snprintf(err, errlen, "llm.%s must be a string", key);
        return -1;
    }
    if (copy_str(dst, cap, s) != 0) {
        snprintf(err, errlen, "llm.%s is longer than %zu bytes", key, cap - 1);
        return -1;
    }
    return 0;
}

int llm_config_from_json(llm_config *out, json_t *obj, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(obj))
        obj = NULL;
    json_t *pv = json_object_get(obj, "provider");
    const char *pname = json_is_string(pv) ? json_string_value(pv) : "offline";
    int found = 0;
    for (int i = 0; i < 4; i++)
        if (strcmp(pname, provider_names[i]) == 0) {
            out->provider = (llm_provider)i;
            found = 1;
        }
    if (!found || (pv != NULL && !json_is_string(pv))) {
        snprintf(err, errlen, "llm.provider must be offline, anthropic, openai or ollama");
        return -1;
    }
    int p = (int)out->provider;
    snprintf(out->provider_name, sizeof(out->provider_name), "%s", provider_names[p]);
    if (config_string(out->model, sizeof(out->model), obj, "model", default_models[p], err,
                      errlen) != 0 ||
        config_string(out->endpoint, sizeof(out->endpoint), obj, "endpoint", default_endpoints[p],
                      err, errlen) != 0)
        return -1;
    json_t *kv = json_object_get(obj, "api_key_env");
    const char *kname = json_is_string(kv) ? json_string_value(kv) : default_key_envs[p];
    if ((kv != NULL && !json_is_string(kv) && !json_is_null(kv)) || strlen(kname) >= 128 ||
        !env_name_ok(kname)) {
        /* never echo the value: it may be a key pasted in the wrong place */
        snprintf(err, errlen, "llm.api_key_env must be the name of an environment variable");
        return -1;
    }
    memcpy(out->api_key_env, kname, strlen(kname) + 1);
    /* ollama needs no key, but one behind a proxy may want a bearer */
    out->key_required = out->provider != LLM_OFFLINE && out->api_key_env[0] != '\0';
    size_t elen = strlen(out->endpoint);
    while (elen > 0 && out->endpoint[elen - 1] == '/')
        out->endpoint[--elen] = '\0';
    if (out->provider != LLM_OFFLINE && strncmp(out->endpoint, "http://", 7) != 0 &&
        strncmp(out->endpoint, "https://", 8) != 0) {
        snprintf(err, errlen, "llm.endpoint must start with http:// or https://");
        return -1;
    }
    for (const char *c = out->endpoint; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            snprintf(err, errlen, "llm.endpoint holds a blank or control character");
            return -1;
        }
    json_t *jm = json_object_get(obj, "json_mode");
    const char *mode = json_is_string(jm) ? json_string_value(jm) : "schema";
    if (strcmp(mode, "schema") == 0)
        out->json_mode = LLM_JSON_SCHEMA;
    else if (strcmp(mode, "object") == 0)
        out->json_mode = LLM_JSON_OBJECT;
    else if (strcmp(mode, "none") == 0)
        out->json_mode = LLM_JSON_NONE;
    else {
        snprintf(err, errlen, "llm.json_mode must be schema, object or none");
        return -1;
    }
    out->timeout_ms = get_long(obj, "timeout_ms", DEFAULT_TIMEOUT_MS, 100, 600000);
    out->max_attempts = (int)get_long(obj, "max_attempts", DEFAULT_ATTEMPTS, 1, 10);
    out->backoff_base_ms = get_long(obj, "backoff_base_ms", 0, 0, 60000);
    out->backoff_max_ms = get_long(obj, "backoff_max_ms", 0, 0, 300000);
    out->max_output_tokens = get_long(obj, "max_output_tokens", DEFAULT_OUTPUT_TOKENS, 1, 1000000);
    json_t *budget = json_object_get(obj, "budget");
    out->calls_per_hour = get_real(budget, "calls_per_hour", 0);
    out->max_input_tokens = get_long(budget, "max_input_tokens", 0, 0, 100000000);
    out->spend_per_day_usd = get_real(budget, "spend_per_day_usd", 0);
    out->price_in_per_mtok = get_real(budget, "price_in_per_mtok", 0);
    out->price_out_per_mtok = get_real(budget, "price_out_per_mtok", 0);
    if (out->price_in_per_mtok < 0 || out->price_out_per_mtok < 0) {
        snprintf(err, errlen, "llm.budget prices must not be negative");
        return -1;
    }
    return 0;
}

int llm_config_load(llm_config *out, port_ctx *ctx, const char *path, char *err, size_t errlen)
{
    json_t *obj = port_config_get(ctx, path);
    int rc = llm_config_from_json(out, obj, err, errlen);
    json_decref(obj);
    return rc;
}

void llm_reply_free(llm_reply *r)
{
    if (r == NULL)
        return;
    free(r->text);
    memset(r, 0, sizeof(*r));
}

/* ---------------------------------------------------------------- requests */

static json_t *message(const char *role, const char *content)
{
    return json_pack("{s:s, s:s}", "role", role, "content", content);
}

char *llm_request_body(const llm_config *cfg, const char *system, const char *user, json_t *schema,
                       const char *schema_name)
{
    json_t *body = NULL;
    const char *name = schema_name != NULL ? schema_name : "answer";
    switch (cfg->provider) {
    case LLM_ANTHROPIC:
        body = json_pack("{s:s, s:I, s:s, s:[o]}", "model", cfg->model, "max_tokens",
                         (json_int_t)cfg->max_output_tokens, "system", system, "messages",
                         message("user", user));
        if (body != NULL && schema != NULL && cfg->json_mode == LLM_JSON_SCHEMA) {
            json_object_set_new(body, "tools",
                                json_pack("[{s:s, s:s, s:O}]", "name", name, "description",
                                          "Report the answer as structured data.", "input_schema",
                                          schema));
            json_object_set_new(body, "tool_choice",
                                json_pack("{s:s, s:s}", "type", "tool", "name", name));
        }
        break;
    case LLM_OPENAI:
        body = json_pack("{s:s, s:I, s:[o, o]}", "model", cfg->model, "max_tokens",
                         (json_int_t)cfg->max_output_tokens, "messages", message("system", system),
                         message("user", user));
        if (body == NULL)
            break;
        if (cfg->json_mode == LLM_JSON_SCHEMA && schema != NULL)
            json_object_set_new(body, "response_format",
                                json_pack("{s:s, s:{s:s, s:b, s:O}}", "type", "json_schema",
                                          "json_schema", "name", name, "strict", 1, "schema",
                                          schema));
        else if (cfg->json_mode != LLM_JSON_NONE)
            json_object_set_new(body, "response_format", json_pack("{s:s}", "type", "json_object"));
        break;
    case LLM_OLLAMA:
        body = json_pack("{s:s, s:[o, o], s:b, s:{s:I}}", "model", cfg->model, "messages",
                         message("system", system), message("user", user), "stream", 0, "options",
                         "num_predict", (json_int_t)cfg->max_output_tokens);
        if (body != NULL && cfg->json_mode != LLM_JSON_NONE)
            json_object_set_new(body, "format", json_string("json"));
        break;
    default:
        return NULL;
    }
    if (body == NULL)
        return NULL;
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

/* The URL of the provider's endpoint; an endpoint already ending in /v1
 * (common for OpenAI-compatible servers) is not given a second one. */
static int request_url(char *url, size_t cap, const llm_config *cfg)
{
    const char *path = cfg->provider == LLM_ANTHROPIC ? "/v1/messages"
                       : cfg->provider == LLM_OPENAI  ? "/v1/chat/completions"
                                                      : "/api/chat";
    size_t elen = strlen(cfg->endpoint);
    if (cfg->provider != LLM_OLLAMA && elen >= 3 && strcmp(cfg->endpoint + elen - 3, "/v1") == 0)
        path += 3;
    int n = snprintf(url, cap, "%s%s", cfg->endpoint, path);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* ---------------------------------------------------------------- replies */

static void copy_stop(llm_reply *out, json_t *v)
{
    if (json_is_string(v))
        snprintf(out->stop_reason, sizeof(out->stop_reason), "%s", json_string_value(v));
}

static long token_count(json_t *v)
{
    if (!json_is_integer(v))
        return 0;
    json_int_t n = json_integer_value(v);
    return n < 0 ? 0 : n > 1000000000 ? 1000000000 : (long)n;
}

static int set_text(llm_reply *out, const char *text, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, text, len);
    copy[len] = '\0';
    free(out->text);
    out->text = copy;
    out->text_len = len;
    return 0;
}

static int parse_anthropic(llm_reply *out, json_t *root, char *err, size_t errlen)
{
    json_t *content = json_object_get(root, "content");
    if (!json_is_array(content)) {
        snprintf(err, errlen, "reply has no content array");
        return -1;
    }
    json_t *usage = json_object_get(root, "usage");
    out->input_tokens = token_count(json_object_get(usage, "input_tokens"));
    out->output_tokens = token_count(json_object_get(usage, "output_tokens"));
    copy_stop(out, json_object_get(root, "stop_reason"));
    size_t i;
    json_t *block;
    /* a forced tool's input is the structured answer */
    json_array_foreach(content, i, block)
    {
        const char *type = json_string_value(json_object_get(block, "type"));
        json_t *input = json_object_get(block, "input");
        if (type != NULL && strcmp(type, "tool_use") == 0 && json_is_object(input)) {
            char *text = json_dumps(input, JSON_COMPACT);
            int rc = text != NULL ? set_text(out, text, strlen(text)) : -1;
            free(text);
            if (rc != 0)
                snprintf(err, errlen, "out of memory");
            return rc;
        }
    }
    sh_buf all;
    sh_buf_init(&all);
    json_array_foreach(content, i, block)
    {
        const char *type = json_string_value(json_object_get(block, "type"));
        json_t *t = json_object_get(block, "text");
        if (type != NULL && strcmp(type, "text") == 0 && json_is_string(t))
            sh_buf_append(&all, json_string_value(t), json_string_length(t));
    }
    int rc = 0;
    if (all.oom || set_text(out, all.len ? all.data : "", all.len) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    sh_buf_free(&all);
    return rc;
}

static int parse_openai(llm_reply *out, json_t *root, char *err, size_t errlen)
{
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    json_t *content = json_object_get(msg, "content");
    json_t *usage = json_object_get(root, "usage");
    out->input_tokens = token_count(json_object_get(usage, "prompt_tokens"));
    out->output_tokens = token_count(json_object_get(usage, "completion_tokens"));
    copy_stop(out, json_object_get(choice, "finish_reason"));
    if (!json_is_string(content)) {
        snprintf(err, errlen, "%s",
                 json_is_string(json_object_get(msg, "refusal"))
                     ? "the model refused to answer"
                     : "reply has no choices[0].message.content string");
        return -1;
    }
    if (set_text(out, json_string_value(content), json_string_length(content)) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int parse_ollama(llm_reply *out, json_t *root, char *err, size_t errlen)
{
    json_t *content = json_object_get(json_object_get(root, "message"), "content");
    out->input_tokens = token_count(json_object_get(root, "prompt_eval_count"));
    out->output_tokens = token_count(json_object_get(root, "eval_count"));
    copy_stop(out, json_object_get(root, "done_reason"));
    if (!json_is_string(content)) {
        snprintf(err, errlen, "reply has no message.content string");
        return -1;
    }
    if (set_text(out, json_string_value(content), json_string_length(content)) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int llm_parse_envelope(llm_reply *out, const llm_config *cfg, const char *body, size_t len,
                       char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        if (root == NULL)
            snprintf(err, errlen, "reply body is not valid JSON (%s at byte %d)", jerr.text,
                     jerr.position);
        else
            snprintf(err, errlen, "reply body is not a JSON object");
        json_decref(root);
        return -1;
    }
    int rc;
    switch (cfg->provider) {
    case LLM_ANTHROPIC:
        rc = parse_anthropic(out, root, err, errlen);
        break;
    case LLM_OPENAI:
        rc = parse_openai(out, root, err, errlen);
        break;
    case LLM_OLLAMA:
        rc = parse_ollama(out, root, err, errlen);
        break;
    default:
        snprintf(err, errlen, "no provider");
        rc = -1;
    }
    json_decref(root);
    return rc;
}

/* A short, safe summary of an error body: the provider's error type only
 * (letters, digits, _ and .), never its message. */
static void error_type(char *dst, size_t cap, const char *body, size_t len)
{
    dst[0] = '\0';
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *e = json_object_get(root, "error");
    json_t *t = json_is_object(e) ? json_object_get(e, "type") : NULL;
    if (json_is_string(t)) {
        size_t n = 0;
        for (const char *p = json_string_value(t); *p && n + 1 < cap && n < 40; p++)
            if (isalnum((unsigned char)*p) || *p == '_' || *p == '.')
                dst[n++] = *p;
        dst[n] = '\0';
    }
    json_decref(root);
}

static char *header_line(const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *h = malloc(n);
    if (h != NULL)
        snprintf(h, n, "%s: %s", name, value);
    return h;
}

int llm_chat(llm_reply *out, const llm_config *cfg, const char *system, const char *user,
             json_t *schema, const char *schema_name, const atomic_int *cancel, char *err,
             size_t errlen)
{
    memset(out, 0, sizeof(*out));
    err[0] = '\0';
    const char *key = NULL;
    if (cfg->key_required) {
        key = port_secret(cfg->api_key_env);
        if (key == NULL) {
            snprintf(err, errlen, "no_api_key: %s", cfg->api_key_env);
            return LLM_ERR_KEY;
        }
        if (strpbrk(key, "\r\n") != NULL) {
            snprintf(err, errlen, "no_api_key: %s holds a line break", cfg->api_key_env);
            return LLM_ERR_KEY;
        }
    }
    char url[640];
    if (request_url(url, sizeof(url), cfg) != 0) {
        snprintf(err, errlen, "endpoint too long");
        return LLM_ERR_INTERNAL;
    }
    char *body = llm_request_body(cfg, system, user, schema, schema_name);
    if (body == NULL) {
        snprintf(err, errlen, "could not build the request");
        return LLM_ERR_INTERNAL;
    }
    char *secret_header = NULL;
    if (key != NULL) {
        if (cfg->provider == LLM_ANTHROPIC)
            secret_header = header_line("x-api-key", key);
        else {
            size_t n = strlen(key) + 8;
            char *bearer = malloc(n);
            if (bearer != NULL) {
                snprintf(bearer, n, "Bearer %s", key);
                secret_header = header_line("Authorization", bearer);
                wipe(bearer, n);
                free(bearer);
            }
        }
        if (secret_header == NULL) {
            free(body);
            snprintf(err, errlen, "out of memory");
            return LLM_ERR_INTERNAL;
        }
    }
    const char *headers[6];
    size_t nh = 0;
    headers[nh++] = "content-type: application/json";
    headers[nh++] = "accept: application/json";
    if (cfg->provider == LLM_ANTHROPIC)
        headers[nh++] = "anthropic-version: " ANTHROPIC_VERSION;
    if (secret_header != NULL)
        headers[nh++] = secret_header;
    headers[nh] = NULL;

    http_request req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = cfg->timeout_ms,
        .max_attempts = cfg->max_attempts,
        .backoff_base_ms = cfg->backoff_base_ms,
        .backoff_max_ms = cfg->backoff_max_ms,
        .max_response = LLM_MAX_REPLY,
        .cancel = cancel,
    };
    http_response res;
    int hrc = http_perform(&res, &req);
    if (secret_header != NULL) {
        wipe(secret_header, strlen(secret_header));
        free(secret_header);
    }
    free(body);
    out->status = res.status;
    out->attempts = res.attempts;
    out->total_ms = res.total_ms;
    out->reached = res.status != 0;
    int rc = LLM_OK;
    if (hrc != 0) {
        snprintf(err, errlen, "http: %s after %d attempt%s", res.error[0] ? res.error : "no answer",
                 res.attempts, res.attempts == 1 ? "" : "s");
        rc = LLM_ERR_HTTP;
    } else if (res.status < 200 || res.status > 299) {
        char etype[48];
        error_type(etype, sizeof(etype), res.body, res.body_len);
        snprintf(err, errlen, "http: status %ld%s%s after %d attempt%s", res.status,
                 etype[0] ? " " : "", etype, res.attempts, res.attempts == 1 ? "" : "s");
        rc = LLM_ERR_HTTP;
    } else if (llm_parse_envelope(out, cfg, res.body, res.body_len, err, errlen) != 0) {
        size_t keep = sh_utf8_truncate(res.body, res.body_len, RAW_KEEP);
        if (set_text(out, res.body, keep) != 0)
            out->text = NULL;
        rc = LLM_ERR_ENVELOPE;
    }
    http_response_free(&res);
    return rc;
}

/* ---------------------------------------------------------------- JSON in text
 */

/* End (exclusive) of the balanced object starting at text[start] == '{',
 * or 0 when it does not close (truncated) or nests too deep. */
static size_t object_end(const char *text, size_t len, size_t start)
{
    int depth = 0, in_str = 0, esc = 0;
    for (size_t i = start; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"')
            in_str = 1;
        else if (c == '{' || c == '[') {
            if (++depth > EXTRACT_DEPTH)
                return 0;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return c == '}' ? i + 1 : 0;
            if (depth < 0)
                return 0;
        }
    }
    return 0;
}

json_t *llm_extract_json(const char *text, size_t len)
{
    if (text == NULL)
        return NULL;
    json_t *whole = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(whole))
        return whole;
    json_decref(whole);
    int tries = 0;
    for (size_t i = 0; i < len && tries < EXTRACT_TRIES; i++) {
        if (text[i] != '{')
            continue;
        tries++;
        size_t end = object_end(text, len, i);
        if (end == 0)
            return NULL; /* the first object never closes: a cut answer */
        json_t *v = json_loadb(text + i, end - i, JSON_REJECT_DUPLICATES, NULL);
        if (json_is_object(v))
            return v;
        json_decref(v);
        i = end - 1;
    }
    return NULL;
}

/* ---------------------------------------------------------------- prompts */

json_t *llm_analyze_schema(void)
{
    return json_pack("{s:s, s:b, s:[s], s:{s:{s:s, s:{s:s, s:b, s:[s,s,s,s,s,s], s:{s:{s:s}, "
                     "s:{s:s, "
                     "s:[s,s,s,s]}, s:{s:s, s:{s:s}}, s:{s:s}, s:{s:s, s:{s:s}}, s:{s:s}}}}}}",
                     "type", "object", "additionalProperties", 0, "required", "issues",
                     "properties", "issues", "type", "array", "items", "type", "object",
                     "additionalProperties", 0, "required", "root_cause", "severity", "group_ids",
                     "suggested_fix", "files_likely_involved", "confidence", "properties",
                     "root_cause", "type", "string", "severity", "type", "string", "enum",
                     "critical", "high", "medium", "low", "group_ids", "type", "array", "items",
                     "type", "string", "suggested_fix", "type", "string", "files_likely_involved",
                     "type", "array", "items", "type", "string", "confidence", "type", "number");
}

json_t *llm_triage_schema(void)
{
    return json_pack("{s:s, s:[s,s], s:{s:{s:s, s:[s,s,s]}, s:{s:s}, s:{s:s, s:{s:{s:s}, "
                     "s:{s:s, "
                     "s:[s,s,s,s,s,s]}, s:{}, s:{s:s}, s:{s:s}, s:{s:s}}}}}",
                     "type", "object", "required", "decision", "reason", "properties", "decision",
                     "type", "string", "enum", "ignore", "watch", "investigate", "reason", "type",
                     "string", "watch", "type", "object", "properties", "field", "type", "string",
                     "op", "type", "string", "enum", ">", ">=", "<", "<=", "==", "!=", "value",
                     "template", "type", "string", "window_ms", "type", "integer", "threshold",
                     "type", "integer");
}

long llm_estimate_tokens(size_t bytes)
{
    return (long)((bytes + 3) / 4);
}

static void iso_time(char *dst, size_t cap, json_t *ms)
{
    if (!json_is_number(ms)) {
        snprintf(dst, cap, "unknown");
        return;
    }
    double v = json_number_value(ms);
    if (!(v >= 0 && v < 253402300800000.0)) { /* before year 10000 */
        snprintf(dst, cap, "unknown");
        return;
    }
    time_t s = (time_t)(v / 1000);
    struct tm tm;
    if (gmtime_r(&s, &tm) == NULL || strftime(dst, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(dst, cap, "unknown");
}

static void append_field(sh_buf *b, const char *name, json_t *v, size_t max)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return;
    size_t n = sh_utf8_truncate(json_string_value(v), json_string_length(v), max);
    sh_buf_append_str(b, name);
    sh_buf_append_str(b, ": ");
    sh_buf_append(b, json_string_value(v), n);
    sh_buf_append_byte(b, '\n');
}

static void append_frames(sh_buf *b, json_t *group, int max)
{
    json_t *frames = json_object_get(group, "frames");
    if (max <= 0)
        return;
    if (json_is_array(frames) && json_array_size(frames) > 0) {
        sh_buf_append_str(b, "frames:\n");
        size_t i;
        json_t *fr;
        json_array_foreach(frames, i, fr)
        {
            if ((int)i >= max)
                break;
            const char *file = json_string_value(json_object_get(fr, "file"));
            const char *mod = json_string_value(json_object_get(fr, "module"));
            const char *fn = json_string_value(json_object_get(fr, "function"));
            json_t *line = json_object_get(fr, "line");
            sh_buf_append_str(b, "  ");
            sh_buf_append(b, file ? file : "?", strnlen(file ? file : "?", 512));
            if (json_is_integer(line))
                sh_buf_appendf(b, ":%lld", (long long)json_integer_value(line));
            if (mod != NULL || fn != NULL) {
                sh_buf_append_byte(b, ' ');
                if (mod != NULL) {
                    sh_buf_append(b, mod, strnlen(mod, 256));
                    sh_buf_append_byte(b, '.');
                }
                if (fn != NULL)
                    sh_buf_append(b, fn, strnlen(fn, 256));
            }
            sh_buf_append_byte(b, '\n');
        }
        return;
    }
    json_t *st = json_object_get(group, "stacktrace");
    if (!json_is_string(st) || json_string_length(st) == 0)
        return;
    const char *s = json_string_value(st);
    size_t len = json_string_length(st), lines = 0, start = 0;
    sh_buf_append_str(b, "stacktrace:\n");
    for (size_t i = 0; i <= len && (int)lines < max; i++) {
        if (i == len || s[i] == '\n') {
            size_t n = sh_utf8_truncate(s + start, i - start, 300);
            if (n > 0) {
                sh_buf_append_str(b, "  ");
                sh_buf_append(b, s + start, n);
                sh_buf_append_byte(b, '\n');
                lines++;
            }
            start = i + 1;
        }
    }
}

static void append_sample(sh_buf *b, json_t *group)
{
    json_t *sample = json_array_get(json_object_get(group, "samples"), 0);
    if (sample == NULL)
        return;
    sh_buf_append_str(b, "sample:\n");
    if (json_is_string(sample)) {
        size_t n =
            sh_utf8_truncate(json_string_value(sample), json_string_length(sample), sample_max);
        sh_buf_append(b, json_string_value(sample), n);
    } else {
        char *text = json_dumps(sample, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (text != NULL) {
            size_t len = strlen(text);
            sh_buf_append(b, text, len < sample_max ? len : sample_max);
        }
        free(text);
    }
    sh_buf_append_byte(b, '\n');
}

static void system_prompt_analyze(sh_buf *system, const fence *f)
{
    sh_buf_append_str(system, "You are a site reliability engineer analysing production "
                              "errors. You receive error "
                              "groups: each group is one fingerprint of similar errors, "
                              "with its id, counts, first and "
                              "last time seen, service, error type, message, top stack "
                              "frames and one sample. Group "
                              "them by root cause: errors with one cause form one issue. "
                              "A database outage and the "
                              "errors of the code that calls the database are one issue, "
                              "whose root cause is the "
                              "outage. An error that starts earlier and names the same "
                              "host, table, endpoint or "
                              "dependency as later errors is usually their cause.\n\n");
    fence_explain(f, system);
    sh_buf_append_str(system, "\n\nAnswer with one JSON object and nothing else "
                              "(no prose, no code fences), matching "
                              "this JSON schema:\n");
    json_t *schema = llm_analyze_schema();
    char *text = schema != NULL ? json_dumps(schema, JSON_COMPACT) : NULL;
    json_decref(schema);
    if (text == NULL)
        system->oom = 1;
    else
        sh_buf_append_str(system, text);
    free(text);
    sh_buf_append_str(system,
                      "\n\nRules: use only the group ids given; every group id appears in "
                      "exactly one issue's "
                      "group_ids, the root cause group first; severity is one of critical, "
                      "high, medium, low "
                      "(the highest of the issue's groups, critical for an outage); confidence "
                      "is a number "
                      "from 0 to 1; root_cause is at most 2000 characters and says what failed "
                      "and why; "
                      "suggested_fix is a short, conservative change or operational action; "
                      "files_likely_involved lists at most 20 source files named in the "
                      "groups' stack frames "
                      "(an empty list when none are).\n");
}

int llm_prompt_analyze(sh_buf *system, sh_buf *user, const fence *f, json_t *groups,
                       json_t *descriptor, const sh_scrubber *scrub, int level)
{
    if (level < 0)
        level = 0;
    if (level > 3)
        level = 3;
    system_prompt_analyze(system, f);
    if (descriptor != NULL && !json_is_null(descriptor)) {
        sh_buf_append_str(user, "The service these errors come from, as described by its "
                                "operators:\n");
        if (json_is_string(descriptor))
            fence_append(f, user, scrub, "service descriptor", json_string_value(descriptor),
                         json_string_length(descriptor), DESCRIPTOR_MAX);
        else {
            char *text = json_dumps(descriptor, JSON_COMPACT);
            if (text != NULL)
                fence_append(f, user, scrub, "service descriptor", text, strlen(text),
                             DESCRIPTOR_MAX);
            free(text);
        }
        sh_buf_append_byte(user, '\n');
    }
    sh_buf_appendf(user, "Error groups (%zu):\n\n", json_array_size(groups));
    sh_buf g;
    sh_buf_init(&g);
    size_t i;
    json_t *group;
    json_array_foreach(groups, i, group)
    {
        const char *id = json_string_value(json_object_get(group, "id"));
        char first[32], last[32], label[160];
        iso_time(first, sizeof(first), json_object_get(group, "first_seen"));
        iso_time(last, sizeof(last), json_object_get(group, "last_seen"));
        json_t *count = json_object_get(group, "count");
        sh_buf_appendf(
            user, "Group %s: %lld occurrence(s), first seen %s, last seen %s\n", id ? id : "?",
            json_is_integer(count) ? (long long)json_integer_value(count) : 0, first, last);
        sh_buf_reset(&g);
        sh_buf_appendf(&g, "id: %s\n", id ? id : "?");
        append_field(&g, "service", json_object_get(group, "service"), 200);
        append_field(&g, "type", json_object_get(group, "type"), 300);
        append_field(&g, "severity", json_object_get(group, "severity"), 32);
        append_field(&g, "path", json_object_get(group, "path"), 300);
        append_field(&g, "commit", json_object_get(group, "commit"), 64);
        json_t *msg = json_object_get(group, "message");
        if (!json_is_string(msg))
            msg = json_object_get(group, "normalized");
        append_field(&g, "message", msg, message_max[level]);
        append_frames(&g, group, frames_max[level]);
        if (level == 0)
            append_sample(&g, group);
        if (g.oom)
            break;
        snprintf(label, sizeof(label), "group %s", id ? id : "?");
        fence_append(f, user, scrub, label, g.data ? g.data : "", g.len, group_max[level]);
        sh_buf_append_byte(user, '\n');
    }
    int oom = g.oom;
    sh_buf_free(&g);
    buf_cstr(system);
    buf_cstr(user);
    return system->oom || user->oom || oom ? -1 : 0;
}

int llm_prompt_repair(sh_buf *user, const fence *f, const char *original_user, const char *previous,
                      size_t previous_len, const char *error, const sh_scrubber *scrub)
{
    sh_buf_append_str(user, original_user);
    sh_buf_append_str(user, "\nYour previous answer could not be used. It was:\n");
    fence_append(f, user, scrub, "previous answer", previous ? previous : "",
                 previous ? previous_len : 0, PREVIOUS_MAX);
    sh_buf_append_str(user, "It failed validation with this error:\n");
    fence_append(f, user, scrub, "validation error", error, strlen(error), ERROR_MAX);
    sh_buf_append_str(user,
                      "Answer again with one JSON object that fixes the error and follows the "
                      "schema and the rules of the system prompt: every group id listed above "
                      "in "
                      "exactly one issue, and no other ids.\n");
    buf_cstr(user);
    return user->oom ? -1 : 0;
}

int llm_prompt_triage(sh_buf *system, sh_buf *user, const fence *f, json_t *lines,
                      const char *source, const sh_scrubber *scrub)
{
    sh_buf_append_str(system, "You triage batches of log lines from a production "
                              "service, cheaply, before an "
                              "expensive analysis. Decide one of: \"ignore\" "
                              "(routine noise, nothing to do), "
                              "\"watch\" (a pattern that matters only when it "
                              "becomes frequent: propose a watch that "
                              "counts it), \"investigate\" (errors that need a "
                              "root-cause analysis now). A watch is "
                              "either {\"field\", \"op\", \"value\"} (op one of "
                              ">, >=, <, <=, ==, !=; for example "
                              "field \"status\", op \">=\", value 500) or "
                              "{\"template\"} (a log line with its variable "
                              "parts replaced by <*>), plus \"window_ms\" (1 to "
                              "2592000000) and \"threshold\" (1 to "
                              "1000000 events in the window).\n\n");
    fence_explain(f, system);
    sh_buf_append_str(system,
                      "\n\nAnswer with one JSON object and nothing else: {\"decision\": "
                      "\"ignore\"|\"watch\"|\"investigate\", \"reason\": \"<one sentence>\", "
                      "\"watch\": {...} (only with \"watch\")}.\n");
    sh_buf batch;
    sh_buf_init(&batch);
    if (source != NULL && source[0] != '\0') {
        sh_buf_append_str(&batch, "source: ");
        sh_buf_append(&batch, source, sh_utf8_truncate(source, strlen(source), 200));
        sh_buf_append_byte(&batch, '\n');
    }
    size_t i;
    json_t *line;
    json_array_foreach(lines, i, line)
    {
        if (!json_is_string(line))
            continue;
        size_t n =
            sh_utf8_truncate(json_string_value(line), json_string_length(line), TRIAGE_LINE_MAX);
        if (batch.len + n + 1 > TRIAGE_TOTAL_MAX)
            break;
        sh_buf_append(&batch, json_string_value(line), n);
        sh_buf_append_byte(&batch, '\n');
    }
    sh_buf_appendf(user, "A batch of %zu log line(s):\n", json_array_size(lines));
    fence_append(f, user, scrub, "log lines", batch.data ? batch.data : "", batch.len,
                 TRIAGE_TOTAL_MAX + 256);
    int oom = batch.oom;
    sh_buf_free(&batch);
    buf_cstr(system);
    buf_cstr(user);
    return system->oom || user->oom || oom ? -1 : 0;
}

/* ---------------------------------------------------------------- budgets */

/* a record's name: "llm_cost_usd", or a service's "llm_cost_usd:<service>" */
#define LLM_BUDGET_NAME_MAX (SERVICE_NAME_MAX + 32)

typedef struct mem_record {
    char name[LLM_BUDGET_NAME_MAX];
    double amount;
    int64_t at;
} mem_record;

#define MEM_MAX_RECORDS 100000
#define MEM_KEEP_S 86400

static pthread_mutex_t budget_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static mem_record *mem_records;
static size_t mem_n, mem_cap;

/* The state database when a state_dir is configured (opened on first
 * use), else NULL: budgets are then kept in memory. */
static state_db *ctx_state(port_ctx *ctx)
{
    if (ctx == NULL)
        return NULL;
    cmd_error e = {NULL, ""};
    if (state_ctx_ensure(ctx, &e) != 0)
        return NULL;
    return port_state(ctx);
}

static void mem_add(const char *name, double amount)
{
    int64_t now = port_now();
    pthread_mutex_lock(&mem_lock);
    size_t keep = 0;
    for (size_t i = 0; i < mem_n; i++)
        if (mem_records[i].at >= now - MEM_KEEP_S)
            mem_records[keep++] = mem_records[i];
    mem_n = keep;
    if (mem_n == MEM_MAX_RECORDS) {
        memmove(mem_records, mem_records + 1, (mem_n - 1) * sizeof(*mem_records));
        mem_n--;
    }
    if (mem_n == mem_cap) {
        size_t cap = mem_cap ? mem_cap * 2 : 64;
        mem_record *r = realloc(mem_records, cap * sizeof(*r));
        if (r == NULL) {
            pthread_mutex_unlock(&mem_lock);
            return;
        }
        mem_records = r;
        mem_cap = cap;
    }
    mem_record *rec = &mem_records[mem_n++];
    snprintf(rec->name, sizeof(rec->name), "%s", name);
    rec->amount = amount;
    rec->at = now;
    pthread_mutex_unlock(&mem_lock);
}

static double mem_sum(const char *name, long long window_s)
{
    int64_t now = port_now();
    double sum = 0;
    pthread_mutex_lock(&mem_lock);
    for (size_t i = 0; i < mem_n; i++)
        if (mem_records[i].at >= now - window_s && strcmp(mem_records[i].name, name) == 0)
            sum += mem_records[i].amount;
    pthread_mutex_unlock(&mem_lock);
    return sum;
}

void llm_budget_reset_memory(void)
{
    pthread_mutex_lock(&mem_lock);
    free(mem_records);
    mem_records = NULL;
    mem_n = mem_cap = 0;
    pthread_mutex_unlock(&mem_lock);
}

/* The names a record is counted under: name, and in a service's scope
 * also "name:<service>". Returns how many (1 or 2). */
static size_t budget_names(port_ctx *ctx, const char *name, char own[LLM_BUDGET_NAME_MAX])
{
    char service[SERVICE_NAME_MAX];
    if (ctx == NULL || service_current(ctx, service, sizeof(service))[0] == '\0')
        return 1;
    int n = snprintf(own, LLM_BUDGET_NAME_MAX, "%s:%s", name, service);
    return n > 0 && n < LLM_BUDGET_NAME_MAX ? 2 : 1;
}

void llm_budget_add(port_ctx *ctx, const char *name, double amount)
{
    char own[LLM_BUDGET_NAME_MAX];
    size_t n = budget_names(ctx, name, own);
    state_db *db = ctx_state(ctx);
    /* the global record and the service's in one transaction */
    if (db != NULL && state_txn_begin(db) == 0) {
        int ok = state_budget_add(db, name, amount) == 0 &&
                 (n == 1 || state_budget_add(db, own, amount) == 0);
        if (ok && state_txn_commit(db) == 0)
            return;
        if (!ok)
            state_txn_rollback(db);
    }
    mem_add(name, amount);
    if (n == 2)
        mem_add(own, amount);
}

double llm_budget_sum(port_ctx *ctx, const char *name, long long window_s)
{
    state_db *db = ctx_state(ctx);
    double sum = mem_sum(name, window_s);
    if (db != NULL)
        sum += state_budget_sum(db, name, (int64_t)window_s);
    return sum;
}

/* The global limits in a service's scope (service.global.llm.budget); the
 * service's own are cfg's. */
static void global_limits(port_ctx *ctx, llm_config *global)
{
    json_t *budget = service_global_get(ctx, "llm.budget");
    global->calls_per_hour = get_real(budget, "calls_per_hour", 0);
    global->max_input_tokens = get_long(budget, "max_input_tokens", 0, 0, 100000000);
    global->spend_per_day_usd = get_real(budget, "spend_per_day_usd", 0);
    json_decref(budget);
}

/* The reservation of one call: the checks, then the call recorded under
 * "llm_calls" (and the service's name) when none is over. 0, 1 over with
 * *over the first check over, -1 on a database error. */
static int reserve_db(state_db *db, state_budget_check *checks, size_t n, const char *own,
                      size_t *over)
{
    if (own == NULL)
        return state_budget_reserve(db, checks, n, "llm_calls", 1, over);
    if (state_txn_begin(db) != 0)
        return -1;
    int rc = state_budget_reserve(db, checks, n, "llm_calls", 1, over);
    if (rc == 0 && state_budget_add(db, own, 1) != 0)
        rc = -1;
    if (rc == 0)
        return state_txn_commit(db);
    state_txn_rollback(db);
    return rc;
}

static int over_input(const char *what, long est_tokens, long max, char *why, size_t whylen)
{
    if (max <= 0 || est_tokens <= max)
        return 0;
    snprintf(why, whylen,
             "budget: the prompt needs about %ld input tokens, over "
             "%s.max_input_tokens (%ld)",
             est_tokens, what, max);
    return 1;
}

int llm_budget_reserve(port_ctx *ctx, const llm_config *cfg, long est_tokens, char *why,
                       size_t whylen)
{
    char service[SERVICE_NAME_MAX] = "", own_calls[LLM_BUDGET_NAME_MAX],
         own_cost[LLM_BUDGET_NAME_MAX], label[SERVICE_NAME_MAX + 32];
    int scoped = ctx != NULL && service_current(ctx, service, sizeof(service))[0] != '\0' &&
                 budget_names(ctx, "llm_calls", own_calls) == 2 &&
                 budget_names(ctx, "llm_cost_usd", own_cost) == 2;
    llm_config global = *cfg;
    if (scoped)
        global_limits(ctx, &global);
    snprintf(label, sizeof(label), "services.%s.llm.budget", service);
    if (over_input("llm.budget", est_tokens, global.max_input_tokens, why, whylen) ||
        (scoped && over_input(label, est_tokens, cfg->max_input_tokens, why, whylen)))
        return 1;
    double est_cost = (double)est_tokens * cfg->price_in_per_mtok / 1e6;
    /* the global limits over every service's use, then the service's own
     * over its use */
    state_budget_check checks[4] = {
        {"llm_calls", 3600, global.calls_per_hour > 0, global.calls_per_hour, 1, 0},
        {"llm_cost_usd", 86400, global.spend_per_day_usd > 0, global.spend_per_day_usd, est_cost,
         0},
        {own_calls, 3600, cfg->calls_per_hour > 0, cfg->calls_per_hour, 1, 0},
        {own_cost, 86400, cfg->spend_per_day_usd > 0, cfg->spend_per_day_usd, est_cost, 0},
    };
    size_t n = scoped ? 4 : 2;
    size_t over = 0;
    int rc = -1;
    pthread_mutex_lock(&budget_lock);
    /* records kept in memory (no state, or a write that failed) count too */
    double mem[4];
    for (size_t i = 0; i < n; i++) {
        mem[i] = mem_sum(checks[i].name, checks[i].window_s);
        checks[i].limit -= mem[i];
    }
    state_db *db = ctx_state(ctx);
    if (db != NULL)
        rc = reserve_db(db, checks, n, scoped ? own_calls : NULL, &over);
    if (rc < 0) {
        /* in memory: this process's lock makes the check and the record one step */
        rc = 0;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            checks[i].sum = 0;
            if (checks[i].limited && checks[i].next > checks[i].limit) {
                over = i;
                rc = 1;
            }
        }
        if (rc == 0) {
            mem_add("llm_calls", 1);
            if (scoped)
                mem_add(own_calls, 1);
        }
    }
    pthread_mutex_unlock(&budget_lock);
    if (rc != 1)
        return rc;
    const char *what = over < 2 ? "llm.budget" : label;
    const llm_config *limits = over < 2 ? &global : cfg;
    if (over % 2 == 0)
        snprintf(why, whylen, "budget: %.0f call(s) in the last hour reach %s.calls_per_hour (%g)",
                 checks[over].sum + mem[over], what, limits->calls_per_hour);
    else
        snprintf(why, whylen,
                 "budget: $%.4f spent in the last 24 h plus about $%.4f for this "
                 "call is over %s.spend_per_day_usd ($%.2f)",
                 checks[over].sum + mem[over], checks[over].next, what, limits->spend_per_day_usd);
    return rc;
}

double llm_budget_record(port_ctx *ctx, const llm_config *cfg, const llm_reply *reply)
{
    double cost = (double)reply->input_tokens * cfg->price_in_per_mtok / 1e6 +
                  (double)reply->output_tokens * cfg->price_out_per_mtok / 1e6;
    if (reply->input_tokens > 0)
        llm_budget_add(ctx, "llm_input_tokens", (double)reply->input_tokens);
    if (reply->output_tokens > 0)
        llm_budget_add(ctx, "llm_output_tokens", (double)reply->output_tokens);
    if (cost > 0)
        llm_budget_add(ctx, "llm_cost_usd", cost);
    return cost;
}
