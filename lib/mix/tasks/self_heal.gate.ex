defmodule Mix.Tasks.SelfHeal.Gate do
  @shortdoc "Shows or changes SelfHeal's deploy gate (kill switch, breaker)"
  @moduledoc """
  `mix self_heal.gate` shows the kill switch, the circuit breaker, the
  automatic deploys of the last hour and the consent level.

  `mix self_heal.gate kill` turns the kill switch on (no deploy starts,
  automatic or approved, until it is off); `mix self_heal.gate unkill`
  turns it off; `mix self_heal.gate reset` closes the circuit breaker
  after a human has looked at the failures that opened it.
  """
  use Mix.Task

  @impl Mix.Task
  def run([]), do: SelfHeal.CLI.task(:gate, [:status])
  def run([action]) when action in ~w(kill unkill reset), do: SelfHeal.CLI.task(:gate, [action])
  def run(_), do: Mix.raise("usage: mix self_heal.gate [kill | unkill | reset]")
end
