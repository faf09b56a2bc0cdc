defmodule SelfHeal.NativeTest do
  use ExUnit.Case, async: true

  import Bitwise
  import SelfHeal.TestSupport
  alias SelfHeal.Native

  @hex32 ~r/\A[0-9a-f]{32}\z/

  @worker {MyApp.Worker, :handle_call, 3, "lib/my_app/worker.ex", 42}
  @repo {MyApp.Repo, :get, 2, "lib/my_app/repo.ex", 10}
  @gen_server {:gen_server, :try_handle_call, 4, "gen_server.erl", 1149}
  @billing {MyApp.Billing, :charge, 2, "lib/my_app/billing.ex", 42}

  # ---------------------------------------------------------------- normalize

  describe "normalize/1" do
    test "replaces an integer with <int> and keeps the words" do
      out = Native.normalize("user 42 not found")
      assert out =~ "<int>"
      refute out =~ "42"
      assert out =~ "user"
      assert out =~ "not found"
    end

    test "messages differing only in variable parts normalise alike" do
      a = "order 1234 for user 5d41402a-bc4b-4a5e-9f0e-123456789abc at 2024-05-01T12:00:00Z"
      b = "order 98 for user 0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9 at 2023-11-30T23:59:59Z"
      assert Native.normalize(a) == Native.normalize(b)
      refute Native.normalize(a) == Native.normalize("invoice 98 for user x")
    end

    test "typed placeholders replace ids and the ids are gone" do
      cases = [
        {"request 5d41402a-bc4b-4a5e-9f0e-123456789abc failed", "<uuid>",
         "5d41402a-bc4b-4a5e-9f0e-123456789abc"},
        {"process #PID<0.123.0> exited", "<pid>", "0.123.0"},
        {"connect to 10.1.2.3 refused", "<ip>", "10.1.2.3"},
        {"mail to jane.doe@example.com bounced", "<email>", "jane.doe@example.com"},
        {"at 2024-05-01T12:34:56.789Z the job failed", "<ts>", "2024-05-01T12:34:56"},
        {"flags 0x1f are bad", "<hex>", "0x1f"},
        {"segfault at 0x7ffd12345678", "<addr>", "7ffd12345678"}
      ]

      for {message, placeholder, id} <- cases do
        out = Native.normalize(message)
        assert out =~ placeholder, "#{inspect(message)} -> #{inspect(out)}"
        refute out =~ id, "#{inspect(message)} -> #{inspect(out)}"
      end
    end

    test "the empty message" do
      assert Native.normalize("") == ""
    end

    # c_src/normalize.c: "the worst case is 5 * len" (placeholders longer
    # than their text); include/self_heal/normalize.h still says 2 * len + 16
    test "output is valid UTF-8 and bounded by 5 * len + 16" do
      for message <- ["héllo wörld 42 ✓", "日本語 123", "plain text without ids"] do
        out = Native.normalize(message)
        assert String.valid?(out)
        assert byte_size(out) <= 5 * byte_size(message) + 16
      end
    end

    test "a non-binary raises ArgumentError" do
      for bad <- [42, :atom, ~c"charlist", nil, {:a, "b"}, self()] do
        assert_raise ArgumentError, ~r/normalize/, fn -> Native.normalize(bad) end
      end
    end
  end

  # ------------------------------------------------------------------ config

  describe "config/1" do
    test "returns a reference usable by every function" do
      config = Native.config()
      assert is_reference(config)
      event = event("RuntimeError", "boom", [@worker], :term)
      assert Native.fingerprint(event, config).fingerprint == fp(event)
      assert Native.fingerprint_batch([event], config) == [fp(event)]
    end

    test "accepts a keyword list or a map" do
      event = event("RuntimeError", "boom", [@worker, @repo], :term)
      a = Native.fingerprint(event, Native.config(in_app_prefixes: ["MyApp.Repo"]))
      b = Native.fingerprint(event, Native.config(%{in_app_prefixes: ["MyApp.Repo"]}))
      assert a == b
    end

    test "max_event_bytes must be an integer in 64..16 MiB" do
      assert is_reference(Native.config(max_event_bytes: 64))
      assert is_reference(Native.config(max_event_bytes: 16 * 1024 * 1024))

      for bad <- [0, 63, 16 * 1024 * 1024 + 1, -1, 1.5, "100", :big, 1 <<< 70] do
        assert_raise ArgumentError, ~r/max_event_bytes/, fn ->
          Native.config(max_event_bytes: bad)
        end
      end
    end

    test "yield_every must be a non-negative integer" do
      assert is_reference(Native.config(yield_every: 0))
      assert is_reference(Native.config(yield_every: 7))

      for bad <- [-1, 1.0, "1", :often] do
        assert_raise ArgumentError, ~r/yield_every/, fn -> Native.config(yield_every: bad) end
      end
    end

    test "in_app_prefixes must be a list of non-empty binaries or atoms" do
      assert is_reference(Native.config(in_app_prefixes: ["MyApp", :Other]))

      for bad <- [[1], [""], [{:a, :b}], [["nested"]], Enum.map(1..257, &"P#{&1}")] do
        assert_raise ArgumentError, fn -> Native.config(in_app_prefixes: bad) end
      end

      assert_raise ArgumentError, fn -> Native.config(in_app_prefixes: "MyApp") end
    end

    test "in_app_apps: a list of application names, loaded or not" do
      assert is_reference(Native.config(in_app_apps: [:self_heal]))
      assert is_reference(Native.config(in_app_apps: [:no_such_app_loaded]))
      assert is_reference(Native.config(in_app_apps: []))
    end

    test "in_app_apps: a non-atom entry raises ArgumentError" do
      assert_raise ArgumentError, fn -> Native.config(in_app_apps: [123]) end
      assert_raise ArgumentError, fn -> Native.config(in_app_apps: ["self_heal"]) end
    end

    test "in_app_apps: a non-list raises ArgumentError" do
      assert_raise ArgumentError, fn -> Native.config(in_app_apps: :self_heal) end
    end

    test "make_config/1 refuses a non-map" do
      for bad <- [:atom, [], "x", 1, make_ref()] do
        assert_raise ArgumentError, ~r/config must be a map/, fn -> Native.make_config(bad) end
      end
    end
  end

  # ------------------------------------------------------------- fingerprint

  describe "fingerprint/2" do
    test ":normalized shows at most 64 KiB, cut at a UTF-8 boundary; the fingerprint covers all" do
      cfg = Native.config(max_event_bytes: 1_048_576)
      # two-byte characters, so that 64 KiB falls inside one of them
      base = "xx" <> String.duplicate("é olé ", 20_000)
      a = Native.fingerprint(%{type: "E", message: base <> " tail one"}, cfg)
      b = Native.fingerprint(%{type: "E", message: base <> " tail two"}, cfg)
      assert byte_size(a.normalized) <= 65_536 and byte_size(a.normalized) > 65_000
      assert String.valid?(a.normalized)
      assert a.normalized == b.normalized
      assert a.fingerprint != b.fingerprint

      short = Native.fingerprint(%{type: "E", message: "short é message"}, cfg)
      assert short.normalized == "short é message"
    end

    test "result keys and shapes" do
      info = Native.fingerprint(event("RuntimeError", "boom", [@worker, @gen_server], :term))

      assert info |> Map.keys() |> Enum.sort() ==
               Enum.sort([
                 :fingerprint,
                 :normalized,
                 :type,
                 :in_app,
                 :truncated,
                 :top_frame,
                 :frames,
                 :cluster
               ])

      assert info.cluster == nil
      assert info.fingerprint =~ @hex32
      assert info.type == "RuntimeError"
      assert info.normalized == "boom"
      assert info.truncated == false
      assert is_boolean(info.in_app)
      assert [%{}, %{}] = info.frames

      for frame <- info.frames do
        assert frame |> Map.keys() |> Enum.sort() ==
                 Enum.sort([:kind, :app, :module, :function, :file, :line, :column, :in_app])
      end
    end

    test "is deterministic" do
      event = event("KeyError", "key :id not found", [@worker, @repo], :term)
      assert Native.fingerprint(event) == Native.fingerprint(event)
      assert Native.fingerprint(event, nil) == Native.fingerprint(event, Native.config())
    end

    test "top_frame and frames of a term stack trace" do
      info = Native.fingerprint(event("RuntimeError", "boom", [@worker, @gen_server], :term))

      assert %{
               module: "MyApp.Worker",
               function: "handle_call/3",
               file: "lib/my_app/worker.ex",
               line: 42,
               kind: :elixir,
               in_app: true
             } = info.top_frame

      assert [_worker, %{module: "gen_server", function: "try_handle_call/4", kind: :erlang}] =
               info.frames

      assert info.in_app
    end

    test "an argument list counts as the arity" do
      stack = [{MyApp.Worker, :handle_call, [:get, {self(), make_ref()}, %{}], [line: 3]}]
      info = Native.fingerprint(%{type: "FunctionClauseError", message: "x", stacktrace: stack})
      assert %{module: "MyApp.Worker", function: "handle_call/3", line: 3} = info.top_frame
    end

    test "top_frame and frames of a text stack trace" do
      info = Native.fingerprint(event("RuntimeError", "boom", [@worker, @gen_server], :text))
      assert %{module: "MyApp.Worker", function: "handle_call/3", line: 42} = info.top_frame
      assert String.ends_with?(info.top_frame.file, "lib/my_app/worker.ex")
      assert length(info.frames) == 2
    end

    test "without a stack trace: no frames, not in-app" do
      info = Native.fingerprint(%{type: "RuntimeError", message: "boom", stacktrace: nil})
      assert info.top_frame == nil
      assert info.frames == []
      assert info.in_app == false
      assert Native.fingerprint(%{type: "RuntimeError", message: "boom"}) == info
    end

    test "a SelfHeal.Event and the equivalent map fingerprint alike" do
      stack = term_stack([@worker, @repo])
      event = SelfHeal.Event.new(type: "RuntimeError", message: "boom", stacktrace: stack)
      map = %{type: "RuntimeError", message: "boom", stacktrace: stack}
      assert Native.fingerprint(event) == Native.fingerprint(map)
    end

    test "an atom type is its name without Elixir." do
      stack = term_stack([@worker])
      a = Native.fingerprint(%{type: RuntimeError, message: "boom", stacktrace: stack})
      b = Native.fingerprint(%{type: "RuntimeError", message: "boom", stacktrace: stack})
      assert a.type == "RuntimeError"
      assert a.fingerprint == b.fingerprint
    end

    test "nil type and nil message are allowed" do
      info = Native.fingerprint(%{type: nil, message: nil, stacktrace: nil})
      assert info.fingerprint =~ @hex32
      assert info.type == ""
      assert info.normalized == ""
    end

    test "a message over 64 KiB is truncated and flagged" do
      at_limit = String.duplicate("a", 65_536)
      over = at_limit <> "b"
      refute Native.fingerprint(%{type: "E", message: at_limit}).truncated
      info = Native.fingerprint(%{type: "E", message: over})
      assert info.truncated
      assert byte_size(info.normalized) <= 5 * 65_536 + 16
      # the cut drops what lies beyond the limit
      assert info.fingerprint == fp(%{type: "E", message: over <> "cdef"})
    end

    test "the cut falls on a UTF-8 boundary" do
      # 65_535 ASCII bytes then a 2-byte code point straddling the limit
      message = String.duplicate("a", 65_535) <> "é" <> "tail"
      info = Native.fingerprint(%{type: "E", message: message})
      assert info.truncated
      assert String.valid?(info.normalized)
      refute String.contains?(info.normalized, "é")
    end

    test "max_event_bytes lowers the limit" do
      config = Native.config(max_event_bytes: 64)

      assert Native.fingerprint(%{type: "E", message: String.duplicate("x", 65)}, config).truncated

      refute Native.fingerprint(%{type: "E", message: String.duplicate("x", 64)}, config).truncated
    end

    test "a text stack trace over the limit is truncated and flagged" do
      stack = text_stack(List.duplicate(@worker, 2_000))
      assert byte_size(stack) > 65_536
      assert Native.fingerprint(%{type: "E", message: "m", stacktrace: stack}).truncated
    end

    test "in_app_prefixes decide the in-app flags and the top frame" do
      config = Native.config(in_app_prefixes: ["MyApp.Billing"])
      stack = [@gen_server, @worker, @billing, @repo]
      info = Native.fingerprint(event("RuntimeError", "boom", stack, :term), config)

      assert Enum.map(info.frames, &{&1.module, &1.in_app}) == [
               {"gen_server", false},
               {"MyApp.Worker", false},
               {"MyApp.Billing", true},
               {"MyApp.Repo", false}
             ]

      assert info.top_frame.module == "MyApp.Billing"
      assert info.in_app
    end

    test "in_app_apps adds the application's namespaces" do
      config = Native.config(in_app_apps: [:self_heal])

      stack = [
        {:lists, :map, 2, [file: ~c"lists.erl", line: 1]},
        {SelfHeal.Collector, :flush, 1, []}
      ]

      info = Native.fingerprint(%{type: "E", message: "m", stacktrace: stack}, config)
      assert [%{in_app: false}, %{module: "SelfHeal.Collector", in_app: true}] = info.frames
      assert info.top_frame.module == "SelfHeal.Collector"
    end

    test "the default heuristic: OTP and Elixir frames are not in-app" do
      info = Native.fingerprint(event("RuntimeError", "boom", [@gen_server, @worker], :term))

      assert [%{module: "gen_server", in_app: false}, %{module: "MyApp.Worker", in_app: true}] =
               info.frames

      assert info.top_frame.module == "MyApp.Worker"

      enum = [{Enum, :map, 2, [file: ~c"lib/enum.ex", line: 1]}]
      assert [%{in_app: false}] = Native.fingerprint(%{message: "x", stacktrace: enum}).frames
    end

    test "at most 64 frames are read" do
      stack = term_stack(for i <- 1..200, do: {MyApp.Worker, :"f#{i}", 0, "lib/w.ex", i})
      assert length(Native.fingerprint(%{message: "m", stacktrace: stack}).frames) == 64
    end

    test "bad events raise ArgumentError saying what is wrong" do
      assert_raise ArgumentError, ~r/map/, fn -> Native.fingerprint([type: "E"], nil) end
      assert_raise ArgumentError, ~r/message/, fn -> Native.fingerprint(%{message: 42}) end
      assert_raise ArgumentError, ~r/type/, fn -> Native.fingerprint(%{type: 42}) end
      assert_raise ArgumentError, ~r/stacktrace/, fn -> Native.fingerprint(%{stacktrace: 42}) end
      assert_raise ArgumentError, ~r/config/, fn -> Native.fingerprint(%{}, make_ref()) end
    end
  end

  # ------------------------------------------------------ fingerprint_batch

  describe "fingerprint_batch/2" do
    test "equals fingerprint/2 of every event, in order" do
      events = varied_events(600)
      expected = Enum.map(events, &fp/1)
      assert Native.fingerprint_batch(events) == expected
      assert Native.fingerprint_batch(events, nil) == expected
      assert Native.fingerprint_batch(Enum.reverse(events)) == Enum.reverse(expected)
    end

    test "equals fingerprint/2 with a custom config" do
      config = Native.config(in_app_prefixes: ["MyApp.Repo"], max_event_bytes: 64)
      events = varied_events(300)
      assert Native.fingerprint_batch(events, config) == Enum.map(events, &fp(&1, config))
    end

    test "the empty list" do
      assert Native.fingerprint_batch([]) == []
      assert Native.fingerprint_batch([], Native.config()) == []
    end

    test "every result is 32 lowercase hex characters" do
      for f <- Native.fingerprint_batch(varied_events(100)), do: assert(f =~ @hex32)
    end

    test "a bad event anywhere raises ArgumentError" do
      events = varied_events(50)
      assert_raise ArgumentError, fn -> Native.fingerprint_batch(events ++ [:bad]) end
      assert_raise ArgumentError, fn -> Native.fingerprint_batch([%{message: 1} | events]) end
      assert_raise ArgumentError, fn -> Native.fingerprint_batch(%{}) end
      assert_raise ArgumentError, fn -> Native.fingerprint_batch(events, make_ref()) end
    end
  end

  # ------------------------------------------------------------------ dedup

  describe "dedup/1" do
    @a String.duplicate("a", 32)
    @b String.duplicate("b", 32)
    @c "0123456789abcdef0123456789abcdef"

    test "groups by fingerprint in first-seen order with counts and bounds" do
      events = [
        %{id: 1, fingerprint: @b, timestamp: 50, service: "api"},
        %{id: 2, fingerprint: @a, timestamp: 70, service: "web"},
        %{id: 3, fingerprint: @b, timestamp: 10, service: "worker"},
        %{id: 4, fingerprint: @c, timestamp: 5, service: nil},
        %{id: 5, fingerprint: @b, timestamp: 90, service: "api"},
        %{id: 6, fingerprint: @a, timestamp: 60, service: "web"}
      ]

      assert [b, a, c] = Native.dedup(events)

      assert %{fingerprint: @b, count: 3, first_seen: 10, last_seen: 90} = b
      assert b.sample.id == 1
      assert b.services == ["api", "worker"]
      assert b.services_dropped == 0

      assert %{fingerprint: @a, count: 2, first_seen: 60, last_seen: 70} = a
      assert a.sample.id == 2
      assert a.services == ["web"]

      assert %{fingerprint: @c, count: 1, first_seen: 5, last_seen: 5, services: []} = c
      assert c.sample == Enum.at(events, 3)
    end

    test "the sample is the first event itself, any extra keys kept" do
      first = %SelfHeal.Event{fingerprint: @a, timestamp: 2, message: "first", service: "s"}
      later = %SelfHeal.Event{fingerprint: @a, timestamp: 1, message: "later", service: "s"}
      assert [%{sample: ^first, count: 2, first_seen: 1}] = Native.dedup([first, later])
    end

    test "the empty list" do
      assert Native.dedup([]) == []
    end

    test "at most 16 services per group, the others counted" do
      events = for i <- 1..20, do: %{fingerprint: @a, timestamp: i, service: "svc#{i}"}
      assert [group] = Native.dedup(events)
      assert group.count == 20
      assert group.services == for(i <- 1..16, do: "svc#{i}")
      assert group.services_dropped == 4
    end

    test "many events and fingerprints" do
      fps = for i <- 1..1_000, do: :crypto.hash(:md5, "#{i}") |> Base.encode16(case: :lower)
      by_index = List.to_tuple(fps)

      events = for i <- 0..99_999, do: %{fingerprint: elem(by_index, rem(i, 1_000)), timestamp: i}

      groups = Native.dedup(events)
      assert length(groups) == 1_000
      assert Enum.map(groups, & &1.fingerprint) == fps
      assert Enum.all?(groups, &(&1.count == 100))
      assert hd(groups).first_seen == 0 and hd(groups).last_seen == 99_000
    end

    test "a bad fingerprint raises ArgumentError" do
      for bad <- ["abc", String.duplicate("a", 31), String.duplicate("g", 32), nil, 42, :a] do
        assert_raise ArgumentError, ~r/fingerprint/, fn ->
          Native.dedup([%{fingerprint: @a, timestamp: 1}, %{fingerprint: bad, timestamp: 2}])
        end
      end

      assert_raise ArgumentError, ~r/fingerprint/, fn -> Native.dedup([%{timestamp: 1}]) end
      assert_raise ArgumentError, fn -> Native.dedup([:not_a_map]) end
    end

    test "a bad timestamp or service raises ArgumentError" do
      assert_raise ArgumentError, ~r/timestamp/, fn ->
        Native.dedup([%{fingerprint: @a, timestamp: "now"}])
      end

      assert_raise ArgumentError, ~r/timestamp/, fn ->
        Native.dedup([%{fingerprint: @a, timestamp: 1 <<< 64}])
      end

      assert_raise ArgumentError, ~r/service/, fn ->
        Native.dedup([%{fingerprint: @a, timestamp: 1, service: :api}])
      end
    end

    test "works on fingerprint_batch/2 output" do
      events = varied_events(200)
      fps = Native.fingerprint_batch(events)

      fingerprinted =
        Enum.zip_with(events, fps, fn e, f ->
          e |> Map.put(:fingerprint, f) |> Map.put(:timestamp, 1)
        end)

      groups = Native.dedup(fingerprinted)
      assert Enum.sum(Enum.map(groups, & &1.count)) == 200
      assert Enum.map(groups, & &1.fingerprint) == Enum.uniq(fps)
    end
  end

  # ------------------------------------------------------ decode_json_lines

  describe "decode_json_lines/1" do
    test "decodes one event per line, in order" do
      body = """
      {"log":"boom 1","service":"api","level":"error"}
      {"message":"boom 2","exception":{"type":"TypeError"},"stack":"at x (a.js:1:2)"}
      """

      assert %{events: [e1, e2], malformed: 0, blank_lines: 0, errors: []} =
               Native.decode_json_lines(body)

      assert %{message: "boom 1", service: "api", level: "error", type: nil} = e1
      assert %{message: "boom 2", type: "TypeError", stacktrace: "at x (a.js:1:2)"} = e2
    end

    test "timestamps become microseconds since the epoch" do
      body = ~s({"message":"a","timestamp":"2024-05-01T12:00:00Z"}\n)
      assert %{events: [%{timestamp: 1_714_564_800_000_000}]} = Native.decode_json_lines(body)
      body = ~s({"message":"a","timestamp":"2024-05-01T12:00:00.250Z"}\n)
      assert %{events: [%{timestamp: 1_714_564_800_250_000}]} = Native.decode_json_lines(body)
    end

    test "other scalars become metadata" do
      body = ~s({"message":"x","request_id":"r-1","status":500,"http":{"path":"/a"}})
      assert %{events: [%{metadata: meta}]} = Native.decode_json_lines(body)
      assert meta["request_id"] == "r-1"
      assert meta["status"] == 500
      assert meta["http.path"] == "/a"
    end

    test "a malformed line is counted and reported with its line number, the rest kept" do
      body =
        Enum.join(
          [
            ~s({"message":"one"}),
            ~s({"message": broken),
            ~s({"message":"three"}),
            ~s([1, 2, 3]),
            ~s({"message":"five"})
          ],
          "\n"
        )

      result = Native.decode_json_lines(body)
      assert Enum.map(result.events, & &1.message) == ["one", "three", "five"]
      assert result.malformed == 2
      assert [{2, reason2}, {4, reason4}] = result.errors
      assert is_binary(reason2) and reason2 != ""
      assert is_binary(reason4) and reason4 != ""
    end

    test "blank lines are counted, not malformed" do
      body = "\n" <> ~s({"message":"a"}) <> "\n\n   \n\t\r\n" <> ~s({"message":"b"}) <> "\r\n"
      result = Native.decode_json_lines(body)
      assert Enum.map(result.events, & &1.message) == ["a", "b"]
      assert result.blank_lines == 4
      assert result.malformed == 0
    end

    test "line numbers count blank lines" do
      body = "\n\n" <> "nope" <> "\n" <> ~s({"message":"a"})
      assert %{errors: [{3, _}], blank_lines: 2, malformed: 1} = Native.decode_json_lines(body)
    end

    test "the empty body" do
      assert Native.decode_json_lines("") == %{
               events: [],
               malformed: 0,
               blank_lines: 0,
               errors: []
             }
    end

    test "at most 100 errors are listed, all are counted" do
      body = Enum.map_join(1..150, "\n", fn _ -> "not json" end) <> "\n" <> ~s({"message":"ok"})
      result = Native.decode_json_lines(body)
      assert result.malformed == 150
      assert length(result.errors) == 100
      assert Enum.map(result.errors, &elem(&1, 0)) == Enum.to_list(1..100)
      assert [%{message: "ok"}] = result.events
    end

    test "a non-binary raises ArgumentError" do
      for bad <- [nil, ~c"{}", 1, [~s({"message":"a"})]] do
        assert_raise ArgumentError, fn -> Native.decode_json_lines(bad) end
      end
    end

    test "/1 takes a body of at most 8 MiB; /3 decodes a larger one slice by slice" do
      line = ~s({"message":"m"}\n)
      at_limit = :binary.copy(line, div(8 * 1024 * 1024, byte_size(line)))
      assert byte_size(at_limit) <= 8 * 1024 * 1024
      assert length(Native.decode_json_lines(at_limit).events) == div(byte_size(at_limit), 16)

      over = at_limit <> :binary.copy(line, 100)

      assert_raise ArgumentError, ~r/8 MiB.*decode_json_lines\/3/, fn ->
        Native.decode_json_lines(over)
      end

      total =
        Stream.unfold(0, fn
          off when off >= byte_size(over) -> nil
          off -> (r = Native.decode_json_lines(over, off, 50_000)) && {length(r.events), r.next}
        end)
        |> Enum.sum()

      assert total == div(byte_size(over), 16)
    end
  end

  # ---------------------------------------------------- fingerprint properties

  describe "fingerprint properties" do
    test "field separators keep (\"ab\", \"c\") and (\"a\", \"bc\") apart" do
      assert fp(%{type: "ab", message: "c"}) != fp(%{type: "a", message: "bc"})
    end

    test "anonymous functions count as their enclosing function" do
      a = [{MyApp.Worker, :"-init/1-fun-0-", 0, "lib/my_app/worker.ex", 10}]
      b = [{MyApp.Worker, :"-init/1-fun-3-", 0, "lib/my_app/worker.ex", 12}]
      c = [{MyApp.Worker, :"-run/1-fun-0-", 0, "lib/my_app/worker.ex", 10}]

      assert fp(event("RuntimeError", "boom", a, :term)) ==
               fp(event("RuntimeError", "boom", b, :term))

      refute fp(event("RuntimeError", "boom", a, :term)) ==
               fp(event("RuntimeError", "boom", c, :term))
    end

    test "only the top 3 in-app frames count" do
      top = [@worker, @repo, @billing]
      a = top ++ [{MyApp.D, :d, 0, "lib/d.ex", 1}]
      b = top ++ [{MyApp.E, :e, 0, "lib/e.ex", 1}]

      assert fp(event("RuntimeError", "boom", a, :term)) ==
               fp(event("RuntimeError", "boom", b, :term))
    end

    test "without in-app frames, recursion depth does not split a group" do
      foldl = {:lists, :foldl, 3, "lists.erl", 1263}
      a = List.duplicate(foldl, 3) ++ [@gen_server]
      b = List.duplicate(foldl, 9) ++ [@gen_server]
      c = List.duplicate(foldl, 3) ++ [{:gen_server, :handle_msg, 6, "gen_server.erl", 1}]
      assert fp(event("exit", "boom", a, :term)) == fp(event("exit", "boom", b, :term))
      refute fp(event("exit", "boom", a, :term)) == fp(event("exit", "boom", c, :term))
    end

    test "JavaScript frames: cache-busting hashes, hosts and columns do not split a group" do
      js = fn host, hash, line ->
        "TypeError: x is undefined\n" <>
          "    at render (https://#{host}/static/js/main.#{hash}.js:#{line}:#{line * 7})\n" <>
          "    at commit (https://#{host}/static/js/vendor.js:10:5)\n"
      end

      a = %{
        type: "TypeError",
        message: "x is undefined",
        stacktrace: js.("a.example.com", "3f9a2b1c", 1)
      }

      b = %{
        type: "TypeError",
        message: "x is undefined",
        stacktrace: js.("b.example.com", "9e8d7c6b", 42)
      }

      assert fp(a) == fp(b)
      assert Native.fingerprint(a).top_frame.function == "render"
    end
  end

  for kind <- [:term, :text] do
    describe "fingerprint properties (#{kind} stack traces)" do
      @kind kind

      test "a deploy that only shifts line numbers keeps the fingerprint" do
        v1 = [@worker, @repo, @gen_server]

        v2 = Enum.map(v1, fn {m, f, a, file, line} -> {m, f, a, file, line + 17} end)

        assert fp(event("RuntimeError", "boom", v1, @kind)) ==
                 fp(event("RuntimeError", "boom", v2, @kind))
      end

      test "the same exception type at two places gives two fingerprints" do
        here = [@worker, @gen_server]

        other_function = [
          {MyApp.Worker, :handle_cast, 2, "lib/my_app/worker.ex", 42},
          @gen_server
        ]

        other_module = [@billing, @gen_server]
        a = fp(event("KeyError", "key :id not found", here, @kind))
        b = fp(event("KeyError", "key :id not found", other_function, @kind))
        c = fp(event("KeyError", "key :id not found", other_module, @kind))
        assert a != b
        assert a != c
        assert b != c
      end

      test "two exception types at one place give two fingerprints" do
        here = [@worker, @gen_server]

        refute fp(event("KeyError", "boom", here, @kind)) ==
                 fp(event("ArgumentError", "boom", here, @kind))
      end

      test "messages differing only in ids, timestamps and pids merge" do
        here = [@worker, @repo]

        a =
          "order 1234 for user 5d41402a-bc4b-4a5e-9f0e-123456789abc failed at 2024-05-01T12:00:00Z in #PID<0.123.0>"

        b =
          "order 98 for user 0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9 failed at 2023-12-31T23:59:59Z in #PID<0.4567.0>"

        assert fp(event("RuntimeError", a, here, @kind)) ==
                 fp(event("RuntimeError", b, here, @kind))

        refute fp(event("RuntimeError", a, here, @kind)) ==
                 fp(event("RuntimeError", "invoice 98 was refused", here, @kind))
      end

      test "GenServer.call timeouts differing only in their arguments merge" do
        here = [{GenServer, :call, 3, "lib/gen_server.ex", 1038}, @worker]
        a = "exited in: GenServer.call(#PID<0.123.0>, {:get, 42}, 5000)\n    ** (EXIT) time out"

        b =
          "exited in: GenServer.call(#PID<0.456.0>, {:put, \"x\", 3}, 5000)\n    ** (EXIT) time out"

        c =
          "exited in: GenServer.call(#PID<0.456.0>, {:put, \"x\", 3}, 5000)\n    ** (EXIT) no process"

        assert fp(event("exit", a, here, @kind)) == fp(event("exit", b, here, @kind))
        refute fp(event("exit", a, here, @kind)) == fp(event("exit", c, here, @kind))
      end

      test ":undef exits differing only in their arguments merge" do
        here = [@worker]
        a = ~s({:undef, [{Foo, :bar, ["abc", 123], []}]})
        b = ~s({:undef, [{Foo, :bar, [%{id: 7}, :x], []}]})
        c = ~s({:undef, [{Foo, :baz, ["abc", 123], []}]})
        assert fp(event("exit", a, here, @kind)) == fp(event("exit", b, here, @kind))
        refute fp(event("exit", a, here, @kind)) == fp(event("exit", c, here, @kind))
      end
    end
  end
end
