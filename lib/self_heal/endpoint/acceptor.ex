defmodule SelfHeal.Endpoint.Acceptor do
  @moduledoc """
  One of the endpoint's acceptors: waits in `:gen_tcp.accept/1`, starts a
  connection process under the endpoint's `DynamicSupervisor`, hands it
  the socket. The new connection gets a 503 and is closed at once when
  `:max_connections` are open, or when its client (`RateLimit.source/1`)
  already has `:max_connections_per_source`. When the connections that
  have not authenticated fill all but `:reserved_connections`, a new one
  is taken on probation: it is served only if its first request carries a
  bearer token (`SelfHeal.Endpoint.Conn`), so Fluent Bit and servers get
  in while an anonymous flood holds the rest.
  """
  require Logger

  alias SelfHeal.Endpoint.{Listener, RateLimit}

  @doc false
  @spec child_spec(SelfHeal.Endpoint.config()) :: Supervisor.child_spec()
  def child_spec(config) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [config]}, shutdown: :brutal_kill}
  end

  @spec start_link(SelfHeal.Endpoint.config()) :: {:ok, pid()}
  def start_link(config) do
    {:ok, :proc_lib.spawn_link(__MODULE__, :run, [config.name])}
  end

  @doc false
  @spec run(atom()) :: no_return()
  def run(endpoint) do
    config = Listener.config(endpoint)
    loop(config.listen_socket, config)
  end

  @busy "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

  defp loop(listen_socket, config) do
    case :gen_tcp.accept(listen_socket) do
      {:ok, socket} ->
        start(socket, config)
        loop(listen_socket, config)

      {:error, :closed} ->
        exit(:closed)

      {:error, reason} when reason in [:emfile, :enfile, :system_limit, :enobufs] ->
        Logger.warning("SelfHeal.Endpoint accept: #{reason}", domain: [:self_heal])
        Process.sleep(100)
        loop(listen_socket, config)

      {:error, _transient} ->
        loop(listen_socket, config)
    end
  end

  defp start(socket, config) do
    peer =
      case :inet.peername(socket) do
        {:ok, {ip, _port}} -> ip
        _ -> nil
      end

    source = RateLimit.source(peer)
    clients = config.client_table

    with true <-
           :ets.update_counter(clients, source, {2, 1}, {source, 0}) <=
             config.max_connections_per_source,
         {:ok, pid} <-
           DynamicSupervisor.start_child(
             config.connections,
             SelfHeal.Endpoint.connection_spec(config)
           ),
         :ok <- :gen_tcp.controlling_process(socket, pid) do
      send(pid, {:socket, socket, peer, source, probation?(config)})
    else
      _over_limit_or_error ->
        :ets.update_counter(clients, source, {2, -1})
        _ = :gen_tcp.send(socket, @busy)
        :gen_tcp.close(socket)
    end
  end

  # the connections open that have not authenticated fill all but the
  # reserve (at most a quarter of the connections)
  defp probation?(config) do
    anonymous = :atomics.get(config.counters, 1) - :atomics.get(config.counters, 2)
    reserve = min(config.reserved_connections, div(config.max_connections, 4))
    anonymous >= config.max_connections - reserve
  end
end
