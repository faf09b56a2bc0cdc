/*
 * The audit log: state_dir/audit.jsonl, one JSON object a line, append
 * only. Each record is {"seq": n, "at": "<RFC 3339 UTC>", "action": "...",
 * ...fields, "prev": "<hex SHA-256 of the previous line's bytes, or 64
 * zeros for the first>"}. Appends are serialised (mutex + O_APPEND +
 * fsync); on open the last line is read back to continue the chain.
 */
#ifndef SELF_HEAL_PORT_AUDIT_H
#define SELF_HEAL_PORT_AUDIT_H

#include <jansson.h>
#include <stddef.h>

typedef struct audit_log audit_log;

int audit_open(audit_log **out, const char *path, char *err, size_t errlen);
void audit_close(audit_log *log);

/* Appends {action, ...fields}; fields (may be NULL) is not stolen and must
 * not contain seq/at/action/prev. Text fields are scrubbed by the caller.
 * Returns 0 or -1. */
int audit_append(audit_log *log, const char *action, json_t *fields);

/* Checks the whole chain of the file at path. Returns a report object:
 * {"ok": true, "records": n} or {"ok": false, "records": n,
 * "broken_at": <1-based line>, "reason": "..."}; NULL if unreadable
 * (err filled). */
json_t *audit_verify(const char *path, char *err, size_t errlen);

#endif
