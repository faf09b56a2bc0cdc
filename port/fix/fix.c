/*
 * The fix loop's attempt (fix.h, docs/fix-loop.md, docs/security.md): a
 * plain checkout and the prompt, the agent in the sandbox, the change
 * captured and committed by the port, validation runs on composed trees
 * (the fix, the base's tests on it, the fix's tests on the base),
 * delivery, the gate; and how a fix starts (a new ticket, the fix command,
 * a resumed job, a revalidation). Its configuration and shared helpers
 * are in fix_config.c, its slots in fix_slots.c, the scheduler that starts
 * deploys one at a time in fix_schedule.c, its commands in fix_cmd.c.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "fix_loop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "audit.h"
#include "prompt.h"
#include "deliver.h"
#include "deploy.h"
#include "effect.h"
#include "exec.h"
#include "fence.h"
#include "notify.h"
#include "proof.h"
#include "scrub_json.h"
#include "self_heal/scrub.h"
#include "service.h"
#include "state.h"
#include "ticket.h"
#include "transcript.h"
#include "trust.h"
#include "tree.h"
#include "validate.h"
#include "worktree.h"

#define FIX_WAITING_MAX 64
#define FIX_PATCH_MAX (1024 * 1024)
#define FIX_TEXT_MAX 16384

/* ------------------------------------------------------------ one attempt */

#define INSIDE_CHECKOUT "/checkout"
#define INSIDE_PROMPT "/task/prompt.md"
#define PROOF_LOG_MAX (4u << 20)
#define FILES_MAX 200000
#define RETRY_OUTPUT_MAX 6144

static int mkdir_one(const char *path)
{
    return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

/* state_dir/<sub> and state_dir/<sub>/<leaf> (leaf may be NULL). */
static int make_dirs(char *out, size_t len, const char *state_dir, const char *sub,
                     const char *leaf)
{
    if ((size_t)snprintf(out, len, "%s/%s", state_dir, sub) >= len || mkdir_one(out) != 0)
        return -1;
    if (leaf == NULL)
        return 0;
    size_t n = strlen(out);
    if ((size_t)snprintf(out + n, len - n, "/%s", leaf) >= len - n || mkdir_one(out) != 0)
        return -1;
    return 0;
}

typedef struct attempt {
    port_ctx *ctx;
    fix_config *cfg;
    state_db *db;
    json_t *fix; /* the row */
    int64_t id;
    const char *fp;
    int revalidate;          /* a rebased fix: its commit is validated again, no agent */
    int resumed;             /* its commit was made before the port stopped: no agent again */
    int contained;           /* the agent that wrote the change ran in the sandbox */
    char dir[FIX_PATH_MAX];  /* state_dir/fixes/<id>: prompt, logs (never visible to the agent) */
    char work[FIX_PATH_MAX]; /* state_dir/work/<id>: plain checkouts */
    char checkout[FIX_PATH_MAX + 16]; /* work/agent: the agent's files */
    char branch[FIX_FP_MAX + 16];
    char base[WT_OID_HEX];
    char fix_commit[WT_OID_HEX];
    char base_tree[WT_OID_HEX];
    char fix_tree[WT_OID_HEX];
    wt_repo *repo;
    json_t *context;  /* gathered files */
    json_t *refusals; /* what the capture refused */
    wt_diff diff;
    int have_diff;
    exec_result agent;
    int agent_ran;
    json_t *transcript; /* what the agent did (transcript.h), for the report */
    json_t *report;
    int tries;         /* agent runs before this one (retries taken) */
    json_t *retry_why; /* what a new attempt could mend (retry_reasons), or NULL */
    json_t *feedback;  /* {"reasons", "output"}: the previous attempt's, for the prompt */
} attempt;

static void attempt_path(char *out, size_t len, const attempt *a, const char *leaf)
{
    snprintf(out, len, "%s/%s", a->dir, leaf);
}

/* What the agent of a resumed attempt did, as make_change recorded it. */
static json_t *agent_record(const attempt *a, const char *key)
{
    return json_object_get(json_object_get(json_object_get(a->fix, "attempt"), "agent"), key);
}

static int sandboxed(const fix_config *cfg)
{
    return cfg->sandbox.mode != SANDBOX_NONE;
}

/* Runs argv_tmpl in the checkout dir (the sandbox's only writable path)
 * with log_leaf as its output; result in *r. 1 passed, 0 failed, -1 not
 * configured. */
static int run_in(attempt *a, json_t *argv_tmpl, int timeout_ms, const char *dir,
                  const char *log_leaf, exec_result *r, json_t *steps, const char *name)
{
    memset(r, 0, sizeof(*r));
    if (argv_tmpl == NULL)
        return -1;
    char err[256] = "";
    char log_path[FIX_PATH_MAX + 64];
    attempt_path(log_path, sizeof(log_path), a, log_leaf);
    const char *where = sandboxed(a->cfg) ? INSIDE_CHECKOUT : dir;
    const char *keys[] = {"checkout", "worktree", "fingerprint"};
    const char *vals[] = {where, where, a->fp};
    char **argv = exec_expand(argv_tmpl, keys, vals, 3, err, sizeof(err));
    char **envp = exec_env(a->cfg->env_allow, NULL, NULL, 0);
    int ok = 0;
    if (argv != NULL && envp != NULL) {
        sandbox_run run = {.dir = dir, .dir_inside = INSIDE_CHECKOUT};
        exec_spec spec = {.argv = argv,
                          .envp = envp,
                          .cwd = dir,
                          .stdout_path = log_path,
                          .stderr_path = log_path,
                          .max_output = a->cfg->max_output,
                          .timeout_ms = timeout_ms,
                          .stopping = &a->ctx->stopping,
                          .sandbox = &a->cfg->sandbox,
                          .run = &run};
        if (exec_run(r, &spec, err, sizeof(err)) == 0)
            ok = exec_ok(r);
        else
            r->exit_code = -1;
    }
    char desc[320];
    if (err[0] != '\0')
        snprintf(desc, sizeof(desc), "could not start: %s", err);
    else
        exec_describe(r, desc, sizeof(desc));
    json_array_append_new(steps, json_pack("{s:s, s:b, s:s, s:I}", "step", name, "ok", ok, "result",
                                           desc, "ms", (json_int_t)r->elapsed_ms));
    exec_argv_free(argv);
    exec_argv_free(envp);
    return ok;
}

static json_t *fix_group(attempt *a)
{
    return json_object_get(json_object_get(a->fix, "input"), "group");
}

/* work/<leaf>: a fresh plain checkout of rev (commit or tree), owned by
 * the sandbox's user. */
static int checkout_of(attempt *a, const char *rev, const char *leaf, char *out, size_t outlen,
                       cmd_error *err)
{
    char msg[512] = "";
    if ((size_t)snprintf(out, outlen, "%s/%s", a->work, leaf) >= outlen) {
        cmd_error_set(err, "io", "path too long");
        return -1;
    }
    tree_remove(out);
    if (tree_export(a->repo, rev, out, msg, sizeof(msg)) != 0 ||
        sandbox_own(&a->cfg->sandbox, out, msg, sizeof(msg)) != 0) {
        cmd_error_set(err, "io", "checkout: %s", msg);
        return -1;
    }
    return 0;
}

/* The repository, the base commit and the work directory. */
static int work_reset(attempt *a, cmd_error *err);

static int prepare(attempt *a, cmd_error *err)
{
    char msg[512] = "";
    if (wt_repo_open(&a->repo, a->cfg->repo, msg, sizeof(msg)) != 0) {
        cmd_error_set(err, "git", "%s", msg);
        return -1;
    }
    const char *rebased = fix_str(a->fix, "base_commit");
    const char *commit = fix_str(a->fix, "fix_commit");
    json_t *carried = json_object_get(a->fix, "attempt");
    a->revalidate =
        json_is_true(json_object_get(carried, "revalidate")) && rebased != NULL && commit != NULL;
    a->resumed = !a->revalidate && rebased != NULL && commit != NULL &&
                 json_is_object(json_object_get(carried, "agent"));
    int again = a->revalidate || a->resumed;
    const char *rev = again                              ? rebased
                      : a->cfg->base[0] != '\0'          ? a->cfg->base
                      : a->cfg->deploy_branch[0] != '\0' ? a->cfg->deploy_branch
                                                         : NULL;
    if (wt_resolve(a->base, a->repo, rev, msg, sizeof(msg)) != 0 ||
        tree_of(a->base_tree, a->repo, a->base, msg, sizeof(msg)) != 0) {
        cmd_error_set(err, "git", "%s", msg);
        return -1;
    }
    a->contained = again ? json_is_true(json_object_get(carried, "contained")) : sandboxed(a->cfg);
    if (again)
        snprintf(a->fix_commit, sizeof(a->fix_commit), "%s", commit);
    snprintf(a->branch, sizeof(a->branch), "self-heal/%s", a->fp);
    if (make_dirs(a->work, sizeof(a->work), a->cfg->state_dir, "work", NULL) != 0) {
        cmd_error_set(err, "io", "cannot make %s/work", a->cfg->state_dir);
        return -1;
    }
    size_t n = strlen(a->work);
    snprintf(a->work + n, sizeof(a->work) - n, "/%lld", (long long)a->id);
    /* the retries taken and, when a retry's agent has not run yet, what
     * it is told */
    json_t *tries = json_object_get(carried, "tries");
    a->tries =
        json_is_integer(tries) && json_integer_value(tries) > 0 && json_integer_value(tries) <= 3
            ? (int)json_integer_value(tries)
            : 0;
    json_t *feedback = json_object_get(carried, "feedback");
    if (!again && json_is_object(feedback))
        a->feedback = json_incref(feedback);
    return work_reset(a, err);
}

/* An empty work directory: what a previous attempt left is removed. */
static int work_reset(attempt *a, cmd_error *err)
{
    tree_remove(a->work);
    if (mkdir_one(a->work) != 0) {
        cmd_error_set(err, "io", "cannot make the fix's work directory");
        return -1;
    }
    if (sandboxed(a->cfg) && geteuid() == 0) {
        /* the sandbox's user must reach the checkouts by path (bwrap
         * resolves them as that user): search, never list, on the way
         * down; every other file of the state directory stays private */
        char root[FIX_PATH_MAX + 8];
        snprintf(root, sizeof(root), "%s/work", a->cfg->state_dir);
        if (chmod(a->cfg->state_dir, 0711) != 0 || chmod(root, 0711) != 0 ||
            chmod(a->work, 0711) != 0) {
            cmd_error_set(err, "io", "cannot open the work directory to the sandbox's user");
            return -1;
        }
    }
    return 0;
}

/* The prompt as the sandbox reads it: work/<id>/task/prompt.md, readable
 * by the sandbox's user (the record stays in state_dir/fixes/<id>). */
static int task_copy(attempt *a, const char *text, size_t len, char *out, size_t outlen)
{
    char dir[FIX_PATH_MAX + 16];
    snprintf(dir, sizeof(dir), "%s/task", a->work);
    if ((size_t)snprintf(out, outlen, "%s/prompt.md", dir) >= outlen ||
        (mkdir(dir, 0755) != 0 && errno != EEXIST) || chmod(dir, 0755) != 0)
        return -1;
    return fix_write_mode(out, text, len, 0644);
}

/* Context files and the prompt file; returns the path of the copy the
 * agent reads in out. */
static int write_prompt(attempt *a, char *out, size_t outlen, cmd_error *err)
{
    json_t *group = fix_group(a);
    json_t *input = json_object_get(a->fix, "input");
    context_limits lim;
    context_limits_default(&lim);
    const char *stack = fix_str(group, "stacktrace");
    json_t *stack_files =
        context_stack_files(a->checkout, stack, json_object_get(group, "frames"), &lim);
    a->context = context_gather(a->checkout, stack_files, &lim);
    json_decref(stack_files);
    if (a->context == NULL)
        a->context = json_array();
    size_t n = json_array_size(a->context);
    const char **paths = calloc(n ? n : 1, sizeof(*paths));
    json_t *commits = NULL;
    if (paths != NULL) {
        size_t i;
        json_t *f;
        json_array_foreach(a->context, i, f) paths[i] = fix_str(f, "path");
        commits = wt_recent_commits(a->repo, a->base, port_now() - 86400, paths, n, 20);
    }
    free(paths);
    char ticket[64] = "";
    json_t *tid = json_object_get(a->fix, "ticket_id");
    if (json_is_integer(tid))
        snprintf(ticket, sizeof(ticket), "#%lld", (long long)json_integer_value(tid));
    json_t *count = json_object_get(group, "count");
    char test_cmd[1024] = "";
    if (a->cfg->test_argv != NULL) {
        size_t i;
        json_t *arg;
        json_array_foreach(a->cfg->test_argv, i, arg)
        {
            size_t used = strlen(test_cmd);
            snprintf(test_cmd + used, sizeof(test_cmd) - used, "%s%s", i ? " " : "",
                     json_string_value(arg));
        }
    }
    context_prompt_in in = {
        .fingerprint = a->fp,
        .ticket = ticket[0] ? ticket : NULL,
        .service = fix_str(group, "service"),
        .severity = fix_str(a->fix, "severity"),
        .count = json_is_integer(count) ? (long long)json_integer_value(count) : 0,
        .message = fix_str(group, "message"),
        .stacktrace = stack,
        .request_path = fix_str(group, "path"),
        .root_cause = fix_str(input, "root_cause"),
        .descriptor = a->cfg->descriptor[0] ? a->cfg->descriptor : NULL,
        .files = a->context,
        .recent_commits = commits,
        .root = a->checkout,
        .max_changed_lines = a->cfg->max_lines,
        .test_command = test_cmd[0] ? test_cmd : NULL,
        .attempt = a->tries + 1,
        .previous_reasons = json_object_get(a->feedback, "reasons"),
        .previous_output = fix_str(a->feedback, "output"),
    };
    sh_buf prompt;
    sh_buf_init(&prompt);
    int rc = context_prompt(&prompt, &in, port_scrubber(a->ctx));
    json_decref(commits);
    char record[FIX_PATH_MAX + 64];
    attempt_path(record, sizeof(record), a, "prompt.md");
    if (rc != 0 || prompt.oom || fix_write_file(record, prompt.data, prompt.len) != 0 ||
        task_copy(a, prompt.data, prompt.len, out, outlen) != 0) {
        cmd_error_set(err, "io", "cannot write the prompt file");
        rc = -1;
    }
    sh_buf_free(&prompt);
    return rc;
}

/* The environment the agent runs with: the allow-list, its key, the
 * preset's and fix.agent.env's settings and, without the sandbox, a
 * private HOME in the work directory. */
static char **agent_env(attempt *a)
{
    const agent_config *ag = &a->cfg->agent;
    size_t n = json_array_size(ag->env);
    const char **extra = calloc(n + 2, sizeof(*extra));
    char home[FIX_PATH_MAX + 64];
    char **envp = NULL;
    char *key = NULL;
    if (extra == NULL)
        return NULL;
    size_t i;
    json_t *v;
    json_array_foreach(ag->env, i, v) extra[i] = json_string_value(v);
    const char *secret =
        ag->key_as[0] && strcmp(ag->key_as, ag->key_env) != 0 ? port_secret(ag->key_env) : NULL;
    if (secret != NULL && (key = malloc(strlen(ag->key_as) + strlen(secret) + 2)) != NULL) {
        sprintf(key, "%s=%s", ag->key_as, secret); /* sized above */
        extra[n++] = key;
    }
    if (!sandboxed(a->cfg)) {
        snprintf(home, sizeof(home), "%s/home", a->work);
        if (mkdir(home, 0700) == 0 || errno == EEXIST) {
            memmove(home + 5, home, strlen(home) + 1);
            memcpy(home, "HOME=", 5);
            extra[n++] = home;
        }
    }
    envp = exec_env(ag->env_allow, ag->key_env[0] ? ag->key_env : NULL, extra, n);
    if (key != NULL) {
        OPENSSL_cleanse(key, strlen(key));
        free(key);
    }
    free(extra);
    return envp;
}

static int run_agent(attempt *a, const char *prompt_path, size_t prompt_bytes, cmd_error *err)
{
    char msg[256] = "";
    char out_path[FIX_PATH_MAX + 64], err_path[FIX_PATH_MAX + 64];
    attempt_path(out_path, sizeof(out_path), a, "agent.out");
    attempt_path(err_path, sizeof(err_path), a, "agent.err");
    const agent_config *ag = &a->cfg->agent;
    if (ag->preset[0] != '\0' && ag->key_env[0] != '\0' && port_secret(ag->key_env) == NULL) {
        /* it could not reach its model: no run, no budget spent */
        cmd_error_set(err, "agent", "the agent's key is not set (the environment variable %s)",
                      ag->key_env);
        return -1;
    }
    if (agent_budget_reserve(a->ctx, ag, prompt_bytes, msg, sizeof(msg)) != 0) {
        cmd_error_set(err, "budget", "%s", msg);
        return -1;
    }
    char ticket[32] = "";
    json_t *tid = json_object_get(a->fix, "ticket_id");
    if (json_is_integer(tid))
        snprintf(ticket, sizeof(ticket), "%lld", (long long)json_integer_value(tid));
    int boxed = sandboxed(a->cfg);
    const char *where = boxed ? INSIDE_CHECKOUT : a->checkout;
    const char *prompt = boxed ? INSIDE_PROMPT : prompt_path;
    const char *keys[] = {"prompt_file", "checkout", "worktree", "ticket", "fingerprint"};
    const char *vals[] = {prompt, where, where, ticket, a->fp};
    char **argv = exec_expand(a->cfg->agent.argv, keys, vals, 5, msg, sizeof(msg));
    char **envp = agent_env(a);
    int rc = -1;
    if (argv == NULL || envp == NULL) {
        cmd_error_set(err, "bad_config", "fix.agent: %s", msg[0] ? msg : "out of memory");
    } else {
        sandbox_bind files[1] = {{prompt_path, INSIDE_PROMPT}};
        sandbox_run run = {.dir = a->checkout,
                           .dir_inside = INSIDE_CHECKOUT,
                           .files = files,
                           .nfiles = 1,
                           .network = a->cfg->agent.network};
        exec_spec spec = {.argv = argv,
                          .envp = envp,
                          .cwd = a->checkout,
                          .stdout_path = out_path,
                          .stderr_path = err_path,
                          .max_output = a->cfg->max_output,
                          .timeout_ms = a->cfg->agent.timeout_ms,
                          .stopping = &a->ctx->stopping,
                          .sandbox = &a->cfg->sandbox,
                          .run = &run};
        if (exec_run(&a->agent, &spec, msg, sizeof(msg)) != 0)
            cmd_error_set(err, "agent", "the agent could not start: %s", msg);
        else {
            a->agent_ran = 1;
            rc = 0;
        }
    }
    exec_argv_free(argv);
    exec_argv_free(envp);
    if (a->agent_ran) {
        /* what it did, scrubbed, for the report; what it used, for the
         * budgets (stdout holds a stream-json transcript, else its words) */
        transcript t;
        if (transcript_read(&t, out_path, port_scrubber(a->ctx)) == 0) {
            if (!t.structured && json_array_size(t.entries) == 0) {
                transcript_free(&t);
                transcript_read(&t, err_path, port_scrubber(a->ctx));
            }
            agent_budget_record(a->ctx, &a->cfg->agent, &t);
            json_decref(a->transcript);
            a->transcript = transcript_json(&t);
            transcript_free(&t);
        }
    }
    return rc;
}

/* ------------------------------------------------------------ validation */

typedef struct reader {
    wt_repo *repo;
    const char *base;
    const char *fix;
} reader;

static char *read_side(void *payload, int fix_side, const char *path, size_t max, size_t *len)
{
    reader *r = payload;
    return tree_read_file(r->repo, fix_side ? r->fix : r->base, path, max, len);
}

typedef struct test_class {
    json_t *globs;
    json_t *loaded; /* test-located files production loads: production */
} test_class;

static int is_test(void *payload, const char *path)
{
    test_class *t = payload;
    size_t i;
    json_t *v;
    json_array_foreach(t->loaded, i, v)
    {
        const char *p = fix_str(v, "path");
        if (p != NULL && strcmp(p, path) == 0)
            return 0;
    }
    return validate_test_located(path, t->globs);
}

/* The paths of arr (strings) as a vector (borrowed strings); NULL when
 * empty or out of memory. */
static const char **path_vector(json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    const char **v = *n > 0 ? calloc(*n, sizeof(*v)) : NULL;
    size_t i;
    json_t *p;
    if (v != NULL)
        json_array_foreach(arr, i, p) v[i] = json_string_value(p);
    if (v == NULL)
        *n = 0;
    return v;
}

/* The regression proof: the fix's test code against the base's production
 * code must fail with the production error. 1 proven, 0 not; detail in
 * *proof (new reference). */
static int prove(attempt *a, const validate_static *vs, json_t *steps, json_t **proof)
{
    char msg[512] = "";
    char tree[WT_OID_HEX], dir[FIX_PATH_MAX + 64];
    size_t n = 0;
    const char **paths = path_vector(vs->test_files, &n);
    cmd_error err = {NULL, ""};
    *proof = NULL;
    int composed = paths != NULL && tree_compose(tree, a->repo, a->base_tree, a->fix_tree, paths, n,
                                                 msg, sizeof(msg)) == 0;
    free(paths);
    if (!composed || checkout_of(a, tree, "regression", dir, sizeof(dir), &err) != 0) {
        *proof = json_pack("{s:s}", "detail", err.message[0] ? err.message : msg);
        return 0;
    }
    exec_result r;
    int passed = run_in(a, a->cfg->test_argv, a->cfg->test_timeout_ms, dir, "regression.log", &r,
                        steps, "tests_on_base");
    if (passed != 0 || r.timed_out || r.stopped || r.overflowed) {
        *proof = json_pack("{s:s}", "detail",
                           passed == 1 ? "the fix's tests pass on the base commit: they do not "
                                         "reproduce the error"
                                       : "the tests did not run to completion on the base commit");
        return 0;
    }
    char log_path[FIX_PATH_MAX + 64];
    attempt_path(log_path, sizeof(log_path), a, "regression.log");
    char *log = exec_tail(log_path, PROOF_LOG_MAX);
    json_t *group = fix_group(a);
    proof_target target = {fix_str(group, "type"), fix_str(group, "message"),
                           fix_str(group, "stacktrace")};
    test_class tc = {a->cfg->test_paths, vs->loaded_tests};
    context_files *files = context_files_open(dir, NULL);
    proof_result res;
    memset(&res, 0, sizeof(res));
    int rc = log != NULL ? proof_check(&res, log, strlen(log), &target, files, is_test, &tc) : -1;
    context_files_free(files);
    free(log);
    if (rc != 0) {
        *proof = json_pack("{s:s}", "detail", "the test output could not be read");
        return 0;
    }
    *proof = json_pack("{s:b, s:I, s:I, s:s, s:s}", "reproduced", res.reproduced, "failures",
                       (json_int_t)res.failures, "frames_matched", (json_int_t)res.frames_matched,
                       "fingerprint", res.fingerprint, "detail", res.detail);
    return res.reproduced == 1;
}

/* Why a human must decide, in words (an array, empty when nothing). */
static json_t *why_human(const validate_static *vs, const validate_signals *sig)
{
    json_t *why = json_array();
    if (vs == NULL) {
        json_array_append_new(why, json_string("the change could not be checked"));
        return why;
    }
    if (!vs->scope_ok)
        json_array_append_new(why, json_string("production files outside the task's files"));
    if (!vs->protected_ok)
        json_array_append_new(why, json_string("protected paths"));
    if (!vs->tests_kept)
        json_array_append_new(why, json_string("existing tests modified or deleted"));
    if (!vs->special_ok)
        json_array_append_new(why, json_string("production code compares against values taken "
                                               "from the tests"));
    if (!vs->capabilities_ok)
        json_array_append_new(why, json_string("production code gains a capability it did not "
                                               "use (programs, network, environment, eval, files, "
                                               "the test framework)"));
    if (!vs->reads_ok)
        json_array_append_new(why, json_string("the tests read production source as text"));
    if (!vs->tests_verified)
        json_array_append_new(why, json_string("test files that could not be checked against "
                                               "production code"));
    if (sig->regression_proven != 1)
        json_array_append_new(why, json_string("no test reproduces the production error on the "
                                               "base commit"));
    if (!sig->contained)
        json_array_append_new(why, json_string("the agent ran without the sandbox"));
    return why;
}

/* What a new attempt could mend, in words for its prompt: code that does
 * not compile, tests that fail, no test that reproduces the production
 * error, a change too large or out of scope. NULL when there is nothing
 * to mend, or when the change could not be checked or broke a rule of
 * trust (refused files, existing tests weakened, protected paths,
 * special-cased test values, new capabilities, tests reading production
 * source): another try would only teach an agent to hide it. */
static json_t *retry_reasons(const attempt *a, const validate_static *vs,
                             const validate_signals *sig)
{
    if (vs == NULL || vs->empty || !vs->refused_ok || !vs->tests_kept || !vs->special_ok ||
        !vs->capabilities_ok || !vs->reads_ok || !vs->tests_verified || !vs->protected_ok)
        return NULL;
    json_t *why = json_array();
    char text[600];
    if (!vs->size_ok) {
        snprintf(text, sizeof(text),
                 "the change is too large: %zu changed lines and %zu bytes, at most %zu lines and "
                 "%zu bytes are allowed",
                 vs->changed_lines, vs->changed_bytes, a->cfg->max_lines, a->cfg->max_bytes);
        json_array_append_new(why, json_string(text));
    }
    if (!vs->scope_ok) {
        size_t used = (size_t)snprintf(text, sizeof(text),
                                       "it changed production files outside the files of the "
                                       "task:");
        size_t i;
        json_t *p;
        json_array_foreach(vs->out_of_scope, i, p)
        {
            if (i >= 5 || used >= sizeof(text))
                break;
            used += (size_t)snprintf(text + used, sizeof(text) - used, "%s %s", i ? "," : "",
                                     json_string_value(p));
        }
        json_array_append_new(why, json_string(text));
    }
    if (sig->compiled == 0)
        json_array_append_new(why, json_string("the code does not compile with the change"));
    else if (sig->tests_passed == 0)
        json_array_append_new(why, json_string("the test suite fails with the change"));
    else if (sig->existing_passed == 0)
        json_array_append_new(why, json_string("the existing tests, run unmodified against the "
                                               "changed code, fail"));
    else if (sig->existing_passed == 1 && sig->regression_proven != 1)
        json_array_append_new(why, json_string("no test reproduces the production error: add a "
                                               "test that fails on the deployed code with this "
                                               "error and passes with the fix"));
    if (json_array_size(why) == 0) {
        json_decref(why);
        return NULL;
    }
    return why;
}

/* The last max bytes of a file of the fix's directory (scrubbed), or
 * NULL. */
static json_t *log_tail(attempt *a, const char *leaf, size_t max)
{
    char path[FIX_PATH_MAX + 64];
    attempt_path(path, sizeof(path), a, leaf);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = 0;
    if (buf != NULL && fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > 0 && fseek(f, size > (long)max ? size - (long)max : 0, SEEK_SET) == 0)
            n = fread(buf, 1, max, f);
    }
    fclose(f);
    json_t *out = NULL;
    if (buf != NULL && n > 0) {
        sh_buf clean;
        sh_buf_init(&clean);
        sh_scrub(port_scrubber(a->ctx), buf, n, &clean, NULL);
        if (!clean.oom) {
            size_t len = sh_utf8_truncate(clean.data, clean.len, clean.len);
            out = json_stringn(clean.data, len);
        }
        sh_buf_free(&clean);
    }
    free(buf);
    return out;
}

/* The failing step's output, for the next prompt: the last step that did
 * not pass, or the proof's words. */
static json_t *failing_output(attempt *a)
{
    static const struct {
        const char *step, *log;
    } logs[] = {
        {"compile", "compile.log"}, {"test", "test.log"}, {"existing_tests", "existing.log"}};
    size_t i;
    json_t *st;
    json_array_foreach(json_object_get(a->report, "steps"), i, st)
    {
        if (json_is_true(json_object_get(st, "ok")))
            continue;
        for (size_t k = 0; k < sizeof(logs) / sizeof(logs[0]); k++)
            if (strcmp(fix_str(st, "step") ? fix_str(st, "step") : "", logs[k].step) == 0)
                return log_tail(a, logs[k].log, RETRY_OUTPUT_MAX);
    }
    const char *detail = fix_str(json_object_get(a->report, "proof"), "detail");
    return detail != NULL ? json_string(detail) : NULL;
}

static void conclude(attempt *a, const char *status, const char *why);

/* After a validation: when it found something a new attempt could mend
 * and retries are left, records the retry (its stage, and in the fix's
 * row what the next agent is told, so a restarted port tells it too),
 * clears this attempt's change and work directory and returns 1. */
static int retry(attempt *a)
{
    if (a->revalidate || a->retry_why == NULL || a->tries >= a->cfg->retries || a->ctx->stopping)
        return 0;
    json_t *output = failing_output(a);
    json_t *feedback = json_pack("{s:O, s:o?}", "reasons", a->retry_why, "output", output);
    if (feedback == NULL)
        return 0;
    a->tries++;
    fix_step(a->ctx, a->id, a->fp, "retry",
             json_pack("{s:i, s:i, s:O}", "attempt", a->tries + 1, "of", a->cfg->retries + 1,
                       "reasons", a->retry_why));
    fix_set(a->db, a->id, NULL,
            json_pack("{s:{s:i, s:O}}", "attempt", "tries", a->tries, "feedback", feedback));
    json_decref(a->feedback);
    a->feedback = feedback;
    if (a->have_diff)
        wt_diff_free(&a->diff);
    a->have_diff = 0;
    json_decref(a->report);
    json_decref(a->context);
    json_decref(a->refusals);
    json_decref(a->transcript);
    json_decref(a->retry_why);
    a->report = a->context = a->refusals = a->transcript = a->retry_why = NULL;
    a->resumed = 0;
    a->fix_commit[0] = '\0';
    a->fix_tree[0] = '\0';
    cmd_error err = {NULL, ""};
    if (work_reset(a, &err) != 0) {
        conclude(a, "failed", err.message);
        return -1;
    }
    return 1;
}

/* The whole validation; fills a->report. Returns 1 when the hard checks
 * passed, 0 when not. */
static int validate_fix(attempt *a, int *needs_human, double *confidence)
{
    validate_static vs;
    json_t *scope = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(a->context, i, f) json_array_append(scope, json_object_get(f, "path"));
    reader rd = {a->repo, a->base, a->fix_commit};
    json_t *files = wt_list_files(a->repo, a->fix_commit, FILES_MAX);
    validate_input vin = {.diff = &a->diff,
                          .scope = scope,
                          .protected_globs = a->cfg->protected_paths,
                          .test_globs = a->cfg->test_paths,
                          .refusals = a->refusals,
                          .fix_files = files,
                          .read = read_side,
                          .payload = &rd,
                          .max_lines = a->cfg->max_lines,
                          .max_bytes = a->cfg->max_bytes};
    int checked = validate_check(&vs, &vin);
    json_decref(scope);
    json_decref(files);
    json_t *steps = json_array();
    json_t *proof = NULL;
    exec_result r;
    validate_signals sig = {.compiled = -1,
                            .tests_passed = -1,
                            .existing_passed = -1,
                            .regression_proven = -1,
                            .scope_ok = checked == 0 && vs.scope_ok,
                            .size_ok = checked == 0 && vs.size_ok,
                            .protected_ok = checked == 0 && vs.protected_ok,
                            .trusted = checked == 0 && vs.refused_ok && vs.tests_kept &&
                                       vs.special_ok && vs.capabilities_ok && vs.reads_ok &&
                                       vs.tests_verified,
                            .contained = a->contained,
                            .changed_lines = checked == 0 ? vs.changed_lines : 0,
                            .max_lines = a->cfg->max_lines,
                            .agent_exit_ok = a->revalidate ? 1
                                             : a->resumed ? json_is_true(agent_record(a, "exit_ok"))
                                                          : exec_ok(&a->agent)};
    int runnable = checked == 0 && !vs.empty && vs.size_ok && vs.refused_ok;
    char dir[FIX_PATH_MAX + 64];
    cmd_error err = {NULL, ""};
    if (runnable && checkout_of(a, a->fix_commit, "fix", dir, sizeof(dir), &err) != 0) {
        json_array_append_new(steps, json_pack("{s:s, s:b, s:s}", "step", "checkout", "ok", 0,
                                               "result", err.message));
        runnable = 0;
        sig.compiled = 0;
    }
    if (runnable) {
        sig.compiled = run_in(a, a->cfg->compile_argv, a->cfg->compile_timeout_ms, dir,
                              "compile.log", &r, steps, "compile");
        if (sig.compiled != 0)
            sig.tests_passed = run_in(a, a->cfg->test_argv, a->cfg->test_timeout_ms, dir,
                                      "test.log", &r, steps, "test");
    }
    if (runnable && sig.compiled != 0 && sig.tests_passed == 1) {
        /* the base's tests, unmodified, against the fixed code */
        size_t n = 0;
        const char **paths = path_vector(vs.test_files, &n);
        char tree[WT_OID_HEX], msg[256] = "";
        if (n == 0) {
            sig.existing_passed = 1; /* the fix's tree has the base's tests */
        } else if (paths != NULL &&
                   tree_compose(tree, a->repo, a->fix_tree, a->base_tree, paths, n, msg,
                                sizeof(msg)) == 0 &&
                   checkout_of(a, tree, "existing", dir, sizeof(dir), &err) == 0) {
            sig.existing_passed = run_in(a, a->cfg->test_argv, a->cfg->test_timeout_ms, dir,
                                         "existing.log", &r, steps, "existing_tests");
        } else {
            sig.existing_passed = 0;
        }
        free(paths);
        if (sig.existing_passed == 1 && vs.has_test_change && !vs.reads_ok)
            proof = json_pack("{s:b, s:s}", "reproduced", 0, "detail",
                              "the fix's tests read production source as text: no proof");
        if (sig.existing_passed == 1)
            sig.regression_proven =
                vs.has_test_change && vs.reads_ok ? prove(a, &vs, steps, &proof) : 0;
    }
    *confidence = validate_confidence(&sig);
    a->report = validate_report(checked == 0 ? &vs : NULL, &sig, *confidence);
    json_object_set_new(a->report, "steps", steps);
    json_object_set_new(a->report, "proof", proof != NULL ? proof : json_null());
    char desc[128];
    if (a->revalidate)
        snprintf(desc, sizeof(desc), "not run (a rebased fix, validated again)");
    else if (a->resumed)
        snprintf(desc, sizeof(desc), "%s (before the port restarted)",
                 json_is_string(agent_record(a, "result"))
                     ? json_string_value(agent_record(a, "result"))
                     : "ran");
    else
        exec_describe(&a->agent, desc, sizeof(desc));
    json_object_set_new(a->report, "agent", json_string(desc));
    json_t *t = a->transcript != NULL
                    ? a->transcript
                    : json_object_get(json_object_get(a->fix, "attempt"), "transcript");
    json_object_set_new(a->report, "agent_transcript", t != NULL ? json_incref(t) : json_null());
    int passed = checked == 0 && !vs.empty && vs.size_ok && vs.refused_ok && sig.compiled != 0 &&
                 sig.tests_passed != 0 && sig.existing_passed != 0 && !a->agent.timed_out &&
                 !a->agent.overflowed && !a->agent.stopped;
    *needs_human = checked != 0 || validate_needs_human(&vs, &sig);
    json_object_set_new(a->report, "passed", json_boolean(passed));
    json_object_set_new(a->report, "needs_human", json_boolean(*needs_human));
    json_object_set_new(a->report, "why_human", why_human(checked == 0 ? &vs : NULL, &sig));
    json_object_set_new(a->report, "attempt", json_integer(a->tries + 1));
    json_decref(a->retry_why);
    a->retry_why = retry_reasons(a, checked == 0 ? &vs : NULL, &sig);
    validate_static_free(&vs);
    return passed;
}

/* The gate's facts, gathered now. */
policy_action fix_gate(port_ctx *ctx, const fix_config *cfg, state_db *db, json_t *fix, int passed,
                       int needs_human, double confidence, int slot_busy, json_t **decision)
{
    int open = 0;
    long long failures = 0;
    state_breaker_get(db, FIX_BREAKER, &open, &failures);
    char branch[WT_OID_HEX];
    int target_ok = cfg->deploy_argv != NULL && cfg->repo[0] != '\0';
    if (target_ok) {
        wt_repo *repo = NULL;
        char msg[256];
        target_ok =
            wt_repo_open(&repo, cfg->repo, msg, sizeof(msg)) == 0 &&
            wt_resolve(branch, repo, cfg->deploy_branch[0] != '\0' ? cfg->deploy_branch : NULL, msg,
                       sizeof(msg)) == 0;
        wt_repo_free(repo);
    }
    policy_input in = {
        .consent = cfg->consent,
        .severity = fix_str(fix, "severity"),
        .auto_severities = cfg->auto_severities,
        .validation_passed = passed,
        .needs_human = needs_human,
        .confidence = confidence,
        .threshold = cfg->threshold,
        .auto_deploys_last_hour = state_deploy_count(db, "deploy", 1, 3600),
        .max_auto_deploys_per_hour = cfg->max_per_hour,
        .breaker_open = open,
        .kill_switch = fix_kill_switch_on(ctx),
        .deploy_running = slot_busy,
        .target_ok = target_ok,
        .unconfined =
            !json_is_true(json_object_get(json_object_get(fix, "validation"), "sandboxed")),
    };
    service_gate_facts(ctx, db, &in); /* per service and global */
    return policy_decide(&in, decision);
}

/* "fix:<id>:<commit>" (the commit "none" before there is one): the job key
 * of one attempt's steps. */
static void attempt_key(char *out, size_t len, int64_t id, const char *commit)
{
    snprintf(out, len, "fix:%lld:%.40s", (long long)id,
             commit != NULL && commit[0] != '\0' ? commit : "none");
}

/* A stage that is a step (effect.h): the fix row's fields (stolen, may be
 * NULL; only when the status is expect, NULL: any), the stage's record and
 * the step's result (what to tell afterwards, may be NULL) commit
 * together; then the record is appended and the BEAM told. 0 recorded,
 * 1 not (the status did not match, or the step was done before), -1. */
static int commit_stage(port_ctx *ctx, state_db *db, const char *key, int64_t id, const char *fp,
                        const char *expect, json_t *row, const char *name, json_t *fields,
                        json_t *result)
{
    fields = fix_stage_fields(id, fp, name, fields);
    char action[64];
    snprintf(action, sizeof(action), "fix_%s", name);
    json_t *audit = NULL;
    effect_audit_add(&audit, action, fix_stage_record(fields));
    effect_crash_point(key, "done");
    int rc = state_txn_begin(db) == 0 ? 0 : -1;
    if (rc == 0) {
        if (row != NULL)
            rc = state_fix_set(db, id, expect, row);
        if (rc == 0)
            rc = state_effect_done(db, key, 0, result, audit);
        if (rc == 0)
            rc = state_txn_commit(db);
        else
            state_txn_rollback(db);
    }
    json_decref(row);
    json_decref(audit);
    if (rc == 0) {
        effect_flush(ctx, key);
        port_notify(ctx, "fix", fields);
    } else {
        json_decref(fields);
    }
    return rc;
}

/* What an attempt's outcome tells: the ticket's note and the message,
 * each a step of its own, so a resumed job tells what is left, once. */
static void tell_outcome(port_ctx *ctx, state_db *db, int64_t id)
{
    json_t *fix = state_fix_get(db, id);
    char job[96], key[EFFECT_KEY_MAX + 1];
    attempt_key(job, sizeof(job), id, fix_str(fix, "fix_commit"));
    effect_key(key, sizeof(key), job, "outcome");
    json_t *tell = fix != NULL ? effect_result(ctx, key) : NULL;
    const char *note = fix_str(tell, "note");
    const char *text = fix_str(tell, "notify");
    if (note != NULL && effect_key(key, sizeof(key), job, "fix_note") == 0)
        fix_ticket_note_once(ctx, fix, key, NULL, note);
    if (text != NULL && effect_key(key, sizeof(key), job, "fix_notify") == 0)
        fix_notify_once(ctx, fix, key, "fix", text, json_is_true(json_object_get(tell, "links")));
    json_decref(tell);
    json_decref(fix);
}

/* Where an attempt ends: the row (stolen), the stage (fields stolen) and
 * what to tell (stolen, may be NULL) as one step, then the telling. */
static void outcome(port_ctx *ctx, state_db *db, int64_t id, const char *fp, const char *expect,
                    json_t *row, const char *name, json_t *fields, json_t *tell)
{
    char job[96], key[EFFECT_KEY_MAX + 1];
    json_t *now = state_fix_get(db, id);
    attempt_key(job, sizeof(job), id, fix_str(now, "fix_commit"));
    json_decref(now);
    effect_key(key, sizeof(key), job, "outcome");
    if (commit_stage(ctx, db, key, id, fp, expect, row, name, fields, tell) == 0)
        tell_outcome(ctx, db, id);
    json_decref(tell);
}

/* Ends an attempt that will not deploy: status, ticket note, notification. */
static void conclude(attempt *a, const char *status, const char *why)
{
    char text[600];
    snprintf(text, sizeof(text), "SelfHeal fix %lld %s: %s", (long long)a->id, status, why);
    outcome(a->ctx, a->db, a->id, a->fp, NULL,
            json_pack("{s:s, s:{s:s}}", "status", status, "detail", "reason", why), status,
            json_pack("{s:s}", "reason", why),
            json_pack("{s:s, s:s, s:b}", "note", text, "notify", text, "links", 0));
}

/* Removes the work directory (the branch stays: it holds the fix) and
 * frees the attempt's parts. */
static void attempt_cleanup(attempt *a)
{
    if (a->work[0] != '\0')
        tree_remove(a->work);
    wt_repo_free(a->repo);
    a->repo = NULL;
    json_decref(a->context);
    json_decref(a->report);
    json_decref(a->refusals);
    json_decref(a->transcript);
    json_decref(a->retry_why);
    json_decref(a->feedback);
    a->context = a->report = a->refusals = a->transcript = a->retry_why = a->feedback = NULL;
    if (a->have_diff)
        wt_diff_free(&a->diff);
    a->have_diff = 0;
}

/* Base checkout -> prompt -> agent (sandboxed) -> the change captured and
 * committed by the port. 0 when there is a commit to validate. */
static int make_change(attempt *a)
{
    cmd_error err = {NULL, ""};
    char prompt_path[FIX_PATH_MAX + 64];
    char msg[512] = "";
    if (checkout_of(a, a->base, "agent", a->checkout, sizeof(a->checkout), &err) != 0) {
        conclude(a, "failed", err.message);
        return -1;
    }
    fix_set(a->db, a->id, NULL,
            json_pack("{s:s, s:s}", "branch", a->branch, "base_commit", a->base));
    fix_step(a->ctx, a->id, a->fp, "checkout",
             json_pack("{s:s, s:s, s:s, s:s}", "branch", a->branch, "base", a->base, "path",
                       a->checkout, "sandbox", sandboxed(a->cfg) ? "bwrap" : "none"));
    if (write_prompt(a, prompt_path, sizeof(prompt_path), &err) != 0) {
        conclude(a, "failed", err.message);
        return -1;
    }
    char record[FIX_PATH_MAX + 64];
    attempt_path(record, sizeof(record), a, "prompt.md");
    fix_step(a->ctx, a->id, a->fp, "context",
             json_pack("{s:O, s:s}", "files", a->context, "prompt", record));
    struct stat pst;
    size_t prompt_bytes = stat(prompt_path, &pst) == 0 ? (size_t)pst.st_size : 0;
    if (run_agent(a, prompt_path, prompt_bytes, &err) != 0) {
        conclude(a, "failed", err.message);
        return -1;
    }
    char desc[128];
    exec_describe(&a->agent, desc, sizeof(desc));
    json_t *t = a->transcript;
    const char *preset = a->cfg->agent.preset[0] ? a->cfg->agent.preset : "command";
    fix_step(a->ctx, a->id, a->fp, "agent",
             json_pack("{s:i, s:s, s:b, s:I, s:s, s:s, s:O?, s:O?, s:O?, s:O?}", "attempt",
                       a->tries + 1, "result", desc, "timed_out", a->agent.timed_out, "ms",
                       (json_int_t)a->agent.elapsed_ms, "sandbox",
                       sandboxed(a->cfg) ? "bwrap" : "none", "agent", preset, "turns",
                       json_object_get(t, "turns"), "usage", json_object_get(t, "usage"),
                       "is_error", json_object_get(t, "is_error"), "final",
                       json_object_get(t, "final")));
    if (t != NULL) {
        json_t *patch = json_pack("{s:O}", "transcript", t);
        state_fix_patch(a->db, a->id, "attempt", patch);
        json_decref(patch);
    }
    if (a->ctx->stopping)
        return -1; /* resumed at the next start */
    if (a->agent.timed_out || a->agent.overflowed) {
        conclude(a, "rejected",
                 a->agent.timed_out ? "the agent timed out (its sandbox was killed)"
                                    : "the agent's output passed the limit");
        return -1;
    }
    char tree[WT_OID_HEX];
    if (tree_capture(tree, &a->refusals, a->repo, a->base, a->checkout, NULL, msg, sizeof(msg)) !=
        0) {
        conclude(a, "failed", msg);
        return -1;
    }
    if (strcmp(tree, a->base_tree) == 0 && json_array_size(a->refusals) == 0) {
        conclude(a, "rejected", "the agent changed nothing");
        return -1;
    }
    const char *parents[1] = {a->base};
    if (tree_commit(a->fix_commit, a->repo, a->branch, tree, parents, 1,
                    "SelfHeal: fix proposed by the coding agent", msg, sizeof(msg)) != 0) {
        conclude(a, "failed", msg);
        return -1;
    }
    /* the commit and what a resumed attempt needs to go on from it (no
     * second agent run), in one statement */
    json_t *att = json_pack("{s:O, s:b, s:{s:b, s:s}, s:i}", "context_files", a->context,
                            "contained", a->contained, "agent", "exit_ok", exec_ok(&a->agent),
                            "result", desc, "tries", a->tries);
    if (a->transcript != NULL)
        json_object_set(att, "transcript", a->transcript);
    fix_set(a->db, a->id, NULL,
            json_pack("{s:s, s:o}", "fix_commit", a->fix_commit, "attempt", att));
    return 0;
}

/* Prepare -> the change (or the rebased commit) -> validation ->
 * delivery. */
static void run_attempt(attempt *a)
{
    cmd_error err = {NULL, ""};
    char msg[512] = "";
    if (make_dirs(a->dir, sizeof(a->dir), a->cfg->state_dir, "fixes", NULL) != 0) {
        conclude(a, "failed", "cannot create state_dir/fixes");
        return;
    }
    size_t n = strlen(a->dir);
    snprintf(a->dir + n, sizeof(a->dir) - n, "/%lld", (long long)a->id);
    if (mkdir_one(a->dir) != 0) {
        conclude(a, "failed", "cannot create the fix's directory");
        return;
    }
    if (a->cfg->sandbox_error[0] != '\0') {
        conclude(a, "failed", a->cfg->sandbox_error);
        return;
    }
    if (prepare(a, &err) != 0) {
        conclude(a, "failed", err.message);
        return;
    }
    int needs_human = 0, passed = 0, again;
    double confidence = 0.0;
    do {
        if (!a->revalidate && !a->resumed && make_change(a) != 0)
            return;
        if (tree_of(a->fix_tree, a->repo, a->fix_commit, msg, sizeof(msg)) != 0 ||
            wt_diff_commits(&a->diff, a->repo, a->base, a->fix_commit, FIX_PATCH_MAX, msg,
                            sizeof(msg)) != 0) {
            conclude(a, "failed", msg);
            return;
        }
        a->have_diff = 1;
        if (a->context == NULL) {
            /* a rebased or resumed fix: the scope is the files of its first attempt */
            json_t *first = json_object_get(json_object_get(a->fix, "attempt"), "context_files");
            a->context = json_is_array(first) ? json_incref(first) : json_array();
        }
        json_t *files = json_array();
        for (size_t i = 0; i < a->diff.n; i++)
            json_array_append_new(files,
                                  json_pack("{s:s, s:s#, s:I, s:I}", "path", a->diff.files[i].path,
                                            "status", &a->diff.files[i].status, (size_t)1, "added",
                                            (json_int_t)a->diff.files[i].added, "removed",
                                            (json_int_t)a->diff.files[i].removed));
        fix_step(a->ctx, a->id, a->fp, "change",
                 json_pack("{s:s, s:o, s:I, s:I, s:I, s:b, s:b}", "commit", a->fix_commit, "files",
                           files, "added", (json_int_t)a->diff.added, "removed",
                           (json_int_t)a->diff.removed, "bytes", (json_int_t)a->diff.bytes,
                           "rebased", a->revalidate, "resumed", a->resumed));

        passed = validate_fix(a, &needs_human, &confidence);
        if (a->ctx->stopping)
            return;
        fix_set(a->db, a->id, NULL,
                json_pack("{s:O, s:f}", "validation", a->report, "confidence", confidence));
        fix_step(a->ctx, a->id, a->fp, "validation", json_deep_copy(a->report));
        again = retry(a);
        if (again < 0)
            return;
    } while (again);

    /* the delivery is a step: its intent first (the push and the pull
     * request are found again by branch), then the delivery and its record
     * together */
    char job[96], key[EFFECT_KEY_MAX + 1];
    attempt_key(job, sizeof(job), a->id, a->fix_commit);
    if (effect_key(key, sizeof(key), job, "deliver") != 0 ||
        effect_begin(a->ctx, key, 0, NULL, NULL) == EFFECT_ERROR) {
        conclude(a, "failed", "cannot record the delivery's intent");
        return;
    }
    json_t *fix = state_fix_get(a->db, a->id);
    json_t *delivery =
        deliver_fix(a->ctx, a->cfg, fix, a->diff.patch.data ? a->diff.patch.data : "",
                    a->diff.patch.len, a->report, passed, key, &err);
    json_decref(fix);
    if (delivery == NULL) {
        conclude(a, "failed", err.message);
        return;
    }
    commit_stage(a->ctx, a->db, key, a->id, a->fp, "fixing",
                 json_pack("{s:O}", "delivery", delivery), "delivered", json_incref(delivery),
                 NULL);
    json_decref(delivery);
}

/* The gate for a delivered fix; sets the status it leads to. The decision
 * is a step: the status, its record and what it tells commit together. */
void fix_decide(port_ctx *ctx, fix_config *cfg, state_db *db, int64_t id)
{
    json_t *fix = state_fix_get(db, id);
    if (fix == NULL)
        return;
    const char *fp = fix_str(fix, "fingerprint");
    json_t *report = json_object_get(fix, "validation");
    int passed = json_is_true(json_object_get(report, "passed"));
    int needs_human = !json_is_false(json_object_get(report, "needs_human"));
    json_t *conf = json_object_get(fix, "confidence");
    double confidence = json_is_number(conf) ? json_number_value(conf) : 0.0;
    json_t *decision = NULL;
    policy_action action =
        fix_gate(ctx, cfg, db, fix, passed, needs_human, confidence, 0, &decision);
    int64_t expires = port_now() + cfg->approval_ttl_s;
    char text[512];
    json_t *row = NULL, *tell = NULL;
    switch (action) {
    case POLICY_DEPLOY:
        row = json_pack("{s:s, s:O, s:s}", "status", "approved", "decision", decision, "decided_by",
                        "gate");
        break;
    case POLICY_APPROVAL:
        row = json_pack("{s:s, s:O, s:I}", "status", "awaiting_approval", "decision", decision,
                        "approval_expires_at", (json_int_t)expires);
        snprintf(text, sizeof(text),
                 "A validated fix (confidence %.2f) waits for approval: mix self_heal.approve %lld "
                 "or mix self_heal.skip %lld",
                 confidence, (long long)id, (long long)id);
        tell = json_pack("{s:s, s:s, s:b}", "note", text, "notify", text, "links", 1);
        break;
    case POLICY_REJECT:
        row = json_pack("{s:s, s:O}", "status", "rejected", "decision", decision);
        snprintf(text, sizeof(text),
                 "The proposed fix failed validation (see the report in state_dir/fixes); a "
                 "human should look at it.");
        tell = json_pack("{s:s, s:s, s:b}", "note", text, "notify", text, "links", 0);
        break;
    default:
        row = json_pack("{s:s, s:O}", "status", "delivered", "decision", decision);
        break;
    }
    outcome(ctx, db, id, fp, "fixing", row, "gate", decision, tell);
    json_decref(fix);
}

/* Runs a fix from wherever its row says it is. */
void fix_drive(port_ctx *ctx, int64_t id, int64_t job_id)
{
    SERVICE_SCOPE_FIX(scope, ctx, id); /* the fix's service's configuration */
    fix_config cfg;
    cmd_error err = {NULL, ""};
    state_db *db = port_state(ctx);
    if (db == NULL || fix_config_load(&cfg, ctx, &err) != 0)
        return;
    if (job_id > 0 &&
        state_job_transition(db, job_id, "queued", "running", NULL, NULL, NULL) != 0) {
        fix_config_free(&cfg);
        return;
    }
    if (fix_slot_acquire(ctx, cfg.max_concurrent) != 0) {
        if (job_id > 0)
            state_job_transition(db, job_id, "running", "queued", NULL, NULL, "stopping");
        fix_config_free(&cfg);
        return;
    }
    attempt a;
    memset(&a, 0, sizeof(a));
    a.ctx = ctx;
    a.cfg = &cfg;
    a.db = db;
    a.id = id;
    a.fix = state_fix_get(db, id);
    a.fp = fix_str(a.fix, "fingerprint");
    const char *status = fix_str(a.fix, "status");
    if (a.fix != NULL && status != NULL && strcmp(status, "fixing") != 0)
        tell_outcome(ctx, db, id); /* resumed: what its outcome had left to tell */
    if (a.fix != NULL && status != NULL && strcmp(status, "fixing") == 0) {
        if (json_object_get(a.fix, "delivery") == NULL ||
            json_is_null(json_object_get(a.fix, "delivery")))
            run_attempt(&a);
        attempt_cleanup(&a);
        if (!ctx->stopping) {
            json_t *now = state_fix_get(db, id);
            const char *st = fix_str(now, "status");
            if (st != NULL && strcmp(st, "fixing") == 0 &&
                json_is_object(json_object_get(now, "delivery")))
                fix_decide(ctx, &cfg, db, id);
            json_decref(now);
        }
    }
    fix_slot_release();
    if (job_id > 0) {
        json_t *now = state_fix_get(db, id);
        const char *st = fix_str(now, "status");
        if (ctx->stopping && st != NULL && strcmp(st, "fixing") == 0)
            state_job_transition(db, job_id, "running", "queued", NULL, NULL, "stopping");
        else {
            json_t *result = json_pack("{s:s?}", "status", st);
            state_job_transition(db, job_id, "running", "done", NULL, result, NULL);
            json_decref(result);
        }
        json_decref(now);
    }
    json_decref(a.fix);
    fix_config_free(&cfg);
}

/* ------------------------------------------------------------ starting */

typedef struct drive_arg {
    port_ctx *ctx;
    int64_t id;
    int64_t job_id;
    port_pin pin; /* what the thread that started the fix had pinned */
} drive_arg;

static void *drive_thread(void *p)
{
    drive_arg *arg = p;
    port_pin_enter(&arg->pin);
    fix_drive(arg->ctx, arg->id, arg->job_id);
    port_pin_end(&arg->pin);
    free(arg);
    return NULL;
}

int fix_spawn_drive(port_ctx *ctx, int64_t id, int64_t job_id)
{
    int busy = fix_slots_full(FIX_WAITING_MAX);
    drive_arg *arg = busy ? NULL : malloc(sizeof(*arg));
    if (arg == NULL)
        return -1;
    *arg = (drive_arg){.ctx = ctx, .id = id, .job_id = job_id};
    port_pin_take(&arg->pin, ctx);
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&tid, &attr, drive_thread, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        port_pin_release(&arg->pin);
        free(arg);
        return -1;
    }
    return 0;
}

/* The fix in flight of fp, or 0. */
static int64_t fix_in_flight(state_db *db, const char *fp)
{
    json_t *active = state_fixes_list(db, NULL, fp, 10);
    int64_t id = 0;
    size_t i;
    json_t *f;
    json_array_foreach(active, i, f)
    {
        const char *st = fix_str(f, "status");
        if (id == 0 && st != NULL &&
            (strcmp(st, "fixing") == 0 || strcmp(st, "awaiting_approval") == 0 ||
             strcmp(st, "approved") == 0 || strcmp(st, "deploying") == 0 ||
             strcmp(st, "verifying") == 0))
            id = json_integer_value(json_object_get(f, "id"));
    }
    json_decref(active);
    return id;
}

/* A ticket's fix was recorded before (the step "fix:ticket:<id>/fix"): 0
 * with its ids when its job still waits to start, 1 when it started. */
static int fix_recorded(state_db *db, json_t *done, int64_t *id, int64_t *job_id)
{
    *id = json_integer_value(json_object_get(done, "fix_id"));
    *job_id = json_integer_value(json_object_get(done, "job_id"));
    json_t *job = state_job_get(db, *job_id);
    const char *st = fix_str(job, "status");
    int queued = st != NULL && strcmp(st, "queued") == 0;
    json_decref(job);
    return queued ? 0 : 1;
}

/* Records a fix and its job. 0 with *id and *job_id; 1 when the fingerprint
 * already has a fix in flight (*id = that fix), or the ticket's fix was
 * started before; -1 with err. A fix started for a ticket is a step keyed
 * by the ticket: its row, its job and its record commit together, so a
 * resumed escalation starts it once. */
static int fix_create_clean(port_ctx *ctx, json_t *input, int64_t *id, int64_t *job_id,
                            cmd_error *err)
{
    const char *fp = fix_str(input, "fingerprint");
    json_t *group = json_object_get(input, "group");
    if (!fix_valid_fp(fp) || !json_is_object(group)) {
        cmd_error_set(err, "bad_args",
                      "fix needs a fingerprint ([A-Za-z0-9_-]{1,128}) and a group object");
        return -1;
    }
    if (state_ctx_ensure(ctx, err) != 0)
        return -1;
    state_db *db = port_state(ctx);
    json_t *tid = json_object_get(input, "ticket_id");
    char key[64] = "";
    if (json_is_integer(tid))
        snprintf(key, sizeof(key), "fix:ticket:%lld/fix", (long long)json_integer_value(tid));
    json_t *done = key[0] != '\0' ? effect_result(ctx, key) : NULL;
    if (done != NULL) {
        int rc = fix_recorded(db, done, id, job_id);
        json_decref(done);
        return rc;
    }
    if (key[0] != '\0')
        effect_crash_point(key, "done");
    if (state_txn_begin(db) != 0) {
        cmd_error_set(err, "state", "could not record the fix");
        return -1;
    }
    int rc = state_fix_insert(db, fp, json_is_integer(tid) ? json_integer_value(tid) : 0,
                              fix_str(input, "severity"), input, id);
    char job_key[64];
    snprintf(job_key, sizeof(job_key), "fix:%lld", (long long)*id);
    int existed = 0;
    char status[32];
    json_t *job_input = json_pack("{s:I}", "fix_id", (json_int_t)*id);
    if (rc == 0 && state_job_begin(db, "fix", job_key, job_input, job_id, &existed, status,
                                   sizeof(status)) != 0)
        rc = -1;
    json_decref(job_input);
    json_t *fields =
        fix_stage_fields(*id, fp, "started", json_pack("{s:O}", "ticket_id", fix_or_null(tid)));
    if (rc == 0 && key[0] != '\0') {
        json_t *audit = NULL;
        effect_audit_add(&audit, "fix_started", json_deep_copy(fields));
        json_t *result =
            json_pack("{s:I, s:I}", "fix_id", (json_int_t)*id, "job_id", (json_int_t)*job_id);
        rc = state_effect_done(db, key, 0, result, audit) == 0 ? 0 : -1;
        json_decref(result);
        json_decref(audit);
    }
    if (rc == 0)
        rc = state_txn_commit(db);
    else
        state_txn_rollback(db);
    if (rc != 0) {
        json_decref(fields);
        if (rc == 1) {
            *id = fix_in_flight(db, fp);
            return 1;
        }
        cmd_error_set(err, "state", "could not record the fix");
        return -1;
    }
    if (key[0] != '\0')
        effect_flush(ctx, key);
    else
        fix_audit(ctx, "fix_started", fields);
    port_notify(ctx, "fix", fields);
    return 0;
}

/* Records a fix from input scrubbed first: fixes.input and everything the
 * fix loop derives from it are at rest. */
int fix_create(port_ctx *ctx, json_t *input, int64_t *id, int64_t *job_id, cmd_error *err)
{
    json_t *clean = scrub_json(port_scrubber(ctx), input);
    int rc = fix_create_clean(ctx, clean, id, job_id, err);
    json_decref(clean);
    return rc;
}

void fix_revalidate(port_ctx *ctx, int64_t id)
{
    state_db *db = port_state(ctx);
    json_t *fix = db != NULL ? state_fix_get(db, id) : NULL;
    const char *commit = fix_str(fix, "fix_commit");
    if (commit == NULL) {
        json_decref(fix);
        return;
    }
    char key[128];
    snprintf(key, sizeof(key), "fix:%lld:%.40s", (long long)id, commit);
    int64_t job_id = 0;
    int existed = 0;
    char status[32];
    json_t *input = json_pack("{s:I}", "fix_id", (json_int_t)id);
    int rc = state_job_begin(db, "fix", key, input, &job_id, &existed, status, sizeof(status));
    json_decref(input);
    if (rc == 0 && !existed && fix_spawn_drive(ctx, id, job_id) != 0)
        state_job_transition(db, job_id, "queued", "escalated", NULL, NULL,
                             "too many fixes waiting");
    json_decref(fix);
}

int fix_severity_rank(const char *s)
{
    static const char *const names[] = {"low", "medium", "high", "critical"};
    for (int i = 0; s != NULL && i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i + 1;
    return 0;
}

static const char *severity_name(int rank)
{
    static const char *const names[] = {"low", "medium", "high", "critical"};
    return rank >= 1 && rank <= 4 ? names[rank - 1] : "low";
}

/* The severity the gate decides with: the deterministic triage's, which a
 * model's (or a caller's) may lower and never raise. triage 0 (unknown):
 * the model's word alone counts only when trusted (a caller of the fix
 * command), else "low". */
const char *fix_gate_severity(const char *model, int triage, int trust_model)
{
    int m = fix_severity_rank(model);
    if (triage == 0)
        return severity_name(trust_model ? m : 1);
    return severity_name(m != 0 && m < triage ? m : triage);
}

void fix_on_ticket(port_ctx *ctx, json_t *issue, json_t *members, json_t *ticket)
{
    if (ctx->one_shot)
        return;
    fix_config cfg;
    cmd_error err = {NULL, ""};
    if (fix_config_load(&cfg, ctx, &err) != 0)
        return;
    int enabled = cfg.enabled;
    char sandbox_error[sizeof(cfg.sandbox_error)];
    snprintf(sandbox_error, sizeof(sandbox_error), "%s", cfg.sandbox_error);
    fix_config_free(&cfg);
    json_t *root = json_array_get(members, 0);
    const char *fp = fix_str(root, "fingerprint");
    if (fp == NULL)
        fp = fix_str(root, "id");
    if (!enabled || root == NULL || fp == NULL)
        return;
    if (sandbox_error[0] != '\0') {
        json_t *fields = json_pack("{s:s, s:s}", "fingerprint", fp, "reason", sandbox_error);
        fix_audit(ctx, "fix_not_started", fields);
        port_notify(ctx, "fix_not_started", fields);
        return;
    }
    /* the triage's severity of the cascade: the highest of its groups */
    int triage = 0;
    size_t k;
    json_t *m;
    json_array_foreach(members, k, m)
    {
        int r = fix_severity_rank(fix_str(m, "severity"));
        if (r > triage)
            triage = r;
    }
    const char *model = fix_str(issue, "severity");
    json_t *input = json_pack(
        "{s:s, s:s, s:s?, s:s?, s:O, s:O, s:O}", "fingerprint", fp, "severity",
        fix_gate_severity(model, triage, 0), "model_severity", model, "triage_severity",
        triage ? severity_name(triage) : NULL, "ticket_id",
        json_object_get(ticket, "ticket_id") ? json_object_get(ticket, "ticket_id") : json_null(),
        "root_cause",
        json_object_get(issue, "root_cause") ? json_object_get(issue, "root_cause") : json_null(),
        "group", root);
    int64_t id = 0, job_id = 0;
    if (input != NULL && fix_create(ctx, input, &id, &job_id, &err) == 0 &&
        fix_spawn_drive(ctx, id, job_id) != 0)
        state_job_transition(port_state(ctx), job_id, "queued", "escalated", NULL, NULL,
                             "too many fixes waiting");
    json_decref(input);
}

void fix_resume(port_ctx *ctx, json_t *job)
{
    const char *kind = fix_str(job, "kind");
    const char *status = fix_str(job, "status");
    json_t *full = state_job_get(port_state(ctx), json_integer_value(json_object_get(job, "id")));
    json_t *fix_id = json_object_get(json_object_get(full, "input"), "fix_id");
    int64_t job_id = json_integer_value(json_object_get(job, "id"));
    if (kind == NULL || status == NULL || !json_is_integer(fix_id)) {
        json_decref(full);
        return;
    }
    int64_t id = json_integer_value(fix_id);
    state_db *db = port_state(ctx);
    if (strcmp(kind, "fix") == 0 && strcmp(status, "queued") == 0) {
        fix_step(ctx, id, "", "resumed", json_pack("{s:I}", "job_id", (json_int_t)job_id));
        if (fix_spawn_drive(ctx, id, job_id) != 0)
            fix_drive(ctx, id, job_id);
    } else if (strcmp(kind, "deploy") == 0 || strcmp(status, "escalated") == 0) {
        /* a deploy cut short is not run again by itself: a human decides */
        json_t *fix = state_fix_get(db, id);
        fix_set(db, id, NULL,
                json_pack("{s:s, s:{s:s}}", "status", "escalated", "detail", "reason",
                          "the port stopped in the middle; a human must check the deploy"));
        if (fix != NULL) {
            fix_notify(ctx, fix, "fix", "A SelfHeal deploy was interrupted; a human must check it",
                       0);
            fix_step(ctx, id, fix_str(fix, "fingerprint"), "escalated",
                     json_pack("{s:s}", "reason", "interrupted"));
        }
        if (strcmp(status, "queued") == 0)
            state_job_transition(db, job_id, "queued", "escalated", NULL, NULL, "interrupted");
        json_decref(fix);
    }
    json_decref(full);
}
