defmodule Mix.Tasks.SelfHeal.Resume do
  @shortdoc "Resumes SelfHeal's automation after mix self_heal.pause"
  @moduledoc """
  `mix self_heal.resume [--by NAME]`
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv), do: SelfHeal.CLI.switch(:resume, argv)
end
