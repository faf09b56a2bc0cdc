/*
 * Static checks on a fix and its confidence score (port/fix/validate.h).
 *
 * Confidence (validate_confidence), from the signals of one fix:
 *
 *   0 when compiled, tests_passed or existing_passed is 0, or nothing
 *   changed. Otherwise
 *     c  = 0.4
 *     c += 0.3  when regression_proven == 1 (the fix's tests fail on the
 *               base with the production error and pass on the fix)
 *     c += 0.1  when compiled == 1
 *     c += 0.1  when tests_passed == 1
 *     c += 0.1 * max(0, 1 - changed_lines / max_lines)   (max_lines 0: 40)
 *     c -= 0.1  when agent_exit_ok == 0
 *     c  = min(c, 0.5) unless regression_proven == 1, scope, size and
 *               protected are ok, the change is trusted and the agent
 *               was contained (what validation did not prove caps it)
 *     c  = clamp(c, 0, 1), rounded to 2 decimals (halves up).
 *
 * A human decides (validate_needs_human) when a production file is out
 * of scope, a protected path is touched, an existing test is modified or
 * deleted, production code compares against values from the tests or
 * gains a capability (the table `capabilities`), test code reads
 * production source, a test-located file could not be checked, the
 * regression is not proven, or the agent ran without the sandbox.
 *
 * Test code (validate_check): a path is test code when it matches the
 * test globs and no production file of the fix names it: its repository
 * path, its module (Python's dotted path, an Elixir defmodule, an Erlang
 * -module) or, for names that say test/spec/suite, its base name. Such a
 * file is production code, whatever its name.
 *
 * Special cases: in the lines a production file gains (lines of the fix's
 * version absent from the base's), a literal compared for equality or
 * membership (==, !=, ===, !==, =~, in, is, case ...:, ... ->) or matched
 * in a function head's arguments, that is not trivial (0, 1, -1, empty),
 * that the base's version of the file does not contain and that appears
 * in the fix's test code: production special-cases a value of the tests.
 *
 * Globs (validate_glob_match): both sides are split at '/' (empty and "."
 * segments dropped); a "**" segment matches zero or more path segments,
 * every other segment is matched against one path segment by fnmatch(3)
 * without FNM_PERIOD ('*' matches a leading dot too). Matching is a
 * dynamic programme over (glob segment, path segment) pairs, so no glob
 * costs more than (glob segments x path segments) fnmatch calls.
 */
#define _GNU_SOURCE /* memmem */
#include "validate.h"

#include <fnmatch.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GLOB_MAX_BYTES 1024
#define PATH_MAX_BYTES 4096
#define MAX_SEGS 256
#define SCAN_FILE_MAX (1024 * 1024)       /* bytes of one file scanned */
#define SCAN_FILES_MAX 20000              /* production files scanned for test names */
#define SCAN_TOTAL_MAX (64 * 1024 * 1024) /* bytes scanned in all */
#define CORPUS_MAX (8 * 1024 * 1024)      /* bytes of test code searched for values */
#define NAMES_MAX 64
#define LITERAL_MAX 120
#define SPECIAL_MAX 20

/* Auth, migrations, CI, deploy, build and dependency files, production
 * configuration, secrets: a fix touching any of them always goes to a
 * human. */
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
    "deploy/**",
    "**/deploy/**",
    "bin/**",
    "rel/**",
    "**/Dockerfile*",
    "**/docker-compose*.yml",
    "**/docker-compose*.yaml",
    "**/k8s/**",
    "**/helm/**",
    "**/terraform/**",
    "**/*.tf",
    "fly.toml",
    "Procfile",
    /* build and dependencies */
    "**/mix.exs",
    "**/mix.lock",
    "**/rebar.config",
    "**/*.lock",
    "**/Makefile",
    "**/makefile",
    "**/GNUmakefile",
    "**/*.mk",
    "**/setup.py",
    "**/setup.cfg",
    "**/pyproject.toml",
    "**/requirements*.txt",
    "**/package.json",
    "**/package-lock.json",
    "**/pnpm-lock.yaml",
    "**/go.mod",
    "**/go.sum",
    "**/Cargo.toml",
    "**/pom.xml",
    "**/build.gradle*",
    "**/Gemfile",
    /* configuration */
    "config/**",
    "apps/*/config/**",
    /* secrets and keys */
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
    /* git's own files */
    "**/.git*",
    "**/.git*/**",
    NULL,
};

const char *const validate_default_tests[] = {
    "test/**",
    "tests/**",
    "spec/**",
    "apps/*/test/**",
    "src/test/**",
    "**/__tests__/**",
    "**/*.test.js",
    "**/*.test.jsx",
    "**/*.test.ts",
    "**/*.test.tsx",
    "**/*.test.mjs",
    "**/*.test.cjs",
    "**/*.spec.js",
    "**/*.spec.jsx",
    "**/*.spec.ts",
    "**/*.spec.tsx",
    "**/*.spec.mjs",
    "**/*.spec.cjs",
    "**/*_test.go",
    "test_*.py",
    "*_test.py",
    "**/conftest.py",
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

/* ---------------------------------------------------------------- helpers */

/* A JSON string for a repository path (git paths are bytes). */
static json_t *path_json(const char *path)
{
    return wt_json_lossy(path, PATH_MAX_BYTES);
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
    if (str_in_array(arr, path))
        return 0;
    json_t *s = path_json(path);
    return s != NULL ? json_array_append_new(arr, s) : -1;
}

/* Appends {"path": path, key: value} (value stolen). */
static int add_pair(json_t *arr, const char *path, const char *key, json_t *value)
{
    json_t *o = json_object();
    if (o == NULL || value == NULL) {
        json_decref(o);
        json_decref(value);
        return -1;
    }
    /* json_object_set_new steals its value even when it fails */
    if (json_object_set_new(o, "path", path_json(path)) != 0 ||
        json_object_set_new(o, key, value) != 0) {
        json_decref(o);
        return -1;
    }
    return json_array_append_new(arr, o);
}

static int is_ident(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c >= 0x80;
}

/* 1 when needle occurs in hay as a whole word (no identifier character
 * on either side). */
static int has_word(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    if (nlen == 0 || nlen > hlen)
        return 0;
    const char *end = hay + hlen;
    const char *p = hay;
    while (p + nlen <= end) {
        const char *hit = memchr(p, needle[0], (size_t)(end - p - (ptrdiff_t)nlen + 1));
        if (hit == NULL)
            return 0;
        if (memcmp(hit, needle, nlen) == 0 && (hit == hay || !is_ident((unsigned char)hit[-1])) &&
            (hit + nlen == end || !is_ident((unsigned char)hit[nlen])))
            return 1;
        p = hit + 1;
    }
    return 0;
}

static int looks_text(const char *data, size_t len)
{
    return memchr(data, '\0', len < 8192 ? len : 8192) == NULL;
}

/* ---------------------------------------------------------------- test code */

static int match_any(json_t *globs, const char *const *dflt, const char *path)
{
    if (globs == NULL) {
        for (size_t i = 0; dflt[i] != NULL; i++)
            if (validate_glob_match(dflt[i], path))
                return 1;
        return 0;
    }
    size_t i;
    json_t *g;
    json_array_foreach(globs, i, g)
    {
        if (json_is_string(g) && validate_glob_match(json_string_value(g), path))
            return 1;
    }
    return 0;
}

int validate_test_located(const char *path, json_t *globs)
{
    if (path == NULL)
        return 0;
    return match_any(json_is_array(globs) ? globs : NULL, validate_default_tests, path);
}

typedef struct names {
    char *v[NAMES_MAX];
    size_t n;
} names;

static void names_add(names *ns, const char *s, size_t len)
{
    if (len < 3 || ns->n >= NAMES_MAX)
        return;
    for (size_t i = 0; i < ns->n; i++)
        if (strlen(ns->v[i]) == len && memcmp(ns->v[i], s, len) == 0)
            return;
    char *c = malloc(len + 1);
    if (c == NULL)
        return;
    memcpy(c, s, len);
    c[len] = '\0';
    ns->v[ns->n++] = c;
}

static void names_free(names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    ns->n = 0;
}

/* Names following `kw` (defmodule, -module() in text: module names. */
static void module_names(names *ns, const char *text, size_t len, const char *kw)
{
    size_t kl = strlen(kw);
    for (size_t i = 0; i + kl < len; i++) {
        if (memcmp(text + i, kw, kl) != 0 || (i > 0 && is_ident((unsigned char)text[i - 1])))
            continue;
        size_t j = i + kl;
        while (j < len && (text[j] == ' ' || text[j] == '\t'))
            j++;
        size_t k = j;
        while (k < len && (is_ident((unsigned char)text[k]) || text[k] == '.'))
            k++;
        if (k > j)
            names_add(ns, text + j, k - j);
    }
}

/* The names under which production code could load the file at path:
 * its path with and without its extension, its base name without the
 * extension (but for __init__ and index), Python's dotted module, the
 * modules it defines (Elixir, Erlang). */
static void load_names(names *ns, const char *path, const char *text, size_t len)
{
    names_add(ns, path, strlen(path));
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t stem = dot != NULL && dot != base ? (size_t)(dot - base) : strlen(base);
    if (dot != NULL && dot != base)
        names_add(ns, path, (size_t)(dot - path));
    if (!(stem == 8 && memcmp(base, "__init__", 8) == 0) &&
        !(stem == 5 && memcmp(base, "index", 5) == 0))
        names_add(ns, base, stem);
    size_t plen = strlen(path);
    if (plen > 3 && strcmp(path + plen - 3, ".py") == 0 && plen - 3 < 512) {
        char dotted[512];
        memcpy(dotted, path, plen - 3);
        dotted[plen - 3] = '\0';
        for (char *p = dotted; *p != '\0'; p++)
            if (*p == '/')
                *p = '.';
        names_add(ns, dotted, plen - 3);
    }
    if (text != NULL) {
        module_names(ns, text, len, "defmodule");
        module_names(ns, text, len, "-module(");
    }
}

/* ---------------------------------------------------------------- special cases */

typedef struct lit {
    char text[LITERAL_MAX + 1];
    int kind; /* 'n' number, 's' string, 'c' composite */
} lit;

static int trivial_number(const char *t)
{
    if (*t == '-')
        t++;
    return strcmp(t, "0") == 0 || strcmp(t, "1") == 0 || strcmp(t, "0.0") == 0 ||
           strcmp(t, "1.0") == 0;
}

/* A number starting at s[i] (digits, '_', one '.', an exponent) -> its
 * end; the text without '_' in out. */
static size_t scan_number(const char *s, size_t len, size_t i, lit *out)
{
    size_t o = 0, j = i;
    int dot = 0;
    while (j < len) {
        char c = s[j];
        if (c >= '0' && c <= '9') {
            if (o < LITERAL_MAX)
                out->text[o++] = c;
        } else if (c == '_') {
        } else if (c == '.' && !dot && j + 1 < len && s[j + 1] >= '0' && s[j + 1] <= '9') {
            dot = 1;
            if (o < LITERAL_MAX)
                out->text[o++] = c;
        } else {
            break;
        }
        j++;
    }
    out->text[o] = '\0';
    out->kind = 'n';
    return j;
}

/* A quoted string at s[i] (quote q) -> its end after the closing quote;
 * the content in out. 0 when unterminated on this line. */
static size_t scan_string(const char *s, size_t len, size_t i, lit *out)
{
    char q = s[i];
    size_t o = 0, j = i + 1;
    while (j < len && s[j] != q) {
        if (s[j] == '\\' && j + 1 < len)
            j++;
        if (o < LITERAL_MAX)
            out->text[o++] = s[j];
        j++;
    }
    if (j >= len)
        return 0;
    out->text[o] = '\0';
    out->kind = 's';
    return j + 1;
}

/* A bracketed group of literals only ([2, 4], {"a", 1}, %{...}) at s[i]
 * -> its end; its text without blanks in out. 0 when it is not one. */
static size_t scan_composite(const char *s, size_t len, size_t i, lit *out)
{
    size_t o = 0, j = i;
    int depth = 0, literals = 0;
    while (j < len) {
        char c = s[j];
        if (c == '[' || c == '{' || c == '(') {
            depth++;
        } else if (c == ']' || c == '}' || c == ')') {
            depth--;
        } else if (c == '"' || c == '\'') {
            lit tmp;
            size_t e = scan_string(s, len, j, &tmp);
            if (e == 0)
                return 0;
            for (size_t k = j; k < e && o < LITERAL_MAX; k++)
                out->text[o++] = s[k];
            j = e;
            literals++;
            continue;
        } else if (c >= '0' && c <= '9') {
            literals++;
        } else if (!(c == ',' || c == ' ' || c == '\t' || c == '.' || c == '-' || c == '_' ||
                     c == ':' || c == '%' || c == '=' || c == '>')) {
            return 0; /* a name or an expression inside: not a literal */
        }
        if (c != ' ' && c != '\t' && o < LITERAL_MAX)
            out->text[o++] = c;
        j++;
        if (depth == 0)
            break;
    }
    if (depth != 0 || literals == 0 || o >= LITERAL_MAX)
        return 0;
    out->text[o] = '\0';
    out->kind = 'c';
    return j;
}

typedef struct tok {
    int kind; /* 'l' literal, 'o' operator, 'w' word, 'p' other */
    char text[16];
    lit value;
    int depth; /* bracket depth where it stands */
} tok;

#define LINE_TOKENS 96

static size_t tokenize(const char *s, size_t len, tok *out, size_t max)
{
    static const char *const ops[] = {"===", "!==", "==", "!=", "=~", "->", NULL};
    size_t n = 0, i = 0;
    int depth = 0;
    while (i < len && n < max) {
        char c = s[i];
        tok *t = &out[n];
        memset(t, 0, sizeof(*t));
        t->depth = depth;
        if (c == ' ' || c == '\t' || c == '\r') {
            i++;
            continue;
        }
        if (c == '"' || c == '\'') {
            size_t e = scan_string(s, len, i, &t->value);
            if (e == 0)
                break;
            t->kind = 'l';
            i = e;
            n++;
            continue;
        }
        if ((c == '[' || c == '{' || (c == '%' && i + 1 < len && s[i + 1] == '{'))) {
            size_t e = scan_composite(s, len, c == '%' ? i + 1 : i, &t->value);
            if (e != 0) {
                t->kind = 'l';
                i = e;
                n++;
                continue;
            }
        }
        if ((c >= '0' && c <= '9') || (c == '-' && i + 1 < len && s[i + 1] >= '0' &&
                                       s[i + 1] <= '9' && (n == 0 || out[n - 1].kind != 'l') &&
                                       (i == 0 || !is_ident((unsigned char)s[i - 1])))) {
            if (i > 0 && is_ident((unsigned char)s[i - 1]) && c != '-') {
                i++; /* the digits of a name */
                continue;
            }
            size_t start = c == '-' ? i + 1 : i;
            i = scan_number(s, len, start, &t->value);
            if (c == '-') {
                size_t tl = strlen(t->value.text);
                if (tl < LITERAL_MAX) {
                    memmove(t->value.text + 1, t->value.text, tl + 1);
                    t->value.text[0] = '-';
                }
            }
            t->kind = 'l';
            n++;
            continue;
        }
        if (is_ident((unsigned char)c)) {
            size_t j = i, o = 0;
            while (j < len && is_ident((unsigned char)s[j])) {
                if (o < sizeof(t->text) - 1)
                    t->text[o++] = s[j];
                j++;
            }
            t->kind = 'w';
            i = j;
            n++;
            continue;
        }
        int matched = 0;
        for (size_t k = 0; ops[k] != NULL; k++) {
            size_t ol = strlen(ops[k]);
            if (i + ol <= len && memcmp(s + i, ops[k], ol) == 0) {
                memcpy(t->text, ops[k], ol);
                t->kind = 'o';
                i += ol;
                matched = 1;
                break;
            }
        }
        if (!matched) {
            t->kind = 'p';
            t->text[0] = c;
            if (c == '(' || c == '[' || c == '{')
                depth++;
            else if ((c == ')' || c == ']' || c == '}') && depth > 0)
                depth--;
            i++;
        }
        n++;
    }
    return n;
}

static int tok_is(const tok *t, int kind, const char *text)
{
    return t->kind == kind && strcmp(t->text, text) == 0;
}

static int compares(const tok *t)
{
    return t->kind == 'o' && strcmp(t->text, "->") != 0;
}

/* 1 when the literal at index i of the line's tokens is compared or
 * matched. */
static int compared(const tok *ts, size_t n, size_t i)
{
    const tok *prev = i > 0 ? &ts[i - 1] : NULL;
    const tok *next = i + 1 < n ? &ts[i + 1] : NULL;
    if (prev != NULL && (compares(prev) || tok_is(prev, 'w', "in") || tok_is(prev, 'w', "is") ||
                         tok_is(prev, 'w', "case")))
        return 1;
    if (next != NULL && (compares(next) || tok_is(next, 'o', "->")))
        return 1;
    if (n > 0 && tok_is(&ts[0], 'w', "case") && next != NULL && tok_is(next, 'p', ":"))
        return 1;
    /* the arguments of a function head: def f(2, "x") / defp f([2, 4]) */
    if (n >= 3 && ts[0].kind == 'w' &&
        (strcmp(ts[0].text, "def") == 0 || strcmp(ts[0].text, "defp") == 0) && ts[i].depth == 1)
        return 1;
    return 0;
}

static int trivial(const lit *l)
{
    if (l->kind == 'n')
        return trivial_number(l->text);
    if (l->kind == 's')
        return l->text[0] == '\0';
    return strlen(l->text) <= 3; /* [], {}, %{} */
}

/* Whether the literal appears in text (the base file, or test code);
 * squeezed: text without blanks, for composites. */
static int appears(const lit *l, const char *text, size_t len, const char *squeezed, size_t slen)
{
    size_t tl = strlen(l->text);
    if (l->kind == 'c')
        return squeezed != NULL && tl <= slen && memmem(squeezed, slen, l->text, tl) != NULL;
    if (l->kind == 'n') {
        const char *end = text + len;
        const char *p = text;
        while (p + tl <= end) {
            const char *hit = memmem(p, (size_t)(end - p), l->text, tl);
            if (hit == NULL)
                return 0;
            int before = hit > text && (is_ident((unsigned char)hit[-1]) || hit[-1] == '.');
            int after = hit + tl < end && (is_ident((unsigned char)hit[tl]) ||
                                           (hit[tl] == '.' && hit + tl + 1 < end &&
                                            hit[tl + 1] >= '0' && hit[tl + 1] <= '9'));
            if (!before && !after)
                return 1;
            p = hit + 1;
        }
        return 0;
    }
    /* a string: the same characters between quotes of any kind */
    static const char quotes[] = "\"'`";
    for (size_t q = 0; q < 3; q++) {
        const char *end = text + len;
        const char *p = text;
        while (p + tl + 2 <= end) {
            const char *hit = memmem(p, (size_t)(end - p), l->text, tl);
            if (hit == NULL)
                break;
            if (hit > text && hit[-1] == quotes[q] && hit + tl < end && hit[tl] == quotes[q])
                return 1;
            p = hit + 1;
        }
    }
    return 0;
}

static char *squeeze(const char *s, size_t len, size_t *out_len)
{
    char *o = malloc(len + 1);
    size_t n = 0;
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            o[n++] = s[i];
    o[n] = '\0';
    *out_len = n;
    return o;
}

/* 1 when the line (trimmed) is in text as a whole line. */
static int has_line(const char *text, size_t len, const char *line, size_t ll)
{
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl != NULL ? nl : end;
        const char *a = p;
        while (a < e && (*a == ' ' || *a == '\t'))
            a++;
        const char *b = e;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
            b--;
        if ((size_t)(b - a) == ll && memcmp(a, line, ll) == 0)
            return 1;
        p = e + 1;
    }
    return 0;
}

typedef struct corpus {
    char *text;
    size_t len;
    char *squeezed;
    size_t slen;
} corpus;

/* Calls fn for each line of fix (trimmed; comments and lines over 4 KiB
 * skipped) that base (may be NULL) does not have, until fn returns
 * nonzero. */
typedef int (*line_fn)(void *ctx, const char *line, size_t len, long lineno);

static int added_lines(const char *base, size_t blen, const char *fix, size_t flen, line_fn fn,
                       void *ctx)
{
    const char *p = fix, *end = fix + flen;
    long lineno = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl != NULL ? nl : end;
        lineno++;
        const char *a = p;
        while (a < e && (*a == ' ' || *a == '\t'))
            a++;
        const char *b = e;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
            b--;
        size_t ll = (size_t)(b - a);
        int comment = ll > 0 && (a[0] == '#' || a[0] == '%' || a[0] == '*' ||
                                 (ll > 1 && a[0] == '/' && a[1] == '/'));
        if (ll > 0 && ll < 4096 && !comment && (base == NULL || !has_line(base, blen, a, ll))) {
            int r = fn(ctx, a, ll, lineno);
            if (r != 0)
                return r < 0 ? -1 : 0;
        }
        p = e + 1;
    }
    return 0;
}

typedef struct special_ctx {
    json_t *out;
    const char *path;
    const char *base;
    size_t blen;
    char *bsq;
    size_t bsq_len;
    const corpus *tests;
    tok *ts;
} special_ctx;

static int special_line(void *ctx, const char *line, size_t len, long lineno)
{
    special_ctx *c = ctx;
    if (json_array_size(c->out) >= SPECIAL_MAX)
        return 1;
    size_t n = tokenize(line, len, c->ts, LINE_TOKENS);
    for (size_t i = 0; i < n; i++) {
        if (c->ts[i].kind != 'l' || trivial(&c->ts[i].value) || !compared(c->ts, n, i))
            continue;
        const lit *l = &c->ts[i].value;
        if (c->base != NULL && appears(l, c->base, c->blen, c->bsq, c->bsq_len))
            continue;
        if (!appears(l, c->tests->text, c->tests->len, c->tests->squeezed, c->tests->slen))
            continue;
        json_t *hit = json_pack("{s:s, s:I}", "value", l->text, "line", (json_int_t)lineno);
        return hit == NULL || add_pair(c->out, c->path, "case", hit) != 0 ? -1 : 0;
    }
    return 0;
}

/* The special cases of one production file into out. */
static int special_in_file(json_t *out, const char *path, const char *base, size_t blen,
                           const char *fix, size_t flen, const corpus *tests)
{
    special_ctx c = {out, path, base, blen, NULL, 0, tests, malloc(LINE_TOKENS * sizeof(tok))};
    if (base != NULL)
        c.bsq = squeeze(base, blen, &c.bsq_len);
    int rc = c.ts == NULL ? -1 : added_lines(base, blen, fix, flen, special_line, &c);
    free(c.ts);
    free(c.bsq);
    return rc;
}

/* ---------------------------------------------------------------- capabilities */

/* What a fix of an error has no business adding to production code: a
 * capability it did not use before. A token counts where it starts a word
 * (a call-like token "name(" also not after a '.', so Map.fetch( is not
 * fetch(). */
typedef struct capability {
    const char *token;
    const char *what;
} capability;

static const capability capabilities[] = {
    {"subprocess", "runs programs"},
    {"os.system", "runs programs"},
    {"os.popen", "runs programs"},
    {"os.exec", "runs programs"},
    {"os.spawn", "runs programs"},
    {"System.cmd", "runs programs"},
    {"System.shell", "runs programs"},
    {":os.cmd", "runs programs"},
    {"os:cmd", "runs programs"},
    {"Port.open", "runs programs"},
    {"open_port", "runs programs"},
    {"child_process", "runs programs"},
    {"ProcessBuilder", "runs programs"},
    {"Runtime.getRuntime", "runs programs"},
    {"IO.popen", "runs programs"},
    {"system(", "runs programs"},
    {"socket", "uses the network"},
    {"urllib", "uses the network"},
    {"requests", "uses the network"},
    {"http.client", "uses the network"},
    {"httpx", "uses the network"},
    {"aiohttp", "uses the network"},
    {":httpc", "uses the network"},
    {"httpc:", "uses the network"},
    {":gen_tcp", "uses the network"},
    {"gen_tcp:", "uses the network"},
    {":gen_udp", "uses the network"},
    {":ssl", "uses the network"},
    {"HTTPoison", "uses the network"},
    {"Finch", "uses the network"},
    {"Mint.HTTP", "uses the network"},
    {"Tesla", "uses the network"},
    {"Req.", "uses the network"},
    {"fetch(", "uses the network"},
    {"XMLHttpRequest", "uses the network"},
    {"WebSocket", "uses the network"},
    {"java.net", "uses the network"},
    {"Net::HTTP", "uses the network"},
    {"TCPSocket", "uses the network"},
    {"os.environ", "reads the environment"},
    {"os.getenv", "reads the environment"},
    {"getenv", "reads the environment"},
    {"System.get_env", "reads the environment"},
    {"System.fetch_env", "reads the environment"},
    {"System.put_env", "reads the environment"},
    {"process.env", "reads the environment"},
    {"ENV[", "reads the environment"},
    {"eval(", "runs code made from data"},
    {"exec(", "runs code made from data"},
    {"__import__", "runs code made from data"},
    {"importlib", "runs code made from data"},
    {"Code.eval", "runs code made from data"},
    {"Code.compile", "runs code made from data"},
    {"Code.require_file", "runs code made from data"},
    {"binary_to_term", "runs code made from data"},
    {"pickle", "runs code made from data"},
    {"marshal", "runs code made from data"},
    {"Function(", "runs code made from data"},
    {"ObjectInputStream", "runs code made from data"},
    {"Class.forName", "runs code made from data"},
    {"ctypes", "runs code made from data"},
    {"load_nif", "runs code made from data"},
    {"File.write", "writes files"},
    {"File.rm", "writes files"},
    {"shutil", "writes files"},
    {"os.remove", "writes files"},
    {"os.unlink", "writes files"},
    {"writeFile", "writes files"},
    {"fs.unlink", "writes files"},
    {"file:write", "writes files"},
    {":file.write", "writes files"},
    {"unittest", "reaches into the test framework"},
    {"pytest", "reaches into the test framework"},
    {"ExUnit", "reaches into the test framework"},
    {"eunit", "reaches into the test framework"},
    {"jest", "reaches into the test framework"},
    {"mocha", "reaches into the test framework"},
    {"vitest", "reaches into the test framework"},
    {"junit", "reaches into the test framework"},
    {NULL, NULL},
};

/* 1 when token occurs in text[0..len) where a word starts. */
static int has_token(const char *text, size_t len, const char *token)
{
    size_t tl = strlen(token);
    int call = tl > 1 && token[tl - 1] == '(' && strchr(token, '.') == NULL;
    const char *end = text + len;
    for (const char *p = text; p + tl <= end;) {
        const char *hit = memmem(p, (size_t)(end - p), token, tl);
        if (hit == NULL)
            return 0;
        unsigned char before = hit > text ? (unsigned char)hit[-1] : ' ';
        unsigned char last = (unsigned char)token[tl - 1];
        int starts = !is_ident(before) && !(call && before == '.');
        int ends = !is_ident(last) || hit + tl == end || !is_ident((unsigned char)hit[tl]);
        if (starts && ends)
            return 1;
        p = hit + 1;
    }
    return 0;
}

typedef struct cap_ctx {
    json_t *out;
    const char *path;
    const char *base;
    size_t blen;
} cap_ctx;

static int capability_line(void *ctx, const char *line, size_t len, long lineno)
{
    cap_ctx *c = ctx;
    if (json_array_size(c->out) >= SPECIAL_MAX)
        return 1;
    for (size_t i = 0; capabilities[i].token != NULL; i++) {
        const char *t = capabilities[i].token;
        if (!has_token(line, len, t) || (c->base != NULL && has_token(c->base, c->blen, t)))
            continue;
        json_t *hit = json_pack("{s:s, s:s, s:I}", "token", t, "what", capabilities[i].what, "line",
                                (json_int_t)lineno);
        return hit == NULL || add_pair(c->out, c->path, "capability", hit) != 0 ? -1 : 0;
    }
    return 0;
}

/* 1 when the test text names the production file path as a string (a
 * test reading the code's source instead of running it). */
static int reads_source(const char *text, size_t len, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    if (strchr(base, '.') == NULL)
        return 0;
    const char *forms[2] = {path, base};
    for (int k = 0; k < 2; k++) {
        size_t nl = strlen(forms[k]);
        const char *end = text + len;
        for (const char *p = text; p + nl < end;) {
            const char *hit = memmem(p, (size_t)(end - p), forms[k], nl);
            if (hit == NULL)
                break;
            char before = hit > text ? hit[-1] : ' ';
            char after = hit[nl];
            if ((before == '"' || before == '\'' || before == '/' || before == '`') &&
                (after == '"' || after == '\'' || after == '`'))
                return 1;
            p = hit + 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- check */

typedef struct checker {
    const validate_input *in;
    validate_static *out;
    json_t *test_globs;
} checker;

static int is_test_code(checker *c, const char *path);

static int protected_hit(checker *c, const char *path)
{
    json_t *globs = json_is_array(c->in->protected_globs) ? c->in->protected_globs : NULL;
    const char *hit = NULL;
    for (size_t i = 0; validate_default_protected[i] != NULL && hit == NULL; i++)
        if (validate_glob_match(validate_default_protected[i], path))
            hit = validate_default_protected[i];
    size_t i;
    json_t *g;
    json_array_foreach(globs, i, g)
    {
        if (hit == NULL && json_is_string(g) && validate_glob_match(json_string_value(g), path))
            hit = json_string_value(g);
    }
    if (hit == NULL || str_in_array(c->out->protected_hits, path))
        return 0;
    return add_pair(c->out->protected_hits, path, "glob", json_string(hit));
}

/* Test-located paths in the change that production code names: moved to
 * loaded_tests. Sets tests_verified to 0 when the scan was cut short. */
static int scan_production(checker *c, json_t *candidates)
{
    const validate_input *in = c->in;
    if (json_array_size(candidates) == 0)
        return 0;
    if (in->read == NULL || !json_is_array(in->fix_files)) {
        c->out->tests_verified = 0;
        return 0;
    }
    names *per = calloc(json_array_size(candidates), sizeof(*per));
    if (per == NULL)
        return -1;
    size_t i;
    json_t *v;
    json_array_foreach(candidates, i, v)
    {
        const char *path = json_string_value(v);
        size_t len = 0;
        char *text = in->read(in->payload, 1, path, SCAN_FILE_MAX, &len);
        load_names(&per[i], path, text, text != NULL ? len : 0);
        free(text);
    }
    size_t files = 0, bytes = 0;
    int rc = 0;
    size_t k;
    json_t *f;
    json_array_foreach(in->fix_files, k, f)
    {
        const char *path = json_string_value(f);
        if (path == NULL || validate_test_located(path, c->test_globs))
            continue;
        if (++files > SCAN_FILES_MAX || bytes > SCAN_TOTAL_MAX) {
            c->out->tests_verified = 0;
            break;
        }
        size_t len = 0;
        char *text = in->read(in->payload, 1, path, SCAN_FILE_MAX, &len);
        if (text == NULL)
            continue; /* too large for a source file, or gone */
        bytes += len;
        if (looks_text(text, len)) {
            json_array_foreach(candidates, i, v)
            {
                const char *cand = json_string_value(v);
                if (str_in_array(c->out->loaded_tests, cand))
                    continue;
                for (size_t n = 0; n < per[i].n; n++) {
                    if (has_word(text, len, per[i].v[n], strlen(per[i].v[n]))) {
                        if (add_pair(c->out->loaded_tests, cand, "by", path_json(path)) != 0)
                            rc = -1;
                        break;
                    }
                }
            }
        }
        free(text);
    }
    json_array_foreach(candidates, i, v) names_free(&per[i]);
    free(per);
    return rc;
}

/* The fix's test code as one text (bounded), and without blanks. */
static int load_corpus(checker *c, corpus *out)
{
    const validate_input *in = c->in;
    sh_buf b;
    sh_buf_init(&b);
    size_t k;
    json_t *f;
    json_array_foreach(in->fix_files, k, f)
    {
        const char *path = json_string_value(f);
        if (path == NULL || !validate_test_located(path, c->test_globs) ||
            str_in_array(c->out->loaded_tests, path) || b.len >= CORPUS_MAX)
            continue;
        size_t len = 0;
        char *text = in->read(in->payload, 1, path, SCAN_FILE_MAX, &len);
        if (text != NULL && looks_text(text, len)) {
            sh_buf_append(&b, text, len);
            sh_buf_append_byte(&b, '\n');
        }
        free(text);
    }
    if (b.oom) {
        sh_buf_free(&b);
        return -1;
    }
    out->len = b.len;
    out->text = b.data != NULL ? b.data : calloc(1, 1);
    out->squeezed = out->text != NULL ? squeeze(out->text, out->len, &out->slen) : NULL;
    return out->text != NULL && out->squeezed != NULL ? 0 : -1;
}

static int check_source_reads(checker *c)
{
    const validate_input *in = c->in;
    if (in->read == NULL || !json_is_array(in->fix_files))
        return 0;
    int rc = 0;
    size_t i;
    json_t *v;
    json_array_foreach(c->out->test_files, i, v)
    {
        const char *test = json_string_value(v);
        size_t len = 0;
        char *text = in->read(in->payload, 1, test, SCAN_FILE_MAX, &len);
        if (text == NULL || !looks_text(text, len)) {
            free(text);
            continue; /* deleted, or not text */
        }
        /* or reads the code through introspection */
        static const char *const introspection[] = {"getsource", "__code__", "co_code",
                                                    "co_consts", "dis.dis",  NULL};
        int found = 0;
        for (size_t t = 0; introspection[t] != NULL && !found; t++) {
            if (has_token(text, len, introspection[t])) {
                found = 1;
                if (add_pair(c->out->source_reads, test, "reads", json_string(introspection[t])) !=
                    0)
                    rc = -1;
            }
        }
        size_t k, seen = 0;
        json_t *f;
        json_array_foreach(in->fix_files, k, f)
        {
            if (found)
                break;
            const char *prod = json_string_value(f);
            if (prod == NULL || is_test_code(c, prod))
                continue;
            if (++seen > SCAN_FILES_MAX) {
                c->out->tests_verified = 0;
                break;
            }
            if (reads_source(text, len, prod)) {
                if (add_pair(c->out->source_reads, test, "reads", path_json(prod)) != 0)
                    rc = -1;
                break;
            }
        }
        free(text);
    }
    return rc;
}

/* The lines the change adds to production files: special cases (against
 * the fix's test code) and new capabilities, one read of each file. */
static int check_production_lines(checker *c)
{
    const validate_input *in = c->in;
    if (in->read == NULL || json_array_size(c->out->source_files) == 0)
        return 0;
    corpus tests = {0};
    int with_tests = json_is_array(in->fix_files);
    if (with_tests && load_corpus(c, &tests) != 0) {
        free(tests.text);
        free(tests.squeezed);
        return -1;
    }
    int rc = 0;
    size_t i;
    json_t *v;
    json_array_foreach(c->out->source_files, i, v)
    {
        const char *path = json_string_value(v);
        size_t blen = 0, flen = 0;
        char *fix = in->read(in->payload, 1, path, SCAN_FILE_MAX, &flen);
        if (fix == NULL || !looks_text(fix, flen)) {
            free(fix);
            continue;
        }
        char *base = in->read(in->payload, 0, path, SCAN_FILE_MAX, &blen);
        cap_ctx cc = {c->out->capabilities, path, base, blen};
        if ((with_tests &&
             special_in_file(c->out->special_cases, path, base, blen, fix, flen, &tests) != 0) ||
            added_lines(base, blen, fix, flen, capability_line, &cc) != 0)
            rc = -1;
        free(base);
        free(fix);
    }
    free(tests.text);
    free(tests.squeezed);
    return rc;
}

/* Where a path stands: 1 test code, 0 production. */
static int is_test_code(checker *c, const char *path)
{
    return validate_test_located(path, c->test_globs) && !str_in_array(c->out->loaded_tests, path);
}

static int classify(checker *c)
{
    const wt_diff *d = c->in->diff;
    validate_static *out = c->out;
    for (size_t i = 0; i < d->n; i++) {
        const wt_change *f = &d->files[i];
        const char *paths[2] = {f->path, f->status == 'R' ? f->old_path : NULL};
        for (int k = 0; k < 2; k++) {
            const char *path = paths[k];
            if (path == NULL)
                continue;
            int gone = f->status == 'D' || k == 1;
            if (is_test_code(c, path)) {
                if (add_unique(out->test_files, path) != 0)
                    return -1;
                /* an existing test loses a line, or goes away */
                int existing = f->status == 'M' || f->status == 'D' || k == 1;
                if (existing && (f->removed > 0 || gone) &&
                    add_unique(out->tests_modified, path) != 0)
                    return -1;
                if (!gone && f->added > 0)
                    out->has_test_change = 1;
            } else {
                if (add_unique(out->source_files, path) != 0)
                    return -1;
                json_t *scope = c->in->scope;
                if (!(json_is_array(scope) && str_in_array(scope, path)) &&
                    add_unique(out->out_of_scope, path) != 0)
                    return -1;
            }
            if (protected_hit(c, path) != 0)
                return -1;
        }
        if (f->binary && !str_in_array(out->refused, f->path) &&
            add_pair(out->refused, f->path, "reason", json_string("binary content")))
            return -1;
        if ((f->new_mode == 0160000 || f->old_mode == 0160000) &&
            !str_in_array(out->refused, f->path) &&
            add_pair(out->refused, f->path, "reason", json_string("a submodule")))
            return -1;
        if (f->new_mode == 0120000 && !str_in_array(out->refused, f->path) &&
            add_pair(out->refused, f->path, "reason", json_string("a symlink")))
            return -1;
        if (f->new_mode == 0100755 && f->old_mode != 0100755 &&
            !str_in_array(out->refused, f->path) &&
            add_pair(out->refused, f->path, "reason", json_string("a file made executable")))
            return -1;
    }
    return 0;
}

int validate_check(validate_static *out, const validate_input *in)
{
    if (out == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    if (in == NULL || in->diff == NULL || (in->diff->n > 0 && in->diff->files == NULL))
        return -1;
    const wt_diff *d = in->diff;
    out->out_of_scope = json_array();
    out->protected_hits = json_array();
    out->refused = json_array();
    out->test_files = json_array();
    out->source_files = json_array();
    out->tests_modified = json_array();
    out->loaded_tests = json_array();
    out->special_cases = json_array();
    out->capabilities = json_array();
    out->source_reads = json_array();
    if (out->out_of_scope == NULL || out->protected_hits == NULL || out->refused == NULL ||
        out->test_files == NULL || out->source_files == NULL || out->tests_modified == NULL ||
        out->loaded_tests == NULL || out->special_cases == NULL || out->capabilities == NULL ||
        out->source_reads == NULL)
        goto fail;
    checker c = {in, out, json_is_array(in->test_globs) ? in->test_globs : NULL};
    out->tests_verified = 1;

    /* test-located files the change adds or alters, checked against what
     * production code names */
    json_t *candidates = json_array();
    if (candidates == NULL)
        goto fail;
    for (size_t i = 0; i < d->n; i++) {
        const wt_change *f = &d->files[i];
        if (f->status != 'D' && f->path != NULL && validate_test_located(f->path, c.test_globs) &&
            add_unique(candidates, f->path) != 0) {
            json_decref(candidates);
            goto fail;
        }
    }
    size_t i;
    json_t *r;
    json_array_foreach(in->refusals, i, r)
    {
        const char *p = json_string_value(json_object_get(r, "path"));
        json_t *why = json_object_get(r, "reason");
        if (p != NULL && json_is_string(why) &&
            add_pair(out->refused, p, "reason", json_copy(why))) {
            json_decref(candidates);
            goto fail;
        }
    }
    int scanned = scan_production(&c, candidates);
    json_decref(candidates);
    if (scanned != 0 || classify(&c) != 0 || check_production_lines(&c) != 0 ||
        check_source_reads(&c) != 0)
        goto fail;

    size_t max_lines = in->max_lines ? in->max_lines : VALIDATE_DEFAULT_MAX_LINES;
    size_t max_bytes = in->max_bytes ? in->max_bytes : VALIDATE_DEFAULT_MAX_BYTES;
    out->changed_lines = d->added > SIZE_MAX - d->removed ? SIZE_MAX : d->added + d->removed;
    out->changed_bytes = d->bytes;
    out->empty = d->n == 0;
    out->size_ok = out->changed_lines <= max_lines && out->changed_bytes <= max_bytes;
    out->scope_ok = json_array_size(out->out_of_scope) == 0;
    out->protected_ok = json_array_size(out->protected_hits) == 0;
    out->refused_ok = json_array_size(out->refused) == 0;
    out->tests_kept = json_array_size(out->tests_modified) == 0;
    out->special_ok = json_array_size(out->special_cases) == 0;
    out->capabilities_ok = json_array_size(out->capabilities) == 0;
    out->reads_ok = json_array_size(out->source_reads) == 0;
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
    json_decref(v->refused);
    json_decref(v->test_files);
    json_decref(v->source_files);
    json_decref(v->tests_modified);
    json_decref(v->loaded_tests);
    json_decref(v->special_cases);
    json_decref(v->capabilities);
    json_decref(v->source_reads);
    memset(v, 0, sizeof(*v));
}

/* ---------------------------------------------------------------- confidence */

double validate_confidence(const validate_signals *s)
{
    if (s == NULL || s->compiled == 0 || s->tests_passed == 0 || s->existing_passed == 0 ||
        s->changed_lines == 0)
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
    int proven = s->regression_proven == 1 && s->scope_ok != 0 && s->size_ok != 0 &&
                 s->protected_ok != 0 && s->trusted != 0 && s->contained != 0;
    if (!proven && c > 0.5)
        c = 0.5;
    if (c < 0)
        c = 0;
    if (c > 1)
        c = 1;
    /* Two decimals, halves up (the epsilon absorbs 97.4999... for 97.5). */
    long long hundredths = (long long)(c * 100.0 + 0.5 + 1e-9);
    return (double)hundredths / 100.0;
}

int validate_needs_human(const validate_static *v, const validate_signals *s)
{
    if (v == NULL || s == NULL)
        return 1;
    return !v->scope_ok || !v->protected_ok || !v->tests_kept || !v->special_ok ||
           !v->capabilities_ok || !v->reads_ok || !v->tests_verified || s->regression_proven != 1 ||
           !s->contained;
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
    int have = v != NULL;
    if (v == NULL)
        v = &none;
    size_t max_lines = s != NULL && s->max_lines != 0 ? s->max_lines : VALIDATE_DEFAULT_MAX_LINES;
    int fails = 0;
    fails |= json_object_set_new(r, "scope_ok", tri(have ? v->scope_ok : -1));
    fails |= json_object_set_new(r, "size_ok", tri(have ? v->size_ok : -1));
    fails |= json_object_set_new(r, "protected_ok", tri(have ? v->protected_ok : -1));
    fails |= json_object_set_new(r, "refused_ok", tri(have ? v->refused_ok : -1));
    fails |= json_object_set_new(r, "tests_kept", tri(have ? v->tests_kept : -1));
    fails |= json_object_set_new(r, "special_ok", tri(have ? v->special_ok : -1));
    fails |= json_object_set_new(r, "tests_verified", tri(have ? v->tests_verified : -1));
    fails |= json_object_set_new(r, "capabilities_ok", tri(have ? v->capabilities_ok : -1));
    fails |= json_object_set_new(r, "reads_ok", tri(have ? v->reads_ok : -1));
    fails |= json_object_set_new(r, "has_test_change", json_boolean(v->has_test_change));
    fails |= json_object_set_new(r, "empty", json_boolean(v->empty));
    fails |= json_object_set_new(r, "changed_lines", json_integer((json_int_t)v->changed_lines));
    fails |= json_object_set_new(r, "changed_bytes", json_integer((json_int_t)v->changed_bytes));
    fails |= json_object_set_new(r, "max_lines", json_integer((json_int_t)max_lines));
    fails |= json_object_set_new(r, "out_of_scope", array_or_empty(v->out_of_scope));
    fails |= json_object_set_new(r, "protected", array_or_empty(v->protected_hits));
    fails |= json_object_set_new(r, "refused", array_or_empty(v->refused));
    fails |= json_object_set_new(r, "test_files", array_or_empty(v->test_files));
    fails |= json_object_set_new(r, "source_files", array_or_empty(v->source_files));
    fails |= json_object_set_new(r, "tests_modified", array_or_empty(v->tests_modified));
    fails |= json_object_set_new(r, "loaded_tests", array_or_empty(v->loaded_tests));
    fails |= json_object_set_new(r, "special_cases", array_or_empty(v->special_cases));
    fails |= json_object_set_new(r, "capabilities", array_or_empty(v->capabilities));
    fails |= json_object_set_new(r, "source_reads", array_or_empty(v->source_reads));
    fails |= json_object_set_new(r, "compiled", tri(s != NULL ? s->compiled : -1));
    fails |= json_object_set_new(r, "tests_passed", tri(s != NULL ? s->tests_passed : -1));
    fails |=
        json_object_set_new(r, "existing_tests_passed", tri(s != NULL ? s->existing_passed : -1));
    fails |=
        json_object_set_new(r, "regression_proven", tri(s != NULL ? s->regression_proven : -1));
    fails |= json_object_set_new(r, "agent_exit_ok", tri(s != NULL ? s->agent_exit_ok : -1));
    fails |= json_object_set_new(r, "sandboxed", tri(s != NULL ? s->contained : -1));
    fails |= json_object_set_new(r, "confidence", json_real(confidence));
    if (fails != 0) {
        json_decref(r);
        return NULL;
    }
    return r;
}
