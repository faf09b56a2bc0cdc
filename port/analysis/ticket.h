/*
 * Tickets: the local store (state.h, default) or GitHub Issues over REST
 * ("tickets.backend": "local" | "github"). A ticket is labelled
 * self-heal:<fingerprint> for each fingerprint it covers; before creating
 * one, the open ticket of any of its fingerprints is looked up (locally,
 * then on GitHub by label) and commented on instead. A retried request
 * never opens a duplicate: each upsert runs as a job keyed by its
 * fingerprints, and GitHub is searched by label before a create. A job
 * resumed after a crash acts once: its step (create or comment) is an
 * effect (effect.h) committed with the ticket's row and count, and a
 * GitHub issue or comment it may have made is looked up by its marker
 * before it makes another.
 */
#ifndef SELF_HEAL_PORT_TICKET_H
#define SELF_HEAL_PORT_TICKET_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

/* issue: one element of analyze's "issues" plus "groups": the group objects
 * it covers (for counts, samples, paths). Returns {"ticket_id", "backend",
 * "url", "external_id", "created": bool, "commented": bool} or NULL + err.
 * All text sent out is scrubbed. */
json_t *ticket_upsert(port_ctx *ctx, json_t *issue, cmd_error *err);

/* A recurrence of fingerprint fp held by triage: the count of its open
 * ticket grows by delta (one transaction with the decision to comment),
 * and it gets a comment when the count at least doubled with this update.
 * Returns {"ticket_id": id | null, "commented": bool, "count"?} or NULL
 * with err. */
json_t *ticket_recurrence(port_ctx *ctx, const char *fp, long long delta, json_t *last_seen,
                          cmd_error *err);

/* Adds a note to ticket `ticket_id` (the local id): stored in the local
 * ticket_notes table and, for a GitHub ticket, posted as an issue comment;
 * status "open" / "closed" (NULL: unchanged) reopens or closes it (GitHub:
 * PATCH state). The text is scrubbed. 0, or -1 with err (the local note
 * and status are kept even when GitHub fails). */
int ticket_note(port_ctx *ctx, int64_t ticket_id, const char *status, const char *text,
                cmd_error *err);
/* ticket_note as the step `key` of a job (effect.h): once. The GitHub
 * comment carries the key's marker and is looked up before it is posted
 * again; the local note commits with the step's record. key NULL:
 * ticket_note. */
int ticket_note_once(port_ctx *ctx, const char *key, int64_t ticket_id, const char *status,
                     const char *text, cmd_error *err);

/* One GitHub REST call with the tickets.github configuration (api, repo,
 * token_env, retries): repo_path is relative to /repos/<owner>/<name>
 * ("/pulls"). 0 with the parsed reply in *out when the status is `expect`,
 * -1 with err otherwise. */
int ticket_github_call(port_ctx *ctx, const char *method, const char *repo_path, json_t *body,
                       long expect, json_t **out, cmd_error *err);

/* The repository "owner/name" of tickets.github.repo into buf; -1 when
 * unset or invalid. */
int ticket_github_repo(port_ctx *ctx, char *buf, size_t buflen);

#endif
