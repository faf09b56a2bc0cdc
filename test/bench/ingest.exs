# MIX_ENV=bench mix run test/bench/ingest.exs
#
# Drives SelfHeal.Endpoint's POST /ingest the way Fluent Bit does (`http`
# output, `Format json_lines`): bodies of 100 records over keep-alive
# connections on loopback, for 20 s, from a load generator in C
# (test/bench/loadgen.c, built here with `cc -O2`; one thread and poll(2),
# so it takes little of the CPU the server is measured on). Prints:
#
#   BENCH ingest_eps <events/s>     events acknowledged with 2xx per second
#   BENCH ingest_p99_ms <ms>        99th percentile of request latency
#   BENCH ingest_lost <n>           events acknowledged with 2xx minus events the
#                                   collector fingerprinted; must be 0
#
# Details (requests, 503s, p50, max, collector counters) go to stderr.
# Environment: INGEST_SECONDS (20), INGEST_CONNECTIONS (8), INGEST_LINES (100),
# INGEST_SERVER: `endpoint` (default), or for the comparison in docs/endpoint.md
# `inets` (OTP's httpd with default options, the same decoding and collector
# behind a mod callback) or `inets_nodelay` (the same with nodelay sockets).

defmodule SelfHeal.Bench.InetsIngest do
  @moduledoc false
  # POST /ingest as an inets httpd module: bearer check, decode, collector.

  require Record

  Record.defrecord(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  alias SelfHeal.{Collector, Event, Native}

  def unquote(:do)(m) do
    auth = List.keyfind(mod(m, :parsed_header), ~c"authorization", 0)

    if mod(m, :method) == ~c"POST" and auth == {~c"authorization", ~c"Bearer bench-token"} do
      decoded = m |> mod(:entity_body) |> IO.iodata_to_binary() |> Native.decode_json_lines()

      events =
        for e <- decoded.events do
          %Event{
            source: :fluent_bit,
            message: e.message,
            service: e.service,
            type: e.type,
            stacktrace: e.stacktrace,
            timestamp: e.timestamp,
            metadata: e.metadata
          }
        end

      case Collector.ingest(:bench_ingest_collector, events) do
        :ok ->
          body = ~s({"accepted":#{length(events)},"malformed":#{decoded.malformed}})
          {:proceed, [{:response, {202, String.to_charlist(body)}}]}

        {:error, :overloaded} ->
          {:proceed, [{:response, {503, ~c"overloaded"}}]}
      end
    else
      {:proceed, [{:response, {401, ~c"unauthorized"}}]}
    end
  end
end

defmodule SelfHeal.Bench.Ingest do
  @moduledoc false

  alias SelfHeal.{Collector, Endpoint}

  @token "bench-token"
  @collector :bench_ingest_collector
  @endpoint :bench_ingest_endpoint

  def run do
    seconds = env_int("INGEST_SECONDS", 20)
    connections = env_int("INGEST_CONNECTIONS", 8)
    lines = env_int("INGEST_LINES", 100)
    loadgen = build_loadgen()

    server = System.get_env("INGEST_SERVER", "endpoint")

    {:ok, _} = Collector.start_link(name: @collector)
    port = start_server(server)
    bodies = Path.join(System.tmp_dir!(), "self_heal_ingest_#{System.os_time()}.jsonl")
    File.write!(bodies, Enum.map(0..(256 * lines - 1), &[record(&1), ?\n]))

    sample = :scheduler.sample_all()

    {out, 0} =
      System.cmd(loadgen, [
        "127.0.0.1",
        Integer.to_string(port),
        @token,
        bodies,
        Integer.to_string(lines),
        Integer.to_string(connections),
        Integer.to_string(seconds)
      ])

    utilization = :scheduler.utilization(sample)
    File.rm(bodies)
    result = parse(out)
    stats = drain(result.accepted)

    IO.puts(:stderr, "# loadgen: #{inspect(result)}")
    IO.puts(:stderr, "# collector: #{inspect(Map.delete(stats, :miner))}")

    IO.puts(
      :stderr,
      "# server: #{server}, connections: #{connections}, lines per request: #{lines}"
    )

    IO.puts(:stderr, "# scheduler utilization: #{format_utilization(utilization)}")

    eps = result.accepted / result.elapsed_s
    IO.puts("BENCH ingest_eps #{round(eps)}")
    IO.puts("BENCH ingest_p99_ms #{Float.round(result.p99_ms, 2)}")
    IO.puts("BENCH ingest_lost #{result.accepted - stats.events}")
  end

  defp start_server("endpoint") do
    {:ok, _} =
      Endpoint.start_link(
        name: @endpoint,
        port: 0,
        tokens: [@token],
        collector: @collector,
        rate_limit: nil
      )

    Endpoint.port(@endpoint)
  end

  defp start_server("inets" <> nodelay) do
    :ok = Application.ensure_started(:inets)
    dir = String.to_charlist(System.tmp_dir!())

    socket_type =
      if nodelay == "_nodelay", do: [socket_type: {:ip_comm, [nodelay: true]}], else: []

    {:ok, pid} =
      :inets.start(
        :httpd,
        [
          port: 0,
          bind_address: {127, 0, 0, 1},
          server_name: ~c"bench",
          server_root: dir,
          document_root: dir,
          modules: [SelfHeal.Bench.InetsIngest]
        ] ++ socket_type
      )

    :httpd.info(pid)[:port]
  end

  # `make bench` builds it with the project's flags and passes LOADGEN.
  defp build_loadgen do
    case System.get_env("LOADGEN") do
      nil -> compile_loadgen()
      path -> Path.expand(path)
    end
  end

  defp compile_loadgen do
    out = Path.join([Mix.Project.build_path(), "bench", "loadgen"])
    File.mkdir_p!(Path.dirname(out))
    src = Path.join(__DIR__, "loadgen.c")

    {msg, status} =
      System.cmd("cc", ["-O2", "-std=c11", "-Wall", "-Wextra", "-o", out, src],
        stderr_to_stdout: true
      )

    if status != 0, do: raise("cc failed:\n" <> msg)
    out
  end

  # The collector has processed everything it accepted when its event count
  # stops growing (ingest/2 casts, so the casts are ordered before stats/1).
  defp drain(accepted, last \\ -1, deadline \\ System.monotonic_time(:millisecond) + 60_000) do
    stats = Collector.stats(@collector)

    cond do
      stats.events >= accepted ->
        stats

      stats.events == last ->
        stats

      System.monotonic_time(:millisecond) > deadline ->
        stats

      true ->
        Process.sleep(200)
        drain(accepted, stats.events, deadline)
    end
  end

  defp format_utilization(utilization) do
    utilization
    |> Enum.flat_map(fn
      {:total, _, pct} -> [["total ", pct]]
      {:normal, id, _, pct} -> [["normal#{id} ", pct]]
      {:cpu, id, _, pct} -> [["dirty_cpu#{id} ", pct]]
      _ -> []
    end)
    |> Enum.intersperse(", ")
  end

  defp parse(out) do
    for line <- String.split(out, "\n", trim: true), into: %{} do
      [key, value] = String.split(line, " ")

      value =
        if String.contains?(value, "."),
          do: String.to_float(value),
          else: String.to_integer(value)

      {String.to_atom(key), value}
    end
  end

  defp env_int(name, default) do
    case System.get_env(name) do
      nil -> default
      value -> String.to_integer(value)
    end
  end

  # Realistic Fluent Bit records (tail input + kubernetes filter, json_lines
  # with a double `date`): application errors from a few services with ids,
  # addresses and durations in them, some with an exception and its stack.
  @services ~w(api billing checkout worker gateway)
  @templates [
    {"error", "connection to 10.0.~b.~b:5432 refused after ~b ms"},
    {"error", "request ~b failed: upstream timed out after ~b ms (attempt ~b)"},
    {"warn", "user ~b exceeded quota, ~b requests in the last ~b s"},
    {"error", "payment ~b declined for order ~b: code ~b"},
    {"error", "cache miss storm on shard-~b: ~b misses in ~b ms"},
    {"critical", "disk /dev/sd~b is ~b% full on node-~b"},
    {"error", "job ~b crashed with exit status ~b after ~b retries"}
  ]

  def record(i) do
    service = Enum.at(@services, rem(i, length(@services)))
    {level, template} = Enum.at(@templates, rem(div(i, 3), length(@templates)))
    args = [rem(i * 7, 250), rem(i * 13, 250), rem(i, 90) + 5]
    message = :io_lib.format(template, args) |> IO.iodata_to_binary()
    date = 1_700_000_000 + i / 1000

    base = [
      ~s({"date":#{date},"log":"#{message}","level":"#{level}","stream":"stderr",),
      ~s("kubernetes":{"pod_name":"#{service}-#{rem(i, 9)}-7d9f8","namespace_name":"prod",),
      ~s("container_name":"#{service}","host":"node-#{rem(i, 4)}"})
    ]

    if rem(i, 10) == 0 do
      [
        base,
        ~s|,"exception":{"type":"KeyError","message":"key :user_#{i} not found",|,
        ~s|"stacktrace":"** (KeyError) key :user_#{i} not found\\n|,
        ~s|    (my_app 0.1.0) lib/my_app/#{service}.ex:#{40 + rem(i, 3)}: MyApp.Svc.run/2\\n|,
        ~s|    (elixir 1.14.0) lib/enum.ex:1658: Enum.\\"-map/2-lists^map/1-0-\\"/2"}}|
      ]
    else
      [base, "}"]
    end
  end
end

SelfHeal.Bench.Ingest.run()
