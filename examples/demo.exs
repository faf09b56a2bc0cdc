# make demo: a node with SelfHeal's logger handler attached raises errors of
# a few kinds many times (different ids, timestamps, pids and, after a
# "deploy" that shifts every line, different line numbers) and prints the
# groups the C fingerprinting core made of them.
#
# Run with `mix run examples/demo.exs` (what `make demo` does).

require Logger

# The console would print every crash; the groups are what we want to see.
Logger.remove_backend(:console)
Code.compiler_options(ignore_module_conflict: true)

# The demo application, compiled from source so that a "deploy" can move
# every line down by inserting blank lines at the top.
shop_source = fn shift ->
  String.duplicate("\n", shift) <>
    ~S'''
    defmodule Demo.Payments do
      use GenServer
      def start, do: GenServer.start(__MODULE__, :ok)
      def init(:ok), do: {:ok, %{}}

      def handle_call({:charge, order_id, amount}, _from, state) do
        if rem(order_id, 2) == 0 do
          raise "payment for order #{order_id} of #{amount} EUR declined at #{DateTime.utc_now()}"
        end

        {:reply, :ok, state}
      end

      def handle_call({:lookup, user_id}, _from, state) do
        user = Map.fetch!(state, user_id)
        {:reply, user, state}
      end
    end

    defmodule Demo.Inventory do
      def reserve(sku, qty) do
        Task.start(fn -> check!(sku, qty) end)
      end

      def check!(sku, qty) do
        stock = div(qty, sku - sku)
        stock
      end
    end

    defmodule Demo.Mailer do
      require Logger

      def deliver(user_id) do
        Logger.error("SMTP delivery to user-#{user_id}@example.com failed: 421 at #{System.os_time()}")
      end
    end

    defmodule Demo.Slow do
      use GenServer
      def start, do: GenServer.start(__MODULE__, :ok)
      def init(:ok), do: {:ok, nil}
      def handle_call(_msg, _from, s), do: (Process.sleep(50); {:reply, :ok, s})

      def ask(pid, id) do
        spawn(fn -> GenServer.call(pid, {:status, id, make_ref()}, 5) end)
      end
    end
    '''
end

run_traffic = fn round ->
  for i <- 1..40 do
    {:ok, pid} = Demo.Payments.start()

    try do
      GenServer.call(pid, {:charge, 2 * i + round * 1000, 10 * i})
    catch
      :exit, _ -> :ok
    end

    {:ok, pid} = Demo.Payments.start()

    try do
      GenServer.call(pid, {:lookup, i + round})
    catch
      :exit, _ -> :ok
    end

    Demo.Inventory.reserve(100 + i, i)
    Demo.Mailer.deliver(i + round * 100)
  end

  {:ok, slow} = Demo.Slow.start()
  for i <- 1..20, do: Demo.Slow.ask(slow, i)
end

IO.puts("SelfHeal demo: raising errors, deploying (every line moves down 7), raising again...\n")
Code.compile_string(shop_source.(0), "lib/demo/shop.ex")
run_traffic.(1)
Code.compile_string(shop_source.(7), "lib/demo/shop.ex")
run_traffic.(2)
Process.sleep(500)

groups = SelfHeal.Collector.groups()
stats = SelfHeal.Collector.stats()

fmt_time = fn us ->
  us
  |> DateTime.from_unix!(:microsecond)
  |> DateTime.to_time()
  |> Time.truncate(:millisecond)
  |> Time.to_string()
end

short = fn text, n ->
  text = String.replace(text, ~r/\s+/, " ")
  if String.length(text) > n, do: String.slice(text, 0, n - 1) <> "…", else: text
end

IO.puts("#{stats.events} events -> #{length(groups)} groups\n")

for g <- groups do
  top =
    case g.top_frame do
      nil -> "(no stack)"
      f -> "#{f.module}.#{f.function} (#{f.file})"
    end

  IO.puts(
    "#{g.fingerprint}  x#{g.count}  #{fmt_time.(g.first_seen)} .. #{fmt_time.(g.last_seen)}"
  )

  type = if g.type in [nil, ""], do: "log", else: g.type
  IO.puts("    #{type}: #{short.(g.normalized, 110)}")
  IO.puts("    at #{top}\n")
end
