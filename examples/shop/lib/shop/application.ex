defmodule Shop.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    reporter = reporter_config()

    server? = Application.get_env(:shop, :start_server, true)

    children =
      List.wrap(if reporter, do: {Shop.ErrorReporter.Sender, reporter}) ++
        List.wrap(if server?, do: {Shop.Server, port: port()})

    with {:ok, pid} <-
           Supervisor.start_link(children, strategy: :one_for_one, name: Shop.Supervisor) do
      if reporter, do: Shop.ErrorReporter.attach()
      {:ok, pid}
    end
  end

  @impl true
  def prep_stop(state) do
    Shop.ErrorReporter.detach()
    state
  end

  # Errors go to SelfHeal's ingest endpoint when SELF_HEAL_URL is set.
  defp reporter_config do
    url = System.get_env("SELF_HEAL_URL", "")

    if url != "" and Application.get_env(:shop, :report_errors, true) do
      [
        url: String.trim_trailing(url, "/") <> "/ingest",
        token: System.get_env("SELF_HEAL_TOKEN", "")
      ]
    end
  end

  defp port do
    case Integer.parse(System.get_env("SHOP_PORT", "4100")) do
      {port, ""} when port in 0..65535 -> port
      _ -> raise ArgumentError, "SHOP_PORT must be a port number"
    end
  end
end
