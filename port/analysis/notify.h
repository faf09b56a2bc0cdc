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
#include "self_heal/common.h"

/* message: {"kind": "ticket"|"fix"|..., "ticket_id", "fingerprint",
 * "severity", "service", "error", "path", "count", "url", "action_id"
 * (for approve/skip links, may be absent), "diff" (a change, cut to
 * NOTIFY_DIFF_MAX bytes), "diff_truncated" (bool: the diff given is
 * already a part), "patch_url" (where the whole patch is)}. Sends to every configured
 * channel; returns {"slack": {"ok": bool, "error"?}, "email": ..., ...}. */
json_t *notify_send(port_ctx *ctx, json_t *message);

/* The bytes of a diff a message shows (after scrubbing). */
#define NOTIFY_DIFF_MAX 1500

/* Adds a fix's change to message: "diff" (the start of the scrubbed patch
 * at patch_path, a file under state_dir/fixes/), "diff_truncated", and
 * "patch_url": the pull request's files when pr_url is set, else the
 * dashboard's page of the patch under notify.links.base_url. Nothing is
 * added when the patch cannot be read. */
void notify_add_patch(port_ctx *ctx, json_t *message, const char *patch_path, const char *pr_url,
                      int64_t fix_id);

/* notify_send as the step `key` of job job_id (effect.h): sent at most
 * once. The intent is recorded before the channels are called and the
 * result with the audit records after; a repeat returns the stored
 * result, and a step found interrupted (the process died while sending)
 * is not sent again: its result is {"status": "unknown"} with a
 * "notification_unknown" record. Without a state database it is
 * notify_send. NULL on a bad message or when the intent cannot be
 * recorded (then nothing is sent). */
json_t *notify_send_once(port_ctx *ctx, json_t *message, const char *key, int64_t job_id);

/* A signed link token for action (approve|skip) on action_id, valid until
 * expires (unix s): "<action>.<id>.<expires>.<hex hmac>". */
int notify_sign(char *out, size_t outlen, const char *secret, const char *action,
                const char *action_id, int64_t expires);
/* 0 valid, 1 expired, -1 bad signature or format. */
int notify_verify(const char *token, const char *secret, int64_t now, char *action,
                  size_t action_len, char *action_id, size_t id_len);
/* The link secret (the variable named by notify.links.secret_env, default
 * SELF_HEAL_LINK_SECRET), or NULL with err "unavailable" when unset. */
const char *notify_link_secret(port_ctx *ctx, cmd_error *err);

/* ---- building blocks, exposed for test/c/test_notify.c ---------------- */

/* A message ready to send: every text field scrubbed, cut to its bound,
 * valid UTF-8 without control characters (only `error` keeps newlines and
 * tabs). NULL fields were absent or empty. */
#define NOTIFY_OWNERS_MAX 16
typedef struct notify_msg {
    char *kind, *ticket_id, *fingerprint, *severity, *service, *error, *path;
    char *url;          /* the ticket's http(s) URL, NULL when unsafe */
    char *diff;         /* a change (multi-line), or NULL */
    int diff_cut;       /* the diff is a part of the change */
    char *patch_url;    /* the whole change's http(s) URL, NULL when unsafe */
    char action_id[65]; /* "" when absent */
    long long count;    /* -1 when absent */
    char *approve_url;  /* signed links (notify_msg_set_links), or NULL */
    char *skip_url;
    int64_t links_expire;
    char audit[128]; /* "audit: seq N head H", the audit log's head when sent, or "" */
    char *owners[NOTIFY_OWNERS_MAX]; /* the service's owners, scrubbed (notify_msg_set_owners) */
    size_t n_owners;
} notify_msg;

/* Fills *out from a message object (its "owners", an array of strings,
 * through notify_msg_set_owners); -1 with err filled on a bad field. */
int notify_msg_init(notify_msg *out, json_t *message, const sh_scrubber *scrub, char *err,
                    size_t errlen);
/* Adds Approve/Skip links (base_url + "/approve?t=" + token) valid until
 * now + ttl_s. No-op (0) without an action_id, base_url or secret; -1 when
 * base_url is not a safe http(s) URL. */
int notify_msg_set_links(notify_msg *m, const char *base_url, const char *secret, int64_t now,
                         int64_t ttl_s);
void notify_msg_free(notify_msg *m);
/* Sets m's owners from an array of strings (the service's `owners`): each
 * scrubbed and cut like a field, at most NOTIFY_OWNERS_MAX; strings that
 * are empty after scrubbing are left out. Replaces the ones m had when
 * owners holds at least one; -1 when out of memory. */
int notify_msg_set_owners(notify_msg *m, json_t *owners, const sh_scrubber *scrub);

/* Slack incoming-webhook payload: {"text", "blocks"}. */
json_t *notify_slack_body(const notify_msg *m);
/* Telegram sendMessage payload (plain text, at most 4096 bytes). */
json_t *notify_telegram_body(const notify_msg *m, const char *chat_id);
/* The RFC 5322 message (CRLF line ends) sent over SMTP. */
int notify_email_build(sh_buf *out, const notify_msg *m, const char *from, const char *const *to,
                       size_t nto, int64_t now, const char *message_id);

/* Token bucket: capacity max(1, rate_per_min), refilled at rate_per_min
 * per 60 s. Returns 1 when a token was taken, 0 when over the limit;
 * rate_per_min <= 0 means no limit. */
typedef struct notify_bucket {
    double tokens;
    double last_s;
    int primed;
} notify_bucket;
int notify_rate_take(notify_bucket *b, double rate_per_min, double now_s);
/* A token of both buckets or of neither (own may be NULL: the global one
 * alone): the global limit over every service's messages and a service's
 * own over its messages. 1 when taken, 0 when either is empty. */
int notify_rate_take_both(notify_bucket *global, double global_rate, notify_bucket *own,
                          double own_rate, double now_s);

/* Reads a getUpdates reply: *out = array of {"callback_query_id",
 * "accepted": bool, "action"?, "action_id"?, "from"} for the first 100
 * updates' button presses (accepted only for valid data from chat_id when
 * chat_id is non-NULL), *next_offset = max(offset, last update_id + 1).
 * Returns 0, or -1 when the reply is not {"ok": true, "result": [...]}. */
int notify_telegram_updates(json_t **out, int64_t *next_offset, json_t *reply, int64_t offset,
                            const char *chat_id);

#endif
