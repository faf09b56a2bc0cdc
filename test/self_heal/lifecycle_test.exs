defmodule SelfHeal.LifecycleTest do
  # Each group's lifecycle: the stages, and `mix self_heal.groups` /
  # `SelfHeal.Release` showing them for the application's live groups with
  # a real port program making and deploying a fix.
  use ExUnit.Case, async: false

  import SelfHeal.FixLoopSupport

  alias SelfHeal.{Collector, Event, Lifecycle}

  @moduletag :tmp_dir
  @moduletag capture_log: true
  @moduletag timeout: 120_000

  test "the stages" do
    settled = fn decision, reason -> {:medium, decision, reason, 0, 3} end
    fix = fn status -> %{"id" => 7, "status" => status} end

    assert Lifecycle.stage(nil, false, nil) == {:settling, nil}

    assert Lifecycle.stage(settled.(:hold, :below_min_severity), false, nil) ==
             {:held, "below_min_severity"}

    assert Lifecycle.stage(settled.(:escalate, nil), false, nil) == {:detected, nil}
    assert Lifecycle.stage(nil, true, nil) == {:detected, nil}

    for s <- ~w(fixing delivered awaiting_approval approved deploying verifying),
        do: assert(Lifecycle.stage(nil, true, fix.(s)) == {:fixing, "fix 7 #{s}"})

    assert Lifecycle.stage(nil, true, fix.("deployed")) == {:fixed, "fix 7 deployed"}
    assert Lifecycle.stage(nil, true, fix.("rolled_back")) == {:rolled_back, "fix 7 rolled_back"}
    # a fix that ended without a deploy leaves its group detected
    assert Lifecycle.stage(nil, true, fix.("failed")) == {:detected, "fix 7 failed"}

    assert Lifecycle.label(Lifecycle.of_fix(fix.("rolled_back"))) ==
             "rolled back (fix 7 rolled_back)"

    # the latest fix of a fingerprint, else of the group's ticket
    index =
      Lifecycle.index([
        %{"id" => 1, "fingerprint" => "a", "ticket_id" => 4, "status" => "rolled_back"},
        %{"id" => 3, "fingerprint" => "a", "ticket_id" => 4, "status" => "deployed"},
        %{"id" => 2, "fingerprint" => "a", "ticket_id" => 4, "status" => "failed"}
      ])

    assert Lifecycle.fix_for(index, "a", nil)["id"] == 3
    assert Lifecycle.fix_for(index, "b", 4)["id"] == 3
    assert Lifecycle.fix_for(index, "b", 5) == nil
  end

  test "mix self_heal.groups: settling, fixing, fixed", %{tmp_dir: dir} do
    repo = make_repo(dir)
    consent = %{"gate" => %{"consent" => "diagnose"}}
    cfg = config(dir, repo, agent(dir, "good", good_fix()), deploy_config(dir, consent))
    saved = {Application.get_env(:self_heal, :port), Application.get_env(:self_heal, :state_dir)}

    # put back as it was: a key that was not set is deleted, not set to nil
    on_exit(fn ->
      for {key, value} <- [port: elem(saved, 0), state_dir: elem(saved, 1)] do
        if value == nil,
          do: Application.delete_env(:self_heal, key),
          else: Application.put_env(:self_heal, key, value)
      end
    end)

    Application.put_env(:self_heal, :port, config: Map.delete(cfg, "state_dir"))
    Application.put_env(:self_heal, :state_dir, cfg["state_dir"])
    port = start_port(cfg)

    # the application's collector; its settle stage waits 30 s
    tag = "lifecycle #{System.unique_integer([:positive])}"

    for kind <- ["stock", "price"] do
      Collector.push(SelfHeal.Collector, [
        Event.new(
          type: "RuntimeError",
          message: "#{tag} #{kind} is off",
          stacktrace: [{MyApp.Lifecycle, :"#{kind}", 1, [file: ~c"lib/x.ex", line: 3]}]
        )
      ])
    end

    groups =
      wait_until(fn ->
        mine = Enum.filter(SelfHeal.groups(), &(&1.sample.message =~ tag))
        if length(mine) == 2, do: mine
      end)

    stock = Enum.find(groups, &(&1.sample.message =~ "stock")).fingerprint
    fix = fix!(port, fix_args(stock))
    id = fix["id"]
    assert fix["status"] == "awaiting_approval"

    line = fn kind ->
      {:ok, out} = SelfHeal.Release.text(:groups, [[]])
      out |> String.split("\n") |> Enum.find(&(&1 =~ "#{tag} #{kind}")) || flunk(out)
    end

    assert line.("price") =~ "[settling]"
    assert line.("stock") =~ "[fixing (fix #{id} awaiting_approval)]"

    {:ok, _} = SelfHeal.Port.call(port, "approve", %{"id" => id, "by" => "ops"})
    assert wait_status(port, id, ["deployed", "rolled_back", "failed"])["status"] == "deployed"
    assert line.("stock") =~ "[fixed (fix #{id} deployed)]"

    {:ok, fixes} = SelfHeal.Release.text(:fixes, [[]])
    assert fixes =~ ~r/fix #{id} deployed .* group fixed/
    {:ok, one} = SelfHeal.Release.text(:fix, [id])
    assert one =~ "group: fixed (fix #{id} deployed)"
  end
end
