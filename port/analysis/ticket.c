/*
 * Tickets (ticket.h, docs/state.md): the local store or GitHub Issues.
 *
 * ticket_upsert runs as a job keyed by the issue's fingerprints and a
 * digest of its content, so a retried identical request returns the first
 * answer instead of acting twice. It comments on the open ticket of any of
 * the fingerprints (found locally, then on GitHub by label) and creates a
 * ticket only when there is none; requests of one fingerprint take turns.
 * The create or comment is a step (effect.h): the ticket's row or its
 * count (count = count + n), the audit record and the job's end commit
 * together, and a GitHub issue or comment made before a crash is found by
 * the job's marker instead of made again. Every text that leaves the
 * machine is scrubbed and bounded.
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
#include "effect.h"
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
#define TICKET_OWNERS_MAX 16
#define TICKET_OWNER_MAX 100
#define TICKET_KEY_LEN 80
#define GH_URL_MAX 2048
#define GH_TOKEN_MAX 512
#define GH_REPLY_MAX (1024 * 1024)
#define GH_SEARCH_PER_PAGE "20"
#define GH_COMMENTS_PER_PAGE "100"
#define GH_COMMENT_PAGES 10

/* ------------------------------------------------------------ request */

typedef struct ticket_req {
    json_t *issue;        /* borrowed */
    json_t *fps;          /* sorted, unique fingerprints (owned) */
    const char *severity; /* borrowed from issue */
    const char *root;     /* borrowed from issue */
    long long count;      /* occurrences reported by this request */
    json_t *owners;       /* the service's owners (service.owners), or NULL (owned) */
    char key[TICKET_KEY_LEN];
} ticket_req;

static void ticket_req_free(ticket_req *r)
{
    json_decref(r->fps);
    r->fps = NULL;
    json_decref(r->owners);
    r->owners = NULL;
}

/* A fingerprint, or a fired watch's "watch:<id>" (SelfHeal.Collector). */
static int valid_fp(const char *s, size_t len)
{
    return sh_token_ok(s, len, TICKET_FP_MAX, "_-.:");
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
                          "group_ids[%zu] must be 1..%d characters of [A-Za-z0-9_.:-]", i,
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

/* The earliest integer `key` (first_seen, last_seen: ms) of the groups,
 * or with `latest` the latest (borrowed), or NULL. */
static json_t *groups_seen(json_t *groups, const char *key, int latest)
{
    json_t *found = NULL;
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        json_t *v = json_object_get(g, key);
        if (json_is_integer(v) &&
            (found == NULL || (latest ? json_integer_value(v) > json_integer_value(found)
                                      : json_integer_value(v) < json_integer_value(found))))
            found = v;
    }
    return found;
}

/* First/last seen over the groups, and their distinct services. */
static void append_seen_and_services(sh_buf *out, const sh_scrubber *s, json_t *groups)
{
    json_t *first = groups_seen(groups, "first_seen", 0);
    json_t *last = groups_seen(groups, "last_seen", 1);
    const char *services[TICKET_SERVICES_MAX];
    size_t nserv = 0;
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
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

/* "**Owners:** a, b" when the service names its owners (as prose: an
 * owner is shown, never mentioned). */
static void append_owners(sh_buf *out, const sh_scrubber *s, json_t *owners)
{
    size_t i, n = 0;
    json_t *o;
    json_array_foreach(owners, i, o)
    {
        if (!json_is_string(o) || json_string_length(o) == 0 || n == TICKET_OWNERS_MAX)
            continue;
        sh_buf_append_str(out, n++ == 0 ? "**Owners:** " : ", ");
        append_prose(out, s, json_string_value(o), TICKET_OWNER_MAX);
    }
    if (n > 0)
        sh_buf_append_str(out, "\n\n");
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
    append_owners(&out, s, r->owners);
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

static char *comment_body(const ticket_req *r, long long total, audit_log *audit)
{
    sh_buf out;
    sh_buf_init(&out);
    json_t *last = groups_seen(json_object_get(r->issue, "groups"), "last_seen", 1);
    char when[32];
    format_ms(when, sizeof(when), last);
    sh_buf_appendf(&out,
                   "Seen again: **%lld** new occurrence(s), **%lld** in total. Last seen: %s. "
                   "Severity: %s.\n\n",
                   r->count, total, when, r->severity);
    append_fingerprints(&out, r->fps);
    audit_head_append(audit, &out, "", "\n\n"); /* the head, published outside the log */
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
    const sh_scrubber *scrub;
    char backend[16];
    int max_attempts; /* failed runs of one job before it is escalated */
    int64_t job_id;
} upsert_env;

/* The audit record of a ticket step: ids, fingerprints, counts, URLs. */
static json_t *audit_fields(int64_t job_id, json_t *result)
{
    return json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:I}", "ticket_id",
                     json_object_get(result, "ticket_id"), "backend",
                     json_object_get(result, "backend"), "external_id",
                     json_object_get(result, "external_id"), "url", json_object_get(result, "url"),
                     "fingerprints", json_object_get(result, "fingerprints"), "count",
                     json_object_get(result, "count"), "job_id", (json_int_t)job_id);
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

/* Posts the comment on issue `number` (it carries the job's marker). */
static int gh_comment(port_ctx *ctx, const ticket_req *r, const char *number, long long total,
                      cmd_error *err)
{
    gh g;
    char path[320];
    json_t *out = NULL;
    if (gh_init(&g, ctx, err) != 0)
        return -1;
    char *body = comment_body(r, total, port_audit(ctx));
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
    gh_free(&g);
    return rc;
}

/* Labels the issue with the fingerprints it did not cover. Adding a label
 * twice changes nothing, and one that could not be added is not fatal: the
 * local store links the fingerprint either way. */
static void gh_add_labels(port_ctx *ctx, const char *number, json_t *added)
{
    gh g;
    cmd_error ignored = {NULL, ""};
    if (json_array_size(added) == 0 || gh_init(&g, ctx, &ignored) != 0)
        return;
    char path[320];
    json_t *out = NULL;
    snprintf(path, sizeof(path), "/repos/%s/issues/%s/labels", g.repo, number);
    json_t *labels = json_pack("{s:o}", "labels", labels_for(added));
    if (gh_call(&g, "POST", path, labels, 200, g.max_attempts, &out, NULL, &ignored) == GH_OK)
        json_decref(out);
    json_decref(labels);
    gh_free(&g);
}

/* Whether issue `number` has a comment carrying the marker of `key` among
 * those changed since `since` (less ten minutes for clocks): 1 yes, 0 no,
 * -1 when GitHub could not say. */
static int gh_has_comment(port_ctx *ctx, const char *number, const char *key, int64_t since,
                          cmd_error *err)
{
    gh g;
    if (gh_init(&g, ctx, err) != 0)
        return -1;
    char when[32];
    time_t t = (time_t)(since > 600 ? since - 600 : 0);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(when, sizeof(when), "1970-01-01T00:00:00Z");
    int found = 0;
    for (int page = 1; page <= GH_COMMENT_PAGES && found == 0; page++) {
        char path[512];
        json_t *list = NULL;
        snprintf(path, sizeof(path),
                 "/repos/%s/issues/%s/comments?since=%s&per_page=" GH_COMMENTS_PER_PAGE "&page=%d",
                 g.repo, number, when, page);
        if (gh_call(&g, "GET", path, NULL, 200, g.max_attempts, &list, NULL, err) != GH_OK ||
            !json_is_array(list)) {
            if (list != NULL)
                cmd_error_set(err, "bad_reply", "GitHub comment list is not a list");
            json_decref(list);
            found = -1;
            break;
        }
        size_t i;
        json_t *c;
        json_array_foreach(list, i, c) found = found || body_has_marker(c, key);
        size_t n = json_array_size(list);
        json_decref(list);
        if (n < (size_t)atoi(GH_COMMENTS_PER_PAGE))
            break;
    }
    gh_free(&g);
    return found;
}

/* Upserts of the same fingerprint run one at a time in this process: the
 * look-up of its open ticket and what follows from it (a create, or a
 * comment whose text states the new total) belong together. Requests hold
 * the stripes of their fingerprints, taken in ascending order. */
#define TICKET_STRIPES 64
static pthread_mutex_t stripes[TICKET_STRIPES];
static pthread_once_t stripes_once = PTHREAD_ONCE_INIT;

static void stripes_init(void)
{
    for (size_t i = 0; i < TICKET_STRIPES; i++)
        pthread_mutex_init(&stripes[i], NULL);
}

static void fps_lock(json_t *fps, int lock)
{
    unsigned char used[TICKET_STRIPES] = {0};
    size_t i;
    json_t *fp;
    pthread_once(&stripes_once, stripes_init);
    json_array_foreach(fps, i, fp)
    {
        uint32_t h = 2166136261u; /* FNV-1a */
        for (const char *p = json_string_value(fp); p != NULL && *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
        used[h % TICKET_STRIPES] = 1;
    }
    for (size_t k = 0; k < TICKET_STRIPES; k++) {
        size_t s = lock ? k : TICKET_STRIPES - 1 - k;
        if (!used[s])
            continue;
        if (lock)
            pthread_mutex_lock(&stripes[s]);
        else
            pthread_mutex_unlock(&stripes[s]);
    }
}

/* The open ticket of any of the fingerprints, or NULL. */
static json_t *find_open(state_db *db, json_t *fps)
{
    size_t i;
    json_t *fp;
    json_array_foreach(fps, i, fp)
    {
        json_t *open = state_ticket_find_open(db, json_string_value(fp));
        if (open != NULL)
            return open;
    }
    return NULL;
}

/* In the transaction that holds the step's writes: the step's effect (its
 * result and audit record) and the job's end, committed together; then
 * the record is appended. Steals result; NULL (rolled back) on error. */
static json_t *finish(upsert_env *env, const char *key, const char *action, json_t *result,
                      cmd_error *err)
{
    int rc = -1;
    json_t *audit = NULL;
    if (result != NULL) {
        json_object_set_new(result, "job_id", json_integer((json_int_t)env->job_id));
        effect_audit_add(&audit, action, audit_fields(env->job_id, result));
        if (state_effect_done(env->db, key, env->job_id, result, audit) == 0 &&
            state_job_transition(env->db, env->job_id, "running", "done", NULL, result, NULL) == 0)
            rc = 0;
    }
    json_decref(audit);
    if (rc == 0)
        rc = state_txn_commit(env->db);
    else
        state_txn_rollback(env->db);
    if (rc != 0) {
        cmd_error_set(err, "state", "cannot record the ticket");
        json_decref(result);
        return NULL;
    }
    if (effect_flush(env->ctx, key) != 0)
        json_object_set_new(result, "audit_failed", json_true());
    return result;
}

/* A step found done: the job ends with the result stored with it. */
static json_t *replay_step(upsert_env *env, json_t *stored)
{
    if (stored == NULL)
        return NULL;
    state_job_transition(env->db, env->job_id, "running", "done", NULL, stored, NULL);
    json_object_set_new(stored, "replayed", json_true());
    return stored;
}

/* Records an intent; -1 with err, 1 with *out when the step is done. */
static int begin_step(upsert_env *env, const char *key, int *interrupted, int64_t *since,
                      json_t **out, cmd_error *err)
{
    json_t *stored = NULL;
    int e = effect_begin(env->ctx, key, env->job_id, &stored, since);
    *interrupted = e == EFFECT_INTERRUPTED;
    if (e == EFFECT_DONE) {
        *out = replay_step(env, stored);
        return 1;
    }
    if (e == EFFECT_ERROR) {
        cmd_error_set(err, "state", "cannot record the intent of %s", key);
        return -1;
    }
    return 0;
}

/* Comments on an open ticket with the new counts: count = count + new and
 * the step's record in one transaction. */
static json_t *comment_existing(upsert_env *env, const ticket_req *r, json_t *ticket,
                                cmd_error *err)
{
    char key[EFFECT_KEY_MAX + 1];
    effect_key(key, sizeof(key), r->key, "comment");
    long long total = (long long)json_integer_value(json_object_get(ticket, "count")) + r->count;
    int64_t id = (int64_t)json_integer_value(json_object_get(ticket, "id"));
    const char *backend = json_string_value(json_object_get(ticket, "backend"));
    const char *number = json_string_value(json_object_get(ticket, "external_id"));
    json_t *added = new_fingerprints(ticket, r->fps);
    json_t *result = NULL;
    if (backend != NULL && strcmp(backend, "github") == 0) {
        int interrupted = 0;
        int64_t since = 0;
        int b = begin_step(env, key, &interrupted, &since, &result, err);
        int posted = b != 0        ? -1
                     : interrupted ? gh_has_comment(env->ctx, number, r->key, since, err)
                                   : 0;
        if (b != 0 || posted < 0 || (!posted && gh_comment(env->ctx, r, number, total, err) != 0)) {
            json_decref(added);
            return result;
        }
        gh_add_labels(env->ctx, number, added);
    }
    effect_crash_point(key, "done");
    if (state_txn_begin(env->db) != 0) {
        json_decref(added);
        cmd_error_set(err, "state", "cannot update ticket %lld", (long long)id);
        return NULL;
    }
    if (state_ticket_add_count(env->db, id, r->count, NULL, NULL) == 0 &&
        (json_array_size(added) == 0 || state_ticket_add_fingerprints(env->db, id, added) == 0)) {
        json_t *fresh = state_ticket_get(env->db, id);
        if (fresh != NULL)
            result = result_of(fresh, backend ? backend : "local", 0, 1,
                               json_object_get(fresh, "fingerprints"));
        json_decref(fresh);
    }
    json_decref(added);
    return finish(env, key, "ticket_commented", result, err);
}

/* In the open transaction: the local row of a ticket. */
static json_t *insert_local(upsert_env *env, const ticket_req *r, const char *backend,
                            const char *external_id, const char *url, const char *title)
{
    int64_t id = 0;
    if (state_ticket_insert(env->db, r->fps, backend, external_id, url, title, r->severity,
                            r->count, &id) != 0)
        return NULL;
    json_t *t = state_ticket_get(env->db, id);
    json_t *result = t != NULL ? result_of(t, backend, 1, 0, r->fps) : NULL;
    json_decref(t);
    return result;
}

/* A GitHub issue found by label: recorded locally, commented on unless it
 * is the one this very job created before an interruption (or this job's
 * comment is on it already). */
static json_t *adopt(upsert_env *env, const ticket_req *r, json_t *issue, const char *title,
                     const char *key, int interrupted, int64_t since, cmd_error *err)
{
    char num[32];
    const char *url;
    if (gh_issue_fields(issue, num, sizeof(num), &url) != 0) {
        cmd_error_set(err, "bad_reply", "GitHub issue lacks number or html_url");
        return NULL;
    }
    int own = body_has_marker(issue, r->key);
    int posted = own || !interrupted ? own : gh_has_comment(env->ctx, num, r->key, since, err);
    if (posted < 0 || (!posted && gh_comment(env->ctx, r, num, r->count, err) != 0))
        return NULL;
    effect_crash_point(key, "done");
    if (state_txn_begin(env->db) != 0) {
        cmd_error_set(err, "state", "cannot store the ticket");
        return NULL;
    }
    json_t *result = insert_local(env, r, "github", num, url, title);
    if (result != NULL) {
        /* this job's own issue (a lost reply, a crash) is the one it created */
        json_object_set_new(result, "created", json_boolean(own));
        json_object_set_new(result, "adopted", json_true());
        json_object_set_new(result, "commented", json_boolean(!own));
    }
    return finish(env, key, own ? "ticket_created" : "ticket_commented", result, err);
}

static json_t *create_github(upsert_env *env, const ticket_req *r, const char *title,
                             cmd_error *err)
{
    char key[EFFECT_KEY_MAX + 1];
    effect_key(key, sizeof(key), r->key, "create");
    int interrupted = 0;
    int64_t since = 0;
    json_t *result = NULL;
    if (begin_step(env, key, &interrupted, &since, &result, err) != 0)
        return result;
    gh g;
    json_t *payload = NULL;
    char *body = NULL;
    if (gh_init(&g, env->ctx, err) != 0)
        return NULL;
    int failed = 0;
    json_t *found = gh_find_by_label(&g, r->fps, &failed, err);
    if (failed)
        goto cleanup;
    if (found != NULL) {
        result = adopt(env, r, found, title, key, interrupted, since, err);
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
    effect_crash_point(key, "done");
    if (state_txn_begin(env->db) != 0) {
        cmd_error_set(err, "state", "cannot store the ticket");
        goto cleanup;
    }
    result = insert_local(env, r, "github", num, url, title);
    if (result != NULL && adopted)
        json_object_set_new(result, "adopted", json_true());
    result = finish(env, key, "ticket_created", result, err);
cleanup:
    json_decref(found);
    json_decref(payload);
    free(body);
    gh_free(&g);
    return result;
}

static json_t *create_local(upsert_env *env, const ticket_req *r, const char *title, cmd_error *err)
{
    char key[EFFECT_KEY_MAX + 1];
    effect_key(key, sizeof(key), r->key, "create");
    effect_crash_point(key, "done");
    if (state_txn_begin(env->db) != 0) {
        cmd_error_set(err, "state", "cannot store the ticket");
        return NULL;
    }
    /* in the transaction: another process may have opened one meanwhile */
    json_t *open = find_open(env->db, r->fps);
    if (open != NULL) {
        state_txn_rollback(env->db);
        json_t *result = comment_existing(env, r, open, err);
        json_decref(open);
        return result;
    }
    return finish(env, key, "ticket_created", insert_local(env, r, "local", NULL, NULL, title),
                  err);
}

static json_t *do_upsert(upsert_env *env, const ticket_req *r, cmd_error *err)
{
    json_t *open = find_open(env->db, r->fps);
    if (open != NULL) {
        json_t *result = comment_existing(env, r, open, err);
        json_decref(open);
        return result;
    }
    char *title = issue_title(r, env->scrub);
    if (title == NULL) {
        cmd_error_set(err, "internal", "out of memory");
        return NULL;
    }
    json_t *result = strcmp(env->backend, "github") == 0 ? create_github(env, r, title, err)
                                                         : create_local(env, r, title, err);
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
    /* the time to ticket of the metrics (port/dash.c) starts there */
    json_t *first = groups_seen(json_object_get(r->issue, "groups"), "first_seen", 0);
    if (input != NULL && first != NULL)
        json_object_set(input, "first_seen", first);
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

/* Loads the backend and the state; 0 or -1 with err. */
static int env_init(upsert_env *env, port_ctx *ctx, cmd_error *err)
{
    memset(env, 0, sizeof(*env));
    port_config_string(ctx, "tickets.backend", "local", env->backend, sizeof(env->backend));
    if (strcmp(env->backend, "local") != 0 && strcmp(env->backend, "github") != 0) {
        cmd_error_set(err, "config", "tickets.backend must be \"local\" or \"github\"");
        return -1;
    }
    env->max_attempts = (int)port_config_int(ctx, "tickets.max_attempts", 5);
    if (state_ctx_ensure(ctx, err) != 0)
        return -1;
    env->ctx = ctx;
    env->db = port_state(ctx);
    env->scrub = port_scrubber(ctx);
    return 0;
}

json_t *ticket_upsert(port_ctx *ctx, json_t *issue, cmd_error *err)
{
    ticket_req r;
    upsert_env env;
    if (ticket_req_init(&r, issue, err) != 0)
        return NULL;
    json_t *result = NULL;
    if (env_init(&env, ctx, err) != 0)
        goto cleanup;
    r.owners = port_config_get(ctx, "service.owners");
    fps_lock(r.fps, 1);
    if (claim_job(&env, &r, &result, err) == 0) {
        result = do_upsert(&env, &r, err);
        if (result == NULL)
            state_job_transition(env.db, env.job_id, "running", "failed", NULL, NULL, err->message);
    }
    fps_lock(r.fps, 0);
cleanup:
    ticket_req_free(&r);
    return result;
}

json_t *ticket_recurrence(port_ctx *ctx, const char *fp, long long delta, json_t *last_seen,
                          cmd_error *err)
{
    upsert_env env;
    if (env_init(&env, ctx, err) != 0)
        return NULL;
    ticket_req r;
    memset(&r, 0, sizeof(r));
    r.fps = json_pack("[s]", fp);
    r.issue = json_pack("{s:[{s:O}]}", "groups", "last_seen",
                        last_seen != NULL ? last_seen : json_null());
    r.count = delta;
    json_t *reply = NULL, *ticket = NULL, *audit = NULL;
    fps_lock(r.fps, 1);
    /* the count and the decision to comment read and written in one
     * transaction, with the step's record */
    if (state_txn_begin(env.db) != 0) {
        cmd_error_set(err, "state", "cannot update the ticket");
        goto out;
    }
    ticket = state_ticket_find_open(env.db, fp);
    int64_t total = 0;
    int64_t id = (int64_t)json_integer_value(json_object_get(ticket, "id"));
    if (ticket == NULL || state_ticket_add_count(env.db, id, delta, NULL, &total) != 0) {
        state_txn_rollback(env.db);
        if (ticket == NULL)
            reply = json_pack("{s:n, s:b}", "ticket_id", "commented", 0);
        else
            cmd_error_set(err, "state", "cannot update ticket %lld", (long long)id);
        goto out;
    }
    long long before = (long long)(total - delta);
    int comment = total >= 2 * (before > 0 ? before : 1);
    const char *backend = json_string_value(json_object_get(ticket, "backend"));
    int github = backend != NULL && strcmp(backend, "github") == 0;
    snprintf(r.key, sizeof(r.key), "update:%lld:%lld", (long long)id, (long long)total);
    r.severity = json_string_value(json_object_get(ticket, "severity"));
    if (r.severity == NULL)
        r.severity = "unknown";
    json_t *fields = result_of(ticket, backend != NULL ? backend : "local", 0, 1,
                               json_object_get(ticket, "fingerprints"));
    json_object_set_new(fields, "count", json_integer((json_int_t)total));
    effect_audit_add(&audit, "recurrence",
                     json_pack("{s:s, s:I, s:I, s:b}", "fingerprint", fp, "ticket_id",
                               (json_int_t)id, "count", (json_int_t)total, "comment", comment));
    if (comment && !github) /* the local store: the record is the comment */
        effect_audit_add(&audit, "ticket_commented", audit_fields(0, fields));
    int rc = state_effect_done(env.db, r.key, 0, NULL, audit);
    json_decref(audit);
    audit = NULL;
    if (rc != 0 || state_txn_commit(env.db) != 0) {
        if (rc != 0)
            state_txn_rollback(env.db);
        json_decref(fields);
        cmd_error_set(err, "state", "cannot update ticket %lld", (long long)id);
        goto out;
    }
    effect_flush(ctx, r.key);
    int commented = comment && !github;
    if (comment && github) {
        /* not resumed after a crash (update is not a job): at most once */
        char key[EFFECT_KEY_MAX + 1];
        effect_key(key, sizeof(key), r.key, "comment");
        cmd_error cerr = {NULL, ""};
        if (effect_begin(ctx, key, 0, NULL, NULL) == EFFECT_NEW &&
            gh_comment(ctx, &r, json_string_value(json_object_get(ticket, "external_id")), total,
                       &cerr) == 0) {
            effect_audit_add(&audit, "ticket_commented", audit_fields(0, fields));
            effect_done(ctx, key, 0, NULL, audit);
            commented = 1;
        }
    }
    json_decref(fields);
    reply = json_pack("{s:I, s:b, s:I}", "ticket_id", (json_int_t)id, "commented", commented,
                      "count", (json_int_t)total);
out:
    fps_lock(r.fps, 0);
    json_decref(audit);
    json_decref(ticket);
    json_decref(r.issue);
    json_decref(r.fps);
    return reply;
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

/* The note on the GitHub issue: a comment (with the step's marker), then
 * the state. A step found interrupted looks for its comment first. */
static int note_github(port_ctx *ctx, const char *number, const char *key, int interrupted,
                       int64_t since, const char *status, const char *text, cmd_error *err)
{
    char path[128];
    json_t *out = NULL;
    int rc = 0;
    int posted = interrupted ? gh_has_comment(ctx, number, key, since, err) : 0;
    if (posted < 0)
        return -1;
    if (!posted) {
        sh_buf body;
        sh_buf_init(&body);
        sh_buf_append_str(&body, text);
        if (key != NULL)
            sh_buf_appendf(&body, "\n\n<!-- self-heal:job=%s -->\n", key);
        sh_buf_append_byte(&body, '\0');
        json_t *payload = body.oom ? NULL : json_pack("{s:s}", "body", body.data);
        snprintf(path, sizeof(path), "/issues/%.40s/comments", number);
        if (payload == NULL || ticket_github_call(ctx, "POST", path, payload, 201, &out, err) != 0)
            rc = -1;
        json_decref(out);
        json_decref(payload);
        sh_buf_free(&body);
    }
    if (rc == 0 && status != NULL) {
        json_t *payload = json_pack("{s:s}", "state", status);
        snprintf(path, sizeof(path), "/issues/%.40s", number);
        if (ticket_github_call(ctx, "PATCH", path, payload, 200, &out, err) != 0)
            rc = -1;
        json_decref(out);
        json_decref(payload);
    }
    return rc;
}

int ticket_note(port_ctx *ctx, int64_t ticket_id, const char *status, const char *text,
                cmd_error *err)
{
    return ticket_note_once(ctx, NULL, ticket_id, status, text, err);
}

int ticket_note_once(port_ctx *ctx, const char *key, int64_t ticket_id, const char *status,
                     const char *text, cmd_error *err)
{
    if (state_ctx_ensure(ctx, err) != 0)
        return -1;
    state_db *db = port_state(ctx);
    json_t *ticket = state_ticket_get(db, ticket_id);
    if (ticket == NULL) {
        cmd_error_set(err, "not_found", "no ticket %lld", (long long)ticket_id);
        return -1;
    }
    int64_t since = 0;
    int e = key != NULL ? effect_begin(ctx, key, 0, NULL, &since) : EFFECT_NEW;
    if (e == EFFECT_DONE || e == EFFECT_ERROR) {
        if (e == EFFECT_ERROR)
            cmd_error_set(err, "state", "cannot record the intent of %s", key);
        json_decref(ticket);
        return e == EFFECT_DONE ? 0 : -1;
    }
    sh_buf body;
    sh_buf_init(&body);
    append_prose(&body, port_scrubber(ctx), text != NULL ? text : "", TICKET_FIX_MAX);
    audit_head_append(port_audit(ctx), &body, "\n\n", ""); /* published outside the log */
    sh_buf_append_byte(&body, '\0');
    const char *backend = json_string_value(json_object_get(ticket, "backend"));
    const char *number = json_string_value(json_object_get(ticket, "external_id"));
    int rc = body.oom ? -1 : 0;
    if (rc == 0 && backend != NULL && strcmp(backend, "github") == 0 && number != NULL)
        rc = note_github(ctx, number, key, e == EFFECT_INTERRUPTED, since, status, body.data, err);
    /* the local note and state, kept even when GitHub failed, and the
     * step's record, in one transaction */
    json_t *fields = json_pack("{s:I, s:s?, s:b}", "ticket_id", (json_int_t)ticket_id, "status",
                               status, "ok", rc == 0);
    json_t *audit = NULL;
    if (key != NULL)
        effect_crash_point(key, "done");
    int local = body.oom || state_txn_begin(db) != 0 ? -1 : 0;
    if (local == 0) {
        if (state_ticket_note(db, ticket_id, body.data) != 0 ||
            (status != NULL && state_ticket_set_status(db, ticket_id, status) != 0))
            local = -1;
        if (local == 0 && key != NULL) {
            effect_audit_add(&audit, "ticket_note", json_incref(fields));
            local = state_effect_done(db, key, 0, NULL, audit) == 0 ? 0 : -1;
        }
        if (local == 0)
            local = state_txn_commit(db);
        else
            state_txn_rollback(db);
    }
    if (local != 0) {
        cmd_error_set(err, "state", "could not record the note on ticket %lld",
                      (long long)ticket_id);
        rc = -1;
    }
    if (key != NULL && local == 0) {
        effect_flush(ctx, key);
    } else if (key == NULL) {
        audit_log *log = port_audit(ctx);
        if (log != NULL && fields != NULL)
            audit_append(log, "ticket_note", fields);
    }
    json_decref(audit);
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
