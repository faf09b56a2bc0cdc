defmodule SelfHeal.NativeYieldTest do
  # Not async: one test takes every scheduler but one offline.
  use ExUnit.Case, async: false

  import SelfHeal.TestSupport
  alias SelfHeal.Native

  @moduletag timeout: 60_000

  setup_all do
    events = varied_events(2_000)
    {:ok, events: events, expected: Native.fingerprint_batch(events)}
  end

  test "the default batch equals fingerprint/2 of each event", %{
    events: events,
    expected: expected
  } do
    assert expected == Enum.map(events, &fp/1)
  end

  for n <- [1, 3, 7] do
    test "yield_every: #{n} gives the same list and yields", %{events: events, expected: expected} do
      n = unquote(n)
      config = Native.config(yield_every: n)
      before = Native.__yield_count__()
      assert Native.fingerprint_batch(events, config) == expected
      yields = Native.__yield_count__() - before
      assert yields >= div(length(events), n), "only #{yields} yields"
    end
  end

  test "yield_every: 1 with a custom in-app config", %{events: events} do
    config = Native.config(yield_every: 1, in_app_prefixes: ["MyApp.Repo"])
    plain = Native.config(in_app_prefixes: ["MyApp.Repo"])
    assert Native.fingerprint_batch(events, config) == Native.fingerprint_batch(events, plain)
    assert Native.fingerprint_batch(events, config) == Enum.map(events, &fp(&1, plain))
  end

  # The batch path caches frames by {module, function, arity} and an
  # identical file term; a frame that differs only in its file, or in how
  # its file or arity is written, must still be hashed for what it is.
  test "frames repeated with other files, file forms and arities match fingerprint/2" do
    base = fn file, arity ->
      %{
        type: "RuntimeError",
        message: "boom",
        stacktrace: [
          {MyApp.Worker, :run, arity, [file: file, line: 10]},
          {MyApp.Worker, :run, arity, [line: 11]},
          {MyApp.Other, :go, 0, []},
          {MyApp.Other, :go, 0}
        ]
      }
    end

    variants = [
      base.(~c"lib/a.ex", 1),
      base.(~c"lib/b.ex", 1),
      base.("lib/a.ex", 1),
      base.(~c"lib/a.ex", [:x]),
      base.(~c"lib/a.ex", 2),
      base.(String.to_charlist("lib/" <> "a.ex"), 1)
    ]

    events = Enum.flat_map(1..50, fn _ -> variants end)
    expected = Enum.map(events, &fp/1)
    assert Native.fingerprint_batch(events) == expected
    assert Native.fingerprint_batch(events, Native.config(yield_every: 5)) == expected
    # different files must give different fingerprints, equal ones the same
    [a, b, a_bin, _args, two, a_copy | _] = expected
    assert a != b
    assert a == a_bin and a == a_copy
    assert a != two
  end

  test "yield_every: 1 on tiny batches" do
    config = Native.config(yield_every: 1)
    event = %{type: "E", message: "m", stacktrace: nil}
    assert Native.fingerprint_batch([], config) == []
    assert Native.fingerprint_batch([event], config) == [fp(event)]
    assert Native.fingerprint_batch([event, event], config) == [fp(event), fp(event)]
  end

  test "yielding batches in concurrent processes do not mix their state", %{
    events: events,
    expected: expected
  } do
    configs = [nil, Native.config(yield_every: 1), Native.config(yield_every: 3)]

    tasks =
      for i <- 1..9 do
        config = Enum.at(configs, rem(i, 3))
        shifted = Enum.drop(events, i) ++ Enum.take(events, i)
        Task.async(fn -> {i, Native.fingerprint_batch(shifted, config)} end)
      end

    for {i, result} <- Task.await_many(tasks, 30_000) do
      assert result == Enum.drop(expected, i) ++ Enum.take(expected, i)
    end
  end

  test "a process killed in the middle of a yielding batch leaves the VM working", %{
    events: events,
    expected: expected
  } do
    config = Native.config(yield_every: 1)
    big = List.duplicate(events, 20) |> List.flatten()
    pid = spawn(fn -> Native.fingerprint_batch(big, config) end)
    Process.sleep(5)
    Process.exit(pid, :kill)
    refute Process.alive?(pid)
    :erlang.garbage_collect()
    assert Native.fingerprint_batch(events, config) == expected
  end

  test "a batch of 100,000 events completes", %{events: events} do
    big = events |> List.duplicate(50) |> List.flatten()
    assert length(big) == 100_000
    result = Native.fingerprint_batch(big)
    assert length(result) == 100_000

    for i <- Enum.take_every(0..99_999, 997) do
      assert Enum.at(result, i) == fp(Enum.at(big, i))
    end
  end

  test "a process sharing the only online scheduler keeps running during a 200,000-event batch" do
    base =
      for i <- 1..200 do
        frames = for d <- 1..10, do: {MyApp.Mod, :"f#{d}", 1, "lib/my_app/mod#{d}.ex", i + d}

        event(
          "RuntimeError",
          "payment #{i} failed for customer cus_#{i * 7} at 2024-05-01T12:00:00Z",
          frames,
          :term
        )
      end

    events = base |> List.duplicate(1_000) |> List.flatten()

    {result, yielding, blocking} =
      with_one_scheduler(fn ->
        {result, yielding} = while_ticking(fn -> Native.fingerprint_batch(events) end)

        # control: a batch that never yields (yield_every beyond its length)
        # starves the ticker, so the measurement above can see starvation
        never = Native.config(yield_every: 1_000_000_000)
        {_, blocking} = while_ticking(fn -> Native.fingerprint_batch(events, never) end)
        {result, yielding, blocking}
      end)

    assert length(result) == 200_000
    assert Enum.take(result, 200) == Enum.map(base, &fp/1)

    assert yielding.max_gap_ms < 50, "ticker starved: #{inspect(yielding)}"
    # at least one tick per 10 ms of batch on average
    assert yielding.ticks >= trunc(yielding.batch_ms / 10) - 1, inspect(yielding)

    assert blocking.max_gap_ms >= blocking.batch_ms * 0.5,
           "control batch did not block: #{inspect(blocking)}"
  end
end
