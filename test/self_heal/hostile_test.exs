defmodule SelfHeal.HostileTest do
  # Hostile input through the NIF: nothing may crash the VM, every result
  # stays bounded and valid, bad terms raise ArgumentError.
  use ExUnit.Case, async: true

  import SelfHeal.TestSupport
  alias SelfHeal.Native

  @moduletag timeout: 60_000
  @hex32 ~r/\A[0-9a-f]{32}\z/

  @worker {MyApp.Worker, :handle_call, 3, "lib/my_app/worker.ex", 42}

  defp ok_event, do: %{type: "RuntimeError", message: "boom", stacktrace: term_stack([@worker])}

  defp assert_valid_info(info) do
    assert info.fingerprint =~ @hex32
    assert String.valid?(info.normalized)
    assert length(info.frames) <= 64
    info
  end

  # lines of a body: a final "\n" ends the last line, it does not start one
  defp line_count(body) do
    parts = String.split(body, "\n")
    if List.last(parts) == "", do: length(parts) - 1, else: length(parts)
  end

  # c_src/normalize.c: a placeholder can be longer than its text ("7" ->
  # "<int>", a bad byte -> U+FFFD), "the worst case is 5 * len".
  # (include/self_heal/normalize.h still says 2 * len + 16.)
  defp max_normalized(len), do: 5 * len + 16

  defp rand_bytes(n), do: for(_ <- 1..n//1, into: <<>>, do: <<:rand.uniform(256) - 1>>)

  defp elapsed_ms(fun) do
    {us, result} = :timer.tc(fun)
    {div(us, 1000), result}
  end

  # --------------------------------------------------------------- encodings

  describe "invalid UTF-8 and control bytes" do
    @invalid [
      <<0xFF, 0xFE, "abc">>,
      "user 42 " <> <<0xC3>>,
      <<0xC0, 0x80, "overlong">>,
      <<0xED, 0xA0, 0x80, "surrogate">>,
      <<0xF4, 0x90, 0x80, 0x80, "above U+10FFFF">>,
      <<0xF8, 0x88, 0x80, 0x80, 0x80, "five bytes">>,
      <<"cut ", 0xE2, 0x82>>,
      <<0x80, 0x80, 0x80>>,
      :binary.copy(<<0xE9>>, 1_000)
    ]

    test "normalize/1 returns valid UTF-8" do
      for message <- @invalid do
        out = Native.normalize(message)
        assert String.valid?(out), "#{inspect(message)} -> #{inspect(out)}"
        assert byte_size(out) <= max_normalized(byte_size(message))
      end
    end

    test "fingerprint/2 returns a valid normalised message" do
      for message <- @invalid do
        assert_valid_info(Native.fingerprint(%{type: "E", message: message}))
      end
    end

    test "invalid UTF-8 in type, stack text and file names does not crash" do
      bad = <<0xFF, 0xC3, "x">>

      info =
        Native.fingerprint(%{
          type: bad,
          message: bad,
          stacktrace: "    lib/" <> bad <> ".ex:1: A.b/0\n"
        })

      assert_valid_info(info)
      stack = [{MyApp.Worker, :run, 0, [file: bad, line: 1]}]
      assert_valid_info(Native.fingerprint(%{message: "m", stacktrace: stack}))
    end

    test "NUL bytes are not string terminators" do
      a = Native.normalize("before\0after")
      assert String.valid?(a)
      assert a =~ "after"
      refute String.contains?(a, <<0>>)
      assert fp(%{message: "x\0one"}) != fp(%{message: "x\0two"})

      info = Native.fingerprint(%{type: "E\0F", message: "\0\0\0", stacktrace: "\0\n\0"})
      assert_valid_info(info)
    end

    test "control bytes become spaces, newlines stay" do
      out = Native.normalize("a\x01b\x1fc\x7f\nd\te")
      assert String.valid?(out)
      refute out =~ <<1>>
      refute out =~ <<0x1F>>
      assert out =~ "\n"
      assert out =~ "a"
      assert out =~ "e"
    end
  end

  # -------------------------------------------------------------------- size

  describe "huge input" do
    test "a 10 MB message is truncated, bounded and fast" do
      message = String.duplicate("order 12345 failed; ", 500_000)
      assert byte_size(message) == 10_000_000
      {ms, info} = elapsed_ms(fn -> Native.fingerprint(%{type: "E", message: message}) end)
      assert info.truncated
      assert_valid_info(info)
      assert byte_size(info.normalized) <= max_normalized(65_536)
      assert ms < 2_000, "took #{ms} ms"

      {ms, out} = elapsed_ms(fn -> Native.normalize(message) end)
      assert String.valid?(out)
      assert String.ends_with?(out, " <truncated>")
      assert byte_size(out) <= max_normalized(65_536) + byte_size(" <truncated>")
      assert ms < 2_000, "took #{ms} ms"
    end

    test "a 10 MB message in a batch" do
      big = %{type: "E", message: :binary.copy("x", 10_000_000)}
      {ms, [a, b]} = elapsed_ms(fn -> Native.fingerprint_batch([big, ok_event()]) end)
      assert a == fp(big)
      assert b == fp(ok_event())
      assert ms < 2_000, "took #{ms} ms"
    end

    test "a 10 MB text stack trace is truncated" do
      stack = :binary.copy("    lib/my_app/worker.ex:42: MyApp.Worker.handle_call/3\n", 180_000)
      assert byte_size(stack) > 10_000_000
      {ms, info} = elapsed_ms(fn -> Native.fingerprint(%{message: "m", stacktrace: stack}) end)
      assert info.truncated
      assert_valid_info(info)
      assert ms < 2_000, "took #{ms} ms"
    end

    test "a 100,000-frame term stack trace" do
      stack =
        for i <- 1..100_000 do
          {MyApp.Deep, :recurse, 1, [file: ~c"lib/my_app/deep.ex", line: rem(i, 1000) + 1]}
        end

      {ms, info} = elapsed_ms(fn -> Native.fingerprint(%{message: "m", stacktrace: stack}) end)
      assert_valid_info(info)
      assert length(info.frames) == 64
      assert ms < 2_000, "took #{ms} ms"

      # recursion depth does not split the group
      assert info.fingerprint == fp(%{message: "m", stacktrace: Enum.take(stack, 70)})

      {ms, [f]} =
        elapsed_ms(fn -> Native.fingerprint_batch([%{message: "m", stacktrace: stack}]) end)

      assert f == info.fingerprint
      assert ms < 2_000, "took #{ms} ms"
    end

    test "a 100,000-line text stack trace" do
      stack =
        Enum.map_join(1..100_000, "", fn i ->
          "    (my_app 0.1.0) lib/my_app/deep.ex:#{i}: MyApp.Deep.recurse/1\n"
        end)

      {ms, info} = elapsed_ms(fn -> Native.fingerprint(%{message: "m", stacktrace: stack}) end)
      assert_valid_info(info)
      assert info.truncated
      assert ms < 2_000, "took #{ms} ms"
    end

    test "a 100,000-line text stack trace of garbage lines" do
      stack = :binary.copy("((((((((((:::::: at at at File \"\n", 100_000)
      {ms, info} = elapsed_ms(fn -> Native.fingerprint(%{message: "m", stacktrace: stack}) end)
      assert_valid_info(info)
      assert ms < 2_000, "took #{ms} ms"
    end

    test "one 1 MB line as a text stack trace" do
      stack = "    at " <> :binary.copy("(", 1_000_000) <> "\n"
      {ms, info} = elapsed_ms(fn -> Native.fingerprint(%{message: "m", stacktrace: stack}) end)
      assert_valid_info(info)
      assert ms < 2_000, "took #{ms} ms"
    end

    test "long module, function and file names" do
      long = String.to_atom(String.duplicate("M", 255))
      file = String.duplicate("d/", 5_000) <> "f.ex"

      stack = [
        {long, long, 255, [file: String.to_charlist(file), line: 1]},
        {long, long, 0, [file: file]}
      ]

      info = assert_valid_info(Native.fingerprint(%{message: "m", stacktrace: stack}))
      assert length(info.frames) == 2
      # docs/nif.md: "Names are at most 255 bytes, files 1 KiB."
      sizes = Enum.map(info.frames, &byte_size(&1.file))
      assert Enum.max(sizes) <= 1_024, "file sizes #{inspect(sizes)}"
    end
  end

  # ------------------------------------------------------------- json lines

  describe "hostile json_lines bodies" do
    defp deep_array(n), do: String.duplicate("[", n) <> String.duplicate("]", n)
    defp deep_object(n), do: String.duplicate(~s({"a":), n) <> "1" <> String.duplicate("}", n)

    test "10,000-deep arrays and objects are malformed lines, the others kept" do
      body =
        Enum.join(
          [
            ~s({"message":"one"}),
            deep_array(10_000),
            deep_object(10_000),
            ~s({"message":"x","nested":) <> deep_array(10_000) <> "}",
            ~s({"message":"five"})
          ],
          "\n"
        )

      {ms, result} = elapsed_ms(fn -> Native.decode_json_lines(body) end)
      assert Enum.map(result.events, & &1.message) == ["one", "five"]
      assert result.malformed == 3
      assert Enum.map(result.errors, &elem(&1, 0)) == [2, 3, 4]
      assert ms < 2_000, "took #{ms} ms"
    end

    test "a 2 MB line is malformed, the others kept" do
      huge = ~s({"message":") <> :binary.copy("x", 2_000_000) <> ~s("})
      body = Enum.join([~s({"message":"a"}), huge, ~s({"message":"c"})], "\n")
      {ms, result} = elapsed_ms(fn -> Native.decode_json_lines(body) end)
      assert Enum.map(result.events, & &1.message) == ["a", "c"]
      assert result.malformed == 1
      assert [{2, _}] = result.errors
      assert ms < 2_000, "took #{ms} ms"
    end

    test "invalid UTF-8, NUL and control characters" do
      lines = [
        ~s({"message":") <> <<0xFF, 0xFE>> <> ~s("}),
        ~s({"message":"a\\u0000b"}),
        "{\"message\":\"raw\0nul\"}",
        ~s({"message":"ok"}),
        <<0>>,
        "\x01\x02\x03"
      ]

      result = Native.decode_json_lines(Enum.join(lines, "\n"))
      assert length(result.events) + result.malformed + result.blank_lines == length(lines)
      assert "ok" in Enum.map(result.events, & &1.message)

      for event <- result.events, do: assert(is_binary(event.message))
    end

    test "100,000 blank lines" do
      assert %{events: [], malformed: 0, blank_lines: 100_000} =
               Native.decode_json_lines(:binary.copy("\n", 100_000))
    end

    test "many metadata keys, long keys and long values stay bounded" do
      fields = for i <- 1..500, do: ~s("key#{i}":"#{i}")
      long_key = ~s(") <> String.duplicate("k", 10_000) <> ~s(":1)
      long_value = ~s("v":") <> String.duplicate("v", 100_000) <> ~s(")
      line = "{" <> Enum.join([~s("message":"m"), long_key, long_value | fields], ",") <> "}"
      assert %{events: [event]} = Native.decode_json_lines(line)
      assert map_size(event.metadata) <= 32
      assert Enum.all?(event.metadata, fn {k, _} -> byte_size(k) <= 128 end)

      assert Enum.all?(event.metadata, fn {_, v} -> not is_binary(v) or byte_size(v) <= 1_024 end)
    end

    test "random bodies: every line is an event, malformed or blank" do
      :rand.seed(:exsss, {7, 8, 9})

      pieces = [
        ~s({"message":"ok"}),
        ~s({"log":"x","service":"s","time":1714564800}),
        "",
        "   ",
        "not json",
        ~s({"message": ),
        ~s([]),
        ~s(null),
        ~s({"message":"\\ud800"}),
        deep_array(100)
      ]

      for _ <- 1..50 do
        lines =
          for _ <- 1..:rand.uniform(40) do
            if :rand.uniform(4) == 1,
              do: :rand.uniform(64) |> rand_bytes() |> String.replace("\n", ""),
              else: Enum.random(pieces)
          end

        body = Enum.join(lines, "\n")
        result = Native.decode_json_lines(body)
        assert length(result.events) + result.malformed + result.blank_lines == line_count(body)
        assert length(result.errors) == min(result.malformed, 100)
      end
    end
  end

  # ------------------------------------------------------------- bad terms

  describe "terms of the wrong kind" do
    test "non-binary messages raise ArgumentError" do
      for bad <- [42, 1.5, {:a, "b"}, self(), make_ref(), ~c"charlist", ["io", "list"], %{}] do
        assert_raise ArgumentError, fn -> Native.fingerprint(%{type: "E", message: bad}) end

        assert_raise ArgumentError, fn ->
          Native.fingerprint_batch([%{type: "E", message: bad}])
        end
      end
    end

    test "improper lists raise ArgumentError" do
      ev = ok_event()
      assert_raise ArgumentError, fn -> Native.fingerprint_batch([ev | :tail]) end
      assert_raise ArgumentError, fn -> Native.fingerprint_batch([ev, ev | ev]) end
      assert_raise ArgumentError, fn -> Native.fingerprint_batch(:not_a_list) end

      fingerprinted = %{fingerprint: String.duplicate("a", 32), timestamp: 1}
      assert_raise ArgumentError, fn -> Native.dedup([fingerprinted | :tail]) end
      assert_raise ArgumentError, fn -> Native.dedup(:not_a_list) end

      assert_raise ArgumentError, fn -> Native.make_config(%{in_app_prefixes: ["a" | :b]}) end
      assert_raise ArgumentError, fn -> Native.make_config(%{in_app_apps: [:a | :b]}) end
    end

    test "an improper stack trace or location list does not crash" do
      stack = [{MyApp.A, :a, 0, [file: ~c"lib/a.ex", line: 1]}, {MyApp.B, :b, 0, []} | :tail]
      info = assert_valid_info(Native.fingerprint(%{message: "m", stacktrace: stack}))
      assert Enum.map(info.frames, & &1.module) == ["MyApp.A", "MyApp.B"]

      stack = [{MyApp.A, :a, 0, [{:file, ~c"lib/a.ex"} | :bad]}]
      assert_valid_info(Native.fingerprint(%{message: "m", stacktrace: stack}))
      stack = [{MyApp.A, :a, 0, [file: [?a, ?b | :bad], line: 1]}]
      assert_valid_info(Native.fingerprint(%{message: "m", stacktrace: stack}))
    end

    test "stack entries of the wrong shape are skipped" do
      stack = [
        :atom,
        "string",
        42,
        {MyApp.Bad},
        {MyApp.Bad, :two},
        {MyApp.Bad, :arity, :not_an_integer, []},
        {MyApp.Bad, :arity, -1, []},
        {"MyApp.Bad", :binary_module, 1, []},
        {MyApp.Bad, "binary_function", 1, []},
        {MyApp.Bad, :five, 1, [], :extra},
        {MyApp.Good, :one, 1, [file: ~c"lib/good.ex", line: 1]},
        {MyApp.Good, :no_location, 2, :not_a_list},
        {MyApp.Good, :bad_location, 3, [file: 123, line: -5, other: :x, nope: 1, junk: {}]},
        {MyApp.Good, :weird_location, 4, [:a, {:file}, {:line, :x, :y}, 7]},
        {MyApp.Good, :bad_codepoints, 5, [file: [0x110000, -1], line: 1]},
        {MyApp.Good, :three_tuple, 6},
        {MyApp.Good, :args, [1, 2, 3], [line: 9]},
        {fn -> :ok end, [], []},
        {:日本語, :unicode, 0, []}
      ]

      info = assert_valid_info(Native.fingerprint(%{message: "m", stacktrace: stack}))
      modules = Enum.map(info.frames, & &1.module)
      refute "MyApp.Bad" in modules
      assert Enum.count(modules, &(&1 == "MyApp.Good")) == 7
      assert info.top_frame.function == "one/1"

      assert Native.fingerprint_batch([%{message: "m", stacktrace: stack}]) == [info.fingerprint]
    end

    test "atoms, references, pids and funs where maps are expected raise ArgumentError" do
      for bad <- [:atom, make_ref(), self(), fn -> :ok end, {:event}, [], "event", 1] do
        assert_raise ArgumentError, fn -> Native.fingerprint(bad) end
        assert_raise ArgumentError, fn -> Native.fingerprint_batch([ok_event(), bad]) end
        assert_raise ArgumentError, fn -> Native.dedup([bad]) end
        assert_raise ArgumentError, fn -> Native.make_config(bad) end
      end
    end

    test "funs, references and pids in event fields raise ArgumentError" do
      for bad <- [make_ref(), self(), fn -> :ok end] do
        assert_raise ArgumentError, fn -> Native.fingerprint(%{type: bad}) end
        assert_raise ArgumentError, fn -> Native.fingerprint(%{message: bad}) end
        assert_raise ArgumentError, fn -> Native.fingerprint(%{stacktrace: bad}) end
        assert_raise ArgumentError, fn -> Native.dedup([%{fingerprint: bad, timestamp: 1}]) end
      end
    end

    test "a config of the wrong kind raises ArgumentError" do
      for bad <- [make_ref(), :default, 0, "config", %{}, self()] do
        assert_raise ArgumentError, ~r/config/, fn -> Native.fingerprint(ok_event(), bad) end

        assert_raise ArgumentError, ~r/config/, fn ->
          Native.fingerprint_batch([ok_event()], bad)
        end
      end
    end

    test "a config passed where an event is expected raises ArgumentError" do
      config = Native.config()
      assert_raise ArgumentError, fn -> Native.fingerprint(config) end
      assert_raise ArgumentError, fn -> Native.fingerprint_batch([config]) end
      assert_raise ArgumentError, fn -> Native.normalize(config) end
      assert_raise ArgumentError, fn -> Native.decode_json_lines(config) end
    end

    test "an unreadable atom type" do
      # OTP 25 reads atoms as Latin-1: a type atom outside it is refused,
      # never read past its buffer
      info_or_error =
        try do
          Native.fingerprint(%{type: :例外, message: "m"})
        rescue
          e in ArgumentError -> e
        end

      case info_or_error do
        %ArgumentError{} -> :ok
        info -> assert_valid_info(info)
      end

      long_type = String.to_atom(String.duplicate("T", 255))
      assert_valid_info(Native.fingerprint(%{type: long_type, message: "m"}))
      info = Native.fingerprint(%{type: String.duplicate("T", 10_000), message: "m"})
      assert info.truncated
      assert byte_size(info.type) <= 255
    end
  end

  # ---------------------------------------------------------------- random

  describe "random binaries (fixed seed)" do
    setup do
      :rand.seed(:exsss, {1, 2, 3})
      :ok
    end

    defp random_binary do
      rand_bytes(Enum.random([0, 1, 2, 3, 8, 16, 64, 200, 1_000, 5_000]))
    end

    test "1,000 random binaries through normalize/1" do
      for _ <- 1..1_000 do
        bin = random_binary()
        out = Native.normalize(bin)
        assert String.valid?(out), inspect(bin)
        assert byte_size(out) <= max_normalized(byte_size(bin))
      end
    end

    test "1,000 random binaries through fingerprint/2 and fingerprint_batch/2" do
      events =
        for _ <- 1..1_000 do
          %{type: random_binary(), message: random_binary(), stacktrace: random_binary()}
        end

      infos = Enum.map(events, &Native.fingerprint/1)
      Enum.each(infos, &assert_valid_info/1)
      assert Native.fingerprint_batch(events) == Enum.map(infos, & &1.fingerprint)
    end

    test "1,000 mutated stack traces" do
      stack =
        text_stack([
          @worker,
          {MyApp.Repo, :get, 2, "lib/my_app/repo.ex", 10},
          {:gen_server, :try_handle_call, 4, "gen_server.erl", 1149}
        ]) <>
          "    at render (https://cdn.example.com/app.3f9a2b1c.js:1:200)\n" <>
          "  File \"/srv/app/views.py\", line 3, in index\n" <>
          "\tat com.example.Foo.bar(Foo.java:12)\n"

      for _ <- 1..1_000 do
        mutated =
          Enum.reduce(1..:rand.uniform(20), stack, fn _, acc ->
            pos = :rand.uniform(byte_size(acc)) - 1
            <<pre::binary-size(pos), _::8, post::binary>> = acc
            <<pre::binary, :rand.uniform(256) - 1, post::binary>>
          end)

        info = Native.fingerprint(%{type: "E", message: "m", stacktrace: mutated})
        assert_valid_info(info)
      end
    end

    test "random terms as stack entries" do
      leaves = [
        :a,
        1,
        -1,
        1.5,
        "s",
        ~c"cl",
        [],
        {},
        self(),
        make_ref(),
        MyApp.A,
        nil,
        1_099_511_627_776
      ]

      for _ <- 1..1_000 do
        stack =
          for _ <- 1..:rand.uniform(10) do
            case :rand.uniform(3) do
              1 ->
                Enum.random(leaves)

              2 ->
                {Enum.random(leaves), Enum.random(leaves), Enum.random(leaves)}

              3 ->
                {MyApp.A, :f, Enum.random(leaves),
                 [file: Enum.random(leaves), line: Enum.random(leaves)]}
            end
          end

        assert_valid_info(Native.fingerprint(%{message: "m", stacktrace: stack}))
      end
    end
  end
end
