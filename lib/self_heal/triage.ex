defmodule SelfHeal.Triage do
  @moduledoc """
  Classifies settled groups and decides which reach the orchestrator.

  Severity (`classify/2`, pure):

    * `:critical` when the group's type, message or normalised message
      matches one of the infrastructure patterns (`:critical_patterns`,
      regexes; the defaults cover a database that is down or refuses
      connections, `ECONNREFUSED`/`:econnrefused`, connection pools that
      run dry, a missing or invalid JWT secret, out of memory, a full disk);
    * otherwise by count: `>= 10` `:high`, `>= 3` `:medium`, else `:low`
      (`:high_count`, `:medium_count`).

  Escalation (`decide/2`, the `SelfHeal.Triage` process): a group is
  escalated when its severity is at least `:min_severity` (default
  `:medium`) and its fingerprint was not escalated within the dedup window
  (`:dedup_ms`, default 24 h); a fingerprint seen again inside the window
  only has its count updated. The window table is bounded
  (`:max_tracked`, default 100,000 fingerprints; the oldest go first).
  A group held because of its severity is logged (info), once per
  fingerprint: `config :self_heal, ticket_min_severity: :low` (the
  application's name for `:min_severity`) tickets every new fingerprint.

  With `:state_dir` (the application's `state_dir`) the window survives a
  restart: each escalation is appended to `state_dir/triage.window`
  before `decide/2` answers (`{fingerprint, escalated_at, count}`, wall
  clock in ms, length-prefixed), a held recurrence's new count too; at
  start the file is read (a torn last record, a crash mid-write, is
  dropped), what fell out of the window is left out, and the file is
  written again with the live entries only (write and rename), as it is
  whenever it holds more than twice as many records as the window.
  A file that cannot be read is logged and set aside
  (`triage.window.bad`): the window starts empty.
  """
  use GenServer

  require Logger

  @severities [:low, :medium, :high, :critical]

  @default_patterns [
    ~S"(?i)\b(database|db|postgres(ql)?|mysql|redis|mongo(db)?)\b.*\b(down|unavailable|unreachable|refused|timed? ?out|too many connections)\b",
    ~S"(?i)econnrefused|connection refused",
    ~S"(?i)DBConnection\.ConnectionError|connection not available|pool .*(exhausted|timeout)",
    ~S"(?i)\bjwt\b.*\b(secret|signer|key)\b.*\b(missing|invalid|not (set|configured|found))\b|\b(missing|invalid)\b.*\bjwt\b.*\bsecret\b",
    ~S"(?i)out of memory|\beaddrinuse\b|no space left on device|\benospc\b"
  ]

  @type severity :: :low | :medium | :high | :critical

  @type settled :: %{
          required(:fingerprint) => binary(),
          required(:count) => pos_integer(),
          required(:severity) => severity(),
          optional(atom()) => term()
        }

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    {name, opts} = Keyword.pop(opts, :name, __MODULE__)
    GenServer.start_link(__MODULE__, opts, name: name)
  end

  @doc "Compiled options for `classify/2` (patterns compiled once)."
  @spec rules(keyword()) :: map()
  def rules(opts \\ []) do
    patterns =
      opts
      |> Keyword.get(:critical_patterns, @default_patterns)
      |> Enum.map(fn
        %Regex{} = re -> re
        source when is_binary(source) -> Regex.compile!(source)
      end)

    min = Keyword.get(opts, :min_severity, :medium)
    unless min in @severities, do: raise(ArgumentError, "min_severity: #{inspect(min)}")

    %{
      patterns: patterns,
      high_count: Keyword.get(opts, :high_count, 10),
      medium_count: Keyword.get(opts, :medium_count, 3),
      min_severity: min,
      dedup_ms: Keyword.get(opts, :dedup_ms, 24 * 3_600_000),
      max_tracked: Keyword.get(opts, :max_tracked, 100_000)
    }
  end

  @doc "The severity of a group (a map with `:count` and text fields)."
  @spec classify(map(), map()) :: severity()
  def classify(group, rules) do
    text =
      [Map.get(group, :type), Map.get(group, :normalized), sample_message(group)]
      |> Enum.filter(&is_binary/1)
      |> Enum.join("\n")

    cond do
      Enum.any?(rules.patterns, &Regex.match?(&1, text)) -> :critical
      group.count >= rules.high_count -> :high
      group.count >= rules.medium_count -> :medium
      true -> :low
    end
  end

  @doc "True when severity `a` is at least `b`."
  @spec at_least?(severity(), severity()) :: boolean()
  def at_least?(a, b), do: rank(a) >= rank(b)

  defp rank(s), do: Enum.find_index(@severities, &(&1 == s))

  defp sample_message(%{sample: %{message: m}}) when is_binary(m),
    do: binary_part(m, 0, min(byte_size(m), 4096))

  defp sample_message(_), do: nil

  @doc """
  Classifies a settled group and decides: `{:escalate, settled}` or
  `{:hold, settled, reason}` with reason `:below_min_severity` or
  `{:seen_within, ms}` (the count of a held fingerprint is added to its
  window entry).
  """
  @spec decide(GenServer.server(), map()) ::
          {:escalate, settled()} | {:hold, settled(), term()}
  def decide(server \\ __MODULE__, group), do: GenServer.call(server, {:decide, group})

  @doc "Counters and the tracked fingerprints' total count."
  @spec stats(GenServer.server()) :: map()
  def stats(server \\ __MODULE__), do: GenServer.call(server, :stats)

  @impl true
  def init(opts) do
    {:ok,
     %{
       rules: rules(opts),
       # fingerprint => {escalated_at_ms, count since}
       seen: %{},
       # {escalated_at_ms, fingerprint}, oldest first
       order: :queue.new(),
       escalated: 0,
       held: 0,
       # fingerprints whose hold for severity was logged (bounded)
       logged_low: MapSet.new(),
       # the window's file (nil: in memory only) and its record count
       file: nil,
       records: 0
     }
     |> restore(Keyword.get(opts, :state_dir))}
  end

  @impl true
  def handle_call({:decide, group}, _from, state) do
    now = System.os_time(:millisecond)
    state = expire(state, now)
    severity = classify(group, state.rules)
    settled = Map.put(group, :severity, severity)

    cond do
      not at_least?(severity, state.rules.min_severity) ->
        state = log_below(state, settled)
        {:reply, {:hold, settled, :below_min_severity}, %{state | held: state.held + 1}}

      Map.has_key?(state.seen, group.fingerprint) ->
        {at, count} = Map.fetch!(state.seen, group.fingerprint)
        seen = Map.put(state.seen, group.fingerprint, {at, count + group.count})
        settled = Map.put(settled, :count_since_escalation, count + group.count)
        state = append(%{state | seen: seen}, group.fingerprint, at, count + group.count)

        {:reply, {:hold, settled, {:seen_within, now - at}}, %{state | held: state.held + 1}}

      true ->
        state =
          state
          |> track(group.fingerprint, group.count, now)
          |> append(group.fingerprint, now, group.count)

        {:reply, {:escalate, settled}, %{state | escalated: state.escalated + 1}}
    end
  end

  def handle_call(:stats, _from, state) do
    {:reply, %{escalated: state.escalated, held: state.held, tracked: map_size(state.seen)},
     state}
  end

  defp log_below(state, group) do
    if MapSet.member?(state.logged_low, group.fingerprint) do
      state
    else
      Logger.info(
        "self_heal: #{Map.get(group, :type) || "an error"} (fingerprint " <>
          "#{String.slice(group.fingerprint, 0, 12)}, #{group.count} occurrence(s)) " <>
          "was not ticketed: severity #{group.severity} is below " <>
          "#{state.rules.min_severity} (config :self_heal, ticket_min_severity: :low " <>
          "tickets every new error)",
        domain: [:self_heal]
      )

      logged =
        if MapSet.size(state.logged_low) >= state.rules.max_tracked,
          do: MapSet.new(),
          else: state.logged_low

      %{state | logged_low: MapSet.put(logged, group.fingerprint)}
    end
  end

  defp track(state, fp, count, now) do
    state = %{
      state
      | seen: Map.put(state.seen, fp, {now, count}),
        order: :queue.in({now, fp}, state.order)
    }

    if map_size(state.seen) > state.rules.max_tracked, do: drop_oldest(state), else: state
  end

  defp drop_oldest(state) do
    case :queue.out(state.order) do
      {{:value, {at, fp}}, order} ->
        seen =
          case state.seen do
            %{^fp => {^at, _}} -> Map.delete(state.seen, fp)
            _ -> state.seen
          end

        %{state | seen: seen, order: order}

      {:empty, _} ->
        state
    end
  end

  defp expire(state, now) do
    case :queue.peek(state.order) do
      {:value, {at, _fp}} when now - at >= state.rules.dedup_ms ->
        state |> drop_oldest() |> expire(now)

      _ ->
        state
    end
  end

  # ---- the window on disk

  defp restore(state, dir) when dir in [nil, ""], do: state

  defp restore(state, dir) do
    unless File.dir?(dir) do
      File.mkdir_p!(dir)
      File.chmod!(dir, 0o700)
    end

    path = Path.join(dir, "triage.window")
    now = System.os_time(:millisecond)

    entries =
      case File.read(path) do
        {:ok, bin} ->
          case records(bin, []) do
            {:ok, list} ->
              list

            :error ->
              Logger.error(
                "self_heal: #{path} cannot be read; it is set aside as triage.window.bad " <>
                  "and the dedup window starts empty",
                domain: [:self_heal]
              )

              _ = File.rename(path, path <> ".bad")
              []
          end

        {:error, :enoent} ->
          []

        {:error, reason} ->
          Logger.error("self_heal: cannot read #{path}: #{:file.format_error(reason)}",
            domain: [:self_heal]
          )

          []
      end

    # the last record of a fingerprint holds its window entry
    latest =
      Enum.reduce(entries, %{}, fn {fp, at, count}, acc -> Map.put(acc, fp, {at, count}) end)

    state =
      latest
      |> Enum.filter(fn {_fp, {at, _}} -> now - at < state.rules.dedup_ms end)
      |> Enum.sort_by(fn {_fp, {at, _}} -> at end)
      |> Enum.reduce(%{state | file: path}, fn {fp, {at, count}}, st ->
        %{st | seen: Map.put(st.seen, fp, {at, count}), order: :queue.in({at, fp}, st.order)}
      end)

    state = trim(state)
    compact(state)
  end

  defp trim(state) do
    if map_size(state.seen) > state.rules.max_tracked,
      do: state |> drop_oldest() |> trim(),
      else: state
  end

  # {:ok, [{fp, at, count}]}, a torn last record dropped; :error when a
  # whole record is not one
  defp records(<<size::32, rec::binary-size(size), rest::binary>>, acc) do
    case decode(rec) do
      {:ok, entry} -> records(rest, [entry | acc])
      :error -> :error
    end
  end

  defp records(_torn_or_empty, acc), do: {:ok, Enum.reverse(acc)}

  defp decode(rec) do
    case :erlang.binary_to_term(rec, [:safe]) do
      {fp, at, count} = entry when is_binary(fp) and is_integer(at) and is_integer(count) ->
        {:ok, entry}

      _ ->
        :error
    end
  rescue
    ArgumentError -> :error
  end

  defp record(fp, at, count) do
    rec = :erlang.term_to_binary({fp, at, count})
    [<<byte_size(rec)::32>>, rec]
  end

  defp append(%{file: nil} = state, _fp, _at, _count), do: state

  defp append(state, fp, at, count) do
    if state.records + 1 > 2 * max(map_size(state.seen), 1000) do
      compact(state)
    else
      File.write(state.file, record(fp, at, count), [:append, :binary])
      |> written(state, state.records + 1)
    end
  end

  # the live entries only, written aside and renamed over the file
  defp compact(state) do
    tmp = state.file <> ".tmp"
    data = for {fp, {at, count}} <- state.seen, do: record(fp, at, count)

    with(:ok <- File.write(tmp, data, [:binary]), do: File.rename(tmp, state.file))
    |> written(state, map_size(state.seen))
  end

  defp written(:ok, state, records), do: %{state | records: records}

  defp written({:error, reason}, state, _records) do
    Logger.error("self_heal: cannot write #{state.file}: #{:file.format_error(reason)}",
      domain: [:self_heal]
    )

    state
  end
end
