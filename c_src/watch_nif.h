/*
 * The watch engine's NIFs (c_src/watch_nif.c over c_src/watch.c), loaded
 * with the rest of SelfHeal.Native by c_src/self_heal_nif.c:
 *
 *   load():       if (sh_watch_nif_load(env) != 0) return 1;
 *   nif_funcs[]:  SH_WATCH_NIF_FUNCS,
 *
 * docs/watch.md describes the functions.
 */
#ifndef SELF_HEAL_WATCH_NIF_H
#define SELF_HEAL_WATCH_NIF_H

#include <erl_nif.h>

/* Opens the "self_heal_watch" resource type and makes the atoms. Returns 0,
 * or non-zero on failure (the library must not load). */
int sh_watch_nif_load(ErlNifEnv *env);

ERL_NIF_TERM sh_watch_nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM sh_watch_nif_add(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM sh_watch_nif_remove(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM sh_watch_nif_observe(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM sh_watch_nif_count(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM sh_watch_nif_list(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Entries of the ErlNifFunc table (no trailing comma). watch_list_nif/1
 * builds up to max_watches maps, and adding or removing a watch costs up
 * to the size of the set (growing its tables, walking a chain of watches
 * on one field), so they run on dirty CPU schedulers. */
/* clang-format off */
#define SH_WATCH_NIF_FUNCS                                                   \
    {"watch_new_nif", 1, sh_watch_nif_new, 0},                               \
    {"watch_add_nif", 2, sh_watch_nif_add, ERL_NIF_DIRTY_JOB_CPU_BOUND},     \
    {"watch_remove_nif", 2, sh_watch_nif_remove, ERL_NIF_DIRTY_JOB_CPU_BOUND}, \
    {"watch_observe_nif", 3, sh_watch_nif_observe, 0},                       \
    {"watch_count_nif", 1, sh_watch_nif_count, 0},                           \
    {"watch_list_nif", 1, sh_watch_nif_list, ERL_NIF_DIRTY_JOB_CPU_BOUND}
/* clang-format on */

#endif
