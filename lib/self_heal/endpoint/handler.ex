defmodule SelfHeal.Endpoint.Handler do
  @moduledoc """
  The routes of `SelfHeal.Endpoint`: `POST /ingest`, `POST /capture`,
  `OPTIONS /capture`, `GET /healthz`, with `:approvals` set `GET` /
  `POST` on `/approve` and `/skip` (`SelfHeal.Endpoint.Approvals`), and
  with `:operator_token_env` set `/self_heal/...` and `GET /metrics`
  (`SelfHeal.Endpoint.Dashboard`).

  A request is checked cheapest first: route, declared length (413 before
  any of the body is read), credentials (401), origin (403), encoding
  (415), rate limit (429); only then is the body read, decompressed,
  decoded and handed to the collector (503 when it is overloaded).

  `handle/2` returns `{status, headers, body, conn, request, close?}`;
  `SelfHeal.Endpoint.Conn` sends the answer and keeps the connection only
  when the request's body was consumed.
  """

  alias SelfHeal.{Collector, Event, Native}
  alias SelfHeal.Endpoint.{Approvals, Conn, Dashboard, JSONScan, RateLimit, Resume}
  alias SelfHeal.Endpoint.Conn.Request

  require Logger

  @json [{"content-type", "application/json"}]
  @text [{"content-type", "text/plain; charset=utf-8"}]
  @routes %{"/ingest" => "POST", "/capture" => "POST, OPTIONS", "/healthz" => "GET, HEAD"}
  @capture_meta ["url", "user_agent", "release", "kind"]
  @max_level 16

  @type result ::
          {pos_integer(), [{binary(), iodata()}], iodata(), Conn.t(), Request.t(), boolean()}

  @doc "Answers one request (see the module documentation)."
  @spec handle(Conn.t(), Request.t()) :: result()
  def handle(conn, req) do
    route(conn, req, req.method, req.path)
  rescue
    exception ->
      Logger.error(
        "SelfHeal.Endpoint #{inspect(req.method)} #{req.path}: " <>
          Exception.format(:error, exception, __STACKTRACE__),
        domain: [:self_heal]
      )

      {500, @text, "internal error\n", conn, req, true}
  end

  # cheap, but limited like the rest: a flood of health checks is not
  # free of the rate limit
  defp route(conn, req, method, "/healthz") when method in [:GET, :HEAD] do
    with {:ok, conn, req} <- rate(conn, req, []) do
      {200, @text, "ok\n", conn, req, false}
    else
      reply -> answer(reply, conn, req)
    end
  end

  defp route(conn, req, :POST, "/ingest"), do: ingest(conn, req)
  defp route(conn, req, :POST, "/capture"), do: capture(conn, req)
  defp route(conn, req, :OPTIONS, "/capture"), do: preflight(conn, req)

  defp route(%Conn{config: %{approvals: server}} = conn, req, method, path)
       when server != nil and path in ["/approve", "/skip"] do
    if method in [:GET, :HEAD, :POST] do
      with {:ok, conn, req} <- rate(conn, req, []) do
        Approvals.handle(conn, req, server, binary_part(path, 1, byte_size(path) - 1))
      else
        reply -> answer(reply, conn, req)
      end
    else
      {405, [{"allow", "GET, HEAD, POST"} | @text], "method not allowed\n", conn, req, false}
    end
  end

  # the operators' pages and metrics (never with an ingest token or a site key)
  defp route(%Conn{config: %{operator: op}} = conn, req, _method, path)
       when op != nil and (path == "/metrics" or path == "/self_heal") do
    operator(conn, req)
  end

  defp route(%Conn{config: %{operator: op}} = conn, req, _method, "/self_heal/" <> _)
       when op != nil,
       do: operator(conn, req)

  defp route(conn, req, _method, path) do
    case @routes do
      %{^path => allow} ->
        {405, [{"allow", allow} | @text], "method not allowed\n", conn, req, false}

      _ ->
        {404, @text, "not found\n", conn, req, false}
    end
  end

  defp operator(conn, req) do
    case rate(conn, req, []) do
      {:ok, conn, req} -> Dashboard.handle(conn, req)
      reply -> answer(reply, conn, req)
    end
  end

  # ------------------------------------------------------------ /ingest

  defp ingest(conn, req) do
    cfg = conn.config

    with :ok <- declared_length(req, cfg),
         :ok <- bearer(req, cfg),
         :ok <- ingest_media(req) do
      accept(
        conn,
        req,
        [],
        full_limits(cfg),
        &decode_ingest(&1, req.content_type, &2),
        &fluent_bit_event/1
      )
    else
      reply -> answer(reply, conn, req)
    end
  end

  # The common part of /ingest and /capture once the credentials are
  # checked: encoding, rate limit, body, overload, counting, decoding and
  # admission slice by slice (`admit/6`).
  defp accept(conn, req, cors, limits, decode, to_event) do
    with :ok <- encoding(req),
         {:ok, conn, req} <- rate(conn, req, cors),
         {:ok, body, conn, req} <- body(conn, req, cors, limits) do
      with false <- overloaded?(conn.config),
           {:ok, lines} <- decode.(body, limits.events),
           {:ok, records} <- count(lines, limits, cors) do
        admit(conn, req, lines, records, limits, cors, to_event)
      else
        true -> overloaded(conn, req, cors)
        {:reply, status, headers, text, _read} -> {status, headers, text, conn, req, false}
      end
    else
      reply -> answer(reply, conn, req)
    end
  end

  # What one request may cost: bytes on the wire and inflated, records.
  defp full_limits(cfg) do
    %{
      body: cfg.max_body,
      inflated: cfg.max_decompressed,
      events: cfg.max_events,
      class: :authenticated
    }
  end

  defp capture_limits(cfg) do
    %{
      body: min(cfg.max_capture_body, cfg.max_body),
      inflated: min(cfg.max_capture_body, cfg.max_decompressed),
      events: min(cfg.max_capture_events, cfg.max_events),
      class: :anonymous
    }
  end

  # Records are counted in C before any is decoded: a body of more than
  # the request's budget is refused whole (413), before the work.
  defp count(lines, limits, cors) do
    case Native.count_json_lines(lines, limits.events) do
      n when n > limits.events -> too_many(limits, cors)
      n -> {:ok, n}
    end
  end

  defp too_many(limits, cors) do
    reply(413, cors ++ @text, "more than #{limits.events} records in one request\n", :read)
  end

  # Admission in events. The body is decoded a slice (:admit_slice
  # records) at a time and each slice handed to the collector when it has
  # room: the first waits up to :overload_wait, later ones up to
  # :admit_wait, so a chunk larger than the collector's queue is taken as
  # it drains instead of being refused forever. A chunk left half taken
  # (503) keeps a resume point under its digest and its client, so
  # Fluent Bit's retry of the same chunk continues after what was taken.
  defp admit(conn, req, lines, records, limits, cors, to_event) do
    cfg = conn.config
    client = conn.source
    resume = if records > cfg.admit_slice, do: {client, :crypto.hash(:sha256, lines)}

    start =
      Resume.take(cfg.resume_table, resume) ||
        %{next: 0, accepted: 0, malformed: 0, lines: 0, error: nil}

    admit_slices(
      conn,
      req,
      lines,
      start,
      resume,
      {limits.class, client},
      cors,
      to_event,
      cfg.overload_wait
    )
  end

  defp admit_slices(conn, req, lines, acc, resume, source, cors, to_event, wait) do
    cfg = conn.config

    if acc.next >= byte_size(lines) do
      admitted(conn, req, acc, cors)
    else
      decoded = Native.decode_json_lines(lines, acc.next, cfg.admit_slice)
      events = Enum.map(decoded.events, to_event)
      deadline = System.monotonic_time(:millisecond) + wait

      case events == [] or room(cfg.collector, events, source, deadline) do
        true ->
          acc = %{
            next: decoded.next,
            accepted: acc.accepted + length(events),
            malformed: acc.malformed + decoded.malformed,
            lines: acc.lines + length(events) + decoded.malformed + decoded.blank_lines,
            error: acc.error || first_error(decoded.errors, acc.lines)
          }

          admit_slices(conn, req, lines, acc, resume, source, cors, to_event, cfg.admit_wait)

        false ->
          if acc.accepted > 0, do: Resume.put(cfg.resume_table, resume, acc, cfg.max_resumes)
          overloaded(conn, req, cors)
      end
    end
  end

  defp first_error([{line, reason} | _], before), do: {line + before, reason}
  defp first_error([], _before), do: nil

  # Hands events to the collector when its queue has room for them,
  # waiting (sleeping) until the deadline; refusals while waiting are not
  # counted as shed, only the last one.
  defp room(collector, events, source, deadline) do
    last? = System.monotonic_time(:millisecond) >= deadline

    case Collector.ingest(collector, events, source: source, count_shed: last?) do
      :ok ->
        true

      {:error, :overloaded} when last? ->
        false

      {:error, :overloaded} ->
        Process.sleep(2)
        room(collector, events, source, deadline)
    end
  end

  defp admitted(conn, req, %{accepted: 0, malformed: malformed, error: {line, reason}}, cors)
       when malformed > 0 do
    body = [
      "{\"accepted\":0,\"malformed\":",
      Integer.to_string(malformed),
      ",\"error\":",
      json_string("line #{line}: #{reason}"),
      "}\n"
    ]

    {400, cors ++ @json, body, conn, req, false}
  end

  defp admitted(conn, req, acc, cors) do
    body = [
      "{\"accepted\":",
      Integer.to_string(acc.accepted),
      ",\"malformed\":",
      Integer.to_string(acc.malformed),
      "}\n"
    ]

    {202, cors ++ @json, body, conn, req, false}
  end

  defp answer({:reply, status, headers, text, close?}, conn, req),
    do: {status, headers, text, conn, req, close?}

  defp answer({:reply, status, headers, text, conn, req}, _conn, _req),
    do: {status, headers, text, conn, req, false}

  defp ingest_media(%Request{content_type: type}) when is_binary(type) do
    if String.contains?(String.downcase(type), "msgpack"),
      do: reply(415, @text, "use Format json_lines or json\n", true),
      else: :ok
  end

  defp ingest_media(_req), do: :ok

  # Format json_lines (one object a line), json (an array) or json_stream
  # (objects one after the other, sent as application/json): the body as
  # json_lines, at most `max` + 1 elements cut out of an array or stream.
  defp decode_ingest(body, content_type, max) do
    case first_byte(body) do
      ?[ ->
        case JSONScan.array_elements(body, max + 1) do
          {:ok, elements} -> {:ok, IO.iodata_to_binary(JSONScan.to_lines(elements))}
          {:error, reason} -> reply(400, @text, "malformed JSON array: #{reason}\n", :read)
        end

      ?{ when is_binary(content_type) ->
        if json_media?(content_type) do
          # a record broken midway leaves the scan nowhere to resume: then
          # the body is read line by line, as json_lines
          case JSONScan.stream_values(body, max + 1) do
            {:ok, values} -> {:ok, IO.iodata_to_binary(JSONScan.to_lines(values))}
            {:error, _} -> {:ok, body}
          end
        else
          {:ok, body}
        end

      _ ->
        {:ok, body}
    end
  end

  defp json_media?(content_type) do
    content_type |> String.downcase() |> String.starts_with?("application/json")
  end

  defp fluent_bit_event(map) do
    {level, metadata} = level(map.level, map.metadata)
    decoded_event(map, :fluent_bit, level, metadata)
  end

  # An event from one decoded record (`decode_json_lines/3`). A record
  # without a stack trace field whose message holds a whole trace (a `log`
  # joined by Fluent Bit's multiline parsers) is taken apart by
  # `SelfHeal.Stack`, the same rules `SelfHeal.Tail` joins lines with.
  defp decoded_event(map, source, level, metadata) do
    {message, type, stacktrace} =
      SelfHeal.Stack.from_record(map.message, map.type, map.stacktrace)

    %Event{
      source: source,
      timestamp: map.timestamp || Event.now(),
      level: level,
      service: map.service,
      type: type,
      stacktrace: bounded(stacktrace),
      metadata: metadata
    }
    |> put_message(message)
  end

  # ------------------------------------------------------------ /capture

  defp capture(conn, req) do
    cfg = conn.config

    with :ok <- declared_length(req, cfg),
         {:ok, cors} <- capture_auth(req, cfg) do
      user_agent = req.user_agent

      limits = if req.authorization, do: full_limits(cfg), else: capture_limits(cfg)

      accept(
        conn,
        req,
        cors,
        limits,
        &decode_capture(&1, &2, cors),
        &capture_event(&1, user_agent, site_service(req, cfg))
      )
    else
      reply -> answer(reply, conn, req)
    end
  end

  # A bearer token (servers, SDKs), else the site's public key from the
  # query string or X-SelfHeal-Key with an Origin it allows (browsers).
  # Returns the CORS headers of the answer.
  defp capture_auth(%Request{authorization: auth} = req, cfg) when is_binary(auth) do
    with :ok <- bearer(req, cfg), do: {:ok, allow_origin(req.origin, any_origins(cfg))}
  end

  defp capture_auth(req, cfg) do
    case site_key(req) do
      nil ->
        reply(401, @text, "missing credentials\n", true)

      key ->
        case key_origins(cfg, key) do
          nil ->
            reply(401, @text, "unknown key\n", true)

          origins ->
            cond do
              req.origin == nil -> {:ok, []}
              origin_allowed?(req.origin, origins) -> {:ok, cors_headers(req.origin)}
              true -> reply(403, @text, "origin not allowed for this key\n", true)
            end
        end
    end
  end

  defp decode_capture(body, max, cors) do
    case JSONScan.capture_events(body, max + 1) do
      {:ok, elements} ->
        {:ok, IO.iodata_to_binary(JSONScan.to_lines(elements))}

      {:error, reason} ->
        reply(400, cors ++ @text, "malformed JSON: #{reason}\n", :read)
    end
  end

  defp capture_event(map, user_agent, site_service) do
    metadata = Map.take(map.metadata, @capture_meta)

    metadata =
      if user_agent && not Map.has_key?(metadata, "user_agent"),
        do:
          Map.put(
            metadata,
            "user_agent",
            binary_part(user_agent, 0, min(byte_size(user_agent), 1024))
          ),
        else: metadata

    # the site key's service, never the page's own claim: a public key
    # must not file errors under a service it does not name
    %{decoded_event(map, :http, :error, metadata) | service: site_service}
  end

  # A site key's configured service; nil with a bearer token or a key
  # without one.
  defp site_service(%Request{authorization: auth}, _cfg) when is_binary(auth), do: nil

  defp site_service(req, cfg) do
    case site_key(req) do
      nil ->
        nil

      key ->
        presented = digest(key)

        Enum.reduce(Map.get(cfg, :site_services, []), nil, fn {digest, service}, found ->
          if equal?(digest, presented) and found == nil, do: service, else: found
        end)
    end
  end

  # ------------------------------------------------------------ OPTIONS

  defp preflight(conn, req) do
    origins =
      case site_key(req) do
        nil -> any_origins(conn.config)
        key -> key_origins(conn.config, key) || []
      end

    if is_binary(req.origin) and origin_allowed?(req.origin, origins) do
      headers =
        cors_headers(req.origin) ++
          [
            {"access-control-allow-methods", "POST"},
            {"access-control-allow-headers", "Content-Type, X-SelfHeal-Key, Authorization"},
            {"access-control-max-age", Integer.to_string(conn.config.cors_max_age)}
          ]

      {204, headers, "", conn, req, false}
    else
      {403, [{"vary", "Origin"} | @text], "origin not allowed\n", conn, req, false}
    end
  end

  defp cors_headers(origin), do: [{"access-control-allow-origin", origin}, {"vary", "Origin"}]

  defp allow_origin(nil, _origins), do: []

  defp allow_origin(origin, origins) do
    if origin_allowed?(origin, origins), do: cors_headers(origin), else: []
  end

  defp origin_allowed?(_origin, :any), do: true

  defp origin_allowed?(origin, origins) when is_list(origins) do
    origin = origin |> String.trim_trailing("/") |> String.downcase()
    origin in origins
  end

  defp any_origins(cfg) do
    Enum.reduce_while(cfg.site_keys, [], fn
      {_digest, :any}, _acc -> {:halt, :any}
      {_digest, origins}, acc -> {:cont, origins ++ acc}
    end)
  end

  # ------------------------------------------------------------ credentials

  @doc "Whether the request carries one of the endpoint's bearer tokens."
  @spec authenticated?(Request.t(), SelfHeal.Endpoint.config()) :: boolean()
  def authenticated?(%Request{authorization: nil}, _cfg), do: false
  def authenticated?(req, cfg), do: bearer(req, cfg) == :ok

  defp bearer(req, cfg) do
    presented =
      case req.authorization do
        <<scheme::binary-size(7), token::binary>> when token != "" ->
          if String.downcase(scheme) == "bearer ", do: String.trim(token)

        _ ->
          nil
      end

    # every configured token is compared, whether one matched or not
    if presented != nil and
         Enum.reduce(cfg.tokens, false, &(equal?(&1, digest(presented)) or &2)),
       do: :ok,
       else: reply(401, [{"www-authenticate", "Bearer"} | @text], "unauthorized\n", true)
  end

  defp site_key(req) do
    Conn.form_value(req.query, "key") || req.site_key
  end

  # The origins of a site key, nil when unknown; every key is compared.
  defp key_origins(cfg, key) do
    presented = digest(key)

    Enum.reduce(cfg.site_keys, nil, fn {digest, origins}, found ->
      if equal?(digest, presented) and found == nil, do: origins, else: found
    end)
  end

  defp digest(value), do: :crypto.hash(:sha256, value)

  # constant time for equal lengths (both are SHA-256 digests)
  defp equal?(a, b), do: :crypto.hash_equals(a, b)

  # ------------------------------------------------------------ limits

  defp declared_length(req, cfg) do
    if is_integer(req.content_length) and req.content_length > cfg.max_body,
      do: reply(413, @text, "body larger than #{cfg.max_body} bytes\n", true),
      else: :ok
  end

  defp encoding(%Request{content_encoding: enc}) when enc in [nil, "identity", "gzip", "x-gzip"],
    do: :ok

  defp encoding(_req), do: reply(415, @text, "unsupported content-encoding\n", true)

  # Over the limit: 429 with Retry-After; the body is read and dropped when
  # it is small enough, so the connection stays usable.
  defp rate(conn, req, cors) do
    cfg = conn.config

    case RateLimit.check(cfg.rate_table, conn.source, cfg.rate_limit, cfg.max_sources) do
      :ok ->
        {:ok, conn, req}

      {:error, ms} ->
        headers = [{"retry-after", Integer.to_string(div(ms + 999, 1000))} | cors] ++ @text

        case Conn.read_body(conn, req, cfg.max_body) do
          {:ok, _dropped, conn, req} -> {:reply, 429, headers, "rate limited\n", conn, req}
          {:error, _status, _conn, _req} -> reply(429, headers, "rate limited\n", true)
        end
    end
  end

  defp body(conn, req, cors, limits) do
    case Conn.read_body(conn, req, limits.body) do
      {:ok, body, conn, req} ->
        case decompress(body, req.content_encoding, limits.inflated) do
          {:ok, body} ->
            {:ok, IO.iodata_to_binary(body), conn, req}

          {:error, :too_large} ->
            {:reply, 413, cors ++ @text,
             "decompressed body larger than #{limits.inflated} bytes\n", conn, req}

          {:error, :bad_gzip} ->
            {:reply, 400, cors ++ @text, "malformed gzip body\n", conn, req}
        end

      {:error, 413, _conn, _req} ->
        reply(413, cors ++ @text, "body larger than #{limits.body} bytes\n", true)

      {:error, status, _conn, _req} ->
        reply(status, cors ++ @text, Conn.reason_text(status), true)
    end
  end

  @doc """
  Inflates a gzip body step by step with `:zlib.safeInflate/2`, stopping
  as soon as the output passes `max` bytes (a zip bomb costs at most that
  much memory). Per RFC 1952 a body may hold several members, one after
  the other: all are inflated. A member cut short, or bytes after the last
  member that are not one, is `:bad_gzip`.
  """
  @spec decompress(binary(), binary() | nil, pos_integer()) ::
          {:ok, binary()} | {:error, :too_large | :bad_gzip}
  def decompress(body, encoding, _max) when encoding in [nil, "identity"], do: {:ok, body}

  def decompress(body, _gzip, max) do
    z = :zlib.open()

    try do
      # :reset: at the end of a member, the next one starts
      :ok = :zlib.inflateInit(z, 31, :reset)

      with {:ok, out} <- inflate(z, :zlib.safeInflate(z, body), [], 0, max) do
        # raises when the last member is not complete
        :ok = :zlib.inflateEnd(z)
        {:ok, out}
      end
    rescue
      ErlangError -> {:error, :bad_gzip}
    after
      :zlib.close(z)
    end
  end

  defp inflate(z, {status, out}, acc, size, max) do
    size = size + IO.iodata_length(out)

    cond do
      size > max -> {:error, :too_large}
      status == :finished -> {:ok, IO.iodata_to_binary(Enum.reverse([out | acc]))}
      status == :continue -> inflate(z, :zlib.safeInflate(z, []), [out | acc], size, max)
      true -> {:error, :bad_gzip}
    end
  end

  defp inflate(_z, _other, _acc, _size, _max), do: {:error, :bad_gzip}

  # ------------------------------------------------------------ events

  defp overloaded(conn, req, cors) do
    {503, [{"retry-after", "1"} | cors] ++ @text, "overloaded, retry later\n", conn, req, false}
  end

  # Backpressure before the body is decoded. While the collector's ingest
  # queue is over half full, the request waits (sleeping, so the collector
  # gets the CPU) up to :overload_wait ms for it to drain; a burst then
  # costs latency, not a refusal. Still (nearly) full after that: 503
  # without decoding, because decoding is most of an ingest's CPU and
  # under overload that work would be thrown away while the collector
  # starves. Reads the counter SelfHeal.Collector.ingest/2 keeps (the
  # events taken and not yet processed); ingest/2 still decides.
  defp overloaded?(cfg) do
    case :persistent_term.get({Collector, cfg.collector}, nil) do
      {pending, max_pending} ->
        deadline = System.monotonic_time(:millisecond) + cfg.overload_wait
        wait_for_room(pending, max_pending, deadline)

      _ ->
        true
    end
  end

  defp wait_for_room(pending, max_pending, deadline) do
    queued = :atomics.get(pending, 1)

    cond do
      queued * 2 < max_pending ->
        false

      System.monotonic_time(:millisecond) >= deadline ->
        queued * 10 >= max_pending * 9

      true ->
        Process.sleep(2)
        wait_for_room(pending, max_pending, deadline)
    end
  end

  defp put_message(event, message) do
    {message, cut?} = Event.bounded_text(message)
    %{event | message: message, truncated: cut?}
  end

  defp bounded(nil), do: nil
  defp bounded(text), do: text |> Event.bounded_text() |> elem(0)

  # Levels become logger levels; an unknown one is kept in metadata and the
  # event counts as an error (the endpoint receives errors). The usual
  # spellings match without a downcase.
  @levels %{
    "emergency" => :emergency,
    "emerg" => :emergency,
    "alert" => :alert,
    "critical" => :critical,
    "crit" => :critical,
    "fatal" => :critical,
    "panic" => :critical,
    "error" => :error,
    "err" => :error,
    "severe" => :error,
    "e" => :error,
    "warning" => :warning,
    "warn" => :warning,
    "w" => :warning,
    "notice" => :notice,
    "info" => :info,
    "information" => :info,
    "informational" => :info,
    "i" => :info,
    "debug" => :debug,
    "trace" => :debug,
    "verbose" => :debug,
    "d" => :debug
  }

  for {text, level} <- @levels,
      spelling <- Enum.uniq([text, String.upcase(text), String.capitalize(text)]) do
    defp known_level(unquote(spelling)), do: unquote(level)
  end

  defp known_level(_), do: nil

  defp level(nil, metadata), do: {:error, metadata}

  defp level(text, metadata) do
    known =
      known_level(text) ||
        (byte_size(text) <= @max_level and known_level(String.downcase(text)))

    if known,
      do: {known, metadata},
      else: {:error, Map.put(metadata, "level", bounded(text))}
  end

  defp first_byte(<<c, rest::binary>>) when c in [?\s, ?\t, ?\r, ?\n], do: first_byte(rest)
  defp first_byte(<<c, _::binary>>), do: c
  defp first_byte(<<>>), do: nil

  # The reason may quote the client's bytes: printable ASCII only, then
  # the project's JSON codec.
  defp json_string(text) do
    SelfHeal.JSON.encode!(for <<c <- text>>, into: "", do: <<printable(c)>>)
  end

  defp printable(c) when c < 0x20 or c > 0x7E, do: ??
  defp printable(c), do: c

  # An early answer. close? true: the body was not read, so the connection
  # closes after it; :read means the body was consumed.
  defp reply(status, headers, text, :read), do: {:reply, status, headers, text, false}
  defp reply(status, headers, text, close?), do: {:reply, status, headers, text, close?}
end
