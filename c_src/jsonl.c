/* STUB: replaced by the real json_lines decoder. */
#include "self_heal/jsonl.h"

#include <stdio.h>
#include <string.h>

int sh_jsonl_decode_line(sh_jsonl_event *out, const char *line, size_t len, char *err,
                         size_t errlen)
{
    (void)line;
    (void)len;
    memset(out, 0, sizeof(*out));
    snprintf(err, errlen, "not implemented");
    return -1;
}

void sh_jsonl_event_clear(sh_jsonl_event *event)
{
    event->doc = NULL;
}

size_t sh_jsonl_next_line(const char *body, size_t len, size_t *next)
{
    (void)body;
    *next = len;
    return len;
}

int sh_parse_rfc3339(int64_t *out_us, const char *s, size_t len)
{
    (void)s;
    (void)len;
    *out_us = 0;
    return -1;
}
