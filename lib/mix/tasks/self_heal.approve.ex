defmodule Mix.Tasks.SelfHeal.Approve do
  @shortdoc "Approves a SelfHeal fix waiting for a human"
  @moduledoc """
  `mix self_heal.approve FIX_ID [--by NAME]`

  Approves the fix (it must be awaiting approval and not expired); the
  running port deploys it when the deploy slot is free, the kill switch is
  off and automation is not paused. An empty, malformed or unknown id does
  nothing and exits with status 1.
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv), do: SelfHeal.CLI.decide(:approve, argv)
end
