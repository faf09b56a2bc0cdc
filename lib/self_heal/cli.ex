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

  alias SelfHeal.Port.JSON

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

        {out, status} =
          System.cmd(exe, ["run", cmd, "--args", args_file, "--config", config_file],
            stderr_to_stdout: false
          )

        case {status, JSON.decode(out)} do
          {0, {:ok, %{"ok" => reply}}} -> {:ok, reply}
          {_, {:ok, %{"error" => error}}} -> {:error, error}
          _ -> {:error, %{"code" => "port", "message" => "exit status #{status}"}}
        end
      after
        File.rm_rf(dir)
      end
    end
  end

  @doc false
  def main(cmd, args, describe) do
    Mix.Task.run("app.config")

    case run(cmd, args) do
      {:ok, reply} ->
        Mix.shell().info(describe.(reply))

      {:error, %{"code" => code, "message" => message}} ->
        Mix.raise("self_heal #{cmd}: #{code}: #{message}")

      {:error, other} ->
        Mix.raise("self_heal #{cmd}: #{inspect(other)}")
    end
  end

  @doc false
  # mix self_heal.approve / self_heal.skip: `action` on the fix named by
  # argv ("FIX_ID [--by NAME]"); `done` is "approved" or "skipped".
  def decide(action, done, argv) do
    task = "self_heal." <> action
    {opts, rest} = OptionParser.parse!(argv, strict: [by: :string])
    id = fix_id!(task, rest)
    by = Keyword.get(opts, :by, System.get_env("USER") || "human")
    main(action, %{"id" => id, "by" => by}, &"fix #{&1["fix_id"]} #{done} by #{&1["by"]}")
  end

  defp fix_id!(task, [id | _]) do
    case Integer.parse(String.replace_prefix(id, "fix-", "")) do
      {n, ""} when n > 0 -> n
      _ -> Mix.raise("usage: mix #{task} FIX_ID (a positive number); nothing was done")
    end
  end

  defp fix_id!(task, _), do: Mix.raise("usage: mix #{task} FIX_ID; nothing was done")
end
