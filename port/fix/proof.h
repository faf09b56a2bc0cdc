/*
 * The regression proof: does a test run's output show the production error
 * itself? The fix's tests are run against the base commit's production
 * code; their output must hold a failure with the production error's
 * exception type, normalised message and top production frames (compared
 * with the fingerprint core). A test that fails on base for another reason
 * (an assertion, a compile error, another exception, an exception raised
 * by the test code itself) proves nothing.
 *
 * The matching rules and the recognised output formats are at the top of
 * port/fix/proof.c and in docs/fix-loop.md ("The regression proof").
 */
#ifndef SELF_HEAL_PORT_PROOF_H
#define SELF_HEAL_PORT_PROOF_H

#include <stddef.h>

#include "prompt.h"
#include "self_heal/fingerprint.h"

/* Bounds of one check: the log's last PROOF_SCAN_BYTES are scanned, lines
 * are looked at up to PROOF_LINE_MAX bytes, every failure keeps at most
 * PROOF_MAX_FRAMES frames (the innermost ones) and PROOF_MESSAGE_MAX
 * bytes of message, and the frames of the first PROOF_MAX_FAILURES
 * failures with the target's type and message are compared (later ones
 * are counted only). */
#define PROOF_SCAN_BYTES (4u << 20)
#define PROOF_LINE_MAX 4096
#define PROOF_MAX_FAILURES 256
#define PROOF_MAX_FRAMES 64
#define PROOF_MESSAGE_MAX 8192

/* The production error a regression test must reproduce. The strings are
 * borrowed for the duration of proof_check. */
typedef struct proof_target {
    const char *type;       /* exception type as captured ("ZeroDivisionError",
                               "Elixir.ArithmeticError", "java.lang.IllegalStateException");
                               NULL or "": the message and frames alone decide */
    const char *message;    /* the raw message of the production error; NULL: "" */
    const char *stacktrace; /* its stack trace text; may be NULL */
} proof_target;

/* Classifies a repository path: 1 when it is test code (its frames are the
 * test's own, never production), else 0. */
typedef int (*proof_is_test_fn)(void *payload, const char *repo_path);

typedef struct proof_result {
    int reproduced;        /* 1 when a failure in the log is the production error */
    size_t failures;       /* failures (exception blocks) found in the log */
    size_t frames_matched; /* production frames that matched (0 when matched by type and
                              message alone) */
    char fingerprint[SH_FP_HEX_LEN + 1]; /* the fingerprint both sides gave, "" when not
                                            reproduced */
    char detail[512]; /* one line for reports: what matched, or the closest failure and why it
                         did not; printable UTF-8 without control or invisible characters */
} proof_result;

/* Scans a test run's output log[0..len) (untrusted, any size, may hold NUL
 * bytes and invalid UTF-8: the work is bounded as above) for failures and
 * decides whether one reproduces target; fills *out (always, also on
 * error).
 *
 * files: resolves frame files to repository paths (borrowed; may be NULL:
 * then files are compared as written, after dropping leading "./", and
 * frames the in-app heuristic of frames.h rejects are dropped).
 * is_test/payload: the test-code classifier, called with repository paths
 * (may be NULL: no frame is test code; proof_is_test_path is a default).
 *
 * A NULL target is never reproduced. Returns 0, or -1 on allocation
 * failure (out->reproduced is then 0) or a NULL out. */
int proof_check(proof_result *out, const char *log, size_t len, const proof_target *target,
                const context_files *files, proof_is_test_fn is_test, void *payload);

/* A default classifier (payload unused): context_is_test_path, or a path
 * with a directory named test, tests, spec or __tests__ (so Maven's and
 * Gradle's src/test/ and ExUnit's test/support/ too). */
int proof_is_test_path(void *payload, const char *repo_path);

#endif
