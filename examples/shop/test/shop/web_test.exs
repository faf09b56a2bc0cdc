defmodule Shop.WebTest do
  # Not async: one test sets INVENTORY_URL.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  test "routes answer without a server" do
    assert Shop.Web.handle("GET", "/health", %{}) == {200, "ok"}

    assert Shop.Web.handle("GET", "/cart/average", %{"prices" => "10,20,30"}) ==
             {200, ~s({"average":20.0,"count":3})}

    assert {400, _} = Shop.Web.handle("GET", "/cart/average", %{"prices" => "ten"})
    assert {404, _} = Shop.Web.handle("GET", "/nowhere", %{})
    assert {405, _} = Shop.Web.handle("POST", "/health", %{})
  end

  test "the server answers over HTTP on a free port" do
    {:ok, pid} = Shop.Server.start_link(port: 0)
    on_exit(fn -> System.delete_env("INVENTORY_URL") end)
    port = Shop.Server.port(pid)
    url = ~c"http://127.0.0.1:#{port}/cart/average?prices=1,2"

    assert {:ok, {{_, 200, _}, headers, ~c(\{"average":1.5,"count":2\})}} = :httpc.request(url)
    assert {~c"content-type", ~c"application/json"} in headers

    # (:httpc refuses to send a malformed query.)
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false])
    :ok = :gen_tcp.send(socket, "GET /cart/average?prices=%zz HTTP/1.0\r\n\r\n")
    assert {:ok, "HTTP/1." <> <<_, " 400 ">> <> _} = :gen_tcp.recv(socket, 0, 2_000)
    :gen_tcp.close(socket)

    # An exception in a route is logged and answered with a 500 (nothing
    # listens on port 1: the inventory is down).
    bad = ~c"http://127.0.0.1:#{port}/products/1"
    System.put_env("INVENTORY_URL", "http://127.0.0.1:1")
    log = capture_log(fn -> assert {:ok, {{_, 500, _}, _, _}} = :httpc.request(bad) end)
    assert log =~ "(MatchError)"
    :ok = :inets.stop(:stand_alone, pid)
  end
end
