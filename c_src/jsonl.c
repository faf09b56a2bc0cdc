/*
 * Decoding of Fluent Bit `json_lines` bodies and plain JSON events into
 * sh_jsonl_event records (see include/self_heal/jsonl.h for the contract).
 *
 * Everything here reads hostile input from the network:
 *  - lines longer than SH_JSONL_MAX_LINE are refused before any scan;
 *  - nesting deeper than SH_JSONL_MAX_DEPTH is refused by a linear
 *    pre-scan before jansson (which recurses per level) sees the text;
 *  - every slice handed out points into the jansson document owned by the
 *    event and carries its length (strings may contain NUL bytes, since
 *    the document is parsed with JSON_ALLOW_NUL);
 *  - error reasons quoting the input are reduced to printable ASCII.
 */
#include "self_heal/jsonl.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* 9999-12-31T23:59:59.999999Z, the largest instant a numeric timestamp may
 * denote (RFC 3339 strings are bounded by their four-digit year). */
#define SH_MAX_TIMESTAMP_US INT64_C(253402300799999999)

/* Bounded number of values consumed by the field lookup (message, type,
 * stacktrace, service, level, timestamp); they are left out of metadata. */
#define SH_CONSUMED_MAX 6

static void set_err(char *err, size_t errlen, const char *reason)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", reason);
}

/* ------------------------------------------------------------ lines */

size_t sh_jsonl_next_line(const char *body, size_t len, size_t *next)
{
    if (body == NULL || len == 0) {
        *next = 0;
        return 0;
    }
    const char *nl = memchr(body, '\n', len);
    if (nl == NULL) {
        /* last line without a newline */
        *next = len;
        return len;
    }
    size_t n = (size_t)(nl - body);
    *next = n + 1;
    if (n > 0 && body[n - 1] == '\r')
        n--;
    return n;
}

int sh_jsonl_blank(const char *line, size_t len)
{
    for (size_t k = 0; k < len; k++)
        if (line[k] != ' ' && line[k] != '\t' && line[k] != '\r')
            return 0;
    return 1;
}

size_t sh_jsonl_count(const char *body, size_t len, size_t limit)
{
    size_t off = 0, count = 0;
    while (off < len && count <= limit) {
        size_t next;
        size_t n = sh_jsonl_next_line(body + off, len - off, &next);
        if (!sh_jsonl_blank(body + off, n))
            count++;
        off += next;
    }
    return count;
}

/* ------------------------------------------------------------ pre-scan */

enum scan_result { SCAN_OK, SCAN_BLANK, SCAN_TOO_DEEP };

/* One linear pass: counts '[' / '{' depth outside strings (honouring
 * backslash escapes inside them) and notices lines made of JSON whitespace
 * only. It mirrors jansson's lexer closely enough that jansson can never
 * recurse deeper than the depth seen here before it stops: a '"' outside a
 * string always opens one for jansson too, and any divergence inside a
 * string is a lexical error at which jansson stops. Closing brackets never
 * take the depth below zero (jansson rejects an unbalanced one anyway). */
static enum scan_result prescan(const char *p, size_t n)
{
    size_t depth = 0;
    int blank = 1;
    int in_string = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped byte cannot close the string */
            else if (c == '"')
                in_string = 0;
            continue;
        }
        switch (c) {
        case ' ':
        case '\t':
        case '\r':
        case '\n':
            break;
        case '"':
            in_string = 1;
            blank = 0;
            break;
        case '[':
        case '{':
            if (++depth > SH_JSONL_MAX_DEPTH)
                return SCAN_TOO_DEEP;
            blank = 0;
            break;
        case ']':
        case '}':
            if (depth > 0)
                depth--;
            blank = 0;
            break;
        default:
            blank = 0;
            break;
        }
    }
    return blank ? SCAN_BLANK : SCAN_OK;
}

/* ------------------------------------------------------------ RFC 3339 */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's algorithm: days since 1970-01-01, proleptic
     * Gregorian calendar, no libc time functions. */
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int is_leap(unsigned y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
    static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads exactly `count` digits at s[*pos]; returns 0 or -1. */
static int read_digits(const char *s, size_t len, size_t *pos, size_t count, unsigned *out)
{
    if (len - *pos < count)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < count; i++) {
        char c = s[*pos + i];
        if (!is_digit(c))
            return -1;
        v = v * 10 + (unsigned)(c - '0');
    }
    *pos += count;
    *out = v;
    return 0;
}

/* Accepted: YYYY-MM-DD('T'|'t'|' ')HH:MM:SS[('.'|',')digits+]
 * ('Z'|'z'|('+'|'-')HH[[':']MM]). The offset is required: a local time
 * without one is ambiguous and is better left out than guessed. Seconds
 * may be 60 (a leap second, counted as the first second of the next
 * minute); fractions of any length are truncated to microseconds. */
int sh_parse_rfc3339(int64_t *out_us, const char *s, size_t len)
{
    unsigned year, month, day, hour, minute, second;
    size_t pos = 0;
    *out_us = 0;
    if (s == NULL)
        return -1;
    if (read_digits(s, len, &pos, 4, &year) != 0 || pos >= len || s[pos++] != '-' ||
        read_digits(s, len, &pos, 2, &month) != 0 || pos >= len || s[pos++] != '-' ||
        read_digits(s, len, &pos, 2, &day) != 0 || pos >= len ||
        (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' '))
        return -1;
    pos++;
    if (read_digits(s, len, &pos, 2, &hour) != 0 || pos >= len || s[pos++] != ':' ||
        read_digits(s, len, &pos, 2, &minute) != 0 || pos >= len || s[pos++] != ':' ||
        read_digits(s, len, &pos, 2, &second) != 0)
        return -1;

    int64_t frac_us = 0;
    if (pos < len && (s[pos] == '.' || s[pos] == ',')) {
        pos++;
        size_t start = pos;
        int64_t scale = 100000;
        while (pos < len && is_digit(s[pos])) {
            frac_us += (s[pos] - '0') * scale;
            scale /= 10; /* reaches 0 after six digits: the rest is truncated */
            pos++;
        }
        if (pos == start)
            return -1;
    }

    int64_t offset_s = 0;
    if (pos >= len)
        return -1;
    if (s[pos] == 'Z' || s[pos] == 'z') {
        pos++;
    } else if (s[pos] == '+' || s[pos] == '-') {
        int sign = s[pos] == '-' ? -1 : 1;
        unsigned oh, om = 0;
        pos++;
        if (read_digits(s, len, &pos, 2, &oh) != 0)
            return -1;
        if (pos < len) {
            if (s[pos] == ':')
                pos++;
            if (read_digits(s, len, &pos, 2, &om) != 0)
                return -1;
        }
        if (oh > 23 || om > 59)
            return -1;
        offset_s = sign * (int64_t)(oh * 3600 + om * 60);
    } else {
        return -1;
    }
    if (pos != len)
        return -1;

    if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23 ||
        minute > 59 || second > 60)
        return -1;

    int64_t secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 +
                   (int64_t)second - offset_s;
    *out_us = secs * 1000000 + frac_us;
    return 0;
}

/* ------------------------------------------------------------ timestamps */

/* Integer count of seconds, milliseconds, microseconds or nanoseconds,
 * told apart by magnitude. Negative values are refused. */
static int timestamp_from_integer(int64_t *out_us, long long v)
{
    int64_t us;
    if (v < 0)
        return -1;
    if (v > 100000000000000000LL) /* > 1e17: nanoseconds */
        us = v / 1000;
    else if (v > 100000000000000LL) /* > 1e14: microseconds */
        us = v;
    else if (v > 100000000000LL) /* > 1e11: milliseconds */
        us = v * 1000;
    else
        us = v * 1000000;
    if (us > SH_MAX_TIMESTAMP_US)
        return -1;
    *out_us = us;
    return 0;
}

static int timestamp_from_real(int64_t *out_us, double v)
{
    double us;
    if (!(v >= 0)) /* also refuses NaN */
        return -1;
    if (v > 1e17)
        us = v / 1e3;
    else if (v > 1e14)
        us = v;
    else if (v > 1e11)
        us = v * 1e3;
    else
        us = v * 1e6;
    if (!(us <= (double)SH_MAX_TIMESTAMP_US))
        return -1;
    /* round to the nearest microsecond: 1714564800.123456 is stored as
     * 1714564800.1234559... */
    int64_t r = (int64_t)(us + 0.5);
    if (r > SH_MAX_TIMESTAMP_US)
        return -1;
    *out_us = r;
    return 0;
}

/* A numeric string ("1714564800", "1714564800.5"): digits, optionally a
 * '.' and at least one more digit; the same magnitude rule as numbers,
 * computed exactly in integers (no strtod, no locale). */
static int timestamp_from_numeric_string(int64_t *out_us, const char *s, size_t len)
{
    size_t i = 0;
    uint64_t ip = 0;
    while (i < len && is_digit(s[i])) {
        if (i >= 19)
            return -1; /* > 9999999999999999999: out of any range */
        ip = ip * 10 + (uint64_t)(s[i] - '0');
        i++;
    }
    if (i == 0)
        return -1;
    const char *frac = NULL;
    size_t frac_len = 0;
    if (i < len) {
        if (s[i] != '.')
            return -1;
        frac = s + i + 1;
        frac_len = len - i - 1;
        if (frac_len == 0)
            return -1;
        for (size_t k = 0; k < frac_len; k++)
            if (!is_digit(frac[k]))
                return -1;
    }
    int frac_nonzero = 0;
    for (size_t k = 0; k < frac_len; k++)
        if (frac[k] != '0')
            frac_nonzero = 1;

            /* value > t  <=>  ip > t, or ip == t with a non-zero fraction */
#define SH_ABOVE(t) (ip > (t) || (ip == (t) && frac_nonzero))
    uint64_t us;
    size_t frac_digits; /* how many fraction digits still count */
    if (SH_ABOVE(UINT64_C(100000000000000000))) {
        us = ip / 1000;
        frac_digits = 0;
    } else if (SH_ABOVE(UINT64_C(100000000000000))) {
        us = ip;
        frac_digits = 0;
    } else if (SH_ABOVE(UINT64_C(100000000000))) {
        us = ip * 1000;
        frac_digits = 3;
    } else {
        us = ip * 1000000;
        frac_digits = 6;
    }
#undef SH_ABOVE
    uint64_t scale = 1;
    for (size_t k = 1; k < frac_digits; k++)
        scale *= 10;
    for (size_t k = 0; k < frac_digits && k < frac_len; k++) {
        us += (uint64_t)(frac[k] - '0') * scale;
        scale /= 10;
    }
    if (us > (uint64_t)SH_MAX_TIMESTAMP_US)
        return -1;
    *out_us = (int64_t)us;
    return 0;
}

static int timestamp_from_value(int64_t *out_us, const json_t *v)
{
    if (json_is_integer(v))
        return timestamp_from_integer(out_us, json_integer_value(v));
    if (json_is_real(v))
        return timestamp_from_real(out_us, json_real_value(v));
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (len > 0 && is_digit(s[0]) && timestamp_from_numeric_string(out_us, s, len) == 0)
            return 0;
        return sh_parse_rfc3339(out_us, s, len);
    }
    return -1;
}

/* ------------------------------------------------------------ lookup */

static int is_nonempty_string(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 0;
}

/* Looks `path` up in `obj` for a non-empty string: first as a literal key
 * (ECS "log.level"), then for each dot, left to right, as key "before"
 * naming an object in which the rest is looked up the same way
 * ("kubernetes.labels.app" matches {"kubernetes":{"labels":{"app":..}}},
 * {"kubernetes":{"labels.app":..}} and {"kubernetes.labels.app":..}). A
 * spelling whose value is not a non-empty string does not hide the next
 * one. Paths are the constant names below, so the recursion is bounded by
 * their number of dots. */
static json_t *lookup_string(const json_t *obj, const char *path, size_t len)
{
    json_t *v = json_object_getn(obj, path, len);
    if (is_nonempty_string(v))
        return v;
    for (size_t i = 0; i < len; i++) {
        if (path[i] != '.')
            continue;
        json_t *child = json_object_getn(obj, path, i);
        if (json_is_object(child)) {
            v = lookup_string(child, path + i + 1, len - i - 1);
            if (v != NULL)
                return v;
        }
    }
    return NULL;
}

/* The value of the first name present as a non-empty string, or NULL. */
static json_t *first_string(const json_t *root, const char *const *names)
{
    for (size_t i = 0; names[i] != NULL; i++) {
        json_t *v = lookup_string(root, names[i], strlen(names[i]));
        if (v != NULL)
            return v;
    }
    return NULL;
}

/* The lists of the header, in its order. Beyond the header: "err"
 * (pino, bunyan: {"err":{"type","message","stack"}}) comes last in each
 * list, so it only decides when none of the header's names is present. */

/* "error" / "exception" as a string, else their "message" member. */
static const char *const message_keys[] = {
    "log",     "message", "msg",         "error", "error.message", "exception", "exception.message",
    "MESSAGE", "err",     "err.message", NULL,
};
static const char *const type_keys[] = {
    "exception.type", "error.type", "error.kind", "exception_class", "type", "err.type", NULL,
};
/* The header's list, plus the other two spellings inside "exception" /
 * "error" objects (stacktrace, stack_trace, stack), each after its kin. */
static const char *const stacktrace_keys[] = {
    "stack",
    "stacktrace",
    "stack_trace",
    "exception.stacktrace",
    "exception.stack_trace",
    "exception.stack",
    "error.stack_trace",
    "error.stack",
    "error.stacktrace",
    "err.stack",
    NULL,
};
static const char *const service_keys[] = {
    "service",
    "service.name",
    "app",
    "application",
    "kubernetes.container_name",
    "kubernetes.labels.app",
    "container_name",
    "ecs_task_definition",
    "ecs_container_name",
    "systemd_unit",
    "_SYSTEMD_UNIT",
    "syslog_identifier",
    "ident",
    NULL,
};
static const char *const level_keys[] = {
    "level", "severity", "log.level", "lvl", "loglevel", "priority", NULL,
};
static const char *const timestamp_keys[] = {
    "date", "@timestamp", "timestamp", "time", "ts", NULL,
};

typedef struct consumed_set {
    const json_t *values[SH_CONSUMED_MAX];
    size_t n;
} consumed_set;

static int is_consumed(const consumed_set *c, const json_t *v)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->values[i] == v)
            return 1;
    return 0;
}

/* Fills *slice from the first matching string and marks it consumed.
 * Identity of the json_t is what marks it: parsed strings and numbers are
 * distinct allocations (only true/false/null are shared singletons, and
 * those are never consumed). */
static void take_string(sh_slice *slice, consumed_set *c, const json_t *root,
                        const char *const *names)
{
    json_t *v = first_string(root, names);
    if (v == NULL)
        return;
    slice->ptr = json_string_value(v);
    slice->len = json_string_length(v);
    c->values[c->n++] = v;
}

/* The first timestamp key whose value converts wins; a present value that
 * does not convert (garbage, out of range) is passed over and stays in the
 * metadata. */
static void take_timestamp(sh_jsonl_event *ev, consumed_set *c, const json_t *root)
{
    for (size_t i = 0; timestamp_keys[i] != NULL; i++) {
        json_t *v = json_object_get(root, timestamp_keys[i]);
        int64_t us;
        if (v != NULL && timestamp_from_value(&us, v) == 0) {
            ev->has_timestamp = 1;
            ev->timestamp_us = us;
            c->values[c->n++] = v;
            return;
        }
    }
}

/* ------------------------------------------------------------ metadata */

static void add_meta(sh_jsonl_event *ev, const char *outer, size_t outer_len, const char *key,
                     size_t key_len, const json_t *v)
{
    sh_jsonl_meta *m = &ev->meta[ev->nmeta];
    size_t total = outer != NULL ? outer_len + 1 + key_len : key_len;
    if (total > SH_JSONL_MAX_KEY)
        return; /* skipped, not cut: a cut key would mean something else */
    switch (json_typeof(v)) {
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        m->kind = SH_JSONL_STRING;
        m->string.ptr = s;
        m->string.len = sh_utf8_truncate(s, len, SH_JSONL_MAX_VALUE);
        break;
    }
    case JSON_INTEGER:
        m->kind = SH_JSONL_INTEGER;
        m->integer = json_integer_value(v);
        break;
    case JSON_REAL:
        m->kind = SH_JSONL_REAL;
        m->real = json_real_value(v);
        break;
    case JSON_TRUE:
        m->kind = SH_JSONL_TRUE;
        break;
    case JSON_FALSE:
        m->kind = SH_JSONL_FALSE;
        break;
    case JSON_NULL:
        m->kind = SH_JSONL_NULL;
        break;
    default:
        return; /* objects and arrays are not metadata */
    }
    size_t at = 0;
    if (outer != NULL) {
        memcpy(m->key, outer, outer_len);
        m->key[outer_len] = '.';
        at = outer_len + 1;
    }
    memcpy(m->key + at, key, key_len);
    m->key[total] = '\0';
    m->key_len = total;
    ev->nmeta++;
}

static int is_scalar(const json_t *v)
{
    return !json_is_object(v) && !json_is_array(v);
}

/* Top-level scalars, then (in place) the scalars of nested objects one
 * level deep as "outer.inner"; arrays and deeper objects are skipped.
 * Document order: jansson 2.14 iterates objects in insertion order (a
 * duplicate key keeps its first position and its last value). */
static void collect_metadata(sh_jsonl_event *ev, json_t *root, const consumed_set *c)
{
    for (void *it = json_object_iter(root); it != NULL && ev->nmeta < SH_JSONL_MAX_METADATA;
         it = json_object_iter_next(root, it)) {
        const char *key = json_object_iter_key(it);
        size_t key_len = json_object_iter_key_len(it);
        json_t *v = json_object_iter_value(it);
        if (is_consumed(c, v))
            continue;
        if (is_scalar(v)) {
            add_meta(ev, NULL, 0, key, key_len, v);
            continue;
        }
        if (!json_is_object(v))
            continue;
        for (void *in = json_object_iter(v); in != NULL && ev->nmeta < SH_JSONL_MAX_METADATA;
             in = json_object_iter_next(v, in)) {
            json_t *iv = json_object_iter_value(in);
            if (is_scalar(iv) && !is_consumed(c, iv))
                add_meta(ev, key, key_len, json_object_iter_key(in), json_object_iter_key_len(in),
                         iv);
        }
    }
}

/* ------------------------------------------------------------ decode */

/* Copies a jansson reason, which may quote the input, as printable ASCII. */
static void set_parse_err(char *err, size_t errlen, const json_error_t *je)
{
    char text[JSON_ERROR_TEXT_LENGTH];
    size_t i;
    for (i = 0; i + 1 < sizeof(text) && je->text[i] != '\0'; i++) {
        unsigned char c = (unsigned char)je->text[i];
        text[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    text[i] = '\0';
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "invalid JSON at column %d: %s", je->column, text);
}

static void event_init(sh_jsonl_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->message = SH_SLICE_EMPTY;
    ev->type = SH_SLICE_EMPTY;
    ev->stacktrace = SH_SLICE_EMPTY;
    ev->service = SH_SLICE_EMPTY;
    ev->level = SH_SLICE_EMPTY;
}

/* *out is overwritten: clear a previously decoded event first. On failure
 * *out is left empty (doc NULL), so clearing it is harmless. */
int sh_jsonl_decode_line(sh_jsonl_event *out, const char *line, size_t len, char *err,
                         size_t errlen)
{
    event_init(out);
    if (len > SH_JSONL_MAX_LINE) {
        set_err(err, errlen, "line too long");
        return -1;
    }
    if (line == NULL)
        len = 0;
    switch (prescan(line, len)) {
    case SCAN_BLANK:
        /* Not malformed: Fluent Bit bodies end with a newline and clients
         * send blank separators. The caller tells this reason apart and
         * counts empty lines separately from malformed ones. */
        set_err(err, errlen, "empty line");
        return -1;
    case SCAN_TOO_DEEP:
        set_err(err, errlen, "too deep");
        return -1;
    case SCAN_OK:
        break;
    }

    json_error_t je;
    /* JSON_DECODE_ANY so that a bare scalar is reported as "not an
     * object"; JSON_ALLOW_NUL so that "\u0000" in a value does not reject
     * the line (slices carry lengths). Duplicate keys are accepted: the
     * last value wins, as in most producers' consumers. */
    json_t *root = json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (root == NULL) {
        set_parse_err(err, errlen, &je);
        return -1;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        set_err(err, errlen, "not an object");
        return -1;
    }

    consumed_set consumed = {{NULL}, 0};
    take_string(&out->message, &consumed, root, message_keys);
    take_string(&out->type, &consumed, root, type_keys);
    take_string(&out->stacktrace, &consumed, root, stacktrace_keys);
    take_string(&out->service, &consumed, root, service_keys);
    take_string(&out->level, &consumed, root, level_keys);
    take_timestamp(out, &consumed, root);
    collect_metadata(out, root, &consumed);
    out->doc = root;
    return 0;
}

void sh_jsonl_event_clear(sh_jsonl_event *event)
{
    if (event == NULL)
        return;
    json_decref((json_t *)event->doc);
    event->doc = NULL;
    event->message = SH_SLICE_EMPTY;
    event->type = SH_SLICE_EMPTY;
    event->stacktrace = SH_SLICE_EMPTY;
    event->service = SH_SLICE_EMPTY;
    event->level = SH_SLICE_EMPTY;
    event->has_timestamp = 0;
    event->timestamp_us = 0;
    event->nmeta = 0;
}
