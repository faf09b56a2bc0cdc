defmodule SelfHeal.CollectorWatchTest do
  # The watch engine in the flow: the collector observes every batch, and a
  # watch reaching its threshold escalates to the orchestrator at once.
  use ExUnit.Case, async: true

  alias SelfHeal.{Collector, Event, Orchestrator.Sink, Watch}

  setup do
    sink = :"sink_#{System.unique_integer([:positive])}"
    collector = :"collector_#{System.unique_integer([:positive])}"
    start_supervised!({Sink, name: sink, log: false}, id: sink)
    set = Watch.new()

    start_supervised!(
      {Collector,
       name: collector,
       flush_ms: 5,
       watch: set,
       watch_escalate: {Sink, sink},
       watch_severity: %{"5xx" => :critical}},
      id: collector
    )

    %{sink: sink, collector: collector, set: set}
  end

  defp request(status, path \\ "/api/orders") do
    Event.new(
      source: :fluent_bit,
      level: :error,
      message: "GET #{path} answered #{status}",
      metadata: %{"status" => status, "path" => path}
    )
  end

  defp push(collector, events) do
    Collector.push(collector, events)
    # stats/1 is a call: the cast above and its flush are done before it
    Process.sleep(20)
    Collector.stats(collector)
  end

  test "a few 5xx are normal, many within the window escalate once", ctx do
    assert Collector.watches(ctx.collector) == ctx.set

    {:ok, :added} =
      Watch.add(ctx.set,
        id: "5xx",
        field: "status",
        op: :>=,
        value: 500,
        window_ms: 60_000,
        threshold: 5
      )

    push(ctx.collector, for(_ <- 1..4, do: request(503)) ++ for(_ <- 1..20, do: request(200)))
    assert Sink.escalated(ctx.sink) == []

    push(ctx.collector, [request(500)])
    assert [group] = Sink.escalated(ctx.sink)
    assert group.fingerprint == "watch:5xx"
    assert group.count == 5
    assert group.severity == :critical
    assert group.normalized =~ "status >= 500"

    # fires once per window: more 5xx do not escalate again at once
    push(ctx.collector, for(_ <- 1..10, do: request(502)))
    assert length(Sink.escalated(ctx.sink)) == 1
  end

  test "a watch on one service's events escalates as that service's; others as no service's",
       ctx do
    {:ok, :added} =
      Watch.add(ctx.set,
        id: "shop-errors",
        field: "service",
        op: :==,
        value: :shop,
        window_ms: 60_000,
        threshold: 2
      )

    {:ok, :added} =
      Watch.add(ctx.set,
        id: "5xx",
        field: "status",
        op: :>=,
        value: 500,
        window_ms: 60_000,
        threshold: 2
      )

    shop = fn -> %{request(503) | service: "shop"} end
    push(ctx.collector, [shop.(), shop.()])
    groups = Map.new(Sink.escalated(ctx.sink), &{&1.fingerprint, &1})
    assert groups["watch:shop-errors"].services == ["shop"]
    assert groups["watch:5xx"].services == []
  end

  test "an expired window is dropped quietly", ctx do
    {:ok, :added} =
      Watch.add(ctx.set,
        id: "burst",
        field: "status",
        op: :>=,
        value: 500,
        window_ms: 150,
        threshold: 3
      )

    push(ctx.collector, [request(503), request(503)])
    Process.sleep(250)
    push(ctx.collector, [request(503)])
    assert Sink.escalated(ctx.sink) == []

    push(ctx.collector, [request(503), request(503)])
    assert [%{fingerprint: "watch:burst", severity: :high}] = Sink.escalated(ctx.sink)
  end

  test "watches are added and removed at run time; a fingerprint watch counts one error", ctx do
    push(ctx.collector, [request(503)])
    [%{fingerprint: fp}] = Collector.groups(ctx.collector)

    {:ok, :added} =
      Watch.add(ctx.set, id: "orders", fingerprint: fp, window_ms: 60_000, threshold: 3)

    push(ctx.collector, [request(503, "/api/users")])
    assert Sink.escalated(ctx.sink) == []

    :ok = Watch.remove(ctx.set, "orders")
    push(ctx.collector, for(_ <- 1..5, do: request(503)))
    assert Sink.escalated(ctx.sink) == []

    {:ok, :added} =
      Watch.add(ctx.set, id: "orders", fingerprint: fp, window_ms: 60_000, threshold: 3)

    push(ctx.collector, for(_ <- 1..3, do: request(504)))
    assert [%{fingerprint: "watch:orders"}] = Sink.escalated(ctx.sink)
  end
end
