defmodule SelfHeal.Tail do
  @moduledoc """
  Follows log files and turns their lines into `SelfHeal.Event`s
  (`source: :tail`) sent to a collector with `SelfHeal.Collector.ingest/2`.

  One process follows one or more files by polling (`:file.read_file_info/2`
  and `:file.pread/3`, portable, no inotify): every `:poll_ms` each file is
  stat'ed and at most `:read_bytes` of it are read, so a large file is read
  in bounded chunks over several polls (the next poll comes at once while a
  file has more) and never loaded whole.

    * **Rotation** (rename + new file at the path) is seen as a change of
      the path's inode; the old file, still open, is read to its end first
      (and for one more poll interval, for a writer that has not reopened
      yet), then the new file is read from its beginning.
    * **Truncation** (`copytruncate`: the size falls below the offset read)
      restarts at offset 0.
    * A file that does not exist yet is waited for, and so is a deleted
      one; both are then read from the beginning.
    * With `:from` `:end` (the default) a file present at start is read
      from its end (from the start of its last, unfinished line); files
      that appear later are read from their beginning.

  Lines are cut at `:max_line` bytes (the event is flagged `truncated`),
  NUL bytes are dropped, invalid UTF-8 becomes U+FFFD, and `\\r\\n` is a
  line end. A last line without a newline is taken when the file is
  rotated, truncated or deleted, or after `:partial_timeout_ms` without
  growth.

  **Multi-line stack traces** become one event: a line that continues the
  previous one by the rules of `SelfHeal.Stack` (indented lines, `at `,
  `Caused by:`, `** `, Elixir frames, Python tracebacks, a Java exception
  line after a one-line event, an Elixir crash report's tail, a Go
  panic's goroutine dump, ...) is appended. The event is emitted when a
  line that does not continue it arrives or after `:multiline_timeout_ms`
  without a new line. The first line is the `:message` (for a bare Python
  traceback, its exception line), the continuation lines joined with
  `\\n` are the `:stacktrace` text, and `:type` is the exception type
  `SelfHeal.Stack` finds (`** (RuntimeError)`,
  `java.lang.IllegalStateException`, `ValueError`, `runtime.Error`).

  **Levels**: the first of `[error]`, `level=error` (also `lvl=`,
  `severity=`, JSON `"level":"error"`) or an upper-case `ERROR`, `WARN`,
  `FATAL`, ... in the first KiB of the line sets `:level`; a line without
  one counts as `:error`. Events below `:min_level` are dropped (with their
  continuation lines).

  **Overload**: events wait in a buffer of at most `:max_buffer` events;
  when `ingest/2` answers `{:error, :overloaded}` they are kept and sent
  again after a back-off (50 ms doubling to 5 s). While the buffer is full
  the files are not read (they are the buffer); events that still do not
  fit are dropped and counted (`stats/1`). After a refusal the next
  batches are smaller (halved, down to one event), so a collector with
  little room still takes some.

  Each event carries the file in `metadata: %{path: path}`; its timestamp
  is the time the line was read.

  Options:

    * `:path` - a file (or a glob) to follow; `:paths` - a list of files
      and globs (`*`, `?`, `[...]`, `{a,b}`); globs are expanded again
      every `:rescan_ms` (default 1000) and a glob's file that disappears
      is forgotten
    * `:collector` - registered name of the collector (default
      `SelfHeal.Collector`)
    * `:service` - the events' `:service` (binary or nil)
    * `:poll_ms` - default 250
    * `:from` - `:end` (default) or `:beginning`, for files present at start
    * `:max_line` - bytes, default 65_536
    * `:multiline_timeout_ms` - default 200
    * `:min_level` - a logger level, default `:error`
    * `:read_bytes` - bytes read per file per poll, default 65_536
    * `:max_buffer` - events waiting for the collector, default 10_000
    * `:partial_timeout_ms` - default 5000
    * `:name` - a name to register the process under

  It never crashes on a vanished file, a permission error or a read error:
  it logs at most one message per change of a file's state (domain
  `[:self_heal]`, so the logger handler does not capture it) and tries
  again at the next poll.
  """
  use GenServer

  alias SelfHeal.{Collector, Event, Stack}

  require Logger
  require Record

  Record.defrecordp(:file_info, Record.extract(:file_info, from_lib: "kernel/include/file.hrl"))

  @levels [:emergency, :alert, :critical, :error, :warning, :notice, :info, :debug]
  @max_stack 65_536
  @ingest_batch 1000
  @backoff_min 50
  @backoff_max 5000
  @level_scan 1024
  @retired_max 1024

  @type option ::
          {:path, Path.t()}
          | {:paths, [Path.t()]}
          | {:collector, atom()}
          | {:service, binary() | nil}
          | {:poll_ms, pos_integer()}
          | {:from, :end | :beginning}
          | {:max_line, pos_integer()}
          | {:multiline_timeout_ms, non_neg_integer()}
          | {:min_level, Logger.level()}
          | {:read_bytes, pos_integer()}
          | {:max_buffer, pos_integer()}
          | {:partial_timeout_ms, non_neg_integer()}
          | {:rescan_ms, non_neg_integer()}
          | {:name, GenServer.name()}

  @type stats :: %{
          lines: non_neg_integer(),
          events: non_neg_integer(),
          filtered: non_neg_integer(),
          truncated: non_neg_integer(),
          dropped: non_neg_integer(),
          buffered: non_neg_integer(),
          files: %{binary() => %{status: :open | :waiting | :error, offset: non_neg_integer()}}
        }

  @doc "Starts a tailer; see the module documentation for the options."
  @spec start_link([option()]) :: GenServer.on_start()
  def start_link(opts) do
    {name, opts} = Keyword.pop(opts, :name)

    if name,
      do: GenServer.start_link(__MODULE__, opts, name: name),
      else: GenServer.start_link(__MODULE__, opts)
  end

  @doc """
  Counters and file states: `lines` read, `events` made (sent, buffered or
  dropped), `filtered` events below `:min_level`, `truncated` lines cut at
  `:max_line`, `dropped` events that did not fit the buffer, `buffered`
  events waiting for the collector, and each file's `status` (`:open`,
  `:waiting` or `:error`) and read `offset`.
  """
  @spec stats(GenServer.server()) :: stats()
  def stats(server), do: GenServer.call(server, :stats)

  # ------------------------------------------------------------ server

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    cfg = config(opts)
    now = now_ms()

    state = %{
      cfg: cfg,
      files: %{},
      retired: %{},
      buffer: :queue.new(),
      nbuffer: 0,
      backoff: 0,
      retry_at: now,
      batch: @ingest_batch,
      dropping: false,
      rescan_at: now,
      timer: nil,
      lines: 0,
      events: 0,
      filtered: 0,
      truncated: 0,
      dropped: 0
    }

    # Files present now are opened here, so that with `from: :end` a line
    # written after start_link/1 returns is read.
    state = rescan(state, cfg.from, now)
    state = Enum.reduce(Map.keys(state.files), state, &open_at_start(&2, &1, now))
    {:ok, schedule(state, 0)}
  end

  @impl true
  def handle_info(:tick, state) do
    {:noreply, tick(%{state | timer: nil})}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def handle_call(:stats, _from, state) do
    files =
      Map.new(state.files, fn {path, e} -> {path, %{status: e.status, offset: e.offset}} end)

    {:reply,
     %{
       lines: state.lines,
       events: state.events,
       filtered: state.filtered,
       truncated: state.truncated,
       dropped: state.dropped,
       buffered: state.nbuffer,
       files: files
     }, state}
  end

  @impl true
  def terminate(_reason, state) do
    # best effort: what is pending goes out once, without retry
    state =
      Enum.reduce(Map.keys(state.files), state, fn path, st ->
        e = st.files[path]
        {e, events} = take_partial(e, st.cfg, now_ms())
        {e, more} = emit(e, st.cfg)
        if e.fd, do: :file.close(e.fd)
        enqueue(put_in(st.files[path], %{e | fd: nil}), events ++ more)
      end)

    _ = Collector.ingest(state.cfg.collector, :queue.to_list(state.buffer))
    :ok
  end

  # ------------------------------------------------------------ options

  defp config(opts) do
    paths = List.wrap(Keyword.get(opts, :path)) ++ List.wrap(Keyword.get(opts, :paths, []))

    if paths == [] or not Enum.all?(paths, &(is_binary(&1) or is_list(&1))) do
      raise ArgumentError, "SelfHeal.Tail: :path or :paths (file names or globs) is required"
    end

    min_level = Keyword.get(opts, :min_level, :error)

    unless min_level in @levels do
      raise ArgumentError, "SelfHeal.Tail: :min_level must be one of #{inspect(@levels)}"
    end

    from = Keyword.get(opts, :from, :end)

    unless from in [:end, :beginning] do
      raise ArgumentError, "SelfHeal.Tail: :from must be :end or :beginning"
    end

    collector = Keyword.get(opts, :collector, Collector)

    unless is_atom(collector) do
      raise ArgumentError, "SelfHeal.Tail: :collector must be a registered name (atom)"
    end

    poll_ms = Keyword.get(opts, :poll_ms, 250)

    %{
      specs: Enum.map(paths, &spec/1),
      collector: collector,
      service: Keyword.get(opts, :service),
      poll_ms: poll_ms,
      from: from,
      max_line: Keyword.get(opts, :max_line, 65_536),
      multiline_ms: Keyword.get(opts, :multiline_timeout_ms, 200),
      min_level: min_level,
      read_bytes: Keyword.get(opts, :read_bytes, 65_536),
      max_buffer: Keyword.get(opts, :max_buffer, 10_000),
      partial_ms: Keyword.get(opts, :partial_timeout_ms, 5000),
      rescan_ms: Keyword.get(opts, :rescan_ms, 1000)
    }
  end

  defp spec(path) do
    path = IO.chardata_to_string(path)
    if String.contains?(path, ["*", "?", "[", "{"]), do: {:glob, path}, else: {:path, path}
  end

  # ------------------------------------------------------------ the tick

  defp tick(state) do
    now = now_ms()

    state =
      if now >= state.rescan_at,
        do: rescan(%{state | rescan_at: now + state.cfg.rescan_ms}, :beginning, now),
        else: state

    read? = state.nbuffer < state.cfg.max_buffer

    {state, more?} =
      Enum.reduce(Map.keys(state.files), {state, false}, fn path, {st, more?} ->
        case st.files do
          %{^path => e} ->
            {st, e, events, more} = poll(st, e, read?, now)

            if e.glob? and e.status == :waiting and e.noted == :missing do
              # a glob's file that is gone (and read to its end) is forgotten
              {_e, last} = emit(e, st.cfg)
              st = enqueue(st, events ++ last)
              {%{st | files: Map.delete(st.files, path)}, more? or more}
            else
              st = enqueue(st, events)
              {%{st | files: Map.put(st.files, path, e)}, more? or more}
            end

          _ ->
            {st, more?}
        end
      end)

    state
    |> expire(now)
    |> deliver(now)
    |> schedule(if more?, do: 0, else: state.cfg.poll_ms)
  end

  # The next tick: at most `delay` away, earlier for a multi-line event's
  # deadline or a retry.
  defp schedule(state, delay) do
    now = now_ms()

    deadlines =
      for {_, %{pending: %{at: at}}} <- state.files, do: at + state.cfg.multiline_ms - now

    retry = if state.nbuffer > 0, do: [state.retry_at - now], else: []
    delay = [delay | deadlines ++ retry] |> Enum.min() |> max(0)
    if state.timer, do: Process.cancel_timer(state.timer)
    %{state | timer: Process.send_after(self(), :tick, delay)}
  end

  defp rescan(state, from, now) do
    paths =
      Enum.flat_map(state.cfg.specs, fn
        {:path, p} -> [{p, false}]
        {:glob, g} -> g |> Path.wildcard(match_dot: false) |> Enum.map(&{&1, true})
      end)

    files =
      Enum.reduce(paths, state.files, fn {p, glob?}, files ->
        Map.put_new_lazy(files, p, fn -> new_file(p, glob?, from, now) end)
      end)

    %{state | files: files}
  end

  defp new_file(path, glob?, from, now) do
    %{
      path: path,
      glob?: glob?,
      status: :waiting,
      from: from,
      fd: nil,
      id: nil,
      offset: 0,
      partial: "",
      cut: false,
      skip: false,
      partial_at: now,
      rotated_at: nil,
      resume: nil,
      pending: nil,
      noted: nil
    }
  end

  defp open_at_start(state, path, now) do
    {st, e, _events, _more} = try_open(state, state.files[path], false, now)
    %{st | files: Map.put(st.files, path, e)}
  end

  # ------------------------------------------------------------ one file

  # {state, file, events, more to read?}
  defp poll(st, %{status: :open} = e, read?, now), do: poll_open(st, e, read?, now)
  defp poll(st, e, read?, now), do: try_open(st, e, read?, now)

  defp try_open(st, e, read?, now) do
    case :file.open(e.path, [:read, :raw, :binary]) do
      {:ok, fd} ->
        case fstat(fd) do
          {:ok, id, size} ->
            if aliased?(st, e.path, id) do
              # another entry still reads this file (rotated under a name
              # that is followed too); it is taken over when that one ends
              :file.close(fd)
              {st, %{e | status: :waiting}, [], false}
            else
              {offset, skip, st} = start_offset(st, e, fd, id, size)

              e = %{
                e
                | status: :open,
                  fd: fd,
                  id: id,
                  offset: offset,
                  partial: "",
                  cut: false,
                  skip: skip,
                  partial_at: now,
                  rotated_at: nil,
                  from: :beginning,
                  resume: nil
              }

              e = note(e, :open)
              poll_open(st, e, read?, now)
            end

          {:error, reason} ->
            :file.close(fd)
            {st, fail(e, reason), [], false}
        end

      {:error, :enoent} ->
        {st, note(%{e | status: :waiting, from: :beginning}, :missing), [], false}

      {:error, reason} ->
        {st, fail(e, reason), [], false}
    end
  end

  defp fail(e, reason), do: note(%{e | status: :error, from: :beginning}, {:error, reason})

  defp aliased?(st, path, id) do
    Enum.any?(st.files, fn {p, o} -> p != path and o.status == :open and o.id == id end)
  end

  # Where to start reading a file just opened: where this entry stopped
  # after a read error, where another entry stopped reading it moments ago
  # (a file renamed to a name that is followed too, see close/2), its end
  # (`from: :end`) or 0.
  defp start_offset(st, e, fd, id, size) do
    retired =
      case st.retired do
        %{^id => {_offset, at} = r} -> if now_ms() - at <= retired_ttl(st.cfg), do: r
        _ -> nil
      end

    cond do
      match?({^id, offset} when offset <= size, e.resume) ->
        {elem(e.resume, 1), false, st}

      match?({offset, _at} when offset <= size, retired) ->
        {elem(retired, 0), false, %{st | retired: Map.delete(st.retired, id)}}

      e.from == :end and size > 0 ->
        {offset, skip} = line_start(fd, size, st.cfg.max_line)
        {offset, skip, st}

      true ->
        {0, false, st}
    end
  end

  # With `from: :end`: the start of the last, unfinished line, if there is
  # one within max_line bytes; else the end, skipping to the next newline.
  defp line_start(fd, size, max_line) do
    back = min(size, max_line)

    case :file.pread(fd, size - back, back) do
      {:ok, data} when byte_size(data) == back ->
        cond do
          :binary.last(data) == ?\n ->
            {size, false}

          true ->
            case :binary.matches(data, "\n") do
              [] when back == size -> {0, false}
              [] -> {size, true}
              matches -> {size - back + elem(List.last(matches), 0) + 1, false}
            end
        end

      _ ->
        {size, false}
    end
  end

  defp poll_open(st, e, read?, now) do
    cfg = st.cfg
    was_rotated = e.rotated_at

    {e, events} =
      case stat(e.path) do
        {:ok, id, size} when id == e.id and size < e.offset ->
          # truncated in place (copytruncate): start again from 0
          {e, events} = take_partial(e, cfg, now)
          {%{e | offset: 0, skip: false, rotated_at: nil}, events}

        {:ok, id, _size} when id == e.id ->
          noted = if match?({:stat_error, _}, e.noted), do: :open, else: e.noted
          {%{e | rotated_at: nil, noted: noted}, []}

        {:ok, _other, _size} ->
          {%{e | rotated_at: e.rotated_at || now}, []}

        :missing ->
          {%{e | rotated_at: e.rotated_at || now}, []}

        {:error, reason} ->
          # the path cannot be stat'ed (permissions of a directory): keep
          # reading what is open
          {note(e, {:stat_error, reason}), []}
      end

    if read? do
      case :file.pread(e.fd, e.offset, cfg.read_bytes) do
        {:ok, data} ->
          {e, lines} = feed(e, data, cfg.max_line, now)
          {e, more_events, st} = take_lines(st, e, lines, now)
          full? = byte_size(data) == cfg.read_bytes
          e = %{e | offset: e.offset + byte_size(data)}

          if full?,
            do: {st, e, events ++ more_events, true},
            else: maybe_switch(st, e, events ++ more_events, was_rotated, now)

        :eof ->
          {st, e, more_events} = idle_partial(st, e, now)
          maybe_switch(st, e, events ++ more_events, was_rotated, now)

        {:error, reason} ->
          {e, more_events} = take_partial(e, cfg, now)
          resume = {e.id, e.offset}
          {st, e} = close(st, e)
          {st, fail(%{e | resume: resume}, reason), events ++ more_events, false}
      end
    else
      {st, e, events, false}
    end
  end

  # At the end of a file whose path has pointed elsewhere (or nowhere) for
  # at least a poll interval: take its last line, close it, open the path.
  defp maybe_switch(st, e, events, was_rotated, now) do
    if was_rotated && e.rotated_at && now - e.rotated_at >= st.cfg.poll_ms do
      {e, more} = take_partial(e, st.cfg, now)
      {st, e} = close(st, e)
      {st, e, more2, more?} = try_open(st, %{e | status: :waiting, from: :beginning}, true, now)
      {st, e, events ++ more ++ more2, more?}
    else
      {st, e, events, false}
    end
  end

  # Closes a file. One that still has a name (renamed, not deleted: its
  # inode cannot be reused while linked) is remembered for a short while
  # with the offset read, so that an entry finding it under its new name
  # continues there instead of reading it again.
  defp close(st, e) do
    linked? = match?({:ok, file_info(links: n)} when n > 0, :file.read_file_info(e.fd))
    :file.close(e.fd)
    now = now_ms()
    ttl = retired_ttl(st.cfg)
    retired = Map.reject(st.retired, fn {_, {_, at}} -> now - at > ttl end)

    retired =
      if linked?, do: Map.put(retired, e.id, {e.offset, now}), else: Map.delete(retired, e.id)

    retired =
      if map_size(retired) > @retired_max do
        {oldest, _} = Enum.min_by(retired, fn {_, {_, at}} -> at end)
        Map.delete(retired, oldest)
      else
        retired
      end

    {%{st | retired: retired}, %{e | fd: nil, id: nil, rotated_at: nil}}
  end

  # long enough for the next rescan (or the next tick of an entry waiting
  # for the file) to find the file under its new name
  defp retired_ttl(cfg), do: 2 * (cfg.rescan_ms + cfg.poll_ms) + 2000

  defp idle_partial(st, e, now) do
    if e.partial != "" and now - e.partial_at >= st.cfg.partial_ms do
      {e, events} = take_partial(e, st.cfg, now)
      {st, e, events}
    else
      {st, e, []}
    end
  end

  # The unfinished last line, taken as a line.
  defp take_partial(%{partial: "", cut: false} = e, _cfg, _now), do: {%{e | skip: false}, []}

  defp take_partial(e, cfg, now) do
    {e, events} = line(%{e | partial: "", cut: false, skip: false}, e.partial, e.cut, cfg, now)
    {e, events}
  end

  defp take_lines(st, e, lines, now) do
    cfg = st.cfg

    {e, events, cut} =
      Enum.reduce(lines, {e, [], 0}, fn {text, cut?}, {e, acc, cut} ->
        {e, events} = line(e, text, cut?, cfg, now)
        {e, Enum.reverse(events, acc), if(cut?, do: cut + 1, else: cut)}
      end)

    {e, Enum.reverse(events),
     %{st | lines: st.lines + length(lines), truncated: st.truncated + cut}}
  end

  # ------------------------------------------------------------ lines

  # Splits data (after what is left of the previous read) into whole lines
  # [{bytes, cut?}]; keeps the unfinished rest (at most max_line bytes).
  defp feed(e, "", _max, _now), do: {e, []}

  defp feed(e, data, max, now) do
    case :binary.split(data, "\n", [:global]) do
      [only] ->
        e = if e.skip or e.cut, do: e, else: grow(e, only, max)
        {%{e | partial_at: now}, []}

      [first | rest] ->
        [last | middle] = Enum.reverse(rest)

        head =
          cond do
            e.skip -> []
            e.cut -> [{e.partial, true}]
            true -> [append(e.partial, first, max)]
          end

        lines = head ++ Enum.map(Enum.reverse(middle), &append("", &1, max))
        {text, cut} = append("", last, max)
        {%{e | partial: :binary.copy(text), cut: cut, skip: false, partial_at: now}, lines}
    end
  end

  defp grow(e, bytes, max) do
    {text, cut} = append(e.partial, bytes, max)
    %{e | partial: :binary.copy(text), cut: cut}
  end

  defp append(head, bytes, max) do
    room = max - byte_size(head)

    if byte_size(bytes) > room,
      do: {head <> binary_part(bytes, 0, max(room, 0)), true},
      else: {head <> bytes, false}
  end

  # One line of the file: joined to the pending event or starting one.
  defp line(e, bytes, cut?, cfg, now) do
    text = clean(bytes, cut?)

    cond do
      e.pending != nil and Stack.continues?(e.pending, text) ->
        {%{e | pending: add_line(e.pending, text, cut?, now)}, []}

      Stack.blank?(text) ->
        {e, []}

      true ->
        {e, events} = emit(e, cfg)
        {%{e | pending: start(text, cut?, now)}, events}
    end
  end

  defp start(text, cut?, now) do
    Map.merge(Stack.start(text), %{level: level(text), cont: [], bytes: 0, cut: cut?, at: now})
  end

  defp add_line(p, text, cut?, now) do
    p = %{p | at: now}
    bytes = p.bytes + byte_size(text) + 1

    p =
      if bytes > @max_stack,
        do: %{p | cut: true},
        else: %{p | cont: [text | p.cont], bytes: bytes, cut: p.cut or cut?}

    Stack.add(p, text)
  end

  # The pending event, as events to send ([] when below min_level).
  defp emit(%{pending: nil} = e, _cfg), do: {e, []}

  defp emit(%{pending: p} = e, cfg) do
    e = %{e | pending: nil}
    level = p.level || :error

    if :logger.compare_levels(level, cfg.min_level) == :lt do
      {e, [:filtered]}
    else
      {message, type, stack} = Stack.finish(p, Enum.reverse(p.cont))

      event =
        Event.new(
          level: level,
          source: :tail,
          service: cfg.service,
          type: type,
          message: message,
          stacktrace: if(stack == [], do: nil, else: Enum.join(stack, "\n")),
          metadata: %{path: e.path},
          truncated: p.cut
        )

      {e, [event]}
    end
  end

  defp expire(state, now) do
    Enum.reduce(state.files, state, fn
      {path, %{pending: %{at: at}} = e}, st when now - at >= st.cfg.multiline_ms ->
        {e, events} = emit(e, st.cfg)
        enqueue(put_in(st.files[path], e), events)

      _, st ->
        st
    end)
  end

  # Bytes to text: NULs dropped, "\r" of "\r\n" dropped, invalid UTF-8 as
  # U+FFFD (an incomplete last character of a cut line is dropped).
  defp clean(bytes, cut?) do
    bytes =
      if :binary.match(bytes, <<0>>) == :nomatch,
        do: bytes,
        else: :binary.replace(bytes, <<0>>, "", [:global])

    bytes =
      if bytes != "" and :binary.last(bytes) == ?\r,
        do: binary_part(bytes, 0, byte_size(bytes) - 1),
        else: bytes

    if String.valid?(bytes), do: bytes, else: fix_utf8(bytes, cut?, [])
  end

  defp fix_utf8(bytes, cut?, acc) do
    case :unicode.characters_to_binary(bytes) do
      good when is_binary(good) ->
        IO.iodata_to_binary(Enum.reverse([good | acc]))

      {:error, good, <<_, rest::binary>>} ->
        fix_utf8(rest, cut?, ["\uFFFD", good | acc])

      {:incomplete, good, _rest} when cut? ->
        IO.iodata_to_binary(Enum.reverse([good | acc]))

      {:incomplete, good, _rest} ->
        IO.iodata_to_binary(Enum.reverse(["\uFFFD", good | acc]))
    end
  end

  # ------------------------------------------------------------ levels

  @level_re ~r/\[(?i:(emergency|emerg|alert|critical|crit|fatal|error|err|warning|warn|notice|info|debug|trace))\]|(?i:\b(?:level|lvl|severity)"?\s*[=:]\s*"?([a-z]+))|(?<![\w-])(EMERGENCY|EMERG|PANIC|ALERT|CRITICAL|CRIT|FATAL|SEVERE|ERROR|ERR|WARNING|WARN|NOTICE|INFO|DEBUG|TRACE)(?![\w-])/

  defp level(text) do
    head = if byte_size(text) > @level_scan, do: binary_part(text, 0, @level_scan), else: text

    case Regex.run(@level_re, head, capture: :all_but_first) do
      nil -> nil
      groups -> groups |> Enum.find(&(&1 != "")) |> level_name()
    end
  end

  defp level_name(nil), do: nil

  defp level_name(name) do
    case String.downcase(name) do
      n when n in ["emergency", "emerg", "panic"] -> :emergency
      "alert" -> :alert
      n when n in ["critical", "crit", "fatal"] -> :critical
      n when n in ["error", "err", "severe"] -> :error
      n when n in ["warning", "warn"] -> :warning
      "notice" -> :notice
      n when n in ["info", "information"] -> :info
      n when n in ["debug", "trace"] -> :debug
      _ -> nil
    end
  end

  # ------------------------------------------------------------ delivery

  defp enqueue(st, []), do: st

  defp enqueue(st, events) do
    Enum.reduce(events, st, fn
      :filtered, st ->
        %{st | filtered: st.filtered + 1}

      event, st ->
        if st.nbuffer < st.cfg.max_buffer do
          %{
            st
            | buffer: :queue.in(event, st.buffer),
              nbuffer: st.nbuffer + 1,
              events: st.events + 1
          }
        else
          st =
            if st.dropping do
              st
            else
              Logger.warning(
                "SelfHeal.Tail: buffer full (#{st.cfg.max_buffer} events), dropping events",
                domain: [:self_heal]
              )

              %{st | dropping: true}
            end

          %{st | dropped: st.dropped + 1, events: st.events + 1}
        end
    end)
  end

  defp deliver(%{nbuffer: 0} = st, _now), do: %{st | backoff: 0, dropping: false}
  defp deliver(st, now) when now < st.retry_at, do: st

  defp deliver(st, now) do
    n = min(st.nbuffer, st.batch)
    {batch, rest} = :queue.split(n, st.buffer)

    case Collector.ingest(st.cfg.collector, :queue.to_list(batch)) do
      :ok ->
        batch = min(st.batch * 2, @ingest_batch)
        deliver(%{st | buffer: rest, nbuffer: st.nbuffer - n, backoff: 0, batch: batch}, now)

      {:error, :overloaded} ->
        # smaller batches too, so a collector with little room still
        # takes some
        backoff = min(max(st.backoff * 2, @backoff_min), @backoff_max)
        %{st | backoff: backoff, retry_at: now + backoff, batch: max(div(n, 2), 1)}
    end
  end

  # ------------------------------------------------------------ files

  defp stat(path) do
    case :file.read_file_info(path, [:raw]) do
      {:ok, file_info(major_device: dev, inode: ino, size: size)} -> {:ok, {dev, ino}, size}
      {:error, reason} when reason in [:enoent, :enotdir] -> :missing
      {:error, reason} -> {:error, reason}
    end
  end

  defp fstat(fd) do
    case :file.read_file_info(fd) do
      {:ok, file_info(type: :regular, major_device: dev, inode: ino, size: size)} ->
        {:ok, {dev, ino}, size}

      {:ok, file_info(type: type)} ->
        {:error, {:not_a_file, type}}

      {:error, reason} ->
        {:error, reason}
    end
  end

  # One log message per change of a file's state.
  defp note(%{noted: what} = e, what), do: e

  defp note(e, what) do
    case what do
      :open when e.noted != nil ->
        Logger.info("SelfHeal.Tail: following #{e.path}", domain: [:self_heal])

      :open ->
        :ok

      :missing when e.glob? ->
        :ok

      :missing ->
        Logger.info("SelfHeal.Tail: #{e.path} does not exist, waiting for it",
          domain: [:self_heal]
        )

      {:error, reason} ->
        Logger.warning("SelfHeal.Tail: cannot read #{e.path}: #{inspect(reason)}",
          domain: [:self_heal]
        )

      {:stat_error, reason} ->
        Logger.warning("SelfHeal.Tail: cannot stat #{e.path}: #{inspect(reason)}",
          domain: [:self_heal]
        )
    end

    %{e | noted: what}
  end

  defp now_ms, do: System.monotonic_time(:millisecond)
end
