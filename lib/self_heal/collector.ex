defmodule SelfHeal.Collector do
  @moduledoc """
  Receives events from every source, fingerprints them in batches in C
  (`SelfHeal.Native.fingerprint_batch/2`), groups each batch
  (`SelfHeal.Native.dedup/1`) and merges the batch's groups into its own.

  Events arrive as `{:self_heal_event, event}` messages (the logger
  handler) or through `push/2`. A batch is processed when it reaches
  `:batch_size` events (default 1000) or `:flush_ms` after its first event
  (default 50 ms), so a burst costs one NIF call per thousand events.

  Bounded: at most `:max_groups` groups (default 10_000); events of new
  fingerprints beyond that are counted in `overflow` and dropped.

  Options: `:name`, `:batch_size`, `:flush_ms`, `:max_groups` and
  `:fingerprint` (options of `SelfHeal.Native.config/1`).
  """
  use GenServer

  alias SelfHeal.{Event, Native}

  @max_services 16

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
    GenServer.start_link(__MODULE__, opts, name: name)
  end

  @doc "Adds events (any source)."
  @spec push(GenServer.server(), [Event.t()]) :: :ok
  def push(server \\ __MODULE__, events) when is_list(events) do
    GenServer.cast(server, {:push, events})
  end

  @doc "The groups so far, most frequent first (pending events are processed first)."
  @spec groups(GenServer.server()) :: [group()]
  def groups(server \\ __MODULE__), do: GenServer.call(server, :groups)

  @doc "Counters: events seen, groups, overflow."
  @spec stats(GenServer.server()) :: map()
  def stats(server \\ __MODULE__), do: GenServer.call(server, :stats)

  @doc "Forgets every group."
  @spec reset(GenServer.server()) :: :ok
  def reset(server \\ __MODULE__), do: GenServer.call(server, :reset)

  @impl true
  def init(opts) do
    {:ok,
     %{
       config: Native.config(Keyword.get(opts, :fingerprint, [])),
       batch_size: Keyword.get(opts, :batch_size, 1000),
       flush_ms: Keyword.get(opts, :flush_ms, 50),
       max_groups: Keyword.get(opts, :max_groups, 10_000),
       pending: [],
       npending: 0,
       timer: nil,
       groups: %{},
       events: 0,
       overflow: 0
     }}
  end

  @impl true
  def handle_info({:self_heal_event, %Event{} = event}, state),
    do: {:noreply, add([event], state)}

  def handle_info(:flush, state), do: {:noreply, flush(%{state | timer: nil})}
  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def handle_cast({:push, events}, state), do: {:noreply, add(events, state)}

  @impl true
  def handle_call(:groups, _from, state) do
    state = flush(state)
    groups = state.groups |> Map.values() |> Enum.sort_by(&{-&1.count, &1.first_seen})
    {:reply, groups, state}
  end

  def handle_call(:stats, _from, state) do
    state = flush(state)

    {:reply, %{events: state.events, groups: map_size(state.groups), overflow: state.overflow},
     state}
  end

  def handle_call(:reset, _from, state) do
    {:reply, :ok, %{flush(state) | groups: %{}, events: 0, overflow: 0}}
  end

  defp add(events, state) do
    state = %{
      state
      | pending: Enum.reverse(events, state.pending),
        npending: state.npending + length(events)
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
    events = Enum.reverse(state.pending)
    fingerprints = Native.fingerprint_batch(events, state.config)
    events = Enum.zip_with(events, fingerprints, &%{&1 | fingerprint: &2})

    state =
      Enum.reduce(Native.dedup(events), state, fn batch_group, acc -> merge(batch_group, acc) end)

    %{state | pending: [], npending: 0, timer: nil, events: state.events + length(events)}
  end

  defp merge(%{fingerprint: fp} = g, state) do
    case state.groups do
      %{^fp => group} ->
        group = %{
          group
          | count: group.count + g.count,
            first_seen: min(group.first_seen, g.first_seen),
            last_seen: max(group.last_seen, g.last_seen),
            services: Enum.take(Enum.uniq(group.services ++ g.services), @max_services)
        }

        %{state | groups: Map.put(state.groups, fp, group)}

      _ when map_size(state.groups) >= state.max_groups ->
        %{state | overflow: state.overflow + g.count}

      _ ->
        info = Native.fingerprint(g.sample, state.config)

        group = %{
          fingerprint: fp,
          count: g.count,
          first_seen: g.first_seen,
          last_seen: g.last_seen,
          sample: g.sample,
          services: g.services,
          type: info.type,
          normalized: info.normalized,
          top_frame: info.top_frame
        }

        %{state | groups: Map.put(state.groups, fp, group)}
    end
  end
end
