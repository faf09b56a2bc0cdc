defmodule Shop.PricingTest do
  use ExUnit.Case, async: true

  alias Shop.Pricing

  test "average of a cart" do
    assert Pricing.average([10, 20, 30]) == 20.0
    assert Pricing.average([9.5]) == 9.5
    assert Pricing.average([1, 2]) == 1.5
  end

  test "parse reads a comma-separated price list" do
    assert Pricing.parse("10,20.5, 30") == {:ok, [10.0, 20.5, 30.0]}
    assert Pricing.parse("") == {:ok, []}
    assert Pricing.parse("10,abc") == :error
    assert Pricing.parse("10x") == :error
  end
end
