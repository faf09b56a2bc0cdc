# MIX_ENV=bench mix run --no-start test/bench/stacks.exs
#
# Stack traces arriving through Fluent Bit: twenty kinds of errors (five
# each of Java, Go, Python and Elixir, test/support/trace_cases.ex), ten
# occurrences of each, decoded by the json_lines decoder
# (SelfHeal.Native.decode_json_lines/1) and grouped by a fresh
# SelfHeal.Collector, in three shapes:
#
#   BENCH stack_kinds 20
#   BENCH stack_groups_split_lines    every line of a trace its own record, as
#                                     Fluent Bit sends them with only the docker
#                                     and cri multiline parsers
#   BENCH stack_groups_joined_before  each trace one record (Fluent Bit's
#                                     multiline filter, examples/fluent-bit/) with
#                                     the record's log taken as a message, as the
#                                     endpoint did before SelfHeal.Stack
#   BENCH stack_groups_joined         the same records as the endpoint takes
#                                     them now (SelfHeal.Stack.from_record/3)
#   BENCH stack_groups_with_frames_before, stack_groups_with_frames
#                                     of those groups, the ones with an exception
#                                     type and an in-app top frame
#   BENCH stack_largest_group_split   the most occurrences in one group, split
#                                     lines (frame lines of different errors)

Code.require_file("test/support/trace_cases.ex")

defmodule SelfHeal.Bench.Stacks do
  alias SelfHeal.{Collector, Event, Native, Stack, TraceCases}

  @occurrences 10

  def run do
    Application.ensure_all_started(:logger)
    kinds = TraceCases.kinds()
    traces = for i <- 1..@occurrences, kind <- kinds, do: TraceCases.lines(kind, i)

    split = for t <- traces, line <- t, line != "", do: TraceCases.record(line)
    joined = for t <- traces, do: TraceCases.record(Enum.join(t, "\n"))

    split_groups = groups(split, false)
    IO.puts("BENCH stack_kinds #{length(kinds)}")
    IO.puts("BENCH stack_groups_split_lines #{length(split_groups)}")
    before = groups(joined, false)
    now = groups(joined, true)
    IO.puts("BENCH stack_groups_joined_before #{length(before)}")
    IO.puts("BENCH stack_groups_joined #{length(now)}")
    IO.puts("BENCH stack_groups_with_frames_before #{with_frames(before)}")
    IO.puts("BENCH stack_groups_with_frames #{with_frames(now)}")

    IO.puts(
      "BENCH stack_largest_group_split #{split_groups |> Enum.map(& &1.count) |> Enum.max()}"
    )
  end

  # groups with a type and an in-app top frame
  defp with_frames(groups),
    do: Enum.count(groups, &(&1.type != nil and match?(%{in_app: true}, &1.top_frame)))

  defp groups(records, stack?) do
    name = :"stacks_bench_#{System.unique_integer([:positive])}"
    {:ok, pid} = Collector.start_link(name: name, flush_ms: 5)
    body = Enum.map_join(records, "", &(&1 <> "\n"))
    %{events: decoded} = Native.decode_json_lines(body)

    events =
      Enum.map(decoded, fn m ->
        {message, type, stack} =
          if stack?,
            do: Stack.from_record(m.message, m.type, m.stacktrace),
            else: {m.message, m.type, m.stacktrace}

        Event.new(
          source: :fluent_bit,
          service: m.service,
          type: type,
          message: message,
          stacktrace: stack
        )
      end)

    Collector.push(name, events)
    gs = Collector.groups(name)
    GenServer.stop(pid)
    gs
  end
end

SelfHeal.Bench.Stacks.run()
