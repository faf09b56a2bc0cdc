defmodule SelfHeal.Application do
  @moduledoc """
  Starts triage, the orchestrator (`config :self_heal, orchestrator:
  {module, server}`; else `SelfHeal.Port`, the port program, when `config
  :self_heal, port: [config: %{...}]` is set, behind `SelfHeal.TriageModel`
  when that configuration has a `"triage_model"`; else the logging sink),
  the settle stage, the
  collector, when `config :self_heal, endpoint: [...]` is set the HTTP
  endpoint (with the port program, its `/approve` and `/skip` links relay
  to it), `SelfHeal.TelegramPoll` when the port's configuration sends to
  Telegram (`config :self_heal, telegram_poll: [...]` for its options),
  and one `SelfHeal.Tail` per entry of `config :self_heal, tail:
  [[path: "/var/log/app/*.log", service: "app"], ...]`, and gives the
  collector a watch set with `config :self_heal, watches: [...]`; unless `config :self_heal, logger_handler: false`, attaches
  `SelfHeal.LoggerHandler` to `:logger`.

  The configuration is checked first (`SelfHeal.Config`): with a problem
  the application does not start, and the log says each one.
  """
  use Application

  require Logger

  @impl true
  def start(_type, _args) do
    # :telemetry events when the host has it (SelfHeal.Telemetry)
    _ = SelfHeal.Telemetry.available?()

    with :ok <- validate(),
         {:ok, sup} <-
           Supervisor.start_link(children(), strategy: :one_for_one, name: SelfHeal.Supervisor) do
      if Application.get_env(:self_heal, :logger_handler, true) do
        :ok = SelfHeal.LoggerHandler.attach(Application.get_env(:self_heal, :handler, []))
      end

      {:ok, sup}
    end
  end

  defp validate do
    case SelfHeal.Config.validate() do
      :ok ->
        :ok

      {:error, problems} ->
        Logger.error(SelfHeal.Config.format(problems), domain: [:self_heal])
        {:error, {:bad_config, problems}}
    end
  end

  @doc false
  # The supervisor's children for the application environment (a function
  # of it, so tests can check how configuration becomes processes).
  @spec children() :: [Supervisor.child_spec() | {module(), term()}]
  def children do
    fingerprint = Application.get_env(:self_heal, :fingerprint, [])

    collector =
      Application.get_env(:self_heal, :collector, [])
      |> Keyword.put_new(:fingerprint, fingerprint)
      |> Keyword.put_new(:settle, SelfHeal.Settle)
      |> Keyword.put_new(:state_dir, Application.get_env(:self_heal, :state_dir))

    {watch_set, watch_severity} = watches()
    {orchestrator, orchestrator_children} = orchestrator(watch_set)

    settle =
      Application.get_env(:self_heal, :settle, [])
      |> Keyword.put_new(:orchestrator, orchestrator)

    collector =
      Keyword.merge(collector,
        watch: watch_set,
        watch_escalate: orchestrator,
        watch_severity: watch_severity
      )

    # with the port program, recurrences of fingerprints under verification
    collector =
      if Enum.any?(orchestrator_children, &match?({SelfHeal.Port, _}, &1)),
        do:
          Keyword.put_new(
            collector,
            :verify,
            {SelfHeal.Verifying, {SelfHeal.Port, SelfHeal.Port}}
          ),
        else: collector

    port_config =
      Enum.find_value(orchestrator_children, fn
        {SelfHeal.Port, opts} -> Keyword.fetch!(opts, :config)
        _ -> nil
      end)

    # what the collector keeps is scrubbed with the port's patterns too
    collector = Keyword.put_new(collector, :scrub, SelfHeal.Scrub.patterns(port_config))
    # events routed by service when the port's configuration has a registry
    collector = Keyword.put_new(collector, :services, SelfHeal.Service.new(port_config))

    # the triage model also reads a sample of the raw events
    collector =
      if Enum.any?(orchestrator_children, &match?({SelfHeal.TriageModel, _}, &1)),
        do: Keyword.put_new(collector, :raw_sample, SelfHeal.TriageModel),
        else: collector

    # approve / skip links land on the endpoint, which relays them to the port
    endpoint =
      case Application.get_env(:self_heal, :endpoint) do
        opts when is_list(opts) and opts != [] ->
          opts = if port_config, do: Keyword.put_new(opts, :approvals, SelfHeal.Port), else: opts
          [{SelfHeal.Endpoint, opts}]

        _ ->
          []
      end

    # presses of Telegram's Approve / Skip buttons
    telegram =
      if port_config && SelfHeal.TelegramPoll.configured?(port_config),
        do: [
          {SelfHeal.TelegramPoll,
           Keyword.put_new(
             Application.get_env(:self_heal, :telegram_poll, []),
             :port,
             SelfHeal.Port
           )}
        ],
        else: []

    tails =
      Application.get_env(:self_heal, :tail, [])
      |> Enum.with_index()
      |> Enum.map(fn {opts, i} ->
        Supervisor.child_spec({SelfHeal.Tail, opts}, id: {SelfHeal.Tail, i})
      end)

    # `ticket_min_severity: :low` tickets every new fingerprint
    triage =
      case Application.fetch_env(:self_heal, :ticket_min_severity) do
        {:ok, min} ->
          Keyword.put_new(Application.get_env(:self_heal, :triage, []), :min_severity, min)

        :error ->
          Application.get_env(:self_heal, :triage, [])
      end

    # the dedup window survives a restart in the state directory
    triage = Keyword.put_new(triage, :state_dir, Application.get_env(:self_heal, :state_dir))

    # counters for the dashboard and /metrics (SelfHeal.Telemetry feeds them)
    [{SelfHeal.Metrics, []}, {SelfHeal.Triage, triage}] ++
      orchestrator_children ++
      [{SelfHeal.Settle, settle}, {SelfHeal.Collector, collector}] ++
      endpoint ++ telegram ++ tails
  end

  # The watch set of the collector, with the watches of `config :self_heal,
  # watches: [[id: ..., field: ..., op: ..., value: ..., window_ms: ...,
  # threshold: ..., severity: :high], ...]`; more can be added at run time
  # (`SelfHeal.Collector.watches/1`).
  defp watches do
    specs = Application.get_env(:self_heal, :watches, [])
    set = SelfHeal.Watch.new()

    severity =
      for spec <- specs, into: %{} do
        {severity, spec} = Keyword.pop(spec, :severity, :high)
        {:ok, _} = SelfHeal.Watch.add(set, spec)
        {to_string(Keyword.fetch!(spec, :id)), severity}
      end

    {set, severity}
  end

  # Where settled groups go: `config :self_heal, orchestrator: {mod,
  # server}`; else the port program when `config :self_heal, port: [config:
  # %{...}]` is set (with the two-stage triage model in front of it when
  # its configuration has "triage_model"); else the logging sink.
  defp orchestrator(watch_set) do
    case {Application.get_env(:self_heal, :orchestrator), Application.get_env(:self_heal, :port)} do
      {{mod, server}, _} ->
        {{mod, server}, []}

      {nil, opts} when is_list(opts) ->
        config =
          opts
          |> Keyword.get(:config, %{})
          |> Map.new(fn {k, v} -> {to_string(k), v} end)
          |> Map.put_new("state_dir", Application.get_env(:self_heal, :state_dir))

        port =
          {SelfHeal.Port,
           Keyword.merge(
             [name: SelfHeal.Port, verify_table: SelfHeal.Verifying, await_configure: 30_000],
             Keyword.put(opts, :config, config)
           )}

        next = {SelfHeal.Port, SelfHeal.Port}

        if Map.has_key?(config, "triage_model") do
          model =
            Keyword.merge(Application.get_env(:self_heal, :triage_model, []),
              name: SelfHeal.TriageModel,
              port: SelfHeal.Port,
              next: next,
              watch: watch_set
            )

          {{SelfHeal.TriageModel, SelfHeal.TriageModel}, [port, {SelfHeal.TriageModel, model}]}
        else
          {next, [port]}
        end

      {nil, _} ->
        {{SelfHeal.Orchestrator.Sink, SelfHeal.Orchestrator.Sink},
         [{SelfHeal.Orchestrator.Sink, Application.get_env(:self_heal, :sink, [])}]}
    end
  end

  @impl true
  def prep_stop(state) do
    SelfHeal.LoggerHandler.detach()
    state
  end
end
