/*
 * The process tree from /proc (ptree.h).
 */
#include "ptree.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STAT_MAX 1024         /* a stat line is about 300 bytes; the name at most 64 */
#define ENVIRON_MAX (1 << 20) /* bytes of an environment read before giving up */
#define STAT_FIELD_START 19   /* starttime, counted from the state (field 3) */

static int read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got + 1 < len) {
        ssize_t n = read(fd, buf + got, len - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    return got > 0 ? 0 : -1;
}

/* Parses "pid (name) state ppid pgrp session ... starttime ...": the name
 * may hold spaces and parentheses, so fields are counted from the last
 * ')'. */
static int parse_stat(const char *buf, ptree_proc *out)
{
    const char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return -1;
    p += 2;
    memset(out, 0, sizeof(*out));
    out->pid = (pid_t)strtol(buf, NULL, 10);
    out->state = *p;
    for (int field = 0; field <= STAT_FIELD_START; field++) {
        while (*p != '\0' && *p != ' ')
            p++;
        if (*p != ' ')
            return -1;
        p++;
        char *end = NULL;
        switch (field + 1) {
        case 1:
            out->ppid = (pid_t)strtol(p, &end, 10);
            break;
        case 2:
            out->pgid = (pid_t)strtol(p, &end, 10);
            break;
        case 3:
            out->sid = (pid_t)strtol(p, &end, 10);
            break;
        case STAT_FIELD_START:
            out->start = strtoull(p, &end, 10);
            return end != p && out->pid > 0 ? 0 : -1;
        default:
            break;
        }
    }
    return -1;
}

int ptree_stat(pid_t pid, ptree_proc *out)
{
    char path[64], buf[STAT_MAX];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof(buf)) != 0 || parse_stat(buf, out) != 0)
        return -1;
    return out->pid == pid ? 0 : -1;
}

static int by_pid(const void *a, const void *b)
{
    pid_t x = ((const ptree_proc *)a)->pid, y = ((const ptree_proc *)b)->pid;
    return (x > y) - (x < y);
}

int ptree_read(ptree *t)
{
    t->procs = NULL;
    t->n = 0;
    DIR *d = opendir("/proc");
    if (d == NULL)
        return -1;
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char *end = NULL;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != '\0' || pid <= 0)
            continue;
        ptree_proc p;
        if (ptree_stat((pid_t)pid, &p) != 0)
            continue; /* gone since readdir */
        if (t->n == cap) {
            size_t ncap = cap != 0 ? cap * 2 : 256;
            ptree_proc *np = realloc(t->procs, ncap * sizeof(*np));
            if (np == NULL) {
                rc = -1;
                break;
            }
            t->procs = np;
            cap = ncap;
        }
        t->procs[t->n++] = p;
    }
    int saved = errno;
    closedir(d);
    if (rc != 0) {
        ptree_free(t);
        errno = saved;
        return -1;
    }
    if (t->n > 1)
        qsort(t->procs, t->n, sizeof(*t->procs), by_pid);
    return 0;
}

void ptree_free(ptree *t)
{
    free(t->procs);
    t->procs = NULL;
    t->n = 0;
}

const ptree_proc *ptree_find(const ptree *t, pid_t pid)
{
    ptree_proc key = {.pid = pid};
    if (t->n == 0)
        return NULL;
    return bsearch(&key, t->procs, t->n, sizeof(*t->procs), by_pid);
}

size_t ptree_descendants(const ptree *t, pid_t root, unsigned char *marks)
{
    /* memo: 0 not looked at, 1 a descendant, 2 not one */
    unsigned char *memo = calloc(t->n + 1, 1);
    size_t *chain = malloc((t->n + 1) * sizeof(*chain));
    if (memo == NULL || chain == NULL) {
        free(memo);
        free(chain);
        return (size_t)-1;
    }
    size_t count = 0;
    for (size_t i = 0; i < t->n; i++) {
        size_t len = 0, j = i;
        unsigned char verdict = 2;
        /* Up the chain of parents until root, a known process, or the top;
         * every process on the way gets the same verdict. */
        while (len <= t->n) {
            if (memo[j] != 0) {
                verdict = memo[j];
                break;
            }
            chain[len++] = j;
            pid_t parent = t->procs[j].ppid;
            if (parent == root) {
                verdict = 1;
                break;
            }
            const ptree_proc *up = parent > 0 ? ptree_find(t, parent) : NULL;
            if (up == NULL || t->procs[j].pid == root)
                break;
            j = (size_t)(up - t->procs);
        }
        for (size_t k = 0; k < len; k++)
            memo[chain[k]] = verdict;
    }
    for (size_t i = 0; i < t->n; i++) {
        marks[i] = memo[i] == 1 && t->procs[i].pid != root;
        count += marks[i];
    }
    free(memo);
    free(chain);
    return count;
}

int ptree_environ_get(pid_t pid, const char *name, char *value, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char *buf = NULL;
    size_t have = 0, cap = 0;
    int failed = 0;
    while (have < ENVIRON_MAX) {
        if (have == cap) {
            size_t ncap = cap != 0 ? cap * 2 : 8192;
            char *nb = realloc(buf, ncap);
            if (nb == NULL) {
                failed = 1;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + have, cap - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            failed = 1;
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    close(fd);
    int found = 0;
    size_t nlen = strlen(name);
    /* NUL-terminated NAME=value entries (the last one may lack its NUL). */
    for (size_t at = 0; !failed && at < have;) {
        const char *entry = buf + at;
        const char *nul = memchr(entry, '\0', have - at);
        size_t elen = nul != NULL ? (size_t)(nul - entry) : have - at;
        if (elen > nlen && memcmp(entry, name, nlen) == 0 && entry[nlen] == '=') {
            size_t vlen = elen - nlen - 1;
            if (len > 0) {
                if (vlen >= len)
                    vlen = len - 1;
                memcpy(value, entry + nlen + 1, vlen);
                value[vlen] = '\0';
            }
            found = 1;
            break;
        }
        at += elen + 1;
    }
    free(buf);
    return failed ? -1 : found;
}
