defmodule SelfHeal.LoggerHandlerTest do
  # Through the real :logger: real processes crash and the test owns a
  # handler instance that sends its events to the test process. Not async:
  # :logger handlers are global.
  use ExUnit.Case, async: false

  import SelfHeal.TestSupport
  require Logger
  alias SelfHeal.{Collector, Event, LoggerHandler, Native}

  @moduletag :capture_log
  @moduletag timeout: 60_000

  @this_file "test/self_heal/logger_handler_test.exs"

  defmodule Crashy do
    use GenServer

    def start(arg \\ nil), do: GenServer.start(__MODULE__, arg)
    def start_link(arg), do: GenServer.start_link(__MODULE__, arg)

    @impl true
    def init(arg), do: {:ok, arg}

    @raise_line __ENV__.line + 2
    @impl true
    def handle_call({:raise, message}, _from, _state), do: raise(message)

    def handle_call({:exit, reason}, _from, _state), do: exit(reason)

    def handle_call({:call, server, request, timeout}, _from, state),
      do: {:reply, GenServer.call(server, request, timeout), state}

    def handle_call({:sleep, ms}, _from, state) do
      Process.sleep(ms)
      {:reply, :ok, state}
    end

    def raise_line, do: @raise_line

    def explode!(message), do: raise(message)
  end

  defmodule Logs do
    require Logger

    def error(message, metadata \\ []), do: {Logger.error(message, metadata), __ENV__.line}
  end

  defp crash(message) do
    {:ok, pid} = Crashy.start()
    catch_exit(GenServer.call(pid, {:raise, message}))
    pid
  end

  defp assert_crashy_event(event, message) do
    assert %Event{
             type: "RuntimeError",
             message: ^message,
             module: "SelfHeal.LoggerHandlerTest.Crashy",
             function: "handle_call/3",
             level: :error,
             source: :logger
           } = event

    assert String.ends_with?(event.file, @this_file)
    assert event.line == Crashy.raise_line()
    assert [{Crashy, :handle_call, 3, _location} | _] = event.stacktrace
    assert is_binary(event.service)
    assert_in_delta event.timestamp, Event.now(), 10_000_000
    event
  end

  # ------------------------------------------------------------- crashes

  describe "crashes of real processes" do
    test "an unsupervised GenServer: exactly one event" do
      attach_handler()
      crash("unsupervised boom")
      event = assert_one_event()
      assert_crashy_event(event, "unsupervised boom")
      assert event.metadata.behaviour == :gen_server
    end

    test "a GenServer under a Supervisor: exactly one event, no child_terminated one" do
      attach_handler()
      {:ok, sup} = Supervisor.start_link([{Crashy, nil}], strategy: :one_for_one)
      [{Crashy, pid, :worker, _}] = Supervisor.which_children(sup)
      catch_exit(GenServer.call(pid, {:raise, "supervised boom"}))
      assert_crashy_event(assert_one_event(), "supervised boom")

      # restarted, and the restart itself reports nothing
      eventually(fn ->
        match?(
          [{Crashy, new, _, _}] when is_pid(new) and new != pid,
          Supervisor.which_children(sup)
        )
      end)

      refute_receive {:self_heal_event, _}, 100
      Supervisor.stop(sup)
    end

    test "a supervisor giving up: the child's crash and the supervisor's shutdown" do
      attach_handler()
      parent = self()

      # the supervisor's owner is not the test process, which must survive
      owner =
        spawn(fn ->
          {:ok, sup} =
            Supervisor.start_link([{Crashy, nil}], strategy: :one_for_one, max_restarts: 0)

          send(parent, {:sup, sup})
          Process.sleep(:infinity)
        end)

      assert_receive {:sup, sup}
      ref = Process.monitor(sup)
      [{Crashy, pid, :worker, _}] = Supervisor.which_children(sup)
      catch_exit(GenServer.call(pid, {:raise, "last straw"}))
      assert_receive {:DOWN, ^ref, :process, ^sup, :shutdown}
      events = receive_events(300)
      assert length(events) == 2, inspect(events, limit: 8)
      crash = Enum.find(events, &(&1.type == "RuntimeError"))
      shutdown = Enum.find(events, &(&1.type != "RuntimeError"))
      assert_crashy_event(crash, "last straw")
      assert shutdown.type == "supervisor shutdown"
      assert shutdown.message =~ "reached_max_restart_intensity"
      refute Process.alive?(owner)
    end

    test "a Task: exactly one event with the task function's frame" do
      attach_handler()
      {:ok, _pid} = Task.start(Crashy, :explode!, ["task boom"])
      event = assert_one_event()
      assert %Event{type: "RuntimeError", message: "task boom"} = event
      assert event.module == "SelfHeal.LoggerHandlerTest.Crashy"
      assert event.function == "explode!/1"
      assert [{Crashy, :explode!, 1, _} | _] = event.stacktrace
      assert event.metadata.behaviour == :task
    end

    test "a Task running an anonymous function" do
      attach_handler()
      {:ok, _pid} = Task.start(fn -> raise "anonymous task boom" end)
      event = assert_one_event()
      assert %Event{type: "RuntimeError", message: "anonymous task boom"} = event
      assert event.module == inspect(__MODULE__)
      assert event.function =~ "fun"
      assert String.ends_with?(event.file, @this_file)
    end

    test "a plain spawn: exactly one event" do
      attach_handler()
      spawn(fn -> Crashy.explode!("spawned boom") end)
      event = assert_one_event()
      assert %Event{type: "RuntimeError", message: "spawned boom"} = event
      assert event.module == "SelfHeal.LoggerHandlerTest.Crashy"
      assert event.function == "explode!/1"
      assert event.metadata.behaviour == :process
    end

    test "a plain spawn dying of an Erlang error" do
      attach_handler()
      spawn(fn -> :erlang.binary_to_atom(Process.get(:nothing), :utf8) end)
      event = assert_one_event()
      assert event.type == "ArgumentError"
      assert is_list(event.stacktrace)
    end

    test "an exit that is not an exception gives type exit" do
      attach_handler()
      {:ok, pid} = Crashy.start()
      catch_exit(GenServer.call(pid, {:exit, :kaboom}))
      event = assert_one_event()
      assert event.type == "exit"
      assert event.message =~ "kaboom"
      assert event.module == "SelfHeal.LoggerHandlerTest.Crashy"
      assert event.function == "handle_call/3"
    end

    test "a normal stop and a {:shutdown, _} exit report nothing" do
      attach_handler()
      {:ok, a} = Crashy.start()
      GenServer.stop(a)
      {:ok, b} = Crashy.start()
      catch_exit(GenServer.call(b, {:exit, {:shutdown, :done}}))
      refute_receive {:self_heal_event, _}, 200
    end

    test "a GenServer.call timeout crashes the calling GenServer: one exit event" do
      attach_handler()
      {:ok, slow} = Crashy.start()
      {:ok, caller} = Crashy.start()
      catch_exit(GenServer.call(caller, {:call, slow, {:sleep, 300}, 10}))
      event = assert_one_event()
      assert event.type == "exit"
      assert event.message =~ "GenServer.call"
      assert event.message =~ "time out"
      assert event.metadata.behaviour == :gen_server
      assert Enum.any?(event.stacktrace, &match?({Crashy, :handle_call, 3, _}, &1))
    end

    test "a GenServer.call timeout in a Task: one exit event" do
      attach_handler()
      {:ok, slow} = Crashy.start()
      {:ok, _task} = Task.start(fn -> GenServer.call(slow, {:sleep, 300}, 10) end)
      event = assert_one_event()
      assert event.type == "exit"
      assert event.message =~ "time out"
      assert event.metadata.behaviour == :task
    end

    test "GenServer.call timeouts with different arguments share a fingerprint" do
      attach_handler()
      {:ok, slow} = Crashy.start()

      [a, b] =
        for ms <- [300, 301] do
          {:ok, caller} = Crashy.start()
          catch_exit(GenServer.call(caller, {:call, slow, {:sleep, ms}, 10}))
          assert_one_event()
        end

      refute a.message == b.message
      assert Native.fingerprint(a).fingerprint == Native.fingerprint(b).fingerprint
    end

    test "two handler instances each send their own one event" do
      attach_handler(service: "first")
      attach_handler(service: "second")
      crash("seen twice")
      events = receive_events(300)
      assert events |> Enum.map(& &1.service) |> Enum.sort() == ["first", "second"]
      assert Enum.all?(events, &(&1.message == "seen twice"))
    end
  end

  # ------------------------------------------------------------ Logger.error

  describe "Logger.error" do
    test "from a named function: the call site is the stack trace" do
      attach_handler()
      {:ok, line} = Logs.error("hello from a named function")
      event = assert_one_event()
      assert event.type == nil
      assert event.message == "hello from a named function"
      assert event.module == "SelfHeal.LoggerHandlerTest.Logs"
      assert event.function == "error/2"
      assert event.line == line
      assert String.ends_with?(event.file, @this_file)
      assert [{Logs, :error, 2, location}] = event.stacktrace
      assert location[:line] == line
    end

    test "selected metadata is kept" do
      attach_handler()
      Logger.metadata(request_id: "req-1")
      Logs.error("with metadata", trace_id: "t-1", secret: "not kept")
      event = assert_one_event()
      assert event.metadata.request_id == "req-1"
      assert event.metadata.trace_id == "t-1"
      refute Map.has_key?(event.metadata, :secret)
    after
      Logger.reset_metadata()
    end

    test "with crash_reason metadata: the exception and its stack trace" do
      attach_handler()

      {exception, stack} =
        try do
          raise ArgumentError, "bad input"
        rescue
          e -> {e, __STACKTRACE__}
        end

      Logger.error("request failed", crash_reason: {exception, stack})
      event = assert_one_event()
      assert event.type == "ArgumentError"
      assert event.message == "request failed"
      assert event.stacktrace == stack
      assert event.module == inspect(__MODULE__)
    end

    test "below :error nothing is sent" do
      attach_handler()
      Logger.warning("just a warning")
      Logger.info("just info")
      refute_receive {:self_heal_event, _}, 200
    end

    test "a message with invalid UTF-8 and a huge message" do
      attach_handler()
      Logger.error("bad " <> <<0xFF, 0xFE>> <> " bytes")
      event = assert_one_event()
      assert is_binary(event.message)
      Logger.error(String.duplicate("x", 200_000))
      event = assert_one_event()
      assert byte_size(event.message) <= Event.max_bytes()
    end
  end

  # ------------------------------------------------------- excluded domains

  describe "excluded domains" do
    test "the default excludes SelfHeal's own logs, whichever API logged them" do
      attach_handler()
      Logger.error("own log", domain: [:self_heal])
      Logger.error("own log", domain: [:self_heal, :collector])
      :logger.error("own log", %{domain: [:self_heal]})
      :logger.error("own log", %{domain: [:self_heal, :collector]})
      refute_receive {:self_heal_event, _}, 200

      Logger.error("another domain", domain: [:my_app])
      event = assert_one_event()
      assert event.metadata.domain == [:elixir, :my_app]
    end

    test "the match is on the domain's prefix" do
      attach_handler()
      Logger.error("self_heal not first", domain: [:my_app, :self_heal])
      assert_one_event()
    end

    test "the default :self_heal handler excludes [:self_heal]" do
      assert {:ok, %{module: LoggerHandler, config: cfg}} = :logger.get_handler_config(:self_heal)
      assert cfg.excluded_domains == [[:self_heal]]
      assert cfg.target == SelfHeal.Collector
    end

    test "custom excluded domains, as lists or bare atoms" do
      attach_handler(excluded_domains: [[:my_app, :noisy], :chatty])
      Logger.error("noisy", domain: [:my_app, :noisy, :deeper])
      :logger.error("chatty", %{domain: [:chatty]})
      Logger.error("chatty", domain: [:chatty])
      refute_receive {:self_heal_event, _}, 200
      Logger.error("quiet", domain: [:my_app, :quiet])
      assert %Event{message: "quiet"} = assert_one_event()
      # with custom domains [:self_heal] is no longer excluded
      Logger.error("own", domain: [:self_heal])
      assert %Event{message: "own"} = assert_one_event()
    end
  end

  # --------------------------------------------------------- robustness

  describe "the handler never crashes and is never detached" do
    test "garbage through :logger, then a real crash is still delivered" do
      id = attach_handler()

      garbage = [
        fn -> :logger.error(~c"~p ~p", [1]) end,
        fn -> :logger.error(~c"~q", [1]) end,
        fn ->
          :logger.error(%{label: {:gen_server, :terminate}, reason: {:x, [:not_a_frame]}})
        end,
        fn -> :logger.error(%{label: {:proc_lib, :crash}, report: [[error_info: :weird]]}) end,
        fn -> :logger.error(%{label: {:proc_lib, :crash}, report: :weird}) end,
        fn -> :logger.error(%{label: {:supervisor, :start_error}, report: [:not_kw]}) end,
        fn -> :logger.error(%{label: {:supervisor, :start_error}, report: :atom}) end,
        fn ->
          :logger.error(%{label: {Task.Supervisor, :terminating}, report: %{reason: self()}})
        end,
        fn -> :logger.error(%{a: 1}, %{report_cb: fn _ -> {~c"~p ~p", [:one]} end}) end,
        fn -> :logger.error(%{a: 1}, %{report_cb: fn _, _ -> :not_chardata end}) end,
        fn -> :logger.error(%{big: Enum.to_list(1..1_000_000)}) end,
        fn -> :logger.error([big: Enum.to_list(1..1_000_000)], %{}) end,
        fn -> :logger.error(~c"x", [], %{crash_reason: {:oops, [:not, :a, :stack]}}) end,
        fn -> :logger.error(~c"x", [], %{crash_reason: {:oops, [{Foo, :bar, [1 | 2], []}]}}) end,
        fn ->
          :logger.error(~c"x", [], %{crash_reason: {:oops, [{Foo, :bar, 1, []} | :tail]}})
        end,
        fn ->
          :logger.error(~c"x", [], %{domain: :not_a_list, mfa: :weird, file: 1, line: :x})
        end,
        fn -> :logger.error(~c"x", [], %{request_id: {self(), make_ref(), fn -> :ok end}}) end,
        fn ->
          :logger.error(~c"Error in process ~p with exit value:~n~p~n", [self(), :weird], %{
            error_logger: %{emulator: true}
          })
        end
      ]

      for log <- garbage do
        log.()
        assert id in handler_ids()
        assert :self_heal in handler_ids()
      end

      _ = receive_events(100)
      crash("after the garbage")
      assert_crashy_event(assert_one_event(), "after the garbage")
    end

    test "a GenServer crashing with a huge exit reason and state" do
      attach_handler()
      {:ok, pid} = Crashy.start(Enum.to_list(1..1_000_000))
      catch_exit(GenServer.call(pid, {:exit, {:big, Enum.to_list(1..1_000_000)}}))
      event = assert_one_event()
      assert event.type == "exit"
      assert byte_size(event.message) <= Event.max_bytes()
    end

    test "log/2 itself returns :ok on any input" do
      id = attach_handler()
      {:ok, config} = :logger.get_handler_config(id)

      events = [
        :garbage,
        %{},
        %{meta: :not_a_map},
        %{level: :error, meta: %{}, msg: :not_a_message},
        %{level: :error, meta: %{domain: :x}, msg: {:report, %{}}},
        %{level: :error, meta: %{report_cb: fn _ -> raise "cb" end}, msg: {:report, %{a: 1}}},
        %{level: :error, meta: %{report_cb: fn _, _ -> raise "cb" end}, msg: {:report, %{a: 1}}},
        %{level: :error, meta: %{}, msg: {:string, [<<255>>, 1_000_000_000]}},
        %{level: :error, meta: %{}, msg: {~c"~p", :not_a_list}},
        %{
          level: :error,
          meta: %{pid: self()},
          msg: {:report, %{label: {:gen_server, :terminate}}}
        },
        %{level: :error, meta: %{crash_reason: {:x, [{M, :f, [1 | 2], []}]}}, msg: {:string, "x"}}
      ]

      for event <- events do
        assert LoggerHandler.log(event, config) == :ok
        assert LoggerHandler.log(event, %{config: %{}}) == :ok
        assert LoggerHandler.log(event, %{}) == :ok
      end
    end

    test "a dead target: the event is dropped and counted" do
      dead = spawn(fn -> :ok end)
      ref = Process.monitor(dead)
      assert_receive {:DOWN, ^ref, :process, ^dead, _}
      id = attach_handler(target: dead)
      before = LoggerHandler.stats()
      crash("to a dead target")
      eventually(fn -> LoggerHandler.stats().dropped > before.dropped end)
      assert id in handler_ids()
    end

    test "an unregistered target name: dropped and counted" do
      id = attach_handler(target: :sh_test_no_such_process)
      before = LoggerHandler.stats()
      crash("to nobody")
      eventually(fn -> LoggerHandler.stats().dropped > before.dropped end)
      assert id in handler_ids()
    end

    test "an overloaded target: dropped and counted, its mailbox left alone" do
      sink = spawn(fn -> receive(do: (:stop -> :ok)) end)
      on_exit(fn -> send(sink, :stop) end)
      for i <- 1..5, do: send(sink, {:filler, i})
      id = attach_handler(target: sink, max_queue: 5)
      before = LoggerHandler.stats()
      crash("to an overloaded target")
      eventually(fn -> LoggerHandler.stats().dropped > before.dropped end)
      assert {:message_queue_len, 5} = Process.info(sink, :message_queue_len)
      assert id in handler_ids()

      # under the bound it is delivered
      :ok = :logger.update_handler_config(id, :config, %{target: sink, max_queue: 100})
      crash("to a loaded target")
      eventually(fn -> Process.info(sink, :message_queue_len) == {:message_queue_len, 6} end)
    end
  end

  # ------------------------------------------------------------- collector

  describe "events to SelfHeal.Collector" do
    test "by default the application's collector receives the crashes" do
      # a test handler attached at the same time must not hide the crash
      attach_handler()
      message = "default target #{System.unique_integer([:positive])}"
      crash(message)
      assert_one_event()

      group = eventually(fn -> Enum.find(Collector.groups(), &(&1.sample.message == message)) end)

      assert group.count == 1
      assert group.type == "RuntimeError"
    end

    test "N identical crashes at different times make one group of count N" do
      name = unique_name(:sh_collector)
      start_supervised!({Collector, name: name, flush_ms: 10})
      attach_handler(target: name)

      for _ <- 1..5 do
        crash("collector boom")
        Process.sleep(3)
      end

      [group] = eventually(fn -> match_groups(name, [5]) end)
      assert group.type == "RuntimeError"
      assert group.first_seen < group.last_seen
      assert %Event{message: "collector boom", type: "RuntimeError"} = group.sample
      assert group.top_frame.module == "SelfHeal.LoggerHandlerTest.Crashy"
      assert group.fingerprint =~ ~r/\A[0-9a-f]{32}\z/
      assert %{events: 5, groups: 1, overflow: 0} = Collector.stats(name)
    end

    test "crashes differing only in ids make one group" do
      name = unique_name(:sh_collector)
      start_supervised!({Collector, name: name, flush_ms: 10})
      attach_handler(target: name)
      for i <- 1..4, do: crash("order #{i * 1_234} failed for user #{i}")
      [group] = eventually(fn -> match_groups(name, [4]) end)
      assert group.normalized =~ "<int>"
    end

    test "two crash sites make two groups" do
      name = unique_name(:sh_collector)
      start_supervised!({Collector, name: name, flush_ms: 10})
      attach_handler(target: name)
      for _ <- 1..3, do: crash("two sites")

      for _ <- 1..2 do
        pid = spawn(fn -> Crashy.explode!("two sites") end)
        ref = Process.monitor(pid)
        assert_receive {:DOWN, ^ref, _, _, _}
      end

      [first, second] = eventually(fn -> match_groups(name, [3, 2]) end)
      assert first.top_frame.function == "handle_call/3"
      assert second.top_frame.function == "explode!/1"
    end
  end

  defp match_groups(name, counts) do
    groups = Collector.groups(name)
    if Enum.map(groups, & &1.count) == counts, do: groups
  end

  # ------------------------------------------------------------- to_event/2

  describe "to_event/2" do
    setup do
      id = attach_handler()
      {:ok, %{config: cfg}} = :logger.get_handler_config(id)
      %{cfg: cfg}
    end

    defp in_fresh_process(fun) do
      fn -> fun.() end |> Task.async() |> Task.await()
    end

    defp stack, do: [{Crashy, :handle_call, 3, [file: ~c"lib/crashy.ex", line: 7]}]

    defp terminate_report(pid) do
      %{
        level: :error,
        msg:
          {:report,
           %{
             label: {:gen_server, :terminate},
             name: :some_server,
             reason: {%RuntimeError{message: "x"}, stack()}
           }},
        meta: %{pid: pid, time: 1_700_000_000_000_000}
      }
    end

    defp proc_lib_report(pid) do
      %{
        level: :error,
        msg:
          {:report,
           %{
             label: {:proc_lib, :crash},
             report: [[error_info: {:error, %RuntimeError{message: "x"}, stack()}], []]
           }},
        meta: %{pid: pid, time: 1_700_000_000_000_001}
      }
    end

    test "a terminate report, then proc_lib's report of the same crashing process", %{cfg: cfg} do
      in_fresh_process(fn ->
        event = LoggerHandler.to_event(terminate_report(self()), cfg)

        assert %Event{
                 type: "RuntimeError",
                 message: "x",
                 module: "SelfHeal.LoggerHandlerTest.Crashy"
               } = event

        assert event.timestamp == 1_700_000_000_000_000
        assert event.line == 7
        assert event.file == "lib/crashy.ex"
        assert event.metadata.name == :some_server
        assert LoggerHandler.to_event(proc_lib_report(self()), cfg) == nil
      end)
    end

    test "proc_lib's report alone is an event", %{cfg: cfg} do
      in_fresh_process(fn ->
        assert %Event{type: "RuntimeError"} = LoggerHandler.to_event(proc_lib_report(self()), cfg)
      end)
    end

    test "reports logged by another process are not deduplicated", %{cfg: cfg} do
      other = spawn(fn -> :ok end)
      assert %Event{} = LoggerHandler.to_event(terminate_report(other), cfg)
      assert %Event{} = LoggerHandler.to_event(proc_lib_report(other), cfg)
    end

    test "supervisor reports", %{cfg: cfg} do
      child_terminated = %{
        level: :error,
        msg: {:report, %{label: {:supervisor, :child_terminated}, report: [reason: :boom]}},
        meta: %{pid: self()}
      }

      assert LoggerHandler.to_event(child_terminated, cfg) == nil

      start_error = %{
        level: :error,
        msg:
          {:report,
           %{
             label: {:supervisor, :start_error},
             report: [supervisor: {:local, :sup}, reason: :bad]
           }},
        meta: %{pid: self()}
      }

      event = LoggerHandler.to_event(start_error, cfg)
      assert event.type == "supervisor start_error"
      assert event.message =~ ":bad"
    end

    test "a gen_statem terminate report", %{cfg: cfg} do
      report = %{
        level: :error,
        msg:
          {:report,
           %{label: {:gen_statem, :terminate}, name: :fsm, reason: {%KeyError{key: :k}, stack()}}},
        meta: %{pid: spawn(fn -> :ok end)}
      }

      assert %Event{type: "KeyError", function: "handle_call/3"} =
               LoggerHandler.to_event(report, cfg)
    end
  end
end
