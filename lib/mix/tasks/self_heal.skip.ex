defmodule Mix.Tasks.SelfHeal.Skip do
  @shortdoc "Skips (refuses) a SelfHeal fix waiting for a human"
  @moduledoc """
  `mix self_heal.skip FIX_ID [--by NAME]`

  The fix is not deployed; its ticket gets a note. An empty, malformed or
  unknown id does nothing.
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv) do
    {opts, rest} = OptionParser.parse!(argv, strict: [by: :string])
    id = SelfHeal.CLI.fix_id!("self_heal.skip", rest)
    by = Keyword.get(opts, :by, System.get_env("USER") || "human")

    SelfHeal.CLI.main("skip", %{"id" => id, "by" => by}, fn r ->
      "fix #{r["fix_id"]} skipped by #{r["by"]}"
    end)
  end
end
