/* Port framing: the incremental reader (chunking, caps, empty frames) and
 * the writer (whole frames from many threads), plus the worker pool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "packet.h"
#include "pool.h"

#define MAX_SEEN 64

static void nap_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct seen {
    int n;
    frame_event ev[MAX_SEEN];
    size_t len[MAX_SEEN];
    char *payload[MAX_SEEN];
} seen;

static void record(void *opaque, frame_event ev, const char *payload, size_t len)
{
    seen *s = opaque;
    assert_true(s->n < MAX_SEEN);
    s->ev[s->n] = ev;
    s->len[s->n] = len;
    s->payload[s->n] = NULL;
    if (payload != NULL) {
        s->payload[s->n] = malloc(len + 1);
        memcpy(s->payload[s->n], payload, len);
        s->payload[s->n][len] = '\0';
    }
    s->n++;
}

static void seen_free(seen *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->payload[i]);
}

/* Appends one frame (header + payload) to buf at *at. */
static void put_frame(unsigned char *buf, size_t *at, const char *payload, size_t len)
{
    buf[(*at)++] = (unsigned char)(len >> 24);
    buf[(*at)++] = (unsigned char)(len >> 16);
    buf[(*at)++] = (unsigned char)(len >> 8);
    buf[(*at)++] = (unsigned char)len;
    memcpy(buf + *at, payload, len);
    *at += len;
}

static void test_byte_by_byte(void **state)
{
    (void)state;
    unsigned char buf[128];
    size_t n = 0;
    put_frame(buf, &n, "{\"id\":1}", 8);
    put_frame(buf, &n, "abc", 3);
    frame_reader *r;
    assert_int_equal(frame_reader_new(&r, 0), 0);
    seen s = {0};
    for (size_t i = 0; i < n; i++) {
        frame_reader_feed(r, (const char *)buf + i, 1, record, &s);
        if (i == 11)
            assert_int_equal(s.n, 1); /* the first frame ends at byte 11 */
    }
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ev[0], FRAME_PAYLOAD);
    assert_string_equal(s.payload[0], "{\"id\":1}");
    assert_string_equal(s.payload[1], "abc");
    assert_int_equal(frame_reader_pending(r), 0);
    seen_free(&s);
    frame_reader_free(r);
}

static void test_several_frames_in_one_buffer(void **state)
{
    (void)state;
    unsigned char buf[256];
    size_t n = 0;
    put_frame(buf, &n, "one", 3);
    put_frame(buf, &n, "two!", 4);
    put_frame(buf, &n, "three", 5);
    put_frame(buf, &n, "fo", 2); /* cut below: only the header and 1 byte */
    frame_reader *r;
    assert_int_equal(frame_reader_new(&r, 0), 0);
    seen s = {0};
    frame_reader_feed(r, (const char *)buf, n - 1, record, &s);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.payload[0], "one");
    assert_string_equal(s.payload[1], "two!");
    assert_string_equal(s.payload[2], "three");
    assert_int_equal(frame_reader_pending(r), 5); /* truncated: 4 header + 1 payload */
    frame_reader_feed(r, (const char *)buf + n - 1, 1, record, &s);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.payload[3], "fo");
    seen_free(&s);
    frame_reader_free(r);
}

static void test_empty_frame(void **state)
{
    (void)state;
    unsigned char buf[32];
    size_t n = 0;
    put_frame(buf, &n, "", 0);
    put_frame(buf, &n, "x", 1);
    frame_reader *r;
    assert_int_equal(frame_reader_new(&r, 0), 0);
    seen s = {0};
    frame_reader_feed(r, (const char *)buf, 4, record, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ev[0], FRAME_PAYLOAD);
    assert_int_equal(s.len[0], 0);
    frame_reader_feed(r, (const char *)buf + 4, n - 4, record, &s);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.payload[1], "x");
    seen_free(&s);
    frame_reader_free(r);
}

/* An oversize frame is reported once at its header and its bytes skipped
 * across chunks; the frame after it is read normally. */
static void test_oversize_discarded_across_chunks(void **state)
{
    (void)state;
    const size_t cap = 100, big = 1000;
    size_t total = 4 + big + 4 + 2;
    unsigned char *buf = malloc(total);
    char *junk = malloc(big);
    memset(junk, 'j', big);
    size_t n = 0;
    put_frame(buf, &n, junk, big);
    put_frame(buf, &n, "ok", 2);
    assert_int_equal(n, total);
    frame_reader *r;
    assert_int_equal(frame_reader_new(&r, cap), 0);
    seen s = {0};
    size_t chunk = 7, at = 0;
    while (at < total) {
        size_t take = total - at < chunk ? total - at : chunk;
        frame_reader_feed(r, (const char *)buf + at, take, record, &s);
        at += take;
        if (at > 4 && at < 4 + big) {
            assert_int_equal(s.n, 1);
            assert_true(frame_reader_pending(r) == at);
        }
    }
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ev[0], FRAME_TOO_LARGE);
    assert_null(s.payload[0]);
    assert_int_equal(s.len[0], big);
    assert_int_equal(s.ev[1], FRAME_PAYLOAD);
    assert_string_equal(s.payload[1], "ok");
    seen_free(&s);
    free(junk);
    free(buf);
    frame_reader_free(r);
}

/* A length over the 8 MiB default cap (even 4 GiB - 1) never allocates. */
static void test_default_cap(void **state)
{
    (void)state;
    unsigned char hdr[8] = {0x00, 0x80, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff};
    frame_reader *r;
    assert_int_equal(frame_reader_new(&r, 0), 0);
    seen s = {0};
    frame_reader_feed(r, (const char *)hdr, 4, record, &s); /* 8 MiB + 1 */
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ev[0], FRAME_TOO_LARGE);
    assert_int_equal(s.len[0], FRAME_MAX + 1);
    frame_reader_free(r);

    assert_int_equal(frame_reader_new(&r, 0), 0);
    frame_reader_feed(r, (const char *)hdr + 4, 4, record, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.len[1], 0xffffffffu);
    seen_free(&s);
    frame_reader_free(r);
}

/* ------------------------------------------------------------ writer */

static frame_writer shared;

static void *write_many(void *arg)
{
    char payload[600];
    memset(payload, 'a' + (int)(intptr_t)arg, sizeof(payload));
    for (int i = 0; i < 200; i++)
        assert_int_equal(frame_write(&shared, payload, 100 + (size_t)i * 2), 0);
    return NULL;
}

static void count_frames(void *opaque, frame_event ev, const char *payload, size_t len)
{
    int *count = opaque;
    assert_int_equal(ev, FRAME_PAYLOAD);
    for (size_t i = 1; i < len; i++)
        assert_int_equal(payload[i], payload[0]); /* never interleaved */
    (*count)++;
}

static void test_writer_frames_are_whole(void **state)
{
    (void)state;
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    assert_int_equal(frame_writer_init(&shared, fileno(tmp)), 0);
    pthread_t t[4];
    for (intptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, write_many, (void *)i), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(frame_write_json(&shared, json_pack("{s:i}", "id", 7)), 0);
    frame_writer_close(&shared);

    long size = ftell(tmp);
    rewind(tmp);
    char *all = malloc((size_t)size);
    assert_int_equal(fread(all, 1, (size_t)size, tmp), (size_t)size);
    frame_reader *r;
    assert_int_equal(frame_reader_new(&r, 0), 0);
    int count = 0;
    frame_reader_feed(r, all, (size_t)size - 12, count_frames, &count);
    assert_int_equal(count, 800);
    seen s = {0};
    frame_reader_feed(r, all + size - 12, 12, record, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.payload[0], "{\"id\":7}");
    seen_free(&s);
    frame_reader_free(r);
    free(all);
    fclose(tmp);
}

static void test_writer_fails_once_reader_is_gone(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    frame_writer w;
    assert_int_equal(frame_writer_init(&w, p[1]), 0);
    signal(SIGPIPE, SIG_IGN);
    assert_int_equal(frame_write(&w, "x", 1), -1);
    assert_int_equal(w.failed, 1);
    assert_int_equal(frame_write(&w, "y", 1), -1);
    assert_int_equal(frame_write_json(&w, NULL), -1);
    frame_writer_close(&w);
    close(p[1]);
}

/* ------------------------------------------------------------ pool */

typedef struct counter {
    pthread_mutex_t lock;
    int ran, dropped;
    int block; /* jobs spin while set */
} counter;

static void job_count(void *arg)
{
    counter *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        int block = c->block;
        if (!block)
            c->ran++;
        pthread_mutex_unlock(&c->lock);
        if (!block)
            return;
        nap_ms(1);
    }
}

static void job_drop(void *arg)
{
    counter *c = arg;
    pthread_mutex_lock(&c->lock);
    c->dropped++;
    pthread_mutex_unlock(&c->lock);
}

static void test_pool_runs_and_refuses_when_full(void **state)
{
    (void)state;
    counter c = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 1};
    port_pool *p;
    assert_int_equal(pool_new(&p, 2, 3), 0); /* 2 workers, 3 waiting */
    /* 2 run (blocked), 3 wait, the 6th is refused. */
    for (int i = 0; i < 2; i++)
        assert_int_equal(pool_submit(p, job_count, job_drop, &c), 0);
    size_t queued = 0, running = 0;
    for (int i = 0; i < 2000 && running < 2; i++) {
        nap_ms(1);
        pool_stats(p, &queued, &running);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(pool_submit(p, job_count, job_drop, &c), 0);
    pool_stats(p, &queued, &running);
    assert_int_equal(running, 2);
    assert_int_equal(queued, 3);
    assert_int_equal(pool_submit(p, job_count, job_drop, &c), -1);

    /* A join with a short deadline fails while jobs are stuck. */
    assert_int_equal(pool_join(p, 50), -1);
    assert_int_equal(c.dropped, 3); /* closing dropped the waiting ones */
    assert_int_equal(pool_submit(p, job_count, job_drop, &c), -1);
    pthread_mutex_lock(&c.lock);
    c.block = 0;
    pthread_mutex_unlock(&c.lock);
    assert_int_equal(pool_join(p, 2000), 0);
    assert_int_equal(c.ran, 2);
    pool_free(p);
}

static void test_pool_bounds(void **state)
{
    (void)state;
    port_pool *p;
    assert_int_equal(pool_new(&p, 0, 10), -1);
    assert_int_equal(pool_new(&p, POOL_MAX_WORKERS + 1, 10), -1);
    assert_int_equal(pool_new(&p, 1, 0), -1);
    counter c = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
    assert_int_equal(pool_new(&p, 4, 1024), 0);
    int accepted = 0;
    for (int i = 0; i < 1000; i++)
        accepted += pool_submit(p, job_count, job_drop, &c) == 0;
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&c.lock);
        int finished = c.ran;
        pthread_mutex_unlock(&c.lock);
        if (finished == accepted)
            break;
        nap_ms(1);
    }
    assert_int_equal(pool_join(p, 2000), 0);
    assert_int_equal(c.ran, accepted);
    assert_int_equal(accepted, 1000);
    pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_several_frames_in_one_buffer),
        cmocka_unit_test(test_empty_frame),
        cmocka_unit_test(test_oversize_discarded_across_chunks),
        cmocka_unit_test(test_default_cap),
        cmocka_unit_test(test_writer_frames_are_whole),
        cmocka_unit_test(test_writer_fails_once_reader_is_gone),
        cmocka_unit_test(test_pool_runs_and_refuses_when_full),
        cmocka_unit_test(test_pool_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
