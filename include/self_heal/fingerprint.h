/*
 * Fingerprints: 32 hex chars, the first 16 bytes of
 *   SHA-256(type 0x1f normalised-message 0x1f frame 0x1e frame ...)
 * where each frame is module 0x1f function 0x1f canonical-file, taken from
 * the top 3 in-app frames; when no frame is in-app, from all frames (at
 * most SH_FP_MAX_SYSTEM_FRAMES, consecutive repeats collapsed, so deeper or
 * shallower recursion does not split a group); without frames, from the
 * type and message alone. Line and column numbers never take part.
 */
#ifndef SELF_HEAL_FINGERPRINT_H
#define SELF_HEAL_FINGERPRINT_H

#include "self_heal/common.h"
#include "self_heal/frames.h"

#define SH_FP_BYTES 16
#define SH_FP_HEX_LEN 32
#define SH_FP_IN_APP_FRAMES 3
#define SH_FP_MAX_SYSTEM_FRAMES 16

typedef struct sh_fp_input {
    sh_slice type;    /* exception type ("RuntimeError", "exit", "TypeError"); may be empty */
    sh_slice message; /* raw message; normalised here */
    const sh_frame *frames;
    size_t nframes;
} sh_fp_input;

typedef struct sh_fp_result {
    uint8_t digest[SH_FP_BYTES];
    char hex[SH_FP_HEX_LEN + 1];
    /* index in the input of the first frame that took part, or -1 */
    long top_frame;
    /* how many frames took part, and whether they were in-app ones */
    size_t nused;
    int in_app;
} sh_fp_result;

/* Per-thread working state: a SHA-256 context and scratch buffers. Not
 * shared between threads; cheap to keep for a whole batch. */
typedef struct sh_fp_ctx sh_fp_ctx;

int sh_fp_ctx_new(sh_fp_ctx **out);
void sh_fp_ctx_free(sh_fp_ctx *ctx);

/* Computes the fingerprint of one event. Returns 0, or -1 when OpenSSL or
 * an allocation failed. After a call, sh_fp_ctx_normalized() holds the
 * normalised message (valid until the next call). */
int sh_fingerprint(sh_fp_result *out, sh_fp_ctx *ctx, const sh_fp_input *in,
                   const sh_inapp_config *config);

/* A frame as the fingerprint sees it: its in-app flag and the bytes hashed
 * for it (its key). Callers that meet the same frames again and again (the
 * NIF within a batch) compute both once and pass them in; a key with a NULL
 * ptr is computed from `frame` when it is needed. */
typedef struct sh_fp_frame {
    const sh_frame *frame; /* may be NULL when key.ptr is set */
    sh_slice key;
    int in_app;
} sh_fp_frame;

/* Appends the key of a frame: module 0x1f function 0x1f canonical-file,
 * where the function of an anonymous function or comprehension is the
 * enclosing one ("-init/1-fun-0-" -> "init/1"). */
void sh_fp_frame_key(sh_buf *out, const sh_frame *frame);

/* sh_fingerprint over prepared frames; gives the same fingerprint as
 * sh_fingerprint for the same frames, flags and keys. */
int sh_fingerprint_frames(sh_fp_result *out, sh_fp_ctx *ctx, sh_slice type, sh_slice message,
                          const sh_fp_frame *frames, size_t nframes);

/* The fingerprint of a stackless event grouped by the template miner:
 *   SHA-256(type 0x1f 0x01 "cluster" 0x1f 16-hex-digit cluster id)
 * so that it stays the same while the cluster's template generalises. The
 * message is normalised only for sh_fp_ctx_normalized(). */
int sh_fingerprint_cluster(sh_fp_result *out, sh_fp_ctx *ctx, sh_slice type, sh_slice message,
                           uint64_t cluster_id);

sh_slice sh_fp_ctx_normalized(const sh_fp_ctx *ctx);

/* Hex <-> bytes for fingerprints; parse returns 0 or -1. */
void sh_fp_to_hex(char hex[SH_FP_HEX_LEN + 1], const uint8_t digest[SH_FP_BYTES]);
int sh_fp_from_hex(uint8_t digest[SH_FP_BYTES], const char *hex, size_t len);

#endif
