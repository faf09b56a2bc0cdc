/*
 * Worker thread pool with a bounded ring-buffer queue (pool.h).
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

typedef struct pool_job {
    pool_fn run;
    pool_fn drop;
    void *arg;
} pool_job;

struct port_pool {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a job was queued or the pool closed */
    pthread_cond_t done; /* a worker exited */
    pthread_t *threads;
    size_t nthreads; /* threads started */
    size_t alive;    /* threads not yet exited */
    size_t running;  /* jobs being run */
    pool_job *queue; /* ring buffer of queue_max slots */
    size_t queue_max;
    size_t head;
    size_t count;
    int closed;
    int joined;
};

static void *pool_worker(void *opaque)
{
    port_pool *p = opaque;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->count == 0 && !p->closed)
            pthread_cond_wait(&p->work, &p->lock);
        if (p->closed)
            break;
        pool_job job = p->queue[p->head];
        p->head = (p->head + 1) % p->queue_max;
        p->count--;
        p->running++;
        pthread_mutex_unlock(&p->lock);
        job.run(job.arg);
        pthread_mutex_lock(&p->lock);
        p->running--;
    }
    p->alive--;
    pthread_cond_broadcast(&p->done);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static int pool_init_sync(port_pool *p)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
                     pthread_mutex_init(&p->lock, NULL) == 0
                 ? 0
                 : -1;
    if (rc == 0 && pthread_cond_init(&p->work, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        rc = -1;
    }
    if (rc == 0 && pthread_cond_init(&p->done, &attr) != 0) {
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->lock);
        rc = -1;
    }
    pthread_condattr_destroy(&attr);
    return rc;
}

static void pool_destroy_sync(port_pool *p)
{
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
}

int pool_new(port_pool **out, size_t workers, size_t queue_max)
{
    if (workers < 1 || workers > POOL_MAX_WORKERS || queue_max < 1 || queue_max > POOL_MAX_QUEUE)
        return -1;
    port_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -1;
    p->queue = calloc(queue_max, sizeof(*p->queue));
    p->threads = calloc(workers, sizeof(*p->threads));
    if (p->queue == NULL || p->threads == NULL || pool_init_sync(p) != 0) {
        free(p->queue);
        free(p->threads);
        free(p);
        return -1;
    }
    p->queue_max = queue_max;

    /* Threads inherit the creator's mask: block every signal in them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (size_t i = 0; i < workers; i++) {
        pthread_mutex_lock(&p->lock);
        p->alive++;
        pthread_mutex_unlock(&p->lock);
        if (pthread_create(&p->threads[i], NULL, pool_worker, p) != 0) {
            pthread_mutex_lock(&p->lock);
            p->alive--;
            pthread_mutex_unlock(&p->lock);
            break;
        }
        p->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (p->nthreads != workers) {
        pool_join(p, -1);
        pool_free(p);
        return -1;
    }
    *out = p;
    return 0;
}

int pool_submit(port_pool *p, pool_fn run, pool_fn drop, void *arg)
{
    int rc = -1;
    pthread_mutex_lock(&p->lock);
    if (!p->closed && p->count < p->queue_max) {
        p->queue[(p->head + p->count) % p->queue_max] = (pool_job){run, drop, arg};
        p->count++;
        pthread_cond_signal(&p->work);
        rc = 0;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

void pool_close(port_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->closed = 1;
    while (p->count > 0) {
        pool_job job = p->queue[p->head];
        p->head = (p->head + 1) % p->queue_max;
        p->count--;
        if (job.drop != NULL) {
            pthread_mutex_unlock(&p->lock);
            job.drop(job.arg);
            pthread_mutex_lock(&p->lock);
        }
    }
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int pool_join(port_pool *p, int timeout_ms)
{
    pool_close(p);
    struct timespec deadline;
    if (timeout_ms >= 0)
        deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&p->lock);
    while (p->alive > 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&p->done, &p->lock);
        } else if (pthread_cond_timedwait(&p->done, &p->lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    int all_out = p->alive == 0;
    pthread_mutex_unlock(&p->lock);
    if (!all_out)
        return -1;
    if (!p->joined) {
        /* Every worker has left its loop; the joins return at once. */
        for (size_t i = 0; i < p->nthreads; i++)
            pthread_join(p->threads[i], NULL);
        p->joined = 1;
    }
    return 0;
}

void pool_free(port_pool *p)
{
    if (p == NULL)
        return;
    pool_destroy_sync(p);
    free(p->queue);
    free(p->threads);
    free(p);
}

void pool_stats(port_pool *p, size_t *queued, size_t *running)
{
    pthread_mutex_lock(&p->lock);
    if (queued != NULL)
        *queued = p->count;
    if (running != NULL)
        *running = p->running;
    pthread_mutex_unlock(&p->lock);
}
