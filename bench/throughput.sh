#!/usr/bin/env bash
# throughput.sh — bulk throughput of one session channel: `head -c 1G /dev/zero | ssh -c CIPHER
# HOST 'cat > /dev/null'`, straight to a throwaway lander sshd vs through the gatekeeper (trusted
# source, password only), for aes128-gcm@openssh.com and chacha20-poly1305@openssh.com, plus the
# gatekeeper's CPU seconds per GiB (utime+stime from /proc/PID/stat). The gatekeeper decrypts
# and re-encrypts: the client's cipher applies to the client leg, the lander leg uses the
# gatekeeper's own choice. Root (creates a user, runs sshd).
#
# First, for every cipher, VERIFY_SIZE random bytes go up through the gatekeeper into a file
# (sha256 checked on the far side) and come back down (checked here): a relay that corrupts data
# fails the benchmark before any figure is printed.
#
# Targets (issue 11): aes128-gcm >= 0.80x direct, chacha20-poly1305 (OpenSSH's default) >= 0.75x,
# gatekeeper CPU <= 0.8 s/GiB on the box the issue measured, where a direct transfer cost client
# and sshd 2.9 CPU-s/GiB together. Machines differ by more than that (this VM's speed moves 2x
# from day to day), so the CPU target is also checked relative to the same run's direct transfer:
# the whole machine's busy CPU during it (/proc/stat: client, sshd and the kernel's loopback
# work), gatekeeper <= 0.8/2.9 = 0.28x of that. Prints ROW lines for bench/report.sh
# (see bench/lib.sh).
#
# For scale, each round also sends the same upload straight to the lander through a relay that only
# copies the bytes (`bench/delayproxy -delay 0`: reads of up to 256 KiB, written at once) without
# terminating SSH: its CPU per GiB is the floor under any user-space relay on this machine, which
# the gatekeeper pays before it decrypts and re-encrypts anything.
#
# Each cipher is measured ROUNDS times, direct and through taking turns (which goes first
# alternates from round to round); the figures are the medians of the rounds, and the ratio is
# that of the median times: one transfer on this kind of shared VM moves by 20% or more.
#   SIZE=1G ROUNDS=3 VERIFY_SIZE=64M CIPHERS="aes128-gcm@openssh.com chacha20-poly1305@openssh.com" bench/throughput.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-1G}
VERIFY_SIZE=${VERIFY_SIZE:-64M}
ROUNDS=${ROUNDS:-3}
CIPHERS=${CIPHERS:-aes128-gcm@openssh.com chacha20-poly1305@openssh.com}
CPU_TARGET=0.8 # gatekeeper CPU s/GiB, on the issue's box
CPU_SHARE=0.28 # gatekeeper CPU per GiB / the direct transfer's machine CPU per GiB (0.8 / 2.9)
bytes=$(bench_bytes "$SIZE")
bench_bytes "$VERIFY_SIZE" >/dev/null
((ROUNDS >= 1)) || gk_die "ROUNDS=$ROUNDS: use at least 1"
bench_setup

# send SSHFUNC CIPHER: seconds (3 decimals) to push SIZE bytes through `cat > /dev/null`.
send() {
	local t0
	t0=$(bench_ns)
	head -c "$SIZE" /dev/zero | "$1" -c "$2" "$BENCH_USER@127.0.0.1" 'cat > /dev/null' ||
		gk_die "transfer failed: $1 -c $2"
	bench_secs "$t0"
}

# machine_ticks: the busy CPU ticks of the whole machine so far (user, nice, system, irq, softirq).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }

# target CIPHER: the least through/direct ratio wanted for CIPHER.
target() {
	case $1 in
	chacha20*) echo 0.75 ;;
	*) echo 0.80 ;;
	esac
}

# The plain relay, in front of the lander; bench_cleanup stops it.
bench_start_proxy plainrelay "127.0.0.1:$LANDER_PORT" 0
PLAIN_PORT=$PROXY_PORT PLAIN_PID=$PROXY_PID

# ssh_plain ARGS...: ssh to the lander through the plain relay.
ssh_plain() {
	timeout "$BENCH_TIMEOUT" ssh "${GK_SSH_OPTS[@]}" -p "$PLAIN_PORT" "$@"
}

ssh_trusted "$BENCH_USER@127.0.0.1" true # accept the host keys once
ssh_direct "$BENCH_USER@127.0.0.1" true

# verify: random data up and down through the gatekeeper with each cipher, sha256 compared.
head -c "$VERIFY_SIZE" /dev/urandom >"$TMP/verify.bin"
want=$(sha256sum <"$TMP/verify.bin" | cut -d' ' -f1)
for cipher in $CIPHERS; do
	got=$(ssh_trusted -c "$cipher" "$BENCH_USER@127.0.0.1" 'tee verify.bin | sha256sum' <"$TMP/verify.bin" |
		cut -d' ' -f1) || gk_die "verify upload failed: ssh -c $cipher"
	[[ $got == "$want" ]] ||
		gk_die "DATA CORRUPTED: $VERIFY_SIZE uploaded through the gatekeeper with $cipher arrived with sha256 $got, sent $want"
	got=$(ssh_trusted -c "$cipher" "$BENCH_USER@127.0.0.1" 'cat verify.bin && rm -f verify.bin' </dev/null |
		sha256sum | cut -d' ' -f1) || gk_die "verify download failed: ssh -c $cipher"
	[[ $got == "$want" ]] ||
		gk_die "DATA CORRUPTED: $VERIFY_SIZE downloaded through the gatekeeper with $cipher arrived with sha256 $got, sent $want"
done
echo "verified: $VERIFY_SIZE of random data up and down through the gatekeeper, sha256 equal, with: $CIPHERS"

# direct CIPHER: one transfer straight to the lander; appends "SECONDS MACHINE-CPU-S/GIB" to
# $TMP/direct.CIPHER.
direct() {
	local m0 d m1
	m0=$(machine_ticks)
	d=$(send ssh_direct "$1")
	m1=$(machine_ticks)
	echo "$d $(bench_cpu_per_gib $((m1 - m0)) "$bytes")" >>"$TMP/direct.$1"
}

# relayed NAME PID SSHFUNC CIPHER: one transfer with SSHFUNC, through the relay PID (the
# gatekeeper or the plain relay); appends "SECONDS RELAY-CPU-S/GIB" to $TMP/NAME.CIPHER.
relayed() {
	local c0 s c1
	c0=$(gk_cpu_ticks "$2")
	s=$(send "$3" "$4")
	c1=$(gk_cpu_ticks "$2")
	echo "$s $(bench_cpu_per_gib $((c1 - c0)) "$bytes")" >>"$TMP/$1.$4"
}
through() { relayed through "$GK_PID" ssh_trusted "$1"; }
plain() { relayed plain "$PLAIN_PID" ssh_plain "$1"; }

ssh_plain "$BENCH_USER@127.0.0.1" true

echo "throughput, $SIZE of zeros into \`cat > /dev/null\`, medians of $ROUNDS rounds ($(nproc) CPUs, $(ssh -V 2>&1 | cut -d, -f1))"
for ((r = 1; r <= ROUNDS; r++)); do
	for cipher in $CIPHERS; do
		if ((r % 2)); then
			direct "$cipher"
			through "$cipher"
		else
			through "$cipher"
			direct "$cipher"
		fi
		plain "$cipher"
	done
done
printf '  %-32s %12s %14s %8s %18s %8s\n' cipher "direct MiB/s" "through MiB/s" ratio "gatekeeper CPU s/GiB" target
rows=()
for cipher in $CIPHERS; do
	d=$(bench_median 1 "$TMP/direct.$cipher")
	dcpu=$(bench_median 2 "$TMP/direct.$cipher")
	g=$(bench_median 1 "$TMP/through.$cipher")
	cpu=$(bench_median 2 "$TMP/through.$cipher")
	ratio=$(bench_calc %.2f 'd / g' d="$d" g="$g")
	want=$(target "$cipher")
	share=$(bench_calc %.2f 'c / d' c="$cpu" d="$dcpu")
	pcpu=$(bench_median 2 "$TMP/plain.$cipher")
	printf '  %-32s %12s %14s %8s %18s %8s   direct: machine CPU %s s/GiB, gatekeeper/direct %s; plain relay CPU %s s/GiB\n' "$cipher" \
		"$(bench_mibs "$bytes" "$d")" "$(bench_mibs "$bytes" "$g")" "${ratio}x" "$cpu" ">= ${want}x" "$dcpu" "$share" "$pcpu"
	rows+=("$(bench_row "bulk upload, ssh -c ${cipher%@*}" "$(bench_mibs "$bytes" "$d") MiB/s (machine CPU $dcpu s/GiB)" \
		"$(bench_mibs "$bytes" "$g") MiB/s" "${ratio}x" "$cpu (${share}x direct's)" \
		">= ${want}x; CPU <= $CPU_TARGET s/GiB there, <= ${CPU_SHARE}x direct's here" \
		"$(bench_met 'r >= w && s <= t' r="$ratio" w="$want" s="$share" t="$CPU_SHARE")" \
		"head -c $SIZE /dev/zero | ssh -c $cipher [-b 127.0.0.2 -p GATEKEEPER] HOST 'cat > /dev/null', median of $ROUNDS (bench/throughput.sh)")")
	rows+=("$(bench_row "the same upload through a relay that only copies bytes (${cipher%@*})" - \
		"$(bench_mibs "$bytes" "$(bench_median 1 "$TMP/plain.$cipher")") MiB/s" - "$pcpu (the relay's)" \
		"- (the floor under any user-space relay here)" - \
		"the same through bench/delayproxy -delay 0 (reads and writes of up to 256 KiB, no SSH), median of $ROUNDS (bench/throughput.sh)")")
done
echo "  target: aes128-gcm >= 0.80x direct, chacha20-poly1305 >= 0.75x, gatekeeper CPU <= $CPU_TARGET s/GiB on the"
echo "  issue's box, where direct cost 2.9 s/GiB: <= ${CPU_SHARE}x of the direct transfer's machine CPU here"
printf '%s\n' "${rows[@]}"
