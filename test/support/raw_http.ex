defmodule SelfHeal.RawHTTP do
  @moduledoc false
  # A small HTTP/1.1 client for attack tests and benchmarks: the socket
  # parses answers with packet: :http_bin, requests are whatever bytes the
  # caller says, and a client can bind any loopback source address
  # (127.0.0.2, ...) to look like another host.

  @doc "Connects to 127.0.0.1:port from `from` (a loopback address)."
  def connect(port, from \\ {127, 0, 0, 1}) do
    :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false, ip: from, packet: :raw], 5000)
  end

  @doc "The bytes of a request; content-length added when there is a body."
  def bytes(method, path, headers, body \\ "") do
    length =
      if body == "", do: [], else: [{"content-length", Integer.to_string(IO.iodata_length(body))}]

    [
      method,
      " ",
      path,
      " HTTP/1.1\r\nhost: localhost\r\n",
      for({name, value} <- length ++ headers, do: [name, ": ", value, "\r\n"]),
      "\r\n",
      body
    ]
  end

  @doc "One request on a new connection: {status, headers, body} or {:error, reason}."
  def request(port, method, path, headers, body \\ "", from \\ {127, 0, 0, 1}) do
    with {:ok, socket} <- connect(port, from) do
      try do
        with :ok <- :gen_tcp.send(socket, bytes(method, path, headers, body)),
             do: answer(socket)
      after
        :gen_tcp.close(socket)
      end
    end
  end

  @doc "Reads one answer: {status, headers (lower-case names), body}."
  def answer(socket, timeout \\ 10_000) do
    :ok = :inet.setopts(socket, packet: :http_bin)

    with {:ok, {:http_response, _, status, _}} <- :gen_tcp.recv(socket, 0, timeout),
         {:ok, headers} <- fields(socket, timeout, %{}) do
      :ok = :inet.setopts(socket, packet: :raw)

      case String.to_integer(Map.get(headers, "content-length", "0")) do
        0 -> {status, headers, ""}
        n -> with {:ok, body} <- :gen_tcp.recv(socket, n, timeout), do: {status, headers, body}
      end
    end
  end

  defp fields(socket, timeout, acc) do
    case :gen_tcp.recv(socket, 0, timeout) do
      {:ok, {:http_header, _, _, name, value}} ->
        fields(socket, timeout, Map.put(acc, String.downcase(name), value))

      {:ok, :http_eoh} ->
        {:ok, acc}

      {:ok, other} ->
        {:error, other}

      error ->
        error
    end
  end

  @doc "Samples :erlang.memory(:total) until stopped; `stop/1` gives the peak."
  def sample_memory do
    parent = self()

    spawn_link(fn ->
      peak = fn peak, again ->
        receive do
          :stop -> send(parent, {:peak, peak})
        after
          2 -> again.(max(peak, :erlang.memory(:total)), again)
        end
      end

      peak.(:erlang.memory(:total), peak)
    end)
  end

  def stop(sampler) do
    send(sampler, :stop)

    receive do
      {:peak, peak} -> peak
    end
  end
end
