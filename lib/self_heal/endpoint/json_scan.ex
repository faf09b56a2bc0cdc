defmodule SelfHeal.Endpoint.JSONScan do
  @moduledoc """
  Structural scanning of JSON bodies for `SelfHeal.Endpoint`, without
  building terms.

  The endpoint decodes events with `SelfHeal.Native.decode_json_lines/3`
  (jansson, in C), a slice of records at a time. Bodies that are not one
  object a line (Fluent Bit's `Format json`, a JSON array; the capture
  body `{"events": [...]}`) are cut here into the raw texts of their
  elements, which are then joined into a `json_lines` body. The scanner
  only finds boundaries (strings, escapes, bracket depth); each element is
  validated by the NIF, so one bad element is counted as malformed while
  the others are kept.

  Bounded: no recursion (a depth counter, at most 64 levels), and the
  jumps between structural bytes use `:binary.match/3`, so a body costs one
  linear pass in C-speed steps.
  """

  @max_depth 64

  @doc """
  The elements of a top-level JSON array, as raw texts, in order.
  `{:error, reason}` when the body is not an array or is cut short. With
  `max`, the scan stops after `max` elements and returns them (the rest
  is not looked at: the caller refuses a body that reaches its limit).
  """
  @spec array_elements(binary(), pos_integer() | :infinity) ::
          {:ok, [binary()]} | {:error, binary()}
  def array_elements(body, max \\ :infinity) when is_binary(body) do
    pos = skip_ws(body, 0)

    case byte_at(body, pos) do
      ?[ ->
        case elements(body, pos + 1, max) do
          {:ok, elements, :max} -> {:ok, elements}
          {:ok, elements, next} -> with :ok <- only_ws(body, next), do: {:ok, elements}
          error -> error
        end

      _ ->
        {:error, "not a JSON array"}
    end
  end

  @doc """
  The top-level values of a stream of JSON texts (`{...}{...}` or
  `{...} {...}`, Fluent Bit's `Format json_stream`), as raw texts; at most
  `max` of them, as in `array_elements/2`.
  """
  @spec stream_values(binary(), pos_integer() | :infinity) ::
          {:ok, [binary()]} | {:error, binary()}
  def stream_values(body, max \\ :infinity) when is_binary(body),
    do: stream_values(body, skip_ws(body, 0), [], max)

  defp stream_values(body, pos, acc, max) when pos >= byte_size(body) or max == 0,
    do: {:ok, Enum.reverse(acc)}

  defp stream_values(body, pos, acc, max) do
    with {:ok, stop} <- value_end(body, pos) do
      acc = [binary_part(body, pos, stop - pos) | acc]
      stream_values(body, skip_ws(body, stop), acc, decrement(max))
    end
  end

  defp decrement(:infinity), do: :infinity
  defp decrement(n), do: n - 1

  @doc """
  The events of a capture body: one event object, `{"events": [...]}`, or
  (leniently) a bare array of events. Returns their raw texts; at most
  `max` of them, as in `array_elements/2`.
  """
  @spec capture_events(binary(), pos_integer() | :infinity) ::
          {:ok, [binary()]} | {:error, binary()}
  def capture_events(body, max \\ :infinity) when is_binary(body) do
    pos = skip_ws(body, 0)

    case byte_at(body, pos) do
      ?[ ->
        array_elements(body, max)

      ?{ ->
        with {:ok, events_value, next} <- find_member(body, pos + 1, "\"events\""),
             :ok <- only_ws(body, next) do
          case events_value do
            nil -> {:ok, [binary_part(body, pos, next - pos)]}
            text -> array_elements(text, max)
          end
        end

      _ ->
        {:error, "not a JSON object"}
    end
  end

  @doc """
  Joins element texts into a `json_lines` body: a raw newline inside an
  element (pretty-printed JSON) becomes a space, so each element stays one
  line.
  """
  @spec to_lines([binary()]) :: iodata()
  def to_lines(elements) do
    Enum.map(elements, fn element ->
      element =
        case :binary.match(element, "\n") do
          :nomatch -> element
          _ -> :binary.replace(element, "\n", " ", [:global])
        end

      [element, ?\n]
    end)
  end

  # ------------------------------------------------------------ scanning

  defp elements(body, pos, max) do
    pos = skip_ws(body, pos)

    case byte_at(body, pos) do
      ?] -> {:ok, [], pos + 1}
      _ -> elements(body, pos, [], max)
    end
  end

  defp elements(_body, _pos, acc, 0), do: {:ok, Enum.reverse(acc), :max}

  defp elements(body, pos, acc, max) do
    pos = skip_ws(body, pos)

    with {:ok, stop} <- value_end(body, pos) do
      acc = [binary_part(body, pos, stop - pos) | acc]
      next = skip_ws(body, stop)

      case byte_at(body, next) do
        ?, -> elements(body, next + 1, acc, decrement(max))
        ?] -> {:ok, Enum.reverse(acc), next + 1}
        _ -> {:error, "expected , or ] at byte #{next}"}
      end
    end
  end

  # Scans the members of an object whose "{" is before pos; returns the raw
  # value text of the member named `key` (raw, with its quotes) or nil, and
  # the position after the closing "}".
  defp find_member(body, pos, key) do
    pos = skip_ws(body, pos)

    case byte_at(body, pos) do
      ?} -> {:ok, nil, pos + 1}
      _ -> members(body, pos, key, nil)
    end
  end

  defp members(body, pos, key, found) do
    pos = skip_ws(body, pos)

    with ?" <- byte_at(body, pos),
         {:ok, key_end} <- string_end(body, pos + 1),
         colon = skip_ws(body, key_end),
         ?: <- byte_at(body, colon),
         value_pos = skip_ws(body, colon + 1),
         {:ok, value_end} <- value_end(body, value_pos) do
      found =
        if binary_part(body, pos, key_end - pos) == key,
          do: binary_part(body, value_pos, value_end - value_pos),
          else: found

      next = skip_ws(body, value_end)

      case byte_at(body, next) do
        ?, -> members(body, next + 1, key, found)
        ?} -> {:ok, found, next + 1}
        _ -> {:error, "expected , or } at byte #{next}"}
      end
    else
      {:error, _} = error -> error
      _ -> {:error, "malformed object member at byte #{pos}"}
    end
  end

  # Position just after the value starting at pos.
  defp value_end(body, pos) do
    case byte_at(body, pos) do
      ?" -> string_end(body, pos + 1)
      c when c in [?{, ?[] -> container_end(body, pos + 1, 1)
      nil -> {:error, "unexpected end of body"}
      c when c in [?,, ?], ?}, ?:] -> {:error, "unexpected #{<<c>>} at byte #{pos}"}
      _ -> {:ok, scalar_end(body, pos)}
    end
  end

  defp string_end(body, pos) do
    case :binary.match(body, ["\"", "\\"], scope: {pos, byte_size(body) - pos}) do
      {at, 1} ->
        if :binary.at(body, at) == ?\\ and at + 2 <= byte_size(body),
          do: string_end(body, at + 2),
          else: string_close(body, at)

      :nomatch ->
        {:error, "unterminated string"}
    end
  end

  defp string_close(body, at) do
    if :binary.at(body, at) == ?", do: {:ok, at + 1}, else: {:error, "unterminated string"}
  end

  defp container_end(body, pos, depth) do
    case :binary.match(body, ["\"", "{", "[", "}", "]"], scope: {pos, byte_size(body) - pos}) do
      :nomatch ->
        {:error, "unexpected end of body"}

      {at, 1} ->
        case :binary.at(body, at) do
          ?" ->
            with {:ok, next} <- string_end(body, at + 1), do: container_end(body, next, depth)

          c when c in [?{, ?[] ->
            if depth >= @max_depth,
              do: {:error, "too deep"},
              else: container_end(body, at + 1, depth + 1)

          _ when depth == 1 ->
            {:ok, at + 1}

          _ ->
            container_end(body, at + 1, depth - 1)
        end
    end
  end

  defp scalar_end(body, pos) do
    case :binary.match(body, [",", "]", "}", " ", "\t", "\r", "\n"],
           scope: {pos, byte_size(body) - pos}
         ) do
      {at, 1} -> at
      :nomatch -> byte_size(body)
    end
  end

  defp skip_ws(body, pos) do
    case byte_at(body, pos) do
      c when c in [?\s, ?\t, ?\r, ?\n] -> skip_ws(body, pos + 1)
      _ -> pos
    end
  end

  defp only_ws(body, pos) do
    if skip_ws(body, pos) == byte_size(body),
      do: :ok,
      else: {:error, "trailing data at byte #{pos}"}
  end

  defp byte_at(body, pos) when pos < byte_size(body), do: :binary.at(body, pos)
  defp byte_at(_body, _pos), do: nil
end
