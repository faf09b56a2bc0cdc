defmodule SelfHeal.TicketTest do
  # Tickets through `self_heal_port run ticket_upsert`: the local store and
  # GitHub Issues against a FakeHTTP server speaking GitHub's REST shapes;
  # then `verify-audit` on the log those runs wrote.
  use ExUnit.Case, async: true

  alias SelfHeal.FakeHTTP
  alias SelfHeal.JSON

  @moduletag :tmp_dir

  # A token in GitHub's format, so the scrubber recognises it in error text.
  @token "ghp_" <> String.duplicate("Zq7", 12)
  @token_env "SELF_HEAL_TEST_GH_TOKEN"
  @fp1 "0123456789abcdef0123456789abcdef"
  @fp2 "fedcba9876543210fedcba9876543210"
  @repo "acme/shop"

  # Runs one command (SelfHeal.PortShell); asserts the token never
  # appears in the port's output. Returns {exit status, reply, output}.
  defp run(dir, cmd, args, config) do
    {status, reply, output} =
      SelfHeal.PortShell.run(dir, cmd, args, config, [{@token_env, @token}])

    refute output =~ @token
    {status, reply, output}
  end

  defp ok!(dir, cmd, args, config) do
    {status, reply, err} = run(dir, cmd, args, config)
    assert status == 0, "#{cmd} failed: #{inspect(reply)} #{err}"
    reply["ok"]
  end

  defp local_config(dir), do: %{"state_dir" => Path.join(dir, "state")}

  defp gh_config(dir, srv, github \\ %{}) do
    %{
      "state_dir" => Path.join(dir, "state"),
      "tickets" => %{
        "backend" => "github",
        "github" =>
          Map.merge(
            %{
              "api" => srv.url,
              "repo" => @repo,
              "token_env" => @token_env,
              "backoff_base_ms" => 10,
              "max_attempts" => 4
            },
            github
          )
      }
    }
  end

  defp issue(fps, count) do
    %{
      "root_cause" => "Database pool exhausted; ping @oncall <!-- hidden -->",
      "severity" => "critical",
      "group_ids" => fps,
      "suggested_fix" => "Raise the pool size in config/runtime.exs",
      "files_likely_involved" => ["lib/shop/repo.ex"],
      "confidence" => 0.8,
      "groups" =>
        for fp <- fps do
          %{
            "id" => fp,
            "count" => count,
            "message" => "connect failed password=hunter2 auth #{@token}",
            "stacktrace" =>
              "lib/shop/repo.ex:10: Shop.Repo.get/2\nlib/shop/cart.ex:5: Shop.Cart.load/1",
            "service" => "shop",
            "first_seen" => 1_700_000_000_000,
            "last_seen" => 1_700_000_060_000
          }
        end
    }
  end

  # ------------------------------------------------------------ fake GitHub

  # A small GitHub: issues with labels, comments, label additions. `seed`
  # issues exist before the test starts.
  defp start_github(opts \\ []) do
    {:ok, store} =
      Agent.start_link(fn ->
        %{
          issues: Keyword.get(opts, :seed, []),
          next: 1,
          lose_reply: Keyword.get(opts, :lose_first_create_reply, false)
        }
      end)

    {:ok, srv} =
      FakeHTTP.start(fn req -> github(store, req) end, sequence: Keyword.get(opts, :sequence, []))

    on_exit(fn -> FakeHTTP.stop(srv) end)
    srv
  end

  defp github(store, %{method: "GET", path: "/repos/acme/shop/issues", query: query}) do
    %{"labels" => label, "state" => "open"} = URI.decode_query(query)

    found =
      Agent.get(store, & &1.issues)
      |> Enum.filter(&(label in &1["labels"] and &1["state"] == "open"))

    FakeHTTP.json(200, found)
  end

  defp github(store, %{method: "POST", path: "/repos/acme/shop/issues", body: body}) do
    %{"title" => title, "body" => text, "labels" => labels} = JSON.decode!(body)

    issue =
      Agent.get_and_update(store, fn s ->
        n = s.next + 100

        issue = %{
          "number" => n,
          "id" => 9000 + n,
          "html_url" => "https://github.com/acme/shop/issues/#{n}",
          "title" => title,
          "body" => text,
          "labels" => labels,
          "state" => "open"
        }

        {{issue, s.lose_reply},
         %{s | issues: [issue | s.issues], next: s.next + 1, lose_reply: false}}
      end)

    case issue do
      # Created, but the answer is cut short: the port cannot know.
      {_issue, true} -> {201, [{"content-type", "application/json"}], ~s({"number": )}
      {issue, false} -> FakeHTTP.json(201, issue)
    end
  end

  defp github(_store, %{method: "POST", path: "/repos/acme/shop/issues/" <> rest}) do
    case String.split(rest, "/") do
      [n, "comments"] ->
        FakeHTTP.json(201, %{
          "id" => 555,
          "html_url" => "https://github.com/acme/shop/issues/#{n}#issuecomment-555"
        })

      [_n, "labels"] ->
        FakeHTTP.json(200, [%{"name" => "self-heal"}])
    end
  end

  defp github(_store, _req), do: FakeHTTP.json(404, %{"message" => "Not Found"})

  defp creates(srv),
    do: Enum.filter(FakeHTTP.requests(srv), &(&1.method == "POST" and &1.path =~ ~r/issues$/))

  # ------------------------------------------------------------ GitHub

  test "creates an issue: paths, headers, body, labels; the token only in the header", %{
    tmp_dir: dir
  } do
    srv = start_github()
    ok = ok!(dir, "ticket_upsert", issue([@fp2, @fp1], 3), gh_config(dir, srv))

    assert ok["created"] == true
    assert ok["backend"] == "github"
    assert ok["external_id"] == "101"
    assert ok["url"] == "https://github.com/acme/shop/issues/101"
    assert ok["count"] == 6
    assert ok["fingerprints"] == [@fp1, @fp2]

    reqs = FakeHTTP.requests(srv)
    # One label search per fingerprint, then the create.
    assert Enum.map(reqs, &{&1.method, &1.path}) == [
             {"GET", "/repos/acme/shop/issues"},
             {"GET", "/repos/acme/shop/issues"},
             {"POST", "/repos/acme/shop/issues"}
           ]

    assert Enum.at(reqs, 0).query == "labels=self-heal%3A#{@fp1}&state=open&per_page=20"

    for r <- reqs do
      assert r.headers["authorization"] == "Bearer " <> @token
      assert r.headers["accept"] == "application/vnd.github+json"
      assert r.headers["x-github-api-version"] == "2022-11-28"
      assert r.headers["user-agent"] =~ "self-heal"
      refute r.body =~ @token
    end

    body = JSON.decode!(List.last(reqs).body)
    assert Map.keys(body) |> Enum.sort() == ["body", "labels", "title"]
    assert body["labels"] == ["self-heal", "self-heal:#{@fp1}", "self-heal:#{@fp2}"]
    assert body["title"] =~ "[self-heal] critical: Database pool exhausted"
    md = body["body"]
    assert md =~ "## Root cause"
    assert md =~ "**Severity:** critical"
    assert md =~ "**Confidence:** 0.80"
    assert md =~ "**Occurrences:** 6 across 2 fingerprint(s)"
    assert md =~ "**First seen:** 2023-11-14T22:13:20Z"
    assert md =~ "**Services:** shop"
    assert md =~ "Shop.Repo.get/2"
    assert md =~ "Raise the pool size"
    assert md =~ "lib/shop/repo.ex"
    # Untrusted prose cannot mention people or hide HTML; secrets are scrubbed.
    refute md =~ "@oncall"
    assert md =~ "&#64;oncall"
    refute md =~ "<!-- hidden"
    refute md =~ "hunter2"
    refute md =~ @token
  end

  test "a recurring fingerprint comments on its open issue instead of creating", %{
    tmp_dir: dir
  } do
    srv = start_github()
    config = gh_config(dir, srv)
    first = ok!(dir, "ticket_upsert", issue([@fp1], 3), config)
    again = ok!(dir, "ticket_upsert", issue([@fp1], 5), config)

    assert again["created"] == false
    assert again["commented"] == true
    assert again["ticket_id"] == first["ticket_id"]
    assert again["count"] == 8
    assert length(creates(srv)) == 1

    comment = List.last(FakeHTTP.requests(srv))
    assert comment.method == "POST"
    assert comment.path == "/repos/acme/shop/issues/101/comments"
    assert comment.headers["authorization"] == "Bearer " <> @token
    %{"body" => text} = JSON.decode!(comment.body)
    assert text =~ "**5** new occurrence(s), **8** in total"

    # A new fingerprint of the same cause joins the ticket and its labels.
    joined = ok!(dir, "ticket_upsert", issue([@fp1, @fp2], 1), config)
    assert joined["ticket_id"] == first["ticket_id"]
    assert joined["fingerprints"] |> Enum.sort() == [@fp1, @fp2]
    label_req = List.last(FakeHTTP.requests(srv))
    assert label_req.path == "/repos/acme/shop/issues/101/labels"
    assert JSON.decode!(label_req.body) == %{"labels" => ["self-heal", "self-heal:#{@fp2}"]}
    assert length(creates(srv)) == 1

    %{"tickets" => [t]} = ok!(dir, "tickets", %{}, config)
    assert t["count"] == 10
    assert t["external_id"] == "101"
  end

  test "a retried identical request creates one issue", %{tmp_dir: dir} do
    srv = start_github()
    config = gh_config(dir, srv)
    args = issue([@fp1], 3)
    first = ok!(dir, "ticket_upsert", args, config)
    second = ok!(dir, "ticket_upsert", args, config)
    assert second["replayed"] == true
    assert Map.delete(second, "replayed") == first
    assert length(creates(srv)) == 1
    # The replay is answered from the job: GitHub is not asked again.
    assert length(FakeHTTP.requests(srv)) == 2
  end

  test "an existing labelled issue is adopted and commented on", %{tmp_dir: dir} do
    seed = [
      %{
        "number" => 77,
        "html_url" => "https://github.com/acme/shop/issues/77",
        "body" => "filed by a person",
        "labels" => ["self-heal:#{@fp1}"],
        "state" => "open"
      },
      # A pull request with the label is never taken for the issue.
      %{
        "number" => 78,
        "html_url" => "https://github.com/acme/shop/pull/78",
        "pull_request" => %{},
        "labels" => ["self-heal:#{@fp1}"],
        "state" => "open"
      }
    ]

    srv = start_github(seed: Enum.reverse(seed))
    ok = ok!(dir, "ticket_upsert", issue([@fp1], 2), gh_config(dir, srv))
    assert ok["adopted"] == true
    assert ok["created"] == false
    assert ok["commented"] == true
    assert ok["external_id"] == "77"
    assert creates(srv) == []
    assert List.last(FakeHTTP.requests(srv)).path == "/repos/acme/shop/issues/77/comments"
  end

  test "a 500 on create is retried after checking GitHub for the issue", %{tmp_dir: dir} do
    srv =
      start_github(
        sequence: [
          FakeHTTP.json(200, []),
          FakeHTTP.json(500, %{"message" => "Server Error"})
        ]
      )

    ok = ok!(dir, "ticket_upsert", issue([@fp1], 3), gh_config(dir, srv))
    assert ok["created"] == true
    assert ok["external_id"] == "101"

    assert Enum.map(FakeHTTP.requests(srv), & &1.method) == ["GET", "POST", "GET", "POST"]
    assert length(ok!(dir, "tickets", %{}, gh_config(dir, srv))["tickets"]) == 1
  end

  test "a 429 with Retry-After: 1 is honoured", %{tmp_dir: dir} do
    srv =
      start_github(
        sequence: [
          FakeHTTP.json(200, []),
          FakeHTTP.json(429, %{"message" => "rate limited"}, [{"retry-after", "1"}])
        ]
      )

    t0 = System.monotonic_time(:millisecond)
    ok = ok!(dir, "ticket_upsert", issue([@fp1], 3), gh_config(dir, srv))
    elapsed = System.monotonic_time(:millisecond) - t0
    assert ok["created"] == true
    # backoff_base_ms is 10: only Retry-After explains a wait of a second.
    assert elapsed >= 950
    # Nothing was created by a 429, so no search before the second POST.
    assert Enum.map(FakeHTTP.requests(srv), & &1.method) == ["GET", "POST", "POST"]
  end

  test "malformed, truncated or incomplete replies give an error and no local ticket", %{
    tmp_dir: dir
  } do
    replies = [
      {201, [{"content-type", "application/json"}],
       ~s({"number": 7, "html_url": "https://github.com/acme/shop/issues/7")},
      {201, [{"content-type", "application/json"}], ~s({"number": 7})},
      {201, [{"content-type", "application/json"}],
       ~s({"number": "7", "html_url": "https://github.com/acme/shop/issues/7"})},
      {201, [{"content-type", "application/json"}], "<html>oops</html>"}
    ]

    for {reply, i} <- Enum.with_index(replies) do
      sub = Path.join(dir, "case#{i}")
      File.mkdir_p!(sub)
      srv = start_github(sequence: [FakeHTTP.json(200, []), reply])
      config = gh_config(sub, srv)
      {status, %{"error" => error}, _err} = run(sub, "ticket_upsert", issue([@fp1], 3), config)
      assert status == 1
      assert error["code"] == "bad_reply"
      assert error["message"] =~ "GitHub"
      assert ok!(sub, "tickets", %{}, config)["tickets"] == []
      %{"jobs" => [job]} = ok!(sub, "jobs", %{}, config)
      assert job["status"] == "failed"
    end

    # A body cut short by the connection closing is a transport error.
    srv =
      start_github(
        sequence: [
          FakeHTTP.json(200, []),
          {:raw, "HTTP/1.1 201 Created\r\ncontent-length: 200\r\n\r\n{\"number\": 7"}
        ]
      )

    config = gh_config(dir, srv, %{"max_attempts" => 1})
    {1, %{"error" => error}, _} = run(dir, "ticket_upsert", issue([@fp1], 3), config)
    assert error["code"] == "unavailable"
    assert ok!(dir, "tickets", %{}, config)["tickets"] == []
  end

  test "a create whose reply was lost is adopted on retry, never duplicated", %{tmp_dir: dir} do
    srv = start_github(lose_first_create_reply: true)
    config = gh_config(dir, srv)
    args = issue([@fp1], 3)
    {1, %{"error" => e}, _} = run(dir, "ticket_upsert", args, config)
    assert e["code"] == "bad_reply"
    assert ok!(dir, "tickets", %{}, config)["tickets"] == []

    ok = ok!(dir, "ticket_upsert", args, config)
    assert ok["adopted"] == true
    assert ok["external_id"] == "101"
    # Its own issue (the body carries the job's marker): no comment either.
    assert ok["commented"] == false
    assert length(creates(srv)) == 1
    refute Enum.any?(FakeHTTP.requests(srv), &(&1.path =~ "comments"))
    %{"jobs" => [job]} = ok!(dir, "jobs", %{}, config)
    assert job["status"] == "done"
    assert job["attempts"] == 2
  end

  test "a job that keeps failing is escalated", %{tmp_dir: dir} do
    {:ok, srv} = FakeHTTP.start(fn _ -> FakeHTTP.json(503, %{"message" => "down"}) end)
    on_exit(fn -> FakeHTTP.stop(srv) end)
    config = put_in(gh_config(dir, srv, %{"max_attempts" => 1}), ["tickets", "max_attempts"], 2)
    args = issue([@fp1], 3)
    {1, %{"error" => e1}, _} = run(dir, "ticket_upsert", args, config)
    {1, %{"error" => e2}, _} = run(dir, "ticket_upsert", args, config)
    {1, %{"error" => e3}, _} = run(dir, "ticket_upsert", args, config)
    assert e1["code"] == "github"
    assert e1["message"] =~ "503"
    assert e2["code"] == "github"
    assert e3["code"] == "escalated"
    %{"jobs" => [job]} = ok!(dir, "jobs", %{}, config)
    assert job["status"] == "escalated"
    assert length(FakeHTTP.requests(srv)) == 2
  end

  test "a missing token is a clear error naming the variable", %{tmp_dir: dir} do
    srv = start_github()
    config = gh_config(dir, srv, %{"token_env" => "SELF_HEAL_TEST_NO_SUCH_VAR"})
    {1, %{"error" => error}, _} = run(dir, "ticket_upsert", issue([@fp1], 1), config)
    assert error["code"] == "config"
    assert error["message"] =~ "SELF_HEAL_TEST_NO_SUCH_VAR"
    assert FakeHTTP.requests(srv) == []
  end

  # ------------------------------------------------------------ local

  test "the local store creates, finds by any fingerprint and updates", %{tmp_dir: dir} do
    config = local_config(dir)
    a = ok!(dir, "ticket_upsert", issue([@fp1], 2), config)
    assert a["created"] == true
    assert a["backend"] == "local"
    assert a["url"] == nil

    b = ok!(dir, "ticket_upsert", issue([@fp2, @fp1], 4), config)
    assert b["ticket_id"] == a["ticket_id"]
    assert b["commented"] == true
    assert b["count"] == 2 + 8

    %{"tickets" => [t]} = ok!(dir, "tickets", %{"status" => "open"}, config)
    assert Enum.sort(t["fingerprints"]) == [@fp1, @fp2]
    assert t["title"] =~ "critical: Database pool exhausted"
    refute t["title"] =~ @token

    {1, %{"error" => e}, _} =
      run(dir, "ticket_upsert", %{issue([@fp1], 1) | "severity" => "meh"}, config)

    assert e["code"] == "bad_args"

    {1, %{"error" => e}, _} =
      run(dir, "ticket_upsert", %{issue([@fp1], 1) | "group_ids" => ["bad id!"]}, config)

    assert e["code"] == "bad_args"

    {1, %{"error" => e}, _} = run(dir, "tickets", %{}, %{})
    assert e["code"] == "no_state"
  end

  # ------------------------------------------------------------ audit

  test "verify-audit: ok for the log the runs wrote, the broken line after an edit", %{
    tmp_dir: dir
  } do
    config = local_config(dir)
    ok!(dir, "ticket_upsert", issue([@fp1], 2), config)
    ok!(dir, "ticket_upsert", issue([@fp1], 3), config)
    ok!(dir, "ticket_upsert", issue([@fp2], 1), config)

    report = ok!(dir, "verify-audit", %{}, config)
    assert report["ok"] == true
    assert report["records"] == 3

    log = Path.join([dir, "state", "audit.jsonl"])
    lines = File.read!(log) |> String.split("\n", trim: true)

    assert Enum.map(lines, &JSON.decode!(&1)["action"]) == [
             "ticket_created",
             "ticket_commented",
             "ticket_created"
           ]

    File.write!(log, Enum.map(lines, &[String.replace(&1, ~s("count":2), ~s("count":20)), "\n"]))
    report = ok!(dir, "verify-audit", %{}, config)
    assert report["ok"] == false
    assert report["broken_at"] == 2
    assert report["reason"] =~ "line 1"

    # An explicit path, and an unreadable one.
    File.write!(log, Enum.map(tl(lines), &[&1, "\n"]))
    assert ok!(dir, "verify-audit", %{"path" => log}, %{})["broken_at"] == 1
    {1, %{"error" => e}, _} = run(dir, "verify-audit", %{"path" => log <> ".missing"}, %{})
    assert e["code"] == "unreadable"
  end
end
