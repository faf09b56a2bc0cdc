defmodule Mix.Tasks.SelfHeal.Approve do
  @shortdoc "Approves a SelfHeal fix waiting for a human"
  @moduledoc """
  `mix self_heal.approve FIX_ID [--by NAME]`

  Approves the fix (it must be awaiting approval and not expired); the
  running port deploys it when the deploy slot is free and the kill switch
  is off. An empty, malformed or unknown id does nothing.
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv) do
    {opts, rest} = OptionParser.parse!(argv, strict: [by: :string])
    id = SelfHeal.CLI.fix_id!("self_heal.approve", rest)
    by = Keyword.get(opts, :by, System.get_env("USER") || "human")

    SelfHeal.CLI.main("approve", %{"id" => id, "by" => by}, fn r ->
      "fix #{r["fix_id"]} approved by #{r["by"]}"
    end)
  end
end
