defmodule SelfHeal.Service do
  @moduledoc """
  The service registry's Elixir side (`docs/services.md`): which configured
  service an event belongs to, and the group key that keeps two services'
  errors apart.

  The registry is the port program's `"services"` map (`port: [config:
  %{"services" => %{name => entry}}]`): each entry's name and its
  `"aliases"` (other names the same service logs under: a Kubernetes app
  label or container name, an ECS task definition, an OTP application)
  resolve to the name. `new/1` builds it from the port configuration; an
  empty map or none gives `nil`, and then nothing changes: events keep the
  service their source gave them and groups are keyed by fingerprint
  alone, as with one service.

  **Resolution** (`resolve/2`, in the collector): the first of the event's
  candidates that the registry knows, in this order: the event's
  `:service` (what its source found: logger metadata `:service` or the
  handler's `:service`; a record's `service`, `service.name` (ECS),
  `app`, `application`, `kubernetes.container_name`,
  `kubernetes.labels.app`, `container_name`, `ecs_task_definition`,
  `ecs_container_name`, ...; a browser site key's configured `:service`;
  a tailer's `:service`), then the same names in its metadata (logger
  metadata `:application`, a record's other name fields). None known: the
  event keeps its own service, which is unknown to the registry: its
  errors are grouped, ticketed and reported, and the port never fixes them.

  **Grouping**: with a registry, the fingerprint of an event is scoped to
  its service (`scope/2`: SHA-256 over the service and the fingerprint,
  the same length and alphabet), so the same error in two services is two
  groups, two tickets and two fixes, each in its own repository, and a
  recurrence of one never rolls back the other.
  """

  @typedoc "name and alias => name; nil: no registry"
  @type t :: %{optional(binary()) => binary()} | nil

  # metadata keys that name a service, in the order they are tried: the
  # logger's, then a record's name fields (jsonl.c takes the first one
  # present as the event's service and leaves the others in metadata)
  @meta_keys [:service, :application] ++
               ~w(service service.name app application kubernetes.container_name
                  kubernetes.labels.app container_name ecs_task_definition ecs_container_name
                  ecs.container.name ecs.task.definition)

  @doc """
  The registry of a port configuration (the map given as `port: [config:
  ...]`, atom or string keys), or nil when it names no service.
  """
  @spec new(map() | nil) :: t()
  def new(config) when is_map(config) do
    services = Map.get(config, "services") || Map.get(config, :services) || %{}

    registry =
      Enum.reduce(services, %{}, fn {name, entry}, acc ->
        name = to_string(name)
        entry = if is_map(entry), do: entry, else: %{}
        aliases = Map.get(entry, "aliases") || Map.get(entry, :aliases) || []

        aliases
        |> List.wrap()
        |> Enum.reduce(acc, fn a, acc -> Map.put_new(acc, to_string(a), name) end)
        |> Map.put(name, name)
      end)

    if registry == %{}, do: nil, else: registry
  end

  def new(_), do: nil

  @doc "The registered names (no aliases)."
  @spec names(t()) :: [binary()]
  def names(nil), do: []
  def names(registry), do: registry |> Map.values() |> Enum.uniq() |> Enum.sort()

  @doc """
  The service of an event: `{name, :known}` when the registry knows one of
  its candidates, `{service, :unknown}` otherwise (the event's own, may be
  nil), `{service, :none}` without a registry.
  """
  @spec resolve(SelfHeal.Event.t() | map(), t()) :: {binary() | nil, :known | :unknown | :none}
  def resolve(event, nil), do: {Map.get(event, :service), :none}

  def resolve(event, registry) do
    own = Map.get(event, :service)

    case own != nil and Map.get(registry, text(own)) do
      name when is_binary(name) ->
        {name, :known}

      _ ->
        meta = Map.get(event, :metadata)
        meta = if is_map(meta), do: meta, else: %{}

        Enum.find_value(@meta_keys, {own, :unknown}, fn key ->
          case Map.get(meta, key) do
            nil -> nil
            c -> with name when is_binary(name) <- Map.get(registry, text(c)), do: {name, :known}
          end
        end)
    end
  end

  @doc """
  Sets each event's `:service` to its resolved service (unchanged without
  a registry).
  """
  @spec route([SelfHeal.Event.t()], t()) :: [SelfHeal.Event.t()]
  def route(events, nil), do: events

  def route(events, registry) do
    Enum.map(events, fn e ->
      {service, _} = resolve(e, registry)
      if service == e.service, do: e, else: %{e | service: service}
    end)
  end

  @doc """
  `route/2` and `scope/3` over a batch: each event's service resolved and
  its fingerprint scoped to it, each distinct pair hashed once.
  """
  @spec route_scope([SelfHeal.Event.t()], t()) :: [SelfHeal.Event.t()]
  def route_scope(events, nil), do: events

  def route_scope(events, registry) do
    {routed, _memo} =
      events
      |> route(registry)
      |> Enum.map_reduce(%{}, fn e, memo ->
        key = {e.service, e.fingerprint}

        case memo do
          %{^key => scoped} ->
            {%{e | fingerprint: scoped}, memo}

          _ ->
            scoped = scope(e.fingerprint, e.service, registry)
            {%{e | fingerprint: scoped}, Map.put(memo, key, scoped)}
        end
      end)

    routed
  end

  @doc """
  The group key of a fingerprint in a service: with a registry, SHA-256
  over the service's name and the fingerprint (lower-case hex, as long as
  the fingerprint: the same alphabet wherever a fingerprint goes); the
  fingerprint unchanged without one.
  """
  @spec scope(binary(), binary() | nil, t()) :: binary()
  def scope(fingerprint, _service, nil), do: fingerprint

  def scope(fingerprint, service, _registry) when is_binary(fingerprint) do
    # the hex of as many bytes as the fingerprint has hex digits
    bytes = min(div(byte_size(fingerprint) + 1, 2), 32)
    digest = :crypto.hash(:sha256, [service || "", 0, fingerprint])
    hex = Base.encode16(binary_part(digest, 0, bytes), case: :lower)
    binary_part(hex, 0, min(byte_size(fingerprint), byte_size(hex)))
  end

  defp text(v) when is_binary(v), do: v
  defp text(v) when is_atom(v), do: Atom.to_string(v)
  defp text(v) when is_integer(v), do: Integer.to_string(v)
  defp text(_), do: ""
end
