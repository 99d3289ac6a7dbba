#!/usr/bin/env bash
# distance.sh — bulk transfers at a long round trip: a user-space delay relay (bench/delayproxy,
# DELAY_MS each way, default 25: a 50 ms round trip; this kernel has no netem) sits in front of
# the lander's sshd (direct) or in front of the gatekeeper (through; the gatekeeper-to-lander leg
# stays plain loopback). Measured: download, `ssh HOST 'head -c SIZE /dev/zero' > /dev/null`, and
# upload, `head -c SIZE /dev/zero | ssh HOST 'cat > /dev/null'`, with the client's default cipher.
# At this distance the SSH channel window, not the CPU, sets the speed: OpenSSH's 2 MiB window
# allows about 40 MB/s at 50 ms. For uploads the gatekeeper advertises the client its round trip
# (from the handshake) x 1 GiB/s, at most relay.window (RELAY_WINDOW, default 16MiB; empty: leave
# the key out, i.e. the gatekeeper's default), here all of it; downloads go by the client's own
# window either way. Each figure is the transfer's wall time
# less the median of LOGINS `ssh HOST true` on the same path, so that the extra round trips of
# the login do not count. Root (creates a user, runs sshd).
#
# Targets (issue 11): download >= 0.95x direct; upload >= 2x direct (with the larger window).
# Prints ROW lines for bench/report.sh.
#   SIZE=256M DELAY_MS=25 RELAY_WINDOW=16MiB LOGINS=3 bench/distance.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-256M}
DELAY_MS=${DELAY_MS:-25}
RELAY_WINDOW=${RELAY_WINDOW-16MiB}
LOGINS=${LOGINS:-3}
DOWN_TARGET=0.95
UP_TARGET=2.0
bytes=$(bench_bytes "$SIZE")
((LOGINS >= 1)) || gk_die "LOGINS=$LOGINS: use at least 1"
[[ $DELAY_MS =~ ^[0-9]+$ ]] || gk_die "DELAY_MS=$DELAY_MS: a whole number of milliseconds"
if [[ -n $RELAY_WINDOW ]]; then
	BENCH_EXTRA_YAML=$(printf 'relay:\n  window: "%s"' "$RELAY_WINDOW")
	window_note="relay.window $RELAY_WINDOW at most"
else
	window_note="relay.window not set"
fi

bench_setup

# the through relay dials the gatekeeper from the trusted source: password only
declare -A PORT
bench_start_proxy direct "127.0.0.1:$LANDER_PORT" "${DELAY_MS}ms"
PORT[direct]=$PROXY_PORT
bench_start_proxy through "127.0.0.1:$GK_PORT" "${DELAY_MS}ms" 127.0.0.2
PORT[through]=$PROXY_PORT

# far PATH ARGS...: ssh over the delay relay of PATH (direct or through).
far() {
	local path=$1
	shift
	timeout "$BENCH_TIMEOUT" ssh "${GK_SSH_OPTS[@]}" -p "${PORT[$path]}" "$BENCH_USER@127.0.0.1" "$@"
}

# timed PATH DIRECTION: seconds for one transfer (download or upload) over PATH.
timed() {
	local t0
	t0=$(bench_ns)
	case $2 in
	download) far "$1" "head -c $SIZE /dev/zero" </dev/null >/dev/null ;;
	upload) head -c "$SIZE" /dev/zero | far "$1" 'cat > /dev/null' ;;
	esac || gk_die "$2 over $1 failed"
	bench_secs "$t0"
}

# login_secs PATH: median seconds of LOGINS `ssh HOST true` over PATH.
login_secs() {
	local i t0
	for ((i = 0; i < LOGINS; i++)); do
		t0=$(bench_ns)
		far "$1" true </dev/null || gk_die "login over $1 failed"
		bench_secs "$t0"
		echo
	done | gk_median
}

far direct true </dev/null # accept the host keys once
far through true </dev/null
declare -A LOGIN
LOGIN[direct]=$(login_secs direct)
LOGIN[through]=$(login_secs through)

mbs() { bench_calc %.1f 'b / 1e6 / s' b="$bytes" s="$1"; }

echo "distance: $SIZE over a delay relay of $DELAY_MS ms each way ($(nproc) CPUs, $(ssh -V 2>&1 | cut -d, -f1), $window_note)"
echo "  login (ssh HOST true, median of $LOGINS): direct ${LOGIN[direct]} s, through ${LOGIN[through]} s; subtracted below"
printf '  %-10s %10s %10s %8s %20s %10s\n' "" "direct MB/s" "through MB/s" ratio "gatekeeper CPU s/GiB" target
rows=()
for dir in download upload; do
	d=$(timed direct "$dir")
	c0=$(gk_cpu_ticks "$GK_PID")
	g=$(timed through "$dir")
	c1=$(gk_cpu_ticks "$GK_PID")
	# the transfer alone: less the login; at least 1 ms
	dn=$(bench_calc %.3f 'd - l > 0.001 ? d - l : 0.001' d="$d" l="${LOGIN[direct]}")
	gn=$(bench_calc %.3f 'g - l > 0.001 ? g - l : 0.001' g="$g" l="${LOGIN[through]}")
	cpu=$(bench_cpu_per_gib $((c1 - c0)) "$bytes")
	ratio=$(bench_calc %.2f 'd / g' d="$dn" g="$gn")
	if [[ $dir == download ]]; then
		want=$DOWN_TARGET target=">= ${DOWN_TARGET}x"
		cmd="ssh [GATEKEEPER] HOST 'head -c $SIZE /dev/zero' > /dev/null"
	else
		want=$UP_TARGET target=">= ${UP_TARGET}x ($window_note)"
		cmd="head -c $SIZE /dev/zero | ssh [GATEKEEPER] HOST 'cat > /dev/null'"
	fi
	printf '  %-10s %10s %10s %8s %20s %10s\n' "$dir" "$(mbs "$dn")" "$(mbs "$gn")" "${ratio}x" "$cpu" ">= ${want}x"
	rows+=("$(bench_row "$dir at $((2 * DELAY_MS)) ms RTT" \
		"$(mbs "$dn") MB/s" "$(mbs "$gn") MB/s" "${ratio}x" "$cpu" "$target" \
		"$(bench_met 'r >= w' r="$ratio" w="$want")" \
		"$cmd over bench/delayproxy -delay ${DELAY_MS}ms, less the login time (bench/distance.sh)")")
done
echo "  target: download >= ${DOWN_TARGET}x direct, upload >= ${UP_TARGET}x direct"
printf '%s\n' "${rows[@]}"
