defmodule Mix.Tasks.SelfHeal.Consent do
  @shortdoc "Shows or grants the service's consent level"
  @moduledoc """
  `mix self_heal.consent [observe|diagnose|repair] [--by NAME]`

  Without a level: the level in force, a level offered by earned trust,
  and the count of approved fixes deployed without a rollback. With one:
  stores it (it overrides `gate.consent`), announced and audited; the
  answer to the first-consent question and the way to accept an offer
  (docs/recovery.md).
  """
  use Mix.Task

  @impl Mix.Task
  def run(argv) do
    case OptionParser.parse!(argv, strict: [by: :string]) do
      {opts, rest} when length(rest) <= 1 ->
        SelfHeal.CLI.task(:consent, [
          List.first(rest),
          Keyword.get(opts, :by, SelfHeal.Release.by())
        ])

      _ ->
        Mix.raise("usage: mix self_heal.consent [observe|diagnose|repair] [--by NAME]")
    end
  end
end
