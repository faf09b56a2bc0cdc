defmodule Shop.MixProject do
  use Mix.Project

  # No dependencies at all: the demo runs without network access to hex.pm.
  def project do
    [
      app: :shop,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: []
    ]
  end

  def application do
    [
      extra_applications: [:logger, :inets],
      mod: {Shop.Application, []}
    ]
  end
end
