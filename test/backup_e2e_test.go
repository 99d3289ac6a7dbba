package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gatekeeper/internal/etcdtest"
)

// copyFile copies a key file (0600) into dir and returns the copy's path.
func copyFile(t *testing.T, src, dir string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestBackupBoltToEtcd is the migration of issue 10 with real components: a device linked on a
// bbolt-backed gatekeeper, a login with one code, `admin backup` through its admin socket while
// it runs; an etcd-backed gatekeeper with copies of the key file and host key, `admin restore`
// through its socket; then the same phone (codes from oathtool) logs in there with the OpenSSH
// client, and the code used before the backup is refused as replayed.
func TestBackupBoltToEtcd(t *testing.T) {
	t.Parallel()
	needTools(t, "oathtool")
	old := ownGatekeeper(t, gkOptions{})
	u := newUser(t)
	old.enroll(t, u)
	phone := newClient(t, u, old.port, "")
	used := u.nextCode(t)
	phone.setCode(used)
	mustLogIn(t, phone, "login on the bbolt-backed gatekeeper")
	// Audit events are written a moment after the decision: the backup is to hold this one.
	old.waitAudit(t, u.name, "login_ok", func(ev []auditEvent) bool { return countKind(ev, "login_ok", "") == 1 })

	// Backup with the old config, through the running daemon (it holds the bbolt file).
	file := filepath.Join(t.TempDir(), "gatekeeper.backup")
	out := old.admin(t, "backup", file, "--audit")
	if !strings.HasPrefix(out, "backed up 1 user, 0 tickets, ") || !strings.Contains(out, " to "+file) {
		t.Errorf("admin backup said %q", out)
	}
	head, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		Version int    `json:"gatekeeper_backup"`
		Backend string `json:"backend"`
		Users   int    `json:"users"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(string(head), "\n", 2)[0]), &hdr); err != nil || hdr.Version != 1 || hdr.Backend != "bolt" || hdr.Users != 1 {
		t.Errorf("backup header = %+v (%v)", hdr, err)
	}
	if strings.Contains(string(head), u.secret) {
		t.Error("the backup holds the TOTP secret in the clear")
	}

	// The new config: etcd, with copies of the key file and the host key (users' known_hosts
	// stay valid).
	keys := t.TempDir()
	secretKey, hostKey := copyFile(t, old.secretKey, keys), copyFile(t, old.hostKey, keys)
	c := etcdtest.Start(t, 1)
	prefix := "/gk-backup-" + randHex(4) + "/"
	useCopies := func(y string) string {
		y = regexp.MustCompile(`(?m)^secret_key_file: .*$`).ReplaceAllString(y, fmt.Sprintf("secret_key_file: %q", secretKey))
		return regexp.MustCompile(`(?m)^host_key_files: .*$`).ReplaceAllString(y, fmt.Sprintf("host_key_files: [%q]", hostKey))
	}
	next := ownGatekeeper(t, gkOptions{edit: etcdStore(c, prefix, "node-etcd", "", "", useCopies)})

	// Restore with the new config, through its running daemon.
	out = next.admin(t, "restore", file)
	if !strings.HasPrefix(out, "restored 1 user, 0 tickets, ") || !strings.Contains(out, "bolt store") {
		t.Errorf("admin restore said %q", out)
	}
	// The same restore again at once (as after one that stopped part-way): the record is
	// already the backup's, and is left as it is.
	if out := next.admin(t, "restore", file); !strings.HasPrefix(out, "restored 1 user, 0 tickets, ") {
		t.Errorf("the same restore again said %q", out)
	}
	if out := next.admin(t, "list"); !strings.Contains(out, u.name) || !strings.Contains(out, "active") {
		t.Errorf("admin list on the etcd-backed gatekeeper:\n%s", out)
	}

	// The code used before the backup stays used.
	phone.port = next.port
	from := len(next.logBytes())
	phone.setCode(used)
	mustBeDenied(t, phone, "the code used before the backup, on the etcd-backed gatekeeper")
	next.waitLog(t, from, `"login refused"`, u.name, "replayed_code")

	// The same phone's next code logs in.
	phone.setCode(u.nextCode(t))
	mustLogIn(t, phone, "the same phone on the etcd-backed gatekeeper")

	// Now the record holds that login's step: a restore without --force would take it back,
	// and is refused, naming the user.
	if _, errOut, err := next.adminRun(t, "restore", file); err == nil || !strings.Contains(errOut, u.name) || !strings.Contains(errOut, "--force") {
		t.Errorf("a restore after a login, without --force: %v\n%s; want a refusal naming %s", err, errOut, u.name)
	}

	// The audit log came along, and says who restored it.
	events := next.audit(t, u.name)
	if countKind(events, "login_ok", "") < 2 || countKind(events, "link_confirmed", "") != 1 {
		var b strings.Builder
		for _, e := range events {
			b.WriteString(e.String() + "\n")
		}
		t.Errorf("audit log of %s after the restore: want the link and both logins:\n%s", u.name, b.String())
	}
	if out := next.admin(t, "audit"); !strings.Contains(out, "restore") || !strings.Contains(out, "uid 0") {
		t.Errorf("the restore is not in the audit log:\n%s", out)
	}

	// And back out of etcd: the backup names its backend and holds the user.
	again := filepath.Join(t.TempDir(), "from-etcd.backup")
	if out := next.admin(t, "backup", again); !strings.HasPrefix(out, "backed up 1 user, ") {
		t.Errorf("admin backup from etcd said %q", out)
	}
	head, err = os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(strings.SplitN(string(head), "\n", 2)[0]), &hdr); err != nil || hdr.Backend != "etcd" || hdr.Users != 1 {
		t.Errorf("backup header from etcd = %+v (%v)", hdr, err)
	}
}
