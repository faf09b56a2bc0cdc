defmodule SelfHeal.MixTasksTest do
  # The mix tasks as a user runs them: `mix self_heal.*` subprocesses in a
  # scratch project that depends on SelfHeal by path, against a state
  # directory. Each prints only its answer (no build output) and exits 0,
  # or 1 with a reason.
  use ExUnit.Case, async: false

  @moduletag :tmp_dir
  @moduletag timeout: 600_000

  setup_all do
    dir =
      Path.join(System.tmp_dir!(), "self_heal_mix_tasks_#{System.unique_integer([:positive])}")

    File.mkdir_p!(Path.join(dir, "config"))
    on_exit(fn -> File.rm_rf(dir) end)

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule Scratch.MixProject do
      use Mix.Project
      def project, do: [app: :scratch, version: "0.1.0", deps: [{:self_heal, path: #{inspect(File.cwd!())}}]]
    end
    """)

    File.write!(Path.join(dir, "config/config.exs"), """
    import Config
    config :self_heal,
      state_dir: #{inspect(Path.join(dir, "state"))},
      port: [config: %{"tickets" => %{"backend" => "local"}}]
    """)

    # the first run compiles SelfHeal into the scratch project, quietly too
    {out, status} = mix(dir, ["self_heal.status"])
    assert status == 0, out
    %{dir: dir, first: out}
  end

  defp mix(dir, args) do
    System.cmd("mix", args,
      cd: dir,
      stderr_to_stdout: true,
      env: [{"MIX_ENV", "dev"}, {"MIX_BUILD_PATH", nil}, {"MIX_EXS", nil}]
    )
  end

  test "quiet: only the answer; the first run shows Mix compiling SelfHeal, never make",
       %{dir: dir, first: first} do
    # Mix compiles a dependency before it can find the dependency's task
    # (docs/operating.md): its own lines, nothing else before the answer
    assert [before, _answer] = String.split(first, "automation: running", parts: 2)

    for line <- String.split(before, "\n", trim: true),
        do:
          assert(
            line =~ ~r/^(==> \w+|Compiling \d+ files? \(\.ex\)|Generated self_heal app)$/,
            line
          )

    refute first =~ ~r/\b(CC|LD|make)\b/

    assert {out, 0} = mix(dir, ["self_heal.status"])

    assert [
             "automation: running",
             "kill switch: off",
             "breaker: closed (0 consecutive failures)",
             "consent: diagnose" | _
           ] = String.split(out, "\n", trim: true)

    assert out =~ "escalations pending: 0 queued or analysed by the port\n"
    assert out =~ "approvals waiting: 0 (fixes waiting for a human)\n"
    refute out =~ ~r/Compiling|Generated|==>/
  end

  test "pause and resume, kept in the state directory", %{dir: dir} do
    assert {"automation paused by ops\n", 0} = mix(dir, ["self_heal.pause", "--by", "ops"])
    assert {out, 0} = mix(dir, ["self_heal.status"])
    assert out =~ "automation: paused"
    assert {"automation resumed by ops\n", 0} = mix(dir, ["self_heal.resume", "--by", "ops"])
    assert {out, 0} = mix(dir, ["self_heal.status"])
    assert out =~ "automation: running"
  end

  test "consent: shown, granted, and what the gate uses", %{dir: dir} do
    assert {out, 0} = mix(dir, ["self_heal.consent"])
    assert out =~ "consent diagnose"
    assert {out, 0} = mix(dir, ["self_heal.consent", "repair", "--by", "ops"])
    assert out =~ "consent repair"
    assert {out, 0} = mix(dir, ["self_heal.status"])
    assert out =~ "consent: repair"
    assert {_, 1} = mix(dir, ["self_heal.consent", "everything"])
    # the state directory is shared by this module's tests
    assert {_, 0} = mix(dir, ["self_heal.consent", "diagnose"])
  end

  test "lists, the audit log, the gate", %{dir: dir} do
    assert {"no tickets\n", 0} = mix(dir, ["self_heal.tickets"])
    assert {"no fixes\n", 0} = mix(dir, ["self_heal.fixes", "--status", "awaiting_approval"])
    assert {"no groups\n", 0} = mix(dir, ["self_heal.groups"])
    assert {out, 0} = mix(dir, ["self_heal.verify_audit"])
    assert out =~ ~r/^audit log ok: \d+ records/
    assert {out, 0} = mix(dir, ["self_heal.gate"])
    assert out =~ ~r/^kill switch: off; breaker: closed/
  end

  test "failures exit with status 1 and say why", %{dir: dir} do
    assert {out, 1} = mix(dir, ["self_heal.approve", "nope"])
    assert out =~ "not a fix id"
    assert {out, 1} = mix(dir, ["self_heal.fixes", "99"])
    assert out =~ "not_found"
    assert {out, 1} = mix(dir, ["self_heal.replay", "no-such-fingerprint"])
    assert out =~ "no group no-such-fingerprint"
    assert {out, 1} = mix(dir, ["self_heal.gate", "explode"])
    assert out =~ "usage: mix self_heal.gate"
  end
end
