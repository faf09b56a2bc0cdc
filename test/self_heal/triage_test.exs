defmodule SelfHeal.TriageTest do
  # The dedup window across restarts of a real triage process.
  use ExUnit.Case, async: true

  alias SelfHeal.Triage

  @moduletag :tmp_dir
  @moduletag capture_log: true

  defp start(dir, opts \\ []) do
    name = :"triage_#{System.unique_integer([:positive])}"
    pid = start_supervised!({Triage, [name: name, state_dir: dir] ++ opts}, id: name)
    {name, pid}
  end

  defp stop({name, _pid}), do: :ok = stop_supervised(name)

  defp group(fp, count \\ 5), do: %{fingerprint: fp, count: count, type: "RuntimeError"}

  test "a fingerprint escalated before a restart is held after it", %{tmp_dir: dir} do
    t = start(dir)
    assert {:escalate, _} = Triage.decide(elem(t, 0), group("fp-a"))
    assert {:hold, _, {:seen_within, _}} = Triage.decide(elem(t, 0), group("fp-a", 4))
    stop(t)

    t = start(dir)
    assert {:hold, held, {:seen_within, ms}} = Triage.decide(elem(t, 0), group("fp-a", 3))
    assert ms >= 0
    # the count since the escalation went on across the restart
    assert held.count_since_escalation == 12
    assert {:escalate, _} = Triage.decide(elem(t, 0), group("fp-b"))
    assert %{tracked: 2} = Triage.stats(elem(t, 0))
  end

  test "the window still expires across a restart", %{tmp_dir: dir} do
    t = start(dir, dedup_ms: 200)
    assert {:escalate, _} = Triage.decide(elem(t, 0), group("fp-a"))
    stop(t)
    Process.sleep(250)

    t = start(dir, dedup_ms: 200)
    assert %{tracked: 0} = Triage.stats(elem(t, 0))
    assert {:escalate, _} = Triage.decide(elem(t, 0), group("fp-a"))
  end

  test "a torn last record is dropped, a broken file set aside", %{tmp_dir: dir} do
    t = start(dir)
    assert {:escalate, _} = Triage.decide(elem(t, 0), group("fp-a"))
    stop(t)

    path = Path.join(dir, "triage.window")
    # a crash in the middle of the next record
    File.write!(path, <<0, 0, 0, 40, 131>>, [:append])
    t = start(dir)
    assert {:hold, _, {:seen_within, _}} = Triage.decide(elem(t, 0), group("fp-a"))
    stop(t)

    File.write!(path, <<0, 0, 0, 3, "abc">>)
    t = start(dir)
    assert {:escalate, _} = Triage.decide(elem(t, 0), group("fp-a"))
    assert File.exists?(path <> ".bad")
  end

  test "the file is compacted to the live entries", %{tmp_dir: dir} do
    t = start(dir, max_tracked: 10)
    for i <- 1..30, do: Triage.decide(elem(t, 0), group("fp-#{i}"))
    for _ <- 1..3000, do: Triage.decide(elem(t, 0), group("fp-30"))
    stop(t)

    # at most twice the window's records (at least 1000) stay on disk
    assert File.stat!(Path.join(dir, "triage.window")).size < 2 * 1000 * 100
    t = start(dir, max_tracked: 10)
    assert %{tracked: 10} = Triage.stats(elem(t, 0))
    assert {:hold, _, {:seen_within, _}} = Triage.decide(elem(t, 0), group("fp-30"))
    assert {:escalate, _} = Triage.decide(elem(t, 0), group("fp-1"))
  end
end
