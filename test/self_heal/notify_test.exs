defmodule SelfHeal.NotifyTest do
  # Notifications (port/analysis/notify.c) through the real port program: Slack and
  # Telegram are played by SelfHeal.FakeHTTP, email goes to a real SMTP
  # server (Debian's python3-aiosmtpd, test/support/smtp_sink.py), all on
  # 127.0.0.1.
  use ExUnit.Case, async: true

  alias SelfHeal.FakeHTTP

  @moduletag :tmp_dir

  @slack_secret "XXsecretWEBHOOKpart0123456789"
  @tg_token "123456789:AAE-testTokenSecret_value42"
  @link_secret "link-secret-for-tests-7f3a"
  @base_url "https://ops.example/self_heal"

  @message %{
    "kind" => "ticket",
    "ticket_id" => 12,
    "fingerprint" => "abc123",
    "severity" => "critical",
    "service" => "checkout",
    "error" => "Postgrex error password=hunter2 for alice@example.com <b>bold</b>",
    "path" => "lib/shop/db.ex:42",
    "count" => 31,
    "url" => "https://tickets.example/12",
    "action_id" => "fix-12"
  }

  defp port_path, do: Path.join(:code.priv_dir(:self_heal), "self_heal_port")

  defp env(slack) do
    [
      {"SH_TEST_SLACK_URL", "#{slack.url}/services/T000/B000/#{@slack_secret}"},
      {"SH_TEST_TG_TOKEN", @tg_token},
      {"SH_TEST_LINK_SECRET", @link_secret}
    ]
  end

  defp config(opts) do
    notify = %{
      "channels" => Keyword.get(opts, :channels, ["slack", "telegram", "email"]),
      "slack" =>
        Map.merge(
          %{"webhook_url_env" => "SH_TEST_SLACK_URL", "max_attempts" => 3, "backoff_ms" => 10},
          Keyword.get(opts, :slack, %{})
        ),
      "telegram" =>
        Map.merge(
          %{
            "api" => opts[:telegram_url] || "http://127.0.0.1:1",
            "token_env" => "SH_TEST_TG_TOKEN",
            "chat_id" => 42,
            "max_attempts" => 2,
            "backoff_ms" => 10
          },
          Keyword.get(opts, :telegram, %{})
        ),
      "email" =>
        Map.merge(
          %{
            "url" => "smtp://127.0.0.1:#{opts[:smtp_port] || 1}",
            "from" => "selfheal@example.com",
            "to" => ["oncall@example.com", "lead@example.com"],
            "max_attempts" => 2,
            "backoff_ms" => 10,
            "timeout_ms" => 5000
          },
          Keyword.get(opts, :email, %{})
        ),
      "links" => %{
        "base_url" => @base_url,
        "secret_env" => "SH_TEST_LINK_SECRET",
        "ttl_s" => 3600
      }
    }

    Map.merge(%{"notify" => notify}, Keyword.get(opts, :extra, %{}))
  end

  # ------------------------------------------------------------ running the port

  # One command in shell mode: {exit status, decoded reply, stdout <> stderr}.
  defp run(cmd, args, config, env, dir), do: SelfHeal.PortShell.run(dir, cmd, args, config, env)

  defp run_ok(cmd, args, config, env, dir) do
    {status, reply, output} = run(cmd, args, config, env, dir)
    assert status == 0, "#{cmd} failed: #{output}"
    {reply["ok"], output}
  end

  # The port program in server mode ({packet, 4}), for state kept in memory
  # between commands (rate limits, the Telegram offset).
  defp open_port(config, env) do
    port =
      Port.open({:spawn_executable, port_path()}, [
        :binary,
        {:packet, 4},
        :exit_status,
        env: Enum.map(env, fn {k, v} -> {String.to_charlist(k), String.to_charlist(v)} end)
      ])

    {:ok, _} = call(port, "configure", config)
    port
  end

  defp call(port, cmd, args, timeout \\ 15_000) do
    id = System.unique_integer([:positive])
    Port.command(port, FakeHTTP.encode(%{"id" => id, "cmd" => cmd, "args" => args}))
    await(port, id, timeout)
  end

  defp await(port, id, timeout) do
    receive do
      {^port, {:data, data}} ->
        case decode!(data) do
          %{"id" => ^id, "ok" => ok} ->
            {:ok, ok}

          %{"id" => ^id, "error" => e} ->
            {:error, e}

          %{"event" => _} = event ->
            send(self(), {:port_event, event})
            await(port, id, timeout)

          _ ->
            await(port, id, timeout)
        end
    after
      timeout -> flunk("no reply to request #{id}")
    end
  end

  # ------------------------------------------------------------ outside services

  defp slack_ok(_req), do: {200, [{"content-type", "text/plain"}], "ok"}

  defp python do
    if File.exists?("/usr/bin/python3"), do: "/usr/bin/python3", else: "python3"
  end

  # A real SMTP server; returns {port number, mail dir}.
  defp start_smtp(dir) do
    mail = Path.join(dir, "mail-#{System.unique_integer([:positive])}")
    script = Path.expand("../support/smtp_sink.py", __DIR__)

    port =
      Port.open({:spawn_executable, System.find_executable(python())}, [
        :binary,
        {:line, 1000},
        args: [script, mail]
      ])

    {wait_port(port), mail}
  end

  defp wait_port(port) do
    receive do
      {^port, {:data, {:eol, "PORT " <> n}}} -> String.to_integer(n)
      {^port, {:data, _other}} -> wait_port(port)
    after
      15_000 -> flunk("the SMTP server did not start")
    end
  end

  defp closed_port do
    {:ok, l} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, p} = :inet.port(l)
    :gen_tcp.close(l)
    p
  end

  # {envelope lines, headers map (lower-case names, unfolded), body}
  defp read_mail(mail_dir, k) do
    eml = File.read!(Path.join(mail_dir, "#{k}.eml"))
    envelope = mail_dir |> Path.join("#{k}.env") |> File.read!() |> String.split("\n", trim: true)
    [head, body] = String.split(eml, "\r\n\r\n", parts: 2)

    headers =
      head
      |> String.replace("\r\n ", " ")
      |> String.split("\r\n")
      |> Map.new(fn line ->
        [k, v] = String.split(line, ": ", parts: 2)
        {String.downcase(k), v}
      end)

    {envelope, headers, body}
  end

  defp token_of(url) do
    [_, token] = String.split(url, "?t=", parts: 2)
    token
  end

  defp field(blocks, label) do
    section = Enum.find(blocks, &(&1["type"] == "section"))
    prefix = "*#{label}*\n"

    Enum.find_value(section["fields"], fn %{"text" => t} ->
      if String.starts_with?(t, prefix), do: String.replace_prefix(t, prefix, "")
    end)
  end

  # ------------------------------------------------------------ tests

  test "Slack, Telegram and email in one call: request shapes, signed buttons, scrubbed text",
       %{tmp_dir: dir} do
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    {:ok, tg} = FakeHTTP.start(&FakeHTTP.telegram_ok/1)
    {smtp_port, mail} = start_smtp(dir)
    cfg = config(telegram_url: tg.url, smtp_port: smtp_port)

    {result, output} = run_ok("notify", @message, cfg, env(slack), dir)

    assert result["slack"] == %{"ok" => true, "attempts" => 1}
    assert result["telegram"] == %{"ok" => true, "attempts" => 1}
    assert result["email"] == %{"ok" => true, "attempts" => 1}

    # Slack: the webhook path, JSON with blocks, signed Approve / Skip links
    [req] = FakeHTTP.requests(slack)
    assert req.method == "POST"
    assert req.path == "/services/T000/B000/#{@slack_secret}"
    assert req.headers["content-type"] =~ "application/json"
    body = decode!(req.body)
    assert body["text"] =~ "checkout"
    blocks = body["blocks"]
    header = Enum.find(blocks, &(&1["type"] == "header"))
    assert header["text"]["type"] == "plain_text"
    assert header["text"]["text"] =~ "[CRITICAL]"
    assert field(blocks, "Service") == "checkout"
    assert field(blocks, "Path") == "lib/shop/db.ex:42"
    assert field(blocks, "Count") == "31"
    assert field(blocks, "Ticket") == "<https://tickets.example/12|#12>"
    error = field(blocks, "Error")
    assert error =~ "Postgrex error"
    assert error =~ "&lt;b&gt;bold&lt;/b&gt;"
    refute error =~ "hunter2"
    refute req.body =~ "hunter2"
    refute req.body =~ "alice@example.com"

    %{"elements" => [approve, skip]} = Enum.find(blocks, &(&1["type"] == "actions"))
    assert approve["text"]["text"] == "Approve"
    assert skip["text"]["text"] == "Skip"
    assert String.starts_with?(approve["url"], @base_url <> "/approve?t=approve.fix-12.")
    assert String.starts_with?(skip["url"], @base_url <> "/skip?t=skip.fix-12.")

    {verified, _} =
      run_ok("link_verify", %{"token" => token_of(approve["url"])}, cfg, env(slack), dir)

    assert verified == %{"valid" => true, "action" => "approve", "action_id" => "fix-12"}

    {verified, _} =
      run_ok("link_verify", %{"token" => token_of(skip["url"])}, cfg, env(slack), dir)

    assert verified["action"] == "skip"

    # Telegram: sendMessage with inline buttons
    [treq] = FakeHTTP.requests(tg)
    assert treq.method == "POST"
    assert treq.path == "/bot#{@tg_token}/sendMessage"
    tbody = decode!(treq.body)
    assert tbody["chat_id"] == "42"
    assert tbody["text"] =~ "Service: checkout"
    assert tbody["text"] =~ "<b>bold</b>"
    refute Map.has_key?(tbody, "parse_mode")
    refute treq.body =~ "hunter2"

    assert tbody["reply_markup"] == %{
             "inline_keyboard" => [
               [
                 %{"text" => "Approve", "callback_data" => "a:fix-12"},
                 %{"text" => "Skip", "callback_data" => "s:fix-12"}
               ]
             ]
           }

    # Email: the envelope, the headers, the scrubbed body with the links
    {envelope, headers, text} = read_mail(mail, 1)
    assert envelope == ["selfheal@example.com", "oncall@example.com", "lead@example.com"]
    assert headers["from"] == "<selfheal@example.com>"
    assert headers["to"] == "<oncall@example.com>, <lead@example.com>"
    assert headers["subject"] =~ "[SelfHeal] critical checkout: Postgrex error"
    assert headers["mime-version"] == "1.0"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["date"] =~ ~r/^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000$/
    assert headers["message-id"] =~ ~r/^<\d+\.[0-9a-f]{16}@example\.com>$/
    assert text =~ "Service: checkout\r\n"
    assert text =~ "Approve: #{approve["url"]}\r\n"
    assert text =~ "Skip: #{skip["url"]}\r\n"
    refute text =~ "hunter2"
    refute text =~ "alice@example.com"
    refute headers["subject"] =~ "hunter2"

    # no secret in what the program printed
    refute output =~ @slack_secret
    refute output =~ @tg_token
    refute output =~ @link_secret
  end

  test "Slack's 429 with Retry-After is waited out, then the message goes through",
       %{tmp_dir: dir} do
    {:ok, slack} =
      FakeHTTP.start(&slack_ok/1,
        sequence: [{429, [{"retry-after", "1"}, {"content-type", "text/plain"}], "rate_limited"}]
      )

    t0 = System.monotonic_time(:millisecond)
    {result, _} = run_ok("notify", @message, config(channels: ["slack"]), env(slack), dir)
    elapsed = System.monotonic_time(:millisecond) - t0

    assert result == %{"slack" => %{"ok" => true, "attempts" => 2}}
    assert elapsed >= 900
    [first, second] = FakeHTTP.requests(slack)
    assert first.body == second.body
  end

  test "Slack answering 500 fails Slack only: Telegram and email still deliver",
       %{tmp_dir: dir} do
    {:ok, slack} = FakeHTTP.start(fn _ -> {500, [], "internal_error"} end)
    {:ok, tg} = FakeHTTP.start(&FakeHTTP.telegram_ok/1)
    {smtp_port, mail} = start_smtp(dir)

    {result, output} =
      run_ok(
        "notify",
        @message,
        config(telegram_url: tg.url, smtp_port: smtp_port, slack: %{"max_attempts" => 2}),
        env(slack),
        dir
      )

    assert %{"ok" => false, "attempts" => 2, "error" => error} = result["slack"]
    assert error =~ "HTTP 500"
    assert length(FakeHTTP.requests(slack)) == 2
    assert result["telegram"]["ok"] == true
    assert result["email"]["ok"] == true
    assert File.exists?(Path.join(mail, "1.eml"))
    refute output =~ @slack_secret
  end

  test "Slack's other 4xx answers are errors without retries", %{tmp_dir: dir} do
    {:ok, slack} =
      FakeHTTP.start(fn _ -> {404, [{"content-type", "text/plain"}], "no_service"} end)

    {result, _} = run_ok("notify", @message, config(channels: ["slack"]), env(slack), dir)
    assert result["slack"] == %{"ok" => false, "attempts" => 1, "error" => "HTTP 404: no_service"}
    assert length(FakeHTTP.requests(slack)) == 1
  end

  test "channels run side by side, each with its own timeout", %{tmp_dir: dir} do
    {:ok, slack} = FakeHTTP.start(fn req -> {:delay, 6000, slack_ok(req)} end)
    {:ok, tg} = FakeHTTP.start(fn req -> {:delay, 1500, FakeHTTP.telegram_ok(req)} end)

    cfg =
      config(
        channels: ["slack", "telegram"],
        telegram_url: tg.url,
        slack: %{"timeout_ms" => 1500, "max_attempts" => 1},
        telegram: %{"timeout_ms" => 5000}
      )

    t0 = System.monotonic_time(:millisecond)
    {result, output} = run_ok("notify", @message, cfg, env(slack), dir)
    elapsed = System.monotonic_time(:millisecond) - t0

    assert %{"ok" => false, "error" => error} = result["slack"]
    assert error =~ "request failed"
    refute output =~ @slack_secret
    assert result["telegram"]["ok"] == true
    # in parallel: about max(1500, 1500) ms plus the port's start, not 1500 + 1500
    assert elapsed < 2800
  end

  test "the SMTP server down: email fails, Slack still succeeds", %{tmp_dir: dir} do
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    cfg = config(channels: ["email", "slack"], smtp_port: closed_port())
    {result, _} = run_ok("notify", @message, cfg, env(slack), dir)

    assert %{"ok" => false, "attempts" => 2, "error" => error} = result["email"]
    assert error =~ "connect"
    assert result["slack"] == %{"ok" => true, "attempts" => 1}
  end

  test "STARTTLS required by config but not offered: the mail is not sent in clear",
       %{tmp_dir: dir} do
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    {smtp_port, mail} = start_smtp(dir)

    cfg = config(channels: ["email"], smtp_port: smtp_port, email: %{"starttls" => "required"})

    {result, _} = run_ok("notify", @message, cfg, env(slack), dir)
    assert %{"ok" => false, "error" => _} = result["email"]
    refute File.exists?(Path.join(mail, "1.eml"))
  end

  test "malformed, truncated and error replies from Telegram are errors for Telegram",
       %{tmp_dir: dir} do
    answers = [
      {{200, [{"content-type", "application/json"}], "{\"ok\": tru"}, "malformed"},
      {FakeHTTP.json(200, %{ok: true}), "malformed"},
      {FakeHTTP.json(200, %{ok: true, result: "sent"}), "malformed"},
      {FakeHTTP.json(200, %{ok: false, description: "no"}), "malformed"},
      {FakeHTTP.json(400, %{
         ok: false,
         error_code: 400,
         description: "Bad Request: chat not found"
       }), "HTTP 400: Bad Request: chat not found"},
      {{:raw, "HTTP/1.1 200 OK\r\ncontent-length: 200\r\n\r\n{\"ok\": true, \"res"}, ""}
    ]

    {:ok, slack} = FakeHTTP.start(&slack_ok/1)

    for {answer, expected} <- answers do
      {:ok, tg} = FakeHTTP.start(fn _ -> answer end)
      cfg = config(channels: ["telegram", "slack"], telegram_url: tg.url)
      {result, output} = run_ok("notify", @message, cfg, env(slack), dir)
      assert %{"ok" => false, "error" => error} = result["telegram"]
      assert error =~ expected
      assert result["slack"]["ok"] == true
      refute output =~ @tg_token
      FakeHTTP.stop(tg)
    end
  end

  test "telegram_poll: a button press becomes an approval, is answered, and the offset advances",
       %{tmp_dir: dir} do
    _ = dir

    handler = fn req ->
      if String.ends_with?(req.path, "/getUpdates") do
        offset = decode!(req.body)["offset"]

        updates =
          if offset < 78 do
            [
              %{update_id: 76, message: %{message_id: 1, text: "hello"}},
              %{
                update_id: 77,
                callback_query: %{
                  id: "cq-77",
                  from: %{id: 5, is_bot: false, username: "alice"},
                  message: %{message_id: 7, chat: %{id: 42, type: "group"}},
                  data: "a:fix-12"
                }
              }
            ]
          else
            []
          end

        FakeHTTP.json(200, %{ok: true, result: updates})
      else
        FakeHTTP.telegram_ok(req)
      end
    end

    {:ok, tg} = FakeHTTP.start(handler)
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    port = open_port(config(telegram_url: tg.url), env(slack))

    {:ok, first} = call(port, "telegram_poll", %{"timeout_s" => 0})

    assert first["approvals"] == [
             %{"action" => "approve", "action_id" => "fix-12", "from" => "@alice"}
           ]

    assert first["offset"] == 78
    assert_received {:port_event, %{"event" => "approval", "action_id" => "fix-12"} = event}
    assert event["action"] == "approve"
    assert event["channel"] == "telegram"

    [poll1, answer] = FakeHTTP.requests(tg)
    assert poll1.path == "/bot#{@tg_token}/getUpdates"
    poll_body = decode!(poll1.body)
    assert poll_body["timeout"] == 0
    assert poll_body["allowed_updates"] == ["callback_query"]
    assert answer.path == "/bot#{@tg_token}/answerCallbackQuery"
    assert decode!(answer.body) == %{"callback_query_id" => "cq-77", "text" => "Approved"}

    {:ok, second} = call(port, "telegram_poll", %{"timeout_s" => 0})
    assert second["approvals"] == []
    poll2 = List.last(FakeHTTP.requests(tg))
    assert decode!(poll2.body)["offset"] == 78
    Port.close(port)
  end

  test "the Telegram offset survives a restart; sends and approvals are audited",
       %{tmp_dir: dir} do
    handler = fn req ->
      if String.ends_with?(req.path, "/getUpdates") do
        updates =
          if decode!(req.body)["offset"] < 78 do
            [
              %{
                update_id: 77,
                callback_query: %{
                  id: "cq-77",
                  from: %{id: 5, username: "alice"},
                  message: %{message_id: 7, chat: %{id: 42}},
                  data: "s:fix-12"
                }
              }
            ]
          else
            []
          end

        FakeHTTP.json(200, %{ok: true, result: updates})
      else
        FakeHTTP.telegram_ok(req)
      end
    end

    {:ok, tg} = FakeHTTP.start(handler)
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    state_dir = Path.join(dir, "state")

    cfg =
      config(
        channels: ["slack"],
        telegram_url: tg.url,
        extra: %{"state_dir" => state_dir}
      )

    {first, _} = run_ok("telegram_poll", %{"timeout_s" => 0}, cfg, env(slack), dir)
    assert [%{"action" => "skip", "action_id" => "fix-12"}] = first["approvals"]

    # a new process reads the stored offset
    {second, _} = run_ok("telegram_poll", %{"timeout_s" => 0}, cfg, env(slack), dir)
    assert second["approvals"] == []

    offsets =
      for r <- FakeHTTP.requests(tg),
          String.ends_with?(r.path, "/getUpdates"),
          do: decode!(r.body)["offset"]

    assert offsets == [0, 78]

    {result, _} = run_ok("notify", @message, cfg, env(slack), dir)
    assert result["slack"]["ok"] == true

    audit = File.read!(Path.join(state_dir, "audit.jsonl"))
    records = audit |> String.split("\n", trim: true) |> Enum.map(&decode!/1)

    assert Enum.any?(
             records,
             &(&1["action"] == "approval_received" and &1["action_id"] == "fix-12" and
                 &1["decision"] == "skip" and &1["from"] == "@alice")
           )

    assert Enum.any?(
             records,
             &(&1["action"] == "notification_sent" and &1["channel"] == "slack" and
                 &1["ticket_id"] == "12")
           )

    refute audit =~ @slack_secret
    refute audit =~ @tg_token
    refute audit =~ "?t="
  end

  test "telegram_poll: a press from another chat is answered but not approved", %{tmp_dir: _} do
    handler = fn req ->
      if String.ends_with?(req.path, "/getUpdates") do
        FakeHTTP.json(200, %{
          ok: true,
          result: [
            %{
              update_id: 10,
              callback_query: %{
                id: "cq-10",
                from: %{id: 6, username: "mallory"},
                message: %{message_id: 3, chat: %{id: 999}},
                data: "a:fix-12"
              }
            }
          ]
        })
      else
        FakeHTTP.telegram_ok(req)
      end
    end

    {:ok, tg} = FakeHTTP.start(handler)
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    port = open_port(config(telegram_url: tg.url), env(slack))
    {:ok, res} = call(port, "telegram_poll", %{"timeout_s" => 0})
    assert res["approvals"] == []
    assert res["offset"] == 11
    refute_received {:port_event, %{"event" => "approval"}}
    answer = Enum.find(FakeHTTP.requests(tg), &String.ends_with?(&1.path, "/answerCallbackQuery"))
    assert decode!(answer.body)["text"] == "Not accepted"
    Port.close(port)
  end

  test "telegram_poll errors: malformed getUpdates reply, bad timeout", %{tmp_dir: dir} do
    {:ok, tg} = FakeHTTP.start(fn _ -> FakeHTTP.json(200, %{ok: true, result: %{}}) end)
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    cfg = config(telegram_url: tg.url)

    {1, reply, output} = run("telegram_poll", %{"timeout_s" => 0}, cfg, env(slack), dir)
    assert reply["error"]["message"] =~ "malformed"
    refute output =~ @tg_token

    {1, reply, _} = run("telegram_poll", %{"timeout_s" => 500}, cfg, env(slack), dir)
    assert reply["error"]["code"] == "bad_args"
  end

  test "link_verify: valid, expired and tampered tokens", %{tmp_dir: dir} do
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    cfg = config([])
    e = env(slack)

    {signed, _} =
      run_ok(
        "link_sign",
        %{"action" => "approve", "action_id" => "job_9", "ttl_s" => 60},
        cfg,
        e,
        dir
      )

    token = signed["token"]
    assert signed["url"] == @base_url <> "/approve?t=" <> token
    assert {:ok, %{"valid" => true, "action_id" => "job_9"}} = verify(token, cfg, e, dir)

    later = [{"SELF_HEAL_NOW", Integer.to_string(signed["expires"] + 1)} | e]
    assert {:error, %{"code" => "expired"}} = verify(token, cfg, later, dir)

    [action, id, expires, mac] = String.split(token, ".")
    flipped = if String.last(mac) == "0", do: "1", else: "0"

    tampered = [
      Enum.join(["skip", id, expires, mac], "."),
      Enum.join([action, "job_8", expires, mac], "."),
      Enum.join([action, id, Integer.to_string(String.to_integer(expires) + 3600), mac], "."),
      Enum.join([action, id, expires, String.slice(mac, 0..-2//1) <> flipped], "."),
      "garbage",
      ""
    ]

    for t <- tampered do
      assert {:error, %{"code" => "bad_signature"}} = verify(t, cfg, e, dir)
      # tampered and past the expiry: still a bad signature, never "expired"
      assert {:error, %{"code" => "bad_signature"}} = verify(t, cfg, later, dir)
    end

    other_secret = List.keyreplace(e, "SH_TEST_LINK_SECRET", 0, {"SH_TEST_LINK_SECRET", "other"})
    assert {:error, %{"code" => "bad_signature"}} = verify(token, cfg, other_secret, dir)

    {1, reply, _} = run("link_sign", %{"action" => "merge", "action_id" => "x"}, cfg, e, dir)
    assert reply["error"]["code"] == "bad_args"
    {1, reply, _} = run("link_sign", %{"action" => "skip", "action_id" => "a.b"}, cfg, e, dir)
    assert reply["error"]["code"] == "bad_args"
  end

  defp verify(token, cfg, env, dir) do
    case run("link_verify", %{"token" => token}, cfg, env, dir) do
      {0, %{"ok" => ok}, _} -> {:ok, ok}
      {1, %{"error" => err}, _} -> {:error, err}
    end
  end

  test "each channel has its own rate limit", %{tmp_dir: _} do
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    {:ok, tg} = FakeHTTP.start(&FakeHTTP.telegram_ok/1)

    cfg =
      config(
        channels: ["slack", "telegram"],
        telegram_url: tg.url,
        slack: %{"rate_per_min" => 2},
        telegram: %{"rate_per_min" => 60}
      )

    port = open_port(cfg, env(slack))
    results = for _ <- 1..3, do: elem(call(port, "notify", @message), 1)
    Port.close(port)

    assert Enum.map(results, & &1["slack"]["ok"]) == [true, true, false]
    assert List.last(results)["slack"]["error"] == "rate_limited"
    assert Enum.map(results, & &1["telegram"]["ok"]) == [true, true, true]
    assert length(FakeHTTP.requests(slack)) == 2
    assert length(FakeHTTP.requests(tg)) == 3
  end

  test "missing secrets and bad messages give clear errors", %{tmp_dir: dir} do
    {:ok, slack} = FakeHTTP.start(&slack_ok/1)
    cfg = config(channels: ["slack", "telegram", "pager"])
    only_links = [{"SH_TEST_LINK_SECRET", @link_secret}]

    {result, _} = run_ok("notify", @message, cfg, only_links, dir)

    assert result["slack"] == %{
             "ok" => false,
             "error" => "environment variable SH_TEST_SLACK_URL is not set"
           }

    assert result["telegram"]["error"] =~ "SH_TEST_TG_TOKEN"
    assert result["pager"] == %{"ok" => false, "error" => "unknown channel"}
    assert FakeHTTP.requests(slack) == []

    {1, reply, _} =
      run("notify", Map.put(@message, "action_id", "no spaces"), cfg, env(slack), dir)

    assert reply["error"]["code"] == "bad_args"
    {1, reply, _} = run("notify", Map.put(@message, "error", %{"a" => 1}), cfg, env(slack), dir)
    assert reply["error"]["code"] == "bad_args"
  end

  defp decode!(text), do: SelfHeal.JSON.decode!(text)
end
