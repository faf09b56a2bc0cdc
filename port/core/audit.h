/*
 * The audit log: state_dir/audit.jsonl, one JSON object a line, append
 * only, and its anchor state_dir/audit.anchor (docs/state.md).
 *
 * Each record is {"seq": n, "at": "<RFC 3339 UTC>", "action": "...",
 * ...fields, "prev": "<hex SHA-256 of the previous line's bytes, or 64
 * zeros for the first>", "chain": "sha256" | "hmac-sha256"} and, keyed,
 * "key_id": "<16 hex>", "mac": "<hex HMAC-SHA-256 of the line without its
 * mac member>". Records written before anchors existed have no "chain"
 * and still verify. The anchor holds the last record (seq, head, the line
 * itself), is written before the record (fsync, rename) and is MAC'd too
 * when keyed.
 *
 * Opening verifies the whole chain against the anchor: a torn last line
 * (a crash) is repaired with its bytes kept in an "audit_repaired" record;
 * a record the anchor holds but the file lost is restored; anything else
 * (an edit, a removal, records added behind the port's back, a key the
 * port does not hold) moves the log and its anchor aside and starts a new
 * chain whose first record, "audit_chain_broken", says why and pins the
 * old file's SHA-256. Appends are serialised (mutex, fcntl lock, O_APPEND,
 * fsync).
 */
#ifndef SELF_HEAL_PORT_AUDIT_H
#define SELF_HEAL_PORT_AUDIT_H

#include <jansson.h>
#include <stddef.h>

#include "cmd.h"
#include "self_heal/common.h"

typedef struct audit_log audit_log;

/* The keys: `key` MACs new records (NULL: an unkeyed chain); `previous`
 * (may be NULL) only verifies the records of the key before, so that a
 * key change can be recorded. Each at least AUDIT_KEY_MIN bytes. */
#define AUDIT_KEY_MIN 16
#define AUDIT_FILE "audit.jsonl" /* the log's name in state_dir */
#define AUDIT_PATH_MAX 4096
typedef struct audit_keys {
    const char *key;
    size_t key_len;
    const char *previous;
    size_t previous_len;
} audit_keys;

/* The keys named by the configuration: "audit.key_env" and
 * "audit.previous_key_env" hold the NAMES of environment variables. A
 * named key that is unset, empty or shorter than AUDIT_KEY_MIN bytes is an
 * error; an unset previous key is ignored. out points into the
 * environment. Returns 0 or -1 with err filled. */
int audit_keys_from_config(json_t *config, audit_keys *out, char *err, size_t errlen);

/* Opens (creating) the log at path with keys (NULL: unkeyed), verifying
 * the whole chain and repairing or moving it aside as above; the result of
 * that is audit_status(). Fails (-1, err filled) when the file cannot be
 * used at all, a keyed log is opened without its key, or a bad key. */
int audit_open(audit_log **out, const char *path, const audit_keys *keys, char *err, size_t errlen);
/* audit_open with the keys of audit_keys_from_config(config). */
int audit_open_config(audit_log **out, const char *path, json_t *config, char *err, size_t errlen);
void audit_close(audit_log *log);

/* Appends {action, ...fields}; fields (may be NULL) is not stolen and must
 * not contain seq/at/action/prev/chain/key_id/mac; actions starting with
 * "audit_" are the log's own. Text fields are scrubbed by the caller.
 * Returns 0 or -1. */
int audit_append(audit_log *log, const char *action, json_t *fields);

/* What opening found, and the head now: {"ok": true, "records", "head",
 * "keyed", "key_id"?, "repaired"?} or, after a break, {"ok": false,
 * "error", "moved_to", ...}. A new reference. */
json_t *audit_status(audit_log *log);

/* "audit: seq <n> head <64 hex>" for the current head, to publish it
 * outside the file (notifications, ticket comments); "" and -1 when log is
 * NULL or empty. */
int audit_head_line(audit_log *log, char *buf, size_t len);
/* Appends before + that line + after to b; nothing when there is none. */
void audit_head_append(audit_log *log, sh_buf *b, const char *before, const char *after);

/* Checks the whole chain of the file at path against its anchor, with the
 * keys (may be NULL) and published heads (witnesses: NULL or an array of
 * {"seq", "head"} objects or "audit: seq N head H" strings, head at least
 * 16 hex digits). Returns a report object: {"ok": true, "records", "head",
 * ...} or {"ok": false, "records", "broken_at": <1-based line>, "reason",
 * ...}; NULL if unreadable or the witnesses are malformed (err filled). */
json_t *audit_verify(const char *path, const audit_keys *keys, json_t *witnesses, char *err,
                     size_t errlen);

/* For benchmarks only: appends without fsync and writes the anchor only
 * when bulk mode ends or the log is closed. */
void audit_set_bulk(audit_log *log, int on);

#endif
