#!/usr/bin/env bash
# install-deps.sh — install the programs gatekeeper's end-to-end tests, demo and benchmarks run:
# the OpenSSH server and client, oathtool, rsync, xauth, chromium, zbarimg, etcd (server and
# etcdctl) and HAProxy. Quick and silent when everything is present; otherwise needs root and
# installs the Debian packages with apt-get.
#
# Usage: install-deps.sh [COMMAND...]
# Without arguments (`make test`) every command below is checked; with arguments only those
# (scripts/demo.sh passes the few the demo runs), each one a key of pkg_of or extra_pkg_of.
#
# Installing openssh-server, etcd-server or haproxy normally starts the machine's sshd on port 22,
# an etcd on localhost:2379/2380 or an HAProxy. The tests never want that (they start their own on
# free loopback ports), so a temporary /usr/sbin/policy-rc.d forbids service starts during the
# install, and the sshd, etcd and haproxy services this script installed are then stopped (if something
# started them anyway) and disabled so that they do not start at the next boot either.
set -euo pipefail

# command (or absolute path) → Debian package
declare -A pkg_of=(
	[/usr/sbin/sshd]=openssh-server
	[ssh]=openssh-client
	[scp]=openssh-client
	[sftp]=openssh-client
	[ssh-agent]=openssh-client
	[ssh-add]=openssh-client
	[ssh-keygen]=openssh-client
	[rsync]=rsync
	[oathtool]=oathtool
	[chromium]=chromium
	[zbarimg]=zbar-tools
	[google-authenticator]=libpam-google-authenticator
	[systemd-analyze]=systemd
	[systemd-sysusers]=systemd
	[systemd-tmpfiles]=systemd
	[xauth]=xauth # sshd needs it for X11 forwarding; only "recommended" by openssh-client
	[etcd]=etcd-server
	[etcdctl]=etcd-client
	[/usr/sbin/haproxy]=haproxy # /usr/sbin is not on every user's PATH
)

# Checked only when named as an argument (scripts/demo.sh): the passwd package is part of every
# Debian installation, and /usr/sbin is not on every user's PATH, so `make test` does not look.
declare -A extra_pkg_of=(
	[/usr/sbin/useradd]=passwd
	[/usr/sbin/userdel]=passwd
	[/usr/sbin/chpasswd]=passwd
)

# Debian package → the system service its installation enables, which the tests do not want.
# openssh-server's enables the machine's sshd on port 22 at the next boot: the demo and the tests
# run their own on loopback, and must not leave a door open behind them.
declare -A service_of=(
	[etcd-server]=etcd
	[haproxy]=haproxy
	[openssh-server]=ssh
)

if (($# > 0)); then
	cmds=("$@")
else
	cmds=("${!pkg_of[@]}")
fi

missing=()
for cmd in "${cmds[@]}"; do
	pkg=
	if [[ -n $cmd ]]; then
		pkg=${pkg_of[$cmd]:-${extra_pkg_of[$cmd]:-}}
	fi
	if [[ -z $pkg ]]; then
		mapfile -t known < <(printf '%s\n' "${!pkg_of[@]}" "${!extra_pkg_of[@]}" | sort)
		echo "install-deps.sh: unknown command \"$cmd\"; known: ${known[*]}" >&2
		exit 2
	fi
	if [[ $cmd == /* ]]; then
		[[ -x $cmd ]] || missing+=("$pkg")
	else
		command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
	fi
done
if ((${#missing[@]} == 0)); then
	exit 0
fi
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

if ((EUID != 0)); then
	echo "install-deps.sh: missing Debian packages: ${packages[*]}" >&2
	echo "install-deps.sh: run as root (sudo $0${*:+ $*}) or install them yourself: apt-get install ${packages[*]}" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps.sh: apt-get not found; install these packages (Debian names): ${packages[*]}" >&2
	exit 1
fi

policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
	# Ours, so ours to remove; an existing one (e.g. a container's) is left alone.
	trap 'rm -f "$policy"' EXIT
	printf '#!/bin/sh\n# temporary, from gatekeeper scripts/install-deps.sh: start no services\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-deps.sh: installing ${packages[*]}" >&2
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"

# Only services of packages installed just now: an etcd or HAProxy the machine already had is its
# owner's business.
for pkg in "${packages[@]}"; do
	svc=${service_of[$pkg]:-}
	[[ -n $svc ]] || continue
	if command -v systemctl >/dev/null 2>&1; then
		if [[ -d /run/systemd/system ]]; then # systemd is running (not in most CI containers)
			systemctl stop "$svc.service" || true
		fi
		systemctl disable --quiet "$svc.service" || true # works offline too
	else # sysvinit
		if [[ -x /etc/init.d/$svc ]]; then
			"/etc/init.d/$svc" stop || true
		fi
		if command -v update-rc.d >/dev/null 2>&1; then
			update-rc.d "$svc" disable || true
		fi
	fi
	echo "install-deps.sh: $svc service disabled (the tests and the demo start their own $svc)" >&2
done
