/* Helpers shared by the NIF files; see nif_util.h. */
#define _GNU_SOURCE /* pthread_setname_np, sched_getaffinity, cpu_set_t */
#include "nif_util.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic unsigned long yields, dirty_moves, steps;

ERL_NIF_TERM sh_nif_raise_badarg(ErlNifEnv *env, ERL_NIF_TERM badarg_atom, const char *why)
{
    ERL_NIF_TERM msg;
    size_t n = strlen(why);
    unsigned char *p = enif_make_new_binary(env, n, &msg);
    memcpy(p, why, n);
    return enif_raise_exception(env, enif_make_tuple2(env, badarg_atom, msg));
}

ERL_NIF_TERM sh_nif_make_bin(ErlNifEnv *env, const char *bytes, size_t len)
{
    ERL_NIF_TERM t;
    unsigned char *p = enif_make_new_binary(env, len, &t);
    if (len > 0)
        memcpy(p, bytes, len);
    return t;
}

int sh_nif_on_normal(void)
{
    return enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER;
}

static _Atomic int deferred;

typedef struct deferred_call {
    void (*fn)(void *);
    void *arg;
} deferred_call;

static void *run_deferred(void *p)
{
    deferred_call call = *(deferred_call *)p;
    enif_free(p);
    /* the CPUs the process may use (its first thread's), not those of the
     * scheduler that made this one: bound to one CPU (+sbt, taskset), the
     * free would compete with it there, and the kernel lets a time-shared
     * thread have 50 ms a second of a CPU that a real-time scheduler keeps
     * busy. Set here, not in the attributes: should it fail, pthread_create
     * would, and the free would run on the scheduler after all. */
    cpu_set_t cpus;
    if (sched_getaffinity(getpid(), sizeof(cpus), &cpus) == 0)
        (void)sched_setaffinity(0, sizeof(cpus), &cpus);
    /* found by name in top -H, ps -L and /proc/<pid>/task/<tid>/comm
     * (named once its CPUs are set) */
    (void)pthread_setname_np(pthread_self(), SH_NIF_DEFER_THREAD);
    call.fn(call.arg);
    atomic_fetch_sub(&deferred, 1);
    return NULL;
}

void sh_nif_defer(void (*fn)(void *), void *arg)
{
    deferred_call *call = enif_alloc(sizeof(*call));
    pthread_attr_t attr;
    pthread_t tid;
    if (call == NULL || pthread_attr_init(&attr) != 0) {
        enif_free(call);
        fn(arg);
        return;
    }
    call->fn = fn;
    call->arg = arg;
    atomic_fetch_add(&deferred, 1);
    /* ordinary time-sharing, not the scheduling of the thread that calls
     * (inherited by default): a scheduler thread at real-time priority
     * would hand the free a whole CPU, which a scheduler of the same
     * priority then waits for (21 ms on the +S 1 bench) */
    struct sched_param normal = {0};
    if (pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED) == 0 &&
        (pthread_attr_setschedpolicy(&attr, SCHED_OTHER) != 0 ||
         pthread_attr_setschedparam(&attr, &normal) != 0))
        pthread_attr_setinheritsched(&attr, PTHREAD_INHERIT_SCHED);
    int rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (rc == 0)
        rc = pthread_create(&tid, &attr, run_deferred, call);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&deferred, 1);
        enif_free(call);
        fn(arg);
    }
}

void sh_nif_deferred_wait(void)
{
    struct timespec pause = {0, 1000000};
    while (atomic_load(&deferred) > 0)
        nanosleep(&pause, NULL);
}

int sh_nif_on_dirty(void)
{
    int t = enif_thread_type();
    return t == ERL_NIF_THR_DIRTY_CPU_SCHEDULER || t == ERL_NIF_THR_DIRTY_IO_SCHEDULER;
}

/* The time up to which this thread's call has been reported. */
static _Thread_local ErlNifTime reported_until;

void sh_nif_mark(void)
{
    reported_until = enif_monotonic_time(ERL_NIF_USEC);
}

/* us of a normal scheduler as a percentage of SH_NIF_SLICE_US, at most
 * 100; rounded up (a call's last report: what is left would be lost) or
 * down (a batch's clock: what is left is reported with the next tick). */
static int slice_percent(ErlNifTime us, int up)
{
    if (us >= SH_NIF_SLICE_US)
        return 100;
    if (us < 1)
        return 0;
    return (int)((us * 100 + (up ? SH_NIF_SLICE_US - 1 : 0)) / SH_NIF_SLICE_US);
}

void sh_nif_report(ErlNifEnv *env)
{
    if (!sh_nif_on_normal())
        return;
    ErlNifTime now = enif_monotonic_time(ERL_NIF_USEC);
    int percent = slice_percent(now - reported_until, 1);
    reported_until = now;
    if (percent > 0)
        enif_consume_timeslice(env, percent);
}

ERL_NIF_TERM sh_nif_timed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[],
                          ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]))
{
    sh_nif_mark();
    ERL_NIF_TERM result = fn(env, argc, argv);
    sh_nif_report(env);
    return result;
}

ERL_NIF_TERM sh_nif_continue(ErlNifEnv *env, const char *name, int dirty,
                             ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]), int argc,
                             const ERL_NIF_TERM argv[])
{
    sh_nif_report(env);
    atomic_fetch_add_explicit(dirty ? &dirty_moves : &yields, 1, memory_order_relaxed);
    return enif_schedule_nif(env, name, dirty ? ERL_NIF_DIRTY_JOB_CPU_BOUND : 0, fn, argc, argv);
}

unsigned long sh_nif_yields(void)
{
    return atomic_load(&yields);
}

unsigned long sh_nif_dirty_moves(void)
{
    return atomic_load(&dirty_moves);
}

void sh_nif_count_step(void)
{
    atomic_fetch_add_explicit(&steps, 1, memory_order_relaxed);
}

unsigned long sh_nif_steps(void)
{
    return atomic_load(&steps);
}

int sh_nif_lock_init(sh_nif_lock *lock, const char *name)
{
    atomic_init(&lock->waiting, 0);
    atomic_init(&lock->taken, 0);
    lock->mutex = enif_mutex_create((char *)name);
    return lock->mutex != NULL ? 0 : -1;
}

void sh_nif_lock_destroy(sh_nif_lock *lock)
{
    if (lock->mutex != NULL)
        enif_mutex_destroy(lock->mutex);
    lock->mutex = NULL;
}

/* A normal scheduler tries a busy lock for at most this long: a reader
 * between two steps (20-30 µs each) lets a waiting caller in, which
 * spares the caller two moves between schedulers. */
#define TRY_US 100

/* Tries the lock for at most TRY_US, counted as waiting for it; 1 when
 * held. */
static int lock_try_briefly(sh_nif_lock *lock)
{
    atomic_fetch_add(&lock->waiting, 1);
    ErlNifTime t0 = enif_monotonic_time(ERL_NIF_USEC);
    int held;
    while (!(held = enif_mutex_trylock(lock->mutex) == 0) &&
           enif_monotonic_time(ERL_NIF_USEC) - t0 < TRY_US)
        ;
    atomic_fetch_sub(&lock->waiting, 1);
    return held;
}

int sh_nif_lock_take(sh_nif_lock *lock, int dirty)
{
    if (enif_mutex_trylock(lock->mutex) != 0) {
        if (!dirty) {
            if (!lock_try_briefly(lock))
                return 0;
        } else {
            atomic_fetch_add(&lock->waiting, 1);
            enif_mutex_lock(lock->mutex);
            atomic_fetch_sub(&lock->waiting, 1);
        }
    }
    atomic_fetch_add(&lock->taken, 1);
    return 1;
}

void sh_nif_lock_release(sh_nif_lock *lock)
{
    enif_mutex_unlock(lock->mutex);
}

/* ------------------------------------------------------------ readers */

/* Releases the lock after a reader's step and, when calls wait for it,
 * pauses until one of them took it. */
static void step_end(sh_nif_lock *lock)
{
    unsigned long taken = atomic_load(&lock->taken);
    enif_mutex_unlock(lock->mutex);
    if (atomic_load(&lock->waiting) == 0)
        return;
    /* sleeping, not spinning: the caller may need this very CPU */
    ErlNifTime t0 = enif_monotonic_time(ERL_NIF_USEC);
    struct timespec pause = {0, 20000};
    while (atomic_load(&lock->taken) == taken && atomic_load(&lock->waiting) > 0 &&
           enif_monotonic_time(ERL_NIF_USEC) - t0 < SH_NIF_HANDOFF_US)
        nanosleep(&pause, NULL);
}

typedef struct walk {
    const sh_nif_walk_ops *ops;
    ERL_NIF_TERM badarg; /* an atom: valid in every env */
    void *owner;         /* a resource, kept */
    sh_nif_lock *lock;
    _Atomic int *busy;
    void *data;
    int active; /* begun and not ended */
} walk;

static ErlNifResourceType *walk_type;

/* Ends an unfinished walk (waiting for the lock) and lets go of what it
 * holds. */
static void walk_finish(void *arg)
{
    walk *w = arg;
    if (w->active) {
        sh_nif_lock_take(w->lock, 1);
        w->ops->stop(w->owner, w->data);
        sh_nif_lock_release(w->lock);
        w->active = 0;
        atomic_store(w->busy, 0);
    }
    if (w->ops->free_data != NULL)
        w->ops->free_data(w->data);
    enif_release_resource(w->owner);
    enif_free(w);
}

/* The process died between two calls: the walk is ended, on a thread of
 * its own when this runs on a normal scheduler (it waits for the lock). */
static void walk_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    walk *res = obj;
    if (res->owner == NULL)
        return;
    walk *copy = enif_alloc(sizeof(*copy));
    if (copy == NULL)
        return; /* cannot happen in practice; the walk stays begun */
    *copy = *res;
    res->owner = NULL;
    if (copy->active && sh_nif_on_normal())
        sh_nif_defer(walk_finish, copy);
    else
        walk_finish(copy);
}

int sh_nif_walk_load(ErlNifEnv *env)
{
    ErlNifResourceFlags flags = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
    walk_type = enif_open_resource_type(env, NULL, "self_heal_walk", walk_dtor, flags, NULL);
    return walk_type == NULL ? -1 : 0;
}

/* argv: [walk resource, results so far]; on a dirty scheduler. */
static ERL_NIF_TERM walk_run(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    walk *w;
    if (!enif_get_resource(env, argv[0], walk_type, (void **)&w) || w->owner == NULL)
        return enif_make_badarg(env);
    ERL_NIF_TERM acc = argv[1];
    ErlNifTime t0 = enif_monotonic_time(ERL_NIF_USEC);
    int rc = 0, gone = 0;
    /* not active: the walk is over, its finish goes on */
    while (w->active && rc == 0) {
        if (w->ops->prepare != NULL)
            w->ops->prepare(w->data);
        sh_nif_lock_take(w->lock, 1);
        rc = w->ops->step(env, w->owner, w->data, &acc);
        if (rc == 0 && !enif_is_current_process_alive(env)) {
            w->ops->stop(w->owner, w->data);
            rc = gone = 1;
        }
        sh_nif_count_step();
        step_end(w->lock);
        if (rc == 0 && enif_monotonic_time(ERL_NIF_USEC) - t0 >= SH_NIF_WALK_SLICE_US) {
            ERL_NIF_TERM args[2] = {argv[0], acc};
            return sh_nif_continue(env, "walk", 1, walk_run, 2, args);
        }
    }
    if (w->active) {
        w->active = 0;
        atomic_store(w->busy, 0);
        if (rc < 0)
            return sh_nif_raise_badarg(env, w->badarg, "out of memory");
        if (gone)
            return acc;
    }
    if (w->ops->finish != NULL) {
        while ((rc = w->ops->finish(w->data)) == 0) {
            if (!enif_is_current_process_alive(env))
                return acc;
            if (enif_monotonic_time(ERL_NIF_USEC) - t0 >= SH_NIF_WALK_SLICE_US) {
                ERL_NIF_TERM args[2] = {argv[0], acc};
                return sh_nif_continue(env, "walk", 1, walk_run, 2, args);
            }
        }
        if (rc < 0)
            return sh_nif_raise_badarg(env, w->badarg, "out of memory");
    }
    return w->ops->result(env, w->data, acc);
}

ERL_NIF_TERM sh_nif_walk_start(ErlNifEnv *env, ERL_NIF_TERM badarg_atom, const sh_nif_walk_ops *ops,
                               void *owner, sh_nif_lock *lock, _Atomic int *busy,
                               int (*begin)(void *owner, void *data), void *data)
{
    walk *w = enif_alloc_resource(walk_type, sizeof(*w));
    if (w == NULL) {
        if (ops->free_data != NULL)
            ops->free_data(data);
        return sh_nif_raise_badarg(env, badarg_atom, "out of memory");
    }
    enif_keep_resource(owner);
    *w = (walk){ops, badarg_atom, owner, lock, busy, data, 0};
    ERL_NIF_TERM res = enif_make_resource(env, w);
    enif_release_resource(w);
    /* one reader at a time: wait (sleeping, on this dirty scheduler) */
    struct timespec pause = {0, 100000};
    int expected = 0;
    while (!atomic_compare_exchange_weak(busy, &expected, 1)) {
        expected = 0;
        if (!enif_is_current_process_alive(env))
            return enif_make_list(env, 0);
        nanosleep(&pause, NULL);
    }
    sh_nif_lock_take(lock, 1);
    int rc = begin(owner, data);
    step_end(lock);
    if (rc != 0) {
        atomic_store(busy, 0);
        return sh_nif_raise_badarg(env, badarg_atom, "out of memory");
    }
    w->active = 1;
    ERL_NIF_TERM args[2] = {res, enif_make_list(env, 0)};
    return walk_run(env, 2, args);
}

void sh_nif_clock_start(sh_nif_clock *c, unsigned long yield_every, unsigned long check_every,
                        uint64_t work_limit)
{
    c->start = c->last = enif_monotonic_time(ERL_NIF_USEC);
    c->items = 0;
    c->work = 0;
    c->yield_every = yield_every;
    c->check_every = check_every > 0 ? check_every : 1;
    c->work_limit = work_limit;
    c->dirty = sh_nif_on_dirty();
}

int sh_nif_clock_tick(ErlNifEnv *env, sh_nif_clock *c, uint64_t work)
{
    c->items++;
    c->work += work;
    if (c->yield_every > 0)
        return c->items >= c->yield_every;
    if (c->items % c->check_every != 0 && c->work < c->work_limit)
        return 0;
    c->work = 0;
    ErlNifTime now = enif_monotonic_time(ERL_NIF_USEC);
    if (c->dirty)
        return now - c->start >= SH_NIF_DIRTY_SLICE_US;
    if (reported_until > c->last)
        c->last = reported_until;
    int percent = slice_percent(now - c->last, 0);
    if (percent == 0)
        return 0;
    c->last = reported_until = now;
    return enif_consume_timeslice(env, percent);
}
