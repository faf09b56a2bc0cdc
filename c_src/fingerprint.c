/*
 * Fingerprints of error events: SHA-256 (OpenSSL EVP) over the exception
 * type, the normalised message and the identity of the top frames. See
 * include/self_heal/fingerprint.h for the exact layout.
 */
#include "self_heal/fingerprint.h"
#include "self_heal/normalize.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define SEP_FIELD '\x1f'
#define SEP_FRAME '\x1e'

/*
 * The digest memo: errors come in bursts of one kind, so the bytes hashed
 * for an event are very often exactly those of an event seen shortly
 * before. A small direct-mapped table keyed by a fast 64-bit hash of those
 * bytes keeps the last inputs with their digests; a hit is confirmed by
 * comparing the whole input, so the result is always the SHA-256 of the
 * input. Inputs longer than SH_FP_MEMO_BYTES are always hashed.
 */
#define SH_FP_MEMO_SLOTS 64
#define SH_FP_MEMO_BYTES 512

typedef struct memo_entry {
    size_t len; /* 0: empty (a real input is never empty) */
    uint8_t digest[SH_FP_BYTES];
    char hex[SH_FP_HEX_LEN + 1];
    char bytes[SH_FP_MEMO_BYTES];
} memo_entry;

struct sh_fp_ctx {
    memo_entry memo[SH_FP_MEMO_SLOTS];
    EVP_MD *md;
    EVP_MD_CTX *mdctx;
    sh_buf normalized;
    sh_buf canonical;  /* what is hashed */
    sh_fp_frame *prep; /* sh_fingerprint's prepared frames */
    size_t prep_cap;
};

/* 64-bit multiply-mix hash, 8 bytes a step: selects a memo slot only. */
static uint64_t memo_hash(const char *p, size_t n)
{
    const uint64_t k = 0x9E3779B97F4A7C15ULL;
    uint64_t h = n * k;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * k;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * k;
    return h ^ (h >> 32);
}

/* The slot for this input, or NULL when it is too long to keep. */
static memo_entry *memo_find(sh_fp_ctx *ctx, const char *p, size_t n)
{
    if (n == 0 || n > SH_FP_MEMO_BYTES)
        return NULL;
    return &ctx->memo[memo_hash(p, n) & (SH_FP_MEMO_SLOTS - 1)];
}

int sh_fp_ctx_new(sh_fp_ctx **out)
{
    *out = NULL;
    sh_fp_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return -1;
    sh_buf_init(&ctx->normalized);
    sh_buf_init(&ctx->canonical);
    /* An explicit fetch once per context avoids OpenSSL 3's implicit
     * fetch on every EVP_DigestInit_ex, which costs more than the hash. */
    ctx->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    ctx->mdctx = EVP_MD_CTX_new();
    if (ctx->md == NULL || ctx->mdctx == NULL) {
        sh_fp_ctx_free(ctx);
        return -1;
    }
    *out = ctx;
    return 0;
}

void sh_fp_ctx_free(sh_fp_ctx *ctx)
{
    if (ctx == NULL)
        return;
    EVP_MD_CTX_free(ctx->mdctx);
    EVP_MD_free(ctx->md);
    sh_buf_free(&ctx->normalized);
    sh_buf_free(&ctx->canonical);
    free(ctx->prep);
    free(ctx);
}

sh_slice sh_fp_ctx_normalized(const sh_fp_ctx *ctx)
{
    sh_slice s = {ctx->normalized.data ? ctx->normalized.data : "", ctx->normalized.len};
    return s;
}

void sh_fp_to_hex(char hex[SH_FP_HEX_LEN + 1], const uint8_t digest[SH_FP_BYTES])
{
    sh_hex_encode(hex, digest, SH_FP_BYTES);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int sh_fp_from_hex(uint8_t digest[SH_FP_BYTES], const char *hex, size_t len)
{
    if (len != SH_FP_HEX_LEN)
        return -1;
    for (size_t i = 0; i < SH_FP_BYTES; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        digest[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static sh_slice trim(sh_slice s)
{
    while (s.len > 0 &&
           (s.ptr[0] == ' ' || s.ptr[0] == '\t' || s.ptr[0] == '\n' || s.ptr[0] == '\r')) {
        s.ptr++;
        s.len--;
    }
    while (s.len > 0 && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t' ||
                         s.ptr[s.len - 1] == '\n' || s.ptr[s.len - 1] == '\r'))
        s.len--;
    return s;
}

/*
 * The identity of a function: compiler-generated names of anonymous
 * functions and comprehensions ("-init/1-fun-0-", quoted or not) become
 * the enclosing function ("init/1"), whose numbering does not change when
 * unrelated code moves.
 */
static sh_slice canonical_function(sh_slice f)
{
    if (f.len >= 2 && f.ptr[0] == '"') {
        const char *end = memchr(f.ptr + 1, '"', f.len - 1);
        if (end != NULL) {
            f.len = (size_t)(end - f.ptr) - 1;
            f.ptr++;
        }
    }
    if (f.len < 2 || f.ptr[0] != '-')
        return f;
    const char *p = f.ptr + 1;
    const char *end = f.ptr + f.len;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    if (slash == NULL)
        return f;
    const char *q = slash + 1;
    while (q < end && *q >= '0' && *q <= '9')
        q++;
    if (q == slash + 1)
        return f;
    sh_slice out = {p, (size_t)(q - p)};
    return out;
}

void sh_fp_frame_key(sh_buf *out, const sh_frame *frame)
{
    sh_slice fn = canonical_function(frame->function);
    sh_buf_append(out, frame->module.ptr, frame->module.len);
    sh_buf_append_byte(out, SEP_FIELD);
    sh_buf_append(out, fn.ptr, fn.len);
    sh_buf_append_byte(out, SEP_FIELD);
    sh_frame_file_canonical(out, frame->file);
}

/* Appends the key of frame f and a frame separator; returns where the key
 * starts in buf. */
static size_t append_frame(sh_buf *buf, const sh_fp_frame *f)
{
    size_t start = buf->len;
    if (f->key.ptr != NULL)
        sh_buf_append(buf, f->key.ptr, f->key.len);
    else if (f->frame != NULL)
        sh_fp_frame_key(buf, f->frame);
    sh_buf_append_byte(buf, SEP_FRAME);
    return start;
}

/* Appends the frames that identify the event; fills the result's frame
 * fields. */
static void append_frames(sh_buf *buf, sh_fp_result *out, const sh_fp_frame *frames, size_t n)
{
    out->top_frame = -1;
    out->nused = 0;
    out->in_app = 0;
    for (size_t i = 0; i < n && out->nused < SH_FP_IN_APP_FRAMES; i++) {
        if (!frames[i].in_app)
            continue;
        if (out->top_frame < 0)
            out->top_frame = (long)i;
        append_frame(buf, &frames[i]);
        out->nused++;
    }
    if (out->nused > 0) {
        out->in_app = 1;
        return;
    }
    size_t prev = 0, prev_len = 0; /* the previous frame's bytes in buf */
    for (size_t i = 0; i < n && out->nused < SH_FP_MAX_SYSTEM_FRAMES; i++) {
        size_t start = append_frame(buf, &frames[i]);
        size_t len = buf->len - start;
        if (buf->oom)
            return;
        if (out->nused > 0 && len == prev_len &&
            memcmp(buf->data + prev, buf->data + start, len) == 0) {
            buf->len = start; /* recursion depth must not split a group */
            continue;
        }
        if (out->top_frame < 0)
            out->top_frame = (long)i;
        out->nused++;
        prev = start;
        prev_len = len;
    }
}

static int hash_canonical(sh_fp_result *out, sh_fp_ctx *ctx);
static int hash_around(sh_fp_result *out, sh_fp_ctx *ctx, size_t head, sh_slice mid);

int sh_fingerprint_frames(sh_fp_result *out, sh_fp_ctx *ctx, sh_slice type, sh_slice message,
                          const sh_fp_frame *frames, size_t nframes)
{
    sh_buf *buf = &ctx->canonical;
    sh_buf_reset(buf);
    sh_buf_reset(&ctx->normalized);

    type = trim(type);
    if (sh_normalize(&ctx->normalized, message.ptr, message.len) != 0)
        return -1;

    sh_buf_append(buf, type.ptr, type.len);
    sh_buf_append_byte(buf, SEP_FIELD);
    if (ctx->normalized.len > SH_FP_MEMO_BYTES) {
        /* too long for the memo: hashed in three parts rather than copied
         * into the canonical buffer (a 16 MiB message was written twice) */
        size_t head = buf->len;
        sh_buf_append_byte(buf, SEP_FIELD);
        append_frames(buf, out, frames, nframes);
        if (buf->oom)
            return -1;
        return hash_around(out, ctx, head, sh_fp_ctx_normalized(ctx));
    }
    sh_buf_append(buf, ctx->normalized.data, ctx->normalized.len);
    sh_buf_append_byte(buf, SEP_FIELD);
    append_frames(buf, out, frames, nframes);
    if (buf->oom)
        return -1;

    return hash_canonical(out, ctx);
}

/* SHA-256 of ctx->canonical's first head bytes, then mid, then the rest of
 * ctx->canonical: the digest of the canonical bytes with mid in place (an
 * empty mid at the end: of the canonical bytes alone). */
static int hash_around(sh_fp_result *out, sh_fp_ctx *ctx, size_t head, sh_slice mid)
{
    sh_buf *buf = &ctx->canonical;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_DigestInit_ex(ctx->mdctx, ctx->md, NULL) != 1 ||
        EVP_DigestUpdate(ctx->mdctx, buf->data, head) != 1 ||
        (mid.len > 0 && EVP_DigestUpdate(ctx->mdctx, mid.ptr, mid.len) != 1) ||
        (buf->len > head && EVP_DigestUpdate(ctx->mdctx, buf->data + head, buf->len - head) != 1) ||
        EVP_DigestFinal_ex(ctx->mdctx, md, &mdlen) != 1 || mdlen < SH_FP_BYTES)
        return -1;
    memcpy(out->digest, md, SH_FP_BYTES);
    sh_fp_to_hex(out->hex, out->digest);
    return 0;
}

/* SHA-256 of ctx->canonical into out (digest and hex), through the memo. */
static int hash_canonical(sh_fp_result *out, sh_fp_ctx *ctx)
{
    sh_buf *buf = &ctx->canonical;
    memo_entry *m = memo_find(ctx, buf->data, buf->len);
    if (m != NULL && m->len == buf->len && memcmp(m->bytes, buf->data, buf->len) == 0) {
        memcpy(out->digest, m->digest, SH_FP_BYTES);
        memcpy(out->hex, m->hex, sizeof(out->hex));
        return 0;
    }
    if (hash_around(out, ctx, buf->len, (sh_slice){"", 0}) != 0)
        return -1;
    if (m != NULL && buf->len <= SH_FP_MEMO_BYTES) {
        memcpy(m->bytes, buf->data, buf->len);
        m->len = buf->len;
        memcpy(m->digest, out->digest, SH_FP_BYTES);
        memcpy(m->hex, out->hex, sizeof(m->hex));
    }
    return 0;
}

int sh_fingerprint(sh_fp_result *out, sh_fp_ctx *ctx, const sh_fp_input *in,
                   const sh_inapp_config *config)
{
    if (in->nframes > ctx->prep_cap) {
        size_t cap = in->nframes < 64 ? 64 : in->nframes;
        sh_fp_frame *p = realloc(ctx->prep, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        ctx->prep = p;
        ctx->prep_cap = cap;
    }
    /* in-app flags only as far as they can matter: up to the third in-app
     * frame, or all of them when there are fewer */
    size_t n = 0, in_app = 0;
    for (; n < in->nframes && in_app < SH_FP_IN_APP_FRAMES; n++) {
        sh_fp_frame *f = &ctx->prep[n];
        f->frame = &in->frames[n];
        f->key = (sh_slice){NULL, 0};
        f->in_app = sh_frame_is_in_app(f->frame, config);
        in_app += (size_t)f->in_app;
    }
    if (in_app == 0) {
        for (; n < in->nframes; n++)
            ctx->prep[n] = (sh_fp_frame){&in->frames[n], {NULL, 0}, 0};
    }
    return sh_fingerprint_frames(out, ctx, in->type, in->message, ctx->prep, n);
}

int sh_fingerprint_cluster(sh_fp_result *out, sh_fp_ctx *ctx, sh_slice type, sh_slice message,
                           uint64_t cluster_id)
{
    sh_buf *buf = &ctx->canonical;
    sh_buf_reset(buf);
    sh_buf_reset(&ctx->normalized);
    if (sh_normalize(&ctx->normalized, message.ptr, message.len) != 0)
        return -1;
    type = trim(type);
    sh_buf_append(buf, type.ptr, type.len);
    sh_buf_append(buf,
                  "\x1f\x01"
                  "cluster\x1f",
                  10);
    static const char digits[] = "0123456789abcdef";
    char hex[16];
    for (int i = 0; i < 16; i++)
        hex[i] = digits[(cluster_id >> (60 - 4 * i)) & 0xf];
    sh_buf_append(buf, hex, sizeof(hex));
    out->top_frame = -1;
    out->nused = 0;
    out->in_app = 0;
    if (buf->oom)
        return -1;
    return hash_canonical(out, ctx);
}
