package portal

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/internal/keytest"
)

// The key operations of enroll.Service are what the daemon wires.
var _ KeyManager = (*enroll.Service)(nil)

// keysEnv is a portal with keys enabled and alice signed in with both factors; it returns the
// client at the account page.
func keysEnv(t *testing.T) (*env, *client, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	e.srv.KeysEnabled = true
	c := e.client(t)
	c.signIn(testUser, testPassword)
	secret, _ := linkDevice(t, c, clock)
	c.post("/signout", nil)
	acc := c.signInCode(testUser, testPassword, codeAt(secret, clock.Now()))
	if !strings.Contains(acc.body, `id="ssh-keys"`) || !strings.Contains(acc.body, `action="/keys/add"`) {
		t.Fatalf("account page signed in with both factors has no SSH keys section:\n%s", acc.body)
	}
	return e, c, clock
}

// unescaped is the page's body with HTML entities decoded, for looking for text.
func unescaped(r response) string { return html.UnescapeString(r.body) }

func TestKeysSectionOnlyWhenEnabled(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	c := e.client(t)
	c.signIn(testUser, testPassword)
	secret, _ := linkDevice(t, c, clock)
	c.post("/signout", nil)
	acc := c.signInCode(testUser, testPassword, codeAt(secret, clock.Now()))
	if strings.Contains(acc.body, "SSH keys") {
		t.Errorf("keys disabled, but the account page has an SSH keys section")
	}
	line, _ := keytest.PublicKey(t, "x")
	// Not even a hand-made POST registers a key.
	if r := c.post("/keys/add", url.Values{"public_key": {line}}); r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Errorf("POST /keys/add with keys disabled: status %d Location %q", r.status, r.header.Get("Location"))
	}
	if keys, _ := e.svc.Keys(context.Background(), testUser); len(keys) != 0 {
		t.Errorf("keys disabled, but %d keys were registered", len(keys))
	}
}

func TestKeysNeedBothFactors(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	e.srv.KeysEnabled = true
	c := e.client(t)
	c.signIn(testUser, testPassword)
	// Before a device is linked: no section at all.
	if r := c.get("/"); strings.Contains(r.body, `id="ssh-keys"`) {
		t.Errorf("the SSH keys section shows before a device is linked")
	}
	linkDevice(t, c, clock)
	// The session that linked signed in with the password alone.
	acc := c.get("/")
	if !strings.Contains(acc.body, `id="ssh-keys"`) || strings.Contains(acc.body, `action="/keys/add"`) ||
		!strings.Contains(acc.body, "sign in again with your password and a code from your app") {
		t.Errorf("account page of a password-only session:\n%s", acc.body)
	}
	line, _ := keytest.PublicKey(t, "x")
	r := c.post("/keys/add", url.Values{"public_key": {line}})
	if r.status != http.StatusForbidden || !strings.Contains(r.body, msgKeysNeedBothFactors) {
		t.Errorf("POST /keys/add from a password-only session: status %d, body:\n%s", r.status, r.body)
	}
	if keys, _ := e.svc.Keys(context.Background(), testUser); len(keys) != 0 {
		t.Errorf("a password-only session registered %d keys", len(keys))
	}
}

func TestKeyAddListRevoke(t *testing.T) {
	e, c, clock := keysEnv(t)
	if acc := c.get("/"); !strings.Contains(acc.body, "You have no SSH keys registered here.") {
		t.Errorf("no keys yet, but the page does not say so")
	}

	// A personal key, its label from the form.
	line, fp := keytest.PublicKey(t, "alice@laptop")
	r := c.post("/keys/add", url.Values{"public_key": {line}, "label": {"work laptop"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/#ssh-keys" {
		t.Fatalf("adding a key: status %d Location %q, body:\n%s", r.status, r.header.Get("Location"), r.body)
	}
	acc := c.get("/")
	page := unescaped(acc)
	for _, want := range []string{"SSH key “work laptop” (" + fp + ") added.", fp, "work laptop", "ssh-ed25519",
		`<td class="kind">personal</td>`, `<td class="networks">anywhere</td>`, `<td class="expires">never</td>`,
		`<td class="lastused">never</td>`, `value="` + fp + `"`} {
		if !strings.Contains(page, want) {
			t.Errorf("account page after adding does not have %q", want)
		}
	}
	// The notice is said once.
	if again := unescaped(c.get("/")); strings.Contains(again, "added.") {
		t.Error("the notice shows on a second load")
	}

	// An automation key: networks, expiry, command.
	line2, fp2 := keytest.PublicKey(t, "backup")
	r = c.post("/keys/add", url.Values{"public_key": {line2}, "automation": {"1"}, "from": {"192.0.2.7, 10.1.0.0/16"},
		"expires_days": {"7"}, "command": {"rsync --server --sender . /data"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("adding an automation key: status %d, body:\n%s", r.status, r.body)
	}
	page = unescaped(c.get("/"))
	for _, want := range []string{"SSH key “backup” (" + fp2 + ") added. It logs in without a code from 192.0.2.7/32, 10.1.0.0/16 until " + dateTime(clock.Now().Add(7*24*time.Hour)),
		`<td class="kind">automation</td>`, `<td class="networks">192.0.2.7/32, 10.1.0.0/16</td>`,
		`<td class="expires">` + dateTime(clock.Now().Add(7*24*time.Hour)) + `</td>`,
		`only runs: <code class="command">rsync --server --sender . /data</code>`} {
		if !strings.Contains(page, want) {
			t.Errorf("account page after adding an automation key does not have %q", want)
		}
	}
	keys, _ := e.svc.Keys(context.Background(), testUser)
	if len(keys) != 2 || keys[0].Fingerprint != fp || keys[0].AddedBy != "self" || !keys[1].Automation ||
		keys[1].Command != "rsync --server --sender . /data" || !keys[1].Expires.Equal(clock.Now().Add(7*24*time.Hour)) {
		t.Errorf("stored keys %+v", keys)
	}

	// A remembered device of the first key shows; one that has ended does not.
	e.svc.Store.Update(testUser, func(u *store.User) error {
		u.Remembered = append(u.Remembered,
			store.Remembered{Fingerprint: fp, Network: "203.0.113.0/24", Since: clock.Now(), Until: clock.Now().Add(time.Hour)},
			store.Remembered{Fingerprint: fp, Network: "198.51.100.0/24", Since: clock.Now().Add(-2 * time.Hour), Until: clock.Now().Add(-time.Hour)})
		return nil
	})
	page = unescaped(c.get("/"))
	if !strings.Contains(page, "Remembered devices") || !strings.Contains(page, "<strong>work laptop</strong> from <code>203.0.113.0/24</code>, until "+dateTime(clock.Now().Add(time.Hour))) ||
		strings.Contains(page, "198.51.100.0/24") {
		t.Errorf("remembered devices on the account page:\n%s", page)
	}

	// Revoke the first: the sessions it ended are counted.
	ends := 0
	e.svc.EndKeySessions = func(user, gone string) int {
		if user == testUser && gone == fp {
			ends++
			return 2
		}
		return 0
	}
	r = c.post("/keys/revoke", url.Values{"fingerprint": {fp}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/#ssh-keys" {
		t.Fatalf("revoking: status %d, body:\n%s", r.status, r.body)
	}
	page = unescaped(c.get("/"))
	if !strings.Contains(page, "SSH key “work laptop” ("+fp+") revoked: it no longer logs in. 2 live sessions that had logged in with it were ended.") {
		t.Errorf("no revoke notice with the sessions ended:\n%s", page)
	}
	if strings.Contains(page, `value="`+fp+`"`) || strings.Contains(page, "Remembered devices") || !strings.Contains(page, fp2) {
		t.Errorf("after revoking, the page still lists the key or its remembered device, or lost the other:\n%s", page)
	}
	if ends != 1 {
		t.Errorf("EndKeySessions called %d times, want 1", ends)
	}
	// Revoking it again: it is gone.
	r = c.post("/keys/revoke", url.Values{"fingerprint": {fp}})
	if r.status != http.StatusConflict || !strings.Contains(unescaped(r), msgKeyGone) {
		t.Errorf("revoking twice: status %d, body:\n%s", r.status, r.body)
	}
	// Revoke the second: no live session.
	c.post("/keys/revoke", url.Values{"fingerprint": {fp2}})
	if page := unescaped(c.get("/")); !strings.Contains(page, "No live session had logged in with it.") || strings.Contains(page, `value="`+fp2+`"`) {
		t.Errorf("after revoking the automation key:\n%s", page)
	}

	// The security log tells both.
	page = unescaped(c.get("/"))
	for _, want := range []string{"SSH key added", "SSH key revoked", "(" + fp + ")"} {
		if !strings.Contains(page, want) {
			t.Errorf("the security log does not say %q", want)
		}
	}
	ev, _ := e.svc.Store.Events(store.EventQuery{User: testUser})
	if last := ev[len(ev)-1]; last.Kind != store.EventKeyRevoked || !strings.HasPrefix(last.Actor, "portal ") {
		t.Errorf("last audit event %+v, want %s by the portal", last, store.EventKeyRevoked)
	}
}

func TestKeyAddRefused(t *testing.T) {
	e, c, _ := keysEnv(t)
	line, _ := keytest.PublicKey(t, "me")
	dup, _ := keytest.PublicKey(t, "dup")
	if r := c.post("/keys/add", url.Values{"public_key": {dup}}); r.status != http.StatusSeeOther {
		t.Fatalf("adding: status %d", r.status)
	}
	tests := []struct {
		name string
		form url.Values
		want string
	}{
		{"empty", url.Values{"public_key": {"  "}}, "paste the public key"},
		{"not a key", url.Values{"public_key": {"hello world"}}, "not an SSH public key"},
		{"private key", url.Values{"public_key": {"-----BEGIN OPENSSH PRIVATE KEY-----"}}, "not an SSH public key"},
		{"two lines", url.Values{"public_key": {line + "\n" + dup}}, "one key at a time"},
		{"options", url.Values{"public_key": {`from="10.0.0.0/8" ` + line}}, "options before the key"},
		{"already registered", url.Values{"public_key": {dup}}, "key already registered"},
		{"bad network", url.Values{"public_key": {line}, "from": {"10.0.0.0/33"}}, `network "10.0.0.0/33"`},
		{"automation without networks", url.Values{"public_key": {line}, "automation": {"1"}}, "an automation key needs the networks"},
		{"automation too long", url.Values{"public_key": {line}, "automation": {"1"}, "from": {"10.1.0.0/16"}, "expires_days": {"40"}}, "an automation key lives at most"},
		{"days not a number", url.Values{"public_key": {line}, "expires_days": {"soon"}}, "whole number from 1 to 3650"},
		{"days zero", url.Values{"public_key": {line}, "expires_days": {"0"}}, "whole number from 1 to 3650"},
		{"days too many", url.Values{"public_key": {line}, "expires_days": {"100000"}}, "whole number from 1 to 3650"},
		{"label too long", url.Values{"public_key": {line}, "label": {strings.Repeat("x", 201)}}, "the label is too long"},
		{"command with a control character", url.Values{"public_key": {line}, "command": {"ls\x1b[2J"}}, "control character"},
		{"command too long", url.Values{"public_key": {line}, "command": {strings.Repeat("a", 1025)}}, "the command is too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.post("/keys/add", tt.form)
			page := unescaped(r)
			if r.status != http.StatusUnprocessableEntity || !strings.Contains(page, "The key was not added: ") || !strings.Contains(page, tt.want) {
				t.Errorf("status %d, want 422 with %q; body:\n%s", r.status, tt.want, page)
			}
			// The form keeps what was typed.
			if pk := strings.TrimSpace(tt.form.Get("public_key")); pk != "" && !strings.Contains(page, pk) && len(pk) < 200 {
				t.Errorf("the form lost the public key %q", pk)
			}
		})
	}
	if keys, _ := e.svc.Keys(context.Background(), testUser); len(keys) != 1 {
		t.Errorf("%d keys registered after the refusals, want 1", len(keys))
	}
}

func TestKeyFormsAreGuarded(t *testing.T) {
	e, c, _ := keysEnv(t)
	line, fp := keytest.PublicKey(t, "x")
	// No CSRF token, or a wrong one.
	if r := c.post("/keys/add", url.Values{"public_key": {line}, "csrf": {"nope"}}); r.status != http.StatusForbidden {
		t.Errorf("add with a wrong CSRF token: status %d", r.status)
	}
	// GET changes nothing.
	if r := c.get("/keys/add?public_key=" + url.QueryEscape(line)); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /keys/add: status %d, want 405", r.status)
	}
	if r := c.get("/keys/revoke"); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /keys/revoke: status %d, want 405", r.status)
	}
	if keys, _ := e.svc.Keys(context.Background(), testUser); len(keys) != 0 {
		t.Fatalf("%d keys registered", len(keys))
	}
	c.post("/keys/add", url.Values{"public_key": {line}, "label": {`<script>alert(1)</script>`}})
	acc := c.get("/")
	if strings.Contains(acc.body, "<script>") || !strings.Contains(acc.body, "&lt;script&gt;") {
		t.Errorf("the label is not escaped")
	}
	if r := c.post("/keys/revoke", url.Values{"fingerprint": {fp}, "csrf": {""}}); r.status != http.StatusForbidden {
		t.Errorf("revoke without a CSRF token: status %d", r.status)
	}
	if r := c.post("/keys/revoke", url.Values{"fingerprint": {""}}); r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, msgNoKeyChosen) {
		t.Errorf("revoke without a fingerprint: status %d", r.status)
	}
	// Another user's session cannot revoke alice's key: the fingerprint is looked up in the
	// signed-in user's keys only.
	other := e.client(t)
	other.remote = "192.0.2.11:40000"
	other.signIn("bob", "bobs password")
	if r := other.post("/keys/revoke", url.Values{"fingerprint": {fp}}); r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Errorf("bob (no device) revoking alice's key: status %d Location %q", r.status, r.header.Get("Location"))
	}
	if keys, _ := e.svc.Keys(context.Background(), testUser); len(keys) != 1 {
		t.Errorf("alice has %d keys, want 1", len(keys))
	}
	// Signed out: nothing.
	c.post("/signout", nil)
	c.get("/")
	if r := c.post("/keys/revoke", url.Values{"fingerprint": {fp}}); r.status != http.StatusSeeOther {
		t.Errorf("revoke signed out: status %d", r.status)
	}
	if keys, _ := e.svc.Keys(context.Background(), testUser); len(keys) != 1 {
		t.Errorf("alice has %d keys after a signed-out revoke, want 1", len(keys))
	}
}
