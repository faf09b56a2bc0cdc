defmodule SelfHeal.EndpointTest do
  # SelfHeal.Endpoint over real sockets on 127.0.0.1: each test starts its
  # own collector and endpoint (port 0) and talks raw HTTP/1.1 with
  # :gen_tcp, so every byte on the wire is the test's choice.
  use ExUnit.Case, async: true

  alias SelfHeal.{Collector, Endpoint}

  @token "fluent-bit-token-0123456789"
  @site_key "pk_live_shop"
  @origin "https://shop.example"

  # ------------------------------------------------------------ helpers

  defp start(opts \\ []) do
    id = System.unique_integer([:positive])
    collector = :"endpoint_test_collector_#{id}"
    endpoint = :"endpoint_test_endpoint_#{id}"
    {collector_opts, opts} = Keyword.pop(opts, :collector_opts, [])

    start_supervised!(
      {Collector, [name: collector, flush_ms: 5] ++ collector_opts},
      id: collector
    )

    start_supervised!(
      {Endpoint,
       Keyword.merge(
         [
           name: endpoint,
           port: 0,
           tokens: [@token],
           site_keys: %{@site_key => %{origins: [@origin]}},
           collector: collector
         ],
         opts
       )}
    )

    %{collector: collector, endpoint: endpoint, port: Endpoint.port(endpoint)}
  end

  defp connect(%{port: port}) do
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false])
    socket
  end

  defp request(ctx, method, path, headers, body \\ "") do
    socket = connect(ctx)
    :ok = :gen_tcp.send(socket, request_bytes(method, path, headers, body))
    response = read_response(socket)
    :gen_tcp.close(socket)
    response
  end

  defp request_bytes(method, path, headers, body) do
    headers =
      if body != "" and not List.keymember?(headers, "transfer-encoding", 0),
        do: [{"content-length", Integer.to_string(byte_size(body))} | headers],
        else: headers

    [
      "#{method} #{path} HTTP/1.1\r\nhost: 127.0.0.1\r\n",
      Enum.map(headers, fn {k, v} -> [k, ": ", v, "\r\n"] end),
      "\r\n",
      body
    ]
  end

  # {status, headers (lowercase names), body}, or :closed; bytes after the
  # answer (pipelining) are kept for the next call
  defp read_response(socket), do: read_response(socket, Process.delete({:buf, socket}) || "")

  defp read_response(socket, buf) do
    case :erlang.decode_packet(:http_bin, buf, []) do
      {:ok, {:http_response, _version, status, _reason}, rest} ->
        read_headers(socket, rest, status, %{})

      {:more, _} ->
        case :gen_tcp.recv(socket, 0, 5000) do
          {:ok, data} -> read_response(socket, buf <> data)
          {:error, _} -> :closed
        end
    end
  end

  defp read_headers(socket, buf, status, headers) do
    case :erlang.decode_packet(:httph_bin, buf, []) do
      {:ok, {:http_header, _, _name, raw, value}, rest} ->
        read_headers(socket, rest, status, Map.put(headers, String.downcase(raw), value))

      {:ok, :http_eoh, rest} ->
        length = String.to_integer(Map.get(headers, "content-length", "0"))
        {:ok, data} = read_exact(socket, rest, length)
        <<body::binary-size(length), rest::binary>> = data
        if rest != "", do: Process.put({:buf, socket}, rest)
        {status, headers, body}

      {:more, _} ->
        {:ok, data} = :gen_tcp.recv(socket, 0, 5000)
        read_headers(socket, buf <> data, status, headers)
    end
  end

  defp read_exact(_socket, buf, n) when byte_size(buf) >= n, do: {:ok, buf}

  defp read_exact(socket, buf, n) do
    {:ok, data} = :gen_tcp.recv(socket, n - byte_size(buf), 5000)
    {:ok, buf <> data}
  end

  defp closed?(socket) do
    case :gen_tcp.recv(socket, 0, 2000) do
      {:error, :closed} -> true
      {:error, :econnreset} -> true
      _ -> false
    end
  end

  defp bearer, do: {"authorization", "Bearer " <> @token}

  defp json_lines(records), do: Enum.map_join(records, "", &(&1 <> "\n"))

  defp groups(%{collector: collector}), do: Collector.groups(collector)

  # ------------------------------------------------------------ /ingest

  test "json_lines: a malformed line in the middle is counted, the others are grouped" do
    ctx = start()

    body =
      json_lines([
        ~s({"date":1700000000.5,"log":"connection to 10.0.0.7:5432 refused after 30 ms","level":"error","kubernetes":{"container_name":"api","pod_name":"api-1"}}),
        ~s({"date":1700000001.5,"log":"connection to 10.0.0.9:5432 refused),
        ~s({"date":1700000002.5,"log":"connection to 10.0.0.8:5432 refused after 41 ms","level":"error","kubernetes":{"container_name":"api","pod_name":"api-2"}})
      ])

    {202, headers, reply} = request(ctx, "POST", "/ingest", [bearer()], body)
    assert headers["content-type"] == "application/json"
    assert reply == ~s({"accepted":2,"malformed":1}\n)

    assert [group] = groups(ctx)
    assert group.count == 2
    assert group.services == ["api"]
    sample = group.sample
    assert sample.source == :fluent_bit
    assert sample.level == :error
    assert sample.service == "api"
    assert sample.message == "connection to 10.0.0.7:5432 refused after 30 ms"
    assert sample.timestamp == 1_700_000_000_500_000
    assert sample.metadata["kubernetes.pod_name"] == "api-1"
  end

  test "json format: a JSON array of records" do
    ctx = start()

    body = """
    [{"date":1700000000,"log":"payment 17 declined","level":"warn","service":"billing"},
     {"date":1700000001,"log":"payment 18 declined","level":"warn","service":"billing"},
     42]
    """

    {202, _, reply} =
      request(ctx, "POST", "/ingest", [bearer(), {"content-type", "application/json"}], body)

    assert reply == ~s({"accepted":2,"malformed":1}\n)
    assert [%{count: 2, sample: %{level: :warning, service: "billing"}}] = groups(ctx)
  end

  test "json_stream format: objects one after the other" do
    ctx = start()
    body = ~s({"log":"stream 1"}{"log":"stream 2"}  {"log":"stream 3"})
    headers = [bearer(), {"content-type", "application/json"}]

    assert {202, _, ~s({"accepted":3,"malformed":0}\n)} =
             request(ctx, "POST", "/ingest", headers, body)

    # broken midway: read line by line instead
    body = ~s({"log":"stream 4"}\n{"log": nope}\n{"log":"stream 5"}\n)

    assert {202, _, ~s({"accepted":2,"malformed":1}\n)} =
             request(ctx, "POST", "/ingest", headers, body)

    assert [%{count: 5}] = groups(ctx)
  end

  test "a body with no valid line is a 400; an empty body is accepted" do
    ctx = start()
    {400, _, reply} = request(ctx, "POST", "/ingest", [bearer()], "not json\n{\n")
    assert reply =~ ~s("malformed":2)

    assert {202, _, ~s({"accepted":0,"malformed":0}\n)} =
             request(ctx, "POST", "/ingest", [bearer()])

    assert {400, _, _} = request(ctx, "POST", "/ingest", [bearer()], "[1, 2")
    assert groups(ctx) == []
  end

  test "msgpack (Fluent Bit's default format) is refused with 415" do
    ctx = start()
    headers = [bearer(), {"content-type", "application/msgpack"}]
    assert {415, _, _} = request(ctx, "POST", "/ingest", headers, <<0x91, 0x01>>)
  end

  # ------------------------------------------------------------ /capture

  test "capture: one JSON event with the site key in the query string" do
    ctx = start()

    event = ~S"""
    {"type":"TypeError","message":"Cannot read properties of undefined (reading 'id')",
     "stack":"TypeError: Cannot read properties of undefined (reading 'id')\n    at render (https://shop.example/assets/app.js:10:5)\n    at https://shop.example/assets/app.js:99:1",
     "url":"https://shop.example/cart","user_agent":"Mozilla/5.0 Test","release":"web@1.2.3",
     "timestamp":1700000000123,"kind":"error","cookie":"secret"}
    """

    headers = [{"content-type", "application/json"}, {"origin", @origin}]
    {202, resp_headers, reply} = request(ctx, "POST", "/capture?key=#{@site_key}", headers, event)
    assert reply == ~s({"accepted":1,"malformed":0}\n)
    assert resp_headers["access-control-allow-origin"] == @origin
    assert resp_headers["vary"] == "Origin"

    assert [%{sample: sample}] = groups(ctx)
    assert sample.source == :http
    assert sample.type == "TypeError"
    assert sample.message == "Cannot read properties of undefined (reading 'id')"
    assert sample.stacktrace =~ "at render (https://shop.example/assets/app.js:10:5)"
    assert sample.timestamp == 1_700_000_000_123_000

    assert sample.metadata == %{
             "url" => "https://shop.example/cart",
             "user_agent" => "Mozilla/5.0 Test",
             "release" => "web@1.2.3",
             "kind" => "error"
           }
  end

  test "capture: a text/plain sendBeacon body with several events; the key in a header" do
    ctx = start()

    body =
      ~s({"events":[{"type":"Error","message":"boom 1","kind":"unhandledrejection","url":"https://shop.example/a"},) <>
        ~s({"type":"Error","message":"boom 2","kind":"unhandledrejection","url":"https://shop.example/b"},) <>
        ~s("not an event"]})

    headers = [
      {"content-type", "text/plain;charset=UTF-8"},
      {"x-selfheal-key", @site_key},
      {"user-agent", "Beacon/1.0"}
    ]

    {202, _, reply} = request(ctx, "POST", "/capture", headers, body)
    assert reply == ~s({"accepted":2,"malformed":1}\n)
    assert [%{count: 2, type: "Error", sample: sample}] = groups(ctx)
    assert sample.metadata["kind"] == "unhandledrejection"
    # the request's User-Agent stands in for a missing user_agent field
    assert sample.metadata["user_agent"] == "Beacon/1.0"
  end

  test "capture: a server SDK with a bearer token; malformed JSON is a 400" do
    ctx = start()
    body = ~s|{"type":"RuntimeError","message":"worker crashed","stack":"** (RuntimeError) boom"}|
    assert {202, _, _} = request(ctx, "POST", "/capture", [bearer()], body)
    assert {400, _, _} = request(ctx, "POST", "/capture", [bearer()], ~s({"type": ))
    assert {400, _, _} = request(ctx, "POST", "/capture", [bearer()], ~s({"events": 3}))
    assert [%{type: "RuntimeError"}] = groups(ctx)
  end

  test "capture: an origin the key does not allow is refused" do
    ctx = start()
    headers = [{"origin", "https://evil.example"}]
    body = ~s({"message":"x"})
    assert {403, h, _} = request(ctx, "POST", "/capture?key=#{@site_key}", headers, body)
    refute Map.has_key?(h, "access-control-allow-origin")
    assert groups(ctx) == []
  end

  # ------------------------------------------------------------ CORS

  test "CORS preflight: an allowed origin is echoed, another is denied" do
    ctx = start()

    preflight = fn origin, path ->
      request(ctx, "OPTIONS", path, [
        {"origin", origin},
        {"access-control-request-method", "POST"},
        {"access-control-request-headers", "content-type, x-selfheal-key"}
      ])
    end

    {204, h, ""} = preflight.(@origin, "/capture?key=#{@site_key}")
    assert h["access-control-allow-origin"] == @origin
    assert h["access-control-allow-methods"] == "POST"
    assert h["access-control-allow-headers"] == "Content-Type, X-SelfHeal-Key, Authorization"
    assert String.to_integer(h["access-control-max-age"]) > 0

    # key in a header: the preflight carries no key, any configured origin is allowed
    assert {204, %{"access-control-allow-origin" => @origin}, _} = preflight.(@origin, "/capture")

    for {origin, path} <- [
          {"https://evil.example", "/capture?key=#{@site_key}"},
          {"https://evil.example", "/capture"},
          {"https://shop.example.evil.example", "/capture"},
          {@origin, "/capture?key=unknown"}
        ] do
      {403, h, _} = preflight.(origin, path)
      refute Map.has_key?(h, "access-control-allow-origin"), "#{origin} #{path}"
    end
  end

  # ------------------------------------------------------------ 401

  test "missing or unknown credentials are 401" do
    ctx = start()
    body = ~s({"log":"x"}\n)

    for headers <- [
          [],
          [{"authorization", "Bearer wrong"}],
          [{"authorization", "Basic " <> Base.encode64("a:b")}],
          [{"authorization", "Bearer " <> @token <> "x"}],
          [{"authorization", "Bearer"}],
          # a site key is for /capture only
          [{"x-selfheal-key", @site_key}]
        ] do
      assert {401, _, _} = request(ctx, "POST", "/ingest", headers, body), inspect(headers)
    end

    assert {401, %{"www-authenticate" => "Bearer"}, _} = request(ctx, "POST", "/ingest", [], body)
    assert {401, _, _} = request(ctx, "POST", "/capture", [], ~s({"message":"x"}))
    assert {401, _, _} = request(ctx, "POST", "/capture?key=nope", [], ~s({"message":"x"}))

    assert {401, _, _} =
             request(ctx, "POST", "/capture", [{"x-selfheal-key", "nope"}], ~s({"message":"x"}))

    # a bad bearer token is not rescued by a valid key
    headers = [{"authorization", "Bearer wrong"}, {"x-selfheal-key", @site_key}]
    assert {401, _, _} = request(ctx, "POST", "/capture", headers, ~s({"message":"x"}))
    assert groups(ctx) == []
  end

  # ------------------------------------------------------------ 413

  test "413 as soon as Content-Length is over max_body, before any body byte" do
    ctx = start(max_body: 1000)
    socket = connect(ctx)

    :ok =
      :gen_tcp.send(socket, [
        "POST /ingest HTTP/1.1\r\nhost: x\r\nauthorization: Bearer #{@token}\r\n",
        "content-length: 1001\r\n\r\n"
      ])

    assert {413, %{"connection" => "close"}, _} = read_response(socket)
    assert closed?(socket)
  end

  test "413 for a chunked body as soon as its chunks pass max_body" do
    ctx = start(max_body: 1000)
    socket = connect(ctx)

    :ok =
      :gen_tcp.send(socket, [
        "POST /ingest HTTP/1.1\r\nhost: x\r\nauthorization: Bearer #{@token}\r\n",
        "transfer-encoding: chunked\r\n\r\n",
        "258\r\n",
        String.duplicate("a", 600),
        "\r\n",
        # the second chunk is announced but never sent: the size alone is refused
        "258\r\n"
      ])

    assert {413, %{"connection" => "close"}, _} = read_response(socket)
    assert closed?(socket)
  end

  test "a chunked body under max_body is accepted, and the connection kept" do
    ctx = start(max_body: 1000)
    socket = connect(ctx)
    line = ~s({"log":"chunked hello"}\n)

    send_chunked = fn ->
      :gen_tcp.send(socket, [
        "POST /ingest HTTP/1.1\r\nhost: x\r\nauthorization: Bearer #{@token}\r\n",
        "transfer-encoding: chunked\r\n\r\n",
        Integer.to_string(byte_size(line), 16),
        ";ext=1\r\n",
        line,
        "\r\n",
        "0\r\n",
        "x-trailer: 1\r\n\r\n"
      ])
    end

    send_chunked.()
    assert {202, _, ~s({"accepted":1,"malformed":0}\n)} = read_response(socket)
    send_chunked.()
    assert {202, _, _} = read_response(socket)
    assert [%{count: 2}] = groups(ctx)
  end

  # ------------------------------------------------------------ gzip

  test "a gzip body is accepted; a gzip bomb is 413" do
    ctx = start(max_decompressed: 1_000_000)
    body = :zlib.gzip(json_lines(for i <- 1..50, do: ~s({"log":"gzip line #{i}"})))
    headers = [bearer(), {"content-encoding", "gzip"}]

    assert {202, _, ~s({"accepted":50,"malformed":0}\n)} =
             request(ctx, "POST", "/ingest", headers, body)

    # 50 MB of newlines compress to about 50 KB
    bomb = :zlib.gzip(:binary.copy("\n", 50_000_000))
    assert byte_size(bomb) < 100_000
    assert {413, _, _} = request(ctx, "POST", "/ingest", headers, bomb)
    assert {400, _, _} = request(ctx, "POST", "/ingest", headers, "not gzip at all")

    assert {415, _, _} =
             request(ctx, "POST", "/ingest", [bearer(), {"content-encoding", "br"}], "x")

    assert [%{count: 50}] = groups(ctx)
  end

  # ------------------------------------------------------------ 429, 503

  test "over the rate limit: 429 with Retry-After, the connection kept" do
    ctx = start(rate_limit: {2, 60_000})
    socket = connect(ctx)
    body = ~s({"log":"rate"}\n)

    for _ <- 1..2 do
      :ok = :gen_tcp.send(socket, request_bytes("POST", "/ingest", [bearer()], body))
      assert {202, _, _} = read_response(socket)
    end

    :ok = :gen_tcp.send(socket, request_bytes("POST", "/ingest", [bearer()], body))
    assert {429, headers, _} = read_response(socket)
    retry = String.to_integer(headers["retry-after"])
    assert retry >= 1 and retry <= 60

    # the body was read and dropped: the same connection still answers
    # (/healthz is rate limited too)
    :ok = :gen_tcp.send(socket, request_bytes("GET", "/healthz", [], ""))
    assert {429, _, "rate limited\n"} = read_response(socket)
    assert [%{count: 2}] = groups(ctx)
  end

  test "503 with Retry-After when the collector is overloaded" do
    ctx = start(collector_opts: [max_pending: 0])
    body = ~s({"log":"overload"}\n)
    assert {503, headers, _} = request(ctx, "POST", "/ingest", [bearer()], body)
    assert headers["retry-after"] == "1"
    assert {503, _, _} = request(ctx, "POST", "/capture", [bearer()], ~s({"message":"x"}))
    assert groups(ctx) == []
  end

  test "503 when the collector is not running" do
    ctx = start(collector: :no_such_collector)
    assert {503, _, _} = request(ctx, "POST", "/ingest", [bearer()], ~s({"log":"x"}\n))
  end

  # ------------------------------------------------------------ HTTP

  test "keep-alive: several requests on one connection, pipelined too" do
    ctx = start()
    socket = connect(ctx)

    for i <- 1..5 do
      body = ~s({"log":"keep alive #{i}"}\n)
      :ok = :gen_tcp.send(socket, request_bytes("POST", "/ingest", [bearer()], body))
      assert {202, headers, _} = read_response(socket)
      refute headers["connection"] == "close"
    end

    # two requests in one packet
    :ok =
      :gen_tcp.send(socket, [
        request_bytes("GET", "/healthz", [], ""),
        request_bytes("POST", "/ingest", [bearer()], ~s({"log":"keep alive 6"}\n))
      ])

    assert {200, _, "ok\n"} = read_response(socket)
    assert {202, _, _} = read_response(socket)

    :ok = :gen_tcp.send(socket, request_bytes("GET", "/healthz", [{"connection", "close"}], ""))
    assert {200, %{"connection" => "close"}, _} = read_response(socket)
    assert closed?(socket)
    assert [%{count: 6}] = groups(ctx)
  end

  test "HTTP/1.0 closes unless keep-alive is asked for; HEAD has no body" do
    ctx = start()
    socket = connect(ctx)
    :ok = :gen_tcp.send(socket, "GET /healthz HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
    assert {200, %{"connection" => "keep-alive"}, "ok\n"} = read_response(socket)
    :ok = :gen_tcp.send(socket, "HEAD /healthz HTTP/1.0\r\n\r\n")
    {:ok, data} = :gen_tcp.recv(socket, 0, 2000)
    assert data =~ ~r/\AHTTP\/1.1 200 OK\r\n.*content-length: 3\r\n/s
    assert String.ends_with?(data, "\r\n\r\n")
    assert closed?(socket)
  end

  test "garbage instead of HTTP: 400 and closed, the listener still serving" do
    ctx = start()

    for garbage <- [
          <<0, 1, 2, 3, 255, 254, 13, 10, 13, 10>>,
          "HELLO\r\n\r\n",
          "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
          "GET /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
          "POST /ingest HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
          "POST /ingest HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n",
          "GET /healthz HTTP/1.1\r\n\r\n"
        ] do
      socket = connect(ctx)
      :ok = :gen_tcp.send(socket, garbage)
      assert {400, %{"connection" => "close"}, _} = read_response(socket), inspect(garbage)
      assert closed?(socket)
    end

    socket = connect(ctx)
    :ok = :gen_tcp.send(socket, :crypto.strong_rand_bytes(100_000))
    assert {status, _, _} = read_response(socket)
    assert status in [400, 414]
    :gen_tcp.close(socket)

    assert {200, _, "ok\n"} = request(ctx, "GET", "/healthz", [])
  end

  test "bounded heads: request line 414, too many or too large headers 431" do
    ctx = start(max_request_line: 256, max_headers: 8, max_header_bytes: 1024)
    long = "/" <> String.duplicate("a", 300)
    assert {414, _, _} = request(ctx, "GET", long, [])
    many = for i <- 1..9, do: {"x-h#{i}", "v"}
    assert {431, _, _} = request(ctx, "GET", "/healthz", many)
    assert {431, _, _} = request(ctx, "GET", "/healthz", [{"x-big", String.duplicate("b", 1100)}])
    assert {200, _, _} = request(ctx, "GET", "/healthz", Enum.take(many, 7))
  end

  test "unknown paths 404, wrong methods 405" do
    ctx = start()
    assert {404, _, _} = request(ctx, "GET", "/", [])
    assert {405, %{"allow" => "POST"}, _} = request(ctx, "GET", "/ingest", [])
    assert {405, _, _} = request(ctx, "DELETE", "/healthz", [])
  end

  test "Expect: 100-continue gets 100 Continue, then the answer" do
    ctx = start()
    socket = connect(ctx)
    body = ~s({"log":"continued"}\n)

    :ok =
      :gen_tcp.send(socket, [
        "POST /ingest HTTP/1.1\r\nhost: x\r\nauthorization: Bearer #{@token}\r\n",
        "expect: 100-continue\r\ncontent-length: #{byte_size(body)}\r\n\r\n"
      ])

    assert {:ok, "HTTP/1.1 100 Continue\r\n\r\n"} = :gen_tcp.recv(socket, 0, 2000)
    :ok = :gen_tcp.send(socket, body)
    assert {202, _, _} = read_response(socket)
  end

  test "timeouts: a slow head is cut, an idle keep-alive connection closed" do
    ctx = start(header_timeout: 300, idle_timeout: 300)

    # a head that never ends
    socket = connect(ctx)
    :ok = :gen_tcp.send(socket, "GET /healthz HTTP/1.1\r\nhost: x\r\n")
    assert {408, _, _} = read_response(socket)
    assert closed?(socket)

    # a connection that never sends anything
    socket = connect(ctx)
    assert closed?(socket)

    # idle after a request
    socket = connect(ctx)
    :ok = :gen_tcp.send(socket, request_bytes("GET", "/healthz", [], ""))
    assert {200, _, _} = read_response(socket)
    assert closed?(socket)
  end

  test "max_connections: a connection over the bound gets 503 and is closed" do
    ctx = start(max_connections: 1)
    first = connect(ctx)
    :ok = :gen_tcp.send(first, request_bytes("GET", "/healthz", [], ""))
    assert {200, _, _} = read_response(first)

    second = connect(ctx)
    assert {503, _, _} = read_response(second)
    :gen_tcp.close(first)
    Process.sleep(100)
    assert {200, _, _} = request(ctx, "GET", "/healthz", [])
  end

  test "hostile bytes: mutated requests never take the listener down" do
    ctx = start(header_timeout: 300, body_timeout: 300)
    :rand.seed(:exsss, {1, 2, 3})

    valid =
      IO.iodata_to_binary(
        request_bytes(
          "POST",
          "/capture?key=#{@site_key}",
          [{"origin", @origin}],
          ~s({"events":[{"message":"m","stack":"s"}]})
        )
      )

    for _ <- 1..60 do
      bytes =
        for <<b <- valid>>, into: "" do
          case :rand.uniform(40) do
            1 -> <<:rand.uniform(256) - 1>>
            2 -> ""
            3 -> <<b, b>>
            _ -> <<b>>
          end
        end

      socket = connect(ctx)
      :ok = :gen_tcp.send(socket, bytes)
      response = read_response(socket)
      assert response == :closed or match?({status, _, _} when status in 200..599, response)
      :gen_tcp.close(socket)
    end

    assert {200, _, _} = request(ctx, "GET", "/healthz", [])
    assert Process.whereis(ctx.endpoint)
  end

  test "the JSON scanner never raises on cut or mutated bodies" do
    body =
      ~s({"events":[{"type":"E","message":"a \\"q\\" [x] {y}","n":[1,{"z":null}]},{"m":true}]})

    assert {:ok, [_, _]} = SelfHeal.Endpoint.JSONScan.capture_events(body)

    for n <- 0..byte_size(body), cut = binary_part(body, 0, n) do
      assert match?({:ok, _}, SelfHeal.Endpoint.JSONScan.capture_events(cut)) or
               match?({:error, _}, SelfHeal.Endpoint.JSONScan.capture_events(cut))

      assert match?({:ok, _}, SelfHeal.Endpoint.JSONScan.array_elements(cut)) or
               match?({:error, _}, SelfHeal.Endpoint.JSONScan.array_elements(cut))
    end

    deep = String.duplicate("[", 100) <> String.duplicate("]", 100)
    assert {:error, "too deep"} = SelfHeal.Endpoint.JSONScan.array_elements(deep)
  end

  test "options are validated" do
    assert_raise ArgumentError, ~r/unknown/, fn -> Endpoint.config(bogus: 1) end
    assert_raise ArgumentError, ~r/max_body/, fn -> Endpoint.config(max_body: 0) end
    assert_raise ArgumentError, ~r/rate_limit/, fn -> Endpoint.config(rate_limit: 5) end
    assert_raise ArgumentError, ~r/tokens/, fn -> Endpoint.config(tokens: [""]) end
    assert_raise ArgumentError, ~r/site_keys/, fn -> Endpoint.config(site_keys: %{"k" => []}) end
    assert_raise ArgumentError, ~r/ip/, fn -> Endpoint.config(ip: :localhost) end
    config = Endpoint.config(tokens: ["t"], site_keys: %{"k" => %{origins: ["*"]}})
    refute "t" in config.tokens
    assert [{_digest, :any}] = config.site_keys
  end
end
