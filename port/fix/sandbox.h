/*
 * The OS sandbox of the commands the port runs on a checkout (the coding
 * agent, compile, test): bubblewrap (bwrap) with every namespace unshared,
 * the system directories and a short list of /etc read-only, private
 * tmpfs mounts for /tmp and HOME, one writable directory, resource limits,
 * and, when the port runs as root, an unprivileged uid (docs/sandbox.md).
 *
 * sandbox_cmd_build turns a command into `bwrap ... -- command` plus the
 * descriptors and limits to spawn it with (proc_spec.pass_fds and
 * .limits); exec_run does that when its spec names a sandbox.
 */
#ifndef SELF_HEAL_PORT_SANDBOX_H
#define SELF_HEAL_PORT_SANDBOX_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#include "cmd.h"
#include "ctx.h"
#include "proc.h"

#define SANDBOX_MAX_FDS 64
#define SANDBOX_MAX_READ_ONLY 32
#define SANDBOX_HOME "/home/sandbox"

typedef enum sandbox_mode { SANDBOX_BWRAP = 0, SANDBOX_NONE = 1 } sandbox_mode;

typedef struct sandbox_config {
    sandbox_mode mode;    /* <prefix>.mode: "bwrap" (default) | "none" (explicit opt-out) */
    char bwrap[4096];     /* <prefix>.bwrap: the program (default: "bwrap" looked up in PATH,
                             then /usr/bin/bwrap) */
    json_t *read_only;    /* <prefix>.read_only: host paths (files or dirs) visible read-only
                             at the same path (absolute, not "/", no "..", at most 32) */
    long long cpu_s;      /* <prefix>.cpu_s (default 900): RLIMIT_CPU of each process */
    long long memory_mb;  /* <prefix>.memory_mb (default 4096): RLIMIT_DATA of each process */
    long long processes;  /* <prefix>.processes (default 256): processes+threads of the
                             sandbox's user */
    long long file_mb;    /* <prefix>.file_mb (default 256): largest file it may write */
    long long tmp_mb;     /* <prefix>.tmp_mb (default 512): size of each private tmpfs
                             (/tmp, HOME, /dev/shm) */
    long long open_files; /* <prefix>.open_files (default 1024) */
    long long uid, gid;   /* <prefix>.uid/gid (default 65534): the identity sandboxed processes
                             run as when the port runs as root; 0 is refused (bad_config) */
} sandbox_config;

/* Reads <prefix>.* (prefix such as "fix.sandbox"; absent keys take their
 * defaults). Returns 0, or -1 with a bad_config error naming the key: a
 * wrong type or range, an unknown mode (a typo never silently disables
 * the sandbox), uid or gid 0, a read_only entry that is not an absolute
 * path. A missing bwrap is not an error here (sandbox_probe says so).
 * Free with sandbox_config_free. */
int sandbox_config_load(sandbox_config *cfg, port_ctx *ctx, const char *prefix, cmd_error *err);
void sandbox_config_free(sandbox_config *cfg);

typedef struct sandbox_bind {
    const char *host;
    const char *inside;
} sandbox_bind;

typedef struct sandbox_run {
    const char *dir;           /* host directory: the ONLY writable path; the command's working
                                  directory */
    const char *dir_inside;    /* where it appears inside ("/work"); NULL: at its host path */
    const sandbox_bind *files; /* read-only files or dirs (host -> inside), e.g. the prompt
                                  file -> /task/prompt.md */
    size_t nfiles;
    int network; /* 1: share the host's network namespace; default 0: only a private loopback */
} sandbox_run;

typedef struct sandbox_cmd {
    char **argv;              /* bwrap ... -- cmd...: NULL-terminated, malloc'ed */
    char **envp;              /* the command's environment: the caller's envp with
                                 HOME=/home/sandbox, TMPDIR=/tmp (and nothing of bwrap's own) */
    int fds[SANDBOX_MAX_FDS]; /* descriptors the argv refers to as 3+i (open, O_CLOEXEC); */
    size_t nfds;              /* pass as proc_spec.pass_fds */
    proc_limits limits;       /* rlimits and identity for the bwrap process */
    int info_fd;              /* read end of bwrap's --info-fd (O_NONBLOCK), -1: none; for
                                 sandbox_watch_start */
} sandbox_cmd;

/* Builds the sandboxed command for cmd (argv, NULL-terminated) and envp
 * (may be NULL: empty). Returns 0 or -1 with err (a path that cannot be
 * opened, a bad inside path, bwrap missing, too many binds, the sandbox
 * uid unable to reach a bound path). Free with sandbox_cmd_free (closes
 * the fds; they may be closed as soon as the child is spawned). With mode
 * NONE: argv/envp are copies of the inputs, no fds, limits unset.
 *
 * The writable directory, the files, the read_only entries and cmd[0]
 * (when it is an absolute path outside the system directories and the
 * writable directory) are opened here (O_PATH) and bound by descriptor.
 * bwrap 0.8.0 still resolves such a descriptor to its path as the user it
 * runs as: when the port runs as root, the sandbox uid needs search
 * permission on every parent of a bound path (mode 0711 on a private
 * directory is enough), and read permission on bound files to read them;
 * this is checked here with a clear error. */
int sandbox_cmd_build(sandbox_cmd *out, const sandbox_config *cfg, const sandbox_run *run,
                      char *const *cmd, char *const *envp, char *err, size_t errlen);
void sandbox_cmd_free(sandbox_cmd *c);

/* Whether the sandbox can be set up now, as configured: runs `true` in a
 * throwaway sandbox (with the configured limits and identity). 0, or -1
 * with the reason (bwrap missing, user namespaces unavailable, ... with
 * bwrap's own message). A success is cached per (bwrap path, uid, gid) for
 * the process; a failure is probed again next time. Mode NONE: 0. The
 * probe also finds out whether bwrap accepts --disable-userns (added in
 * bwrap 0.8.0); when it does not, later commands go without it. */
int sandbox_probe(const sandbox_config *cfg, char *err, size_t errlen);

/* When the port runs as root: makes dir and everything under it owned by
 * the sandbox uid/gid (an openat walk that never follows symlinks - a
 * symlink itself is re-owned, not its target -, stays on dir's file system,
 * leaves files with several hard links alone unless already the sandbox's,
 * at most 128 levels deep); otherwise (or with mode NONE) a no-op. 0 or -1
 * with err. */
int sandbox_own(const sandbox_config *cfg, const char *dir, char *err, size_t errlen);

/* exec_run's hold on a running sandbox. bwrap reports the host pid of
 * the sandbox's init (pid 1 of its PID namespace) on its info descriptor;
 * once that process is gone, every process of the sandbox is gone (the
 * kernel kills and reaps the rest of a PID namespace before its init).
 * bwrap exits as soon as the command does (or at once when killed); the
 * init, with whatever daemons the command left, follows it a moment later
 * (--die-with-parent): that moment is what sandbox_watch_end waits for. */
typedef struct sandbox_watch {
    int info_fd; /* taken from sandbox_cmd.info_fd; -1 once at its end (or none); open
                    until then, so bwrap never writes into a closed pipe */
    int pidfd;   /* the init once known and checked (-1: not yet, or none) */
    int parsed;  /* the report was complete and has been looked at */
    char buf[1024];
    size_t len;
} sandbox_watch;

/* Takes c->info_fd (c->info_fd becomes -1, so sandbox_cmd_free may follow). */
void sandbox_watch_start(sandbox_watch *w, sandbox_cmd *c);
/* Reads what bwrap has reported so far and, once the init's pid and PID
 * namespace are known, opens a pidfd on it (checked to be that namespace's
 * init, so a reused pid is never waited for). Never blocks. */
void sandbox_watch_poll(sandbox_watch *w);
/* Once bwrap is reaped: waits up to timeout_ms for the init to be gone and
 * closes everything. 0 gone (or nothing to wait for), -1 not within the
 * time. */
int sandbox_watch_end(sandbox_watch *w, int timeout_ms);

#endif
