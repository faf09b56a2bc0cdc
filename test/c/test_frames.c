/* Tests of stack-frame parsing, canonical files and in-app (c_src/frames.c). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "self_heal/frames.h"

/* ------------------------------------------------------------ helpers */

static sh_slice S(const char *cstr)
{
    sh_slice s = {cstr, strlen(cstr)};
    return s;
}

static int slice_is(sh_slice s, const char *want)
{
    size_t n = strlen(want);
    return s.len == n && (n == 0 || memcmp(s.ptr, want, n) == 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *kind_name(sh_frame_kind k)
{
    switch (k) {
    case SH_FRAME_ELIXIR:
        return "elixir";
    case SH_FRAME_ERLANG:
        return "erlang";
    case SH_FRAME_JS:
        return "js";
    case SH_FRAME_PYTHON:
        return "python";
    case SH_FRAME_JAVA:
        return "java";
    case SH_FRAME_GO:
        return "go";
    default:
        return "unknown";
    }
}

static void print_frame(const sh_frame *f)
{
    print_error("  got kind=%s app=\"%.*s\" module=\"%.*s\" function=\"%.*s\" file=\"%.*s\" "
                "line=%u column=%u\n",
                kind_name(f->kind), (int)f->app.len, f->app.ptr, (int)f->module.len, f->module.ptr,
                (int)f->function.len, f->function.ptr, (int)f->file.len, f->file.ptr, f->line,
                f->column);
}

static void assert_slices_in(const sh_frame *f, const char *b, size_t len)
{
    const sh_slice *all[] = {&f->app, &f->module, &f->function, &f->file};
    for (size_t i = 0; i < 4; i++) {
        const sh_slice *s = all[i];
        if (s->len == 0)
            continue;
        assert_true(s->ptr >= b && s->ptr + s->len <= b + len);
    }
}

/* ------------------------------------------------------------ frame table */

typedef struct frame_case {
    const char *line;
    sh_frame_kind kind;
    const char *app;
    const char *module;
    const char *function;
    const char *file;
    uint32_t line_no;
    uint32_t column;
} frame_case;

#define EX SH_FRAME_ELIXIR
#define ERL SH_FRAME_ERLANG
#define JS SH_FRAME_JS
#define PY SH_FRAME_PYTHON
#define JAVA SH_FRAME_JAVA

static const frame_case frame_cases[] = {
    /* Elixir */
    {"    (my_app 0.1.0) lib/my_app/worker.ex:42: MyApp.Worker.handle_call/3", EX, "my_app",
     "MyApp.Worker", "handle_call/3", "lib/my_app/worker.ex", 42, 0},
    {"lib/foo.ex:12: Foo.bar/1", EX, "", "Foo", "bar/1", "lib/foo.ex", 12, 0},
    {"(elixir 1.14.0) lib/enum.ex:1658: Enum.\"-map/2-lists^map/1-0-\"/2", EX, "elixir", "Enum",
     "\"-map/2-lists^map/1-0-\"/2", "lib/enum.ex", 1658, 0},
    {"(stdlib 4.2) gen_server.erl:1123: :gen_server.try_dispatch/4", EX, "stdlib", "gen_server",
     "try_dispatch/4", "gen_server.erl", 1123, 0},
    {"(my_app 0.1.0) lib/my_app/worker.ex:10: anonymous fn/0 in MyApp.Worker.init/1", EX, "my_app",
     "MyApp.Worker", "init/1", "lib/my_app/worker.ex", 10, 0},
    {"(my_app 0.1.0) lib/my_app/worker.ex:20: anonymous fn(1, \" in \") in "
     "MyApp.Worker.handle_info/2",
     EX, "my_app", "MyApp.Worker", "handle_info/2", "lib/my_app/worker.ex", 20, 0},
    {"(elixir 1.14.0) Foo.bar/1", EX, "elixir", "Foo", "bar/1", "", 0, 0},
    {"nofile:1: (file)", EX, "", "", "(file)", "nofile", 1, 0},
    {"    test/my_app_test.exs:7: (test)", EX, "", "", "(test)", "test/my_app_test.exs", 7, 0},
    {"(elixir 1.14.0) src/elixir.erl:294: :elixir.eval_forms/4", EX, "elixir", "elixir",
     "eval_forms/4", "src/elixir.erl", 294, 0},
    {"(my_app) lib/foo.ex:3: Foo.Bar.baz(1, %{a: 1})", EX, "my_app", "Foo.Bar", "baz", "lib/foo.ex",
     3, 0},
    {"(elixir 1.14.0) lib/kernel.ex:2235: Kernel.//2", EX, "elixir", "Kernel", "//2",
     "lib/kernel.ex", 2235, 0},
    {"    (ex_unit 1.14.0) lib/ex_unit/runner.ex:512: ExUnit.Runner.exec_test/1\r", EX, "ex_unit",
     "ExUnit.Runner", "exec_test/1", "lib/ex_unit/runner.ex", 512, 0},
    {"(elixir 1.14.0) lib/enum.ex: Enum.map/2", EX, "elixir", "Enum", "map/2", "lib/enum.ex", 0, 0},
    {"(my_app 0.1.0) lib/my_app.ex:5: MyApp.valid?/1", EX, "my_app", "MyApp", "valid?/1",
     "lib/my_app.ex", 5, 0},
    {"(stdlib 4.2) erl_eval.erl:748: :erl_eval.do_apply/7", EX, "stdlib", "erl_eval", "do_apply/7",
     "erl_eval.erl", 748, 0},
    {"\t(my_app 0.1.0) lib/my_app/a.ex:1:7: MyApp.A.b/0", EX, "my_app", "MyApp.A", "b/0",
     "lib/my_app/a.ex", 1, 7},
    /* Erlang */
    {"in function  foo:bar/2 (src/foo.erl, line 12)", ERL, "", "foo", "bar/2", "src/foo.erl", 12,
     0},
    {"     in call from gen_server:try_dispatch/4 (gen_server.erl, line 1123)", ERL, "",
     "gen_server", "try_dispatch/4", "gen_server.erl", 1123, 0},
    {"in function  'Elixir.MyApp.Worker':handle_call/3 (lib/my_app/worker.ex, line 42)", ERL, "",
     "MyApp.Worker", "handle_call/3", "lib/my_app/worker.ex", 42, 0},
    {"in function  erlang:list_to_integer/1", ERL, "", "erlang", "list_to_integer/1", "", 0, 0},
    {"     in function  list_to_integer/1", ERL, "", "", "list_to_integer/1", "", 0, 0},
    {"in call from foo:'-bar/1-fun-0-'/1 (foo.erl:8)", ERL, "", "foo", "'-bar/1-fun-0-'/1",
     "foo.erl", 8, 0},
    {"in operator  +/2", ERL, "", "", "+/2", "", 0, 0},
    {"{foo,bar,2,[{file,\"src/foo.erl\"},{line,12}]}", ERL, "", "foo", "bar", "src/foo.erl", 12, 0},
    {"[{foo,bar,[1,{a,\"]\"}],[{file,\"src/foo.erl\"},{line,12}]},", ERL, "", "foo", "bar",
     "src/foo.erl", 12, 0},
    {" ,{gen_server,try_dispatch,4,[{file,\"gen_server.erl\"},{line,1123}]}", ERL, "", "gen_server",
     "try_dispatch", "gen_server.erl", 1123, 0},
    {"{'Elixir.MyApp.Worker','-init/1-fun-0-',0,[{file,\"lib/my_app/worker.ex\"},{line,10}]}]}",
     ERL, "", "MyApp.Worker", "-init/1-fun-0-", "lib/my_app/worker.ex", 10, 0},
    {"  {proc_lib, init_p_do_apply, 3, [{file, \"proc_lib.erl\"}, {line, 240}]}]", ERL, "",
     "proc_lib", "init_p_do_apply", "proc_lib.erl", 240, 0},
    {"[{MyApp.Worker, :handle_call, 3, [file: ~c\"lib/my_app/worker.ex\", line: 42]},", ERL, "",
     "MyApp.Worker", "handle_call", "lib/my_app/worker.ex", 42, 0},
    {"{foo,bar,1,[]}", ERL, "", "foo", "bar", "", 0, 0},
    {"{foo,bar,1,[{error_info,#{module => x}},{line,3},{file,\"a.erl\"}]}", ERL, "", "foo", "bar",
     "a.erl", 3, 0},
    /* JavaScript V8 */
    {"    at handleClick (https://app.example.com/static/js/main.3f9a2b1c.js:12:345)", JS, "", "",
     "handleClick", "https://app.example.com/static/js/main.3f9a2b1c.js", 12, 345},
    {"at https://x.example/app.js:1:2", JS, "", "", "", "https://x.example/app.js", 1, 2},
    {"at new Foo (file:///srv/app.js:3:4)", JS, "", "", "Foo", "file:///srv/app.js", 3, 4},
    {"at async fetchUser (/srv/api.js:5:6)", JS, "", "", "fetchUser", "/srv/api.js", 5, 6},
    {"    at Object.<anonymous> (/srv/app/index.js:10:5)", JS, "", "", "Object.<anonymous>",
     "/srv/app/index.js", 10, 5},
    {"    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)", JS, "",
     "", "process.processTicksAndRejections", "node:internal/process/task_queues", 95, 5},
    {"at Array.map (<anonymous>)", JS, "", "", "Array.map", "<anonymous>", 0, 0},
    {"at eval (eval at foo (x.js:1:2), <anonymous>:1:1)", JS, "", "", "eval", "x.js", 1, 2},
    {"at eval (eval at <anonymous>, <anonymous>:3:4)", JS, "", "", "eval", "<anonymous>", 3, 4},
    {"    at async Promise.all (index 0)", JS, "", "", "Promise.all", "", 0, 0},
    {"at Layer.handle [as handle_request] (/srv/node_modules/express/lib/router/layer.js:95:5)", JS,
     "", "", "Layer.handle", "/srv/node_modules/express/lib/router/layer.js", 95, 5},
    {"at /srv/app.js:9", JS, "", "", "", "/srv/app.js", 9, 0},
    {"at new Promise (<anonymous>)", JS, "", "", "Promise", "<anonymous>", 0, 0},
    {"at Generator.next (native)", JS, "", "", "Generator.next", "native", 0, 0},
    {"at C:\\app\\src\\index.js:4:2", JS, "", "", "", "C:\\app\\src\\index.js", 4, 2},
    /* Firefox / Safari */
    {"handleClick@https://app.example.com/static/js/main.js:12:345", JS, "", "", "handleClick",
     "https://app.example.com/static/js/main.js", 12, 345},
    {"@https://x/app.js:1:2", JS, "", "", "", "https://x/app.js", 1, 2},
    {"global code@https://x/app.js:1:2", JS, "", "", "global code", "https://x/app.js", 1, 2},
    {"Foo/<@https://x/app.js:3:4", JS, "", "", "Foo/<", "https://x/app.js", 3, 4},
    {"Foo</bar@https://x/app.js:5:6", JS, "", "", "Foo</bar", "https://x/app.js", 5, 6},
    {"module code@https://x/app.mjs:7:8", JS, "", "", "module code", "https://x/app.mjs", 7, 8},
    {"[native code]", JS, "", "", "", "[native code]", 0, 0},
    {"forEach@[native code]", JS, "", "", "forEach", "[native code]", 0, 0},
    {"async*fetchUser@https://x/api.js:9:10", JS, "", "", "fetchUser", "https://x/api.js", 9, 10},
    {"@https://x/app.js line 2 > eval:1:5", JS, "", "", "", "https://x/app.js", 2, 0},
    {"foo@https://x/app.js:12", JS, "", "", "foo", "https://x/app.js", 12, 0},
    {"@debugger eval code:1:1", JS, "", "", "", "debugger eval code", 1, 1},
    /* Python */
    {"  File \"/srv/app/views.py\", line 42, in get_user", PY, "", "", "get_user",
     "/srv/app/views.py", 42, 0},
    {"File \"<frozen importlib._bootstrap>\", line 1030, in _gcd_import", PY, "", "", "_gcd_import",
     "<frozen importlib._bootstrap>", 1030, 0},
    {"  File \"/usr/lib/python3.11/threading.py\", line 975, in run", PY, "", "", "run",
     "/usr/lib/python3.11/threading.py", 975, 0},
    {"  File \"x.py\", line 3", PY, "", "", "", "x.py", 3, 0},
    {"  File \"<stdin>\", line 1, in <module>", PY, "", "", "<module>", "<stdin>", 1, 0},
    /* Java / Kotlin / Scala */
    {"\tat com.example.app.UserService.find(UserService.java:42)", JAVA, "",
     "com.example.app.UserService", "find", "UserService.java", 42, 0},
    {"\tat java.base/java.lang.Thread.run(Thread.java:833)", JAVA, "", "java.lang.Thread", "run",
     "Thread.java", 833, 0},
    {"\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)", JAVA,
     "", "jdk.internal.reflect.NativeMethodAccessorImpl", "invoke0", "", 0, 0},
    {"\tat com.x.Y$Inner.lambda$run$0(Y.java:10)", JAVA, "", "com.x.Y$Inner", "lambda$run$0",
     "Y.java", 10, 0},
    {"at app//com.x.Y.z(Y.java:1)", JAVA, "", "com.x.Y", "z", "Y.java", 1, 0},
    {"at jdk.internal.reflect.GeneratedMethodAccessor1.invoke(Unknown Source)", JAVA, "",
     "jdk.internal.reflect.GeneratedMethodAccessor1", "invoke", "", 0, 0},
    {"\tat scala.collection.immutable.List.map(List.scala:250)", JAVA, "",
     "scala.collection.immutable.List", "map", "List.scala", 250, 0},
    {"\tat kotlinx.coroutines.DispatchedTask.run(DispatchedTask.kt:106)", JAVA, "",
     "kotlinx.coroutines.DispatchedTask", "run", "DispatchedTask.kt", 106, 0},
    {"\tat com.x.Y.<init>(Y.java:5)", JAVA, "", "com.x.Y", "<init>", "Y.java", 5, 0},
    {"\tat org.springframework.web.X.y(X.java:9) ~[spring-web-5.3.1.jar:5.3.1]", JAVA, "",
     "org.springframework.web.X", "y", "X.java", 9, 0},
    {"\tat com.foo.Bar.baz(Bar.kt)", JAVA, "", "com.foo.Bar", "baz", "Bar.kt", 0, 0},
    /* numbers clamp at UINT32_MAX */
    {"lib/foo.ex:1099511627776: Foo.bar/1", EX, "", "Foo", "bar/1", "lib/foo.ex", UINT32_MAX, 0},
    {"at f (x.js:4294967296:99999999999999999999999)", JS, "", "", "f", "x.js", UINT32_MAX,
     UINT32_MAX},
    {"at f (x.js:4294967295:4294967294)", JS, "", "", "f", "x.js", 4294967295u, 4294967294u},
    {"  File \"a.py\", line 1099511627776, in f", PY, "", "", "f", "a.py", UINT32_MAX, 0},
    {"{m,f,0,[{file,\"m.erl\"},{line,1099511627776}]}", ERL, "", "m", "f", "m.erl", UINT32_MAX, 0},
    {"\tat a.B.c(B.java:1099511627776)", JAVA, "", "a.B", "c", "B.java", UINT32_MAX, 0},
};

static void test_frame_table(void **state)
{
    (void)state;
    size_t n = sizeof(frame_cases) / sizeof(frame_cases[0]);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        const frame_case *c = &frame_cases[i];
        sh_frame f;
        memset(&f, 0xAB, sizeof(f));
        size_t len = strlen(c->line);
        int ok = sh_frame_parse_line(&f, c->line, len);
        if (!ok) {
            print_error("case %zu: not parsed: %s\n", i, c->line);
            failed = 1;
            continue;
        }
        if (f.kind != c->kind || !slice_is(f.app, c->app) || !slice_is(f.module, c->module) ||
            !slice_is(f.function, c->function) || !slice_is(f.file, c->file) ||
            f.line != c->line_no || f.column != c->column) {
            print_error("case %zu: %s\n  want kind=%s app=\"%s\" module=\"%s\" function=\"%s\" "
                        "file=\"%s\" line=%u column=%u\n",
                        i, c->line, kind_name(c->kind), c->app, c->module, c->function, c->file,
                        c->line_no, c->column);
            print_frame(&f);
            failed = 1;
            continue;
        }
        assert_slices_in(&f, c->line, len);
        assert_non_null(f.app.ptr);
        assert_non_null(f.module.ptr);
        assert_non_null(f.function.ptr);
        assert_non_null(f.file.ptr);
    }
    print_message("frame table: %zu cases\n", n);
    assert_int_equal(failed, 0);
    assert_true(n >= 45);
}

/* A line that is parsed without a trailing NUL or with a longer buffer
 * around it gives the same frame: parsing honours len. */
static void test_parse_honours_len(void **state)
{
    (void)state;
    const char *text = "lib/foo.ex:12: Foo.bar/1GARBAGE";
    sh_frame f;
    assert_int_equal(sh_frame_parse_line(&f, text, 24), 1);
    assert_true(slice_is(f.function, "bar/1"));
    /* a line that is no frame leaves a cleared frame behind */
    assert_int_equal(sh_frame_parse_line(&f, text, 0), 0);
    assert_int_equal(f.kind, SH_FRAME_UNKNOWN);
    assert_int_equal(f.function.len, 0);
    assert_non_null(f.function.ptr);
    assert_int_equal(f.line, 0);
    assert_int_equal(sh_frame_parse_line(&f, NULL, 0), 0);
    assert_int_equal(sh_frame_parse_line(&f, NULL, 5), 0);
    assert_int_equal(sh_frame_parse_line(NULL, text, 24), 0);
}

/* Frames built by hand: zeroed memory (NULL slices) must be safe, and
 * kind SH_FRAME_UNKNOWN gets the Elixir/Erlang module rules. */
static void test_in_app_hand_built(void **state)
{
    (void)state;
    sh_frame z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(sh_frame_is_in_app(&z, NULL), 1);
    sh_slice pfx[] = {S("MyApp")};
    sh_slice apps[] = {S("my_app")};
    sh_inapp_config cfg = {apps, 1, pfx, 1};
    assert_int_equal(sh_frame_is_in_app(&z, &cfg), 0);
    sh_buf b;
    sh_buf_init(&b);
    sh_frame_file_canonical(&b, z.file);
    assert_int_equal(b.len, 0);
    sh_buf_free(&b);

    z.module = S("lists");
    assert_int_equal(sh_frame_is_in_app(&z, NULL), 0);
    z.module = S("GenServer");
    assert_int_equal(sh_frame_is_in_app(&z, NULL), 0);
    z.module = S("MyApp.Worker");
    assert_int_equal(sh_frame_is_in_app(&z, NULL), 1);
    assert_int_equal(sh_frame_is_in_app(&z, &cfg), 1);
}

static const char *const non_frames[] = {
    "",
    "   ",
    "\r",
    "\t \r",
    "** (RuntimeError) boom",
    "** (exit) an exception was raised:",
    "** (EXIT from #PID<0.1.0>) shell process exited with reason: an exception was raised:",
    "Traceback (most recent call last):",
    "Caused by: java.lang.IllegalStateException: x",
    "Caused by: Foo.bar/1",
    "TypeError: x is undefined",
    "Uncaught TypeError: Cannot read properties of undefined (reading 'x')",
    "Error: mail me@example.com:25",
    "RuntimeError: boom",
    "    raise ValueError(\"x\")",
    "    return getattr(self.get_queryset(), name)(*args, **kwargs)",
    "    ... 12 more",
    "java.lang.NullPointerException: null",
    "Exception in thread \"main\" java.lang.IllegalStateException: failed",
    "15:04:05.123 [error] GenServer #PID<0.1.0> terminating",
    "Last message: :hello",
    "Last message (from #PID<0.150.0>): {:get, 1}",
    "State: %{count: 0}",
    "        called as list_to_integer(a)",
    "** exception error: bad argument",
    "at",
    "at (",
    "    at",
    "at foo",
    "at foo bar baz",
    "at foo(bar)",
    "(",
    "()",
    "(my_app 0.1.0)",
    "(my_app 0.1.0) ",
    "(my_app 0.1.0) lib/foo.ex:12: not an mfa",
    "(my_app 0.1.0) lib/foo.ex:12: Foo",
    "lib/foo.ex: Foo.bar/1",
    "my file.ex:12: Foo.bar/1",
    "lib/foo.ex:12: foo bar/1",
    "{",
    "[",
    "{foo,bar}",
    "{foo,bar,2,[{file,\"x\"}]} trailing",
    "in function",
    "in function  foo",
    "in function  foo:bar/2 (",
    "File \"x.py\"",
    "File \"x.py\", line x",
    "@",
    "@@@@",
    "a@b",
    ":::::",
    "::: ::: :::",
    "\tat com.example.Foo.bar(",
    "\tat Foo(Foo.java:1)",
    "[native code] extra",
};

static void test_non_frames(void **state)
{
    (void)state;
    int failed = 0;
    for (size_t i = 0; i < sizeof(non_frames) / sizeof(non_frames[0]); i++) {
        sh_frame f;
        memset(&f, 0, sizeof(f));
        if (sh_frame_parse_line(&f, non_frames[i], strlen(non_frames[i])) != 0) {
            print_error("parsed as a frame: \"%s\"\n", non_frames[i]);
            print_frame(&f);
            failed = 1;
        }
    }
    assert_int_equal(failed, 0);
}

/* ------------------------------------------------------------ canonical file */

typedef struct canon_case {
    const char *in;
    const char *want;
} canon_case;

static const canon_case canon_cases[] = {
    {"https://cdn.example.com:443/static/js/main.3f9a2b1c.js?v=12#x", "/static/js/main.js"},
    {"https://app.example.com/static/js/app-4f7a9e2b.js", "/static/js/app.js"},
    {"https://x.example/static/chunk.abc123def456.min.js", "/static/chunk.min.js"},
    {"https://x.example/static/js/vendors~main.8e3b2a1f.chunk.js",
     "/static/js/vendors~main.chunk.js"},
    {"https://x.example/assets/index-BkZ3x9Qa.js", "/assets/index.js"},
    {"https://x.example/js/app.js", "/js/app.js"},
    {"https://x.example/js/jquery-3.6.0.min.js", "/js/jquery-3.6.0.min.js"},
    {"lib/my_app/user_service.ex", "lib/my_app/user_service.ex"},
    {"webpack:///./src/app.js", "src/app.js"},
    {"webpack:///src/app.js", "src/app.js"},
    {"webpack://my-app/./src/components/Button.jsx", "src/components/Button.jsx"},
    {"webpack-internal:///./src/app.js", "src/app.js"},
    {"file:///srv/app.js", "/srv/app.js"},
    {"file:///srv/main.3f9a2b1c.js?x=1", "/srv/main.3f9a2b1c.js"},
    {"node:internal/process/task_queues", "node:internal/process/task_queues"},
    {"https://user:pass@example.com:8080/a/b.js", "/a/b.js"},
    {"https://example.com", "/"},
    {"https://example.com?x=1", "/"},
    {"https://example.com/", "/"},
    {"/srv/app/main.3f9a2b1c.js", "/srv/app/main.3f9a2b1c.js"},
    {"https://x.example/_next/static/chunks/pages/_app-1a2b3c4d5e6f7a8b.js",
     "/_next/static/chunks/pages/_app.js"},
    {"https://x.example/static/js/2.3f9a2b1c.chunk.js", "/static/js/2.chunk.js"},
    {"https://x.example/static/main.facade.js", "/static/main.facade.js"},
    {"https://x.example/app.js#L10", "/app.js"},
    {"chrome-extension://abcdefghijklmnop/content.js", "/content.js"},
    {"https://x.example/dir.3f9a2b1c/app.js", "/dir.3f9a2b1c/app.js"},
    {"https://x.example/3f9a2b1c.js", "/3f9a2b1c.js"},
    {"https://x.example/app.123456.js", "/app.js"},
    {"https://x.example/app.12345.js", "/app.12345.js"},
    {"https://x.example/app.abcdefgh.js", "/app.abcdefgh.js"},
    {"https://x.example/polyfills-es2015.a1b2c3d4e5.js", "/polyfills-es2015.js"},
    {"<anonymous>", "<anonymous>"},
    {"[native code]", "[native code]"},
    {"C:\\app\\src\\index.js", "C:\\app\\src\\index.js"},
    {"", ""},
};

static void test_canonical(void **state)
{
    (void)state;
    sh_buf b;
    sh_buf_init(&b);
    int failed = 0;
    size_t n = sizeof(canon_cases) / sizeof(canon_cases[0]);
    for (size_t i = 0; i < n; i++) {
        sh_buf_reset(&b);
        sh_frame_file_canonical(&b, S(canon_cases[i].in));
        assert_int_equal(b.oom, 0);
        sh_slice got = {b.data ? b.data : "", b.len};
        if (!slice_is(got, canon_cases[i].want)) {
            print_error("canonical(\"%s\") = \"%.*s\", want \"%s\"\n", canon_cases[i].in,
                        (int)got.len, got.ptr, canon_cases[i].want);
            failed = 1;
        }
    }
    /* appends: existing content is kept */
    sh_buf_reset(&b);
    sh_buf_append_str(&b, "x|");
    sh_frame_file_canonical(&b, S("https://h/a.3f9a2b1c.js"));
    assert_true(slice_is((sh_slice){b.data, b.len}, "x|/a.js"));
    sh_buf_free(&b);
    print_message("canonical: %zu cases\n", n);
    assert_int_equal(failed, 0);
}

/* ------------------------------------------------------------ in-app */

typedef struct inapp_case {
    const char *line;
    int want;
} inapp_case;

static const inapp_case heuristic_cases[] = {
    {"(my_app 0.1.0) lib/my_app/worker.ex:42: MyApp.Worker.handle_call/3", 1},
    {"(elixir 1.14.0) lib/enum.ex:1658: Enum.map/2", 0},
    {"(stdlib 4.2) gen_server.erl:1123: :gen_server.try_dispatch/4", 0},
    {"lib/enum.ex:1: Enum.map/2", 0},
    {"lib/x.ex:1: Enumerable.List.reduce/3", 0},
    {"lib/x.ex:1: EnumHelper.map/2", 1},
    {"lib/x.ex:1: MyApp.Enum.map/2", 1},
    {"gen_server.erl:1: :gen_server.call/3", 0},
    {"my_worker.erl:1: :my_worker.loop/1", 1},
    {"nofile:1: :elixir_compiler_1.__FILE__/1", 0},
    {"deps/phoenix/lib/phoenix/router.ex:1: Phoenix.Router.call/2", 0},
    {"/app/deps/plug/lib/plug.ex:1: Plug.run/2", 0},
    {"mydeps/x.ex:1: MyApp.X.y/1", 1},
    {"/usr/lib/erlang/lib/stdlib-4.2/src/lists.erl:1: :foo.bar/1", 0},
    {"/opt/lib/erlang/lib/x.erl:1: :foo.bar/1", 0},
    {"in function  lists:map/2 (lists.erl, line 1243)", 0},
    {"in function  my_mod:run/0 (src/my_mod.erl, line 3)", 1},
    {"in function  'Elixir.GenServer':call/3", 0},
    {"{lists,map,2,[{file,\"lists.erl\"},{line,1}]}", 0},
    {"{foo,bar,2,[{file,\"src/foo.erl\"},{line,12}]}", 1},
    {"{ssl_connection,x,2,[]}", 0},
    {"at getUser (/srv/app/src/users.js:12:20)", 1},
    {"at next (/srv/app/node_modules/express/lib/router/route.js:144:13)", 0},
    {"at Array.map (<anonymous>)", 0},
    {"at Generator.next (native)", 0},
    {"at async Promise.all (index 0)", 0},
    {"at process.processTicksAndRejections (node:internal/process/task_queues:95:5)", 0},
    {"at Module._compile (internal/modules/cjs/loader.js:1085:14)", 0},
    {"at Object.<anonymous> (/srv/app/index.js:10:5)", 1},
    {"forEach@[native code]", 0},
    {"handleClick@https://app.example.com/static/js/main.3f9a2b1c.js:12:345", 1},
    {"x@https://cdn.example.com/node_modules/react-dom/cjs/react-dom.js:1:2", 0},
    {"  File \"/srv/app/views.py\", line 42, in get_user", 1},
    {"  File \"/usr/lib/python3.11/threading.py\", line 975, in run", 0},
    {"  File \"/srv/venv/lib/python3.11/site-packages/django/x.py\", line 1, in f", 0},
    {"  File \"/usr/local/lib/python3/dist-packages/x.py\", line 1, in f", 0},
    {"File \"<frozen importlib._bootstrap>\", line 1030, in _gcd_import", 0},
    {"\tat com.example.app.UserService.find(UserService.java:42)", 1},
    {"\tat java.base/java.lang.Thread.run(Thread.java:833)", 0},
    {"\tat javax.servlet.http.HttpServlet.service(HttpServlet.java:1)", 0},
    {"\tat sun.reflect.NativeMethodAccessorImpl.invoke0(Native Method)", 0},
    {"\tat jdk.internal.reflect.X.invoke(Unknown Source)", 0},
    {"\tat kotlin.collections.CollectionsKt.first(Collections.kt:1)", 0},
    {"\tat javalin.App.run(App.java:1)", 1},
};

static void test_in_app_heuristic(void **state)
{
    (void)state;
    int failed = 0;
    sh_inapp_config empty = {NULL, 0, NULL, 0};
    for (size_t i = 0; i < sizeof(heuristic_cases) / sizeof(heuristic_cases[0]); i++) {
        const inapp_case *c = &heuristic_cases[i];
        sh_frame f;
        if (!sh_frame_parse_line(&f, c->line, strlen(c->line))) {
            print_error("not parsed: %s\n", c->line);
            failed = 1;
            continue;
        }
        int got = sh_frame_is_in_app(&f, NULL);
        int got2 = sh_frame_is_in_app(&f, &empty);
        if (got != c->want || got2 != c->want) {
            print_error("in_app(%s) = %d/%d, want %d\n", c->line, got, got2, c->want);
            print_frame(&f);
            failed = 1;
        }
    }
    assert_int_equal(failed, 0);
}

static sh_frame mkframe(sh_frame_kind kind, const char *app, const char *module, const char *file)
{
    sh_frame f;
    f.kind = kind;
    f.app = S(app);
    f.module = S(module);
    f.function = S("f/0");
    f.file = S(file);
    f.line = 1;
    f.column = 0;
    return f;
}

static void test_in_app_lists(void **state)
{
    (void)state;
    static const char *const apps[] = {
        "elixir",     "stdlib", "kernel", "logger",        "compiler", "crypto", "ssl",
        "public_key", "inets",  "mnesia", "runtime_tools", "sasl",     "eex",    "ex_unit",
        "iex",        "mix",    "asn1",   "syntax_tools",  "tools",    "os_mon", "common_test",
        "xmerl",      "wx",     "erts",
    };
    for (size_t i = 0; i < sizeof(apps) / sizeof(apps[0]); i++) {
        sh_frame f = mkframe(SH_FRAME_ELIXIR, apps[i], "MyApp.X", "lib/x.ex");
        if (sh_frame_is_in_app(&f, NULL) != 0)
            fail_msg("app %s counted in-app", apps[i]);
    }
    static const char *const user_apps[] = {"my_app", "a", "zzz", "elixirx", "stdlib2", "ss"};
    for (size_t i = 0; i < sizeof(user_apps) / sizeof(user_apps[0]); i++) {
        sh_frame f = mkframe(SH_FRAME_ELIXIR, user_apps[i], "MyApp.X", "lib/x.ex");
        if (sh_frame_is_in_app(&f, NULL) != 1)
            fail_msg("app %s not in-app", user_apps[i]);
    }
    static const char *const ns[] = {
        "Access",
        "Agent",
        "Application",
        "Base",
        "Calendar",
        "Code",
        "Collectable",
        "Date",
        "DateTime",
        "DynamicSupervisor",
        "Enum",
        "Enumerable",
        "Exception",
        "File",
        "Float",
        "Function",
        "GenServer",
        "Inspect",
        "IO",
        "Integer",
        "Kernel",
        "Keyword",
        "List",
        "Logger",
        "Macro",
        "Map",
        "MapSet",
        "Module",
        "NaiveDateTime",
        "Node",
        "OptionParser",
        "Path",
        "Port",
        "Process",
        "Protocol",
        "Range",
        "Record",
        "Regex",
        "Registry",
        "Stream",
        "String",
        "StringIO",
        "Supervisor",
        "System",
        "Task",
        "Time",
        "URI",
        "Version",
        "Mix",
        "ExUnit",
        "IEx",
        "EEx",
        "Kernel.ParallelCompiler",
        "String.Chars.Integer",
        "Task.Supervised",
        "IO.ANSI",
        "Mix.Tasks.Test",
    };
    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
        sh_frame f = mkframe(SH_FRAME_ELIXIR, "", ns[i], "lib/x.ex");
        if (sh_frame_is_in_app(&f, NULL) != 0)
            fail_msg("module %s counted in-app", ns[i]);
    }
    static const char *const user_mods[] = {"MyApp", "EnumX", "IOx",      "Logger2.X",
                                            "Mixer", "A",     "Zed.Enum", "StringIOx"};
    for (size_t i = 0; i < sizeof(user_mods) / sizeof(user_mods[0]); i++) {
        sh_frame f = mkframe(SH_FRAME_ELIXIR, "", user_mods[i], "lib/x.ex");
        if (sh_frame_is_in_app(&f, NULL) != 1)
            fail_msg("module %s not in-app", user_mods[i]);
    }
    static const char *const erl[] = {
        "gen_server",
        "gen_statem",
        "gen_event",
        "gen",
        "proc_lib",
        "supervisor",
        "erlang",
        "erl_eval",
        "lists",
        "maps",
        "ets",
        "timer",
        "rpc",
        "application",
        "application_master",
        "io",
        "io_lib",
        "logger",
        "code",
        "file",
        "gen_tcp",
        "gen_udp",
        "inet",
        "ssl",
        "crypto",
        "elixir",
        "elixir_dispatch",
        "erl_parse",
        "ssl_gen_statem",
        "tls_sender",
        "prim_inet",
        "logger_h_common",
        "inet_tcp",
        "mnesia_tm",
    };
    for (size_t i = 0; i < sizeof(erl) / sizeof(erl[0]); i++) {
        sh_frame f = mkframe(SH_FRAME_ERLANG, "", erl[i], "x.erl");
        if (sh_frame_is_in_app(&f, NULL) != 0)
            fail_msg("erlang module %s counted in-app", erl[i]);
    }
    static const char *const user_erl[] = {"my_mod",         "a",    "zz", "gen_serverx", "listsx",
                                           "cowboy_handler", "ranch"};
    for (size_t i = 0; i < sizeof(user_erl) / sizeof(user_erl[0]); i++) {
        sh_frame f = mkframe(SH_FRAME_ERLANG, "", user_erl[i], "x.erl");
        if (sh_frame_is_in_app(&f, NULL) != 1)
            fail_msg("erlang module %s not in-app", user_erl[i]);
    }
    /* lowercase Java packages are not Erlang modules */
    sh_frame j = mkframe(SH_FRAME_JAVA, "", "lists", "Lists.java");
    assert_int_equal(sh_frame_is_in_app(&j, NULL), 1);
    assert_int_equal(sh_frame_is_in_app(NULL, NULL), 0);
}

static void test_in_app_config(void **state)
{
    (void)state;
    sh_slice apps[] = {S("my_app"), S("")};
    sh_slice prefixes[] = {S("MyApp"), S("/static/js/main.js"), S("lib/"), S(""),
                           S("https://cdn.example.com/")};
    sh_inapp_config cfg = {apps, 2, prefixes, 5};
    struct {
        const char *line;
        int want;
    } cases[] = {
        {"(my_app 0.1.0) lib/x.ex:1: Other.x/0", 1},
        {"(my_app 0.1.0) src/x.ex:1: Other.x/0", 1},
        {"(other 0.1.0) src/x.ex:1: MyApp.Worker.x/0", 1},
        {"(other 0.1.0) src/x.ex:1: MyAppWeb.Endpoint.x/0", 1},
        {"(other 0.1.0) lib/x.ex:1: Other.x/0", 1},
        {"(other 0.1.0) src/x.ex:1: Other.x/0", 0},
        {"(stdlib 4.2) gen_server.erl:1123: :gen_server.try_dispatch/4", 0},
        /* heuristics play no part with a configuration */
        {"(elixir 1.14.0) lib/enum.ex:1658: Enum.map/2", 1},
        {"deps/foo/src/x.ex:1: Foo.x/0", 0},
        /* URL: matched on the canonical path (hash stripped) */
        {"at f (https://app.example.com/static/js/main.3f9a2b1c.js:1:2)", 1},
        {"f@https://app.example.com:8443/static/js/main.js?v=1:1:2", 1},
        {"at f (https://app.example.com/static/js/other.3f9a2b1c.js:1:2)", 0},
        {"at f (https://app.example.com/static/js/mai.js:1:2)", 0},
        /* URL: matched on the raw file */
        {"at f (https://cdn.example.com/vendor/x.js:1:2)", 1},
        {"at f (/srv/app.js:1:2)", 0},
        {"  File \"/srv/app/views.py\", line 42, in get_user", 0},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sh_frame f;
        if (!sh_frame_parse_line(&f, cases[i].line, strlen(cases[i].line))) {
            print_error("not parsed: %s\n", cases[i].line);
            failed = 1;
            continue;
        }
        int got = sh_frame_is_in_app(&f, &cfg);
        if (got != cases[i].want) {
            print_error("in_app(%s) = %d, want %d\n", cases[i].line, got, cases[i].want);
            failed = 1;
        }
    }
    assert_int_equal(failed, 0);

    /* apps only: no prefixes */
    sh_inapp_config apps_only = {apps, 1, NULL, 0};
    sh_frame a = mkframe(SH_FRAME_ELIXIR, "my_app", "X", "lib/x.ex");
    sh_frame b = mkframe(SH_FRAME_ELIXIR, "other", "MyApp", "lib/x.ex");
    assert_int_equal(sh_frame_is_in_app(&a, &apps_only), 1);
    assert_int_equal(sh_frame_is_in_app(&b, &apps_only), 0);
    /* prefixes only */
    sh_slice p2[] = {S("com.example.")};
    sh_inapp_config pfx_only = {NULL, 0, p2, 1};
    sh_frame j1 = mkframe(SH_FRAME_JAVA, "", "com.example.app.UserService", "UserService.java");
    sh_frame j2 = mkframe(SH_FRAME_JAVA, "", "org.example.Foo", "Foo.java");
    assert_int_equal(sh_frame_is_in_app(&j1, &pfx_only), 1);
    assert_int_equal(sh_frame_is_in_app(&j2, &pfx_only), 0);
    /* a prefix longer than the canonical path */
    sh_slice p3[] = {S("/static/js/main.js/and/more")};
    sh_inapp_config longp = {NULL, 0, p3, 1};
    sh_frame u = mkframe(SH_FRAME_JS, "", "", "https://h/static/js/main.3f9a2b1c.js");
    assert_int_equal(sh_frame_is_in_app(&u, &longp), 0);
}

/* ------------------------------------------------------------ whole traces */

typedef struct expect_frame {
    sh_frame_kind kind;
    const char *module;
    const char *function;
    const char *file;
    uint32_t line;
} expect_frame;

static void check_trace(const char *text, const expect_frame *want, size_t nwant)
{
    sh_frame out[64];
    size_t n = sh_frames_parse_text(out, 64, text, strlen(text));
    if (n != nwant) {
        print_error("parsed %zu frames, want %zu\n", n, nwant);
        for (size_t i = 0; i < n; i++)
            print_frame(&out[i]);
        fail();
    }
    for (size_t i = 0; i < n; i++) {
        if (out[i].kind != want[i].kind || !slice_is(out[i].module, want[i].module) ||
            !slice_is(out[i].function, want[i].function) || !slice_is(out[i].file, want[i].file) ||
            out[i].line != want[i].line) {
            print_error("frame %zu: want %s \"%s\" \"%s\" \"%s\" %u\n", i, kind_name(want[i].kind),
                        want[i].module, want[i].function, want[i].file, want[i].line);
            print_frame(&out[i]);
            fail();
        }
        assert_slices_in(&out[i], text, strlen(text));
    }
}

static const char elixir_trace[] =
    "15:04:05.123 [error] GenServer MyApp.Worker terminating\n"
    "** (RuntimeError) boom\n"
    "    (my_app 0.1.0) lib/my_app/worker.ex:42: MyApp.Worker.handle_call/3\n"
    "    (stdlib 4.2) gen_server.erl:1149: :gen_server.try_handle_call/4\n"
    "    (stdlib 4.2) gen_server.erl:1178: :gen_server.handle_msg/6\n"
    "    (stdlib 4.2) proc_lib.erl:240: :proc_lib.init_p_do_apply/3\n"
    "Last message (from #PID<0.150.0>): {:get, 1}\n"
    "State: %{count: 0}\n"
    "Client #PID<0.150.0> is alive\n"
    "\n"
    "    (stdlib 4.2) gen.erl:240: :gen.do_call/4\n"
    "    (elixir 1.14.0) lib/gen_server.ex:1035: GenServer.call/3\n"
    "    (my_app 0.1.0) lib/my_app.ex:10: anonymous fn/1 in MyApp.get/1\n";

static void test_trace_elixir(void **state)
{
    (void)state;
    static const expect_frame want[] = {
        {EX, "MyApp.Worker", "handle_call/3", "lib/my_app/worker.ex", 42},
        {EX, "gen_server", "try_handle_call/4", "gen_server.erl", 1149},
        {EX, "gen_server", "handle_msg/6", "gen_server.erl", 1178},
        {EX, "proc_lib", "init_p_do_apply/3", "proc_lib.erl", 240},
        {EX, "gen", "do_call/4", "gen.erl", 240},
        {EX, "GenServer", "call/3", "lib/gen_server.ex", 1035},
        {EX, "MyApp", "get/1", "lib/my_app.ex", 10},
    };
    check_trace(elixir_trace, want, sizeof(want) / sizeof(want[0]));
}

static void test_trace_erlang(void **state)
{
    (void)state;
    static const char text[] =
        "** exception error: bad argument\n"
        "     in function  list_to_integer/1\n"
        "        called as list_to_integer(a)\n"
        "        *** argument 1: not a textual representation of an integer\n"
        "     in call from foo:bar/1 (foo.erl, line 5)\n"
        "     in call from erl_eval:do_apply/7 (erl_eval.erl, line 748)\n"
        "{badarg,[{erlang,list_to_integer,[a],[{error_info,#{module => erl_erts_errors}}]},\n"
        "         {foo,bar,1,[{file,\"foo.erl\"},{line,5}]},\n"
        "         {proc_lib,init_p_do_apply,3,[{file,\"proc_lib.erl\"},{line,240}]}]}\n";
    static const expect_frame want[] = {
        {ERL, "", "list_to_integer/1", "", 0},
        {ERL, "foo", "bar/1", "foo.erl", 5},
        {ERL, "erl_eval", "do_apply/7", "erl_eval.erl", 748},
        {ERL, "foo", "bar", "foo.erl", 5},
        {ERL, "proc_lib", "init_p_do_apply", "proc_lib.erl", 240},
    };
    check_trace(text, want, sizeof(want) / sizeof(want[0]));
}

static void test_trace_node(void **state)
{
    (void)state;
    static const char text[] =
        "TypeError: Cannot read properties of undefined (reading 'id')\n"
        "    at getUser (/srv/app/src/users.js:12:20)\n"
        "    at Layer.handle [as handle_request] "
        "(/srv/app/node_modules/express/lib/router/layer.js:95:5)\n"
        "    at next (/srv/app/node_modules/express/lib/router/route.js:144:13)\n"
        "    at async Promise.all (index 0)\n"
        "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)";
    static const expect_frame want[] = {
        {JS, "", "getUser", "/srv/app/src/users.js", 12},
        {JS, "", "Layer.handle", "/srv/app/node_modules/express/lib/router/layer.js", 95},
        {JS, "", "next", "/srv/app/node_modules/express/lib/router/route.js", 144},
        {JS, "", "Promise.all", "", 0},
        {JS, "", "process.processTicksAndRejections", "node:internal/process/task_queues", 95},
    };
    check_trace(text, want, sizeof(want) / sizeof(want[0]));
}

static void test_trace_firefox(void **state)
{
    (void)state;
    static const char text[] =
        "TypeError: x is undefined\r\n"
        "handleClick@https://app.example.com/static/js/main.3f9a2b1c.js:12:345\r\n"
        "dispatch@https://app.example.com/static/js/vendors~main.8e3b2a1f.chunk.js:2:1000\r\n"
        "EventListener.handleEvent*init@https://app.example.com/static/js/main.3f9a2b1c.js:40:7\r\n"
        "@https://app.example.com/static/js/main.3f9a2b1c.js:50:1\r\n";
    static const expect_frame want[] = {
        {JS, "", "handleClick", "https://app.example.com/static/js/main.3f9a2b1c.js", 12},
        {JS, "", "dispatch", "https://app.example.com/static/js/vendors~main.8e3b2a1f.chunk.js", 2},
        {JS, "", "init", "https://app.example.com/static/js/main.3f9a2b1c.js", 40},
        {JS, "", "", "https://app.example.com/static/js/main.3f9a2b1c.js", 50},
    };
    check_trace(text, want, sizeof(want) / sizeof(want[0]));
}

static void test_trace_python(void **state)
{
    (void)state;
    static const char text[] =
        "Traceback (most recent call last):\n"
        "  File \"/srv/app/views.py\", line 42, in get_user\n"
        "    user = User.objects.get(id=user_id)\n"
        "  File \"/usr/lib/python3/dist-packages/django/db/models/manager.py\", line 85, in "
        "manager_method\n"
        "    return getattr(self.get_queryset(), name)(*args, **kwargs)\n"
        "  File \"/srv/app/models.py\", line 7, in get\n"
        "    raise DoesNotExist(\"User matching query does not exist.\")\n"
        "DoesNotExist: User matching query does not exist.\n";
    static const expect_frame want[] = {
        {PY, "", "get_user", "/srv/app/views.py", 42},
        {PY, "", "manager_method", "/usr/lib/python3/dist-packages/django/db/models/manager.py",
         85},
        {PY, "", "get", "/srv/app/models.py", 7},
    };
    check_trace(text, want, sizeof(want) / sizeof(want[0]));
}

static void test_trace_java(void **state)
{
    (void)state;
    static const char text[] =
        "Exception in thread \"main\" java.lang.IllegalStateException: failed\n"
        "\tat com.example.app.UserService.find(UserService.java:42)\n"
        "\tat com.example.app.Main.main(Main.java:10)\n"
        "Caused by: java.sql.SQLException: connection refused\n"
        "\tat org.postgresql.Driver.connect(Driver.java:285)\n"
        "\tat java.sql/java.sql.DriverManager.getConnection(DriverManager.java:681)\n"
        "\tat com.example.app.UserService.find(UserService.java:40)\n"
        "\t... 1 more\n";
    static const expect_frame want[] = {
        {JAVA, "com.example.app.UserService", "find", "UserService.java", 42},
        {JAVA, "com.example.app.Main", "main", "Main.java", 10},
        {JAVA, "org.postgresql.Driver", "connect", "Driver.java", 285},
        {JAVA, "java.sql.DriverManager", "getConnection", "DriverManager.java", 681},
        {JAVA, "com.example.app.UserService", "find", "UserService.java", 40},
    };
    check_trace(text, want, sizeof(want) / sizeof(want[0]));
}

/* A goroutine dump: the file lines are frames, each with the function of
 * the line before it; Go's own packages are not in-app. */
static void test_trace_go(void **state)
{
    (void)state;
    static const char text[] = "panic: runtime error: index out of range [5] with length 3\n"
                               "\n"
                               "goroutine 1 [running]:\n"
                               "github.com/acme/shop/orders.(*Service).Lookup(0xc000010000, 0x5)\n"
                               "\t/src/shop/orders/service.go:42 +0x1d\n"
                               "main.main()\n"
                               "\t/src/shop/main.go:8\n"
                               "created by net/http.(*Server).Serve in goroutine 1\n"
                               "\t/usr/local/go/src/net/http/server.go:3086 +0x5cb\n"
                               "exit status 2\n";
    static const expect_frame want[] = {
        {SH_FRAME_GO, "github.com/acme/shop/orders", "(*Service).Lookup",
         "/src/shop/orders/service.go", 42},
        {SH_FRAME_GO, "main", "main", "/src/shop/main.go", 8},
        {SH_FRAME_GO, "net/http", "(*Server).Serve", "/usr/local/go/src/net/http/server.go", 3086},
    };
    check_trace(text, want, sizeof(want) / sizeof(want[0]));
    sh_frame out[4];
    assert_int_equal(sh_frames_parse_text(out, 4, text, strlen(text)), 3);
    assert_int_equal(sh_frame_is_in_app(&out[0], NULL), 1);
    assert_int_equal(sh_frame_is_in_app(&out[2], NULL), 0);
    /* not Go file lines */
    sh_frame f;
    assert_int_equal(sh_frame_parse_line(&f, "\tcargo.go", 9), 0);
    assert_int_equal(sh_frame_parse_line(&f, "see a b.go:12", 13), 0);
}

static void test_parse_text_max(void **state)
{
    (void)state;
    sh_frame out[8];
    size_t len = strlen(elixir_trace);
    assert_int_equal(sh_frames_parse_text(out, 0, elixir_trace, len), 0);
    assert_int_equal(sh_frames_parse_text(out, 2, elixir_trace, len), 2);
    assert_true(slice_is(out[0].function, "handle_call/3"));
    assert_true(slice_is(out[1].function, "try_handle_call/4"));
    assert_int_equal(sh_frames_parse_text(out, 8, elixir_trace, len), 7);
    assert_int_equal(sh_frames_parse_text(out, 8, elixir_trace, 0), 0);
    assert_int_equal(sh_frames_parse_text(out, 8, NULL, 0), 0);
    /* the last line may lack its newline; a line may be cut by len */
    const char *two = "lib/a.ex:1: A.a/0\nlib/b.ex:2: B.b/0";
    assert_int_equal(sh_frames_parse_text(out, 8, two, strlen(two)), 2);
    assert_int_equal(sh_frames_parse_text(out, 8, two, strlen(two) - 4), 1);

    /* after storing max frames nothing further is read: the text runs into
     * an inaccessible page right after the second frame's newline */
    long page = sysconf(_SC_PAGESIZE);
    assert_true(page > 0);
    char *mem =
        mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    assert_int_equal(mprotect(mem + page, (size_t)page, PROT_NONE), 0);
    const char *frames2 = "noise\nlib/a.ex:1: A.a/0\nlib/b.ex:2: B.b/0\n";
    size_t flen = strlen(frames2);
    char *start = mem + page - flen;
    memcpy(start, frames2, flen);
    assert_int_equal(sh_frames_parse_text(out, 2, start, flen + (size_t)page), 2);
    assert_true(slice_is(out[1].module, "B"));
    munmap(mem, (size_t)page * 2);
}

/* ------------------------------------------------------------ hostile input */

/* Fills b[0..n) with copies of pattern, doubling the copied run. */
static void fill_pattern(char *b, size_t n, const char *pattern)
{
    size_t pl = strlen(pattern), done = pl < n ? pl : n;
    memcpy(b, pattern, done);
    while (done < n) {
        size_t k = done < n - done ? done : n - done;
        memcpy(b + done, b, k);
        done += k;
    }
}

/* Parses b as one line and as text, returns the number of frames found as
 * text (bounded by 1024). */
static size_t parse_both(const char *b, size_t n)
{
    static sh_frame out[1024];
    sh_frame f;
    (void)sh_frame_parse_line(&f, b, n);
    return sh_frames_parse_text(out, 1024, b, n);
}

static void test_hostile_long_lines(void **state)
{
    (void)state;
    const size_t big = 10u << 20;
    double t0 = now_s();
    static const char *const patterns[] = {
        "a",  "(",  ":",    "@",      "(((((((((a ", ")",         "{",          "[",
        "\"", "'",  " in ", ": ",     "::: ",        "at (",      "@a:1:",      "{a,b,[",
        "9",  ":9", "/9",   "(a b) ", "File \"",     "\", line ", " line 1 > ", "anonymous fn/ in ",
        "a.", "A.", "A.b",  ") ~[",   "[as ",        "eval at (",
    };
    static const char *const heads[] = {
        "",
        "(my_app 0.1.0) ",
        "(my_app 0.1.0) lib/x.ex:1: ",
        "at ",
        "at f (",
        "at a.B.c(",
        "in function  ",
        "in function  a:b(",
        "in function  a:b/1 (",
        "{",
        "{a,b,",
        "{a,b,1,[",
        "File \"",
        "f@",
        "lib/x.ex:1: anonymous fn/0 in ",
        "lib/x.ex:1: A.",
        "lib/x.ex:1: A.\"",
    };
    char *buf = malloc(big + 64);
    assert_non_null(buf);
    double slowest = 0;
    size_t slow_h = 0, slow_p = 0;
    for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
        for (size_t p = 0; p < sizeof(patterns) / sizeof(patterns[0]); p++) {
            size_t hl = strlen(heads[h]);
            /* the full 10 MB for the bare patterns, 1 MB with a head */
            size_t n = h == 0 ? big : (1u << 20);
            memcpy(buf, heads[h], hl);
            fill_pattern(buf + hl, n - hl, patterns[p]);
            double t1 = now_s();
            (void)parse_both(buf, n);
            double dt = now_s() - t1;
            if (dt > slowest) {
                slowest = dt;
                slow_h = h;
                slow_p = p;
            }
        }
    }
    /* a 10 MB frame is still a frame */
    const char *head = "    (my_app 0.1.0) lib/";
    const char *tail = ".ex:42: MyApp.Worker.handle_call/3";
    size_t hl = strlen(head), tl = strlen(tail);
    memcpy(buf, head, hl);
    memset(buf + hl, 'a', big - hl - tl);
    memcpy(buf + big - tl, tail, tl);
    sh_frame f;
    assert_int_equal(sh_frame_parse_line(&f, buf, big), 1);
    assert_int_equal(f.line, 42);
    assert_int_equal(f.file.len, big - hl - tl + 4 + 3);
    /* a 10 MB line number clamps */
    const char *h2 = "lib/a.ex:";
    memcpy(buf, h2, strlen(h2));
    memset(buf + strlen(h2), '9', big - 40);
    memcpy(buf + strlen(h2) + big - 40, ": A.b/0", 7);
    assert_int_equal(sh_frame_parse_line(&f, buf, strlen(h2) + big - 40 + 7), 1);
    assert_int_equal(f.line, UINT32_MAX);
    free(buf);
    print_message("long lines: %.2f s (slowest %.3f s: \"%s\" + \"%s\"...)\n", now_s() - t0,
                  slowest, heads[slow_h], patterns[slow_p]);
}

static void test_hostile_many_lines(void **state)
{
    (void)state;
    double t0 = now_s();
    static const char *const lines[] = {"at (\n", "@@@@\n",     ":::::\n",       "(\n",
                                        "\n",     "{a,b,1,[\n", "at f (x:1:2)\n"};
    for (size_t k = 0; k < sizeof(lines) / sizeof(lines[0]); k++) {
        size_t ll = strlen(lines[k]), n = 100000 * ll;
        char *b = malloc(n);
        assert_non_null(b);
        for (size_t i = 0; i < 100000; i++)
            memcpy(b + i * ll, lines[k], ll);
        size_t got = parse_both(b, n);
        if (k == sizeof(lines) / sizeof(lines[0]) - 1)
            assert_int_equal(got, 1024); /* every line a frame, bounded by max */
        else
            assert_int_equal(got, 0);
        free(b);
    }
    /* only '@' and only ':' on one line */
    char *b = malloc(1u << 20);
    assert_non_null(b);
    memset(b, '@', 1u << 20);
    assert_int_equal(parse_both(b, 1u << 20), 0);
    memset(b, ':', 1u << 20);
    assert_int_equal(parse_both(b, 1u << 20), 0);
    free(b);
    print_message("many lines: %.2f s\n", now_s() - t0);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static void test_hostile_random(void **state)
{
    (void)state;
    double t0 = now_s();
    const size_t n = 4u << 20;
    char *b = malloc(n);
    assert_non_null(b);
    /* raw random bytes */
    for (size_t i = 0; i < n; i++)
        b[i] = (char)(rng() >> 56);
    (void)parse_both(b, n);
    /* random bytes drawn from the characters the parsers care about */
    static const char alphabet[] = "()[]{}:@ ,/.\"'\\aA0:9 in at File line > ~[\n\t\r<>*$#?";
    for (size_t i = 0; i < n; i++)
        b[i] = alphabet[rng() % (sizeof(alphabet) - 1)];
    (void)parse_both(b, n);
    /* many short random lines, each parsed and checked to stay in bounds */
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(rng() % 80);
        char line[80];
        for (size_t i = 0; i < len; i++)
            line[i] = alphabet[rng() % (sizeof(alphabet) - 1)];
        sh_frame f;
        if (sh_frame_parse_line(&f, line, len)) {
            assert_true(f.kind != SH_FRAME_UNKNOWN);
            assert_slices_in(&f, line, len);
        }
    }
    free(b);
    print_message("random: %.2f s\n", now_s() - t0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_table),        cmocka_unit_test(test_parse_honours_len),
        cmocka_unit_test(test_non_frames),         cmocka_unit_test(test_canonical),
        cmocka_unit_test(test_in_app_heuristic),   cmocka_unit_test(test_in_app_lists),
        cmocka_unit_test(test_in_app_config),      cmocka_unit_test(test_in_app_hand_built),
        cmocka_unit_test(test_trace_elixir),       cmocka_unit_test(test_trace_erlang),
        cmocka_unit_test(test_trace_node),         cmocka_unit_test(test_trace_firefox),
        cmocka_unit_test(test_trace_python),       cmocka_unit_test(test_trace_java),
        cmocka_unit_test(test_trace_go),           cmocka_unit_test(test_parse_text_max),
        cmocka_unit_test(test_hostile_long_lines), cmocka_unit_test(test_hostile_many_lines),
        cmocka_unit_test(test_hostile_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
