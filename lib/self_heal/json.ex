defmodule SelfHeal.JSON do
  @moduledoc """
  The project's JSON codec: the port's frames (`SelfHeal.Port`), the
  command line's arguments and replies (`SelfHeal.CLI`), the dashboard's
  data. OTP 25 has no JSON module and the project uses no hex packages.
  (Request bodies the endpoint only cuts into elements, without building
  terms, go through the scanner `SelfHeal.Endpoint.JSONScan`.)

  `encode/1` takes maps (atom, string or integer keys), lists, strings,
  integers, floats, booleans, `nil` and other atoms (as strings). Text that
  is not valid UTF-8 has each bad byte replaced by U+FFFD, so the port's
  strict parser (jansson) always accepts the result. Other terms raise
  `ArgumentError`.

  `decode/1` parses one JSON text: objects become maps with string keys
  (the last of duplicate keys wins), `\\u` escapes are decoded including
  surrogate pairs (a lone surrogate is an error), strings must be valid
  UTF-8, and nesting is limited to #{128} levels.
  """

  @max_depth 128

  @doc "Encodes a term as JSON iodata."
  @spec encode(term()) :: iodata()
  def encode(term), do: value(term)

  @doc "Encodes a term as a JSON binary."
  @spec encode!(term()) :: binary()
  def encode!(term), do: IO.iodata_to_binary(value(term))

  defp value(nil), do: "null"
  defp value(true), do: "true"
  defp value(false), do: "false"
  defp value(a) when is_atom(a), do: string(Atom.to_string(a))
  defp value(s) when is_binary(s), do: string(s)
  defp value(i) when is_integer(i), do: Integer.to_string(i)
  defp value(f) when is_float(f), do: :erlang.float_to_binary(f, [:short])
  defp value(list) when is_list(list), do: array(list)

  defp value(%{__struct__: _} = s),
    do: raise(ArgumentError, "cannot encode a struct as JSON: #{inspect(s.__struct__)}")

  defp value(map) when is_map(map) do
    case Enum.map(map, fn {k, v} -> [string(key(k)), ?:, value(v)] end) do
      [] -> "{}"
      [first | rest] -> [?{, first, Enum.map(rest, &[?,, &1]), ?}]
    end
  end

  defp value(other), do: raise(ArgumentError, "cannot encode as JSON: #{inspect(other)}")

  defp array([]), do: "[]"
  defp array([first | rest]), do: [?[, value(first), Enum.map(rest, &[?,, value(&1)]), ?]]

  defp key(k) when is_binary(k), do: k
  defp key(k) when is_atom(k), do: Atom.to_string(k)
  defp key(k) when is_integer(k), do: Integer.to_string(k)
  defp key(k), do: raise(ArgumentError, "cannot encode as a JSON key: #{inspect(k)}")

  defp string(s) do
    s = if String.valid?(s), do: s, else: replace_invalid(s, [])
    [?", escape(s, s, 0, 0, []), ?"]
  end

  # Copies runs of bytes that need no escape as sub-binaries.
  defp escape(<<>>, s, start, len, acc), do: Enum.reverse([binary_part(s, start, len) | acc])

  defp escape(<<c, rest::binary>>, s, start, len, acc) when c < 0x20 or c == ?" or c == ?\\ do
    acc = [escaped(c), binary_part(s, start, len) | acc]
    escape(rest, s, start + len + 1, 0, acc)
  end

  defp escape(<<_, rest::binary>>, s, start, len, acc), do: escape(rest, s, start, len + 1, acc)

  defp escaped(?"), do: "\\\""
  defp escaped(?\\), do: "\\\\"
  defp escaped(?\n), do: "\\n"
  defp escaped(?\r), do: "\\r"
  defp escaped(?\t), do: "\\t"

  defp escaped(c) do
    hex = Integer.to_string(c, 16)
    "\\u" <> String.duplicate("0", 4 - byte_size(hex)) <> hex
  end

  defp replace_invalid(<<>>, acc), do: IO.iodata_to_binary(Enum.reverse(acc))

  defp replace_invalid(<<c::utf8, rest::binary>>, acc),
    do: replace_invalid(rest, [<<c::utf8>> | acc])

  defp replace_invalid(<<_, rest::binary>>, acc), do: replace_invalid(rest, ["\uFFFD" | acc])

  # ------------------------------------------------------------ decoding

  @doc "Decodes one JSON text. `{:error, reason}` names the problem and its byte offset."
  @spec decode(binary()) :: {:ok, term()} | {:error, binary()}
  def decode(text) when is_binary(text) do
    {v, rest} = parse_value(skip_ws(text), 0, text)

    case skip_ws(rest) do
      "" -> {:ok, v}
      more -> fail(text, more, "trailing data")
    end
  catch
    {:json_error, reason} -> {:error, reason}
  end

  @doc "Like `decode/1` but raises `ArgumentError`."
  @spec decode!(binary()) :: term()
  def decode!(text) do
    case decode(text) do
      {:ok, v} -> v
      {:error, reason} -> raise ArgumentError, "invalid JSON: " <> reason
    end
  end

  defp fail(text, rest, what),
    do: throw({:json_error, "#{what} at byte #{byte_size(text) - byte_size(rest)}"})

  defp skip_ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: skip_ws(rest)
  defp skip_ws(rest), do: rest

  defp parse_value(<<c, _::binary>> = rest, depth, text)
       when depth >= @max_depth and c in [?[, ?{],
       do: fail(text, rest, "nesting deeper than #{@max_depth}")

  defp parse_value(<<?{, rest::binary>>, depth, text),
    do: parse_object(skip_ws(rest), depth + 1, text, %{})

  defp parse_value(<<?[, rest::binary>>, depth, text),
    do: parse_array(skip_ws(rest), depth + 1, text, [])

  defp parse_value(<<?", rest::binary>>, _depth, text), do: parse_string(rest, text, [])
  defp parse_value(<<"true", rest::binary>>, _, _), do: {true, rest}
  defp parse_value(<<"false", rest::binary>>, _, _), do: {false, rest}
  defp parse_value(<<"null", rest::binary>>, _, _), do: {nil, rest}

  defp parse_value(<<c, _::binary>> = s, _, text) when c == ?- or c in ?0..?9,
    do: parse_number(s, text)

  defp parse_value(rest, _, text), do: fail(text, rest, "unexpected input")

  defp parse_object(<<?}, rest::binary>>, _depth, _text, acc), do: {acc, rest}

  defp parse_object(<<?", rest::binary>>, depth, text, acc) do
    {k, rest} = parse_string(rest, text, [])

    case skip_ws(rest) do
      <<?:, rest::binary>> ->
        {v, rest} = parse_value(skip_ws(rest), depth, text)
        acc = Map.put(acc, k, v)

        case skip_ws(rest) do
          <<?,, rest::binary>> -> parse_object_key(skip_ws(rest), depth, text, acc)
          <<?}, rest::binary>> -> {acc, rest}
          rest -> fail(text, rest, "expected , or }")
        end

      rest ->
        fail(text, rest, "expected :")
    end
  end

  defp parse_object(rest, _, text, _), do: fail(text, rest, "expected a key or }")

  defp parse_object_key(<<?", _::binary>> = s, depth, text, acc),
    do: parse_object(s, depth, text, acc)

  defp parse_object_key(rest, _, text, _), do: fail(text, rest, "expected a key")

  defp parse_array(<<?], rest::binary>>, _depth, _text, []), do: {[], rest}

  defp parse_array(s, depth, text, acc) do
    {v, rest} = parse_value(s, depth, text)

    case skip_ws(rest) do
      <<?,, rest::binary>> -> parse_array(skip_ws(rest), depth, text, [v | acc])
      <<?], rest::binary>> -> {Enum.reverse([v | acc]), rest}
      rest -> fail(text, rest, "expected , or ]")
    end
  end

  # Strings: runs without escapes are taken whole.
  @string_stops ["\"", "\\" | Enum.map(0..31, &<<&1>>)]

  defp parse_string(s, text, acc) do
    case :binary.match(s, @string_stops) do
      :nomatch ->
        fail(text, "", "unterminated string")

      {pos, 1} ->
        acc = [binary_part(s, 0, pos) | acc]

        case binary_part(s, pos, byte_size(s) - pos) do
          <<?", rest::binary>> ->
            str = IO.iodata_to_binary(Enum.reverse(acc))
            if String.valid?(str), do: {str, rest}, else: fail(text, rest, "invalid UTF-8")

          <<?\\, rest::binary>> ->
            {piece, rest} = parse_escape(rest, text)
            parse_string(rest, text, [piece | acc])

          rest ->
            fail(text, rest, "control character in string")
        end
    end
  end

  defp parse_escape(<<?", rest::binary>>, _), do: {"\"", rest}
  defp parse_escape(<<?\\, rest::binary>>, _), do: {"\\", rest}
  defp parse_escape(<<?/, rest::binary>>, _), do: {"/", rest}
  defp parse_escape(<<?b, rest::binary>>, _), do: {"\b", rest}
  defp parse_escape(<<?f, rest::binary>>, _), do: {"\f", rest}
  defp parse_escape(<<?n, rest::binary>>, _), do: {"\n", rest}
  defp parse_escape(<<?r, rest::binary>>, _), do: {"\r", rest}
  defp parse_escape(<<?t, rest::binary>>, _), do: {"\t", rest}

  defp parse_escape(<<?u, hex::binary-size(4), rest::binary>> = s, text) do
    case hex4(hex) do
      hi when hi in 0xD800..0xDBFF ->
        with <<"\\u", hex2::binary-size(4), rest2::binary>> <- rest,
             lo when lo in 0xDC00..0xDFFF <- hex4(hex2) do
          {<<0x10000 + (hi - 0xD800) * 0x400 + (lo - 0xDC00)::utf8>>, rest2}
        else
          _ -> fail(text, s, "lone surrogate")
        end

      cp when cp in 0xDC00..0xDFFF ->
        fail(text, s, "lone surrogate")

      cp when is_integer(cp) ->
        {<<cp::utf8>>, rest}

      nil ->
        fail(text, s, "bad \\u escape")
    end
  end

  defp parse_escape(rest, text), do: fail(text, rest, "bad escape")

  defp hex4(<<a, b, c, d>>) do
    if Enum.all?([a, b, c, d], &(&1 in ?0..?9 or &1 in ?a..?f or &1 in ?A..?F)),
      do: String.to_integer(<<a, b, c, d>>, 16)
  end

  defp parse_number(s, text) do
    {int, rest} = number_part(s, &int_prefix/1, text)
    {frac, rest} = optional_part(rest, ?., text)
    {exp, rest} = exponent(rest, text)

    if frac == "" and exp == "" do
      {String.to_integer(int), rest}
    else
      frac = if frac == "", do: ".0", else: frac

      try do
        {String.to_float(int <> frac <> exp), rest}
      rescue
        ArgumentError -> fail(text, rest, "number out of range")
      end
    end
  end

  defp number_part(s, fun, text) do
    case fun.(s) do
      nil -> fail(text, s, "bad number")
      len -> {binary_part(s, 0, len), binary_part(s, len, byte_size(s) - len)}
    end
  end

  # -?(0|[1-9][0-9]*)
  defp int_prefix(<<?-, rest::binary>>) do
    case int_prefix(rest) do
      nil -> nil
      n -> n + 1
    end
  end

  defp int_prefix(<<?0, _::binary>>), do: 1
  defp int_prefix(<<c, rest::binary>>) when c in ?1..?9, do: digits(rest, 1)
  defp int_prefix(_), do: nil

  defp digits(s), do: digits(s, 0)
  defp digits(<<c, rest::binary>>, n) when c in ?0..?9, do: digits(rest, n + 1)
  defp digits(_, n), do: n

  defp optional_part(<<?., rest::binary>> = s, ?., text) do
    case digits(rest) do
      0 -> fail(text, s, "bad number")
      n -> {binary_part(s, 0, n + 1), binary_part(rest, n, byte_size(rest) - n)}
    end
  end

  defp optional_part(rest, _, _), do: {"", rest}

  defp exponent(<<e, rest::binary>> = s, text) when e in [?e, ?E] do
    {sign, rest} =
      case rest do
        <<c, r::binary>> when c in [?+, ?-] -> {<<c>>, r}
        _ -> {"", rest}
      end

    case digits(rest) do
      0 ->
        fail(text, s, "bad number")

      n ->
        {"e" <> sign <> binary_part(rest, 0, n), binary_part(rest, n, byte_size(rest) - n)}
    end
  end

  defp exponent(rest, _), do: {"", rest}
end
