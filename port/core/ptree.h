/*
 * The process tree as /proc shows it: a snapshot of every process's
 * parent, process group, session, start time and state, the descendants
 * of a process in it, and one variable of a process's environment.
 *
 * proc.c uses it to find what the port started after it left its process
 * group or session (setsid, nohup, a double fork, setpgid): the port is a
 * child subreaper, so while it lives the chain of parents of every process
 * it started, however far it went, leads back to it.
 *
 * A snapshot is not atomic (processes come and go while /proc is read):
 * callers that must reach every process loop until a snapshot shows none
 * left. A process is named by its pid and its start time together (a pid
 * is reused, the pair is not).
 */
#ifndef SELF_HEAL_PORT_PTREE_H
#define SELF_HEAL_PORT_PTREE_H

#include <stddef.h>
#include <sys/types.h>

typedef struct ptree_proc {
    pid_t pid, ppid, pgid, sid;
    unsigned long long start; /* clock ticks after boot (/proc/PID/stat field 22) */
    char state;               /* 'R', 'S', 'D', 'T', 'Z', ... */
} ptree_proc;

typedef struct ptree {
    ptree_proc *procs; /* sorted by pid */
    size_t n;
} ptree;

/* Reads every process of /proc. 0, or -1 with errno (/proc unreadable,
 * out of memory; t is then empty). Free with ptree_free. */
int ptree_read(ptree *t);
void ptree_free(ptree *t);

/* The process with that pid in the snapshot, or NULL. */
const ptree_proc *ptree_find(const ptree *t, pid_t pid);

/* One process now: 0, or -1 when it does not exist (or /proc/PID/stat
 * cannot be read or parsed). */
int ptree_stat(pid_t pid, ptree_proc *out);

/* Sets marks[i] (t->n entries) to 1 for every process whose chain of
 * parents in the snapshot reaches root (root itself excluded), else 0.
 * Returns how many were marked, or (size_t)-1 when out of memory. */
size_t ptree_descendants(const ptree *t, pid_t root, unsigned char *marks);

/* The value of the variable name in the environment pid started with
 * (/proc/PID/environ), cut to fit value (NUL-terminated). 1 when present,
 * 0 when absent, -1 when the environment cannot be read (gone, another
 * user's process). */
int ptree_environ_get(pid_t pid, const char *name, char *value, size_t len);

#endif
