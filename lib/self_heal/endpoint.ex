defmodule SelfHeal.Endpoint do
  @moduledoc """
  The HTTP/1.1 capture listener: events from Fluent Bit, browsers and SDKs
  over HTTP on its own address and port (`docs/endpoint.md`).

    * `POST /ingest` - Fluent Bit's `http` output: `Format json_lines` (one
      JSON object a line), `Format json` (a JSON array of records) or
      `Format json_stream`, optionally `Content-Encoding: gzip`. Bearer
      token. A malformed line is counted and skipped while the others are
      accepted (a 4xx would make Fluent Bit drop the whole chunk).
    * `POST /capture` - events from browsers and SDKs: one event object or
      `{"events": [...]}`, as `application/json` or `text/plain`
      (`navigator.sendBeacon`). The site's public key in `?key=` or the
      `X-SelfHeal-Key` header (browsers), or a bearer token (servers).
      `OPTIONS /capture` answers CORS preflights for the key's origins.
    * `GET /healthz` - 200.
    * `/self_heal/...` and `GET /metrics`, with `:operator_token_env` set:
      the operators' dashboard and the Prometheus metrics
      (`SelfHeal.Endpoint.Dashboard`).
    * `GET /approve?t=...`, `GET /skip?t=...` and `POST` on both, with
      `:approvals` set: the signed Approve / Skip links of notifications
      (`SelfHeal.Endpoint.Approvals`); `GET` shows the fix and a button,
      only `POST` acts.

  Answers: 202 with `{"accepted": n, "malformed": m}`; 400 malformed HTTP
  (a control byte in a header, a truncated gzip body) or a body with no
  valid event; 401 unknown credentials; 403 an origin the key does not
  allow; 413 a body over `:max_body`, a decompressed body over
  `:max_decompressed` or more records than `:max_events` (lower limits for
  site keys); 415 an unsupported encoding or msgpack; 429 with
  `Retry-After` over the rate limit; 503 with `Retry-After` while the
  collector is full (`SelfHeal.Collector.ingest/3`) or the connections are.

  The server is a small one on `:gen_tcp` (raw packets parsed with
  `:erlang.decode_packet/3`): a pool of acceptors, one process per
  connection under a `DynamicSupervisor` bounded by `:max_connections`,
  keep-alive, `nodelay`. Every limit is an option:

    * `:name` - an atom (default `SelfHeal.Endpoint`); the endpoint's
      processes are registered under names derived from it
    * `:ip` (default `{127, 0, 0, 1}`), `:port` (default 4040; 0 picks a
      free port, read it with `port/1`), `:backlog` (1024)
    * `:tokens` - bearer tokens of servers and Fluent Bit
    * `:site_keys` - `%{public_key => %{origins: ["https://shop.example"]}}`
      for browsers (`"*"` allows any origin); `service: "shop"` in a
      key's map puts that service on its events, whatever they claim
      (`docs/services.md`)
    * `:collector` - registered name of the `SelfHeal.Collector` (default
      `SelfHeal.Collector`)
    * `:approvals` - registered name of the `SelfHeal.Port` that approve /
      skip links are relayed to (default nil: no `/approve` or `/skip`
      route; the application sets it when it runs the port program)
    * `:max_body` (4 MiB), `:max_decompressed` (8 MiB), `:max_events`
      (100,000 records a request, counted before any is decoded)
    * `:max_capture_body` (256 KiB, on the wire and inflated) and
      `:max_capture_events` (1,000): the limits of `/capture` with a site
      key (a public key; with a bearer token the full limits apply)
    * `:admit_slice` (1,000 records): a body is decoded and handed to the
      collector a slice at a time; `:admit_wait` (5 s) how long a slice
      after the first waits for room in the collector before 503;
      `:max_resumes` (1,000) resume points of chunks taken in part
      (`SelfHeal.Endpoint.Resume`)
    * `:rate_limit` - `{requests, per_ms}` per source (client address,
      IPv6 by /64), default `{1000, 1000}`; `nil` for none;
      `:max_sources` (100,000) rows of rate state at most
    * `:max_connections` (1024), `:max_connections_per_source` (64),
      `:reserved_connections` (128, at most a quarter of the connections:
      kept for clients with a bearer token), `:acceptors` (4)
    * `:pressure_idle_timeout` (1 s): with three quarters of the
      connections open, a connection without a bearer token waits at most
      this long for a request or its head, and is closed after each answer
    * `:idle_timeout` (60 s, a keep-alive connection waiting for its next
      request), `:header_timeout` (10 s for the whole request head, and for
      a new connection's first byte), `:body_timeout` (30 s for the whole
      body)
    * `:max_request_line` (8 KiB), `:max_header_bytes` (16 KiB, the whole
      head), `:max_headers` (64)
    * `:cors_max_age` (86,400 s)
    * `:operator_token_env` - the name of the environment variable holding
      the operators' token: with it, the dashboard (`/self_heal`) and
      `GET /metrics` (`SelfHeal.Endpoint.Dashboard`, `docs/dashboard.md`);
      default nil: neither route. A variable that is unset or empty at start
      keeps both closed (503)
    * `:settle` - registered name of the `SelfHeal.Settle` stage the
      dashboard and the metrics read (default `SelfHeal.Settle`)
    * `:overload_wait` (100 ms): while the collector's queue is over half
      full, a request waits up to this long for it to drain before its body
      is decoded; a queue still nearly full then gives 503

  Credentials are compared in constant time: SHA-256 of the presented and
  the configured values, compared with `:crypto.hash_equals/2` against
  every configured one.
  """
  use Supervisor

  alias SelfHeal.Endpoint.{Acceptor, Conn, Listener}

  @defaults [
    name: __MODULE__,
    ip: {127, 0, 0, 1},
    port: 4040,
    backlog: 1024,
    tokens: [],
    site_keys: %{},
    collector: SelfHeal.Collector,
    approvals: nil,
    max_body: 4_194_304,
    max_decompressed: 8_388_608,
    max_events: 100_000,
    max_capture_body: 262_144,
    max_capture_events: 1000,
    admit_slice: 1000,
    admit_wait: 5000,
    max_resumes: 1000,
    rate_limit: {1000, 1000},
    max_sources: 100_000,
    max_connections: 1024,
    max_connections_per_source: 64,
    reserved_connections: 128,
    acceptors: 4,
    idle_timeout: 60_000,
    pressure_idle_timeout: 1000,
    header_timeout: 10_000,
    body_timeout: 30_000,
    max_request_line: 8192,
    max_header_bytes: 16_384,
    max_headers: 64,
    cors_max_age: 86_400,
    overload_wait: 100,
    operator_token_env: nil,
    settle: SelfHeal.Settle
  ]

  @typedoc "The endpoint's configuration, as the connection processes see it."
  @type config :: %{
          name: atom(),
          ip: :inet.ip_address(),
          port: :inet.port_number(),
          backlog: pos_integer(),
          tokens: [binary()],
          site_keys: [{binary(), :any | [binary()]}],
          site_services: [{binary(), binary()}],
          collector: atom(),
          approvals: atom() | nil,
          max_body: pos_integer(),
          max_decompressed: pos_integer(),
          max_events: pos_integer(),
          max_capture_body: pos_integer(),
          max_capture_events: pos_integer(),
          admit_slice: pos_integer(),
          admit_wait: non_neg_integer(),
          max_resumes: pos_integer(),
          rate_limit: {pos_integer(), pos_integer()} | nil,
          max_sources: pos_integer(),
          max_connections: pos_integer(),
          max_connections_per_source: pos_integer(),
          reserved_connections: non_neg_integer(),
          acceptors: pos_integer(),
          idle_timeout: timeout(),
          pressure_idle_timeout: pos_integer(),
          header_timeout: timeout(),
          body_timeout: timeout(),
          max_request_line: pos_integer(),
          max_header_bytes: pos_integer(),
          max_headers: pos_integer(),
          cors_max_age: non_neg_integer(),
          overload_wait: non_neg_integer(),
          operator: SelfHeal.Endpoint.Dashboard.operator(),
          settle: atom(),
          listen_socket: :gen_tcp.socket() | nil,
          rate_table: :ets.tid() | nil,
          resume_table: :ets.tid() | nil,
          client_table: :ets.tid() | nil,
          counters: :atomics.atomics_ref() | nil,
          connections: atom()
        }

  @doc "A child specification; `opts` as in the module documentation."
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    }
  end

  @doc "Starts the endpoint (listener, acceptors, connection supervisor)."
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts \\ []) do
    config = config(opts)
    Supervisor.start_link(__MODULE__, config, name: config.name)
  end

  @doc "The TCP port the endpoint listens on (useful with `port: 0`)."
  @spec port(atom()) :: :inet.port_number()
  def port(name \\ __MODULE__) when is_atom(name) do
    GenServer.call(Listener.name(name), :port)
  end

  @doc """
  Validated configuration from options (raises `ArgumentError` on a bad
  option). Credentials are kept only as SHA-256 digests.
  """
  @spec config(keyword()) :: config()
  def config(opts) when is_list(opts) do
    # a repeated option: the last one wins
    opts = Keyword.new(opts)

    case Keyword.keys(opts) -- Keyword.keys(@defaults) do
      [] -> :ok
      unknown -> raise ArgumentError, "unknown SelfHeal.Endpoint options: #{inspect(unknown)}"
    end

    opts = Keyword.merge(@defaults, opts)
    name = Keyword.fetch!(opts, :name)
    unless is_atom(name), do: bad!(:name, name, "an atom")

    %{
      name: name,
      ip: check(opts, :ip, &ip?/1, "an IPv4 or IPv6 address tuple"),
      port: check(opts, :port, &(is_integer(&1) and &1 in 0..65_535), "0..65535"),
      backlog: pos!(opts, :backlog),
      tokens: tokens!(Keyword.fetch!(opts, :tokens)),
      site_keys: site_keys!(Keyword.fetch!(opts, :site_keys)),
      site_services: site_services!(Keyword.fetch!(opts, :site_keys)),
      collector: check(opts, :collector, &is_atom/1, "a registered name (atom)"),
      approvals: check(opts, :approvals, &is_atom/1, "a registered name (atom) or nil"),
      max_body: pos!(opts, :max_body),
      max_decompressed: pos!(opts, :max_decompressed),
      max_events: pos!(opts, :max_events),
      max_capture_body: pos!(opts, :max_capture_body),
      max_capture_events: pos!(opts, :max_capture_events),
      admit_slice: pos!(opts, :admit_slice),
      admit_wait: check(opts, :admit_wait, &(is_integer(&1) and &1 >= 0), ">= 0"),
      max_resumes: pos!(opts, :max_resumes),
      rate_limit: check(opts, :rate_limit, &rate?/1, "{requests, per_ms} or nil"),
      max_sources: pos!(opts, :max_sources),
      max_connections: pos!(opts, :max_connections),
      max_connections_per_source: pos!(opts, :max_connections_per_source),
      reserved_connections:
        check(opts, :reserved_connections, &(is_integer(&1) and &1 >= 0), ">= 0"),
      acceptors: pos!(opts, :acceptors),
      idle_timeout: pos!(opts, :idle_timeout),
      pressure_idle_timeout: pos!(opts, :pressure_idle_timeout),
      header_timeout: pos!(opts, :header_timeout),
      body_timeout: pos!(opts, :body_timeout),
      max_request_line: pos!(opts, :max_request_line),
      max_header_bytes: pos!(opts, :max_header_bytes),
      max_headers: pos!(opts, :max_headers),
      cors_max_age: check(opts, :cors_max_age, &(is_integer(&1) and &1 >= 0), ">= 0"),
      overload_wait: check(opts, :overload_wait, &(is_integer(&1) and &1 >= 0), ">= 0"),
      operator: operator!(opts),
      settle: check(opts, :settle, &is_atom/1, "a registered name (atom)"),
      listen_socket: nil,
      rate_table: nil,
      resume_table: nil,
      client_table: nil,
      counters: nil,
      connections: Module.concat(name, Connections)
    }
  end

  @impl true
  def init(config) do
    children = [
      {Listener, config},
      {DynamicSupervisor,
       name: config.connections, strategy: :one_for_one, max_children: config.max_connections},
      %{
        id: :acceptors,
        type: :supervisor,
        start:
          {Supervisor, :start_link,
           [
             for(i <- 1..config.acceptors, do: Supervisor.child_spec({Acceptor, config}, id: i)),
             [strategy: :one_for_one, max_restarts: 100, max_seconds: 1]
           ]}
      }
    ]

    # the listener's socket and tables are shared by everything after it
    Supervisor.init(children, strategy: :rest_for_one)
  end

  @doc false
  @spec connection_spec(config()) :: Supervisor.child_spec()
  def connection_spec(config) do
    %{id: Conn, start: {Conn, :start_link, [config]}, restart: :temporary}
  end

  defp check(opts, key, valid?, expected) do
    value = Keyword.fetch!(opts, key)
    if valid?.(value), do: value, else: bad!(key, value, expected)
  end

  defp pos!(opts, key), do: check(opts, key, &(is_integer(&1) and &1 > 0), "a positive integer")

  defp bad!(key, value, expected) do
    raise ArgumentError,
          "SelfHeal.Endpoint option #{key}: expected #{expected}, got: #{inspect(value)}"
  end

  defp ip?(ip), do: is_tuple(ip) and is_list(:inet.ntoa(ip))

  defp rate?(nil), do: true
  defp rate?({n, ms}), do: is_integer(n) and n > 0 and is_integer(ms) and ms > 0
  defp rate?(_), do: false

  # the operator's token (dashboard, /metrics) from the variable named
  defp operator!(opts) do
    case Keyword.fetch!(opts, :operator_token_env) do
      nil ->
        nil

      name when is_binary(name) and name != "" ->
        operator = SelfHeal.Endpoint.Dashboard.operator(name, System.get_env(name))

        if is_map(operator) and operator.digest in tokens!(Keyword.fetch!(opts, :tokens)),
          do: bad!(:operator_token_env, name, "a token that is not also an ingest token")

        operator

      other ->
        bad!(:operator_token_env, other, "the name of an environment variable")
    end
  end

  defp tokens!(tokens) when is_list(tokens) do
    Enum.map(tokens, fn
      token when is_binary(token) and byte_size(token) > 0 -> digest(token)
      other -> bad!(:tokens, other, "non-empty binaries")
    end)
  end

  defp tokens!(other), do: bad!(:tokens, other, "a list of binaries")

  defp site_keys!(keys) when is_map(keys) do
    Enum.map(keys, fn
      {key, %{origins: origins}}
      when is_binary(key) and byte_size(key) > 0 and is_list(origins) ->
        {digest(key), origins!(origins)}

      other ->
        bad!(:site_keys, other, "public key => %{origins: [origin]}")
    end)
  end

  defp site_keys!(other), do: bad!(:site_keys, other, "a map")

  # the service a site key's events belong to, when its map names one
  defp site_services!(keys) do
    for {key, site} <- keys, Map.has_key?(site, :service) do
      case site.service do
        s when is_binary(s) and s != "" -> {digest(key), s}
        s when is_atom(s) and s not in [nil, true, false] -> {digest(key), Atom.to_string(s)}
        other -> bad!(:site_keys, other, "a service name (binary)")
      end
    end
  end

  defp origins!(origins) do
    if "*" in origins do
      :any
    else
      Enum.map(origins, fn
        origin when is_binary(origin) -> origin |> String.trim_trailing("/") |> String.downcase()
        other -> bad!(:site_keys, other, "origins as binaries")
      end)
    end
  end

  @doc false
  @spec digest(binary()) :: binary()
  def digest(value), do: :crypto.hash(:sha256, value)
end
