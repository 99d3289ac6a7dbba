package portal

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"html"
	"image/png"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// securityHeaders must be on every response.
var securityHeaders = map[string]string{
	"Cache-Control":           "no-store",
	"Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	"X-Frame-Options":         "DENY",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
}

func checkHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	for k, want := range securityHeaders {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %s = %q, want %q", what, k, got, want)
		}
	}
}

func TestHeadersOnEveryResponse(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	signedIn := e.client(t)
	signedIn.signIn(testUser, testPassword)

	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		header     map[string]string
		wantStatus int
	}{
		{name: "start page", method: "GET", path: "/", wantStatus: 200},
		{name: "style sheet", method: "GET", path: "/static/style.css", wantStatus: 200},
		{name: "unknown page", method: "GET", path: "/admin", wantStatus: 404},
		{name: "path traversal", method: "GET", path: "/static/../portal.go", wantStatus: 404},
		{name: "PUT", method: "PUT", path: "/", wantStatus: 405},
		{name: "HEAD", method: "HEAD", path: "/", wantStatus: 405},
		{name: "GET of a form target", method: "GET", path: "/signin", wantStatus: 405},
		{name: "POST without CSRF", method: "POST", path: "/signin", body: "username=a&password=b", wantStatus: 403},
		{name: "cross-site POST", method: "POST", path: "/signin", body: "username=a", header: map[string]string{"Sec-Fetch-Site": "cross-site"}, wantStatus: 403},
		{name: "oversized POST", method: "POST", path: "/signin", body: "username=" + strings.Repeat("a", MaxBodyBytes), wantStatus: 413},
		{name: "bad form encoding", method: "POST", path: "/signin", body: "username=%zz", wantStatus: 400},
		{name: "QR page without session", method: "GET", path: "/link/qr", wantStatus: 303},
		{name: "account page", method: "GET", path: "/", header: map[string]string{"Cookie": cookieName + "=" + signedIn.cookie}, wantStatus: 200},
		{name: "intro page", method: "GET", path: "/link", header: map[string]string{"Cookie": cookieName + "=" + signedIn.cookie}, wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://portal.test"+tt.path, strings.NewReader(tt.body))
			if tt.body != "" {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			req.RemoteAddr = "192.0.2.10:40000"
			rec := newRecorder()
			e.srv.Handler().ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Errorf("status %d, want %d; body:\n%s", rec.Code, tt.wantStatus, rec.Body)
			}
			checkHeaders(t, tt.name, rec.Header())
			if tt.wantStatus == 405 && rec.Header().Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
}

func TestCookieFlags(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			e := newEnv(t, &fakeClock{t: t0})
			e.srv.Secure = secure
			c := e.client(t)
			check := func(what string, h http.Header) string {
				t.Helper()
				var found *http.Cookie
				for _, ck := range (&http.Response{Header: h}).Cookies() {
					if ck.Name == cookieName {
						found = ck
					}
				}
				if found == nil {
					t.Fatalf("%s: no %s cookie set", what, cookieName)
				}
				if !found.HttpOnly || found.SameSite != http.SameSiteStrictMode || found.Path != "/" || found.Secure != secure {
					t.Errorf("%s: cookie %q: HttpOnly %v SameSite %v Path %q Secure %v; want HttpOnly, Strict, /, Secure %v",
						what, found.Raw, found.HttpOnly, found.SameSite, found.Path, found.Secure, secure)
				}
				if found.MaxAge > 0 || !found.Expires.IsZero() {
					t.Errorf("%s: cookie %q outlives the browser session", what, found.Raw)
				}
				return found.Value
			}
			r := c.get("/")
			visitor := check("start page", r.header)
			if hsts := r.header.Get("Strict-Transport-Security"); (hsts != "") != secure {
				t.Errorf("Strict-Transport-Security = %q with Secure %v", hsts, secure)
			}
			r = c.post("/signin", url.Values{"username": {testUser}, "password": {testPassword}})
			member := check("sign-in", r.header)
			if member == visitor {
				t.Error("sign-in kept the visitor's session id; it must get a new one")
			}
			// The visitor's id is worth nothing after sign-in.
			old := &client{t: t, h: e.srv.Handler(), remote: c.remote, cookie: visitor}
			if r := old.get("/"); !strings.Contains(r.body, `action="/signin"`) {
				t.Errorf("the pre-sign-in session id still works:\n%s", r.body)
			}
		})
	}
}

func TestCSRF(t *testing.T) {
	type tamper func(c *client, form url.Values)
	noToken := func(c *client, form url.Values) { form.Del("csrf") }
	tests := []struct {
		name   string
		path   string
		form   url.Values
		tamper tamper
	}{
		{name: "sign-in without token", path: "/signin", form: url.Values{"username": {testUser}, "password": {testPassword}}, tamper: noToken},
		{name: "sign-in with wrong token", path: "/signin", form: url.Values{"username": {testUser}, "password": {testPassword}, "csrf": {"x"}}},
		{name: "sign-in with empty token", path: "/signin", form: url.Values{"username": {testUser}, "password": {testPassword}, "csrf": {""}}},
		{name: "start link without token", path: "/link/start", tamper: noToken},
		{name: "start link with wrong token", path: "/link/start", form: url.Values{"csrf": {"AAAAAAAAAAAAAAAAAAAAAAAAAA"}}},
		{name: "start link with another session's token", path: "/link/start", tamper: func(c *client, form url.Values) {
			other := &client{t: c.t, h: c.h, remote: c.remote}
			other.get("/")
			form.Set("csrf", other.csrf)
		}},
		{name: "start link with the token but no cookie", path: "/link/start", tamper: func(c *client, form url.Values) {
			form.Set("csrf", c.csrf)
			c.cookie = ""
		}},
		{name: "confirm without token", path: "/link/confirm", form: url.Values{"code": {"123456"}}, tamper: noToken},
		{name: "sign-out without token", path: "/signout", tamper: noToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, &fakeClock{t: t0})
			c := e.client(t)
			if tt.path == "/signin" {
				c.get("/")
			} else {
				c.signIn(testUser, testPassword)
			}
			calls := e.auth.Calls()
			form := url.Values{}
			for k, v := range tt.form {
				form[k] = v
			}
			if _, ok := form["csrf"]; !ok {
				form.Set("csrf", c.csrf)
			}
			if tt.tamper != nil {
				tt.tamper(c, form)
			}
			r := c.postRaw(tt.path, "application/x-www-form-urlencoded", form.Encode())
			if r.status != http.StatusForbidden || !strings.Contains(r.body, "This form has expired") {
				t.Fatalf("status %d, want 403 with an explanation; body:\n%s", r.status, r.body)
			}
			if e.auth.Calls() != calls {
				t.Error("the password was checked for a forged form")
			}
			if u, _ := e.svc.Store.Get(testUser); u.State != store.StateNone {
				t.Errorf("a forged form changed the link state to %s", u.State)
			}
		})
	}
}

var imgSrc = regexp.MustCompile(`<img src="([^"]*)"`)

func TestLinkFlowShowsSecretOnce(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)

	r := c.signIn(testUser, testPassword)
	for _, want := range []string{"No phone linked yet", `href="/link"`, "Link your mobile device", "Signed in as <strong>alice</strong>"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("account page does not show %q:\n%s", want, r.body)
		}
	}
	intro := c.get("/link")
	for _, want := range []string{"Google Authenticator", "Microsoft Authenticator", "FreeOTP", "Aegis", "shown only once", "10 minutes", `action="/link/start"`} {
		if !strings.Contains(intro.body, want) {
			t.Errorf("intro page does not say %q", want)
		}
	}
	if strings.Contains(intro.body, "data:image") {
		t.Error("the intro page already shows a QR code")
	}

	qr := c.startLink()
	if qr.status != http.StatusOK {
		t.Fatalf("QR page: status %d", qr.status)
	}
	secret := pageSecret(t, qr.body)
	m := imgSrc.FindStringSubmatch(qr.body)
	src, ok := strings.CutPrefix(html.UnescapeString(m[1]), "data:image/png;base64,")
	if m == nil || !ok {
		t.Fatalf("no inline PNG on the QR page:\n%s", qr.body)
	}
	raw, err := base64.StdEncoding.DecodeString(src)
	if err != nil {
		t.Fatalf("QR data URI: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("QR is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 200 || b.Dx() != b.Dy() {
		t.Errorf("QR image is %v; want square, at least 200 px", b)
	}
	wantURI := fmt.Sprintf(`href="otpauth://totp/Example%%20HPC:alice?secret=%s`, strings.ReplaceAll(secretOnPage.FindStringSubmatch(qr.body)[1], " ", ""))
	if !strings.Contains(qr.body, wantURI) {
		t.Errorf("QR page has no otpauth link %s...:\n%s", wantURI, qr.body)
	}
	if !strings.Contains(qr.body, `action="/link/confirm"`) || !strings.Contains(qr.body, `name="code"`) {
		t.Error("QR page has no code form")
	}

	// Reload, back button, second tab: the same GET, and the secret is gone.
	for i, again := range []response{c.get("/link/qr"), c.get("/link/qr")} {
		if again.status != http.StatusOK {
			t.Fatalf("reload %d: status %d", i, again.status)
		}
		if secretOnPage.MatchString(again.body) || strings.Contains(again.body, "data:image") || strings.Contains(again.body, "otpauth:") {
			t.Fatalf("reload %d shows the secret again:\n%s", i, again.body)
		}
		want := fmt.Sprintf(msgShownOnce, timeOfDay(t0.Add(10*time.Minute)))
		if !strings.Contains(again.body, want) {
			t.Errorf("reload %d does not explain %q:\n%s", i, want, again.body)
		}
		if !strings.Contains(again.body, `action="/link/confirm"`) {
			t.Errorf("reload %d offers no code form", i)
		}
	}
	// The account page of the pending link offers the code form, never the secret.
	acc := c.get("/")
	if !strings.Contains(acc.body, "Linking started but not finished") || secretOnPage.MatchString(acc.body) {
		t.Errorf("account page while pending:\n%s", acc.body)
	}

	// A wrong code, then the right one.
	clock.Advance(30 * time.Second)
	wrong := "000000"
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		if codeAt(secret, clock.Now().Add(d)) == wrong {
			wrong = "000001"
		}
	}
	bad := c.post("/link/confirm", url.Values{"code": {wrong}})
	if bad.status != http.StatusUnprocessableEntity || !strings.Contains(bad.body, "That code did not match") || secretOnPage.MatchString(bad.body) {
		t.Errorf("wrong code: status %d, body:\n%s", bad.status, bad.body)
	}
	r = c.post("/link/confirm", url.Values{"code": {codeAt(secret, clock.Now())}})
	done := c.follow(r)
	if !strings.Contains(done.body, "Your phone is linked") || !strings.Contains(done.body, "Your recovery codes") {
		t.Fatalf("done page:\n%s", done.body)
	}
	codes := regexp.MustCompile(`<li><code>([^<]+)</code></li>`).FindAllStringSubmatch(done.body, -1)
	if len(codes) != 10 {
		t.Fatalf("done page shows %d recovery codes, want 10", len(codes))
	}
	dl := regexp.MustCompile(`href="data:text/plain;charset=utf-8;base64,([^"]+)" download="recovery-codes-alice.txt"`).FindStringSubmatch(done.body)
	if dl == nil {
		t.Fatalf("no download link on the done page:\n%s", done.body)
	}
	text, err := base64.StdEncoding.DecodeString(html.UnescapeString(dl[1]))
	if err != nil {
		t.Fatalf("download link: %v", err)
	}
	for _, code := range codes {
		if !strings.Contains(string(text), code[1]+"\r\n") {
			t.Errorf("downloaded text lacks code %s:\n%s", code[1], text)
		}
	}
	// The recovery codes are shown once too.
	if again := c.get("/link/done"); again.status != http.StatusSeeOther || strings.Contains(again.body, codes[0][1]) {
		t.Errorf("second GET /link/done: status %d, body:\n%s", again.status, again.body)
	}
	acc = c.get("/")
	if want := "Linked on 23 November 2026. Lost your phone? Ask your admin."; !strings.Contains(acc.body, want) {
		t.Errorf("account page does not say %q:\n%s", want, acc.body)
	}
	if strings.Contains(acc.body, `href="/link"`) {
		t.Error("account page of an active link still offers to link")
	}
	// The audit log names the portal and the browser's address, not "console".
	events, err := e.svc.Store.Events(store.EventQuery{User: testUser})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if ev.Door != "" {
			continue // a sign-in: the front door names its door and address instead
		}
		if !strings.HasPrefix(ev.Actor, "portal ") {
			t.Errorf("audit event %s has actor %q, want the portal and the client address", ev.Kind, ev.Actor)
		}
	}
	if len(events) == 0 {
		t.Error("the link left no audit events")
	}
}

func TestExpiredLinkCanStartAgain(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	first := pageSecret(t, c.startLink().body)

	clock.Advance(9*time.Minute + 59*time.Second)
	c.get("/") // keep the session alive
	if r := c.post("/link/start", nil); r.status != http.StatusConflict || strings.Contains(r.body, "data:image") {
		t.Fatalf("restart before expiry: status %d, body:\n%s", r.status, r.body)
	}
	clock.Advance(time.Second)
	acc := c.get("/")
	if !strings.Contains(acc.body, "not finished in time. You can start again") || !strings.Contains(acc.body, `href="/link"`) {
		t.Fatalf("account page after expiry:\n%s", acc.body)
	}
	second := pageSecret(t, c.startLink().body)
	if bytes.Equal(first, second) {
		t.Error("the restarted link reuses the expired secret")
	}
	// A code of the expired secret does not confirm the new link.
	if r := c.post("/link/confirm", url.Values{"code": {codeAt(first, clock.Now())}}); r.status != http.StatusUnprocessableEntity {
		t.Errorf("code of the expired secret: status %d", r.status)
	}
}

func TestExpiredLinkConfirmSaysStartAgain(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	secret := pageSecret(t, c.startLink().body)
	clock.Advance(10 * time.Minute)
	r := c.post("/link/confirm", url.Values{"code": {codeAt(secret, clock.Now())}})
	if r.status != http.StatusConflict || !strings.Contains(r.body, "expired before it was confirmed") {
		t.Errorf("confirm after expiry: status %d, body:\n%s", r.status, r.body)
	}
}

func TestActiveLinkCannotBeReplaced(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	secret := pageSecret(t, c.startLink().body)
	c.follow(c.post("/link/confirm", url.Values{"code": {codeAt(secret, clock.Now())}}))
	clock.Advance(24 * time.Hour)

	// A second browser (or tab) of the same user, signed in with both factors now.
	c2 := e.client(t)
	c2.get("/")
	if r := c2.post("/signin", url.Values{"username": {testUser}, "password": {testPassword}}); r.status != http.StatusUnauthorized {
		t.Fatalf("sign-in without a code although a device is linked: status %d", r.status)
	}
	c2.signInCode(testUser, testPassword, codeAt(secret, clock.Now()))
	if r := c2.get("/link"); r.status != http.StatusSeeOther {
		t.Errorf("GET /link of an active user: status %d, want a redirect to the account page", r.status)
	}
	r := c2.post("/link/start", nil)
	if r.status != http.StatusConflict || !strings.Contains(r.body, "Linked on 23 November 2026.") ||
		!strings.Contains(r.body, "Replace my phone") || strings.Contains(r.body, "data:image") {
		t.Errorf("POST /link/start of an active user: status %d, body:\n%s", r.status, r.body)
	}
	if r := c2.get("/link/qr"); r.status != http.StatusSeeOther {
		t.Errorf("GET /link/qr of an active user: status %d", r.status)
	}
	if u, _ := e.svc.Store.Get(testUser); u.State != store.StateActive || !u.EnrolledAt.Equal(t0) {
		t.Errorf("the active link changed: %+v", u)
	}
}

func TestPendingLinkNotShownInSecondTab(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	c := e.client(t)
	c.signIn(testUser, testPassword)
	c.startLink()
	c2 := e.client(t)
	c2.signIn(testUser, testPassword)
	// Another session of the same user: neither the secret nor a code form (it could not
	// confirm the link), but why, and until when.
	r := c2.post("/link/start", nil)
	if r.status != http.StatusConflict || strings.Contains(r.body, "data:image") || strings.Contains(r.body, `action="/link/confirm"`) ||
		!strings.Contains(r.body, "started in another browser or session") {
		t.Errorf("second session starting a link while pending: status %d, body:\n%s", r.status, r.body)
	}
	if r := c2.get("/link/qr"); r.status != http.StatusSeeOther || strings.Contains(r.body, "data:image") {
		t.Errorf("second session GET /link/qr: status %d\n%s", r.status, r.body)
	}
}

func TestOutsideAllowedNetworks(t *testing.T) {
	tests := []struct {
		name    string
		tickets bool
		form    url.Values
	}{
		{name: "no ticket field filled", tickets: true, form: url.Values{"username": {testUser}, "password": {testPassword}}},
		{name: "blank ticket", tickets: true, form: url.Values{"username": {testUser}, "password": {testPassword}, "ticket": {"   "}}},
		{name: "tickets not accepted", tickets: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, &fakeClock{t: t0})
			e.setAllowed(false)
			if !tt.tickets {
				e.srv.Tickets = nil
			}
			c := e.client(t)
			start := c.get("/")
			if got := strings.Contains(start.body, `name="ticket"`); got != tt.tickets {
				t.Errorf("ticket field shown: %v, want %v", got, tt.tickets)
			}
			// The form stays: a user whose phone is linked signs in with a code from it.
			if !strings.Contains(start.body, `action="/signin"`) {
				t.Errorf("start page outside offers no sign-in:\n%s", start.body)
			}
			if tt.form == nil {
				tt.form = url.Values{"username": {testUser}, "password": {testPassword}}
			}
			if !strings.Contains(start.body, "outside the campus network or VPN") {
				t.Errorf("start page does not say the visitor is outside:\n%s", start.body)
			}
			r := c.post("/signin", tt.form)
			if r.status != http.StatusForbidden || !strings.Contains(r.body, msgOutside) {
				t.Fatalf("status %d, want 403 saying %q; body:\n%s", r.status, msgOutside, r.body)
			}
			if e.auth.Calls() != 0 {
				t.Error("the password was tried although linking is refused from here")
			}
		})
	}

	t.Run("a linked user signs in from outside with a code, without a ticket", func(t *testing.T) {
		clock := &fakeClock{t: t0}
		e := newEnv(t, clock)
		_, secret, _ := linkedUser(t, e, clock)
		e.setAllowed(false)
		c := e.client(t)
		c.get("/")
		r := c.post("/signin", url.Values{"username": {testUser}, "password": {testPassword}, "code": {codeAt(secret, clock.Now())}})
		if acc := c.follow(r); !strings.Contains(acc.body, "Replace my phone") {
			t.Fatalf("account page after a sign-in with both factors from outside:\n%s", acc.body)
		}
		// A user without a device cannot get in this way, and the password is not tried.
		calls := e.auth.Calls()
		c2 := e.client(t)
		c2.get("/")
		if r := c2.post("/signin", url.Values{"username": {"bob"}, "password": {"bobs password"}, "code": {"123456"}}); r.status != http.StatusUnauthorized {
			t.Errorf("a user without a device from outside with a code: status %d", r.status)
		}
		if e.auth.Calls() != calls+1 {
			t.Errorf("sign-in attempts %d, want %d", e.auth.Calls(), calls+1)
		}
	})

	t.Run("signed in inside, then moved outside", func(t *testing.T) {
		e := newEnv(t, &fakeClock{t: t0})
		c := e.client(t)
		c.signIn(testUser, testPassword)
		e.setAllowed(false)
		if r := c.get("/"); !strings.Contains(r.body, msgOutside) || strings.Contains(r.body, `href="/link"`) {
			t.Errorf("account page outside:\n%s", r.body)
		}
		if r := c.get("/link"); r.status != http.StatusForbidden || !strings.Contains(r.body, msgOutside) {
			t.Errorf("GET /link outside: status %d", r.status)
		}
		if r := c.post("/link/start", nil); r.status != http.StatusForbidden || !strings.Contains(r.body, msgOutside) {
			t.Errorf("POST /link/start outside: status %d", r.status)
		}
		if u, _ := e.svc.Store.Get(testUser); u.State != store.StateNone {
			t.Errorf("state %s after refusals", u.State)
		}
	})
}

func TestTicketAllowsLinkingOnce(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	e.setAllowed(false)
	const ticket = "abcd-efgh-ijkl-mnop"
	e.tickets.add(testUser, ticket, t0.Add(24*time.Hour))
	e.tickets.add("bob", "bobs-ticket", t0.Add(24*time.Hour))

	// Wrong tickets fail like a wrong password, without trying the password.
	for _, tk := range []string{"wrong", "bobs-ticket", ticket + "x"} {
		c := e.client(t)
		c.get("/")
		r := c.post("/signin", url.Values{"username": {testUser}, "password": {testPassword}, "ticket": {tk}})
		if r.status != http.StatusUnauthorized || !strings.Contains(r.body, msgTicketFailed) {
			t.Errorf("ticket %q: status %d, body:\n%s", tk, r.status, r.body)
		}
	}
	if n := e.auth.Calls(); n != 0 {
		t.Errorf("password tried %d times with wrong tickets", n)
	}
	// Each waited as long as a password check would have, so timing does not tell them apart.
	if n := e.refusalWaits.Load(); n != 3 {
		t.Errorf("%d refusals before the password check waited, want 3", n)
	}
	// A right ticket with a wrong password fails the same way.
	c := e.client(t)
	c.get("/")
	if r := c.post("/signin", url.Values{"username": {testUser}, "password": {"nope"}, "ticket": {ticket}}); r.status != http.StatusUnauthorized || !strings.Contains(r.body, msgTicketFailed) {
		t.Errorf("wrong password with a ticket: status %d", r.status)
	}
	if !e.tickets.has(ticket) {
		t.Fatal("a failed sign-in used up the ticket")
	}

	// The right ticket: linking works, once.
	r := c.post("/signin", url.Values{"username": {testUser}, "password": {testPassword}, "ticket": {" " + ticket + " "}})
	acc := c.follow(r)
	if !strings.Contains(acc.body, `href="/link"`) || !strings.Contains(acc.body, "one-time ticket") {
		t.Fatalf("account page with a ticket:\n%s", acc.body)
	}
	if !e.tickets.has(ticket) {
		t.Fatal("signing in used up the ticket before linking started")
	}
	qr := c.startLink()
	pageSecret(t, qr.body)
	if e.tickets.has(ticket) {
		t.Error("starting the link did not use up the ticket")
	}

	// Same session, after the link expired: the ticket is gone.
	clock.Advance(10 * time.Minute)
	if r := c.get("/"); !strings.Contains(r.body, msgOutside) {
		t.Errorf("account page after the ticket was used:\n%s", r.body)
	}
	if r := c.post("/link/start", nil); r.status != http.StatusForbidden {
		t.Errorf("second link with a used ticket: status %d", r.status)
	}
	// New session, same ticket: refused.
	c2 := e.client(t)
	c2.get("/")
	if r := c2.post("/signin", url.Values{"username": {testUser}, "password": {testPassword}, "ticket": {ticket}}); r.status != http.StatusUnauthorized {
		t.Errorf("sign-in with a used ticket: status %d", r.status)
	}
}

func TestSignInFailuresLookAlike(t *testing.T) {
	tests := []struct {
		name, user, password string
	}{
		{"wrong password", testUser, "wrong"},
		{"unknown user", "mallory", "whatever"},
		{"empty password", testUser, ""},
		{"invalid user name", "-oProxyCommand=x", "whatever"},
		{"user name with a slash", "../etc", "whatever"},
		{"very long name", strings.Repeat("a", 5000), "whatever"},
		{"invalid UTF-8", "al\xffice", testPassword},
		{"HTML in the name", `<script>alert(1)</script>`, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, &fakeClock{t: t0})
			c := e.client(t)
			c.get("/")
			r := c.post("/signin", url.Values{"username": {tt.user}, "password": {tt.password}})
			if r.status != http.StatusUnauthorized || !strings.Contains(r.body, msgSignInFailed) {
				t.Fatalf("status %d, want 401 with %q; body:\n%s", r.status, msgSignInFailed, r.body)
			}
			if strings.Contains(r.body, "<script>") {
				t.Error("the user name is not escaped")
			}
			if r := c.get("/"); !strings.Contains(r.body, `action="/signin"`) {
				t.Error("a failed sign-in signed in")
			}
		})
	}
}

func TestOversizedBodyRefused(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	c := e.client(t)
	c.get("/")
	for _, n := range []int{MaxBodyBytes + 1, 1 << 20} {
		form := url.Values{"csrf": {c.csrf}, "username": {testUser}, "password": {testPassword}, "pad": {strings.Repeat("x", n)}}
		r := c.postRaw("/signin", "application/x-www-form-urlencoded", form.Encode())
		if r.status != http.StatusRequestEntityTooLarge {
			t.Errorf("%d byte body: status %d, want 413", n, r.status)
		}
	}
	if e.auth.Calls() != 0 {
		t.Error("an oversized form reached the password check")
	}
}

func TestWrongMethodRefused(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	tests := []struct {
		method, path, allow string
	}{
		{"PUT", "/", "GET, POST"},
		{"DELETE", "/link", "GET, POST"},
		{"PATCH", "/link/start", "GET, POST"},
		{"OPTIONS", "/", "GET, POST"},
		{"TRACE", "/", "GET, POST"},
		{"HEAD", "/link/qr", "GET, POST"},
		{"CONNECT", "/", "GET, POST"},
		{"GET", "/link/start", "POST"},
		{"GET", "/link/confirm", "POST"},
		{"POST", "/", "GET"},
		{"POST", "/link/qr", "GET"},
		{"POST", "/static/style.css", "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://portal.test"+tt.path, nil)
			req.RemoteAddr = "192.0.2.10:1"
			rec := newRecorder()
			e.srv.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != tt.allow {
				t.Errorf("status %d Allow %q, want 405 Allow %q", rec.Code, rec.Header().Get("Allow"), tt.allow)
			}
		})
	}
}

func TestGarbageInputNoPanic(t *testing.T) {
	bodies := []struct {
		contentType, body string
	}{
		{"application/x-www-form-urlencoded", "code=%00%01%02&code=1&code=2"},
		{"application/x-www-form-urlencoded", "code=" + strings.Repeat("9", 10000)},
		{"application/x-www-form-urlencoded", "code=12345%F0%28%8C%28"},
		{"application/x-www-form-urlencoded", "code=+++1+2+3+4+5+6+++"},
		{"application/x-www-form-urlencoded", "code=-123456"},
		{"application/x-www-form-urlencoded", "username=%E2%80%AEalice&password=%00"},
		{"application/x-www-form-urlencoded", "username=alice;password=x"},
		{"application/x-www-form-urlencoded", "&&&==&=&"},
		{"application/x-www-form-urlencoded", "%"},
		{"application/x-www-form-urlencoded", "ticket=" + strings.Repeat("%FF", 3000)},
		{"multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"code\"\r\n\r\n123456\r\n--x--\r\n"},
		{"application/json", `{"code":"123456"}`},
		{"text/plain", "code=123456"},
		{"", "code=123456"},
		{"application/x-www-form-urlencoded; charset=utf-16", "\xff\xfec\x00"},
	}
	paths := []string{"/signin", "/signout", "/link/start", "/link/confirm"}
	for _, withToken := range []bool{false, true} {
		for _, p := range paths {
			// One portal per path, with a pending link; the client signs in again whenever a
			// body signed it out.
			e := newEnv(t, &fakeClock{t: t0})
			c := e.client(t)
			c.signIn(testUser, testPassword)
			c.startLink()
			for i, b := range bodies {
				t.Run(fmt.Sprintf("token=%v%s#%d", withToken, p, i), func(t *testing.T) {
					c.t = t
					if r := c.get("/"); strings.Contains(r.body, `action="/signin"`) {
						c.signIn(testUser, testPassword)
					}
					body := b.body
					if withToken && strings.HasPrefix(b.contentType, "application/x-www-form-urlencoded") {
						body += "&csrf=" + url.QueryEscape(c.csrf)
					}
					r := c.postRaw(p, b.contentType, body)
					if r.status >= 500 {
						t.Errorf("status %d; body:\n%s", r.status, r.body)
					}
					checkHeaders(t, p, r.header)
					if u, _ := e.svc.Store.Get(testUser); u.State == store.StateActive {
						t.Error("garbage confirmed the link")
					}
				})
			}
		}
	}
}

// FuzzForms throws arbitrary form bodies at every POST path with a valid session and token;
// the seeds run with every `go test`.
func FuzzForms(f *testing.F) {
	for _, s := range []string{"code=123456", "username=alice&password=x", "code=%", "ticket=\x00", "a=b&a=c&code="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		e := newEnv(t, &fakeClock{t: t0})
		c := e.client(t)
		c.signIn(testUser, testPassword)
		for _, p := range []string{"/link/confirm", "/link/start", "/replace/start", "/replace/confirm", "/replace/cancel",
			"/recovery/new", "/signin", "/signout"} {
			r := c.postRaw(p, "application/x-www-form-urlencoded", body+"&csrf="+url.QueryEscape(c.csrf))
			if r.status >= 500 {
				t.Fatalf("%s: status %d", p, r.status)
			}
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	clock.Advance(IdleTimeout - time.Second)
	if r := c.get("/"); !strings.Contains(r.body, "Your account") {
		t.Fatal("session ended before the idle timeout")
	}
	csrf := c.csrf
	clock.Advance(IdleTimeout)
	r := c.post("/link/start", url.Values{"csrf": {csrf}})
	if r.status != http.StatusForbidden {
		t.Errorf("POST after the idle timeout: status %d, want 403", r.status)
	}
	if r := c.get("/"); !strings.Contains(r.body, `action="/signin"`) {
		t.Errorf("start page after the idle timeout is not the sign-in form:\n%s", r.body)
	}
}

func TestSessionCap(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	e.srv.maxSessions = 3
	members := []*client{e.client(t), e.client(t)}
	for _, m := range members {
		m.signIn(testUser, testPassword)
	}
	// A flood of visitors only pushes out other visitors.
	for range 20 {
		v := e.client(t)
		if r := v.get("/"); r.status != http.StatusOK {
			t.Fatalf("visitor: status %d", r.status)
		}
	}
	if n := e.srv.sessions.len(); n > 3 {
		t.Errorf("%d sessions held, cap 3", n)
	}
	for i, m := range members {
		if r := m.get("/"); !strings.Contains(r.body, "Your account") {
			t.Errorf("member %d was pushed out by visitors", i)
		}
	}
	members = append(members, e.client(t))
	members[2].signIn(testUser, testPassword)
	r := e.client(t).get("/")
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "try again in a few minutes") {
		t.Errorf("visitor when every slot is signed in: status %d", r.status)
	}
	checkHeaders(t, "busy page", r.header)
}

func TestSignOut(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	c := e.client(t)
	c.signIn(testUser, testPassword)
	old := c.cookie
	r := c.post("/signout", nil)
	if r.status != http.StatusSeeOther || c.cookie != "" {
		t.Fatalf("sign-out: status %d, cookie %q", r.status, c.cookie)
	}
	c.cookie = old
	if r := c.get("/"); !strings.Contains(r.body, `action="/signin"`) {
		t.Error("the session still works after sign-out")
	}
}

func TestServeAndShutdown(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			e := newEnv(t, nil)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			scheme := "http"
			served := make(chan error, 1)
			if useTLS {
				e.srv.Secure = true
				certFile, keyFile, pool := selfSigned(t)
				client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
				scheme = "https"
				go func() { served <- e.srv.ServeTLS(ln, certFile, keyFile) }()
			} else {
				go func() { served <- e.srv.Serve(ln) }()
			}
			res, err := client.Get(scheme + "://" + ln.Addr().String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || !strings.Contains(string(body), `action="/signin"`) {
				t.Errorf("GET /: status %d", res.StatusCode)
			}
			checkHeaders(t, "served", res.Header)
			for _, ck := range res.Cookies() {
				if ck.Name == cookieName && ck.Secure != useTLS {
					t.Errorf("cookie Secure = %v over %s", ck.Secure, scheme)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := e.srv.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if err := <-served; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
			}
			if n := e.srv.sessions.len(); n != 0 {
				t.Errorf("%d sessions kept after Shutdown", n)
			}
		})
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key into t.TempDir().
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "portal test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pool
}

func TestQRShownOnceToConcurrentTabs(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	c := e.client(t)
	c.signIn(testUser, testPassword)
	c.get("/link")
	if r := c.post("/link/start", nil); r.status != http.StatusSeeOther {
		t.Fatalf("POST /link/start: status %d", r.status)
	}
	const tabs = 8
	bodies := make(chan string, tabs)
	for range tabs {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, "http://portal.test/link/qr", nil)
			req.RemoteAddr = c.remote
			req.AddCookie(&http.Cookie{Name: cookieName, Value: c.cookie})
			rec := newRecorder()
			e.srv.Handler().ServeHTTP(rec, req)
			bodies <- rec.Body.String()
		}()
	}
	shown := 0
	for range tabs {
		if secretOnPage.MatchString(<-bodies) {
			shown++
		}
	}
	if shown != 1 {
		t.Errorf("%d of %d simultaneous tabs got the secret, want exactly 1", shown, tabs)
	}
}

// TestWaitRefusalOutlivesTheRequest: net/http cancels a request's context as
// soon as the client half-closes its connection, and such a client can still
// read the answer: the refusal's wait must not end with that context.
func TestWaitRefusalOutlivesTheRequest(t *testing.T) {
	var waited error
	s := &Server{refusalDelay: func(ctx context.Context) { waited = ctx.Err() }}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.waitRefusal(ctx)
	if waited != nil {
		t.Errorf("the refusal waited under a context that had ended (%v): a half-closing client gets an unpadded answer", waited)
	}
}
