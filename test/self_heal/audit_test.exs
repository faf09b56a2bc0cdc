defmodule SelfHeal.AuditTest do
  # The audit log through the real port: keyed records and `verify-audit`
  # from the shell, a broken chain at configure (moved aside, said in the
  # reply and logged), and the head published in ticket comments and
  # notifications, then checked by `verify-audit` as witnesses.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  require Logger

  alias SelfHeal.FakeHTTP
  alias SelfHeal.JSON
  alias SelfHeal.PortShell

  @moduletag :tmp_dir

  @key_env "SELF_HEAL_TEST_AUDIT_KEY"
  @key "audit-test-key-" <> String.duplicate("k7Q", 8)
  @fp "0123456789abcdef0123456789abcdef"
  @slack_env "SELF_HEAL_TEST_AUDIT_SLACK"

  defp run(dir, cmd, args, config, env) do
    {status, reply, output} = PortShell.run(dir, cmd, args, config, env)
    refute output =~ @key
    {status, reply, output}
  end

  defp ok!(dir, cmd, args, config, env \\ []) do
    {status, reply, output} = run(dir, cmd, args, config, env)
    assert status == 0, "#{cmd} failed: #{output}"
    reply["ok"]
  end

  defp issue(count) do
    %{
      "root_cause" => "Database pool exhausted",
      "severity" => "high",
      "group_ids" => [@fp],
      "groups" => [%{"id" => @fp, "count" => count, "service" => "shop"}]
    }
  end

  defp log_path(dir), do: Path.join([dir, "state", "audit.jsonl"])
  defp lines(dir), do: log_path(dir) |> File.read!() |> String.split("\n", trim: true)
  defp sha256(line), do: :crypto.hash(:sha256, line) |> Base.encode16(case: :lower)

  # The server mode, for what `configure` answers and the events before it.
  defp open_port(env) do
    Port.open({:spawn_executable, PortShell.port_path()}, [
      :binary,
      {:packet, 4},
      :exit_status,
      env: Enum.map(env, fn {k, v} -> {String.to_charlist(k), String.to_charlist(v)} end)
    ])
  end

  defp call(port, cmd, args) do
    id = System.unique_integer([:positive])
    Port.command(port, FakeHTTP.encode(%{"id" => id, "cmd" => cmd, "args" => args}))
    await(port, id, [])
  end

  # The reply to id, and the notifications that came before it.
  defp await(port, id, events) do
    receive do
      {^port, {:data, data}} ->
        case JSON.decode!(data) do
          %{"id" => ^id} = reply -> {reply, Enum.reverse(events)}
          %{"event" => _} = event -> await(port, id, [event | events])
        end
    after
      15_000 -> flunk("no reply to request #{id}")
    end
  end

  test "keyed records: verify-audit with the key, a forged record caught, the key never written",
       %{tmp_dir: dir} do
    config = %{"state_dir" => Path.join(dir, "state"), "audit" => %{"key_env" => @key_env}}
    env = [{@key_env, @key}]
    ok!(dir, "ticket_upsert", issue(2), config, env)
    ok!(dir, "ticket_upsert", issue(3), config, env)

    report = ok!(dir, "verify-audit", %{}, config, env)
    assert report["ok"] == true
    assert report["records"] == 2
    assert report["keyed"] == true
    assert report["authenticated"] == 2
    assert report["anchor"]["seq"] == 2
    assert report["head"] == sha256(List.last(lines(dir)))

    for file <- File.ls!(Path.join(dir, "state")),
        do: refute(File.read!(Path.join([dir, "state", file])) =~ @key)

    # A record appended by someone without the key: the right seq and prev,
    # the last record's key_id and mac copied.
    [_, second] = lines(dir)
    last = JSON.decode!(second)

    forged =
      ~s({"seq":3,"at":"2024-01-01T00:00:00Z","action":"deploy_done","prev":"#{sha256(second)}",) <>
        ~s("chain":"hmac-sha256","key_id":"#{last["key_id"]}","mac":"#{last["mac"]}"})

    File.write!(log_path(dir), forged <> "\n", [:append])
    before = File.read!(log_path(dir))
    report = ok!(dir, "verify-audit", %{}, config, env)
    assert report["ok"] == false
    assert report["broken_at"] == 3
    assert report["reason"] =~ "MAC does not verify"
    # verify-audit only reads, even from the shell with a state_dir.
    assert File.read!(log_path(dir)) == before

    # Without the key's variable the configuration is refused, naming it.
    {1, %{"error" => e}, _} = run(dir, "verify-audit", %{}, config, [])
    assert e["code"] == "bad_config"
    assert e["message"] =~ @key_env
  end

  test "configure says what opening the log found; a broken chain is moved aside and logged",
       %{tmp_dir: dir} do
    state = Path.join(dir, "state")
    config = %{"state_dir" => state}
    for n <- 1..3, do: ok!(dir, "ticket_upsert", issue(n), config)

    port = open_port([])
    {%{"ok" => ok}, []} = call(port, "configure", config)
    assert ok["audit"]["ok"] == true
    assert ok["audit"]["records"] == 3
    assert ok["audit"]["keyed"] == false
    Port.close(port)

    # An edit in the middle: the port does not append to that chain.
    [a, b, c] = lines(dir)
    edited = [a, String.replace(b, ~s("count":3), ~s("count":30)), c]
    File.write!(log_path(dir), Enum.map(edited, &[&1, "\n"]))
    tampered = File.read!(log_path(dir))

    port = open_port([])
    {%{"ok" => ok}, events} = call(port, "configure", config)
    assert %{"ok" => false, "broken_at" => 3, "moved_to" => moved} = ok["audit"]
    assert ok["audit"]["error"] =~ "broken at record 3"
    assert [%{"event" => "audit_broken", "moved_to" => ^moved}] = events
    assert File.read!(Path.join(state, moved)) == tampered

    [first] = lines(dir)
    record = JSON.decode!(first)
    assert record["action"] == "audit_chain_broken"
    assert record["previous_log"] == moved
    assert record["previous_sha256"] == sha256(tampered)

    {%{"ok" => report}, _} = call(port, "verify-audit", %{})
    assert report["ok"] == true
    assert [%{"action" => "audit_chain_broken", "seq" => 1}] = report["audit_events"]
    {%{"ok" => old}, _} = call(port, "verify-audit", %{"path" => Path.join(state, moved)})
    assert old["ok"] == false
    assert old["broken_at"] == 3
    Port.close(port)

    # Through SelfHeal.Port the break is logged as an error.
    File.write!(log_path(dir), String.replace(first, ~s("seq":1), ~s("seq":1,"x":1)) <> "\n")

    log =
      capture_log(fn ->
        srv = start_supervised!({SelfHeal.Port, config: config, backoff_min: 50})
        assert {:ok, %{"ok" => true}} = SelfHeal.Port.call(srv, "verify-audit", %{})
        Logger.flush()
      end)

    assert log =~ "[error]"
    assert log =~ "audit log"
    assert log =~ "broken at record 1"
  end

  test "the head goes out in ticket comments and notifications and is checked as a witness",
       %{tmp_dir: dir} do
    {:ok, github} =
      FakeHTTP.start(fn
        %{method: "GET"} ->
          FakeHTTP.json(200, [])

        %{method: "POST", path: "/repos/acme/shop/issues"} ->
          FakeHTTP.json(201, %{
            "number" => 7,
            "html_url" => "https://github.com/acme/shop/issues/7"
          })

        %{method: "POST", path: "/repos/acme/shop/issues/7/comments"} ->
          FakeHTTP.json(201, %{"id" => 1})
      end)

    {:ok, slack} = FakeHTTP.start(fn _ -> {200, [{"content-type", "text/plain"}], "ok"} end)

    config = %{
      "state_dir" => Path.join(dir, "state"),
      "tickets" => %{
        "backend" => "github",
        "github" => %{
          "api" => github.url,
          "repo" => "acme/shop",
          "token_env" => "SELF_HEAL_TEST_AUDIT_GH",
          "max_attempts" => 1
        }
      },
      "notify" => %{"channels" => ["slack"], "slack" => %{"webhook_url_env" => @slack_env}}
    }

    env = [
      {"SELF_HEAL_TEST_AUDIT_GH", "ghp_" <> String.duplicate("a", 36)},
      {@slack_env, "#{slack.url}/services/T0/B0/X"}
    ]

    ok!(dir, "ticket_upsert", issue(2), config, env)
    ok!(dir, "ticket_upsert", issue(3), config, env)
    [created] = lines(dir) |> Enum.take(1)

    # The comment was written when the log held the ticket_created record.
    comment =
      FakeHTTP.requests(github)
      |> Enum.find(&(&1.path == "/repos/acme/shop/issues/7/comments"))

    gh_line = "audit: seq 1 head #{sha256(created)}"
    assert JSON.decode!(comment.body)["body"] =~ gh_line

    notice = %{"kind" => "ticket", "ticket_id" => 1, "severity" => "high", "fingerprint" => @fp}
    %{"slack" => %{"ok" => true}} = ok!(dir, "notify", notice, config, env)
    [req] = FakeHTTP.requests(slack)
    [_, second] = lines(dir) |> Enum.take(2)
    slack_line = "audit: seq 2 head #{sha256(second)}"
    assert req.body =~ slack_line

    witnesses = %{"witnesses" => [gh_line, slack_line]}
    report = ok!(dir, "verify-audit", witnesses, config, env)
    assert report["ok"] == true
    assert report["witnesses"] == 2

    # An unkeyed log rewritten with its chain and anchor recomputed passes
    # on its own; the published heads do not.
    rewritten =
      lines(dir)
      |> Enum.map(&JSON.decode!/1)
      |> Enum.map_reduce(String.duplicate("0", 64), fn rec, prev ->
        rec = %{rec | "prev" => prev}
        rec = if rec["seq"] == 1, do: %{rec | "count" => 200}, else: rec
        line = record_line(rec)
        {line, sha256(line)}
      end)
      |> elem(0)

    File.write!(log_path(dir), Enum.map(rewritten, &[&1, "\n"]))
    last = List.last(rewritten)
    n = length(rewritten)

    File.write!(
      Path.join([dir, "state", "audit.anchor"]),
      FakeHTTP.encode(%{
        "seq" => n,
        "records" => n,
        "head" => sha256(last),
        "line" => last,
        "chain" => "sha256"
      })
    )

    report = ok!(dir, "verify-audit", %{}, config, env)
    assert report["ok"] == true
    assert report["warning"] =~ "unkeyed"

    report = ok!(dir, "verify-audit", witnesses, config, env)
    assert report["ok"] == false
    assert report["broken_at"] == 1
    assert report["reason"] =~ "head was published"
  end

  # A record's line as the port writes it: seq, at, action first, prev and
  # chain last.
  defp record_line(rec) do
    first = ["seq", "at", "action"]
    last = ["prev", "chain"]
    middle = rec |> Map.keys() |> Enum.reject(&(&1 in first or &1 in last)) |> Enum.sort()

    members =
      for k <- first ++ middle ++ last, Map.has_key?(rec, k) do
        [FakeHTTP.encode(k), ?:, FakeHTTP.encode(rec[k])]
      end

    IO.iodata_to_binary([?{, Enum.intersperse(members, ?,), ?}])
  end
end
