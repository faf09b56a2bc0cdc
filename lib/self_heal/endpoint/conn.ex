defmodule SelfHeal.Endpoint.Conn do
  @moduledoc """
  One HTTP/1.1 connection of `SelfHeal.Endpoint`: a plain process reading
  requests from a passive socket, parsing the head with
  `:erlang.decode_packet/3` (`http_bin`, `httph_bin`) and handing each
  request to `SelfHeal.Endpoint.Handler`, on one connection while it is
  kept alive.

  Every input is hostile, so everything is bounded:

    * the request line by `:max_request_line` (414), the head by
      `:max_header_bytes` and `:max_headers` (431);
    * a new connection must send its first byte within `:header_timeout`,
      a kept-alive one its next request within `:idle_timeout`, and the
      whole head must arrive within `:header_timeout` of its first byte
      (slow senders are cut);
    * a body must arrive within `:body_timeout`; a `Content-Length` over
      the limit is refused before any of the body is read, and a chunked
      body is refused as soon as its chunk sizes pass the limit, so no more
      than the limit is ever buffered;
    * malformed HTTP gets 400 and the connection is closed; ambiguous
      framing (`Content-Length` with `Transfer-Encoding`, two different
      lengths) is malformed.

  When the connection closes with a request body possibly unread, the
  write side is shut down first and the rest read and discarded for up to
  1 s (a lingering close), so the client reads the answer instead of a
  reset.
  """

  alias SelfHeal.Endpoint.Handler

  defstruct [
    :socket,
    :config,
    :peer,
    :source,
    buf: "",
    requests: 0,
    authenticated: false,
    probation: false
  ]

  @type t :: %__MODULE__{
          socket: :gen_tcp.socket(),
          config: SelfHeal.Endpoint.config(),
          peer: :inet.ip_address() | nil,
          source: term(),
          buf: binary(),
          requests: non_neg_integer(),
          authenticated: boolean(),
          probation: boolean()
        }

  defmodule Request do
    @moduledoc "A parsed request head, and whether its body has been read."
    defstruct method: nil,
              path: "/",
              query: "",
              version: {1, 1},
              keep_alive: true,
              content_length: nil,
              chunked: false,
              content_encoding: nil,
              content_type: nil,
              authorization: nil,
              origin: nil,
              site_key: nil,
              user_agent: nil,
              cookie: nil,
              host: nil,
              expect_continue: false,
              continue_sent: false,
              body: :unread

    @type t :: %__MODULE__{
            method: atom() | binary(),
            path: binary(),
            query: binary(),
            version: {non_neg_integer(), non_neg_integer()},
            keep_alive: boolean(),
            content_length: non_neg_integer() | nil,
            chunked: boolean(),
            content_encoding: binary() | nil,
            content_type: binary() | nil,
            authorization: binary() | nil,
            origin: binary() | nil,
            site_key: binary() | nil,
            user_agent: binary() | nil,
            cookie: binary() | nil,
            host: binary() | nil,
            expect_continue: boolean(),
            continue_sent: boolean(),
            body: :unread | :read | :broken
          }
  end

  @linger_ms 1000
  @linger_bytes 1_048_576
  @max_chunk_line 1024
  @max_trailer_bytes 8192

  @doc false
  @spec start_link(SelfHeal.Endpoint.config()) :: {:ok, pid()}
  def start_link(config), do: {:ok, :proc_lib.spawn_link(__MODULE__, :init, [config])}

  @doc false
  @spec init(SelfHeal.Endpoint.config()) :: :ok
  def init(config) do
    receive do
      {:socket, socket, peer, source, probation?} ->
        conn = %__MODULE__{
          socket: socket,
          config: config,
          peer: peer,
          source: source,
          probation: probation?
        }

        :atomics.add(config.counters, 1, 1)

        try do
          loop(conn)
        after
          # the acceptor counted this connection for its client
          :ets.update_counter(config.client_table, source, {2, -1})
          :atomics.sub(config.counters, 1, 1)
          if Process.get(:authenticated), do: :atomics.sub(config.counters, 2, 1)
        end
    after
      5000 -> :ok
    end
  end

  @doc """
  Whether the endpoint is under connection pressure: three quarters of
  `:max_connections` open. Then a connection that has not authenticated
  waits at most `:pressure_idle_timeout` for its next request, and is
  closed after each answer.
  """
  @spec pressure?(SelfHeal.Endpoint.config()) :: boolean()
  def pressure?(config), do: :atomics.get(config.counters, 1) * 4 >= config.max_connections * 3

  # Counted once per connection, for the acceptors' reserve.
  defp authenticate(%__MODULE__{authenticated: true} = conn), do: conn

  defp authenticate(conn) do
    :atomics.add(conn.config.counters, 2, 1)
    Process.put(:authenticated, true)
    %{conn | authenticated: true, probation: false}
  end

  # ------------------------------------------------------------ requests

  defp loop(conn) do
    case read_head(conn) do
      {:ok, req, conn} ->
        conn = if Handler.authenticated?(req, conn.config), do: authenticate(conn), else: conn
        respond(conn, req)

      {:error, status, conn} ->
        _ = send_response(conn, status, [], reason_text(status), :close)
        close(conn, true)

      :closed ->
        :gen_tcp.close(conn.socket)
    end
  end

  # A connection taken into the reserve (the acceptors saw too many
  # connections that have not authenticated) serves only a request with a
  # bearer token.
  defp respond(%__MODULE__{probation: true} = conn, _req) do
    headers = [{"retry-after", "1"}, {"content-type", "text/plain; charset=utf-8"}]
    _ = send_response(conn, 503, headers, "too many connections, retry later\n", :close)
    close(conn, true)
  end

  defp respond(conn, req) do
    {status, headers, body, conn, req, close?} = Handler.handle(conn, req)
    # under pressure only authenticated clients keep their connection
    close? = close? or (not conn.authenticated and pressure?(conn.config))
    keep? = req.keep_alive and not close? and body_done?(req)
    body = if req.method == :HEAD, do: {:head, body}, else: body

    connection =
      cond do
        not keep? -> :close
        req.version == {1, 0} -> :keep_alive
        true -> :default
      end

    case send_response(conn, status, headers, body, connection) do
      :ok when keep? ->
        # an idle process would hold its last body (up to max_body, a
        # refc binary) until its next collection; the live heap is tiny
        if conn.buf == "", do: :erlang.garbage_collect()
        loop(%{conn | requests: conn.requests + 1})

      :ok ->
        close(conn, req.body != :read)

      {:error, _} ->
        :gen_tcp.close(conn.socket)
    end
  end

  defp body_done?(%Request{body: :read}), do: true
  defp body_done?(%Request{body: :broken}), do: false
  defp body_done?(%Request{chunked: true}), do: false
  defp body_done?(%Request{content_length: n}), do: n in [nil, 0]

  # ------------------------------------------------------------ head

  defp read_head(conn) do
    cfg = conn.config

    wait =
      cond do
        conn.probation -> min(cfg.header_timeout, cfg.pressure_idle_timeout)
        conn.requests == 0 -> cfg.header_timeout
        true -> cfg.idle_timeout
      end

    # a pipelined request may already be buffered
    filled = if conn.buf == "", do: wait_request(conn, deadline(wait)), else: {:ok, conn}

    case filled do
      {:ok, conn} -> request_line(conn, deadline(conn.config.header_timeout), 0)
      {:error, _} -> :closed
    end
  end

  # Waits for the first byte of a request in steps of
  # :pressure_idle_timeout: a connection that has not authenticated is let
  # go as soon as the endpoint is under pressure.
  defp wait_request(conn, deadline) do
    step = min(remaining(deadline), conn.config.pressure_idle_timeout)

    case fill(conn, step) do
      {:error, :timeout} ->
        if remaining(deadline) == 0 or (not conn.authenticated and pressure?(conn.config)),
          do: {:error, :timeout},
          else: wait_request(conn, deadline)

      other ->
        other
    end
  end

  defp request_line(conn, deadline, blanks) do
    max = conn.config.max_request_line

    case :erlang.decode_packet(:http_bin, conn.buf, packet_size: max) do
      {:ok, {:http_request, method, uri, version}, rest} ->
        used = byte_size(conn.buf) - byte_size(rest)
        conn = %{conn | buf: rest}

        case split_uri(uri) do
          {:ok, path, query} ->
            req = %Request{method: method, path: path, query: query, version: version}
            headers(conn, req, deadline, 0, used)

          :error ->
            {:error, 400, conn}
        end

      # clients may send a stray CRLF after a body; a few are skipped
      {:ok, {:http_error, blank}, rest} when blank in ["\r\n", "\n"] and blanks < 4 ->
        request_line(%{conn | buf: rest}, deadline, blanks + 1)

      {:ok, _other, _rest} ->
        {:error, 400, conn}

      {:more, _} when byte_size(conn.buf) >= max ->
        {:error, 414, conn}

      {:more, _} ->
        with_more(conn, deadline, &request_line(&1, deadline, blanks))

      {:error, _} ->
        {:error, if(byte_size(conn.buf) >= max, do: 414, else: 400), conn}
    end
  end

  defp headers(conn, req, deadline, count, used) do
    cfg = conn.config

    case :erlang.decode_packet(:httph_bin, conn.buf, packet_size: cfg.max_header_bytes) do
      {:ok, :http_eoh, rest} ->
        finish_head(%{conn | buf: rest}, req)

      {:ok, {:http_header, _, name, _, value}, rest} ->
        used = used + byte_size(conn.buf) - byte_size(rest)
        conn = %{conn | buf: rest}

        cond do
          count + 1 > cfg.max_headers or used > cfg.max_header_bytes ->
            {:error, 431, conn}

          control?(value) ->
            {:error, 400, conn}

          true ->
            case put_header(req, name, String.trim(value)) do
              {:ok, req} -> headers(conn, req, deadline, count + 1, used)
              {:error, status} -> {:error, status, conn}
            end
        end

      {:ok, _error, _rest} ->
        {:error, 400, conn}

      {:more, _} ->
        if used + byte_size(conn.buf) > cfg.max_header_bytes,
          do: {:error, 431, conn},
          else: with_more(conn, deadline, &headers(&1, req, deadline, count, used))

      {:error, _} ->
        {:error, 431, conn}
    end
  end

  # Under pressure, a client that has not authenticated gets
  # :pressure_idle_timeout for its whole head instead of :header_timeout,
  # so slow senders cannot hold the connections.
  defp with_more(conn, deadline, next) do
    cfg = conn.config

    deadline =
      if conn.authenticated or not pressure?(cfg),
        do: deadline,
        else: min(deadline, deadline - cfg.header_timeout + cfg.pressure_idle_timeout)

    case fill(conn, remaining(deadline)) do
      {:ok, conn} -> next.(conn)
      {:error, :timeout} -> {:error, 408, conn}
      {:error, _} -> :closed
    end
  end

  # A field value may hold no control byte but horizontal tab (RFC 9110
  # 5.5): a bare CR in an Origin would otherwise be reflected into a header
  # of the answer.
  @controls Enum.map(Enum.to_list(0..8) ++ Enum.to_list(10..31) ++ [127], &<<&1>>)
  defp control?(value), do: :binary.match(value, @controls) != :nomatch

  defp split_uri({:abs_path, target}), do: split_target(target)
  defp split_uri({:absoluteURI, _scheme, _host, _port, target}), do: split_target(target)
  defp split_uri(_), do: :error

  defp split_target(target) do
    case :binary.split(target, "?") do
      [path] -> {:ok, path, ""}
      [path, query] -> {:ok, path, query}
    end
  end

  defp put_header(req, :"Content-Length", value) do
    case parse_length(value) do
      {:ok, n} when req.content_length in [nil, n] -> {:ok, %{req | content_length: n}}
      _ -> {:error, 400}
    end
  end

  defp put_header(req, :"Transfer-Encoding", value) do
    if String.downcase(value) == "chunked" and not req.chunked,
      do: {:ok, %{req | chunked: true}},
      else: {:error, 501}
  end

  defp put_header(req, :"Content-Encoding", value),
    do: {:ok, %{req | content_encoding: String.downcase(value)}}

  defp put_header(req, :"Content-Type", value), do: {:ok, %{req | content_type: value}}
  defp put_header(req, :Authorization, value), do: {:ok, %{req | authorization: value}}
  defp put_header(req, :"User-Agent", value), do: {:ok, %{req | user_agent: value}}
  defp put_header(req, "Origin", value), do: {:ok, %{req | origin: value}}
  defp put_header(req, "X-Selfheal-Key", value), do: {:ok, %{req | site_key: value}}

  defp put_header(req, :Cookie, value),
    do: {:ok, %{req | cookie: if(req.cookie, do: req.cookie <> "; " <> value, else: value)}}

  defp put_header(req, :Host, value) do
    if req.host == nil, do: {:ok, %{req | host: value}}, else: {:error, 400}
  end

  defp put_header(req, :Connection, value) do
    tokens = value |> String.downcase() |> String.split(",") |> Enum.map(&String.trim/1)

    cond do
      "close" in tokens -> {:ok, %{req | keep_alive: false}}
      "keep-alive" in tokens -> {:ok, %{req | keep_alive: :requested}}
      true -> {:ok, req}
    end
  end

  defp put_header(req, "Expect", value) do
    if String.downcase(value) == "100-continue",
      do: {:ok, %{req | expect_continue: true}},
      else: {:error, 417}
  end

  defp put_header(req, _name, _value), do: {:ok, req}

  defp parse_length(<<c, _::binary>> = value) when c in ?0..?9 and byte_size(value) <= 15 do
    case Integer.parse(value) do
      {n, ""} -> {:ok, n}
      _ -> :error
    end
  end

  defp parse_length(_), do: :error

  defp finish_head(conn, req) do
    keep_alive =
      case {req.version, req.keep_alive} do
        {_, false} -> false
        {{1, 1}, _} -> true
        {{1, 0}, :requested} -> true
        _ -> false
      end

    req = %{req | keep_alive: keep_alive}

    cond do
      req.version not in [{1, 0}, {1, 1}] -> {:error, 505, conn}
      req.version == {1, 1} and req.host == nil -> {:error, 400, conn}
      req.chunked and req.content_length != nil -> {:error, 400, conn}
      req.chunked and req.version == {1, 0} -> {:error, 400, conn}
      true -> {:ok, req, conn}
    end
  end

  # ------------------------------------------------------------ body

  @doc """
  Reads the request body, at most `limit` bytes: `{:ok, body, conn, req}`,
  or `{:error, status, conn, req}` (413 too large, 400 bad chunked
  framing, 408 too slow, 400 closed) after which the connection must close.
  Sends `100 Continue` first when the client asked for it.
  """
  @spec read_body(t(), Request.t(), pos_integer()) ::
          {:ok, binary(), t(), Request.t()} | {:error, 400 | 408 | 413, t(), Request.t()}
  def read_body(conn, %Request{body: :unread} = req, limit) do
    cond do
      req.chunked ->
        req = continue(conn, req)
        deadline = deadline(conn.config.body_timeout)

        case chunks(conn, deadline, limit, "", max(limit, 65_536)) do
          {:ok, body, conn} -> {:ok, body, conn, %{req | body: :read}}
          {:error, status, conn} -> {:error, status, conn, %{req | body: :broken}}
        end

      req.content_length in [nil, 0] ->
        {:ok, "", conn, %{req | body: :read}}

      req.content_length > limit ->
        {:error, 413, conn, req}

      true ->
        req = continue(conn, req)

        case exact(conn, req.content_length, deadline(conn.config.body_timeout)) do
          {:ok, body, conn} -> {:ok, body, conn, %{req | body: :read}}
          {:error, status, conn} -> {:error, status, conn, %{req | body: :broken}}
        end
    end
  end

  def read_body(conn, req, _limit), do: {:error, 400, conn, req}

  defp continue(conn, %Request{expect_continue: true, continue_sent: false} = req) do
    if conn.buf == "", do: :gen_tcp.send(conn.socket, "HTTP/1.1 100 Continue\r\n\r\n")
    %{req | continue_sent: true}
  end

  defp continue(_conn, req), do: req

  defp exact(conn, n, _deadline) when byte_size(conn.buf) >= n do
    <<body::binary-size(n), rest::binary>> = conn.buf
    {:ok, body, %{conn | buf: rest}}
  end

  defp exact(conn, n, deadline) do
    case :gen_tcp.recv(conn.socket, n - byte_size(conn.buf), remaining(deadline)) do
      {:ok, data} -> {:ok, IO.iodata_to_binary([conn.buf, data]), %{conn | buf: ""}}
      {:error, :timeout} -> {:error, 408, conn}
      {:error, _} -> {:error, 400, conn}
    end
  end

  # The data of every chunk is appended to one binary (grown in place), so
  # a body of tiny chunks holds one buffer, not a sub-binary (and the
  # received packet under it) per chunk. The framing (size lines and
  # CRLFs) may cost at most `framing` bytes more than the data: a body of
  # one-byte chunks is refused long before it is five times its size.
  defp chunks(conn, deadline, limit, acc, framing) do
    with {:ok, line, conn} <- line(conn, deadline, @max_chunk_line) do
      framing = framing - byte_size(line) - 4

      case chunk_size(line) do
        :error ->
          {:error, 400, conn}

        {:ok, 0} ->
          with {:ok, conn} <- trailers(conn, deadline, 0) do
            {:ok, acc, conn}
          end

        {:ok, size} when byte_size(acc) + size > limit or framing < 0 ->
          {:error, 413, conn}

        {:ok, size} ->
          with {:ok, data, conn} <- exact(conn, size, deadline),
               {:ok, "", conn} <- line(conn, deadline, 2) do
            chunks(conn, deadline, limit, <<acc::binary, data::binary>>, framing)
          else
            {:ok, _not_empty, conn} -> {:error, 400, conn}
            error -> error
          end
      end
    end
  end

  # "1a2b[;extension]": hex digits only (no sign, no spaces inside).
  defp chunk_size(line) do
    hex = line |> :binary.split(";") |> hd() |> String.trim_trailing()

    if hex != "" and byte_size(hex) <= 16 and hex?(hex),
      do: {:ok, String.to_integer(hex, 16)},
      else: :error
  end

  defp hex?(<<c, rest::binary>>) when c in ?0..?9 or c in ?a..?f or c in ?A..?F, do: hex?(rest)
  defp hex?(<<>>), do: true
  defp hex?(_), do: false

  defp trailers(conn, deadline, used) do
    case line(conn, deadline, @max_trailer_bytes - used) do
      {:ok, "", conn} -> {:ok, conn}
      {:ok, text, conn} -> trailers(conn, deadline, used + byte_size(text) + 2)
      error -> error
    end
  end

  # One line (without its CRLF or LF) of at most max bytes.
  defp line(conn, deadline, max) do
    case :binary.match(conn.buf, "\n") do
      {at, 1} when at <= max + 1 ->
        <<text::binary-size(at), ?\n, rest::binary>> = conn.buf
        {:ok, strip_cr(text), %{conn | buf: rest}}

      {_at, 1} ->
        {:error, 400, conn}

      :nomatch when byte_size(conn.buf) > max + 1 ->
        {:error, 400, conn}

      :nomatch ->
        case fill(conn, remaining(deadline)) do
          {:ok, conn} -> line(conn, deadline, max)
          {:error, :timeout} -> {:error, 408, conn}
          {:error, _} -> {:error, 400, conn}
        end
    end
  end

  defp strip_cr(text) do
    size = byte_size(text) - 1

    case text do
      <<head::binary-size(size), ?\r>> -> head
      _ -> text
    end
  end

  # ------------------------------------------------------------ socket

  defp fill(conn, timeout) do
    case :gen_tcp.recv(conn.socket, 0, timeout) do
      {:ok, data} when conn.buf == "" -> {:ok, %{conn | buf: data}}
      {:ok, data} -> {:ok, %{conn | buf: conn.buf <> data}}
      error -> error
    end
  end

  defp deadline(ms), do: System.monotonic_time(:millisecond) + ms
  defp remaining(deadline), do: max(deadline - System.monotonic_time(:millisecond), 0)

  @doc false
  @spec send_response(
          t(),
          pos_integer(),
          [{binary(), iodata()}],
          iodata() | {:head, iodata()},
          :close | :keep_alive | :default
        ) :: :ok | {:error, term()}
  def send_response(conn, status, headers, body, connection) do
    {body, length} =
      case body do
        {:head, body} -> {[], IO.iodata_length(body)}
        body -> {body, IO.iodata_length(body)}
      end

    connection =
      case connection do
        :close -> "connection: close\r\n"
        :keep_alive -> "connection: keep-alive\r\n"
        :default -> ""
      end

    :gen_tcp.send(conn.socket, [
      "HTTP/1.1 ",
      status_line(status),
      "\r\n",
      for(
        {name, value} <- headers,
        not control?(IO.iodata_to_binary(value)),
        do: [name, ": ", value, "\r\n"]
      ),
      "content-length: ",
      Integer.to_string(length),
      "\r\n",
      connection,
      "\r\n"
      | body
    ])
  end

  # Shuts the write side, then reads and drops what the client still sends
  # (at most 1 MiB for 1 s), so that it reads the answer, not a reset.
  defp close(conn, linger?) do
    if linger? do
      _ = :gen_tcp.shutdown(conn.socket, :write)
      drain(conn.socket, deadline(@linger_ms), @linger_bytes)
    end

    :gen_tcp.close(conn.socket)
  end

  defp drain(socket, deadline, budget) when budget > 0 do
    case :gen_tcp.recv(socket, 0, remaining(deadline)) do
      {:ok, data} -> drain(socket, deadline, budget - byte_size(data))
      {:error, _} -> :ok
    end
  end

  defp drain(_socket, _deadline, _budget), do: :ok

  @doc "The status line text of a status code."
  @spec status_line(pos_integer()) :: binary()
  def status_line(200), do: "200 OK"
  def status_line(202), do: "202 Accepted"
  def status_line(204), do: "204 No Content"
  def status_line(400), do: "400 Bad Request"
  def status_line(401), do: "401 Unauthorized"
  def status_line(403), do: "403 Forbidden"
  def status_line(404), do: "404 Not Found"
  def status_line(405), do: "405 Method Not Allowed"
  def status_line(408), do: "408 Request Timeout"
  def status_line(409), do: "409 Conflict"
  def status_line(410), do: "410 Gone"
  def status_line(413), do: "413 Content Too Large"
  def status_line(414), do: "414 URI Too Long"
  def status_line(415), do: "415 Unsupported Media Type"
  def status_line(417), do: "417 Expectation Failed"
  def status_line(429), do: "429 Too Many Requests"
  def status_line(431), do: "431 Request Header Fields Too Large"
  def status_line(500), do: "500 Internal Server Error"
  def status_line(501), do: "501 Not Implemented"
  def status_line(502), do: "502 Bad Gateway"
  def status_line(503), do: "503 Service Unavailable"
  def status_line(505), do: "505 HTTP Version Not Supported"
  def status_line(status), do: Integer.to_string(status) <> " "

  @doc """
  The first value of `key` in an `application/x-www-form-urlencoded`
  string (a query string or a form body); nil when absent or malformed.
  """
  @spec form_value(binary(), binary()) :: binary() | nil
  def form_value(text, key) do
    Enum.find_value(:binary.split(text, "&", [:global]), fn pair ->
      case :binary.split(pair, "=") do
        [^key, value] ->
          try do
            URI.decode_www_form(value)
          rescue
            ArgumentError -> nil
          end

        _ ->
          nil
      end
    end)
  end

  @doc false
  @spec reason_text(pos_integer()) :: binary()
  def reason_text(status) do
    [_code | words] = String.split(status_line(status), " ")
    Enum.join(words, " ") <> "\n"
  end
end
