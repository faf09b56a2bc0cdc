/*
 * Exactly-once effects of jobs (effect.h, docs/state.md): idempotency keys
 * in the effects table, their audit records carried in the step's
 * transaction and appended after it, and the start-up pass that appends
 * what a killed process left pending.
 */
#include "effect.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "state.h"

#define EFFECT_PENDING_MAX 1000
#define EFFECT_LINE_MAX (1024 * 1024 + 2)

int effect_key(char *out, size_t len, const char *job_key, const char *step)
{
    if (job_key == NULL || step == NULL)
        return -1;
    int n = snprintf(out, len, "%s/%s", job_key, step);
    return n > 0 && (size_t)n < len && (size_t)n <= EFFECT_KEY_MAX ? 0 : -1;
}

static const char *step_of(const char *key)
{
    const char *slash = strrchr(key, '/');
    return slash != NULL ? slash + 1 : key;
}

void effect_crash_point(const char *key, const char *where)
{
    const char *at = getenv("SELF_HEAL_TEST_CRASH_AT");
    if (at == NULL || at[0] == '\0' || key == NULL)
        return;
    const char *step = step_of(key);
    size_t n = strlen(step);
    if (strncmp(at, step, n) != 0 || at[n] != ':' || strcmp(at + n + 1, where) != 0)
        return;
    const char *once = getenv("SELF_HEAL_TEST_CRASH_ONCE");
    if (once != NULL && once[0] != '\0') {
        int fd = open(once, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            return; /* crashed here before */
        close(fd);
    }
    _exit(137);
}

int effect_begin(port_ctx *ctx, const char *key, int64_t job_id, json_t **result, int64_t *since)
{
    if (result != NULL)
        *result = NULL;
    state_db *db = port_state(ctx);
    if (db == NULL)
        return EFFECT_NEW;
    char status[16] = "";
    int rc = state_effect_intent(db, key, job_id, status, sizeof(status));
    if (rc < 0)
        return EFFECT_ERROR;
    if (rc == 0) {
        effect_crash_point(key, "intent");
        return EFFECT_NEW;
    }
    if (strcmp(status, "done") == 0) {
        if (result != NULL)
            *result = effect_result(ctx, key);
        return EFFECT_DONE;
    }
    if (since != NULL) {
        json_t *e = state_effect_get(db, key);
        *since = (int64_t)json_integer_value(json_object_get(e, "created_at"));
        json_decref(e);
    }
    return EFFECT_INTERRUPTED;
}

json_t *effect_result(port_ctx *ctx, const char *key)
{
    state_db *db = port_state(ctx);
    json_t *e = db != NULL ? state_effect_get(db, key) : NULL;
    json_t *status = json_object_get(e, "status");
    json_t *result = NULL;
    if (json_is_string(status) && strcmp(json_string_value(status), "done") == 0) {
        result = json_object_get(e, "result");
        result = result != NULL && !json_is_null(result) ? json_incref(result) : json_object();
    }
    json_decref(e);
    return result;
}

void effect_audit_add(json_t **audit, const char *action, json_t *fields)
{
    if (*audit == NULL)
        *audit = json_array();
    json_t *rec = json_pack("{s:s, s:o}", "action", action, "fields",
                            fields != NULL ? fields : json_object());
    if (*audit != NULL && rec != NULL)
        json_array_append_new(*audit, rec);
    else
        json_decref(rec);
}

int effect_done(port_ctx *ctx, const char *key, int64_t job_id, json_t *result, json_t *audit)
{
    state_db *db = port_state(ctx);
    effect_crash_point(key, "done");
    if (db == NULL) {
        /* nothing to remember it in: the records go straight to the log */
        audit_log *log = port_audit(ctx);
        size_t i;
        json_t *rec;
        json_array_foreach(audit, i, rec)
        {
            if (log != NULL)
                audit_append(log, json_string_value(json_object_get(rec, "action")),
                             json_object_get(rec, "fields"));
        }
        return 0;
    }
    int rc = state_effect_done(db, key, job_id, result, audit);
    if (rc == 0)
        effect_flush(ctx, key);
    return rc;
}

/* Appends records [from, n) of a step's audit array. */
static int append_records(audit_log *log, const char *key, json_t *audit, size_t from)
{
    for (size_t i = from; i < json_array_size(audit); i++) {
        json_t *rec = json_array_get(audit, i);
        const char *action = json_string_value(json_object_get(rec, "action"));
        json_t *fields = json_object_get(rec, "fields");
        json_t *f = json_is_object(fields) ? json_copy(fields) : json_object();
        json_object_set_new(f, "effect", json_string(key));
        int rc = action != NULL ? audit_append(log, action, f) : -1;
        json_decref(f);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int effect_flush(port_ctx *ctx, const char *key)
{
    effect_crash_point(key, "commit");
    state_db *db = port_state(ctx);
    audit_log *log = port_audit(ctx);
    json_t *e = db != NULL ? state_effect_get(db, key) : NULL;
    json_t *audit = json_object_get(e, "audit");
    int rc = 0;
    if (json_array_size(audit) > 0) {
        rc = log != NULL ? append_records(log, key, audit, 0) : -1;
        if (rc == 0) {
            effect_crash_point(key, "audit");
            rc = state_effect_audited(db, key);
        }
    }
    json_decref(e);
    return rc;
}

/* Counts, for each pending key, the records of the log that carry it:
 * one pass over the file. */
static int count_in_log(const char *path, json_t *counts)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT ? 0 : -1;
    char *line = malloc(EFFECT_LINE_MAX);
    if (line == NULL) {
        fclose(f);
        return -1;
    }
    static const char tag[] = "\"effect\":\"";
    while (fgets(line, EFFECT_LINE_MAX, f) != NULL) {
        const char *p = strstr(line, tag);
        if (p == NULL)
            continue;
        p += sizeof(tag) - 1;
        const char *end = strchr(p, '"');
        if (end == NULL || (size_t)(end - p) > EFFECT_KEY_MAX)
            continue;
        char key[EFFECT_KEY_MAX + 1];
        memcpy(key, p, (size_t)(end - p));
        key[end - p] = '\0';
        json_t *c = json_object_get(counts, key);
        if (c != NULL)
            json_integer_set(c, json_integer_value(c) + 1);
    }
    int rc = ferror(f) ? -1 : 0;
    free(line);
    fclose(f);
    return rc;
}

int effect_recover(port_ctx *ctx)
{
    state_db *db = port_state(ctx);
    audit_log *log = port_audit(ctx);
    char dir[4096], path[4200];
    if (db == NULL || log == NULL ||
        port_config_string(ctx, "state_dir", NULL, dir, sizeof(dir)) == NULL)
        return 0;
    snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
    json_t *pending = state_effects_unaudited(db, EFFECT_PENDING_MAX);
    if (pending == NULL)
        return -1;
    json_t *counts = json_object();
    size_t i;
    json_t *row;
    json_array_foreach(pending, i, row) json_object_set_new(
        counts, json_string_value(json_object_get(row, "key")), json_integer(0));
    int appended = 0, failed = 0;
    /* a log that cannot be read: nothing is appended blindly */
    if (json_array_size(pending) > 0 && count_in_log(path, counts) != 0)
        failed = json_array_clear(pending) == 0;
    json_array_foreach(pending, i, row)
    {
        const char *key = json_string_value(json_object_get(row, "key"));
        json_t *audit = json_object_get(row, "audit");
        size_t have = (size_t)json_integer_value(json_object_get(counts, key));
        if (have < json_array_size(audit)) {
            if (append_records(log, key, audit, have) != 0) {
                failed = 1; /* stays pending; the others go on */
                continue;
            }
            appended += (int)(json_array_size(audit) - have);
        }
        state_effect_audited(db, key);
    }
    json_decref(counts);
    json_decref(pending);
    return failed ? -1 : appended;
}
