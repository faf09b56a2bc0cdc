/*
 * Root-cause analysis (see analyze.h and docs/analysis.md): the
 * deterministic offline analyzer, validation of a model's reply, the LLM
 * path with one repair request, budgets and the offline fallback, and the
 * two-stage triage of log batches.
 */
#include "analyze.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audit.h"
#include "fence.h"
#include "llm.h"
#include "self_heal/scrub.h"
#include "state.h"
#include "self_heal/frames.h"

#define MAX_GROUPS 1000
#define MAX_ID 128
#define MAX_TOKENS 64
#define TEXT_SCAN_MAX 8192
#define MAX_ISSUES 200
#define ROOT_CAUSE_MAX 2000
#define FIX_MAX 2000
#define FILES_MAX 20
#define FILE_MAX 512
#define DEFAULT_WINDOW_MS 60000LL
#define MAX_WINDOW_MS 86400000LL
#define DEFAULT_PROMPT_MAX                                                                         \
    (400u * 1024u) /* bytes, when no max_input_tokens                                              \
                    */
#define TRIAGE_MAX_LINES 1000
#define TRIAGE_REASON_MAX 1000
#define WATCH_FIELD_MAX 128
#define WATCH_VALUE_MAX 1024
#define WATCH_WINDOW_MAX 2592000000LL
#define WATCH_THRESHOLD_MAX 1000000LL

/* ---------------------------------------------------------------- helpers */

static const char *const severities[] = {"low", "medium", "high", "critical"};

/* 0 low .. 3 critical; -1 unknown. Log levels map onto the same scale. */
static int severity_rank(const char *s)
{
    static const struct {
        const char *name;
        int rank;
    } map[] = {{"critical", 3}, {"fatal", 3},  {"emergency", 3}, {"alert", 3}, {"high", 2},
               {"error", 2},    {"medium", 1}, {"warning", 1},   {"warn", 1},  {"low", 0},
               {"notice", 0},   {"info", 0},   {"debug", 0}};
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcasecmp(s, map[i].name) == 0)
            return map[i].rank;
    return -1;
}

/* Appends at most max bytes of s, cut on a code point. */
static void append_bounded(sh_buf *b, const char *s, size_t len, size_t max)
{
    sh_buf_append(b, s, sh_utf8_truncate(s, len, max));
}

/* A short printable rendering of untrusted text for error messages. */
static void printable(char *dst, size_t cap, const char *s)
{
    size_t n = 0;
    for (; s != NULL && *s && n + 4 < cap && n < 64; s++)
        dst[n++] = (unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f && *s != '"' ? *s : '?';
    if (s != NULL && *s)
        dst[n++] = '.', dst[n++] = '.', dst[n++] = '.';
    dst[n] = '\0';
}

static int id_ok(const char *s, size_t len)
{
    return sh_token_ok(s, len, MAX_ID, "_-.:");
}

/* The groups argument: an array of at most MAX_GROUPS objects with unique
 * ids of [A-Za-z0-9_.:-], 1..128 bytes (ids are printed outside fences). */
static int groups_check(json_t *groups, char *why, size_t whylen)
{
    if (!json_is_array(groups)) {
        snprintf(why, whylen, "groups must be an array");
        return -1;
    }
    if (json_array_size(groups) > MAX_GROUPS) {
        snprintf(why, whylen, "at most %d groups per analysis", MAX_GROUPS);
        return -1;
    }
    json_t *seen = json_object();
    size_t i;
    json_t *g;
    int rc = 0;
    json_array_foreach(groups, i, g)
    {
        json_t *id = json_object_get(g, "id");
        if (!json_is_object(g) || !json_is_string(id) ||
            !id_ok(json_string_value(id), json_string_length(id))) {
            snprintf(why, whylen,
                     "group %zu needs an id of 1 to %d characters from A-Z a-z 0-9 _ "
                     ". : -",
                     i, MAX_ID);
            rc = -1;
            break;
        }
        if (json_object_get(seen, json_string_value(id)) != NULL) {
            snprintf(why, whylen, "group id %s appears twice", json_string_value(id));
            rc = -1;
            break;
        }
        json_object_set_new(seen, json_string_value(id), json_true());
    }
    json_decref(seen);
    return rc;
}

/* ---------------------------------------------------------------- resource
 * tokens */

static int is_sep(unsigned char c)
{
    return isspace(c) || c == '"' || c == '\'' || c == '`' || c == '(' || c == ')' || c == '[' ||
           c == ']' || c == '{' || c == '}' || c == '<' || c == '>' || c == ',' || c == ';' ||
           c == '|' || c == '=' || c == '\\';
}

static int is_quote(char c)
{
    return c == '"' || c == '\'' || c == '`';
}

static void add_token(json_t *set, const char *kind, const char *s, size_t n, int lower)
{
    if (json_object_size(set) >= MAX_TOKENS || n == 0 || n > 200)
        return;
    char tok[232];
    int k = snprintf(tok, sizeof(tok), "%s:", kind);
    if (k < 0 || (size_t)k + n + 1 > sizeof(tok))
        return;
    for (size_t i = 0; i < n; i++)
        tok[k + (int)i] = lower ? (char)tolower((unsigned char)s[i]) : s[i];
    tok[(size_t)k + n] = '\0';
    json_object_set_new(set, tok, json_true());
}

static int all_digits(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

static int is_ipv4(const char *s, size_t n)
{
    int parts = 0;
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == start || i - start > 3)
            return 0;
        parts++;
        if (i < n) {
            if (s[i] != '.' || parts == 4)
                return 0;
            i++;
            if (i == n)
                return 0;
        }
    }
    return parts == 4;
}

/* Last labels that make a bare dotted name a host name. Dotted names
 * with a port or inside a URL need not end in one of these. */
static const char *const host_suffixes[] = {
    "com",      "net",     "org",       "io",    "dev",     "app",  "co",          "cloud",
    "internal", "local",   "lan",       "svc",   "cluster", "corp", "home",        "int",
    "test",     "example", "edu",       "gov",   "info",    "biz",  "eu",          "ai",
    "me",       "sh",      "tech",      "site",  "online",  "xyz",  "localdomain", "intranet",
    "private",  "aws",     "amazonaws", "azure", "gcp"};

/* Last labels of file names (a.ex:12 is a file and a line, not a host). */
static const char *const source_exts[] = {
    "ex",    "exs",   "erl",  "hrl",  "js",  "mjs",  "cjs",  "ts",  "tsx",  "jsx",  "py",
    "rb",    "go",    "java", "kt",   "c",   "h",    "cc",   "cpp", "rs",   "php",  "cs",
    "scala", "swift", "vue",  "json", "yml", "yaml", "log",  "txt", "md",   "html", "heex",
    "eex",   "sql",   "beam", "lua",  "pl",  "sh",   "conf", "ini", "toml", "xml"};

static int label_in(const char *s, size_t n, const char *const *list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strlen(list[i]) == n && memcmp(s, list[i], n) == 0)
            return 1;
    return 0;
}

/* A lowercase dotted host name (db.internal, api.example.com; with
 * any_suffix, any last label of letters) or "localhost". */
static int is_hostname(const char *s, size_t n, int any_suffix)
{
    if (n == 9 && memcmp(s, "localhost", 9) == 0)
        return 1;
    if (n < 4 || n > 253)
        return 0;
    int dots = 0, letters = 0;
    size_t last = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (i == 0 || i + 1 == n || s[i - 1] == '.')
                return 0;
            dots++;
            last = i + 1;
        } else if (c >= 'a' && c <= 'z') {
            letters++;
        } else if (!(isdigit((unsigned char)c) || c == '-')) {
            return 0;
        }
    }
    if (dots == 0 || letters == 0 || n - last < 2)
        return 0;
    for (size_t i = last; i < n; i++)
        if (!(s[i] >= 'a' && s[i] <= 'z'))
            return 0;
    if (label_in(s + last, n - last, source_exts, sizeof(source_exts) / sizeof(source_exts[0])))
        return 0;
    return any_suffix || label_in(s + last, n - last, host_suffixes,
                                  sizeof(host_suffixes) / sizeof(host_suffixes[0]));
}

/* A bare service name before a port (postgres:5432, db:5432). */
static int is_host_label(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !(s[0] >= 'a' && s[0] <= 'z'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || isdigit((unsigned char)s[i]) || s[i] == '-' ||
              s[i] == '_'))
            return 0;
    return 1;
}

/* host[:port] -> host and hostport tokens; bare_label_ok inside a URL.
 * Returns 1 when it was one. */
static int host_tokens(json_t *set, const char *s, size_t n, int bare_label_ok)
{
    const char *colon = memchr(s, ':', n);
    size_t hn = colon ? (size_t)(colon - s) : n;
    const char *port = colon ? colon + 1 : NULL;
    size_t pn = colon ? n - hn - 1 : 0;
    if (port != NULL && (!all_digits(port, pn) || pn > 5))
        return 0;
    int host = is_ipv4(s, hn) || is_hostname(s, hn, bare_label_ok || port != NULL) ||
               ((bare_label_ok || port != NULL) && is_host_label(s, hn));
    if (!host)
        return 0;
    add_token(set, "host", s, hn, 1);
    if (port != NULL)
        add_token(set, "hostport", s, n, 1);
    return 1;
}

/* "/orders/123/items" becomes "/orders/<*>/items" with "*" for the segment:
 * numeric and long hex segments vary. */
static void path_token(json_t *set, const char *kind, const char *s, size_t n)
{
    char out[201];
    size_t o = 0, i = 0;
    while (i < n && s[i] != '?' && s[i] != '#' && o + 2 < sizeof(out)) {
        if (s[i] == '/') {
            out[o++] = '/';
            i++;
            continue;
        }
        size_t start = i;
        int hex = 1, digits = 1;
        while (i < n && s[i] != '/' && s[i] != '?' && s[i] != '#') {
            if (!isdigit((unsigned char)s[i]))
                digits = 0;
            if (!isxdigit((unsigned char)s[i]) && s[i] != '-')
                hex = 0;
            i++;
        }
        size_t seg = i - start;
        if (digits || (hex && seg >= 8)) {
            out[o++] = '*';
        } else {
            size_t take = seg < sizeof(out) - 1 - o ? seg : sizeof(out) - 1 - o;
            memcpy(out + o, s + start, take);
            o += take;
        }
    }
    while (o > 1 && out[o - 1] == '/')
        o--;
    if (o > 1)
        add_token(set, kind, out, o, 0);
}

static void url_tokens(json_t *set, const char *s, size_t n)
{
    const char *p = strstr(s, "://"); /* s is NUL-terminated by the caller */
    if (p == NULL || (size_t)(p - s) > n)
        return;
    const char *auth = p + 3, *end = s + n;
    const char *stop = auth;
    while (stop < end && *stop != '/' && *stop != '?' && *stop != '#')
        stop++;
    const char *at = auth;
    for (const char *q = auth; q < stop; q++)
        if (*q == '@')
            at = q + 1; /* drop userinfo */
    char host[260];
    size_t hn = (size_t)(stop - at);
    if (hn > 0 && hn < sizeof(host)) {
        for (size_t i = 0; i < hn; i++)
            host[i] = (char)tolower((unsigned char)at[i]);
        host[hn] = '\0';
        host_tokens(set, host, hn, 1);
    }
    if (stop < end && *stop == '/')
        path_token(set, "path", stop, (size_t)(end - stop));
}

static const char *const errno_names[] = {
    "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH",
    "ENOTFOUND",    "EAI_AGAIN",  "EPIPE",     "EADDRINUSE",   "ECONNABORTED",
    "EHOSTDOWN",    "ENOSPC",     "EMFILE",    "NXDOMAIN"};

static const struct {
    const char *needle;
    const char *name;
} dependencies[] = {{"postgre", "postgres"},      {"mysql", "mysql"},
                    {"myxql", "mysql"},           {"mariadb", "mysql"},
                    {"redis", "redis"},           {"redix", "redis"},
                    {"mongo", "mongodb"},         {"elasticsearch", "elasticsearch"},
                    {"opensearch", "opensearch"}, {"kafka", "kafka"},
                    {"rabbitmq", "rabbitmq"},     {"amqp", "rabbitmq"},
                    {"memcache", "memcached"},    {"cassandra", "cassandra"},
                    {"xandra", "cassandra"},      {"clickhouse", "clickhouse"},
                    {"sqlite", "sqlite"},         {"etcd", "etcd"},
                    {"zookeeper", "zookeeper"},   {"dynamodb", "dynamodb"}};

static const char *const table_stopwords[] = {
    "select",  "where",  "set",      "values",   "only",  "if",    "not",    "exists",
    "lateral", "the",    "a",        "an",       "this",  "that",  "server", "client",
    "host",    "remote", "upstream", "database", "cache", "queue", "disk",   "memory",
    "pool",    "to",     "at",       "in",       "on",    "by",    "with",   "for",
    "of",      "and",    "or",       "is",       "was"};

static int word_is(const char *s, size_t n, const char *w)
{
    return strlen(w) == n && strncasecmp(s, w, n) == 0;
}

/* Names of fields that carry one request's or one trace's id
 * ("request_id=F1a2...", "trace_id: 4bf9..."); compared without case,
 * '-' and '_' alike. */
static const char *const correlation_keys[] = {"request_id",    "requestid",     "x_request_id",
                                               "trace_id",      "traceid",       "correlation_id",
                                               "correlationid", "otel_trace_id", "traceparent"};

static int is_correlation_key(const char *s, size_t n)
{
    char k[32];
    while (n > 0 && s[n - 1] == ':')
        n--;
    if (n == 0 || n >= sizeof(k))
        return 0;
    for (size_t i = 0; i < n; i++)
        k[i] = s[i] == '-' ? '_' : (char)tolower((unsigned char)s[i]);
    for (size_t i = 0; i < sizeof(correlation_keys) / sizeof(correlation_keys[0]); i++)
        if (strlen(correlation_keys[i]) == n && memcmp(k, correlation_keys[i], n) == 0)
            return 1;
    return 0;
}

/* A correlation id: 6 to 128 bytes of letters, digits, '-', '_', '.',
 * with at least one digit (a word like "none" or "unknown" is no id). */
static void correlation_token(json_t *set, const char *s, size_t n)
{
    if (n < 6 || n > 128 || !sh_token_ok(s, n, 128, "-_."))
        return;
    for (size_t i = 0; i < n; i++)
        if (isdigit((unsigned char)s[i])) {
            add_token(set, "trace", s, n, 1);
            return;
        }
}

static int is_identifier(const char *s, size_t n)
{
    return n > 0 && (isalpha((unsigned char)s[0]) || s[0] == '_') && sh_token_ok(s, n, 128, "_.");
}

static void table_token(json_t *set, const char *s, size_t n)
{
    const char *dot = memchr(s, '.', n); /* schema.table -> table; u0.id is not a table */
    if (dot != NULL) {
        if (n - (size_t)(dot - s) - 1 == 0)
            return;
        n -= (size_t)(dot - s) + 1;
        s = dot + 1;
        if (memchr(s, '.', n) != NULL)
            return;
    }
    for (size_t i = 0; i < sizeof(table_stopwords) / sizeof(table_stopwords[0]); i++)
        if (word_is(s, n, table_stopwords[i]))
            return;
    add_token(set, "table", s, n, 1);
}

static int has_sql_verb(const char *text)
{
    return strstr(text, "SELECT ") || strstr(text, "INSERT ") || strstr(text, "UPDATE ") ||
           strstr(text, "DELETE ");
}

static void word_tokens(json_t *set, const char *w, size_t n, const char *prev, size_t prevn,
                        int quoted, int sql)
{
    char tmp[512];
    while (n > 0 && w[0] == ':')
        w++, n--;
    while (n > 0 && strchr(".:!?", w[n - 1]) != NULL)
        n--;
    if (n == 0 || n >= sizeof(tmp))
        return;
    memcpy(tmp, w, n);
    tmp[n] = '\0';
    if (prev != NULL && is_correlation_key(prev, prevn)) {
        correlation_token(set, tmp, n);
        return;
    }
    if (strstr(tmp, "://") != NULL) {
        url_tokens(set, tmp, n);
        return;
    }
    for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
        if (word_is(tmp, n, errno_names[i])) {
            add_token(set, "err", errno_names[i], strlen(errno_names[i]), 0);
            return;
        }
    if (prev != NULL && tmp[0] == '/' &&
        (word_is(prev, prevn, "GET") || word_is(prev, prevn, "POST") ||
         word_is(prev, prevn, "PUT") || word_is(prev, prevn, "PATCH") ||
         word_is(prev, prevn, "DELETE") || word_is(prev, prevn, "HEAD") ||
         word_is(prev, prevn, "OPTIONS"))) {
        path_token(set, "path", tmp, n);
        return;
    }
    if (prev != NULL && is_identifier(tmp, n)) {
        if ((sql && (word_is(prev, prevn, "from") || word_is(prev, prevn, "into") ||
                     word_is(prev, prevn, "join") || word_is(prev, prevn, "update"))) ||
            (quoted && (word_is(prev, prevn, "table") || word_is(prev, prevn, "relation")))) {
            table_token(set, tmp, n);
            return;
        }
    }
    const char *at = memchr(tmp, '@', n);
    if (at != NULL && at > tmp && is_identifier(tmp, (size_t)(at - tmp))) {
        /* an Erlang node (shop@10.0.1.5, or name@host after "node"); an
         * e-mail address is not a host */
        size_t hn = n - (size_t)(at - tmp) - 1;
        if (is_ipv4(at + 1, hn) ||
            (prev != NULL && (word_is(prev, prevn, "node") || word_is(prev, prevn, "nodes"))))
            host_tokens(set, at + 1, hn, 1);
        return;
    }
    if (host_tokens(set, tmp, n, 0))
        return;
    char lower[512];
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)tolower((unsigned char)tmp[i]);
    for (size_t i = 0; i < sizeof(dependencies) / sizeof(dependencies[0]); i++)
        if (strstr(lower, dependencies[i].needle) != NULL) {
            add_token(set, "db", dependencies[i].name, strlen(dependencies[i].name), 0);
            return;
        }
}

/* Resource tokens of a text: hosts/IPs, host:port, tables, endpoints,
 * dependencies (postgres, redis, ...), errno-style codes. */
static void text_tokens(json_t *set, const char *text, size_t len)
{
    if (text == NULL)
        return;
    if (len > TEXT_SCAN_MAX)
        len = TEXT_SCAN_MAX;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return;
    memcpy(copy, text, len);
    copy[len] = '\0';
    int sql = has_sql_verb(copy) != 0;
    const char *prev = NULL;
    size_t prevn = 0, i = 0;
    while (i < len) {
        while (i < len && is_sep((unsigned char)copy[i]))
            i++;
        size_t start = i;
        while (i < len && !is_sep((unsigned char)copy[i]))
            i++;
        if (i == start)
            break;
        int quoted = start > 0 && is_quote(copy[start - 1]);
        word_tokens(set, copy + start, i - start, prev, prevn, quoted, sql);
        prev = copy + start;
        prevn = i - start;
    }
    free(copy);
}

static void json_text_tokens(json_t *set, json_t *v)
{
    if (json_is_string(v))
        text_tokens(set, json_string_value(v), json_string_length(v));
    else if (json_is_object(v)) {
        json_t *m = json_object_get(v, "message");
        if (json_is_string(m))
            text_tokens(set, json_string_value(m), json_string_length(m));
    }
}

/* ---------------------------------------------------------------- offline
 * analyzer */

typedef struct member {
    json_t *g;
    const char *id;
    long long first;
    int has_first;
    const char *service;
    json_t *tokens;  /* resource and correlation tokens: {"host:db.internal": true, ...} */
    json_t *calls;   /* its in-app frames' functions: {"Orders.Repo.insert": true, ...} */
    char *top;       /* the first of them (where it was raised), or NULL */
    int unavailable; /* its text says something could not be reached */
    int issue;
} member;

typedef struct issue_info {
    size_t root; /* index into the member array */
    size_t n;
    json_t *shared;       /* evidence that linked members, in order */
    long long last_first; /* latest first_seen of its members */
} issue_info;

/* Words of a failure to reach something (compared without case, '_' as
 * a blank): connection errors, timeouts, refusals, closed or lost
 * connections, unavailable services. */
static const char *const unavailable_words[] = {
    "connect",     "timeout",  "timed out", "unavailable",  "not available",
    "unreachable", "refused",  "closed",    "reset",        "lost",
    "no route",    "econn",    "etimedout", "ehostunreach", "enetunreach",
    "enotfound",   "nxdomain", "503",       "502",          "504"};

static int says_unavailable(json_t *v)
{
    if (!json_is_string(v))
        return 0;
    size_t n = json_string_length(v);
    if (n > TEXT_SCAN_MAX)
        n = TEXT_SCAN_MAX;
    char *low = malloc(n + 1);
    if (low == NULL)
        return 0;
    const char *s = json_string_value(v);
    for (size_t i = 0; i < n; i++)
        low[i] = s[i] == '_' || s[i] == '\0' ? ' ' : (char)tolower((unsigned char)s[i]);
    low[n] = '\0';
    int found = 0;
    for (size_t i = 0; !found && i < sizeof(unavailable_words) / sizeof(unavailable_words[0]); i++)
        found = strstr(low, unavailable_words[i]) != NULL;
    free(low);
    return found;
}

/* 1 when text holds word whole (not inside a longer name), without case. */
static int text_names(json_t *text, const char *word)
{
    if (!json_is_string(text) || word == NULL)
        return 0;
    size_t wn = strlen(word), n = json_string_length(text);
    const char *s = json_string_value(text);
    if (wn < 3 || n > TEXT_SCAN_MAX)
        n = wn < 3 ? 0 : TEXT_SCAN_MAX;
    for (size_t i = 0; i + wn <= n; i++) {
        if (strncasecmp(s + i, word, wn) != 0)
            continue;
        int before = i > 0 && (isalnum((unsigned char)s[i - 1]) || strchr("_-.", s[i - 1]));
        int after = i + wn < n && (isalnum((unsigned char)s[i + wn]) || strchr("_-", s[i + wn]));
        if (!before && !after)
            return 1;
    }
    return 0;
}

static int member_cmp(const void *a, const void *b)
{
    const member *x = a, *y = b;
    if (x->has_first != y->has_first)
        return x->has_first ? -1 : 1;
    if (x->has_first && x->first != y->first)
        return x->first < y->first ? -1 : 1;
    return strcmp(x->id, y->id);
}

static void member_init(member *m, json_t *g)
{
    memset(m, 0, sizeof(*m));
    m->g = g;
    m->id = json_string_value(json_object_get(g, "id"));
    json_t *fs = json_object_get(g, "first_seen");
    if (json_is_number(fs)) {
        double d = json_number_value(fs);
        if (d >= 0 && d < 9e15) {
            m->has_first = 1;
            m->first = (long long)d;
        }
    }
    json_t *svc = json_object_get(g, "service");
    m->service = json_is_string(svc) && json_string_length(svc) > 0 ? json_string_value(svc) : NULL;
    m->tokens = json_object();
    json_text_tokens(m->tokens, json_object_get(g, "message"));
    json_text_tokens(m->tokens, json_object_get(g, "type"));
    json_t *samples = json_object_get(g, "samples");
    for (size_t i = 0; i < 2 && i < json_array_size(samples); i++)
        json_text_tokens(m->tokens, json_array_get(samples, i));
    json_t *path = json_object_get(g, "path");
    if (json_is_string(path) && json_string_value(path)[0] == '/')
        path_token(m->tokens, "at", json_string_value(path), json_string_length(path));
    json_t *ids = json_object_get(g, "trace_ids");
    for (size_t i = 0; i < 8 && i < json_array_size(ids); i++) {
        json_t *id = json_array_get(ids, i);
        if (json_is_string(id))
            correlation_token(m->tokens, json_string_value(id), json_string_length(id));
    }
    m->calls = json_object();
    m->unavailable = says_unavailable(json_object_get(g, "type")) ||
                     says_unavailable(json_object_get(g, "message"));
    m->issue = -1;
}

static void member_free(member *m)
{
    json_decref(m->tokens);
    json_decref(m->calls);
    free(m->top);
}

/* A loopback host alone says nothing: every service has one. A technology
 * name (db:) counts only between two failures to reach it (shared_tokens). */
static int token_weak(const char *key)
{
    return strcmp(key, "host:localhost") == 0 || strcmp(key, "host:127.0.0.1") == 0 ||
           strcmp(key, "host:0.0.0.0") == 0;
}

/* 1 when tokens hold key, or its counterpart: an endpoint called ("path:")
 * matches the same endpoint called or where an error was raised ("at:",
 * the request's path); two errors raised in one endpoint are not tied by
 * it. */
static int token_matches(json_t *tokens, const char *key)
{
    if (strncmp(key, "at:", 3) == 0) {
        char path[240];
        snprintf(path, sizeof(path), "path:%s", key + 3);
        return json_object_get(tokens, path) != NULL;
    }
    if (json_object_get(tokens, key) != NULL)
        return 1;
    if (strncmp(key, "path:", 5) == 0) {
        char at[240];
        snprintf(at, sizeof(at), "at:%s", key + 5);
        return json_object_get(tokens, at) != NULL;
    }
    return 0;
}

/* Resource and correlation tokens shared by a and b appended to out (at
 * most 8); returns how many. */
static int shared_tokens(const member *a, const member *b, json_t *out)
{
    int n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(a->tokens, key, v)
    {
        if (token_weak(key) || !token_matches(b->tokens, key))
            continue;
        /* a technology both use (postgres, redis) ties them only when
         * both failed to reach it */
        if (strncmp(key, "db:", 3) == 0 && !(a->unavailable && b->unavailable))
            continue;
        n++;
        int dup = 0;
        size_t i;
        json_t *s;
        json_array_foreach(out, i, s) dup |= strcmp(json_string_value(s), key) == 0;
        if (!dup && json_array_size(out) < 8)
            json_array_append_new(out, json_string(key));
    }
    return n;
}

/* A JSON frame object as an sh_frame (slices into the object's strings). */
static int frame_in_app(json_t *fr, sh_frame *f)
{
    memset(f, 0, sizeof(*f));
    json_t *file = json_object_get(fr, "file"), *mod = json_object_get(fr, "module"),
           *fn = json_object_get(fr, "function"), *app = json_object_get(fr, "app"),
           *line = json_object_get(fr, "line");
    if (!json_is_string(file) || json_string_length(file) == 0)
        return 0;
    f->kind = SH_FRAME_UNKNOWN;
    f->file = (sh_slice){json_string_value(file), json_string_length(file)};
    if (json_is_string(mod))
        f->module = (sh_slice){json_string_value(mod), json_string_length(mod)};
    if (json_is_string(fn))
        f->function = (sh_slice){json_string_value(fn), json_string_length(fn)};
    if (json_is_string(app))
        f->app = (sh_slice){json_string_value(app), json_string_length(app)};
    if (json_is_integer(line) && json_integer_value(line) > 0 &&
        json_integer_value(line) < 0xffffffffLL)
        f->line = (uint32_t)json_integer_value(line);
    json_t *in_app = json_object_get(fr, "in_app");
    if (json_is_boolean(in_app))
        return json_is_true(in_app);
    return sh_frame_is_in_app(f, NULL);
}

static void add_file(json_t *files, const sh_frame *f)
{
    sh_buf canon;
    sh_buf_init(&canon);
    sh_frame_file_canonical(&canon, f->file);
    if (!canon.oom && canon.len > 0 && canon.len <= FILE_MAX &&
        json_array_size(files) < FILES_MAX && memchr(canon.data, '\0', canon.len) == NULL) {
        int dup = 0;
        size_t i;
        json_t *s;
        json_array_foreach(files, i, s) dup |=
            json_string_length(s) == canon.len &&
            memcmp(json_string_value(s), canon.data, canon.len) == 0;
        if (!dup)
            json_array_append_new(files, json_stringn(canon.data, canon.len));
    }
    sh_buf_free(&canon);
}

/* Calls fn for each in-app frame of a group (its "frames", or, when it
 * has none or with_text, the first 32 frames of its "stacktrace" text as
 * well); first is 1 for the first of them. Returns how many it saw. */
static int group_walk(json_t *g, int with_text, void (*fn)(const sh_frame *f, int first, void *arg),
                      void *arg)
{
    int found = 0;
    json_t *frames = json_object_get(g, "frames");
    size_t i;
    json_t *fr;
    json_array_foreach(frames, i, fr)
    {
        sh_frame f;
        if (i >= 64 || !frame_in_app(fr, &f))
            continue;
        fn(&f, found++ == 0, arg);
    }
    if (found > 0 && !with_text)
        return found;
    json_t *st = json_object_get(g, "stacktrace");
    if (!json_is_string(st))
        return found;
    sh_frame parsed[32];
    size_t n = sh_frames_parse_text(parsed, 32, json_string_value(st), json_string_length(st));
    for (size_t k = 0; k < n; k++)
        if (sh_frame_is_in_app(&parsed[k], NULL))
            fn(&parsed[k], found++ == 0, arg);
    return found;
}

typedef struct files_walk {
    json_t *files;
    sh_frame *top;
} files_walk;

static void walk_file(const sh_frame *f, int first, void *arg)
{
    files_walk *w = arg;
    if (first && w->top != NULL)
        *w->top = *f;
    add_file(w->files, f);
}

/* In-app files of a group into files; the first in-app frame into *top
 * (slices into the group's strings). Returns how many in-app frames it
 * saw. */
static int group_files(json_t *g, json_t *files, sh_frame *top)
{
    files_walk w = {files, top};
    return group_walk(g, 0, walk_file, &w);
}

/* A frame's function as "Module.fun/2", or "file:fun" without a module;
 * empty when it names no function. */
static void call_name(sh_buf *b, const sh_frame *f)
{
    if (f->function.len == 0)
        return;
    if (f->module.len > 0)
        sh_buf_append(b, f->module.ptr, f->module.len);
    else
        sh_frame_file_canonical(b, f->file);
    sh_buf_append_byte(b, f->module.len > 0 ? '.' : ':');
    sh_buf_append(b, f->function.ptr, f->function.len);
}

static void walk_call(const sh_frame *f, int first, void *arg)
{
    member *m = arg;
    sh_buf name;
    sh_buf_init(&name);
    call_name(&name, f);
    if (!name.oom && name.len > 0 && name.len < 400 && memchr(name.data, '\0', name.len) == NULL &&
        json_object_size(m->calls) < MAX_TOKENS) {
        sh_buf_append_byte(&name, '\0');
        if (!name.oom) {
            json_object_set_new(m->calls, name.data, json_true());
            if (first && m->top == NULL)
                m->top = strdup(name.data);
        }
    }
    sh_buf_free(&name);
}

/* Collects the in-app functions of m's stack (member_init leaves them
 * empty). */
static void member_calls(member *m)
{
    group_walk(m->g, 1, walk_call, m);
}

static void add_evidence(json_t *out, const char *kind, const char *what)
{
    char key[420];
    snprintf(key, sizeof(key), "%s%s", kind, what);
    size_t i;
    json_t *s;
    json_array_foreach(out, i, s) if (strcmp(json_string_value(s), key) == 0) return;
    if (json_array_size(out) < 8)
        json_array_append_new(out, json_string(key));
}

/* What ties a and b to one cause, appended to out: resource tokens both
 * name (a host, an address, a table, an endpoint, a dependency both failed
 * to reach, an error code), one naming the other's service, a request or
 * trace id both carry, or a call between them (the
 * function one was raised in is on the other's stack, and the other was
 * raised elsewhere). Being in the same service, raised in the same
 * function or starting at the same time is not evidence. Returns how many
 * pieces it found. */
static int evidence(const member *a, const member *b, json_t *out)
{
    int n = shared_tokens(a, b, out);
    /* one names the other's service: a caller reporting its dependency */
    for (int k = 0; k < 2; k++) {
        const member *x = k ? b : a, *y = k ? a : b;
        if (x->service != NULL && (y->service == NULL || strcasecmp(x->service, y->service) != 0) &&
            (text_names(json_object_get(y->g, "message"), x->service) ||
             text_names(json_object_get(y->g, "type"), x->service))) {
            add_evidence(out, "service:", x->service);
            n++;
        }
    }
    if (a->top != NULL && b->top != NULL && strcmp(a->top, b->top) == 0)
        return n; /* raised in the same function: no call between them */
    if (a->top != NULL && json_object_get(b->calls, a->top) != NULL) {
        add_evidence(out, "call:", a->top);
        n++;
    } else if (b->top != NULL && json_object_get(a->calls, b->top) != NULL) {
        add_evidence(out, "call:", b->top);
        n++;
    }
    return n;
}

static const char *token_kind_text(const char *tok, const char **rest)
{
    static const struct {
        const char *prefix;
        const char *text;
    } kinds[] = {{"hostport:", "address "}, {"host:", "host "},
                 {"table:", "table "},      {"path:", "endpoint "},
                 {"at:", "endpoint "},      {"db:", "the dependency "},
                 {"err:", "error code "},   {"trace:", "request or trace id "},
                 {"call:", "a call of "},   {"service:", "the service "}};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t n = strlen(kinds[i].prefix);
        if (strncmp(tok, kinds[i].prefix, n) == 0) {
            *rest = tok + n;
            return kinds[i].text;
        }
    }
    *rest = tok;
    return "";
}

/* 1 when tokens hold "hostport:<host>:..." for the token "host:<host>". */
static int host_has_port(json_t *tokens, const char *tok)
{
    if (strncmp(tok, "host:", 5) != 0)
        return 0;
    size_t hn = strlen(tok + 5);
    size_t i;
    json_t *t;
    json_array_foreach(tokens, i, t)
    {
        const char *s = json_string_value(t);
        if (strncmp(s, "hostport:", 9) == 0 && strncmp(s + 9, tok + 5, hn) == 0 && s[9 + hn] == ':')
            return 1;
    }
    return 0;
}

/* "host db.internal, table users": at most max tokens, a host left out
 * when its host:port is there. */
static void append_resources(sh_buf *b, json_t *tokens, size_t max)
{
    size_t i, shown = 0;
    json_t *t;
    json_array_foreach(tokens, i, t)
    {
        if (shown >= max)
            break;
        if (host_has_port(tokens, json_string_value(t)))
            continue;
        const char *rest;
        const char *kind = token_kind_text(json_string_value(t), &rest);
        sh_buf_append_str(b, shown++ == 0 ? "" : ", ");
        sh_buf_append_str(b, kind);
        append_bounded(b, rest, strlen(rest), 200);
    }
}

static void append_group_title(sh_buf *b, json_t *g)
{
    json_t *type = json_object_get(g, "type");
    json_t *msg = json_object_get(g, "message");
    if (!json_is_string(msg) || json_string_length(msg) == 0)
        msg = json_object_get(g, "normalized");
    if (json_is_string(type) && json_string_length(type) > 0) {
        append_bounded(b, json_string_value(type), json_string_length(type), 200);
        if (json_is_string(msg) && json_string_length(msg) > 0)
            sh_buf_append_str(b, ": ");
    }
    if (json_is_string(msg) && json_string_length(msg) > 0) {
        /* first line only */
        const char *s = json_string_value(msg);
        const char *nl = memchr(s, '\n', json_string_length(msg));
        size_t n = nl ? (size_t)(nl - s) : json_string_length(msg);
        append_bounded(b, s, n, 300);
    }
    if (!json_is_string(type) && !json_is_string(msg))
        sh_buf_appendf(b, "error group %s", json_string_value(json_object_get(g, "id")));
}

static json_t *buf_string(sh_buf *b, size_t max)
{
    size_t n = sh_utf8_truncate(b->data ? b->data : "", b->len, max);
    return json_stringn(b->data ? b->data : "", n);
}

static void iso(char *dst, size_t cap, long long ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&s, &tm) == NULL || strftime(dst, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(dst, cap, "unknown");
}

static json_t *dependency_list(json_t *tokens)
{
    json_t *out = json_array();
    const char *key;
    json_t *v;
    /* address first, then host, then dependency (postgres, redis, ...) */
    static const char *const order[] = {"hostport:", "host:", "db:"};
    for (size_t k = 0; k < 3; k++)
        json_object_foreach(tokens, key, v)
        {
            if (strncmp(key, order[k], strlen(order[k])) == 0 && json_array_size(out) < 3)
                json_array_append_new(out, json_string(key));
        }
    return out;
}

/* What an issue's groups say, gathered once for its texts. */
typedef struct issue_facts {
    json_t *ids;      /* the groups' ids */
    json_t *files;    /* the files their frames name */
    json_t *services; /* the symptoms' services other than the root's (at most 5) */
    int sev;          /* the highest severity's rank */
    int root_frames;  /* the root's in-app frames */
    sh_frame top;     /* the root's top in-app frame */
    size_t symptoms;  /* the groups besides the root */
} issue_facts;

static void issue_facts_gather(issue_facts *f, member *ms, size_t nm, const issue_info *info,
                               int idx)
{
    member *root = &ms[info->root];
    memset(f, 0, sizeof(*f));
    f->ids = json_array();
    f->files = json_array();
    f->services = json_array();
    json_t *ids = f->ids, *files = f->files, *services = f->services;
    int sev = -1, root_frames = 0;
    sh_frame top;
    memset(&top, 0, sizeof(top));
    for (size_t i = 0; i < nm; i++) {
        if (ms[i].issue != idx)
            continue;
        json_array_append_new(ids, json_string(ms[i].id));
        int r = severity_rank(json_string_value(json_object_get(ms[i].g, "severity")));
        if (r > sev)
            sev = r;
        int n = group_files(ms[i].g, files, i == info->root ? &top : NULL);
        if (i == info->root)
            root_frames = n;
        if (i != info->root && ms[i].service != NULL &&
            (root->service == NULL || strcmp(ms[i].service, root->service) != 0)) {
            int dup = 0;
            size_t k;
            json_t *s;
            json_array_foreach(services, k, s) dup |=
                strcmp(json_string_value(s), ms[i].service) == 0;
            if (!dup && json_array_size(services) < 5)
                json_array_append_new(services, json_string(ms[i].service));
        }
    }
    if (sev < 0)
        sev = 1;
    f->sev = sev;
    f->root_frames = root_frames;
    f->top = top;
    f->symptoms = info->n - 1;
}

/* The root cause: the root group, where and how often, and the evidence
 * that ties each symptom to it. */
static void root_cause_text(sh_buf *rc, const member *root, const issue_info *info,
                            const issue_facts *f)
{
    size_t symptoms = f->symptoms;
    json_t *services = f->services;
    append_group_title(rc, root->g);
    if (root->service != NULL) {
        sh_buf_append_str(rc, " in service ");
        append_bounded(rc, root->service, strlen(root->service), 100);
    }
    json_t *count = json_object_get(root->g, "count");
    if (json_is_integer(count))
        sh_buf_appendf(rc, " (%lld occurrence%s", (long long)json_integer_value(count),
                       json_integer_value(count) == 1 ? "" : "s");
    else
        sh_buf_append_str(rc, " (");
    if (root->has_first) {
        char when[32];
        iso(when, sizeof(when), root->first);
        sh_buf_appendf(rc, "%sfirst seen %s)", json_is_integer(count) ? ", " : "", when);
    } else
        sh_buf_append_str(rc, json_is_integer(count) ? ")" : "time unknown)");
    if (symptoms > 0) {
        double spread = (double)(info->last_first - root->first) / 1000.0;
        sh_buf_appendf(rc, " is the earliest of %zu related error groups. ", info->n);
        if (symptoms == 1)
            sh_buf_appendf(rc, "The later group started within %.0f s of it", spread);
        else
            sh_buf_appendf(rc, "The %zu later groups started within %.0f s of it", symptoms,
                           spread);
        if (json_array_size(services) > 0) {
            sh_buf_append_str(rc, " in service");
            sh_buf_append_str(rc, json_array_size(services) == 1 ? " " : "s ");
            size_t k;
            json_t *s;
            json_array_foreach(services, k, s)
            {
                sh_buf_append_str(rc, k == 0 ? "" : ", ");
                append_bounded(rc, json_string_value(s), json_string_length(s), 100);
            }
        }
        sh_buf_append_str(rc, symptoms == 1 ? " and shares " : " and share ");
        append_resources(rc, info->shared, 5);
        sh_buf_append_str(rc, symptoms == 1 ? " with it, so it is taken as a symptom of it."
                                            : " with it, so they are taken as symptoms of it.");
    } else
        sh_buf_append_byte(rc, '.');
}

/* The suggested fix: restore the dependency the root names, else look at
 * the root's top in-app frame, else reproduce from the sample. */
static void suggested_fix_text(sh_buf *fix, const member *root, const issue_facts *f)
{
    size_t symptoms = f->symptoms;
    int root_frames = f->root_frames;
    const sh_frame top = f->top;
    json_t *deps = dependency_list(root->tokens);
    if (json_array_size(deps) > 0) {
        sh_buf_append_str(fix, "Check the health of ");
        append_resources(fix, deps, 3);
        sh_buf_append_str(fix, " (availability, connection limits, disk, recent changes) and "
                               "restore it; make its callers degrade gracefully with timeouts, "
                               "retries with backoff or a circuit breaker.");
        if (symptoms == 1)
            sh_buf_append_str(fix, " The symptom group should stop once it recovers: verify.");
        else if (symptoms > 1)
            sh_buf_appendf(fix, " The %zu symptom groups should stop once it recovers: verify.",
                           symptoms);
    } else if (root_frames > 0) {
        sh_buf_append_str(fix, "Look at ");
        append_bounded(fix, top.file.ptr, top.file.len, 300);
        if (top.line > 0)
            sh_buf_appendf(fix, ":%u", top.line);
        if (top.function.len > 0) {
            sh_buf_append_str(fix, " (");
            append_bounded(fix, top.function.ptr, top.function.len, 200);
            sh_buf_append_byte(fix, ')');
        }
        sh_buf_append_str(fix, ", where the error is raised: handle the failing case or "
                               "validate the input before it, and add a regression test that "
                               "reproduces the sample.");
    } else {
        sh_buf_append_str(fix, "Reproduce the error from its sample, find where it is raised "
                               "and add handling and a regression test; no in-app stack frame "
                               "was available.");
    }
    json_decref(deps);
}

/* confidence: 0.5, +0.2 with an in-app frame of the root, +0.1 with
 * symptoms (each tied to the issue by evidence); within [0.1, 0.9] */
static double issue_confidence(const issue_facts *f)
{
    int root_frames = f->root_frames;
    size_t symptoms = f->symptoms;
    double conf = 0.5;
    if (root_frames > 0)
        conf += 0.2;
    if (symptoms > 0)
        conf += 0.1;
    if (conf < 0.1)
        conf = 0.1;
    if (conf > 0.9)
        conf = 0.9;
    conf = (double)(long)(conf * 100 + 0.5) / 100; /* two decimals */
    return conf;
}

static json_t *build_issue(member *ms, size_t nm, const issue_info *info, int idx)
{
    member *root = &ms[info->root];
    issue_facts f;
    issue_facts_gather(&f, ms, nm, info, idx);
    sh_buf rc;
    sh_buf_init(&rc);
    root_cause_text(&rc, root, info, &f);
    sh_buf fix;
    sh_buf_init(&fix);
    suggested_fix_text(&fix, root, &f);
    json_decref(f.services);
    double conf = issue_confidence(&f);

    json_t *issue =
        json_pack("{s:o, s:s, s:o, s:o, s:o, s:f}", "root_cause", buf_string(&rc, ROOT_CAUSE_MAX),
                  "severity", severities[f.sev], "group_ids", f.ids, "suggested_fix",
                  buf_string(&fix, FIX_MAX), "files_likely_involved", f.files, "confidence", conf);
    sh_buf_free(&rc);
    sh_buf_free(&fix);
    return issue;
}

json_t *analyze_offline(json_t *groups, long long window_ms)
{
    size_t nm = json_array_size(groups);
    if (window_ms < 0)
        window_ms = 0;
    member *ms = calloc(nm ? nm : 1, sizeof(*ms));
    issue_info *issues = calloc(nm ? nm : 1, sizeof(*issues));
    json_t *out = json_array();
    if (ms == NULL || issues == NULL || out == NULL)
        goto fail;
    for (size_t i = 0; i < nm; i++) {
        member_init(&ms[i], json_array_get(groups, i));
        member_calls(&ms[i]);
    }
    qsort(ms, nm, sizeof(*ms), member_cmp);

    size_t ni = 0, lo = 0;
    for (size_t k = 0; k < nm; k++) {
        member *m = &ms[k];
        if (m->has_first) {
            while (lo < k && ms[lo].first < m->first - window_ms)
                lo++;
            for (size_t j = lo; j < k; j++) {
                member *e = &ms[j];
                json_t *shared = json_array();
                if (evidence(e, m, shared) == 0) {
                    json_decref(shared);
                    continue;
                }
                issue_info *is = &issues[e->issue];
                m->issue = e->issue;
                is->n++;
                is->last_first = m->first;
                size_t x;
                json_t *t;
                json_array_foreach(shared, x, t)
                {
                    int dup = 0;
                    size_t y;
                    json_t *u;
                    json_array_foreach(is->shared, y, u) dup |= json_equal(t, u);
                    if (!dup && json_array_size(is->shared) < 8)
                        json_array_append(is->shared, t);
                }
                json_decref(shared);
                break;
            }
        }
        if (m->issue < 0) {
            m->issue = (int)ni;
            issues[ni].root = k;
            issues[ni].n = 1;
            issues[ni].shared = json_array();
            issues[ni].last_first = m->first;
            ni++;
        }
    }
    for (size_t i = 0; i < ni; i++) {
        json_t *issue = build_issue(ms, nm, &issues[i], (int)i);
        if (issue == NULL)
            goto fail;
        json_array_append_new(out, issue);
    }
    goto cleanup;
fail:
    json_decref(out);
    out = NULL;
cleanup:
    if (ms != NULL)
        for (size_t i = 0; i < nm; i++)
            member_free(&ms[i]);
    if (issues != NULL)
        for (size_t i = 0; i < nm; i++)
            json_decref(issues[i].shared);
    free(ms);
    free(issues);
    return out;
}

static size_t uf_find(size_t *parent, size_t i)
{
    while (parent[i] != i)
        i = parent[i] = parent[parent[i]];
    return i;
}

/* One issue of a model's answer cut down to the groups evidence ties to
 * its first group (directly or through other members, each link between
 * groups that started within window_ms of each other); the others are
 * appended to rest. */
static void issue_require_evidence(json_t *issue, json_t *by_id, long long window_ms, json_t *rest)
{
    json_t *ids = json_object_get(issue, "group_ids");
    size_t n = json_array_size(ids);
    if (n < 2)
        return;
    member *ms = calloc(n, sizeof(*ms));
    size_t *parent = calloc(n, sizeof(*parent));
    if (ms == NULL || parent == NULL)
        goto done;
    for (size_t i = 0; i < n; i++) {
        member_init(&ms[i], json_object_get(by_id, json_string_value(json_array_get(ids, i))));
        member_calls(&ms[i]);
        parent[i] = i;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            if (uf_find(parent, i) == uf_find(parent, j))
                continue;
            if (ms[i].has_first && ms[j].has_first && llabs(ms[i].first - ms[j].first) > window_ms)
                continue;
            json_t *why = json_array();
            if (evidence(&ms[i], &ms[j], why) > 0)
                parent[uf_find(parent, i)] = uf_find(parent, j);
            json_decref(why);
        }
    json_t *kept = json_array();
    size_t root = uf_find(parent, 0);
    for (size_t i = 0; i < n; i++) {
        if (uf_find(parent, i) == root)
            json_array_append(kept, json_array_get(ids, i));
        else
            json_array_append(rest, ms[i].g);
    }
    json_object_set_new(issue, "group_ids", kept);
done:
    if (ms != NULL)
        for (size_t i = 0; i < n; i++)
            member_free(&ms[i]);
    free(ms);
    free(parent);
}

json_t *analyze_require_evidence(json_t *issues, json_t *groups, long long window_ms, size_t *split)
{
    json_t *by_id = json_object(), *rest = json_array();
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        const char *id = json_string_value(json_object_get(g, "id"));
        if (id != NULL)
            json_object_set(by_id, id, g);
    }
    json_array_foreach(issues, i, g) issue_require_evidence(g, by_id, window_ms, rest);
    if (split != NULL)
        *split = json_array_size(rest);
    if (json_array_size(rest) > 0) {
        json_t *more = analyze_offline(rest, window_ms);
        if (more == NULL) {
            json_decref(by_id);
            json_decref(rest);
            return NULL;
        }
        json_array_extend(issues, more);
        json_decref(more);
    }
    json_decref(by_id);
    json_decref(rest);
    return issues;
}

/* ---------------------------------------------------------------- validation
 */

static int bounded_string(json_t *v, size_t max, int allow_empty)
{
    if (!json_is_string(v))
        return 0;
    size_t n = json_string_length(v);
    return n <= max && (allow_empty || n > 0) && strlen(json_string_value(v)) == n;
}

static json_t *validate_issue(json_t *issue, size_t idx, json_t *known, json_t *owner, char *why,
                              size_t whylen)
{
    char shown[80];
    if (!json_is_object(issue)) {
        snprintf(why, whylen, "issue %zu is not an object", idx);
        return NULL;
    }
    json_t *rc = json_object_get(issue, "root_cause");
    json_t *sev = json_object_get(issue, "severity");
    json_t *ids = json_object_get(issue, "group_ids");
    json_t *fix = json_object_get(issue, "suggested_fix");
    json_t *files = json_object_get(issue, "files_likely_involved");
    json_t *conf = json_object_get(issue, "confidence");
    if (!bounded_string(rc, ROOT_CAUSE_MAX, 0)) {
        snprintf(why, whylen,
                 "issue %zu: root_cause must be a non-empty string of at most %d bytes", idx,
                 ROOT_CAUSE_MAX);
        return NULL;
    }
    const char *sv = json_string_value(sev);
    int rank = -1;
    for (int i = 0; sv != NULL && i < 4; i++)
        if (strcasecmp(sv, severities[i]) == 0)
            rank = i;
    if (rank < 0) {
        snprintf(why, whylen, "issue %zu: severity must be one of critical, high, medium, low",
                 idx);
        return NULL;
    }
    if (!bounded_string(fix, FIX_MAX, 1)) {
        snprintf(why, whylen, "issue %zu: suggested_fix must be a string of at most %d bytes", idx,
                 FIX_MAX);
        return NULL;
    }
    if (!json_is_number(conf) || !(json_number_value(conf) >= 0 && json_number_value(conf) <= 1)) {
        snprintf(why, whylen, "issue %zu: confidence must be a number from 0 to 1", idx);
        return NULL;
    }
    if (!json_is_array(files) || json_array_size(files) > FILES_MAX) {
        snprintf(why, whylen,
                 "issue %zu: files_likely_involved must be an array of at most %d "
                 "strings",
                 idx, FILES_MAX);
        return NULL;
    }
    size_t i;
    json_t *v;
    json_array_foreach(files, i, v)
    {
        if (!bounded_string(v, FILE_MAX, 0)) {
            snprintf(why, whylen,
                     "issue %zu: files_likely_involved[%zu] must be a non-empty "
                     "string of at most "
                     "%d bytes",
                     idx, i, FILE_MAX);
            return NULL;
        }
    }
    if (!json_is_array(ids) || json_array_size(ids) == 0) {
        snprintf(why, whylen, "issue %zu: group_ids must be a non-empty array", idx);
        return NULL;
    }
    json_array_foreach(ids, i, v)
    {
        if (!bounded_string(v, 1024, 0)) {
            snprintf(why, whylen, "issue %zu: group_ids[%zu] is not a group id string", idx, i);
            return NULL;
        }
        const char *id = json_string_value(v);
        printable(shown, sizeof(shown), id);
        if (json_object_get(known, id) == NULL) {
            snprintf(why, whylen, "issue %zu: group id \"%s\" is not one of the groups given", idx,
                     shown);
            return NULL;
        }
        json_t *prev = json_object_get(owner, id);
        if (prev != NULL) {
            snprintf(why, whylen,
                     "group id \"%s\" appears more than once (issues %lld and %zu); "
                     "each group "
                     "belongs to exactly one issue",
                     shown, (long long)json_integer_value(prev), idx);
            return NULL;
        }
        json_object_set_new(owner, id, json_integer((json_int_t)idx));
    }
    return json_pack("{s:O, s:s, s:O, s:O, s:O, s:f}", "root_cause", rc, "severity",
                     severities[rank], "group_ids", ids, "suggested_fix", fix,
                     "files_likely_involved", files, "confidence", json_number_value(conf));
}

json_t *analyze_validate(json_t *reply, json_t *groups, char *why, size_t whylen)
{
    json_t *list = json_is_object(reply) ? json_object_get(reply, "issues") : NULL;
    if (!json_is_array(list)) {
        snprintf(why, whylen, "the answer must be an object with an \"issues\" array");
        return NULL;
    }
    if (json_array_size(list) > MAX_ISSUES) {
        snprintf(why, whylen, "at most %d issues", MAX_ISSUES);
        return NULL;
    }
    json_t *known = json_object(), *owner = json_object(), *out = json_array();
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        const char *id = json_string_value(json_object_get(g, "id"));
        if (id != NULL)
            json_object_set_new(known, id, json_true());
    }
    json_array_foreach(list, i, g)
    {
        json_t *issue = validate_issue(g, i + 1, known, owner, why, whylen);
        if (issue == NULL)
            goto fail;
        json_array_append_new(out, issue);
    }
    sh_buf missing;
    sh_buf_init(&missing);
    size_t nmissing = 0;
    json_array_foreach(groups, i, g)
    {
        const char *id = json_string_value(json_object_get(g, "id"));
        if (id == NULL || json_object_get(owner, id) != NULL)
            continue;
        if (nmissing++ < 10) {
            sh_buf_append_str(&missing, nmissing == 1 ? "" : ", ");
            sh_buf_append_str(&missing, id);
        }
    }
    if (nmissing > 0) {
        sh_buf_append_byte(&missing, '\0');
        snprintf(why, whylen, "group ids not covered by any issue: %s%s",
                 missing.data ? missing.data : "", nmissing > 10 ? ", ..." : "");
        sh_buf_free(&missing);
        goto fail;
    }
    sh_buf_free(&missing);
    json_decref(known);
    json_decref(owner);
    return out;
fail:
    json_decref(known);
    json_decref(owner);
    json_decref(out);
    return NULL;
}

/* ---------------------------------------------------------------- the LLM path
 */

typedef struct usage {
    long input_tokens;
    long output_tokens;
    double cost_usd;
    int calls;
} usage;

/* One call: budget, request, usage. Returns LLM_* and fills reply. */
static int call_model(port_ctx *ctx, const llm_config *cfg, const char *system, const char *user,
                      json_t *schema, const char *schema_name, llm_reply *reply, usage *u,
                      char *why, size_t whylen)
{
    memset(reply, 0, sizeof(*reply));
    long est = llm_estimate_tokens(strlen(system) + strlen(user));
    if (llm_budget_reserve(ctx, cfg, est, why, whylen) != 0)
        return 1;
    int rc = llm_chat(reply, cfg, system, user, schema, schema_name, &ctx->stopping, why, whylen);
    u->calls++;
    u->input_tokens += reply->input_tokens;
    u->output_tokens += reply->output_tokens;
    u->cost_usd += llm_budget_record(ctx, cfg, reply);
    return rc;
}

/* The reply of a call as validated issues, or NULL with why. */
static json_t *reply_issues(int rc, const llm_reply *reply, json_t *groups, const char *chat_err,
                            char *why, size_t whylen)
{
    if (rc == LLM_ERR_ENVELOPE) {
        snprintf(why, whylen, "%s", chat_err);
        return NULL;
    }
    json_t *obj = llm_extract_json(reply->text, reply->text_len);
    if (obj == NULL) {
        int cut = strcmp(reply->stop_reason, "max_tokens") == 0 ||
                  strcmp(reply->stop_reason, "length") == 0;
        snprintf(why, whylen, "the answer holds no complete JSON object%s",
                 cut ? " (it was cut at the output token limit)" : "");
        return NULL;
    }
    json_t *issues = analyze_validate(obj, groups, why, whylen);
    json_decref(obj);
    return issues;
}

/* Builds the prompt, shedding detail until it fits max_bytes. */
static int build_prompt(sh_buf *system, sh_buf *user, const fence *f, json_t *groups,
                        json_t *descriptor, const sh_scrubber *scrub, size_t max_bytes)
{
    for (int level = 0; level <= 3; level++) {
        sh_buf_reset(system);
        sh_buf_reset(user);
        if (llm_prompt_analyze(system, user, f, groups, descriptor, scrub, level) != 0)
            return -1;
        if (system->len + user->len <= max_bytes)
            break;
    }
    return 0;
}

/* Runs the model; returns validated issues, or NULL with the fallback
 * reason in fallback. */
static json_t *analyze_llm(port_ctx *ctx, const llm_config *cfg, json_t *groups, usage *u,
                           char *fallback, size_t fblen)
{
    if (cfg->key_required && port_secret(cfg->api_key_env) == NULL) {
        snprintf(fallback, fblen, "no_api_key: %s", cfg->api_key_env);
        return NULL;
    }
    fence f;
    fence_init(&f);
    json_t *descriptor = port_config_get(ctx, "service.descriptor");
    json_t *schema = llm_analyze_schema();
    const sh_scrubber *scrub = port_scrubber(ctx);
    size_t max_bytes =
        cfg->max_input_tokens > 0 ? (size_t)cfg->max_input_tokens * 4 : DEFAULT_PROMPT_MAX;
    sh_buf system, user, repair;
    sh_buf_init(&system);
    sh_buf_init(&user);
    sh_buf_init(&repair);
    json_t *issues = NULL;
    llm_reply reply;
    memset(&reply, 0, sizeof(reply));
    char why[512], chat_err[512];
    if (schema == NULL ||
        build_prompt(&system, &user, &f, groups, descriptor, scrub, max_bytes) != 0) {
        snprintf(fallback, fblen, "internal: could not build the prompt");
        goto cleanup;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        const char *text = attempt == 0 ? user.data : repair.data;
        chat_err[0] = '\0';
        int rc = call_model(ctx, cfg, system.data, text, schema, "root_cause_analysis", &reply, u,
                            chat_err, sizeof(chat_err));
        if (rc == 1 || rc == LLM_ERR_KEY || rc == LLM_ERR_HTTP || rc == LLM_ERR_INTERNAL) {
            snprintf(fallback, fblen, "%s", chat_err);
            goto cleanup;
        }
        issues = reply_issues(rc, &reply, groups, chat_err, why, sizeof(why));
        if (issues != NULL)
            goto cleanup;
        if (attempt == 1) {
            snprintf(fallback, fblen, "invalid_reply: %s", why);
            goto cleanup;
        }
        sh_buf_reset(&repair);
        if (llm_prompt_repair(&repair, &f, user.data, reply.text, reply.text_len, why, scrub) !=
            0) {
            snprintf(fallback, fblen, "invalid_reply: %s", why);
            goto cleanup;
        }
        llm_reply_free(&reply);
    }
cleanup:
    llm_reply_free(&reply);
    sh_buf_free(&system);
    sh_buf_free(&user);
    sh_buf_free(&repair);
    json_decref(schema);
    json_decref(descriptor);
    return issues;
}

/* An "analysis" audit record when a state_dir is configured: analyzer,
 * fallback (scrubbed), counts and usage; no message text. Appended, or
 * given to the caller in *record. */
static void audit_analysis(port_ctx *ctx, json_t *groups, json_t *out, json_t **record)
{
    cmd_error e = {NULL, ""};
    if (record == NULL && state_ctx_ensure(ctx, &e) != 0)
        return;
    audit_log *log = port_audit(ctx);
    const sh_scrubber *scrub = port_scrubber(ctx);
    if (log == NULL && record == NULL)
        return;
    json_t *issues = json_object_get(out, "issues");
    json_t *ids = json_array();
    size_t i;
    json_t *is;
    json_array_foreach(issues, i, is)
        json_array_append_new(ids, json_deep_copy(json_object_get(is, "group_ids")));
    json_t *fields = json_pack(
        "{s:O, s:n, s:I, s:I, s:o, s:O, s:O}", "analyzer", json_object_get(out, "analyzer"),
        "fallback", "groups", (json_int_t)json_array_size(groups), "issues",
        (json_int_t)json_array_size(issues), "issue_group_ids", ids, "unlinked",
        json_object_get(out, "unlinked"), "usage", json_object_get(out, "usage"));
    json_t *fb = json_object_get(out, "fallback");
    if (fields != NULL && json_is_string(fb)) {
        sh_buf clean;
        sh_buf_init(&clean);
        sh_scrub(scrub, json_string_value(fb), json_string_length(fb), &clean, NULL);
        if (!clean.oom)
            json_object_set_new(fields, "fallback",
                                json_stringn(clean.data ? clean.data : "", clean.len));
        sh_buf_free(&clean);
    }
    if (record != NULL) {
        *record = fields;
        return;
    }
    if (fields != NULL)
        audit_append(log, "analysis", fields);
    json_decref(fields);
}

json_t *analyze_groups(port_ctx *ctx, json_t *groups, json_t **record, cmd_error *err)
{
    if (record != NULL)
        *record = NULL;
    char why[512], fallback[640];
    if (groups_check(groups, why, sizeof(why)) != 0) {
        cmd_error_set(err, "bad_args", "%s", why);
        return NULL;
    }
    long long window = port_config_int(ctx, "analyze.window_ms", DEFAULT_WINDOW_MS);
    if (window < 0)
        window = 0;
    if (window > MAX_WINDOW_MS)
        window = MAX_WINDOW_MS;
    usage u = {0, 0, 0, 0};
    fallback[0] = '\0';
    json_t *issues = NULL;
    size_t split = 0;
    const char *analyzer = "offline";
    llm_config cfg;
    if (llm_config_load(&cfg, ctx, "llm", why, sizeof(why)) != 0)
        snprintf(fallback, sizeof(fallback), "config: %s", why);
    else if (cfg.provider != LLM_OFFLINE && json_array_size(groups) > 0) {
        issues = analyze_llm(ctx, &cfg, groups, &u, fallback, sizeof(fallback));
        if (issues != NULL && analyze_require_evidence(issues, groups, window, &split) == NULL) {
            json_decref(issues);
            issues = NULL;
        }
        if (issues != NULL)
            analyzer = cfg.provider_name;
    }
    if (issues == NULL)
        issues = analyze_offline(groups, window);
    if (issues == NULL) {
        cmd_error_set(err, "internal", "out of memory");
        return NULL;
    }
    json_t *out = json_pack(
        "{s:o, s:s, s:o, s:I, s:{s:I, s:I, s:f, s:i}}", "issues", issues, "analyzer", analyzer,
        "fallback", fallback[0] ? json_string(fallback) : json_null(), "unlinked",
        (json_int_t)split, "usage", "input_tokens", (json_int_t)u.input_tokens, "output_tokens",
        (json_int_t)u.output_tokens, "cost_usd", u.cost_usd, "calls", u.calls);
    if (out != NULL)
        audit_analysis(ctx, groups, out, record);
    return out;
}

/* ---------------------------------------------------------------- triage */

static int watch_field_ok(json_t *v)
{
    return bounded_string(v, WATCH_FIELD_MAX, 0) &&
           sh_token_ok(json_string_value(v), json_string_length(v), WATCH_FIELD_MAX, "_.-");
}

static int integer_in(json_t *v, long long lo, long long hi)
{
    return json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi;
}

/* A proposed watch: {"field","op","value"} or {"template"}, plus window_ms
 * and threshold. Returns a normalised copy or NULL with why. */
static json_t *validate_watch(json_t *w, char *why, size_t whylen)
{
    static const char *const ops[] = {">", ">=", "<", "<=", "==", "!="};
    if (!json_is_object(w)) {
        snprintf(why, whylen, "decision watch needs a watch object");
        return NULL;
    }
    json_t *win = json_object_get(w, "window_ms"), *thr = json_object_get(w, "threshold");
    if (!integer_in(win, 1, WATCH_WINDOW_MAX) || !integer_in(thr, 1, WATCH_THRESHOLD_MAX)) {
        snprintf(why, whylen,
                 "watch needs window_ms (1..2592000000) and threshold (1..1000000) "
                 "integers");
        return NULL;
    }
    json_t *tpl = json_object_get(w, "template"), *field = json_object_get(w, "field");
    if (tpl != NULL && field == NULL) {
        if (!bounded_string(tpl, WATCH_VALUE_MAX, 0)) {
            snprintf(why, whylen, "watch template must be a non-empty string of at most %d bytes",
                     WATCH_VALUE_MAX);
            return NULL;
        }
        return json_pack("{s:O, s:O, s:O}", "template", tpl, "window_ms", win, "threshold", thr);
    }
    const char *op = json_string_value(json_object_get(w, "op"));
    int op_ok = 0;
    for (size_t i = 0; op != NULL && i < sizeof(ops) / sizeof(ops[0]); i++)
        op_ok |= strcmp(op, ops[i]) == 0;
    json_t *value = json_object_get(w, "value");
    if (!watch_field_ok(field) || !op_ok ||
        !(json_is_number(value) || bounded_string(value, WATCH_VALUE_MAX, 1))) {
        snprintf(why, whylen,
                 "watch needs either a template or a field (1..128 of A-Z a-z 0-9 "
                 "_ . -), an op "
                 "(>, >=, <, <=, ==, !=) and a number or string value");
        return NULL;
    }
    return json_pack("{s:O, s:s, s:O, s:O, s:O}", "field", field, "op", op, "value", value,
                     "window_ms", win, "threshold", thr);
}

static json_t *validate_triage(json_t *reply, char *why, size_t whylen)
{
    const char *d = json_string_value(json_object_get(reply, "decision"));
    json_t *reason = json_object_get(reply, "reason");
    if (d == NULL ||
        (strcmp(d, "ignore") != 0 && strcmp(d, "watch") != 0 && strcmp(d, "investigate") != 0)) {
        snprintf(why, whylen, "decision must be ignore, watch or investigate");
        return NULL;
    }
    if (!bounded_string(reason, TRIAGE_REASON_MAX, 1)) {
        snprintf(why, whylen, "reason must be a string of at most %d bytes", TRIAGE_REASON_MAX);
        return NULL;
    }
    json_t *out = json_pack("{s:s, s:O}", "decision", d, "reason", reason);
    if (strcmp(d, "watch") == 0) {
        json_t *w = validate_watch(json_object_get(reply, "watch"), why, whylen);
        if (w == NULL) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, "watch", w);
    }
    return out;
}

static json_t *triage_fallback(const char *why)
{
    return json_pack("{s:s, s:s, s:s}", "decision", "investigate", "reason", why, "fallback", why);
}

static json_t *triage_batch(port_ctx *ctx, json_t *lines, const char *source)
{
    char why[512], chat_err[512];
    json_t *conf = port_config_get(ctx, "triage_model");
    if (!json_is_object(conf)) {
        json_decref(conf);
        return triage_fallback("no triage model configured (triage_model)");
    }
    json_t *obj = json_deep_copy(conf);
    json_decref(conf);
    if (obj != NULL && json_object_get(obj, "provider") == NULL)
        json_object_set_new(obj, "provider", json_string("ollama"));
    llm_config cfg;
    int crc = llm_config_from_json(&cfg, obj, why, sizeof(why));
    json_decref(obj);
    if (crc != 0 || cfg.provider == LLM_OFFLINE) {
        char msg[600];
        snprintf(msg, sizeof(msg), "triage model unusable: %s",
                 crc != 0 ? why : "provider offline");
        return triage_fallback(msg);
    }
    fence f;
    fence_init(&f);
    sh_buf system, user;
    sh_buf_init(&system);
    sh_buf_init(&user);
    json_t *schema = llm_triage_schema();
    json_t *out = NULL;
    llm_reply reply;
    memset(&reply, 0, sizeof(reply));
    if (llm_prompt_triage(&system, &user, &f, lines, source, port_scrubber(ctx)) != 0) {
        out = triage_fallback("could not build the triage prompt");
        goto cleanup;
    }
    int rc = llm_chat(&reply, &cfg, system.data, user.data, schema, "triage", &ctx->stopping,
                      chat_err, sizeof(chat_err));
    if (rc != LLM_OK) {
        char msg[600];
        snprintf(msg, sizeof(msg), "triage model failed: %s", chat_err);
        out = triage_fallback(msg);
        goto cleanup;
    }
    json_t *answer = llm_extract_json(reply.text, reply.text_len);
    out = answer != NULL ? validate_triage(answer, why, sizeof(why)) : NULL;
    if (answer == NULL)
        snprintf(why, sizeof(why), "the answer holds no JSON object");
    json_decref(answer);
    if (out == NULL) {
        char msg[600];
        snprintf(msg, sizeof(msg), "triage reply invalid: %s", why);
        out = triage_fallback(msg);
    }
cleanup:
    llm_reply_free(&reply);
    sh_buf_free(&system);
    sh_buf_free(&user);
    json_decref(schema);
    return out;
}

/* ---------------------------------------------------------------- commands */

static json_t *cmd_analyze(port_ctx *ctx, json_t *args, cmd_error *err)
{
    json_t *groups = json_object_get(args, "groups");
    if (groups == NULL) {
        cmd_error_set(err, "bad_args", "analyze needs {\"groups\": [...]}");
        return NULL;
    }
    return analyze_groups(ctx, groups, NULL, err);
}

static json_t *cmd_triage_batch(port_ctx *ctx, json_t *args, cmd_error *err)
{
    json_t *lines = json_object_get(args, "lines");
    json_t *source = json_object_get(args, "source");
    if (!json_is_array(lines) || json_array_size(lines) > TRIAGE_MAX_LINES) {
        cmd_error_set(err, "bad_args",
                      "triage_batch needs {\"lines\": [...]} of at most %d strings",
                      TRIAGE_MAX_LINES);
        return NULL;
    }
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        if (!json_is_string(l)) {
            cmd_error_set(err, "bad_args", "lines[%zu] is not a string", i);
            return NULL;
        }
    }
    if (source != NULL && !json_is_string(source) && !json_is_null(source)) {
        cmd_error_set(err, "bad_args", "source must be a string");
        return NULL;
    }
    if (json_array_size(lines) == 0)
        return json_pack("{s:s, s:s}", "decision", "ignore", "reason", "empty batch");
    return triage_batch(ctx, lines, json_string_value(source));
}

const cmd_def *analyze_commands(size_t *n)
{
    static const cmd_def cmds[] = {
        {"analyze", cmd_analyze, 0},
        {"triage_batch", cmd_triage_batch, 0},
    };
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
