/*
 * The port's watchdog (watchdog.h).
 */
#define _GNU_SOURCE /* pipe2 */

#include "watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"

#define SWEEP_MS 10000      /* killing what the server left; then the watchdog exits anyway */
#define LEFT_BEHIND_MS 2000 /* killing what an earlier run left, at start */
#define LEFT_BEHIND_DELAY_MS 200
#define STEP_MS 10
#define FREEZE_MS 1000 /* stopping the descendants when the watchdog is gone */

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP};
#define NFORWARDED (sizeof(forwarded) / sizeof(forwarded[0]))

static volatile sig_atomic_t server_pid;

static void forward(int sig)
{
    int saved = errno;
    if (server_pid > 0)
        kill((pid_t)server_pid, sig);
    errno = saved;
}

static void set_forwarded(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    /* no SA_RESTART: the wait for the server returns EINTR and goes on; a
     * restarted wait would keep ThreadSanitizer's runtime, which runs
     * handlers when a call returns, from ever forwarding the signal */
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NFORWARDED; i++)
        sigaction(forwarded[i], &sa, NULL);
}

/* Ends the watchdog the way the server ended. */
static void exit_as(int status)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none); /* the server's crash is not the watchdog's core */
        signal(sig, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        sigprocmask(SIG_UNBLOCK, &one, NULL);
        kill(getpid(), sig);
        _exit(128 + sig);
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

static void watchdog_run(pid_t server, int write_end)
{
    /* The BEAM's pipes are the server's alone: the BEAM sees end of file
     * when the server is gone, not when the watchdog is. */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        close(null);
    }
    server_pid = server;
    set_forwarded(forward);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Once the server is up (not competing with its start for the CPU), or
     * has ended already: what an earlier run killed whole left behind. */
    int status = 0, ended = 0;
    for (int waited = 0; waited < LEFT_BEHIND_DELAY_MS && !ended; waited += STEP_MS) {
        struct timespec step = {0, STEP_MS * 1000000L};
        nanosleep(&step, NULL);
        ended = waitpid(server, &status, WNOHANG) == server;
    }
    long left = proc_kill_left_behind(LEFT_BEHIND_MS);
    if (left > 0)
        fprintf(stderr, "self_heal_port: killed %ld processes an earlier run left behind\n", left);

    while (!ended && waitpid(server, &status, 0) < 0) {
        if (errno != EINTR) {
            status = 1 << 8; /* cannot happen: the server is our child */
            break;
        }
    }
    server_pid = 0;
    set_forwarded(SIG_IGN);
    /* Everything the server started is ours now (subreaper): kill and
     * reap all of it, whatever its session or process group. */
    proc_kill_descendants(SWEEP_MS);
    close(write_end);
    exit_as(status);
}

int watchdog_split(int *watch_fd, pid_t *watchdog)
{
    *watch_fd = -1;
    *watchdog = 0;
    pid_t self = getpid();
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    if (proc_become_subreaper() != 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    /* Held until the watchdog's handlers are in place (a signal then is
     * forwarded, not lost); the server unblocks at once. */
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t i = 0; i < NFORWARDED; i++)
        sigaddset(&block, forwarded[i]);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t pid = fork();
    if (pid < 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid > 0) {
        close(p[0]);
        watchdog_run(pid, p[1]); /* never returns */
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(p[1]);
    *watch_fd = p[0];
    *watchdog = self;
    return 0;
}

int watchdog_gone(int watch_fd)
{
    char b;
    ssize_t n;
    do
        n = read(watch_fd, &b, 1);
    while (n < 0 && errno == EINTR);
    return n <= 0 && !(n < 0 && errno == EAGAIN);
}

void watchdog_lost(void)
{
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0)
        dup2(null, STDOUT_FILENO);
    proc_set_spawn_allowed(0);
    proc_freeze_descendants(FREEZE_MS);
    proc_signal_descendants(SIGKILL);
    _exit(1);
}
