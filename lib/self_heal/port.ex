defmodule SelfHeal.Port do
  @moduledoc """
  Owns the port program `priv/self_heal_port` (docs/port-protocol.md):
  starts it, sends it the configuration, correlates replies with requests,
  forwards notifications to subscribers and restarts it when it dies.

      {:ok, pid} = SelfHeal.Port.start_link(config: %{state_dir: "/var/lib/self_heal"})
      {:ok, %{"pong" => true}} = SelfHeal.Port.call(pid, "ping")

  Options of `start_link/1`:

    * `:name` - registered name (optional)
    * `:config` - the configuration map, sent with `configure` at every
      start (atom keys become strings; default `%{}`)
    * `:executable` - path of the port program (default
      `priv/self_heal_port` of the `:self_heal` application)
    * `:env` - extra environment variables of the port program, a list of
      `{name, value}` strings (default `[]`; the tests' crash points,
      docs/state.md)
    * `:backoff_min` / `:backoff_max` - restart delay in ms (default 100
      and 30_000): the first restart waits `:backoff_min`, each further
      crash within `:stable_ms` (default 10_000) of a start doubles it
    * `:call_timeout` - default timeout of `call/4` in ms (default 60_000)
    * `:retry_safe` - commands re-sent after a crash (default
      `retry_safe/0`)
    * `:max_pending` - requests in flight at most (default 100_000);
      beyond it `call/4` returns `{:error, :overloaded}`
    * `:escalate_batch_ms` (default 5_000) and `:escalate_batch_max`
      (default 100): escalated groups are collected for this long (or up
      to this many) and sent as one `escalate` request, so that the groups
      of one cascade (a database outage and its downstream errors, which
      settle within seconds of each other) are analysed together (with a
      service registry, one request per service, `docs/services.md`); while
      the port is down they wait (at most `:escalate_batch_max` x 10,
      oldest dropped and logged); while automation is paused (the port
      answers `paused`, `mix self_heal.pause`) they wait the same way and
      go once it is resumed
    * `:await_configure` - `false` (default) or a timeout in ms: `start_link/1`
      waits that long for the first `configure` reply and fails with
      `{:bad_config, message}` when the port refuses the configuration
      (the application starts it so: a configuration the port cannot use
      stops the start); a slower answer is awaited as usual

  Failures the port reports while it runs are logged, not only audited: a
  ticket that could not be filed or a notification channel that failed
  (error), an analysis that fell back to offline (warning), a fix that did
  not start (warning).

  `call/4` returns `{:ok, map}`, `{:error, %{code: code, message: message}}`
  (the port's error, both binaries), `{:error, :timeout}`,
  `{:error, :port_restarting}` (the port is down, waiting for its
  restart), `{:error, :port_crashed}` (it died with the request in flight
  and the command is not safe to repeat) or `{:error, :overloaded}`.

  Replies can arrive out of order (the port runs commands on worker
  threads); each request carries an id. When the port dies, requests in
  flight whose command is in the retry-safe list (idempotent commands) are
  sent again, with their original deadline, right after `configure` once
  the port is back.

  `subscribe/1` makes the caller receive `{:self_heal_port, event}` for
  every notification frame of the port (`event` is the decoded map with
  its `"event"` key) and for these events of this module:
  `%{"event" => "port_exited", "status" => status}`,
  `%{"event" => "port_configured", "restarts" => n}` (the `configure`
  reply arrived; `n` restarts so far) and
  `%{"event" => "port_configure_failed", "error" => error}`.

  It also implements `SelfHeal.Orchestrator` without waiting for the
  replies: `escalate/2` collects groups (`analysis_group/1`) and sends them
  as one `escalate` request `%{"groups" => [...]}`; `update/2` sends
  `update` with `%{"fingerprint", "count", "last_seen", "reason"}`. A
  failing reply is logged (an `unknown_command` only once per command).
  """
  @behaviour SelfHeal.Orchestrator
  use GenServer

  alias SelfHeal.JSON

  require Logger

  @retry_safe ~w(version ping analyze ticket_upsert escalate jobs verify-audit)
  @max_frame 8 * 1024 * 1024
  @max_depth 32

  @type error ::
          %{code: binary(), message: binary()}
          | :timeout
          | :port_restarting
          | :port_crashed
          | :overloaded

  @doc "Commands re-sent after a crash by default: idempotent ones (never `notify`)."
  @spec retry_safe() :: [binary()]
  def retry_safe, do: @retry_safe

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    case Keyword.pop(opts, :name) do
      {nil, opts} -> GenServer.start_link(__MODULE__, opts)
      {name, opts} -> GenServer.start_link(__MODULE__, opts, name: name)
    end
  end

  def child_spec(opts) do
    %{id: Keyword.get(opts, :name, __MODULE__), start: {__MODULE__, :start_link, [opts]}}
  end

  @doc """
  Sends `cmd` with `args` (a map) and waits for the reply, at most
  `timeout` ms (default: the server's `:call_timeout`).
  """
  @spec call(GenServer.server(), binary(), map(), timeout() | nil) ::
          {:ok, map()} | {:error, error()}
  def call(server, cmd, args \\ %{}, timeout \\ nil) when is_binary(cmd) and is_map(args) do
    GenServer.call(server, {:call, cmd, args, timeout}, :infinity)
  end

  @doc "Sends `cmd` without waiting; a failing reply is logged."
  @spec cast(GenServer.server(), binary(), map()) :: :ok
  def cast(server, cmd, args \\ %{}) when is_binary(cmd) and is_map(args) do
    GenServer.cast(server, {:cast, cmd, args})
  end

  @doc "Notifications go to the caller as `{:self_heal_port, event}` until it exits."
  @spec subscribe(GenServer.server()) :: :ok
  def subscribe(server), do: GenServer.call(server, {:subscribe, self()})

  @spec unsubscribe(GenServer.server()) :: :ok
  def unsubscribe(server), do: GenServer.call(server, {:unsubscribe, self()})

  @doc """
  The OS pid of the running port program, or nil while it is down: its
  watchdog process, whose child serves (docs/architecture.md, "Process
  lifetime").
  """
  @spec os_pid(GenServer.server()) :: non_neg_integer() | nil
  def os_pid(server), do: GenServer.call(server, :os_pid)

  @doc """
  The settled groups waiting here to be sent in an `escalate` request: the
  batch being collected, and the groups kept while the port is down or
  automation is paused (the dashboard's escalations pending).
  """
  @spec escalations_pending(GenServer.server()) :: non_neg_integer()
  def escalations_pending(server), do: GenServer.call(server, :escalations_pending)

  @impl SelfHeal.Orchestrator
  def escalate(server, group), do: GenServer.cast(server, {:escalate, analysis_group(group)})

  @doc """
  The collector saw `fingerprint` again `count` times while a deployed fix
  of it is being verified (the port rolls the fix back). `track` is
  `"stable"` or `"canary"` (events of a canary deploy); `fingerprint` `"*"`
  counts every error event while a canary is watched (docs/fix-loop.md).
  """
  @spec recurrence(GenServer.server(), String.t(), pos_integer(), String.t()) :: :ok
  def recurrence(server, fingerprint, count, track \\ "stable")
      when is_binary(fingerprint) and is_integer(count) and count > 0 and
             track in ["stable", "canary"],
      do:
        cast(server, "recurrence", %{
          "fingerprint" => fingerprint,
          "count" => count,
          "track" => track
        })

  @impl SelfHeal.Orchestrator
  def update(server, {group, reason}) do
    cast(server, "update", %{
      "fingerprint" => group.fingerprint,
      "count" => group.count,
      "last_seen" => wire_field(:last_seen, Map.get(group, :last_seen), 0),
      "reason" => inspect(reason),
      "service" => group_service(group)
    })
  end

  # the service of a settled group: its sample's, else the first it saw
  defp group_service(group) do
    sample = Map.get(group, :sample) || %{}
    wire(Map.get(sample, :service) || List.first(Map.get(group, :services) || []))
  end

  @doc """
  A settled group in the form the port's analysis reads (`docs/analysis.md`):
  `id` (the fingerprint), `type`, `message` (the sample's), `normalized`,
  `stacktrace` (text), `count`, `first_seen`/`last_seen` (Unix ms),
  `service`, `severity`, `frames` (the top in-app frame), `path`,
  `samples`.
  """
  @spec analysis_group(map()) :: map()
  def analysis_group(group) do
    sample = Map.get(group, :sample) || %{}
    meta = (is_map(sample) && Map.get(sample, :metadata)) || %{}
    frame = Map.get(group, :top_frame)

    %{
      "id" => group.fingerprint,
      "type" => wire(Map.get(group, :type)),
      "message" => wire(Map.get(sample, :message)),
      "normalized" => wire(Map.get(group, :normalized)),
      "stacktrace" => wire_field(:stacktrace, Map.get(sample, :stacktrace), 0),
      "count" => group.count,
      "first_seen" => wire_field(:first_seen, Map.get(group, :first_seen), 0),
      "last_seen" => wire_field(:last_seen, Map.get(group, :last_seen), 0),
      "service" => group_service(group),
      "severity" => wire(Map.get(group, :severity)),
      "frames" => if(is_map(frame), do: [wire(frame)], else: []),
      "path" => wire(meta_value(meta, :path) || meta_value(meta, :request_path)),
      "samples" => Enum.reject([wire(Map.get(sample, :message))], &is_nil/1),
      "trace_ids" => trace_ids(meta)
    }
  end

  # The sample's request and trace ids: evidence that ties groups raised
  # in one request or one trace together (docs/analysis.md).
  @trace_keys [:request_id, :trace_id, :correlation_id, :otel_trace_id, :"x-request-id"]

  defp trace_ids(meta) when is_map(meta) do
    for key <- @trace_keys,
        value = meta_value(meta, key),
        is_binary(value) or is_integer(value),
        uniq: true,
        do: to_string(value)
  end

  defp trace_ids(_meta), do: []

  defp meta_value(meta, key) when is_map(meta),
    do: Map.get(meta, key) || Map.get(meta, Atom.to_string(key))

  defp meta_value(_meta, _key), do: nil

  # ------------------------------------------------------------ wire form

  @doc """
  A settled group as JSON-ready data: keys become strings, atoms strings,
  tuples lists; `first_seen`, `last_seen` and `timestamp` (microseconds in
  the BEAM) become Unix milliseconds; an Erlang stack trace becomes its
  text (`Exception.format_stacktrace/1`); pids, references and functions
  their `inspect/1` text; integers beyond 64 bits strings. Nesting deeper
  than #{@max_depth} levels is cut to its `inspect/1` text.
  """
  @spec wire_group(map()) :: map()
  def wire_group(group) when is_map(group), do: wire(group, 0)

  @doc "Any term as JSON-ready data (as `wire_group/1`, for any term)."
  @spec wire(term()) :: term()
  def wire(term), do: wire(term, 0)

  @time_keys [:first_seen, :last_seen, :timestamp]

  defp wire(term, depth) when depth > @max_depth, do: inspect(term, limit: 20)
  defp wire(%{__struct__: _} = s, depth), do: wire(Map.from_struct(s), depth)

  defp wire(map, depth) when is_map(map) do
    Map.new(map, fn {k, v} -> {wire_key(k), wire_field(k, v, depth + 1)} end)
  end

  defp wire(list, depth) when is_list(list) do
    if List.improper?(list), do: inspect(list), else: Enum.map(list, &wire(&1, depth + 1))
  end

  defp wire(tuple, depth) when is_tuple(tuple), do: wire(Tuple.to_list(tuple), depth)
  defp wire(b, _) when is_boolean(b) or is_nil(b), do: b
  defp wire(a, _) when is_atom(a), do: Atom.to_string(a)

  defp wire(i, _) when is_integer(i) and i >= -0x8000000000000000 and i <= 0x7FFFFFFFFFFFFFFF,
    do: i

  defp wire(i, _) when is_integer(i), do: Integer.to_string(i)
  defp wire(x, _) when is_binary(x) or is_float(x), do: x
  defp wire(other, _), do: inspect(other)

  defp wire_field(k, v, _depth) when k in @time_keys and is_integer(v), do: div(v, 1000)

  defp wire_field(k, v, depth) when k in [:stacktrace, :stack] and is_list(v) do
    Exception.format_stacktrace(v)
  rescue
    _ -> wire(v, depth)
  end

  defp wire_field(_k, v, depth), do: wire(v, depth)

  defp wire_key(k) when is_binary(k), do: k
  defp wire_key(k) when is_atom(k), do: Atom.to_string(k)
  defp wire_key(k) when is_integer(k), do: Integer.to_string(k)
  defp wire_key(k), do: inspect(k)

  # ------------------------------------------------------------ server

  @impl GenServer
  def init(opts) do
    Process.flag(:trap_exit, true)
    exe = Keyword.get_lazy(opts, :executable, &default_executable/0)

    if File.regular?(exe) do
      state = %{
        exe: exe,
        env: for({k, v} <- Keyword.get(opts, :env, []), do: {to_charlist(k), to_charlist(v)}),
        config: wire(Keyword.get(opts, :config, %{})),
        backoff_min: Keyword.get(opts, :backoff_min, 100),
        backoff_max: Keyword.get(opts, :backoff_max, 30_000),
        stable_ms: Keyword.get(opts, :stable_ms, 10_000),
        call_timeout: Keyword.get(opts, :call_timeout, 60_000),
        retry_safe: MapSet.new(Keyword.get(opts, :retry_safe, @retry_safe)),
        max_pending: Keyword.get(opts, :max_pending, 100_000),
        port: nil,
        os_pid: nil,
        started_at: nil,
        backoff: nil,
        restarts: 0,
        next_id: 1,
        # id => %{from: from | :cast | :configure, cmd, frame, timer}
        pending: %{},
        subscribers: %{},
        unknown_logged: MapSet.new(),
        escalate_batch_ms: Keyword.get(opts, :escalate_batch_ms, 5_000),
        escalate_batch_max: Keyword.get(opts, :escalate_batch_max, 100),
        escalations: [],
        escalate_timer: nil,
        paused_logged: false,
        verify_table: verify_table(Keyword.get(opts, :verify_table))
      }

      with {:ok, state} <- open(state),
           {:ok, state} <- await_configure(state, Keyword.get(opts, :await_configure, false)) do
        {:ok, state}
      else
        {:error, reason} -> {:stop, reason}
      end
    else
      {:stop, {:no_executable, exe}}
    end
  end

  # One `escalate` request for the collected groups; kept while the port
  # is down (bounded) and flushed again once it is back.
  defp flush_escalations(%{escalations: []} = state), do: state

  defp flush_escalations(%{port: nil} = state) do
    limit = state.escalate_batch_max * 10

    if length(state.escalations) > limit do
      Logger.error(
        "self_heal: port down, #{length(state.escalations) - limit} escalations dropped",
        domain: [:self_heal]
      )
    end

    timer = Process.send_after(self(), :flush_escalations, state.escalate_batch_ms)
    %{state | escalations: Enum.take(state.escalations, limit), escalate_timer: timer}
  end

  defp flush_escalations(state) do
    if state.escalate_timer, do: Process.cancel_timer(state.escalate_timer)
    groups = Enum.reverse(state.escalations)
    state = %{state | escalations: [], escalate_timer: nil}
    SelfHeal.Telemetry.emit([:self_heal, :escalate], %{groups: length(groups)})

    groups
    |> per_service(state.config)
    |> Enum.flat_map(&Enum.chunk_every(&1, state.escalate_batch_max))
    |> Enum.reduce(state, fn chunk, acc ->
      case request(:cast, "escalate", %{"groups" => chunk}, acc.call_timeout, acc) do
        {:noreply, acc} -> acc
        {:reply, {:error, reason}, acc} -> log_failure("escalate", reason, acc)
      end
    end)
  end

  # With a service registry one escalation holds one service's groups:
  # the port runs it in that service's configuration (docs/services.md).
  defp per_service(groups, config) do
    if SelfHeal.Service.new(config) == nil,
      do: [groups],
      else: groups |> Enum.group_by(& &1["service"]) |> Map.values()
  end

  defp default_executable, do: Path.join(:code.priv_dir(:self_heal), "self_heal_port")

  # The first `configure` reply, awaited in init: a refusal stops the
  # start. Other frames that come first are handled once init is done.
  defp await_configure(state, false), do: {:ok, state}

  defp await_configure(state, timeout) when is_integer(timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    await_configure(state, deadline, [])
  end

  defp await_configure(%{port: port} = state, deadline, held) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, frame}} = msg ->
        case JSON.decode(frame) do
          {:ok, %{"id" => id} = reply} when is_map_key(state.pending, id) ->
            case {state.pending[id].from, result(reply)} do
              {:configure, {:error, error}} ->
                Port.close(port)
                message = "the port refused its configuration: #{error.code}: #{error.message}"
                Logger.error("self_heal: " <> message, domain: [:self_heal])
                {:error, {:bad_config, message}}

              {:configure, {:ok, _}} ->
                resend_held(held)
                {:ok, reply(id, reply, state)}

              _ ->
                await_configure(state, deadline, [msg | held])
            end

          _ ->
            await_configure(state, deadline, [msg | held])
        end

      {^port, {:exit_status, status}} ->
        {:error, {:bad_config, "the port program exited (#{status}) before it was configured"}}
    after
      left ->
        resend_held(held)
        {:ok, state}
    end
  end

  defp resend_held(held), do: held |> Enum.reverse() |> Enum.each(&send(self(), &1))

  @impl GenServer
  def handle_call({:call, cmd, args, timeout}, from, state) do
    request(from, cmd, args, timeout || state.call_timeout, state)
  end

  def handle_call({:subscribe, pid}, _from, state) do
    subs =
      if Map.has_key?(state.subscribers, pid),
        do: state.subscribers,
        else: Map.put(state.subscribers, pid, Process.monitor(pid))

    {:reply, :ok, %{state | subscribers: subs}}
  end

  def handle_call({:unsubscribe, pid}, _from, state) do
    {ref, subs} = Map.pop(state.subscribers, pid)
    if ref, do: Process.demonitor(ref, [:flush])
    {:reply, :ok, %{state | subscribers: subs}}
  end

  def handle_call(:os_pid, _from, state), do: {:reply, state.os_pid, state}

  def handle_call(:escalations_pending, _from, state),
    do: {:reply, length(state.escalations), state}

  @impl GenServer
  def handle_cast({:escalate, group}, state) do
    state = %{state | escalations: [group | state.escalations]}

    cond do
      length(state.escalations) >= state.escalate_batch_max ->
        {:noreply, flush_escalations(state)}

      state.escalate_timer == nil ->
        timer = Process.send_after(self(), :flush_escalations, state.escalate_batch_ms)
        {:noreply, %{state | escalate_timer: timer}}

      true ->
        {:noreply, state}
    end
  end

  def handle_cast({:cast, cmd, args}, state) do
    case request(:cast, cmd, args, state.call_timeout, state) do
      {:noreply, state} -> {:noreply, state}
      {:reply, {:error, reason}, state} -> {:noreply, log_failure(cmd, reason, state)}
    end
  end

  @impl GenServer
  def handle_info({port, {:data, frame}}, %{port: port} = state) do
    case JSON.decode(frame) do
      {:ok, %{"id" => id} = msg} when is_integer(id) -> {:noreply, reply(id, msg, state)}
      {:ok, %{"event" => _} = event} -> {:noreply, notify(event, state)}
      {:ok, %{"id" => nil, "error" => error}} -> {:noreply, log_protocol_error(error, state)}
      _ -> {:noreply, log_protocol_error(%{"message" => "undecodable frame"}, state)}
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    {:noreply, crashed(status, state)}
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    {:noreply, crashed(reason, state)}
  end

  def handle_info({:EXIT, _other, _reason}, state), do: {:noreply, state}

  def handle_info(:restart, state) do
    case open(state) do
      {:ok, state} ->
        {:noreply, state}

      {:error, reason} ->
        Logger.error("self_heal: cannot start the port program: #{inspect(reason)}",
          domain: [:self_heal]
        )

        {:noreply, schedule_restart(state)}
    end
  end

  def handle_info(:flush_escalations, state),
    do: {:noreply, flush_escalations(%{state | escalate_timer: nil})}

  def handle_info({:request_timeout, id}, state) do
    case Map.pop(state.pending, id) do
      {nil, _} ->
        {:noreply, state}

      {req, pending} ->
        answer(req, {:error, :timeout})
        state = %{state | pending: pending}
        {:noreply, if(req.from == :cast, do: log_failure(req.cmd, :timeout, state), else: state)}
    end
  end

  def handle_info({:DOWN, ref, :process, pid, _}, state) do
    case state.subscribers do
      %{^pid => ^ref} -> {:noreply, %{state | subscribers: Map.delete(state.subscribers, pid)}}
      _ -> {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl GenServer
  def terminate(_reason, %{port: port}) when is_port(port) do
    # Closing stdin is the port's signal to stop its children and exit.
    Port.close(port)
  catch
    _, _ -> :ok
  end

  def terminate(_reason, _state), do: :ok

  # ------------------------------------------------------------ internals

  defp request(_from, _cmd, _args, _timeout, %{port: nil} = state),
    do: {:reply, {:error, :port_restarting}, state}

  defp request(_from, _cmd, _args, _timeout, state)
       when map_size(state.pending) >= state.max_pending,
       do: {:reply, {:error, :overloaded}, state}

  defp request(from, cmd, args, timeout, state) do
    id = state.next_id
    state = %{state | next_id: id + 1}

    case encode_request(id, cmd, args) do
      {:ok, frame} ->
        send_frame(state.port, frame)

        timer =
          if timeout != :infinity,
            do: Process.send_after(self(), {:request_timeout, id}, timeout)

        req = %{from: from, cmd: cmd, frame: frame, timer: timer}
        {:noreply, %{state | pending: Map.put(state.pending, id, req)}}

      {:error, error} ->
        {:reply, {:error, error}, state}
    end
  end

  defp encode_request(id, cmd, args) do
    frame = JSON.encode!(%{"id" => id, "cmd" => cmd, "args" => args})

    if byte_size(frame) > @max_frame,
      do: {:error, %{code: "frame_too_large", message: "request over 8 MiB not sent"}},
      else: {:ok, frame}
  rescue
    e in ArgumentError -> {:error, %{code: "bad_args", message: Exception.message(e)}}
  end

  # A port that just died raises here; its exit message follows and
  # settles the request.
  defp send_frame(port, frame) do
    Port.command(port, frame)
  rescue
    ArgumentError -> false
  end

  defp reply(id, msg, state) do
    case Map.pop(state.pending, id) do
      {nil, _} ->
        state

      {req, pending} ->
        if req.timer, do: Process.cancel_timer(req.timer)
        state = %{state | pending: pending}
        result = result(msg)

        case {req.from, result} do
          {:configure, _} ->
            configured(result, state)

          {:cast, {:ok, result}} ->
            SelfHeal.Telemetry.port_reply(req.cmd, result)
            if req.cmd == "escalate", do: log_escalation(result)
            %{state | paused_logged: false}

          {:cast, {:error, %{code: "paused"}}} when req.cmd == "escalate" ->
            hold_paused(req, state)

          {:cast, {:error, error}} ->
            log_failure(req.cmd, error, state)

          {from, _} ->
            GenServer.reply(from, result)
            state
        end
    end
  end

  defp result(%{"ok" => ok}) when is_map(ok), do: {:ok, ok}

  defp result(%{"error" => %{"code" => code} = e}) when is_binary(code),
    do: {:error, %{code: code, message: to_string(Map.get(e, "message", ""))}}

  defp result(_), do: {:error, %{code: "bad_reply", message: "reply without ok or error"}}

  defp answer(%{from: from}, result) when from not in [:cast, :configure],
    do: GenServer.reply(from, result)

  defp answer(_req, _result), do: :ok

  defp configured({:ok, reply}, state) do
    # said once per start, where operators look: a fix loop that runs no
    # agent, or one that runs agents unconfined
    if state.restarts == 0, do: log_fix_loop(reply["fix"])
    log_audit(reply["audit"])
    notify(%{"event" => "port_configured", "restarts" => state.restarts}, state)
  end

  defp configured({:error, error}, state) do
    Logger.error("self_heal: the port refused its configuration: #{error.message}",
      domain: [:self_heal]
    )

    notify(
      %{
        "event" => "port_configure_failed",
        "error" => %{"code" => error.code, "message" => error.message}
      },
      state
    )
  end

  defp log_fix_loop(%{"sandbox" => "unavailable", "error" => error}) do
    Logger.error("self_heal: #{error}", domain: [:self_heal])
  end

  defp log_fix_loop(%{"sandbox" => "none"}) do
    Logger.warning(
      "self_heal: fix.sandbox.mode is \"none\": coding agents run unconfined, " <>
        "as the service's own user; no fix deploys without a human",
      domain: [:self_heal]
    )
  end

  defp log_fix_loop(_status), do: :ok

  # What went wrong in an escalation (the job is done either way): a
  # ticket not filed, a channel not reached, an analysis that fell back.
  defp log_escalation(%{} = result) do
    case get_in(result, ["analysis", "fallback"]) do
      why when is_binary(why) ->
        Logger.warning("self_heal: analysis fell back to offline: #{why}", domain: [:self_heal])

      _ ->
        :ok
    end

    for %{"error" => code} = t <- List.wrap(result["tickets"]) do
      Logger.error("self_heal: a ticket could not be filed: #{code}: #{t["message"]}",
        domain: [:self_heal]
      )
    end

    for sent <- List.wrap(result["notifications"]),
        is_map(sent),
        {channel, %{"ok" => false} = r} <- sent do
      Logger.error("self_heal: notification on #{channel} failed: #{r["error"]}",
        domain: [:self_heal]
      )
    end

    :ok
  end

  defp log_escalation(_result), do: :ok

  # Automation is paused: the groups wait (bounded, as while the port is
  # down) and are sent again until it is resumed.
  defp hold_paused(req, state) do
    groups =
      case JSON.decode(req.frame) do
        {:ok, %{"args" => %{"groups" => groups}}} when is_list(groups) -> groups
        _ -> []
      end

    unless state.paused_logged do
      Logger.warning(
        "self_heal: automation is paused: escalations wait until it is resumed " <>
          "(mix self_heal.resume)",
        domain: [:self_heal]
      )
    end

    limit = state.escalate_batch_max * 10
    waiting = state.escalations ++ Enum.reverse(groups)

    if length(waiting) > limit do
      Logger.error(
        "self_heal: automation paused, #{length(waiting) - limit} escalations dropped",
        domain: [:self_heal]
      )
    end

    timer =
      state.escalate_timer ||
        Process.send_after(self(), :flush_escalations, state.escalate_batch_ms)

    %{
      state
      | escalations: Enum.take(waiting, limit),
        escalate_timer: timer,
        paused_logged: true
    }
  end

  # What opening the audit log changed (a break is logged from its
  # `audit_broken` event): a repair after a crash, a new key.
  defp log_audit(%{} = audit) do
    if is_binary(audit["repaired"]) do
      Logger.warning("self_heal: the audit log was repaired when opened: #{audit["repaired"]}",
        domain: [:self_heal]
      )
    end

    if audit["key_changed"] == true do
      Logger.warning(
        "self_heal: the audit log changed keys (an audit_key_changed record): expected once " <>
          "after audit.key_env is set or changed, otherwise check the log",
        domain: [:self_heal]
      )
    end

    :ok
  end

  defp log_audit(_status), do: :ok

  defp notify(event, state) do
    SelfHeal.Telemetry.port_event(event)
    state = act_on(event, state)
    for pid <- Map.keys(state.subscribers), do: send(pid, {:self_heal_port, event})
    state
  end

  # Events the port program asks this side to act on: a fingerprint under
  # verification (the collector reports its recurrences through the
  # table, with the system time in microseconds at which this side heard
  # of it: the action or deploy was done by then), and a button pressed in
  # Telegram (an approval for a fix).
  defp act_on(%{"event" => "verify", "fingerprint" => fp, "until" => until}, state)
       when is_binary(fp) do
    if state.verify_table,
      do: :ets.insert(state.verify_table, {fp, until, System.os_time(:microsecond)})

    state
  end

  defp act_on(%{"event" => "verify_end", "fingerprint" => fp}, state) when is_binary(fp) do
    if state.verify_table, do: :ets.delete(state.verify_table, fp)
    state
  end

  defp act_on(%{"event" => "approval", "action" => action, "action_id" => id} = event, state)
       when action in ["approve", "skip"] and is_binary(id) do
    by = "telegram:" <> to_string(Map.get(event, "from") || "unknown")

    case request(:cast, action, %{"id" => id, "by" => by}, state.call_timeout, state) do
      {:noreply, state} -> state
      {:reply, {:error, reason}, state} -> log_failure(action, reason, state)
    end
  end

  # The audit log's chain was broken (at configure, or found by an
  # append): the port moved it aside and started a new chain.
  defp act_on(%{"event" => "audit_broken", "error" => error}, state) when is_binary(error) do
    Logger.error("self_heal: #{error}", domain: [:self_heal])
    state
  end

  defp act_on(%{"event" => "fix_not_started", "reason" => why} = e, state) do
    Logger.warning("self_heal: no fix started for #{e["fingerprint"]}: #{why}",
      domain: [:self_heal]
    )

    state
  end

  defp act_on(_event, state), do: state

  defp verify_table(nil), do: nil

  defp verify_table(name) when is_atom(name) do
    if :ets.whereis(name) == :undefined,
      do: :ets.new(name, [:named_table, :public, :set, read_concurrency: true])

    name
  end

  defp log_failure(cmd, %{code: "unknown_command"}, state) do
    if MapSet.member?(state.unknown_logged, cmd) do
      state
    else
      Logger.warning("self_heal: the port has no command #{inspect(cmd)} yet",
        domain: [:self_heal]
      )

      %{state | unknown_logged: MapSet.put(state.unknown_logged, cmd)}
    end
  end

  defp log_failure(cmd, reason, state) do
    text = if is_map(reason), do: "#{reason.code}: #{reason.message}", else: inspect(reason)
    Logger.warning("self_heal: port command #{cmd} failed: #{text}", domain: [:self_heal])
    state
  end

  defp log_protocol_error(error, state) do
    Logger.warning("self_heal: port protocol error: #{inspect(error)}", domain: [:self_heal])
    state
  end

  defp open(state) do
    port =
      Port.open({:spawn_executable, state.exe}, [
        {:packet, 4},
        {:env, state.env},
        :binary,
        :exit_status,
        :use_stdio
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    state = %{state | port: port, os_pid: os_pid, started_at: System.monotonic_time(:millisecond)}
    {:ok, send_configure(state) |> resend_in_flight()}
  rescue
    e -> {:error, Exception.message(e)}
  end

  defp send_configure(state) do
    id = state.next_id
    frame = JSON.encode!(%{"id" => id, "cmd" => "configure", "args" => state.config})
    send_frame(state.port, frame)
    req = %{from: :configure, cmd: "configure", frame: frame, timer: nil}
    %{state | next_id: id + 1, pending: Map.put(state.pending, id, req)}
  end

  # Requests kept over a crash (retry-safe ones) go again, in id order,
  # after `configure`.
  defp resend_in_flight(state) do
    state.pending
    |> Enum.filter(fn {_id, req} -> req.from != :configure end)
    |> Enum.sort_by(&elem(&1, 0))
    |> Enum.each(fn {_id, req} -> send_frame(state.port, req.frame) end)

    state
  end

  defp crashed(status, state) do
    uptime = System.monotonic_time(:millisecond) - (state.started_at || 0)
    Logger.error("self_heal: the port program exited (#{inspect(status)})", domain: [:self_heal])

    {keep, lost} =
      state.pending
      |> Enum.reject(fn {_id, req} -> req.from == :configure end)
      |> Enum.split_with(fn {_id, req} -> MapSet.member?(state.retry_safe, req.cmd) end)

    for {_id, req} <- lost do
      if req.timer, do: Process.cancel_timer(req.timer)
      answer(req, {:error, :port_crashed})
    end

    pending = Map.new(keep)

    backoff =
      cond do
        state.backoff == nil or uptime >= state.stable_ms -> state.backoff_min
        true -> min(state.backoff * 2, state.backoff_max)
      end

    state = %{state | port: nil, os_pid: nil, pending: pending, backoff: backoff}
    state = notify(%{"event" => "port_exited", "status" => wire(status)}, state)
    schedule_restart(state, backoff)
  end

  # Opening failed: wait longer each time.
  defp schedule_restart(state) do
    backoff = min((state.backoff || state.backoff_min) * 2, state.backoff_max)
    schedule_restart(%{state | backoff: backoff}, backoff)
  end

  defp schedule_restart(state, delay) do
    Process.send_after(self(), :restart, delay)
    %{state | restarts: state.restarts + 1}
  end
end
