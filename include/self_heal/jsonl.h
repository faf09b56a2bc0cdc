/*
 * Decoding of Fluent Bit `json_lines` bodies (one JSON object a line) and
 * plain JSON events into neutral event records, with jansson.
 *
 * Field lookup (first present, non-empty string wins):
 *   message    log, message, msg, error, exception (a string, or an object
 *              with a "message" string), MESSAGE, err / err.message (pino)
 *   type       exception.type, error.type, error.kind, exception_class, type,
 *              err.type
 *   stacktrace stack, stacktrace, stack_trace, exception.stacktrace (also
 *              .stack_trace, .stack), error.stack_trace (also .stacktrace,
 *              .stack), err.stack
 *   service    service, service.name, app, application,
 *              kubernetes.container_name, kubernetes.labels.app,
 *              container_name, ecs_task_definition, ecs_container_name,
 *              systemd_unit, _SYSTEMD_UNIT, syslog_identifier, ident
 *   level      level, severity, log.level, lvl, loglevel, priority
 *   timestamp  date, @timestamp, timestamp, time, ts: a number (seconds,
 *              or milliseconds/microseconds/nanoseconds when large), a
 *              numeric string, or an RFC 3339 string with an offset;
 *              converted to microseconds since the Unix epoch. The first
 *              key whose value converts wins; one that does not stays in
 *              metadata.
 * A numeric level (pino's 50) is not a string: it stays in metadata.
 * Every other top-level scalar, and the scalars of nested objects one
 * level deep as "outer.inner", become metadata (at most
 * SH_JSONL_MAX_METADATA entries, strings cut at SH_JSONL_MAX_VALUE bytes).
 */
#ifndef SELF_HEAL_JSONL_H
#define SELF_HEAL_JSONL_H

#include "self_heal/common.h"

#define SH_JSONL_MAX_LINE (1024 * 1024)
#define SH_JSONL_MAX_METADATA 32
#define SH_JSONL_MAX_KEY 128
#define SH_JSONL_MAX_VALUE 1024
#define SH_JSONL_MAX_DEPTH 64

typedef enum sh_jsonl_value_kind {
    SH_JSONL_STRING,
    SH_JSONL_INTEGER,
    SH_JSONL_REAL,
    SH_JSONL_TRUE,
    SH_JSONL_FALSE,
    SH_JSONL_NULL,
} sh_jsonl_value_kind;

typedef struct sh_jsonl_meta {
    char key[SH_JSONL_MAX_KEY + 1]; /* NUL-terminated; dotted for nested */
    size_t key_len;
    sh_jsonl_value_kind kind;
    sh_slice string; /* SH_JSONL_STRING: points into the decoded document */
    long long integer;
    double real;
} sh_jsonl_meta;

typedef struct sh_jsonl_event {
    sh_slice message; /* empty when none of the keys is present */
    sh_slice type;
    sh_slice stacktrace;
    sh_slice service;
    sh_slice level;
    int has_timestamp;
    int64_t timestamp_us;
    size_t nmeta;
    sh_jsonl_meta meta[SH_JSONL_MAX_METADATA];
    void *doc; /* the decoded document owning the slices (json_t *) */
} sh_jsonl_event;

/* Decodes one line (a JSON object). Returns 0 and fills *out, or -1 and
 * writes a short reason ("invalid JSON at column 12: ...", "not an
 * object", "line too long", "too deep") to err. Lines longer than
 * SH_JSONL_MAX_LINE or nested deeper than SH_JSONL_MAX_DEPTH are refused
 * without being parsed in full. */
int sh_jsonl_decode_line(sh_jsonl_event *out, const char *line, size_t len, char *err,
                         size_t errlen);

/* Releases the document of a decoded event; safe on a zeroed event and
 * when called twice. */
void sh_jsonl_event_clear(sh_jsonl_event *event);

/* Splits a body into lines: returns the length of the line starting at
 * body[0] (without its '\n' or "\r\n") and sets *next to the offset of the
 * following line. */
size_t sh_jsonl_next_line(const char *body, size_t len, size_t *next);

/* 1 when a line (without its '\n') holds only ' ', '\t' and '\r': a blank
 * line, not a record. */
int sh_jsonl_blank(const char *line, size_t len);

/* The number of records (lines that are not blank) of a body, counted
 * without parsing them: one pass that stops as soon as the count passes
 * `limit`, so it returns at most limit + 1. This is what lets a caller
 * refuse a body of too many records before decoding any of it. */
size_t sh_jsonl_count(const char *body, size_t len, size_t limit);

/* Parses an RFC 3339 / ISO-8601 timestamp ("2024-05-01T12:00:00.123Z",
 * "+02:00" offsets, space instead of T) into microseconds since the epoch.
 * Returns 0 or -1. */
int sh_parse_rfc3339(int64_t *out_us, const char *s, size_t len);

#endif
