/* Git trees as plain directories and back (port/fix/tree.c): an export holds
 * the stored bytes and modes and no .git; a capture turns what an agent
 * left into a tree relative to the base, with the base's ignore rules, and
 * refuses symlinks, files made executable, special files, nested
 * repositories and .git* paths without ever following a symlink; compose,
 * commit by branch name (never through HEAD, never a checked-out branch),
 * rebase, reading a file, removing a tree. Every repository is made here
 * with libgit2 in a temporary directory. */
#define _XOPEN_SOURCE 700 /* nftw, mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>

#include "tree.h"
#include "worktree.h"

typedef struct fx {
    char root[128];
    char repo[256];
    char base[WT_OID_HEX];
    wt_repo *r;
} fx;

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p) == 0 || errno == ENOENT ? 0 : -1;
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

static void write_at(const char *dir, const char *rel, const char *content, size_t len)
{
    char p[1024];
    pathf(p, sizeof(p), "%s/%s", dir, rel);
    char d[1024];
    memcpy(d, p, strlen(p) + 1);
    for (char *s = d + 1; *s != '\0'; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(d, 0755) != 0)
                assert_int_equal(errno, EEXIST);
            *s = '/';
        }
    }
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_file(const char *dir, const char *rel, const char *content)
{
    write_at(dir, rel, content, strlen(content));
}

static void at(char *out, size_t n, const char *dir, const char *rel)
{
    pathf(out, n, "%s/%s", dir, rel);
}

/* Stages the whole working directory of the repository and commits it on
 * HEAD with libgit2 (symlinks and modes as on disk). */
static void commit_repo(char out[WT_OID_HEX], fx *f, const char *msg)
{
    git_repository *g = NULL;
    git_index *idx = NULL;
    git_tree *tree = NULL;
    git_signature *sig = NULL;
    git_object *parent = NULL;
    git_oid tree_id, id;
    assert_int_equal(git_repository_open(&g, f->repo), 0);
    assert_int_equal(git_repository_index(&idx, g), 0);
    assert_int_equal(git_index_add_all(idx, NULL, 0, NULL, NULL), 0);
    char kept[512];
    pathf(kept, sizeof(kept), "%s/_build/kept.txt", f->repo);
    struct stat st;
    if (lstat(kept, &st) == 0) /* tracked although ignored */
        assert_int_equal(git_index_add_bypath(idx, "_build/kept.txt"), 0);
    assert_int_equal(git_index_update_all(idx, NULL, NULL, NULL), 0);
    assert_int_equal(git_index_write(idx), 0);
    assert_int_equal(git_index_write_tree(&tree_id, idx), 0);
    assert_int_equal(git_tree_lookup(&tree, g, &tree_id), 0);
    assert_int_equal(git_signature_new(&sig, "Tester", "t@example.com", 1700000000, 0), 0);
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

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    const char *tmp = getenv("TMPDIR");
    pathf(f->root, sizeof(f->root), "%s/sh_tree_XXXXXX", tmp ? tmp : "/tmp");
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

    write_file(f->repo, "src/calc.py", "def average(xs):\n    return sum(xs) / len(xs)\n");
    write_file(f->repo, "tests/test_calc.py", "import unittest\n");
    write_at(f->repo, "crlf.txt", "a\r\nb\r\n", 6);
    write_file(f->repo, ".gitignore", "_build/\n*.log\n");
    write_file(f->repo, ".gitattributes", "* text eol=crlf\n");
    write_file(f->repo, "bin/run", "#!/bin/sh\necho run\n");
    char p[512], l[512];
    at(p, sizeof(p), f->repo, "bin/run");
    assert_int_equal(chmod(p, 0755), 0);
    at(l, sizeof(l), f->repo, "docs");
    assert_int_equal(symlink("src", l), 0); /* a symlink of the project's own */
    write_file(f->repo, "_build/kept.txt", "tracked inside an ignored directory\n");
    commit_repo(f->base, f, "base");
    char err[256] = "";
    assert_int_equal(wt_repo_open(&f->r, f->repo, err, sizeof(err)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    wt_repo_free(f->r);
    (void)nftw(f->root, rm_cb, 32, FTW_PHYS | FTW_DEPTH);
    free(f);
    return 0;
}

static void export_ok(fx *f, const char *rev, char *dir, size_t n, const char *leaf)
{
    char err[512] = "";
    pathf(dir, n, "%s/%s", f->root, leaf);
    int rc = tree_export(f->r, rev, dir, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "tree_export: %s\n", err);
    assert_int_equal(rc, 0);
}

/* Captures dir against the base: the tree id and the refusals joined as
 * "path=reason,..." (static buffer). */
static const char *capture(fx *f, const char *dir, char tree[WT_OID_HEX])
{
    static char buf[2048];
    char err[512] = "";
    json_t *refused = NULL;
    int rc = tree_capture(tree, &refused, f->r, f->base, dir, NULL, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "tree_capture: %s\n", err);
    assert_int_equal(rc, 0);
    buf[0] = '\0';
    size_t i, n = 0;
    json_t *v;
    json_array_foreach(refused, i, v)
    {
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s=%s", i ? "," : "",
                              json_string_value(json_object_get(v, "path")),
                              json_string_value(json_object_get(v, "reason")));
    }
    json_decref(refused);
    return buf;
}

static void base_tree(fx *f, char out[WT_OID_HEX])
{
    char err[256] = "";
    assert_int_equal(tree_of(out, f->r, f->base, err, sizeof(err)), 0);
}

/* The mode and content of path in tree ("" / 0 when missing). */
static unsigned entry(fx *f, const char *tree, const char *path, char *content, size_t n)
{
    size_t len = 0;
    char *data = tree_read_file(f->r, tree, path, n - 1, &len);
    content[0] = '\0';
    if (data != NULL) {
        memcpy(content, data, len);
        content[len] = '\0';
        free(data);
    }
    git_repository *g = wt_repo_git(f->r);
    git_object *o = NULL;
    git_tree_entry *e = NULL;
    unsigned mode = 0;
    if (git_revparse_single(&o, g, tree) == 0 &&
        git_tree_entry_bypath(&e, (git_tree *)o, path) == 0)
        mode = (unsigned)git_tree_entry_filemode(e);
    git_error_clear();
    git_tree_entry_free(e);
    git_object_free(o);
    return mode;
}

/* ------------------------------------------------------------ export */

static void test_export(void **state)
{
    fx *f = *state;
    char dir[300], p[512], buf[256], err[256];
    export_ok(f, f->base, dir, sizeof(dir), "co");
    struct stat st;
    at(p, sizeof(p), dir, ".git");
    assert_int_equal(lstat(p, &st), -1); /* no repository: plain files */
    /* the stored bytes (git stored LF), whatever .gitattributes says the
     * working copy should hold */
    at(p, sizeof(p), dir, "crlf.txt");
    FILE *in = fopen(p, "rb");
    assert_non_null(in);
    size_t n = fread(buf, 1, sizeof(buf), in);
    fclose(in);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "a\nb\n", 4);
    at(p, sizeof(p), dir, "src/calc.py");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    at(p, sizeof(p), dir, "bin/run");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    at(p, sizeof(p), dir, "docs");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    ssize_t k = readlink(p, buf, sizeof(buf));
    assert_int_equal(k, 3);
    assert_memory_equal(buf, "src", 3);

    /* the directory must not exist yet; a bad revision fails */
    assert_true(tree_export(f->r, f->base, dir, err, sizeof(err)) < 0);
    pathf(p, sizeof(p), "%s/co2", f->root);
    assert_true(tree_export(f->r, "nope", p, err, sizeof(err)) < 0);
    pathf(p, sizeof(p), "%s/missing/co", f->root);
    assert_true(tree_export(f->r, f->base, p, err, sizeof(err)) < 0);
}

/* ------------------------------------------------------------ capture */

static void test_capture_unchanged(void **state)
{
    fx *f = *state;
    char dir[300], tree[WT_OID_HEX], want[WT_OID_HEX], p[512];
    export_ok(f, f->base, dir, sizeof(dir), "co");
    /* what tools leave: ignored files and an agent's private repository */
    write_file(dir, "_build/app.beam", "BEAM");
    write_file(dir, "run.log", "log");
    write_file(dir, ".git/HEAD", "ref: refs/heads/main\n");
    write_file(dir, ".git/hooks/post-checkout", "#!/bin/sh\ntouch /tmp/pwned\n");
    at(p, sizeof(p), dir, ".git/hooks/post-checkout");
    assert_int_equal(chmod(p, 0755), 0);
    assert_string_equal(capture(f, dir, tree), "");
    base_tree(f, want);
    assert_string_equal(tree, want);
}

static void test_capture_changes(void **state)
{
    fx *f = *state;
    char dir[300], tree[WT_OID_HEX], p[512], buf[256];
    export_ok(f, f->base, dir, sizeof(dir), "co");
    write_file(dir, "src/calc.py", "def average(xs):\n    return 0\n");
    write_file(dir, "src/new.py", "NEW = 1\n");
    write_file(dir, "_build/kept.txt", "changed\n"); /* tracked: counts though ignored */
    write_file(dir, "_build/other.txt", "ignored\n");
    at(p, sizeof(p), dir, "tests/test_calc.py");
    assert_int_equal(unlink(p), 0);
    assert_string_equal(capture(f, dir, tree), "");
    assert_int_equal(entry(f, tree, "src/calc.py", buf, sizeof(buf)), 0100644);
    assert_string_equal(buf, "def average(xs):\n    return 0\n");
    assert_int_equal(entry(f, tree, "src/new.py", buf, sizeof(buf)), 0100644);
    assert_string_equal(entry(f, tree, "_build/kept.txt", buf, sizeof(buf)) ? buf : "",
                        "changed\n");
    assert_int_equal(entry(f, tree, "_build/other.txt", buf, sizeof(buf)), 0);
    assert_int_equal(entry(f, tree, "tests/test_calc.py", buf, sizeof(buf)), 0);
    /* the rest as in the base */
    assert_int_equal(entry(f, tree, "bin/run", buf, sizeof(buf)), 0100755);
    assert_int_equal(entry(f, tree, "docs", buf, sizeof(buf)), 0120000);
    assert_string_equal(buf, "src");
    assert_int_equal(entry(f, tree, "crlf.txt", buf, sizeof(buf)), 0100644);
    assert_string_equal(buf, "a\nb\n");

    /* a file removed from the executable bits is fine */
    at(p, sizeof(p), dir, "bin/run");
    assert_int_equal(chmod(p, 0644), 0);
    assert_string_equal(capture(f, dir, tree), "");
    assert_int_equal(entry(f, tree, "bin/run", buf, sizeof(buf)), 0100644);
}

static void test_capture_refusals(void **state)
{
    fx *f = *state;
    char dir[300], tree[WT_OID_HEX], p[512], buf[256], outside[300];
    pathf(outside, sizeof(outside), "%s/outside", f->root);
    write_file(outside, "secret.txt", "the host's secret\n");
    export_ok(f, f->base, dir, sizeof(dir), "co");

    /* src/calc.py replaced by a symlink to a file outside */
    at(p, sizeof(p), dir, "src/calc.py");
    assert_int_equal(unlink(p), 0);
    char target[400];
    pathf(target, sizeof(target), "%s/secret.txt", outside);
    assert_int_equal(symlink(target, p), 0);
    /* a directory symlink out: never walked into */
    at(p, sizeof(p), dir, "src/out");
    assert_int_equal(symlink(outside, p), 0);
    /* the project's own symlink retargeted */
    at(p, sizeof(p), dir, "docs");
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink("/etc", p), 0);
    /* made executable, and a new executable */
    at(p, sizeof(p), dir, "tests/test_calc.py");
    assert_int_equal(chmod(p, 0755), 0);
    write_file(dir, "tools/x.sh", "#!/bin/sh\n");
    at(p, sizeof(p), dir, "tools/x.sh");
    assert_int_equal(chmod(p, 0700), 0);
    /* a fifo */
    at(p, sizeof(p), dir, "pipe");
    assert_int_equal(mkfifo(p, 0644), 0);
    /* a nested repository, and git's own files */
    write_file(dir, "lib/.git/config", "[core]\n\tfsmonitor = touch /tmp/pwned\n");
    write_file(dir, ".gitignore", "*\n");
    write_file(dir, "src/.gitattributes", "* -diff\n");
    at(p, sizeof(p), dir, ".gitattributes");
    assert_int_equal(unlink(p), 0);

    const char *got = capture(f, dir, tree);
    const char *want[] = {"src/calc.py=a symlink",
                          "src/out=a symlink",
                          "docs=a symlink retargeted",
                          "tests/test_calc.py=a file made executable",
                          "tools/x.sh=a new executable file",
                          "pipe=a special file (fifo, socket or device)",
                          "lib/.git=a nested git repository",
                          ".gitignore=a .git* path",
                          "src/.gitattributes=a .git* path",
                          ".gitattributes=a .git* path deleted"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (strstr(got, want[i]) == NULL)
            fail_msg("no refusal \"%s\" in %s", want[i], got);
    /* the symlinks are in the tree as symlinks (so the patch shows them),
     * never as what they point at */
    assert_int_equal(entry(f, tree, "src/calc.py", buf, sizeof(buf)), 0120000);
    assert_string_equal(buf, target);
    assert_int_equal(entry(f, tree, "src/out", buf, sizeof(buf)), 0120000);
    assert_int_equal(entry(f, tree, "src/out/secret.txt", buf, sizeof(buf)), 0);
    assert_int_equal(entry(f, tree, "lib/.git/config", buf, sizeof(buf)), 0);
}

static void test_capture_bounds(void **state)
{
    fx *f = *state;
    char dir[300], tree[WT_OID_HEX], err[256];
    export_ok(f, f->base, dir, sizeof(dir), "co");
    static char big[70000];
    memset(big, 'x', sizeof(big));
    write_at(dir, "src/big.txt", big, sizeof(big));
    json_t *refused = NULL;
    tree_capture_limits lim = {.max_file_bytes = 65536};
    assert_int_equal(tree_capture(tree, &refused, f->r, f->base, dir, &lim, err, sizeof(err)), 0);
    assert_int_equal(json_array_size(refused), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(refused, 0), "reason")),
                        "a file larger than 65536 bytes");
    json_decref(refused);
    tree_capture_limits few = {.max_entries = 5};
    assert_true(tree_capture(tree, &refused, f->r, f->base, dir, &few, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "more than 5 entries"));
    assert_null(refused);
    assert_true(tree_capture(tree, &refused, f->r, "nope", dir, NULL, err, sizeof(err)) < 0);
    char missing[400];
    pathf(missing, sizeof(missing), "%s/missing", f->root);
    assert_true(tree_capture(tree, &refused, f->r, f->base, missing, NULL, err, sizeof(err)) < 0);
}

/* ------------------------------------------------------------ compose, commit, rebase */

static void test_compose_commit_rebase(void **state)
{
    fx *f = *state;
    char dir[300], fix_tree[WT_OID_HEX], mixed[WT_OID_HEX], commit[WT_OID_HEX];
    char again[WT_OID_HEX], tree[WT_OID_HEX], buf[256], err[512];
    export_ok(f, f->base, dir, sizeof(dir), "co");
    write_file(dir, "src/calc.py", "fixed\n");
    write_file(dir, "tests/test_calc.py", "import unittest\n# more\n");
    write_file(dir, "tests/test_new.py", "new\n");
    assert_string_equal(capture(f, dir, fix_tree), "");

    /* the base's production code with the fix's tests */
    const char *tests[] = {"tests/test_calc.py", "tests/test_new.py"};
    assert_int_equal(tree_compose(mixed, f->r, f->base, fix_tree, tests, 2, err, sizeof(err)), 0);
    entry(f, mixed, "src/calc.py", buf, sizeof(buf));
    assert_string_equal(buf, "def average(xs):\n    return sum(xs) / len(xs)\n");
    entry(f, mixed, "tests/test_new.py", buf, sizeof(buf));
    assert_string_equal(buf, "new\n");
    /* the fix's code with the base's tests: the new test file is gone */
    assert_int_equal(tree_compose(mixed, f->r, fix_tree, f->base, tests, 2, err, sizeof(err)), 0);
    entry(f, mixed, "src/calc.py", buf, sizeof(buf));
    assert_string_equal(buf, "fixed\n");
    assert_int_equal(entry(f, mixed, "tests/test_new.py", buf, sizeof(buf)), 0);
    entry(f, mixed, "tests/test_calc.py", buf, sizeof(buf));
    assert_string_equal(buf, "import unittest\n");

    /* the commit lands on its branch by name; HEAD and main stay */
    const char *parents[1] = {f->base};
    assert_int_equal(tree_commit(commit, f->r, "self-heal/abc", fix_tree, parents, 1,
                                 "SelfHeal: fix", err, sizeof(err)),
                     0);
    char got[WT_OID_HEX];
    assert_int_equal(wt_resolve(got, f->r, "self-heal/abc", err, sizeof(err)), 0);
    assert_string_equal(got, commit);
    assert_int_equal(wt_resolve(got, f->r, "main", err, sizeof(err)), 0);
    assert_string_equal(got, f->base);
    assert_int_equal(wt_resolve(got, f->r, "HEAD", err, sizeof(err)), 0);
    assert_string_equal(got, f->base);
    /* main is checked out: never moved by a commit of SelfHeal's */
    assert_true(tree_commit(again, f->r, "main", fix_tree, parents, 1, "m", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "checked out"));
    assert_true(tree_commit(again, f->r, "bad..name", fix_tree, parents, 1, "m", err, sizeof(err)) <
                0);

    /* main moves on (another file): the fix replays onto it */
    write_file(f->repo, "README.md", "readme\n");
    char moved[WT_OID_HEX];
    commit_repo(moved, f, "main moves");
    assert_int_equal(tree_rebase(tree, f->r, f->base, commit, moved, err, sizeof(err)), 0);
    entry(f, tree, "README.md", buf, sizeof(buf));
    assert_string_equal(buf, "readme\n");
    entry(f, tree, "src/calc.py", buf, sizeof(buf));
    assert_string_equal(buf, "fixed\n");
    /* two parents: the branch only ever moves forward */
    const char *both[2] = {moved, commit};
    assert_int_equal(
        tree_commit(again, f->r, "self-heal/abc", tree, both, 2, "replayed", err, sizeof(err)), 0);
    assert_int_equal(wt_resolve(got, f->r, "self-heal/abc", err, sizeof(err)), 0);
    assert_string_equal(got, again);

    /* a conflicting move */
    write_file(f->repo, "src/calc.py", "someone else's change\n");
    char clash[WT_OID_HEX];
    commit_repo(clash, f, "clash");
    assert_int_equal(tree_rebase(tree, f->r, f->base, commit, clash, err, sizeof(err)), 1);
    assert_string_equal(tree, "");
}

static void test_read_and_remove(void **state)
{
    fx *f = *state;
    size_t len = 0;
    char *data = tree_read_file(f->r, f->base, "src/calc.py", 1000, &len);
    assert_non_null(data);
    assert_int_equal(len, strlen("def average(xs):\n    return sum(xs) / len(xs)\n"));
    free(data);
    assert_null(tree_read_file(f->r, f->base, "src/calc.py", 10, &len)); /* too large */
    assert_null(tree_read_file(f->r, f->base, "nope.py", 1000, &len));
    assert_null(tree_read_file(f->r, f->base, "src", 1000, &len)); /* a directory */
    assert_null(tree_read_file(f->r, "nope", "src/calc.py", 1000, &len));

    /* removal never follows a symlink out of the tree */
    char dir[300], outside[300], p[512];
    pathf(outside, sizeof(outside), "%s/keep", f->root);
    write_file(outside, "precious.txt", "keep me\n");
    export_ok(f, f->base, dir, sizeof(dir), "gone");
    at(p, sizeof(p), dir, "src/link");
    assert_int_equal(symlink(outside, p), 0);
    at(p, sizeof(p), dir, "src");
    assert_int_equal(chmod(p, 0500), 0); /* read-only directories are emptied too */
    assert_int_equal(tree_remove(dir), 0);
    struct stat st;
    assert_int_equal(lstat(dir, &st), -1);
    at(p, sizeof(p), outside, "precious.txt");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(tree_remove(dir), 0); /* missing: fine */
    assert_true(tree_remove("") < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_export, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capture_unchanged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capture_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capture_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capture_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compose_commit_rebase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_and_remove, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
