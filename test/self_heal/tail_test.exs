defmodule SelfHeal.TailTest do
  # Real files in a tmp dir, a real collector. The collector runs without
  # its template miner so that every distinct line is its own group and
  # the samples show exactly which lines arrived.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog

  alias SelfHeal.{Collector, Tail}

  @moduletag :tmp_dir

  setup do
    name = :"tail_collector_#{System.unique_integer([:positive])}"
    start_supervised!({Collector, name: name, flush_ms: 5, miner: false}, id: name)
    %{collector: name}
  end

  # the file is created first (a missing file is logged) unless touch: false
  defp tail(ctx, opts) do
    {touch?, opts} = Keyword.pop(opts, :touch, true)
    if touch? and opts[:path], do: File.touch!(opts[:path])

    opts =
      Keyword.merge(
        [collector: ctx.collector, poll_ms: 10, multiline_timeout_ms: 60, from: :beginning],
        opts
      )

    start_supervised!({Tail, opts}, id: make_ref())
  end

  # distinct words the normaliser keeps as they are (no digits, no hex)
  defp word(i) do
    i
    |> Integer.digits(20)
    |> Enum.map(&<<?g + &1>>)
    |> Enum.join()
  end

  defp lines(prefix, range), do: Enum.map(range, &"ERROR #{prefix} #{word(&1)}")

  defp append(path, lines) do
    File.write!(path, Enum.map(lines, &[&1, "\n"]), [:append])
  end

  defp messages(collector) do
    collector |> Collector.groups() |> Enum.map(& &1.sample.message) |> Enum.sort()
  end

  defp total(collector), do: collector |> Collector.groups() |> Enum.map(& &1.count) |> Enum.sum()

  defp eventually(fun, timeout \\ 3000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    fun.()
  rescue
    error in [ExUnit.AssertionError] ->
      if System.monotonic_time(:millisecond) > deadline do
        reraise error, __STACKTRACE__
      else
        Process.sleep(20)
        do_eventually(fun, deadline)
      end
  end

  defp sample(collector, prefix) do
    Enum.find(Collector.groups(collector), &String.starts_with?(&1.sample.message, prefix))
  end

  test "appended lines are picked up; with from: :end earlier ones are not", ctx do
    path = Path.join(ctx.tmp_dir, "app.log")
    append(path, ["ERROR before start"])
    pid = tail(ctx, path: path, from: :end, service: "api")

    append(path, lines("appended", 1..20))
    expected = Enum.sort(lines("appended", 1..20))
    eventually(fn -> assert messages(ctx.collector) == expected end)

    [g | _] = Collector.groups(ctx.collector)
    assert %{source: :tail, level: :error, service: "api", metadata: %{path: ^path}} = g.sample
    assert %{lines: 20, events: 20, dropped: 0} = Tail.stats(pid)
  end

  test "from: :end starts at the beginning of an unfinished last line", ctx do
    path = Path.join(ctx.tmp_dir, "app.log")
    File.write!(path, "ERROR done\nERROR half ")
    tail(ctx, path: path, from: :end)
    append(path, ["written"])
    eventually(fn -> assert messages(ctx.collector) == ["ERROR half written"] end)
  end

  test "rotation by rename and a new file loses no line", ctx do
    path = Path.join(ctx.tmp_dir, "app.log")
    File.write!(path, "")
    tail(ctx, path: path)

    # the writer keeps its handle across the rename, as a logger does until
    # it reopens
    {:ok, io} = File.open(path, [:append, :binary])
    IO.binwrite(io, Enum.map(lines("old", 1..30), &[&1, "\n"]))
    File.rename!(path, path <> ".1")
    IO.binwrite(io, Enum.map(lines("late", 1..5), &[&1, "\n"]))
    File.close(io)
    append(path, lines("new", 1..30))

    expected = Enum.sort(lines("old", 1..30) ++ lines("late", 1..5) ++ lines("new", 1..30))
    eventually(fn -> assert messages(ctx.collector) == expected end)
    assert total(ctx.collector) == 65

    append(path, lines("after", 1..3))
    eventually(fn -> assert total(ctx.collector) == 68 end)
  end

  test "copytruncate: a file truncated below the offset is read again from 0", ctx do
    path = Path.join(ctx.tmp_dir, "app.log")
    tail(ctx, path: path)
    append(path, lines("first", 1..20))
    eventually(fn -> assert total(ctx.collector) == 20 end)

    File.cp!(path, path <> ".1")
    File.write!(path, "")
    append(path, lines("second", 1..3))

    eventually(fn ->
      assert messages(ctx.collector) == Enum.sort(lines("first", 1..20) ++ lines("second", 1..3))
    end)
  end

  test "a Java stack trace is one event with its stack", ctx do
    path = Path.join(ctx.tmp_dir, "java.log")
    tail(ctx, path: path)

    File.write!(path, """
    2024-05-01 10:00:00.123 ERROR [main] com.example.OrderService - order failed
    java.lang.IllegalStateException: no stock
    \tat com.example.OrderService.place(OrderService.java:42)
    \tat com.example.OrderController.post(OrderController.java:17)
    Caused by: java.io.IOException: disk gone
    \tat com.example.Store.read(Store.java:9)
    \t... 2 more
    2024-05-01 10:00:01.000 ERROR [main] com.example.Other - next line
    """)

    eventually(fn -> assert length(Collector.groups(ctx.collector)) == 2 end)
    g = sample(ctx.collector, "2024-05-01 10:00:00.123")
    assert g.count == 1
    assert g.sample.message =~ "order failed"
    assert g.sample.type == "java.lang.IllegalStateException"
    assert g.sample.stacktrace =~ ~r/\Ajava.lang.IllegalStateException: no stock\n\tat /
    assert g.sample.stacktrace =~ "... 2 more"
    assert %{module: "com.example.OrderService", line: 42} = g.top_frame

    # the last event goes out after multiline_timeout_ms of silence
    assert sample(ctx.collector, "2024-05-01 10:00:01.000").sample.stacktrace == nil
  end

  test "an Elixir crash report with its stack is one event", ctx do
    path = Path.join(ctx.tmp_dir, "elixir.log")
    tail(ctx, path: path)

    File.write!(path, """
    10:00:00.000 [info] starting
    10:00:00.100 [error] GenServer MyApp.Worker terminating
    ** (RuntimeError) boom
        (my_app 0.1.0) lib/my_app/worker.ex:10: MyApp.Worker.handle_call/3
        (stdlib 4.0) gen_server.erl:1149: :gen_server.try_handle_call/4
    Last message (from #PID<0.200.0>): :go
    State: %{}
    """)

    eventually(fn -> assert [_] = Collector.groups(ctx.collector) end)
    [g] = Collector.groups(ctx.collector)
    assert g.sample.message == "10:00:00.100 [error] GenServer MyApp.Worker terminating"
    assert g.sample.type == "RuntimeError"
    assert g.sample.stacktrace =~ "lib/my_app/worker.ex:10"
    assert g.sample.stacktrace =~ "State: %{}"
    assert %{module: "MyApp.Worker", line: 10} = g.top_frame
  end

  test "a Python traceback is one event named by its exception line", ctx do
    path = Path.join(ctx.tmp_dir, "py.log")
    tail(ctx, path: path)

    File.write!(path, """
    Traceback (most recent call last):
      File "/srv/app/handler.py", line 12, in handle
        total = compute(order)
      File "/srv/app/calc.py", line 3, in compute
        return 1 / 0
    ZeroDivisionError: division by zero
    ERROR:root:after
    """)

    eventually(fn -> assert length(Collector.groups(ctx.collector)) == 2 end)
    g = sample(ctx.collector, "ZeroDivisionError")
    assert g.sample.type == "ZeroDivisionError"
    assert g.sample.stacktrace =~ ~s(File "/srv/app/calc.py", line 3)
    assert sample(ctx.collector, "ERROR:root:after")
  end

  test "a stack written in pieces is joined; the JVM's own header starts an event", ctx do
    path = Path.join(ctx.tmp_dir, "pieces.log")
    tail(ctx, path: path, multiline_timeout_ms: 300)

    append(path, ["ERROR [worker] job failed"])
    Process.sleep(40)
    append(path, ["com.example.JobError: stuck", "\tat com.example.Job.run(Job.java:7)"])
    Process.sleep(40)
    append(path, ["\tat java.lang.Thread.run(Thread.java:833)"])
    append(path, [~s(Exception in thread "main" java.lang.OutOfMemoryError: heap)])
    append(path, ["\tat com.example.Main.main(Main.java:3)"])

    eventually(fn -> assert length(Collector.groups(ctx.collector)) == 2 end)
    job = sample(ctx.collector, "ERROR [worker]").sample
    assert job.type == "com.example.JobError"
    assert job.stacktrace =~ "Thread.java:833"
    oom = sample(ctx.collector, "Exception in thread").sample
    assert oom.type == "java.lang.OutOfMemoryError"
    assert oom.stacktrace == "\tat com.example.Main.main(Main.java:3)"
  end

  test "small reads: lines and UTF-8 characters split across chunks stay whole", ctx do
    path = Path.join(ctx.tmp_dir, "chunks.log")
    tail(ctx, path: path, read_bytes: 5)
    text = ["ERROR größe über", "ERROR 日本語のログ", "ERROR plain"]
    append(path, text)
    eventually(fn -> assert messages(ctx.collector) == Enum.sort(text) end)
  end

  test "levels: extracted, and lines below min_level dropped with their stack", ctx do
    path = Path.join(ctx.tmp_dir, "levels.log")
    pid = tail(ctx, path: path, min_level: :warning)

    File.write!(path, """
    12:00 [info] just info
        with a continuation
    12:01 [warning] disk almost full
    level=error msg="write failed"
    {"level":"debug","msg":"noise"}
    2024-01-01 FATAL kernel panic
    no level at all
    """)

    eventually(fn -> assert length(Collector.groups(ctx.collector)) == 4 end)
    levels = Map.new(Collector.groups(ctx.collector), &{&1.sample.message, &1.sample.level})

    assert levels == %{
             "12:01 [warning] disk almost full" => :warning,
             ~s(level=error msg="write failed") => :error,
             "2024-01-01 FATAL kernel panic" => :critical,
             "no level at all" => :error
           }

    assert %{filtered: 2} = Tail.stats(pid)
  end

  test "a 1 MB line is cut and flagged; the next line is whole", ctx do
    path = Path.join(ctx.tmp_dir, "big.log")
    pid = tail(ctx, path: path, max_line: 4096)

    File.write!(path, ["ERROR ", String.duplicate("x", 1_000_000), "\nERROR small after\n"])

    eventually(fn -> assert length(Collector.groups(ctx.collector)) == 2 end)
    big = sample(ctx.collector, "ERROR xxx")
    assert big.sample.truncated
    assert byte_size(big.sample.message) == 4096
    refute sample(ctx.collector, "ERROR small after").sample.truncated
    assert %{truncated: 1} = Tail.stats(pid)
  end

  test "the default max_line is 64 KiB", ctx do
    path = Path.join(ctx.tmp_dir, "big.log")
    tail(ctx, path: path)
    File.write!(path, ["ERROR ", String.duplicate("y", 1_000_000), "\n"])
    eventually(fn -> assert [_] = Collector.groups(ctx.collector) end)
    [g] = Collector.groups(ctx.collector)
    assert g.sample.truncated and byte_size(g.sample.message) == 65_536
  end

  test "invalid UTF-8, NUL bytes and CRLF are tolerated", ctx do
    path = Path.join(ctx.tmp_dir, "bin.log")
    tail(ctx, path: path)
    File.write!(path, <<"ERROR bad ", 0xFF, 0xFE, " bytes", 0, 0, "\r\n", 0, 0, 0, "\n">>)
    eventually(fn -> assert [_] = Collector.groups(ctx.collector) end)
    [g] = Collector.groups(ctx.collector)
    assert g.sample.message == "ERROR bad \uFFFD\uFFFD bytes"
  end

  test "a file that appears later is picked up from its beginning", ctx do
    path = Path.join(ctx.tmp_dir, "later.log")

    capture_log(fn ->
      pid = tail(ctx, path: path, from: :end, touch: false)
      Process.sleep(30)
      assert %{files: %{^path => %{status: :waiting}}} = Tail.stats(pid)

      append(path, lines("later", 1..3))
      eventually(fn -> assert messages(ctx.collector) == Enum.sort(lines("later", 1..3)) end)
    end)
  end

  test "a deleted file does not crash the tailer and is waited for again", ctx do
    path = Path.join(ctx.tmp_dir, "gone.log")
    pid = tail(ctx, path: path)
    append(path, lines("one", 1..2))
    eventually(fn -> assert total(ctx.collector) == 2 end)

    capture_log(fn ->
      File.rm!(path)
      eventually(fn -> assert %{files: %{^path => %{status: :waiting}}} = Tail.stats(pid) end)
      Process.sleep(50)
      assert Process.alive?(pid)

      append(path, lines("two", 1..2))
      eventually(fn -> assert total(ctx.collector) == 4 end)
    end)
  end

  test "a path that cannot be read is retried without crashing", ctx do
    path = Path.join(ctx.tmp_dir, "dir.log")
    File.mkdir_p!(path)

    log =
      capture_log(fn ->
        pid = tail(ctx, path: path)
        Process.sleep(50)
        assert %{files: %{^path => %{status: :error}}} = Tail.stats(pid)
        File.rmdir!(path)
        append(path, lines("file", 1..1))
        eventually(fn -> assert total(ctx.collector) == 1 end)
      end)

    # one warning for the one state change
    assert length(String.split(log, "cannot read")) == 2
  end

  test "a glob follows its files, also across a rotation to a name it matches", ctx do
    dir = ctx.tmp_dir
    a = Path.join(dir, "a.log")
    append(a, ["ERROR a first"])
    tail(ctx, paths: [Path.join(dir, "*.log*")], rescan_ms: 20)

    append(Path.join(dir, "b.log"), ["ERROR b first"])
    eventually(fn -> assert messages(ctx.collector) == ["ERROR a first", "ERROR b first"] end)

    # a.log -> a.log.1 (still matched) and a new a.log: nothing read twice
    File.rename!(a, a <> ".1")
    append(a, ["ERROR a second"])
    append(a <> ".1", ["ERROR a late"])

    eventually(fn ->
      assert messages(ctx.collector) ==
               ["ERROR a first", "ERROR a late", "ERROR a second", "ERROR b first"]
    end)

    Process.sleep(200)
    assert total(ctx.collector) == 4
  end

  test "an overloaded collector: events are kept and retried", ctx do
    name = :"tail_small_#{System.unique_integer([:positive])}"

    start_supervised!({Collector, name: name, flush_ms: 5, miner: false, max_pending: 10},
      id: name
    )

    path = Path.join(ctx.tmp_dir, "burst.log")
    pid = tail(%{ctx | collector: name}, path: path)

    append(path, lines("burst", 1..40))
    eventually(fn -> assert messages(name) == Enum.sort(lines("burst", 1..40)) end, 8000)
    assert Collector.stats(name).shed > 0
    assert %{dropped: 0, buffered: 0} = Tail.stats(pid)
  end

  test "a full buffer drops and counts; reading waits while it is full", ctx do
    path = Path.join(ctx.tmp_dir, "full.log")
    # no collector under this name: every ingest is refused
    pid = tail(ctx, path: path, collector: :no_such_collector, max_buffer: 5)

    log =
      capture_log(fn ->
        append(path, lines("full", 1..20))
        eventually(fn -> assert %{buffered: 5, dropped: 15} = Tail.stats(pid) end)
      end)

    assert log =~ "buffer full"
  end
end
