defmodule Mix.Tasks.SelfHeal.Pause do
  @shortdoc "Pauses SelfHeal's automation (escalations, fixes, deploys)"
  @moduledoc """
  `mix self_heal.pause [--by NAME]`

  No escalation, no new fix and no deploy until `mix self_heal.resume`;
  errors are still captured and grouped, and settled groups wait (bounded)
  to be escalated once resumed. Kept in the state directory: a restart
  stays paused.
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv), do: SelfHeal.CLI.switch(:pause, argv)
end
