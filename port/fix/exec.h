/*
 * Running configured commands (the coding agent, compile, test, deploy,
 * health check) from argv templates: placeholders substituted inside
 * single arguments (never through a shell), an environment built from an
 * allow-list, stdout and stderr captured to files with a size cap, a
 * timeout, and the whole process group killed and reaped on timeout,
 * overflow or shutdown (proc.c does the spawning).
 */
#ifndef SELF_HEAL_PORT_EXEC_H
#define SELF_HEAL_PORT_EXEC_H

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>

#define EXEC_MAX_ARGS 128
#define EXEC_MAX_ARG_BYTES 8192

/* Expands an argv template (a JSON array of 1..EXEC_MAX_ARGS strings)
 * into a NULL-terminated, malloc'ed vector: every "{name}" whose name is
 * in keys[0..n) is replaced by vals[i] ("" when vals[i] is NULL) wherever
 * it occurs in an argument; substituted text is not expanded again; other
 * braces stay as they are. Arguments are at most EXEC_MAX_ARG_BYTES bytes,
 * in the template and once expanded. Each result argument is one argv entry
 * whatever it contains. Returns NULL with err set on a bad template
 * (not an array, empty, non-string, too long). Free with exec_argv_free. */
char **exec_expand(json_t *tmpl, const char *const *keys, const char *const *vals, size_t n,
                   char *err, size_t errlen);
void exec_argv_free(char **argv);

/* Environment names always passed through when set (no secrets):
 * PATH HOME LANG LC_ALL TERM TMPDIR USER LOGNAME SHELL TZ. */
extern const char *const exec_base_env[];

/* Builds a NULL-terminated "NAME=value" vector from the port's own
 * environment: exec_base_env, then the names in `allow` (a JSON array of
 * strings, may be NULL), then `extra` ("NAME=value" strings set by the
 * caller, may be NULL, n_extra of them). Names that look like secrets
 * (containing TOKEN, SECRET, PASSWORD, PASSWD, API_KEY, PRIVATE, CREDENTIAL,
 * case-insensitive, or starting with AWS_, GITHUB_, GH_, SLACK_, TELEGRAM_)
 * are dropped from `allow` unless equal to `key_name` (the one key the
 * caller grants, may be NULL). Free with exec_argv_free. */
char **exec_env(json_t *allow, const char *key_name, const char *const *extra, size_t n_extra);

/* 1 when a variable's name looks like a secret's (the rule above). */
int exec_looks_secret(const char *name);

typedef struct sandbox_config sandbox_config; /* port/fix/sandbox.h */
typedef struct sandbox_run sandbox_run;

typedef struct exec_spec {
    char *const *argv;          /* NULL-terminated */
    char *const *envp;          /* NULL-terminated; NULL: the base names only (never the port's) */
    const char *cwd;            /* may be NULL; unused in a bwrap sandbox (run->dir is the cwd) */
    const char *stdout_path;    /* NULL: /dev/null */
    const char *stderr_path;    /* NULL: /dev/null; may equal stdout_path */
    size_t max_output;          /* bytes per output file before the run is killed (0: 8 MiB) */
    int timeout_ms;             /* <= 0: none */
    const atomic_int *stopping; /* when it becomes non-zero the run is killed (may be NULL) */
    const sandbox_config *sandbox; /* with run: the command runs in this sandbox (mode none:
                                      as the port, in run->dir unless cwd is set); both NULL:
                                      unsandboxed; only one of them: an error */
    const sandbox_run *run;        /* the sandbox's writable directory, files, network */
} exec_spec;

typedef struct exec_result {
    int exit_code;  /* 0..255 when it exited, else -1 */
    int signal;     /* the signal that ended it, else 0 */
    int timed_out;  /* killed because the timeout passed */
    int overflowed; /* killed because an output file passed max_output */
    int stopped;    /* killed because *stopping was set */
    long long elapsed_ms;
    int timeout_ms;    /* the limits the run had (for exec_describe): timeout (0: none) */
    size_t max_output; /* and output cap in bytes */
} exec_result;

/* Runs to completion (or kill). Returns 0 with out filled whenever the
 * child was started (a non-zero exit is not an error here), -1 with err
 * when it could not be started (or *stopping was already set, or the
 * sandbox command could not be built). No process of its group is left
 * behind; in a bwrap sandbox no process of the sandbox either, daemons
 * in sessions of their own included (exec_run returns once the sandbox's
 * PID namespace is gone, waiting at most 5 s for it after bwrap exits).
 * After an overflow the output file is cut to max_output bytes. A kill
 * in a sandbox is immediate (bwrap dies at SIGTERM, the sandbox with it):
 * no grace period. */
int exec_run(exec_result *out, const exec_spec *spec, char *err, size_t errlen);

/* 1 when the run exited with status 0. */
int exec_ok(const exec_result *r);

/* Short text for logs and reports: "exit 0", "exit 2", "killed by signal
 * 9", "timed out after 900 s", "output over 8388608 bytes", "stopped". */
void exec_describe(const exec_result *r, char *buf, size_t buflen);

/* The last max bytes of a file (for reports), scrubbed by the caller.
 * Returns a malloc'ed NUL-terminated string ("" when unreadable, NULL
 * only when out of memory); a partial UTF-8 character at the cut is
 * dropped and NUL bytes read as '?' (so the string is all of the tail). */
char *exec_tail(const char *path, size_t max);

#endif
