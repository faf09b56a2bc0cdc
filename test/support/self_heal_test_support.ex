defmodule SelfHeal.TestSupport do
  @moduledoc false
  # Shared helpers of the ExUnit suites: event builders (the same frames as
  # an Erlang term stack trace or as Elixir text), a varied event corpus and
  # a test-owned logger handler.

  import ExUnit.Assertions

  @typedoc "{module, function, arity, file, line}"
  @type frame :: {module(), atom(), non_neg_integer(), binary(), pos_integer()}

  @doc "Frames as an Erlang stack trace (list of stack entries)."
  @spec term_stack([frame()]) :: list()
  def term_stack(frames) do
    for {mod, fun, arity, file, line} <- frames do
      {mod, fun, arity, [file: String.to_charlist(file), line: line]}
    end
  end

  @doc "Frames as Elixir prints them (`Exception.format_stacktrace/1`)."
  @spec text_stack([frame()]) :: binary()
  def text_stack(frames), do: Exception.format_stacktrace(term_stack(frames))

  @doc "An event with the frames in the given stack kind (:term or :text)."
  @spec event(binary() | nil, binary(), [frame()], :term | :text) :: map()
  def event(type, message, frames, kind) do
    stack =
      case kind do
        :term -> term_stack(frames)
        :text -> text_stack(frames)
      end

    %{type: type, message: message, stacktrace: stack}
  end

  @doc "Fingerprint of an event with the default configuration."
  def fp(event, config \\ nil), do: SelfHeal.Native.fingerprint(event, config).fingerprint

  @doc """
  A deterministic, varied list of `n` events: term stacks, text stacks
  (Elixir, JavaScript, Python, Java), no stack, atom and nil types,
  messages with ids, pids, UUIDs and timestamps, `SelfHeal.Event` structs.
  """
  @spec varied_events(non_neg_integer()) :: [map()]
  def varied_events(n) do
    for i <- 0..(n - 1)//1, do: varied_event(i)
  end

  @modules [MyApp.Worker, MyApp.Repo, MyApp.Billing, :my_erl_mod, MyApp.Web.Controller]
  @functions [:handle_call, :run, :charge, :init, :index]
  @types ["RuntimeError", "KeyError", "exit", "ArgumentError", nil, :"Elixir.MatchError"]

  def varied_event(i) do
    mod = Enum.at(@modules, rem(i, length(@modules)))
    fun = Enum.at(@functions, rem(div(i, 5), length(@functions)))
    type = Enum.at(@types, rem(i, length(@types)))

    frames = [
      {mod, fun, rem(i, 4), "lib/my_app/#{fun}.ex", 10 + rem(i, 97)},
      {MyApp.Repo, :get, 2, "lib/my_app/repo.ex", 20 + rem(i, 13)},
      {:gen_server, :try_handle_call, 4, "gen_server.erl", 1149}
    ]

    message =
      case rem(i, 7) do
        0 -> "user #{i} not found"
        1 -> "order #{i * 31} failed at 2024-05-0#{rem(i, 9) + 1}T12:00:#{rem(i, 50) + 10}Z"
        2 -> "process #PID<0.#{i}.0> exited: :normal"
        3 -> "request 5d41402a-bc4b-4a5e-9f0e-#{String.pad_leading("#{i}", 12, "0")} timed out"
        4 -> "connection to 10.0.#{rem(i, 250)}.#{rem(i, 200)}:5432 refused"
        5 -> "boom"
        6 -> "héllo wörld #{i} ✓"
      end

    case rem(i, 6) do
      0 ->
        event(type, message, frames, :term)

      1 ->
        event(type, message, frames, :text)

      2 ->
        %{type: type, message: message, stacktrace: nil}

      3 ->
        %{
          type: "TypeError",
          message: message,
          stacktrace:
            "TypeError: x is undefined\n    at render (https://cdn.example.com/app.3f9a2b1c.js:1:#{i})\n" <>
              "    at main (https://cdn.example.com/main.js:10:5)\n"
        }

      4 ->
        SelfHeal.Event.new(type: type, message: message, stacktrace: term_stack(frames))

      5 ->
        %{
          type: "ValueError",
          message: message,
          stacktrace:
            "Traceback (most recent call last):\n  File \"/srv/app/views.py\", line #{i}, in index\n" <>
              "    return int(x)\nValueError: bad\n"
        }
    end
  end

  # ------------------------------------------------------------ scheduling

  @doc """
  Runs `fun` with one normal scheduler online (the others taken offline
  and put back after, also when it raises): a NIF that blocks its scheduler
  then blocks every process.
  """
  def with_one_scheduler(fun) do
    old = :erlang.system_flag(:schedulers_online, 1)
    ExUnit.Callbacks.on_exit(fn -> :erlang.system_flag(:schedulers_online, old) end)

    try do
      fun.()
    after
      :erlang.system_flag(:schedulers_online, old)
    end
  end

  @doc """
  Runs `fun` while a process ticks every millisecond; returns `{result,
  %{max_gap_ms:, batch_ms:, ticks:}}`: how long the call took, the ticks
  seen during it and the longest gap between them (with one scheduler
  online: the longest the call kept the ticker from running).
  """
  def while_ticking(fun) do
    parent = self()
    ticker = spawn_link(fn -> tick(parent, []) end)
    assert_receive :ticking, 1_000
    t0 = System.monotonic_time(:microsecond)
    result = fun.()
    t1 = System.monotonic_time(:microsecond)
    send(ticker, {:stop, self()})
    assert_receive {:ticks, ticks}, 5_000

    in_window = ticks |> Enum.filter(&(&1 > t0 and &1 < t1)) |> Enum.sort()
    points = [t0 | in_window] ++ [t1]
    max_gap = points |> Enum.zip(tl(points)) |> Enum.map(fn {a, b} -> b - a end) |> Enum.max()

    {result, %{max_gap_ms: max_gap / 1000, batch_ms: (t1 - t0) / 1000, ticks: length(in_window)}}
  end

  defp tick(parent, acc) do
    if acc == [], do: send(parent, :ticking)

    receive do
      {:stop, from} -> send(from, {:ticks, acc})
    after
      1 -> tick(parent, [System.monotonic_time(:microsecond) | acc])
    end
  end

  # ------------------------------------------------------------ logger

  @doc "A unique atom, for handler ids and process names."
  def unique_name(prefix) do
    :"#{prefix}_#{System.unique_integer([:positive])}"
  end

  @doc """
  Attaches a SelfHeal.LoggerHandler instance sending to `target` (default:
  the calling process); removed when the test exits. Returns its id.
  """
  def attach_handler(config \\ %{}) do
    id = unique_name(:sh_test)
    config = Map.put_new(Map.new(config), :target, self())
    :ok = :logger.add_handler(id, SelfHeal.LoggerHandler, %{level: :error, config: config})
    ExUnit.Callbacks.on_exit(fn -> :logger.remove_handler(id) end)
    id
  end

  @doc "Ids of the attached :logger handlers."
  def handler_ids, do: Enum.map(:logger.get_handler_config(), & &1.id)

  @doc "Every {:self_heal_event, event} that arrives within `ms` of the last one."
  def receive_events(ms \\ 200, acc \\ []) do
    receive do
      {:self_heal_event, event} -> receive_events(ms, [event | acc])
    after
      ms -> Enum.reverse(acc)
    end
  end

  @doc "Waits for exactly one event: the first within 2 s, none other for 200 ms."
  def assert_one_event do
    assert_receive {:self_heal_event, event}, 2_000
    refute_receive {:self_heal_event, other}, 200, "a second event: #{inspect(other, limit: 8)}"
    event
  end

  @doc "Retries `fun` until it returns a truthy value (at most `ms`)."
  def eventually(fun, ms \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + ms
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    case fun.() do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          flunk("condition not met in time")
        else
          Process.sleep(5)
          do_eventually(fun, deadline)
        end
    end
  end

  @doc "How many records of each action the audit log of `state_dir` holds."
  @spec audit_actions(binary()) :: %{binary() => pos_integer()}
  def audit_actions(state_dir) do
    Path.join(state_dir, "audit.jsonl")
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.map(&(Regex.run(~r/"action":"([a-z_]+)"/, &1) |> List.last()))
    |> Enum.frequencies()
  end

  @doc "The records of one action in the audit log of `state_dir`, decoded."
  @spec audit_records(binary(), binary()) :: [map()]
  def audit_records(state_dir, action) do
    Path.join(state_dir, "audit.jsonl")
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.map(&SelfHeal.JSON.decode!/1)
    |> Enum.filter(&(&1["action"] == action))
  end
end
