#!/usr/bin/env bash
# report.sh — run the benchmarks of issue 11 one after the other and print one markdown table of
# all their figures: direct (straight to a throwaway lander sshd) vs through the gatekeeper, the
# ratio, the gatekeeper's CPU seconds per GiB where it applies, the target, whether it is met,
# and the command behind each figure. Each benchmark's own output is shown as it runs and kept
# in a log dir (printed); the table is collected from their ROW lines (format: bench/lib.sh).
# bench/login.sh prints no ROW lines: its medians are read from its output. bench/cluster.sh
# runs separately (make bench runs it after this). Exits non-zero if a benchmark failed (its row
# then says so), not for a missed target. Root.
#   BENCHES="login throughput transfer distance idle idle-after storm profile" bench/report.sh
# The benchmarks' variables pass through (SIZE applies to every one that has it), e.g. a quick
# check: SIZE=64M N=20 SESSIONS=50 U=20 bench/report.sh
set -uo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

BENCHES=${BENCHES:-login throughput transfer distance idle idle-after storm profile}
GK_MAKE_TARGET=bench
gk_require_root "the benchmarks create local users and run a throwaway sshd"
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
LOGS=$(mktemp -d /tmp/gatekeeper-report.XXXXXX)
BIN=${GATEKEEPER_BIN:-$GK_REPO/bin/gatekeeper}
[[ -x $BIN ]] || (cd "$GK_REPO" && make build) || gk_die "cannot build $BIN"

# login_rows LOG: ROW lines from bench/login.sh's output (target: <= 30 ms added).
login_rows() {
	local n direct trusted coded nc
	read -r n direct < <(sed -n 's/^ *direct to the lander sshd, curve25519-sha256 *median of \([0-9]*\): *\([0-9.]*\) ms.*/\1 \2/p' "$1")
	trusted=$(sed -n 's/^ *through gatekeeper, trusted source *median of [0-9]*: *\([0-9.]*\) ms.*/\1/p' "$1")
	read -r nc coded < <(sed -n 's/^ *through gatekeeper, password + code *median of \([0-9]*\): *\([0-9.]*\) ms.*/\1 \2/p' "$1")
	if [[ -z ${direct:-} || -z $trusted || -z ${coded:-} ]]; then
		bench_row "login latency" "?" "?" - - "<= +30 ms" "?" "bench/login.sh printed no medians that this script knows: see $1"
		return
	fi
	bench_row "login latency, trusted source (password)" "$direct ms" "$trusted ms" \
		"$(bench_calc %.2fx 't / d' t="$trusted" d="$direct")" - "<= +30 ms" \
		"$(bench_met 't - d <= 30' t="$trusted" d="$direct")" \
		"ssh [-b 127.0.0.2 -p GATEKEEPER] HOST true, median of $n; direct with KexAlgorithms=curve25519-sha256 (bench/login.sh)"
	bench_row "login latency, password + code" "$direct ms" "$coded ms" \
		"$(bench_calc %.2fx 't / d' t="$coded" d="$direct")" - "<= +30 ms" \
		"$(bench_met 't - d <= 30' t="$coded" d="$direct")" \
		"ssh -p GATEKEEPER HOST true with a code from oathtool, median of $nc, one per code step (bench/login.sh)"
}

failed=()
for b in $BENCHES; do
	script=$BENCH_DIR/$b.sh
	[[ -x $script ]] || gk_die "no benchmark $script"
	echo "=== bench/$b.sh ($(date -u +%H:%M:%S) UTC)"
	"$script" 2>&1 | tee "$LOGS/$b.log"
	rc=${PIPESTATUS[0]}
	if ((rc != 0)); then
		failed+=("$b")
		bench_row "bench/$b.sh" - - - - - "FAILED" "exit status $rc: see $LOGS/$b.log" >"$LOGS/$b.rows"
	elif [[ $b == login ]]; then
		login_rows "$LOGS/$b.log" >"$LOGS/$b.rows"
	else
		grep "^ROW"$'\t' "$LOGS/$b.log" >"$LOGS/$b.rows" || true
	fi
	echo
done

# cell TEXT: TEXT for a markdown table cell ("|" escaped).
cell() { printf '%s' "${1//|/\\|}"; }

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "## gatekeeper benchmarks (issue 11)"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs (${cpu:-unknown CPU}), $(ssh -V 2>&1 | cut -d, -f1), $("$BIN" version 2>/dev/null | head -1)"
echo
echo "| measure | direct | through | ratio | gatekeeper CPU s/GiB | target | met? | command |"
echo "|---|---|---|---|---|---|---|---|"
for b in $BENCHES; do
	[[ -s $LOGS/$b.rows ]] || continue
	while IFS=$'\t' read -r _ measure direct through ratio gkcpu target met command; do
		# shellcheck disable=SC2016 # the backquotes are markdown
		printf '| %s | %s | %s | %s | %s | %s | %s | `%s` |\n' "$(cell "$measure")" "$(cell "$direct")" \
			"$(cell "$through")" "$(cell "$ratio")" "$(cell "$gkcpu")" "$(cell "$target")" "$(cell "$met")" \
			"$(cell "$command")"
	done <"$LOGS/$b.rows"
done
echo
echo "(logs: $LOGS)"
if ((${#failed[@]} > 0)); then
	echo "FAILED: ${failed[*]}" >&2
	exit 1
fi
