defmodule SelfHeal.Endpoint.Resume do
  @moduledoc """
  Resume points of chunks the endpoint took in part: a chunk larger than
  one admission slice that got 503 after some of its slices were handed to
  the collector leaves `{client, SHA-256 of the chunk} => progress` here,
  so the client's retry of the same bytes continues after what was taken
  instead of delivering it twice.

  A public ETS table owned by the listener. Bounded: at most
  `max_resumes` rows (a new one beyond that is not kept; that retry then
  delivers its chunk from the start, at least once) and each row lives
  `ttl/0` (swept with the rate table).
  """

  @ttl_ms 600_000

  @doc "How long a resume point is kept, in milliseconds."
  @spec ttl() :: pos_integer()
  def ttl, do: @ttl_ms

  @doc "A new table (owned by the caller)."
  @spec new() :: :ets.tid()
  def new, do: :ets.new(:self_heal_endpoint_resume, [:set, :public, write_concurrency: true])

  @doc "Removes and returns the progress kept under `key` (nil when none)."
  @spec take(:ets.tid(), term()) :: map() | nil
  def take(_tab, nil), do: nil

  def take(tab, key) do
    case :ets.take(tab, key) do
      [{^key, progress, _expires}] -> progress
      [] -> nil
    end
  end

  @doc "Keeps `progress` under `key`, unless the table is full."
  @spec put(:ets.tid(), term(), map(), pos_integer()) :: boolean()
  def put(_tab, nil, _progress, _max), do: false

  def put(tab, key, progress, max) do
    :ets.info(tab, :size) < max and
      :ets.insert(tab, {key, progress, System.monotonic_time(:millisecond) + @ttl_ms})
  end

  @doc "Deletes the expired rows."
  @spec sweep(:ets.tid()) :: non_neg_integer()
  def sweep(tab) do
    now = System.monotonic_time(:millisecond)
    :ets.select_delete(tab, [{{:_, :_, :"$1"}, [{:<, :"$1", now}], [true]}])
  end
end
