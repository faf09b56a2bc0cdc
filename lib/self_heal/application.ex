defmodule SelfHeal.Application do
  @moduledoc """
  Starts the collector and, unless `config :self_heal, logger_handler: false`,
  attaches `SelfHeal.LoggerHandler` to `:logger`.
  """
  use Application

  @impl true
  def start(_type, _args) do
    fingerprint = Application.get_env(:self_heal, :fingerprint, [])

    collector =
      Keyword.put_new(Application.get_env(:self_heal, :collector, []), :fingerprint, fingerprint)

    children = [{SelfHeal.Collector, collector}]

    with {:ok, sup} <-
           Supervisor.start_link(children, strategy: :one_for_one, name: SelfHeal.Supervisor) do
      if Application.get_env(:self_heal, :logger_handler, true) do
        :ok = SelfHeal.LoggerHandler.attach(Application.get_env(:self_heal, :handler, []))
      end

      {:ok, sup}
    end
  end

  @impl true
  def prep_stop(state) do
    SelfHeal.LoggerHandler.detach()
    state
  end
end
