defmodule Mix.Tasks.Compile.SelfHealNative do
  @moduledoc """
  Builds the C parts (`priv/self_heal_nif.so`, `priv/self_heal_port`) by
  running `make priv` (with `MIX_ENV`: a `prod` build is stripped). Quiet:
  make's output is shown only when it fails, or always with `V=1`. Kept in
  the project because hex is not reachable, so `elixir_make` is not an
  option.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    make = System.get_env("MAKE", "make")

    {out, status} =
      System.cmd(make, ["--no-print-directory", "priv"],
        env: [{"MIX_ENV", to_string(Mix.env())}],
        stderr_to_stdout: true
      )

    if status != 0 or System.get_env("V") == "1", do: IO.write(out)

    if status == 0 do
      # On a fresh checkout `priv/` may not have existed when Mix laid out
      # `_build`, so the link to it is made here once the binaries exist.
      Mix.Project.build_structure()
      {:ok, []}
    else
      Mix.raise("`make priv` failed with exit status #{status}")
    end
  end
end

defmodule SelfHeal.MixProject do
  use Mix.Project

  def project do
    [
      app: :self_heal,
      version: "0.1.0",
      elixir: "~> 1.14",
      compilers: [:self_heal_native] ++ Mix.compilers(),
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      test_paths: ["test/self_heal"],
      deps: []
    ]
  end

  def application do
    [
      mod: {SelfHeal.Application, []},
      extra_applications: [:logger, :crypto],
      env: [
        # Attach SelfHeal.LoggerHandler when the application starts.
        logger_handler: true,
        # Options of the logger handler (see SelfHeal.LoggerHandler).
        handler: [],
        # Collector bounds (see SelfHeal.Collector).
        collector: []
      ]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
