/*
 * Scrubbing whole JSON values (port/core/scrub_json.h).
 */
#include "scrub_json.h"

#include "self_heal/scrub.h"

#define SCRUB_JSON_MAX_DEPTH 32

static json_t *scrubbed(const sh_scrubber *s, json_t *v, int depth)
{
    if (depth > SCRUB_JSON_MAX_DEPTH)
        return json_string("[REDACTED:too_deep]");
    if (json_is_string(v)) {
        sh_buf out;
        sh_buf_init(&out);
        sh_scrub(s, json_string_value(v), json_string_length(v), &out, NULL);
        json_t *r = out.oom ? NULL : json_stringn(out.data != NULL ? out.data : "", out.len);
        sh_buf_free(&out);
        return r != NULL ? r : json_string("[REDACTED:unscrubbed]");
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) json_array_append_new(a, scrubbed(s, x, depth + 1));
        return a;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) json_object_set_new(o, k, scrubbed(s, x, depth + 1));
        return o;
    }
    return json_incref(v);
}

json_t *scrub_json(const sh_scrubber *s, json_t *v)
{
    return scrubbed(s, v, 0);
}
