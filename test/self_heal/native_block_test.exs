defmodule SelfHeal.NativeBlockTest do
  # No NIF call keeps a normal scheduler for long, whatever its input
  # (docs/nif.md): heavy items move to a dirty scheduler, long lists yield,
  # a shared miner or watch set is never waited for on a normal scheduler,
  # and the results are those of the plain path. Not async: the tests take
  # schedulers offline and read global counters.
  use ExUnit.Case, async: false

  import SelfHeal.TestSupport
  alias SelfHeal.{Native, Watch}

  @moduletag timeout: 120_000

  # never moves to a dirty scheduler, never yields: the plain path
  @plain [dirty_above: Integer.pow(2, 62), yield_every: 1_000_000_000]
  # a generous bound for "the ticker was not starved" on a loaded machine;
  # the blocking controls starve it for hundreds of milliseconds
  @starved_ms 50

  # Text that normalises slowly (an arity check at every slash, 20-40 ns a
  # byte): 2 MB keep the plain path busy for 40 ms and more.
  defp slow_text(bytes), do: :binary.part(:binary.copy("a/1 ", div(bytes, 4) + 1), 0, bytes)

  defp moves(fun) do
    before = Native.__dirty_count__()
    result = fun.()
    {result, Native.__dirty_count__() - before}
  end

  # The counter is global: another process's call that moved meanwhile
  # adds to it. For a call that can be repeated, the least of three.
  defp least_moves(fun) do
    runs = for _ <- 1..3, do: moves(fun)
    {elem(hd(runs), 0), runs |> Enum.map(&elem(&1, 1)) |> Enum.min()}
  end

  defp assert_not_starved(stats), do: assert(stats.max_gap_ms < @starved_ms, inspect(stats))

  defp assert_blocked(stats) do
    assert stats.max_gap_ms >= stats.batch_ms * 0.5,
           "the control did not block: #{inspect(stats)}"
  end

  # Runs read() (a long reader: a miner walk, a watch list) while the
  # process that start() spawns calls another NIF on the same resource in
  # a loop, noting the long readers' step count after each call; returns
  # read's result, its step count and how many of those calls ended between
  # its first step and its last. A reader holding the lock from its first
  # step to its last lets none end in between.
  defp while_calling(start, read) do
    caller = start.()
    Process.sleep(10)
    s0 = Native.__walk_steps__()
    result = read.()
    s1 = Native.__walk_steps__()
    send(caller, {:stop, self()})
    assert_receive {:done, seen}, 60_000
    {result, s1 - s0, Enum.count(seen, &(&1 > s0 and &1 < s1))}
  end

  describe "one heavy event" do
    test "a 2 MB message moves fingerprint/2 to a dirty scheduler, with the plain path's result" do
      big = 2 * 1024 * 1024
      event = %{type: "E", message: slow_text(big), stacktrace: nil}
      cfg = Native.config(max_event_bytes: big)
      plain = Native.config([max_event_bytes: big] ++ @plain)

      {info, moved} = moves(fn -> Native.fingerprint(event, cfg) end)
      assert moved >= 1
      assert info == Native.fingerprint(event, plain)
      refute info.truncated

      with_one_scheduler(fn ->
        {^info, stats} = while_ticking(fn -> Native.fingerprint(event, cfg) end)
        assert_not_starved(stats)
        {^info, control} = while_ticking(fn -> Native.fingerprint(event, plain) end)
        assert_blocked(control)
      end)
    end

    test "a 2 MB text stack trace and a message with a miner" do
      big = 2 * 1024 * 1024
      stack = :binary.copy("((((((((((:::::: at at at File \"\n", div(big, 34))
      stack = stack <> "    lib/my_app/worker.ex:42: MyApp.Worker.handle_call/3\n"
      event = %{type: "E", message: "m", stacktrace: stack}
      cfg = Native.config(max_event_bytes: 2 * big)
      {info, moved} = moves(fn -> Native.fingerprint(event, cfg) end)
      assert moved >= 1

      assert info ==
               Native.fingerprint(event, Native.config([max_event_bytes: 2 * big] ++ @plain))

      assert [%{module: "MyApp.Worker"}] = info.frames

      # with a miner: the message is the miner's line too
      stackless = %{type: "E", message: slow_text(big), stacktrace: nil}
      a = Native.miner_new(max_line: big)
      b = Native.miner_new(max_line: big)

      {info, moved} =
        moves(fn ->
          Native.fingerprint(stackless, Native.config(max_event_bytes: big, miner: a))
        end)

      assert moved >= 1
      plain = Native.config([max_event_bytes: big, miner: b] ++ @plain)
      assert info == Native.fingerprint(stackless, plain)
      assert Native.miner_templates(a) == Native.miner_templates(b)
    end

    test "normalize/1 on 64 KiB moves to a dirty scheduler; a short message does not" do
      text = slow_text(65_536)
      {out, moved} = least_moves(fn -> Native.normalize(text) end)
      assert moved == 1
      # fingerprint/2 shows the first 64 KiB of the same normalised text
      shown = Native.fingerprint(%{message: text}, Native.config(@plain)).normalized
      assert byte_size(shown) > 60_000 and String.starts_with?(out, shown)
      {_, moved} = least_moves(fn -> Native.normalize("order 12 failed") end)
      assert moved == 0
    end

    test "a config of 512 names of 1 KiB is made on a dirty scheduler, and works" do
      names = for i <- 1..255, do: "Elixir.MyApp" <> String.duplicate("x", 1_000) <> "#{i}"
      names = ["Elixir.MyApp" | names]

      {big, moved} =
        moves(fn -> Native.make_config(%{in_app_prefixes: names, in_app_apps: names}) end)

      assert moved == 1
      {small, moved} = moves(fn -> Native.config(in_app_prefixes: ["Elixir.MyApp"]) end)
      assert moved == 0

      event = %{
        type: "E",
        message: "m",
        stacktrace: [{MyApp.Worker, :run, 1, []}, {Other, :f, 0, []}]
      }

      assert Native.fingerprint(event, big) == Native.fingerprint(event, small)
    end
  end

  describe "loops of short calls" do
    # A NIF call that returns counts as one reduction however long it took:
    # unless each call reports its time, a process calling a 0.3 ms NIF in
    # a loop keeps the only scheduler for a thousand calls and more.
    defp repeat(0, _fun), do: :ok

    defp repeat(n, fun) do
      fun.()
      repeat(n - 1, fun)
    end

    test "normalize/1 and fingerprint/2 just under dirty_above, 400 times in a row" do
      text = slow_text(8_000)
      event = %{type: "E", message: text}

      with_one_scheduler(fn ->
        {:ok, stats} = while_ticking(fn -> repeat(400, fn -> Native.normalize(text) end) end)
        assert_not_starved(stats)

        {:ok, stats} = while_ticking(fn -> repeat(400, fn -> Native.fingerprint(event) end) end)
        assert_not_starved(stats)
      end)
    end

    # 3,000 watches: below the work at which observe/3 reads its clock
    test "Watch.observe/3 of one event against 3,000 watches, 1,500 times in a row" do
      set = Watch.new()

      for i <- 1..3_000 do
        {:ok, _} =
          Watch.add(set,
            id: "w#{i}",
            field: "status",
            op: :>=,
            value: i,
            window_ms: 60_000,
            threshold: 100
          )
      end

      event = %{"status" => 500}

      with_one_scheduler(fn ->
        {:ok, stats} =
          while_ticking(fn -> repeat(1_500, fn -> Watch.observe(set, event, 0) end) end)

        assert_not_starved(stats)
      end)
    end
  end

  describe "SelfHeal.Scrub.new/1" do
    test "64 patterns of 1 KiB are compiled off the only online scheduler" do
      patterns = for i <- 1..64, do: String.duplicate("(a|b)*c", 140) <> "#{i}"

      with_one_scheduler(fn ->
        {{:ok, scrubber}, stats} = while_ticking(fn -> SelfHeal.Scrub.new(patterns) end)
        assert_not_starved(stats)
        assert is_binary(SelfHeal.Scrub.text(scrubber, "abc"))
      end)
    end
  end

  describe "decode_json_lines/1: the result's strings" do
    # A string longer than 64 bytes, each a binary of its own, would leave
    # the process that holds the result one off-heap binary per string to
    # free, on a normal scheduler, when it exits or collects them.
    test "share a few chunks of at most 128 KiB; a string over 16 KiB has its own binary" do
      log = String.duplicate("x", 200)
      service = String.duplicate("s", 70)
      body = :binary.copy(~s({"log":"#{log}","service":"#{service}","k":"v"}\n), 2_000)

      {offheap, sizes, ok} =
        run_in_process(fn ->
          %{events: events} = Native.decode_json_lines(body)
          {:binary, bins} = Process.info(self(), :binary)

          ok =
            length(events) == 2_000 and
              Enum.all?(events, &(&1.message == log and &1.service == service))

          sizes = Enum.map(events, &:binary.referenced_byte_size(&1.message))
          {length(Enum.uniq_by(bins, &elem(&1, 0))), Enum.uniq(sizes), ok}
        end)

      assert ok
      # 2,000 × 270 bytes in chunks of 4 KiB doubling to 128 KiB, and body
      assert offheap <= 12, "#{offheap} off-heap binaries"
      assert Enum.all?(sizes, &(&1 >= 4096 and &1 <= 131_072)), inspect(sizes)

      big = String.duplicate("y", 20_000)
      %{events: [event]} = Native.decode_json_lines(~s({"log":"#{big}","level":"error"}\n))
      assert event.message == big and event.level == "error"
      assert :binary.referenced_byte_size(event.message) == 20_000
    end
  end

  defp run_in_process(fun) do
    {pid, ref} = spawn_monitor(fn -> exit({:result, fun.()}) end)
    assert_receive {:DOWN, ^ref, :process, ^pid, {:result, result}}, 60_000
    result
  end

  describe "term stack traces: bounded reading" do
    @frame {MyApp.Worker, :run, 1, [file: ~c"lib/my_app/worker.ex", line: 3]}

    test "frames are read among the first 1,024 entries; malformed ones count" do
      no_stack = fp(%{type: "E", message: "m", stacktrace: nil})
      with_frame = fp(%{type: "E", message: "m", stacktrace: [@frame]})
      near = List.duplicate(:junk, 1_000) ++ [@frame]
      far = List.duplicate(:junk, 2_000) ++ [@frame]

      for stack <- [near, far] do
        event = %{type: "E", message: "m", stacktrace: stack}
        [batch] = Native.fingerprint_batch([event])
        assert batch == fp(event)
      end

      assert fp(%{type: "E", message: "m", stacktrace: near}) == with_frame
      assert fp(%{type: "E", message: "m", stacktrace: far}) == no_stack
    end

    test "a location is read among its first 32 entries; more than 255 arguments is malformed" do
      junk = for i <- 1..40, do: {:"k#{i}", i}
      late_file = {MyApp.Worker, :run, 1, junk ++ [file: ~c"lib/my_app/worker.ex"]}
      no_file = {MyApp.Worker, :run, 1, junk}

      assert fp(%{message: "m", stacktrace: [late_file]}) ==
               fp(%{message: "m", stacktrace: [no_file]})

      args = fn n -> {MyApp.Worker, :run, Enum.to_list(1..n), []} end
      info = Native.fingerprint(%{message: "m", stacktrace: [args.(255)]})
      assert [%{function: "run/255"}] = info.frames
      info = Native.fingerprint(%{message: "m", stacktrace: [args.(256)]})
      assert info.frames == []
      huge = {MyApp.Worker, :run, List.duplicate(0, 1_000_000), []}

      assert Native.fingerprint(%{message: "m", stacktrace: [huge, @frame]}).frames ==
               Native.fingerprint(%{message: "m", stacktrace: [@frame]}).frames
    end

    test "5 events with 2-million-entry malformed stacks return at once, on a normal scheduler" do
      junk = List.duplicate(:junk, 2_000_000)
      events = for i <- 1..5, do: %{type: "E#{i}", message: "m", stacktrace: junk}
      expected = for i <- 1..5, do: fp(%{type: "E#{i}", message: "m", stacktrace: nil})

      with_one_scheduler(fn ->
        {result, stats} = while_ticking(fn -> Native.fingerprint_batch(events) end)
        assert result == expected
        assert_not_starved(stats)
        {info, stats} = while_ticking(fn -> Native.fingerprint(hd(events)) end)
        assert info.fingerprint == hd(expected)
        assert_not_starved(stats)
      end)
    end
  end

  describe "fingerprint_batch/2 between schedulers" do
    setup do
      # 300 events with a heavy one after every 50
      big = for i <- 1..6, do: %{type: "Big", message: slow_text(100_000 + i), stacktrace: nil}
      chunks = Enum.chunk_every(varied_events(300), 50)
      {:ok, events: chunks |> Enum.zip(big) |> Enum.flat_map(fn {c, b} -> c ++ [b] end)}
    end

    test "every event on a dirty scheduler, or moving back and forth: the plain path's result",
         %{events: events} do
      cfg = fn opts -> Native.config([max_event_bytes: 200_000] ++ opts) end
      expected = Native.fingerprint_batch(events, cfg.(@plain))
      assert expected == Enum.map(events, &fp(&1, cfg.([])))

      for opts <- [[], [dirty_above: 0], [dirty_above: 0, yield_every: 1], [yield_every: 3]] do
        yields = Native.__yield_count__()
        {result, moved} = moves(fn -> Native.fingerprint_batch(events, cfg.(opts)) end)
        assert result == expected, inspect(opts)
        # a dirty scheduler keeps going for its slice unless yield_every says
        assert moved >= if(opts[:yield_every] == 1, do: 6, else: 1), inspect(opts)

        if opts[:yield_every] == 1,
          do: assert(Native.__yield_count__() - yields >= length(events) - 1)
      end
    end

    test "4 events of 2 MB on the only online scheduler" do
      events = varied_events(300)
      big = 2 * 1024 * 1024
      heavy = for i <- 1..4, do: %{type: "E#{i}", message: slow_text(big)}
      cfg = Native.config(max_event_bytes: big)
      plain = Native.config([max_event_bytes: big] ++ @plain)
      expected = Native.fingerprint_batch(heavy, plain)

      with_one_scheduler(fn ->
        {result, stats} = while_ticking(fn -> Native.fingerprint_batch(heavy ++ events, cfg) end)
        assert Enum.take(result, 4) == expected
        assert_not_starved(stats)
        {^expected, control} = while_ticking(fn -> Native.fingerprint_batch(heavy, plain) end)
        assert_blocked(control)
      end)
    end

    test "a process killed between schedulers leaves no batch state behind", %{events: events} do
      cfg = Native.config(max_event_bytes: 200_000, dirty_above: 0, yield_every: 1)
      before = Native.__live_batches__()
      long = events |> List.duplicate(40) |> List.flatten()

      for _ <- 1..5 do
        pid = spawn(fn -> Native.fingerprint_batch(long, cfg) end)
        Process.sleep(20)
        Process.exit(pid, :kill)
      end

      :erlang.garbage_collect()
      eventually(fn -> Native.__live_batches__() == before end, 5_000)

      assert Native.fingerprint_batch(events, cfg) ==
               Native.fingerprint_batch(events, Native.config(max_event_bytes: 200_000))
    end

    test "an improper list after heavy events still raises, and the miner keeps the lines before it" do
      miner = Native.miner_new()
      cfg = Native.config(max_event_bytes: 200_000, miner: miner, dirty_above: 0, yield_every: 1)
      ok = %{type: "E", message: slow_text(50_000)}

      assert_raise ArgumentError, ~r/proper list/, fn ->
        Native.fingerprint_batch([ok, ok | :tail], cfg)
      end

      assert Native.miner_stats(miner).lines == 2
    end
  end

  describe "miner_add/2" do
    test "a 2 MB line moves to a dirty scheduler, with the plain path's ids and templates" do
      big = 2 * 1024 * 1024
      line = slow_text(big)
      lines = ["user 1 logged in", line, "user 2 logged in", line <> "x"]
      a = Native.miner_new(max_line: big)
      b = Native.miner_new([max_line: big] ++ @plain)
      {ids, moved} = moves(fn -> Native.miner_add(a, lines) end)
      assert moved >= 1
      assert ids == Native.miner_add(b, lines)
      assert Native.miner_templates(a) == Native.miner_templates(b)

      with_one_scheduler(fn ->
        {_, stats} = while_ticking(fn -> Native.miner_add(a, [line]) end)
        assert_not_starved(stats)
        {_, control} = while_ticking(fn -> Native.miner_add(b, [line]) end)
        assert_blocked(control)
      end)
    end

    test "lines moving back and forth give the same ids and templates" do
      lines = for i <- 1..3_000, do: "request #{i} from #{rem(i, 13)} took #{i} ms #{rem(i, 7)}"
      expected = Native.miner_add(Native.miner_new(@plain), lines)

      for opts <- [[dirty_above: 0], [dirty_above: 0, yield_every: 1], [dirty_above: 20]] do
        m = Native.miner_new(opts)
        {ids, moved} = moves(fn -> Native.miner_add(m, lines) end)
        assert ids == expected
        assert moved >= 1
      end
    end

    # A miner whose every route has many clusters: each addition is over
    # the normal scheduler's budget and goes to a dirty one.
    test "an addition over budget moves, with the same ids" do
      words = for a <- ?a..?z, b <- ?a..?z, do: <<a, b, ?q>>

      lines =
        for {w, i} <- Enum.with_index(words), do: "same start #{w} #{Enum.at(words, -i - 1)}"

      # yield_every: 1 brings it back to a normal scheduler after each line
      a = Native.miner_new(dirty_above: 30, yield_every: 1)
      b = Native.miner_new(@plain)
      {ids, moved} = moves(fn -> Native.miner_add(a, lines) end)
      assert ids == Native.miner_add(b, lines)
      assert moved >= 100
    end
  end

  describe "a shared miner's long readers" do
    setup do
      m = Native.miner_new(max_clusters: 200_000)

      for chunk <- Enum.chunk_every(1..60_000, 5_000) do
        Native.miner_add(m, for(i <- chunk, do: "#{word(i)} alpha #{word(i + 100_000)} beta"))
      end

      {:ok, miner: m}
    end

    defp word(i), do: for(k <- 0..3, into: "", do: <<?a + rem(div(i, Integer.pow(26, k)), 26)>>)

    # Adds small batches until told to stop; then sends the long readers'
    # step count seen after each call.
    defp adder(m) do
      spawn_link(fn -> add_loop(m, []) end)
    end

    defp add_loop(m, seen) do
      receive do
        {:stop, from} -> send(from, {:done, seen})
      after
        0 ->
          [_, _] = Native.miner_add(m, ["user #{length(seen)} logged in", "disk full"])
          add_loop(m, [Native.__walk_steps__() | seen])
      end
    end

    for {name, walk} <- [templates: :miner_templates, snapshot: :miner_snapshot] do
      test "lines are added while #{name} reads 60,000 clusters", %{miner: m} do
        walk = fn -> apply(Native, unquote(walk), [m]) end
        {result, steps, between} = while_calling(fn -> adder(m) end, walk)
        assert steps >= 20
        # a walk holding the lock from its first step to its last lets none
        # end in between; on a loaded machine the adder may get few turns
        assert between >= 1, "#{between} additions ended during the walk's #{steps} steps"
        assert result != []
      end
    end

    test "a snapshot taken while lines come restores, and every live cluster resolves to itself",
         %{miner: m} do
      pid = adder(m)
      snapshot = Native.miner_snapshot(m)
      send(pid, {:stop, self()})
      assert_receive {:done, _}, 10_000
      assert {:ok, r} = Native.miner_restore(snapshot, max_clusters: 200_000)
      templates = Native.miner_templates(r)
      assert length(templates) >= 60_000

      for %{id: id} <- Enum.take_every(templates, 97),
          do: assert(Native.miner_resolve(r, id) == id)
    end

    test "fingerprints with a busy miner equal those with an idle one", %{miner: m} do
      events = for i <- 1..20_000, do: %{type: "E", message: "worker #{rem(i, 40)} stalled #{i}"}
      quiet = Native.miner_new(max_clusters: 200_000)
      expected = Native.fingerprint_batch(events, Native.config(miner: quiet))

      parent = self()

      reader =
        spawn_link(fn ->
          send(parent, :reading)
          Stream.repeatedly(fn -> Native.miner_snapshot(m) end) |> Stream.run()
        end)

      assert_receive :reading
      Process.sleep(5)

      s0 = Native.__walk_steps__()
      result = Native.fingerprint_batch(events, Native.config(miner: m))
      steps = Native.__walk_steps__() - s0
      Process.unlink(reader)
      Process.exit(reader, :kill)
      assert result == expected
      # the snapshots went on while the lines were added
      assert steps >= 1
    end

    # A scheduler bound to one CPU (+sbt, taskset) must not hand the free
    # that CPU only: the kernel lets a time-shared thread there have 50 ms
    # a second of a real-time scheduler's CPU, a stall the bench saw.
    test "a miner dropped on a bound scheduler is freed by a thread that may use the process's CPUs",
         %{miner: m} do
      taskset = System.find_executable("taskset") || flunk("taskset (util-linux) is needed")
      os_pid = :os.getpid()
      process_cpus = cpus_allowed("/proc/#{os_pid}/status")

      bound =
        for dir <- Path.wildcard("/proc/#{os_pid}/task/*"),
            File.read!(Path.join(dir, "comm")) =~ ~r/^[0-9]+_scheduler/,
            do: {Path.basename(dir), cpus_allowed(Path.join(dir, "status"))}

      first = process_cpus |> String.split([",", "-"]) |> hd()
      snapshot = Native.miner_snapshot(m)

      try do
        for {tid, _} <- bound, do: {_, 0} = System.cmd(taskset, ["-p", "-c", first, tid])

        task_dir = "/proc/#{os_pid}/task"
        before = MapSet.new(File.ls!(task_dir))

        # four miners dropped at once: four threads, each freeing some 6 ms
        seen =
          Enum.find_value(1..20, fn _ ->
            spawn(fn ->
              for _ <- 1..4, do: {:ok, _} = Native.miner_restore(snapshot, max_clusters: 200_000)
            end)

            defer_thread_cpus(task_dir, before, System.monotonic_time(:millisecond) + 5_000)
          end)

        assert seen == process_cpus, "the free's thread may use #{inspect(seen)}"
      after
        for {tid, cpus} <- bound, do: System.cmd(taskset, ["-p", "-c", cpus, tid])
      end
    end

    defp cpus_allowed(status_path) do
      with {:ok, status} <- File.read(status_path),
           [_, list] <- Regex.run(~r/^Cpus_allowed_list:\s*(\S+)/m, status),
           do: list,
           else: (_ -> nil)
    end

    # The CPUs a running "self_heal_defer" thread may use, or nil when none
    # was seen before the deadline; only threads not in `before` are read,
    # so that a pass takes some 0.1 ms.
    defp defer_thread_cpus(task_dir, before, deadline) do
      found =
        with {:ok, tids} <- File.ls(task_dir) do
          Enum.find_value(tids, fn tid ->
            dir = Path.join(task_dir, tid)

            with false <- MapSet.member?(before, tid),
                 {:ok, "self_heal_defer\n"} <- File.read(Path.join(dir, "comm")),
                 do: cpus_allowed(Path.join(dir, "status")),
                 else: (_ -> nil)
          end)
        end

      cond do
        is_binary(found) -> found
        System.monotonic_time(:millisecond) > deadline -> nil
        true -> defer_thread_cpus(task_dir, before, deadline)
      end
    end

    test "a process killed during a walk leaves the miner usable", %{miner: m} do
      for walk <- [&Native.miner_templates/1, &Native.miner_snapshot/1] do
        pid = spawn(fn -> walk.(m) end)
        Process.sleep(5)
        Process.exit(pid, :kill)
      end

      assert length(Native.miner_templates(m)) >= 60_000
      assert [_] = Native.miner_add(m, ["still here"])
    end
  end

  describe "watch sets" do
    defp contains_set(opts) do
      set = Watch.new(opts)

      for i <- 1..50 do
        {:ok, _} =
          Watch.add(set,
            id: "c#{i}",
            field: "message",
            op: :contains,
            value: "needle#{i}",
            window_ms: 60_000,
            threshold: 2
          )
      end

      set
    end

    test "an event over dirty_above is observed on a dirty scheduler, with the same fires" do
      events =
        for i <- 1..200,
            do: %{"message" => String.duplicate("a", 20_000) <> "needle#{rem(i, 60)}"}

      expected = Watch.observe(contains_set(@plain), events, 0)
      assert length(expected) == 50

      for opts <- [[], [dirty_above: 0], [dirty_above: 0, yield_every: 1]] do
        {fired, moved} = moves(fn -> Watch.observe(contains_set(opts), events, 0) end)
        assert fired == expected
        assert moved >= 1
      end
    end

    test "events are observed while list/1 reads 100,000 watches" do
      set = Watch.new(max_watches: 100_000)

      for i <- 1..100_000 do
        {:ok, _} =
          Watch.add(set,
            id: "w#{i}",
            field: "f",
            op: :==,
            value: i,
            window_ms: 1_000,
            threshold: 1
          )
      end

      observer = fn -> spawn_link(fn -> observe_loop(set, []) end) end
      {listed, steps, between} = while_calling(observer, fn -> Watch.list(set) end)
      assert length(listed) == 100_000
      assert steps >= 20
      assert between >= 1, "#{between} observations ended during the list's #{steps} steps"
    end

    defp observe_loop(set, seen) do
      receive do
        {:stop, from} -> send(from, {:done, seen})
      after
        0 ->
          [] = Watch.observe(set, [%{"g" => 1}], 0)
          observe_loop(set, [Native.__walk_steps__() | seen])
      end
    end
  end
end
