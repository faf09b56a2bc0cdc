defmodule Shop.Products do
  @moduledoc "Product pages."

  alias Shop.Inventory

  @names %{"1" => "Teapot", "2" => "Kettle", "3" => "Mug", "4" => "Tea towel"}

  @doc "The product `id` with its stock; `fetch` as in `Shop.Checkout.run/2`."
  @spec show(String.t(), (String.t() -> map)) :: map
  def show(id, fetch \\ &Inventory.fetch!/1) do
    %{stock: stock} = Inventory.lookup(id, fetch)
    %{id: id, name: Map.get(@names, id, "Item #{id}"), stock: stock, available: stock > 0}
  end
end
