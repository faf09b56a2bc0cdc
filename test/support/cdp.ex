defmodule SelfHeal.CDP do
  @moduledoc false
  # Headless Chromium driven over the DevTools protocol through
  # --remote-debugging-pipe (requests on fd 3, replies and events on fd 4,
  # each a JSON text ended by a NUL byte), from the test process: open a
  # page, navigate, run JavaScript, take screenshots. A small sh wrapper
  # moves the Erlang port's stdin/stdout onto fds 3 and 4.

  alias SelfHeal.JSON

  defstruct [:port, :session]

  def chromium, do: Enum.find_value(["chromium", "chromium-browser"], &System.find_executable/1)

  def start(profile_dir) do
    args = [
      "-c",
      ~s(exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null 2>&1),
      chromium(),
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--remote-debugging-pipe",
      "--user-data-dir=" <> profile_dir,
      "--window-size=1280,1400",
      "about:blank"
    ]

    port = Port.open({:spawn_executable, "/bin/sh"}, [:binary, :exit_status, args: args])
    Process.put({__MODULE__, :buf}, "")
    Process.put({__MODULE__, :events}, [])
    cdp = %__MODULE__{port: port}
    {:ok, %{"targetId" => target}} = call(cdp, "Target.createTarget", %{"url" => "about:blank"})

    {:ok, %{"sessionId" => session}} =
      call(cdp, "Target.attachToTarget", %{"targetId" => target, "flatten" => true})

    cdp = %{cdp | session: session}
    {:ok, _} = call(cdp, "Page.enable", %{})
    cdp
  end

  def stop(%__MODULE__{port: port} = cdp) do
    _ = call(%{cdp | session: nil}, "Browser.close", %{}, 5000)

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      5000 -> Port.close(port)
    end
  catch
    _, _ -> :ok
  end

  def call(cdp, method, params, timeout \\ 20_000) do
    id = System.unique_integer([:positive])
    msg = %{"id" => id, "method" => method, "params" => params}
    msg = if cdp.session, do: Map.put(msg, "sessionId", cdp.session), else: msg
    true = Port.command(cdp.port, [JSON.encode!(msg), 0])
    await(cdp, &match?(%{"id" => ^id}, &1), timeout) |> result()
  end

  defp result(%{"result" => r}), do: {:ok, r}
  defp result(%{"error" => e}), do: {:error, e}
  defp result(other), do: {:error, other}

  @doc "Navigates and waits for the page's load event."
  def navigate(cdp, url) do
    Process.put({__MODULE__, :events}, [])
    {:ok, _} = call(cdp, "Page.navigate", %{"url" => url})
    wait_load(cdp)
  end

  def wait_load(cdp) do
    await(cdp, &match?(%{"method" => "Page.loadEventFired"}, &1), 20_000)
    :ok
  end

  @doc "Evaluates an expression in the page; its value."
  def eval(cdp, expression) do
    {:ok, %{"result" => r}} =
      call(cdp, "Runtime.evaluate", %{
        "expression" => expression,
        "returnByValue" => true,
        "awaitPromise" => true
      })

    r["value"]
  end

  def html(cdp), do: eval(cdp, "document.documentElement.outerHTML")

  def screenshot(cdp, path) do
    {:ok, %{"data" => data}} =
      call(cdp, "Page.captureScreenshot", %{"format" => "png", "captureBeyondViewport" => true})

    File.mkdir_p!(Path.dirname(path))
    File.write!(path, Base.decode64!(data))
    path
  end

  # the first message (events queued earlier included) that matches
  defp await(cdp, match?, timeout) do
    events = Process.get({__MODULE__, :events})

    case Enum.split_with(events, match?) do
      {[hit | _], rest} ->
        Process.put({__MODULE__, :events}, rest)
        hit

      {[], _} ->
        port = cdp.port

        receive do
          {^port, {:data, data}} ->
            buf = Process.get({__MODULE__, :buf}) <> data
            [rest | msgs] = buf |> :binary.split(<<0>>, [:global]) |> Enum.reverse()
            Process.put({__MODULE__, :buf}, rest)
            decoded = msgs |> Enum.reverse() |> Enum.map(&JSON.decode!/1)
            Process.put({__MODULE__, :events}, events ++ decoded)
            await(cdp, match?, timeout)

          {^port, {:exit_status, status}} ->
            raise "chromium exited with #{status}"
        after
          timeout -> raise "no answer from chromium"
        end
    end
  end
end
