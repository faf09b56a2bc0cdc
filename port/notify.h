/*
 * Notifications to people: Slack incoming webhook (Block Kit), email over
 * SMTP (libcurl, STARTTLS when offered), Telegram Bot API (sendMessage
 * with inline buttons; getUpdates long polling turns a button press into
 * approve/skip). Approve/Skip links are signed with HMAC-SHA256 and
 * expire. Each channel has its own rate limit and retries; a failing
 * channel never blocks the others. All text is scrubbed first.
 */
#ifndef SELF_HEAL_PORT_NOTIFY_H
#define SELF_HEAL_PORT_NOTIFY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

/* message: {"kind": "ticket"|"fix"|..., "ticket_id", "fingerprint",
 * "severity", "service", "error", "path", "count", "url", "action_id"
 * (for approve/skip links, may be absent)}. Sends to every configured
 * channel; returns {"slack": {"ok": bool, "error"?}, "email": ..., ...}. */
json_t *notify_send(port_ctx *ctx, json_t *message);

/* A signed link token for action (approve|skip) on action_id, valid until
 * expires (unix s): "<action>.<id>.<expires>.<hex hmac>". */
int notify_sign(char *out, size_t outlen, const char *secret, const char *action,
                const char *action_id, int64_t expires);
/* 0 valid, 1 expired, -1 bad signature or format. */
int notify_verify(const char *token, const char *secret, int64_t now, char *action,
                  size_t action_len, char *action_id, size_t id_len);

#endif
