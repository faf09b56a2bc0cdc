defmodule SelfHeal.TrustTest do
  # Earned trust and the first-consent question (docs/recovery.md) through
  # the real port program, real git repositories and the fix loop's
  # scripted agents: fixes a human approved and that were deployed without
  # a rollback raise the service's consent level; a rollback lowers it;
  # each change is announced and audited; the first-consent question is
  # asked once when the service's errors first reach the threshold, and
  # the answer is stored.
  use ExUnit.Case, async: false

  import SelfHeal.FixLoopSupport

  alias SelfHeal.Port

  @moduletag :tmp_dir
  @moduletag capture_log: true

  # fingerprints holding "good" get the real fix (and its regression test);
  # the others a harmless helper, which a human approves
  defp agent_for(dir) do
    agent(dir, "trust", """
    if grep -q good "$2"; then
    #{good_fix()}
    else
      n=$(date +%s%N)
      printf '\\n\\ndef helper_%s():\\n    return 1\\n' "$n" >> src/calc.py
      echo "added a helper"
    fi
    """)
  end

  defp audit_records(dir, action),
    do: SelfHeal.TestSupport.audit_records(Path.join(dir, "state"), action)

  defp approve_and_deploy(port, fp) do
    fix = fix!(port, fix_args(fp))
    assert fix["status"] == "awaiting_approval"
    {:ok, _} = Port.call(port, "approve", %{"id" => fix["id"], "by" => "alice"})

    assert wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])["status"] ==
             "deployed"

    fix
  end

  defp trust_config(dir, gate, deploy) do
    config(
      dir,
      make_repo(dir),
      agent_for(dir),
      deploy_config(dir, %{
        "service" => %{"name" => "calc"},
        "gate" => Map.put(gate, "consent", "diagnose"),
        "deploy" => %{"verify_window_s" => deploy}
      })
    )
  end

  defp consent(port) do
    {:ok, c} = Port.call(port, "consent", %{})
    c
  end

  test "two approved fixes without a rollback raise diagnose to repair; a rollback lowers it again",
       %{tmp_dir: dir} do
    cfg = trust_config(dir, %{"trust" => %{"enabled" => true, "after" => 2, "mode" => "take"}}, 1)

    port = start_port(cfg)
    :ok = Port.subscribe(port)

    approve_and_deploy(port, "fptrust001")
    # the deploy's outcome is counted after its status is written
    SelfHeal.TestSupport.eventually(fn -> consent(port)["state"]["streak"] == 1 end, 5_000)
    assert %{"level" => "diagnose", "state" => %{"streak" => 1}} = consent(port)

    approve_and_deploy(port, "fptrust002")

    assert_receive {:self_heal_port, %{"event" => "consent", "action" => "consent_changed"}},
                   5_000

    assert %{"level" => "repair", "service" => "calc"} = consent(port)

    assert [%{"from" => "diagnose", "to" => "repair", "why" => "earned", "service" => "calc"}] =
             audit_records(dir, "consent_changed")

    {:ok, gate} = Port.call(port, "gate_status", %{})
    assert gate["consent"] == "repair"

    # the level in force: the next validated fix deploys without a human,
    # then recurs and is rolled back
    cfg_window = put_in(cfg, ["deploy", "verify_window_s"], 30)
    :ok = stop_supervised(Port)
    port = start_port(cfg_window)
    :ok = Port.subscribe(port)
    fix = fix!(port, fix_args("fpgood0003"))
    assert fix["decision"]["action"] == "deploy"

    assert_receive {:self_heal_port, %{"event" => "verify", "fingerprint" => "fpgood0003"}},
                   20_000

    {:ok, _} = Port.call(port, "recurrence", %{"fingerprint" => "fpgood0003", "count" => 1})

    assert wait_status(port, fix["id"], ["rolled_back", "deployed", "failed"])["status"] ==
             "rolled_back"

    assert_receive {:self_heal_port, %{"event" => "consent", "text" => text}}, 5_000
    assert text =~ "from repair to diagnose"
    assert %{"level" => "diagnose", "state" => %{"streak" => 0}} = consent(port)

    assert [_, %{"from" => "repair", "to" => "diagnose", "why" => "rollback", "fix_id" => id}] =
             audit_records(dir, "consent_changed")

    assert id == fix["id"]

    # at diagnose again: the next fix waits for a human
    fix4 = fix!(port, fix_args("fptrust004"))
    assert fix4["status"] == "awaiting_approval"
  end

  test "mode offer: the next level is offered, not taken, until the operator grants it",
       %{tmp_dir: dir} do
    cfg = trust_config(dir, %{"trust" => %{"enabled" => true, "after" => 1}}, 0)

    port = start_port(cfg)
    approve_and_deploy(port, "fptrust001")

    # the deploy's outcome is counted after its status is written
    SelfHeal.TestSupport.eventually(fn -> audit_records(dir, "consent_offered") != [] end, 5_000)
    assert %{"level" => "diagnose", "state" => %{"offered" => "repair"}} = consent(port)
    assert [%{"to" => "repair"}] = audit_records(dir, "consent_offered")
    assert audit_records(dir, "consent_changed") == []

    # what mix self_heal.consent does: the port binary run once on the state
    assert {:ok, %{"level" => "repair"}} =
             SelfHeal.CLI.run("consent", %{"level" => "repair", "by" => "ops"},
               config: Port.wire(cfg)
             )

    assert %{"level" => "repair"} = consent(port)

    assert [%{"from" => "diagnose", "to" => "repair", "by" => "ops", "why" => "operator"}] =
             audit_records(dir, "consent_changed")
  end

  defp group(id, count, first_seen) do
    %{
      "id" => id,
      "type" => "RuntimeError",
      "message" => "boom #{id}",
      "normalized" => "boom #{id}",
      "count" => count,
      "first_seen" => first_seen,
      "last_seen" => first_seen + 1000,
      "service" => "api",
      "severity" => "high",
      "frames" => []
    }
  end

  test "first consent: asked once when the errors first reach the threshold; the answer is stored",
       %{tmp_dir: dir} do
    {:ok, slack} =
      SelfHeal.FakeHTTP.start(fn _ -> {200, [{"content-type", "text/plain"}], "ok"} end)

    slack_env = "SH_TRUST_SLACK_#{System.unique_integer([:positive])}"
    System.put_env(slack_env, slack.url <> "/services/T0/B0/x")

    cfg = %{
      "state_dir" => Path.join(dir, "state"),
      "tickets" => %{"backend" => "local"},
      "service" => %{"name" => "api"},
      "gate" => %{"consent" => "observe", "trust" => %{"ask_after_errors" => 10}},
      "notify" => %{"channels" => ["slack"], "slack" => %{"webhook_url_env" => slack_env}}
    }

    questions = fn ->
      Enum.count(SelfHeal.FakeHTTP.requests(slack), &(&1.body =~ "Which consent level"))
    end

    port = start_supervised!({Port, config: cfg})
    :ok = Port.subscribe(port)

    {:ok, _} = Port.call(port, "escalate", %{"groups" => [group("fp-a", 6, 1_000)]})
    refute_received {:self_heal_port, %{"event" => "consent"}}
    assert audit_records(dir, "consent_asked") == []
    assert questions.() == 0

    {:ok, _} = Port.call(port, "escalate", %{"groups" => [group("fp-b", 6, 2_000)]})
    assert_receive {:self_heal_port, %{"event" => "consent", "text" => text}}, 5_000
    assert text =~ "reached 12 errors"
    assert text =~ "mix self_heal.consent"

    # the same job again (a replayed request) and more errors: not asked again
    {:ok, _} = Port.call(port, "escalate", %{"groups" => [group("fp-b", 6, 2_000)]})
    {:ok, _} = Port.call(port, "escalate", %{"groups" => [group("fp-c", 50, 3_000)]})

    assert [%{"errors" => 12, "threshold" => 10, "service" => "api"}] =
             audit_records(dir, "consent_asked")

    # asked once, on Slack
    assert questions.() == 1

    assert %{"level" => "observe", "state" => %{"asked" => true, "errors" => 62}} = consent(port)

    {:ok, _} = Port.call(port, "consent", %{"level" => "diagnose", "by" => "ops"})
    # stored: a new port program on the same state has it
    :ok = stop_supervised(Port)
    port = start_supervised!({Port, config: cfg})
    assert %{"level" => "diagnose", "state" => %{"by" => "ops"}} = consent(port)
    {:ok, gate} = Port.call(port, "gate_status", %{})
    assert gate["consent"] == "diagnose"
  end
end
