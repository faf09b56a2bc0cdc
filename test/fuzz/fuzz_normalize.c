/* Message normalisation on any bytes: the output is valid UTF-8 without
 * control bytes other than '\n', and within the documented bound. */
#include "fuzz.h"
#include "self_heal/normalize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sh_buf out;
    sh_buf_init(&out);
    FZ_CHECK(sh_normalize(&out, (const char *)data, size) == 0);
    FZ_CHECK(out.len <= 5 * size + 16);
    FZ_CHECK(fz_utf8_ok(out.data, out.len));
    for (size_t i = 0; i < out.len; i++) {
        unsigned char c = (unsigned char)out.data[i];
        FZ_CHECK(c >= 0x20 || c == '\n');
    }
    /* appending keeps what was there */
    size_t first = out.len;
    FZ_CHECK(sh_normalize(&out, (const char *)data, size) == 0);
    FZ_CHECK(out.len == 2 * first && memcmp(out.data, out.data + first, first) == 0);
    sh_buf_free(&out);
    return 0;
}
