/*
 * Child processes of the port (coding agents, build and deploy commands).
 *
 * A child is started from an argv vector (no shell) with fork + execve,
 * in a new process group of its own (its pgid is its pid), with stdin
 * from /dev/null, stdout and stderr to files or /dev/null, every other
 * descriptor closed, signals reset to their defaults and, on Linux,
 * PR_SET_PDEATHSIG(SIGKILL): if the port dies, even by SIGKILL, the kernel
 * kills the child (its own descendants are reached by the process tree,
 * below, and by the port's watchdog: port/core/watchdog.h).
 *
 * Live groups are kept in a registry: proc_kill_all() signals every one of
 * them, so the port's shutdown reaches grandchildren too. proc_wait()
 * kills what is left of a group (SIGKILL) when its leader exits, before
 * reaping the leader, so a group id is never signalled after it could be
 * reused.
 *
 * Processes that leave their group or session (setsid, nohup, a double
 * fork, setpgid) are reached through the process tree instead: the port
 * makes itself a child subreaper (proc_become_subreaper), so every process
 * it started, whatever it did, stays its descendant (an orphan is handed
 * to the port, not to init); proc_signal_descendants() and
 * proc_kill_descendants() find them in /proc (ptree.h), and
 * proc_reap_orphans() reaps the orphans that exit without taking the exit
 * status of a registered child, which belongs to its proc_wait caller.
 * proc_mark_children() puts SELF_HEAL_PORT_RUN=<owner pid>:<start> in
 * every child's environment, so that what a run left behind when all of
 * it was killed at once can be found by the next one
 * (proc_kill_left_behind).
 *
 * A spec may also give the child resource limits and another identity
 * (proc_limits: the port runs as root, the child as an unprivileged uid)
 * and descriptors to inherit (pass_fds, at 3, 4, ... in the child).
 */
#ifndef SELF_HEAL_PORT_PROC_H
#define SELF_HEAL_PORT_PROC_H

#include <stddef.h>
#include <sys/types.h>

#define PROC_MAX_LIVE 256 /* registered groups at once; more spawns fail */
#define PROC_MAX_ARGS 256
#define PROC_MAX_PASS_FDS 64

/* Resource limits and identity of a child, applied between fork and exec.
 * A limit of 0 leaves the port's own; a limit is never raised above the
 * port's hard limit (both soft and hard are set to the value). */
typedef struct proc_limits {
    int set;               /* 0: no limits at all */
    long long cpu_s;       /* RLIMIT_CPU */
    long long data_bytes;  /* RLIMIT_DATA (private writable memory; unlike RLIMIT_AS it does
                              not break V8/Node's address-space reservations) */
    long long fsize_bytes; /* RLIMIT_FSIZE */
    long long nproc;       /* RLIMIT_NPROC (counted per real uid) */
    long long nofile;      /* RLIMIT_NOFILE */
    int core_off;          /* RLIMIT_CORE 0 */
    int drop_uid;          /* 1: setgroups(0), setgid(gid), setuid(uid) before exec */
    uid_t uid;
    gid_t gid;
} proc_limits;

typedef struct proc_spec {
    const char *const *argv;   /* NULL-terminated; argv[0] is a path or a name looked up in PATH */
    const char *const *envp;   /* NULL-terminated environment, or NULL to inherit the port's */
    const char *cwd;           /* working directory, or NULL */
    const char *stdout_path;   /* created/truncated (mode 0600), or NULL for /dev/null */
    const char *stderr_path;   /* likewise; may equal stdout_path (one shared file) */
    const proc_limits *limits; /* NULL: none */
    const int *pass_fds;       /* pass_fds[i] becomes descriptor 3+i in the child (not
                                  close-on-exec); every other descriptor >= 3 is closed */
    size_t npass_fds;          /* at most PROC_MAX_PASS_FDS */
    int no_run_marker;         /* 1: the environment exactly as given, without the run
                                  marker (a sandbox, which its PID namespace ends) */
} proc_spec;

/* Starts a child. Returns 0 with its pid (= its pgid) in *pid, or -1 with
 * a reason in err (spawning refused, too many children, program not found,
 * a file could not be opened, a bad descriptor to pass, the identity could
 * not be dropped, exec failed).
 *
 * In the child, in this order: its own process group; the identity drop
 * (a failure ends the child and is reported); PR_SET_PDEATHSIG(SIGKILL)
 * (after the drop, which would clear it); signals reset; descriptors
 * 0-2 and the passed ones placed, everything else close-on-exec; the
 * rlimits; the working directory; execve. */
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

/* Makes this process a child subreaper (PR_SET_CHILD_SUBREAPER): its
 * descendants' orphans become its children. 0, or -1 with errno. */
int proc_become_subreaper(void);

/* Reaps the exited children that are not registered (orphans handed to
 * the subreaper); a registered child is left to its proc_wait caller. */
void proc_reap_orphans(void);

/* Sends sig (0: none) to every live descendant of this process (by the
 * process tree, whatever its group or session), and reaps as
 * proc_reap_orphans. Returns the number of live descendants seen, or -1
 * when /proc could not be read. */
long proc_signal_descendants(int sig);

/* SIGKILL to every descendant, again and again (a dying process may have
 * forked), reaping as proc_reap_orphans, until none is alive or timeout_ms
 * passed (< 0: no limit). Returns the live descendants left (0), or -1
 * when /proc could not be read. Exited registered children stay zombies
 * until their proc_wait (or this process's exit). */
long proc_kill_descendants(int timeout_ms);

/* SIGSTOP to every descendant not stopped yet, until all are stopped or
 * timeout_ms passed (< 0: no limit): a stopped process neither forks nor
 * exits, so the tree stays as it is for a last proc_signal_descendants(
 * SIGKILL). Returns the descendants not stopped yet (0), or -1. */
long proc_freeze_descendants(int timeout_ms);

/* From now on every child's environment holds SELF_HEAL_PORT_RUN=<pid>:<start
 * time> of owner (unless its spec says no_run_marker); descendants inherit
 * it unless they clear their environment (owner 0: no marker any more).
 * 0, or -1 when owner is gone. */
int proc_mark_children(pid_t owner);

/* SIGKILL, until none is left or timeout_ms passed, to every process whose
 * environment holds a run marker whose owner is gone, with everything
 * below it: what a run left behind when it was killed whole. Never this
 * process or its ancestors, nor processes of the run this process itself
 * belongs to (the same marker in its own environment). Returns how many were found, or -1 when
 * /proc could not be read. */
long proc_kill_left_behind(int timeout_ms);

/* Wakes proc_wait callers early (the reader thread calls it on SIGCHLD;
 * without it they still notice an exit within 20 ms). */
void proc_on_sigchld(void);

#endif
