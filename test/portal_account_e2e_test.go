package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// These tests use the portal's account side against the real daemon, the way a user does in
// Chromium, and check the result with the real OpenSSH client (codes from oathtool): signing in
// with both factors, a code spent on the portal refused at SSH, and the security log. The
// browser reaches the portal from an allowed network (127.0.0.2, through forwardFrom); the SSH
// logins come from outside the trusted networks (127.0.0.1), where the code is asked.

// signInCode signs in from the start page with u's password and code (from the app or a
// recovery code) and expects to be sent back to it, signed in.
func (p *portalClient) signInCode(u *user, code string) {
	p.t.Helper()
	if r := p.get("/"); r.status != http.StatusOK || p.csrf == "" {
		p.t.Fatalf("GET /: status %d, CSRF token %q:\n%s", r.status, p.csrf, r.body)
	}
	r := p.post("/signin", p.withCSRF(url.Values{"username": {u.name}, "password": {u.password}, "code": {code}}))
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		p.t.Fatalf("POST /signin with a code: status %d, Location %q:\n%s", r.status, r.header.Get("Location"), r.body)
	}
}

// signInTab fills the sign-in form of a tab on the start page and sends it; it returns the HTTP
// status of the answer.
func signInTab(b *tab, u *user, code string) int64 {
	b.t.Helper()
	b.load("/")
	b.typeInto("#username", u.name)
	b.typeInto("#password", u.password)
	if code != "" {
		b.typeInto("#code", code)
	}
	return b.click("form[action='/signin'] button[type=submit]")
}

// securityLogRow is the text of a security log row as the browser renders it: when, what,
// from, where, separated by tabs.
func hasLogRow(log, what, from, where string) bool {
	for line := range strings.SplitSeq(log, "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 4 && f[1] == what && f[2] == from && f[3] == where {
			return true
		}
	}
	return false
}

func TestPortalAccount(t *testing.T) {
	t.Parallel()
	needTools(t, chromiumPath, "oathtool")
	g := sharedGatekeeper(t) // enroll.allowed_networks defaults to trusted_networks: 127.0.0.2/32
	portal := g.portalAddr(t)
	inside := "http://" + forwardFrom(t, trustedAddr, portal)
	browser := startBrowser(t)
	shots := screenshotDir(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screenshots in %s", shots)
		}
	})

	t.Run("sign in with both factors; the code is then spent at SSH too", func(t *testing.T) {
		t.Parallel()
		u := enrolledUser(t, g)
		b := newTab(t, browser, inside, shots, "account-signin")

		// The password alone no longer signs in, not even from the allowed network.
		if st := signInTab(b, u, ""); st != http.StatusUnauthorized {
			t.Errorf("portal sign-in without a code: HTTP %d, want 401", st)
		}
		b.expect("sign-in without a code", "Wrong username, password or verification code")
		b.shot("password-alone-refused")

		code := u.nextCode(t)
		if st := signInTab(b, u, code); st != http.StatusOK {
			t.Fatalf("portal sign-in with password and code: HTTP %d", st)
		}
		b.expect("account page", "Your phone is linked.", "10 of 10", "Replace my phone", "New recovery codes")
		b.shot("signed-in")

		// The same code at the SSH door: spent.
		from := len(g.logBytes())
		c := newClient(t, u, g.port, "")
		c.setCode(code)
		mustBeDeniedSlowly(t, c, "a code spent on the portal, at SSH")
		g.waitLog(t, from, `"login refused"`, u.name, `"reason":"replayed_code"`)
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "the next code at SSH")
		g.waitAudit(t, u.name, "a portal sign-in", func(ev []auditEvent) bool {
			return countKind(ev, "login_ok", "") >= 2
		})
	})
}
