defmodule Shop.Server do
  @moduledoc "The `:httpd` instance serving `Shop.Web`, as a supervised child."

  @doc "Starts httpd on 127.0.0.1:`port` (0: any free port), linked."
  def start_link(opts) do
    port = Keyword.fetch!(opts, :port)
    root = String.to_charlist(System.tmp_dir!())

    config = [
      port: port,
      bind_address: {127, 0, 0, 1},
      server_name: 'shop',
      server_root: root,
      document_root: root,
      modules: [Shop.Web]
    ]

    :inets.start(:httpd, config, :stand_alone)
  end

  @doc "The port a running server listens on."
  # (`:httpd.info/2` does not know stand-alone instances; the instance
  # supervisor's child id carries the port.)
  def port(pid) do
    Enum.find_value(Supervisor.which_children(pid), fn
      {{:httpd_instance_sup, _address, port, _profile}, _, _, _} -> port
      _ -> nil
    end)
  end

  def child_spec(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, type: :worker}
  end
end
