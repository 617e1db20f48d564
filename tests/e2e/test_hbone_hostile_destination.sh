#!/usr/bin/env bash
# A stalling or misbehaving HBONE destination cannot exhaust the source node.
#
# node1 runs moatd with short deadlines (CONNECT response 2 s, stream idle 2 s) and caps of
# 50 CONNECTs awaiting a response per destination and 60 per source pod. node2 has no agent: its pods are Node.js
# HBONE servers (tests/interop/h2_hostile.js) presenting their real SVIDs (moatctl ca issue):
#   hb/healthy 10.244.2.10  200, an 82-byte banner, then echo
#   hb/hang    10.244.2.11  answers PING, never answers CONNECT
#   hb/silent  10.244.2.12  200, then nothing
#   hb/push    10.244.2.13  PUSH_PROMISE (raw frames; the client disabled push)
#   hb/info    10.244.2.14  100 Continue, then 200, banner, echo
#   hb/stall   10.244.2.15  as healthy; after the first stream its connection goes silent
#                           (no FIN, no PING answer); later connections are served
#   hb/hang2   10.244.2.16  as hang (a second stalling destination, for the per-pod cap)
# node1: hb/src 10.244.1.10 (the churning app), hb/bystander 10.244.1.11 (another pod of the
# same node, talking to healthy in a loop the whole time).
#
# Proves: 1,000 churned app connections to hang (each closes after 0.1 s) leave moatd's fds and
# streams bounded and back to the baseline afterwards, each reset as soon as its app left, with
# that reason in its access-log record; a burst of 80 apps that stay meets the cap (50 pending
# per destination): refusals counted and logged, the admitted ones end at the response
# deadline; the bystander's connections all succeed meanwhile; a
# CONNECT never answered ends at the deadline; 200-then-silence ends at the idle deadline;
# PUSH_PROMISE ends with nghttp2's GOAWAY and its reason; 100-then-200 works; byte counts are
# exact (app sent 100, received 182: bytes_received 100, bytes_sent 182, ztunnel's convention);
# a pooled connection that went silent is suspected after 1 s, so the next app connection goes
# to a fresh connection and succeeds.
# Bounded: every wait has a limit; the whole file takes about a minute.
# Functions passed to check_wait run indirectly; fd counts of /proc/PID/fd are plain numbers.
# shellcheck source-path=SCRIPTDIR disable=SC2016,SC2317,SC2012
set -u
source "$(dirname "$0")/lib.sh"
INTEROP_DIR=$E2E_ROOT/tests/interop

command -v node >/dev/null || { echo "skip $(e2e_name): no node (Node.js): make deps"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }
e2e_init

NS=hb
TD=cluster.local
spiffe() { echo "spiffe://$TD/ns/$NS/sa/$1"; }
SRC_IP=10.244.1.10
BYST_IP=10.244.1.11
declare -A IP=([healthy]=10.244.2.10 [hang]=10.244.2.11 [silent]=10.244.2.12 [push]=10.244.2.13 [info]=10.244.2.14 [stall]=10.244.2.15 [hang2]=10.244.2.16)
MODES=(healthy hang silent push info stall hang2)

E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml "$NS"
	workload_yaml "$NS" src "$SRC_IP"
	workload_yaml "$NS" bystander "$BYST_IP"
	for m in "${MODES[@]}"; do workload_yaml "$NS" "$m" "${IP[$m]}"; done
} >"$E2E_CONFIG/mesh.yaml"

make_ca "$TD" >/dev/null || e2e_abort "moatctl ca init" "see above"
for m in "${MODES[@]}"; do
	check "moatctl ca issue: the SVID of $NS/$m" "$MOATCTL" ca issue --ca "$E2E_CA" --id "$(spiffe "$m")" --out "$E2E_TMP/certs/$m"
done

{
	echo "lab hb$E2E_RUN_ID"
	echo "underlay 192.168.91.0/24"
	echo "node node1 192.168.91.11 10.244.1.0/24"
	echo "node node2 192.168.91.12 10.244.2.0/24"
	echo "pod node1 $NS/src $SRC_IP"
	echo "pod node1 $NS/bystander $BYST_IP"
	for m in "${MODES[@]}"; do echo "pod node2 $NS/$m ${IP[$m]}"; done
} >"$E2E_TMP/lab.conf"
lab_up "$E2E_TMP/lab.conf"

bg_in_pod() { # POD LOG CMD...: in the background, killed at teardown
	local pod=$1 log=$2
	shift 2
	"$LAB_TOOL" exec "$E2E_LAB" "$pod" -- "$@" </dev/null >"$log" 2>&1 &
	E2E_BG_PIDS+=("$!")
	disown "$!"
}
for m in "${MODES[@]}"; do
	mode=$m
	[ "$m" = healthy ] && mode=ok
	[ "$m" = hang2 ] && mode=hang
	bg_in_pod "$NS/$m" "$E2E_TMP/srv-$m.log" node "$INTEROP_DIR/h2_hostile.js" --mode "$mode" \
		--cert "$E2E_TMP/certs/$m/cert.pem" --key "$E2E_TMP/certs/$m/key.pem" --ca "$E2E_CA/root-cert.pem"
done
for m in "${MODES[@]}"; do
	check_wait "Node HBONE server ($m) listens in $NS/$m:15008" 15 grep -q '"listening"' "$E2E_TMP/srv-$m.log"
done

start_agent node1 --hbone-response-timeout 2 --stream-idle 2 --hbone-suspect 1 \
	--max-pending-per-destination 50 --max-pending-per-pod 60 --pool-max-connections 16
wait_ready node1 30 || e2e_abort "moatd on node1 becomes ready"
check "enroll $NS/src" enroll "$NS/src"
check "enroll $NS/bystander" enroll "$NS/bystander"

head -c 100 /dev/urandom >"$E2E_TMP/req100"
# app_exchange POD IP OUT: the app sends 100 bytes, half-closes, keeps what comes back.
app_exchange() { lab_exec "$1" timeout 10 socat -T 5 -t 5 - "TCP:$2:9000" <"$E2E_TMP/req100" >"$3" 2>/dev/null; }
reply_ok() { app_exchange "$1" "$2" "$3" && [ "$(stat -c %s "$3")" = 182 ]; }
record() { # IP COND: the newest outbound record to IP:9000 satisfying COND
	access_log_select node1 ".type == \"connection\" and .direction == \"outbound\" and .dst_addr == \"$1:9000\" and ($2)" | tail -n 1
}
has_record() { [ -n "$(record "$1" "$2")" ]; }
moatd_fds() { ls "/proc/$(agent_pid node1)/fd" 2>/dev/null | wc -l; }
metric() { node_exec node1 curl -s -m 2 http://127.0.0.1:15020/metrics | awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { print s + 0 }'; }

# ---------------------------------------------------------------- exact bytes, 1xx
check "src -> healthy:9000: the app sends 100 bytes, receives 182 (82-byte banner + echo)" \
	reply_ok "$NS/src" "${IP[healthy]}" "$E2E_TMP/healthy.out"
check_wait "... outbound record: bytes_received 100 (from the app), bytes_sent 182 (to the app), error null" 10 \
	has_record "${IP[healthy]}" '.bytes_received == 100 and .bytes_sent == 182 and .error == null and .opened'
check "src -> info:9000 (100 Continue, then 200): the app gets its 182 bytes" \
	reply_ok "$NS/src" "${IP[info]}" "$E2E_TMP/info.out"
check_wait "... outbound record: opened, 100 / 182 bytes, error null (the 1xx was skipped)" 10 \
	has_record "${IP[info]}" '.opened and .bytes_received == 100 and .bytes_sent == 182 and .error == null'

# ---------------------------------------------------------------- deadlines and reasons
lab_exec "$NS/src" timeout 10 socat -T 6 - "TCP:${IP[hang]}:9000" < <(echo waiting; sleep 6) >/dev/null 2>&1 &
hang_pid=$!
lab_exec "$NS/src" timeout 10 socat -T 6 - "TCP:${IP[silent]}:9000" < <(echo hi; sleep 6) >/dev/null 2>&1 &
silent_pid=$!
app_exchange "$NS/src" "${IP[push]}" "$E2E_TMP/push.out"
check_wait "hang: the CONNECT is reset at the 2 s response deadline, with that reason" 12 \
	has_record "${IP[hang]}" '(.error // "") | test("no response to CONNECT within 2000 ms")'
check_wait "silent: 200 then nothing: reset at the 2 s stream idle deadline, with that reason" 12 \
	has_record "${IP[silent]}" '.opened and ((.error // "") | test("idle: no bytes either way"))'
check_wait "push: the record names nghttp2's GOAWAY and PUSH_PROMISE" 10 \
	has_record "${IP[push]}" '(.error // "") | (test("moatd sent GOAWAY \\(PROTOCOL_ERROR\\)") and test("PUSH_PROMISE"))'
check "... and moatd's log says so (warn line naming the connection)" \
	bash -c "grep -E 'HBONE .*${IP[push]}:15008: moatd sent GOAWAY \\(PROTOCOL_ERROR\\): .*PUSH_PROMISE' '$(agent_dir node1)/moatd.log'"
wait "$hang_pid" "$silent_pid" 2>/dev/null
info "records: $(record "${IP[hang]}" true | jq -c .error) $(record "${IP[silent]}" true | jq -c .error) $(record "${IP[push]}" true | jq -c .error)"

# ---------------------------------------------------------------- a pooled connection goes silent
check "src -> stall:9000: the first exchange works (182 bytes), then the server stops reading that connection" \
	reply_ok "$NS/src" "${IP[stall]}" "$E2E_TMP/stall1.out"
check_wait "... the stall server says its first connection went silent" 5 grep -q '"stalled"' "$E2E_TMP/srv-stall.log"
lab_exec "$NS/src" timeout 10 socat -T 6 -t 6 - "TCP:${IP[stall]}:9000" < <(cat "$E2E_TMP/req100"; sleep 4) >"$E2E_TMP/stall2.out" 2>/dev/null &
stall2_pid=$!
sleep 1.5 # past --hbone-suspect 1 s: the waiting CONNECT made the silent connection suspect
check "an app connecting 1.5 s later gets a fresh connection, not the silent one: 182 bytes back" \
	reply_ok "$NS/src" "${IP[stall]}" "$E2E_TMP/stall3.out"
wait "$stall2_pid" 2>/dev/null
check_eq "... the app that landed on the silent connection got nothing" 0 "$(stat -c %s "$E2E_TMP/stall2.out")"
check_wait "... its record: no response to CONNECT within 2000 ms" 10 \
	has_record "${IP[stall]}" '(.error // "") | test("no response to CONNECT within 2000 ms")'
check "... and moatd logged the suspicion (no new streams until it answers a PING)" \
	grep -qE "HBONE .*${IP[stall]}:15008: a CONNECT waited [0-9]+ ms for its response: no new streams on this connection until it answers a PING" "$(agent_dir node1)/moatd.log"

# ---------------------------------------------------------------- 1,000 churned connections
wait_for "moatd's fds settle" 10 bash -c "[ \$(ls /proc/$(agent_pid node1)/fd | wc -l) -lt 200 ]"
base_fds=$(moatd_fds)
# The issue's scenario: a node whose moatd has a low fd limit. Before the fix the churn below
# held one fd per app connection until the destination closed (1,000 here): EMFILE.
fd_limit=$((base_fds + 150))
soft0=$(prlimit --pid "$(agent_pid node1)" --nofile -o SOFT --noheadings | tr -d ' ')
check "moatd's fd limit (soft) lowered from $soft0 to $fd_limit (prlimit)" prlimit --pid "$(agent_pid node1)" --nofile="$fd_limit:"
refused0=$(metric moat_hbone_streams_refused_total)
# Bystander: another pod of node1 talks to healthy the whole time (bounded: 400 rounds).
: >"$E2E_TMP/bystander.results"
(
	for _ in $(seq 400); do
		[ -e "$E2E_TMP/churn.done" ] && break
		if reply_ok "$NS/bystander" "${IP[healthy]}" "$E2E_TMP/byst.out"; then echo ok; else echo "fail $(stat -c %s "$E2E_TMP/byst.out" 2>/dev/null)"; fi
		sleep 0.1
	done >>"$E2E_TMP/bystander.results"
) &
byst_pid=$!
# Sampler: moatd's fd count every 0.1 s while the churn runs (bounded: 1200 samples).
(
	for _ in $(seq 1200); do
		[ -e "$E2E_TMP/churn.done" ] && break
		ls "/proc/$(agent_pid node1)/fd" 2>/dev/null | wc -l
		sleep 0.1
	done >"$E2E_TMP/fds.samples"
) &
sampler_pid=$!
hang_records() { access_log_select node1 ".type == \"connection\" and .direction == \"outbound\" and .dst_addr == \"${IP[hang]}:9000\" and ($1)" | wc -l; }
hang_records_at_least() { [ "$(hang_records true)" -ge "$1" ]; }
none_waiting() { [ "$(metric moat_hbone_pool_waiting)" = 0 ]; }
fds_at_most() { [ "$(moatd_fds)" -le "$1" ]; }
records0=$(hang_records true)

# Phase A: 1,000 impatient apps, 25 at a time (half the cap): each leaves after 0.1 s and
# moatd must notice at once, not hold the stream and its fd until the destination closes.
churn=$(lab_exec "$NS/src" timeout 150 node "$INTEROP_DIR/churn.js" --target "${IP[hang]}:9000" \
	--count 1000 --concurrency 25 --hold-ms 100 --send 10 --timeout-ms 140000)
info "churn: $churn"
check_json "1,000 app connections to hang, 25 at a time, each closed after 0.1 s (none got a byte)" "$churn" \
	'.attempted == 1000' '.replied == 0'
cp "$E2E_TMP/fds.samples" "$E2E_TMP/fds.a" 2>/dev/null
peak=$(sort -n "$E2E_TMP/fds.a" | tail -n 1)
info "moatd fds: baseline $base_fds, peak during the churn $peak ($(wc -l <"$E2E_TMP/fds.a") samples)"
check "moatd's fds stay bounded during the churn: peak $peak <= baseline $base_fds + 50 pending + 16 pool + 30" \
	test "$peak" -le $((base_fds + 96))
check_wait "every churned connection has its access-log record" 15 hang_records_at_least $((records0 + 1000))
left=$(hang_records '(.error // "") | test("the app closed its connection while the CONNECT waited [0-9]+ ms")')
capped=$(( $(metric moat_hbone_streams_refused_total) - refused0 ))
info "phase A: $left reset because the app left, $capped refused by the cap (apps overlapping in a busy loop)"
check_eq "... each ended because the app left (detected at once) or was refused by the cap; none waited for the deadline" \
	1000 "$((left + capped))"
check "... most were let through and reset when their app left ($left >= 900)" test "$left" -ge 900
check_wait "after the churn moatd's fds are back near the baseline (<= $((base_fds + 10)))" 10 fds_at_most $((base_fds + 10))
check_wait "... and no CONNECT awaits a response any more (moat_hbone_pool_waiting 0)" 10 none_waiting

# Phase B: 80 apps that stay (3 s, past the 2 s deadline), all at once: at most 50 may wait.
records1=$(hang_records true)
refused1=$(metric moat_hbone_streams_refused_total)
burst=$(lab_exec "$NS/src" timeout 60 node "$INTEROP_DIR/churn.js" --target "${IP[hang]}:9000" \
	--count 80 --concurrency 80 --hold-ms 3000 --send 10 --timeout-ms 50000)
info "burst: $burst"
check_wait "the burst's 80 connections all have their records" 15 hang_records_at_least $((records1 + 80))
refused=$(( $(metric moat_hbone_streams_refused_total) - refused1 ))
waited=$(hang_records '(.error // "") | test("no response to CONNECT within 2000 ms")')
info "burst: refused by the cap $refused, ended at the response deadline $((waited - 1))"
check "the per-destination cap (50) refused the rest (moat_hbone_streams_refused_total moved: $refused)" \
	test "$refused" -ge 1 -a "$refused" -le 80
check "... at most 50 were let through, and they ended at the 2 s response deadline ($((waited - 1)))" \
	test $((waited - 1)) -le 50 -a $((waited - 1 + refused)) -eq 80
check "... moatd logged the refusal with the cap's name" \
	grep -q 'HBONE: refused a new connection from pod hb/src: .*(--max-pending-per-destination 50)' "$(agent_dir node1)/moatd.log"

# Phase C: 40 apps to hang and 40 to hang2 at once (each under the per-destination cap): the
# per-pod cap (60) refuses the rest; the bystander (another pod) is not affected.
metric_pod() { metric 'moat_hbone_streams_refused_total{reason="pending_per_pod"}'; }
pod0=$(metric_pod)
for d in hang hang2; do
	lab_exec "$NS/src" timeout 60 node "$INTEROP_DIR/churn.js" --target "${IP[$d]}:9000" \
		--count 40 --concurrency 40 --hold-ms 3000 --send 10 --timeout-ms 50000 >"$E2E_TMP/burst-$d.json" &
	E2E_BG_PIDS+=("$!")
done
wait_for "both bursts end" 30 bash -c "[ -s '$E2E_TMP/burst-hang.json' ] && [ -s '$E2E_TMP/burst-hang2.json' ]"
by_pod=$(( $(metric_pod) - pod0 ))
info "bursts: $(cat "$E2E_TMP/burst-hang.json" "$E2E_TMP/burst-hang2.json" | tr '\n' ' '); refused per pod: $by_pod"
check "the per-pod cap (60) refused some of the 80 (reason pending_per_pod: $by_pod, at least 20)" \
	test "$by_pod" -ge 20 -a "$by_pod" -le 80
check "... moatd logged it with the cap's name" \
	grep -q 'HBONE: refused a new connection from pod hb/src: [0-9]* CONNECTs from pod hb/src already await a response (--max-pending-per-pod 60)' "$(agent_dir node1)/moatd.log"
touch "$E2E_TMP/churn.done"
wait "$byst_pid" "$sampler_pid" 2>/dev/null
check_eq "no record to hang:9000 is without a reason (error null)" 0 "$(hang_records '.error == null')"
check_wait "moatd's fds are back near the baseline again (<= $((base_fds + 10)))" 10 fds_at_most $((base_fds + 10))
byst_ok=$(grep -c '^ok' "$E2E_TMP/bystander.results")
byst_fail=$(grep -vc '^ok' "$E2E_TMP/bystander.results")
check "the bystander pod's connections to healthy kept succeeding during the churn ($byst_ok ok, $byst_fail failed)" \
	test "$byst_ok" -ge 3 -a "$byst_fail" -eq 0
check "moatd never ran out of fds (no EMFILE in its log)" bash -c "! grep -q 'Too many open files' '$(agent_dir node1)/moatd.log'"

# Out of fds anyway (a limit below what the caps allow): moatd pauses accepting instead of
# spinning on the listener, says so, and serves again once fds are free.
now_fds=$(moatd_fds)
check "moatd's fd limit lowered to $((now_fds + 8)), below the pending cap" prlimit --pid "$(agent_pid node1)" --nofile="$((now_fds + 8)):"
lab_exec "$NS/src" timeout 20 node "$INTEROP_DIR/churn.js" --target "${IP[hang]}:9000" \
	--count 30 --concurrency 30 --hold-ms 2500 --send 10 --timeout-ms 15000 >/dev/null
check "... moatd logs EMFILE on 15001 and pauses accepting for 100 ms" \
	grep -q "accept on 15001 of pod $NS/src: Too many open files (out of file descriptors: accepting again in 100 ms)" "$(agent_dir node1)/moatd.log"
emfile_lines=$(grep -c 'Too many open files' "$(agent_dir node1)/moatd.log")
check "... a bounded number of such lines ($emfile_lines for ~2.5 s at most 10 a second per listener, not a spin)" \
	test "$emfile_lines" -le 100
check "fd limit restored ($soft0)" prlimit --pid "$(agent_pid node1)" --nofile="$soft0:"
check_wait "after it all, src -> healthy still works with exact bytes" 15 reply_ok "$NS/src" "${IP[healthy]}" "$E2E_TMP/after.out"

stop_agent_checked node1 "moatd exits 0 on SIGTERM"
e2e_finish
