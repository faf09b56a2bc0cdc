/* Git work through libgit2 (port/fix/worktree.c): resolve, diff (attributes
 * ignored, bytes counted), history, merge (the deploy checkout's local work
 * kept), revert, push (to local remotes and
 * to git's own smart-HTTP server over TLS, test/support/git_https_server.py,
 * with a CA and certificates made by the openssl command). Every repository
 * is made here with libgit2 itself in a temporary directory. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <git2.h>

#include "tree.h"
#include "worktree.h"

#define T0 1700000000

typedef struct fx {
    char root[128];
    char repo[256];
    wt_repo *r;
} fx;

/* ------------------------------------------------------------ helpers */

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p) == 0 || errno == ENOENT ? 0 : -1;
}

static void rm_rf(const char *p)
{
    (void)nftw(p, rm_cb, 32, FTW_PHYS | FTW_DEPTH);
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

static void pathf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void pathf(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    assert_true(k > 0 && (size_t)k < n);
}

static void mkdirs_for(const char *file)
{
    char buf[1024];
    size_t len = strlen(file);
    assert_true(len < sizeof(buf));
    memcpy(buf, file, len + 1);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0)
                assert_int_equal(errno, EEXIST);
            *p = '/';
        }
    }
}

static void write_at(const char *dir, const char *rel, const char *content, size_t len)
{
    char p[1024];
    pathf(p, sizeof(p), "%s/%s", dir, rel);
    mkdirs_for(p);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_file(const char *dir, const char *rel, const char *content)
{
    write_at(dir, rel, content, strlen(content));
}

/* The content of dir/rel ("" when missing) into a static-lifetime buffer
 * owned by the caller. */
static const char *read_file(const char *dir, const char *rel, char *buf, size_t n)
{
    char p[1024];
    pathf(p, sizeof(p), "%s/%s", dir, rel);
    buf[0] = '\0';
    FILE *f = fopen(p, "rb");
    if (f == NULL)
        return buf;
    size_t k = fread(buf, 1, n - 1, f);
    buf[k] = '\0';
    fclose(f);
    return buf;
}

static int exists_at(const char *dir, const char *rel)
{
    char p[1024];
    pathf(p, sizeof(p), "%s/%s", dir, rel);
    return exists(p);
}

/* Stages everything in the working directory at path and commits it on
 * HEAD at time `when`, with libgit2 directly. */
static void commit_in(char out[WT_OID_HEX], const char *path, const char *msg, int64_t when)
{
    git_repository *g = NULL;
    git_index *idx = NULL;
    git_tree *tree = NULL;
    git_signature *sig = NULL;
    git_object *parent = NULL;
    git_oid tree_id, id;
    assert_int_equal(git_repository_open(&g, path), 0);
    assert_int_equal(git_repository_index(&idx, g), 0);
    assert_int_equal(git_index_add_all(idx, NULL, 0, NULL, NULL), 0);
    assert_int_equal(git_index_update_all(idx, NULL, NULL, NULL), 0);
    assert_int_equal(git_index_write(idx), 0);
    assert_int_equal(git_index_write_tree(&tree_id, idx), 0);
    assert_int_equal(git_tree_lookup(&tree, g, &tree_id), 0);
    assert_int_equal(git_signature_new(&sig, "Tester", "tester@example.com", when, 0), 0);
    int np = git_revparse_single(&parent, g, "HEAD") == 0 ? 1 : 0;
    const git_commit *parents[1] = {(const git_commit *)parent};
    assert_int_equal(
        git_commit_create(&id, g, "HEAD", sig, sig, NULL, msg, tree, (size_t)np, parents), 0);
    git_oid_tostr(out, WT_OID_HEX, &id);
    git_object_free(parent);
    git_signature_free(sig);
    git_tree_free(tree);
    git_index_free(idx);
    git_repository_free(g);
}

/* Number of entries `git status` would show (untracked included). */
static size_t status_count(const char *path)
{
    git_repository *g = NULL;
    git_status_list *sl = NULL;
    git_status_options so;
    git_status_options_init(&so, GIT_STATUS_OPTIONS_VERSION);
    so.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED | GIT_STATUS_OPT_RECURSE_UNTRACKED_DIRS;
    assert_int_equal(git_repository_open(&g, path), 0);
    assert_int_equal(git_status_list_new(&sl, g, &so), 0);
    size_t n = git_status_list_entrycount(sl);
    git_status_list_free(sl);
    git_repository_free(g);
    return n;
}

static void commit_info(const char *repo, const char *rev, char *msg, size_t n,
                        unsigned int *nparents, char parent0[WT_OID_HEX])
{
    git_repository *g = NULL;
    git_object *o = NULL;
    assert_int_equal(git_repository_open(&g, repo), 0);
    assert_int_equal(git_revparse_single(&o, g, rev), 0);
    git_commit *c = (git_commit *)o;
    snprintf(msg, n, "%s", git_commit_message(c));
    *nparents = git_commit_parentcount(c);
    parent0[0] = '\0';
    if (*nparents > 0)
        git_oid_tostr(parent0, WT_OID_HEX, git_commit_parent_id(c, 0));
    git_object_free(o);
    git_repository_free(g);
}

static void resolve_ok(char out[WT_OID_HEX], wt_repo *r, const char *rev)
{
    char err[256] = "";
    int rc = wt_resolve(out, r, rev, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "wt_resolve(%s): %s\n", rev, err);
    assert_int_equal(rc, 0);
}

/* A commit on branch (created or moved there) of base with rel set to
 * content (NULL: removed), made the way the fix loop makes one: a plain
 * checkout, the change, tree_capture, tree_commit. */
static void branch_commit(char out[WT_OID_HEX], fx *f, const char *branch, const char *base,
                          const char *rel, const char *content, const char *msg)
{
    static int n;
    char dir[300], err[512] = "", tree[WT_OID_HEX], p[600];
    pathf(dir, sizeof(dir), "%s/co%d", f->root, n++);
    int rc = tree_export(f->r, base, dir, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "tree_export: %s\n", err);
    assert_int_equal(rc, 0);
    if (content != NULL) {
        write_file(dir, rel, content);
    } else {
        pathf(p, sizeof(p), "%s/%s", dir, rel);
        assert_int_equal(unlink(p), 0);
    }
    json_t *refused = NULL;
    assert_int_equal(tree_capture(tree, &refused, f->r, base, dir, NULL, err, sizeof(err)), 0);
    assert_int_equal(json_array_size(refused), 0);
    json_decref(refused);
    const char *parents[1] = {base};
    rc = tree_commit(out, f->r, branch, tree, parents, 1, msg, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "tree_commit: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(tree_remove(dir), 0);
}

/* A linked worktree named name at path with branch checked out at base,
 * made with libgit2 directly (the fix loop no longer makes any). */
static void linked_worktree(fx *f, const char *name, const char *path, const char *branch,
                            const char *base)
{
    git_repository *g = NULL;
    git_object *o = NULL;
    git_reference *ref = NULL;
    git_worktree *w = NULL;
    assert_int_equal(git_repository_open(&g, f->repo), 0);
    assert_int_equal(git_revparse_single(&o, g, base), 0);
    assert_int_equal(git_branch_create(&ref, g, branch, (git_commit *)o, 1), 0);
    git_worktree_add_options opts;
    git_worktree_add_options_init(&opts, GIT_WORKTREE_ADD_OPTIONS_VERSION);
    opts.ref = ref;
    assert_int_equal(git_worktree_add(&w, g, name, path, &opts), 0);
    git_worktree_free(w);
    git_reference_free(ref);
    git_object_free(o);
    git_repository_free(g);
}

static const wt_change *find_change(const wt_diff *d, const char *path)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->files[i].path, path) == 0)
            return &d->files[i];
    return NULL;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    const char *base = getenv("TMPDIR");
    pathf(f->root, sizeof(f->root), "%s/sh_wt_XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(f->root));
    pathf(f->repo, sizeof(f->repo), "%s/repo", f->root);
    assert_int_equal(wt_init(), 0);
    git_repository *g = NULL;
    git_repository_init_options io;
    git_repository_init_options_init(&io, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
    io.flags = GIT_REPOSITORY_INIT_MKPATH;
    io.initial_head = "main";
    assert_int_equal(git_repository_init_ext(&g, f->repo, &io), 0);
    git_repository_free(g);
    *state = f;
    return 0;
}

static void open_fx(fx *f)
{
    char err[256] = "";
    int rc = wt_repo_open(&f->r, f->repo, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "wt_repo_open: %s\n", err);
    assert_int_equal(rc, 0);
}

static int teardown(void **state)
{
    fx *f = *state;
    wt_repo_free(f->r);
    rm_rf(f->root);
    assert_false(exists(f->root));
    free(f);
    return 0;
}

/* ------------------------------------------------------------ tests */

static void test_resolve(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], c2[WT_OID_HEX], got[WT_OID_HEX], err[256];
    write_file(f->repo, "a.txt", "one\n");
    commit_in(c1, f->repo, "first", T0);
    write_file(f->repo, "a.txt", "two\n");
    commit_in(c2, f->repo, "second", T0 + 10);
    open_fx(f);

    resolve_ok(got, f->r, NULL);
    assert_string_equal(got, c2);
    resolve_ok(got, f->r, "");
    assert_string_equal(got, c2);
    resolve_ok(got, f->r, "HEAD");
    assert_string_equal(got, c2);
    resolve_ok(got, f->r, "main");
    assert_string_equal(got, c2);
    resolve_ok(got, f->r, "HEAD~1");
    assert_string_equal(got, c1);
    resolve_ok(got, f->r, c1);
    assert_string_equal(got, c1);
    char short_sha[8];
    memcpy(short_sha, c1, 7);
    short_sha[7] = '\0';
    resolve_ok(got, f->r, short_sha);
    assert_string_equal(got, c1);

    assert_true(wt_resolve(got, f->r, "no-such-rev", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "no-such-rev"));
    assert_string_equal(got, "");
    char longrev[600];
    memset(longrev, 'a', sizeof(longrev) - 1);
    longrev[sizeof(longrev) - 1] = '\0';
    assert_true(wt_resolve(got, f->r, longrev, err, sizeof(err)) < 0);

    assert_int_equal(wt_branch_exists(f->r, "main"), 1);
    assert_int_equal(wt_branch_exists(f->r, "nope"), 0);
    assert_int_equal(wt_branch_exists(f->r, "bad..name"), 0);
    assert_int_equal(wt_branch_exists(f->r, "-x"), 0);

    wt_repo *bad = NULL;
    char missing[300];
    pathf(missing, sizeof(missing), "%s/missing", f->root);
    assert_true(wt_repo_open(&bad, missing, err, sizeof(err)) < 0);
    assert_null(bad);
    assert_true(strlen(err) > 0);
}

static void test_diff(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], c2[WT_OID_HEX], err[512], p[400];
    static const char bin1[] = {'B', 0, 1, 2, 3, 0, 'x'};
    static const char bin2[] = {'B', 0, 9, 9, 9, 0, 'y', 0};
    write_file(f->repo, "a.txt", "l1\nl2\nl3\n");
    write_file(f->repo, "b.txt", "x\ny\n");
    write_file(f->repo, "old.txt", "alpha\nbravo\ncharlie\ndelta\necho\nfoxtrot\ngolf\nhotel\n");
    write_at(f->repo, "bin.dat", bin1, sizeof(bin1));
    commit_in(c1, f->repo, "c1", T0);
    write_file(f->repo, "a.txt", "l1\nL2\nl3\nl4\n");
    pathf(p, sizeof(p), "%s/b.txt", f->repo);
    assert_int_equal(unlink(p), 0);
    write_file(f->repo, "c.txt", "c1\nc2\n");
    pathf(p, sizeof(p), "%s/old.txt", f->repo);
    char np[400];
    pathf(np, sizeof(np), "%s/new.txt", f->repo);
    assert_int_equal(rename(p, np), 0);
    write_at(f->repo, "bin.dat", bin2, sizeof(bin2));
    commit_in(c2, f->repo, "c2", T0 + 10);
    open_fx(f);

    wt_diff d;
    assert_int_equal(wt_diff_commits(&d, f->r, c1, c2, 1 << 20, err, sizeof(err)), 0);
    assert_int_equal(d.n, 5);
    const wt_change *a = find_change(&d, "a.txt");
    assert_non_null(a);
    assert_int_equal(a->status, 'M');
    assert_int_equal(a->added, 2);
    assert_int_equal(a->removed, 1);
    assert_null(a->old_path);
    const wt_change *b = find_change(&d, "b.txt");
    assert_non_null(b);
    assert_int_equal(b->status, 'D');
    assert_int_equal(b->removed, 2);
    assert_int_equal(b->added, 0);
    const wt_change *c = find_change(&d, "c.txt");
    assert_non_null(c);
    assert_int_equal(c->status, 'A');
    assert_int_equal(c->added, 2);
    const wt_change *r = find_change(&d, "new.txt");
    assert_non_null(r);
    assert_int_equal(r->status, 'R');
    assert_string_equal(r->old_path, "old.txt");
    assert_int_equal(r->added + r->removed, 0);
    const wt_change *bin = find_change(&d, "bin.dat");
    assert_non_null(bin);
    assert_int_equal(bin->status, 'M');
    assert_int_equal(bin->binary, 1);
    assert_int_equal(a->binary, 0);
    /* every file is text to the count, so binary content counts too */
    assert_int_equal(d.added, 5);
    assert_int_equal(d.removed, 4);
    assert_int_equal(a->added_bytes, 6);
    assert_int_equal(a->removed_bytes, 3);
    assert_int_equal(a->old_mode, 0100644);
    assert_int_equal(a->new_mode, 0100644);
    assert_int_equal(c->old_mode, 0);
    assert_int_equal(bin->added_bytes, sizeof(bin2));
    assert_true(d.bytes >= 6 + 3 + 6 + sizeof(bin2));
    assert_int_equal(d.patch_truncated, 0);
    assert_non_null(d.patch.data);
    assert_int_equal(d.patch.data[d.patch.len], '\0');
    assert_non_null(strstr(d.patch.data, "diff --git a/a.txt b/a.txt"));
    assert_non_null(strstr(d.patch.data, "\n+L2\n"));
    assert_non_null(strstr(d.patch.data, "\n-l2\n"));
    assert_non_null(strstr(d.patch.data, "rename from old.txt"));
    size_t full = d.patch.len;
    wt_diff_free(&d);
    assert_null(d.files);
    assert_int_equal(d.n, 0);

    assert_int_equal(wt_diff_commits(&d, f->r, c1, c2, 40, err, sizeof(err)), 0);
    assert_int_equal(d.patch_truncated, 1);
    assert_true(d.patch.len <= 40);
    assert_true(d.patch.len < full);
    assert_int_equal(d.n, 5); /* the file list is complete */
    assert_int_equal(strncmp(d.patch.data, "diff --git", 10), 0);
    wt_diff_free(&d);

    /* the other way round */
    assert_int_equal(wt_diff_commits(&d, f->r, c2, c1, 1 << 20, err, sizeof(err)), 0);
    assert_int_equal(find_change(&d, "c.txt")->status, 'D');
    assert_int_equal(find_change(&d, "b.txt")->status, 'A');
    wt_diff_free(&d);

    /* same commit: empty */
    assert_int_equal(wt_diff_commits(&d, f->r, c2, "HEAD", 100, err, sizeof(err)), 0);
    assert_int_equal(d.n, 0);
    assert_int_equal(d.patch.len, 0);
    assert_int_equal(d.patch_truncated, 0);
    wt_diff_free(&d);

    assert_true(wt_diff_commits(&d, f->r, "nope", c2, 100, err, sizeof(err)) < 0);
    assert_int_equal(d.n, 0);
    assert_null(d.files);
    wt_diff_free(&d);
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void test_recent_commits(void **state)
{
    fx *f = *state;
    char c[WT_OID_HEX], fourth[WT_OID_HEX];
    write_file(f->repo, "a.txt", "1\n");
    write_file(f->repo, "b.txt", "1\n");
    commit_in(c, f->repo, "first", T0);
    write_file(f->repo, "a.txt", "2\n");
    commit_in(c, f->repo, "second", T0 + 100);
    write_file(f->repo, "b.txt", "3\n");
    commit_in(c, f->repo, "third\n\nbody text", T0 + 200);
    write_file(f->repo, "a.txt", "4\n");
    write_file(f->repo, "c.txt", "4\n");
    commit_in(fourth, f->repo, "fourth", T0 + 300);
    open_fx(f);

    const char *pa[] = {"a.txt"};
    json_t *r = wt_recent_commits(f->r, NULL, T0 + 100, pa, 1, 10);
    assert_non_null(r);
    assert_int_equal(json_array_size(r), 2);
    json_t *e = json_array_get(r, 0);
    assert_string_equal(jstr(e, "summary"), "fourth");
    assert_string_equal(jstr(e, "sha"), fourth);
    assert_string_equal(jstr(e, "author"), "Tester");
    assert_null(json_object_get(e, "email"));
    assert_int_equal(json_integer_value(json_object_get(e, "time")), T0 + 300);
    json_t *files = json_object_get(e, "files");
    assert_int_equal(json_array_size(files), 1);
    assert_string_equal(json_string_value(json_array_get(files, 0)), "a.txt");
    assert_string_equal(jstr(json_array_get(r, 1), "summary"), "second");
    json_decref(r);

    /* the root commit is compared with the empty tree */
    const char *pb[] = {"b.txt"};
    r = wt_recent_commits(f->r, "main", 0, pb, 1, 10);
    assert_non_null(r);
    assert_int_equal(json_array_size(r), 2);
    assert_string_equal(jstr(json_array_get(r, 0), "summary"), "third");
    assert_string_equal(jstr(json_array_get(r, 1), "summary"), "first");
    json_decref(r);

    /* limit */
    r = wt_recent_commits(f->r, NULL, 0, pa, 1, 1);
    assert_non_null(r);
    assert_int_equal(json_array_size(r), 1);
    assert_string_equal(jstr(json_array_get(r, 0), "summary"), "fourth");
    json_decref(r);

    /* several paths: files lists only the touched ones among them */
    const char *pbc[] = {"b.txt", "c.txt"};
    r = wt_recent_commits(f->r, NULL, 0, pbc, 2, 10);
    assert_non_null(r);
    assert_int_equal(json_array_size(r), 3);
    files = json_object_get(json_array_get(r, 0), "files");
    assert_int_equal(json_array_size(files), 1);
    assert_string_equal(json_string_value(json_array_get(files, 0)), "c.txt");
    files = json_object_get(json_array_get(r, 2), "files");
    assert_int_equal(json_array_size(files), 1);
    assert_string_equal(json_string_value(json_array_get(files, 0)), "b.txt");
    json_decref(r);

    /* from an older revision, nothing newer shows */
    r = wt_recent_commits(f->r, "HEAD~2", 0, pa, 1, 10);
    assert_non_null(r);
    assert_int_equal(json_array_size(r), 2);
    assert_string_equal(jstr(json_array_get(r, 0), "summary"), "second");
    json_decref(r);

    /* no paths: every commit, with its files */
    r = wt_recent_commits(f->r, NULL, T0 + 300, NULL, 0, 10);
    assert_non_null(r);
    assert_int_equal(json_array_size(r), 1);
    assert_int_equal(json_array_size(json_object_get(json_array_get(r, 0), "files")), 2);
    json_decref(r);

    const char *none[] = {"zzz.txt"};
    r = wt_recent_commits(f->r, NULL, 0, none, 1, 10);
    assert_non_null(r);
    assert_int_equal(json_array_size(r), 0);
    json_decref(r);

    assert_null(wt_recent_commits(f->r, "nope", 0, pa, 1, 10));
}

static void test_list_files(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], c2[WT_OID_HEX];
    write_file(f->repo, "a.txt", "a\n");
    write_file(f->repo, "dir/sub/x.txt", "x\n");
    commit_in(c1, f->repo, "c1", T0);
    write_file(f->repo, "z.txt", "z\n");
    commit_in(c2, f->repo, "c2", T0 + 1);
    open_fx(f);

    json_t *l = wt_list_files(f->r, c1, 100);
    assert_non_null(l);
    assert_int_equal(json_array_size(l), 2);
    int saw_a = 0, saw_x = 0;
    for (size_t i = 0; i < json_array_size(l); i++) {
        const char *s = json_string_value(json_array_get(l, i));
        saw_a |= strcmp(s, "a.txt") == 0;
        saw_x |= strcmp(s, "dir/sub/x.txt") == 0;
    }
    assert_true(saw_a && saw_x);
    json_decref(l);

    l = wt_list_files(f->r, NULL, 100);
    assert_non_null(l);
    assert_int_equal(json_array_size(l), 3);
    json_decref(l);

    l = wt_list_files(f->r, NULL, 1);
    assert_non_null(l);
    assert_int_equal(json_array_size(l), 1);
    json_decref(l);

    l = wt_list_files(f->r, NULL, 0);
    assert_non_null(l);
    assert_int_equal(json_array_size(l), 0);
    json_decref(l);

    assert_null(wt_list_files(f->r, "nope", 10));
}

static void merge_ok(char out[WT_OID_HEX], fx *f, const char *branch, const char *commit,
                     const char *msg)
{
    char err[512] = "";
    int rc = wt_merge_into(out, f->r, branch, commit, msg, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "wt_merge_into: %s\n", err);
    assert_int_equal(rc, 0);
}

static void test_merge(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], f1[WT_OID_HEX], m2[WT_OID_HEX], t1[WT_OID_HEX], m3[WT_OID_HEX];
    char x1[WT_OID_HEX], out[WT_OID_HEX], got[WT_OID_HEX], buf[256], err[512], msg[256];
    char p0[WT_OID_HEX], wt[300];
    unsigned int np = 0;
    write_file(f->repo, "a.txt", "a\n");
    write_file(f->repo, "b.txt", "b\n");
    commit_in(c1, f->repo, "c1", T0);
    open_fx(f);
    pathf(wt, sizeof(wt), "%s/wt", f->root);

    /* fast-forward, the checked-out working directory follows */
    branch_commit(f1, f, "sh/ff", c1, "a.txt", "a2\n", "fix a");
    merge_ok(out, f, "main", "sh/ff", "unused for a fast-forward");
    assert_string_equal(out, f1);
    resolve_ok(got, f->r, "main");
    assert_string_equal(got, f1);
    assert_string_equal(read_file(f->repo, "a.txt", buf, sizeof(buf)), "a2\n");
    assert_int_equal(status_count(f->repo), 0);

    /* already contained: nothing changes */
    merge_ok(out, f, "main", c1, "noop");
    assert_string_equal(out, f1);

    /* a true merge of divergent history */
    write_file(f->repo, "b.txt", "b2\n");
    commit_in(m2, f->repo, "main moves on", T0 + 10);
    branch_commit(t1, f, "sh/tm", f1, "c.txt", "c\n", "add c");
    merge_ok(out, f, "main", t1, "Merge sh/tm");
    resolve_ok(got, f->r, "main");
    assert_string_equal(got, out);
    commit_info(f->repo, out, msg, sizeof(msg), &np, p0);
    assert_string_equal(msg, "Merge sh/tm");
    assert_int_equal(np, 2);
    assert_string_equal(p0, m2);
    assert_string_equal(read_file(f->repo, "c.txt", buf, sizeof(buf)), "c\n");
    assert_string_equal(read_file(f->repo, "b.txt", buf, sizeof(buf)), "b2\n");
    assert_string_equal(read_file(f->repo, "a.txt", buf, sizeof(buf)), "a2\n");
    assert_int_equal(status_count(f->repo), 0);
    memcpy(m3, out, WT_OID_HEX);

    /* a conflict changes nothing */
    branch_commit(x1, f, "sh/cf", m3, "a.txt", "fix side\n", "conflicting fix");
    write_file(f->repo, "a.txt", "main side\n");
    commit_in(m2, f->repo, "main edits a", T0 + 20);
    assert_true(wt_merge_into(out, f->r, "main", x1, "Merge conflict", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "merge conflict in a.txt"));
    resolve_ok(got, f->r, "main");
    assert_string_equal(got, m2);
    assert_string_equal(read_file(f->repo, "a.txt", buf, sizeof(buf)), "main side\n");
    assert_int_equal(status_count(f->repo), 0);

    /* refusals */
    assert_true(wt_merge_into(out, f->r, "nope", x1, "m", err, sizeof(err)) < 0);
    assert_true(wt_merge_into(out, f->r, "main", "nope", "m", err, sizeof(err)) < 0);
    assert_true(wt_merge_into(out, f->r, "bad..b", x1, "m", err, sizeof(err)) < 0);
    /* a branch checked out in a linked worktree is not moved under it */
    linked_worktree(f, "co", wt, "sh/co", c1);
    assert_true(wt_merge_into(out, f->r, "sh/co", f1, "m", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "checked out"));
    resolve_ok(got, f->r, "sh/co");
    assert_string_equal(got, c1);
    /* nor is SelfHeal's own commit put on a checked-out branch */
    const char *parents[1] = {c1};
    assert_true(tree_commit(got, f->r, "sh/co", c1, parents, 1, "m", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "checked out"));

    /* a branch not checked out anywhere (the main working dir stays) */
    merge_ok(out, f, "sh/ff", t1, "ff a side branch");
    assert_string_equal(out, t1);
    assert_string_equal(read_file(f->repo, "a.txt", buf, sizeof(buf)), "main side\n");
}

/* .gitattributes and info/attributes marking files binary or -diff hide
 * nothing from the count. */
static void test_diff_ignores_attributes(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], c2[WT_OID_HEX], err[512], p[400];
    write_file(f->repo, ".gitattributes", "big.txt binary\n*.txt -diff\n");
    write_file(f->repo, "small.txt", "x\n");
    commit_in(c1, f->repo, "c1", T0);
    pathf(p, sizeof(p), "%s/.git/info", f->repo);
    mkdir(p, 0755);
    write_file(f->repo, ".git/info/attributes", "* binary -diff -text\n");
    char big[100 * 8 + 1];
    size_t n = 0;
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "line%03d\n", i);
    write_file(f->repo, "big.txt", big);
    commit_in(c2, f->repo, "c2", T0 + 1);
    open_fx(f);
    wt_diff d;
    assert_int_equal(wt_diff_commits(&d, f->r, c1, c2, 1 << 20, err, sizeof(err)), 0);
    const wt_change *b = find_change(&d, "big.txt");
    assert_non_null(b);
    assert_int_equal(b->added, 100);
    assert_int_equal(b->added_bytes, 800);
    assert_int_equal(b->binary, 0);
    assert_int_equal(d.added, 100);
    assert_non_null(strstr(d.patch.data, "+line099"));
    wt_diff_free(&d);
}

/* The deploy checkout is updated only when nothing local would be lost. */
static void test_merge_keeps_local_work(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], f1[WT_OID_HEX], f2[WT_OID_HEX], out[WT_OID_HEX], got[WT_OID_HEX];
    char buf[256], err[512];
    write_file(f->repo, "a.txt", "a\n");
    commit_in(c1, f->repo, "c1", T0);
    open_fx(f);
    branch_commit(f1, f, "sh/a", c1, "a.txt", "fixed\n", "fix a");
    branch_commit(f2, f, "sh/x", c1, "x.txt", "new\n", "add x");

    /* an uncommitted edit of a tracked file */
    write_file(f->repo, "a.txt", "local edit\n");
    assert_true(wt_merge_into(out, f->r, "main", f1, "m", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "uncommitted changes (a.txt)"));
    resolve_ok(got, f->r, "main");
    assert_string_equal(got, c1);
    assert_string_equal(read_file(f->repo, "a.txt", buf, sizeof(buf)), "local edit\n");
    write_file(f->repo, "a.txt", "a\n");

    /* an untracked file where the fix brings one */
    write_file(f->repo, "x.txt", "mine\n");
    assert_true(wt_merge_into(out, f->r, "main", f2, "m", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "untracked file in the way (x.txt)"));
    assert_string_equal(read_file(f->repo, "x.txt", buf, sizeof(buf)), "mine\n");
    resolve_ok(got, f->r, "main");
    assert_string_equal(got, c1);

    /* untracked files elsewhere stay, and the merge goes through */
    write_file(f->repo, "notes/local.txt", "keep\n");
    assert_int_equal(wt_merge_into(out, f->r, "main", f1, "m", err, sizeof(err)), 0);
    assert_string_equal(read_file(f->repo, "a.txt", buf, sizeof(buf)), "fixed\n");
    assert_string_equal(read_file(f->repo, "notes/local.txt", buf, sizeof(buf)), "keep\n");
}

static void test_revert(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], f1[WT_OID_HEX], out[WT_OID_HEX], got[WT_OID_HEX], m[WT_OID_HEX];
    char t1[WT_OID_HEX], mg[WT_OID_HEX], buf[256], err[512], msg[256], p0[WT_OID_HEX];
    unsigned int np = 0;
    write_file(f->repo, "a.txt", "a\n");
    commit_in(c1, f->repo, "c1", T0);
    open_fx(f);

    branch_commit(f1, f, "sh/rv", c1, "a.txt", "fixed\n", "fix");
    merge_ok(out, f, "main", f1, "merge");
    assert_string_equal(read_file(f->repo, "a.txt", buf, sizeof(buf)), "fixed\n");

    assert_int_equal(wt_revert_on(out, f->r, "main", f1, "Revert \"fix\"", err, sizeof(err)), 0);
    resolve_ok(got, f->r, "main");
    assert_string_equal(got, out);
    commit_info(f->repo, out, msg, sizeof(msg), &np, p0);
    assert_string_equal(msg, "Revert \"fix\"");
    assert_int_equal(np, 1);
    assert_string_equal(p0, f1);
    assert_string_equal(read_file(f->repo, "a.txt", buf, sizeof(buf)), "a\n");
    assert_int_equal(status_count(f->repo), 0);

    /* a merge commit is reverted against its first parent */
    write_file(f->repo, "main.txt", "main\n");
    commit_in(m, f->repo, "main side", T0 + 10);
    branch_commit(t1, f, "sh/mg", out, "side.txt", "side\n", "side");
    merge_ok(mg, f, "main", t1, "merge side");
    assert_true(exists_at(f->repo, "side.txt"));
    assert_int_equal(wt_revert_on(out, f->r, "main", mg, "Revert merge", err, sizeof(err)), 0);
    assert_false(exists_at(f->repo, "side.txt"));
    assert_true(exists_at(f->repo, "main.txt"));
    assert_int_equal(status_count(f->repo), 0);

    /* a conflicting revert changes nothing */
    write_file(f->repo, "main.txt", "changed later\n");
    commit_in(m, f->repo, "edit main.txt", T0 + 20);
    /* revert the commit that added main.txt: its content changed since */
    char rv[WT_OID_HEX];
    json_t *hist = wt_recent_commits(f->r, NULL, 0, NULL, 0, 50);
    assert_non_null(hist);
    rv[0] = '\0';
    for (size_t i = 0; i < json_array_size(hist); i++)
        if (strcmp(jstr(json_array_get(hist, i), "summary"), "main side") == 0)
            snprintf(rv, sizeof(rv), "%s", jstr(json_array_get(hist, i), "sha"));
    json_decref(hist);
    assert_int_equal(strlen(rv), 40);
    resolve_ok(got, f->r, "main");
    assert_true(wt_revert_on(out, f->r, "main", rv, "Revert main side", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "conflict"));
    char after[WT_OID_HEX];
    resolve_ok(after, f->r, "main");
    assert_string_equal(after, got);
    assert_string_equal(read_file(f->repo, "main.txt", buf, sizeof(buf)), "changed later\n");

    assert_true(wt_revert_on(out, f->r, "nope", f1, "m", err, sizeof(err)) < 0);
    assert_true(wt_revert_on(out, f->r, "main", "nope", "m", err, sizeof(err)) < 0);
}

static void test_push(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], c2[WT_OID_HEX], d[WT_OID_HEX], err[512], remote[300];
    char url[400];
    write_file(f->repo, "a.txt", "a\n");
    commit_in(c1, f->repo, "c1", T0);
    open_fx(f);
    pathf(remote, sizeof(remote), "%s/remote.git", f->root);
    git_repository *bare = NULL;
    assert_int_equal(git_repository_init(&bare, remote, 1), 0);
    git_oid id;

    int rc = wt_push(f->r, remote, "main", NULL, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "wt_push: %s\n", err);
    assert_int_equal(rc, 0);
    char hex[WT_OID_HEX];
    assert_int_equal(git_reference_name_to_id(&id, bare, "refs/heads/main"), 0);
    git_oid_tostr(hex, sizeof(hex), &id);
    assert_string_equal(hex, c1);

    /* a fast-forward over file:// */
    write_file(f->repo, "a.txt", "a2\n");
    commit_in(c2, f->repo, "c2", T0 + 10);
    pathf(url, sizeof(url), "file://%s", remote);
    assert_int_equal(wt_push(f->r, url, "main", NULL, err, sizeof(err)), 0);
    assert_int_equal(git_reference_name_to_id(&id, bare, "refs/heads/main"), 0);
    git_oid_tostr(hex, sizeof(hex), &id);
    assert_string_equal(hex, c2);

    /* non-fast-forward: the local branch diverged from what was pushed */
    char s1[WT_OID_HEX];
    branch_commit(s1, f, "side", c2, "s.txt", "s\n", "side");
    assert_int_equal(wt_push(f->r, remote, "side", NULL, err, sizeof(err)), 0);
    branch_commit(d, f, "side", c1, "d.txt", "d\n", "divergent"); /* moves side off s1 */
    assert_true(wt_push(f->r, remote, "side", NULL, err, sizeof(err)) < 0);
    assert_true(strlen(err) > 0);
    assert_int_equal(git_reference_name_to_id(&id, bare, "refs/heads/side"), 0);
    git_oid_tostr(hex, sizeof(hex), &id);
    assert_string_equal(hex, s1);

    /* a bare repository: merge moves the ref, no working directory */
    char e[WT_OID_HEX], out[WT_OID_HEX], got[WT_OID_HEX];
    branch_commit(e, f, "feat", c2, "e.txt", "e\n", "feature");
    assert_int_equal(wt_push(f->r, remote, "feat", NULL, err, sizeof(err)), 0);
    wt_repo *rb = NULL;
    assert_int_equal(wt_repo_open(&rb, remote, err, sizeof(err)), 0);
    rc = wt_merge_into(out, rb, "main", "feat", "merge feat", err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "wt_merge_into (bare): %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(out, e);
    resolve_ok(got, rb, "main");
    assert_string_equal(got, e);
    wt_repo_free(rb);

    /* the token never shows in an error */
    static const char token[] = "ghs_SECRETtoken1234567890";
    pathf(url, sizeof(url), "%s/missing-%s.git", f->root, token);
    wt_push_opts with_token = {.token = token};
    assert_true(wt_push(f->r, url, "main", &with_token, err, sizeof(err)) < 0);
    assert_true(strlen(err) > 0);
    assert_null(strstr(err, token));
    assert_null(strstr(err, "SECRET"));

    assert_true(wt_push(f->r, remote, "bad..name", NULL, err, sizeof(err)) < 0);
    assert_true(wt_push(f->r, remote, "nope", NULL, err, sizeof(err)) < 0);
    assert_true(wt_push(f->r, "", "main", NULL, err, sizeof(err)) < 0);
    wt_push_opts bad_token = {.token = "bad\ntoken"};
    assert_true(wt_push(f->r, remote, "main", &bad_token, err, sizeof(err)) < 0);
    git_repository_free(bare);
}

typedef struct thread_arg {
    const char *repo;
    const char *c1;
    const char *c2;
    int failures;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    for (int i = 0; i < 20; i++) {
        char err[256], got[WT_OID_HEX];
        wt_repo *r = NULL;
        if (wt_init() != 0 || wt_repo_open(&r, a->repo, err, sizeof(err)) != 0) {
            a->failures++;
            continue;
        }
        wt_diff d;
        if (wt_resolve(got, r, "HEAD", err, sizeof(err)) != 0 || strcmp(got, a->c2) != 0)
            a->failures++;
        if (wt_diff_commits(&d, r, a->c1, a->c2, 1024, err, sizeof(err)) != 0 || d.n != 1)
            a->failures++;
        wt_diff_free(&d);
        json_t *h = wt_recent_commits(r, NULL, 0, NULL, 0, 10);
        if (h == NULL || json_array_size(h) != 2)
            a->failures++;
        json_decref(h);
        if (wt_resolve(got, r, "no-such", err, sizeof(err)) == 0 || strstr(err, "no-such") == NULL)
            a->failures++;
        wt_repo_free(r);
    }
    return NULL;
}

/* ------------------------------------------------------------ push over HTTPS */

/* Runs argv (no shell) with output to /dev/null; its exit status. */
static int run_quiet(char *const argv[])
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execvp(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* root/<name>-ca.pem and a certificate it signs for localhost. */
static void make_ca(const char *root, const char *name)
{
    char key[300], ca[300], skey[300], csr[300], crt[300], ext[300], subj[64], serial[300];
    pathf(key, sizeof(key), "%s/%s-ca.key", root, name);
    pathf(ca, sizeof(ca), "%s/%s-ca.pem", root, name);
    pathf(skey, sizeof(skey), "%s/%s-srv.key", root, name);
    pathf(csr, sizeof(csr), "%s/%s-srv.csr", root, name);
    pathf(crt, sizeof(crt), "%s/%s-srv.pem", root, name);
    pathf(ext, sizeof(ext), "%s/%s-ext.cnf", root, name);
    pathf(serial, sizeof(serial), "%s/%s-ca.srl", root, name);
    pathf(subj, sizeof(subj), "/CN=%s-test-ca", name);
    char *req_ca[] = {
        "openssl", "req",     "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes",  "-keyout", key,     "-out",    ca,   "-days",    "2",
        "-subj",   subj,      NULL};
    assert_int_equal(run_quiet(req_ca), 0);
    char *req_srv[] = {
        "openssl",       "req",     "-newkey", "ec",   "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes",        "-keyout", skey,      "-out", csr,        "-subj",
        "/CN=localhost", NULL};
    assert_int_equal(run_quiet(req_srv), 0);
    static const char ext_text[] = "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n";
    write_at(root, strrchr(ext, '/') + 1, ext_text, strlen(ext_text));
    char *sign[] = {"openssl",   "x509",     "-req",   "-in", csr,
                    "-CA",       ca,         "-CAkey", key,   "-CAcreateserial",
                    "-CAserial", serial,     "-out",   crt,   "-days",
                    "2",         "-extfile", ext,      NULL};
    assert_int_equal(run_quiet(sign), 0);
}

typedef struct git_server {
    pid_t pid;
    int in; /* its stdin: closing it stops the server */
    int port;
} git_server;

static void git_server_start(git_server *s, const char *root, const char *token)
{
    char gitroot[300], crt[300], key[300], log[300];
    pathf(gitroot, sizeof(gitroot), "%s/served", root);
    pathf(crt, sizeof(crt), "%s/good-srv.pem", root);
    pathf(key, sizeof(key), "%s/good-srv.key", root);
    pathf(log, sizeof(log), "%s/server.log", root);
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        char *argv[] = {
            "python3", "test/support/git_https_server.py", gitroot, crt, key, (char *)token, log,
            NULL};
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    s->in = in[1];
    char line[64] = "";
    size_t n = 0;
    while (n + 1 < sizeof(line) && read(out[0], line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = '\0';
    close(out[0]);
    assert_int_equal(sscanf(line, "PORT %d", &s->port), 1);
}

static void git_server_stop(git_server *s)
{
    close(s->in);
    int status = 0;
    if (waitpid(s->pid, &status, 0) != s->pid)
        kill(s->pid, SIGKILL);
}

static void test_push_https(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], err[512], remote[300], url[300], good_ca[300], other_ca[300];
    static const char token[] = "ghs_HTTPStoken0123456789abcdef";
    write_file(f->repo, "a.txt", "a\n");
    commit_in(c1, f->repo, "c1", T0);
    open_fx(f);
    pathf(remote, sizeof(remote), "%s/served/app.git", f->root);
    git_repository *bare = NULL;
    assert_int_equal(git_repository_init(&bare, remote, 1), 0);
    make_ca(f->root, "good");
    make_ca(f->root, "other");
    pathf(good_ca, sizeof(good_ca), "%s/good-ca.pem", f->root);
    pathf(other_ca, sizeof(other_ca), "%s/other-ca.pem", f->root);
    git_server srv;
    git_server_start(&srv, f->root, token);
    pathf(url, sizeof(url), "https://localhost:%d/app.git", srv.port);

    /* the system's CAs do not know the server's */
    wt_push_opts no_ca = {.token = token};
    assert_true(wt_push(f->r, url, "main", &no_ca, err, sizeof(err)) < 0);
    assert_null(strstr(err, token));
    /* a CA file that did not sign it */
    wt_push_opts stranger = {.token = token, .ca_file = other_ca};
    assert_true(wt_push(f->r, url, "main", &stranger, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "certificate"));
    /* the right CA, a wrong token */
    wt_push_opts wrong = {.token = "ghs_wrongWRONGwrong", .ca_file = good_ca};
    assert_true(wt_push(f->r, url, "main", &wrong, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "authentication"));
    assert_null(strstr(err, "WRONG"));
    /* the right CA and token */
    wt_push_opts right = {.token = token, .ca_file = good_ca};
    int rc = wt_push(f->r, url, "main", &right, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "wt_push https: %s\n", err);
    assert_int_equal(rc, 0);
    git_oid id;
    char hex[WT_OID_HEX];
    assert_int_equal(git_reference_name_to_id(&id, bare, "refs/heads/main"), 0);
    git_oid_tostr(hex, sizeof(hex), &id);
    assert_string_equal(hex, c1);
    /* the token went nowhere into the repository's config */
    char buf[4096];
    assert_null(strstr(read_file(f->repo, ".git/config", buf, sizeof(buf)), token));
    git_server_stop(&srv);
    git_repository_free(bare);
}

static void test_threads(void **state)
{
    fx *f = *state;
    char c1[WT_OID_HEX], c2[WT_OID_HEX];
    write_file(f->repo, "a.txt", "1\n");
    commit_in(c1, f->repo, "c1", T0);
    write_file(f->repo, "a.txt", "2\n");
    commit_in(c2, f->repo, "c2", T0 + 1);
    enum { N = 4 };
    pthread_t th[N];
    thread_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (thread_arg){f->repo, c1, c2, 0};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resolve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_diff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recent_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_diff_ignores_attributes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge_keeps_local_work, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_https, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
