/*
 * A NIF for `make bench` only, never loaded by SelfHeal: hold_us/1 keeps
 * the normal scheduler that calls it busy for a given number of
 * microseconds without yielding, breaking on purpose the rule every
 * SelfHeal NIF keeps (docs/nif.md). test/bench/block.exs calls it to check
 * that its pinger sees a block of known length (docs/benchmarks.md).
 */
#include <erl_nif.h>
#include <time.h>

/* The longest hold a call may ask for: 100 ms. */
#define HOLD_MAX_US 100000

static long long clock_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static ERL_NIF_TERM hold_us(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    int us;
    long long end;

    (void)argc;
    if (!enif_get_int(env, argv[0], &us) || us < 0 || us > HOLD_MAX_US)
        return enif_make_badarg(env);
    end = clock_now_ns() + (long long)us * 1000;
    while (clock_now_ns() < end) {
    }
    return enif_make_atom(env, "ok");
}

static ErlNifFunc calib_funcs[] = {{"hold_us", 1, hold_us, 0}};

ERL_NIF_INIT(self_heal_block_calib, calib_funcs, NULL, NULL, NULL, NULL)
