/*
 * The scrubber's NIFs: a scrubber (built-in rules plus configured POSIX
 * patterns, c_src/scrub.c) in a resource, and scrubbing a binary with it,
 * so that what SelfHeal keeps (SelfHeal.groups/0, the groups sent on) holds
 * no raw secret.
 *
 * - scrubber_new_nif(patterns) compiles at most 64 patterns of at most
 *   1 KiB each: {:ok, ref} or {:error, reason}; bad terms raise badarg. On
 *   a dirty CPU scheduler: it measures the list whole, and compiling 64
 *   patterns of 1 KiB can take 100 ms and more.
 * - scrub_nif(ref | nil, text): texts up to SCRUB_INLINE_MAX bytes with the
 *   built-in rules only (at most about 0.3 ms on hostile input, linear)
 *   run here; longer texts, and any text when patterns are configured,
 *   are rescheduled on a dirty CPU scheduler.
 */
#include "scrub_nif.h"

#include <string.h>

#include "nif_util.h"
#include "self_heal/scrub.h"

#define SCRUB_INLINE_MAX 2048
#define SCRUB_MAX_PATTERNS 64
#define SCRUB_MAX_TEXT (64u * 1024u * 1024u)

typedef struct nif_scrubber {
    sh_scrubber *s;
    int has_patterns;
} nif_scrubber;

static ErlNifResourceType *scrubber_type;
static ERL_NIF_TERM atom_badarg, atom_ok, atom_error, atom_nil;

static void scrubber_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_scrubber *r = obj;
    sh_scrubber_free(r->s);
    r->s = NULL;
}

int sh_scrub_nif_load(ErlNifEnv *env)
{
    ErlNifResourceFlags flags = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
    scrubber_type =
        enif_open_resource_type(env, NULL, "self_heal_scrubber", scrubber_dtor, flags, NULL);
    atom_badarg = enif_make_atom(env, "badarg");
    atom_ok = enif_make_atom(env, "ok");
    atom_error = enif_make_atom(env, "error");
    atom_nil = enif_make_atom(env, "nil");
    return scrubber_type == NULL;
}

ERL_NIF_TERM sh_scrub_nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    unsigned len;
    if (!enif_get_list_length(env, argv[0], &len))
        return sh_nif_raise_badarg(env, atom_badarg, "patterns must be a list of binaries");
    if (len > SCRUB_MAX_PATTERNS) {
        const char *why = "more than 64 patterns";
        return enif_make_tuple2(env, atom_error, sh_nif_make_bin(env, why, strlen(why)));
    }
    /* NUL-terminated copies for regcomp */
    ErlNifBinary copies[SCRUB_MAX_PATTERNS];
    const char *patterns[SCRUB_MAX_PATTERNS];
    ERL_NIF_TERM list = argv[0], head;
    unsigned n = 0;
    ERL_NIF_TERM result;
    while (enif_get_list_cell(env, list, &head, &list)) {
        ErlNifBinary b;
        if (!enif_inspect_binary(env, head, &b) || memchr(b.data, 0, b.size) != NULL) {
            result = sh_nif_raise_badarg(env, atom_badarg,
                                         "patterns must be binaries without NUL bytes");
            goto out;
        }
        if (!enif_alloc_binary(b.size + 1, &copies[n])) {
            result = sh_nif_raise_badarg(env, atom_badarg, "out of memory");
            goto out;
        }
        memcpy(copies[n].data, b.data, b.size);
        copies[n].data[b.size] = '\0';
        patterns[n] = (const char *)copies[n].data;
        n++;
    }
    char err[256] = "";
    sh_scrubber *s = NULL;
    if (sh_scrubber_new(&s, patterns, n, err, sizeof(err)) != 0) {
        result = enif_make_tuple2(env, atom_error, sh_nif_make_bin(env, err, strlen(err)));
        goto out;
    }
    nif_scrubber *r = enif_alloc_resource(scrubber_type, sizeof(*r));
    if (r == NULL) {
        sh_scrubber_free(s);
        result = sh_nif_raise_badarg(env, atom_badarg, "out of memory");
        goto out;
    }
    r->s = s;
    r->has_patterns = n > 0;
    result = enif_make_tuple2(env, atom_ok, enif_make_resource(env, r));
    enif_release_resource(r);
out:
    for (unsigned k = 0; k < n; k++)
        enif_release_binary(&copies[k]);
    return result;
}

/* The scrubber (NULL for nil) and the text of scrub_nif's arguments;
 * NULL, or the reason they are bad. */
static const char *scrub_args(ErlNifEnv *env, const ERL_NIF_TERM argv[], nif_scrubber **r,
                              ErlNifBinary *text)
{
    *r = NULL;
    if (!enif_is_identical(argv[0], atom_nil) &&
        !enif_get_resource(env, argv[0], scrubber_type, (void **)r))
        return "scrubber must be a scrubber or nil";
    if (!enif_inspect_binary(env, argv[1], text))
        return "text must be a binary";
    if (text->size > SCRUB_MAX_TEXT)
        return "text larger than 64 MiB";
    return NULL;
}

static ERL_NIF_TERM scrub_now(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_scrubber *r;
    ErlNifBinary text;
    const char *why = scrub_args(env, argv, &r, &text);
    if (why != NULL)
        return sh_nif_raise_badarg(env, atom_badarg, why);
    sh_buf out;
    sh_buf_init(&out);
    sh_scrub(r != NULL ? r->s : NULL, (const char *)text.data, text.size, &out, NULL);
    if (out.oom) {
        sh_buf_free(&out);
        return sh_nif_raise_badarg(env, atom_badarg, "out of memory");
    }
    /* unchanged text: the same binary, no copy */
    ERL_NIF_TERM result = out.len == text.size && memcmp(out.data, text.data, text.size) == 0
                              ? argv[1]
                              : sh_nif_make_bin(env, out.data, out.len);
    sh_buf_free(&out);
    return result;
}

ERL_NIF_TERM sh_scrub_nif_text(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    nif_scrubber *r;
    ErlNifBinary text;
    const char *why = scrub_args(env, argv, &r, &text);
    if (why != NULL)
        return sh_nif_raise_badarg(env, atom_badarg, why);
    if (text.size <= SCRUB_INLINE_MAX && (r == NULL || !r->has_patterns))
        return sh_nif_timed(env, argc, argv, scrub_now);
    return enif_schedule_nif(env, "scrub_nif", ERL_NIF_DIRTY_JOB_CPU_BOUND, scrub_now, argc, argv);
}
