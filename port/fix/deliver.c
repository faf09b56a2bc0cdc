/*
 * Delivery of a fix (deliver.h): the dry-run patch and report, and the
 * pull request. Every text written or sent is scrubbed; the patch file is
 * scrubbed as well (the unscrubbed change stays on the fix branch), and
 * the report says how many redactions that took.
 */
#include "deliver.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fence.h"
#include "self_heal/scrub.h"
#include "ticket.h"
#include "worktree.h"

#define DELIVER_TEXT_MAX 4000

/* Scrubbed, bounded, one line of prose (newlines become spaces). */
static void append_line(sh_buf *out, const sh_scrubber *s, const char *text)
{
    if (text == NULL)
        return;
    size_t len = strlen(text);
    len = sh_utf8_truncate(text, len, DELIVER_TEXT_MAX);
    sh_buf scrubbed, clean;
    sh_buf_init(&scrubbed);
    sh_buf_init(&clean);
    sh_scrub(s, text, len, &scrubbed, NULL);
    fence_visible(&clean, scrubbed.data != NULL ? scrubbed.data : "", scrubbed.len);
    sh_buf_free(&scrubbed);
    for (size_t i = 0; i < clean.len; i++) {
        char c = clean.data[i];
        sh_buf_append_byte(out, c == '\n' || c == '\r' || c == '\t' ? ' ' : c);
    }
    sh_buf_free(&clean);
}

/* A fenced code block with a fence longer than any backtick run inside. */
static void append_block(sh_buf *out, const sh_scrubber *s, const char *text, size_t max)
{
    if (text == NULL || text[0] == '\0')
        return;
    size_t len = sh_utf8_truncate(text, strlen(text), max);
    sh_buf scrubbed, clean;
    sh_buf_init(&scrubbed);
    sh_buf_init(&clean);
    sh_scrub(s, text, len, &scrubbed, NULL);
    fence_visible(&clean, scrubbed.data != NULL ? scrubbed.data : "", scrubbed.len);
    if (scrubbed.oom)
        clean.oom = 1;
    sh_buf_free(&scrubbed);
    fence_markdown(out, NULL, clean.data, clean.len);
    if (clean.oom)
        out->oom = 1;
    sh_buf_free(&clean);
}

static const char *yes_no(json_t *v)
{
    return json_is_true(v) ? "yes" : json_is_false(v) ? "no" : "not run";
}

/* What the agent did (transcript.h): its tool calls and words, one line
 * each, in a code block; its turns, tokens and final word. */
static void append_transcript(sh_buf *out, const sh_scrubber *s, json_t *t)
{
    json_t *entries = json_object_get(t, "entries");
    if (!json_is_object(t))
        return;
    sh_buf_append_str(out, "\n### What the agent did\n\n");
    json_t *usage = json_object_get(t, "usage");
    json_t *turns = json_object_get(t, "turns");
    if (json_integer_value(turns) > 0)
        sh_buf_appendf(out, "- Turns: %lld, tokens in %lld, out %lld%s\n",
                       (long long)json_integer_value(turns),
                       (long long)json_integer_value(json_object_get(usage, "input_tokens")),
                       (long long)json_integer_value(json_object_get(usage, "output_tokens")),
                       json_is_true(json_object_get(t, "is_error")) ? " (the session failed)" : "");
    sh_buf lines;
    sh_buf_init(&lines);
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        if (i >= 60) {
            sh_buf_appendf(&lines, "... %zu more\n", json_array_size(entries) - i);
            break;
        }
        const char *kind = fix_str(e, "kind");
        const char *text = fix_str(e, "text");
        if (kind != NULL && strcmp(kind, "tool") == 0) {
            sh_buf_appendf(&lines, "> %s ", fix_str(e, "tool") ? fix_str(e, "tool") : "?");
            text = fix_str(e, "input");
        } else if (kind != NULL && strcmp(kind, "result") == 0) {
            sh_buf_append_str(&lines, "< ");
        }
        size_t n = text != NULL ? sh_utf8_truncate(text, strlen(text), 200) : 0;
        for (size_t k = 0; k < n; k++)
            sh_buf_append_byte(&lines, text[k] == '\n' || text[k] == '\r' ? ' ' : text[k]);
        sh_buf_append_byte(&lines, '\n');
    }
    sh_buf_append_byte(&lines, '\0'); /* append_block reads a C string */
    if (!lines.oom && lines.len > 1)
        append_block(out, s, lines.data, 16000);
    sh_buf_free(&lines);
    const char *final = fix_str(t, "final");
    if (final != NULL && final[0] != '\0') {
        sh_buf_append_str(out, "\nIts last word: ");
        append_line(out, s, final);
        sh_buf_append_byte(out, '\n');
    }
}

/* The Markdown text of the report (also the pull request's body). */
static void report_markdown(sh_buf *out, const sh_scrubber *s, json_t *fix, json_t *report,
                            const char *patch, size_t patch_len)
{
    json_t *input = json_object_get(fix, "input");
    json_t *group = json_object_get(input, "group");
    sh_buf_appendf(out, "## SelfHeal fix %lld\n\n",
                   (long long)json_integer_value(json_object_get(fix, "id")));
    sh_buf_append_str(out, "- Fingerprint: `");
    append_line(out, s, fix_str(fix, "fingerprint"));
    sh_buf_append_str(out, "`\n- Severity: ");
    append_line(out, s, fix_str(fix, "severity") ? fix_str(fix, "severity") : "unknown");
    json_t *tid = json_object_get(fix, "ticket_id");
    if (json_is_integer(tid))
        sh_buf_appendf(out, "\n- Ticket: #%lld", (long long)json_integer_value(tid));
    json_t *count = json_object_get(group, "count");
    if (json_is_integer(count))
        sh_buf_appendf(out, "\n- Occurrences: %lld", (long long)json_integer_value(count));
    if (fix_str(group, "service") != NULL) {
        sh_buf_append_str(out, "\n- Service: ");
        append_line(out, s, fix_str(group, "service"));
    }
    if (fix_str(group, "path") != NULL) {
        sh_buf_append_str(out, "\n- Request path: ");
        append_line(out, s, fix_str(group, "path"));
    }
    sh_buf_append_str(out, "\n\n### Error\n\n");
    append_block(out, s, fix_str(group, "message"), 2000);
    if (fix_str(input, "root_cause") != NULL) {
        sh_buf_append_str(out, "\n### Root cause (analysis)\n\n");
        append_line(out, s, fix_str(input, "root_cause"));
        sh_buf_append_str(out, "\n");
    }
    sh_buf_append_str(out, "\n### Change\n\n| file | + | - |\n|---|---|---|\n");
    size_t files = 0, added = 0, removed = 0;
    const char *p = patch;
    const char *end = patch + patch_len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > 11 && memcmp(p, "diff --git ", 11) == 0 && files < 50) {
            const char *b = NULL;
            for (size_t i = 11; i + 3 < n; i++)
                if (memcmp(p + i, " b/", 3) == 0)
                    b = p + i + 3;
            if (b != NULL) {
                if (files > 0)
                    sh_buf_appendf(out, " %zu | %zu |\n", added, removed);
                sh_buf_append_str(out, "| `");
                char path[512];
                size_t plen =
                    (size_t)(p + n - b) < sizeof(path) - 1 ? (size_t)(p + n - b) : sizeof(path) - 1;
                memcpy(path, b, plen);
                path[plen] = '\0';
                append_line(out, s, path);
                sh_buf_append_str(out, "` |");
                files++;
                added = removed = 0;
            }
        } else if (n > 0 && p[0] == '+' && !(n >= 3 && memcmp(p, "+++", 3) == 0)) {
            added++;
        } else if (n > 0 && p[0] == '-' && !(n >= 3 && memcmp(p, "---", 3) == 0)) {
            removed++;
        }
        p += n + 1;
    }
    if (files > 0)
        sh_buf_appendf(out, " %zu | %zu |\n", added, removed);
    sh_buf_append_str(out, "\n### Validation\n\n");
    sh_buf_appendf(out, "- Within scope: %s\n", yes_no(json_object_get(report, "scope_ok")));
    sh_buf_appendf(out, "- Changed lines: %lld (limit %lld)\n",
                   (long long)json_integer_value(json_object_get(report, "changed_lines")),
                   (long long)json_integer_value(json_object_get(report, "max_lines")));
    sh_buf_appendf(out, "- Protected paths untouched: %s\n",
                   yes_no(json_object_get(report, "protected_ok")));
    sh_buf_appendf(out, "- Compiles: %s\n", yes_no(json_object_get(report, "compiled")));
    sh_buf_appendf(out, "- Tests pass: %s\n", yes_no(json_object_get(report, "tests_passed")));
    sh_buf_appendf(out, "- The base's tests pass on the change: %s\n",
                   yes_no(json_object_get(report, "existing_tests_passed")));
    sh_buf_appendf(out, "- Regression test fails on the base commit: %s\n",
                   yes_no(json_object_get(report, "regression_proven")));
    sh_buf_appendf(out, "- The agent ran in the sandbox: %s\n",
                   yes_no(json_object_get(report, "sandboxed")));
    json_t *conf = json_object_get(report, "confidence");
    sh_buf_appendf(out, "- Confidence: %.2f\n",
                   json_is_number(conf) ? json_number_value(conf) : 0.0);
    json_t *oos = json_object_get(report, "out_of_scope");
    if (json_array_size(oos) > 0) {
        sh_buf_append_str(out, "- Out of scope:");
        size_t i;
        json_t *v;
        json_array_foreach(oos, i, v)
        {
            sh_buf_append_str(out, " `");
            append_line(out, s, json_string_value(v));
            sh_buf_append_str(out, "`");
        }
        sh_buf_append_str(out, "\n");
    }
    append_transcript(out, s, json_object_get(report, "agent_transcript"));
    sh_buf_append_str(out, "\nProposed by a coding agent and checked by SelfHeal; the steps' "
                           "logs are in state_dir/fixes/.\n");
}

/* The pull request of branch, reused when open, else created. */
static json_t *open_pull_request(port_ctx *ctx, const fix_config *cfg, json_t *fix,
                                 const char *body, cmd_error *err)
{
    char repo[256];
    if (ticket_github_repo(ctx, repo, sizeof(repo)) != 0) {
        cmd_error_set(err, "bad_config", "a pull request needs tickets.github.repo");
        return NULL;
    }
    const char *branch = fix_str(fix, "branch");
    char owner[128];
    const char *slash = strchr(repo, '/');
    snprintf(owner, sizeof(owner), "%.*s", (int)(slash - repo), repo);
    char path[512];
    snprintf(path, sizeof(path), "/pulls?state=open&head=%s:%s", owner, branch);
    json_t *found = NULL;
    if (ticket_github_call(ctx, "GET", path, NULL, 200, &found, err) != 0)
        return NULL;
    json_t *pr = json_array_get(found, 0);
    int reused = pr != NULL;
    if (!reused) {
        char title[200];
        snprintf(title, sizeof(title), "SelfHeal: fix %.16s", fix_str(fix, "fingerprint"));
        char base[256];
        snprintf(base, sizeof(base), "%s", cfg->deploy_branch[0] ? cfg->deploy_branch : "main");
        json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:b}", "title", title, "head", branch,
                                    "base", base, "body", body, "draft", 0);
        json_t *created = NULL;
        int rc = ticket_github_call(ctx, "POST", "/pulls", payload, 201, &created, err);
        json_decref(payload);
        json_decref(found);
        if (rc != 0)
            return NULL;
        found = json_pack("[o]", created);
        pr = json_array_get(found, 0);
    }
    json_t *num = json_object_get(pr, "number");
    const char *url = fix_str(pr, "html_url");
    json_t *out = NULL;
    if (json_is_integer(num) && url != NULL &&
        (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0))
        out = json_pack("{s:s, s:I, s:b}", "pr_url", url, "pr_number",
                        (json_int_t)json_integer_value(num), "reused", reused);
    else
        cmd_error_set(err, "bad_reply", "GitHub's pull request reply has no number or URL");
    json_decref(found);
    return out;
}

json_t *deliver_fix(port_ctx *ctx, const fix_config *cfg, json_t *fix, const char *patch,
                    size_t patch_len, json_t *report, int open_pr, const char *key, cmd_error *err)
{
    const sh_scrubber *s = port_scrubber(ctx);
    const char *fp = fix_str(fix, "fingerprint");
    char dir[FIX_PATH_MAX + 16], patch_path[FIX_PATH_MAX + 160], json_path[FIX_PATH_MAX + 160],
        md_path[FIX_PATH_MAX + 160];
    snprintf(dir, sizeof(dir), "%s/fixes", cfg->state_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        cmd_error_set(err, "io", "cannot create %s", dir);
        return NULL;
    }
    snprintf(patch_path, sizeof(patch_path), "%s/%s.patch", dir, fp);
    snprintf(json_path, sizeof(json_path), "%s/%s.report.json", dir, fp);
    snprintf(md_path, sizeof(md_path), "%s/%s.report.md", dir, fp);

    sh_buf clean;
    sh_buf_init(&clean);
    sh_scrub_stats stats = {0};
    sh_scrub(s, patch, patch_len, &clean, &stats);
    sh_buf md;
    sh_buf_init(&md);
    report_markdown(&md, s, fix, report, patch, patch_len);
    json_t *full =
        json_pack("{s:O, s:O, s:O, s:O, s:I}", "fix_id", json_object_get(fix, "id"), "fingerprint",
                  json_object_get(fix, "fingerprint"), "branch",
                  json_object_get(fix, "branch") ? json_object_get(fix, "branch") : json_null(),
                  "validation", report, "patch_redactions", (json_int_t)stats.redactions);
    char *json_text = full != NULL ? json_dumps(full, JSON_INDENT(2)) : NULL;
    json_t *out = NULL;
    if (clean.oom || md.oom || json_text == NULL ||
        fix_write_file(patch_path, clean.data ? clean.data : "", clean.len) != 0 ||
        fix_write_file(json_path, json_text, strlen(json_text)) != 0 ||
        fix_write_file(md_path, md.data ? md.data : "", md.len) != 0) {
        cmd_error_set(err, "io", "cannot write the patch and report in %s", dir);
        goto cleanup;
    }
    out = json_pack("{s:s, s:s, s:s, s:s}", "mode", "dry_run", "patch", patch_path, "report",
                    md_path, "report_json", json_path);
    if (!open_pr || cfg->remote_url[0] == '\0')
        goto cleanup;

    /* push the branch, then the pull request */
    wt_repo *repo = NULL;
    char msg[512] = "";
    wt_push_opts push = {.token = port_secret(cfg->remote_token_env),
                         .ca_file = cfg->remote_ca_file};
    if (wt_repo_open(&repo, cfg->repo, msg, sizeof(msg)) != 0 ||
        wt_push(repo, cfg->remote_url, fix_str(fix, "branch"), &push, msg, sizeof(msg)) != 0) {
        wt_repo_free(repo);
        cmd_error_set(err, "push", "pushing the fix branch failed: %s", msg);
        json_decref(out);
        out = NULL;
        goto cleanup;
    }
    wt_repo_free(repo);
    if (key != NULL)
        sh_buf_appendf(&md, "\n<!-- self-heal:job=%s -->\n", key);
    sh_buf_append_byte(&md, '\0');
    json_t *pr = open_pull_request(ctx, cfg, fix, md.data, err);
    if (pr == NULL) {
        json_decref(out);
        out = NULL;
        goto cleanup;
    }
    json_object_set_new(out, "mode", json_string("pull_request"));
    json_object_update(out, pr);
    json_decref(pr);
cleanup:
    free(json_text);
    json_decref(full);
    sh_buf_free(&md);
    sh_buf_free(&clean);
    return out;
}
