/*
 * What a coding agent did, read back from its output: Claude Code's
 * `--output-format stream-json` (one JSON object a line: "system" init,
 * "assistant" messages with text and tool calls, "user" messages with tool
 * results, a final "result" with turns, usage, cost and whether it
 * failed), or, for any other agent, the tail of what it printed.
 *
 * The output is untrusted (the agent, its model and the tools it ran wrote
 * it): every line is bounded, every text scrubbed and cut, the number of
 * entries capped, and nothing in it is ever executed or followed.
 */
#ifndef SELF_HEAL_PORT_TRANSCRIPT_H
#define SELF_HEAL_PORT_TRANSCRIPT_H

#include <jansson.h>
#include <stddef.h>

typedef struct sh_scrubber sh_scrubber;

#define TRANSCRIPT_MAX_ENTRIES 200     /* entries kept (the last ones when there are more) */
#define TRANSCRIPT_TEXT_MAX 600        /* bytes of one text, tool input or result kept */
#define TRANSCRIPT_READ_MAX (8u << 20) /* bytes of output read (its end) */

typedef struct transcript {
    json_t *entries; /* [{"kind": "text" | "tool" | "result" | "output", ...}] */
    int structured;  /* 1 when the output was stream-json */
    long turns;      /* the agent's own count, -1 when unknown */
    long input_tokens, output_tokens;
    double cost_usd;                     /* as the agent reports it, 0 when unknown */
    int is_error;                        /* the agent said its session failed */
    char final[TRANSCRIPT_TEXT_MAX + 1]; /* its last text (the result), scrubbed */
} transcript;

/* Reads the output file at path. scrub may be NULL (the built-in rules
 * only). Returns 0 (an empty or missing file gives no
 * entries), -1 when out of memory. Free with transcript_free. */
int transcript_read(transcript *out, const char *path, const sh_scrubber *scrub);
void transcript_free(transcript *t);

/* {"entries", "structured", "turns", "usage": {"input_tokens",
 * "output_tokens", "cost_usd"}, "is_error", "final"} (new reference). */
json_t *transcript_json(const transcript *t);

#endif
