/* Tests of port/analysis/notify.c without the network: signed links, the Slack,
 * Telegram and email payloads, the rate limiter and getUpdates parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "notify.h"
#include "self_heal/scrub.h"

#define SECRET "k3y"

/* ------------------------------------------------------------ helpers */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    if (doc == NULL) {
        print_error("bad JSON in test: %s\n", jerr.text);
        fail();
    }
    return doc;
}

static void msg_from(notify_msg *m, const char *json)
{
    json_t *doc = parse(json);
    char err[160] = "";
    int rc = notify_msg_init(m, doc, NULL, err, sizeof(err));
    json_decref(doc);
    if (rc != 0) {
        print_error("notify_msg_init: %s\n", err);
        fail();
    }
}

static const char *str_at(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    assert_non_null(s);
    return s;
}

/* The block of the given type, or NULL. */
static json_t *block(json_t *body, const char *type)
{
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(body, "blocks"), i, b)
    {
        if (strcmp(json_string_value(json_object_get(b, "type")), type) == 0)
            return b;
    }
    return NULL;
}

/* The text of the section field that starts with "*label*\n". */
static const char *field(json_t *body, const char *label)
{
    char want[64];
    snprintf(want, sizeof(want), "*%s*\n", label);
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(block(body, "section"), "fields"), i, f)
    {
        const char *t = json_string_value(json_object_get(f, "text"));
        if (t != NULL && strncmp(t, want, strlen(want)) == 0)
            return t + strlen(want);
    }
    return NULL;
}

static const char *FULL_MSG =
    "{\"kind\": \"ticket\", \"ticket_id\": 12, \"fingerprint\": \"fp0123\","
    " \"severity\": \"critical\", \"service\": \"api\","
    " \"error\": \"DBConnection <error> & friends\\nsecond line\", \"path\": \"lib/db.ex:42\","
    " \"count\": 31, \"url\": \"https://tickets.example/12\", \"action_id\": \"deploy-42\"}";

/* ------------------------------------------------------------ signed links */

static void test_sign_known_answer(void **state)
{
    (void)state;
    char tok[256];
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "approve", "deploy-42", 1700000000), 0);
    /* HMAC-SHA256("k3y", "approve|deploy-42|1700000000"), computed with
     * Python's hmac module. */
    assert_string_equal(tok, "approve.deploy-42.1700000000."
                             "8a2037d6da85c3f4a1285cea01702e2dd4c2e3d621da40765b93b35e526982c7");
}

static void test_verify_valid_and_expired(void **state)
{
    (void)state;
    char tok[256], action[16], id[65];
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "skip", "a_B-9", 1000), 0);
    assert_int_equal(notify_verify(tok, SECRET, 999, action, sizeof(action), id, sizeof(id)), 0);
    assert_string_equal(action, "skip");
    assert_string_equal(id, "a_B-9");
    assert_int_equal(notify_verify(tok, SECRET, 1000, action, sizeof(action), id, sizeof(id)), 1);
    assert_int_equal(notify_verify(tok, SECRET, 5000, action, sizeof(action), id, sizeof(id)), 1);
    /* another secret: bad signature, whatever the time */
    assert_int_equal(notify_verify(tok, "other", 5000, action, sizeof(action), id, sizeof(id)), -1);
    assert_int_equal(notify_verify(tok, "", 1, action, sizeof(action), id, sizeof(id)), -1);
    /* out buffers too small */
    assert_int_equal(notify_verify(tok, SECRET, 1, action, 4, id, sizeof(id)), -1);
    assert_int_equal(notify_verify(tok, SECRET, 1, action, sizeof(action), id, 5), -1);
}

static void test_verify_tampered(void **state)
{
    (void)state;
    char tok[256], bad[300], action[16], id[65];
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "approve", "job7", 2000), 0);
    const char *hex = strrchr(tok, '.') + 1;
    /* action swapped, id changed, expiry moved, one hex digit changed */
    snprintf(bad, sizeof(bad), "skip%s", tok + strlen("approve"));
    assert_int_equal(notify_verify(bad, SECRET, 1, action, sizeof(action), id, sizeof(id)), -1);
    snprintf(bad, sizeof(bad), "approve.job8.2000.%s", hex);
    assert_int_equal(notify_verify(bad, SECRET, 1, action, sizeof(action), id, sizeof(id)), -1);
    snprintf(bad, sizeof(bad), "approve.job7.9000.%s", hex);
    assert_int_equal(notify_verify(bad, SECRET, 1, action, sizeof(action), id, sizeof(id)), -1);
    snprintf(bad, sizeof(bad), "%s", tok);
    char *last = bad + strlen(bad) - 1;
    *last = *last == '0' ? '1' : '0';
    assert_int_equal(notify_verify(bad, SECRET, 1, action, sizeof(action), id, sizeof(id)), -1);
    /* a tampered, expired token is a bad signature, not "expired" */
    assert_int_equal(notify_verify(bad, SECRET, 9999, action, sizeof(action), id, sizeof(id)), -1);
    /* format errors */
    const char *malformed[] = {
        "",
        "approve",
        "approve.job7.2000",
        "approve.job7.02000.0000000000000000000000000000000000000000000000000000000000000000",
        "approve.job7.2000.abc",
        "approve.job7.2000.x.y",
        "approve.jo b7.2000.0000000000000000000000000000000000000000000000000000000000000000",
        "delete.job7.2000.0000000000000000000000000000000000000000000000000000000000000000",
        "approve..2000.0000000000000000000000000000000000000000000000000000000000000000",
        "approve.job7.-2000.0000000000000000000000000000000000000000000000000000000000000000",
    };
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
        assert_int_equal(
            notify_verify(malformed[i], SECRET, 1, action, sizeof(action), id, sizeof(id)), -1);
    /* the hex in upper case is not the canonical token */
    snprintf(bad, sizeof(bad), "%s", tok);
    for (char *p = strrchr(bad, '.') + 1; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_int_equal(notify_verify(bad, SECRET, 1, action, sizeof(action), id, sizeof(id)), -1);
    /* longer than 256 bytes */
    char longtok[400];
    memset(longtok, 'a', sizeof(longtok) - 1);
    longtok[sizeof(longtok) - 1] = '\0';
    assert_int_equal(notify_verify(longtok, SECRET, 1, action, sizeof(action), id, sizeof(id)), -1);
}

static void test_sign_rejects_bad_input(void **state)
{
    (void)state;
    char tok[256], small[40];
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "approve", "a.b", 1), -1);
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "approve", "", 1), -1);
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "approve", "a|b", 1), -1);
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "merge", "ab", 1), -1);
    assert_int_equal(notify_sign(tok, sizeof(tok), "", "approve", "ab", 1), -1);
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "approve", "ab", -1), -1);
    char id65[66];
    memset(id65, 'x', 65);
    id65[65] = '\0';
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "approve", id65, 1), -1);
    id65[64] = '\0';
    assert_int_equal(notify_sign(tok, sizeof(tok), SECRET, "approve", id65, 1), 0);
    assert_int_equal(notify_sign(small, sizeof(small), SECRET, "approve", "ab", 1), -1);
    assert_string_equal(small, "");
}

/* ------------------------------------------------------------ rate limit */

static void test_rate_limiter(void **state)
{
    (void)state;
    notify_bucket b = {0};
    /* 2 a minute: a burst of 2, then one every 30 s */
    assert_int_equal(notify_rate_take(&b, 2, 100.0), 1);
    assert_int_equal(notify_rate_take(&b, 2, 100.0), 1);
    assert_int_equal(notify_rate_take(&b, 2, 100.0), 0);
    assert_int_equal(notify_rate_take(&b, 2, 129.0), 0);
    assert_int_equal(notify_rate_take(&b, 2, 130.5), 1);
    assert_int_equal(notify_rate_take(&b, 2, 130.5), 0);
    /* the clock going back adds nothing */
    assert_int_equal(notify_rate_take(&b, 2, 50.0), 0);
    /* a long pause refills to the capacity only */
    assert_int_equal(notify_rate_take(&b, 2, 10000.0), 1);
    assert_int_equal(notify_rate_take(&b, 2, 10000.0), 1);
    assert_int_equal(notify_rate_take(&b, 2, 10000.0), 0);

    notify_bucket slow = {0};
    assert_int_equal(notify_rate_take(&slow, 0.5, 0.0), 1);
    assert_int_equal(notify_rate_take(&slow, 0.5, 60.0), 0);
    assert_int_equal(notify_rate_take(&slow, 0.5, 120.0), 1);

    notify_bucket off = {0};
    for (int i = 0; i < 1000; i++)
        assert_int_equal(notify_rate_take(&off, 0, 1.0), 1);
}

/* A service's bucket and the global one: a token of both or of neither. */
static void test_rate_limiter_per_service_and_global(void **state)
{
    (void)state;
    notify_bucket global = {0}, shop = {0}, billing = {0};
    /* global 3 a minute, shop 1, billing 5 */
    assert_int_equal(notify_rate_take_both(&global, 3, &shop, 1, 100.0), 1);
    /* shop's own is empty: refused, and the global token is not spent */
    assert_int_equal(notify_rate_take_both(&global, 3, &shop, 1, 100.0), 0);
    assert_int_equal(notify_rate_take_both(&global, 3, &billing, 5, 100.0), 1);
    assert_int_equal(notify_rate_take_both(&global, 3, &billing, 5, 100.0), 1);
    /* the global one is empty: billing is refused with room of its own */
    assert_int_equal(notify_rate_take_both(&global, 3, &billing, 5, 100.0), 0);
    assert_true(billing.tokens >= 2.0);
    /* a minute later: shop's one token again */
    assert_int_equal(notify_rate_take_both(&global, 3, &shop, 1, 160.0), 1);
    assert_int_equal(notify_rate_take_both(&global, 3, &shop, 1, 160.0), 0);
    /* no own bucket, or no limit of its own: the global one alone */
    assert_int_equal(notify_rate_take_both(&global, 3, NULL, 0, 160.0), 1);
    assert_int_equal(notify_rate_take_both(&global, 3, &shop, 0, 160.0), 1);
    assert_int_equal(notify_rate_take_both(&global, 3, &shop, 0, 160.0), 0);
    assert_int_equal(notify_rate_take_both(&global, 0, &shop, 0, 160.0), 1);
}

/* ------------------------------------------------------------ the message */

static void test_msg_fields_cleaned(void **state)
{
    (void)state;
    notify_msg m;
    msg_from(&m,
             "{\"service\": \"api\\r\\nX-Evil: 1\", \"error\": \"  line1\\r\\nline2\\u0007\\n\","
             " \"ticket_id\": 7, \"count\": -3, \"severity\": \"\","
             " \"password\": \"not a field\"}");
    assert_string_equal(m.service, "api  X-Evil: 1");
    assert_string_equal(m.error, "line1\nline2");
    assert_string_equal(m.ticket_id, "7");
    assert_int_equal(m.count, -1);
    assert_null(m.severity); /* empty is absent */
    assert_null(m.kind);
    assert_string_equal(m.action_id, "");
    notify_msg_free(&m);

    /* the error is bounded (2000 bytes), cut at a code point with an ellipsis */
    char big[6000];
    size_t n = 0;
    n += (size_t)snprintf(big, sizeof(big), "{\"error\": \"");
    for (int i = 0; i < 1500; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "\xc3\xa9");
    snprintf(big + n, sizeof(big) - n, "\"}");
    msg_from(&m, big);
    size_t len = strlen(m.error);
    assert_true(len <= 2000);
    assert_true(len >= 1990);
    assert_memory_equal(m.error + len - 3, "\xE2\x80\xA6", 3);
    assert_int_equal((unsigned char)m.error[len - 4], 0xa9);
    notify_msg_free(&m);
}

static void test_msg_scrubbed(void **state)
{
    (void)state;
    notify_msg m;
    msg_from(&m, "{\"error\": \"login failed password=hunter2secret for bob@example.com\","
                 " \"path\": \"Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123\"}");
    assert_null(strstr(m.error, "hunter2secret"));
    assert_null(strstr(m.error, "bob@example.com"));
    assert_null(strstr(m.path, "abcdefghijklmnopqrstuvwxyz0123"));
    assert_non_null(strstr(m.error, "login failed"));
    notify_msg_free(&m);
}

static void test_msg_rejects_bad_fields(void **state)
{
    (void)state;
    const char *bad[] = {
        "[]",
        "{\"action_id\": \"has space\"}",
        "{\"action_id\": \"a.b\"}",
        "{\"action_id\": 5}",
        "{\"action_id\": \"a\\u0000b\"}",
        "{\"service\": {\"x\": 1}}",
        "{\"error\": [1]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *doc = json_loads(bad[i], JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
        assert_non_null(doc);
        notify_msg m;
        char err[160] = "";
        assert_int_equal(notify_msg_init(&m, doc, NULL, err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
        json_decref(doc);
    }
}

static void test_msg_ticket_url_checked(void **state)
{
    (void)state;
    const char *dropped[] = {
        "{\"url\": \"https://user:pw@tickets.example/1\"}",
        "{\"url\": \"https://tickets.example/1|click here\"}",
        "{\"url\": \"javascript:alert(1)\"}",
        "{\"url\": \"https://tickets.example/a b\"}",
        "{\"url\": \"https://tickets.example/?token=ghp_abcdefghijklmnopqrstuvwxyz0123456789\"}",
    };
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++) {
        notify_msg m;
        msg_from(&m, dropped[i]);
        if (m.url != NULL)
            print_error("kept %s\n", m.url);
        assert_null(m.url);
        notify_msg_free(&m);
    }
    notify_msg m;
    msg_from(&m, "{\"url\": \"https://github.com/o/r/issues/12\"}");
    assert_string_equal(m.url, "https://github.com/o/r/issues/12");
    notify_msg_free(&m);
}

static void test_links(void **state)
{
    (void)state;
    notify_msg m;
    msg_from(&m, FULL_MSG);
    assert_int_equal(notify_msg_set_links(&m, "https://ops.example/self_heal/", SECRET, 1000, 60),
                     0);
    assert_non_null(m.approve_url);
    assert_int_equal(m.links_expire, 1060);
    const char *prefix = "https://ops.example/self_heal/approve?t=";
    assert_int_equal(strncmp(m.approve_url, prefix, strlen(prefix)), 0);
    char action[16], id[65];
    assert_int_equal(notify_verify(m.approve_url + strlen(prefix), SECRET, 1059, action,
                                   sizeof(action), id, sizeof(id)),
                     0);
    assert_string_equal(action, "approve");
    assert_string_equal(id, "deploy-42");
    const char *skip_prefix = "https://ops.example/self_heal/skip?t=";
    assert_int_equal(strncmp(m.skip_url, skip_prefix, strlen(skip_prefix)), 0);
    assert_int_equal(notify_verify(m.skip_url + strlen(skip_prefix), SECRET, 1059, action,
                                   sizeof(action), id, sizeof(id)),
                     0);
    assert_string_equal(action, "skip");
    /* no secret or no base: no links; a bad base: an error */
    notify_msg_free(&m);
    msg_from(&m, FULL_MSG);
    assert_int_equal(notify_msg_set_links(&m, "https://ops.example", NULL, 1000, 60), 0);
    assert_null(m.approve_url);
    assert_int_equal(notify_msg_set_links(&m, "", SECRET, 1000, 60), 0);
    assert_null(m.approve_url);
    assert_int_equal(notify_msg_set_links(&m, "ftp://ops.example", SECRET, 1000, 60), -1);
    assert_int_equal(notify_msg_set_links(&m, "https://ops.example/?x=1", SECRET, 1000, 60), -1);
    assert_null(m.approve_url);
    notify_msg_free(&m);
}

/* ------------------------------------------------------------ Slack */

static void test_slack_blocks(void **state)
{
    (void)state;
    notify_msg m;
    msg_from(&m, FULL_MSG);
    assert_int_equal(notify_msg_set_links(&m, "https://ops.example/sh", SECRET, 1000, 3600), 0);
    json_t *body = notify_slack_body(&m);
    assert_non_null(body);
    assert_non_null(strstr(str_at(body, "text"), "critical"));
    assert_non_null(strstr(str_at(body, "text"), "DBConnection &lt;error&gt; &amp; friends"));
    json_t *header = block(body, "header");
    assert_non_null(header);
    const char *htext = str_at(json_object_get(header, "text"), "text");
    assert_non_null(strstr(htext, "[CRITICAL]"));
    assert_non_null(strstr(htext, "api"));
    assert_string_equal(str_at(json_object_get(header, "text"), "type"), "plain_text");

    assert_string_equal(field(body, "Service"), "api");
    assert_string_equal(field(body, "Error"),
                        "DBConnection &lt;error&gt; &amp; friends\nsecond line");
    assert_string_equal(field(body, "Path"), "lib/db.ex:42");
    assert_string_equal(field(body, "Count"), "31");
    assert_string_equal(field(body, "Ticket"), "<https://tickets.example/12|#12>");

    json_t *actions = block(body, "actions");
    assert_non_null(actions);
    json_t *buttons = json_object_get(actions, "elements");
    assert_int_equal(json_array_size(buttons), 2);
    json_t *approve = json_array_get(buttons, 0), *skip = json_array_get(buttons, 1);
    assert_string_equal(str_at(approve, "type"), "button");
    assert_string_equal(str_at(json_object_get(approve, "text"), "text"), "Approve");
    assert_string_equal(str_at(approve, "style"), "primary");
    assert_string_equal(str_at(approve, "url"), m.approve_url);
    assert_string_equal(str_at(json_object_get(skip, "text"), "text"), "Skip");
    assert_string_equal(str_at(skip, "url"), m.skip_url);
    json_decref(body);

    /* without links: no buttons */
    notify_msg_free(&m);
    msg_from(&m, FULL_MSG);
    body = notify_slack_body(&m);
    assert_null(block(body, "actions"));
    json_decref(body);
    notify_msg_free(&m);
}

/* The service's owners in every channel, scrubbed; a Slack member id is
 * mentioned as Slack expects, any other owner shown as text. */
static void test_owners_shown(void **state)
{
    (void)state;
    sh_scrubber *scrub = NULL;
    char err[160] = "";
    assert_int_equal(sh_scrubber_new(&scrub, NULL, 0, err, sizeof(err)), 0);
    json_t *doc = parse(FULL_MSG);
    json_object_set_new(doc, "owners",
                        parse("[\"@alice\", \"U024BE7LH\", \"@W0ABC12\", \"<b>&co\","
                              " \"bob@example.com\", \"\", 7]"));
    notify_msg m;
    assert_int_equal(notify_msg_init(&m, doc, scrub, err, sizeof(err)), 0);
    json_decref(doc);
    assert_int_equal(m.n_owners, 5);

    json_t *slack = notify_slack_body(&m);
    const char *owners = field(slack, "Owners");
    assert_non_null(owners);
    assert_non_null(strstr(owners, "@alice, <@U024BE7LH>, <@W0ABC12>, &lt;b&gt;&amp;co, "));
    /* scrubbed like every other field */
    assert_null(strstr(owners, "bob@example.com"));
    json_decref(slack);

    json_t *tg = notify_telegram_body(&m, "1");
    const char *text = str_at(tg, "text");
    assert_non_null(strstr(text, "Owners: @alice, U024BE7LH, @W0ABC12, <b>&co, "));
    assert_null(strstr(text, "bob@example.com"));
    json_decref(tg);

    sh_buf mail;
    sh_buf_init(&mail);
    const char *to[] = {"ops@example.com"};
    assert_int_equal(notify_email_build(&mail, &m, "sh@example.com", to, 1, 1000, "<x@y>"), 0);
    sh_buf_append_byte(&mail, '\0');
    assert_non_null(strstr(mail.data, "Owners: @alice, U024BE7LH"));
    sh_buf_free(&mail);
    notify_msg_free(&m);

    /* without owners: no line, no field */
    msg_from(&m, FULL_MSG);
    slack = notify_slack_body(&m);
    assert_null(field(slack, "Owners"));
    json_decref(slack);
    tg = notify_telegram_body(&m, "1");
    assert_null(strstr(str_at(tg, "text"), "Owners"));
    json_decref(tg);
    notify_msg_free(&m);
    sh_scrubber_free(scrub);
}

static void test_slack_bounds(void **state)
{
    (void)state;
    /* an error of 2000 '<' is cut to 300 bytes before escaping: every
     * field stays under Slack's 2000 characters; header under 150 */
    char big[8000];
    size_t n = (size_t)snprintf(big, sizeof(big), "{\"service\": \"");
    for (int i = 0; i < 300; i++)
        big[n++] = 's';
    n += (size_t)snprintf(big + n, sizeof(big) - n, "\", \"error\": \"");
    for (int i = 0; i < 2000; i++)
        big[n++] = '<';
    snprintf(big + n, sizeof(big) - n, "\"}");
    notify_msg m;
    msg_from(&m, big);
    json_t *body = notify_slack_body(&m);
    assert_non_null(body);
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(block(body, "section"), "fields"), i, f)
    {
        assert_true(json_string_length(json_object_get(f, "text")) <= 2000);
    }
    assert_true(strlen(field(body, "Error")) <= 300 * 4 + 3);
    const char *htext = str_at(json_object_get(block(body, "header"), "text"), "text");
    assert_true(strlen(htext) <= 150);
    char *dump = json_dumps(body, JSON_COMPACT);
    assert_null(strstr(dump, "<<"));
    free(dump);
    json_decref(body);
    notify_msg_free(&m);
}

/* ------------------------------------------------------------ Telegram */

static void test_telegram_body(void **state)
{
    (void)state;
    notify_msg m;
    msg_from(&m, FULL_MSG);
    json_t *body = notify_telegram_body(&m, "-100200");
    assert_string_equal(str_at(body, "chat_id"), "-100200");
    const char *text = str_at(body, "text");
    assert_non_null(strstr(text, "Service: api"));
    assert_non_null(strstr(text, "DBConnection <error> & friends"));
    assert_null(json_object_get(body, "parse_mode"));
    json_t *kb = json_object_get(json_object_get(body, "reply_markup"), "inline_keyboard");
    json_t *row = json_array_get(kb, 0);
    assert_int_equal(json_array_size(row), 2);
    assert_string_equal(str_at(json_array_get(row, 0), "text"), "Approve");
    assert_string_equal(str_at(json_array_get(row, 0), "callback_data"), "a:deploy-42");
    assert_string_equal(str_at(json_array_get(row, 1), "text"), "Skip");
    assert_string_equal(str_at(json_array_get(row, 1), "callback_data"), "s:deploy-42");
    json_decref(body);
    notify_msg_free(&m);

    /* a 63-byte action id does not fit callback_data: no buttons */
    char json[200];
    snprintf(json, sizeof(json), "{\"action_id\": \"%.*s\"}", 63,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    msg_from(&m, json);
    body = notify_telegram_body(&m, "1");
    assert_null(json_object_get(body, "reply_markup"));
    json_decref(body);
    notify_msg_free(&m);
}

static void test_telegram_text_bounded(void **state)
{
    (void)state;
    /* 2000-byte error lines plus a long path and service stay <= 4096 */
    notify_msg m;
    msg_from(&m, "{\"service\": \"s\"}");
    free(m.error);
    m.error = malloc(9001);
    memset(m.error, 'e', 9000);
    m.error[9000] = '\0';
    json_t *body = notify_telegram_body(&m, "1");
    const char *text = str_at(body, "text");
    assert_true(strlen(text) <= 4096);
    assert_true(strlen(text) >= 4090);
    assert_non_null(strstr(text, "Service: s"));
    json_decref(body);
    notify_msg_free(&m);
}

static void test_telegram_updates(void **state)
{
    (void)state;
    json_t *reply = parse(
        "{\"ok\": true, \"result\": ["
        " {\"update_id\": 500, \"message\": {\"text\": \"hi\"}},"
        " {\"update_id\": 501, \"callback_query\": {\"id\": \"cq1\", \"data\": \"a:deploy-42\","
        "   \"from\": {\"id\": 9, \"username\": \"alice\"}, \"message\": {\"chat\": {\"id\": "
        "42}}}},"
        " {\"update_id\": 503, \"callback_query\": {\"id\": \"cq2\", \"data\": \"s:job_7\","
        "   \"from\": {\"id\": 10}, \"message\": {\"chat\": {\"id\": 42}}}},"
        " {\"update_id\": 502, \"callback_query\": {\"id\": \"cq3\", \"data\": \"a:x\","
        "   \"from\": {\"id\": 11}, \"message\": {\"chat\": {\"id\": 99}}}},"
        " {\"update_id\": 504, \"callback_query\": {\"id\": \"cq4\", \"data\": \"a:bad id\","
        "   \"from\": {\"id\": 11, \"username\": \"x y\"}, \"message\": {\"chat\": {\"id\": 42}}}},"
        " {\"update_id\": \"nope\", \"callback_query\": {\"id\": \"cq5\", \"data\": \"a:z\"}}"
        "]}");
    json_t *out = NULL;
    int64_t next = 0;
    assert_int_equal(notify_telegram_updates(&out, &next, reply, 400, "42"), 0);
    assert_int_equal(next, 505);
    assert_int_equal(json_array_size(out), 4);
    json_t *e0 = json_array_get(out, 0), *e1 = json_array_get(out, 1);
    json_t *e2 = json_array_get(out, 2), *e3 = json_array_get(out, 3);
    assert_true(json_is_true(json_object_get(e0, "accepted")));
    assert_string_equal(str_at(e0, "action"), "approve");
    assert_string_equal(str_at(e0, "action_id"), "deploy-42");
    assert_string_equal(str_at(e0, "from"), "@alice");
    assert_string_equal(str_at(e0, "callback_query_id"), "cq1");
    assert_string_equal(str_at(e1, "action"), "skip");
    assert_string_equal(str_at(e1, "from"), "tg:10");
    /* another chat, bad data: answered but not accepted */
    assert_true(json_is_false(json_object_get(e2, "accepted")));
    assert_null(json_object_get(e2, "action"));
    assert_true(json_is_false(json_object_get(e3, "accepted")));
    assert_string_equal(str_at(e3, "from"), "tg:11");
    json_decref(out);

    /* without a chat filter the other chat is accepted */
    assert_int_equal(notify_telegram_updates(&out, &next, reply, 400, NULL), 0);
    assert_true(json_is_true(json_object_get(json_array_get(out, 2), "accepted")));
    json_decref(out);
    /* an offset past every update stays */
    assert_int_equal(notify_telegram_updates(&out, &next, reply, 900, "42"), 0);
    assert_int_equal(next, 900);
    json_decref(out);
    json_decref(reply);

    const char *malformed[] = {"{\"ok\": false, \"result\": []}", "{\"ok\": true}",
                               "{\"ok\": true, \"result\": {}}", "[]", "{\"result\": []}"};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        json_t *doc = json_loads(malformed[i], JSON_DECODE_ANY, NULL);
        assert_int_equal(notify_telegram_updates(&out, &next, doc, 7, NULL), -1);
        assert_null(out);
        assert_int_equal(next, 7);
        json_decref(doc);
    }
}

static void test_telegram_updates_bounded(void **state)
{
    (void)state;
    json_t *result = json_array();
    for (int i = 0; i < 150; i++)
        json_array_append_new(result, json_pack("{s:i, s:{s:s, s:s}}", "update_id", 1000 + i,
                                                "callback_query", "id", "q", "data", "a:x"));
    json_t *reply = json_pack("{s:b, s:o}", "ok", 1, "result", result);
    json_t *out = NULL;
    int64_t next = 0;
    assert_int_equal(notify_telegram_updates(&out, &next, reply, 0, NULL), 0);
    assert_int_equal(json_array_size(out), 100);
    assert_int_equal(next, 1100);
    json_decref(out);
    json_decref(reply);
}

/* ------------------------------------------------------------ a change */

/* A message with a diff of n lines "+line i <b>&```", a password in the
 * first and patch_url url (NULL: none). */
static json_t *diff_message(int n, const char *url)
{
    sh_buf d;
    sh_buf_init(&d);
    sh_buf_append_str(&d, "--- a/src/calc.py\n+++ b/src/calc.py\n+password=hunter2hunter2\n");
    for (int i = 0; i < n; i++)
        sh_buf_appendf(&d, "+line %d <b>&```\n", i);
    sh_buf_append_byte(&d, '\0');
    json_t *msg = json_pack("{s:s, s:s, s:s}", "kind", "deploy", "service", "api", "diff", d.data);
    if (url != NULL)
        json_object_set_new(msg, "patch_url", json_string(url));
    sh_buf_free(&d);
    return msg;
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_diff_cut_scrubbed_linked(void **state)
{
    (void)state;
    const char *url = "https://ops.example/self_heal/fixes/7/patch";
    json_t *doc = diff_message(200, url);
    notify_msg m;
    char err[160] = "";
    assert_int_equal(notify_msg_init(&m, doc, NULL, err, sizeof(err)), 0);
    json_decref(doc);
    assert_non_null(m.diff);
    assert_true(strlen(m.diff) <= NOTIFY_DIFF_MAX);
    assert_int_equal(m.diff_cut, 1);
    assert_null(strstr(m.diff, "hunter2hunter2"));
    assert_non_null(strstr(m.diff, "+line 0 <b>&```\n"));
    assert_string_equal(m.patch_url, url);

    /* Slack: one code block, escaped, never closed early, under 3000 */
    json_t *body = notify_slack_body(&m);
    assert_non_null(body);
    const char *change = NULL;
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(body, "blocks"), i, b)
    {
        const char *t = json_string_value(json_object_get(json_object_get(b, "text"), "text"));
        if (t != NULL && strncmp(t, "*Change*", 8) == 0)
            change = t;
    }
    assert_non_null(change);
    assert_true(strlen(change) <= 3000);
    assert_non_null(
        strstr(change, "*Change* (cut; <https://ops.example/self_heal/fixes/7/patch|full patch>)"));
    assert_non_null(strstr(change, "+line 0 &lt;b&gt;&amp;`\xE2\x80\x8B`\xE2\x80\x8B`\n"));
    assert_int_equal(count_of(change, "```"), 2);
    assert_null(strstr(change, "hunter2hunter2"));
    json_decref(body);

    /* Telegram and email: the link among the facts, the change last */
    body = notify_telegram_body(&m, "1");
    const char *text = str_at(body, "text");
    assert_non_null(strstr(text, "Full patch: https://ops.example/self_heal/fixes/7/patch\n"));
    assert_non_null(strstr(text, "Change (cut; the full patch above):\n--- a/src/calc.py\n"));
    assert_true(strlen(text) <= 4096);
    json_decref(body);
    const char *to[] = {"oncall@example.com"};
    sh_buf out;
    sh_buf_init(&out);
    assert_int_equal(
        notify_email_build(&out, &m, "selfheal@example.com", to, 1, 0, "1.x@example.com"), 0);
    sh_buf_append_byte(&out, '\0');
    assert_non_null(
        strstr(out.data, "Change (cut; the full patch above):\r\n--- a/src/calc.py\r\n"));
    assert_null(strstr(out.data, "hunter2hunter2"));
    sh_buf_free(&out);
    notify_msg_free(&m);

    /* a short change whole, linked, not said to be cut */
    doc = diff_message(2, "https://github.com/o/r/pull/3/files");
    assert_int_equal(notify_msg_init(&m, doc, NULL, err, sizeof(err)), 0);
    json_decref(doc);
    assert_int_equal(m.diff_cut, 0);
    assert_non_null(strstr(m.diff, "+line 1 <b>&```"));
    body = notify_slack_body(&m);
    char *dump = json_dumps(body, JSON_COMPACT);
    assert_non_null(strstr(dump, "*Change* (<https://github.com/o/r/pull/3/files|full patch>)"));
    assert_null(strstr(dump, "cut"));
    free(dump);
    json_decref(body);
    notify_msg_free(&m);

    /* a part given as such is cut; a link with credentials is dropped */
    doc = diff_message(2, "https://user:pw@ops.example/patch");
    json_object_set_new(doc, "diff_truncated", json_true());
    assert_int_equal(notify_msg_init(&m, doc, NULL, err, sizeof(err)), 0);
    json_decref(doc);
    assert_int_equal(m.diff_cut, 1);
    assert_null(m.patch_url);
    body = notify_telegram_body(&m, "1");
    assert_non_null(strstr(str_at(body, "text"), "Change (cut):\n"));
    assert_null(strstr(str_at(body, "text"), "Full patch"));
    json_decref(body);
    notify_msg_free(&m);
}

/* ------------------------------------------------------------ email */

static void test_email_message(void **state)
{
    (void)state;
    notify_msg m;
    msg_from(&m, FULL_MSG);
    assert_int_equal(notify_msg_set_links(&m, "https://ops.example/sh", SECRET, 1000, 3600), 0);
    const char *to[] = {"oncall@example.com", "lead@example.com"};
    sh_buf out;
    sh_buf_init(&out);
    assert_int_equal(notify_email_build(&out, &m, "selfheal@example.com", to, 2, 1700000000,
                                        "1700000000.abcd@example.com"),
                     0);
    sh_buf_append_byte(&out, '\0');
    const char *mail = out.data;
    assert_int_equal(strncmp(mail, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n", 39), 0);
    assert_non_null(strstr(mail, "\r\nFrom: <selfheal@example.com>\r\n"));
    assert_non_null(strstr(mail, "\r\nTo: <oncall@example.com>,\r\n <lead@example.com>\r\n"));
    assert_non_null(
        strstr(mail, "\r\nSubject: [SelfHeal] critical api: DBConnection <error> & friends\r\n"));
    assert_non_null(strstr(mail, "\r\nMessage-ID: <1700000000.abcd@example.com>\r\n"));
    assert_non_null(strstr(mail, "\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(strstr(mail, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
    const char *body = strstr(mail, "\r\n\r\n");
    assert_non_null(body);
    assert_non_null(strstr(body, "Service: api\r\n"));
    assert_non_null(strstr(body, "Path: lib/db.ex:42\r\n"));
    assert_non_null(strstr(body, "Count: 31\r\n"));
    assert_non_null(strstr(body, "Ticket URL: https://tickets.example/12\r\n"));
    assert_non_null(strstr(body, "Error:\r\nDBConnection <error> & friends\r\nsecond line\r\n"));
    char line[1200];
    snprintf(line, sizeof(line), "Approve: %s\r\n", m.approve_url);
    assert_non_null(strstr(body, line));
    snprintf(line, sizeof(line), "Skip: %s\r\n", m.skip_url);
    assert_non_null(strstr(body, line));
    /* every line ends in CRLF */
    for (const char *p = mail; *p; p++)
        if (*p == '\n')
            assert_true(p > mail && p[-1] == '\r');
    sh_buf_free(&out);
    notify_msg_free(&m);
}

static void test_email_header_injection(void **state)
{
    (void)state;
    notify_msg m;
    msg_from(&m, "{\"severity\": \"high\", \"service\": \"api\","
                 " \"error\": \"boom\\r\\nBcc: victim@example.org\\r\\n\\r\\nfake body\"}");
    const char *to[] = {"oncall@example.com"};
    sh_buf out;
    sh_buf_init(&out);
    assert_int_equal(notify_email_build(&out, &m, "a@example.com", to, 1, 0, "x@example.com"), 0);
    sh_buf_append_byte(&out, '\0');
    assert_int_equal(strncmp(out.data, "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n", 39), 0);
    /* the subject holds the first line only; no header line starts with Bcc */
    assert_non_null(strstr(out.data, "\r\nSubject: [SelfHeal] high api: boom\r\n"));
    char *end_of_headers = strstr(out.data, "\r\n\r\n");
    assert_non_null(end_of_headers);
    *end_of_headers = '\0';
    assert_null(strstr(out.data, "\r\nBcc:"));
    assert_null(strstr(out.data, "fake body"));
    /* the body keeps the error's lines as text */
    assert_non_null(strstr(end_of_headers + 4, "\r\nboom\r\nBcc: "));
    sh_buf_free(&out);

    /* hostile addresses are refused */
    const char *bad_to[] = {"x@example.com>\r\nBcc: y@example.org"};
    sh_buf_init(&out);
    assert_int_equal(notify_email_build(&out, &m, "a@example.com", bad_to, 1, 0, "x@y"), -1);
    assert_int_equal(notify_email_build(&out, &m, "a b@example.com", to, 1, 0, "x@y"), -1);
    assert_int_equal(notify_email_build(&out, &m, "noat", to, 1, 0, "x@y"), -1);
    assert_int_equal(notify_email_build(&out, &m, "a@example.com", to, 0, 0, "x@y"), -1);
    sh_buf_free(&out);
    notify_msg_free(&m);
}

static void test_email_encoded_subject_and_long_lines(void **state)
{
    (void)state;
    notify_msg m;
    msg_from(&m, "{\"severity\": \"high\", \"service\": \"caf\\u00e9\"}");
    free(m.error);
    m.error = malloc(3001);
    memset(m.error, 'z', 3000);
    m.error[3000] = '\0';
    const char *to[] = {"oncall@example.com"};
    sh_buf out;
    sh_buf_init(&out);
    assert_int_equal(notify_email_build(&out, &m, "a@example.com", to, 1, 0, "x@example.com"), 0);
    sh_buf_append_byte(&out, '\0');
    const char *subj = strstr(out.data, "\r\nSubject: =?UTF-8?B?");
    assert_non_null(subj);
    /* every encoded word is at most 75 characters, every line <= 998 */
    const char *line = out.data;
    while (*line) {
        const char *end = strstr(line, "\r\n");
        assert_non_null(end);
        assert_true(end - line <= 998);
        line = end + 2;
    }
    for (const char *w = strstr(subj, "=?"); w != NULL; w = strstr(w + 2, "=?")) {
        const char *e = strstr(w + 10, "?=");
        assert_non_null(e);
        assert_true(e + 2 - w <= 75);
        w = e;
    }
    sh_buf_free(&out);
    notify_msg_free(&m);
}

/* ------------------------------------------------------------ notify_send */

static void test_send_failures_audited_without_secrets(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_notify_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[256] = "";
    snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
    port_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    pthread_mutex_init(&ctx.lock, NULL);
    assert_int_equal(audit_open(&ctx.audit, path, NULL, err, sizeof(err)), 0);
    ctx.config = parse("{\"notify\": {\"channels\": [\"slack\", \"telegram\", \"bogus\"],"
                       " \"slack\": {\"webhook_url_env\": \"TEST_NOTIFY_SLACK\","
                       "  \"max_attempts\": 1},"
                       " \"telegram\": {\"token_env\": \"TEST_NOTIFY_TG_UNSET\"}}}");
    /* nothing listens on port 1: the connection is refused at once */
    setenv("TEST_NOTIFY_SLACK", "http://127.0.0.1:1/services/T0/B0/SECRETPART", 1);
    unsetenv("TEST_NOTIFY_TG_UNSET");
    json_t *msg = parse(FULL_MSG);
    json_t *res = notify_send(&ctx, msg);
    assert_non_null(res);
    json_t *slack = json_object_get(res, "slack");
    assert_true(json_is_false(json_object_get(slack, "ok")));
    assert_null(strstr(str_at(slack, "error"), "SECRETPART"));
    assert_int_equal(json_integer_value(json_object_get(slack, "attempts")), 1);
    assert_non_null(
        strstr(str_at(json_object_get(res, "telegram"), "error"), "TEST_NOTIFY_TG_UNSET"));
    assert_string_equal(str_at(json_object_get(res, "bogus"), "error"), "unknown channel");
    json_decref(res);
    json_decref(msg);
    audit_close(ctx.audit);
    json_decref(ctx.config);
    pthread_mutex_destroy(&ctx.lock);
    unsetenv("TEST_NOTIFY_SLACK");

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[2048];
    const char *channels[] = {"\"channel\":\"slack\"", "\"channel\":\"telegram\"",
                              "\"channel\":\"bogus\""};
    size_t n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        assert_true(n < 3);
        assert_non_null(strstr(line, "\"action\":\"notification_failed\""));
        assert_non_null(strstr(line, channels[n]));
        assert_non_null(strstr(line, "\"ticket_id\":\"12\""));
        assert_null(strstr(line, "SECRETPART"));
        assert_null(strstr(line, "127.0.0.1:1/services"));
        n++;
    }
    fclose(f);
    assert_int_equal(n, 3);
    unlink(path);
    snprintf(path, sizeof(path), "%s/audit.anchor", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_known_answer),
        cmocka_unit_test(test_verify_valid_and_expired),
        cmocka_unit_test(test_verify_tampered),
        cmocka_unit_test(test_sign_rejects_bad_input),
        cmocka_unit_test(test_rate_limiter),
        cmocka_unit_test(test_rate_limiter_per_service_and_global),
        cmocka_unit_test(test_msg_fields_cleaned),
        cmocka_unit_test(test_msg_scrubbed),
        cmocka_unit_test(test_msg_rejects_bad_fields),
        cmocka_unit_test(test_msg_ticket_url_checked),
        cmocka_unit_test(test_links),
        cmocka_unit_test(test_slack_blocks),
        cmocka_unit_test(test_slack_bounds),
        cmocka_unit_test(test_owners_shown),
        cmocka_unit_test(test_diff_cut_scrubbed_linked),
        cmocka_unit_test(test_telegram_body),
        cmocka_unit_test(test_telegram_text_bounded),
        cmocka_unit_test(test_telegram_updates),
        cmocka_unit_test(test_telegram_updates_bounded),
        cmocka_unit_test(test_email_message),
        cmocka_unit_test(test_email_header_injection),
        cmocka_unit_test(test_email_encoded_subject_and_long_lines),
        cmocka_unit_test(test_send_failures_audited_without_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
