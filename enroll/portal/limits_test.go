package portal

import (
	"fmt"
	"net/http"
	"net/http/httptest"
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
