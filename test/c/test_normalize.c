/*
 * Tests of the message normaliser (c_src/normalize.c): a table of real
 * error messages and log lines with their exact normal form, focused tests
 * per placeholder and rule, properties (equal after normalising / not
 * equal), and hostile inputs that must stay linear and give valid UTF-8.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "self_heal/normalize.h"

typedef struct tcase {
    const char *in;
    const char *want;
} tcase;

/* Normalises in[0..len) into a fresh buffer; the caller frees it. */
static sh_buf norm_n(const char *in, size_t len)
{
    sh_buf b;
    sh_buf_init(&b);
    assert_int_equal(sh_normalize(&b, in, len), 0);
    assert_false(b.oom);
    return b;
}

static int check_case(const char *in, size_t len, const char *want)
{
    sh_buf b = norm_n(in, len);
    int ok = b.len == strlen(want) && memcmp(b.data, want, b.len) == 0;
    if (!ok)
        print_error("input:    \"%s\"\nexpected: \"%s\"\ngot:      \"%.*s\"\n", in, want,
                    (int)b.len, b.data ? b.data : "");
    sh_buf_free(&b);
    return ok;
}

static void check_table(const tcase *cases, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += !check_case(cases[i].in, strlen(cases[i].in), cases[i].want);
    if (bad)
        fail_msg("%zu of %zu cases differ", bad, n);
}

#define CHECK_TABLE(t) check_table((t), sizeof(t) / sizeof((t)[0]))

/* ------------------------------------------------------------------ *
 * Real-world messages
 * ------------------------------------------------------------------ */

static const tcase REAL_WORLD[] = {
    {"** (Ecto.NoResultsError) expected at least one result but got none in query: from u0 in "
     "MyApp.User, where: u0.id == ^42",
     "** (Ecto.NoResultsError) expected at least one result but got none in query: from u0 in "
     "MyApp.User, where: u0.id == ^<int>"},
    {"** (Ecto.NoResultsError) expected at least one result but got none in query:\n\nfrom u0 in "
     "MyApp.User,\n  where: u0.id == ^42",
     "** (Ecto.NoResultsError) expected at least one result but got none in query:\n\nfrom u0 in "
     "MyApp.User,\n where: u0.id == ^<int>"},
    {"** (Ecto.MultipleResultsError) expected at most one result but got 3 in query:",
     "** (Ecto.MultipleResultsError) expected at most one result but got <int> in query:"},
    {"** (Ecto.StaleEntryError) attempted to update a stale struct:\n\n%MyApp.Post{id: 17, title: "
     "\"hi\"}",
     "** (Ecto.StaleEntryError) attempted to update a stale struct:\n\n%MyApp.Post{id: <int>, "
     "title: <str>}"},
    {"** (Ecto.ConstraintError) constraint error when attempting to insert struct:\n\n    * "
     "users_email_index (unique_constraint)",
     "** (Ecto.ConstraintError) constraint error when attempting to insert struct:\n\n * "
     "users_email_index (unique_constraint)"},
    {"** (Ecto.Query.CastError) deps/ecto/lib/ecto/repo/queryable.ex:166: value `\"abc\"` in "
     "`where` cannot be cast to type :id in query:",
     "** (Ecto.Query.CastError) deps/ecto/lib/ecto/repo/queryable.ex:<int>: value `\"abc\"` in "
     "`where` cannot be cast to type :id in query:"},
    {"** (Ecto.ChangeError) value `\"2024-13-45\"` for `MyApp.Event.starts_at` in `insert` does "
     "not match type :utc_datetime",
     "** (Ecto.ChangeError) value `\"<int>-<int>-<int>\"` for `MyApp.Event.starts_at` in `insert` "
     "does not match type :utc_datetime"},
    {"** (DBConnection.ConnectionError) tcp connect (localhost:5432): connection refused - "
     ":econnrefused",
     "** (DBConnection.ConnectionError) tcp connect (localhost:<int>): connection refused - "
     ":econnrefused"},
    {"** (DBConnection.ConnectionError) tcp connect (db.internal:5432): non-existing domain - "
     ":nxdomain",
     "** (DBConnection.ConnectionError) tcp connect (db.internal:<int>): non-existing domain - "
     ":nxdomain"},
    {"** (DBConnection.ConnectionError) connection not available and request was dropped from "
     "queue after 2843ms. This means requests are coming in and your connection pool cannot serve "
     "them fast enough.",
     "** (DBConnection.ConnectionError) connection not available and request was dropped from "
     "queue after <dur>. This means requests are coming in and your connection pool cannot serve "
     "them fast enough."},
    {"** (DBConnection.ConnectionError) tcp recv (idle): closed",
     "** (DBConnection.ConnectionError) tcp recv (idle): closed"},
    {"** (DBConnection.ConnectionError) client #PID<0.4567.0> timed out because it queued and "
     "checked out the connection for longer than 15000ms",
     "** (DBConnection.ConnectionError) client <pid> timed out because it queued and checked out "
     "the connection for longer than <dur>"},
    {"** (Postgrex.Error) ERROR 23505 (unique_violation) duplicate key value violates unique "
     "constraint \"users_email_index\"",
     "** (Postgrex.Error) ERROR <int> (unique_violation) duplicate key value violates unique "
     "constraint \"users_email_index\""},
    {"** (Postgrex.Error) ERROR 40P01 (deadlock_detected) deadlock detected",
     "** (Postgrex.Error) ERROR 40P01 (deadlock_detected) deadlock detected"},
    {"** (Postgrex.Error) ERROR 42P01 (undefined_table) relation \"users\" does not exist",
     "** (Postgrex.Error) ERROR 42P01 (undefined_table) relation \"users\" does not exist"},
    {"** (Phoenix.Router.NoRouteError) no route found for GET /api/users/123/posts "
     "(MyAppWeb.Router)",
     "** (Phoenix.Router.NoRouteError) no route found for GET /api/users/<int>/posts "
     "(MyAppWeb.Router)"},
    {"** (Phoenix.ActionClauseError) no function clause matching in MyAppWeb.UserController.show/2",
     "** (Phoenix.ActionClauseError) no function clause matching in "
     "MyAppWeb.UserController.show/2"},
    {"** (Plug.Conn.InvalidQueryError) invalid query string \"a=%ZZ\"",
     "** (Plug.Conn.InvalidQueryError) invalid query string \"a=%ZZ\""},
    {"** (Plug.CSRFProtection.InvalidCSRFTokenError) invalid CSRF (Cross Site Request Forgery) "
     "token, please make sure that:",
     "** (Plug.CSRFProtection.InvalidCSRFTokenError) invalid CSRF (Cross Site Request Forgery) "
     "token, please make sure that:"},
    {"** (KeyError) key :id not found in: %{name: \"x\"}",
     "** (KeyError) key :id not found in: %{name: <str>}"},
    {"** (KeyError) key :user_id not found in: %{name: \"bob\", email: \"bob@example.com\", id: "
     "12345, role: :admin}",
     "** (KeyError) key :user_id not found in: %{name: <str>, email: <str>, id: <int>, role: "
     ":admin}"},
    {"** (FunctionClauseError) no function clause matching in MyApp.Accounts.get_user!/1",
     "** (FunctionClauseError) no function clause matching in MyApp.Accounts.get_user!/1"},
    {"** (UndefinedFunctionError) function MyApp.Foo.bar/2 is undefined (module MyApp.Foo is not "
     "available)",
     "** (UndefinedFunctionError) function MyApp.Foo.bar/2 is undefined (module MyApp.Foo is not "
     "available)"},
    {"** (UndefinedFunctionError) function :crypto.hmac/3 is undefined or private",
     "** (UndefinedFunctionError) function :crypto.hmac/3 is undefined or private"},
    {"** (ArithmeticError) bad argument in arithmetic expression: 1 / 0",
     "** (ArithmeticError) bad argument in arithmetic expression: <int> / <int>"},
    {"** (MatchError) no match of right hand side value: {:error, :timeout}",
     "** (MatchError) no match of right hand side value: {:error, :timeout}"},
    {"** (MatchError) no match of right hand side value: {:error, %Mint.TransportError{reason: "
     ":econnrefused}}",
     "** (MatchError) no match of right hand side value: {:error, %Mint.TransportError{reason: "
     ":econnrefused}}"},
    {"** (CaseClauseError) no case clause matching: {:ok, 42, \"x\"}",
     "** (CaseClauseError) no case clause matching: {:ok, <int>, \"x\"}"},
    {"** (ArgumentError) argument error: :erlang.binary_to_existing_atom(\"foo_bar\", :utf8)",
     "** (ArgumentError) argument error: :erlang.binary_to_existing_atom(\"foo_bar\", :utf8)"},
    {"** (ArgumentError) errors were found at the given arguments:\n\n  * 1st argument: not an "
     "atom\n\n    :erlang.atom_to_binary(\"x\")",
     "** (ArgumentError) errors were found at the given arguments:\n\n * 1st argument: not an "
     "atom\n\n :erlang.atom_to_binary(\"x\")"},
    {"** (RuntimeError) could not lookup Ecto repo MyApp.Repo because it was not started or it "
     "does not exist",
     "** (RuntimeError) could not lookup Ecto repo MyApp.Repo because it was not started or it "
     "does not exist"},
    {"** (Protocol.UndefinedError) protocol Enumerable not implemented for nil of type Atom",
     "** (Protocol.UndefinedError) protocol Enumerable not implemented for nil of type Atom"},
    {"** (BadMapError) expected a map, got: \"string\"",
     "** (BadMapError) expected a map, got: <str>"},
    {"** (Jason.DecodeError) unexpected byte at position 0: 0x3C (\"<\")",
     "** (Jason.DecodeError) unexpected byte at position <int>: <hex> (\"<\")"},
    {"** (Mint.TransportError) timeout", "** (Mint.TransportError) timeout"},
    {"** (exit) exited in: GenServer.call(#PID<0.123.0>, {:get, 42}, 5000)",
     "** (exit) exited in: GenServer.call(<pid>, <args>)"},
    {"** (exit) exited in: GenServer.call(MyApp.Cache, {:get, \"user:42\"}, 5000)\n    ** (EXIT) "
     "time out",
     "** (exit) exited in: GenServer.call(MyApp.Cache, <args>)\n ** (EXIT) time out"},
    {"** (exit) exited in: :gen_server.call(#PID<0.1234.0>, :ping, :infinity)\n    ** (EXIT) no "
     "process: the process is not alive or there's no process currently associated with the given "
     "name",
     "** (exit) exited in: :gen_server.call(<pid>, <args>)\n ** (EXIT) no process: the process is "
     "not alive or there's no process currently associated with the given name"},
    {"** (exit) exited in: Task.await(%Task{owner: #PID<0.500.0>, pid: #PID<0.501.0>, ref: "
     "#Reference<0.123.456.789>}, 5000)",
     "** (exit) exited in: Task.await(%Task{owner: <pid>, pid: <pid>, ref: <ref>}, <args>)"},
    {"** (exit) exited in: GenServer.call(MyApp.Cache, {:put, \"k\", %{a: 1}}, :infinity)",
     "** (exit) exited in: GenServer.call(MyApp.Cache, <args>)"},
    {"** (EXIT from #PID<0.95.0>) shell process exited with reason: an exception was raised:",
     "** (EXIT from <pid>) shell process exited with reason: an exception was raised:"},
    {"GenServer MyApp.Worker terminating\n** (stop) exited in: GenServer.call(#PID<0.321.0>, "
     "{:work, 7}, 5000)",
     "GenServer MyApp.Worker terminating\n** (stop) exited in: GenServer.call(<pid>, <args>)"},
    {"Process #PID<0.1156.0> terminating\n** (exit) {:undef, [{MyApp.Foo, :bar, [1, \"x\"], []}, "
     "{:proc_lib, :init_p_do_apply, 3, [file: 'proc_lib.erl', line: 226]}]}",
     "Process <pid> terminating\n** (exit) {:undef, [{MyApp.Foo, :bar, <args>, []}, {:proc_lib, "
     ":init_p_do_apply, <int>, [file: <str>, line: <int>]}]}"},
    {"{:undef, [{Foo, :bar, [\"abc\", 123], []}]}", "{:undef, [{Foo, :bar, <args>, []}]}"},
    {"Task #PID<0.250.0> started from MyApp.Supervisor terminating",
     "Task <pid> started from MyApp.Supervisor terminating"},
    {"Ranch listener MyAppWeb.Endpoint.HTTP had connection process started with "
     ":cowboy_clear:start_link/4 at #PID<0.6042.0> exit with reason: {:timeout, {GenServer, :call, "
     "[MyApp.Registry, {:lookup, \"abc\"}, 5000]}}",
     "Ranch listener MyAppWeb.Endpoint.HTTP had connection process started with "
     ":cowboy_clear:start_link/4 at <pid> exit with reason: {:timeout, {GenServer, :call, "
     "<args>}}"},
    {"Postgrex.Protocol (#PID<0.400.0>) failed to connect: ** (DBConnection.ConnectionError) tcp "
     "connect (localhost:5432): connection refused - :econnrefused",
     "Postgrex.Protocol (<pid>) failed to connect: ** (DBConnection.ConnectionError) tcp connect "
     "(localhost:<int>): connection refused - :econnrefused"},
    {"Application my_app exited: MyApp.Application.start(:normal, []) returned an error: shutdown: "
     "failed to start child: MyApp.Repo",
     "Application my_app exited: MyApp.Application.start(:normal, []) returned an error: shutdown: "
     "failed to start child: MyApp.Repo"},
    {"Elixir 1.14.0 (compiled with Erlang/OTP 25)",
     "Elixir <ver> (compiled with Erlang/OTP <int>)"},
    {"(my_app 0.1.0) lib/my_app/worker.ex:42: MyApp.Worker.handle_call/3",
     "(my_app <ver>) lib/my_app/worker.ex:<int>: MyApp.Worker.handle_call/3"},
    {"    (elixir 1.15.7) lib/enum.ex:1693: Enum.\"-map/2-lists^map/1-0-\"/2",
     "(elixir <ver>) lib/enum.ex:<int>: Enum.\"-map/<int>-lists^map/<int>-<int>-\"/2"},
    {"    (stdlib 4.3) gen_server.erl:1123: :gen_server.try_handle_call/4",
     "(stdlib <float>) gen_server.erl:<int>: :gen_server.try_handle_call/4"},
    {"    anonymous fn/2 in MyApp.Worker.init/1", "anonymous fn/<int> in MyApp.Worker.init/1"},
    {"12:00:00.123 [error] GenServer MyApp.Worker terminating",
     "<ts> [error] GenServer MyApp.Worker terminating"},
    {"12:00:00.123 [error] Postgrex.Protocol (#PID<0.400.0>) disconnected: ** "
     "(DBConnection.ConnectionError) tcp recv: connection timed out - :etimedout",
     "<ts> [error] Postgrex.Protocol (<pid>) disconnected: ** (DBConnection.ConnectionError) tcp "
     "recv: connection timed out - :etimedout"},
    {"2024-05-01 12:00:00.123 [info] GET /api/users/42", "<ts> [info] GET /api/users/<int>"},
    {"2024-05-01 12:00:00.123 [info] Sent 200 in 15ms", "<ts> [info] Sent <int> in <dur>"},
    /* data sizes */
    {"Block broadcast_0 stored as values in memory (estimated size 384.0 B, free 317.5 KB)",
     "Block broadcast_<int> stored as values in memory (estimated size <size>, free <size>)"},
    {"Total memory: 64172 MB, used: 512.00 MB", "Total memory: <size>, used: <size>"},
    {"read 4096 bytes, wrote 1GiB; 12 Bears", "read <size>, wrote <size>; <int> Bears"},
    {"14:23:11.042 request_id=F1nAXb2m7h0AAAAB [info] Sent 500 in 2ms",
     "<ts> request_id=F1nAXb2m7h0AAAAB [info] Sent <int> in <dur>"},
    {"14:23:11.042 [error] #PID<0.2345.0> running MyAppWeb.Endpoint (connection #PID<0.2344.0>, "
     "stream id 1) terminated",
     "<ts> [error] <pid> running MyAppWeb.Endpoint (connection <pid>, stream id <int>) terminated"},
    {"2024-05-01T12:00:00.123456Z [warning] Oban.Queue default: job 98765 failed after 3 attempts "
     "in 1.5s",
     "<ts> [warning] Oban.Queue default: job <int> failed after <int> attempts in <dur>"},
    {"{\"time\":\"2024-05-01T12:00:00Z\",\"level\":\"error\",\"msg\":\"boom\",\"user_id\":42}",
     "{\"time\":<str>,\"level\":<str>,\"msg\":<str>,\"user_id\":<int>}"},
    {"level=error ts=2024-05-01T12:00:00.123Z msg=\"request failed\" duration=1.5s status=500",
     "level=error ts=<ts> msg=<str> duration=<dur> status=<int>"},
    {"=ERROR REPORT==== 1-May-2024::12:00:00.123456 ===", "=ERROR REPORT==== <ts> ==="},
    {"** Generic server my_server terminating \n** Last message in was {get,42}\n** When Server "
     "state == {state,<0.88.0>,[]}",
     "** Generic server my_server terminating\n** Last message in was {get,<int>}\n** When Server "
     "state == {state,<pid>,[]}"},
    {"{badarg,[{erlang,binary_to_atom,[<<\"foo\">>,utf8],[]},{my_mod,handle_call,3,[{file,\"src/"
     "my_mod.erl\"},{line,42}]}]}",
     "{badarg,[{erlang,binary_to_atom,<args>,[]},{my_mod,handle_call,<int>,[{file,\"src/"
     "my_mod.erl\"},{line,<int>}]}]}"},
    {"{timeout,{gen_server,call,[<0.123.0>,{get,42},5000]}}", "{timeout,{gen_server,call,<args>}}"},
    {"** exception error: no match of right hand side value {error,enoent}",
     "** exception error: no match of right hand side value {error,enoent}"},
    {"** exception exit: {noproc,{gen_server,call,[my_registry,{whereis,foo}]}}",
     "** exception exit: {noproc,{gen_server,call,<args>}}"},
    {"error: {badmatch,{error,eaddrinuse}} in inet_tcp:listen/2",
     "error: {badmatch,{error,eaddrinuse}} in inet_tcp:listen/2"},
    {"** exception error: undefined function foo:bar/1",
     "** exception error: undefined function foo:bar/1"},
    {"Error in process <0.85.0> on node 'app@10.0.0.5' with exit "
     "value:\n{function_clause,[{lists,nth,[0,[]],[{file,\"lists.erl\"},{line,170}]}]}",
     "Error in process <pid> on node 'app@<ip>' with exit "
     "value:\n{function_clause,[{lists,nth,<args>,[{file,\"lists.erl\"},{line,<int>}]}]}"},
    {"supervisor: {local,my_sup}, errorContext: child_terminated, reason: "
     "{timeout,{gen_server,call,[<0.99.0>,ping]}}, offender: [{pid,<0.99.0>},{id,worker}]",
     "supervisor: {local,my_sup}, errorContext: child_terminated, reason: "
     "{timeout,{gen_server,call,<args>}}, offender: [{pid,<pid>},{id,worker}]"},
    {"port #Port<0.5> closed: {exit_status,137}", "port <port> closed: {exit_status,<int>}"},
    {"Ref #Ref<0.3412874513.2081423361.162051> expired", "Ref <ref> expired"},
    {"fun #Function<12.3456789/1 in MyApp.Foo.bar/2> raised", "fun <fun> raised"},
    {"TypeError: Cannot read properties of undefined (reading 'id')",
     "TypeError: Cannot read properties of undefined (reading 'id')"},
    {"TypeError: Cannot read property 'map' of null",
     "TypeError: Cannot read property 'map' of null"},
    {"ReferenceError: foo is not defined", "ReferenceError: foo is not defined"},
    {"Error: connect ECONNREFUSED 127.0.0.1:6379", "Error: connect ECONNREFUSED <ip>"},
    {"Error: getaddrinfo ENOTFOUND api.example.com",
     "Error: getaddrinfo ENOTFOUND api.example.com"},
    {"UnhandledPromiseRejectionWarning: Error: Request failed with status code 503",
     "UnhandledPromiseRejectionWarning: Error: Request failed with status code <int>"},
    {"Error: ENOENT: no such file or directory, open '/app/config/settings.json'",
     "Error: ENOENT: no such file or directory, open '/app/config/settings.json'"},
    {"RangeError: Maximum call stack size exceeded",
     "RangeError: Maximum call stack size exceeded"},
    {"SyntaxError: Unexpected token < in JSON at position 0",
     "SyntaxError: Unexpected token < in JSON at position <int>"},
    {"Error: listen EADDRINUSE: address already in use :::3000",
     "Error: listen EADDRINUSE: address already in use :::<int>"},
    {"AxiosError: timeout of 10000ms exceeded", "AxiosError: timeout of <dur> exceeded"},
    {"Traceback (most recent call last):\n  File \"/app/main.py\", line 42, in <module>\n    "
     "main()\nKeyError: 'user_id'",
     "Traceback (most recent call last):\n File \"/app/main.py\", line <int>, in <module>\n "
     "main()\nKeyError: <str>"},
    {"ValueError: invalid literal for int() with base 10: 'abc'",
     "ValueError: invalid literal for int() with base <int>: <str>"},
    {"ZeroDivisionError: division by zero", "ZeroDivisionError: division by zero"},
    {"requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.example.com', port=443): "
     "Max retries exceeded with url: /v1/items?id=5 (Caused by "
     "NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f8b8c0d1e50>: Failed to "
     "establish a new connection: [Errno 111] Connection refused'))",
     "requests.exceptions.ConnectionError: HTTPSConnectionPool(host=<str>, port=<int>): Max "
     "retries exceeded with url: /v1/items?id=<int> (Caused by "
     "NewConnectionError('<urllib3.connection.HTTPSConnection object at <addr>>: Failed to "
     "establish a new connection: [Errno <int>] Connection refused'))"},
    {"psycopg2.OperationalError: could not connect to server: Connection refused\n\tIs the server "
     "running on host \"db.internal\" (10.1.2.3) and accepting\n\tTCP/IP connections on port 5432?",
     "psycopg2.OperationalError: could not connect to server: Connection refused\n Is the server "
     "running on host \"db.internal\" (<ip>) and accepting\n TCP/IP connections on port <int>?"},
    {"2024-05-01 12:00:00,123 ERROR [celery.worker] Task "
     "tasks.send_email[8f14e45f-ceea-467f-a0e6-3c2b5e1f3a7d] raised unexpected: TimeoutError()",
     "<ts> ERROR [celery.worker] Task tasks.send_email[<uuid>] raised unexpected: TimeoutError()"},
    {"sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) server closed the connection "
     "unexpectedly",
     "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) server closed the connection "
     "unexpectedly"},
    {"java.lang.NullPointerException: Cannot invoke \"String.length()\" because \"<local1>\" is "
     "null",
     "java.lang.NullPointerException: Cannot invoke \"String.length()\" because \"<local1>\" is "
     "null"},
    {"java.lang.IllegalStateException: Expected BEGIN_OBJECT but was STRING at line 1 column 1 "
     "path $",
     "java.lang.IllegalStateException: Expected BEGIN_OBJECT but was STRING at line <int> column "
     "<int> path $"},
    {"\tat com.example.service.UserService.findUser(UserService.java:87)",
     "at com.example.service.UserService.findUser(UserService.java:<int>)"},
    {"java.util.concurrent.TimeoutException: Waited 30 seconds for "
     "com.google.common.util.concurrent.SettableFuture@5f2c1e3b[status=PENDING]",
     "java.util.concurrent.TimeoutException: Waited <dur> for "
     "com.google.common.util.concurrent.SettableFuture@<hex>[status=PENDING]"},
    {"Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space",
     "Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space"},
    {"org.postgresql.util.PSQLException: ERROR: relation \"users\" does not exist\n  Position: 15",
     "org.postgresql.util.PSQLException: ERROR: relation \"users\" does not exist\n Position: "
     "<int>"},
    {"java.net.SocketTimeoutException: connect timed out after 5000 ms to /10.0.3.7:8080",
     "java.net.SocketTimeoutException: connect timed out after <dur> to /<ip>"},
    {"2024/05/01 12:00:00 [error] 1234#1234: *5678 connect() failed (111: Connection refused) "
     "while connecting to upstream, client: 10.0.0.1, server: example.com, request: \"GET "
     "/api/users/42 HTTP/1.1\", upstream: \"http://127.0.0.1:4000/api/users/42\", host: "
     "\"example.com\"",
     "<ts> [error] <int>#<int>: *<int> connect() failed (<int>: Connection refused) while "
     "connecting to upstream, client: <ip>, server: example.com, request: <str>, upstream: <str>, "
     "host: <str>"},
    {"2024/05/01 12:00:00 [crit] 77#77: *1 SSL_do_handshake() failed (SSL: error:0A00006C:SSL "
     "routines::bad key share) while SSL handshaking, client: 203.0.113.9, server: 0.0.0.0:443",
     "<ts> [crit] <int>#<int>: *<int> SSL_do_handshake() failed (SSL: error:<hex>:SSL "
     "routines::bad key share) while SSL handshaking, client: <ip>, server: <ip>"},
    {"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif?id=5 HTTP/1.0\" 200 2326",
     "<ip> - frank [<ts>] \"GET /apache_pb.gif?id=<int> HTTP/<float>\" <int> <int>"},
    {"192.168.1.20 - - [01/May/2024:12:00:00 +0000] \"POST /api/v1/orders?user=77&debug HTTP/1.1\" "
     "502 157 \"-\" \"curl/8.4.0\" 0.532",
     "<ip> - - [<ts>] \"POST /api/v1/orders?user=<int>&debug HTTP/<float>\" <int> <int> \"-\" "
     "\"curl/<ver>\" <float>"},
    {"10.0.0.5 - - [01/May/2024:12:00:01 +0000] \"GET "
     "/assets/app-5d41402abc4b2a76b9719d911017c592.js HTTP/2.0\" 404 0",
     "<ip> - - [<ts>] \"GET /assets/app-<hex>.js HTTP/<float>\" <int> <int>"},
    {"May 11 09:12:01 web01 sshd[1234]: Failed password for root from 203.0.113.5 port 22 ssh2",
     "<ts> web01 sshd[<int>]: Failed password for root from <ip> port <int> ssh2"},
    {"Jan  2 15:04:05 host kernel: oops", "<ts> host kernel: oops"},
    {"May 11 09:12:01 web01 kernel: [123456.789012] Out of memory: Killed process 4321 (beam.smp) "
     "total-vm:8123456kB",
     "<ts> web01 kernel: [<float>] Out of memory: Killed process <int> (beam.smp) "
     "total-vm:<size>"},
    {"Jan  2 03:04:05 db01 postgres[999]: [3-1] FATAL:  password authentication failed for user "
     "\"app\"",
     "<ts> db01 postgres[<int>]: [<int>-<int>] FATAL: password authentication failed for user "
     "\"app\""},
    {"Date: Tue, 15 Nov 1994 08:12:31 GMT", "Date: <ts>"},
    {"Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT; retry later",
     "Last-Modified: <ts>; retry later"},
    {"GET "
     "https://api.example.com/v1/users/550e8400-e29b-41d4-a716-446655440000/"
     "orders?page=3&per_page=50 -> 500 in 1234ms",
     "GET https://<host>/v1/users/<uuid>/orders?page=<val>&per_page=<val> -> <int> in <dur>"},
    {"GET https://user:pw@api.example.com:8443/v1/users/123?token=abc&page=2#frag done",
     "GET https://<host>/v1/users/<int>?token=<val>&page=<val> done"},
    {"POST http://localhost:4000/graphql 200 OK 45.2ms",
     "POST http://<host>/graphql <int> OK <dur>"},
    {"Request to https://hooks.slack.com/services/T000/B000/XXXX failed: :nxdomain",
     "Request to https://<host>/services/T000/B000/XXXX failed: :nxdomain"},
    {"see https://example.com/docs. then retry", "see https://<host>/docs. then retry"},
    {"request to https://api.stripe.com/v1/charges/ch_3MqLpa2eZvKYlo2C1abcdEFG failed with 402",
     "request to https://<host>/v1/charges/ch_3MqLpa2eZvKYlo2C1abcdEFG failed with <int>"},
    {"2024-05-01 12:00:00.123 UTC [4242] ERROR:  duplicate key value violates unique constraint "
     "\"users_email_key\"",
     "<ts> [<int>] ERROR: duplicate key value violates unique constraint \"users_email_key\""},
    {"2024-05-01 12:00:00.123 UTC [4242] DETAIL:  Key (email)=(bob@example.com) already exists.",
     "<ts> [<int>] DETAIL: Key (email)=(<email>) already exists."},
    {"2024-05-01 12:00:00 UTC [88]: LOG:  checkpoint complete: wrote 1234 buffers (7.5%); sync "
     "files=12, longest=0.105 s, average=0.01 s",
     "<ts> [<int>]: LOG: checkpoint complete: wrote <int> buffers (<float>%); sync files=<int>, "
     "longest=<dur>, average=<dur>"},
    {"ERROR:  canceling statement due to statement timeout",
     "ERROR: canceling statement due to statement timeout"},
    {"FATAL:  remaining connection slots are reserved for non-replication superuser connections",
     "FATAL: remaining connection slots are reserved for non-replication superuser connections"},
    {"ERROR:  deadlock detected\nDETAIL:  Process 12345 waits for ShareLock on transaction 67890; "
     "blocked by process 12346.",
     "ERROR: deadlock detected\nDETAIL: Process <int> waits for ShareLock on transaction <int>; "
     "blocked by process <int>."},
    {"1:M 01 May 2024 12:00:00.123 # Error accepting a client connection: Too many open files",
     "<int>:M <ts> # Error accepting a client connection: Too many open files"},
    {"MOVED 3999 127.0.0.1:6381", "MOVED <int> <ip>"},
    {"READONLY You can't write against a read only replica.",
     "READONLY You can't write against a read only replica."},
    {"OOM command not allowed when used memory > 'maxmemory'.",
     "OOM command not allowed when used memory > 'maxmemory'."},
    {"connecting to redis://default:pass@10.0.0.8:6379/0 failed: :econnrefused",
     "connecting to redis://<host>/<int> failed: :econnrefused"},
    {"Back-off restarting failed container app in pod "
     "web-7d4b9c8f6d-x2x9z_default(3f1b2c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d)",
     "Back-off restarting failed container app in pod web-<hex>-x2x9z_default(<uuid>)"},
    {"0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No "
     "preemption victims found for incoming pod.",
     "<int>/<int> nodes are available: <int> Insufficient cpu. preemption: <int>/<int> nodes are "
     "available: <int> No preemption victims found for incoming pod."},
    {"Failed to pull image \"registry.example.com/app:1.14.0\": rpc error: code = NotFound desc = "
     "failed to resolve reference",
     "Failed to pull image \"registry.example.com/app:<ver>\": rpc error: code = NotFound desc = "
     "failed to resolve reference"},
    {"Liveness probe failed: Get \"http://10.244.1.17:4000/healthz\": context deadline exceeded "
     "(Client.Timeout exceeded while awaiting headers)",
     "Liveness probe failed: Get \"http://<host>/healthz\": context deadline exceeded "
     "(Client.Timeout exceeded while awaiting headers)"},
    {"Readiness probe failed: HTTP probe failed with statuscode: 503",
     "Readiness probe failed: HTTP probe failed with statuscode: <int>"},
    {"MountVolume.SetUp failed for volume \"secret\" : secret \"db-credentials\" not found",
     "MountVolume.SetUp failed for volume \"secret\" : secret \"db-credentials\" not found"},
    {"connecting to postgres://app:s3cr3t@db.internal:5432/app_prod?sslmode=require failed",
     "connecting to postgres://<host>/app_prod?sslmode=<val> failed"},
    {"amqp://guest:guest@rabbit:5672 connection closed", "amqp://<host> connection closed"},
    {"listen tcp [::1]:4000: bind: address already in use",
     "listen tcp <ip>: bind: address already in use"},
    {"dial tcp [2001:db8::1]:443: i/o timeout", "dial tcp <ip>: i/o timeout"},
    {"panic: runtime error: index out of range [5] with length 3\n\ngoroutine 1 "
     "[running]:\nmain.main()\n\t/app/main.go:12 +0x1d",
     "panic: runtime error: index out of range [<int>] with length <int>\n\ngoroutine <int> "
     "[running]:\nmain.main()\n /app/main.go:<int> +<hex>"},
    {"Segmentation fault at address 0x00007ffd5a3c9e10 in thread 140234",
     "Segmentation fault at address <addr> in thread <int>"},
    {"upload of 5d41402abc4b2a76b9719d911017c592 failed: checksum mismatch (expected "
     "7b502c3a1f48c8609ae212cdfb639dee39673f5e)",
     "upload of <hex> failed: checksum mismatch (expected <hex>)"},
};

static void test_real_world(void **state)
{
    (void)state;
    assert_true(sizeof REAL_WORLD / sizeof REAL_WORLD[0] >= 100);
    CHECK_TABLE(REAL_WORLD);
}

/* Normalising a normal form changes nothing. */
static void test_idempotent(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof REAL_WORLD / sizeof REAL_WORLD[0]; i++)
        assert_true(check_case(REAL_WORLD[i].want, strlen(REAL_WORLD[i].want), REAL_WORLD[i].want));
}

/* ------------------------------------------------------------------ *
 * One test per placeholder kind
 * ------------------------------------------------------------------ */

static void test_timestamps(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"2024-05-01T12:00:00.123Z x", "<ts> x"},
        {"2024-05-01T12:00:00Z", "<ts>"},
        {"2024-05-01 12:00:00,123 x", "<ts> x"},
        {"at 2024-05-01T12:00:00+02:00.", "at <ts>."},
        {"at 2024-05-01T12:00:00-0700 ok", "at <ts> ok"},
        {"2024-05-01T12:00Z", "<ts>"},
        {"2024-05-01 12:00:00 UTC boom", "<ts> boom"},
        {"2024-05-01 12:00:00 +0000 boom", "<ts> boom"},
        {"2024-05-01", "<ts>"},
        {"2024/05/01", "<ts>"},
        {"on 2024/05/01 12:00:00 [error]", "on <ts> [error]"},
        {"12:00:00", "<ts>"},
        {"12:00:00.123 [info] x", "<ts> [info] x"},
        {"1:02:03 elapsed", "<ts> elapsed"},
        {"23:59:60", "<ts>"},
        {"Jan  2 15:04:05 host", "<ts> host"},
        {"May 11 09:12:01 host", "<ts> host"},
        {"[10/Oct/2000:13:55:36 -0700]", "[<ts>]"},
        {"Tue, 15 Nov 1994 08:12:31 GMT", "<ts>"},
        {"Mon, 02 Jan 2006 15:04:05 -0700", "<ts>"},
        {"Tue May 11 09:12:01 2024", "<ts>"},
        {"Tue May 11 09:12:01 UTC 2024", "<ts>"},
        {"01 May 2024 12:00:00.123 #", "<ts> #"},
        {"1-May-2024::12:00:00.123456", "<ts>"},
        {"~U[2024-05-01 12:00:00Z]", "~U[<ts>]"},
        {"~N[2024-05-01 12:00:00]", "~N[<ts>]"},
        {"#DateTime<2024-05-01 12:00:00.000000Z>", "#DateTime<<ts>>"},
        /* not timestamps */
        {"2024-13-01", "<int>-<int>-<int>"},
        {"25:00:00", "<int>:<int>:<int>"},
        {"12:61:00", "<int>:<int>:<int>"},
        {"12:30", "<int>:<int>"},
        {"lib/foo.ex:12:30: warning", "lib/foo.ex:<int>:<int>: warning"},
        {"Jan 2 x", "Jan <int> x"},
        {"May the force", "May the force"},
        {"2024-05-01T", "<int>-<int>-01T"},
    };
    CHECK_TABLE(t);
}

static void test_durations(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"150ms", "<dur>"},
        {"3012 ms", "<dur>"},
        {"1.5s", "<dur>"},
        {"10us", "<dur>"},
        {"10\xc2\xb5s", "<dur>"},
        {"7 \xce\xbcs", "<dur>"},
        {"500ns", "<dur>"},
        {"5 min", "<dur>"},
        {"5mins", "<dur>"},
        {"2h", "<dur>"},
        {"30 seconds", "<dur>"},
        {"1 second", "<dur>"},
        {"3 secs", "<dur>"},
        {"3 sec", "<dur>"},
        {"4 minutes", "<dur>"},
        {"1 minute", "<dur>"},
        {"1 hour", "<dur>"},
        {"8 hours", "<dur>"},
        {"2 hr 3hrs", "<dur> <dur>"},
        {"2 days", "<dur>"},
        {"1 day", "<dur>"},
        {"7d", "<dur>"},
        {"timeout after 5000ms.", "timeout after <dur>."},
        {"(5000 ms)", "(<dur>)"},
        /* not durations */
        {"5 apples", "<int> apples"},
        {"5 dogs", "<int> dogs"},
        {"5 msx", "<int> msx"},
        {"5msx", "5msx"},
        {"5ms5", "5ms5"},
        {"10 S", "<int> S"},
        {"5  ms", "<int> ms"},
    };
    CHECK_TABLE(t);
}

static void test_numbers(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"42", "<int>"},
        {"got 3 of 7", "got <int> of <int>"},
        {"user_123", "user_<int>"},
        {"order-77", "order-<int>"},
        {"/users/123", "/users/<int>"},
        {"id=5&x=6", "id=<int>&x=<int>"},
        {"utf8 v2 sha256 x86 3rd 42abc", "utf8 v2 sha256 x86 3rd 42abc"},
        {"-5", "<int>"},
        {"x -5", "x <int>"},
        {"(-5)", "(<int>)"},
        {"x=-5", "x=<int>"},
        {"a-5", "a-<int>"},
        {"--5", "-<int>"},
        {"5-3", "<int>-<int>"},
        {"- 5", "- <int>"},
        {"-x", "-x"},
        {"1.5", "<float>"},
        {"-0.25", "<float>"},
        {"1.5e10 1.5E-3", "<float> <float>"},
        {"7.5%", "<float>%"},
        {"1.14.0", "<ver>"},
        {"3.14.15.92.65", "<ver>"},
        {"-1.2.3", "-<ver>"},
        {"1.2.3rc1", "1.2.3rc1"},
        {"v1.2.3", "v1.2.3"},
        {"1.2.3-rc.1", "<ver>-rc.<int>"},
        {"end 1.", "end <int>."},
        {"1.a", "<int>.a"},
        {"99999999999999999999999999", "<int>"},
        {"u0.id == ^42", "u0.id == ^<int>"},
        {"\xc3\xa9"
         "42 42\xc3\xa9",
         "\xc3\xa9"
         "42 42\xc3\xa9"},
        {"caf\xc3\xa9_12", "caf\xc3\xa9_<int>"},
        {"\xe6\x97\xa5\xe6\x9c\xac"
         "123",
         "\xe6\x97\xa5\xe6\x9c\xac"
         "123"},
    };
    CHECK_TABLE(t);
}

static void test_arity(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"Foo.bar/2", "Foo.bar/2"},
        {":erlang.binary_to_atom/2", ":erlang.binary_to_atom/2"},
        {"MyApp.Worker.handle_call/3", "MyApp.Worker.handle_call/3"},
        {"&String.upcase/1", "&String.upcase/1"},
        {"is_valid?/1", "is_valid?/1"},
        {"Foo.save!/1", "Foo.save!/1"},
        {"lists:map/2", "lists:map/2"},
        {"Kernel.+/2 :erlang.=</2", "Kernel.+/2 :erlang.=</2"},
        {"&foo/1", "&foo/1"},
        {"(Foo.bar/2)", "(Foo.bar/2)"},
        {"[Foo.bar/2, Baz.qux/0]", "[Foo.bar/2, Baz.qux/0]"},
        {"in Foo.bar/2.", "in Foo.bar/2."},
        {"Enum.\"-map/2-fun-0-\"/2", "Enum.\"-map/<int>-fun-<int>-\"/2"},
        /* not arities */
        {"/users/123", "/users/<int>"},
        {"users/123", "users/<int>"},
        {"foo/2", "foo/<int>"},
        {"a/b.c/7", "a/b.c/<int>"},
        {"1/2", "<int>/<int>"},
        {"page 3/10", "page <int>/<int>"},
        {"Foo.bar/2x", "Foo.bar/2x"},
        {"GET https://x.io/Foo.bar/2", "GET https://<host>/Foo.bar/<int>"},
    };
    CHECK_TABLE(t);
}

static void test_hex(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"0x1f", "<hex>"},
        {"0xDEADBEE", "<hex>"},
        {"0x3C", "<hex>"},
        {"0xdeadbeef", "<addr>"},
        {"at 0x00007ffd5a3c9e10.", "at <addr>."},
        {"0x", "0x"},
        {"0x1g", "0x1g"},
        {"deadbeef", "deadbeef"},
        {"deadbeef1", "<hex>"},
        {"DEADBEEF12", "<hex>"},
        {"abcdefabcdefabcd", "<hex>"},
        {"abcdefabcdefabc", "abcdefabcdefabc"},
        {"1234567890123", "<int>"},
        {"12345678abc", "<hex>"},
        {"sha=5d41402abc4b2a76b9719d911017c592", "sha=<hex>"},
        {"commit 7b502c3a1f48c8609ae212cdfb639dee39673f5e", "commit <hex>"},
        {"commit 7b502c3", "commit 7b502c3"},
        {"abc123g", "abc123g"},
        {"Foo@5f2c1e3b", "Foo@<hex>"},
        {"req_8f14e45fceea", "req_<hex>"},
    };
    CHECK_TABLE(t);
}

static void test_uuid(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"550e8400-e29b-41d4-a716-446655440000", "<uuid>"},
        {"550E8400-E29B-41D4-A716-446655440000", "<uuid>"},
        {"id 550e8400-E29B-41d4-a716-446655440000 end", "id <uuid> end"},
        {"(aabbccdd-eeff-0011-2233-445566778899)", "(<uuid>)"},
        {"/orders/123e4567-e89b-12d3-a456-426614174000/items", "/orders/<uuid>/items"},
        {"550e8400-e29b-41d4-a716-44665544000", "<hex>-e29b-41d4-a716-<int>"},
        {"550e8400-e29b-41d4-a716-446655440000x", "<hex>-e29b-41d4-a716-446655440000x"},
    };
    CHECK_TABLE(t);
}

static void test_ip(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"10.0.0.1", "<ip>"},
        {"from 10.0.0.1:4000.", "from <ip>."},
        {"255.255.255.255", "<ip>"},
        {"10.0.0.0/8", "<ip>/<int>"},
        {"256.1.1.1", "<ver>"},
        {"1.2.3.4.5", "<ver>"},
        {"2001:db8::1", "<ip>"},
        {"::1", "<ip>"},
        {"fe80::1%eth0 up", "<ip> up"},
        {"[2001:db8::1]:443", "<ip>"},
        {"[::1]", "<ip>"},
        {"2001:0db8:85a3:0000:0000:8a2e:0370:7334", "<ip>"},
        {"fe80::1ff:fe23:4567:890a", "<ip>"},
        {"::ffff:192.0.2.128", "<ip>"},
        {"a:b:c:d:e", "<ip>"},
        /* not IPv6 */
        {"12:30:45", "<ts>"},
        {"key: value", "key: value"},
        {"a:b:c", "a:b:c"},
        {"1:2:3:4", "<int>:<int>:<int>:<int>"},
        {"%{a: 1, b: 2}", "%{a: <int>, b: <int>}"},
        {"Foo::Bar std::vector", "Foo::Bar std::vector"},
        {"@spec f() :: t", "@spec f() :: t"},
        {"a :: b", "a :: b"},
        {"[1234]", "[<int>]"},
    };
    CHECK_TABLE(t);
}

static void test_email(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"bob@example.com", "<email>"},
        {"to first.last+tag@sub.example.co.uk now", "to <email> now"},
        {"user_1@x.io", "<email>"},
        {"(bob@example.com).", "(<email>)."},
        {"<alice@example.org>", "<<email>>"},
        {"app@host", "app@host"},
        {"app@10.0.0.5", "app@<ip>"},
        {"a@b.c", "a@b.c"},
        {"@mention", "@mention"},
        {"x@y.c0m", "x@y.c0m"},
    };
    CHECK_TABLE(t);
}

static void test_urls(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"https://api.example.com:8443/v1", "https://<host>/v1"},
        {"http://example.com", "http://<host>"},
        {"GET https://user:pw@api.example.com/v1/users/123?token=abc&page=2#frag done",
         "GET https://<host>/v1/users/<int>?token=<val>&page=<val> done"},
        {"wss://socket.example.com/live/websocket?vsn=2.0.0&token=abc",
         "wss://<host>/live/websocket?vsn=<val>&token=<val>"},
        {"ftp://ftp.example.com/pub/file-2024.tar.gz", "ftp://<host>/pub/file-<int>.tar.gz"},
        {"ecto://user:pass@localhost/db", "ecto://<host>/db"},
        {"postgres://app:s3cr3t@db:5432/app_prod?sslmode=require",
         "postgres://<host>/app_prod?sslmode=<val>"},
        {"redis://localhost:6379/0", "redis://<host>/<int>"},
        {"amqp://guest:guest@rabbit:5672, retrying", "amqp://<host>, retrying"},
        {"file:///tmp/x.log", "file:///tmp/x.log"},
        {"https://x.com/a?b=&c=1", "https://<host>/a?b=&c=<val>"},
        {"https://x.com/a?debug&c=1", "https://<host>/a?debug&c=<val>"},
        {"(see https://x.com/a/1)", "(see https://<host>/a/<int>)"},
        {"see https://x.com/docs. then", "see https://<host>/docs. then"},
        {"at https://x.com/a/1, then", "at https://<host>/a/<int>, then"},
        {"https://x.com/a?page=2.", "https://<host>/a?page=<val>."},
        {"https://x.com/p#section-2 end", "https://<host>/p end"},
        {"http://[2001:db8::1]:8080/x", "http://<host>/x"},
        {"https://x.com/users/550e8400-e29b-41d4-a716-446655440000/avatar.png",
         "https://<host>/users/<uuid>/avatar.png"},
        {"https://x.com/objects/5d41402abc4b2a76b9719d911017c592", "https://<host>/objects/<hex>"},
        {"git+ssh://git@github.com/org/repo.git", "git+ssh://<host>/org/repo.git"},
        {"url: http://a.io/x?y=1 and https://b.io/z?w=2",
         "url: http://<host>/x?y=<val> and https://<host>/z?w=<val>"},
        {"https://x.com/a/https://y.com/b", "https://<host>/a/https://y.com/b"},
        {"https://x.com/caf\xc3\xa9/1", "https://<host>/caf\xc3\xa9/<int>"},
    };
    CHECK_TABLE(t);
}

static void test_quoted_values(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"key=\"value\"", "key=<str>"},
        {"name: \"bob\"", "name: <str>"},
        {"user='x'", "user=<str>"},
        {"{\"id\":\"abc\"}", "{\"id\":<str>}"},
        {"{\"a\": \"x\", \"b\": 2}", "{\"a\": <str>, \"b\": <int>}"},
        {"could not open \"config.yml\"", "could not open \"config.yml\""},
        {"key=\"a \\\"b\\\" c\" rest", "key=<str> rest"},
        {"a=\"unterminated and more", "a=<str>"},
        {"a=\"\"", "a=<str>"},
        {"x == \"y\"", "x == <str>"},
        {"k:'v'", "k:<str>"},
        {"k : \"v\"", "k : \"v\""},
        {"atom :\"quoted atom\"", "atom :\"quoted atom\""},
        {"(:\"x\")", "(:\"x\")"},
        {"(reading 'id')", "(reading 'id')"},
        {"can't stop", "can't stop"},
        {"KeyError: 'user_id'", "KeyError: <str>"},
    };
    CHECK_TABLE(t);
}

static void test_erlang_terms(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"#PID<0.123.0>", "<pid>"},
        {"#PID<12345.99.1>", "<pid>"},
        {"<0.123.0>", "<pid>"},
        {"#Reference<0.1.2.3>", "<ref>"},
        {"#Ref<0.3412874513.2081423361.162051>", "<ref>"},
        {"#Port<0.5>", "<port>"},
        {"#Function<12.3456/1 in Foo.bar/2>", "<fun>"},
        {"#Function<0.1234/1 in MyApp.-init/1-fun-0->", "<fun>"},
        {"{state,<0.88.0>,[]}", "{state,<pid>,[]}"},
        {"#MapSet<[1, 2]>", "#MapSet<[<int>, <int>]>"},
        {"#Ecto.Changeset<action: nil, valid?: false>",
         "#Ecto.Changeset<action: nil, valid?: false>"},
        {"<<1, 2>>", "<<<int>, <int>>>"},
        {"#PID<0.1>", "#PID<<float>>"},
        {"#Function<never closed", "#Function<never closed"},
    };
    CHECK_TABLE(t);
}

/* Runs of "#Function<": each looks up to 512 bytes ahead for its '>', and
 * what one has looked through is not looked through again, with the same
 * result as looking each time. */
static void test_function_runs(void **state)
{
    (void)state;
    char in[1200], want[1200];
    size_t n = 0, w = 0;
    /* 60 in a row, then '>': the first whose 512 bytes reach it (the 10th)
     * and what follows are one <fun> */
    for (int i = 0; i < 60; i++, n += 10)
        memcpy(in + n, "#Function<", 10);
    in[n++] = '>';
    in[n] = '\0';
    for (int i = 0; i < 9; i++, w += 10)
        memcpy(want + w, "#Function<", 10);
    strcpy(want + w, "<fun>");
    assert_true(check_case(in, n, want));
    /* a '>' 513 bytes after the first: only the second reaches it */
    n = 0;
    memcpy(in, "#Function<", 10);
    memset(in + 10, 'y', 505);
    memcpy(in + 515, "#Function<zzzzzzzzzz>", 21);
    n = 536;
    in[n] = '\0';
    memcpy(want, in, 515);
    strcpy(want + 515, "<fun>");
    assert_true(check_case(in, n, want));
    static const tcase t[] = {
        /* a newline ends the first; the second has its own '>' */
        {"#Function< a\n#Function<b> x", "#Function< a\n<fun> x"},
        {"#Function<#Function< a\nb>", "#Function<#Function< a\nb>"},
        {"#Function<#Function<1/2>", "<fun>"},
    };
    CHECK_TABLE(t);
}

static void test_args_calls(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"exited in: GenServer.call(#PID<0.123.0>, {:get, 42}, 5000)",
         "exited in: GenServer.call(<pid>, <args>)"},
        {"GenServer.call(MyApp.Cache, {:put, \"k\", %{a: 1}}, :infinity)",
         "GenServer.call(MyApp.Cache, <args>)"},
        {"GenServer.call(pid, :msg)", "GenServer.call(pid, <args>)"},
        {"GenServer.call(pid,:msg)", "GenServer.call(pid, <args>)"},
        {"GenServer.call( pid , :msg )", "GenServer.call(pid, <args>)"},
        {"GenServer.call(pid)", "GenServer.call(pid)"},
        {"GenServer.cast(MyApp.Worker, {:notify, \"x, y\"})",
         "GenServer.cast(MyApp.Worker, <args>)"},
        {"GenServer.call(pid, {:a, \")\"}, 100) ok", "GenServer.call(pid, <args>) ok"},
        {"GenServer.call({:via, Registry, {R, 1}}, :x)",
         "GenServer.call({:via, Registry, {R, <int>}}, <args>)"},
        {"GenServer.call(x, [1,", "GenServer.call(x, <args>"},
        {":gen_server.call(#PID<0.1.0>, :ping, :infinity)", ":gen_server.call(<pid>, <args>)"},
        {":gen_statem.call(pid, {:set, 1})", ":gen_statem.call(pid, <args>)"},
        {"GenStateMachine.call(sm, {:ev, 1})", "GenStateMachine.call(sm, <args>)"},
        {"Agent.get(agent, fn s -> s end)", "Agent.get(agent, <args>)"},
        {"Agent.update(a, &(&1 + 1), 5000)", "Agent.update(a, <args>)"},
        {"Task.await(task, 5000)", "Task.await(task, <args>)"},
        {"gen_server:call(Pid, {get, 1}, 5000)", "gen_server:call(Pid, <args>)"},
        {"MyGenServer.call(a, b)", "MyGenServer.call(a, b)"},
    };
    CHECK_TABLE(t);
}

static void test_args_mfa(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"{:undef, [{Foo, :bar, [\"abc\", 123], []}]}", "{:undef, [{Foo, :bar, <args>, []}]}"},
        {"{MyMod, :fun, [1, \"x\"], []}", "{MyMod, :fun, <args>, []}"},
        {"{:mod, :fun, [1], [file: 'x.ex']}", "{:mod, :fun, <args>, [file: <str>]}"},
        {"{mod,fun,[1,<<\"x\">>],[]}", "{mod,fun,<args>,[]}"},
        {"{erlang,'+',[1,foo],[]}", "{erlang,'+',<args>,[]}"},
        {"{Foo, :\"weird name\", [\"]\"], []}", "{Foo, :\"weird name\", <args>, []}"},
        {"{'Elixir.Foo', bar, [a], []}", "{'Elixir.Foo', bar, <args>, []}"},
        {"{GenServer, :call, [MyApp.Registry, {:lookup, \"abc\"}, 5000]}",
         "{GenServer, :call, <args>}"},
        {"{timeout,{gen_server,call,[<0.123.0>,{get,42},5000]}}",
         "{timeout,{gen_server,call,<args>}}"},
        {"{a, :b, [1, [2, [3]]], []}", "{a, :b, <args>, []}"},
        {"{a, :b, [1, 2", "{a, :b, <args>"},
        /* not MFAs */
        {"{Foo, :bar, 2, [file: 'lib/foo.ex', line: 3]}",
         "{Foo, :bar, <int>, [file: <str>, line: <int>]}"},
        {"{:ok, [1, 2]}", "{:ok, [<int>, <int>]}"},
        {"[1, 2, 3]", "[<int>, <int>, <int>]"},
        {"{1, 2, [3]}", "{<int>, <int>, [<int>]}"},
    };
    CHECK_TABLE(t);
}

/* ------------------------------------------------------------------ *
 * Bytes: UTF-8 repair, NUL and control bytes, whitespace
 * ------------------------------------------------------------------ */

typedef struct bcase {
    const char *in;
    size_t len;
    const char *want;
} bcase;

#define B(lit, want)                                                                               \
    {                                                                                              \
        (lit), sizeof(lit) - 1, (want)                                                             \
    }
#define FFFD "\xef\xbf\xbd"

static void check_bytes(const bcase *t, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += !check_case(t[i].in, t[i].len, t[i].want);
    if (bad)
        fail_msg("%zu of %zu cases differ", bad, n);
}

static void test_utf8_repair(void **state)
{
    (void)state;
    static const bcase t[] = {
        B("caf\xc3\xa9", "caf\xc3\xa9"),
        B("\xf0\x9f\x98\x80 ok", "\xf0\x9f\x98\x80 ok"),
        B("a\xff"
          "b",
          "a" FFFD "b"),
        B("\xc3", FFFD),
        B("\xc3(", FFFD "("),
        B("\xed\xa0\x80", FFFD FFFD FFFD),
        B("\xc0\xaf", FFFD FFFD),
        B("\xe2\x82", FFFD FFFD),
        B("\xf5\x80\x80\x80", FFFD FFFD FFFD FFFD),
        B("\x80"
          "42",
          FFFD "42"),
        B("x=\xff", "x=" FFFD),
    };
    check_bytes(t, sizeof t / sizeof t[0]);
}

static void test_nul_and_controls(void **state)
{
    (void)state;
    static const bcase t[] = {
        B("a\0b", "a b"),
        B("a\0\0\0b", "a b"),
        B("\0\0x\0", "x"),
        B("a\rb", "a b"),
        B("line\r\nnext", "line\nnext"),
        B("\x1b[31mred\x1b[0m", "[31mred [0m"),
        B("a\x7f"
          "b",
          "a b"),
        B("id\0"
          "42",
          "id <int>"),
        B("key=\"a\0b\"", "key=<str>"),
    };
    check_bytes(t, sizeof t / sizeof t[0]);
}

static void test_whitespace(void **state)
{
    (void)state;
    static const tcase t[] = {
        {"", ""},
        {"   ", ""},
        {"\n\n", ""},
        {"  a  b  ", "a b"},
        {"a\t\tb", "a b"},
        {"a \t b", "a b"},
        {"a \n b", "a\n b"},
        {"\n\na\n\n", "a"},
        {"a\n\n\nb", "a\n\n\nb"},
        {"a \t \n\t b", "a\n b"},
        {" \n \n a \n b \n \n", "a\n b"},
    };
    CHECK_TABLE(t);
}

/* The output is appended; trimming is relative to this call. */
static void test_appends(void **state)
{
    (void)state;
    sh_buf b;
    sh_buf_init(&b);
    sh_buf_append_str(&b, "X|");
    assert_int_equal(sh_normalize(&b, "  5 ", 4), 0);
    assert_int_equal(b.len, 7);
    assert_memory_equal(b.data, "X|<int>", 7);
    assert_int_equal(sh_normalize(&b, "", 0), 0);
    assert_int_equal(b.len, 7);
    sh_buf_free(&b);
}

/* Placeholders longer than their text make the output outgrow 2*len+16:
 * the buffer grows instead of overflowing (checked by ASan). */
static void test_output_growth(void **state)
{
    (void)state;
    size_t n = 100000;
    char *in = malloc(2 * n);
    assert_non_null(in);
    for (size_t i = 0; i < n; i++) {
        in[2 * i] = '7';
        in[2 * i + 1] = ' ';
    }
    sh_buf b = norm_n(in, 2 * n);
    assert_int_equal(b.len, 6 * n - 1);
    assert_true(b.len > 2 * (2 * n) + 16);
    for (size_t i = 0; i < n; i++)
        assert_memory_equal(b.data + 6 * i, "<int>", 5);
    sh_buf_free(&b);

    memset(in, 0xff, n);
    b = norm_n(in, n);
    assert_int_equal(b.len, 3 * n);
    for (size_t i = 0; i < n; i++)
        assert_memory_equal(b.data + 3 * i, FFFD, 3);
    sh_buf_free(&b);

    /* an empty buffer with some room taken already */
    sh_buf_init(&b);
    sh_buf_append(&b, in, 40);
    memset(in, '1', n);
    for (size_t i = 0; i < n; i += 2)
        in[i] = ' ';
    assert_int_equal(sh_normalize(&b, in, n), 0);
    assert_int_equal(b.len, 40 + 6 * (n / 2) - 1);
    sh_buf_free(&b);
    free(in);
}

/* ------------------------------------------------------------------ *
 * Properties
 * ------------------------------------------------------------------ */

static int same_form(const char *a, const char *b)
{
    sh_buf x = norm_n(a, strlen(a)), y = norm_n(b, strlen(b));
    int eq = x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    if (!eq)
        print_message("  \"%.*s\"\n  \"%.*s\"\n", (int)x.len, x.data, (int)y.len, y.data);
    sh_buf_free(&x);
    sh_buf_free(&y);
    return eq;
}

static void test_equal_when_only_values_differ(void **state)
{
    (void)state;
    static const tcase pairs[] = {
        {"** (exit) exited in: GenServer.call(#PID<0.123.0>, {:get, 42}, 5000)",
         "** (exit) exited in: GenServer.call(#PID<0.999.0>, {:put, \"x\", %{}}, :infinity)"},
        {"12:00:00.123 [error] Request 550e8400-e29b-41d4-a716-446655440000 failed after 150ms",
         "23:59:59.999 [error] Request 123e4567-e89b-12d3-a456-426614174000 failed after 3012 ms"},
        {"connect to 10.0.0.1:5432 refused", "connect to 192.168.1.7:6432 refused"},
        {"connect to [2001:db8::1]:443 refused", "connect to [::1]:8443 refused"},
        {"user 42 not found", "user 1337 not found"},
        {"GET https://api.example.com/v1/users/1?page=2",
         "GET https://other.example.org:8443/v1/users/999?page=7"},
        {"{:undef, [{Foo, :bar, [1], []}]}", "{:undef, [{Foo, :bar, [\"x\", %{a: 1}], []}]}"},
        {"tcp connect (localhost:5432)", "tcp connect (localhost:6543)"},
        {"Process #PID<0.1.0> terminating", "Process #PID<0.77.0> terminating"},
        {"port #Port<0.5> closed, ref #Reference<0.1.2.3>",
         "port #Port<0.77> closed, ref #Reference<0.9.8.7>"},
        {"key=\"abc\" at 2024-05-01T00:00:00Z", "key=\"xyz\" at 2025-12-31T23:59:59.999Z"},
        {"a  b\t c", " a b c "},
        {"mail to bob@example.com bounced", "mail to alice.smith@corp.example.org bounced"},
        {"object 0x7ffd5a3c9e10 freed twice", "object 0x55d0c0ffee00 freed twice"},
        {"May 11 09:12:01 web01 sshd[1234]: Failed password for root from 203.0.113.5 port 22",
         "Jan  2 15:04:05 web01 sshd[77]: Failed password for root from 198.51.100.1 port 2222"},
        {"took 1.5s", "took 250 ms"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        assert_true(same_form(pairs[i].in, pairs[i].want));
}

static void test_differ_when_words_differ(void **state)
{
    (void)state;
    static const tcase pairs[] = {
        {"user 42 not found", "order 42 not found"},
        {"(KeyError) key :id not found", "(KeyError) key :name not found"},
        {"** (exit) exited in: GenServer.call(MyApp.A, :x, 5000)",
         "** (exit) exited in: GenServer.call(MyApp.B, :x, 5000)"},
        {"function Foo.bar/2 is undefined", "function Foo.bar/3 is undefined"},
        {"connection refused", "connection reset"},
        {"{:undef, [{Foo, :bar, [1], []}]}", "{:undef, [{Foo, :baz, [1], []}]}"},
        {"GET /users/1", "POST /users/1"},
        {"utf8 error", "utf16 error"},
        {"could not open \"a.yml\"", "could not open \"b.yml\""},
        {"https://x.com/users/1", "https://x.com/orders/1"},
        {"(ArgumentError) bad", "(RuntimeError) bad"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        sh_buf x = norm_n(pairs[i].in, strlen(pairs[i].in));
        sh_buf y = norm_n(pairs[i].want, strlen(pairs[i].want));
        assert_false(x.len == y.len && memcmp(x.data, y.data, x.len) == 0);
        sh_buf_free(&x);
        sh_buf_free(&y);
    }
}

/* ------------------------------------------------------------------ *
 * Hostile input: linear time, valid UTF-8 out
 * ------------------------------------------------------------------ */

#define MB (1024u * 1024u)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void assert_clean_utf8(const sh_buf *b)
{
    const unsigned char *s = (const unsigned char *)b->data;
    size_t i = 0;
    while (i < b->len) {
        size_t k = sh_utf8_seq_len(s + i, b->len - i);
        if (k == 0)
            fail_msg("invalid UTF-8 at output byte %zu", i);
        if (k == 1 && (s[i] < 0x20 || s[i] == 0x7f) && s[i] != '\n')
            fail_msg("control byte 0x%02x at output byte %zu", s[i], i);
        i += k;
    }
}

/* Normalises `len` bytes made of `pat` repeated. The budget is not a
 * performance target (make bench has those): it is far above the linear
 * time even under sanitizers on a loaded machine, and far below what a
 * quadratic pass over 2 MB would take. */
static void run_hostile(const char *pat, size_t plen, size_t len, double budget)
{
    char *in = malloc(len);
    assert_non_null(in);
    for (size_t i = 0; i < len; i++)
        in[i] = pat[i % plen];
    double t0 = now_s();
    sh_buf b = norm_n(in, len);
    double dt = now_s() - t0;
    if (dt > budget)
        fail_msg("pattern \"%.*s\": %.2f s for %zu bytes", (int)plen, pat, dt, len);
    assert_clean_utf8(&b);
    sh_buf_free(&b);
    free(in);
}

#define HOSTILE(lit, len) run_hostile((lit), sizeof(lit) - 1, (len), 30.0)

static void test_hostile_required(void **state)
{
    (void)state;
    HOSTILE("9", 10 * MB);
    HOSTILE(".", 10 * MB);
    HOSTILE(":", 10 * MB);
    HOSTILE("\"", 10 * MB);
    HOSTILE("#PID<", 10 * MB);
    HOSTILE("{", 10 * MB);
    HOSTILE("(", 10 * MB);
}

static void test_hostile_random(void **state)
{
    (void)state;
    size_t len = 10 * MB;
    char *in = malloc(len);
    assert_non_null(in);
    uint64_t x = 0x9e3779b97f4a7c15u; /* xorshift64, fixed seed */
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        in[i] = (char)(x >> 56);
    }
    double t0 = now_s();
    sh_buf b = norm_n(in, len);
    double dt = now_s() - t0;
    assert_true(dt < 5.0);
    assert_clean_utf8(&b);
    sh_buf_free(&b);
    free(in);
}

static void test_hostile_more(void **state)
{
    (void)state;
    static const char *const pats[] = {
        "1.",         "a=\"",     "GenServer.call(",
        "{a, :b, [",  "\xff",     "1:",
        "-1",         "[::",      "a.",
        "a@",         "a.a@b",    "http://",
        "#Function<", "/1",       "x.y/1",
        "0x",         "\xc3\xa9", "\\",
        "'",          "=\"\\",    "[",
        "<0.",        "::1:",     "2024-05-01 ",
        "12:00:00 ",  "Jan  2 ",  "a.b.c/1/",
        "{'",         ",'a',[",   "a1b2c3d4",
        "9 ",         "\n",       " ",
        "\0",         "x=1&",     "https://a/b?c=d&",
    };
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
        size_t plen = strlen(pats[i]);
        run_hostile(pats[i], plen ? plen : 1, 2 * MB, 30.0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_world),
        cmocka_unit_test(test_idempotent),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_arity),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_ip),
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_quoted_values),
        cmocka_unit_test(test_erlang_terms),
        cmocka_unit_test(test_function_runs),
        cmocka_unit_test(test_args_calls),
        cmocka_unit_test(test_args_mfa),
        cmocka_unit_test(test_utf8_repair),
        cmocka_unit_test(test_nul_and_controls),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_appends),
        cmocka_unit_test(test_output_growth),
        cmocka_unit_test(test_equal_when_only_values_differ),
        cmocka_unit_test(test_differ_when_words_differ),
        cmocka_unit_test(test_hostile_required),
        cmocka_unit_test(test_hostile_random),
        cmocka_unit_test(test_hostile_more),
    };
    return cmocka_run_group_tests_name("normalize", tests, NULL, NULL);
}
