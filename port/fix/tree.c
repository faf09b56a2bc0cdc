/*
 * Git trees <-> plain directories (tree.h).
 *
 * The agent's directory is hostile: every walk here opens directories one
 * component at a time with O_NOFOLLOW, checks that what it opened is what
 * it stat'ed, never leaves the file system it started on, and bounds its
 * depth, the entries it visits and the bytes it reads. Content is read as
 * raw bytes and hashed as git blobs; no filter, attribute or hook of the
 * repository takes part, so the tree is exactly the bytes on disk.
 */
#define _XOPEN_SOURCE 700 /* fdopendir, openat, readlinkat, mkdtemp */
#include "tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>

#define TREE_PATH_MAX 4096
#define TREE_DEPTH_MAX 64
#define TREE_EXPORT_MAX_ENTRIES 1000000
#define TREE_LINK_MAX 4096
#define TREE_RM_DEPTH_MAX 200
#define TREE_RM_ATTEMPTS 3
#define TREE_SIG_NAME "SelfHeal"
#define TREE_SIG_EMAIL "self-heal@localhost"

/* ------------------------------------------------------------ shared */

static int fail(char *err, size_t errlen, const char *what)
{
    const git_error *e = git_error_last();
    sh_errf(err, errlen, "%s: %s", what, e != NULL && e->message != NULL ? e->message : "failed");
    git_error_clear();
    return -1;
}

static int begin(wt_repo *repo, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (repo == NULL || wt_init() != 0) {
        sh_errf(err, errlen, "libgit2 is not available");
        return -1;
    }
    git_error_clear();
    return 0;
}

static void hex_of(char out[WT_OID_HEX], const git_oid *id)
{
    git_oid_tostr(out, WT_OID_HEX, id);
}

/* rev (a commit, a tree, or anything revparse takes) peeled to type. */
static int lookup(git_object **out, git_repository *r, const char *rev, git_object_t type,
                  char *err, size_t errlen)
{
    git_object *obj = NULL;
    *out = NULL;
    if (rev == NULL || rev[0] == '\0' || strlen(rev) > 256) {
        sh_errf(err, errlen, "bad revision");
        return -1;
    }
    if (git_revparse_single(&obj, r, rev) < 0)
        return fail(err, errlen, rev);
    int rc = git_object_peel(out, obj, type);
    git_object_free(obj);
    return rc < 0 ? fail(err, errlen, rev) : 0;
}

static int lookup_tree(git_tree **out, git_repository *r, const char *rev, char *err, size_t errlen)
{
    return lookup((git_object **)out, r, rev, GIT_OBJECT_TREE, err, errlen);
}

static int lookup_commit(git_commit **out, git_repository *r, const char *rev, char *err,
                         size_t errlen)
{
    return lookup((git_object **)out, r, rev, GIT_OBJECT_COMMIT, err, errlen);
}

/* A tree entry name we are willing to write: not empty, ".", "..", no
 * '/', not ".git" in any case. */
static int entry_name_ok(const char *name)
{
    return name[0] != '\0' && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
           strchr(name, '/') == NULL && strcasecmp(name, ".git") != 0;
}

/* The directory rel (components separated by '/', "" for the root) under
 * rootfd, opened one component at a time without following symlinks. */
static int open_dir_at(int rootfd, const char *rel)
{
    char buf[TREE_PATH_MAX + 1];
    size_t len = strlen(rel);
    if (len > TREE_PATH_MAX)
        return -1;
    memcpy(buf, rel, len + 1);
    int fd = dup(rootfd);
    char *comp = buf;
    while (fd >= 0 && *comp != '\0') {
        char *slash = strchr(comp, '/');
        if (slash != NULL)
            *slash = '\0';
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        fd = next;
        if (slash == NULL)
            break;
        comp = slash + 1;
    }
    return fd;
}

/* ------------------------------------------------------------ export */

typedef struct export_ctx {
    git_repository *repo;
    int rootfd;
    size_t entries;
    char *err;
    size_t errlen;
} export_ctx;

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int export_entry(export_ctx *c, int dfd, const char *name, const git_tree_entry *e)
{
    git_filemode_t mode = git_tree_entry_filemode(e);
    if (mode == GIT_FILEMODE_TREE || mode == GIT_FILEMODE_COMMIT)
        return mkdirat(dfd, name, 0755);
    git_blob *blob = NULL;
    if (git_blob_lookup(&blob, c->repo, git_tree_entry_id(e)) < 0)
        return -1;
    const void *data = git_blob_rawcontent(blob);
    size_t size = (size_t)git_blob_rawsize(blob);
    int rc = -1;
    if (mode == GIT_FILEMODE_LINK) {
        char target[TREE_LINK_MAX + 1];
        if (size > 0 && size <= TREE_LINK_MAX && memchr(data, '\0', size) == NULL) {
            memcpy(target, data, size);
            target[size] = '\0';
            rc = symlinkat(target, dfd, name);
        } else {
            errno = EINVAL;
        }
    } else {
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0755 : 0644);
        if (fd >= 0) {
            rc = write_all(fd, data, size);
            if (close(fd) != 0)
                rc = -1;
        }
    }
    git_blob_free(blob);
    return rc;
}

static int export_cb(const char *root, const git_tree_entry *entry, void *payload)
{
    export_ctx *c = payload;
    const char *name = git_tree_entry_name(entry);
    if (++c->entries > TREE_EXPORT_MAX_ENTRIES) {
        sh_errf(c->err, c->errlen, "export: more than %d entries", TREE_EXPORT_MAX_ENTRIES);
        return GIT_EUSER;
    }
    if (!entry_name_ok(name)) {
        sh_errf(c->err, c->errlen, "export: the tree has an entry named '%.100s'", name);
        return GIT_EUSER;
    }
    char parent[TREE_PATH_MAX + 1];
    size_t rl = strlen(root);
    if (rl > TREE_PATH_MAX) {
        sh_errf(c->err, c->errlen, "export: path too long");
        return GIT_EUSER;
    }
    memcpy(parent, root, rl + 1);
    if (rl > 0 && parent[rl - 1] == '/')
        parent[rl - 1] = '\0';
    int dfd = open_dir_at(c->rootfd, parent);
    int rc = dfd < 0 ? -1 : export_entry(c, dfd, name, entry);
    if (dfd >= 0)
        close(dfd);
    if (rc != 0) {
        sh_errf(c->err, c->errlen, "export %s%s: %s", root, name, strerror(errno));
        return GIT_EUSER;
    }
    /* a submodule's directory stays empty: do not descend */
    return git_tree_entry_filemode(entry) == GIT_FILEMODE_COMMIT ? 1 : 0;
}

int tree_export(wt_repo *repo, const char *rev, const char *dir, char *err, size_t errlen)
{
    if (begin(repo, err, errlen) < 0)
        return -1;
    git_repository *r = wt_repo_git(repo);
    git_tree *tree = NULL;
    if (dir == NULL || dir[0] == '\0' || strlen(dir) > TREE_PATH_MAX) {
        sh_errf(err, errlen, "export: bad directory");
        return -1;
    }
    if (lookup_tree(&tree, r, rev, err, errlen) < 0)
        return -1;
    int rc = -1;
    if (mkdir(dir, 0755) != 0) {
        sh_errf(err, errlen, "export: %s: %s", dir, strerror(errno));
        goto done;
    }
    export_ctx c = {r, open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), 0, err, errlen};
    if (c.rootfd < 0) {
        sh_errf(err, errlen, "export: %s: %s", dir, strerror(errno));
        goto done;
    }
    int w = git_tree_walk(tree, GIT_TREEWALK_PRE, export_cb, &c);
    close(c.rootfd);
    if (w == GIT_EUSER)
        goto done;
    if (w < 0) {
        fail(err, errlen, "export");
        goto done;
    }
    rc = 0;
done:
    git_tree_free(tree);
    return rc;
}

/* ------------------------------------------------------------ capture */

typedef struct base_entry {
    char *path;
    git_oid id;
    git_filemode_t mode;
    int seen;
} base_entry;

typedef struct capture {
    git_repository *repo;
    git_repository *ign; /* the same repository with the captured directory as workdir */
    git_index *index;
    base_entry *base;
    size_t nbase, capbase;
    json_t *refusals;
    tree_capture_limits lim;
    size_t entries;
    size_t bytes;
    dev_t dev;
    char *err;
    size_t errlen;
    int failed;
} capture;

static int collect_cb(const char *root, const git_tree_entry *entry, void *payload)
{
    capture *c = payload;
    if (git_tree_entry_type(entry) == GIT_OBJECT_TREE)
        return 0;
    if (c->nbase == c->capbase) {
        size_t cap = c->capbase ? c->capbase * 2 : 256;
        base_entry *b = realloc(c->base, cap * sizeof(*b));
        if (b == NULL)
            return GIT_EUSER;
        c->base = b;
        c->capbase = cap;
    }
    size_t rl = strlen(root), nl = strlen(git_tree_entry_name(entry));
    char *p = malloc(rl + nl + 1);
    if (p == NULL)
        return GIT_EUSER;
    memcpy(p, root, rl);
    memcpy(p + rl, git_tree_entry_name(entry), nl + 1);
    base_entry *e = &c->base[c->nbase++];
    e->path = p;
    git_oid_cpy(&e->id, git_tree_entry_id(entry));
    e->mode = git_tree_entry_filemode(entry);
    e->seen = 0;
    return 0;
}

static int cmp_base(const void *a, const void *b)
{
    return strcmp(((const base_entry *)a)->path, ((const base_entry *)b)->path);
}

static base_entry *base_find(capture *c, const char *path)
{
    base_entry key = {(char *)path, {{0}}, 0, 0};
    return bsearch(&key, c->base, c->nbase, sizeof(*c->base), cmp_base);
}

/* 1 when some base path lies under the directory rel. */
static int base_has_under(capture *c, const char *rel)
{
    size_t rl = strlen(rel);
    size_t lo = 0, hi = c->nbase;
    while (lo < hi) { /* first path >= "rel/" */
        size_t mid = lo + (hi - lo) / 2;
        int k = strncmp(c->base[mid].path, rel, rl);
        if (k < 0 || (k == 0 && c->base[mid].path[rl] < '/'))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nbase && strncmp(c->base[lo].path, rel, rl) == 0 && c->base[lo].path[rl] == '/';
}

/* A component of path starts with ".git" (.git, .gitignore, .github, ...). */
static int is_git_path(const char *path)
{
    const char *s = path;
    for (;;) {
        if (strncasecmp(s, ".git", 4) == 0)
            return 1;
        const char *slash = strchr(s, '/');
        if (slash == NULL)
            return 0;
        s = slash + 1;
    }
}

static void refuse(capture *c, const char *path, const char *reason)
{
    json_t *r = json_object();
    if (r == NULL || json_object_set_new(r, "path", wt_json_lossy(path, TREE_PATH_MAX)) < 0 ||
        json_object_set_new(r, "reason", json_string(reason)) < 0 ||
        json_array_append_new(c->refusals, r) < 0) {
        c->failed = 1;
        return;
    }
}

static int ignored(capture *c, const char *rel, int is_dir)
{
    char buf[TREE_PATH_MAX + 2];
    int n = snprintf(buf, sizeof(buf), "%s%s", rel, is_dir ? "/" : "");
    if (n < 0 || (size_t)n >= sizeof(buf))
        return 0;
    int ign = 0;
    if (git_ignore_path_is_ignored(&ign, c->ign, buf) < 0) {
        git_error_clear();
        return 0;
    }
    return ign;
}

static int index_put(capture *c, const char *rel, const git_oid *id, git_filemode_t mode)
{
    git_index_entry e;
    memset(&e, 0, sizeof(e));
    e.path = rel;
    e.mode = mode;
    git_oid_cpy(&e.id, id);
    if (git_index_add(c->index, &e) < 0) {
        fail(c->err, c->errlen, "capture: index");
        return -1;
    }
    return 0;
}

/* Reads the regular file name under dfd (already lstat'ed as st): content
 * into *data (malloc'ed), or 1 when it is too large (refused). */
static int read_file(capture *c, int dfd, const char *name, const struct stat *st, char **data,
                     size_t *len)
{
    *data = NULL;
    *len = 0;
    if ((unsigned long long)st->st_size > c->lim.max_file_bytes)
        return 1;
    if ((size_t)st->st_size > c->lim.max_total - c->bytes) {
        sh_errf(c->err, c->errlen, "capture: more than %zu bytes to read", c->lim.max_total);
        return -1;
    }
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    struct stat fst;
    if (fd < 0 || fstat(fd, &fst) != 0 || !S_ISREG(fst.st_mode) || fst.st_ino != st->st_ino ||
        fst.st_dev != st->st_dev) {
        if (fd >= 0)
            close(fd);
        sh_errf(c->err, c->errlen, "capture: %s changed while it was read", name);
        return -1;
    }
    size_t want = (size_t)fst.st_size;
    if (want > c->lim.max_file_bytes) {
        close(fd);
        return 1;
    }
    char *buf = malloc(want + 1);
    size_t got = 0;
    while (buf != NULL) {
        /* one byte past the size: a file that grows is noticed */
        ssize_t r = read(fd, buf + got, want + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got > want)
            break;
    }
    close(fd);
    if (buf == NULL || got != want) {
        free(buf);
        sh_errf(c->err, c->errlen, "capture: %s could not be read whole", name);
        return -1;
    }
    c->bytes += got;
    *data = buf;
    *len = got;
    return 0;
}

static int capture_file(capture *c, int dfd, const char *name, const char *rel,
                        const struct stat *st)
{
    base_entry *b = base_find(c, rel);
    if (b != NULL)
        b->seen = 1;
    if (b == NULL && ignored(c, rel, 0))
        return 0;
    if (b != NULL && b->mode == GIT_FILEMODE_COMMIT) {
        refuse(c, rel, "a file where the base has a submodule");
        return 0;
    }
    char *data = NULL;
    size_t len = 0;
    int r = read_file(c, dfd, name, st, &data, &len);
    if (r < 0)
        return -1;
    if (r == 1) {
        char why[96];
        snprintf(why, sizeof(why), "a file larger than %zu bytes", c->lim.max_file_bytes);
        refuse(c, rel, why);
        return 0;
    }
    git_filemode_t mode =
        (st->st_mode & S_IXUSR) != 0 ? GIT_FILEMODE_BLOB_EXECUTABLE : GIT_FILEMODE_BLOB;
    git_oid id;
    int rc = git_odb_hash(&id, data, len, GIT_OBJECT_BLOB);
    if (rc == 0 && b != NULL && b->mode == mode && git_oid_equal(&id, &b->id)) {
        free(data);
        return 0; /* unchanged */
    }
    if (rc == 0)
        rc = git_blob_create_from_buffer(&id, c->repo, data, len);
    free(data);
    if (rc < 0)
        return fail(c->err, c->errlen, "capture: blob");
    if (mode == GIT_FILEMODE_BLOB_EXECUTABLE &&
        (b == NULL || b->mode != GIT_FILEMODE_BLOB_EXECUTABLE))
        refuse(c, rel, b == NULL ? "a new executable file" : "a file made executable");
    if (is_git_path(rel))
        refuse(c, rel, "a .git* path");
    return index_put(c, rel, &id, mode);
}

static int capture_link(capture *c, int dfd, const char *name, const char *rel)
{
    base_entry *b = base_find(c, rel);
    if (b != NULL)
        b->seen = 1;
    if (b == NULL && ignored(c, rel, 0))
        return 0;
    char target[TREE_LINK_MAX + 1];
    ssize_t n = readlinkat(dfd, name, target, TREE_LINK_MAX);
    if (n <= 0) {
        refuse(c, rel, "an unreadable symlink");
        return 0;
    }
    git_oid id;
    if (git_odb_hash(&id, target, (size_t)n, GIT_OBJECT_BLOB) < 0)
        return fail(c->err, c->errlen, "capture: hash");
    if (b != NULL && b->mode == GIT_FILEMODE_LINK && git_oid_equal(&id, &b->id))
        return 0; /* the base's own symlink, unchanged */
    refuse(c, rel,
           b != NULL && b->mode == GIT_FILEMODE_LINK ? "a symlink retargeted" : "a symlink");
    if (git_blob_create_from_buffer(&id, c->repo, target, (size_t)n) < 0)
        return fail(c->err, c->errlen, "capture: blob");
    return index_put(c, rel, &id, GIT_FILEMODE_LINK);
}

static int capture_dir(capture *c, int fd, char *rel, size_t rel_len, int depth);

static int capture_entry(capture *c, int dfd, const char *name, char *rel, size_t rel_len,
                         int depth)
{
    size_t nl = strlen(name);
    size_t sep = rel_len > 0 ? 1 : 0;
    if (rel_len + sep + nl > TREE_PATH_MAX) {
        refuse(c, rel, "a path too long");
        return 0;
    }
    if (rel_len > 0)
        rel[rel_len] = '/';
    memcpy(rel + rel_len + sep, name, nl + 1);
    size_t len = rel_len + sep + nl;
    int rc = 0;
    struct stat st;
    if (++c->entries > c->lim.max_entries) {
        sh_errf(c->err, c->errlen, "capture: more than %zu entries", c->lim.max_entries);
        rc = -1;
    } else if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT)
            refuse(c, rel, "an entry that cannot be read");
    } else if (st.st_dev != c->dev) {
        refuse(c, rel, "a mount point");
    } else if (S_ISDIR(st.st_mode)) {
        if (strcasecmp(name, ".git") == 0) {
            refuse(c, rel, "a nested git repository");
        } else if (base_has_under(c, rel) || !ignored(c, rel, 1)) {
            base_entry *b = base_find(c, rel);
            if (b != NULL && b->mode == GIT_FILEMODE_COMMIT) {
                b->seen = 1; /* a submodule's directory: never descended */
            } else if (depth >= TREE_DEPTH_MAX) {
                refuse(c, rel, "directories nested too deep");
            } else {
                int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                struct stat fst;
                if (sub < 0 || fstat(sub, &fst) != 0 || fst.st_ino != st.st_ino ||
                    fst.st_dev != st.st_dev) {
                    if (sub >= 0)
                        close(sub);
                    sh_errf(c->err, c->errlen, "capture: %s changed while it was read", rel);
                    rc = -1;
                } else {
                    rc = capture_dir(c, sub, rel, len, depth + 1);
                }
            }
        }
    } else if (S_ISREG(st.st_mode)) {
        rc = capture_file(c, dfd, name, rel, &st);
    } else if (S_ISLNK(st.st_mode)) {
        rc = capture_link(c, dfd, name, rel);
    } else {
        base_entry *b = base_find(c, rel);
        if (b != NULL)
            b->seen = 1;
        refuse(c, rel, "a special file (fifo, socket or device)");
    }
    rel[rel_len] = '\0';
    return rc;
}

/* Captures the entries of the open directory fd (consumed). */
static int capture_dir(capture *c, int fd, char *rel, size_t rel_len, int depth)
{
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        sh_errf(c->err, c->errlen, "capture: %s: %s", rel_len ? rel : ".", strerror(errno));
        return -1;
    }
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                sh_errf(c->err, c->errlen, "capture: %s: %s", rel_len ? rel : ".", strerror(errno));
                rc = -1;
            }
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (depth == 0 && strcmp(de->d_name, ".git") == 0)
            continue; /* the agent's own throwaway repository: never read */
        if (capture_entry(c, dirfd(d), de->d_name, rel, rel_len, depth) < 0 || c->failed) {
            rc = -1;
            break;
        }
    }
    closedir(d);
    return rc;
}

/* The base's .gitignore files, alone, in a new temporary directory
 * (*out): where the ignore rules are read from, so nothing the agent
 * wrote (a .gitignore of its own) decides what the capture skips. */
static int rules_dir(capture *c, char *out, size_t outlen)
{
    const char *tmp = getenv("TMPDIR");
    if ((size_t)snprintf(out, outlen, "%s/self_heal_rules_XXXXXX",
                         tmp != NULL && tmp[0] == '/' ? tmp : "/tmp") >= outlen ||
        mkdtemp(out) == NULL) {
        sh_errf(c->err, c->errlen, "capture: temporary directory: %s", strerror(errno));
        out[0] = '\0';
        return -1;
    }
    int rootfd = open(out, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < c->nbase && rc == 0; i++) {
        base_entry *b = &c->base[i];
        const char *name = strrchr(b->path, '/');
        name = name != NULL ? name + 1 : b->path;
        if (strcmp(name, ".gitignore") != 0 || b->mode != GIT_FILEMODE_BLOB)
            continue;
        /* the parent directories, then the file */
        char rel[TREE_PATH_MAX + 1];
        snprintf(rel, sizeof(rel), "%s", b->path);
        for (char *p = strchr(rel, '/'); p != NULL; p = strchr(p + 1, '/')) {
            *p = '\0';
            if (mkdirat(rootfd, rel, 0700) != 0 && errno != EEXIST)
                rc = -1;
            *p = '/';
        }
        git_blob *blob = NULL;
        if (rc == 0 && git_blob_lookup(&blob, c->repo, &b->id) == 0) {
            int fd =
                openat(rootfd, rel, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd < 0 ||
                write_all(fd, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob)) != 0)
                rc = -1;
            if (fd >= 0)
                close(fd);
        } else {
            rc = -1;
        }
        git_blob_free(blob);
    }
    close(rootfd);
    if (rc != 0)
        sh_errf(c->err, c->errlen, "capture: the base's ignore rules could not be written");
    return rc;
}

static void capture_free(capture *c)
{
    for (size_t i = 0; i < c->nbase; i++)
        free(c->base[i].path);
    free(c->base);
    git_index_free(c->index);
    git_repository_free(c->ign);
}

int tree_capture(char out_tree[WT_OID_HEX], json_t **refusals, wt_repo *repo, const char *base,
                 const char *dir, const tree_capture_limits *lim, char *err, size_t errlen)
{
    if (out_tree == NULL || refusals == NULL)
        return -1;
    out_tree[0] = '\0';
    *refusals = NULL;
    if (begin(repo, err, errlen) < 0)
        return -1;
    capture c;
    memset(&c, 0, sizeof(c));
    c.repo = wt_repo_git(repo);
    c.err = err;
    c.errlen = errlen;
    c.lim.max_entries = lim != NULL && lim->max_entries ? lim->max_entries : 200000;
    c.lim.max_file_bytes = lim != NULL && lim->max_file_bytes ? lim->max_file_bytes : 16u << 20;
    c.lim.max_total = lim != NULL && lim->max_total ? lim->max_total : (size_t)1 << 30;
    c.refusals = json_array();
    git_tree *tree = NULL;
    int rootfd = -1;
    int rc = -1;
    char rules[TREE_PATH_MAX] = "";
    if (c.refusals == NULL || lookup_tree(&tree, c.repo, base, err, errlen) < 0)
        goto done;
    if (git_tree_walk(tree, GIT_TREEWALK_PRE, collect_cb, &c) < 0) {
        sh_errf(err, errlen, "capture: out of memory");
        goto done;
    }
    qsort(c.base, c.nbase, sizeof(*c.base), cmp_base);
    if (git_index_new(&c.index) < 0 || git_index_read_tree(c.index, tree) < 0) {
        fail(err, errlen, "capture: index");
        goto done;
    }
    /* the base's ignore rules, never the agent's */
    if (rules_dir(&c, rules, sizeof(rules)) != 0)
        goto done;
    if (git_repository_open(&c.ign, git_repository_path(c.repo)) < 0 ||
        git_repository_set_workdir(c.ign, rules, 0) < 0) {
        fail(err, errlen, "capture: ignore rules");
        goto done;
    }
    rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (rootfd < 0 || fstat(rootfd, &st) != 0) {
        sh_errf(err, errlen, "capture: %s: %s", dir, strerror(errno));
        goto done;
    }
    c.dev = st.st_dev;
    char rel[TREE_PATH_MAX + 1] = "";
    int fd = rootfd;
    rootfd = -1;
    if (capture_dir(&c, fd, rel, 0, 0) < 0 || c.failed) {
        if (c.failed)
            sh_errf(err, errlen, "capture: out of memory");
        goto done;
    }
    for (size_t i = 0; i < c.nbase; i++) {
        base_entry *b = &c.base[i];
        if (b->seen || b->mode == GIT_FILEMODE_COMMIT)
            continue;
        if (git_index_remove(c.index, b->path, 0) < 0) {
            fail(err, errlen, "capture: index");
            goto done;
        }
        if (is_git_path(b->path))
            refuse(&c, b->path, "a .git* path deleted");
    }
    git_oid id;
    if (c.failed || git_index_write_tree_to(&id, c.index, c.repo) < 0) {
        fail(err, errlen, "capture: write tree");
        goto done;
    }
    hex_of(out_tree, &id);
    *refusals = c.refusals;
    c.refusals = NULL;
    rc = 0;
done:
    if (rootfd >= 0)
        close(rootfd);
    if (rules[0] != '\0')
        tree_remove(rules);
    json_decref(c.refusals);
    git_tree_free(tree);
    capture_free(&c);
    return rc;
}

/* ------------------------------------------------------------ compose, commit, rebase */

int tree_compose(char out_tree[WT_OID_HEX], wt_repo *repo, const char *from, const char *take,
                 const char *const *paths, size_t n, char *err, size_t errlen)
{
    if (out_tree == NULL)
        return -1;
    out_tree[0] = '\0';
    if (begin(repo, err, errlen) < 0)
        return -1;
    git_repository *r = wt_repo_git(repo);
    git_tree *a = NULL, *b = NULL;
    git_index *idx = NULL;
    int rc = -1;
    if (lookup_tree(&a, r, from, err, errlen) < 0 || lookup_tree(&b, r, take, err, errlen) < 0)
        goto done;
    if (git_index_new(&idx) < 0 || git_index_read_tree(idx, a) < 0) {
        fail(err, errlen, "compose");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        git_tree_entry *e = NULL;
        int found = git_tree_entry_bypath(&e, b, paths[i]);
        if (found == 0 && git_tree_entry_type(e) == GIT_OBJECT_BLOB) {
            git_index_entry ie;
            memset(&ie, 0, sizeof(ie));
            ie.path = paths[i];
            ie.mode = git_tree_entry_filemode(e);
            git_oid_cpy(&ie.id, git_tree_entry_id(e));
            found = git_index_add(idx, &ie);
        } else {
            git_error_clear();
            found = git_index_remove(idx, paths[i], 0);
            if (found == GIT_ENOTFOUND)
                found = 0;
        }
        git_tree_entry_free(e);
        if (found < 0) {
            fail(err, errlen, "compose");
            goto done;
        }
    }
    git_oid id;
    if (git_index_write_tree_to(&id, idx, r) < 0) {
        fail(err, errlen, "compose: write tree");
        goto done;
    }
    hex_of(out_tree, &id);
    rc = 0;
done:
    git_error_clear();
    git_index_free(idx);
    git_tree_free(a);
    git_tree_free(b);
    return rc;
}

/* 1 when refname is checked out in the working directory or a linked
 * worktree of r. */
static int checked_out(git_repository *r, const char *refname)
{
    git_reference *head = NULL;
    int out = 0;
    if (!git_repository_is_bare(r) && git_repository_head(&head, r) == 0)
        out = strcmp(git_reference_name(head), refname) == 0;
    git_reference_free(head);
    git_reference *ref = NULL;
    if (!out && git_reference_lookup(&ref, r, refname) == 0)
        out = git_branch_is_checked_out(ref) == 1;
    git_reference_free(ref);
    git_error_clear();
    return out;
}

int tree_commit(char out_commit[WT_OID_HEX], wt_repo *repo, const char *branch, const char *tree,
                const char *const *parents, size_t n, const char *message, char *err, size_t errlen)
{
    if (out_commit == NULL)
        return -1;
    out_commit[0] = '\0';
    if (begin(repo, err, errlen) < 0)
        return -1;
    git_repository *r = wt_repo_git(repo);
    char refname[300];
    int valid = 0;
    if (branch == NULL || message == NULL || message[0] == '\0' || parents == NULL || n == 0 ||
        n > 2 ||
        (size_t)snprintf(refname, sizeof(refname), "refs/heads/%s", branch) >= sizeof(refname) ||
        git_reference_name_is_valid(&valid, refname) < 0 || !valid) {
        git_error_clear();
        sh_errf(err, errlen, "commit: invalid branch, parents or message");
        return -1;
    }
    if (checked_out(r, refname)) {
        sh_errf(err, errlen, "commit: %s is checked out; SelfHeal never moves a checked-out branch",
                branch);
        return -1;
    }
    git_tree *t = NULL;
    git_commit *p[2] = {NULL, NULL};
    git_signature *sig = NULL;
    git_reference *ref = NULL;
    int rc = -1;
    git_oid id;
    if (lookup_tree(&t, r, tree, err, errlen) < 0)
        goto done;
    for (size_t i = 0; i < n; i++)
        if (lookup_commit(&p[i], r, parents[i], err, errlen) < 0)
            goto done;
    if (git_signature_now(&sig, TREE_SIG_NAME, TREE_SIG_EMAIL) < 0) {
        fail(err, errlen, "commit: signature");
        goto done;
    }
    const git_commit *ps[2] = {p[0], p[1]};
    if (git_commit_create(&id, r, NULL, sig, sig, NULL, message, t, n, ps) < 0) {
        fail(err, errlen, "commit");
        goto done;
    }
    if (git_reference_create(&ref, r, refname, &id, 1, "self-heal: fix") < 0) {
        fail(err, errlen, "commit: update branch");
        goto done;
    }
    hex_of(out_commit, &id);
    rc = 0;
done:
    git_reference_free(ref);
    git_signature_free(sig);
    git_commit_free(p[0]);
    git_commit_free(p[1]);
    git_tree_free(t);
    return rc;
}

int tree_rebase(char out_tree[WT_OID_HEX], wt_repo *repo, const char *base, const char *commit,
                const char *onto, char *err, size_t errlen)
{
    if (out_tree == NULL)
        return -1;
    out_tree[0] = '\0';
    if (begin(repo, err, errlen) < 0)
        return -1;
    git_repository *r = wt_repo_git(repo);
    git_tree *anc = NULL, *ours = NULL, *theirs = NULL;
    git_index *idx = NULL;
    int rc = -1;
    if (lookup_tree(&anc, r, base, err, errlen) < 0 ||
        lookup_tree(&ours, r, onto, err, errlen) < 0 ||
        lookup_tree(&theirs, r, commit, err, errlen) < 0)
        goto done;
    git_merge_options mo;
    git_merge_options_init(&mo, GIT_MERGE_OPTIONS_VERSION);
    if (git_merge_trees(&idx, r, anc, ours, theirs, &mo) < 0) {
        fail(err, errlen, "rebase");
        goto done;
    }
    if (git_index_has_conflicts(idx)) {
        rc = 1;
        goto done;
    }
    git_oid id;
    if (git_index_write_tree_to(&id, idx, r) < 0) {
        fail(err, errlen, "rebase: write tree");
        goto done;
    }
    hex_of(out_tree, &id);
    rc = 0;
done:
    git_index_free(idx);
    git_tree_free(anc);
    git_tree_free(ours);
    git_tree_free(theirs);
    return rc;
}

int tree_of(char out_tree[WT_OID_HEX], wt_repo *repo, const char *rev, char *err, size_t errlen)
{
    if (out_tree == NULL)
        return -1;
    out_tree[0] = '\0';
    if (begin(repo, err, errlen) < 0)
        return -1;
    git_tree *t = NULL;
    if (lookup_tree(&t, wt_repo_git(repo), rev, err, errlen) < 0)
        return -1;
    hex_of(out_tree, git_tree_id(t));
    git_tree_free(t);
    return 0;
}

char *tree_read_file(wt_repo *repo, const char *rev, const char *path, size_t max, size_t *len)
{
    char err[8];
    if (len != NULL)
        *len = 0;
    if (path == NULL || begin(repo, err, sizeof(err)) < 0)
        return NULL;
    git_repository *r = wt_repo_git(repo);
    git_tree *t = NULL;
    git_tree_entry *e = NULL;
    git_blob *blob = NULL;
    char *out = NULL;
    if (lookup_tree(&t, r, rev, err, sizeof(err)) < 0 || git_tree_entry_bypath(&e, t, path) < 0 ||
        git_tree_entry_type(e) != GIT_OBJECT_BLOB ||
        git_blob_lookup(&blob, r, git_tree_entry_id(e)) < 0)
        goto done;
    size_t size = (size_t)git_blob_rawsize(blob);
    if (size > max)
        goto done;
    out = malloc(size + 1);
    if (out == NULL)
        goto done;
    memcpy(out, git_blob_rawcontent(blob), size);
    out[size] = '\0';
    if (len != NULL)
        *len = size;
done:
    git_error_clear();
    git_blob_free(blob);
    git_tree_entry_free(e);
    git_tree_free(t);
    return out;
}

/* ------------------------------------------------------------ removal */

typedef struct rm_ctx {
    dev_t dev;
    int have_dev;
} rm_ctx;

static int rm_entry_at(int dirfd, const char *name, int depth, rm_ctx *ctx);

static int rm_dir_contents(int fd, int depth, rm_ctx *ctx)
{
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return -1;
    }
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL) {
            if (errno != 0)
                rc = -1;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (rm_entry_at(dirfd(d), de->d_name, depth + 1, ctx) < 0)
            rc = -1;
    }
    closedir(d);
    return rc;
}

/* A file or symlink is unlinked (a symlink's target is never touched), a
 * directory emptied and removed; one file system only. */
static int rm_entry_at(int dirfd, const char *name, int depth, rm_ctx *ctx)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!ctx->have_dev) {
        ctx->dev = st.st_dev;
        ctx->have_dev = 1;
    }
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dirfd, name, 0) == 0 || errno == ENOENT ? 0 : -1;
    if (st.st_dev != ctx->dev || depth > TREE_RM_DEPTH_MAX) {
        errno = EXDEV;
        return -1;
    }
    for (int attempt = 0; attempt < TREE_RM_ATTEMPTS; attempt++) {
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                return 0;
            if (errno == ELOOP || errno == ENOTDIR)
                return unlinkat(dirfd, name, 0) == 0 || errno == ENOENT ? 0 : -1;
            return -1;
        }
        struct stat fst;
        if (fstat(fd, &fst) != 0 || fst.st_dev != st.st_dev || fst.st_ino != st.st_ino) {
            close(fd);
            errno = EAGAIN;
            return -1;
        }
        (void)fchmod(fd, 0700); /* so a read-only directory can be emptied */
        (void)rm_dir_contents(fd, depth, ctx);
        if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            return 0;
        if (errno != ENOTEMPTY && errno != EEXIST)
            return -1;
    }
    return -1;
}

int tree_remove(const char *path)
{
    if (path == NULL || path[0] == '\0')
        return -1;
    rm_ctx ctx = {0, 0};
    return rm_entry_at(AT_FDCWD, path, 0, &ctx);
}
