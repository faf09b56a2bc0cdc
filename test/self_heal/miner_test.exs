defmodule SelfHeal.MinerTest do
  # Not async: the yield test reads the global __yield_count__.
  use ExUnit.Case, async: false

  import SelfHeal.TestSupport
  alias SelfHeal.Native

  @moduletag timeout: 60_000

  # ------------------------------------------------------------ helpers

  defp template_by_id(miner, id) do
    Enum.find(Native.miner_templates(miner), &(&1.id == id))
  end

  defp template_ids(miner), do: miner |> Native.miner_templates() |> Enum.map(& &1.id)

  # Letters only, so the result is a plain word in the sense of docs/miner.md.
  defp word(i), do: <<?a + div(i, 26 * 26), ?a + rem(div(i, 26), 26), ?a + rem(i, 26)>>

  @users ~w(alice bob carol dave erin frank grace heidi)
  @verbs ~w(Started Finished Paused Resumed)
  @queues ~w(default mailers billing)

  defp uuid(i) do
    "5d41402a-bc4b-4a5e-9f0e-" <> String.pad_leading(Integer.to_string(i, 16), 12, "0")
  end

  # A deterministic, varied log line: masked values, unmasked values,
  # siblings that merge, words that must not, token counts 0..19,
  # non-ASCII and invalid UTF-8.
  defp varied_line(i) do
    user = Enum.at(@users, rem(i, length(@users)))

    case rem(i, 11) do
      0 -> "Connection to 10.#{rem(i, 250)}.0.#{rem(i, 7)}:#{5000 + i} refused after #{i} ms"
      1 -> "Opened file /srv/data/f#{i}.txt for reading"
      2 -> "session opened for user #{user} by uid #{i}"
      3 -> "worker web_#{i} started on node n#{rem(i, 13)}.example.com"
      4 -> "Request #{uuid(i)} took #{i}ms"
      5 -> "#{Enum.at(@verbs, rem(i, 4))} job #{i} in queue #{Enum.at(@queues, rem(i, 3))}"
      6 -> "GET /api/v1/items/#{i} 200 #{i}ms"
      7 -> "key=#{i} user=#{user} action=login"
      8 -> "héllo wörld #{i} ✓ " <> <<0xFF, 0xFE>>
      9 -> Enum.map_join(0..rem(i, 20)//1, " ", fn k -> "tok#{k}" end)
      10 -> "#{word(rem(i, 300))} #{word(rem(i * 7, 300))} happened at step #{i}"
    end
  end

  defp varied_lines(n), do: Enum.map(0..(n - 1)//1, &varied_line/1)

  # ------------------------------------------------------------ 1. grouping

  test "lines differing only in masked values share a cluster, other messages do not" do
    m = Native.miner_new()

    conn = [
      "Connection to 10.2.3.4:5432 refused after 3012 ms",
      "Connection to 192.168.0.1:80 refused after 2.5s",
      "Connection to 10.0.0.9:6379 refused after 15 ms"
    ]

    req = [
      "Request 5d41402a-bc4b-4a5e-9f0e-000000000001 took 35ms",
      "Request 9c8e7f6a-1b2c-4d3e-8f9a-0123456789ab took 120 ms"
    ]

    opened = ["Opened file /srv/a.txt for reading", "Opened file /srv/b.txt for reading"]
    disk = ["Disk full on volume sda"]

    ids = Native.miner_add(m, conn ++ req ++ opened ++ disk)
    assert length(ids) == 8
    assert Enum.all?(ids, &(is_integer(&1) and &1 > 0))

    [c1, c2, c3, r1, r2, o1, o2, d1] = ids
    assert c1 == c2 and c2 == c3
    assert r1 == r2
    assert o1 == o2
    assert length(Enum.uniq([c1, r1, o1, d1])) == 4

    templates = Native.miner_templates(m)
    # most recently used first
    assert Enum.map(templates, & &1.id) == [d1, o1, r1, c1]

    conn_t = template_by_id(m, c1)
    assert conn_t.count == 3
    assert conn_t.template =~ "<ip>"
    refute conn_t.template =~ "10.2.3.4"
    refute conn_t.template =~ "3012"

    req_t = template_by_id(m, r1)
    assert req_t.count == 2
    assert req_t.template =~ "<uuid>"
    refute req_t.template =~ "5d41402a"

    opened_t = template_by_id(m, o1)
    assert opened_t.count == 2
    assert opened_t.template == "Opened file <*> for reading"
    assert opened_t.params == [2]

    disk_t = template_by_id(m, d1)
    assert disk_t == %{id: d1, count: 1, template: "Disk full on volume sda", params: []}

    stats = Native.miner_stats(m)
    assert stats.lines == 8
    assert stats.clusters == 4
    assert stats.created == 4
    assert stats.evicted == 0
    assert stats.truncated == 0
    assert stats.merged == 0
    assert stats.aliases_dropped == 0
  end

  test "two different plain words at one place are two events" do
    m = Native.miner_new()

    [a, b, a2] =
      Native.miner_add(m, ["VM Started on host", "VM Paused on host", "VM Started on host"])

    assert a != b
    assert a == a2
    assert Native.miner_stats(m).clusters == 2
  end

  # ------------------------------------------------------------ 2. stable ids

  test "a cluster keeps its id when its template generalises" do
    m = Native.miner_new()
    [a] = Native.miner_add(m, ["Opened file /srv/a.txt for job7"])

    assert [%{id: ^a, template: "Opened file /srv/a.txt for job7", params: []}] =
             Native.miner_templates(m)

    [b] = Native.miner_add(m, ["Opened file /srv/b.txt for job7"])
    assert b == a

    assert [%{id: ^a, template: "Opened file <*> for job7", params: [2]}] =
             Native.miner_templates(m)

    [c] = Native.miner_add(m, ["Opened file /srv/c.txt for job8"])
    assert c == a

    assert [%{id: ^a, template: "Opened file <*> for <*>", params: [2, 4], count: 3}] =
             Native.miner_templates(m)

    # the original line and new ones keep landing on the same id
    assert Native.miner_add(m, [
             "Opened file /srv/a.txt for job7",
             "Opened file /x/y.bin for job9"
           ]) == [a, a]

    assert Native.miner_resolve(m, a) == a
    assert Native.miner_stats(m).clusters == 1

    # the id is a function of the first template, not of the miner instance
    other = Native.miner_new()
    assert Native.miner_add(other, ["Opened file /srv/a.txt for job7"]) == [a]
  end

  test "eight sibling clusters differing in one word merge and their ids resolve to the survivor" do
    m = Native.miner_new()

    lines = Enum.map(@users ++ ["ivan"], &"session opened for user #{&1} by sshd")

    ids = Native.miner_add(m, lines)

    survivor = List.last(ids)

    assert [%{id: ^survivor, template: "session opened for user <*> by sshd", count: 9}] =
             Native.miner_templates(m)

    for id <- ids, do: assert(Native.miner_resolve(m, id) == survivor)

    stats = Native.miner_stats(m)
    assert stats.clusters == 1
    assert stats.merged == 7
    assert stats.lines == 9

    # an unknown id resolves to itself
    assert Native.miner_resolve(m, 12_345) == 12_345
  end

  test "a live cluster resolves to itself after its merged template was evicted and came back" do
    m = Native.miner_new(max_clusters: 8)
    ids = Native.miner_add(m, Enum.map(@users, &"session opened for user #{&1} by sshd"))
    survivor = List.last(ids)
    assert Native.miner_resolve(m, hd(ids)) == survivor

    # eight other clusters push the merged cluster out
    Native.miner_add(m, Enum.map(0..7, &"#{word(&1)}x #{word(&1)}y other event"))
    refute survivor in template_ids(m)

    # alice's line comes back as a fresh cluster with its first id again
    [alice] = Native.miner_add(m, ["session opened for user alice by sshd"])
    assert alice == hd(ids)
    assert alice in template_ids(m)

    # the id names a live cluster that was not merged: it lives on as itself
    assert Native.miner_resolve(m, alice) in template_ids(m)
    assert Native.miner_resolve(m, alice) == alice
  end

  # ------------------------------------------------------------ 3. yield path

  test "yield_every: 1 gives the same ids as the default and yields per line" do
    lines = varied_lines(5_000)
    default = Native.miner_new()
    yielding = Native.miner_new(yield_every: 1)

    expected = Native.miner_add(default, lines)
    assert length(expected) == 5_000

    before = Native.__yield_count__()
    assert Native.miner_add(yielding, lines) == expected
    yields = Native.__yield_count__() - before
    assert yields >= length(lines), "only #{yields} yields"

    assert Native.miner_templates(yielding) == Native.miner_templates(default)
    assert Native.miner_stats(yielding) == Native.miner_stats(default)

    every7 = Native.miner_new(yield_every: 7)
    before = Native.__yield_count__()
    assert Native.miner_add(every7, lines) == expected
    assert Native.__yield_count__() - before >= div(length(lines), 7)
  end

  test "a bad element after several yields raises and keeps the lines before it" do
    good = Enum.map(1..10, &"line number #{&1} processed")

    m = Native.miner_new(yield_every: 1)
    assert_raise ArgumentError, fn -> Native.miner_add(m, good ++ [:bad, "after"]) end
    assert Native.miner_stats(m).lines == 10

    m = Native.miner_new(yield_every: 1)
    improper = Enum.reduce(Enum.reverse(good), "tail", fn l, acc -> [l | acc] end)
    assert_raise ArgumentError, fn -> Native.miner_add(m, improper) end
    assert Native.miner_stats(m).lines == 10

    assert [_] = Native.miner_add(m, ["still usable"])
  end

  # ------------------------------------------------------------ 4. concurrency

  test "processes sharing one miner: no crash, every id is known, lines add up" do
    m = Native.miner_new(yield_every: 3)
    cfg = Native.config(miner: m)
    lines = varied_lines(2_000)
    stop = :atomics.new(1, [])

    reader =
      Task.async(fn ->
        Stream.repeatedly(fn ->
          _ = Native.miner_templates(m)
          _ = Native.miner_stats(m)
          _ = Native.miner_snapshot(m)
          :atomics.get(stop, 1)
        end)
        |> Enum.find(&(&1 == 1))
      end)

    adders =
      for i <- 1..8 do
        shifted = Enum.drop(lines, i * 97) ++ Enum.take(lines, i * 97)

        Task.async(fn ->
          if rem(i, 4) == 0 do
            events = Enum.map(shifted, &%{type: "E", message: &1, stacktrace: nil})
            fps = Native.fingerprint_batch(events, cfg)
            {:batch, length(fps)}
          else
            ids =
              shifted
              |> Enum.chunk_every(250)
              |> Enum.flat_map(&Native.miner_add(m, &1))

            {:ids, ids}
          end
        end)
      end

    results = Task.await_many(adders, 30_000)
    :atomics.put(stop, 1, 1)
    Task.await(reader, 30_000)

    known = MapSet.new(template_ids(m))

    total =
      Enum.reduce(results, 0, fn
        {:ids, ids}, acc ->
          assert length(ids) == length(lines)

          for id <- Enum.uniq(ids) do
            resolved = Native.miner_resolve(m, id)
            assert MapSet.member?(known, resolved), "id #{id} -> #{resolved} unknown"
          end

          acc + length(ids)

        {:batch, n}, acc ->
          assert n == length(lines)
          acc + n
      end)

    assert total == 8 * length(lines)
    stats = Native.miner_stats(m)
    assert stats.lines == total
    assert stats.clusters == MapSet.size(known)
    assert stats.evicted == 0
    # no line is lost in a merge
    assert m |> Native.miner_templates() |> Enum.map(& &1.count) |> Enum.sum() == total
  end

  # ------------------------------------------------------------ 5. snapshots

  defp populated_miner(opts \\ []) do
    m = Native.miner_new(opts)
    Native.miner_add(m, varied_lines(600))

    Native.miner_add(
      m,
      Enum.map(~w(alice bob carol dave erin frank), &"session closed for user #{&1} by sshd")
    )

    m
  end

  test "a restored snapshot has the same templates, stats and future ids" do
    m = populated_miner()
    assert Native.miner_stats(m).merged > 0
    snap = Native.miner_snapshot(m)
    assert is_binary(snap)

    assert {:ok, r} = Native.miner_restore(snap)
    assert is_reference(r)
    assert Native.miner_templates(r) == Native.miner_templates(m)
    assert Native.miner_stats(r) == Native.miner_stats(m)

    for %{id: id} <- Native.miner_templates(m), do: assert(Native.miner_resolve(r, id) == id)

    merged_id =
      hd(Native.miner_add(Native.miner_new(), ["session closed for user alice by sshd"]))

    assert Native.miner_resolve(r, merged_id) == Native.miner_resolve(m, merged_id)
    assert Native.miner_resolve(m, merged_id) != merged_id

    more =
      Enum.map(600..1_599, &varied_line/1) ++ ["brand new message here", "" | varied_lines(50)]

    assert Native.miner_add(r, more) == Native.miner_add(m, more)
    assert Native.miner_templates(r) == Native.miner_templates(m)
    assert Native.miner_stats(r) == Native.miner_stats(m)

    # a snapshot of the restored miner restores to the same miner again
    assert {:ok, r2} = Native.miner_restore(Native.miner_snapshot(r))
    assert Native.miner_templates(r2) == Native.miner_templates(m)

    # an empty miner round-trips
    assert {:ok, e} = Native.miner_restore(Native.miner_snapshot(Native.miner_new()))
    assert Native.miner_templates(e) == []
    assert Native.miner_stats(e).lines == 0
  end

  test "restoring into a smaller max_clusters keeps the most recently used clusters" do
    m = populated_miner()
    templates = Native.miner_templates(m)
    assert length(templates) > 3
    assert {:ok, r} = Native.miner_restore(Native.miner_snapshot(m), max_clusters: 3)
    assert Native.miner_templates(r) == Enum.take(templates, 3)
    assert Native.miner_stats(r).clusters == 3
  end

  test "garbage, truncated and flipped snapshots give {:error, reason}" do
    m = Native.miner_new()
    Native.miner_add(m, varied_lines(40))

    Native.miner_add(
      m,
      Enum.map(~w(alice bob carol dave erin), &"session closed for user #{&1} by sshd")
    )

    snap = Native.miner_snapshot(m)
    size = byte_size(snap)
    assert size < 20_000

    for bad <- [
          "",
          "garbage",
          "SHMINER",
          :binary.copy(<<0>>, 200),
          :crypto.strong_rand_bytes(500)
        ] do
      assert {:error, reason} = Native.miner_restore(bad)
      assert is_binary(reason) and reason != ""
    end

    for len <- 0..(size - 1) do
      assert {:error, reason} = Native.miner_restore(binary_part(snap, 0, len)),
             "cut at #{len} of #{size} restored"

      assert is_binary(reason)
    end

    assert {:error, _} = Native.miner_restore(snap <> <<0>>)

    for pos <- 0..(size - 1), mask <- [0x01, 0x80] do
      <<pre::binary-size(pos), b, post::binary>> = snap
      flipped = <<pre::binary, Bitwise.bxor(b, mask), post::binary>>

      assert {:error, reason} = Native.miner_restore(flipped),
             "flipping byte #{pos} with #{mask} restored"

      assert is_binary(reason)
    end

    # the original is still fine
    assert {:ok, _} = Native.miner_restore(snap)
  end

  # The snapshot checksum (hash_bytes in c_src/miner.c), so that damaged
  # snapshots can be resealed and reach the structural checks behind it.
  @m64 0xFFFFFFFFFFFFFFFF

  defp mix64(h) do
    h = Bitwise.bxor(h, Bitwise.bsr(h, 33))
    h = Bitwise.band(h * 0xFF51AFD7ED558CCD, @m64)
    h = Bitwise.bxor(h, Bitwise.bsr(h, 33))
    h = Bitwise.band(h * 0xC4CEB9FE1A85EC53, @m64)
    Bitwise.bxor(h, Bitwise.bsr(h, 33))
  end

  defp checksum(bin) do
    h = Bitwise.bxor(0x9E3779B97F4A7C15, Bitwise.band(byte_size(bin) * 0x100000001B3, @m64))
    checksum_loop(h, bin)
  end

  defp checksum_loop(h, <<w::little-64, rest::binary>>),
    do: checksum_loop(mix64(Bitwise.bxor(h, w)), rest)

  defp checksum_loop(h, rest) do
    r = byte_size(rest)
    <<w::little-64>> = rest <> :binary.copy(<<0>>, 8 - r)
    h = mix64(Bitwise.bxor(Bitwise.bxor(h, w), Bitwise.bsl(r, 56)))
    if h == 0, do: 1, else: h
  end

  defp seal(body), do: body <> <<checksum(body)::little-64>>

  defp unseal(snap), do: binary_part(snap, 0, byte_size(snap) - 8)

  test "snapshots damaged behind a valid checksum are refused or restore to a usable miner" do
    m = Native.miner_new()

    Native.miner_add(
      m,
      Enum.map(~w(alice bob carol dave erin), &"session closed for user #{&1} by sshd") ++
        ["hello world", "x=1 y=2", "", "Opened file /a for reading"]
    )

    snap = Native.miner_snapshot(m)
    body = unseal(snap)
    # the helper reproduces the checksum, so the cases below reach the parser
    assert seal(body) == snap
    size = byte_size(body)

    for len <- 0..(size - 1) do
      assert {:error, reason} = Native.miner_restore(seal(binary_part(body, 0, len))),
             "resealed cut at #{len} of #{size} restored"

      assert is_binary(reason)
    end

    assert {:error, _} = Native.miner_restore(seal(body <> <<0>>))
    assert {:error, _} = Native.miner_restore(seal(body <> :binary.copy(<<0>>, 16)))

    for pos <- 0..(size - 1), mask <- [0x01, 0x80, 0xFF] do
      <<pre::binary-size(pos), b, post::binary>> = body

      case Native.miner_restore(seal(<<pre::binary, Bitwise.bxor(b, mask), post::binary>>)) do
        {:error, reason} ->
          assert is_binary(reason)

        {:ok, r} ->
          assert [_, _, _] =
                   Native.miner_add(r, ["session closed for user zed by sshd", "hi", ""])

          assert is_list(Native.miner_templates(r))
          assert is_binary(Native.miner_snapshot(r))
      end
    end
  end

  test "crafted alias cycles and chains in a snapshot do not hang miner_resolve" do
    # an empty miner's snapshot: header, merged, naliases = 0, checksum
    empty = unseal(Native.miner_snapshot(Native.miner_new()))
    header = binary_part(empty, 0, byte_size(empty) - 16)

    cycle = [{11, 22}, {22, 33}, {33, 11}]
    chain = for i <- 1_000..1_999, do: {i, i + 1}

    aliases = for {from, to} <- cycle ++ chain, into: <<>>, do: <<from::little-64, to::little-64>>

    body = header <> <<0::little-64, length(cycle ++ chain)::little-64>> <> aliases
    assert {:ok, r} = Native.miner_restore(seal(body))

    assert Native.miner_resolve(r, 11) in [11, 22, 33]
    assert is_integer(Native.miner_resolve(r, 1_000))
    assert Native.miner_resolve(r, 5) == 5
    assert [_] = Native.miner_add(r, ["still works"])
  end

  test "aliases_dropped survives a snapshot round trip" do
    # max_clusters: 8 bounds the alias table (docs/miner.md: 4 x max_clusters);
    # 80 groups of eight siblings make 560 aliases, so some are dropped
    m = Native.miner_new(max_clusters: 8)

    for g <- 0..79 do
      Native.miner_add(
        m,
        # names of each group's own, so that no pair of them recurs in
        # another group's template (docs/miner.md: evidence across templates)
        Enum.map(@users, &"session #{word(g)} opened for user #{&1}#{word(g)}")
      )
    end

    stats = Native.miner_stats(m)
    assert stats.merged == 560
    assert stats.aliases_dropped > 0

    assert {:ok, r} = Native.miner_restore(Native.miner_snapshot(m), max_clusters: 8)
    assert Native.miner_stats(r) == stats
  end

  test "miner_restore and miner_new raise on bad options" do
    snap = Native.miner_snapshot(Native.miner_new())

    bad_opts = [
      [max_clusters: 0],
      [max_clusters: 10_000_001],
      [max_clusters: -1],
      [max_clusters: :many],
      [max_tokens: 0],
      [max_tokens: 65_536],
      [max_tokens: 1.5],
      [max_line: 15],
      [max_line: 16_777_217],
      [max_line: "16"],
      [yield_every: -1],
      [yield_every: nil]
    ]

    for opts <- bad_opts do
      assert_raise ArgumentError, fn -> Native.miner_restore(snap, opts) end
      assert_raise ArgumentError, fn -> Native.miner_new(opts) end
    end

    assert_raise ArgumentError, fn -> Native.miner_restore(:not_a_binary) end
    assert_raise ArgumentError, fn -> Native.miner_restore(~c"SHMINER") end
    assert_raise ArgumentError, fn -> Native.miner_new_nif([]) end
    assert_raise ArgumentError, fn -> Native.miner_restore_nif(snap, []) end

    # the bounds themselves are accepted
    for opts <- [
          [max_clusters: 1],
          [max_clusters: 10_000_000],
          [max_tokens: 1],
          [max_tokens: 65_535],
          [max_line: 16],
          [max_line: 16_777_216],
          [yield_every: 0],
          %{max_clusters: 5, max_tokens: 8, max_line: 64, yield_every: 2}
        ] do
      m = Native.miner_new(opts)
      assert [_] = Native.miner_add(m, ["hello world"])
      assert {:ok, _} = Native.miner_restore(snap, opts)
    end
  end

  # ------------------------------------------------------------ 6. bounds

  test "max_clusters bounds the clusters and counts evictions" do
    m = Native.miner_new(max_clusters: 10)
    lines = for i <- 0..49, do: "#{word(i)}x #{word(i + 100)}y event happened"
    ids = Native.miner_add(m, lines)

    assert length(Enum.uniq(ids)) == 50

    stats = Native.miner_stats(m)
    assert stats.lines == 50
    assert stats.created == 50
    assert stats.clusters == 10
    assert stats.evicted == 40
    assert stats.merged == 0

    templates = Native.miner_templates(m)
    assert length(templates) == 10
    assert Enum.map(templates, & &1.id) == ids |> Enum.take(-10) |> Enum.reverse()
    assert Enum.map(templates, & &1.template) == lines |> Enum.take(-10) |> Enum.reverse()

    # an evicted template that comes back gets its id again
    assert Native.miner_add(m, [hd(lines)]) == [hd(ids)]
    stats = Native.miner_stats(m)
    assert stats.clusters == 10
    assert stats.evicted == 41
    assert hd(Native.miner_templates(m)).id == hd(ids)
  end

  test "templates differing in token count are distinct clusters under the bound" do
    m = Native.miner_new(max_clusters: 10)
    lines = for n <- 1..50, do: Enum.map_join(1..n, " ", fn _ -> "same" end)
    ids = Native.miner_add(m, lines)
    assert length(Enum.uniq(ids)) == 50
    stats = Native.miner_stats(m)
    assert stats.clusters == 10
    assert stats.evicted == 40
    assert length(Native.miner_templates(m)) == 10
  end

  # ------------------------------------------------------------ 7. hostile input

  test "hostile lines do not crash the VM and the miner stays usable" do
    m = Native.miner_new()

    one_mb = :binary.copy("word ", 200_000)
    assert byte_size(one_mb) == 1_000_000
    many_tokens = :binary.copy("a ", 100_000)
    utf8_cut = :binary.copy("é", 20_000)

    hostile = [
      one_mb,
      many_tokens,
      "   \t\n\r\v\f  ",
      "",
      <<0xFF, 0xFE, 0xFD, 0xC3>>,
      "bad " <> <<0xC3, 0x28, 0xE2, 0x82>> <> " utf8 " <> <<0xF0, 0x9F>>,
      "nul\0byte\0here",
      <<0, 0, 0, 0>>,
      utf8_cut,
      :binary.copy("<", 5_000),
      :binary.copy("=", 5_000),
      "k=" <> :binary.copy("=", 100),
      :binary.copy("x=y", 2_000)
    ]

    ids = Native.miner_add(m, hostile)
    assert length(ids) == length(hostile)
    assert Enum.all?(ids, &(is_integer(&1) and &1 > 0))
    # blank and empty lines are one (empty) event
    assert Enum.at(ids, 2) == Enum.at(ids, 3)

    stats = Native.miner_stats(m)
    assert stats.lines == length(hostile)
    # the 1 MB line and the 20,000 "é" exceed max_line, 100,000 tokens max_tokens
    assert stats.truncated >= 3

    for t <- Native.miner_templates(m) do
      assert is_binary(t.template)
      assert length(String.split(t.template, " ", trim: true)) <= 128
    end

    # a miner that reads whole lines cuts at max_tokens only
    big = Native.miner_new(max_line: 16_777_216, max_tokens: 65_535)
    [id] = Native.miner_add(big, [many_tokens])
    assert Native.miner_stats(big).truncated == 1
    assert [%{id: ^id, template: t}] = Native.miner_templates(big)
    assert byte_size(t) == 65_535 * 2 - 1
    assert Native.miner_add(big, [many_tokens]) == [id]

    # bad elements: lines before the bad one stay added
    for bad <- [:atom, 42, ~c"charlist", [~c"nested"], {"tuple"}, <<1::3>>, nil, self()] do
      before = Native.miner_stats(m).lines

      assert_raise ArgumentError, fn -> Native.miner_add(m, ["ok line", "ok line", bad]) end
      assert Native.miner_stats(m).lines == before + 2
      assert_raise ArgumentError, fn -> Native.miner_add(m, [bad]) end
      assert Native.miner_stats(m).lines == before + 2
    end

    # improper lists and non-lists
    for bad <- [["a" | "b"], ["a", "b" | :c], "line", :lines, %{}, {"a"}, 1, nil] do
      assert_raise ArgumentError, fn -> Native.miner_add(m, bad) end
    end

    # things that are not miners
    not_miners = [make_ref(), Native.config(), :miner, nil, self(), "miner", 1]

    for bad <- not_miners do
      assert_raise ArgumentError, fn -> Native.miner_add(bad, ["line"]) end
      assert_raise ArgumentError, fn -> Native.miner_templates(bad) end
      assert_raise ArgumentError, fn -> Native.miner_stats(bad) end
      assert_raise ArgumentError, fn -> Native.miner_resolve(bad, 1) end
      assert_raise ArgumentError, fn -> Native.miner_snapshot(bad) end
      # `miner: nil` means no miner
      if bad != nil, do: assert_raise(ArgumentError, fn -> Native.config(miner: bad) end)
    end

    assert Native.fingerprint(
             %{type: "E", message: "m", stacktrace: nil},
             Native.config(miner: nil)
           ).cluster ==
             nil

    for bad <- [-1, 1.0, :id, "1", 18_446_744_073_709_551_616] do
      assert_raise ArgumentError, fn -> Native.miner_resolve(m, bad) end
    end

    # still usable, and consistent
    before = Native.miner_stats(m).lines
    [a, b] = Native.miner_add(m, ["Disk full on volume sda", "Disk full on volume sdb"])
    assert a != b
    assert Native.miner_stats(m).lines == before + 2
    assert {:ok, r} = Native.miner_restore(Native.miner_snapshot(m))
    assert Native.miner_templates(r) == Native.miner_templates(m)
  end

  test "hostile events through fingerprint with a miner" do
    m = Native.miner_new()
    cfg = Native.config(miner: m)

    events = [
      %{type: nil, message: nil, stacktrace: nil},
      %{type: "E", message: "", stacktrace: []},
      %{type: "E", message: :binary.copy("x ", 500_000), stacktrace: nil},
      %{type: "E", message: <<0xFF, 0, 0xC3>>, stacktrace: nil},
      %{type: :atom_type, message: "nul\0inside", stacktrace: "not a stack trace at all"}
    ]

    for e <- events do
      info = Native.fingerprint(e, cfg)
      assert is_integer(info.cluster)
      assert byte_size(info.fingerprint) == 32
    end

    assert length(Native.fingerprint_batch(events, cfg)) == length(events)
    assert Native.miner_stats(m).lines == 2 * length(events)
  end

  # ------------------------------------------------------------ 8. fingerprints

  test "stackless events are fingerprinted by their cluster" do
    m = Native.miner_new()
    cfg = Native.config(miner: m)

    e1 = %{type: "RuntimeError", message: "Opened file /srv/a.txt for reading", stacktrace: nil}
    e2 = %{type: "RuntimeError", message: "Opened file /srv/b.txt for reading", stacktrace: []}

    e3 = %{
      type: "RuntimeError",
      message: "Opened file /x/y.txt for reading",
      stacktrace: "no parsable frames in here"
    }

    e4 = %{
      type: "RuntimeError",
      message: "Connection to 10.2.3.4:5432 refused after 3012 ms",
      stacktrace: nil
    }

    # without the miner, the normaliser alone keeps the paths apart
    assert fp(e1) != fp(e2)

    [f1, f2, f3, f4] = Enum.map([e1, e2, e3, e4], &Native.fingerprint(&1, cfg))
    assert is_integer(f1.cluster)
    assert f1.cluster == f2.cluster and f2.cluster == f3.cluster
    assert f1.fingerprint == f2.fingerprint and f2.fingerprint == f3.fingerprint
    assert f4.cluster != f1.cluster
    assert f4.fingerprint != f1.fingerprint
    assert f1.frames == [] and f1.top_frame == nil

    ids = template_ids(m)
    assert f1.cluster in ids and f4.cluster in ids
    assert Native.miner_stats(m).lines == 4

    # same message again: same fingerprint
    assert Native.fingerprint(e1, cfg).fingerprint == f1.fingerprint

    # without a miner, no cluster
    assert Native.fingerprint(e1).cluster == nil
    assert Native.fingerprint(e1, Native.config()).cluster == nil
  end

  test "events with a stack trace are not affected by the miner" do
    m = Native.miner_new()
    cfg = Native.config(miner: m)
    plain = Native.config()

    frames = [
      {MyApp.Worker, :run, 1, "lib/my_app/worker.ex", 10},
      {MyApp.Repo, :get, 2, "lib/my_app/repo.ex", 20}
    ]

    for kind <- [:term, :text] do
      e = event("RuntimeError", "Opened file /srv/a.txt for reading", frames, kind)
      info = Native.fingerprint(e, cfg)
      assert info.cluster == nil
      assert info.fingerprint == Native.fingerprint(e, plain).fingerprint
      assert info.fingerprint == fp(e)
      assert info.frames != []
    end

    assert Native.miner_stats(m).lines == 0
  end

  test "fingerprint_batch with a miner equals fingerprint/2 with an identically fed miner" do
    events =
      varied_lines(600)
      |> Enum.with_index()
      |> Enum.map(fn {line, i} ->
        case rem(i, 5) do
          4 -> event("RuntimeError", line, [{MyApp.Worker, :run, 1, "lib/w.ex", i + 1}], :term)
          3 -> %{type: "E", message: line, stacktrace: []}
          _ -> %{type: "E", message: line, stacktrace: nil}
        end
      end)

    m1 = Native.miner_new()
    m2 = Native.miner_new()
    m3 = Native.miner_new()

    batch = Native.fingerprint_batch(events, Native.config(miner: m1))
    single = Enum.map(events, &fp(&1, Native.config(miner: m2)))
    assert batch == single

    yielding = Native.fingerprint_batch(events, Native.config(miner: m3, yield_every: 1))
    assert yielding == single

    assert Native.miner_templates(m1) == Native.miner_templates(m2)
    assert Native.miner_templates(m3) == Native.miner_templates(m2)
    assert Native.miner_stats(m1).lines == 480

    # stackless events that the miner groups share fingerprints in the batch
    assert length(Enum.uniq(batch)) < length(batch)
  end
end
