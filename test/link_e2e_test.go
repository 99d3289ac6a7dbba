package e2e

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// These tests link devices the ways users do, against the real daemon: in Debian's Chromium
// through the portal on enroll.portal_listen (the QR code read from the page's pixels by zbarimg,
// codes from oathtool), and with the real `ssh -tt` on enroll.ssh_listen; then they log in
// through the gatekeeper with the new device's codes and its recovery codes.

// issuer is totp.issuer in the tests' config.
const issuer = "gatekeeper-e2e"

// secretOnPage finds the secret a QR page shows as text, in groups of four.
var secretOnPage = regexp.MustCompile(`<p class="secret"><code>([A-Z2-7 ]+)</code></p>`)

// TestPortalLinking drives headless Chromium through the portal. "Inside" the allowed networks
// (enroll.allowed_networks: 127.0.0.2/32) the browser goes through a forwarder that connects
// from 127.0.0.2; "outside" it connects directly, from 127.0.0.1. Every page is saved as a
// screenshot in $GATEKEEPER_SCREENSHOTS (or a temporary directory).
func TestPortalLinking(t *testing.T) {
	t.Parallel()
	needTools(t, chromiumPath, "zbarimg", "oathtool")
	g := ownGatekeeper(t, gkOptions{edit: enrollSettings(`["127.0.0.2/32"]`, "")})
	portal := g.portalAddr(t)
	inside := "http://" + forwardFrom(t, trustedAddr, portal)
	outside := "http://" + portal
	browser := startBrowser(t)
	shots := screenshotDir(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screenshots in %s", shots)
		}
	})

	t.Run("link, reload, log in with a newer code", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		b := newTab(t, browser, inside, shots, "portal")

		b.load("/")
		b.expect("start page", "Sign in", "Username", "Password")
		b.shot("sign-in")
		b.typeInto("#username", u.name)
		b.typeInto("#password", u.password)
		b.click("form[action='/signin'] button[type=submit]")
		b.expect("account page", "Your account", "No phone linked yet", "Link your mobile device")
		b.shot("account-not-linked")

		b.click("a.button[href='/link']")
		b.expect("page before the QR code", "Before you start", "shown only once", "Continue")
		b.shot("before-you-start")
		b.click("form[action='/link/start'] button")
		b.expect("QR page", "Scan the QR code", "Shown only once")
		b.shot("qr-code")
		_, secret := b.scanQR(issuer, u.name)

		// Reload before confirming (the QR code was scanned, the page reloaded by accident):
		// the secret is gone, the code form is still there.
		if st := b.reload(); st != http.StatusOK {
			t.Errorf("reloading the QR page: HTTP %d", st)
		}
		page := b.html()
		if strings.Contains(page, secret) || strings.Contains(page, "data:image") || strings.Contains(page, "otpauth:") {
			t.Fatalf("reloading the QR page shows the secret again:\n%s", b.text())
		}
		b.expect("reloaded QR page", "not shown again", "enter a code from the app")
		b.shot("qr-page-reloaded")

		step := stepNow()
		b.typeInto("#code", oathCode(t, secret, step))
		b.click("form[action='/link/confirm'] button")
		u.secret, u.last = secret, step
		b.expect("done page", "Your phone is linked", "Your recovery codes", "shown only this once", "Download as text")
		b.shot("linked-recovery-codes")
		codes := strings.Fields(b.textOf("ol.codes"))
		if len(codes) != 10 {
			t.Errorf("the done page shows %d recovery codes, want 10: %q", len(codes), codes)
		}
		for _, c := range codes {
			h.remember(c)
		}

		// The recovery codes are shown once too.
		b.load("/link/done")
		if strings.Contains(b.html(), codes[0]) {
			t.Error("reloading the done page shows the recovery codes again")
		}

		// A newer code logs in over SSH, through the gatekeeper, from outside the trusted networks.
		c := newClient(t, u, g.port, "")
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "the first login with the linked phone")
		wantPrompts(t, c, "Password:", "Verification code:")

		// An active link cannot be started again: the page says to ask the admin.
		b.load("/link")
		if loc := b.location(); loc != "/" {
			t.Errorf("/link with an active link: at %s, want the account page", loc)
		}
		b.expect("account page, linked", "Your phone is linked.", "Linked on ", "Lost your phone? Ask your admin.")
		if strings.Contains(b.html(), `href="/link"`) {
			t.Error("the account page of a linked user still offers to link a device")
		}
		b.shot("account-linked")
		b.load("/link/qr")
		if page := b.html(); strings.Contains(page, secret) || strings.Contains(page, "data:image") {
			t.Error("the QR page shows the secret after the link is active")
		}
		// Not even a hand-made POST (with a valid CSRF token) starts a new link.
		p := newPortalClient(t, portal, trustedAddr)
		p.signInCode(u, u.nextCode(t)) // a linked user signs in with both factors
		p.get("/")
		r := p.post("/link/start", p.withCSRF(nil))
		if r.status != http.StatusConflict || !strings.Contains(r.body, "ask your admin") || strings.Contains(r.body, "data:image") {
			t.Errorf("POST /link/start with an active link: HTTP %d, want 409 and \"ask your admin\":\n%s", r.status, r.body)
		}
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "the linked phone, after the refused new link")
	})

	t.Run("POST without CSRF token refused", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		p := newPortalClient(t, portal, trustedAddr)
		r := p.get("/")
		if r.status != http.StatusOK || p.csrf == "" {
			t.Fatalf("GET /: HTTP %d, CSRF token %q", r.status, p.csrf)
		}
		if cc := r.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control: %q, want no-store", cc)
		}
		creds := url.Values{"username": {u.name}, "password": {u.password}}
		r = p.post("/signin", creds)
		if r.status != http.StatusForbidden {
			t.Errorf("sign-in without the CSRF token: HTTP %d, want 403:\n%s", r.status, r.body)
		}
		r = p.post("/signin", url.Values{"username": {u.name}, "password": {u.password}, "csrf": {"forged"}})
		if r.status != http.StatusForbidden {
			t.Errorf("sign-in with a forged CSRF token: HTTP %d, want 403", r.status)
		}
		r = p.post("/signin", p.withCSRF(creds))
		if r.status != http.StatusSeeOther {
			t.Fatalf("sign-in with the CSRF token: HTTP %d, want 303:\n%s", r.status, r.body)
		}
		if r := p.get("/link"); r.status != http.StatusOK || !strings.Contains(r.body, "Continue") {
			t.Fatalf("GET /link: HTTP %d:\n%s", r.status, r.body)
		}
		r = p.post("/link/start", nil)
		if r.status != http.StatusForbidden || strings.Contains(r.body, "data:image") {
			t.Errorf("starting a link without the CSRF token: HTTP %d, want 403:\n%s", r.status, r.body)
		}
		if r := p.get("/"); !strings.Contains(r.body, "No phone linked yet") {
			t.Errorf("after the refused POST the account page should still say no phone is linked:\n%s", r.body)
		}
		// The token was all that was missing.
		r = p.post("/link/start", p.withCSRF(nil))
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/link/qr" {
			t.Fatalf("starting a link with the CSRF token: HTTP %d Location %q", r.status, r.header.Get("Location"))
		}
		r = p.get("/link/qr")
		if r.status != http.StatusOK || !strings.Contains(r.body, "data:image/png;base64,") || r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("QR page: HTTP %d, Cache-Control %q, QR image %v", r.status, r.header.Get("Cache-Control"),
				strings.Contains(r.body, "data:image/png;base64,"))
		}
		if m := secretOnPage.FindStringSubmatch(r.body); m != nil {
			h.remember(strings.ReplaceAll(m[1], " ", ""))
		}
		if r := p.get("/link/qr"); strings.Contains(r.body, "data:image") {
			t.Error("a second GET of the QR page shows the QR code again")
		}
	})

	t.Run("outside the allowed networks: only with a ticket, once", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		b := newTab(t, browser, outside, shots, "outside")
		b.load("/")
		b.expect("start page from outside", "outside the campus network or VPN", "One-time ticket")
		b.shot("sign-in-needs-ticket")

		// Without a ticket (a hand-made POST: the browser's form insists on one): refused.
		p := newPortalClient(t, portal, "")
		p.get("/")
		r := p.post("/signin", p.withCSRF(url.Values{"username": {u.name}, "password": {u.password}}))
		if r.status != http.StatusForbidden || !strings.Contains(r.body, "only possible from the campus network") {
			t.Errorf("sign-in from outside without a ticket: HTTP %d, want 403 and the reason:\n%s", r.status, r.body)
		}
		// A made-up ticket: refused, with the same message as a wrong password.
		b.typeInto("#username", u.name)
		b.typeInto("#password", u.password)
		b.typeInto("#ticket", "abcdefghijklmnopqrst")
		if st := b.click("form[action='/signin'] button[type=submit]"); st != http.StatusUnauthorized {
			t.Errorf("sign-in with a made-up ticket: HTTP %d, want 401", st)
		}
		b.expect("sign-in with a made-up ticket", "Wrong username, password or ticket")
		b.shot("made-up-ticket")

		var tk struct {
			User      string    `json:"user"`
			Ticket    string    `json:"ticket"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		g.adminJSON(t, &tk, "ticket", u.name)
		h.remember(tk.Ticket)
		if tk.User != u.name || tk.Ticket == "" || time.Until(tk.ExpiresAt) < 23*time.Hour {
			t.Fatalf("admin ticket -o json: %+v", tk)
		}
		// The form kept the username; the password and the ticket are typed again.
		b.typeInto("#password", u.password)
		b.typeInto("#ticket", tk.Ticket)
		b.click("form[action='/signin'] button[type=submit]")
		b.expect("account page with a ticket", "No phone linked yet", "one-time ticket")
		b.shot("account-with-ticket")
		b.click("a.button[href='/link']")
		b.click("form[action='/link/start'] button")
		b.expect("QR page from outside", "Scan the QR code")
		_, secret := b.scanQR(issuer, u.name)

		// The ticket is used up: a second sign-in with it is refused.
		b2 := newTab(t, browser, outside, shots, "outside-second")
		b2.load("/")
		b2.typeInto("#username", u.name)
		b2.typeInto("#password", u.password)
		b2.typeInto("#ticket", tk.Ticket)
		if st := b2.click("form[action='/signin'] button[type=submit]"); st != http.StatusUnauthorized {
			t.Errorf("second sign-in with the used ticket: HTTP %d, want 401", st)
		}
		b2.expect("second sign-in with the used ticket", "Wrong username, password or ticket")
		b2.shot("ticket-used-up")

		step := stepNow()
		b.typeInto("#code", oathCode(t, secret, step))
		b.click("form[action='/link/confirm'] button")
		b.expect("done page", "Your phone is linked", "Your recovery codes")
		u.secret, u.last = secret, step
		c := newClient(t, u, g.port, "")
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "the phone linked with a ticket")
		g.waitAudit(t, u.name, "ticket_issued by uid 0 and ticket_used", func(ev []auditEvent) bool {
			return countKind(ev, "ticket_issued", "uid 0") == 1 && countKind(ev, "ticket_used", "") == 1
		})
	})

	t.Run("an expired unconfirmed link can be started again", func(t *testing.T) {
		t.Parallel()
		const confirmWithin = 5 * time.Second
		g := ownGatekeeper(t, gkOptions{edit: enrollSettings(`["127.0.0.2/32"]`, confirmWithin.String())})
		u := newUser(t)
		explain(t, g, u)
		b := newTab(t, browser, "http://"+forwardFrom(t, trustedAddr, g.portalAddr(t)), shots, "expiry")
		b.load("/")
		b.typeInto("#username", u.name)
		b.typeInto("#password", u.password)
		b.click("form[action='/signin'] button[type=submit]")
		b.click("a.button[href='/link']")
		started := time.Now() // before the link starts: it expires confirmWithin after this at the earliest
		b.click("form[action='/link/start'] button")
		b.expect("QR page", "Scan the QR code")
		first := strings.ReplaceAll(b.textOf(".secret code"), " ", "")
		h.remember(first)
		// Not confirmed: the account page says so, and offers no second link while it waits.
		b.load("/")
		if time.Since(started) < confirmWithin {
			b.expect("account page, pending", "Linking started but not finished")
			if strings.Contains(b.html(), `href="/link"`) {
				t.Error("the account page offers a new link while one is pending")
			}
			b.shot("account-pending")
		}
		// The user comes back later: the link has expired and can be started again.
		deadline := time.Now().Add(confirmWithin + waitTimeout)
		for !strings.Contains(b.text(), "not finished in time") {
			if time.Now().After(deadline) {
				t.Fatalf("the account page never said the link expired; it says:\n%s", b.text())
			}
			time.Sleep(4 * pollInterval)
			b.reload()
		}
		b.expect("account page, expired", "You can start again", "Link your mobile device")
		b.shot("account-link-expired")
		b.click("a.button[href='/link']")
		b.click("form[action='/link/start'] button")
		b.expect("QR page, second link", "Scan the QR code")
		b.shot("qr-code-again")
		_, second := b.scanQR(issuer, u.name)
		if second == first {
			t.Error("the restarted link shows the expired link's secret")
		}
		g.waitAudit(t, u.name, "link_expired and two link_started", func(ev []auditEvent) bool {
			return countKind(ev, "link_expired", "") == 1 && countKind(ev, "link_started", "") == 2
		})
	})
}

// linkAskpass answers the linking listener's prompts: the password, the ticket from the file
// "ticket" and the code from the file "code" (setCode; an empty answer when there is none: a
// user without a device).
const linkAskpass = `#!/bin/sh
d="${GK_ASKPASS_DIR:?GK_ASKPASS_DIR not set}"
printf '%s\n' "$1" >> "$d/prompts"
case "$1" in
*"Linking ticket:"*)
	if [ -f "$d/ticket" ]; then cat "$d/ticket"; else echo; fi
	exit 0 ;;
*"Verification code:"*)
	if [ -f "$d/code" ]; then cat "$d/code"; else echo; fi
	exit 0 ;;
*[Pp]assword:*)
	cat "$d/password"; exit 0 ;;
*)
	echo "askpass: unexpected prompt: $1" >&2
	exit 1 ;;
esac
`

// linkClient is a client of g's SSH linking listener from bind ("" = 127.0.0.1, outside).
func linkClient(t *testing.T, g *gatekeeper, u *user, bind string) *client {
	t.Helper()
	c := newClient(t, u, g.linkPort(t), bind)
	script := filepath.Join(c.dir, "askpass-link")
	if err := os.WriteFile(script, []byte(linkAskpass), 0o700); err != nil {
		t.Fatal(err)
	}
	c.extra = append(c.extra, "SSH_ASKPASS="+script)
	return c
}

// terminalLink runs `ssh -tt -p PORT user@127.0.0.1` against the linking listener, reads the
// secret from the otpauth URI it prints, types the app's code as a user does at a terminal, and
// returns the output after ssh has exited 0.
func terminalLink(t *testing.T, c *client) string {
	t.Helper()
	s := c.liveSSH([]string{"-tt"})
	out := s.waitFor("Code from your app: ")
	secret, err := secretFromOutput(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	h.remember(secret)
	if !strings.ContainsAny(out, "▀▄█") {
		t.Errorf("no QR code drawn in the terminal:\n%s", out)
	}
	step := stepNow()
	c.user.secret, c.user.last = secret, step
	s.write(oathCode(t, secret, step) + "\r")
	if exit := s.wait(waitTimeout); exit != 0 {
		t.Fatalf("ssh -tt to the linking listener: exit %d, want 0: %s", exit, s)
	}
	out = s.stdout.String()
	if !strings.Contains(out, "Device linked for "+c.user.name) {
		t.Errorf("no \"Device linked\" in the output:\n%s", out)
	}
	codes := recoveryCodesIn(out)
	if len(codes) != 10 {
		t.Errorf("%d recovery codes printed, want 10:\n%s", len(codes), out)
	}
	for _, rc := range codes {
		h.remember(rc)
	}
	return out
}

func TestTerminalLinkOverSSH(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t) // enroll.allowed_networks defaults to trusted_networks: 127.0.0.2/32

	t.Run("from an allowed network", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		lc := linkClient(t, g, u, trustedAddr)
		out := terminalLink(t, lc)
		wantPrompts(t, lc, "Password:", "Verification code:")
		if !strings.Contains(out, "otpauth URI: otpauth://totp/") || !strings.Contains(out, "Secret: ") {
			t.Errorf("the URI and the secret are not printed as text:\n%s", out)
		}
		c := newClient(t, u, g.port, "")
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "login through the gate with the terminal-linked phone")
		// Signed in with both factors, a linked user gets the menu (test/link_menu_e2e_test.go), not
		// a second link; and the listener never runs commands on the lander.
		lc.setCode(u.nextCode(t))
		s := lc.liveSSH([]string{"-tt"})
		s.waitFor("Choose 1, 2 or 3: ")
		s.write("3\r")
		if exit := s.wait(waitTimeout); exit != 0 || strings.Contains(s.stdout.String(), "otpauth") {
			t.Errorf("connecting again: want the menu, quit with exit 0 and no new secret, got %s", s)
		}
		lc.setCode(u.nextCode(t))
		s = lc.liveSSH(nil, "id")
		if exit := s.wait(waitTimeout); exit != 1 || strings.Contains(s.stdout.String(), "uid=") ||
			!strings.Contains(s.stderr.String(), "runs no commands") {
			t.Errorf("a command on the linking listener: want it refused (exit 1), got %s", s)
		}
	})

	t.Run("from outside, with a ticket, once", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		lc := linkClient(t, g, u, "")
		s := lc.liveSSH([]string{"-tt"})
		if exit := s.wait(waitTimeout); exit != 255 || !strings.Contains(s.stderr.String(), "Permission denied") ||
			strings.Contains(s.stdout.String(), "otpauth") {
			t.Fatalf("linking from outside without a ticket: want Permission denied (exit 255), got %s", s)
		}
		var tk struct {
			Ticket string `json:"ticket"`
		}
		g.adminJSON(t, &tk, "ticket", u.name)
		h.remember(tk.Ticket)
		if err := os.WriteFile(filepath.Join(lc.dir, "ticket"), []byte(tk.Ticket+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		lc.prompts()
		terminalLink(t, lc)
		wantPrompts(t, lc, "Password:", "Linking ticket:", "Verification code:")
		s = lc.liveSSH([]string{"-tt"})
		if exit := s.wait(waitTimeout); exit != 255 || !strings.Contains(s.stderr.String(), "Permission denied") {
			t.Errorf("the same ticket a second time: want Permission denied (exit 255), got %s", s)
		}
		c := newClient(t, u, g.port, "")
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "login through the gate with the phone linked with a ticket")
	})
}

func TestRecoveryCodeLogsInOnce(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)
	u := newUser(t)
	explain(t, g, u)
	codes := g.enrollWithCodes(t, u)
	c := newClient(t, u, g.port, "")
	c.setCode(codes[0])
	mustLogIn(t, c, "a recovery code at the Verification code: prompt")
	wantPrompts(t, c, "Password:", "Verification code:")
	mustBeDeniedSlowly(t, c, "the same recovery code again")
	c.setCode(codes[1])
	mustLogIn(t, c, "another recovery code")
	// The app's codes still work.
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "a code from the app after recovery codes")

	ev := g.waitAudit(t, u.name, "two recovery_used events", func(ev []auditEvent) bool {
		return countKind(ev, "recovery_used", "") == 2
	})
	if n := countKind(ev, "login_refused", ""); n != 1 {
		t.Errorf("audit: %d login_refused events, want 1 (the reused recovery code)", n)
	}
	var info struct {
		State             string `json:"state"`
		RecoveryCodesLeft int    `json:"recovery_codes_left"`
	}
	g.adminJSON(t, &info, "show", u.name)
	if info.State != "active" || info.RecoveryCodesLeft != 8 {
		t.Errorf("admin show after two recovery codes: %+v, want active with 8 left", info)
	}
	g.waitLog(t, 0, `"login accepted"`, u.name, "recovery_code")
}
