/* Read-only reports for the dashboard and the metrics (dash.h). */
#include "dash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "ctx.h"
#include "self_heal/common.h"

/* ------------------------------------------------------------ stats */

/* {key-column value: n} of a two-column "key, n" query. */
static json_t *counts_by(state_db *db, const char *sql)
{
    json_t *rows = state_select(db, sql, NULL, 0);
    if (rows == NULL)
        return NULL;
    json_t *out = json_object();
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        json_t *key = json_object_get(row, "k");
        if (json_is_string(key))
            json_object_set(out, json_string_value(key), json_object_get(row, "n"));
    }
    json_decref(rows);
    return out;
}

/* Upper bounds (s) of the histograms' buckets: 1 min .. 3 days. */
static const int dash_buckets[DASH_BUCKETS] = {60,   300,   900,   1800,  3600,
                                               7200, 21600, 86400, 259200};

/* From a group's first occurrence (ms) to its ticket, over the latest
 * 10,000 tickets: the first occurrence is the earliest of the one the job
 * that created the ticket recorded (a "ticket" job's input.first_seen, the
 * first job whose result names the ticket) and those of the fixes of the
 * ticket. From a group's first occurrence (ms in the fix's input) to the
 * start of its fix's deploy and to that deploy's verification (s), over
 * the latest 10,000 fixes with a first occurrence. Bucketed in SQL:
 * {name: {"le": [...], "counts": [cumulative ...], "sum", "count"}}. The
 * deploys are grouped once (a subquery per fix read the whole ledger for
 * each: 1.1 s for 1,000 fixes), and only the buckets cross the pipe. */
static json_t *histograms(state_db *db)
{
    static const char *const names[] = {"time_to_ticket", "time_to_deploy", "time_to_verified"};
    static const char *const spans[] = {"ticketed", "deployed", "verified"};
    sh_buf sql;
    sh_buf_init(&sql);
    sh_buf_append_str(
        &sql, "WITH d AS (SELECT fix_id,"
              " MIN(CASE WHEN status = 'started' THEN at END) AS deployed,"
              " MIN(CASE WHEN status = 'succeeded' THEN at END) AS verified"
              " FROM deploys WHERE kind = 'deploy' AND fix_id IS NOT NULL"
              " GROUP BY fix_id),"
              " f AS (SELECT f.id, json_extract(f.input, '$.group.first_seen') / 1000.0"
              " AS first, d.deployed, d.verified"
              " FROM fixes f LEFT JOIN d ON d.fix_id = f.id WHERE json_valid(f.input)"
              " AND json_type(f.input, '$.group.first_seen') IN ('integer', 'real')"
              " ORDER BY f.id DESC LIMIT 10000),"
              " s AS (SELECT MAX(deployed - first, 0) AS deployed,"
              " MAX(verified - first, 0) AS verified FROM f),"
              " tj AS (SELECT json_extract(result, '$.ticket_id') AS tid, MIN(id) AS job"
              " FROM jobs WHERE kind = 'ticket' AND json_valid(result) GROUP BY tid),"
              " tf AS (SELECT ticket_id AS tid,"
              " MIN(json_extract(input, '$.group.first_seen')) AS first FROM fixes"
              " WHERE ticket_id IS NOT NULL AND json_valid(input)"
              " AND json_type(input, '$.group.first_seen') IN ('integer', 'real')"
              " GROUP BY ticket_id),"
              " t AS (SELECT t.created_at AS ticketed, CASE WHEN json_valid(j.input)"
              " AND json_type(j.input, '$.first_seen') IN ('integer', 'real')"
              " THEN json_extract(j.input, '$.first_seen') END AS a, tf.first AS b"
              " FROM tickets t LEFT JOIN tj ON tj.tid = t.id LEFT JOIN jobs j ON j.id = tj.job"
              " LEFT JOIN tf ON tf.tid = t.id ORDER BY t.id DESC LIMIT 10000),"
              " st AS (SELECT MAX(ticketed - MIN(COALESCE(a, b), COALESCE(b, a)) / 1000.0, 0)"
              " AS ticketed FROM t WHERE a IS NOT NULL OR b IS NOT NULL)"
              " SELECT * FROM (SELECT ");
    for (size_t h = 0; h < 3; h++) {
        for (size_t b = 0; b < DASH_BUCKETS; b++)
            sh_buf_appendf(&sql, "SUM(%s <= %d) AS b%zu_%zu, ", spans[h], dash_buckets[b], h, b);
        sh_buf_appendf(&sql, "TOTAL(%s) AS sum%zu, COUNT(%s) AS n%zu%s", spans[h], h, spans[h], h,
                       h == 0   ? " FROM st), (SELECT "
                       : h == 1 ? ", "
                                : " FROM s)");
    }
    sh_buf_append_byte(&sql, '\0');
    json_t *rows = sql.oom ? NULL : state_select(db, sql.data, NULL, 0);
    sh_buf_free(&sql);
    json_t *row = json_array_get(rows, 0);
    json_t *out = row != NULL ? json_object() : NULL;
    for (size_t h = 0; out != NULL && h < 3; h++) {
        json_t *le = json_array(), *counts = json_array();
        char key[32];
        for (size_t b = 0; b < DASH_BUCKETS; b++) {
            snprintf(key, sizeof(key), "b%zu_%zu", h, b);
            json_t *n = json_object_get(row, key);
            json_array_append_new(le, json_integer(dash_buckets[b]));
            json_array_append_new(counts,
                                  json_integer(json_is_integer(n) ? json_integer_value(n) : 0));
        }
        snprintf(key, sizeof(key), "sum%zu", h);
        json_t *sum = json_object_get(row, key);
        snprintf(key, sizeof(key), "n%zu", h);
        json_t *n = json_object_get(row, key);
        json_object_set_new(
            out, names[h],
            json_pack("{s:o, s:o, s:f, s:I}", "le", le, "counts", counts, "sum",
                      json_is_number(sum) ? json_number_value(sum) : 0.0, "count",
                      (json_int_t)(json_is_integer(n) ? json_integer_value(n) : 0)));
    }
    json_decref(rows);
    return out;
}

json_t *dash_stats(state_db *db, int with_histograms)
{
    json_t *fixes = counts_by(db, "SELECT status AS k, COUNT(*) AS n FROM fixes GROUP BY status");
    json_t *tickets =
        counts_by(db, "SELECT status AS k, COUNT(*) AS n FROM tickets GROUP BY status");
    json_t *deploys = state_select(db,
                                   "SELECT kind, status, auto, COUNT(*) AS n FROM deploys"
                                   " GROUP BY kind, status, auto ORDER BY kind, status, auto",
                                   NULL, 0);
    json_t *jobs = state_select(
        db, "SELECT kind, status, COUNT(*) AS n FROM jobs GROUP BY kind, status ORDER BY kind",
        NULL, 0);
    json_t *budget_rows = state_select(
        db, "SELECT name, SUM(amount) AS total, COUNT(*) AS n FROM budget GROUP BY name", NULL, 0);
    /* the groups of the escalations not analysed yet: jobs queued (a
     * resumed one too) or running */
    json_t *pending = state_select(db,
                                   "SELECT COALESCE(SUM(json_array_length(input, '$.groups')), 0)"
                                   " AS n FROM jobs WHERE kind = 'escalate'"
                                   " AND status IN ('queued', 'running') AND json_valid(input)",
                                   NULL, 0);
    json_t *hist = with_histograms ? histograms(db) : json_object();
    json_t *budget = json_object();
    json_t *out = NULL;
    if (fixes == NULL || tickets == NULL || deploys == NULL || jobs == NULL ||
        budget_rows == NULL || pending == NULL || hist == NULL || budget == NULL)
        goto done;
    size_t i;
    json_t *row;
    json_array_foreach(budget_rows, i, row)
    {
        json_t *name = json_object_get(row, "name");
        if (json_is_string(name))
            json_object_set_new(budget, json_string_value(name),
                                json_pack("{s:O, s:O}", "total", json_object_get(row, "total"), "n",
                                          json_object_get(row, "n")));
    }
    json_t *n = json_object_get(json_array_get(pending, 0), "n");
    out = json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:I}", "fixes", fixes, "tickets", tickets,
                    "deploys", deploys, "jobs", jobs, "budget", budget, "histograms", hist,
                    "escalations_pending",
                    (json_int_t)(json_is_integer(n) ? json_integer_value(n) : 0));
done:
    json_decref(pending);
    json_decref(fixes);
    json_decref(tickets);
    json_decref(deploys);
    json_decref(jobs);
    json_decref(budget_rows);
    json_decref(hist);
    json_decref(budget);
    return out;
}

/* ------------------------------------------------------------ files */

/* len bytes of fd from offset from (fewer at its end) in a new buffer with
 * room for one more byte; NULL when out of memory. */
static char *read_range(int fd, size_t from, size_t len, size_t *got)
{
    char *buf = malloc(len + 1);
    *got = 0;
    while (buf != NULL && *got < len) {
        ssize_t r = pread(fd, buf + *got, len - *got, (off_t)(from + *got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        *got += (size_t)r;
    }
    return buf;
}

/* ------------------------------------------------------------ audit */

static int record_matches(json_t *rec, int64_t fix_id)
{
    if (fix_id <= 0)
        return 1;
    json_t *id = json_object_get(rec, "fix_id");
    return json_is_integer(id) && json_integer_value(id) == fix_id;
}

json_t *dash_audit_tail(const char *path, int limit, int64_t fix_id, size_t window, cmd_error *err)
{
    if (limit <= 0 || limit > DASH_AUDIT_MAX)
        limit = DASH_AUDIT_MAX;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return json_pack("{s:[], s:i}", "records", "from_offset", 0);
        cmd_error_set(err, "io", "cannot open the audit log: %s", strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        cmd_error_set(err, "io", "the audit log is not a regular file");
        return NULL;
    }
    size_t size = (size_t)sb.st_size;
    size_t from = size > window ? size - window : 0;
    size_t len = size - from;
    size_t got = 0;
    char *buf = read_range(fd, from, len, &got);
    close(fd);
    if (buf == NULL) {
        cmd_error_set(err, "internal", "out of memory");
        return NULL;
    }
    /* a window that starts mid-file starts after its first newline */
    char *p = buf, *end = buf + got;
    if (from > 0) {
        char *nl = memchr(p, '\n', got);
        p = nl != NULL ? nl + 1 : end;
        from += (size_t)(p - buf);
    }
    json_t *ring = json_array();
    while (ring != NULL && p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        json_t *rec = n > 0 ? json_loadb(p, n, 0, NULL) : NULL;
        if (json_is_object(rec) && record_matches(rec, fix_id)) {
            if (json_array_size(ring) == (size_t)limit)
                json_array_remove(ring, 0);
            json_array_append(ring, rec);
        }
        json_decref(rec);
        p += n + (nl != NULL ? 1 : 0);
    }
    free(buf);
    if (ring == NULL) {
        cmd_error_set(err, "internal", "out of memory");
        return NULL;
    }
    return json_pack("{s:o, s:I}", "records", ring, "from_offset", (json_int_t)from);
}

/* ------------------------------------------------------------ patch */

json_t *dash_read_patch(const char *state_dir, const char *patch_path, size_t max, cmd_error *err)
{
    char dir[4096];
    int n = snprintf(dir, sizeof(dir), "%s/fixes/", state_dir != NULL ? state_dir : "");
    if (state_dir == NULL || state_dir[0] == '\0' || n < 0 || (size_t)n >= sizeof(dir) ||
        patch_path == NULL || strncmp(patch_path, dir, (size_t)n) != 0 ||
        strchr(patch_path + n, '/') != NULL || strstr(patch_path, "/..") != NULL) {
        cmd_error_set(err, "not_found", "this fix has no patch in the state directory");
        return NULL;
    }
    if (max == 0 || max > DASH_PATCH_MAX)
        max = DASH_PATCH_MAX;
    int fd = open(patch_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        cmd_error_set(err, "not_found", "the fix's patch cannot be read");
        return NULL;
    }
    size_t size = (size_t)sb.st_size;
    /* three bytes more, to see whether the cut falls inside a code point */
    size_t want = size < max + 3 ? size : max + 3;
    size_t got = 0;
    char *buf = read_range(fd, 0, want, &got);
    close(fd);
    if (buf == NULL) {
        cmd_error_set(err, "internal", "out of memory");
        return NULL;
    }
    int truncated = got < size || got > max;
    if (got > max)
        got = sh_utf8_truncate(buf, got, max);
    /* invalid UTF-8 (a binary file's bytes) as '?' */
    for (size_t i = 0; i < got;) {
        size_t k = sh_utf8_seq_len((const unsigned char *)buf + i, got - i);
        if (k == 0 || (k == 1 && buf[i] == '\0')) {
            buf[i++] = '?';
        } else {
            i += k;
        }
    }
    json_t *out = json_pack("{s:s%, s:I, s:b}", "patch", buf, got, "bytes", (json_int_t)size,
                            "truncated", truncated);
    free(buf);
    if (out == NULL)
        cmd_error_set(err, "internal", "out of memory");
    return out;
}

/* ------------------------------------------------------------ commands */

static state_db *need_state(port_ctx *ctx, cmd_error *err)
{
    return state_ctx_ensure(ctx, err) == 0 ? port_state(ctx) : NULL;
}

static json_t *cmd_stats(port_ctx *ctx, json_t *args, cmd_error *err)
{
    state_db *db = need_state(ctx, err);
    if (db == NULL)
        return NULL;
    json_t *out = dash_stats(db, !json_is_false(json_object_get(args, "histograms")));
    if (out == NULL)
        cmd_error_set(err, "state", "cannot read the state");
    return out;
}

static json_t *cmd_deploys(port_ctx *ctx, json_t *args, cmd_error *err)
{
    state_db *db = need_state(ctx, err);
    if (db == NULL)
        return NULL;
    json_t *limit = json_object_get(args, "limit");
    json_t *fix_id = json_object_get(args, "fix_id");
    json_t *rows =
        state_deploys_list(db, json_is_integer(fix_id) ? json_integer_value(fix_id) : 0,
                           json_is_integer(limit) ? (int)json_integer_value(limit) : 100);
    if (rows == NULL) {
        cmd_error_set(err, "state", "cannot read deploys");
        return NULL;
    }
    return json_pack("{s:o}", "deploys", rows);
}

static json_t *cmd_audit_tail(port_ctx *ctx, json_t *args, cmd_error *err)
{
    char state_dir[2048], path[2100];
    port_config_string(ctx, "state_dir", "", state_dir, sizeof(state_dir));
    if (state_dir[0] == '\0') {
        cmd_error_set(err, "no_state", "no state_dir is configured");
        return NULL;
    }
    snprintf(path, sizeof(path), "%s/audit.jsonl", state_dir);
    json_t *limit = json_object_get(args, "limit");
    json_t *fix_id = json_object_get(args, "fix_id");
    int64_t fid = json_is_integer(fix_id) ? json_integer_value(fix_id) : 0;
    /* one fix's records are looked for further back than the latest ones */
    json_t *out =
        dash_audit_tail(path, json_is_integer(limit) ? (int)json_integer_value(limit) : 100, fid,
                        fid > 0 ? 32u << 20 : 4u << 20, err);
    if (out != NULL) {
        json_t *status = audit_status(port_audit(ctx));
        json_object_set_new(out, "status", status != NULL ? status : json_null());
    }
    return out;
}

static json_t *cmd_fix_patch(port_ctx *ctx, json_t *args, cmd_error *err)
{
    state_db *db = need_state(ctx, err);
    if (db == NULL)
        return NULL;
    json_t *id = json_object_get(args, "id");
    json_t *max = json_object_get(args, "max_bytes");
    if (!json_is_integer(id) || json_integer_value(id) <= 0 ||
        (max != NULL && (!json_is_integer(max) || json_integer_value(max) <= 0))) {
        cmd_error_set(err, "bad_args", "fix_patch needs an id and an optional max_bytes > 0");
        return NULL;
    }
    json_t *fix = state_fix_get(db, json_integer_value(id));
    if (fix == NULL) {
        cmd_error_set(err, "not_found", "no fix %lld", (long long)json_integer_value(id));
        return NULL;
    }
    char state_dir[2048];
    port_config_string(ctx, "state_dir", "", state_dir, sizeof(state_dir));
    json_t *patch = json_object_get(json_object_get(fix, "delivery"), "patch");
    json_int_t want = max != NULL ? json_integer_value(max) : (json_int_t)DASH_PATCH_DEFAULT;
    json_t *out =
        dash_read_patch(state_dir, json_string_value(patch),
                        want > (json_int_t)DASH_PATCH_MAX ? DASH_PATCH_MAX : (size_t)want, err);
    json_decref(fix);
    return out;
}

const cmd_def *dash_commands(size_t *n)
{
    static const cmd_def cmds[] = {
        {"stats", cmd_stats, 0},
        {"deploys", cmd_deploys, 0},
        {"audit_tail", cmd_audit_tail, 0},
        {"fix_patch", cmd_fix_patch, 0},
    };
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
