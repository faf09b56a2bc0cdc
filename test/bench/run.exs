# make bench: prints one line per figure as `BENCH <name> <value>`.
#
#   fingerprint_batch_eps       events/s of SelfHeal.Native.fingerprint_batch/2 in one
#                               process (one scheduler) over 100,000 realistic events:
#                               an Elixir error message with ids and timestamps and a
#                               10-frame Erlang stack trace, as the logger handler makes
#   fingerprint_batch_text_eps  the same with the stack trace as text (HTTP/log sources)
#   fingerprint_elixir_eps      the same events through the straightforward pure-Elixir
#                               implementation below (Regex + :crypto.hash)
#   fingerprint_speedup         fingerprint_batch_eps / fingerprint_elixir_eps
#   dedup_1m_ms                 milliseconds of SelfHeal.Native.dedup/1 on 1,000,000
#                               fingerprinted events
#
# Every figure is the best of several runs measured here, in this run; the
# fingerprint figures each in a fresh process holding only its input.

defmodule SelfHeal.Bench.ElixirFingerprint do
  @moduledoc false
  # The baseline: what one would write in Elixir without the NIF.

  @rules [
    {~r/\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?/, "<ts>"},
    {~r/\b\d{2}:\d{2}:\d{2}(?:\.\d+)?\b/, "<ts>"},
    {~r/\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b/,
     "<uuid>"},
    {~r/#PID<\d+\.\d+\.\d+>/, "<pid>"},
    {~r/#Reference<[\d.]+>/, "<ref>"},
    {~r/\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b/, "<ip>"},
    {~r/[\w.+-]+@[\w-]+\.[\w.-]+/, "<email>"},
    {~r/\b0x[0-9a-fA-F]+\b/, "<hex>"},
    {~r/\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b/, "<hex>"},
    {~r/\b\d+(?:\.\d+)?\s?(?:ms|us|ns|s)\b/, "<dur>"},
    {~r/\b\d+\.\d+\b/, "<float>"},
    {~r/(?<![\w.])-?\d+\b/, "<int>"}
  ]

  @system ~w(Enum GenServer Kernel Task Agent Process Stream List Map String Supervisor)

  def fingerprint(%{type: type, message: message, stacktrace: stack}) do
    normalized = Enum.reduce(@rules, message, fn {re, ph}, acc -> Regex.replace(re, acc, ph) end)

    frames =
      stack
      |> Enum.filter(&in_app?/1)
      |> Enum.take(3)
      |> Enum.map(fn {m, f, a, loc} ->
        a = if is_list(a), do: length(a), else: a

        [
          inspect(m),
          0x1F,
          Atom.to_string(f),
          ?/,
          Integer.to_string(a),
          0x1F,
          to_string(loc[:file])
        ]
      end)

    :crypto.hash(:sha256, [type, 0x1F, normalized, 0x1F | Enum.intersperse(frames, 0x1E)])
    |> binary_part(0, 16)
    |> Base.encode16(case: :lower)
  end

  defp in_app?({m, _f, _a, _loc}) do
    case Atom.to_string(m) do
      "Elixir." <> rest -> hd(String.split(rest, ".")) not in @system
      _erlang -> false
    end
  end
end

defmodule SelfHeal.Bench do
  @moduledoc false
  alias SelfHeal.Native

  @kinds [
    {"DBConnection.ConnectionError",
     "tcp connect (10.0.~b.~b:5432): connection refused - :econnrefused at ~s"},
    {"Ecto.NoResultsError",
     "expected at least one result but got none in query: from u0 in MyApp.User, where: u0.id == ^~b (request ~b at ~s)"},
    {"RuntimeError", "payment ~b failed for customer cus_~b at ~s"},
    {"KeyError", "key :user_id not found in: %{id: ~b, name: \"user~b\"} at ~s"},
    {"exit",
     "exited in: GenServer.call(#PID<0.~b.0>, {:get, ~b}, 5000)\n    ** (EXIT) time out (~s)"}
  ]

  def report(name, value) when is_float(value),
    do: IO.puts("BENCH #{name} #{:erlang.float_to_binary(value, decimals: 2)}")

  def report(name, value), do: IO.puts("BENCH #{name} #{value}")

  def events(n) do
    for i <- 1..n do
      {type, fmt} = Enum.at(@kinds, rem(i, length(@kinds)))
      ts = "2026-11-22T10:#{pad(rem(i, 60))}:#{pad(rem(i * 7, 60))}.#{rem(i * 13, 1000)}Z"
      message = :io_lib.format(fmt, [rem(i, 250), rem(i * 31, 250), ts]) |> IO.iodata_to_binary()
      mod = Module.concat([MyApp, Enum.at(~w(Orders Billing Accounts Search Mailer), rem(i, 5))])

      stack = [
        {mod, :handle_call, 3, [file: ~c"lib/my_app/worker.ex", line: 40 + rem(i, 9)]},
        {mod, :do_work, 2, [file: ~c"lib/my_app/worker.ex", line: 120 + rem(i, 5)]},
        {MyApp.Repo, :one, 2, [file: ~c"lib/my_app/repo.ex", line: 33]},
        {Enum, :map, 2, [file: ~c"lib/enum.ex", line: 1658]},
        {Enum, :"-map/2-lists^map/1-0-", 2, [file: ~c"lib/enum.ex", line: 1658]},
        {:gen_server, :try_handle_call, 4, [file: ~c"gen_server.erl", line: 1149]},
        {:gen_server, :handle_msg, 6, [file: ~c"gen_server.erl", line: 1178]},
        {:proc_lib, :init_p_do_apply, 3, [file: ~c"proc_lib.erl", line: 240]},
        {:proc_lib, :wake_up, 3, [file: ~c"proc_lib.erl", line: 251]},
        {:erlang, :apply, 2, []}
      ]

      %{type: type, message: message, stacktrace: stack, timestamp: i, service: "svc#{rem(i, 3)}"}
    end
  end

  defp pad(n), do: String.pad_leading(Integer.to_string(n), 2, "0")

  def text_stack(stack) do
    Enum.map_join(stack, "\n", fn entry -> "    " <> Exception.format_stacktrace_entry(entry) end)
  end

  def best_us(runs, fun) do
    Enum.reduce(1..runs, :infinity, fn _, best ->
      {us, _} = :timer.tc(fun)
      min(us, best)
    end)
  end

  # Best time of `runs` calls of fun.(input) in a fresh process that holds
  # only the input, so garbage collections triggered by the results do not
  # copy the benchmark's other data sets; both the NIF and the Elixir
  # baseline are measured this way.
  def isolated_best_us(input, runs, fun) do
    parent = self()

    {pid, ref} =
      spawn_monitor(fn ->
        # two untimed runs first: the process heap grows to its steady size
        _ = fun.(input)
        _ = fun.(input)
        send(parent, {:best, self(), best_us(runs, fn -> fun.(input) end)})
      end)

    receive do
      {:best, ^pid, us} ->
        Process.demonitor(ref, [:flush])
        us

      {:DOWN, ^ref, :process, ^pid, reason} ->
        raise "benchmark process died: #{inspect(reason)}"
    end
  end

  def run do
    n = 100_000
    events = events(n)
    text_events = Enum.map(events, &%{&1 | stacktrace: text_stack(&1.stacktrace)})
    config = Native.config([])

    batch = &Native.fingerprint_batch(&1, config)
    nif_us = isolated_best_us(events, 10, batch)
    text_us = isolated_best_us(text_events, 10, batch)

    sample = Enum.take(events, 10_000)

    ex_us =
      isolated_best_us(sample, 5, fn evs ->
        Enum.map(evs, &SelfHeal.Bench.ElixirFingerprint.fingerprint/1)
      end)

    nif_eps = n * 1_000_000 / nif_us
    ex_eps = length(sample) * 1_000_000 / ex_us
    report("fingerprint_batch_eps", round(nif_eps))
    report("fingerprint_batch_text_eps", round(n * 1_000_000 / text_us))
    report("fingerprint_elixir_eps", round(ex_eps))
    report("fingerprint_speedup", nif_eps / ex_eps)

    fps = Native.fingerprint_batch(events, config)

    fingerprinted =
      Enum.zip_with(events, fps, fn e, fp ->
        %{fingerprint: fp, timestamp: e.timestamp, service: e.service}
      end)

    million = List.flatten(List.duplicate(fingerprinted, 10))
    dedup_us = best_us(3, fn -> Native.dedup(million) end)
    report("dedup_1m_ms", dedup_us / 1000)

    # what a service registry adds to a batch (docs/services.md): each
    # event's service resolved (svc1 through an alias, svc2 unknown) and
    # its fingerprint scoped to it, against the batch's fingerprinting
    registry =
      SelfHeal.Service.new(%{
        "services" => %{"svc0" => %{}, "billing" => %{"aliases" => ["svc1"]}}
      })

    routed = Enum.zip_with(events, fps, &Map.merge(&1, %{fingerprint: &2, metadata: %{}}))

    scope_us = isolated_best_us(routed, 10, &SelfHeal.Service.route_scope(&1, registry))

    report("service_route_scope_eps", round(n * 1_000_000 / scope_us))
    report("service_route_scope_vs_fingerprint_pct", 100 * scope_us / nif_us)
  end
end

SelfHeal.Bench.run()
