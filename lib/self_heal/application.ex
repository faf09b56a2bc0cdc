defmodule SelfHeal.Application do
  @moduledoc """
  Starts triage, the orchestrator sink (unless `config :self_heal,
  orchestrator: {module, server}` names another), the settle stage, the
  collector, when `config :self_heal, endpoint: [...]` is set the HTTP
  endpoint, and one `SelfHeal.Tail` per entry of `config :self_heal, tail:
  [[path: "/var/log/app/*.log", service: "app"], ...]`, and gives the
  collector a watch set with `config :self_heal, watches: [...]`; unless `config :self_heal, logger_handler: false`, attaches
  `SelfHeal.LoggerHandler` to `:logger`.
  """
  use Application

  @impl true
  def start(_type, _args) do
    fingerprint = Application.get_env(:self_heal, :fingerprint, [])

    collector =
      Application.get_env(:self_heal, :collector, [])
      |> Keyword.put_new(:fingerprint, fingerprint)
      |> Keyword.put_new(:settle, SelfHeal.Settle)
      |> Keyword.put_new(:state_dir, Application.get_env(:self_heal, :state_dir))

    {orchestrator, orchestrator_children} =
      case Application.get_env(:self_heal, :orchestrator) do
        nil ->
          {{SelfHeal.Orchestrator.Sink, SelfHeal.Orchestrator.Sink},
           [{SelfHeal.Orchestrator.Sink, Application.get_env(:self_heal, :sink, [])}]}

        {mod, server} ->
          {{mod, server}, []}
      end

    settle =
      Application.get_env(:self_heal, :settle, [])
      |> Keyword.put_new(:orchestrator, orchestrator)

    collector = Keyword.merge(collector, watches(orchestrator))

    endpoint =
      case Application.get_env(:self_heal, :endpoint) do
        opts when is_list(opts) and opts != [] -> [{SelfHeal.Endpoint, opts}]
        _ -> []
      end

    tails =
      Application.get_env(:self_heal, :tail, [])
      |> Enum.with_index()
      |> Enum.map(fn {opts, i} ->
        Supervisor.child_spec({SelfHeal.Tail, opts}, id: {SelfHeal.Tail, i})
      end)

    children =
      [{SelfHeal.Triage, Application.get_env(:self_heal, :triage, [])}] ++
        orchestrator_children ++
        [{SelfHeal.Settle, settle}, {SelfHeal.Collector, collector}] ++ endpoint ++ tails

    with {:ok, sup} <-
           Supervisor.start_link(children, strategy: :one_for_one, name: SelfHeal.Supervisor) do
      if Application.get_env(:self_heal, :logger_handler, true) do
        :ok = SelfHeal.LoggerHandler.attach(Application.get_env(:self_heal, :handler, []))
      end

      {:ok, sup}
    end
  end

  # The watch set of the collector, with the watches of `config :self_heal,
  # watches: [[id: ..., field: ..., op: ..., value: ..., window_ms: ...,
  # threshold: ..., severity: :high], ...]`; more can be added at run time
  # (`SelfHeal.Collector.watches/1`).
  defp watches(orchestrator) do
    specs = Application.get_env(:self_heal, :watches, [])
    set = SelfHeal.Watch.new()

    severity =
      for spec <- specs, into: %{} do
        {severity, spec} = Keyword.pop(spec, :severity, :high)
        {:ok, _} = SelfHeal.Watch.add(set, spec)
        {to_string(Keyword.fetch!(spec, :id)), severity}
      end

    [watch: set, watch_escalate: orchestrator, watch_severity: severity]
  end

  @impl true
  def prep_stop(state) do
    SelfHeal.LoggerHandler.detach()
    state
  end
end
