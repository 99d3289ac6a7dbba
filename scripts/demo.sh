#!/usr/bin/env bash
# demo.sh — `make demo`: try gatekeeper on one machine without touching its real sshd.
#
# Starts a throwaway OpenSSH sshd on 127.0.0.1 (own config and host key in a temp dir) as the
# lander, creates the local user "demo" with a random password (printed once), and runs the
# gatekeeper on 127.0.0.1:2222 with loopback NOT trusted, so that the verification code is
# asked. Ctrl-C stops everything, removes the demo user (if this script created it) and the
# temp dir. Never uses the machine's sshd, port 22 or /etc/ssh.
#
# What the demo runs and a fresh Debian machine may lack (openssh-server, openssh-client,
# oathtool) is installed first by scripts/install-deps.sh, with apt-get, starting no service.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

GK_MAKE_TARGET=demo
gk_require_root "the demo installs missing packages, creates a local user \"demo\" and runs a throwaway sshd, which can check passwords only as root"
"$GK_REPO/scripts/install-deps.sh" /usr/sbin/sshd ssh ssh-keygen oathtool \
	/usr/sbin/useradd /usr/sbin/userdel /usr/sbin/chpasswd
gk_require_tools oathtool

DEMO_USER=demo
DEMO_PORT=2222
BIN=${GATEKEEPER_BIN:-$GK_REPO/bin/gatekeeper}
if [[ ! -x $BIN ]]; then
	(cd "$GK_REPO" && make build)
fi
gk_port_free "$DEMO_PORT" || gk_die "127.0.0.1:$DEMO_PORT is in use; stop whatever listens there and retry"

TMP=$(mktemp -d /tmp/gatekeeper-demo.XXXXXX)
chmod 0711 "$TMP"
created_user=no
gk_status=running # the gatekeeper's exit status once it has exited

cleanup() {
	# A second Ctrl-C or SIGTERM (make passes a SIGTERM on to its child) must not cut the cleanup
	# short; it takes at most the gatekeeper's shutdown grace (30 s with sessions open).
	trap - EXIT
	trap '' INT TERM
	echo
	case $gk_status in
	running) echo "demo: stopping the gatekeeper and the throwaway sshd" ;;
	0) echo "demo: the gatekeeper stopped (SIGINT or SIGTERM); stopping the throwaway sshd" ;;
	*) echo "demo: stopping the throwaway sshd" ;;
	esac
	gk_stop_gatekeeper
	gk_stop_lander
	if [[ $created_user == yes ]]; then
		echo "demo: removing user $DEMO_USER"
		userdel -r -f "$DEMO_USER" 2>/dev/null || userdel -f "$DEMO_USER" || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
# Ctrl-C and SIGTERM are the way to stop the demo: a clean stop, exit status 0.
trap 'exit 0' INT TERM

mkdir "$TMP/lander"
gk_start_lander "$TMP/lander" "$DEMO_USER"

if id "$DEMO_USER" >/dev/null 2>&1; then
	password="(the existing user's own password)"
else
	password=$(gk_create_user "$DEMO_USER")
	created_user=yes
fi

# Linking a device is allowed from loopback (enroll.allowed_networks); logging in from loopback
# still asks for a code (trusted_networks is empty).
GK_ENROLL_ALLOWED='["127.0.0.0/8", "::1/128"]' gk_write_config "$TMP/gatekeeper.yaml" "$TMP" "127.0.0.1:$DEMO_PORT" "[]"
# The admin socket for root only: the default admin.groups also names "gatekeeper", a group the
# packaged install creates and a demo machine lacks (the gatekeeper would warn about it).
sed -i 's|^  socket: .*|&\n  groups: ["root"]|' "$TMP/gatekeeper.yaml"
grep -q '^  groups: \["root"\]$' "$TMP/gatekeeper.yaml" || gk_die "could not set admin.groups in $TMP/gatekeeper.yaml"
gk_start_gatekeeper "$BIN" "$TMP/gatekeeper.yaml" "$TMP/gatekeeper.log" "$DEMO_PORT"

cat <<MSG

gatekeeper demo is running
  lander (throwaway sshd):  127.0.0.1:$LANDER_PORT   log: $TMP/lander/sshd.log
  gatekeeper:               127.0.0.1:$DEMO_PORT    log: $TMP/gatekeeper.log
  config:                   $TMP/gatekeeper.yaml
  user:                     $DEMO_USER
  password:                 $password    (shown only now)

Loopback is NOT a trusted network here, so the gatekeeper asks for a verification code.
In another terminal:

  1. link your authenticator app (scan the QR code, then type one code), one of:
       console:   $BIN enroll $DEMO_USER --config $TMP/gatekeeper.yaml
       over SSH:  ssh -p $GK_LINK_PORT $DEMO_USER@127.0.0.1
       browser:   http://127.0.0.1:$GK_PORTAL_PORT/

  2. log in through the gatekeeper (Password:, then Verification code:):
       ssh -p $DEMO_PORT $DEMO_USER@127.0.0.1

No app at hand? oathtool computes the codes:  oathtool --totp -b SECRET
Admin view: $BIN admin list --config $TMP/gatekeeper.yaml
Metrics:    http://127.0.0.1:$GK_METRICS_PORT/metrics
Each code logs in once; the next login needs the next code (30 s later).

Press Ctrl-C to stop everything$( [[ $created_user == yes ]] && echo " and remove the user $DEMO_USER").
MSG

# Run until Ctrl-C or SIGTERM, or until the gatekeeper exits. Ctrl-C signals the whole process
# group: this shell's trap stops everything. The gatekeeper gets it too and stops cleanly, exit
# status 0, and may be reaped first; or this shell never sees SIGINT (started in the background
# by a shell without job control, which ignores SIGINT in it). So status 0 is a requested stop
# (SIGINT or SIGTERM); anything else is the gatekeeper failing on its own.
if wait "$GK_PID"; then gk_status=0; else gk_status=$?; fi
GK_PID= # reaped
if ((gk_status != 0)); then
	# Kept: the temp dir, log included, goes with the cleanup.
	log=$(mktemp --suffix=.log /tmp/gatekeeper-demo-failed-XXXXXX)
	cp "$TMP/gatekeeper.log" "$log" || true
	{
		echo
		echo "demo: the gatekeeper exited unexpectedly (exit status $gk_status); the end of its log:"
		tail -n 20 "$log" || true
		echo "demo: the whole log is kept in $log"
	} >&2
	exit 1
fi
