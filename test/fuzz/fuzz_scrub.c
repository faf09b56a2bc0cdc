/* The scrubber on any text, with the built-in rules alone and with
 * configured patterns: it ends, and text it finds nothing in comes out as
 * it went in. */
#include "fuzz.h"
#include "self_heal/scrub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sh_scrubber *configured;
    if (configured == NULL) {
        static const char *const patterns[] = {"order-[0-9]{6}", "internal\\.example(:[0-9]+)?",
                                               "(sess|tok)_[A-Za-z0-9]{8,}"};
        char err[256];
        if (sh_scrubber_new(&configured, patterns, 3, err, sizeof(err)) != 0) {
            fprintf(stderr, "scrubber: %s\n", err);
            abort();
        }
    }
    if (size == 0)
        return 0;
    const sh_scrubber *s = (data[0] & 1) ? configured : NULL;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    sh_buf out;
    sh_buf_init(&out);
    sh_scrub_stats stats = {0};
    sh_scrub(s, text, len, &out, &stats);
    FZ_CHECK(!out.oom);
    if (stats.redactions == 0)
        FZ_CHECK(out.len == len && (len == 0 || memcmp(out.data, text, len) == 0));
    sh_buf_free(&out);
    return 0;
}
