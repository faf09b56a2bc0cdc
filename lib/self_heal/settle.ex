defmodule SelfHeal.Settle do
  @moduledoc """
  The settle stage: groups wait here until their burst calms down, then
  leave once, classified, for triage and the orchestrator.

  The collector sends the groups of each batch (`add/2`). A fingerprint's
  group stays open while occurrences keep coming: it settles `:settle_ms`
  (default 30 s) after its last occurrence, or `:max_wait_ms` (default
  5 min) after it opened, whichever comes first, so a steady stream still
  settles. On settling, `SelfHeal.Triage.decide/2` classifies it and the
  orchestrator (`SelfHeal.Orchestrator`) gets it as escalated or held; a
  later occurrence opens a new group.

  Sharded: `:shards` processes (default one per scheduler), a fingerprint
  always on the same shard (`:erlang.phash2/2`), so a busy fingerprint
  only keeps its own shard busy.

  Clustered (`cluster: true`): every node's shards join a `:pg` group, and
  a fingerprint's open group lives on one owner node, chosen by rendezvous
  (highest-random-weight) hashing of the fingerprint over the nodes that
  have members, so every node routes a fingerprint to the same owner and
  the same error raised on every node settles as one group with the summed
  count. When the owner goes away, the others route to the next owner at
  once; the open counts the dead node held are lost (at most one settle
  window of that node's share). All nodes must run the same number of
  shards. Bounded: at most `:max_open` open groups
  in all (default 10,000, split over the shards); occurrences of new
  fingerprints beyond that are counted in `overflow` and dropped; batches
  for a shard whose mailbox holds more than `:max_queue` messages (default
  10,000) are shed and counted.
  """
  use GenServer

  alias SelfHeal.{Orchestrator, Triage}

  @type options :: keyword()

  @doc "A supervisor child spec starting the shards of `opts[:name]`."
  @spec child_spec(options()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      type: :supervisor,
      start: {__MODULE__, :start_link, [opts]}
    }
  end

  @doc "Starts the shards under a supervisor of their own."
  @spec start_link(options()) :: Supervisor.on_start()
  def start_link(opts) do
    base = Keyword.get(opts, :name, __MODULE__)
    shards = Keyword.get(opts, :shards, System.schedulers_online())
    max_open = Keyword.get(opts, :max_open, 10_000)
    per_shard = max(div(max_open + shards - 1, shards), 1)
    shed = :atomics.new(1, signed: false)
    max_queue = Keyword.get(opts, :max_queue, 10_000)
    scope = if Keyword.get(opts, :cluster, false), do: :"#{base}.pg"
    :persistent_term.put({__MODULE__, base}, {shards, max_queue, shed, scope})

    children =
      for i <- 0..(shards - 1) do
        name = shard_name(base, i)

        shard_opts =
          Keyword.merge(opts, name: name, max_open: per_shard, scope: scope, base: base)

        %{
          id: {__MODULE__, i},
          start: {GenServer, :start_link, [__MODULE__, shard_opts, [name: name]]}
        }
      end

    pg = if scope, do: [%{id: :pg, start: {:pg, :start_link, [scope]}}], else: []
    Supervisor.start_link(pg ++ children, strategy: :one_for_one)
  end

  defp shard_name(base, i), do: :"#{base}.shard#{i}"

  @doc """
  Hands the groups of one collector batch to their shards. A group is a
  map with `:fingerprint`, `:count`, `:first_seen`, `:last_seen`,
  `:sample`, `:services` and optionally `:type`, `:normalized`,
  `:top_frame`.
  """
  @spec add(atom(), [map()]) :: :ok
  def add(base \\ __MODULE__, groups) do
    case :persistent_term.get({__MODULE__, base}, nil) do
      nil ->
        :ok

      {shards, max_queue, shed, nil} ->
        groups
        |> Enum.group_by(&:erlang.phash2(&1.fingerprint, shards))
        |> Enum.each(fn {i, gs} -> send_shard(shard_name(base, i), gs, max_queue, shed) end)

      {shards, max_queue, shed, scope} ->
        nodes = owner_nodes(scope, base)

        groups
        |> Enum.group_by(&{owner(&1.fingerprint, nodes), :erlang.phash2(&1.fingerprint, shards)})
        |> Enum.each(fn
          {{owner, i}, gs} when owner == node() ->
            send_shard(shard_name(base, i), gs, max_queue, shed)

          {{owner, i}, gs} ->
            GenServer.cast({shard_name(base, i), owner}, {:add, gs})
        end)
    end
  end

  @doc "The node that owns a fingerprint's open group (cluster mode)."
  @spec owner_of(atom(), binary()) :: node()
  def owner_of(base \\ __MODULE__, fingerprint) do
    case :persistent_term.get({__MODULE__, base}, nil) do
      {_, _, _, scope} when scope != nil -> owner(fingerprint, owner_nodes(scope, base))
      _ -> node()
    end
  end

  defp owner_nodes(scope, base) do
    case :pg.get_members(scope, {__MODULE__, base}) do
      [] -> [node()]
      pids -> pids |> Enum.map(&node/1) |> Enum.uniq()
    end
  end

  # rendezvous hashing: the node with the highest weight for the key
  defp owner(fingerprint, nodes), do: Enum.max_by(nodes, &:erlang.phash2({fingerprint, &1}))

  defp send_shard(name, groups, max_queue, shed) do
    case Process.whereis(name) do
      nil ->
        :atomics.add(shed, 1, Enum.sum(Enum.map(groups, & &1.count)))

      pid ->
        case Process.info(pid, :message_queue_len) do
          {:message_queue_len, n} when n > max_queue ->
            :atomics.add(shed, 1, Enum.sum(Enum.map(groups, & &1.count)))

          _ ->
            GenServer.cast(pid, {:add, groups})
        end
    end
  end

  @doc "Open groups of every shard, most occurrences first."
  @spec open(atom()) :: [map()]
  def open(base \\ __MODULE__) do
    base
    |> shard_pids()
    |> Enum.flat_map(&GenServer.call(&1, :open))
    |> Enum.sort_by(&{-&1.count, &1.first_seen})
  end

  @doc "Counters summed over the shards: open, settled, overflow, shed."
  @spec stats(atom()) :: map()
  def stats(base \\ __MODULE__) do
    shed =
      case :persistent_term.get({__MODULE__, base}, nil) do
        {_, _, ref, _} -> :atomics.get(ref, 1)
        nil -> 0
      end

    base
    |> shard_pids()
    |> Enum.map(&GenServer.call(&1, :stats))
    |> Enum.reduce(%{open: 0, settled: 0, overflow: 0, shed: shed}, fn s, acc ->
      %{
        acc
        | open: acc.open + s.open,
          settled: acc.settled + s.settled,
          overflow: acc.overflow + s.overflow
      }
    end)
  end

  @doc "Settles every open group now (tests, shutdown)."
  @spec settle_all(atom()) :: :ok
  def settle_all(base \\ __MODULE__) do
    base |> shard_pids() |> Enum.each(&GenServer.call(&1, :settle_all))
  end

  defp shard_pids(base) do
    case :persistent_term.get({__MODULE__, base}, nil) do
      nil ->
        []

      {shards, _, _, _} ->
        for i <- 0..(shards - 1), pid = Process.whereis(shard_name(base, i)), do: pid
    end
  end

  # ------------------------------------------------------------ a shard

  @impl true
  def init(opts) do
    if scope = Keyword.get(opts, :scope),
      do: :ok = :pg.join(scope, {__MODULE__, Keyword.fetch!(opts, :base)}, self())

    settle_ms = Keyword.get(opts, :settle_ms, 30_000)
    tick = Keyword.get(opts, :tick_ms, settle_ms |> div(4) |> max(5) |> min(1000))
    Process.send_after(self(), :tick, tick)

    {:ok,
     %{
       settle_ms: settle_ms,
       max_wait_ms: Keyword.get(opts, :max_wait_ms, 300_000),
       tick_ms: tick,
       max_open: Keyword.fetch!(opts, :max_open),
       triage: Keyword.get(opts, :triage, Triage),
       orchestrator: Keyword.get(opts, :orchestrator, {Orchestrator.Sink, Orchestrator.Sink}),
       open: %{},
       settled: 0,
       overflow: 0
     }}
  end

  @impl true
  def handle_cast({:add, groups}, state) do
    now = System.monotonic_time(:millisecond)
    {:noreply, Enum.reduce(groups, state, &open_or_update(&1, &2, now))}
  end

  @impl true
  def handle_info(:tick, state) do
    Process.send_after(self(), :tick, state.tick_ms)
    now = System.monotonic_time(:millisecond)
    due = for {fp, g} <- state.open, g.deadline <= now, do: fp
    {:noreply, Enum.reduce(due, state, &settle/2)}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def handle_call(:open, _from, state) do
    {:reply, Enum.map(state.open, fn {_, g} -> public(g) end), state}
  end

  def handle_call(:stats, _from, state) do
    {:reply, %{open: map_size(state.open), settled: state.settled, overflow: state.overflow},
     state}
  end

  def handle_call(:settle_all, _from, state) do
    {:reply, :ok, Enum.reduce(Map.keys(state.open), state, &settle/2)}
  end

  defp open_or_update(%{fingerprint: fp} = g, state, now) do
    case state.open do
      %{^fp => open} ->
        open = %{
          open
          | count: open.count + g.count,
            first_seen: min(open.first_seen, g.first_seen),
            last_seen: max(open.last_seen, g.last_seen),
            services: Enum.take(Enum.uniq(open.services ++ g.services), 16),
            deadline: min(now + state.settle_ms, open.opened_at + state.max_wait_ms)
        }

        %{state | open: Map.put(state.open, fp, open)}

      _ when map_size(state.open) >= state.max_open ->
        %{state | overflow: state.overflow + g.count}

      _ ->
        open =
          g
          |> Map.take([
            :fingerprint,
            :count,
            :first_seen,
            :last_seen,
            :sample,
            :services,
            :type,
            :normalized,
            :top_frame
          ])
          |> Map.merge(%{
            opened_at: now,
            deadline: min(now + state.settle_ms, now + state.max_wait_ms)
          })

        %{state | open: Map.put(state.open, fp, open)}
    end
  end

  defp settle(fp, state) do
    {group, open} = Map.pop(state.open, fp)
    deliver(public(group), state)
    %{state | open: open, settled: state.settled + 1}
  end

  defp deliver(group, %{triage: triage, orchestrator: {mod, server}}) do
    case Triage.decide(triage, group) do
      {:escalate, settled} ->
        SelfHeal.Telemetry.settle(settled, :escalate)
        mod.escalate(server, settled)

      {:hold, settled, reason} ->
        SelfHeal.Telemetry.settle(settled, :hold, reason)
        mod.update(server, {settled, reason})
    end
  catch
    # triage or the orchestrator is gone: the group is lost, the shard lives
    :exit, _ -> :ok
  end

  defp public(group), do: Map.drop(group, [:opened_at, :deadline])
end
