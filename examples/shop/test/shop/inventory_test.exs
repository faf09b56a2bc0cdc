defmodule Shop.InventoryTest do
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog

  alias Shop.Inventory

  test "parse reads the stock of a reply" do
    assert Inventory.parse(~s({"item": "1", "stock": 5})) == {:ok, 5}
    assert Inventory.parse(~s({"stock":0,"item":"2"})) == {:ok, 0}
    assert Inventory.parse(~s({"item": "1"})) == :error
    assert Inventory.parse(~s({"stock": -1})) == :error
    assert Inventory.parse("<html>busy</html>") == :error
  end

  test "fetch! asks for the item's stock URL" do
    me = self()

    get = fn url ->
      send(me, {:url, url})
      {:ok, 200, ~s({"item": "a b", "stock": 3})}
    end

    assert Inventory.fetch!("a b", get) == %{item: "a b", stock: 3}
    assert_received {:url, url}
    assert url =~ ~r{/stock/a\+b$}
  end

  test "fetch! raises InventoryError when the service is down or misbehaves" do
    assert_raise Shop.InventoryError, "inventory service unavailable: econnrefused", fn ->
      Inventory.fetch!("1", fn _ -> {:error, :econnrefused} end)
    end

    assert_raise Shop.InventoryError, "inventory service answered 503", fn ->
      Inventory.fetch!("1", fn _ -> {:ok, 503, ""} end)
    end

    assert_raise Shop.InventoryError, ~r/malformed/, fn ->
      Inventory.fetch!("1", fn _ -> {:ok, 200, "nope"} end)
    end
  end

  test "lookup logs an inventory failure and returns nil" do
    down = fn _ -> raise Shop.InventoryError, "inventory service unavailable: econnrefused" end

    log = capture_log(fn -> assert Inventory.lookup("1", down) == nil end)
    assert log =~ "(Shop.InventoryError) inventory service unavailable: econnrefused"
  end
end
