/*
 * Git work for the fix loop through libgit2 (worktree.h).
 *
 * What the fix loop does to the application's repository beyond its
 * trees (tree.c): resolve revisions, diff two commits, list history,
 * merge a fix into the deploy branch, revert it, and push. The deploy
 * checkout is only ever updated over a clean working directory. Every
 * size is bounded. Errors read "<what>: <libgit2's message>" and never
 * contain a push token.
 */
#define _XOPEN_SOURCE 700
#include "worktree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#define WT_REV_MAX 256
#define WT_BRANCH_MAX 200
#define WT_REFNAME_MAX (WT_BRANCH_MAX + 16)
#define WT_PATH_MAX 4096
#define WT_URL_MAX 4096
#define WT_TOKEN_MAX 4096
#define WT_RECENT_LIMIT_MAX 1000
#define WT_RECENT_SCAN_MAX 20000
#define WT_RECENT_PATHS_MAX 1000
#define WT_RECENT_FILES_MAX 50
#define WT_SUMMARY_MAX 1000
#define WT_AUTHOR_MAX 200
#define WT_LIST_LIMIT_MAX 1000000
#define WT_STATUS_MAX 256
#define WT_DEFAULT_NAME "SelfHeal"
#define WT_DEFAULT_EMAIL "self-heal@localhost"

struct wt_repo {
    git_repository *repo;
};

git_repository *wt_repo_git(wt_repo *repo)
{
    return repo != NULL ? repo->repo : NULL;
}

/* ------------------------------------------------------------ init */

static pthread_once_t wt_once = PTHREAD_ONCE_INIT;
static int wt_init_rc; /* written once, inside wt_once */

static void wt_init_once(void)
{
    wt_init_rc = git_libgit2_init();
}

int wt_init(void)
{
    if (pthread_once(&wt_once, wt_init_once) != 0)
        return -1;
    return wt_init_rc < 0 ? -1 : 0;
}

/* ------------------------------------------------------------ errors */

static const char *git_msg(void)
{
    const git_error *e = git_error_last();
    return e != NULL && e->message != NULL ? e->message : "unknown error";
}

/* "<what>: <libgit2's last message>"; returns -1. */
static int git_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int git_fail(char *err, size_t errlen, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    sh_errf(err, errlen, "%s: %s", what, git_msg());
    git_error_clear();
    return -1;
}

static int start(char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (wt_init() != 0) {
        sh_errf(err, errlen, "libgit2 initialisation failed");
        return -1;
    }
    git_error_clear();
    return 0;
}

/* ------------------------------------------------------------ validation */

/* Writes "refs/heads/<branch>" into ref when branch is a valid branch name. */
static int branch_refname(char ref[WT_REFNAME_MAX], const char *branch)
{
    if (branch == NULL || branch[0] == '\0' || strnlen(branch, WT_BRANCH_MAX + 1) > WT_BRANCH_MAX)
        return 0;
    int n = snprintf(ref, WT_REFNAME_MAX, "refs/heads/%s", branch);
    if (n < 0 || n >= WT_REFNAME_MAX)
        return 0;
    int valid = 0;
    if (git_reference_name_is_valid(&valid, ref) < 0 || !valid) {
        git_error_clear();
        return 0;
    }
    valid = 0;
    if (git_branch_name_is_valid(&valid, branch) < 0 || !valid) {
        git_error_clear();
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ unshadow
 *
 * libgit2 1.5.1's checkout writes through a symlink that stands in the
 * working directory where the tree has a directory (lib -> /elsewhere, then
 * lib/app.ex is written to /elsewhere/app.ex), with or without a pathspec.
 * Before every checkout into a working directory the entries of the target
 * tree are made safe: a symlink or file standing where the tree has a
 * directory is removed, and so is a symlink where the tree has a file; the
 * checkout then recreates them as the tree says. */

/* rel must be what mode says: 0 done, 1 when rel is missing or was removed
 * (nothing beneath it to check), -1 on error. */
static int unshadow_entry(int rootfd, const char *rel, git_filemode_t mode)
{
    struct stat st;
    if (fstatat(rootfd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT || errno == ENOTDIR ? 1 : -1;
    int bad;
    if (mode == GIT_FILEMODE_TREE)
        bad = !S_ISDIR(st.st_mode);
    else if (mode == GIT_FILEMODE_BLOB || mode == GIT_FILEMODE_BLOB_EXECUTABLE)
        bad = S_ISLNK(st.st_mode);
    else
        return 0; /* a symlink or a submodule in the tree: checkout replaces it itself */
    if (!bad)
        return 0;
    if (unlinkat(rootfd, rel, 0) != 0 && errno != ENOENT)
        return -1;
    return 1;
}

typedef struct unshadow_ctx {
    int rootfd;
    const char *prefix; /* "" or "dir/" */
    int failed;
} unshadow_ctx;

static int unshadow_cb(const char *root, const git_tree_entry *entry, void *payload)
{
    unshadow_ctx *c = payload;
    char rel[WT_PATH_MAX + 1];
    int n = snprintf(rel, sizeof(rel), "%s%s%s", c->prefix, root, git_tree_entry_name(entry));
    if (n < 0 || (size_t)n >= sizeof(rel))
        return 1; /* cannot exist on disk either */
    int r = unshadow_entry(c->rootfd, rel, git_tree_entry_filemode(entry));
    if (r < 0) {
        c->failed = 1;
        return GIT_EUSER;
    }
    return r; /* 1 skips the subtree of a missing or removed directory */
}

/* Makes every path of tree (placed at prefix "" or "dir/") safe to check
 * out under the directory rootfd. */
static int unshadow_tree(int rootfd, git_tree *tree, const char *prefix)
{
    unshadow_ctx c = {rootfd, prefix, 0};
    int r = git_tree_walk(tree, GIT_TREEWALK_PRE, unshadow_cb, &c);
    if (c.failed || (r < 0 && r != GIT_EUSER))
        return -1;
    git_error_clear();
    return 0;
}

static int open_workdir(git_repository *repo)
{
    const char *wd = git_repository_workdir(repo);
    if (wd == NULL) {
        errno = ENOTDIR;
        return -1;
    }
    return open(wd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* The whole of commit's tree, for a full checkout of repo's working dir. */
static int unshadow_commit(git_repository *repo, git_commit *commit, char *err, size_t errlen)
{
    git_tree *tree = NULL;
    if (git_commit_tree(&tree, commit) < 0)
        return git_fail(err, errlen, "checkout: tree");
    int fd = open_workdir(repo);
    int rc = fd < 0 ? -1 : unshadow_tree(fd, tree, "");
    if (rc < 0)
        sh_errf(err, errlen, "checkout: working directory: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    git_tree_free(tree);
    return rc;
}

/* ------------------------------------------------------------ helpers */

static void oid_hex(char out[WT_OID_HEX], const git_oid *id)
{
    git_oid_tostr(out, WT_OID_HEX, id);
}

static int resolve_commit(git_commit **out, git_repository *repo, const char *rev, char *err,
                          size_t errlen)
{
    *out = NULL;
    if (rev == NULL || rev[0] == '\0')
        rev = "HEAD";
    if (strnlen(rev, WT_REV_MAX + 1) > WT_REV_MAX) {
        sh_errf(err, errlen, "resolve: revision too long");
        return -1;
    }
    git_object *obj = NULL;
    git_object *peeled = NULL;
    if (git_revparse_single(&obj, repo, rev) < 0)
        return git_fail(err, errlen, "resolve '%s'", rev);
    int rc = git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT);
    git_object_free(obj);
    if (rc < 0)
        return git_fail(err, errlen, "resolve '%s'", rev);
    *out = (git_commit *)peeled;
    return 0;
}

static int open_path(git_repository **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    if (path == NULL || path[0] == '\0' || strnlen(path, WT_PATH_MAX + 1) > WT_PATH_MAX) {
        sh_errf(err, errlen, "open repository: bad path");
        return -1;
    }
    if (git_repository_open(out, path) < 0)
        return git_fail(err, errlen, "open repository %s", path);
    return 0;
}

static int default_signature(git_signature **out, git_repository *repo)
{
    if (git_signature_default(out, repo) == 0)
        return 0;
    git_error_clear();
    return git_signature_now(out, WT_DEFAULT_NAME, WT_DEFAULT_EMAIL);
}

/* First conflicting path of index into buf. */
static void first_conflict(git_index *index, char *buf, size_t n)
{
    git_index_conflict_iterator *it = NULL;
    const git_index_entry *anc = NULL, *ours = NULL, *theirs = NULL;
    snprintf(buf, n, "?");
    if (git_index_conflict_iterator_new(&it, index) == 0) {
        if (git_index_conflict_next(&anc, &ours, &theirs, it) == 0) {
            const git_index_entry *e = ours != NULL ? ours : theirs != NULL ? theirs : anc;
            if (e != NULL && e->path != NULL)
                snprintf(buf, n, "%s", e->path);
        }
        git_index_conflict_iterator_free(it);
    }
    git_error_clear();
}

/* 1 when refname is the HEAD of repo's own (non-bare) working directory. */
static int head_is(git_repository *repo, const char *refname)
{
    if (git_repository_is_bare(repo))
        return 0;
    git_reference *head = NULL;
    if (git_repository_head(&head, repo) < 0) {
        git_error_clear();
        return 0;
    }
    int is = strcmp(git_reference_name(head), refname) == 0;
    git_reference_free(head);
    return is;
}

/* Looks up the local branch and its tip; refuses a branch checked out in
 * a linked worktree (its files would silently go stale). *here is set when
 * the branch is checked out in repo's own working directory. */
static int branch_target(git_commit **tip, int *here, git_repository *repo, const char *refname,
                         const char *branch, char *err, size_t errlen)
{
    git_reference *ref = NULL;
    *tip = NULL;
    *here = 0;
    if (git_reference_lookup(&ref, repo, refname) < 0)
        return git_fail(err, errlen, "branch %s", branch);
    int rc = -1;
    const git_oid *id = git_reference_target(ref);
    if (id == NULL) {
        sh_errf(err, errlen, "branch %s: not a direct reference", branch);
        goto cleanup;
    }
    *here = head_is(repo, refname);
    if (!*here) {
        int out = git_branch_is_checked_out(ref);
        if (out < 0) {
            git_fail(err, errlen, "branch %s", branch);
            goto cleanup;
        }
        if (out == 1) {
            sh_errf(err, errlen, "branch %s is checked out in another worktree", branch);
            goto cleanup;
        }
    }
    if (git_commit_lookup(tip, repo, id) < 0) {
        git_fail(err, errlen, "branch %s", branch);
        goto cleanup;
    }
    rc = 0;
cleanup:
    git_reference_free(ref);
    return rc;
}

/* 1 when path, or a directory above it, is a file or symlink in tree. */
static int in_the_way(git_tree *tree, const char *path)
{
    char buf[WT_PATH_MAX + 1];
    size_t len = strlen(path);
    if (len > WT_PATH_MAX)
        return 1;
    memcpy(buf, path, len + 1);
    while (len > 0 && buf[len - 1] == '/')
        buf[--len] = '\0';
    for (char *p = buf;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        git_tree_entry *e = NULL;
        int found = git_tree_entry_bypath(&e, tree, buf) == 0;
        int file = found && git_tree_entry_type(e) != GIT_OBJECT_TREE;
        git_tree_entry_free(e);
        *p = saved;
        if (file || (found && saved == '\0'))
            return 1;
        if (!found || saved == '\0')
            break;
    }
    git_error_clear();
    return 0;
}

/* The working directory must hold nothing a checkout of new_commit would
 * overwrite: no change to a tracked file (staged or not) and no untracked
 * file where the new tree has one. 0, or -1 naming the first path. */
static int workdir_clean(git_repository *repo, git_commit *new_commit, char *err, size_t errlen)
{
    git_status_options so;
    git_status_options_init(&so, GIT_STATUS_OPTIONS_VERSION);
    so.show = GIT_STATUS_SHOW_INDEX_AND_WORKDIR;
    so.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED | GIT_STATUS_OPT_RECURSE_UNTRACKED_DIRS |
               GIT_STATUS_OPT_EXCLUDE_SUBMODULES;
    git_status_list *list = NULL;
    git_tree *tree = NULL;
    int rc = -1;
    if (git_status_list_new(&list, repo, &so) < 0 || git_commit_tree(&tree, new_commit) < 0)
        return git_fail(err, errlen, "deploy checkout: status");
    size_t n = git_status_list_entrycount(list);
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const git_status_entry *e = git_status_byindex(list, i);
        const git_diff_delta *d =
            e->index_to_workdir != NULL ? e->index_to_workdir : e->head_to_index;
        const char *path = d != NULL && d->new_file.path != NULL ? d->new_file.path : "?";
        if (e->status == GIT_STATUS_WT_NEW) {
            if (in_the_way(tree, path)) {
                sh_errf(err, errlen,
                        "the deploy checkout has an untracked file in the way (%.200s); "
                        "SelfHeal does not overwrite it",
                        path);
                rc = -1;
            }
        } else if (e->status != GIT_STATUS_CURRENT && e->status != GIT_STATUS_IGNORED) {
            sh_errf(err, errlen,
                    "the deploy checkout has uncommitted changes (%.200s); SelfHeal does not "
                    "overwrite them",
                    path);
            rc = -1;
        }
    }
    git_tree_free(tree);
    git_status_list_free(list);
    return rc;
}

/* Moves refname from old_id to new_commit (compare-and-swap), checking
 * the new tree out first when the branch is the working directory's HEAD:
 * only over a clean working directory, never forced over local work. */
static int advance_branch(git_repository *repo, const char *refname, const git_oid *old_id,
                          git_commit *new_commit, int here, const char *log, char *err,
                          size_t errlen)
{
    if (here) {
        if (workdir_clean(repo, new_commit, err, errlen) < 0 ||
            unshadow_commit(repo, new_commit, err, errlen) < 0)
            return -1;
        git_checkout_options co;
        git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
        co.checkout_strategy = GIT_CHECKOUT_SAFE;
        if (git_checkout_tree(repo, (const git_object *)new_commit, &co) < 0)
            return git_fail(err, errlen, "checkout");
    }
    git_reference *ref = NULL;
    if (git_reference_create_matching(&ref, repo, refname, git_commit_id(new_commit), 1, old_id,
                                      log) < 0)
        return git_fail(err, errlen, "update %s", refname);
    git_reference_free(ref);
    return 0;
}

json_t *wt_json_lossy(const char *s, size_t max)
{
    if (s == NULL)
        s = "";
    size_t len = strnlen(s, max);
    sh_buf b;
    sh_buf_init(&b);
    for (size_t i = 0; i < len;) {
        size_t n = sh_utf8_seq_len((const unsigned char *)s + i, len - i);
        if (n == 0) {
            sh_buf_append_byte(&b, '?');
            i++;
        } else {
            sh_buf_append(&b, s + i, n);
            i += n;
        }
    }
    json_t *j = b.oom ? NULL : json_stringn(b.data != NULL ? b.data : "", b.len);
    sh_buf_free(&b);
    return j;
}

/* ------------------------------------------------------------ open */

int wt_repo_open(wt_repo **out, const char *path, char *err, size_t errlen)
{
    if (out == NULL)
        return -1;
    *out = NULL;
    if (start(err, errlen) < 0)
        return -1;
    git_repository *repo = NULL;
    if (open_path(&repo, path, err, errlen) < 0)
        return -1;
    wt_repo *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        git_repository_free(repo);
        sh_errf(err, errlen, "open repository: out of memory");
        return -1;
    }
    r->repo = repo;
    *out = r;
    return 0;
}

void wt_repo_free(wt_repo *repo)
{
    if (repo == NULL)
        return;
    git_repository_free(repo->repo);
    free(repo);
}

int wt_resolve(char out[WT_OID_HEX], wt_repo *repo, const char *rev, char *err, size_t errlen)
{
    if (out == NULL || repo == NULL)
        return -1;
    out[0] = '\0';
    if (start(err, errlen) < 0)
        return -1;
    git_commit *c = NULL;
    if (resolve_commit(&c, repo->repo, rev, err, errlen) < 0)
        return -1;
    oid_hex(out, git_commit_id(c));
    git_commit_free(c);
    return 0;
}

int wt_branch_exists(wt_repo *repo, const char *branch)
{
    char refname[WT_REFNAME_MAX];
    if (repo == NULL || branch == NULL || start(NULL, 0) < 0)
        return -1;
    if (!branch_refname(refname, branch))
        return 0;
    git_reference *ref = NULL;
    int rc = git_reference_lookup(&ref, repo->repo, refname);
    if (rc == GIT_ENOTFOUND) {
        git_error_clear();
        return 0;
    }
    if (rc < 0) {
        git_error_clear();
        return -1;
    }
    git_reference_free(ref);
    return 1;
}

/* ------------------------------------------------------------ diff */

typedef struct patch_ctx {
    sh_buf *buf;
    size_t max;
    int truncated;
} patch_ctx;

static int patch_line_cb(const git_diff_delta *delta, const git_diff_hunk *hunk,
                         const git_diff_line *line, void *payload)
{
    (void)delta;
    (void)hunk;
    patch_ctx *c = payload;
    char origin = line->origin;
    int prefix = origin == GIT_DIFF_LINE_CONTEXT || origin == GIT_DIFF_LINE_ADDITION ||
                 origin == GIT_DIFF_LINE_DELETION;
    /* binary content is diffed as text too: NUL bytes are shown as "\0"
     * so the patch stays text (such a change is refused anyway) */
    size_t nuls = 0;
    for (const char *z = line->content;
         (z = memchr(z, '\0', line->content_len - (size_t)(z - line->content))) != NULL; z++)
        nuls++;
    size_t need = line->content_len + nuls + (prefix ? 1 : 0);
    size_t room = c->max - c->buf->len;
    if (need > room) {
        c->truncated = 1;
        if (nuls > 0)
            return 1;
        /* what fits, cut at a code point */
        if (prefix && room > 0) {
            sh_buf_append_byte(c->buf, origin);
            room--;
        }
        size_t n = sh_utf8_truncate(line->content, line->content_len, room);
        sh_buf_append(c->buf, line->content, n);
        return 1;
    }
    if (prefix)
        sh_buf_append_byte(c->buf, origin);
    if (nuls == 0) {
        sh_buf_append(c->buf, line->content, line->content_len);
    } else {
        for (size_t i = 0; i < line->content_len; i++) {
            if (line->content[i] == '\0')
                sh_buf_append(c->buf, "\\0", 2);
            else
                sh_buf_append_byte(c->buf, line->content[i]);
        }
    }
    return c->buf->oom ? -1 : 0;
}

/* Bytes of the added and removed lines of patch into f; a NUL byte in
 * them marks the file binary. */
static int patch_bytes(wt_change *f, git_patch *patch)
{
    size_t hunks = git_patch_num_hunks(patch);
    for (size_t h = 0; h < hunks; h++) {
        int lines = git_patch_num_lines_in_hunk(patch, h);
        for (int l = 0; l < lines; l++) {
            const git_diff_line *line = NULL;
            if (git_patch_get_line_in_hunk(&line, patch, h, (size_t)l) < 0)
                return -1;
            int add = line->origin == GIT_DIFF_LINE_ADDITION;
            if (!add && line->origin != GIT_DIFF_LINE_DELETION)
                continue;
            if (add)
                f->added_bytes += line->content_len;
            else
                f->removed_bytes += line->content_len;
            if (memchr(line->content, '\0', line->content_len) != NULL)
                f->binary = 1;
        }
    }
    return 0;
}

static char delta_status(git_delta_t s)
{
    switch (s) {
    case GIT_DELTA_ADDED:
    case GIT_DELTA_COPIED:
        return 'A';
    case GIT_DELTA_DELETED:
        return 'D';
    case GIT_DELTA_RENAMED:
        return 'R';
    default:
        return 'M';
    }
}

int wt_diff_commits(wt_diff *out, wt_repo *repo, const char *from, const char *to, size_t max_patch,
                    char *err, size_t errlen)
{
    git_commit *ca = NULL, *cb = NULL;
    git_tree *ta = NULL, *tb = NULL;
    git_diff *diff = NULL;
    int rc = -1;

    if (out == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    sh_buf_init(&out->patch);
    if (repo == NULL || start(err, errlen) < 0)
        return -1;
    if (resolve_commit(&ca, repo->repo, from, err, errlen) < 0 ||
        resolve_commit(&cb, repo->repo, to, err, errlen) < 0)
        goto cleanup;
    if (git_commit_tree(&ta, ca) < 0 || git_commit_tree(&tb, cb) < 0) {
        git_fail(err, errlen, "diff: tree");
        goto cleanup;
    }
    git_diff_options dopts;
    git_diff_options_init(&dopts, GIT_DIFF_OPTIONS_VERSION);
    /* every file as text, whatever .gitattributes or info/attributes say:
     * each changed line and byte counts */
    dopts.flags |= GIT_DIFF_FORCE_TEXT;
    if (git_diff_tree_to_tree(&diff, repo->repo, ta, tb, &dopts) < 0) {
        git_fail(err, errlen, "diff");
        goto cleanup;
    }
    git_diff_find_options fopts;
    git_diff_find_options_init(&fopts, GIT_DIFF_FIND_OPTIONS_VERSION);
    fopts.flags = GIT_DIFF_FIND_RENAMES;
    if (git_diff_find_similar(diff, &fopts) < 0) {
        git_fail(err, errlen, "diff: renames");
        goto cleanup;
    }

    size_t n = git_diff_num_deltas(diff);
    if (n > 0) {
        out->files = calloc(n, sizeof(*out->files));
        if (out->files == NULL) {
            sh_errf(err, errlen, "diff: out of memory");
            goto cleanup;
        }
    }
    for (size_t i = 0; i < n; i++) {
        git_patch *patch = NULL;
        if (git_patch_from_diff(&patch, diff, i) < 0) {
            git_fail(err, errlen, "diff: patch");
            goto cleanup;
        }
        const git_diff_delta *d =
            patch != NULL ? git_patch_get_delta(patch) : git_diff_get_delta(diff, i);
        size_t ctx = 0, add = 0, del = 0;
        if (patch != NULL && git_patch_line_stats(&ctx, &add, &del, patch) < 0) {
            git_patch_free(patch);
            git_fail(err, errlen, "diff: line counts");
            goto cleanup;
        }
        wt_change *f = &out->files[out->n];
        if (patch != NULL && patch_bytes(f, patch) < 0) {
            git_patch_free(patch);
            git_fail(err, errlen, "diff: lines");
            goto cleanup;
        }
        f->old_mode = (unsigned)d->old_file.mode;
        f->new_mode = (unsigned)d->new_file.mode;
        f->status = delta_status(d->status);
        const char *p = d->status == GIT_DELTA_DELETED ? d->old_file.path : d->new_file.path;
        f->path = strdup(p != NULL ? p : "");
        if (f->status == 'R')
            f->old_path = strdup(d->old_file.path != NULL ? d->old_file.path : "");
        f->binary = f->binary || (d->flags & GIT_DIFF_FLAG_BINARY) != 0;
        f->added = add;
        f->removed = del;
        git_patch_free(patch);
        out->n++;
        if (f->path == NULL || (f->status == 'R' && f->old_path == NULL)) {
            sh_errf(err, errlen, "diff: out of memory");
            goto cleanup;
        }
        out->added += add;
        out->removed += del;
        out->bytes += f->added_bytes + f->removed_bytes;
    }

    patch_ctx pc = {&out->patch, max_patch, 0};
    int pr = git_diff_print(diff, GIT_DIFF_FORMAT_PATCH, patch_line_cb, &pc);
    if (pr < 0 || (pr != 0 && !pc.truncated) || out->patch.oom) {
        if (out->patch.oom)
            sh_errf(err, errlen, "diff: out of memory");
        else
            git_fail(err, errlen, "diff: patch text");
        goto cleanup;
    }
    git_error_clear();
    out->patch_truncated = pc.truncated;
    /* NUL after the text (not counted in len) for callers that want a C string */
    if (sh_buf_reserve(&out->patch, 1) < 0) {
        sh_errf(err, errlen, "diff: out of memory");
        goto cleanup;
    }
    out->patch.data[out->patch.len] = '\0';
    rc = 0;
cleanup:
    if (rc < 0)
        wt_diff_free(out);
    git_diff_free(diff);
    git_tree_free(ta);
    git_tree_free(tb);
    git_commit_free(ca);
    git_commit_free(cb);
    return rc;
}

void wt_diff_free(wt_diff *diff)
{
    if (diff == NULL)
        return;
    for (size_t i = 0; i < diff->n; i++) {
        free(diff->files[i].path);
        free(diff->files[i].old_path);
    }
    free(diff->files);
    sh_buf_free(&diff->patch);
    memset(diff, 0, sizeof(*diff));
    sh_buf_init(&diff->patch);
}

/* ------------------------------------------------------------ history */

/* Paths of diff's deltas (new path, and old path when it differs) into
 * arr, at most WT_RECENT_FILES_MAX. */
static int delta_paths(json_t *arr, git_diff *diff)
{
    size_t n = git_diff_num_deltas(diff);
    for (size_t i = 0; i < n && json_array_size(arr) < WT_RECENT_FILES_MAX; i++) {
        const git_diff_delta *d = git_diff_get_delta(diff, i);
        const char *ps[2] = {d->new_file.path, d->old_file.path};
        for (int k = 0; k < 2; k++) {
            if (ps[k] == NULL || (k == 1 && ps[0] != NULL && strcmp(ps[0], ps[1]) == 0))
                continue;
            if (json_array_size(arr) >= WT_RECENT_FILES_MAX)
                break;
            if (json_array_append_new(arr, wt_json_lossy(ps[k], WT_PATH_MAX)) < 0)
                return -1;
        }
    }
    return 0;
}

json_t *wt_recent_commits(wt_repo *repo, const char *rev, int64_t since, const char *const *paths,
                          size_t npaths, size_t limit)
{
    git_commit *start_commit = NULL;
    git_revwalk *walk = NULL;
    json_t *arr = NULL;
    json_t *result = NULL;
    char err[8];

    if (repo == NULL || start(NULL, 0) < 0 || (paths == NULL && npaths > 0) ||
        npaths > WT_RECENT_PATHS_MAX)
        return NULL;
    for (size_t i = 0; i < npaths; i++)
        if (paths[i] == NULL || paths[i][0] == '\0' ||
            strnlen(paths[i], WT_PATH_MAX + 1) > WT_PATH_MAX)
            return NULL;
    if (limit > WT_RECENT_LIMIT_MAX)
        limit = WT_RECENT_LIMIT_MAX;
    arr = json_array();
    if (arr == NULL)
        return NULL;
    if (resolve_commit(&start_commit, repo->repo, rev, err, sizeof(err)) < 0)
        goto cleanup;
    if (git_revwalk_new(&walk, repo->repo) < 0 || git_revwalk_sorting(walk, GIT_SORT_TIME) < 0 ||
        git_revwalk_push(walk, git_commit_id(start_commit)) < 0)
        goto cleanup;

    git_diff_options dopts;
    git_diff_options_init(&dopts, GIT_DIFF_OPTIONS_VERSION);
    dopts.flags = GIT_DIFF_DISABLE_PATHSPEC_MATCH;
    dopts.pathspec.strings = (char **)paths;
    dopts.pathspec.count = npaths;

    git_oid id;
    size_t scanned = 0;
    while (json_array_size(arr) < limit && scanned < WT_RECENT_SCAN_MAX) {
        int r = git_revwalk_next(&id, walk);
        if (r == GIT_ITEROVER)
            break;
        if (r < 0)
            goto cleanup;
        scanned++;
        git_commit *c = NULL;
        git_commit *parent = NULL;
        git_tree *tree = NULL;
        git_tree *ptree = NULL;
        git_diff *diff = NULL;
        json_t *files = NULL;
        int ok = -1;
        int stop = 0;
        if (git_commit_lookup(&c, repo->repo, &id) < 0)
            goto next;
        if ((int64_t)git_commit_time(c) < since) {
            stop = 1;
            ok = 0;
            goto next;
        }
        if (git_commit_tree(&tree, c) < 0)
            goto next;
        if (git_commit_parentcount(c) > 0 &&
            (git_commit_parent(&parent, c, 0) < 0 || git_commit_tree(&ptree, parent) < 0))
            goto next;
        if (git_diff_tree_to_tree(&diff, repo->repo, ptree, tree, &dopts) < 0)
            goto next;
        ok = 0;
        if (git_diff_num_deltas(diff) == 0)
            goto next;
        ok = -1;
        files = json_array();
        if (files == NULL || delta_paths(files, diff) < 0)
            goto next;
        char hex[WT_OID_HEX];
        oid_hex(hex, &id);
        const git_signature *author = git_commit_author(c);
        json_t *o = json_object();
        if (o == NULL || json_array_append_new(arr, o) < 0)
            goto next;
        if (json_object_set_new(o, "sha", json_string(hex)) < 0 ||
            json_object_set_new(o, "summary",
                                wt_json_lossy(git_commit_summary(c), WT_SUMMARY_MAX)) < 0 ||
            json_object_set_new(o, "author",
                                wt_json_lossy(author != NULL ? author->name : "", WT_AUTHOR_MAX)) <
                0 ||
            json_object_set_new(o, "time", json_integer((json_int_t)git_commit_time(c))) < 0 ||
            json_object_set(o, "files", files) < 0)
            goto next;
        ok = 0;
    next:
        json_decref(files);
        git_diff_free(diff);
        git_tree_free(ptree);
        git_tree_free(tree);
        git_commit_free(parent);
        git_commit_free(c);
        if (ok < 0)
            goto cleanup;
        if (stop)
            break;
    }
    result = arr;
    arr = NULL;
cleanup:
    git_error_clear();
    json_decref(arr);
    git_revwalk_free(walk);
    git_commit_free(start_commit);
    return result;
}

typedef struct list_ctx {
    json_t *arr;
    size_t limit;
    int failed;
} list_ctx;

static int list_cb(const char *root, const git_tree_entry *entry, void *payload)
{
    list_ctx *c = payload;
    if (git_tree_entry_type(entry) != GIT_OBJECT_BLOB)
        return 0;
    if (json_array_size(c->arr) >= c->limit)
        return GIT_EUSER;
    char p[WT_PATH_MAX + 1];
    int n = snprintf(p, sizeof(p), "%s%s", root, git_tree_entry_name(entry));
    if (n < 0 || (size_t)n >= sizeof(p))
        return 0; /* absurdly long: skipped */
    if (json_array_append_new(c->arr, wt_json_lossy(p, sizeof(p))) < 0) {
        c->failed = 1;
        return GIT_EUSER;
    }
    return 0;
}

json_t *wt_list_files(wt_repo *repo, const char *commit, size_t limit)
{
    git_commit *c = NULL;
    git_tree *tree = NULL;
    char err[8];
    if (repo == NULL || start(NULL, 0) < 0)
        return NULL;
    if (limit > WT_LIST_LIMIT_MAX)
        limit = WT_LIST_LIMIT_MAX;
    list_ctx ctx = {json_array(), limit, 0};
    if (ctx.arr == NULL)
        return NULL;
    if (resolve_commit(&c, repo->repo, commit, err, sizeof(err)) < 0 ||
        git_commit_tree(&tree, c) < 0) {
        ctx.failed = 1;
        goto cleanup;
    }
    if (limit > 0) {
        int r = git_tree_walk(tree, GIT_TREEWALK_PRE, list_cb, &ctx);
        if (r < 0 && r != GIT_EUSER)
            ctx.failed = 1;
    }
cleanup:
    git_error_clear();
    git_tree_free(tree);
    git_commit_free(c);
    if (ctx.failed) {
        json_decref(ctx.arr);
        return NULL;
    }
    return ctx.arr;
}

/* ------------------------------------------------------------ merge, revert */

/* What merge and revert check first: arguments, the branch's tip (*ours,
 * *here: checked out in the main working directory) and the commit. */
static int branch_op_begin(git_commit **ours, git_commit **other, int *here, char *refname,
                           wt_repo *repo, const char *what, const char *branch, const char *commit,
                           const char *message, char *err, size_t errlen)
{
    if (repo == NULL || start(err, errlen) < 0)
        return -1;
    if (!branch_refname(refname, branch)) {
        sh_errf(err, errlen, "%s: invalid branch name", what);
        return -1;
    }
    if (message == NULL || message[0] == '\0') {
        sh_errf(err, errlen, "%s: empty message", what);
        return -1;
    }
    if (branch_target(ours, here, repo->repo, refname, branch, err, errlen) < 0 ||
        resolve_commit(other, repo->repo, commit, err, errlen) < 0)
        return -1;
    return 0;
}

/* The result index of a merge or revert committed on the branch (parents:
 * the branch tip first) and the branch moved to it; a conflict fails and
 * changes nothing. */
static int commit_index_on_branch(char out[WT_OID_HEX], git_repository *r, const char *refname,
                                  git_commit *ours, int here, git_index *index,
                                  const git_commit **parents, size_t nparents, const char *message,
                                  const char *what, char *err, size_t errlen)
{
    git_tree *tree = NULL;
    git_signature *sig = NULL;
    git_commit *made = NULL;
    git_oid tree_id, commit_id;
    char log[64];
    int rc = -1;
    if (git_index_has_conflicts(index)) {
        char p[WT_PATH_MAX];
        first_conflict(index, p, sizeof(p));
        sh_errf(err, errlen, "%s conflict in %s", what, p);
        return -1;
    }
    if (git_index_write_tree_to(&tree_id, index, r) < 0 ||
        git_tree_lookup(&tree, r, &tree_id) < 0 || default_signature(&sig, r) < 0) {
        git_fail(err, errlen, "%s", what);
        goto cleanup;
    }
    if (git_commit_create(&commit_id, r, NULL, sig, sig, NULL, message, tree, nparents, parents) <
            0 ||
        git_commit_lookup(&made, r, &commit_id) < 0) {
        git_fail(err, errlen, "%s: commit", what);
        goto cleanup;
    }
    snprintf(log, sizeof(log), "self-heal: %s", what);
    if (advance_branch(r, refname, git_commit_id(ours), made, here, log, err, errlen) < 0)
        goto cleanup;
    oid_hex(out, &commit_id);
    rc = 0;
cleanup:
    git_commit_free(made);
    git_signature_free(sig);
    git_tree_free(tree);
    return rc;
}

int wt_merge_into(char out[WT_OID_HEX], wt_repo *repo, const char *branch, const char *commit,
                  const char *message, char *err, size_t errlen)
{
    char refname[WT_REFNAME_MAX];
    git_commit *ours = NULL, *theirs = NULL;
    git_index *index = NULL;
    int here = 0;
    int rc = -1;

    if (out == NULL)
        return -1;
    out[0] = '\0';
    if (branch_op_begin(&ours, &theirs, &here, refname, repo, "merge", branch, commit, message, err,
                        errlen) < 0)
        goto cleanup;

    const git_oid *our_id = git_commit_id(ours);
    const git_oid *their_id = git_commit_id(theirs);
    if (git_oid_equal(our_id, their_id) ||
        git_graph_descendant_of(repo->repo, our_id, their_id) == 1) {
        oid_hex(out, our_id); /* already contains it */
        rc = 0;
        goto cleanup;
    }
    git_error_clear();
    int ff = git_graph_descendant_of(repo->repo, their_id, our_id);
    if (ff < 0) {
        git_fail(err, errlen, "merge");
        goto cleanup;
    }
    if (ff == 1) {
        if (advance_branch(repo->repo, refname, our_id, theirs, here, "self-heal: fast-forward",
                           err, errlen) < 0)
            goto cleanup;
        oid_hex(out, their_id);
        rc = 0;
        goto cleanup;
    }

    git_merge_options mo;
    git_merge_options_init(&mo, GIT_MERGE_OPTIONS_VERSION);
    if (git_merge_commits(&index, repo->repo, ours, theirs, &mo) < 0) {
        git_fail(err, errlen, "merge");
        goto cleanup;
    }
    const git_commit *parents[2] = {ours, theirs};
    rc = commit_index_on_branch(out, repo->repo, refname, ours, here, index, parents, 2, message,
                                "merge", err, errlen);
cleanup:
    git_index_free(index);
    git_commit_free(theirs);
    git_commit_free(ours);
    return rc;
}

int wt_revert_on(char out[WT_OID_HEX], wt_repo *repo, const char *branch, const char *commit,
                 const char *message, char *err, size_t errlen)
{
    char refname[WT_REFNAME_MAX];
    git_commit *ours = NULL, *target = NULL;
    git_index *index = NULL;
    int here = 0;
    int rc = -1;

    if (out == NULL)
        return -1;
    out[0] = '\0';
    if (branch_op_begin(&ours, &target, &here, refname, repo, "revert", branch, commit, message,
                        err, errlen) < 0)
        goto cleanup;
    unsigned int mainline = git_commit_parentcount(target) > 1 ? 1 : 0;
    if (git_revert_commit(&index, repo->repo, target, ours, mainline, NULL) < 0) {
        git_fail(err, errlen, "revert");
        goto cleanup;
    }
    const git_commit *parents[1] = {ours};
    rc = commit_index_on_branch(out, repo->repo, refname, ours, here, index, parents, 1, message,
                                "revert", err, errlen);
cleanup:
    git_index_free(index);
    git_commit_free(target);
    git_commit_free(ours);
    return rc;
}

/* ------------------------------------------------------------ push */

typedef struct push_ctx {
    const char *token;
    const char *ca_file;
    int attempts;
    int rejected;
    char status[WT_STATUS_MAX];
} push_ctx;

static int push_cred_cb(git_credential **out, const char *url, const char *user_from_url,
                        unsigned int allowed, void *payload)
{
    (void)url;
    (void)user_from_url;
    push_ctx *c = payload;
    if (c->token == NULL || (allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT) == 0)
        return GIT_PASSTHROUGH;
    if (c->attempts >= 2) {
        git_error_set_str(GIT_ERROR_NET, "authentication failed");
        return GIT_EAUTH;
    }
    c->attempts++;
    return git_credential_userpass_plaintext_new(out, "x-access-token", c->token);
}

/* 1 when the DER certificate der verifies against the CAs of ca_file for
 * host (a name or an IP address), 0 when not. libgit2 hands over only the
 * server's own certificate, so the CA file must hold every certificate up
 * to it (root and intermediates). */
static int cert_trusted(const unsigned char *der, size_t len, const char *ca_file, const char *host)
{
    const unsigned char *p = der;
    X509 *leaf = len <= 65536 ? d2i_X509(NULL, &p, (long)len) : NULL;
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *vctx = X509_STORE_CTX_new();
    int ok = 0;
    if (leaf == NULL || store == NULL || vctx == NULL ||
        X509_STORE_load_file(store, ca_file) != 1 ||
        X509_STORE_CTX_init(vctx, store, leaf, NULL) != 1)
        goto done;
    X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(vctx);
    if (X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1 &&
        X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1)
        goto done;
    ok = X509_verify_cert(vctx) == 1;
done:
    X509_STORE_CTX_free(vctx);
    X509_STORE_free(store);
    X509_free(leaf);
    return ok;
}

/* A certificate the TLS library refused (valid == 0) is accepted only
 * when it verifies against the configured CA file. */
static int push_cert_cb(git_cert *cert, int valid, const char *host, void *payload)
{
    push_ctx *c = payload;
    if (valid || c->ca_file == NULL || cert == NULL || cert->cert_type != GIT_CERT_X509 ||
        host == NULL)
        return GIT_PASSTHROUGH;
    git_cert_x509 *x = (git_cert_x509 *)cert;
    if (cert_trusted(x->data, x->len, c->ca_file, host))
        return 0;
    git_error_set_str(GIT_ERROR_SSL, "the server's certificate is not signed by fix.remote.ca_file "
                                     "for this host");
    return GIT_ECERTIFICATE;
}

static int push_ref_cb(const char *refname, const char *status, void *data)
{
    (void)refname;
    push_ctx *c = data;
    if (status != NULL) {
        c->rejected = 1;
        snprintf(c->status, sizeof(c->status), "%s", status);
    }
    return 0;
}

/* Replaces every occurrence of token in s (in place) with "***". */
static void scrub_token(char *s, const char *token)
{
    if (s == NULL || token == NULL || token[0] == '\0')
        return;
    size_t tl = strlen(token);
    size_t rl = tl < 3 ? tl : 3;
    char *p = s;
    while ((p = strstr(p, token)) != NULL) {
        memset(p, '*', rl);
        memmove(p + rl, p + tl, strlen(p + tl) + 1);
        p += rl;
    }
}

/* The error "<what>: <message>" with the token scrubbed from the whole
 * text before it is cut to errlen. */
static int push_fail(char *err, size_t errlen, const char *what, const char *msg, const char *token)
{
    size_t need = strlen(what) + strlen(msg) + 3;
    char *full = malloc(need);
    if (full == NULL) {
        sh_errf(err, errlen, "push failed");
        git_error_clear();
        return -1;
    }
    snprintf(full, need, "%s: %s", what, msg);
    scrub_token(full, token);
    sh_errf(err, errlen, "%s", full);
    free(full);
    git_error_clear();
    return -1;
}

int wt_push(wt_repo *repo, const char *remote_url, const char *branch, const wt_push_opts *opts,
            char *err, size_t errlen)
{
    const char *token = opts != NULL ? opts->token : NULL;
    const char *ca_file =
        opts != NULL && opts->ca_file != NULL && opts->ca_file[0] != '\0' ? opts->ca_file : NULL;
    char refname[WT_REFNAME_MAX];
    char spec[2 * WT_REFNAME_MAX + 2];
    git_remote *remote = NULL;
    int rc = -1;

    if (repo == NULL || start(err, errlen) < 0)
        return -1;
    if (!branch_refname(refname, branch)) {
        sh_errf(err, errlen, "push: invalid branch name");
        return -1;
    }
    if (remote_url == NULL || remote_url[0] == '\0' ||
        strnlen(remote_url, WT_URL_MAX + 1) > WT_URL_MAX) {
        sh_errf(err, errlen, "push: bad remote url");
        return -1;
    }
    if (token != NULL) {
        size_t tl = strnlen(token, WT_TOKEN_MAX + 1);
        if (tl == 0)
            token = NULL;
        else if (tl > WT_TOKEN_MAX) {
            sh_errf(err, errlen, "push: token too long");
            return -1;
        }
        for (size_t i = 0; token != NULL && i < tl; i++) {
            if ((unsigned char)token[i] < 0x20 || token[i] == 0x7f) {
                sh_errf(err, errlen, "push: token has control characters");
                return -1;
            }
        }
    }
    snprintf(spec, sizeof(spec), "%s:%s", refname, refname);

    push_ctx pc;
    memset(&pc, 0, sizeof(pc));
    pc.token = token;
    pc.ca_file = ca_file;
    /* The URL is used as given: no url.<base>.insteadOf rewriting from the
     * repository's or the user's config (which could send the token
     * elsewhere; in libgit2 1.5.1 that lookup also leaks PCRE2 match data). */
    git_remote_create_options ro;
    git_remote_create_options_init(&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION);
    ro.repository = repo->repo;
    ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF;
    if (git_remote_create_with_opts(&remote, remote_url, &ro) < 0) {
        push_fail(err, errlen, "push: remote", git_msg(), token);
        goto cleanup;
    }
    git_push_options po;
    git_push_options_init(&po, GIT_PUSH_OPTIONS_VERSION);
    po.callbacks.credentials = push_cred_cb;
    po.callbacks.certificate_check = push_cert_cb;
    po.callbacks.push_update_reference = push_ref_cb;
    po.callbacks.payload = &pc;
    char *specs[1] = {spec};
    git_strarray refspecs = {specs, 1};
    if (git_remote_push(remote, &refspecs, &po) < 0) {
        push_fail(err, errlen, "push", git_msg(), token);
        goto cleanup;
    }
    if (pc.rejected) {
        push_fail(err, errlen, "push rejected", pc.status, token);
        goto cleanup;
    }
    rc = 0;
cleanup:
    git_remote_free(remote);
    return rc;
}
