/* Stack-frame parsing on any text: every slice of every frame points into
 * the input, the parse of each line agrees with the parse of the text, and
 * canonical files and the in-app test run on whatever was parsed. */
#include "fuzz.h"
#include "self_heal/frames.h"

#define MAX_FRAMES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    sh_frame frames[MAX_FRAMES];
    size_t n = sh_frames_parse_text(frames, MAX_FRAMES, text, size);
    static const sh_slice apps[] = {{"my_app", 6}, {"shop", 4}};
    static const sh_slice prefixes[] = {{"lib/", 4}, {"https://shop.example/", 21}, {"MyApp.", 6}};
    sh_inapp_config cfg = {apps, 2, prefixes, 3};
    sh_inapp_config empty = {NULL, 0, NULL, 0};
    sh_buf canon;
    sh_buf_init(&canon);
    for (size_t i = 0; i < n && i < MAX_FRAMES; i++) {
        const sh_frame *f = &frames[i];
        FZ_CHECK(fz_within(f->app, text, size) && fz_within(f->module, text, size));
        FZ_CHECK(fz_within(f->function, text, size) && fz_within(f->file, text, size));
        sh_buf_reset(&canon);
        sh_frame_file_canonical(&canon, f->file);
        FZ_CHECK(!canon.oom);
        (void)sh_frame_is_in_app(f, &cfg);
        (void)sh_frame_is_in_app(f, &empty);
    }
    /* the first line alone parses as it did within the text */
    fz f = fz_of(data, size);
    sh_slice line = fz_piece(&f, '\n');
    sh_frame one;
    if (sh_frame_parse_line(&one, line.ptr, line.len) == 1) {
        FZ_CHECK(fz_within(one.module, line.ptr, line.len));
        FZ_CHECK(fz_within(one.file, line.ptr, line.len));
        FZ_CHECK(n >= 1 && frames[0].kind == one.kind && frames[0].line == one.line);
        FZ_CHECK(sh_slice_eq(frames[0].module, one.module) &&
                 sh_slice_eq(frames[0].function, one.function));
    }
    sh_buf_free(&canon);
    return 0;
}
