/* HTTP client: Retry-After parsing, backoff bounds, refusal of other
 * schemes, transport errors without the URL. (Requests against real
 * servers are exercised by the ExUnit suites of the port commands.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "http.h"

static void test_retry_after_seconds(void **state)
{
    (void)state;
    assert_int_equal(http_parse_retry_after("0", 1000), 0);
    assert_int_equal(http_parse_retry_after("120", 1000), 120);
    assert_int_equal(http_parse_retry_after("  7 ", 1000), 7);
    assert_int_equal(http_parse_retry_after("", 1000), -1);
    assert_int_equal(http_parse_retry_after("-5", 1000), -1);
    assert_int_equal(http_parse_retry_after("12abc", 1000), -1);
    assert_int_equal(http_parse_retry_after("99999999999999999999", 1000), -1);
}

static void test_retry_after_date(void **state)
{
    (void)state;
    /* 1994-11-06T08:49:37Z = 784111777 */
    assert_int_equal(http_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 30), 30);
    assert_int_equal(http_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 + 30), 0);
    assert_int_equal(http_parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", 0), -1);
    assert_int_equal(http_parse_retry_after("Sun, 06 Nov 1994 08:49:37 UTC", 0), -1);
    assert_int_equal(http_parse_retry_after("Sun, 06 Nov 1994 25:49:37 GMT", 0), -1);
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    http_request req;
    memset(&req, 0, sizeof(req));
    req.backoff_base_ms = 100;
    req.backoff_max_ms = 1000;
    /* full jitter: [0, base * 2^attempt), capped */
    assert_int_equal(http_backoff_ms(&req, 0, -1, 0.0), 0);
    assert_int_equal(http_backoff_ms(&req, 0, -1, 0.5), 50);
    assert_int_equal(http_backoff_ms(&req, 2, -1, 0.5), 200);
    assert_true(http_backoff_ms(&req, 20, -1, 0.9999) <= 1000);
    /* Retry-After wins, capped by backoff_max_ms */
    assert_int_equal(http_backoff_ms(&req, 0, 700, 0.1), 700);
    assert_int_equal(http_backoff_ms(&req, 0, 5000, 0.1), 1000);
}

static void test_only_http_schemes(void **state)
{
    (void)state;
    http_request req;
    memset(&req, 0, sizeof(req));
    http_response res;
    req.url = "file:///etc/passwd";
    assert_int_equal(http_perform(&res, &req), -1);
    assert_non_null(strstr(res.error, "http"));
    assert_int_equal(res.status, 0);
    http_response_free(&res);
}

static void test_transport_error_hides_url(void **state)
{
    (void)state;
    http_request req;
    memset(&req, 0, sizeof(req));
    http_response res;
    /* port 1 on loopback: connection refused; two attempts, tiny backoff */
    req.url = "http://127.0.0.1:1/bot123456:SECRET-TOKEN/sendMessage";
    req.max_attempts = 2;
    req.backoff_base_ms = 1;
    req.connect_timeout_ms = 1000;
    assert_int_equal(http_perform(&res, &req), -1);
    assert_int_equal(res.attempts, 2);
    assert_int_equal(res.status, 0);
    assert_true(res.error[0] != '\0');
    assert_null(strstr(res.error, "SECRET"));
    assert_non_null(res.body);
    http_response_free(&res);
}

int main(void)
{
    http_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_retry_after_date),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_only_http_schemes),
        cmocka_unit_test(test_transport_error_hides_url),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    http_global_cleanup();
    return rc;
}
