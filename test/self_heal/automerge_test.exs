defmodule SelfHeal.AutomergeTest do
  # Auto-merge of a fix's pull request through GitHub's REST API (a
  # stand-in GitHub, SelfHeal.FakeGitHub, with pull requests, commit
  # statuses and check runs) before the deploy, when the gate deploys on
  # its own and deploy.pull_request.merge is on: merged once the checks
  # pass, never while one fails or after the timeout, and a human's merge
  # or close is noticed and recorded. Real port, real git repositories, a
  # real push to a bare remote.
  use ExUnit.Case, async: false

  import SelfHeal.FixLoopSupport

  alias SelfHeal.{FakeGitHub, Port}

  @moduletag :tmp_dir
  @moduletag capture_log: true

  defp start(dir, pr_extra \\ %{}) do
    repo = make_repo(dir)
    remote = Path.join(dir, "remote.git")
    {_, 0} = System.cmd("git", ["init", "-q", "--bare", remote])
    gh = FakeGitHub.start("o/app", remote: remote)
    System.put_env("SH_AUTOMERGE_GH", "ghp_" <> String.duplicate("m", 36))

    extra =
      deploy_config(dir, %{
        "fix" => %{"remote" => %{"url" => remote, "token_env" => "SH_AUTOMERGE_GH"}},
        "tickets" => %{
          "github" => %{
            "api" => gh.url,
            "repo" => "o/app",
            "token_env" => "SH_AUTOMERGE_GH",
            "max_attempts" => 1
          }
        },
        "deploy" => %{
          "pull_request" =>
            Map.merge(%{"merge" => true, "poll_ms" => 100, "checks_timeout_s" => 20}, pr_extra)
        }
      })

    port = start_port(config(dir, repo, agent(dir, "good", good_fix()), extra))
    :ok = Port.subscribe(port)
    {port, gh}
  end

  defp run_fix(port) do
    {:ok, %{"fix_id" => id}} = Port.call(port, "fix", Map.put(fix_args(), "wait", false))
    assert_receive {:self_heal_port, %{"event" => "fix", "stage" => "pr_checks"}}, 30_000
    id
  end

  defp done(port, id),
    do: wait_status(port, id, ["deployed", "escalated", "skipped", "failed", "rolled_back"])

  defp deployed?(dir), do: File.exists?(Path.join(dir, "deploys.log"))

  defp check(name, status, conclusion \\ nil),
    do: %{"name" => name, "status" => status, "conclusion" => conclusion}

  defp ledger(fix), do: Enum.map(fix["deploys"], &{&1["kind"], &1["status"]})

  test "merged through the API once every check passes, then deployed", %{tmp_dir: dir} do
    {port, gh} = start(dir)

    FakeGitHub.set_checks(gh, [%{"state" => "pending", "context" => "ci"}], [
      check("test", "in_progress")
    ])

    id = run_fix(port)
    Process.sleep(500)
    # still pending: nothing merged, nothing deployed
    assert FakeGitHub.merges(gh) == []
    refute deployed?(dir)

    FakeGitHub.set_checks(gh, [%{"state" => "success", "context" => "ci"}], [
      check("test", "completed", "success")
    ])

    fix = done(port, id)
    assert fix["status"] == "deployed"
    [pr] = FakeGitHub.pulls(gh)
    assert [%{"sha" => sha, "merge_method" => "merge"}] = FakeGitHub.merges(gh)
    assert sha == fix["fix_commit"] and sha == pr["head"]["sha"]
    assert pr["merged"] == true
    assert fix["delivery"]["merge_commit"] == pr["merge_commit_sha"]
    assert fix["delivery"]["merged_by"] == "self-heal"
    assert {"pr_merge", "succeeded"} in ledger(fix)
  end

  test "a failed check stops it: not merged, not deployed, a human must look", %{tmp_dir: dir} do
    {port, gh} = start(dir)

    FakeGitHub.set_checks(gh, [], [
      check("lint", "completed", "success"),
      check("test", "completed", "failure")
    ])

    fix = done(port, run_fix(port))
    assert fix["status"] == "escalated"
    assert fix["detail"]["reason"] =~ "the check run test ended failure"
    assert FakeGitHub.merges(gh) == []
    refute deployed?(dir)
  end

  test "checks still pending at the timeout: not merged", %{tmp_dir: dir} do
    {port, gh} = start(dir, %{"checks_timeout_s" => 1})
    FakeGitHub.set_checks(gh, [%{"state" => "pending", "context" => "ci"}], [])
    fix = done(port, run_fix(port))
    assert fix["status"] == "escalated"
    assert fix["detail"]["reason"] =~ "did not pass within 1 s"
    assert FakeGitHub.merges(gh) == []
    refute deployed?(dir)
  end

  test "a human's merge is recorded and the deploy goes on without a merge call", %{
    tmp_dir: dir
  } do
    {port, gh} = start(dir)
    FakeGitHub.set_checks(gh, [], [check("test", "queued")])
    id = run_fix(port)
    FakeGitHub.human_merge(gh, 1, "alice")
    fix = done(port, id)
    assert fix["status"] == "deployed"
    assert FakeGitHub.merges(gh) == []
    [row] = Enum.filter(fix["deploys"], &(&1["kind"] == "pr_merge"))
    assert row["status"] == "human"
    assert row["detail"]["by"] == "alice"
    assert fix["delivery"]["merged_by"] == "alice"
  end

  test "a closed pull request is recorded and not deployed", %{tmp_dir: dir} do
    {port, gh} = start(dir)
    FakeGitHub.set_checks(gh, [], [check("test", "queued")])
    id = run_fix(port)
    FakeGitHub.close(gh, 1)
    fix = done(port, id)
    assert fix["status"] == "skipped"
    assert {"pr_merge", "closed"} in ledger(fix)
    assert FakeGitHub.merges(gh) == []
    refute deployed?(dir)
  end

  test "a pull request whose head is not the validated commit is not merged", %{tmp_dir: dir} do
    {port, gh} = start(dir)
    FakeGitHub.set_checks(gh, [], [check("test", "queued")])
    id = run_fix(port)
    FakeGitHub.set_head(gh, 1, String.duplicate("e", 40))
    FakeGitHub.set_checks(gh, [], [check("test", "completed", "success")])
    fix = done(port, id)
    assert fix["status"] == "escalated"
    assert fix["detail"]["reason"] =~ "(eeeeeeeeeeee) is not the validated commit"
    assert FakeGitHub.merges(gh) == []
    refute deployed?(dir)
  end
end
