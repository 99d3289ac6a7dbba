package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"

	"gatekeeper/admin"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
	"gatekeeper/internal/etcdtest"
)

// seedBackup fills st with what a backup must carry: alice active with recovery codes and a used
// time step, bob pending, a ticket for carol and an audit event. It returns alice's used step.
func seedBackup(t *testing.T, st store.Store) uint64 {
	t.Helper()
	seedActive(t, st, "alice", "aaaa-bbbb-cc", "dddd-eeee-ff")
	used := totp.Step(time.Now())
	if err := st.Update("alice", func(u *store.User) error { u.LastStep = used; return nil }); err != nil {
		t.Fatal(err)
	}
	seedPending(t, st, "bob", time.Now())
	if err := st.AddTicket("carol", "TICKET-FOR-CAROL", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := st.Append(store.Event{Kind: store.EventLoginOK, User: "alice"}); err != nil {
		t.Fatal(err)
	}
	return used
}

// sameKey is a fresh installation whose key file is a copy of e's: where a backup of e can go.
func sameKey(t *testing.T, e env) env {
	t.Helper()
	e2 := newEnv(t, "")
	key, err := os.ReadFile(e.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e2.key, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return e2
}

// checkRestored checks that st holds alice as seedBackup left her: the same secret (her phone's
// codes still open), the used step still used, her recovery codes, and carol's ticket.
func checkRestored(t *testing.T, st store.Store, used uint64) {
	t.Helper()
	secret, last := storedSecret(t, st, "alice")
	if !bytes.Equal(secret, seedSecret) {
		t.Errorf("restored alice's secret = %q, want the original", secret)
	}
	if last != used {
		t.Errorf("restored alice's last step = %d, want %d (used steps stay used)", last, used)
	}
	code := codeFor(t, totp.EncodeSecret(seedSecret), time.Unix(int64(used)*30, 0))
	if _, err := totp.Verify(secret, code, time.Unix(int64(used)*30, 0), 1, last); err == nil {
		t.Error("the code of the step used before the backup was accepted again after the restore")
	}
	if _, err := totp.Verify(secret, codeFor(t, totp.EncodeSecret(seedSecret), time.Unix(int64(used+1)*30, 0)),
		time.Unix(int64(used+1)*30, 0), 1, last); err != nil {
		t.Errorf("the next step's code after the restore: %v", err)
	}
	u, err := st.Get("alice")
	if err != nil || u.State != store.StateActive || len(u.Recovery) != 2 {
		t.Errorf("restored alice = %+v, %v; want active with 2 recovery codes", u, err)
	}
	if u, err := st.Get("bob"); err != nil || u.State != store.StatePending {
		t.Errorf("restored bob = %+v, %v; want pending", u, err)
	}
	if err := st.CheckTicket("carol", "TICKET-FOR-CAROL", time.Now()); err != nil {
		t.Errorf("restored ticket: %v", err)
	}
}

// readHeader returns a backup file's header and its item lines.
func readHeader(t *testing.T, path string) (admin.BackupHeader, []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var h admin.BackupHeader
	if err := json.Unmarshal([]byte(lines[0]), &h); err != nil {
		t.Fatalf("header %q: %v", lines[0], err)
	}
	return h, lines[1:]
}

func TestAdminBackupRestore(t *testing.T) {
	src := newEnv(t, "node_name: login1\n")
	var used uint64
	src.withStore(t, func(st store.Store) { used = seedBackup(t, st) })
	dir := t.TempDir()
	file := filepath.Join(dir, "gk.backup")

	out, _, err := src.run(t, "admin", "backup", file, "--audit")
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if want := "backed up 2 users, 1 ticket, 1 event to " + file + "\n"; out != want {
		t.Errorf("backup said %q, want %q", out, want)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, fi.Mode())
	}
	if _, err := os.Stat(file + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.tmp left behind: %v", file, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".gatekeeper-backup-*")); len(left) > 0 {
		t.Errorf("spool files left behind: %v", left)
	}
	h, lines := readHeader(t, file)
	if h.Version != 1 || h.Backend != "bolt" || h.Node != "login1" || !h.Audit || h.Users != 2 || h.Tickets != 1 || h.Events != 1 ||
		time.Since(h.Created) > time.Minute || len(lines) != 4 {
		t.Errorf("header = %+v with %d item lines", h, len(lines))
	}
	if strings.Contains(strings.Join(lines, "\n"), totp.EncodeSecret(seedSecret)) {
		t.Error("the backup holds alice's secret in the clear")
	}
	src.withStore(t, func(st store.Store) {
		if ev := events(t, st); !slices.Contains(ev, "backup//console") {
			t.Errorf("audit = %v, want a backup event by the console", ev)
		}
	})

	// An existing file is kept unless --force.
	before, _ := os.ReadFile(file)
	if _, _, err := src.run(t, "admin", "backup", file); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("backup over an existing file: %v, want a refusal naming --force", err)
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Error("a refused backup changed the file")
	}
	noAudit := filepath.Join(dir, "noaudit.backup")
	out, _, err = src.run(t, "admin", "backup", noAudit)
	if err != nil || !strings.HasPrefix(out, "backed up 2 users, 1 ticket to ") {
		t.Errorf("backup without --audit: %q, %v", out, err)
	}
	if h, lines := readHeader(t, noAudit); h.Audit || h.Events != 0 || len(lines) != 3 {
		t.Errorf("backup without --audit: header %+v, %d items", h, len(lines))
	}
	if _, _, err := src.run(t, "admin", "backup", noAudit, "--force", "--audit"); err != nil {
		t.Errorf("backup --force: %v", err)
	}
	if h, _ := readHeader(t, noAudit); !h.Audit {
		t.Error("backup --force did not replace the file")
	}

	// Into a fresh store with the same key file.
	dst := sameKey(t, src)
	out, _, err = dst.run(t, "admin", "restore", file)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !strings.HasPrefix(out, "restored 2 users, 1 ticket, 1 event from "+file+" (a backup of login1, bolt store, made ") {
		t.Errorf("restore said %q", out)
	}
	dst.withStore(t, func(st store.Store) {
		checkRestored(t, st, used)
		ev := events(t, st)
		if !slices.Contains(ev, "login_ok/alice/") || !slices.Contains(ev, "restore//console") {
			t.Errorf("audit after restore = %v, want the backup's event and a restore by the console", ev)
		}
		// alice links again on the new store: the backup must now be refused for her.
		if err := st.Update("alice", func(u *store.User) error { u.LastLogin = time.Now(); return nil }); err != nil {
			t.Fatal(err)
		}
	})

	// Again, without --force: refused, naming every user who has a record, nothing written.
	_, _, err = dst.run(t, "admin", "restore", file)
	if !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), "alice, bob") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("restore over existing users: %v, want ErrExists naming alice and bob", err)
	}
	var nEvents int
	dst.withStore(t, func(st store.Store) { nEvents = len(events(t, st)) })
	out, _, err = dst.run(t, "admin", "restore", file, "--force")
	if err != nil || !strings.Contains(out, "(already in the audit log, so not added again: 1 event)") {
		t.Fatalf("restore --force again: %v\n%s", err, out)
	}
	dst.withStore(t, func(st store.Store) { nEvents = len(events(t, st)) })
	out, _, err = dst.run(t, "admin", "restore", file, "--force", "-o", "json")
	if err != nil {
		t.Fatalf("restore --force: %v", err)
	}
	var res backupOutput
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Restored == nil || res.Restored.Users != 2 || res.Node != "login1" {
		t.Errorf("restore --force -o json = %s (%v)", out, err)
	}
	dst.withStore(t, func(st store.Store) {
		checkRestored(t, st, used)
		// The backup's event is in the log already: only the second restore's own event is added.
		if ev := events(t, st); len(ev) != nEvents+1 || !slices.Contains(ev, "login_ok/alice/") {
			t.Errorf("restore --force again added %d events (%v), want only the restore's own (the backup's is there already)", len(ev)-nEvents, ev)
		}
	})
}

// TestAdminBackupStdout: "-" writes the backup to standard output and the summary to standard
// error, and restore reads "-" from standard input.
func TestAdminBackupStdout(t *testing.T) {
	src := newEnv(t, "")
	var used uint64
	src.withStore(t, func(st store.Store) { used = seedBackup(t, st) })
	out, errOut, err := src.run(t, "admin", "backup", "-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, `{"gatekeeper_backup":1,`) || !strings.Contains(errOut, "backed up 2 users, 1 ticket to -") {
		t.Errorf("backup -: stdout %.60q, stderr %q", out, errOut)
	}
	dst := sameKey(t, src)
	root := newRootCmd()
	var stdout bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stdout)
	root.SetIn(strings.NewReader(out))
	root.SetArgs([]string{"admin", "restore", "-", "--config", dst.config})
	if err := root.Execute(); err != nil {
		t.Fatalf("restore -: %v", err)
	}
	dst.withStore(t, func(st store.Store) { checkRestored(t, st, used) })
}

// TestAdminRestoreRefuses: a file that is not whole and sound, or made under another key file,
// is refused before anything is written, naming the line; a store that did not exist is not
// created (its database and key file would tie it to a key that cannot open the backup), and
// without a key file the backup is refused naming secret_key_file.
func TestAdminRestoreRefuses(t *testing.T) {
	src := newEnv(t, "")
	src.withStore(t, func(st store.Store) { seedBackup(t, st) })
	good := filepath.Join(t.TempDir(), "good.backup")
	if _, _, err := src.run(t, "admin", "backup", good, "--audit"); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(raw), "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	edit := func(f func(l []string) []string) string { return strings.Join(f(slices.Clone(lines)), "") }
	// damageLine changes a byte of the stored value on line i (a user record), as damage in the
	// backup file would.
	damageLine := func(l []string, i int) {
		var it store.Item
		if err := json.Unmarshal([]byte(l[i]), &it); err != nil {
			t.Fatal(err)
		}
		it.Value[len(it.Value)/2] ^= 1
		b, _ := json.Marshal(it)
		l[i] = string(b) + "\n"
	}

	tests := []struct {
		name    string
		file    string
		key     string // the target's key file: "" the backup's, "other" another, "none" none
		wantErr string // substring of the error
	}{
		{name: "empty", file: "", wantErr: "the file is empty"},
		{name: "not a backup", file: "hello\n", wantErr: "line 1: not a gatekeeper backup header"},
		{name: "newer format", file: edit(func(l []string) []string {
			l[0] = strings.Replace(l[0], `"gatekeeper_backup":1`, `"gatekeeper_backup":2`, 1)
			return l
		}), wantErr: "line 1: backup format 2 was written by a newer gatekeeper"},
		{name: "cut after a line", file: edit(func(l []string) []string { return l[:len(l)-1] }), wantErr: "is it cut short?"},
		{name: "cut in a line", file: strings.TrimSuffix(string(raw), "\n")[:len(raw)-20], wantErr: "line 5: not a backup item"},
		{name: "garbled line", file: edit(func(l []string) []string { l[2] = "{\"kind\":\"user\",\"key\":\"bob\",\"value\":\"!!\"}\n"; return l }),
			wantErr: "line 3: not a backup item"},
		{name: "unknown kind", file: edit(func(l []string) []string {
			l[2] = strings.Replace(l[2], `"kind":"user"`, `"kind":"group"`, 1)
			return l
		}), wantErr: `line 3: unknown item kind "group"`},
		{name: "unknown field", file: edit(func(l []string) []string {
			l[1] = strings.Replace(l[1], `{"kind"`, `{"extra":1,"kind"`, 1)
			return l
		}), wantErr: `line 2: not a backup item: json: unknown field "extra"`},
		{name: "blank line", file: edit(func(l []string) []string { return slices.Insert(l, 2, "\n") }), wantErr: "line 3: empty line"},
		{name: "user twice", file: edit(func(l []string) []string {
			l[0] = strings.Replace(l[0], `"users":2`, `"users":3`, 1)
			return slices.Insert(l, 2, l[1])
		}), wantErr: "line 3: user alice appears twice (also on line 2)"},
		{name: "record moved to another user", file: edit(func(l []string) []string {
			l[1] = strings.Replace(l[1], `"key":"alice"`, `"key":"mallory"`, 1)
			return l
		}), wantErr: `line 2: user "mallory"`},
		{name: "damaged record", file: edit(func(l []string) []string { damageLine(l, 1); return l }),
			wantErr: `line 2: user "alice": its record in the backup fails its integrity check`},
		{name: "another key file", file: string(raw), key: "other", wantErr: "line 2: "},
		{name: "no key file", file: string(raw), key: "none", wantErr: "secret_key_file "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := sameKey(t, src)
			switch tc.key {
			case "other":
				dst = newEnv(t, "")
				if err := os.WriteFile(dst.key, bytes.Repeat([]byte{7}, store.KeySize), 0o600); err != nil {
					t.Fatal(err)
				}
			case "none":
				dst = newEnv(t, "")
			}
			file := filepath.Join(t.TempDir(), "bad.backup")
			if err := os.WriteFile(file, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := dst.run(t, "admin", "restore", file, "--force")
			if !errors.Is(err, admin.ErrBadBackup) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "nothing was written") {
				t.Fatalf("restore = %v, want ErrBadBackup with %q", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), "restore "+file+": ") || strings.Contains(err.Error(), dst.db) {
				t.Errorf("restore = %v, want the backup file named and not the database", err)
			}
			if tc.key == "other" && !strings.Contains(err.Error(), "another secret key file") {
				t.Errorf("restore under another key: %v, want the key file named", err)
			}
			if tc.key == "none" && !strings.Contains(err.Error(), dst.key+" does not exist") {
				t.Errorf("restore without a key file: %v, want secret_key_file named", err)
			}
			if _, err := os.Stat(dst.db); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused restore created the database %s (%v)", dst.db, err)
			}
			if _, err := os.Stat(dst.key); tc.key == "none" && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused restore created the key file %s (%v)", dst.key, err)
			}
		})
	}
}

// TestAdminBackupWithDaemon: while the daemon holds the bbolt file, backup and restore go
// through its admin socket, with the caller's uid in the audit log.
func TestAdminBackupWithDaemon(t *testing.T) {
	src := newEnv(t, "")
	st := startDaemon(t, src, &frontDoor{})
	used := seedBackup(t, st)
	file := filepath.Join(t.TempDir(), "gk.backup")
	out, _, err := src.run(t, "admin", "backup", file, "--audit")
	if err != nil {
		t.Fatalf("backup through the daemon: %v", err)
	}
	if !strings.HasPrefix(out, "backed up 2 users, 1 ticket, 1 event to ") {
		t.Errorf("backup said %q", out)
	}
	if ev := events(t, st); !slices.Contains(ev, "backup//"+me) {
		t.Errorf("audit = %v, want a backup event by %s", ev, me)
	}

	// The daemon refuses to overwrite its users without --force, naming them.
	_, _, err = src.run(t, "admin", "restore", file)
	if !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), "alice, bob") {
		t.Errorf("restore into the daemon's own users: %v, want ErrExists naming alice and bob", err)
	}

	// Into another daemon's fresh store with the same key file.
	dst := sameKey(t, src)
	dstStore := startDaemon(t, dst, &frontDoor{})
	out, _, err = dst.run(t, "admin", "restore", file)
	if err != nil {
		t.Fatalf("restore through the daemon: %v", err)
	}
	if !strings.HasPrefix(out, "restored 2 users, 1 ticket, 1 event from ") {
		t.Errorf("restore said %q", out)
	}
	checkRestored(t, dstStore, used)
	if ev := events(t, dstStore); !slices.Contains(ev, "restore//"+me) {
		t.Errorf("audit = %v, want a restore event by %s", ev, me)
	}

	// A daemon under another key file refuses the backup, naming the line; nothing is written.
	other := newEnv(t, "")
	otherStore := startDaemon(t, other, &frontDoor{})
	_, _, err = other.run(t, "admin", "restore", file)
	if !errors.Is(err, admin.ErrBadBackup) || !strings.Contains(err.Error(), "line 2: ") || !strings.Contains(err.Error(), "another secret key file") {
		t.Errorf("restore under another key through the daemon: %v", err)
	}
	if users, _ := otherStore.List(); len(users) != 0 {
		t.Errorf("a refused restore wrote %d users", len(users))
	}
}

// TestAdminBackupEtcd: without a daemon, restore and backup open an etcd store directly: a bbolt
// backup goes into etcd, and etcd's backup back into a fresh bbolt file, the records unchanged.
func TestAdminBackupEtcd(t *testing.T) {
	src := newEnv(t, "")
	var used uint64
	src.withStore(t, func(st store.Store) { used = seedBackup(t, st) })
	dir := t.TempDir()
	fromBolt, fromEtcd := filepath.Join(dir, "bolt.backup"), filepath.Join(dir, "etcd.backup")
	if _, _, err := src.run(t, "admin", "backup", fromBolt, "--audit"); err != nil {
		t.Fatal(err)
	}

	c := etcdtest.Start(t, 1)
	etcdEnv := sameKey(t, src)
	cfg, err := os.ReadFile(etcdEnv.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = fmt.Appendf(cfg, "node_name: login2\nstore:\n  backend: etcd\n  etcd:\n    endpoints: [%q]\n    prefix: \"/gk-backup/\"\n", c.Endpoints()[0])
	if err := os.WriteFile(etcdEnv.config, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	// Under another key file, the restore is refused before the store is opened: no key check
	// is written under the prefix, which would tie it to that key file.
	wrongKey := newEnv(t, "")
	if err := os.WriteFile(wrongKey.key, bytes.Repeat([]byte{7}, store.KeySize), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongCfg := fmt.Appendf(nil, "%sstore:\n  backend: etcd\n  etcd:\n    endpoints: [%q]\n    prefix: \"/gk-wrongkey/\"\n",
		mustRead(t, wrongKey.config), c.Endpoints()[0])
	if err := os.WriteFile(wrongKey.config, wrongCfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := wrongKey.run(t, "admin", "restore", fromBolt); !errors.Is(err, admin.ErrBadBackup) {
		t.Errorf("restore into etcd under another key file: %v, want ErrBadBackup", err)
	}
	if resp, err := c.Client(t).Get(t.Context(), "/gk-wrongkey/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Errorf("a refused restore left keys under its prefix: %v, %v", resp, err)
	}

	out, _, err := etcdEnv.run(t, "admin", "restore", fromBolt)
	if err != nil || !strings.HasPrefix(out, "restored 2 users, 1 ticket, 1 event from ") {
		t.Fatalf("restore into etcd: %q, %v", out, err)
	}
	// The same restore again (as after one that stopped part-way): the records are already the
	// backup's and are left as they are; the ticket is left out (it may have been used since).
	if out, _, err := etcdEnv.run(t, "admin", "restore", fromBolt); err != nil || !strings.HasPrefix(out, "restored 2 users, 0 tickets, 1 event from ") ||
		!strings.Contains(out, "(1 ticket left out: expired, or, when this restore ran before") {
		t.Errorf("restore into etcd again: %q, %v; want it to go through, leaving the ticket out", out, err)
	}
	out, _, err = etcdEnv.run(t, "admin", "backup", fromEtcd, "--audit")
	if err != nil || !strings.HasPrefix(out, "backed up 2 users, 1 ticket, ") {
		t.Fatalf("backup from etcd: %q, %v", out, err)
	}
	if h, _ := readHeader(t, fromEtcd); h.Backend != "etcd" || h.Node != "login2" || h.Users != 2 || h.Events < 2 {
		t.Errorf("header of the etcd backup = %+v; want etcd, login2, 2 users, the bbolt event and the restore", h)
	}

	back := sameKey(t, src)
	if _, _, err := back.run(t, "admin", "restore", fromEtcd); err != nil {
		t.Fatalf("restore of the etcd backup into bbolt: %v", err)
	}
	back.withStore(t, func(st store.Store) { checkRestored(t, st, used) })
}

// flipStoredByte changes one byte in the middle of user's stored record in e's (closed)
// database, as damage to the file would: the record fails its integrity check.
func flipStoredByte(t *testing.T, e env, user string) {
	t.Helper()
	db, err := bbolt.Open(e.db, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("users"))
		v := bytes.Clone(b.Get([]byte(user)))
		if v == nil {
			return fmt.Errorf("no record of %s", user)
		}
		v[len(v)/2] ^= 1
		return b.Put([]byte(user), v)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAdminBackupDamaged: a record that fails its integrity check is left out of the backup and
// named with the way out, the backup of the others is written and restores, and the command
// exits non-zero so that a script notices; the audit event names what was left out. With and
// without a daemon alike.
func TestAdminBackupDamaged(t *testing.T) {
	for _, daemon := range []bool{false, true} {
		t.Run(fmt.Sprintf("daemon %v", daemon), func(t *testing.T) {
			src := newEnv(t, "")
			src.withStore(t, func(st store.Store) {
				for _, u := range []string{"alice", "bob", "x"} {
					seedActive(t, st, u)
				}
			})
			flipStoredByte(t, src, "x")
			var st store.Store
			if daemon {
				st = startDaemon(t, src, &frontDoor{})
			}
			file := filepath.Join(t.TempDir(), "bk.jsonl")
			out, _, err := src.run(t, "admin", "backup", file)
			want := "1 damaged record left out: user x (fails its integrity check; it cannot be used as it is: " +
				"`gatekeeper admin reset x` removes it, and the user links again)"
			if !strings.HasPrefix(out, "backed up 2 users, 0 tickets to "+file+"\n") || !strings.Contains(out, want) {
				t.Errorf("backup said %q, want 2 users and %q", out, want)
			}
			if err == nil || !strings.Contains(err.Error(), "backup written to "+file+", but 1 damaged record is left out") {
				t.Errorf("backup = %v, want an error saying the file is written without x", err)
			}
			h, lines := readHeader(t, file)
			if h.Users != 2 || len(lines) != 2 || len(h.LeftOut) != 1 || h.LeftOut[0].Key != "x" {
				t.Errorf("header = %+v with %d items, want 2 users and x left out", h, len(lines))
			}
			check := func(st store.Store) {
				evs, err := st.Events(store.EventQuery{})
				if err != nil {
					t.Fatal(err)
				}
				if len(evs) != 1 || evs[0].Kind != store.EventBackup || !strings.HasSuffix(evs[0].Detail, "; left out 1 damaged record: user x") {
					t.Errorf("audit = %+v, want one backup event naming x", evs)
				}
			}
			if daemon {
				check(st)
			} else {
				src.withStore(t, check)
			}

			dst := sameKey(t, src)
			out, _, err = dst.run(t, "admin", "restore", file)
			if err != nil || !strings.HasPrefix(out, "restored 2 users, 0 tickets from ") ||
				!strings.Contains(out, "(the backup had left out 1 record as damaged: user x; ") {
				t.Errorf("restore of the backup without x = %q, %v", out, err)
			}
		})
	}
}

// TestAdminBackupAudit: a backup is in the audit log only once it is stored (without a daemon),
// or as sent to the command (with one, which cannot know whether the command stored it).
func TestAdminBackupAudit(t *testing.T) {
	e := newEnv(t, "")
	e.withStore(t, func(st store.Store) { seedActive(t, st, "alice") })
	dir := t.TempDir()
	file := filepath.Join(dir, "bk.jsonl")
	// FILE.tmp a directory that is not empty: the backup fails after the dump, storing nothing.
	if err := os.MkdirAll(filepath.Join(file+".tmp", "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.run(t, "admin", "backup", file); err == nil {
		t.Fatal("backup over a FILE.tmp that cannot be removed succeeded")
	}
	details := func(st store.Store) []string {
		evs, err := st.Events(store.EventQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			if e.Kind == store.EventBackup {
				out = append(out, e.Actor+": "+e.Detail)
			}
		}
		return out
	}
	e.withStore(t, func(st store.Store) {
		if d := details(st); len(d) != 0 {
			t.Errorf("a failed backup is in the audit log: %q", d)
		}
	})
	if err := os.RemoveAll(file + ".tmp"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.run(t, "admin", "backup", file); err != nil {
		t.Fatal(err)
	}
	e.withStore(t, func(st store.Store) {
		if d := details(st); !slices.Equal(d, []string{"console: wrote 1 user, 0 tickets to " + file}) {
			t.Errorf("audit = %q, want the backup written to %s", d, file)
		}
	})

	st := startDaemon(t, e, &frontDoor{})
	if _, _, err := e.run(t, "admin", "backup", file, "--force"); err != nil {
		t.Fatal(err)
	}
	if d := details(st); len(d) != 2 || d[1] != me+": sent 1 user, 0 tickets to the admin command, which writes the backup file" {
		t.Errorf("audit = %q, want the backup sent to the command", d)
	}
}

// TestReadBackupTooLarge: a file over the limit is refused without being read into memory.
func TestReadBackupTooLarge(t *testing.T) {
	file := filepath.Join(t.TempDir(), "huge.jsonl")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(admin.MaxBackupBytes + 1); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = readBackup(file, nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, admin.ErrBadBackup) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("readBackup of a file over the limit = %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Errorf("readBackup allocated %d MiB to refuse a file over the limit", n>>20)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAdminRestorePrintsNoEscapes: the header's text comes from the file, which someone other
// than the admin may have written: restore prints it quoted, never a terminal escape sequence.
func TestAdminRestorePrintsNoEscapes(t *testing.T) {
	src := newEnv(t, "")
	src.withStore(t, func(st store.Store) { seedBackup(t, st) })
	out, _, err := src.run(t, "admin", "backup", "-")
	if err != nil {
		t.Fatal(err)
	}
	header, rest, _ := strings.Cut(out, "\n")
	var h map[string]any
	if err := json.Unmarshal([]byte(header), &h); err != nil {
		t.Fatal(err)
	}
	h["node"] = "lander\x1b[2K\x1b[1A\rrestored everything\x1b]0;pwned\a"
	edited, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	dst := sameKey(t, src)
	root := newRootCmd()
	var stdout bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stdout)
	root.SetIn(strings.NewReader(string(edited) + "\n" + rest))
	root.SetArgs([]string{"admin", "restore", "-", "--config", dst.config})
	if err := root.Execute(); err != nil {
		t.Fatalf("restore -: %v", err)
	}
	if strings.ContainsAny(stdout.String(), "\x1b\a\r") || !strings.Contains(stdout.String(), `\x1b[2K`) {
		t.Errorf("restore printed the header's control characters, or not quoted: %q", stdout.String())
	}
}

// TestReadOnlyCommandsRefuseAnEmptyEtcdPrefix: admin list, show, audit and backup with a
// store.etcd.prefix that holds no store (mistyped) say so and write nothing there; a command
// that adds (ticket) starts the store, as the daemon would, and list then works.
func TestReadOnlyCommandsRefuseAnEmptyEtcdPrefix(t *testing.T) {
	c := etcdtest.Start(t, 1)
	e := newEnv(t, fmt.Sprintf("store:\n  backend: etcd\n  etcd:\n    endpoints: [%q]\n    prefix: \"/typo/\"\n", c.Endpoints()[0]))
	for _, args := range [][]string{{"admin", "list"}, {"admin", "show", "alice"}, {"admin", "audit"}, {"admin", "backup", filepath.Join(t.TempDir(), "b.jsonl")}} {
		_, _, err := e.run(t, args...)
		if err == nil || !strings.Contains(err.Error(), "holds no gatekeeper store") || !strings.Contains(err.Error(), "check store.etcd.prefix") {
			t.Errorf("%s on an empty prefix: %v, want it refused naming the prefix", strings.Join(args, " "), err)
		}
	}
	if _, err := os.Stat(e.key); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused command created the key file: %v", err)
	}
	if _, _, err := e.run(t, "admin", "ticket", "carol"); err != nil {
		t.Fatalf("admin ticket on a new prefix: %v", err)
	}
	if _, _, err := e.run(t, "admin", "list"); err != nil {
		t.Errorf("admin list once the store exists: %v", err)
	}
}
