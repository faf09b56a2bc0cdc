defmodule Mix.Tasks.SelfHeal.Fixes do
  @shortdoc "Lists SelfHeal's fixes, or shows one with its validation and diff"
  @moduledoc """
  `mix self_heal.fixes [--status STATUS] [--limit N]` lists the fixes,
  newest first (`--status awaiting_approval` for those waiting for a
  human).

  `mix self_heal.fixes ID` shows one: status, commits, confidence, who
  decided, its validation and its diff.
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv) do
    case OptionParser.parse!(argv, strict: [status: :string, limit: :integer]) do
      {opts, []} -> SelfHeal.CLI.task(:fixes, [opts])
      {[], [id]} -> SelfHeal.CLI.task(:fix, [id])
      _ -> Mix.raise("usage: mix self_heal.fixes [ID | --status STATUS --limit N]")
    end
  end
end
