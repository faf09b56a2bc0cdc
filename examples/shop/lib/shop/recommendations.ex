defmodule Shop.Recommendations do
  @moduledoc "What else to buy with an item: related items that are in stock."

  alias Shop.Inventory

  @doc "Up to three related items in stock; `fetch` as in `Shop.Checkout.run/2`."
  @spec for_item(String.t(), (String.t() -> map)) :: [String.t()]
  def for_item(item, fetch \\ &Inventory.fetch!/1) do
    item
    |> related()
    |> Enum.filter(fn id -> Map.fetch!(Inventory.lookup(id, fetch), :stock) > 0 end)
  end

  defp related(item) do
    case Integer.parse(item) do
      {n, ""} -> Enum.map(1..3, &Integer.to_string(n + &1))
      _ -> []
    end
  end
end
