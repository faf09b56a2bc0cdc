# MIX_ENV=bench mix run --no-start test/bench/edge.exs
#
# Hostile and heavy input at SelfHeal.Endpoint, on loopback, with the
# default limits (docs/endpoint.md). Prints:
#
#   BENCH bomb_peak_mb <MB>            growth of the node's RSS while an 8 KB gzip
#                                      body of `{}` lines is sent to /capture with
#                                      the public site key, and to /ingest with a
#                                      token (target <= 50)
#   BENCH bomb_baseline_mb <MB>        the same for an 8 KB legitimate body
#   BENCH big_chunk_lost <n>           records lost of four 45,000-record Fluent
#                                      Bit chunks (two plain, two gzip) sent at
#                                      once and retried as Fluent Bit retries
#                                      (target 0)
#   BENCH legit_served_under_flood <share>
#                                      share of authenticated requests answered 202
#                                      while 1,100 keep-alive connections from 20
#                                      addresses flood the endpoint (target >= 0.99)

Code.require_file("test/support/raw_http.ex")

defmodule SelfHeal.Bench.Edge do
  @moduledoc false
  alias SelfHeal.{Collector, Endpoint, RawHTTP}

  @token "bench-edge-token-0123456789"
  @key "pk_bench"

  def run do
    {:ok, _} = Application.ensure_all_started(:crypto)
    {:ok, _} = Collector.start_link(name: :bench_edge_collector)

    {:ok, _} =
      Endpoint.start_link(
        name: :bench_edge,
        port: 0,
        tokens: [@token],
        site_keys: %{@key => %{origins: ["*"]}},
        collector: :bench_edge_collector
      )

    port = Endpoint.port(:bench_edge)
    bomb(port)
    big_chunks(port)
    flood(port)
  end

  # ------------------------------------------------------------ bomb

  defp bomb(port) do
    # 2.7 M records: inflated (8.1 MB) just under :max_decompressed, so
    # /ingest counts them; /capture stops inflating at its own limit
    bomb = :zlib.gzip(List.duplicate("{}\n", 2_700_000))

    legit =
      :binary.copy(~s({"log":"a legitimate line of about this size","level":"error"}\n), 130)

    gzip = [{"content-encoding", "gzip"}]

    baseline =
      rss_growth(fn ->
        {202, _, _} = RawHTTP.request(port, "POST", "/ingest", [bearer()], legit)
      end)

    peak =
      rss_growth(fn ->
        capture = RawHTTP.request(port, "POST", "/capture?key=#{@key}", gzip, bomb)
        ingest = RawHTTP.request(port, "POST", "/ingest", [bearer() | gzip], bomb)

        IO.puts(
          :stderr,
          "bomb: #{byte_size(bomb)} bytes; /capture #{elem(capture, 0)}, /ingest #{elem(ingest, 0)}"
        )
      end)

    IO.puts("BENCH bomb_peak_mb #{peak}")
    IO.puts("BENCH bomb_baseline_mb #{baseline}")
  end

  defp rss_growth(fun) do
    :erlang.garbage_collect()
    Process.sleep(200)
    base = rss()
    parent = self()

    sampler =
      spawn_link(fn ->
        loop = fn peak, loop ->
          receive do
            :stop -> send(parent, {:peak, peak})
          after
            1 -> loop.(max(peak, rss()), loop)
          end
        end

        loop.(base, loop)
      end)

    fun.()
    send(sampler, :stop)

    receive do
      {:peak, peak} -> Float.round((peak - base) / 1024, 1)
    end
  end

  # kB
  defp rss do
    "/proc/self/status"
    |> File.read!()
    |> then(&Regex.run(~r/VmRSS:\s+(\d+)/, &1))
    |> then(fn [_, kb] -> String.to_integer(kb) end)
  end

  # ------------------------------------------------------------ chunks

  defp big_chunks(port) do
    before = Collector.stats(:bench_edge_collector).events

    chunks =
      for {kind, i} <- [plain: 1, gzip: 2, plain: 3, gzip: 4] do
        lines =
          for n <- 1..45_000,
              do: ~s({"date":1700000000.#{n},"log":"chunk #{i} line #{n} ok","level":"info"}\n)

        body = IO.iodata_to_binary(lines)

        if kind == :gzip,
          do: {:zlib.gzip(body), [{"content-encoding", "gzip"}]},
          else: {body, []}
      end

    IO.puts(:stderr, "chunks: #{Enum.map_join(chunks, ", ", &byte_size(elem(&1, 0)))} bytes")

    delivered =
      chunks
      |> Enum.map(fn {body, headers} ->
        Task.async(fn -> fluent_bit(port, body, headers, 0) end)
      end)
      |> Task.await_many(300_000)

    after_events = wait_events(before + 180_000)
    lost = 180_000 - (after_events - before)
    IO.puts(:stderr, "chunks: #{inspect(delivered)}; collector events #{after_events - before}")
    IO.puts("BENCH big_chunk_lost #{max(lost, 0)}")
  end

  # Fluent Bit's http output: 2xx done; 408, 429 and 5xx retried (Retry_Limit
  # 10, after a wait; here the Retry-After or 1 s); any other 4xx dropped
  defp fluent_bit(port, body, headers, tries) do
    case RawHTTP.request(port, "POST", "/ingest", [bearer() | headers], body) do
      {status, _, _} when status in 200..205 ->
        {:ok, tries}

      {status, h, _} when (status in [408, 429] or status >= 500) and tries < 10 ->
        Process.sleep(1000 * String.to_integer(Map.get(h, "retry-after", "1")))
        fluent_bit(port, body, headers, tries + 1)

      other ->
        {:dropped, elem(other, 0)}
    end
  end

  defp wait_events(expected, tries \\ 100) do
    events = Collector.stats(:bench_edge_collector).events

    if events >= expected or tries == 0 do
      events
    else
      Process.sleep(50)
      wait_events(expected, tries - 1)
    end
  end

  # ------------------------------------------------------------ flood

  defp flood(port) do
    stop = :atomics.new(1, [])

    flooders =
      for i <- 0..1099 do
        spawn_link(fn -> flooder(port, {127, 0, 1, 1 + rem(i, 20)}, stop) end)
      end

    Process.sleep(2000)

    results =
      for i <- 1..200 do
        Process.sleep(25)
        RawHTTP.request(port, "POST", "/ingest", [bearer()], ~s({"log":"legit #{i}"}\n))
      end

    :atomics.put(stop, 1, 1)
    Enum.each(flooders, &Process.unlink/1)
    served = Enum.count(results, &match?({202, _, _}, &1))
    statuses = results |> Enum.map(&elem(&1, 0)) |> Enum.frequencies()
    IO.puts(:stderr, "flood: legit answers #{inspect(statuses)}")
    IO.puts("BENCH legit_served_under_flood #{Float.round(served / 200, 3)}")
  end

  # one keep-alive connection asking /healthz twice a second; reconnects
  # when it is closed, like a client keeping its pool full
  defp flooder(port, from, stop) do
    case RawHTTP.connect(port, from) do
      {:ok, socket} -> ask(socket, port, from, stop)
      _ -> again(port, from, stop)
    end
  end

  defp ask(socket, port, from, stop) do
    if :atomics.get(stop, 1) == 1 do
      :gen_tcp.close(socket)
    else
      with :ok <- :gen_tcp.send(socket, RawHTTP.bytes("GET", "/healthz", [])),
           {200, headers, _} <- RawHTTP.answer(socket, 5000),
           false <- headers["connection"] == "close" do
        Process.sleep(500)
        ask(socket, port, from, stop)
      else
        _ ->
          :gen_tcp.close(socket)
          again(port, from, stop)
      end
    end
  end

  defp again(port, from, stop) do
    Process.sleep(100)
    if :atomics.get(stop, 1) == 0, do: flooder(port, from, stop)
  end

  defp bearer, do: {"authorization", "Bearer " <> @token}
end

SelfHeal.Bench.Edge.run()
