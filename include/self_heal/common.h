/*
 * Shared basics of the SelfHeal C core: byte slices and a growable byte
 * buffer. Plain C11, no erl_nif: linked by the NIF, the port program and
 * the C tests alike.
 */
#ifndef SELF_HEAL_COMMON_H
#define SELF_HEAL_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* A borrowed run of bytes; never NUL-terminated by contract. */
typedef struct sh_slice {
    const char *ptr;
    size_t len;
} sh_slice;

#define SH_SLICE_EMPTY ((sh_slice){"", 0})

/* A growable byte buffer. `oom` is sticky: once an allocation fails every
 * later append is a no-op and the caller checks it once at the end. */
typedef struct sh_buf {
    char *data;
    size_t len;
    size_t cap;
    int oom;
} sh_buf;

void sh_buf_init(sh_buf *buf);
void sh_buf_free(sh_buf *buf);
void sh_buf_reset(sh_buf *buf);
/* Ensures room for `extra` more bytes; returns 0 or -1 (and sets oom). */
int sh_buf_reserve(sh_buf *buf, size_t extra);
void sh_buf_append(sh_buf *buf, const void *bytes, size_t len);
void sh_buf_append_str(sh_buf *buf, const char *cstr);
void sh_buf_append_byte(sh_buf *buf, char byte);
/* printf-style append of a short piece: the formatted text is cut at
 * SH_BUF_FMT_MAX - 1 bytes (append longer text with sh_buf_append). */
#define SH_BUF_FMT_MAX 512
void sh_buf_appendf(sh_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Lower-case hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void sh_hex_encode(char *out, const void *bytes, size_t n);

/* Lower-case hex SHA-256 of data into out (64 + NUL); 0, or -1 when
 * OpenSSL fails. */
#define SH_SHA256_HEX_LEN 64
int sh_sha256_hex(char out[SH_SHA256_HEX_LEN + 1], const void *data, size_t len);

/* Largest n <= max such that bytes[0..n) does not end inside a UTF-8
 * sequence that started before max. Used to truncate at a code point. */
size_t sh_utf8_truncate(const char *bytes, size_t len, size_t max);

/* Length of the valid UTF-8 sequence starting at s[0] (1..4), or 0 when
 * the byte there does not start a valid, complete sequence. */
size_t sh_utf8_seq_len(const unsigned char *s, size_t avail);

/* The code point of the valid n-byte sequence at s (n from
 * sh_utf8_seq_len). */
unsigned int sh_utf8_cp(const unsigned char *s, size_t n);

/* 1 when s[0..n) is 1 to max bytes, each an ASCII letter or digit or one
 * of the characters of `extra` (e.g. "-_."), else 0. For identifiers that
 * reach paths, branch names, URLs and SQL. */
int sh_token_ok(const char *s, size_t n, size_t max, const char *extra);

/* printf into a caller's error buffer; nothing when err is NULL or
 * errlen 0. */
void sh_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

int sh_slice_eq(sh_slice a, sh_slice b);
int sh_slice_eq_cstr(sh_slice a, const char *cstr);
int sh_slice_starts_with(sh_slice a, const char *prefix, size_t prefix_len);

#endif
