/* Helpers shared by the NIF files; see nif_util.h. */
#include "nif_util.h"

#include <string.h>

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

void sh_nif_clock_start(sh_nif_clock *c, unsigned long yield_every, unsigned long check_every,
                        uint64_t work_limit)
{
    c->last = enif_monotonic_time(ERL_NIF_USEC);
    c->items = 0;
    c->work = 0;
    c->yield_every = yield_every;
    c->check_every = check_every > 0 ? check_every : 1;
    c->work_limit = work_limit;
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
    ErlNifTime us = now - c->last;
    if (us < 10)
        return 0;
    c->last = now;
    int percent = us >= 1000 ? 100 : (int)(us / 10);
    return enif_consume_timeslice(env, percent);
}
