/*
 * Git work for the fix loop, through libgit2: open the application's
 * repository, resolve the deployed commit, add and remove a worktree per
 * fix on branch self-heal/<fingerprint>, commit what the agent changed,
 * diff two commits (files, line counts, patch text), restore paths to
 * another commit (the regression check), list recent commits touching
 * paths (prompt context), merge a fix into the deploy branch, revert a
 * commit, and push a branch over HTTPS with a token.
 *
 * Conventions: 0 on success, a negative value on failure with a reason in
 * err (libgit2's own message when it has one; never a token). Object ids
 * are 40 lower-case hex characters plus NUL (WT_OID_HEX). Functions taking
 * a worktree path open the repository at that path themselves. Every
 * function calls wt_init() itself; it may be called from several threads
 * (each wt_repo is used by one thread at a time).
 */
#ifndef SELF_HEAL_PORT_WORKTREE_H
#define SELF_HEAL_PORT_WORKTREE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "self_heal/common.h"

#define WT_OID_HEX 41

typedef struct wt_repo wt_repo;

/* Initialises libgit2 once per process (thread-safe, idempotent). */
int wt_init(void);

/* Opens the repository at path (a working directory or a bare repo). */
int wt_repo_open(wt_repo **out, const char *path, char *err, size_t errlen);
void wt_repo_free(wt_repo *repo);

/* Resolves rev (a full or abbreviated SHA, a branch or tag name, "HEAD";
 * NULL or "" mean HEAD) to the id of a commit. */
int wt_resolve(char out[WT_OID_HEX], wt_repo *repo, const char *rev, char *err, size_t errlen);

/* Adds a linked worktree named `name` (letters, digits, '-', '_', '.')
 * at `path` (must not exist; its parent must), with branch `branch`
 * created at commit `base` and checked out there. A branch of that name
 * left by an earlier attempt and not checked out anywhere is reset to
 * base; stale worktree metadata of that name is pruned first. */
int wt_worktree_add(wt_repo *repo, const char *name, const char *path, const char *branch,
                    const char *base, char *err, size_t errlen);

/* Removes the worktree directory (recursively, never following symlinks
 * out of it), prunes its metadata and, when delete_branch, deletes the
 * branch. Missing pieces are not an error (idempotent). */
int wt_worktree_remove(wt_repo *repo, const char *name, const char *path, const char *branch,
                       int delete_branch, char *err, size_t errlen);

/* Stages every change in the working directory at worktree_path (new,
 * modified and deleted files, honouring .gitignore) and commits it on that
 * worktree's HEAD with `message` and author/committer name+email given
 * (e.g. "SelfHeal", "self-heal@localhost"). Returns 0 with the new commit
 * in out, 1 when there was nothing to commit (out = HEAD), < 0 on error. */
int wt_commit_all(char out[WT_OID_HEX], const char *worktree_path, const char *message,
                  const char *name, const char *email, char *err, size_t errlen);

/* One file in a diff. status: 'A' added, 'M' modified, 'D' deleted,
 * 'R' renamed (path is the new path, old_path the old one). */
typedef struct wt_change {
    char *path;
    char *old_path;
    char status;
    size_t added;   /* lines */
    size_t removed; /* lines */
    int binary;
} wt_change;

typedef struct wt_diff {
    wt_change *files;
    size_t n;
    size_t added; /* total lines over all files */
    size_t removed;
    sh_buf patch; /* unified diff (git format-patch body), cut at max_patch bytes */
    int patch_truncated;
} wt_diff;

/* The diff of tree `from` -> tree `to` (commits), with rename detection. */
int wt_diff_commits(wt_diff *out, wt_repo *repo, const char *from, const char *to, size_t max_patch,
                    char *err, size_t errlen);
void wt_diff_free(wt_diff *diff);

/* In the working directory at worktree_path: writes each of paths as it is
 * in `commit` (removing it when the commit does not have it). Used to put
 * the base version of the non-test files back while keeping the fix's
 * tests. Paths are repository-relative; ".." or absolute paths fail. */
int wt_restore_paths(const char *worktree_path, const char *commit, const char *const *paths,
                     size_t n, char *err, size_t errlen);

/* Hard reset of the worktree at worktree_path to commit (index and
 * working directory, untracked files removed). */
int wt_reset_hard(const char *worktree_path, const char *commit, char *err, size_t errlen);

/* Commits reachable from rev (NULL: HEAD) with commit time >= since that
 * touched any of paths (compared with the first parent), newest first, at
 * most limit: [{"sha", "summary", "author" (name only), "time", "files":
 * [touched paths among `paths`]}]. NULL on error. */
json_t *wt_recent_commits(wt_repo *repo, const char *rev, int64_t since, const char *const *paths,
                          size_t npaths, size_t limit);

/* Every file path in the tree of commit (NULL: HEAD), at most limit. */
json_t *wt_list_files(wt_repo *repo, const char *commit, size_t limit);

/* Brings `commit` into local branch `branch`: a fast-forward when the
 * branch is an ancestor of it, else a merge commit with `message`;
 * conflicts fail and change nothing. When the branch is checked out in the
 * repository's main working directory, that directory is updated too
 * (forced checkout of the new tree). out = the branch's new tip. */
int wt_merge_into(char out[WT_OID_HEX], wt_repo *repo, const char *branch, const char *commit,
                  const char *message, char *err, size_t errlen);

/* A new commit on `branch` reverting `commit` (mainline 1 for a merge
 * commit) with `message`; the main working directory is updated as above.
 * Conflicts fail and change nothing. out = the new commit. */
int wt_revert_on(char out[WT_OID_HEX], wt_repo *repo, const char *branch, const char *commit,
                 const char *message, char *err, size_t errlen);

typedef struct wt_push_opts {
    /* https: sent as basic auth ("x-access-token", token) when the server
     * asks; never logged, never stored in the repository's config */
    const char *token;
    /* https: a PEM file of CA certificates trusted for the server's
     * certificate besides the system's (a self-hosted git server with a
     * private CA); the host name is checked against the certificate */
    const char *ca_file;
} wt_push_opts;

/* Pushes local `branch` to `remote_url` (refs/heads/<branch>, no force).
 * opts may be NULL. Local paths and file:// URLs need no token. */
int wt_push(wt_repo *repo, const char *remote_url, const char *branch, const wt_push_opts *opts,
            char *err, size_t errlen);

/* 1 when branch names a local branch, 0 when not, < 0 on error. */
int wt_branch_exists(wt_repo *repo, const char *branch);

#endif
