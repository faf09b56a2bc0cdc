/*
 * Load generator for SelfHeal.Endpoint's POST /ingest (test/bench/ingest.exs).
 *
 *   loadgen HOST PORT TOKEN BODIES_FILE LINES_PER_REQUEST CONNECTIONS SECONDS
 *
 * BODIES_FILE holds json_lines records, one a line; every LINES_PER_REQUEST
 * consecutive lines make one request body. CONNECTIONS keep-alive
 * connections each keep one request in flight (closed loop) for SECONDS,
 * then the requests in flight are finished. A connection answered with
 * Retry-After (429, 503) waits that long before its next request, as Fluent
 * Bit's retry scheduler does. One thread and poll(2), so the generator takes
 * little of the CPU the server is measured on.
 *
 * Prints "name value" lines: requests, ok (2xx), status_503, status_other,
 * accepted (sum of the "accepted" counts of the 2xx answers), io_errors,
 * reconnects, elapsed_s, p50_ms, p99_ms, max_ms (latency from the first
 * byte sent to the last byte of the answer).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RESP_CAP 65536

typedef struct request {
    char *data;
    size_t len;
} request;

typedef struct conn {
    int fd;
    int busy; /* a request is in flight */
    size_t req;
    size_t sent;
    char resp[RESP_CAP];
    size_t resp_len;
    double started;
    double resume; /* after a Retry-After: no request before this time */
} conn;

typedef struct lat_vec {
    double *v;
    size_t n, cap;
} lat_vec;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void lat_push(lat_vec *l, double x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->v = realloc(l->v, l->cap * sizeof(double));
        if (l->v == NULL)
            die("realloc");
    }
    l->v[l->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        die(path);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        die("malloc");
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (buf == NULL)
                die("realloc");
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static request *build_requests(const char *host, const char *port, const char *token,
                               const char *text, size_t len, long lines_per, size_t *count)
{
    size_t cap = 64, n = 0;
    request *reqs = malloc(cap * sizeof(*reqs));
    if (reqs == NULL)
        die("malloc");
    size_t off = 0;
    while (off < len) {
        size_t start = off;
        long lines = 0;
        while (off < len && lines < lines_per) {
            const char *nl = memchr(text + off, '\n', len - off);
            off = nl ? (size_t)(nl - text) + 1 : len;
            lines++;
        }
        if (lines < lines_per)
            break; /* an incomplete last group is left out */
        size_t body_len = off - start;
        char head[512];
        int hl = snprintf(head, sizeof(head),
                          "POST /ingest HTTP/1.1\r\nHost: %s:%s\r\n"
                          "Authorization: Bearer %s\r\n"
                          "Content-Type: application/x-ndjson\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          host, port, token, body_len);
        if (hl < 0 || (size_t)hl >= sizeof(head)) {
            fprintf(stderr, "request head too long\n");
            exit(2);
        }
        if (n == cap) {
            cap *= 2;
            reqs = realloc(reqs, cap * sizeof(*reqs));
            if (reqs == NULL)
                die("realloc");
        }
        reqs[n].len = (size_t)hl + body_len;
        reqs[n].data = malloc(reqs[n].len);
        if (reqs[n].data == NULL)
            die("malloc");
        memcpy(reqs[n].data, head, (size_t)hl);
        memcpy(reqs[n].data + hl, text + start, body_len);
        n++;
    }
    *count = n;
    return reqs;
}

static int open_conn(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Case-insensitive search for a header name in the head; returns its value. */
static const char *header_value(const char *head, size_t head_len, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl < head_len; i++) {
        if ((i == 0 || head[i - 1] == '\n') && strncasecmp(head + i, name, nl) == 0 &&
            head[i + nl] == ':')
            return head + i + nl + 1;
    }
    return NULL;
}

/* 1 when resp holds a complete answer: fills status, accepted, close. */
static int parse_response(const conn *c, int *status, long *accepted, int *close_after,
                          long *retry_after, size_t *total)
{
    const char *end = NULL;
    for (size_t i = 3; i < c->resp_len; i++) {
        if (memcmp(c->resp + i - 3, "\r\n\r\n", 4) == 0) {
            end = c->resp + i + 1;
            break;
        }
    }
    if (end == NULL)
        return 0;
    size_t head_len = (size_t)(end - c->resp);
    const char *cl = header_value(c->resp, head_len, "content-length");
    long body_len = cl ? strtol(cl, NULL, 10) : 0;
    if (c->resp_len < head_len + (size_t)body_len)
        return 0;
    *status = c->resp_len > 12 ? atoi(c->resp + 9) : 0;
    const char *connection = header_value(c->resp, head_len, "connection");
    *close_after = connection != NULL && strncasecmp(connection, " close", 6) == 0;
    const char *retry = header_value(c->resp, head_len, "retry-after");
    *retry_after = retry ? strtol(retry, NULL, 10) : 0;
    *accepted = 0;
    const char *a = memchr(end, '{', (size_t)body_len);
    if (a != NULL && (size_t)body_len > 12 && strncmp(a, "{\"accepted\":", 12) == 0)
        *accepted = strtol(a + 12, NULL, 10);
    *total = head_len + (size_t)body_len;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr,
                "usage: %s HOST PORT TOKEN BODIES_FILE LINES_PER_REQUEST CONNECTIONS SECONDS\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *token = argv[3];
    long lines_per = strtol(argv[5], NULL, 10);
    long nconns = strtol(argv[6], NULL, 10);
    double seconds = strtod(argv[7], NULL);
    if (lines_per <= 0 || nconns <= 0 || nconns > 4096 || seconds <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }

    size_t text_len;
    char *text = read_file(argv[4], &text_len);
    size_t nreqs;
    request *reqs = build_requests(host, port, token, text, text_len, lines_per, &nreqs);
    if (nreqs == 0) {
        fprintf(stderr, "no complete request body in %s\n", argv[4]);
        return 2;
    }

    struct addrinfo hints = {0}, *ai;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0) {
        fprintf(stderr, "cannot resolve %s:%s\n", host, port);
        return 2;
    }

    conn *conns = calloc((size_t)nconns, sizeof(*conns));
    struct pollfd *pfds = calloc((size_t)nconns, sizeof(*pfds));
    if (conns == NULL || pfds == NULL)
        die("calloc");
    for (long i = 0; i < nconns; i++) {
        conns[i].fd = open_conn(ai);
        if (conns[i].fd < 0)
            die("connect");
    }

    lat_vec lat = {0};
    long requests = 0, ok = 0, s503 = 0, other = 0, io_errors = 0, reconnects = 0;
    long long accepted = 0;
    size_t next_req = 0;
    double start = now_s(), stop = start + seconds;
    int running = 1;

    for (;;) {
        double t = now_s();
        if (running && t >= stop)
            running = 0;
        long inflight = 0;
        for (long i = 0; i < nconns; i++) {
            conn *c = &conns[i];
            if (!c->busy && running && c->fd >= 0 && t >= c->resume) {
                c->busy = 1;
                c->req = next_req++ % nreqs;
                c->sent = 0;
                c->resp_len = 0;
                c->started = t;
            }
            pfds[i].fd = c->busy ? c->fd : -1;
            pfds[i].events = c->busy && c->sent < reqs[c->req].len ? POLLOUT : POLLIN;
            pfds[i].revents = 0;
            inflight += c->busy;
        }
        if (inflight == 0 && !running)
            break;
        if (poll(pfds, (nfds_t)nconns, 100) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (!running && now_s() > stop + 10)
            break; /* answers that never come are left out */
        for (long i = 0; i < nconns; i++) {
            conn *c = &conns[i];
            if (!c->busy || pfds[i].revents == 0)
                continue;
            int failed = 0;
            if (c->sent < reqs[c->req].len) {
                ssize_t n = send(c->fd, reqs[c->req].data + c->sent, reqs[c->req].len - c->sent,
                                 MSG_NOSIGNAL);
                if (n > 0)
                    c->sent += (size_t)n;
                else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                    failed = 1;
            } else {
                ssize_t n = recv(c->fd, c->resp + c->resp_len, RESP_CAP - c->resp_len, 0);
                if (n > 0)
                    c->resp_len += (size_t)n;
                else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                    failed = 1;
            }
            int status, close_after;
            long acc, retry_after;
            size_t total;
            if (!failed && c->sent == reqs[c->req].len &&
                parse_response(c, &status, &acc, &close_after, &retry_after, &total)) {
                requests++;
                lat_push(&lat, (now_s() - c->started) * 1000.0);
                if (status >= 200 && status < 300) {
                    ok++;
                    accepted += acc;
                } else if (status == 503) {
                    s503++;
                } else {
                    other++;
                }
                c->busy = 0;
                /* as Fluent Bit does, a refused chunk waits before its retry */
                if (retry_after > 0)
                    c->resume = now_s() + (double)retry_after;
                if (close_after || total != c->resp_len)
                    failed = 2;
            } else if (!failed && c->resp_len == RESP_CAP) {
                failed = 1;
            }
            if (failed) {
                if (failed == 1) {
                    io_errors++;
                    c->busy = 0;
                }
                close(c->fd);
                c->fd = running ? open_conn(ai) : -1;
                reconnects += running;
            }
        }
    }
    double elapsed = now_s() - start;

    qsort(lat.v, lat.n, sizeof(double), cmp_double);
    double p50 = lat.n ? lat.v[lat.n / 2] : 0;
    double p99 = lat.n ? lat.v[(size_t)((double)(lat.n - 1) * 0.99)] : 0;
    double max = lat.n ? lat.v[lat.n - 1] : 0;
    printf("requests %ld\nok %ld\nstatus_503 %ld\nstatus_other %ld\naccepted %lld\n"
           "io_errors %ld\nreconnects %ld\nelapsed_s %.3f\np50_ms %.3f\np99_ms %.3f\nmax_ms %.3f\n",
           requests, ok, s503, other, accepted, io_errors, reconnects, elapsed, p50, p99, max);

    for (long i = 0; i < nconns; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    for (size_t i = 0; i < nreqs; i++)
        free(reqs[i].data);
    free(reqs);
    free(conns);
    free(pfds);
    free(lat.v);
    free(text);
    freeaddrinfo(ai);
    return 0;
}
