/*
 * Tickets (ticket.h, docs/state.md): the local store or GitHub Issues.
 *
 * ticket_upsert runs as a job keyed by the issue's fingerprints and a
 * digest of its content, so a retried identical request returns the first
 * answer instead of acting twice. It comments on the open ticket of any of
 * the fingerprints (found locally, then on GitHub by label) and creates a
 * ticket only when there is none. Every text that leaves the machine is
 * scrubbed and bounded; every create and comment is audited.
 */
#include "ticket.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "fence.h"
#include "http.h"
#include "self_heal/common.h"
#include "self_heal/scrub.h"
#include "state.h"

#define TICKET_MAX_GROUPS 64
#define TICKET_FP_MAX 40 /* "self-heal:" + 40 fits GitHub's 50-character label limit */
#define TICKET_ROOT_MAX 4096
#define TICKET_FIX_MAX 8192
#define TICKET_FILES_MAX 50
#define TICKET_PATH_MAX 512
#define TICKET_TITLE_MAX 120
#define TICKET_SAMPLE_MAX 2000
#define TICKET_STACK_MAX 3000
#define TICKET_STACK_LINES 15
#define TICKET_SERVICES_MAX 10
#define TICKET_KEY_LEN 80
#define GH_URL_MAX 2048
#define GH_TOKEN_MAX 512
#define GH_REPLY_MAX (1024 * 1024)
#define GH_SEARCH_PER_PAGE "20"

/* ------------------------------------------------------------ request */

typedef struct ticket_req {
    json_t *issue;        /* borrowed */
    json_t *fps;          /* sorted, unique fingerprints (owned) */
    const char *severity; /* borrowed from issue */
    const char *root;     /* borrowed from issue */
    long long count;      /* occurrences reported by this request */
    char key[TICKET_KEY_LEN];
} ticket_req;

static void ticket_req_free(ticket_req *r)
{
    json_decref(r->fps);
    r->fps = NULL;
}

static int valid_fp(const char *s, size_t len)
{
    return sh_token_ok(s, len, TICKET_FP_MAX, "_-.");
}

static int valid_severity(const char *s)
{
    return s != NULL && (strcmp(s, "critical") == 0 || strcmp(s, "high") == 0 ||
                         strcmp(s, "medium") == 0 || strcmp(s, "low") == 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The sorted unique fingerprints of group_ids, or NULL with err. */
static json_t *sorted_fps(json_t *ids, cmd_error *err)
{
    const char *v[TICKET_MAX_GROUPS];
    size_t n = json_array_size(ids);
    if (!json_is_array(ids) || n == 0 || n > TICKET_MAX_GROUPS) {
        cmd_error_set(err, "bad_args", "group_ids must be an array of 1..%d fingerprints",
                      TICKET_MAX_GROUPS);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(ids, i);
        if (!json_is_string(s) || !valid_fp(json_string_value(s), json_string_length(s))) {
            cmd_error_set(err, "bad_args",
                          "group_ids[%zu] must be 1..%d characters of [A-Za-z0-9_.-]", i,
                          TICKET_FP_MAX);
            return NULL;
        }
        v[i] = json_string_value(s);
    }
    qsort(v, n, sizeof(v[0]), cmp_str);
    json_t *out = json_array();
    for (size_t i = 0; out != NULL && i < n; i++)
        if (i == 0 || strcmp(v[i], v[i - 1]) != 0)
            json_array_append_new(out, json_string(v[i]));
    return out;
}

/* "ticket:<32 hex of the fingerprints>:<32 hex of the whole issue>". */
static int make_key(ticket_req *r)
{
    char a[SH_SHA256_HEX_LEN + 1], b[SH_SHA256_HEX_LEN + 1];
    sh_buf joined;
    sh_buf_init(&joined);
    size_t i;
    json_t *fp;
    json_array_foreach(r->fps, i, fp)
    {
        sh_buf_append_str(&joined, json_string_value(fp));
        sh_buf_append_byte(&joined, '\n');
    }
    char *canon = json_dumps(r->issue, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = -1;
    if (!joined.oom && canon != NULL && sh_sha256_hex(a, joined.data, joined.len) == 0 &&
        sh_sha256_hex(b, canon, strlen(canon)) == 0) {
        snprintf(r->key, sizeof(r->key), "ticket:%.32s:%.32s", a, b);
        rc = 0;
    }
    free(canon);
    sh_buf_free(&joined);
    return rc;
}

static int optional_string(json_t *issue, const char *name, size_t max, cmd_error *err)
{
    json_t *v = json_object_get(issue, name);
    if (v == NULL || json_is_null(v) || (json_is_string(v) && json_string_length(v) <= max))
        return 0;
    cmd_error_set(err, "bad_args", "%s must be a string of at most %zu bytes", name, max);
    return -1;
}

static int validate_files(json_t *issue, cmd_error *err)
{
    json_t *files = json_object_get(issue, "files_likely_involved");
    size_t i;
    json_t *f;
    if (files == NULL || json_is_null(files))
        return 0;
    if (!json_is_array(files) || json_array_size(files) > TICKET_FILES_MAX)
        goto bad;
    json_array_foreach(files, i, f)
    {
        if (!json_is_string(f) || json_string_length(f) > TICKET_PATH_MAX)
            goto bad;
    }
    return 0;
bad:
    cmd_error_set(err, "bad_args", "files_likely_involved must be at most %d paths of %d bytes",
                  TICKET_FILES_MAX, TICKET_PATH_MAX);
    return -1;
}

static long long group_count(json_t *issue)
{
    json_t *groups = json_object_get(issue, "groups");
    long long sum = 0;
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        json_t *c = json_object_get(g, "count");
        if (json_is_integer(c) && json_integer_value(c) > 0 &&
            json_integer_value(c) < (json_int_t)1 << 40)
            sum += (long long)json_integer_value(c);
    }
    return sum > 0 ? sum : 1;
}

static int ticket_req_init(ticket_req *r, json_t *issue, cmd_error *err)
{
    memset(r, 0, sizeof(*r));
    r->issue = issue;
    if (!json_is_object(issue)) {
        cmd_error_set(err, "bad_args", "ticket_upsert needs an issue object");
        return -1;
    }
    json_t *root = json_object_get(issue, "root_cause");
    json_t *sev = json_object_get(issue, "severity");
    json_t *conf = json_object_get(issue, "confidence");
    json_t *groups = json_object_get(issue, "groups");
    if (!json_is_string(root) || json_string_length(root) == 0 ||
        json_string_length(root) > TICKET_ROOT_MAX) {
        cmd_error_set(err, "bad_args", "root_cause must be a string of 1..%d bytes",
                      TICKET_ROOT_MAX);
        return -1;
    }
    if (!json_is_string(sev) || !valid_severity(json_string_value(sev))) {
        cmd_error_set(err, "bad_args", "severity must be critical, high, medium or low");
        return -1;
    }
    if (conf != NULL && !json_is_null(conf) &&
        (!json_is_number(conf) || json_number_value(conf) < 0 || json_number_value(conf) > 1)) {
        cmd_error_set(err, "bad_args", "confidence must be a number in 0..1");
        return -1;
    }
    if (groups != NULL && (!json_is_array(groups) || json_array_size(groups) > TICKET_MAX_GROUPS)) {
        cmd_error_set(err, "bad_args", "groups must be an array of at most %d objects",
                      TICKET_MAX_GROUPS);
        return -1;
    }
    if (optional_string(issue, "suggested_fix", TICKET_FIX_MAX, err) != 0 ||
        validate_files(issue, err) != 0)
        return -1;
    if ((r->fps = sorted_fps(json_object_get(issue, "group_ids"), err)) == NULL)
        return -1;
    r->root = json_string_value(root);
    r->severity = json_string_value(sev);
    r->count = group_count(issue);
    if (make_key(r) != 0) {
        cmd_error_set(err, "internal", "cannot hash the issue");
        ticket_req_free(r);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ text */

/* Appends text scrubbed, with invisible and control characters made
 * visible (fence_visible), cut to at most max bytes (at a code point). */
static void append_scrubbed(sh_buf *out, const sh_scrubber *s, const char *text, size_t len,
                            size_t max)
{
    sh_buf scrubbed, tmp;
    sh_buf_init(&scrubbed);
    sh_buf_init(&tmp);
    sh_scrub(s, text, len, &scrubbed, NULL);
    fence_visible(&tmp, scrubbed.data != NULL ? scrubbed.data : "", scrubbed.len);
    if (scrubbed.oom)
        tmp.oom = 1;
    sh_buf_free(&scrubbed);
    if (tmp.oom) {
        out->oom = 1;
    } else if (tmp.len > max) {
        sh_buf_append(out, tmp.data, sh_utf8_truncate(tmp.data, tmp.len, max));
        sh_buf_append_str(out, " [...]");
    } else {
        sh_buf_append(out, tmp.data, tmp.len);
    }
    sh_buf_free(&tmp);
}

/* Markdown prose from untrusted text: scrubbed, bounded, and with '@' and
 * '<' '>' as entities so it cannot mention people or hide HTML. */
static void append_prose(sh_buf *out, const sh_scrubber *s, const char *text, size_t max)
{
    sh_buf tmp;
    sh_buf_init(&tmp);
    append_scrubbed(&tmp, s, text, strlen(text), max);
    for (size_t i = 0; i < tmp.len; i++) {
        char c = tmp.data[i];
        if (c == '@')
            sh_buf_append_str(out, "&#64;");
        else if (c == '<')
            sh_buf_append_str(out, "&lt;");
        else if (c == '>')
            sh_buf_append_str(out, "&gt;");
        else
            sh_buf_append_byte(out, c);
    }
    if (tmp.oom)
        out->oom = 1;
    sh_buf_free(&tmp);
}

/* A fenced code block whose fence is longer than any backtick run inside. */
static void append_code(sh_buf *out, const sh_scrubber *s, const char *text, size_t len, size_t max)
{
    sh_buf tmp;
    sh_buf_init(&tmp);
    append_scrubbed(&tmp, s, text, len, max);
    fence_markdown(out, "text", tmp.data, tmp.len);
    sh_buf_append_byte(out, '\n');
    if (tmp.oom)
        out->oom = 1;
    sh_buf_free(&tmp);
}

static void format_ms(char *buf, size_t len, json_t *ms)
{
    if (!json_is_integer(ms) || json_integer_value(ms) <= 0) {
        snprintf(buf, len, "unknown");
        return;
    }
    time_t t = (time_t)(json_integer_value(ms) / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "unknown");
}

/* First/last seen over the groups, and their distinct services. */
static void append_seen_and_services(sh_buf *out, const sh_scrubber *s, json_t *groups)
{
    json_t *first = NULL, *last = NULL;
    const char *services[TICKET_SERVICES_MAX];
    size_t nserv = 0;
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        json_t *f = json_object_get(g, "first_seen");
        json_t *l = json_object_get(g, "last_seen");
        if (json_is_integer(f) &&
            (first == NULL || json_integer_value(f) < json_integer_value(first)))
            first = f;
        if (json_is_integer(l) &&
            (last == NULL || json_integer_value(l) > json_integer_value(last)))
            last = l;
        const char *svc = json_string_value(json_object_get(g, "service"));
        int seen = svc == NULL || strlen(svc) > 100;
        for (size_t k = 0; !seen && k < nserv; k++)
            seen = strcmp(services[k], svc) == 0;
        if (!seen && nserv < TICKET_SERVICES_MAX)
            services[nserv++] = svc;
    }
    char a[32], b[32];
    format_ms(a, sizeof(a), first);
    format_ms(b, sizeof(b), last);
    sh_buf_appendf(out, "**First seen:** %s · **Last seen:** %s\n\n", a, b);
    sh_buf_append_str(out, "**Services:** ");
    for (size_t k = 0; k < nserv; k++) {
        if (k > 0)
            sh_buf_append_str(out, ", ");
        append_prose(out, s, services[k], 100);
    }
    sh_buf_append_str(out, nserv == 0 ? "unknown\n\n" : "\n\n");
}

/* The first lines of a stack trace, at most TICKET_STACK_LINES. */
static size_t stack_excerpt_len(const char *stack)
{
    size_t len = 0;
    int lines = 0;
    while (stack[len] != '\0' && lines < TICKET_STACK_LINES) {
        if (stack[len] == '\n')
            lines++;
        len++;
    }
    return len;
}

static void append_sample_and_stack(sh_buf *out, const sh_scrubber *s, json_t *groups)
{
    json_t *g = json_array_get(groups, 0);
    const char *msg = json_string_value(json_object_get(g, "message"));
    if (msg == NULL)
        msg = json_string_value(json_array_get(json_object_get(g, "samples"), 0));
    if (msg != NULL) {
        sh_buf_append_str(out, "### Sample error\n\n");
        append_code(out, s, msg, strlen(msg), TICKET_SAMPLE_MAX);
    }
    const char *stack = json_string_value(json_object_get(g, "stacktrace"));
    if (stack != NULL && stack[0] != '\0') {
        sh_buf_append_str(out, "### Stack excerpt\n\n");
        append_code(out, s, stack, stack_excerpt_len(stack), TICKET_STACK_MAX);
    }
}

static void append_files(sh_buf *out, const sh_scrubber *s, json_t *files)
{
    size_t i;
    json_t *f;
    if (json_array_size(files) == 0)
        return;
    sh_buf_append_str(out, "### Files likely involved\n\n");
    json_array_foreach(files, i, f)
    {
        sh_buf_append_str(out, "- ");
        append_prose(out, s, json_string_value(f), TICKET_PATH_MAX);
        sh_buf_append_byte(out, '\n');
    }
    sh_buf_append_byte(out, '\n');
}

static void append_fingerprints(sh_buf *out, json_t *fps)
{
    size_t i;
    json_t *fp;
    sh_buf_append_str(out, "### Fingerprints\n\n");
    json_array_foreach(fps, i, fp) sh_buf_appendf(out, "- `%s`\n", json_string_value(fp));
    sh_buf_append_byte(out, '\n');
}

/* The issue body (markdown) for a new ticket; NULL when out of memory. */
static char *issue_body(const ticket_req *r, const sh_scrubber *s)
{
    sh_buf out;
    sh_buf_init(&out);
    json_t *issue = r->issue;
    json_t *groups = json_object_get(issue, "groups");
    json_t *conf = json_object_get(issue, "confidence");
    const char *fix = json_string_value(json_object_get(issue, "suggested_fix"));
    sh_buf_append_str(&out, "## Root cause\n\n");
    append_prose(&out, s, r->root, TICKET_ROOT_MAX);
    sh_buf_appendf(&out, "\n\n**Severity:** %s", r->severity);
    if (json_is_number(conf))
        sh_buf_appendf(&out, " · **Confidence:** %.2f", json_number_value(conf));
    sh_buf_appendf(&out, " · **Occurrences:** %lld across %zu fingerprint(s)\n\n", r->count,
                   json_array_size(r->fps));
    append_seen_and_services(&out, s, groups);
    append_sample_and_stack(&out, s, groups);
    if (fix != NULL && fix[0] != '\0') {
        sh_buf_append_str(&out, "### Suggested fix\n\n");
        append_prose(&out, s, fix, TICKET_FIX_MAX);
        sh_buf_append_str(&out, "\n\n");
    }
    append_files(&out, s, json_object_get(issue, "files_likely_involved"));
    append_fingerprints(&out, r->fps);
    sh_buf_appendf(&out, "<!-- self-heal:job=%s -->\n", r->key);
    sh_buf_append_byte(&out, '\0');
    if (out.oom) {
        sh_buf_free(&out);
        return NULL;
    }
    return out.data;
}

/* "[self-heal] <severity>: <first line of the root cause>", scrubbed. */
static char *issue_title(const ticket_req *r, const sh_scrubber *s)
{
    sh_buf out;
    sh_buf_init(&out);
    sh_buf_appendf(&out, "[self-heal] %s: ", r->severity);
    size_t line = strcspn(r->root, "\r\n");
    append_scrubbed(&out, s, r->root, line, TICKET_TITLE_MAX);
    sh_buf_append_byte(&out, '\0');
    if (out.oom) {
        sh_buf_free(&out);
        return NULL;
    }
    return out.data;
}

static char *comment_body(const ticket_req *r, long long total)
{
    sh_buf out;
    sh_buf_init(&out);
    json_t *groups = json_object_get(r->issue, "groups");
    json_t *last = NULL;
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        json_t *l = json_object_get(g, "last_seen");
        if (json_is_integer(l) &&
            (last == NULL || json_integer_value(l) > json_integer_value(last)))
            last = l;
    }
    char when[32];
    format_ms(when, sizeof(when), last);
    sh_buf_appendf(&out,
                   "Seen again: **%lld** new occurrence(s), **%lld** in total. Last seen: %s. "
                   "Severity: %s.\n\n",
                   r->count, total, when, r->severity);
    append_fingerprints(&out, r->fps);
    sh_buf_appendf(&out, "<!-- self-heal:job=%s -->\n", r->key);
    sh_buf_append_byte(&out, '\0');
    if (out.oom) {
        sh_buf_free(&out);
        return NULL;
    }
    return out.data;
}

/* ------------------------------------------------------------ GitHub */

typedef struct gh {
    char api[GH_URL_MAX / 2];
    char repo[256];
    char auth[GH_TOKEN_MAX + 32];
    const char *headers[6];
    long timeout_ms;
    int max_attempts;
    long backoff_base_ms;
    long backoff_max_ms;
    const atomic_int *cancel;
} gh;

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n-- > 0)
        *v++ = 0;
}

static int valid_repo(const char *repo)
{
    const char *slash = strchr(repo, '/');
    if (slash == NULL || slash == repo || slash[1] == '\0' || strchr(slash + 1, '/') != NULL)
        return 0;
    for (const char *p = repo; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.' || *p == '/'))
            return 0;
    return strcmp(slash + 1, ".") != 0 && strcmp(slash + 1, "..") != 0;
}

static int valid_token(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > GH_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (t[i] <= ' ' || t[i] > '~')
            return 0;
    return 1;
}

static int gh_init(gh *g, port_ctx *ctx, cmd_error *err)
{
    char env[128];
    memset(g, 0, sizeof(*g));
    port_config_string(ctx, "tickets.github.api", "https://api.github.com", g->api, sizeof(g->api));
    size_t n = strlen(g->api);
    while (n > 0 && g->api[n - 1] == '/')
        g->api[--n] = '\0';
    if (strncmp(g->api, "https://", 8) != 0 && strncmp(g->api, "http://", 7) != 0) {
        cmd_error_set(err, "config", "tickets.github.api must be an http(s) URL");
        return -1;
    }
    if (port_config_string(ctx, "tickets.github.repo", "", g->repo, sizeof(g->repo)) == NULL ||
        !valid_repo(g->repo)) {
        cmd_error_set(err, "config", "tickets.github.repo must be \"owner/name\"");
        return -1;
    }
    port_config_string(ctx, "tickets.github.token_env", "GITHUB_TOKEN", env, sizeof(env));
    const char *token = port_secret(env);
    if (token == NULL || !valid_token(token)) {
        cmd_error_set(err, "config",
                      "the environment variable %s named by "
                      "tickets.github.token_env is unset or not a token",
                      env);
        return -1;
    }
    snprintf(g->auth, sizeof(g->auth), "Authorization: Bearer %s", token);
    g->headers[0] = "Accept: application/vnd.github+json";
    g->headers[1] = "X-GitHub-Api-Version: 2022-11-28";
    g->headers[2] = "User-Agent: self-heal";
    g->headers[3] = "Content-Type: application/json";
    g->headers[4] = g->auth;
    g->headers[5] = NULL;
    g->timeout_ms = (long)port_config_int(ctx, "tickets.github.timeout_ms", 15000);
    g->max_attempts = (int)port_config_int(ctx, "tickets.github.max_attempts", 4);
    if (g->max_attempts < 1 || g->max_attempts > 10)
        g->max_attempts = 4;
    g->backoff_base_ms = (long)port_config_int(ctx, "tickets.github.backoff_base_ms", 500);
    g->backoff_max_ms = (long)port_config_int(ctx, "tickets.github.backoff_max_ms", 30000);
    g->cancel = &ctx->stopping;
    return 0;
}

static void gh_free(gh *g)
{
    wipe(g->auth, sizeof(g->auth));
}

static void gh_request(const gh *g, http_request *req, const char *method, const char *url,
                       const char *body, int attempts)
{
    memset(req, 0, sizeof(*req));
    req->method = method;
    req->url = url;
    req->headers = g->headers;
    req->body = body;
    req->body_len = body != NULL ? strlen(body) : 0;
    req->timeout_ms = g->timeout_ms;
    req->max_attempts = attempts;
    req->backoff_base_ms = g->backoff_base_ms;
    req->backoff_max_ms = g->backoff_max_ms;
    req->max_response = GH_REPLY_MAX;
    req->cancel = g->cancel;
}

/* Outcome of one GitHub call. */
typedef enum gh_outcome {
    GH_OK,        /* expected status, JSON parsed into *out */
    GH_RETRYABLE, /* 408, 429, 5xx or no answer */
    GH_FAILED     /* anything else; err set */
} gh_outcome;

static gh_outcome gh_call(const gh *g, const char *method, const char *path, json_t *body,
                          long expect, int attempts, json_t **out, long meta[2], cmd_error *err)
{
    char url[GH_URL_MAX];
    http_request req;
    http_response res;
    char *text = NULL;
    *out = NULL;
    if ((size_t)snprintf(url, sizeof(url), "%s%s", g->api, path) >= sizeof(url)) {
        cmd_error_set(err, "config", "GitHub URL too long");
        return GH_FAILED;
    }
    if (body != NULL && (text = json_dumps(body, JSON_COMPACT)) == NULL) {
        cmd_error_set(err, "internal", "out of memory");
        return GH_FAILED;
    }
    gh_request(g, &req, method, url, text, attempts);
    int rc = http_perform(&res, &req);
    free(text);
    gh_outcome outcome = GH_FAILED;
    if (meta != NULL) {
        meta[0] = res.status;
        meta[1] = res.retry_after_ms;
    }
    if (rc != 0) {
        cmd_error_set(err, "unavailable", "GitHub %s %s: no answer after %d attempt(s): %s", method,
                      path, res.attempts, res.error);
        outcome = GH_RETRYABLE;
    } else if (res.status == expect) {
        json_error_t jerr;
        *out = json_loadb(res.body, res.body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (*out != NULL)
            outcome = GH_OK;
        else
            cmd_error_set(err, "bad_reply",
                          "GitHub %s %s answered %ld with invalid JSON (line %d: %s)", method, path,
                          res.status, jerr.line, jerr.text);
    } else {
        cmd_error_set(err, res.status == 401 || res.status == 403 ? "denied" : "github",
                      "GitHub %s %s answered %ld after %d attempt(s)", method, path, res.status,
                      res.attempts);
        outcome =
            res.status == 408 || res.status == 429 || res.status >= 500 ? GH_RETRYABLE : GH_FAILED;
    }
    http_response_free(&res);
    return outcome;
}

/* A GitHub issue reply: {number > 0, html_url: http(s) string}. */
static int gh_issue_fields(json_t *issue, char *number, size_t numlen, const char **url)
{
    json_t *num = json_object_get(issue, "number");
    json_t *html = json_object_get(issue, "html_url");
    if (!json_is_integer(num) || json_integer_value(num) <= 0 || !json_is_string(html) ||
        json_string_length(html) > GH_URL_MAX ||
        (strncmp(json_string_value(html), "https://", 8) != 0 &&
         strncmp(json_string_value(html), "http://", 7) != 0))
        return -1;
    snprintf(number, numlen, "%lld", (long long)json_integer_value(num));
    *url = json_string_value(html);
    return 0;
}

/* The first open issue (not a pull request) labelled self-heal:<fp> for
 * any fingerprint, as a new reference; NULL when none (or on error, with
 * *failed set and err filled). */
static json_t *gh_find_by_label(const gh *g, json_t *fps, int *failed, cmd_error *err)
{
    size_t i;
    json_t *fp;
    *failed = 0;
    json_array_foreach(fps, i, fp)
    {
        char path[512];
        json_t *list = NULL;
        snprintf(path, sizeof(path),
                 "/repos/%s/issues?labels=self-heal%%3A%s&state=open&per_page=" GH_SEARCH_PER_PAGE,
                 g->repo, json_string_value(fp));
        if (gh_call(g, "GET", path, NULL, 200, g->max_attempts, &list, NULL, err) != GH_OK) {
            *failed = 1;
            return NULL;
        }
        if (!json_is_array(list)) {
            json_decref(list);
            cmd_error_set(err, "bad_reply", "GitHub issue search did not answer a list");
            *failed = 1;
            return NULL;
        }
        size_t k;
        json_t *item;
        json_array_foreach(list, k, item)
        {
            char num[32];
            const char *url;
            if (json_object_get(item, "pull_request") == NULL &&
                gh_issue_fields(item, num, sizeof(num), &url) == 0) {
                json_incref(item);
                json_decref(list);
                return item;
            }
        }
        json_decref(list);
    }
    return NULL;
}

static int body_has_marker(json_t *issue, const char *key)
{
    const char *body = json_string_value(json_object_get(issue, "body"));
    char marker[TICKET_KEY_LEN + 32];
    snprintf(marker, sizeof(marker), "self-heal:job=%s", key);
    return body != NULL && strstr(body, marker) != NULL;
}

/* Creates the issue. Each POST is one attempt; after an answer that may
 * hide a created issue (5xx, no answer) the labels are searched for this
 * job's marker before posting again, so a retry never duplicates. */
static json_t *gh_create(const gh *g, const ticket_req *r, json_t *payload, int *adopted,
                         cmd_error *err)
{
    char path[320];
    snprintf(path, sizeof(path), "/repos/%s/issues", g->repo);
    http_request backoff;
    gh_request(g, &backoff, "POST", path, NULL, 1);
    *adopted = 0;
    int ambiguous = 0;
    for (int attempt = 0; attempt < g->max_attempts; attempt++) {
        long meta[2] = {0, -1}; /* status, Retry-After ms */
        gh_outcome o = GH_RETRYABLE;
        int searched_ok = 1;
        if (attempt > 0 && ambiguous) {
            int failed = 0;
            json_t *found = gh_find_by_label(g, r->fps, &failed, err);
            if (found != NULL && body_has_marker(found, r->key)) {
                *adopted = 1;
                return found;
            }
            json_decref(found);
            searched_ok = !failed; /* unknown state: never post blindly */
        }
        if (searched_ok) {
            json_t *out = NULL;
            o = gh_call(g, "POST", path, payload, 201, 1, &out, meta, err);
            if (o == GH_OK)
                return out;
            /* A 429 created nothing; a 5xx or no answer may have. */
            ambiguous = o == GH_RETRYABLE && meta[0] != 429;
        }
        if (o == GH_FAILED || attempt + 1 >= g->max_attempts || (g->cancel && *g->cancel))
            return NULL;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double rnd = (double)(now.tv_nsec % 1000000) / 1000000.0; /* jitter only */
        port_sleep_ms(http_backoff_ms(&backoff, attempt, meta[1], rnd), g->cancel);
    }
    return NULL;
}

static json_t *labels_for(json_t *fps)
{
    json_t *labels = json_array();
    size_t i;
    json_t *fp;
    json_array_append_new(labels, json_string("self-heal"));
    json_array_foreach(fps, i, fp)
    {
        char label[64];
        snprintf(label, sizeof(label), "self-heal:%s", json_string_value(fp));
        json_array_append_new(labels, json_string(label));
    }
    return labels;
}

/* ------------------------------------------------------------ upsert */

typedef struct upsert_env {
    port_ctx *ctx;
    state_db *db;
    audit_log *audit;
    const sh_scrubber *scrub;
    char backend[16];
    int max_attempts; /* failed runs of one job before it is escalated */
    int64_t job_id;
} upsert_env;

static void audit_ticket(upsert_env *env, const char *action, json_t *result)
{
    json_t *f = json_pack(
        "{s:O, s:O, s:O, s:O, s:O, s:O, s:I}", "ticket_id", json_object_get(result, "ticket_id"),
        "backend", json_object_get(result, "backend"), "external_id",
        json_object_get(result, "external_id"), "url", json_object_get(result, "url"),
        "fingerprints", json_object_get(result, "fingerprints"), "count",
        json_object_get(result, "count"), "job_id", (json_int_t)env->job_id);
    if (f == NULL || audit_append(env->audit, action, f) != 0)
        json_object_set_new(result, "audit_failed", json_true());
    json_decref(f);
}

static json_t *result_of(json_t *ticket, const char *backend, int created, int commented,
                         json_t *fps)
{
    return json_pack("{s:O, s:s, s:O, s:O, s:b, s:b, s:O, s:O}", "ticket_id",
                     json_object_get(ticket, "id"), "backend", backend, "url",
                     json_object_get(ticket, "url"), "external_id",
                     json_object_get(ticket, "external_id"), "created", created, "commented",
                     commented, "count", json_object_get(ticket, "count"), "fingerprints", fps);
}

/* Fingerprints of r not yet on the ticket. */
static json_t *new_fingerprints(json_t *ticket, json_t *fps)
{
    json_t *have = json_object_get(ticket, "fingerprints");
    json_t *out = json_array();
    size_t i, k;
    json_t *fp, *h;
    json_array_foreach(fps, i, fp)
    {
        int seen = 0;
        json_array_foreach(have, k, h) seen = seen || json_equal(h, fp);
        if (!seen)
            json_array_append(out, fp);
    }
    return out;
}

static int gh_comment(upsert_env *env, const ticket_req *r, const char *number, long long total,
                      json_t *added, cmd_error *err)
{
    gh g;
    char path[320];
    json_t *out = NULL;
    if (gh_init(&g, env->ctx, err) != 0)
        return -1;
    char *body = comment_body(r, total);
    json_t *payload = body != NULL ? json_pack("{s:s}", "body", body) : NULL;
    free(body);
    snprintf(path, sizeof(path), "/repos/%s/issues/%s/comments", g.repo, number);
    int rc = payload != NULL && gh_call(&g, "POST", path, payload, 201, g.max_attempts, &out, NULL,
                                        err) == GH_OK
                 ? 0
                 : -1;
    if (rc == 0 && !json_is_integer(json_object_get(out, "id"))) {
        cmd_error_set(err, "bad_reply", "GitHub comment reply has no integer id");
        rc = -1;
    }
    json_decref(payload);
    json_decref(out);
    if (rc == 0 && json_array_size(added) > 0) {
        snprintf(path, sizeof(path), "/repos/%s/issues/%s/labels", g.repo, number);
        json_t *labels = json_pack("{s:o}", "labels", labels_for(added));
        if (gh_call(&g, "POST", path, labels, 200, g.max_attempts, &out, NULL, err) == GH_OK)
            json_decref(out);
        /* A label that could not be added is not fatal: the local store
         * links the fingerprint either way. */
        json_decref(labels);
    }
    gh_free(&g);
    return rc;
}

/* Comments on an open ticket with the new counts. */
static json_t *comment_existing(upsert_env *env, const ticket_req *r, json_t *ticket,
                                cmd_error *err)
{
    long long total = (long long)json_integer_value(json_object_get(ticket, "count")) + r->count;
    int64_t id = (int64_t)json_integer_value(json_object_get(ticket, "id"));
    const char *backend = json_string_value(json_object_get(ticket, "backend"));
    json_t *added = new_fingerprints(ticket, r->fps);
    if (backend != NULL && strcmp(backend, "github") == 0 &&
        gh_comment(env, r, json_string_value(json_object_get(ticket, "external_id")), total, added,
                   err) != 0) {
        json_decref(added);
        return NULL;
    }
    if (state_ticket_update(env->db, id, NULL, total) != 0 ||
        (json_array_size(added) > 0 && state_ticket_add_fingerprints(env->db, id, added) != 0)) {
        json_decref(added);
        cmd_error_set(err, "state", "cannot update ticket %lld", (long long)id);
        return NULL;
    }
    json_decref(added);
    json_t *fresh = state_ticket_get(env->db, id);
    json_t *result = fresh != NULL ? result_of(fresh, backend ? backend : "local", 0, 1,
                                               json_object_get(fresh, "fingerprints"))
                                   : NULL;
    json_decref(fresh);
    if (result == NULL) {
        cmd_error_set(err, "state", "cannot read ticket %lld", (long long)id);
        return NULL;
    }
    audit_ticket(env, "ticket_commented", result);
    return result;
}

static json_t *insert_local(upsert_env *env, const ticket_req *r, const char *backend,
                            const char *external_id, const char *url, const char *title,
                            cmd_error *err)
{
    int64_t id = 0;
    if (state_ticket_insert(env->db, r->fps, backend, external_id, url, title, r->severity,
                            r->count, &id) != 0) {
        cmd_error_set(err, "state", "cannot store the ticket");
        return NULL;
    }
    json_t *t = state_ticket_get(env->db, id);
    json_t *result = t != NULL ? result_of(t, backend, 1, 0, r->fps) : NULL;
    json_decref(t);
    if (result == NULL)
        cmd_error_set(err, "state", "cannot read the ticket back");
    return result;
}

/* A GitHub issue found by label: recorded locally, commented on unless it
 * is the one this very job created before an interruption. */
static json_t *adopt(upsert_env *env, const ticket_req *r, json_t *issue, const char *title,
                     cmd_error *err)
{
    char num[32];
    const char *url;
    if (gh_issue_fields(issue, num, sizeof(num), &url) != 0) {
        cmd_error_set(err, "bad_reply", "GitHub issue lacks number or html_url");
        return NULL;
    }
    int own = body_has_marker(issue, r->key);
    json_t *result = insert_local(env, r, "github", num, url, title, err);
    if (result == NULL)
        return NULL;
    json_object_set_new(result, "created", json_false());
    json_object_set_new(result, "adopted", json_true());
    if (!own && gh_comment(env, r, num, r->count, NULL, err) != 0) {
        json_decref(result);
        return NULL;
    }
    json_object_set_new(result, "commented", json_boolean(!own));
    audit_ticket(env, own ? "ticket_created" : "ticket_commented", result);
    return result;
}

static json_t *create_github(upsert_env *env, const ticket_req *r, const char *title,
                             cmd_error *err)
{
    gh g;
    json_t *result = NULL;
    json_t *payload = NULL;
    char *body = NULL;
    if (gh_init(&g, env->ctx, err) != 0)
        return NULL;
    int failed = 0;
    json_t *found = gh_find_by_label(&g, r->fps, &failed, err);
    if (failed)
        goto cleanup;
    if (found != NULL) {
        result = adopt(env, r, found, title, err);
        goto cleanup;
    }
    if ((body = issue_body(r, env->scrub)) == NULL ||
        (payload = json_pack("{s:s, s:s, s:o}", "title", title, "body", body, "labels",
                             labels_for(r->fps))) == NULL) {
        cmd_error_set(err, "internal", "out of memory");
        goto cleanup;
    }
    int adopted = 0;
    found = gh_create(&g, r, payload, &adopted, err);
    if (found == NULL)
        goto cleanup;
    char num[32];
    const char *url;
    if (gh_issue_fields(found, num, sizeof(num), &url) != 0) {
        cmd_error_set(err, "bad_reply", "GitHub create reply lacks a number or an html_url");
        goto cleanup;
    }
    result = insert_local(env, r, "github", num, url, title, err);
    if (result != NULL) {
        if (adopted)
            json_object_set_new(result, "adopted", json_true());
        audit_ticket(env, "ticket_created", result);
    }
cleanup:
    json_decref(found);
    json_decref(payload);
    free(body);
    gh_free(&g);
    return result;
}

static json_t *do_upsert(upsert_env *env, const ticket_req *r, cmd_error *err)
{
    size_t i;
    json_t *fp;
    json_array_foreach(r->fps, i, fp)
    {
        json_t *open = state_ticket_find_open(env->db, json_string_value(fp));
        if (open != NULL) {
            json_t *result = comment_existing(env, r, open, err);
            json_decref(open);
            return result;
        }
    }
    char *title = issue_title(r, env->scrub);
    if (title == NULL) {
        cmd_error_set(err, "internal", "out of memory");
        return NULL;
    }
    json_t *result;
    if (strcmp(env->backend, "github") == 0) {
        result = create_github(env, r, title, err);
    } else {
        result = insert_local(env, r, "local", NULL, NULL, title, err);
        if (result != NULL)
            audit_ticket(env, "ticket_created", result);
    }
    free(title);
    return result;
}

static long long job_attempts(state_db *db, int64_t job_id)
{
    json_t *job = state_job_get(db, job_id);
    long long n = (long long)json_integer_value(json_object_get(job, "attempts"));
    json_decref(job);
    return n;
}

/* Begins (or finds) the job; returns 0 to run it, 1 with *done set to the
 * stored result of a finished one, -1 with err. */
static int claim_job(upsert_env *env, const ticket_req *r, json_t **done, cmd_error *err)
{
    char status[16];
    int existed = 0;
    *done = NULL;
    json_t *input = json_pack("{s:O, s:s, s:I, s:s}", "fingerprints", r->fps, "severity",
                              r->severity, "count", (json_int_t)r->count, "backend", env->backend);
    int rc = state_job_begin(env->db, "ticket", r->key, input, &env->job_id, &existed, status,
                             sizeof(status));
    json_decref(input);
    if (rc != 0) {
        cmd_error_set(err, "state", "cannot record the ticket job");
        return -1;
    }
    if (strcmp(status, "done") == 0) {
        json_t *job = state_job_get(env->db, env->job_id);
        json_t *res = json_object_get(job, "result");
        if (json_is_object(res)) {
            *done = json_deep_copy(res);
            json_object_set_new(*done, "replayed", json_true());
        }
        json_decref(job);
        if (*done == NULL) {
            cmd_error_set(err, "state", "job %lld is done but has no result",
                          (long long)env->job_id);
            return -1;
        }
        return 1;
    }
    if (strcmp(status, "queued") != 0 && strcmp(status, "failed") != 0) {
        cmd_error_set(err, strcmp(status, "running") == 0 ? "in_progress" : "escalated",
                      "ticket job %lld is %s", (long long)env->job_id, status);
        return -1;
    }
    if (strcmp(status, "failed") == 0 && job_attempts(env->db, env->job_id) >= env->max_attempts) {
        json_t *why = json_pack("{s:s}", "reason", "too many failed attempts");
        state_job_transition(env->db, env->job_id, "failed", "escalated", why, NULL, NULL);
        json_decref(why);
        cmd_error_set(err, "escalated", "ticket job %lld failed %d times; escalated",
                      (long long)env->job_id, env->max_attempts);
        return -1;
    }
    if (state_job_transition(env->db, env->job_id, status, "running", NULL, NULL, NULL) != 0) {
        cmd_error_set(err, "in_progress", "ticket job %lld was taken by another worker",
                      (long long)env->job_id);
        return -1;
    }
    return 0;
}

json_t *ticket_upsert(port_ctx *ctx, json_t *issue, cmd_error *err)
{
    ticket_req r;
    upsert_env env;
    memset(&env, 0, sizeof(env));
    if (ticket_req_init(&r, issue, err) != 0)
        return NULL;
    json_t *result = NULL;
    port_config_string(ctx, "tickets.backend", "local", env.backend, sizeof(env.backend));
    if (strcmp(env.backend, "local") != 0 && strcmp(env.backend, "github") != 0) {
        cmd_error_set(err, "config", "tickets.backend must be \"local\" or \"github\"");
        goto cleanup;
    }
    env.max_attempts = (int)port_config_int(ctx, "tickets.max_attempts", 5);
    if (state_ctx_ensure(ctx, err) != 0)
        goto cleanup;
    env.ctx = ctx;
    env.db = port_state(ctx);
    env.audit = port_audit(ctx);
    env.scrub = port_scrubber(ctx);
    int claim = claim_job(&env, &r, &result, err);
    if (claim != 0)
        goto cleanup;
    result = do_upsert(&env, &r, err);
    if (result != NULL) {
        json_object_set_new(result, "job_id", json_integer((json_int_t)env.job_id));
        state_job_transition(env.db, env.job_id, "running", "done", NULL, result, NULL);
    } else {
        state_job_transition(env.db, env.job_id, "running", "failed", NULL, NULL, err->message);
    }
cleanup:
    ticket_req_free(&r);
    return result;
}

/* ------------------------------------------------------------ notes */

int ticket_github_call(port_ctx *ctx, const char *method, const char *repo_path, json_t *body,
                       long expect, json_t **out, cmd_error *err)
{
    gh g;
    char path[1024];
    *out = NULL;
    if (gh_init(&g, ctx, err) != 0)
        return -1;
    int rc = -1;
    if ((size_t)snprintf(path, sizeof(path), "/repos/%s%s", g.repo, repo_path) >= sizeof(path))
        cmd_error_set(err, "bad_args", "GitHub path too long");
    else if (gh_call(&g, method, path, body, expect, g.max_attempts, out, NULL, err) == GH_OK)
        rc = 0;
    gh_free(&g);
    return rc;
}

int ticket_github_repo(port_ctx *ctx, char *buf, size_t buflen)
{
    if (port_config_string(ctx, "tickets.github.repo", "", buf, buflen) == NULL || !valid_repo(buf))
        return -1;
    return 0;
}

int ticket_note(port_ctx *ctx, int64_t ticket_id, const char *status, const char *text,
                cmd_error *err)
{
    if (state_ctx_ensure(ctx, err) != 0)
        return -1;
    state_db *db = port_state(ctx);
    json_t *ticket = state_ticket_get(db, ticket_id);
    if (ticket == NULL) {
        cmd_error_set(err, "not_found", "no ticket %lld", (long long)ticket_id);
        return -1;
    }
    sh_buf body;
    sh_buf_init(&body);
    append_prose(&body, port_scrubber(ctx), text != NULL ? text : "", TICKET_FIX_MAX);
    sh_buf_append_byte(&body, '\0');
    int rc = body.oom ? -1 : state_ticket_note(db, ticket_id, body.data);
    if (rc == 0 && status != NULL)
        rc = state_ticket_update(db, ticket_id, status, -1);
    if (rc != 0)
        cmd_error_set(err, "state", "could not record the note on ticket %lld",
                      (long long)ticket_id);
    const char *backend = json_string_value(json_object_get(ticket, "backend"));
    const char *number = json_string_value(json_object_get(ticket, "external_id"));
    if (rc == 0 && backend != NULL && strcmp(backend, "github") == 0 && number != NULL) {
        char path[128];
        json_t *out = NULL;
        json_t *payload = json_pack("{s:s}", "body", body.data);
        snprintf(path, sizeof(path), "/issues/%.40s/comments", number);
        if (ticket_github_call(ctx, "POST", path, payload, 201, &out, err) != 0)
            rc = -1;
        json_decref(out);
        json_decref(payload);
        if (rc == 0 && status != NULL) {
            payload = json_pack("{s:s}", "state", status);
            snprintf(path, sizeof(path), "/issues/%.40s", number);
            if (ticket_github_call(ctx, "PATCH", path, payload, 200, &out, err) != 0)
                rc = -1;
            json_decref(out);
            json_decref(payload);
        }
    }
    audit_log *log = port_audit(ctx);
    json_t *fields = json_pack("{s:I, s:s?, s:b}", "ticket_id", (json_int_t)ticket_id, "status",
                               status, "ok", rc == 0);
    if (log != NULL && fields != NULL)
        audit_append(log, "ticket_note", fields);
    json_decref(fields);
    sh_buf_free(&body);
    json_decref(ticket);
    return rc;
}

/* ------------------------------------------------------------ commands */

static json_t *cmd_ticket_upsert(port_ctx *ctx, json_t *args, cmd_error *err)
{
    return ticket_upsert(ctx, args, err);
}

static json_t *cmd_tickets(port_ctx *ctx, json_t *args, cmd_error *err)
{
    json_t *status = json_object_get(args, "status");
    json_t *limit = json_object_get(args, "limit");
    if ((status != NULL && !json_is_null(status) &&
         (!json_is_string(status) || (strcmp(json_string_value(status), "open") != 0 &&
                                      strcmp(json_string_value(status), "closed") != 0))) ||
        (limit != NULL && (!json_is_integer(limit) || json_integer_value(limit) < 1 ||
                           json_integer_value(limit) > 1000))) {
        cmd_error_set(err, "bad_args", "status must be open or closed, limit 1..1000");
        return NULL;
    }
    if (state_ctx_ensure(ctx, err) != 0)
        return NULL;
    state_db *db = port_state(ctx);
    json_t *list = state_tickets_list(db, json_string_value(status),
                                      limit != NULL ? (int)json_integer_value(limit) : 100);
    if (list == NULL) {
        cmd_error_set(err, "state", "cannot read tickets");
        return NULL;
    }
    return json_pack("{s:o}", "tickets", list);
}

const cmd_def *ticket_commands(size_t *n)
{
    static const cmd_def cmds[] = {
        {"ticket_upsert", cmd_ticket_upsert, 0},
        {"tickets", cmd_tickets, 0},
        {"ticket_list", cmd_tickets, 0},
    };
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
