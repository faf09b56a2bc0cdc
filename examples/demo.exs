# make demo: the whole loop on a real application, offline, no API key.
#
# 1. examples/shop (a small Elixir web shop on OTP's httpd, with a real bug
#    and its own tests) is copied into a fresh git repository and deployed
#    (examples/shop/bin/deploy starts it in the background); it reports its
#    errors to SelfHeal's HTTP endpoint as any service would.
# 2. Real HTTP traffic hits the bug (the average price of an empty cart
#    divides by zero), then the inventory service the shop depends on goes
#    down: one outage, several downstream errors (a cascade).
# 3. SelfHeal settles the groups, classifies them, groups them by root cause
#    (the offline analyzer), opens tickets, and for each ticket runs the fix
#    loop: a plain checkout (no git), a prompt, the agent
#    (examples/agent/stand_in_agent, a stand-in that applies a prepared
#    patch: it is not a real coding agent) inside a bubblewrap sandbox, the
#    change captured and committed by SelfHeal, validation in the sandbox
#    too (compile, the tests, the base's tests unmodified, a new test that
#    fails on the base commit with the production error), a dry-run patch
#    and report, the gate, the deploy (a fix whose base is no longer the
#    deploy branch's tip is replayed on it and validated again), and a
#    verification window.
# 4. Every deploy goes to a canary first (examples/shop/bin/canary: a
#    second instance whose errors say deploy_track "canary"; traffic hits
#    both). The empty-cart fix holds there, is promoted and deployed. The
#    inventory "fix" (retries) does not: the inventory is still down, the
#    error recurs on the canary, and the fix is reverted there; the stable
#    instance never runs it.
#
# Run with `mix run --no-start examples/demo.exs` (what `make demo` does).

defmodule Demo do
  @root Path.expand("..", __DIR__)

  def root, do: @root

  def say(text), do: IO.puts(text)

  def step(label, text), do: IO.puts(String.pad_trailing("[#{label}]", 12) <> " " <> text)

  def free_port do
    {:ok, s} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(s)
    :gen_tcp.close(s)
    port
  end

  def git!(dir, args) do
    {out, 0} =
      System.cmd(
        "git",
        ["-c", "user.name=Shop Dev", "-c", "user.email=dev@shop.example" | args],
        cd: dir,
        stderr_to_stdout: true
      )

    out
  end

  # examples/shop as a fresh repository: the "deployed" application.
  def make_repo(dir) do
    repo = Path.join(dir, "shop")
    File.mkdir_p!(repo)

    for entry <- File.ls!(Path.join(@root, "examples/shop")),
        entry not in ["_build", "deps", "tmp"] do
      File.cp_r!(Path.join([@root, "examples/shop", entry]), Path.join(repo, entry))
    end

    git!(repo, ["init", "-q", "-b", "main"])
    git!(repo, ["add", "-A"])
    git!(repo, ["commit", "-q", "-m", "shop 0.1.0"])
    repo
  end

  def get(url) do
    case :httpc.request(:get, {String.to_charlist(url), []}, [timeout: 5_000],
           body_format: :binary
         ) do
      {:ok, {{_, status, _}, _, body}} -> {status, body}
      {:error, reason} -> {:error, reason}
    end
  end
end

defmodule Demo.Agent do
  @moduledoc false
  # Which agent makes the demo's fixes. With Claude Code installed (`make
  # agents` sets SELF_HEAL_CLAUDE), the real CLI runs in the sandbox and only
  # its model is replaced: examples/agent/model_stand_in.py replays a
  # script made from the prepared patches in examples/shop_fixes (read the
  # prompt, read each file, edit it hunk by hunk with the CLI's own tools).
  # Without it, the stand-in script applies the same patches.

  @fixes [
    {"pricing", "bad argument in arithmetic expression", "empty_cart.patch",
     "Fixed: an empty cart averages 0.0, with a regression test."},
    {"inventory", "inventory service (unavailable|answered)", "inventory_retry.patch",
     "Added retries of the inventory request, with a test."}
  ]

  def claude do
    path = System.get_env("SELF_HEAL_CLAUDE")
    if is_binary(path) and path != "" and File.regular?(path), do: path
  end

  def version(claude) do
    case System.cmd(claude, ["--version"], stderr_to_stdout: true) do
      {out, 0} -> out |> String.split() |> List.first()
      _ -> "?"
    end
  end

  # The stand-in model serving the demo's script: its base URL.
  def start_model(dir) do
    script = Path.join(dir, "model_script.json")
    File.write!(script, SelfHeal.JSON.encode!(script()))
    python = System.find_executable("python3")

    port =
      Port.open({:spawn_executable, python}, [
        :binary,
        {:line, 1000},
        args: [
          Path.join(Demo.root(), "examples/agent/model_stand_in.py"),
          "--script",
          script,
          "--log",
          Path.join(dir, "model_requests.jsonl")
        ]
      ])

    receive do
      {^port, {:data, {:eol, "PORT " <> n}}} -> "http://127.0.0.1:#{n}"
    after
      10_000 -> raise "the model stand-in did not start"
    end
  end

  defp script do
    %{
      "opening" => [%{"tool" => "Read", "input" => %{"file_path" => "{prompt_file}"}}],
      "conversations" =>
        for {name, match, patch, last} <- @fixes do
          %{"name" => name, "match" => match, "turns" => turns(patch) ++ [%{"text" => last}]}
        end
    }
  end

  # Read then Edit, file by file, one Edit per hunk of the patch.
  defp turns(patch) do
    Path.join(Demo.root(), "examples/shop_fixes/#{patch}")
    |> File.read!()
    |> hunks()
    |> Enum.group_by(&elem(&1, 0), &Tuple.delete_at(&1, 0))
    |> Enum.flat_map(fn {file, edits} ->
      path = "{cwd}/" <> file

      [%{"tool" => "Read", "input" => %{"file_path" => path}}] ++
        for {old, new} <- edits do
          %{
            "tool" => "Edit",
            "input" => %{"file_path" => path, "old_string" => old, "new_string" => new}
          }
        end
    end)
  end

  # {file, old text, new text} of each hunk of a unified diff.
  defp hunks(diff) do
    diff
    |> String.split("\n")
    |> Enum.reduce({nil, []}, fn
      "+++ b/" <> file, {_, acc} ->
        {file, acc}

      # A file header ends the hunk before it.
      "diff " <> _, {_, acc} ->
        {nil, acc}

      "--- " <> _, {_, acc} ->
        {nil, acc}

      "@@" <> _, {file, acc} ->
        {file, [{file, [], []} | acc]}

      line, {file, [{f, old, new} | rest]} when file != nil and line != "" ->
        case line do
          "+" <> text -> {file, [{f, old, [text | new]} | rest]}
          "-" <> text -> {file, [{f, [text | old], new} | rest]}
          " " <> text -> {file, [{f, [text | old], [text | new]} | rest]}
          _ -> {file, [{f, old, new} | rest]}
        end

      "", {file, [{f, old, new} | rest]} when file != nil ->
        {file, [{f, ["" | old], ["" | new]} | rest]}

      _, state ->
        state
    end)
    |> elem(1)
    |> Enum.reverse()
    |> Enum.map(fn {f, old, new} ->
      {f, old |> Enum.reverse() |> trim_tail() |> Enum.join("\n"),
       new |> Enum.reverse() |> trim_tail() |> Enum.join("\n")}
    end)
  end

  defp trim_tail(lines),
    do: lines |> Enum.reverse() |> Enum.drop_while(&(&1 == "")) |> Enum.reverse()
end

defmodule Demo.Inventory do
  @moduledoc false
  # The inventory service the shop depends on: GET /stock/ID -> {"item", "stock"}.

  def start(port) do
    {:ok, listen} =
      :gen_tcp.listen(port, [
        :binary,
        ip: {127, 0, 0, 1},
        packet: :http_bin,
        active: false,
        reuseaddr: true
      ])

    pid = spawn(fn -> accept(listen) end)
    :ok = :gen_tcp.controlling_process(listen, pid)
    {listen, pid}
  end

  def stop({listen, pid}) do
    Process.exit(pid, :kill)
    :gen_tcp.close(listen)
  end

  @doc """
  The inventory's service manager (as systemd would be): the recovery
  action `restart` asks it for a restart through a request file and waits
  until it is gone. The restarted service holds for a while, then fails
  again, so the shop's own fix of the cascade is still put to the test.
  """
  def manage(port, run_dir) do
    request = Path.join(run_dir, "inventory.restart")

    script = Path.join(run_dir, "restart-inventory")

    File.write!(script, """
    #!/bin/sh
    touch '#{request}'
    for _ in $(seq 100); do [ -f '#{request}' ] || exit 0; sleep 0.1; done
    exit 1
    """)

    File.chmod!(script, 0o755)
    spawn(fn -> watch(port, request) end)
    script
  end

  defp watch(port, request) do
    if File.exists?(request) do
      inventory = start(port)
      File.rm!(request)
      Demo.step("recover", "the inventory service's manager restarts it")
      Process.sleep(8_000)
      stop(inventory)
      Demo.step("outage", "the inventory service goes down again")
    else
      Process.sleep(100)
      watch(port, request)
    end
  end

  defp accept(listen) do
    case :gen_tcp.accept(listen) do
      {:ok, sock} ->
        serve(sock)
        accept(listen)

      _ ->
        :ok
    end
  end

  defp serve(sock) do
    case read_head(sock, nil) do
      {:ok, path} ->
        id = path |> String.split("/") |> List.last()
        body = ~s({"item": "#{id}", "stock": 5})

        :gen_tcp.send(sock, [
          "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n",
          "content-length: #{byte_size(body)}\r\n\r\n",
          body
        ])

      _ ->
        :ok
    end

    :gen_tcp.close(sock)
  end

  defp read_head(sock, path) do
    case :gen_tcp.recv(sock, 0, 2_000) do
      {:ok, {:http_request, _, {:abs_path, p}, _}} -> read_head(sock, p)
      {:ok, {:http_header, _, _, _, _}} -> read_head(sock, path)
      {:ok, :http_eoh} -> {:ok, path}
      other -> other
    end
  end
end

defmodule Demo.Printer do
  @moduledoc false
  # Prints the port's notifications as they come, and keeps the counts.

  def loop(state, until_fun, deadline) do
    if until_fun.(state) or System.monotonic_time(:millisecond) > deadline do
      state
    else
      receive do
        {:self_heal_port, event} -> loop(show(event, state), until_fun, deadline)
      after
        500 -> loop(state, until_fun, deadline)
      end
    end
  end

  defp short(fp) when is_binary(fp), do: String.slice(fp, 0, 12)
  defp short(other), do: inspect(other)

  def show(%{"event" => "analysis", "issues" => issues}, s) do
    for issue <- issues do
      ids = issue["group_ids"] || []

      Demo.step(
        "analysis",
        "#{length(ids)} group(s) -> one issue, severity #{issue["severity"]}: #{issue["root_cause"]}"
      )

      for id <- ids, do: Demo.say(String.duplicate(" ", 15) <> "group #{short(id)}")
    end

    s = %{
      s
      | groups: s.groups + Enum.sum(Enum.map(issues, &length(&1["group_ids"] || []))),
        analyses: s.analyses + 1
    }

    if s.analyses == 2 and s.traffic == nil do
      Demo.step("traffic", "users keep coming: the same four requests every 300 ms")
      %{s | traffic: s.start_traffic.()}
    else
      s
    end
  end

  def show(%{"event" => "ticket"} = t, s) do
    if t["created"] do
      Demo.step(
        "ticket",
        "##{t["ticket_id"]} opened (#{t["backend"]}) for #{Enum.map_join(t["fingerprints"] || [], ", ", &short/1)}"
      )

      %{s | tickets: s.tickets + 1}
    else
      Demo.step("ticket", "##{t["ticket_id"]} updated")
      s
    end
  end

  def show(%{"event" => "fix", "stage" => stage} = e, s) do
    id = "fix #{e["fix_id"]}"

    case stage do
      "started" ->
        Demo.step(
          "fix",
          "#{id}: started for #{short(e["fingerprint"])} (ticket ##{e["ticket_id"]})"
        )

        %{s | fixes: s.fixes + 1}

      "checkout" ->
        Demo.step(
          "checkout",
          "#{id}: plain files of #{short(e["base"])} for the agent (no git), sandbox #{e["sandbox"]}"
        )

        s

      "context" ->
        files = Enum.map_join(e["files"], ", ", &"#{&1["path"]} (#{&1["role"]})")
        Demo.step("context", "#{id}: #{files}")
        s

      "agent" ->
        who = if e["agent"] == "claude_code", do: "Claude Code", else: "stand-in agent"

        turns =
          if is_integer(e["turns"]) and e["turns"] > 0, do: ", #{e["turns"]} turns", else: ""

        Demo.step(
          "agent",
          "#{id}: #{who} #{e["result"]} in #{e["ms"]} ms#{turns}, inside the #{sandbox_name(e["sandbox"])}"
        )

        if is_binary(e["final"]) and e["final"] != "",
          do: Demo.say(String.duplicate(" ", 13) <> "it said: " <> e["final"])

        s

      "rebased" ->
        Demo.step(
          "rebase",
          "#{id}: #{e["onto"] |> short()} is the deploy branch now; the fix is replayed on it and validated again"
        )

        s

      "change" ->
        files =
          Enum.map_join(e["files"], ", ", &"#{&1["path"]} +#{&1["added"]} -#{&1["removed"]}")

        Demo.step("change", "#{id}: commit #{short(e["commit"])}: #{files}")
        s

      "validation" ->
        Demo.step(
          "validate",
          "#{id}: compiles #{e["compiled"]}, tests pass #{e["tests_passed"]}, " <>
            "base's tests pass on the fix #{e["existing_tests_passed"]}, " <>
            "new test fails on base with the production error #{e["regression_proven"]}, " <>
            "in scope #{e["scope_ok"]}, #{e["changed_lines"]} changed lines -> confidence #{e["confidence"]}"
        )

        s

      "delivered" ->
        Demo.step("deliver", "#{id}: #{e["mode"]}: #{e["patch"]}")
        s

      "gate" ->
        reasons =
          if e["reasons"] in [nil, []], do: "", else: " (" <> Enum.join(e["reasons"], "; ") <> ")"

        Demo.step("gate", "#{id}: #{e["action"]}#{reasons}")
        # waiting for a human, or nothing to deploy: this fix is as far as it goes
        if e["action"] in ["approval", "none", "reject"], do: %{s | done: s.done + 1}, else: s

      "merged" ->
        Demo.step("deploy", "#{id}: merged into #{e["branch"]} as #{short(e["commit"])}")
        s

      "deployed" ->
        Demo.step("deploy", "#{id}: deploy command #{e["result"]}")
        s

      "healthy" ->
        Demo.step("deploy", "#{id}: health check passes")
        s

      "canary_deployed" ->
        Demo.step("canary", "#{id}: #{short(e["commit"])} on the canary: #{e["result"]}")
        s

      "canary_watching" ->
        Demo.step(
          "canary",
          "#{id}: watching the canary against the stable for #{e["window_s"]} s"
        )

        s

      "canary_failed" ->
        Demo.step("canary", "#{id}: failed: #{e["reason"]}")
        s

      "promoted" ->
        c = e["counts"]

        Demo.step(
          "canary",
          "#{id}: promoted (canary errors #{c["canary_errors"]}, stable baseline " <>
            "#{c["stable_errors"]}, the fixed error on the canary #{c["fixed_on_canary"]})"
        )

        %{s | canary_promoted: s.canary_promoted + 1}

      "verifying" ->
        Demo.step("verify", "#{id}: watching for #{e["window_s"]} s")
        s

      "verified" ->
        Demo.step("verify", "#{id}: passed, no recurrence; ticket closed")
        %{s | deployed: s.deployed + 1, done: s.done + 1}

      "rollback" ->
        Demo.step("rollback", "#{id}: #{e["reason"]}")
        s

      "rolled_back" ->
        Demo.step(
          "rollback",
          "#{id}: reverted by #{short(e["revert_commit"])}, redeployed" <>
            if(e["canary"], do: " to the canary", else: "") <>
            ", healthy #{e["healthy"]}, " <>
            "breaker #{e["breaker"]}; ticket reopened"
        )

        %{s | rolled_back: s.rolled_back + 1, done: s.done + 1}

      final when final in ["rejected", "failed", "escalated"] ->
        Demo.step("fix", "#{id}: #{final}: #{e["reason"]}")
        %{s | done: s.done + 1}

      _ ->
        s
    end
  end

  def show(%{"event" => "recovery"} = e, s) do
    Demo.step(
      "recover",
      "#{length(e["fingerprints"])} group(s) of #{short(e["fingerprint"])}: #{e["outcome"]}" <>
        if(e["outcome"] == "recovered",
          do: " (no recurrence within #{e["window_s"]} s)",
          else: ""
        )
    )

    if e["outcome"] == "recovered", do: %{s | recovered: s.recovered + 1}, else: s
  end

  def show(%{"event" => "fix_skipped"} = e, s) do
    Demo.step(
      "service",
      "#{e["service"]}: not in the registry: ticketed and reported, never fixed (#{e["reason"]})"
    )

    %{s | skipped: s.skipped + 1}
  end

  def show(_event, s), do: s

  defp sandbox_name("bwrap"), do: "bubblewrap sandbox (own mount, PID and network namespaces)"
  defp sandbox_name(other), do: "sandbox #{inspect(other)}"
end

# ---------------------------------------------------------------- setup

started_at = System.monotonic_time(:millisecond)
Logger.configure(level: :warning)
# A fresh private work directory each run: `make demo` makes it (mktemp -d),
# stops the shop and removes it at the end, on an error or an interrupt
# (KEEP=1 keeps it); run alone, the demo makes one and says where.
tmp =
  case System.get_env("SELF_HEAL_DEMO_DIR") do
    dir when is_binary(dir) and dir != "" ->
      if File.ls!(dir) != [], do: raise("the demo's work directory #{dir} is not empty")
      dir

    _ ->
      dir =
        Path.join(
          System.tmp_dir!(),
          "self_heal_demo_" <> Base.encode16(:crypto.strong_rand_bytes(8))
        )

      :ok = File.mkdir(dir)
      dir
  end

# searchable (not readable) by the sandbox's user, which bwrap resolves bound paths as
File.chmod!(tmp, 0o711)
repo = Demo.make_repo(tmp)
state_dir = Path.join(tmp, "state")
shop_port = Demo.free_port()
inventory_port = Demo.free_port()
endpoint_port = Demo.free_port()
token = Base.encode16(:crypto.strong_rand_bytes(16), case: :lower)
shop = "http://127.0.0.1:#{shop_port}"
canary_port = Demo.free_port()
canary = "http://127.0.0.1:#{canary_port}"
canary_dir = Path.join(tmp, "canary")

# The shop's pid file, log and settings: outside the repository, where no
# change to the code (the coding agent's included) can reach them.
run_dir = Path.join(tmp, "shop-run")
File.mkdir_p!(run_dir)
System.put_env("SHOP_RUN_DIR", run_dir)
System.put_env("SHOP_PORT", "#{shop_port}")
System.put_env("INVENTORY_URL", "http://127.0.0.1:#{inventory_port}")

File.write!(Path.join(run_dir, "shop.env"), """
SELF_HEAL_URL=http://127.0.0.1:#{endpoint_port}
SELF_HEAL_TOKEN=#{token}
""")

deploy = Path.join(Demo.root(), "examples/shop/bin/deploy")
restart_inventory = Demo.Inventory.manage(inventory_port, run_dir)

File.mkdir_p!(Path.join(canary_dir, "run"))

File.write!(
  Path.join(canary_dir, "run/shop.env"),
  File.read!(Path.join(run_dir, "shop.env")) <> "SHOP_DEPLOY_TRACK=canary\n"
)

# The coding agent: the real Claude Code CLI with a scripted stand-in for
# its model when it is installed, else the stand-in script.
{agent_config, agent_line} =
  case Demo.Agent.claude() do
    nil ->
      {%{
         "argv" => [
           Path.join(Demo.root(), "examples/agent/stand_in_agent"),
           "{prompt_file}",
           "{checkout}"
         ],
         "timeout_s" => 120
       },
       "the stand-in script examples/agent/stand_in_agent (Claude Code is not installed: " <>
         "make agents installs it with npm)"}

    claude ->
      System.put_env("SELF_HEAL_DEMO_MODEL_KEY", "sk-demo-stand-in-not-a-key")

      {%{
         "preset" => "claude_code",
         "program" => claude,
         "base_url" => Demo.Agent.start_model(tmp),
         "key_env" => "SELF_HEAL_DEMO_MODEL_KEY",
         "max_retries" => 1,
         "timeout_s" => 120
       },
       "Claude Code #{Demo.Agent.version(claude)}, the real CLI, with its model replaced by " <>
         "examples/agent/model_stand_in.py replaying a script of the prepared fixes"}
  end

Application.put_env(:self_heal, :logger_handler, false)

Application.put_env(:self_heal, :endpoint,
  ip: {127, 0, 0, 1},
  port: endpoint_port,
  tokens: [token]
)

Application.put_env(:self_heal, :settle, settle_ms: 2_000, max_wait_ms: 8_000)

# The service registry (docs/services.md): the shop is the one service
# SelfHeal may fix, with its own repository, deploy, canary and recovery;
# the global settings are its defaults. Errors of any other service are
# grouped and ticketed, never fixed.
shop_service = %{
  "aliases" => ["shop-web"],
  "owners" => ["@shop-team"],
  "descriptor" =>
    "shop: an Elixir web shop served by OTP's httpd; Shop.Web routes requests, " <>
      "Shop.Inventory calls the inventory service over HTTP. Tests: mix test.",
  "fix" => %{"repo" => repo},
  # recover first: a critical group restarts the inventory (docs/recovery.md)
  "recover" => %{
    "actions" => [%{"name" => "restart inventory", "argv" => [restart_inventory]}],
    "verify_window_s" => 3
  },
  "deploy" => %{
    "branch" => "main",
    "argv" => [deploy, "{repo}"],
    "timeout_s" => 180,
    "health" => %{"url" => "#{shop}/health", "timeout_s" => 60, "interval_ms" => 500},
    "verify_window_s" => 10,
    "canary" => %{
      "argv" => [
        Path.join(Demo.root(), "examples/shop/bin/canary"),
        "{repo}",
        "{commit}",
        canary_dir,
        "#{canary_port}"
      ],
      "window_s" => 8,
      "max_error_ratio" => 3.0
    }
  }
}

Application.put_env(:self_heal, :port,
  escalate_batch_ms: 1_000,
  config: %{
    "state_dir" => state_dir,
    "tickets" => %{"backend" => "local"},
    "analyze" => %{"window_ms" => 3_000},
    "services" => %{"shop" => shop_service},
    "fix" => %{
      "agent" => agent_config,
      "compile" => %{"argv" => ["mix", "compile", "--warnings-as-errors"], "timeout_s" => 180},
      "test" => %{"argv" => ["mix", "test"], "timeout_s" => 180},
      "env_allow" => ["SHOP_PORT", "INVENTORY_URL", "SHOP_RUN_DIR"],
      # the stand-in agent reads its prepared patches; nothing else of the
      # host is visible to it (docs/sandbox.md)
      "sandbox" => %{
        "read_only" => [Path.join(Demo.root(), "examples/shop_fixes")]
      }
    },
    "gate" => %{"consent" => "repair"}
  }
)

Demo.say("SelfHeal demo (offline, no API key)")
Demo.say("coding agent: #{agent_line}")

Demo.say("work directory: #{tmp}")
{:ok, _} = Application.ensure_all_started(:inets)
inventory = Demo.Inventory.start(inventory_port)
Demo.step("shop", "deploying examples/shop from a fresh git repository (#{repo})")
{out, status} = System.cmd(deploy, [repo], stderr_to_stdout: true)

if status != 0 do
  IO.puts(out)
  raise "the initial deploy of the shop failed"
end

Demo.step("shop", "up at #{shop}; its errors go to SelfHeal's endpoint on port #{endpoint_port}")

Demo.step(
  "service",
  "registry: shop (its repository, deploy, canary, recovery); any other service is ticketed, never fixed"
)

{:ok, _} = Application.ensure_all_started(:self_heal)
:ok = SelfHeal.Port.subscribe(SelfHeal.Port)

# ---------------------------------------------------------------- traffic

{200, _} = Demo.get("#{shop}/checkout?item=1")
Demo.step("traffic", "GET /checkout?item=1 -> 200 (inventory up)")

codes =
  for _ <- 1..12 do
    {code, _} = Demo.get("#{shop}/cart/average?prices=")
    code
  end

Demo.step(
  "traffic",
  "12 x GET /cart/average?prices= (an empty cart) -> #{inspect(Enum.uniq(codes))}"
)

Process.sleep(4_000)
Demo.Inventory.stop(inventory)
Demo.step("outage", "the inventory service goes down")

codes =
  for _ <- 1..4, path <- ["/checkout?item=1", "/products/1", "/recommendations?item=1"] do
    {code, _} = Demo.get(shop <> path)
    code
  end

Demo.step(
  "traffic",
  "4 x /checkout, /products/1, /recommendations -> #{inspect(Enum.uniq(codes))} (a cascade)"
)

# ---------------------------------------------------------------- the loop

# Once both incidents are analysed, users keep coming: the same requests
# go on while SelfHeal fixes, deploys and verifies.
start_traffic = fn ->
  # meanwhile a service the registry does not name fails too (Fluent Bit's
  # record of a cron job): grouped and ticketed, never fixed
  record =
    ~s({"level":"error","service":"legacy-cron","exception.type":"RuntimeError",) <>
      ~s("message":"nightly export failed: disk full"})

  {:ok, {{_, 202, _}, _, _}} =
    :httpc.request(
      :post,
      {~c"http://127.0.0.1:#{endpoint_port}/ingest", [{~c"authorization", ~c"Bearer #{token}"}],
       ~c"application/x-ndjson", Enum.map_join(1..5, "\n", fn _ -> record end)},
      [],
      []
    )

  Demo.step("service", "legacy-cron (not in the registry): 5 x RuntimeError via Fluent Bit")

  spawn(fn ->
    Stream.repeatedly(fn ->
      for path <- [
            "/cart/average?prices=",
            "/checkout?item=2",
            "/products/2",
            "/recommendations?item=2"
          ],
          host <- [shop, canary],
          do: Demo.get(host <> path)

      Process.sleep(300)
    end)
    |> Stream.run()
  end)
end

counts = %{
  groups: 0,
  tickets: 0,
  fixes: 0,
  deployed: 0,
  rolled_back: 0,
  canary_promoted: 0,
  done: 0,
  recovered: 0,
  skipped: 0,
  analyses: 0,
  traffic: nil,
  start_traffic: start_traffic
}

deadline = started_at + 170_000

counts =
  Demo.Printer.loop(
    counts,
    &(&1.fixes >= 2 and &1.done >= &1.fixes and &1.skipped >= 1),
    deadline
  )

if counts.traffic, do: Process.exit(counts.traffic, :kill)

{:ok, %{"fixes" => fixes}} = SelfHeal.Port.call(SelfHeal.Port, "fixes", %{})
Demo.say("")
Demo.say("summary")

for f <- Enum.reverse(fixes) do
  Demo.say(
    "  fix #{f["id"]} #{String.slice(f["fingerprint"], 0, 12)} (#{f["severity"]}): #{f["status"]}, " <>
      "confidence #{f["confidence"] || "-"}"
  )
end

Demo.say("  deploy branch history:")

for line <-
      String.split(Demo.git!(repo, ["log", "--format=%h %s", "-6", "main"]), "\n", trim: true),
    do: Demo.say("    " <> line)

{code, body} = Demo.get("#{shop}/cart/average?prices=")
Demo.say("  GET /cart/average?prices= now -> #{code} #{body}")
Demo.say("  state, patches and reports: #{state_dir}")
System.cmd(Path.join(Demo.root(), "examples/shop/bin/stop"), [repo], stderr_to_stdout: true)

System.cmd(Path.join(Demo.root(), "examples/shop/bin/stop"), [Path.join(canary_dir, "src")],
  env: [{"SHOP_RUN_DIR", Path.join(canary_dir, "run")}],
  stderr_to_stdout: true
)

Application.stop(:self_heal)
seconds = div(System.monotonic_time(:millisecond) - started_at, 1000)
Demo.say("  took #{seconds} s")

Demo.say(
  "DEMO groups=#{counts.groups} tickets=#{counts.tickets} fixes=#{counts.fixes} " <>
    "deployed=#{counts.deployed} rolled_back=#{counts.rolled_back}" <>
    " canary_promoted=#{counts.canary_promoted} recovered=#{counts.recovered}" <>
    " unknown_service_skipped=#{counts.skipped}"
)
