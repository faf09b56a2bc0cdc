defmodule SelfHeal.LateRecurrenceTest do
  # A failure from before a recovery or deploy that a shipper delivers
  # after the verification began is not a recurrence; one stamped after
  # it is, and so is one whose clock is too far behind to say.
  use ExUnit.Case, async: true

  alias SelfHeal.{Collector, Event}

  defmodule Sink do
    @moduledoc false
    def recurrence(pid, fp, n, track \\ "stable"), do: send(pid, {:recurrence, fp, n, track})
  end

  test "events stamped within the grace before the verification began are not counted" do
    table = :ets.new(:late_recurrence_test, [:public, :set, :named_table])
    {:ok, c} = Collector.start_link(name: nil, verify: {table, {Sink, self()}}, flush_ms: 10)
    event = fn ts -> Event.new(type: "RuntimeError", message: "stock 12 gone", timestamp: ts) end

    Collector.push(c, [event.(nil)])
    [%{fingerprint: fp}] = Collector.groups(c)
    since = System.os_time(:microsecond)
    :ets.insert(table, {fp, since + 60_000_000, since})

    # 2 s before: delivered late; 1 h before: a clock that cannot be trusted;
    # after: a recurrence
    Collector.push(c, [event.(since - 2_000_000), event.(since - 3_600_000_000), event.(nil)])
    _ = Collector.groups(c)
    assert_received {:recurrence, ^fp, 2, "stable"}

    # an entry without a start time (an older table): everything counts
    :ets.insert(table, {fp, since + 60_000_000})
    Collector.push(c, [event.(since - 2_000_000)])
    _ = Collector.groups(c)
    assert_received {:recurrence, ^fp, 1, "stable"}
  end
end
