# make bench: what the port program leaves behind when it ends
# (docs/architecture.md, "Process lifetime"; the cases are
# test/support/orphan_cases.ex, which the ExUnit suite uses too).
#
# Five scripts run through the port's `spawn` diagnostic, each leaving a
# process that escapes in its own way (setsid, nohup, a double fork,
# setpgid, SIGTERM and SIGHUP ignored in a new session) while it sleeps
# itself; then the port ends, and the processes carrying the run's token in
# their environment are counted 5 s later. Three runs per way of ending;
# each figure is the survivors of all three (target 0):
#
#   orphans_started               processes alive before the end, per run
#                                 (the fewest of all runs): the baseline
#   orphans_after_eof             the BEAM closes the port
#   orphans_after_sigterm         SIGTERM to the pid the BEAM knows
#   orphans_after_kill9           kill -9 of the server (the process that
#                                 runs the commands)
#   orphans_after_kill9_watchdog  kill -9 of the pid the BEAM knows
#   orphans_after_beam_kill9      kill -9 of a separate BEAM running
#                                 SelfHeal.Port
#   orphans_after_kill9_both      both port processes killed at once, then
#                                 a new port started (the ones alive until
#                                 that start go to stderr)

Code.require_file("../support/orphan_cases.ex", __DIR__)

alias SelfHeal.OrphanCases

runs = 3
dir = Path.join(System.tmp_dir!(), "self_heal_bench_orphans_#{System.os_time()}")

results =
  for mode <- OrphanCases.modes(), _ <- 1..runs do
    {mode, OrphanCases.run(mode, dir, 5000)}
  end

File.rm_rf!(dir)

started = results |> Enum.map(fn {_, r} -> r.started end) |> Enum.min()
IO.puts("BENCH orphans_started #{started}")

for mode <- OrphanCases.modes() do
  mine = for {^mode, r} <- results, do: r
  IO.puts("BENCH orphans_after_#{mode} #{Enum.sum(Enum.map(mine, & &1.left))}")

  if mode == :kill9_both do
    between = Enum.map(mine, & &1.orphaned_until_restart)
    IO.puts(:stderr, "orphans_until_restart #{inspect(between)}")
  end
end
