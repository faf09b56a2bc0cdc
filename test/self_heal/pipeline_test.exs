defmodule SelfHeal.PipelineTest do
  # Settled groups to analysed tickets and notifications through the real
  # port program (port/analysis/pipeline.c), driven by SelfHeal.Port: the offline
  # analyzer groups a cascade, one ticket per issue, one Slack message per
  # new ticket (Slack played by FakeHTTP), idempotent re-sends, recurrences,
  # and a kill -9 in the middle of an escalation.
  use ExUnit.Case, async: false

  alias SelfHeal.{FakeHTTP, Port}

  @moduletag :tmp_dir
  @moduletag capture_log: true
  @t0 1_790_000_000_000

  defp slack_ok(_req), do: {200, [{"content-type", "text/plain"}], "ok"}

  defp start_port(dir, extra \\ %{}, opts \\ []) do
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    env = "SH_PIPELINE_SLACK_#{System.unique_integer([:positive])}"
    System.put_env(env, slack.url <> "/services/T0/B0/secretpart")

    config =
      Map.merge(
        %{
          "state_dir" => Path.join(dir, "state"),
          "tickets" => %{"backend" => "local"},
          "notify" => %{"channels" => ["slack"], "slack" => %{"webhook_url_env" => env}}
        },
        extra
      )

    pid = start_supervised!({Port, [config: config, backoff_min: 50] ++ opts})
    %{port: pid, slack: slack}
  end

  defp group(id, service, offset_ms, message, extra \\ %{}) do
    Map.merge(
      %{
        "id" => id,
        "type" => "RuntimeError",
        "message" => message,
        "normalized" => message,
        "count" => 5,
        "first_seen" => @t0 + offset_ms,
        "last_seen" => @t0 + offset_ms + 20_000,
        "service" => service,
        "severity" => "high",
        "frames" => []
      },
      extra
    )
  end

  # A database outage and three downstream errors of the same service
  # within seconds, and an unrelated error of another service later.
  defp cascade do
    [
      group("fp-db", "api", 0, "connection refused: db-1:5432 (ECONNREFUSED)", %{
        "type" => "DBConnection.ConnectionError",
        "severity" => "critical",
        "count" => 40
      }),
      group("fp-orders", "api", 1_500, "could not load orders: db-1:5432 unavailable"),
      group("fp-users", "api", 2_000, "user lookup failed: db-1:5432 unavailable"),
      group("fp-cart", "api", 3_000, "cart not saved: db-1:5432 unavailable"),
      group("fp-billing", "billing", 900_000, "invoice total does not match its lines")
    ]
  end

  defp slack_posts(slack), do: Enum.filter(FakeHTTP.requests(slack), &(&1.method == "POST"))

  test "a cascade becomes one ticket, an unrelated error another; a re-send changes nothing",
       %{tmp_dir: dir} do
    %{port: port, slack: slack} = start_port(dir)

    assert {:ok, result} = Port.call(port, "escalate", %{"groups" => cascade()})
    assert result["analysis"]["analyzer"] == "offline"
    assert length(result["issues"]) == 2

    db_issue = Enum.find(result["issues"], &("fp-db" in &1["group_ids"]))
    assert Enum.sort(db_issue["group_ids"]) == ~w(fp-cart fp-db fp-orders fp-users)
    assert db_issue["severity"] == "critical"

    assert [%{"created" => true}, %{"created" => true}] = result["tickets"]
    assert length(result["notifications"]) == 2
    assert length(FakeHTTP.wait_requests(slack, 2)) == 2

    # the same groups again (a re-send after a crash): the stored result
    assert {:ok, again} = Port.call(port, "escalate", %{"groups" => cascade()})
    assert again["job_id"] == result["job_id"]
    {:ok, %{"tickets" => tickets}} = Port.call(port, "tickets", %{})
    assert length(tickets) == 2
    Process.sleep(100)
    assert length(slack_posts(slack)) == 2

    # a recurrence of the root: its ticket's count, and a comment once doubled
    assert {:ok, %{"ticket_id" => id, "commented" => true}} =
             Port.call(port, "update", %{"fingerprint" => "fp-db", "count" => 500})

    assert id == hd(result["tickets"])["ticket_id"] or
             id == List.last(result["tickets"])["ticket_id"]

    assert {:ok, %{"ticket_id" => nil}} =
             Port.call(port, "update", %{"fingerprint" => "fp-unknown", "count" => 1})

    {:ok, audit} = Port.call(port, "verify-audit", %{})
    assert audit["ok"] == true
    assert audit["records"] >= 4
    refute File.read!(Path.join([dir, "state", "audit.jsonl"])) =~ "secretpart"
  end

  test "a fired watch's escalation files a ticket", %{tmp_dir: dir} do
    %{port: port} = start_port(dir)
    watch = group("watch:5xx", "api", 0, "5xx responses: 10 in 60 s (threshold 10)")
    assert {:ok, result} = Port.call(port, "escalate", %{"groups" => [watch]})
    assert [%{"created" => true, "ticket_id" => id}] = result["tickets"]
    {:ok, %{"tickets" => [ticket]}} = Port.call(port, "tickets", %{})
    assert ticket["id"] == id
  end

  test "bad groups are refused with a clear error", %{tmp_dir: dir} do
    %{port: port} = start_port(dir)
    assert {:error, %{code: "bad_args"}} = Port.call(port, "escalate", %{"groups" => []})

    assert {:error, %{code: "bad_args", message: msg}} =
             Port.call(port, "escalate", %{"groups" => [%{"id" => "a"}, %{"id" => "a"}]})

    assert msg =~ "repeats"
  end

  test "groups escalated through the orchestrator are batched into one analysis", %{tmp_dir: dir} do
    %{port: port, slack: slack} = start_port(dir, %{}, escalate_batch_ms: 200)

    for g <- cascade() do
      settled = %{
        fingerprint: g["id"],
        count: g["count"],
        first_seen: g["first_seen"] * 1000,
        last_seen: g["last_seen"] * 1000,
        severity: String.to_atom(g["severity"]),
        type: g["type"],
        normalized: g["normalized"],
        services: [g["service"]],
        sample: %SelfHeal.Event{message: g["message"], service: g["service"]},
        top_frame: nil
      }

      Port.escalate(port, settled)
    end

    assert length(FakeHTTP.wait_requests(slack, 2)) == 2
    Process.sleep(200)
    {:ok, %{"tickets" => tickets}} = Port.call(port, "tickets", %{})
    assert length(tickets) == 2
    {:ok, %{"jobs" => jobs}} = Port.call(port, "jobs", %{})
    assert [%{"status" => "done"}] = Enum.filter(jobs, &(&1["kind"] == "escalate"))
  end

  test "kill -9 in the middle of an escalation: resumed after the restart, one ticket each",
       %{tmp_dir: dir} do
    # The first model call hangs; the port is killed while it waits. After
    # the restart the job is resumed (the model now fails fast, so the
    # offline analyzer answers) and the re-sent request finds the same job.
    {:ok, llm} =
      FakeHTTP.start(fn _ -> {500, [], "{}"} end,
        sequence: [{:delay, 5_000, {500, [], "{}"}}]
      )

    key_env = "SH_PIPELINE_KEY_#{System.unique_integer([:positive])}"
    System.put_env(key_env, "test-key-not-secret")

    llm_config = %{
      "llm" => %{
        "provider" => "openai",
        "endpoint" => llm.url,
        "model" => "m",
        "api_key_env" => key_env,
        "max_attempts" => 1,
        "timeout_ms" => 20_000
      }
    }

    %{port: port, slack: slack} = start_port(dir, llm_config)
    Port.subscribe(port)
    os_pid = Port.os_pid(port)

    caller = Task.async(fn -> Port.call(port, "escalate", %{"groups" => cascade()}, 30_000) end)
    assert [_] = FakeHTTP.wait_requests(llm, 1)
    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(os_pid)])

    assert_receive {:self_heal_port, %{"event" => "port_exited"}}, 5_000
    assert_receive {:self_heal_port, %{"event" => "port_configured"}}, 5_000
    assert_receive {:self_heal_port, %{"event" => "job_recovered", "status" => "queued"}}, 5_000
    assert_receive {:self_heal_port, %{"event" => "job_resumed", "status" => "done"}}, 10_000

    # the re-sent request: the job's result or its status, never a second run
    assert {:ok, reply} = Task.await(caller, 30_000)
    assert reply["job_id"] != nil

    {:ok, %{"jobs" => jobs}} = Port.call(port, "jobs", %{})
    assert [%{"status" => "done"}] = Enum.filter(jobs, &(&1["kind"] == "escalate"))
    {:ok, %{"tickets" => tickets}} = Port.call(port, "tickets", %{})
    assert length(tickets) == 2
    Process.sleep(200)
    assert length(slack_posts(slack)) == 2
    assert {:ok, %{"ok" => true}} = Port.call(port, "verify-audit", %{})
  end
end
