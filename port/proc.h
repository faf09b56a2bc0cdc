/*
 * Child processes of the port (coding agents, build and deploy commands).
 *
 * A child is started from an argv vector (no shell) with fork + execve,
 * in a new process group of its own (its pgid is its pid), with stdin
 * from /dev/null, stdout and stderr to files or /dev/null, every other
 * descriptor closed, signals reset to their defaults and, on Linux,
 * PR_SET_PDEATHSIG(SIGKILL): if the port dies, even by SIGKILL, the kernel
 * kills the child (its own descendants are reached by the port's group
 * kill on a normal exit only).
 *
 * Live groups are kept in a registry: proc_kill_all() signals every one of
 * them, so the port's shutdown reaches grandchildren too. proc_wait()
 * kills what is left of a group (SIGKILL) when its leader exits, before
 * reaping the leader, so a group id is never signalled after it could be
 * reused.
 */
#ifndef SELF_HEAL_PORT_PROC_H
#define SELF_HEAL_PORT_PROC_H

#include <stddef.h>
#include <sys/types.h>

#define PROC_MAX_LIVE 256 /* registered groups at once; more spawns fail */
#define PROC_MAX_ARGS 256

typedef struct proc_spec {
    const char *const *argv; /* NULL-terminated; argv[0] is a path or a name looked up in PATH */
    const char *const *envp; /* NULL-terminated environment, or NULL to inherit the port's */
    const char *cwd;         /* working directory, or NULL */
    const char *stdout_path; /* created/truncated (mode 0600), or NULL for /dev/null */
    const char *stderr_path; /* likewise; may equal stdout_path (one shared file) */
} proc_spec;

/* Starts a child. Returns 0 with its pid (= its pgid) in *pid, or -1 with
 * a reason in err (spawning refused, too many children, program not found,
 * a file could not be opened, exec failed). */
int proc_spawn(pid_t *pid, const proc_spec *spec, char *err, size_t errlen);

/* Waits up to timeout_ms (< 0: no limit) for the child to exit. Returns 0
 * with its wait status in *status (may be NULL) once it exited and was
 * reaped (what was left of its group is killed first), 1 on timeout (the
 * child still runs), -1 when pid is not a registered child. */
int proc_wait(int *status, pid_t pid, int timeout_ms);

/* Sends sig to the child's whole process group. Returns 0 or -1. */
int proc_kill(pid_t pid, int sig);

/* Sends sig to every registered process group. */
void proc_kill_all(int sig);

/* Registered children whose leader has not exited yet. */
size_t proc_live_count(void);

/* While not allowed (at shutdown), proc_spawn fails at once. */
void proc_set_spawn_allowed(int allowed);

/* Wakes proc_wait callers early (the reader thread calls it on SIGCHLD;
 * without it they still notice an exit within 20 ms). */
void proc_on_sigchld(void);

#endif
