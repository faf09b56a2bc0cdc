defmodule SelfHeal.Endpoint.Listener do
  @moduledoc """
  Owns the endpoint's listening socket and its shared tables (rate limits,
  resume points of chunks taken in part, open connections per client, the
  connection counters), hands the completed configuration to the
  acceptors, and sweeps the rate and resume tables every 10 s
  (`SelfHeal.Endpoint.RateLimit.sweep/1`, `SelfHeal.Endpoint.Resume.sweep/1`).
  """
  use GenServer

  alias SelfHeal.Endpoint.{RateLimit, Resume}

  @sweep_ms 10_000

  @doc "The registered name of the listener of endpoint `name`."
  @spec name(atom()) :: atom()
  def name(endpoint), do: Module.concat(endpoint, Listener)

  @spec start_link(SelfHeal.Endpoint.config()) :: GenServer.on_start()
  def start_link(config), do: GenServer.start_link(__MODULE__, config, name: name(config.name))

  @doc "The configuration with the listening socket and the rate table."
  @spec config(atom()) :: SelfHeal.Endpoint.config()
  def config(endpoint), do: GenServer.call(name(endpoint), :config)

  @impl true
  def init(config) do
    family = if tuple_size(config.ip) == 8, do: :inet6, else: :inet

    opts = [
      family,
      :binary,
      ip: config.ip,
      packet: :raw,
      active: false,
      reuseaddr: true,
      nodelay: true,
      backlog: config.backlog,
      send_timeout: config.body_timeout,
      send_timeout_close: true
    ]

    case :gen_tcp.listen(config.port, opts) do
      {:ok, socket} ->
        Process.send_after(self(), :sweep, @sweep_ms)

        {:ok,
         %{
           config
           | listen_socket: socket,
             rate_table: RateLimit.new(),
             resume_table: Resume.new(),
             counters: :atomics.new(2, signed: true),
             client_table:
               :ets.new(:self_heal_endpoint_clients, [:set, :public, write_concurrency: true])
         }}

      {:error, reason} ->
        {:stop, {:listen, :inet.ntoa(config.ip), config.port, reason}}
    end
  end

  @impl true
  def handle_call(:config, _from, config), do: {:reply, config, config}

  def handle_call(:port, _from, config) do
    {:ok, port} = :inet.port(config.listen_socket)
    {:reply, port, config}
  end

  @impl true
  def handle_info(:sweep, config) do
    RateLimit.sweep(config.rate_table)
    Resume.sweep(config.resume_table)
    # clients without an open connection
    :ets.select_delete(config.client_table, [{{:_, 0}, [], [true]}])
    Process.send_after(self(), :sweep, @sweep_ms)
    {:noreply, config}
  end

  def handle_info(_other, config), do: {:noreply, config}
end
