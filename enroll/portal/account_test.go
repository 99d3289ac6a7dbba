package portal

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// Tests of the account side of the portal: sign-in with both factors, the account page of a
// linked user, the security log, and the recovery codes' printout.

var codeOnPage = regexp.MustCompile(`<li><code>([^<]+)</code></li>`)

// linkDevice links a device for the signed-in client c, at the fake clock's time, and returns
// its secret and recovery codes; the clock is then one step on, so that the next code is new.
func linkDevice(t *testing.T, c *client, clock *fakeClock) (secret []byte, codes []string) {
	t.Helper()
	secret = pageSecret(t, c.startLink().body)
	done := c.follow(c.post("/link/confirm", url.Values{"code": {codeAt(secret, clock.Now())}}))
	for _, m := range codeOnPage.FindAllStringSubmatch(done.body, -1) {
		codes = append(codes, m[1])
	}
	if len(codes) != 10 {
		t.Fatalf("linking gave %d recovery codes, want 10:\n%s", len(codes), done.body)
	}
	clock.Advance(30 * time.Second)
	return secret, codes
}

// signInFails posts the sign-in form and expects the one refusal every failure gets.
func signInFails(t *testing.T, c *client, what string, form url.Values) {
	t.Helper()
	c.get("/")
	r := c.post("/signin", form)
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, msgSignInFailed) {
		t.Errorf("%s: status %d, want 401 with %q", what, r.status, msgSignInFailed)
	}
	if r := c.get("/"); !strings.Contains(r.body, `action="/signin"`) {
		t.Errorf("%s signed in", what)
	}
}

func TestSignInWithBothFactors(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	start := c.get("/")
	for _, want := range []string{`name="code"`, "Verification code", "Leave it empty if you have not linked a device yet"} {
		if !strings.Contains(start.body, want) {
			t.Errorf("sign-in form does not have %q", want)
		}
	}
	// Without a device, the password is enough and the code field is ignored.
	acc := c.signInCode(testUser, testPassword, "123456")
	if !strings.Contains(acc.body, "No phone linked yet") {
		t.Fatalf("account page without a device:\n%s", acc.body)
	}
	secret, codes := linkDevice(t, c, clock)
	c.post("/signout", nil)

	// Now the code is needed, from every network, and every failure looks alike.
	user := url.Values{"username": {testUser}, "password": {testPassword}}
	signInFails(t, c, "password alone", user)
	signInFails(t, c, "wrong code", url.Values{"username": {testUser}, "password": {testPassword}, "code": {wrongCodeAt(secret, clock.Now())}})
	signInFails(t, c, "right code, wrong password", url.Values{"username": {testUser}, "password": {"nope"}, "code": {codeAt(secret, clock.Now())}})
	// That code was spent before the password failed: it does not sign in either.
	signInFails(t, c, "spent code", url.Values{"username": {testUser}, "password": {testPassword}, "code": {codeAt(secret, clock.Now())}})

	clock.Advance(30 * time.Second)
	acc = c.signInCode(testUser, testPassword, codeAt(secret, clock.Now()))
	for _, want := range []string{"Your phone is linked.", "Linked on 23 November 2026.", `href="/replace"`, "Replace my phone",
		`href="/recovery"`, "New recovery codes", "<strong>10 of 10</strong> recovery codes left", "Security log"} {
		if !strings.Contains(acc.body, want) {
			t.Errorf("account page signed in with both factors does not have %q", want)
		}
	}
	if strings.Contains(acc.body, "Lost your phone? Ask your admin.") {
		t.Error("the account page sends a user who can replace the phone to the admin")
	}
	c.post("/signout", nil)

	// A recovery code instead of the app's, once.
	acc = c.signInCode(testUser, testPassword, strings.ToUpper(codes[3]))
	if !strings.Contains(acc.body, "<strong>9 of 10</strong> recovery codes left") || !strings.Contains(acc.body, `href="/replace"`) {
		t.Errorf("account page after a recovery code:\n%s", acc.body)
	}
	c.post("/signout", nil)
	signInFails(t, c, "the same recovery code again", url.Values{"username": {testUser}, "password": {testPassword}, "code": {codes[3]}})
}

func TestPasswordOnlySessionChangesNoCredentials(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	linkDevice(t, c, clock)
	// Still the session that signed in with the password alone: it linked the first device,
	// and that is all it may do.
	acc := c.get("/")
	if !strings.Contains(acc.body, "sign in again with a code from your app") ||
		strings.Contains(acc.body, `href="/replace"`) || strings.Contains(acc.body, `href="/recovery"`) {
		t.Errorf("account page of a password-only session with a device:\n%s", acc.body)
	}
	if !strings.Contains(acc.body, "Lost your phone? Ask your admin.") {
		t.Error("the password-only session is not told to ask the admin for a lost phone")
	}
}

func TestFewRecoveryCodesLeftWarns(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	_, codes := linkDevice(t, c, clock)
	c.post("/signout", nil)
	for _, rc := range codes[:8] {
		c.signInCode(testUser, testPassword, rc)
		c.post("/signout", nil)
	}
	acc := c.signInCode(testUser, testPassword, codes[8])
	if !strings.Contains(acc.body, "<strong>1 of 10</strong> recovery codes left. Get new ones before you run out.") ||
		!strings.Contains(acc.body, `class="box warn">You have`) {
		t.Errorf("account page with one recovery code left:\n%s", acc.body)
	}
}

func TestSecurityLog(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	secret, _ := linkDevice(t, c, clock)
	c.post("/signout", nil)

	// Someone elsewhere tries a wrong code, then the user signs in.
	mallory := e.client(t)
	mallory.remote = "198.51.100.7:5555"
	signInFails(t, mallory, "wrong code", url.Values{"username": {testUser}, "password": {"guess"}, "code": {wrongCodeAt(secret, clock.Now())}})
	// An SSH login refused, as the front door records it.
	if err := e.svc.Store.Append(store.Event{Kind: store.EventLoginRefused, User: testUser, Remote: "203.0.113.9",
		Door: store.DoorSSH, Reason: "wrong_password"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Second)
	acc := c.signInCode(testUser, testPassword, codeAt(secret, clock.Now()))

	rows := regexp.MustCompile(`(?s)<tr( class="alarm")?><td class="when">[^<]*</td><td>(.*?)</td><td class="addr">([^<]*)</td><td class="door">([^<]*)</td></tr>`).
		FindAllStringSubmatch(acc.body, -1)
	if len(rows) == 0 {
		t.Fatalf("no security log on the account page:\n%s", acc.body)
	}
	type row struct{ alarm, what, from, where string }
	var got []row
	for _, m := range rows {
		got = append(got, row{m[1], m[2], m[3], m[4]})
	}
	// Newest first: this sign-in, the SSH refusal, the portal refusal, ..., the link.
	want := []row{
		{"", "Login accepted", "192.0.2.10", "web portal"},
		{` class="alarm"`, `Login refused <span class="detail">(wrong password)</span>`, "203.0.113.9", "SSH login"},
		{` class="alarm"`, `Login refused <span class="detail">(wrong code)</span>`, "198.51.100.7", "web portal"},
	}
	for i, w := range want {
		if i >= len(got) || got[i] != w {
			t.Errorf("security log row %d: got %+v, want %+v", i, got[min(i, len(got)-1)], w)
		}
	}
	last := got[len(got)-1]
	if last.what != "Login accepted" || last.from != "192.0.2.10" {
		t.Errorf("oldest row %+v, want the first (password) sign-in", last)
	}
	found := false
	for _, r := range got {
		found = found || (r.what == "Device linked" && r.from == "192.0.2.10" && r.where == "web portal")
	}
	if !found {
		t.Errorf("no \"Device linked\" row from the browser's address: %+v", got)
	}

	// Only the latest SecurityLogEvents.
	for range 30 {
		e.svc.Store.Append(store.Event{Kind: store.EventLoginOK, User: testUser, Remote: "10.1.2.3", Door: store.DoorSSH})
	}
	e.svc.Store.Append(store.Event{Kind: store.EventLoginOK, User: "bob", Remote: "10.9.9.9", Door: store.DoorSSH})
	acc = c.get("/")
	if n := strings.Count(acc.body, `<td class="when">`); n != SecurityLogEvents {
		t.Errorf("%d rows in the security log, want %d", n, SecurityLogEvents)
	}
	if strings.Contains(acc.body, "10.9.9.9") {
		t.Error("the security log shows another user's event")
	}
}

// failingLog is a security log that cannot be read.
type failingLog struct{}

func (failingLog) SecurityLog(context.Context, string, int) ([]store.Event, error) {
	return nil, errors.New("disk on fire")
}

func TestSecurityLogUnavailable(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	linkDevice(t, c, clock)

	e.srv.SecurityLog = failingLog{}
	acc := c.get("/")
	if acc.status != http.StatusOK || !strings.Contains(acc.body, "The security log cannot be read right now") ||
		strings.Contains(acc.body, "disk on fire") {
		t.Errorf("account page when the log cannot be read: status %d\n%s", acc.status, acc.body)
	}
	e.srv.SecurityLog = nil
	if acc := c.get("/"); strings.Contains(acc.body, "Security log") {
		t.Error("the account page shows a security log without a reader")
	}
}

func TestWordEvent(t *testing.T) {
	at := time.Date(2026, 11, 23, 14, 5, 0, 0, time.Local)
	tests := []struct {
		ev   store.Event
		want logRow
	}{
		{store.Event{Kind: store.EventLoginRefused, Remote: "198.51.100.7", Door: store.DoorSSH, Reason: "replayed_code"},
			logRow{What: "Login refused", Detail: "code already used", Source: "198.51.100.7", Door: "SSH login", Alarm: true}},
		{store.Event{Kind: store.EventLoginOK, Remote: "10.0.0.1", Door: store.DoorLinking},
			logRow{What: "Login accepted", Source: "10.0.0.1", Door: "SSH linking"}},
		{store.Event{Kind: store.EventLinkConfirmed, Actor: "portal 192.0.2.1"},
			logRow{What: "Device linked", Source: "192.0.2.1", Door: "web portal"}},
		{store.Event{Kind: store.EventLinkStarted, Actor: "uid 0"},
			logRow{What: "Device linking started", Detail: "by an admin"}},
		{store.Event{Kind: store.EventReset, Actor: "uid 0"},
			logRow{What: "Device reset by an admin", Alarm: true}},
		{store.Event{Kind: "device_replaced", Door: store.DoorPortal, Remote: "2001:db8::1"},
			logRow{What: "Phone replaced", Source: "2001:db8::1", Door: "web portal"}},
		{store.Event{Kind: store.EventRecoveryUsed, Door: store.DoorSSH, Remote: "203.0.113.1"},
			logRow{What: "Recovery code used", Source: "203.0.113.1", Door: "SSH login"}},
		{store.Event{Kind: store.EventLockout}, logRow{What: "Locked out after too many failures", Alarm: true}},
		{store.Event{Kind: "some_future_kind"}, logRow{What: "Some future kind"}},
		{store.Event{Kind: store.EventLoginRefused, Reason: "a_new_reason"}, logRow{What: "Login refused", Alarm: true}},
	}
	for _, tt := range tests {
		tt.ev.Time = at
		tt.want.When = "23 Nov 2026, 14:05 " + at.Format("MST")
		if got := wordEvent(tt.ev); got != tt.want {
			t.Errorf("wordEvent(%+v) = %+v, want %+v", tt.ev, got, tt.want)
		}
	}
}

func TestQRPageSaysSeveralDevicesNowOrNever(t *testing.T) {
	e := newEnv(t, &fakeClock{t: t0})
	c := e.client(t)
	c.signIn(testUser, testPassword)
	qr := c.startLink()
	for _, want := range []string{"scan the same QR code with a second device", "After you leave this page no further device can be added, except by replacing your phone"} {
		if !strings.Contains(qr.body, want) {
			t.Errorf("QR page does not say %q", want)
		}
	}
}

func TestRecoveryCodesPrintout(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	secret := pageSecret(t, c.startLink().body)
	done := c.follow(c.post("/link/confirm", url.Values{"code": {codeAt(secret, clock.Now())}}))
	// The printout is the one part of main that prints: who, when, and the codes.
	m := regexp.MustCompile(`(?s)<section class="printout">\s*<p class="print-only">(.*?)</p>\s*<ol class="codes">(.*?)</ol>\s*</section>`).FindStringSubmatch(done.body)
	if m == nil {
		t.Fatalf("no printout section on the done page:\n%s", done.body)
	}
	if want := "Recovery codes for <strong>alice</strong>, made on 23 November 2026"; m[1] != want {
		t.Errorf("printout heading %q, want %q", m[1], want)
	}
	if n := strings.Count(m[2], "<li>"); n != 10 {
		t.Errorf("printout has %d codes, want 10", n)
	}
	css := c.get(staticPath).body
	for _, want := range []string{"@media print", ".print-only { display: none; }", "main:has(.printout) > :not(.printout) { display: none !important; }"} {
		if !strings.Contains(css, want) {
			t.Errorf("style sheet lacks %q", want)
		}
	}
}
