/*
 * What a coding agent is told about an error: the repository files the
 * stack trace names (resolved to repository paths), what those files
 * alias/import/use/require one or two levels deep (Elixir modules found
 * by their defmodule; JavaScript relative import/require), their test
 * files, and the prompt file built from all of it.
 *
 * Everything here reads only files under the checkout root given (paths
 * are repository-relative; symlinks leaving the root, "..", absolute paths
 * are refused) and bounds what it reads (files, bytes, depth).
 */
#ifndef SELF_HEAL_PORT_PROMPT_H
#define SELF_HEAL_PORT_PROMPT_H

#include <jansson.h>
#include <stddef.h>

#include "self_heal/common.h"

typedef struct sh_scrubber sh_scrubber;

typedef struct context_limits {
    int depth;             /* import levels followed (default 2, at most 3) */
    size_t max_files;      /* files in the context in all (default 24) */
    size_t max_file_bytes; /* bytes read from one file when parsing it (default 256 KiB) */
    size_t max_scan_files; /* repository files listed to resolve paths (default 20000) */
} context_limits;

/* Fills the defaults above. */
void context_limits_default(context_limits *lim);

/* Repository-relative paths named by a stack trace: every "path:line"
 * token in `stacktrace` (Elixir "(app 1.0) lib/x.ex:42: M.f/1", Erlang
 * "{file,"src/x.erl"},{line,7}", JavaScript "at f (https://host/js/app.js:10:5)"
 * or "app.js:10:5", Python-like "File \"x.py\", line 3") and the "file"
 * of each object in `frames` (may be NULL), in order of appearance, each
 * once, resolved against the files under root: as is, else by the longest
 * path suffix that matches exactly one repository file (URL scheme, host,
 * query and build prefixes like "/app/" dropped). Unresolvable ones are
 * skipped. Returns an array of strings (at most lim->max_files). */
json_t *context_stack_files(const char *root, const char *stacktrace, json_t *frames,
                            const context_limits *lim);

/* The repository files under a root, for resolving the files stack frames
 * name one at a time (the regression proof, port/fix/proof.c). A file resolves
 * as in context_stack_files (as is, else by the longest path suffix that
 * matches exactly one repository file; URL scheme, host, query and build
 * prefixes dropped; "..", deps/, node_modules/, _build/ refused), but
 * without a line number and with the JVM extensions too (.java, .kt, .kts,
 * .scala, .groovy). Not for concurrent use: a lookup beyond a truncated
 * listing remembers what it found. */
typedef struct context_files context_files;

/* The repository files under root (bounded by lim, NULL: defaults), for
 * resolving the files stack frames name. NULL on error (root unreadable,
 * out of memory). Free with context_files_free. */
context_files *context_files_open(const char *root, const context_limits *lim);

/* The repository path a frame's file (path or URL, as written: file[0..len),
 * no NUL needed) resolves to, or NULL. Valid until context_files_free. */
const char *context_files_resolve(const context_files *f, const char *file, size_t len);

/* Frees f (NULL is fine); every path it returned becomes invalid. */
void context_files_free(context_files *f);

/* The context for those files: an array of objects
 *   {"path", "role": "stack" | "import" | "test", "via": path | null, "level": n}
 * stack files first, then their imports breadth first (level 1, 2), then
 * the test files of every stack and import file that exist:
 * Elixir lib/a/b.ex -> test/a/b_test.exs (and test files that name the
 * module), JavaScript x.js -> x.test.js, x.spec.js, __tests__/x.js,
 * test/x.test.js (same for .ts/.jsx/.tsx/.mjs). At most lim->max_files. */
json_t *context_gather(const char *root, json_t *stack_files, const context_limits *lim);

/* 1 when path looks like a test file (Elixir test/ ... _test.exs, JS
 * *.test.* / *.spec.* / __tests__/, Erlang *_SUITE.erl, *_tests.erl under test/,
 * Python test_*.py / *_test.py), else 0. */
int context_is_test_path(const char *path);

/* What the prompt states. Strings may be NULL. Untrusted: service (from a
 * log record or an HTTP client), message, stacktrace, request_path,
 * root_cause (an LLM wrote it), commit summaries, file excerpts: all
 * fenced (fence.c) and scrubbed. */
typedef struct context_prompt_in {
    const char *fingerprint;
    const char *ticket;  /* "#12" or a URL */
    const char *service; /* untrusted */
    const char *severity;
    long long count;
    const char *message;
    const char *stacktrace;
    const char *request_path;
    const char *root_cause;
    const char *descriptor;      /* service descriptor text (operator-written, from config) */
    json_t *files;               /* context_gather's array */
    json_t *recent_commits;      /* wt_recent_commits' array, may be NULL */
    const char *root;            /* checkout root, for excerpts around stack lines */
    size_t max_changed_lines;    /* the validation limit, stated as a constraint */
    const char *test_command;    /* stated so the agent can run it; may be NULL */
    int attempt;                 /* 1 for the first attempt; later ones carry what went wrong */
    json_t *previous_reasons;    /* why the previous attempt was not accepted: strings (ours) */
    const char *previous_output; /* the tail of its failing step's output (untrusted), or NULL */
} context_prompt_in;

/* Writes the prompt (Markdown) into out: the task, the constraints (the
 * smallest change that fixes the root cause, no refactoring, no files
 * outside the listed ones unless needed and explained, add or change a
 * regression test that fails without the fix, at most N changed lines, do
 * not touch protected paths, do not commit: the runner commits), the
 * error, the files, recent commits. Returns 0 or -1 (out of memory). */
int context_prompt(sh_buf *out, const context_prompt_in *in, const sh_scrubber *scrub);

#endif
