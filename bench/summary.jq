# bench/summary.jq: the samples of one `make bench` run -> the results JSON.
# Input (jq -s): one object per sample {"figure","system","round","value"}.
# --argjson meta {...}: date, quick, rounds, machine, versions, engine, profile (bench/run).
# Each figure: per system median, min, max over the rounds; the ratio of every system's
# median to raw's and to the best peer's (haproxy or stunnel, whichever is better on that
# figure). A system that has no such figure (only moat denies at connect()) carries null
# with the reason in "not_applicable".

def figures: [
  {id: "throughput_gbps", label: "Throughput, 1 stream (iperf3)", unit: "Gbit/s", better: "higher"},
  {id: "rr_p50_us", label: "1-byte request/response, p50", unit: "µs", better: "lower"},
  {id: "rr_p99_us", label: "1-byte request/response, p99", unit: "µs", better: "lower"},
  {id: "conns_1", label: "New connections/s, 1 client", unit: "conn/s", better: "higher"},
  {id: "conns_4", label: "New connections/s, 4 clients", unit: "conn/s", better: "higher"},
  {id: "denied_p50_us", label: "Denied connect(), p50", unit: "µs", better: "lower"},
  {id: "denied_p99_us", label: "Denied connect(), p99", unit: "µs", better: "lower"},
  {id: "idle_kib", label: "Memory per idle connection, both sides", unit: "KiB", better: "lower"},
  {id: "idle_kib_client", label: "Memory per idle connection, client side", unit: "KiB", better: "lower"},
  {id: "idle_kib_server", label: "Memory per idle connection, server side", unit: "KiB", better: "lower"},
  {id: "cpu_client_s_per_gib", label: "CPU per GiB moved, client side", unit: "s/GiB", better: "lower"},
  {id: "cpu_server_s_per_gib", label: "CPU per GiB moved, server side", unit: "s/GiB", better: "lower"},
  {id: "underlay_bytes_per_conn", label: "Underlay bytes per new connection", unit: "B", better: "lower"},
  {id: "samenode_gbps", label: "Same-node throughput, 1 stream (iperf3; moat: sockmap join)", unit: "Gbit/s", better: "higher"}
];
def systems: ["raw", "moat", "haproxy", "stunnel"];
def peers: ["haproxy", "stunnel"];
def not_applicable: {
  "denied_p50_us": {raw: "no policy at connect()", haproxy: "no policy at connect()", stunnel: "no policy at connect()"},
  "denied_p99_us": {raw: "no policy at connect()", haproxy: "no policy at connect()", stunnel: "no policy at connect()"},
  "samenode_gbps": {haproxy: "same node: moat and raw only", stunnel: "same node: moat and raw only"}
};

def median: sort | if length == 0 then null
  elif length % 2 == 1 then .[(length - 1) / 2]
  else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def ratio(a; b): if a == null or b == null or b == 0 then null else a / b end;

. as $samples
| [figures[] | . as $f
  | ([systems[] as $s
      | [$samples[] | select(.figure == $f.id and .system == $s) | .value] as $v
      | {key: $s, value: (if ($v | length) == 0 then null
          else {median: ($v | median), min: ($v | min), max: ($v | max), rounds: ($v | length), samples: $v} end)}]
     | from_entries) as $vals
  | ([peers[] | select($vals[.] != null) | {system: ., median: $vals[.].median}]
     | if length == 0 then null
       elif $f.better == "higher" then max_by(.median) else min_by(.median) end) as $best
  | $f + {
      values: $vals,
      not_applicable: (not_applicable[$f.id] // {}),
      best_peer: ($best.system // null),
      ratio_to_raw: ([systems[] | {key: ., value: ratio($vals[.].median; $vals.raw.median)}] | from_entries),
      ratio_to_best_peer: ([systems[] | {key: ., value: ratio($vals[.].median; $best.median)}] | from_entries)
    }]
| (map({key: .id, value: .}) | from_entries) as $by
| def med(id; s): $by[id].values[s].median;
  def goal(name; op; limit; value): {goal: name, target: "\(op) \(limit)", value: value,
    met: (if value == null then null elif op == ">=" then value >= limit else value <= limit end)};
  def added_p50: if med("rr_p50_us"; "moat") == null or med("rr_p50_us"; "raw") == null then null
    else med("rr_p50_us"; "moat") - med("rr_p50_us"; "raw") end;
  $meta + {
    figures: .,
    goals: [
      goal("cross-node throughput / raw"; ">="; 0.8; $by.throughput_gbps.ratio_to_raw.moat),
      goal("same-node throughput / raw (same two netns)"; ">="; 1.0; $by.samenode_gbps.ratio_to_raw.moat),
      goal("new connections/s / raw, 1 client"; ">="; 0.5; $by.conns_1.ratio_to_raw.moat),
      goal("new connections/s / raw, 4 clients"; ">="; 0.5; $by.conns_4.ratio_to_raw.moat),
      goal("added request/response p50 over raw (µs)"; "<="; 25; added_p50),
      goal("denied connect() to error, p50 (µs)"; "<="; 20; med("denied_p50_us"; "moat")),
      goal("user-space memory per idle connection, both sides (KiB)"; "<="; 1; med("idle_kib"; "moat"))
    ]
  }
