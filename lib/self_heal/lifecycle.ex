defmodule SelfHeal.Lifecycle do
  @moduledoc """
  Where one error group is in its life: `settling` (seen, its burst not
  settled yet) → `detected` (settled and escalated: a ticket) → `fixing` (a
  fix is being made, validated, waits for a human or is being deployed and
  verified) → `fixed` (its fix deployed and verified) or `rolled back` (its
  fix reverted). Off that path: `held` (settled, not escalated: below the
  minimum severity, or seen within the dedup window before escalation) and
  a fix that ended without a deploy (`failed`, `rejected`, `escalated` to
  a human, `skipped`, `expired`), shown as `detected` with that fix's
  status. A group with several fixes is at its latest one.

  Pure: the callers (`mix self_heal.groups`, `SelfHeal.Release`, the
  dashboard) pass what they know of the group: the triage's latest
  decision (`SelfHeal.Metrics.decision/1`, when this node settled it),
  whether a ticket or an escalation holds it, and the port's fixes.
  """

  @fixing ~w(fixing delivered awaiting_approval approved deploying verifying)

  @type stage :: :settling | :held | :detected | :fixing | :fixed | :rolled_back

  @doc """
  `{stage, detail}` for a group: `decision` is the triage's
  (`{severity, :escalate | :hold, reason, at, count}` or nil), `ticketed`
  whether a ticket or an escalation holds it, `fix` its latest fix (the
  port's map, string keys) or nil. `detail` is a short text or nil.
  """
  @spec stage(tuple() | nil, boolean(), map() | nil) :: {stage(), String.t() | nil}
  def stage(decision, ticketed, fix)

  def stage(_decision, _ticketed, %{"status" => status} = fix) do
    detail = "fix #{fix["id"]} #{status}"

    cond do
      status == "deployed" -> {:fixed, detail}
      status == "rolled_back" -> {:rolled_back, detail}
      status in @fixing -> {:fixing, detail}
      true -> {:detected, detail}
    end
  end

  def stage(_decision, true, _fix), do: {:detected, nil}
  def stage({_sev, :escalate, _reason, _at, _count}, _ticketed, _fix), do: {:detected, nil}

  def stage({_sev, :hold, reason, _at, _count}, _ticketed, _fix),
    do: {:held, if(reason, do: to_string(reason))}

  def stage(nil, false, nil), do: {:settling, nil}

  @doc "The stage for a fix alone (a fix's group is at least detected)."
  @spec of_fix(map()) :: {stage(), String.t() | nil}
  def of_fix(fix), do: stage(nil, true, fix)

  @doc "`\"fixing (fix 3 awaiting_approval)\"`."
  @spec label({stage(), String.t() | nil}) :: String.t()
  def label({stage, nil}), do: name(stage)
  def label({stage, detail}), do: "#{name(stage)} (#{detail})"

  @doc "The stage's name as shown."
  @spec name(stage()) :: String.t()
  def name(:rolled_back), do: "rolled back"
  def name(stage), do: Atom.to_string(stage)

  @doc """
  The latest fix of each fingerprint, and of each ticket, from the port's
  `fixes` list: `{by_fingerprint, by_ticket_id}`. A group of a cascade
  whose ticket's fix was made for another fingerprint is at that fix.
  """
  @spec index([map()]) :: {%{binary() => map()}, %{integer() => map()}}
  def index(fixes) do
    latest = fn acc, key, f ->
      case acc do
        %{^key => %{"id" => id}} when is_integer(id) ->
          if id > f["id"], do: acc, else: Map.put(acc, key, f)

        _ ->
          Map.put(acc, key, f)
      end
    end

    Enum.reduce(fixes, {%{}, %{}}, fn f, {by_fp, by_ticket} ->
      by_fp = if is_binary(f["fingerprint"]), do: latest.(by_fp, f["fingerprint"], f), else: by_fp
      by_ticket = if f["ticket_id"], do: latest.(by_ticket, f["ticket_id"], f), else: by_ticket
      {by_fp, by_ticket}
    end)
  end

  @doc "The latest fix of a fingerprint, else of its ticket (`index/1`)."
  @spec fix_for({map(), map()}, binary(), integer() | nil) :: map() | nil
  def fix_for({by_fp, by_ticket}, fp, ticket_id),
    do: Map.get(by_fp, fp) || (ticket_id && Map.get(by_ticket, ticket_id))
end
