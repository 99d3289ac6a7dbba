package gatekeeper

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"gatekeeper/config"
	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/connserve"
	"gatekeeper/gatekeeper/metrics"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/internal/logbuf"
)

// memStore is an in-memory Store with the same all-or-nothing Update
// semantics as the bbolt one.
type memStore struct {
	mu     sync.Mutex
	users  map[string]store.User
	events []store.Event
	// full makes every write fail as on a full disk.
	full bool
}

// errFull is what a full memStore returns, as the bbolt store does.
var errFull = fmt.Errorf("%w: free space on the filesystem holding test.db", store.ErrNoSpace)

func (m *memStore) setFull(full bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.full = full
}

func (m *memStore) Append(events ...store.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.full {
		return errFull
	}
	m.events = append(m.events, events...)
	return nil
}

// kinds lists the audit event kinds recorded so far.
func (m *memStore) kinds() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, e := range m.events {
		out = append(out, e.Kind)
	}
	return out
}

func (m *memStore) Get(name string) (store.User, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[name]
	if !ok {
		return store.User{Name: name, State: store.StateNone}, nil
	}
	u.Secret = nil
	return u, nil
}

func (m *memStore) Update(name string, fn func(u *store.User) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[name]
	if !ok {
		u = store.User{Name: name, State: store.StateNone}
	}
	u.Secret = bytes.Clone(u.Secret)
	if err := fn(&u); err != nil {
		return err
	}
	if m.full {
		return errFull
	}
	m.users[name] = u
	return nil
}

func (m *memStore) lastStep(name string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.users[name].LastStep
}

// fakeLander is an in-process sshd that accepts one password and runs a
// trivial exec: it echoes the command back and exits 0.
type fakeLander struct {
	addr       string
	knownHosts string
	// attempts counts password attempts: the lander must never see one for
	// a login whose code was wrong.
	attempts atomic.Int32
	// rejectDelay is how long a wrong password takes to be refused, as
	// PAM's failure delay makes a real sshd take about 2 s.
	rejectDelay atomic.Int64
	// hold, when set, keeps a right password waiting until it is closed:
	// a test can act while a login is at the lander.
	hold atomic.Pointer[chan struct{}]
	// ca, when set, is the user CA whose certificates the lander accepts
	// (TrustedUserCAKeys); certs records each certificate it accepted.
	ca    atomic.Pointer[ssh.PublicKey]
	mu    sync.Mutex
	certs []*ssh.Certificate
}

// acceptedCerts returns the certificates the lander let users in with.
func (fl *fakeLander) acceptedCerts() []*ssh.Certificate {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return slices.Clone(fl.certs)
}

const landerPassword = "correct horse"

func startLander(t *testing.T) *fakeLander {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	fl := &fakeLander{}
	cfg := &ssh.ServerConfig{
		PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			fl.attempts.Add(1)
			if string(pw) == landerPassword {
				if h := fl.hold.Load(); h != nil {
					<-*h
				}
				return nil, nil
			}
			time.Sleep(time.Duration(fl.rejectDelay.Load()))
			return nil, errors.New("wrong password")
		},
	}
	checker := &ssh.CertChecker{SupportedCriticalOptions: []string{"source-address", "force-command"}, IsUserAuthority: func(auth ssh.PublicKey) bool {
		ca := fl.ca.Load()
		return ca != nil && bytes.Equal(auth.Marshal(), (*ca).Marshal())
	}}
	cfg.PublicKeyCallback = func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		perms, err := checker.Authenticate(c, key)
		if err == nil {
			fl.mu.Lock()
			fl.certs = append(fl.certs, key.(*ssh.Certificate))
			fl.mu.Unlock()
		}
		return perms, err
	}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	fl.addr = ln.Addr().String()
	fl.knownHosts = filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(fl.addr)}, signer.PublicKey())
	if err := os.WriteFile(fl.knownHosts, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go serveFakeLanderConn(nc, cfg)
		}
	}()
	return fl
}

func serveFakeLanderConn(nc net.Conn, cfg *ssh.ServerConfig) {
	defer nc.Close()
	_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		ch, chReqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer ch.Close()
			for req := range chReqs {
				if req.Type != "exec" {
					req.Reply(false, nil)
					continue
				}
				req.Reply(true, nil)
				var cmd struct{ Command string }
				_ = ssh.Unmarshal(req.Payload, &cmd)
				fmt.Fprintf(ch, "ran: %s", cmd.Command)
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
				return
			}
		}()
	}
}

// fakeClock is the server's clock; tests move it to cross time steps.
type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) Set(t time.Time)         { c.t.Store(t.UnixNano()) }
func (c *fakeClock) Advance(d time.Duration) { c.t.Add(int64(d)) }

type testGate struct {
	srv    *Server
	addr   string
	store  *memStore
	clock  *fakeClock
	lander *fakeLander
	logs   *logbuf.Buffer
	secret []byte
}

// newTestGate starts a Server in front of a fake lander, with user "alice"
// linked and 127.0.0.2 trusted.
func newTestGate(t *testing.T, edit func(*config.Config)) *testGate {
	t.Helper()
	return newTestGateWith(t, edit, nil)
}

// newTestGateWith is newTestGate with a hook to change the Server's Options.
func newTestGateWith(t *testing.T, edit func(*config.Config), editOpts func(*Options)) *testGate {
	t.Helper()
	fl := startLander(t)
	secret := make([]byte, 20)
	rand.Read(secret)
	g := &testGate{
		store:  &memStore{users: map[string]store.User{}},
		clock:  &fakeClock{},
		lander: fl,
		logs:   new(logbuf.Buffer),
		secret: secret,
	}
	g.clock.Set(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	g.store.users["alice"] = store.User{Name: "alice", State: store.StateActive, Secret: secret}

	cfg := &config.Config{
		HostKeyFiles:   []string{filepath.Join(t.TempDir(), "host_key")},
		Upstream:       config.Upstream{Address: fl.addr, KnownHosts: fl.knownHosts},
		Trusted:        []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		TOTP:           config.TOTP{Issuer: "Test", Skew: 1},
		RateLimit:      testRateLimit,
		MaxAuthTries:   6,
		MaxStartups:    64,
		LoginGraceTime: 10 * time.Second,
		FailureDelay:   time.Millisecond,
	}
	if edit != nil {
		edit(cfg)
	}
	opts := Options{
		Store: g.store,
		Log:   slog.New(slog.NewJSONHandler(g.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:   g.clock.Now,
	}
	if editOpts != nil {
		editOpts(&opts)
	}
	srv, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	g.srv, g.addr = srv, ln.Addr().String()
	return g
}

// code computes the code for the clock's step plus offset with pquerna's
// HOTP, independently of package totp.
func (g *testGate) code(t *testing.T, offset int) string {
	t.Helper()
	step := uint64(g.clock.Now().Unix()/30 + int64(offset))
	c, err := hotp.GenerateCodeCustom(base32.StdEncoding.EncodeToString(g.secret), step,
		hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type loginResult struct {
	output  string
	err     error
	prompts []string
}

// login runs "hello" through the gate with keyboard-interactive, answering
// the password and code prompts; from is the local address to dial from.
func (g *testGate) login(user, password, code, from string, methods ...ssh.AuthMethod) loginResult {
	var res loginResult
	var mu sync.Mutex
	answer := func(name, instruction string, questions []string, echos []bool) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		out := make([]string, len(questions))
		for i, q := range questions {
			res.prompts = append(res.prompts, q)
			switch q {
			case PromptPassword:
				out[i] = password
			case PromptCode:
				out[i] = code
			default:
				return nil, fmt.Errorf("unexpected prompt %q", q)
			}
		}
		return out, nil
	}
	if len(methods) == 0 {
		methods = []ssh.AuthMethod{ssh.KeyboardInteractive(answer)}
	} else {
		methods = append(methods, ssh.KeyboardInteractive(answer))
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", g.addr)
	if err != nil {
		res.err = err
		return res
	}
	defer nc.Close()
	conn, chans, reqs, err := ssh.NewClientConn(nc, g.addr, &ssh.ClientConfig{
		User:            user,
		Auth:            methods,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // the gate's key is new per test
	})
	if err != nil {
		res.err = err
		return res
	}
	client := ssh.NewClient(conn, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		res.err = err
		return res
	}
	out, err := sess.Output("hello")
	res.output, res.err = string(out), err
	return res
}

func TestLogin(t *testing.T) {
	tests := []struct {
		name string
		// prepare may use earlier logins or change state; it returns the
		// code to use.
		prepare      func(t *testing.T, g *testGate) string
		user         string
		password     string
		from         string
		wantOK       bool
		wantPrompts  []string
		wantReason   string
		wantAttempts int32 // password attempts the lander saw in the final login
	}{
		{
			name:    "password and current code",
			prepare: func(t *testing.T, g *testGate) string { return g.code(t, 0) },
			user:    "alice", password: landerPassword, from: "127.0.0.1",
			wantOK: true, wantPrompts: []string{PromptPassword, PromptCode}, wantAttempts: 1,
		},
		{
			name:    "code of the previous step within skew",
			prepare: func(t *testing.T, g *testGate) string { return g.code(t, -1) },
			user:    "alice", password: landerPassword, from: "127.0.0.1",
			wantOK: true, wantPrompts: []string{PromptPassword, PromptCode}, wantAttempts: 1,
		},
		{
			name:    "code outside skew",
			prepare: func(t *testing.T, g *testGate) string { return g.code(t, -2) },
			user:    "alice", password: landerPassword, from: "127.0.0.1",
			wantReason: ReasonWrongCode,
		},
		{
			name: "replayed code",
			prepare: func(t *testing.T, g *testGate) string {
				c := g.code(t, 0)
				if r := g.login("alice", landerPassword, c, "127.0.0.1"); r.err != nil {
					t.Fatalf("first login: %v", r.err)
				}
				return c
			},
			user: "alice", password: landerPassword, from: "127.0.0.1",
			wantReason: ReasonReplayedCode,
		},
		{
			name: "older code after a newer one",
			prepare: func(t *testing.T, g *testGate) string {
				if r := g.login("alice", landerPassword, g.code(t, 1), "127.0.0.1"); r.err != nil {
					t.Fatalf("first login: %v", r.err)
				}
				return g.code(t, 0)
			},
			user: "alice", password: landerPassword, from: "127.0.0.1",
			wantReason: ReasonReplayedCode,
		},
		{
			name:    "wrong code never reaches the lander",
			prepare: func(t *testing.T, g *testGate) string { return "000000" },
			user:    "alice", password: landerPassword, from: "127.0.0.1",
			wantReason: ReasonWrongCode,
		},
		{
			name:    "malformed code",
			prepare: func(t *testing.T, g *testGate) string { return strings.Repeat("9", 5000) },
			user:    "alice", password: landerPassword, from: "127.0.0.1",
			wantReason: ReasonMalformedCode,
		},
		{
			name:    "wrong password with a good code",
			prepare: func(t *testing.T, g *testGate) string { return g.code(t, 0) },
			user:    "alice", password: "guess", from: "127.0.0.1",
			wantReason: ReasonWrongPassword, wantAttempts: 1,
		},
		{
			name:    "unlinked user outside the trusted networks",
			prepare: func(t *testing.T, g *testGate) string { return "123456" },
			user:    "bob", password: landerPassword, from: "127.0.0.1",
			wantReason: ReasonNotLinked,
		},
		{
			name:    "trusted source is never asked for a code",
			prepare: func(t *testing.T, g *testGate) string { return "" },
			user:    "bob", password: landerPassword, from: "127.0.0.2",
			wantOK: true, wantPrompts: []string{PromptPassword}, wantAttempts: 1,
		},
		{
			name:    "oversized username",
			prepare: func(t *testing.T, g *testGate) string { return g.code(t, 0) },
			user:    strings.Repeat("a", 10000), password: landerPassword, from: "127.0.0.1",
			wantReason: ReasonBadUsername,
		},
		{
			name:    "oversized password",
			prepare: func(t *testing.T, g *testGate) string { return g.code(t, 0) },
			user:    "alice", password: strings.Repeat("p", 100000), from: "127.0.0.1",
			wantReason: ReasonBadPassword,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newTestGate(t, nil)
			code := tc.prepare(t, g)
			before := g.lander.attempts.Load()
			r := g.login(tc.user, tc.password, code, tc.from)
			if got := g.lander.attempts.Load() - before; got != tc.wantAttempts {
				t.Errorf("lander saw %d password attempts, want %d", got, tc.wantAttempts)
			}
			if !tc.wantOK {
				if r.err == nil {
					t.Fatalf("login succeeded, want refusal (%s)", tc.wantReason)
				}
				if !strings.Contains(g.logs.String(), `"reason":"`+tc.wantReason+`"`) {
					t.Errorf("log lacks reason %q:\n%s", tc.wantReason, g.logs.String())
				}
				return
			}
			if r.err != nil {
				t.Fatalf("login failed: %v\nlog:\n%s", r.err, g.logs.String())
			}
			if r.output != "ran: hello" {
				t.Errorf("output %q, want %q", r.output, "ran: hello")
			}
			if strings.Join(r.prompts, "|") != strings.Join(tc.wantPrompts, "|") {
				t.Errorf("prompts %q, want %q", r.prompts, tc.wantPrompts)
			}
		})
	}
}

// TestUppercaseUsernames: a name with capitals, which a lander that ignores
// case would take for another account's, is refused at every door before
// its password reaches the lander, unless allow_uppercase_usernames is set.
func TestUppercaseUsernames(t *testing.T) {
	g := newTestGate(t, nil)
	trusted := netip.MustParseAddr("127.0.0.2")
	if r := g.login("Bob", landerPassword, "", "127.0.0.2"); r.err == nil {
		t.Fatal("Bob logged in with allow_uppercase_usernames off")
	}
	_, err := g.srv.SignIn(context.Background(), "Bob", landerPassword, "", trusted, store.DoorPortal)
	if le, ok := errors.AsType[*LoginError](err); !ok || le.Reason != ReasonBadUsername {
		t.Fatalf("portal sign-in as Bob: %v, want %s", err, ReasonBadUsername)
	}
	if n := g.lander.attempts.Load(); n != 0 {
		t.Fatalf("the lander saw %d passwords for Bob", n)
	}

	cfg := *g.srv.config()
	cfg.AllowUppercaseUsernames = true
	g.srv.Reload(&cfg)
	if r := g.login("Bob", landerPassword, "", "127.0.0.2"); r.err != nil {
		t.Fatalf("Bob refused with allow_uppercase_usernames on: %v", r.err)
	}
}

func TestPasswordMethodThenCode(t *testing.T) {
	g := newTestGate(t, nil)
	r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1", ssh.Password(landerPassword))
	if r.err != nil {
		t.Fatalf("login: %v\n%s", r.err, g.logs.String())
	}
	if strings.Join(r.prompts, "|") != PromptCode {
		t.Errorf("prompts %q, want only the code prompt", r.prompts)
	}
	if !strings.Contains(g.logs.String(), `"method":"password+keyboard-interactive"`) {
		t.Errorf("log does not record the method:\n%s", g.logs.String())
	}
}

// TestSessionLogsRoundTrip: the session's start is logged with the round
// trip its handshake showed, which sized the client's windows.
func TestSessionLogsRoundTrip(t *testing.T) {
	g := newTestGate(t, nil)
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err != nil {
		t.Fatalf("login: %v\n%s", r.err, g.logs.String())
	}
	var started map[string]any
	for line := range strings.Lines(g.logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "session started" {
			started = m
		}
	}
	if started == nil {
		t.Fatalf("no session started line:\n%s", g.logs.String())
	}
	rtt, _ := started["rtt"].(string)
	if d, err := time.ParseDuration(rtt); err != nil || d <= 0 || d > 10*time.Second {
		t.Errorf("session started with rtt %q, want the loopback round trip", started["rtt"])
	}
}

func TestConcurrentLoginsWithOneCode(t *testing.T) {
	g := newTestGate(t, nil)
	code := g.code(t, 0)
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := g.login("alice", landerPassword, code, "127.0.0.1"); r.err == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d logins succeeded with one code, want exactly 1", ok.Load())
	}
	if got, want := g.store.lastStep("alice"), uint64(g.clock.Now().Unix()/30); got != want {
		t.Errorf("last step %d, want %d", got, want)
	}
}

// testRateLimit is the default rate_limit section.
var testRateLimit = config.RateLimit{Failures: 3, Window: 30 * time.Second, Lockout: 5 * time.Minute,
	MaxLockout: time.Hour, NetworkFailures: 10, TrustedFailures: 10}

func TestLockout(t *testing.T) {
	g := newTestGate(t, nil)
	for i := range 3 {
		if r := g.login("alice", landerPassword, "000000", "127.0.0.1"); r.err == nil {
			t.Fatalf("wrong code %d accepted", i)
		}
	}
	// Locked: even the right code is refused, and the lander is not asked.
	before := g.lander.attempts.Load()
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err == nil {
		t.Fatal("locked-out user got in")
	}
	if g.lander.attempts.Load() != before {
		t.Error("the lander was asked while the user was locked out")
	}
	if !strings.Contains(g.logs.String(), `"reason":"locked"`) {
		t.Errorf("log lacks the lockout reason:\n%s", g.logs.String())
	}
	// The code was not used up by the refused attempt.
	g.clock.Advance(5*time.Minute + time.Second)
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err != nil {
		t.Fatalf("login after the lockout expired: %v", r.err)
	}
}

func TestUnlock(t *testing.T) {
	g := newTestGate(t, nil)
	// From a trusted address no code is asked, so lock alice with wrong
	// passwords: trusted logins have their own, higher, per-user limit.
	for range testRateLimit.TrustedFailures {
		g.login("alice", "guess", "", "127.0.0.2")
	}
	if !slices.ContainsFunc(g.srv.Locks("alice"), func(lk Lock) bool { return lk.Until.After(g.clock.Now()) }) {
		t.Fatal("alice is not locked after trusted_failures wrong passwords")
	}
	if r := g.login("alice", landerPassword, "", "127.0.0.2"); r.err == nil {
		t.Fatal("locked-out user got in")
	}
	locks := g.srv.Locks("alice")
	if len(locks) != 1 || locks[0].Key.Scope != ScopeTrustedUser || locks[0].Level != 1 {
		t.Fatalf("Locks = %+v, want one trusted_user lock at level 1", locks)
	}
	if was, err := g.srv.Unlock("alice"); err != nil || len(was) != 1 {
		t.Fatalf("Unlock cleared %+v, %v", was, err)
	}
	if r := g.login("alice", landerPassword, "", "127.0.0.2"); r.err != nil {
		t.Fatalf("login after unlock: %v", r.err)
	}
}

// TestOutsideFailuresNeverLockTrustedLogins: an attacker who knows alice's
// name locks her out of logins from outside, never out of logins from the
// trusted network; and the outside lockout holds against a trusted success.
func TestOutsideFailuresNeverLockTrustedLogins(t *testing.T) {
	g := newTestGate(t, nil)
	for range 5 {
		g.login("alice", landerPassword, "000000", "127.0.0.1")
	}
	if r := g.login("alice", landerPassword, "", "127.0.0.2"); r.err != nil {
		t.Fatalf("trusted login refused after failures from outside: %v", r.err)
	}
	// The password-only success did not clear the outside lockout.
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.3"); r.err == nil {
		t.Fatal("outside login let in during the user's lockout")
	}
	locks := g.srv.Locks("alice")
	if len(locks) != 1 || locks[0].Key != (LockKey{ScopeUser, "alice"}) || locks[0].Until.IsZero() {
		t.Fatalf("Locks = %+v, want alice's outside lock", locks)
	}
}

// TestOutsideFailuresNeverLockTrustedSignIn: an attacker who locks alice's
// outside logins does not keep her from signing in with both factors at the
// linking portal from the trusted network (to replace a phone, say); wrong
// codes there count in a budget of their own, which locks sign-ins from the
// trusted networks, not logins from outside.
func TestOutsideFailuresNeverLockTrustedSignIn(t *testing.T) {
	g := newTestGate(t, nil)
	ctx := context.Background()
	trusted := netip.MustParseAddr("127.0.0.2")
	for range 5 {
		g.login("alice", landerPassword, "000000", "127.0.0.1")
	}
	if _, err := g.srv.SignIn(ctx, "alice", landerPassword, g.code(t, 0), trusted, store.DoorPortal); err != nil {
		t.Fatalf("trusted sign-in with both factors refused after failures from outside: %v", err)
	}

	g.clock.Advance(time.Hour) // the outside lockout is over; its failures are remembered
	for range testRateLimit.Failures {
		if _, err := g.srv.SignIn(ctx, "alice", landerPassword, "000000", trusted, store.DoorPortal); err == nil {
			t.Fatal("a wrong code signed in")
		}
	}
	_, err := g.srv.SignIn(ctx, "alice", landerPassword, g.code(t, 0), trusted, store.DoorPortal)
	if le, ok := errors.AsType[*LoginError](err); !ok || le.Reason != ReasonLocked {
		t.Fatalf("sign-in after %d wrong codes from the trusted network: %v, want locked", testRateLimit.Failures, err)
	}
	if locks := g.srv.Locks("alice"); !slices.ContainsFunc(locks, func(l Lock) bool {
		return l.Key == (LockKey{ScopeTrustedCode, "alice"}) && !l.Until.IsZero()
	}) {
		t.Fatalf("Locks = %+v, want alice's trusted_code lock", locks)
	}
	g.clock.Advance(30 * time.Second)
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.3"); r.err != nil {
		t.Fatalf("outside login refused after wrong codes from the trusted network: %v", r.err)
	}
}

// TestTrustedCodeGuessesBounded: someone on campus who holds alice's
// password guesses her codes at the linking portal as slowly as it takes,
// and clears her trusted count with password logins (no code is asked on
// campus) between guesses: the codes checked are bounded as from outside.
func TestTrustedCodeGuessesBounded(t *testing.T) {
	g := newTestGate(t, nil)
	ctx := context.Background()
	trusted := netip.MustParseAddr("127.0.0.2")
	for range 20 {
		g.srv.SignIn(ctx, "alice", landerPassword, "000000", trusted, store.DoorLinking)
		if r := g.login("alice", landerPassword, "", "127.0.0.2"); r.err != nil {
			t.Fatalf("password login from campus: %v", r.err)
		}
		g.clock.Advance(time.Minute) // past the window, every time
	}
	// As from outside: 3 codes (minutes 0-2), locked 5 min; 3 more (7-9),
	// locked 10 min; 1 more (19). Each lockout takes rate_limit.failures.
	if n := g.srv.metrics.SecondFactorChecks.Value(); n != 7 {
		t.Fatalf("%d codes checked in 20 minutes, want 7", n)
	}
	// Unlocked by an admin, the count starts again; a right code then clears it.
	g.srv.Unlock("alice")
	if _, err := g.srv.SignIn(ctx, "alice", landerPassword, g.code(t, 0), trusted, store.DoorPortal); err != nil {
		t.Fatalf("sign-in with both factors after admin unlock: %v", err)
	}
	if locks := g.srv.Locks("alice"); len(locks) != 0 {
		t.Fatalf("Locks after a sign-in with a right code = %+v, want none", locks)
	}
}

// TestCodesCheckedAreBounded: 60 concurrent wrong codes for one user from
// 60 addresses get at most rate_limit.failures codes checked.
func TestCodesCheckedAreBounded(t *testing.T) {
	g := newTestGate(t, nil)
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			g.login("alice", landerPassword, fmt.Sprintf("%06d", i), fmt.Sprintf("127.0.%d.%d", 1+i/200, 1+i%200))
		})
	}
	wg.Wait()
	if n := g.srv.metrics.SecondFactorChecks.Value(); n > uint64(testRateLimit.Failures) {
		t.Fatalf("%d codes checked, at most %d allowed", n, testRateLimit.Failures)
	}
}

func TestLanderProblemsShowABanner(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(t *testing.T, c *config.Config)
		wantReason string
		wantLog    string
	}{
		{
			name: "host key changed",
			edit: func(t *testing.T, c *config.Config) {
				_, other, _ := ed25519.GenerateKey(rand.Reader)
				pub, _ := ssh.NewSignerFromKey(other)
				line := knownhosts.Line([]string{knownhosts.Normalize(c.Upstream.Address)}, pub.PublicKey())
				if err := os.WriteFile(c.Upstream.KnownHosts, []byte(line+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantReason: ReasonLanderHostKey,
			wantLog:    "lander host key does not match upstream.known_hosts",
		},
		{
			name: "lander down",
			edit: func(t *testing.T, c *config.Config) {
				ln, _ := net.Listen("tcp", "127.0.0.1:0")
				addr := ln.Addr().String()
				ln.Close()
				kh, _ := os.ReadFile(c.Upstream.KnownHosts)
				host := knownhosts.Normalize(c.Upstream.Address)
				kh = bytes.Replace(kh, []byte(host), []byte(knownhosts.Normalize(addr)), 1)
				os.WriteFile(c.Upstream.KnownHosts, kh, 0o644)
				c.Upstream.Address = addr
			},
			wantReason: ReasonLanderUnavailable,
			wantLog:    "lander unavailable",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var banner atomic.Value
			g := newTestGate(t, func(c *config.Config) { tc.edit(t, c) })
			nc, err := net.Dial("tcp", g.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_, _, _, err = ssh.NewClientConn(nc, g.addr, &ssh.ClientConfig{
				User: "alice",
				Auth: []ssh.AuthMethod{ssh.RetryableAuthMethod(ssh.KeyboardInteractive(
					func(_, _ string, qs []string, _ []bool) ([]string, error) {
						out := make([]string, len(qs))
						for i, q := range qs {
							out[i] = map[string]string{PromptPassword: landerPassword, PromptCode: g.code(t, 0)}[q]
						}
						return out, nil
					}), 1)},
				HostKeyCallback: ssh.InsecureIgnoreHostKey(),
				BannerCallback:  func(m string) error { banner.Store(m); return nil },
			})
			if err == nil {
				t.Fatal("login succeeded with the lander unusable")
			}
			if b, _ := banner.Load().(string); !strings.Contains(b, "not reachable") {
				t.Errorf("banner %q does not tell the user the login node is unreachable", b)
			}
			logs := g.logs.String()
			if !strings.Contains(logs, `"reason":"`+tc.wantReason+`"`) || !strings.Contains(logs, tc.wantLog) {
				t.Errorf("log lacks reason %q / %q:\n%s", tc.wantReason, tc.wantLog, logs)
			}
		})
	}
}

func TestGarbageOnThePort(t *testing.T) {
	g := newTestGate(t, nil)
	inputs := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		bytes.Repeat([]byte{0xff}, 70000),
		[]byte("SSH-2.0-" + strings.Repeat("x", 300) + "\r\n"),
		{},
	}
	for i, in := range inputs {
		nc, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		nc.Write(in)
		if c, ok := nc.(*net.TCPConn); ok {
			c.CloseWrite()
		}
		// A reset is a close too (unread garbage makes the kernel send RST);
		// only a timeout means the gate kept the connection open.
		if _, err := io.Copy(io.Discard, nc); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("input %d: the gate did not close the connection: %v", i, err)
		}
		nc.Close()
	}
	// Still serving.
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err != nil {
		t.Fatalf("login after garbage: %v", r.err)
	}
}

func TestMaxStartups(t *testing.T) {
	g := newTestGate(t, func(c *config.Config) { c.MaxStartups, c.Preauth.DropStart = 2, 2 })
	// Two connections that never speak hold both unauthenticated slots.
	var held []net.Conn
	for range 2 {
		nc, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		buf := make([]byte, 64)
		if _, err := nc.Read(buf); err != nil { // the server's version line: the slot is taken
			t.Fatal(err)
		}
		held = append(held, nc)
	}
	nc, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if n, _ := io.Copy(io.Discard, nc); n != 0 {
		t.Errorf("third connection got %d bytes, want it closed at once", n)
	}
	for _, c := range held {
		c.Close()
	}
}

// TestPreauthFlood: idle connections from one address and from one /24 take
// only their per-source share; a login from elsewhere and one from the
// trusted network still get in, and the idle ones are closed once the
// handshake deadline passes.
func TestPreauthFlood(t *testing.T) {
	g := newTestGate(t, func(c *config.Config) {
		c.Preauth = config.Preauth{HandshakeTimeout: time.Second, PerAddress: 3, PerNetwork: 5, DropStart: 60, TrustedReserve: 4}
		c.MaxStartups = 64
	})
	idle := func(from string) (net.Conn, bool) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		nc, err := d.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 8)
		_, err = io.ReadFull(nc, buf) // the version line, or EOF when refused
		return nc, err == nil
	}
	var held []net.Conn
	for range 20 {
		if nc, ok := idle("127.0.7.1"); ok {
			held = append(held, nc)
		}
	}
	for i := range 20 {
		if nc, ok := idle(fmt.Sprintf("127.0.7.%d", 10+i)); ok {
			held = append(held, nc)
		}
	}
	if len(held) != 5 {
		t.Fatalf("%d idle connections admitted from one /24, want 5 (3 from one address, 5 in all)", len(held))
	}
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.8.1"); r.err != nil {
		t.Fatalf("login from another network during the flood: %v", r.err)
	}
	if r := g.login("alice", landerPassword, "", "127.0.0.2"); r.err != nil {
		t.Fatalf("trusted login during the flood: %v", r.err)
	}
	if n := g.srv.metrics.PreauthRefused.With(connserve.RefusedPerAddress).Value(); n != 17 {
		t.Errorf("per-address refusals %d, want 17", n)
	}
	// The handshake deadline closes the idle ones and frees their places.
	for _, nc := range held {
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("idle connection not closed by the server: %v", err)
		}
	}
	waitFor(t, "the places to be given back", func() bool { return g.srv.admission.Len() == 0 })
}

func TestSessionForgottenWhenClientLeaves(t *testing.T) {
	g := newTestGate(t, nil)
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err != nil {
		t.Fatal(r.err)
	}
	waitFor(t, "the session list to empty", func() bool { return len(g.srv.Sessions()) == 0 })
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProxyProtocol(t *testing.T) {
	tests := []struct {
		name        string
		from        string // proxy_protocol_from
		wantPrompts []string
	}{
		// The balancer (127.0.0.1) says the client is 127.0.0.2, a trusted
		// address: no code is asked.
		{"header from a listed balancer is honoured", "127.0.0.1/32", []string{PromptPassword}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGate(t, func(c *config.Config) {
				c.ProxyProtocol = true
				c.ProxyFrom = []netip.Prefix{netip.MustParsePrefix(tc.from)}
			})
			g.addr = proxyFront(t, g.addr, "PROXY TCP4 127.0.0.2 127.0.0.1 40000 22\r\n")
			r := g.login("alice", landerPassword, "", "127.0.0.1")
			if r.err != nil {
				t.Fatalf("login: %v\n%s", r.err, g.logs.String())
			}
			if strings.Join(r.prompts, "|") != strings.Join(tc.wantPrompts, "|") {
				t.Errorf("prompts %q, want %q", r.prompts, tc.wantPrompts)
			}
			if !strings.Contains(g.logs.String(), `"remote":"127.0.0.2:40000"`) {
				t.Errorf("log does not show the client address from the header:\n%s", g.logs.String())
			}
		})
	}
	// A header the gatekeeper was not told to read, from a balancer inside
	// trusted_networks: the connection must fail (x/crypto patch 22), not
	// skip the header as a line before the version and let every client in
	// with the balancer's trusted address and no code.
	for name, edit := range map[string]func(c *config.Config){
		"header from anyone else is not honoured": func(c *config.Config) {
			c.ProxyProtocol = true
			c.ProxyFrom = []netip.Prefix{netip.MustParsePrefix("10.9.9.9/32")} // not us
		},
		"header without proxy_protocol is not honoured": func(c *config.Config) {},
	} {
		t.Run(name, func(t *testing.T) {
			g := newTestGate(t, func(c *config.Config) {
				edit(c)
				c.Trusted = append(c.Trusted, netip.MustParsePrefix("127.0.0.1/32")) // the balancer
			})
			// A v1 header, then a v2 one (HAProxy's send-proxy-v2); each twice.
			const warning = "a connection began with a PROXY protocol header"
			front := g.addr
			for i, header := range []string{"PROXY TCP4 192.0.2.7 127.0.0.1 40000 22\r\n",
				"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\x7f\x00\x00\x01\x9c\x40\x00\x16"} {
				g.addr = proxyFront(t, front, header)
				for range 2 {
					if r := g.login("alice", landerPassword, "", "127.0.0.1"); r.err == nil {
						t.Fatalf("a PROXY header the gatekeeper was not told to read (%q) let a client in as the trusted balancer", header)
					}
				}
				// The admin is told why, with the sender, once a minute.
				waitFor(t, "the warning about the header", func() bool { return strings.Count(g.logs.String(), warning) > i })
				if n := strings.Count(g.logs.String(), warning); n != i+1 {
					t.Errorf("header %d: warned %d times in all, want %d", i+1, n, i+1)
				}
				g.srv.proxyWarned.Store(0) // the next header warns again
			}
			if !regexp.MustCompile(warning + `[^\n]*"remote":"127\.0\.0\.1:`).MatchString(g.logs.String()) {
				t.Errorf("the warning does not name the sender:\n%s", g.logs.String())
			}
		})
	}
}

// proxyFront starts a tiny TCP forwarder that prefixes each connection to
// backend with header, the way a load balancer would, and returns its address.
func proxyFront(t *testing.T, backend, header string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				defer b.Close()
				if _, err := io.WriteString(b, header); err != nil {
					return
				}
				go io.Copy(b, c)
				io.Copy(c, b)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestReloadTrustedNetworks(t *testing.T) {
	g := newTestGate(t, nil)
	if r := g.login("alice", landerPassword, "", "127.0.0.3"); r.err == nil {
		t.Fatal("127.0.0.3 got in without a code before it was trusted")
	}
	cfg := *g.srv.config()
	cfg.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}
	cfg.Listen = "127.0.0.1:1" // restart-only: reported, not applied
	if got := g.srv.Reload(&cfg); strings.Join(got, ",") != "listen" {
		t.Errorf("Reload reported %q as needing a restart, want [listen]", got)
	}
	r := g.login("alice", landerPassword, "", "127.0.0.3")
	if r.err != nil {
		t.Fatalf("login from the newly trusted address: %v", r.err)
	}
	if strings.Join(r.prompts, "|") != PromptPassword {
		t.Errorf("prompts %q after reload, want only the password", r.prompts)
	}
	if r := g.login("alice", landerPassword, "", "127.0.0.2"); r.err == nil {
		t.Error("127.0.0.2 is still trusted after it was removed")
	}
}

// TestLastLoginOnlyWhenIn: the last login (admin list and show) is the last
// one that got in: a good code or recovery code with a wrong password
// leaves it as it was.
func TestLastLoginOnlyWhenIn(t *testing.T) {
	g, codes := gateWithRecovery(t)
	lastLogin := func() time.Time {
		u, err := g.store.Get("alice")
		if err != nil {
			t.Fatal(err)
		}
		return u.LastLogin
	}
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err != nil {
		t.Fatalf("login: %v", r.err)
	}
	in := lastLogin()
	if !in.Equal(g.clock.Now()) {
		t.Fatalf("last login %v after a login at %v", in, g.clock.Now())
	}
	g.clock.Advance(time.Minute)
	if r := g.login("alice", "guess", g.code(t, 0), "127.0.0.1"); r.err == nil {
		t.Fatal("a wrong password got in")
	}
	if r := g.login("alice", "guess", codes[0], "127.0.0.1"); r.err == nil {
		t.Fatal("a wrong password got in with a recovery code")
	}
	if got := lastLogin(); !got.Equal(in) {
		t.Errorf("last login %v after refused logins, want %v (the one that got in)", got, in)
	}
	g.clock.Advance(time.Minute)
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err != nil {
		t.Fatalf("login: %v", r.err)
	}
	if got := lastLogin(); !got.Equal(g.clock.Now()) {
		t.Errorf("last login %v after a login at %v", got, g.clock.Now())
	}
}

// TestLastLoginKeptByAFailedLoginWaiting: a login that fails after waiting
// (here for a recovery-code hashing slot) while another got in puts back what
// its own write replaced, the other's login, not what it read when it began.
func TestLastLoginKeptByAFailedLoginWaiting(t *testing.T) {
	g, codes := gateWithRecovery(t)
	for range cap(g.srv.hashSlots) {
		g.srv.hashSlots <- struct{}{}
	}
	failed := make(chan loginResult, 1)
	go func() { failed <- g.login("alice", "guess", codes[0], "127.0.0.1") }()
	g.clock.Advance(time.Minute)
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err != nil {
		t.Fatalf("login: %v", r.err)
	}
	in := g.clock.Now()
	for range cap(g.srv.hashSlots) {
		<-g.srv.hashSlots
	}
	if r := <-failed; r.err == nil {
		t.Fatal("a wrong password got in")
	}
	if u, _ := g.store.Get("alice"); !u.LastLogin.Equal(in) {
		t.Errorf("last login %v after a refused login that waited, want %v (the login that got in meanwhile)", u.LastLogin, in)
	}
}

// gateWithRecovery is newTestGate with recovery codes on: alice has the
// codes returned.
func gateWithRecovery(t *testing.T) (*testGate, []string) {
	t.Helper()
	codes, err := enroll.NewRecoveryCodes()
	if err != nil {
		t.Fatal(err)
	}
	g := newTestGateWith(t, nil, func(o *Options) { o.Recovery = enroll.VerifyRecovery })
	rs, err := enroll.HashRecovery(context.Background(), codes)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.store.Update("alice", func(u *store.User) error { rs.SetOn(u); return nil }); err != nil {
		t.Fatal(err)
	}
	return g, codes
}

func TestRecoveryCodeLogsInOnce(t *testing.T) {
	g, codes := gateWithRecovery(t)
	// Typed the way a user copies it from a printout: upper case, spaced.
	typed := strings.ToUpper(strings.ReplaceAll(codes[3], "-", " "))
	if r := g.login("alice", landerPassword, typed, "127.0.0.1"); r.err != nil {
		t.Fatalf("login with a recovery code: %v\n%s", r.err, g.logs.String())
	}
	if r := g.login("alice", landerPassword, codes[3], "127.0.0.1"); r.err == nil {
		t.Fatal("a recovery code logged in twice")
	}
	if r := g.login("alice", landerPassword, "zzzz-zzzz-zz", "127.0.0.1"); r.err == nil {
		t.Fatal("a made-up recovery code logged in")
	}
	u, _ := g.store.Get("alice")
	if len(u.Recovery) != len(codes)-1 {
		t.Errorf("%d recovery codes left, want %d", len(u.Recovery), len(codes)-1)
	}
	g.srv.Close() // flushes the audit queue
	if kinds := strings.Join(g.store.kinds(), ","); !strings.Contains(kinds, store.EventRecoveryUsed) {
		t.Errorf("audit lacks %s: %s", store.EventRecoveryUsed, kinds)
	}
}

func TestAuditAndMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	m := metrics.NewGatekeeper(reg)
	g := newTestGateWith(t, nil, func(o *Options) { o.Metrics = m })
	code := g.code(t, 0)
	g.login("alice", landerPassword, code, "127.0.0.1")     // ok
	g.login("alice", landerPassword, code, "127.0.0.1")     // replay
	g.login("alice", landerPassword, "", "127.0.0.2")       // trusted
	g.login("alice", landerPassword, "000000", "127.0.0.1") // wrong code
	g.srv.Close()

	wantKinds := []string{
		store.EventLoginOK,
		store.EventLoginRefused, store.EventCodeReuse,
		store.EventLoginOK, store.EventTrustedBypass,
		store.EventLoginRefused,
	}
	if got := g.store.kinds(); strings.Join(got, ",") != strings.Join(wantKinds, ",") {
		t.Errorf("audit kinds %q, want %q", got, wantKinds)
	}
	var out bytes.Buffer
	reg.WriteTo(&out) // label pairs come sorted by name
	for _, want := range []string{
		`gatekeeper_logins_total{reason="code",result="ok"} 1`,
		`gatekeeper_logins_total{reason="trusted_network",result="ok"} 1`,
		`gatekeeper_logins_total{reason="replayed_code",result="refused"} 1`,
		`gatekeeper_logins_total{reason="wrong_code",result="refused"} 1`,
		`gatekeeper_code_reuse_refusals_total 1`,
		`gatekeeper_trusted_bypass_total 1`,
		`gatekeeper_auth_duration_seconds_count 4`,
		`gatekeeper_relayed_bytes_total{direction="down"} 20`,
		// At 0 before the first: alerts on their rates need the series.
		`gatekeeper_preauth_refused_total{reason="per_address"} 0`,
		`gatekeeper_preauth_refused_total{reason="early_drop"} 0`,
		`gatekeeper_lockouts_total{scope="user"} 0`,
		`gatekeeper_lockouts_total{scope="trusted_code"} 0`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, out.String())
		}
	}
}

func TestSessionLimits(t *testing.T) {
	tests := []struct {
		name   string
		limits config.Session
		want   string
	}{
		{"idle timeout", config.Session{IdleTimeout: 300 * time.Millisecond}, "session.idle_timeout"},
		{"max duration", config.Session{MaxDuration: 300 * time.Millisecond}, "session.max_duration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGate(t, func(c *config.Config) { c.Session = tc.limits })
			nc, err := net.Dial("tcp", g.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			code := g.code(t, 0)
			conn, chans, reqs, err := ssh.NewClientConn(nc, g.addr, &ssh.ClientConfig{
				User: "alice",
				Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
					out := make([]string, len(qs))
					for i, q := range qs {
						out[i] = map[string]string{PromptPassword: landerPassword, PromptCode: code}[q]
					}
					return out, nil
				})},
				HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			})
			if err != nil {
				t.Fatal(err)
			}
			client := ssh.NewClient(conn, chans, reqs)
			// An idle connection: the gate must close it by itself.
			ended := make(chan error, 1)
			go func() { ended <- client.Wait() }()
			select {
			case <-ended:
			case <-time.After(10 * time.Second):
				t.Fatal("the session was not ended")
			}
			if !strings.Contains(g.logs.String(), tc.want) {
				t.Errorf("log does not say why the session ended (%s):\n%s", tc.want, g.logs.String())
			}
		})
	}
}

func TestReportBytesCountsEachByteOnce(t *testing.T) {
	reg := metrics.NewRegistry()
	m := metrics.NewGatekeeper(reg)
	sess := &Session{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				sess.Stats.Up.Add(3)
				sess.Stats.Down.Add(1)
				sess.reportBytes(m)
			}
		}()
	}
	wg.Wait()
	sess.reportBytes(m)
	if got := m.RelayedUp.Value(); got != 8*1000*3 {
		t.Errorf("up counter %d, want %d", got, 8*1000*3)
	}
	if got := m.RelayedDown.Value(); got != 8*1000 {
		t.Errorf("down counter %d, want %d", got, 8*1000)
	}
}

// TestRefusalsAlikeInTime: whatever the reason, a refusal reaches a client
// that answers slowly the same time after its last answer, also when the
// lander takes longer than failure_delay to refuse a wrong password.
func TestRefusalsAlikeInTime(t *testing.T) {
	const (
		answerDelay = 200 * time.Millisecond
		rejectDelay = 250 * time.Millisecond
		samples     = 3
	)
	g := newTestGateWith(t, func(c *config.Config) { c.FailureDelay = 100 * time.Millisecond },
		func(o *Options) { o.Recovery = enroll.VerifyRecovery })
	g.lander.rejectDelay.Store(int64(rejectDelay))
	g.store.users["bob"] = store.User{Name: "bob", State: store.StateActive, Secret: g.secret}

	// refusal logs in once, answering each prompt after answerDelay, and
	// returns the time from the last answer to the refusal.
	refusal := func(t *testing.T, user, password, code, from string) time.Duration {
		var last time.Time
		answer := ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
			time.Sleep(answerDelay)
			out := make([]string, len(qs))
			for i, q := range qs {
				out[i] = map[string]string{PromptPassword: password, PromptCode: code}[q]
			}
			last = time.Now()
			return out, nil
		})
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		nc, err := d.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_, _, _, err = ssh.NewClientConn(nc, g.addr, &ssh.ClientConfig{
			User: user, Auth: []ssh.AuthMethod{ssh.RetryableAuthMethod(answer, 1)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		})
		if err == nil {
			t.Fatalf("%s logged in", user)
		}
		return time.Since(last)
	}
	// The first wrong password teaches the gate the lander's delay.
	refusal(t, "alice", "wrong", g.code(t, -1), "127.0.9.1")
	g.clock.Advance(30 * time.Second)
	for range testRateLimit.Failures {
		g.login("bob", landerPassword, "000000", "127.0.9.2")
	}

	// Cases in two groups, by the shape of the answer: a recovery-shaped
	// one is hashed (argon2id, 19 MiB, for known and unknown users alike),
	// which on a busy VM can cost hundreds of milliseconds of page faults.
	// The client chose the shape, so the shapes may differ in time; what
	// must not is the time within a shape, which would tell known users,
	// wrong codes, wrong passwords and lockouts apart.
	const codeShaped, recoveryShaped = "code-shaped", "recovery-shaped"
	cases := []struct {
		name, group string
		run         func(t *testing.T, i int) time.Duration
	}{
		{"unknown user", codeShaped, func(t *testing.T, i int) time.Duration {
			return refusal(t, "nobody", landerPassword, "123456", fmt.Sprintf("127.0.10.%d", i+1))
		}},
		{"wrong code", codeShaped, func(t *testing.T, i int) time.Duration {
			return refusal(t, "alice", landerPassword, "000000", fmt.Sprintf("127.0.11.%d", i+1))
		}},
		{"recovery-shaped answer", recoveryShaped, func(t *testing.T, i int) time.Duration {
			return refusal(t, "alice", landerPassword, "abcd-efgh-jk", fmt.Sprintf("127.0.12.%d", i+1))
		}},
		{"recovery-shaped answer, unknown user", recoveryShaped, func(t *testing.T, i int) time.Duration {
			return refusal(t, "nobody", landerPassword, "abcd-efgh-jk", fmt.Sprintf("127.0.15.%d", i+1))
		}},
		{"right code, wrong password", codeShaped, func(t *testing.T, i int) time.Duration {
			g.clock.Advance(30 * time.Second)
			return refusal(t, "alice", "wrong", g.code(t, 0), fmt.Sprintf("127.0.13.%d", i+1))
		}},
		{"locked user", codeShaped, func(t *testing.T, i int) time.Duration {
			return refusal(t, "bob", landerPassword, "000000", fmt.Sprintf("127.0.14.%d", i+1))
		}},
	}
	medians := map[string]time.Duration{}
	byGroup := map[string][]time.Duration{}
	for _, c := range cases {
		var ds []time.Duration
		for i := range samples {
			if c.name == "wrong code" || c.name == "right code, wrong password" {
				g.srv.Unlock("alice") // keep alice's refusals about the code, not a lockout
			}
			ds = append(ds, c.run(t, i))
		}
		slices.Sort(ds)
		medians[c.name] = ds[len(ds)/2]
		byGroup[c.group] = append(byGroup[c.group], ds[len(ds)/2])
	}
	t.Logf("median refusal times after the last answer: %v", medians)
	for group, ms := range byGroup {
		if lo, hi := slices.Min(ms), slices.Max(ms); hi-lo > 50*time.Millisecond {
			t.Errorf("median refusal times of %s answers differ by %v (more than 50ms): %v", group, hi-lo, medians)
		}
	}
	if lo := slices.Min(slices.Collect(maps.Values(medians))); lo < rejectDelay {
		t.Errorf("refusals take %v, less than the lander's own %v: a wrong password stands out", lo, rejectDelay)
	}
	if l := g.srv.Locks("bob"); len(l) == 0 || l[0].Until.IsZero() {
		t.Errorf("bob was not locked out; the locked case measured something else: %+v", l)
	}
}

// TestDiskFull: when the database's disk is full, logins from the trusted
// networks go on, logins that need a code are refused (their step cannot be
// recorded), and the log and gatekeeper_store_write_errors_total say why.
func TestDiskFull(t *testing.T) {
	g := newTestGate(t, nil)
	g.store.setFull(true)
	if r := g.login("alice", landerPassword, "", "127.0.0.2"); r.err != nil {
		t.Fatalf("trusted login with the disk full: %v", r.err)
	}
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err == nil {
		t.Fatal("a login with a code got in although its step could not be recorded")
	}
	waitFor(t, "the audit writer to report the full disk", func() bool {
		return g.srv.metrics.StoreWriteErrors.With("no_space").Value() >= 3 // last login, step, audit
	})
	if !strings.Contains(g.logs.String(), "database disk full") {
		t.Errorf("the log does not say the disk is full:\n%s", g.logs.String())
	}
	g.store.setFull(false)
	g.clock.Advance(30 * time.Second)
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err != nil {
		t.Fatalf("login with a code once there is room again: %v", r.err)
	}
}

// TestResetDuringLogin: a login whose code was accepted just before an admin
// reset, and which is still at the lander when the reset ends the user's
// sessions, is not let in afterwards.
func TestResetDuringLogin(t *testing.T) {
	g := newTestGate(t, nil)
	hold := make(chan struct{})
	g.lander.hold.Store(&hold)
	done := make(chan loginResult, 1)
	go func() { done <- g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1") }()
	waitFor(t, "the login to reach the lander", func() bool { return g.lander.attempts.Load() == 1 })

	// What admin reset does: forget the record, then end the sessions.
	if err := g.store.Update("alice", func(u *store.User) error { *u = store.User{Name: "alice"}; return nil }); err != nil {
		t.Fatal(err)
	}
	if n := g.srv.KillUser("alice"); n != 0 {
		t.Fatalf("KillUser ended %d sessions before the login finished", n)
	}
	close(hold)
	if r := <-done; r.err == nil {
		t.Fatalf("a login decided during the reset survived it: %q", r.output)
	}
	waitFor(t, "the refused session to be logged", func() bool {
		return strings.Contains(g.logs.String(), "token was reset while the login was decided")
	})
	if s := g.srv.Sessions(); len(s) != 0 {
		t.Errorf("sessions after the reset: %+v", s)
	}
}

// TestRecoveryHashesBounded: however many recovery-shaped answers arrive at
// once, no more than maxHashSlots argon2id hashes run together.
func TestRecoveryHashesBounded(t *testing.T) {
	var running, most atomic.Int32
	release := make(chan struct{})
	g := newTestGateWith(t, nil, func(o *Options) {
		o.Recovery = func(u *store.User, answer string) bool {
			n := running.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			<-release
			running.Add(-1)
			return false
		}
	})
	const users = 12
	for i := range users {
		name := fmt.Sprintf("user%d", i)
		g.store.users[name] = store.User{Name: name, State: store.StateActive, Secret: g.secret}
	}
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			g.login(fmt.Sprintf("user%d", i), landerPassword, "abcd-efgh-jk", fmt.Sprintf("127.0.20.%d", i+1))
		})
	}
	waitFor(t, "the hashing slots to fill", func() bool { return running.Load() == maxHashSlots })
	close(release)
	wg.Wait()
	if m := most.Load(); m != maxHashSlots {
		t.Errorf("%d recovery-code hashes ran at once, want at most (and, under this load, exactly) %d", m, maxHashSlots)
	}
}

// TestRightCodeWrongPasswordCounts: whoever holds the phone but not the
// password is locked out like anyone else: a right code does not clear the
// user's failures before the lander has accepted the password.
func TestRightCodeWrongPasswordCounts(t *testing.T) {
	g := newTestGate(t, nil)
	for i := range testRateLimit.Failures {
		g.clock.Advance(30 * time.Second)
		if r := g.login("alice", fmt.Sprintf("guess-%d", i), g.code(t, 0), fmt.Sprintf("127.0.%d.1", 30+i)); r.err == nil {
			t.Fatal("a wrong password got in")
		}
	}
	g.clock.Advance(30 * time.Second)
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.40.1"); r.err == nil {
		t.Fatal("the right password got in after three wrong ones with right codes: the user was never locked out")
	}
	if l := g.srv.Locks("alice"); len(l) != 1 || l[0].Key.Scope != ScopeUser || l[0].Until.IsZero() {
		t.Fatalf("Locks = %+v, want alice locked out from outside", l)
	}
}

// TestJunkFromLockedSourceNotAudited: once a source is locked out, even
// names that are not names are refused as locked and not audited one by one.
func TestJunkFromLockedSourceNotAudited(t *testing.T) {
	g := newTestGate(t, nil)
	for range testRateLimit.Failures {
		g.login("bad/name", landerPassword, "123456", "127.0.50.1")
	}
	waitFor(t, "the lockout to be audited", func() bool {
		return slices.Contains(g.store.kinds(), store.EventLockout)
	})
	before := len(g.store.kinds())
	for range 20 {
		g.login("bad/name", landerPassword, "123456", "127.0.50.1")
	}
	// The audit writer runs in batches; a locked refusal writes nothing, so
	// give it the time a batch takes and compare.
	g.srv.audit.close()
	if n := len(g.store.kinds()) - before; n != 0 {
		t.Errorf("%d audit events for 20 refusals from a locked source, want none: %v", n, g.store.kinds()[before:])
	}
}

// TestIdleAfterKeyExchange: a client that finishes the key exchange and then
// sends no authentication request gives its place back after
// preauth.handshake_timeout, not after login_grace_time.
func TestIdleAfterKeyExchange(t *testing.T) {
	g := newTestGate(t, func(c *config.Config) {
		c.Preauth.HandshakeTimeout = 300 * time.Millisecond
		c.LoginGraceTime = time.Minute
	})
	stall := make(chan struct{})
	defer close(stall)
	nc, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	done := make(chan error, 1)
	go func() {
		_, _, _, err := ssh.NewClientConn(nc, g.addr, &ssh.ClientConfig{
			User: "alice",
			// Asked for the password after the key exchange and the "none"
			// request: it never answers, so no password request is sent.
			Auth:            []ssh.AuthMethod{ssh.PasswordCallback(func() (string, error) { <-stall; return "", errors.New("stalled") })},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		})
		done <- err
	}()
	waitFor(t, "the server to hang up on the idle client", func() bool {
		return g.srv.admission.Len() == 0 && strings.Contains(g.logs.String(), "connection ended before login")
	})
}

// TestSignInBothFactors: at the other doors a user with a device signs in
// with both factors, from the trusted network too; a code spent there cannot
// log in over SSH, nor the other way round; a user without a device signs
// in with the password.
func TestSignInBothFactors(t *testing.T) {
	g := newTestGate(t, nil)
	ctx := context.Background()
	trusted := netip.MustParseAddr("127.0.0.2")

	if _, err := g.srv.SignIn(ctx, "alice", landerPassword, "", trusted, store.DoorPortal); err == nil {
		t.Fatal("a linked user signed in with the password alone from the trusted network")
	}
	code := g.code(t, 0)
	res, err := g.srv.signInAt(ctx, "alice", landerPassword, code, trusted, store.DoorPortal, false)
	if err != nil || !res.Linked || res.SecondFactor != secondFactorCode {
		t.Fatalf("SignIn with both factors = %+v, %v", res, err)
	}
	if r := g.login("alice", landerPassword, code, "127.0.0.1"); r.err == nil {
		t.Fatal("a code spent on the portal logged in over SSH")
	}
	g.clock.Advance(30 * time.Second)
	code = g.code(t, 0)
	if r := g.login("alice", landerPassword, code, "127.0.0.1"); r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := g.srv.SignIn(ctx, "alice", landerPassword, code, trusted, store.DoorLinking); err == nil {
		t.Fatal("a code spent over SSH signed in at the linking listener")
	}
	g.clock.Advance(30 * time.Second)
	if _, err := g.srv.SignIn(ctx, "alice", "wrong", g.code(t, 0), trusted, store.DoorPortal); err == nil {
		t.Fatal("a wrong password signed in")
	}

	// No device: the password is enough, the code is not looked at.
	linked, err := g.srv.SignIn(ctx, "bob", landerPassword, "", trusted, store.DoorPortal)
	if err != nil || linked {
		t.Fatalf("SignIn of a user without a device = %v, %v", linked, err)
	}
	waitFor(t, "the sign-ins to be audited with their door", func() bool {
		g.store.mu.Lock()
		defer g.store.mu.Unlock()
		doors := map[string]bool{}
		for _, e := range g.store.events {
			if e.Kind == store.EventLoginOK || e.Kind == store.EventLoginRefused {
				doors[e.Door] = true
			}
		}
		return doors[store.DoorPortal] && doors[store.DoorLinking] && doors[store.DoorSSH]
	})
}

// TestClockDriftRecorded: a wrong code that is right 3 minutes ahead is
// refused like any wrong code, and recorded for support (log, audit, the
// record); a good code clears it.
func TestClockDriftRecorded(t *testing.T) {
	g := newTestGate(t, nil)
	if r := g.login("alice", landerPassword, g.code(t, 6), "127.0.0.1"); r.err == nil {
		t.Fatal("a code 3 minutes ahead logged in")
	}
	if u, _ := g.store.Get("alice"); u.DriftSteps != 6 || u.DriftAt.IsZero() {
		t.Fatalf("drift recorded: %d steps at %v, want 6", u.DriftSteps, u.DriftAt)
	}
	if !strings.Contains(g.logs.String(), "codes match 3 min ahead") {
		t.Errorf("the log does not say the codes match 3 min ahead:\n%s", g.logs.String())
	}
	waitFor(t, "the refusal to be audited with the drift", func() bool {
		g.store.mu.Lock()
		defer g.store.mu.Unlock()
		return slices.ContainsFunc(g.store.events, func(e store.Event) bool {
			return e.Kind == store.EventLoginRefused && strings.Contains(e.Detail, "codes match 3 min ahead")
		})
	})
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.2"); r.err != nil {
		t.Fatal(r.err) // trusted: no code, the drift stays
	}
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1"); r.err != nil {
		t.Fatal(r.err)
	}
	if u, _ := g.store.Get("alice"); !u.DriftAt.IsZero() {
		t.Errorf("drift still recorded after a good code: %+v", u)
	}
}

// TestSignInLinked: without a ticket from outside, only a user with a device
// signs in, with both factors; for one without, the password never reaches
// the lander.
func TestSignInLinked(t *testing.T) {
	g := newTestGate(t, nil)
	ctx := context.Background()
	outside := netip.MustParseAddr("127.0.60.1")
	if err := g.srv.SignInLinked(ctx, "alice", landerPassword, g.code(t, 0), outside, store.DoorPortal); err != nil {
		t.Fatalf("linked user with both factors: %v", err)
	}
	before := g.lander.attempts.Load()
	err := g.srv.SignInLinked(ctx, "bob", landerPassword, "123456", outside, store.DoorPortal)
	if le, ok := errors.AsType[*LoginError](err); !ok || le.Reason != ReasonNotLinked {
		t.Fatalf("user without a device: %v, want not_linked", err)
	}
	if g.lander.attempts.Load() != before {
		t.Error("the password of a user without a device went to the lander")
	}
}

// TestCloseEndsLoginsBeingDecided: closing the server does not wait for the
// logins it is deciding, neither one held at a slow lander nor a refusal
// waiting out its padding; a daemon asked to stop stops within its grace.
func TestCloseEndsLoginsBeingDecided(t *testing.T) {
	tests := []struct {
		name    string
		padding time.Duration
		hold    bool
		code    func(g *testGate) string
		inside  func(g *testGate) bool
	}{
		{"at the lander", time.Millisecond, true,
			func(g *testGate) string { return g.code(t, 0) },
			func(g *testGate) bool { return g.lander.attempts.Load() == 1 }},
		{"padding a refusal", time.Minute, false,
			func(*testGate) string { return "000000" },
			func(g *testGate) bool { return strings.Contains(g.logs.String(), `"login refused"`) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTestGate(t, func(c *config.Config) { c.FailureDelay = tt.padding })
			if tt.hold {
				hold := make(chan struct{})
				g.lander.hold.Store(&hold)
				t.Cleanup(func() { close(hold) })
			}
			done := make(chan loginResult, 1)
			go func() { done <- g.login("alice", landerPassword, tt.code(g), "127.0.0.1") }()
			waitFor(t, "the login to be under way", func() bool { return tt.inside(g) })

			closed := make(chan struct{})
			go func() { g.srv.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("Close still waits for a login being decided after 10 s")
			}
			if r := <-done; r.err == nil {
				t.Fatalf("the login got in through a closed server: %q", r.output)
			}
		})
	}
}

// TestShutdownKeepsTheAuditLog: the linking doors sign users in through the
// Server while they drain after its Shutdown; their events still reach the
// audit log, which Close writes out.
func TestShutdownKeepsTheAuditLog(t *testing.T) {
	g := newTestGate(t, nil)
	if err := g.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := g.srv.SignIn(context.Background(), "alice", landerPassword, "000000", netip.MustParseAddr("127.0.0.1"), store.DoorPortal); err == nil {
		t.Fatal("a wrong code signed in")
	}
	g.srv.Close()
	if kinds := g.store.kinds(); !slices.Contains(kinds, store.EventLoginRefused) {
		t.Fatalf("the refused sign-in after Shutdown is not in the audit log: %v", kinds)
	}
}

// TestSignInNotCutShortByItsContext: the linking doors pass a request's
// context, which net/http cancels as soon as the client half-closes its
// connection while it can still read the answer. A password guess whose
// context ends while the lander checks it still counts, so such a client
// cannot guess for free and then read whether the guess was right.
func TestSignInNotCutShortByItsContext(t *testing.T) {
	g := newTestGate(t, nil)
	g.lander.rejectDelay.Store(int64(time.Second)) // PAM's failure delay
	from := netip.MustParseAddr("127.0.0.1")
	for i := range testRateLimit.Failures {
		ctx, cancel := context.WithCancel(context.Background())
		stop := time.AfterFunc(300*time.Millisecond, cancel)
		if _, err := g.srv.SignIn(ctx, "bob", fmt.Sprintf("guess-%d", i), "", from, store.DoorPortal); err == nil {
			t.Fatalf("wrong password %d signed in", i)
		}
		stop.Stop()
		cancel()
	}
	if n := strings.Count(g.logs.String(), `"reason":"wrong_password"`); n != testRateLimit.Failures {
		t.Errorf("%d sign-ins refused as wrong_password, want %d:\n%s", n, testRateLimit.Failures, g.logs)
	}
	if _, err := g.srv.SignIn(context.Background(), "bob", landerPassword, "", from, store.DoorPortal); err == nil {
		t.Error("the right password signed in after as many cancelled wrong guesses as lock a user out")
	}
}

// TestMaxSessionsPerUser: at session.max_per_user live sessions a login with
// the right factors is refused with a banner that says why; other users are
// not counted; a session that ends makes room.
func TestMaxSessionsPerUser(t *testing.T) {
	g := newTestGate(t, func(c *config.Config) { c.Session.MaxPerUser = 2 })
	dial := func(user string) (*ssh.Client, string, error) {
		var banner strings.Builder
		answer := func(_, _ string, questions []string, _ []bool) ([]string, error) {
			out := make([]string, len(questions))
			for i := range questions {
				out[i] = landerPassword
			}
			return out, nil
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
		nc, err := d.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn, chans, reqs, err := ssh.NewClientConn(nc, g.addr, &ssh.ClientConfig{
			User:            user,
			Auth:            []ssh.AuthMethod{ssh.KeyboardInteractive(answer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			BannerCallback:  func(m string) error { banner.WriteString(m); return nil },
		})
		if err != nil {
			nc.Close()
			return nil, banner.String(), err
		}
		c := ssh.NewClient(conn, chans, reqs)
		t.Cleanup(func() { c.Close() })
		return c, banner.String(), nil
	}
	first, _, err := dial("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dial("alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dial("bob"); err != nil {
		t.Fatalf("bob's login counted against alice's cap: %v", err)
	}
	_, banner, err := dial("alice")
	if err == nil {
		t.Fatal("a third session of alice was let in at session.max_per_user 2")
	}
	if !strings.Contains(banner, "alice already has 2 sessions open on this login node") {
		t.Errorf("banner %q, want it to say why", banner)
	}
	if !slices.Contains(g.store.kinds(), store.EventLoginRefused) || !strings.Contains(g.logs.String(), `"reason":"too_many_sessions"`) {
		t.Errorf("the refusal is not audited and logged as too_many_sessions:\n%s", g.logs)
	}
	first.Close()
	waitFor(t, "the closed session to end", func() bool { return g.srv.liveSessionsOf("alice") == 1 })
	if _, _, err := dial("alice"); err != nil {
		t.Errorf("a login after one of the sessions ended: %v", err)
	}
}
