defmodule SelfHeal.Event do
  @moduledoc """
  The one event struct every source produces: the logger handler, the HTTP
  capture endpoint, Fluent Bit ingestion and the log tailer.

    * `:timestamp` - microseconds since the Unix epoch (system time)
    * `:level` - logger level atom
    * `:source` - `:logger`, `:http`, `:fluent_bit`, `:tail`, ...
    * `:service` - the service that emitted it (binary) or nil
    * `:type` - exception type (`"RuntimeError"`, `"exit"`, `"TypeError"`)
      or nil for a plain log message
    * `:message` - the message as text (bounded, see `max_bytes/0`)
    * `:stacktrace` - an Erlang stack trace (list of stack entries), a text
      stack trace, or nil
    * `:module`, `:function`, `:file`, `:line` - where it happened: the top
      frame of the stack trace, else the logging call site
    * `:metadata` - selected metadata (binary or atom keys)
    * `:fingerprint` - filled by the collector (`SelfHeal.Native`)
    * `:truncated` - true when the message was cut to `max_bytes/0`
  """

  @max_bytes 65_536

  defstruct timestamp: nil,
            level: :error,
            source: :logger,
            service: nil,
            type: nil,
            message: "",
            stacktrace: nil,
            module: nil,
            function: nil,
            file: nil,
            line: nil,
            metadata: %{},
            fingerprint: nil,
            truncated: false

  @type stacktrace :: [tuple()] | binary() | nil

  @type t :: %__MODULE__{
          timestamp: integer() | nil,
          level: atom(),
          source: atom(),
          service: binary() | nil,
          type: binary() | nil,
          message: binary(),
          stacktrace: stacktrace(),
          module: binary() | nil,
          function: binary() | nil,
          file: binary() | nil,
          line: non_neg_integer() | nil,
          metadata: map(),
          fingerprint: binary() | nil,
          truncated: boolean()
        }

  @doc "Largest message kept, in bytes; longer ones are cut and flagged."
  @spec max_bytes() :: pos_integer()
  def max_bytes, do: @max_bytes

  @doc "Current time in the events' unit."
  @spec now() :: integer()
  def now, do: System.system_time(:microsecond)

  @doc """
  Builds an event from fields, cutting the message to `max_bytes/0` at a
  UTF-8 boundary and filling the location from the top stack frame.
  """
  @spec new(keyword() | map()) :: t()
  def new(fields) do
    event = struct(__MODULE__, fields)
    {message, cut?} = bounded_text(event.message)

    %{event | message: message, truncated: event.truncated or cut?}
    |> Map.update!(:timestamp, &(&1 || now()))
    |> put_location()
  end

  @doc "Text bounded to `max_bytes/0`, cut at a UTF-8 boundary; `{text, cut?}`."
  @spec bounded_text(term()) :: {binary(), boolean()}
  def bounded_text(nil), do: {"", false}

  def bounded_text(text) when is_binary(text) do
    if byte_size(text) <= @max_bytes do
      {text, false}
    else
      {utf8_prefix(text, @max_bytes), true}
    end
  end

  def bounded_text(other) do
    text =
      try do
        IO.chardata_to_string(other)
      rescue
        _ -> inspect(other, limit: 50, printable_limit: @max_bytes)
      end

    bounded_text(text)
  end

  defp utf8_prefix(text, max) do
    prefix = binary_part(text, 0, max)
    # drop at most 3 bytes of a code point cut in the middle
    Enum.find_value(0..3, prefix, fn drop ->
      candidate = binary_part(prefix, 0, max - drop)
      if String.valid?(candidate), do: candidate
    end)
  end

  defp put_location(%__MODULE__{module: nil, stacktrace: [entry | _]} = event) do
    case entry do
      {mod, fun, arity, location} when is_atom(mod) and is_atom(fun) ->
        arity = arity_of(arity)

        %{
          event
          | module: inspect(mod),
            function: if(arity, do: "#{fun}/#{arity}", else: Atom.to_string(fun)),
            file: location_file(location),
            line: location_line(location)
        }

      _ ->
        event
    end
  end

  defp put_location(event), do: event

  # Stack entries come from anywhere (a crash report, a third-party
  # logger); improper lists and odd values give nil, never a raise.
  defp arity_of(arity) when is_integer(arity), do: arity
  defp arity_of(args) when is_list(args), do: count(args, 0)
  defp arity_of(_), do: nil

  defp count([_ | tail], n), do: count(tail, n + 1)
  defp count(_, n), do: n

  defp location_value([{key, value} | _], key), do: value
  defp location_value([_ | tail], key), do: location_value(tail, key)
  defp location_value(_, _key), do: nil

  defp location_file(location) do
    case location_value(location, :file) do
      file when is_binary(file) ->
        file

      file when is_list(file) ->
        try do
          case :unicode.characters_to_binary(file) do
            bin when is_binary(bin) -> bin
            _ -> nil
          end
        rescue
          ArgumentError -> nil
        end

      _ ->
        nil
    end
  end

  defp location_line(location) do
    case location_value(location, :line) do
      line when is_integer(line) -> line
      _ -> nil
    end
  end
end
