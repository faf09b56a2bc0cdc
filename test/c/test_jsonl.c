/* Tests of the json_lines decoder (c_src/jsonl.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "self_heal/jsonl.h"

/* ------------------------------------------------------------ helpers */

static void assert_slice(sh_slice s, const char *want)
{
    size_t n = strlen(want);
    if (s.len != n || memcmp(s.ptr, want, n) != 0) {
        print_error("slice \"%.*s\" (%zu bytes) != \"%s\" (%zu bytes)\n", (int)s.len, s.ptr, s.len,
                    want, n);
        fail();
    }
}

static void assert_empty(sh_slice s)
{
    assert_int_equal(s.len, 0);
    assert_non_null(s.ptr);
}

static void decode_ok(sh_jsonl_event *ev, const char *line)
{
    char err[256] = "";
    int rc = sh_jsonl_decode_line(ev, line, strlen(line), err, sizeof(err));
    if (rc != 0) {
        print_error("decode failed: %s\n  line: %s\n", err, line);
        fail();
    }
    assert_non_null(ev->doc);
}

/* Decodes and expects failure with a reason starting with `want`. */
static void decode_fail_n(const char *line, size_t len, const char *want)
{
    sh_jsonl_event ev;
    char err[256] = "";
    int rc = sh_jsonl_decode_line(&ev, line, len, err, sizeof(err));
    if (rc != -1 || strncmp(err, want, strlen(want)) != 0) {
        print_error("rc %d, reason \"%s\", wanted \"%s...\"\n", rc, err, want);
        fail();
    }
    assert_null(ev.doc);
    assert_int_equal(ev.nmeta, 0);
    assert_int_equal(ev.has_timestamp, 0);
    assert_empty(ev.message);
    sh_jsonl_event_clear(&ev); /* harmless after a failure */
}

static void decode_fail(const char *line, const char *want)
{
    decode_fail_n(line, strlen(line), want);
}

static const sh_jsonl_meta *find_meta(const sh_jsonl_event *ev, const char *key)
{
    for (size_t i = 0; i < ev->nmeta; i++)
        if (ev->meta[i].key_len == strlen(key) && strcmp(ev->meta[i].key, key) == 0)
            return &ev->meta[i];
    return NULL;
}

static void assert_meta_string(const sh_jsonl_event *ev, const char *key, const char *want)
{
    const sh_jsonl_meta *m = find_meta(ev, key);
    if (m == NULL) {
        print_error("no metadata \"%s\"\n", key);
        fail();
    }
    assert_int_equal(m->kind, SH_JSONL_STRING);
    assert_slice(m->string, want);
}

static void assert_meta_keys(const sh_jsonl_event *ev, const char *const *keys)
{
    size_t n = 0;
    while (keys[n] != NULL)
        n++;
    if (ev->nmeta != n) {
        for (size_t i = 0; i < ev->nmeta; i++)
            print_error("  meta[%zu] = %s\n", i, ev->meta[i].key);
    }
    assert_int_equal(ev->nmeta, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(ev->meta[i].key, keys[i]);
        assert_int_equal(ev->meta[i].key_len, strlen(keys[i]));
    }
}

static int64_t line_timestamp(const char *line)
{
    sh_jsonl_event ev;
    decode_ok(&ev, line);
    int64_t ts = ev.has_timestamp ? ev.timestamp_us : -1;
    sh_jsonl_event_clear(&ev);
    return ts;
}

static int64_t rfc(const char *s)
{
    int64_t us = 12345;
    if (sh_parse_rfc3339(&us, s, strlen(s)) != 0)
        return INT64_MIN;
    return us;
}

/* 2024-05-01T12:00:00Z */
#define T0 INT64_C(1714564800)
#define T0_US (T0 * 1000000)

/* ------------------------------------------------------------ lines */

static void test_next_line(void **state)
{
    (void)state;
    size_t next = 99;
    assert_int_equal(sh_jsonl_next_line("", 0, &next), 0);
    assert_int_equal(next, 0);
    assert_int_equal(sh_jsonl_next_line(NULL, 0, &next), 0);
    assert_int_equal(next, 0);

    assert_int_equal(sh_jsonl_next_line("abc\ndef", 7, &next), 3);
    assert_int_equal(next, 4);
    assert_int_equal(sh_jsonl_next_line("def", 3, &next), 3);
    assert_int_equal(next, 3);

    assert_int_equal(sh_jsonl_next_line("abc\r\ndef", 8, &next), 3);
    assert_int_equal(next, 5);
    assert_int_equal(sh_jsonl_next_line("\n", 1, &next), 0);
    assert_int_equal(next, 1);
    assert_int_equal(sh_jsonl_next_line("\r\n", 2, &next), 0);
    assert_int_equal(next, 2);
    /* a lone CR is not a line break */
    assert_int_equal(sh_jsonl_next_line("a\rb\n", 4, &next), 3);
    assert_int_equal(next, 4);
    /* the buffer length bounds the search even with a '\n' beyond it */
    assert_int_equal(sh_jsonl_next_line("ab\ncd", 2, &next), 2);
    assert_int_equal(next, 2);
}

static void test_body_iteration(void **state)
{
    (void)state;
    const char body[] = "{\"log\":\"one\",\"date\":1714564800.0}\n"
                        "\r\n"
                        "{\"log\":\"two\"}\r\n"
                        "not json\n"
                        "{\"log\":\"three\"}";
    size_t len = sizeof(body) - 1, off = 0;
    int ok = 0, empty = 0, bad = 0;
    const char *want[] = {"one", "two", "three"};
    while (off < len) {
        size_t next;
        size_t n = sh_jsonl_next_line(body + off, len - off, &next);
        sh_jsonl_event ev;
        char err[128];
        if (sh_jsonl_decode_line(&ev, body + off, n, err, sizeof(err)) == 0) {
            assert_slice(ev.message, want[ok]);
            ok++;
        } else if (strcmp(err, "empty line") == 0) {
            empty++;
        } else {
            assert_non_null(strstr(err, "invalid JSON at column"));
            bad++;
        }
        sh_jsonl_event_clear(&ev);
        assert_true(next > 0);
        off += next;
    }
    assert_int_equal(off, len);
    assert_int_equal(ok, 3);
    assert_int_equal(empty, 1);
    assert_int_equal(bad, 1);
}

/* ------------------------------------------------------------ real sources */

static void test_fluentbit_kubernetes(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"date\":1714564800.123456,\"log\":\"2024-05-01 12:00:00.123 [error] "
                   "GenServer terminating\",\"stream\":\"stderr\",\"time\":\"2024-05-01T12:00:"
                   "00.123456789Z\",\"kubernetes\":{\"pod_name\":\"api-7d9f\",\"namespace_name\":"
                   "\"prod\",\"pod_id\":\"0c1f\",\"container_name\":\"api\",\"labels\":{\"app\":"
                   "\"api-label\"},\"annotations\":{\"x\":\"y\"},\"host\":\"node-1\"}}");
    assert_slice(ev.message, "2024-05-01 12:00:00.123 [error] GenServer terminating");
    assert_slice(ev.service, "api");
    assert_empty(ev.level);
    assert_empty(ev.type);
    assert_empty(ev.stacktrace);
    assert_true(ev.has_timestamp);
    assert_int_equal(ev.timestamp_us, T0_US + 123456);
    /* "time" was not needed for the timestamp: it stays metadata */
    const char *keys[] = {"stream",
                          "time",
                          "kubernetes.pod_name",
                          "kubernetes.namespace_name",
                          "kubernetes.pod_id",
                          "kubernetes.host",
                          NULL};
    assert_meta_keys(&ev, keys);
    assert_meta_string(&ev, "stream", "stderr");
    assert_meta_string(&ev, "kubernetes.pod_name", "api-7d9f");
    assert_meta_string(&ev, "kubernetes.namespace_name", "prod");
    sh_jsonl_event_clear(&ev);
}

static void test_fluentbit_kubernetes_labels_app(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    /* no container_name: the label wins over container_name at the top */
    decode_ok(&ev, "{\"log\":\"x\",\"container_name\":\"top\",\"kubernetes\":{\"labels\":{\"app."
                   "kubernetes.io/name\":\"wrong\",\"app\":\"billing\"}}}");
    assert_slice(ev.service, "billing");
    assert_meta_string(&ev, "container_name", "top");
    sh_jsonl_event_clear(&ev);
}

static void test_ecs_firelens(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"container_id\":\"5a3b\",\"container_name\":\"/ecs-api-12-api-e4d2\","
                   "\"source\":\"stderr\",\"log\":\"panic: runtime error\",\"ecs_cluster\":"
                   "\"prod\",\"ecs_task_arn\":\"arn:aws:ecs:eu-west-1:1:task/prod/abc\","
                   "\"ecs_task_definition\":\"api:12\"}");
    assert_slice(ev.message, "panic: runtime error");
    assert_slice(ev.service, "/ecs-api-12-api-e4d2");
    assert_false(ev.has_timestamp);
    const char *keys[] = {"container_id",        "source", "ecs_cluster", "ecs_task_arn",
                          "ecs_task_definition", NULL};
    assert_meta_keys(&ev, keys);
    sh_jsonl_event_clear(&ev);

    decode_ok(&ev, "{\"source\":\"stdout\",\"log\":\"x\",\"ecs_task_definition\":\"api:12\"}");
    assert_slice(ev.service, "api:12");
    sh_jsonl_event_clear(&ev);
}

static void test_systemd(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"date\":1714564800,\"PRIORITY\":\"3\",\"SYSLOG_IDENTIFIER\":\"api\","
                   "\"_PID\":\"812\",\"_SYSTEMD_UNIT\":\"api.service\",\"_HOSTNAME\":\"node-1\","
                   "\"MESSAGE\":\"api.service: Main process exited, code=exited, "
                   "status=1/FAILURE\"}");
    assert_slice(ev.message, "api.service: Main process exited, code=exited, status=1/FAILURE");
    assert_slice(ev.service, "api.service");
    /* the lookup is case-sensitive and lists "priority": PRIORITY stays metadata */
    assert_empty(ev.level);
    assert_int_equal(ev.timestamp_us, T0_US);
    const char *keys[] = {"PRIORITY", "SYSLOG_IDENTIFIER", "_PID", "_HOSTNAME", NULL};
    assert_meta_keys(&ev, keys);
    sh_jsonl_event_clear(&ev);

    /* Lowercase On + Strip_Underscores On */
    decode_ok(&ev, "{\"priority\":\"3\",\"systemd_unit\":\"api.service\",\"message\":\"m\"}");
    assert_slice(ev.level, "3");
    assert_slice(ev.service, "api.service");
    sh_jsonl_event_clear(&ev);
}

static void test_logger_json_ecs_flat(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"@timestamp\":\"2024-05-01T12:00:00.123Z\",\"ecs.version\":\"8.11.0\","
                   "\"log.level\":\"error\",\"log.logger\":\"Elixir.MyApp.Worker\",\"message\":"
                   "\"** (RuntimeError) boom\",\"error.type\":\"RuntimeError\","
                   "\"error.message\":\"boom\",\"error.stack_trace\":\"** (RuntimeError) boom\\n"
                   "    lib/my_app/worker.ex:12: MyApp.Worker.run/1\\n\",\"service.name\":"
                   "\"my_app\"}");
    assert_slice(ev.message, "** (RuntimeError) boom");
    assert_slice(ev.type, "RuntimeError");
    assert_slice(ev.stacktrace,
                 "** (RuntimeError) boom\n    lib/my_app/worker.ex:12: MyApp.Worker.run/1\n");
    assert_slice(ev.level, "error");
    assert_slice(ev.service, "my_app");
    assert_int_equal(ev.timestamp_us, T0_US + 123000);
    const char *keys[] = {"ecs.version", "log.logger", "error.message", NULL};
    assert_meta_keys(&ev, keys);
    sh_jsonl_event_clear(&ev);
}

static void test_logger_json_ecs_nested(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"@timestamp\":\"2024-05-01T12:00:00.123456Z\",\"log\":{\"level\":\"error\","
                   "\"logger\":\"Elixir.MyApp\"},\"message\":\"boom\",\"error\":{\"type\":"
                   "\"ArgumentError\",\"message\":\"argument error\",\"stack_trace\":\"trace\"},"
                   "\"service\":{\"name\":\"my_app\",\"version\":\"1.2.3\"}}");
    /* "log" is an object here, so it is not the message */
    assert_slice(ev.message, "boom");
    assert_slice(ev.type, "ArgumentError");
    assert_slice(ev.stacktrace, "trace");
    assert_slice(ev.level, "error");
    assert_slice(ev.service, "my_app");
    assert_int_equal(ev.timestamp_us, T0_US + 123456);
    const char *keys[] = {"log.logger", "error.message", "service.version", NULL};
    assert_meta_keys(&ev, keys);
    sh_jsonl_event_clear(&ev);
}

static void test_pino(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"level\":50,\"time\":1714564800123,\"pid\":4242,\"hostname\":\"web-1\","
                   "\"err\":{\"type\":\"TypeError\",\"message\":\"x is undefined\",\"stack\":"
                   "\"TypeError: x is undefined\\n    at handler (/app/index.js:10:5)\"},"
                   "\"msg\":\"request failed\"}");
    assert_slice(ev.message, "request failed");
    assert_slice(ev.type, "TypeError");
    assert_slice(ev.stacktrace, "TypeError: x is undefined\n    at handler (/app/index.js:10:5)");
    /* numeric level: not a string, so it stays metadata for the caller */
    assert_empty(ev.level);
    assert_int_equal(ev.timestamp_us, T0_US + 123000);
    const char *keys[] = {"level", "pid", "hostname", "err.message", NULL};
    assert_meta_keys(&ev, keys);
    assert_int_equal(ev.meta[0].kind, SH_JSONL_INTEGER);
    assert_int_equal(ev.meta[0].integer, 50);
    assert_int_equal(ev.meta[1].integer, 4242);
    sh_jsonl_event_clear(&ev);

    /* no msg: the err message is the message */
    decode_ok(&ev, "{\"level\":50,\"err\":{\"type\":\"Error\",\"message\":\"boom\"}}");
    assert_slice(ev.message, "boom");
    sh_jsonl_event_clear(&ev);
}

static void test_structlog(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"event\":\"payment failed\",\"level\":\"error\",\"logger\":\"billing\","
                   "\"timestamp\":\"2024-05-01T12:00:00.654321Z\",\"exception\":\"Traceback (most "
                   "recent call last):\\n  File \\\"/app/pay.py\\\", line 3, in pay\\nValueError: "
                   "bad amount\",\"amount\":-1.5,\"retry\":false,\"customer\":null}");
    /* "event" is not a message key; the exception string is */
    assert_non_null(ev.message.ptr);
    assert_true(sh_slice_starts_with(ev.message, "Traceback", 9));
    assert_slice(ev.level, "error");
    assert_int_equal(ev.timestamp_us, T0_US + 654321);
    const char *keys[] = {"event", "logger", "amount", "retry", "customer", NULL};
    assert_meta_keys(&ev, keys);
    assert_int_equal(ev.meta[2].kind, SH_JSONL_REAL);
    assert_true(ev.meta[2].real == -1.5);
    assert_int_equal(ev.meta[3].kind, SH_JSONL_FALSE);
    assert_int_equal(ev.meta[4].kind, SH_JSONL_NULL);
    sh_jsonl_event_clear(&ev);
}

/* ------------------------------------------------------------ precedence */

static void test_message_precedence(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *want;
    } cases[] = {
        {"{\"MESSAGE\":\"6\",\"exception\":\"5\",\"error\":\"4\",\"msg\":\"3\",\"message\":\"2\","
         "\"log\":\"1\"}",
         "1"},
        {"{\"MESSAGE\":\"6\",\"exception\":\"5\",\"error\":\"4\",\"msg\":\"3\",\"message\":\"2\"}",
         "2"},
        {"{\"MESSAGE\":\"6\",\"exception\":\"5\",\"error\":\"4\",\"msg\":\"3\"}", "3"},
        {"{\"MESSAGE\":\"6\",\"exception\":\"5\",\"error\":\"4\"}", "4"},
        {"{\"MESSAGE\":\"6\",\"exception\":\"5\"}", "5"},
        {"{\"MESSAGE\":\"6\"}", "6"},
        /* empty strings and non-strings do not count */
        {"{\"log\":\"\",\"message\":42,\"msg\":null,\"error\":\"\",\"MESSAGE\":\"6\"}", "6"},
        {"{\"log\":{\"file\":\"/x\"},\"message\":[\"a\"],\"msg\":\"3\"}", "3"},
        /* error / exception objects */
        {"{\"error\":{\"message\":\"em\"},\"exception\":\"5\"}", "em"},
        {"{\"error\":{\"message\":\"\"},\"exception\":{\"message\":\"xm\"}}", "xm"},
        {"{\"exception\":{\"message\":\"xm\"},\"MESSAGE\":\"6\"}", "xm"},
        {"{\"exception\":{\"type\":\"E\"},\"MESSAGE\":\"6\"}", "6"},
        {"{\"error.message\":\"literal\"}", "literal"},
        {"{\"err\":\"plain\"}", "plain"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sh_jsonl_event ev;
        decode_ok(&ev, cases[i].line);
        assert_slice(ev.message, cases[i].want);
        sh_jsonl_event_clear(&ev);
    }
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"a\":1}");
    assert_empty(ev.message);
    assert_empty(ev.type);
    assert_empty(ev.stacktrace);
    assert_empty(ev.service);
    assert_empty(ev.level);
    assert_false(ev.has_timestamp);
    sh_jsonl_event_clear(&ev);
}

static void test_type_precedence(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *want;
    } cases[] = {
        {"{\"type\":\"5\",\"exception_class\":\"4\",\"error\":{\"kind\":\"3\",\"type\":\"2\"},"
         "\"exception\":{\"type\":\"1\"}}",
         "1"},
        {"{\"type\":\"5\",\"exception_class\":\"4\",\"error\":{\"kind\":\"3\",\"type\":\"2\"}}",
         "2"},
        {"{\"type\":\"5\",\"exception_class\":\"4\",\"error\":{\"kind\":\"3\"}}", "3"},
        {"{\"type\":\"5\",\"exception_class\":\"4\"}", "4"},
        {"{\"type\":\"5\"}", "5"},
        {"{\"type\":\"\",\"exception.type\":\"flat\"}", "flat"},
        {"{\"err\":{\"type\":\"6\"}}", "6"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sh_jsonl_event ev;
        decode_ok(&ev, cases[i].line);
        assert_slice(ev.type, cases[i].want);
        sh_jsonl_event_clear(&ev);
    }
}

static void test_stacktrace_precedence(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *want;
    } cases[] = {
        {"{\"error\":{\"stack\":\"6\",\"stack_trace\":\"5\"},\"exception\":{\"stacktrace\":\"4\"},"
         "\"stack_trace\":\"3\",\"stacktrace\":\"2\",\"stack\":\"1\"}",
         "1"},
        {"{\"error\":{\"stack\":\"6\",\"stack_trace\":\"5\"},\"exception\":{\"stacktrace\":\"4\"},"
         "\"stack_trace\":\"3\",\"stacktrace\":\"2\"}",
         "2"},
        {"{\"error\":{\"stack\":\"6\",\"stack_trace\":\"5\"},\"exception\":{\"stacktrace\":\"4\"},"
         "\"stack_trace\":\"3\"}",
         "3"},
        {"{\"error\":{\"stack\":\"6\",\"stack_trace\":\"5\"},\"exception\":{\"stacktrace\":\"4\"}}",
         "4"},
        {"{\"error\":{\"stack\":\"6\",\"stack_trace\":\"5\"}}", "5"},
        {"{\"error\":{\"stack\":\"6\"}}", "6"},
        {"{\"exception\":{\"stack_trace\":\"x1\",\"stack\":\"x2\"}}", "x1"},
        {"{\"exception\":{\"stack\":\"x2\"}}", "x2"},
        {"{\"error\":{\"stacktrace\":\"e3\"}}", "e3"},
        {"{\"err\":{\"stack\":\"p\"}}", "p"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sh_jsonl_event ev;
        decode_ok(&ev, cases[i].line);
        assert_slice(ev.stacktrace, cases[i].want);
        sh_jsonl_event_clear(&ev);
    }
}

static void test_service_precedence(void **state)
{
    (void)state;
    const char *names[] = {"ident",
                           "syslog_identifier",
                           "_SYSTEMD_UNIT",
                           "systemd_unit",
                           "ecs_container_name",
                           "ecs_task_definition",
                           "container_name",
                           "kubernetes.labels.app",
                           "kubernetes.container_name",
                           "application",
                           "app",
                           "service.name",
                           "service"};
    /* names[0..i] all present, as literal keys: the last one added wins */
    char line[2048];
    size_t n = sizeof(names) / sizeof(names[0]);
    for (size_t i = 0; i < n; i++) {
        size_t at = 0;
        at += (size_t)snprintf(line + at, sizeof(line) - at, "{");
        for (size_t k = 0; k <= i; k++)
            at += (size_t)snprintf(line + at, sizeof(line) - at, "%s\"%s\":\"v%zu\"", k ? "," : "",
                                   names[k], k);
        snprintf(line + at, sizeof(line) - at, "}");
        sh_jsonl_event ev;
        decode_ok(&ev, line);
        char want[16];
        snprintf(want, sizeof(want), "v%zu", i);
        assert_slice(ev.service, want);
        /* the winner is consumed, the others stay metadata */
        assert_int_equal(ev.nmeta, i);
        assert_null(find_meta(&ev, names[i]));
        sh_jsonl_event_clear(&ev);
    }
}

static void test_level_precedence(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *want;
    } cases[] = {
        {"{\"priority\":\"6\",\"loglevel\":\"5\",\"lvl\":\"4\",\"log\":{\"level\":\"3\"},"
         "\"severity\":\"2\",\"level\":\"1\"}",
         "1"},
        {"{\"priority\":\"6\",\"loglevel\":\"5\",\"lvl\":\"4\",\"log\":{\"level\":\"3\"},"
         "\"severity\":\"2\"}",
         "2"},
        {"{\"priority\":\"6\",\"loglevel\":\"5\",\"lvl\":\"4\",\"log.level\":\"3\"}", "3"},
        {"{\"priority\":\"6\",\"loglevel\":\"5\",\"lvl\":\"4\"}", "4"},
        {"{\"priority\":\"6\",\"loglevel\":\"5\"}", "5"},
        {"{\"priority\":\"6\"}", "6"},
        {"{\"level\":30,\"severity\":\"WARNING\"}", "WARNING"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sh_jsonl_event ev;
        decode_ok(&ev, cases[i].line);
        assert_slice(ev.level, cases[i].want);
        sh_jsonl_event_clear(&ev);
    }
}

static void test_dotted_lookup(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    /* a literal dotted key is looked at before the nested path */
    decode_ok(&ev, "{\"log\":{\"level\":\"nested\"},\"log.level\":\"literal\"}");
    assert_slice(ev.level, "literal");
    assert_meta_string(&ev, "log.level", "nested");
    sh_jsonl_event_clear(&ev);

    /* mixed: {"kubernetes":{"labels.app":..}} and {"kubernetes.labels":{"app":..}} */
    decode_ok(&ev, "{\"kubernetes\":{\"labels.app\":\"a1\"}}");
    assert_slice(ev.service, "a1");
    assert_int_equal(ev.nmeta, 0);
    sh_jsonl_event_clear(&ev);
    decode_ok(&ev, "{\"kubernetes.labels\":{\"app\":\"a2\"}}");
    assert_slice(ev.service, "a2");
    assert_int_equal(ev.nmeta, 0);
    sh_jsonl_event_clear(&ev);

    /* a literal spelling that is not a string does not hide the nested one */
    decode_ok(&ev, "{\"log.level\":5,\"log\":{\"level\":\"warn\"}}");
    assert_slice(ev.level, "warn");
    assert_int_equal(ev.nmeta, 1);
    assert_string_equal(ev.meta[0].key, "log.level");
    assert_int_equal(ev.meta[0].integer, 5);
    sh_jsonl_event_clear(&ev);

    /* a scalar where an object is expected does not match */
    decode_ok(&ev, "{\"exception\":\"boom\",\"kubernetes\":\"k\"}");
    assert_empty(ev.type);
    assert_empty(ev.service);
    assert_slice(ev.message, "boom");
    sh_jsonl_event_clear(&ev);
}

/* ------------------------------------------------------------ timestamps */

static void test_numeric_timestamps(void **state)
{
    (void)state;
    assert_int_equal(line_timestamp("{\"date\":1714564800}"), T0_US);
    assert_int_equal(line_timestamp("{\"date\":1714564800.5}"), T0_US + 500000);
    assert_int_equal(line_timestamp("{\"date\":1714564800.123456}"), T0_US + 123456);
    assert_int_equal(line_timestamp("{\"date\":1714564800.000001}"), T0_US + 1);
    assert_int_equal(line_timestamp("{\"time\":1714564800123}"), T0_US + 123000);
    assert_int_equal(line_timestamp("{\"time\":1714564800123.456}"), T0_US + 123456);
    assert_int_equal(line_timestamp("{\"ts\":1714564800123456}"), T0_US + 123456);
    assert_int_equal(line_timestamp("{\"ts\":1714564800123456789}"), T0_US + 123456);
    assert_int_equal(line_timestamp("{\"ts\":1.714564800123456e18}"), T0_US + 123456);
    assert_int_equal(line_timestamp("{\"ts\":1.7145648e12}"), T0_US);
    /* thresholds: 1e11 is still seconds (year 5138), 1e11 + 1 is milliseconds */
    assert_int_equal(line_timestamp("{\"ts\":100000000000}"), INT64_C(100000000000000000));
    assert_int_equal(line_timestamp("{\"ts\":100000000001}"), INT64_C(100000000001000));
    assert_int_equal(line_timestamp("{\"ts\":0}"), 0);
    assert_int_equal(line_timestamp("{\"ts\":0.25}"), 250000);
    /* out of range: no timestamp, not an error */
    assert_int_equal(line_timestamp("{\"ts\":-1}"), -1);
    assert_int_equal(line_timestamp("{\"ts\":-1714564800.5}"), -1);
    assert_int_equal(line_timestamp("{\"ts\":9223372036854775807}"), 9223372036854775);
    assert_int_equal(line_timestamp("{\"ts\":1e300}"), -1);
    assert_int_equal(line_timestamp("{\"ts\":true}"), -1);
    assert_int_equal(line_timestamp("{\"ts\":null}"), -1);
    assert_int_equal(line_timestamp("{\"ts\":{\"s\":1}}"), -1);
}

static void test_string_timestamps(void **state)
{
    (void)state;
    assert_int_equal(line_timestamp("{\"time\":\"1714564800.5\"}"), T0_US + 500000);
    assert_int_equal(line_timestamp("{\"time\":\"1714564800\"}"), T0_US);
    assert_int_equal(line_timestamp("{\"time\":\"1714564800.1234567\"}"), T0_US + 123456);
    assert_int_equal(line_timestamp("{\"time\":\"1714564800123\"}"), T0_US + 123000);
    assert_int_equal(line_timestamp("{\"time\":\"1714564800123.4\"}"), T0_US + 123400);
    assert_int_equal(line_timestamp("{\"time\":\"1714564800123456\"}"), T0_US + 123456);
    assert_int_equal(line_timestamp("{\"time\":\"1714564800123456789\"}"), T0_US + 123456);
    assert_int_equal(line_timestamp("{\"time\":\"100000000000.5\"}"), INT64_C(100000000000500));
    assert_int_equal(line_timestamp("{\"time\":\"2024-05-01T12:00:00Z\"}"), T0_US);
    assert_int_equal(line_timestamp("{\"@timestamp\":\"2024-05-01T14:00:00.25+02:00\"}"),
                     T0_US + 250000);
    /* not numbers, not RFC 3339: no timestamp */
    assert_int_equal(line_timestamp("{\"time\":\"1714564800.\"}"), -1);
    assert_int_equal(line_timestamp("{\"time\":\"1714564800.5s\"}"), -1);
    assert_int_equal(line_timestamp("{\"time\":\"-1714564800\"}"), -1);
    assert_int_equal(line_timestamp("{\"time\":\"99999999999999999999\"}"), -1);
    assert_int_equal(line_timestamp("{\"time\":\"yesterday\"}"), -1);
    assert_int_equal(line_timestamp("{\"time\":\"\"}"), -1);
}

static void test_timestamp_precedence(void **state)
{
    (void)state;
    assert_int_equal(line_timestamp("{\"ts\":5,\"time\":4,\"timestamp\":3,\"@timestamp\":2,"
                                    "\"date\":1}"),
                     1000000);
    assert_int_equal(line_timestamp("{\"ts\":5,\"time\":4,\"timestamp\":3,\"@timestamp\":2}"),
                     2000000);
    assert_int_equal(line_timestamp("{\"ts\":5,\"time\":4,\"timestamp\":3}"), 3000000);
    assert_int_equal(line_timestamp("{\"ts\":5,\"time\":4}"), 4000000);
    assert_int_equal(line_timestamp("{\"ts\":5}"), 5000000);
    /* a present value that does not convert is passed over ... */
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"date\":\"garbage\",\"timestamp\":\"2024-05-01T12:00:00Z\",\"ts\":7}");
    assert_true(ev.has_timestamp);
    assert_int_equal(ev.timestamp_us, T0_US);
    /* ... and stays metadata, as do the keys not used */
    const char *keys[] = {"date", "ts", NULL};
    assert_meta_keys(&ev, keys);
    sh_jsonl_event_clear(&ev);
    /* timestamps are top-level keys only */
    assert_int_equal(line_timestamp("{\"x\":{\"date\":1}}"), -1);
}

static void test_rfc3339(void **state)
{
    (void)state;
    assert_int_equal(rfc("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(rfc("2024-05-01T12:00:00Z"), T0_US);
    assert_int_equal(rfc("2024-05-01t12:00:00z"), T0_US);
    assert_int_equal(rfc("2024-05-01 12:00:00Z"), T0_US);
    assert_int_equal(rfc("2024-05-01T12:00:00.1Z"), T0_US + 100000);
    assert_int_equal(rfc("2024-05-01T12:00:00.123Z"), T0_US + 123000);
    assert_int_equal(rfc("2024-05-01T12:00:00.123456Z"), T0_US + 123456);
    assert_int_equal(rfc("2024-05-01T12:00:00.123456789Z"), T0_US + 123456);
    assert_int_equal(rfc("2024-05-01T12:00:00.999999999999999999999Z"), T0_US + 999999);
    assert_int_equal(rfc("2024-05-01T12:00:00,5Z"), T0_US + 500000);
    assert_int_equal(rfc("2024-05-01T14:00:00+02:00"), T0_US);
    assert_int_equal(rfc("2024-05-01T05:00:00-0700"), T0_US);
    assert_int_equal(rfc("2024-05-01T05:00:00-07"), T0_US);
    assert_int_equal(rfc("2024-05-01T17:30:00.5+05:30"), T0_US + 500000);
    assert_int_equal(rfc("2024-05-01T12:00:00-00:00"), T0_US);
    assert_int_equal(rfc("2024-05-02T11:59:00+23:59"), T0_US);
    /* day boundaries through offsets */
    assert_int_equal(rfc("2024-04-30T23:00:00-13:00"), T0_US);
    assert_int_equal(rfc("1969-12-31T23:59:59Z"), -1000000);
    assert_int_equal(rfc("1969-12-31T23:59:59.5Z"), -500000);
    assert_int_equal(rfc("0000-01-01T00:00:00Z"), INT64_C(-62167219200) * 1000000);
    assert_int_equal(rfc("9999-12-31T23:59:59.999999Z"), INT64_C(253402300799999999));
    /* leap days */
    assert_int_equal(rfc("2024-02-29T00:00:00Z"), INT64_C(1709164800) * 1000000);
    assert_int_equal(rfc("2000-02-29T00:00:00Z"), INT64_C(951782400) * 1000000);
    assert_int_equal(rfc("2023-02-29T00:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("1900-02-29T00:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2100-02-29T00:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-03-01T00:00:00Z"), INT64_C(1709251200) * 1000000);
    /* a leap second is the first second of the next minute */
    assert_int_equal(rfc("2016-12-31T23:59:60Z"), INT64_C(1483228800) * 1000000);
    /* range checks */
    assert_int_equal(rfc("2024-00-01T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-13-01T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-04-31T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-00T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-32T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T24:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:60:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:61Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00+24:00"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00+02:60"), INT64_MIN);
    /* syntax */
    assert_int_equal(rfc(""), INT64_MIN);
    assert_int_equal(rfc("2024-05-01"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00"), INT64_MIN); /* no offset */
    assert_int_equal(rfc("2024-05-01T12:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00.Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00ZZ"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00Z "), INT64_MIN);
    assert_int_equal(rfc(" 2024-05-01T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00+2:00"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00+02:0"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00+02:"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T12:00:00+"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01X12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024/05/01T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("24-05-01T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("+2024-05-01T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-5-01T12:00:00Z"), INT64_MIN);
    assert_int_equal(rfc("2024-05-01T1a:00:00Z"), INT64_MIN);

    /* the length bounds the parse: no NUL terminator is needed */
    int64_t us = 1;
    assert_int_equal(sh_parse_rfc3339(&us, "2024-05-01T12:00:00Zjunk", 20), 0);
    assert_int_equal(us, T0_US);
    for (size_t n = 0; n < 20; n++)
        assert_int_equal(sh_parse_rfc3339(&us, "2024-05-01T12:00:00Z", n), -1);
    assert_int_equal(sh_parse_rfc3339(&us, NULL, 0), -1);
}

static void test_rfc3339_exhaustive_days(void **state)
{
    (void)state;
    /* every day of 1999..2101 against a running day count */
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t days = INT64_C(10592); /* 1999-01-01 */
    for (int y = 1999; y <= 2101; y++) {
        int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        for (int m = 1; m <= 12; m++) {
            int n = dim[m - 1] + (m == 2 && leap);
            for (int d = 1; d <= n + 1; d++) {
                char s[64];
                snprintf(s, sizeof(s), "%04d-%02d-%02dT00:00:00Z", y, m, d);
                if (d > n) {
                    assert_int_equal(rfc(s), INT64_MIN);
                } else {
                    assert_int_equal(rfc(s), days * 86400 * 1000000);
                    days++;
                }
            }
        }
    }
}

/* ------------------------------------------------------------ malformed */

static void test_malformed(void **state)
{
    (void)state;
    decode_fail("{\"log\":\"trunc", "invalid JSON at column ");
    decode_fail("{\"log\":1", "invalid JSON at column 8: ");
    decode_fail("{\"log\":1} x", "invalid JSON at column 11: end of file expected");
    decode_fail("{\"log\":1}{\"log\":2}", "invalid JSON at column ");
    decode_fail("{log:1}", "invalid JSON at column ");
    decode_fail("{\"a\":1,}", "invalid JSON at column ");
    decode_fail("{\"a\":\"\\x\"}", "invalid JSON at column ");
    decode_fail("{\"a\":\"\\ud800\"}", "invalid JSON at column ");
    decode_fail("{\"a\":99999999999999999999}", "invalid JSON at column 25: too big integer");
    decode_fail("{\"a\":NaN}", "invalid JSON at column ");
    decode_fail("\"a bare string\"", "not an object");
    decode_fail("[]", "not an object");
    decode_fail("[{\"log\":\"x\"}]", "not an object");
    decode_fail("42", "not an object");
    decode_fail("null", "not an object");
    /* invalid UTF-8 inside a string: jansson refuses the line */
    decode_fail("{\"log\":\"caf\xe9\"}", "invalid JSON at column 11: unable to decode byte 0xe9");
    decode_fail("{\"log\":\"\xc0\xaf\"}", "invalid JSON at column ");
    decode_fail("{\"log\":\"\xed\xa0\x80\"}", "invalid JSON at column ");
    /* a raw control byte / raw NUL */
    decode_fail("{\"log\":\"a\tb\"}", "invalid JSON at column ");
    decode_fail_n("{\"log\":\"a\0b\"}", 12, "invalid JSON at column ");
    decode_fail_n("{\"log\":1}\0", 10, "invalid JSON at column ");
}

static void test_error_reason_sanitized(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    char err[256];
    const char line[] = "{\"a\":\x01\x7f\xff\x1b[31m}";
    assert_int_equal(sh_jsonl_decode_line(&ev, line, sizeof(line) - 1, err, sizeof(err)), -1);
    assert_true(strncmp(err, "invalid JSON at column ", 23) == 0);
    for (const char *p = err; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);

    /* short and absent reason buffers */
    char tiny[8];
    assert_int_equal(sh_jsonl_decode_line(&ev, "[]", 2, tiny, sizeof(tiny)), -1);
    assert_string_equal(tiny, "not an ");
    assert_int_equal(sh_jsonl_decode_line(&ev, "[]", 2, NULL, 0), -1);
    assert_int_equal(sh_jsonl_decode_line(&ev, "{", 1, tiny, 0), -1);
    assert_int_equal(sh_jsonl_decode_line(&ev, "{\"a\":1}", 7, NULL, 0), 0);
    sh_jsonl_event_clear(&ev);
}

static void test_empty_lines(void **state)
{
    (void)state;
    decode_fail("", "empty line");
    decode_fail(" ", "empty line");
    decode_fail("\r", "empty line");
    decode_fail(" \t\r\n ", "empty line");
    decode_fail_n(NULL, 0, "empty line");
    /* not JSON whitespace: malformed, not empty */
    decode_fail("\v", "invalid JSON");
    decode_fail_n("\0", 1, "invalid JSON");
    /* surrounding whitespace is fine */
    sh_jsonl_event ev;
    decode_ok(&ev, "  {\"log\":\"x\"} \r");
    assert_slice(ev.message, "x");
    sh_jsonl_event_clear(&ev);
}

/* Records are counted without being parsed: blank lines (spaces, tabs,
 * CRs) are not records, malformed ones are, and the count stops just past
 * the limit, wherever the rest of the body goes. */
static void test_count(void **state)
{
    (void)state;
    const char *body = "{}\n\n \t\r\nnot json\r\n{\"log\":\"x\"}\n{}";
    size_t len = strlen(body);
    assert_int_equal(sh_jsonl_count(body, len, 100), 4);
    assert_int_equal(sh_jsonl_count(body, len, 4), 4);
    assert_int_equal(sh_jsonl_count(body, len, 3), 4);
    assert_int_equal(sh_jsonl_count(body, len, 1), 2);
    assert_int_equal(sh_jsonl_count(body, len, 0), 1);
    assert_int_equal(sh_jsonl_count("", 0, 10), 0);
    assert_int_equal(sh_jsonl_count(NULL, 0, 10), 0);
    assert_int_equal(sh_jsonl_count("\n\n\r\n", 4, 10), 0);
    /* "\v" is not blank: a (malformed) record */
    assert_int_equal(sh_jsonl_count("\v", 1, 10), 1);
    assert_true(sh_jsonl_blank(" \t\r", 3));
    assert_true(sh_jsonl_blank("", 0));
    assert_false(sh_jsonl_blank(" x", 2));

    /* a million records: the count stops at limit + 1, not at the end */
    size_t n = 1000000;
    char *big = malloc(n * 3);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        memcpy(big + 3 * i, "{}\n", 3);
    assert_int_equal(sh_jsonl_count(big, n * 3, SIZE_MAX - 1), n);
    assert_int_equal(sh_jsonl_count(big, n * 3, 1000), 1001);
    free(big);
}

/* ------------------------------------------------------------ limits */

static char *nested(const char *open, const char *close, size_t depth, const char *inner)
{
    size_t ol = strlen(open), cl = strlen(close), il = strlen(inner);
    char *s = malloc(depth * (ol + cl) + il + 1);
    assert_non_null(s);
    char *p = s;
    for (size_t i = 0; i < depth; i++, p += ol)
        memcpy(p, open, ol);
    memcpy(p, inner, il);
    p += il;
    for (size_t i = 0; i < depth; i++, p += cl)
        memcpy(p, close, cl);
    *p = '\0';
    return s;
}

static void test_too_deep(void **state)
{
    (void)state;
    char *s = nested("[", "]", 10000, "");
    decode_fail(s, "too deep");
    free(s);
    /* unterminated: refused by the pre-scan, jansson never sees it */
    s = nested("[", "", 10000, "");
    decode_fail(s, "too deep");
    free(s);
    s = nested("{\"a\":", "}", 10000, "1");
    decode_fail(s, "too deep");
    free(s);
    s = nested("{\"a\":[", "]}", 5000, "1");
    decode_fail(s, "too deep");
    free(s);

    /* the limit itself: depth 64 (the top-level object counts) is fine */
    s = nested("{\"a\":", "}", SH_JSONL_MAX_DEPTH, "1");
    sh_jsonl_event ev;
    decode_ok(&ev, s);
    sh_jsonl_event_clear(&ev);
    free(s);
    s = nested("{\"a\":", "}", SH_JSONL_MAX_DEPTH + 1, "1");
    decode_fail(s, "too deep");
    free(s);
    /* closing brackets bring the depth back down */
    s = malloc(40 * 200 + 16);
    assert_non_null(s);
    strcpy(s, "{\"x\":[");
    for (int i = 0; i < 200; i++)
        strcat(s, "[[[[[[[[[[]]]]]]]]]],");
    strcat(s, "1]}");
    decode_ok(&ev, s);
    sh_jsonl_event_clear(&ev);
    free(s);
}

static void test_brackets_in_strings(void **state)
{
    (void)state;
    /* brackets inside strings, escaped quotes and backslashes do not count */
    char *brackets = nested("[{", "", 5000, "");
    size_t n = strlen(brackets);
    char *s = malloc(n + 64);
    assert_non_null(s);
    snprintf(s, n + 64, "{\"log\":\"\\\"\\\\%s\",\"k[{\":\"v\"}", brackets);
    sh_jsonl_event ev;
    decode_ok(&ev, s);
    assert_int_equal(ev.message.len, 2 + n);
    assert_true(sh_slice_starts_with(ev.message, "\"\\[{", 4));
    assert_meta_string(&ev, "k[{", "v");
    sh_jsonl_event_clear(&ev);
    free(s);
    free(brackets);
    /* a quote escaped at the end of a string does not close it */
    decode_fail("{\"log\":\"\\\"}", "invalid JSON");
}

static void test_line_too_long(void **state)
{
    (void)state;
    size_t max = SH_JSONL_MAX_LINE;
    char *s = malloc(max + 2);
    assert_non_null(s);
    /* {"log":"aaaa...a"} of exactly SH_JSONL_MAX_LINE bytes is accepted */
    memcpy(s, "{\"log\":\"", 8);
    memset(s + 8, 'a', max - 10);
    memcpy(s + max - 2, "\"}", 2);
    sh_jsonl_event ev;
    char err[128];
    assert_int_equal(sh_jsonl_decode_line(&ev, s, max, err, sizeof(err)), 0);
    assert_int_equal(ev.message.len, max - 10);
    sh_jsonl_event_clear(&ev);
    /* one more byte: refused before parsing */
    memcpy(s + max - 2, "a\"}", 3);
    decode_fail_n(s, max + 1, "line too long");
    /* even when it is not JSON at all */
    memset(s, '[', max + 1);
    decode_fail_n(s, max + 1, "line too long");
    free(s);
}

static void test_metadata_cap_and_order(void **state)
{
    (void)state;
    size_t cap = 1000 * 24 + 16;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t at = (size_t)snprintf(s, cap, "{");
    for (int i = 999; i >= 0; i--)
        at += (size_t)snprintf(s + at, cap - at, "%s\"k%03d\":%d", i == 999 ? "" : ",", i, i);
    snprintf(s + at, cap - at, "}");
    sh_jsonl_event ev;
    decode_ok(&ev, s);
    assert_int_equal(ev.nmeta, SH_JSONL_MAX_METADATA);
    /* document order, not key order */
    for (int i = 0; i < SH_JSONL_MAX_METADATA; i++) {
        char key[8];
        snprintf(key, sizeof(key), "k%03d", 999 - i);
        assert_string_equal(ev.meta[i].key, key);
        assert_int_equal(ev.meta[i].kind, SH_JSONL_INTEGER);
        assert_int_equal(ev.meta[i].integer, 999 - i);
    }
    sh_jsonl_event_clear(&ev);
    free(s);

    /* order with nested objects and duplicates (first position, last value) */
    decode_ok(&ev, "{\"z\":1,\"n\":{\"b\":true,\"a\":[1],\"c\":{\"d\":1},\"e\":2.5},\"a\":\"x\","
                   "\"arr\":[1,2],\"z\":3,\"m\":null}");
    const char *keys[] = {"z", "n.b", "n.e", "a", "m", NULL};
    assert_meta_keys(&ev, keys);
    assert_int_equal(ev.meta[0].integer, 3);
    assert_int_equal(ev.meta[1].kind, SH_JSONL_TRUE);
    assert_int_equal(ev.meta[2].kind, SH_JSONL_REAL);
    assert_true(ev.meta[2].real == 2.5);
    assert_int_equal(ev.meta[4].kind, SH_JSONL_NULL);
    sh_jsonl_event_clear(&ev);

    /* the cap also holds inside a nested object */
    s = malloc(cap);
    assert_non_null(s);
    at = (size_t)snprintf(s, cap, "{\"o\":{");
    for (int i = 0; i < 100; i++)
        at += (size_t)snprintf(s + at, cap - at, "%s\"k%d\":%d", i ? "," : "", i, i);
    snprintf(s + at, cap - at, "},\"after\":1}");
    decode_ok(&ev, s);
    assert_int_equal(ev.nmeta, SH_JSONL_MAX_METADATA);
    assert_string_equal(ev.meta[SH_JSONL_MAX_METADATA - 1].key, "o.k31");
    sh_jsonl_event_clear(&ev);
    free(s);
}

static void test_metadata_key_limit(void **state)
{
    (void)state;
    char k128[SH_JSONL_MAX_KEY + 1], k129[SH_JSONL_MAX_KEY + 2], line[1024];
    memset(k128, 'k', SH_JSONL_MAX_KEY);
    k128[SH_JSONL_MAX_KEY] = '\0';
    memset(k129, 'k', SH_JSONL_MAX_KEY + 1);
    k129[SH_JSONL_MAX_KEY + 1] = '\0';
    /* outer "o" + "." + 126 = 128 fits; + 127 = 129 does not */
    snprintf(line, sizeof(line),
             "{\"%s\":1,\"%s\":2,\"o\":{\"%.126s\":3,\"%.127s\":4},\"short\":5}", k129, k128, k128,
             k128);
    sh_jsonl_event ev;
    decode_ok(&ev, line);
    assert_int_equal(ev.nmeta, 3);
    assert_int_equal(ev.meta[0].key_len, SH_JSONL_MAX_KEY);
    assert_string_equal(ev.meta[0].key, k128);
    assert_int_equal(ev.meta[0].integer, 2);
    assert_int_equal(ev.meta[1].key_len, SH_JSONL_MAX_KEY);
    assert_int_equal(ev.meta[1].integer, 3);
    assert_memory_equal(ev.meta[1].key, "o.kkk", 5);
    assert_string_equal(ev.meta[2].key, "short");
    sh_jsonl_event_clear(&ev);
}

static void test_metadata_value_cut(void **state)
{
    (void)state;
    size_t big = 100 * 1024;
    size_t cap = 2 * big + 64;
    char *s = malloc(cap);
    assert_non_null(s);
    /* "x" then 2-byte characters: byte 1024 falls inside one */
    size_t at = (size_t)snprintf(s, cap, "{\"log\":\"m\",\"v\":\"x");
    for (size_t i = 0; i < big / 2; i++, at += 2)
        memcpy(s + at, "\xc3\xa9", 2);
    at += (size_t)snprintf(s + at, cap - at, "\",\"w\":\"");
    memset(s + at, 'w', big);
    at += big;
    memcpy(s + at, "\"}", 3);
    sh_jsonl_event ev;
    decode_ok(&ev, s);
    assert_int_equal(ev.nmeta, 2);
    assert_int_equal(ev.meta[0].string.len, SH_JSONL_MAX_VALUE - 1);
    assert_memory_equal(ev.meta[0].string.ptr, "x\xc3\xa9", 3);
    assert_int_equal(ev.meta[1].string.len, SH_JSONL_MAX_VALUE);
    sh_jsonl_event_clear(&ev);

    /* the message itself is not cut */
    memcpy(s, "{\"log\":\"", 8);
    memset(s + 8, 'm', big);
    memcpy(s + 8 + big, "\"}", 3);
    decode_ok(&ev, s);
    assert_int_equal(ev.message.len, big);
    sh_jsonl_event_clear(&ev);
    free(s);
}

static void test_nul_escapes(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"log\":\"a\\u0000b\",\"service\":\"\\u0000\",\"k\":\"x\\u0000y\"}");
    assert_int_equal(ev.message.len, 3);
    assert_memory_equal(ev.message.ptr, "a\0b", 3);
    /* a lone NUL is a non-empty string */
    assert_int_equal(ev.service.len, 1);
    assert_int_equal(ev.service.ptr[0], '\0');
    assert_int_equal(ev.nmeta, 1);
    assert_int_equal(ev.meta[0].string.len, 3);
    assert_memory_equal(ev.meta[0].string.ptr, "x\0y", 3);
    sh_jsonl_event_clear(&ev);
    /* jansson refuses NUL in keys */
    decode_fail("{\"a\\u0000b\":1}", "invalid JSON at column ");
}

static void test_unicode_values(void **state)
{
    (void)state;
    sh_jsonl_event ev;
    decode_ok(&ev, "{\"log\":\"caf\\u00e9 \\ud83d\\ude00 \xe2\x82\xac\"}");
    assert_slice(ev.message, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac");
    sh_jsonl_event_clear(&ev);
}

/* ------------------------------------------------------------ lifetime */

static void test_slices_live_until_clear(void **state)
{
    (void)state;
    const char *src = "{\"log\":\"the message\",\"exception\":{\"type\":\"E\",\"stacktrace\":"
                      "\"st\"},\"service\":\"svc\",\"level\":\"error\",\"ts\":1,\"m\":\"meta\"}";
    size_t len = strlen(src);
    char *line = malloc(len);
    assert_non_null(line);
    memcpy(line, src, len); /* not NUL-terminated */
    sh_jsonl_event ev;
    char err[64];
    assert_int_equal(sh_jsonl_decode_line(&ev, line, len, err, sizeof(err)), 0);
    /* the input may go away at once */
    memset(line, 'X', len);
    free(line);
    assert_slice(ev.message, "the message");
    assert_slice(ev.type, "E");
    assert_slice(ev.stacktrace, "st");
    assert_slice(ev.service, "svc");
    assert_slice(ev.level, "error");
    assert_int_equal(ev.timestamp_us, 1000000);
    assert_meta_string(&ev, "m", "meta");
    assert_int_equal(ev.nmeta, 1);

    /* other decodes in between do not disturb it */
    sh_jsonl_event other;
    decode_ok(&other, "{\"log\":\"other\"}");
    assert_slice(ev.message, "the message");
    sh_jsonl_event_clear(&other);
    assert_slice(ev.message, "the message");

    sh_jsonl_event_clear(&ev);
    assert_null(ev.doc);
    assert_int_equal(ev.nmeta, 0);
    assert_empty(ev.message);
    sh_jsonl_event_clear(&ev); /* idempotent */
    assert_null(ev.doc);

    sh_jsonl_event zero;
    memset(&zero, 0, sizeof(zero));
    sh_jsonl_event_clear(&zero);
    sh_jsonl_event_clear(&zero);
    sh_jsonl_event_clear(NULL);

    /* the event can be reused after clear */
    decode_ok(&ev, "{\"log\":\"again\"}");
    assert_slice(ev.message, "again");
    sh_jsonl_event_clear(&ev);
}

/* ------------------------------------------------------------ mutations */

/* Deterministic mutations of real lines: whatever the bytes, the decoder
 * returns 0 or -1, never reads out of bounds (ASan) and never leaks. */
static void test_mutations(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        "{\"date\":1714564800.123456,\"log\":\"x [error] y\",\"stream\":\"stderr\","
        "\"kubernetes\":{\"pod_name\":\"a\",\"labels\":{\"app\":\"b\"}}}",
        "{\"@timestamp\":\"2024-05-01T12:00:00.123+02:00\",\"log.level\":\"error\","
        "\"error\":{\"type\":\"E\",\"stack_trace\":\"s\\n\\u00e9\"}}",
        "{\"level\":50,\"time\":\"1714564800.5\",\"err\":{\"stack\":\"\\u0000\"},\"a\":[[1]]}",
    };
    static const char alphabet[] = "{}[]\"\\:,.0123456789eE+-tfnu \t\r\n\x80\xc3\xa9\xff";
    uint32_t rng = 12345;
    char buf[512];
    for (int round = 0; round < 30000; round++) {
        const char *seed = seeds[round % 3];
        size_t len = strlen(seed);
        memcpy(buf, seed, len);
        int edits = 1 + round % 4;
        for (int e = 0; e < edits; e++) {
            rng = rng * 1103515245u + 12345u;
            size_t at = (rng >> 8) % len;
            char c = alphabet[(rng >> 20) % (sizeof(alphabet) - 1)];
            switch ((rng >> 4) % 3) {
            case 0: /* replace */
                buf[at] = c;
                break;
            case 1: /* insert */
                if (len + 1 < sizeof(buf)) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = c;
                    len++;
                }
                break;
            default: /* truncate */
                len = at + 1;
                break;
            }
        }
        char *line = malloc(len ? len : 1); /* exact size: ASan sees overreads */
        assert_non_null(line);
        memcpy(line, buf, len);
        sh_jsonl_event ev;
        char err[128];
        int rc = sh_jsonl_decode_line(&ev, line, len, err, sizeof(err));
        free(line);
        assert_true(rc == 0 || rc == -1);
        if (rc == 0) {
            assert_non_null(ev.doc);
            assert_true(ev.nmeta <= SH_JSONL_MAX_METADATA);
            for (size_t i = 0; i < ev.nmeta; i++) {
                assert_true(ev.meta[i].key_len <= SH_JSONL_MAX_KEY);
                assert_int_equal(ev.meta[i].key[ev.meta[i].key_len], '\0');
                if (ev.meta[i].kind == SH_JSONL_STRING && ev.meta[i].string.len > 0)
                    assert_true(ev.meta[i].string.len <= SH_JSONL_MAX_VALUE);
            }
        } else {
            assert_null(ev.doc);
        }
        sh_jsonl_event_clear(&ev);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_line),
        cmocka_unit_test(test_body_iteration),
        cmocka_unit_test(test_fluentbit_kubernetes),
        cmocka_unit_test(test_fluentbit_kubernetes_labels_app),
        cmocka_unit_test(test_ecs_firelens),
        cmocka_unit_test(test_systemd),
        cmocka_unit_test(test_logger_json_ecs_flat),
        cmocka_unit_test(test_logger_json_ecs_nested),
        cmocka_unit_test(test_pino),
        cmocka_unit_test(test_structlog),
        cmocka_unit_test(test_message_precedence),
        cmocka_unit_test(test_type_precedence),
        cmocka_unit_test(test_stacktrace_precedence),
        cmocka_unit_test(test_service_precedence),
        cmocka_unit_test(test_level_precedence),
        cmocka_unit_test(test_dotted_lookup),
        cmocka_unit_test(test_numeric_timestamps),
        cmocka_unit_test(test_string_timestamps),
        cmocka_unit_test(test_timestamp_precedence),
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_rfc3339_exhaustive_days),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_error_reason_sanitized),
        cmocka_unit_test(test_empty_lines),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_too_deep),
        cmocka_unit_test(test_brackets_in_strings),
        cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_metadata_cap_and_order),
        cmocka_unit_test(test_metadata_key_limit),
        cmocka_unit_test(test_metadata_value_cut),
        cmocka_unit_test(test_nul_escapes),
        cmocka_unit_test(test_unicode_values),
        cmocka_unit_test(test_slices_live_until_clear),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
