defmodule Shop.CheckoutError do
  @moduledoc "A checkout that could not go through."
  defexception [:message]
end

defmodule Shop.Checkout do
  @moduledoc "Checks one item out: reserves it when it is in stock."

  alias Shop.Inventory

  @doc """
  Checks `item` out. `fetch` returns its stock record (see
  `Shop.Inventory.fetch!/2`); tests pass a stub.
  """
  @spec run(String.t(), (String.t() -> map)) :: %{item: String.t(), status: String.t()}
  def run(item, fetch \\ &Inventory.fetch!/1) do
    case Inventory.lookup(item, fetch) do
      %{stock: stock} when stock > 0 -> %{item: item, status: "reserved"}
      %{stock: 0} -> %{item: item, status: "sold out"}
      _ -> raise Shop.CheckoutError, "checkout failed for item #{item}"
    end
  end
end
