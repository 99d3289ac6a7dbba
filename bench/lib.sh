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
	gk_write_config "$TMP/gatekeeper.yaml" "$TMP" "127.0.0.1:$GK_PORT" '["127.0.0.2/32"]' \
		$'totp:\n  skew: 3'
	gk_start_gatekeeper "$BIN" "$TMP/gatekeeper.yaml" "$TMP/gatekeeper.log" "$GK_PORT"
	gk_client_setup "$TMP/client" "$BENCH_PW"
}

bench_cleanup() {
	trap - EXIT INT TERM
	gk_stop_gatekeeper
	gk_stop_lander
	if [[ -n ${BENCH_USER:-} ]]; then
		userdel -r -f "$BENCH_USER" 2>/dev/null || userdel -f "$BENCH_USER" 2>/dev/null || true
	fi
	[[ -n ${TMP:-} ]] && rm -rf "$TMP"
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
