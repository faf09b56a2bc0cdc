/*
 * The bubblewrap sandbox (sandbox.h, docs/sandbox.md): configuration,
 * the bwrap command line, the probe, and re-owning a tree for the
 * sandbox's uid.
 */
#define _GNU_SOURCE /* O_PATH, pidfd via syscall, fdopendir */

#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "self_heal/common.h"

#define MIB (1024LL * 1024LL)
#define OWN_MAX_DEPTH 128
#define PROBE_TIMEOUT_MS 10000
#define PROBE_CACHE 8
#define ENV_PROGRAM "/usr/bin/env"

/* Reproduced as on the host: a symlink stays a symlink (merged /usr), a
 * directory is bound read-only. /usr itself is always bound. */
static const char *const top_dirs[] = {"/bin",   "/sbin",   "/lib", "/lib32",
                                       "/lib64", "/libx32", NULL};

/* The only parts of /etc a sandbox sees (when present): the dynamic
 * loader, users and groups, name service switch, time zone, CA
 * certificates, MIME types, protocol and service names. */
static const char *const etc_files[] = {
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",  "/etc/alternatives",
    "/etc/passwd",      "/etc/group",      "/etc/nsswitch.conf", "/etc/hosts",
    "/etc/localtime",   "/etc/timezone",   "/etc/ssl",           "/etc/ca-certificates",
    "/etc/mime.types",  "/etc/protocols",  "/etc/services",      NULL};

/* And with the network only. */
static const char *const etc_net_files[] = {"/etc/resolv.conf", "/etc/host.conf", "/etc/gai.conf",
                                            NULL};

/* ---------------------------------------------------------------- config */

static int key_path(char *out, size_t len, const char *prefix, const char *key)
{
    return (size_t)snprintf(out, len, "%s.%s", prefix, key) < len ? 0 : -1;
}

static int load_int(port_ctx *ctx, const char *prefix, const char *key, long long dflt,
                    long long min, long long max, long long *out, cmd_error *err)
{
    char path[256];
    if (key_path(path, sizeof(path), prefix, key) != 0) {
        cmd_error_set(err, "bad_config", "sandbox prefix too long");
        return -1;
    }
    json_t *v = port_config_get(ctx, path);
    int rc = 0;
    if (v == NULL || json_is_null(v)) {
        *out = dflt;
    } else if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        if (json_is_integer(v) && json_integer_value(v) == 0 && min == 1 &&
            (strcmp(key, "uid") == 0 || strcmp(key, "gid") == 0))
            cmd_error_set(err, "bad_config",
                          "%s must not be 0: sandboxed commands never run as root", path);
        else
            cmd_error_set(err, "bad_config", "%s must be an integer from %lld to %lld", path, min,
                          max);
        rc = -1;
    } else {
        *out = (long long)json_integer_value(v);
    }
    json_decref(v);
    return rc;
}

/* An absolute path without "." or ".." components or empty ones, not "/". */
static int clean_abs_path(const char *p)
{
    if (p == NULL || p[0] != '/' || p[1] == '\0' || strlen(p) >= PATH_MAX)
        return 0;
    const char *s = p;
    while (*s == '/') {
        const char *c = s + 1;
        const char *end = strchr(c, '/');
        size_t n = end != NULL ? (size_t)(end - c) : strlen(c);
        if (n == 0 && end != NULL)
            return 0; /* "//" */
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        if (end == NULL)
            break;
        s = end;
    }
    return 1;
}

/* The first executable regular file named name in the port's PATH, or
 * fallback when it is executable, else name itself (unresolved). */
static void find_program(char *out, size_t len, const char *name, const char *fallback)
{
    struct stat st;
    snprintf(out, len, "%s", name);
    if (strchr(name, '/') != NULL)
        return;
    const char *path = getenv("PATH");
    while (path != NULL && *path != '\0') {
        const char *colon = strchr(path, ':');
        size_t dirlen = colon != NULL ? (size_t)(colon - path) : strlen(path);
        char cand[PATH_MAX];
        int n = snprintf(cand, sizeof(cand), "%.*s/%s", (int)dirlen, path, name);
        if (dirlen > 0 && path[0] == '/' && n > 0 && (size_t)n < sizeof(cand) &&
            stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0 &&
            (size_t)n < len) {
            snprintf(out, len, "%s", cand);
            return;
        }
        path += dirlen;
        if (*path == ':')
            path++;
    }
    if (fallback != NULL && stat(fallback, &st) == 0 && S_ISREG(st.st_mode) &&
        access(fallback, X_OK) == 0)
        snprintf(out, len, "%s", fallback);
}

int sandbox_config_load(sandbox_config *cfg, port_ctx *ctx, const char *prefix, cmd_error *err)
{
    char path[256];
    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = SANDBOX_BWRAP;
    if (prefix == NULL || key_path(path, sizeof(path), prefix, "read_only") != 0) {
        cmd_error_set(err, "bad_config", "sandbox prefix missing or too long");
        return -1;
    }

    /* the whole key may be a mode alone: "fix.sandbox": "none" */
    json_t *v = port_config_get(ctx, prefix);
    if (json_is_string(v)) {
        const char *m = json_string_value(v);
        int ok = strcmp(m, "none") == 0 || strcmp(m, "bwrap") == 0;
        if (!ok)
            cmd_error_set(err, "bad_config", "%s must be \"bwrap\", \"none\" or an object", prefix);
        else if (strcmp(m, "none") == 0)
            cfg->mode = SANDBOX_NONE;
        json_decref(v);
        if (!ok)
            return -1;
        v = NULL; /* the other keys take their defaults */
    } else if (v != NULL && !json_is_null(v) && !json_is_object(v)) {
        cmd_error_set(err, "bad_config", "%s must be \"bwrap\", \"none\" or an object", prefix);
        json_decref(v);
        return -1;
    }
    json_decref(v);

    key_path(path, sizeof(path), prefix, "mode");
    v = port_config_get(ctx, path);
    if (v != NULL && !json_is_null(v)) {
        const char *m = json_is_string(v) ? json_string_value(v) : NULL;
        if (m != NULL && strcmp(m, "bwrap") == 0) {
            cfg->mode = SANDBOX_BWRAP;
        } else if (m != NULL && strcmp(m, "none") == 0) {
            cfg->mode = SANDBOX_NONE;
        } else {
            cmd_error_set(err, "bad_config", "%s must be \"bwrap\" or \"none\"", path);
            json_decref(v);
            return -1;
        }
    }
    json_decref(v);

    key_path(path, sizeof(path), prefix, "bwrap");
    v = port_config_get(ctx, path);
    if (v == NULL || json_is_null(v)) {
        find_program(cfg->bwrap, sizeof(cfg->bwrap), "bwrap", "/usr/bin/bwrap");
    } else if (!json_is_string(v) || json_string_length(v) == 0 ||
               json_string_length(v) >= sizeof(cfg->bwrap) ||
               strlen(json_string_value(v)) != json_string_length(v)) {
        cmd_error_set(err, "bad_config", "%s must be a non-empty string (a path or a name)", path);
        json_decref(v);
        return -1;
    } else {
        find_program(cfg->bwrap, sizeof(cfg->bwrap), json_string_value(v), NULL);
    }
    json_decref(v);

    key_path(path, sizeof(path), prefix, "read_only");
    v = port_config_get(ctx, path);
    if (v != NULL && !json_is_null(v)) {
        size_t i;
        json_t *a;
        int ok = json_is_array(v) && json_array_size(v) <= SANDBOX_MAX_READ_ONLY;
        json_array_foreach(v, i, a) ok = ok && json_is_string(a) &&
                                         strlen(json_string_value(a)) == json_string_length(a) &&
                                         clean_abs_path(json_string_value(a));
        if (!ok) {
            cmd_error_set(err, "bad_config",
                          "%s must be an array of at most %d absolute paths (not \"/\", no "
                          "\".\" or \"..\")",
                          path, SANDBOX_MAX_READ_ONLY);
            json_decref(v);
            return -1;
        }
        cfg->read_only = v;
    } else {
        json_decref(v);
    }

    if (load_int(ctx, prefix, "cpu_s", 900, 1, 7 * 86400, &cfg->cpu_s, err) != 0 ||
        load_int(ctx, prefix, "memory_mb", 4096, 16, 1LL << 30, &cfg->memory_mb, err) != 0 ||
        load_int(ctx, prefix, "processes", 256, 8, 1 << 22, &cfg->processes, err) != 0 ||
        load_int(ctx, prefix, "file_mb", 256, 1, 1LL << 30, &cfg->file_mb, err) != 0 ||
        load_int(ctx, prefix, "tmp_mb", 512, 1, 1LL << 30, &cfg->tmp_mb, err) != 0 ||
        load_int(ctx, prefix, "open_files", 1024, 64, 1 << 20, &cfg->open_files, err) != 0 ||
        load_int(ctx, prefix, "uid", 65534, 1, 4294967294LL, &cfg->uid, err) != 0 ||
        load_int(ctx, prefix, "gid", 65534, 1, 4294967294LL, &cfg->gid, err) != 0) {
        sandbox_config_free(cfg);
        return -1;
    }
    return 0;
}

void sandbox_config_free(sandbox_config *cfg)
{
    if (cfg == NULL)
        return;
    json_decref(cfg->read_only);
    cfg->read_only = NULL;
}

/* ---------------------------------------------------------------- probe cache */

typedef struct probe_entry {
    char bwrap[4096];
    uid_t uid;
    gid_t gid;
} probe_entry;

static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
static probe_entry probe_ok[PROBE_CACHE]; /* successful probes */
static size_t probe_ok_n;
static char no_disable_userns[PROBE_CACHE][4096]; /* bwraps without --disable-userns */
static size_t no_disable_userns_n;

static int disable_userns_known_bad(const char *bwrap)
{
    int bad = 0;
    pthread_mutex_lock(&probe_lock);
    for (size_t i = 0; i < no_disable_userns_n && !bad; i++)
        bad = strcmp(no_disable_userns[i], bwrap) == 0;
    pthread_mutex_unlock(&probe_lock);
    return bad;
}

/* ---------------------------------------------------------------- building */

typedef struct vec {
    char **v;
    size_t n, cap;
    int oom;
} vec;

static void push(vec *a, const char *s)
{
    if (a->oom)
        return;
    if (a->n + 2 > a->cap) {
        size_t cap = a->cap != 0 ? a->cap * 2 : 64;
        char **v = realloc(a->v, cap * sizeof(*v));
        if (v == NULL) {
            a->oom = 1;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    char *copy = strdup(s);
    if (copy == NULL) {
        a->oom = 1;
        return;
    }
    a->v[a->n++] = copy;
    a->v[a->n] = NULL;
}

static void push2(vec *a, const char *x, const char *y)
{
    push(a, x);
    push(a, y);
}

static void push3(vec *a, const char *x, const char *y, const char *z)
{
    push(a, x);
    push(a, y);
    push(a, z);
}

static void vec_free(vec *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    memset(a, 0, sizeof(*a));
}

static void strv_free(char **v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

/* A NULL-terminated copy (an empty vector for NULL). */
static char **strv_copy(char *const *in, vec *a)
{
    for (size_t i = 0; in != NULL && in[i] != NULL; i++)
        push(a, in[i]);
    if (a->v == NULL && !a->oom) {
        a->v = calloc(1, sizeof(char *));
        a->oom = a->v == NULL;
    }
    return a->oom ? NULL : a->v;
}

/* 1 when path is base or below it. */
static int under(const char *path, const char *base)
{
    size_t n = strlen(base);
    while (n > 1 && base[n - 1] == '/')
        n--;
    return strncmp(path, base, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static int in_system_dirs(const char *path)
{
    if (under(path, "/usr") || under(path, "/etc"))
        return 1;
    for (size_t i = 0; top_dirs[i] != NULL; i++)
        if (under(path, top_dirs[i]))
            return 1;
    return 0;
}

/* Whether uid/gid (no supplementary groups) may search directory st. */
static int may_search(const struct stat *st, uid_t uid, gid_t gid)
{
    if (st->st_uid == uid)
        return (st->st_mode & S_IXUSR) != 0;
    if (st->st_gid == gid)
        return (st->st_mode & S_IXGRP) != 0;
    return (st->st_mode & S_IXOTH) != 0;
}

/* bwrap resolves a bound descriptor to its path, as the user it runs as:
 * when that is the sandbox uid, every parent must be searchable for it. */
static int check_reach(int fd, const char *shown, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    char link[64], real[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, real, sizeof(real) - 1);
    if (n <= 0) {
        sh_errf(err, errlen, "cannot resolve %.200s: %s", shown, strerror(errno));
        return -1;
    }
    real[n] = '\0';
    for (char *slash = strchr(real + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        struct stat st;
        int ok = stat(real, &st) == 0 && may_search(&st, uid, gid);
        if (!ok) {
            sh_errf(err, errlen,
                    "the sandbox user (uid %ld) cannot reach %.200s: %.200s is not searchable for "
                    "it (bwrap resolves bound paths as that user; mode 0711 is enough)",
                    (long)uid, shown, real);
            return -1;
        }
        *slash = '/';
    }
    struct stat top;
    if (stat("/", &top) != 0 || !may_search(&top, uid, gid)) {
        sh_errf(err, errlen, "the sandbox user (uid %ld) cannot search /", (long)uid);
        return -1;
    }
    return 0;
}

typedef struct build {
    sandbox_cmd *out;
    vec argv;
    int check;
    uid_t uid;
    gid_t gid;
    char *err;
    size_t errlen;
} build;

/* Opens host (O_PATH) for binding; pushes "opt FD inside". */
static int bind_fd(build *b, const char *opt, const char *host, const char *inside, int directory)
{
    if (b->out->nfds >= SANDBOX_MAX_FDS) {
        sh_errf(b->err, b->errlen, "too many paths to bind (at most %d)", SANDBOX_MAX_FDS);
        return -1;
    }
    int fd = open(host, O_PATH | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
    if (fd < 0) {
        sh_errf(b->err, b->errlen, "cannot open %.200s: %s", host, strerror(errno));
        return -1;
    }
    b->out->fds[b->out->nfds++] = fd;
    if (b->check && check_reach(fd, host, b->uid, b->gid, b->err, b->errlen) != 0)
        return -1;
    char num[16];
    snprintf(num, sizeof(num), "%zu", 3 + b->out->nfds - 1);
    push3(&b->argv, opt, num, inside);
    return 0;
}

/* The tasks (processes and threads) whose real uid is uid, from /proc. */
static long long count_tasks(uid_t uid)
{
    long long total = 0;
    DIR *d = opendir("/proc");
    if (d == NULL)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], line[256];
        snprintf(path, sizeof(path), "/proc/%s/status", e->d_name);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        long long threads = 0;
        unsigned long real = ~0UL;
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strncmp(line, "Uid:", 4) == 0)
                sscanf(line + 4, "%lu", &real);
            else if (strncmp(line, "Threads:", 8) == 0)
                sscanf(line + 8, "%lld", &threads);
        }
        fclose(f);
        if (real == (unsigned long)uid)
            total += threads > 0 ? threads : 1;
    }
    closedir(d);
    return total;
}

/* envp without HOME, TMPDIR and PWD (host paths, meaningless inside),
 * then the sandbox's HOME and TMPDIR. */
static char **sandbox_env(char *const *envp)
{
    vec e = {0};
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++)
        if (strncmp(envp[i], "HOME=", 5) != 0 && strncmp(envp[i], "TMPDIR=", 7) != 0 &&
            strncmp(envp[i], "PWD=", 4) != 0)
            push(&e, envp[i]);
    push2(&e, "HOME=" SANDBOX_HOME, "TMPDIR=/tmp");
    if (e.oom) {
        vec_free(&e);
        return NULL;
    }
    return e.v;
}

int sandbox_cmd_build(sandbox_cmd *out, const sandbox_config *cfg, const sandbox_run *run,
                      char *const *cmd, char *const *envp, char *err, size_t errlen)
{
    if (out == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    out->info_fd = -1;
    if (cfg == NULL || run == NULL || run->dir == NULL || cmd == NULL || cmd[0] == NULL ||
        cmd[0][0] == '\0') {
        sh_errf(err, errlen, "sandbox: no command, configuration or directory");
        return -1;
    }
    if (cfg->mode == SANDBOX_NONE) {
        vec a = {0}, e = {0};
        out->argv = strv_copy(cmd, &a);
        out->envp = strv_copy(envp, &e);
        if (out->argv == NULL || out->envp == NULL) {
            vec_free(&a);
            vec_free(&e);
            memset(out, 0, sizeof(*out));
            out->info_fd = -1;
            sh_errf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }

    build b = {.out = out, .err = err, .errlen = errlen};
    const char *inside = run->dir_inside != NULL ? run->dir_inside : run->dir;
    char size[32];
    struct stat st;

    if (strchr(cfg->bwrap, '/') == NULL || stat(cfg->bwrap, &st) != 0 || !S_ISREG(st.st_mode) ||
        access(cfg->bwrap, X_OK) != 0) {
        sh_errf(err, errlen,
                "bwrap not found: %.200s (install bubblewrap, or set the sandbox mode to "
                "\"none\")",
                cfg->bwrap);
        return -1;
    }
    if (!clean_abs_path(inside)) {
        sh_errf(err, errlen, "sandbox: inside path %.200s is not a clean absolute path (not /)",
                inside);
        return -1;
    }
    for (size_t i = 0; i < run->nfiles; i++) {
        if (run->files == NULL || run->files[i].host == NULL ||
            !clean_abs_path(run->files[i].inside)) {
            sh_errf(err, errlen, "sandbox: file %zu needs a host path and a clean inside path", i);
            return -1;
        }
    }
    if (geteuid() == 0) {
        if (cfg->uid <= 0 || cfg->gid <= 0 || cfg->uid > 4294967294LL || cfg->gid > 4294967294LL) {
            sh_errf(err, errlen, "sandbox: uid and gid must be set and not 0");
            return -1;
        }
        b.check = 1;
        b.uid = (uid_t)cfg->uid;
        b.gid = (gid_t)cfg->gid;
        out->limits.drop_uid = 1;
        out->limits.uid = b.uid;
        out->limits.gid = b.gid;
        /* RLIMIT_NPROC counts every process of the uid, the sandbox's
         * own included, which is the sandbox uid alone. */
        out->limits.nproc = cfg->processes;
    } else {
        out->limits.nproc = count_tasks(getuid()) + cfg->processes;
    }
    out->limits.set = 1;
    out->limits.cpu_s = cfg->cpu_s;
    out->limits.data_bytes = cfg->memory_mb * MIB;
    out->limits.fsize_bytes = cfg->file_mb * MIB;
    out->limits.nofile = cfg->open_files;
    out->limits.core_off = 1;
    snprintf(size, sizeof(size), "%lld", cfg->tmp_mb * MIB);

    vec *a = &b.argv;
    push(a, cfg->bwrap);
    push2(a, "--unshare-all", "--unshare-user");
    if (!disable_userns_known_bad(cfg->bwrap))
        push(a, "--disable-userns");
    if (run->network)
        push(a, "--share-net");
    push3(a, "--die-with-parent", "--new-session", "--hostname");
    push(a, "sandbox");
    push2(a, "--proc", "/proc");
    push2(a, "--dev", "/dev");
    push2(a, "--size", size);
    push2(a, "--tmpfs", "/dev/shm");
    push3(a, "--ro-bind", "/usr", "/usr");
    for (size_t i = 0; top_dirs[i] != NULL; i++) {
        if (lstat(top_dirs[i], &st) != 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlink(top_dirs[i], target, sizeof(target) - 1);
            if (n <= 0)
                continue;
            target[n] = '\0';
            push3(a, "--symlink", target, top_dirs[i]);
        } else if (S_ISDIR(st.st_mode)) {
            push3(a, "--ro-bind", top_dirs[i], top_dirs[i]);
        }
    }
    for (int net = 0; net <= run->network; net++) {
        const char *const *list = net ? etc_net_files : etc_files;
        for (size_t i = 0; list[i] != NULL; i++)
            if (stat(list[i], &st) == 0)
                push3(a, "--ro-bind", list[i], list[i]);
    }
    push2(a, "--size", size);
    push2(a, "--tmpfs", "/tmp");
    push2(a, "--size", size);
    push2(a, "--tmpfs", SANDBOX_HOME);

    if (bind_fd(&b, "--bind-fd", run->dir, inside, 1) != 0)
        goto fail;
    for (size_t i = 0; i < run->nfiles; i++)
        if (bind_fd(&b, "--ro-bind-fd", run->files[i].host, run->files[i].inside, 0) != 0)
            goto fail;
    size_t nro = json_is_array(cfg->read_only) ? json_array_size(cfg->read_only) : 0;
    int cmd_covered = cmd[0][0] != '/' || in_system_dirs(cmd[0]) || under(cmd[0], inside);
    for (size_t i = 0; i < nro; i++) {
        const char *p = json_string_value(json_array_get(cfg->read_only, i));
        if (p == NULL || !clean_abs_path(p)) {
            sh_errf(err, errlen, "sandbox: read_only entry %zu is not a clean absolute path", i);
            goto fail;
        }
        if (bind_fd(&b, "--ro-bind-fd", p, p, 0) != 0)
            goto fail;
        cmd_covered = cmd_covered || under(cmd[0], p);
    }
    if (!cmd_covered && bind_fd(&b, "--ro-bind-fd", cmd[0], cmd[0], 0) != 0)
        goto fail;

    /* bwrap reports the sandbox's init here (sandbox_watch). */
    int info[2];
    if (out->nfds >= SANDBOX_MAX_FDS || pipe2(info, O_CLOEXEC) != 0) {
        sh_errf(err, errlen, "sandbox: no descriptor for bwrap's report");
        goto fail;
    }
    fcntl(info[0], F_SETFL, O_NONBLOCK);
    out->info_fd = info[0];
    out->fds[out->nfds++] = info[1];
    char num[16];
    snprintf(num, sizeof(num), "%zu", 3 + out->nfds - 1);
    push2(a, "--info-fd", num);

    push2(a, "--remount-ro", "/dev");
    push2(a, "--remount-ro", "/");
    push2(a, "--chdir", inside);
    push(a, "--");
    /* bwrap sets PWD for the command; env takes it out again, so the
     * command gets exactly envp plus HOME and TMPDIR. */
    if (stat(ENV_PROGRAM, &st) == 0 && S_ISREG(st.st_mode))
        push3(a, ENV_PROGRAM, "-u", "PWD");
    for (size_t i = 0; cmd[i] != NULL; i++)
        push(a, cmd[i]);
    out->envp = sandbox_env(envp);
    if (a->oom || out->envp == NULL) {
        sh_errf(err, errlen, "out of memory");
        goto fail;
    }
    out->argv = a->v;
    return 0;

fail:
    vec_free(&b.argv);
    sandbox_cmd_free(out);
    return -1;
}

void sandbox_cmd_free(sandbox_cmd *c)
{
    if (c == NULL)
        return;
    strv_free(c->argv);
    strv_free(c->envp);
    for (size_t i = 0; i < c->nfds; i++)
        if (c->fds[i] >= 0)
            close(c->fds[i]);
    if (c->info_fd >= 0)
        close(c->info_fd);
    memset(c, 0, sizeof(*c));
    c->info_fd = -1;
}

/* ---------------------------------------------------------------- probe */

/* The first line of a file, for error messages. */
static void first_line(const char *path, char *out, size_t len)
{
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    if (fgets(out, (int)len, f) == NULL)
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
}

/* One probe run. 0, 1 when bwrap refused --disable-userns, -1 else. */
static int probe_once(const sandbox_config *cfg, const char *base, char *err, size_t errlen)
{
    char work[PATH_MAX], errfile[PATH_MAX], line[512];
    snprintf(work, sizeof(work), "%s/work", base);
    snprintf(errfile, sizeof(errfile), "%s/bwrap.err", base);
    if (mkdir(work, 0700) != 0 && errno != EEXIST) {
        sh_errf(err, errlen, "sandbox probe: cannot create %.200s: %s", work, strerror(errno));
        return -1;
    }
    if (sandbox_own(cfg, work, err, errlen) != 0)
        return -1;
    char *cmd[] = {"true", NULL};
    char *env[] = {"PATH=/usr/bin:/bin", NULL};
    sandbox_run run = {.dir = work, .dir_inside = "/work"};
    sandbox_cmd sc;
    if (sandbox_cmd_build(&sc, cfg, &run, cmd, env, err, errlen) != 0)
        return -1;
    proc_spec ps = {.argv = (const char *const *)sc.argv,
                    .envp = (const char *const *)sc.envp,
                    .cwd = "/",
                    .stderr_path = errfile,
                    .limits = &sc.limits,
                    .pass_fds = sc.fds,
                    .npass_fds = sc.nfds};
    pid_t pid = 0;
    char why[256];
    int rc = proc_spawn(&pid, &ps, why, sizeof(why));
    int used_flag = 0;
    for (size_t i = 0; sc.argv[i] != NULL; i++)
        used_flag = used_flag || strcmp(sc.argv[i], "--disable-userns") == 0;
    sandbox_watch watch;
    sandbox_watch_start(&watch, rc == 0 ? &sc : NULL);
    sandbox_cmd_free(&sc);
    if (rc != 0) {
        sh_errf(err, errlen, "sandbox probe: %s", why);
        return -1;
    }
    int status = 0;
    int w = proc_wait(&status, pid, PROBE_TIMEOUT_MS);
    if (w == 1) {
        proc_kill(pid, SIGKILL);
        proc_wait(&status, pid, -1);
    }
    sandbox_watch_end(&watch, PROBE_TIMEOUT_MS);
    if (w == 1) {
        sh_errf(err, errlen, "sandbox probe: bwrap did not finish within %d s",
                PROBE_TIMEOUT_MS / 1000);
        return -1;
    }
    if (w != 0) {
        sh_errf(err, errlen, "sandbox probe: lost track of bwrap");
        return -1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    first_line(errfile, line, sizeof(line));
    if (used_flag && strstr(line, "disable-userns") != NULL)
        return 1;
    if (WIFSIGNALED(status))
        sh_errf(err, errlen, "sandbox probe: bwrap killed by signal %d", WTERMSIG(status));
    else
        sh_errf(err, errlen, "sandbox probe: bwrap cannot set up the sandbox (exit %d): %s",
                WEXITSTATUS(status), line[0] != '\0' ? line : "no message");
    return -1;
}

int sandbox_probe(const sandbox_config *cfg, char *err, size_t errlen)
{
    if (cfg == NULL) {
        sh_errf(err, errlen, "sandbox probe: no configuration");
        return -1;
    }
    if (cfg->mode == SANDBOX_NONE)
        return 0;
    uid_t uid = geteuid() == 0 ? (uid_t)cfg->uid : getuid();
    gid_t gid = geteuid() == 0 ? (gid_t)cfg->gid : getgid();
    pthread_mutex_lock(&probe_lock);
    int cached = 0;
    for (size_t i = 0; i < probe_ok_n && !cached; i++)
        cached = probe_ok[i].uid == uid && probe_ok[i].gid == gid &&
                 strcmp(probe_ok[i].bwrap, cfg->bwrap) == 0;
    pthread_mutex_unlock(&probe_lock);
    if (cached)
        return 0;

    const char *tmp = getenv("TMPDIR");
    char base[PATH_MAX / 2];
    if (tmp == NULL || tmp[0] != '/' ||
        (size_t)snprintf(base, sizeof(base), "%s/self_heal_sandbox_probe_XXXXXX", tmp) >=
            sizeof(base) - 32)
        snprintf(base, sizeof(base), "/tmp/self_heal_sandbox_probe_XXXXXX");
    if (mkdtemp(base) == NULL) {
        sh_errf(err, errlen, "sandbox probe: cannot create a directory: %s", strerror(errno));
        return -1;
    }
    /* The sandbox user must reach base/work (see sandbox_cmd_build). */
    chmod(base, 0711);
    int rc = probe_once(cfg, base, err, errlen);
    if (rc == 1) {
        pthread_mutex_lock(&probe_lock);
        if (no_disable_userns_n < PROBE_CACHE)
            snprintf(no_disable_userns[no_disable_userns_n++], sizeof(no_disable_userns[0]), "%s",
                     cfg->bwrap);
        pthread_mutex_unlock(&probe_lock);
        rc = probe_once(cfg, base, err, errlen);
        if (rc == 1) {
            sh_errf(err, errlen, "sandbox probe: bwrap refuses --disable-userns");
            rc = -1;
        }
    }
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/bwrap.err", base);
    unlink(path);
    snprintf(path, sizeof(path), "%s/work", base);
    rmdir(path);
    rmdir(base);
    if (rc == 0) {
        pthread_mutex_lock(&probe_lock);
        if (probe_ok_n < PROBE_CACHE) {
            probe_entry *e = &probe_ok[probe_ok_n++];
            snprintf(e->bwrap, sizeof(e->bwrap), "%s", cfg->bwrap);
            e->uid = uid;
            e->gid = gid;
        }
        pthread_mutex_unlock(&probe_lock);
    }
    return rc;
}

/* ---------------------------------------------------------------- ownership */

typedef struct own_walk {
    dev_t dev;
    uid_t uid;
    gid_t gid;
    const char *root;
    char *err;
    size_t errlen;
} own_walk;

static int own_dir(own_walk *w, int dfd, int depth)
{
    if (depth > OWN_MAX_DEPTH) {
        sh_errf(w->err, w->errlen, "%.200s: deeper than %d levels", w->root, OWN_MAX_DEPTH);
        return -1;
    }
    int copy = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    DIR *d = copy >= 0 ? fdopendir(copy) : NULL;
    if (d == NULL) {
        if (copy >= 0)
            close(copy);
        sh_errf(w->err, w->errlen, "%.200s: cannot list a directory: %s", w->root, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                continue;
            sh_errf(w->err, w->errlen, "%.200s: %s", w->root, strerror(errno));
            rc = -1;
            break;
        }
        if (st.st_dev != w->dev)
            continue; /* another file system mounted here: left alone */
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            struct stat sst;
            if (sub < 0 || fstat(sub, &sst) != 0 || sst.st_ino != st.st_ino ||
                sst.st_dev != st.st_dev) {
                if (sub >= 0)
                    close(sub);
                if (sub < 0 && errno == ENOENT)
                    continue;
                sh_errf(w->err, w->errlen, "%.200s: a directory changed while re-owning it",
                        w->root);
                rc = -1;
                break;
            }
            rc = own_dir(w, sub, depth + 1);
            if (rc == 0 && fchown(sub, w->uid, w->gid) != 0) {
                sh_errf(w->err, w->errlen, "%.200s: chown: %s", w->root, strerror(errno));
                rc = -1;
            }
            close(sub);
        } else {
            /* A hard link could be a file elsewhere on this file system. */
            if (st.st_nlink > 1 && !(st.st_uid == w->uid && st.st_gid == w->gid))
                continue;
            if (fchownat(dfd, name, w->uid, w->gid, AT_SYMLINK_NOFOLLOW) != 0 && errno != ENOENT) {
                sh_errf(w->err, w->errlen, "%.200s: chown: %s", w->root, strerror(errno));
                rc = -1;
            }
        }
    }
    closedir(d);
    return rc;
}

int sandbox_own(const sandbox_config *cfg, const char *dir, char *err, size_t errlen)
{
    if (cfg == NULL || dir == NULL) {
        sh_errf(err, errlen, "sandbox_own: no configuration or directory");
        return -1;
    }
    if (cfg->mode == SANDBOX_NONE || geteuid() != 0)
        return 0;
    if (cfg->uid <= 0 || cfg->gid <= 0) {
        sh_errf(err, errlen, "sandbox: uid and gid must be set and not 0");
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        sh_errf(err, errlen, "cannot open %.200s: %s", dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    own_walk w = {st.st_dev, (uid_t)cfg->uid, (gid_t)cfg->gid, dir, err, errlen};
    int rc = own_dir(&w, fd, 1);
    if (rc == 0 && fchown(fd, w.uid, w.gid) != 0) {
        sh_errf(err, errlen, "%.200s: chown: %s", dir, strerror(errno));
        rc = -1;
    }
    close(fd);
    return rc;
}

/* ---------------------------------------------------------------- the sandbox's end */

void sandbox_watch_start(sandbox_watch *w, sandbox_cmd *c)
{
    memset(w, 0, sizeof(*w));
    w->pidfd = -1;
    w->info_fd = c != NULL ? c->info_fd : -1;
    if (c != NULL)
        c->info_fd = -1;
}

/* The number after "name": in bwrap's JSON report, or -1. */
static long long info_number(const char *buf, const char *name)
{
    const char *p = strstr(buf, name);
    if (p == NULL)
        return -1;
    p += strlen(name);
    while (*p == ' ' || *p == ':' || *p == '\t')
        p++;
    char *end = NULL;
    long long v = strtoll(p, &end, 10);
    if (end == p || (*end != ',' && *end != '\n' && *end != '}' && *end != ' '))
        return -1; /* not complete yet */
    return v;
}

static void watch_open_init(sandbox_watch *w)
{
    long long pid = info_number(w->buf, "\"child-pid\"");
    long long ns = info_number(w->buf, "\"pid-namespace\"");
    if (pid <= 0 || ns <= 0 || pid > INT_MAX)
        return; /* bwrap failed before it made the sandbox */
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
#else
    int fd = -1;
#endif
    if (fd < 0)
        return; /* gone already (or no pidfds here) */
    /* Opened after the pid was read: make sure it is still the sandbox's
     * init, not a process that got its pid since. A zombie has no
     * namespaces to show, and is as good as gone. */
    char path[64], link[64], want[64];
    snprintf(path, sizeof(path), "/proc/%lld/ns/pid", pid);
    snprintf(want, sizeof(want), "pid:[%lld]", ns);
    ssize_t n = readlink(path, link, sizeof(link) - 1);
    if (n > 0) {
        link[n] = '\0';
        if (strcmp(link, want) != 0) {
            close(fd);
            return;
        }
    }
    w->pidfd = fd;
}

void sandbox_watch_poll(sandbox_watch *w)
{
    if (w == NULL || w->info_fd < 0)
        return;
    int end = 0;
    for (;;) {
        char spill[256];
        int full = w->len >= sizeof(w->buf) - 1; /* more than a report: read and drop */
        ssize_t n = full ? read(w->info_fd, spill, sizeof(spill))
                         : read(w->info_fd, w->buf + w->len, sizeof(w->buf) - 1 - w->len);
        if (n > 0) {
            if (!full)
                w->len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        end = n == 0; /* bwrap closed it (or exited); else nothing more yet */
        break;
    }
    w->buf[w->len] = '\0';
    if (!w->parsed && (end || strchr(w->buf, '}') != NULL)) {
        w->parsed = 1;
        watch_open_init(w);
    }
    if (end) {
        close(w->info_fd);
        w->info_fd = -1;
    }
}

int sandbox_watch_end(sandbox_watch *w, int timeout_ms)
{
    if (w == NULL)
        return 0;
    sandbox_watch_poll(w); /* bwrap is gone: its whole report is there */
    if (w->info_fd >= 0) {
        close(w->info_fd);
        w->info_fd = -1;
    }
    if (!w->parsed) {
        w->parsed = 1;
        watch_open_init(w);
    }
    int rc = 0;
    if (w->pidfd >= 0) {
        struct pollfd p = {.fd = w->pidfd, .events = POLLIN};
        int r;
        do
            r = poll(&p, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        rc = r > 0 ? 0 : -1;
        close(w->pidfd);
        w->pidfd = -1;
    }
    return rc;
}
