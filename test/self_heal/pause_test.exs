defmodule SelfHeal.PauseTest do
  # Pausing all automation (`mix self_heal.pause`, SelfHeal.Release): the
  # switch is set by the port binary run once against the state (as the
  # mix task does), a running port refuses escalations and fixes while it
  # is on, the switch survives a restart of the port, and escalations
  # collected by SelfHeal.Port wait and go once it is resumed.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias SelfHeal.Port

  @moduletag :tmp_dir

  defp config(dir),
    do: %{"state_dir" => Path.join(dir, "state"), "tickets" => %{"backend" => "local"}}

  defp group(id) do
    %{
      "id" => id,
      "type" => "RuntimeError",
      "message" => "boom #{id}",
      "normalized" => "boom #{id}",
      "count" => 5,
      "first_seen" => 1_790_000_000_000,
      "last_seen" => 1_790_000_020_000,
      "service" => "api",
      "severity" => "high",
      "frames" => []
    }
  end

  defp switch(dir, on) do
    SelfHeal.CLI.run("pause", %{"on" => on, "by" => "test"}, config: Port.wire(config(dir)))
  end

  test "paused: escalations and fixes refused, across a restart of the port; resumed: they run",
       %{tmp_dir: dir} do
    port = start_supervised!({Port, config: config(dir)}, id: :first)
    assert {:ok, %{"paused" => false}} = Port.call(port, "gate_status")

    assert {:ok, %{"paused" => true}} = switch(dir, true)
    assert {:ok, %{"paused" => true}} = Port.call(port, "gate_status")

    assert {:error, %{code: "paused"}} =
             Port.call(port, "escalate", %{"groups" => [group("fp-a")]})

    assert {:error, %{code: "paused"}} =
             Port.call(port, "fix", %{"fingerprint" => "fp-a", "group" => group("fp-a")})

    # a new port program on the same state: still paused
    :ok = stop_supervised(:first)
    port = start_supervised!({Port, config: config(dir)}, id: :second)
    assert {:ok, %{"paused" => true}} = Port.call(port, "gate_status")

    assert {:error, %{code: "paused"}} =
             Port.call(port, "escalate", %{"groups" => [group("fp-a")]})

    assert {:ok, %{"paused" => false}} = switch(dir, false)

    assert {:ok, %{"job_id" => _, "tickets" => [_]}} =
             Port.call(port, "escalate", %{"groups" => [group("fp-a")]})

    actions = SelfHeal.TestSupport.audit_actions(Path.join(dir, "state"))
    assert actions["paused"] == 2
  end

  test "groups settled while paused wait in SelfHeal.Port and are escalated once resumed",
       %{tmp_dir: dir} do
    assert {:ok, _} = switch(dir, true)
    port = start_supervised!({Port, config: config(dir), escalate_batch_ms: 100})
    :ok = Port.subscribe(port)

    settled = %{
      fingerprint: "fp-wait",
      count: 4,
      first_seen: 1_790_000_000_000_000,
      last_seen: 1_790_000_001_000_000,
      severity: :high,
      type: "RuntimeError",
      normalized: "waits",
      services: ["api"],
      sample: %SelfHeal.Event{message: "waits", service: "api"},
      top_frame: nil
    }

    log =
      capture_log(fn ->
        Port.escalate(port, settled)
        Process.sleep(600)
      end)

    assert log =~ "automation is paused"
    assert {:ok, %{"tickets" => []}} = Port.call(port, "tickets", %{})

    assert {:ok, _} = switch(dir, false)
    assert_receive {:self_heal_port, %{"event" => "ticket"}}, 5_000
  end
end
