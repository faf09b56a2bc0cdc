/*
 * Git work for the fix loop, through libgit2: open the application's
 * repository, resolve the deployed commit, diff two commits (files, line
 * and byte counts, patch text), list recent commits touching paths
 * (prompt context), merge a fix into the deploy branch (its working
 * directory updated only when clean), revert a commit, and push a branch
 * over HTTPS with a token. Trees as plain directories are tree.h's.
 *
 * Conventions: 0 on success, a negative value on failure with a reason in
 * err (libgit2's own message when it has one; never a token). Object ids
 * are 40 lower-case hex characters plus NUL (WT_OID_HEX). Every function
 * calls wt_init() itself; it may be called from several threads (each
 * wt_repo is used by one thread at a time).
 */
#ifndef SELF_HEAL_PORT_WORKTREE_H
#define SELF_HEAL_PORT_WORKTREE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "self_heal/common.h"

#define WT_OID_HEX 41

typedef struct wt_repo wt_repo;
typedef struct git_repository git_repository;

/* The libgit2 repository of an open wt_repo (tree.c works on it). */
git_repository *wt_repo_git(wt_repo *repo);

/* A JSON string of at most max bytes of s (git paths and messages are
 * bytes, JSON strings are not): invalid UTF-8 bytes become '?', a NULL s
 * is "". NULL only when out of memory. */
json_t *wt_json_lossy(const char *s, size_t max);

/* Initialises libgit2 once per process (thread-safe, idempotent). */
int wt_init(void);

/* Opens the repository at path (a working directory or a bare repo). */
int wt_repo_open(wt_repo **out, const char *path, char *err, size_t errlen);
void wt_repo_free(wt_repo *repo);

/* Resolves rev (a full or abbreviated SHA, a branch or tag name, "HEAD";
 * NULL or "" mean HEAD) to the id of a commit. */
int wt_resolve(char out[WT_OID_HEX], wt_repo *repo, const char *rev, char *err, size_t errlen);

/* One file in a diff. status: 'A' added, 'M' modified, 'D' deleted,
 * 'R' renamed (path is the new path, old_path the old one). */
typedef struct wt_change {
    char *path;
    char *old_path;
    char status;
    size_t added;                      /* lines */
    size_t removed;                    /* lines */
    size_t added_bytes, removed_bytes; /* bytes of those lines */
    unsigned old_mode, new_mode;       /* git file modes (0: absent) */
    int binary;                        /* a NUL byte in the changed lines */
} wt_change;

typedef struct wt_diff {
    wt_change *files;
    size_t n;
    size_t added; /* total lines over all files */
    size_t removed;
    size_t bytes; /* bytes of every added and removed line */
    sh_buf patch; /* unified diff (git format-patch body), cut at max_patch bytes */
    int patch_truncated;
} wt_diff;

/* The diff of tree `from` -> tree `to` (commits), with rename detection.
 * Every file is diffed as text whatever the repository's attributes say
 * (no file can hide its lines as "binary"). */
int wt_diff_commits(wt_diff *out, wt_repo *repo, const char *from, const char *to, size_t max_patch,
                    char *err, size_t errlen);
void wt_diff_free(wt_diff *diff);

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
 * repository's main working directory, that directory is updated too, and
 * only when it has no uncommitted change and no untracked file where the
 * new tree has one (else nothing changes and err says which path). out =
 * the branch's new tip. */
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
