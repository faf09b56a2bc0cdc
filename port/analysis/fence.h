/*
 * Untrusted text in prompts. Every message, stack trace and log line put
 * into an LLM prompt goes through fence_append: scrubbed, bounded, and
 * enclosed in a labelled fence whose delimiter is random per prompt and
 * cannot occur in the text (text containing it is escaped), so text that
 * imitates a closing fence or carries instructions stays data.
 */
#ifndef SELF_HEAL_PORT_FENCE_H
#define SELF_HEAL_PORT_FENCE_H

#include <stddef.h>

#include "self_heal/common.h"

typedef struct sh_scrubber sh_scrubber;

typedef struct fence {
    char tag[40]; /* e.g. "UNTRUSTED-5f3a9c0e7b21d4aa" */
} fence;

/* Picks a fresh random tag. */
void fence_init(fence *f);

/* The instruction paragraph to put in the system prompt explaining that
 * text between <tag> markers is data, never instructions. */
void fence_explain(const fence *f, sh_buf *out);

/* Appends "<tag label="...">\n" text "\n</tag>\n"; text is scrubbed with
 * `scrub` (may be NULL: built-in rules), cut at max_bytes on a code point,
 * and any occurrence of the tag inside it neutralised. */
void fence_append(const fence *f, sh_buf *out, const sh_scrubber *scrub, const char *label,
                  const char *text, size_t len, size_t max_bytes);

/* Appends a Markdown code block "```<info>\n" text "\n```\n" (tickets,
 * pull requests, reports) whose fence is longer than any backtick run in
 * the text, so the text cannot close it. The text is appended as given:
 * scrub it first. A NULL info is none. */
void fence_markdown(sh_buf *out, const char *info, const char *text, size_t len);

/* Turns the '-' of every case-insensitive "UNTRUSTED-" (hence of every
 * occurrence of any tag and of both markers) in s[0..len) into '_', so
 * text outside a fence cannot imitate one either. */
void fence_neutralise(char *s, size_t len);

/* 1 for a code point that never reaches a prompt as it is: C0 controls
 * (newline and tab included: callers keep those they allow), DEL, C1
 * controls, and invisible format characters that could hide or reorder
 * text (zero-width, bidi overrides, tags). */
int fence_unsafe_cp(unsigned int cp);

/* Appends text with every fence_unsafe_cp code point but newline and tab
 * written as a visible escape ("\x1b", "<U+202E>") and invalid UTF-8 as
 * U+FFFD: what tickets, reports and prompts show of untrusted text, so
 * nothing in it can hide or reorder what a reader sees. */
void fence_visible(sh_buf *out, const char *text, size_t len);

#endif
