package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests are an admin's day with the real daemon: `gatekeeper admin` over the admin socket
// (as root, so the audit log must name "uid 0"), live sessions of the real OpenSSH client,
// /metrics, SIGHUP and SIGTERM, and the migration of real pam_google_authenticator files.

// adminActor is how the audit log names the tests' admin: root over the admin socket.
const adminActor = "uid 0"

// sessionInfo is one entry of `gatekeeper admin sessions -o json`.
type sessionInfo struct {
	ID        uint64    `json:"id"`
	User      string    `json:"user"`
	Remote    string    `json:"remote"`
	Trusted   bool      `json:"trusted"`
	Start     time.Time `json:"start"`
	BytesUp   int64     `json:"bytes_up"`
	BytesDown int64     `json:"bytes_down"`
}

// userInfo is `gatekeeper admin show -o json`, and one entry of `admin list -o json`.
type userInfo struct {
	Name              string    `json:"name"`
	State             string    `json:"state"`
	CreatedAt         time.Time `json:"created_at"`
	EnrolledAt        time.Time `json:"enrolled_at"`
	LastLogin         time.Time `json:"last_login"`
	RecoveryCodesLeft int       `json:"recovery_codes_left"`
}

// sessionsOf returns u's live sessions from `gatekeeper admin sessions -o json`.
func sessionsOf(t testing.TB, g *gatekeeper, name string) []sessionInfo {
	t.Helper()
	var all []sessionInfo
	g.adminJSON(t, &all, "sessions")
	return slices.DeleteFunc(all, func(s sessionInfo) bool { return s.User != name })
}

func TestAdminResetEndsLiveSession(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	u := enrolledUser(t, g)
	oldSecret := u.secret
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	s := c.liveSSH(nil, "echo started; sleep 300")
	s.waitFor("started")

	out := g.admin(t, "reset", u.name)
	if !strings.Contains(out, "1 live session ended") {
		t.Errorf("admin reset: want it to say it ended 1 live session, it said: %q", out)
	}
	// The phone is lost: the session it opened ends now, not when it is done.
	start := time.Now()
	exit := s.wait(10 * time.Second)
	if exit == 0 || strings.Contains(s.stdout.String(), "done") {
		t.Errorf("the live session after the reset: %s", s)
	}
	t.Logf("the live session ended %v after the reset returned", time.Since(start).Round(time.Millisecond))

	// No code of the old phone works any more.
	from := len(g.logBytes())
	c.setCode(u.nextCode(t))
	mustBeDeniedSlowly(t, c, "a code of the old phone after the reset")
	g.waitLog(t, from, `"login refused"`, u.name, `"reason":"not_linked"`)

	// The user links a new phone; its codes work, the old phone's still do not.
	g.enroll(t, u)
	if u.secret == oldSecret {
		t.Fatal("the new link has the old secret")
	}
	c.setCode(oathCode(t, oldSecret, u.last+1))
	mustBeDeniedSlowly(t, c, "a code of the old phone after the new link")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "the new phone")

	g.waitAudit(t, u.name, "a reset by "+adminActor, func(ev []auditEvent) bool {
		return countKind(ev, "reset", adminActor) == 1
	})
}

func TestAdminJSONAndAudit(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	since := time.Now().UTC().Format(time.RFC3339Nano)
	u := enrolledUser(t, g)

	var users []userInfo
	g.adminJSON(t, &users, "list")
	i := slices.IndexFunc(users, func(x userInfo) bool { return x.Name == u.name })
	if i < 0 || users[i].State != "active" || users[i].RecoveryCodesLeft != 10 || users[i].EnrolledAt.IsZero() {
		t.Errorf("admin list -o json: want %s active with 10 recovery codes, got %+v", u.name, users)
	}
	var info userInfo
	g.adminJSON(t, &info, "show", u.name)
	if info.Name != u.name || info.State != "active" || info.EnrolledAt.IsZero() || time.Since(info.EnrolledAt) > time.Hour {
		t.Errorf("admin show -o json: %+v", info)
	}
	ghost := userPrefix + "ghost" + randHex(3)
	if out, errOut, err := g.adminRun(t, "show", ghost, "-o", "json"); err == nil || !strings.Contains(errOut, ghost) {
		t.Errorf("admin show of an unknown user: want exit 1 and a message naming the user, got %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}

	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	s := c.liveSSH(nil, "echo started; sleep 300")
	s.waitFor("started")
	sessions := sessionsOf(t, g, u.name)
	if len(sessions) != 1 {
		t.Fatalf("admin sessions -o json: %d sessions of %s, want 1: %+v", len(sessions), u.name, sessions)
	}
	se := sessions[0]
	if se.ID == 0 || !strings.HasPrefix(se.Remote, "127.0.0.1:") || se.Trusted || time.Since(se.Start) > time.Minute || se.BytesDown == 0 {
		t.Errorf("admin sessions -o json: %+v", se)
	}
	var killed struct {
		ID    uint64 `json:"id"`
		Ended bool   `json:"ended"`
	}
	g.adminJSON(t, &killed, "kill", strconv.FormatUint(se.ID, 10))
	if killed.ID != se.ID || !killed.Ended {
		t.Errorf("admin kill -o json: %+v", killed)
	}
	if exit := s.wait(10 * time.Second); exit == 0 {
		t.Errorf("the killed session: %s", s)
	}
	if left := sessionsOf(t, g, u.name); len(left) != 0 {
		t.Errorf("admin sessions after the kill: %+v", left)
	}
	// The kill is audited with the admin's uid and the session's user.
	sessionID := regexp.MustCompile(`\b` + strconv.FormatUint(se.ID, 10) + `\b`)
	deadline := time.Now().Add(waitTimeout)
	for {
		var all []auditEvent
		g.adminJSON(t, &all, "audit", "--user", u.name, "--since", since)
		i := slices.IndexFunc(all, func(e auditEvent) bool {
			return e.Kind == "session_killed" && sessionID.MatchString(e.Detail)
		})
		if i >= 0 {
			if all[i].Actor != adminActor || all[i].User != u.name {
				t.Errorf("audit: %v, want user %q and actor %q", all[i], u.name, adminActor)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit: no session_killed event for session %d within %v", se.ID, waitTimeout)
		}
		time.Sleep(4 * pollInterval)
	}

	var reset struct {
		User          string `json:"user"`
		SessionsEnded int    `json:"sessions_ended"`
	}
	g.adminJSON(t, &reset, "reset", u.name)
	if reset.User != u.name {
		t.Errorf("admin reset -o json: %+v", reset)
	}
	// The lost-phone answer: a reset, then a ticket for linking from wherever the user is.
	var tk struct {
		User   string `json:"user"`
		Ticket string `json:"ticket"`
	}
	g.adminJSON(t, &tk, "ticket", u.name)
	h.remember(tk.Ticket)
	if tk.User != u.name || len(tk.Ticket) < 16 {
		t.Errorf("admin ticket -o json: %+v", tk)
	}

	ev := g.waitAudit(t, u.name, "reset and ticket_issued by "+adminActor, func(ev []auditEvent) bool {
		return countKind(ev, "reset", adminActor) == 1 && countKind(ev, "ticket_issued", adminActor) == 1
	})
	for _, kind := range []string{"link_started", "link_confirmed", "login_ok"} {
		if countKind(ev, kind, "") == 0 {
			t.Errorf("audit log of %s: no %s event", u.name, kind)
		}
	}
	for i, e := range ev {
		if e.User != u.name || e.Time.IsZero() || (i > 0 && e.Seq <= ev[i-1].Seq) {
			t.Errorf("audit event %v: want user %s, a time, and a growing seq", e, u.name)
		}
	}
	// The table form is there for people.
	if out := g.admin(t, "audit", "--user", u.name); !strings.Contains(out, "reset") || !strings.Contains(out, adminActor) {
		t.Errorf("admin audit table:\n%s", out)
	}
}

func TestMetricsCountLogins(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{}) // its own counters
	u := enrolledUser(t, g)
	const (
		okCode      = `gatekeeper_logins_total{reason="code",result="ok"}`
		okTrusted   = `gatekeeper_logins_total{reason="trusted_network",result="ok"}`
		wrongCode   = `gatekeeper_logins_total{reason="wrong_code",result="refused"}`
		replayed    = `gatekeeper_logins_total{reason="replayed_code",result="refused"}`
		reuse       = `gatekeeper_code_reuse_refusals_total`
		bypass      = `gatekeeper_trusted_bypass_total`
		live        = `gatekeeper_sessions`
		authCount   = `gatekeeper_auth_duration_seconds_count`
		bytesUp     = `gatekeeper_relayed_bytes_total{direction="up"}`
		bytesDown   = `gatekeeper_relayed_bytes_total{direction="down"}`
		payloadSize = 100000
	)
	before := g.scrape(t)

	c := newClient(t, u, g.port, "")
	code := u.nextCode(t)
	c.setCode(code)
	s := c.liveSSH(nil, "echo started; cat")
	s.waitFor("started")
	during := g.scrape(t)
	if during[live] != 1 {
		t.Errorf("%s with one live session: %v, want 1", live, during[live])
	}
	if d := during[okCode] - before[okCode]; d != 1 {
		t.Errorf("%s went up by %v after a login with a code, want 1", okCode, d)
	}
	s.write(strings.Repeat("x", payloadSize-1) + "\n")
	s.waitCount("\n", 2) // "started" and the payload, echoed
	_ = s.stdin.Close()
	if exit := s.wait(waitTimeout); exit != 0 {
		t.Fatalf("the session: %s", s)
	}

	c.setCode(u.wrongCode(t))
	mustBeDenied(t, c, "wrong code")
	c.setCode(code)
	mustBeDenied(t, c, "replayed code")
	mustLogIn(t, newClient(t, u, g.port, trustedAddr), "trusted source")

	// Bytes are added when a session ends, which the daemon sees a moment after the client.
	var after map[string]float64
	deadline := time.Now().Add(waitTimeout)
	for {
		after = g.scrape(t)
		if after[live] == 0 && after[bytesUp]-before[bytesUp] >= payloadSize || time.Now().After(deadline) {
			break
		}
		time.Sleep(4 * pollInterval)
	}
	for _, w := range []struct {
		series string
		delta  float64
	}{
		{okCode, 1}, {okTrusted, 1}, {wrongCode, 1}, {replayed, 1}, {reuse, 1}, {bypass, 1}, {authCount, 4},
	} {
		if d := after[w.series] - before[w.series]; d != w.delta {
			t.Errorf("%s went up by %v, want %v", w.series, d, w.delta)
		}
	}
	if after[live] != 0 {
		t.Errorf("%s after every session ended: %v", live, after[live])
	}
	if d := after[bytesUp] - before[bytesUp]; d < payloadSize {
		t.Errorf("%s went up by %v, want at least the %d bytes sent", bytesUp, d, payloadSize)
	}
	if d := after[bytesDown] - before[bytesDown]; d < payloadSize {
		t.Errorf("%s went up by %v, want at least the %d bytes echoed", bytesDown, d, payloadSize)
	}
}

func TestSIGHUPChangesTrustedNetworks(t *testing.T) {
	t.Parallel()
	const newSource = "127.0.0.3"
	g := ownGatekeeper(t, gkOptions{})
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	s := c.liveSSH(nil, "cat")
	s.write("before\n")
	s.waitFor("before\n")

	c3 := newClient(t, u, g.port, newSource)
	mustBeDenied(t, c3, newSource+" before the reload, without a code")
	wantPrompts(t, c3, "Password:", "Verification code:")

	cfg, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	const oldNets = `trusted_networks: ["127.0.0.2/32"]`
	if !strings.Contains(string(cfg), oldNets) {
		t.Fatalf("no %s in the config:\n%s", oldNets, cfg)
	}
	cfg = []byte(strings.Replace(string(cfg), oldNets, `trusted_networks: ["127.0.0.2/32", "`+newSource+`/32"]`, 1))
	if err := os.WriteFile(g.cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	from := len(g.logBytes())
	g.signal(t, syscall.SIGHUP)
	g.waitLog(t, from, "config reloaded")

	s.write("after\n")
	s.waitFor("after\n")
	if !s.running() {
		t.Fatalf("the live session ended on SIGHUP: %s", s)
	}
	mustLogIn(t, c3, newSource+" after the reload, password only")
	wantPrompts(t, c3, "Password:")

	_ = s.stdin.Close()
	if exit := s.wait(waitTimeout); exit != 0 || s.stdout.String() != "before\nafter\n" {
		t.Errorf("the session that lived through SIGHUP: %s", s)
	}
}

// TestSIGHUPChangesAllowedNetworks: enroll.allowed_networks is applied by SIGHUP to device
// linking, without a restart.
func TestSIGHUPChangesAllowedNetworks(t *testing.T) {
	t.Parallel()
	const newSource = "127.0.0.3"
	g := ownGatekeeper(t, gkOptions{})
	u := newUser(t)
	explain(t, g, u)
	lc := linkClient(t, g, u, newSource)
	s := lc.liveSSH([]string{"-tt"})
	if exit := s.wait(waitTimeout); exit != 255 || !strings.Contains(s.stderr.String(), "Permission denied") {
		t.Fatalf("linking from %s without a ticket before the reload: want Permission denied, got %s", newSource, s)
	}
	wantPrompts(t, lc, "Password:", "Linking ticket:", "Verification code:")

	cfg, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "enroll:\n", "enroll:\n  allowed_networks: [\""+newSource+"/32\"]\n", 1))
	if err := os.WriteFile(g.cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	from := len(g.logBytes())
	g.signal(t, syscall.SIGHUP)
	g.waitLog(t, from, "config reloaded", "enroll.allowed_networks")

	terminalLink(t, lc)
	wantPrompts(t, lc, "Password:", "Verification code:")
}

func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{})
	u := enrolledUser(t, g)
	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	s := c.liveSSH(nil, "echo started; sleep 6; echo done")
	s.waitFor("started")

	g.signal(t, syscall.SIGTERM)
	sent := time.Now()
	for refused := false; !refused; {
		conn, err := net.DialTimeout("tcp", g.addr(), time.Second)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			refused = true
			continue
		case errors.Is(err, syscall.ECONNRESET):
			// Queued in the listen backlog as the listener closed: not served either. Look again.
		case err != nil:
			t.Fatalf("a new connection after SIGTERM: %v, want connection refused", err)
		default:
			conn.Close()
		}
		if time.Since(sent) > 2*time.Second {
			t.Fatal("still accepting connections 2 s after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("new connections refused %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if !s.running() {
		t.Fatalf("the live session ended before it was done: %s", s)
	}
	// The other doors close with the front door, not after its sessions have drained, and
	// /healthz tells a load balancer the node is going while metrics still answer.
	for _, door := range []struct{ name, addr string }{
		{"the linking portal", g.portalAddr(t)},
		{"the SSH linking listener", net.JoinHostPort("127.0.0.1", strconv.Itoa(g.linkPort(t)))},
	} {
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			conn, err := net.DialTimeout("tcp", door.addr, time.Second)
			if err != nil {
				break
			}
			conn.Close()
			if time.Now().After(deadline) {
				t.Errorf("%s still accepts connections 2 s after the front door stopped", door.name)
				break
			}
		}
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", g.metricsPort))
	if err != nil {
		t.Fatalf("/healthz while draining: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "shutting down") {
		t.Errorf("/healthz while draining: %d %q, want 503 shutting down", resp.StatusCode, body)
	}
	if !s.running() {
		t.Fatalf("the live session ended before it was done: %s", s)
	}
	c2 := newClient(t, u, g.port, trustedAddr)
	if r := c2.ssh(nil, "echo", "ok"); r.exit != 255 || !strings.Contains(r.stderr, "refused") {
		t.Errorf("ssh while draining: want connection refused, got %s", r)
	}

	if exit := s.wait(waitTimeout); exit != 0 || s.stdout.String() != "started\ndone\n" {
		t.Errorf("the session during the drain: want it to finish, print done and exit 0: %s", s)
	}
	exitErr, ok := g.waitExit(20 * time.Second)
	if !ok {
		t.Fatal("the daemon is still running 20 s after its last session ended")
	}
	if exitErr != nil {
		t.Errorf("the daemon after SIGTERM: %v, want exit status 0", exitErr)
	}
	g.waitLog(t, 0, "shutting down", `"signal":"terminated"`)
}

// googleAuthenticatorFile runs Debian's google-authenticator as u, writing a TOTP
// ~/.google_authenticator, and returns its path, secret and scratch codes.
func googleAuthenticatorFile(t *testing.T, u *user) (path, secret string, scratch []string) {
	t.Helper()
	path = filepath.Join(u.home, ".google_authenticator")
	cmd := exec.Command("runuser", "-u", u.name, "--", "google-authenticator",
		"--time-based", "--disallow-reuse", "--force", "--rate-limit=3", "--rate-time=30",
		"--window-size=3", "--no-confirm", "--quiet", "--secret="+path)
	cmd.Env = cleanEnv("HOME="+u.home, "USER="+u.name)
	cmd.Dir = u.home
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("google-authenticator: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	secret = strings.TrimSpace(lines[0])
	h.remember(secret)
	eight := regexp.MustCompile(`^[0-9]{8}$`)
	for _, l := range lines[1:] {
		if eight.MatchString(l) {
			scratch = append(scratch, l)
		}
	}
	if len(secret) < 16 || len(scratch) == 0 || !strings.Contains(string(b), `" TOTP_AUTH`) {
		t.Fatalf("unexpected google_authenticator file: %d lines, %d scratch codes", len(lines), len(scratch))
	}
	return path, secret, scratch
}

func TestImportGoogleAuthenticator(t *testing.T) {
	t.Parallel()
	needTools(t, "google-authenticator", "runuser", "oathtool")
	g := sharedGatekeeper(t)

	t.Run("one user", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		path, secret, scratch := googleAuthenticatorFile(t, u)
		out := g.admin(t, "import-google-authenticator", u.name, path)
		if !strings.Contains(out, "imported") {
			t.Errorf("import-google-authenticator said: %q", out)
		}
		// The phone the user has had for years: its codes log in.
		u.secret, u.last = secret, 0
		c := newClient(t, u, g.port, "")
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "a code of the imported secret")
		wantPrompts(t, c, "Password:", "Verification code:")
		c.setCode(scratch[0])
		mustLogIn(t, c, "a scratch code of the file, as a recovery code")
		mustBeDeniedSlowly(t, c, "the same scratch code again")
		g.waitAudit(t, u.name, "import by "+adminActor+" and recovery_used", func(ev []auditEvent) bool {
			return countKind(ev, "import", adminActor) == 1 && countKind(ev, "recovery_used", "") == 1
		})
	})

	t.Run("all users", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		_, secret, scratch := googleAuthenticatorFile(t, u)
		// A home root of one: the machine's other home directories are none of the test's business.
		root := t.TempDir()
		if err := os.Symlink(u.home, filepath.Join(root, u.name)); err != nil {
			t.Fatal(err)
		}
		var rows []struct {
			User          string `json:"user"`
			Result        string `json:"result"`
			Detail        string `json:"detail"`
			RecoveryCodes int    `json:"recovery_codes"`
		}
		g.adminJSON(t, &rows, "import-google-authenticator", "--all-users", "--home-root", root)
		if len(rows) != 1 || rows[0].User != u.name || rows[0].Result != "imported" || rows[0].RecoveryCodes != len(scratch) {
			t.Fatalf("import --all-users -o json: %+v, want %s imported with %d recovery codes", rows, u.name, len(scratch))
		}
		u.secret, u.last = secret, 0
		c := newClient(t, u, g.port, "")
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "a code of the secret imported with --all-users")
	})
}
