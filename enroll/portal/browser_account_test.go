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
