defmodule SelfHeal.Metrics do
  @moduledoc """
  Counters of what SelfHeal did since it started (fed by
  `SelfHeal.Telemetry`), each group's latest triage decision and its
  occurrences per minute over the last hour, and the Prometheus text
  exposition (format 0.0.4) that `SelfHeal.Endpoint` serves on `/metrics`:
  these counters, the collector's, the settle stage's and the logger
  handler's, and the port program's state (`stats`, `gate_status`). The
  metrics, their types and labels are listed in `docs/dashboard.md`.

  The process only owns the public ETS table and prunes the history once
  a minute; recording is `:ets.update_counter/4` in the caller. Bounded:
  at most `@max_rows` rows (decisions and history are not recorded
  beyond).
  """
  use GenServer

  @table __MODULE__
  @max_rows 500_000
  @history_minutes 60

  @doc false
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts) do
    if :ets.whereis(@table) == :undefined do
      :ets.new(@table, [:named_table, :public, :set, write_concurrency: true])
    end

    :timer.send_interval(60_000, :prune)
    {:ok, nil}
  end

  @impl true
  def handle_info(:prune, state) do
    prune(minute() - @history_minutes)
    {:noreply, state}
  end

  @doc false
  # history rows older than `before` (a minute number) go
  @spec prune(integer()) :: non_neg_integer()
  def prune(before) do
    if :ets.whereis(@table) == :undefined,
      do: 0,
      else:
        :ets.select_delete(@table, [{{{:hist, :_, :"$1"}, :_}, [{:<, :"$1", before}], [true]}])
  end

  # ------------------------------------------------------------ recording

  @doc "Records one `SelfHeal.Telemetry` event (a no-op before the table exists)."
  @spec record([atom()], map(), map()) :: :ok
  def record(event, measurements, metadata) do
    if :ets.whereis(@table) != :undefined, do: do_record(event, measurements, metadata)
    :ok
  end

  defp do_record([:self_heal, :capture], m, %{sources: sources}) do
    for {source, n} <- sources, do: bump({:received, to_string(source)}, n)
    bump(:batches, 1)
    _ = m
  end

  defp do_record([:self_heal, :settle], m, meta) do
    bump({:settled, to_string(meta.decision)}, 1)

    if is_binary(meta.fingerprint) and room?() do
      reason = if meta.reason == nil, do: nil, else: reason_text(meta.reason)

      :ets.insert(
        @table,
        {{:group, meta.fingerprint},
         {meta.severity, meta.decision, reason, System.os_time(:millisecond), m.count}}
      )
    end
  end

  defp do_record([:self_heal, :escalate], %{groups: n}, _meta), do: bump(:escalated, n)

  defp do_record([:self_heal, :analyse], m, _meta) do
    bump(:analyses, 1)
    bump(:analysed_tickets, m.tickets)
  end

  defp do_record([:self_heal, :fix, :stage], _m, %{stage: stage}),
    do: bump({:fix_stage, stage}, 1)

  defp do_record(_event, _m, _meta), do: :ok

  defp reason_text(reason) when is_binary(reason), do: reason
  defp reason_text(reason), do: inspect(reason, limit: 5, printable_limit: 200)

  @doc false
  # occurrences per minute of each group of a collector batch
  @spec history([map()]) :: :ok
  def history(batch_groups) do
    if :ets.whereis(@table) != :undefined and room?() do
      now = minute()

      for %{fingerprint: fp, count: n} <- batch_groups,
          do: :ets.update_counter(@table, {:hist, fp, now}, {2, n}, {{:hist, fp, now}, 0})
    end

    :ok
  end

  defp bump(key, n), do: :ets.update_counter(@table, key, {2, n}, {key, 0})
  defp room?, do: :ets.info(@table, :size) < @max_rows
  defp minute, do: div(System.os_time(:second), 60)

  # ------------------------------------------------------------ reading

  @doc "A counter's value (0 when never recorded)."
  @spec get(term()) :: number()
  def get(key) do
    case :ets.whereis(@table) != :undefined and :ets.lookup(@table, key) do
      [{^key, n}] -> n
      _ -> 0
    end
  end

  @doc "Every `{key, value}` counter whose key is a tuple tagged `tag`."
  @spec by(atom()) :: [{binary(), number()}]
  def by(tag) do
    if :ets.whereis(@table) == :undefined,
      do: [],
      else: :ets.match_object(@table, {{tag, :_}, :_}) |> Enum.map(fn {{_, k}, v} -> {k, v} end)
  end

  @doc """
  The latest triage decision of a fingerprint: `{severity, decision,
  reason, at_ms, count}` or nil.
  """
  @spec decision(binary()) :: tuple() | nil
  def decision(fp) do
    case :ets.whereis(@table) != :undefined and :ets.lookup(@table, {:group, fp}) do
      [{_, d}] -> d
      _ -> nil
    end
  end

  @doc "A fingerprint's occurrences in each of the last `minutes` minutes, oldest first."
  @spec series(binary(), pos_integer()) :: [non_neg_integer()]
  def series(fp, minutes \\ @history_minutes) do
    now = minute()

    if :ets.whereis(@table) == :undefined do
      List.duplicate(0, minutes)
    else
      for m <- (now - minutes + 1)..now do
        case :ets.lookup(@table, {:hist, fp, m}) do
          [{_, n}] -> n
          [] -> 0
        end
      end
    end
  end

  # ------------------------------------------------------------ exposition

  @doc """
  The text exposition (format 0.0.4) of every metric. `sources`: `:collector`,
  `:settle`, `:port` (registered names; a missing or failing one leaves its
  metrics out, and `self_heal_port_up` says whether the port answered).
  """
  @spec exposition(keyword()) :: iodata()
  def exposition(sources) do
    collector = safe(fn -> SelfHeal.Collector.stats(sources[:collector]) end)
    settle = safe(fn -> SelfHeal.Settle.stats(sources[:settle]) end)
    handler = safe(fn -> SelfHeal.LoggerHandler.stats() end)
    port = sources[:port]
    stats = port && port_call(port, "stats")
    gate = port && port_call(port, "gate_status")
    batch = port && safe(fn -> SelfHeal.Port.escalations_pending(port) end)

    [
      events(collector, settle, handler),
      groups(collector, settle),
      pipeline(),
      port_metrics(stats, gate, port != nil),
      waiting(batch, stats)
    ]
    |> present()
  end

  # the metrics of the sources that answered (an absent one is nil or false)
  defp present(list) when is_list(list),
    do: for(x <- list, x not in [nil, false], do: present(x))

  defp present(other), do: other

  # what waits: settled groups not analysed yet (in SelfHeal.Port's batch,
  # or escalation jobs the port has queued or running), and fixes waiting
  # for a human's approval
  defp waiting(batch, stats) do
    pending =
      [{"batch", batch}, {"port", stats && stats["escalations_pending"]}]
      |> Enum.reject(&(elem(&1, 1) == nil))

    [
      pending != [] and
        metric(
          "self_heal_escalations_pending",
          :gauge,
          "Settled groups not analysed yet, by where they wait (batch: SelfHeal.Port; port: a queued or running escalation job).",
          for({w, n} <- pending, do: {[where: w], n})
        ),
      stats &&
        metric("self_heal_approvals_waiting", :gauge, "Fixes waiting for a human's approval.", [
          {[], get_in(stats, ["fixes", "awaiting_approval"]) || 0}
        ])
    ]
  end

  defp events(collector, settle, handler) do
    received = by(:received)
    overflow = (collector && collector.overflow) || 0

    dropped =
      [
        {"max_groups", collector && collector.overflow},
        {"collector_overloaded", collector && collector.shed},
        {"settle_full", settle && settle.overflow},
        {"settle_shed", settle && settle.shed},
        {"handler_overloaded", handler && handler.dropped}
      ]
      |> Enum.reject(&(elem(&1, 1) == nil))

    [
      metric(
        "self_heal_events_received_total",
        :counter,
        "Events the collector processed, by source.",
        for({s, n} <- received, do: {[source: s], n})
      ),
      metric(
        "self_heal_events_accepted_total",
        :counter,
        "Events counted in a group (received less those of groups beyond max_groups).",
        [{[], max(Enum.sum(Enum.map(received, &elem(&1, 1))) - overflow, 0)}]
      ),
      metric(
        "self_heal_events_dropped_total",
        :counter,
        "Events dropped, by reason.",
        for({r, n} <- dropped, do: {[reason: r], n})
      )
    ]
  end

  defp groups(collector, settle) do
    events = (collector && collector.events) || 0
    groups = (collector && collector.groups) || 0

    [
      collector &&
        metric("self_heal_groups", :gauge, "Groups the collector holds.", [{[], groups}]),
      collector &&
        metric(
          "self_heal_dedup_ratio",
          :gauge,
          "Events per group in the collector (0 without groups).",
          [{[], if(groups > 0, do: events / groups, else: 0)}]
        ),
      settle &&
        metric("self_heal_groups_open", :gauge, "Groups waiting to settle.", [{[], settle.open}])
    ]
  end

  defp pipeline do
    [
      metric(
        "self_heal_groups_settled_total",
        :counter,
        "Settled groups, by triage decision (escalate or hold).",
        for({d, n} <- by(:settled), do: {[decision: d], n})
      ),
      metric("self_heal_escalations_total", :counter, "Groups sent to the port for analysis.", [
        {[], get(:escalated)}
      ]),
      metric("self_heal_analyses_total", :counter, "Escalations the port answered.", [
        {[], get(:analyses)}
      ]),
      metric(
        "self_heal_fix_stages_total",
        :counter,
        "Stages of fixes reported by the port, by stage.",
        for({s, n} <- by(:fix_stage), do: {[stage: s], n})
      )
    ]
  end

  defp port_metrics(stats, gate, configured?) do
    up = if(stats != nil, do: 1, else: 0)

    [
      if(configured?,
        do: metric("self_heal_port_up", :gauge, "1 when the port program answered.", [{[], up}])
      ),
      stats && state_metrics(stats),
      gate && gate_metrics(gate)
    ]
  end

  defp state_metrics(stats) do
    budget = stats["budget"] || %{}
    total = fn name -> get_in(budget, [name, "total"]) || 0 end
    deploys = stats["deploys"] || []

    approvals =
      for %{"kind" => "deploy", "status" => "started", "auto" => auto, "n" => n} <- deploys,
          reduce: %{"gate" => 0, "human" => 0} do
        acc -> Map.update!(acc, if(auto == 1, do: "gate", else: "human"), &(&1 + n))
      end

    [
      metric("self_heal_model_calls_total", :counter, "Calls to analysis and agent models.", [
        {[], total.("llm_calls")}
      ]),
      metric("self_heal_model_tokens_total", :counter, "Model tokens, by direction.", [
        {[direction: "input"], total.("llm_input_tokens")},
        {[direction: "output"], total.("llm_output_tokens")}
      ]),
      metric("self_heal_model_cost_usd_total", :counter, "Model spend in US dollars.", [
        {[], total.("llm_cost_usd")}
      ]),
      metric(
        "self_heal_tickets",
        :gauge,
        "Tickets, by status.",
        for({s, n} <- stats["tickets"] || %{}, do: {[status: s], n})
      ),
      metric(
        "self_heal_fixes",
        :gauge,
        "Fixes, by status (their outcome once finished).",
        for({s, n} <- stats["fixes"] || %{}, do: {[status: s], n})
      ),
      metric(
        "self_heal_deploys_total",
        :counter,
        "Rows of the deploy ledger, by kind (deploy, rollback) and status.",
        deploys
        |> Enum.group_by(&{&1["kind"], &1["status"]}, & &1["n"])
        |> Enum.map(fn {{k, s}, ns} -> {[kind: k, status: s], Enum.sum(ns)} end)
      ),
      metric(
        "self_heal_approvals_total",
        :counter,
        "Deploys started, by who approved them (the gate or a human).",
        for({by, n} <- approvals, do: {[by: by], n})
      ),
      histograms(stats["histograms"] || %{})
    ]
  end

  # bucketed by the port (`stats`'s "histograms")
  defp histograms(h) do
    [
      histogram(
        "self_heal_time_to_ticket_seconds",
        "From a group's first occurrence to its ticket (every ticket whose first occurrence is known).",
        h["time_to_ticket"]
      ),
      histogram(
        "self_heal_time_to_deploy_seconds",
        "From a group's first occurrence to the start of its fix's deploy.",
        h["time_to_deploy"]
      ),
      histogram(
        "self_heal_time_to_verified_seconds",
        "From a group's first occurrence to its fix verified in production (MTTR).",
        h["time_to_verified"]
      )
    ]
  end

  defp gate_metrics(gate) do
    breaker = gate["breaker"] || %{}

    [
      metric("self_heal_breaker_open", :gauge, "1 when the deploy circuit breaker is open.", [
        {[], if(breaker["state"] == "open", do: 1, else: 0)}
      ]),
      metric("self_heal_breaker_failures", :gauge, "Consecutive failed deploys or rollbacks.", [
        {[], breaker["failures"] || 0}
      ]),
      metric("self_heal_kill_switch", :gauge, "1 when the kill switch stops every deploy.", [
        {[], if(gate["kill_switch"] == true, do: 1, else: 0)}
      ]),
      metric("self_heal_auto_deploys_last_hour", :gauge, "Automatic deploys in the last hour.", [
        {[], gate["auto_deploys_last_hour"] || 0}
      ])
    ]
  end

  # ------------------------------------------------------------ format

  defp head(name, type, help),
    do: ["# HELP ", name, " ", help, "\n# TYPE ", name, " ", Atom.to_string(type), "\n"]

  defp metric(name, type, help, samples) do
    [
      head(name, type, help),
      for({labels, value} <- samples, do: [name, labels(labels), " ", number(value), "\n"])
    ]
  end

  defp histogram(_name, _help, nil), do: []

  defp histogram(name, help, %{"le" => le, "counts" => counts} = h) do
    [
      head(name, :histogram, help),
      Enum.zip_with(le, counts, fn b, n ->
        [name, "_bucket{le=\"", number(b), "\"} ", number(n), "\n"]
      end),
      [name, "_bucket{le=\"+Inf\"} ", number(h["count"]), "\n"],
      [name, "_sum ", number(h["sum"]), "\n"],
      [name, "_count ", number(h["count"]), "\n"]
    ]
  end

  defp labels([]), do: ""

  defp labels(labels) do
    [
      "{",
      Enum.map_intersperse(labels, ",", fn {k, v} ->
        [Atom.to_string(k), "=\"", escape_label(to_string(v)), "\""]
      end),
      "}"
    ]
  end

  defp escape_label(text) do
    text
    |> String.replace("\\", "\\\\")
    |> String.replace("\"", "\\\"")
    |> String.replace("\n", "\\n")
  end

  defp number(n) when is_integer(n), do: Integer.to_string(n)
  defp number(n) when is_float(n), do: :erlang.float_to_binary(n, [:short])
  defp number(_), do: "0"

  defp safe(fun) do
    fun.()
  catch
    _, _ -> nil
  end

  defp port_call(port, cmd) do
    case SelfHeal.Port.call(port, cmd, %{}, 5000) do
      {:ok, ok} -> ok
      _ -> nil
    end
  catch
    :exit, _ -> nil
  end
end
