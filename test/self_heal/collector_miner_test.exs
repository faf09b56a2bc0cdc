defmodule SelfHeal.CollectorMinerTest do
  # Stackless events through the collector's template miner, and the
  # miner's snapshot in state_dir across a restart.
  use ExUnit.Case, async: true

  alias SelfHeal.{Collector, Event, Native}

  @moduletag :tmp_dir

  defp line(message), do: Event.new(type: "log", message: message, stacktrace: nil)

  defp start(name, opts) do
    start_supervised!({Collector, [name: name, flush_ms: 5] ++ opts}, id: name)
  end

  defp groups_for(name, events) do
    Collector.push(name, events)
    Collector.groups(name)
  end

  test "lines that differ only in values make one group, other lines another" do
    name = :"collector_miner_#{System.unique_integer([:positive])}"
    start(name, [])

    events =
      for i <- 1..50 do
        line("Connection to 10.2.#{rem(i, 200)}.#{i}:5432 refused after #{i * 37} ms")
      end ++ [line("Disk /dev/sda1 is 93% full"), line("Disk /dev/sdb2 is 12% full")]

    groups = groups_for(name, events)
    assert Enum.map(groups, & &1.count) == [50, 2]
    %{miner: %{lines: 52, clusters: 2}} = Collector.stats(name)
  end

  test "the miner can be switched off: then the normalised message groups" do
    name = :"collector_nominer_#{System.unique_integer([:positive])}"
    start(name, miner: false)

    groups = groups_for(name, [line("user alice logged in"), line("user bob logged in")])

    assert length(groups) == 2
    assert %{miner: nil} = Collector.stats(name)
    assert Collector.miner(name) == nil
  end

  test "cluster fingerprints survive a restart through state_dir", %{tmp_dir: dir} do
    name = :"collector_state_#{System.unique_integer([:positive])}"
    start(name, state_dir: dir)
    [g1] = groups_for(name, [line("cache miss for key user:1:x in shard-3")])
    # the template generalises; the fingerprint of the first group stays
    [g2] = groups_for(name, [line("cache miss for key order:9:y in shard-1")])
    assert g2.fingerprint == g1.fingerprint
    assert g2.count == 2
    :ok = stop_supervised(name)
    assert File.exists?(Path.join(dir, "miner.snapshot"))

    start(name, state_dir: dir)
    assert %{miner: %{lines: 2, clusters: 1}} = Collector.stats(name)
    [g3] = groups_for(name, [line("cache miss for key cart:7:z in shard-2")])
    assert g3.fingerprint == g1.fingerprint
  end

  test "a damaged snapshot is set aside and the collector starts fresh", %{tmp_dir: dir} do
    File.write!(Path.join(dir, "miner.snapshot"), "SHMINER\0 but not really")
    name = :"collector_bad_#{System.unique_integer([:positive])}"
    ExUnit.CaptureLog.capture_log(fn -> start(name, state_dir: dir) end)
    assert File.exists?(Path.join(dir, "miner.snapshot.bad"))
    assert %{miner: %{lines: 0}} = Collector.stats(name)
  end

  test "events with a stack trace do not go through the miner" do
    name = :"collector_stack_#{System.unique_integer([:positive])}"
    start(name, [])

    stack = [{MyApp.Worker, :run, 1, [file: ~c"lib/my_app/worker.ex", line: 3]}]
    event = Event.new(type: "RuntimeError", message: "boom 1", stacktrace: stack)
    [group] = groups_for(name, [event])
    assert group.fingerprint == Native.fingerprint(event).fingerprint
    assert %{miner: %{lines: 0}} = Collector.stats(name)
  end
end
