defmodule Shop.Pricing do
  @moduledoc "Cart price arithmetic."

  @doc "The average of a list of prices."
  @spec average([number]) :: float
  def average(prices) do
    Enum.sum(prices) / length(prices)
  end

  @doc """
  Parses a comma-separated price list ("10,20.5,30").

  Returns `{:ok, prices}` or `:error` when a price is not a number.
  """
  @spec parse(String.t()) :: {:ok, [number]} | :error
  def parse(text) do
    text
    |> String.split(",", trim: true)
    |> Enum.reduce_while({:ok, []}, fn part, {:ok, acc} ->
      case Float.parse(String.trim(part)) do
        {price, ""} -> {:cont, {:ok, [price | acc]}}
        _ -> {:halt, :error}
      end
    end)
    |> case do
      {:ok, prices} -> {:ok, Enum.reverse(prices)}
      :error -> :error
    end
  end
end
