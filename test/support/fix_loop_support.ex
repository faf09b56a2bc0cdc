defmodule SelfHeal.FixLoopSupport do
  @moduledoc false
  # Shared by the fix-loop suites: a real git repository holding a small
  # Python project (its tests take milliseconds), scripted agents, the
  # port's configuration, a deploy "command" and health check, waiting for
  # a fix's status, and the checks every containment test makes afterwards
  # (processes left, files changed outside the task).

  import ExUnit.Assertions
  import ExUnit.Callbacks, only: [start_supervised!: 1]

  alias SelfHeal.Port

  @marker "self_heal_fixloop_agent"

  def marker, do: @marker

  def git!(dir, args) do
    {out, 0} =
      System.cmd("git", ["-c", "user.name=Dev", "-c", "user.email=dev@example.com" | args],
        cd: dir,
        stderr_to_stdout: true
      )

    out
  end

  @calc """
  def average(xs):
      return sum(xs) / len(xs)
  """

  @calc_test """
  import unittest

  from src.calc import average


  class AverageTest(unittest.TestCase):
      def test_average(self):
          self.assertEqual(average([2, 4]), 3)


  if __name__ == "__main__":
      unittest.main()
  """

  @doc "The Python project: src/calc.py (the bug), tests/test_calc.py, extra files."
  def make_repo(dir, extra \\ %{}) do
    repo = Path.join(dir, "app")

    files =
      Map.merge(
        %{
          "src/__init__.py" => "",
          "tests/__init__.py" => "",
          "src/calc.py" => @calc,
          "tests/test_calc.py" => @calc_test,
          "README.md" => "# app\n",
          ".gitignore" => "__pycache__/\n*.pyc\ntmp/\n"
        },
        extra
      )

    for {path, content} <- files do
      File.mkdir_p!(Path.dirname(Path.join(repo, path)))
      File.write!(Path.join(repo, path), content)
    end

    git!(repo, ["init", "-q", "-b", "main"])
    git!(repo, ["add", "-A"])
    git!(repo, ["commit", "-q", "-m", "initial"])
    repo
  end

  @doc "An agent script (sh) run with argv {checkout} {prompt_file}."
  def agent(dir, name, body) do
    path = Path.join(dir, "#{@marker}_#{name}")
    File.write!(path, "#!/bin/sh\n# #{@marker}\ncd \"$1\" || exit 9\n" <> body)
    File.chmod!(path, 0o755)
    path
  end

  @doc "A fix that makes src/calc.py handle [] and adds a test for it."
  def good_fix do
    """
    cat > src/calc.py <<'PY'
    def average(xs):
        if not xs:
            return 0
        return sum(xs) / len(xs)
    PY
    cat >> tests/test_calc.py <<'PY'


    class EmptyTest(unittest.TestCase):
        def test_empty(self):
            self.assertEqual(average([]), 0)
    PY
    echo "fixed the empty list"
    """
  end

  def config(dir, repo, agent_path, extra \\ %{}) do
    deep_merge(
      %{
        "state_dir" => Path.join(dir, "state"),
        "tickets" => %{"backend" => "local"},
        "fix" => %{
          "repo" => repo,
          "agent" => %{"argv" => [agent_path, "{checkout}", "{prompt_file}"], "timeout_s" => 20},
          "compile" => %{"argv" => ["python3", "-m", "py_compile", "src/calc.py"]},
          "test" => %{"argv" => ["python3", "-m", "unittest", "-q"]}
        },
        "gate" => %{"consent" => "diagnose"}
      },
      extra
    )
  end

  def deep_merge(a, b) when is_map(a) and is_map(b),
    do: Map.merge(a, b, fn _k, x, y -> deep_merge(x, y) end)

  def deep_merge(_a, b), do: b

  def start_port(config, opts \\ []) do
    start_supervised!({Port, [config: config, backoff_min: 50] ++ opts})
  end

  @stack """
  Traceback (most recent call last):
    File "/srv/app/src/calc.py", line 2, in average
      return sum(xs) / len(xs)
  ZeroDivisionError: division by zero
  """

  def fix_args(fp \\ "fpcalc0001", extra \\ %{}) do
    Map.merge(
      %{
        "fingerprint" => fp,
        "severity" => "high",
        "root_cause" => "average/1 divides by the length of an empty list",
        "wait" => true,
        "group" => %{
          "id" => fp,
          "type" => "ZeroDivisionError",
          "message" => "division by zero",
          "stacktrace" => @stack,
          "count" => 12,
          "service" => "calc",
          "path" => "/average"
        }
      },
      extra
    )
  end

  def fix!(port, args) do
    {:ok, fix} = Port.call(port, "fix", args, 120_000)
    fix
  end

  def wait_until(fun, ms \\ 15_000) do
    deadline = System.monotonic_time(:millisecond) + ms

    Stream.repeatedly(fn ->
      case fun.() do
        falsy when falsy in [nil, false] ->
          if System.monotonic_time(:millisecond) > deadline, do: flunk("timed out waiting")
          Process.sleep(50)
          nil

        value ->
          value
      end
    end)
    |> Enum.find(& &1)
  end

  def fix_status(port, id) do
    case Port.call(port, "fix_get", %{"id" => id}) do
      {:ok, fix} -> fix
      {:error, _port_restarting} -> %{}
    end
  end

  def wait_status(port, id, statuses, ms \\ 20_000) do
    wait_until(
      fn ->
        fix = fix_status(port, id)
        if fix["status"] in statuses, do: fix
      end,
      ms
    )
  end

  @doc """
  A deploy "command" that records the deployed commit and reads its
  settings from a file outside the repository (deploy.env next to it); the
  health check reads a flag file the test controls.
  """
  def deploy_config(dir, extra \\ %{}) do
    healthy = Path.join(dir, "healthy")
    File.write!(healthy, "ok")
    File.write!(Path.join(dir, "deploy.env"), "DEPLOY_TARGET=production\n")
    deploy = Path.join(dir, "deploy.sh")

    # paths from the script's own directory: test names may hold quotes
    File.write!(deploy, """
    #!/bin/sh
    here=$(dirname "$0")
    . "$here/deploy.env"
    echo "$1 $2 $DEPLOY_TARGET" >> "$here/deploys.log"
    """)

    File.chmod!(deploy, 0o755)
    health = Path.join(dir, "health.sh")
    File.write!(health, "#!/bin/sh\ntest -f \"$(dirname \"$0\")/healthy\"\n")
    File.chmod!(health, 0o755)

    deep_merge(
      %{
        "gate" => %{"consent" => "repair"},
        "deploy" => %{
          "branch" => "main",
          "argv" => [deploy, "{repo}", "{commit}"],
          "health" => %{"argv" => [health], "timeout_s" => 3, "interval_ms" => 200},
          "verify_window_s" => 2
        }
      },
      extra
    )
  end

  @doc "The installed Claude Code CLI (`make agents`), or nil."
  def claude do
    case System.get_env("SELF_HEAL_CLAUDE") do
      path when is_binary(path) and path != "" ->
        if File.regular?(path), do: path

      _ ->
        nil
    end
  end

  @doc """
  The model's stand-in (examples/agent/model_stand_in.py) serving `script`
  (a map, see examples/agent/model_stand_in.md): %{url, log, port}. It
  stops when the test process ends (its stdin is this port).
  """
  def start_model(dir, script) do
    script_path = Path.join(dir, "model_script_#{System.unique_integer([:positive])}.json")
    log = script_path <> ".log"
    File.write!(script_path, SelfHeal.JSON.encode!(script))
    python = System.find_executable("python3")
    stand_in = Path.expand("../../examples/agent/model_stand_in.py", __DIR__)

    port =
      Elixir.Port.open({:spawn_executable, python}, [
        :binary,
        {:line, 1000},
        args: [stand_in, "--script", script_path, "--log", log]
      ])

    receive do
      {^port, {:data, {:eol, "PORT " <> n}}} ->
        %{url: "http://127.0.0.1:#{n}", log: log, port: port}
    after
      10_000 -> flunk("the model stand-in did not start")
    end
  end

  @doc "The requests the model's stand-in logged."
  def model_requests(%{log: log}) do
    case File.read(log) do
      {:ok, text} ->
        text |> String.split("\n", trim: true) |> Enum.map(&SelfHeal.JSON.decode!/1)

      _ ->
        []
    end
  end

  @doc "The text of every tool result the CLI sent the model."
  def tool_results(model) do
    for req <- model_requests(model),
        msg <- List.wrap(get_in(req, ["body", "messages"])),
        msg["role"] == "user",
        block <- List.wrap(msg["content"]),
        is_map(block) and block["type"] == "tool_result" do
      case block["content"] do
        text when is_binary(text) -> text
        blocks when is_list(blocks) -> Enum.map_join(blocks, "", &(&1["text"] || ""))
        _ -> ""
      end
    end
    |> Enum.uniq()
  end

  @doc "Processes (not zombies) whose command line holds the agents' marker."
  def agent_processes do
    {out, _} = System.cmd("ps", ["-eo", "pid=,stat=,args="])

    out
    |> String.split("\n", trim: true)
    |> Enum.filter(&String.contains?(&1, @marker))
    |> Enum.reject(&(String.split(&1) |> Enum.at(1, "") |> String.starts_with?("Z")))
  end

  @doc """
  Every file under root (symlinks as their target text) with its content
  hash and mode, but for the paths `skip` says to leave out.
  """
  def snapshot(root, skip \\ fn _ -> false end) do
    root
    |> walk("")
    |> Enum.reject(fn {rel, _} -> skip.(rel) end)
    |> Map.new()
  end

  defp walk(root, rel) do
    path = if rel == "", do: root, else: Path.join(root, rel)

    case File.lstat(path) do
      {:ok, %File.Stat{type: :directory}} ->
        case File.ls(path) do
          {:ok, names} ->
            Enum.flat_map(names, fn n -> walk(root, if(rel == "", do: n, else: "#{rel}/#{n}")) end)

          _ ->
            []
        end

      {:ok, %File.Stat{type: :symlink}} ->
        {:ok, target} = :file.read_link(String.to_charlist(path))
        [{rel, {:symlink, to_string(target)}}]

      {:ok, %File.Stat{type: :regular, mode: mode}} ->
        [{rel, {:crypto.hash(:sha256, File.read!(path)), mode}}]

      {:ok, %File.Stat{type: type}} ->
        [{rel, type}]

      _ ->
        []
    end
  end
end
