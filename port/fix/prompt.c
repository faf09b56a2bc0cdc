/*
 * The context a coding agent gets about one error (prompt.h).
 *
 * Reading: every file is opened relative to a descriptor of the checkout
 * root, one path component at a time with O_NOFOLLOW (directories with
 * O_DIRECTORY), and must be a regular file; so no symlink, "..", or
 * absolute path ever leads outside the root. The repository listing is a
 * walk of the tree under root (never following symlinks, skipping .git,
 * _build, deps, node_modules and every dot entry), bounded by
 * max_scan_files files and a budget of directory entries.
 *
 * Stack traces: every token (split at blanks, brackets, quotes and commas)
 * that holds a path with a known source extension and a line number
 * (":42", or "line 3" / "{line,7}" right after it) is a reference. A URL
 * loses its scheme, host, query and fragment; "fn@" prefixes are dropped;
 * "." components are dropped and ".." components refuse the reference, as
 * do deps/, node_modules/ and _build/ components (dependency code). A
 * reference resolves to the repository file of the same relative path,
 * else to the one file with the longest matching trailing components
 * (ties: skipped). How much has to match depends on the reference: all of
 * a relative path ("lib/enum.ex" of Elixir's own frames never becomes the
 * application's lib/shop/enum.ex), two components of an absolute path
 * (or the whole repository path), one component of a URL path.
 */
#include "prompt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fence.h"

#define CTX_DEFAULT_DEPTH 2
#define CTX_MAX_DEPTH 3
#define CTX_DEFAULT_MAX_FILES 24
#define CTX_MAX_MAX_FILES 1024
#define CTX_DEFAULT_FILE_BYTES (256u * 1024u)
#define CTX_DEFAULT_SCAN_FILES 20000
#define CTX_PATH_MAX 1024               /* repository paths longer than this are skipped */
#define CTX_DIR_DEPTH 32                /* directory levels walked */
#define CTX_MAX_REFS 512                /* stack trace references looked at */
#define CTX_STACK_SCAN (1u << 20)       /* stack trace bytes looked at */
#define CTX_MAX_IMPORTS 256             /* imports taken from one file */
#define CTX_MODULE_MAX 256              /* bytes of an Elixir module name */
#define CTX_INDEX_BYTES (64u << 20)     /* bytes read to index defmodules */
#define CTX_TEST_SCAN_FILES 2000        /* Elixir test files searched for module names */
#define CTX_TEST_SCAN_BYTES (16u << 20) /* bytes read doing so */
#define CTX_SRC_MODULES 4               /* modules of one source file searched for */
#define CTX_MENTION_TESTS 4             /* test files taken per source for naming its module */

/* The prompt's bounds. */
#define P_META_MAX 200
#define P_MESSAGE_MAX 8192
#define P_STACK_MAX 16384
#define P_REQUEST_MAX 2048
#define P_ROOT_CAUSE_MAX 8192
#define P_DESCRIPTOR_MAX 4096
#define P_COMMAND_MAX 1024
#define P_SUMMARY_MAX 512
#define P_REASON_MAX 300
#define P_REASONS_MAX 12
#define P_PREVIOUS_MAX 6144
#define P_COMMITS_MAX 20
#define P_EXCERPT_MAX 6144
#define P_EXCERPT_READ (2u << 20)
#define P_EXCERPT_SPAN 15
#define P_EXCERPT_LINES 8 /* line numbers per stack file */
#define P_EXCERPT_LINE_MAX 300
#define P_STACK_FILES 64

void context_limits_default(context_limits *lim)
{
    lim->depth = CTX_DEFAULT_DEPTH;
    lim->max_files = CTX_DEFAULT_MAX_FILES;
    lim->max_file_bytes = CTX_DEFAULT_FILE_BYTES;
    lim->max_scan_files = CTX_DEFAULT_SCAN_FILES;
}

/* NULL or zero fields take the defaults; depth is clamped to 0..3. */
static context_limits limits_of(const context_limits *lim)
{
    context_limits l;
    context_limits_default(&l);
    if (lim == NULL)
        return l;
    if (lim->depth >= 0)
        l.depth = lim->depth > CTX_MAX_DEPTH ? CTX_MAX_DEPTH : lim->depth;
    if (lim->max_files > 0)
        l.max_files = lim->max_files > CTX_MAX_MAX_FILES ? CTX_MAX_MAX_FILES : lim->max_files;
    if (lim->max_file_bytes > 0)
        l.max_file_bytes = lim->max_file_bytes;
    if (lim->max_scan_files > 0)
        l.max_scan_files = lim->max_scan_files;
    return l;
}

/* ---------------------------------------------------------------- small helpers */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

static char fold(char c)
{
    return is_upper(c) ? (char)(c - 'A' + 'a') : c;
}

static int is_ident(char c)
{
    return (c >= 'a' && c <= 'z') || is_upper(c) || is_digit(c) || c == '_';
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

static size_t count_components(const char *path)
{
    size_t n = 1;
    for (const char *p = path; *p != '\0'; p++)
        n += *p == '/';
    return n;
}

/* The extension of the last component ("js" for "a/b.test.js"), or "". */
static const char *ext_of(const char *path)
{
    const char *base = base_name(path);
    const char *dot = strrchr(base, '.');
    return (dot != NULL && dot != base) ? dot + 1 : "";
}

static int ext_in(const char *ext, const char *const *list)
{
    for (size_t k = 0; list[k] != NULL; k++)
        if (strcmp(ext, list[k]) == 0)
            return 1;
    return 0;
}

static const char *const SOURCE_EXTS[] = {"ex", "exs", "erl", "hrl", "js", "mjs", "cjs", "jsx",
                                          "ts", "tsx", "py",  "rb",  "go", "c",   "h",   NULL};
/* What a frame's file may be when resolving frames (context_files_resolve):
 * the source files above and the JVM languages of Java-style stacks. */
static const char *const FRAME_EXTS[] = {"ex",  "exs",  "erl", "hrl", "js",    "mjs",    "cjs",
                                         "jsx", "ts",   "tsx", "py",  "rb",    "go",     "c",
                                         "h",   "java", "kt",  "kts", "scala", "groovy", NULL};
static const char *const JS_EXTS[] = {"js", "mjs", "cjs", "jsx", "ts", "tsx", NULL};

static int is_elixir(const char *path)
{
    const char *e = ext_of(path);
    return strcmp(e, "ex") == 0 || strcmp(e, "exs") == 0;
}

static int is_js(const char *path)
{
    return ext_in(ext_of(path), JS_EXTS);
}

/* A directory whose code is not the application's. */
static int is_skipped_dir(const char *name, size_t len)
{
    return (len == 4 && memcmp(name, ".git", 4) == 0) ||
           (len == 6 && memcmp(name, "_build", 6) == 0) ||
           (len == 4 && memcmp(name, "deps", 4) == 0) ||
           (len == 12 && memcmp(name, "node_modules", 12) == 0);
}

/* Valid UTF-8 without control characters. */
static int name_ok(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x20 || u[i] == 0x7F)
            return 0;
        size_t n = sh_utf8_seq_len(u + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

/* A repository-relative path we are willing to open: not empty, not
 * absolute, no empty, "." or ".." component, no control characters,
 * valid UTF-8, shorter than CTX_PATH_MAX. */
static int rel_path_ok(const char *p, size_t len)
{
    if (len == 0 || len >= CTX_PATH_MAX || p[0] == '/' || !name_ok(p, len))
        return 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != '/')
            continue;
        size_t cl = i - start;
        if (cl == 0 || (cl == 1 && p[start] == '.') ||
            (cl == 2 && p[start] == '.' && p[start + 1] == '.'))
            return 0;
        start = i + 1;
    }
    return 1;
}

typedef struct strvec {
    char **v;
    size_t n;
    size_t cap;
} strvec;

static int strvec_push_n(strvec *sv, const char *s, size_t len)
{
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 64;
        char **v = realloc(sv->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        sv->v = v;
        sv->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    sv->v[sv->n++] = copy;
    return 0;
}

static int strvec_has(const strvec *sv, const char *s)
{
    for (size_t k = 0; k < sv->n; k++)
        if (strcmp(sv->v[k], s) == 0)
            return 1;
    return 0;
}

static void strvec_free(strvec *sv)
{
    for (size_t k = 0; k < sv->n; k++)
        free(sv->v[k]);
    free(sv->v);
    sv->v = NULL;
    sv->n = sv->cap = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---------------------------------------------------------------- safe reading */

static int open_root(const char *root)
{
    if (root == NULL || root[0] == '\0')
        return -1;
    return open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Opens rel under the directory rootfd, component by component, refusing
 * symlinks anywhere; returns a descriptor of a regular file or -1. */
static int open_rel(int rootfd, const char *rel)
{
    char comp[CTX_PATH_MAX];
    size_t len = strlen(rel);
    if (!rel_path_ok(rel, len))
        return -1;
    int dfd = rootfd, fd = -1;
    size_t start = 0;
    for (;;) {
        const char *slash = memchr(rel + start, '/', len - start);
        size_t end = slash != NULL ? (size_t)(slash - rel) : len;
        memcpy(comp, rel + start, end - start);
        comp[end - start] = '\0';
        if (slash == NULL) {
            fd = openat(dfd, comp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
            break;
        }
        int next = openat(dfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd != rootfd)
            close(dfd);
        if (next < 0)
            return -1;
        dfd = next;
        start = end + 1;
    }
    if (dfd != rootfd)
        close(dfd);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads at most max bytes of rel into out (reset first). 0, or -1 when
 * the file cannot be opened or read (out->oom tells out of memory). */
static int read_rel(int rootfd, const char *rel, size_t max, sh_buf *out)
{
    sh_buf_reset(out);
    int fd = open_rel(rootfd, rel);
    if (fd < 0)
        return -1;
    int rc = -1;
    while (out->len < max) {
        size_t want = max - out->len;
        if (want > 65536)
            want = 65536;
        if (sh_buf_reserve(out, want) != 0)
            goto cleanup;
        ssize_t r = read(fd, out->data + out->len, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno != EAGAIN)
            goto cleanup;
        if (r <= 0)
            break;
        out->len += (size_t)r;
    }
    rc = 0;
cleanup:
    close(fd);
    return rc;
}

/* ---------------------------------------------------------------- the repository */

typedef struct modent {
    char *name;
    const char *path; /* points into repo.files */
} modent;

/* A file by its base name: the index resolve_ref looks candidates up in. */
typedef struct baseent {
    const char *base; /* points into path */
    const char *path; /* points into repo.files */
} baseent;

typedef struct repo {
    int rootfd;
    context_limits lim;
    strvec files;     /* sorted */
    baseent *by_base; /* files.n entries sorted by base name, then path */
    int truncated;    /* the listing stopped at a bound */
    int oom;
    modent *mods; /* defmodule index, sorted by name then path */
    size_t nmods;
    size_t capmods;
    int mods_built;
} repo;

typedef struct walker {
    repo *r;
    size_t budget; /* directory entries still to look at */
    char path[CTX_PATH_MAX];
} walker;

static void walk_dir(walker *w, int dfd, size_t plen, int depth)
{
    DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        repo *r = w->r;
        if (r->oom || r->truncated)
            break;
        if (w->budget == 0) {
            r->truncated = 1;
            break;
        }
        w->budget--;
        const char *name = e->d_name;
        size_t nl = strlen(name);
        /* ".", "..", dot-directories and dot-files (.env and the like) */
        if (name[0] == '.' || !name_ok(name, nl) || plen + nl + 2 > sizeof(w->path))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (is_skipped_dir(name, nl) || depth + 1 >= CTX_DIR_DEPTH)
                continue;
            int sub = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                continue;
            memcpy(w->path + plen, name, nl);
            w->path[plen + nl] = '/';
            walk_dir(w, sub, plen + nl + 1, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            if (r->files.n >= r->lim.max_scan_files) {
                r->truncated = 1;
                break;
            }
            memcpy(w->path + plen, name, nl);
            if (strvec_push_n(&r->files, w->path, plen + nl) != 0)
                r->oom = 1;
        }
    }
    closedir(d);
}

static void repo_close(repo *r)
{
    if (r->rootfd >= 0)
        close(r->rootfd);
    r->rootfd = -1;
    strvec_free(&r->files);
    free(r->by_base);
    r->by_base = NULL;
    for (size_t k = 0; k < r->nmods; k++)
        free(r->mods[k].name);
    free(r->mods);
    r->mods = NULL;
    r->nmods = r->capmods = 0;
}

static int cmp_base(const void *a, const void *b)
{
    const baseent *x = a, *y = b;
    int c = strcmp(x->base, y->base);
    return c != 0 ? c : strcmp(x->path, y->path);
}

/* 0; -1 when the root cannot be opened or memory ran out (r->oom). */
static int repo_open(repo *r, const char *root, const context_limits *lim)
{
    memset(r, 0, sizeof(*r));
    r->lim = limits_of(lim);
    r->rootfd = open_root(root);
    if (r->rootfd < 0)
        return -1;
    walker *w = malloc(sizeof(*w));
    if (w == NULL)
        goto oom;
    w->r = r;
    w->budget = r->lim.max_scan_files * 4 + 10000;
    int dfd = fcntl(r->rootfd, F_DUPFD_CLOEXEC, 0);
    if (dfd >= 0)
        walk_dir(w, dfd, 0, 0);
    free(w);
    if (r->oom)
        goto oom;
    if (r->files.n > 0)
        qsort(r->files.v, r->files.n, sizeof(char *), cmp_str);
    r->by_base = malloc((r->files.n + 1) * sizeof(baseent));
    if (r->by_base == NULL)
        goto oom;
    for (size_t k = 0; k < r->files.n; k++) {
        r->by_base[k].base = base_name(r->files.v[k]);
        r->by_base[k].path = r->files.v[k];
    }
    if (r->files.n > 1)
        qsort(r->by_base, r->files.n, sizeof(baseent), cmp_base);
    return 0;
oom:
    r->oom = 1;
    repo_close(r);
    return -1;
}

static const char *repo_find(const repo *r, const char *path)
{
    if (r->files.n == 0)
        return NULL;
    char *const *hit = bsearch(&path, r->files.v, r->files.n, sizeof(char *), cmp_str);
    return hit != NULL ? *hit : NULL;
}

/* 1 when path is a regular file of the repository. */
static int repo_has(const repo *r, const char *path)
{
    if (!rel_path_ok(path, strlen(path)))
        return 0;
    if (repo_find(r, path) != NULL)
        return 1;
    if (!r->truncated)
        return 0;
    int fd = open_rel(r->rootfd, path);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* ---------------------------------------------------------------- stack references */

typedef enum ref_kind { REF_RELATIVE, REF_ABSOLUTE, REF_URL } ref_kind;

typedef struct ref {
    char path[CTX_PATH_MAX]; /* normalised components joined by '/' */
    size_t len;
    size_t ncomp;
    ref_kind kind;
    unsigned long line; /* 0 when none */
} ref;

static const char *find_str(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(s + i, lit, n) == 0)
            return s + i;
    return NULL;
}

static unsigned long parse_line_no(const char *s, const char *end)
{
    unsigned long v = 0;
    for (; s < end && is_digit(*s); s++)
        if (v < 100000000ul)
            v = v * 10 + (unsigned long)(*s - '0');
    return v;
}

/* Parses one token of a stack trace; 1 when it names a file with one of
 * the extensions exts. */
static int parse_ref(ref *out, const char *t, size_t len, const char *const *exts)
{
    const char *end = t + len, *p = t;
    out->kind = REF_RELATIVE;
    out->line = 0;
    out->len = out->ncomp = 0;
    out->path[0] = '\0';
    const char *scheme = find_str(t, len, "://");
    if (scheme != NULL) {
        p = scheme + 3;
        p = memchr(p, '/', (size_t)(end - p));
        if (p == NULL)
            return 0;
        out->kind = REF_URL;
    } else {
        const char *at = memchr(t, '@', len);
        if (at != NULL && memchr(t, '/', (size_t)(at - t)) == NULL)
            p = at + 1;
        if (p < end && *p == '/')
            out->kind = REF_ABSOLUTE;
    }
    const char *q = p;
    while (q < end && *q != '?' && *q != '#' && *q != ':')
        q++;
    const char *pend = q;
    if (q < end && *q != ':')
        while (q < end && !(*q == ':' && q + 1 < end && is_digit(q[1])))
            q++;
    if (q + 1 < end && *q == ':' && is_digit(q[1]))
        out->line = parse_line_no(q + 1, end);

    const char *c = p;
    while (c < pend) {
        const char *slash = memchr(c, '/', (size_t)(pend - c));
        const char *ce = slash != NULL ? slash : pend;
        size_t cl = (size_t)(ce - c);
        if (cl == 2 && c[0] == '.' && c[1] == '.')
            return 0;
        if (cl > 0 && !(cl == 1 && c[0] == '.')) {
            if (is_skipped_dir(c, cl))
                return 0;
            if (out->len + cl + 2 > sizeof(out->path))
                return 0;
            if (out->len > 0)
                out->path[out->len++] = '/';
            memcpy(out->path + out->len, c, cl);
            out->len += cl;
            out->ncomp++;
        }
        c = slash != NULL ? slash + 1 : pend;
    }
    out->path[out->len] = '\0';
    if (out->ncomp == 0 || !rel_path_ok(out->path, out->len))
        return 0;
    return ext_in(ext_of(out->path), exts);
}

/* "line 3" (Python's `File "x.py", line 3`) or "{line,7}" (Erlang) right
 * after a token. */
static unsigned long line_after(const char *s, const char *end)
{
    size_t i = 0;
    while (s + i < end && i < 8 && s[i] != '\0' && strchr("\"'{}, \t", s[i]) != NULL)
        i++;
    if (end - (s + i) < 6 || memcmp(s + i, "line", 4) != 0 || (s[i + 4] != ',' && s[i + 4] != ' '))
        return 0;
    i += 5;
    while (s + i < end && s[i] == ' ')
        i++;
    return parse_line_no(s + i, end);
}

static int is_token_delim(unsigned char c)
{
    return c <= ' ' || c == 0x7F || strchr("()\"'`{}[]<>,;|", c) != NULL;
}

typedef int (*ref_fn)(void *ctx, const ref *r); /* nonzero: stop */

/* Calls fn for every reference with a line number in text. */
static void scan_refs(const char *text, ref_fn fn, void *ctx)
{
    if (text == NULL)
        return;
    ref *r = malloc(sizeof(*r));
    if (r == NULL)
        return;
    size_t len = strnlen(text, CTX_STACK_SCAN), i = 0, seen = 0;
    while (i < len && seen < CTX_MAX_REFS) {
        while (i < len && is_token_delim((unsigned char)text[i]))
            i++;
        size_t start = i;
        while (i < len && !is_token_delim((unsigned char)text[i]))
            i++;
        if (i == start || !parse_ref(r, text + start, i - start, SOURCE_EXTS))
            continue;
        seen++;
        if (r->line == 0)
            r->line = line_after(text + i, text + len);
        if (r->line > 0 && fn(ctx, r))
            break;
    }
    free(r);
}

/* How many trailing components of a and b are equal. */
static size_t trailing_match(const char *a, size_t al, const char *b, size_t bl)
{
    size_t m = 0;
    while (al > 0 && bl > 0) {
        size_t as = al, bs = bl;
        while (as > 0 && a[as - 1] != '/')
            as--;
        while (bs > 0 && b[bs - 1] != '/')
            bs--;
        if (al - as != bl - bs || memcmp(a + as, b + bs, al - as) != 0)
            break;
        m++;
        if (as == 0 || bs == 0)
            break;
        al = as - 1;
        bl = bs - 1;
    }
    return m;
}

/* Whether m trailing components in common are enough to say the reference
 * names a repository file of ncomp components. */
static int ref_accepts(const ref *r, size_t m, size_t ncomp)
{
    if (m == 0)
        return 0;
    switch (r->kind) {
    case REF_RELATIVE:
        return m == r->ncomp;
    case REF_ABSOLUTE:
        return m == ncomp || m >= (r->ncomp < 2 ? r->ncomp : 2);
    case REF_URL:
        return 1;
    }
    return 0;
}

/* The repository file a reference names, or NULL. */
static const char *resolve_ref(const repo *r, const ref *rf)
{
    if (rf->kind == REF_RELATIVE) {
        const char *hit = repo_find(r, rf->path);
        if (hit != NULL)
            return hit;
    }
    const char *base = base_name(rf->path);
    const char *best = NULL;
    size_t best_m = 0, count = 0;
    size_t lo = 0, hi = r->files.n;
    while (lo < hi) { /* the first file of this base name */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(r->by_base[mid].base, base) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = lo; k < r->files.n && strcmp(r->by_base[k].base, base) == 0; k++) {
        const char *f = r->by_base[k].path;
        size_t m = trailing_match(f, strlen(f), rf->path, rf->len);
        if (!ref_accepts(rf, m, count_components(f)))
            continue;
        if (m > best_m) {
            best_m = m;
            best = f;
            count = 1;
        } else if (m == best_m) {
            count++;
        }
    }
    if (count == 1)
        return best;
    if (count == 0 && rf->kind == REF_RELATIVE && repo_has(r, rf->path))
        return rf->path; /* beyond a truncated listing */
    return NULL;
}

typedef struct stack_ctx {
    const repo *r;
    json_t *out;
    int oom;
} stack_ctx;

static int stack_add(stack_ctx *sc, const ref *rf)
{
    const char *path = resolve_ref(sc->r, rf);
    if (path == NULL)
        return 0;
    size_t k;
    json_t *v;
    json_array_foreach(sc->out, k, v)
    {
        if (strcmp(json_string_value(v), path) == 0)
            return 0;
    }
    if (json_array_append_new(sc->out, json_string(path)) != 0)
        sc->oom = 1;
    return sc->oom || json_array_size(sc->out) >= sc->r->lim.max_files;
}

static int stack_on_ref(void *ctx, const ref *rf)
{
    return stack_add(ctx, rf);
}

json_t *context_stack_files(const char *root, const char *stacktrace, json_t *frames,
                            const context_limits *lim)
{
    repo r;
    if (repo_open(&r, root, lim) != 0)
        return r.oom ? NULL : json_array();
    stack_ctx sc = {&r, json_array(), 0};
    if (sc.out == NULL)
        goto cleanup;
    scan_refs(stacktrace, stack_on_ref, &sc);
    if (json_is_array(frames) && !sc.oom && json_array_size(sc.out) < r.lim.max_files) {
        ref *rf = malloc(sizeof(*rf));
        size_t k;
        json_t *fr;
        if (rf == NULL)
            sc.oom = 1;
        json_array_foreach(frames, k, fr)
        {
            if (rf == NULL || k >= CTX_MAX_REFS)
                break;
            const char *file = json_string_value(json_object_get(fr, "file"));
            if (file == NULL || !parse_ref(rf, file, strnlen(file, CTX_PATH_MAX), SOURCE_EXTS))
                continue;
            if (stack_add(&sc, rf))
                break;
        }
        free(rf);
    }
    if (sc.oom) {
        json_decref(sc.out);
        sc.out = NULL;
    }
cleanup:
    repo_close(&r);
    return sc.out;
}

/* ---------------------------------------------------------------- frame files */

#define CTX_EXTRA_PATHS 1024 /* paths kept beyond a truncated listing */

struct context_files {
    repo r;
    /* Paths found on disk beyond a truncated listing, kept so that what
     * context_files_resolve returns stays valid: the one part changed by
     * a lookup (so a context_files is not for concurrent use). */
    strvec *extra;
};

context_files *context_files_open(const char *root, const context_limits *lim)
{
    context_files *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->extra = calloc(1, sizeof(*f->extra));
    if (f->extra == NULL || repo_open(&f->r, root, lim) != 0) {
        free(f->extra);
        free(f);
        return NULL;
    }
    return f;
}

const char *context_files_resolve(const context_files *f, const char *file, size_t len)
{
    ref rf;
    if (f == NULL || file == NULL || len == 0 || len > 4 * CTX_PATH_MAX ||
        !parse_ref(&rf, file, len, FRAME_EXTS))
        return NULL;
    const char *path = resolve_ref(&f->r, &rf);
    if (path == NULL || path != rf.path)
        return path;
    /* beyond a truncated listing: a stable copy */
    strvec *extra = f->extra;
    for (size_t k = 0; k < extra->n; k++)
        if (strcmp(extra->v[k], path) == 0)
            return extra->v[k];
    if (extra->n >= CTX_EXTRA_PATHS || strvec_push_n(extra, path, rf.len) != 0)
        return NULL;
    return extra->v[extra->n - 1];
}

void context_files_free(context_files *f)
{
    if (f == NULL)
        return;
    repo_close(&f->r);
    strvec_free(f->extra);
    free(f->extra);
    free(f);
}

/* ---------------------------------------------------------------- Elixir */

/* Lines of Elixir code: leading blanks skipped, comment lines and the
 * lines of heredocs (""" and ''') skipped. */
typedef struct ex_lines {
    const char *s;
    size_t len;
    size_t pos;
    int heredoc; /* 0, '"' or '\'' */
} ex_lines;

static size_t count_lit(const char *s, size_t len, const char *lit)
{
    size_t n = 0;
    for (size_t i = 0; i + 3 <= len; i++)
        if (memcmp(s + i, lit, 3) == 0) {
            n++;
            i += 2;
        }
    return n;
}

/* The next code line: *line at its first non-blank, *indent blanks before. */
static int ex_next(ex_lines *it, const char **line, size_t *llen, size_t *indent)
{
    while (it->pos < it->len) {
        const char *s = it->s + it->pos;
        const char *nl = memchr(s, '\n', it->len - it->pos);
        size_t n = nl != NULL ? (size_t)(nl - s) : it->len - it->pos;
        it->pos += n + (nl != NULL);
        if (it->heredoc) {
            if (count_lit(s, n, it->heredoc == '"' ? "\"\"\"" : "'''") > 0)
                it->heredoc = 0;
            continue;
        }
        size_t b = 0;
        while (b < n && (s[b] == ' ' || s[b] == '\t'))
            b++;
        if (b == n || s[b] == '#')
            continue;
        if (count_lit(s, n, "\"\"\"") % 2 == 1)
            it->heredoc = '"';
        else if (count_lit(s, n, "'''") % 2 == 1)
            it->heredoc = '\'';
        *line = s + b;
        *llen = n - b;
        *indent = b;
        return 1;
    }
    return 0;
}

/* A module name ([A-Z][A-Za-z0-9_]* segments joined by '.') at s; its
 * length without a trailing '.', or 0. */
static size_t module_at(const char *s, size_t len)
{
    if (len == 0 || !is_upper(s[0]))
        return 0;
    size_t i = 0;
    while (i < len && (is_ident(s[i]) || (s[i] == '.' && i + 1 < len && is_upper(s[i + 1]))))
        i++;
    return i < CTX_MODULE_MAX ? i : 0;
}

/* keyword followed by a blank at s. */
static size_t keyword_at(const char *s, size_t len, const char *kw)
{
    size_t n = strlen(kw);
    if (len <= n || memcmp(s, kw, n) != 0 || (s[n] != ' ' && s[n] != '\t'))
        return 0;
    while (n < len && (s[n] == ' ' || s[n] == '\t'))
        n++;
    return n;
}

static int mods_push(repo *r, const char *name, size_t len, const char *path)
{
    if (r->nmods == r->capmods) {
        size_t cap = r->capmods ? r->capmods * 2 : 256;
        modent *m = realloc(r->mods, cap * sizeof(*m));
        if (m == NULL)
            return -1;
        r->mods = m;
        r->capmods = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, name, len);
    copy[len] = '\0';
    r->mods[r->nmods].name = copy;
    r->mods[r->nmods].path = path;
    r->nmods++;
    return 0;
}

/* Calls fn(ctx, name, len) for every module a file defines: top-level
 * defmodules as written, indented ones under the last top-level one as
 * Parent.Child (or as written when there is none). At most max. */
typedef int (*mod_fn)(void *ctx, const char *name, size_t len);

static int defmodules(const char *text, size_t len, size_t max, mod_fn fn, void *ctx)
{
    ex_lines it = {text, len, 0, 0};
    const char *line;
    size_t llen, indent, found = 0;
    char top[CTX_MODULE_MAX], full[2 * CTX_MODULE_MAX + 2];
    size_t toplen = 0;
    while (found < max && ex_next(&it, &line, &llen, &indent)) {
        size_t k = keyword_at(line, llen, "defmodule");
        if (k == 0)
            continue;
        size_t n = module_at(line + k, llen - k);
        if (n == 0)
            continue;
        const char *name = line + k;
        if (indent == 0 || toplen == 0) {
            if (fn(ctx, name, n) != 0)
                return -1;
            if (indent == 0) {
                memcpy(top, name, n);
                toplen = n;
            }
        } else {
            memcpy(full, top, toplen);
            full[toplen] = '.';
            memcpy(full + toplen + 1, name, n);
            if (fn(ctx, full, toplen + 1 + n) != 0)
                return -1;
        }
        found++;
    }
    return 0;
}

typedef struct index_ctx {
    repo *r;
    const char *path;
} index_ctx;

static int index_on_module(void *ctx, const char *name, size_t len)
{
    index_ctx *ic = ctx;
    return mods_push(ic->r, name, len, ic->path);
}

static int cmp_mod(const void *a, const void *b)
{
    const modent *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->path, y->path);
}

/* The defmodule index over the .ex files of the listing, built once. */
static void build_index(repo *r)
{
    if (r->mods_built)
        return;
    r->mods_built = 1;
    sh_buf buf;
    sh_buf_init(&buf);
    size_t bytes = 0;
    for (size_t k = 0; k < r->files.n && bytes < CTX_INDEX_BYTES && !r->oom; k++) {
        const char *f = r->files.v[k];
        if (strcmp(ext_of(f), "ex") != 0)
            continue;
        if (read_rel(r->rootfd, f, r->lim.max_file_bytes, &buf) != 0) {
            if (buf.oom)
                r->oom = 1;
            continue;
        }
        bytes += buf.len;
        index_ctx ic = {r, f};
        if (defmodules(buf.data, buf.len, 10000, index_on_module, &ic) != 0)
            r->oom = 1;
    }
    sh_buf_free(&buf);
    if (r->nmods > 1)
        qsort(r->mods, r->nmods, sizeof(modent), cmp_mod);
}

static const char *module_file(const repo *r, const char *name)
{
    size_t lo = 0, hi = r->nmods;
    while (lo < hi) { /* first entry >= name */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(r->mods[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < r->nmods && strcmp(r->mods[lo].name, name) == 0) ? r->mods[lo].path : NULL;
}

/* The file defining name, else (for a nested module) the file defining
 * its longest prefix of at least two segments. */
static const char *module_resolve(const repo *r, const char *name, size_t len)
{
    char buf[CTX_MODULE_MAX + 1];
    if (len > CTX_MODULE_MAX)
        return NULL;
    memcpy(buf, name, len);
    buf[len] = '\0';
    for (;;) {
        const char *f = module_file(r, buf);
        if (f != NULL)
            return f;
        char *dot = strrchr(buf, '.');
        if (dot == NULL || memchr(buf, '.', (size_t)(dot - buf)) == NULL)
            return NULL;
        *dot = '\0';
    }
}

static int add_import(strvec *out, const char *self, const char *path)
{
    if (path == NULL || strcmp(path, self) == 0 || strvec_has(out, path))
        return 0;
    return strvec_push_n(out, path, strlen(path));
}

/* The repository files of the modules an Elixir file's alias, import, use
 * and require directives name. */
static int elixir_imports(repo *r, const char *self, const char *text, size_t len, strvec *out)
{
    static const char *const directives[] = {"alias", "import", "use", "require", NULL};
    build_index(r);
    if (r->oom)
        return -1;
    ex_lines it = {text, len, 0, 0};
    const char *line;
    size_t llen, indent;
    char full[2 * CTX_MODULE_MAX + 2];
    while (out->n < CTX_MAX_IMPORTS && ex_next(&it, &line, &llen, &indent)) {
        size_t k = 0;
        for (size_t d = 0; directives[d] != NULL && k == 0; d++)
            k = keyword_at(line, llen, directives[d]);
        if (k == 0)
            continue;
        const char *name = line + k;
        size_t n = module_at(name, llen - k);
        if (n == 0) /* __MODULE__.X, :erlang_module, a variable */
            continue;
        if (k + n + 1 < llen && name[n] == '.' && name[n + 1] == '{') {
            /* alias A.{B, C}: the list may span lines */
            const char *s = name + n + 2;
            const char *end = text + len;
            if (end - s > 4096)
                end = s + 4096;
            while (s < end && *s != '}') {
                size_t m = module_at(s, (size_t)(end - s));
                if (m == 0) {
                    s++;
                    continue;
                }
                memcpy(full, name, n);
                full[n] = '.';
                memcpy(full + n + 1, s, m);
                if (add_import(out, self, module_resolve(r, full, n + 1 + m)) != 0)
                    return -1;
                s += m;
            }
            if (s > line + llen) /* resume after the list */
                it.pos = (size_t)(s - text);
            continue;
        }
        if (add_import(out, self, module_resolve(r, name, n)) != 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- JavaScript */

/* dir(from) joined with spec, "." and ".." applied; 0, or -1 when it
 * leaves the root or is too long. */
static int join_relative(char *out, size_t outsz, const char *from, const char *spec, size_t slen)
{
    const char *slash = strrchr(from, '/');
    size_t o = slash != NULL ? (size_t)(slash - from) : 0;
    if (o + 1 >= outsz)
        return -1;
    memcpy(out, from, o);
    size_t i = 0;
    while (i < slen) {
        const char *s = memchr(spec + i, '/', slen - i);
        size_t e = s != NULL ? (size_t)(s - spec) : slen;
        size_t cl = e - i;
        if (cl == 2 && spec[i] == '.' && spec[i + 1] == '.') {
            if (o == 0)
                return -1;
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else if (cl > 0 && !(cl == 1 && spec[i] == '.')) {
            if (o + cl + 2 >= outsz)
                return -1;
            if (o > 0)
                out[o++] = '/';
            memcpy(out + o, spec + i, cl);
            o += cl;
        }
        i = e + 1;
    }
    out[o] = '\0';
    return o > 0 ? 0 : -1;
}

static const char *js_resolve(const repo *r, const char *from, const char *spec, size_t slen,
                              char *buf, size_t bufsz)
{
    static const char *const tries[] = {"",    ".js",  ".mjs",      ".cjs",      ".jsx",
                                        ".ts", ".tsx", "/index.js", "/index.ts", NULL};
    if (!(slen >= 2 && memcmp(spec, "./", 2) == 0) && !(slen >= 3 && memcmp(spec, "../", 3) == 0))
        return NULL;
    for (size_t k = 0; k < slen; k++)
        if (spec[k] == '?' || spec[k] == '#')
            slen = k;
    if (join_relative(buf, bufsz, from, spec, slen) != 0)
        return NULL;
    size_t n = strlen(buf);
    for (size_t t = 0; tries[t] != NULL; t++) {
        size_t tl = strlen(tries[t]);
        if (n + tl + 1 > bufsz)
            continue;
        memcpy(buf + n, tries[t], tl + 1);
        if (repo_has(r, buf))
            return buf;
    }
    return NULL;
}

typedef enum js_kw { KW_NONE, KW_FROM, KW_IMPORT, KW_REQUIRE, KW_CALL } js_kw;

/* The files of the relative specifiers of import ... from, import '...',
 * export ... from, import(...) and require(...) in a JavaScript file. A
 * small lexer skips comments and other strings. */
static int js_imports(const repo *r, const char *self, const char *s, size_t len, strvec *out)
{
    char buf[CTX_PATH_MAX];
    js_kw kw = KW_NONE;
    char prev = 0; /* last non-blank character of code */
    size_t i = 0;
    while (i < len && out->n < CTX_MAX_IMPORTS) {
        char c = s[i];
        if (c == '/' && i + 1 < len && s[i + 1] == '/') {
            while (i < len && s[i] != '\n')
                i++;
            continue;
        }
        if (c == '/' && i + 1 < len && s[i + 1] == '*') {
            const char *e = find_str(s + i + 2, len - i - 2, "*/");
            i = e != NULL ? (size_t)(e - s) + 2 : len;
            continue;
        }
        if (c == '\'' || c == '"' || c == '`') {
            size_t j = i + 1;
            int escaped = 0;
            while (j < len && s[j] != c && !(c != '`' && s[j] == '\n')) {
                if (s[j] == '\\') {
                    escaped = 1;
                    j++;
                }
                j++;
            }
            if (j < len && s[j] == c && c != '`' && !escaped &&
                (kw == KW_FROM || kw == KW_IMPORT || kw == KW_CALL)) {
                const char *f = js_resolve(r, self, s + i + 1, j - i - 1, buf, sizeof(buf));
                if (add_import(out, self, f) != 0)
                    return -1;
            }
            kw = KW_NONE;
            prev = c;
            i = j + 1;
            continue;
        }
        if (is_ident(c) || c == '$') {
            size_t j = i;
            while (j < len && (is_ident(s[j]) || s[j] == '$'))
                j++;
            size_t n = j - i;
            kw = KW_NONE;
            if (prev != '.') {
                if (n == 4 && memcmp(s + i, "from", 4) == 0)
                    kw = KW_FROM;
                else if (n == 6 && memcmp(s + i, "import", 6) == 0)
                    kw = KW_IMPORT;
                else if (n == 7 && memcmp(s + i, "require", 7) == 0)
                    kw = KW_REQUIRE;
            }
            prev = s[j - 1];
            i = j;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            i++;
            continue;
        }
        kw = (c == '(' && (kw == KW_IMPORT || kw == KW_REQUIRE)) ? KW_CALL : KW_NONE;
        prev = c;
        i++;
    }
    return 0;
}

/* The repository files path imports (Elixir or JavaScript), in order. */
static int imports_of(repo *r, const char *path, strvec *out, sh_buf *buf)
{
    int elixir = is_elixir(path), js = is_js(path);
    if (!elixir && !js)
        return 0;
    if (read_rel(r->rootfd, path, r->lim.max_file_bytes, buf) != 0)
        return buf->oom ? -1 : 0;
    if (elixir)
        return elixir_imports(r, path, buf->data, buf->len, out);
    return js_imports(r, path, buf->data, buf->len, out);
}

/* ---------------------------------------------------------------- tests */

int context_is_test_path(const char *path)
{
    if (path == NULL)
        return 0;
    const char *base = base_name(path);
    int in_test = starts_with(path, "test/") || strstr(path, "/test/") != NULL;
    if (ends_with(path, "_test.exs") && in_test)
        return 1;
    if (is_js(path) && (strstr(base, ".test.") != NULL || strstr(base, ".spec.") != NULL ||
                        starts_with(path, "__tests__/") || strstr(path, "/__tests__/") != NULL))
        return 1;
    if (ends_with(path, "_SUITE.erl") || (ends_with(path, "_tests.erl") && in_test))
        return 1;
    if (strcmp(ext_of(path), "py") == 0 &&
        (starts_with(base, "test_") || ends_with(base, "_test.py")))
        return 1;
    return ends_with(path, "_test.go");
}

/* Appends the conventional test paths of src to cands. */
static int test_candidates(const char *src, strvec *cands)
{
    char b[3 * CTX_PATH_MAX];
    const char *base = base_name(src);
    const char *ext = ext_of(src);
    size_t dirlen = (size_t)(base - src); /* with the trailing '/' */
    size_t stemlen = strlen(base) - (ext[0] != '\0' ? strlen(ext) + 1 : 0);
    int n;
#define CAND(...)                                                                                  \
    do {                                                                                           \
        n = snprintf(b, sizeof(b), __VA_ARGS__);                                                   \
        if (n > 0 && (size_t)n < CTX_PATH_MAX && strvec_push_n(cands, b, (size_t)n) != 0)          \
            return -1;                                                                             \
    } while (0)
    if (strcmp(ext, "ex") == 0) {
        /* [prefix]lib/rest.ex -> [prefix]test/rest_test.exs */
        const char *lib = NULL;
        for (const char *p = src; (p = strstr(p, "lib/")) != NULL; p++)
            if (p == src || p[-1] == '/')
                lib = p;
        if (lib != NULL) {
            const char *rest = lib + 4;
            CAND("%.*stest/%.*s_test.exs", (int)(lib - src), src,
                 (int)(strlen(rest) - strlen(ext) - 1), rest);
        }
    } else if (ext_in(ext, JS_EXTS)) {
        CAND("%.*s%.*s.test.%s", (int)dirlen, src, (int)stemlen, base, ext);
        CAND("%.*s%.*s.spec.%s", (int)dirlen, src, (int)stemlen, base, ext);
        CAND("%.*s__tests__/%s", (int)dirlen, src, base);
        CAND("%.*s__tests__/%.*s.test.%s", (int)dirlen, src, (int)stemlen, base, ext);
        CAND("%.*stest/%.*s.test.%s", (int)dirlen, src, (int)stemlen, base, ext);
        CAND("test/%.*s.test.%s", (int)stemlen, base, ext);
    } else if (strcmp(ext, "erl") == 0) {
        const char *srcdir = NULL;
        for (const char *p = src; (p = strstr(p, "src/")) != NULL; p++)
            if (p == src || p[-1] == '/')
                srcdir = p;
        int pl = srcdir != NULL ? (int)(srcdir - src) : 0;
        CAND("%.*stest/%.*s_tests.erl", pl, src, (int)stemlen, base);
        CAND("%.*stest/%.*s_SUITE.erl", pl, src, (int)stemlen, base);
    } else if (strcmp(ext, "py") == 0) {
        CAND("%.*stest_%s", (int)dirlen, src, base);
        CAND("%.*s%.*s_test.py", (int)dirlen, src, (int)stemlen, base);
        CAND("tests/test_%s", base);
        CAND("test/test_%s", base);
    } else if (strcmp(ext, "go") == 0) {
        CAND("%.*s%.*s_test.go", (int)dirlen, src, (int)stemlen, base);
    }
#undef CAND
    return 0;
}

/* ---------------------------------------------------------------- gather */

enum { ROLE_STACK, ROLE_IMPORT, ROLE_TEST };

typedef struct item {
    char *path;
    int role;
    long via; /* index of another item, or -1 */
    int level;
} item;

typedef struct items {
    item *v;
    size_t n;
    size_t cap;
} items;

static int items_has(const items *it, const char *path)
{
    for (size_t k = 0; k < it->n; k++)
        if (strcmp(it->v[k].path, path) == 0)
            return 1;
    return 0;
}

static int items_add(items *it, const char *path, int role, long via, int level)
{
    if (it->n == it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 32;
        item *v = realloc(it->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        it->v = v;
        it->cap = cap;
    }
    size_t len = strlen(path);
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, path, len + 1);
    it->v[it->n++] = (item){copy, role, via, level};
    return 0;
}

static void items_free(items *it)
{
    for (size_t k = 0; k < it->n; k++)
        free(it->v[k].path);
    free(it->v);
}

/* Module names to look for in Elixir test files: (name, item index). */
typedef struct wanted {
    char *name;
    size_t src;
} wanted;

typedef struct wanted_set {
    wanted *v;
    size_t n;
    size_t cap;
    size_t src; /* the source being read */
} wanted_set;

static int wanted_on_module(void *ctx, const char *name, size_t len)
{
    wanted_set *ws = ctx;
    if (ws->n == ws->cap) {
        size_t cap = ws->cap ? ws->cap * 2 : 32;
        wanted *v = realloc(ws->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        ws->v = v;
        ws->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, name, len);
    copy[len] = '\0';
    ws->v[ws->n++] = (wanted){copy, ws->src};
    return 0;
}

static int cmp_wanted(const void *a, const void *b)
{
    const wanted *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : (x->src > y->src) - (x->src < y->src);
}

/* Marks hits[src * ntests + t] for every wanted module named (as a whole
 * word, or as a prefix before '.') in text. */
static void mark_mentions(const wanted_set *ws, const char *s, size_t len, unsigned char *hits,
                          size_t ntests, size_t t)
{
    char name[CTX_MODULE_MAX + 1];
    size_t i = 0;
    while (i < len) {
        if (!is_upper(s[i]) || (i > 0 && (is_ident(s[i - 1]) || s[i - 1] == '.'))) {
            i++;
            continue;
        }
        size_t n = module_at(s + i, len - i);
        if (n == 0) {
            i++;
            continue;
        }
        memcpy(name, s + i, n);
        name[n] = '\0';
        /* the name and each prefix of it ending before a '.' */
        for (size_t cut = n; cut > 0; cut--) {
            if (cut < n && name[cut] != '.')
                continue;
            name[cut] = '\0';
            size_t lo = 0, hi = ws->n;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (strcmp(ws->v[mid].name, name) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (; lo < ws->n && strcmp(ws->v[lo].name, name) == 0; lo++)
                hits[ws->v[lo].src * ntests + t] = 1;
        }
        i += n;
    }
}

/* For each Elixir source among it->v[0..nsrc), the test files under
 * test/ that name one of the modules it defines. */
static int elixir_mentions(repo *r, const items *it, size_t nsrc, strvec *tests,
                           unsigned char **hits_out, sh_buf *buf)
{
    wanted_set ws = {NULL, 0, 0, 0};
    unsigned char *hits = NULL;
    int rc = -1;
    *hits_out = NULL;
    for (size_t k = 0; k < nsrc; k++) {
        if (strcmp(ext_of(it->v[k].path), "ex") != 0)
            continue;
        if (read_rel(r->rootfd, it->v[k].path, r->lim.max_file_bytes, buf) != 0) {
            if (buf->oom)
                goto cleanup;
            continue;
        }
        ws.src = k;
        if (defmodules(buf->data, buf->len, CTX_SRC_MODULES, wanted_on_module, &ws) != 0)
            goto cleanup;
    }
    if (ws.n == 0) {
        rc = 0;
        goto cleanup;
    }
    qsort(ws.v, ws.n, sizeof(wanted), cmp_wanted);
    for (size_t k = 0; k < r->files.n && tests->n < CTX_TEST_SCAN_FILES; k++) {
        const char *f = r->files.v[k];
        if (ends_with(f, "_test.exs") && context_is_test_path(f) &&
            strvec_push_n(tests, f, strlen(f)) != 0)
            goto cleanup;
    }
    if (tests->n == 0) {
        rc = 0;
        goto cleanup;
    }
    hits = calloc(nsrc * tests->n, 1);
    if (hits == NULL)
        goto cleanup;
    size_t bytes = 0;
    for (size_t t = 0; t < tests->n && bytes < CTX_TEST_SCAN_BYTES; t++) {
        if (read_rel(r->rootfd, tests->v[t], r->lim.max_file_bytes, buf) != 0) {
            if (buf->oom)
                goto cleanup;
            continue;
        }
        bytes += buf->len;
        mark_mentions(&ws, buf->data, buf->len, hits, tests->n, t);
    }
    *hits_out = hits;
    hits = NULL;
    rc = 0;
cleanup:
    for (size_t k = 0; k < ws.n; k++)
        free(ws.v[k].name);
    free(ws.v);
    free(hits);
    return rc;
}

static json_t *items_json(const items *it)
{
    static const char *const roles[] = {"stack", "import", "test"};
    json_t *out = json_array();
    if (out == NULL)
        return NULL;
    for (size_t k = 0; k < it->n; k++) {
        const item *x = &it->v[k];
        json_t *o = json_pack("{s:s, s:s, s:o, s:i}", "path", x->path, "role", roles[x->role],
                              "via", x->via >= 0 ? json_string(it->v[x->via].path) : json_null(),
                              "level", x->level);
        if (o == NULL || json_array_append_new(out, o) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

json_t *context_gather(const char *root, json_t *stack_files, const context_limits *lim)
{
    repo r;
    items it = {NULL, 0, 0};
    strvec imports = {NULL, 0, 0}, cands = {NULL, 0, 0}, tests = {NULL, 0, 0};
    unsigned char *hits = NULL;
    sh_buf buf;
    json_t *out = NULL;
    sh_buf_init(&buf);
    if (repo_open(&r, root, lim) != 0)
        return r.oom ? NULL : json_array();
    const size_t max = r.lim.max_files;

    size_t k;
    json_t *v;
    json_array_foreach(stack_files, k, v)
    {
        const char *p = json_string_value(v);
        if (it.n >= max)
            break;
        if (p != NULL && repo_has(&r, p) && !items_has(&it, p) &&
            items_add(&it, p, ROLE_STACK, -1, 0) != 0)
            goto cleanup;
    }

    /* imports, breadth first */
    size_t lo = 0, hi = it.n;
    for (int level = 1; level <= r.lim.depth && lo < hi && it.n < max; level++) {
        for (size_t s = lo; s < hi && it.n < max; s++) {
            strvec_free(&imports);
            if (imports_of(&r, it.v[s].path, &imports, &buf) != 0)
                goto cleanup;
            for (size_t j = 0; j < imports.n && it.n < max; j++)
                if (!items_has(&it, imports.v[j]) &&
                    items_add(&it, imports.v[j], ROLE_IMPORT, (long)s, level) != 0)
                    goto cleanup;
        }
        lo = hi;
        hi = it.n;
    }

    /* tests of every stack and import file */
    size_t nsrc = it.n;
    if (nsrc < max && elixir_mentions(&r, &it, nsrc, &tests, &hits, &buf) != 0)
        goto cleanup;
    for (size_t s = 0; s < nsrc && it.n < max; s++) {
        const char *src = it.v[s].path;
        if (context_is_test_path(src))
            continue;
        strvec_free(&cands);
        if (test_candidates(src, &cands) != 0)
            goto cleanup;
        size_t named = 0;
        for (size_t j = 0; j < tests.n && hits != NULL && named < CTX_MENTION_TESTS; j++) {
            if (!hits[s * tests.n + j] || strvec_has(&cands, tests.v[j]))
                continue;
            if (strvec_push_n(&cands, tests.v[j], strlen(tests.v[j])) != 0)
                goto cleanup;
            named++;
        }
        for (size_t j = 0; j < cands.n && it.n < max; j++)
            if (repo_has(&r, cands.v[j]) && !items_has(&it, cands.v[j]) &&
                items_add(&it, cands.v[j], ROLE_TEST, (long)s, it.v[s].level) != 0)
                goto cleanup;
    }
    if (!r.oom)
        out = items_json(&it);

cleanup:
    free(hits);
    strvec_free(&imports);
    strvec_free(&cands);
    strvec_free(&tests);
    items_free(&it);
    sh_buf_free(&buf);
    repo_close(&r);
    return out;
}

/* ---------------------------------------------------------------- the prompt */

/* Appends trusted-but-careful text (metadata, paths, the operator's
 * descriptor and command): cut at max bytes on a code point, control and
 * invisible characters dropped (newlines kept when multiline, else made
 * blanks), invalid UTF-8 as '?', backticks as '\'', and the fence prefix
 * neutralised. */
static void append_plain(sh_buf *out, const char *text, size_t max, int multiline)
{
    if (text == NULL)
        return;
    size_t len = strnlen(text, max + 1);
    len = sh_utf8_truncate(text, len, max);
    size_t start = out->len;
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        size_t n = sh_utf8_seq_len(s + i, len - i);
        if (n == 0) {
            sh_buf_append_byte(out, '?');
            i++;
            continue;
        }
        unsigned int cp = sh_utf8_cp(s + i, n);
        if (cp == '\n' || cp == '\t' || cp == '\r')
            sh_buf_append_byte(out, (multiline && cp == '\n') ? '\n' : ' ');
        else if (cp == '`')
            sh_buf_append_byte(out, '\'');
        else if (!fence_unsafe_cp(cp))
            sh_buf_append(out, s + i, n);
        i += n;
    }
    if (!out->oom)
        fence_neutralise(out->data + start, out->len - start);
}

static void append_path(sh_buf *out, const char *path)
{
    sh_buf_append_byte(out, '`');
    append_plain(out, path, CTX_PATH_MAX, 0);
    sh_buf_append_byte(out, '`');
}

static void append_meta(sh_buf *out, const char *key, const char *value)
{
    if (value == NULL || value[0] == '\0')
        return;
    sh_buf_append_str(out, "- ");
    sh_buf_append_str(out, key);
    sh_buf_append_str(out, ": ");
    append_plain(out, value, P_META_MAX, 0);
    sh_buf_append_byte(out, '\n');
}

static void append_fenced(const fence *f, sh_buf *out, const sh_scrubber *scrub, const char *label,
                          const char *text, size_t max)
{
    if (text == NULL || text[0] == '\0')
        return;
    /* the scrubber sees a little more than max so a secret cut at the
     * bound is still recognised; fence_append cuts at max */
    size_t len = strnlen(text, max + 1024);
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    sh_buf_append_byte(out, '\n');
    fence_append(f, out, scrub, label, text, len, max);
}

/* Stack files and the line numbers the stack trace names in each. */
typedef struct stack_lines {
    const char *path;
    size_t ncomp;
    unsigned long lines[P_EXCERPT_LINES];
    size_t nlines;
} stack_lines;

typedef struct lines_ctx {
    stack_lines *v;
    size_t n;
} lines_ctx;

static int lines_on_ref(void *ctx, const ref *rf)
{
    lines_ctx *lc = ctx;
    size_t best_m = 0, count = 0, best = 0;
    for (size_t k = 0; k < lc->n; k++) {
        const char *p = lc->v[k].path;
        size_t m = trailing_match(p, strlen(p), rf->path, rf->len);
        if (!ref_accepts(rf, m, lc->v[k].ncomp))
            continue;
        if (m > best_m) {
            best_m = m;
            best = k;
            count = 1;
        } else if (m == best_m) {
            count++;
        }
    }
    if (count != 1)
        return 0;
    stack_lines *sl = &lc->v[best];
    for (size_t k = 0; k < sl->nlines; k++)
        if (sl->lines[k] == rf->line)
            return 0;
    if (sl->nlines < P_EXCERPT_LINES)
        sl->lines[sl->nlines++] = rf->line;
    return 0;
}

static int cmp_ulong(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return (x > y) - (x < y);
}

/* Numbered lines of text within P_EXCERPT_SPAN of a line in lines
 * (sorted), "..." between the windows, at most P_EXCERPT_MAX bytes. */
static void build_excerpt(sh_buf *ex, const char *text, size_t len, const unsigned long *lines,
                          size_t nl)
{
    size_t pos = 0, w = 0;
    unsigned long no = 1, last = 0;
    char num[32];
    while (pos < len && w < nl) {
        const char *s = text + pos;
        const char *e = memchr(s, '\n', len - pos);
        size_t n = e != NULL ? (size_t)(e - s) : len - pos;
        pos += n + (e != NULL);
        while (w < nl && no > lines[w] + P_EXCERPT_SPAN)
            w++;
        if (w == nl)
            break;
        if (no + P_EXCERPT_SPAN >= lines[w]) {
            size_t cut = sh_utf8_truncate(s, n, P_EXCERPT_LINE_MAX);
            if (ex->len + cut + 48 > P_EXCERPT_MAX)
                break;
            if (last != 0 && no != last + 1)
                sh_buf_append_str(ex, "...\n");
            int named = 0;
            for (size_t j = w; j < nl && !named && lines[j] <= no; j++)
                named = lines[j] == no;
            int k = snprintf(num, sizeof(num), "%6lu%s ", no, named ? ">" : "|");
            if (k > 0)
                sh_buf_append(ex, num, (size_t)k);
            sh_buf_append(ex, s, cut);
            if (cut < n)
                sh_buf_append_str(ex, " [line cut]");
            sh_buf_append_byte(ex, '\n');
            last = no;
        }
        no++;
    }
}

static void append_excerpts(const fence *f, sh_buf *out, const sh_scrubber *scrub,
                            const context_prompt_in *in, stack_lines *sl, size_t nsl)
{
    lines_ctx lc = {sl, nsl};
    scan_refs(in->stacktrace, lines_on_ref, &lc);
    int rootfd = open_root(in->root);
    if (rootfd < 0)
        return;
    sh_buf text, ex;
    sh_buf_init(&text);
    sh_buf_init(&ex);
    int heading = 0;
    for (size_t k = 0; k < nsl && !out->oom; k++) {
        if (sl[k].nlines == 0)
            continue;
        if (read_rel(rootfd, sl[k].path, P_EXCERPT_READ, &text) != 0) {
            if (text.oom)
                out->oom = 1;
            continue;
        }
        qsort(sl[k].lines, sl[k].nlines, sizeof(unsigned long), cmp_ulong);
        sh_buf_reset(&ex);
        build_excerpt(&ex, text.data, text.len, sl[k].lines, sl[k].nlines);
        if (ex.oom)
            out->oom = 1;
        if (ex.len == 0)
            continue;
        if (!heading) {
            sh_buf_append_str(out, "\n### Excerpts\n\nLines the stack trace names are marked "
                                   "with '>'.\n");
            heading = 1;
        }
        sh_buf_append_str(out, "\n");
        append_path(out, sl[k].path);
        sh_buf_append_str(out, ", around line");
        sh_buf_append_str(out, sl[k].nlines > 1 ? "s" : "");
        for (size_t j = 0; j < sl[k].nlines; j++)
            sh_buf_appendf(out, "%s %lu", j > 0 ? "," : "", sl[k].lines[j]);
        sh_buf_append_str(out, ":\n");
        fence_append(f, out, scrub, "file excerpt", ex.data, ex.len - 1, P_EXCERPT_MAX);
    }
    sh_buf_free(&text);
    sh_buf_free(&ex);
    close(rootfd);
}

static void append_files(const fence *f, sh_buf *out, const sh_scrubber *scrub,
                         const context_prompt_in *in)
{
    size_t nfiles = json_array_size(in->files);
    if (nfiles == 0)
        return;
    stack_lines *sl = calloc(P_STACK_FILES, sizeof(*sl));
    size_t nsl = 0;
    if (sl == NULL) {
        out->oom = 1;
        return;
    }
    sh_buf_append_str(out, "\n## Files\n\nFiles found from the stack trace (stack), what they "
                           "alias, import, use or require (import) and their tests (test):\n\n");
    size_t k;
    json_t *v;
    json_array_foreach(in->files, k, v)
    {
        const char *path = json_string_value(json_object_get(v, "path"));
        const char *role = json_string_value(json_object_get(v, "role"));
        const char *via = json_string_value(json_object_get(v, "via"));
        json_int_t level = json_integer_value(json_object_get(v, "level"));
        if (path == NULL || path[0] == '/' || strcmp(path, "..") == 0 || starts_with(path, "../") ||
            strstr(path, "/../") != NULL || ends_with(path, "/.."))
            continue; /* never ours: context_gather gives repository paths */
        if (role == NULL)
            role = "related";
        sh_buf_append_str(out, "- ");
        append_path(out, path);
        sh_buf_append_str(out, " (");
        append_plain(out, role, 16, 0);
        if (via != NULL) {
            sh_buf_append_str(out, strcmp(role, "test") == 0 ? " of " : ", via ");
            append_path(out, via);
        }
        if (strcmp(role, "import") == 0 && level > 0)
            sh_buf_appendf(out, ", level %d", (int)(level > 9 ? 9 : level));
        sh_buf_append_str(out, ")\n");
        if (strcmp(role, "stack") == 0 && nsl < P_STACK_FILES) {
            sl[nsl].path = path;
            sl[nsl].ncomp = count_components(path);
            nsl++;
        }
    }
    if (in->root != NULL && in->stacktrace != NULL && nsl > 0)
        append_excerpts(f, out, scrub, in, sl, nsl);
    free(sl);
}

static void append_commits(const fence *f, sh_buf *out, const sh_scrubber *scrub, json_t *commits)
{
    size_t n = json_array_size(commits);
    if (n == 0)
        return;
    sh_buf_append_str(out, "\n## Recent commits\n\nCommits that touched these files, newest "
                           "first:\n");
    size_t k;
    json_t *v;
    json_array_foreach(commits, k, v)
    {
        if (k >= P_COMMITS_MAX)
            break;
        const char *sha = json_string_value(json_object_get(v, "sha"));
        json_t *time = json_object_get(v, "time");
        const char *summary = json_string_value(json_object_get(v, "summary"));
        char hex[13];
        size_t h = 0;
        for (; sha != NULL && sha[h] != '\0' && h < 12; h++) {
            char c = fold(sha[h]);
            if (!is_digit(c) && !(c >= 'a' && c <= 'f'))
                break;
            hex[h] = c;
        }
        hex[h] = '\0';
        sh_buf_append_str(out, "\n- `");
        sh_buf_append_str(out, h > 0 ? hex : "unknown");
        sh_buf_append_str(out, "`");
        if (json_is_integer(time)) {
            time_t t = (time_t)json_integer_value(time);
            struct tm tm;
            char iso[32];
            if (gmtime_r(&t, &tm) != NULL && strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm))
                sh_buf_appendf(out, " %s", iso);
        } else if (json_is_string(time)) {
            sh_buf_append_byte(out, ' ');
            append_plain(out, json_string_value(time), 40, 0);
        }
        sh_buf_append_byte(out, '\n');
        if (summary != NULL && summary[0] != '\0')
            fence_append(f, out, scrub, "commit summary", summary,
                         strnlen(summary, P_SUMMARY_MAX + 1024), P_SUMMARY_MAX);
    }
}

/* From the second attempt on: why the previous change was not accepted
 * (the validation's words) and the tail of its failing output, fenced. */
static void append_previous(const fence *f, sh_buf *out, const sh_scrubber *scrub,
                            const context_prompt_in *in)
{
    if (in->attempt < 2)
        return;
    sh_buf_appendf(out,
                   "\n## Previous attempt\n\nThis is attempt %d. The change of the previous "
                   "attempt was discarded (you start again from the deployed code) because its "
                   "validation found:\n\n",
                   in->attempt);
    size_t i;
    json_t *r;
    json_array_foreach(in->previous_reasons, i, r)
    {
        if (i >= P_REASONS_MAX || !json_is_string(r))
            break;
        sh_buf_append_str(out, "- ");
        append_plain(out, json_string_value(r), P_REASON_MAX, 0);
        sh_buf_append_byte(out, '\n');
    }
    sh_buf_append_str(out, "\nAddress each point with a new change that still follows the "
                           "constraints above.\n");
    /* the output of tests the agent wrote: untrusted */
    append_fenced(f, out, scrub, "output of the failing step - last part", in->previous_output,
                  P_PREVIOUS_MAX);
}

int context_prompt(sh_buf *out, const context_prompt_in *in, const sh_scrubber *scrub)
{
    if (out == NULL || in == NULL)
        return -1;
    fence f;
    fence_init(&f);

    sh_buf_append_str(out,
                      "Fix the root cause of the production error below in this checkout of the "
                      "deployed code (plain files, not a git repository); the error, the files "
                      "involved and their recent history follow.\n\n## Constraints\n\n"
                      "- Make the smallest change that fixes the root cause.\n"
                      "- No refactoring, renaming, formatting or dependency changes.\n"
                      "- Change only the files listed under Files unless another file is strictly "
                      "needed; then explain why in your final message.\n"
                      "- Add or change a regression test that fails without the fix and passes "
                      "with it.\n");
    if (in->max_changed_lines > 0)
        sh_buf_appendf(out,
                       "- At most %zu changed lines in all (added plus removed, tests "
                       "included).\n",
                       in->max_changed_lines);
    sh_buf_append_str(out, "- Never touch authentication, migrations, CI, build, dependency, "
                           "configuration, deploy or secret files.\n"
                           "- Do not change or delete existing tests; add new ones (also to an "
                           "existing test file).\n"
                           "- Do not commit, push or create branches: the runner does that.\n"
                           "- Do not read or print environment variables or credentials.\n\n");
    fence_explain(&f, out);

    sh_buf_append_str(out, "\n## Error\n\n");
    append_meta(out, "Fingerprint", in->fingerprint);
    append_meta(out, "Ticket", in->ticket);
    append_meta(out, "Severity", in->severity);
    if (in->count > 0)
        sh_buf_appendf(out, "- Occurrences: %lld\n", in->count);
    /* the service comes from a log record or an HTTP client: untrusted */
    append_fenced(&f, out, scrub, "service", in->service, P_META_MAX);
    append_fenced(&f, out, scrub, "error message", in->message, P_MESSAGE_MAX);
    append_fenced(&f, out, scrub, "stack trace", in->stacktrace, P_STACK_MAX);
    append_fenced(&f, out, scrub, "request path", in->request_path, P_REQUEST_MAX);
    append_fenced(&f, out, scrub, "root cause analysis", in->root_cause, P_ROOT_CAUSE_MAX);

    if (in->descriptor != NULL && in->descriptor[0] != '\0') {
        sh_buf_append_str(out, "\n## Service\n\n");
        append_plain(out, in->descriptor, P_DESCRIPTOR_MAX, 1);
        sh_buf_append_byte(out, '\n');
    }

    append_files(&f, out, scrub, in);
    append_commits(&f, out, scrub, in->recent_commits);

    append_previous(&f, out, scrub, in);

    if (in->test_command != NULL && in->test_command[0] != '\0') {
        sh_buf_append_str(out, "\n## How to check\n\nRun this from the repository root; it must "
                               "pass with your change, and your regression test must fail "
                               "without it:\n\n    ");
        append_plain(out, in->test_command, P_COMMAND_MAX, 0);
        sh_buf_append_byte(out, '\n');
    }
    return out->oom ? -1 : 0;
}
