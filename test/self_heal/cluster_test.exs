defmodule SelfHeal.ClusterTest do
  # Three real BEAM nodes (:peer, on loopback) running the application in
  # cluster mode: an error raised on all three settles once, on its owner.
  use ExUnit.Case, async: false

  alias SelfHeal.{Event, Settle}

  @moduletag :cluster
  @moduletag timeout: 60_000

  @scope :"Elixir.SelfHeal.Settle.pg"

  setup_all do
    {_, 0} = System.cmd("epmd", ["-daemon"])

    unless Node.alive?() do
      {:ok, _} =
        :net_kernel.start([
          :"sh_cluster_#{System.unique_integer([:positive])}@127.0.0.1",
          :longnames
        ])
    end

    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    peers =
      for i <- 1..3 do
        name = ~c"sh_peer#{i}_#{System.unique_integer([:positive])}"

        {:ok, pid, node} =
          :peer.start_link(%{name: name, host: ~c"127.0.0.1", longnames: true, args: paths})

        :ok = :erpc.call(node, Application, :put_env, [:self_heal, :logger_handler, false])

        :ok =
          :erpc.call(node, Application, :put_env, [
            :self_heal,
            :settle,
            [cluster: true, settle_ms: 400, max_wait_ms: 20_000, shards: 2]
          ])

        :ok = :erpc.call(node, Application, :put_env, [:self_heal, :sink, [log: false]])
        {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:self_heal])
        {pid, node}
      end

    nodes = Enum.map(peers, &elem(&1, 1))
    for a <- nodes, b <- nodes, a != b, do: true = :erpc.call(a, Node, :connect, [b])
    wait_members(nodes, 6)

    on_exit(fn ->
      for {pid, _} <- peers do
        try do
          :peer.stop(pid)
        catch
          # already gone with the setup_all process it was linked to
          :exit, _ -> :ok
        end
      end
    end)

    %{peers: peers, nodes: nodes}
  end

  defp wait_members(nodes, n, tries \\ 200) do
    counts =
      Enum.map(nodes, fn node ->
        length(:erpc.call(node, :pg, :get_members, [@scope, {Settle, Settle}]))
      end)

    cond do
      Enum.all?(counts, &(&1 == n)) -> :ok
      tries == 0 -> flunk("pg members: #{inspect(counts)}")
      true -> Process.sleep(20) && wait_members(nodes, n, tries - 1)
    end
  end

  defp crash(i) do
    Event.new(
      type: "RuntimeError",
      message: "order #{i} failed",
      stacktrace: [{MyApp.Orders, :place, 1, [file: ~c"lib/my_app/orders.ex", line: 7]}]
    )
  end

  defp raise_on(nodes, n) do
    for node <- nodes do
      :ok = :erpc.call(node, SelfHeal.Collector, :push, [for(i <- 1..n, do: crash(i))])
    end
  end

  defp escalated(node), do: :erpc.call(node, SelfHeal.Orchestrator.Sink, :escalated, [])

  defp wait_escalated(nodes, want, tries \\ 300) do
    found = for node <- nodes, g <- escalated(node), do: {node, g}

    cond do
      length(found) >= want -> found
      tries == 0 -> flunk("escalated: #{inspect(found)}")
      true -> Process.sleep(20) && wait_escalated(nodes, want, tries - 1)
    end
  end

  test "one error on three nodes settles once, on its owner; another owner takes over", %{
    peers: peers,
    nodes: nodes
  } do
    raise_on(nodes, 10)
    [{owner, group}] = wait_escalated(nodes, 1)
    Process.sleep(500)
    assert [{^owner, ^group}] = for(n <- nodes, g <- escalated(n), do: {n, g})
    assert group.count == 30
    # every node agrees on the owner
    for node <- nodes do
      assert :erpc.call(node, Settle, :owner_of, [group.fingerprint]) == owner
    end

    # open counts on the owner, then the owner dies
    raise_on(nodes, 5)
    Process.sleep(150)
    {owner_pid, ^owner} = Enum.find(peers, &(elem(&1, 1) == owner))
    :peer.stop(owner_pid)
    rest = nodes -- [owner]
    wait_members(rest, 4)

    raise_on(rest, 5)
    found = wait_escalated(rest, 1)
    [{new_owner, regroup}] = found
    assert new_owner in rest
    assert regroup.fingerprint == group.fingerprint
    # the dead owner's open counts (15) are lost; the survivors' 10 are not
    assert regroup.count == 10
  end
end
