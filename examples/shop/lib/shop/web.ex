defmodule Shop.Web do
  @moduledoc """
  The shop's HTTP interface: an `:httpd` callback module (`modules:
  [Shop.Web]`), one `do/1` call per request.

  Every request handler catches its own exceptions, logs them with the
  exception and stack trace in `crash_reason` (what `Shop.ErrorReporter`
  sends to SelfHeal) and answers 500.
  """

  require Logger
  require Record

  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  @doc false
  # httpd calls `do/1`; `do` is an Elixir keyword, hence `unquote(:do)`.
  def unquote(:do)(mod_data) do
    method = mod(mod_data, :method)
    uri = mod_data |> mod(:request_uri) |> IO.chardata_to_string() |> URI.parse()

    {status, body} =
      case decode_query(uri.query) do
        {:ok, query} -> handle(to_string(method), uri.path || "/", query)
        :error -> json(400, %{error: "malformed query string"})
      end

    {:proceed, [response: {:response, headers(status, body), body}]}
  end

  @doc """
  Answers one request: `{status, json_body}`. Exceptions become a logged
  error and a 500.
  """
  @spec handle(String.t(), String.t(), %{String.t() => String.t()}) :: {pos_integer, binary}
  def handle(method, path, query) do
    Logger.metadata(path: path)

    try do
      route(method, String.split(path, "/", trim: true), query)
    rescue
      e ->
        Logger.error(Exception.format(:error, e, __STACKTRACE__),
          crash_reason: {e, __STACKTRACE__},
          path: path
        )

        json(500, %{error: "internal server error"})
    end
  end

  defp route("GET", ["health"], _query), do: {200, "ok"}

  defp route("GET", ["cart", "average"], query) do
    case Shop.Pricing.parse(Map.get(query, "prices", "")) do
      {:ok, prices} -> json(200, %{average: Shop.Pricing.average(prices), count: length(prices)})
      :error -> json(400, %{error: "prices must be numbers"})
    end
  end

  defp route("GET", ["checkout"], %{"item" => item}), do: json(200, Shop.Checkout.run(item))
  defp route("GET", ["products", id], _query), do: json(200, Shop.Products.show(id))

  defp route("GET", ["recommendations"], %{"item" => item}),
    do: json(200, %{item: item, recommended: Shop.Recommendations.for_item(item)})

  defp route("GET", _segments, _query), do: json(404, %{error: "not found"})
  defp route(_method, _segments, _query), do: json(405, %{error: "method not allowed"})

  defp decode_query(nil), do: {:ok, %{}}

  defp decode_query(query) do
    {:ok, URI.decode_query(query)}
  rescue
    ArgumentError -> :error
  end

  defp json(status, term), do: {status, Shop.JSON.encode(term)}

  defp headers(status, body) do
    type = if String.starts_with?(body, "{"), do: 'application/json', else: 'text/plain'
    [code: status, content_type: type, content_length: Integer.to_charlist(byte_size(body))]
  end
end
