/* Byte slices, the growable buffer and UTF-8 helpers of the C core. */
#include "self_heal/common.h"

#include <openssl/evp.h>

#include <stdarg.h>
#include <stdio.h>

#include <stdlib.h>
#include <string.h>

void sh_buf_init(sh_buf *buf)
{
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
    buf->oom = 0;
}

void sh_buf_free(sh_buf *buf)
{
    free(buf->data);
    sh_buf_init(buf);
}

void sh_buf_reset(sh_buf *buf)
{
    buf->len = 0;
    buf->oom = 0;
}

int sh_buf_reserve(sh_buf *buf, size_t extra)
{
    if (buf->oom)
        return -1;
    if (extra <= buf->cap - buf->len)
        return 0;
    if (extra > SIZE_MAX / 2 - buf->len) {
        buf->oom = 1;
        return -1;
    }
    size_t need = buf->len + extra;
    size_t cap = buf->cap ? buf->cap : 64;
    while (cap < need)
        cap *= 2;
    char *data = realloc(buf->data, cap);
    if (data == NULL) {
        buf->oom = 1;
        return -1;
    }
    buf->data = data;
    buf->cap = cap;
    return 0;
}

void sh_buf_append(sh_buf *buf, const void *bytes, size_t len)
{
    if (len == 0 || sh_buf_reserve(buf, len) != 0)
        return;
    memcpy(buf->data + buf->len, bytes, len);
    buf->len += len;
}

void sh_buf_append_str(sh_buf *buf, const char *cstr)
{
    sh_buf_append(buf, cstr, strlen(cstr));
}

void sh_buf_append_byte(sh_buf *buf, char byte)
{
    if (sh_buf_reserve(buf, 1) != 0)
        return;
    buf->data[buf->len++] = byte;
}

void sh_buf_appendf(sh_buf *buf, const char *fmt, ...)
{
    char tmp[SH_BUF_FMT_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        sh_buf_append(buf, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

void sh_hex_encode(char *out, const void *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

int sh_sha256_hex(char out[SH_SHA256_HEX_LEN + 1], const void *data, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != SH_SHA256_HEX_LEN / 2)
        return -1;
    sh_hex_encode(out, md, mdlen);
    return 0;
}

size_t sh_utf8_seq_len(const unsigned char *s, size_t avail)
{
    if (avail == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* <= U+10FFFF */
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

size_t sh_utf8_truncate(const char *bytes, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    /* step back over continuation bytes, at most 3 */
    size_t back = 0;
    while (n > 0 && back < 3 && ((unsigned char)bytes[n] & 0xC0) == 0x80) {
        n--;
        back++;
    }
    return n;
}

unsigned int sh_utf8_cp(const unsigned char *s, size_t n)
{
    if (n <= 1)
        return s[0];
    unsigned int cp = s[0] & (0xFF >> (n + 1));
    for (size_t k = 1; k < n; k++)
        cp = (cp << 6) | (s[k] & 0x3F);
    return cp;
}

int sh_token_ok(const char *s, size_t n, size_t max, const char *extra)
{
    if (s == NULL || n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != '\0' && extra != NULL && strchr(extra, c) != NULL)))
            return 0;
    }
    return 1;
}

void sh_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int sh_slice_eq(sh_slice a, sh_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

int sh_slice_eq_cstr(sh_slice a, const char *cstr)
{
    size_t n = strlen(cstr);
    return a.len == n && memcmp(a.ptr, cstr, n) == 0;
}

int sh_slice_starts_with(sh_slice a, const char *prefix, size_t prefix_len)
{
    return a.len >= prefix_len && memcmp(a.ptr, prefix, prefix_len) == 0;
}
