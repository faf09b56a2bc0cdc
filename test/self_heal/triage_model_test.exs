defmodule SelfHeal.TriageModelTest do
  # Two-stage triage: a cheap model (Ollama, played by FakeHTTP) reads the
  # escalated groups in batches through the real port program and decides
  # ignore / watch / investigate; critical groups skip it; an unavailable
  # model passes everything on.
  use ExUnit.Case, async: false

  alias SelfHeal.{FakeHTTP, Orchestrator.Sink, Port, TriageModel, Watch}

  @moduletag :tmp_dir
  @moduletag capture_log: true

  defp ollama(decision) do
    content = FakeHTTP.encode(decision)

    FakeHTTP.json(200, %{
      "model" => "tiny",
      "message" => %{"role" => "assistant", "content" => content},
      "done" => true,
      "prompt_eval_count" => 100,
      "eval_count" => 10
    })
  end

  defp setup_model(dir, answer, opts \\ []) do
    {:ok, srv} = FakeHTTP.start(fn _ -> answer end)
    n = System.unique_integer([:positive])
    sink = :"triage_sink_#{n}"
    model = :"triage_model_#{n}"
    start_supervised!({Sink, name: sink, log: false}, id: sink)

    config = %{
      "state_dir" => Path.join(dir, "state"),
      "triage_model" => %{"model" => "tiny", "endpoint" => Keyword.get(opts, :endpoint, srv.url)}
    }

    port = start_supervised!({Port, config: config})
    set = Watch.new()

    start_supervised!(
      {TriageModel,
       [name: model, port: port, next: {Sink, sink}, watch: set, batch_lines: 3, batch_ms: 200] ++
         Keyword.get(opts, :model_opts, [])},
      id: model
    )

    %{srv: srv, sink: sink, model: model, set: set}
  end

  defp group(i, severity \\ :medium) do
    %{
      fingerprint: "fp-#{i}",
      count: 4,
      severity: severity,
      type: "RuntimeError",
      normalized: "GET /api/orders answered <int> (#{i})",
      services: ["api"]
    }
  end

  defp settle(ctx, n) do
    Process.sleep(n)
    TriageModel.stats(ctx.model)
  end

  test "investigate: the batch goes on to the real orchestrator", %{tmp_dir: dir} do
    ctx = setup_model(dir, ollama(%{"decision" => "investigate", "reason" => "new error"}))
    for i <- 1..3, do: TriageModel.escalate(ctx.model, group(i))

    [req] = FakeHTTP.wait_requests(ctx.srv, 1)
    assert req.path == "/api/chat"
    assert req.body =~ "GET /api/orders answered"
    stats = settle(ctx, 200)
    assert stats.batches == 1 and stats.investigated == 3
    assert length(Sink.escalated(ctx.sink)) == 3
  end

  test "ignore: nothing reaches the expensive analysis", %{tmp_dir: dir} do
    ctx = setup_model(dir, ollama(%{"decision" => "ignore", "reason" => "known noise"}))
    for i <- 1..2, do: TriageModel.escalate(ctx.model, group(i))

    # fewer than batch_lines: the batch goes after batch_ms
    assert [_] = FakeHTTP.wait_requests(ctx.srv, 1, 2000)
    assert settle(ctx, 200).ignored == 2
    assert Sink.escalated(ctx.sink) == []
  end

  test "watch: the proposed watch is added to the engine, the groups held", %{tmp_dir: dir} do
    answer =
      ollama(%{
        "decision" => "watch",
        "reason" => "a few 5xx are normal",
        "watch" => %{
          "field" => "status",
          "op" => ">=",
          "value" => 500,
          "window_ms" => 60_000,
          "threshold" => 50
        }
      })

    ctx = setup_model(dir, answer)
    for i <- 1..3, do: TriageModel.escalate(ctx.model, group(i))
    assert [_] = FakeHTTP.wait_requests(ctx.srv, 1)
    assert settle(ctx, 200).watched == 3
    assert Sink.escalated(ctx.sink) == []
    assert [%{field: "status", op: :>=, threshold: 50}] = Watch.list(ctx.set)
  end

  test "critical groups and watch escalations skip the model; no model means pass on",
       %{tmp_dir: dir} do
    ctx = setup_model(dir, :close, endpoint: "http://127.0.0.1:1")
    TriageModel.escalate(ctx.model, group(1, :critical))
    TriageModel.escalate(ctx.model, %{group(2, :high) | type: "watch"})
    Process.sleep(50)
    assert length(Sink.escalated(ctx.sink)) == 2
    assert TriageModel.stats(ctx.model).passed == 2

    # the model cannot be reached: the port answers investigate, the batch goes on
    for i <- 3..5, do: TriageModel.escalate(ctx.model, group(i))
    stats = settle(ctx, 1500)
    assert stats.batches == 1
    assert stats.investigated + stats.passed == 5
    assert length(Sink.escalated(ctx.sink)) == 5
  end

  test "raw batches: a lone 5xx line reaches the model, which sets a watch; a budget bounds it",
       %{tmp_dir: dir} do
    answer =
      ollama(%{
        "decision" => "watch",
        "reason" => "5xx answers: a few are normal",
        "watch" => %{
          "field" => "status",
          "op" => ">=",
          "value" => 500,
          "window_ms" => 60_000,
          "threshold" => 20
        }
      })

    ctx = setup_model(dir, answer, model_opts: [raw_ms: 100, raw_lines: 5, raw_per_hour: 1])
    collector = :"triage_raw_collector_#{System.unique_integer([:positive])}"

    start_supervised!(
      {SelfHeal.Collector, name: collector, flush_ms: 5, raw_sample: ctx.model},
      id: collector
    )

    # one warning line, low severity: no group of it would reach the model
    lone =
      SelfHeal.Event.new(
        level: :warning,
        service: "api",
        type: "http",
        message: "GET /api/orders answered 503 password=hunter2hunter2",
        metadata: %{status: 503, path: "/api/orders"}
      )

    SelfHeal.Collector.push(collector, [lone])
    [req] = FakeHTTP.wait_requests(ctx.srv, 1, 3000)
    assert req.body =~ "sampled raw log lines"
    assert req.body =~ "GET /api/orders answered 503"
    assert req.body =~ "status=503"
    refute req.body =~ "hunter2hunter2"

    # the model configured the rule; the rule counts
    assert %{raw_batches: 1, raw_watches: 1} = settle(ctx, 300)
    assert [%{field: "status", op: :>=, value: 500, threshold: 20}] = Watch.list(ctx.set)

    # over the budget (1 an hour): the next sample is dropped, not sent
    SelfHeal.Collector.push(collector, [lone])
    Process.sleep(400)
    assert length(FakeHTTP.requests(ctx.srv)) == 1
    assert %{raw_batches: 1, raw_over_budget: 1} = TriageModel.stats(ctx.model)
    # raw batches never escalate
    assert Sink.escalated(ctx.sink) == []
  end
end
