# make bench: the operators' dashboard and /metrics (docs/dashboard.md)
# over a loaded state: a collector holding 10,000 groups (10,000 distinct
# errors pushed through it) and the real port program on a state database
# holding 1,000 fixes (each with its ticket, deploy rows and a first
# occurrence) and their tickets, written with sqlite3 before the port
# opens it.
#
#   dashboard_p99_ms        99th percentile of 200 sequential GET /self_heal
#                           (the overview: the collector's, settle stage's and
#                           logger handler's counters, the port's stats,
#                           gate_status and audit status, the HTML) with the
#                           bearer token, after 20 untimed ones; target <= 100
#   dashboard_healthz_p99_ms the same for GET /healthz on the same endpoint:
#                           the baseline of the HTTP path, in the same run
#   metrics_scrape_ms       median of 50 GET /metrics (the exposition, with
#                           the histograms over the 1,000 fixes); target <= 50
#                           (its 99th percentile goes to stderr)

alias SelfHeal.{Collector, Event}

# a random name: unique_integer/1 repeats itself in every new VM
dir =
  Path.join(
    System.tmp_dir!(),
    "sh_bench_dash_" <> Base.url_encode64(:crypto.strong_rand_bytes(9))
  )

state = Path.join(dir, "state")
File.mkdir_p!(state)

# the schema, made by the port itself
{:ok, port0} = SelfHeal.Port.start_link(config: %{"state_dir" => state})
{:ok, _} = SelfHeal.Port.call(port0, "stats", %{})
GenServer.stop(port0)

now = System.os_time(:second)

sql =
  [
    "BEGIN;",
    for i <- 1..1000 do
      fp = "benchfp#{i}"
      first = (now - 7200 + i) * 1000
      status = Enum.at(~w(deployed rolled_back rejected delivered awaiting_approval), rem(i, 5))

      input = ~s({"group":{"first_seen":#{first},"type":"RuntimeError","message":"bench #{i}"}})

      [
        "INSERT INTO tickets(id, fingerprint, backend, status, title, severity, count, created_at, updated_at)",
        " VALUES (#{i}, '#{fp}', 'local', 'open', 'bench #{i}', 'high', 3, #{now - 7000 + i}, #{now});",
        "INSERT INTO fixes(id, fingerprint, ticket_id, status, severity, confidence, input, created_at, updated_at)",
        " VALUES (#{i}, '#{fp}', #{i}, '#{status}', 'high', 0.9, '#{input}', #{now - 6900 + i}, #{now});",
        "INSERT INTO deploys(fingerprint, kind, status, \"commit\", at, fix_id, auto)",
        " VALUES ('#{fp}', 'deploy', 'started', 'c#{i}', #{now - 6000 + i}, #{i}, #{rem(i, 2)});",
        "INSERT INTO deploys(fingerprint, kind, status, \"commit\", at, fix_id, auto)",
        " VALUES ('#{fp}', 'deploy', 'succeeded', 'c#{i}', #{now - 5000 + i}, #{i}, #{rem(i, 2)});"
      ]
    end,
    "COMMIT;"
  ]
  |> IO.iodata_to_binary()

sql_file = Path.join(dir, "fill.sql")
File.write!(sql_file, sql)

{_, 0} =
  System.cmd("sh", ["-c", "sqlite3 \"$0\" < \"$1\"", Path.join(state, "self_heal.db"), sql_file])

{:ok, port} = SelfHeal.Port.start_link(config: %{"state_dir" => state}, name: :bench_dash_port)
{:ok, %{"fixes" => fixes}} = SelfHeal.Port.call(port, "stats", %{})
1000 = Enum.sum(Map.values(fixes))

{:ok, _} = Collector.start_link(name: :bench_dash_collector, max_groups: 20_000)

events =
  for i <- 1..10_000 do
    Event.new(
      type: "RuntimeError",
      message: "bench error",
      stacktrace: [{:"Elixir.Bench.Mod#{i}", :run, 1, [file: ~c"lib/bench/mod#{i}.ex", line: 1]}]
    )
  end

events |> Enum.chunk_every(1000) |> Enum.each(&Collector.push(:bench_dash_collector, &1))
10_000 = Collector.stats(:bench_dash_collector).groups

System.put_env("SH_BENCH_OPERATOR", "bench-operator-token-0123456789")

{:ok, _} =
  SelfHeal.Endpoint.start_link(
    name: :bench_dash_endpoint,
    port: 0,
    collector: :bench_dash_collector,
    approvals: :bench_dash_port,
    operator_token_env: "SH_BENCH_OPERATOR",
    rate_limit: nil
  )

base = "http://127.0.0.1:#{SelfHeal.Endpoint.port(:bench_dash_endpoint)}"
auth = [{"authorization", "Bearer bench-operator-token-0123456789"}]

# requests on one kept-alive connection
{:ok, sock} = :gen_tcp.connect(~c"127.0.0.1", URI.parse(base).port, [:binary, active: false])

defmodule BenchDashHTTP do
  # reads one response (status line, headers, Content-Length body)
  def read(sock), do: read(sock, "")

  defp read(sock, buf) do
    case :binary.match(buf, "\r\n\r\n") do
      {pos, 4} ->
        head = binary_part(buf, 0, pos)
        [status_line | lines] = String.split(head, "\r\n")
        ["HTTP/1.1", code | _] = String.split(status_line, " ")

        len =
          Enum.find_value(lines, 0, fn l ->
            case String.split(l, ":", parts: 2) do
              [k, v] ->
                if String.downcase(k) == "content-length", do: String.to_integer(String.trim(v))

              _ ->
                nil
            end
          end)

        body_have = byte_size(buf) - pos - 4
        body = body(sock, binary_part(buf, pos + 4, body_have), len)
        {String.to_integer(code), body}

      :nomatch ->
        {:ok, data} = :gen_tcp.recv(sock, 0, 30_000)
        read(sock, buf <> data)
    end
  end

  defp body(_sock, have, len) when byte_size(have) >= len, do: have

  defp body(sock, have, len) do
    {:ok, data} = :gen_tcp.recv(sock, 0, 30_000)
    body(sock, have <> data, len)
  end
end

# n requests for path; their milliseconds
timed = fn path, n ->
  for _ <- 1..n do
    head = [
      "GET ",
      path,
      " HTTP/1.1\r\nhost: bench\r\n",
      for({k, v} <- auth, do: [k, ": ", v, "\r\n"]),
      "\r\n"
    ]

    t0 = System.monotonic_time(:microsecond)
    :ok = :gen_tcp.send(sock, head)
    {200, _body} = BenchDashHTTP.read(sock)
    (System.monotonic_time(:microsecond) - t0) / 1000
  end
end

at = fn samples, q ->
  sorted = Enum.sort(samples)
  Enum.at(sorted, min(length(sorted) - 1, trunc(q * length(sorted))))
end

_ = timed.("/self_heal", 20)
overview = timed.("/self_heal", 200)
healthz = timed.("/healthz", 200)
_ = timed.("/metrics", 5)
scrapes = timed.("/metrics", 50)

IO.puts("BENCH dashboard_p99_ms #{Float.round(at.(overview, 0.99), 1)}")
IO.puts("BENCH dashboard_healthz_p99_ms #{Float.round(at.(healthz, 0.99), 2)}")
IO.puts("BENCH metrics_scrape_ms #{Float.round(at.(scrapes, 0.5), 1)}")
IO.puts(:stderr, "dashboard_median_ms #{Float.round(at.(overview, 0.5), 1)}")
IO.puts(:stderr, "metrics_scrape_p99_ms #{Float.round(at.(scrapes, 0.99), 1)}")
:gen_tcp.close(sock)
File.rm_rf!(dir)
