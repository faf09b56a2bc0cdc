defmodule SelfHeal.Telemetry do
  @moduledoc """
  SelfHeal's events, for `SelfHeal.Metrics` and, when the host
  application has `:telemetry` loaded, for `:telemetry` handlers
  (`:telemetry.execute/3`; nothing is required when it is absent: SelfHeal
  has no dependency on it). `docs/dashboard.md` lists the events:

    * `[:self_heal, :capture]` - a batch of the collector: `%{events: n,
      groups: g}`, metadata `%{sources: %{source => n}}`
    * `[:self_heal, :settle]` - a group settled: `%{count: n, duration_ms:
      last_seen - first_seen}`, metadata `%{fingerprint, severity,
      decision: :escalate | :hold, reason}`
    * `[:self_heal, :escalate]` - groups sent to the port for analysis:
      `%{groups: n}`
    * `[:self_heal, :analyse]` - the port's answer to an escalation:
      `%{issues: n, tickets: n}`
    * `[:self_heal, :fix, :stage]` - a stage of a fix (the port's `fix`
      notification): `%{count: 1}`, metadata `%{fix_id, fingerprint,
      stage}`
    * `[:self_heal, :deploy]` - a fix deployed (stage `deployed`), `%{count:
      1}`, metadata `%{fix_id, fingerprint, ok}`
    * `[:self_heal, :rollback]` - a fix rolled back (stage `rolled_back`),
      `%{count: 1}`, metadata `%{fix_id, fingerprint}`

  Emitting never raises: a failing `:telemetry` is ignored.
  """

  alias SelfHeal.Metrics

  @doc "Emits `event` (see the module documentation)."
  @spec emit([atom()], map(), map()) :: :ok
  def emit(event, measurements, metadata \\ %{}) do
    Metrics.record(event, measurements, metadata)

    # loaded by the host (or by SelfHeal.Application's check at start)
    if function_exported?(:telemetry, :execute, 3) do
      try do
        # apply/3: :telemetry is not a dependency, so not known at compile time
        apply(:telemetry, :execute, [event, measurements, metadata])
      catch
        _kind, _reason -> :ok
      end
    end

    :ok
  end

  @doc "Loads `:telemetry` when the host application has it (at start)."
  @spec available?() :: boolean()
  def available?, do: Code.ensure_loaded?(:telemetry)

  @doc false
  # a batch of the collector (SelfHeal.Collector)
  @spec capture([SelfHeal.Event.t()], [map()]) :: :ok
  def capture(events, batch_groups) do
    sources = Enum.frequencies_by(events, & &1.source)
    Metrics.history(batch_groups)

    emit([:self_heal, :capture], %{events: length(events), groups: length(batch_groups)}, %{
      sources: sources
    })
  end

  @doc false
  # a group settled and what triage decided (SelfHeal.Settle)
  @spec settle(map(), :escalate | :hold, term()) :: :ok
  def settle(group, decision, reason \\ nil) do
    first = Map.get(group, :first_seen, 0)
    last = Map.get(group, :last_seen, first)

    emit(
      [:self_heal, :settle],
      # first_seen and last_seen are microseconds (SelfHeal.Event.now/0)
      %{count: Map.get(group, :count, 1), duration_ms: div(max(last - first, 0), 1000)},
      %{
        fingerprint: Map.get(group, :fingerprint),
        severity: Map.get(group, :severity),
        decision: decision,
        reason: reason
      }
    )
  end

  @doc false
  # an event of the port program (SelfHeal.Port's notifications)
  @spec port_event(map()) :: :ok
  def port_event(%{"event" => "fix", "stage" => stage} = e) when is_binary(stage) do
    meta = %{fix_id: e["fix_id"], fingerprint: e["fingerprint"], stage: stage}
    emit([:self_heal, :fix, :stage], %{count: 1}, meta)

    case stage do
      "deployed" -> emit([:self_heal, :deploy], %{count: 1}, Map.put(meta, :ok, e["ok"] == true))
      "rolled_back" -> emit([:self_heal, :rollback], %{count: 1}, meta)
      _ -> :ok
    end
  end

  def port_event(_event), do: :ok

  @doc false
  # the answer to an escalation (SelfHeal.Port)
  @spec port_reply(binary(), map()) :: :ok
  def port_reply("escalate", ok) do
    emit([:self_heal, :analyse], %{
      issues: length(List.wrap(ok["issues"])),
      tickets: length(List.wrap(ok["tickets"]))
    })
  end

  def port_reply(_cmd, _ok), do: :ok
end
