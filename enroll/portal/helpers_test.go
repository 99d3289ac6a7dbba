package portal

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/bolt"
	"gatekeeper/gatekeeper/totp"
)

// t0 is the fake clock's start, in the middle of a 30 s step.
var t0 = time.Date(2026, 11, 23, 10, 0, 15, 0, time.UTC)

// fakeClock is a settable clock, safe for the concurrent handlers of a real server.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// The daemon wires the real types: enroll.Service is the Linker, the CredentialChanger and the
// SecurityLogReader, the store holds the tickets.
var (
	_ Linker            = (*enroll.Service)(nil)
	_ CredentialChanger = (*enroll.Service)(nil)
	_ SecurityLogReader = (*enroll.Service)(nil)
	_ Tickets           = (store.Store)(nil)
)

// fakeAuth is the front door's SignIn, for the tests: the passwords in its map and, once the
// user's device is active in the store, a code of its secret (one-use: the step is recorded,
// as the daemon does) or one of its recovery codes (package enroll's check), checked before the
// password. It writes login_ok and login_refused events with the client address and the portal
// door to the store's audit log, as the daemon does, and counts the calls.
type fakeAuth struct {
	st  store.Store
	now func() time.Time

	mu    sync.Mutex
	ok    map[string]string
	calls int
}

var (
	errWrongPassword = errors.New("wrong password")
	errWrongCode     = errors.New("wrong code")
)

func (a *fakeAuth) SignIn(ctx context.Context, user, password, code string, remote netip.Addr, door string) (bool, error) {
	a.mu.Lock()
	a.calls++
	want, known := a.ok[user]
	a.mu.Unlock()
	refuse := func(reason string, err error) error {
		a.st.Append(store.Event{Kind: store.EventLoginRefused, User: user, Remote: remote.String(), Door: door, Reason: reason})
		return err
	}
	u, err := a.st.Get(user)
	if err != nil {
		return false, err
	}
	linked := u.State == store.StateActive
	if linked {
		// The code first, and spent even when the password then fails, as at the front door.
		err := a.st.Update(user, func(u *store.User) error {
			if step, err := totp.Verify(u.Secret, code, a.now(), 1, u.LastStep); err == nil {
				u.LastStep = step
				return nil
			}
			if enroll.VerifyRecovery(u, code) {
				return nil
			}
			return errWrongCode
		})
		if err != nil {
			return linked, refuse("wrong_code", err)
		}
	}
	if !known || want != password {
		return linked, refuse("wrong_password", errWrongPassword)
	}
	a.st.Append(store.Event{Kind: store.EventLoginOK, User: user, Remote: remote.String(), Door: door})
	return linked, nil
}

// SignInLinked is SignIn for a user who must have a linked device: one without is refused
// before the password is looked at.
func (a *fakeAuth) SignInLinked(ctx context.Context, user, password, code string, remote netip.Addr, door string) error {
	if u, err := a.st.Get(user); err != nil || u.State != store.StateActive {
		a.mu.Lock()
		a.calls++
		a.mu.Unlock()
		a.st.Append(store.Event{Kind: store.EventLoginRefused, User: user, Remote: remote.String(), Door: door, Reason: "not_linked"})
		return errWrongCode
	}
	_, err := a.SignIn(ctx, user, password, code, remote, door)
	return err
}

func (a *fakeAuth) Calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

// fakeTickets holds one-time tickets: token → user, with expiry.
type fakeTickets struct {
	mu      sync.Mutex
	tickets map[string]fakeTicket
}

type fakeTicket struct {
	user    string
	expires time.Time
}

var errNoTicket = errors.New("no such ticket")

func (f *fakeTickets) add(user, token string, expires time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tickets == nil {
		f.tickets = make(map[string]fakeTicket)
	}
	f.tickets[token] = fakeTicket{user, expires}
}

func (f *fakeTickets) CheckTicket(user, token string, now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tickets[token]
	if !ok || t.user != user || !now.Before(t.expires) {
		return errNoTicket
	}
	return nil
}

func (f *fakeTickets) UseTicket(user, token string, now time.Time) error {
	if err := f.CheckTicket(user, token, now); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tickets, token)
	return nil
}

func (f *fakeTickets) has(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.tickets[token]
	return ok
}

// env is one portal under test with its fakes.
type env struct {
	srv     *Server
	clock   *fakeClock
	auth    *fakeAuth
	tickets *fakeTickets
	svc     *enroll.Service
	allowed bool
	mu      sync.Mutex
	// sshEnded lists the users whose SSH sessions EndSSH was asked to end.
	sshEnded []string
	// refusalWaits counts the waits of refusals before the password check (instead of
	// waiting enroll.RefusalDelay).
	refusalWaits atomic.Int32
}

const (
	testUser     = "alice"
	testPassword = "correct horse"
	testIssuer   = "Example HPC"
)

// newEnv builds a portal on a real enroll.Service with a store in t.TempDir(). clock nil means
// the real time (for the browser test, where oathtool computes the codes).
func newEnv(t *testing.T, clock *fakeClock) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{
		clock:   clock,
		tickets: &fakeTickets{},
		allowed: true,
	}
	now := time.Now
	if clock != nil {
		now = clock.Now
	}
	e.auth = &fakeAuth{st: st, now: now, ok: map[string]string{testUser: testPassword, "bob": "bobs password"}}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.svc = &enroll.Service{Store: st, Issuer: testIssuer, Skew: 1, ConfirmWithin: 10 * time.Minute, Now: now, Log: log}
	e.srv = &Server{
		Auth:          e.auth,
		SecurityLog:   e.svc,
		Credentials:   e.svc,
		EndSSH:        e.endSSH,
		Linker:        e.svc,
		Tickets:       e.tickets,
		Allowed:       e.isAllowed,
		Issuer:        testIssuer,
		ConfirmWithin: 10 * time.Minute,
		Log:           log,
		Now:           now,
	}
	e.srv.refusalDelay = func(context.Context) { e.refusalWaits.Add(1) }
	return e
}

// endSSH stands in for the front door's KillUser: it records the call and reports 2 sessions.
func (e *env) endSSH(user string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sshEnded = append(e.sshEnded, user)
	return 2
}

func (e *env) sshEndedFor() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.sshEnded...)
}

func (e *env) isAllowed(netip.Addr) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.allowed
}

func (e *env) setAllowed(v bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.allowed = v
}

// testWriter sends log lines to t.Log, so they show only for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// client is a minimal browser for the handler: it keeps the session cookie and the last CSRF
// token it saw.
type client struct {
	t      *testing.T
	h      http.Handler
	cookie string // gk_session value, "" = none
	csrf   string
	remote string
}

func (e *env) client(t *testing.T) *client {
	return &client{t: t, h: e.srv.Handler(), remote: "192.0.2.10:40000"}
}

// response is what a request returned.
type response struct {
	status int
	header http.Header
	body   string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]*)"`)

func (c *client) do(req *http.Request) response {
	c.t.Helper()
	req.RemoteAddr = c.remote
	if c.cookie != "" {
		req.AddCookie(&http.Cookie{Name: cookieName, Value: c.cookie})
	}
	rec := httptest.NewRecorder()
	c.h.ServeHTTP(rec, req)
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	for _, ck := range res.Cookies() {
		if ck.Name != cookieName {
			continue
		}
		if ck.MaxAge < 0 || ck.Value == "" {
			c.cookie = ""
		} else {
			c.cookie = ck.Value
		}
	}
	if m := csrfField.FindStringSubmatch(string(body)); m != nil {
		c.csrf = html.UnescapeString(m[1])
	}
	return response{status: res.StatusCode, header: res.Header, body: string(body)}
}

func (c *client) get(path string) response {
	c.t.Helper()
	return c.do(httptest.NewRequest(http.MethodGet, path, nil))
}

// post sends form plus the client's CSRF token (unless form sets "csrf" itself).
func (c *client) post(path string, form url.Values) response {
	c.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", c.csrf)
	}
	return c.postRaw(path, "application/x-www-form-urlencoded", form.Encode())
}

func (c *client) postRaw(path, contentType, body string) response {
	c.t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return c.do(req)
}

// follow GETs the Location of a redirect.
func (c *client) follow(r response) response {
	c.t.Helper()
	if r.status != http.StatusSeeOther {
		c.t.Fatalf("status %d, want 303 See Other; body:\n%s", r.status, r.body)
	}
	return c.get(r.header.Get("Location"))
}

// signIn signs in as user from the start page and returns the account page.
func (c *client) signIn(user, password string) response {
	c.t.Helper()
	return c.signInCode(user, password, "")
}

// signInCode signs in as user with a code (from the app, or a recovery code) and returns the
// account page.
func (c *client) signInCode(user, password, code string) response {
	c.t.Helper()
	c.get("/")
	r := c.post("/signin", url.Values{"username": {user}, "password": {password}, "code": {code}})
	return c.follow(r)
}

// startLink goes from the account page through the intro and Continue to the QR page.
func (c *client) startLink() response {
	c.t.Helper()
	if r := c.get("/link"); r.status != http.StatusOK || !strings.Contains(r.body, "shown only once") {
		c.t.Fatalf("GET /link: status %d, body:\n%s", r.status, r.body)
	}
	r := c.post("/link/start", nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/link/qr" {
		c.t.Fatalf("POST /link/start: status %d Location %q, body:\n%s", r.status, r.header.Get("Location"), r.body)
	}
	return c.get("/link/qr")
}

var secretOnPage = regexp.MustCompile(`<p class="secret"><code>([A-Z2-7 ]+)</code></p>`)

// pageSecret returns the secret shown on a QR page.
func pageSecret(t *testing.T, body string) []byte {
	t.Helper()
	m := secretOnPage.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no secret on the page:\n%s", body)
	}
	b, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ReplaceAll(m[1], " ", ""))
	if err != nil {
		t.Fatalf("secret %q: %v", m[1], err)
	}
	return b
}

// codeAt computes the RFC 6238 code of secret at time at, independently of package totp.
func codeAt(secret []byte, at time.Time) string {
	mac := hmac.New(sha1.New, secret)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(at.Unix()/30))
	mac.Write(msg[:])
	h := mac.Sum(nil)
	off := h[len(h)-1] & 0x0f
	v := binary.BigEndian.Uint32(h[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", v%1_000_000)
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }
