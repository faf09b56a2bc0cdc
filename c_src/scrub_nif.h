/*
 * The scrubber's NIFs (c_src/scrub_nif.c over c_src/scrub.c), loaded with
 * the rest of SelfHeal.Native by c_src/self_heal_nif.c:
 *
 *   load():       if (sh_scrub_nif_load(env) != 0) return 1;
 *   nif_funcs[]:  SH_SCRUB_NIF_FUNCS,
 *
 * docs/privacy.md describes the functions (SelfHeal.Scrub).
 */
#ifndef SELF_HEAL_SCRUB_NIF_H
#define SELF_HEAL_SCRUB_NIF_H

#include <erl_nif.h>

/* Opens the "self_heal_scrubber" resource type. Returns 0, or non-zero on
 * failure (the library must not load). */
int sh_scrub_nif_load(ErlNifEnv *env);

ERL_NIF_TERM sh_scrub_nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM sh_scrub_nif_text(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Entries of the ErlNifFunc table (no trailing comma). scrubber_new_nif/1
 * runs on a dirty CPU scheduler; scrub_nif/2 runs small texts on the
 * calling scheduler and reschedules the rest on a dirty CPU scheduler. */
/* clang-format off */
#define SH_SCRUB_NIF_FUNCS                                                   \
    {"scrubber_new_nif", 1, sh_scrub_nif_new, ERL_NIF_DIRTY_JOB_CPU_BOUND},  \
    {"scrub_nif", 2, sh_scrub_nif_text, 0}
/* clang-format on */

#endif
