defmodule SelfHeal.AgentTest do
  # The real Claude Code CLI (the version `make agents` pins) as the fix
  # loop's agent, inside the sandbox, with only its model replaced: the
  # model stand-in (examples/agent/model_stand_in.py) replays a scripted
  # conversation whose tool calls the CLI really runs. A fix it makes is
  # validated and deployed; a model that is down, slow past the timeout,
  # overloaded, or answering garbage ends each fix as it should; an edit of
  # a protected file waits for a human; from inside the run the agent sees
  # only its own environment and files; its usage counts against the
  # analysis's budgets. Skipped, saying why, when the CLI is not installed.
  use ExUnit.Case, async: false

  import SelfHeal.FixLoopSupport

  @moduletag :tmp_dir
  @moduletag capture_log: true

  @claude SelfHeal.FixLoopSupport.claude()
  if @claude == nil do
    IO.puts(
      :stderr,
      "agent_test: skipped: Claude Code is not installed (make agents installs it with npm)"
    )

    @moduletag skip: "Claude Code is not installed (make agents)"
  end

  @key "sk-selfheal-agent-test-0001"
  @secret "ghp_" <> String.duplicate("Ag7", 12)

  setup do
    System.put_env("SH_AGENT_KEY", @key)
    System.put_env("GITHUB_TOKEN", @secret)

    on_exit(fn ->
      System.delete_env("SH_AGENT_KEY")
      System.delete_env("GITHUB_TOKEN")
    end)

    :ok
  end

  @calc_test_tail ~S'''


  if __name__ == "__main__":
  '''

  # Read, fix, read the test, add a test, run the tests, say so.
  defp fixing_turns(extra \\ []) do
    [
      %{"tool" => "Read", "input" => %{"file_path" => "{cwd}/src/calc.py"}},
      %{
        "tool" => "Edit",
        "expect" => "return sum(xs) / len(xs)",
        "input" => %{
          "file_path" => "{cwd}/src/calc.py",
          "old_string" => "    return sum(xs) / len(xs)",
          "new_string" => "    if not xs:\n        return 0\n    return sum(xs) / len(xs)"
        }
      },
      %{"tool" => "Read", "input" => %{"file_path" => "{cwd}/tests/test_calc.py"}},
      %{
        "tool" => "Edit",
        "expect" => "class AverageTest",
        "input" => %{
          "file_path" => "{cwd}/tests/test_calc.py",
          "old_string" => @calc_test_tail,
          "new_string" =>
            "\n\nclass EmptyTest(unittest.TestCase):\n    def test_empty(self):\n" <>
              "        self.assertEqual(average([]), 0)\n" <> @calc_test_tail
        }
      }
    ] ++
      extra ++
      [
        %{"tool" => "Bash", "input" => %{"command" => "python3 -m unittest -q 2>&1 | tail -3"}},
        %{"expect" => "OK", "text" => "Fixed: an empty list averages 0, with a test."}
      ]
  end

  # Like a model would: read the prompt first; the conversation is then
  # chosen by what the prompt says.
  defp script(turns, extra \\ %{}) do
    Map.merge(
      %{
        "mode" => "normal",
        "opening" => [%{"tool" => "Read", "input" => %{"file_path" => "{prompt_file}"}}],
        "conversations" => [%{"name" => "calc", "match" => "ZeroDivisionError", "turns" => turns}]
      },
      extra
    )
  end

  defp agent_config(dir, repo, model, extra \\ %{}) do
    deep_merge(
      %{
        "state_dir" => Path.join(dir, "state"),
        "tickets" => %{"backend" => "local"},
        "fix" => %{
          "repo" => repo,
          "agent" => %{
            "preset" => "claude_code",
            "program" => @claude,
            "base_url" => model.url,
            "key_env" => "SH_AGENT_KEY",
            "max_turns" => 20,
            "max_retries" => 0,
            "timeout_s" => 60
          },
          "compile" => %{"argv" => ["python3", "-m", "py_compile", "src/calc.py"]},
          "test" => %{"argv" => ["python3", "-m", "unittest", "-q"]}
        },
        "gate" => %{"consent" => "diagnose"}
      },
      extra
    )
  end

  defp run_fix(dir, turns_or_script, extra \\ %{}, repo_files \\ %{}) do
    repo = make_repo(dir, repo_files)
    s = if is_list(turns_or_script), do: script(turns_or_script), else: turns_or_script
    model = start_model(dir, s)
    port = start_port(agent_config(dir, repo, model, extra))
    {fix!(port, fix_args()), model, port, repo}
  end

  defp timeline(dir, fix) do
    Path.join([dir, "state", "audit.jsonl"])
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.map(&SelfHeal.JSON.decode!/1)
    |> Enum.filter(&(&1["fix_id"] == fix["id"]))
  end

  test "a fix by the real CLI, in the sandbox, is validated and deployed", %{tmp_dir: dir} do
    {fix, model, port, repo} = run_fix(dir, fixing_turns(), deploy_config(dir))
    fix = wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])

    assert fix["status"] == "deployed", inspect(fix["detail"] || fix["validation"])
    assert File.read!(Path.join(repo, "src/calc.py")) =~ "if not xs"
    v = fix["validation"]
    assert v["sandboxed"] and v["regression_proven"] and v["existing_tests_passed"]

    # what the agent did, from its own transcript
    t = v["agent_transcript"]
    assert t["structured"]
    assert t["is_error"] == false
    assert t["final"] =~ "Fixed: an empty list averages 0"
    tools = for %{"kind" => "tool", "tool" => name} <- t["entries"], do: name
    assert tools == ["Read", "Read", "Edit", "Read", "Edit", "Bash"]
    assert t["usage"]["input_tokens"] > 0 and t["usage"]["output_tokens"] > 0

    # the CLI ran the tests inside the sandbox and told the model
    assert Enum.any?(tool_results(model), &(&1 =~ "OK"))
    assert [%{"answer" => "text", "problem" => nil} | _] = Enum.reverse(model_requests(model))

    # the report carries it, and the timeline names the agent
    report = File.read!(fix["delivery"]["report"])
    assert report =~ "What the agent did"
    assert report =~ "> Edit"
    agent = Enum.find(timeline(dir, fix), &(&1["action"] == "fix_agent"))
    assert agent["agent"] == "claude_code" and agent["sandbox"] == "bwrap"
    assert agent["turns"] >= 7
  end

  test "from inside the run the agent sees its key, its files and nothing else", %{tmp_dir: dir} do
    probe =
      "env; echo PID1:; tr '\\0' ' ' < /proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'; " <>
        "ls -d /root #{dir} 2>&1; cat #{dir}/state/self_heal.db 2>&1 | head -c 80; " <>
        "touch #{dir}/pwned 2>&1; echo; id -u"

    {fix, model, _port, _repo} =
      run_fix(dir, fixing_turns([%{"tool" => "Bash", "input" => %{"command" => probe}}]))

    assert fix["status"] == "delivered"
    [seen] = Enum.filter(tool_results(model), &(&1 =~ "PID1:"))
    # the environment: its own key (under the name it reads), its settings,
    # a private HOME; no other secret
    assert seen =~ "ANTHROPIC_API_KEY=#{@key}"
    refute seen =~ "SH_AGENT_KEY"
    assert seen =~ "HOME=/home/sandbox"
    assert seen =~ "CLAUDE_CODE_MAX_RETRIES=0"
    refute seen =~ @secret
    refute seen =~ "GITHUB_TOKEN"
    # its own PID namespace, nothing of the host's files
    assert seen =~ "PID1:\n/usr/bin/bwrap"
    assert seen =~ "No such file or directory"
    refute File.exists?(Path.join(dir, "pwned"))
    refute seen =~ "SQLite format"
  end

  test "an edit of a protected file waits for a human", %{tmp_dir: dir} do
    protected = [
      %{"tool" => "Read", "input" => %{"file_path" => "{cwd}/pyproject.toml"}},
      %{
        "tool" => "Edit",
        "input" => %{
          "file_path" => "{cwd}/pyproject.toml",
          "old_string" => "name = \"app\"",
          "new_string" => "name = \"app\"\ndependencies = [\"requests\"]"
        }
      }
    ]

    {fix, _model, _port, _repo} =
      run_fix(
        dir,
        fixing_turns(protected),
        deploy_config(dir),
        %{"pyproject.toml" => "[project]\nname = \"app\"\n"}
      )

    assert fix["status"] == "awaiting_approval"
    assert [%{"path" => "pyproject.toml"}] = fix["validation"]["protected"]
  end

  test "the model is down: the agent fails fast, the fix says why, nothing is applied", %{
    tmp_dir: dir
  } do
    repo = make_repo(dir)
    {:ok, l} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, closed} = :inet.port(l)
    :gen_tcp.close(l)
    cfg = agent_config(dir, repo, %{url: "http://127.0.0.1:#{closed}"})
    port = start_port(cfg)
    fix = fix!(port, fix_args())
    assert fix["status"] == "rejected"
    assert fix["detail"]["reason"] == "the agent changed nothing"
    assert fix["fix_commit"] == nil
    agent = Enum.find(timeline(dir, fix), &(&1["action"] == "fix_agent"))
    assert agent["is_error"] == true
    assert agent["result"] == "exit 1"
    assert agent["final"] =~ ~r/connect|Connection|ECONNREFUSED|reach/i
  end

  test "a model that stalls mid-session: the agent is killed at its timeout, nothing half-applied",
       %{tmp_dir: dir} do
    # it edits the file, then the model never answers again
    turns = Enum.take(fixing_turns(), 2) ++ [%{"hang" => true}]
    repo = make_repo(dir)
    model = start_model(dir, script(turns))
    # 10 s: time enough to reach the stall on a loaded machine
    cfg = agent_config(dir, repo, model, %{"fix" => %{"agent" => %{"timeout_s" => 10}}})
    port = start_port(cfg)
    started = System.monotonic_time(:millisecond)
    fix = fix!(port, fix_args())
    assert System.monotonic_time(:millisecond) - started < 30_000
    assert fix["status"] == "rejected"
    assert fix["detail"]["reason"] =~ "timed out"
    # the edit it made is nowhere: no commit, no branch, the checkout gone
    assert Enum.any?(tool_results(model), &(&1 =~ "updated successfully"))
    assert fix["fix_commit"] == nil
    refute git!(repo, ["branch", "--list"]) =~ "self-heal/"
    refute File.exists?(Path.join([dir, "state", "work", "#{fix["id"]}"]))
    assert agent_processes() == []
  end

  test "an overloaded model is retried within the agent's budget of retries", %{tmp_dir: dir} do
    s = script(fixing_turns(), %{"mode" => "error", "errors" => [529]})

    {fix, model, _port, _repo} = run_fix(dir, s, %{"fix" => %{"agent" => %{"max_retries" => 2}}})

    assert fix["status"] == "delivered"
    assert fix["validation"]["regression_proven"]
    assert [%{"answer" => "error 529"} | _] = model_requests(model)
  end

  test "a model answering garbage: the agent fails, the fix says so", %{tmp_dir: dir} do
    {fix, _model, _port, _repo} = run_fix(dir, script(fixing_turns(), %{"mode" => "garbage"}))

    assert fix["status"] == "rejected"
    agent = Enum.find(timeline(dir, fix), &(&1["action"] == "fix_agent"))
    assert agent["is_error"] == true
  end

  test "the agent's usage counts against the analysis's budgets", %{tmp_dir: dir} do
    # a budget of 5 calls an hour: the first fix's session (6 turns) uses it up
    budget = %{"llm" => %{"budget" => %{"calls_per_hour" => 5}}}
    {fix, _model, port, _repo} = run_fix(dir, fixing_turns(), budget)
    assert fix["status"] == "delivered"

    second = fix!(port, fix_args("fpcalc0002"))
    assert second["status"] == "failed"
    assert second["detail"]["reason"] =~ "llm.budget.calls_per_hour"
  end
end
