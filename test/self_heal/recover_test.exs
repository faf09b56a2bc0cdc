defmodule SelfHeal.RecoverTest do
  # Recover first (docs/recovery.md): a critical group's escalation runs the
  # service's recovery actions (argv vectors) before any code fix; here a
  # script that restarts a stand-in service process. The recurrence check
  # of a deploy's verification decides whether it held; backoff and the
  # hourly cap live in the state database; every step is audited.
  use ExUnit.Case, async: false

  alias SelfHeal.Port

  @moduletag :tmp_dir

  # the stand-in service: a process (service.pid) kept running by a
  # supervisor loop the test starts, as systemd or a container runtime
  # would; restart.sh, the recovery action, stops it and waits until the
  # supervisor has started a new one (as `systemctl restart` does). The
  # port kills whatever an action itself leaves running, so a restart goes
  # through the service's manager.
  defp stand_in(dir) do
    sup = Path.join(dir, "supervisor.sh")

    File.write!(sup, """
    #!/bin/sh
    here=$(dirname "$0")
    exec 2>/dev/null
    echo $$ > "$here/supervisor.pid"
    while [ ! -f "$here/stop" ]; do
      sleep 300 &
      echo $! > "$here/service.pid"
      wait $!
    done
    """)

    restart = Path.join(dir, "restart.sh")

    File.write!(restart, """
    #!/bin/sh
    here=$(dirname "$0")
    old=$(cat "$here/service.pid")
    kill "$old" || exit 1
    for _ in $(seq 50); do
      if [ "$(cat "$here/service.pid")" != "$old" ]; then
        echo "$1 $2" >> "$here/restarts.log"
        exit 0
      fi
      sleep 0.1
    done
    exit 1
    """)

    File.chmod!(sup, 0o755)
    File.chmod!(restart, 0o755)
    Elixir.Port.open({:spawn_executable, sup}, [:binary])

    on_exit(fn ->
      File.write!(Path.join(dir, "stop"), "")
      System.cmd("kill", [pid(dir)], stderr_to_stdout: true)
    end)

    wait(fn -> File.exists?(Path.join(dir, "service.pid")) end)
    restart
  end

  defp wait(fun, n \\ 100) do
    cond do
      fun.() -> :ok
      n == 0 -> flunk("timed out waiting")
      true -> Process.sleep(50) && wait(fun, n - 1)
    end
  end

  defp config(dir, restart, extra \\ %{}) do
    Map.merge(
      %{
        "state_dir" => Path.join(dir, "state"),
        "tickets" => %{"backend" => "local"},
        "service" => %{"name" => "api"},
        "recover" =>
          Map.merge(
            %{
              "actions" => [
                %{"name" => "restart", "argv" => [restart, "{fingerprint}", "{service}"]}
              ],
              "verify_window_s" => 1,
              "backoff_s" => 3600,
              "max_per_hour" => 3
            },
            extra
          )
      },
      %{}
    )
  end

  defp group(id, severity, first_seen) do
    %{
      "id" => id,
      "type" => "DBConnection.ConnectionError",
      "message" => "connection refused; $(touch /tmp/pwned)",
      "normalized" => "connection refused",
      "count" => 7,
      "first_seen" => first_seen,
      "last_seen" => first_seen + 1000,
      "service" => "api",
      "severity" => severity,
      "frames" => []
    }
  end

  defp pid(dir), do: String.trim(File.read!(Path.join(dir, "service.pid")))

  # running (a zombie waiting for its parent to reap it is not)
  defp alive?(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} -> not (stat |> String.split(") ") |> List.last() |> String.starts_with?("Z"))
      {:error, _} -> false
    end
  end

  defp audit(dir), do: SelfHeal.TestSupport.audit_actions(Path.join(dir, "state"))

  test "a critical group restarts the stand-in service; recovered once the error stays away; " <>
         "the next attempt waits for its backoff",
       %{tmp_dir: dir} do
    restart = stand_in(dir)
    old = pid(dir)
    port = start_supervised!({Port, config: config(dir, restart)})
    :ok = Port.subscribe(port)

    # a cascade: two critical groups of one escalation, one restart
    groups = [group("fp-db", "critical", 1_000), group("fp-db2", "critical", 1_000)]
    assert {:ok, _} = Port.call(port, "escalate", %{"groups" => groups})

    assert_receive {:self_heal_port, %{"event" => "verify", "fingerprint" => "fp-db2"}}, 10_000

    assert_receive {:self_heal_port,
                    %{
                      "event" => "recovery",
                      "fingerprints" => ["fp-db", "fp-db2"],
                      "outcome" => "recovered"
                    }},
                   10_000

    new = pid(dir)
    assert new != old
    refute alive?(old)
    assert alive?(new)
    # argv vectors: the placeholders, never a shell
    assert File.read!(Path.join(dir, "restarts.log")) == "fp-db api\n"
    refute File.exists?("/tmp/pwned")

    actions = audit(dir)
    assert actions["recovery_started"] == 2
    assert actions["recovery_action"] == 1
    assert actions["recovery_verified"] == 1

    # the same group again (a new escalation): its backoff, nothing runs
    assert {:ok, _} =
             Port.call(port, "escalate", %{"groups" => [group("fp-db", "critical", 2_000)]})

    assert audit(dir)["recovery_skipped"] == 1
    assert pid(dir) == new

    # a high group does not call for recovery (recover.severities: critical)
    assert {:ok, _} =
             Port.call(port, "escalate", %{"groups" => [group("fp-other", "high", 3_000)]})

    Process.sleep(300)
    assert pid(dir) == new
  end

  # recover.mode: "before" lets the code fix start while the recovery is
  # verified; "instead" starts none for what a recovery handles.
  for {mode, fixes} <- [{"before", 1}, {"instead", 0}] do
    test "recover.mode #{mode}: the ticket's fix #{if fixes == 1, do: "starts", else: "does not start"}",
         %{tmp_dir: dir} do
      import SelfHeal.FixLoopSupport, only: [make_repo: 1, agent: 3, good_fix: 0]
      restart = stand_in(dir)
      repo = make_repo(dir)

      cfg =
        SelfHeal.FixLoopSupport.config(
          dir,
          repo,
          agent(dir, "good", good_fix()),
          Map.put(config(dir, restart, %{"mode" => unquote(mode)}), "fix", %{"enabled" => true})
        )

      port = start_supervised!({Port, config: cfg})
      :ok = Port.subscribe(port)
      group = group("fp-mode", "critical", 1_000)
      assert {:ok, _} = Port.call(port, "escalate", %{"groups" => [group]})

      assert_receive {:self_heal_port, %{"event" => "ticket"}}, 10_000

      assert_receive {:self_heal_port, %{"event" => "recovery", "outcome" => "recovered"}},
                     10_000

      if unquote(fixes) == 1 do
        SelfHeal.TestSupport.eventually(
          fn -> match?({:ok, %{"fixes" => [_]}}, Port.call(port, "fixes", %{})) end,
          10_000
        )
      else
        Process.sleep(500)
        assert {:ok, %{"fixes" => []}} = Port.call(port, "fixes", %{})
      end

      assert audit(dir)["recovery_action"] == 1
    end
  end

  test "an error that recurs during the window: the recovery did not hold; the cap stops the rest",
       %{tmp_dir: dir} do
    restart = stand_in(dir)
    cfg = config(dir, restart, %{"verify_window_s" => 30, "backoff_s" => 0, "max_per_hour" => 1})
    port = start_supervised!({Port, config: cfg})
    :ok = Port.subscribe(port)

    assert {:ok, _} =
             Port.call(port, "escalate", %{"groups" => [group("fp-db", "critical", 1_000)]})

    assert_receive {:self_heal_port, %{"event" => "verify", "fingerprint" => "fp-db"}}, 10_000
    {:ok, _} = Port.call(port, "recurrence", %{"fingerprint" => "fp-db", "count" => 2})

    assert_receive {:self_heal_port,
                    %{"event" => "recovery", "fingerprint" => "fp-db", "outcome" => "recurred"}},
                   10_000

    assert audit(dir)["recovery_failed"] == 1

    assert {:ok, _} =
             Port.call(port, "escalate", %{"groups" => [group("fp-db", "critical", 2_000)]})

    assert audit(dir)["recovery_skipped"] == 1
    assert File.read!(Path.join(dir, "restarts.log")) == "fp-db api\n"
  end

  defp request(status) do
    SelfHeal.Event.new(
      source: :fluent_bit,
      level: :error,
      message: "GET /api/orders answered #{status}",
      metadata: %{"status" => status, "path" => "/api/orders"}
    )
  end

  test "a watch firing restarts the service; firing again during the window is a recurrence",
       %{tmp_dir: dir} do
    restart = stand_in(dir)
    old = pid(dir)
    cfg = config(dir, restart, %{"verify_window_s" => 30})
    table = :"recover_verifying_#{System.unique_integer([:positive])}"
    port = start_supervised!({Port, config: cfg, verify_table: table, escalate_batch_ms: 50})
    :ok = Port.subscribe(port)
    set = SelfHeal.Watch.new()
    five_xx = [id: "5xx", field: "status", op: :>=, value: 500, window_ms: 300, threshold: 3]
    {:ok, :added} = SelfHeal.Watch.add(set, five_xx)

    collector =
      start_supervised!(
        {SelfHeal.Collector,
         name: :"collector_#{System.unique_integer([:positive])}",
         flush_ms: 5,
         watch: set,
         watch_escalate: {Port, port},
         verify: {table, {Port, port}}}
      )

    SelfHeal.Collector.push(collector, for(_ <- 1..3, do: request(503)))

    assert_receive {:self_heal_port, %{"event" => "verify", "fingerprint" => "watch:5xx"}},
                   10_000

    assert pid(dir) != old
    assert File.read!(Path.join(dir, "restarts.log")) == "watch:5xx api\n"

    # the watch fires again (a new window) while the restart is verified
    Process.sleep(400)
    SelfHeal.Collector.push(collector, for(_ <- 1..3, do: request(502)))

    assert_receive {:self_heal_port,
                    %{
                      "event" => "recovery",
                      "fingerprint" => "watch:5xx",
                      "outcome" => "recurred"
                    }},
                   10_000
  end

  # the port killed (exit 137) at a step of the run, once; SelfHeal.Port
  # restarts it and the run carries on from the state
  defp crashing_port(dir, restart, point) do
    once = Path.join(dir, "crashed")
    env = [{"SELF_HEAL_TEST_CRASH_AT", point}, {"SELF_HEAL_TEST_CRASH_ONCE", once}]
    port = start_supervised!({Port, config: config(dir, restart), env: env, backoff_min: 50})
    :ok = Port.subscribe(port)
    {:ok, _} = Port.call(port, "escalate", %{"groups" => [group("fp-db", "critical", 1_000)]})
    assert_receive {:self_heal_port, %{"event" => "port_exited", "status" => 137}}, 10_000
    assert File.exists?(once)
    port
  end

  test "killed after an action, before its record: the resumed run does not act again",
       %{tmp_dir: dir} do
    restart = stand_in(dir)
    crashing_port(dir, restart, "action0:commit")

    assert_receive {:self_heal_port, %{"event" => "recovery", "outcome" => "recovered"}}, 15_000
    assert File.read!(Path.join(dir, "restarts.log")) == "fp-db api\n"
    actions = audit(dir)
    assert actions["recovery_action"] == 1
    assert actions["recovery_verified"] == 1
  end

  test "killed while an action runs: at most once, the run says it did not hold",
       %{tmp_dir: dir} do
    restart = stand_in(dir)
    crashing_port(dir, restart, "action0:done")

    assert_receive {:self_heal_port, %{"event" => "recovery", "outcome" => "action_failed"}},
                   15_000

    assert File.read!(Path.join(dir, "restarts.log")) == "fp-db api\n"
    assert audit(dir)["recovery_failed"] == 1
  end
end
