defmodule SelfHeal.AtRestTest do
  # Nothing SelfHeal stores holds a planted secret: an escalation through
  # the real port program (SQLite state, the audit log, the local ticket
  # store: every file under state_dir, read as bytes), and the groups the
  # collector keeps (SelfHeal.groups/0), with the built-in rules and a
  # configured pattern.
  use ExUnit.Case, async: false

  alias SelfHeal.{Collector, Event, Port}

  @moduletag :tmp_dir
  @moduletag capture_log: true
  @t0 1_790_000_000_000

  @aws_secret "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ4xEXAMPLE"
  @punct_password "&Xk9pL2q$Zt7"
  @gh_token "ghp_9aZ3kLmN0pQrStUvWxYz1234567890ABcdEF"
  @url_password "s3cr3t-Pa55w0rd"
  @jwt "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlX3NpZ25hdHVyZV94eXo"
  @acme "ACME-738201"

  @secrets [@aws_secret, @punct_password, @gh_token, @url_password, @jwt, @acme]

  defp message do
    "S3 upload failed: AWS secret #{@aws_secret} rejected; login password=#{@punct_password} " <>
      "ref #{@acme}"
  end

  defp stack do
    "** (RuntimeError) clone https://x:#{@gh_token}@github.com/acme/api.git failed\n" <>
      "    (my_app 0.1.0) lib/my_app/s3.ex:42: MyApp.S3.upload/2\n" <>
      "    (my_app 0.1.0) lib/my_app/db.ex:7: MyApp.DB.connect/1 postgres://app:#{@url_password}@db/x"
  end

  defp all_files(dir) do
    dir
    |> Path.join("**")
    |> Path.wildcard(match_dot: true)
    |> Enum.filter(&File.regular?/1)
  end

  defp leaked(files) do
    # (-shm and -wal files may go while the port ends)
    for f <- files,
        {:ok, bytes} <- [File.read(f)],
        s <- @secrets,
        String.contains?(bytes, s),
        do: {f, s}
  end

  test "an escalation leaves no planted secret in SQLite, the audit log or the tickets",
       %{tmp_dir: dir} do
    state = Path.join(dir, "state")

    config = %{
      "state_dir" => state,
      "tickets" => %{"backend" => "local"},
      "scrub" => %{"patterns" => ["ACME-[0-9]{6}"]}
    }

    port = start_supervised!({Port, [config: config, backoff_min: 50]})

    group = %{
      "id" => "fp-at-rest",
      "type" => "RuntimeError",
      "message" => message(),
      "normalized" => message(),
      "stacktrace" => stack(),
      "count" => 12,
      "first_seen" => @t0,
      "last_seen" => @t0 + 20_000,
      "service" => "api",
      "severity" => "high",
      "frames" => [],
      "metadata" => %{"authorization" => "Bearer #{@jwt}", "request_id" => "req-1"}
    }

    assert {:ok, result} = Port.call(port, "escalate", %{"groups" => [group]})
    assert [_ | _] = result["tickets"]
    stop_supervised!(Port)

    files = all_files(state)
    assert Enum.any?(files, &String.ends_with?(&1, "self_heal.db"))
    assert Enum.any?(files, &String.ends_with?(&1, "audit.jsonl"))
    # the error text is stored, scrubbed
    db = for f <- files, String.contains?(f, "self_heal.db"), {:ok, b} <- [File.read(f)], do: b
    assert Enum.any?(db, &String.contains?(&1, "[REDACTED:"))
    assert Enum.any?(db, &String.contains?(&1, "S3 upload failed"))
    assert leaked(files) == []
  end

  test "the collector's groups hold no planted secret; fingerprints are the raw ones" do
    name = :"at_rest_collector_#{System.unique_integer([:positive])}"
    start_supervised!({Collector, name: name, miner: false, scrub: ["ACME-[0-9]{6}"]})

    event =
      Event.new(
        type: "RuntimeError",
        message: message(),
        stacktrace: stack(),
        metadata: %{"authorization" => "Bearer #{@jwt}", "nested" => %{"x" => [message()]}}
      )

    Collector.push(name, [event])
    [group] = Collector.groups(name)
    kept = inspect(group, limit: :infinity, printable_limit: :infinity)
    for s <- @secrets, do: refute(String.contains?(kept, s), "#{s} kept in #{kept}")
    assert group.sample.message =~ "[REDACTED:secret]"
    assert group.sample.message =~ "[REDACTED:pattern]"
    assert group.normalized =~ "REDACTED"
    # grouping is that of the raw events
    [raw] = SelfHeal.Native.fingerprint_batch([event], SelfHeal.Native.config([]))
    assert group.fingerprint == raw
  end

  # Plain log lines (no stack trace) are what the template miner keeps:
  # written to a tailed file, they go through SelfHeal.Tail, the collector
  # and its miner, whose templates and snapshot must hold none of them.
  @line_secrets [
    "Zx9Qw3Er7Ty1Ui5Op2As",
    "AKIA2E0A8F3B244C9986",
    "9f8e7d6c5b4a39281706f5e4d3c2b1a0XyZ",
    "s3cr3t-Pa55w0rd",
    "ACME-738201"
  ]

  test "the miner's templates and its snapshot in state_dir hold no planted secret",
       %{tmp_dir: dir} do
    state = Path.join(dir, "state")
    File.mkdir_p!(state)
    log = Path.join(dir, "app.log")

    [token, aws, bearer, url_password, acme] = @line_secrets

    File.write!(log, [
      "2026-12-06 10:00:01 [error] login refused token=#{token} for client web\n",
      "2026-12-06 10:00:02 [error] S3 put failed with key #{aws} in eu-west-1\n",
      "2026-12-06 10:00:03 [error] upstream said 401 to Authorization: Bearer #{bearer}\n",
      "2026-12-06 10:00:04 [error] cannot reach postgres://app:#{url_password}@db:5432/shop\n",
      "2026-12-06 10:00:05 [error] tenant #{acme} over its quota\n"
    ])

    name = :"at_rest_miner_#{System.unique_integer([:positive])}"

    start_supervised!(
      {Collector, name: name, flush_ms: 5, state_dir: state, scrub: ["ACME-[0-9]{6}"]},
      id: name
    )

    start_supervised!(
      {SelfHeal.Tail, path: log, collector: name, poll_ms: 10, from: :beginning},
      id: :at_rest_tail
    )

    SelfHeal.TestSupport.eventually(fn -> Collector.stats(name).events == 5 end, 5_000)
    templates = name |> Collector.miner() |> SelfHeal.Native.miner_templates()
    assert length(templates) == 5
    reported = inspect({templates, Collector.groups(name)}, limit: :infinity)

    # the snapshot is written at shutdown
    stop_supervised!(:at_rest_tail)
    :ok = stop_supervised(name)
    snapshot = File.read!(Path.join(state, "miner.snapshot"))
    {:ok, restored} = SelfHeal.Native.miner_restore(snapshot)
    assert length(SelfHeal.Native.miner_templates(restored)) == 5

    for s <- @line_secrets do
      refute String.contains?(reported, s), "#{s} in the templates or groups"
      refute String.contains?(snapshot, s), "#{s} in miner.snapshot"
    end

    # the lines were mined scrubbed (the miner's own normalisation takes
    # the URL's authority away)
    assert Enum.count(templates, &(&1.template =~ "[REDACTED:")) == 4

    # a snapshot of scrubbed lines is taken back at the next start
    start_supervised!(
      {Collector, name: name, flush_ms: 5, state_dir: state, scrub: ["ACME-[0-9]{6}"]},
      id: name
    )

    assert length(SelfHeal.Native.miner_templates(Collector.miner(name))) == 5
  end

  test "a snapshot that holds raw lines (written before lines were scrubbed) is removed at start",
       %{tmp_dir: dir} do
    state = Path.join(dir, "state")
    File.mkdir_p!(state)
    [token, aws | _] = @line_secrets
    raw = SelfHeal.Native.miner_new([])

    SelfHeal.Native.miner_add(raw, [
      "login refused token=#{token} for client web",
      "S3 put failed with key #{aws} in eu-west-1",
      "disk full on /var/lib/db"
    ])

    path = Path.join(state, "miner.snapshot")
    File.write!(path, SelfHeal.Native.miner_snapshot(raw))
    assert File.read!(path) =~ token

    name = :"at_rest_old_#{System.unique_integer([:positive])}"

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        start_supervised!({Collector, name: name, state_dir: state}, id: name)
      end)

    assert log =~ "held unscrubbed text"
    refute File.exists?(path)
    templates = inspect(SelfHeal.Native.miner_templates(Collector.miner(name)))
    refute templates =~ token
    refute templates =~ aws
  end

  test "an Erlang stack trace keeps its frames and loses its arguments" do
    e = Event.new(message: "boom", stacktrace: [{M, :f, ["password=hunter2!X"], [line: 1]}])
    assert %Event{stacktrace: [{M, :f, 1, [line: 1]}]} = SelfHeal.Scrub.event(nil, e)
  end

  test "a bad configured pattern is refused; bad terms raise badarg" do
    assert {:error, reason} = SelfHeal.Scrub.new(["(a"])
    assert reason =~ "pattern 0"
    assert_raise ArgumentError, fn -> SelfHeal.Native.scrubber_new_nif(:x) end
    assert_raise ArgumentError, fn -> SelfHeal.Native.scrubber_new_nif(["a\0b"]) end
    assert_raise ArgumentError, fn -> SelfHeal.Native.scrub_nif(:x, "a") end
    assert_raise ArgumentError, fn -> SelfHeal.Native.scrub_nif(nil, ~c"a") end
    # long texts go to a dirty scheduler and come back scrubbed
    long = String.duplicate("x ", 5000) <> "password=&Xk9pL2q"
    assert SelfHeal.Scrub.text(nil, long) =~ "password=[REDACTED:secret]"
  end
end
