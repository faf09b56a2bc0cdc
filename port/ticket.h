/*
 * Tickets: the local store (state.h, default) or GitHub Issues over REST
 * ("tickets.backend": "local" | "github"). A ticket is labelled
 * self-heal:<fingerprint> for each fingerprint it covers; before creating
 * one, the open ticket of any of its fingerprints is looked up (locally,
 * then on GitHub by label) and commented on instead. A retried request
 * never opens a duplicate: each upsert runs as a job keyed by its
 * fingerprints, and GitHub is searched by label before a create.
 */
#ifndef SELF_HEAL_PORT_TICKET_H
#define SELF_HEAL_PORT_TICKET_H

#include <jansson.h>

#include "cmd.h"

/* issue: one element of analyze's "issues" plus "groups": the group objects
 * it covers (for counts, samples, paths). Returns {"ticket_id", "backend",
 * "url", "external_id", "created": bool, "commented": bool} or NULL + err.
 * All text sent out is scrubbed. */
json_t *ticket_upsert(port_ctx *ctx, json_t *issue, cmd_error *err);

#endif
