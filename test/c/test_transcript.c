/* An agent's transcript read back from its output: real Claude Code
 * stream-json (test/c/data/transcript, written by Claude Code 2.1.332 in
 * the demo's sandbox), then what a hostile agent may print instead: secrets
 * in its text and tool input, lines over the parse limit, broken JSON,
 * invalid UTF-8, NUL bytes, thousands of entries, a forged "result", and
 * plain output from an agent that does not speak stream-json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transcript.h"

static char g_dir[64];
static char g_file[128];

static void write_bytes(const void *bytes, size_t len)
{
    FILE *f = fopen(g_file, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *text)
{
    write_bytes(text, strlen(text));
}

static json_t *entry(const transcript *t, size_t i)
{
    json_t *e = json_array_get(t->entries, i);
    assert_non_null(e);
    return e;
}

static const char *field(const transcript *t, size_t i, const char *key)
{
    const char *v = json_string_value(json_object_get(entry(t, i), key));
    assert_non_null(v);
    return v;
}

/* Every string in the transcript's JSON is valid UTF-8 and holds no NUL. */
static void assert_clean_json(const transcript *t)
{
    json_t *j = transcript_json(t);
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_non_null(s);
    json_error_t err;
    json_t *back = json_loads(s, JSON_REJECT_DUPLICATES, &err);
    assert_non_null(back);
    json_decref(back);
    free(s);
    json_decref(j);
}

static void test_real_claude_code(void **state)
{
    (void)state;
    const char *dir = getenv("SELF_HEAL_TEST_DATA");
    char path[512];
    snprintf(path, sizeof(path), "%s/transcript/claude_code_2.1.332.jsonl",
             dir != NULL ? dir : "test/c/data");
    assert_int_equal(access(path, R_OK), 0);
    transcript t;
    assert_int_equal(transcript_read(&t, path, NULL), 0);
    assert_true(t.structured);
    assert_int_equal(t.turns, 6);
    assert_false(t.is_error);
    assert_string_equal(t.final, "Fixed: an empty cart averages 0.0, with a regression test.");
    assert_int_equal(t.input_tokens, 45500);
    assert_int_equal(t.output_tokens, 401);
    assert_true(t.cost_usd > 0.18 && t.cost_usd < 0.20);

    /* Read the prompt, read + edit the source, read + edit the test, say so. */
    assert_int_equal(json_array_size(t.entries), 11);
    const char *kinds[] = {"tool", "result", "tool", "result", "tool", "result",
                           "tool", "result", "tool", "result", "text"};
    for (size_t i = 0; i < 11; i++)
        assert_string_equal(field(&t, i, "kind"), kinds[i]);
    assert_string_equal(field(&t, 0, "tool"), "Read");
    assert_non_null(strstr(field(&t, 0, "input"), "/task/prompt.md"));
    assert_string_equal(field(&t, 4, "tool"), "Edit");
    assert_non_null(strstr(field(&t, 4, "input"), "/checkout/lib/shop/pricing.ex"));
    assert_non_null(strstr(field(&t, 5, "text"), "has been updated successfully"));
    assert_false(json_is_true(json_object_get(entry(&t, 5), "is_error")));
    /* Long texts are cut to the bound. */
    for (size_t i = 0; i < 11; i++) {
        json_t *e = entry(&t, i);
        const char *k = strcmp(field(&t, i, "kind"), "tool") == 0 ? "input" : "text";
        assert_true(json_string_length(json_object_get(e, k)) <= TRANSCRIPT_TEXT_MAX);
    }
    assert_clean_json(&t);
    transcript_free(&t);
}

static void test_secrets_scrubbed(void **state)
{
    (void)state;
    write_text(
        "{\"type\":\"assistant\",\"message\":{\"content\":["
        "{\"type\":\"text\",\"text\":\"found ANTHROPIC_API_KEY=sk-ant-api03-"
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ in the env\"},"
        "{\"type\":\"tool_use\",\"name\":\"Bash\",\"input\":{\"command\":"
        "\"curl -H 'Authorization: Bearer ghp_abcdefghijklmnopqrstuvwxyz0123456789' x\"}}]}}\n"
        "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"is_error\":true,"
        "\"content\":[{\"type\":\"text\",\"text\":\"password=hunter2hunter2\"}]}]}}\n"
        "{\"type\":\"result\",\"is_error\":true,\"num_turns\":2,"
        "\"result\":\"key sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ\"}\n");
    transcript t;
    assert_int_equal(transcript_read(&t, g_file, NULL), 0);
    json_t *j = transcript_json(&t);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_non_null(s);
    assert_null(strstr(s, "sk-ant-api03"));
    assert_null(strstr(s, "ghp_abc"));
    assert_null(strstr(s, "hunter2"));
    assert_non_null(strstr(s, "[REDACTED"));
    free(s);
    json_decref(j);
    assert_true(t.is_error);
    assert_int_equal(t.turns, 2);
    assert_true(json_is_true(json_object_get(entry(&t, 2), "is_error")));
    transcript_free(&t);
}

static void test_hostile_lines(void **state)
{
    (void)state;
    /* A line over the parse limit, broken JSON, a JSON array, a string
     * "type", an object with odd field types, invalid UTF-8 and NUL bytes,
     * then one good entry. */
    size_t big = (1u << 20) + 100;
    size_t cap = big + 4096;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n = 0;
    n += (size_t)sprintf(buf + n, "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":"
                                  "\"text\",\"text\":\"");
    memset(buf + n, 'A', big);
    n += big;
    n += (size_t)sprintf(buf + n, "\"}]}}\n");
    n += (size_t)sprintf(buf + n, "{\"type\":\"assistant\",\"message\":{\"content\":[\n");
    n += (size_t)sprintf(buf + n, "[1,2,3]\n{\"type\":7}\n");
    n += (size_t)sprintf(buf + n, "{\"type\":\"assistant\",\"message\":{\"content\":\"x\"}}\n");
    n += (size_t)sprintf(buf + n, "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":"
                                  "\"tool_use\",\"name\":5,\"input\":null}]}}\n");
    n += (size_t)sprintf(buf + n, "{\"type\":\"result\",\"num_turns\":\"many\",\"usage\":"
                                  "{\"input_tokens\":\"x\"},\"total_cost_usd\":-3}\n");
    const char bad[] = "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\","
                       "\"text\":\"ok \\u0000 after\"}]}}\n\xff\xfe\0\0garbage\n"
                       "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\","
                       "\"text\":\"still here\"}]}}\n";
    memcpy(buf + n, bad, sizeof(bad) - 1);
    n += sizeof(bad) - 1;
    write_bytes(buf, n);
    free(buf);

    transcript t;
    assert_int_equal(transcript_read(&t, g_file, NULL), 0);
    assert_true(t.structured);
    assert_int_equal(t.turns, -1);
    assert_int_equal(t.input_tokens, 0);
    assert_true(t.cost_usd == 0);
    assert_int_equal(json_array_size(t.entries), 2);
    assert_string_equal(field(&t, 0, "tool"), "?");
    /* json_loadb refuses \u0000: that line is dropped, and what follows
     * the NUL bytes is still read. */
    assert_string_equal(field(&t, 1, "text"), "still here");
    assert_clean_json(&t);
    transcript_free(&t);
}

static void test_entries_capped(void **state)
{
    (void)state;
    size_t lines = 5000;
    size_t cap = lines * 128;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n = 0;
    for (size_t i = 0; i < lines; i++)
        n += (size_t)snprintf(buf + n, cap - n,
                              "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":"
                              "\"text\",\"text\":\"step %zu\"}]}}\n",
                              i);
    write_bytes(buf, n);
    free(buf);
    transcript t;
    assert_int_equal(transcript_read(&t, g_file, NULL), 0);
    assert_int_equal(json_array_size(t.entries), TRANSCRIPT_MAX_ENTRIES);
    /* The last ones are kept. */
    assert_string_equal(field(&t, TRANSCRIPT_MAX_ENTRIES - 1, "text"), "step 4999");
    assert_string_equal(field(&t, 0, "text"), "step 4800");
    transcript_free(&t);
}

static void test_text_cut_at_code_point(void **state)
{
    (void)state;
    /* 599 ASCII bytes then a 2-byte character across the 600-byte bound. */
    char line[2048];
    int n = snprintf(line, sizeof(line),
                     "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\","
                     "\"text\":\"%0599d\xc3\xa9tail\"}]}}\n",
                     0);
    assert_true(n > 0 && (size_t)n < sizeof(line));
    write_text(line);
    transcript t;
    assert_int_equal(transcript_read(&t, g_file, NULL), 0);
    assert_int_equal(strlen(field(&t, 0, "text")), 599);
    transcript_free(&t);
}

static void test_plain_output(void **state)
{
    (void)state;
    /* An agent that prints plain text: its tail, scrubbed and cleaned. */
    size_t len = 10000;
    char *buf = malloc(len);
    assert_non_null(buf);
    memset(buf, 'x', len);
    const char end[] = "token=abcdef0123456789abcdef\n\xff done\0!";
    memcpy(buf + len - sizeof(end), end, sizeof(end));
    write_bytes(buf, len);
    free(buf);
    transcript t;
    assert_int_equal(transcript_read(&t, g_file, NULL), 0);
    assert_false(t.structured);
    assert_int_equal(t.turns, -1);
    assert_int_equal(json_array_size(t.entries), 1);
    assert_string_equal(field(&t, 0, "kind"), "output");
    const char *text = field(&t, 0, "text");
    assert_true(strlen(text) <= 4096);
    assert_null(strstr(text, "abcdef0123456789"));
    assert_non_null(strstr(text, "? done?!"));
    assert_clean_json(&t);
    transcript_free(&t);
}

static void test_empty_and_missing(void **state)
{
    (void)state;
    write_text("");
    transcript t;
    assert_int_equal(transcript_read(&t, g_file, NULL), 0);
    assert_int_equal(json_array_size(t.entries), 0);
    assert_false(t.structured);
    assert_string_equal(t.final, "");
    transcript_free(&t);
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/missing", g_dir);
    assert_int_equal(transcript_read(&t, missing, NULL), 0);
    assert_int_equal(json_array_size(t.entries), 0);
    transcript_free(&t);
    transcript_free(&t); /* idempotent */
    transcript_free(NULL);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/test_transcript.XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_file, sizeof(g_file), "%s/agent.out", g_dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(g_file);
    rmdir(g_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_claude_code),       cmocka_unit_test(test_secrets_scrubbed),
        cmocka_unit_test(test_hostile_lines),          cmocka_unit_test(test_entries_capped),
        cmocka_unit_test(test_text_cut_at_code_point), cmocka_unit_test(test_plain_output),
        cmocka_unit_test(test_empty_and_missing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
