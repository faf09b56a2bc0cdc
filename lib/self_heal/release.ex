defmodule SelfHeal.Release do
  @moduledoc """
  Operating SelfHeal: the operations behind the `mix self_heal.*` tasks,
  for a release too, where there is no Mix:

      bin/my_app eval 'SelfHeal.Release.status()'
      bin/my_app eval 'SelfHeal.Release.pause("alice")'
      bin/my_app rpc 'SelfHeal.Release.groups()'     # the running node's live groups

  Each function prints its answer and returns `:ok`, or raises (a non-zero
  exit status for `eval`) with the reason. They read and change the durable
  state in the state directory by running the port program once
  (`SelfHeal.CLI`); a running node's port picks a change up at its next
  step. `docs/operating.md` describes them.

    * `status/0` - the switches (paused, kill switch), the breaker, the
      consent, what is running, open tickets, escalations pending (the
      port's queued or running escalation jobs; inside the node also
      `SelfHeal.Port`'s batch), approvals waiting (fixes waiting for a
      human), failed jobs
    * `groups/1` - the error groups: live ones when the collector runs in
      this node (`rpc`), else those escalated so far (from the jobs), each
      with its lifecycle (`SelfHeal.Lifecycle`: settling, held, detected,
      fixing, fixed, rolled back)
    * `tickets/1` - tickets (`status: "open" | "closed"`, `limit:`)
    * `fixes/1` - fixes (`status:`, `limit:`); `fix/1` one fix with its
      validation and its diff
    * `pause/1`, `resume/1` - all automation (escalations, fixes, deploys),
      kept in the state directory across restarts
    * `replay/1` - a job id (`"42"`) or a fingerprint: its groups are
      escalated again as a new job
    * `verify_audit/0` - walks the audit log's chain
    * `approve/2`, `skip/2`, `gate/1` - as `mix self_heal.approve`,
      `self_heal.skip`, `self_heal.gate`
    * `consent/2` - the service's consent level (`nil`), or grants one
      (`"observe" | "diagnose" | "repair"`), as `mix self_heal.consent`
  """

  alias SelfHeal.{CLI, Lifecycle}

  @doc "Switches, breaker, running work, open tickets, escalations pending, approvals waiting, failed jobs."
  def status, do: print(text(:status, []))
  @doc "Error groups (`limit:`): live in this node, else the escalated ones."
  def groups(opts \\ []), do: print(text(:groups, [opts]))
  @doc "Tickets (`status:`, `limit:`)."
  def tickets(opts \\ []), do: print(text(:tickets, [opts]))
  @doc "Fixes (`status:`, `limit:`)."
  def fixes(opts \\ []), do: print(text(:fixes, [opts]))
  @doc "One fix with its validation and its diff."
  def fix(id), do: print(text(:fix, [id]))
  @doc "Pauses all automation (kept across restarts)."
  def pause(by \\ by()), do: print(text(:pause, [by]))
  @doc "Resumes automation."
  def resume(by \\ by()), do: print(text(:resume, [by]))
  @doc "Escalates a job's groups (a job id) or a group (a fingerprint) again."
  def replay(job_or_fingerprint), do: print(text(:replay, [job_or_fingerprint]))
  @doc "Verifies the audit log's chain."
  def verify_audit, do: print(text(:verify_audit, []))
  @doc "Approves a fix waiting for a human."
  def approve(id, by \\ by()), do: print(text(:approve, [id, by]))
  @doc "Skips (refuses) a fix waiting for a human."
  def skip(id, by \\ by()), do: print(text(:skip, [id, by]))
  @doc "The gate (no action), or `:kill`, `:unkill`, `:reset`."
  def gate(action \\ :status), do: print(text(:gate, [action]))

  @doc "The consent level in force (`nil`), or grants `level`."
  def consent(level \\ nil, by \\ by()), do: print(text(:consent, [level, by]))

  defp print({:ok, out}), do: IO.puts(out)
  defp print({:error, reason}), do: raise(reason)

  @doc false
  # The answer of an operation as text: `{:ok, text}` or `{:error, reason}`.
  @spec text(atom(), list()) :: {:ok, String.t()} | {:error, String.t()}
  def text(:status, []) do
    with {:ok, gate} <- port("gate_status", %{}),
         {:ok, %{"tickets" => open}} <- port("tickets", %{"status" => "open", "limit" => 1000}),
         {:ok, %{"fixes" => waiting}} <-
           port("fixes", %{"status" => "awaiting_approval", "limit" => 1000}),
         {:ok, %{"jobs" => failed}} <- port("jobs", %{"status" => "failed", "limit" => 1000}),
         {:ok, stats} <- port("stats", %{"histograms" => false}) do
      {:ok,
       Enum.join(
         [
           "automation: #{if gate["paused"], do: "paused", else: "running"}",
           "kill switch: #{on_off(gate["kill_switch"])}",
           "breaker: #{gate["breaker"]["state"]} (#{gate["breaker"]["failures"]} consecutive failures)",
           "consent: #{gate["consent"]}",
           "automatic deploys in the last hour: #{gate["auto_deploys_last_hour"]}",
           "fixes running: #{gate["fixes_running"]}, waiting for a slot: #{gate["fixes_waiting"]}, " <>
             "deploy running: #{if gate["deploy_running"], do: "yes", else: "no"}",
           "open tickets: #{length(open)}",
           "escalations pending: #{escalations_pending(stats)}",
           "approvals waiting: #{length(waiting)} (fixes waiting for a human)",
           "failed jobs: #{length(failed)}"
         ],
         "\n"
       )}
    end
  end

  def text(:groups, [opts]) do
    # each group's lifecycle: the triage's decision (live groups settled
    # here), its ticket, the latest fix of it or of its ticket
    fixes = Lifecycle.index(listed("fixes", %{"limit" => 1000}))

    tickets =
      for t <- listed("tickets", %{"limit" => 1000}),
          fp <- List.wrap(t["fingerprints"] || t["fingerprint"]),
          into: %{},
          do: {fp, t["id"]}

    if Process.whereis(SelfHeal.Collector) do
      SelfHeal.groups()
      |> Enum.map(fn g ->
        g
        |> SelfHeal.Port.analysis_group()
        |> Map.put("lifecycle", lifecycle(g.fingerprint, decision(g.fingerprint), tickets, fixes))
      end)
      |> groups_text()
      |> then(&{:ok, &1})
    else
      with {:ok, %{"jobs" => jobs}} <- port("jobs", %{"limit" => limit(opts)}) do
        jobs
        |> Enum.filter(&(&1["kind"] == "escalate"))
        |> Enum.flat_map(&(get_in(&1, ["input", "groups"]) || []))
        |> Enum.uniq_by(& &1["id"])
        # an escalated group is detected at least
        |> Enum.map(&Map.put(&1, "lifecycle", lifecycle(&1["id"], :escalated, tickets, fixes)))
        |> groups_text()
        |> then(&{:ok, &1})
      end
    end
  end

  def text(:tickets, [opts]) do
    args = %{"limit" => limit(opts)} |> put_opt("status", opts[:status])

    with {:ok, %{"tickets" => tickets}} <- port("tickets", args) do
      {:ok,
       lines(tickets, "no tickets", fn t ->
         "##{t["id"]} #{t["status"]} #{t["severity"]} x#{t["count"]} #{t["title"]}" <>
           if(t["url"], do: " #{t["url"]}", else: "")
       end)}
    end
  end

  def text(:fixes, [opts]) do
    args = %{"limit" => limit(opts)} |> put_opt("status", opts[:status])

    with {:ok, %{"fixes" => fixes}} <- port("fixes", args) do
      {:ok,
       lines(fixes, "no fixes", fn f ->
         "fix #{f["id"]} #{f["status"]} #{short(f["fingerprint"])} " <>
           "confidence #{f["confidence"] || "-"} ticket #{f["ticket_id"] || "-"} " <>
           "group #{Lifecycle.name(elem(Lifecycle.of_fix(f), 0))}"
       end)}
    end
  end

  def text(:fix, [id]) do
    with {:ok, id} <- fix_id(id),
         {:ok, fix} <- port("fix_get", %{"id" => id}) do
      validation = fix["validation"]

      {:ok,
       Enum.join(
         [
           "fix #{fix["id"]}: #{fix["status"]}",
           "fingerprint: #{fix["fingerprint"]}; group: #{Lifecycle.label(Lifecycle.of_fix(fix))}",
           "ticket: #{fix["ticket_id"] || "-"}; branch: #{fix["branch"] || "-"}",
           "commits: base #{fix["base_commit"] || "-"}, fix #{fix["fix_commit"] || "-"}",
           "confidence: #{fix["confidence"] || "-"}; decided by: #{fix["decided_by"] || "-"}",
           "validation:",
           validation_text(validation),
           "diff:",
           diff(fix)
         ],
         "\n"
       )}
    end
  end

  def text(:consent, [level, by]) do
    args = if level, do: %{"level" => to_string(level), "by" => to_string(by)}, else: %{}

    with {:ok, r} <- port("consent", args) do
      state = r["state"] || %{}

      {:ok,
       "service #{r["service"]}: consent #{r["level"]}" <>
         if(state["offered"], do: " (offered: #{state["offered"]})", else: "") <>
         "; approved fixes without a rollback: #{state["streak"] || 0}"}
    end
  end

  def text(:pause, [by]), do: switch("pause", true, by, "automation paused")
  def text(:resume, [by]), do: switch("pause", false, by, "automation resumed")

  def text(:replay, [what]) do
    what = to_string(what)

    groups =
      case Integer.parse(what) do
        {id, ""} -> job_groups(id)
        _ -> fingerprint_groups(what)
      end

    with {:ok, groups} <- groups,
         replay = System.os_time(:millisecond),
         {:ok, reply} <- port("escalate", %{"groups" => groups, "replay" => replay}) do
      {:ok,
       "replayed #{length(groups)} group(s) as job #{reply["job_id"]}: " <>
         "#{length(reply["tickets"] || [])} ticket(s)"}
    end
  end

  def text(:verify_audit, []) do
    with {:ok, report} <- port("verify-audit", %{}) do
      if report["ok"] == true,
        do: {:ok, "audit log ok: #{report["records"]} records, head #{report["head"]}"},
        else: {:error, "audit log broken: #{report["error"] || inspect(report)}"}
    end
  end

  def text(:approve, [id, by]), do: decide("approve", "approved", id, by)
  def text(:skip, [id, by]), do: decide("skip", "skipped", id, by)

  def text(:gate, [action]) do
    by = by()

    request =
      case to_string(action) do
        "" -> {"gate_status", %{}}
        "status" -> {"gate_status", %{}}
        "kill" -> {"kill_switch", %{"on" => true, "by" => by}}
        "unkill" -> {"kill_switch", %{"on" => false, "by" => by}}
        "reset" -> {"breaker_reset", %{"by" => by}}
        _ -> :usage
      end

    with {cmd, args} <- request,
         {:ok, r} <- port(cmd, args) do
      {:ok,
       "kill switch: #{on_off(r["kill_switch"])}; " <>
         "breaker: #{r["breaker"]["state"]} (#{r["breaker"]["failures"]} consecutive failures); " <>
         "automatic deploys in the last hour: #{r["auto_deploys_last_hour"]}; " <>
         "consent: #{r["consent"]}"}
    else
      :usage -> {:error, "usage: gate [kill | unkill | reset]"}
      error -> error
    end
  end

  # ------------------------------------------------------------ helpers

  # the groups of escalation jobs the port has not finished analysing; and,
  # inside the node (`rpc`), those SelfHeal.Port holds in its batch
  defp escalations_pending(stats) do
    queued = "#{stats["escalations_pending"] || 0} queued or analysed by the port"

    case Process.whereis(SelfHeal.Port) &&
           safe(fn -> SelfHeal.Port.escalations_pending(SelfHeal.Port) end) do
      n when is_integer(n) -> "#{queued}, #{n} in SelfHeal.Port's batch"
      _ -> queued
    end
  end

  defp safe(fun) do
    fun.()
  catch
    :exit, _ -> nil
  end

  defp port(cmd, args) do
    case CLI.run(cmd, args) do
      {:ok, reply} -> {:ok, reply}
      {:error, %{"code" => code, "message" => message}} -> {:error, "#{cmd}: #{code}: #{message}"}
      {:error, other} -> {:error, "#{cmd}: #{inspect(other)}"}
    end
  end

  defp switch(cmd, on, by, done) do
    with {:ok, _} <- port(cmd, %{"on" => on, "by" => to_string(by)}),
         do: {:ok, "#{done} by #{by}"}
  end

  defp decide(cmd, done, id, by) do
    with {:ok, id} <- fix_id(id),
         {:ok, r} <- port(cmd, %{"id" => id, "by" => to_string(by)}),
         do: {:ok, "fix #{r["fix_id"]} #{done} by #{r["by"]}"}
  end

  defp fix_id(id) when is_integer(id) and id > 0, do: {:ok, id}

  defp fix_id(id) when is_binary(id) do
    case Integer.parse(String.replace_prefix(id, "fix-", "")) do
      {n, ""} when n > 0 -> {:ok, n}
      _ -> {:error, "not a fix id (a positive number): #{inspect(id)}; nothing was done"}
    end
  end

  defp fix_id(id), do: {:error, "not a fix id: #{inspect(id)}; nothing was done"}

  defp job_groups(id) do
    case port("job", %{"id" => id}) do
      {:ok, %{"kind" => "escalate", "input" => %{"groups" => [_ | _] = groups}}} -> {:ok, groups}
      {:ok, %{"kind" => kind}} -> {:error, "job #{id} is a #{kind} job, not an escalation"}
      error -> error
    end
  end

  # a live group of this node, else the latest escalation that held it
  defp fingerprint_groups(fp) do
    live =
      if Process.whereis(SelfHeal.Collector),
        do: Enum.find(SelfHeal.groups(), &(&1.fingerprint == fp))

    if live do
      {:ok, [SelfHeal.Port.analysis_group(live)]}
    else
      with {:ok, %{"jobs" => jobs}} <- port("jobs", %{"limit" => 1000}) do
        jobs
        |> Enum.flat_map(&(get_in(&1, ["input", "groups"]) || []))
        |> Enum.find(&(&1["id"] == fp))
        |> case do
          nil -> {:error, "no group #{fp} (neither live here nor in an escalation)"}
          group -> {:ok, [group]}
        end
      end
    end
  end

  defp groups_text(groups) do
    groups
    |> Enum.sort_by(&(-(&1["count"] || 0)))
    |> lines("no groups", fn g ->
      "#{short(g["id"])} x#{g["count"]} #{g["severity"] || "-"} #{g["service"] || "-"} " <>
        "[#{g["lifecycle"]}] #{g["type"]}: #{String.slice(to_string(g["message"]), 0, 100)}"
    end)
  end

  # a list the port answers with, or [] (no port program, no state)
  defp listed(cmd, args) do
    case CLI.run(cmd, args) do
      {:ok, %{^cmd => list}} when is_list(list) -> list
      _ -> []
    end
  end

  defp decision(fp) do
    if Process.whereis(SelfHeal.Metrics), do: SelfHeal.Metrics.decision(fp)
  end

  defp lifecycle(fp, decision, tickets, fixes) do
    ticket = tickets[fp]
    escalated = decision == :escalated or ticket != nil
    decision = if decision == :escalated, do: nil, else: decision
    Lifecycle.label(Lifecycle.stage(decision, escalated, Lifecycle.fix_for(fixes, fp, ticket)))
  end

  defp validation_text(nil), do: "  (not validated yet)"

  defp validation_text(v) when is_map(v) do
    v
    |> Enum.reject(fn {_k, val} -> is_map(val) or is_list(val) end)
    |> Enum.sort()
    |> Enum.map_join("\n", fn {k, val} -> "  #{k}: #{inspect(val)}" end)
  end

  defp validation_text(v), do: "  #{inspect(v)}"

  # the dry-run patch, else the branch's commits in the repository
  defp diff(fix) do
    patch = get_in(fix, ["delivery", "patch"])
    repo = get_in(CLI.port_config(), ["fix", "repo"])

    cond do
      is_binary(patch) and File.regular?(patch) ->
        File.read!(patch)

      is_binary(repo) and is_binary(fix["base_commit"]) and is_binary(fix["fix_commit"]) ->
        case System.cmd("git", ["-C", repo, "diff", fix["base_commit"], fix["fix_commit"]],
               stderr_to_stdout: true
             ) do
          {out, 0} -> out
          {out, _} -> "(no diff: #{String.trim(out)})"
        end

      true ->
        "(no diff yet)"
    end
  end

  defp lines([], empty, _fun), do: empty
  defp lines(items, _empty, fun), do: Enum.map_join(items, "\n", fun)

  defp put_opt(map, _key, nil), do: map
  defp put_opt(map, key, value), do: Map.put(map, key, to_string(value))

  defp limit(opts), do: Keyword.get(opts, :limit, 100)
  defp short(nil), do: "-"
  defp short(fp), do: String.slice(fp, 0, 12)
  defp on_off(true), do: "on"
  defp on_off(_), do: "off"

  @doc false
  def by, do: System.get_env("USER") || "human"
end
