defmodule SelfHeal.LoggerHandler do
  @moduledoc """
  An OTP `:logger` handler that turns crash reports and error-level logs
  into `SelfHeal.Event`s and sends them to the collector.

  What becomes an event (one event per crash):

    * `gen_server`, `gen_statem` and `gen_event` terminate reports,
    * Elixir `Task` crash reports,
    * `proc_lib` crash reports of processes that did not already report
      their crash through one of the above (the handler runs in the
      crashing process and remembers it in the process dictionary),
    * the emulator's "Error in process" report of a plain `spawn`,
    * supervisor reports of a failed start or of a supervisor giving up
      (`child_terminated` is skipped: the child reported its own crash),
    * any other log event at `:error` or above (`Logger.error/2`), with
      `crash_reason` metadata when present and otherwise the logging call
      site as its single frame.

  Options (`:logger` handler config under `config`, or
  `config :self_heal, handler: [...]`):

    * `:target` - pid or name the events go to (default `SelfHeal.Collector`)
    * `:service` - service name put on every event whose logger metadata
      has no `:service` (default: node name); with a service registry the
      collector resolves it, or the `:application` metadata, to a
      registered service (`docs/services.md`)
    * `:excluded_domains` - domains to skip (prefix match, also after the
      `:elixir` that Elixir's `Logger` puts first; a bare atom means
      `[atom]`; default `[[:self_heal]]`, so the handler never reports its
      own logs)
    * `:metadata` - metadata keys kept on events (default
      `[:request_id, :trace_id, :span_id, :application, :domain, :registered_name]`)
    * `:max_queue` - above this many messages in the target's mailbox
      events are dropped and counted (default 10_000)

  The handler never raises: an error while converting an event is counted
  (`stats/0`) and the event dropped, so OTP never detaches it. Per-event
  work is bounded: terms are inspected with limits and only when their
  flat size is small, and text is cut to `SelfHeal.Event.max_bytes/0`.
  """

  alias SelfHeal.Event

  @handler_id :self_heal
  @reported_key {__MODULE__, :crash_reported}
  @inspect_opts [limit: 30, printable_limit: 2048, width: :infinity]
  # Above this flat size (words) a term is inspected with limits instead of
  # formatted in full.
  @format_limit 4_000
  @default_metadata [:request_id, :trace_id, :span_id, :application, :domain, :registered_name]

  @doc "Attaches the handler (idempotent)."
  @spec attach(keyword()) :: :ok | {:error, term()}
  def attach(opts \\ []) do
    config = %{level: :error, config: Map.new(opts)}

    case :logger.add_handler(@handler_id, __MODULE__, config) do
      :ok -> :ok
      {:error, {:already_exist, @handler_id}} -> :ok
      other -> other
    end
  end

  @doc "Detaches the handler (idempotent)."
  @spec detach() :: :ok
  def detach do
    _ = :logger.remove_handler(@handler_id)
    :ok
  end

  @doc "Counters: events sent, dropped (target overloaded or gone) and conversion errors."
  @spec stats() :: %{
          sent: non_neg_integer(),
          dropped: non_neg_integer(),
          errors: non_neg_integer()
        }
  def stats do
    c = counters()
    %{sent: :counters.get(c, 1), dropped: :counters.get(c, 2), errors: :counters.get(c, 3)}
  end

  defp counters do
    case :persistent_term.get({__MODULE__, :counters}, nil) do
      nil ->
        c = :counters.new(3, [:write_concurrency])
        :persistent_term.put({__MODULE__, :counters}, c)
        c

      c ->
        c
    end
  end

  # ------------------------------------------------------------------ :logger callbacks

  @doc false
  def adding_handler(%{config: cfg} = config) do
    {:ok, %{config | config: normalize_config(cfg, Map.get(config, :id))}}
  end

  def adding_handler(config), do: adding_handler(Map.put(config, :config, %{}))

  @doc false
  def changing_config(_set_or_update, _old, %{config: cfg} = new) do
    {:ok, %{new | config: normalize_config(cfg, Map.get(new, :id))}}
  end

  def changing_config(_set_or_update, _old, new), do: {:ok, new}

  @doc false
  def removing_handler(_config), do: :ok

  defp normalize_config(cfg, handler_id) do
    cfg = Map.new(cfg)
    _ = counters()

    %{
      # handler instances dedupe crash reports independently (see to_event/2)
      handler_id: handler_id,
      target: Map.get(cfg, :target, SelfHeal.Collector),
      service: cfg |> Map.get(:service, Atom.to_string(node())) |> to_string(),
      # a bare atom stands for the one-element domain [atom]
      excluded_domains:
        cfg |> Map.get(:excluded_domains, [[:self_heal]]) |> List.wrap() |> Enum.map(&List.wrap/1),
      metadata: Map.get(cfg, :metadata, @default_metadata),
      max_queue: Map.get(cfg, :max_queue, 10_000)
    }
  end

  @doc false
  def log(%{meta: meta} = log_event, %{config: cfg}) do
    if excluded?(Map.get(meta, :domain, []), cfg.excluded_domains) do
      :ok
    else
      case to_event(log_event, cfg) do
        nil -> :ok
        %Event{} = event -> deliver(event, cfg)
      end
    end
  rescue
    _ -> :counters.add(counters(), 3, 1)
  catch
    _, _ -> :counters.add(counters(), 3, 1)
  end

  def log(_log_event, _config), do: :ok

  # Elixir's Logger macros prepend :elixir to the domain they are given
  # (`Logger.error("x", domain: [:self_heal])` logs `[:elixir, :self_heal]`),
  # so an excluded prefix also matches after a leading :elixir.
  defp excluded?([:elixir | rest] = domain, excluded) do
    Enum.any?(excluded, &(List.starts_with?(domain, &1) or List.starts_with?(rest, &1)))
  end

  defp excluded?(domain, excluded) when is_list(domain) do
    Enum.any?(excluded, &List.starts_with?(domain, &1))
  end

  defp excluded?(_domain, _excluded), do: false

  defp deliver(event, cfg) do
    target = resolve(cfg.target)

    cond do
      target == nil ->
        :counters.add(counters(), 2, 1)

      overloaded?(target, cfg.max_queue) ->
        :counters.add(counters(), 2, 1)

      true ->
        send(target, {:self_heal_event, event})
        :counters.add(counters(), 1, 1)
    end

    :ok
  end

  defp resolve(pid) when is_pid(pid), do: pid
  defp resolve(name) when is_atom(name), do: Process.whereis(name)
  defp resolve(_), do: nil

  defp overloaded?(pid, max) do
    case Process.info(pid, :message_queue_len) do
      {:message_queue_len, n} -> n >= max
      nil -> true
    end
  end

  # ------------------------------------------------------------------ conversion

  @doc """
  Converts a `:logger` log event into a `SelfHeal.Event`, or nil when it is
  not one to report (a duplicate crash report, a supervisor's restart
  notice). Exposed for tests and for other handlers.
  """
  @spec to_event(:logger.log_event(), map()) :: Event.t() | nil
  def to_event(%{msg: msg, meta: meta} = log_event, cfg) do
    case classify(msg, meta) do
      :skip ->
        nil

      {:crash, fields} ->
        key = {@reported_key, Map.get(cfg, :handler_id)}

        if crash_already_reported?(meta, key) do
          nil
        else
          mark_crash_reported(meta, key)
          build(fields, log_event, cfg)
        end

      {:log, fields} ->
        build(fields, log_event, cfg)
    end
  end

  defp build(fields, %{level: level, meta: meta}, cfg) do
    {extra, fields} = Keyword.pop(fields, :extra, [])

    extra = for {k, v} <- extra, v != nil, into: %{}, do: {k, meta_value(v)}

    fields
    |> Keyword.merge(
      level: level,
      source: :logger,
      service: service(meta, cfg),
      timestamp: Map.get(meta, :time, Event.now()),
      metadata: Map.merge(metadata(meta, cfg.metadata), extra)
    )
    |> Event.new()
  end

  # logger metadata `service: "shop"` (Logger.metadata/1, a log call's
  # own) names the service, else the handler's :service
  defp service(%{service: s}, _cfg) when is_binary(s) and s != "", do: s

  defp service(%{service: s}, _cfg) when is_atom(s) and s not in [nil, true, false],
    do: Atom.to_string(s)

  defp service(_meta, cfg), do: cfg.service

  # The handler runs in the process that logs; a crashing gen_server logs
  # its terminate report and then proc_lib's crash report from that same
  # process, so the process dictionary tells the second one apart. The key
  # holds the handler id: every attached instance sees both reports and
  # must send its own one event.
  defp crash_already_reported?(%{pid: pid}, key) when pid == self(),
    do: Process.get(key, false)

  defp crash_already_reported?(_meta, _key), do: false

  defp mark_crash_reported(%{pid: pid}, key) when pid == self(), do: Process.put(key, true)
  defp mark_crash_reported(_meta, _key), do: :ok

  defp classify({:report, %{label: {behaviour, :terminate}} = report}, _meta)
       when behaviour in [:gen_server, :gen_statem, :gen_event] do
    extra = [name: Map.get(report, :name), behaviour: behaviour]
    {:crash, exit_fields(Map.get(report, :reason), extra)}
  end

  defp classify({:report, %{label: {Task.Supervisor, :terminating}, report: report}}, _meta)
       when is_map(report) do
    {:crash, exit_fields(Map.get(report, :reason), behaviour: :task)}
  end

  defp classify({:report, %{label: {:proc_lib, :crash}, report: [info | _]}}, _meta)
       when is_list(info) do
    case List.keyfind(info, :error_info, 0) do
      {:error_info, {kind, reason, stack}} ->
        {:crash, error_fields(kind, reason, stack, behaviour: :proc_lib)}

      _ ->
        :skip
    end
  end

  defp classify({:report, %{label: {:supervisor, :child_terminated}}}, _meta), do: :skip

  defp classify({:report, %{label: {:supervisor, what}, report: report}}, _meta)
       when is_list(report) do
    reason = Keyword.get(report, :reason)
    supervisor = Keyword.get(report, :supervisor)

    message = "supervisor #{safe_inspect(supervisor)} #{what}: #{format_reason(reason)}"

    {:log, [type: "supervisor #{what}", message: message]}
  end

  # The emulator reports only processes that died of an error (class :error).
  defp classify({format, [pid, reason]}, %{error_logger: %{emulator: true}})
       when is_list(format) and is_pid(pid) do
    fields =
      case reason do
        {error, stack} when is_list(stack) ->
          if stacktrace?(stack),
            do: error_fields(:error, error, stack, behaviour: :process),
            else: exit_term_fields(reason, behaviour: :process)

        _ ->
          exit_term_fields(reason, behaviour: :process)
      end

    {:crash, fields}
  end

  defp classify(msg, meta) do
    case Map.get(meta, :crash_reason) do
      {reason, stack} when is_list(stack) ->
        {:log,
         Keyword.put(error_fields(:error, reason, stack, []), :message, message_text(msg, meta))}

      _ ->
        {:log, [message: message_text(msg, meta), stacktrace: call_site(meta)]}
    end
  end

  # An exit reason as logged by gen_server/Task: {exception, stack},
  # {erlang_error, stack}, {exit_reason, stack} (OTP 25's gen_server and
  # Elixir's Task report errors and exits alike with their stack trace) or
  # any other exit term. Like Elixir's own "** (stop) ..." banner, a reason
  # that normalises only to a generic ErlangError is an exit.
  defp exit_fields({reason, stack}, extra) when is_list(stack) do
    cond do
      not stacktrace?(stack) ->
        exit_term_fields({reason, stack}, extra)

      exit_reason?(reason, stack) ->
        [type: "exit", message: format_reason(reason), stacktrace: stack, extra: extra]

      true ->
        error_fields(:error, reason, stack, extra)
    end
  end

  defp exit_fields(reason, extra), do: exit_term_fields(reason, extra)

  defp exit_reason?(reason, stack) do
    not is_exception(reason) and
      is_struct(Exception.normalize(:error, reason, stack), ErlangError)
  end

  defp exit_term_fields(reason, extra) do
    [type: "exit", message: format_reason(reason), stacktrace: nil, extra: extra]
  end

  defp error_fields(kind, reason, stack, extra) do
    fields =
      case kind do
        :error ->
          exception = Exception.normalize(:error, reason, stack)

          if is_exception(exception) do
            [type: inspect(exception.__struct__), message: exception_message(exception)]
          else
            [type: "error", message: format_reason(reason)]
          end

        kind when kind in [:exit, :throw] ->
          [type: Atom.to_string(kind), message: format_reason(reason)]

        _ ->
          [type: "error", message: format_reason(reason)]
      end

    fields ++ [stacktrace: stack, extra: extra]
  end

  defp exception_message(exception) do
    if :erts_debug.flat_size(exception) <= @format_limit do
      Exception.message(exception)
    else
      safe_inspect(exception)
    end
  rescue
    _ -> safe_inspect(exception)
  end

  defp format_reason(reason) do
    if :erts_debug.flat_size(reason) <= @format_limit do
      Exception.format_exit(reason)
    else
      safe_inspect(reason)
    end
  rescue
    _ -> safe_inspect(reason)
  end

  defp safe_inspect(term) do
    inspect(term, @inspect_opts)
  rescue
    _ -> "#<unprintable term>"
  end

  defp stacktrace?([{mod, fun, arity_or_args, location} | _])
       when is_atom(mod) and is_atom(fun) and
              (is_integer(arity_or_args) or is_list(arity_or_args)) and
              is_list(location),
       do: true

  defp stacktrace?([]), do: true
  defp stacktrace?(_), do: false

  defp call_site(%{mfa: {mod, fun, arity}} = meta) when is_atom(mod) and is_atom(fun) do
    location =
      [file: Map.get(meta, :file), line: Map.get(meta, :line)]
      |> Enum.reject(fn {_k, v} -> v == nil end)

    [{mod, fun, arity, location}]
  end

  defp call_site(_meta), do: nil

  defp message_text({:string, chardata}, _meta), do: chardata_text(chardata)

  defp message_text({:report, report}, meta) do
    case Map.get(meta, :report_cb) do
      cb when is_function(cb, 1) ->
        {format, args} = cb.(report)
        format_io(format, args)

      cb when is_function(cb, 2) ->
        chardata_text(
          cb.(report, %{depth: 30, chars_limit: Event.max_bytes(), single_line: false})
        )

      _ ->
        safe_inspect(report)
    end
  rescue
    _ -> safe_inspect(report)
  end

  defp message_text({format, args}, _meta), do: format_io(format, args)

  defp format_io(format, args) do
    format
    |> :io_lib.format(args, chars_limit: Event.max_bytes())
    |> chardata_text()
  rescue
    _ -> safe_inspect({format, args})
  end

  defp chardata_text(chardata) do
    {text, _cut?} = Event.bounded_text(chardata)
    text
  end

  defp metadata(meta, keys) do
    for key <- keys, Map.has_key?(meta, key), into: %{} do
      {key, meta_value(Map.fetch!(meta, key))}
    end
  end

  defp meta_value(v) when is_binary(v) or is_number(v) or is_atom(v), do: v
  defp meta_value(v) when is_list(v), do: Enum.take(v, 16) |> Enum.map(&meta_value/1)
  defp meta_value(v), do: safe_inspect(v)
end
