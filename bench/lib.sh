# bench/lib.sh — common setup for the benchmark scripts (source it): a throwaway lander sshd,
# a local user gkbench-XXXX, and bin/gatekeeper in front of the lander with 127.0.0.2/32 trusted
# (`ssh -b 127.0.0.2` logs in with the password only, as often as a benchmark needs), all in one
# temp dir that is removed, with the user, on exit.
# shellcheck shell=bash
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

# BENCH_TIMEOUT bounds every ssh run (seconds), so that a wedged relay fails the benchmark.
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}

# bench_setup: sets TMP, BIN, BENCH_USER, BENCH_PW, BENCH_SECRET (empty until bench_enroll),
# LANDER_PORT/LANDER_PID, GK_PORT/GK_PID, and prepares the client (GK_SSH_OPTS, askpass).
bench_setup() {
	GK_MAKE_TARGET=bench
	gk_require_root "the benchmarks create a local user and run a throwaway sshd, which can check passwords only as root"
	gk_require_tools oathtool
	BIN=${GATEKEEPER_BIN:-$GK_REPO/bin/gatekeeper}
	if [[ ! -x $BIN ]]; then
		(cd "$GK_REPO" && make build)
	fi
	TMP=$(mktemp -d /tmp/gatekeeper-bench.XXXXXX)
	chmod 0711 "$TMP"
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
	mkdir "$TMP/lander" "$TMP/client"
	gk_start_lander "$TMP/lander" 'gkbench-*'
	BENCH_USER=gkbench-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
	BENCH_PW=$(gk_create_user "$BENCH_USER")
	BENCH_SECRET=
	GK_PORT=$(gk_free_port)
	# skew 3: the code-path benchmark logs in with the next few steps' codes without waiting.
	# BENCH_EXTRA_YAML: more top-level config keys (YAML lines) for this gatekeeper, such as
	# $'relay:\n  window: "16MiB"'; not totp, which is set here.
	local extra=$'totp:\n  skew: 3'
	[[ -n ${BENCH_EXTRA_YAML:-} ]] && extra+=$'\n'$BENCH_EXTRA_YAML
	gk_write_config "$TMP/gatekeeper.yaml" "$TMP" "127.0.0.1:$GK_PORT" '["127.0.0.2/32"]' "$extra"
	gk_start_gatekeeper "$BIN" "$TMP/gatekeeper.yaml" "$TMP/gatekeeper.log" "$GK_PORT"
	gk_client_setup "$TMP/client" "$BENCH_PW"
}

# bench_cleanup [STATUS]: stop everything, remove the user and TMP (BENCH_KEEP=1: keep TMP). When
# the script fails (STATUS, default $?, not 0), the end of the gatekeeper's log goes to stderr
# first, since the log goes with TMP.
# shellcheck disable=SC2120 # STATUS is optional
bench_cleanup() {
	local rc=${1:-$?}
	trap - EXIT INT TERM
	if ((rc != 0)) && [[ -s ${TMP:-}/gatekeeper.log ]]; then
		echo "--- last lines of the gatekeeper's log ($TMP/gatekeeper.log):" >&2
		tail -n 15 "$TMP/gatekeeper.log" >&2
	fi
	local p
	for p in ${BENCH_PROXY_PIDS[@]+"${BENCH_PROXY_PIDS[@]}"}; do
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	gk_stop_gatekeeper
	gk_stop_lander
	if [[ -n ${BENCH_USER:-} ]]; then
		userdel -r -f "$BENCH_USER" 2>/dev/null || userdel -f "$BENCH_USER" 2>/dev/null || true
	fi
	if [[ -n ${TMP:-} ]]; then
		if [[ ${BENCH_KEEP:-} == 1 ]]; then
			echo "kept $TMP" >&2
		else
			rm -rf "$TMP"
		fi
	fi
}

# bench_enroll: link a device for the bench user; sets BENCH_SECRET and BENCH_STEP (the step of
# the confirming code, which cannot log in).
bench_enroll() {
	# shellcheck disable=SC2034 # used by the caller
	BENCH_STEP=$(($(date +%s) / 30))
	BENCH_SECRET=$(gk_enroll "$BIN" "$TMP/gatekeeper.yaml" "$BENCH_USER")
}

# bench_code STEP: write the code of STEP to the askpass code file.
bench_code() {
	oathtool --totp -b --now "@$(($1 * 30))" "$BENCH_SECRET" >"$TMP/client/code"
}

# ssh_direct ARGS...: ssh to the lander itself.
ssh_direct() {
	timeout "$BENCH_TIMEOUT" ssh "${GK_SSH_OPTS[@]}" -p "$LANDER_PORT" "$@"
}

# ssh_trusted ARGS...: ssh through the gatekeeper from the trusted source (password only).
ssh_trusted() {
	timeout "$BENCH_TIMEOUT" ssh "${GK_SSH_OPTS[@]}" -b 127.0.0.2 -p "$GK_PORT" "$@"
}

# ssh_code ARGS...: ssh through the gatekeeper from 127.0.0.1 (password and code).
ssh_code() {
	timeout "$BENCH_TIMEOUT" ssh "${GK_SSH_OPTS[@]}" -p "$GK_PORT" "$@"
}

# Results. Every benchmark prints each figure it measures as one line that bench/report.sh
# collects into its table: "ROW" and eight tab-separated fields,
#   ROW  measure  direct  through  ratio  gatekeeper-CPU  target  met  command
# direct and through carry their unit ("412 MiB/s", "181 ms"); ratio is through/direct ("0.83x");
# gatekeeper-CPU is CPU seconds per GiB relayed; met is "yes" or "NO"; "-" where a field does not
# apply. No field may hold a tab or a newline.

# bench_row MEASURE DIRECT THROUGH RATIO CPU TARGET MET COMMAND: print one result line.
bench_row() {
	(($# == 8)) || gk_die "bench_row: 8 fields wanted, got $#: $*"
	local f
	for f in "$@"; do
		[[ $f != *[$'\t\n']* ]] || gk_die "bench_row: a tab or newline in field: $f"
	done
	local IFS=$'\t'
	echo "ROW${IFS}$*"
}

# bench_calc FORMAT EXPR [NAME=VALUE...]: printf FORMAT of the awk expression EXPR over the
# given variables, e.g. bench_calc %.2f 'b / s' b=1024 s=3.
bench_calc() {
	local fmt=$1 expr=$2 v args=()
	shift 2
	for v in "$@"; do
		args+=(-v "$v")
	done
	awk "${args[@]}" "BEGIN { printf \"$fmt\", ($expr) }"
}

# bench_met EXPR [NAME=VALUE...]: "yes" if the awk condition EXPR holds, else "NO".
bench_met() {
	local expr=$1
	shift
	bench_calc %s "($expr) ? \"yes\" : \"NO\"" "$@"
}

# bench_ns: nanoseconds since the epoch.
bench_ns() {
	date +%s%N
}

# bench_secs T0_NS: seconds (3 decimals) since T0_NS.
bench_secs() {
	bench_calc %.3f '(t1 - t0) / 1e9' t0="$1" t1="$(date +%s%N)"
}

# bench_cpu_per_gib TICKS BYTES: CPU seconds per GiB moved, from a count of clock ticks (a
# process's, as gk_cpu_ticks gives, or the whole machine's).
bench_cpu_per_gib() {
	bench_calc %.2f 't / hz / (b / 1073741824)' t="$1" hz="$(getconf CLK_TCK)" b="$2"
}

# bench_median COLUMN FILE: the median of a column of numbers in FILE (one row per run). One
# transfer on a shared VM moves by 20% or more from run to run; the median of interleaved runs
# moves much less.
bench_median() {
	sort -g -k"$1","$1" "$2" | awk -v c="$1" '{ v[NR] = $c } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bench_mibs BYTES SECONDS: MiB/s, rounded.
bench_mibs() {
	bench_calc %.0f 'b / 1048576 / s' b="$1" s="$2"
}

# bench_bytes SIZE: SIZE ("1G", "256M", "4096") in bytes, as head -c reads it.
bench_bytes() {
	numfmt --from=iec "$1" 2>/dev/null || gk_die "SIZE=$1: not a size such as 1G or 256M"
}

# bench_build PKG OUT: go build ./bench/PKG (a helper program) to OUT.
bench_build() {
	(cd "$GK_REPO" && "${GO:-go}" build -o "$2" "./bench/$1") || gk_die "go build ./bench/$1 failed"
}

# bench_time_logins COUNT CMD...: run `CMD BENCH_USER@127.0.0.1 true` COUNT times and print each
# wall time in ms; fail on error.
bench_time_logins() {
	local count=$1 i t0
	shift
	for ((i = 0; i < count; i++)); do
		t0=$(gk_ms)
		"$@" "$BENCH_USER@127.0.0.1" true </dev/null || gk_die "login failed: $*"
		echo $(($(gk_ms) - t0))
	done
}

# bench_start_proxy NAME TARGET DELAY [SOURCE]: bench/delayproxy relaying to TARGET with DELAY
# each way ("25ms"; "0": a relay that only copies bytes), dialling from SOURCE when given; sets
# PROXY_PORT to its port and PROXY_PID to its pid. bench_cleanup stops it.
BENCH_PROXY_PIDS=()
bench_start_proxy() {
	local name=$1 target=$2 delay=$3 src=() addr deadline=$((SECONDS + 10))
	[[ -n ${4:-} ]] && src=(-source "$4")
	[[ -x $TMP/delayproxy ]] || bench_build delayproxy "$TMP/delayproxy"
	"$TMP/delayproxy" -target "$target" -delay "$delay" "${src[@]}" \
		>"$TMP/$name.addr" 2>>"$TMP/$name.log" &
	PROXY_PID=$!
	BENCH_PROXY_PIDS+=("$PROXY_PID")
	until addr=$(head -1 "$TMP/$name.addr") && [[ -n $addr ]]; do
		if ((SECONDS >= deadline)) || ! kill -0 "$PROXY_PID" 2>/dev/null; then
			gk_die "delayproxy $name did not start; see $TMP/$name.log"
		fi
		sleep 0.05
	done
	# shellcheck disable=SC2034 # used by the caller
	PROXY_PORT=${addr##*:}
}

# bench_kill_user_procs USER: end the processes USER still has (by pid; sessions a benchmark left).
bench_kill_user_procs() {
	local pids
	pids=$(pgrep -u "$1" 2>/dev/null || true)
	if [[ -n $pids ]]; then
		# shellcheck disable=SC2086 # a list of pids
		kill -KILL $pids 2>/dev/null || true
	fi
}
