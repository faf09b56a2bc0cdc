defmodule Mix.Tasks.SelfHeal.Replay do
  @shortdoc "Escalates a job's groups, or one group, again"
  @moduledoc """
  `mix self_heal.replay JOB_ID` escalates the groups of an escalation job
  again, as a new job (a failed one, or one to analyse again);
  `mix self_heal.replay FINGERPRINT` the group of that fingerprint (from
  the latest escalation that held it). An existing open ticket of the
  fingerprint is updated, not duplicated.
  """
  use Mix.Task

  @impl Mix.Task
  def run([what]), do: SelfHeal.CLI.task(:replay, [what])
  def run(_), do: Mix.raise("usage: mix self_heal.replay JOB_ID | FINGERPRINT")
end
