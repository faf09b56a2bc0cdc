defmodule SelfHeal.FakeGitHub do
  @moduledoc false
  # GitHub Issues as a FakeHTTP handler with memory: issues (labels, body,
  # state) and their comments, which it lists back (`since`, `per_page`,
  # `page`), so a test can count what the port made and the port can look
  # for its own markers. `create_delay_ms` holds the answer of an issue
  # create after the issue exists (a port killed meanwhile cannot know).

  alias SelfHeal.FakeHTTP
  alias SelfHeal.Port.JSON

  def start(repo, opts \\ []) do
    {:ok, store} =
      Agent.start_link(fn ->
        %{issues: %{}, next: 1, comment: 1, create_delay_ms: opts[:create_delay_ms] || 0}
      end)

    {:ok, srv} = FakeHTTP.start(fn req -> handle(store, repo, req) end)
    Map.put(srv, :store, store)
  end

  @doc "Issues in creation order, each with its \"comments\"."
  def issues(%{store: store}),
    do: Agent.get(store, fn s -> s.issues |> Map.values() |> Enum.sort_by(& &1["number"]) end)

  def set_create_delay(%{store: store}, ms), do: Agent.update(store, &%{&1 | create_delay_ms: ms})

  defp handle(store, repo, %{method: method, path: path, query: query, body: body}) do
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
