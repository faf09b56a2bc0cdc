defmodule SelfHeal.ExactlyOnceTest do
  # Exactly-once effects after kill -9 (docs/state.md, "Effects"). One
  # scripted escalation: its first record, its analysis, a comment on an
  # existing GitHub issue with the ticket's new count, a new GitHub issue
  # and its Slack message. The port is killed at every boundary of every
  # step (SELF_HEAL_TEST_CRASH_AT, once), restarted by SelfHeal.Port on the
  # same state_dir, and the job resumes; each effect then happened once:
  # GitHub issues and comments (a fake GitHub on 127.0.0.1), the ticket
  # counts, the Slack messages (at most once: the one boundary between the
  # recorded intent and the send loses it, and says so), the audit records.
  use ExUnit.Case, async: false

  alias SelfHeal.{FakeGitHub, FakeHTTP, Port}

  @moduletag :tmp_dir
  @moduletag capture_log: true
  @moduletag timeout: 300_000
  @t0 1_790_000_000_000
  @repo "acme/shop"
  @token_env "SH_ONCE_GH_TOKEN"

  defp group(id, service, offset_ms, message, count) do
    %{
      "id" => id,
      "type" => "RuntimeError",
      "message" => message,
      "normalized" => message,
      "count" => count,
      "first_seen" => @t0 + offset_ms,
      "last_seen" => @t0 + offset_ms + 20_000,
      "service" => service,
      "severity" => "high",
      "frames" => []
    }
  end

  # Before the scripted job: the database error has an open issue (#1).
  defp seed, do: [group("fp-db", "api", -3_600_000, "connection refused: db-1:5432", 40)]

  # The scripted job: the database error again with its downstream errors
  # (one issue: a comment on #1, count 40 + 55), and an unrelated error
  # (a new issue #2 and its Slack message).
  defp script do
    [
      group("fp-db", "api", 0, "connection refused: db-1:5432 (ECONNREFUSED)", 40),
      group("fp-orders", "api", 1_500, "could not load orders: db-1:5432 unavailable", 5),
      group("fp-users", "api", 2_000, "user lookup failed: db-1:5432 unavailable", 5),
      group("fp-cart", "api", 3_000, "cart not saved: db-1:5432 unavailable", 5),
      group("fp-billing", "billing", 900_000, "invoice total does not match its lines", 5)
    ]
  end

  defp setup_world(dir) do
    gh = FakeGitHub.start(@repo)
    {:ok, slack} = FakeHTTP.start(fn _ -> {200, [{"content-type", "text/plain"}], "ok"} end)
    System.put_env(@token_env, "ghp_" <> String.duplicate("a", 36))
    slack_env = "SH_ONCE_SLACK_#{System.unique_integer([:positive])}"
    System.put_env(slack_env, slack.url <> "/services/T0/B0/x")

    config = %{
      "state_dir" => Path.join(dir, "state"),
      "port" => %{"workers" => 4},
      "tickets" => %{
        "backend" => "github",
        "github" => %{
          "api" => gh.url,
          "repo" => @repo,
          "token_env" => @token_env,
          "backoff_base_ms" => 10
        }
      },
      "notify" => %{"channels" => ["slack"], "slack" => %{"webhook_url_env" => slack_env}}
    }

    %{gh: gh, slack: slack, config: config}
  end

  defp start_port(config, env, id) do
    spec = {Port, [config: config, env: env, backoff_min: 50]}
    start_supervised!(Supervisor.child_spec(spec, id: id))
  end

  defp seeded(dir) do
    world = setup_world(dir)
    port = start_port(world.config, [], :seed)

    {:ok, %{"tickets" => [%{"created" => true}]}} =
      Port.call(port, "escalate", %{"groups" => seed()})

    :ok = stop_supervised(:seed)
    world
  end

  # Until the scripted escalation (five groups) is done.
  defp wait_job_done(port, tries \\ 600) do
    {:ok, %{"jobs" => jobs}} = Port.call(port, "jobs", %{"status" => "done", "limit" => 1000})

    cond do
      Enum.any?(jobs, &(&1["kind"] == "escalate" and length(&1["input"]["groups"]) == 5)) -> :ok
      tries == 0 -> flunk("the scripted job did not finish")
      true -> Process.sleep(50) && wait_job_done(port, tries - 1)
    end
  end

  defp audit_actions(dir), do: SelfHeal.TestSupport.audit_actions(Path.join(dir, "state"))

  defp slack_posts(slack), do: Enum.count(FakeHTTP.requests(slack), &(&1.method == "POST"))

  # What must hold after the scripted job, whatever boundary it was killed at.
  # notified: 1 when Slack got the scripted message; known: 1 when the port
  # knows it did (killed between the intent and its record, it does not).
  defp assert_once(dir, port, world, notified, known) do
    [one, two] = FakeGitHub.issues(world.gh)
    assert length(one["comments"]) == 1, "comments on #1: #{inspect(one["comments"])}"
    assert one["comments"] |> hd() |> Map.get("body") =~ "**95** in total"
    assert two["comments"] == []
    assert two["title"] =~ "invoice total"

    {:ok, %{"tickets" => tickets}} = Port.call(port, "tickets", %{})
    counts = tickets |> Enum.map(&{&1["external_id"], &1["count"]}) |> Enum.sort()
    assert counts == [{"1", 95}, {"2", 5}]

    assert slack_posts(world.slack) == 1 + notified
    actions = audit_actions(dir)
    assert actions["escalation"] == 2
    assert actions["analysis"] == 2
    assert actions["ticket_created"] == 2
    assert actions["ticket_commented"] == 1
    assert actions["notification_sent"] == 1 + known
    assert Map.get(actions, "notification_unknown", 0) == 1 - known
    assert {:ok, %{"ok" => true}} = Port.call(port, "verify-audit", %{})
  end

  @boundaries (for step <- ~w(escalation analysis), where <- ~w(done commit audit) do
                 "#{step}:#{where}"
               end) ++
                (for step <- ~w(comment create notify), where <- ~w(intent done commit audit) do
                   "#{step}:#{where}"
                 end)

  test "killed at every step boundary, the resumed job acts once", %{tmp_dir: root} do
    for point <- @boundaries do
      dir = Path.join(root, String.replace(point, ":", "_"))
      world = seeded(dir)
      once = Path.join(dir, "crashed")
      env = [{"SELF_HEAL_TEST_CRASH_AT", point}, {"SELF_HEAL_TEST_CRASH_ONCE", once}]
      port = start_port(world.config, env, :crashing)
      Port.subscribe(port)

      # the caller's request is re-sent after the restart; the recovered job
      # resumes on its own too: either way one run finishes it
      Port.call(port, "escalate", %{"groups" => script()}, 30_000)
      assert File.exists?(once), "#{point}: the port never reached its crash point"
      assert_receive {:self_heal_port, %{"event" => "port_exited", "status" => 137}}, 5_000
      wait_job_done(port)

      # a Slack message cannot be looked up: at most once
      notified = if point == "notify:intent", do: 0, else: 1
      known = if point in ["notify:intent", "notify:done"], do: 0, else: 1

      try do
        assert_once(dir, port, world, notified, known)
      rescue
        e in ExUnit.AssertionError ->
          reraise %{e | message: "#{point}: #{e.message}"}, __STACKTRACE__
      end

      :ok = stop_supervised(:crashing)
      FakeHTTP.stop(world.slack)
      FakeHTTP.stop(world.gh)
    end
  end

  test "a real kill -9 while GitHub holds the answer to a create: one issue, adopted",
       %{tmp_dir: dir} do
    world = seeded(dir)
    FakeGitHub.set_create_delay(world.gh, 3_000)
    port = start_port(world.config, [], :killed)
    Port.subscribe(port)
    os_pid = Port.os_pid(port)
    caller = Task.async(fn -> Port.call(port, "escalate", %{"groups" => script()}, 30_000) end)

    wait = fn wait ->
      if length(FakeGitHub.issues(world.gh)) < 2, do: Process.sleep(20) && wait.(wait)
    end

    wait.(wait)
    FakeGitHub.set_create_delay(world.gh, 0)
    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(os_pid)])
    assert_receive {:self_heal_port, %{"event" => "port_exited"}}, 5_000
    Task.await(caller, 30_000)
    wait_job_done(port)
    assert_once(dir, port, world, 1, 1)
    {:ok, %{"tickets" => tickets}} = Port.call(port, "tickets", %{})
    # the issue made before the kill was found by its marker and adopted
    assert Enum.find(tickets, &(&1["external_id"] == "2"))["count"] == 5
  end
end
