defmodule Mix.Tasks.SelfHeal.Tickets do
  @shortdoc "Lists SelfHeal's tickets"
  @moduledoc """
  `mix self_heal.tickets [--status open|closed] [--limit N]`

  Newest first: id, status, severity, count, title and URL.
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv) do
    case OptionParser.parse!(argv, strict: [status: :string, limit: :integer]) do
      {opts, []} -> SelfHeal.CLI.task(:tickets, [opts])
      _ -> Mix.raise("usage: mix self_heal.tickets [--status open|closed] [--limit N]")
    end
  end
end
