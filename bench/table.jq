# bench/table.jq: the results JSON of bench/summary.jq -> the markdown report (jq -r).

def abs: if . < 0 then -. else . end;
def fmt: if . == null then "—"
  elif (abs) >= 100 then (round | tostring)
  elif (abs) >= 10 then ((. * 10 | round) / 10 | tostring)
  else ((. * 100 | round) / 100 | tostring) end;
def cell($f; $s): $f.values[$s] as $v
  | if $v == null then "n/a (\($f.not_applicable[$s] // "not measured"))"
    elif $v.rounds == 1 then ($v.median | fmt)
    else "\($v.median | fmt) (\($v.min | fmt)–\($v.max | fmt))" end;
def ratio: if . == null then "—" else "\(fmt)x" end;
def yesno: if . == null then "not measured" elif . then "yes" else "**no**" end;
def row: "| " + join(" | ") + " |";

"# moat bench, \(.date)",
"",
"\(.machine.cpus) CPUs, kernel \(.versions.kernel), \(.machine.pinning). " +
"\(.rounds) round(s), systems interleaved within each round" +
(if .quick then " (QUICK=1 smoke run: short runs, one round; not for comparison)" else "" end) + ". " +
"moat relay engine: \(.versions.engine) (kTLS available: \(.versions.ktls_available)). " +
"How each figure is taken: bench/README.md.",
"",
"## Figures: median (min–max) over the rounds",
"",
(["figure", "unit", "raw TCP", "moat", "haproxy", "stunnel"] | row),
"|---|---|---:|---:|---:|---:|",
(.figures[] as $f | [$f.label, $f.unit, cell($f; "raw"), cell($f; "moat"), cell($f; "haproxy"), cell($f; "stunnel")] | row),
"",
"## Ratios of medians (to raw TCP, and to the better of haproxy and stunnel on that figure)",
"",
(["figure", "better", "moat / raw", "moat / best peer", "best peer", "haproxy / raw", "stunnel / raw"] | row),
"|---|---|---:|---:|---|---:|---:|",
(.figures[] as $f | [$f.label, $f.better, ($f.ratio_to_raw.moat | ratio), ($f.ratio_to_best_peer.moat | ratio),
  ($f.best_peer // "—"), ($f.ratio_to_raw.haproxy | ratio), ($f.ratio_to_raw.stunnel | ratio)] | row),
"",
"## moat against its performance targets (DESIGN.md)",
"",
(["target", "goal", "moat", "met"] | row),
"|---|---|---:|---|",
(.goals[] | [.goal, .target, (.value | fmt), (.met | yesno)] | row),
"",
"## Versions",
"",
(["part", "version"] | row),
"|---|---|",
(.versions | to_entries[] | [.key, (.value | tostring)] | row),
"",
"## Where moatd's time goes (perf record -e cpu-clock, top symbols)",
"",
(.profile | to_entries[] | .key as $run | .value | to_entries[] |
  "### \($run), \(.key)", "",
  (if (.value.symbols // [] | length) == 0 then "(no samples: perf did not run or moatd was idle)"
   else "\(.value.samples) samples at 1999 Hz. By object: " + ([.value.objects[] | "\(.dso) \(.percent)%"] | join(", ")) + ".", "",
     (["share", "object", "symbol"] | row), "|---:|---|---|",
     (.value.symbols[] | ["\(.percent)%", .dso, "`\(.symbol)`"] | row) end), "")
,
(if (.warnings // [] | length) == 0 then empty else
  "## Warnings (runs that failed: their cells are empty or rest on fewer rounds)", "",
  (.warnings[] | "- \(.)"), "" end)
