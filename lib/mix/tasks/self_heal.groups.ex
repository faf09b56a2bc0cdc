defmodule Mix.Tasks.SelfHeal.Groups do
  @shortdoc "Lists the error groups SelfHeal escalated"
  @moduledoc """
  `mix self_heal.groups [--limit N]`

  The groups of the escalations recorded in the state directory, most
  frequent first: fingerprint, count, severity, service, lifecycle
  (`[settling]`, `[held (reason)]`, `[detected]`, `[fixing (fix 3
  awaiting_approval)]`, `[fixed (fix 3 deployed)]`, `[rolled back (fix 3
  rolled_back)]`: `SelfHeal.Lifecycle`), type and message.
  A running node's live groups: `bin/my_app rpc 'SelfHeal.Release.groups()'`
  or `SelfHeal.groups/0`.
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv) do
    case OptionParser.parse!(argv, strict: [limit: :integer]) do
      {opts, []} -> SelfHeal.CLI.task(:groups, [opts])
      _ -> Mix.raise("usage: mix self_heal.groups [--limit N]")
    end
  end
end
