defmodule SelfHeal.DashboardTest do
  # The operators' dashboard and /metrics of SelfHeal.Endpoint over a real
  # run: a real collector, settle stage and triage receiving events, the
  # real port program running a fix through the fix loop (a real git
  # repository, a scripted agent, validation in the sandbox), headless
  # Chromium logging in and rendering every page (screenshots in
  # _build/test/screenshots/), an approval from the fix's page that
  # deploys; authentication and CSRF; the signed-link page showing the
  # change; /metrics checked by promtool and scraped by a real Prometheus
  # server; :telemetry events through a stand-in :telemetry module.
  use ExUnit.Case, async: false

  import SelfHeal.FixLoopSupport

  alias SelfHeal.{CDP, Collector, Event, Orchestrator.Sink, Settle, Triage}

  @moduletag :tmp_dir
  @moduletag capture_log: true
  @moduletag timeout: 180_000
  @token "op-token-" <> String.duplicate("d4", 12)
  @ingest "ingest-token-1234567890"
  @env "SH_DASH_OPERATOR_TOKEN"
  @link_env "SH_DASH_LINK_SECRET"
  @screens Path.expand("../../_build/test/screenshots", __DIR__)
  @secret_in_sample "password=hunter2hunter2"

  setup %{tmp_dir: dir} do
    System.put_env(@env, @token)
    System.put_env(@link_env, "dash-link-secret-0123456789")

    on_exit(fn ->
      System.delete_env(@env)
      System.delete_env(@link_env)
    end)

    id = System.unique_integer([:positive])

    names =
      for n <- [:triage, :sink, :settle, :collector, :endpoint, :port],
          into: %{},
          do: {n, :"dash_#{n}_#{id}"}

    start_supervised!({Triage, name: names.triage}, id: names.triage)
    start_supervised!({Sink, name: names.sink, log: false}, id: names.sink)

    start_supervised!(
      {Settle,
       name: names.settle, triage: names.triage, orchestrator: {Sink, names.sink}, settle_ms: 100},
      id: names.settle
    )

    start_supervised!({Collector, name: names.collector, flush_ms: 5, settle: names.settle},
      id: names.collector
    )

    start_supervised!(
      {SelfHeal.Endpoint,
       name: names.endpoint,
       port: 0,
       tokens: [@ingest],
       site_keys: %{"pk_dash" => %{origins: ["*"]}},
       collector: names.collector,
       settle: names.settle,
       approvals: names.port,
       operator_token_env: @env,
       rate_limit: nil},
      id: names.endpoint
    )

    base = "http://127.0.0.1:#{SelfHeal.Endpoint.port(names.endpoint)}"
    Map.merge(names, %{base: base, dir: dir})
  end

  # Events of three groups, one of them seen once (low severity: held by
  # triage), settled; then a fix awaiting a human (consent diagnose, a
  # deploy target), for the fingerprint `pick` chooses among the groups.
  defp real_run(ctx, pick \\ fn _groups -> "fpcalc0001" end) do
    repo = make_repo(ctx.dir)

    cfg =
      config(
        ctx.dir,
        repo,
        agent(ctx.dir, "good", good_fix()),
        deploy_config(ctx.dir, %{
          "gate" => %{"consent" => "diagnose"},
          "notify" => %{
            "channels" => [],
            "links" => %{"base_url" => ctx.base <> "/", "secret_env" => @link_env}
          }
        })
      )

    port = start_port(cfg, name: ctx.port)

    events =
      for(i <- 1..25, do: crash("order #{i} failed", MyApp.Orders)) ++
        for(i <- 1..4, do: crash("login #{@secret_in_sample} refused #{i}", MyApp.Auth)) ++
        [crash("seen once", MyApp.Rare)]

    Collector.push(ctx.collector, events)
    wait_until(fn -> length(Collector.groups(ctx.collector)) == 3 end)
    # every group settles (100 ms) and triage decides
    wait_until(fn -> Settle.stats(ctx.settle).settled >= 3 end)

    fix = fix!(port, fix_args(pick.(Collector.groups(ctx.collector))))
    assert fix["status"] == "awaiting_approval"
    {port, fix}
  end

  defp crash(message, module) do
    Event.new(
      type: "RuntimeError",
      message: message,
      stacktrace: [{module, :run, 1, [file: ~c"lib/my_app/x.ex", line: 10]}]
    )
  end

  # ------------------------------------------------------------ HTTP

  defp http(method, url, headers \\ [], body \\ nil),
    do: SelfHeal.TestHTTP.request(method, url, headers, body)

  defp header(headers, name), do: Enum.find_value(headers, fn {k, v} -> if k == name, do: v end)

  defp login(base) do
    {303, headers, _} =
      http(:post, base <> "/self_heal/login", [], "token=" <> URI.encode_www_form(@token))

    cookie = header(headers, "set-cookie")
    [pair | _] = String.split(cookie, ";")
    {pair, cookie}
  end

  defp csrf(page) do
    [_, token] = Regex.run(~r/name="csrf" value="([0-9a-f]+)"/, page)
    token
  end

  # ------------------------------------------------------------ tests

  test "authentication: no credentials 401, an ingest token 401, a site key 403, a wrong CSRF token or origin 403",
       ctx do
    {port, fix} = real_run(ctx)
    base = ctx.base

    assert {401, _, page} = http(:get, base <> "/self_heal")
    assert page =~ ~s(action="/self_heal/login")
    assert {401, h, _} = http(:get, base <> "/metrics")
    assert header(h, "www-authenticate") == "Bearer"
    assert {401, _, _} = http(:get, base <> "/metrics", [{"authorization", "Bearer " <> @ingest}])

    assert {401, _, _} =
             http(:get, base <> "/self_heal/fixes", [{"authorization", "Bearer " <> @ingest}])

    assert {403, _, _} = http(:get, base <> "/self_heal?key=pk_dash")
    assert {403, _, _} = http(:get, base <> "/metrics", [{"x-selfheal-key", "pk_dash"}])
    assert {401, _, _} = http(:post, base <> "/self_heal/login", [], "token=wrong")
    assert {401, _, _} = http(:get, base <> "/self_heal", [{"cookie", "self_heal_session=1.2.3"}])

    {cookie, set_cookie} = login(base)
    assert set_cookie =~ "HttpOnly"
    assert set_cookie =~ "SameSite=Strict"

    assert {200, h, page} =
             http(:get, base <> "/self_heal/fixes/#{fix["id"]}", [{"cookie", cookie}])

    csp = header(h, "content-security-policy")
    [_, nonce] = Regex.run(~r/script-src 'nonce-([^']+)'/, csp)
    assert csp =~ "default-src 'none'"
    assert page =~ ~s(<script nonce="#{nonce}">)
    assert page =~ "Approve fix #{fix["id"]}"
    token = csrf(page)
    approve = base <> "/self_heal/fixes/#{fix["id"]}/approve"

    # a wrong or missing CSRF token, another origin: nothing happens
    assert {403, _, _} =
             http(:post, approve, [{"cookie", cookie}], "csrf=" <> String.duplicate("0", 64))

    assert {403, _, _} = http(:post, approve, [{"cookie", cookie}], "x=1")

    assert {403, _, _} =
             http(
               :post,
               approve,
               [{"cookie", cookie}, {"origin", "https://evil.example"}],
               "csrf=" <> token
             )

    # another session's CSRF token is not this one's
    {other_cookie, _} = login(base)
    assert {403, _, _} = http(:post, approve, [{"cookie", other_cookie}], "csrf=" <> token)
    assert fix_status(port, fix["id"])["status"] == "awaiting_approval"

    # the bearer token works for scripts and Prometheus
    assert {200, h, metrics} =
             http(:get, base <> "/metrics", [{"authorization", "Bearer " <> @token}])

    assert header(h, "content-type") =~ "version=0.0.4"
    assert metrics =~ "self_heal_fixes{status=\"awaiting_approval\"} 1"
    assert metrics =~ "self_heal_approvals_waiting 1"

    # the page's own form approves
    assert {303, _, _} = http(:post, approve, [{"cookie", cookie}], "csrf=" <> token)

    assert wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])["status"] ==
             "deployed"
  end

  test "each group's lifecycle on the groups page, each fix's group on the fixes page", ctx do
    order = fn groups -> Enum.find(groups, &(&1.sample.message =~ "order")).fingerprint end
    {port, fix} = real_run(ctx, order)
    {cookie, _} = login(ctx.base)

    row = fn page, text ->
      page
      |> String.split("<tr>")
      |> Enum.find(&(String.starts_with?(&1, "<td") and &1 =~ text)) || flunk("no row #{text}")
    end

    assert {200, _, page} = http(:get, ctx.base <> "/self_heal/groups", [{"cookie", cookie}])
    assert page =~ "<th>Lifecycle</th>"
    # the fix's group is being fixed (it waits for a human), the one seen
    # once was held, the other escalated: detected
    assert row.(page, "order") =~ ~s(<span class="stage warn">fixing</span>)
    assert row.(page, "order") =~ "fix #{fix["id"]} awaiting_approval"
    assert row.(page, "seen once") =~ ~s(<span class="stage ">held</span>)
    assert row.(page, "login") =~ ~s(<span class="stage ">detected</span>)

    assert {:ok, _} = SelfHeal.Port.call(port, "approve", %{"id" => fix["id"], "by" => "ops"})

    assert wait_status(port, fix["id"], ["deployed", "rolled_back", "failed"])["status"] ==
             "deployed"

    assert {200, _, page} = http(:get, ctx.base <> "/self_heal/groups", [{"cookie", cookie}])
    assert row.(page, "order") =~ ~s(<span class="stage ok">fixed</span>)

    assert {200, _, page} = http(:get, ctx.base <> "/self_heal/fixes", [{"cookie", cookie}])
    assert row.(page, "fix #{fix["id"]}") =~ ~s(<span class="stage ok">fixed</span>)

    assert {200, _, page} =
             http(:get, ctx.base <> "/self_heal/fixes/#{fix["id"]}", [{"cookie", cookie}])

    assert page =~ "<th>Group</th><td>fixed (fix #{fix["id"]} deployed)</td>"
  end

  test "an unset token variable keeps the dashboard closed; an operator token that is an ingest token is refused" do
    System.delete_env("SH_DASH_UNSET")
    name = :"dash_closed_#{System.unique_integer([:positive])}"

    start_supervised!(
      {SelfHeal.Endpoint, name: name, port: 0, operator_token_env: "SH_DASH_UNSET"},
      id: name
    )

    base = "http://127.0.0.1:#{SelfHeal.Endpoint.port(name)}"
    assert {503, _, _} = http(:get, base <> "/self_heal")
    assert {503, _, _} = http(:get, base <> "/metrics", [{"authorization", "Bearer x"}])

    assert_raise ArgumentError, ~r/operator_token_env/, fn ->
      SelfHeal.Endpoint.config(tokens: [@token], operator_token_env: @env)
    end

    # without the option: no such routes
    plain = :"dash_plain_#{System.unique_integer([:positive])}"
    start_supervised!({SelfHeal.Endpoint, name: plain, port: 0}, id: plain)
    assert {404, _, _} = http(:get, "http://127.0.0.1:#{SelfHeal.Endpoint.port(plain)}/self_heal")
  end

  describe "in headless Chromium" do
    if !CDP.chromium() do
      @describetag skip: "chromium is not installed: dashboard browser test skipped"
    end

    test "every page renders real data; the fix's page approves and the fix deploys; :telemetry events",
         ctx do
      Process.register(self(), :self_heal_telemetry_test)
      {port, fix} = real_run(ctx)
      id = fix["id"]
      assert_received {:telemetry, [:self_heal, :capture], %{events: _}, %{sources: _}}
      assert_received {:telemetry, [:self_heal, :settle], %{count: _}, %{decision: :hold}}

      assert_received {:telemetry, [:self_heal, :fix, :stage], %{count: 1},
                       %{stage: "agent", fix_id: ^id}}

      cdp = CDP.start(Path.join(ctx.dir, "chromium"))

      try do
        # the login form, typed in as an operator would
        :ok = CDP.navigate(cdp, ctx.base <> "/self_heal")
        assert CDP.html(cdp) =~ "Operators' token"

        CDP.eval(cdp, """
        document.getElementById("token").value = #{SelfHeal.JSON.encode!(@token)};
        document.querySelector("form").submit();
        """)

        CDP.wait_load(cdp)
        overview = CDP.html(cdp)
        shot(cdp, "overview")
        assert overview =~ "<h1>Overview</h1>"
        assert overview =~ "awaiting_approval"
        assert overview =~ "Escalations pending"
        assert overview =~ "Approvals waiting"
        assert overview =~ "consent"
        assert overview =~ "diagnose"
        # the cookie is HttpOnly: scripts do not see it
        assert CDP.eval(cdp, "document.cookie") == ""

        :ok = CDP.navigate(cdp, ctx.base <> "/self_heal/groups")
        groups = CDP.html(cdp)
        shot(cdp, "groups")
        assert groups =~ "3 groups"

        assert groups =~ "order &lt;int&gt; failed" or groups =~ "order <int> failed" or
                 groups =~ "order"

        assert groups =~ "seen once"
        # the one seen once is low severity, held by triage, and says so
        assert groups =~ "hold"
        assert groups =~ "<svg class=\"spark\""
        # samples only scrubbed
        refute groups =~ "hunter2hunter2"

        :ok = CDP.navigate(cdp, ctx.base <> "/self_heal/fixes")
        assert CDP.html(cdp) =~ "/self_heal/fixes/#{id}"
        shot(cdp, "fixes")

        :ok = CDP.navigate(cdp, ctx.base <> "/self_heal/fixes/#{id}")
        page = CDP.html(cdp)
        shot(cdp, "fix")
        assert page =~ ~s(<span class="add">+    if not xs:</span>)
        assert page =~ ~s(<span class="hunk">@@ -1,2 +1,4 @@</span>)
        assert page =~ "proven"
        assert page =~ "consent is diagnose: a human deploys"
        assert page =~ "fix_validation"
        # the live script ran without a CSP violation: it updates its status line
        Process.sleep(5500)
        assert CDP.eval(cdp, ~S{document.getElementById("live").textContent}) =~ "updated"

        # Approve, pressed in the page
        CDP.eval(cdp, ~S{document.querySelector("button.approve").click();})
        CDP.wait_load(cdp)
        deployed = wait_status(port, id, ["deployed", "rolled_back", "failed"], 30_000)
        assert deployed["status"] == "deployed"
        assert deployed["decided_by"] == "dashboard"

        :ok = CDP.navigate(cdp, ctx.base <> "/self_heal/deploys")
        deploys = CDP.html(cdp)
        shot(cdp, "deploys")
        assert deploys =~ "succeeded"
        assert deploys =~ "a human"

        :ok = CDP.navigate(cdp, ctx.base <> "/self_heal/tickets")
        shot(cdp, "tickets")

        :ok = CDP.navigate(cdp, ctx.base <> "/self_heal/audit?verify=1")
        audit = CDP.html(cdp)
        shot(cdp, "audit")
        assert audit =~ "verified when opened"
        assert audit =~ "Verified now"
        assert audit =~ "fix_approved"
      after
        CDP.stop(cdp)
      end

      assert_received {:telemetry, [:self_heal, :deploy], %{count: 1}, %{fix_id: ^id}}

      for name <- ~w(overview groups fixes fix deploys tickets audit),
          do: assert(File.stat!(Path.join(@screens, "dashboard_#{name}.png")).size > 1000)
    end
  end

  defp shot(cdp, name), do: CDP.screenshot(cdp, Path.join(@screens, "dashboard_#{name}.png"))

  test "the signed link's page shows the change: the coloured diff, validation, the gate's reasons",
       ctx do
    {port, fix} = real_run(ctx)

    {:ok, %{"token" => t}} =
      SelfHeal.Port.call(port, "link_sign", %{
        "action" => "approve",
        "action_id" => "fix-#{fix["id"]}"
      })

    {200, _, page} = http(:get, ctx.base <> "/approve?t=" <> t)
    assert page =~ ~s(<span class="add">+    if not xs:</span>)
    assert page =~ ~s(<span class="hunk">@@ -1,2 +1,4 @@</span>)
    assert page =~ ~s(<span class="file">diff --git a/src/calc.py b/src/calc.py</span>)
    assert page =~ "tests/test_calc.py"
    assert page =~ "proven"
    assert page =~ "the fix&#39;s tests on the base: exit 1"
    assert page =~ "consent is diagnose: a human deploys"
    {200, h, full} = http(:get, ctx.base <> "/approve?t=" <> t <> "&full=1")
    assert header(h, "content-type") =~ "text/plain"
    assert full =~ "diff --git a/tests/test_calc.py b/tests/test_calc.py"
    # a link for another action does not show the patch
    {:ok, %{"token" => skip}} =
      SelfHeal.Port.call(port, "link_sign", %{
        "action" => "skip",
        "action_id" => "fix-#{fix["id"]}"
      })

    assert {403, _, _} = http(:get, ctx.base <> "/approve?t=" <> skip <> "&full=1")
  end

  test "/metrics: promtool accepts it, a real Prometheus server scrapes it", ctx do
    {_port, _fix} = real_run(ctx)
    {200, _, text} = http(:get, ctx.base <> "/metrics", [{"authorization", "Bearer " <> @token}])

    for name <- ~w(self_heal_events_received_total self_heal_groups self_heal_dedup_ratio
                   self_heal_groups_open self_heal_groups_settled_total self_heal_fixes
                   self_heal_breaker_open self_heal_kill_switch self_heal_model_cost_usd_total
                   self_heal_time_to_verified_seconds_bucket self_heal_port_up
                   self_heal_escalations_pending self_heal_approvals_waiting) do
      assert text =~ ~r/^#{name}[{ ]/m, name
    end

    assert text =~ ~s(self_heal_events_received_total{source="logger"} )
    assert text =~ "self_heal_port_up 1"

    promtool = System.find_executable("promtool")
    prometheus = System.find_executable("prometheus")

    if promtool && prometheus do
      file = Path.join(ctx.dir, "metrics.txt")
      File.write!(file, text)

      {out, status} =
        System.cmd("sh", ["-c", "promtool check metrics < \"$0\"", file], stderr_to_stdout: true)

      assert status == 0, out

      token_file = Path.join(ctx.dir, "token")
      File.write!(token_file, @token)
      %URI{port: target_port} = URI.parse(ctx.base)
      prom_port = free_port()
      config = Path.join(ctx.dir, "prometheus.yml")

      File.write!(config, """
      global:
        scrape_interval: 1s
      scrape_configs:
        - job_name: self_heal
          authorization:
            credentials_file: #{token_file}
          static_configs:
            - targets: ["127.0.0.1:#{target_port}"]
      """)

      prom =
        Port.open({:spawn_executable, prometheus}, [
          :binary,
          :exit_status,
          :stderr_to_stdout,
          args: [
            "--config.file=" <> config,
            "--storage.tsdb.path=" <> Path.join(ctx.dir, "tsdb"),
            "--web.listen-address=127.0.0.1:#{prom_port}"
          ]
        ])

      try do
        api = "http://127.0.0.1:#{prom_port}/api/v1/query?query="

        up =
          wait_until(
            fn ->
              case prom_query(api <> "up") do
                {:ok, [%{"value" => [_, "1"]}]} -> true
                _ -> nil
              end
            end,
            30_000
          )

        assert up

        assert {:ok, [%{"value" => [_, "1"]}]} =
                 prom_query(api <> "self_heal_fixes%7Bstatus%3D%22awaiting_approval%22%7D")
      after
        {:os_pid, os_pid} = Port.info(prom, :os_pid)
        System.cmd("kill", [Integer.to_string(os_pid)])
      end
    else
      IO.puts(
        :stderr,
        "prometheus is not installed (apt-get install prometheus): promtool and the scrape skipped"
      )
    end
  end

  defp free_port do
    {:ok, s} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(s)
    :gen_tcp.close(s)
    port
  end

  defp prom_query(url) do
    {_status, _h, body} = http(:get, url)

    case SelfHeal.JSON.decode(body) do
      {:ok, %{"status" => "success", "data" => %{"result" => result}}} -> {:ok, result}
      other -> other
    end
  rescue
    _ -> :error
  catch
    _, _ -> :error
  end
end
