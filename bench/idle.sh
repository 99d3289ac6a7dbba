#!/usr/bin/env bash
# idle.sh — what an idle relayed session costs the gatekeeper in memory. bench/idleclients opens
# SESSIONS connections through the gatekeeper from the trusted source 127.0.0.2 (password only),
# C handshakes at a time (the gatekeeper admits at most 10 unauthenticated connections per
# address), each with one session channel: a pty and an interactive shell (CMD: run that command
# instead, e.g. CMD='sleep 100000'), and holds them without traffic. Measured before and after,
# each time after GCS garbage collections of the gatekeeper (forced through the hidden
# `serve --pprof`, see sample): its VmRSS (/proc/PID/status) and its Go heap + stacks in use
# (go_memstats_heap_inuse_bytes + go_memstats_stack_inuse_bytes on metrics_listen). Reported per
# session. PPROF_OUT=DIR keeps the gatekeeper's heap and goroutine profiles of the sessions. The lander's sshd then runs SESSIONS sessions (about 3 processes each); the gatekeeper
# config has no limit on sessions per user or in total, so nothing is raised. Root.
#
# Target (issue 11): <= 64 KiB per idle session. Prints ROW lines for bench/report.sh.
#   SESSIONS=2000 C=8 GCS=3 bench/idle.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

SESSIONS=${SESSIONS:-2000}
C=${C:-8}
CMD=${CMD:-}
LABEL=${LABEL:-idle relayed session} # the measure's name in the ROW lines (bench/idle-after.sh sets it)
GCS=${GCS:-3}
GK_SERVE_FLAGS="${GK_SERVE_FLAGS:-} --pprof"
SETTLE=${SETTLE:-5} # seconds between the last session opening and the sample
TARGET_KIB=64
((SESSIONS >= 1)) || gk_die "SESSIONS=$SESSIONS: use at least 1"
((C >= 1 && C <= 10)) || gk_die "C=$C: the gatekeeper admits at most 10 handshakes per address"

# Open files: the gatekeeper holds 2 sockets per session, idleclients 1, the lander's sshd ~6
# per session over its processes (each process has its own table). Processes: the lander runs a
# monitor, a privilege-separated child and the shell per session.
ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 2 * SESSIONS + 1024)) ||
	gk_die "ulimit -n is $(ulimit -n) (hard limit), SESSIONS=$SESSIONS needs about $((2 * SESSIONS + 1024))"
pid_max=$(</proc/sys/kernel/pid_max)
# A glob, not find: find fails (and set -e ends the script) when a process exits while it walks
# /proc, as the sessions of the benchmark run before this one do.
running=(/proc/[0-9]*)
procs=${#running[@]}
((procs + 4 * SESSIONS + 1000 <= pid_max)) ||
	gk_die "pid_max is $pid_max with $procs processes running: SESSIONS=$SESSIONS needs about $((4 * SESSIONS)) more"
if [[ -z $CMD ]]; then
	pty_max=$(</proc/sys/kernel/pty/max)
	((SESSIONS + 100 <= pty_max)) || gk_die "kernel.pty.max is $pty_max: SESSIONS=$SESSIONS ptys do not fit"
fi

IDLE_PID=
idle_cleanup() {
	local rc=$?
	if [[ -n $IDLE_PID ]]; then
		kill -TERM "$IDLE_PID" 2>/dev/null || true
		wait "$IDLE_PID" 2>/dev/null || true
	fi
	gk_stop_gatekeeper
	gk_stop_lander
	[[ -n ${BENCH_USER:-} ]] && bench_kill_user_procs "$BENCH_USER"
	bench_cleanup "$rc"
}
bench_setup
trap idle_cleanup EXIT
bench_build idleclients "$TMP/idleclients"
ssh_trusted "$BENCH_USER@127.0.0.1" true </dev/null # the host key into known_hosts; warms up

# metrics: the gatekeeper's Prometheus metrics, into $TMP/metrics.
metrics() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$GK_METRICS_PORT" &&
			printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && cat <&3
	) >"$TMP/metrics" 2>/dev/null || gk_die "cannot read the gatekeeper's metrics on 127.0.0.1:$GK_METRICS_PORT"
}
# metric NAME: its value in $TMP/metrics (the sum over label sets; 0 if absent).
metric() {
	awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f\n", s }' "$TMP/metrics"
}

# sample LABEL: after GCS garbage collections of the gatekeeper (forced through /debug/pprof/heap?gc=1:
# Go shrinks an idle goroutine's stack by half per collection, and forces one every 2 minutes
# anyway, so a gatekeeper running for a while has had them), set S_RSS (KiB), S_GO (heap + stacks
# in use, bytes) and S_SESSIONS (its gatekeeper_sessions gauge).
sample() {
	local i
	for ((i = 0; i < GCS; i++)); do
		curl -fsS -o /dev/null "http://127.0.0.1:$GK_METRICS_PORT/debug/pprof/heap?gc=1" ||
			gk_die "cannot force a garbage collection: is the gatekeeper running with --pprof?"
	done
	metrics
	local note="after $GCS GCs"
	S_RSS=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$GK_PID/status")
	S_HEAP=$(metric go_memstats_heap_inuse_bytes) S_STACK=$(metric go_memstats_stack_inuse_bytes)
	S_GO=$((S_HEAP + S_STACK))
	S_SESSIONS=$(metric gatekeeper_sessions)
	printf '  %-7s VmRSS %8d KiB   heap+stack %8d KiB (stacks %d KiB)   gatekeeper_sessions %5d   (%s)\n' \
		"$1" "$S_RSS" $((S_GO / 1024)) $((S_STACK / 1024)) "$S_SESSIONS" "$note"
}

what=${CMD:-pty + interactive shell}
echo "idle sessions: $SESSIONS through the gatekeeper from 127.0.0.2, $what ($(nproc) CPUs, $(ssh -V 2>&1 | cut -d, -f1))"
sample before
rss0=$S_RSS go0=$S_GO stack0=$S_STACK

cmd=()
[[ -n $CMD ]] && cmd=(-cmd "$CMD")
"$TMP/idleclients" -addr "127.0.0.1:$GK_PORT" -bind 127.0.0.2 -user "$BENCH_USER" \
	-password-file "$TMP/client/password" -known-hosts "$TMP/client/known_hosts" \
	-n "$SESSIONS" -c "$C" "${cmd[@]}" >"$TMP/idle.out" 2>"$TMP/idle.log" &
IDLE_PID=$!
deadline=$((SECONDS + 120 + SESSIONS))
until grep -q '^READY' "$TMP/idle.out"; do
	kill -0 "$IDLE_PID" 2>/dev/null || gk_die "idleclients exited: $(tail -5 "$TMP/idle.log")"
	((SECONDS < deadline)) || gk_die "idleclients not ready after $((120 + SESSIONS)) s: $(tail -3 "$TMP/idle.log")"
	sleep 1
done
ready=$(grep '^READY' "$TMP/idle.out")
echo "  idleclients: $ready"
opened=$(sed -n 's/.* open=\([0-9]*\).*/\1/p' <<<"$ready")
failed=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$ready")
((opened > 0)) || gk_die "no session opened: $(tail -5 "$TMP/idle.log")"
sleep "$SETTLE"
sample after
if [[ -n ${PPROF_OUT:-} ]]; then
	mkdir -p "$PPROF_OUT"
	for p in heap goroutine; do
		curl -fsS -o "$PPROF_OUT/$p.pb.gz" "http://127.0.0.1:$GK_METRICS_PORT/debug/pprof/$p" ||
			gk_die "no $p profile from the gatekeeper"
	done
	echo "  profiles in $PPROF_OUT"
fi
echo "  lander: $(pgrep -c -u "$BENCH_USER" || true) processes of $BENCH_USER"
echo "  gatekeeper_preauth_refused_total: $(metric gatekeeper_preauth_refused_total)"
kill -TERM "$IDLE_PID"
wait "$IDLE_PID" || true
IDLE_PID=
held=$(grep '^HELD' "$TMP/idle.out" || echo "HELD ?")
dropped=$(sed -n 's/.* dropped=\([0-9]*\).*/\1/p' <<<"$held")
echo "  idleclients: $held"

rss=$(bench_calc %.1f '(a - b) / n' a="$S_RSS" b="$rss0" n="$opened")
gomem=$(bench_calc %.1f '(a - b) / 1024 / n' a="$S_GO" b="$go0" n="$opened")
stacks=$(bench_calc %.1f '(a - b) / 1024 / n' a="$S_STACK" b="$stack0" n="$opened")
ok=yes
if ((failed > 0 || ${dropped:-1} > 0)); then
	ok=no
	echo "  $failed of $SESSIONS sessions failed to open, ${dropped:-?} were dropped while held: see $TMP/idle.log" >&2
fi
echo "  per idle session: VmRSS ${rss} KiB, Go heap+stack ${gomem} KiB (target <= $TARGET_KIB KiB)"
# Three goroutines per idle session (two mux loops, the caller of Relay) at 4 KiB each: more
# means one of them waits under frames that keep its stack at 8 KiB (README, "Idle sessions").
echo "  stacks per idle session: ${stacks} KiB (3 goroutines at 4 KiB: 12; a few sessions show more)"
for m in "VmRSS:$rss" "Go heap+stack:$gomem"; do
	v=${m##*:}
	met=$(bench_met 'v <= t && ok == "yes"' v="$v" t="$TARGET_KIB" ok="$ok")
	[[ $ok == yes ]] || met="$met ($failed failed, ${dropped:-?} dropped)"
	bench_row "$LABEL, gatekeeper ${m%%:*}" - "$v KiB/session" - - "<= $TARGET_KIB KiB" "$met" \
		"$opened idle sessions ($what) held by bench/idleclients, after - before / $opened (bench/idle.sh)"
done
