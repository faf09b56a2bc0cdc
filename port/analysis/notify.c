/*
 * Notifications to people (docs/notifications.md): Slack incoming webhook
 * with Block Kit, email over SMTP with libcurl, Telegram Bot API
 * (sendMessage with inline buttons, getUpdates long polling), and the
 * signed, expiring Approve / Skip links.
 *
 * One `notify` call scrubs and bounds the message once, then runs every
 * enabled channel on its own thread, each with its own timeout, retries
 * and in-memory token bucket; the call returns when all are done, with one
 * result per channel. Secrets (webhook URL, bot token, SMTP password, link
 * secret) come from environment variables named in the configuration and
 * never appear in results, errors or audit records.
 */
#include "notify.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "dash.h"
#include "effect.h"
#include "fence.h"
#include "http.h"
#include "self_heal/scrub.h"
#include "service.h"
#include "state.h"

#define ACTION_ID_MAX 64
#define TOKEN_MAX 256
#define LINK_MAX 1024
#define URL_MAX 1000
#define ADDR_MAX 254
#define RCPT_MAX 32
#define CHANNELS_MAX 8
#define TG_TEXT_MAX 4096
#define TG_UPDATES_MAX 100
#define TG_CALLBACK_MAX 64

/* Bounds of the message fields, in bytes after scrubbing. */
enum {
    B_KIND = 32,
    B_TICKET = 64,
    B_FP = 128,
    B_SEVERITY = 32,
    B_SERVICE = 128,
    B_ERROR = 2000,
    B_PATH = 512,
    B_SLACK_DIFF = 2900,
    B_SLACK_ERROR = 300,
    B_SLACK_HEADER = 150,
    B_SUBJECT = 160,
    B_OWNER = 100
};

static const char ELLIPSIS[] = "\xE2\x80\xA6"; /* U+2026 */

/* ------------------------------------------------------------ small helpers */

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int valid_action_id_n(const char *s, size_t n)
{
    return sh_token_ok(s, n, ACTION_ID_MAX, "_-");
}

static int valid_action_id(const char *s)
{
    return s != NULL && valid_action_id_n(s, strnlen(s, ACTION_ID_MAX + 1));
}

static int valid_action(const char *s, size_t n)
{
    return (n == 7 && memcmp(s, "approve", 7) == 0) || (n == 4 && memcmp(s, "skip", 4) == 0);
}

/* An http(s) URL of printable ASCII without characters that would break
 * out of a Slack link, a header or a JSON string. */
static int valid_url(const char *u, size_t max)
{
    if (u == NULL)
        return 0;
    size_t n = strnlen(u, max + 1);
    if (n > max)
        return 0;
    size_t skip = starts_with(u, "https://") ? 8 : starts_with(u, "http://") ? 7 : 0;
    if (skip == 0 || n == skip || u[skip] == '/')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (c <= 0x20 || c >= 0x7f || strchr("<>|\"\\`{}^", c) != NULL)
            return 0;
    }
    return 1;
}

/* A plain address local@domain: printable ASCII, no spaces, brackets,
 * quotes, commas or semicolons; one '@'. */
static int valid_addr(const char *a)
{
    size_t n = strnlen(a, ADDR_MAX + 1);
    if (n == 0 || n > ADDR_MAX)
        return 0;
    const char *at = strchr(a, '@');
    if (at == NULL || at == a || at[1] == '\0' || strchr(at + 1, '@') != NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c <= 0x20 || c >= 0x7f || strchr("<>()[]\\,;:\"", c) != NULL)
            return 0;
    }
    return 1;
}

/* Replaces every occurrence of secret in s (NUL-terminated, at most 255
 * bytes kept) with a marker. */
static void redact(char *s, const char *secret)
{
    if (secret == NULL || secret[0] == '\0' || strstr(s, secret) == NULL)
        return;
    char out[256];
    size_t sl = strlen(secret), o = 0;
    const char *p = s;
    while (*p != '\0' && o + 1 < sizeof(out)) {
        if (strncmp(p, secret, sl) == 0) {
            int n = snprintf(out + o, sizeof(out) - o, "[REDACTED]");
            o = n > 0 && (size_t)n < sizeof(out) - o ? o + (size_t)n : sizeof(out) - 1;
            p += sl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    memcpy(s, out, o + 1);
}

/* The first characters of a reply body when they look like a short status
 * word ("ok", "invalid_payload", "no_service"); "" otherwise. */
static void body_word(char *out, size_t outlen, const char *body, size_t len)
{
    size_t n = 0;
    while (n < len && n + 1 < outlen && n < 64) {
        char c = body[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            break;
        out[n] = c;
        n++;
    }
    out[n] = '\0';
}

static double monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *buf_take(sh_buf *b)
{
    sh_buf_append_byte(b, '\0');
    if (b->oom) {
        sh_buf_free(b);
        return NULL;
    }
    char *s = b->data;
    sh_buf_init(b);
    return s;
}

/* libcurl's global state, set up once before any channel thread starts
 * (curl_global_init is refcounted, so http_global_init in main is fine). */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------ signed links */

static int hmac_hex(char hex[65], const char *secret, const char *action, const char *action_id,
                    int64_t expires)
{
    char msg[160];
    int n = snprintf(msg, sizeof(msg), "%s|%s|%lld", action, action_id, (long long)expires);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return -1;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, (size_t)n, mac,
             &maclen) == NULL ||
        maclen != 32)
        return -1;
    sh_hex_encode(hex, mac, maclen);
    OPENSSL_cleanse(mac, sizeof(mac));
    return 0;
}

int notify_sign(char *out, size_t outlen, const char *secret, const char *action,
                const char *action_id, int64_t expires)
{
    if (out == NULL || outlen == 0)
        return -1;
    out[0] = '\0';
    if (secret == NULL || secret[0] == '\0' || action == NULL ||
        !valid_action(action, strlen(action)) || !valid_action_id(action_id) || expires < 0)
        return -1;
    char hex[65];
    if (hmac_hex(hex, secret, action, action_id, expires) != 0)
        return -1;
    int n = snprintf(out, outlen, "%s.%s.%lld.%s", action, action_id, (long long)expires, hex);
    if (n < 0 || (size_t)n >= outlen) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

/* Parses 1..18 decimal digits without a leading zero (one canonical text
 * per value). */
static int parse_expires(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 18 || (n > 1 && s[0] == '0'))
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int notify_verify(const char *token, const char *secret, int64_t now, char *action,
                  size_t action_len, char *action_id, size_t id_len)
{
    if (token == NULL || secret == NULL || secret[0] == '\0')
        return -1;
    size_t len = strnlen(token, TOKEN_MAX + 1);
    if (len > TOKEN_MAX)
        return -1;
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    const char *d3 = d2 ? memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) : NULL;
    if (d3 == NULL || memchr(d3 + 1, '.', len - (size_t)(d3 + 1 - token)) != NULL)
        return -1;
    size_t alen = (size_t)(d1 - token), ilen = (size_t)(d2 - d1 - 1);
    size_t elen = (size_t)(d3 - d2 - 1), hlen = len - (size_t)(d3 + 1 - token);
    int64_t expires = 0;
    if (!valid_action(token, alen) || !valid_action_id_n(d1 + 1, ilen) ||
        parse_expires(d2 + 1, elen, &expires) != 0 || hlen != 64 || alen >= action_len ||
        ilen >= id_len)
        return -1;
    char act[8], id[ACTION_ID_MAX + 1], hex[65];
    memcpy(act, token, alen);
    act[alen] = '\0';
    memcpy(id, d1 + 1, ilen);
    id[ilen] = '\0';
    if (hmac_hex(hex, secret, act, id, expires) != 0)
        return -1;
    if (CRYPTO_memcmp(hex, d3 + 1, 64) != 0)
        return -1;
    memcpy(action, act, alen + 1);
    memcpy(action_id, id, ilen + 1);
    return now >= expires ? 1 : 0;
}

/* ------------------------------------------------------------ rate limit */

/* Primes b full on first use, then adds what rate_per_min gave since. */
static void bucket_refill(notify_bucket *b, double rate_per_min, double now_s)
{
    double cap = rate_per_min < 1 ? 1 : rate_per_min;
    if (!b->primed) {
        b->tokens = cap;
        b->last_s = now_s;
        b->primed = 1;
    }
    if (now_s > b->last_s) {
        b->tokens += (now_s - b->last_s) * rate_per_min / 60.0;
        b->last_s = now_s;
    }
    if (b->tokens > cap) /* a rate lowered since */
        b->tokens = cap;
}

int notify_rate_take_both(notify_bucket *global, double global_rate, notify_bucket *own,
                          double own_rate, double now_s)
{
    int g = global_rate <= 0, o = own == NULL || own_rate <= 0;
    if (!g) {
        bucket_refill(global, global_rate, now_s);
        g = global->tokens >= 1.0;
    }
    if (!o) {
        bucket_refill(own, own_rate, now_s);
        o = own->tokens >= 1.0;
    }
    if (!g || !o)
        return 0;
    if (global_rate > 0)
        global->tokens -= 1.0;
    if (own != NULL && own_rate > 0)
        own->tokens -= 1.0;
    return 1;
}

int notify_rate_take(notify_bucket *b, double rate_per_min, double now_s)
{
    return notify_rate_take_both(b, rate_per_min, NULL, 0, now_s);
}

static const char *const channel_names[] = {"slack", "email", "telegram"};
enum { N_CHANNELS = 3 };

/* one service's buckets, a row per service a message was sent for (the
 * registry's names: bounded by the configuration) */
typedef struct service_buckets {
    char name[SERVICE_NAME_MAX];
    notify_bucket b[N_CHANNELS];
} service_buckets;

static notify_bucket rate_buckets[N_CHANNELS]; /* the global ones */
static service_buckets *rate_services;
static size_t rate_services_n, rate_services_cap;
static pthread_mutex_t rate_lock = PTHREAD_MUTEX_INITIALIZER;

static int channel_index(const char *name)
{
    for (int i = 0; i < N_CHANNELS; i++)
        if (strcmp(name, channel_names[i]) == 0)
            return i;
    return -1;
}

/* The buckets of service (under rate_lock); NULL when out of memory. */
static notify_bucket *service_bucket(const char *service, int channel)
{
    for (size_t i = 0; i < rate_services_n; i++)
        if (strcmp(rate_services[i].name, service) == 0)
            return &rate_services[i].b[channel];
    if (rate_services_n == rate_services_cap) {
        size_t cap = rate_services_cap ? rate_services_cap * 2 : 8;
        service_buckets *more = realloc(rate_services, cap * sizeof(*more));
        if (more == NULL)
            return NULL;
        rate_services = more;
        rate_services_cap = cap;
    }
    service_buckets *row = &rate_services[rate_services_n++];
    memset(row, 0, sizeof(*row));
    snprintf(row->name, sizeof(row->name), "%s", service);
    return &row->b[channel];
}

static long long conf_int(port_ctx *ctx, const char *channel, const char *key, long long dflt,
                          long long lo, long long hi);

/* A bucket kept in the state database's kv as "tokens last_s"; an
 * absent or unreadable one is a new bucket. */
static void bucket_load(state_db *db, const char *key, notify_bucket *b)
{
    char buf[96];
    double tokens, last;
    memset(b, 0, sizeof(*b));
    if (state_kv_get(db, key, buf, sizeof(buf)) == 0 &&
        sscanf(buf, "%lf %lf", &tokens, &last) == 2) {
        b->tokens = tokens;
        b->last_s = last;
        b->primed = 1;
    }
}

static int bucket_store(state_db *db, const char *key, const notify_bucket *b)
{
    char buf[96];
    snprintf(buf, sizeof(buf), "%.6f %.0f", b->tokens, b->last_s);
    return state_kv_set(db, key, buf);
}

/* The buckets in the state database (kv "notify_rate:<channel>" and
 * "notify_rate:<channel>:<service>"), read and written in one transaction:
 * kept across restarts and shared by the port processes of one state
 * directory. 1 taken, 0 refused, -1 on a database error. */
static int rate_take_db(state_db *db, const char *channel, const char *service, double global_rate,
                        double own_rate)
{
    char gkey[64], okey[SERVICE_NAME_MAX + 64];
    snprintf(gkey, sizeof(gkey), "notify_rate:%s", channel);
    snprintf(okey, sizeof(okey), "notify_rate:%s:%s", channel, service);
    int scoped = service[0] != '\0';
    notify_bucket g, o;
    if (state_txn_begin(db) != 0)
        return -1;
    bucket_load(db, gkey, &g);
    if (scoped)
        bucket_load(db, okey, &o);
    int rc =
        notify_rate_take_both(&g, global_rate, scoped ? &o : NULL, own_rate, (double)port_now());
    if (rc == 1 && ((global_rate > 0 && bucket_store(db, gkey, &g) != 0) ||
                    (scoped && own_rate > 0 && bucket_store(db, okey, &o) != 0))) {
        state_txn_rollback(db);
        return -1;
    }
    return state_txn_commit(db) == 0 ? rc : -1;
}

/* A token of channel's global bucket (the global notify.<channel>.rate_per_min)
 * and, in a service's scope, of the service's own (its rate_per_min), both
 * or neither: in the state database when there is one, else in memory. */
static int rate_allow(port_ctx *ctx, int channel)
{
    const char *name = channel_names[channel];
    double own_rate = (double)conf_int(ctx, name, "rate_per_min", 20, 0, 100000);
    char service[SERVICE_NAME_MAX], path[64];
    double global_rate = own_rate;
    if (service_current(ctx, service, sizeof(service))[0] != '\0') {
        snprintf(path, sizeof(path), "notify.%s.rate_per_min", name);
        json_t *v = service_global_get(ctx, path);
        global_rate = json_is_integer(v) ? (double)json_integer_value(v) : 20;
        json_decref(v);
        global_rate = global_rate < 0 ? 0 : global_rate > 100000 ? 100000 : global_rate;
    }
    state_db *db = port_state(ctx);
    int ok = db != NULL ? rate_take_db(db, name, service, global_rate, own_rate) : -1;
    if (ok >= 0)
        return ok;
    pthread_mutex_lock(&rate_lock);
    notify_bucket *own = service[0] != '\0' ? service_bucket(service, channel) : NULL;
    ok = (service[0] == '\0' || own != NULL) &&
         notify_rate_take_both(&rate_buckets[channel], global_rate, own, own_rate, monotonic_s());
    pthread_mutex_unlock(&rate_lock);
    return ok;
}

/* ------------------------------------------------------------ the message */

/* Scrubs text, replaces control characters (newlines and tabs kept when
 * multiline, CR dropped) and invalid UTF-8 bytes ('?'), trims blanks at
 * both ends, and cuts the result to max bytes at a code point, ending it
 * with an ellipsis when cut. The whole text is scrubbed before the cut, so
 * a secret is never split into an unrecognisable prefix. NULL when out of
 * memory. */
static char *clean_field(const sh_scrubber *s, const char *text, size_t len, size_t max,
                         int multiline, int *cut)
{
    sh_buf scrubbed, out;
    sh_buf_init(&scrubbed);
    sh_buf_init(&out);
    sh_scrub(s, text, len, &scrubbed, NULL);
    const unsigned char *p = (const unsigned char *)scrubbed.data;
    size_t n = scrubbed.oom ? 0 : scrubbed.len;
    for (size_t i = 0; i < n;) {
        size_t k = sh_utf8_seq_len(p + i, n - i);
        if (k == 0) {
            sh_buf_append_byte(&out, '?');
            i++;
            continue;
        }
        if (fence_unsafe_cp(sh_utf8_cp(p + i, k))) {
            if (multiline && (p[i] == '\n' || p[i] == '\t'))
                sh_buf_append_byte(&out, (char)p[i]);
            else if (!(multiline && p[i] == '\r'))
                sh_buf_append_byte(&out, ' ');
        } else {
            sh_buf_append(&out, p + i, k);
        }
        i += k;
    }
    int oom = scrubbed.oom || out.oom;
    sh_buf_free(&scrubbed);
    if (oom) {
        sh_buf_free(&out);
        return NULL;
    }
    size_t start = 0;
    while (start < out.len && strchr(" \n\t", out.data[start]) != NULL)
        start++;
    while (out.len > start && strchr(" \n\t", out.data[out.len - 1]) != NULL)
        out.len--;
    if (start > 0) {
        memmove(out.data, out.data + start, out.len - start);
        out.len -= start;
    }
    if (out.len > max) {
        out.len = sh_utf8_truncate(out.data, out.len, max - (sizeof(ELLIPSIS) - 1));
        sh_buf_append_str(&out, ELLIPSIS);
        if (cut != NULL)
            *cut = 1;
    }
    return buf_take(&out);
}

static int msg_field(char **out, json_t *message, const char *key, const sh_scrubber *s, size_t max,
                     int multiline, int *cut)
{
    json_t *v = json_object_get(message, key);
    char num[32];
    const char *text;
    size_t len;
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        text = json_string_value(v);
        len = json_string_length(v);
    } else if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        text = num;
        len = strlen(num);
    } else {
        return -1;
    }
    *out = clean_field(s, text, len, max, multiline, cut);
    if (*out == NULL)
        return -2;
    if ((*out)[0] == '\0') {
        free(*out);
        *out = NULL;
    }
    return 0;
}

void notify_msg_free(notify_msg *m)
{
    if (m == NULL)
        return;
    char **fields[] = {&m->kind,        &m->ticket_id, &m->fingerprint, &m->severity,
                       &m->service,     &m->error,     &m->path,        &m->url,
                       &m->approve_url, &m->skip_url,  &m->diff,        &m->patch_url};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
    for (size_t i = 0; i < m->n_owners; i++)
        free(m->owners[i]);
    m->n_owners = 0;
}

int notify_msg_set_owners(notify_msg *m, json_t *owners, const sh_scrubber *scrub)
{
    char *found[NOTIFY_OWNERS_MAX];
    size_t n = 0, i;
    json_t *v;
    json_array_foreach(owners, i, v)
    {
        if (n == NOTIFY_OWNERS_MAX)
            break;
        if (!json_is_string(v))
            continue;
        char *one =
            clean_field(scrub, json_string_value(v), json_string_length(v), B_OWNER, 0, NULL);
        if (one == NULL) {
            while (n > 0)
                free(found[--n]);
            return -1;
        }
        if (one[0] == '\0')
            free(one);
        else
            found[n++] = one;
    }
    if (n == 0)
        return 0;
    for (i = 0; i < m->n_owners; i++)
        free(m->owners[i]);
    memcpy(m->owners, found, n * sizeof(found[0]));
    m->n_owners = n;
    return 0;
}

/* A copy of url when it is a safe URL the scrubber leaves alone (no
 * credentials or tokens in it), else NULL. */
static char *safe_url(const sh_scrubber *scrub, json_t *url)
{
    char *out = NULL;
    if (json_is_string(url) && valid_url(json_string_value(url), URL_MAX)) {
        sh_buf sb;
        sh_buf_init(&sb);
        sh_scrub_stats st = {0};
        sh_scrub(scrub, json_string_value(url), json_string_length(url), &sb, &st);
        if (st.redactions == 0 && !sb.oom)
            out = strdup(json_string_value(url));
        sh_buf_free(&sb);
    }
    return out;
}

int notify_msg_init(notify_msg *out, json_t *message, const sh_scrubber *scrub, char *err,
                    size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->count = -1;
    if (!json_is_object(message)) {
        snprintf(err, errlen, "the message must be an object");
        return -1;
    }
    struct {
        char **dst;
        const char *key;
        size_t max;
        int multiline;
    } fields[] = {{&out->kind, "kind", B_KIND, 0},
                  {&out->ticket_id, "ticket_id", B_TICKET, 0},
                  {&out->fingerprint, "fingerprint", B_FP, 0},
                  {&out->severity, "severity", B_SEVERITY, 0},
                  {&out->service, "service", B_SERVICE, 0},
                  {&out->error, "error", B_ERROR, 1},
                  {&out->path, "path", B_PATH, 0},
                  {&out->diff, "diff", NOTIFY_DIFF_MAX, 1}};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        int rc =
            msg_field(fields[i].dst, message, fields[i].key, scrub, fields[i].max,
                      fields[i].multiline, fields[i].dst == &out->diff ? &out->diff_cut : NULL);
        if (rc != 0) {
            snprintf(err, errlen, "%s %s", fields[i].key,
                     rc == -1 ? "must be a string or an integer" : "could not be copied");
            notify_msg_free(out);
            return -1;
        }
    }
    if (notify_msg_set_owners(out, json_object_get(message, "owners"), scrub) != 0) {
        snprintf(err, errlen, "owners could not be copied");
        notify_msg_free(out);
        return -1;
    }
    out->url = safe_url(scrub, json_object_get(message, "url"));
    out->patch_url = safe_url(scrub, json_object_get(message, "patch_url"));
    if (out->diff != NULL && json_is_true(json_object_get(message, "diff_truncated")))
        out->diff_cut = 1;
    json_t *count = json_object_get(message, "count");
    if (json_is_integer(count) && json_integer_value(count) >= 0)
        out->count = (long long)json_integer_value(count);
    json_t *aid = json_object_get(message, "action_id");
    if (aid != NULL && !json_is_null(aid)) {
        if (!json_is_string(aid) ||
            !valid_action_id_n(json_string_value(aid), json_string_length(aid))) {
            snprintf(err, errlen, "action_id must match [A-Za-z0-9_-]{1,64}");
            notify_msg_free(out);
            return -1;
        }
        memcpy(out->action_id, json_string_value(aid), json_string_length(aid) + 1);
    }
    return 0;
}

static char *link_url(const char *base, size_t base_len, const char *action, const char *token)
{
    char url[LINK_MAX];
    int n = snprintf(url, sizeof(url), "%.*s/%s?t=%s", (int)base_len, base, action, token);
    if (n < 0 || (size_t)n >= sizeof(url))
        return NULL;
    return strdup(url);
}

int notify_msg_set_links(notify_msg *m, const char *base_url, const char *secret, int64_t now,
                         int64_t ttl_s)
{
    if (m->action_id[0] == '\0' || base_url == NULL || base_url[0] == '\0' || secret == NULL ||
        secret[0] == '\0')
        return 0;
    if (!valid_url(base_url, 512) || strchr(base_url, '?') != NULL || strchr(base_url, '#') != NULL)
        return -1;
    size_t blen = strlen(base_url);
    while (blen > 0 && base_url[blen - 1] == '/')
        blen--;
    int64_t expires = now + (ttl_s > 0 ? ttl_s : 86400);
    char approve[TOKEN_MAX], skip[TOKEN_MAX];
    if (notify_sign(approve, sizeof(approve), secret, "approve", m->action_id, expires) != 0 ||
        notify_sign(skip, sizeof(skip), secret, "skip", m->action_id, expires) != 0)
        return -1;
    free(m->approve_url);
    free(m->skip_url);
    m->approve_url = link_url(base_url, blen, "approve", approve);
    m->skip_url = link_url(base_url, blen, "skip", skip);
    m->links_expire = expires;
    if (m->approve_url == NULL || m->skip_url == NULL) {
        free(m->approve_url);
        free(m->skip_url);
        m->approve_url = m->skip_url = NULL;
        return -1;
    }
    return 0;
}

static const char *or_default(const char *s, const char *dflt)
{
    return s != NULL ? s : dflt;
}

/* "YYYY-MM-DD HH:MM UTC" */
static void format_utc(char *out, size_t outlen, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL) {
        snprintf(out, outlen, "?");
        return;
    }
    snprintf(out, outlen, "%04d-%02d-%02d %02d:%02d UTC", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min);
}

/* The first line of the error, at most max bytes (cut at a code point). */
static void first_line(sh_buf *out, const char *text, size_t max)
{
    if (text == NULL)
        return;
    size_t n = strcspn(text, "\n");
    if (n > max) {
        n = sh_utf8_truncate(text, n, max);
        sh_buf_append(out, text, n);
        sh_buf_append_str(out, ELLIPSIS);
    } else {
        sh_buf_append(out, text, n);
    }
}

/* ------------------------------------------------------------ Slack */

/* Slack's mrkdwn needs &, < and > escaped; nothing else is special
 * enough to break the message. */
static void md_escape(sh_buf *b, const char *s, size_t max)
{
    size_t n = strlen(s);
    size_t keep = n > max ? sh_utf8_truncate(s, n, max) : n;
    for (size_t i = 0; i < keep; i++) {
        if (s[i] == '&')
            sh_buf_append_str(b, "&amp;");
        else if (s[i] == '<')
            sh_buf_append_str(b, "&lt;");
        else if (s[i] == '>')
            sh_buf_append_str(b, "&gt;");
        else
            sh_buf_append_byte(b, s[i]);
    }
    if (keep < n)
        sh_buf_append_str(b, ELLIPSIS);
}

static json_t *json_buf(const sh_buf *b)
{
    return b->oom ? NULL : json_stringn(b->data ? b->data : "", b->len);
}

static json_t *md_field(const char *label, const char *value, size_t max)
{
    sh_buf b;
    sh_buf_init(&b);
    sh_buf_append_str(&b, "*");
    sh_buf_append_str(&b, label);
    sh_buf_append_str(&b, "*\n");
    md_escape(&b, value, max);
    json_t *f = json_pack("{s:s, s:o*}", "type", "mrkdwn", "text", json_buf(&b));
    sh_buf_free(&b);
    return f;
}

static json_t *slack_ticket_field(const notify_msg *m)
{
    sh_buf b;
    sh_buf_init(&b);
    sh_buf_append_str(&b, "*Ticket*\n");
    if (m->url != NULL) {
        sh_buf_append_byte(&b, '<');
        sh_buf_append_str(&b, m->url);
        sh_buf_append_byte(&b, '|');
        if (m->ticket_id != NULL) {
            sh_buf_append_byte(&b, '#');
            md_escape(&b, m->ticket_id, B_TICKET);
        } else {
            sh_buf_append_str(&b, "open");
        }
        sh_buf_append_byte(&b, '>');
    } else {
        sh_buf_append_byte(&b, '#');
        md_escape(&b, m->ticket_id, B_TICKET);
    }
    json_t *f = json_pack("{s:s, s:o*}", "type", "mrkdwn", "text", json_buf(&b));
    sh_buf_free(&b);
    return f;
}

/* The change as a code block: mrkdwn-escaped, a run of backticks broken
 * (U+200B) so the block cannot be closed early, at most B_SLACK_DIFF
 * bytes of text; "(cut; full patch)" linked when there is more. */
static json_t *slack_diff_block(const notify_msg *m)
{
    sh_buf b;
    sh_buf_init(&b);
    sh_buf_append_str(&b, "*Change*");
    int cut = m->diff_cut;
    size_t head = b.len + 64 + (m->patch_url != NULL ? strlen(m->patch_url) : 0);
    sh_buf code;
    sh_buf_init(&code);
    for (const char *p = m->diff; *p != '\0'; p++) {
        size_t k = sh_utf8_seq_len((const unsigned char *)p, strlen(p));
        if (code.len + head + 8 + (k > 0 ? k : 1) > B_SLACK_DIFF) {
            sh_buf_append_str(&code, ELLIPSIS);
            cut = 1;
            break;
        }
        if (*p == '&')
            sh_buf_append_str(&code, "&amp;");
        else if (*p == '<')
            sh_buf_append_str(&code, "&lt;");
        else if (*p == '>')
            sh_buf_append_str(&code, "&gt;");
        else if (*p == '`' && p[1] == '`')
            sh_buf_append_str(&code, "`\xE2\x80\x8B");
        else if (k > 1) {
            sh_buf_append(&code, p, k);
            p += k - 1;
        } else
            sh_buf_append_byte(&code, *p);
    }
    if (m->patch_url != NULL) {
        sh_buf_append_str(&b, cut ? " (cut; <" : " (<");
        sh_buf_append_str(&b, m->patch_url);
        sh_buf_append_str(&b, "|full patch>)");
    } else if (cut) {
        sh_buf_append_str(&b, " (cut)");
    }
    sh_buf_append_str(&b, "\n```\n");
    sh_buf_append(&b, code.data ? code.data : "", code.len);
    sh_buf_append_str(&b, "\n```");
    b.oom |= code.oom;
    sh_buf_free(&code);
    json_t *block = json_pack("{s:s, s:{s:s, s:o*}}", "type", "section", "text", "type", "mrkdwn",
                              "text", json_buf(&b));
    sh_buf_free(&b);
    return block;
}

static json_t *slack_button(const char *label, const char *url, const char *action_id,
                            const char *style)
{
    json_t *btn = json_pack("{s:s, s:{s:s, s:s}, s:s, s:s}", "type", "button", "text", "type",
                            "plain_text", "text", label, "url", url, "action_id", action_id);
    if (btn != NULL && style != NULL)
        json_object_set_new(btn, "style", json_string(style));
    return btn;
}

/* A Slack member id (U or W, then upper-case letters and digits). */
static int slack_member_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 20 || (s[0] != 'U' && s[0] != 'W'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')))
            return 0;
    return 1;
}

/* "*Owners*" and the owners: a member id (bare or after '@') as a
 * mention, <@U...>; any other as escaped text. */
static json_t *slack_owners_field(const notify_msg *m)
{
    sh_buf b;
    sh_buf_init(&b);
    sh_buf_append_str(&b, "*Owners*\n");
    for (size_t i = 0; i < m->n_owners; i++) {
        const char *o = m->owners[i];
        const char *id = o[0] == '@' ? o + 1 : o;
        if (i > 0)
            sh_buf_append_str(&b, ", ");
        if (slack_member_id(id))
            sh_buf_appendf(&b, "<@%s>", id);
        else
            md_escape(&b, o, B_OWNER);
    }
    json_t *field = json_pack("{s:s, s:o*}", "type", "mrkdwn", "text", json_buf(&b));
    sh_buf_free(&b);
    return field;
}

json_t *notify_slack_body(const notify_msg *m)
{
    const char *sev = or_default(m->severity, "unknown");
    const char *service = or_default(m->service, "unknown service");
    sh_buf hb, tb;
    sh_buf_init(&hb);
    sh_buf_init(&tb);
    json_t *body = NULL, *blocks = json_array(), *fields = json_array();
    if (blocks == NULL || fields == NULL)
        goto cleanup;

    /* header: plain text, at most 150 characters */
    sh_buf_append_byte(&hb, '[');
    for (const char *p = sev; *p; p++)
        sh_buf_append_byte(&hb, (*p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p);
    sh_buf_append_str(&hb, "] SelfHeal ");
    sh_buf_append_str(&hb, or_default(m->kind, "ticket"));
    sh_buf_append_str(&hb, ": ");
    sh_buf_append_str(&hb, service);
    if (!hb.oom && hb.len > B_SLACK_HEADER)
        hb.len = sh_utf8_truncate(hb.data, hb.len, B_SLACK_HEADER);
    json_array_append_new(blocks, json_pack("{s:s, s:{s:s, s:o*}}", "type", "header", "text",
                                            "type", "plain_text", "text", json_buf(&hb)));

    /* fallback text for notifications and clients without blocks */
    sh_buf_append_str(&tb, "SelfHeal [");
    md_escape(&tb, sev, B_SEVERITY);
    sh_buf_append_str(&tb, "] ");
    md_escape(&tb, service, B_SERVICE);
    if (m->error != NULL) {
        sh_buf first;
        sh_buf_init(&first);
        first_line(&first, m->error, 200);
        sh_buf_append_byte(&first, '\0');
        sh_buf_append_str(&tb, ": ");
        if (!first.oom)
            md_escape(&tb, first.data, 210);
        sh_buf_free(&first);
    }

    json_array_append_new(fields, md_field("Service", service, B_SERVICE));
    json_array_append_new(fields, md_field("Severity", sev, B_SEVERITY));
    if (m->n_owners > 0)
        json_array_append_new(fields, slack_owners_field(m));
    if (m->error != NULL)
        json_array_append_new(fields, md_field("Error", m->error, B_SLACK_ERROR));
    if (m->path != NULL)
        json_array_append_new(fields, md_field("Path", m->path, B_PATH));
    if (m->count >= 0) {
        char num[32];
        snprintf(num, sizeof(num), "%lld", m->count);
        json_array_append_new(fields, md_field("Count", num, sizeof(num)));
    }
    if (m->url != NULL || m->ticket_id != NULL)
        json_array_append_new(fields, slack_ticket_field(m));
    json_array_append_new(blocks, json_pack("{s:s, s:O}", "type", "section", "fields", fields));
    if (m->diff != NULL)
        json_array_append_new(blocks, slack_diff_block(m));

    if (m->fingerprint != NULL) {
        sh_buf cb;
        sh_buf_init(&cb);
        sh_buf_append_str(&cb, "fingerprint ");
        md_escape(&cb, m->fingerprint, B_FP);
        json_array_append_new(blocks,
                              json_pack("{s:s, s:[{s:s, s:o*}]}", "type", "context", "elements",
                                        "type", "mrkdwn", "text", json_buf(&cb)));
        sh_buf_free(&cb);
    }
    if (m->audit[0] != '\0')
        json_array_append_new(blocks, json_pack("{s:s, s:[{s:s, s:s}]}", "type", "context",
                                                "elements", "type", "mrkdwn", "text", m->audit));
    if (m->approve_url != NULL && m->skip_url != NULL) {
        char until[40];
        format_utc(until, sizeof(until), m->links_expire);
        json_array_append_new(
            blocks,
            json_pack("{s:s, s:s, s:[o*, o*]}", "type", "actions", "block_id", "self_heal_decision",
                      "elements", slack_button("Approve", m->approve_url, "approve", "primary"),
                      slack_button("Skip", m->skip_url, "skip", NULL)));
        char note[80];
        snprintf(note, sizeof(note), "Links expire %s.", until);
        json_array_append_new(blocks, json_pack("{s:s, s:[{s:s, s:s}]}", "type", "context",
                                                "elements", "type", "mrkdwn", "text", note));
    }
    if (hb.oom || tb.oom)
        goto cleanup;
    body = json_pack("{s:o*, s:O}", "text", json_buf(&tb), "blocks", blocks);

cleanup:
    json_decref(blocks);
    json_decref(fields);
    sh_buf_free(&hb);
    sh_buf_free(&tb);
    return body;
}

/* ------------------------------------------------------------ Telegram body */

static void text_line(sh_buf *b, const char *label, const char *value)
{
    if (value == NULL)
        return;
    sh_buf_append_str(b, label);
    sh_buf_append_str(b, value);
    sh_buf_append_byte(b, '\n');
}

/* The plain-text summary shared by Telegram and email; the error and the
 * change come last so that a cut only shortens them. */
static void summary_text(sh_buf *b, const notify_msg *m, int with_links)
{
    sh_buf_append_str(b, "SelfHeal [");
    sh_buf_append_str(b, or_default(m->severity, "unknown"));
    sh_buf_append_str(b, "] ");
    sh_buf_append_str(b, or_default(m->kind, "ticket"));
    sh_buf_append_str(b, "\n\n");
    text_line(b, "Service: ", or_default(m->service, "unknown"));
    if (m->n_owners > 0) {
        sh_buf_append_str(b, "Owners: ");
        for (size_t i = 0; i < m->n_owners; i++) {
            sh_buf_append_str(b, i > 0 ? ", " : "");
            sh_buf_append_str(b, m->owners[i]);
        }
        sh_buf_append_byte(b, '\n');
    }
    text_line(b, "Severity: ", m->severity);
    text_line(b, "Path: ", m->path);
    if (m->count >= 0) {
        char num[32];
        snprintf(num, sizeof(num), "%lld", m->count);
        text_line(b, "Count: ", num);
    }
    text_line(b, "Ticket: #", m->ticket_id);
    text_line(b, "Ticket URL: ", m->url);
    text_line(b, "Fingerprint: ", m->fingerprint);
    text_line(b, "Full patch: ", m->patch_url);
    text_line(b, "", m->audit[0] != '\0' ? m->audit : NULL);
    if (with_links && m->approve_url != NULL && m->skip_url != NULL) {
        char until[40];
        format_utc(until, sizeof(until), m->links_expire);
        sh_buf_append_byte(b, '\n');
        text_line(b, "Approve: ", m->approve_url);
        text_line(b, "Skip: ", m->skip_url);
        text_line(b, "(links expire ", until);
        if (!b->oom && b->len > 0)
            b->data[b->len - 1] = ')';
        sh_buf_append_byte(b, '\n');
    }
    if (m->error != NULL) {
        sh_buf_append_str(b, "\nError:\n");
        sh_buf_append_str(b, m->error);
        sh_buf_append_byte(b, '\n');
    }
    if (m->diff != NULL) {
        sh_buf_append_str(b, !m->diff_cut           ? "\nChange:\n"
                             : m->patch_url != NULL ? "\nChange (cut; the full patch above):\n"
                                                    : "\nChange (cut):\n");
        sh_buf_append_str(b, m->diff);
        sh_buf_append_byte(b, '\n');
    }
}

json_t *notify_telegram_body(const notify_msg *m, const char *chat_id)
{
    sh_buf b;
    sh_buf_init(&b);
    summary_text(&b, m, 0);
    if (!b.oom && b.len > TG_TEXT_MAX) {
        /* UTF-16 code units <= UTF-8 bytes, so 4096 bytes fit Telegram's
         * 4096-character limit. */
        b.len = sh_utf8_truncate(b.data, b.len, TG_TEXT_MAX - (sizeof(ELLIPSIS) - 1));
        sh_buf_append_str(&b, ELLIPSIS);
    }
    json_t *body = json_pack("{s:s, s:o*, s:b}", "chat_id", chat_id ? chat_id : "", "text",
                             json_buf(&b), "disable_web_page_preview", 1);
    sh_buf_free(&b);
    /* callback_data is at most 64 bytes: "a:" + id needs an id <= 62. */
    size_t idlen = strlen(m->action_id);
    if (body != NULL && idlen > 0 && idlen + 2 <= TG_CALLBACK_MAX) {
        char approve[sizeof(m->action_id) + 2], skip[sizeof(m->action_id) + 2];
        snprintf(approve, sizeof(approve), "a:%s", m->action_id);
        snprintf(skip, sizeof(skip), "s:%s", m->action_id);
        json_object_set_new(body, "reply_markup",
                            json_pack("{s:[[{s:s, s:s}, {s:s, s:s}]]}", "inline_keyboard", "text",
                                      "Approve", "callback_data", approve, "text", "Skip",
                                      "callback_data", skip));
    }
    return body;
}

/* ------------------------------------------------------------ email body */

/* Header values: control characters (CR/LF included) removed. */
static void header_value(sh_buf *b, const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x20 && *s != 0x7f)
            sh_buf_append_byte(b, *s);
}

static int is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 0;
    return 1;
}

/* RFC 2047 encoded words of at most 45 bytes of UTF-8 each (60 base64
 * characters, so every word stays under 76), folded onto new lines. */
static void header_encoded(sh_buf *b, const char *s)
{
    size_t n = strlen(s), pos = 0;
    while (pos < n) {
        size_t take = sh_utf8_truncate(s + pos, n - pos, 45);
        if (take == 0)
            take = n - pos < 45 ? n - pos : 45;
        unsigned char enc[64];
        int len = EVP_EncodeBlock(enc, (const unsigned char *)s + pos, (int)take);
        if (pos > 0)
            sh_buf_append_str(b, "\r\n ");
        sh_buf_append_str(b, "=?UTF-8?B?");
        sh_buf_append(b, enc, (size_t)len);
        sh_buf_append_str(b, "?=");
        pos += take;
    }
}

static void rfc5322_date(char *out, size_t outlen, int64_t now)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)now;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
        tm.tm_mon > 11) {
        snprintf(out, outlen, "Thu, 01 Jan 1970 00:00:00 +0000");
        return;
    }
    snprintf(out, outlen, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Appends text with CRLF line ends, lines cut at 900 bytes (SMTP allows
 * 998), at code points. */
static void body_crlf(sh_buf *b, const char *text, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t n = 0;
        while (i + n < len && text[i + n] != '\n')
            n++;
        size_t done = 0;
        do {
            size_t take =
                n - done > 900 ? sh_utf8_truncate(text + i + done, n - done, 900) : n - done;
            if (take == 0)
                take = n - done;
            sh_buf_append(b, text + i + done, take);
            sh_buf_append_str(b, "\r\n");
            done += take;
        } while (done < n);
        i += n + 1;
    }
}

int notify_email_build(sh_buf *out, const notify_msg *m, const char *from, const char *const *to,
                       size_t nto, int64_t now, const char *message_id)
{
    if (from == NULL || !valid_addr(from) || nto == 0 || message_id == NULL)
        return -1;
    for (size_t i = 0; i < nto; i++)
        if (to[i] == NULL || !valid_addr(to[i]))
            return -1;
    char date[64];
    rfc5322_date(date, sizeof(date), now);

    sh_buf subject, text;
    sh_buf_init(&subject);
    sh_buf_init(&text);
    sh_buf_append_str(&subject, "[SelfHeal] ");
    sh_buf_append_str(&subject, or_default(m->severity, "unknown"));
    sh_buf_append_byte(&subject, ' ');
    sh_buf_append_str(&subject, or_default(m->service, "unknown"));
    if (m->error != NULL) {
        sh_buf_append_str(&subject, ": ");
        first_line(&subject, m->error, 100);
    }
    if (!subject.oom && subject.len > B_SUBJECT)
        subject.len = sh_utf8_truncate(subject.data, subject.len, B_SUBJECT);
    sh_buf_append_byte(&subject, '\0');

    sh_buf_append_str(out, "Date: ");
    sh_buf_append_str(out, date);
    sh_buf_append_str(out, "\r\nFrom: <");
    header_value(out, from);
    sh_buf_append_str(out, ">\r\nTo: ");
    for (size_t i = 0; i < nto; i++) {
        sh_buf_append_str(out, i ? ",\r\n <" : "<");
        header_value(out, to[i]);
        sh_buf_append_byte(out, '>');
    }
    sh_buf_append_str(out, "\r\nSubject: ");
    if (!subject.oom) {
        sh_buf clean;
        sh_buf_init(&clean);
        header_value(&clean, subject.data);
        sh_buf_append_byte(&clean, '\0');
        if (!clean.oom && is_ascii(clean.data))
            sh_buf_append_str(out, clean.data);
        else if (!clean.oom)
            header_encoded(out, clean.data);
        out->oom |= clean.oom;
        sh_buf_free(&clean);
    }
    sh_buf_append_str(out, "\r\nMessage-ID: <");
    header_value(out, message_id);
    sh_buf_append_str(out, ">\r\nMIME-Version: 1.0\r\n"
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "Content-Transfer-Encoding: 8bit\r\n"
                           "Auto-Submitted: auto-generated\r\n");
    if (m->fingerprint != NULL) {
        sh_buf_append_str(out, "X-SelfHeal-Fingerprint: ");
        header_value(out, m->fingerprint);
        sh_buf_append_str(out, "\r\n");
    }
    sh_buf_append_str(out, "\r\n");
    summary_text(&text, m, 1);
    if (!text.oom)
        body_crlf(out, text.data ? text.data : "", text.len);
    int oom = out->oom || subject.oom || text.oom;
    sh_buf_free(&subject);
    sh_buf_free(&text);
    return oom ? -1 : 0;
}

/* ------------------------------------------------------------ Telegram updates */

static int valid_cq_id(const char *s)
{
    size_t n = strnlen(s, 65);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

/* "@username" when it is a valid Telegram username, else "tg:<id>". */
static void callback_from(char *out, size_t outlen, json_t *from)
{
    json_t *user = json_object_get(from, "username");
    json_t *id = json_object_get(from, "id");
    if (json_is_string(user)) {
        const char *u = json_string_value(user);
        size_t n = json_string_length(user);
        int ok = n >= 1 && n <= 32;
        for (size_t i = 0; ok && i < n; i++)
            ok = (u[i] >= 'a' && u[i] <= 'z') || (u[i] >= 'A' && u[i] <= 'Z') ||
                 (u[i] >= '0' && u[i] <= '9') || u[i] == '_';
        if (ok) {
            snprintf(out, outlen, "@%s", u);
            return;
        }
    }
    if (json_is_integer(id))
        snprintf(out, outlen, "tg:%lld", (long long)json_integer_value(id));
    else
        snprintf(out, outlen, "telegram");
}

static int chat_matches(json_t *cq, const char *chat_id)
{
    if (chat_id == NULL || chat_id[0] == '\0')
        return 1;
    json_t *chat = json_object_get(json_object_get(json_object_get(cq, "message"), "chat"), "id");
    char num[32];
    if (json_is_integer(chat)) {
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(chat));
        return strcmp(num, chat_id) == 0;
    }
    return 0;
}

static json_t *callback_entry(json_t *cq, const char *chat_id)
{
    json_t *id = json_object_get(cq, "id");
    if (!json_is_string(id) || !valid_cq_id(json_string_value(id)))
        return NULL;
    char from[48];
    callback_from(from, sizeof(from), json_object_get(cq, "from"));
    json_t *e = json_pack("{s:O, s:s, s:b}", "callback_query_id", id, "from", from, "accepted", 0);
    json_t *data = json_object_get(cq, "data");
    if (e == NULL || !json_is_string(data) || json_string_length(data) > TG_CALLBACK_MAX ||
        !chat_matches(cq, chat_id))
        return e;
    const char *d = json_string_value(data);
    size_t n = json_string_length(data);
    const char *action = starts_with(d, "a:") ? "approve" : starts_with(d, "s:") ? "skip" : NULL;
    if (action == NULL || !valid_action_id_n(d + 2, n - 2))
        return e;
    json_object_set_new(e, "action", json_string(action));
    json_object_set_new(e, "action_id", json_stringn(d + 2, n - 2));
    json_object_set_new(e, "accepted", json_true());
    return e;
}

int notify_telegram_updates(json_t **out, int64_t *next_offset, json_t *reply, int64_t offset,
                            const char *chat_id)
{
    *out = NULL;
    *next_offset = offset;
    json_t *result = json_object_get(reply, "result");
    if (!json_is_object(reply) || !json_is_true(json_object_get(reply, "ok")) ||
        !json_is_array(result))
        return -1;
    json_t *entries = json_array();
    if (entries == NULL)
        return -1;
    int64_t next = offset;
    size_t n = json_array_size(result);
    if (n > TG_UPDATES_MAX)
        n = TG_UPDATES_MAX;
    for (size_t i = 0; i < n; i++) {
        json_t *u = json_array_get(result, i);
        json_t *uid = json_object_get(u, "update_id");
        if (!json_is_integer(uid) || json_integer_value(uid) < 0 ||
            json_integer_value(uid) > ((json_int_t)1 << 53))
            continue;
        if (json_integer_value(uid) + 1 > next)
            next = json_integer_value(uid) + 1;
        json_t *cq = json_object_get(u, "callback_query");
        if (!json_is_object(cq))
            continue;
        json_t *e = callback_entry(cq, chat_id);
        if (e != NULL)
            json_array_append_new(entries, e);
    }
    *out = entries;
    *next_offset = next;
    return 0;
}

/* ------------------------------------------------------------ channels */

typedef struct chan_job {
    const char *name;
    port_ctx *ctx;
    const notify_msg *msg;
    int max_attempts;
    long timeout_ms;
    long backoff_ms;
    const char *secret; /* Slack webhook URL or Telegram bot token (env) */
    char api[512];      /* Telegram API base */
    char chat_id[64];   /* Telegram */
    char smtp_url[512]; /* email */
    char from[ADDR_MAX + 1];
    char to[RCPT_MAX][ADDR_MAX + 1];
    size_t nto;
    const char *user, *pass;
    long use_ssl;
    int (*send)(struct chan_job *job);
    /* result */
    int ok;
    int attempts;
    char error[256];
    pthread_t thread;
    int started;
} chan_job;

static void job_error(chan_job *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void job_error(chan_job *job, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->error, sizeof(job->error), fmt, ap);
    va_end(ap);
    redact(job->error, job->secret);
    redact(job->error, job->pass);
}

static long long conf_int(port_ctx *ctx, const char *channel, const char *key, long long dflt,
                          long long lo, long long hi)
{
    char path[96];
    snprintf(path, sizeof(path), "notify.%s.%s", channel, key);
    long long v = port_config_int(ctx, path, dflt);
    return v < lo ? lo : v > hi ? hi : v;
}

static const char *conf_str(port_ctx *ctx, const char *channel, const char *key, const char *dflt,
                            char *buf, size_t buflen)
{
    char path[96];
    snprintf(path, sizeof(path), "notify.%s.%s", channel, key);
    return port_config_string(ctx, path, dflt, buf, buflen);
}

static int env_name_ok(const char *s)
{
    size_t n = strnlen(s, 65);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* The secret in the environment variable named by notify.<ch>.<key>. */
static const char *conf_secret(chan_job *job, const char *key, const char *dflt, int required)
{
    char name[80];
    conf_str(job->ctx, job->name, key, dflt, name, sizeof(name));
    if (!env_name_ok(name)) {
        job_error(job, "notify.%s.%s must name an environment variable", job->name, key);
        return NULL;
    }
    const char *v = port_secret(name);
    if (v == NULL && required)
        job_error(job, "environment variable %s is not set", name);
    return v;
}

static int telegram_token_ok(const char *t)
{
    size_t n = strnlen(t, 129);
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z') ||
              (t[i] >= '0' && t[i] <= '9') || t[i] == '_' || t[i] == '-' || t[i] == ':'))
            return 0;
    return 1;
}

static int slack_send(chan_job *job);
static int email_send(chan_job *job);
static int telegram_send(chan_job *job);

static int load_slack(chan_job *job)
{
    job->secret = conf_secret(job, "webhook_url_env", "SLACK_WEBHOOK_URL", 1);
    if (job->secret == NULL)
        return -1;
    if (!valid_url(job->secret, 2048)) {
        job->secret = NULL; /* not a URL: never echo it */
        job_error(job, "the Slack webhook URL is not an http(s) URL");
        return -1;
    }
    job->send = slack_send;
    return 0;
}

static int load_telegram(chan_job *job)
{
    conf_str(job->ctx, job->name, "api", "https://api.telegram.org", job->api, sizeof(job->api));
    size_t n = strlen(job->api);
    while (n > 0 && job->api[n - 1] == '/')
        job->api[--n] = '\0';
    if (!valid_url(job->api, 400)) {
        job_error(job, "notify.telegram.api must be an http(s) URL");
        return -1;
    }
    json_t *chat = port_config_get(job->ctx, "notify.telegram.chat_id");
    if (json_is_integer(chat))
        snprintf(job->chat_id, sizeof(job->chat_id), "%lld", (long long)json_integer_value(chat));
    else if (json_is_string(chat) && json_string_length(chat) < sizeof(job->chat_id))
        snprintf(job->chat_id, sizeof(job->chat_id), "%s", json_string_value(chat));
    json_decref(chat);
    int chat_ok = 1;
    for (const char *p = job->chat_id; *p; p++)
        chat_ok &= (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f;
    if (!chat_ok)
        job->chat_id[0] = '\0';
    job->secret = conf_secret(job, "token_env", "TELEGRAM_BOT_TOKEN", 1);
    if (job->secret == NULL)
        return -1;
    if (!telegram_token_ok(job->secret)) {
        job->secret = NULL;
        job_error(job, "the Telegram bot token has unexpected characters");
        return -1;
    }
    job->send = telegram_send;
    return 0;
}

static int load_email(chan_job *job)
{
    conf_str(job->ctx, job->name, "url", "", job->smtp_url, sizeof(job->smtp_url));
    size_t skip = starts_with(job->smtp_url, "smtps://")  ? 8
                  : starts_with(job->smtp_url, "smtp://") ? 7
                                                          : 0;
    int url_ok = skip > 0 && job->smtp_url[skip] != '\0';
    for (const char *p = job->smtp_url; url_ok && *p; p++)
        url_ok = (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f && *p != '@';
    if (!url_ok) {
        job_error(job, "notify.email.url must be smtp://host:port or smtps://host:port "
                       "(credentials go in username_env/password_env)");
        return -1;
    }
    conf_str(job->ctx, job->name, "from", "", job->from, sizeof(job->from));
    if (!valid_addr(job->from)) {
        job_error(job, "notify.email.from must be an address like ops@example.com");
        return -1;
    }
    json_t *to = port_config_get(job->ctx, "notify.email.to");
    if (json_is_string(to)) {
        json_t *one = json_pack("[O]", to);
        json_decref(to);
        to = one;
    }
    size_t i;
    json_t *v;
    json_array_foreach(to, i, v)
    {
        if (job->nto == RCPT_MAX || !json_is_string(v) || !valid_addr(json_string_value(v))) {
            json_decref(to);
            job_error(job, "notify.email.to must be 1 to %d addresses", RCPT_MAX);
            return -1;
        }
        snprintf(job->to[job->nto++], ADDR_MAX + 1, "%s", json_string_value(v));
    }
    json_decref(to);
    if (job->nto == 0) {
        job_error(job, "notify.email.to must be 1 to %d addresses", RCPT_MAX);
        return -1;
    }
    char tls[16];
    conf_str(job->ctx, job->name, "starttls", "try", tls, sizeof(tls));
    if (strcmp(tls, "try") == 0)
        job->use_ssl = CURLUSESSL_TRY;
    else if (strcmp(tls, "required") == 0)
        job->use_ssl = CURLUSESSL_ALL;
    else if (strcmp(tls, "off") == 0)
        job->use_ssl = CURLUSESSL_NONE;
    else {
        job_error(job, "notify.email.starttls must be try, required or off");
        return -1;
    }
    char name[80];
    if (conf_str(job->ctx, job->name, "username_env", "", name, sizeof(name))[0] != '\0') {
        job->user = conf_secret(job, "username_env", "", 0);
        job->pass = conf_secret(job, "password_env", "", 0);
        if (job->error[0] != '\0')
            return -1;
    }
    job->send = email_send;
    return 0;
}

static int job_load(chan_job *job, port_ctx *ctx, const char *name, const notify_msg *msg)
{
    memset(job, 0, sizeof(*job));
    job->name = name;
    job->ctx = ctx;
    job->msg = msg;
    job->max_attempts = (int)conf_int(ctx, name, "max_attempts", 3, 1, 10);
    job->timeout_ms = (long)conf_int(ctx, name, "timeout_ms", 15000, 100, 300000);
    job->backoff_ms = (long)conf_int(ctx, name, "backoff_ms", 500, 1, 60000);
    if (strcmp(name, "slack") == 0)
        return load_slack(job);
    if (strcmp(name, "telegram") == 0)
        return load_telegram(job);
    return load_email(job);
}

static void job_clear(chan_job *job)
{
    OPENSSL_cleanse(job->api, sizeof(job->api));
    job->secret = job->user = job->pass = NULL;
}

static http_request job_request(const chan_job *job, const char *url, const char *body)
{
    static const char *const json_headers[] = {"Content-Type: application/json",
                                               "Accept: application/json", NULL};
    http_request req;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = url;
    req.headers = json_headers;
    req.body = body;
    req.body_len = body ? strlen(body) : 0;
    req.timeout_ms = job->timeout_ms;
    req.max_attempts = job->max_attempts;
    req.backoff_base_ms = job->backoff_ms;
    req.cancel = &job->ctx->stopping;
    return req;
}

static int slack_send(chan_job *job)
{
    json_t *payload = notify_slack_body(job->msg);
    char *body = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    json_decref(payload);
    if (body == NULL) {
        job_error(job, "could not build the message");
        return -1;
    }
    http_request req = job_request(job, job->secret, body);
    http_response res;
    int rc = http_perform(&res, &req);
    free(body);
    job->attempts = res.attempts;
    char word[72];
    body_word(word, sizeof(word), res.body ? res.body : "", res.body_len);
    if (rc != 0)
        job_error(job, "request failed: %s", res.error);
    else if (res.status == 200 && strcmp(word, "ok") == 0)
        job->ok = 1;
    else if (res.status == 200)
        job_error(job, "unexpected reply to the webhook");
    else
        job_error(job, "HTTP %ld%s%s", res.status, word[0] ? ": " : "", word);
    http_response_free(&res);
    return job->ok ? 0 : -1;
}

/* {api}/bot<token>/<method> into url (cleansed by the caller). */
static int telegram_url(char *url, size_t len, const chan_job *job, const char *method)
{
    int n = snprintf(url, len, "%s/bot%s/%s", job->api, job->secret, method);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* POSTs payload to a Bot API method; *reply is the parsed {"ok": true,
 * ...} object. */
static int telegram_call(chan_job *job, const char *method, json_t *payload, long timeout_ms,
                         int max_attempts, json_t **reply)
{
    char url[1024];
    *reply = NULL;
    char *body = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    if (body == NULL || telegram_url(url, sizeof(url), job, method) != 0) {
        free(body);
        job_error(job, "could not build the %s request", method);
        return -1;
    }
    http_request req = job_request(job, url, body);
    req.timeout_ms = timeout_ms;
    req.max_attempts = max_attempts;
    http_response res;
    int rc = http_perform(&res, &req);
    OPENSSL_cleanse(url, sizeof(url));
    free(body);
    job->attempts = res.attempts;
    json_t *doc = NULL;
    if (rc != 0) {
        job_error(job, "%s failed: %s", method, res.error);
    } else {
        doc = json_loadb(res.body ? res.body : "", res.body_len, JSON_REJECT_DUPLICATES, NULL);
        if (res.status != 200) {
            json_t *desc = json_object_get(doc, "description");
            char text[120] = "";
            if (json_is_string(desc)) {
                sh_buf b;
                sh_buf_init(&b);
                header_value(&b, json_string_value(desc));
                size_t keep = b.oom ? 0 : sh_utf8_truncate(b.data ? b.data : "", b.len, 100);
                snprintf(text, sizeof(text), ": %.*s", (int)keep, b.data ? b.data : "");
                sh_buf_free(&b);
            }
            job_error(job, "%s: HTTP %ld%s", method, res.status, text);
        } else if (!json_is_object(doc) || !json_is_true(json_object_get(doc, "ok")) ||
                   json_object_get(doc, "result") == NULL) {
            job_error(job, "%s: malformed reply", method);
        } else {
            *reply = doc;
            doc = NULL;
        }
    }
    json_decref(doc);
    http_response_free(&res);
    return *reply != NULL ? 0 : -1;
}

static int telegram_send(chan_job *job)
{
    if (job->chat_id[0] == '\0') {
        job_error(job, "notify.telegram.chat_id is not set");
        return -1;
    }
    json_t *payload = notify_telegram_body(job->msg, job->chat_id);
    if (payload == NULL) {
        job_error(job, "could not build the message");
        return -1;
    }
    json_t *reply = NULL;
    int rc = telegram_call(job, "sendMessage", payload, job->timeout_ms, job->max_attempts, &reply);
    json_decref(payload);
    if (rc == 0 && !json_is_object(json_object_get(reply, "result"))) {
        job_error(job, "sendMessage: malformed reply");
        rc = -1;
    }
    json_decref(reply);
    job->ok = rc == 0;
    return rc;
}

typedef struct upload {
    const char *data;
    size_t len, pos;
} upload;

static size_t upload_read(char *dst, size_t size, size_t nmemb, void *arg)
{
    upload *u = arg;
    size_t room = size * nmemb, left = u->len - u->pos;
    size_t n = left < room ? left : room;
    memcpy(dst, u->data + u->pos, n);
    u->pos += n;
    return n;
}

static int smtp_transient(CURLcode rc, long code)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT ||
           rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING ||
           (code >= 400 && code < 500);
}

/* Aborts a transfer when the port is stopping. */
static int smtp_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                         curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    const atomic_int *stopping = arg;
    return *stopping ? 1 : 0;
}

static CURLcode smtp_once(chan_job *job, const char *data, size_t len, long *code)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return CURLE_OUT_OF_MEMORY;
    struct curl_slist *rcpt = NULL;
    char addr[ADDR_MAX + 3];
    for (size_t i = 0; i < job->nto; i++) {
        snprintf(addr, sizeof(addr), "<%s>", job->to[i]);
        struct curl_slist *next = curl_slist_append(rcpt, addr);
        if (next == NULL) {
            curl_slist_free_all(rcpt);
            curl_easy_cleanup(h);
            return CURLE_OUT_OF_MEMORY;
        }
        rcpt = next;
    }
    upload up = {data, len, 0};
    snprintf(addr, sizeof(addr), "<%s>", job->from);
    curl_easy_setopt(h, CURLOPT_URL, job->smtp_url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#endif
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, addr);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, upload_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &up);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_USE_SSL, job->use_ssl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, smtp_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)&job->ctx->stopping);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, job->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     job->timeout_ms < 5000 ? job->timeout_ms : 5000L);
    if (job->user != NULL)
        curl_easy_setopt(h, CURLOPT_USERNAME, job->user);
    if (job->pass != NULL)
        curl_easy_setopt(h, CURLOPT_PASSWORD, job->pass);
    CURLcode rc = curl_easy_perform(h);
    *code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(h);
    return rc;
}

/* "<unix>.<16 hex>@<domain of from>" */
static void message_id(char *out, size_t outlen, const char *from, int64_t now)
{
    unsigned char rnd[8] = {0};
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        uint64_t x = (uint64_t)now * 6364136223846793005ULL + (uint64_t)(uintptr_t)out;
        memcpy(rnd, &x, sizeof(rnd));
    }
    const char *at = strchr(from, '@');
    snprintf(out, outlen, "%lld.%02x%02x%02x%02x%02x%02x%02x%02x@%s", (long long)now, rnd[0],
             rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], at ? at + 1 : "self-heal");
}

/* A uniform value in [0, 1) for backoff jitter. */
static double jitter(void)
{
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        return 0.5;
    return (double)r / 4294967296.0;
}

static int email_send(chan_job *job)
{
    int64_t now = (int64_t)time(NULL);
    char mid[ADDR_MAX + 48];
    message_id(mid, sizeof(mid), job->from, now);
    const char *to[RCPT_MAX];
    for (size_t i = 0; i < job->nto; i++)
        to[i] = job->to[i];
    sh_buf mail;
    sh_buf_init(&mail);
    if (notify_email_build(&mail, job->msg, job->from, to, job->nto, now, mid) != 0) {
        sh_buf_free(&mail);
        job_error(job, "could not build the message");
        return -1;
    }
    http_request backoff = {0};
    backoff.backoff_base_ms = job->backoff_ms;
    for (int attempt = 0; attempt < job->max_attempts; attempt++) {
        if (attempt > 0) {
            port_sleep_ms(http_backoff_ms(&backoff, attempt - 1, -1, jitter()),
                          &job->ctx->stopping);
            if (job->ctx->stopping)
                break;
        }
        long code = 0;
        CURLcode rc = smtp_once(job, mail.data, mail.len, &code);
        job->attempts = attempt + 1;
        if (rc == CURLE_OK) {
            job->ok = 1;
            break;
        }
        if (code > 0)
            job_error(job, "%s (SMTP %ld)", curl_easy_strerror(rc), code);
        else
            job_error(job, "%s", curl_easy_strerror(rc));
        if (!smtp_transient(rc, code))
            break;
    }
    sh_buf_free(&mail);
    return job->ok ? 0 : -1;
}

static void *job_main(void *arg)
{
    chan_job *job = arg;
    job->send(job);
    return NULL;
}

/* ------------------------------------------------------------ notify */

/* Opens the state database and audit log of "state_dir" when configured
 * and not open yet; without one, both stay NULL and are skipped. */
static void ensure_state(port_ctx *ctx)
{
    cmd_error ignored = {NULL, ""};
    (void)state_ctx_ensure(ctx, &ignored);
}

/* The channel's audit record: appended, or added to records (effect.h). */
static void audit_result(port_ctx *ctx, const notify_msg *m, const char *channel, json_t *result,
                         json_t *records)
{
    audit_log *a = port_audit(ctx);
    if (a == NULL && records == NULL)
        return;
    int ok = json_is_true(json_object_get(result, "ok"));
    json_t *f = json_pack("{s:s, s:s*, s:s*, s:s*}", "channel", channel, "ticket_id", m->ticket_id,
                          "kind", m->kind, "fingerprint", m->fingerprint);
    if (f != NULL && !ok)
        json_object_set(f, "error", json_object_get(result, "error"));
    const char *action = ok ? "notification_sent" : "notification_failed";
    if (records != NULL) {
        effect_audit_add(&records, action, f);
        return;
    }
    if (f != NULL)
        audit_append(a, action, f);
    json_decref(f);
}

static json_t *failure(const char *error)
{
    return json_pack("{s:b, s:s}", "ok", 0, "error", error);
}

/* Sends m to every enabled channel, each on its own thread, with the
 * audit log's head published in it; the audit records are appended, or
 * added to records when it is not NULL. */
static json_t *send_all(port_ctx *ctx, notify_msg *m, json_t *records)
{
    audit_head_line(port_audit(ctx), m->audit, sizeof(m->audit));
    if (m->n_owners == 0) {
        /* the owners of the service the job runs in (docs/services.md) */
        json_t *owners = port_config_get(ctx, "service.owners");
        notify_msg_set_owners(m, owners, port_scrubber(ctx));
        json_decref(owners);
    }
    json_t *results = json_object();
    json_t *channels = port_config_get(ctx, "notify.channels");
    chan_job *jobs = calloc(CHANNELS_MAX, sizeof(chan_job));
    const char *names[CHANNELS_MAX];
    size_t njobs = 0, i;
    json_t *v;
    if (results == NULL || jobs == NULL) {
        json_decref(results);
        results = NULL;
        goto cleanup;
    }
    json_array_foreach(channels, i, v)
    {
        const char *name = json_string_value(v);
        int idx = name ? channel_index(name) : -1;
        if (idx < 0) {
            if (name != NULL && strlen(name) <= 32 && env_name_ok(name))
                json_object_set_new(results, name, failure("unknown channel"));
            continue;
        }
        name = channel_names[idx];
        if (json_object_get(results, name) != NULL || njobs == CHANNELS_MAX)
            continue;
        chan_job *job = &jobs[njobs];
        if (job_load(job, ctx, name, m) != 0) {
            json_object_set_new(results, name, failure(job->error));
            job_clear(job);
            continue;
        }
        if (!rate_allow(ctx, idx)) {
            json_object_set_new(results, name, failure("rate_limited"));
            job_clear(job);
            continue;
        }
        json_object_set_new(results, name, json_null()); /* placeholder: keeps the order */
        names[njobs++] = name;
    }
    pthread_once(&curl_once, curl_init_once);
    for (i = 0; i < njobs; i++)
        jobs[i].started = pthread_create(&jobs[i].thread, NULL, job_main, &jobs[i]) == 0;
    for (i = 0; i < njobs; i++) {
        if (jobs[i].started)
            pthread_join(jobs[i].thread, NULL);
        else
            job_main(&jobs[i]);
        json_t *r = jobs[i].ok ? json_pack("{s:b, s:i}", "ok", 1, "attempts", jobs[i].attempts)
                               : failure(jobs[i].error[0] ? jobs[i].error : "failed");
        if (r != NULL && !jobs[i].ok)
            json_object_set_new(r, "attempts", json_integer(jobs[i].attempts));
        json_object_set_new(results, names[i], r);
        job_clear(&jobs[i]);
    }
    const char *key;
    json_object_foreach(results, key, v) audit_result(ctx, m, key, v, records);

cleanup:
    json_decref(channels);
    free(jobs);
    return results;
}

/* Loads links.base_url / secret_env / ttl_s and signs m's links. */
static int add_links(port_ctx *ctx, notify_msg *m, char *err, size_t errlen)
{
    char base[600], env[80];
    port_config_string(ctx, "notify.links.base_url", "", base, sizeof(base));
    port_config_string(ctx, "notify.links.secret_env", "SELF_HEAL_LINK_SECRET", env, sizeof(env));
    long long ttl = port_config_int(ctx, "notify.links.ttl_s", 86400);
    if (ttl < 60)
        ttl = 60;
    if (ttl > 30LL * 86400)
        ttl = 30LL * 86400;
    const char *secret = env_name_ok(env) ? port_secret(env) : NULL;
    if (notify_msg_set_links(m, base, secret, port_now(), ttl) != 0) {
        snprintf(err, errlen, "notify.links.base_url must be an http(s) URL without ? or #");
        return -1;
    }
    return 0;
}

void notify_add_patch(port_ctx *ctx, json_t *message, const char *patch_path, const char *pr_url,
                      int64_t fix_id)
{
    char state_dir[2048], base[600], url[URL_MAX + 1] = "";
    cmd_error err = {NULL, ""};
    port_config_string(ctx, "state_dir", "", state_dir, sizeof(state_dir));
    /* a few bytes over the cut, so that the message knows there is more */
    json_t *patch = dash_read_patch(state_dir, patch_path, NOTIFY_DIFF_MAX + 64, &err);
    if (patch == NULL)
        return;
    json_object_set(message, "diff", json_object_get(patch, "patch"));
    json_object_set(message, "diff_truncated", json_object_get(patch, "truncated"));
    json_decref(patch);
    port_config_string(ctx, "notify.links.base_url", "", base, sizeof(base));
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    int n = 0;
    if (pr_url != NULL && pr_url[0] != '\0')
        n = snprintf(url, sizeof(url), "%s/files", pr_url);
    else if (blen > 0)
        n = snprintf(url, sizeof(url), "%.*s/self_heal/fixes/%lld/patch", (int)blen, base,
                     (long long)fix_id);
    if (n > 0 && (size_t)n < sizeof(url))
        json_object_set_new(message, "patch_url", json_string(url));
}

json_t *notify_send(port_ctx *ctx, json_t *message)
{
    notify_msg m;
    char err[160];
    if (notify_msg_init(&m, message, port_scrubber(ctx), err, sizeof(err)) != 0)
        return NULL;
    json_t *r = add_links(ctx, &m, err, sizeof(err)) == 0 ? send_all(ctx, &m, NULL) : NULL;
    notify_msg_free(&m);
    return r;
}

json_t *notify_send_once(port_ctx *ctx, json_t *message, const char *key, int64_t job_id)
{
    notify_msg m;
    char err[160];
    if (key == NULL || port_state(ctx) == NULL)
        return notify_send(ctx, message);
    if (notify_msg_init(&m, message, port_scrubber(ctx), err, sizeof(err)) != 0)
        return NULL;
    json_t *result = NULL;
    json_t *records = NULL;
    /* the intent is recorded right before the channels are called */
    int e = add_links(ctx, &m, err, sizeof(err)) == 0
                ? effect_begin(ctx, key, job_id, &result, NULL)
                : EFFECT_ERROR;
    if (e == EFFECT_NEW) {
        records = json_array();
        result = send_all(ctx, &m, records);
    } else if (e == EFFECT_INTERRUPTED) {
        /* a chat message cannot be looked up: at most once, never again */
        result = json_pack("{s:s, s:s}", "status", "unknown", "reason",
                           "interrupted while sending; not sent again (at most once)");
        effect_audit_add(&records, "notification_unknown",
                         json_pack("{s:s*, s:s*, s:s*}", "ticket_id", m.ticket_id, "kind", m.kind,
                                   "fingerprint", m.fingerprint));
    }
    if ((e == EFFECT_NEW || e == EFFECT_INTERRUPTED) && result != NULL)
        effect_done(ctx, key, job_id, result, records);
    json_decref(records);
    notify_msg_free(&m);
    return result;
}

/* ------------------------------------------------------------ commands */

static json_t *cmd_notify(port_ctx *ctx, json_t *args, cmd_error *err)
{
    notify_msg m;
    if (notify_msg_init(&m, args, port_scrubber(ctx), err->message, sizeof(err->message)) != 0) {
        err->code = "bad_args";
        return NULL;
    }
    if (add_links(ctx, &m, err->message, sizeof(err->message)) != 0) {
        err->code = "bad_config";
        notify_msg_free(&m);
        return NULL;
    }
    ensure_state(ctx);
    json_t *r = send_all(ctx, &m, NULL);
    notify_msg_free(&m);
    if (r == NULL)
        cmd_error_set(err, "internal", "out of memory");
    return r;
}

static pthread_mutex_t poll_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t poll_offset; /* guarded by poll_lock */

static int64_t load_offset(port_ctx *ctx)
{
    state_db *db = port_state(ctx);
    char buf[32];
    int64_t v = 0;
    if (db != NULL && state_kv_get(db, "telegram_offset", buf, sizeof(buf)) == 0) {
        char *end = NULL;
        long long x = strtoll(buf, &end, 10);
        if (end != buf && *end == '\0' && x > 0)
            v = x;
    }
    return v > poll_offset ? v : poll_offset;
}

static void store_offset(port_ctx *ctx, int64_t offset)
{
    poll_offset = offset;
    state_db *db = port_state(ctx);
    if (db != NULL)
        state_kv_raise(db, "telegram_offset", offset);
}

/* answerCallbackQuery for one press; returns 0 when Telegram accepted it. */
static int answer_callback(chan_job *job, json_t *entry)
{
    json_t *accepted = json_object_get(entry, "accepted");
    const char *action = json_string_value(json_object_get(entry, "action"));
    const char *text = !json_is_true(accepted)          ? "Not accepted"
                       : strcmp(action, "approve") == 0 ? "Approved"
                                                        : "Skipped";
    json_t *payload = json_pack("{s:O, s:s}", "callback_query_id",
                                json_object_get(entry, "callback_query_id"), "text", text);
    json_t *reply = NULL;
    int rc = telegram_call(job, "answerCallbackQuery", payload, job->timeout_ms, 1, &reply);
    json_decref(payload);
    json_decref(reply);
    return rc;
}

static json_t *approval_of(json_t *entry)
{
    return json_pack("{s:O, s:O, s:O}", "action", json_object_get(entry, "action"), "action_id",
                     json_object_get(entry, "action_id"), "from", json_object_get(entry, "from"));
}

static json_t *cmd_telegram_poll(port_ctx *ctx, json_t *args, cmd_error *err)
{
    json_t *t = json_object_get(args, "timeout_s");
    long long timeout_s = json_is_integer(t) ? (long long)json_integer_value(t) : 25;
    if (timeout_s < 0 || timeout_s > 50) {
        cmd_error_set(err, "bad_args", "timeout_s must be 0..50");
        return NULL;
    }
    chan_job job;
    if (job_load(&job, ctx, "telegram", NULL) != 0) {
        cmd_error_set(err, "unavailable", "telegram: %s", job.error);
        job_clear(&job);
        return NULL;
    }
    pthread_once(&curl_once, curl_init_once);
    ensure_state(ctx);
    pthread_mutex_lock(&poll_lock);
    int64_t offset = load_offset(ctx), next = offset;
    json_t *payload = json_pack("{s:I, s:I, s:i, s:[s]}", "offset", (json_int_t)offset, "timeout",
                                (json_int_t)timeout_s, "limit", TG_UPDATES_MAX, "allowed_updates",
                                "callback_query");
    json_t *reply = NULL, *entries = NULL, *approvals = json_array(), *out = NULL;
    int rc = telegram_call(&job, "getUpdates", payload, (long)timeout_s * 1000 + job.timeout_ms, 1,
                           &reply);
    json_decref(payload);
    if (rc != 0) {
        cmd_error_set(err, "unavailable", "telegram: %s", job.error);
        goto cleanup;
    }
    if (notify_telegram_updates(&entries, &next, reply, offset,
                                job.chat_id[0] ? job.chat_id : NULL) != 0) {
        cmd_error_set(err, "unavailable", "telegram: getUpdates: malformed reply");
        goto cleanup;
    }
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        if (!json_is_true(json_object_get(e, "accepted")))
            continue;
        json_array_append_new(approvals, approval_of(e));
        json_t *frame = approval_of(e);
        json_object_set_new(frame, "channel", json_string("telegram"));
        audit_log *a = port_audit(ctx);
        if (a != NULL) {
            /* "action" is the audit record's own key: the choice is "decision" */
            json_t *rec =
                json_pack("{s:O, s:O, s:O, s:s}", "decision", json_object_get(e, "action"),
                          "action_id", json_object_get(e, "action_id"), "from",
                          json_object_get(e, "from"), "channel", "telegram");
            if (rec != NULL)
                audit_append(a, "approval_received", rec);
            json_decref(rec);
        }
        port_notify(ctx, "approval", frame);
    }
    store_offset(ctx, next);
    int answer_errors = 0;
    json_array_foreach(entries, i, e) answer_errors += answer_callback(&job, e) != 0;
    out = json_pack("{s:O, s:I, s:I, s:i}", "approvals", approvals, "offset", (json_int_t)next,
                    "updates", (json_int_t)json_array_size(json_object_get(reply, "result")),
                    "answer_errors", answer_errors);

cleanup:
    pthread_mutex_unlock(&poll_lock);
    job_clear(&job);
    json_decref(reply);
    json_decref(entries);
    json_decref(approvals);
    return out;
}

const char *notify_link_secret(port_ctx *ctx, cmd_error *err)
{
    char env[80];
    port_config_string(ctx, "notify.links.secret_env", "SELF_HEAL_LINK_SECRET", env, sizeof(env));
    const char *secret = env_name_ok(env) ? port_secret(env) : NULL;
    if (secret == NULL)
        cmd_error_set(err, "unavailable", "the link secret is not set (notify.links.secret_env)");
    return secret;
}

static json_t *cmd_link_sign(port_ctx *ctx, json_t *args, cmd_error *err)
{
    json_t *action_v = json_object_get(args, "action");
    json_t *id_v = json_object_get(args, "action_id");
    const char *action = json_string_value(action_v);
    const char *id = json_string_value(id_v);
    json_t *ttl_v = json_object_get(args, "ttl_s");
    long long ttl = json_is_integer(ttl_v) ? (long long)json_integer_value(ttl_v)
                                           : port_config_int(ctx, "notify.links.ttl_s", 86400);
    if (action == NULL || id == NULL || !valid_action(action, json_string_length(action_v)) ||
        !valid_action_id_n(id, json_string_length(id_v))) {
        cmd_error_set(err, "bad_args",
                      "needs action (approve|skip) and action_id matching [A-Za-z0-9_-]{1,64}");
        return NULL;
    }
    if (ttl < 1 || ttl > 30LL * 86400) {
        cmd_error_set(err, "bad_args", "ttl_s must be 1 s to 30 days");
        return NULL;
    }
    const char *secret = notify_link_secret(ctx, err);
    if (secret == NULL)
        return NULL;
    int64_t expires = port_now() + ttl;
    char token[TOKEN_MAX];
    if (expires < 0 || notify_sign(token, sizeof(token), secret, action, id, expires) != 0) {
        cmd_error_set(err, "internal", "could not sign the link");
        return NULL;
    }
    json_t *out = json_pack("{s:s, s:I}", "token", token, "expires", (json_int_t)expires);
    char base[600];
    port_config_string(ctx, "notify.links.base_url", "", base, sizeof(base));
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    char *url = NULL;
    if (valid_url(base, 512) && strchr(base, '?') == NULL && strchr(base, '#') == NULL)
        url = link_url(base, blen, action, token);
    json_object_set_new(out, "url", url ? json_string(url) : json_null());
    free(url);
    return out;
}

static json_t *cmd_link_verify(port_ctx *ctx, json_t *args, cmd_error *err)
{
    json_t *token_v = json_object_get(args, "token");
    const char *token = json_string_value(token_v);
    if (token == NULL || strlen(token) != json_string_length(token_v)) {
        cmd_error_set(err, "bad_args", "needs token");
        return NULL;
    }
    const char *secret = notify_link_secret(ctx, err);
    if (secret == NULL)
        return NULL;
    char action[16], id[ACTION_ID_MAX + 1];
    int rc = notify_verify(token, secret, port_now(), action, sizeof(action), id, sizeof(id));
    if (rc == 1) {
        cmd_error_set(err, "expired", "the link has expired");
        return NULL;
    }
    if (rc != 0) {
        cmd_error_set(err, "bad_signature", "the link is not valid");
        return NULL;
    }
    return json_pack("{s:b, s:s, s:s}", "valid", 1, "action", action, "action_id", id);
}

const cmd_def *notify_commands(size_t *n)
{
    static const cmd_def cmds[] = {
        {"notify", cmd_notify, 0},
        {"telegram_poll", cmd_telegram_poll, 0},
        {"link_sign", cmd_link_sign, CMD_INLINE},
        {"link_verify", cmd_link_verify, CMD_INLINE},
    };
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
