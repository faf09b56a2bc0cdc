/*
 * Root-cause analysis: settled groups in, issues out.
 *
 * Input (array of groups): {"id": "<fingerprint>", "type", "message",
 * "normalized", "stacktrace" (text), "samples": [..], "count", "first_seen",
 * "last_seen" (unix ms), "service", "severity", "commit", "frames":
 * [{"file","line","function","module"}], "path"} plus the service descriptor
 * from config ("service.descriptor").
 *
 * Output: {"issues": [{"root_cause", "severity" (critical|high|medium|low),
 * "group_ids": [...], "suggested_fix", "files_likely_involved": [...],
 * "confidence": 0..1}], "analyzer": "offline"|"anthropic"|"openai"|"ollama",
 * "fallback": null | "<why the offline analyzer answered>", "unlinked": n
 * (groups a model put in an issue without evidence, moved out), "usage":
 * {"input_tokens", "output_tokens", "cost_usd", "calls"}}. Every group id
 * is covered by exactly one issue.
 */
#ifndef SELF_HEAL_PORT_ANALYZE_H
#define SELF_HEAL_PORT_ANALYZE_H

#include <jansson.h>

#include "cmd.h"

/* Runs the configured analyzer ("llm.provider": offline (default),
 * anthropic, openai, ollama) with validation, one repair request, budget
 * checks and the offline fallback. Returns the output object (new ref) or
 * NULL with err set only for bad input. Its "analysis" audit record is
 * appended, or, when record is not NULL, given to the caller in *record
 * (the fields; NULL when out of memory) to append with its own step. */
json_t *analyze_groups(port_ctx *ctx, json_t *groups, json_t **record, cmd_error *err);

/* The deterministic offline analyzer alone (no network). */
json_t *analyze_offline(json_t *groups, long long window_ms);

/* Validates a model's reply against the groups; returns the normalised
 * issues array (new ref) or NULL with a reason in why. */
json_t *analyze_validate(json_t *reply, json_t *groups, char *why, size_t whylen);

/* Keeps in each issue of a model's answer only the groups that evidence
 * ties to its first group (shared resource tokens, a request or trace id,
 * a call between them, one naming the other's service: the offline
 * analyzer's rule, each link within window_ms); the groups cut off are analysed offline (window_ms)
 * into new issues appended to the array. *split (when not NULL) gets how many were cut off. Returns
 * issues, or NULL when out of memory. */
json_t *analyze_require_evidence(json_t *issues, json_t *groups, long long window_ms,
                                 size_t *split);

#endif
