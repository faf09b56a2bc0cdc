defmodule SelfHeal.EdgeAttackTest do
  # Hostile and heavy input at the capture endpoint, over loopback: a real
  # collector and endpoint per test, attackers on 127.0.0.2.. and the
  # legitimate clients on 127.0.0.1. Each test asserts the answer, a bound
  # on the node's memory and that legitimate events sent meanwhile arrive.
  use ExUnit.Case, async: false

  alias SelfHeal.{Collector, Endpoint, RawHTTP}

  @token "edge-token-0123456789abcdef"
  @key "pk_edge"
  @mib 1_048_576
  @attacker {127, 0, 0, 2}

  defp start(opts \\ []) do
    id = System.unique_integer([:positive])
    collector = :"edge_collector_#{id}"
    {collector_opts, opts} = Keyword.pop(opts, :collector_opts, [])

    start_supervised!({Collector, [name: collector, flush_ms: 5] ++ collector_opts}, id: collector)

    endpoint = :"edge_endpoint_#{id}"

    start_supervised!(
      {Endpoint,
       [
         name: endpoint,
         port: 0,
         tokens: [@token],
         site_keys: %{@key => %{origins: ["*"]}},
         collector: collector,
         rate_limit: nil
       ] ++ opts}
    )

    %{collector: collector, port: Endpoint.port(endpoint)}
  end

  defp bearer, do: {"authorization", "Bearer " <> @token}

  defp ingest(ctx, body, headers \\ [], from \\ {127, 0, 0, 1}),
    do: RawHTTP.request(ctx.port, "POST", "/ingest", [bearer() | headers], body, from)

  defp lines(n, f), do: Enum.map(1..n, &[f.(&1), ?\n])

  defp fluent_bit_chunk(n, tag) do
    lines(n, &~s({"date":1700000000.#{&1},"log":"#{tag} line #{&1} done","level":"info"}))
    |> IO.iodata_to_binary()
  end

  # legitimate events, one request each, while `attack` runs; returns how
  # many were acknowledged
  defp during(ctx, attack, n) do
    task = Task.async(attack)

    legit =
      for i <- 1..n do
        Process.sleep(20)
        match?({202, _, _}, ingest(ctx, ~s({"log":"legit #{i}","type":"LegitError"}\n)))
      end

    {Task.await(task, 60_000), Enum.count(legit, & &1)}
  end

  defp legit_count(ctx) do
    ctx.collector
    |> Collector.groups()
    |> Enum.filter(&(&1.type == "LegitError"))
    |> Enum.map(& &1.count)
    |> Enum.sum()
  end

  defp growth(fun) do
    :erlang.garbage_collect()
    base = :erlang.memory(:total)
    sampler = RawHTTP.sample_memory()
    result = fun.()
    {result, (RawHTTP.stop(sampler) - base) / @mib}
  end

  # ------------------------------------------------------------ 1

  test "1. a zip bomb of empty records is refused before it is decoded" do
    ctx = start()
    # 2.7 M records in about 8 KB
    bomb = :zlib.gzip(["[", List.duplicate("{},", 2_700_000), "{}]"])
    assert byte_size(bomb) < 10_000
    lines_bomb = :zlib.gzip(List.duplicate("{}\n", 2_700_000))
    flat = :binary.copy("{}\n", div(@mib, 3))
    gzip = [{"content-encoding", "gzip"}]

    {{answers, legit}, mb} =
      growth(fn ->
        during(
          ctx,
          fn ->
            tasks =
              for _ <- 1..3 do
                Task.async(fn ->
                  RawHTTP.request(ctx.port, "POST", "/capture?key=#{@key}", gzip, bomb, @attacker)
                end)
              end

            [
              ingest(ctx, lines_bomb, gzip, @attacker),
              ingest(ctx, flat, [], @attacker) | Task.await_many(tasks, 60_000)
            ]
          end,
          20
        )
      end)

    assert [{413, _, ingest_text}, {413, _, flat_text} | captures] = answers
    assert ingest_text =~ "more than 100000 records"
    assert flat_text =~ "more than 100000 records"

    assert Enum.all?(
             captures,
             &match?({413, _, "decompressed body larger than 262144 bytes\n"}, &1)
           )

    assert mb < 100, "the node grew #{mb} MB"
    assert legit == 20 and legit_count(ctx) == 20
  end

  # ------------------------------------------------------------ 2

  test "2. a chunk of 45,000 records, plain (2 MB) or gzip, is taken whole, also when the collector is busy" do
    ctx =
      start(
        admit_wait: 0,
        overload_wait: 0,
        collector_opts: [max_pending: 20_000]
      )

    chunk = fluent_bit_chunk(45_000, "plain")
    assert byte_size(chunk) > 2_000_000
    assert {202, _, body} = ingest(ctx, chunk)
    assert body =~ ~s("accepted":45000)

    gz = :zlib.gzip(fluent_bit_chunk(45_000, "gzip"))
    assert {202, _, _} = ingest(ctx, gz, [{"content-encoding", "gzip"}])
    assert Collector.stats(ctx.collector).events == 90_000

    # a collector that can hardly keep up: slices are refused (503) and the
    # retry of the same bytes goes on from where the last one stopped, so
    # in the end every record is there exactly once
    busy = start(admit_wait: 0, overload_wait: 0, collector_opts: [max_pending: 1500])
    retried = fluent_bit_chunk(45_000, "retried")

    statuses =
      Enum.reduce_while(1..2000, [], fn _, acc ->
        case ingest(busy, retried) do
          {202, _, _} -> {:halt, [202 | acc]}
          {503, %{"retry-after" => _}, _} -> {:cont, [503 | acc]}
        end
      end)

    assert hd(statuses) == 202
    assert Collector.stats(busy.collector).events == 45_000
  end

  # ------------------------------------------------------------ 3

  test "3. keep-alive and slowloris floods do not keep authenticated ingest out" do
    ctx = start(max_connections: 100, reserved_connections: 20, pressure_idle_timeout: 300)

    flood =
      for i <- 0..119 do
        {:ok, s} = RawHTTP.connect(ctx.port, {127, 0, 0, 2 + rem(i, 4)})
        :gen_tcp.send(s, RawHTTP.bytes("GET", "/healthz", []))
        s
      end

    slow =
      for i <- 0..29 do
        {:ok, s} = RawHTTP.connect(ctx.port, {127, 0, 0, 10 + rem(i, 3)})
        :gen_tcp.send(s, "POST /capture HTTP/1.1\r\nhost: x\r\n")
        s
      end

    trickle =
      spawn_link(fn ->
        Stream.repeatedly(fn ->
          Enum.each(slow, &:gen_tcp.send(&1, "x-slow: 1\r\n"))
          Process.sleep(100)
        end)
        |> Stream.run()
      end)

    Process.sleep(500)

    {{_, served}, mb} = growth(fn -> during(ctx, fn -> :ok end, 60) end)

    Process.unlink(trickle)
    Process.exit(trickle, :kill)
    Enum.each(flood ++ slow, &:gen_tcp.close/1)
    assert served == 60
    assert legit_count(ctx) == 60
    assert mb < 100

    # one client cannot take more than max_connections_per_source
    capped = start(max_connections_per_source: 5)

    sockets =
      for _ <- 1..8 do
        {:ok, s} = RawHTTP.connect(capped.port, @attacker)
        s
      end

    refused = Enum.count(sockets, &match?({503, _, _}, RawHTTP.answer(&1, 1000)))
    assert refused == 3
  end

  # ------------------------------------------------------------ 4

  test "4. a public key cannot fill the groups: quotas per source, eviction of the least recent" do
    ctx = start()

    for r <- 1..11 do
      events = Enum.map_join(1..1000, ",", &~s({"type":"Flood#{r}x#{&1}","message":"f"}))
      body = ~s({"events":[#{events}]})

      assert {202, _, _} =
               RawHTTP.request(ctx.port, "POST", "/capture?key=#{@key}", [], body, @attacker)
    end

    for i <- 1..10,
        do: assert({202, _, _} = ingest(ctx, ~s({"log":"new #{i}","type":"LegitError#{i}"}\n)))

    stats = Collector.stats(ctx.collector)
    assert stats.quota_dropped == 11_000 - 100
    types = ctx.collector |> Collector.groups() |> Enum.map(& &1.type)
    for i <- 1..10, do: assert("LegitError#{i}" in types)

    # past the quota (many sources, or a token): the least recent small
    # groups are evicted, never the new error
    small = start(collector_opts: [max_groups: 50])
    body = Enum.map_join(1..200, "", &~s({"log":"x","type":"Old#{&1}"}\n))
    assert {202, _, _} = ingest(small, body)
    assert {202, _, _} = ingest(small, ~s({"log":"x","type":"Fresh"}\n))
    stats = Collector.stats(small.collector)
    assert stats.groups == 50 and stats.evicted == 151
    assert "Fresh" in Enum.map(Collector.groups(small.collector), & &1.type)
  end

  # ------------------------------------------------------------ 5

  test "5. a body of one-byte chunks is kept in one bounded buffer" do
    ctx = start()
    data = :binary.copy(~s({"log":"chunked","type":"LegitError"}\n), 13_500)
    assert byte_size(data) > 500_000
    chunked = [for(<<c <- data>>, do: ["1\r\n", c, "\r\n"]), "0\r\n\r\n"]
    {:ok, socket} = RawHTTP.connect(ctx.port, @attacker)
    head = RawHTTP.bytes("POST", "/ingest", [bearer(), {"transfer-encoding", "chunked"}])

    {answer, mb} =
      growth(fn ->
        :ok = :gen_tcp.send(socket, [head, chunked])
        RawHTTP.answer(socket, 30_000)
      end)

    assert {202, _, _} = answer
    assert mb < 40, "the node grew #{mb} MB"
    assert legit_count(ctx) == 13_500

    # framing of more than max_body (here 1 KiB data in 64 KiB of chunks)
    tiny = start(max_body: 1024)
    {:ok, socket} = RawHTTP.connect(tiny.port, @attacker)
    head = RawHTTP.bytes("POST", "/ingest", [bearer(), {"transfer-encoding", "chunked"}])

    :ok =
      :gen_tcp.send(socket, [
        head,
        List.duplicate("0001;#{String.duplicate("e", 60)}\r\nx\r\n", 1000)
      ])

    assert {413, _, _} = RawHTTP.answer(socket)
  end

  # ------------------------------------------------------------ 6

  test "6. no control byte is ever reflected into a header" do
    ctx = start()
    {:ok, socket} = RawHTTP.connect(ctx.port, @attacker)
    origin = "https://a.example\rSet-Cookie: owned=1"

    :ok =
      :gen_tcp.send(
        socket,
        RawHTTP.bytes("POST", "/capture?key=#{@key}", [{"origin", origin}], ~s({"message":"m"}))
      )

    {:ok, raw} = :gen_tcp.recv(socket, 0, 5000)
    refute raw =~ "owned"
    assert raw =~ "400 Bad Request"

    assert {400, headers, _} =
             RawHTTP.request(ctx.port, "OPTIONS", "/capture?key=#{@key}", [{"origin", origin}])

    refute Map.has_key?(headers, "set-cookie")
    refute Map.has_key?(headers, "access-control-allow-origin")

    # a clean origin is still reflected
    assert {204, %{"access-control-allow-origin" => "https://a.example"}, _} =
             RawHTTP.request(ctx.port, "OPTIONS", "/capture?key=#{@key}", [
               {"origin", "https://a.example"}
             ])
  end

  # ------------------------------------------------------------ 7

  test "7. gzip per RFC 1952: every member inflated, truncation refused" do
    ctx = start()
    gzip = [{"content-encoding", "gzip"}]
    one = :zlib.gzip(~s({"log":"first","type":"LegitError"}\n))
    two = :zlib.gzip(~s({"log":"second","type":"LegitError"}\n))
    assert {202, _, body} = ingest(ctx, one <> two, gzip)
    assert body =~ ~s("accepted":2)

    whole = :zlib.gzip(fluent_bit_chunk(2000, "cut"))
    cut = binary_part(whole, 0, div(byte_size(whole), 2))
    assert {400, _, "malformed gzip body\n"} = ingest(ctx, cut, gzip)
    assert {400, _, _} = ingest(ctx, one <> "trailing garbage", gzip)
    assert Collector.stats(ctx.collector).events == 2
    assert legit_count(ctx) == 2
  end
end
