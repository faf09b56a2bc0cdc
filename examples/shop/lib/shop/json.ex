defmodule Shop.JSON do
  @moduledoc """
  A tiny JSON encoder (the shop has no dependencies): maps with atom or
  string keys, lists, strings, numbers, booleans and `nil`. Invalid UTF-8
  bytes become U+FFFD.
  """

  @spec encode(term) :: binary
  def encode(value), do: IO.iodata_to_binary(value(value))

  defp value(nil), do: "null"
  defp value(true), do: "true"
  defp value(false), do: "false"
  defp value(n) when is_integer(n), do: Integer.to_string(n)
  defp value(f) when is_float(f), do: :erlang.float_to_binary(f, [:short])
  defp value(a) when is_atom(a), do: string(Atom.to_string(a))
  defp value(s) when is_binary(s), do: string(s)
  defp value(list) when is_list(list), do: ["[", Enum.map_intersperse(list, ",", &value/1), "]"]

  defp value(%{} = map) when not is_struct(map) do
    pairs =
      map
      |> Enum.sort()
      |> Enum.map_intersperse(",", fn {k, v} -> [string(key(k)), ":", value(v)] end)

    ["{", pairs, "}"]
  end

  defp key(k) when is_binary(k), do: k
  defp key(k) when is_atom(k), do: Atom.to_string(k)
  defp key(k) when is_integer(k), do: Integer.to_string(k)

  defp string(s), do: [?", escape(s, []), ?"]

  defp escape(<<>>, acc), do: Enum.reverse(acc)
  defp escape(<<?", rest::binary>>, acc), do: escape(rest, ["\\\"" | acc])
  defp escape(<<?\\, rest::binary>>, acc), do: escape(rest, ["\\\\" | acc])
  defp escape(<<?\n, rest::binary>>, acc), do: escape(rest, ["\\n" | acc])
  defp escape(<<?\r, rest::binary>>, acc), do: escape(rest, ["\\r" | acc])
  defp escape(<<?\t, rest::binary>>, acc), do: escape(rest, ["\\t" | acc])

  defp escape(<<c, rest::binary>>, acc) when c < 0x20 do
    hex = c |> Integer.to_string(16) |> String.pad_leading(4, "0")
    escape(rest, ["\\u" <> hex | acc])
  end

  # U+2028 and U+2029 are valid JSON but break JavaScript string literals.
  defp escape(<<c::utf8, rest::binary>>, acc) when c in [0x2028, 0x2029],
    do: escape(rest, ["\\u" <> Integer.to_string(c, 16) | acc])

  defp escape(<<c::utf8, rest::binary>>, acc), do: escape(rest, [<<c::utf8>> | acc])
  defp escape(<<_invalid, rest::binary>>, acc), do: escape(rest, ["\\uFFFD" | acc])
end
