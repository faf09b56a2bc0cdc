defmodule SelfHeal.ConfigTest do
  # The configuration is checked when the application starts
  # (SelfHeal.Config): each mistake below stops the start with a message
  # naming it; a valid configuration starts.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias SelfHeal.Config

  @moduletag :tmp_dir
  @moduletag capture_log: true

  @env %{"SH_SLACK" => "https://hooks.example/x", "SH_TOKEN" => "t0ken-value-never-shown"}

  defp problems(config, env \\ @env) do
    case Config.validate(config, env) do
      :ok -> []
      {:error, problems} -> problems
    end
  end

  defp port(dir, config), do: [state_dir: dir, port: [config: config]]

  test "unknown keys name a near miss", %{tmp_dir: dir} do
    assert problems(settel: [settle_ms: 10]) == ["settel: unknown key (did you mean :settle?)"]

    assert problems(handler: [servce: "api"]) == [
             "handler.servce: unknown key (did you mean :service?)"
           ]

    assert problems(port(dir, %{"tickts" => %{"backend" => "local"}})) == [
             ~s{port.config.tickts: unknown key (did you mean "tickets"?)}
           ]

    assert problems(port(dir, %{"fix" => %{"agnet" => %{"preset" => "claude_code"}}})) == [
             ~s{port.config.fix.agnet: unknown key (did you mean "agent"?)}
           ]

    assert problems(endpoint: [prot: 4040]) == [
             "endpoint.prot: unknown key (did you mean :port?)"
           ]
  end

  test "values from a fixed set name a near miss", %{tmp_dir: dir} do
    assert [message] = problems(port(dir, %{llm: %{provider: "antropic"}}))
    assert message =~ ~s{port.config.llm.provider: "antropic" is not one of}
    assert message =~ ~s{(did you mean "anthropic"?)}

    assert [message] = problems(port(dir, %{"notify" => %{"channels" => ["slak"]}}))
    assert message =~ ~s{port.config.notify.channels[0]: "slak" is not one of}
    assert message =~ ~s{(did you mean "slack"?)}
  end

  test "types and ranges" do
    assert problems(settle: [settle_ms: "3000"]) == [
             "settle.settle_ms: expected an integer >= 1, got a string"
           ]

    assert problems(handler: [metadata: :request_id]) == [
             "handler.metadata: expected a list of atoms (e.g. [:request_id]), got :request_id"
           ]

    assert problems(ticket_min_severity: :lowest) == [
             "ticket_min_severity: :lowest is not one of :low, :medium, :high, :critical (did you mean :low?)"
           ]

    assert [watch] = problems(watches: [[id: "5xx", field: "status"]])
    assert watch =~ "watches[0]:"
  end

  test "environment variables are named, their values never shown", %{tmp_dir: dir} do
    config = %{
      "notify" => %{"channels" => ["slack"]},
      "tickets" => %{"backend" => "github", "github" => %{"repo" => "o/r"}},
      "audit" => %{"key_env" => "SH_TOKEN"}
    }

    assert problems(port(dir, config), %{"SH_TOKEN" => "t0ken-value-never-shown"}) |> Enum.sort() ==
             [
               "port.config.notify.slack.webhook_url_env: the environment variable SLACK_WEBHOOK_URL is not set",
               "port.config.tickets.github.token_env: the environment variable GITHUB_TOKEN is not set"
             ]

    config = put_in(config, ["notify", "slack"], %{"webhook_url_env" => "SH_SLACK"})
    config = put_in(config, ["tickets", "github", "token_env"], "SH_TOKEN")
    assert problems(port(dir, config)) == []

    # a secret pasted where a name belongs is not echoed
    [message] = problems(port(dir, %{"audit" => %{"key_env" => "t0ken value never shown"}}))
    refute message =~ "never shown"
  end

  test "the service registry: each entry's sections as the global ones", %{tmp_dir: dir} do
    shop = %{
      "aliases" => ["shop-web"],
      "owners" => ["team-shop"],
      "descriptor" => "the shop",
      "fix" => %{"repo" => "/srv/shop", "protected_paths" => ["priv/"]},
      "deploy" => %{"argv" => ["deploy.sh"]},
      "gate" => %{"consent" => "repair", "breaker_threshold" => 1},
      "notify" => %{"channels" => ["slack"], "slack" => %{"webhook_url_env" => "SH_SLACK"}},
      "recover" => %{"actions" => [%{"name" => "restart", "argv" => ["restart.sh"]}]},
      "tickets" => %{"backend" => "local"},
      "llm" => %{"budget" => %{"calls_per_hour" => 10, "spend_per_day_usd" => 2}}
    }

    assert problems(port(dir, %{"services" => %{"shop" => shop}})) == []

    # a service has its own model budget, not its own model
    assert problems(port(dir, %{"services" => %{"shop" => %{"llm" => %{"model" => "m"}}}})) == [
             "port.config.services.shop.llm.model: unknown key"
           ]

    assert problems(port(dir, %{services: %{shop: %{fix: %{repo: "/srv/shop"}}}})) == []

    assert problems(port(dir, %{"services" => %{"shop" => %{"deploi" => %{}}}})) == [
             ~s{port.config.services.shop.deploi: unknown key (did you mean "deploy"?)}
           ]

    assert problems(port(dir, %{"services" => %{"shop" => %{"gate" => %{"consent" => "yes"}}}})) ==
             [
               ~s{port.config.services.shop.gate.consent: "yes" is not one of "observe", "diagnose", "repair"}
             ]

    # a service's variables are checked like the global ones
    slack = %{"notify" => %{"slack" => %{"webhook_url_env" => "SH_UNSET"}}}

    assert problems(port(dir, %{"services" => %{"shop" => slack}})) == [
             "port.config.services.shop.notify.slack.webhook_url_env: the environment variable SH_UNSET is not set"
           ]

    assert [message] = problems(port(dir, %{"services" => ["shop"]}))
    assert message =~ "port.config.services: expected a map"

    assert [message] =
             problems(
               endpoint: [site_keys: %{"pk" => %{origins: ["https://a.example"], service: 7}}]
             )

    assert message =~ "site_keys"
  end

  test "the state directory must be writable; the port program needs one", %{tmp_dir: dir} do
    file = Path.join(dir, "a_file")
    File.write!(file, "")
    assert [message] = problems(state_dir: Path.join(file, "state"))
    assert message =~ "state_dir: #{file}/state is not a writable directory"

    assert [message] = problems(port: [config: %{"tickets" => %{"backend" => "local"}}])
    assert message =~ "needs a state_dir"

    assert problems(port(Path.join(dir, "new/state"), %{})) == []
    assert File.dir?(Path.join(dir, "new/state"))
  end

  describe "the application" do
    setup do
      saved = Application.get_all_env(:self_heal)

      on_exit(fn ->
        Application.stop(:self_heal)

        for {k, _} <- Application.get_all_env(:self_heal),
            do: Application.delete_env(:self_heal, k)

        for {k, v} <- saved, do: Application.put_env(:self_heal, k, v)
        {:ok, _} = Application.ensure_all_started(:self_heal)
      end)

      :ok = Application.stop(:self_heal)
    end

    test "refuses to start with a bad configuration, saying why" do
      Application.put_env(:self_heal, :settel, settle_ms: 10)
      Application.put_env(:self_heal, :settle, settle_ms: "3000")

      log =
        capture_log(fn ->
          assert {:error, {:self_heal, {{:bad_config, problems}, _}}} =
                   Application.ensure_all_started(:self_heal)

          assert length(problems) == 2
        end)

      assert log =~ "SelfHeal cannot start: its configuration has 2 problem(s)"
      assert log =~ "settel: unknown key (did you mean :settle?)"
      assert log =~ "settle.settle_ms: expected an integer >= 1, got a string"
      refute Process.whereis(SelfHeal.Supervisor)
    end

    test "refuses to start when the port program refuses its configuration", %{tmp_dir: dir} do
      # valid for the schema, refused by the port: a preset and an argv
      Application.put_env(:self_heal, :state_dir, dir)

      Application.put_env(:self_heal, :port,
        config: %{
          "fix" => %{
            "repo" => dir,
            "agent" => %{"preset" => "aider", "key_env" => "PATH", "argv" => ["true"]}
          }
        }
      )

      log =
        capture_log(fn ->
          assert {:error,
                  {:self_heal, {{:shutdown, {:failed_to_start_child, SelfHeal.Port, reason}}, _}}} =
                   Application.ensure_all_started(:self_heal)

          assert {:bad_config, message} = reason
          assert message =~ "give either argv or a preset"
        end)

      assert log =~ "the port refused its configuration"
    end

    test "a valid configuration starts, with ticket_min_severity for triage", %{tmp_dir: dir} do
      Application.put_env(:self_heal, :state_dir, dir)
      Application.put_env(:self_heal, :ticket_min_severity, :low)
      Application.put_env(:self_heal, :port, config: %{"tickets" => %{"backend" => "local"}})
      assert {:ok, _} = Application.ensure_all_started(:self_heal)
      assert Process.whereis(SelfHeal.Port)
      assert {:ok, %{"pong" => true}} = SelfHeal.Port.call(SelfHeal.Port, "ping")

      group = %{fingerprint: "fp-once", count: 1, type: "RuntimeError"}
      assert {:escalate, %{severity: :low}} = SelfHeal.Triage.decide(group)
    end
  end
end
