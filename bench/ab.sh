#!/usr/bin/env bash
# ab.sh — is a change to the gatekeeper faster? Two gatekeeper binaries, A (the old) and B (the
# new), run side by side in front of one throwaway lander sshd; ROUNDS times, each uploads SIZE
# of zeros once per cipher (`head -c SIZE /dev/zero | ssh -c CIPHER HOST 'cat > /dev/null'`,
# trusted source), in an order that alternates from round to round, and the medians of MiB/s
# and of gatekeeper CPU s/GiB (utime+stime from /proc) are printed for each. One transfer on a
# shared VM moves by 20% or more from run to run; interleaved rounds and medians let a 5-10%
# change show. Then LOGINS logins (`ssh HOST true`, trusted source, OpenSSH's default cipher)
# through each, one through A and one through B in turn, and the median time of each: a block of
# logins through one binary then a block through the other measured this VM's drift, not the
# binaries. Root (creates a user, runs sshd).
#   A=/tmp/gatekeeper-old B=bin/gatekeeper ROUNDS=7 SIZE=1G CIPHERS="aes128-gcm@openssh.com" LOGINS=40 bench/ab.sh
# Build A from an older commit with e.g.
#   git stash && go build -o /tmp/gatekeeper-old ./cmd/gatekeeper && git stash pop
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

A=${A:?A=path of the old gatekeeper binary}
B=${B:-$GK_REPO/bin/gatekeeper}
ROUNDS=${ROUNDS:-5}
SIZE=${SIZE:-1G}
LOGINS=${LOGINS:-20}
CIPHERS=${CIPHERS:-aes128-gcm@openssh.com chacha20-poly1305@openssh.com}
for bin in "$A" "$B"; do
	[[ -x $bin ]] || gk_die "$bin is not an executable gatekeeper"
done
((ROUNDS >= 0)) || gk_die "ROUNDS=$ROUNDS: use 0 or more"
((LOGINS >= 0)) || gk_die "LOGINS=$LOGINS: use 0 or more"
bytes=$(bench_bytes "$SIZE")

# B is bench_setup's gatekeeper; A gets a second one with a config and state of its own.
GATEKEEPER_BIN=$B
bench_setup
B_PORT=$GK_PORT B_PID=$GK_PID
mkdir "$TMP/a"
A_PORT=$(gk_free_port)
gk_write_config "$TMP/a/gatekeeper.yaml" "$TMP/a" "127.0.0.1:$A_PORT" '["127.0.0.2/32"]' $'totp:\n  skew: 3'
GK_PID=
gk_start_gatekeeper "$A" "$TMP/a/gatekeeper.yaml" "$TMP/a/gatekeeper.log" "$A_PORT"
A_PID=$GK_PID
ab_cleanup() {
	local rc=$?
	GK_PID=$A_PID gk_stop_gatekeeper
	GK_PID=$B_PID
	bench_cleanup "$rc"
}
trap ab_cleanup EXIT

# upload WHICH CIPHER: one transfer through gatekeeper WHICH (A or B); appends "MIBS CPU" to
# $TMP/WHICH.CIPHER.
upload() {
	local which=$1 cipher=$2 port pid t0 c0 s c1
	if [[ $which == A ]]; then port=$A_PORT pid=$A_PID; else port=$B_PORT pid=$B_PID; fi
	c0=$(gk_cpu_ticks "$pid")
	t0=$(bench_ns)
	head -c "$SIZE" /dev/zero | GK_PORT=$port ssh_trusted -c "$cipher" "$BENCH_USER@127.0.0.1" 'cat > /dev/null' ||
		gk_die "upload through $which with $cipher failed"
	s=$(bench_secs "$t0")
	c1=$(gk_cpu_ticks "$pid")
	echo "$(bench_mibs "$bytes" "$s") $(bench_cpu_per_gib $((c1 - c0)) "$bytes")" >>"$TMP/$which.$cipher"
}

for p in $A_PORT $B_PORT; do # host keys into known_hosts; warms up
	GK_PORT=$p ssh_trusted "$BENCH_USER@127.0.0.1" true </dev/null
done
echo "A: $A"
echo "B: $B"
echo "$ROUNDS rounds of one $SIZE upload per cipher through each, alternating ($(nproc) CPUs, $(ssh -V 2>&1 | cut -d, -f1))"
for ((r = 1; r <= ROUNDS; r++)); do
	order="A B"
	((r % 2 == 0)) && order="B A"
	for cipher in $CIPHERS; do
		for which in $order; do
			upload "$which" "$cipher"
		done
	done
done

if ((ROUNDS > 0)); then
	for cipher in $CIPHERS; do
		echo "$cipher:"
		for which in A B; do
			f="$TMP/$which.$cipher"
			printf '  %s  median %7.1f MiB/s  %5.2f CPU-s/GiB   (each MiB/s/CPU: %s)\n' "$which" "$(bench_median 1 "$f")" "$(bench_median 2 "$f")" \
				"$(awk '{ printf "%s%s/%s", sep, $1, $2; sep = ", " }' "$f")"
		done
	done
fi

# login WHICH: one `ssh HOST true` through gatekeeper WHICH; appends its milliseconds to
# $TMP/WHICH.logins.
login() {
	local port=$B_PORT
	[[ $1 == A ]] && port=$A_PORT
	GK_PORT=$port bench_time_logins 1 ssh_trusted >>"$TMP/$1.logins"
}

if ((LOGINS > 0)); then
	for ((i = 0; i < LOGINS; i++)); do
		if ((i % 2)); then login B && login A; else login A && login B; fi
	done
	echo "login latency, ssh HOST true from the trusted source, $LOGINS through each, taking turns:"
	for which in A B; do
		printf '  %s  median %s ms   (each: %s)\n' "$which" "$(gk_median <"$TMP/$which.logins")" \
			"$(tr '\n' ' ' <"$TMP/$which.logins")"
	done
fi
