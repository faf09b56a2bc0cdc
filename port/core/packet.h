/*
 * {packet,4} framing for the port protocol: each frame is a 4-byte
 * big-endian length followed by that many payload bytes.
 *
 * The reader is incremental: it takes the bytes read from stdin in chunks
 * of any size and calls a handler once per complete frame. A frame whose
 * declared length is over the cap is reported once (FRAME_TOO_LARGE) when
 * its header arrives, and its payload bytes are skipped as they arrive,
 * never buffered. The writer serialises whole frames from any thread.
 */
#ifndef SELF_HEAL_PORT_PACKET_H
#define SELF_HEAL_PORT_PACKET_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>

#define FRAME_MAX (8u * 1024 * 1024) /* largest payload accepted: 8 MiB */

typedef enum frame_event {
    FRAME_PAYLOAD,   /* a complete frame: payload, len */
    FRAME_TOO_LARGE, /* a header over the cap: payload NULL, len = declared length */
    FRAME_NO_MEMORY  /* the payload buffer could not be allocated; the frame is skipped */
} frame_event;

/* Called by frame_reader_feed for each event, on the feeding thread. The
 * payload is only valid during the call. */
typedef void (*frame_handler)(void *opaque, frame_event ev, const char *payload, size_t len);

typedef struct frame_reader frame_reader;

/* A reader accepting payloads of at most max_len bytes (0: FRAME_MAX).
 * Returns 0 or -1 (out of memory). */
int frame_reader_new(frame_reader **out, size_t max_len);

/* Feeds n bytes; calls on_event for each frame they complete. */
void frame_reader_feed(frame_reader *r, const char *buf, size_t n, frame_handler on_event,
                       void *opaque);

/* Bytes of a frame started but not completed (header or payload): non-zero
 * at EOF means the last frame was truncated. */
size_t frame_reader_pending(const frame_reader *r);

void frame_reader_free(frame_reader *r);

typedef struct frame_writer {
    pthread_mutex_t lock; /* held while one frame is written */
    int fd;
    int failed; /* a write failed (the reader is gone): later writes fail at once */
} frame_writer;

/* Returns 0 or -1. */
int frame_writer_init(frame_writer *w, int fd);
void frame_writer_close(frame_writer *w);

/* Writes one frame (header and payload) atomically with respect to other
 * writers. Returns 0 or -1 (payload over 4 GiB - 1, or write error). */
int frame_write(frame_writer *w, const char *payload, size_t len);

/* Serialises msg (compact JSON) and writes it as one frame. Steals msg
 * (NULL gives -1). Returns 0 or -1. */
int frame_write_json(frame_writer *w, json_t *msg);

/* Makes port_notify() write its frames through w (w must outlive every
 * notification; NULL restores the default stderr output). */
void frame_install_notify(frame_writer *w);

#endif
