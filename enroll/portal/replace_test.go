package portal

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// linkedUser links a device for alice and returns a client signed in with both factors, the
// device's secret and its recovery codes; the clock is one step past the last code used.
func linkedUser(t *testing.T, e *env, clock *fakeClock) (c *client, secret []byte, codes []string) {
	t.Helper()
	c = e.client(t)
	c.signIn(testUser, testPassword)
	secret, codes = linkDevice(t, c, clock)
	c.post("/signout", nil)
	acc := c.signInCode(testUser, testPassword, codeAt(secret, clock.Now()))
	if !strings.Contains(acc.body, `href="/replace"`) {
		t.Fatalf("signed in with both factors, the account page offers no replacement:\n%s", acc.body)
	}
	clock.Advance(30 * time.Second)
	return c, secret, codes
}

// canSignIn reports whether a fresh browser signs in as alice with code.
func canSignIn(t *testing.T, e *env, code string) bool {
	t.Helper()
	c := e.client(t)
	c.get("/")
	r := c.post("/signin", url.Values{"username": {testUser}, "password": {testPassword}, "code": {code}})
	return r.status == http.StatusSeeOther
}

// startReplace goes from the account page through the replace page to the new QR page and
// returns the new secret.
func startReplace(t *testing.T, c *client, endSSH bool) []byte {
	t.Helper()
	intro := c.get("/replace")
	for _, want := range []string{"Replace my phone", "keeps working until you confirm the new one", `action="/replace/start"`,
		`name="endssh"`, "Also end my open SSH sessions", "Jobs you started on the cluster keep running"} {
		if !strings.Contains(intro.body, want) {
			t.Errorf("replace page does not have %q", want)
		}
	}
	form := url.Values{}
	if endSSH {
		form.Set("endssh", "1")
	}
	r := c.post("/replace/start", form)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/replace/qr" {
		t.Fatalf("POST /replace/start: status %d Location %q\n%s", r.status, r.header.Get("Location"), r.body)
	}
	qr := c.get("/replace/qr")
	for _, want := range []string{"Scan the new QR code with your new phone", "on your <strong>new</strong> phone",
		"data:image/png;base64,", `action="/replace/confirm"`, "Until then your old phone keeps working"} {
		if !strings.Contains(qr.body, want) {
			t.Errorf("new QR page does not have %q", want)
		}
	}
	return pageSecret(t, qr.body)
}

func TestReplacePhone(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, oldSecret, oldCodes := linkedUser(t, e, clock)
	// Two more browsers of alice's: one signed in with a recovery code.
	other := e.client(t)
	other.signInCode(testUser, testPassword, oldCodes[0])

	newSecret := startReplace(t, c, true)
	// Reload: the new secret is gone, the code form stays.
	again := c.get("/replace/qr")
	if secretOnPage.MatchString(again.body) || strings.Contains(again.body, "data:image") ||
		!strings.Contains(again.body, `action="/replace/confirm"`) || !strings.Contains(again.body, "new QR code is shown only once") {
		t.Errorf("reloaded new QR page:\n%s", again.body)
	}
	// The account page says a replacement waits, and offers no second one.
	if acc := c.get("/"); !strings.Contains(acc.body, "Replacing your phone: not finished") || strings.Contains(acc.body, `href="/replace"`) {
		t.Errorf("account page while the replacement waits:\n%s", acc.body)
	}
	if r := c.get("/replace"); r.status != http.StatusSeeOther || r.header.Get("Location") != "/replace/qr" {
		t.Errorf("GET /replace while this session's replacement waits: status %d Location %q", r.status, r.header.Get("Location"))
	}

	// Until the confirmation the old phone works, the new one does not.
	third := e.client(t)
	third.signInCode(testUser, testPassword, codeAt(oldSecret, clock.Now()))
	if canSignIn(t, e, codeAt(newSecret, clock.Now())) {
		t.Error("the new phone signs in before it is confirmed")
	}

	// A wrong code, then the right one.
	bad := c.post("/replace/confirm", url.Values{"code": {wrongCodeAt(newSecret, clock.Now())}})
	if bad.status != http.StatusUnprocessableEntity || !strings.Contains(bad.body, "Enter a code from the new phone") ||
		!strings.Contains(bad.body, msgBadCode) || !strings.Contains(bad.body, `action="/replace/confirm"`) {
		t.Errorf("wrong code for the new phone: status %d\n%s", bad.status, bad.body)
	}
	clock.Advance(30 * time.Second)
	r := c.post("/replace/confirm", url.Values{"code": {codeAt(newSecret, clock.Now())}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/replace/done" {
		t.Fatalf("confirming the new phone: status %d Location %q\n%s", r.status, r.header.Get("Location"), r.body)
	}
	done := c.get("/replace/done")
	for _, want := range []string{"Your new phone is linked", "The old phone's codes no longer work",
		"You were signed out of this page in 2 other browsers. 2 open SSH sessions ended.",
		`download="recovery-codes-alice.txt"`, `<section class="printout">`} {
		if !strings.Contains(done.body, want) {
			t.Errorf("replace done page does not have %q", want)
		}
	}
	var newCodes []string
	for _, m := range codeOnPage.FindAllStringSubmatch(done.body, -1) {
		newCodes = append(newCodes, m[1])
	}
	if len(newCodes) != 10 {
		t.Fatalf("replace done page shows %d recovery codes, want 10", len(newCodes))
	}
	if got := e.sshEndedFor(); !slices.Equal(got, []string{testUser}) {
		t.Errorf("SSH sessions ended for %q, want alice's", got)
	}
	// Shown once.
	if r := c.get("/replace/done"); r.status != http.StatusSeeOther || strings.Contains(r.body, newCodes[0]) {
		t.Errorf("second GET /replace/done: status %d", r.status)
	}
	// The other browsers are signed out; this one is not.
	for name, cl := range map[string]*client{"other": other, "third": third} {
		if r := cl.get("/"); !strings.Contains(r.body, `action="/signin"`) {
			t.Errorf("the %s browser is still signed in after the replacement", name)
		}
	}
	if r := c.get("/"); !strings.Contains(r.body, "Your account") {
		t.Error("the browser that replaced the phone was signed out")
	}

	// From now on only the new phone and the new recovery codes work.
	clock.Advance(30 * time.Second)
	if canSignIn(t, e, codeAt(oldSecret, clock.Now())) {
		t.Error("the old phone still signs in after the replacement")
	}
	if canSignIn(t, e, oldCodes[1]) {
		t.Error("an old recovery code still signs in after the replacement")
	}
	if !canSignIn(t, e, codeAt(newSecret, clock.Now())) {
		t.Error("the new phone does not sign in")
	}
	if !canSignIn(t, e, newCodes[0]) || canSignIn(t, e, newCodes[0]) {
		t.Error("a new recovery code does not sign in exactly once")
	}
	kinds := auditKinds(t, e, testUser)
	if countOf(kinds, "device_replaced") != 1 {
		t.Errorf("audit log %v: want one device_replaced", kinds)
	}
}

func TestReplaceKeepsSSHSessionsUnlessTicked(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, _, _ := linkedUser(t, e, clock)
	newSecret := startReplace(t, c, false)
	c.follow(c.post("/replace/confirm", url.Values{"code": {codeAt(newSecret, clock.Now())}}))
	if got := e.sshEndedFor(); len(got) != 0 {
		t.Errorf("SSH sessions ended for %q without the box ticked", got)
	}

	// Without an EndSSH the box is not offered, and a forged one does nothing.
	e.srv.EndSSH = nil
	clock.Advance(30 * time.Second)
	c.post("/signout", nil)
	c.signInCode(testUser, testPassword, codeAt(newSecret, clock.Now()))
	clock.Advance(30 * time.Second)
	if r := c.get("/replace"); strings.Contains(r.body, `name="endssh"`) {
		t.Error("the replace page offers to end SSH sessions without a way to")
	}
}

func TestCredentialChangesNeedBothFactors(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	_, codes := linkDevice(t, c, clock)
	before, _ := e.svc.Store.Get(testUser)

	// The session that signed in with the password alone linked the device; it may not change it.
	for _, get := range []string{"/replace", "/recovery"} {
		r := c.get(get)
		if r.status != http.StatusForbidden || !strings.Contains(r.body, msgNeedBothFactors) {
			t.Errorf("GET %s from a password-only session: status %d\n%s", get, r.status, r.body)
		}
	}
	for _, post := range []string{"/replace/start", "/recovery/new", "/replace/confirm"} {
		r := c.post(post, url.Values{"endssh": {"1"}, "code": {"123456"}})
		if r.status != http.StatusForbidden || !strings.Contains(r.body, msgNeedBothFactors) ||
			strings.Contains(r.body, "data:image") || codeOnPage.MatchString(r.body) {
			t.Errorf("POST %s from a password-only session: status %d\n%s", post, r.status, r.body)
		}
	}
	after, _ := e.svc.Store.Get(testUser)
	if len(after.Recovery) != len(before.Recovery) || !slices.EqualFunc(after.Recovery, before.Recovery, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Error("a password-only session changed the recovery codes")
	}
	if !canSignIn(t, e, codes[0]) {
		t.Error("the recovery codes stopped working")
	}
	if len(e.sshEndedFor()) != 0 {
		t.Error("a password-only session ended SSH sessions")
	}

	// A user without a device is sent to the account page.
	b := e.client(t)
	b.signIn("bob", "bobs password")
	if r := b.get("/replace"); r.status != http.StatusSeeOther {
		t.Errorf("GET /replace without a device: status %d", r.status)
	}
	if r := b.post("/recovery/new", nil); r.status != http.StatusSeeOther {
		t.Errorf("POST /recovery/new without a device: status %d", r.status)
	}
	if u, _ := e.svc.Store.Get("bob"); u.State != store.StateNone || len(u.Recovery) != 0 {
		t.Errorf("bob's record changed: %+v", u)
	}
}

func TestCredentialChangesCSRF(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, _, _ := linkedUser(t, e, clock)
	before, _ := e.svc.Store.Get(testUser)
	for _, path := range []string{"/replace/start", "/replace/confirm", "/replace/cancel", "/recovery/new"} {
		for name, token := range map[string]string{"no token": "", "wrong token": "AAAAAAAAAAAAAAAAAAAAAAAAAA"} {
			form := url.Values{"code": {"123456"}, "endssh": {"1"}}
			if token != "" {
				form.Set("csrf", token)
			}
			r := c.postRaw(path, "application/x-www-form-urlencoded", form.Encode())
			if r.status != http.StatusForbidden || !strings.Contains(r.body, "This form has expired") {
				t.Errorf("POST %s with %s: status %d", path, name, r.status)
			}
		}
		req := url.Values{"csrf": {c.csrf}}
		r := c.do(newCrossSitePost(path, req))
		if r.status != http.StatusForbidden {
			t.Errorf("cross-site POST %s: status %d", path, r.status)
		}
	}
	after, _ := e.svc.Store.Get(testUser)
	if len(after.Recovery) != len(before.Recovery) || string(after.Recovery[0]) != string(before.Recovery[0]) {
		t.Error("a forged form changed the recovery codes")
	}
	if r := c.get("/"); strings.Contains(r.body, "Replacing your phone") {
		t.Error("a forged form started a replacement")
	}
}

func TestReplaceWrongCodesCancel(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, oldSecret, _ := linkedUser(t, e, clock)
	newSecret := startReplace(t, c, true)
	wrong := wrongCodeAt(newSecret, clock.Now())
	for i := range 5 {
		if r := c.post("/replace/confirm", url.Values{"code": {wrong}}); r.status != http.StatusUnprocessableEntity {
			t.Fatalf("wrong code %d: status %d", i+1, r.status)
		}
	}
	r := c.post("/replace/confirm", url.Values{"code": {codeAt(newSecret, clock.Now())}})
	if r.status != http.StatusConflict || !strings.Contains(r.body, msgReplaceVoided) {
		t.Errorf("after 5 wrong codes: status %d\n%s", r.status, r.body)
	}
	if r := c.get("/"); !strings.Contains(r.body, `href="/replace"`) || strings.Contains(r.body, "Replacing your phone") {
		t.Errorf("account page after the cancelled replacement:\n%s", r.body)
	}
	if !canSignIn(t, e, codeAt(oldSecret, clock.Now())) {
		t.Error("the old phone stopped working after a cancelled replacement")
	}
	if len(e.sshEndedFor()) != 0 {
		t.Error("a cancelled replacement ended SSH sessions")
	}
}

func TestReplaceExpires(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, oldSecret, _ := linkedUser(t, e, clock)
	newSecret := startReplace(t, c, false)
	clock.Advance(10 * time.Minute)
	c.get("/") // the session is kept alive by the user
	r := c.post("/replace/confirm", url.Values{"code": {codeAt(newSecret, clock.Now())}})
	if r.status != http.StatusConflict || !strings.Contains(r.body, msgReplaceExpired) {
		t.Errorf("confirming an expired replacement: status %d\n%s", r.status, r.body)
	}
	if !canSignIn(t, e, codeAt(oldSecret, clock.Now())) {
		t.Error("the old phone stopped working after an expired replacement")
	}
	// It can be started again.
	if again := startReplace(t, c, false); string(again) == string(newSecret) {
		t.Error("the new replacement reuses the expired secret")
	}
}

func TestReplaceSecretOnlyOnItsOwnPage(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, _, _ := linkedUser(t, e, clock)
	c.get("/replace")
	if r := c.post("/replace/start", nil); r.status != http.StatusSeeOther {
		t.Fatalf("POST /replace/start: status %d", r.status)
	}
	// The first-link pages neither show the replacement's secret nor consume it.
	if r := c.get("/link/qr"); r.status != http.StatusSeeOther || strings.Contains(r.body, "data:image") {
		t.Errorf("GET /link/qr during a replacement: status %d", r.status)
	}
	secret := pageSecret(t, c.get("/replace/qr").body)
	// Nor does the first link's confirmation spend the replacement's binding.
	c.post("/link/confirm", url.Values{"code": {codeAt(secret, clock.Now())}})
	if r := c.post("/replace/confirm", url.Values{"code": {codeAt(secret, clock.Now())}}); r.status != http.StatusSeeOther {
		t.Errorf("confirming the replacement after a POST to /link/confirm: status %d\n%s", r.status, r.body)
	}
}

func TestReplaceRotatesSessionAfterQR(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, _, _ := linkedUser(t, e, clock)
	startReplace(t, c, false)
	before := c.cookie
	r := c.get("/")
	if c.cookie == before || r.header.Get("Clear-Site-Data") != `"cache"` {
		t.Errorf("the page after the new QR page kept the session id (%v) or sent no Clear-Site-Data (%q)",
			c.cookie == before, r.header.Get("Clear-Site-Data"))
	}
	old := &client{t: t, h: e.srv.Handler(), remote: c.remote, cookie: before}
	if r := old.get("/replace/qr"); r.status != http.StatusSeeOther {
		t.Errorf("the old session id still works: status %d", r.status)
	}
}

func TestRenewRecoveryCodes(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, secret, oldCodes := linkedUser(t, e, clock)
	other := e.client(t)
	other.signInCode(testUser, testPassword, oldCodes[0])

	page := c.get("/recovery")
	for _, want := range []string{"New recovery codes", "Your 9 remaining recovery codes stop working at once", `action="/recovery/new"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("recovery page does not have %q:\n%s", want, page.body)
		}
	}
	if u, _ := e.svc.Store.Get(testUser); len(u.Recovery) != 9 {
		t.Fatalf("%d recovery codes before renewing, want 9", len(u.Recovery))
	}
	r := c.post("/recovery/new", nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/recovery/done" {
		t.Fatalf("POST /recovery/new: status %d Location %q", r.status, r.header.Get("Location"))
	}
	done := c.get("/recovery/done")
	for _, want := range []string{"Your new recovery codes", "Your old recovery codes no longer work",
		"You were signed out of this page in 1 other browser.", `download="recovery-codes-alice.txt"`, `<section class="printout">`} {
		if !strings.Contains(done.body, want) {
			t.Errorf("recovery done page does not have %q", want)
		}
	}
	if strings.Contains(done.body, "SSH session") {
		t.Error("new recovery codes say something about SSH sessions")
	}
	var codes []string
	for _, m := range codeOnPage.FindAllStringSubmatch(done.body, -1) {
		codes = append(codes, m[1])
	}
	if len(codes) != 10 {
		t.Fatalf("%d new recovery codes shown, want 10", len(codes))
	}
	if r := c.get("/recovery/done"); r.status != http.StatusSeeOther {
		t.Errorf("second GET /recovery/done: status %d", r.status)
	}
	if r := other.get("/"); !strings.Contains(r.body, `action="/signin"`) {
		t.Error("the other browser is still signed in after new recovery codes")
	}
	if acc := c.get("/"); !strings.Contains(acc.body, "<strong>10 of 10</strong>") {
		t.Errorf("account page after renewing:\n%s", acc.body)
	}
	if canSignIn(t, e, oldCodes[1]) {
		t.Error("an old recovery code still signs in")
	}
	if !canSignIn(t, e, codes[4]) || canSignIn(t, e, codes[4]) {
		t.Error("a new recovery code does not sign in exactly once")
	}
	if !canSignIn(t, e, codeAt(secret, clock.Now())) {
		t.Error("the phone stopped working after new recovery codes")
	}
	if got := e.sshEndedFor(); len(got) != 0 {
		t.Errorf("new recovery codes ended SSH sessions of %q", got)
	}
}

// newCrossSitePost is a form POST as a browser sends it from another site.
func newCrossSitePost(path string, form url.Values) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, "http://portal.test"+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	return req
}

func TestReplaceCancel(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, oldSecret, _ := linkedUser(t, e, clock)
	newSecret := startReplace(t, c, true)
	if r := c.get("/replace/qr"); !strings.Contains(r.body, `action="/replace/cancel"`) {
		t.Errorf("the code page of a replacement offers no cancel:\n%s", r.body)
	}
	r := c.post("/replace/cancel", nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, msgReplaceCancelled) || !strings.Contains(r.body, `href="/replace"`) {
		t.Errorf("cancelling the replacement: status %d\n%s", r.status, r.body)
	}
	if r := c.post("/replace/confirm", url.Values{"code": {codeAt(newSecret, clock.Now())}}); r.status != http.StatusConflict ||
		!strings.Contains(r.body, msgReplaceGone) {
		t.Errorf("confirming a cancelled replacement: status %d\n%s", r.status, r.body)
	}
	if !canSignIn(t, e, codeAt(oldSecret, clock.Now())) {
		t.Error("the current phone stopped working after a cancelled replacement")
	}
	if len(e.sshEndedFor()) != 0 {
		t.Error("a cancelled replacement ended SSH sessions")
	}
	if kinds := auditKinds(t, e, testUser); countOf(kinds, "replace_cancelled") != 1 || countOf(kinds, "device_replaced") != 0 {
		t.Errorf("audit log %v: want replace_cancelled and no device_replaced", kinds)
	}
}

// The clock help: a code that the new secret gives 4 minutes ahead (a phone whose clock is fast)
// gets the advice, and confirms nothing; in a first link and in a replacement.
func TestConfirmClockMessage(t *testing.T) {
	const want = "Your phone&#39;s clock is about 4 minutes fast. Turn on automatic date and time on the phone, then try a new code."
	t.Run("first link", func(t *testing.T) {
		clock := &fakeClock{t: t0}
		e := newEnv(t, clock)
		c := e.client(t)
		c.signIn(testUser, testPassword)
		secret := pageSecret(t, c.startLink().body)
		r := c.post("/link/confirm", url.Values{"code": {codeAt(secret, clock.Now().Add(4*time.Minute))}})
		if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, want) || strings.Contains(r.body, msgBadCode) {
			t.Errorf("a code 4 minutes ahead: status %d\n%s", r.status, r.body)
		}
		if u, _ := e.svc.Store.Get(testUser); u.State != store.StatePending {
			t.Errorf("a code 4 minutes ahead left the link %s", u.State)
		}
	})
	t.Run("replacement", func(t *testing.T) {
		clock := &fakeClock{t: t0}
		e := newEnv(t, clock)
		c, oldSecret, _ := linkedUser(t, e, clock)
		newSecret := startReplace(t, c, false)
		r := c.post("/replace/confirm", url.Values{"code": {codeAt(newSecret, clock.Now().Add(4*time.Minute))}})
		if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, want) {
			t.Errorf("a code 4 minutes ahead: status %d\n%s", r.status, r.body)
		}
		if !canSignIn(t, e, codeAt(oldSecret, clock.Now())) {
			t.Error("a code 4 minutes ahead replaced the phone")
		}
		// A slow clock too.
		r = c.post("/replace/confirm", url.Values{"code": {codeAt(newSecret, clock.Now().Add(-3*time.Minute))}})
		if !strings.Contains(r.body, "about 3 minutes slow") {
			t.Errorf("a code 3 minutes behind:\n%s", r.body)
		}
	})
}

func TestReplaceWithTheCurrentPhonesCode(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, oldSecret, _ := linkedUser(t, e, clock)
	startReplace(t, c, false)
	r := c.post("/replace/confirm", url.Values{"code": {codeAt(oldSecret, clock.Now())}})
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, msgCurrentDevice) {
		t.Errorf("the current phone's code for the new one: status %d\n%s", r.status, r.body)
	}
}

// TestReplaceInTheSignInsWindow: the new phone's code of the 30-second window that the sign-in
// used is refused as used (each window's code is good once, across phones too), saying so, not
// as a wrong code; the next window's code confirms the new phone.
func TestReplaceInTheSignInsWindow(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, _, _ := linkedUser(t, e, clock) // signed in with the code of the window before now
	next := startReplace(t, c, false)
	r := c.post("/replace/confirm", url.Values{"code": {codeAt(next, clock.Now().Add(-30*time.Second))}})
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, msgUsedCode) || strings.Contains(r.body, msgBadCode) {
		t.Errorf("the new phone's code of the sign-in's window: status %d\n%s", r.status, r.body)
	}
	r = c.post("/replace/confirm", url.Values{"code": {codeAt(next, clock.Now())}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/replace/done" {
		t.Errorf("the next window's code: status %d Location %q\n%s", r.status, r.header.Get("Location"), r.body)
	}
}

func TestReplacePendingElsewhere(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, secret, _ := linkedUser(t, e, clock)
	c2 := e.client(t)
	c2.signInCode(testUser, testPassword, codeAt(secret, clock.Now()))
	newSecret := startReplace(t, c, false)

	r := c2.post("/replace/start", nil)
	if r.status != http.StatusConflict || !strings.Contains(r.body, msgReplacePending) || strings.Contains(r.body, "data:image") {
		t.Errorf("a second replacement while one waits elsewhere: status %d\n%s", r.status, r.body)
	}
	clock.Advance(30 * time.Second) // c2 spent this step signing in
	// Nor can the other session confirm this one.
	if r := c2.post("/replace/confirm", url.Values{"code": {codeAt(newSecret, clock.Now())}}); r.status != http.StatusConflict {
		t.Errorf("confirming another session's replacement: status %d\n%s", r.status, r.body)
	}
	if r := c.post("/replace/confirm", url.Values{"code": {codeAt(newSecret, clock.Now())}}); r.status != http.StatusSeeOther {
		t.Errorf("the session that started it could not confirm it: status %d\n%s", r.status, r.body)
	}
}

func TestReplaceGarbageCodes(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c, oldSecret, _ := linkedUser(t, e, clock)
	startReplace(t, c, true)
	// Four garbage answers: within the five tries, so the replacement stays for the real code.
	for _, code := range []string{"\x00\x01", strings.Repeat("9", 10000), "-123456", "<script>"} {
		r := c.post("/replace/confirm", url.Values{"code": {code}})
		if r.status >= 500 || r.status == http.StatusSeeOther || strings.Contains(r.body, "<script>") {
			t.Errorf("code %.20q: status %d", code, r.status)
		}
		checkHeaders(t, "garbage code", r.header)
	}
	if !canSignIn(t, e, codeAt(oldSecret, clock.Now())) || len(e.sshEndedFor()) != 0 {
		t.Error("garbage codes changed the phone or ended SSH sessions")
	}
}
