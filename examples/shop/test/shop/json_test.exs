defmodule Shop.JSONTest do
  use ExUnit.Case, async: true

  alias Shop.JSON

  test "encodes scalars, lists and maps" do
    assert JSON.encode(nil) == "null"
    assert JSON.encode([1, 2.5, true, false]) == "[1,2.5,true,false]"
    assert JSON.encode(%{b: [], a: %{"c" => :d}}) == ~s({"a":{"c":"d"},"b":[]})
  end

  test "escapes strings" do
    assert JSON.encode("a\"b\\c\nd\te\u0001") == ~s("a\\"b\\\\c\\nd\\te\\u0001")
    assert JSON.encode("café ✓") == ~s("café ✓")
    assert JSON.encode(<<"x", 0xFF, "y">>) == ~s("x\\uFFFDy")
  end
end
