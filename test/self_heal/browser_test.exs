defmodule SelfHeal.BrowserTest do
  # The browser snippet (priv/static/self_heal.js, self_heal.min.js) end to
  # end: headless Chromium opens examples/browser/index.html from a small
  # static server in this module, the page raises errors, the snippet posts
  # them to a SelfHeal.Endpoint and the test reads them from its collector.
  # docs/browser.md describes the scenarios.
  use ExUnit.Case, async: false

  alias SelfHeal.Collector

  @chromium Enum.find_value(["chromium", "chromium-browser"], &System.find_executable/1)
  @root Path.expand("../..", __DIR__)
  @page Path.join(@root, "examples/browser/index.html")
  @min_js Path.join(@root, "priv/static/self_heal.min.js")
  @src_js Path.join(@root, "priv/static/self_heal.js")
  @key "pk_test"
  @release "9.8.7-test"
  @collector :browser_test_collector
  @endpoint :browser_test_endpoint
  @config_line ~r/^window\.SelfHeal = \{.*\};$/m

  # Values no well-behaved code throws; the snippet must neither throw nor
  # stop reporting. The last error must still arrive.
  @hostile """
  <!doctype html>
  <script>
  window.SelfHeal = {};
  </script>
  <script src="self_heal.min.js"></script>
  <script>
  function later(f) { setTimeout(f); }
  later(function () { throw Symbol("sym"); });
  later(function () { throw Object.create(null); });
  later(function () { throw { name: "Evil", get message() { throw new Error("getter"); } }; });
  later(function hugeMessage() { throw new TypeError("x".repeat(100000)); });
  Promise.reject(new Proxy({}, { has: function () { throw 1; }, get: function () { throw 1; } }));
  Promise.reject({ toJSON: function () { throw new Error("toJSON"); } });
  later(function () { window.SelfHeal.capture(undefined); });
  later(function stillWorking() { throw new Error("still working"); });
  later(function () { document.body.textContent = "hostile done"; });
  </script>
  """

  test "the minified snippet is under 2 KB" do
    assert byte_size(File.read!(@min_js)) < 2048
  end

  test "the example page has the one configuration line the tests replace" do
    assert [_] = Regex.scan(@config_line, File.read!(@page))
  end

  describe "in headless Chromium" do
    @describetag :browser
    @describetag :tmp_dir
    @describetag timeout: 60_000
    if !@chromium do
      @skip_reason "chromium is not installed (apt-get install chromium): browser tests skipped"
      IO.puts(:stderr, "SelfHeal.BrowserTest: " <> @skip_reason)
      @describetag skip: @skip_reason
    end

    setup :servers

    test "the minified snippet reports each uncaught error with its JS stack", ctx do
      check_run_scenario(ctx, "min")
    end

    test "the readable source behaves the same", ctx do
      check_run_scenario(ctx, "src")
    end

    test "a batch still pending when the page is left goes out at once (sendBeacon)", ctx do
      browse(ctx, "min", "leave")

      [group] = wait_groups(1)
      event = group.sample
      assert event.type == "TypeError"
      assert event.message == "Cannot read properties of null (reading 'leave')"
      assert event.stacktrace =~ frame_re(ctx.page_port, "min", "onLeave", "null.leave()")
      assert meta(event, "kind") == "error"
    end

    test "a flood is bounded: 10 events at once, 50 a second later, the rest dropped", ctx do
      browse(ctx, "min", "flood")

      # 200 distinct messages of one template: one group of the 60 sent
      assert [group] = wait_groups(60)
      assert group.count == 60
      assert group.sample.message =~ ~r/^flood error number \d+$/
    end

    test "hostile thrown values neither break the page nor the snippet", ctx do
      assert browse(ctx, "min", "", "hostile.html") =~ "hostile done"

      groups = wait_groups(6)
      by_message = Map.new(groups, &{&1.sample.message, &1.sample})

      assert by_message["still working"].stacktrace =~
               ~r/^    at stillWorking \(http:\/\/127\.0\.0\.1:\d+\/min\/hostile\.html:\d+:\d+\)$/m

      # a thrown non-Error: the location of the throw as the one frame
      assert by_message["Symbol(sym)"].type == "Error"
      assert by_message["Symbol(sym)"].stacktrace =~ ~r/^    at http:.*\/hostile\.html:\d+:\d+$/
      assert by_message["{}"].type == "Error"
      assert by_message["object"].type == "UnhandledRejection"
      assert Map.has_key?(by_message, "undefined")

      # a long message is cut at 1,000 characters, in the stack as well,
      # which keeps its frames
      huge = by_message[String.duplicate("x", 1000)]
      assert huge.type == "TypeError"
      assert huge.stacktrace =~ "TypeError: #{String.duplicate("x", 1000)}\n"
      assert huge.stacktrace =~ ~r/^    at hugeMessage \(/m
    end
  end

  defp check_run_scenario(ctx, variant) do
    dom = browse(ctx, variant, "run")
    assert dom =~ "scenario run"

    groups = wait_groups(4)
    by_type = Map.new(groups, &{&1.sample.type, &1})

    assert Enum.sort(Map.keys(by_type)) == [
             "Error",
             "RangeError",
             "TypeError",
             "UnhandledRejection"
           ]

    port = ctx.page_port
    page_url = "http://127.0.0.1:#{port}/#{variant}/index.html#run"

    # a TypeError in a click handler, clicked three times from one place:
    # one event (deduplicated in the batch)
    click = by_type["TypeError"]
    assert click.count == 1
    assert click.sample.message == "Cannot read properties of undefined (reading 'items')"

    assert click.sample.stacktrace =~
             frame_re(port, variant, "HTMLButtonElement.onBuyClick", "return cart.items.length;")

    # an Error thrown three calls deep, from a timer
    nested = by_type["Error"].sample
    assert nested.message == "invalid settings: retries 7 is over the limit"
    assert nested.stacktrace =~ "Error: invalid settings: retries 7 is over the limit\n"

    for {function, code} <- [
          {"throwNested", "throw new Error(\"invalid settings"},
          {"validateSettings", "return throwNested(settings);"},
          {"parseSettings", "return validateSettings(JSON.parse(json));"},
          {"onTimer", "parseSettings('{\"retries\": 7}');"}
        ] do
      assert nested.stacktrace =~ frame_re(port, variant, function, code)
    end

    # an async function that throws: an unhandled rejection with its stack
    rejection = by_type["RangeError"].sample
    assert rejection.message == "price list is empty"
    assert rejection.stacktrace =~ frame_re(port, variant, "loadPrices", "throw new RangeError")
    assert meta(rejection, "kind") == "unhandledrejection"

    # a rejection with a plain object: its JSON, no stack
    plain = by_type["UnhandledRejection"].sample
    assert plain.message == ~s({"code":429,"reason":"quota exceeded"})
    assert plain.stacktrace in [nil, ""]

    for group <- groups do
      event = group.sample
      assert meta(event, "url") == page_url
      assert meta(event, "user_agent") =~ ~r/^Mozilla\/5\.0 .*Chrome\/\d+/
      assert meta(event, "release") == @release
      assert meta(event, "kind") in ["error", "unhandledrejection"]
    end

    assert meta(nested, "kind") == "error"
  end

  # A V8 frame "at FUNCTION (http://127.0.0.1:PORT/VARIANT/index.html:LINE:COL)"
  # where LINE is the line of the page holding `code`.
  defp frame_re(port, variant, function, code) do
    line = page_line(code)
    url = "http://127.0.0.1:#{port}/#{variant}/index.html"
    ~r/^    at #{Regex.escape(function)} \(#{Regex.escape(url)}:#{line}:\d+\)$/m
  end

  defp page_line(code) do
    lines = @page |> File.read!() |> String.split("\n")
    matches = for {text, n} <- Enum.with_index(lines, 1), String.contains?(text, code), do: n
    assert [line] = matches, "expected one line of index.html with #{inspect(code)}"
    line
  end

  # SelfHeal.Endpoint keeps url, user_agent, release and kind as metadata
  defp meta(event, key), do: Map.get(event.metadata, key)

  # The collector processes batches every 5 ms; the capture request has
  # been answered before Chromium exits, but give the casts a moment.
  defp wait_groups(events, deadline \\ System.monotonic_time(:millisecond) + 3_000) do
    groups = Collector.groups(@collector)

    cond do
      Enum.sum(Enum.map(groups, & &1.count)) >= events ->
        groups

      System.monotonic_time(:millisecond) > deadline ->
        groups

      true ->
        Process.sleep(20)
        wait_groups(events, deadline)
    end
  end

  ## Chromium

  # Opens /VARIANT/index.html#SCENARIO and returns the DOM when the virtual
  # time budget is spent (timers run in virtual time, fetches are waited for).
  defp browse(ctx, variant, scenario, page \\ "index.html") do
    profile = Path.join(ctx.tmp_dir, "profile-#{variant}-#{scenario}-#{page}")
    url = "http://127.0.0.1:#{ctx.page_port}/#{variant}/#{page}##{scenario}"

    args = [
      "-k",
      "5",
      "30",
      @chromium,
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--disable-extensions",
      "--disable-background-networking",
      "--virtual-time-budget=5000",
      "--user-data-dir=#{profile}",
      "--dump-dom",
      url
    ]

    {out, status} = System.cmd("timeout", args, stderr_to_stdout: true)
    assert status == 0, "chromium exited with #{status}:\n#{out}"
    out
  end

  ## Servers

  defp servers(_ctx) do
    start_supervised!({Collector, name: @collector, flush_ms: 5})
    {pages, page_port} = listen()
    capture_port = start_capture(page_port)
    serve(pages, &serve_page(&1, capture_port))
    {:ok, page_port: page_port, capture_port: capture_port}
  end

  defp start_capture(page_port) do
    start_supervised!(
      {SelfHeal.Endpoint,
       name: @endpoint,
       port: 0,
       site_keys: %{@key => %{origins: ["http://127.0.0.1:#{page_port}"]}},
       collector: @collector}
    )

    SelfHeal.Endpoint.port(@endpoint)
  end

  # /min/ serves the page with self_heal.min.js, /src/ with the readable
  # source under the same name; the page's configuration line points at
  # the capture endpoint of the test.
  defp serve_page(%{method: :GET, path: path}, capture_port) do
    case Path.split(path) do
      ["/", variant, "index.html"] when variant in ["min", "src"] ->
        {200, "text/html; charset=utf-8", configure(File.read!(@page), capture_port)}

      ["/", variant, "hostile.html"] when variant in ["min", "src"] ->
        {200, "text/html; charset=utf-8", configure(@hostile, capture_port)}

      ["/", "min", "self_heal.min.js"] ->
        {200, "text/javascript", File.read!(@min_js)}

      ["/", "src", "self_heal.min.js"] ->
        {200, "text/javascript", File.read!(@src_js)}

      _ ->
        {404, "text/plain", "not found"}
    end
  end

  defp serve_page(_request, _capture_port), do: {405, "text/plain", "method not allowed"}

  defp configure(html, capture_port) do
    config =
      ~s(window.SelfHeal = { endpoint: "http://127.0.0.1:#{capture_port}", ) <>
        ~s(key: "#{@key}", release: "#{@release}" };)

    # one line for one line: the stack frames' line numbers are the file's
    String.replace(html, @config_line, config)
  end

  # The pages' server: a minimal HTTP/1.1 server on 127.0.0.1, one request
  # per connection, each connection in its own process.
  defp listen do
    {:ok, socket} =
      :gen_tcp.listen(0, [:binary, active: false, reuseaddr: true, ip: {127, 0, 0, 1}])

    {:ok, port} = :inet.port(socket)
    {socket, port}
  end

  defp serve(listen, handler) do
    pid =
      spawn_link(fn ->
        receive do
          :go -> accept_loop(listen, handler)
        end
      end)

    :ok = :gen_tcp.controlling_process(listen, pid)
    send(pid, :go)
    on_exit(fn -> Process.exit(pid, :kill) end)
  end

  defp accept_loop(listen, handler) do
    {:ok, socket} = :gen_tcp.accept(listen)

    pid =
      spawn(fn ->
        receive do
          :go -> serve_conn(socket, handler)
        end
      end)

    :ok = :gen_tcp.controlling_process(socket, pid)
    send(pid, :go)
    accept_loop(listen, handler)
  end

  defp serve_conn(socket, handler) do
    with {:ok, request} <- read_request(socket) do
      {status, type, body} = handler.(request)

      head = [
        "HTTP/1.1 #{status} X\r\n",
        "content-type: #{type}\r\n",
        "content-length: #{byte_size(body)}\r\n",
        "cache-control: no-store\r\n",
        "connection: close\r\n\r\n"
      ]

      :gen_tcp.send(socket, [head, body])
    end

    :gen_tcp.close(socket)
  end

  defp read_request(socket) do
    :ok = :inet.setopts(socket, packet: :http_bin)

    with {:ok, {:http_request, method, {:abs_path, path}, _}} <- :gen_tcp.recv(socket, 0, 5_000),
         {:ok, headers} <- read_headers(socket, %{}),
         :ok <- :inet.setopts(socket, packet: :raw),
         {:ok, body} <- read_body(socket, String.to_integer(headers["content-length"] || "0")) do
      {:ok, %{method: method, path: path, headers: headers, body: body}}
    end
  end

  defp read_headers(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, {:http_header, _, name, _, value}} ->
        read_headers(socket, Map.put(acc, String.downcase(to_string(name)), value))

      {:ok, :http_eoh} ->
        {:ok, acc}

      other ->
        {:error, other}
    end
  end

  defp read_body(_socket, 0), do: {:ok, ""}
  defp read_body(socket, n), do: :gen_tcp.recv(socket, n, 5_000)
end
