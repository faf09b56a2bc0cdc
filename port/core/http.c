/*
 * HTTP client for outside services (see http.h): one libcurl easy handle
 * per call, bounded bodies, retries with exponential backoff and full
 * jitter, Retry-After honoured and capped. Error texts come from
 * curl_easy_strerror only: they never contain the URL (a Telegram bot
 * token lives in the path) or any header.
 */
#include "http.h"

#include "ctx.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

#define DEFAULT_TIMEOUT_MS 30000L
#define DEFAULT_CONNECT_MS 5000L
#define DEFAULT_BACKOFF_MS 500L
#define DEFAULT_BACKOFF_MAX_MS 30000L
#define DEFAULT_MAX_RESPONSE ((size_t)4 << 20)
#define MAX_ATTEMPTS 10

typedef struct body_sink {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
    int overflow;
} body_sink;

typedef struct header_sink {
    long retry_after_ms;
} header_sink;

int http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void http_global_cleanup(void)
{
    curl_global_cleanup();
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    body_sink *sink = userdata;
    size_t n = size * nmemb;
    if (sink->len + n > sink->max) {
        sink->overflow = 1;
        return 0; /* aborts the transfer */
    }
    if (sink->len + n + 1 > sink->cap) {
        size_t cap = sink->cap ? sink->cap : 4096;
        while (cap < sink->len + n + 1)
            cap *= 2;
        char *grown = realloc(sink->data, cap);
        if (grown == NULL)
            return 0;
        sink->data = grown;
        sink->cap = cap;
    }
    memcpy(sink->data + sink->len, ptr, n);
    sink->len += n;
    sink->data[sink->len] = '\0';
    return n;
}

static int ascii_prefix_ci(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    if (len < n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char a = s[i], b = prefix[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != b)
            return 0;
    }
    return 1;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    header_sink *sink = userdata;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (ascii_prefix_ci(ptr, n, "http/"))
        sink->retry_after_ms = -1; /* a new response (after 100 Continue, or a retry) */
    else if (n < 256 && ascii_prefix_ci(ptr, n, name)) {
        char value[256];
        size_t v = 0;
        for (size_t i = sizeof(name) - 1; i < n && v + 1 < sizeof(value); i++)
            if (ptr[i] != '\r' && ptr[i] != '\n')
                value[v++] = ptr[i];
        value[v] = '\0';
        long s = http_parse_retry_after(value, (long)time(NULL));
        sink->retry_after_ms = s >= 0 ? s * 1000 : -1;
    }
    return n;
}

/* --------------------------------------------------------- Retry-After */

static long days_from_civil(long y, long m, long d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int parse_digits(const char **p, int count, long *out)
{
    long v = 0;
    for (int i = 0; i < count; i++) {
        if (**p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

static int expect_char(const char **p, char c)
{
    if (**p != c)
        return -1;
    (*p)++;
    return 0;
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT". */
static long parse_http_date(const char *s)
{
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const char *p = s;
    long day, year, hh, mm, ss, mon = -1;
    if (strlen(s) < 29)
        return -1;
    p += 3;
    if (expect_char(&p, ',') || expect_char(&p, ' ') || parse_digits(&p, 2, &day) ||
        expect_char(&p, ' '))
        return -1;
    for (int i = 0; i < 12; i++)
        if (strncmp(p, months[i], 3) == 0)
            mon = i + 1;
    if (mon < 0)
        return -1;
    p += 3;
    if (expect_char(&p, ' ') || parse_digits(&p, 4, &year) || expect_char(&p, ' ') ||
        parse_digits(&p, 2, &hh) || expect_char(&p, ':') || parse_digits(&p, 2, &mm) ||
        expect_char(&p, ':') || parse_digits(&p, 2, &ss) || strcmp(p, " GMT") != 0)
        return -1;
    if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
        return -1;
    return days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss;
}

long http_parse_retry_after(const char *value, long now_epoch_s)
{
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0 || len > 64)
        return -1;
    char buf[65];
    memcpy(buf, value, len);
    buf[len] = '\0';
    if (buf[0] >= '0' && buf[0] <= '9') {
        long v = 0;
        for (size_t i = 0; i < len; i++) {
            if (buf[i] < '0' || buf[i] > '9')
                return -1;
            if (v > 100000000L)
                return -1;
            v = v * 10 + (buf[i] - '0');
        }
        return v;
    }
    long at = parse_http_date(buf);
    if (at < 0)
        return -1;
    return at > now_epoch_s ? at - now_epoch_s : 0;
}

/* ------------------------------------------------------------- backoff */

long http_backoff_ms(const http_request *req, int attempt, long retry_after_ms, double rnd)
{
    long base = req->backoff_base_ms > 0 ? req->backoff_base_ms : DEFAULT_BACKOFF_MS;
    long cap = req->backoff_max_ms > 0 ? req->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (retry_after_ms >= 0)
        return retry_after_ms < cap ? retry_after_ms : cap;
    long ceiling = base;
    for (int i = 0; i < attempt && ceiling < cap; i++)
        ceiling *= 2;
    if (ceiling > cap)
        ceiling = cap;
    if (rnd < 0)
        rnd = 0;
    if (rnd >= 1)
        rnd = 0.999999;
    return (long)(rnd * (double)ceiling);
}

static double random_unit(void)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint32_t)clock();
    return (double)r / 4294967296.0;
}

/* ------------------------------------------------------------- perform */

static int retryable_status(long status)
{
    return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

static int retryable_transport(CURLcode code)
{
    switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_COULDNT_RESOLVE_HOST:
        return 1;
    default:
        return 0;
    }
}

static int progress_cancel(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    const atomic_int *cancel = clientp;
    return cancel != NULL && *cancel ? 1 : 0;
}

static CURL *build_handle(const http_request *req, struct curl_slist *headers, body_sink *body,
                          header_sink *hdr)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return NULL;
    curl_easy_setopt(h, CURLOPT_URL, req->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                     req->timeout_ms > 0 ? req->timeout_ms : DEFAULT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     req->connect_timeout_ms > 0 ? req->connect_timeout_ms : DEFAULT_CONNECT_MS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, hdr);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    if (req->cancel != NULL) {
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress_cancel);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)req->cancel);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    }
    const char *method = req->method != NULL ? req->method : (req->body != NULL ? "POST" : "GET");
    if (req->body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (strcmp(method, "GET") == 0 && req->body == NULL)
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    return h;
}

void http_response_free(http_response *res)
{
    if (res == NULL)
        return;
    free(res->body);
    res->body = NULL;
    res->body_len = 0;
}

static void set_body(http_response *res, body_sink *sink)
{
    free(res->body);
    if (sink->data == NULL) {
        res->body = calloc(1, 1);
        res->body_len = 0;
    } else {
        res->body = sink->data;
        res->body_len = sink->len;
    }
    sink->data = NULL;
    sink->len = sink->cap = 0;
}

int http_perform(http_response *res, const http_request *req)
{
    memset(res, 0, sizeof(*res));
    res->retry_after_ms = -1;
    long long started = port_now_ms();
    if (req->url == NULL ||
        (strncmp(req->url, "http://", 7) != 0 && strncmp(req->url, "https://", 8) != 0)) {
        snprintf(res->error, sizeof(res->error), "only http and https URLs are allowed");
        res->body = calloc(1, 1);
        return -1;
    }
    struct curl_slist *headers = NULL;
    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
        struct curl_slist *next = curl_slist_append(headers, req->headers[i]);
        if (next == NULL) {
            curl_slist_free_all(headers);
            snprintf(res->error, sizeof(res->error), "out of memory");
            res->body = calloc(1, 1);
            return -1;
        }
        headers = next;
    }
    /* No "Expect: 100-continue" round trip for larger bodies. */
    struct curl_slist *next = curl_slist_append(headers, "Expect:");
    if (next != NULL)
        headers = next;
    int max_attempts = req->max_attempts > 0 ? req->max_attempts : 1;
    if (max_attempts > MAX_ATTEMPTS)
        max_attempts = MAX_ATTEMPTS;
    int answered = 0;
    for (int attempt = 0; attempt < max_attempts; attempt++) {
        body_sink body = {NULL, 0, 0, req->max_response ? req->max_response : DEFAULT_MAX_RESPONSE,
                          0};
        header_sink hdr = {-1};
        CURL *h = build_handle(req, headers, &body, &hdr);
        if (h == NULL) {
            snprintf(res->error, sizeof(res->error), "could not create a transfer");
            break;
        }
        CURLcode code = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(h);
        res->attempts = attempt + 1;
        res->retry_after_ms = hdr.retry_after_ms;
        int retry;
        if (body.overflow) {
            snprintf(res->error, sizeof(res->error), "response larger than %zu bytes", body.max);
            res->status = status;
            answered = 0;
            retry = 0;
        } else if (code == CURLE_OK && (status < 100 || status > 599)) {
            /* an answer without a status line libcurl could read is no
             * answer: status 0 was taken for success */
            res->status = 0;
            snprintf(res->error, sizeof(res->error), "invalid HTTP status line (status %ld)",
                     status);
            answered = 0;
            retry = 0;
        } else if (code == CURLE_OK) {
            res->status = status;
            res->error[0] = '\0';
            answered = 1;
            retry = retryable_status(status);
        } else {
            res->status = 0;
            snprintf(res->error, sizeof(res->error), "%s", curl_easy_strerror(code));
            answered = 0;
            retry = retryable_transport(code);
        }
        set_body(res, &body);
        free(body.data);
        if (!retry || attempt + 1 == max_attempts)
            break;
        if (req->cancel != NULL && *req->cancel)
            break;
        long delay =
            http_backoff_ms(req, attempt, answered ? res->retry_after_ms : -1, random_unit());
        if (port_sleep_ms(delay, req->cancel))
            break;
    }
    curl_slist_free_all(headers);
    if (res->body == NULL)
        res->body = calloc(1, 1);
    res->total_ms = (long)(port_now_ms() - started);
    return answered ? 0 : -1;
}
