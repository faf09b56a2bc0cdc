/*
 * Shared by the libFuzzer targets in test/fuzz/ (docs/fuzzing.md): the
 * entry points' prototypes, a reader over the fuzzer's bytes and a check
 * that aborts (so the fuzzer reports it as a crash) when a property of the
 * code under test does not hold.
 */
#ifndef SELF_HEAL_FUZZ_H
#define SELF_HEAL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "self_heal/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FZ_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property does not hold: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The bytes not read yet. */
typedef struct fz {
    const char *p;
    size_t n;
} fz;

static inline fz fz_of(const uint8_t *data, size_t size)
{
    return (fz){(const char *)data, size};
}

/* One byte, 0 once the input is spent. */
static inline unsigned fz_byte(fz *f)
{
    if (f->n == 0)
        return 0;
    f->n--;
    return (unsigned char)*f->p++;
}

/* A little-endian number of `bytes` bytes (at most 8). */
static inline uint64_t fz_uint(fz *f, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)fz_byte(f) << (8 * i);
    return v;
}

/* The bytes up to the next sep (which is skipped), or to the end. */
static inline sh_slice fz_piece(fz *f, char sep)
{
    const char *end = f->n > 0 ? memchr(f->p, sep, f->n) : NULL;
    size_t len = end != NULL ? (size_t)(end - f->p) : f->n;
    sh_slice s = {f->p, len};
    f->p += len;
    f->n -= len;
    if (end != NULL) {
        f->p++;
        f->n--;
    }
    return s;
}

/* 1 when s[0..len) is whole, valid UTF-8. */
static inline int fz_utf8_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = sh_utf8_seq_len((const unsigned char *)s + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

/* 1 when the slice lies inside base[0..len) (or is empty). */
static inline int fz_within(sh_slice s, const char *base, size_t len)
{
    return s.len == 0 || (s.ptr >= base && s.ptr + s.len <= base + len);
}

#endif
