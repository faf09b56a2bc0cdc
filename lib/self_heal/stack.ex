defmodule SelfHeal.Stack do
  @moduledoc """
  Finds a multi-line stack trace in text: which lines continue an error's
  first line, the exception type, and which line is the message. One set
  of rules for every source: `SelfHeal.Tail` joins the lines of a file
  with it as they arrive, and the endpoint (`split/1`) takes apart a
  record whose `log` or `message` holds a whole trace joined by Fluent Bit
  or written by a logger as one record.

  A line continues the error when it starts with whitespace, `at `,
  `Caused by:`, `Suppressed:`, `...`, `** `, is an Elixir frame
  `(app 1.0) lib/x.ex:1:`, a Python `Traceback (most recent call last):`
  block up to and including its exception line, `File "x.py", line N`,
  Python's chained-exception lines, a qualified Java exception line such as
  `java.lang.IllegalStateException: boom` right after a one-line event, the
  tail of an Elixir crash report such as `State: ` once a stack has
  started, or, after a Go `panic: ` / `fatal error: ` line, the goroutine
  dump (blank lines, `goroutine N [running]:`, function lines
  `main.f(...)`, `created by ...`, `exit status N`).

  The type is the exception's: `** (RuntimeError)`, a qualified Java
  `...Exception`/`...Error`, a Python traceback's exception line, Erlang's
  `** exception error:` class, a Go panic (`runtime.Error` for runtime
  errors, else `panic`; `fatal error`), or, when a stack follows, a bare
  `TypeError:`-style first line (JavaScript, Python).
  """

  @typedoc "The state of one error being joined (`start/1`, `add/2`)."
  @type t :: %{
          required(:first) => binary(),
          required(:type) => binary() | nil,
          required(:stack?) => boolean(),
          required(:python) => boolean(),
          required(:go) => boolean(),
          required(:exception) => binary() | nil,
          optional(atom()) => term()
        }

  @traceback "Traceback (most recent call last):"
  @report_tail ["Last message", "State: ", "Client #PID<", "Function: #Function<", "Args: "]

  @doc "An error starting with this line."
  @spec start(binary()) :: t()
  def start(text) do
    python? = String.starts_with?(text, @traceback)
    go_type = go_type(text)

    %{
      first: text,
      type: if(python?, do: nil, else: go_type || elixir_type(text) || java_type(text)),
      stack?: false,
      python: python?,
      go: go_type != nil,
      exception: nil
    }
  end

  @doc "Whether this line belongs to the error."
  @spec continues?(t(), binary()) :: boolean()
  def continues?(%{python: true}, _text), do: true
  def continues?(%{go: true} = p, text), do: go_line?(text) or common?(p, text)
  def continues?(p, text), do: common?(p, text)

  defp common?(p, text) do
    cond do
      blank?(text) -> p.stack?
      indented?(text) -> true
      String.starts_with?(text, ["at ", "Caused by:", "Suppressed:", "...", "** "]) -> true
      String.starts_with?(text, @traceback) -> true
      String.starts_with?(text, "During handling of the above exception") -> true
      String.starts_with?(text, "The above exception was the direct cause") -> true
      Regex.match?(~r/\AFile "[^"]*", line \d+/, text) -> true
      Regex.match?(~r/\A\([a-z_][\w]*(?: [^\s)]+)?\) \S+:\d+: /, text) -> true
      not p.stack? and java_header?(text) -> true
      p.stack? and String.starts_with?(text, @report_tail) -> true
      true -> false
    end
  end

  defp go_line?(text) do
    blank?(text) or
      String.starts_with?(text, ["goroutine ", "created by ", "[signal ", "exit status "]) or
      Regex.match?(~r/\A[\w.\/*()\[\]-]+\(.*\)\z/, text)
  end

  @doc "Adds a line that continues the error (`continues?/2`)."
  @spec add(t(), binary()) :: t()
  def add(p, text) do
    p = if blank?(text), do: p, else: %{p | stack?: true}

    cond do
      String.starts_with?(text, @traceback) ->
        %{p | python: true}

      p.python and not blank?(text) and not indented?(text) and
          not String.starts_with?(text, "File \"") ->
        # the exception line that ends a Python traceback; the last one
        # (after "During handling of the above exception") is the raised one
        %{p | python: false, exception: text, type: python_type(text) || p.type}

      p.type == nil ->
        %{p | type: elixir_type(text) || java_type(text)}

      true ->
        p
    end
  end

  @doc """
  The error's `{message, type, stack lines}` from its state and the lines
  added (in order): a bare Python traceback's message is its exception
  line; trailing blank lines are dropped.
  """
  @spec finish(t(), [binary()]) :: {binary(), binary() | nil, [binary()]}
  def finish(p, lines) do
    cont = lines |> Enum.reverse() |> Enum.drop_while(&blank?/1) |> Enum.reverse()

    {message, stack} =
      if String.starts_with?(p.first, @traceback) and p.exception != nil,
        do: {p.exception, [p.first | cont]},
        else: {p.first, cont}

    type = p.type || if(stack != [], do: bare_type(message))
    {message, type, stack}
  end

  @doc """
  A whole text holding an error and its stack trace (a record's `log`):
  `%{message: ..., type: ..., stacktrace: ...}` when its lines after the
  first continue it as a stack trace, else nil (a multi-line message
  without a trace stays as it is). Lines that do not continue the trace
  (a log line printed in the middle) stay in it.
  """
  @spec split(binary()) :: %{message: binary(), type: binary() | nil, stacktrace: binary()} | nil
  def split(text) when is_binary(text) do
    case text |> String.split("\n") |> Enum.map(&String.trim_trailing(&1, "\r")) do
      [_one] ->
        nil

      lines ->
        case Enum.drop_while(lines, &blank?/1) do
          [first, second | _] = all ->
            p = start(first)

            if continues?(p, second) do
              rest = tl(all)
              {message, type, stack} = finish(Enum.reduce(rest, p, &add(&2, &1)), rest)
              %{message: message, type: type, stacktrace: Enum.join(stack, "\n")}
            end

          _ ->
            nil
        end
    end
  end

  @doc """
  A decoded record's `{message, type, stacktrace}`: when it has no stack
  trace field and its message holds a stack trace (`split/1`), the trace
  is taken out of the message; the record's own type wins over the one
  found.
  """
  @spec from_record(binary() | nil, binary() | nil, binary() | nil) ::
          {binary() | nil, binary() | nil, binary() | nil}
  def from_record(message, type, nil = stacktrace) when is_binary(message) do
    with true <- :binary.match(message, "\n") != :nomatch,
         %{} = s <- split(message) do
      {s.message, type || s.type, s.stacktrace}
    else
      _ -> {message, type, stacktrace}
    end
  end

  def from_record(message, type, stacktrace), do: {message, type, stacktrace}

  @doc "Whether a line holds only blanks."
  @spec blank?(binary()) :: boolean()
  def blank?(text), do: String.trim(text) == ""

  defp indented?(<<c, _::binary>>) when c in [?\s, ?\t], do: true
  defp indented?(_), do: false

  # A bare exception line right after a one-line event continues it (a
  # logger prints the exception after its message); the JVM's own
  # `Exception in thread "main" ...` starts a new event.
  defp java_header?("Exception in thread " <> _), do: false
  defp java_header?(text), do: java_type(text) != nil

  defp elixir_type("** (" <> rest), do: capture(~r/\A([^\s()]+)\)/, rest)
  defp elixir_type("** exception " <> rest), do: capture(~r/\A(error|exit|throw):/, rest)
  defp elixir_type(_), do: nil

  defp java_type(text) do
    capture(
      ~r/\A(?:Exception in thread "[^"]*" )?((?:[a-zA-Z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error|Throwable))(?::|\z)/,
      text
    )
  end

  defp python_type(text), do: capture(~r/\A([A-Za-z_][\w.]*)(?::|\z)/, text)

  defp go_type("panic: runtime error: " <> _), do: "runtime.Error"
  defp go_type("panic: " <> _), do: "panic"
  defp go_type("fatal error: " <> _), do: "fatal error"
  defp go_type(_), do: nil

  # TypeError: ..., ValueError: ..., Error: ... (a first line followed by a stack)
  defp bare_type(text),
    do: capture(~r/\A(?:Uncaught )?([A-Z][\w$]*(?:Error|Exception))(?::|\z)/, text)

  # the first group of re's match in text, or nil
  defp capture(re, text) do
    case Regex.run(re, text, capture: :all_but_first) do
      [x] -> x
      _ -> nil
    end
  end
end
