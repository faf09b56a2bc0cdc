defmodule SelfHeal.CanaryTest do
  # Canary deploys end to end through the real port program over a real
  # git repository: a canary command that records what it deployed, the
  # promotion after a quiet window (the stable's own errors, the fixed one
  # included, do not count against the canary), the rollback at the canary
  # when the fixed error comes back there or when its error rate passes
  # the stable baseline, and the collector telling the canary's events from
  # the stable's by their `deploy_track` metadata.
  use ExUnit.Case, async: false

  import SelfHeal.FixLoopSupport

  alias SelfHeal.{Collector, Event, Port}

  @moduletag :tmp_dir
  @moduletag capture_log: true

  defp canary_config(dir, canary_extra) do
    canary = Path.join(dir, "canary.sh")

    File.write!(canary, """
    #!/bin/sh
    echo "$1 $2" >> "$(dirname "$0")/canary.log"
    """)

    File.chmod!(canary, 0o755)

    deploy_config(dir, %{
      "deploy" => %{
        "canary" =>
          Map.merge(
            %{"argv" => [canary, "{repo}", "{commit}"], "window_s" => 2, "min_errors" => 3},
            canary_extra
          )
      }
    })
  end

  defp lines(path) do
    if File.exists?(path), do: String.split(File.read!(path), "\n", trim: true), else: []
  end

  defp audit(dir) do
    Path.join(dir, "state/audit.jsonl")
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.map(&SelfHeal.JSON.decode!/1)
  end

  defp await_canary_watch do
    assert_receive {:self_heal_port, %{"event" => "verify", "fingerprint" => "*"}}, 20_000
  end

  # a port with a canary stage, a fix under way, its canary watched
  defp start_canary(dir, canary_extra \\ %{}) do
    repo = make_repo(dir)

    port =
      start_port(
        config(dir, repo, agent(dir, "good", good_fix()), canary_config(dir, canary_extra))
      )

    :ok = Port.subscribe(port)
    fix = fix!(port, Map.put(fix_args(), "wait", false))
    await_canary_watch()
    {repo, port, fix}
  end

  defp recur(port, fp, n, track) do
    {:ok, _} =
      Port.call(port, "recurrence", %{"fingerprint" => fp, "count" => n, "track" => track})
  end

  test "a quiet canary is promoted, then the fix deploys and is verified", %{tmp_dir: dir} do
    {_repo, port, fix} = start_canary(dir)
    # the stable still runs without the fix: its errors, the fixed one
    # among them, are no verdict on the canary; a few canary errors under
    # the baseline are not either
    recur(port, "fpcalc0001", 5, "stable")
    recur(port, "*", 20, "stable")
    recur(port, "*", 4, "canary")

    assert_receive {:self_heal_port, %{"event" => "fix", "stage" => "promoted"} = promoted},
                   20_000

    assert promoted["counts"]["canary_errors"] == 4
    assert promoted["counts"]["stable_errors"] == 15
    done = wait_status(port, fix["fix_id"], ["deployed", "rolled_back", "failed"])
    assert done["status"] == "deployed"
    # the canary got the commit first, then the whole deploy
    assert lines(Path.join(dir, "canary.log")) |> Enum.map(&List.last(String.split(&1))) == [
             done["deploy_commit"]
           ]

    assert File.read!(Path.join(dir, "deploys.log")) =~ done["deploy_commit"]

    ledger = done["deploys"] |> Enum.sort_by(& &1["id"]) |> Enum.map(&{&1["kind"], &1["status"]})

    assert ledger == [
             {"deploy", "started"},
             {"canary", "started"},
             {"canary", "succeeded"},
             {"deploy", "succeeded"}
           ]

    actions = Enum.map(audit(dir), & &1["action"])
    assert "deploy_canary_deployed" in actions
    assert "deploy_promoted" in actions
  end

  test "the fixed error on the canary rolls back there: the stable deploy never runs", %{
    tmp_dir: dir
  } do
    {repo, port, fix} = start_canary(dir, %{"window_s" => 30})
    recur(port, "fpcalc0001", 1, "canary")
    done = wait_status(port, fix["fix_id"], ["rolled_back", "deployed", "failed"])
    assert done["status"] == "rolled_back"
    assert done["detail"]["reason"] =~ "on the canary"
    assert done["detail"]["canary"] == true
    # the canary got the fix, then its revert; the stable got nothing
    assert [_fix, revert] = lines(Path.join(dir, "canary.log"))
    assert revert =~ done["revert_commit"]
    assert lines(Path.join(dir, "deploys.log")) == []
    assert git!(repo, ["log", "-1", "--format=%s", "main"]) =~ "SelfHeal: revert fix"
    {:ok, gate} = Port.call(port, "gate_status", %{})
    assert gate["breaker"]["failures"] == 1
  end

  test "a canary erring more than the stable baseline allows rolls back", %{tmp_dir: dir} do
    {_repo, port, fix} = start_canary(dir, %{"window_s" => 30})
    # 2 stable errors: the limit is 2.0 x 1.0 x 2 = 4
    recur(port, "*", 2, "stable")
    recur(port, "*", 4, "canary")
    Process.sleep(600)
    assert fix_status(port, fix["fix_id"])["status"] == "deploying"
    recur(port, "*", 1, "canary")
    done = wait_status(port, fix["fix_id"], ["rolled_back", "deployed", "failed"])
    assert done["status"] == "rolled_back"
    assert done["detail"]["reason"] =~ "5 error(s) against a stable baseline of 2"
    assert lines(Path.join(dir, "deploys.log")) == []

    verdict = Enum.find(audit(dir), &(&1["action"] == "deploy_canary_failed"))
    assert verdict["counts"]["canary_errors"] == 5
  end

  test "the collector reports events by their deploy_track; the port tells the canary apart",
       %{tmp_dir: dir} do
    repo = make_repo(dir)
    table = :canary_test_verifying

    cfg =
      config(dir, repo, agent(dir, "good", good_fix()), canary_config(dir, %{"window_s" => 30}))

    port = start_port(cfg, verify_table: table)

    start_supervised!(
      {Collector, name: :canary_test_collector, verify: {table, {Port, port}}, flush_ms: 20}
    )

    error = fn track ->
      meta = if track, do: %{deploy_track: track}, else: %{}

      Event.new(
        message: "division by zero",
        type: "ZeroDivisionError",
        service: "calc",
        metadata: meta
      )
    end

    # the group's fingerprint, as the collector computes it
    Collector.ingest(:canary_test_collector, [error.(nil)])

    %{fingerprint: fp} =
      wait_until(fn -> List.first(Collector.groups(:canary_test_collector)) end)

    :ok = Port.subscribe(port)
    fix = fix!(port, fix_args(fp, %{"wait" => false}))
    await_canary_watch()
    # the stable keeps failing: no verdict
    Collector.ingest(:canary_test_collector, for(_ <- 1..5, do: error.(nil)))
    Process.sleep(800)
    assert fix_status(port, fix["fix_id"])["status"] == "deploying"
    # the canary fails the same way: rolled back there
    Collector.ingest(:canary_test_collector, [error.("canary")])
    done = wait_status(port, fix["fix_id"], ["rolled_back", "deployed", "failed"])
    assert done["status"] == "rolled_back"
    assert done["detail"]["reason"] =~ "recurred 1 time(s) on the canary"
    # the port's verify_end event, sent after the status is written, empties the table
    assert SelfHeal.TestSupport.eventually(fn -> :ets.info(table, :size) == 0 end, 5_000)
  end

  # kill -9 at the canary's steps (docs/state.md, "Effects"): the deploy
  # is cut short, so it is escalated and never run again by itself; the
  # canary command ran as far as the crash let it, the stable never ran,
  # and a verdict not committed left no ledger row.
  for {point, canary_runs} <- [{"canary:intent", 0}, {"canary_verdict:done", 1}] do
    test "kill -9 at #{point}: escalated, the canary not run again, the stable never deployed",
         %{tmp_dir: dir} do
      repo = make_repo(dir)
      once = Path.join(dir, "crashed")
      env = [{"SELF_HEAL_TEST_CRASH_AT", unquote(point)}, {"SELF_HEAL_TEST_CRASH_ONCE", once}]

      cfg =
        config(dir, repo, agent(dir, "good", good_fix()), canary_config(dir, %{"window_s" => 1}))

      port = start_port(cfg, env: env)
      {:ok, %{"fix_id" => id}} = Port.call(port, "fix", Map.put(fix_args(), "wait", false))
      done = wait_status(port, id, ["escalated", "deployed", "rolled_back", "failed"], 60_000)
      assert File.exists?(once)
      assert done["status"] == "escalated"
      assert length(lines(Path.join(dir, "canary.log"))) == unquote(canary_runs)
      assert lines(Path.join(dir, "deploys.log")) == []
      kinds = Enum.map(done["deploys"], &{&1["kind"], &1["status"]})
      refute {"canary", "succeeded"} in kinds
    end
  end
end
