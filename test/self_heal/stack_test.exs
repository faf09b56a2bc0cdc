defmodule SelfHeal.StackTest do
  # Stack traces wherever they arrive: json_lines records whose `log` holds
  # a joined Java, Go, Python or Elixir trace through the real endpoint
  # (type, frames, one group per error kind), and the custom Elixir
  # multiline parser of examples/fluent-bit/ checked by applying Fluent
  # Bit's documented rule semantics to its own regexes.
  use ExUnit.Case, async: true

  alias SelfHeal.{Collector, Endpoint, Stack, TraceCases}

  @token "stack-test-token-0123456789"

  defp start do
    id = System.unique_integer([:positive])
    collector = :"stack_test_collector_#{id}"
    endpoint = :"stack_test_endpoint_#{id}"
    start_supervised!({Collector, name: collector, flush_ms: 5}, id: collector)

    start_supervised!({Endpoint, name: endpoint, port: 0, tokens: [@token], collector: collector})

    %{collector: collector, port: Endpoint.port(endpoint)}
  end

  defp ingest(%{port: port}, records) do
    body = Enum.map_join(records, "", &(&1 <> "\n"))
    {:ok, s} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false])

    :ok =
      :gen_tcp.send(s, [
        "POST /ingest HTTP/1.1\r\nhost: x\r\nauthorization: Bearer #{@token}\r\n",
        "content-length: #{byte_size(body)}\r\n\r\n",
        body
      ])

    {:ok, reply} = :gen_tcp.recv(s, 0, 5000)
    :gen_tcp.close(s)
    assert reply =~ "HTTP/1.1 202"
  end

  defp groups(ctx, n) do
    Enum.reduce_while(1..200, [], fn _, _ ->
      gs = Collector.groups(ctx.collector)

      if Enum.sum(Enum.map(gs, & &1.count)) >= n,
        do: {:halt, gs},
        else: Process.sleep(10) && {:cont, gs}
    end)
  end

  test "a record whose log holds a joined trace: its type, message and frames; one group per kind" do
    ctx = start()
    kinds = TraceCases.kinds()

    records =
      for i <- 1..3,
          kind <- kinds,
          do: TraceCases.record(Enum.join(TraceCases.lines(kind, i), "\n"))

    ingest(ctx, records)
    gs = groups(ctx, length(records))
    assert length(gs) == length(kinds)

    for kind <- kinds do
      type = TraceCases.type(kind)

      assert [g] = Enum.filter(gs, &(&1.type == type and &1.count == 3 and in_kind?(&1, kind))),
             "#{inspect(kind)}: #{inspect(Enum.map(gs, &{&1.type, &1.normalized}))}"

      # frames were parsed: the top in-app frame is the application's
      assert %{in_app: true} = g.top_frame, inspect(kind)
      assert is_binary(g.sample.stacktrace)
      refute g.sample.message =~ "\n"
    end
  end

  defp in_kind?(g, {:java, k}),
    do: g.top_frame.function in [Enum.at(~w(pay show load add charge), k)]

  defp in_kind?(g, {:go, k}),
    do: g.top_frame.function == Enum.at(~w(lookup profile addItem reserve publish), k)

  defp in_kind?(g, {:python, k}),
    do:
      g.top_frame.file == "/srv/shop/app/views.py" and
        g.sample.message =~ TraceCases.type({:python, k})

  defp in_kind?(g, {:elixir, k}),
    do: g.top_frame.module == "Shop." <> Enum.at(~w(Orders Pricing Catalog Repo Shipping), k)

  test "split/1 of each language" do
    java = Stack.split(Enum.join(TraceCases.lines({:java, 0}, 1), "\n"))
    assert java.type == "java.lang.IllegalStateException"
    assert java.message =~ "request failed"
    assert java.stacktrace =~ "at com.acme.shop.OrderService.pay"

    go = Stack.split(Enum.join(TraceCases.lines({:go, 0}, 1), "\n"))
    assert go.type == "runtime.Error"
    assert go.message =~ "panic: runtime error: index out of range"

    py = Stack.split(Enum.join(TraceCases.lines({:python, 1}, 1), "\n"))
    assert py.type == "ValueError"
    assert py.message =~ "ValueError: invalid literal"
    assert py.stacktrace =~ "Traceback (most recent call last):"

    ex = Stack.split(Enum.join(TraceCases.lines({:elixir, 0}, 1), "\n"))
    assert ex.type == "RuntimeError"
    assert ex.message =~ "GenServer Shop.OrdersWorker terminating"

    js =
      Stack.split(
        "TypeError: Cannot read properties of undefined (reading 'id')\n    at show (/srv/app/users.js:12:5)"
      )

    assert js.type == "TypeError"

    # multi-line text that is no trace stays whole
    assert Stack.split("first line\nsecond line") == nil
    assert Stack.from_record("a\nb", nil, nil) == {"a\nb", nil, nil}

    assert Stack.from_record("x\n  at f (a.js:1:1)", "T", "given") ==
             {"x\n  at f (a.js:1:1)", "T", "given"}
  end

  # ------------------------------------------------------------ Fluent Bit

  @conf Path.expand("../../examples/fluent-bit/parsers_multiline.conf", __DIR__)

  # [{name, [{state, regex, next}]}] of every [MULTILINE_PARSER] section
  defp multiline_parsers do
    @conf
    |> File.read!()
    |> String.split(~r/^\[MULTILINE_PARSER\]\s*$/m, trim: true)
    |> Enum.drop(1)
    |> Enum.map(fn section ->
      name = Regex.run(~r/^\s*name\s+(\S+)/m, section, capture: :all_but_first) |> hd()

      rules =
        for [_, state, re, next] <-
              Regex.scan(~r/^\s*rule\s+"([^"]+)"\s+"\/(.*)\/"\s+"([^"]+)"/m, section) do
          {state, Regex.compile!(re), next}
        end

      {name, rules}
    end)
  end

  # Fluent Bit's regex multiline semantics: a line matching a start_state
  # rule starts a record (flushing the one before); while a record is open,
  # a line matching a rule of the current state is appended and the state
  # becomes that rule's next state; any other line flushes the record and
  # is tried as a start. A line matching no start rule is a record of its own.
  defp apply_rules(rules, lines) do
    {records, open} =
      Enum.reduce(lines, {[], nil}, fn line, {done, open} ->
        cont =
          open &&
            Enum.find(rules, fn {s, re, _} -> s == open.state and Regex.match?(re, line) end)

        cond do
          cont ->
            {_, _, next} = cont
            {done, %{open | lines: [line | open.lines], state: next}}

          start =
              Enum.find(rules, fn {s, re, _} -> s == "start_state" and Regex.match?(re, line) end) ->
            {_, _, next} = start
            {flush(done, open), %{lines: [line], state: next}}

          true ->
            {[line | flush(done, open)], nil}
        end
      end)

    Enum.reverse(flush(records, open))
  end

  defp flush(done, nil), do: done
  defp flush(done, open), do: [open.lines |> Enum.reverse() |> Enum.join("\n") | done]

  test "the custom Elixir multiline parser joins each Elixir trace into one record" do
    assert [{"elixir", rules}] = multiline_parsers()
    assert Enum.any?(rules, &match?({"start_state", _, _}, &1))

    traces =
      for(k <- 0..4, i <- 1..2, do: TraceCases.lines({:elixir, k}, i)) ++
        [
          [
            "** (RuntimeError) boom",
            "    (shop 0.1.0) lib/shop/a.ex:1: Shop.A.f/0",
            "    (elixir 1.14.0) lib/enum.ex:975: Enum.\"-each/2-lists^foreach/1-0-\"/2"
          ],
          [
            "12:00:01.000 [error] Task #PID<0.300.0> started from Shop.Sup terminating",
            "** (ArithmeticError) bad argument in arithmetic expression",
            "    :erlang.+(nil, 1)",
            "    (shop 0.1.0) lib/shop/b.ex:9: Shop.B.g/1",
            "Function: #Function<0.1/0 in Shop.B.start/0>",
            "    Args: []"
          ]
        ]

    plain = ["12:00:02.000 [info] GET /orders", "12:00:02.001 [info] Sent 200 in 3ms"]
    # each trace followed by ordinary log lines, as a container's stdout has them
    lines = Enum.flat_map(traces, &(&1 ++ plain))
    records = apply_rules(rules, lines)

    assert records == Enum.flat_map(traces, &[Enum.join(&1, "\n") | plain])

    # and what it joins is one event with the right type
    for t <- traces do
      assert %{type: type} = Stack.split(Enum.join(t, "\n"))

      assert type in ~w(RuntimeError ArgumentError KeyError DBConnection.ConnectionError FunctionClauseError ArithmeticError)
    end
  end

  test "the Fluent Bit configuration uses the multiline parsers on the log key" do
    conf = File.read!(Path.expand("../../examples/fluent-bit/fluent-bit.conf", __DIR__))
    assert conf =~ ~r/^\s*parsers_file\s+parsers_multiline\.conf/m
    assert conf =~ ~r/^\s*Name\s+multiline/m
    assert conf =~ ~r/^\s*multiline\.key_content\s+log/m
    assert [_, parsers] = Regex.run(~r/^\s*multiline\.parser\s+(.*java.*)$/m, conf)

    assert parsers |> String.split(~r/,\s*/) |> Enum.map(&String.trim/1) |> Enum.sort() ==
             ~w(elixir go java python)
  end
end
