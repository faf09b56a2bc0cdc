defmodule SelfHeal.FakeGitHub do
  @moduledoc false
  # GitHub Issues as a FakeHTTP handler with memory: issues (labels, body,
  # state) and their comments, which it lists back (`since`, `per_page`,
  # `page`), so a test can count what the port made and the port can look
  # for its own markers. `create_delay_ms` holds the answer of an issue
  # create after the issue exists (a port killed meanwhile cannot know).
  # Pull requests too: created, listed by head, read, merged through
  # `PUT .../merge` (each call kept, see `merges/1`), merged or closed by
  # a "human" (`human_merge/3`, `close/2`); and the checks of commits, a
  # combined status and check runs a test sets (`set_checks/3`).

  alias SelfHeal.FakeHTTP
  alias SelfHeal.JSON

  def start(repo, opts \\ []) do
    {:ok, store} =
      Agent.start_link(fn ->
        %{
          issues: %{},
          next: 1,
          comment: 1,
          create_delay_ms: opts[:create_delay_ms] || 0,
          pulls: %{},
          merges: [],
          checks: {[], []},
          remote: opts[:remote]
        }
      end)

    {:ok, srv} = FakeHTTP.start(fn req -> handle(store, repo, req) end)
    Map.put(srv, :store, store)
  end

  @doc "Issues in creation order, each with its \"comments\"."
  def issues(%{store: store}),
    do: Agent.get(store, fn s -> s.issues |> Map.values() |> Enum.sort_by(& &1["number"]) end)

  def set_create_delay(%{store: store}, ms), do: Agent.update(store, &%{&1 | create_delay_ms: ms})

  @doc "Pull requests in creation order."
  def pulls(%{store: store}),
    do: Agent.get(store, fn s -> s.pulls |> Map.values() |> Enum.sort_by(& &1["number"]) end)

  @doc "The bodies of the `PUT .../merge` calls, oldest first."
  def merges(%{store: store}), do: Agent.get(store, &Enum.reverse(&1.merges))

  @doc "The combined status's statuses and the check runs of every commit."
  def set_checks(%{store: store}, statuses, check_runs),
    do: Agent.update(store, &%{&1 | checks: {statuses, check_runs}})

  def human_merge(%{store: store}, n, login),
    do: update_pull(store, n, &Map.merge(&1, merged(login, "f00d" <> String.duplicate("0", 36))))

  def close(%{store: store}, n), do: update_pull(store, n, &Map.put(&1, "state", "closed"))

  @doc "Someone pushed to the pull request's branch: its head is sha now."
  def set_head(%{store: store}, n, sha),
    do: update_pull(store, n, &put_in(&1, ["head", "sha"], sha))

  defp update_pull(store, n, fun),
    do: Agent.update(store, fn s -> %{s | pulls: Map.update!(s.pulls, n, fun)} end)

  defp merged(login, sha),
    do: %{
      "state" => "closed",
      "merged" => true,
      "merged_by" => login && %{"login" => login},
      "merge_commit_sha" => sha
    }

  defp handle(store, repo, %{method: method, path: "/repos/" <> _ = path} = req) do
    case String.split(String.replace_prefix(path, "/repos/#{repo}/", ""), "/", trim: true) do
      ["pulls" | rest] -> pull_request(store, repo, method, rest, req)
      ["commits", _sha, what] when method == "GET" -> checks(store, what)
      _ -> issue(store, repo, req)
    end
  end

  defp pull_request(store, _repo, "GET", [], %{query: query}) do
    head = URI.decode_query(query)["head"] || ""
    [_owner, branch] = String.split(head, ":", parts: 2)

    found =
      pulls(%{store: store})
      |> Enum.filter(&(&1["head"]["ref"] == branch and &1["state"] == "open"))

    FakeHTTP.json(200, found)
  end

  defp pull_request(store, repo, "POST", [], %{body: body}) do
    %{"head" => branch, "body" => text} = JSON.decode!(body)
    remote = Agent.get(store, & &1.remote)
    sha = remote && rev(remote, branch)

    pr =
      Agent.get_and_update(store, fn s ->
        n = map_size(s.pulls) + 1

        pr = %{
          "number" => n,
          "html_url" => "https://github.com/#{repo}/pull/#{n}",
          "state" => "open",
          "merged" => false,
          "body" => text,
          "head" => %{"ref" => branch, "sha" => sha}
        }

        {pr, %{s | pulls: Map.put(s.pulls, n, pr)}}
      end)

    FakeHTTP.json(201, pr)
  end

  defp pull_request(store, _repo, "GET", [n], _req) do
    case Agent.get(store, &Map.get(&1.pulls, String.to_integer(n))) do
      nil -> FakeHTTP.json(404, %{"message" => "Not Found"})
      pr -> FakeHTTP.json(200, pr)
    end
  end

  defp pull_request(store, _repo, "PUT", [n, "merge"], %{body: body}) do
    n = String.to_integer(n)
    args = JSON.decode!(body)

    Agent.get_and_update(store, fn s ->
      pr = s.pulls[n]
      s = %{s | merges: [args | s.merges]}

      cond do
        pr["state"] != "open" ->
          {FakeHTTP.json(405, %{"message" => "Pull Request is not mergeable"}), s}

        args["sha"] != pr["head"]["sha"] ->
          {FakeHTTP.json(409, %{"message" => "Head branch was modified"}), s}

        true ->
          sha = "beef" <> String.duplicate("1", 36)
          pulls = Map.put(s.pulls, n, Map.merge(pr, merged(nil, sha)))
          {FakeHTTP.json(200, %{"merged" => true, "sha" => sha}), %{s | pulls: pulls}}
      end
    end)
  end

  defp pull_request(_store, _repo, _method, _rest, _req),
    do: FakeHTTP.json(404, %{"message" => "Not Found"})

  # the branch's commit as pushed to the test's bare remote (`:remote`)
  defp rev(remote, branch) do
    case System.cmd("git", ["-C", remote, "rev-parse", "refs/heads/" <> branch],
           stderr_to_stdout: true
         ) do
      {sha, 0} -> String.trim(sha)
      _ -> nil
    end
  end

  defp checks(store, "status") do
    {statuses, _} = Agent.get(store, & &1.checks)

    state =
      cond do
        statuses == [] -> "pending"
        Enum.all?(statuses, &(&1["state"] == "success")) -> "success"
        Enum.any?(statuses, &(&1["state"] in ["failure", "error"])) -> "failure"
        true -> "pending"
      end

    FakeHTTP.json(200, %{"state" => state, "statuses" => statuses})
  end

  defp checks(store, "check-runs") do
    {_, runs} = Agent.get(store, & &1.checks)
    FakeHTTP.json(200, %{"total_count" => length(runs), "check_runs" => runs})
  end

  defp checks(_store, _what), do: FakeHTTP.json(404, %{"message" => "Not Found"})

  defp issue(store, repo, %{method: method, path: path, query: query, body: body}) do
    prefix = "/repos/#{repo}/issues"

    case {method, String.split(String.replace_prefix(path, prefix, ""), "/", trim: true)} do
      {"GET", []} -> list(store, URI.decode_query(query))
      {"POST", []} -> create(store, repo, JSON.decode!(body))
      {"POST", [n, "comments"]} -> comment(store, String.to_integer(n), JSON.decode!(body))
      {"GET", [n, "comments"]} -> comments(store, String.to_integer(n), URI.decode_query(query))
      {"POST", [n, "labels"]} -> label(store, String.to_integer(n), JSON.decode!(body))
      _ -> FakeHTTP.json(404, %{"message" => "Not Found"})
    end
  end

  defp list(store, %{"labels" => label, "state" => "open"}) do
    found =
      Agent.get(store, & &1.issues)
      |> Map.values()
      |> Enum.filter(&(label in &1["labels"] and &1["state"] == "open"))
      |> Enum.map(&Map.delete(&1, "comments"))

    FakeHTTP.json(200, found)
  end

  defp create(store, repo, %{"title" => title, "body" => text, "labels" => labels}) do
    {issue, delay} =
      Agent.get_and_update(store, fn s ->
        n = s.next

        issue = %{
          "number" => n,
          "html_url" => "https://github.com/#{repo}/issues/#{n}",
          "title" => title,
          "body" => text,
          "labels" => labels,
          "state" => "open",
          "comments" => []
        }

        {{issue, s.create_delay_ms}, %{s | issues: Map.put(s.issues, n, issue), next: n + 1}}
      end)

    answer = FakeHTTP.json(201, Map.delete(issue, "comments"))
    if delay > 0, do: {:delay, delay, answer}, else: answer
  end

  defp comment(store, n, %{"body" => text}) do
    id =
      Agent.get_and_update(store, fn s ->
        c = %{"id" => s.comment, "body" => text}
        issues = Map.update!(s.issues, n, &Map.update!(&1, "comments", fn cs -> cs ++ [c] end))
        {s.comment, %{s | issues: issues, comment: s.comment + 1}}
      end)

    FakeHTTP.json(201, %{"id" => id, "body" => text})
  end

  defp comments(store, n, query) do
    per_page = String.to_integer(query["per_page"] || "30")
    page = String.to_integer(query["page"] || "1")
    all = Agent.get(store, &get_in(&1.issues, [n, "comments"])) || []
    FakeHTTP.json(200, all |> Enum.drop((page - 1) * per_page) |> Enum.take(per_page))
  end

  defp label(store, n, %{"labels" => labels}) do
    Agent.update(store, fn s ->
      %{
        s
        | issues:
            Map.update!(
              s.issues,
              n,
              &Map.update!(&1, "labels", fn l -> Enum.uniq(l ++ labels) end)
            )
      }
    end)

    FakeHTTP.json(200, Enum.map(labels, &%{"name" => &1}))
  end
end
