package portal

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// oathtoolAt computes the TOTP code of a base32 secret at the given moment with the real
// oathtool: a phone whose next code is already out, for a test that has spent the current one.
func oathtoolAt(t *testing.T, ctx context.Context, secret string, at time.Time) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "oathtool", "--totp", "-b", fmt.Sprintf("--now=@%d", at.Unix()), secret).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// printShot saves a screenshot of the page as the printer would get it (CSS media "print").
func (b *tab) printShot(name string) {
	b.t.Helper()
	if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: "print"}); err != nil {
		b.t.Fatalf("print media: %v", err)
	}
	b.shot(name)
	if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: ""}); err != nil {
		b.t.Fatalf("screen media: %v", err)
	}
}

// visibleText is the text of the whole body as rendered now (display: none left out), for the
// printout check.
func (b *tab) visibleText() string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		b.t.Fatalf("reading the page: %v", err)
	}
	return s
}

// TestBrowserAccount drives Chromium, scripts off, through the account side of the portal: the
// sign-in form's code field, linking (the QR page's note on several devices, the recovery
// codes' printout), then a refused sign-in from another browser, a sign-in with password and
// code, and the security log that shows the refusal. Screenshots: account-*.png.
func TestBrowserAccount(t *testing.T) {
	needTools(t)
	e := newEnv(t, nil)
	base := serve(t, e)
	dir := screenshotDir(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bctx := startBrowser(t, ctx)
	b := &tab{t: t, ctx: bctx, base: base, dir: dir}
	b.do(chromedp.EmulateViewport(1000, 900))
	noScript(t, bctx)

	b.load("/")
	b.expect("sign-in form", "Verification code", "Leave it empty if you have not linked a device yet")
	b.shot("account-01-sign-in-with-code-field")
	b.typeInto("#username", testUser)
	b.typeInto("#password", testPassword)
	b.click("form.stack button[type=submit]")
	b.click("a.button[href='/link']")
	b.click("form[action='/link/start'] button")
	b.expect("QR page", "More than one device?", "no further device can be added, except by replacing your phone")
	b.shot("account-02-qr-several-devices")
	secret := strings.ReplaceAll(b.textOf(".secret code"), " ", "")
	confirmedAt := time.Now()
	b.typeInto("#code", oathtoolAt(t, ctx, secret, confirmedAt))
	b.click("form[action='/link/confirm'] button")
	b.expect("done page", "Your recovery codes", "Download as text", "use your browser's Print")
	b.shot("account-03-done")
	b.printShot("account-04-done-printed")
	// The printout: the codes, the user name and the date, nothing else.
	if _, err := chromedp.Call(bctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: "print"}); err != nil {
		t.Fatal(err)
	}
	printed := b.visibleText()
	chromedp.Call(bctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: ""})
	if !strings.Contains(printed, "Recovery codes for alice, made on ") || strings.Count(printed, "-") < 20 {
		t.Errorf("the printout lacks the heading or the codes:\n%s", printed)
	}
	for _, never := range []string{"Download", "Sign out", testIssuer, "shown only this once", "Back to your account"} {
		if strings.Contains(printed, never) {
			t.Errorf("the printout says %q:\n%s", never, printed)
		}
	}
	if screen := b.visibleText(); strings.Contains(screen, "Recovery codes for alice, made on") {
		t.Error("the printout's heading shows on the screen")
	}
	b.click("form.signout button")

	// Someone else, in another browser, tries the password with a wrong code.
	other, cancelOther := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	defer cancelOther()
	m := &tab{t: t, ctx: other, base: base, dir: dir}
	m.do(chromedp.EmulateViewport(1000, 900))
	noScript(t, other)
	m.load("/")
	m.typeInto("#username", testUser)
	m.typeInto("#password", testPassword)
	m.typeInto("#code", "000000")
	m.click("form.stack button[type=submit]")
	m.expect("refused sign-in", msgSignInFailed)
	m.shot("account-05-sign-in-refused")

	// The user signs in with the password and the app's next code.
	b.load("/")
	b.typeInto("#username", testUser)
	b.typeInto("#password", testPassword)
	b.typeInto("#code", oathtoolAt(t, ctx, secret, confirmedAt.Add(30*time.Second)))
	b.click("form.stack button[type=submit]")
	b.expect("account page", "Your phone is linked.", "10 of 10", "Replace my phone", "New recovery codes", "Security log")
	log := b.textOf("table.log")
	if !strings.Contains(log, "Login refused (wrong code)\t127.0.0.1\tweb portal") {
		t.Errorf("the security log does not show the refused sign-in with its address:\n%s", log)
	}
	b.shot("account-06-linked-with-security-log")

	// A phone-sized screen: the log must stay readable.
	b.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.load("/")
	b.shot("account-07-phone-security-log")
}

// TestBrowserReplaceAndRenew drives Chromium, scripts off, through replacing the phone and
// getting new recovery codes, with a fake clock and codes from oathtool at the clock's time:
// the old phone signs in until the new one is confirmed, then the other browser is signed out
// and only the new phone works; the new recovery codes replace the old ones. Screenshots:
// replace-*.png.
func TestBrowserReplaceAndRenew(t *testing.T) {
	needTools(t)
	clock := &fakeClock{t: time.Now()}
	e := newEnv(t, clock)
	base := serve(t, e)
	dir := screenshotDir(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bctx := startBrowser(t, ctx)
	b := &tab{t: t, ctx: bctx, base: base, dir: dir}
	b.do(chromedp.EmulateViewport(1000, 900))
	noScript(t, bctx)
	code := func(secret string) string {
		clock.Advance(30 * time.Second) // every code a new step: each is spent once used
		return oathtoolAt(t, ctx, secret, clock.Now())
	}

	// Link the first phone, then sign in again with both factors.
	b.load("/")
	b.typeInto("#username", testUser)
	b.typeInto("#password", testPassword)
	b.click("form.stack button[type=submit]")
	b.click("a.button[href='/link']")
	b.click("form[action='/link/start'] button")
	oldSecret := strings.ReplaceAll(b.textOf(".secret code"), " ", "")
	b.typeInto("#code", code(oldSecret))
	b.click("form[action='/link/confirm'] button")
	oldCodes := strings.Fields(b.textOf("ol.codes"))
	b.click("form.signout button")
	b.typeInto("#username", testUser)
	b.typeInto("#password", testPassword)
	b.typeInto("#code", code(oldSecret))
	b.click("form.stack button[type=submit]")

	// Replace: the intro page with the box, ticked.
	b.click("a.button[href='/replace']")
	b.expect("replace page", "Replace my phone", "Your old phone keeps working until you confirm the new one", "Also end my open SSH sessions")
	b.shot("replace-01-intro")
	b.do(chromedp.Click(chromedp.CSS("#endssh"), chromedp.NodeVisible))
	b.click("form[action='/replace/start'] button[type=submit]")
	b.expect("new QR page", "Scan the new QR code with your new phone", "More than one device?", "Until then your old phone keeps working")
	b.shot("replace-02-new-qr")
	newSecret := strings.ReplaceAll(b.textOf(".secret code"), " ", "")
	if newSecret == oldSecret {
		t.Fatal("the new QR code holds the old secret")
	}

	// The account page while the replacement waits; back to the code form from there.
	b.load("/")
	b.expect("account page while replacing", "Replacing your phone: not finished", "Cancel the replacement and keep my current phone")
	b.shot("replace-02a-account-while-replacing")
	b.click("a.button[href='/replace/qr']")
	b.expect("code page of the replacement", "The QR code is not shown again", "enter a code from the new phone below")
	if strings.Contains(b.html(), newSecret) {
		t.Error("the code page shows the new secret again")
	}

	// Meanwhile the old phone still signs in, in another browser.
	other, cancelOther := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	defer cancelOther()
	o := &tab{t: t, ctx: other, base: base, dir: dir}
	o.do(chromedp.EmulateViewport(1000, 900))
	noScript(t, other)
	o.load("/")
	o.typeInto("#username", testUser)
	o.typeInto("#password", testPassword)
	o.typeInto("#code", code(oldSecret))
	o.click("form.stack button[type=submit]")
	o.expect("the old phone, before the confirmation", "Your phone is linked.")

	// A phone whose clock is 4 minutes fast, a wrong code, then the new phone's.
	b.typeInto("#code", oathtoolAt(t, ctx, newSecret, clock.Now().Add(4*time.Minute)))
	b.click("form[action='/replace/confirm'] button")
	b.expect("code 4 minutes ahead", "Your phone's clock is about 4 minutes fast. Turn on automatic date and time on the phone")
	b.shot("replace-03a-clock-fast")
	b.typeInto("#code", "000000")
	b.click("form[action='/replace/confirm'] button")
	b.expect("wrong code for the new phone", "Enter a code from the new phone", "That code did not match")
	b.shot("replace-03-wrong-code")
	b.typeInto("#code", code(newSecret))
	b.click("form[action='/replace/confirm'] button")
	b.expect("replace done page", "Your new phone is linked", "signed out of this page in 1 other browser",
		"2 open SSH sessions ended", "Your recovery codes")
	b.shot("replace-04-done")
	b.printShot("replace-05-done-printed")
	newCodes := strings.Fields(b.textOf("ol.codes"))
	if len(newCodes) != 10 || newCodes[0] == oldCodes[0] {
		t.Errorf("new recovery codes %q", newCodes)
	}

	// The other browser is signed out; the old phone no longer signs in.
	o.load("/")
	o.expect("the other browser after the replacement", "Sign in")
	o.typeInto("#username", testUser)
	o.typeInto("#password", testPassword)
	o.typeInto("#code", code(oldSecret))
	o.click("form.stack button[type=submit]")
	o.expect("the old phone after the replacement", msgSignInFailed)

	// New recovery codes.
	b.load("/")
	b.click("a.button[href='/recovery']")
	b.expect("recovery page", "New recovery codes", "Your 10 remaining recovery codes stop working at once")
	b.shot("replace-06-renew-confirm")
	b.click("form[action='/recovery/new'] button")
	b.expect("new recovery codes", "Your new recovery codes", "Your old recovery codes no longer work", "Download as text")
	b.shot("replace-07-renewed")
	b.load("/")
	b.expect("account page", "Phone replaced", "New recovery codes made", "Login refused (wrong code)")
	b.shot("replace-08-account-after")

	// A replacement started and cancelled: the current phone stays.
	b.click("a.button[href='/replace']")
	b.click("form[action='/replace/start'] button[type=submit]")
	b.click("form[action='/replace/cancel'] button")
	b.expect("cancelled replacement", "The replacement was cancelled. Your current phone still works.", "Replace my phone")
	b.shot("replace-09-cancelled")
	if !strings.Contains(b.textOf("table.log"), "Phone replacement cancelled") {
		t.Error("the security log does not show the cancelled replacement")
	}
}
