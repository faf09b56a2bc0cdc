defmodule SelfHeal.TestHTTP do
  @moduledoc false
  # One HTTP/1.1 request over a fresh connection (Connection: close), read
  # to the end: {status, headers (lower-case names, in order), body}. A
  # binary body is sent as a form.

  def request(method, url, headers \\ [], body \\ nil) do
    %URI{host: host, port: port, path: path, query: query} = URI.parse(url)
    target = if query, do: "#{path}?#{query}", else: path
    {:ok, socket} = :gen_tcp.connect(String.to_charlist(host), port, [:binary, active: false])

    head = [
      String.upcase(to_string(method)),
      " ",
      target,
      " HTTP/1.1\r\nhost: #{host}:#{port}\r\nconnection: close\r\n",
      for({k, v} <- headers, do: [k, ": ", v, "\r\n"]),
      if(body, do: "content-type: application/x-www-form-urlencoded\r\n", else: ""),
      if(body || method in [:post, :put],
        do: "content-length: #{byte_size(body || "")}\r\n",
        else: ""
      ),
      "\r\n",
      body || ""
    ]

    :ok = :gen_tcp.send(socket, head)
    response = read_all(socket, "")
    [head, payload] = :binary.split(response, "\r\n\r\n")
    ["HTTP/1.1 " <> status_line | lines] = String.split(head, "\r\n")
    {status, _reason} = Integer.parse(status_line)

    headers =
      Enum.map(lines, fn line ->
        [k, v] = :binary.split(line, ":")
        {String.downcase(k), String.trim(v)}
      end)

    {status, headers, payload}
  end

  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 20_000) do
      {:ok, data} -> read_all(socket, acc <> data)
      {:error, :closed} -> acc
    end
  end
end
