package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"gatekeeper/admin"
	"gatekeeper/config"
	"gatekeeper/enroll"
	"gatekeeper/gatekeeper"
	"gatekeeper/gatekeeper/gauth"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/bolt"
	"gatekeeper/gatekeeper/totp"
	"gatekeeper/internal/nobodytest"
)

// me is the actor the audit log must name for this test process over the admin socket.
var me = fmt.Sprintf("uid %d", os.Getuid())

// seedSecret is the TOTP key of the users the tests make directly in the store.
var seedSecret = []byte("12345678901234567890")

// shortDir is a temporary directory with a short path: t.TempDir's can exceed the 108 bytes of
// a Unix socket path.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// env is one gatekeeper installation for a test: config file, database, key, socket path.
type env struct {
	config, db, key, socket string
}

// newEnv writes a valid config into a fresh directory. extra is appended to the YAML.
func newEnv(t *testing.T, extra string) env {
	t.Helper()
	dir := t.TempDir()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(knownhosts.Line([]string{"127.0.0.1"}, sshPub)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := env{
		config: filepath.Join(dir, "gatekeeper.yaml"),
		db:     filepath.Join(dir, "gatekeeper.db"),
		key:    filepath.Join(dir, "secret.key"),
		socket: filepath.Join(shortDir(t), "admin.sock"),
	}
	yaml := fmt.Sprintf("db: %q\nsecret_key_file: %q\nupstream:\n  known_hosts: %q\nadmin:\n  socket: %q\n%s",
		e.db, e.key, kh, e.socket, extra)
	if err := os.WriteFile(e.config, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// withStore opens e's database (no daemon may hold it), runs fn and closes it again.
func (e env) withStore(t *testing.T, fn func(st store.Store)) {
	t.Helper()
	st, err := bolt.Open(e.db, e.key)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	defer st.Close()
	fn(st)
}

// run runs `gatekeeper args... --config e.config` in this process and returns its output.
func (e env) run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(""))
	root.SetArgs(append(slices.Clone(args), "--config", e.config))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// seedTime is the "now" the seeded users' times are relative to, taken once, so that a check
// computing them again does not straddle a minute (the table shows minutes).
var seedTime = time.Now()

func seedActive(t *testing.T, st store.Store, name string, recovery ...string) {
	t.Helper()
	now := seedTime
	var rs enroll.RecoverySet
	if len(recovery) > 0 {
		var err error
		if rs, err = enroll.HashRecovery(context.Background(), recovery); err != nil {
			t.Fatal(err)
		}
	}
	err := st.Update(name, func(u *store.User) error {
		u.State, u.Secret = store.StateActive, seedSecret
		u.CreatedAt, u.EnrolledAt, u.LastLogin = now.Add(-48*time.Hour), now.Add(-48*time.Hour), now.Add(-time.Hour)
		rs.SetOn(u)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func seedPending(t *testing.T, st store.Store, name string, since time.Time) {
	t.Helper()
	err := st.Update(name, func(u *store.User) error {
		u.State, u.Secret, u.CreatedAt, u.PendingSince = store.StatePending, seedSecret, since, since
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// events returns the audit log as "kind/user/actor" strings.
func events(t *testing.T, st store.Store) []string {
	t.Helper()
	ev, err := st.Events(store.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ev {
		out = append(out, e.Kind+"/"+e.User+"/"+e.Actor)
	}
	return out
}

// tableRow returns the cells of the row starting with first, split at the header's column
// starts: a value that is not aligned under its header comes out wrong.
func tableRow(t *testing.T, out string, headers []string, first string) []string {
	t.Helper()
	lines := strings.Split(out, "\n")
	var starts []int
	for _, h := range headers {
		i := strings.Index(lines[0], h)
		if i < 0 {
			t.Fatalf("header %q missing in:\n%s", h, out)
		}
		starts = append(starts, i)
	}
	for _, line := range lines[1:] {
		if !strings.HasPrefix(line, first+" ") {
			continue
		}
		cells := make([]string, len(starts))
		for i, st := range starts {
			end := len(line)
			if i+1 < len(starts) {
				end = min(starts[i+1], len(line))
			}
			if st < len(line) {
				cells[i] = strings.TrimSpace(line[st:end])
			}
		}
		return cells
	}
	t.Fatalf("no row %q in:\n%s", first, out)
	return nil
}

// needTool returns the path of a command the test needs: it skips when the command is
// missing, except in CI, where the test must run.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (Debian package %s); CI must run this test", name, pkg)
		}
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
	return p
}

// gaFile writes a google_authenticator file with the real google-authenticator command, as
// a user setting up pam_google_authenticator would (TOTP, no reuse, rate limit 3 per 30 s,
// window 3), and returns its path. counter makes it a counter-based (HOTP) file.
func gaFile(t *testing.T, dir, name string, counter bool) string {
	t.Helper()
	bin := needTool(t, "google-authenticator", "libpam-google-authenticator")
	path := filepath.Join(dir, name)
	args := []string{"-t", "-d", "-f", "-r", "3", "-R", "30", "-w", "3", "-q", "-s", path}
	if counter {
		args = []string{"-c", "-f", "-u", "-w", "3", "-q", "-s", path}
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader("")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("google-authenticator %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return path
}

// rewrite replaces a (read-only) google_authenticator file's content through edit.
func rewrite(t *testing.T, path string, edit func(lines []string) []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := edit(strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
}

// oathtool returns the current TOTP code of a base32 secret from the real oathtool.
func oathtool(t *testing.T, secret string) string {
	t.Helper()
	bin := needTool(t, "oathtool", "oathtool")
	out, err := exec.Command(bin, "--totp", "-b", secret).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// storedSecret reads name's secret and last used step the only way the store hands it out:
// inside Update (returning an error, so nothing is written).
func storedSecret(t *testing.T, st store.Store, name string) (secret []byte, last uint64) {
	t.Helper()
	errRead := errors.New("read only")
	err := st.Update(name, func(u *store.User) error {
		secret, last = slices.Clone(u.Secret), u.LastStep
		return errRead
	})
	if !errors.Is(err, errRead) {
		t.Fatalf("reading %s's record: %v", name, err)
	}
	return secret, last
}

// checkLogin checks that the app of the imported file would log name in: the real oathtool's
// current code for the file's secret passes totp.Verify against what the store holds.
func checkLogin(t *testing.T, st store.Store, name string, gf *gauth.File) {
	t.Helper()
	secret, last := storedSecret(t, st, name)
	if totp.EncodeSecret(secret) != gf.SecretBase32 {
		t.Fatalf("stored secret of %s is not the file's", name)
	}
	if _, err := totp.Verify(secret, oathtool(t, gf.SecretBase32), time.Now(), 1, last); err != nil {
		t.Fatalf("code from oathtool for the imported secret: %v", err)
	}
}

func readGA(t *testing.T, path string) *gauth.File {
	t.Helper()
	gf, err := gauth.ReadFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	return gf
}

func TestAdminWithoutDaemon(t *testing.T) {
	type check func(t *testing.T, e env, stdout string)
	tests := []struct {
		name    string
		args    []string
		wantErr string   // substring of the error; "" = success
		wantIs  error    // the error must match this, when set
		want    []string // substrings of stdout
		check   check
	}{
		{
			name: "list table",
			args: []string{"admin", "list"},
			want: []string{"USER   STATE", "RECOVERY CODES LEFT  LOCKED UNTIL", "alice  active", "bob    pending"},
			check: func(t *testing.T, e env, out string) {
				headers := []string{"USER", "STATE", "ENROLLED", "LAST LOGIN", "RECOVERY CODES LEFT", "LOCKED UNTIL"}
				now := seedTime
				want := []string{"alice", "active", now.Add(-48 * time.Hour).Local().Format(tableTime),
					now.Add(-time.Hour).Local().Format(tableTime), "2", "-"}
				if got := tableRow(t, out, headers, "alice"); !slices.Equal(got, want) {
					t.Errorf("alice's row = %q, want %q:\n%s", got, want, out)
				}
				if got := tableRow(t, out, headers, "bob"); !slices.Equal(got, []string{"bob", "pending", "-", "-", "-", "-"}) {
					t.Errorf("bob's row = %q:\n%s", got, out)
				}
			},
		},
		{
			name: "list json",
			args: []string{"admin", "list", "-o", "json"},
			check: func(t *testing.T, e env, out string) {
				var users []admin.UserInfo
				if err := json.Unmarshal([]byte(out), &users); err != nil {
					t.Fatalf("not JSON: %v\n%s", err, out)
				}
				if len(users) != 2 || users[0].Name != "alice" || users[0].State != store.StateActive ||
					users[0].RecoveryCodesLeft != 2 || users[1].Name != "bob" || users[1].State != store.StatePending {
					t.Errorf("users = %+v", users)
				}
				if strings.Contains(out, "secret") {
					t.Errorf("JSON mentions a secret:\n%s", out)
				}
			},
		},
		{
			name: "show",
			args: []string{"admin", "show", "alice"},
			want: []string{"User:                 alice\n", "State:                active\n", "Recovery codes left:  2\n", "Locked until:"},
		},
		{
			name: "show json",
			args: []string{"admin", "--output", "json", "show", "bob"},
			check: func(t *testing.T, e env, out string) {
				var u admin.UserInfo
				if err := json.Unmarshal([]byte(out), &u); err != nil {
					t.Fatalf("not JSON: %v\n%s", err, out)
				}
				if u.Name != "bob" || u.State != store.StatePending || u.PendingExpiresAt.IsZero() {
					t.Errorf("user = %+v", u)
				}
			},
		},
		{name: "show unknown user", args: []string{"admin", "show", "carol"}, wantErr: "no such user: carol", wantIs: admin.ErrNoSuchUser},
		{name: "show bad name", args: []string{"admin", "show", "a/b"}, wantErr: "invalid user name", wantIs: store.ErrBadName},
		{
			name: "reset",
			args: []string{"admin", "reset", "alice"},
			want: []string{"alice: token and recovery codes forgotten (no daemon is running, so there were no live sessions to end). alice can now link a new device.\n"},
			check: func(t *testing.T, e env, _ string) {
				e.withStore(t, func(st store.Store) {
					if u, _ := st.Get("alice"); u.State != store.StateNone {
						t.Errorf("alice after reset: %s", u.State)
					}
					if ev := events(t, st); !slices.Contains(ev, "reset/alice/console") {
						t.Errorf("audit = %v, want reset/alice/console", ev)
					}
				})
			},
		},
		{
			name: "reset json",
			args: []string{"admin", "reset", "bob", "-o", "json"},
			check: func(t *testing.T, e env, out string) {
				var res admin.ResetResult
				if err := json.Unmarshal([]byte(out), &res); err != nil || res != (admin.ResetResult{User: "bob", HadRecord: true}) {
					t.Errorf("reset JSON = %+v (%v)\n%s", res, err, out)
				}
			},
		},
		{name: "reset unknown user", args: []string{"admin", "reset", "carol"}, wantErr: "no such user: carol", wantIs: admin.ErrNoSuchUser},
		{name: "ticket for a name with capitals", args: []string{"admin", "ticket", "Carol"}, wantErr: `user name "Carol" has capitals, which the front door and the linking doors refuse (allow_uppercase_usernames is off): did you mean "carol"?`},
		{name: "enroll a name with capitals", args: []string{"enroll", "Carol"}, wantErr: `user name "Carol" has capitals`},
		{
			name: "ticket",
			args: []string{"admin", "ticket", "carol"},
			want: []string{"Ticket for carol: ", "Tell carol:", "ssh -p 2223 carol@", ":8080/ in a browser"},
			check: func(t *testing.T, e env, out string) {
				m := regexp.MustCompile(`Ticket for carol: (\S+)\nValid once, until (\d{4}-\d\d-\d\d \d\d:\d\d)\.`).FindStringSubmatch(out)
				if m == nil {
					t.Fatalf("no ticket and expiry in:\n%s", out)
				}
				if want := time.Now().Add(enroll.TicketTTL).Local().Format(tableTime); m[2] != want &&
					m[2] != time.Now().Add(enroll.TicketTTL-time.Minute).Local().Format(tableTime) {
					t.Errorf("expiry %s, want about %s", m[2], want)
				}
				e.withStore(t, func(st store.Store) {
					if err := st.CheckTicket("carol", m[1], time.Now()); err != nil {
						t.Errorf("printed ticket does not work: %v", err)
					}
					if ev := events(t, st); !slices.Contains(ev, "ticket_issued/carol/console") {
						t.Errorf("audit = %v", ev)
					}
				})
			},
		},
		{
			name: "ticket json",
			args: []string{"admin", "ticket", "carol", "-o", "json"},
			check: func(t *testing.T, e env, out string) {
				var tk ticketOutput
				if err := json.Unmarshal([]byte(out), &tk); err != nil {
					t.Fatalf("not JSON: %v\n%s", err, out)
				}
				if tk.User != "carol" || tk.ExpiresAt.IsZero() || !strings.HasPrefix(tk.SSHCommand, "ssh -p 2223 carol@") ||
					!strings.HasSuffix(tk.PortalURL, ":8080/") {
					t.Errorf("ticket = %+v", tk)
				}
				e.withStore(t, func(st store.Store) {
					if err := st.CheckTicket("carol", tk.Ticket, time.Now()); err != nil {
						t.Errorf("ticket does not work: %v", err)
					}
				})
			},
		},
		{name: "ticket for a linked user", args: []string{"admin", "ticket", "alice"}, wantErr: "reset it first", wantIs: enroll.ErrAlreadyLinked},
		{
			name: "audit",
			args: []string{"admin", "audit"},
			want: []string{"TIME                 KIND", "login_refused", `"\x1b[31mevil"`, "login_ok"},
			check: func(t *testing.T, _ env, out string) {
				if strings.Contains(out, "\x1b") {
					t.Errorf("an escape sequence from the log reached the terminal:\n%q", out)
				}
			},
		},
		{
			name: "audit user since",
			args: []string{"admin", "audit", "--user", "alice", "--since", "1h"},
			want: []string{"login_ok"},
			check: func(t *testing.T, _ env, out string) {
				if strings.Contains(out, "evil") || strings.Contains(out, "old login") {
					t.Errorf("another user's or an older event listed:\n%s", out)
				}
			},
		},
		{
			name: "audit json limit",
			args: []string{"admin", "audit", "--limit", "1", "-o", "json"},
			check: func(t *testing.T, _ env, out string) {
				var ev []store.Event
				if err := json.Unmarshal([]byte(out), &ev); err != nil {
					t.Fatalf("not JSON: %v\n%s", err, out)
				}
				if len(ev) != 1 || ev[0].Kind != store.EventLoginOK || ev[0].User != "alice" || ev[0].Remote != "192.0.2.7:4000" {
					t.Errorf("events = %+v, want the newest one", ev)
				}
			},
		},
		{name: "audit bad since", args: []string{"admin", "audit", "--since", "yesterday"}, wantErr: `--since "yesterday": want a time`},
		{name: "sessions", args: []string{"admin", "sessions"}, wantErr: "no gatekeeper daemon is running (admin socket ", wantIs: admin.ErrNoDaemon},
		{name: "kill", args: []string{"admin", "kill", "3"}, wantErr: "there are no live sessions", wantIs: admin.ErrNoDaemon},
		{name: "unlock", args: []string{"admin", "unlock", "alice"}, wantErr: "lockouts live only in the daemon", wantIs: admin.ErrNoDaemon},
		{name: "bad output", args: []string{"admin", "list", "-o", "yaml"}, wantErr: `--output "yaml": want table or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "")
			e.withStore(t, func(st store.Store) {
				seedActive(t, st, "alice", "aaaa-bbbb-cc", "dddd-eeee-ff")
				seedPending(t, st, "bob", time.Now())
				err := st.Append(
					store.Event{Kind: store.EventLoginOK, User: "alice", Detail: "old login", Time: time.Now().Add(-2 * time.Hour)},
					store.Event{Kind: store.EventLoginRefused, User: "\x1b[31mevil", Remote: "198.51.100.1:22", Reason: "unknown user"},
					store.Event{Kind: store.EventLoginOK, User: "alice", Remote: "192.0.2.7:4000"},
				)
				if err != nil {
					t.Fatal(err)
				}
			})
			out, _, err := e.run(t, tt.args...)
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
				t.Fatalf("error: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if tt.check != nil {
				tt.check(t, e, out)
			}
		})
	}
}

func TestAdminDatabaseInUse(t *testing.T) {
	// A daemon whose socket is elsewhere holds the database: say so instead of hanging.
	e := newEnv(t, "")
	st, err := bolt.Open(e.db, e.key)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, _, err = e.run(t, "admin", "list")
	var inUse *bolt.InUseError
	if !errors.As(err, &inUse) || !strings.Contains(err.Error(), "no gatekeeper daemon answers on admin socket "+e.socket) {
		t.Errorf("error = %v, want the database in use and the socket named", err)
	}
}

func TestAdminTicketPlaces(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		enroll           string
		portal, ssh      string
		wantNoPlaceHint  bool
		wantPortalInText bool
	}{
		{enroll: "", portal: "http://" + host + ":8080/", ssh: "ssh -p 2223 carol@" + host, wantPortalInText: true},
		{enroll: `{portal_listen: "192.0.2.10:8443", ssh_listen: ""}`, portal: "http://192.0.2.10:8443/", wantPortalInText: true},
		{enroll: `{portal_listen: "", ssh_listen: "[::]:2222"}`, ssh: "ssh -p 2222 carol@" + host},
		{enroll: `{portal_listen: "", ssh_listen: ""}`, wantNoPlaceHint: true},
	}
	for _, tt := range tests {
		t.Run(tt.enroll, func(t *testing.T) {
			extra := ""
			if tt.enroll != "" {
				extra = "enroll: " + tt.enroll + "\n"
			}
			e := newEnv(t, extra)
			out, _, err := e.run(t, "admin", "ticket", "carol")
			if err != nil {
				t.Fatal(err)
			}
			if tt.portal != "" && !strings.Contains(out, "Open "+tt.portal+" in a browser") {
				t.Errorf("no portal %s in:\n%s", tt.portal, out)
			}
			if tt.portal == "" && strings.Contains(out, "browser") {
				t.Errorf("portal named though off:\n%s", out)
			}
			if tt.ssh != "" && !strings.Contains(out, tt.ssh+"\n") {
				t.Errorf("no %q in:\n%s", tt.ssh, out)
			}
			if tt.ssh == "" && strings.Contains(out, "ssh -p") {
				t.Errorf("ssh named though off:\n%s", out)
			}
			if got := strings.Contains(out, "the ticket cannot be used until one is"); got != tt.wantNoPlaceHint {
				t.Errorf("hint about no place = %v, want %v:\n%s", got, tt.wantNoPlaceHint, out)
			}
		})
	}
}

func TestAdminImportWithoutDaemon(t *testing.T) {
	dir := t.TempDir()
	good := gaFile(t, dir, "good", false)
	hotp := gaFile(t, dir, "hotp", true)
	noTOTP := gaFile(t, dir, "nototp", false)
	rewrite(t, noTOTP, func(lines []string) []string {
		return slices.DeleteFunc(lines, func(l string) bool { return l == `" TOTP_AUTH` })
	})
	// A code used through PAM right before the switch: the next step is recorded as used, so
	// the current code (and the next) must count as replayed after the import.
	used := gaFile(t, dir, "used", false)
	usedStep := totp.Step(time.Now()) + 1
	rewrite(t, used, func(lines []string) []string {
		for i, l := range lines {
			if l == `" DISALLOW_REUSE` {
				lines[i] = fmt.Sprintf(`" DISALLOW_REUSE %d %d`, usedStep-5, usedStep)
			}
		}
		return lines
	})
	gf := readGA(t, good)

	t.Run("import", func(t *testing.T) {
		e := newEnv(t, "")
		out, _, err := e.run(t, "admin", "import-google-authenticator", "dave", good)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("dave: imported from %s; the codes of dave's current app work now. Its %d scratch codes are dave's recovery codes now.\n", good, len(gf.Scratch))
		if out != want {
			t.Errorf("stdout = %q, want %q", out, want)
		}
		e.withStore(t, func(st store.Store) {
			u, err := st.Get("dave")
			if err != nil || u.State != store.StateActive || u.EnrolledAt.IsZero() || len(u.Recovery) != len(gf.Scratch) {
				t.Fatalf("dave = %+v, %v", u, err)
			}
			checkLogin(t, st, "dave", gf)
			// A scratch code of the file is a recovery code, once.
			for _, try := range []bool{true, false} {
				err := st.Update("dave", func(u *store.User) error {
					if got := enroll.VerifyRecovery(u, gf.Scratch[0]); got != try {
						t.Errorf("scratch code as recovery code: %v, want %v", got, try)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if ev := events(t, st); !slices.Contains(ev, "import/dave/console") {
				t.Errorf("audit = %v", ev)
			}
		})
		_, _, err = e.run(t, "admin", "import-google-authenticator", "dave", good)
		if !errors.Is(err, enroll.ErrAlreadyLinked) || !strings.Contains(err.Error(), "--force") {
			t.Errorf("second import: %v, want already linked and a hint at --force", err)
		}
		out, _, err = e.run(t, "admin", "import-google-authenticator", "dave", good, "--force", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var res admin.ImportResult
		if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Replaced || res.RecoveryCodes != len(gf.Scratch) {
			t.Errorf("forced import JSON = %+v (%v)", res, err)
		}
	})

	t.Run("used steps stay used", func(t *testing.T) {
		e := newEnv(t, "")
		if _, _, err := e.run(t, "admin", "import-google-authenticator", "erin", used); err != nil {
			t.Fatal(err)
		}
		e.withStore(t, func(st store.Store) {
			secret, last := storedSecret(t, st, "erin")
			if last != usedStep {
				t.Errorf("last used step = %d, want %d", last, usedStep)
			}
			_, err := totp.Verify(secret, oathtool(t, totp.EncodeSecret(secret)), time.Now(), 1, last)
			if !errors.Is(err, totp.ErrReplay) {
				t.Errorf("code already used through PAM: %v, want ErrReplay", err)
			}
		})
	})

	refusals := []struct {
		name, file, wantErr string
		wantIs              error
	}{
		{"hotp", hotp, "counter-based (HOTP_COUNTER)", gauth.ErrUnsupported},
		{"no TOTP_AUTH", noTOTP, "no TOTP_AUTH line", gauth.ErrUnsupported},
		{"missing file", filepath.Join(dir, "absent"), "no such file", nil},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "")
			_, _, err := e.run(t, "admin", "import-google-authenticator", "frank", tt.file)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "cannot import frank: ") {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error does not match %v", tt.wantIs)
			}
			e.withStore(t, func(st store.Store) {
				if u, _ := st.Get("frank"); u.State != store.StateNone {
					t.Errorf("refused import left frank %s", u.State)
				}
			})
		})
	}
}

// lookupTable is a fake of the system's user database for importHomes.
func lookupTable(names map[uint32]string) func(uint32) (string, error) {
	return func(uid uint32) (string, error) {
		if n, ok := names[uid]; ok {
			return n, nil
		}
		return "", user.UnknownUserIdError(int(uid))
	}
}

func TestImportHomes(t *testing.T) {
	needRoot(t, "give home directories to other uids")
	src := t.TempDir()
	good := gaFile(t, src, "good", false)
	hotp := gaFile(t, src, "hotp", true)
	root := t.TempDir()
	// home makes root/name owned by dirUID, with a copy of file owned by fileUID (no file when
	// file is "").
	home := func(name string, dirUID, fileUID int, file string) {
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, dirUID, dirUID); err != nil {
			t.Fatal(err)
		}
		if file == "" {
			return
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, gauthFile)
		if err := os.WriteFile(p, b, 0o400); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, fileUID, fileUID); err != nil {
			t.Fatal(err)
		}
	}
	home("alice", 61001, 61001, good)
	home("bob", 61002, 61003, good)   // file not the home owner's
	home("ghost", 61004, 61004, good) // owner without a name
	home("carol", 61005, 61005, good) // linked already
	home("dave", 61006, 61006, hotp)
	home("eve", 61007, 61007, "")      // no file: no row
	home("alice2", 61001, 61001, good) // alice's second directory
	if err := os.Symlink("/etc/shadow", filepath.Join(root, "mallory-dir")); err != nil {
		t.Fatal(err)
	}
	home("shared", 0, 0, good) // root's directory: no one's home
	home("mallory", 61008, 61008, "")
	if err := os.Symlink("/etc/shadow", filepath.Join(root, "mallory", gauthFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "README"), []byte("not a home"), 0o644); err != nil {
		t.Fatal(err)
	}
	lookup := lookupTable(map[uint32]string{0: "root", 61001: "alice", 61002: "bob", 61005: "carol", 61006: "dave", 61008: "mallory"})

	e := newEnv(t, "")
	st, err := bolt.Open(e.db, e.key)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	seedActive(t, st, "carol")
	be := &localBackend{st: st, enroll: &enroll.Service{Store: st}, log: slog.New(slog.DiscardHandler)}
	var out bytes.Buffer
	err = importAll(context.Background(), &adminConn{be: be, out: &out}, root, false, lookup)
	if err == nil || !strings.Contains(err.Error(), "6 of 8 google_authenticator files under "+root+" could not be imported") {
		t.Errorf("error = %v, want 6 of 8 failed", err)
	}
	want := []struct{ home, user, result string }{
		{"alice", "alice", "imported (" + fmt.Sprint(len(readGA(t, good).Scratch)) + " recovery codes)"},
		{"alice2", "alice", "error: alice also owns " + filepath.Join(root, "alice") + ", imported already"},
		{"bob", "bob", "error: .google_authenticator belongs to uid 61003, not to bob (uid 61002)"},
		{"carol", "carol", "skipped: already linked"},
		{"dave", "dave", "error: " + filepath.Join(root, "dave", gauthFile) + ": unsupported google_authenticator file: counter-based (HOTP_COUNTER)"},
		{"ghost", "uid 61004", "error: the directory's owner (uid 61004) has no user name"},
		{"mallory", "mallory", "error: " + filepath.Join(root, "mallory", gauthFile) + ": malformed google_authenticator file: is a symbolic link"},
		{"shared", "uid 0", "error: the directory is root's, not a user's home"},
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want)+1 || !strings.HasPrefix(lines[0], "USER ") {
		t.Fatalf("want a header and %d rows:\n%s", len(want), out.String())
	}
	for i, w := range want {
		re := regexp.MustCompile(`^` + regexp.QuoteMeta(w.user) + ` +` + regexp.QuoteMeta(filepath.Join(root, w.home)) + ` +` + regexp.QuoteMeta(w.result))
		if !re.MatchString(lines[i+1]) {
			t.Errorf("row %d = %q, want %s %s %s", i+1, lines[i+1], w.user, w.home, w.result)
		}
	}
	if u, _ := st.Get("alice"); u.State != store.StateActive {
		t.Errorf("alice = %s, want active", u.State)
	}
	checkLogin(t, st, "alice", readGA(t, good))
	for _, n := range []string{"bob", "dave", "mallory", "root"} {
		if u, _ := st.Get(n); u.State != store.StateNone {
			t.Errorf("%s = %s after a refused import", n, u.State)
		}
	}
}

func TestAdminImportAllUsers(t *testing.T) {
	// The real user database: a home owned by this process's user.
	me, err := user.Current()
	if err == nil {
		err = store.CheckName(me.Username)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this user cannot own an imported home (%v); CI must run this test", err)
		}
		t.Skipf("this user cannot own an imported home (%v)", err)
	}
	// As root (make test), the home is nobody's: a directory of root's is no user's home to
	// the import.
	if os.Geteuid() == 0 {
		if me, err = user.Lookup("nobody"); err != nil {
			t.Fatalf("user nobody: %v", err)
		}
	}
	root := t.TempDir()
	home := filepath.Join(root, me.Username)
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	file := gaFile(t, home, gauthFile, false)
	gf := readGA(t, file)
	if os.Geteuid() == 0 {
		uid, _ := strconv.Atoi(me.Uid)
		gid, _ := strconv.Atoi(me.Gid)
		for _, p := range []string{home, file} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	e := newEnv(t, "")
	out, _, err := e.run(t, "admin", "import-google-authenticator", "--all-users", "--home-root", root)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^USER +HOME +RESULT\n` + regexp.QuoteMeta(me.Username) + ` +` + regexp.QuoteMeta(home) + ` +imported \(\d+ recovery codes\)\n$`).MatchString(out) {
		t.Errorf("stdout:\n%s", out)
	}
	e.withStore(t, func(st store.Store) { checkLogin(t, st, me.Username, gf) })

	out, _, err = e.run(t, "admin", "import-google-authenticator", "--all-users", "--home-root", root, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []importRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0].Result != importSkipped || rows[0].Detail != "already linked" {
		t.Errorf("second run = %+v (%v), want skipped: already linked", rows, err)
	}

	for _, args := range [][]string{
		{"--all-users", "bob", "file"},
		{"bob"},
		{"--home-root", root, "bob", "file"},
	} {
		if _, _, err := e.run(t, append([]string{"admin", "import-google-authenticator"}, args...)...); err == nil {
			t.Errorf("import-google-authenticator %v: no error", args)
		}
	}
}

// frontDoor fakes the SSH front door's live state behind the admin socket's hooks.
type frontDoor struct {
	mu       sync.Mutex
	sessions []gatekeeper.SessionInfo
	killed   []uint64
	resets   []string
	locked   map[string]time.Time
	// keyEnded lists the EndKeySessions calls, "user fingerprint".
	keyEnded []string
}

// keyKills returns the EndKeySessions calls.
func (f *frontDoor) keyKills() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.keyEnded)
}

// state returns what the hooks did, under the lock (they run on the server's goroutines).
func (f *frontDoor) state() (killed []uint64, resets []string, sessions int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.killed), slices.Clone(f.resets), len(f.sessions)
}

func (f *frontDoor) install(s *admin.Server) {
	s.Enroll.EndKeySessions = func(user, fp string) int {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.keyEnded = append(f.keyEnded, user+" "+fp)
		return 3
	}
	s.Sessions = func(context.Context) (any, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return slices.Clone(f.sessions), nil
	}
	s.Kill = func(_ context.Context, node string, id uint64) (admin.KillResult, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, x := range f.sessions {
			if x.ID == id && (node == "" || node == x.Node) {
				f.sessions = slices.Delete(f.sessions, i, i+1)
				f.killed = append(f.killed, id)
				return admin.KillResult{Node: x.Node, ID: id, User: x.User, Remote: x.Remote, Ended: true}, nil
			}
		}
		return admin.KillResult{}, fmt.Errorf("%w: no live session has id %d", admin.ErrNoSuchSession, id)
	}
	s.OnReset = func(user string) int {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.resets = append(f.resets, user)
		n := len(f.sessions)
		f.sessions = slices.DeleteFunc(f.sessions, func(x gatekeeper.SessionInfo) bool { return x.User == user })
		return n - len(f.sessions)
	}
	s.OnUnlock = func(user string) ([]admin.LockInfo, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		until, was := f.locked[user]
		delete(f.locked, user)
		if !was {
			return nil, nil
		}
		return []admin.LockInfo{{Scope: "user", Name: user, Until: until, Level: 1}}, nil
	}
	s.OnUnlockAddress = func(a netip.Addr) ([]admin.LockInfo, error) {
		return []admin.LockInfo{{Scope: "address", Name: a.String(), Failures: 2}}, nil
	}
	s.Locks = func(user string) []admin.LockInfo {
		f.mu.Lock()
		defer f.mu.Unlock()
		if until, ok := f.locked[user]; ok {
			return []admin.LockInfo{{Scope: "user", Name: user, Until: until, Level: 1}}
		}
		return nil
	}
}

// startDaemon serves the admin API for e on a real socket, with the database open in the
// "daemon" (so the commands cannot open it) and the front door faked.
func startDaemon(t *testing.T, e env, f *frontDoor) store.Store {
	t.Helper()
	st, err := bolt.Open(e.db, e.key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := &admin.Server{Enroll: &enroll.Service{Store: st, Issuer: "Example HPC", Skew: 1}, Store: st}
	f.install(srv)
	ln, err := admin.Listen(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v, want http.ErrServerClosed", err)
		}
	})
	return st
}

func TestAdminWithDaemon(t *testing.T) {
	e := newEnv(t, "")
	start := time.Now().Add(-10 * time.Minute)
	lockedUntil := time.Now().Add(4 * time.Minute)
	f := &frontDoor{
		sessions: []gatekeeper.SessionInfo{
			{Node: "login1", ID: 7, User: "alice", Remote: "203.0.113.5:51000", Start: start, BytesUp: 1536, BytesDown: 10, ThisNode: true},
			{Node: "login1", ID: 8, User: "alice", Remote: "[2001:db8::1]:4022", Trusted: true, Start: start, BytesUp: 3 << 30, ThisNode: true},
			{Node: "login2", ID: 9, User: "bob", Remote: "198.51.100.9:2200", Start: start},
		},
		locked: map[string]time.Time{"bob": lockedUntil},
	}
	st := startDaemon(t, e, f)
	seedActive(t, st, "alice", "aaaa-bbbb-cc")
	seedActive(t, st, "bob")
	// bob's refused logins, for unlock's hint at the addresses: two from one address, one from
	// another, one too old to count, and a lockout (not a refusal).
	for _, ev := range []store.Event{
		{Kind: store.EventLoginRefused, User: "bob", Remote: "198.51.100.7", Reason: "wrong_code"},
		{Kind: store.EventLoginRefused, User: "bob", Remote: "203.0.113.9", Reason: "replayed_code"},
		{Kind: store.EventLoginRefused, User: "bob", Remote: "203.0.113.9", Reason: "wrong_code"},
		{Kind: store.EventLoginRefused, User: "bob", Remote: "192.0.2.1", Reason: "wrong_code", Time: time.Now().Add(-2 * time.Hour)},
		{Kind: store.EventLockout, User: "bob", Remote: "192.0.2.2"},
	} {
		if err := st.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	var good string
	if _, err := exec.LookPath("google-authenticator"); err == nil || os.Getenv("CI") == "true" {
		good = gaFile(t, dir, "good", false)
	}

	steps := []struct {
		name    string
		args    []string
		wantErr string
		wantIs  error
		want    []string
		check   func(t *testing.T, out string)
	}{
		{
			name: "list shows lockouts",
			args: []string{"admin", "list"},
			want: []string{"bob    active", lockedUntil.Local().Format(tableTime) + "\n"},
		},
		{
			name: "show lockout",
			args: []string{"admin", "show", "bob", "-o", "json"},
			check: func(t *testing.T, out string) {
				var u admin.UserInfo
				if err := json.Unmarshal([]byte(out), &u); err != nil || !u.LockedUntil.Equal(lockedUntil) {
					t.Errorf("bob = %+v (%v), want locked until %v", u, err, lockedUntil)
				}
			},
		},
		{
			name: "sessions",
			args: []string{"admin", "sessions"},
			want: []string{"NODE    ID  USER   FROM                TRUSTED  STARTED              UP       DOWN\n",
				"login1  7   alice  203.0.113.5:51000   no       " + start.Local().Format(tableStamp) + "  1.5 KiB  10 B\n",
				"login1  8   alice  [2001:db8::1]:4022  yes", "3.0 GiB",
				// Another node's session: no byte counts.
				"login2  9   bob    198.51.100.9:2200   no       " + start.Local().Format(tableStamp) + "  -        -\n"},
		},
		{
			name: "sessions json",
			args: []string{"admin", "sessions", "-o", "json"},
			check: func(t *testing.T, out string) {
				var got []gatekeeper.SessionInfo
				if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 3 || got[0].ID != 7 || got[0].BytesUp != 1536 || got[1].Remote != "[2001:db8::1]:4022" {
					t.Errorf("sessions = %+v (%v)", got, err)
				}
			},
		},
		{
			name: "kill",
			args: []string{"admin", "kill", "9"},
			want: []string{"Session login2/9 (bob) ended.\n"},
			check: func(t *testing.T, _ string) {
				if killed, _, _ := f.state(); !slices.Equal(killed, []uint64{9}) {
					t.Errorf("killed = %v", killed)
				}
				if ev := events(t, st); !slices.Contains(ev, "session_killed/bob/"+me) {
					t.Errorf("audit = %v, want session_killed of bob's session by %s", ev, me)
				}
			},
		},
		{name: "kill unknown", args: []string{"admin", "kill", "9"}, wantErr: "no live session has id 9", wantIs: admin.ErrNoSuchSession},
		{name: "kill on the wrong node", args: []string{"admin", "kill", "login2/8"}, wantErr: "no live session has id 8", wantIs: admin.ErrNoSuchSession},
		{name: "kill without a node", args: []string{"admin", "kill", "/8"}, wantErr: `session "/8": want ID or NODE/ID`},
		{name: "kill not a number", args: []string{"admin", "kill", "login1/x"}, wantErr: `session "login1/x": want ID or NODE/ID`},
		{
			name: "unlock",
			args: []string{"admin", "unlock", "bob"},
			want: []string{"bob: cleared user bob: locked until ", "(level 1)\n",
				"bob's logins refused in the last hour came from 203.0.113.9 (2), 198.51.100.7 (1), newest first. A source address has lockouts of its own"},
			check: func(t *testing.T, _ string) {
				if ev := events(t, st); !slices.Contains(ev, "unlock/bob/"+me) {
					t.Errorf("audit = %v", ev)
				}
			},
		},
		{name: "unlock again", args: []string{"admin", "unlock", "bob"}, want: []string{"bob was not locked out.\n"}},
		{name: "unlock address", args: []string{"admin", "unlock", "--address", "203.0.113.9"},
			want: []string{"203.0.113.9: cleared address 203.0.113.9: not locked (level 0), 2 failures counted\n"}},
		{name: "unlock needs one of user and address", args: []string{"admin", "unlock"}, wantErr: "give USER or --address ADDR"},
		{name: "unlock bad address", args: []string{"admin", "unlock", "--address", "lander"}, wantErr: `--address "lander" is not an IP address`},
		{
			name: "reset ends sessions",
			args: []string{"admin", "reset", "alice"},
			want: []string{"alice: token and recovery codes forgotten; 2 live sessions ended. alice can now link a new device.\n"},
			check: func(t *testing.T, _ string) {
				if _, resets, left := f.state(); !slices.Equal(resets, []string{"alice"}) || left != 0 {
					t.Errorf("resets = %v, sessions left = %d", resets, left)
				}
				if u, _ := st.Get("alice"); u.State != store.StateNone {
					t.Errorf("alice = %s", u.State)
				}
				if ev := events(t, st); !slices.Contains(ev, "reset/alice/"+me) {
					t.Errorf("audit = %v, want reset by %s", ev, me)
				}
			},
		},
		{name: "reset unknown", args: []string{"admin", "reset", "carol"}, wantErr: "no such user: carol", wantIs: admin.ErrNoSuchUser},
		{name: "show unknown", args: []string{"admin", "show", "carol"}, wantErr: "no such user: carol", wantIs: admin.ErrNoSuchUser},
		{
			name: "ticket",
			args: []string{"admin", "ticket", "alice"},
			want: []string{"Ticket for alice: "},
			check: func(t *testing.T, _ string) {
				if ev := events(t, st); !slices.Contains(ev, "ticket_issued/alice/"+me) {
					t.Errorf("audit = %v", ev)
				}
			},
		},
		{
			name: "audit over the socket",
			args: []string{"admin", "audit", "--user", "alice", "-o", "json"},
			check: func(t *testing.T, out string) {
				var ev []store.Event
				if err := json.Unmarshal([]byte(out), &ev); err != nil || len(ev) != 2 || ev[0].Kind != store.EventReset || ev[0].Actor != me {
					t.Errorf("events = %+v (%v)", ev, err)
				}
			},
		},
		{
			name: "import",
			args: []string{"admin", "import-google-authenticator", "alice", good},
			want: []string{"alice: imported from "},
			check: func(t *testing.T, _ string) {
				if ev := events(t, st); !slices.Contains(ev, "import/alice/"+me) {
					t.Errorf("audit = %v", ev)
				}
				checkLogin(t, st, "alice", readGA(t, good))
			},
		},
		{
			name: "import over a linked device ends its sessions",
			args: []string{"admin", "import-google-authenticator", "alice", good, "--force"},
			want: []string{"The device linked before was replaced; 1 live session ended.\n"},
		},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			if slices.Contains(tt.args, "") {
				t.Skip("google-authenticator not installed")
			}
			if tt.name == "import over a linked device ends its sessions" {
				f.mu.Lock()
				f.sessions = append(f.sessions, gatekeeper.SessionInfo{ID: 10, User: "alice"})
				f.mu.Unlock()
			}
			out, _, err := e.run(t, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %q does not match %v", err, tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if tt.check != nil {
				tt.check(t, out)
			}
		})
	}
}

func TestAdminDaemonOnlyWithoutSocketPermission(t *testing.T) {
	// Root passes every permission check; this needs an ordinary user: as root the test runs
	// again as the user nobody.
	if os.Geteuid() == 0 {
		nobodytest.Rerun(t)
		return
	}
	e := newEnv(t, "")
	startDaemon(t, e, &frontDoor{})
	if err := os.Chmod(e.socket, 0); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.run(t, "admin", "list")
	if err == nil || !strings.Contains(err.Error(), "permission denied on admin socket") {
		t.Errorf("error = %v", err)
	}
}

// TestAdminExitCodes runs the real main in a child process: errors go to stderr, prefixed,
// with exit code 1.
func TestAdminExitCodes(t *testing.T) {
	if args := os.Getenv("GATEKEEPER_TEST_MAIN_ARGS"); args != "" {
		var a []string
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			panic(err)
		}
		os.Args = append([]string{"gatekeeper"}, a...)
		main()
		os.Exit(0)
	}
	e := newEnv(t, "")
	noDaemon := "gatekeeper: no gatekeeper daemon is running (admin socket " + e.socket + ")"
	tests := []struct {
		args       []string
		noDB       bool // run before the database exists
		wantCode   int
		wantStderr string
	}{
		// A command that only reads never creates the database it was pointed at.
		{[]string{"admin", "list"}, true, 1, noDaemon + " and there is no database at " + e.db + ": check db"},
		{[]string{"admin", "reset", "nobody"}, true, 1, noDaemon + " and there is no database at " + e.db + ": check db"},
		{[]string{"admin", "show", "nobody"}, false, 1, "gatekeeper: no such user: nobody"},
		{[]string{"admin", "sessions"}, false, 1, noDaemon + ": there are no live sessions\n"},
		{[]string{"admin", "list"}, false, 0, ""},
	}
	for _, tt := range tests {
		if !tt.noDB {
			e.withStore(t, func(store.Store) {}) // creates it
		}
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			a, _ := json.Marshal(append(tt.args, "--config", e.config))
			cmd := exec.Command(os.Args[0], "-test.run=^TestAdminExitCodes$")
			// GORACE: the race detector otherwise waits a second before a clean exit.
			cmd.Env = append(os.Environ(), "GATEKEEPER_TEST_MAIN_ARGS="+string(a), "GORACE=atexit_sleep_ms=0")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.Stdout = io.Discard
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || !strings.HasPrefix(stderr.String(), tt.wantStderr) || tt.wantStderr == "" && stderr.Len() > 0 {
				t.Errorf("exit %d, stderr %q; want %d, %q", code, stderr.String(), tt.wantCode, tt.wantStderr)
			}
			if _, err := os.Stat(e.db); tt.noDB && err == nil {
				t.Errorf("%s created the database", strings.Join(tt.args, " "))
			}
		})
	}
}

func TestCell(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "-"},
		{"alice", "alice"},
		{"Jürgen", "Jürgen"},
		{"a\tb", `"a\tb"`},
		{"\x1b[2Jx", `"\x1b[2Jx"`},
		{"evil\u202eexe", `"evil\u202eexe"`},
		{"\xff", `"\xff"`},
	}
	for _, tt := range tests {
		if got := cell(tt.in); got != tt.want {
			t.Errorf("cell(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestFmtBytes(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1536, "1.5 KiB"}, {5 << 20, "5.0 MiB"}, {3 << 30, "3.0 GiB"}}
	for _, tt := range tests {
		if got := fmtBytes(tt.in); got != tt.want {
			t.Errorf("fmtBytes(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestWarnUppercaseNames: serve names, at start, the users the doors refuse for the capitals
// in their names, unless allow_uppercase_usernames lets them in.
func TestWarnUppercaseNames(t *testing.T) {
	e := newEnv(t, "")
	for _, allow := range []bool{false, true} {
		var logs bytes.Buffer
		e.withStore(t, func(st store.Store) {
			seedActive(t, st, "alice")
			seedActive(t, st, "Bob")
			cfg := &config.Config{AllowUppercaseUsernames: allow}
			warnUppercaseNames(cfg, st, slog.New(slog.NewTextHandler(&logs, nil)))
		})
		named := strings.Contains(logs.String(), "users=[Bob]")
		if named == allow || strings.Contains(logs.String(), "alice") {
			t.Errorf("allow_uppercase_usernames %v, log:\n%s", allow, logs.String())
		}
	}
}

// TestConfigCheckKnownHosts: config check fails when upstream.known_hosts has no key for
// upstream.address (recorded for another port, say): serve would refuse to start.
func TestConfigCheckKnownHosts(t *testing.T) {
	e := newEnv(t, "") // a key for 127.0.0.1, port 22, the default upstream.address
	_, stderr, err := e.run(t, "config", "check")
	if err != nil || strings.Contains(stderr, "warning") || !strings.Contains(stderr, "config OK") {
		t.Fatalf("config check = %v, stderr:\n%s", err, stderr)
	}
	t.Setenv("GATEKEEPER_UPSTREAM_ADDRESS", "127.0.0.1:2222")
	_, stderr, err = e.run(t, "config", "check")
	if err == nil || !strings.Contains(err.Error(), "upstream.known_hosts ") || strings.Contains(stderr, "config OK") ||
		!strings.Contains(err.Error(), "no host key on file for [127.0.0.1]:2222") || !strings.Contains(err.Error(), "serve refuses to start") {
		t.Fatalf("config check with the lander on another port = %v, stderr:\n%s", err, stderr)
	}

	// A lander named by a host name that does not resolve here: its line is all that counts.
	kh := filepath.Join(filepath.Dir(e.config), "known_hosts")
	line, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	named := strings.Replace(string(line), "127.0.0.1 ", "lander.invalid ", 1)
	if err := os.WriteFile(kh, []byte(named), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GATEKEEPER_UPSTREAM_ADDRESS", "lander.invalid:22")
	_, stderr, err = e.run(t, "config", "check")
	if err != nil || strings.Contains(stderr, "warning") {
		t.Fatalf("config check with a lander name that does not resolve = %v, stderr:\n%s", err, stderr)
	}
}

// TestAdminTicketLoopbackNote: a ticket printed while a linking door listens on loopback only
// says so, since the address it prints names this host, which users elsewhere cannot reach
// there without a proxy.
func TestAdminTicketLoopbackNote(t *testing.T) {
	e := newEnv(t, "enroll:\n  portal_listen: \"127.0.0.1:8080\"\n  ssh_listen: \":2223\"\n")
	out, stderr, err := e.run(t, "admin", "ticket", "carol")
	if err != nil || !strings.Contains(out, "Ticket for carol: ") {
		t.Fatalf("admin ticket = %v\n%s", err, out)
	}
	want := "note: enroll.portal_listen is 127.0.0.1:8080, reachable from this machine only unless a proxy forwards to it"
	if !strings.Contains(stderr, want) || strings.Contains(stderr, "enroll.ssh_listen") {
		t.Errorf("stderr = %q, want the note on the portal alone", stderr)
	}
}

// TestCreatedFilesTakeTheDirectorysOwner: run as root before the first start, a command that
// creates the database and the key file gives them to the owner of their directory (the
// service's user owns /var/lib/gatekeeper), so that the service can open them; files that
// existed keep their owner.
func TestCreatedFilesTakeTheDirectorysOwner(t *testing.T) {
	needRoot(t, "give a directory to another uid")
	const uid, gid = 54321, 54322
	e := newEnv(t, "")
	dir := filepath.Dir(e.db)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.run(t, "admin", "ticket", "carol"); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) (int, int) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return int(st.Uid), int(st.Gid)
	}
	for _, p := range []string{e.db, e.key} {
		if u, g := owner(p); u != uid || g != gid {
			t.Errorf("%s created as %d:%d, want the directory's %d:%d", filepath.Base(p), u, g, uid, gid)
		}
	}
	// An existing file keeps its owner.
	if err := os.Chown(e.db, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.run(t, "admin", "ticket", "dave"); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(e.db); u != 0 || g != 0 {
		t.Errorf("an existing database went to %d:%d", u, g)
	}
}

// TestNoDaemonOnAClusterNode: on a node of several (etcd) whose daemon is down, the commands
// that need a daemon say to run them on a node whose daemon runs, not that there are no
// sessions or lockouts: the other nodes may have both.
func TestNoDaemonOnAClusterNode(t *testing.T) {
	e := newEnv(t, "store:\n  backend: \"etcd\"\n  etcd:\n    endpoints: [\"http://127.0.0.1:1\"]\n")
	for _, args := range [][]string{{"admin", "sessions"}, {"admin", "kill", "3"}, {"admin", "unlock", "alice"}} {
		_, _, err := e.run(t, args...)
		if !errors.Is(err, admin.ErrNoDaemon) || !strings.Contains(err.Error(), "no gatekeeper daemon is running on this node") ||
			!strings.Contains(err.Error(), "run the command on a node whose daemon runs") {
			t.Errorf("%s without a daemon on an etcd node: %v", strings.Join(args, " "), err)
		}
	}
}
