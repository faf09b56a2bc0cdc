defmodule SelfHeal.ApplicationTest do
  # How the application environment becomes the supervisor's children
  # (SelfHeal.Application.children/0); nothing is started here.
  use ExUnit.Case, async: false

  @keys [:port, :endpoint, :telegram_poll, :orchestrator]

  setup do
    saved = for key <- @keys, do: {key, Application.fetch_env(:self_heal, key)}

    on_exit(fn ->
      for {key, value} <- saved do
        case value do
          {:ok, v} -> Application.put_env(:self_heal, key, v)
          :error -> Application.delete_env(:self_heal, key)
        end
      end
    end)

    for key <- @keys, do: Application.delete_env(:self_heal, key)
    :ok
  end

  defp child(children, module) do
    Enum.find_value(children, fn
      {^module, opts} -> opts
      %{id: ^module, start: {^module, :start_link, [opts]}} -> opts
      _ -> nil
    end)
  end

  test "with the port program, the endpoint relays approve/skip links to it" do
    Application.put_env(:self_heal, :endpoint, port: 0)
    Application.put_env(:self_heal, :port, config: %{"tickets" => %{"backend" => "local"}})
    children = SelfHeal.Application.children()
    assert child(children, SelfHeal.Endpoint)[:approvals] == SelfHeal.Port
    assert child(children, SelfHeal.Port)[:name] == SelfHeal.Port
    refute child(children, SelfHeal.TelegramPoll)
  end

  test "without the port program the endpoint has no approve/skip routes" do
    Application.put_env(:self_heal, :endpoint, port: 0)
    children = SelfHeal.Application.children()
    assert child(children, SelfHeal.Endpoint)[:approvals] == nil
    refute child(children, SelfHeal.Port)
  end

  test "Telegram among the channels starts the poller, with its options" do
    Application.put_env(:self_heal, :port,
      config: %{notify: %{channels: ["slack", "telegram"], telegram: %{chat_id: 1}}}
    )

    Application.put_env(:self_heal, :telegram_poll, timeout_s: 10)
    opts = child(SelfHeal.Application.children(), SelfHeal.TelegramPoll)
    assert opts[:port] == SelfHeal.Port
    assert opts[:timeout_s] == 10
  end
end
