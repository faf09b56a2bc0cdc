defmodule Shop.ErrorReporterTest do
  use ExUnit.Case, async: true

  alias Shop.ErrorReporter

  # An exception raised in the shop's code.
  defp stacktrace do
    Shop.Inventory.fetch!("1", fn _url -> {:ok, 503, ""} end)
  rescue
    e -> {e, __STACKTRACE__}
  end

  test "an error with crash_reason becomes an ingest record" do
    {e, st} = stacktrace()
    meta = %{crash_reason: {e, st}, path: "/checkout", time: 1_700_000_000_250_000}
    event = %{level: :error, msg: {:string, "boom"}, meta: meta}

    record = ErrorReporter.record(event)
    assert record["log"] == "inventory service answered 503"
    assert record["service"] == "shop"
    assert record["path"] == "/checkout"
    assert record["time"] == 1_700_000_000.25
    assert record["exception"]["type"] == "Elixir.Shop.InventoryError"

    assert record["exception"]["stacktrace"] =~
             ~r{\(shop 0\.1\.0\) lib/shop/inventory\.ex:\d+: Shop\.Inventory\.fetch!/2}

    assert Shop.JSON.encode([record]) =~ ~s("type":"Elixir.Shop.InventoryError")
  end

  test "events without an exception, or below error, are not reported" do
    assert ErrorReporter.record(%{level: :error, msg: {:string, "plain"}, meta: %{}}) == nil

    {e, st} = stacktrace()

    assert ErrorReporter.record(%{
             level: :warning,
             msg: {:string, "w"},
             meta: %{crash_reason: {e, st}}
           }) == nil
  end

  test "proc_lib crash reports are reported, Erlang errors as exceptions" do
    {_e, st} = stacktrace()
    info = [pid: self(), error_info: {:error, :badarith, st}]
    report = %{label: {:proc_lib, :crash}, report: [info, []]}

    record = ErrorReporter.record(%{level: :error, msg: {:report, report}, meta: %{time: 0}})
    assert record["exception"]["type"] == "Elixir.ArithmeticError"
    assert record["log"] == "bad argument in arithmetic expression"
    refute Map.has_key?(record, "path")
  end
end
