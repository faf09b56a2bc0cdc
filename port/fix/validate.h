/*
 * Checks on a fix before anyone sees it (docs/fix-loop.md, "Validation"):
 *
 *   refusals    what tree_capture refused (symlinks, files made executable,
 *               special files, nested repositories, .git* paths), plus
 *               binary content and submodules in the diff: never deployed;
 *   size        changed lines and changed bytes within limits;
 *   test code   where the project's test runner looks (globs) and that no
 *               production file loads (a test-named file that production
 *               code imports, requires or compiles is production code);
 *   existing    a test file of the base that the change modifies (any
 *   tests       removed line), deletes or renames: a human decides;
 *   scope       every production file touched is one the agent was given;
 *   protected   globs that always need a human; configured ones are added
 *               to the defaults, never replace them;
 *   special     production lines the change adds that compare against a
 *   cases       value taken from the tests (an input special-cased so a
 *               test passes): a human decides;
 *   capa-       production lines the change adds that give the file a
 *   bilities    capability it did not use (running programs, the network,
 *               the environment, code from data, writing files, the test
 *               framework): a human decides;
 *   source      test code naming a production file as a string (a test
 *   reads       reading the code instead of running it): its proof does
 *               not count;
 *
 * and the confidence score combining them with what the runs proved
 * (compile, the fix's tests, the base's tests unmodified, the regression
 * proof). Pure functions over a wt_diff and file contents supplied by the
 * caller; running the commands is fix.c's job.
 */
#ifndef SELF_HEAL_PORT_VALIDATE_H
#define SELF_HEAL_PORT_VALIDATE_H

#include <jansson.h>
#include <stddef.h>

#include "worktree.h"

/* The limits used when the caller gives 0. */
#define VALIDATE_DEFAULT_MAX_LINES 40
#define VALIDATE_DEFAULT_MAX_BYTES 8192

/* Default protected globs: auth, migrations, CI, deploy, build and
 * dependency files, configuration, secrets, .git* paths. */
extern const char *const validate_default_protected[];

/* Where test runners look for tests, by default (fix.test.paths replaces
 * it): test/, tests/, spec/, umbrella apps' test/, Maven's src/test/,
 * JavaScript's __tests__/ and *.test.* / *.spec.*, Go's *_test.go,
 * Python's top-level test_*.py / *_test.py and conftest.py. */
extern const char *const validate_default_tests[];

/* 1 when path matches glob, else 0. Globs use fnmatch rules per path
 * segment ('*' never crosses a slash), plus a whole segment "**" matching
 * zero or more directories; a leading "**" segment also matches at the
 * root. */
int validate_glob_match(const char *glob, const char *path);

/* 1 when path lies where the test runner looks (globs: an array of glob
 * strings, or NULL for validate_default_tests). Location only: whether
 * production code loads the file is validate_check's business. */
int validate_test_located(const char *path, json_t *globs);

/* Contents of a file of the base (fix_side 0) or of the fix (1): a
 * malloc'ed NUL-terminated buffer of *len bytes (at most max), or NULL
 * when there is no such file or it is larger. */
typedef char *(*validate_read_fn)(void *payload, int fix_side, const char *path, size_t max,
                                  size_t *len);

typedef struct validate_input {
    const wt_diff *diff;     /* base -> fix */
    json_t *scope;           /* repository paths given to the agent (strings or {"path"}) */
    json_t *protected_globs; /* added to validate_default_protected; may be NULL */
    json_t *test_globs;      /* where tests are; NULL: validate_default_tests */
    json_t *refusals;        /* tree_capture's [{"path", "reason"}]; may be NULL */
    json_t *fix_files;       /* every file path of the fix's tree; NULL: no production scan */
    validate_read_fn read;   /* NULL: no content checks (production scan, special cases) */
    void *payload;
    size_t max_lines; /* 0: VALIDATE_DEFAULT_MAX_LINES */
    size_t max_bytes; /* 0: VALIDATE_DEFAULT_MAX_BYTES */
} validate_input;

typedef struct validate_static {
    int scope_ok;        /* every production file touched is in scope */
    int size_ok;         /* lines and bytes within the limits */
    int protected_ok;    /* no protected path touched */
    int refused_ok;      /* nothing refused */
    int tests_kept;      /* no existing test file modified, deleted or renamed */
    int special_ok;      /* no production comparison against a value from the tests */
    int tests_verified;  /* the production scan covered every file it had to */
    int capabilities_ok; /* no production file gains a capability (network, processes, ...) */
    int reads_ok;        /* no test code reads production source as text */
    int has_test_change; /* test code added or extended */
    int empty;           /* no file changed */
    size_t changed_lines;
    size_t changed_bytes;
    json_t *out_of_scope;   /* [path] */
    json_t *protected_hits; /* [{"path", "glob"}] */
    json_t *refused;        /* [{"path", "reason"}] */
    json_t *test_files;     /* [path]: test code the change touches (any status) */
    json_t *source_files;   /* [path]: production files the change touches */
    json_t *tests_modified; /* [path]: existing tests modified, deleted or renamed */
    json_t *loaded_tests;   /* [{"path", "by"}]: test-located files production loads */
    json_t *special_cases;  /* [{"path", "case": {"value", "line"}}] */
    json_t *capabilities;   /* [{"path", "capability": {"token", "what", "line"}}] */
    json_t *source_reads;   /* [{"path" (test), "reads" (production file)}] */
} validate_static;

/* Runs every static check. 0, or -1 (bad input, out of memory: out is
 * left empty). Free with validate_static_free. */
int validate_check(validate_static *out, const validate_input *in);
void validate_static_free(validate_static *v);

/* What the runs showed. Tri-state: 1 passed, 0 failed, -1 not run. */
typedef struct validate_signals {
    int compiled;          /* compile command on the fix */
    int tests_passed;      /* the test command on the fix */
    int existing_passed;   /* the base's tests, unmodified, against the fixed code */
    int regression_proven; /* the fix's tests fail on the base with the production error */
    int scope_ok, size_ok, protected_ok;
    int trusted;   /* refusals, existing tests, special cases, scan: all clear */
    int contained; /* the agent ran in the sandbox */
    size_t changed_lines, max_lines;
    int agent_exit_ok; /* agent exited 0 */
} validate_signals;

/* Confidence in [0,1], 2 decimals (formula at the top of validate.c):
 * 0 when a run failed or nothing changed; at most 0.5 unless the
 * regression is proven and nothing needs a human. */
double validate_confidence(const validate_signals *s);

/* 1 when a human must decide whatever the score (validate.c). */
int validate_needs_human(const validate_static *v, const validate_signals *s);

/* Whole report as JSON (static checks + signals + confidence). */
json_t *validate_report(const validate_static *v, const validate_signals *s, double confidence);

#endif
