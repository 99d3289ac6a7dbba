#!/usr/bin/env bash
# throughput.sh — bulk throughput of one session channel: `head -c 1G /dev/zero | ssh -c CIPHER
# HOST 'cat > /dev/null'`, straight to a throwaway lander sshd vs through the gatekeeper (trusted
# source, password only), for aes128-gcm@openssh.com and chacha20-poly1305@openssh.com, plus the
# gatekeeper's CPU seconds per GiB (utime+stime from /proc/PID/stat). The gatekeeper decrypts
# and re-encrypts: the client's cipher applies to the client leg, the lander leg uses the
# gatekeeper's own choice. Root (creates a user, runs sshd).
#   SIZE=1G CIPHERS="aes128-gcm@openssh.com chacha20-poly1305@openssh.com" bench/throughput.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-1G}
CIPHERS=${CIPHERS:-aes128-gcm@openssh.com chacha20-poly1305@openssh.com}
bench_setup

bytes=$(head -c "$SIZE" /dev/zero | wc -c)
ticks_per_s=$(getconf CLK_TCK)

# send SSHFUNC CIPHER: seconds (3 decimals) to push SIZE bytes through `cat > /dev/null`.
send() {
	local t0 t1
	t0=$(date +%s%N)
	head -c "$SIZE" /dev/zero | "$1" -c "$2" "$BENCH_USER@127.0.0.1" 'cat > /dev/null' ||
		gk_die "transfer failed: $1 -c $2"
	t1=$(date +%s%N)
	awk -v d=$((t1 - t0)) 'BEGIN { printf "%.3f", d / 1e9 }'
}

mibs() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }

ssh_trusted "$BENCH_USER@127.0.0.1" true # accept the host keys once
ssh_direct "$BENCH_USER@127.0.0.1" true

echo "throughput, $SIZE of zeros into \`cat > /dev/null\` ($(nproc) CPUs, $(ssh -V 2>&1 | cut -d, -f1))"
printf '  %-32s %12s %14s %8s %18s\n' cipher "direct MiB/s" "through MiB/s" ratio "gatekeeper CPU s/GiB"
for cipher in $CIPHERS; do
	d=$(send ssh_direct "$cipher")
	c0=$(gk_cpu_ticks "$GK_PID")
	g=$(send ssh_trusted "$cipher")
	c1=$(gk_cpu_ticks "$GK_PID")
	cpu=$(awk -v t=$((c1 - c0)) -v hz="$ticks_per_s" -v b="$bytes" 'BEGIN { printf "%.2f", t / hz / (b / 1073741824) }')
	ratio=$(awk -v d="$d" -v g="$g" 'BEGIN { printf "%.0f%%", 100 * d / g }')
	printf '  %-32s %12s %14s %8s %18s\n' "$cipher" "$(mibs "$d")" "$(mibs "$g")" "$ratio" "$cpu"
done
echo "  target: through >= 50% of direct"
