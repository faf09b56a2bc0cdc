defmodule Shop.InventoryError do
  @moduledoc "The inventory service could not answer."
  defexception [:message]
end
