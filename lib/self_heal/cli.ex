defmodule SelfHeal.CLI do
  @moduledoc """
  Runs one command of the port program from a shell (`self_heal_port run
  CMD --args FILE --config FILE`) with the application's port
  configuration (`config :self_heal, port: [config: %{...}]` and
  `:state_dir`): what the `mix self_heal.*` tasks use to reach the durable
  state (approvals, the kill switch, the breaker) while the application
  runs elsewhere. The running port picks a decision up from the state
  database within a second.
  """

  alias SelfHeal.JSON

  @doc "The port configuration of the current Mix project's application environment."
  @spec port_config() :: map()
  def port_config do
    opts = Application.get_env(:self_heal, :port) || []

    opts
    |> Keyword.get(:config, %{})
    |> Map.new(fn {k, v} -> {to_string(k), v} end)
    |> Map.put_new("state_dir", Application.get_env(:self_heal, :state_dir))
    |> SelfHeal.Port.wire()
  end

  @doc """
  Runs `cmd` with `args`; `{:ok, reply}` or `{:error, %{"code", "message"}}`.
  Options: `:config` (instead of `port_config/0`), `:executable`.
  """
  @spec run(String.t(), map(), keyword()) :: {:ok, map()} | {:error, map()}
  def run(cmd, args, opts \\ []) when is_binary(cmd) and is_map(args) do
    exe =
      Keyword.get_lazy(opts, :executable, fn ->
        Path.join(:code.priv_dir(:self_heal), "self_heal_port")
      end)

    config = Keyword.get_lazy(opts, :config, &port_config/0)

    if config["state_dir"] in [nil, ""] do
      {:error, %{"code" => "no_state", "message" => "no state_dir is configured"}}
    else
      dir = Path.join(System.tmp_dir!(), "self_heal_cli_#{System.unique_integer([:positive])}")
      File.mkdir_p!(dir)
      File.chmod!(dir, 0o700)
      args_file = Path.join(dir, "args.json")
      config_file = Path.join(dir, "config.json")

      try do
        File.write!(args_file, JSON.encode!(args))
        File.write!(config_file, JSON.encode!(config))

        # stderr carries the command's notifications (JSON lines) and the
        # program's own diagnostics; stdout the reply, indented JSON, last
        {out, status} =
          System.cmd(exe, ["run", cmd, "--args", args_file, "--config", config_file],
            stderr_to_stdout: true
          )

        lines = String.split(out, "\n")
        start = Enum.find_index(Enum.reverse(lines), &(&1 == "{"))
        reply = if start, do: Enum.join(Enum.take(lines, -(start + 1)), "\n"), else: out

        case {status, JSON.decode(reply)} do
          {0, {:ok, %{"ok" => reply}}} ->
            {:ok, reply}

          {_, {:ok, %{"error" => error}}} ->
            {:error, error}

          _ ->
            said = for "self_heal_port: " <> text <- lines, do: text
            message = if said == [], do: "exit status #{status}", else: Enum.join(said, "; ")
            {:error, %{"code" => "port", "message" => message}}
        end
      after
        File.rm_rf(dir)
      end
    end
  end

  @doc false
  # A `mix self_heal.*` task: loads the project's configuration without
  # build output (the build's output only when it fails), runs the
  # operation (`SelfHeal.Release.text/2`) and prints its answer, or fails
  # with exit status 1.
  def task(op, args) do
    shell = Mix.shell()
    Mix.shell(Mix.Shell.Quiet)

    try do
      Mix.Task.run("app.config")
    after
      Mix.shell(shell)
    end

    case SelfHeal.Release.text(op, args) do
      {:ok, out} -> Mix.shell().info(out)
      {:error, reason} -> Mix.raise("self_heal: " <> reason)
    end
  end

  @doc false
  # mix self_heal.approve / self_heal.skip: "FIX_ID [--by NAME]"
  def decide(op, argv) do
    {opts, rest} = OptionParser.parse!(argv, strict: [by: :string])

    case rest do
      [id] -> task(op, [id, Keyword.get(opts, :by, SelfHeal.Release.by())])
      _ -> Mix.raise("usage: mix self_heal.#{op} FIX_ID [--by NAME]; nothing was done")
    end
  end

  @doc false
  # mix self_heal.pause / self_heal.resume: "[--by NAME]"
  def switch(op, argv) do
    case OptionParser.parse!(argv, strict: [by: :string]) do
      {opts, []} -> task(op, [Keyword.get(opts, :by, SelfHeal.Release.by())])
      _ -> Mix.raise("usage: mix self_heal.#{op} [--by NAME]")
    end
  end
end
