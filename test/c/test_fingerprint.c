/* Fingerprint properties and batch dedup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "self_heal/dedup.h"
#include "self_heal/normalize.h"
#include "self_heal/fingerprint.h"
#include "self_heal/frames.h"

static sh_slice S(const char *s)
{
    sh_slice out = {s, strlen(s)};
    return out;
}

static sh_frame F(const char *module, const char *function, const char *file, uint32_t line)
{
    sh_frame f;
    memset(&f, 0, sizeof(f));
    f.kind = SH_FRAME_ELIXIR;
    f.module = S(module);
    f.function = S(function);
    f.file = S(file);
    f.line = line;
    return f;
}

static int contains(sh_slice hay, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= hay.len; i++)
        if (memcmp(hay.ptr + i, needle, n) == 0)
            return 1;
    return 0;
}

static const sh_inapp_config no_config = {NULL, 0, NULL, 0};

/* fingerprint hex of (type, message, frames) */
static void fp(char hex[SH_FP_HEX_LEN + 1], const char *type, const char *message,
               const sh_frame *frames, size_t n)
{
    sh_fp_ctx *ctx;
    assert_int_equal(sh_fp_ctx_new(&ctx), 0);
    sh_fp_input in = {S(type), S(message), frames, n};
    sh_fp_result r;
    assert_int_equal(sh_fingerprint(&r, ctx, &in, &no_config), 0);
    memcpy(hex, r.hex, SH_FP_HEX_LEN + 1);
    sh_fp_ctx_free(ctx);
}

/* fingerprint of a text stack trace */
static void fp_text(char hex[SH_FP_HEX_LEN + 1], const char *type, const char *message,
                    const char *stack)
{
    sh_frame frames[64];
    size_t n = sh_frames_parse_text(frames, 64, stack, strlen(stack));
    fp(hex, type, message, frames, n);
}

static void test_hex_shape_and_determinism(void **state)
{
    (void)state;
    char a[33], b[33];
    fp(a, "RuntimeError", "boom", NULL, 0);
    fp(b, "RuntimeError", "boom", NULL, 0);
    assert_int_equal(strlen(a), 32);
    for (int i = 0; i < 32; i++)
        assert_true((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'));
    assert_string_equal(a, b);
    uint8_t bytes[16];
    char back[33];
    assert_int_equal(sh_fp_from_hex(bytes, a, 32), 0);
    sh_fp_to_hex(back, bytes);
    assert_string_equal(a, back);
    assert_int_equal(sh_fp_from_hex(bytes, "zz", 2), -1);
    assert_int_equal(sh_fp_from_hex(bytes, "0123456789abcdef0123456789abcdeg", 32), -1);
}

static void test_line_shift_keeps_fingerprint(void **state)
{
    (void)state;
    sh_frame v1[] = {F("MyApp.Worker", "handle_call/3", "lib/my_app/worker.ex", 42),
                     F("MyApp.Repo", "get/2", "lib/my_app/repo.ex", 10),
                     F("gen_server", "try_handle_call/4", "gen_server.erl", 1149)};
    sh_frame v2[] = {F("MyApp.Worker", "handle_call/3", "lib/my_app/worker.ex", 57),
                     F("MyApp.Repo", "get/2", "lib/my_app/repo.ex", 12),
                     F("gen_server", "try_handle_call/4", "gen_server.erl", 1150)};
    char a[33], b[33];
    fp(a, "RuntimeError", "boom", v1, 3);
    fp(b, "RuntimeError", "boom", v2, 3);
    assert_string_equal(a, b);
}

static void test_same_type_two_places_differs(void **state)
{
    (void)state;
    sh_frame here[] = {F("MyApp.Worker", "handle_call/3", "lib/my_app/worker.ex", 42)};
    sh_frame there[] = {F("MyApp.Billing", "charge/2", "lib/my_app/billing.ex", 42)};
    char a[33], b[33];
    fp(a, "KeyError", "key :id not found", here, 1);
    fp(b, "KeyError", "key :id not found", there, 1);
    assert_string_not_equal(a, b);
}

static void test_two_types_one_place_differs(void **state)
{
    (void)state;
    sh_frame here[] = {F("MyApp.Worker", "handle_call/3", "lib/my_app/worker.ex", 42)};
    char a[33], b[33];
    fp(a, "KeyError", "boom", here, 1);
    fp(b, "ArgumentError", "boom", here, 1);
    assert_string_not_equal(a, b);
}

static void test_variable_parts_merge(void **state)
{
    (void)state;
    sh_frame here[] = {F("MyApp.Orders", "fetch/1", "lib/my_app/orders.ex", 7)};
    char a[33], b[33], c[33];
    fp(a, "Ecto.NoResultsError",
       "order 1234 not found for user 5d41402a-bc4b-4a5e-9f0e-123456789abc", here, 1);
    fp(b, "Ecto.NoResultsError", "order 98 not found for user 0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9",
       here, 1);
    fp(c, "Ecto.NoResultsError",
       "invoice 98 not found for user 0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9", here, 1);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
}

static void test_genserver_call_timeouts_merge(void **state)
{
    (void)state;
    char a[33], b[33], c[33];
    fp(a, "exit",
       "exited in: GenServer.call(#PID<0.123.0>, {:get, 42}, 5000)\n    ** (EXIT) time out", NULL,
       0);
    fp(b, "exit",
       "exited in: GenServer.call(#PID<0.9876.0>, {:put, \"x\", %{a: 1}}, 5000)\n    ** (EXIT) "
       "time out",
       NULL, 0);
    fp(c, "exit",
       "exited in: GenServer.call(#PID<0.9876.0>, {:put, \"x\", %{a: 1}}, 5000)\n    ** (EXIT) "
       "no process",
       NULL, 0);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
}

static void test_undef_exits_merge(void **state)
{
    (void)state;
    char a[33], b[33], c[33];
    fp(a, "exit", "{:undef, [{MyApp.Legacy, :run, [\"abc\", 123], []}]}", NULL, 0);
    fp(b, "exit", "{:undef, [{MyApp.Legacy, :run, [%{id: 7}, :x, 9], []}]}", NULL, 0);
    fp(c, "exit", "{:undef, [{MyApp.Other, :run, [\"abc\", 123], []}]}", NULL, 0);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
}

static void test_anonymous_functions_by_enclosing_function(void **state)
{
    (void)state;
    sh_frame a1[] = {F("MyApp.Worker", "-init/1-fun-0-/0", "lib/my_app/worker.ex", 10)};
    sh_frame a2[] = {F("MyApp.Worker", "-init/1-fun-3-/0", "lib/my_app/worker.ex", 12)};
    sh_frame a3[] = {F("MyApp.Worker", "\"-init/1-fun-1-\"/0", "lib/my_app/worker.ex", 12)};
    char x[33], y[33], z[33];
    fp(x, "RuntimeError", "boom", a1, 1);
    fp(y, "RuntimeError", "boom", a2, 1);
    fp(z, "RuntimeError", "boom", a3, 1);
    assert_string_equal(x, y);
    assert_string_equal(x, z);
}

static void test_only_top_three_in_app_frames(void **state)
{
    (void)state;
    sh_frame deep1[] = {F("MyApp.A", "a/0", "lib/a.ex", 1), F("MyApp.B", "b/0", "lib/b.ex", 1),
                        F("MyApp.C", "c/0", "lib/c.ex", 1), F("MyApp.D", "d/0", "lib/d.ex", 1)};
    sh_frame deep2[] = {F("MyApp.A", "a/0", "lib/a.ex", 1), F("MyApp.B", "b/0", "lib/b.ex", 1),
                        F("MyApp.C", "c/0", "lib/c.ex", 1), F("MyApp.E", "e/0", "lib/e.ex", 1)};
    char x[33], y[33];
    fp(x, "RuntimeError", "boom", deep1, 4);
    fp(y, "RuntimeError", "boom", deep2, 4);
    assert_string_equal(x, y);
}

static void test_system_frames_and_recursion(void **state)
{
    (void)state;
    /* no in-app frame: all frames count, consecutive repeats collapse */
    sh_frame r1[] = {F("lists", "foldl/3", "lists.erl", 1), F("lists", "foldl/3", "lists.erl", 1),
                     F("gen_server", "handle_msg/6", "gen_server.erl", 1)};
    sh_frame r2[] = {F("lists", "foldl/3", "lists.erl", 1),
                     F("gen_server", "handle_msg/6", "gen_server.erl", 1)};
    sh_frame r3[] = {F("lists", "foldl/3", "lists.erl", 1),
                     F("proc_lib", "init_p_do_apply/3", "proc_lib.erl", 1)};
    char x[33], y[33], z[33];
    fp(x, "badarg", "argument error", r1, 3);
    fp(y, "badarg", "argument error", r2, 2);
    fp(z, "badarg", "argument error", r3, 2);
    assert_string_equal(x, y);
    assert_string_not_equal(x, z);
}

static void test_text_stacks_line_shift_and_places(void **state)
{
    (void)state;
    char a[33], b[33], c[33];
    fp_text(a, "TypeError", "Cannot read properties of undefined (reading 'id')",
            "TypeError: Cannot read properties of undefined (reading 'id')\n"
            "    at renderUser (https://app.example.com/static/js/main.3f9a2b1c.js:12:345)\n"
            "    at onClick (https://app.example.com/static/js/main.3f9a2b1c.js:80:1)\n");
    fp_text(b, "TypeError", "Cannot read properties of undefined (reading 'id')",
            "TypeError: Cannot read properties of undefined (reading 'id')\n"
            "    at renderUser (https://app.example.com/static/js/main.77aa01be.js:14:9)\n"
            "    at onClick (https://app.example.com/static/js/main.77aa01be.js:85:3)\n");
    fp_text(c, "TypeError", "Cannot read properties of undefined (reading 'id')",
            "TypeError: Cannot read properties of undefined (reading 'id')\n"
            "    at renderCart (https://app.example.com/static/js/main.77aa01be.js:14:9)\n"
            "    at onClick (https://app.example.com/static/js/main.77aa01be.js:85:3)\n");
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);

    fp_text(a, "RuntimeError", "boom",
            "** (RuntimeError) boom\n"
            "    (my_app 0.1.0) lib/my_app/worker.ex:42: MyApp.Worker.handle_call/3\n"
            "    (stdlib 4.2) gen_server.erl:1149: :gen_server.try_handle_call/4\n");
    fp_text(b, "RuntimeError", "boom",
            "** (RuntimeError) boom\n"
            "    (my_app 0.1.1) lib/my_app/worker.ex:44: MyApp.Worker.handle_call/3\n"
            "    (stdlib 4.2) gen_server.erl:1150: :gen_server.try_handle_call/4\n");
    assert_string_equal(a, b);
}

static void test_type_and_message_are_separated(void **state)
{
    (void)state;
    /* "ab" + "c" must not collide with "a" + "bc" */
    char x[33], y[33];
    fp(x, "ab", "c", NULL, 0);
    fp(y, "a", "bc", NULL, 0);
    assert_string_not_equal(x, y);
}

static void test_result_frame_fields(void **state)
{
    (void)state;
    sh_frame frames[] = {F("Enum", "map/2", "lib/enum.ex", 1),
                         F("MyApp.Worker", "run/1", "lib/my_app/worker.ex", 3)};
    sh_fp_ctx *ctx;
    assert_int_equal(sh_fp_ctx_new(&ctx), 0);
    sh_fp_input in = {S("RuntimeError"), S("user 42 failed"), frames, 2};
    sh_fp_result r;
    assert_int_equal(sh_fingerprint(&r, ctx, &in, &no_config), 0);
    assert_int_equal(r.top_frame, 1); /* Enum is not in-app */
    assert_int_equal(r.in_app, 1);
    assert_int_equal(r.nused, 1);
    sh_slice norm = sh_fp_ctx_normalized(ctx);
    assert_false(contains(norm, "42"));
    sh_fp_ctx_free(ctx);
}

/* ------------------------------------------------------------------ dedup */

static void make_fp(uint8_t out[16], unsigned k)
{
    memset(out, 0, 16);
    /* spread keys over the hash: the table hashes the first 8 bytes */
    uint64_t h = (uint64_t)k * 0x9E3779B97F4A7C15ULL;
    memcpy(out, &h, 8);
    memcpy(out + 8, &k, sizeof(k));
}

static void test_dedup_groups(void **state)
{
    (void)state;
    sh_dedup *d;
    assert_int_equal(sh_dedup_new(&d, 8), 0);
    uint8_t a[16], b[16];
    make_fp(a, 1);
    make_fp(b, 2);
    assert_int_equal(sh_dedup_add(d, a, 100, "api", 3, 0), 0);
    assert_int_equal(sh_dedup_add(d, b, 50, NULL, 0, 1), 0);
    assert_int_equal(sh_dedup_add(d, a, 20, "worker", 6, 2), 0);
    assert_int_equal(sh_dedup_add(d, a, 300, "api", 3, 3), 0);
    assert_int_equal(sh_dedup_count(d), 2);
    const sh_dedup_group *g = sh_dedup_group_at(d, 0);
    assert_memory_equal(g->fingerprint, a, 16);
    assert_int_equal(g->count, 3);
    assert_int_equal(g->first_seen, 20);
    assert_int_equal(g->last_seen, 300);
    assert_int_equal(g->sample_index, 0);
    assert_int_equal(g->nservices, 2);
    sh_slice s0 = sh_dedup_service(d, g->services[0]);
    sh_slice s1 = sh_dedup_service(d, g->services[1]);
    assert_true(s0.len == 3 && memcmp(s0.ptr, "api", 3) == 0);
    assert_true(s1.len == 6 && memcmp(s1.ptr, "worker", 6) == 0);
    g = sh_dedup_group_at(d, 1);
    assert_int_equal(g->count, 1);
    assert_int_equal(g->sample_index, 1);
    assert_int_equal(g->nservices, 0);
    assert_null(sh_dedup_group_at(d, 2));
    sh_dedup_free(d);
}

static void test_dedup_many_groups_and_service_cap(void **state)
{
    (void)state;
    sh_dedup *d;
    assert_int_equal(sh_dedup_new(&d, 0), 0);
    enum { N = 200000, G = 50000 };
    for (unsigned i = 0; i < N; i++) {
        uint8_t f[16];
        make_fp(f, i % G);
        char svc[16];
        int n = snprintf(svc, sizeof(svc), "svc%u", i % 7);
        assert_int_equal(sh_dedup_add(d, f, (int64_t)i, svc, (size_t)n, i), 0);
    }
    assert_int_equal(sh_dedup_count(d), G);
    for (unsigned k = 0; k < G; k += 997) {
        const sh_dedup_group *g = sh_dedup_group_at(d, k);
        uint8_t f[16];
        make_fp(f, k);
        assert_memory_equal(g->fingerprint, f, 16);
        assert_int_equal(g->count, N / G);
        assert_int_equal(g->first_seen, k);
        assert_int_equal(g->last_seen, k + (N / G - 1) * G);
        assert_int_equal(g->sample_index, k);
    }
    /* 7 services cycle with period 7 and groups with period G (G % 7 == 6):
     * each group sees 4 distinct services */
    assert_int_equal(sh_dedup_group_at(d, 0)->nservices, 4);
    sh_dedup_free(d);

    assert_int_equal(sh_dedup_new(&d, 0), 0);
    uint8_t f[16];
    make_fp(f, 7);
    for (unsigned i = 0; i < 100; i++) {
        char svc[16];
        int n = snprintf(svc, sizeof(svc), "s%u", i);
        assert_int_equal(sh_dedup_add(d, f, 0, svc, (size_t)n, i), 0);
    }
    const sh_dedup_group *g = sh_dedup_group_at(d, 0);
    assert_int_equal(g->nservices, SH_DEDUP_MAX_SERVICES);
    assert_int_equal(g->services_dropped, 100 - SH_DEDUP_MAX_SERVICES);
    sh_dedup_free(d);
}

/* The layout in fingerprint.h, hashed independently. */
static void test_digest_is_sha256_of_documented_layout(void **state)
{
    (void)state;
    sh_frame frames[1] = {F("MyApp.Worker", "run/1", "lib/my_app/worker.ex", 3)};
    char hex[33];
    fp(hex, "RuntimeError", "boom", frames, 1);
    static const char layout[] = "RuntimeError\x1f"
                                 "boom\x1f"
                                 "MyApp.Worker\x1frun/1\x1flib/my_app/worker.ex\x1e";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(layout, sizeof(layout) - 1, md, &n, EVP_sha256(), NULL), 1);
    char want[33];
    sh_fp_to_hex(want, md);
    assert_string_equal(hex, want);
}

/* A message too long for the memo is hashed in parts, never copied into
 * the canonical buffer: the digest is still that of the whole layout. */
static void test_digest_of_a_long_message_is_the_layout(void **state)
{
    (void)state;
    sh_frame frames[1] = {F("MyApp.Worker", "run/1", "lib/my_app/worker.ex", 3)};
    static const char words[] = "the quick brown fox jumps over the lazy dog ";
    static char msg[100 * (sizeof(words) - 1) + 1];
    for (size_t i = 0; i < 100; i++)
        memcpy(msg + i * (sizeof(words) - 1), words, sizeof(words) - 1);
    char hex[33];
    fp(hex, "RuntimeError", msg, frames, 1);
    sh_buf layout;
    sh_buf_init(&layout);
    sh_buf_append_str(&layout, "RuntimeError\x1f");
    assert_int_equal(sh_normalize(&layout, msg, strlen(msg)), 0);
    assert_true(layout.len > 13 + 512); /* past the memo's bound */
    sh_buf_append_str(&layout, "\x1fMyApp.Worker\x1frun/1\x1flib/my_app/worker.ex\x1e");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(layout.data, layout.len, md, &n, EVP_sha256(), NULL), 1);
    char want[33];
    sh_fp_to_hex(want, md);
    assert_string_equal(hex, want);
    sh_buf_free(&layout);
}

/* One long-lived context (its digest memo warm, slots reused and
 * overwritten) gives what a fresh context gives, for every input. */
static void test_memo_never_changes_a_result(void **state)
{
    (void)state;
    sh_fp_ctx *ctx;
    assert_int_equal(sh_fp_ctx_new(&ctx), 0);
    sh_frame frames[2] = {F("MyApp.A", "f/1", "lib/a.ex", 1), F("MyApp.B", "g/2", "lib/b.ex", 2)};
    uint32_t x = 12345;
    for (int i = 0; i < 3000; i++) {
        x = x * 1103515245u + 12345u;
        char type[32], message[700];
        snprintf(type, sizeof(type), "Error%u", (x >> 8) % 97);
        /* mostly short inputs, some longer than the memo keeps */
        size_t pad = (x >> 20) % 7 == 0 ? 600 : (x >> 16) % 40;
        memset(message, 'a' + (int)((x >> 12) % 3), pad);
        message[pad] = '\0';
        size_t nf = (x >> 4) % 3;
        sh_fp_input in = {S(type), S(message), frames, nf};
        sh_fp_result r;
        assert_int_equal(sh_fingerprint(&r, ctx, &in, &no_config), 0);
        char want[33];
        fp(want, type, message, frames, nf);
        assert_string_equal(r.hex, want);
    }
    sh_fp_ctx_free(ctx);
}

/* Prepared frames with cached keys and flags hash like the frames they
 * stand for; a key with a NULL ptr is built from its frame. */
static void test_prepared_frames_match(void **state)
{
    (void)state;
    sh_frame frames[3] = {F("Enum", "map/2", "lib/enum.ex", 9), F("MyApp.A", "f/1", "lib/a.ex", 1),
                          F("MyApp.B", "-g/2-fun-0-", "lib/b.ex", 2)};
    sh_inapp_config cfg = {NULL, 0, (sh_slice[]){S("MyApp")}, 1};
    sh_fp_ctx *ctx;
    assert_int_equal(sh_fp_ctx_new(&ctx), 0);
    sh_fp_input in = {S("KeyError"), S("key :a not found"), frames, 3};
    sh_fp_result plain;
    assert_int_equal(sh_fingerprint(&plain, ctx, &in, &cfg), 0);

    sh_buf keys[3];
    sh_fp_frame prep[3];
    for (int i = 0; i < 3; i++) {
        sh_buf_init(&keys[i]);
        sh_fp_frame_key(&keys[i], &frames[i]);
        prep[i].frame = i == 1 ? &frames[i] : NULL;
        prep[i].key = i == 1 ? (sh_slice){NULL, 0} : (sh_slice){keys[i].data, keys[i].len};
        prep[i].in_app = sh_frame_is_in_app(&frames[i], &cfg);
    }
    assert_true(contains((sh_slice){keys[2].data, keys[2].len}, "g/2"));
    assert_false(contains((sh_slice){keys[2].data, keys[2].len}, "fun-0"));
    sh_fp_result r;
    assert_int_equal(sh_fingerprint_frames(&r, ctx, S("KeyError"), S("key :a not found"), prep, 3),
                     0);
    assert_string_equal(r.hex, plain.hex);
    assert_int_equal(r.top_frame, plain.top_frame);
    assert_int_equal(r.nused, 2);
    for (int i = 0; i < 3; i++)
        sh_buf_free(&keys[i]);
    sh_fp_ctx_free(ctx);
}

/* Stackless events grouped by the miner: type and cluster id decide. */
static void test_cluster_fingerprint(void **state)
{
    (void)state;
    sh_fp_ctx *ctx;
    assert_int_equal(sh_fp_ctx_new(&ctx), 0);
    sh_fp_result a, b, c, d;
    uint64_t id = 0x0123456789abcdefULL;
    assert_int_equal(sh_fingerprint_cluster(&a, ctx, S("log"), S("disk 93% full"), id), 0);
    assert_string_equal(sh_fp_ctx_normalized(ctx).ptr[0] == 'd' ? "ok" : "no", "ok");
    assert_int_equal(sh_fingerprint_cluster(&b, ctx, S("log"), S("anything at all"), id), 0);
    assert_int_equal(sh_fingerprint_cluster(&c, ctx, S("error"), S("disk 93% full"), id), 0);
    assert_int_equal(sh_fingerprint_cluster(&d, ctx, S("log"), S("disk 93% full"), id + 1), 0);
    assert_string_equal(a.hex, b.hex);
    assert_string_not_equal(a.hex, c.hex);
    assert_string_not_equal(a.hex, d.hex);
    assert_int_equal(a.top_frame, -1);
    static const char layout[] = "log\x1f\x01"
                                 "cluster\x1f"
                                 "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(layout, sizeof(layout) - 1, md, &n, EVP_sha256(), NULL), 1);
    char want[33];
    sh_fp_to_hex(want, md);
    assert_string_equal(a.hex, want);
    sh_fp_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_shape_and_determinism),
        cmocka_unit_test(test_line_shift_keeps_fingerprint),
        cmocka_unit_test(test_same_type_two_places_differs),
        cmocka_unit_test(test_two_types_one_place_differs),
        cmocka_unit_test(test_variable_parts_merge),
        cmocka_unit_test(test_genserver_call_timeouts_merge),
        cmocka_unit_test(test_undef_exits_merge),
        cmocka_unit_test(test_anonymous_functions_by_enclosing_function),
        cmocka_unit_test(test_only_top_three_in_app_frames),
        cmocka_unit_test(test_system_frames_and_recursion),
        cmocka_unit_test(test_text_stacks_line_shift_and_places),
        cmocka_unit_test(test_type_and_message_are_separated),
        cmocka_unit_test(test_result_frame_fields),
        cmocka_unit_test(test_digest_is_sha256_of_documented_layout),
        cmocka_unit_test(test_memo_never_changes_a_result),
        cmocka_unit_test(test_prepared_frames_match),
        cmocka_unit_test(test_cluster_fingerprint),
        cmocka_unit_test(test_dedup_groups),
        cmocka_unit_test(test_digest_of_a_long_message_is_the_layout),
        cmocka_unit_test(test_dedup_many_groups_and_service_cap),
    };
    return cmocka_run_group_tests_name("fingerprint", tests, NULL, NULL);
}
