/*
 * Scrubbing secrets and personal data out of text before it leaves the
 * machine (prompts, tickets, chat, email, audit). Built-in rules: API keys
 * and tokens of known formats (AWS, GitHub, Slack, Stripe, OpenAI,
 * Anthropic, Google, ...), JWTs, Authorization / bearer values,
 * password= / secret= / token= / api_key= values (also JSON "password":
 * "..."), URL userinfo, e-mail addresses, card numbers (Luhn-checked),
 * PEM private keys; plus configurable POSIX extended regexes. Each match
 * becomes a typed marker such as [REDACTED:jwt]. Plain C11 + POSIX regex.
 */
#ifndef SELF_HEAL_SCRUB_H
#define SELF_HEAL_SCRUB_H

#include <stddef.h>

#include "self_heal/common.h"

typedef struct sh_scrubber sh_scrubber;

typedef struct sh_scrub_stats {
    size_t redactions; /* matches replaced */
} sh_scrub_stats;

/* Built-in rules plus `patterns` (n POSIX EREs, each at most 1 KiB; at most
 * 64). Returns 0, or -1 with a reason in err (the bad pattern's index and
 * regerror text). */
int sh_scrubber_new(sh_scrubber **out, const char *const *patterns, size_t n, char *err,
                    size_t errlen);
void sh_scrubber_free(sh_scrubber *s);

/* Appends the scrubbed text to out. s may be NULL (built-in rules only).
 * Input of any bytes (invalid UTF-8 passes through unchanged), linear in
 * the input for the built-in rules. stats may be NULL. */
void sh_scrub(const sh_scrubber *s, const char *text, size_t len, sh_buf *out,
              sh_scrub_stats *stats);

#endif
