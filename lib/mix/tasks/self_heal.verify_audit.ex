defmodule Mix.Tasks.SelfHeal.VerifyAudit do
  @shortdoc "Verifies SelfHeal's audit log (its hash chain and anchor)"
  @moduledoc """
  `mix self_heal.verify_audit`

  Walks the audit log's chain (`docs/state.md`) and only reads it; exit
  status 1 when it does not hold.
  """
  use Mix.Task

  @impl Mix.Task
  def run([]), do: SelfHeal.CLI.task(:verify_audit, [])
  def run(_), do: Mix.raise("usage: mix self_heal.verify_audit")
end
