#!/usr/bin/env bash
# profile.sh — where the gatekeeper spends its CPU on bulk uploads: one SIZE upload per cipher
# (`head -c SIZE /dev/zero | ssh -c CIPHER HOST 'cat > /dev/null'`, trusted source) through a
# gatekeeper started with the hidden flag `serve --cpuprofile FILE`, then the top of
# `go tool pprof -top` of that profile. The profile is kept at PROFILE (default
# /tmp/gatekeeper-cpu.DATE.prof), printed at the end; the logins are in it too (a few ms).
# Root (creates a user, runs sshd).
#   SIZE=512M CIPHERS="chacha20-poly1305@openssh.com aes128-gcm@openssh.com" NODES=25 bench/profile.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-512M}
CIPHERS=${CIPHERS:-chacha20-poly1305@openssh.com aes128-gcm@openssh.com}
NODES=${NODES:-25}
PROFILE=${PROFILE:-/tmp/gatekeeper-cpu.$(date +%Y%m%d-%H%M%S).prof}
bytes=$(bench_bytes "$SIZE")
[[ ! -e $PROFILE ]] || gk_die "PROFILE=$PROFILE exists: not overwriting it"
GK_SERVE_FLAGS="--cpuprofile $PROFILE"
bench_setup

ssh_trusted "$BENCH_USER@127.0.0.1" true </dev/null
echo "profiling the gatekeeper: $SIZE of zeros uploaded once per cipher ($(nproc) CPUs, $(ssh -V 2>&1 | cut -d, -f1))"
for cipher in $CIPHERS; do
	t0=$(bench_ns)
	c0=$(gk_cpu_ticks "$GK_PID")
	head -c "$SIZE" /dev/zero | ssh_trusted -c "$cipher" "$BENCH_USER@127.0.0.1" 'cat > /dev/null' ||
		gk_die "upload with $cipher failed"
	s=$(bench_secs "$t0")
	c1=$(gk_cpu_ticks "$GK_PID")
	printf '  %-32s %6s MiB/s   gatekeeper CPU %s s/GiB (with the profiler on)\n' "$cipher" \
		"$(bench_mibs "$bytes" "$s")" "$(bench_cpu_per_gib $((c1 - c0)) "$bytes")"
done
gk_stop_gatekeeper # writes the profile
[[ -s $PROFILE ]] || gk_die "no profile written to $PROFILE; see $TMP/gatekeeper.log"
echo
"${GO:-go}" tool pprof -top -nodecount="$NODES" "$BIN" "$PROFILE" 2>&1
echo
echo "profile saved: $PROFILE (binary $BIN); e.g. go tool pprof -http=127.0.0.1:0 $BIN $PROFILE"
