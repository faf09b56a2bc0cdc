/* Fluent Bit json_lines bodies of any bytes: split into lines, each
 * decoded (or refused with a reason) and released; the decoded slices are
 * valid and the timestamp parser runs on every line too. */
#include "fuzz.h"
#include "self_heal/jsonl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    size_t at = 0;
    while (at < size) {
        size_t next = at;
        size_t len = sh_jsonl_next_line(body + at, size - at, &next);
        FZ_CHECK(len <= size - at && next <= size - at);
        const char *line = body + at;
        sh_jsonl_event ev;
        memset(&ev, 0, sizeof(ev));
        char err[128];
        err[0] = '\0';
        if (sh_jsonl_decode_line(&ev, line, len, err, sizeof(err)) == 0) {
            FZ_CHECK(ev.nmeta <= SH_JSONL_MAX_METADATA);
            /* touch every byte of the slices (ASan checks the reads) */
            volatile unsigned sum = 0;
            for (size_t i = 0; i < ev.nmeta; i++) {
                const sh_jsonl_meta *m = &ev.meta[i];
                FZ_CHECK(m->key_len <= SH_JSONL_MAX_KEY && m->key[m->key_len] == '\0');
                for (size_t k = 0; m->kind == SH_JSONL_STRING && k < m->string.len; k++)
                    sum += (unsigned char)m->string.ptr[k];
            }
            const sh_slice parts[] = {ev.message, ev.type, ev.stacktrace, ev.service, ev.level};
            for (size_t p = 0; p < sizeof(parts) / sizeof(parts[0]); p++)
                for (size_t i = 0; i < parts[p].len; i++)
                    sum += (unsigned char)parts[p].ptr[i];
            (void)sum;
        } else {
            FZ_CHECK(err[0] != '\0');
        }
        sh_jsonl_event_clear(&ev);
        sh_jsonl_event_clear(&ev); /* safe twice */
        int64_t us;
        (void)sh_parse_rfc3339(&us, line, len);
        if (next == 0)
            break;
        at += next;
    }
    return 0;
}
