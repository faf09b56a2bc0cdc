defmodule SelfHeal.MetricsTest do
  # /metrics over the real port program (SQLite state, offline analysis,
  # local tickets): every ticket counts in the time to ticket, one without
  # a fix too; the groups SelfHeal.Port keeps while automation is paused
  # are escalations pending, apart from the fixes waiting for approval;
  # the exposition passes promtool, with and without the port.
  use ExUnit.Case, async: false

  alias SelfHeal.{Metrics, Port, TestSupport}

  @moduletag :tmp_dir
  @moduletag capture_log: true

  defp config(dir),
    do: %{"state_dir" => Path.join(dir, "state"), "tickets" => %{"backend" => "local"}}

  defp start_port(dir, opts \\ []) do
    name = :"metrics_port_#{System.unique_integer([:positive])}"
    start_supervised!({Port, [name: name, config: config(dir), backoff_min: 50] ++ opts})
    name
  end

  defp exposition(port), do: IO.iodata_to_binary(Metrics.exposition(port: port))

  # the value of the sample `series` (name and labels as written)
  defp value(text, series) do
    case Regex.run(~r/^#{Regex.escape(series)} (\S+)$/m, text) do
      [_, v] -> v |> Float.parse() |> elem(0)
      nil -> flunk("no sample #{series} in:\n#{text}")
    end
  end

  defp promtool(text, dir) do
    case System.find_executable("promtool") do
      nil ->
        IO.puts(:stderr, "promtool is not installed (apt-get install prometheus): not run")

      promtool ->
        file = Path.join(dir, "metrics.txt")
        File.write!(file, text)
        {out, status} = System.cmd("sh", ["-c", "#{promtool} check metrics < \"$0\"", file])
        assert status == 0, out
    end
  end

  test "a ticket without a fix counts in the time to ticket", %{tmp_dir: dir} do
    port = start_port(dir)
    first = System.os_time(:millisecond) - 100_000

    group = %{
      "id" => "fp-ticket-only",
      "type" => "RuntimeError",
      "message" => "boom",
      "normalized" => "boom",
      "count" => 12,
      "first_seen" => first,
      "last_seen" => first + 50_000,
      "service" => "api",
      "severity" => "high",
      "frames" => []
    }

    assert {:ok, %{"tickets" => [_]}} = Port.call(port, "escalate", %{"groups" => [group]})
    text = exposition(port)
    assert value(text, "self_heal_time_to_ticket_seconds_count") == 1
    assert value(text, ~s(self_heal_time_to_ticket_seconds_bucket{le="60"})) == 0
    assert value(text, ~s(self_heal_time_to_ticket_seconds_bucket{le="300"})) == 1
    # no fix: nothing deployed
    assert value(text, "self_heal_time_to_deploy_seconds_count") == 0
    promtool(text, dir)
  end

  test "groups kept while paused are escalations pending, not approvals waiting",
       %{tmp_dir: dir} do
    port = start_port(dir, escalate_batch_ms: 50)
    assert {:ok, %{"paused" => true}} = Port.call(port, "pause", %{"on" => true, "by" => "test"})

    now = System.os_time(:microsecond)
    Port.escalate(port, %{fingerprint: "fp-pending", count: 4, first_seen: now, last_seen: now})
    # sent after 50 ms, refused (paused), kept
    Process.sleep(300)
    assert Port.escalations_pending(port) == 1

    text = exposition(port)
    assert value(text, ~s(self_heal_escalations_pending{where="batch"})) == 1
    assert value(text, ~s(self_heal_escalations_pending{where="port"})) == 0
    assert value(text, "self_heal_approvals_waiting") == 0
    promtool(text, dir)

    # resumed: analysed, ticketed, nothing pending
    assert {:ok, _} = Port.call(port, "pause", %{"on" => false, "by" => "test"})
    TestSupport.eventually(fn -> Port.escalations_pending(port) == 0 end, 5_000)

    TestSupport.eventually(
      fn -> match?({:ok, %{"tickets" => [_]}}, Port.call(port, "tickets", %{})) end,
      5_000
    )

    # the job ends after its ticket (notifications)
    TestSupport.eventually(
      fn -> value(exposition(port), ~s(self_heal_escalations_pending{where="port"})) == 0 end,
      5_000
    )

    assert value(exposition(port), ~s(self_heal_escalations_pending{where="batch"})) == 0
  end

  test "without a port or a collector the exposition is whole", %{tmp_dir: dir} do
    text = IO.iodata_to_binary(Metrics.exposition([]))
    assert text =~ "self_heal_events_received_total"
    refute text =~ "self_heal_escalations_pending"
    promtool(text, dir)
  end
end
