defmodule SelfHeal.EventTest do
  use ExUnit.Case, async: true

  alias SelfHeal.Event

  test "new/1 fills the location from the top stack frame" do
    stack = [
      {MyApp.Worker, :handle_call, 3, [file: ~c"lib/my_app/worker.ex", line: 42]},
      {:gen_server, :try_handle_call, 4, [file: ~c"gen_server.erl", line: 1149]}
    ]

    event = Event.new(type: "RuntimeError", message: "boom", stacktrace: stack)

    assert %Event{
             module: "MyApp.Worker",
             function: "handle_call/3",
             file: "lib/my_app/worker.ex",
             line: 42,
             truncated: false
           } = event
  end

  test "new/1: an argument list counts as the arity, a missing location is nil" do
    event = Event.new(stacktrace: [{:lists, :map, [:f, [1, 2]], []}])
    assert %Event{module: ":lists", function: "map/2", file: nil, line: nil} = event
  end

  test "new/1 keeps an explicit location and ignores odd stack entries" do
    stack = [{MyApp.Worker, :run, 0, []}]
    assert %Event{module: "Given", function: nil} = Event.new(module: "Given", stacktrace: stack)
    assert %Event{module: nil} = Event.new(stacktrace: [:odd, {MyApp.Worker, :run, 0, []}])
    assert %Event{module: nil} = Event.new(stacktrace: "    lib/a.ex:1: A.b/0")

    assert %Event{module: "MyApp.Worker", function: "run/0", file: nil, line: nil} =
             Event.new(stacktrace: [{MyApp.Worker, :run, 0, :not_a_list}])
  end

  test "new/1 never raises on malformed stack entries" do
    improper_args = [:a | :b]
    improper_location = [{:line, 3} | :tail]

    assert %Event{function: "run/1"} =
             Event.new(stacktrace: [{MyApp.Worker, :run, improper_args, []}])

    assert %Event{function: "run", file: nil} =
             Event.new(stacktrace: [{MyApp.Worker, :run, :weird, [file: 42]}])

    assert %Event{line: 3, file: nil} =
             Event.new(stacktrace: [{MyApp.Worker, :run, 0, improper_location}])

    assert %Event{file: nil} = Event.new(stacktrace: [{MyApp.Worker, :run, 0, [file: [?a | :b]]}])

    assert %Event{file: nil} = Event.new(stacktrace: [{MyApp.Worker, :run, 0, [file: [-1]]}])
    assert %Event{file: "lib/é.ex"} = Event.new(stacktrace: [{M, :f, 0, [file: ~c"lib/é.ex"]}])
  end

  test "new/1 sets the timestamp unless given" do
    before = Event.now()
    assert Event.new([]).timestamp >= before
    assert Event.new(timestamp: 5).timestamp == 5
  end

  test "new/1 accepts a map and ignores unknown keys" do
    assert %Event{message: "m"} = Event.new(%{message: "m", unknown: 1})
  end

  test "new/1 cuts a long message at a UTF-8 boundary and flags it" do
    max = Event.max_bytes()
    event = Event.new(message: String.duplicate("a", max - 1) <> "é" <> "rest")
    assert event.truncated
    assert byte_size(event.message) == max - 1
    assert String.valid?(event.message)

    refute Event.new(message: String.duplicate("a", max)).truncated
    assert Event.new(message: "short", truncated: true).truncated
  end

  test "bounded_text/1" do
    assert Event.bounded_text(nil) == {"", false}
    assert Event.bounded_text("abc") == {"abc", false}
    assert Event.bounded_text([?a, "b", [?c]]) == {"abc", false}
    assert {text, false} = Event.bounded_text({:not, :chardata})
    assert text =~ "not"
    assert {text, true} = Event.bounded_text(List.duplicate("abcd", 20_000))
    assert byte_size(text) == Event.max_bytes()
  end
end
