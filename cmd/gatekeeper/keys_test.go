package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/admin"
	"gatekeeper/enroll"
	"gatekeeper/gatekeeper"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/bolt"
	"gatekeeper/internal/keytest"
)

// runIn is e.run with stdin.
func (e env) runIn(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append(slices.Clone(args), "--config", e.config))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// writeFile writes data to dir/name (making dir) and returns the path.
func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// keysCmdTest is one step of a keys command sequence.
type keysCmdTest struct {
	name    string
	stdin   string
	args    []string
	wantErr string
	wantIs  error
	want    []string // substrings of stdout
	check   func(t *testing.T, out, errOut string)
}

func runKeysSteps(t *testing.T, e env, steps []keysCmdTest) {
	t.Helper()
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := e.runIn(t, tt.stdin, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q (stdout %q)", err, tt.wantErr, out)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %q does not match %v", err, tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatalf("error: %v (stdout %q)", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if tt.check != nil {
				tt.check(t, out, errOut)
			}
		})
	}
}

func TestAdminKeysWithoutDaemon(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "lander_user_ca")
	e := newEnv(t, fmt.Sprintf("keys:\n  enabled: true\n  lander_ca_file: %q\n  automation_max_lifetime: 72h\n", ca))
	e.withStore(t, func(st store.Store) { seedActive(t, st, "alice", "aaaa-bbbb-cc") })
	laptop, laptopFP := keytest.PublicKey(t, "alice@laptop")
	laptopFile := writeFile(t, dir, "laptop.pub", laptop+"\n")
	backup, backupFP := keytest.PublicKey(t, "")
	old, oldFP := keytest.PublicKey(t, "old")
	k2, k2FP := keytest.PublicKey(t, "desktop")
	authorized := writeFile(t, dir, "authorized_keys", fmt.Sprintf("# keys\n%s\nfrom=\"10.0.0.0/8\",no-pty,command=\"echo hi\" %s\nssh-dss AAAAB3NzaC1kc3MAAACBAP nope\n", old, k2))
	inTwoDays := time.Now().Add(48 * time.Hour)

	runKeysSteps(t, e, []keysCmdTest{
		{name: "lander-ca before the daemon made one", args: []string{"admin", "lander-ca"}, wantErr: "no lander CA yet"},
		{name: "list without keys", args: []string{"admin", "keys", "list"}, want: []string{"No user has registered SSH keys.\n"}},
		{name: "list one user without keys", args: []string{"admin", "keys", "list", "alice"}, want: []string{"alice has no registered SSH keys.\n"}},
		{
			name: "add personal",
			args: []string{"admin", "keys", "add", "alice", laptopFile},
			want: []string{fmt.Sprintf("alice: added personal key %s (\"alice@laptop\"); never expires.\n", laptopFP)},
		},
		{
			name:  "add automation from stdin",
			stdin: backup + "\n",
			args:  []string{"admin", "keys", "add", "alice", "-", "--label", "backup", "--automation", "--from", "192.0.2.0/24,10.1.1.1", "--expires", "2d", "--command", "rsync --server"},
			want:  []string{fmt.Sprintf("alice: added automation key %s (\"backup\"); from 192.0.2.0/24,10.1.1.1/32, expires ", backupFP), `command "rsync --server".`},
			check: func(t *testing.T, out, _ string) {
				if !strings.Contains(out, inTwoDays.Local().Format(tableTime)) && !strings.Contains(out, inTwoDays.Add(time.Minute).Local().Format(tableTime)) {
					t.Errorf("expiry not in two days:\n%s", out)
				}
			},
		},
		{name: "add twice", args: []string{"admin", "keys", "add", "alice", laptopFile}, wantErr: "key already registered", wantIs: enroll.ErrKeyExists},
		{name: "automation without from", args: []string{"admin", "keys", "add", "bob", laptopFile, "--automation"}, wantErr: "--automation needs --from"},
		{name: "automation too long", args: []string{"admin", "keys", "add", "bob", laptopFile, "--automation", "--from", "10.1.0.0/16", "--expires", "4d"},
			wantErr: "at most 72h0m0s", wantIs: enroll.ErrBadKey},
		{name: "bad expiry", args: []string{"admin", "keys", "add", "bob", laptopFile, "--expires", "soon"}, wantErr: `--expires "soon"`},
		{name: "not a key", stdin: "hello\n", args: []string{"admin", "keys", "add", "bob", "-"}, wantErr: "not an SSH public key", wantIs: enroll.ErrBadKey},
		{name: "missing file", args: []string{"admin", "keys", "add", "bob", filepath.Join(dir, "nope.pub")}, wantErr: "no such file"},
		{
			name: "list all",
			args: []string{"admin", "keys", "list"},
			check: func(t *testing.T, out, _ string) {
				headers := []string{"USER", "FINGERPRINT", "LABEL", "KIND", "FROM", "EXPIRES", "LAST USED", "COMMAND"}
				rows := strings.Split(strings.TrimSpace(out), "\n")
				if len(rows) != 3 {
					t.Fatalf("want a header and two rows:\n%s", out)
				}
				got := tableRow(t, out, headers, "alice")
				if want := []string{"alice", laptopFP, "alice@laptop", "personal", "-", "never", "-", "-"}; !slices.Equal(got, want) {
					t.Errorf("first row = %q, want %q", got, want)
				}
				if !strings.Contains(rows[2], "automation  192.0.2.0/24,10.1.1.1/32") || !strings.HasSuffix(rows[2], "rsync --server") {
					t.Errorf("automation row %q", rows[2])
				}
			},
		},
		{
			name: "list json",
			args: []string{"admin", "keys", "list", "alice", "-o", "json"},
			check: func(t *testing.T, out, _ string) {
				var uk admin.UserKeys
				if err := json.Unmarshal([]byte(out), &uk); err != nil || uk.User != "alice" || len(uk.Keys) != 2 || uk.Keys[1].Fingerprint != backupFP ||
					!uk.Keys[1].Automation || uk.Keys[0].AddedBy != enroll.ActorConsole {
					t.Errorf("list json = %+v (%v)\n%s", uk, err, out)
				}
			},
		},
		{
			name: "show lists the keys",
			args: []string{"admin", "show", "alice"},
			want: []string{"SSH keys:\n", "  FINGERPRINT", "  " + laptopFP + "  alice@laptop", "automation"},
		},
		{
			name: "import one file",
			args: []string{"admin", "keys", "import", "alice", authorized},
			want: []string{"USER   LINE  RESULT   FINGERPRINT", "alice: 2 keys added, 1 skipped from " + authorized + ".\n"},
			check: func(t *testing.T, out, _ string) {
				lines := strings.Split(out, "\n")
				var k2Row string
				for _, l := range lines {
					if strings.Contains(l, k2FP) {
						k2Row = l
					}
				}
				if !strings.HasSuffix(k2Row, `from 10.0.0.0/8; command "echo hi"; not carried over: no-pty`) || !strings.Contains(k2Row, "added") {
					t.Errorf("desktop key's row %q:\n%s", k2Row, out)
				}
				if !strings.Contains(out, oldFP) || !strings.Contains(out, "skipped") || !strings.Contains(out, "key type ssh-dss is not accepted") &&
					!strings.Contains(out, "not an authorized_keys key line") {
					t.Errorf("import table:\n%s", out)
				}
			},
		},
		{
			name: "import again skips",
			args: []string{"admin", "keys", "import", "alice", authorized, "-o", "json"},
			check: func(t *testing.T, out, _ string) {
				var res admin.ImportKeysResult
				if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Added) != 0 || len(res.Skipped) != 3 ||
					!strings.Contains(res.Skipped[0].Reason, "already registered") {
					t.Errorf("second import = %+v (%v)", res, err)
				}
			},
		},
		{name: "import needs a file", args: []string{"admin", "keys", "import", "alice"}, wantErr: "want USER and AUTHORIZED_KEYS_FILE"},
		{name: "import bad name", args: []string{"admin", "keys", "import", "a/b", authorized}, wantErr: "invalid user name", wantIs: store.ErrBadName},
		{
			name: "revoke",
			args: []string{"admin", "keys", "revoke", "alice", oldFP},
			want: []string{fmt.Sprintf("alice: revoked %s (\"old\") (no daemon is running here, so no live sessions were ended).\n", oldFP)},
		},
		{name: "revoke unknown", args: []string{"admin", "keys", "revoke", "alice", oldFP}, wantErr: "no such key", wantIs: enroll.ErrNoKey},
		{
			name: "reset keeps keys",
			args: []string{"admin", "reset", "alice"},
			want: []string{"alice: token and recovery codes forgotten; 3 SSH keys kept (--keys removes them too) (no daemon is running, so there were no live sessions to end). alice can now link a new device.\n"},
			check: func(t *testing.T, _, _ string) {
				e.withStore(t, func(st store.Store) {
					u, err := st.Get("alice")
					if err != nil || u.State != store.StateNone || len(u.Keys) != 3 || len(u.Recovery) != 0 {
						t.Errorf("alice after reset = %+v, %v", u, err)
					}
				})
			},
		},
		{
			name: "show a user with keys only",
			args: []string{"admin", "show", "alice"},
			want: []string{"State:", "none", laptopFP},
		},
		{name: "reset with nothing but keys", args: []string{"admin", "reset", "alice"}, wantErr: "3 SSH keys kept; --keys removes them", wantIs: admin.ErrNoSuchUser},
		{
			name: "reset --keys",
			args: []string{"admin", "reset", "alice", "--keys", "-o", "json"},
			check: func(t *testing.T, out, _ string) {
				var res admin.ResetResult
				if err := json.Unmarshal([]byte(out), &res); err != nil || res != (admin.ResetResult{User: "alice", KeysRemoved: 3}) {
					t.Errorf("reset --keys = %+v (%v)", res, err)
				}
				e.withStore(t, func(st store.Store) {
					if u, _ := st.Get("alice"); len(u.Keys) != 0 {
						t.Errorf("keys left: %+v", u.Keys)
					}
					ev := events(t, st)
					for _, want := range []string{"key_added/alice/console", "key_revoked/alice/console", "reset/alice/console"} {
						if !slices.Contains(ev, want) {
							t.Errorf("audit %v lacks %s", ev, want)
						}
					}
				})
			},
		},
	})

	// The CA the daemon creates is printed as the lander's TrustedUserCAKeys line.
	signer, err := gatekeeper.LoadLanderCA(ca)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := e.run(t, "admin", "lander-ca")
	want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " gatekeeper lander user CA\n"
	if err != nil || out != want {
		t.Errorf("lander-ca = %q, %v; want %q", out, err, want)
	}
	out, _, err = e.run(t, "admin", "lander-ca", "-o", "json")
	var js map[string]string
	if err != nil || json.Unmarshal([]byte(out), &js) != nil || js["trusted_user_ca_keys"] != strings.TrimSpace(want) || js["lander_ca_file"] != ca {
		t.Errorf("lander-ca json = %q, %v", out, err)
	}
}

func TestAdminKeysOffNote(t *testing.T) {
	e := newEnv(t, "")
	line, _ := keytest.PublicKey(t, "")
	_, errOut, err := e.runIn(t, line, "admin", "keys", "add", "alice", "-")
	if err != nil || !strings.Contains(errOut, "keys.enabled is false") {
		t.Errorf("add with keys off: %v, stderr %q", err, errOut)
	}
}

// importAllKeysAs runs keys import --all-users on e's database (no daemon) with the users and
// uids of uids in place of the user database, and returns its output.
func importAllKeysAs(t *testing.T, e env, root string, uids map[string]uint32, asJSON bool) (string, error) {
	t.Helper()
	st, err := bolt.Open(e.db, e.key)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	be := &localBackend{st: st, enroll: &enroll.Service{Store: st}, log: slog.New(slog.DiscardHandler)}
	var out bytes.Buffer
	err = importAllKeys(context.Background(), &adminConn{be: be, out: &out, json: asJSON}, root, func(name string) (uint32, error) {
		if uid, ok := uids[name]; ok {
			return uid, nil
		}
		return 0, user.UnknownUserError(name)
	})
	return out.String(), err
}

func TestAdminKeysImportAllUsers(t *testing.T) {
	e := newEnv(t, "")
	root := t.TempDir()
	me := uint32(os.Getuid())
	users := map[string]uint32{"alice": me, "bob": me, "dave": me}
	a1, a1FP := keytest.PublicKey(t, "a1")
	b1, _ := keytest.PublicKey(t, "b1")
	// restrict beside command= is kept by a forced command's certificate (no extensions).
	writeFile(t, filepath.Join(root, "alice", ".ssh"), "authorized_keys", a1+"\nrestrict,port-forwarding,command=\"rsync --server\" "+b1+"\n")
	// A file others may write, which sshd's StrictModes would ignore: not imported.
	d := writeFile(t, filepath.Join(root, "dave", ".ssh"), "authorized_keys", b1+"\n")
	if err := os.Chmod(d, 0o664); err != nil {
		t.Fatal(err)
	}
	// A name that is no user name: left alone.
	writeFile(t, filepath.Join(root, "not a user", ".ssh"), "authorized_keys", b1+"\n")
	// A link to a file elsewhere: not followed.
	secret := writeFile(t, t.TempDir(), "secret", b1+"\n")
	if err := os.MkdirAll(filepath.Join(root, "bob", ".ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(root, "bob", ".ssh", "authorized_keys")); err != nil {
		t.Fatal(err)
	}
	// No .ssh at all, and a plain file: no rows.
	if err := os.MkdirAll(filepath.Join(root, "carol"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, root, "README", "x")

	out, err := importAllKeysAs(t, e, root, users, false)
	if err == nil || !strings.Contains(err.Error(), "2 of 3 authorized_keys files under "+root+" could not be imported") {
		t.Errorf("error = %v", err)
	}
	for _, w := range []string{
		"alice: 2 keys added, 0 skipped from " + filepath.Join(root, "alice", ".ssh", "authorized_keys") + ".\n",
		"not carried over: restrict port-forwarding",
		"bob: " + filepath.Join(root, "bob", ".ssh", "authorized_keys") + " not imported: ",
		"is a symbolic link, which is not followed",
		"dave: " + d + " not imported: " + d + " is writable by group or others (mode 0664)",
		a1FP,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "not a user") || strings.Contains(out, "carol") {
		t.Errorf("a directory without a user's file got a row:\n%s", out)
	}
	e.withStore(t, func(st store.Store) {
		if u, _ := st.Get("alice"); len(u.Keys) != 2 {
			t.Errorf("alice's keys = %+v", u.Keys)
		}
		if u, _ := st.Get("bob"); len(u.Keys) != 0 {
			t.Errorf("bob's keys from a followed link = %+v", u.Keys)
		}
	})

	out, _ = importAllKeysAs(t, e, root, users, true)
	var rows []keysImport
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 3 || rows[0].User != "alice" || len(rows[0].Skipped) != 2 ||
		rows[1].User != "bob" || rows[1].Error == "" || rows[2].User != "dave" || rows[2].Error == "" {
		t.Errorf("second run = %+v (%v)", rows, err)
	}
	for _, args := range [][]string{{"--all-users", "bob", "file"}, {"--home-root", root, "bob", "file"}} {
		if _, _, err := e.run(t, append([]string{"admin", "keys", "import"}, args...)...); err == nil {
			t.Errorf("keys import %v: no error", args)
		}
	}
}

// TestKeysStrictModes checks that --all-users reads an authorized_keys file only where sshd's
// StrictModes would: the file, .ssh and the home directory each owned by the user (their uid in
// the user database, not the home directory's owner) or root, and none writable by group or
// others.
func TestKeysStrictModes(t *testing.T) {
	const other = 61001 // not the user
	root := os.Geteuid() == 0
	userUID := uint32(os.Getuid())
	if root {
		userUID = 61002
	}
	// Owners: "u" the user, "o" someone else, "r" root.
	tests := []struct {
		name                       string
		homeMode, sshMode, keyMode os.FileMode
		owners                     string // of the home, .ssh and the file
		linkedHome                 bool   // the home is a symbolic link to the directory
		wantErr                    string // "": readable; else "home", ".ssh" or "file" and the error's end
	}{
		{name: "sshd's layout", homeMode: 0o755, sshMode: 0o700, keyMode: 0o600, owners: "uuu"},
		{name: "home writable by everyone", homeMode: 0o777, sshMode: 0o700, keyMode: 0o600, owners: "uuu",
			wantErr: "home is writable by group or others (mode 0777): sshd would ignore it too"},
		{name: "home writable by the group", homeMode: 0o775, sshMode: 0o700, keyMode: 0o600, owners: "uuu",
			wantErr: "home is writable by group or others (mode 0775)"},
		{name: "home writable by others, sticky", homeMode: 0o1757, sshMode: 0o700, keyMode: 0o600, owners: "uuu",
			wantErr: "home is writable by group or others (mode 0757)"},
		{name: "linked home", homeMode: 0o750, sshMode: 0o700, keyMode: 0o644, owners: "uuu", linkedHome: true},
		{name: "linked home writable by everyone", homeMode: 0o777, sshMode: 0o700, keyMode: 0o644, owners: "uuu", linkedHome: true,
			wantErr: "home is writable by group or others (mode 0777)"},
		{name: ".ssh writable by the group", homeMode: 0o755, sshMode: 0o770, keyMode: 0o600, owners: "uuu",
			wantErr: ".ssh is writable by group or others (mode 0770)"},
		{name: "file writable by others", homeMode: 0o755, sshMode: 0o700, keyMode: 0o602, owners: "uuu",
			wantErr: "file is writable by group or others (mode 0602)"},
		{name: "home owned by root", homeMode: 0o755, sshMode: 0o700, keyMode: 0o600, owners: "ruu"},
		{name: "all root's", homeMode: 0o755, sshMode: 0o755, keyMode: 0o644, owners: "rrr"},
		// The home directory's owner is not the user: sshd compares with the user's uid.
		{name: "all another user's", homeMode: 0o755, sshMode: 0o700, keyMode: 0o600, owners: "ooo",
			wantErr: fmt.Sprintf("file belongs to uid %d, not to alice (uid %d) or root: sshd would ignore it too", other, userUID)},
		{name: "home another user's", homeMode: 0o755, sshMode: 0o700, keyMode: 0o600, owners: "ouu",
			wantErr: fmt.Sprintf("home belongs to uid %d, not to alice (uid %d) or root", other, userUID)},
		{name: ".ssh another user's", homeMode: 0o755, sshMode: 0o700, keyMode: 0o600, owners: "uou",
			wantErr: fmt.Sprintf(".ssh belongs to uid %d", other)},
		{name: "file another user's", homeMode: 0o755, sshMode: 0o700, keyMode: 0o600, owners: "uuo",
			wantErr: fmt.Sprintf("file belongs to uid %d", other)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !root && strings.ContainsAny(tt.owners, "or") {
				if os.Getenv("CI") == "true" {
					t.Fatal("needs root to give files to other uids; CI must run this test")
				}
				t.Skip("needs root to give files to other uids")
			}
			dir := t.TempDir()
			home := filepath.Join(dir, "alice")
			real := home
			if tt.linkedHome {
				real = filepath.Join(dir, "elsewhere")
				if err := os.Symlink(real, home); err != nil {
					t.Fatal(err)
				}
			}
			ssh := filepath.Join(real, ".ssh")
			file := filepath.Join(ssh, "authorized_keys")
			if err := os.MkdirAll(ssh, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte("\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			for i, p := range []string{real, ssh, file} {
				if err := os.Chmod(p, []os.FileMode{tt.homeMode, tt.sshMode, tt.keyMode}[i]); err != nil {
					t.Fatal(err)
				}
				uid := map[byte]uint32{'u': userUID, 'o': other, 'r': 0}[tt.owners[i]]
				if root {
					if err := os.Lchown(p, int(uid), int(uid)); err != nil {
						t.Fatal(err)
					}
				}
			}
			var names []string
			for _, d := range []string{home, real} {
				names = append(names, filepath.Join(d, ".ssh", "authorized_keys"), "file", filepath.Join(d, ".ssh"), ".ssh", d, "home")
			}
			err := strictModes("alice", userUID, home, filepath.Join(home, ".ssh", "authorized_keys"))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("strictModes: %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(strings.NewReplacer(names...).Replace(err.Error()), tt.wantErr)):
				t.Errorf("strictModes = %v, want an error %q", err, tt.wantErr)
			}
		})
	}
}

// TestAdminKeysImportAllUsersStrictModes checks --all-users' rows for the files sshd would not
// read, and for a directory named like no user.
func TestAdminKeysImportAllUsersStrictModes(t *testing.T) {
	e := newEnv(t, "")
	root := t.TempDir()
	me := uint32(os.Getuid())
	// frank's home and files belong to someone who is not frank (nor root).
	frankUID, frankOwner := me+1, me
	if me == 0 {
		frankUID, frankOwner = 61002, 61001
	}
	users := map[string]uint32{"alice": me, "erin": me, "frank": frankUID}
	a1, a1FP := keytest.PublicKey(t, "a1")
	writeFile(t, filepath.Join(root, "alice", ".ssh"), "authorized_keys", a1+"\n")
	// erin's home is open to everyone: whoever wrote .ssh there could have written the keys.
	writeFile(t, filepath.Join(root, "erin", ".ssh"), "authorized_keys", a1+"\n")
	if err := os.Chmod(filepath.Join(root, "erin"), 0o777); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "frank", ".ssh"), "authorized_keys", a1+"\n")
	if me == 0 {
		for _, p := range []string{"frank", "frank/.ssh", "frank/.ssh/authorized_keys"} {
			if err := os.Chown(filepath.Join(root, p), int(frankOwner), int(frankOwner)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// No user ghost.
	writeFile(t, filepath.Join(root, "ghost", ".ssh"), "authorized_keys", a1+"\n")

	out, err := importAllKeysAs(t, e, root, users, false)
	if err == nil || !strings.Contains(err.Error(), "3 of 4 authorized_keys files under "+root+" could not be imported") {
		t.Errorf("error = %v", err)
	}
	file := func(u string) string { return filepath.Join(root, u, ".ssh", "authorized_keys") }
	for _, w := range []string{
		"alice: 1 key added, 0 skipped from " + file("alice") + ".\n",
		a1FP,
		"erin: " + file("erin") + " not imported: " + filepath.Join(root, "erin") + " is writable by group or others (mode 0777): sshd would ignore it too\n",
		"frank: " + file("frank") + " not imported: " + file("frank") + fmt.Sprintf(" belongs to uid %d, not to frank (uid %d) or root", frankOwner, frankUID),
		"ghost: " + file("ghost") + " not imported: ghost is not in the user database (user: unknown user ghost)",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	e.withStore(t, func(st store.Store) {
		for _, n := range []string{"erin", "frank", "ghost"} {
			if u, _ := st.Get(n); len(u.Keys) != 0 {
				t.Errorf("%s's keys = %+v", n, u.Keys)
			}
		}
	})
}

func TestAdminKeysWithDaemon(t *testing.T) {
	e := newEnv(t, "")
	f := &frontDoor{}
	st := startDaemon(t, e, f)
	seedActive(t, st, "alice")
	line, fp := keytest.PublicKey(t, "work")
	runKeysSteps(t, e, []keysCmdTest{
		{name: "add", stdin: line, args: []string{"admin", "keys", "add", "alice", "-"}, want: []string{"alice: added personal key " + fp}},
		{name: "add twice", stdin: line, args: []string{"admin", "keys", "add", "alice", "-"}, wantErr: "key already registered", wantIs: enroll.ErrKeyExists},
		{name: "list", args: []string{"admin", "keys", "list"}, want: []string{"alice  " + fp + "  work   personal"}},
		{name: "revoke", args: []string{"admin", "keys", "revoke", "alice", fp}, want: []string{fmt.Sprintf("alice: revoked %s (\"work\"); 3 live sessions ended.\n", fp)}},
		{name: "revoke unknown", args: []string{"admin", "keys", "revoke", "alice", fp}, wantErr: "no such key", wantIs: enroll.ErrNoKey},
	})
	if got := f.keyKills(); !slices.Equal(got, []string{"alice " + fp}) {
		t.Errorf("EndKeySessions calls %q", got)
	}
	ev := events(t, st)
	for _, want := range []string{"key_added/alice/" + me, "key_revoked/alice/" + me} {
		if !slices.Contains(ev, want) {
			t.Errorf("audit %v lacks %s", ev, want)
		}
	}
}
