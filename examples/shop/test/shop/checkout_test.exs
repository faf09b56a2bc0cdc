defmodule Shop.CheckoutTest do
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog

  alias Shop.{Checkout, Products, Recommendations}

  defp stock(levels), do: fn id -> %{item: id, stock: Map.get(levels, id, 0)} end

  defp down,
    do: fn _ -> raise Shop.InventoryError, "inventory service unavailable: econnrefused" end

  test "checkout reserves an item in stock" do
    assert Checkout.run("1", stock(%{"1" => 2})) == %{item: "1", status: "reserved"}
    assert Checkout.run("2", stock(%{})) == %{item: "2", status: "sold out"}
  end

  test "product pages and recommendations show stock" do
    assert %{name: "Teapot", stock: 4, available: true} = Products.show("1", stock(%{"1" => 4}))
    assert Recommendations.for_item("1", stock(%{"2" => 1, "4" => 7})) == ["2", "4"]
    assert Recommendations.for_item("teapot", stock(%{})) == []
  end

  test "an inventory outage is logged, then each caller fails its own way" do
    log =
      capture_log(fn ->
        assert_raise Shop.CheckoutError, "checkout failed for item 1", fn ->
          Checkout.run("1", down())
        end

        assert_raise MatchError, fn -> Products.show("1", down()) end
        assert_raise BadMapError, fn -> Recommendations.for_item("1", down()) end
      end)

    assert log =~ "Shop.InventoryError"
  end
end
