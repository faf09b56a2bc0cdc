/*
 * Child processes in their own process groups, and the registry of live
 * groups that shutdown kills (proc.h).
 */
#define _GNU_SOURCE /* pipe2, close_range, waitid's WNOWAIT, environ, syscall */

#include "proc.h"

#include "ctx.h"
#include "ptree.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define WAIT_STEP_MS 20
#define FD_SCAN_MAX 65536
#define SWEEP_STEP_MS 5
#define RUN_VAR "SELF_HEAL_PORT_RUN"
#define RUN_MARKER_MAX 96

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_changed;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static pid_t reg_pids[PROC_MAX_LIVE];
static size_t reg_count;
static int spawn_refused;
static char run_marker[RUN_MARKER_MAX]; /* "SELF_HEAL_PORT_RUN=pid:start", or "" */

static void reg_init(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&reg_changed, &attr);
    pthread_condattr_destroy(&attr);
}

/* Callers hold reg_lock. */
static int reg_find(pid_t pid)
{
    for (size_t i = 0; i < reg_count; i++)
        if (reg_pids[i] == pid)
            return (int)i;
    return -1;
}

static void reg_remove(pid_t pid)
{
    pthread_mutex_lock(&reg_lock);
    int i = reg_find(pid);
    if (i >= 0)
        reg_pids[i] = reg_pids[--reg_count];
    pthread_mutex_unlock(&reg_lock);
}

void proc_set_spawn_allowed(int allowed)
{
    pthread_mutex_lock(&reg_lock);
    spawn_refused = !allowed;
    pthread_mutex_unlock(&reg_lock);
}

void proc_on_sigchld(void)
{
    pthread_once(&reg_once, reg_init);
    pthread_mutex_lock(&reg_lock);
    pthread_cond_broadcast(&reg_changed);
    pthread_mutex_unlock(&reg_lock);
}

/* ------------------------------------------------------------ spawning */

static const char *env_lookup(const char *const *envp, const char *name)
{
    if (envp == NULL)
        return getenv(name);
    size_t n = strlen(name);
    for (size_t i = 0; envp[i] != NULL; i++)
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=')
            return envp[i] + n + 1;
    return NULL;
}

/* The program to execute: argv[0] itself when it has a slash, else the
 * first executable regular file of that name in PATH. */
static int resolve_program(char *out, size_t outlen, const char *name, const char *const *envp)
{
    if (strchr(name, '/') != NULL) {
        if ((size_t)snprintf(out, outlen, "%s", name) >= outlen)
            return -1;
        return 0;
    }
    const char *path = env_lookup(envp, "PATH");
    if (path == NULL || path[0] == '\0')
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path != '\0') {
        const char *colon = strchr(path, ':');
        size_t dirlen = colon != NULL ? (size_t)(colon - path) : strlen(path);
        int n = dirlen == 0 ? snprintf(out, outlen, "./%s", name)
                            : snprintf(out, outlen, "%.*s/%s", (int)dirlen, path, name);
        struct stat st;
        if (n > 0 && (size_t)n < outlen && stat(out, &st) == 0 && S_ISREG(st.st_mode) &&
            access(out, X_OK) == 0)
            return 0;
        path += dirlen;
        if (*path == ':')
            path++;
    }
    return -1;
}

static int open_output(const char *path)
{
    if (path == NULL)
        return open("/dev/null", O_WRONLY | O_CLOEXEC);
    return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
}

#define CHILD_MAX_RLIMITS 8

typedef struct child_rlimit {
    int resource;
    struct rlimit value;
} child_rlimit;

typedef struct child_setup {
    const char *program;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int fd_in, fd_out, fd_err; /* opened by the parent, close-on-exec */
    int report;                /* write end of the exec-error pipe */
    pid_t parent;
    int fd_limit;
    const int *pass_fds; /* become 3, 4, ... */
    int npass;
    int drop_uid;
    uid_t uid;
    gid_t gid;
    child_rlimit rl[CHILD_MAX_RLIMITS]; /* computed by the parent */
    int nrl;
} child_setup;

/* Raw system calls for the identity: they change the calling thread only,
 * which in the forked child is the whole process, without the library's
 * all-threads machinery (locks another thread may have held at fork). */
static int raw_drop_identity(uid_t uid, gid_t gid)
{
#if defined(SYS_setgroups32)
    long groups = SYS_setgroups32, setgid_nr = SYS_setgid32, setuid_nr = SYS_setuid32;
#else
    long groups = SYS_setgroups, setgid_nr = SYS_setgid, setuid_nr = SYS_setuid;
#endif
    if (syscall(groups, 0, NULL) != 0 || syscall(setgid_nr, gid) != 0 ||
        syscall(setuid_nr, uid) != 0)
        return -1;
    return 0;
}

/* What failed in the child, reported to the parent with errno. */
enum { STAGE_EXEC, STAGE_IDENTITY, STAGE_FDS, STAGE_LIMITS, STAGE_CWD };

static void child_fail(int report, int stage)
{
    int msg[2] = {stage, errno};
    ssize_t w = write(report, msg, sizeof(msg));
    (void)w;
    _exit(127);
}

/* Runs in the child between fork and exec: async-signal-safe calls only. */
static void child_exec(const child_setup *cs)
{
    int report = cs->report;
    setpgid(0, 0);
    if (cs->drop_uid && raw_drop_identity(cs->uid, cs->gid) != 0)
        child_fail(report, STAGE_IDENTITY);
#ifdef __linux__
    /* After the identity change, which clears the parent-death signal. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != cs->parent)
        _exit(127); /* the port died before prctl took effect */
#endif
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* Every descriptor involved moves above the targets 0 .. 3+npass-1
     * first (close-on-exec copies), so a source may sit anywhere, the
     * targets and the report pipe included. */
    int first_free = 3 + cs->npass;
    int high_report = fcntl(report, F_DUPFD_CLOEXEC, first_free);
    if (high_report < 0)
        child_fail(report, STAGE_FDS);
    report = high_report;
    int high[3 + PROC_MAX_PASS_FDS];
    const int std[3] = {cs->fd_in, cs->fd_out, cs->fd_err};
    for (int i = 0; i < 3 + cs->npass; i++) {
        high[i] = fcntl(i < 3 ? std[i] : cs->pass_fds[i - 3], F_DUPFD_CLOEXEC, first_free);
        if (high[i] < 0)
            child_fail(report, STAGE_FDS);
    }
    for (int i = 0; i < 3 + cs->npass; i++)
        if (dup2(high[i], i) < 0) /* the copy at i is not close-on-exec */
            child_fail(report, STAGE_FDS);
    /* Nothing else may reach the program (the port's own pipes, sockets
     * and database files included). The report pipe closes on exec. */
    if (close_range((unsigned)first_free, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        for (int fd = first_free; fd < cs->fd_limit; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    /* Limits last: a low RLIMIT_NOFILE must not stop the moves above. */
    for (int i = 0; i < cs->nrl; i++)
        if (setrlimit(cs->rl[i].resource, &cs->rl[i].value) != 0)
            child_fail(report, STAGE_LIMITS);
    if (cs->cwd != NULL && chdir(cs->cwd) != 0)
        child_fail(report, STAGE_CWD);
    execve(cs->program, cs->argv, cs->envp);
    child_fail(report, STAGE_EXEC);
}

/* A limit for the child: value (> 0, or 0 when zero_ok), never above the
 * port's own hard limit, as both soft and hard limit. */
static void add_rlimit(child_setup *cs, int resource, long long value, int zero_ok)
{
    if (value < 0 || (value == 0 && !zero_ok) || cs->nrl >= CHILD_MAX_RLIMITS)
        return;
    rlim_t want = (rlim_t)value;
    struct rlimit cur;
    if (getrlimit(resource, &cur) == 0 && cur.rlim_max != RLIM_INFINITY && want > cur.rlim_max)
        want = cur.rlim_max;
    cs->rl[cs->nrl].resource = resource;
    cs->rl[cs->nrl].value.rlim_cur = want;
    cs->rl[cs->nrl].value.rlim_max = want;
    cs->nrl++;
}

static void prepare_limits(child_setup *cs, const proc_limits *l)
{
    if (l == NULL || !l->set)
        return;
    add_rlimit(cs, RLIMIT_CPU, l->cpu_s, 0);
    add_rlimit(cs, RLIMIT_DATA, l->data_bytes, 0);
    add_rlimit(cs, RLIMIT_FSIZE, l->fsize_bytes, 0);
    add_rlimit(cs, RLIMIT_NPROC, l->nproc, 0);
    add_rlimit(cs, RLIMIT_NOFILE, l->nofile, 0);
    if (l->core_off)
        add_rlimit(cs, RLIMIT_CORE, 0, 1);
    cs->drop_uid = l->drop_uid;
    cs->uid = l->uid;
    cs->gid = l->gid;
}

static int fd_scan_limit(void)
{
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > FD_SCAN_MAX)
        max = FD_SCAN_MAX;
    return (int)max;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* envp with the run marker in place of any marker it had (a malloc'ed
 * vector of envp's own strings), or NULL when out of memory. */
static char **with_run_marker(char *const *envp)
{
    size_t n = 0;
    while (envp[n] != NULL)
        n++;
    char **out = malloc((n + 2) * sizeof(*out));
    if (out == NULL)
        return NULL;
    size_t k = 0, vlen = strlen(RUN_VAR);
    for (size_t i = 0; i < n; i++)
        if (strncmp(envp[i], RUN_VAR, vlen) != 0 || envp[i][vlen] != '=')
            out[k++] = envp[i];
    out[k++] = run_marker;
    out[k] = NULL;
    return out;
}

int proc_spawn(pid_t *pid, const proc_spec *spec, char *err, size_t errlen)
{
    char program[PATH_MAX];
    int report[2] = {-1, -1};
    int fd_in = -1, fd_out = -1, fd_err = -1;
    char **marked_env = NULL;
    int rc = -1;

    pthread_once(&reg_once, reg_init);
    if (spec == NULL || spec->argv == NULL || spec->argv[0] == NULL || spec->argv[0][0] == '\0') {
        snprintf(err, errlen, "empty argv");
        return -1;
    }
    if (spec->npass_fds > PROC_MAX_PASS_FDS || (spec->npass_fds > 0 && spec->pass_fds == NULL)) {
        snprintf(err, errlen, "too many descriptors to pass (at most %d)", PROC_MAX_PASS_FDS);
        return -1;
    }
    for (size_t i = 0; i < spec->npass_fds; i++) {
        if (spec->pass_fds[i] < 0 || fcntl(spec->pass_fds[i], F_GETFD) < 0) {
            snprintf(err, errlen, "descriptor %d to pass is not open", spec->pass_fds[i]);
            return -1;
        }
    }
    if (resolve_program(program, sizeof(program), spec->argv[0], spec->envp) != 0) {
        snprintf(err, errlen, "program not found: %.200s", spec->argv[0]);
        return -1;
    }
    fd_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    fd_out = open_output(spec->stdout_path);
    if (spec->stderr_path != NULL && spec->stdout_path != NULL &&
        strcmp(spec->stderr_path, spec->stdout_path) == 0)
        fd_err = fcntl(fd_out, F_DUPFD_CLOEXEC, 3);
    else
        fd_err = open_output(spec->stderr_path);
    if (fd_in < 0 || fd_out < 0 || fd_err < 0) {
        snprintf(err, errlen, "cannot open the child's output: %s", strerror(errno));
        goto cleanup;
    }
    if (pipe2(report, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto cleanup;
    }

    char *const *envp = spec->envp != NULL ? (char *const *)spec->envp : environ;
    if (run_marker[0] != '\0' && !spec->no_run_marker) {
        marked_env = with_run_marker(envp);
        if (marked_env == NULL) {
            snprintf(err, errlen, "out of memory");
            goto cleanup;
        }
        envp = marked_env;
    }

    child_setup cs = {
        .program = program,
        .argv = (char *const *)spec->argv,
        .envp = envp,
        .cwd = spec->cwd,
        .fd_in = fd_in,
        .fd_out = fd_out,
        .fd_err = fd_err,
        .report = report[1],
        .parent = getpid(),
        .fd_limit = fd_scan_limit(),
        .pass_fds = spec->pass_fds,
        .npass = (int)spec->npass_fds,
    };
    prepare_limits(&cs, spec->limits);

    /* Fork and register under the lock, so proc_kill_all never misses a
     * child that exists. */
    pthread_mutex_lock(&reg_lock);
    if (spawn_refused || reg_count >= PROC_MAX_LIVE) {
        pthread_mutex_unlock(&reg_lock);
        snprintf(err, errlen, spawn_refused ? "shutting down" : "too many child processes");
        goto cleanup;
    }
    pid_t child = fork();
    if (child == 0)
        child_exec(&cs);
    if (child < 0) {
        pthread_mutex_unlock(&reg_lock);
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto cleanup;
    }
    setpgid(child, child); /* also in the parent: no window without a group */
    reg_pids[reg_count++] = child;
    pthread_mutex_unlock(&reg_lock);

    close_fd(&report[1]);
    int failed[2] = {0, 0}; /* stage, errno */
    ssize_t n;
    do
        n = read(report[0], failed, sizeof(failed));
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof(failed)) {
        const char *why = strerror(failed[1]);
        if (failed[0] == STAGE_IDENTITY)
            snprintf(err, errlen, "cannot switch to uid %ld gid %ld: %s", (long)cs.uid,
                     (long)cs.gid, why);
        else if (failed[0] == STAGE_FDS)
            snprintf(err, errlen, "cannot set up the descriptors of %.200s: %s", spec->argv[0],
                     why);
        else if (failed[0] == STAGE_LIMITS)
            snprintf(err, errlen, "cannot set the resource limits of %.200s: %s", spec->argv[0],
                     why);
        else if (failed[0] == STAGE_CWD)
            snprintf(err, errlen, "cannot enter %.200s: %s", spec->cwd, why);
        else
            snprintf(err, errlen, "cannot run %.200s: %s", spec->argv[0], why);
        proc_wait(NULL, child, -1);
        goto cleanup;
    }
    *pid = child;
    rc = 0;

cleanup:
    free(marked_env);
    close_fd(&report[0]);
    close_fd(&report[1]);
    close_fd(&fd_in);
    close_fd(&fd_out);
    close_fd(&fd_err);
    return rc;
}

/* ------------------------------------------------------------ waiting */

static int leader_exited(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0)
        return errno == ECHILD ? -1 : 0;
    return info.si_pid == pid ? 1 : 0;
}

static void wait_changed(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    while (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&reg_lock);
    pthread_cond_timedwait(&reg_changed, &reg_lock, &ts);
    pthread_mutex_unlock(&reg_lock);
}

int proc_wait(int *status, pid_t pid, int timeout_ms)
{
    pthread_once(&reg_once, reg_init);
    pthread_mutex_lock(&reg_lock);
    int known = reg_find(pid) >= 0;
    pthread_mutex_unlock(&reg_lock);
    if (!known)
        return -1;
    long long deadline = timeout_ms >= 0 ? port_now_ms() + timeout_ms : 0;
    for (;;) {
        int exited = leader_exited(pid);
        if (exited < 0) {
            reg_remove(pid); /* reaped elsewhere */
            return -1;
        }
        if (exited) {
            /* The zombie leader still holds the group id: safe to signal. */
            kill(-pid, SIGKILL);
            int st = 0;
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            reg_remove(pid);
            if (status != NULL)
                *status = st;
            return 0;
        }
        int step = WAIT_STEP_MS;
        if (timeout_ms >= 0) {
            long long left = deadline - port_now_ms();
            if (left <= 0)
                return 1;
            if (left < step)
                step = (int)left;
        }
        wait_changed(step);
    }
}

int proc_kill(pid_t pid, int sig)
{
    pthread_mutex_lock(&reg_lock);
    int rc = reg_find(pid) >= 0 ? kill(-pid, sig) : -1;
    pthread_mutex_unlock(&reg_lock);
    return rc == 0 ? 0 : -1;
}

void proc_kill_all(int sig)
{
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < reg_count; i++)
        kill(-reg_pids[i], sig);
    pthread_mutex_unlock(&reg_lock);
}

size_t proc_live_count(void)
{
    size_t live = 0;
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < reg_count; i++)
        if (leader_exited(reg_pids[i]) == 0)
            live++;
    pthread_mutex_unlock(&reg_lock);
    return live;
}

/* ------------------------------------------------------------ descendants */

int proc_become_subreaper(void)
{
#ifdef __linux__
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 ? 0 : -1;
#else
    errno = ENOSYS;
    return -1;
#endif
}

/* Reaps the exited children of this process in t that no proc_wait caller
 * waits for: orphans the kernel handed to the subreaper. A registered
 * child stays for its proc_wait (registration happens under reg_lock
 * together with the fork, and a child leaves the registry only once
 * reaped, so an unregistered zombie child is nobody else's). */
static void reap_unregistered(const ptree *t, pid_t self)
{
    pthread_once(&reg_once, reg_init);
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < t->n; i++) {
        const ptree_proc *p = &t->procs[i];
        if (p->ppid == self && p->state == 'Z' && reg_find(p->pid) < 0)
            waitpid(p->pid, NULL, WNOHANG);
    }
    pthread_mutex_unlock(&reg_lock);
}

/* One snapshot of /proc: sig (0: none) to every live descendant (with
 * stopped, only to those not stopped yet), then the unregistered exited
 * children reaped. Returns how many it counted (live, or live and not
 * stopped), or -1 when /proc could not be read. */
static long sweep(int sig, int stopped)
{
    ptree t;
    if (ptree_read(&t) != 0)
        return -1;
    pid_t self = getpid();
    unsigned char *marks = malloc(t.n + 1);
    long live = -1;
    if (marks != NULL && ptree_descendants(&t, self, marks) != (size_t)-1) {
        live = 0;
        for (size_t i = 0; i < t.n; i++) {
            char st = t.procs[i].state;
            if (!marks[i] || st == 'Z' || st == 'X' || (stopped && (st == 'T' || st == 't')))
                continue;
            live++;
            if (sig > 0)
                kill(t.procs[i].pid, sig);
        }
    }
    reap_unregistered(&t, self);
    free(marks);
    ptree_free(&t);
    return live;
}

void proc_reap_orphans(void)
{
    ptree t;
    if (ptree_read(&t) != 0)
        return;
    reap_unregistered(&t, getpid());
    ptree_free(&t);
}

long proc_signal_descendants(int sig)
{
    return sweep(sig, 0);
}

/* sweep(sig, stopped) until it counts none or timeout_ms passed. */
static long sweep_until_none(int sig, int stopped, int timeout_ms)
{
    long long deadline = port_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        long left = sweep(sig, stopped);
        if (left == 0 || (timeout_ms >= 0 && port_now_ms() >= deadline))
            return left;
        port_sleep_ms(SWEEP_STEP_MS, NULL);
    }
}

long proc_kill_descendants(int timeout_ms)
{
    return sweep_until_none(SIGKILL, 0, timeout_ms);
}

long proc_freeze_descendants(int timeout_ms)
{
    return sweep_until_none(SIGSTOP, 1, timeout_ms);
}

/* ------------------------------------------------------------ run marker */

int proc_mark_children(pid_t owner)
{
    ptree_proc p;
    if (owner == 0) {
        run_marker[0] = '\0';
        return 0;
    }
    if (ptree_stat(owner, &p) != 0)
        return -1;
    snprintf(run_marker, sizeof(run_marker), "%s=%d:%llu", RUN_VAR, (int)owner, p.start);
    return 0;
}

/* 1 when a marker value names a run whose owner is gone (its pid free, a
 * zombie, or a process started at another time), 0 when the owner lives
 * or the value is not a marker. */
static int owner_gone(const ptree *t, const char *value)
{
    char *end = NULL;
    long pid = strtol(value, &end, 10);
    if (end == value || *end != ':' || pid <= 0)
        return 0;
    const char *start_text = end + 1;
    unsigned long long start = strtoull(start_text, &end, 10);
    if (end == start_text || *end != '\0')
        return 0;
    const ptree_proc *owner = ptree_find(t, (pid_t)pid);
    return owner == NULL || owner->state == 'Z' || owner->start != start;
}

/* Marks (1) the processes whose environment holds the marker of a run
 * whose owner is gone, and everything below them; never this process or
 * one of its ancestors. Returns how many live ones were marked. */
static size_t mark_left_behind(const ptree *t, unsigned char *marks)
{
    pid_t self = getpid();
    const char *own = getenv(RUN_VAR); /* a run this process belongs to is not over */
    memset(marks, 0, t->n);
    for (size_t i = 0; i < t->n; i++) {
        char value[RUN_MARKER_MAX];
        if (t->procs[i].pid != self && t->procs[i].state != 'Z' &&
            ptree_environ_get(t->procs[i].pid, RUN_VAR, value, sizeof(value)) == 1 &&
            (own == NULL || strcmp(own, value) != 0) && owner_gone(t, value))
            marks[i] = 1;
    }
    for (int changed = 1; changed;) { /* their descendants, whatever their environment */
        changed = 0;
        for (size_t i = 0; i < t->n; i++) {
            const ptree_proc *up = marks[i] ? NULL : ptree_find(t, t->procs[i].ppid);
            if (up != NULL && marks[up - t->procs]) {
                marks[i] = 1;
                changed = 1;
            }
        }
    }
    for (const ptree_proc *p = ptree_find(t, self); p != NULL; p = ptree_find(t, p->ppid)) {
        marks[p - t->procs] = 0; /* never this process or what started it */
        if (p->ppid == p->pid)
            break;
    }
    size_t live = 0;
    for (size_t i = 0; i < t->n; i++)
        if (marks[i] && t->procs[i].state != 'Z')
            live++;
        else
            marks[i] = 0;
    return live;
}

long proc_kill_left_behind(int timeout_ms)
{
    long long deadline = port_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    long found = -1;
    for (;;) {
        ptree t;
        if (ptree_read(&t) != 0)
            return -1;
        unsigned char *marks = malloc(t.n + 1);
        if (marks == NULL) {
            ptree_free(&t);
            return -1;
        }
        size_t live = mark_left_behind(&t, marks);
        for (size_t i = 0; i < t.n; i++)
            if (marks[i])
                kill(t.procs[i].pid, SIGKILL);
        free(marks);
        ptree_free(&t);
        if (found < 0)
            found = (long)live;
        if (live == 0 || (timeout_ms >= 0 && port_now_ms() >= deadline))
            return found;
        port_sleep_ms(SWEEP_STEP_MS, NULL);
    }
}
