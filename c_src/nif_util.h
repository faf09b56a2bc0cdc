/*
 * Helpers shared by the NIF files (self_heal_nif.c, watch_nif.c): raising
 * badarg with a reason, making binaries, and the time-slice clock of the
 * yielding batch NIFs.
 */
#ifndef SELF_HEAL_NIF_UTIL_H
#define SELF_HEAL_NIF_UTIL_H

#include <erl_nif.h>
#include <stddef.h>
#include <stdint.h>

/* Raises {badarg_atom, why} (why as a binary). */
ERL_NIF_TERM sh_nif_raise_badarg(ErlNifEnv *env, ERL_NIF_TERM badarg_atom, const char *why);

/* A new binary holding a copy of bytes[0..len). */
ERL_NIF_TERM sh_nif_make_bin(ErlNifEnv *env, const char *bytes, size_t len);

/* Says when a batch NIF should yield. With yield_every > 0 (tests), after
 * that many items; else the clock is read every check_every items, or as
 * soon as work_limit units of work accumulated, and the elapsed time is
 * reported with enif_consume_timeslice, whose answer decides. */
typedef struct sh_nif_clock {
    ErlNifTime last;
    unsigned long items;
    uint64_t work;
    unsigned long yield_every;
    unsigned long check_every;
    uint64_t work_limit;
} sh_nif_clock;

void sh_nif_clock_start(sh_nif_clock *c, unsigned long yield_every, unsigned long check_every,
                        uint64_t work_limit);
/* Counts one item that took `work`; 1 when the slice is used up. */
int sh_nif_clock_tick(ErlNifEnv *env, sh_nif_clock *c, uint64_t work);

#endif
