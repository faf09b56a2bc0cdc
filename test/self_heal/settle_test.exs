defmodule SelfHeal.SettleTest do
  # The settle stage with real collector, triage and sink processes.
  use ExUnit.Case, async: true

  alias SelfHeal.{Collector, Event, Orchestrator.Sink, Settle, Triage}

  defp uniq(prefix), do: :"#{prefix}_#{System.unique_integer([:positive])}"

  defp pipeline(settle_opts, triage_opts \\ []) do
    triage = uniq(:triage)
    sink = uniq(:sink)
    settle = uniq(:settle)
    collector = uniq(:collector)
    start_supervised!({Triage, [name: triage] ++ triage_opts}, id: triage)
    start_supervised!({Sink, name: sink, log: false}, id: sink)

    start_supervised!(
      {Settle, [name: settle, triage: triage, orchestrator: {Sink, sink}] ++ settle_opts},
      id: settle
    )

    start_supervised!({Collector, name: collector, flush_ms: 5, settle: settle}, id: collector)
    %{triage: triage, sink: sink, settle: settle, collector: collector}
  end

  defp crash(message, module \\ MyApp.Worker) do
    Event.new(
      type: "RuntimeError",
      message: message,
      stacktrace: [{module, :run, 1, [file: ~c"lib/my_app/worker.ex", line: 10]}]
    )
  end

  defp eventually(fun, timeout \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout

    Stream.repeatedly(fn ->
      case fun.() do
        v when v in [nil, false, []] ->
          if System.monotonic_time(:millisecond) > deadline, do: flunk("timed out")
          Process.sleep(10)
          nil

        v ->
          v
      end
    end)
    |> Enum.find(& &1)
  end

  test "10,000 identical errors within 10 s settle as exactly one group of 10,000" do
    p = pipeline(settle_ms: 300, max_wait_ms: 60_000, shards: 2)

    for chunk <- 1..100 do
      Collector.push(
        p.collector,
        for(i <- 1..100, do: crash("payment #{chunk * 100 + i} failed"))
      )

      Process.sleep(5)
    end

    [group] = eventually(fn -> Sink.escalated(p.sink) end)
    assert group.count == 10_000
    assert group.severity == :high
    assert group.normalized == "payment <int> failed"
    Process.sleep(400)
    assert length(Sink.escalated(p.sink)) == 1
    assert %{settled: 1, open: 0, overflow: 0} = Settle.stats(p.settle)
  end

  test "every occurrence resets the window" do
    p = pipeline(settle_ms: 200, max_wait_ms: 60_000)

    for _ <- 1..8 do
      Collector.push(p.collector, [crash("boom")])
      Process.sleep(60)
    end

    # 480 ms of occurrences 60 ms apart: still open
    assert Sink.escalated(p.sink) == []
    assert [%{count: 8}] = Settle.open(p.settle)
    [group] = eventually(fn -> Sink.escalated(p.sink) end)
    assert group.count == 8
  end

  test "a steady stream still settles at the maximum wait" do
    p = pipeline(settle_ms: 200, max_wait_ms: 300)

    for _ <- 1..40 do
      Collector.push(p.collector, [crash("steady")])
      Process.sleep(20)
    end

    Settle.settle_all(p.settle)

    counts =
      Enum.map(Sink.escalated(p.sink), & &1.count) ++
        Enum.map(Sink.held(p.sink), fn {g, _} -> g.count end)

    assert length(counts) >= 2
    assert Enum.sum(counts) == 40
  end

  test "fingerprints settle independently; open groups are bounded" do
    p = pipeline(settle_ms: 10_000, max_open: 2, shards: 1)

    for i <- 1..5 do
      mod = Module.concat([MyApp, "W#{i}"])
      Collector.push(p.collector, [crash("x", mod), crash("x", mod)])
    end

    eventually(fn -> Settle.stats(p.settle).overflow == 6 end)
    assert %{open: 2} = Settle.stats(p.settle)
  end

  test "triage: patterns are critical, counts grade the rest, low is held" do
    p = pipeline(settle_ms: 50, max_wait_ms: 1000)

    Collector.push(p.collector, [
      crash("tcp connect (db:5432): connection refused - :econnrefused")
    ])

    Collector.push(p.collector, [crash("lonely", MyApp.Lonely)])

    [critical] = eventually(fn -> Sink.escalated(p.sink) end)
    assert critical.severity == :critical
    [{low, :below_min_severity}] = eventually(fn -> Sink.held(p.sink) end)
    assert low.severity == :low
  end

  test "triage: escalated once per dedup window, then again" do
    p = pipeline([settle_ms: 30, max_wait_ms: 1000], dedup_ms: 400)

    Collector.push(p.collector, for(_ <- 1..5, do: crash("again")))
    [first] = eventually(fn -> Sink.escalated(p.sink) end)
    assert first.severity == :medium

    Collector.push(p.collector, for(_ <- 1..4, do: crash("again")))
    [{held, {:seen_within, _}}] = eventually(fn -> Sink.held(p.sink) end)
    assert held.count == 4
    assert held.count_since_escalation == 9

    Process.sleep(450)
    Collector.push(p.collector, for(_ <- 1..3, do: crash("again")))
    eventually(fn -> length(Sink.escalated(p.sink)) == 2 end)
    assert %{escalated: 2, held: 1} = Triage.stats(p.triage)
  end

  test "classify/2 on its own" do
    rules = Triage.rules()
    group = fn text, count -> %{count: count, type: "RuntimeError", normalized: text} end
    assert Triage.classify(group.("Postgres is down", 1), rules) == :critical
    assert Triage.classify(group.("JWT secret is missing", 1), rules) == :critical
    assert Triage.classify(group.("no space left on device", 1), rules) == :critical
    assert Triage.classify(group.("boom", 10), rules) == :high
    assert Triage.classify(group.("boom", 3), rules) == :medium
    assert Triage.classify(group.("boom", 2), rules) == :low
    custom = Triage.rules(critical_patterns: ["(?i)payment gateway"], high_count: 100)
    assert Triage.classify(group.("Payment gateway 502", 1), custom) == :critical
    assert Triage.classify(group.("boom", 50), custom) == :medium
    assert_raise ArgumentError, fn -> Triage.rules(min_severity: :urgent) end
  end
end
