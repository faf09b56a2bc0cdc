defmodule SelfHeal.Config do
  @moduledoc """
  The schema of every option of `config :self_heal, ...`, the port
  program's configuration (`port: [config: %{...}]`) included, checked when
  the application starts (`SelfHeal.Application`): a configuration with a
  problem stops the start with a message naming each one, instead of a
  half-configured SelfHeal.

  What is checked (`validate/2`):

    * unknown keys, with a suggestion for a near miss (`settel:` gives
      "did you mean :settle?"; `"tickts"` "did you mean \\"tickets\\"?");
      the same for values from a fixed set (`"antropic"`, `"slak"`);
    * types and ranges (`settle: [settle_ms: "3000"]` is "expected an
      integer >= 1", `handler: [metadata: :request_id]` "expected a list");
    * every environment variable the configuration names (`*_env` keys,
      and the variables a chosen channel, ticket backend, model provider or
      agent preset reads by default) is set: the message names the
      variable, never a value;
    * the state directory exists or can be made, and is writable; the
      port program needs one.

  The endpoint's options are checked by `SelfHeal.Endpoint.config/1`, a
  watch by `SelfHeal.Watch.add/2`. What only the port can judge (a fix
  loop's commands, the sandbox) it answers to `configure`, and
  `SelfHeal.Port` started by the application fails on a refusal
  (`:await_configure`).
  """

  @severities [:low, :medium, :high, :critical]
  @levels [:emergency, :alert, :critical, :error, :warning, :notice, :info, :debug]
  @env_name ~r/\A[A-Za-z_][A-Za-z0-9_]{0,63}\z/

  # ------------------------------------------------------------ the schema

  pos = {:int, 1, :inf}
  non_neg = {:int, 0, :inf}
  name = {:or, [:atom, :pid]}

  @elixir %{
    logger_handler: :boolean,
    handler:
      {:kw,
       %{
         target: name,
         service: {:or, [:string, :atom]},
         excluded_domains: {:or, [:atom, {:list, {:or, [:atom, {:list, :atom}]}}]},
         metadata: {:list, :atom},
         max_queue: pos
       }},
    fingerprint:
      {:kw,
       %{
         in_app_apps: {:list, :atom},
         in_app_prefixes: {:list, :string},
         max_event_bytes: {:int, 64, 16 * 1024 * 1024},
         yield_every: non_neg
       }},
    collector:
      {:kw,
       %{
         name: :atom,
         batch_size: pos,
         flush_ms: pos,
         max_groups: pos,
         max_pending: pos,
         snapshot_ms: pos,
         miner:
           {:or,
            [
              {:enum, [false]},
              {:kw, %{max_clusters: pos, max_tokens: pos, max_line: pos, yield_every: non_neg}}
            ]},
         fingerprint: :any,
         settle: :any,
         state_dir: :any,
         verify: :any,
         watch: :any,
         watch_escalate: :any,
         watch_severity: :any,
         scrub: {:list, :string},
         raw_sample: :any,
         services: :any,
         new_groups_per_minute: {:kw, %{anonymous: non_neg, authenticated: non_neg}}
       }},
    settle:
      {:kw,
       %{
         name: :atom,
         settle_ms: pos,
         max_wait_ms: pos,
         tick_ms: pos,
         shards: pos,
         max_open: pos,
         max_queue: pos,
         cluster: :boolean,
         scope: :atom,
         orchestrator: :any,
         triage: name
       }},
    triage:
      {:kw,
       %{
         name: :atom,
         min_severity: {:enum, @severities},
         critical_patterns: {:list, {:or, [:string, :regex]}},
         dedup_ms: non_neg,
         high_count: pos,
         medium_count: pos,
         max_tracked: pos,
         state_dir: :any
       }},
    triage_model:
      {:kw,
       %{
         batch_lines: pos,
         batch_ms: pos,
         timeout: pos,
         raw_lines: non_neg,
         raw_ms: pos,
         raw_per_hour: non_neg
       }},
    ticket_min_severity: {:enum, @severities},
    sink: {:kw, %{name: :atom, keep: non_neg, log: :boolean}},
    state_dir: :string,
    endpoint: :endpoint,
    tail:
      {:list,
       {:kw,
        %{
          name: :atom,
          path: {:or, [:string, :charlist]},
          paths: {:list, {:or, [:string, :charlist]}},
          service: {:or, [:string, :atom]},
          min_level: {:enum, @levels},
          from: {:enum, [:end, :beginning]},
          collector: :atom,
          poll_ms: pos,
          max_line: pos,
          multiline_timeout_ms: pos,
          read_bytes: pos,
          max_buffer: pos,
          partial_timeout_ms: pos,
          rescan_ms: pos
        }}},
    watches: {:list, :watch},
    telegram_poll:
      {:kw,
       %{
         name: :atom,
         port: name,
         timeout_s: {:int, 0, 50},
         interval_ms: pos,
         backoff_min: pos,
         backoff_max: pos
       }},
    orchestrator: {:tuple2, :atom, :any},
    port:
      {:kw,
       %{
         name: :atom,
         config: :port_config,
         executable: :string,
         env: {:list, {:tuple2, :string, :string}},
         backoff_min: pos,
         backoff_max: pos,
         stable_ms: pos,
         call_timeout: pos,
         retry_safe: {:list, :string},
         max_pending: pos,
         escalate_batch_ms: pos,
         escalate_batch_max: pos,
         verify_table: :atom,
         await_configure: {:or, [{:enum, [false]}, pos]}
       }}
  }

  # the port program's configuration (docs/port-protocol.md and the
  # documents of each part): string keys, JSON values
  int = fn min, max -> {:int, min, max} end
  channel = %{"rate_per_min" => int.(0, 100_000), "max_attempts" => int.(1, 10)}

  channel =
    Map.merge(channel, %{"timeout_ms" => int.(100, 300_000), "backoff_ms" => int.(1, 60_000)})

  llm = %{
    "provider" => {:enum, ["offline", "anthropic", "openai", "ollama"]},
    "model" => :string,
    "endpoint" => :url,
    "api_key_env" => :env_or_empty,
    "json_mode" => {:enum, ["schema", "object", "none"]},
    "timeout_ms" => int.(100, 600_000),
    "max_attempts" => int.(1, 10),
    "backoff_base_ms" => int.(0, 60_000),
    "backoff_max_ms" => int.(0, 300_000),
    "max_output_tokens" => int.(1, 1_000_000),
    "budget" =>
      {:map,
       %{
         "calls_per_hour" => :number,
         "max_input_tokens" => int.(0, 100_000_000),
         "spend_per_day_usd" => :number,
         "price_in_per_mtok" => :number,
         "price_out_per_mtok" => :number
       }}
  }

  argv = {:list, :string}
  command = {:map, %{"argv" => argv, "timeout_s" => pos}}

  sandbox =
    {:map,
     %{
       "mode" => {:enum, ["bwrap", "none"]},
       "bwrap" => :string,
       "read_only" => {:list, :string},
       "cpu_s" => int.(1, 7 * 86_400),
       "memory_mb" => int.(16, 1_073_741_824),
       "processes" => int.(8, 4_194_304),
       "file_mb" => int.(1, 1_073_741_824),
       "tmp_mb" => int.(1, 1_073_741_824),
       "open_files" => int.(64, 1_048_576),
       "uid" => int.(1, 4_294_967_294),
       "gid" => int.(1, 4_294_967_294)
     }}

  @port %{
    "state_dir" => :string,
    "port" =>
      {:map, %{"workers" => int.(1, 32), "queue" => int.(1, 65_536), "diagnostics" => :boolean}},
    "audit" => {:map, %{"key_env" => :env, "previous_key_env" => :env}},
    "llm" => {:map, llm},
    "triage_model" => {:map, llm},
    "analyze" => {:map, %{"window_ms" => int.(0, 86_400_000)}},
    "service" => {:map, %{"descriptor" => :any, "name" => :string}},
    "scrub" => {:map, %{"patterns" => {:list, :string}}},
    "tickets" =>
      {:map,
       %{
         "backend" => {:enum, ["local", "github"]},
         "max_attempts" => int.(1, 100),
         "github" =>
           {:map,
            %{
              "repo" => :string,
              "api" => :url,
              "token_env" => :env,
              "timeout_ms" => pos,
              "max_attempts" => int.(1, 100),
              "backoff_base_ms" => non_neg,
              "backoff_max_ms" => non_neg
            }}
       }},
    "notify" =>
      {:map,
       %{
         "channels" => {:list, {:enum, ["slack", "email", "telegram"]}},
         "slack" => {:map, Map.put(channel, "webhook_url_env", :env)},
         "email" =>
           {:map,
            Map.merge(channel, %{
              "url" => :string,
              "from" => :string,
              "to" => {:or, [:string, {:list, :string}]},
              "username_env" => :env,
              "password_env" => :env,
              "starttls" => {:enum, ["try", "required", "off"]}
            })},
         "telegram" =>
           {:map,
            Map.merge(channel, %{
              "api" => :url,
              "token_env" => :env,
              "chat_id" => {:or, [:integer, :string]}
            })},
         "links" => {:map, %{"base_url" => :url, "secret_env" => :env, "ttl_s" => pos}}
       }},
    "fix" =>
      {:map,
       %{
         "repo" => :string,
         "base" => :string,
         "descriptor" => :string,
         "env_allow" => {:list, :string},
         "max_changed_bytes" => pos,
         "max_changed_lines" => pos,
         "max_concurrent" => pos,
         "retries" => int.(0, 3),
         "max_output_bytes" => pos,
         "protected_paths" => {:list, :string},
         "remote" => {:map, %{"url" => :string, "token_env" => :env, "ca_file" => :string}},
         "test" => {:map, %{"argv" => argv, "paths" => {:list, :string}, "timeout_s" => pos}},
         "compile" => command,
         "sandbox" => {:or, [{:enum, ["bwrap", "none"]}, sandbox]},
         "agent" =>
           {:map,
            %{
              "preset" => {:enum, ["claude_code", "aider"]},
              "program" => :string,
              "argv" => argv,
              "model" => :string,
              "base_url" => :url,
              "key_env" => :env,
              "env" => {:map_of, :string},
              "env_allow" => {:list, :string},
              "max_retries" => non_neg,
              "max_turns" => pos,
              "network" => :boolean,
              "request_timeout_s" => pos,
              "timeout_s" => pos
            }}
       }},
    "gate" =>
      {:map,
       %{
         "consent" => {:enum, ["observe", "diagnose", "repair"]},
         "approval_ttl_s" => pos,
         "auto_deploy_severity" => {:list, {:enum, ["low", "medium", "high", "critical"]}},
         "breaker_threshold" => pos,
         "confidence_threshold" => :number,
         "kill_switch" => :boolean,
         "max_auto_deploys_per_hour" => non_neg,
         "trust" =>
           {:map,
            %{
              "enabled" => :boolean,
              "after" => pos,
              "mode" => {:enum, ["offer", "take"]},
              "max" => {:enum, ["observe", "diagnose", "repair"]},
              "floor" => {:enum, ["observe", "diagnose", "repair"]},
              "ask_after_errors" => non_neg
            }}
       }},
    "recover" =>
      {:map,
       %{
         "actions" =>
           {:list, {:map, %{"name" => :string, "argv" => argv, "timeout_s" => int.(1, 3600)}}},
         "severities" => {:list, {:enum, ["low", "medium", "high", "critical"]}},
         "watches" => :boolean,
         "mode" => {:enum, ["before", "instead"]},
         "verify_window_s" => int.(0, 86_400),
         "backoff_s" => int.(0, 86_400),
         "max_per_hour" => int.(1, 1000)
       }},
    "deploy" =>
      {:map,
       %{
         "argv" => argv,
         "branch" => :string,
         "timeout_s" => pos,
         "verify_window_s" => non_neg,
         "pull_request" =>
           {:map,
            %{
              "merge" => :boolean,
              "checks_timeout_s" => pos,
              "poll_ms" => pos,
              "merge_method" => {:enum, ["merge", "squash", "rebase"]}
            }},
         "canary" =>
           {:map,
            %{
              "argv" => argv,
              "window_s" => pos,
              "weight" => :number,
              "max_error_ratio" => :number,
              "min_errors" => pos
            }},
         "health" =>
           {:map, %{"argv" => argv, "url" => :url, "interval_ms" => pos, "timeout_s" => pos}}
       }}
  }

  # the service registry (docs/services.md): per service, sections merged
  # over the global ones of the same name
  service_entry =
    @port
    |> Map.take(["fix", "deploy", "gate", "notify", "recover", "tickets"])
    |> Map.merge(%{
      # the model is the global one; a service may hold its own budget
      "llm" => {:map, Map.take(llm, ["budget"])},
      "aliases" => {:list, :string},
      "owners" => {:list, :string},
      "descriptor" => :any
    })

  @port Map.put(@port, "services", {:map_of, {:map, service_entry}})

  # environment variables read by default once a part is chosen
  @default_envs [
    {["notify", "channels"], "slack", ["notify", "slack", "webhook_url_env"],
     "SLACK_WEBHOOK_URL"},
    {["notify", "channels"], "telegram", ["notify", "telegram", "token_env"],
     "TELEGRAM_BOT_TOKEN"},
    {["tickets", "backend"], "github", ["tickets", "github", "token_env"], "GITHUB_TOKEN"},
    {["llm", "provider"], "anthropic", ["llm", "api_key_env"], "ANTHROPIC_API_KEY"},
    {["llm", "provider"], "openai", ["llm", "api_key_env"], "OPENAI_API_KEY"},
    {["fix", "agent", "preset"], "claude_code", ["fix", "agent", "key_env"], "ANTHROPIC_API_KEY"},
    {["fix", "agent", "preset"], "aider", ["fix", "agent", "key_env"], "OPENAI_API_KEY"}
  ]

  @doc "The keys `config :self_heal, ...` accepts."
  @spec keys() :: [atom()]
  def keys, do: Map.keys(@elixir)

  @doc """
  Checks an application environment (default: `:self_heal`'s) against the
  schema; `env` is the OS environment the `*_env` names are looked up in.
  `:ok`, or `{:error, problems}` (one message each).
  """
  @spec validate(keyword(), %{optional(String.t()) => String.t()}) :: :ok | {:error, [String.t()]}
  def validate(config \\ Application.get_all_env(:self_heal), env \\ System.get_env()) do
    problems =
      check({:kw, @elixir}, config, [], env) ++
        state_dir_problems(config) ++ env_problems(Keyword.get(config, :port), env)

    if problems == [], do: :ok, else: {:error, problems}
  end

  @doc "The problems as one message, for a log or an exception."
  @spec format([String.t()]) :: String.t()
  def format(problems) do
    "SelfHeal cannot start: its configuration has #{length(problems)} problem(s):\n" <>
      Enum.map_join(problems, "\n", &("  * " <> &1))
  end

  # ------------------------------------------------------------ checking

  # A list of problems for `value` at `path` (a list of keys).
  defp check(:any, _value, _path, _env), do: []

  defp check({:kw, schema}, value, path, env) do
    if Keyword.keyword?(value),
      do: fields(schema, value, path, env, false),
      else: [expected(path, value, "a keyword list")]
  end

  defp check({:map, schema}, value, path, env) do
    if is_map(value),
      do: fields(schema, value, path, env, true),
      else: [expected(path, value, "a map")]
  end

  defp check({:map_of, type}, value, path, env) do
    if is_map(value),
      do:
        Enum.flat_map(value, fn {k, v} -> check(type, json(v), path ++ [to_string(k)], env) end),
      else: [expected(path, value, "a map")]
  end

  defp check({:list, type}, value, path, env) do
    if is_list(value) and not List.improper?(value) do
      value
      |> Enum.with_index()
      |> Enum.flat_map(fn {v, i} -> check(type, json(v), path ++ [i], env) end)
    else
      [expected(path, value, "a list" <> example(type))]
    end
  end

  defp check({:enum, values}, value, path, _env) do
    if value in values do
      []
    else
      [
        "#{where(path)}: #{inspect(value)} is not one of #{Enum.map_join(values, ", ", &inspect/1)}" <>
          suggestion(value, values)
      ]
    end
  end

  defp check({:or, types}, value, path, env) do
    results = Enum.map(types, &check(&1, value, path, env))

    cond do
      Enum.any?(results, &(&1 == [])) -> []
      # an enum among the choices gives the near-miss message
      match?([{:enum, _} | _], types) and is_binary(value) -> hd(results)
      true -> [expected(path, value, Enum.map_join(types, " or ", &describe/1))]
    end
  end

  defp check({:tuple2, a, b}, value, path, env) do
    case value do
      {x, y} -> check(a, x, path, env) ++ check(b, y, path, env)
      _ -> [expected(path, value, "a {_, _} tuple")]
    end
  end

  defp check({:int, min, max}, value, path, _env) do
    if is_integer(value) and value >= min and (max == :inf or value <= max),
      do: [],
      else: [expected(path, value, describe({:int, min, max}))]
  end

  defp check(:endpoint, value, path, _env) do
    checked(value, path, fn ->
      # the options SelfHeal.Endpoint.config/1 fills in, less its own state
      known =
        Map.keys(SelfHeal.Endpoint.config([])) --
          [:listen_socket, :rate_table, :connections, :site_services]

      case for {key, _} <- value, key not in known, do: unknown(path, key, known) do
        [] ->
          SelfHeal.Endpoint.config(value)
          []

        unknown ->
          unknown
      end
    end)
  end

  defp check(:watch, value, path, _env) do
    checked(value, path, fn ->
      case SelfHeal.Watch.add(SelfHeal.Watch.new(), Keyword.delete(value, :severity)) do
        {:ok, _} -> check({:enum, @severities}, Keyword.get(value, :severity, :high), path, [])
        {:error, reason} -> ["#{where(path)}: #{inspect(reason)}"]
      end
    end)
  end

  defp check(:port_config, value, path, env), do: check({:map, @port}, json(value), path, env)

  defp check(:env, value, path, _env) do
    if is_binary(value) and value =~ @env_name,
      do: [],
      else: ["#{where(path)}: expected the name of an environment variable"]
  end

  defp check(:env_or_empty, "", _path, _env), do: []
  defp check(:env_or_empty, value, path, env), do: check(:env, value, path, env)

  defp check(type, value, path, _env) do
    if simple?(type, value), do: [], else: [expected(path, value, describe(type))]
  end

  # options a module checks itself (raising ArgumentError)
  defp checked(value, path, check) do
    if Keyword.keyword?(value), do: check.(), else: [expected(path, value, "a keyword list")]
  rescue
    e in ArgumentError -> ["#{where(path)}: #{Exception.message(e)}"]
  end

  # keyword list or map fields against their schema; the port's values as JSON
  defp fields(schema, value, path, env, json?) do
    Enum.flat_map(value, fn {key, v} ->
      {key, v} = if json?, do: {to_string(key), json(v)}, else: {key, v}

      case Map.fetch(schema, key) do
        {:ok, type} -> check(type, v, path ++ [key], env)
        :error -> [unknown(path, key, Map.keys(schema))]
      end
    end)
  end

  defp simple?(:boolean, v), do: is_boolean(v)
  defp simple?(:atom, v), do: is_atom(v) and not is_boolean(v) and v != nil
  defp simple?(:pid, v), do: is_pid(v)
  defp simple?(:string, v), do: is_binary(v)
  defp simple?(:charlist, v), do: is_list(v) and List.ascii_printable?(v)
  defp simple?(:integer, v), do: is_integer(v)
  defp simple?(:number, v), do: is_number(v) and v >= 0
  defp simple?(:regex, v), do: is_struct(v, Regex)
  defp simple?(:url, v), do: is_binary(v) and v =~ ~r{\Ahttps?://[^\s]+\z}

  defp describe({:int, min, :inf}), do: "an integer >= #{min}"
  defp describe({:int, min, max}), do: "an integer from #{min} to #{max}"
  defp describe({:list, _}), do: "a list"
  defp describe({:kw, _}), do: "a keyword list"
  defp describe({:map, _}), do: "a map"
  defp describe({:enum, values}), do: Enum.map_join(values, " or ", &inspect/1)
  defp describe({:or, types}), do: Enum.map_join(types, " or ", &describe/1)
  defp describe(:boolean), do: "true or false"
  defp describe(:atom), do: "an atom"
  defp describe(:pid), do: "a pid"
  defp describe(:string), do: "a string"
  defp describe(:charlist), do: "a charlist"
  defp describe(:integer), do: "an integer"
  defp describe(:number), do: "a number >= 0"
  defp describe(:regex), do: "a regex"
  defp describe(:url), do: "an http:// or https:// URL"
  defp describe(other), do: inspect(other)

  defp example(:atom), do: " of atoms (e.g. [:request_id])"
  defp example(:string), do: " of strings"
  defp example(_), do: ""

  # the port's configuration is JSON: atom keys and values as strings
  defp json(value) when is_atom(value) and not is_boolean(value) and value != nil,
    do: Atom.to_string(value)

  defp json(value), do: value

  defp expected(path, value, what) do
    # never show a string that may be a secret put in the wrong place
    shown = if is_binary(value), do: "a string", else: inspect(value, limit: 5)
    "#{where(path)}: expected #{what}, got #{shown}"
  end

  defp unknown(path, key, known) do
    "#{where(path ++ [key])}: unknown key" <> suggestion(key, known)
  end

  defp suggestion(value, choices) when is_atom(value) or is_binary(value) do
    text = to_string(value)

    best =
      choices
      |> Enum.filter(&(is_atom(&1) or is_binary(&1)))
      |> Enum.map(&{String.jaro_distance(text, to_string(&1)), &1})
      |> Enum.max(fn -> {0, nil} end)

    case best do
      {score, choice} when score >= 0.75 -> " (did you mean #{inspect(choice)}?)"
      _ -> ""
    end
  end

  defp suggestion(_value, _choices), do: ""

  # "config :self_heal, handler: [metadata: ...]" as "handler.metadata",
  # the port's configuration as port.config.notify.channels[1]
  defp where([]), do: "config :self_heal"

  defp where([top | rest]) do
    Enum.reduce(rest, "#{top}", fn
      i, acc when is_integer(i) -> "#{acc}[#{i}]"
      key, acc -> "#{acc}.#{key}"
    end)
  end

  # ------------------------------------------------------------ the world

  defp state_dir_problems(config) do
    dir = Keyword.get(config, :state_dir)
    port = Keyword.get(config, :port)
    port_dir = port_value(port, ["state_dir"])

    cond do
      is_binary(dir) ->
        writable(dir, "state_dir")

      is_binary(port_dir) ->
        writable(port_dir, "port.config.state_dir")

      port != nil and not Keyword.has_key?(config, :orchestrator) ->
        [
          "state_dir: the port program (config :self_heal, port: [...]) needs a state_dir " <>
            "(tickets, jobs, the audit log)"
        ]

      true ->
        []
    end
  end

  defp writable(dir, key) do
    probe = Path.join(dir, ".self_heal_write_check")

    # made here as the port would make it: private (docs/state.md)
    made =
      if File.dir?(dir), do: :ok, else: with(:ok <- File.mkdir_p(dir), do: File.chmod(dir, 0o700))

    with :ok <- made,
         :ok <- File.write(probe, "") do
      File.rm(probe)
      []
    else
      {:error, reason} ->
        ["#{key}: #{dir} is not a writable directory (#{:file.format_error(reason)})"]
    end
  end

  defp env_problems(port, env) do
    if Keyword.keyword?(port || []) and is_map(Keyword.get(port || [], :config)) do
      config = json_tree(Keyword.get(port, :config))

      named =
        for {path, name} <- env_keys(config, []), name != "", name =~ @env_name do
          {path, name}
        end

      defaults =
        for {choice_path, choice, key_path, default} <- @default_envs,
            choice in List.wrap(dig(config, choice_path)),
            dig(config, key_path) == nil do
          {key_path, default}
        end

      for {path, name} <- named ++ defaults, not Map.has_key?(env, name) do
        "port.config.#{Enum.join(path, ".")}: the environment variable #{name} is not set"
      end
    else
      []
    end
  end

  defp port_value(port, path) do
    with true <- is_list(port) and Keyword.keyword?(port),
         config when is_map(config) <- Keyword.get(port, :config),
         do: dig(json_tree(config), path),
         else: (_ -> nil)
  end

  defp dig(value, []), do: value
  defp dig(map, [key | rest]) when is_map(map), do: dig(Map.get(map, key), rest)
  defp dig(_value, _path), do: nil

  # every "*_env" key with a string value, with its path
  defp env_keys(map, path) when is_map(map) do
    Enum.flat_map(map, fn
      {key, value} when is_binary(value) ->
        if String.ends_with?(key, "_env"), do: [{path ++ [key], value}], else: []

      {key, value} when is_map(value) ->
        env_keys(value, path ++ [key])

      _ ->
        []
    end)
  end

  defp json_tree(map) when is_map(map),
    do: Map.new(map, fn {k, v} -> {to_string(k), json_tree(v)} end)

  defp json_tree(list) when is_list(list), do: Enum.map(list, &json_tree/1)
  defp json_tree(value), do: json(value)
end
