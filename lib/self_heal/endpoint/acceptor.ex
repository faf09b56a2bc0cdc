defmodule SelfHeal.Endpoint.Acceptor do
  @moduledoc """
  One of the endpoint's acceptors: waits in `:gen_tcp.accept/1`, starts a
  connection process under the endpoint's `DynamicSupervisor`, hands it
  the socket. When `:max_connections` are open, the new connection gets a
  503 and is closed at once.
  """
  require Logger

  alias SelfHeal.Endpoint.Listener

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
        case DynamicSupervisor.start_child(
               config.connections,
               SelfHeal.Endpoint.connection_spec(config)
             ) do
          {:ok, pid} ->
            case :gen_tcp.controlling_process(socket, pid) do
              :ok -> send(pid, {:socket, socket})
              {:error, _} -> :gen_tcp.close(socket)
            end

          _max_children_or_error ->
            _ = :gen_tcp.send(socket, @busy)
            :gen_tcp.close(socket)
        end

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
end
