defmodule Mix.Tasks.SelfHeal.Status do
  @shortdoc "Shows what SelfHeal is doing (switches, tickets, escalations, approvals, failed jobs)"
  @moduledoc """
  `mix self_heal.status`

  Whether automation is paused, the kill switch, the circuit breaker, the
  consent level, the fixes and deploy running, the open tickets, the
  escalations pending (groups of the escalation jobs the port has queued
  or running), the approvals waiting (fixes waiting for a human) and the
  failed jobs, from the state directory.
  """
  use Mix.Task

  @impl Mix.Task
  def run([]), do: SelfHeal.CLI.task(:status, [])
  def run(_), do: Mix.raise("usage: mix self_heal.status")
end
