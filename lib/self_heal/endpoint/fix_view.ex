defmodule SelfHeal.Endpoint.FixView do
  @moduledoc """
  What a fix changes and why it may deploy, as HTML: the signed-link page
  (`SelfHeal.Endpoint.Approvals`) and the dashboard's fix page
  (`SelfHeal.Endpoint.Dashboard`) render a fix with these functions alike.

    * `diff/2` - the scrubbed patch (`fix_patch`): file and hunk headers,
      added and removed lines coloured, cut at the port's limit with a
      link to the whole patch
    * `validation/1` - the validation facts: the runs (compile, tests, the
      base's tests on the fix, the fix's tests on the base) with their
      results, the regression test and what it proved, scope, size,
      protected paths, refusals
    * `gate/1` - the gate's decision, its reasons and each check

  Every text is escaped; nothing here runs a script or loads anything.
  `css/0` is the style these use.
  """

  @doc "HTML-escapes text (any term is shown as its text)."
  @spec escape(term()) :: binary()
  def escape(text) when is_binary(text) do
    for <<c <- text>>, into: "" do
      case c do
        ?& -> "&amp;"
        ?< -> "&lt;"
        ?> -> "&gt;"
        ?" -> "&quot;"
        ?' -> "&#39;"
        c -> <<c>>
      end
    end
  end

  def escape(nil), do: ""
  def escape(other), do: escape(to_string(other))

  @doc "The style of the fix views."
  @spec css() :: binary()
  def css do
    ".diff{font-family:monospace;font-size:.85em;background:#fafafa;border:1px solid #ddd;" <>
      "padding:.5em;overflow-x:auto;white-space:pre;line-height:1.35}" <>
      ".diff .add{background:#e6ffec;color:#05501f;display:block}" <>
      ".diff .del{background:#ffebe9;color:#82071e;display:block}" <>
      ".diff .hunk{color:#6639ba;background:#f3f0ff;display:block}" <>
      ".diff .file{font-weight:bold;display:block}" <>
      ".facts td,.facts th{padding:.15em .6em;text-align:left;vertical-align:top;border-bottom:1px solid #eee}" <>
      ".ok{color:#05501f}.bad{color:#82071e}.warn{color:#8a5a00}"
  end

  @doc """
  The patch as coloured HTML. `patch` is `fix_patch`'s answer (or nil),
  `full_href` where the whole patch is (or nil).
  """
  @spec diff(map() | nil, binary() | nil) :: iodata()
  def diff(%{"patch" => text} = patch, full_href) when is_binary(text) do
    lines = String.split(text, "\n")
    lines = if List.last(lines) == "", do: Enum.drop(lines, -1), else: lines

    [
      "<pre class=\"diff\">",
      Enum.map(lines, &diff_line/1),
      "</pre>",
      if(patch["truncated"] == true,
        do: [
          "<p class=\"warn\">The patch is cut here (",
          escape(patch["bytes"]),
          " bytes in all)",
          if(full_href,
            do: [": <a href=\"", escape(full_href), "\">the whole patch</a>"],
            else: ""
          ),
          ".</p>"
        ],
        else: ""
      )
    ]
  end

  def diff(_patch, _full_href), do: "<p>No patch was delivered for this fix.</p>"

  defp diff_line(line) do
    class =
      cond do
        String.starts_with?(line, "diff --git ") -> "file"
        String.starts_with?(line, "+++ ") or String.starts_with?(line, "--- ") -> "file"
        String.starts_with?(line, "@@") -> "hunk"
        String.starts_with?(line, "+") -> "add"
        String.starts_with?(line, "-") -> "del"
        true -> nil
      end

    if class,
      do: ["<span class=\"", class, "\">", escape(line), "</span>"],
      else: [escape(line), "\n"]
  end

  @doc "The validation facts of a fix as an HTML table."
  @spec validation(map()) :: iodata()
  def validation(fix) do
    v = fix["validation"] || %{}
    proof = v["proof"] || %{}

    rows = [
      {"Runs", runs(v["steps"])},
      {"Regression test", regression(v, proof)},
      {"Existing tests on the fix", flag(v["existing_tests_passed"], "pass", "fail")},
      {"Scope", listed(v["scope_ok"], "within the stack's files", v["out_of_scope"])},
      {"Size",
       if(v["changed_lines"],
         do: [
           flag(v["size_ok"] != false, "ok", "too large"),
           ": ",
           escape(v["changed_lines"]),
           " lines",
           if(v["max_lines"], do: [" of at most ", escape(v["max_lines"])], else: ""),
           if(v["changed_bytes"], do: [", ", escape(v["changed_bytes"]), " bytes"], else: "")
         ]
       )},
      {"Protected paths", listed(v["protected_ok"], "none touched", v["protected"])},
      {"Refused", listed(v["refused_ok"], "nothing", refused(v["refused"]))},
      {"Tests kept", flag(v["tests_kept"], "yes", "an existing test was changed")},
      {"Sandboxed", flag(v["sandboxed"], "yes", "no")},
      {"Needs a human", why_human(v)},
      {"Confidence", confidence(fix["confidence"])}
    ]

    [
      "<table class=\"facts\">",
      for {k, val} <- rows, val not in [nil, "", []] do
        ["<tr><th>", k, "</th><td>", val, "</td></tr>"]
      end,
      "</table>"
    ]
  end

  defp runs(steps) when is_list(steps) and steps != [] do
    Enum.map_intersperse(steps, "<br>", fn s ->
      # the fix's tests on the base must fail: that is the proof
      expect_fail? = s["step"] == "tests_on_base"
      good? = if expect_fail?, do: s["ok"] == false, else: s["ok"] == true

      [
        "<span class=\"",
        if(good?, do: "ok", else: "bad"),
        "\">",
        escape(step_name(s["step"])),
        ": ",
        escape(s["result"]),
        if(is_integer(s["ms"]), do: [" (", escape(s["ms"]), " ms)"], else: ""),
        if(expect_fail?, do: if(good?, do: ", fails as it must", else: ", passes"), else: ""),
        "</span>"
      ]
    end)
  end

  defp runs(_steps), do: nil

  defp step_name("compile"), do: "compile"
  defp step_name("test"), do: "tests on the fix"
  defp step_name("existing_tests"), do: "the base's tests on the fix"
  defp step_name("tests_on_base"), do: "the fix's tests on the base"
  defp step_name(other), do: other

  defp regression(v, proof) do
    files = v["test_files"] || []

    cond do
      v["regression_proven"] == true ->
        [
          "<span class=\"ok\">proven</span>: ",
          escape(Enum.join(files, ", ")),
          if(proof["detail"], do: [" &mdash; ", escape(proof["detail"])], else: "")
        ]

      files != [] ->
        [
          "<span class=\"warn\">not proven</span>: ",
          escape(Enum.join(files, ", ")),
          if(proof["detail"], do: [" &mdash; ", escape(proof["detail"])], else: "")
        ]

      v != %{} ->
        "<span class=\"bad\">no test added</span>"

      true ->
        nil
    end
  end

  defp flag(nil, _yes, _no), do: nil
  defp flag(true, yes, _no), do: ["<span class=\"ok\">", yes, "</span>"]
  defp flag(_false, _yes, no), do: ["<span class=\"bad\">", no, "</span>"]

  defp listed(nil, _fine, _items), do: nil
  defp listed(true, fine, _items), do: ["<span class=\"ok\">", fine, "</span>"]

  defp listed(_false, _fine, items),
    do: ["<span class=\"bad\">", escape(Enum.join(List.wrap(items), ", ")), "</span>"]

  defp refused(items) when is_list(items) do
    Enum.map(items, fn
      %{"path" => p, "reason" => r} -> "#{p} (#{r})"
      other when is_binary(other) -> other
      other -> inspect(other)
    end)
  end

  defp refused(_), do: []

  defp why_human(%{"why_human" => why}) when is_list(why) and why != [],
    do: ["<span class=\"warn\">", escape(Enum.join(Enum.map(why, &to_string/1), "; ")), "</span>"]

  defp why_human(_v), do: nil

  defp confidence(x) when is_number(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
  defp confidence(_), do: nil

  @doc "The gate's decision: action, reasons and checks."
  @spec gate(map()) :: iodata()
  def gate(fix) do
    case fix["decision"] do
      %{} = d ->
        reasons = d["reasons"] |> List.wrap() |> Enum.filter(&is_binary/1)
        checks = if is_map(d["checks"]), do: Enum.sort(d["checks"]), else: []

        [
          "<p>Decision: <b>",
          escape(d["action"]),
          "</b></p>",
          if(reasons != [],
            do: ["<ul>", for(r <- reasons, do: ["<li>", escape(r), "</li>"]), "</ul>"],
            else: ""
          ),
          if(checks != [],
            do: [
              "<p>",
              Enum.map_intersperse(checks, " ", fn {k, ok} ->
                [
                  "<span class=\"",
                  if(ok == true, do: "ok", else: "bad"),
                  "\">",
                  if(ok == true, do: "&#10003; ", else: "&#10007; "),
                  escape(k),
                  "</span>"
                ]
              end),
              "</p>"
            ],
            else: ""
          )
        ]

      _ ->
        "<p>The gate has not decided yet.</p>"
    end
  end
end
