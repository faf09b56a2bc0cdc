# make bench: the port program's request/reply latency through SelfHeal.Port.
#
#   port_roundtrip_us   median microseconds of SelfHeal.Port.call(srv, "ping")
#                       over 10,000 sequential calls from one process, after
#                       1,000 untimed warm-up calls: encoding, the GenServer
#                       hop, the {packet,4} pipe both ways, the port's JSON
#                       parse and reply (ping runs on its reader thread), and
#                       the decode. The 99th percentile goes to stderr.

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
