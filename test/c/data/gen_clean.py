#!/usr/bin/env python3
"""Writes test/c/data/clean.txt: ordinary log lines that must pass unchanged."""
import random
R = random.Random(7)

def luhn_ok(s):
    t = 0
    for i, ch in enumerate(reversed(s)):
        v = int(ch)
        if i % 2:
            v *= 2
            v = v - 9 if v > 9 else v
        t += v
    return t % 10 == 0

def not_luhn(prefix, n):
    while True:
        s = prefix + "".join(R.choice("0123456789") for _ in range(n - len(prefix)))
        if not luhn_ok(s):
            return s

lines = [
"# Ordinary log and error lines for test/c/test_scrub.c: none may change.",
"# Escapes as in secrets.txt (\\\\ \\t \\n \\r \\0 \\xHH).",
"** (Ecto.NoResultsError) expected at least one result but got none in query: from u in User, where: u.id == ^42",
"** (DBConnection.ConnectionError) tcp recv: closed (the connection was closed by the pool, possibly due to a timeout)",
"** (ArithmeticError) bad argument in arithmetic expression: 1 / 0",
"    (my_app 0.1.0) lib/my_app/repo.ex:17: MyApp.Repo.insert!/2",
"    (phoenix 1.7.12) lib/phoenix/router.ex:484: Phoenix.Router.__call__/5",
"    (elixir 1.14.5) lib/enum.ex:1658: Enum.\"-map/2-lists^map/1-0-\"/2",
"GenServer #PID<0.1234.0> terminating",
"Last message: {:tick, 1718035200123}",
"2024-06-05T12:00:01.123Z [error] Postgrex.Protocol (#PID<0.512.0>) failed to connect: ** (Postgrex.Error) FATAL 28P01 (invalid_password) password authentication failed for user \"app\"",
"2024-06-05T12:00:02.551Z [info] GET /api/v1/users?page=2&per_page=50 took 1532ms",
"2024-06-05T12:00:03.004Z [warning] request_id=F8Qz9Xb2Lk duration=2.41s status=503",
"commit 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b deployed to prod-eu-1",
"deployed a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 (previous 3f786850e387550fdab836ed7e6dc881de23001b)",
"job 5d41402a-bc4b-4a76-9e30-1b2c3d4e5f60 failed after 3 attempts",
"trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
"Oban.PerformError: MyApp.Workers.Sync failed with {:error, :timeout} after 30000ms",
"lib/my_app/workers/sync.ex:88: MyApp.Workers.Sync.perform/1",
"src/server.ts:214:17 - error TS2345: Argument of type 'string' is not assignable to parameter of type 'number'.",
"Traceback (most recent call last): File \"/srv/app/worker.py\", line 42, in run",
"java.lang.NullPointerException: Cannot invoke \"String.length()\" because \"s\" is null at com.acme.Foo.bar(Foo.java:57)",
"panic: runtime error: index out of range [5] with length 3 goroutine 17 [running]: main.handle(0xc000123456)",
"segfault at 7ffd5fbff8a0 ip 000055d1c3a0b1e4 sp 00007ffd5fbff890 error 4 in app[55d1c3a00000+2b000]",
"memory usage 1536 MiB of 2048 MiB (75%), gc took 12.5 ms",
"llm usage: max_tokens=4096 input_tokens=1832 output_tokens=311 token_count=2143",
"session_timeout=30s idle_timeout=5m pool_size=10",
"auth_method=oauth2 author=jose tokenizer=cl100k_base sessions=42 secrets_count=3",
"password_length=12 password_changed_at=2024-05-01 api_key_id=17",
"Bearer token missing in request to /api/v1/me",
"WWW-Authenticate: Bearer realm=\"api\", error=\"invalid_token\"",
"invalid token (signature mismatch, kid=2024-06)",
"login failed for user_id=981 reason=bad_password attempts=3",
"ssh://git@github.com/acme/api.git: Permission denied (publickey)",
"https://github.com/acme/api/blob/main/lib/acme/api.ex#L42",
"redis://cache-2:6379/0 connection refused",
"postgres://db-1.internal:5432/app_prod timed out after 15000 ms",
"deps: jason@1.4.1 phoenix@1.7.12 node@18.19.0",
"node nonode@nohost is not alive; start it with --sname",
"mix release failed: elixir@1.14 requires erlang >= 25",
"task-12345678901234567890 risk-score=0.82 ask-again=false",
"version v2.3.14-rc.1+build.20240605 released",
"the file config/prod.secret.exs is missing",
"ETIMEDOUT 10.0.3.7:5432 after 5000ms (retry 3 of 5)",
"IPv6 fe80::1ff:fe23:4567:890a%eth0 unreachable",
"ISBN 978-3-16-148410-0 not found in catalogue",
"phone +1-555-0100 format invalid",
"amount=1234567.89 currency=EUR fee=0.35",
"duration 2h3m4s exceeded deadline 1h",
"Ошибка: файл /var/lib/app/данные.json не найден",
"エラー: 接続がタイムアウトしました (30 秒)",
"emoji in subject 🚀 broke the template renderer at line 3",
"raw bytes \\xff\\xfe\\xc3\\x28 in payload are not UTF-8",
"eyJhbGci truncated header in log",
"The AKIA prefix is reserved for long-term keys (see docs)",
"sk- prefixed keys must be set in OPENAI_API_KEY",
"ghp_ tokens are not accepted here, use a fine-grained token",
"Authorization failed: user lacks scope repo:write",
"key rotation finished: 3 keys rotated, 0 failed",
"pid=4242 ppid=1 uid=1000 gid=1000 exit_status=137",
"epoch_ms=1718035200123 epoch_ns=1718035200123456789",
"order 2024060512345678 not found",
"batch sizes 4000 4001 4002 4003 flushed",
]
# numbers that look like cards but fail Luhn
for pre, n in [("4", 16), ("51", 16), ("37", 15), ("6011", 16), ("4", 13), ("2221", 16), ("35", 16), ("4", 19)]:
    lines.append(f"order reference {not_luhn(pre, n)} not found")
for pre in ["4", "55", "6011"]:
    s = not_luhn(pre, 16)
    lines.append("payment id " + " ".join(s[i:i + 4] for i in range(0, 16, 4)) + " rejected")
    s = not_luhn(pre, 16)
    lines.append("tracking " + "-".join(s[i:i + 4] for i in range(0, 16, 4)) + " unknown")
# long digit runs are never cards
lines.append("serial 41111111111111111111111 out of range")
lines.append("ids: 1234567890123 2345678901234 3456789012345")
print("\n".join(lines))
