defmodule SelfHeal.OrphansTest do
  # Nothing the port program starts outlives it, whatever the process did
  # (setsid, nohup, a double fork, setpgid, SIGTERM and SIGHUP ignored) and
  # however the port ended (docs/architecture.md, "Process lifetime"). Real
  # port processes, real shell scripts, survivors found by a token in
  # their environment (SelfHeal.OrphanCases).
  use ExUnit.Case, async: false

  alias SelfHeal.OrphanCases
  alias SelfHeal.JSON

  @moduletag :tmp_dir

  for mode <- [:eof, :sigterm, :kill9, :kill9_watchdog, :beam_kill9] do
    test "#{mode}: nothing the port started is left", %{tmp_dir: dir} do
      result = OrphanCases.run(unquote(mode), dir)
      # each of the five scripts and the process it left behind
      assert result.started >= 10
      assert result.left == 0
    end
  end

  test "watchdog and server killed together: the next port kills what they left",
       %{tmp_dir: dir} do
    result = OrphanCases.run(:kill9_both, dir)
    assert result.started >= 10
    assert result.orphaned_until_restart > 0
    assert result.left == 0
  end

  test "orphans that exit while the port runs are reaped; commands keep their children's status",
       %{tmp_dir: dir} do
    port = OrphanCases.open_port()
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    server = OrphanCases.server(os_pid)
    pids = Path.join(dir, "orphans.pid")
    # ten short-lived orphans (double forks into new sessions, so the kill
    # of the script's group at its exit misses them), handed to the server;
    # they exit while other commands wait for their own children. Each
    # writes its pid once in its session; the script waits for all ten.
    script =
      ~S|: > "$1"; for i in 1 2 3 4 5 6 7 8 9 10; do | <>
        ~S|(setsid sh -c 'echo $$ >> "$1"; exec sleep 2' sh "$1" &); done; | <>
        ~S|while [ "$(wc -l < "$1")" -lt 10 ]; do sleep 0.05; done; exit 5|

    for id <- 3..8,
        do: send_frame(port, id, "spawn", %{argv: ["/bin/sh", "-c", "sleep 2.5; exit 3"]})

    send_frame(port, 2, "spawn", %{argv: ["/bin/sh", "-c", script, "sh", pids]})
    assert %{2 => %{"ok" => %{"exit_status" => 5}}} = receive_replies(port, 1)
    orphans = pids |> File.read!() |> String.split() |> Enum.map(&String.to_integer/1)
    assert length(orphans) == 10
    assert Enum.map(orphans, &OrphanCases.parent/1) == List.duplicate(server, 10)

    replies = receive_replies(port, 6)
    for id <- 3..8, do: assert(%{"ok" => %{"exit_status" => 3}} = replies[id])

    # gone for good: reaped by the server, not zombies waiting for it
    assert OrphanCases.wait_until(
             fn -> Enum.all?(orphans, &(not File.exists?("/proc/#{&1}"))) end,
             3000
           )

    assert File.exists?("/proc/#{server}")
    Port.close(port)
  end

  test "spawn is a diagnostic the configuration must allow" do
    exe = Path.join(:code.priv_dir(:self_heal), "self_heal_port")
    port = Port.open({:spawn_executable, exe}, [{:packet, 4}, :binary, :exit_status, :use_stdio])
    send_frame(port, 1, "spawn", %{argv: ["/bin/true"]})
    assert %{1 => %{"error" => %{"code" => "disabled"}}} = receive_replies(port, 1)
    Port.close(port)
  end

  defp send_frame(port, id, cmd, args),
    do: Port.command(port, JSON.encode!(%{id: id, cmd: cmd, args: args}))

  # n replies by id (notifications skipped)
  defp receive_replies(port, n, acc \\ %{})
  defp receive_replies(_port, 0, acc), do: acc

  defp receive_replies(port, n, acc) do
    receive do
      {^port, {:data, data}} ->
        case JSON.decode!(data) do
          %{"id" => id} = reply -> receive_replies(port, n - 1, Map.put(acc, id, reply))
          _notification -> receive_replies(port, n, acc)
        end
    after
      10_000 -> flunk("#{n} replies missing")
    end
  end
end
