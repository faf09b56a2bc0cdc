defmodule SelfHeal.Endpoint.Approvals do
  @moduledoc """
  `GET /approve`, `GET /skip`, `POST /approve`, `POST /skip`: where the
  signed Approve / Skip links of a notification land (`docs/endpoint.md`).

  The link is `<notify.links.base_url>/approve?t=<token>`. Opening it
  (`GET`) changes nothing: it checks the token with the port program
  (`link_verify`), shows the fix (`fix_get`) and a button. Only the
  button's `POST` (form field `t`, or `?t=`) approves or skips, through the
  port's `approve` / `skip` commands with `{"token": t}`: chat unfurlers,
  mail scanners and link previewers fetch links with `GET`, and must not
  approve a deploy by doing so.

  The token is the credential (HMAC-SHA256, expiring, bound to one action
  on one fix; the port checks it, this module only relays it). Answers:
  200 done or shown; 400 a missing or malformed token; 403 a token that is
  not valid, or valid for the other action; 404 no such fix; 409 the fix
  is no longer awaiting approval; 410 the link or the approval request has
  expired; 503 the port program is not reachable or has no link secret.
  Every page is `no-store`, `no-referrer` (the token is in the URL) and
  may not be framed.
  """

  alias SelfHeal.Endpoint.{Conn, FixView}
  alias SelfHeal.Endpoint.Conn.Request

  @max_form 4096
  @max_token 256
  @call_timeout 15_000

  @headers [
    {"content-type", "text/html; charset=utf-8"},
    {"cache-control", "no-store"},
    {"referrer-policy", "no-referrer"},
    {"x-content-type-options", "nosniff"},
    {"x-frame-options", "DENY"},
    {"content-security-policy",
     "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"}
  ]

  @doc """
  Answers a request on `/approve` or `/skip` (`action` is `"approve"` or
  `"skip"`) for the port server `server`; the same result as
  `SelfHeal.Endpoint.Handler.handle/2`.
  """
  @spec handle(Conn.t(), Request.t(), GenServer.server(), binary()) ::
          SelfHeal.Endpoint.Handler.result()
  def handle(conn, %Request{method: method} = req, server, action)
      when method in [:GET, :HEAD] do
    case query_token(req.query) do
      {:ok, token} ->
        if Conn.form_value(req.query, "full") == "1",
          do: full_patch(conn, req, server, action, token),
          else: show(conn, req, server, action, token)

      {:error, text} ->
        page(400, "Bad link", text, conn, req, false)
    end
  end

  def handle(conn, %Request{method: :POST} = req, server, action) do
    if is_integer(req.content_length) and req.content_length > @max_form do
      page(413, "Too large", "The form is larger than #{@max_form} bytes.", conn, req, true)
    else
      case Conn.read_body(conn, req, @max_form) do
        {:ok, body, conn, req} ->
          with {:ok, token} <- post_token(body, req.query) do
            decide(conn, req, server, action, token)
          else
            {:error, text} -> page(400, "Bad request", text, conn, req, false)
          end

        {:error, status, conn, req} ->
          page(status, "Bad request", Conn.reason_text(status), conn, req, true)
      end
    end
  end

  # ------------------------------------------------------------ GET

  defp show(conn, req, server, action, token) do
    case call(server, "link_verify", %{"token" => token}) do
      {:ok, %{"action" => ^action, "action_id" => action_id}} ->
        fix = fix(server, action_id)

        page(
          200,
          "#{label(action)} #{action_id}?",
          [details(fix, token, action, action_id), change(server, fix, action, token)],
          conn,
          req
        )

      {:ok, %{"action" => other}} ->
        page(403, "Wrong link", "This link is for #{escape(other)}, not #{action}.", conn, req)

      {:error, reason} ->
        refused(reason, conn, req)
    end
  end

  defp fix(server, "fix-" <> digits) do
    with {id, ""} when id > 0 <- Integer.parse(digits),
         {:ok, fix} <- call(server, "fix_get", %{"id" => id}) do
      fix
    else
      _ -> nil
    end
  end

  defp fix(_server, _action_id), do: nil

  # what is approved: the scrubbed diff, the validation facts, the gate's reasons
  defp change(_server, nil, _action, _token), do: []

  defp change(server, fix, action, token) do
    patch =
      case call(server, "fix_patch", %{"id" => fix["id"]}) do
        {:ok, patch} -> patch
        _ -> nil
      end

    [
      "<h2>The change</h2>",
      FixView.diff(patch, "#{action}?t=#{token}&full=1"),
      "<h2>Validation</h2>",
      FixView.validation(fix),
      "<h2>The gate</h2>",
      FixView.gate(fix)
    ]
  end

  # GET ...&full=1: the whole scrubbed patch, as text
  defp full_patch(conn, req, server, action, token) do
    with {:ok, %{"action" => ^action, "action_id" => "fix-" <> digits}} <-
           call(server, "link_verify", %{"token" => token}),
         {id, ""} <- Integer.parse(digits),
         {:ok, %{"patch" => text}} <-
           call(server, "fix_patch", %{"id" => id, "max_bytes" => 4_194_304}) do
      headers =
        [{"content-type", "text/plain; charset=utf-8"}] ++
          Enum.reject(@headers, fn {k, _} -> k == "content-type" end)

      {200, headers, text, conn, req, false}
    else
      {:ok, %{"action" => other}} when is_binary(other) ->
        page(403, "Wrong link", "This link is for #{escape(other)}, not #{action}.", conn, req)

      {:error, reason} ->
        refused(reason, conn, req)

      _ ->
        page(404, "No patch", "This fix has no patch.", conn, req)
    end
  end

  defp details(fix, token, action, action_id) do
    status = fix && fix["status"]

    rows =
      if fix do
        group = get_in(fix, ["input", "group"]) || %{}
        validation = fix["validation"] || %{}

        [
          {"Status", status},
          {"Severity", fix["severity"]},
          {"Service", group["service"]},
          {"Error", group["message"]},
          {"Request path", group["path"]},
          {"Root cause", get_in(fix, ["input", "root_cause"])},
          {"Confidence", number(fix["confidence"])},
          {"Changed lines", validation["changed_lines"]},
          {"What the agent did", agent(validation["agent_transcript"])},
          {"Waiting because", reasons(fix["decision"])},
          {"Pull request", get_in(fix, ["delivery", "pr_url"])},
          {"Link expires", expires(token)}
        ]
      else
        [{"Fix", action_id}, {"Link expires", expires(token)}]
      end

    list = [
      "<dl>",
      for({k, v} <- rows, v not in [nil, ""], do: ["<dt>", k, "</dt><dd>", cell(k, v), "</dd>"]),
      "</dl>"
    ]

    if fix != nil and status != "awaiting_approval" do
      [
        list,
        "<p>This fix is ",
        escape(to_string(status)),
        ": there is nothing to ",
        action,
        ".</p>"
      ]
    else
      [
        list,
        "<form method=\"post\" action=\"",
        action,
        "\"><input type=\"hidden\" name=\"t\" value=\"",
        escape(token),
        "\"><button type=\"submit\">",
        label(action),
        " ",
        escape(action_id),
        "</button></form><p>Nothing happens until the button is pressed.</p>"
      ]
    end
  end

  defp number(x) when is_number(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
  defp number(_x), do: nil

  # Its tool calls in order and its last word, or the end of what it
  # printed (an agent without a structured transcript); scrubbed by the port.
  defp agent(%{"entries" => entries} = t) when is_list(entries) do
    tools = for %{"kind" => "tool", "tool" => name} when is_binary(name) <- entries, do: name
    calls = if tools == [], do: nil, else: Enum.join(Enum.take(tools, 30), ", ")
    final = if is_binary(t["final"]) and t["final"] != "", do: String.slice(t["final"], 0, 300)

    output =
      for %{"kind" => "output", "text" => text} when is_binary(text) <- entries,
          do: text |> String.trim() |> String.slice(-300, 300)

    [calls, final || List.last(output)] |> Enum.reject(&(&1 in [nil, ""])) |> Enum.join(". ")
  end

  defp agent(_transcript), do: nil

  defp reasons(%{"reasons" => list}) when is_list(list),
    do: list |> Enum.filter(&is_binary/1) |> Enum.join("; ")

  defp reasons(_decision), do: nil

  defp cell("Pull request", "https://" <> _ = url),
    do: ["<a href=\"", escape(url), "\" rel=\"noreferrer\">", escape(url), "</a>"]

  defp cell(_key, value), do: escape(to_string(value))

  defp expires(token) do
    with [_action, _id, text, _mac] <- String.split(token, "."),
         {s, ""} <- Integer.parse(text),
         {:ok, dt} <- DateTime.from_unix(s) do
      dt |> DateTime.truncate(:second) |> DateTime.to_string()
    else
      _ -> nil
    end
  end

  # ------------------------------------------------------------ POST

  defp decide(conn, req, server, action, token) do
    by = "link:" <> peer(conn.peer)

    case call(server, action, %{"token" => token, "by" => by}) do
      {:ok, %{"fix_id" => id}} ->
        text =
          if action == "approve",
            do:
              "Fix #{id} is approved. It deploys as soon as the gate allows it (kill switch off, breaker closed, no other deploy running).",
            else: "Fix #{id} is skipped: it will not be deployed."

        page(200, "#{label(action)}d fix #{id}", escape(text), conn, req)

      {:error, reason} ->
        refused(reason, conn, req)
    end
  end

  # ------------------------------------------------------------ answers

  defp refused(%{code: code, message: message}, conn, req) do
    {status, title} =
      case code do
        "expired" -> {410, "Expired"}
        "bad_signature" -> {403, "Invalid link"}
        "bad_args" -> {400, "Bad link"}
        "not_found" -> {404, "No such fix"}
        "conflict" -> {409, "Already decided"}
        "unavailable" -> {503, "Unavailable"}
        _ -> {502, "Failed"}
      end

    page(status, title, escape(message), conn, req)
  end

  defp refused(_reason, conn, req) do
    {503, [{"retry-after", "5"} | @headers],
     html("Unavailable", "SelfHeal's port program is not reachable; try again shortly."), conn,
     req, false}
  end

  defp page(status, title, body, conn, req, close? \\ false),
    do: {status, @headers, html(title, body), conn, req, close?}

  defp html(title, body) do
    [
      "<!doctype html><html><head><meta charset=\"utf-8\">",
      "<meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\">",
      "<title>SelfHeal: ",
      escape(title),
      "</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}",
      "dt{font-weight:bold}dd{margin:0 0 .5em 0;white-space:pre-wrap;word-break:break-word}",
      "button{font-size:1.1em;padding:.4em 1.2em}",
      FixView.css(),
      "</style></head><body><h1>",
      escape(title),
      "</h1>",
      body,
      "</body></html>\n"
    ]
  end

  defp label("approve"), do: "Approve"
  defp label("skip"), do: "Skip"

  # ------------------------------------------------------------ tokens

  defp query_token(query), do: token(Conn.form_value(query, "t"))

  defp post_token(body, query) do
    case Conn.form_value(body, "t") do
      nil -> query_token(query)
      value -> token(value)
    end
  end

  defp token(nil), do: {:error, "The link has no token (t=)."}

  defp token(value) when byte_size(value) > @max_token,
    do: {:error, "The token is longer than #{@max_token} bytes."}

  defp token(value) do
    if value != "" and value =~ ~r/\A[A-Za-z0-9._-]+\z/,
      do: {:ok, value},
      else: {:error, "The token holds characters a link token never has."}
  end

  defp call(server, cmd, args) do
    SelfHeal.Port.call(server, cmd, args, @call_timeout)
  catch
    :exit, _ -> {:error, :noproc}
  end

  defp peer(nil), do: "unknown"

  defp peer(ip) do
    case :inet.ntoa(ip) do
      {:error, _} -> "unknown"
      text -> List.to_string(text)
    end
  end

  @doc false
  @spec escape(binary()) :: binary()
  defdelegate escape(text), to: FixView
end
