package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// These tests use the portal's account side against the real daemon, the way a user does in
// Chromium, and check the result with the real OpenSSH client (codes from oathtool): signing in
// with both factors, a code spent on the portal refused at SSH, replacing the phone (the old one
// works until the new one is confirmed; open SSH sessions end only when the box is ticked), new
// recovery codes, and the security log. The browser reaches the portal from an allowed network
// (127.0.0.2, through forwardFrom); the SSH logins come from outside the trusted networks
// (127.0.0.1), where the code is asked. Screenshots: account-*.png.

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

// hasLogRow reports whether the security log's text, as the browser renders the table (a row a
// line, cells separated by tabs: when, what, from, where), has a row with what, from and where.
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
	for _, endSSH := range []bool{true, false} {
		name := "replace the phone, SSH sessions left open"
		if endSSH {
			name = "replace the phone, SSH sessions ended"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t)
			explain(t, g, u)
			// Recovery codes where the test needs a second factor but not the app: every code
			// from the app must be of a new 30 s step, and a test that spends many waits.
			oldCodes := g.enrollWithCodes(t, u)
			oldSecret := u.secret
			prefix := "account-replace-keep-ssh"
			if endSSH {
				prefix = "account-replace-end-ssh"
			}
			b := newTab(t, browser, inside, shots, prefix)

			// A live SSH session, and another portal session of the user's.
			c := newClient(t, u, g.port, "")
			c.setCode(oldCodes[0])
			live := c.liveSSH(nil, "echo started; sleep 300")
			live.waitFor("started")
			other := newPortalClient(t, portal, trustedAddr)
			other.signInCode(u, oldCodes[1])

			if st := signInTab(b, u, oldCodes[2]); st != http.StatusOK {
				t.Fatalf("portal sign-in: HTTP %d", st)
			}
			b.click("a.button[href='/replace']")
			b.expect("replace page", "Replace my phone", "Also end my open SSH sessions")
			if endSSH {
				b.do(chromedp.Click(chromedp.CSS("#endssh"), chromedp.NodeVisible))
			}
			b.shot("intro")
			b.click("form[action='/replace/start'] button[type=submit]")
			b.expect("new QR page", "Scan the new QR code with your new phone", "More than one device?")
			b.shot("new-qr")
			_, newSecret := b.scanQR(issuer, u.name)
			if newSecret == oldSecret {
				t.Fatal("the new QR code holds the old secret")
			}

			// Until the confirmation, the old phone logs in over SSH.
			c2 := newClient(t, u, g.port, "")
			c2.setCode(u.nextCode(t))
			mustLogIn(t, c2, "the old phone while the replacement waits")

			if endSSH {
				// A new phone whose clock is 4 minutes fast: the page says so, and nothing changes.
				b.typeInto("#code", oathCode(t, newSecret, stepNow()+8))
				if st := b.click("form[action='/replace/confirm'] button"); st != http.StatusUnprocessableEntity {
					t.Errorf("a code 4 minutes ahead: HTTP %d, want 422", st)
				}
				b.expect("a code 4 minutes ahead", "clock is about 4 minutes fast", "automatic date and time")
				b.shot("clock-fast")
			}

			// Confirm with the new phone's next code (its step newer than any the old one used).
			u.secret = newSecret
			b.typeInto("#code", u.nextCode(t))
			b.click("form[action='/replace/confirm'] button")
			b.expect("replace done page", "Your new phone is linked", "Your recovery codes")
			b.shot("done")
			codes := strings.Fields(b.textOf("ol.codes"))
			for _, rc := range codes {
				h.remember(rc)
			}
			if len(codes) != 10 {
				t.Errorf("%d new recovery codes shown, want 10", len(codes))
			}

			// From now on the old phone and its recovery codes fail; the new phone works.
			c2.setCode(oathCode(t, oldSecret, u.last+1))
			mustBeDeniedSlowly(t, c2, "the old phone after the replacement")
			c2.setCode(oldCodes[3])
			mustBeDeniedSlowly(t, c2, "an old recovery code after the replacement")
			c2.setCode(u.nextCode(t))
			mustLogIn(t, c2, "the new phone after the replacement")

			// The other portal session ended; the SSH session only if the box was ticked.
			if r := other.get("/"); !strings.Contains(r.body, `action="/signin"`) {
				t.Error("the user's other portal session survived the replacement")
			}
			if endSSH {
				if exit := live.wait(10 * time.Second); exit == 0 {
					t.Errorf("the live SSH session after the replacement: %s", live)
				}
			} else {
				time.Sleep(time.Second) // what would have ended it has happened by now
				if !live.running() {
					t.Errorf("the live SSH session ended although the box was not ticked: %s", live)
				}
			}
			g.waitAudit(t, u.name, "device_replaced", func(ev []auditEvent) bool {
				return countKind(ev, "device_replaced", "") == 1
			})
			b.load("/")
			if log := b.textOf("table.log"); !hasLogRow(log, "Phone replaced", trustedAddr, "web portal") {
				t.Errorf("the security log lacks the replacement from %s:\n%s", trustedAddr, log)
			}
		})
	}

	t.Run("new recovery codes work once over SSH, the old ones not at all", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		oldCodes := g.enrollWithCodes(t, u)
		b := newTab(t, browser, inside, shots, "account-renew")
		// Signed in with a recovery code, which then counts as used.
		if st := signInTab(b, u, oldCodes[0]); st != http.StatusOK {
			t.Fatalf("portal sign-in with a recovery code: HTTP %d", st)
		}
		b.expect("account page", "9 of 10")
		b.click("a.button[href='/recovery']")
		b.expect("recovery page", "Your 9 remaining recovery codes stop working at once")
		b.shot("confirm")
		b.click("form[action='/recovery/new'] button")
		b.expect("new recovery codes", "Your new recovery codes", "Download as text")
		b.shot("done")
		codes := strings.Fields(b.textOf("ol.codes"))
		for _, rc := range codes {
			h.remember(rc)
		}
		if len(codes) != 10 {
			t.Fatalf("%d new recovery codes shown, want 10", len(codes))
		}

		c := newClient(t, u, g.port, "")
		c.setCode(oldCodes[1])
		mustBeDeniedSlowly(t, c, "an old recovery code after new ones were made")
		c.setCode(codes[0])
		mustLogIn(t, c, "a new recovery code")
		mustBeDeniedSlowly(t, c, "the same new recovery code again")
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "the phone, after new recovery codes")
	})

	t.Run("the security log shows a refused SSH login with its source address", func(t *testing.T) {
		t.Parallel()
		u := enrolledUser(t, g)
		c := newClient(t, u, g.port, "")
		c.setCode(u.wrongCode(t))
		mustBeDeniedSlowly(t, c, "a wrong code")
		g.waitAudit(t, u.name, "the refused login", func(ev []auditEvent) bool {
			return countKind(ev, "login_refused", "") == 1
		})
		b := newTab(t, browser, inside, shots, "account-log")
		if st := signInTab(b, u, u.nextCode(t)); st != http.StatusOK {
			t.Fatalf("portal sign-in: HTTP %d", st)
		}
		// The audit log is written in the background: wait for this sign-in to be in it, then
		// look at the page again.
		g.waitAudit(t, u.name, "the portal sign-in", func(ev []auditEvent) bool {
			return countKind(ev, "login_ok", "") >= 1
		})
		b.reload()
		b.expect("account page", "Security log")
		log := b.textOf("table.log")
		if !hasLogRow(log, "Login refused (wrong code)", "127.0.0.1", "SSH login") {
			t.Errorf("the security log lacks the refused SSH login from 127.0.0.1:\n%s", log)
		}
		if !hasLogRow(log, "Login accepted", trustedAddr, "web portal") {
			t.Errorf("the security log lacks this sign-in from %s:\n%s", trustedAddr, log)
		}
		b.shot("security-log")
	})
}
