package sshlink

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/bolt"
	"gatekeeper/gatekeeper/totp"
)

const (
	testUser     = "alice"
	testPassword = "correct horse battery staple"
	// waitTime bounds every wait for output in the tests.
	waitTime = 20 * time.Second
	// testSkew is totp.skew in the tests: wide, so that a test can spend several codes of one
	// phone (each time step once) without waiting for the clock.
	testSkew = 4
)

// fakeAuth is the front door's SignIn on the test's store: a fixed password per user and, for a
// user with an active device, a code from the app or a recovery code, checked first and used
// up (one-use, as at the front door). It counts its calls and remembers their doors.
type fakeAuth struct {
	st  store.Store
	now func() time.Time // the test's clock (env.now)

	mu    sync.Mutex
	pw    map[string]string
	calls int
	doors []string
	codes []string // the codes it was given
}

func (a *fakeAuth) SignIn(ctx context.Context, user, password, code string, remote netip.Addr, door string) (bool, error) {
	a.mu.Lock()
	a.calls++
	a.doors = append(a.doors, door)
	a.codes = append(a.codes, code)
	want, known := a.pw[user]
	a.mu.Unlock()
	u, err := a.st.Get(user)
	if err != nil {
		return false, err
	}
	linked := u.State == store.StateActive
	if linked {
		err := a.st.Update(user, func(u *store.User) error {
			if u.State != store.StateActive {
				return errors.New("not linked")
			}
			if step, err := totp.Verify(u.Secret, code, a.now(), testSkew, u.LastStep); err == nil {
				u.LastStep = step
				return nil
			}
			if enroll.VerifyRecovery(u, code) {
				return nil
			}
			return errors.New("wrong code")
		})
		if err != nil {
			return true, err
		}
	}
	if !known || want != password {
		return linked, errors.New("wrong password")
	}
	return linked, nil
}

// SignInLinked is SignIn for a user who must have a linked device: one without is refused
// before the password is looked at.
func (a *fakeAuth) SignInLinked(ctx context.Context, user, password, code string, remote netip.Addr, door string) error {
	if u, err := a.st.Get(user); err != nil || u.State != store.StateActive {
		a.mu.Lock()
		a.calls++
		a.doors = append(a.doors, door)
		a.codes = append(a.codes, code)
		a.mu.Unlock()
		return errors.New("not linked")
	}
	_, err := a.SignIn(ctx, user, password, code, remote, door)
	return err
}

// Calls is the number of SignIn calls so far.
func (a *fakeAuth) Calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

// Doors are the doors SignIn was called with, in order.
func (a *fakeAuth) Doors() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.doors)
}

// Codes are the verification codes SignIn was given, in order.
func (a *fakeAuth) Codes() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.codes)
}

// countingLinker is the real enroll.Service, counting the calls the server makes.
type countingLinker struct {
	*enroll.Service
	begins, confirms atomic.Int32
}

func (l *countingLinker) Begin(ctx context.Context, user string) (enroll.Link, enroll.Binding, error) {
	l.begins.Add(1)
	return l.Service.Begin(ctx, user)
}

func (l *countingLinker) Confirm(ctx context.Context, user string, binding enroll.Binding, code string) ([]string, error) {
	l.confirms.Add(1)
	return l.Service.Confirm(ctx, user, binding, code)
}

// syncBuffer is a goroutine-safe buffer that can wait for text to appear.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the buffer holds want, or done is closed, or waitTime passed; it
// returns the buffer and whether want appeared.
func (b *syncBuffer) waitFor(want string, done <-chan struct{}) (string, bool) {
	return b.waitCount(want, 1, done)
}

// waitCount is waitFor for n occurrences of want.
func (b *syncBuffer) waitCount(want string, n int, done <-chan struct{}) (string, bool) {
	timeout := time.NewTimer(waitTime)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		s, changed := b.buf.String(), b.changed
		b.mu.Unlock()
		if strings.Count(s, want) >= n {
			return s, true
		}
		select {
		case <-changed:
		case <-done:
			s := b.String()
			return s, strings.Count(s, want) >= n
		case <-timeout.C:
			return s, false
		}
	}
}

// env is a running Server with a real enroll.Service and store.
type env struct {
	t       *testing.T
	st      store.Store
	svc     *enroll.Service
	linker  *countingLinker
	auth    *fakeAuth
	allowed atomic.Bool
	srv     *Server
	addr    string
	logs    *syncBuffer
	// refusalWaits counts the waits of refusals before the password check (instead of
	// waiting enroll.RefusalDelay).
	refusalWaits atomic.Int32

	// endMu guards ended: the calls of the server's EndSessions.
	endMu sync.Mutex
	ended []endCall

	// ahead is how far (in nanoseconds) the test's clock, now, is ahead of the real one: code
	// moves it to the next time step instead of waiting for it.
	ahead atomic.Int64
}

// now is the test's clock: the service's, the server's and the front door's (fakeAuth). It is
// the real time until code moves it ahead.
func (e *env) now() time.Time {
	return time.Now().Add(time.Duration(e.ahead.Load()))
}

// endCall is one call of Server.EndSessions.
type endCall struct {
	user string
	ssh  bool
}

// endCalls returns the calls of Server.EndSessions so far.
func (e *env) endCalls() []endCall {
	e.endMu.Lock()
	defer e.endMu.Unlock()
	return slices.Clone(e.ended)
}

// signIn asks the Authenticator whether user's password and code sign in now (using the code
// up if it does), as the front door would.
func (e *env) signIn(user, code string) error {
	_, err := e.auth.SignIn(context.Background(), user, e.auth.pw[user], code, netip.MustParseAddr("127.0.0.1"), store.DoorSSH)
	return err
}

// newEnv starts a Server on 127.0.0.1:0. configure may change the server and the service
// before the server starts.
func newEnv(t *testing.T, configure ...func(*env)) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	logs := newSyncBuffer()
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := &env{t: t, st: st, logs: logs}
	e.svc = &enroll.Service{Store: st, Issuer: "Example HPC", Skew: testSkew, ConfirmWithin: 10 * time.Minute, Log: log, Now: e.now}
	e.linker = &countingLinker{Service: e.svc}
	e.auth = &fakeAuth{st: st, now: e.now, pw: map[string]string{testUser: testPassword, "bob": "bobs password"}}
	e.allowed.Store(true)
	e.srv = &Server{
		Signers: []ssh.Signer{newSigner(t)},
		Auth:    e.auth,
		Linker:  e.linker,
		Tickets: st,
		Allowed: func(netip.Addr) bool { return e.allowed.Load() },
		Log:     log,
		Now:     e.now,
		EndSessions: func(user string, ssh bool) int {
			e.endMu.Lock()
			defer e.endMu.Unlock()
			e.ended = append(e.ended, endCall{user, ssh})
			return 0
		},
	}
	e.srv.refusalDelay = func(context.Context) { e.refusalWaits.Add(1) }
	for _, c := range configure {
		c(e)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		e.srv.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return e
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// prompt is one keyboard-interactive question the client was asked.
type prompt struct {
	text string
	echo bool
}

// dial connects and authenticates with keyboard-interactive, answering the password prompt
// with password, the ticket prompt with ticket and the code prompt with nothing (a user without
// a device). It returns the prompts asked.
func (e *env) dial(user, password, ticket string) (*ssh.Client, []prompt, error) {
	return e.dialCode(user, password, ticket, "")
}

// dialCode is dial answering the code prompt with code.
func (e *env) dialCode(user, password, ticket, code string) (*ssh.Client, []prompt, error) {
	var prompts []prompt
	answer := func(name, instruction string, questions []string, echos []bool) ([]string, error) {
		var answers []string
		for i, q := range questions {
			prompts = append(prompts, prompt{q, echos[i]})
			switch q {
			case PromptPassword:
				answers = append(answers, password)
			case PromptTicket:
				answers = append(answers, ticket)
			case PromptCode:
				answers = append(answers, code)
			default:
				return nil, fmt.Errorf("unexpected prompt %q", q)
			}
		}
		return answers, nil
	}
	c, err := ssh.Dial("tcp", e.addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.KeyboardInteractive(answer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         waitTime,
	})
	return c, prompts, err
}

// mustDial is dial for a login that must work.
func (e *env) mustDial(user, password, ticket string) *ssh.Client {
	e.t.Helper()
	return e.mustDialCode(user, password, ticket, "")
}

// mustDialCode is dialCode for a login that must work.
func (e *env) mustDialCode(user, password, ticket, code string) *ssh.Client {
	e.t.Helper()
	c, _, err := e.dialCode(user, password, ticket, code)
	if err != nil {
		e.t.Fatalf("login as %s: %v", user, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// ticket issues a ticket for user.
func (e *env) ticket(user string) string {
	e.t.Helper()
	tok, _, err := e.svc.Ticket(context.Background(), user, "test")
	if err != nil {
		e.t.Fatalf("ticket: %v", err)
	}
	return tok
}

// link links a device for user directly through the service and returns its secret and
// recovery codes.
func (e *env) link(user string) (secret string, recovery []string) {
	e.t.Helper()
	ctx := context.Background()
	l, b, err := e.svc.Begin(ctx, user)
	if err != nil {
		e.t.Fatalf("Begin: %v", err)
	}
	recovery, err = e.svc.Confirm(ctx, user, b, codeAt(e.t, l.Secret, e.now()))
	if err != nil {
		e.t.Fatalf("Confirm: %v", err)
	}
	return l.Secret, recovery
}

// code returns a code of secret that user has not used yet and that the service (testSkew)
// accepts now: the oldest step within the skew that is newer than the user's last used step.
// When all of them are used it moves the test's clock (now) to the start of the next step,
// as waiting for it would.
func (e *env) code(user, secret string) string {
	e.t.Helper()
	for {
		u, err := e.st.Get(user)
		if err != nil {
			e.t.Fatalf("Get %s: %v", user, err)
		}
		now := e.now()
		step := uint64(now.Unix() / 30)
		for d := -testSkew; d <= testSkew; d++ {
			if s := step + uint64(d); s > u.LastStep {
				// The oldest step in the window leaves the skew soon: take it only early on.
				if d == -testSkew && now.Unix()%30 > 20 {
					continue
				}
				return codeAt(e.t, secret, time.Unix(int64(s)*30, 0))
			}
		}
		next := time.Unix(int64(step+1)*30, 0)
		e.ahead.Add(int64(next.Sub(now)))
	}
}

// clientSession is one session channel driven by the in-process client.
type clientSession struct {
	t     *testing.T
	sess  *ssh.Session
	stdin io.WriteCloser
	out   *syncBuffer // stdout and stderr
	done  chan struct{}
	err   error // Wait's result, after done
}

// startSession opens a session, with a pty if pty, and starts a shell (command "") or command.
func startSession(t *testing.T, c *ssh.Client, pty bool, command string) *clientSession {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	cs := &clientSession{t: t, sess: sess, out: newSyncBuffer(), done: make(chan struct{})}
	sess.Stdout, sess.Stderr = cs.out, cs.out
	if cs.stdin, err = sess.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if pty {
		if err := sess.RequestPty("xterm", 40, 100, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
			t.Fatalf("RequestPty: %v", err)
		}
	}
	if command == "" {
		err = sess.Shell()
	} else {
		err = sess.Start(command)
	}
	if err != nil {
		t.Fatalf("starting the session: %v", err)
	}
	go func() {
		cs.err = sess.Wait()
		close(cs.done)
	}()
	t.Cleanup(func() { sess.Close() })
	return cs
}

// waitFor waits for want in the output and returns the output so far.
func (cs *clientSession) waitFor(want string) string {
	cs.t.Helper()
	return cs.waitCount(want, 1)
}

// waitCount waits for n occurrences of want in the output and returns the output so far.
func (cs *clientSession) waitCount(want string, n int) string {
	cs.t.Helper()
	out, ok := cs.out.waitCount(want, n, cs.done)
	if !ok {
		cs.t.Fatalf("no %d× %q in the output:\n%s", n, want, out)
	}
	return out
}

func (cs *clientSession) write(s string) {
	cs.t.Helper()
	if _, err := io.WriteString(cs.stdin, s); err != nil {
		cs.t.Fatalf("writing %q: %v", s, err)
	}
}

// wait waits for the session to end and returns its exit status and whole output.
func (cs *clientSession) wait() (int, string) {
	cs.t.Helper()
	select {
	case <-cs.done:
	case <-time.After(waitTime):
		cs.t.Fatalf("the session did not end; output:\n%s", cs.out.String())
	}
	return exitStatus(cs.t, cs.err), cs.out.String()
}

func exitStatus(t *testing.T, err error) int {
	t.Helper()
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitStatus()
	default:
		t.Fatalf("session ended without an exit status: %v", err)
		return -1
	}
}

var uriLine = regexp.MustCompile(`otpauth URI: (\S+)`)

// secretFrom finds the otpauth URI in the output and returns its base32 secret.
func secretFrom(t *testing.T, out string) string {
	t.Helper()
	m := uriLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no otpauth URI in the output:\n%s", out)
	}
	u, err := url.Parse(strings.TrimSpace(m[1]))
	if err != nil {
		t.Fatalf("otpauth URI %q: %v", m[1], err)
	}
	s := u.Query().Get("secret")
	if s == "" {
		t.Fatalf("otpauth URI %q has no secret", m[1])
	}
	return s
}

// codeAt computes the RFC 6238 code of a base32 secret at time at, independently of the
// packages under test.
func codeAt(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil {
		t.Fatalf("secret %q: %v", secret, err)
	}
	mac := hmac.New(sha1.New, key)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(at.Unix()/30))
	mac.Write(msg[:])
	h := mac.Sum(nil)
	off := h[len(h)-1] & 0x0f
	v := binary.BigEndian.Uint32(h[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", v%1_000_000)
}

// hasLinkDay reports whether out holds before+DAY+after, DAY being the day, as the server writes
// it, of a link made between from and to: either end's, so that a test crossing midnight
// still matches.
func hasLinkDay(out, before, after string, from, to time.Time) bool {
	for _, at := range []time.Time{from, to} {
		if strings.Contains(out, before+at.Local().Format("2 January 2006")+after) {
			return true
		}
	}
	return false
}

// wrongCode returns a well-formed code that matches none of the steps around now.
func wrongCode(t *testing.T, secret string) string {
	t.Helper()
	now := time.Now()
	valid := map[string]bool{}
	for d := -testSkew - 1; d <= testSkew+1; d++ {
		valid[codeAt(t, secret, now.Add(time.Duration(d)*30*time.Second))] = true
	}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", (123456+i*7919)%1_000_000)
		if !valid[c] {
			return c
		}
	}
}

var recoveryLine = regexp.MustCompile(`(?m)^    [a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{2}\r?$`)

// requireTool returns the path of an external program the test needs. Locally a missing tool
// skips the test; in CI (CI=true) it fails it, so that a broken install cannot hide.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed: %v", name, err)
		}
		t.Skipf("%s is not installed: %v", name, err)
	}
	return p
}

func (e *env) state(user string) store.State {
	e.t.Helper()
	u, err := e.st.Get(user)
	if err != nil {
		e.t.Fatalf("Get %s: %v", user, err)
	}
	return u.State
}
