# make bench: the port program's request/reply latency through SelfHeal.Port.
#
#   port_roundtrip_us   median microseconds of SelfHeal.Port.call(srv, "ping")
#                       over 10,000 sequential calls from one process, after
#                       1,000 untimed warm-up calls: encoding, the GenServer
#                       hop, the {packet,4} pipe both ways, the port's JSON
#                       parse and reply (ping runs on its reader thread), and
#                       the decode. The 99th percentile goes to stderr.
#   ticket_upsert_one_fp_per_s
#                       ticket_upsert requests/s of 1,000 concurrent requests on
#                       one fingerprint (local store, 8 workers): they take
#                       turns on the fingerprint, each a comment whose count,
#                       record and job end are one SQLite transaction
#   ticket_upsert_many_fp_per_s
#                       the same with 1,000 different fingerprints (each a
#                       new ticket): the baseline, measured in the same run

{:ok, srv} = SelfHeal.Port.start_link(config: %{})

for _ <- 1..1000, do: {:ok, _} = SelfHeal.Port.call(srv, "ping")

samples =
  for _ <- 1..10_000 do
    t0 = System.monotonic_time(:nanosecond)
    {:ok, %{"pong" => true}} = SelfHeal.Port.call(srv, "ping")
    System.monotonic_time(:nanosecond) - t0
  end

sorted = Enum.sort(samples)
at = fn q -> Enum.at(sorted, min(length(sorted) - 1, trunc(q * length(sorted)))) / 1000 end

IO.puts("BENCH port_roundtrip_us #{Float.round(at.(0.5), 1)}")
IO.puts(:stderr, "port_roundtrip_p99_us #{Float.round(at.(0.99), 1)}")
GenServer.stop(srv)

# ticket_upsert throughput: one fingerprint (turns taken) against many.
upserts = fn label, fp_of ->
  dir = Path.join(System.tmp_dir!(), "sh_bench_tickets_#{System.unique_integer([:positive])}")
  config = %{"state_dir" => dir, "port" => %{"workers" => 8}}
  {:ok, port} = SelfHeal.Port.start_link(config: config)

  issue = fn i ->
    fp = fp_of.(i)

    %{
      "root_cause" => "the database refuses connections",
      "severity" => "high",
      "group_ids" => [fp],
      "groups" => [%{"id" => fp, "count" => 1, "last_seen" => i}]
    }
  end

  {:ok, _} = SelfHeal.Port.call(port, "ticket_upsert", issue.(0))
  t0 = System.monotonic_time(:microsecond)

  1..1000
  |> Task.async_stream(&({:ok, _} = SelfHeal.Port.call(port, "ticket_upsert", issue.(&1))),
    max_concurrency: 64,
    timeout: 120_000
  )
  |> Stream.run()

  secs = (System.monotonic_time(:microsecond) - t0) / 1_000_000
  IO.puts("BENCH #{label} #{round(1000 / secs)}")
  GenServer.stop(port)
  File.rm_rf!(dir)
end

upserts.("ticket_upsert_one_fp_per_s", fn _ -> "0123456789abcdef" end)
upserts.("ticket_upsert_many_fp_per_s", fn i -> "fp#{i}" end)
