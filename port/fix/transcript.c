/*
 * An agent's transcript from its output (transcript.h).
 */
#include "transcript.h"

#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "self_heal/common.h"
#include "self_heal/scrub.h"

#define LINE_MAX_BYTES (1u << 20) /* longer lines are not parsed */
#define OUTPUT_TAIL 4096          /* bytes kept of a plain agent's output */

/* s[0..len) scrubbed and cut to max bytes at a code point, as a JSON
 * string (invalid UTF-8 as '?'). */
static json_t *clean(const sh_scrubber *scrub, const char *s, size_t len, size_t max)
{
    sh_buf b;
    sh_buf_init(&b);
    sh_scrub(scrub, s, len, &b, NULL);
    if (b.oom) {
        sh_buf_free(&b);
        return NULL;
    }
    size_t n = sh_utf8_truncate(b.data != NULL ? b.data : "", b.len, max);
    sh_buf out;
    sh_buf_init(&out);
    for (size_t i = 0; i < n;) {
        size_t k = sh_utf8_seq_len((const unsigned char *)b.data + i, n - i);
        if (k == 0) {
            sh_buf_append_byte(&out, '?');
            i++;
        } else {
            sh_buf_append(&out, b.data + i, k);
            i += k;
        }
    }
    json_t *j = out.oom ? NULL : json_stringn(out.data != NULL ? out.data : "", out.len);
    sh_buf_free(&out);
    sh_buf_free(&b);
    return j;
}

static json_t *clean_str(const sh_scrubber *scrub, const char *s)
{
    return clean(scrub, s != NULL ? s : "", s != NULL ? strlen(s) : 0, TRANSCRIPT_TEXT_MAX);
}

/* Appends an entry (stolen), dropping the oldest past the cap. */
static int add(transcript *t, json_t *entry)
{
    if (entry == NULL)
        return -1;
    if (json_array_size(t->entries) >= TRANSCRIPT_MAX_ENTRIES)
        json_array_remove(t->entries, 0);
    return json_array_append_new(t->entries, entry);
}

/* The text of a tool result's content: a string, or text blocks. */
static void result_text(sh_buf *out, json_t *content)
{
    if (json_is_string(content)) {
        sh_buf_append(out, json_string_value(content), json_string_length(content));
        return;
    }
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        json_t *text = json_object_get(b, "text");
        if (json_is_string(text) && out->len < TRANSCRIPT_TEXT_MAX * 4)
            sh_buf_append(out, json_string_value(text), json_string_length(text));
    }
}

static int on_message(transcript *t, json_t *msg, const sh_scrubber *scrub)
{
    json_t *content = json_object_get(json_object_get(msg, "message"), "content");
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        if (type == NULL)
            continue;
        if (strcmp(type, "text") == 0) {
            json_t *text = json_object_get(b, "text");
            if (json_is_string(text) && json_string_length(text) > 0 &&
                add(t, json_pack("{s:s, s:o}", "kind", "text", "text",
                                 clean(scrub, json_string_value(text), json_string_length(text),
                                       TRANSCRIPT_TEXT_MAX))) != 0)
                return -1;
        } else if (strcmp(type, "tool_use") == 0) {
            char *input = json_dumps(json_object_get(b, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
            json_t *name = json_object_get(b, "name");
            json_t *e =
                json_pack("{s:s, s:o, s:o}", "kind", "tool", "tool",
                          clean_str(scrub, json_is_string(name) ? json_string_value(name) : "?"),
                          "input", clean_str(scrub, input != NULL ? input : ""));
            free(input);
            if (add(t, e) != 0)
                return -1;
        } else if (strcmp(type, "tool_result") == 0) {
            sh_buf text;
            sh_buf_init(&text);
            result_text(&text, json_object_get(b, "content"));
            json_t *e = json_pack(
                "{s:s, s:o, s:b}", "kind", "result", "text",
                clean(scrub, text.data != NULL ? text.data : "", text.len, TRANSCRIPT_TEXT_MAX),
                "is_error", json_is_true(json_object_get(b, "is_error")));
            sh_buf_free(&text);
            if (add(t, e) != 0)
                return -1;
        }
    }
    return 0;
}

static long get_long(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long)json_integer_value(v) : 0;
}

static void on_result(transcript *t, json_t *res, const sh_scrubber *scrub)
{
    json_t *usage = json_object_get(res, "usage");
    t->input_tokens = get_long(usage, "input_tokens") +
                      get_long(usage, "cache_creation_input_tokens") +
                      get_long(usage, "cache_read_input_tokens");
    t->output_tokens = get_long(usage, "output_tokens");
    json_t *cost = json_object_get(res, "total_cost_usd");
    t->cost_usd = json_is_number(cost) && json_number_value(cost) > 0 ? json_number_value(cost) : 0;
    json_t *turns = json_object_get(res, "num_turns");
    t->turns = json_is_integer(turns) ? (long)json_integer_value(turns) : -1;
    t->is_error = json_is_true(json_object_get(res, "is_error"));
    json_t *text = json_object_get(res, "result");
    json_t *c = json_is_string(text) ? clean_str(scrub, json_string_value(text)) : NULL;
    if (c != NULL)
        snprintf(t->final, sizeof(t->final), "%s", json_string_value(c));
    json_decref(c);
}

int transcript_read(transcript *out, const char *path, const sh_scrubber *scrub)
{
    memset(out, 0, sizeof(*out));
    out->turns = -1;
    out->entries = json_array();
    char *text = exec_tail(path, TRANSCRIPT_READ_MAX);
    if (out->entries == NULL || text == NULL) {
        free(text);
        transcript_free(out);
        return -1;
    }
    size_t len = strlen(text);
    for (char *p = text; p < text + len;) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(text + len - p);
        if (n > 0 && n <= LINE_MAX_BYTES && p[0] == '{') {
            json_t *obj = json_loadb(p, n, JSON_REJECT_DUPLICATES, NULL);
            const char *type = json_string_value(json_object_get(obj, "type"));
            if (type != NULL) {
                out->structured = 1;
                if (strcmp(type, "assistant") == 0 || strcmp(type, "user") == 0) {
                    if (on_message(out, obj, scrub) != 0) {
                        json_decref(obj);
                        free(text);
                        transcript_free(out);
                        return -1;
                    }
                } else if (strcmp(type, "result") == 0) {
                    on_result(out, obj, scrub);
                }
            }
            json_decref(obj);
        }
        p += n + 1;
    }
    if (!out->structured && len > 0) {
        size_t from = len > OUTPUT_TAIL ? len - OUTPUT_TAIL : 0;
        while (from < len && ((unsigned char)text[from] & 0xC0) == 0x80)
            from++;
        if (add(out, json_pack("{s:s, s:o}", "kind", "output", "text",
                               clean(scrub, text + from, len - from, OUTPUT_TAIL))) != 0) {
            free(text);
            transcript_free(out);
            return -1;
        }
    }
    free(text);
    return 0;
}

void transcript_free(transcript *t)
{
    if (t == NULL)
        return;
    json_decref(t->entries);
    t->entries = NULL;
}

json_t *transcript_json(const transcript *t)
{
    return json_pack("{s:O, s:b, s:I, s:{s:I, s:I, s:f}, s:b, s:s}", "entries", t->entries,
                     "structured", t->structured, "turns", (json_int_t)t->turns, "usage",
                     "input_tokens", (json_int_t)t->input_tokens, "output_tokens",
                     (json_int_t)t->output_tokens, "cost_usd", t->cost_usd, "is_error", t->is_error,
                     "final", t->final);
}
