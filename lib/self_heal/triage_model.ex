defmodule SelfHeal.TriageModel do
  @moduledoc """
  Two-stage triage (optional): a cheap local model reads the escalated
  groups in batches before the expensive analysis sees them.

  It sits in front of the real orchestrator and implements
  `SelfHeal.Orchestrator` itself. Escalated groups are collected as lines
  (`"<count>x [<severity>] <service>: <type>: <message>"`); every
  `:batch_lines` groups (default 50) or `:batch_ms` after the first one
  (default 10 s) the batch goes to the port command `triage_batch`
  (`docs/analysis.md`), which asks the model configured as `triage_model`
  for one decision:

    * `"ignore"`: the groups are dropped (counted, kept in `stats/1`);
    * `"watch"`: the proposed watch is added to `:watch` (the collector's
      watch set, `SelfHeal.Collector.watches/1`) and the groups are held:
      only when the watch fires does it escalate (the collector sends it to
      the real orchestrator);
    * `"investigate"`: the groups go on to `:next`, the real orchestrator.

  Groups of severity `:critical` and groups escalated by a watch skip the
  model and go on at once. When the port answers with an error or not in
  time, the batch goes on (fail open: an unavailable model never hides an
  error). `update/2` goes straight to `:next`.

  **Raw batches.** Settled groups of low severity never get here, so a
  lone 5xx line would never be read. The collector (option `:raw_sample`)
  also hands over a sample of the raw events of each batch it
  fingerprints (`sample/2`: at most 10 a batch, each a line with its
  level, service, type, message and scalar metadata such as `status=503`).
  They are kept as a uniform sample (reservoir) of at most `:raw_lines`
  lines (default 50; 0 turns raw batches off); `:raw_ms` (default 60 s)
  after the first, the sample goes to `triage_batch` with the source
  `"sampled raw log lines"`, at most `:raw_per_hour` times an hour
  (default 6: the budget; a sample over it is dropped and counted). A
  `"watch"` answer adds its watch, a field comparison or a template equal
  to one of the lines (watched through that event's fingerprint): the
  model configures the rules, the rules count. `"ignore"` and
  `"investigate"` change nothing: the events' groups take the usual way.

  Options: `:name`, `:port` (the `SelfHeal.Port` server), `:next`
  (`{module, server}`), `:watch` (a `SelfHeal.Watch` set or nil),
  `:batch_lines`, `:batch_ms`, `:timeout` (port call, default 60 s),
  `:raw_lines`, `:raw_ms`, `:raw_per_hour`; `config :self_heal,
  triage_model: [...]` sets them in an application.
  """
  @behaviour SelfHeal.Orchestrator
  use GenServer

  require Logger

  @max_line 512

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    {name, opts} = Keyword.pop(opts, :name, __MODULE__)
    GenServer.start_link(__MODULE__, opts, name: name)
  end

  @impl SelfHeal.Orchestrator
  def escalate(server, group), do: GenServer.cast(server, {:escalate, group})

  @impl SelfHeal.Orchestrator
  def update(server, held), do: GenServer.cast(server, {:update, held})

  @doc """
  Offers raw events of a collector batch: `[{line, fingerprint}]` (see
  `raw_line/1`). Never blocks.
  """
  @spec sample(GenServer.server(), [{String.t(), binary() | nil}]) :: :ok
  def sample(server, pairs) when is_list(pairs), do: GenServer.cast(server, {:sample, pairs})

  @doc "One raw event as the model reads it, at most 512 bytes."
  @spec raw_line(SelfHeal.Event.t()) :: String.t()
  def raw_line(event) do
    meta =
      for {k, v} <- Enum.take(Enum.sort(Map.to_list(event.metadata || %{})), 8),
          is_binary(v) or is_number(v) or is_atom(v),
          into: "",
          do: " #{k}=#{v |> to_string() |> String.slice(0, 40)}"

    text =
      "#{event.level} #{event.service || "-"} #{event.type || "log"}: " <>
        "#{String.slice(to_string(event.message), 0, 300)}#{meta}"

    binary_part(text, 0, min(byte_size(text), @max_line))
  end

  @doc "Counters: batches sent, groups ignored, watched, investigated, passed (model skipped or failed); raw batches sent, their watches, samples over the budget."
  @spec stats(GenServer.server()) :: map()
  def stats(server), do: GenServer.call(server, :stats)

  @impl GenServer
  def init(opts) do
    {:ok,
     %{
       port: Keyword.fetch!(opts, :port),
       next: Keyword.fetch!(opts, :next),
       watch: Keyword.get(opts, :watch),
       batch_lines: Keyword.get(opts, :batch_lines, 50),
       batch_ms: Keyword.get(opts, :batch_ms, 10_000),
       timeout: Keyword.get(opts, :timeout, 60_000),
       batch: [],
       timer: nil,
       raw_lines: Keyword.get(opts, :raw_lines, 50),
       raw_ms: Keyword.get(opts, :raw_ms, 60_000),
       raw_per_hour: Keyword.get(opts, :raw_per_hour, 6),
       # the sample (reservoir), the events offered since it was sent, the
       # times raw batches were sent in the last hour
       raw: [],
       raw_seen: 0,
       raw_timer: nil,
       raw_sent: [],
       stats: %{
         batches: 0,
         ignored: 0,
         watched: 0,
         investigated: 0,
         passed: 0,
         watches: [],
         raw_batches: 0,
         raw_watches: 0,
         raw_over_budget: 0
       }
     }}
  end

  @impl GenServer
  def handle_cast({:escalate, group}, state) do
    if group.severity == :critical or Map.get(group, :type) == "watch" do
      forward([group], state)
      {:noreply, bump(state, :passed, 1)}
    else
      state = %{state | batch: [group | state.batch]}

      cond do
        length(state.batch) >= state.batch_lines ->
          {:noreply, flush(state)}

        state.timer == nil ->
          {:noreply, %{state | timer: Process.send_after(self(), :flush, state.batch_ms)}}

        true ->
          {:noreply, state}
      end
    end
  end

  def handle_cast({:sample, _pairs}, %{raw_lines: 0} = state), do: {:noreply, state}

  def handle_cast({:sample, pairs}, state) do
    state = Enum.reduce(pairs, state, &reservoir/2)

    state =
      if state.raw_timer == nil,
        do: %{state | raw_timer: Process.send_after(self(), :raw_flush, state.raw_ms)},
        else: state

    {:noreply, state}
  end

  def handle_cast({:update, held}, state) do
    {mod, server} = state.next
    mod.update(server, held)
    {:noreply, state}
  end

  @impl GenServer
  def handle_info(:flush, state), do: {:noreply, flush(%{state | timer: nil})}
  def handle_info(:raw_flush, state), do: {:noreply, raw_flush(%{state | raw_timer: nil})}
  def handle_info(_other, state), do: {:noreply, state}

  @impl GenServer
  def handle_call(:stats, _from, state), do: {:reply, state.stats, state}

  defp flush(%{batch: []} = state), do: state

  defp flush(state) do
    if state.timer, do: Process.cancel_timer(state.timer)
    groups = Enum.reverse(state.batch)
    state = %{bump(state, :batches, 1) | batch: [], timer: nil}
    lines = Enum.map(groups, &line/1)

    case SelfHeal.Port.call(state.port, "triage_batch", %{"lines" => lines}, state.timeout) do
      {:ok, %{"decision" => "ignore"} = reply} ->
        Logger.info(
          "self_heal: triage model ignored #{length(groups)} groups: #{reply["reason"]}",
          domain: [:self_heal]
        )

        bump(state, :ignored, length(groups))

      {:ok, %{"decision" => "watch", "watch" => spec}} when is_map(spec) ->
        case add_watch(spec, groups, state) do
          {:ok, id} ->
            state
            |> bump(:watched, length(groups))
            |> Map.update!(:stats, &%{&1 | watches: Enum.take([id | &1.watches], 100)})

          :error ->
            forward(groups, state)
            bump(state, :investigated, length(groups))
        end

      {:ok, _investigate} ->
        forward(groups, state)
        bump(state, :investigated, length(groups))

      {:error, reason} ->
        Logger.warning("self_heal: triage model unavailable (#{inspect(reason)}), passing on",
          domain: [:self_heal]
        )

        forward(groups, state)
        bump(state, :passed, length(groups))
    end
  end

  # a uniform sample of every pair offered (Algorithm R)
  defp reservoir(pair, %{raw: raw, raw_seen: seen} = state) do
    seen = seen + 1

    raw =
      cond do
        length(raw) < state.raw_lines -> [pair | raw]
        (j = :rand.uniform(seen)) <= state.raw_lines -> List.replace_at(raw, j - 1, pair)
        true -> raw
      end

    %{state | raw: raw, raw_seen: seen}
  end

  defp raw_flush(%{raw: []} = state), do: state

  defp raw_flush(state) do
    now = System.monotonic_time(:millisecond)
    sent = Enum.filter(state.raw_sent, &(now - &1 < 3_600_000))
    pairs = Enum.reverse(state.raw)
    state = %{state | raw: [], raw_seen: 0, raw_sent: sent}

    if length(sent) >= state.raw_per_hour do
      bump(state, :raw_over_budget, 1)
    else
      state = bump(%{state | raw_sent: [now | sent]}, :raw_batches, 1)
      lines = Enum.map(pairs, &elem(&1, 0))
      args = %{"lines" => lines, "source" => "sampled raw log lines"}

      case SelfHeal.Port.call(state.port, "triage_batch", args, state.timeout) do
        {:ok, %{"decision" => "watch", "watch" => spec}} when is_map(spec) ->
          # a template names one of the lines: its event's fingerprint
          lines_as_groups =
            for {line, fp} <- pairs, is_binary(fp), do: %{normalized: line, fingerprint: fp}

          case add_watch(spec, lines_as_groups, state) do
            {:ok, id} ->
              Logger.info("self_heal: triage model watches #{id} after a raw batch",
                domain: [:self_heal]
              )

              state
              |> bump(:raw_watches, 1)
              |> Map.update!(:stats, &%{&1 | watches: Enum.take([id | &1.watches], 100)})

            :error ->
              state
          end

        _ ->
          state
      end
    end
  end

  defp forward(groups, %{next: {mod, server}}), do: Enum.each(groups, &mod.escalate(server, &1))

  defp bump(state, key, n), do: %{state | stats: Map.update!(state.stats, key, &(&1 + n))}

  defp line(group) do
    text =
      "#{group.count}x [#{group.severity}] #{Enum.join(Map.get(group, :services) || [], ",")}: " <>
        "#{Map.get(group, :type) || "log"}: #{Map.get(group, :normalized) || ""}"

    binary_part(text, 0, min(byte_size(text), @max_line))
  end

  # A watch proposed by the model: a field comparison, or a template (one of
  # the batch's normalised messages, watched through its group's fingerprint).
  defp add_watch(_spec, _groups, %{watch: nil}), do: :error

  defp add_watch(spec, groups, state) do
    window_ms = clamp(spec["window_ms"], 60_000, 1, 86_400_000)
    threshold = clamp(spec["threshold"], 10, 1, 1_000_000)
    id = "model:" <> Integer.to_string(System.unique_integer([:positive]))

    match =
      case spec do
        %{"template" => template} when is_binary(template) ->
          case Enum.find(groups, &(Map.get(&1, :normalized) == template)) do
            nil -> nil
            group -> [fingerprint: group.fingerprint]
          end

        %{"field" => field, "op" => op, "value" => value}
        when is_binary(field) and (is_binary(value) or is_number(value)) ->
          case op_atom(op) do
            nil -> nil
            atom -> [field: field, op: atom, value: value]
          end

        _ ->
          nil
      end

    with [_ | _] <- match,
         {:ok, _} <-
           SelfHeal.Watch.add(
             state.watch,
             [id: id, window_ms: window_ms, threshold: threshold] ++ match
           ) do
      {:ok, id}
    else
      _ -> :error
    end
  rescue
    ArgumentError -> :error
  end

  defp op_atom(op) do
    case op do
      ">" -> :>
      ">=" -> :>=
      "<" -> :<
      "<=" -> :<=
      "==" -> :==
      "!=" -> :!=
      _ -> nil
    end
  end

  defp clamp(v, _default, lo, hi) when is_integer(v), do: v |> max(lo) |> min(hi)
  defp clamp(_v, default, _lo, _hi), do: default
end
