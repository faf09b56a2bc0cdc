defmodule SelfHeal.LostUpdateTest do
  # Counters under concurrency, through the real port program with 8
  # worker threads on one state directory: every read-modify-write is one
  # SQLite statement or one transaction, so no update is lost.
  use ExUnit.Case, async: false

  alias SelfHeal.Port

  @moduletag :tmp_dir
  @moduletag capture_log: true
  @fp "0123456789abcdef0123456789abcdef"
  @t0 1_790_000_000_000

  defp start_port(dir) do
    config = %{
      "state_dir" => Path.join(dir, "state"),
      "port" => %{"workers" => 8},
      "tickets" => %{"backend" => "local"}
    }

    start_supervised!({Port, [config: config]})
  end

  # One occurrence of the fingerprint; i makes each request a job of its own.
  defp issue(i) do
    %{
      "root_cause" => "the database refuses connections",
      "severity" => "high",
      "group_ids" => [@fp],
      "groups" => [%{"id" => @fp, "count" => 1, "last_seen" => @t0 + i}]
    }
  end

  defp concurrently(n, fun) do
    1..n
    |> Task.async_stream(fun, max_concurrency: n, timeout: 120_000)
    |> Enum.map(fn {:ok, r} -> r end)
  end

  defp audit_actions(dir), do: SelfHeal.TestSupport.audit_actions(Path.join(dir, "state"))

  test "301 concurrent ticket_upsert on one fingerprint: one ticket, count 301", %{tmp_dir: dir} do
    port = start_port(dir)

    replies = concurrently(301, fn i -> Port.call(port, "ticket_upsert", issue(i), 120_000) end)

    assert Enum.all?(replies, &match?({:ok, _}, &1)),
           inspect(Enum.reject(replies, &match?({:ok, _}, &1)))

    assert Enum.count(replies, fn {:ok, r} -> r["created"] end) == 1

    {:ok, %{"tickets" => [ticket]}} = Port.call(port, "tickets", %{})
    assert ticket["count"] == 301
    actions = audit_actions(dir)
    assert actions["ticket_created"] == 1
    assert actions["ticket_commented"] == 300
    assert {:ok, %{"ok" => true}} = Port.call(port, "verify-audit", %{})
  end

  test "300 concurrent updates of one fingerprint add up", %{tmp_dir: dir} do
    port = start_port(dir)
    {:ok, %{"created" => true, "ticket_id" => id}} = Port.call(port, "ticket_upsert", issue(0))

    replies =
      concurrently(300, fn i ->
        Port.call(port, "update", %{"fingerprint" => @fp, "count" => 1, "last_seen" => @t0 + i})
      end)

    assert Enum.all?(replies, &match?({:ok, %{"ticket_id" => ^id}}, &1))
    {:ok, %{"tickets" => [ticket]}} = Port.call(port, "tickets", %{})
    assert ticket["count"] == 301
    # each update saw its own total: 2..301 once each
    assert replies |> Enum.map(fn {:ok, r} -> r["count"] end) |> Enum.sort() ==
             Enum.to_list(2..301)

    # a comment when an update at least doubles the count: 1 -> 2 only
    assert Enum.count(replies, fn {:ok, r} -> r["commented"] end) == 1
  end
end
