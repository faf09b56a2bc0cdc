defmodule SelfHeal.PortGroupTest do
  # `self_heal_port group`: the template miner on stdin, as a command.
  use ExUnit.Case, async: true

  @moduletag :tmp_dir

  defp port_path, do: Path.join(:code.priv_dir(:self_heal), "self_heal_port")

  # Runs the command with `input` on stdin; the input goes through a file
  # and positional parameters, never into the shell's text.
  defp group(input, args, dir) do
    file = Path.join(dir, "in-#{System.unique_integer([:positive])}")
    File.write!(file, input)

    System.cmd(
      "sh",
      ["-c", ~s(f="$1"; shift; exec "$0" group "$@" < "$f"), port_path(), file | args],
      stderr_to_stdout: true
    )
  end

  test "one id per line; lines of one template share an id", %{tmp_dir: dir} do
    input =
      "Connection to 10.2.3.4:5432 refused after 3012 ms\r\n" <>
        "Disk /dev/sda1 is 93% full\n" <>
        "Connection to 10.9.8.7:6543 refused after 12 ms\n" <>
        "\n" <>
        "Disk /dev/sdb1 is 3% full"

    {out, 0} = group(input, [], dir)
    ids = String.split(out, "\n", trim: true)
    assert length(ids) == 5
    assert Enum.all?(ids, &(&1 =~ ~r/\A[0-9a-f]{16}\z/))
    [a, b, c, _blank, d] = ids
    assert a == c
    assert b == d
    assert a != b
  end

  test "a long line is cut, not fatal; --state keeps ids across runs", %{tmp_dir: dir} do
    state = Path.join(dir, "miner.state")
    long = String.duplicate("x", 100_000)
    {out1, 0} = group("job 1 failed\n#{long}\n", ["--state", state], dir)
    {out2, 0} = group("job 2 failed\n", ["--stream", "--state", state], dir)
    [first, _long] = String.split(out1, "\n", trim: true)
    assert String.trim(out2) == first
  end

  test "a damaged state file is an error, and usage errors exit 2", %{tmp_dir: dir} do
    state = Path.join(dir, "bad.state")
    File.write!(state, "not a snapshot")
    {_, 1} = group("x\n", ["--state", state], dir)
    {_, 2} = group("x\n", ["--bogus"], dir)
  end
end
