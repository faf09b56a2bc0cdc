defmodule Shop.Inventory do
  @moduledoc """
  Client of the inventory service (`INVENTORY_URL`, e.g.
  `http://127.0.0.1:4101`): `GET /stock/ID` answers
  `{"item": "ID", "stock": 5}`.
  """

  require Logger

  @timeout 500

  @typedoc "A GET: `{:ok, status, body}` or `{:error, reason}`."
  @type get_fun :: (String.t() -> {:ok, pos_integer, binary} | {:error, term})

  @doc """
  The stock record of `id`: `%{item: id, stock: n}`.

  Raises `Shop.InventoryError` when the service is unreachable, answers
  an error or something that is not a stock record. `get` makes the
  request (tests pass a stub).
  """
  @spec fetch!(String.t(), get_fun) :: %{item: String.t(), stock: non_neg_integer}
  def fetch!(id, get \\ &http_get/1) do
    case get.(url(id)) do
      {:ok, 200, body} ->
        case parse(body) do
          {:ok, stock} -> %{item: id, stock: stock}
          :error -> raise Shop.InventoryError, "inventory service sent a malformed reply"
        end

      {:ok, status, _body} ->
        raise Shop.InventoryError, "inventory service answered #{status}"

      {:error, reason} ->
        raise Shop.InventoryError, "inventory service unavailable: #{format_reason(reason)}"
    end
  end

  @doc """
  Like `fetch!/2`, but logs an inventory failure and returns `nil`, so
  callers can go on (they assume they get a stock record).
  """
  @spec lookup(String.t(), (String.t() -> map)) :: map | nil
  def lookup(id, fetch \\ &fetch!/1) do
    fetch.(id)
  rescue
    e in Shop.InventoryError ->
      Logger.error(Exception.format(:error, e, __STACKTRACE__),
        crash_reason: {e, __STACKTRACE__}
      )

      nil
  end

  @doc "Parses a stock reply: `{:ok, stock}` or `:error`."
  @spec parse(binary) :: {:ok, non_neg_integer} | :error
  def parse(body) when is_binary(body) do
    case Regex.run(~r/"stock"\s*:\s*(\d+)\s*[,}]/, body) do
      [_, digits] -> {:ok, String.to_integer(digits)}
      nil -> :error
    end
  end

  @doc "The stock URL of `id`."
  @spec url(String.t()) :: String.t()
  def url(id) do
    base = System.get_env("INVENTORY_URL", "http://127.0.0.1:4101")
    String.trim_trailing(base, "/") <> "/stock/" <> URI.encode_www_form(id)
  end

  defp http_get(url) do
    request = {String.to_charlist(url), []}
    options = [timeout: @timeout, connect_timeout: @timeout]

    case :httpc.request(:get, request, options, body_format: :binary) do
      {:ok, {{_version, status, _phrase}, _headers, body}} -> {:ok, status, body}
      {:error, {:failed_connect, [_to, {_family, _opts, reason}]}} -> {:error, reason}
      {:error, reason} -> {:error, reason}
    end
  end

  defp format_reason(reason) when is_atom(reason), do: Atom.to_string(reason)
  defp format_reason(reason), do: inspect(reason)
end
