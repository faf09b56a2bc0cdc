defmodule SelfHeal.Orchestrator do
  @moduledoc """
  Where settled, triaged groups go: root-cause analysis, tickets and fixes.
  `SelfHeal.Port` (the port program) implements it, optionally behind
  `SelfHeal.TriageModel`; without `config :self_heal, port: [...]` the
  default, `SelfHeal.Orchestrator.Sink`, logs each group and keeps the most
  recent ones.

  The settle stage calls `c:escalate/2` for groups that triage escalates
  and `c:update/2` for groups it holds (below the minimum severity, or
  escalated within the dedup window: the count grew). Both must return
  quickly; slow work belongs to the implementation's own processes.

  Configure with `config :self_heal, orchestrator: {module, server}`.
  """

  @doc "A group to act on (has `:severity`)."
  @callback escalate(server :: GenServer.server(), SelfHeal.Triage.settled()) :: :ok

  @doc "A group held by triage, with the reason."
  @callback update(server :: GenServer.server(), {SelfHeal.Triage.settled(), term()}) :: :ok
end

defmodule SelfHeal.Orchestrator.Sink do
  @moduledoc """
  The orchestrator used until the port program takes over: logs every
  escalated group (domain `[:self_heal]`, so the logger handler does not
  capture it again) and keeps the last `:keep` escalated and held groups
  (default 1000 each) for `escalated/1` and `held/1`.
  """
  @behaviour SelfHeal.Orchestrator
  use GenServer

  require Logger

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    {name, opts} = Keyword.pop(opts, :name, __MODULE__)
    GenServer.start_link(__MODULE__, opts, name: name)
  end

  @impl SelfHeal.Orchestrator
  def escalate(server, group), do: GenServer.cast(server, {:escalate, group})

  @impl SelfHeal.Orchestrator
  def update(server, held), do: GenServer.cast(server, {:update, held})

  @doc "Escalated groups, most recent first."
  @spec escalated(GenServer.server()) :: [SelfHeal.Triage.settled()]
  def escalated(server \\ __MODULE__), do: GenServer.call(server, :escalated)

  @doc "Held groups with the reason, most recent first."
  @spec held(GenServer.server()) :: [{SelfHeal.Triage.settled(), term()}]
  def held(server \\ __MODULE__), do: GenServer.call(server, :held)

  @impl GenServer
  def init(opts) do
    {:ok,
     %{
       keep: Keyword.get(opts, :keep, 1000),
       log: Keyword.get(opts, :log, true),
       escalated: [],
       held: []
     }}
  end

  @impl GenServer
  def handle_cast({:escalate, group}, state) do
    if state.log do
      Logger.warning(
        "self_heal: #{group.severity} #{group.fingerprint} x#{group.count}: " <>
          "#{Map.get(group, :type) || "log"}: #{Map.get(group, :normalized)}",
        domain: [:self_heal]
      )
    end

    {:noreply, %{state | escalated: Enum.take([group | state.escalated], state.keep)}}
  end

  def handle_cast({:update, held}, state) do
    {:noreply, %{state | held: Enum.take([held | state.held], state.keep)}}
  end

  @impl GenServer
  def handle_call(:escalated, _from, state), do: {:reply, state.escalated, state}
  def handle_call(:held, _from, state), do: {:reply, state.held, state}
end
