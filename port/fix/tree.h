/*
 * Git trees as plain directories, and plain directories as git trees: how
 * the fix loop gives a coding agent files without git, and how the port
 * alone turns what the agent left into a commit (docs/security.md).
 *
 *   tree_export   writes a commit's or tree's files into a new directory:
 *                 the bytes as stored (no filters, no attributes), the
 *                 executable bit from the file mode, symlinks as symlinks,
 *                 no .git.
 *   tree_capture  reads a directory back as a tree relative to a base
 *                 commit: raw bytes, the base's ignore rules for new files,
 *                 a private .git at the top skipped; symlinks that are not
 *                 the base's, files that turned executable, special files,
 *                 nested repositories and any new or changed ".git*" path
 *                 are listed as refusals.
 *   tree_compose  a tree made of one tree with some paths taken from
 *                 another (the validation mixes of base and fix).
 *   tree_commit   a commit of a tree on refs/heads/<branch>, set by name
 *                 (never through HEAD).
 *   tree_rebase   the change base..commit replayed on another commit.
 *   tree_remove   removes a directory tree without following symlinks.
 *
 * Conventions of worktree.h: 0 on success, < 0 with a reason in err;
 * object ids as 40 hex characters (WT_OID_HEX). The directory walks never
 * follow a symlink, stay on one file system and bound their depth, the
 * entries they visit and the bytes they read.
 */
#ifndef SELF_HEAL_PORT_TREE_H
#define SELF_HEAL_PORT_TREE_H

#include <jansson.h>
#include <stddef.h>

#include "worktree.h"

/* Writes the files of rev (a commit id, a tree id, or anything
 * wt_resolve takes) into dir, which must not exist (its parent must).
 * Directories are 0755, files 0644 or 0755, submodules empty directories. */
int tree_export(wt_repo *repo, const char *rev, const char *dir, char *err, size_t errlen);

typedef struct tree_capture_limits {
    size_t max_entries;    /* directory entries visited (default 200000) */
    size_t max_file_bytes; /* a larger changed or new file is refused (default 16 MiB) */
    size_t max_total;      /* bytes read in all (default 1 GiB): past it the capture fails */
} tree_capture_limits;

/* The tree of dir relative to the commit base, written to the repository
 * (blobs and trees only: no ref moves). out_tree: its id (equal to the
 * base's tree when nothing changed). *refusals (new reference): an array
 * of {"path", "reason"}, empty when nothing was refused; refused entries
 * still appear in the tree where that is possible (a symlink as a symlink)
 * so the patch shows them. lim may be NULL (defaults). */
int tree_capture(char out_tree[WT_OID_HEX], json_t **refusals, wt_repo *repo, const char *base,
                 const char *dir, const tree_capture_limits *lim, char *err, size_t errlen);

/* out_tree: the tree of `from` with each of paths (repository paths, n of
 * them) as it is in `take` (removed where `take` has no file there).
 * from/take: commits or trees. */
int tree_compose(char out_tree[WT_OID_HEX], wt_repo *repo, const char *from, const char *take,
                 const char *const *paths, size_t n, char *err, size_t errlen);

/* A commit of tree with parents (commits, n of them, at least 1) and
 * message, authored and committed by "SelfHeal <self-heal@localhost>",
 * then refs/heads/<branch> set to it by name (created or moved; refused
 * when that branch is what the repository's working directory or a linked
 * worktree has checked out). out_commit: the new commit. */
int tree_commit(char out_commit[WT_OID_HEX], wt_repo *repo, const char *branch, const char *tree,
                const char *const *parents, size_t n, const char *message, char *err,
                size_t errlen);

/* The change from base to commit replayed on onto (a three-way merge of
 * trees, as a cherry-pick): out_tree is the result. 1 when it conflicts
 * (out_tree empty), 0 when it applied, < 0 on error. */
int tree_rebase(char out_tree[WT_OID_HEX], wt_repo *repo, const char *base, const char *commit,
                const char *onto, char *err, size_t errlen);

/* The id of rev's tree. */
int tree_of(char out_tree[WT_OID_HEX], wt_repo *repo, const char *rev, char *err, size_t errlen);

/* The bytes of the file at path in rev (a commit or tree), at most max:
 * a malloc'ed buffer with a NUL after the *len bytes, or NULL (no such
 * file, not a file, larger than max, out of memory). */
char *tree_read_file(wt_repo *repo, const char *rev, const char *path, size_t max, size_t *len);

/* Removes path (a file or a directory tree) without following symlinks,
 * staying on its file system. A missing path is not an error. */
int tree_remove(const char *path);

#endif
