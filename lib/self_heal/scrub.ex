defmodule SelfHeal.Scrub do
  @moduledoc """
  Secrets and personal data out of what SelfHeal keeps: the C scrubber
  (`c_src/scrub.c`, `docs/privacy.md`) behind a NIF, with the built-in
  rules plus the configured patterns (`scrub.patterns` of the port's
  configuration, the same the port program uses).

  `SelfHeal.Collector` scrubs the sample event of every group it keeps or
  sends on, so `SelfHeal.groups/0`, the settle stage, triage and the
  orchestrator never hold raw error text. With a template miner it also
  scrubs every event's message before the batch is fingerprinted, so the
  miner's templates and its snapshot hold none either; a text without
  secrets comes back as the same binary, so its grouping does not change.
  """

  alias SelfHeal.{Event, Native}

  @max_depth 8

  @typedoc "A compiled scrubber, or nil for the built-in rules only."
  @type t :: Native.scrubber() | nil

  @doc """
  Compiles a scrubber from POSIX extended regular expressions (at most 64,
  each at most 1 KiB; `docs/privacy.md` says what is refused).
  """
  @spec new([binary()]) :: {:ok, Native.scrubber()} | {:error, binary()}
  def new(patterns \\ []) when is_list(patterns), do: Native.scrubber_new_nif(patterns)

  @doc "The patterns of a port configuration (`%{\"scrub\" => %{\"patterns\" => [...]}}`)."
  @spec patterns(map() | nil) :: [binary()]
  def patterns(%{"scrub" => %{"patterns" => patterns}}) when is_list(patterns), do: patterns
  def patterns(_config), do: []

  @doc "Scrubs one text."
  @spec text(t(), binary()) :: binary()
  def text(scrubber, text) when is_binary(text), do: Native.scrub_nif(scrubber, text)

  @doc """
  Scrubs an event's message, type, text stack trace and metadata (binaries
  at any depth of maps, lists and tuples). The arguments of an Erlang stack
  trace's frames become their arity.
  """
  @spec event(t(), Event.t()) :: Event.t()
  def event(scrubber, %Event{} = e) do
    %{
      e
      | message: text(scrubber, e.message || ""),
        type: maybe(scrubber, e.type),
        stacktrace: stack(scrubber, e.stacktrace),
        metadata: term(scrubber, e.metadata, 0)
    }
  end

  defp maybe(_scrubber, nil), do: nil
  defp maybe(scrubber, bin) when is_binary(bin), do: text(scrubber, bin)
  defp maybe(_scrubber, other), do: other

  defp stack(scrubber, text) when is_binary(text), do: text(scrubber, text)

  defp stack(_scrubber, entries) when is_list(entries) do
    Enum.map(entries, fn
      {m, f, args, loc} when is_list(args) -> {m, f, length(args), loc}
      other -> other
    end)
  end

  defp stack(_scrubber, other), do: other

  defp term(scrubber, bin, _depth) when is_binary(bin), do: text(scrubber, bin)
  defp term(_scrubber, _term, depth) when depth >= @max_depth, do: :scrubbed

  defp term(scrubber, map, depth) when is_map(map) and not is_struct(map),
    do: Map.new(map, fn {k, v} -> {k, term(scrubber, v, depth + 1)} end)

  defp term(scrubber, list, depth) when is_list(list) do
    if List.improper?(list),
      do: :scrubbed,
      else: Enum.map(list, &term(scrubber, &1, depth + 1))
  end

  defp term(scrubber, tuple, depth) when is_tuple(tuple),
    do: tuple |> Tuple.to_list() |> Enum.map(&term(scrubber, &1, depth + 1)) |> List.to_tuple()

  defp term(_scrubber, other, _depth)
       when is_atom(other) or is_number(other) or is_pid(other) or is_reference(other),
       do: other

  defp term(scrubber, other, _depth), do: text(scrubber, inspect(other, limit: 50))
end
