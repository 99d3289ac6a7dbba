package portal

import (
	"bufio"
	"fmt"
	"gatekeeper/gatekeeper/connserve"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// wrongCodeAt returns a well-formed code that matches none of secret's steps within ±1 of at.
func wrongCodeAt(secret []byte, at time.Time) string {
	valid := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		valid[codeAt(secret, at.Add(d))] = true
	}
	for i := 0; ; i++ {
		if c := fmt.Sprintf("%06d", (123456+i*7919)%1_000_000); !valid[c] {
			return c
		}
	}
}

// auditKinds is user's audit log as kinds, oldest first.
func auditKinds(t *testing.T, e *env, user string) []string {
	t.Helper()
	ev, err := e.svc.Store.Events(store.EventQuery{User: user})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, x := range ev {
		kinds = append(kinds, x.Kind)
	}
	return kinds
}

func countOf(list []string, want string) int {
	n := 0
	for _, s := range list {
		if s == want {
			n++
		}
	}
	return n
}

// TestWrongCodesVoidLink: the store checks enroll.MaxConfirmTries codes; the next attempt, even
// with a valid code, cancels the link with the clear message, and the user starts again with a
// new secret, still signed in.
func TestWrongCodesVoidLink(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	c := e.client(t)
	c.signIn(testUser, testPassword)
	secret := pageSecret(t, c.startLink().body)
	wrong := wrongCodeAt(secret, t0)
	for i := 1; i <= enroll.MaxConfirmTries; i++ {
		r := c.post("/link/confirm", url.Values{"code": {wrong}})
		if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "That code did not match") {
			t.Fatalf("wrong code %d: status %d, body:\n%s", i, r.status, r.body)
		}
		if u, _ := e.svc.Store.Get(testUser); u.ConfirmTries != i {
			t.Fatalf("after wrong code %d the store counts %d", i, u.ConfirmTries)
		}
	}
	r := c.post("/link/confirm", url.Values{"code": {codeAt(secret, t0)}})
	if r.status != http.StatusConflict || !strings.Contains(r.body, "Too many wrong codes: this link was cancelled; start again.") ||
		!strings.Contains(r.body, "No phone linked yet") {
		t.Fatalf("attempt %d: status %d, body:\n%s", enroll.MaxConfirmTries+1, r.status, r.body)
	}
	if u, _ := e.svc.Store.Get(testUser); u.State != store.StateNone {
		t.Errorf("state %s after the void, want none", u.State)
	}
	if n := countOf(auditKinds(t, e, testUser), enroll.EventLinkVoided); n != 1 {
		t.Errorf("%d %s events, want 1", n, enroll.EventLinkVoided)
	}
	again := pageSecret(t, c.startLink().body)
	if string(again) == string(secret) {
		t.Error("the new link shows the voided secret")
	}
	c.follow(c.post("/link/confirm", url.Values{"code": {codeAt(again, t0)}}))
	if u, _ := e.svc.Store.Get(testUser); u.State != store.StateActive {
		t.Errorf("state %s, want active", u.State)
	}
}

// TestConcurrentWrongCodes: 50 wrong codes posted at once from the session that started the
// link: exactly enroll.MaxConfirmTries are checked and one attempt voids the link.
func TestConcurrentWrongCodes(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	c := e.client(t)
	c.signIn(testUser, testPassword)
	secret := pageSecret(t, c.startLink().body)
	c.get("/") // the page after the QR page renews the session id; use the new one
	body := url.Values{"code": {wrongCodeAt(secret, t0)}, "csrf": {c.csrf}}.Encode()
	const n = 50
	statuses := make([]int, n)
	bodies := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := httptest.NewRequest(http.MethodPost, "/link/confirm", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.RemoteAddr = c.remote
			req.AddCookie(&http.Cookie{Name: cookieName, Value: c.cookie})
			rec := httptest.NewRecorder()
			e.srv.Handler().ServeHTTP(rec, req)
			statuses[i], bodies[i] = rec.Code, rec.Body.String()
		})
	}
	wg.Wait()
	checked, voided := 0, 0
	for i := range n {
		switch {
		case statuses[i] == http.StatusUnprocessableEntity:
			checked++
		case strings.Contains(bodies[i], "Too many wrong codes"):
			voided++
		case statuses[i] != http.StatusConflict:
			t.Errorf("unexpected answer %d:\n%s", statuses[i], bodies[i])
		}
	}
	if checked != enroll.MaxConfirmTries || voided != 1 {
		t.Errorf("%d codes checked, %d voids; want %d and 1", checked, voided, enroll.MaxConfirmTries)
	}
	if n := countOf(auditKinds(t, e, testUser), enroll.EventLinkVoided); n != 1 {
		t.Errorf("%d %s events, want 1", n, enroll.EventLinkVoided)
	}
}

// TestConfirmBoundToSession: a link started in one session cannot be confirmed from another
// session of the same user (another browser, or after signing in again), even with a valid
// code; nothing is counted, and the recovery codes go to the session that started it.
func TestConfirmBoundToSession(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	a := e.client(t)
	a.signIn(testUser, testPassword)
	secret := pageSecret(t, a.startLink().body)
	good := codeAt(secret, t0)

	b := e.client(t)
	acc := b.signIn(testUser, testPassword)
	if strings.Contains(acc.body, `action="/link/confirm"`) || !strings.Contains(acc.body, "started in another browser or session") {
		t.Errorf("another session's account page offers the code form or does not explain:\n%s", acc.body)
	}
	r := b.post("/link/confirm", url.Values{"code": {good}})
	if r.status != http.StatusConflict || strings.Contains(r.body, "recovery codes") {
		t.Errorf("confirming from another session: status %d, body:\n%s", r.status, r.body)
	}
	if u, _ := e.svc.Store.Get(testUser); u.State != store.StatePending || u.ConfirmTries != 0 {
		t.Errorf("after the other session's try: state %s, %d tries; want pending, 0", u.State, u.ConfirmTries)
	}
	done := a.follow(a.post("/link/confirm", url.Values{"code": {good}}))
	if !strings.Contains(done.body, "Your recovery codes") {
		t.Errorf("the session that started the link gets no recovery codes:\n%s", done.body)
	}
	if r := b.get("/link/done"); strings.Contains(r.body, "Your recovery codes") {
		t.Error("the other session sees the recovery codes")
	}
}

// TestSessionLifetime: however busy, a session ends MaxLifetime after it began.
func TestSessionLifetime(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	step := IdleTimeout / 2 // never idle
	var elapsed time.Duration
	for elapsed+step < MaxLifetime {
		clock.Advance(step)
		elapsed += step
		if r := c.get("/"); !strings.Contains(r.body, "Your account") {
			t.Fatalf("signed out after %s of use", elapsed)
		}
	}
	clock.Advance(MaxLifetime - elapsed)
	if r := c.get("/"); !strings.Contains(r.body, `action="/signin"`) {
		t.Errorf("still signed in after %s:\n%s", MaxLifetime, r.body)
	}
}

// TestSessionsPerUser: a user may hold MaxSessionsPerUser signed-in sessions; a further sign-in
// is refused with a clear message until one ends. Other users are not affected.
func TestSessionsPerUser(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	var clients []*client
	for range MaxSessionsPerUser {
		c := e.client(t)
		if r := c.signIn(testUser, testPassword); !strings.Contains(r.body, "Your account") {
			t.Fatalf("sign-in %d refused:\n%s", len(clients)+1, r.body)
		}
		clients = append(clients, c)
	}
	extra := e.client(t)
	extra.get("/")
	r := extra.post("/signin", url.Values{"username": {testUser}, "password": {testPassword}})
	want := fmt.Sprintf(msgTooMany, MaxSessionsPerUser, 15)
	if r.status != http.StatusTooManyRequests || !strings.Contains(r.body, want) {
		t.Fatalf("sign-in %d: status %d, body:\n%s", MaxSessionsPerUser+1, r.status, r.body)
	}
	if r := e.client(t).signIn("bob", "bobs password"); !strings.Contains(r.body, "Your account") {
		t.Error("another user's sign-in was refused")
	}
	clients[0].post("/signout", nil)
	if r := extra.signIn(testUser, testPassword); !strings.Contains(r.body, "Your account") {
		t.Errorf("sign-in after a sign-out refused:\n%s", r.body)
	}
}

// TestEndUser: an admin reset ends every portal session of the user (and the binding of a link
// started in one), and no other user's.
func TestEndUser(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	a1, a2, b := e.client(t), e.client(t), e.client(t)
	a1.signIn(testUser, testPassword)
	a2.signIn(testUser, testPassword)
	b.signIn("bob", "bobs password")
	secret := pageSecret(t, a1.startLink().body)
	csrf := a1.csrf
	if n := e.srv.EndUser(testUser); n != 2 {
		t.Errorf("EndUser = %d, want 2", n)
	}
	for i, c := range []*client{a1, a2} {
		if r := c.get("/"); !strings.Contains(r.body, `action="/signin"`) {
			t.Errorf("alice's session %d still signed in", i+1)
		}
	}
	r := a1.post("/link/confirm", url.Values{"code": {codeAt(secret, t0)}, "csrf": {csrf}})
	if r.status != http.StatusForbidden {
		t.Errorf("confirming from an ended session: status %d", r.status)
	}
	if r := b.get("/"); !strings.Contains(r.body, "Your account") {
		t.Error("bob was signed out")
	}
	if n := e.srv.EndUser(testUser); n != 0 {
		t.Errorf("second EndUser = %d, want 0", n)
	}
}

// TestSessionRotatedAfterQR: the first page request after the QR page gets a new session id and
// Clear-Site-Data: "cache"; the old id is dead. The style sheet the QR page loads does not
// count, and later pages are not rotated again.
func TestSessionRotatedAfterQR(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	c := e.client(t)
	c.signIn(testUser, testPassword)
	before := c.cookie
	qr := c.startLink()
	if qr.header.Get("Clear-Site-Data") != "" || c.cookie != before {
		t.Error("the QR page itself changed the session id or cleared the cache")
	}
	if r := c.get(staticPath); len(r.header.Values("Set-Cookie")) != 0 || r.header.Get("Clear-Site-Data") != "" {
		t.Error("the style sheet rotated the session")
	}
	old := c.cookie
	next := c.get("/")
	if c.cookie == old || c.cookie == "" || next.header.Get("Clear-Site-Data") != `"cache"` {
		t.Fatalf("the page after the QR page: cookie changed %v, Clear-Site-Data %q",
			c.cookie != old, next.header.Get("Clear-Site-Data"))
	}
	if !strings.Contains(next.body, "Linking started but not finished") || !strings.Contains(next.body, `action="/link/confirm"`) {
		t.Errorf("the rotated session lost its state:\n%s", next.body)
	}
	renewed := c.cookie
	if r := c.get("/"); c.cookie != renewed || r.header.Get("Clear-Site-Data") != "" {
		t.Error("a later page rotated again")
	}
	stale := &client{t: t, h: e.srv.Handler(), remote: c.remote, cookie: old}
	if r := stale.get("/"); !strings.Contains(r.body, `action="/signin"`) {
		t.Error("the old session id still works")
	}
	// The rotated session still confirms its link.
	c.follow(c.post("/link/confirm", url.Values{"code": {codeAt(pageSecret(t, qr.body), t0)}}))
	if u, _ := e.svc.Store.Get(testUser); u.State != store.StateActive {
		t.Errorf("state %s, want active", u.State)
	}
}

// TestHTTPServerLimits: the served portal has the timeouts and header limit that keep slow or
// idle clients from holding connections.
func TestHTTPServerLimits(t *testing.T) {
	srv := (&Server{}).httpServer()
	tests := []struct {
		name string
		got  time.Duration
		min  time.Duration
		max  time.Duration
	}{
		{"ReadHeaderTimeout", srv.ReadHeaderTimeout, time.Second, 15 * time.Second},
		{"ReadTimeout", srv.ReadTimeout, time.Second, time.Minute},
		{"WriteTimeout", srv.WriteTimeout, time.Second, time.Minute},
		{"IdleTimeout", srv.IdleTimeout, time.Second, 2 * time.Minute},
	}
	for _, tt := range tests {
		if tt.got < tt.min || tt.got > tt.max {
			t.Errorf("%s = %s, want %s to %s", tt.name, tt.got, tt.min, tt.max)
		}
	}
	if srv.MaxHeaderBytes != MaxHeaderBytes {
		t.Errorf("MaxHeaderBytes = %d, want %d", srv.MaxHeaderBytes, MaxHeaderBytes)
	}
}

// TestSourceGrouping: connections count per IPv4 address and per IPv6 /64, IPv4-mapped
// addresses as IPv4.
func TestSourceGrouping(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1:1000", "192.0.2.1:2000", true},
		{"192.0.2.1:1000", "192.0.2.2:1000", false},
		{"[::ffff:192.0.2.1]:1000", "192.0.2.1:2000", true},
		{"[2001:db8:1:2::1]:1000", "[2001:db8:1:2:ffff:ffff:ffff:ffff]:2000", true},
		{"[2001:db8:1:2::1]:1000", "[2001:db8:1:3::1]:1000", false},
		{"[fe80::1%eth0]:1000", "[fe80::2%eth1]:1000", true},
	}
	for _, tt := range tests {
		l := newSourceLimitListener(nil, connserve.Limits{PerAddress: 1, PerNetwork: 2, Max: 2, DropStart: 2}, nil, slog.New(slog.DiscardHandler))
		a, b := sourceOf(tcpAddr(t, tt.a)), sourceOf(tcpAddr(t, tt.b))
		if _, why := l.adm.Enter(a, false); why != "" || !a.IsValid() {
			t.Fatalf("%s: %q", tt.a, why)
		}
		_, why := l.adm.Enter(b, false)
		if same := why == connserve.RefusedPerAddress; same != tt.same {
			t.Errorf("%s then %s: refused %q; same source %v, want %v", tt.a, tt.b, why, same, tt.same)
		}
	}
}

func tcpAddr(t *testing.T, s string) *net.TCPAddr {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return net.TCPAddrFromAddrPort(ap)
}

// TestConnectionsPerSource: one source gets maxConnsPerSource connections at a time; the next
// is closed at once, before the server reads from it, and its slot comes back when one closes.
func TestConnectionsPerSource(t *testing.T) {
	e := newEnv(t, nil)
	e.srv.maxConnsPerSource = 3
	// Outside the allowed networks: from there (a campus NAT) the per-source cap does not apply.
	e.srv.Allowed = func(netip.Addr) bool { return false }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		e.srv.Shutdown(t.Context())
		<-served
	})
	addr := ln.Addr().String()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// get sends one request on c and reports whether an answer came.
	get := func(c net.Conn) bool {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: portal\r\n\r\n"); err != nil {
			return false
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}
	held := []net.Conn{dial(), dial(), dial()}
	for i, c := range held {
		if !get(c) {
			t.Fatalf("connection %d within the cap got no answer", i+1)
		}
	}
	if get(dial()) {
		t.Fatal("a connection over the cap was served")
	}
	held[0].Close()
	// The slot comes back once the server has seen the close; wait for that, not for a time.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := dial()
		ok := get(c)
		c.Close()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed connection never came back")
		}
	}
}
