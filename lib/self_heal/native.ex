defmodule SelfHeal.Native do
  @moduledoc """
  The fingerprinting core, in C (`c_src/`), as NIFs.

  Every function here is bounded and safe to call from any process:

    * bad terms raise `ArgumentError` with a message saying what is wrong;
    * a message (or text stack trace) longer than `max_event_bytes` (default
      64 KiB) is cut at a UTF-8 boundary and the result is flagged
      `truncated: true`, never a crash;
    * no call blocks a normal scheduler for long (`docs/nif.md`):
      `fingerprint_batch/2` and `miner_add/2` yield about every half
      millisecond (`enif_consume_timeslice` + `enif_schedule_nif`), every
      call reports its time (a loop of short calls is scheduled out like
      one long call); an event, message
      or line whose work is above `:dirty_above` (about 8 KiB of text) is
      handed to a dirty CPU scheduler, and so is a call that finds a shared
      miner busy; `dedup/1`, `decode_json_lines/1,3` and the miner's
      templates, snapshots and restores run on dirty CPU schedulers.

  An event is a map (usually a `SelfHeal.Event`) with the keys `:type`
  (binary, atom or nil), `:message` (binary or nil) and `:stacktrace`: an
  Erlang stack trace (list of `{module, function, arity | args, location}`),
  a text stack trace (Elixir, Erlang, JavaScript, Python or Java), or nil.
  """

  @on_load :load_nif

  @typedoc "A configuration made by `config/1`; `nil` means the defaults."
  @type config :: reference() | nil

  @typedoc "32 lowercase hex characters."
  @type fingerprint :: <<_::256>>

  @type frame :: %{
          kind: :elixir | :erlang | :javascript | :python | :java | :go | :unknown,
          app: binary() | nil,
          module: binary(),
          function: binary(),
          file: binary(),
          line: non_neg_integer() | nil,
          column: non_neg_integer() | nil,
          in_app: boolean()
        }

  @type fingerprint_info :: %{
          fingerprint: fingerprint(),
          normalized: binary(),
          type: binary(),
          in_app: boolean(),
          truncated: boolean(),
          top_frame: frame() | nil,
          frames: [frame()],
          cluster: cluster_id() | nil
        }

  @typedoc "A template miner made by `miner_new/1` or `miner_restore/2`."
  @type miner :: reference()

  @typedoc "A cluster id of the template miner (stable, 64 bits)."
  @type cluster_id :: non_neg_integer()

  @type template :: %{
          id: cluster_id(),
          count: pos_integer(),
          template: binary(),
          params: [non_neg_integer()]
        }

  @type group :: %{
          fingerprint: fingerprint(),
          count: pos_integer(),
          first_seen: integer(),
          last_seen: integer(),
          sample: map(),
          services: [binary()],
          services_dropped: non_neg_integer()
        }

  @type json_lines_result :: %{
          events: [map()],
          malformed: non_neg_integer(),
          blank_lines: non_neg_integer(),
          errors: [{pos_integer(), binary()}]
        }

  @doc false
  def load_nif do
    path = :filename.join(:code.priv_dir(:self_heal), ~c"self_heal_nif")
    :erlang.load_nif(path, 0)
  end

  @doc """
  Options for fingerprinting, made once and reused:

    * `:in_app_apps` - OTP applications whose frames are the application's
      own. Their modules' top-level namespaces are added to the prefixes.
    * `:in_app_prefixes` - module, path or URL prefixes of in-app frames.
    * `:max_event_bytes` - cap on message and text stack size (64..16 MiB,
      default 65536).
    * `:yield_every` - yield after this many events regardless of time
      (testing the yield path; 0, the default, yields on the time budget).
    * `:dirty_above` - an event whose work (bytes of message, twice with a
      miner, a quarter of the bytes of a text stack trace, entries and
      frames of a term stack trace) is above this goes to a dirty CPU
      scheduler (default 8192; 0 sends every event there, testing).
    * `:miner` - a template miner (`miner_new/1`): events without a stack
      trace are grouped by it and fingerprinted by their cluster, so lines
      such as `Connection to 10.2.3.4:5432 refused after 3012 ms` group by
      template (`docs/miner.md`).

  With neither in-app option, a heuristic decides: frames of Erlang/OTP,
  Elixir, `deps/`, `node_modules/`, `site-packages/` and the JDK are not
  in-app.
  """
  @spec config(keyword() | map()) :: reference()
  def config(opts \\ []) do
    opts = Map.new(opts)
    apps = Map.get(opts, :in_app_apps, [])
    prefixes = Map.get(opts, :in_app_prefixes, []) ++ app_namespaces(apps)

    opts
    |> Map.put(:in_app_apps, Enum.map(apps, &to_string/1))
    |> Map.put(:in_app_prefixes, Enum.uniq(prefixes))
    |> make_config()
  end

  # Term stack traces carry no application; the application's modules'
  # top-level namespaces ("MyApp" for MyApp.Worker) stand in for it.
  defp app_namespaces(apps) when is_list(apps) do
    Enum.each(apps, fn
      app when is_atom(app) ->
        :ok

      other ->
        raise ArgumentError,
              "in_app_apps: expected application names (atoms), got: #{inspect(other)}"
    end)

    for app <- apps,
        mods = Application.spec(app, :modules) || [],
        mod <- mods,
        uniq: true do
      case Atom.to_string(mod) do
        "Elixir." <> name -> name |> String.split(".") |> hd()
        erlang_module -> erlang_module
      end
    end
  end

  defp app_namespaces(other) do
    raise ArgumentError,
          "in_app_apps: expected a list of application names, got: #{inspect(other)}"
  end

  @doc false
  @spec make_config(map()) :: reference()
  def make_config(_opts), do: :erlang.nif_error(:nif_not_loaded)

  @doc """
  Replaces the variable parts of a message (ids, numbers, timestamps, pids,
  IPs, UUIDs, e-mails, URL hosts and query values, quoted values, call
  arguments) with typed placeholders such as `<int>` and `<uuid>`.
  """
  @spec normalize(binary()) :: binary()
  def normalize(_message), do: :erlang.nif_error(:nif_not_loaded)

  @doc """
  Fingerprint of one event, with the normalised message and parsed frames.
  `:normalized` holds at most the first 64 KiB of the normalised message
  (cut at a UTF-8 boundary); the fingerprint covers all of it.
  """
  @spec fingerprint(map(), config()) :: fingerprint_info()
  def fingerprint(_event, _config \\ nil), do: :erlang.nif_error(:nif_not_loaded)

  @doc "Fingerprints of many events, in order. Yields to the scheduler."
  @spec fingerprint_batch([map()], config()) :: [fingerprint()]
  def fingerprint_batch(_events, _config \\ nil), do: :erlang.nif_error(:nif_not_loaded)

  @doc """
  Groups fingerprinted events (maps with `:fingerprint`, `:timestamp` and
  `:service`) by fingerprint, in the order of each group's first event; the
  sample is that first event.
  """
  @spec dedup([map()]) :: [group()]
  def dedup(_events), do: :erlang.nif_error(:nif_not_loaded)

  @doc """
  Decodes a Fluent Bit `json_lines` body (or any newline-separated JSON
  objects) into event maps. A malformed line is counted and reported in
  `:errors` (the first 100) while the other lines are still returned. The
  body is at most 8 MiB (`ArgumentError` above it): a larger one is
  decoded slice by slice with `decode_json_lines/3`, so that no process
  holds (and then frees, on a normal scheduler) all of its events at once.
  """
  @spec decode_json_lines(binary()) :: json_lines_result()
  def decode_json_lines(_body), do: :erlang.nif_error(:nif_not_loaded)

  @doc """
  Decodes at most `max_records` records (valid or malformed lines; blank
  lines do not count) of a `json_lines` body from byte `offset`: the map of
  `decode_json_lines/1` (error line numbers counted from `offset`) plus
  `:next`, the offset to continue from (`byte_size(body)` when done). A
  body decoded slice by slice never holds the terms of more than a slice.
  """
  @spec decode_json_lines(binary(), non_neg_integer(), pos_integer()) ::
          %{
            events: [map()],
            malformed: non_neg_integer(),
            blank_lines: non_neg_integer(),
            errors: [{pos_integer(), binary()}],
            next: non_neg_integer()
          }
  def decode_json_lines(_body, _offset, _max_records), do: :erlang.nif_error(:nif_not_loaded)

  @doc """
  The number of records (lines that are not blank) of a `json_lines` body,
  counted in one pass without decoding, stopping as soon as it passes
  `limit` (so at most `limit + 1`).
  """
  @spec count_json_lines(binary(), non_neg_integer()) :: non_neg_integer()
  def count_json_lines(_body, _limit), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  @spec __yield_count__() :: non_neg_integer()
  def __yield_count__, do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  # moves of a call onto a dirty CPU scheduler
  @spec __dirty_count__() :: non_neg_integer()
  def __dirty_count__, do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  # steps of the miner's and the watch sets' long readers
  @spec __walk_steps__() :: non_neg_integer()
  def __walk_steps__, do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  # fingerprint_batch/2 states not yet freed
  @spec __live_batches__() :: integer()
  def __live_batches__, do: :erlang.nif_error(:nif_not_loaded)

  @doc """
  A template miner for stackless log lines (`docs/miner.md`). Options:
  `:max_clusters` (default 10,000; least recently used evicted beyond),
  `:max_tokens` (default 128), `:max_line` (bytes, default 16 KiB),
  `:yield_every` (testing the yield path), `:dirty_above` (a line longer
  than this many bytes is added on a dirty CPU scheduler; default 8192).
  Safe to share between processes.
  """
  @spec miner_new(keyword() | map()) :: miner()
  def miner_new(opts \\ []), do: opts |> Map.new() |> miner_new_nif()

  @doc """
  Adds lines to the miner and returns the cluster id of each, in order.
  Yields to the scheduler; lines added before a bad element stay added.
  """
  @spec miner_add(miner(), [binary()]) :: [cluster_id()]
  def miner_add(_miner, _lines), do: :erlang.nif_error(:nif_not_loaded)

  @doc """
  The clusters, most recently used first, with their templates. Lines
  added meanwhile by other processes are not held up: the clusters are
  read in short steps (`docs/nif.md`).
  """
  @spec miner_templates(miner()) :: [template()]
  def miner_templates(_miner), do: :erlang.nif_error(:nif_not_loaded)

  @doc "Counters: lines, clusters, created, evicted, truncated, merged, aliases_dropped."
  @spec miner_stats(miner()) :: %{atom() => non_neg_integer()}
  def miner_stats(_miner), do: :erlang.nif_error(:nif_not_loaded)

  @doc "The id a cluster id lives on as after merges (itself when not merged)."
  @spec miner_resolve(miner(), cluster_id()) :: cluster_id()
  def miner_resolve(_miner, _id), do: :erlang.nif_error(:nif_not_loaded)

  @doc "A versioned binary snapshot of the miner, written in short steps like `miner_templates/1`."
  @spec miner_snapshot(miner()) :: binary()
  def miner_snapshot(_miner), do: :erlang.nif_error(:nif_not_loaded)

  @doc """
  A miner from a snapshot, with the options of `miner_new/1`; a damaged or
  foreign snapshot gives `{:error, reason}`.
  """
  @spec miner_restore(binary(), keyword() | map()) :: {:ok, miner()} | {:error, binary()}
  def miner_restore(snapshot, opts \\ []), do: miner_restore_nif(snapshot, Map.new(opts))

  @doc false
  def miner_new_nif(_opts), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  def miner_restore_nif(_snapshot, _opts), do: :erlang.nif_error(:nif_not_loaded)

  @typedoc "A watch set (`SelfHeal.Watch.new/1`)."
  @type watch_set :: reference()

  @doc false
  @spec watch_new_nif(map()) :: watch_set()
  def watch_new_nif(_opts), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  @spec watch_add_nif(watch_set(), map()) ::
          {:ok, :added | :replaced | :unchanged} | {:error, :full}
  def watch_add_nif(_set, _spec), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  @spec watch_remove_nif(watch_set(), binary()) :: :ok | {:error, :not_found}
  def watch_remove_nif(_set, _id), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  @spec watch_observe_nif(watch_set(), [map()], integer()) :: [binary()]
  def watch_observe_nif(_set, _events, _now_ms), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  @spec watch_count_nif(watch_set()) :: non_neg_integer()
  def watch_count_nif(_set), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  @spec watch_list_nif(watch_set()) :: [map()]
  def watch_list_nif(_set), do: :erlang.nif_error(:nif_not_loaded)

  @typedoc "A compiled scrubber (`SelfHeal.Scrub`): built-in rules plus configured patterns."
  @opaque scrubber :: reference()

  @doc false
  @spec scrubber_new_nif([binary()]) :: {:ok, scrubber()} | {:error, binary()}
  def scrubber_new_nif(_patterns), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  @spec scrub_nif(scrubber() | nil, binary()) :: binary()
  def scrub_nif(_scrubber, _text), do: :erlang.nif_error(:nif_not_loaded)
end
