# lib.sh — shell helpers shared by scripts/demo.sh and bench/*.sh (source it, do not run it):
# a throwaway OpenSSH sshd as the lander, local users, a gatekeeper config and process, and a
# non-interactive ssh client (SSH_ASKPASS). Everything lives in one temp dir; nothing touches
# the machine's own sshd, port 22 or /etc/ssh.
# shellcheck shell=bash

# shellcheck disable=SC2034 # used by the scripts that source this file
GK_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GK_SSHD=/usr/sbin/sshd

# gk_die MESSAGE: print to stderr and exit 1.
gk_die() {
	echo "$(basename "$0"): $*" >&2
	exit 1
}

# gk_require_root WHY: exit with a clear message unless root.
gk_require_root() {
	((EUID == 0)) || gk_die "must run as root: $1 (try: sudo make ${GK_MAKE_TARGET:-$(basename "$0" .sh)})"
}

# gk_require_tools: the programs must be installed (scripts/install-deps.sh installs them).
gk_require_tools() {
	local missing=() t
	for t in "$GK_SSHD" ssh ssh-keygen useradd userdel chpasswd "$@"; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	((${#missing[@]} == 0)) || gk_die "missing ${missing[*]}: run scripts/install-deps.sh as root"
}

# gk_port_free PORT: true if nothing listens on 127.0.0.1:PORT.
gk_port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# gk_free_port: print a port on 127.0.0.1 that nothing listens on, below the kernel's ephemeral
# range: a port in that range can be taken meanwhile as the local end of an outgoing connection
# (the idle benchmark's thousands of them once took a port the next benchmark was about to bind).
gk_free_port() {
	local p lo=32768
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
	((lo > 12000)) || lo=32768
	while :; do
		p=$((10000 + RANDOM % (lo - 10000)))
		if gk_port_free "$p"; then
			echo "$p"
			return
		fi
	done
}

# gk_wait_banner PORT PID [SECONDS]: wait until an SSH server on 127.0.0.1:PORT sends its
# "SSH-2.0-" banner; fail if PID exits first or the time runs out.
gk_wait_banner() {
	local port=$1 pid=$2 deadline=$((SECONDS + ${3:-30})) banner
	while ((SECONDS < deadline)); do
		kill -0 "$pid" 2>/dev/null || return 1
		banner=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -c 8 <&3" 2>/dev/null || true)
		[[ $banner == SSH-2.0* ]] && return 0
		sleep 0.05
	done
	return 1
}

# gk_start_lander DIR ALLOWUSERS: start a throwaway sshd (own host key and config in DIR) on a
# free 127.0.0.1 port. Sets LANDER_PORT, LANDER_PID (also its process group) and LANDER_KEY
# (the public host key "ssh-ed25519 AAAA...").
gk_start_lander() {
	local dir=$1 allow=$2
	mkdir -p /run/sshd # sshd's privilege separation directory
	ssh-keygen -q -t ed25519 -N '' -C gatekeeper-lander -f "$dir/ssh_host_ed25519_key"
	LANDER_KEY=$(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")
	LANDER_PORT=$(gk_free_port)
	cat >"$dir/sshd_config" <<-EOF
		Port $LANDER_PORT
		ListenAddress 127.0.0.1
		HostKey $dir/ssh_host_ed25519_key
		PidFile $dir/sshd.pid
		UsePAM yes
		PasswordAuthentication yes
		KbdInteractiveAuthentication yes
		PermitRootLogin no
		AllowUsers $allow
		AllowTcpForwarding yes
		AllowAgentForwarding yes
		X11Forwarding yes
		Subsystem sftp internal-sftp
		StrictModes no
		UseDNS no
		MaxStartups 200
	EOF
	# OpenSSH 9.8+ penalises sources with failed logins; older versions reject the keyword.
	if "$GK_SSHD" -t -f "$dir/sshd_config" -o PerSourcePenalties=no 2>/dev/null; then
		echo "PerSourcePenalties no" >>"$dir/sshd_config"
	fi
	"$GK_SSHD" -t -f "$dir/sshd_config" || gk_die "sshd rejected $dir/sshd_config"
	setsid "$GK_SSHD" -D -e -f "$dir/sshd_config" 2>>"$dir/sshd.log" &
	LANDER_PID=$!
	gk_wait_banner "$LANDER_PORT" "$LANDER_PID" || gk_die "lander sshd did not start; see $dir/sshd.log"
	# setsid made sshd a session (and process group) leader: its pid is also the group's id.
	LANDER_PID=$(<"$dir/sshd.pid")
}

# gk_stop_lander: stop the throwaway sshd and its per-connection children (its process group).
gk_stop_lander() {
	if [[ -n ${LANDER_PID:-} ]]; then
		kill -TERM -- "-$LANDER_PID" 2>/dev/null || true
		wait "$LANDER_PID" 2>/dev/null || true
		LANDER_PID=
	fi
}

# gk_create_user NAME: create a local user with a random password; prints the password.
gk_create_user() {
	local name=$1 pw
	pw=$(head -c 12 /dev/urandom | base64 | tr -d '+/=')
	useradd -m -s /bin/bash "$name"
	echo "$name:$pw" | chpasswd
	echo "$pw"
}

# gk_write_config FILE DIR LISTEN TRUSTED [EXTRA]: a gatekeeper config with its state in DIR,
# the lander as upstream, listening on LISTEN (host:port), TRUSTED a YAML list ("[]" for none).
gk_write_config() {
	local file=$1 dir=$2 listen=$3 trusted=$4 extra=${5:-} allowed=${GK_ENROLL_ALLOWED:-[]}
	GK_PORTAL_PORT=$(gk_free_port)
	GK_LINK_PORT=$(gk_free_port)
	GK_METRICS_PORT=$(gk_free_port)
	echo "[127.0.0.1]:$LANDER_PORT $LANDER_KEY" >"$dir/lander_known_hosts"
	cat >"$file" <<-EOF
		listen: "$listen"
		host_key_files: ["$dir/ssh_host_ed25519_key"]
		db: "$dir/gatekeeper.db"
		secret_key_file: "$dir/secret.key"
		upstream:
		  address: "127.0.0.1:$LANDER_PORT"
		  known_hosts: "$dir/lander_known_hosts"
		first_factor: "upstream"
		trusted_networks: $trusted
		enroll:
		  portal_listen: "127.0.0.1:$GK_PORTAL_PORT"
		  ssh_listen: "127.0.0.1:$GK_LINK_PORT"
		  allowed_networks: $allowed
		admin:
		  socket: "$dir/admin.sock"
		metrics_listen: "127.0.0.1:$GK_METRICS_PORT"
		log_format: "text"
		$extra
	EOF
}

# gk_start_gatekeeper BIN CONFIG LOG PORT: run `BIN serve --config CONFIG` in the background,
# stderr to LOG, and wait for its banner on PORT. Sets GK_PID.
gk_start_gatekeeper() {
	local bin=$1 cfg=$2 log=$3 port=$4
	# GK_SERVE_FLAGS: extra flags for serve (bench/profile.sh passes --cpuprofile).
	# shellcheck disable=SC2086 # word splitting wanted
	"$bin" serve --config "$cfg" ${GK_SERVE_FLAGS:-} 2>>"$log" &
	GK_PID=$!
	if ! gk_wait_banner "$port" "$GK_PID"; then
		# The log may go with its temp dir when the caller exits: show its end here.
		tail -n 20 "$log" >&2 2>/dev/null || true
		gk_die "gatekeeper did not start; see $log"
	fi
}

# gk_stop_gatekeeper: SIGTERM the gatekeeper and wait for it.
gk_stop_gatekeeper() {
	if [[ -n ${GK_PID:-} ]]; then
		kill -TERM "$GK_PID" 2>/dev/null || true
		wait "$GK_PID" 2>/dev/null || true
		GK_PID=
	fi
}

# gk_client_setup DIR PASSWORD: prepare a non-interactive OpenSSH client in DIR: an askpass
# script answering "Password:" with PASSWORD and "Verification code:" with the contents of
# DIR/code. Sets the array GK_SSH_OPTS (options for ssh/scp) and exports the askpass variables.
gk_client_setup() {
	local dir=$1
	printf '%s\n' "$2" >"$dir/password"
	chmod 600 "$dir/password"
	cat >"$dir/askpass" <<-EOF
		#!/bin/sh
		case "\$1" in
		*"Verification code:"*) cat "$dir/code" ;;
		*[Pp]assword:*) cat "$dir/password" ;;
		*) echo "askpass: unexpected prompt: \$1" >&2; exit 1 ;;
		esac
	EOF
	chmod 700 "$dir/askpass"
	export SSH_ASKPASS="$dir/askpass" SSH_ASKPASS_REQUIRE=force
	unset DISPLAY SSH_AUTH_SOCK
	# shellcheck disable=SC2034 # used by the caller
	GK_SSH_OPTS=(-F /dev/null -o "UserKnownHostsFile=$dir/known_hosts" -o GlobalKnownHostsFile=/dev/null
		-o StrictHostKeyChecking=accept-new -o NumberOfPasswordPrompts=1
		-o PreferredAuthentications=keyboard-interactive -o BatchMode=no -o ControlMaster=no
		-o ControlPath=none -o LogLevel=ERROR)
}

# gk_enroll BIN CONFIG USER [STEP]: link a device for USER with `gatekeeper enroll`, answering
# with the current code from oathtool, or with the code of the 30 s STEP (within totp.skew of now:
# a past step leaves the steps after it free for logins at once). Prints the base32 secret.
gk_enroll() {
	local bin=$1 cfg=$2 user=$3 line secret="" out in pid at=()
	[[ -n ${4:-} ]] && at=(--now "@$(($4 * 30))")
	coproc ENROLL { "$bin" enroll "$user" --config "$cfg" 2>&1; }
	# bash unsets ENROLL and ENROLL_PID when the coprocess ends: keep copies.
	pid=$ENROLL_PID
	exec {out}<&"${ENROLL[0]}" {in}>&"${ENROLL[1]}"
	while IFS= read -r line <&"$out"; do
		if [[ $line == *"otpauth URI: "* ]]; then
			secret=$(sed -n 's/.*[?&]secret=\([A-Z2-7]*\).*/\1/p' <<<"$line")
			break
		fi
	done
	[[ -n $secret ]] || gk_die "gatekeeper enroll $user printed no otpauth URI"
	oathtool --totp -b "${at[@]}" "$secret" >&"$in"
	exec {in}>&-
	cat <&"$out" >/dev/null
	exec {out}<&-
	wait "$pid" || gk_die "gatekeeper enroll $user failed"
	echo "$secret"
}

# gk_ms: milliseconds since the epoch.
gk_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# gk_median: the median of the numbers on stdin, one per line.
gk_median() {
	sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# gk_cpu_ticks PID: user+system CPU time of PID in clock ticks (from /proc/PID/stat).
gk_cpu_ticks() {
	# Fields after the ")" that ends the command name: utime and stime are the 12th and 13th.
	local stat
	stat=$(<"/proc/$1/stat")
	stat=${stat##*) }
	awk '{ print $12 + $13 }' <<<"$stat"
}
