# make bench: BENCH flood_peak_mb, the node's peak memory while 1,000,000
# distinct fingerprints arrive through SelfHeal.Collector.ingest/2 (the
# HTTP endpoint's path), with the default bounds: 10,000 collector groups,
# 10,000 open settle groups, 20,000 pending events. Also prints how many
# events were shed or overflowed, which is what the bounds cost.

defmodule SelfHeal.Bench.Flood do
  @moduledoc false
  alias SelfHeal.{Collector, Event, Settle}

  def run do
    {:ok, _} = Application.ensure_all_started(:self_heal)
    :erlang.garbage_collect()
    base = :erlang.memory(:total)
    parent = self()
    sampler = spawn_link(fn -> sample(parent, base) end)

    stack = [{MyApp.Flood, :run, 1, [file: ~c"lib/my_app/flood.ex", line: 1]}]

    sent =
      Enum.reduce(0..999, 0, fn chunk, acc ->
        events =
          for i <- 1..1000 do
            n = chunk * 1000 + i
            %Event{type: "FloodError#{n}", message: "flood #{n}", stacktrace: stack, timestamp: n}
          end

        acc + push(events, 0)
      end)

    # let the collector drain, then stop sampling
    wait_drained()
    send(sampler, {:stop, self()})
    peak = receive(do: ({:peak, p} -> p))
    stats = Collector.stats()
    settle = Settle.stats()
    IO.puts("BENCH flood_peak_mb #{Float.round(peak / 1_048_576, 1)}")
    IO.puts("BENCH flood_events_accepted #{sent}")
    IO.puts("BENCH flood_groups_kept #{stats.groups}")
    IO.puts("BENCH flood_overflow #{stats.overflow}")
    IO.puts("BENCH flood_evicted #{stats.evicted}")
    IO.puts("BENCH flood_settle_open #{settle.open}")
  end

  # ingest/2 refuses when 20,000 events wait: back off like a client would
  defp push(events, tries) do
    case Collector.ingest(events) do
      :ok ->
        length(events)

      {:error, :overloaded} when tries < 1000 ->
        Process.sleep(2)
        push(events, tries + 1)

      {:error, :overloaded} ->
        0
    end
  end

  defp wait_drained do
    before = Collector.stats().events
    Process.sleep(200)
    if Collector.stats().events != before, do: wait_drained()
  end

  defp sample(parent, peak) do
    receive do
      {:stop, from} -> send(from, {:peak, peak})
    after
      10 -> sample(parent, max(peak, :erlang.memory(:total)))
    end
  end
end

SelfHeal.Bench.Flood.run()
