# shellcheck shell=bash
# The measurements of `make bench`, one function per figure. Sourced by bench/run after the lab,
# the agents, the apps and the peers are up; uses its CLIENT, ECHO_AT, IPERF_AT, PROXY_PIDS,
# PIN1, SAMPLES and the e2e lib. Each function appends samples
#   {"figure","system","round","value"}
# to $SAMPLES; a run that fails is a warning in the report (its cell stays empty), never a
# silent number.

WARNINGS=$E2E_TMP/warnings.txt
: >"$WARNINGS"
warn() { say "warning: $*"; echo "$*" >>"$WARNINGS"; }

sample() { # FIGURE SYSTEM ROUND VALUE
	if ! jq -en --arg v "$4" '$v | tonumber | isinfinite | not' >/dev/null 2>&1; then
		warn "$2, round $3: no value for $1 (got '$4')"
		return 1
	fi
	jq -cn --arg f "$1" --arg s "$2" --argjson r "$3" --argjson v "$4" \
		'{figure: $f, system: $s, round: $r, value: $v}' >>"$SAMPLES"
}

# CPU time of a side: every process of the node (agent, tunnel, apps) is in the node's or one
# of its pods' lab cgroups; cpu.stat usage_usec counts them (user + system).
SIDE_CGROUPS=("" # by side: 1 = node1, 2 = node2
	"$(node_info node1 cgroup) $(pod_info a cgroup) $(pod_info c cgroup)"
	"$(node_info node2 cgroup) $(pod_info b cgroup) $(pod_info d cgroup)")
side_cpu_usec() { # SIDE
	local cg sum=0 u
	for cg in ${SIDE_CGROUPS[$1]}; do
		u=$(awk '$1 == "usage_usec" { print $2 }' "$cg/cpu.stat" 2>/dev/null)
		sum=$((sum + ${u:-0}))
	done
	echo "$sum"
}

# Bytes on the underlay: node1's uplink sees every frame between the two nodes.
underlay_bytes() {
	node_exec node1 ip -j -s link show dev eth0 | jq '.[0].stats64.rx.bytes + .[0].stats64.tx.bytes'
}

rss_kib() { # PID -> resident set in KiB (threads share it)
	awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null
}

measure_throughput() { # SYSTEM ROUND
	local sys=$1 round=$2 host port out c1 c2 bytes gib
	read -r host port <<<"${IPERF_AT[$sys]}"
	c1=$(side_cpu_usec 1) c2=$(side_cpu_usec 2)
	out=$(timeout $((SECS + 30)) "${PIN1[@]}" "$LAB_TOOL" exec "$E2E_LAB" "${CLIENT[$sys]}" -- \
		iperf3 -c "$host" -p "$port" -t "$SECS" -J 2>&1)
	c1=$(($(side_cpu_usec 1) - c1)) c2=$(($(side_cpu_usec 2) - c2))
	bytes=$(jq -r '.end.sum_received.bytes // empty' <<<"$out" 2>/dev/null)
	if [ -z "$bytes" ] || [ "$bytes" = 0 ]; then
		warn "$sys, round $round: iperf3 to $host:$port failed: $(jq -r '.error // empty' <<<"$out" 2>/dev/null || tail -c 300 <<<"$out")"
		return 1
	fi
	sample throughput_gbps "$sys" "$round" "$(jq '.end.sum_received.bits_per_second / 1e9' <<<"$out")"
	gib=$(jq -n "$bytes / 1073741824")
	sample cpu_client_s_per_gib "$sys" "$round" "$(jq -n "$c1 / 1e6 / $gib")"
	sample cpu_server_s_per_gib "$sys" "$round" "$(jq -n "$c2 / 1e6 / $gib")"
}

# tool_json SYSTEM ARGS...: run moat-bench in the system's client pod; its JSON on stdout, a
# warning when it reports an error.
tool_json() {
	local sys=$1 out
	shift
	out=$(tool "$sys" "$@" 2>&1)
	if ! jq -e 'has("error") | not' >/dev/null 2>&1 <<<"$out"; then
		warn "$sys: moat-bench $*: ${out:0:300}"
		return 1
	fi
	echo "$out"
}

measure_rr() { # SYSTEM ROUND
	local sys=$1 round=$2 out
	out=$(tool_json "$sys" rr "${ECHO_AT[$sys]}" --count "$RR_COUNT") || return 1
	sample rr_p50_us "$sys" "$round" "$(jq .p50_us <<<"$out")"
	sample rr_p99_us "$sys" "$round" "$(jq .p99_us <<<"$out")"
}

measure_connrate() { # SYSTEM ROUND CLIENTS
	local sys=$1 round=$2 k=$3 out u0 u1 n
	u0=$(underlay_bytes)
	out=$(tool "$sys" connrate "${ECHO_AT[$sys]}" --clients "$k" --seconds "$CONN_SECS" 2>&1)
	u1=$(underlay_bytes)
	n=$(jq -r '.connections // 0' <<<"$out" 2>/dev/null)
	if [ "$(jq -r '.errors // 1' <<<"$out" 2>/dev/null)" != 0 ]; then
		warn "$sys, round $round, $k client(s): connection errors: ${out:0:300}"
	fi
	[ "${n:-0}" -gt 0 ] || { warn "$sys, round $round: no connection completed"; return 1; }
	sample "conns_$k" "$sys" "$round" "$(jq .per_second <<<"$out")"
	[ "$k" = 1 ] && sample underlay_bytes_per_conn "$sys" "$round" "$(jq -n "($u1 - $u0) / $n")"
	return 0
}

measure_idle() { # SYSTEM ROUND: RSS growth of the proxies while IDLE_CONNS idle connections exist
	local sys=$1 round=$2 log=$E2E_TMP/hold.log p1 p2 r1 r2 hpid
	if [ "$sys" = raw ]; then # nothing in user space holds a raw connection
		sample idle_kib_client raw "$round" 0 && sample idle_kib_server raw "$round" 0 &&
			sample idle_kib raw "$round" 0
		return
	fi
	# Fresh proxies each round: memory a process has freed stays resident, so after a first
	# 1,000 connections the next ones would find their memory there and cost almost nothing.
	stop_proxies "$sys"
	if ! start_proxies "$sys" || ! carries "$sys"; then
		warn "$sys, round $round: its proxies did not come back after a restart"
		return 1
	fi
	p1=${PROXY_PIDS[$sys-1]} p2=${PROXY_PIDS[$sys-2]}
	r1=$(rss_kib "$p1") r2=$(rss_kib "$p2")
	"${PIN1[@]}" "$LAB_TOOL" exec "$E2E_LAB" "${CLIENT[$sys]}" -- "$BENCH_TOOL" hold "${ECHO_AT[$sys]}" \
		--count "$IDLE_CONNS" --seconds 120 >"$log" 2>&1 &
	hpid=$!
	wait_for "$IDLE_CONNS idle connections through $sys" 90 grep -q -e '"event":"holding"' -e '"error"' "$log"
	if grep -q '"event":"holding"' "$log"; then
		sleep 1 # let both proxies finish their side of the last connections
		r1=$(($(rss_kib "$p1") - r1)) r2=$(($(rss_kib "$p2") - r2))
		sample idle_kib_client "$sys" "$round" "$(jq -n "$r1 / $IDLE_CONNS")"
		sample idle_kib_server "$sys" "$round" "$(jq -n "$r2 / $IDLE_CONNS")"
		sample idle_kib "$sys" "$round" "$(jq -n "($r1 + $r2) / $IDLE_CONNS")"
	else
		warn "$sys, round $round: $IDLE_CONNS idle connections did not open: $(head -c 300 "$log")"
	fi
	kill -TERM "$hpid" 2>/dev/null
	wait "$hpid" 2>/dev/null
	sleep 1 # the proxies close their ends before the next figure
}

measure_denied() { # ROUND (moat only: the others have no policy at connect())
	local out
	out=$(tool_json moat denied 10.244.2.10:7999 --count "$DENY_COUNT") || return 1
	sample denied_p50_us moat "$1" "$(jq .p50_us <<<"$out")"
	sample denied_p99_us moat "$1" "$(jq .p99_us <<<"$out")"
}

# Same node: pods e and f (both on node1) through moat, which joins the two app sockets in the
# kernel (sockmap), against raw TCP between the same two network namespaces. Raw needs the
# pair out of the mesh (capture and plaintext steering are per enrolled pod), so each round
# measures once unenrolled and once enrolled, alternating which comes first.
samenode_carries() { # e -> f's echo server answers a round trip
	timeout 20 "${PIN1[@]}" "$LAB_TOOL" exec "$E2E_LAB" e -- "$BENCH_TOOL" rr "$SAMENODE_ECHO" \
		--count 10 --warmup 0 >/dev/null 2>&1
}
samenode_sockmap_bytes() {
	node_exec node1 curl -s -m 5 http://127.0.0.1:15020/metrics |
		awk 'index($0, "moat_engine_bytes_total{engine=\"sockmap\"") == 1 { s += $NF } END { printf "%d\n", s + 0 }'
}
samenode_mode() { # raw | moat: enroll or unenroll e and f
	local p
	for p in e f; do
		if [ "$1" = moat ]; then enroll "$p" >/dev/null; else unenroll "$p" >/dev/null 2>&1; fi
	done
	wait_for "e -> f carries a round trip ($1)" 15 samenode_carries
}
measure_samenode() { # ROUND
	local round=$1 sys out j0 j1 order=(raw moat)
	[ $((round % 2)) -eq 0 ] && order=(moat raw)
	for sys in "${order[@]}"; do
		samenode_mode "$sys" || { warn "same node, $sys, round $round: e -> f carries no round trip"; continue; }
		j0=$(samenode_sockmap_bytes)
		out=$(timeout $((SECS + 30)) "${PIN1[@]}" "$LAB_TOOL" exec "$E2E_LAB" e -- \
			iperf3 -c "${SAMENODE_IPERF% *}" -p "${SAMENODE_IPERF#* }" -t "$SECS" -J 2>&1)
		if ! jq -e '.end.sum_received.bytes > 0' >/dev/null 2>&1 <<<"$out"; then
			warn "same node, $sys, round $round: iperf3 failed: $(jq -r '.error // empty' <<<"$out" 2>/dev/null || tail -c 300 <<<"$out")"
			continue
		fi
		if [ "$sys" = moat ]; then # records close a moment after iperf3 ends
			wait_for "the joined connections are counted" 5 test "$(samenode_sockmap_bytes)" -gt "$j0"
			j1=$(samenode_sockmap_bytes)
			[ "$j1" -gt "$j0" ] || { warn "same node, round $round: moat did not join e -> f (moat_engine_bytes_total{engine=\"sockmap\"} unchanged)"; continue; }
		fi
		sample samenode_gbps "$sys" "$round" "$(jq '.end.sum_received.bits_per_second / 1e9' <<<"$out")"
	done
	samenode_mode raw >/dev/null 2>&1 # out of the mesh between rounds
}

# ---------------------------------------------------------------- profile
# perf_top FILE SORT N: the top N entries of a perf.data by SORT (dso or dso,sym) as JSON
# [{percent, dso, symbol}] (symbol empty when sorting by dso only).
perf_top() {
	perf report -i "$1" --stdio --no-children --sort "$2" --percent-limit 0.5 2>/dev/null |
		awk '$1 ~ /%$/ { p = $1; sub(/%$/, "", p); d = $2; s = "";
			for (i = 4; i <= NF; i++) s = s (i > 4 ? " " : "") $i;
			printf "%s\t%s\t%s\n", p, d, s }' | head -n "$3" |
		jq -R -s 'split("\n") | map(select(length > 0) | split("\t")
			| {percent: (.[0] | tonumber), dso: .[1], symbol: .[2]})'
}

# perf_side FILE: {samples, objects: top 6 by shared object, symbols: top 12 symbols}
perf_side() {
	local o s n
	n=$(perf script -i "$1" -F ip 2>/dev/null | wc -l)
	o=$(perf_top "$1" dso 6) || o='[]'
	s=$(perf_top "$1" dso,sym 12) || s='[]'
	jq -n --argjson n "${n:-0}" --argjson o "${o:-[]}" --argjson s "${s:-[]}" \
		'{samples: $n, objects: $o, symbols: $s}'
}

# perf_during NAME CMD...: record both moatd's while CMD runs -> {"NAME": {client:, server:}}
perf_during() {
	local name=$1 n pids=() f
	shift
	for n in 1 2; do
		f=$E2E_TMP/perf-$n.data
		perf record -q -e cpu-clock -F 1999 -p "${PROXY_PIDS[moat-$n]}" -o "$f" >/dev/null 2>&1 &
		pids+=("$!")
	done
	sleep 0.5
	"$@" >/dev/null 2>&1
	kill -INT "${pids[@]}" 2>/dev/null
	wait "${pids[@]}" 2>/dev/null
	jq -n --arg name "$name" --argjson c "$(perf_side "$E2E_TMP/perf-1.data")" \
		--argjson s "$(perf_side "$E2E_TMP/perf-2.data")" \
		'{($name): {"client side (node1)": $c, "server side (node2)": $s}}'
}

profile_moatd() {
	local host port tp cr
	if ! command -v perf >/dev/null; then
		warn "perf is not installed: no profile"
		echo '{}'
		return
	fi
	read -r host port <<<"${IPERF_AT[moat]}"
	tp=$(perf_during "throughput" timeout $((SECS + 30)) "${PIN1[@]}" "$LAB_TOOL" exec "$E2E_LAB" a -- \
		iperf3 -c "$host" -p "$port" -t "$SECS")
	cr=$(perf_during "connections/s, 1 client" tool moat connrate "${ECHO_AT[moat]}" --seconds "$CONN_SECS")
	[ -n "$tp" ] || tp="{}"
	[ -n "$cr" ] || cr="{}"
	jq -n --argjson a "$tp" --argjson b "$cr" '$a + $b'
}

# ---------------------------------------------------------------- versions
versions_json() {
	local metrics engine ktls
	metrics=$(node_exec node1 curl -s -m 3 http://127.0.0.1:15020/metrics 2>/dev/null)
	engine=$(sed -n 's/^moat_relay_engine{engine="\([^"]*\)"} 1.*/\1/p' <<<"$metrics" | head -1)
	ktls=$(awk '$1 == "moat_ktls_available" { print ($2 == 1 ? "yes" : "no") }' <<<"$metrics")
	jq -n --arg moat "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
		--arg kernel "$(uname -r)" --arg engine "${engine:-unknown}" --arg ktls "${ktls:-unknown}" \
		--arg haproxy "$(haproxy -v 2>/dev/null | head -1)" \
		--arg stunnel "$(stunnel -version 2>&1 | sed -n 's/^\(stunnel [0-9.]*\).*/\1/p' | head -1)" \
		--arg openssl "$(openssl version 2>/dev/null)" --arg iperf3 "$(iperf3 --version 2>/dev/null | head -1)" \
		--arg perf "$(perf --version 2>/dev/null || echo none)" \
		'{moat: $moat, engine: $engine, ktls_available: $ktls, kernel: $kernel, haproxy: $haproxy,
		  stunnel: $stunnel, openssl: $openssl, iperf3: $iperf3, perf: $perf}'
}
