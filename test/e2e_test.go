package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// These tests drive the front door and its policy with the real OpenSSH client; each creates its
// own user, so that they run in parallel against one shared gatekeeper unless they need a daemon
// of their own (restarts, rate limits, a broken lander).

// explain logs the daemon's lines about u when the test fails.
func explain(t *testing.T, g *gatekeeper, u *user) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gatekeeper log for %s:\n%s", u.name, g.userLog(u.name))
		}
	})
}

// enrolledUser is a new user with a linked device on g.
func enrolledUser(t *testing.T, g *gatekeeper) *user {
	t.Helper()
	u := newUser(t)
	explain(t, g, u)
	g.enroll(t, u)
	return u
}

// wantPrompts asserts the prompts the client was asked, in order, by substring.
func wantPrompts(t testing.TB, c *client, want ...string) {
	t.Helper()
	got := c.prompts()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.Contains(got[i], want[i])
	}
	if !ok {
		t.Errorf("prompts: got %q, want %q", got, want)
	}
}

// mustBeDeniedSlowly is mustBeDenied plus the failure delay every refusal takes.
func mustBeDeniedSlowly(t testing.TB, c *client, what string) {
	t.Helper()
	r := mustBeDenied(t, c, what)
	if r.dur < failureDelay {
		t.Errorf("%s: refused after %v, faster than failure_delay %v", what, r.dur, failureDelay)
	}
}

func TestLanderDirectPrompts(t *testing.T) {
	// The harness itself, against the plain sshd: PAM asks "Password:", wrong ones are refused.
	t.Parallel()
	l := landerFor(t)
	u := newUser(t)
	c := newClient(t, u, l.port, "")
	mustLogIn(t, c, "direct to the lander")
	wantPrompts(t, c, "Password:")
	c.setPassword("not-" + u.password)
	mustBeDenied(t, c, "direct, wrong password")
}

func TestLoginWithPasswordAndCode(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "password + code")
	wantPrompts(t, c, "Password:", "Verification code:")
	// The prompts are the same strings OpenSSH + pam_google_authenticator use.
	c.setCode(u.nextCode(t))
	r := c.ssh(nil, "id -un; pwd")
	if r.exit != 0 || r.stdout != u.name+"\n"+u.home+"\n" {
		t.Errorf("the session runs on the lander as %s in %s: got %s", u.name, u.home, r)
	}
}

func TestLoginWithPasswordMethod(t *testing.T) {
	// Clients that prefer the password method: password, then keyboard-interactive for the code.
	t.Parallel()
	g := sharedGatekeeper(t)
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	r := c.ssh([]string{"-o", "PreferredAuthentications=password,keyboard-interactive"}, "echo", "ok")
	if r.exit != 0 || r.stdout != "ok\n" {
		t.Fatalf("password method then code: %s", r)
	}
	wantPrompts(t, c, "password:", "Verification code:")
	// The same with a wrong password is refused.
	c.setPassword("wrong-" + u.password)
	c.setCode(u.nextCode(t))
	r = c.ssh([]string{"-o", "PreferredAuthentications=password,keyboard-interactive"}, "echo", "ok")
	if r.exit != 255 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("password method, wrong password: want Permission denied, got %s", r)
	}
}

func TestCodesAreOneUse(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	confirm := u.last
	older := oathCode(t, u.secret, confirm+1)
	used := oathCode(t, u.secret, confirm+2)
	u.last = confirm + 2
	c.setCode(used)
	mustLogIn(t, c, "fresh code")
	c.setCode(used)
	mustBeDeniedSlowly(t, c, "replayed code")
	c.setCode(older)
	mustBeDeniedSlowly(t, c, "older, never used code (step before the last used one)")
	c.setCode(u.wrongCode(t))
	mustBeDeniedSlowly(t, c, "wrong code")
	c.setCode("12345")
	mustBeDeniedSlowly(t, c, "five digits")
	// Refusals spend nothing: the next step still works.
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "next code after the refusals")
}

func TestConfirmingCodeCannotLogIn(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	c.setCode(oathCode(t, u.secret, u.last))
	mustBeDeniedSlowly(t, c, "the code that confirmed the device link")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "the next code")
}

func TestTrustedSourceNeedsNoCode(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	for _, linked := range []bool{true, false} {
		t.Run(fmt.Sprintf("linked=%v", linked), func(t *testing.T) {
			t.Parallel()
			u := newUser(t)
			explain(t, g, u)
			if linked {
				g.enroll(t, u)
			}
			c := newClient(t, u, g.port, trustedAddr)
			// No code file: the askpass script fails loudly if a code is asked.
			mustLogIn(t, c, "trusted source, password only")
			wantPrompts(t, c, "Password:")
			c.setPassword("wrong-" + u.password)
			mustBeDeniedSlowly(t, c, "trusted source, wrong password")
		})
	}
}

func TestUnlinkedUserRefusedFromOutside(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	u := newUser(t)
	explain(t, g, u)
	c := newClient(t, u, g.port, "")
	c.setCode("123456")
	mustBeDeniedSlowly(t, c, "user without a linked device, from an untrusted source")
}

func TestUnknownUserLooksLikeOthers(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	ghost := &user{name: userPrefix + "nobody" + randHex(3), password: "pw-" + randHex(8)}
	h.remember(ghost.password)
	c := newClient(t, ghost, g.port, "")
	c.setCode("123456")
	mustBeDeniedSlowly(t, c, "unknown user")
	wantPrompts(t, c, "Password:", "Verification code:")
}

func TestWrongCodeNeverReachesLander(t *testing.T) {
	// The lander must not see password guesses from someone without the second factor.
	t.Parallel()
	g := sharedGatekeeper(t)
	l := landerFor(t)
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	guess := "guess-" + randHex(6)
	h.remember(guess)
	c.setPassword(guess)
	c.setCode(u.wrongCode(t))
	mustBeDeniedSlowly(t, c, "wrong password and wrong code")
	c.setPassword(u.password)
	c.setCode(u.wrongCode(t))
	mustBeDeniedSlowly(t, c, "right password, wrong code")
	for line := range strings.Lines(string(l.logBytes())) {
		if strings.Contains(line, u.name) {
			t.Errorf("the lander saw an attempt for %s although every code was wrong: %s", u.name, line)
		}
	}
}

func TestConcurrentLoginsOneCode(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	u := enrolledUser(t, g)
	code := u.nextCode(t)
	const n = 8
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		c := newClient(t, u, g.port, "")
		c.setCode(code)
		wg.Go(func() {
			<-start
			results[i] = c.ssh(nil, "echo", "ok")
		})
	}
	close(start)
	wg.Wait()
	in := 0
	for i, r := range results {
		switch {
		case r.exit == 0 && r.stdout == "ok\n":
			in++
		case r.exit == 255 && strings.Contains(r.stderr, "Permission denied"):
		default:
			t.Errorf("login %d: neither in nor cleanly refused: %s", i, r)
		}
	}
	if in != 1 {
		t.Errorf("%d concurrent logins with one code: %d got in, want exactly 1", n, in)
	}
}

func TestKill9KeepsUsedStep(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{})
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	code := u.nextCode(t)
	c.setCode(code)
	mustLogIn(t, c, "before the crash")
	g.kill9(t)
	if err := g.start(); err != nil {
		t.Fatal("restart after kill -9: ", err)
	}
	c.setCode(code)
	mustBeDeniedSlowly(t, c, "the code used before kill -9, after the restart")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "a new code after the restart")
}

func TestSecretsNotInDBOrLogs(t *testing.T) {
	// Every test's passwords and secrets are also checked against the shared daemon's files at
	// the end of the run; this one makes sure the check sees a full cycle on a closed DB.
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{})
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "password + code")
	c.setCode(u.wrongCode(t))
	mustBeDenied(t, c, "wrong code")
	wrong := "wrongpw-" + randHex(6)
	h.remember(wrong)
	c.setPassword(wrong)
	c.setCode(u.nextCode(t))
	mustBeDenied(t, c, "wrong password")
	tc := newClient(t, u, g.port, trustedAddr)
	mustLogIn(t, tc, "trusted")
	if err := g.stop(); err != nil {
		t.Error(err)
	}
	for _, f := range []string{g.db, g.logPath} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Errorf("%s is empty: nothing to check", f)
		}
	}
	if err := h.leaks(g.db, g.logPath); err != nil {
		t.Error(err)
	}
	if db, _ := os.ReadFile(g.db); !bytes.Contains(db, []byte(u.name)) {
		t.Errorf("the DB does not mention %s: is this the right file?", u.name)
	}
}

func TestLanderHostKeyChanged(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{})
	u := newUser(t)
	explain(t, g, u)
	c := newClient(t, u, g.port, trustedAddr)
	mustLogIn(t, c, "before the key change")
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "other")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	line := fmt.Sprintf("[127.0.0.1]:%d %s %s\n", landerFor(t).port, f[0], f[1])
	if err := os.WriteFile(g.knownHosts, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	before := len(g.logBytes())
	if err := g.start(); err != nil {
		t.Fatal(err)
	}
	r := c.ssh(nil, "echo", "ok")
	if r.exit != 255 || strings.Contains(r.stdout, "ok") {
		t.Fatalf("lander with a changed host key: want the login refused, got %s", r)
	}
	newLog := strings.ToLower(string(g.logBytes()[before:]))
	if !regexp.MustCompile(`host.?key`).MatchString(newLog) {
		t.Errorf("no log line about the lander's host key:\n%s", newLog)
	}
}

func TestLanderDown(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{upstreamPort: freePort()})
	u := newUser(t)
	explain(t, g, u)
	c := newClient(t, u, g.port, trustedAddr)
	// LogLevel=INFO: OpenSSH prints the server's auth banner only at INFO and above.
	r := c.ssh([]string{"-o", "LogLevel=INFO"}, "echo", "ok")
	if r.exit != 255 {
		t.Fatalf("lander down: want the login to fail, got %s", r)
	}
	if !regexp.MustCompile(`(?i)unavailable|not reachable`).MatchString(r.stderr) {
		t.Errorf("lander down: the user should be told the lander is unavailable, ssh said %q", r.stderr)
	}
	if !strings.Contains(strings.ToLower(string(g.logBytes())), "connection refused") {
		t.Errorf("lander down: the log should say why (connection refused):\n%s", tail(g.logBytes(), 20))
	}
}

func TestRateLimitLockout(t *testing.T) {
	t.Parallel()
	const lockout = 3 * time.Second
	g := ownGatekeeper(t, gkOptions{failures: 3, window: "30s", lockout: lockout.String()})
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	for i := range 3 {
		c.setCode(u.wrongCode(t))
		mustBeDeniedSlowly(t, c, fmt.Sprintf("wrong code %d", i+1))
	}
	c.setCode(u.nextCode(t))
	mustBeDeniedSlowly(t, c, "the right code while locked out")
	if !strings.Contains(strings.ToLower(g.userLog(u.name)), "lock") {
		t.Errorf("the log does not say %s is locked out:\n%s", u.name, g.userLog(u.name))
	}
	time.Sleep(lockout + time.Second) // waiting out the configured lockout, not for a service
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "the right code after the lockout")
}

func TestHostileInput(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{})
	u := enrolledUser(t, g)

	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7 + i>>8)
	}
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"binary", garbage},
		{"long version line", bytes.Repeat([]byte("A"), 70000)},
		{"banner then garbage", append([]byte("SSH-2.0-evil\r\n"), garbage...)},
		{"banner then huge packet length", []byte("SSH-2.0-evil\r\n\xff\xff\xff\xf0\x00\x00\x00\x00")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", g.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			go func() { _, _ = conn.Write(tc.send) }()
			_, err = io.Copy(io.Discard, conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("the connection stayed open 30 s after %s", tc.name)
			}
		})
	}

	big := strings.Repeat("x", 10<<10)
	huge := strings.Repeat("9", 100<<10)
	for _, tc := range []struct {
		name, user, password, code string
	}{
		{"10 KB username", big, u.password, "123456"},
		{"100 KB password", u.name, huge, "123456"},
		{"100 KB code", u.name, u.password, huge},
		{"control characters in the username", "bad\x00name\n\x1b[31m", u.password, "123456"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", g.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(time.Minute))
			cfg := &ssh.ClientConfig{
				User: tc.user,
				Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
					ans := make([]string, len(qs))
					for i, q := range qs {
						ans[i] = tc.password
						if strings.Contains(q, "code") {
							ans[i] = tc.code
						}
					}
					return ans, nil
				})},
				HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			}
			sc, _, _, err := ssh.NewClientConn(conn, g.addr(), cfg)
			if err == nil {
				sc.Close()
				t.Fatalf("%s: got in", tc.name)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("%s: no answer within a minute: %v", tc.name, err)
			}
		})
	}

	if !g.running() {
		t.Fatal("the daemon died")
	}
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "a normal login after the hostile input")
}

func TestEnrollTwiceShowsNoSecret(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	u := enrolledUser(t, g)
	out, err := g.runEnroll(t, u.name, func(string) string {
		t.Error("a second enrollment of a linked user asked for a code")
		return "000000"
	})
	if err == nil {
		t.Errorf("second `gatekeeper enroll` of a linked user exited 0:\n%s", out)
	}
	if strings.Contains(out, u.secret) || strings.Contains(out, "otpauth") {
		t.Errorf("second `gatekeeper enroll` showed a secret:\n%s", out)
	}
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "the first link still works")
}

func TestEnrollWithoutDaemon(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{})
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	u := newUser(t)
	explain(t, g, u)
	g.enroll(t, u) // directly on the DB
	if err := g.start(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "device linked while the daemon was stopped")
}

func TestStateFiles(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{})
	u := enrolledUser(t, g)
	for _, f := range []struct {
		path string
		perm os.FileMode
	}{{g.hostKey, 0o600}, {g.secretKey, 0o600}, {g.db, 0o600}, {g.socket, 0o660}} {
		st, err := os.Stat(f.path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if st.Mode().Perm() != f.perm {
			t.Errorf("%s: mode %v, want %v", f.path, st.Mode().Perm(), f.perm)
		}
	}

	t.Run("second daemon on the same DB", func(t *testing.T) {
		g2 := g.sibling() // same data files, other ports, socket and log
		if err := g2.writeConfig("second"); err != nil {
			t.Fatal(err)
		}
		exited, err := g2.startProcess()
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = g2.stop()
			t.Fatal("a second daemon on the same DB is still running after 20 s")
		}
		g2.forget()
		if log := string(g2.logBytes()); !strings.Contains(log, "in use") {
			t.Errorf("second daemon: want a message that the database is in use, got:\n%s", log)
		}
	})

	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(g.secretKey)
	if err != nil {
		t.Fatal(err)
	}
	refuses := func(what string) {
		t.Helper()
		before := len(g.logBytes())
		exited, err := g.startProcess()
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = g.stop()
			t.Fatalf("%s: the daemon is still running after 20 s", what)
		}
		g.forget()
		log := string(g.logBytes()[before:])
		if !strings.Contains(log, "key") {
			t.Errorf("%s: the daemon should say what is wrong with the key, it said:\n%s", what, log)
		}
	}
	if err := os.Remove(g.secretKey); err != nil {
		t.Fatal(err)
	}
	refuses("secret key file missing while the DB holds secrets")
	// Another daemon's key: valid format, wrong key.
	other := ownGatekeeper(t, gkOptions{})
	if err := other.stop(); err != nil {
		t.Fatal(err)
	}
	otherKey, err := os.ReadFile(other.secretKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.secretKey, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	refuses("wrong secret key")
	if err := os.WriteFile(g.secretKey, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.start(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "with the right key back, the link is intact")
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	g := sharedGatekeeper(t)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = cleanEnv("HOME=" + t.TempDir())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("version"); err != nil || !strings.HasPrefix(out, "gatekeeper ") {
		t.Errorf("gatekeeper version: %v: %q", err, out)
	}
	if out, err := run("config", "check", "--config", g.cfgPath); err != nil || !strings.Contains(out, "trusted_networks") {
		t.Errorf("config check of the tests' config: %v:\n%s", err, out)
	}
	good, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ key, from, to string }{
		{"trusted_networks", `["127.0.0.2/32"]`, `["127.0.0.300/32"]`},
		{"window", `window: "30s"`, `window: "thirty"`},
		{"known_hosts", "lander_known_hosts", "no_such_known_hosts"},
	} {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(bad, bytes.Replace(good, []byte(tc.from), []byte(tc.to), 1), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := run("config", "check", "--config", bad)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, tc.key) {
			t.Errorf("config check with a bad %s: want exit 1 and a message naming the key, got %v:\n%s", tc.key, err, out)
		}
	}

	// The lander moved to a port whose host key is not on file: config check fails as serve
	// does, and serve refuses before it creates a database or a key file.
	dir := t.TempDir()
	moved := regexp.MustCompile(`address: "127\.0\.0\.1:\d+"`).ReplaceAll(good, []byte(`address: "127.0.0.1:1"`))
	moved = regexp.MustCompile(`(?m)^db: .*$`).ReplaceAll(moved, fmt.Appendf(nil, "db: %q", filepath.Join(dir, "new.db")))
	moved = regexp.MustCompile(`(?m)^secret_key_file: .*$`).ReplaceAll(moved, fmt.Appendf(nil, "secret_key_file: %q", filepath.Join(dir, "new.key")))
	bad := filepath.Join(dir, "moved.yaml")
	if err := os.WriteFile(bad, moved, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"config", "check"}, {"serve"}} {
		out, err := run(append(args, "--config", bad)...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, "no host key on file for [127.0.0.1]:1") ||
			strings.Contains(out, "config OK") {
			t.Errorf("%s with the lander's key not on file: want exit 1 naming the missing key, got %v:\n%s", args[0], err, out)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("serve refused to start, but left %d files (want only the config)", len(ents)-1)
	}
}

func TestMetricsHealthz(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", g.metricsPort))
	if err != nil {
		t.Fatalf("metrics_listen /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}
}

// TestHostKeyRotation walks an admin through replacing the gatekeeper's host key without a
// "host key changed" warning: a new key listed after the one in use is not used for key
// exchanges (the first of each type is, as in sshd), and a client with UpdateHostKeys (OpenSSH's
// default for a user's own known_hosts) learns it at its next login, proven by the gatekeeper.
// Once the new key is listed first, that client connects with StrictHostKeyChecking=yes.
func TestHostKeyRotation(t *testing.T) {
	t.Parallel()
	next := filepath.Join(t.TempDir(), "ssh_host_ed25519_key.next")
	hostKeyFiles := regexp.MustCompile(`host_key_files: \["([^"]+)"\]`)
	g := ownGatekeeper(t, gkOptions{edit: func(yaml string) string {
		return hostKeyFiles.ReplaceAllString(yaml, `host_key_files: ["$1", "`+next+`"]`)
	}})
	u := newUser(t)
	c := newClient(t, u, g.port, trustedAddr)
	knownHosts := filepath.Join(c.dir, "known_hosts")
	line := func(keyFile string) string {
		t.Helper()
		data, err := os.ReadFile(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ssh.ParsePrivateKey(data)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("[127.0.0.1]:%d %s", c.port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))))
	}
	current := line(g.hostKey)
	if err := os.WriteFile(knownHosts, []byte(current+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(g.logBytes()), "host key announced to clients, not used in key exchanges") {
		t.Error("the start does not say that the second key is only announced")
	}
	strict := []string{"-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=yes"}
	if r := c.ssh(strict, "true"); r.exit != 0 {
		t.Fatalf("login with the current key known: %s", r)
	}
	got, err := os.ReadFile(knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	learned := line(next)
	if !strings.Contains(string(got), current) || !strings.Contains(string(got), learned) {
		t.Fatalf("known_hosts after the login:\n%s\nwant both\n%s\n%s", got, current, learned)
	}

	// The switch: the new key first, the old one gone.
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	g.opts.edit = func(yaml string) string {
		return hostKeyFiles.ReplaceAllString(yaml, `host_key_files: ["`+next+`"]`)
	}
	if err := g.writeConfig("gatekeeper"); err != nil {
		t.Fatal(err)
	}
	if err := g.start(); err != nil {
		t.Fatal(err)
	}
	// known_hosts names the old port (a new one each start here); the keys it learned are
	// the gatekeeper's either way.
	oldHost, newHost := fmt.Sprintf("[127.0.0.1]:%d ", c.port), fmt.Sprintf("[127.0.0.1]:%d ", g.port)
	c.port = g.port
	if err := os.WriteFile(knownHosts, []byte(strings.ReplaceAll(string(got), oldHost, newHost)), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := c.ssh(strict, "true"); r.exit != 0 {
		t.Fatalf("login after the switch to the learned key: %s", r)
	}
}
