/* Fingerprints of events made of any bytes: type NUL message NUL stack
 * trace. sh_fingerprint and sh_fingerprint_frames over the same frames
 * give the same fingerprint, the hex form matches the digest and parses
 * back, and the cluster form runs on the same type and message. */
#include "fuzz.h"
#include "self_heal/fingerprint.h"

#define MAX_FRAMES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sh_fp_ctx *ctx;
    if (ctx == NULL && sh_fp_ctx_new(&ctx) != 0)
        abort();
    fz f = fz_of(data, size);
    sh_slice type = fz_piece(&f, '\0');
    sh_slice message = fz_piece(&f, '\0');
    sh_frame frames[MAX_FRAMES];
    size_t n = sh_frames_parse_text(frames, MAX_FRAMES, f.p, f.n);
    static const sh_slice apps[] = {{"my_app", 6}};
    static const sh_slice prefixes[] = {{"lib/", 4}, {"MyApp.", 6}};
    sh_inapp_config cfg = {apps, 1, prefixes, 2};

    sh_fp_input in = {type, message, frames, n};
    sh_fp_result a;
    FZ_CHECK(sh_fingerprint(&a, ctx, &in, &cfg) == 0);
    FZ_CHECK(a.nused <= n && (a.top_frame < 0 || (size_t)a.top_frame < n));
    char hex[SH_FP_HEX_LEN + 1];
    sh_fp_to_hex(hex, a.digest);
    FZ_CHECK(strcmp(hex, a.hex) == 0);
    uint8_t back[SH_FP_BYTES];
    FZ_CHECK(sh_fp_from_hex(back, a.hex, SH_FP_HEX_LEN) == 0);
    FZ_CHECK(memcmp(back, a.digest, SH_FP_BYTES) == 0);
    sh_slice norm = sh_fp_ctx_normalized(ctx);
    FZ_CHECK(fz_utf8_ok(norm.ptr, norm.len));

    /* the same frames prepared: their keys and in-app flags */
    sh_fp_frame prepared[MAX_FRAMES];
    sh_buf keys[MAX_FRAMES];
    for (size_t i = 0; i < n; i++) {
        sh_buf_init(&keys[i]);
        sh_fp_frame_key(&keys[i], &frames[i]);
        FZ_CHECK(!keys[i].oom);
        prepared[i].frame = &frames[i];
        prepared[i].key = (sh_slice){keys[i].data != NULL ? keys[i].data : "", keys[i].len};
        prepared[i].in_app = sh_frame_is_in_app(&frames[i], &cfg);
    }
    sh_fp_result b;
    FZ_CHECK(sh_fingerprint_frames(&b, ctx, type, message, prepared, n) == 0);
    FZ_CHECK(memcmp(a.digest, b.digest, SH_FP_BYTES) == 0);
    for (size_t i = 0; i < n; i++)
        sh_buf_free(&keys[i]);

    FZ_CHECK(sh_fingerprint_cluster(&b, ctx, type, message, size) == 0);
    /* the input as a fingerprint in hex: parsed or refused, never overrun */
    (void)sh_fp_from_hex(back, (const char *)data, size < 64 ? size : 64);
    return 0;
}
