defmodule SelfHeal.Endpoint.Dashboard do
  @moduledoc """
  The operators' dashboard (`/self_heal/...`) and the Prometheus metrics
  (`GET /metrics`) of `SelfHeal.Endpoint`, with `:operator_token_env` set
  (`docs/dashboard.md`).

  Pages, server-rendered: the overview (`/self_heal`), `groups` (every
  group of the collector, low severity included, with its occurrences per
  minute over the last hour, its triage decision, its sample scrubbed by
  the port and its ticket), `tickets`, `fixes` and one fix (its stages from
  the audit log, the diff, the validation and the gate's reasons through
  `SelfHeal.Endpoint.FixView`, Approve / Skip while it waits), `deploys`
  (deploys and rollbacks) and `audit` (the latest records and what
  verifying the chain found). A small inline script (its nonce in the
  Content-Security-Policy) reloads the page's content every 5 s
  (`?fragment=1`). No outside asset; every text is escaped.

  Authentication: the operators' token, read at start from the variable
  `:operator_token_env` names, as `Authorization: Bearer <token>`
  (Prometheus, scripts), or typed once into the login form
  (`/self_heal/login`), which sets an HttpOnly, SameSite=Strict session
  cookie (12 h, an HMAC keyed by the token: changing the token ends every
  session). Actions are `POST`s carrying a CSRF token (an HMAC of the
  session) and, when the browser sends one, a same-origin `Origin`.
  Ingest tokens and browser site keys open nothing here: no credentials
  401, a site key 403, a wrong CSRF token or origin 403, a token variable
  unset at start 503.
  """

  import SelfHeal.Endpoint.FixView, only: [escape: 1]

  alias SelfHeal.Endpoint.{Conn, FixView}
  alias SelfHeal.Endpoint.Conn.Request
  alias SelfHeal.{Lifecycle, Metrics}

  @typedoc "The operators' credential as the endpoint keeps it."
  @type operator :: %{env: binary(), digest: binary(), key: binary()} | {:unset, binary()} | nil

  @cookie "self_heal_session"
  @session_s 43_200
  @max_form 4096
  @page_size 200
  @call_timeout 10_000
  @live_ms 5000

  @doc "The operator credential from the variable's name and value."
  @spec operator(binary(), binary() | nil) :: operator()
  def operator(name, token) when token in [nil, ""], do: {:unset, name}

  def operator(name, token) do
    %{
      env: name,
      digest: :crypto.hash(:sha256, token),
      key: :crypto.mac(:hmac, :sha256, token, "self_heal dashboard session")
    }
  end

  @doc "Answers a request on `/self_heal/...` or `/metrics` (as `Handler.handle/2`)."
  @spec handle(Conn.t(), Request.t()) :: SelfHeal.Endpoint.Handler.result()
  def handle(%Conn{config: %{operator: {:unset, name}}} = conn, req) do
    text(503, "the operators' token (#{name}) was not set when SelfHeal started\n", conn, req)
  end

  def handle(conn, %Request{method: method, path: "/self_heal/login"} = req)
      when method in [:GET, :HEAD],
      do: login_page(200, nil, conn, req)

  def handle(conn, %Request{method: :POST, path: "/self_heal/login"} = req), do: login(conn, req)

  def handle(conn, req) do
    op = conn.config.operator

    case authenticate(req, op) do
      {:ok, session} ->
        route(conn, req, req.method, path_parts(req.path), session)

      :site_key ->
        text(403, "a site key does not open the dashboard\n", conn, req)

      :none when req.path == "/metrics" ->
        {401, [{"www-authenticate", "Bearer"} | text_headers()], "unauthorized\n", conn, req,
         false}

      :none ->
        login_page(401, nil, conn, req)
    end
  end

  defp path_parts("/metrics"), do: [:metrics]
  defp path_parts(path), do: path |> String.split("/", trim: true) |> tl()

  # ------------------------------------------------------------ auth

  defp authenticate(req, op) do
    cond do
      bearer = bearer(req.authorization) ->
        if :crypto.hash_equals(:crypto.hash(:sha256, bearer), op.digest),
          do: {:ok, "bearer"},
          else: :none

      nonce = session(req.cookie, op) ->
        {:ok, nonce}

      Conn.form_value(req.query, "key") != nil or req.site_key != nil ->
        :site_key

      true ->
        :none
    end
  end

  defp bearer(<<scheme::binary-size(7), token::binary>>) when token != "" do
    if String.downcase(scheme) == "bearer ", do: String.trim(token)
  end

  defp bearer(_), do: nil

  defp session(nil, _op), do: nil

  defp session(cookie, op) do
    cookie
    |> String.split(";")
    |> Enum.find_value(fn part ->
      case String.split(String.trim(part), "=", parts: 2) do
        [@cookie, value] -> verify_session(value, op)
        _ -> nil
      end
    end)
  end

  defp verify_session(value, op) do
    with [exp, nonce, mac] <- String.split(value, "."),
         {e, ""} <- Integer.parse(exp),
         true <- e > System.os_time(:second),
         true <- byte_size(mac) == 64,
         true <- :crypto.hash_equals(mac, sign(op, "session|#{exp}|#{nonce}")) do
      nonce
    else
      _ -> nil
    end
  end

  defp sign(op, text),
    do: :crypto.mac(:hmac, :sha256, op.key, text) |> Base.encode16(case: :lower)

  defp csrf(op, session), do: sign(op, "csrf|" <> session)

  defp login(conn, req) do
    op = conn.config.operator

    with :ok <- same_origin(req),
         {:ok, body, conn, req} <- form(conn, req) do
      token = Conn.form_value(body, "token") || ""

      if token != "" and :crypto.hash_equals(:crypto.hash(:sha256, token), op.digest) do
        exp = Integer.to_string(System.os_time(:second) + @session_s)
        nonce = Base.url_encode64(:crypto.strong_rand_bytes(18), padding: false)
        value = "#{exp}.#{nonce}.#{sign(op, "session|#{exp}|#{nonce}")}"

        cookie =
          "#{@cookie}=#{value}; Path=/self_heal; Max-Age=#{@session_s}; HttpOnly; SameSite=Strict"

        {303, [{"location", "/self_heal"}, {"set-cookie", cookie} | page_headers(nil)], "", conn,
         req, false}
      else
        login_page(401, "That is not the operators' token.", conn, req)
      end
    else
      {:error, status, conn, req} -> text(status, "bad request\n", conn, req)
      :cross_origin -> text(403, "cross-origin request refused\n", conn, req, true)
    end
  end

  # a browser's Origin, when it sends one, must be this host
  defp same_origin(%Request{origin: nil}), do: :ok

  defp same_origin(%Request{origin: origin, host: host}) when is_binary(host) do
    if origin in ["http://" <> host, "https://" <> host], do: :ok, else: :cross_origin
  end

  defp same_origin(_req), do: :cross_origin

  defp form(conn, req) do
    if is_integer(req.content_length) and req.content_length > @max_form,
      do: {:error, 413, conn, req},
      else: Conn.read_body(conn, req, @max_form)
  end

  # POST with a valid CSRF token and origin; then fun.(body, conn, req)
  defp action(conn, req, session, fun) do
    op = conn.config.operator

    with :ok <- same_origin(req),
         {:ok, body, conn, req} <- form(conn, req) do
      given = Conn.form_value(body, "csrf") || ""
      expected = csrf(op, session)

      if byte_size(given) == byte_size(expected) and :crypto.hash_equals(given, expected),
        do: fun.(body, conn, req),
        else: text(403, "invalid CSRF token\n", conn, req)
    else
      {:error, status, conn, req} -> text(status, "bad request\n", conn, req, true)
      :cross_origin -> text(403, "cross-origin request refused\n", conn, req, true)
    end
  end

  # ------------------------------------------------------------ routes

  defp route(conn, req, method, [:metrics], _session) when method in [:GET, :HEAD] do
    body = Metrics.exposition(sources(conn))
    {200, [{"content-type", "text/plain; version=0.0.4; charset=utf-8"}], body, conn, req, false}
  end

  defp route(conn, req, method, parts, session) when method in [:GET, :HEAD] do
    case page(parts, conn, req, session) do
      {:ok, title, body} ->
        if Conn.form_value(req.query, "fragment") == "1",
          do: {200, page_headers(nil), body, conn, req, false},
          else: html(200, title, parts, body, conn, req, session)

      {:raw, status, headers, body} ->
        {status, headers, body, conn, req, false}

      :not_found ->
        html(404, "Not found", parts, "<p>No such page.</p>", conn, req, session)
    end
  end

  defp route(conn, req, :POST, ["fixes", id, decision], session)
       when decision in ["approve", "skip"] do
    action(conn, req, session, fn _body, conn, req ->
      with {n, ""} when n > 0 <- Integer.parse(id),
           {:ok, _} <- call(conn, decision, %{"id" => n, "by" => "dashboard"}) do
        {303, [{"location", "/self_heal/fixes/#{n}"} | page_headers(nil)], "", conn, req, false}
      else
        {:error, %{message: message}} -> text(409, message <> "\n", conn, req)
        {:error, _} -> text(503, "the port program is not reachable\n", conn, req)
        _ -> text(404, "no such fix\n", conn, req)
      end
    end)
  end

  defp route(conn, req, :POST, ["logout"], session) do
    action(conn, req, session, fn _body, conn, req ->
      cookie = "#{@cookie}=; Path=/self_heal; Max-Age=0; HttpOnly; SameSite=Strict"

      {303, [{"location", "/self_heal/login"}, {"set-cookie", cookie} | page_headers(nil)], "",
       conn, req, false}
    end)
  end

  defp route(conn, req, _method, _parts, _session) do
    {405, [{"allow", "GET, HEAD, POST"} | text_headers()], "method not allowed\n", conn, req,
     false}
  end

  defp sources(conn) do
    [collector: conn.config.collector, settle: conn.config.settle, port: conn.config.approvals]
  end

  # ------------------------------------------------------------ pages

  defp page([], conn, _req, _session), do: {:ok, "Overview", overview(conn)}
  defp page(["groups"], conn, req, _session), do: {:ok, "Groups", groups(conn, req)}
  defp page(["tickets"], conn, _req, _session), do: {:ok, "Tickets", tickets(conn)}
  defp page(["fixes"], conn, _req, _session), do: {:ok, "Fixes", fixes(conn)}
  defp page(["deploys"], conn, _req, _session), do: {:ok, "Deploys", deploys(conn)}
  defp page(["audit"], conn, req, _session), do: {:ok, "Audit log", audit(conn, req)}

  defp page(["fixes", id], conn, _req, session) do
    case Integer.parse(id) do
      {n, ""} when n > 0 -> {:ok, "Fix #{n}", fix(conn, n, session)}
      _ -> :not_found
    end
  end

  defp page(["fixes", id, "patch"], conn, _req, _session) do
    with {n, ""} when n > 0 <- Integer.parse(id),
         {:ok, %{"patch" => patch}} <-
           call(conn, "fix_patch", %{"id" => n, "max_bytes" => 4_194_304}) do
      {:raw, 200, [{"content-type", "text/plain; charset=utf-8"} | tl(page_headers(nil))], patch}
    else
      _ -> :not_found
    end
  end

  defp page(_parts, _conn, _req, _session), do: :not_found

  defp overview(conn) do
    collector = safe(fn -> SelfHeal.Collector.stats(conn.config.collector) end)
    settle = safe(fn -> SelfHeal.Settle.stats(conn.config.settle) end)
    handler = safe(fn -> SelfHeal.LoggerHandler.stats() end)
    stats = ok(call(conn, "stats", %{"histograms" => false}))
    gate = ok(call(conn, "gate_status", %{}))
    audit = ok(call(conn, "audit_tail", %{"limit" => 1}))
    received = Metrics.by(:received)
    settled = Map.new(Metrics.by(:settled))
    fixes = (stats && stats["fixes"]) || %{}
    budget = (stats && stats["budget"]) || %{}
    events = (collector && collector.events) || 0
    ngroups = (collector && collector.groups) || 0
    waiting = Map.get(fixes, "awaiting_approval", 0)
    batch = safe(fn -> SelfHeal.Port.escalations_pending(conn.config.approvals) end)

    [
      "<div class=\"cards\">",
      card("Events", [
        {"received", Enum.sum(Enum.map(received, &elem(&1, 1)))},
        for({s, n} <- Enum.sort(received), do: {"from #{s}", n}),
        {"dropped (groups full)", collector && collector.overflow},
        {"refused (overloaded)", collector && collector.shed},
        {"dropped by the logger handler", handler && handler.dropped}
      ]),
      card("Groups", [
        {"groups", ngroups},
        {"dedup ratio", if(ngroups > 0, do: Float.round(events / ngroups, 1), else: "-")},
        {"waiting to settle", settle && settle.open},
        {"escalated", Map.get(settled, "escalate", 0)},
        {"held by triage", Map.get(settled, "hold", 0)}
      ]),
      card("Escalations pending", [
        {"in SelfHeal.Port's batch", batch},
        {"queued or analysed by the port", stats && stats["escalations_pending"]}
      ]),
      card("Approvals waiting", [
        {"fixes awaiting approval", waiting},
        {"fixes running", gate && gate["fixes_running"]},
        {"fixes queued for a slot", gate && gate["fixes_waiting"]}
      ]),
      card("Gate", gate_rows(gate)),
      card("Fixes", Enum.sort(fixes)),
      card("Tickets", Enum.sort((stats && stats["tickets"]) || %{})),
      card("Models", [
        {"calls", get_in(budget, ["llm_calls", "total"]) || 0},
        {"input tokens", get_in(budget, ["llm_input_tokens", "total"]) || 0},
        {"output tokens", get_in(budget, ["llm_output_tokens", "total"]) || 0},
        {"cost (USD)", money(get_in(budget, ["llm_cost_usd", "total"]) || 0)}
      ]),
      card("Audit log", audit_rows(audit && audit["status"])),
      "</div>",
      if(waiting > 0,
        do: [
          "<p class=\"warn\"><a href=\"/self_heal/fixes\">",
          escape(waiting),
          " fix(es) await approval</a></p>"
        ],
        else: ""
      ),
      if(stats == nil, do: "<p class=\"bad\">The port program did not answer.</p>", else: "")
    ]
  end

  defp gate_rows(nil), do: [{"state", "the port program did not answer"}]

  defp gate_rows(gate) do
    breaker = gate["breaker"] || %{}

    [
      {"consent", gate["consent"]},
      {"kill switch", if(gate["kill_switch"], do: "ON: no deploy", else: "off")},
      {"breaker", "#{breaker["state"]} (#{breaker["failures"] || 0} failures)"},
      {"automatic deploys, last hour", gate["auto_deploys_last_hour"]},
      {"deploy running", if(gate["deploy_running"], do: "yes", else: "no")}
    ]
  end

  defp audit_rows(nil), do: [{"state", "unknown"}]

  defp audit_rows(s) do
    [
      {"chain", if(s["ok"], do: "verified when opened", else: "BROKEN: #{s["error"]}")},
      {"records", s["records"]},
      {"head", s["head"] && String.slice(s["head"], 0, 16)},
      {"keyed", if(s["keyed"], do: "HMAC (#{s["key_id"]})", else: "hash chain only")}
    ]
  end

  defp card(title, rows) do
    [
      "<section class=\"card\"><h2>",
      escape(title),
      "</h2><table>",
      for {k, v} <- List.flatten(rows), v != nil do
        ["<tr><th>", escape(k), "</th><td>", escape(v), "</td></tr>"]
      end,
      "</table></section>"
    ]
  end

  # ---- groups

  defp groups(conn, req) do
    all = safe(fn -> SelfHeal.Collector.groups(conn.config.collector) end) || []
    pages = max(div(length(all) + @page_size - 1, @page_size), 1)

    page =
      case Integer.parse(Conn.form_value(req.query, "page") || "1") do
        {n, ""} -> n |> max(1) |> min(pages)
        _ -> 1
      end

    shown = all |> Enum.drop((page - 1) * @page_size) |> Enum.take(@page_size)
    # the normalised message keeps what the normaliser does not replace
    # (a password in it, say): both texts are shown only scrubbed
    texts =
      conn
      |> scrubbed(Enum.flat_map(shown, &[&1.normalized || "", sample_text(&1)]))
      |> Enum.chunk_every(2)

    tickets = tickets_by_fingerprint(conn)
    fixes = fixes_index(conn)

    [
      "<p>",
      escape(length(all)),
      " groups, most occurrences first. Severity and decision are the triage's when the group last settled; ",
      "a held group is not ticketed (its reason says why).</p>",
      pager(page, pages),
      "<table class=\"list\"><tr><th>Fingerprint</th><th>Error</th><th>Count</th><th>Last hour</th>",
      "<th>First seen</th><th>Last seen</th><th>Severity</th><th>Decision</th><th>Ticket</th>",
      "<th>Lifecycle</th></tr>",
      Enum.zip_with(shown, texts, fn g, [normalized, sample] ->
        decision = Metrics.decision(g.fingerprint)
        ticket = tickets[g.fingerprint]
        fix = Lifecycle.fix_for(fixes, g.fingerprint, ticket && ticket["id"])

        [
          "<tr><td class=\"mono\" title=\"",
          escape(g.fingerprint),
          "\">",
          escape(String.slice(g.fingerprint, 0, 12)),
          "</td><td><b>",
          escape(g.type),
          "</b> ",
          if(normalized,
            do: escape(normalized),
            else: "<i>(texts are shown once the port program has scrubbed them)</i>"
          ),
          if(sample, do: ["<br><span class=\"sample\">", escape(sample), "</span>"], else: ""),
          "</td><td>",
          escape(g.count),
          "</td><td>",
          sparkline(Metrics.series(g.fingerprint)),
          "</td><td>",
          time_us(g.first_seen),
          "</td><td>",
          time_us(g.last_seen),
          "</td>",
          decision_cells(decision),
          "<td>",
          if(ticket, do: ticket_link(ticket), else: ""),
          "</td><td>",
          lifecycle(Lifecycle.stage(decision, ticket != nil, fix)),
          "</td></tr>"
        ]
      end),
      "</table>",
      pager(page, pages)
    ]
  end

  defp sample_text(%{sample: %{message: m}}) when is_binary(m), do: m
  defp sample_text(_group), do: ""

  # one `scrub` call for the page's samples (none shown without the port)
  @sep "\n\u001e\n"
  defp scrubbed(_conn, []), do: []

  defp scrubbed(conn, texts) do
    case call(conn, "scrub", %{"text" => Enum.join(texts, @sep)}) do
      {:ok, %{"text" => text}} ->
        parts = String.split(text, @sep)
        if length(parts) == length(texts), do: parts, else: Enum.map(texts, fn _ -> nil end)

      _ ->
        Enum.map(texts, fn _ -> nil end)
    end
  end

  defp decision_cells(nil), do: "<td>-</td><td>not settled yet</td>"

  defp decision_cells({severity, decision, reason, _at, _count}) do
    [
      "<td>",
      escape(severity),
      "</td><td class=\"",
      if(decision == :hold, do: "warn", else: "ok"),
      "\">",
      escape(decision),
      if(reason, do: [": ", escape(reason)], else: ""),
      "</td>"
    ]
  end

  defp pager(_page, 1), do: ""

  defp pager(page, pages) do
    [
      "<p class=\"pager\">",
      for p <- 1..pages do
        if p == page,
          do: ["<b>", escape(p), "</b> "],
          else: ["<a href=\"/self_heal/groups?page=", escape(p), "\">", escape(p), "</a> "]
      end,
      "</p>"
    ]
  end

  defp sparkline(series) do
    top = Enum.max(series ++ [1])
    n = length(series)

    points =
      series
      |> Enum.with_index()
      |> Enum.map_join(" ", fn {v, i} -> "#{i * 2},#{Float.round(15 - v / top * 14, 1)}" end)

    [
      "<svg class=\"spark\" viewBox=\"0 0 ",
      Integer.to_string(n * 2),
      " 16\" width=\"120\" height=\"20\" role=\"img\" aria-label=\"",
      escape(Enum.sum(series)),
      " in the last hour\"><polyline fill=\"none\" stroke=\"#3367d6\" stroke-width=\"1\" points=\"",
      points,
      "\"/></svg>"
    ]
  end

  defp tickets_by_fingerprint(conn) do
    case call(conn, "tickets", %{}) do
      {:ok, %{"tickets" => list}} ->
        for t <- list, fp <- List.wrap(t["fingerprints"] || t["fingerprint"]), into: %{} do
          {fp, t}
        end

      _ ->
        %{}
    end
  end

  defp fixes_index(conn) do
    case call(conn, "fixes", %{"limit" => 1000}) do
      {:ok, %{"fixes" => list}} -> Lifecycle.index(list)
      _ -> Lifecycle.index([])
    end
  end

  # the stage and what it is at
  defp lifecycle({stage, detail}) do
    class =
      case stage do
        :fixed -> "ok"
        :rolled_back -> "bad"
        :fixing -> "warn"
        _ -> ""
      end

    [
      "<span class=\"stage ",
      class,
      "\">",
      escape(Lifecycle.name(stage)),
      "</span>",
      if(detail, do: [" <small>", escape(detail), "</small>"], else: "")
    ]
  end

  defp ticket_link(t) do
    label = "##{t["id"]} #{t["status"]}"

    case t["url"] do
      "https://" <> _ = url ->
        ["<a href=\"", escape(url), "\" rel=\"noreferrer\">", escape(label), "</a>"]

      _ ->
        escape(label)
    end
  end

  # ---- tickets, fixes, deploys

  defp tickets(conn) do
    case call(conn, "tickets", %{}) do
      {:ok, %{"tickets" => list}} ->
        table(
          [
            "Id",
            "Title",
            "Status",
            "Severity",
            "Count",
            "Backend",
            "Fingerprints",
            "Opened",
            "Updated"
          ],
          for t <- list do
            [
              ticket_link(t),
              escape(t["title"]),
              escape(t["status"]),
              escape(t["severity"]),
              escape(t["count"]),
              escape(t["backend"]),
              mono(Enum.join(List.wrap(t["fingerprints"] || t["fingerprint"]), " ")),
              time_s(t["created_at"]),
              time_s(t["updated_at"])
            ]
          end
        )

      other ->
        unavailable(other)
    end
  end

  defp fixes(conn) do
    case call(conn, "fixes", %{"limit" => @page_size}) do
      {:ok, %{"fixes" => list}} ->
        table(
          [
            "Fix",
            "Fingerprint",
            "Status",
            "Severity",
            "Confidence",
            "Decided by",
            "Started",
            "Updated",
            "Group"
          ],
          for f <- list do
            [
              [
                "<a href=\"/self_heal/fixes/",
                escape(f["id"]),
                "\">fix ",
                escape(f["id"]),
                "</a>"
              ],
              mono(f["fingerprint"]),
              status(f["status"]),
              escape(f["severity"]),
              escape(number(f["confidence"])),
              escape(f["decided_by"]),
              time_s(f["created_at"]),
              time_s(f["updated_at"]),
              lifecycle(Lifecycle.of_fix(f))
            ]
          end
        )

      other ->
        unavailable(other)
    end
  end

  defp deploys(conn) do
    case call(conn, "deploys", %{"limit" => @page_size}) do
      {:ok, %{"deploys" => list}} ->
        table(
          ["At", "Kind", "Status", "Fix", "Fingerprint", "Approved by", "Commit", "Detail"],
          for d <- list do
            [
              time_s(d["at"]),
              escape(d["kind"]),
              status(d["status"]),
              if(d["fix_id"],
                do: [
                  "<a href=\"/self_heal/fixes/",
                  escape(d["fix_id"]),
                  "\">fix ",
                  escape(d["fix_id"]),
                  "</a>"
                ],
                else: ""
              ),
              mono(d["fingerprint"]),
              if(d["auto"] == 1, do: "the gate", else: "a human"),
              mono(d["commit"] && String.slice(d["commit"], 0, 12)),
              escape(compact(d["detail"]))
            ]
          end
        )

      other ->
        unavailable(other)
    end
  end

  # ---- one fix

  defp fix(conn, id, session) do
    case call(conn, "fix_get", %{"id" => id}) do
      {:ok, fix} ->
        patch = ok(call(conn, "fix_patch", %{"id" => id}))
        timeline = ok(call(conn, "audit_tail", %{"fix_id" => id, "limit" => 200}))
        group = get_in(fix, ["input", "group"]) || %{}

        [
          "<table class=\"facts\">",
          for {k, v} <- [
                {"Status", fix["status"]},
                {"Group", Lifecycle.label(Lifecycle.of_fix(fix))},
                {"Fingerprint", fix["fingerprint"]},
                {"Severity", fix["severity"]},
                {"Error",
                 Enum.join(Enum.reject([group["type"], group["message"]], &is_nil/1), ": ")},
                {"Service", group["service"]},
                {"Root cause", get_in(fix, ["input", "root_cause"])},
                {"Ticket", fix["ticket_id"]},
                {"Branch", fix["branch"]},
                {"Decided by", fix["decided_by"]},
                {"Pull request", get_in(fix, ["delivery", "pr_url"])}
              ],
              v not in [nil, ""] do
            ["<tr><th>", k, "</th><td>", escape(v), "</td></tr>"]
          end,
          "</table>",
          decide_forms(fix, conn, session),
          "<h2>Stages</h2>",
          stages(timeline),
          "<h2>The change</h2>",
          FixView.diff(patch, "/self_heal/fixes/#{id}/patch"),
          "<h2>Validation</h2>",
          FixView.validation(fix),
          "<h2>The gate</h2>",
          FixView.gate(fix),
          "<h2>Deploys</h2>",
          table(
            ["At", "Kind", "Status", "Approved by", "Commit"],
            for d <- List.wrap(fix["deploys"]) do
              [
                time_s(d["at"]),
                escape(d["kind"]),
                status(d["status"]),
                if(d["auto"] == 1, do: "the gate", else: "a human"),
                mono(d["commit"] && String.slice(d["commit"], 0, 12))
              ]
            end
          )
        ]

      {:error, %{code: "not_found"}} ->
        "<p>No such fix.</p>"

      other ->
        unavailable(other)
    end
  end

  defp decide_forms(%{"status" => "awaiting_approval", "id" => id}, conn, session) do
    token = csrf(conn.config.operator, session)

    [
      "<div class=\"decide\">",
      for {action, label} <- [{"approve", "Approve"}, {"skip", "Skip"}] do
        [
          "<form method=\"post\" action=\"/self_heal/fixes/",
          escape(id),
          "/",
          action,
          "\"><input type=\"hidden\" name=\"csrf\" value=\"",
          token,
          "\"><button type=\"submit\" class=\"",
          action,
          "\">",
          label,
          " fix ",
          escape(id),
          "</button></form>"
        ]
      end,
      "</div>"
    ]
  end

  defp decide_forms(_fix, _conn, _session), do: ""

  @hidden [
    "prev",
    "chain",
    "mac",
    "key_id",
    "fix_id",
    "fingerprint",
    "stage",
    "action",
    "seq",
    "at"
  ]

  defp stages(%{"records" => records}) when records != [] do
    table(
      ["At", "Record", "Stage", "Details"],
      for r <- records do
        [
          escape(r["at"]),
          escape(r["action"]),
          escape(r["stage"]),
          escape(r |> Map.drop(@hidden) |> compact() |> String.slice(0, 400))
        ]
      end
    )
  end

  defp stages(_timeline), do: "<p>No stage recorded in the audit log.</p>"

  # ---- audit

  defp audit(conn, req) do
    tail = call(conn, "audit_tail", %{"limit" => @page_size})

    verify =
      if Conn.form_value(req.query, "verify") == "1",
        do: call(conn, "verify-audit", %{})

    case tail do
      {:ok, %{"records" => records} = t} ->
        [
          card("Chain", audit_rows(t["status"])),
          case verify do
            nil ->
              "<p><a href=\"/self_heal/audit?verify=1\">Verify the whole chain now</a></p>"

            {:ok, v} ->
              [
                "<p class=\"",
                if(v["ok"] == true, do: "ok", else: "bad"),
                "\">Verified now: ",
                escape(compact(v)),
                "</p>"
              ]

            {:error, e} ->
              ["<p class=\"bad\">Verification failed: ", escape(inspect(e)), "</p>"]
          end,
          table(
            ["Seq", "At", "Action", "Fix", "Details"],
            for r <- Enum.reverse(records) do
              [
                escape(r["seq"]),
                escape(r["at"]),
                escape(r["action"]),
                escape(r["fix_id"]),
                escape(r |> Map.drop(@hidden) |> compact() |> String.slice(0, 300))
              ]
            end
          )
        ]

      other ->
        unavailable(other)
    end
  end

  # ------------------------------------------------------------ HTML

  defp table(headers, rows) do
    [
      "<table class=\"list\"><tr>",
      for(h <- headers, do: ["<th>", h, "</th>"]),
      "</tr>",
      for(row <- rows, do: ["<tr>", for(cell <- row, do: ["<td>", cell, "</td>"]), "</tr>"]),
      "</table>",
      if(rows == [], do: "<p>None yet.</p>", else: "")
    ]
  end

  defp unavailable({:error, %{message: m}}),
    do: ["<p class=\"bad\">The port program refused: ", escape(m), "</p>"]

  defp unavailable(_), do: "<p class=\"bad\">The port program did not answer.</p>"

  defp status(s) do
    class =
      cond do
        s in ["deployed", "succeeded", "delivered", "approved"] -> "ok"
        s in ["failed", "rejected", "rolled_back", "escalated"] -> "bad"
        true -> "warn"
      end

    ["<span class=\"", class, "\">", escape(s), "</span>"]
  end

  defp mono(nil), do: ""
  defp mono(text), do: ["<span class=\"mono\">", escape(text), "</span>"]

  defp compact(nil), do: ""
  defp compact(v) when is_binary(v), do: v
  defp compact(v), do: SelfHeal.JSON.encode!(v)

  defp number(x) when is_number(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
  defp number(_), do: nil

  defp money(x) when is_number(x), do: :erlang.float_to_binary(x / 1, decimals: 4)

  defp time_s(s) when is_integer(s), do: s |> DateTime.from_unix!() |> DateTime.to_string()
  defp time_s(_), do: ""

  defp time_us(us) when is_integer(us),
    do: us |> div(1_000_000) |> time_s()

  defp time_us(_), do: ""

  @nav [
    {[], "Overview"},
    {["groups"], "Groups"},
    {["tickets"], "Tickets"},
    {["fixes"], "Fixes"},
    {["deploys"], "Deploys"},
    {["audit"], "Audit log"}
  ]

  defp html(status, title, parts, body, conn, req, session) do
    nonce = Base.encode64(:crypto.strong_rand_bytes(16))
    active = Enum.take(parts, 1)

    page = [
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
      "<meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\">",
      "<title>SelfHeal: ",
      escape(title),
      "</title><style nonce=\"",
      nonce,
      "\">",
      css(),
      FixView.css(),
      "</style></head><body><header><b>SelfHeal</b><nav>",
      for {p, label} <- @nav do
        [
          "<a href=\"/self_heal",
          Enum.map(p, &["/", &1]),
          "\"",
          if(p == active, do: " class=\"on\"", else: ""),
          ">",
          label,
          "</a>"
        ]
      end,
      "</nav><form method=\"post\" action=\"/self_heal/logout\"><input type=\"hidden\" name=\"csrf\" value=\"",
      csrf(conn.config.operator, session),
      "\"><button type=\"submit\">Log out</button></form></header><h1>",
      escape(title),
      "</h1><p class=\"live\" id=\"live\">live: refreshed every #{div(@live_ms, 1000)} s</p><main id=\"main\">",
      body,
      "</main><script nonce=\"",
      nonce,
      "\">",
      live_script(),
      "</script></body></html>\n"
    ]

    {status, page_headers(nonce), page, conn, req, false}
  end

  # polls the page's content (?fragment=1) while the tab is visible
  defp live_script do
    """
    (function(){var m=document.getElementById("main"),s=document.getElementById("live");
    if(!m||!window.fetch||!window.URL)return;
    setInterval(function(){if(document.hidden)return;var u=new URL(location.href);
    u.searchParams.set("fragment","1");
    fetch(u.toString(),{credentials:"same-origin"}).then(function(r){return r.ok?r.text():null;})
    .then(function(t){if(t!==null){m.innerHTML=t;s.textContent="live: updated "+new Date().toLocaleTimeString();}})
    .catch(function(){s.textContent="live: not reachable";});},#{@live_ms});})();
    """
  end

  defp css do
    "body{font-family:sans-serif;margin:0 auto;max-width:90em;padding:0 1em;color:#222}" <>
      "header{display:flex;gap:1em;align-items:center;border-bottom:1px solid #ddd;padding:.5em 0}" <>
      "nav a{margin-right:.8em;text-decoration:none;color:#3367d6}nav a.on{font-weight:bold;color:#222}" <>
      "header form{margin-left:auto}.cards{display:flex;flex-wrap:wrap;gap:1em}" <>
      ".card{border:1px solid #ddd;border-radius:4px;padding:.5em 1em;min-width:16em}" <>
      ".card h2{font-size:1em;margin:.2em 0}.card th{text-align:left;font-weight:normal;color:#555;padding-right:1em}" <>
      ".list{border-collapse:collapse;width:100%;font-size:.9em}.list th,.list td{border-bottom:1px solid #eee;" <>
      "padding:.25em .5em;text-align:left;vertical-align:top}.mono{font-family:monospace}" <>
      ".sample{color:#555;font-size:.9em;word-break:break-word}.live{color:#777;font-size:.8em}" <>
      ".decide{display:flex;gap:1em;margin:1em 0}.decide button{font-size:1.1em;padding:.4em 1.2em}" <>
      ".decide .approve{background:#e6ffec}.decide .skip{background:#ffebe9}.pager a{margin-right:.3em}"
  end

  defp login_page(status, error, conn, req) do
    body = [
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">",
      "<title>SelfHeal: log in</title></head><body><h1>SelfHeal</h1>",
      if(error, do: ["<p>", escape(error), "</p>"], else: ""),
      "<form method=\"post\" action=\"/self_heal/login\"><label>Operators' token ",
      "<input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label> ",
      "<button type=\"submit\" id=\"login\">Log in</button></form></body></html>\n"
    ]

    {status, page_headers(nil), body, conn, req, false}
  end

  defp page_headers(nonce) do
    src = if nonce, do: "'nonce-#{nonce}'", else: "'none'"

    [
      {"content-type", "text/html; charset=utf-8"},
      {"cache-control", "no-store"},
      # same-origin, not no-referrer: with no-referrer a browser sends
      # "Origin: null" on the page's own form posts
      {"referrer-policy", "same-origin"},
      {"x-content-type-options", "nosniff"},
      {"x-frame-options", "DENY"},
      {"content-security-policy",
       "default-src 'none'; script-src #{src}; style-src #{src}; connect-src 'self'; " <>
         "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"}
    ]
  end

  defp text_headers,
    do: [{"content-type", "text/plain; charset=utf-8"}, {"cache-control", "no-store"}]

  defp text(status, body, conn, req, close? \\ false),
    do: {status, text_headers(), body, conn, req, close?}

  # ------------------------------------------------------------ data

  defp call(conn, cmd, args) do
    case conn.config.approvals do
      nil -> {:error, :no_port}
      port -> SelfHeal.Port.call(port, cmd, args, @call_timeout)
    end
  catch
    :exit, _ -> {:error, :noproc}
  end

  defp ok({:ok, value}), do: value
  defp ok(_), do: nil

  defp safe(fun) do
    fun.()
  catch
    _, _ -> nil
  end
end
