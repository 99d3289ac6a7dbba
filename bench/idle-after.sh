#!/usr/bin/env bash
# idle-after.sh — bench/idle.sh for sessions that moved data before going idle, as a user's
# ControlMaster connection or editor session does: each session runs
# `head -c DOWNLOAD /dev/zero; exec sleep 100000` (no pty), so the gatekeeper relays DOWNLOAD to
# every client, and then the sessions sit idle. What a connection keeps once a transfer is over
# (buffers sized for its largest packets) shows here and not in bench/idle.sh, whose sessions
# never carried more than a prompt. Root.
#
# Target (issue 11, idle sessions): <= 64 KiB per session. Prints ROW lines for bench/report.sh.
#   DOWNLOAD=1M SESSIONS=2000 bench/idle-after.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

DOWNLOAD=${DOWNLOAD:-1M}
bytes=$(bench_bytes "$DOWNLOAD")
export CMD="head -c $bytes /dev/zero; exec sleep 100000"
export LABEL="idle session after a $DOWNLOAD download"
exec "$(dirname "$0")/idle.sh"
