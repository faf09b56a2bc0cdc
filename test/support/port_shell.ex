defmodule SelfHeal.PortShell do
  @moduledoc false
  # The port program's shell mode for tests: `self_heal_port run CMD --args
  # F --config F` with the args and the configuration written to files in
  # `dir`. stderr goes to a file through positional parameters, so no text
  # reaches the shell's parser. SELF_HEAL_PORT_BIN runs another build.

  alias SelfHeal.FakeHTTP
  alias SelfHeal.JSON

  def port_path,
    do:
      System.get_env("SELF_HEAL_PORT_BIN") ||
        Path.join(:code.priv_dir(:self_heal), "self_heal_port")

  @doc "Runs one command: {exit status, decoded reply, stdout <> stderr}."
  def run(dir, cmd, args, config, env \\ []) do
    n = System.unique_integer([:positive])
    args_file = Path.join(dir, "args-#{n}.json")
    config_file = Path.join(dir, "config-#{n}.json")
    err_file = Path.join(dir, "stderr-#{n}")
    File.write!(args_file, FakeHTTP.encode(args))
    File.write!(config_file, FakeHTTP.encode(config))

    {out, status} =
      System.cmd(
        "sh",
        [
          "-c",
          ~s(e="$1"; shift; exec "$0" "$@" 2>"$e"),
          port_path(),
          err_file,
          "run",
          cmd,
          "--args",
          args_file,
          "--config",
          config_file
        ],
        env: env
      )

    {status, JSON.decode!(out), out <> File.read!(err_file)}
  end
end
