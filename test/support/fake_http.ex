defmodule SelfHeal.FakeHTTP do
  @moduledoc false
  # An HTTP/1.1 server on 127.0.0.1 for tests that stand in for outside
  # services (LLM providers, GitHub, Slack, Telegram). Each test gives it a
  # handler: a function from the request to an answer. Every request is
  # recorded (method, path, query, lower-cased headers, body) so the test
  # can check its shape.
  #
  #   {:ok, srv} = FakeHTTP.start(fn req -> {200, [{"content-type", "application/json"}], "{}"} end)
  #   srv.url                      #=> "http://127.0.0.1:41234"
  #   FakeHTTP.requests(srv)       #=> [%{method: "POST", path: "/v1/messages", ...}]
  #
  # Answers a handler may give:
  #   {status, headers, body}      a normal answer (content-length added)
  #   {:delay, ms, answer}         wait, then answer (timeouts)
  #   :close                       close the connection without an answer
  #   {:raw, iodata}               bytes as they are (truncated answers)
  #
  # `start/2` with `sequence: [answer, ...]` answers them in order before
  # falling back to the handler, for "429 then 200" scripts.

  use GenServer

  @type request :: %{
          method: binary(),
          path: binary(),
          query: binary(),
          headers: %{binary() => binary()},
          body: binary()
        }

  @spec start((request() -> term()), keyword()) :: {:ok, map()}
  def start(handler, opts \\ []) do
    {:ok, pid} = GenServer.start(__MODULE__, {handler, Keyword.get(opts, :sequence, [])})
    port = GenServer.call(pid, :port)
    {:ok, %{pid: pid, port: port, url: "http://127.0.0.1:#{port}"}}
  end

  @spec stop(map()) :: :ok
  def stop(%{pid: pid}), do: GenServer.stop(pid)

  @doc "Requests received so far, oldest first."
  @spec requests(map()) :: [request()]
  def requests(%{pid: pid}), do: GenServer.call(pid, :requests)

  @doc "Waits until at least n requests have arrived (or timeout ms)."
  @spec wait_requests(map(), pos_integer(), non_neg_integer()) :: [request()]
  def wait_requests(srv, n, timeout \\ 5000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(srv, n, deadline)
  end

  defp do_wait(srv, n, deadline) do
    reqs = requests(srv)

    if length(reqs) >= n or System.monotonic_time(:millisecond) > deadline do
      reqs
    else
      Process.sleep(10)
      do_wait(srv, n, deadline)
    end
  end

  @doc "A JSON answer."
  @spec json(non_neg_integer(), term(), list()) :: {non_neg_integer(), list(), binary()}
  def json(status, body, headers \\ []) do
    {status, [{"content-type", "application/json"} | headers], encode(body)}
  end

  @doc """
  Telegram's Bot API as a handler: `sendMessage` and `answerCallbackQuery`
  succeed, anything else is Telegram's 404.
  """
  @spec telegram_ok(request()) :: {non_neg_integer(), list(), binary()}
  def telegram_ok(%{path: path}) do
    cond do
      String.ends_with?(path, "/sendMessage") ->
        json(200, %{
          ok: true,
          result: %{message_id: 7, date: 1_700_000_000, chat: %{id: 42, type: "group"}}
        })

      String.ends_with?(path, "/answerCallbackQuery") ->
        json(200, %{ok: true, result: true})

      true ->
        json(404, %{ok: false, error_code: 404, description: "Not Found"})
    end
  end

  @doc "A small JSON encoder for test answers (maps, lists, strings, numbers, booleans, nil)."
  @spec encode(term()) :: binary()
  def encode(term), do: IO.iodata_to_binary(enc(term))

  defp enc(nil), do: "null"
  defp enc(true), do: "true"
  defp enc(false), do: "false"
  defp enc(n) when is_integer(n), do: Integer.to_string(n)
  defp enc(n) when is_float(n), do: Float.to_string(n)
  defp enc(a) when is_atom(a), do: enc(Atom.to_string(a))

  defp enc(s) when is_binary(s) do
    escaped =
      for <<c::utf8 <- s>>, into: "" do
        case c do
          ?" -> "\\\""
          ?\\ -> "\\\\"
          ?\n -> "\\n"
          ?\r -> "\\r"
          ?\t -> "\\t"
          c when c < 0x20 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
          c -> <<c::utf8>>
        end
      end

    [?", escaped, ?"]
  end

  defp enc(l) when is_list(l), do: [?[, Enum.map_intersperse(l, ?,, &enc/1), ?]]

  defp enc(m) when is_map(m) do
    [?{, Enum.map_intersperse(m, ?,, fn {k, v} -> [enc(to_string(k)), ?:, enc(v)] end), ?}]
  end

  # ------------------------------------------------------------ server

  @impl true
  def init({handler, sequence}) do
    {:ok, lsock} =
      :gen_tcp.listen(0, [
        :binary,
        ip: {127, 0, 0, 1},
        active: false,
        reuseaddr: true,
        backlog: 512
      ])

    {:ok, port} = :inet.port(lsock)
    me = self()
    spawn_link(fn -> accept(lsock, me) end)
    {:ok, %{lsock: lsock, port: port, handler: handler, sequence: sequence, requests: []}}
  end

  @impl true
  def handle_call(:port, _from, s), do: {:reply, s.port, s}
  def handle_call(:requests, _from, s), do: {:reply, Enum.reverse(s.requests), s}

  def handle_call({:request, req}, _from, s) do
    s = %{s | requests: [req | s.requests]}

    case s.sequence do
      [answer | rest] -> {:reply, {:answer, answer}, %{s | sequence: rest}}
      [] -> {:reply, {:handler, s.handler}, s}
    end
  end

  defp accept(lsock, server) do
    case :gen_tcp.accept(lsock) do
      {:ok, sock} ->
        pid = spawn(fn -> serve(sock, server, "") end)
        :gen_tcp.controlling_process(sock, pid)
        accept(lsock, server)

      {:error, _} ->
        :ok
    end
  end

  defp serve(sock, server, buf) do
    case read_request(sock, buf) do
      {:ok, req, rest} ->
        answer =
          case GenServer.call(server, {:request, req}, 60_000) do
            {:answer, a} -> a
            {:handler, h} -> h.(req)
          end

        if respond(sock, answer) == :keep,
          do: serve(sock, server, rest),
          else: :gen_tcp.close(sock)

      _ ->
        :gen_tcp.close(sock)
    end
  catch
    :exit, _ -> :gen_tcp.close(sock)
  end

  defp respond(sock, {:delay, ms, answer}) do
    Process.sleep(ms)
    respond(sock, answer)
  end

  defp respond(_sock, :close), do: :close

  defp respond(sock, {:raw, iodata}) do
    :gen_tcp.send(sock, iodata)
    :close
  end

  defp respond(sock, {status, headers, body}) do
    body = IO.iodata_to_binary(body)

    head = [
      "HTTP/1.1 #{status} #{reason(status)}\r\n",
      Enum.map(headers, fn {k, v} -> [k, ": ", to_string(v), "\r\n"] end),
      "content-length: #{byte_size(body)}\r\n\r\n"
    ]

    :gen_tcp.send(sock, [head, body])
    :keep
  end

  defp reason(200), do: "OK"
  defp reason(201), do: "Created"
  defp reason(204), do: "No Content"
  defp reason(400), do: "Bad Request"
  defp reason(401), do: "Unauthorized"
  defp reason(404), do: "Not Found"
  defp reason(422), do: "Unprocessable Entity"
  defp reason(429), do: "Too Many Requests"
  defp reason(500), do: "Internal Server Error"
  defp reason(503), do: "Service Unavailable"
  defp reason(_), do: "Status"

  defp read_request(sock, buf) do
    with {:ok, {method, target}, buf} <- read_line(sock, buf),
         {:ok, headers, buf} <- read_headers(sock, buf, %{}) do
      if String.downcase(Map.get(headers, "expect", "")) == "100-continue",
        do: :gen_tcp.send(sock, "HTTP/1.1 100 Continue\r\n\r\n")

      {body, rest} = read_body(sock, headers, buf)
      {path, query} = split_target(target)

      {:ok, %{method: method, path: path, query: query, headers: headers, body: body}, rest}
    end
  end

  defp split_target(target) do
    case String.split(target, "?", parts: 2) do
      [p, q] -> {p, q}
      [p] -> {p, ""}
    end
  end

  defp read_line(sock, buf) do
    case :erlang.decode_packet(:http_bin, buf, []) do
      {:ok, {:http_request, method, {:abs_path, target}, _}, rest} ->
        {:ok, {to_string(method), target}, rest}

      {:more, _} ->
        with {:ok, data} <- :gen_tcp.recv(sock, 0, 30_000), do: read_line(sock, buf <> data)

      _ ->
        :error
    end
  end

  defp read_headers(sock, buf, acc) do
    case :erlang.decode_packet(:httph_bin, buf, []) do
      {:ok, {:http_header, _, name, _, value}, rest} ->
        read_headers(sock, rest, Map.put(acc, String.downcase(to_string(name)), value))

      {:ok, :http_eoh, rest} ->
        {:ok, acc, rest}

      {:more, _} ->
        with {:ok, data} <- :gen_tcp.recv(sock, 0, 30_000),
             do: read_headers(sock, buf <> data, acc)

      _ ->
        :error
    end
  end

  defp read_body(sock, headers, buf) do
    cond do
      String.downcase(Map.get(headers, "transfer-encoding", "")) == "chunked" ->
        read_chunked(sock, buf, [])

      len = headers["content-length"] ->
        n = String.to_integer(len)
        buf = fill(sock, buf, n)
        <<body::binary-size(n), rest::binary>> = buf
        {body, rest}

      true ->
        {"", buf}
    end
  end

  defp fill(_sock, buf, n) when byte_size(buf) >= n, do: buf

  defp fill(sock, buf, n) do
    {:ok, data} = :gen_tcp.recv(sock, 0, 30_000)
    fill(sock, buf <> data, n)
  end

  defp read_chunked(sock, buf, acc) do
    case :binary.split(buf, "\r\n") do
      [size_line, rest] ->
        size = size_line |> String.split(";") |> hd() |> String.trim() |> String.to_integer(16)

        if size == 0 do
          rest = fill(sock, rest, 2)
          <<"\r\n", rest::binary>> = rest
          {IO.iodata_to_binary(Enum.reverse(acc)), rest}
        else
          rest = fill(sock, rest, size + 2)
          <<chunk::binary-size(size), "\r\n", rest::binary>> = rest
          read_chunked(sock, rest, [chunk | acc])
        end

      [_] ->
        {:ok, data} = :gen_tcp.recv(sock, 0, 30_000)
        read_chunked(sock, buf <> data, acc)
    end
  end
end
