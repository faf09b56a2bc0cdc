/*
 * {packet,4} framing: an incremental reader with a size cap and a
 * mutex-serialised writer (packet.h).
 */
#include "packet.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctx.h"

struct frame_reader {
    size_t max_len;
    unsigned char hdr[4];
    size_t hdr_have;
    char *payload; /* NULL while skipping */
    size_t want;   /* declared payload length of the current frame */
    size_t have;   /* payload bytes consumed so far */
    int skipping;  /* current frame is oversize or could not be allocated */
};

int frame_reader_new(frame_reader **out, size_t max_len)
{
    frame_reader *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -1;
    r->max_len = max_len != 0 ? max_len : FRAME_MAX;
    *out = r;
    return 0;
}

void frame_reader_free(frame_reader *r)
{
    if (r == NULL)
        return;
    free(r->payload);
    free(r);
}

size_t frame_reader_pending(const frame_reader *r)
{
    if (r->hdr_have < 4)
        return r->hdr_have;
    return 4 + r->have;
}

static void reader_reset(frame_reader *r)
{
    free(r->payload);
    r->payload = NULL;
    r->hdr_have = 0;
    r->want = 0;
    r->have = 0;
    r->skipping = 0;
}

/* The header is complete: decide whether to buffer or skip the payload. */
static void reader_start(frame_reader *r, frame_handler on_event, void *opaque)
{
    r->want = (size_t)r->hdr[0] << 24 | (size_t)r->hdr[1] << 16 | (size_t)r->hdr[2] << 8 |
              (size_t)r->hdr[3];
    r->have = 0;
    r->skipping = 0;
    if (r->want > r->max_len) {
        r->skipping = 1;
        on_event(opaque, FRAME_TOO_LARGE, NULL, r->want);
        return;
    }
    r->payload = malloc(r->want != 0 ? r->want : 1);
    if (r->payload == NULL) {
        r->skipping = 1;
        on_event(opaque, FRAME_NO_MEMORY, NULL, r->want);
    }
}

void frame_reader_feed(frame_reader *r, const char *buf, size_t n, frame_handler on_event,
                       void *opaque)
{
    while (n > 0) {
        if (r->hdr_have < 4) {
            size_t take = 4 - r->hdr_have < n ? 4 - r->hdr_have : n;
            memcpy(r->hdr + r->hdr_have, buf, take);
            r->hdr_have += take;
            buf += take;
            n -= take;
            if (r->hdr_have < 4)
                return;
            reader_start(r, on_event, opaque);
        }
        size_t left = r->want - r->have;
        size_t take = left < n ? left : n;
        if (!r->skipping && take > 0)
            memcpy(r->payload + r->have, buf, take);
        r->have += take;
        buf += take;
        n -= take;
        if (r->have < r->want)
            return;
        if (!r->skipping)
            on_event(opaque, FRAME_PAYLOAD, r->payload, r->want);
        reader_reset(r);
    }
}

/* ------------------------------------------------------------ writer */

int frame_writer_init(frame_writer *w, int fd)
{
    if (pthread_mutex_init(&w->lock, NULL) != 0)
        return -1;
    w->fd = fd;
    w->failed = 0;
    return 0;
}

void frame_writer_close(frame_writer *w)
{
    pthread_mutex_destroy(&w->lock);
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int frame_write(frame_writer *w, const char *payload, size_t len)
{
    if (len > UINT32_MAX)
        return -1;
    unsigned char hdr[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                            (unsigned char)(len >> 8), (unsigned char)len};
    int rc = -1;
    pthread_mutex_lock(&w->lock);
    if (!w->failed) {
        rc =
            write_all(w->fd, hdr, sizeof(hdr)) == 0 && write_all(w->fd, payload, len) == 0 ? 0 : -1;
        if (rc != 0)
            w->failed = 1;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int frame_write_json(frame_writer *w, json_t *msg)
{
    if (msg == NULL)
        return -1;
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text == NULL)
        return -1;
    int rc = frame_write(w, text, strlen(text));
    free(text);
    return rc;
}

static frame_writer *notify_writer;

static int notify_through_writer(json_t *msg)
{
    return frame_write_json(notify_writer, msg);
}

void frame_install_notify(frame_writer *w)
{
    notify_writer = w;
    port_set_notify_hook(w != NULL ? notify_through_writer : NULL);
}
