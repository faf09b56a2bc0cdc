/*
 * The hash-chained audit log (audit.h, docs/state.md). Each line is one
 * compact JSON object {"seq", "at", "action", ...fields, "prev"} where prev
 * is the hex SHA-256 of the previous line's bytes (without its newline), 64
 * zeros for the first. A record is written with one write() on an O_APPEND
 * descriptor and fsync()ed, under a mutex (threads) and a POSIX record
 * lock (other processes on the same file). Before each append the tail is
 * re-read when the file changed under us, so two processes keep one chain.
 *
 * A torn last line (no newline: a crash in the middle of a write) is cut
 * away when the log is opened and an "audit_repaired" record says how many
 * bytes were dropped; audit_verify reports such a line as broken.
 */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "self_heal/common.h"
#include "state.h"

#define AUDIT_LINE_MAX (1024 * 1024)
#define AUDIT_HEX_LEN 64
#define AUDIT_SCAN_BLOCK 4096
#define AUDIT_ACTION_MAX 64

static const char zero_hash[AUDIT_HEX_LEN + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

struct audit_log {
    pthread_mutex_t lock;
    int fd;
    long long seq;                /* seq of the last record in the file */
    char prev[AUDIT_HEX_LEN + 1]; /* hash of the last line */
    off_t end;                    /* file size after our last look */
    long long dropped;            /* torn bytes cut away, to be recorded */
};

/* ------------------------------------------------------------ helpers */

static void set_err(char *err, size_t errlen, const char *what, const char *why)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "audit log %s: %s", what, why);
}

static int read_exact(int fd, void *buf, size_t len, off_t at)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
        at += n;
    }
    return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Offset of the last '\n' before `before` (exclusive), -1 when there is
 * none, -2 on a read error or when more than `limit` bytes were scanned. */
static off_t prev_newline(int fd, off_t before, off_t limit)
{
    char block[AUDIT_SCAN_BLOCK];
    off_t scanned = 0;
    while (before > 0) {
        size_t n = before < (off_t)sizeof(block) ? (size_t)before : sizeof(block);
        off_t at = before - (off_t)n;
        if (read_exact(fd, block, n, at) != 0)
            return -2;
        for (size_t i = n; i > 0; i--)
            if (block[i - 1] == '\n')
                return at + (off_t)i - 1;
        before = at;
        scanned += (off_t)n;
        if (scanned > limit)
            return -2;
    }
    return -1;
}

/* Re-reads the end of the file: cuts a torn tail (adds to log->dropped)
 * and takes seq and prev from the last complete line. */
static int sync_tail(audit_log *log, char *err, size_t errlen)
{
    struct stat sb;
    if (fstat(log->fd, &sb) != 0) {
        set_err(err, errlen, "stat", strerror(errno));
        return -1;
    }
    off_t size = sb.st_size;
    char last = '\n';
    if (size > 0 && read_exact(log->fd, &last, 1, size - 1) != 0) {
        set_err(err, errlen, "read", strerror(errno));
        return -1;
    }
    if (last != '\n') {
        off_t nl = prev_newline(log->fd, size - 1, AUDIT_LINE_MAX);
        if (nl == -2) {
            set_err(err, errlen, "read", "cannot find the end of the last record");
            return -1;
        }
        if (ftruncate(log->fd, nl + 1) != 0 || fsync(log->fd) != 0) {
            set_err(err, errlen, "truncate", strerror(errno));
            return -1;
        }
        log->dropped += (long long)(size - (nl + 1));
        size = nl + 1;
    }
    log->end = size;
    if (size == 0) {
        log->seq = 0;
        memcpy(log->prev, zero_hash, sizeof(log->prev));
        return 0;
    }
    off_t start = prev_newline(log->fd, size - 1, AUDIT_LINE_MAX) + 1;
    if (start < 0) {
        set_err(err, errlen, "read", "last record too long or unreadable");
        return -1;
    }
    size_t len = (size_t)(size - 1 - start);
    char *line = malloc(len + 1);
    if (line == NULL || read_exact(log->fd, line, len, start) != 0) {
        free(line);
        set_err(err, errlen, "read", "cannot read the last record");
        return -1;
    }
    json_t *rec = json_loadb(line, len, 0, NULL);
    json_t *seq = json_object_get(rec, "seq");
    int rc = -1;
    if (json_is_integer(seq) && json_integer_value(seq) >= 1 &&
        sh_sha256_hex(log->prev, line, len) == 0) {
        log->seq = (long long)json_integer_value(seq);
        rc = 0;
    } else {
        set_err(err, errlen, "last record",
                "not a valid record; refusing to extend the chain (run verify-audit)");
    }
    json_decref(rec);
    free(line);
    return rc;
}

static int lock_file(int fd, short type)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    for (;;) {
        if (fcntl(fd, F_SETLKW, &fl) == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static void format_time(char *buf, size_t len)
{
    time_t now = (time_t)state_now();
    struct tm tm;
    if (gmtime_r(&now, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "1970-01-01T00:00:00Z");
}

static int reserved_key(const char *key)
{
    return strcmp(key, "seq") == 0 || strcmp(key, "at") == 0 || strcmp(key, "action") == 0 ||
           strcmp(key, "prev") == 0;
}

/* The line for the next record (without newline), malloc'd. */
static char *build_line(audit_log *log, const char *action, json_t *fields)
{
    char at[32];
    format_time(at, sizeof(at));
    json_t *rec =
        json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)(log->seq + 1), "at", at, "action", action);
    if (rec == NULL)
        return NULL;
    const char *key;
    json_t *value;
    json_object_foreach(fields, key, value) json_object_set(rec, key, value);
    json_object_set_new(rec, "prev", json_string(log->prev));
    char *line = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    if (line != NULL && strlen(line) > AUDIT_LINE_MAX) {
        free(line);
        return NULL;
    }
    return line;
}

/* Writes one record; the caller holds both locks and has synced the tail. */
static int append_locked(audit_log *log, const char *action, json_t *fields)
{
    char *line = build_line(log, action, fields);
    if (line == NULL)
        return -1;
    size_t len = strlen(line);
    line[len] = '\n'; /* the NUL becomes the newline: one write of len+1 */
    int rc = write_all(log->fd, line, len + 1);
    if (rc == 0)
        rc = fsync(log->fd);
    if (rc == 0 && sh_sha256_hex(log->prev, line, len) == 0) {
        log->seq++;
        log->end += (off_t)(len + 1);
    } else {
        rc = -1;
        log->end = -1; /* force a re-read (and repair) before the next append */
    }
    free(line);
    return rc;
}

/* Syncs with the file when it changed and records a repair if one was made. */
static int prepare_locked(audit_log *log, char *err, size_t errlen)
{
    struct stat sb;
    if (fstat(log->fd, &sb) != 0 || sb.st_size != log->end)
        if (sync_tail(log, err, errlen) != 0)
            return -1;
    if (log->dropped > 0) {
        json_t *f = json_pack("{s:I, s:s}", "dropped_bytes", (json_int_t)log->dropped, "reason",
                              "torn last line (no newline) removed");
        int rc = f != NULL ? append_locked(log, "audit_repaired", f) : -1;
        json_decref(f);
        if (rc != 0) {
            set_err(err, errlen, "write", "cannot record the repair");
            return -1;
        }
        log->dropped = 0;
    }
    return 0;
}

/* ------------------------------------------------------------ API */

int audit_open(audit_log **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    audit_log *log = calloc(1, sizeof(*log));
    if (log == NULL) {
        set_err(err, errlen, "open", "out of memory");
        return -1;
    }
    pthread_mutex_init(&log->lock, NULL);
    log->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log->fd < 0) {
        set_err(err, errlen, path, strerror(errno));
        goto fail;
    }
    log->end = -1;
    if (lock_file(log->fd, F_WRLCK) != 0) {
        set_err(err, errlen, "lock", strerror(errno));
        goto fail;
    }
    int rc = prepare_locked(log, err, errlen);
    lock_file(log->fd, F_UNLCK);
    if (rc != 0)
        goto fail;
    *out = log;
    return 0;
fail:
    audit_close(log);
    return -1;
}

void audit_close(audit_log *log)
{
    if (log == NULL)
        return;
    if (log->fd >= 0)
        close(log->fd);
    pthread_mutex_destroy(&log->lock);
    free(log);
}

int audit_append(audit_log *log, const char *action, json_t *fields)
{
    if (log == NULL || action == NULL || action[0] == '\0' || strlen(action) > AUDIT_ACTION_MAX ||
        (fields != NULL && !json_is_object(fields)))
        return -1;
    const char *key;
    json_t *value;
    json_object_foreach(fields, key, value)
    {
        if (reserved_key(key))
            return -1;
    }
    pthread_mutex_lock(&log->lock);
    int rc = -1;
    if (lock_file(log->fd, F_WRLCK) == 0) {
        if (prepare_locked(log, NULL, 0) == 0)
            rc = append_locked(log, action, fields);
        lock_file(log->fd, F_UNLCK);
    }
    pthread_mutex_unlock(&log->lock);
    return rc;
}

/* ------------------------------------------------------------ verify */

/* Checks one complete line (without newline) against the chain; returns
 * NULL when it holds, else a static reason. */
static const char *check_line(const char *line, size_t len, long long lineno, const char *prev,
                              char *why, size_t whylen)
{
    if (len == 0)
        return "empty line";
    json_t *rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    const char *reason = NULL;
    json_t *seq = json_object_get(rec, "seq");
    json_t *p = json_object_get(rec, "prev");
    if (!json_is_object(rec)) {
        reason = "not a JSON object";
    } else if (!json_is_string(p) || strcmp(json_string_value(p), prev) != 0) {
        snprintf(why, whylen,
                 lineno == 1 ? "prev is not the 64 zeros of the first record"
                             : "prev does not match the SHA-256 of line %lld",
                 lineno - 1);
        reason = why;
    } else if (!json_is_integer(seq) || json_integer_value(seq) != lineno) {
        snprintf(why, whylen, "seq is not %lld", lineno);
        reason = why;
    } else if (!json_is_string(json_object_get(rec, "action")) ||
               !json_is_string(json_object_get(rec, "at"))) {
        reason = "missing action or at";
    }
    json_decref(rec);
    return reason;
}

static json_t *broken(long long lineno, const char *reason)
{
    return json_pack("{s:b, s:I, s:I, s:s}", "ok", 0, "records", (json_int_t)(lineno - 1),
                     "broken_at", (json_int_t)lineno, "reason", reason);
}

/* Reads one line into buf (at most cap bytes kept; the rest of a longer
 * line is skipped and *too_long set). Returns the bytes kept, with the
 * newline when there was one; 0 at end of file. */
static size_t read_line(FILE *f, char *buf, size_t cap, int *too_long)
{
    size_t len = 0;
    int c;
    *too_long = 0;
    while ((c = getc(f)) != EOF) {
        if (len < cap)
            buf[len++] = (char)c;
        else
            *too_long = 1;
        if (c == '\n')
            break;
    }
    if (*too_long && len > 0)
        buf[len - 1] = '\n'; /* a skipped line still counts as complete */
    return len;
}

json_t *audit_verify(const char *path, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_err(err, errlen, path, strerror(errno));
        return NULL;
    }
    char prev[AUDIT_HEX_LEN + 1];
    char why[128];
    memcpy(prev, zero_hash, sizeof(prev));
    char *buf = malloc(AUDIT_LINE_MAX + 1);
    long long lineno = 0;
    json_t *report = NULL;
    size_t len;
    int too_long = 0;
    if (buf == NULL)
        goto done;
    while ((len = read_line(f, buf, AUDIT_LINE_MAX + 1, &too_long)) > 0) {
        lineno++;
        const char *reason = NULL;
        if (too_long)
            reason = "line too long";
        else if (buf[len - 1] != '\n')
            reason = "incomplete last line (no newline): a torn write";
        else
            reason = check_line(buf, len - 1, lineno, prev, why, sizeof(why));
        if (reason != NULL) {
            report = broken(lineno, reason);
            goto done;
        }
        if (sh_sha256_hex(prev, buf, len - 1) != 0)
            goto done;
    }
    if (ferror(f)) {
        set_err(err, errlen, path, "read error");
        goto done;
    }
    report = json_pack("{s:b, s:I, s:s}", "ok", 1, "records", (json_int_t)lineno, "head", prev);
done:
    if (report == NULL && err != NULL && errlen > 0 && err[0] == '\0')
        set_err(err, errlen, path, "verification failed");
    free(buf);
    fclose(f);
    return report;
}
