/*
 * Static checks on a fix and its confidence score (port/validate.h).
 *
 * Confidence (validate_confidence), from the signals of one fix:
 *
 *   0 when compiled == 0, tests_passed == 0 or changed_lines == 0.
 *   Otherwise
 *     c  = 0.4
 *     c += 0.3  when regression_proven == 1 (a changed test fails on base,
 *               passes on the fix)
 *     c += 0.1  when compiled == 1
 *     c += 0.1  when tests_passed == 1
 *     c += 0.1 * max(0, 1 - changed_lines / max_lines)   (max_lines 0: 40)
 *     c -= 0.1  when agent_exit_ok == 0
 *     c  = min(c, 0.5) when scope_ok, size_ok or protected_ok is 0
 *     c  = min(c, 0.5) when regression_proven == 0 (the new test passes on
 *               base too: nothing shows the fix fixes anything)
 *     c  = clamp(c, 0, 1), rounded to 2 decimals (halves up).
 *   -1 ("not configured" / "unknown") adds nothing and caps nothing.
 *
 * Scope (validate_check): a touched path is in scope when it is in the
 * scope list, or when it is a test file (context_is_test_path) that exists
 * after the change (added, modified, or the new path of a rename). Paths
 * that disappear (deleted files, the old path of a rename) are in scope
 * only when listed: deleting or moving away a test is not a free action.
 *
 * Globs (validate_glob_match): both sides are split at '/' (empty and "."
 * segments dropped); a "**" segment matches zero or more path segments,
 * every other segment is matched against one path segment by fnmatch(3)
 * without FNM_PERIOD ('*' matches a leading dot too). Matching is a
 * dynamic programme over (glob segment, path segment) pairs, so no glob
 * costs more than (glob segments x path segments) fnmatch calls.
 */
#include "validate.h"

#include <fnmatch.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"

#define GLOB_MAX_BYTES 1024
#define PATH_MAX_BYTES 4096
#define MAX_SEGS 256

/* Auth, migrations, CI, deploy, secrets and lock files: a fix touching
 * any of them always goes to a human. */
const char *const validate_default_protected[] = {
    /* authentication and authorisation */
    "**/auth/**",
    "**/*auth*.ex",
    "**/*auth*.erl",
    "**/*auth*.js",
    "**/*auth*.ts",
    "**/*auth*.py",
    /* database migrations */
    "**/migrations/**",
    "priv/repo/migrations/**",
    /* continuous integration */
    ".github/**",
    ".gitlab-ci.yml",
    ".gitlab/**",
    ".circleci/**",
    ".buildkite/**",
    ".travis.yml",
    "**/Jenkinsfile",
    /* deployment and infrastructure */
    "**/deploy/**",
    "**/Dockerfile",
    "**/Dockerfile.*",
    "**/docker-compose*.yml",
    "**/docker-compose*.yaml",
    "**/k8s/**",
    "**/helm/**",
    "**/terraform/**",
    "**/*.tf",
    "fly.toml",
    "Procfile",
    "rel/**",
    /* secrets, keys, production configuration */
    "**/*.pem",
    "**/*.key",
    "**/*.p12",
    "**/*.pfx",
    "**/id_rsa*",
    "**/id_ed25519*",
    "**/*secret*",
    "**/secrets/**",
    "**/*credential*",
    "**/.env",
    "**/.env.*",
    "config/prod.secret.exs",
    "config/prod.exs",
    "config/runtime.exs",
    /* dependency locks */
    "mix.lock",
    "rebar.lock",
    "**/package-lock.json",
    "**/yarn.lock",
    "**/pnpm-lock.yaml",
    NULL,
};

/* ---------------------------------------------------------------- globs */

typedef struct segs {
    const char *s[MAX_SEGS];
    size_t n;
} segs;

/* Copies text into buf (buflen bytes) and splits it at '/', dropping empty
 * and "." segments. -1 when it is too long or has too many segments. */
static int split(segs *out, const char *text, char *buf, size_t buflen)
{
    size_t len = strlen(text);
    out->n = 0;
    if (len >= buflen)
        return -1;
    memcpy(buf, text, len + 1);
    char *p = buf;
    for (;;) {
        char *slash = strchr(p, '/');
        if (slash != NULL)
            *slash = '\0';
        if (p[0] != '\0' && strcmp(p, ".") != 0) {
            if (out->n >= MAX_SEGS)
                return -1;
            out->s[out->n++] = p;
        }
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    return 0;
}

int validate_glob_match(const char *glob, const char *path)
{
    char gbuf[GLOB_MAX_BYTES], pbuf[PATH_MAX_BYTES];
    segs g, p;
    unsigned char next[MAX_SEGS + 1], cur[MAX_SEGS + 1];

    if (glob == NULL || path == NULL)
        return 0;
    if (split(&g, glob, gbuf, sizeof(gbuf)) != 0 || split(&p, path, pbuf, sizeof(pbuf)) != 0)
        return 0;
    if (p.n == 0)
        return 0;
    /* next[j]: glob segments i+1.. match path segments j.. */
    for (size_t j = 0; j <= p.n; j++)
        next[j] = j == p.n;
    for (size_t i = g.n; i-- > 0;) {
        if (strcmp(g.s[i], "**") == 0) {
            cur[p.n] = next[p.n];
            for (size_t j = p.n; j-- > 0;)
                cur[j] = next[j] || cur[j + 1];
        } else {
            cur[p.n] = 0;
            for (size_t j = 0; j < p.n; j++)
                cur[j] = next[j + 1] && fnmatch(g.s[i], p.s[j], FNM_PATHNAME) == 0;
        }
        memcpy(next, cur, p.n + 1);
    }
    return next[0];
}

/* ---------------------------------------------------------------- check */

/* A JSON string for a repository path; bytes that are not UTF-8 become
 * '?' (git paths are bytes, JSON strings are not). */
static json_t *path_json(const char *path)
{
    json_t *s = json_string(path);
    if (s != NULL)
        return s;
    size_t len = strlen(path);
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return NULL;
    size_t i = 0;
    while (i < len) {
        size_t n = sh_utf8_seq_len((const unsigned char *)path + i, len - i);
        if (n == 0) {
            copy[i] = '?';
            n = 1;
        } else {
            memcpy(copy + i, path + i, n);
        }
        i += n;
    }
    copy[len] = '\0';
    s = json_string(copy);
    free(copy);
    return s;
}

static int str_in_array(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_object(v))
            v = json_object_get(v, "path");
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return 1;
    }
    return 0;
}

static int add_unique(json_t *arr, const char *path)
{
    json_t *s = path_json(path);
    if (s == NULL)
        return -1;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_equal(v, s)) {
            json_decref(s);
            return 0;
        }
    }
    return json_array_append_new(arr, s);
}

static int already_hit(json_t *hits, json_t *path)
{
    size_t i;
    json_t *v;
    json_array_foreach(hits, i, v)
    {
        if (json_equal(json_object_get(v, "path"), path))
            return 1;
    }
    return 0;
}

/* One touched path; exists_after: the path is there after the change. */
static int touch(validate_static *out, const char *path, int exists_after, json_t *scope,
                 json_t *globs)
{
    int is_test = context_is_test_path(path) == 1;
    if (add_unique(is_test ? out->test_files : out->source_files, path) != 0)
        return -1;
    if (is_test && exists_after)
        out->has_test_change = 1;
    int in_scope = (is_test && exists_after) || (scope != NULL && str_in_array(scope, path));
    if (!in_scope && add_unique(out->out_of_scope, path) != 0)
        return -1;

    size_t n = globs != NULL ? json_array_size(globs) : SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        const char *glob;
        if (globs != NULL) {
            json_t *g = json_array_get(globs, i);
            if (!json_is_string(g))
                continue;
            glob = json_string_value(g);
        } else {
            glob = validate_default_protected[i];
            if (glob == NULL)
                break;
        }
        if (!validate_glob_match(glob, path))
            continue;
        json_t *p = path_json(path);
        if (p == NULL)
            return -1;
        if (already_hit(out->protected_hits, p)) {
            json_decref(p);
            break;
        }
        json_t *hit = json_object();
        if (hit == NULL) {
            json_decref(p);
            return -1;
        }
        if (json_object_set_new(hit, "path", p) != 0 ||
            json_object_set_new(hit, "glob", json_string(glob)) != 0) {
            json_decref(hit);
            return -1;
        }
        if (json_array_append_new(out->protected_hits, hit) != 0)
            return -1;
        break;
    }
    return 0;
}

int validate_check(validate_static *out, const wt_diff *diff, json_t *scope,
                   json_t *protected_globs, size_t max_lines)
{
    if (out == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    if (diff == NULL || (diff->n > 0 && diff->files == NULL))
        return -1;
    out->out_of_scope = json_array();
    out->protected_hits = json_array();
    out->test_files = json_array();
    out->source_files = json_array();
    if (out->out_of_scope == NULL || out->protected_hits == NULL || out->test_files == NULL ||
        out->source_files == NULL)
        goto fail;
    if (!json_is_array(scope))
        scope = NULL;
    if (!json_is_array(protected_globs))
        protected_globs = NULL;

    for (size_t i = 0; i < diff->n; i++) {
        const wt_change *c = &diff->files[i];
        const char *path = c->path != NULL ? c->path : c->old_path;
        if (path == NULL)
            continue;
        if (touch(out, path, c->status != 'D', scope, protected_globs) != 0)
            goto fail;
        if (c->status == 'R' && c->old_path != NULL && strcmp(c->old_path, path) != 0 &&
            touch(out, c->old_path, 0, scope, protected_globs) != 0)
            goto fail;
    }

    if (max_lines == 0)
        max_lines = VALIDATE_DEFAULT_MAX_LINES;
    out->changed_lines =
        diff->added > SIZE_MAX - diff->removed ? SIZE_MAX : diff->added + diff->removed;
    out->empty = diff->n == 0;
    out->size_ok = out->changed_lines <= max_lines;
    out->scope_ok = json_array_size(out->out_of_scope) == 0;
    out->protected_ok = json_array_size(out->protected_hits) == 0;
    return 0;

fail:
    validate_static_free(out);
    return -1;
}

void validate_static_free(validate_static *v)
{
    if (v == NULL)
        return;
    json_decref(v->out_of_scope);
    json_decref(v->protected_hits);
    json_decref(v->test_files);
    json_decref(v->source_files);
    memset(v, 0, sizeof(*v));
}

/* ---------------------------------------------------------------- confidence */

double validate_confidence(const validate_signals *s)
{
    if (s == NULL || s->compiled == 0 || s->tests_passed == 0 || s->changed_lines == 0)
        return 0.0;
    double c = 0.4;
    if (s->regression_proven == 1)
        c += 0.3;
    if (s->compiled == 1)
        c += 0.1;
    if (s->tests_passed == 1)
        c += 0.1;
    double max = s->max_lines != 0 ? (double)s->max_lines : (double)VALIDATE_DEFAULT_MAX_LINES;
    double small = 1.0 - (double)s->changed_lines / max;
    if (small > 0)
        c += 0.1 * small;
    if (s->agent_exit_ok == 0)
        c -= 0.1;
    if ((s->scope_ok == 0 || s->size_ok == 0 || s->protected_ok == 0) && c > 0.5)
        c = 0.5;
    if (s->regression_proven == 0 && c > 0.5)
        c = 0.5;
    if (c < 0)
        c = 0;
    if (c > 1)
        c = 1;
    /* Two decimals, halves up (the epsilon absorbs 97.4999... for 97.5). */
    long long hundredths = (long long)(c * 100.0 + 0.5 + 1e-9);
    return (double)hundredths / 100.0;
}

/* ---------------------------------------------------------------- report */

static json_t *tri(int v)
{
    return v < 0 ? json_null() : json_boolean(v);
}

static json_t *array_or_empty(json_t *a)
{
    return a != NULL ? json_incref(a) : json_array();
}

json_t *validate_report(const validate_static *v, const validate_signals *s, double confidence)
{
    static const validate_static none = {0};
    json_t *r = json_object();
    if (r == NULL)
        return NULL;
    int scope_ok = v != NULL ? v->scope_ok : s != NULL ? s->scope_ok : -1;
    int size_ok = v != NULL ? v->size_ok : s != NULL ? s->size_ok : -1;
    int protected_ok = v != NULL ? v->protected_ok : s != NULL ? s->protected_ok : -1;
    size_t changed = v != NULL ? v->changed_lines : s != NULL ? s->changed_lines : 0;
    if (v == NULL)
        v = &none;
    size_t max_lines = s != NULL && s->max_lines != 0 ? s->max_lines : VALIDATE_DEFAULT_MAX_LINES;
    int fails = 0;
    fails |= json_object_set_new(r, "scope_ok", tri(scope_ok));
    fails |= json_object_set_new(r, "size_ok", tri(size_ok));
    fails |= json_object_set_new(r, "protected_ok", tri(protected_ok));
    fails |= json_object_set_new(r, "has_test_change", json_boolean(v->has_test_change));
    fails |= json_object_set_new(r, "empty", json_boolean(v->empty));
    fails |= json_object_set_new(r, "changed_lines", json_integer((json_int_t)changed));
    fails |= json_object_set_new(r, "max_lines", json_integer((json_int_t)max_lines));
    fails |= json_object_set_new(r, "out_of_scope", array_or_empty(v->out_of_scope));
    fails |= json_object_set_new(r, "protected", array_or_empty(v->protected_hits));
    fails |= json_object_set_new(r, "test_files", array_or_empty(v->test_files));
    fails |= json_object_set_new(r, "source_files", array_or_empty(v->source_files));
    fails |= json_object_set_new(r, "compiled", tri(s != NULL ? s->compiled : -1));
    fails |= json_object_set_new(r, "tests_passed", tri(s != NULL ? s->tests_passed : -1));
    fails |=
        json_object_set_new(r, "regression_proven", tri(s != NULL ? s->regression_proven : -1));
    fails |= json_object_set_new(r, "agent_exit_ok", tri(s != NULL ? s->agent_exit_ok : -1));
    fails |= json_object_set_new(r, "confidence", json_real(confidence));
    if (fails != 0) {
        json_decref(r);
        return NULL;
    }
    return r;
}
