#!/usr/bin/env bash
# cluster.sh — what etcd costs a code login (issue 10): the median wall time of `ssh HOST true`
# with password + code (askpass, from 127.0.0.1, outside the trusted networks) through a
# gatekeeper on bbolt and through one on a 3-member etcd cluster on loopback, one login per user,
# the two interleaved; then logins per second at saturation: C clients doing code logins as fast
# as they can through one node on bbolt, one node on etcd, and two nodes on etcd (alternating).
# Everything on loopback, in one temp dir, with free ports; the etcd members, gatekeepers and
# users are removed on exit. Root (creates users, runs sshd).
#   N=20 C=8 bench/cluster.sh
#
# Every login spends one 30 s code step of its user (a step at or before the last used one is
# refused), and totp.skew 3 accepts now-3 .. now+3. The devices are linked with the code of a
# past step, which leaves the steps after it free at once; the saturation runs give every user
# STEPS consecutive steps, one login each, in step order per user. When a run needs a step beyond
# now+3 the script waits for it (rarely, and at most one 30 s step, with the defaults). A step
# used in a run lies within now-2 .. now+3 when the run starts, so a run may last a minute.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

N=${N:-20}        # users, each linked on both stores; also the number of latency samples
C=${C:-8}         # concurrent clients at saturation
STEPS=${STEPS:-3} # logins per user in each saturation run (one per code step)
((N >= 1 && N <= 250)) || gk_die "N=$N: use 1..250 users"
((C >= 1)) || gk_die "C=$C: use at least 1 client"
((STEPS >= 1 && STEPS <= 5)) || gk_die "STEPS=$STEPS: use 1..5 steps per user"
gk_require_tools etcd etcdctl oathtool
unset "${!ETCD_@}" # etcd reads ETCD_* variables as flags

ETCD_PIDS=()
NODE_PIDS=()
USERS=()
bench_setup # lander, the bbolt gatekeeper (GK_PORT, GK_PID), BENCH_USER's client in $TMP/client
trap cluster_cleanup EXIT
BOLT_PORT=$GK_PORT BOLT_PID=$GK_PID BOLT_CFG=$TMP/gatekeeper.yaml

cluster_cleanup() {
	trap - EXIT INT TERM
	local p u
	for p in ${SAT_PIDS[@]+"${SAT_PIDS[@]}"} ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in ${SAT_PIDS[@]+"${SAT_PIDS[@]}"} ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do
		wait "$p" 2>/dev/null || true
	done
	for p in ${ETCD_PIDS[@]+"${ETCD_PIDS[@]}"}; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in ${ETCD_PIDS[@]+"${ETCD_PIDS[@]}"}; do
		wait "$p" 2>/dev/null || true
	done
	for u in ${USERS[@]+"${USERS[@]}"}; do
		userdel -r -f "$u" 2>/dev/null || userdel -f "$u" 2>/dev/null || true
	done
	bench_cleanup
}

# step: the current 30 s TOTP step.
step() { echo $(($(date +%s) / 30)); }

# etcd_start DIR: a 3-member etcd cluster m1..m3 on free 127.0.0.1 ports, data and logs in DIR;
# returns once `etcdctl endpoint health` passes for all three. Sets ETCD_ENDPOINTS (a YAML list)
# and ETCD_PIDS.
etcd_start() {
	local dir=$1 i p ports=() peers=() eps=() deadline=$((SECONDS + 60))
	while ((${#ports[@]} < 6)); do
		p=$(gk_free_port)
		[[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
	done
	for i in 0 1 2; do
		peers+=("m$((i + 1))=http://127.0.0.1:${ports[2 * i + 1]}")
		eps+=("http://127.0.0.1:${ports[2 * i]}")
	done
	local cluster token
	cluster=$(
		IFS=,
		echo "${peers[*]}"
	)
	token=bench-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
	for i in 0 1 2; do
		mkdir -p "$dir/m$((i + 1))"
		etcd --name "m$((i + 1))" --data-dir "$dir/m$((i + 1))/data" \
			--listen-client-urls "${eps[i]}" --advertise-client-urls "${eps[i]}" \
			--listen-peer-urls "http://127.0.0.1:${ports[2 * i + 1]}" \
			--initial-advertise-peer-urls "http://127.0.0.1:${ports[2 * i + 1]}" \
			--initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$token" \
			--logger zap --log-outputs "$dir/m$((i + 1))/etcd.log" >>"$dir/m$((i + 1))/etcd.out" 2>&1 &
		ETCD_PIDS+=($!)
	done
	ETCD_CSV=$(
		IFS=,
		echo "${eps[*]}"
	)
	until ETCDCTL_API=3 etcdctl --endpoints "$ETCD_CSV" --dial-timeout 1s --command-timeout 2s \
		endpoint health >/dev/null 2>&1; do
		for i in 0 1 2; do
			kill -0 "${ETCD_PIDS[i]}" 2>/dev/null ||
				gk_die "etcd member m$((i + 1)) exited; see $dir/m$((i + 1))/etcd.log"
		done
		((SECONDS < deadline)) || gk_die "etcd cluster not healthy after 60 s; see $dir/m*/etcd.log"
		sleep 0.1
	done
	ETCD_ENDPOINTS="[\"${ETCD_CSV//,/\", \"}\"]"
}

# node_start NAME: a gatekeeper named NAME on the etcd cluster, in $TMP/NAME, 127.0.0.2 trusted.
# The first node creates the key file and host key; later ones get copies of them. Sets
# NODE_PORT[NAME] and appends its pid to NODE_PIDS.
declare -A NODE_PORT NODE_CFG
node_start() {
	local name=$1 dir=$TMP/$1
	mkdir "$dir"
	if [[ -n ${FIRST_NODE_DIR:-} ]]; then
		cp -p "$FIRST_NODE_DIR/secret.key" "$FIRST_NODE_DIR/ssh_host_ed25519_key" "$dir/"
	else
		FIRST_NODE_DIR=$dir
	fi
	NODE_PORT[$name]=$(gk_free_port)
	NODE_CFG[$name]=$dir/gatekeeper.yaml
	gk_write_config "$dir/gatekeeper.yaml" "$dir" "127.0.0.1:${NODE_PORT[$name]}" '["127.0.0.2/32"]' \
		"$(printf 'totp:\n  skew: 3\nnode_name: "%s"\nstore:\n  backend: "etcd"\n  etcd:\n    endpoints: %s\n    prefix: "/bench/"' \
			"$name" "$ETCD_ENDPOINTS")"
	gk_start_gatekeeper "$BIN" "$dir/gatekeeper.yaml" "$dir/gatekeeper.log" "${NODE_PORT[$name]}"
	NODE_PIDS+=("$GK_PID")
	GK_PID=$BOLT_PID # bench_cleanup stops the bbolt one
}

# login I PORT [SRC]: one login of user I through the gatekeeper on PORT from SRC (127.0.0.1 by
# default), with the code in the user's code file; exits with ssh's status.
login() {
	SSH_ASKPASS=$TMP/client/$1/askpass timeout "$BENCH_TIMEOUT" \
		ssh "${GK_SSH_OPTS[@]}" -b "${3:-127.0.0.1}" -p "$2" "${USERS[$1]}@127.0.0.1" true </dev/null
}

# set_code I SECRET STEP: write the code of STEP to user I's code file.
set_code() {
	oathtool --totp -b --now "@$(($3 * 30))" "$2" >"$TMP/client/$1/code"
}

# plan_steps LAST COUNT: print the first of COUNT consecutive steps after LAST that the
# gatekeepers accept now and still accept if the run crosses one step boundary, waiting for the
# clock first when the last of them lies beyond now+3.
plan_steps() {
	local last=$1 count=$2 first now
	while :; do
		now=$(step)
		first=$((last + 1 > now - 2 ? last + 1 : now - 2))
		if ((first + count - 1 <= now + 3)); then
			echo "$first"
			return
		fi
		echo "  (waiting $((30 - $(date +%s) % 30)) s for code step $((now + 1)))" >&2
		sleep "$((30 - $(date +%s) % 30)).1"
	done
}

# saturate FIRST SECRETS_ARRAY PORT...: every user logs in STEPS times, with the codes of steps
# FIRST .. FIRST+STEPS-1 in that order, by C clients that each take the next login as soon as
# their previous one ended; the logins go round the PORTs. Each user logs in from its own address
# 127.1.I.1: concurrent attempts from one address would exceed its lockout budget (rate_limit
# holds a place per attempt in flight). Sets SAT_MS (wall time) and SAT_FAIL.
saturate() {
	local first=$1 secrets=$2 k i w t0
	shift 2
	local dir
	local -n sec=$secrets
	dir=$(mktemp -d "$TMP/sat.XXXXXX")
	# the codes first: oathtool is not part of the login
	for ((k = 0; k < STEPS; k++)); do
		for ((i = 0; i < N; i++)); do
			oathtool --totp -b --now "@$(((first + k) * 30))" "${sec[i]}" >"$dir/code.$i.$k"
		done
	done
	t0=$(date +%s%N)
	for ((w = 0; w < C; w++)); do
		sat_client "$dir" "$@" &
		SAT_PIDS+=($!)
	done
	wait "${SAT_PIDS[@]}"
	SAT_MS=$((($(date +%s%N) - t0) / 1000000))
	SAT_PIDS=()
	SAT_FAIL=$((N * STEPS - $(cat "$dir"/result.* | grep -c '^ok$' || true)))
}

# sat_client DIR PORT...: one client of saturate (run it in the background). Login J (user J % N,
# its (J / N)th step) goes to the client that first creates DIR/claim.J (noclobber: an atomic
# O_EXCL create); each client claims upwards from 0, so a user's previous login has always been
# claimed, and is waited for if it is still running.
sat_client() {
	local dir=$1 j k i r
	shift
	set -C
	for ((j = 0; j < N * STEPS; j++)); do
		{ : >"$dir/claim.$j"; } 2>/dev/null || continue
		k=$((j / N)) i=$((j % N))
		if ((k > 0)); then
			while [[ ! -e $dir/result.$i.$((k - 1)) ]]; do sleep 0.005; done
		fi
		cp -f "$dir/code.$i.$k" "$TMP/client/$i/code"
		if login "$i" "${@:1+(i + k) % $#:1}" "127.1.$i.1"; then r=ok; else r=fail; fi
		echo "$r" >"$dir/result.$i.$k"
	done
}

# cpu_ticks PID...: CPU ticks used so far by the processes.
cpu_ticks() {
	local p sum=0
	for p in "$@"; do
		sum=$((sum + $(gk_cpu_ticks "$p")))
	done
	echo "$sum"
}

# etcd_revision: the etcd cluster's revision (one per committed write).
etcd_revision() {
	ETCDCTL_API=3 etcdctl --endpoints "$ETCD_CSV" --command-timeout 5s endpoint status -w json |
		sed -n 's/.*"revision":\([0-9]*\).*/\1/p' | sort -n | tail -1
}

SAT_PIDS=()
etcd_start "$TMP/etcd"
node_start a
node_start b

# the users, each with its own client dir (password, askpass, code file)
opts=("${GK_SSH_OPTS[@]}")
for ((i = 0; i < N; i++)); do
	USERS[i]=$BENCH_USER-$i
	pw=$(gk_create_user "${USERS[i]}")
	mkdir "$TMP/client/$i"
	gk_client_setup "$TMP/client/$i" "$pw"
done
GK_SSH_OPTS=("${opts[@]}") # one known_hosts for all: $TMP/client/known_hosts

# Link a device for every user on both stores, with the code of a past step (now-3, or now-2
# near the end of a step so that the daemon still accepts it). LAST_*: the newest linking step.
link_step() {
	local t
	t=$(date +%s)
	echo $((t / 30 - (t % 30 < 25 ? 3 : 2)))
}
BOLT_SECRET=() ETCD_SECRET=()
LAST_BOLT=0 LAST_ETCD=0
for ((i = 0; i < N; i++)); do
	s=$(link_step)
	ETCD_SECRET[i]=$(gk_enroll "$BIN" "${NODE_CFG[a]}" "${USERS[i]}" "$s")
	LAST_ETCD=$((s > LAST_ETCD ? s : LAST_ETCD))
	s=$(link_step)
	BOLT_SECRET[i]=$(gk_enroll "$BIN" "$BOLT_CFG" "${USERS[i]}" "$s")
	LAST_BOLT=$((s > LAST_BOLT ? s : LAST_BOLT))
done

# Warm up every front door from the trusted source (password only, no code step spent); this
# also accepts the host keys once, before any concurrent client reads known_hosts.
for port in "$BOLT_PORT" "${NODE_PORT[a]}" "${NODE_PORT[b]}"; do
	for _ in 1 2; do
		login 0 "$port" 127.0.0.2 || gk_die "warm-up login through port $port failed"
	done
done

# Latency: one code login per user on each store, bbolt and etcd interleaved user by user so
# that load from elsewhere on the machine hits both alike. Each login's step is chosen just
# before it (the loop may outlast a step); LAST_* become the newest step used.
link_bolt=$LAST_BOLT link_etcd=$LAST_ETCD
bolt_ms=() etcd_ms=()
for ((i = 0; i < N; i++)); do
	s=$(plan_steps "$link_bolt" 1)
	LAST_BOLT=$((s > LAST_BOLT ? s : LAST_BOLT))
	set_code "$i" "${BOLT_SECRET[i]}" "$s"
	t0=$(gk_ms)
	login "$i" "$BOLT_PORT" || gk_die "code login of ${USERS[i]} on bbolt failed; see $TMP/gatekeeper.log"
	bolt_ms+=($(($(gk_ms) - t0)))
	s=$(plan_steps "$link_etcd" 1)
	LAST_ETCD=$((s > LAST_ETCD ? s : LAST_ETCD))
	set_code "$i" "${ETCD_SECRET[i]}" "$s"
	t0=$(gk_ms)
	login "$i" "${NODE_PORT[a]}" || gk_die "code login of ${USERS[i]} on etcd failed; see $TMP/a/gatekeeper.log"
	etcd_ms+=($(($(gk_ms) - t0)))
done
bolt_med=$(printf '%s\n' "${bolt_ms[@]}" | gk_median)
etcd_med=$(printf '%s\n' "${etcd_ms[@]}" | gk_median)
added=$(awk -v a="$etcd_med" -v b="$bolt_med" 'BEGIN { printf "%.1f", a - b }')
# each user's two logins ran one after the other: the median of their differences is less
# moved by load that comes and goes
paired=$(for ((i = 0; i < N; i++)); do echo $((etcd_ms[i] - bolt_ms[i])); done | gk_median)
# the same logins as the gatekeepers timed them (auth_ms: from the password and code to the
# lander's answer, store and lockout counters included), less noisy than the client's wall time
auth_median() {
	grep 'msg="login accepted" remote=127\.0\.0\.1:.*second_factor=code' "$1" |
		sed -n 's/.* auth_ms=\([0-9]*\).*/\1/p' | gk_median
}
bolt_auth=$(auth_median "$TMP/gatekeeper.log")
etcd_auth=$(auth_median "$TMP/a/gatekeeper.log")
auth_added=$(awk -v a="$etcd_auth" -v b="$bolt_auth" 'BEGIN { printf "%.1f", a - b }')
verdict=$(awk -v a="$added" 'BEGIN { print (a <= 15 ? "meets" : "MISSES") }')

# Saturation. run LABEL LASTVAR SECRETS "GATEKEEPER_PIDS" PORT...: saturate with the next STEPS
# steps after $LASTVAR, then note the wall time, failures, CPU time of the gatekeepers and of
# the etcd members (from /proc), and etcd writes, for the table.
declare -A sat_ms sat_fail sat_gk sat_etcd sat_writes
run() {
	local label=$1 last_var=$2 secrets=$3 gk_pids=$4 first g0 e0 r0=0 hz
	shift 4
	first=$(plan_steps "${!last_var}" "$STEPS")
	hz=$(getconf CLK_TCK)
	# shellcheck disable=SC2086 # gk_pids: a list of pids
	g0=$(cpu_ticks $gk_pids) e0=$(cpu_ticks "${ETCD_PIDS[@]}")
	[[ $label == etcd* ]] && r0=$(etcd_revision)
	saturate "$first" "$secrets" "$@"
	printf -v "$last_var" %s $((first + STEPS - 1))
	sat_ms[$label]=$SAT_MS sat_fail[$label]=$SAT_FAIL
	# shellcheck disable=SC2086
	sat_gk[$label]=$(awk -v t=$(($(cpu_ticks $gk_pids) - g0)) -v hz="$hz" -v n=$((N * STEPS)) 'BEGIN { printf "%.0f", t / hz * 1000 / n }')
	sat_etcd[$label]=$(awk -v t=$(($(cpu_ticks "${ETCD_PIDS[@]}") - e0)) -v hz="$hz" -v n=$((N * STEPS)) 'BEGIN { printf "%.0f", t / hz * 1000 / n }')
	sat_writes[$label]=-
	[[ $label == etcd* ]] || sat_etcd[$label]=-
	[[ $label == etcd* ]] && sat_writes[$label]=$(awk -v d=$(($(etcd_revision) - r0)) -v n=$((N * STEPS)) 'BEGIN { printf "%.1f", d / n }')
	((SAT_FAIL == 0)) || echo "  $label: $SAT_FAIL of $((N * STEPS)) logins failed; see $TMP/*/gatekeeper.log" >&2
}
run bolt LAST_BOLT BOLT_SECRET "$BOLT_PID" "$BOLT_PORT"
run etcd1 LAST_ETCD ETCD_SECRET "${NODE_PIDS[0]}" "${NODE_PORT[a]}"
run etcd2 LAST_ETCD ETCD_SECRET "${NODE_PIDS[*]}" "${NODE_PORT[a]}" "${NODE_PORT[b]}"

total=$((N * STEPS))
sat_fmt='  %-40s %8s %6s %7s %10s %12s %12s%s\n'
sat_line() {
	local label=$1 what=$2
	# shellcheck disable=SC2059 # the format is sat_fmt
	printf "$sat_fmt" "$what" \
		"$(awk -v n=$((total - sat_fail[$label])) -v ms="${sat_ms[$label]}" 'BEGIN { printf "%.1f", n * 1000 / ms }')" \
		"$total" "$(awk -v ms="${sat_ms[$label]}" 'BEGIN { printf "%.1f", ms / 1000 }')" \
		"${sat_gk[$label]}" "${sat_etcd[$label]}" "${sat_writes[$label]}" \
		"$( ((sat_fail[$label] == 0)) || echo "   ${sat_fail[$label]} FAILED")"
}
cat <<OUT
code logins, bbolt vs etcd ($(nproc) CPUs, $(ssh -V 2>&1 | cut -d, -f1), etcd $(etcd --version | sed -n 's/^etcd Version: //p'), 3 members on loopback)
latency, \`ssh HOST true\` with password + code from 127.0.0.1, one login per user, bbolt and etcd interleaved
  one node on bbolt                            median of $N: ${bolt_med} ms   (median auth_ms in the gatekeeper's log: ${bolt_auth} ms)
  node a on etcd                               median of $N: ${etcd_med} ms   (median auth_ms in the gatekeeper's log: ${etcd_auth} ms)
  etcd adds ${added} ms to a code login (difference of the medians; target <= 15 ms: $verdict)
    median of the $N per-user differences: ${paired} ms; difference of the auth_ms medians: ${auth_added} ms
saturation: $C concurrent clients; each of the $N users logs in with $STEPS steps' codes, from its own 127.1.I.1
OUT
# shellcheck disable=SC2059
printf "$sat_fmt" "" logins/s logins "wall s" "gk CPU ms" "etcd CPU ms" "etcd writes" ""
# shellcheck disable=SC2059
printf "$sat_fmt" "" "" "" "" "per login" "per login" "per login" ""
sat_line bolt "one node on bbolt"
sat_line etcd1 "one node on etcd (a)"
sat_line etcd2 "two nodes on etcd (a and b alternating)"
echo "  (the whole run took $SECONDS s; figures move with other load on the machine)"
