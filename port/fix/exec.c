/*
 * Running configured commands (port/fix/exec.h): argv templates expanded
 * without a shell, an allow-listed environment, and a supervised run that
 * kills the child's whole process group on timeout, output overflow or
 * shutdown and reaps it before returning.
 *
 * exec_run polls: proc_wait in slices of EXEC_SLICE_MS, and between
 * slices the elapsed time, the sizes of the output files and *stopping.
 * On any of them the group gets SIGTERM, EXEC_GRACE_MS to exit, then
 * SIGKILL, and is reaped (proc_wait kills what is left of the group when
 * its leader exits, so no grandchild survives).
 */
#include "exec.h"

#include "ctx.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"
#include "sandbox.h"
#include "self_heal/common.h"

extern char **environ;

#define EXEC_SLICE_MS 50
#define EXEC_GRACE_MS 2000
#define EXEC_SANDBOX_GONE_MS 5000
#define EXEC_DEFAULT_MAX_OUTPUT ((size_t)8 * 1024 * 1024)
#define EXEC_MAX_ENV 512      /* entries in a built environment */
#define EXEC_MAX_ENV_NAME 256 /* bytes of a variable name */
#define EXEC_MAX_ALLOW 256    /* names in an allow list */

const char *const exec_base_env[] = {"PATH", "HOME",    "LANG",  "LC_ALL", "TERM", "TMPDIR",
                                     "USER", "LOGNAME", "SHELL", "TZ",     NULL};

void exec_argv_free(char **argv)
{
    if (argv == NULL)
        return;
    for (size_t i = 0; argv[i] != NULL; i++)
        free(argv[i]);
    free(argv);
}

/* ---------------------------------------------------------------- expand */

/* The index of the key named by name[0..len), or -1. */
static long find_key(const char *name, size_t len, const char *const *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *k = keys[i];
        if (k != NULL && k[0] != '\0' && strlen(k) == len && memcmp(k, name, len) == 0)
            return (long)i;
    }
    return -1;
}

/* Appends src[0..len) to out (of capacity EXEC_MAX_ARG_BYTES + 1) at *pos;
 * -1 when the result would pass EXEC_MAX_ARG_BYTES. */
static int put(char *out, size_t *pos, const char *src, size_t len)
{
    if (len > EXEC_MAX_ARG_BYTES - *pos)
        return -1;
    memcpy(out + *pos, src, len);
    *pos += len;
    return 0;
}

/* Expands one argument; returns a malloc'ed string, or NULL (too long or
 * out of memory, told apart by *too_long). Substituted values are never
 * scanned again. */
static char *expand_one(const char *in, size_t inlen, const char *const *keys,
                        const char *const *vals, size_t n, int *too_long)
{
    char *out = malloc(EXEC_MAX_ARG_BYTES + 1);
    size_t pos = 0;
    *too_long = 0;
    if (out == NULL)
        return NULL;
    size_t i = 0;
    while (i < inlen) {
        if (in[i] == '{') {
            size_t j = i + 1;
            while (j < inlen && in[j] != '}' && in[j] != '{')
                j++;
            if (j < inlen && in[j] == '}') {
                long k = find_key(in + i + 1, j - i - 1, keys, n);
                if (k >= 0) {
                    const char *v = vals != NULL && vals[k] != NULL ? vals[k] : "";
                    if (put(out, &pos, v, strlen(v)) != 0)
                        goto too_long;
                    i = j + 1;
                    continue;
                }
            }
        }
        if (put(out, &pos, in + i, 1) != 0)
            goto too_long;
        i++;
    }
    out[pos] = '\0';
    char *shrunk = realloc(out, pos + 1);
    return shrunk != NULL ? shrunk : out;

too_long:
    free(out);
    *too_long = 1;
    return NULL;
}

char **exec_expand(json_t *tmpl, const char *const *keys, const char *const *vals, size_t n,
                   char *err, size_t errlen)
{
    char **argv = NULL;
    if (keys == NULL)
        n = 0;
    if (!json_is_array(tmpl)) {
        sh_errf(err, errlen, "argv template: not an array");
        return NULL;
    }
    size_t count = json_array_size(tmpl);
    if (count == 0 || count > EXEC_MAX_ARGS) {
        sh_errf(err, errlen, "argv template: %zu arguments (1..%d allowed)", count, EXEC_MAX_ARGS);
        return NULL;
    }
    argv = calloc(count + 1, sizeof(*argv));
    if (argv == NULL) {
        sh_errf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *a = json_array_get(tmpl, i);
        if (!json_is_string(a)) {
            sh_errf(err, errlen, "argv template: argument %zu is not a string", i);
            goto fail;
        }
        const char *s = json_string_value(a);
        size_t len = json_string_length(a);
        if (strlen(s) != len) {
            sh_errf(err, errlen, "argv template: argument %zu contains a NUL byte", i);
            goto fail;
        }
        if (len > EXEC_MAX_ARG_BYTES) {
            sh_errf(err, errlen, "argv template: argument %zu is over %d bytes", i,
                    EXEC_MAX_ARG_BYTES);
            goto fail;
        }
        int too_long = 0;
        argv[i] = expand_one(s, len, keys, vals, n, &too_long);
        if (argv[i] == NULL) {
            if (too_long)
                sh_errf(err, errlen, "argument %zu is over %d bytes once expanded", i,
                        EXEC_MAX_ARG_BYTES);
            else
                sh_errf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if (argv[0][0] == '\0') {
        sh_errf(err, errlen, "argv template: empty program name");
        goto fail;
    }
    return argv;

fail:
    exec_argv_free(argv);
    return NULL;
}

/* ---------------------------------------------------------------- environment */

static int ascii_upper(int c)
{
    return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

/* Case-insensitive: does s contain needle (upper case)? */
static int contains_ci(const char *s, const char *needle)
{
    size_t n = strlen(needle);
    for (; *s != '\0'; s++) {
        size_t i = 0;
        while (i < n && s[i] != '\0' && ascii_upper((unsigned char)s[i]) == needle[i])
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

static int starts_with_ci(const char *s, const char *prefix)
{
    for (; *prefix != '\0'; s++, prefix++)
        if (*s == '\0' || ascii_upper((unsigned char)*s) != *prefix)
            return 0;
    return 1;
}

int exec_looks_secret(const char *name)
{
    static const char *const parts[] = {"TOKEN",   "SECRET",  "PASSWORD",   "PASSWD",
                                        "API_KEY", "PRIVATE", "CREDENTIAL", NULL};
    static const char *const prefixes[] = {"AWS_", "GITHUB_", "GH_", "SLACK_", "TELEGRAM_", NULL};
    for (size_t i = 0; parts[i] != NULL; i++)
        if (contains_ci(name, parts[i]))
            return 1;
    for (size_t i = 0; prefixes[i] != NULL; i++)
        if (starts_with_ci(name, prefixes[i]))
            return 1;
    return 0;
}

/* A usable variable name: [A-Za-z_][A-Za-z0-9_]*, bounded. */
static int valid_name(const char *name, size_t len)
{
    if (len == 0 || len > EXEC_MAX_ENV_NAME)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        int ok = c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* The value of name in the port's environment (first occurrence), or NULL. */
static const char *env_get(const char *name)
{
    size_t n = strlen(name);
    if (environ == NULL)
        return NULL;
    for (size_t i = 0; environ[i] != NULL; i++)
        if (strncmp(environ[i], name, n) == 0 && environ[i][n] == '=')
            return environ[i] + n + 1;
    return NULL;
}

typedef struct env_list {
    char **v; /* NULL-terminated, capacity EXEC_MAX_ENV + 1 */
    size_t n;
} env_list;

/* Sets name (name[0..namelen)) to value, replacing an earlier entry of
 * that name. 0, 1 when the list is full (ignored), -1 out of memory. */
static int env_set(env_list *l, const char *name, size_t namelen, const char *value)
{
    size_t vlen = strlen(value);
    char *entry = malloc(namelen + vlen + 2);
    if (entry == NULL)
        return -1;
    memcpy(entry, name, namelen);
    entry[namelen] = '=';
    memcpy(entry + namelen + 1, value, vlen + 1);
    for (size_t i = 0; i < l->n; i++) {
        if (strncmp(l->v[i], name, namelen) == 0 && l->v[i][namelen] == '=') {
            free(l->v[i]);
            l->v[i] = entry;
            return 0;
        }
    }
    if (l->n >= EXEC_MAX_ENV) {
        free(entry);
        return 1;
    }
    l->v[l->n++] = entry;
    l->v[l->n] = NULL;
    return 0;
}

static int env_pass(env_list *l, const char *name)
{
    const char *value = env_get(name);
    if (value == NULL)
        return 0;
    return env_set(l, name, strlen(name), value) < 0 ? -1 : 0;
}

char **exec_env(json_t *allow, const char *key_name, const char *const *extra, size_t n_extra)
{
    env_list l = {calloc(EXEC_MAX_ENV + 1, sizeof(char *)), 0};
    if (l.v == NULL)
        return NULL;
    for (size_t i = 0; exec_base_env[i] != NULL; i++)
        if (env_pass(&l, exec_base_env[i]) != 0)
            goto fail;
    if (json_is_array(allow)) {
        size_t count = json_array_size(allow);
        if (count > EXEC_MAX_ALLOW)
            count = EXEC_MAX_ALLOW;
        for (size_t i = 0; i < count; i++) {
            json_t *a = json_array_get(allow, i);
            if (!json_is_string(a))
                continue;
            const char *name = json_string_value(a);
            if (strlen(name) != json_string_length(a) || !valid_name(name, strlen(name)))
                continue;
            if (exec_looks_secret(name) && (key_name == NULL || strcmp(name, key_name) != 0))
                continue;
            if (env_pass(&l, name) != 0)
                goto fail;
        }
    }
    for (size_t i = 0; extra != NULL && i < n_extra; i++) {
        if (extra[i] == NULL)
            continue;
        const char *eq = strchr(extra[i], '=');
        if (eq == NULL || !valid_name(extra[i], (size_t)(eq - extra[i])))
            continue;
        if (env_set(&l, extra[i], (size_t)(eq - extra[i]), eq + 1) < 0)
            goto fail;
    }
    return l.v;

fail:
    exec_argv_free(l.v);
    return NULL;
}

/* ---------------------------------------------------------------- running */

/* 1 when the file at path is larger than max bytes. */
static int over(const char *path, size_t max)
{
    struct stat st;
    if (path == NULL || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    return (unsigned long long)st.st_size > (unsigned long long)max;
}

/* Cuts an overflowed output file back to max bytes (disk use stays bounded
 * by what the child wrote before the kill; reports read the cut file). */
static void cut(const char *path, size_t max)
{
    struct stat st;
    int fd = path != NULL ? open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY) : -1;
    if (fd < 0)
        return;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (unsigned long long)st.st_size > (unsigned long long)max) {
        int rc = ftruncate(fd, (off_t)max);
        (void)rc;
    }
    close(fd);
}

int exec_run(exec_result *out, const exec_spec *spec, char *err, size_t errlen)
{
    char **own_env = NULL;
    int rc = -1;

    if (out == NULL || spec == NULL || spec->argv == NULL || spec->argv[0] == NULL) {
        sh_errf(err, errlen, "no command");
        return -1;
    }
    memset(out, 0, sizeof(*out));
    out->exit_code = -1;
    size_t max_output = spec->max_output != 0 ? spec->max_output : EXEC_DEFAULT_MAX_OUTPUT;
    out->max_output = max_output;
    out->timeout_ms = spec->timeout_ms > 0 ? spec->timeout_ms : 0;
    if (spec->stopping != NULL && *spec->stopping) {
        sh_errf(err, errlen, "stopping");
        return -1;
    }
    if ((spec->sandbox == NULL) != (spec->run == NULL)) {
        /* Half a sandbox is a caller's mistake: never run unsandboxed for it. */
        sh_errf(err, errlen, "a sandbox needs both its configuration and its run");
        return -1;
    }
    char *const *envp = spec->envp;
    if (envp == NULL) {
        /* Never the port's whole environment: the base names only. */
        own_env = exec_env(NULL, NULL, NULL, 0);
        if (own_env == NULL) {
            sh_errf(err, errlen, "out of memory");
            return -1;
        }
        envp = own_env;
    }
    proc_spec ps = {
        .argv = (const char *const *)spec->argv,
        .envp = (const char *const *)envp,
        .cwd = spec->cwd,
        .stdout_path = spec->stdout_path,
        .stderr_path = spec->stderr_path,
    };
    const char *err_path = spec->stderr_path;
    if (err_path != NULL && spec->stdout_path != NULL && strcmp(err_path, spec->stdout_path) == 0)
        err_path = NULL; /* one shared file */

    long long start = port_now_ms();
    sandbox_cmd sc;
    memset(&sc, 0, sizeof(sc));
    int sandboxed = spec->sandbox != NULL && spec->run != NULL;
    int watch_init = sandboxed && spec->sandbox->mode == SANDBOX_BWRAP;
    sandbox_watch watch;
    sandbox_watch_start(&watch, NULL);
    if (sandboxed) {
        if (sandbox_cmd_build(&sc, spec->sandbox, spec->run, spec->argv, envp, err, errlen) != 0)
            goto cleanup;
        ps.argv = (const char *const *)sc.argv;
        ps.envp = (const char *const *)sc.envp;
        if (watch_init)
            ps.cwd = "/"; /* bwrap's own; the command's is run->dir_inside */
        else if (ps.cwd == NULL)
            ps.cwd = spec->run->dir;
        ps.limits = sc.limits.set ? &sc.limits : NULL;
        ps.pass_fds = sc.fds;
        ps.npass_fds = sc.nfds;
        ps.no_run_marker = watch_init; /* exactly its environment; its PID namespace ends it */
    }
    pid_t pid = 0;
    int spawned = proc_spawn(&pid, &ps, err, errlen);
    if (sandboxed) {
        if (spawned == 0 && watch_init)
            sandbox_watch_start(&watch, &sc);
        sandbox_cmd_free(&sc); /* the child holds its own descriptors */
    }
    if (spawned != 0)
        goto cleanup;

    int status = 0;
    for (;;) {
        int slice = EXEC_SLICE_MS;
        if (out->timeout_ms > 0) {
            long long left = start + out->timeout_ms - port_now_ms();
            if (left < slice)
                slice = left > 0 ? (int)left : 0;
        }
        int w = proc_wait(&status, pid, slice);
        if (w == 0)
            break;
        if (w < 0) {
            sh_errf(err, errlen, "lost track of the child %d", (int)pid);
            goto cleanup;
        }
        sandbox_watch_poll(&watch); /* learns the sandbox's init early */
        if (spec->stopping != NULL && *spec->stopping)
            out->stopped = 1;
        else if (out->timeout_ms > 0 && port_now_ms() - start >= out->timeout_ms)
            out->timed_out = 1;
        else if (over(spec->stdout_path, max_output) || over(err_path, max_output))
            out->overflowed = 1;
        else
            continue;
        proc_kill(pid, SIGTERM);
        w = proc_wait(&status, pid, EXEC_GRACE_MS);
        if (w == 1) {
            proc_kill(pid, SIGKILL);
            w = proc_wait(&status, pid, -1);
        }
        if (w != 0) {
            sh_errf(err, errlen, "lost track of the child %d", (int)pid);
            goto cleanup;
        }
        break;
    }
    if (WIFEXITED(status))
        out->exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        out->signal = WTERMSIG(status);
    if (out->overflowed) {
        cut(spec->stdout_path, max_output);
        cut(err_path, max_output);
    }
    rc = 0;

cleanup:
    /* After bwrap: the rest of the sandbox (its init, and with it any
     * daemon) is gone before exec_run returns. */
    sandbox_watch_end(&watch, EXEC_SANDBOX_GONE_MS);
    out->elapsed_ms = port_now_ms() - start;
    exec_argv_free(own_env);
    return rc;
}

int exec_ok(const exec_result *r)
{
    return r != NULL && r->exit_code == 0 && r->signal == 0 && !r->timed_out && !r->overflowed &&
           !r->stopped;
}

void exec_describe(const exec_result *r, char *buf, size_t buflen)
{
    if (buf == NULL || buflen == 0)
        return;
    if (r == NULL) {
        snprintf(buf, buflen, "not run");
    } else if (r->stopped) {
        snprintf(buf, buflen, "stopped");
    } else if (r->timed_out) {
        long long ms = r->timeout_ms > 0 ? r->timeout_ms : r->elapsed_ms;
        if (ms % 1000 == 0)
            snprintf(buf, buflen, "timed out after %lld s", ms / 1000);
        else
            snprintf(buf, buflen, "timed out after %lld.%03lld s", ms / 1000, ms % 1000);
    } else if (r->overflowed) {
        snprintf(buf, buflen, "output over %zu bytes", r->max_output);
    } else if (r->signal != 0) {
        snprintf(buf, buflen, "killed by signal %d", r->signal);
    } else {
        snprintf(buf, buflen, "exit %d", r->exit_code);
    }
}

/* ---------------------------------------------------------------- tail */

char *exec_tail(const char *path, size_t max)
{
    char *buf = NULL;
    size_t got = 0;
    int fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) : -1;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || max == 0)
        goto empty;
    size_t size =
        (unsigned long long)st.st_size > (unsigned long long)max ? max : (size_t)st.st_size;
    off_t from = st.st_size - (off_t)size;
    if (lseek(fd, from, SEEK_SET) != from)
        goto empty;
    buf = malloc(size + 1);
    if (buf == NULL)
        goto cleanup;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    /* A string: NUL bytes in the file must not end it early. */
    for (char *z = memchr(buf, '\0', got); z != NULL; z = memchr(z, '\0', got - (size_t)(z - buf)))
        *z = '?';
    if (from > 0) {
        /* Started inside the file: drop a partial UTF-8 sequence. */
        size_t skip = 0;
        while (skip < 3 && skip < got && ((unsigned char)buf[skip] & 0xC0) == 0x80)
            skip++;
        if (skip > 0)
            memmove(buf, buf + skip, got - skip + 1);
    }
    goto cleanup;

empty:
    buf = malloc(1);
    if (buf != NULL)
        buf[0] = '\0';
cleanup:
    if (fd >= 0)
        close(fd);
    return buf;
}
