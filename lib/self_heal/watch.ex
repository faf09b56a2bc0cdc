defmodule SelfHeal.Watch do
  @moduledoc """
  The watch engine: sliding-window counters with thresholds, in C
  (`c_src/watch.c`, `docs/watch.md`). "A few 5xx are normal, many in a
  minute are not."

      set = SelfHeal.Watch.new()

      {:ok, :added} =
        SelfHeal.Watch.add(set,
          id: "5xx",
          field: "status",
          op: :>=,
          value: 500,
          window_ms: 60_000,
          threshold: 50
        )

      SelfHeal.Watch.observe(set, [%{"status" => 503, "path" => "/api/orders"}])
      #=> [] until the 50th 5xx within a minute, then ["5xx"]

  A watch matches one of:

    * a field compared with a value: `field:` (binary or atom), `op:` (`:==`,
      `:!=`, `:<`, `:<=`, `:>`, `:>=` on numbers; `:==`, `:!=`, `:prefix`,
      `:contains` on strings) and `value:` (a number, a binary, or an atom,
      which stands for its text: `value: :error` matches `level: :error` and
      `"level" => "error"`);
    * `cluster:` a template miner cluster id: the event's `cluster` field
      equals it (an integer);
    * `fingerprint:` a fingerprint: the event's `fingerprint` field equals
      it (a binary).

  Every watch has `id:` (a binary of 1..128 bytes), `window_ms:` (1..30
  days) and `threshold:` (1..1,000,000).

  Events are maps with binary or atom keys (`:status` and `"status"` are the
  same field) whose values are numbers, binaries or atoms; other values
  (lists, maps, tuples, pids, `nil`) are ignored, so a `SelfHeal.Event` or
  any metadata map can be passed as it is. Numbers compare by value (`500 ==
  500.0`); a value of the other type (`"500"` for a number) matches only
  `:!=`; an absent field matches nothing.

  Firing: a watch fires when at least `threshold` matching events fall in
  the last `window_ms` (an event at `s` counts at `t` while `t - s <
  window_ms`, exactly), at most once per window, and fires again only after
  its count has dropped below the threshold and reached it again. Counts
  that leave the window are dropped quietly: nothing is reported. See
  `docs/watch.md` for the precise rules.

  A set is safe to share between processes (a lock, held for one event at a
  time; a call that finds it busy, or an event that would take long, goes
  on on a dirty CPU scheduler, so a normal scheduler never waits:
  `docs/nif.md`). It is bounded: `max_watches` watches (default 10,000) and
  `max_slots` for the thresholds of all watches together (default 4,194,304;
  each threshold costs that many 8-byte timestamps).
  """

  alias SelfHeal.Native

  @typedoc "A watch set made by `new/1`."
  @type t :: reference()

  @type id :: binary()

  @type op :: :== | :!= | :< | :<= | :> | :>= | :prefix | :contains

  @typedoc """
  A watch spec, as a keyword list or a map: `:id`, `:window_ms`,
  `:threshold` and one of `:field` (with `:op` and `:value`), `:cluster`,
  `:fingerprint`.
  """
  @type spec :: keyword() | map()

  @type watch :: %{
          required(:id) => id(),
          required(:kind) => :field | :cluster | :fingerprint,
          optional(:field) => binary(),
          optional(:op) => op(),
          optional(:value) => number() | binary(),
          optional(:cluster) => non_neg_integer(),
          optional(:fingerprint) => binary(),
          required(:window_ms) => pos_integer(),
          required(:threshold) => pos_integer(),
          required(:count) => non_neg_integer(),
          required(:matched) => non_neg_integer(),
          required(:fired) => non_neg_integer(),
          required(:armed) => boolean(),
          required(:last_fired_ms) => integer() | nil
        }

  @option_keys [:max_watches, :max_slots, :yield_every, :dirty_above]
  @spec_keys [:id, :field, :op, :value, :cluster, :fingerprint, :window_ms, :threshold]

  @doc """
  A new, empty watch set. Options:

    * `:max_watches` - at most this many watches (1..1,000,000; default
      10,000);
    * `:max_slots` - at most this sum of the thresholds of all watches
      (1..268,435,456; default 4,194,304);
    * `:yield_every` - `observe/3` yields after this many events whatever
      the time (testing the yield path; 0, the default, yields on the time
      budget);
    * `:dirty_above` - an event whose work (about one unit per watch it is
      compared with, plus a quarter per byte of string compared) is above
      this is observed on a dirty CPU scheduler (default 16,384; 0 sends
      every event there, testing).
  """
  @spec new(keyword() | map()) :: t()
  def new(opts \\ []) do
    opts |> to_map(@option_keys, "option") |> Native.watch_new_nif()
  end

  @doc """
  Adds a watch, or replaces the watch with the same id.

  Returns `{:ok, :added}` for a new id, `{:ok, :unchanged}` when the id
  exists with this very spec (its counts are kept), `{:ok, :replaced}` when
  it exists with another spec (its counts start over), or `{:error, :full}`
  when `max_watches` or `max_slots` would be exceeded. An invalid spec
  raises `ArgumentError`.

      SelfHeal.Watch.add(set, id: "errors", field: :level, op: :==, value: "error",
        window_ms: 10_000, threshold: 20)
      SelfHeal.Watch.add(set, %{id: "db-down", cluster: 1234567, window_ms: 60_000, threshold: 5})
      SelfHeal.Watch.add(set, id: "fp", fingerprint: "9b63a8f6...", window_ms: 300_000, threshold: 3)
  """
  @spec add(t(), spec()) :: {:ok, :added | :replaced | :unchanged} | {:error, :full}
  def add(set, spec) do
    Native.watch_add_nif(set, to_map(spec, @spec_keys, "watch spec key"))
  end

  @doc "Removes a watch: `:ok`, or `{:error, :not_found}`."
  @spec remove(t(), id()) :: :ok | {:error, :not_found}
  def remove(set, id), do: Native.watch_remove_nif(set, id)

  @doc """
  Counts events (a list of maps, or one map) at `now_ms` and returns the ids
  of the watches that fired, in firing order (usually each at most once).

  `now_ms` defaults to `System.monotonic_time(:millisecond)`; a set's clock
  never runs backwards, so events given an earlier time than the latest
  seen are counted at the latest. Use one time base per set. Yields to the
  scheduler on long lists; events before a bad element stay counted.
  """
  @spec observe(t(), [map()] | map(), integer()) :: [id()]
  def observe(set, events, now_ms \\ System.monotonic_time(:millisecond))

  def observe(set, events, now_ms) when is_list(events) do
    Native.watch_observe_nif(set, events, now_ms)
  end

  def observe(set, event, now_ms) when is_map(event) do
    Native.watch_observe_nif(set, [event], now_ms)
  end

  def observe(_set, other, _now_ms) do
    raise ArgumentError, "events must be a list of maps or a map, got: #{inspect(other)}"
  end

  @doc "The number of watches in the set (cheap: no maps are built)."
  @spec count(t()) :: non_neg_integer()
  def count(set), do: Native.watch_count_nif(set)

  @doc """
  The watches, in the order they were added (a replaced watch keeps its
  place), with their state at the set's clock (the latest `now_ms` given to
  `observe/3`): `:count` (matching events in the window, at most the
  threshold), `:matched` (ever), `:fired` (times), `:armed` (the next time
  the count reaches the threshold fires, hold-off aside) and
  `:last_fired_ms`. A string value given as an atom is listed as a binary.
  """
  @spec list(t()) :: [watch()]
  def list(set), do: Native.watch_list_nif(set)

  defp to_map(kv, allowed, what) when is_list(kv) or is_map(kv) do
    map =
      try do
        Map.new(kv)
      rescue
        _ -> raise ArgumentError, "expected a keyword list or a map, got: #{inspect(kv)}"
      end

    case Map.keys(map) -- allowed do
      [] -> map
      unknown -> raise ArgumentError, "unknown #{what}(s): #{inspect(unknown)}"
    end
  end

  defp to_map(other, _allowed, _what) do
    raise ArgumentError, "expected a keyword list or a map, got: #{inspect(other)}"
  end
end
