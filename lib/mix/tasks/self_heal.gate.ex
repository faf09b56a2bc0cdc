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
  def run(argv) do
    by = System.get_env("USER") || "human"

    {cmd, args} =
      case argv do
        [] -> {"gate_status", %{}}
        ["kill"] -> {"kill_switch", %{"on" => true, "by" => by}}
        ["unkill"] -> {"kill_switch", %{"on" => false, "by" => by}}
        ["reset"] -> {"breaker_reset", %{"by" => by}}
        _ -> Mix.raise("usage: mix self_heal.gate [kill | unkill | reset]")
      end

    SelfHeal.CLI.main(cmd, args, fn r ->
      "kill switch: #{if r["kill_switch"], do: "on", else: "off"}; " <>
        "breaker: #{r["breaker"]["state"]} (#{r["breaker"]["failures"]} consecutive failures); " <>
        "automatic deploys in the last hour: #{r["auto_deploys_last_hour"]}; " <>
        "consent: #{r["consent"]}"
    end)
  end
end
