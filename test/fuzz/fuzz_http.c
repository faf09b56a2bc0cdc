/*
 * The HTTP client's handling of what a server answers: a server on the
 * loopback interface sends the input (after one byte of settings) as its
 * whole response to every request and closes the connection, and
 * http_perform reads it through libcurl and the client's own body and
 * header callbacks (bounded bodies, Retry-After in seconds or as a date,
 * a retry of 408, 429 and 5xx). The Retry-After parser also gets the input
 * as a header value directly.
 *
 * Settings byte: bit 0 a 64-byte response bound, bit 1 a second attempt.
 */
#define _DEFAULT_SOURCE /* SO_RCVTIMEO with struct timeval */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fuzz.h"
#include "http.h"

static int listen_fd = -1;
static char url[64];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char response[16384]; /* the server's copy: a late connection reads a later input */
static size_t response_len;

/* Reads the request's head (up to the blank line), answers, closes. */
static void serve_one(int fd)
{
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[4096];
    size_t have = 0;
    while (have < sizeof(buf) - 1) {
        ssize_t n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
            break;
    }
    pthread_mutex_lock(&lock);
    for (size_t at = 0; at < response_len;) {
        ssize_t n = send(fd, response + at, response_len - at, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        at += (size_t)n;
    }
    pthread_mutex_unlock(&lock);
    shutdown(fd, SHUT_WR);
    while (recv(fd, buf, sizeof(buf), 0) > 0) /* until the client closes */
        ;
    close(fd);
}

static void *server(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd >= 0)
            serve_one(fd);
    }
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (http_global_init() != 0)
        abort();
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(addr);
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(listen_fd, 16) != 0 || getsockname(listen_fd, (struct sockaddr *)&addr, &alen) != 0)
        abort();
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/messages", ntohs(addr.sin_port));
    pthread_t t;
    if (pthread_create(&t, NULL, server, NULL) != 0)
        abort();
    pthread_detach(t);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned settings = data[0];
    pthread_mutex_lock(&lock);
    response_len = size - 1 < sizeof(response) ? size - 1 : sizeof(response);
    memcpy(response, data + 1, response_len);
    pthread_mutex_unlock(&lock);

    static const char *const headers[] = {"Content-Type: application/json", NULL};
    http_request req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = "{\"q\":1}",
        .body_len = 7,
        .timeout_ms = 5000,
        .connect_timeout_ms = 1000,
        .max_attempts = (settings & 2) ? 2 : 1,
        .backoff_base_ms = 1,
        .backoff_max_ms = 1, /* Retry-After is capped to it */
        .max_response = (settings & 1) ? 64 : 0,
    };
    http_response res;
    int rc = http_perform(&res, &req);
    FZ_CHECK(res.body != NULL && res.body[res.body_len] == '\0');
    FZ_CHECK(res.body_len <= ((settings & 1) ? 64u : 4u << 20));
    FZ_CHECK(res.attempts >= 1 && res.attempts <= req.max_attempts);
    FZ_CHECK(rc == 0 ? res.status > 0 : res.error[0] != '\0');
    FZ_CHECK(strlen(res.error) < sizeof(res.error));
    http_response_free(&res);

    /* the input as a Retry-After value */
    char value[128];
    size_t n = size - 1 < sizeof(value) - 1 ? size - 1 : sizeof(value) - 1;
    memcpy(value, data + 1, n);
    value[n] = '\0';
    long s = http_parse_retry_after(value, 784111777L);
    FZ_CHECK(s >= -1);
    return 0;
}
