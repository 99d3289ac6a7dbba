// Package e2e holds the end-to-end tests of gatekeeper: they build the daemon, start a throwaway
// OpenSSH sshd on loopback as the lander, create local gktest-* users, and use the daemon the way
// researchers and admins do:
//
//   - the real OpenSSH client (ssh, scp, sftp, rsync) through the gatekeeper, with codes computed
//     by oathtool (e2e_test.go, relay_test.go);
//   - device linking in headless Chromium through the portal (the QR read back with zbarimg),
//     with `ssh -tt` on the SSH linking port, and with `gatekeeper enroll` (link_e2e_test.go);
//   - the portal's account side in Chromium: sign-in with both factors, replacing the phone, new
//     recovery codes, the security log, each checked with the real ssh (portal_account_e2e_test.go);
//   - the SSH linking port's menu for a linked user: replacing the phone (its SSH sessions ended
//     or kept, as asked) and new recovery codes, then logins at the front door (link_menu_e2e_test.go);
//   - the admin commands, metrics, SIGHUP and SIGTERM, and importing files made by Debian's
//     google-authenticator (admin_e2e_test.go);
//   - the door tried as an attacker on the internet would: lockouts that must not reach the
//     trusted network, guesses counted before they are checked, floods of idle connections,
//     refusals alike in time, bounded audit growth, a full disk (hostile_e2e_test.go); PROXY
//     headers through a balancer, also without a client address (proxy_e2e_test.go); the
//     max_channels cap (relay_limits_e2e_test.go); and 100 logins with one code while the daemon
//     is killed -9 at random moments (soak_e2e_test.go);
//   - several gatekeepers on one real etcd cluster (internal/etcdtest), behind a real HAProxy
//     sending PROXY v2 (internal/haproxytest): a device linked on one node logs in on another,
//     a code used once anywhere is refused everywhere, lockouts count the whole cluster, quorum
//     lost and regained, a node killed (cluster_e2e_test.go); live sessions listed and ended
//     across nodes (cluster_sessions_e2e_test.go); backup from bbolt restored into etcd
//     (backup_e2e_test.go).
//
// The tests need root (useradd, and sshd can only check passwords as root). Without root they
// are skipped, except when CI=true, where a skip would hide a broken pipeline and fails instead.
// `make test` installs the packages they use first (scripts/install-deps.sh).
package e2e
