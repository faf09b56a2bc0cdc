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

struct sh_fp_ctx {
    EVP_MD *md;
    EVP_MD_CTX *mdctx;
    sh_buf normalized;
    sh_buf canonical; /* what is hashed */
};

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
    free(ctx);
}

sh_slice sh_fp_ctx_normalized(const sh_fp_ctx *ctx)
{
    sh_slice s = {ctx->normalized.data ? ctx->normalized.data : "", ctx->normalized.len};
    return s;
}

void sh_fp_to_hex(char hex[SH_FP_HEX_LEN + 1], const uint8_t digest[SH_FP_BYTES])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < SH_FP_BYTES; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 0x0f];
    }
    hex[SH_FP_HEX_LEN] = '\0';
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

static int same_frame(const sh_frame *a, const sh_frame *b)
{
    return sh_slice_eq(a->module, b->module) &&
           sh_slice_eq(canonical_function(a->function), canonical_function(b->function)) &&
           sh_slice_eq(a->file, b->file);
}

static void append_frame(sh_buf *buf, const sh_frame *frame)
{
    sh_slice fn = canonical_function(frame->function);
    sh_buf_append(buf, frame->module.ptr, frame->module.len);
    sh_buf_append_byte(buf, SEP_FIELD);
    sh_buf_append(buf, fn.ptr, fn.len);
    sh_buf_append_byte(buf, SEP_FIELD);
    sh_frame_file_canonical(buf, frame->file);
    sh_buf_append_byte(buf, SEP_FRAME);
}

/* Appends the frames that identify the event; fills the result's frame
 * fields. */
static void append_frames(sh_buf *buf, sh_fp_result *out, const sh_fp_input *in,
                          const sh_inapp_config *config)
{
    out->top_frame = -1;
    out->nused = 0;
    out->in_app = 0;
    for (size_t i = 0; i < in->nframes && out->nused < SH_FP_IN_APP_FRAMES; i++) {
        if (!sh_frame_is_in_app(&in->frames[i], config))
            continue;
        if (out->top_frame < 0)
            out->top_frame = (long)i;
        append_frame(buf, &in->frames[i]);
        out->nused++;
    }
    if (out->nused > 0) {
        out->in_app = 1;
        return;
    }
    const sh_frame *prev = NULL;
    for (size_t i = 0; i < in->nframes && out->nused < SH_FP_MAX_SYSTEM_FRAMES; i++) {
        const sh_frame *frame = &in->frames[i];
        if (prev != NULL && same_frame(prev, frame))
            continue; /* recursion depth must not split a group */
        if (out->top_frame < 0)
            out->top_frame = (long)i;
        append_frame(buf, frame);
        out->nused++;
        prev = frame;
    }
}

int sh_fingerprint(sh_fp_result *out, sh_fp_ctx *ctx, const sh_fp_input *in,
                   const sh_inapp_config *config)
{
    sh_buf *buf = &ctx->canonical;
    sh_buf_reset(buf);
    sh_buf_reset(&ctx->normalized);

    sh_slice type = trim(in->type);
    if (sh_normalize(&ctx->normalized, in->message.ptr, in->message.len) != 0)
        return -1;

    sh_buf_append(buf, type.ptr, type.len);
    sh_buf_append_byte(buf, SEP_FIELD);
    sh_buf_append(buf, ctx->normalized.data, ctx->normalized.len);
    sh_buf_append_byte(buf, SEP_FIELD);
    append_frames(buf, out, in, config);
    if (buf->oom)
        return -1;

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_DigestInit_ex(ctx->mdctx, ctx->md, NULL) != 1 ||
        EVP_DigestUpdate(ctx->mdctx, buf->data, buf->len) != 1 ||
        EVP_DigestFinal_ex(ctx->mdctx, md, &mdlen) != 1 || mdlen < SH_FP_BYTES)
        return -1;
    memcpy(out->digest, md, SH_FP_BYTES);
    sh_fp_to_hex(out->hex, out->digest);
    return 0;
}
