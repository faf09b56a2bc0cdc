defmodule SelfHeal.TelegramPoll do
  @moduledoc """
  Long-polls Telegram for presses of the Approve / Skip buttons that the
  port program's notifications carry (`docs/notifications.md`).

  One process, one `telegram_poll` command in flight at a time: the port
  asks `getUpdates` with a `:timeout_s` long poll (it occupies one of the
  port's worker threads while it waits), reports each accepted press as
  an `"approval"` event, and `SelfHeal.Port` turns that event into the
  `approve` / `skip` command for the fix. This process only keeps the
  polls going: the next one starts as soon as a reply is in, but never
  sooner than `:interval_ms` after the previous one started (a proxy that
  answers long polls at once is not hammered), and after a failure with a
  backoff doubling from `:backoff_min` to `:backoff_max`.
  A configuration error (no token, no chat) is logged once per distinct
  message.

  The application starts it when the port program's configuration lists
  `"telegram"` in `notify.channels`.

  Options: `:port` (the `SelfHeal.Port` server, default `SelfHeal.Port`),
  `:name`, `:timeout_s` (default 25), `:interval_ms` (default 1_000),
  `:backoff_min` (default 1_000), `:backoff_max` (default 60_000).
  """
  use GenServer

  require Logger

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    case Keyword.pop(opts, :name) do
      {nil, opts} -> GenServer.start_link(__MODULE__, opts)
      {name, opts} -> GenServer.start_link(__MODULE__, opts, name: name)
    end
  end

  @doc "Whether a port configuration (a map, string or atom keys) sends to Telegram."
  @spec configured?(map()) :: boolean()
  def configured?(config) when is_map(config) do
    notify = fetch(config, "notify")
    channels = is_map(notify) && fetch(notify, "channels")
    is_list(channels) and Enum.any?(channels, &(to_string(&1) == "telegram"))
  end

  def configured?(_config), do: false

  defp fetch(map, key) when is_map(map),
    do: Map.get(map, key, Map.get(map, String.to_atom(key)))

  @impl true
  def init(opts) do
    state = %{
      port: Keyword.get(opts, :port, SelfHeal.Port),
      timeout_s: Keyword.get(opts, :timeout_s, 25),
      interval_ms: Keyword.get(opts, :interval_ms, 1_000),
      backoff_min: Keyword.get(opts, :backoff_min, 1_000),
      backoff_max: Keyword.get(opts, :backoff_max, 60_000),
      backoff: nil,
      logged: nil
    }

    unless is_integer(state.timeout_s) and state.timeout_s in 0..50,
      do: raise(ArgumentError, ":timeout_s must be 0..50")

    send(self(), :poll)
    {:ok, state}
  end

  @impl true
  def handle_info(:poll, state) do
    # the port's own limit is timeout_s plus the channel's timeout_ms
    timeout = (state.timeout_s + 90) * 1000
    started = System.monotonic_time(:millisecond)

    result =
      try do
        SelfHeal.Port.call(
          state.port,
          "telegram_poll",
          %{"timeout_s" => state.timeout_s},
          timeout
        )
      catch
        :exit, reason -> {:error, {:exit, reason}}
      end

    state =
      case result do
        {:ok, _reply} ->
          elapsed = System.monotonic_time(:millisecond) - started
          Process.send_after(self(), :poll, max(state.interval_ms - elapsed, 0))
          %{state | backoff: nil, logged: nil}

        {:error, reason} ->
          backoff =
            if state.backoff,
              do: min(state.backoff * 2, state.backoff_max),
              else: state.backoff_min

          Process.send_after(self(), :poll, backoff)
          %{state | backoff: backoff, logged: log(reason, state.logged)}
      end

    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  # Errors the port answers (bad configuration) once per message; the port
  # restarting or a timeout quietly.
  defp log(%{code: code, message: message} = reason, logged) when reason != logged do
    Logger.warning("self_heal: telegram_poll failed: #{code}: #{message}", domain: [:self_heal])
    reason
  end

  defp log(reason, _logged), do: reason
end
