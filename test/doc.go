// Package e2e holds the end-to-end tests of gatekeeper: they build the daemon, start a throwaway
// OpenSSH sshd on loopback as the lander, create local users, link devices with
// `gatekeeper enroll`, and drive the real OpenSSH client (ssh, scp, sftp, rsync) through the
// gatekeeper with codes computed by oathtool.
//
// The tests need root (useradd, and sshd can only check passwords as root). Without root they
// are skipped, except when CI=true, where a skip would hide a broken pipeline and fails instead.
// `make test` installs the OpenSSH, oathtool and rsync packages first (scripts/install-deps.sh).
package e2e
