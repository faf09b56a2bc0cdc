defmodule SelfHeal.ExactlyOnceFixTest do
  # Exactly-once effects of the fix loop after kill -9 (docs/state.md,
  # "Effects"; docs/fix-loop.md). An escalation opens a ticket, which
  # starts a fix: a scripted agent's change, validated, pushed to a bare
  # remote with a pull request on a fake GitHub, and the gate asks for
  # approval (a ticket note and a Slack message). The port is killed at
  # every boundary of the fix's steps (SELF_HEAL_TEST_CRASH_AT, once) and
  # SelfHeal.Port restarts it on the same state_dir: one fix, one agent run
  # (a fix resumed after its commit goes on from it), one push and pull
  # request, one gate decision, one note, and a Slack message at most once.
  use ExUnit.Case, async: false

  import SelfHeal.FixLoopSupport

  alias SelfHeal.{FakeHTTP, Port}

  @moduletag :tmp_dir
  @moduletag capture_log: true
  @moduletag timeout: 600_000

  defp pulls(prs) do
    fn req ->
      case {req.method, req.path} do
        {"GET", "/repos/o/app/pulls"} ->
          FakeHTTP.json(200, Agent.get(prs, & &1))

        {"POST", "/repos/o/app/pulls"} ->
          {:ok, body} = SelfHeal.JSON.decode(req.body)

          pr =
            Agent.get_and_update(prs, fn list ->
              n = length(list) + 1
              url = "https://github.example/o/app/pull/#{n}"
              pr = %{"number" => n, "html_url" => url, "body" => body["body"]}
              {pr, [pr | list]}
            end)

          FakeHTTP.json(201, pr)

        _ ->
          FakeHTTP.json(404, %{})
      end
    end
  end

  defp world(dir) do
    repo = make_repo(dir)
    remote = Path.join(dir, "remote.git")
    {_, 0} = System.cmd("git", ["init", "-q", "--bare", remote])
    {:ok, prs} = Agent.start_link(fn -> [] end)
    {:ok, gh} = FakeHTTP.start(pulls(prs))
    {:ok, slack} = FakeHTTP.start(fn _ -> {200, [{"content-type", "text/plain"}], "ok"} end)
    System.put_env("SH_ONCE_FIX_GH", "ghp_" <> String.duplicate("b", 36))
    slack_env = "SH_ONCE_FIX_SLACK_#{System.unique_integer([:positive])}"
    System.put_env(slack_env, slack.url <> "/services/T0/B0/y")

    extra =
      deploy_config(dir, %{
        "gate" => %{"consent" => "diagnose"},
        "fix" => %{"remote" => %{"url" => remote, "token_env" => "SH_ONCE_FIX_GH"}},
        "tickets" => %{
          "github" => %{"api" => gh.url, "repo" => "o/app", "token_env" => "SH_ONCE_FIX_GH"}
        },
        "notify" => %{"channels" => ["slack"], "slack" => %{"webhook_url_env" => slack_env}}
      })

    config = config(dir, repo, agent(dir, "good", good_fix()), extra)
    %{config: config, remote: remote, prs: prs, gh: gh, slack: slack}
  end

  defp group do
    args = fix_args()
    Map.merge(args["group"], %{"severity" => "high", "first_seen" => 1, "last_seen" => 2})
  end

  defp audit_actions(dir), do: SelfHeal.TestSupport.audit_actions(Path.join(dir, "state"))

  @boundaries for(where <- ~w(done commit audit), do: "fix:#{where}") ++
                (for step <- ~w(deliver fix_note fix_notify),
                     where <- ~w(intent done commit audit) do
                   "#{step}:#{where}"
                 end) ++ for(where <- ~w(done commit audit), do: "outcome:#{where}")

  test "killed at every boundary of a fix's steps, each effect happens once", %{tmp_dir: root} do
    for point <- @boundaries do
      dir = Path.join(root, String.replace(point, ":", "_"))
      File.mkdir_p!(dir)
      w = world(dir)
      once = Path.join(dir, "crashed")
      env = [{"SELF_HEAL_TEST_CRASH_AT", point}, {"SELF_HEAL_TEST_CRASH_ONCE", once}]
      port = start_port(w.config, env: env)
      Port.subscribe(port)
      Port.call(port, "escalate", %{"groups" => [group()]}, 60_000)
      assert_receive {:self_heal_port, %{"event" => "port_exited", "status" => 137}}, 60_000

      fix =
        wait_until(
          fn ->
            case Port.call(port, "fixes", %{}) do
              {:ok, %{"fixes" => [f]}} -> if f["status"] == "awaiting_approval", do: f
              _ -> nil
            end
          end,
          60_000
        )

      # what the gate tells: the note, then the message; wait for both
      wait_until(fn -> audit_actions(dir)["ticket_note"] == 1 end, 20_000)
      Process.sleep(300)

      try do
        {:ok, %{"fixes" => fixes}} = Port.call(port, "fixes", %{})
        assert length(fixes) == 1
        assert fix["delivery"]["pr_url"] == "https://github.example/o/app/pull/1"
        assert [%{"body" => body}] = Agent.get(w.prs, & &1)
        assert body =~ "self-heal:job=fix:#{fix["id"]}:"

        assert git!(w.remote, ["log", "--format=%H", "-1", "self-heal/fpcalc0001"]) =~
                 fix["fix_commit"]

        actions = audit_actions(dir)
        assert actions["fix_started"] == 1
        assert actions["fix_agent"] == 1
        assert actions["fix_delivered"] == 1
        assert actions["fix_gate"] == 1
        assert actions["ticket_note"] == 1

        # the ticket's message and the fix's: at most once, and said so
        sent = if point == "fix_notify:intent", do: 1, else: 2
        known = if point in ["fix_notify:intent", "fix_notify:done"], do: 1, else: 2
        assert Enum.count(FakeHTTP.requests(w.slack), &(&1.method == "POST")) == sent
        assert actions["notification_sent"] == known
        assert Map.get(actions, "notification_unknown", 0) == 2 - known
        assert {:ok, %{"ok" => true}} = Port.call(port, "verify-audit", %{})
      rescue
        e in ExUnit.AssertionError ->
          reraise %{e | message: "#{point}: #{e.message}"}, __STACKTRACE__
      end

      :ok = stop_supervised(Port)
      FakeHTTP.stop(w.gh)
      FakeHTTP.stop(w.slack)
    end
  end
end
