/*
 * What the sandbox costs a command: `true` run N times (default 40)
 * through exec_run, alternating unsandboxed and in the bubblewrap sandbox
 * (default configuration, a fresh writable directory at /work), after two
 * untimed runs of each. Prints
 *   BENCH sandbox_overhead_ms <median sandboxed - median plain, ms>
 *   BENCH sandbox_run_ms <median sandboxed run, ms>
 *   BENCH plain_run_ms <median plain run, ms>
 *   BENCH sandbox_overhead_ratio <median sandboxed / median plain>
 * A run is timed around exec_run: spawn, wait, and (sandboxed) building
 * the bwrap command and waiting for the sandbox's end. A thread wakes
 * waiters at SIGCHLD, as the port's reader thread does.
 *
 *   bench_sandbox [N]
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"
#include "proc.h"
#include "sandbox.h"

#define MAX_RUNS 1000

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* Like the port's reader thread: wakes proc_wait callers at SIGCHLD, so
 * a run is not rounded up to proc_wait's polling step. */
static void *sigchld_thread(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) == 0)
            proc_on_sigchld();
    }
    return NULL;
}

/* One run of `true`; its wall time in ms, or -1 when it failed. */
static double run_once(const sandbox_config *cfg, const sandbox_run *run)
{
    char *argv[] = {"true", NULL};
    char *envp[] = {"PATH=/usr/bin:/bin", NULL};
    exec_spec spec = {.argv = argv, .envp = envp, .timeout_ms = 30000, .sandbox = cfg, .run = run};
    exec_result r;
    char err[512] = "";
    double t0 = now_ms();
    if (exec_run(&r, &spec, err, sizeof(err)) != 0 || !exec_ok(&r)) {
        char desc[128];
        exec_describe(&r, desc, sizeof(desc));
        fprintf(stderr, "bench_sandbox: %s run failed: %s\n", cfg != NULL ? "sandboxed" : "plain",
                err[0] != '\0' ? err : desc);
        return -1;
    }
    return now_ms() - t0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 40;
    if (n < 1 || n > MAX_RUNS) {
        fprintf(stderr, "usage: bench_sandbox [runs, 1..%d]\n", MAX_RUNS);
        return 2;
    }
    static sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &chld, NULL);
    pthread_t waker;
    if (pthread_create(&waker, NULL, sigchld_thread, &chld) != 0) {
        fprintf(stderr, "bench_sandbox: no thread\n");
        return 1;
    }
    pthread_detach(waker);

    /* The defaults: an empty configuration. */
    port_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    pthread_mutex_init(&ctx.lock, NULL);
    ctx.config = json_object();
    sandbox_config cfg;
    cmd_error cerr;
    if (sandbox_config_load(&cfg, &ctx, "sandbox", &cerr) != 0) {
        fprintf(stderr, "bench_sandbox: %s\n", cerr.message);
        return 1;
    }
    json_decref(ctx.config);

    char err[512] = "";
    if (sandbox_probe(&cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_sandbox: %s\n", err);
        return 1;
    }
    char dir[] = "/tmp/self_heal_bench_sandbox_XXXXXX";
    char work[sizeof(dir) + 8];
    if (mkdtemp(dir) == NULL || chmod(dir, 0711) != 0) {
        perror("bench_sandbox: mkdtemp");
        return 1;
    }
    snprintf(work, sizeof(work), "%s/work", dir);
    if (mkdir(work, 0755) != 0 || sandbox_own(&cfg, work, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_sandbox: %s: %s\n", work, err);
        rmdir(dir);
        return 1;
    }
    sandbox_run run = {.dir = work, .dir_inside = "/work"};

    static double plain[MAX_RUNS], boxed[MAX_RUNS];
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++)
        if (run_once(NULL, NULL) < 0 || run_once(&cfg, &run) < 0)
            rc = 1;
    for (int i = 0; i < n && rc == 0; i++) {
        plain[i] = run_once(NULL, NULL);
        boxed[i] = run_once(&cfg, &run);
        if (plain[i] < 0 || boxed[i] < 0)
            rc = 1;
    }
    rmdir(work);
    rmdir(dir);
    sandbox_config_free(&cfg);
    if (rc != 0)
        return 1;
    double mp = median(plain, n), mb = median(boxed, n);
    printf("BENCH sandbox_overhead_ms %.1f\n", mb - mp);
    printf("BENCH sandbox_run_ms %.1f\n", mb);
    printf("BENCH plain_run_ms %.1f\n", mp);
    printf("BENCH sandbox_overhead_ratio %.2f\n", mp > 0 ? mb / mp : 0.0);
    return 0;
}
