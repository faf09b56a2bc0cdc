defmodule SelfHeal.FixLoopTest do
  # The fix loop end to end through the real port program: real git
  # repositories made here, a small Python project (its compile and test
  # commands take milliseconds), and scripted agents standing in for a
  # coding agent: (a) a correct fix, (b) an out-of-scope file, (c) broken
  # tests, (d) a hang, (e) reading secrets from the environment, (f) a
  # 500-line diff, (g) a test that passes on the base commit too. Then the
  # gate (rate limit, breaker, kill switch, approval expiry), deploy,
  # verification and rollback, a kill -9 in the middle of a fix, and no
  # agent process left behind.
  use ExUnit.Case, async: false

  import SelfHeal.FixLoopSupport

  alias SelfHeal.{FakeHTTP, Port}

  @moduletag :tmp_dir
  @moduletag capture_log: true
  @secret "ghp_" <> String.duplicate("Z9", 18)

  # ------------------------------------------------------------ agents a..g

  test "(a) a correct fix: validated, regression proven, dry-run patch and report", %{
    tmp_dir: dir
  } do
    repo = make_repo(dir)
    port = start_port(config(dir, repo, agent(dir, "good", good_fix())))
    fix = fix!(port, fix_args())

    # no deploy target configured: delivered, nothing to deploy to
    assert fix["status"] == "delivered"
    assert fix["decision"]["action"] == "none"
    v = fix["validation"]
    assert v["passed"] and v["compiled"] and v["tests_passed"] and v["regression_proven"]
    assert v["scope_ok"] and v["protected_ok"]
    assert fix["confidence"] >= 0.8
    assert "consent is diagnose: a human deploys" in fix["decision"]["reasons"]

    patch = File.read!(fix["delivery"]["patch"])
    assert patch =~ "diff --git a/src/calc.py b/src/calc.py"
    assert patch =~ "if not xs:"

    assert File.read!(fix["delivery"]["report"]) =~
             "Regression test fails on the base commit: yes"

    prompt = File.read!(Path.join([dir, "state", "fixes", "#{fix["id"]}", "prompt.md"]))
    assert prompt =~ "src/calc.py"
    assert prompt =~ "ZeroDivisionError"

    # the proof: the new test fails on the base with the production error
    assert v["existing_tests_passed"]
    assert v["proof"]["reproduced"]
    assert v["proof"]["frames_matched"] == 1
    assert v["sandboxed"]

    # the checkouts are gone, the branch holds the fix on top of the base,
    # committed by the port (the agent had no repository at all)
    refute File.exists?(Path.join([dir, "state", "work", "#{fix["id"]}"]))
    log = git!(repo, ["log", "--format=%s %an", "self-heal/fpcalc0001"])
    assert log =~ "SelfHeal: fix proposed by the coding agent SelfHeal"
    assert git!(repo, ["rev-parse", "self-heal/fpcalc0001^"]) == git!(repo, ["rev-parse", "main"])
    # main is untouched until a deploy
    refute File.read!(Path.join(repo, "src/calc.py")) =~ "if not xs"
  end

  test "(b) a file outside the scope needs a human", %{tmp_dir: dir} do
    repo = make_repo(dir)
    body = good_fix() <> "echo 'more docs' >> README.md\n"
    port = start_port(config(dir, repo, agent(dir, "scope", body), deploy_config(dir)))
    fix = fix!(port, fix_args())
    assert fix["status"] == "awaiting_approval"
    assert fix["validation"]["out_of_scope"] == ["README.md"]
    refute fix["validation"]["scope_ok"]
    assert fix["validation"]["needs_human"]
  end

  test "(c) a change that breaks the tests is rejected", %{tmp_dir: dir} do
    repo = make_repo(dir)

    body = """
    cat > src/calc.py <<'PY'
    def average(xs):
        return 0
    PY
    """

    port = start_port(config(dir, repo, agent(dir, "broken", body)))
    fix = fix!(port, fix_args())
    assert fix["status"] == "rejected"
    assert fix["validation"]["compiled"] == true
    assert fix["validation"]["tests_passed"] == false
    assert fix["confidence"] == 0
    assert fix["decision"]["action"] == "reject"
    # the human still gets the patch and the report
    assert File.exists?(fix["delivery"]["patch"])
  end

  defp audit_actions(dir, action) do
    Path.join([dir, "state", "audit.jsonl"])
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.map(&SelfHeal.JSON.decode!/1)
    |> Enum.filter(&(&1["action"] == action))
  end

  test "a failed validation gets a second attempt told what went wrong", %{tmp_dir: dir} do
    repo = make_repo(dir)

    # the first run breaks the tests; the second, when its prompt says why
    # the first was discarded, makes the right change
    body =
      """
      if grep -q '^## Previous attempt' "$2"; then
      """ <>
        good_fix() <>
        """
        else
        cat > src/calc.py <<'PY'
        def average(xs):
            return 0
        PY
        fi
        """

    port = start_port(config(dir, repo, agent(dir, "retry", body), deploy_config(dir)))
    fix = fix!(port, fix_args())
    assert fix["validation"]["passed"] and fix["validation"]["regression_proven"]
    assert fix["validation"]["attempt"] == 2
    assert fix["status"] in ["approved", "deployed", "verified", "deploying", "verifying"]

    # the second prompt says why, with the failing tests' output fenced
    prompt = File.read!(Path.join([dir, "state", "fixes", "#{fix["id"]}", "prompt.md"]))
    assert prompt =~ "## Previous attempt\n\nThis is attempt 2."
    assert prompt =~ "- the test suite fails with the change"
    assert prompt =~ ~r/<UNTRUSTED-[0-9a-f]+ label="output of the failing step - last part">/
    assert prompt =~ "FAILED"

    # both attempts and the retry are in the fix's timeline and the audit log
    assert [%{"attempt" => 1}, %{"attempt" => 2}] = audit_actions(dir, "fix_agent")

    assert [%{"attempt" => 2, "of" => 2, "reasons" => ["the test suite fails with the change"]}] =
             audit_actions(dir, "fix_retry")

    assert [%{"passed" => false, "attempt" => 1}, %{"passed" => true, "attempt" => 2}] =
             audit_actions(dir, "fix_validation")
  end

  test "retries: 0 runs the agent once; a broken rule of trust is never retried",
       %{tmp_dir: dir} do
    repo = make_repo(dir)

    broken = """
    cat > src/calc.py <<'PY'
    def average(xs):
        return 0
    PY
    """

    cfg = config(dir, repo, agent(dir, "once", broken), %{"fix" => %{"retries" => 0}})
    port = start_port(cfg)
    fix = fix!(port, fix_args())
    assert fix["status"] == "rejected"
    assert length(audit_actions(dir, "fix_agent")) == 1
    assert audit_actions(dir, "fix_retry") == []
    stop_supervised!(Port)

    # an agent that weakens an existing test is not told how to hide it
    dir2 = Path.join(dir, "trust")
    File.mkdir_p!(dir2)
    repo2 = make_repo(dir2)

    weaken =
      good_fix() <>
        """
        sed -i 's/\\[2, 4\\]), 3)/[2, 4]), average([2, 4]))/' tests/test_calc.py
        cat > src/calc.py <<'PY'
        def average(xs):
            return 0
        PY
        """

    port = start_port(config(dir2, repo2, agent(dir2, "weaken", weaken)))
    fix = fix!(port, fix_args())
    assert fix["validation"]["tests_kept"] == false
    assert fix["validation"]["tests_modified"] == ["tests/test_calc.py"]
    assert length(audit_actions(dir2, "fix_agent")) == 1
    assert audit_actions(dir2, "fix_retry") == []
  end

  test "a preset agent whose key is not set fails before it runs", %{tmp_dir: dir} do
    repo = make_repo(dir)
    program = agent(dir, "claude", "exit 0")

    preset = %{
      "agent" => %{
        "argv" => nil,
        "preset" => "claude_code",
        "program" => program,
        "key_env" => "SH_FIX_LOOP_NO_SUCH_KEY"
      }
    }

    port = start_port(config(dir, repo, program, %{"fix" => preset}))
    fix = fix!(port, fix_args())
    assert fix["status"] == "failed"
    assert fix["detail"]["reason"] =~ "SH_FIX_LOOP_NO_SUCH_KEY"
    # no agent ran
    audit = File.read!(Path.join([dir, "state", "audit.jsonl"]))
    assert audit =~ "SH_FIX_LOOP_NO_SUCH_KEY"
    refute audit =~ ~s("action":"fix_agent")
  end

  test "(d) a hanging agent is killed with everything it started", %{tmp_dir: dir} do
    repo = make_repo(dir)

    body = """
    sleep 300 &
    sh -c 'sleep 300' self_heal_fixloop_agent_child &
    sleep 300
    """

    cfg =
      config(dir, repo, agent(dir, "hang", body), %{"fix" => %{"agent" => %{"timeout_s" => 2}}})

    port = start_port(cfg)
    started = System.monotonic_time(:millisecond)
    fix = fix!(port, fix_args())
    assert System.monotonic_time(:millisecond) - started < 15_000
    assert fix["status"] == "rejected"
    assert fix["detail"]["reason"] =~ "timed out"
    assert agent_processes() == []
  end

  test "(e) the agent's environment holds no secret", %{tmp_dir: dir} do
    System.put_env("GITHUB_TOKEN", @secret)
    System.put_env("SELF_HEAL_FIXLOOP_API_KEY", @secret)
    on_exit(fn -> System.delete_env("GITHUB_TOKEN") end)
    on_exit(fn -> System.delete_env("SELF_HEAL_FIXLOOP_API_KEY") end)
    repo = make_repo(dir)

    body =
      good_fix() <>
        """
        env > leaked_env.txt
        echo "token: $GITHUB_TOKEN"
        cat /proc/$$/environ | tr '\\0' '\\n' > leaked_proc.txt
        """

    port = start_port(config(dir, repo, agent(dir, "env", body), deploy_config(dir)))
    fix = fix!(port, fix_args())
    # the env dumps are files outside the scope: a human decides
    assert fix["status"] == "awaiting_approval"
    assert "leaked_env.txt" in fix["validation"]["out_of_scope"]
    committed = git!(repo, ["show", "self-heal/fpcalc0001"])
    assert committed =~ "PATH="
    refute committed =~ @secret
    refute committed =~ "GITHUB_TOKEN"
    refute committed =~ "SELF_HEAL_FIXLOOP_API_KEY"

    for file <- Path.wildcard(Path.join([dir, "state", "**", "*"])), File.regular?(file) do
      refute File.read!(file) =~ @secret, "#{file} holds the secret"
    end
  end

  test "(f) a 500-line diff is rejected on size", %{tmp_dir: dir} do
    repo = make_repo(dir)

    body =
      good_fix() <>
        """
        i=0
        while [ $i -lt 500 ]; do echo "PAD_$i = $i" >> src/calc.py; i=$((i+1)); done
        """

    port = start_port(config(dir, repo, agent(dir, "big", body)))
    fix = fix!(port, fix_args())
    assert fix["status"] == "rejected"
    refute fix["validation"]["size_ok"]
    assert fix["validation"]["changed_lines"] > 500
    # nothing was compiled or tested for it
    assert fix["validation"]["compiled"] == nil
  end

  test "(g) a test that passes on the base commit proves nothing", %{tmp_dir: dir} do
    repo = make_repo(dir)

    body = """
    cat > src/calc.py <<'PY'
    def average(xs):
        if not xs:
            return 0
        return sum(xs) / len(xs)
    PY
    cat >> tests/test_calc.py <<'PY'


    class MoreTest(unittest.TestCase):
        def test_more(self):
            self.assertEqual(average([1, 3]), 2)
    PY
    """

    port = start_port(config(dir, repo, agent(dir, "weak", body), deploy_config(dir)))

    fix = fix!(port, fix_args())
    assert fix["validation"]["regression_proven"] == false
    assert fix["confidence"] <= 0.5
    assert fix["status"] == "awaiting_approval"
  end

  test "a fingerprint already being fixed is not started twice", %{tmp_dir: dir} do
    repo = make_repo(dir)
    body = "sleep 2\n" <> good_fix()
    port = start_port(config(dir, repo, agent(dir, "slow", body)))
    {:ok, first} = Port.call(port, "fix", Map.put(fix_args(), "wait", false))
    assert first["started"]
    {:ok, second} = Port.call(port, "fix", Map.put(fix_args(), "wait", false))
    refute second["started"]
    assert second["fix_id"] == first["fix_id"]
    wait_until(fn -> fix_status(port, first["fix_id"])["status"] != "fixing" end)
  end

  # ------------------------------------------------------------ gate, deploy, verify

  test "auto deploy, verification passes, ticket closed", %{tmp_dir: dir} do
    repo = make_repo(dir)
    port = start_port(config(dir, repo, agent(dir, "good", good_fix()), deploy_config(dir)))
    fix = fix!(port, fix_args())
    assert fix["decision"]["action"] == "deploy"
    done = wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])
    assert done["status"] == "deployed"
    assert File.read!(Path.join(repo, "src/calc.py")) =~ "if not xs"
    assert File.read!(Path.join(dir, "deploys.log")) =~ done["deploy_commit"]
    kinds = Enum.map(done["deploys"], &{&1["kind"], &1["status"]})
    assert {"deploy", "succeeded"} in kinds
  end

  test "a deploy's message carries the change, cut, with a link to the whole patch", %{
    tmp_dir: dir
  } do
    repo = make_repo(dir)
    {:ok, slack} = FakeHTTP.start(fn _ -> {200, [{"content-type", "text/plain"}], "ok"} end)
    System.put_env("SH_FIXLOOP_DIFF_SLACK", slack.url <> "/services/T0/B0/hook")
    on_exit(fn -> System.delete_env("SH_FIXLOOP_DIFF_SLACK") end)

    # the fix, with a long comment: more than a message shows
    notes =
      for i <- 1..15,
          into: "",
          do: "# note #{i}: #{String.duplicate("why the empty list matters ", 4)}\n"

    body = good_fix() <> "cat >> src/calc.py <<'PY'\n#{notes}PY\n"

    cfg =
      config(
        dir,
        repo,
        agent(dir, "long", body),
        deploy_config(dir, %{
          "notify" => %{
            "channels" => ["slack"],
            "slack" => %{"webhook_url_env" => "SH_FIXLOOP_DIFF_SLACK"},
            "links" => %{"base_url" => "https://ops.example/"}
          }
        })
      )

    port = start_port(cfg)
    fix = fix!(port, fix_args())

    if fix["status"] == "awaiting_approval",
      do: {:ok, _} = Port.call(port, "approve", %{"id" => fix["id"], "by" => "ops"})

    assert wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])["status"] ==
             "deployed"

    deploys =
      wait_until(fn ->
        found =
          slack
          |> FakeHTTP.requests()
          |> Enum.map(&SelfHeal.JSON.decode!(&1.body))
          |> Enum.filter(&(get_in(&1, ["blocks", Access.at(0), "text", "text"]) =~ "deploy"))

        if found != [], do: found
      end)

    change =
      deploys
      |> Enum.flat_map(& &1["blocks"])
      |> Enum.find_value(fn b ->
        t = get_in(b, ["text", "text"])
        if is_binary(t) and String.starts_with?(t, "*Change*"), do: t
      end)

    assert change, inspect(deploys)

    assert change =~
             "*Change* (cut; <https://ops.example/self_heal/fixes/#{fix["id"]}/patch|full patch>)"

    assert change =~ "+    if not xs:"
    refute change =~ "note 15"
    assert byte_size(change) <= 3000
  end

  test "a recurrence during verification rolls back: revert commit, redeploy, breaker", %{
    tmp_dir: dir
  } do
    repo = make_repo(dir)

    cfg =
      config(
        dir,
        repo,
        agent(dir, "good", good_fix()),
        deploy_config(dir, %{"deploy" => %{"verify_window_s" => 30}})
      )

    port = start_port(cfg)
    :ok = Port.subscribe(port)
    fix = fix!(port, fix_args())

    assert_receive {:self_heal_port, %{"event" => "verify", "fingerprint" => "fpcalc0001"}},
                   20_000

    {:ok, _} = Port.call(port, "recurrence", %{"fingerprint" => "fpcalc0001", "count" => 3})
    done = wait_status(port, fix["id"], ["rolled_back", "deployed", "failed"])
    assert done["status"] == "rolled_back"
    assert done["detail"]["reason"] =~ "recurred"
    log = git!(repo, ["log", "--format=%s", "main"])
    assert log =~ "SelfHeal: revert fix #{fix["id"]}"
    refute File.read!(Path.join(repo, "src/calc.py")) =~ "if not xs"
    # deployed twice: the fix, then the revert
    assert length(String.split(File.read!(Path.join(dir, "deploys.log")), "\n", trim: true)) == 2
    {:ok, gate} = Port.call(port, "gate_status", %{})
    assert gate["breaker"]["failures"] == 1
  end

  test "a failing health check after deploy reverts, and the breaker opens at its threshold", %{
    tmp_dir: dir
  } do
    repo = make_repo(dir)

    cfg =
      config(
        dir,
        repo,
        agent(dir, "good", good_fix()),
        deploy_config(dir, %{"gate" => %{"breaker_threshold" => 1}})
      )

    # the deploy "breaks" the service: the health flag goes away
    File.write!(Path.join(dir, "deploy.sh"), """
    #!/bin/sh
    echo "$1 $2" >> '#{dir}/deploys.log'
    if grep -q "if not xs" "$1/src/calc.py"; then rm -f '#{dir}/healthy'; else echo ok > '#{dir}/healthy'; fi
    """)

    port = start_port(cfg)
    fix = fix!(port, fix_args())
    done = wait_status(port, fix["id"], ["rolled_back", "deployed", "failed"])
    assert done["status"] == "rolled_back"
    assert done["detail"]["reason"] =~ "health"
    assert git!(repo, ["log", "-1", "--format=%s", "main"]) =~ "SelfHeal: revert fix"
    assert File.exists?(Path.join(dir, "healthy"))
    {:ok, gate} = Port.call(port, "gate_status", %{})
    assert gate["breaker"]["state"] == "open"

    # breaker open: the next fix waits for a human
    fix2 = fix!(port, fix_args("fpcalc0002"))
    assert fix2["status"] == "awaiting_approval"
    assert "circuit breaker open: a human must reset it" in fix2["decision"]["reasons"]
    {:ok, gate} = Port.call(port, "breaker_reset", %{"by" => "test"})
    assert gate["breaker"]["state"] == "closed"
  end

  test "rate limit: max_auto_deploys_per_hour", %{tmp_dir: dir} do
    repo = make_repo(dir)

    cfg =
      config(
        dir,
        repo,
        agent(dir, "good", good_fix()),
        deploy_config(dir, %{
          "gate" => %{"max_auto_deploys_per_hour" => 1},
          "deploy" => %{"verify_window_s" => 0}
        })
      )

    port = start_port(cfg)
    fix = fix!(port, fix_args())
    assert fix["decision"]["action"] == "deploy"

    assert wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])["status"] ==
             "deployed"

    fix2 = fix!(port, fix_args("fpcalc0002"))
    assert fix2["status"] == "awaiting_approval"
    assert "max_auto_deploys_per_hour reached" in fix2["decision"]["reasons"]
  end

  test "a fix whose base is no longer the deploy branch's tip is replayed, validated again, and its rollback takes back only itself",
       %{tmp_dir: dir} do
    fmt = "def first(xs):\n    return xs[0]\n"

    fmt_test =
      "import unittest\n\nfrom src.fmt import first\n\n\nclass FirstTest(unittest.TestCase):\n" <>
        "    def test_first(self):\n        self.assertEqual(first([5]), 5)\n"

    repo = make_repo(dir, %{"src/fmt.py" => fmt, "tests/test_fmt.py" => fmt_test})
    base = String.trim(git!(repo, ["rev-parse", "main"]))

    # one agent for both errors: it fixes the one its prompt names
    body = """
    if grep -q 'src/fmt.py' "$2"; then
    cat > src/fmt.py <<'PY'
    def first(xs):
        if not xs:
            return None
        return xs[0]
    PY
    cat >> tests/test_fmt.py <<'PY'

        def test_empty(self):
            self.assertIsNone(first([]))
    PY
    else
    #{good_fix()}
    fi
    """

    cfg =
      config(
        dir,
        repo,
        agent(dir, "two", body),
        deploy_config(dir, %{"fix" => %{"base" => base}, "deploy" => %{"verify_window_s" => 4}})
      )

    port = start_port(cfg)
    :ok = Port.subscribe(port)

    fmt_args =
      fix_args("fpfmt0002", %{
        "group" => %{
          "id" => "fpfmt0002",
          "type" => "IndexError",
          "message" => "list index out of range",
          "stacktrace" =>
            "Traceback (most recent call last):\n  File \"/srv/app/src/fmt.py\", line 2, in first\n" <>
              "    return xs[0]\nIndexError: list index out of range\n",
          "count" => 30,
          "service" => "calc"
        }
      })

    # both validated on the same base commit
    first = fix!(port, fix_args())
    second = fix!(port, fmt_args)
    assert first["base_commit"] == base and second["base_commit"] == base

    assert wait_status(port, first["id"], ["deployed", "rolled_back", "failed"])["status"] ==
             "deployed"

    # the second finds main moved: replayed on it and validated again
    assert_receive {:self_heal_port, %{"event" => "fix", "stage" => "rebased", "fix_id" => id}},
                   30_000

    assert id == second["id"]

    assert_receive {:self_heal_port, %{"event" => "verify", "fingerprint" => "fpfmt0002"}},
                   40_000

    replayed = fix_status(port, second["id"])
    assert replayed["base_commit"] != base
    assert replayed["validation"]["regression_proven"]
    assert replayed["validation"]["agent"] =~ "not run"

    {:ok, _} = Port.call(port, "recurrence", %{"fingerprint" => "fpfmt0002", "count" => 1})
    done = wait_status(port, second["id"], ["rolled_back", "deployed", "failed"])
    assert done["status"] == "rolled_back"
    # the first fix stays deployed, the second is gone
    assert File.read!(Path.join(repo, "src/calc.py")) =~ "if not xs"
    refute File.read!(Path.join(repo, "src/fmt.py")) =~ "if not xs"
    assert git!(repo, ["status", "--porcelain"]) == ""
  end

  test "kill switch: nothing deploys, approved or not, until it is off", %{tmp_dir: dir} do
    repo = make_repo(dir)
    port = start_port(config(dir, repo, agent(dir, "good", good_fix()), deploy_config(dir)))
    {:ok, gate} = Port.call(port, "kill_switch", %{"on" => true, "by" => "test"})
    assert gate["kill_switch"]
    fix = fix!(port, fix_args())
    assert fix["status"] == "awaiting_approval"
    assert "kill switch on" in fix["decision"]["reasons"]
    {:ok, _} = Port.call(port, "approve", %{"id" => fix["id"], "by" => "test"})
    Process.sleep(1_500)
    assert fix_status(port, fix["id"])["status"] == "approved"
    refute File.exists?(Path.join(dir, "deploys.log"))
    {:ok, _} = Port.call(port, "kill_switch", %{"on" => false})

    assert wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])["status"] ==
             "deployed"
  end

  test "approvals: invalid targets do nothing, approvals expire, skip", %{tmp_dir: dir} do
    repo = make_repo(dir)

    cfg =
      config(
        dir,
        repo,
        agent(dir, "good", good_fix()),
        deploy_config(dir, %{"gate" => %{"consent" => "diagnose", "approval_ttl_s" => 1}})
      )

    port = start_port(cfg)

    for bad <- ["", "all", "*", "0", "-1", "fix-", "1; rm -rf /", nil] do
      assert {:error, %{code: "bad_args"}} = Port.call(port, "approve", %{"id" => bad})
    end

    assert {:error, %{code: "bad_args"}} = Port.call(port, "approve", %{})

    fix = fix!(port, fix_args())
    assert fix["status"] == "awaiting_approval"
    expired = wait_status(port, fix["id"], ["expired"], 5_000)
    assert expired["status"] == "expired"
    assert {:error, %{code: "conflict"}} = Port.call(port, "approve", %{"id" => fix["id"]})

    fix2 = fix!(port, fix_args("fpcalc0002"))
    {:ok, skipped} = Port.call(port, "skip", %{"id" => "fix-#{fix2["id"]}", "by" => "test"})
    assert skipped["status"] == "skipped"
    refute File.exists?(Path.join(dir, "deploys.log"))
  end

  test "mix self_heal.approve reaches a running port through the state", %{tmp_dir: dir} do
    repo = make_repo(dir)

    cfg =
      config(
        dir,
        repo,
        agent(dir, "good", good_fix()),
        deploy_config(dir, %{"gate" => %{"consent" => "diagnose"}})
      )

    port = start_port(cfg)
    fix = fix!(port, fix_args())
    assert fix["status"] == "awaiting_approval"
    # what the mix task does: the port binary run once against the same state
    assert {:ok, %{"status" => "approved"}} =
             SelfHeal.CLI.run("approve", %{"id" => fix["id"], "by" => "cli"},
               config: SelfHeal.Port.wire(cfg)
             )

    assert wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])["status"] ==
             "deployed"
  end

  # ------------------------------------------------------------ approvals: links, Telegram

  @link_secret "fixloop-link-secret-5b1e"

  # SelfHeal.Endpoint (its own collector) relaying /approve and /skip to the
  # port registered as `port_name`; returns its base URL.
  defp start_endpoint(port_name) do
    id = System.unique_integer([:positive])
    collector = :"fixloop_collector_#{id}"
    endpoint = :"fixloop_endpoint_#{id}"
    start_supervised!({SelfHeal.Collector, name: collector}, id: collector)

    start_supervised!(
      {SelfHeal.Endpoint, name: endpoint, port: 0, collector: collector, approvals: port_name},
      id: endpoint
    )

    "http://127.0.0.1:#{SelfHeal.Endpoint.port(endpoint)}"
  end

  # One HTTP/1.1 request over a fresh connection (Connection: close), read
  # to the end: {status, headers (lower-case names), body}.
  defp http(method, url, form \\ nil) do
    {status, headers, body} = SelfHeal.TestHTTP.request(method, url, [], form)
    {status, Map.new(headers), body}
  end

  defp sign(action, action_id, expires) do
    mac =
      :crypto.mac(:hmac, :sha256, @link_secret, "#{action}|#{action_id}|#{expires}")
      |> Base.encode16(case: :lower)

    "#{action}.#{action_id}.#{expires}.#{mac}"
  end

  # A correct fix that waits for a human (consent diagnose), with notify.
  defp approval_config(dir, repo, notify) do
    config(
      dir,
      repo,
      agent(dir, "good", good_fix()),
      deploy_config(dir, %{"gate" => %{"consent" => "diagnose"}, "notify" => notify})
    )
  end

  test "a fix awaiting approval is announced on Slack with signed links; opening one changes nothing, its button approves",
       %{tmp_dir: dir} do
    repo = make_repo(dir)
    {:ok, slack} = FakeHTTP.start(fn _ -> {200, [{"content-type", "text/plain"}], "ok"} end)
    System.put_env("SH_FIXLOOP_LINK", @link_secret)
    System.put_env("SH_FIXLOOP_SLACK", slack.url <> "/services/T0/B0/hook")

    on_exit(fn ->
      System.delete_env("SH_FIXLOOP_LINK")
      System.delete_env("SH_FIXLOOP_SLACK")
    end)

    port_name = :"fixloop_port_#{System.unique_integer([:positive])}"
    base = start_endpoint(port_name)

    cfg =
      approval_config(dir, repo, %{
        "channels" => ["slack"],
        "slack" => %{"webhook_url_env" => "SH_FIXLOOP_SLACK"},
        "links" => %{"base_url" => base <> "/", "secret_env" => "SH_FIXLOOP_LINK"}
      })

    port = start_port(cfg, name: port_name)
    fix = fix!(port, fix_args())
    assert fix["status"] == "awaiting_approval"
    action_id = "fix-#{fix["id"]}"

    # the Slack message names the fix and carries both links
    message =
      wait_until(fn ->
        Enum.find(FakeHTTP.requests(slack), &(&1.body =~ action_id and &1.body =~ "/approve?t="))
      end)

    [approve_url] =
      Regex.run(~r{http://127\.0\.0\.1:\d+/approve\?t=[A-Za-z0-9._-]+}, message.body)

    [skip_url] = Regex.run(~r{http://127\.0\.0\.1:\d+/skip\?t=[A-Za-z0-9._-]+}, message.body)
    token = URI.decode_query(URI.parse(approve_url).query)["t"]
    assert String.starts_with?(token, "approve.#{action_id}.")
    skip_token = URI.decode_query(URI.parse(skip_url).query)["t"]

    # opening the link (what a link previewer does) shows the fix and a button
    {200, headers, page} = http(:get, approve_url)
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    assert page =~ ~s(<form method="post" action="approve">)
    assert page =~ ~s(value="#{token}")
    assert page =~ "division by zero"
    assert page =~ "awaiting_approval"
    # what the agent said it did
    assert page =~ "What the agent did"
    assert page =~ "fixed the empty list"
    assert fix_status(port, fix["id"])["status"] == "awaiting_approval"

    # tokens that must not act
    [mac | rest] = token |> String.split(".") |> Enum.reverse()

    flipped =
      String.replace_suffix(
        mac,
        String.last(mac),
        if(String.last(mac) == "0", do: "1", else: "0")
      )

    tampered = [flipped | rest] |> Enum.reverse() |> Enum.join(".")
    past = System.os_time(:second) - 10
    other_fix = sign("approve", "fix-#{fix["id"] + 1}", System.os_time(:second) + 600)

    for {t, status} <- [
          {tampered, 403},
          {skip_token, 403},
          {sign("approve", action_id, past), 410},
          {sign("approve", action_id <> "x", System.os_time(:second) + 600), 400},
          {other_fix, 404},
          {"approve.fix-1.9999999999.<script>", 400}
        ] do
      {got, _headers, body} = http(:post, base <> "/approve", "t=" <> URI.encode_www_form(t))
      assert got == status, "#{t}: #{got} #{body}"
      refute body =~ "<script>"
    end

    assert {400, _, _} = http(:post, base <> "/approve", "")
    assert {405, _, _} = http(:put, base <> "/approve")
    assert fix_status(port, fix["id"])["status"] == "awaiting_approval"
    refute File.exists?(Path.join(dir, "deploys.log"))

    # the button
    {200, _headers, done} = http(:post, base <> "/approve", "t=" <> token)
    assert done =~ "Fix #{fix["id"]} is approved"
    deployed = wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])
    assert deployed["status"] == "deployed"
    assert deployed["decided_by"] == "link:127.0.0.1"

    # the links are spent: pressing again, or skipping now, is a conflict
    assert {409, _, _} = http(:post, base <> "/approve", "t=" <> token)
    assert {409, _, _} = http(:post, base <> "/skip", "t=" <> skip_token)
    {200, _, shown} = http(:get, approve_url)
    assert shown =~ "there is nothing to approve"
    refute shown =~ "<form"
  end

  test "the links of an endpoint without a port to relay to are 404; a port that is down is 503",
       %{tmp_dir: _dir} do
    id = System.unique_integer([:positive])
    start_supervised!({SelfHeal.Collector, name: :"fixloop_c_#{id}"}, id: :c)

    start_supervised!(
      {SelfHeal.Endpoint, name: :"fixloop_e_#{id}", port: 0, collector: :"fixloop_c_#{id}"},
      id: :e
    )

    plain = "http://127.0.0.1:#{SelfHeal.Endpoint.port(:"fixloop_e_#{id}")}"
    assert {404, _, _} = http(:get, plain <> "/approve?t=x")
    base = start_endpoint(:"fixloop_absent_port_#{id}")
    t = sign("approve", "fix-1", System.os_time(:second) + 60)
    assert {503, %{"retry-after" => "5"}, _} = http(:get, base <> "/approve?t=" <> t)
    assert {503, _, _} = http(:post, base <> "/approve", "t=" <> t)
  end

  test "Telegram buttons: SelfHeal.TelegramPoll keeps polling, a press skips the fix", %{
    tmp_dir: dir
  } do
    repo = make_repo(dir)
    {:ok, pending} = Agent.start_link(fn -> nil end)

    handler = fn req ->
      if String.ends_with?(req.path, "/getUpdates") do
        {:ok, %{"offset" => offset}} = SelfHeal.JSON.decode(req.body)

        updates =
          case Agent.get(pending, & &1) do
            {data, update_id} when offset <= update_id ->
              [
                %{
                  update_id: update_id,
                  callback_query: %{
                    id: "cq-1",
                    from: %{id: 5, username: "alice"},
                    message: %{message_id: 7, chat: %{id: 42}},
                    data: data
                  }
                }
              ]

            _ ->
              []
          end

        FakeHTTP.json(200, %{ok: true, result: updates})
      else
        FakeHTTP.telegram_ok(req)
      end
    end

    {:ok, tg} = FakeHTTP.start(handler)
    System.put_env("SH_FIXLOOP_TG", "123456:AAE-fixloop-token")
    on_exit(fn -> System.delete_env("SH_FIXLOOP_TG") end)

    cfg =
      approval_config(dir, repo, %{
        "channels" => ["telegram"],
        "telegram" => %{"api" => tg.url, "token_env" => "SH_FIXLOOP_TG", "chat_id" => 42}
      })

    assert SelfHeal.TelegramPoll.configured?(cfg)
    refute SelfHeal.TelegramPoll.configured?(%{"notify" => %{"channels" => ["slack"]}})
    port = start_port(cfg)
    start_supervised!({SelfHeal.TelegramPoll, port: port, timeout_s: 0, interval_ms: 50})

    fix = fix!(port, fix_args())
    assert fix["status"] == "awaiting_approval"
    action_id = "fix-#{fix["id"]}"

    # the message has the buttons of this fix
    sent =
      wait_until(fn ->
        Enum.find(FakeHTTP.requests(tg), &String.ends_with?(&1.path, "/sendMessage"))
      end)

    assert sent.body =~ ~s("callback_data":"s:#{action_id}")

    # alice presses Skip
    Agent.update(pending, fn _ -> {"s:#{action_id}", 900} end)

    wait_until(fn ->
      Enum.find(FakeHTTP.requests(tg), &String.ends_with?(&1.path, "/answerCallbackQuery"))
    end)

    skipped = wait_status(port, fix["id"], ["skipped", "approved", "deployed"], 10_000)
    assert skipped["status"] == "skipped"
    assert skipped["decided_by"] == "telegram:@alice"
    refute File.exists?(Path.join(dir, "deploys.log"))
  end

  # ------------------------------------------------------------ PR delivery and kill -9

  # Delivery as a pull request: fix.remote (the push) and the GitHub stand-in.
  defp pr_delivery(gh, remote) do
    %{
      "fix" => %{"remote" => remote},
      "tickets" => %{
        "github" => %{
          "api" => gh.url,
          "repo" => "o/app",
          "token_env" => "SH_FIXLOOP_GH",
          "max_attempts" => 1
        }
      }
    }
  end

  defp github(state) do
    fn req ->
      case {req.method, req.path} do
        {"GET", "/repos/o/app/pulls" <> _} ->
          {200, [{"content-type", "application/json"}], FakeHTTP.encode(Agent.get(state, & &1))}

        {"POST", "/repos/o/app/pulls"} ->
          n = Agent.get_and_update(state, fn prs -> {length(prs) + 1, prs} end)
          {:ok, body} = SelfHeal.JSON.decode(req.body)

          pr = %{
            "number" => n,
            "html_url" => "https://github.example/o/app/pull/#{n}",
            "head" => %{"ref" => body["head"]}
          }

          Agent.update(state, &[pr | &1])
          {201, [{"content-type", "application/json"}], FakeHTTP.encode(pr)}

        _ ->
          {404, [], "{}"}
      end
    end
  end

  test "kill -9 of the port mid-fix: the fix resumes, one branch push, one pull request", %{
    tmp_dir: dir
  } do
    repo = make_repo(dir)
    remote = Path.join(dir, "remote.git")
    {_, 0} = System.cmd("git", ["init", "-q", "--bare", remote])
    {:ok, prs} = Agent.start_link(fn -> [] end)
    {:ok, gh} = FakeHTTP.start(github(prs))
    System.put_env("SH_FIXLOOP_GH", "ghp_" <> String.duplicate("a", 36))
    body = "sleep 3\n" <> good_fix()

    cfg = config(dir, repo, agent(dir, "slowgood", body), pr_delivery(gh, %{"url" => remote}))

    port = start_port(cfg)
    :ok = Port.subscribe(port)
    {:ok, first} = Port.call(port, "fix", Map.put(fix_args(), "wait", false))
    assert_receive {:self_heal_port, %{"event" => "fix", "stage" => "context"}}, 20_000
    wait_until(fn -> agent_processes() != [] end)
    os_pid = Port.os_pid(port)
    System.cmd("kill", ["-9", "#{os_pid}"])
    assert_receive {:self_heal_port, %{"event" => "port_exited"}}, 5_000
    assert_receive {:self_heal_port, %{"event" => "port_configured"}}, 10_000
    done = wait_status(port, first["fix_id"], ["delivered", "rejected", "failed"], 40_000)
    assert done["status"] == "delivered"
    assert done["delivery"]["mode"] == "pull_request"
    assert done["delivery"]["pr_url"] == "https://github.example/o/app/pull/1"
    assert length(Agent.get(prs, & &1)) == 1
    assert length(FakeHTTP.requests(gh) |> Enum.filter(&(&1.method == "POST"))) == 1
    assert git!(remote, ["log", "--format=%s", "self-heal/fpcalc0001"]) =~ "SelfHeal: fix"
    # the agent ran again after the restart (the first run was killed with the port)
    audit = File.read!(Path.join([dir, "state", "audit.jsonl"]))
    assert length(Regex.scan(~r/"action":"fix_context"/, audit)) == 2
  end

  # ------------------------------------------------------------ push over HTTPS

  defp openssl!(dir, args) do
    {out, status} = System.cmd("openssl", args, cd: dir, stderr_to_stdout: true)
    assert status == 0, out
  end

  # A CA and a certificate it signs for localhost / 127.0.0.1.
  defp make_ca(dir, name) do
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    openssl!(
      dir,
      ["req", "-x509" | ec] ++
        ~w(-keyout #{name}-ca.key -out #{name}-ca.pem -days 2 -subj /CN=#{name}-test-ca)
    )

    openssl!(
      dir,
      ["req" | ec] ++ ~w(-keyout #{name}-srv.key -out #{name}-srv.csr -subj /CN=localhost)
    )

    File.write!(
      Path.join(dir, "#{name}-ext.cnf"),
      "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
    )

    openssl!(
      dir,
      ~w(x509 -req -in #{name}-srv.csr -CA #{name}-ca.pem -CAkey #{name}-ca.key -CAcreateserial -out #{name}-srv.pem -days 2 -extfile #{name}-ext.cnf)
    )

    %{
      ca: Path.join(dir, "#{name}-ca.pem"),
      cert: Path.join(dir, "#{name}-srv.pem"),
      key: Path.join(dir, "#{name}-srv.key")
    }
  end

  # git http-backend over TLS, basic auth with `token` required.
  defp start_git_https(dir, root, certs, token) do
    log = Path.join(dir, "git-https.log")
    script = Path.expand("../support/git_https_server.py", __DIR__)
    python = System.find_executable("python3")

    port =
      Elixir.Port.open({:spawn_executable, python}, [
        :binary,
        {:line, 1000},
        args: [script, root, certs.cert, certs.key, token, log]
      ])

    receive do
      {^port, {:data, {:eol, "PORT " <> n}}} -> {String.to_integer(n), log}
    after
      10_000 -> flunk("the git HTTPS server did not start")
    end
  end

  test "push over HTTPS with a token: a git server that asks for it, its CA from fix.remote.ca_file",
       %{tmp_dir: dir} do
    repo = make_repo(dir)
    root = Path.join(dir, "git")
    File.mkdir_p!(root)
    bare = Path.join(root, "app.git")
    {_, 0} = System.cmd("git", ["init", "-q", "--bare", bare])
    certs = make_ca(dir, "good")
    stranger = make_ca(dir, "other")
    token = "ghs_" <> String.duplicate("Q7", 18)
    {port_no, log} = start_git_https(dir, root, certs, token)
    {:ok, prs} = Agent.start_link(fn -> [] end)
    {:ok, gh} = FakeHTTP.start(github(prs))
    System.put_env("SH_FIXLOOP_GH", "ghp_" <> String.duplicate("b", 36))
    System.put_env("SH_FIXLOOP_PUSH", token)

    on_exit(fn ->
      System.delete_env("SH_FIXLOOP_GH")
      System.delete_env("SH_FIXLOOP_PUSH")
    end)

    cfg = fn remote ->
      config(
        dir,
        repo,
        agent(dir, "good", good_fix()),
        pr_delivery(gh, Map.put(remote, "url", "https://localhost:#{port_no}/app.git"))
      )
    end

    # a bad CA file is a configuration error before anything runs
    bad = start_port(cfg.(%{"ca_file" => Path.join(dir, "missing.pem")}), name: :fixloop_bad_ca)

    assert {:error, %{code: "bad_config", message: "fix.remote.ca_file" <> _}} =
             Port.call(bad, "fix", fix_args("fpcalc0009"))

    stop_supervised!(:fixloop_bad_ca)

    # the right CA and token: the branch is pushed, the pull request opened
    port = start_port(cfg.(%{"ca_file" => certs.ca, "token_env" => "SH_FIXLOOP_PUSH"}))
    fix = fix!(port, fix_args())
    assert fix["status"] == "delivered", inspect(fix)
    assert fix["delivery"]["mode"] == "pull_request"
    assert git!(bare, ["log", "--format=%s", "self-heal/fpcalc0001"]) =~ "SelfHeal: fix"
    lines = File.read!(log) |> String.split("\n", trim: true)
    # asked for credentials first, then the push as x-access-token
    assert Enum.any?(lines, &(&1 =~ ~r{^GET /app.git/info/refs\?service=git-receive-pack 401 -$}))
    assert "POST /app.git/git-receive-pack 200 x-access-token" in lines
    stop_supervised!(Port)

    # a wrong token: the push fails, and the error does not carry it
    System.put_env("SH_FIXLOOP_PUSH", "ghs_wrong_" <> String.duplicate("x", 20))
    port = start_port(cfg.(%{"ca_file" => certs.ca, "token_env" => "SH_FIXLOOP_PUSH"}))
    failed = fix!(port, fix_args("fpcalc0002"))
    assert failed["status"] == "failed"
    error = inspect(failed)
    assert error =~ "push"
    refute error =~ "ghs_wrong_"
    refute error =~ token
    stop_supervised!(Port)

    # a server whose certificate the CA file does not sign: refused
    System.put_env("SH_FIXLOOP_PUSH", token)
    port = start_port(cfg.(%{"ca_file" => stranger.ca, "token_env" => "SH_FIXLOOP_PUSH"}))
    refused = fix!(port, fix_args("fpcalc0003"))
    assert refused["status"] == "failed"
    assert inspect(refused) =~ "certificate"
    refute git!(bare, ["branch", "--list"]) =~ "fpcalc0003"
    assert length(Agent.get(prs, & &1)) == 1

    # the token is nowhere in the state directory
    for file <- Path.wildcard(Path.join([dir, "state", "**", "*"])), File.regular?(file) do
      refute File.read!(file) =~ token, "#{file} holds the push token"
    end
  end

  # After each test (its port stopped): no process of any agent is left.
  setup do
    on_exit(fn ->
      deadline = System.monotonic_time(:millisecond) + 3_000
      left = Stream.repeatedly(fn -> Process.sleep(50) && agent_processes() end)
      left = Enum.find(left, [], &(&1 == [] or System.monotonic_time(:millisecond) > deadline))
      assert left == [], "agent processes survived: #{inspect(left)}"
    end)
  end
end
