/*
 * HTTP client over libcurl for every outside service (LLM providers,
 * GitHub, Slack, Telegram): timeouts, bounded responses, retries of 429,
 * 5xx, timeouts and connection errors with exponential backoff and full
 * jitter, honouring Retry-After (seconds or HTTP date), capped. Never
 * logs headers or bodies (they may hold secrets). Thread-safe: one curl
 * easy handle per call; http_global_init() once at start.
 */
#ifndef SELF_HEAL_PORT_HTTP_H
#define SELF_HEAL_PORT_HTTP_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct http_request {
    const char *method;         /* "GET", "POST", "PATCH"; default GET, POST when body */
    const char *url;            /* http:// or https:// only */
    const char *const *headers; /* "Name: value" strings, NULL-terminated; may be NULL */
    const char *body;           /* may be NULL */
    size_t body_len;
    long timeout_ms;          /* whole attempt; 0 = 30000 */
    long connect_timeout_ms;  /* 0 = 5000 */
    int max_attempts;         /* 0 = 1; retried: 408, 429, 5xx, timeout, connect error */
    long backoff_base_ms;     /* 0 = 500; attempt k waits random(0, base * 2^k) */
    long backoff_max_ms;      /* 0 = 30000; caps both backoff and Retry-After */
    size_t max_response;      /* 0 = 4 MiB; a longer body fails the attempt */
    const atomic_int *cancel; /* optional: nonzero stops waiting/retrying */
} http_request;

typedef struct http_response {
    long status; /* last HTTP status, 0 when none was received */
    char *body;  /* NUL-terminated copy of the last body (owned), "" when none */
    size_t body_len;
    long retry_after_ms; /* from the last response, -1 when absent */
    int attempts;        /* attempts made */
    long total_ms;       /* time spent, waits included */
    char error[256];     /* transport error of the last attempt, "" when none */
} http_response;

int http_global_init(void);
void http_global_cleanup(void);

/* Performs the request with its retries. Returns 0 when the last attempt got
 * an HTTP answer (whatever its status: the caller decides), -1 when none did
 * (res->error says why). `res` is always initialised; free it with
 * http_response_free. */
int http_perform(http_response *res, const http_request *req);
void http_response_free(http_response *res);

/* The delay before retry `attempt` (0-based), honouring retry_after_ms when
 * >= 0; exposed for tests. `rnd` is a uniform value in [0,1). */
long http_backoff_ms(const http_request *req, int attempt, long retry_after_ms, double rnd);

/* Parses a Retry-After value (delta-seconds or an IMF-fixdate); -1 if invalid. */
long http_parse_retry_after(const char *value, long now_epoch_s);

#endif
