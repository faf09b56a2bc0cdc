defmodule SelfHeal.Collector do
  @moduledoc """
  Receives events from every source, fingerprints them in batches in C
  (`SelfHeal.Native.fingerprint_batch/2`), groups each batch
  (`SelfHeal.Native.dedup/1`) and merges the batch's groups into its own.

  Events arrive as `{:self_heal_event, event}` messages (the logger
  handler) or through `push/2`. A batch is processed when it reaches
  `:batch_size` events (default 1000) or `:flush_ms` after its first event
  (default 50 ms), so a burst costs one NIF call per thousand events.

  Every group's sample event, and the samples sent to the settle stage,
  are scrubbed (`SelfHeal.Scrub`): `groups/1` and everything downstream
  hold no raw secret. With a miner, every event's message is scrubbed
  before the batch is fingerprinted (the miner keeps the templates of
  lines without a stack trace, in its snapshot too); the rest of each
  event is fingerprinted as it came. `type`, `normalized` and `top_frame`
  are those of the scrubbed sample.

  Bounded: at most `:max_groups` groups (default 10_000). A new
  fingerprint beyond that evicts a group: of the 8 least recently seen
  (by arrival, not by the events' own timestamps), the smallest (counted
  in `evicted`), so a flood of one-off errors cannot keep a new error out
  for good. Events sent through `ingest/3` with a `:source` also count
  against that source's quota of new groups a minute
  (`:new_groups_per_minute`, keyed by the source's class: default
  `[anonymous: 100, authenticated: 5000]`): the events of a new
  fingerprint over the quota are dropped and counted in `quota_dropped`,
  while the source's events of groups that exist are still taken.

  Events without a stack trace (plain log lines) are grouped by a template
  miner (`SelfHeal.Native.miner_new/1`, `docs/miner.md`), so lines that
  differ only in their values share a group. With `:state_dir` set, the
  miner is restored from `state_dir/miner.snapshot` at start and saved
  there every `:snapshot_ms` (default 60 s, when it changed) and at
  shutdown, so cluster ids, and the fingerprints made from them, survive a
  restart.

  Options: `:name`, `:batch_size`, `:flush_ms`, `:max_groups`,
  `:new_groups_per_minute`,
  `:fingerprint` (options of `SelfHeal.Native.config/1`), `:miner`
  (options of `SelfHeal.Native.miner_new/1`, or `false` for none),
  `:state_dir`, `:snapshot_ms`, `:max_pending` (see `ingest/2`), `:scrub`
  (patterns of `SelfHeal.Scrub.new/1`, default `[]`: the built-in rules) and
  `:services` (a `SelfHeal.Service` registry: each event's service is
  resolved and its fingerprint scoped to it, `docs/services.md`) and
  `:settle`: the name of a `SelfHeal.Settle` stage that receives the groups
  of every batch (the application's collector uses `SelfHeal.Settle`).
  With `:raw_sample` (a `SelfHeal.TriageModel` server) up to 10 events
  picked at random from every batch, scrubbed, go to the triage model as
  raw lines (`SelfHeal.TriageModel.sample/2`), low severity included.

  **Watches**: with `:watch` (a `SelfHeal.Watch` set; watches can be added
  and removed at run time through `watches/1`) every event of a batch is
  observed as its metadata plus `fingerprint`, `level`, `service`,
  `source` and `type`, so a watch can count `status >= 500` (a metadata
  field) or the occurrences of one template or error (`fingerprint:`, the
  group's fingerprint, which stays with a template when it generalises).
  **Verification**: with `verify: {table, {module, server}}` (the port's
  table of fingerprints whose deployed fix is being verified), every batch
  holding one of them calls `module.recurrence(server, fingerprint,
  count)` at once, so a failed fix is rolled back without waiting for the
  settle window; events whose metadata says `deploy_track: "canary"` are
  reported as `module.recurrence(server, fingerprint, count, "canary")`,
  and while the table holds `"*"` (a canary is watched) every error event
  counts under `"*"` as well (docs/fix-loop.md, "Canary stage"). An event
  stamped within 10 s before the verification began is a failure from
  before the deploy or recovery that a shipper delivered late and does not
  count. A watch that fires while `"watch:" <> id` is in that
  table (a recovery of it being verified, docs/recovery.md) reports a
  recurrence of it the same way.

  A watch reaching its threshold escalates at once, bypassing the settle
  window, to `:watch_escalate` (`{module, server}` of a
  `SelfHeal.Orchestrator`) as a group with fingerprint `"watch:" <> id`,
  the threshold as its count, the watch's `:severity` (default `:high`,
  kept in `:watch_severity`) and the watch's description as its message.
  """
  use GenServer

  alias SelfHeal.{Event, Native, Scrub, Service}

  require Logger

  @max_services 16
  @error_levels [:error, :critical, :alert, :emergency]
  # groups looked at for eviction, least recently seen first
  @evict_among 8
  # sources whose quota use is kept in one minute; beyond, a new one is
  # over its quota
  @max_quota_sources 100_000

  @type group :: %{
          fingerprint: binary(),
          count: pos_integer(),
          first_seen: integer(),
          last_seen: integer(),
          sample: Event.t(),
          services: [binary()],
          type: binary(),
          normalized: binary(),
          top_frame: Native.frame() | nil
        }

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    {name, opts} = Keyword.pop(opts, :name, __MODULE__)
    opts = if is_atom(name), do: Keyword.put(opts, :registered_name, name), else: opts
    GenServer.start_link(__MODULE__, opts, name: name)
  end

  @doc "Adds events (any source)."
  @spec push(GenServer.server(), [Event.t()]) :: :ok
  def push(server \\ __MODULE__, events) when is_list(events) do
    GenServer.cast(server, {:push, events})
  end

  @doc """
  Adds events from a source that must know about overload (the HTTP
  endpoint answers 503 so Fluent Bit retries): `{:error, :overloaded}`
  when more than `:max_pending` events (default 20,000) wait in the
  collector, in which case none of `events` is taken and they are counted
  as shed. `server` must be a registered name.

  Options: `:source`, `{class, key}` of the client the events came from
  (the endpoint uses `{:anonymous | :authenticated, address}`): their new
  groups count against its quota (`:new_groups_per_minute`); and
  `:count_shed` (default true): false for a caller that will try again, so
  its refusals are not counted as shed.
  """
  @spec ingest(atom(), [Event.t()], keyword()) :: :ok | {:error, :overloaded}
  def ingest(server \\ __MODULE__, events, opts \\ [])
      when is_atom(server) and is_list(events) do
    case :persistent_term.get({__MODULE__, server}, nil) do
      nil ->
        {:error, :overloaded}

      {pending, max_pending} ->
        n = length(events)

        if :atomics.add_get(pending, 1, n) > max_pending do
          :atomics.sub(pending, 1, n)
          if Keyword.get(opts, :count_shed, true), do: :atomics.add(pending, 2, n)
          {:error, :overloaded}
        else
          GenServer.cast(server, {:ingest, events, n, Keyword.get(opts, :source)})
        end
    end
  end

  @doc "The groups so far, most frequent first (pending events are processed first)."
  @spec groups(GenServer.server()) :: [group()]
  def groups(server \\ __MODULE__), do: GenServer.call(server, :groups)

  @doc """
  Counters: events seen, groups, evicted (groups evicted for new ones),
  quota_dropped (events of new groups over their source's quota), shed
  (refused by `ingest/3`), overflow (kept for compatibility: 0 since
  groups are evicted), miner.
  """
  @spec stats(GenServer.server()) :: map()
  def stats(server \\ __MODULE__), do: GenServer.call(server, :stats)

  @doc "Forgets every group."
  @spec reset(GenServer.server()) :: :ok
  def reset(server \\ __MODULE__), do: GenServer.call(server, :reset)

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    # a burst waits in the mailbox: kept off the heap, it is not copied by
    # every garbage collection of the collector
    Process.flag(:message_queue_data, :off_heap)
    # events accepted by ingest/2 and not yet processed (1), shed (2)
    pending = :atomics.new(2, signed: true)

    if name = Keyword.get(opts, :registered_name) do
      :persistent_term.put(
        {__MODULE__, name},
        {pending, Keyword.get(opts, :max_pending, 20_000)}
      )
    end

    scrub =
      case Scrub.new(Keyword.get(opts, :scrub, [])) do
        {:ok, scrubber} -> scrubber
        {:error, reason} -> raise ArgumentError, "SelfHeal.Collector: :scrub #{reason}"
      end

    fingerprint = Keyword.get(opts, :fingerprint, [])
    state_dir = Keyword.get(opts, :state_dir)
    miner = open_miner(Keyword.get(opts, :miner, []), state_dir, scrub)
    snapshot_ms = Keyword.get(opts, :snapshot_ms, 60_000)
    if miner && state_dir, do: Process.send_after(self(), :snapshot, snapshot_ms)

    {:ok,
     %{
       config: Native.config(Keyword.put(fingerprint, :miner, miner)),
       # for a new group's details: the sample is not added to the miner twice
       info_config: Native.config(fingerprint),
       miner: miner,
       scrub: scrub,
       settle: Keyword.get(opts, :settle),
       watch: Keyword.get(opts, :watch),
       verify: Keyword.get(opts, :verify),
       services: Keyword.get(opts, :services),
       raw_sample: Keyword.get(opts, :raw_sample),
       watch_escalate: Keyword.get(opts, :watch_escalate),
       watch_severity: Keyword.get(opts, :watch_severity, %{}),
       ingest_pending: pending,
       registered_name: Keyword.get(opts, :registered_name),
       state_dir: state_dir,
       snapshot_ms: snapshot_ms,
       saved_lines: miner && Native.miner_stats(miner).lines,
       batch_size: Keyword.get(opts, :batch_size, 1000),
       flush_ms: Keyword.get(opts, :flush_ms, 50),
       max_groups: Keyword.get(opts, :max_groups, 10_000),
       quota:
         Map.new(Keyword.get(opts, :new_groups_per_minute, anonymous: 100, authenticated: 5000)),
       quota_minute: nil,
       quota_used: %{},
       pending: [],
       npending: 0,
       # {source, n} of the pending events, newest first, when any has a source
       psources: [],
       timer: nil,
       groups: %{},
       # {seq, fingerprint} of every group, least recently seen first
       recency: :gb_sets.empty(),
       seen: %{},
       seq: 0,
       events: 0,
       overflow: 0,
       evicted: 0,
       quota_dropped: 0
     }}
  end

  @impl true
  def handle_info({:self_heal_event, %Event{} = event}, state),
    do: {:noreply, add([event], state, nil)}

  def handle_info(:flush, state), do: {:noreply, flush(%{state | timer: nil})}

  def handle_info(:snapshot, state) do
    Process.send_after(self(), :snapshot, state.snapshot_ms)
    {:noreply, save_miner(state)}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def handle_cast({:push, events}, state), do: {:noreply, add(events, state, nil)}

  def handle_cast({:ingest, events, n, source}, state) do
    state = add(events, state, source)
    :atomics.sub(state.ingest_pending, 1, n)
    {:noreply, state}
  end

  @impl true
  def handle_call(:groups, _from, state) do
    state = flush(state)
    groups = state.groups |> Map.values() |> Enum.sort_by(&{-&1.count, &1.first_seen})
    {:reply, groups, state}
  end

  def handle_call(:stats, _from, state) do
    state = flush(state)
    miner = if state.miner, do: Native.miner_stats(state.miner)

    {:reply,
     %{
       events: state.events,
       groups: map_size(state.groups),
       overflow: state.overflow,
       evicted: state.evicted,
       quota_dropped: state.quota_dropped,
       shed: :atomics.get(state.ingest_pending, 2),
       miner: miner
     }, state}
  end

  def handle_call(:miner, _from, state), do: {:reply, state.miner, state}
  def handle_call(:watches, _from, state), do: {:reply, state.watch, state}

  def handle_call(:reset, _from, state) do
    {:reply, :ok,
     %{
       flush(state)
       | groups: %{},
         recency: :gb_sets.empty(),
         seen: %{},
         events: 0,
         overflow: 0,
         evicted: 0,
         quota_dropped: 0
     }}
  end

  @impl true
  def terminate(_reason, state) do
    save_miner(flush(state))
    if state.registered_name, do: :persistent_term.erase({__MODULE__, state.registered_name})
    :ok
  end

  @doc "The collector's watch set (nil when it has none)."
  @spec watches(GenServer.server()) :: SelfHeal.Watch.t() | nil
  def watches(server \\ __MODULE__), do: GenServer.call(server, :watches)

  @doc "The collector's template miner (nil when disabled)."
  @spec miner(GenServer.server()) :: Native.miner() | nil
  def miner(server \\ __MODULE__), do: GenServer.call(server, :miner)

  defp open_miner(false, _state_dir, _scrub), do: nil

  defp open_miner(opts, nil, _scrub), do: Native.miner_new(opts)

  defp open_miner(opts, state_dir, scrub) do
    path = Path.join(state_dir, "miner.snapshot")

    case File.read(path) do
      {:ok, snapshot} ->
        case Native.miner_restore(snapshot, opts) do
          {:ok, miner} ->
            if raw_templates?(miner, scrub) do
              # written before lines were scrubbed, or with other scrub
              # patterns: it holds what the scrubber takes out, so it is
              # not kept anywhere
              _ = File.rm(path)

              Logger.warning(
                "miner snapshot #{path} held unscrubbed text: removed, templates start afresh",
                domain: [:self_heal]
              )

              Native.miner_new(opts)
            else
              miner
            end

          {:error, reason} ->
            # kept aside for a human, never silently overwritten
            _ = File.rename(path, path <> ".bad")
            Logger.warning("miner snapshot #{path} not used: #{reason}", domain: [:self_heal])
            Native.miner_new(opts)
        end

      {:error, _} ->
        Native.miner_new(opts)
    end
  end

  # A template mined from scrubbed lines is left as it is by the scrubber.
  defp raw_templates?(miner, scrub) do
    miner
    |> Native.miner_templates()
    |> Enum.any?(fn %{template: t} -> Scrub.text(scrub, t) != t end)
  end

  defp save_miner(%{miner: nil} = state), do: state
  defp save_miner(%{state_dir: nil} = state), do: state

  defp save_miner(state) do
    lines = Native.miner_stats(state.miner).lines

    if lines == state.saved_lines do
      state
    else
      path = Path.join(state.state_dir, "miner.snapshot")
      tmp = path <> ".tmp"

      # private: log templates can hold what the logs held
      with :ok <- File.mkdir_p(state.state_dir),
           :ok <- File.write(tmp, Native.miner_snapshot(state.miner)),
           :ok <- File.chmod(tmp, 0o600),
           :ok <- File.rename(tmp, path) do
        %{state | saved_lines: lines}
      else
        {:error, reason} ->
          Logger.warning("miner snapshot #{path} not saved: #{inspect(reason)}",
            domain: [:self_heal]
          )

          state
      end
    end
  end

  defp add(events, state, source) do
    n = length(events)

    psources =
      if source == nil and state.psources == [],
        do: [],
        else: [{source, n} | state.psources]

    state = %{
      state
      | pending: Enum.reverse(events, state.pending),
        npending: state.npending + n,
        psources: psources
    }

    cond do
      state.npending >= state.batch_size -> flush(state)
      state.timer == nil -> %{state | timer: Process.send_after(self(), :flush, state.flush_ms)}
      true -> state
    end
  end

  defp flush(%{npending: 0} = state), do: state

  defp flush(state) do
    if state.timer, do: Process.cancel_timer(state.timer)
    events = state.pending |> Enum.reverse() |> scrub_messages(state)
    fingerprints = Native.fingerprint_batch(events, state.config)
    events = Enum.zip_with(events, fingerprints, &%{&1 | fingerprint: &2})
    events = by_service(events, state.services)
    seen = length(events)
    {events, state} = quota(events, state)

    batch_groups = Native.dedup(events)
    SelfHeal.Telemetry.capture(events, batch_groups)
    state = Enum.reduce(batch_groups, state, fn batch_group, acc -> merge(batch_group, acc) end)

    if state.settle,
      do: SelfHeal.Settle.add(state.settle, Enum.map(batch_groups, &detail(&1, state)))

    if state.watch && SelfHeal.Watch.count(state.watch) > 0, do: observe(events, state)
    if state.verify, do: report_recurrences(events, state.verify)
    if state.raw_sample, do: sample_raw(events, state)

    %{state | pending: [], npending: 0, psources: [], timer: nil, events: state.events + seen}
  end

  # With a miner, the messages are scrubbed before they are fingerprinted:
  # a message without a stack frame goes into the miner, whose templates
  # are kept in its snapshot and reported, and no stored text may hold a
  # raw secret. A message without secrets comes back as the same binary.
  defp scrub_messages(events, %{miner: nil}), do: events

  defp scrub_messages(events, state) do
    Enum.map(events, fn
      %{message: m} = e when is_binary(m) -> %{e | message: Scrub.text(state.scrub, m)}
      e -> e
    end)
  end

  # With a service registry: each event's service resolved, and its
  # fingerprint scoped to it (the same error in two services is two groups)
  defp by_service(events, nil), do: events

  defp by_service(events, services), do: Service.route_scope(events, services)

  # Events of new fingerprints over their source's quota of new groups
  # this minute are dropped. Only events that came with a source count.
  defp quota(events, %{psources: []} = state), do: {events, state}

  defp quota(events, state) do
    # the usual batch opens no group: nothing to decide
    if Enum.all?(events, &Map.has_key?(state.groups, &1.fingerprint)),
      do: {events, state},
      else: charge(events, state)
  end

  defp charge(events, state) do
    minute = div(System.monotonic_time(:millisecond), 60_000)

    state =
      if state.quota_minute == minute,
        do: state,
        else: %{state | quota_minute: minute, quota_used: %{}}

    sources =
      state.psources
      |> Enum.reverse()
      |> Enum.flat_map(fn {source, n} -> List.duplicate(source, n) end)

    {kept, _new, used, dropped} =
      Enum.zip(events, sources)
      |> Enum.reduce({[], %{}, state.quota_used, 0}, fn {event, source},
                                                        {kept, new, used, dropped} ->
        fp = event.fingerprint

        cond do
          source == nil or Map.has_key?(state.groups, fp) ->
            {[event | kept], new, used, dropped}

          Map.has_key?(new, fp) ->
            if new[fp],
              do: {[event | kept], new, used, dropped},
              else: {kept, new, used, dropped + 1}

          under_quota?(state.quota, used, source) ->
            {[event | kept], Map.put(new, fp, true), Map.update(used, source, 1, &(&1 + 1)),
             dropped}

          true ->
            {kept, Map.put(new, fp, false), used, dropped + 1}
        end
      end)

    {Enum.reverse(kept),
     %{state | quota_used: used, quota_dropped: state.quota_dropped + dropped}}
  end

  defp under_quota?(quota, used, {class, _key} = source) do
    case used do
      %{^source => n} -> n < Map.get(quota, class, n + 1)
      _ -> map_size(used) < @max_quota_sources and Map.get(quota, class, 1) > 0
    end
  end

  defp under_quota?(_quota, _used, _source), do: true

  @late_grace_us 10_000_000

  # nil: not under verification; else when its verification began (0: not
  # known, every event counts).
  defp verify_since(table, fp) do
    case :ets.lookup(table, fp) do
      [{_, _, since}] when is_integer(since) -> since
      [_ | _] -> 0
      [] -> nil
    end
  end

  defp recurs?(_event, nil), do: false

  defp recurs?(%{timestamp: ts}, since) when is_integer(ts) and since > 0,
    do: ts >= since or ts < since - @late_grace_us

  defp recurs?(_event, _since), do: true

  # Fingerprints whose fix is being verified (the port's table) that came
  # back in this batch go to the port at once: no settle window, counted
  # by track (an event whose metadata says `deploy_track: "canary"` comes
  # from the canary). While a canary is watched the table holds "*", and
  # every error event counts under "*" too: the canary's error rate
  # against the stable's. An event stamped shortly before the verification
  # began (within @late_grace_us) is a failure from before the action or
  # deploy that a shipper delivered late, not a recurrence; one stamped
  # earlier than that counts, as its clock cannot be trusted to say.
  defp report_recurrences(events, {table, {mod, server}}) do
    if :ets.whereis(table) != :undefined and :ets.info(table, :size) > 0 do
      all = verify_since(table, "*")

      events
      |> Enum.flat_map(fn e ->
        track = track(e)
        since = verify_since(table, e.fingerprint)
        fixed = if recurs?(e, since), do: [{e.fingerprint, track}], else: []

        if recurs?(e, all) and Map.get(e, :level) in @error_levels,
          do: [{"*", track} | fixed],
          else: fixed
      end)
      |> Enum.frequencies()
      |> Enum.each(fn
        {{fp, "stable"}, n} -> mod.recurrence(server, fp, n)
        {{fp, track}, n} -> mod.recurrence(server, fp, n, track)
      end)
    end

    :ok
  end

  @raw_per_batch 10

  defp sample_raw([], _state), do: :ok

  defp sample_raw(events, state) do
    pairs =
      for e <- Enum.take_random(events, @raw_per_batch),
          do: {Scrub.text(state.scrub, SelfHeal.TriageModel.raw_line(e)), e.fingerprint}

    SelfHeal.TriageModel.sample(state.raw_sample, pairs)
  end

  defp track(%{metadata: meta}) when is_map(meta) do
    case Map.get(meta, :deploy_track, Map.get(meta, "deploy_track")) do
      c when c in ["canary", :canary] -> "canary"
      _ -> "stable"
    end
  end

  defp track(_event), do: "stable"

  defp observe(events, state) do
    now = System.monotonic_time(:millisecond)

    observed =
      Enum.map(events, fn e ->
        meta = if is_map(e.metadata), do: e.metadata, else: %{}

        Map.merge(meta, %{
          fingerprint: e.fingerprint,
          level: e.level,
          service: e.service,
          source: e.source,
          type: e.type
        })
      end)

    for id <- SelfHeal.Watch.observe(state.watch, observed, now) do
      # a watch firing again while a recovery of it is verified recurs
      if state.verify,
        do: report_recurrences([%{fingerprint: "watch:" <> id, count: 1}], state.verify)

      escalate_watch(id, state)
    end
  end

  defp escalate_watch(id, %{watch_escalate: {mod, server}} = state) do
    watch = Enum.find(SelfHeal.Watch.list(state.watch), &(&1.id == id))
    now = Event.now()

    group = %{
      fingerprint: "watch:" <> id,
      count: (watch && watch.threshold) || 1,
      first_seen: now,
      last_seen: now,
      severity: Map.get(state.watch_severity, id, :high),
      type: "watch",
      normalized: describe_watch(id, watch),
      services: watch_services(watch),
      watch: watch
    }

    mod.escalate(server, group)
  end

  defp escalate_watch(id, _state) do
    Logger.warning("self_heal: watch #{id} reached its threshold", domain: [:self_heal])
  end

  # A watch that counts one service's events only belongs to that service
  # (docs/services.md); any other watch to none.
  defp watch_services(%{field: "service", op: :==, value: service}) when is_binary(service),
    do: [service]

  defp watch_services(_watch), do: []

  defp describe_watch(id, nil), do: "watch #{id} reached its threshold"

  defp describe_watch(id, w) do
    what =
      cond do
        Map.get(w, :field) -> "#{w.field} #{w.op} #{inspect(w.value)}"
        Map.get(w, :fingerprint) -> "fingerprint #{w.fingerprint}"
        Map.get(w, :cluster) -> "cluster #{w.cluster}"
        true -> "matching events"
      end

    "watch #{id}: #{w.threshold} events with #{what} within #{w.window_ms} ms"
  end

  # what the settle stage needs of a batch group: the collector's details
  # when it has them, computed otherwise
  defp detail(%{fingerprint: fp} = g, state) do
    g = Map.take(g, [:fingerprint, :count, :first_seen, :last_seen, :sample, :services])
    g = %{g | sample: Scrub.event(state.scrub, g.sample)}

    case state.groups do
      %{^fp => group} ->
        Map.merge(g, Map.take(group, [:type, :normalized, :top_frame]))

      _ ->
        info = Native.fingerprint(g.sample, state.info_config)
        Map.merge(g, %{type: info.type, normalized: info.normalized, top_frame: info.top_frame})
    end
  end

  defp merge(%{fingerprint: fp} = g, state) do
    seq = state.seq + 1

    case state.groups do
      %{^fp => group} ->
        group = %{
          group
          | count: group.count + g.count,
            first_seen: min(group.first_seen, g.first_seen),
            last_seen: max(group.last_seen, g.last_seen),
            services: Enum.take(Enum.uniq(group.services ++ g.services), @max_services)
        }

        recency = :gb_sets.delete({Map.fetch!(state.seen, fp), fp}, state.recency)

        %{
          state
          | groups: Map.put(state.groups, fp, group),
            recency: :gb_sets.add({seq, fp}, recency),
            seen: Map.put(state.seen, fp, seq),
            seq: seq
        }

      _ ->
        state = if map_size(state.groups) >= state.max_groups, do: evict(state), else: state
        # what is kept holds no raw secret; the fingerprint is the raw one
        sample = Scrub.event(state.scrub, g.sample)
        info = Native.fingerprint(sample, state.info_config)

        group = %{
          fingerprint: fp,
          count: g.count,
          first_seen: g.first_seen,
          last_seen: g.last_seen,
          sample: sample,
          services: g.services,
          type: info.type,
          normalized: info.normalized,
          top_frame: info.top_frame
        }

        %{
          state
          | groups: Map.put(state.groups, fp, group),
            recency: :gb_sets.add({seq, fp}, state.recency),
            seen: Map.put(state.seen, fp, seq),
            seq: seq
        }
    end
  end

  # Room for a new group: of the @evict_among least recently seen groups,
  # the smallest goes (the least recent of equals).
  defp evict(state) do
    {_seq, fp} =
      state.recency
      |> :gb_sets.iterator()
      |> least_recent(@evict_among, [])
      |> Enum.min_by(fn {seq, fp} -> {state.groups[fp].count, seq} end)

    %{
      state
      | groups: Map.delete(state.groups, fp),
        recency: :gb_sets.delete({Map.fetch!(state.seen, fp), fp}, state.recency),
        seen: Map.delete(state.seen, fp),
        evicted: state.evicted + 1
    }
  end

  defp least_recent(_iter, 0, acc), do: acc

  defp least_recent(iter, n, acc) do
    case :gb_sets.next(iter) do
      {item, iter} -> least_recent(iter, n - 1, [item | acc])
      :none -> acc
    end
  end
end
