/* Helpers of the C suites that watch child processes: a monotonic clock,
 * a short sleep, whether a process is gone (no /proc entry, or only a
 * zombie waiting for whatever reaps orphans here), and whether the suite
 * runs under valgrind. */
#ifndef SELF_HEAL_TEST_PROCS_H
#define SELF_HEAL_TEST_PROCS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

static inline long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline int process_gone(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren != NULL && paren[1] == ' ' && paren[2] == 'Z';
}

/* 1 when pid is gone within ms, else 0. */
static inline int wait_gone(pid_t pid, int ms)
{
    long long deadline = now_ms() + ms;
    while (!process_gone(pid)) {
        if (now_ms() > deadline)
            return 0;
        nap_ms(10);
    }
    return 1;
}

/* Valgrind emulates RLIMIT_DATA and RLIMIT_NOFILE for the process it runs
 * (a forked child before its exec included): there limits are not what the
 * kernel would apply. */
static inline int under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

#endif
