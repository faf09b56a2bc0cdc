/*
 * Helpers shared by the NIF files (self_heal_nif.c, watch_nif.c): raising
 * badarg with a reason, making binaries, and keeping normal schedulers
 * free: the time-slice clock of the yielding NIFs, moving a call to a
 * dirty CPU scheduler and back, and taking a shared lock without waiting
 * on a normal scheduler (docs/nif.md).
 */
#ifndef SELF_HEAL_NIF_UTIL_H
#define SELF_HEAL_NIF_UTIL_H

#include <erl_nif.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Raises {badarg_atom, why} (why as a binary). */
ERL_NIF_TERM sh_nif_raise_badarg(ErlNifEnv *env, ERL_NIF_TERM badarg_atom, const char *why);

/* A new binary holding a copy of bytes[0..len). */
ERL_NIF_TERM sh_nif_make_bin(ErlNifEnv *env, const char *bytes, size_t len);

/* 1 when the calling NIF runs on a dirty scheduler. */
int sh_nif_on_dirty(void);

/* Continues with fn(argc, argv) on a dirty CPU scheduler (dirty != 0) or
 * a normal one: a yield, or a move, after reporting the time used so far
 * (sh_nif_report). Counted for the tests (sh_nif_yields,
 * sh_nif_dirty_moves). */
ERL_NIF_TERM sh_nif_continue(ErlNifEnv *env, const char *name, int dirty,
                             ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]), int argc,
                             const ERL_NIF_TERM argv[]);

/* Continuations onto a normal scheduler and moves onto a dirty one. */
unsigned long sh_nif_yields(void);
unsigned long sh_nif_dirty_moves(void);

/* Steps of the long readers (miner and watch walks), for the tests. */
void sh_nif_count_step(void);
unsigned long sh_nif_steps(void);

/* A lock shared by NIF calls on any scheduler. A normal scheduler never
 * blocks on it: it tries it for at most 0.1 ms (about the length of a long
 * reader's step), and when the lock is still busy the caller goes on on a
 * dirty scheduler, which waits for it. Those waits are counted, so that a
 * long reader that takes the lock step by step lets the waiting calls in
 * between its steps (a mutex is not fair: released and taken again at
 * once, it would starve them). */
typedef struct sh_nif_lock {
    ErlNifMutex *mutex;
    _Atomic unsigned long waiting; /* dirty callers waiting for it */
    _Atomic unsigned long taken;   /* times a caller got it */
} sh_nif_lock;

/* 0, or -1 when the mutex cannot be made. */
int sh_nif_lock_init(sh_nif_lock *lock, const char *name);
/* Safe on a lock whose init failed or never ran (zeroed). */
void sh_nif_lock_destroy(sh_nif_lock *lock);
/* Waits for the lock on a dirty scheduler, tries it for at most 0.1 ms on
 * a normal one: 1 when held, 0 when the caller must move to a dirty
 * scheduler. */
int sh_nif_lock_take(sh_nif_lock *lock, int dirty);
void sh_nif_lock_release(sh_nif_lock *lock);

/*
 * A long reader (a miner walk or snapshot, a watch list) in steps, on
 * dirty schedulers. Each step runs under the owner's lock; between two
 * steps, when calls wait for the lock, the reader pauses until one of them
 * took it (at most SH_NIF_HANDOFF_US). After SH_NIF_WALK_SLICE_US of steps
 * the reader gives its dirty scheduler back and goes on in another call
 * (enif_schedule_nif), so that the calls that moved to a dirty scheduler
 * because it held the lock do not wait for the whole walk (a VM may have
 * a single dirty CPU scheduler). The reader's state lives in a resource:
 * when its process dies between two calls, the resource's destructor ends
 * the walk (waiting for the lock, so on a thread of its own when it runs
 * on a normal scheduler); a call that finds its process gone ends it too.
 * The reader's last work without the lock (finish, a snapshot's checksum)
 * is split into parts and calls the same way.
 * One reader at a time per owner (`busy`); a second one waits for it, on
 * its dirty scheduler.
 */
#define SH_NIF_HANDOFF_US 2000
#define SH_NIF_WALK_SLICE_US 1000

typedef struct sh_nif_walk_ops {
    /* One step, under the lock: 0 when there is more, 1 when done, -1 on
     * failure (both having ended the walk). May cons results onto *acc
     * (terms of env). */
    int (*step)(ErlNifEnv *env, void *owner, void *data, ERL_NIF_TERM *acc);
    /* Ends an unfinished walk, under the lock. */
    void (*stop)(void *owner, void *data);
    /* Before each step, outside the lock (may be NULL). */
    void (*prepare)(void *data);
    /* The reader's result once done. */
    ERL_NIF_TERM (*result)(ErlNifEnv *env, void *data, ERL_NIF_TERM acc);
    /* Frees data (may be NULL); it may outlive the resource's memory. */
    void (*free_data)(void *data);
    /* Once the walk is over, outside the lock, in parts before the result
     * (may be NULL): 0 when there is more, 1 when done, -1 on failure. */
    int (*finish)(void *data);
} sh_nif_walk_ops;

/* Opens the "self_heal_walk" resource type; 0 or -1. */
int sh_nif_walk_load(ErlNifEnv *env);

/*
 * Starts a reader on a dirty scheduler: takes `busy` (waiting for another
 * reader of the owner to end), then, under the lock, begin(owner, data)
 * (0, or -1 on failure), and goes on step by step. owner is a resource,
 * kept while the reader runs. Returns the reader's result, a continuation,
 * or raises {badarg_atom, "out of memory"}. data is the reader's (given
 * back to free_data in every case).
 */
ERL_NIF_TERM sh_nif_walk_start(ErlNifEnv *env, ERL_NIF_TERM badarg_atom, const sh_nif_walk_ops *ops,
                               void *owner, sh_nif_lock *lock, _Atomic int *busy,
                               int (*begin)(void *owner, void *data), void *data);

/* Runs fn(arg) on a thread of its own (detached), so that freeing a large
 * structure in a resource's destructor, which may run on a normal
 * scheduler, does not hold it; inline when no thread can be made. The
 * thread is named SH_NIF_DEFER_THREAD, time-shared (SCHED_OTHER, whatever
 * the caller's policy) and may run on every CPU the process may (not only
 * the caller's, should the scheduler be bound to one). sh_nif_deferred_wait
 * returns once every such call has (the library's unload). */
void sh_nif_defer(void (*fn)(void *), void *arg);
void sh_nif_deferred_wait(void);
#define SH_NIF_DEFER_THREAD "self_heal_defer"

/* A resource holding more than this many items (clusters, watches) is
 * freed by sh_nif_defer when its destructor runs on a normal scheduler. */
#define SH_NIF_DEFER_ITEMS 4096

/* 1 when the calling thread is a normal scheduler. */
int sh_nif_on_normal(void);

/* A dirty scheduler goes back to a normal one after this long, so that
 * the process can be killed and the dirty scheduler serves others. */
#define SH_NIF_DIRTY_SLICE_US 10000

/* The time a NIF may keep a normal scheduler before it yields, reported to
 * enif_consume_timeslice as a share of this: half of the 1 ms that
 * erl_nif allows, so that a process waiting for the scheduler (woken by a
 * timer that fires at most 1 ms late) waits at most about 2 ms. */
#define SH_NIF_SLICE_US 500

/*
 * Reporting time. A NIF call that returns counts as one reduction,
 * however long it took: a process calling a 50 µs NIF in a loop would
 * keep its scheduler for thousands of calls (the 4,000 reductions of its
 * time slice). So every NIF that runs on a normal scheduler reports the
 * time it took with enif_consume_timeslice (SH_NIF_TIMED wraps it), and a
 * process calling it in a loop is scheduled out after about
 * SH_NIF_SLICE_US of it, like one long call that yields. Time already
 * reported (by sh_nif_clock_tick) is not reported again: the thread keeps
 * a mark of what was.
 */
/* Marks the start of a call on this thread. */
void sh_nif_mark(void);
/* Reports the time since the mark (on a normal scheduler) and moves it. */
void sh_nif_report(ErlNifEnv *env);
/* fn(env, argc, argv), its time reported. */
ERL_NIF_TERM sh_nif_timed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[],
                          ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]));
/* Defines `name`, the function `fn` with its time reported. */
#define SH_NIF_TIMED(name, fn)                                                                     \
    static ERL_NIF_TERM name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])                  \
    {                                                                                              \
        return sh_nif_timed(env, argc, argv, fn);                                                  \
    }

/* Says when a batch NIF should yield. With yield_every > 0 (tests), after
 * that many items. Else on a normal scheduler the clock is read every
 * check_every items, or as soon as work_limit units of work accumulated,
 * and the elapsed time is reported with enif_consume_timeslice (as a share
 * of SH_NIF_SLICE_US), whose answer decides; on a dirty scheduler after
 * SH_NIF_DIRTY_SLICE_US. */
typedef struct sh_nif_clock {
    ErlNifTime start;
    ErlNifTime last;
    unsigned long items;
    uint64_t work;
    unsigned long yield_every;
    unsigned long check_every;
    uint64_t work_limit;
    int dirty;
} sh_nif_clock;

void sh_nif_clock_start(sh_nif_clock *c, unsigned long yield_every, unsigned long check_every,
                        uint64_t work_limit);
/* Counts one item that took `work`; 1 when the slice is used up. */
int sh_nif_clock_tick(ErlNifEnv *env, sh_nif_clock *c, uint64_t work);

#endif
