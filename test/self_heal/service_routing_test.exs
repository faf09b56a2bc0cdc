defmodule SelfHeal.ServiceRoutingTest do
  # Events routed by their service from every source into a real
  # collector with a registry: logger metadata (`:service`, the OTP
  # application), Fluent Bit records (service, ECS `service.name`,
  # Kubernetes labels and container names, ECS names), a browser site
  # key's configured service, a tailer's service; the same error in two
  # services is two groups, an unknown service a group of its own.
  use ExUnit.Case, async: false

  require Logger

  alias SelfHeal.{Collector, Endpoint, LoggerHandler, RawHTTP, Service, Tail}

  @moduletag :tmp_dir
  @moduletag capture_log: true

  @token "routing-token-0123456789"
  @site_key "pk_routing_shop"

  @registry_config %{
    "services" => %{
      "shop" => %{"aliases" => ["shop-web", "shop_app"]},
      "billing" => %{"aliases" => ["billing-worker"]}
    }
  }

  defp start_collector(registry) do
    name = :"routing_collector_#{System.unique_integer([:positive])}"
    start_supervised!({Collector, name: name, flush_ms: 5, services: registry}, id: name)
    name
  end

  defp services(collector) do
    collector
    |> Collector.groups()
    |> Enum.map(&{&1.type, &1.sample.message, &1.services})
    |> Enum.sort()
  end

  # the collector's groups once there are n of them
  defp await_groups(collector, n) do
    eventually(fn ->
      case services(collector) do
        groups when length(groups) == n -> {:ok, groups}
        other -> other
      end
    end)
  end

  defp eventually(fun, tries \\ 100) do
    case fun.() do
      {:ok, value} ->
        value

      _ when tries > 0 ->
        Process.sleep(20)
        eventually(fun, tries - 1)

      other ->
        flunk("never happened: #{inspect(other)}")
    end
  end

  test "the registry: names and aliases, nothing without services" do
    registry = Service.new(@registry_config)
    assert Service.names(registry) == ["billing", "shop"]
    assert Service.new(%{}) == nil
    assert Service.new(%{services: %{}}) == nil

    assert Service.new(%{services: %{shop: %{aliases: ["web"]}}}) == %{
             "shop" => "shop",
             "web" => "shop"
           }

    assert Service.resolve(%{service: "shop-web", metadata: %{}}, registry) == {"shop", :known}

    assert Service.resolve(
             %{service: "node@host", metadata: %{application: :billing_worker}},
             registry
           ) ==
             {"node@host", :unknown}

    assert Service.resolve(
             %{
               service: "node@host",
               metadata: %{"kubernetes.container_name" => "billing-worker"}
             },
             registry
           ) == {"billing", :known}

    assert Service.resolve(%{service: "x", metadata: %{}}, nil) == {"x", :none}
    # scoped fingerprints: per service, same shape; unchanged without a registry
    fp = "0123456789abcdef0123456789abcdef"
    assert Service.scope(fp, "shop", nil) == fp
    a = Service.scope(fp, "shop", registry)
    assert a =~ ~r/\A[0-9a-f]{32}\z/
    assert a != Service.scope(fp, "billing", registry)
    assert a == Service.scope(fp, "shop", registry)
  end

  test "logger metadata: :service, else the OTP application", %{tmp_dir: _dir} do
    collector = start_collector(Service.new(@registry_config))
    id = :"routing_handler_#{System.unique_integer([:positive])}"

    :ok =
      :logger.add_handler(id, LoggerHandler, %{
        config: %{target: collector, service: "node-default"}
      })

    on_exit(fn -> :logger.remove_handler(id) end)

    Logger.error("payment declined for order", service: "billing")
    Logger.error("payment declined for order", service: "shop-web")
    Logger.error("payment declined for order", application: :shop_app)
    Logger.error("payment declined for order", service: "ghost")

    groups = await_groups(collector, 3)

    # shop twice (by its alias and by its application) is one group;
    # billing's identical error is another; ghost's a third, unknown
    assert Enum.map(groups, &elem(&1, 2)) |> Enum.sort() == [["billing"], ["ghost"], ["shop"]]
  end

  test "Fluent Bit records and browser site keys", %{tmp_dir: _dir} do
    collector = start_collector(Service.new(@registry_config))
    name = :"routing_endpoint_#{System.unique_integer([:positive])}"

    start_supervised!(
      {Endpoint,
       name: name,
       port: 0,
       tokens: [@token],
       site_keys: %{
         @site_key => %{origins: ["https://shop.example"], service: "shop"},
         "pk_routing_blog" => %{origins: ["https://blog.example"]}
       },
       collector: collector}
    )

    port = Endpoint.port(name)
    error = ~s("level":"error","message":"upstream timed out","exception.type":"TimeoutError")

    records =
      Enum.join(
        [
          ~s({#{error},"service.name":"billing"}),
          ~s({#{error},"kubernetes":{"labels":{"app":"shop-web"},"pod_name":"p1"}}),
          ~s({#{error},"kubernetes":{"container_name":"billing-worker"}}),
          ~s({#{error},"ecs_container_name":"shop_app"}),
          ~s({#{error},"service":"ghost"})
        ],
        "\n"
      )

    headers = [{"authorization", "Bearer " <> @token}, {"content-type", "application/x-ndjson"}]
    assert {202, _, _} = RawHTTP.request(port, "POST", "/ingest", headers, records)

    # a browser claiming billing is the site key's service: shop
    beacon = ~s({"events":[{"type":"TypeError","message":"x is undefined","service":"billing"}]})

    headers = [
      {"content-type", "text/plain;charset=UTF-8"},
      {"x-selfheal-key", @site_key},
      {"origin", "https://shop.example"}
    ]

    assert {202, _, _} = RawHTTP.request(port, "POST", "/capture", headers, beacon)

    # a key that names no service: the page's claim of billing is not
    # taken, so its errors belong to no service and are never fixed
    claim = ~s({"events":[{"type":"RangeError","message":"bad index","service":"billing"}]})

    blog = [
      {"content-type", "text/plain;charset=UTF-8"},
      {"x-selfheal-key", "pk_routing_blog"},
      {"origin", "https://blog.example"}
    ]

    assert {202, _, _} = RawHTTP.request(port, "POST", "/capture", blog, claim)

    groups = await_groups(collector, 5)

    by_type = Enum.group_by(groups, &elem(&1, 0), &elem(&1, 2))
    assert Enum.sort(by_type["TimeoutError"]) == [["billing"], ["ghost"], ["shop"]]
    assert by_type["TypeError"] == [["shop"]]
    assert by_type["RangeError"] == [[]]
  end

  test "a tailer's service, through its alias", %{tmp_dir: dir} do
    collector = start_collector(Service.new(@registry_config))
    path = Path.join(dir, "worker.log")
    File.write!(path, "")

    start_supervised!(
      {Tail,
       path: path,
       service: "billing-worker",
       collector: collector,
       poll_ms: 10,
       from: :beginning,
       multiline_timeout_ms: 60}
    )

    File.write!(path, "2026-12-06 06:00:00 ERROR invoice export failed\n", [:append])

    assert [{_, _, ["billing"]}] = await_groups(collector, 1)
  end

  test "without a registry nothing changes: one group, every service on it" do
    collector = start_collector(nil)

    events =
      for service <- ["shop", "billing"],
          do: SelfHeal.Event.new(type: "RuntimeError", message: "same", service: service)

    Collector.push(collector, events)

    assert [{"RuntimeError", "same", services}] = await_groups(collector, 1)

    assert Enum.sort(services) == ["billing", "shop"]
  end
end
