/*
 * Checks on a fix before anyone sees it: scope (files touched lie within
 * the context the agent was given, or are new tests), size (changed lines
 * within a limit), protected paths (globs that always need a human), and
 * the confidence score combining every signal (formula in
 * docs/fix-loop.md). Pure functions over a wt_diff; running the compile
 * and test commands and the regression check is fix.c's job.
 */
#ifndef SELF_HEAL_PORT_VALIDATE_H
#define SELF_HEAL_PORT_VALIDATE_H

#include <jansson.h>
#include <stddef.h>

#include "worktree.h"

/* The size limit used when max_lines is 0. */
#define VALIDATE_DEFAULT_MAX_LINES 40

/* Default protected globs: auth, migrations, CI, deploy, secrets. */
extern const char *const validate_default_protected[];

/* 1 when path matches glob, else 0. Globs use fnmatch rules per path
 * segment ('*' never crosses a slash), plus a whole segment "**" matching
 * zero or more directories; examples are in validate_default_protected
 * (validate.c): a migrations directory at any depth, everything under
 * .github, any file with "secret" in its name. A leading "**" segment
 * also matches at the root. */
int validate_glob_match(const char *glob, const char *path);

typedef struct validate_static {
    int scope_ok;        /* every touched file is in scope */
    int size_ok;         /* added + removed <= max_lines */
    int protected_ok;    /* no protected path touched */
    int has_test_change; /* at least one test file added or modified */
    int empty;           /* no file changed */
    size_t changed_lines;
    json_t *out_of_scope;   /* array of paths */
    json_t *protected_hits; /* array of {"path", "glob"} */
    json_t *test_files;     /* array of touched test paths */
    json_t *source_files;   /* array of touched non-test paths */
} validate_static;

/* scope: array of repository paths given to the agent (context files);
 * new files that are tests (context_is_test_path) are always in scope;
 * protected: array of globs or NULL for validate_default_protected. */
int validate_check(validate_static *out, const wt_diff *diff, json_t *scope,
                   json_t *protected_globs, size_t max_lines);
void validate_static_free(validate_static *v);

/* The signals the confidence score is computed from. */
typedef struct validate_signals {
    int compiled;          /* compile command passed (1), failed (0), not configured (-1) */
    int tests_passed;      /* test command passed / failed / not configured */
    int regression_proven; /* a changed test fails on base and passes on fix / not / unknown (-1) */
    int scope_ok, size_ok, protected_ok;
    size_t changed_lines, max_lines;
    int agent_exit_ok; /* agent exited 0 */
} validate_signals;

/* Confidence in [0,1], 2 decimals (formula at the top of validate.c):
 * 0 when compile or tests failed or nothing changed; at most 0.5 when
 * scope, size or protected failed or the regression is not proven. */
double validate_confidence(const validate_signals *s);

/* Whole report as JSON (static checks + signals + confidence). */
json_t *validate_report(const validate_static *v, const validate_signals *s, double confidence);

#endif
