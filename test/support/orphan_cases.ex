defmodule SelfHeal.OrphanCases do
  @moduledoc false
  # Processes that try to outlive the port program, and the ways the port
  # can end (docs/architecture.md, "Process lifetime"). Shared by
  # test/self_heal/orphans_test.exs and the benchmark test/bench/orphans.exs
  # (which loads this file itself).
  #
  # Five shell scripts (fixed text: a shell is fine for them), each run by
  # the port's `spawn` diagnostic, each starting a process that escapes in
  # its own way and then sleeping itself; every process they start carries
  # one token in its environment, which is how survivors are counted.

  alias SelfHeal.JSON

  @mark "SELF_HEAL_ORPHAN_MARK"

  # What each script starts in the background. The escaped process writes
  # its pid to $READY once it has escaped.
  @cases [
    setsid: ~S|setsid sh -c 'echo $$ > "$READY"; exec sleep 600' &|,
    nohup: ~S|nohup sh -c 'echo $$ > "$READY"; exec sleep 600' >/dev/null 2>&1 &|,
    double_fork: ~S|(sh -c 'echo $$ > "$READY"; exec sleep 600' &)|,
    setpgid:
      ~S|perl -e 'setpgrp(0, 0); open(my $f, ">", $ENV{READY}) or die; | <>
        ~S|print $f "$$\n"; close($f); exec("sleep", "600")' &|,
    ignores_term_hup: ~S|trap '' TERM HUP; setsid sh -c 'echo $$ > "$READY"; exec sleep 600' &|
  ]

  @doc "The case names."
  def names, do: Keyword.keys(@cases)

  @doc """
  How the port ends: `:eof` (the BEAM closes it), `:sigterm` (to the pid
  the BEAM knows), `:kill9` (the server process, which runs the commands),
  `:kill9_watchdog` (the pid the BEAM knows), `:beam_kill9` (kill -9 of a
  separate BEAM that runs `SelfHeal.Port`), `:kill9_both` (watchdog and
  server at once, then a new port starts).
  """
  def modes, do: [:eof, :sigterm, :kill9, :kill9_watchdog, :beam_kill9, :kill9_both]

  @doc """
  Starts the five cases through a port, ends it the `mode` way and waits
  up to `wait_ms` for the marked processes to be gone. Returns
  `%{started: n, left: n}`: the marked processes alive before the end and
  after it (the survivors are then killed, so runs do not add up).
  """
  def run(mode, dir, wait_ms \\ 15_000) do
    token = "orphans-#{mode}-#{System.unique_integer([:positive])}-#{:rand.uniform(1_000_000)}"
    scripts = write_scripts(Path.join(dir, token), token)
    owner = start(mode, scripts)
    # every escaped process in place, and the scripts sleeping themselves
    true = wait_until(fn -> ready?(scripts) end, 15_000)
    wait_until(fn -> length(alive(token)) >= 2 * length(scripts) end, 15_000)
    started = length(alive(token))
    finish(mode, owner)

    # Watchdog and server killed together: what they started is still
    # there (nothing is left to kill it) until a port starts again.
    {restarted, orphaned} =
      if mode == :kill9_both do
        Process.sleep(300)
        orphaned = length(alive(token))
        {open_port(), orphaned}
      else
        {nil, nil}
      end

    wait_until(fn -> alive(token) == [] end, wait_ms)
    left = alive(token)
    Enum.each(left, &System.cmd("kill", ["-9", &1]))
    if restarted, do: close(restarted)
    %{started: started, left: length(left), orphaned_until_restart: orphaned}
  end

  # ------------------------------------------------------------ the cases

  defp write_scripts(dir, token) do
    File.mkdir_p!(dir)

    for {name, line} <- @cases do
      path = Path.join(dir, "#{name}.sh")
      ready = Path.join(dir, "#{name}.ready")

      File.write!(path, """
      #!/bin/sh
      export #{@mark}=#{token}
      export READY=#{ready}
      #{line}
      exec sleep 600
      """)

      %{path: path, ready: ready}
    end
  end

  defp ready?(scripts) do
    Enum.all?(scripts, fn s -> match?({:ok, <<_, _::binary>>}, File.read(s.ready)) end)
  end

  @doc "Live processes (pids as text) whose environment holds the token."
  def alive(token) do
    entry = "#{@mark}=#{token}"

    for pid <- File.ls!("/proc"),
        pid =~ ~r/\A\d+\z/,
        state(pid) not in [nil, "Z"],
        {:ok, env} <- [File.read("/proc/#{pid}/environ")],
        entry in String.split(env, <<0>>),
        do: pid
  end

  defp stat(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, text} ->
        # the name is in parentheses and may hold ") " itself: the fields
        # start after the last one
        [_, state, ppid] = Regex.run(~r/\A.*\) (\S+) (\d+) /s, text)
        {state, String.to_integer(ppid)}

      {:error, _} ->
        nil
    end
  end

  defp state(pid), do: with({state, _} <- stat(pid), do: state)

  @doc "The parent's pid, or nil when the process is gone."
  def parent(pid), do: with({_, ppid} <- stat(pid), do: ppid)

  @doc "The port's server: the child of the pid the BEAM knows."
  def server(os_pid) do
    Enum.find_value(File.ls!("/proc"), fn pid ->
      pid =~ ~r/\A\d+\z/ and match?({_, ^os_pid}, stat(pid)) and String.to_integer(pid)
    end)
  end

  # ------------------------------------------------------------ the port

  defp exe, do: Path.join(:code.priv_dir(:self_heal), "self_heal_port")

  @doc "A raw port, configured with the diagnostics on."
  def open_port do
    port =
      Port.open({:spawn_executable, exe()}, [{:packet, 4}, :binary, :exit_status, :use_stdio])

    call(port, 1, "configure", %{"port" => %{"diagnostics" => true, "workers" => 8}})
    port
  end

  defp call(port, id, cmd, args) do
    Port.command(port, JSON.encode!(%{"id" => id, "cmd" => cmd, "args" => args}))

    receive do
      {^port, {:data, data}} -> %{"id" => ^id, "ok" => _} = JSON.decode!(data)
    after
      10_000 -> raise "no reply to #{cmd}"
    end
  end

  defp start(:beam_kill9, scripts) do
    ebin = Path.join(:code.lib_dir(:self_heal), "ebin")

    code = """
    {:ok, srv} = SelfHeal.Port.start_link(config: %{"port" => %{"diagnostics" => true, "workers" => 8}})
    for s <- String.split(System.fetch_env!("ORPHAN_SCRIPTS"), ":") do
      spawn(fn -> SelfHeal.Port.call(srv, "spawn", %{"argv" => ["/bin/sh", s]}, 3_600_000) end)
    end
    IO.puts("beam " <> System.pid())
    Process.sleep(:infinity)
    """

    beam =
      Port.open({:spawn_executable, System.find_executable("elixir")}, [
        :binary,
        :exit_status,
        {:line, 4096},
        args: ["-pa", ebin, "-e", code],
        env: [{~c"ORPHAN_SCRIPTS", String.to_charlist(Enum.map_join(scripts, ":", & &1.path))}]
      ])

    %{beam: beam, beam_pid: beam_pid(beam)}
  end

  defp start(_mode, scripts) do
    port = open_port()

    for {s, i} <- Enum.with_index(scripts, 2) do
      Port.command(port, JSON.encode!(%{id: i, cmd: "spawn", args: %{argv: ["/bin/sh", s.path]}}))
    end

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    %{port: port, os_pid: os_pid}
  end

  defp beam_pid(beam) do
    receive do
      {^beam, {:data, {:eol, "beam " <> pid}}} -> pid
      {^beam, {:data, _}} -> beam_pid(beam)
    after
      30_000 -> raise "the BEAM running SelfHeal.Port did not start"
    end
  end

  defp finish(:eof, %{port: port}), do: close(port)

  defp finish(:sigterm, %{port: port, os_pid: os_pid}) do
    kill("-TERM", [os_pid])
    await_exit(port)
  end

  defp finish(:kill9, %{port: port, os_pid: os_pid}) do
    kill("-9", [server(os_pid)])
    await_exit(port)
  end

  defp finish(:kill9_watchdog, %{port: port, os_pid: os_pid}) do
    kill("-9", [os_pid])
    await_exit(port)
  end

  defp finish(:beam_kill9, %{beam: beam, beam_pid: pid}) do
    kill("-9", [pid])
    await_exit(beam)
  end

  defp finish(:kill9_both, %{port: port, os_pid: os_pid}) do
    kill("-9", [os_pid, server(os_pid)])
    await_exit(port)
  end

  defp kill(sig, pids), do: {_, 0} = System.cmd("kill", [sig | Enum.map(pids, &to_string/1)])

  defp close(port) do
    Port.close(port)
    flush(port)
  catch
    :error, :badarg -> :ok
  end

  defp await_exit(port) do
    receive do
      {^port, {:exit_status, _}} -> flush(port)
    after
      10_000 -> raise "the port did not exit"
    end
  end

  defp flush(port) do
    receive do
      {^port, _} -> flush(port)
    after
      0 -> :ok
    end
  end

  @doc "Whether fun returns true within ms (polled every 20 ms)."
  def wait_until(fun, ms), do: wait_until(fun, ms, System.monotonic_time(:millisecond) + ms)

  defp wait_until(fun, ms, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(20)
        wait_until(fun, ms, deadline)
    end
  end
end
