defmodule SelfHeal do
  @moduledoc """
  Self-healing production for Elixir systems.

  This release captures errors (`SelfHeal.LoggerHandler`), fingerprints and
  groups them in C (`SelfHeal.Native`) and keeps the groups
  (`SelfHeal.Collector`). See `docs/architecture.md`.
  """

  @doc "The current error groups, most frequent first."
  @spec groups() :: [SelfHeal.Collector.group()]
  defdelegate groups(), to: SelfHeal.Collector
end
