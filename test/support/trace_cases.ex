defmodule SelfHeal.TraceCases do
  @moduledoc false
  # Twenty kinds of errors with stack traces, five each of Java, Go, Python
  # and Elixir, as services print them; occurrence `i` of a kind varies its
  # ids and numbers only. Shared by test/self_heal/stack_test.exs and
  # test/bench/stacks.exs.

  @java [
    {"java.lang.IllegalStateException", "order %d is already paid", "OrderService", "pay"},
    {"java.lang.NullPointerException", "Cannot invoke \"Customer.getId()\" because \"c\" is null",
     "CustomerController", "show"},
    {"java.sql.SQLTransientConnectionException",
     "HikariPool-1 - Connection is not available, request timed out after %d ms", "InvoiceRepo",
     "load"},
    {"java.lang.IllegalArgumentException", "quantity must be positive: -%d", "CartService",
     "add"},
    {"com.acme.billing.PaymentDeclinedException", "card declined for payment %d",
     "PaymentGateway", "charge"}
  ]

  @go [
    {"panic: runtime error: index out of range [%d] with length 3", "orders", "lookup"},
    {"panic: runtime error: invalid memory address or nil pointer dereference", "users",
     "profile"},
    {"panic: assignment to entry in nil map", "cart", "addItem"},
    {"panic: unexpected status %d from inventory", "inventory", "reserve"},
    {"panic: send on closed channel", "events", "publish"}
  ]

  @python [
    {"KeyError", "'sku-%d'", "catalog", "price_of"},
    {"ValueError", "invalid literal for int() with base 10: 'x%d'", "forms", "parse_quantity"},
    {"ZeroDivisionError", "division by zero", "reports", "average"},
    {"requests.exceptions.ConnectionError",
     "HTTPSConnectionPool(host='api.example', port=443): Max retries exceeded (%d)", "client",
     "fetch"},
    {"AttributeError", "'NoneType' object has no attribute 'email'", "mailer", "send_receipt"}
  ]

  @elixir [
    {"RuntimeError", "order %d not found", "Orders", "fetch!/1"},
    {"ArgumentError", "errors were found at the given arguments: %d", "Pricing", "total/2"},
    {"KeyError", "key :sku not found in: %%{id: %d}", "Catalog", "item/1"},
    {"DBConnection.ConnectionError",
     "connection not available and request was dropped after %d ms", "Repo", "all/2"},
    {"FunctionClauseError", "no function clause matching in Shipping.rate/%d", "Shipping",
     "rate/2"}
  ]

  @doc "The twenty kinds: {language, index}."
  def kinds do
    for lang <- [:java, :go, :python, :elixir], k <- 0..4, do: {lang, k}
  end

  @doc "The expected exception type of a kind."
  def type({:java, k}), do: elem(Enum.at(@java, k), 0)
  def type({:go, k}), do: if(k < 2, do: "runtime.Error", else: "panic")
  def type({:python, k}), do: elem(Enum.at(@python, k), 0)
  def type({:elixir, k}), do: elem(Enum.at(@elixir, k), 0)

  defp fmt(template, i),
    do: String.replace(template, "%d", Integer.to_string(i)) |> String.replace("%%", "%")

  @doc "Occurrence i of a kind: the trace's lines."
  def lines({:java, k}, i) do
    {type, msg, class, method} = Enum.at(@java, k)

    [
      "2024-05-01 12:00:#{String.pad_leading(Integer.to_string(rem(i, 60)), 2, "0")} ERROR [http-nio-8080-exec-#{rem(i, 9)}] c.a.web.ErrorHandler - request failed",
      "#{type}: #{fmt(msg, 1000 + i)}",
      "\tat com.acme.shop.#{class}.#{method}(#{class}.java:#{40 + k})",
      "\tat com.acme.shop.#{class}Controller.handle(#{class}Controller.java:#{70 + k})",
      "\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:897)",
      "\tat jakarta.servlet.http.HttpServlet.service(HttpServlet.java:658)",
      "\t... #{40 + rem(i, 5)} more"
    ]
  end

  def lines({:go, k}, i) do
    {msg, pkg, fun} = Enum.at(@go, k)

    [
      fmt(msg, 5 + rem(i, 7)),
      "",
      "goroutine #{1 + rem(i, 50)} [running]:",
      "github.com/acme/shop/#{pkg}.#{fun}(0xc000#{100_000 + i}, 0x#{rem(i, 16)})",
      "\t/src/shop/#{pkg}/#{pkg}.go:#{30 + k} +0x1d",
      "github.com/acme/shop/#{pkg}.(*Handler).ServeHTTP(0xc000010000, {0x7f0, 0xc0001})",
      "\t/src/shop/#{pkg}/handler.go:#{60 + k} +0x85",
      "net/http.serverHandler.ServeHTTP({0xc000116000?}, {0x7f0, 0xc0001}, 0xc000130000)",
      "\t/usr/local/go/src/net/http/server.go:2938 +0x8e",
      "created by net/http.(*Server).Serve in goroutine 1",
      "\t/usr/local/go/src/net/http/server.go:3086 +0x5cb"
    ]
  end

  def lines({:python, k}, i) do
    {type, msg, mod, fun} = Enum.at(@python, k)

    [
      "Traceback (most recent call last):",
      "  File \"/srv/shop/app/views.py\", line #{20 + k}, in handle",
      "    result = #{mod}.#{fun}(request)",
      "  File \"/srv/shop/app/#{mod}.py\", line #{50 + k}, in #{fun}",
      "    return compute(data)",
      "  File \"/usr/lib/python3.11/site-packages/lib/core.py\", line 88, in compute",
      "    raise",
      "#{type}: #{fmt(msg, 300 + i)}"
    ]
  end

  def lines({:elixir, k}, i) do
    {type, msg, mod, fun} = Enum.at(@elixir, k)

    [
      "12:00:0#{rem(i, 10)}.#{100 + rem(i, 900)} [error] GenServer Shop.#{mod}Worker terminating",
      "** (#{type}) #{fmt(msg, 2000 + i)}",
      "    (shop 0.1.0) lib/shop/#{String.downcase(mod)}.ex:#{30 + k}: Shop.#{mod}.#{fun}",
      "    (shop 0.1.0) lib/shop/#{String.downcase(mod)}_worker.ex:#{12 + k}: Shop.#{mod}Worker.handle_call/3",
      "    (stdlib 4.3) gen_server.erl:1149: :gen_server.try_handle_call/4",
      "    (stdlib 4.3) gen_server.erl:1178: :gen_server.handle_msg/6",
      "Last message (from #PID<0.#{400 + i}.0>): {:run, #{i}}"
    ]
  end

  @doc "A Fluent Bit json_lines record whose log is text."
  def record(text, service \\ "shop") do
    SelfHeal.JSON.encode!(%{
      "date" => 1_700_000_000.5,
      "log" => text,
      "kubernetes" => %{"container_name" => service}
    })
  end
end
