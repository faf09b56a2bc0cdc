defmodule Shop.ErrorReporter do
  @moduledoc """
  A `:logger` handler that reports errors to SelfHeal as they happen in
  production.

  Each error-level event that carries an exception (`crash_reason`
  metadata, as `Shop.Web` logs them, or an OTP crash report) becomes one
  record POSTed to SelfHeal's `/ingest` endpoint (`SELF_HEAL_URL`, with
  `Authorization: Bearer SELF_HEAL_TOKEN`) by `Shop.ErrorReporter.Sender`,
  asynchronously: the logging process never waits for the network, and
  records are dropped when the endpoint is unreachable or the sender is
  behind.
  """

  @handler_id :shop_error_reporter
  @max_queue 100

  @doc "Adds the handler to `:logger`."
  def attach do
    :logger.add_handler(@handler_id, __MODULE__, %{level: :error, config: %{}})
  end

  @doc "Removes the handler."
  def detach, do: :logger.remove_handler(@handler_id)

  @doc false
  # :logger handler callback: runs in the process that logs; must not fail.
  def log(event, _config) do
    with %{} = record <- record(event),
         pid when is_pid(pid) <- Process.whereis(Shop.ErrorReporter.Sender),
         {:message_queue_len, n} when n < @max_queue <- Process.info(pid, :message_queue_len) do
      GenServer.cast(pid, {:report, record})
    end

    :ok
  catch
    _kind, _reason -> :ok
  end

  @doc """
  The ingest record of a `:logger` event, or `nil` when the event is not
  an error with an exception.
  """
  @spec record(:logger.log_event()) :: map | nil
  def record(%{level: level, meta: meta} = event)
      when level in [:error, :critical, :alert, :emergency] do
    case exception(event) do
      {e, stacktrace} ->
        %{
          "log" => Exception.message(e),
          "level" => "error",
          "service" => "shop",
          "exception" => %{
            "type" => Atom.to_string(e.__struct__),
            "message" => Exception.message(e),
            "stacktrace" => Exception.format_stacktrace(stacktrace)
          },
          "time" => Map.get(meta, :time, :os.system_time(:microsecond)) / 1_000_000
        }
        |> put_path(meta)
        |> put_track(System.get_env("SHOP_DEPLOY_TRACK", ""))

      nil ->
        nil
    end
  end

  def record(_event), do: nil

  defp exception(%{meta: %{crash_reason: {reason, stacktrace}}}) when is_list(stacktrace),
    do: normalize(:error, reason, stacktrace)

  # proc_lib crash reports (a process that died of an exception).
  defp exception(%{msg: {:report, %{label: {:proc_lib, :crash}, report: [info | _]}}}) do
    case Keyword.get(info, :error_info) do
      {kind, reason, stacktrace} when is_list(stacktrace) -> normalize(kind, reason, stacktrace)
      _ -> nil
    end
  end

  defp exception(_event), do: nil

  defp normalize(kind, reason, stacktrace) do
    case Exception.normalize(kind, reason, stacktrace) do
      %{__exception__: true} = e -> {e, stacktrace}
      other -> {ErlangError.exception(original: {kind, other}), stacktrace}
    end
  end

  defp put_path(record, %{path: path}) when is_binary(path), do: Map.put(record, "path", path)
  defp put_path(record, _meta), do: record

  # A canary instance (bin/canary) says so: SelfHeal weighs its errors
  # against the stable's (docs/fix-loop.md, "Canary stage").
  defp put_track(record, ""), do: record
  defp put_track(record, track), do: Map.put(record, "deploy_track", track)
end

defmodule Shop.ErrorReporter.Sender do
  @moduledoc "Posts error records to SelfHeal's ingest endpoint, one at a time."
  use GenServer

  @timeout 2_000

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(opts) do
    {:ok, %{url: Keyword.fetch!(opts, :url), token: Keyword.get(opts, :token, "")}}
  end

  @impl true
  def handle_cast({:report, record}, state) do
    body = Shop.JSON.encode([record])
    headers = [{'authorization', String.to_charlist("Bearer " <> state.token)}]
    request = {String.to_charlist(state.url), headers, 'application/json', body}

    # Unreachable or failing endpoint: the record is dropped.
    _ = :httpc.request(:post, request, [timeout: @timeout, connect_timeout: @timeout], [])
    {:noreply, state}
  end
end
