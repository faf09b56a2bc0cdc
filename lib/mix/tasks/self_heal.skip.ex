defmodule Mix.Tasks.SelfHeal.Skip do
  @shortdoc "Skips (refuses) a SelfHeal fix waiting for a human"
  @moduledoc """
  `mix self_heal.skip FIX_ID [--by NAME]`

  The fix is not deployed; its ticket gets a note. An empty, malformed or
  unknown id does nothing and exits with status 1.
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv), do: SelfHeal.CLI.decide(:skip, argv)
end
