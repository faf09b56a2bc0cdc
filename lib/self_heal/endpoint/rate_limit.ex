defmodule SelfHeal.Endpoint.RateLimit do
  @moduledoc """
  Per-source token buckets for `SelfHeal.Endpoint`, in a public ETS table
  shared by the connection processes.

  `{requests, per_ms}` allows bursts of `requests` requests and refills at
  `requests` per `per_ms` milliseconds. It is kept as a generic cell rate
  algorithm (GCRA): one integer per source, the theoretical arrival time
  of the next request in microseconds, updated by compare-and-swap
  (`:ets.select_replace/2`), so concurrent connections of one source never
  lose an update and no process serialises the checks.

  Bounded: at most `max_sources` rows. `sweep/1` (run periodically by the
  listener) deletes rows whose bucket is full again, since they are
  equivalent to no row; when the table is still full, a new source is
  refused (429) rather than tracked.
  """

  @type limit :: {pos_integer(), pos_integer()} | nil

  @doc "A new table (owned by the caller)."
  @spec new() :: :ets.tid()
  def new do
    :ets.new(:self_heal_endpoint_rate, [
      :set,
      :public,
      read_concurrency: true,
      write_concurrency: true
    ])
  end

  @doc """
  Takes one token for `source`: `:ok`, or `{:error, retry_after_ms}` when
  its bucket is empty.
  """
  @spec check(:ets.tid(), term(), limit(), pos_integer(), integer()) ::
          :ok | {:error, pos_integer()}
  def check(tab, source, limit, max_sources, now_us \\ now())

  def check(_tab, _source, nil, _max_sources, _now_us), do: :ok

  def check(tab, source, {requests, per_ms}, max_sources, now_us) do
    interval = max(div(per_ms * 1000, requests), 1)
    burst = interval * requests
    take(tab, source, interval, burst, max_sources, now_us, 8)
  end

  # A lost compare-and-swap means another connection of the same source
  # took a token at the same moment; retried a few times, then refused.
  defp take(_tab, _source, interval, _burst, _max, _now, 0), do: {:error, ceil_ms(interval)}

  defp take(tab, source, interval, burst, max_sources, now_us, tries) do
    case :ets.lookup(tab, source) do
      [] ->
        cond do
          :ets.info(tab, :size) >= max_sources -> {:error, 1000}
          :ets.insert_new(tab, {source, now_us + interval}) -> :ok
          true -> take(tab, source, interval, burst, max_sources, now_us, tries - 1)
        end

      [{_, tat}] ->
        new_tat = max(tat, now_us) + interval

        cond do
          new_tat - now_us > burst ->
            {:error, ceil_ms(new_tat - now_us - burst)}

          cas(tab, source, tat, new_tat) ->
            :ok

          true ->
            take(tab, source, interval, burst, max_sources, now_us, tries - 1)
        end
    end
  end

  # Replaces {source, tat} by {source, new_tat} only if the row still holds
  # tat. The key is bound in the match head, so this is one keyed lookup;
  # sources are terms without match-spec variables (address tuples).
  defp cas(tab, source, tat, new_tat) do
    :ets.select_replace(tab, [{{source, tat}, [], [{{{:const, source}, new_tat}}]}]) == 1
  end

  @doc """
  The source a client address counts as: IPv6 clients by their /64, the
  block one client usually holds; IPv4-mapped addresses (a dual-stack
  listener) as their IPv4 address.
  """
  @spec source(:inet.ip_address() | nil) :: term()
  def source({0, 0, 0, 0, 0, 0xFFFF, ab, cd}),
    do: {div(ab, 256), rem(ab, 256), div(cd, 256), rem(cd, 256)}

  def source({a, b, c, d, _, _, _, _}), do: {:v6, a, b, c, d}
  def source(ip), do: ip

  @doc "Deletes the rows of sources whose bucket is full again."
  @spec sweep(:ets.tid(), integer()) :: non_neg_integer()
  def sweep(tab, now_us \\ now()) do
    :ets.select_delete(tab, [{{:_, :"$1"}, [{:<, :"$1", now_us}], [true]}])
  end

  defp ceil_ms(us), do: max(div(us + 999, 1000), 1)

  defp now, do: System.monotonic_time(:microsecond)
end
