defmodule SelfHeal.ServicesTest do
  # The service registry end to end through the real port program: two
  # services, each with its own git repository, agent, deploy command and
  # health check; a fix and a rollback in one leave the other's deploys,
  # breaker and budget alone; the global breaker stops both; an unknown
  # service is ticketed and reported, never fixed.
  use ExUnit.Case, async: false

  import SelfHeal.FixLoopSupport

  alias SelfHeal.{FakeGitHub, FakeHTTP, Port}

  @moduletag :tmp_dir
  @moduletag capture_log: true

  @t0 1_790_000_000_000

  # one service's own world: dir/<name>/app (the repository), its agent,
  # its deploy.sh, deploys.log, health flag
  defp service(dir, name, gate) do
    home = Path.join(dir, name)
    File.mkdir_p!(home)
    repo = make_repo(home)
    own = deploy_config(home)

    %{
      "fix" => %{
        "repo" => repo,
        "agent" => %{
          "argv" => [agent(home, name, good_fix()), "{checkout}", "{prompt_file}"],
          "timeout_s" => 20
        }
      },
      "deploy" => own["deploy"],
      "gate" => gate,
      "aliases" => ["#{name}-web"],
      "owners" => ["team-#{name}"]
    }
  end

  # the global fix loop has no repository of its own: every fix is a
  # service's
  defp services_config(dir, shop_gate, billing_gate, global_gate \\ %{}) do
    %{
      "state_dir" => Path.join(dir, "state"),
      "tickets" => %{"backend" => "local"},
      "fix" => %{
        "compile" => %{"argv" => ["python3", "-m", "py_compile", "src/calc.py"]},
        "test" => %{"argv" => ["python3", "-m", "unittest", "-q"]}
      },
      "gate" => Map.merge(%{"consent" => "repair", "breaker_threshold" => 3}, global_gate),
      "services" => %{
        "shop" => service(dir, "shop", shop_gate),
        "billing" => service(dir, "billing", billing_gate)
      }
    }
  end

  defp fix_of(service, fp) do
    fix_args(fp, %{
      "wait" => true,
      "group" => Map.merge(fix_args(fp)["group"], %{"id" => fp, "service" => service})
    })
  end

  defp deploys(dir, name) do
    path = Path.join([dir, name, "deploys.log"])
    if File.exists?(path), do: File.read!(path), else: ""
  end

  defp head(dir, name),
    do: String.trim(git!(Path.join([dir, name, "app"]), ["rev-parse", "HEAD"]))

  defp gate(port) do
    {:ok, status} = Port.call(port, "gate_status", %{})
    status
  end

  test "configure reports each service's fix loop and refuses a broken one", %{tmp_dir: dir} do
    config = services_config(dir, %{}, %{})
    port = start_port(config)
    {:ok, reply} = Port.call(port, "configure", config)
    assert reply["fix"]["enabled"] == false
    assert reply["fix"]["services"]["shop"]["enabled"] == true
    assert reply["fix"]["services"]["billing"]["enabled"] == true

    broken = put_in(config, ["services", "billing", "fix", "agent", "argv"], "sh -c oops")

    assert {:error, %{code: "bad_config", message: message}} =
             Port.call(port, "configure", broken)

    assert message =~ "services.billing:"
  end

  test "a rollback in one service leaves the other's deploy, breaker and repository alone", %{
    tmp_dir: dir
  } do
    port = start_port(services_config(dir, %{"breaker_threshold" => 1}, %{}))

    # shop's fix deploys, its health check fails, it is rolled back
    File.rm!(Path.join([dir, "shop", "healthy"]))
    shop = fix!(port, fix_of("shop", "fpshop0001"))
    shop = wait_status(port, shop["id"], ["rolled_back", "failed", "deployed"], 40_000)
    assert shop["status"] == "rolled_back"
    assert deploys(dir, "shop") =~ shop["deploy_commit"]
    assert deploys(dir, "billing") == ""

    status = gate(port)
    assert status["services"]["shop"]["breaker"]["state"] == "open"
    assert status["services"]["billing"]["breaker"]["state"] == "closed"
    # the global breaker counted it, under its own threshold
    assert status["breaker"] == %{"state" => "closed", "failures" => 1}

    # billing's fix deploys by itself into billing's repository, verified
    billing = fix!(port, fix_of("billing", "fpbill0001"))
    billing = wait_status(port, billing["id"], ["deployed", "rolled_back", "failed"], 40_000)
    assert billing["status"] == "deployed"
    assert billing["decided_by"] == "gate"
    assert deploys(dir, "billing") =~ billing["deploy_commit"]
    refute deploys(dir, "shop") =~ billing["deploy_commit"]
    assert head(dir, "billing") == billing["deploy_commit"]
    # shop's main holds its own revert, not billing's fix
    assert git!(Path.join([dir, "shop", "app"]), ["log", "--format=%s", "-1"]) =~
             "revert fix #{shop["id"]}"

    # shop's next fix waits for a human: its breaker is open
    again = fix!(port, fix_of("shop", "fpshop0002"))
    again = wait_status(port, again["id"], ["awaiting_approval", "approved", "deployed"], 20_000)
    assert again["status"] == "awaiting_approval"
    assert Enum.any?(again["decision"]["reasons"], &(&1 =~ "breaker"))

    # a human closes shop's breaker alone
    {:ok, reset} = Port.call(port, "breaker_reset", %{"service" => "shop", "by" => "test"})
    assert reset["services"]["shop"]["breaker"]["state"] == "closed"
  end

  test "the global breaker stops every service", %{tmp_dir: dir} do
    port =
      start_port(
        services_config(dir, %{"breaker_threshold" => 5}, %{}, %{"breaker_threshold" => 1})
      )

    File.rm!(Path.join([dir, "shop", "healthy"]))
    shop = fix!(port, fix_of("shop", "fpshop0001"))

    assert wait_status(port, shop["id"], ["rolled_back", "failed"], 40_000)["status"] ==
             "rolled_back"

    status = gate(port)
    assert status["breaker"]["state"] == "open"
    assert status["services"]["shop"]["breaker"]["state"] == "closed"

    billing = fix!(port, fix_of("billing", "fpbill0001"))
    billing = wait_status(port, billing["id"], ["awaiting_approval", "deployed"], 20_000)
    assert billing["status"] == "awaiting_approval"
    assert deploys(dir, "billing") == ""
  end

  test "a service's deploy budget holds its own deploys, not the other's", %{tmp_dir: dir} do
    port = start_port(services_config(dir, %{"max_auto_deploys_per_hour" => 1}, %{}))

    first = fix!(port, fix_of("shop", "fpshop0001"))

    assert wait_status(port, first["id"], ["deployed", "rolled_back"], 40_000)["status"] ==
             "deployed"

    second = fix!(port, fix_of("shop", "fpshop0002"))
    second = wait_status(port, second["id"], ["awaiting_approval", "deployed"], 20_000)
    assert second["status"] == "awaiting_approval"
    assert Enum.any?(second["decision"]["reasons"], &(&1 =~ "max_auto_deploys_per_hour"))

    billing = fix!(port, fix_of("billing", "fpbill0001"))

    assert wait_status(port, billing["id"], ["deployed", "awaiting_approval"], 40_000)["status"] ==
             "deployed"

    assert gate(port)["services"]["shop"]["auto_deploys_last_hour"] == 1
  end

  # one escalation per {fingerprint, service}, each ticketed
  defp escalate_each(port, pairs) do
    for {fp, service} <- pairs do
      assert {:ok, %{"tickets" => [%{"created" => true}]}} =
               Port.call(port, "escalate", %{"groups" => [group(fp, service)]})
    end
  end

  defp group(id, service) do
    %{
      "id" => id,
      "type" => "ZeroDivisionError",
      "message" => "division by zero",
      "normalized" => "division by zero",
      "count" => 12,
      "first_seen" => @t0,
      "last_seen" => @t0 + 1_000,
      "service" => service,
      "severity" => "high",
      "frames" => []
    }
  end

  test "tickets go to each service's own backend; an unknown service's to the global one", %{
    tmp_dir: dir
  } do
    token_env = "SH_SERVICES_GH_TOKEN"
    shop_gh = FakeGitHub.start("acme/shop")
    billing_gh = FakeGitHub.start("acme/billing")

    github = fn srv, repo ->
      %{
        "backend" => "github",
        "github" => %{"api" => srv.url, "repo" => repo, "token_env" => token_env}
      }
    end

    config = %{
      "state_dir" => Path.join(dir, "state"),
      "tickets" => %{"backend" => "local"},
      "services" => %{
        "shop" => %{"tickets" => github.(shop_gh, "acme/shop")},
        "billing" => %{"tickets" => github.(billing_gh, "acme/billing")}
      }
    }

    port = start_port(config, env: [{token_env, "ghp_" <> String.duplicate("Tk9", 12)}])

    escalate_each(port, [
      {"fpshop0001", "shop"},
      {"fpbill0001", "billing"},
      {"fpghost001", "ghost"}
    ])

    assert [%{"title" => shop_title}] = FakeGitHub.issues(shop_gh)
    assert [%{"title" => billing_title}] = FakeGitHub.issues(billing_gh)
    assert shop_title =~ "ZeroDivisionError" and billing_title =~ "ZeroDivisionError"
    # the unknown service's ticket is the global backend's: local
    {:ok, %{"tickets" => local}} = Port.call(port, "tickets", %{})
    assert [%{"backend" => "local"}] = Enum.filter(local, &(&1["backend"] == "local"))

    # a held group's recurrence comments on its own service's issue
    assert {:ok, %{"commented" => true}} =
             Port.call(port, "update", %{
               "fingerprint" => "fpshop0001",
               "count" => 100,
               "service" => "shop"
             })

    assert [%{"comments" => [_ | _]}] = FakeGitHub.issues(shop_gh)
    assert [%{"comments" => []}] = FakeGitHub.issues(billing_gh)
  end

  test "a service's owners are in its notifications and its tickets' bodies", %{tmp_dir: dir} do
    token_env = "SH_SERVICES_GH_TOKEN"
    gh = FakeGitHub.start("acme/shop")
    {:ok, slack} = FakeHTTP.start(fn _ -> {200, [{"content-type", "text/plain"}], "ok"} end)

    config = %{
      "state_dir" => Path.join(dir, "state"),
      "tickets" => %{
        "backend" => "github",
        "github" => %{"api" => gh.url, "repo" => "acme/shop", "token_env" => token_env}
      },
      "notify" => %{
        "channels" => ["slack"],
        "slack" => %{"webhook_url_env" => "SH_SERVICES_SLACK_URL", "max_attempts" => 1}
      },
      "services" => %{
        "shop" => %{"owners" => ["@alice", "U024BE7LH", "carol <carol@example.com>"]},
        "billing" => %{}
      }
    }

    port =
      start_port(config,
        env: [
          {token_env, "ghp_" <> String.duplicate("Tk9", 12)},
          {"SH_SERVICES_SLACK_URL", "#{slack.url}/services/T000/B000/XXXX"}
        ]
      )

    escalate_each(port, [{"fpshop0001", "shop"}, {"fpbill0001", "billing"}])

    [shop_issue, billing_issue] =
      Enum.sort_by(FakeGitHub.issues(gh), &(&1["body"] =~ "fpbill0001"))

    assert shop_issue["body"] =~ "**Owners:** &#64;alice, U024BE7LH, carol &lt;"
    # scrubbed like the rest of the body
    refute shop_issue["body"] =~ "carol@example.com"
    refute billing_issue["body"] =~ "Owners"

    texts =
      wait_until(fn ->
        case FakeHTTP.requests(slack) do
          [_, _] = reqs -> Enum.map(reqs, & &1.body)
          _ -> nil
        end
      end)

    [shop_msg] = Enum.filter(texts, &(&1 =~ "fpshop0001"))
    assert shop_msg =~ "*Owners*\\n@alice, <@U024BE7LH>, carol &lt;"
    refute shop_msg =~ "carol@example.com"
    refute Enum.any?(texts -- [shop_msg], &(&1 =~ "Owners"))
  end

  test "notification rate limits: a service's own and the global one, across a restart", %{
    tmp_dir: dir
  } do
    {:ok, slack} = FakeHTTP.start(fn _ -> {200, [{"content-type", "text/plain"}], "ok"} end)

    slack_conf = fn rate ->
      %{"slack" => %{"webhook_url_env" => "SH_SERVICES_SLACK_URL", "rate_per_min" => rate}}
    end

    config = %{
      "state_dir" => Path.join(dir, "state"),
      "tickets" => %{"backend" => "local"},
      "notify" => Map.put(slack_conf.(3), "channels", ["slack"]),
      "services" => %{"shop" => %{"notify" => slack_conf.(1)}, "billing" => %{}}
    }

    port =
      start_port(config, env: [{"SH_SERVICES_SLACK_URL", "#{slack.url}/services/T0/B0/XXXX"}])

    # shop's second is over its own 1 a minute; billing's third over the
    # global 3 (shop's one counts there too)
    escalate_each(port, [
      {"fpshop0001", "shop"},
      {"fpshop0002", "shop"},
      {"fpbill0001", "billing"},
      {"fpbill0002", "billing"},
      {"fpbill0003", "billing"}
    ])

    sent =
      wait_until(fn ->
        case FakeHTTP.requests(slack) do
          [_, _, _] = reqs -> Enum.map(reqs, & &1.body)
          _ -> nil
        end
      end)

    Process.sleep(300)
    assert length(FakeHTTP.requests(slack)) == 3
    assert Enum.count(sent, &(&1 =~ "fpshop0001")) == 1
    assert Enum.count(sent, &(&1 =~ "fpbill0001")) == 1
    assert Enum.count(sent, &(&1 =~ "fpbill0002")) == 1
    audit = File.read!(Path.join([dir, "state", "audit.jsonl"]))
    assert audit |> String.split("rate_limited") |> length() == 3

    # the buckets are in the state database: a restart does not fill them
    stop_supervised!(Port)

    port =
      start_port(config, env: [{"SH_SERVICES_SLACK_URL", "#{slack.url}/services/T0/B0/XXXX"}])

    escalate_each(port, [{"fpshop0003", "shop"}, {"fpbill0004", "billing"}])

    wait_until(fn ->
      File.read!(Path.join([dir, "state", "audit.jsonl"]))
      |> String.split("rate_limited")
      |> length() == 5
    end)

    assert length(FakeHTTP.requests(slack)) == 3
  end

  test "an unknown service is ticketed and reported, never fixed", %{tmp_dir: dir} do
    port = start_port(services_config(dir, %{}, %{}))
    :ok = Port.subscribe(port)

    assert {:ok, result} =
             Port.call(port, "escalate", %{"groups" => [group("fpghost001", "ghost")]})

    assert [%{"created" => true}] = result["tickets"]

    assert_receive {:self_heal_port,
                    %{
                      "event" => "fix_skipped",
                      "service" => "ghost",
                      "reason" => "unknown_service"
                    }},
                   5_000

    {:ok, fixes} = Port.call(port, "fixes", %{})
    assert fixes["fixes"] == []

    audit = File.read!(Path.join([dir, "state", "audit.jsonl"]))
    assert audit =~ "fix_skipped"

    # the same error of a registered service is fixed
    assert {:ok, _} = Port.call(port, "escalate", %{"groups" => [group("fpshop0009", "shop")]})

    fixes =
      wait_until(fn ->
        case Port.call(port, "fixes", %{}) do
          {:ok, %{"fixes" => [_ | _] = fixes}} -> fixes
          _ -> nil
        end
      end)

    assert [%{"fingerprint" => "fpshop0009"}] = fixes
    refute_received {:self_heal_port, %{"event" => "fix_skipped", "service" => "shop"}}
  end
end
