/*
 * A fixed pool of worker threads with a bounded FIFO queue. The port's
 * reader thread submits jobs; a full queue refuses at once (the caller
 * answers "busy") instead of growing. Worker threads block every signal,
 * so SIGTERM/SIGINT/SIGCHLD reach the reader thread's self-pipe.
 */
#ifndef SELF_HEAL_PORT_POOL_H
#define SELF_HEAL_PORT_POOL_H

#include <stddef.h>

#define POOL_DEFAULT_WORKERS 4
#define POOL_MAX_WORKERS 32
#define POOL_DEFAULT_QUEUE 1024
#define POOL_MAX_QUEUE 65536

typedef struct port_pool port_pool;

/* run(arg) does the job on a worker; drop(arg) releases a job that was
 * queued but will never run (the pool was closed first). */
typedef void (*pool_fn)(void *arg);

/* Starts `workers` threads (1..POOL_MAX_WORKERS) with a queue of at most
 * `queue_max` waiting jobs (1..POOL_MAX_QUEUE). Returns 0 or -1. */
int pool_new(port_pool **out, size_t workers, size_t queue_max);

/* Queues a job. Returns 0, or -1 when the queue is full or the pool is
 * closed (the caller keeps arg). */
int pool_submit(port_pool *p, pool_fn run, pool_fn drop, void *arg);

/* Stops accepting jobs, drops the queued ones (calls their drop) and tells
 * the workers to exit after their current job. Idempotent. */
void pool_close(port_pool *p);

/* Waits up to timeout_ms for every worker to exit (closing the pool
 * first). Returns 0 when all were joined, -1 when some are still busy:
 * the pool must then not be freed (its threads still use it). */
int pool_join(port_pool *p, int timeout_ms);

/* Frees a pool whose workers were all joined (pool_join returned 0). */
void pool_free(port_pool *p);

/* Jobs waiting and jobs running, for diagnostics. */
void pool_stats(port_pool *p, size_t *queued, size_t *running);

#endif
