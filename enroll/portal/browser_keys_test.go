package portal

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"gatekeeper/internal/keytest"
)

// TestBrowserKeys drives Chromium, scripts off, through the SSH keys section of the account
// page: sign in with both factors, add a key (its fingerprint computed here with
// ssh.FingerprintSHA256), see it listed, have a bad key refused with its reason and the form
// kept, add an automation key, revoke the first key and see it gone. Screenshots: keys-*.png.
func TestBrowserKeys(t *testing.T) {
	needTools(t)
	clock := &fakeClock{t: time.Now()}
	e := newEnv(t, clock)
	e.srv.KeysEnabled = true
	base := serve(t, e)
	dir := screenshotDir(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bctx := startBrowser(t, ctx)
	b := &tab{t: t, ctx: bctx, base: base, dir: dir}
	b.do(chromedp.EmulateViewport(1000, 900))
	noScript(t, bctx)
	code := func(secret string) string {
		clock.Advance(30 * time.Second) // every code a new step
		return oathtoolAt(t, ctx, secret, clock.Now())
	}

	// Link a phone, then sign in again with both factors.
	b.load("/")
	b.typeInto("#username", testUser)
	b.typeInto("#password", testPassword)
	b.click("form.stack button[type=submit]")
	b.expect("account page signed in with the password alone", "No phone linked yet")
	if strings.Contains(b.text(), "SSH keys") {
		t.Error("the SSH keys section shows before a phone is linked")
	}
	b.click("a.button[href='/link']")
	b.click("form[action='/link/start'] button")
	secret := strings.ReplaceAll(b.textOf(".secret code"), " ", "")
	b.typeInto("#code", code(secret))
	b.click("form[action='/link/confirm'] button")
	b.load("/")
	b.expect("password-only session", "SSH keys", "sign out and sign in again with your password and a code")
	b.click("form.signout button")
	b.typeInto("#username", testUser)
	b.typeInto("#password", testPassword)
	b.typeInto("#code", code(secret))
	b.click("form.stack button[type=submit]")
	b.expect("account page", "Your phone is linked.", "SSH keys", "You have no SSH keys registered here.", "Add a key")
	b.shot("keys-01-none")

	// Add a personal key.
	line, fp := keytest.PublicKey(t, "alice@laptop")
	b.typeInto("#public_key", line)
	b.typeInto("#label", "work laptop")
	b.click("form[action='/keys/add'] button[type=submit]")
	b.expect("account page after adding", "SSH key “work laptop” ("+fp+") added.")
	keys := b.textOf("table.keys")
	for _, want := range []string{"work laptop", fp, "ssh-ed25519", "personal", "anywhere", "never"} {
		if !strings.Contains(keys, want) {
			t.Errorf("the key list does not say %q:\n%s", want, keys)
		}
	}
	b.shot("keys-02-added")

	// A bad key: the reason, and the form as typed.
	b.typeInto("#public_key", "ssh-ed25519 this-is-not-base64")
	b.typeInto("#label", "broken")
	b.click("form[action='/keys/add'] button[type=submit]")
	b.expect("account page after a bad key", "The key was not added: not an SSH public key")
	if v := b.value("#label"); v != "broken" {
		t.Errorf("the label field holds %q after the error, want %q", v, "broken")
	}
	if v := b.value("#public_key"); v != "ssh-ed25519 this-is-not-base64" {
		t.Errorf("the key field holds %q after the error", v)
	}
	b.shot("keys-03-bad-key")

	// An automation key, from a network, for 7 days, one command.
	b.load("/")
	line2, fp2 := keytest.PublicKey(t, "backup")
	b.typeInto("#public_key", line2)
	b.do(chromedp.Click(chromedp.CSS("#automation"), chromedp.NodeVisible))
	b.typeInto("#from", "192.0.2.0/24")
	b.typeInto("#expires_days", "7")
	b.typeInto("#command", "rsync --server --sender . /data")
	b.click("form[action='/keys/add'] button[type=submit]")
	b.expect("account page after adding an automation key", "SSH key “backup” ("+fp2+") added. It logs in without a code from 192.0.2.0/24")
	keys = b.textOf("table.keys")
	for _, want := range []string{fp2, "automation", "192.0.2.0/24", "rsync --server --sender . /data", fp} {
		if !strings.Contains(keys, want) {
			t.Errorf("the key list does not say %q:\n%s", want, keys)
		}
	}
	b.shot("keys-04-automation")
	b.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.load("/")
	b.shot("keys-05-phone")
	b.do(chromedp.EmulateViewport(1000, 900))

	// Revoke the first key: gone from the list, the other stays.
	b.click("form.revoke:has(input[value='" + fp + "']) button")
	b.expect("account page after revoking", "SSH key “work laptop” ("+fp+") revoked: it no longer logs in.", "No live session had logged in with it.")
	keys = b.textOf("table.keys")
	if strings.Contains(keys, fp) || !strings.Contains(keys, fp2) {
		t.Errorf("after revoking, the key list is:\n%s", keys)
	}
	if strings.Contains(b.html(), `value="`+fp+`"`) {
		t.Error("the revoked key still has a revoke button")
	}
	b.shot("keys-06-revoked")
	log := b.textOf("table.log")
	if !strings.Contains(log, "SSH key revoked") || !strings.Contains(log, "SSH key added") {
		t.Errorf("the security log does not show the key changes:\n%s", log)
	}
	if got, _ := e.svc.Keys(ctx, testUser); len(got) != 1 || got[0].Fingerprint != fp2 {
		t.Errorf("stored keys %+v, want only %s", got, fp2)
	}
}

// value is the current value of a form field.
func (b *tab) value(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Value(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("reading %s: %v", sel, err)
	}
	return s
}
