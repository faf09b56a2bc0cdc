defmodule SelfHeal.PortTest do
  # The port program over its real protocol, raw and through SelfHeal.Port.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  require Logger

  alias SelfHeal.JSON

  @moduletag :tmp_dir

  defp exe, do: Path.join(:code.priv_dir(:self_heal), "self_heal_port")

  defp start_port(opts \\ []) do
    start_supervised!({SelfHeal.Port, Keyword.merge([backoff_min: 50], opts)})
  end

  # ------------------------------------------------------------ raw port

  defp raw_open(framing \\ {:packet, 4}) do
    opts = [:binary, :exit_status, :use_stdio]
    opts = if framing == :stream, do: opts, else: [framing | opts]
    Port.open({:spawn_executable, exe()}, opts)
  end

  defp raw_send(port, payload) when is_binary(payload), do: Port.command(port, payload)
  defp raw_send(port, map), do: Port.command(port, JSON.encode!(map))

  defp raw_recv(port, timeout \\ 5000) do
    receive do
      {^port, {:data, data}} -> JSON.decode!(data)
    after
      timeout -> flunk("no frame from the port within #{timeout} ms")
    end
  end

  defp os_pid(port) do
    {:os_pid, pid} = Port.info(port, :os_pid)
    pid
  end

  # /proc/PID/stat: {state, pgrp}, or nil when the process is gone.
  defp proc_stat(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} ->
        # The name may itself hold ") ": the fields start after the last one.
        {at, 2} = stat |> :binary.matches(") ") |> List.last()
        after_name = binary_part(stat, at + 2, byte_size(stat) - at - 2)
        [state, _ppid, pgrp | _] = String.split(after_name, " ")
        {state, String.to_integer(pgrp)}

      {:error, _} ->
        nil
    end
  end

  # Gone, or a zombie waiting for whoever reaps orphans here.
  defp gone?(pid), do: match?(nil, proc_stat(pid)) or match?({"Z", _}, proc_stat(pid))

  defp live_group_members(pgid) do
    for entry <- File.ls!("/proc"),
        entry =~ ~r/\A\d+\z/,
        stat = proc_stat(entry),
        match?({state, ^pgid} when state != "Z", stat),
        do: entry
  end

  defp wait_until(fun, ms), do: wait_until_deadline(fun, System.monotonic_time(:millisecond) + ms)

  defp wait_until_deadline(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(10)
        wait_until_deadline(fun, deadline)
    end
  end

  # ------------------------------------------------------------ SelfHeal.Port

  test "version and ping round trip" do
    srv = start_port()
    assert {:ok, %{"version" => "0.1.0", "protocol" => 1}} = SelfHeal.Port.call(srv, "version")
    assert {:ok, %{"pong" => true}} = SelfHeal.Port.call(srv, "ping", %{})
    assert is_integer(SelfHeal.Port.os_pid(srv))
  end

  test "1,000 concurrent requests from many processes get their own replies" do
    srv = start_port(config: %{port: %{workers: 8}})

    results =
      1..1000
      |> Task.async_stream(
        fn i ->
          if rem(i, 3) == 0 do
            {i, SelfHeal.Port.call(srv, "ping")}
          else
            {i, SelfHeal.Port.call(srv, "sleep", %{ms: rem(i, 17)})}
          end
        end,
        max_concurrency: 1000,
        timeout: 30_000
      )
      |> Enum.map(fn {:ok, r} -> r end)

    assert length(results) == 1000

    for {i, reply} <- results do
      if rem(i, 3) == 0,
        do: assert(reply == {:ok, %{"pong" => true}}),
        else: assert(reply == {:ok, %{"slept_ms" => rem(i, 17)}})
    end
  end

  test "a long job does not block a request sent after it" do
    srv = start_port()
    slow = Task.async(fn -> SelfHeal.Port.call(srv, "sleep", %{ms: 2000}) end)
    Process.sleep(100)
    t0 = System.monotonic_time(:millisecond)
    assert {:ok, %{"pong" => true}} = SelfHeal.Port.call(srv, "ping")
    assert System.monotonic_time(:millisecond) - t0 < 500
    assert Task.yield(slow, 0) == nil
    assert {:ok, %{"slept_ms" => 2000}} = Task.await(slow, 5000)
  end

  test "scrub removes secrets before text leaves the machine" do
    srv = start_port()
    text = "login failed password=hunter2 for bob@example.com"

    assert {:ok, %{"text" => out, "redactions" => n}} =
             SelfHeal.Port.call(srv, "scrub", %{text: text})

    assert n >= 2
    refute out =~ "hunter2"
    refute out =~ "bob@example.com"
    assert out =~ "login failed"
    assert {:error, %{code: "bad_args"}} = SelfHeal.Port.call(srv, "scrub", %{text: 1})
  end

  test "errors of commands and timeouts" do
    srv = start_port()

    assert {:error, %{code: "unknown_command"}} = SelfHeal.Port.call(srv, "no_such_command")
    assert {:error, %{code: "bad_args"}} = SelfHeal.Port.call(srv, "sleep", %{ms: -1})
    assert {:error, %{code: "bad_args"}} = SelfHeal.Port.call(srv, "sleep", %{ms: 600_001})
    assert {:error, %{code: "bad_args"}} = SelfHeal.Port.call(srv, "sleep", %{ms: {:not, :json}})
    assert {:error, :timeout} = SelfHeal.Port.call(srv, "sleep", %{ms: 300}, 50)
    # the late reply is dropped; the server keeps serving
    Process.sleep(400)
    assert {:ok, %{"pong" => true}} = SelfHeal.Port.call(srv, "ping")
  end

  test "notifications reach subscribers; a dead subscriber is dropped" do
    srv = start_port()
    :ok = SelfHeal.Port.subscribe(srv)
    other = spawn(fn -> SelfHeal.Port.subscribe(srv) end)
    ref = Process.monitor(other)
    assert_receive {:DOWN, ^ref, :process, ^other, _}

    assert {:ok, %{"exit_status" => 0, "pid" => pid}} =
             SelfHeal.Port.call(srv, "spawn_sleep", %{seconds: 0})

    assert_receive {:self_heal_port, %{"event" => "child_started", "pid" => ^pid, "pgid" => ^pid}}
    assert map_size(:sys.get_state(srv).subscribers) == 1
  end

  test "a command the port lacks is logged once, and the server lives on" do
    srv = start_port()

    log =
      capture_log(fn ->
        for _ <- 1..3, do: SelfHeal.Port.cast(srv, "not_there_yet", %{})
        assert {:ok, _} = SelfHeal.Port.call(srv, "ping")
        Logger.flush()
      end)

    assert length(String.split(log, ~s(no command "not_there_yet"))) == 2

    # The orchestrator side: escalate and update return at once whatever
    # the port answers.
    group = %{
      fingerprint: "abc",
      count: 3,
      severity: :high,
      first_seen: 1_700_000_000_123_456,
      last_seen: 1_700_000_001_000_000
    }

    capture_log(fn ->
      assert :ok = SelfHeal.Port.escalate(srv, group)
      assert :ok = SelfHeal.Port.update(srv, {group, {:seen_within, 1000}})
      assert {:ok, _} = SelfHeal.Port.call(srv, "ping")
    end)

    assert Process.alive?(srv)
  end

  test "kill -9: restart with backoff, configure again, re-send only what is safe" do
    srv =
      start_port(
        backoff_min: 300,
        config: %{port: %{workers: 4}},
        retry_safe: ["sleep" | SelfHeal.Port.retry_safe()]
      )

    :ok = SelfHeal.Port.subscribe(srv)
    assert_receive {:self_heal_port, %{"event" => "port_configured", "restarts" => 0}}, 5000
    unsafe = Task.async(fn -> SelfHeal.Port.call(srv, "spawn_sleep", %{seconds: 30}) end)
    assert_receive {:self_heal_port, %{"event" => "child_started", "pid" => child}}, 5000
    safe = Task.async(fn -> SelfHeal.Port.call(srv, "sleep", %{ms: 500}) end)
    assert wait_until(fn -> map_size(:sys.get_state(srv).pending) == 2 end, 2000)

    old = SelfHeal.Port.os_pid(srv)

    capture_log(fn ->
      {_, 0} = System.cmd("kill", ["-9", Integer.to_string(old)])
      killed_at = System.monotonic_time(:millisecond)
      assert_receive {:self_heal_port, %{"event" => "port_exited"}}, 2000
      assert {:error, :port_restarting} = SelfHeal.Port.call(srv, "ping")
      assert {:error, :port_crashed} = Task.await(unsafe, 2000)
      assert_receive {:self_heal_port, %{"event" => "port_configured", "restarts" => 1}}, 3000
      assert System.monotonic_time(:millisecond) - killed_at >= 300
    end)

    assert {:ok, %{"slept_ms" => 500}} = Task.await(safe, 5000)
    assert {:ok, %{"pong" => true}} = SelfHeal.Port.call(srv, "ping")
    assert SelfHeal.Port.os_pid(srv) not in [nil, old]
    # The kernel killed the orphaned child (PR_SET_PDEATHSIG).
    assert wait_until(fn -> gone?(child) end, 2000)
  end

  test "backoff doubles while the port keeps dying" do
    srv = start_port(backoff_min: 100, backoff_max: 250)
    :ok = SelfHeal.Port.subscribe(srv)
    assert_receive {:self_heal_port, %{"event" => "port_configured", "restarts" => 0}}, 5000

    capture_log(fn ->
      for {restarts, backoff} <- [{1, 100}, {2, 200}, {3, 250}] do
        {_, 0} = System.cmd("kill", ["-9", Integer.to_string(SelfHeal.Port.os_pid(srv))])
        assert_receive {:self_heal_port, %{"event" => "port_exited"}}, 2000
        assert :sys.get_state(srv).backoff == backoff

        assert_receive {:self_heal_port,
                        %{"event" => "port_configured", "restarts" => ^restarts}},
                       3000
      end
    end)
  end

  test "a configuration the port refuses is reported to subscribers" do
    # `configure` needs an object: a list is refused with bad_args.
    log =
      capture_log(fn ->
        srv = start_port(config: [1, 2])
        :ok = SelfHeal.Port.subscribe(srv)
        # the reply may have come before the subscription: check the state
        assert wait_until(fn -> :sys.get_state(srv).pending == %{} end, 2000)
        assert {:ok, _} = SelfHeal.Port.call(srv, "ping")
        Logger.flush()
      end)

    assert log =~ "refused its configuration"
  end

  # ------------------------------------------------------------ raw protocol

  test "bad JSON, non-objects, missing ids and unknown commands get the documented errors" do
    port = raw_open()

    raw_send(port, "{not json")
    assert %{"id" => nil, "error" => %{"code" => "bad_json"}} = raw_recv(port)

    raw_send(port, "[1, 2]")
    assert %{"id" => nil, "error" => %{"code" => "bad_request"}} = raw_recv(port)

    raw_send(port, ~s({"cmd": "ping"}))
    assert %{"id" => nil, "error" => %{"code" => "bad_request", "message" => m}} = raw_recv(port)
    assert m =~ "id"

    raw_send(port, ~s({"id": "7", "cmd": "ping"}))
    assert %{"id" => nil, "error" => %{"code" => "bad_request"}} = raw_recv(port)

    raw_send(port, %{id: 8})
    assert %{"id" => 8, "error" => %{"code" => "bad_request"}} = raw_recv(port)

    raw_send(port, %{id: 9, cmd: "ping", args: [1]})
    assert %{"id" => 9, "error" => %{"code" => "bad_request"}} = raw_recv(port)

    raw_send(port, %{id: 10, cmd: "nope"})
    assert %{"id" => 10, "error" => %{"code" => "unknown_command"}} = raw_recv(port)

    raw_send(port, ~s({"id": 11, "id": 12, "cmd": "ping"}))
    assert %{"id" => nil, "error" => %{"code" => "bad_json"}} = raw_recv(port)

    raw_send(port, "")
    assert %{"id" => nil, "error" => %{"code" => "bad_json"}} = raw_recv(port)

    raw_send(port, %{id: 13, cmd: "ping"})
    assert %{"id" => 13, "ok" => %{"pong" => true}} = raw_recv(port)
    Port.close(port)
  end

  test "an oversize frame is refused and discarded; the port keeps serving" do
    port = raw_open(:stream)
    size = 9 * 1024 * 1024
    Port.command(port, <<size::32>>)
    chunk = :binary.copy("x", 1024 * 1024)
    for _ <- 1..9, do: Port.command(port, chunk)
    ping = JSON.encode!(%{id: 1, cmd: "ping"})
    Port.command(port, <<byte_size(ping)::32, ping::binary>>)

    [first, second] = read_raw_frames(port, 2, "")
    assert %{"id" => nil, "error" => %{"code" => "frame_too_large"}} = first
    assert %{"id" => 1, "ok" => %{"pong" => true}} = second
    Port.close(port)
  end

  defp read_raw_frames(_port, 0, _buf), do: []

  defp read_raw_frames(port, n, <<len::32, payload::binary-size(len), rest::binary>>),
    do: [JSON.decode!(payload) | read_raw_frames(port, n - 1, rest)]

  defp read_raw_frames(port, n, buf) do
    receive do
      {^port, {:data, data}} -> read_raw_frames(port, n, buf <> data)
    after
      5000 -> flunk("port sent #{byte_size(buf)} bytes, expected #{n} more frames")
    end
  end

  # Runs the port with stdin from a file; returns {status, output}.
  defp run_with_stdin(bytes, dir) do
    file = Path.join(dir, "stdin-#{System.unique_integer([:positive])}")
    File.write!(file, bytes)

    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        args: ["-c", ~s(exec "$0" < "$1"), exe(), file]
      ])

    collect(port, "")
  end

  defp collect(port, acc) do
    receive do
      {^port, {:data, data}} -> collect(port, acc <> data)
      {^port, {:exit_status, status}} -> {status, acc}
    after
      5000 -> flunk("the port did not exit")
    end
  end

  test "a frame cut short by EOF is discarded and the port exits 0", %{tmp_dir: dir} do
    ping = JSON.encode!(%{id: 1, cmd: "ping"})
    bytes = <<byte_size(ping)::32, ping::binary, 100::32, ~s({"id": 2, "cmd)>>
    assert {0, out} = run_with_stdin(bytes, dir)
    assert [%{"id" => 1}] = read_frames(out)

    assert {0, ""} = run_with_stdin(<<0, 0>>, dir)
    assert {0, ""} = run_with_stdin("", dir)
  end

  defp read_frames(<<len::32, payload::binary-size(len), rest::binary>>),
    do: [JSON.decode!(payload) | read_frames(rest)]

  defp read_frames(<<>>), do: []

  test "stdin EOF while a child runs: exit within 2 s, no process of its group left" do
    port = raw_open()
    port_pid = os_pid(port)
    raw_send(port, %{id: 1, cmd: "spawn_sleep", args: %{seconds: 30}})
    assert %{"event" => "child_started", "pgid" => pgid} = raw_recv(port)
    assert [_] = live_group_members(pgid)

    t0 = System.monotonic_time(:millisecond)
    Port.close(port)
    assert wait_until(fn -> gone?(port_pid) end, 3000)
    assert System.monotonic_time(:millisecond) - t0 < 2000
    assert live_group_members(pgid) == []
  end

  test "SIGTERM while a job runs: the job gets `stopping`, the port exits 0" do
    port = raw_open()
    raw_send(port, %{id: 1, cmd: "spawn_sleep", args: %{seconds: 30}})
    assert %{"event" => "child_started", "pgid" => pgid} = raw_recv(port)
    raw_send(port, %{id: 2, cmd: "sleep", args: %{ms: 30_000}})
    Process.sleep(50)
    {_, 0} = System.cmd("kill", ["-TERM", Integer.to_string(os_pid(port))])

    replies = for _ <- 1..2, do: raw_recv(port, 3000)
    assert Enum.sort(Enum.map(replies, & &1["id"])) == [1, 2]
    assert Enum.all?(replies, &match?(%{"error" => %{"code" => "stopping"}}, &1))
    assert_receive {^port, {:exit_status, 0}}, 2000
    assert live_group_members(pgid) == []
  end

  # ------------------------------------------------------------ shell use

  test "run mode prints JSON and exits 0, 1 or 2", %{tmp_dir: dir} do
    {out, 0} = System.cmd(exe(), ["run", "ping"])
    assert JSON.decode!(out) == %{"id" => 1, "ok" => %{"pong" => true}}

    {out, 1} = System.cmd(exe(), ["run", "no_such_command"])
    assert %{"error" => %{"code" => "unknown_command"}} = JSON.decode!(out)

    args = Path.join(dir, "args.json")
    File.write!(args, ~s({"ms": 5}))
    config = Path.join(dir, "config.json")
    File.write!(config, ~s({"port": {"workers": 2}}))
    {out, 0} = System.cmd(exe(), ["run", "sleep", "--args", args, "--config", config])
    assert JSON.decode!(out)["ok"] == %{"slept_ms" => 5}

    File.write!(args, ~s({"ms": "soon"}))
    {out, 1} = System.cmd(exe(), ["run", "sleep", "--args", args])
    assert %{"error" => %{"code" => "bad_args"}} = JSON.decode!(out)

    File.write!(args, "{broken")
    {_, 2} = System.cmd(exe(), ["run", "sleep", "--args", args], stderr_to_stdout: true)
    {_, 2} = System.cmd(exe(), ["run"], stderr_to_stdout: true)
    {_, 2} = System.cmd(exe(), ["run", "ping", "--bogus"], stderr_to_stdout: true)
  end

  # ------------------------------------------------------------ JSON and wire form

  test "JSON round trip, escapes, surrogate pairs, invalid UTF-8, bounds" do
    term = %{
      "a" => [1, -2, 3.5, true, false, nil, "x\"y\\z\n\t\u0001é😀"],
      "b" => %{"c" => %{}},
      "d" => []
    }

    assert JSON.decode!(JSON.encode!(term)) == term
    assert JSON.encode!(%{k: :v, n: nil}) |> JSON.decode!() == %{"k" => "v", "n" => nil}
    assert JSON.decode!(~S("\ud83d\ude00 \u00e9 \/")) == "😀 é /"
    assert {:error, _} = JSON.decode(~S("\ud83d x"))
    assert {:error, _} = JSON.decode(~S("\ude00"))
    assert {:error, _} = JSON.decode(~S("\u12G4"))
    assert JSON.decode!("1e3") == 1000.0
    assert JSON.decode!("-0.5E-2") == -0.005
    assert JSON.decode!(" [ 1 , { \"a\" : 2 } ] ") == [1, %{"a" => 2}]
    assert JSON.decode!(~s({"a": 1, "a": 2})) == %{"a" => 2}

    for bad <- [
          "",
          "{",
          "[1,]",
          "{\"a\"}",
          "01",
          "1.",
          "-",
          "tru",
          "\"a",
          "\"a\nb\"",
          "1 2",
          "{\"a\":1,}",
          "1e999",
          <<?", 0xFF, ?">>
        ] do
      assert {:error, _} = JSON.decode(bad), "accepted #{inspect(bad)}"
    end

    deep = String.duplicate("[", 129) <> String.duplicate("]", 129)
    assert {:error, reason} = JSON.decode(deep)
    assert reason =~ "nesting"
    assert {:ok, _} = JSON.decode(String.duplicate("[", 100) <> String.duplicate("]", 100))

    # Invalid UTF-8 is replaced, so the port's parser accepts it.
    assert JSON.encode!(<<"a", 0xFF, "b">>) == "\"a\uFFFDb\""
    assert_raise ArgumentError, fn -> JSON.encode!(%{a: self()}) end
  end

  test "wire_group: strings, unix ms, stack text" do
    stack = [{SelfHeal.Demo, :run, 2, [file: ~c"lib/demo.ex", line: 12]}]

    group = %{
      fingerprint: "fp",
      count: 2,
      severity: :critical,
      first_seen: 1_700_000_000_123_456,
      last_seen: 1_700_000_000_999_999,
      services: ["api"],
      top_frame: nil,
      sample: %SelfHeal.Event{
        message: "boom",
        stacktrace: stack,
        timestamp: 1_700_000_000_500_000
      },
      extra: {:tuple, self(), Bitwise.bsl(1, 70)}
    }

    wire = SelfHeal.Port.wire_group(group)
    assert wire["severity"] == "critical"
    assert wire["first_seen"] == 1_700_000_000_123
    assert wire["last_seen"] == 1_700_000_000_999
    assert wire["sample"]["timestamp"] == 1_700_000_000_500
    assert wire["sample"]["stacktrace"] =~ "lib/demo.ex:12: SelfHeal.Demo.run/2"
    assert ["tuple", "#PID<" <> _, "1180591620717411303424"] = wire["extra"]
    assert JSON.decode!(JSON.encode!(wire)) == wire
  end
end
