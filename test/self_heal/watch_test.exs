defmodule SelfHeal.WatchTest do
  # Not async: one test takes every scheduler but one offline.
  use ExUnit.Case, async: false

  import Bitwise
  import SelfHeal.TestSupport, only: [while_ticking: 1, with_one_scheduler: 1]
  alias SelfHeal.Watch

  @moduletag timeout: 60_000

  defp five_xx(opts \\ []) do
    Keyword.merge(
      [id: "5xx", field: "status", op: :>=, value: 500, window_ms: 60_000, threshold: 50],
      opts
    )
  end

  defp set_with(specs, opts \\ []) do
    set = Watch.new(opts)
    for spec <- specs, do: assert({:ok, :added} = Watch.add(set, spec))
    set
  end

  defp watch(set, id), do: Enum.find(Watch.list(set), &(&1.id == id))

  # does a one-watch set fire on one event?
  defp fires?(spec, event) do
    set = set_with([Keyword.merge([id: "w", window_ms: 1_000, threshold: 1], spec)])
    Watch.observe(set, [event], 0) == ["w"]
  end

  describe "the 5xx example" do
    test "a few are normal, many in a minute are not" do
      set = set_with([five_xx()])
      ok = %{"status" => 200}
      err = %{"status" => 503}

      # 49 errors spread over the minute, among many successes: nothing
      for i <- 0..48 do
        assert Watch.observe(set, [ok, err, ok], i * 1_000) == []
      end

      # the 50th within the minute fires, once
      assert Watch.observe(set, [err], 59_000) == ["5xx"]
      assert Watch.observe(set, List.duplicate(err, 100), 59_500) == []

      w = watch(set, "5xx")
      assert w.fired == 1
      assert w.count == 50
      assert w.armed == false
      assert w.last_fired_ms == 59_000
      assert w.matched == 150
    end

    test "a steady trickle never reaches the threshold" do
      set = set_with([five_xx(threshold: 5, window_ms: 1_000)])
      # 4 per second, for a minute: the window never holds 5
      for t <- 0..59_999//250 do
        assert Watch.observe(set, %{status: 500}, t) == []
      end

      assert watch(set, "5xx").count == 4
    end
  end

  describe "windows" do
    test "an event counts while now - t < window_ms" do
      set = set_with([five_xx(threshold: 3, window_ms: 1_000)])
      err = %{status: 500}
      assert Watch.observe(set, err, 0) == []
      assert Watch.observe(set, err, 500) == []
      # the event at 0 left the window at 1000
      assert Watch.observe(set, err, 1_000) == []
      assert watch(set, "5xx").count == 2
      assert Watch.observe(set, err, 1_499) == ["5xx"]
    end

    test "fires once, stays quiet through a storm, re-arms below the threshold" do
      set = set_with([five_xx(threshold: 3, window_ms: 100)])
      err = %{status: 500}
      assert Watch.observe(set, [err, err], 0) == []
      assert Watch.observe(set, err, 1) == ["5xx"]

      for t <- 2..1_000 do
        assert Watch.observe(set, err, t) == []
      end

      # quiet, then a new burst
      assert Watch.observe(set, [err, err], 5_000) == []
      assert watch(set, "5xx").armed
      assert Watch.observe(set, err, 5_001) == ["5xx"]
      assert watch(set, "5xx").fired == 2
    end

    test "at most once per window, even when the count flaps around the threshold" do
      set = set_with([five_xx(threshold: 2, window_ms: 100)])
      fired = for t <- 0..1_000//50, id <- Watch.observe(set, %{status: 500}, t), do: {t, id}
      assert Enum.map(fired, &elem(&1, 0)) == Enum.to_list(50..950//100)
    end

    test "an expired window is dropped quietly" do
      set = set_with([five_xx(threshold: 2, window_ms: 100)])
      assert Watch.observe(set, [%{status: 500}, %{status: 500}], 0) == ["5xx"]
      assert Watch.observe(set, %{status: 200}, 10_000) == []
      assert Watch.observe(set, [], 20_000) == []
      w = watch(set, "5xx")
      assert w.count == 0
      assert w.armed
      assert w.fired == 1
    end

    test "time never runs backwards in a set" do
      set = set_with([five_xx(threshold: 3, window_ms: 100)])
      assert Watch.observe(set, %{status: 500}, 1_000) == []
      assert Watch.observe(set, %{status: 500}, 10) == []
      assert Watch.observe(set, %{status: 500}, -5) == ["5xx"]
      assert watch(set, "5xx").last_fired_ms == 1_000
    end

    test "the default clock is monotonic milliseconds" do
      set = set_with([five_xx(threshold: 1)])
      assert Watch.observe(set, %{status: 500}) == ["5xx"]
      now = System.monotonic_time(:millisecond)
      assert_in_delta watch(set, "5xx").last_fired_ms, now, 1_000
    end

    test "one event fires every watch it reaches, each once" do
      set =
        set_with([
          five_xx(id: "a", threshold: 1),
          five_xx(id: "b", threshold: 2),
          [id: "c", field: :level, op: :==, value: :error, window_ms: 100, threshold: 1]
        ])

      # :status and "status" are one field: the event counts once
      event = %{:status => 500, "status" => 501, "level" => "error"}
      assert Enum.sort(Watch.observe(set, event, 0)) == ["a", "c"]
      assert watch(set, "b").count == 1
      assert Watch.observe(set, event, 1) == ["b"]
    end
  end

  describe "matches" do
    test "numeric ops" do
      for {op, below, equal, above} <- [
            {:==, false, true, false},
            {:!=, true, false, true},
            {:<, true, false, false},
            {:<=, true, true, false},
            {:>, false, false, true},
            {:>=, false, true, true}
          ] do
        spec = [field: "status", op: op, value: 500]
        assert fires?(spec, %{"status" => 499}) == below, "#{op} below"
        assert fires?(spec, %{"status" => 500}) == equal, "#{op} equal"
        assert fires?(spec, %{"status" => 501}) == above, "#{op} above"
        assert fires?(spec, %{"status" => 499.5}) == below, "#{op} float below"
        assert fires?(spec, %{"status" => 500.0}) == equal, "#{op} float equal"
        assert fires?(spec, %{status: 500.5}) == above, "#{op} float above"
        # a binary is not a number: only != holds; an absent field: nothing
        assert fires?(spec, %{"status" => "500"}) == (op == :!=), "#{op} binary"
        assert fires?(spec, %{"code" => 500}) == false
        assert fires?(spec, %{"status" => nil}) == false
      end
    end

    test "64-bit integers and floats compare exactly" do
      big = 9_007_199_254_740_993
      refute fires?([field: "n", op: :==, value: big], %{n: 9_007_199_254_740_992.0})
      assert fires?([field: "n", op: :==, value: big], %{n: big})
      assert fires?([field: "n", op: :>, value: 9_007_199_254_740_992.0], %{n: big})
      max = 18_446_744_073_709_551_615
      assert fires?([field: "n", op: :>, value: 9_223_372_036_854_775_807], %{n: max})
      assert fires?([field: "n", op: :<, value: max], %{n: -9_223_372_036_854_775_808})
      assert fires?([field: "n", op: :>=, value: -0.5], %{n: 0})
      # integers beyond 64 bits are not read
      refute fires?([field: "n", op: :>, value: 0], %{n: max + 1})
    end

    test "string ops" do
      assert fires?([field: "level", op: :==, value: "error"], %{"level" => "error"})
      assert fires?([field: "level", op: :==, value: "error"], %{level: :error})
      assert fires?([field: :level, op: :==, value: :error], %{"level" => "error"})
      refute fires?([field: "level", op: :==, value: "error"], %{level: "Error"})
      refute fires?([field: "level", op: :==, value: "error"], %{level: "errors"})
      assert fires?([field: "service", op: :!=, value: "x"], %{service: "y"})
      refute fires?([field: "service", op: :!=, value: "x"], %{service: "x"})
      assert fires?([field: "service", op: :!=, value: "x"], %{service: 1})
      refute fires?([field: "service", op: :!=, value: "x"], %{other: "y"})
      assert fires?([field: "path", op: :prefix, value: "/api/"], %{path: "/api/orders"})
      refute fires?([field: "path", op: :prefix, value: "/api/"], %{path: "/web/api/"})
      refute fires?([field: "path", op: :prefix, value: "/api/"], %{path: "/api"})
      assert fires?([field: "message", op: :contains, value: "timeout"], %{message: "db timeout"})
      assert fires?([field: "message", op: :contains, value: "aab"], %{message: "aaab"})
      refute fires?([field: "message", op: :contains, value: "abc"], %{message: "ababab"})
      # true and false are atoms, read as their text
      assert fires?([field: "ok", op: :==, value: false], %{ok: false})
    end

    test "cluster ids of the template miner" do
      miner = SelfHeal.Native.miner_new()

      [a, a2, b] =
        SelfHeal.Native.miner_add(miner, [
          "Connection to 10.2.3.4:5432 refused after 3012 ms",
          "Connection to 10.9.9.9:5432 refused after 12 ms",
          "user alice logged in"
        ])

      assert a == a2 and a != b
      set = set_with([[id: "db", cluster: a, window_ms: 60_000, threshold: 2]])
      assert Watch.observe(set, [%{cluster: a}, %{cluster: b}], 0) == []
      assert Watch.observe(set, [%{"cluster" => b}, %{"cluster" => a}], 1) == ["db"]
      # ids are integers; floats and binaries are not ids
      set = set_with([[id: "c", cluster: 42, window_ms: 60_000, threshold: 1]])
      assert Watch.observe(set, [%{cluster: 42.0}, %{cluster: "42"}, %{cluster_id: 42}], 0) == []
      assert Watch.observe(set, [%{cluster: 42}], 0) == ["c"]
    end

    test "fingerprints" do
      fp = String.duplicate("9b", 16)
      set = set_with([[id: "fp", fingerprint: fp, window_ms: 60_000, threshold: 2]])

      assert Watch.observe(set, [%{fingerprint: fp}, %{fingerprint: String.upcase(fp)}], 0) ==
               []

      assert Watch.observe(set, [%{"fingerprint" => fp, "message" => fp}], 0) == ["fp"]
    end

    test "events are any maps: other keys and values are ignored" do
      set = set_with([five_xx(threshold: 2)])

      event = %{
        :status => 500,
        {:tuple, :key} => 500,
        1 => 500,
        :pid => self(),
        :meta => %{status: 500},
        :list => [500],
        :ref => make_ref(),
        :fun => fn -> 500 end
      }

      assert Watch.observe(set, [event, struct(SelfHeal.Event, %{}) |> Map.put(:status, 501)], 0) ==
               ["5xx"]
    end
  end

  describe "adding and removing at run time" do
    test "add, unchanged, replaced, remove" do
      set = Watch.new()
      assert Watch.add(set, five_xx(threshold: 2)) == {:ok, :added}
      assert Watch.observe(set, %{status: 500}, 0) == []
      # the same spec (keyword or map) keeps the counts
      assert Watch.add(set, Map.new(five_xx(threshold: 2))) == {:ok, :unchanged}
      assert watch(set, "5xx").count == 1
      # another spec starts over
      assert Watch.add(set, five_xx(threshold: 3)) == {:ok, :replaced}
      assert watch(set, "5xx").count == 0
      assert watch(set, "5xx").threshold == 3

      assert {:ok, :added} = Watch.add(set, five_xx(id: "other", threshold: 1))
      assert Watch.observe(set, %{status: 500}, 1) == ["other"]
      assert Watch.remove(set, "other") == :ok
      assert Watch.remove(set, "other") == {:error, :not_found}
      assert Watch.observe(set, List.duplicate(%{status: 500}, 3), 1_000_000) == ["5xx"]
      assert Enum.map(Watch.list(set), & &1.id) == ["5xx"]
      assert Watch.count(set) == 1
    end

    test "list: every kind, in the order added, a replaced watch in its place" do
      set =
        set_with([
          five_xx(),
          [id: "c", cluster: 7, window_ms: 1_000, threshold: 2],
          [id: "f", fingerprint: "abc", window_ms: 1_000, threshold: 2],
          [id: "lvl", field: :level, op: :==, value: :error, window_ms: 10, threshold: 1],
          [id: "ratio", field: "ratio", op: :>, value: 0.5, window_ms: 10, threshold: 1]
        ])

      assert {:ok, :replaced} = Watch.add(set, five_xx(threshold: 10))
      assert Enum.map(Watch.list(set), & &1.id) == ["5xx", "c", "f", "lvl", "ratio"]
      assert Watch.count(set) == 5
      [w5, c, f, lvl, ratio] = Watch.list(set)

      assert w5 == %{
               id: "5xx",
               kind: :field,
               field: "status",
               op: :>=,
               value: 500,
               window_ms: 60_000,
               threshold: 10,
               count: 0,
               matched: 0,
               fired: 0,
               armed: true,
               last_fired_ms: nil
             }

      assert %{kind: :cluster, cluster: 7, threshold: 2} = c
      refute Map.has_key?(c, :field)
      assert %{kind: :fingerprint, fingerprint: "abc"} = f
      assert %{kind: :field, field: "level", value: "error", op: :==} = lvl
      assert %{value: 0.5, op: :>} = ratio
    end

    test "bounds: max_watches and max_slots" do
      set = Watch.new(max_watches: 2, max_slots: 10)
      assert {:ok, :added} = Watch.add(set, five_xx(id: "a", threshold: 4))
      assert Watch.add(set, five_xx(id: "b", threshold: 7)) == {:error, :full}
      assert {:ok, :added} = Watch.add(set, five_xx(id: "b", threshold: 6))
      assert Watch.add(set, five_xx(id: "c", threshold: 1)) == {:error, :full}
      assert Watch.add(set, five_xx(id: "a", threshold: 5)) == {:error, :full}
      assert {:ok, :replaced} = Watch.add(set, five_xx(id: "a", threshold: 3))
      assert :ok = Watch.remove(set, "b")
      assert {:ok, :added} = Watch.add(set, five_xx(id: "c", threshold: 7))
      assert length(Watch.list(set)) == 2
    end

    test "10,000 watches by default" do
      set = Watch.new()

      for i <- 1..10_000 do
        assert {:ok, :added} = Watch.add(set, five_xx(id: "w#{i}", value: i, threshold: 1))
      end

      assert Watch.add(set, five_xx(id: "more")) == {:error, :full}
      assert length(Watch.observe(set, %{status: 5_000}, 0)) == 5_000
      assert length(Watch.list(set)) == 10_000
    end
  end

  describe "bad input" do
    test "bad options and specs raise ArgumentError" do
      assert_raise ArgumentError, ~r/max_watches/, fn -> Watch.new(max_watches: 0) end
      assert_raise ArgumentError, ~r/max_slots/, fn -> Watch.new(max_slots: -1) end
      assert_raise ArgumentError, ~r/unknown option/, fn -> Watch.new(max: 1) end
      assert_raise ArgumentError, fn -> Watch.new(:nope) end

      set = Watch.new()

      for {spec, message} <- [
            {five_xx(id: nil), ~r/id/},
            {five_xx(id: :atom), ~r/id/},
            {five_xx(id: ""), ~r/id/},
            {five_xx(id: String.duplicate("x", 129)), ~r/id/},
            {five_xx(window_ms: 0), ~r/window_ms/},
            {five_xx(window_ms: 2_592_000_001), ~r/window_ms/},
            {five_xx(window_ms: 1.5), ~r/window_ms/},
            {five_xx(threshold: 0), ~r/threshold/},
            {five_xx(threshold: 1_000_001), ~r/threshold/},
            {five_xx(op: :=~), ~r/op/},
            {five_xx(op: "=="), ~r/op/},
            {five_xx(op: :prefix), ~r/prefix/},
            {five_xx(value: "500"), ~r/number/},
            {five_xx(value: nil), ~r/value/},
            {five_xx(value: [500]), ~r/value/},
            {five_xx(value: String.duplicate("x", 1025), op: :==), ~r/1024/},
            {five_xx(field: ""), ~r/field/},
            {five_xx(field: String.duplicate("f", 129)), ~r/field/},
            {five_xx(field: 1), ~r/field/},
            {five_xx(cluster: 1), ~r/exactly one/},
            {Keyword.delete(five_xx(), :field), ~r/exactly one/},
            {[id: "c", cluster: -1, window_ms: 1, threshold: 1], ~r/cluster/},
            {[id: "c", cluster: 1 <<< 64, window_ms: 1, threshold: 1], ~r/cluster/},
            {[id: "f", fingerprint: :abc, window_ms: 1, threshold: 1], ~r/fingerprint/},
            {[id: "f", fingerprint: "", window_ms: 1, threshold: 1], ~r/fingerprint/},
            {five_xx(windows_ms: 1), ~r/unknown watch spec key/}
          ] do
        assert_raise ArgumentError, message, fn -> Watch.add(set, spec) end
      end

      assert Watch.list(set) == []
      assert_raise ArgumentError, fn -> Watch.add(make_ref(), five_xx()) end
      assert_raise ArgumentError, fn -> Watch.add(set, :nope) end
      assert_raise ArgumentError, fn -> Watch.remove(set, :id) end
      assert_raise ArgumentError, fn -> Watch.list(:nope) end
    end

    test "bad events raise ArgumentError; events before them stay counted" do
      set = set_with([five_xx(threshold: 100)])
      ok = %{status: 500}
      assert_raise ArgumentError, ~r/map/, fn -> Watch.observe(set, [ok, :x], 0) end
      assert_raise ArgumentError, ~r/proper list/, fn -> Watch.observe(set, [ok | :x], 0) end
      assert_raise ArgumentError, ~r/now_ms/, fn -> Watch.observe(set, [ok], 1.5) end
      assert_raise ArgumentError, ~r/now_ms/, fn -> Watch.observe(set, [ok], 1 <<< 64) end
      assert_raise ArgumentError, fn -> Watch.observe(set, :x, 0) end
      assert_raise ArgumentError, fn -> Watch.observe(make_ref(), [ok], 0) end

      wide = Map.new(1..257, &{"f#{&1}", &1})
      assert_raise ArgumentError, ~r/256 fields/, fn -> Watch.observe(set, [wide], 0) end
      assert Watch.observe(set, [Map.delete(wide, "f1")], 0) == []
      assert watch(set, "5xx").matched == 2
    end

    test "hostile values are bounded" do
      set =
        set_with([
          [id: "m", field: "message", op: :contains, value: "needle", window_ms: 1, threshold: 1]
        ])

      long = String.duplicate("a", 65_530) <> "needle" <> String.duplicate("a", 100_000)
      assert Watch.observe(set, %{message: long}, 0) == ["m"]
      later = String.duplicate("a", 65_531) <> "needle"
      assert Watch.observe(set, %{message: later}, 10) == []

      long_key = %{String.duplicate("k", 10_000) => 1, message: <<0xFF, 0xFE>>}
      assert Watch.observe(set, long_key, 20) == []

      for _ <- 1..200 do
        junk = for _ <- 1..:rand.uniform(20), into: %{}, do: {random_term(), random_term()}
        assert is_list(Watch.observe(set, [junk], 30))
      end
    end
  end

  describe "scheduling" do
    setup do
      specs =
        for i <- 1..50 do
          [id: "w#{i}", field: "n", op: :>=, value: i, window_ms: 1_000, threshold: 1 + rem(i, 7)]
        end

      events = for i <- 1..10_000, do: %{"n" => rem(i * 7919, 60), "i" => i}
      {:ok, specs: specs, events: events}
    end

    defp run(specs, events, opts, steps) do
      set = set_with(specs, opts)

      fired =
        for {chunk, t} <- Enum.zip(Enum.chunk_every(events, steps), 0..10_000),
            do: Watch.observe(set, chunk, t * 100)

      {fired, Watch.list(set)}
    end

    test "yield_every gives the same results as the time budget", %{specs: s, events: e} do
      expected = run(s, e, [], 2_500)
      for n <- [1, 3, 64], do: assert(run(s, e, [yield_every: n], 2_500) == expected)
    end

    test "processes sharing a set count exactly", %{events: events} do
      set =
        set_with([
          [id: "all", field: "i", op: :>=, value: 0, window_ms: 60_000, threshold: 40_000]
        ])

      fired =
        1..4
        |> Enum.map(fn _ -> Task.async(fn -> Watch.observe(set, events, 0) end) end)
        |> Task.await_many(30_000)
        |> List.flatten()

      assert fired == ["all"]
      assert %{matched: 40_000, count: 40_000, fired: 1} = watch(set, "all")
    end

    test "a process sharing the only online scheduler keeps running during a long observe" do
      specs =
        for i <- 1..200,
            do: [id: "w#{i}", field: "n", op: :>=, value: i, window_ms: 100, threshold: 1_000]

      events = for i <- 1..200_000, do: %{"n" => rem(i, 300), "service" => "api"}
      yielding = set_with(specs)
      blocking = set_with(specs, yield_every: 1_000_000_000)

      {{fired, y}, {_, b}} =
        with_one_scheduler(fn ->
          {while_ticking(fn -> Watch.observe(yielding, events, 0) end),
           while_ticking(fn -> Watch.observe(blocking, events, 0) end)}
        end)

      assert length(fired) == 200
      assert y.max_gap_ms < 50, "ticker starved: #{inspect(y)}"
      assert b.max_gap_ms >= b.batch_ms * 0.5, "control did not block: #{inspect(b)}"
    end
  end

  defp random_term do
    case :rand.uniform(9) do
      1 -> :rand.uniform(1 <<< 70) - (1 <<< 69)
      2 -> :rand.uniform() * 1.0e300
      3 -> :crypto.strong_rand_bytes(:rand.uniform(300))
      4 -> String.to_atom("a#{:rand.uniform(50)}")
      5 -> [1, 2]
      6 -> %{a: 1}
      7 -> {1, :x}
      8 -> nil
      9 -> "status"
    end
  end
end
