package portal

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium.
const chromiumPath = "/usr/bin/chromium"

// needTools skips the test when a real tool is missing, but fails it in CI, where the harness
// installs them: a browser test that silently never runs proves nothing.
func needTools(t *testing.T) {
	t.Helper()
	var missing []string
	if _, err := os.Stat(chromiumPath); err != nil {
		missing = append(missing, chromiumPath)
	}
	for _, tool := range []string{"zbarimg", "oathtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing %s (apt-get install chromium zbar-tools oathtool)", strings.Join(missing, ", "))
	}
	t.Skipf("missing %s (apt-get install chromium zbar-tools oathtool)", strings.Join(missing, ", "))
}

// screenshotDir is $GATEKEEPER_SCREENSHOTS (created) or a temporary directory.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("GATEKEEPER_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tab is one browser tab with the helpers the flow needs.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string
}

func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// load opens path (or reloads, for "") and waits for the page.
func (b *tab) load(path string) {
	b.t.Helper()
	if _, err := chromedp.RunResponse(b.ctx, chromedp.Navigate(b.base+path)); err != nil {
		b.t.Fatalf("navigate %s: %v", path, err)
	}
}

// click clicks the element and waits until the page it leads to has loaded.
func (b *tab) click(sel string) {
	b.t.Helper()
	if _, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)); err != nil {
		b.t.Fatalf("click %s: %v", sel, err)
	}
}

func (b *tab) typeInto(sel, text string) {
	b.t.Helper()
	b.do(chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible))
}

// text is the visible text of the page's main part.
func (b *tab) text() string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		b.t.Fatalf("reading the page: %v", err)
	}
	return s
}

func (b *tab) html() string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		b.t.Fatalf("reading the page: %v", err)
	}
	return s
}

func (b *tab) location() string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		b.t.Fatal(err)
	}
	return strings.TrimPrefix(s, b.base)
}

// expect fails unless the page's text says each of want.
func (b *tab) expect(what string, want ...string) {
	b.t.Helper()
	text := b.text()
	for _, w := range want {
		if !strings.Contains(text, w) {
			b.t.Errorf("%s (%s) does not say %q; it says:\n%s", what, b.location(), w, text)
		}
	}
}

// shot saves a screenshot of the whole page as NAME.png.
func (b *tab) shot(name string) {
	b.t.Helper()
	buf, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// TestBrowserLinkFlow drives Debian's Chromium, headless, with page scripts switched off,
// through the whole portal: sign in, link, scan the QR code from the page's PNG with zbarimg,
// compute the code with oathtool, confirm, read and download the recovery codes; then checks
// that a reload and a second tab never show the secret, and that linking from outside needs a
// ticket. Every page is saved as a screenshot (see GATEKEEPER_SCREENSHOTS).
func TestBrowserLinkFlow(t *testing.T) {
	needTools(t)
	e := newEnv(t, nil)
	// The real tickets: issued by enroll, kept (hashed) in the store.
	e.srv.Tickets = e.svc.Store
	bobTicket, _, err := e.svc.Ticket(t.Context(), "bob", "test")
	if err != nil {
		t.Fatalf("issuing a ticket: %v", err)
	}

	base := serve(t, e)

	dir := screenshotDir(t)
	t.Logf("screenshots in %s", dir)
	downloads := t.TempDir()

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bctx := startBrowser(t, ctx)
	b := &tab{t: t, ctx: bctx, base: base, dir: dir}
	// Switch page scripts off: everything must work without them.
	b.do(chromedp.EmulateViewport(1000, 900))
	noScript(t, bctx)
	if _, err := chromedp.CallBrowser(bctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads, EventsEnabled: new(true),
	}); err != nil {
		t.Fatalf("download behaviour: %v", err)
	}

	// 1. Sign in: a wrong password first.
	b.load("/")
	b.expect("start page", "Sign in", "Username", "Password")
	b.shot("01-sign-in")
	b.typeInto("#username", testUser)
	b.typeInto("#password", "not my password")
	b.click("form.stack button[type=submit]")
	b.expect("failed sign-in", msgSignInFailed)
	b.shot("02-sign-in-failed")
	// The form keeps the username; only the password is typed again.
	if v, _ := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS("#username"), "value")); v.Value != testUser {
		t.Errorf("the username field holds %q after a failed sign-in, want %q", v.Value, testUser)
	}
	b.typeInto("#password", testPassword)
	b.click("form.stack button[type=submit]")
	b.expect("account page", "Your account", "No phone linked yet", "Link your mobile device")
	b.shot("03-account-not-linked")

	// From outside the allowed networks (say, the laptop left the VPN) linking is refused.
	e.setAllowed(false)
	b.load("/link")
	b.expect("refusal page", msgOutside)
	b.shot("04-refused-outside")
	e.setAllowed(true)
	b.load("/")

	// 2. What will happen, then Continue.
	b.click("a.button[href='/link']")
	b.expect("intro page", "Google Authenticator", "Microsoft Authenticator", "FreeOTP", "Aegis", "shown only once")
	b.shot("05-before-you-start")
	b.click("form[action='/link/start'] button")
	b.expect("QR page", "Scan the QR code", "Shown only once")
	b.shot("06-qr-code")

	// 3. Read the QR code the way a phone would: from the pixels.
	src, err := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS(".qr img"), "src"))
	if err != nil || !src.Exists {
		t.Fatalf("no QR image: %v", err)
	}
	b64, ok := strings.CutPrefix(src.Value, "data:image/png;base64,")
	if !ok {
		t.Fatalf("QR image src is not an inline PNG: %.60s", src.Value)
	}
	pngBytes, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("QR image: %v", err)
	}
	pngFile := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(pngFile, pngBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "zbarimg", "--raw", "-q", pngFile).Output()
	if err != nil {
		t.Fatalf("zbarimg could not read the QR code: %v", err)
	}
	uri := strings.TrimSpace(string(out))
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/"+testIssuer+":"+testUser {
		t.Fatalf("QR code holds %q; want otpauth://totp/%s:%s?...", uri, testIssuer, testUser)
	}
	q := u.Query()
	if q.Get("issuer") != testIssuer || q.Get("digits") != "6" || q.Get("period") != "30" || q.Get("algorithm") != "SHA1" {
		t.Errorf("QR code parameters: %v", q)
	}
	secret := q.Get("secret")
	if shown := strings.ReplaceAll(b.textOf(".secret code"), " ", ""); shown != secret {
		t.Errorf("text secret %q differs from the QR code's %q", shown, secret)
	}
	href, _ := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS(`a[href^="otpauth:"]`), "href"))
	if href.Value != uri {
		t.Errorf("otpauth link %q differs from the QR code's %q", href.Value, uri)
	}

	// 4. Type the app's code.
	code := oathtool(t, ctx, secret)
	b.typeInto("#code", code)
	b.click("form[action='/link/confirm'] button")
	b.expect("done page", "Your phone is linked", "Your recovery codes", "shown only this once", "Download as text")
	b.shot("07-linked-recovery-codes")
	codesText, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("ol.codes")))
	if err != nil {
		t.Fatal(err)
	}
	codes := strings.Fields(codesText)
	if len(codes) != 10 {
		t.Fatalf("done page shows %d recovery codes, want 10: %q", len(codes), codesText)
	}

	// 5. Download them as text: a data: link, no second request to the server.
	progress := chromedp.BrowserEvents(bctx, browser.DownloadProgress)
	b.do(chromedp.Click(chromedp.CSS("a[download]"), chromedp.NodeVisible))
	var saved string
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("waiting for the download: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			saved = ev.FilePath
			break
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("the download was cancelled")
		}
	}
	if saved == "" {
		saved = filepath.Join(downloads, "recovery-codes-alice.txt")
	}
	if filepath.Base(saved) != "recovery-codes-alice.txt" {
		t.Errorf("downloaded as %s", saved)
	}
	data, err := os.ReadFile(saved)
	if err != nil {
		t.Fatalf("reading the download: %v", err)
	}
	for _, c := range codes {
		if !strings.Contains(string(data), c) {
			t.Errorf("downloaded file lacks %s:\n%s", c, data)
		}
	}

	// 6. Reload the done page: the codes are gone, the account says linked.
	b.load("/link/done")
	if b.location() != "/" || strings.Contains(b.text(), codes[0]) {
		t.Errorf("reloading the done page: at %s, text:\n%s", b.location(), b.text())
	}
	b.expect("account page", "Your phone is linked.", "Linked on ", "Lost your phone? Ask your admin.")
	b.shot("08-account-linked")

	// 7. The QR page again (back button, history, a typed URL): no secret.
	b.load("/link/qr")
	if strings.Contains(b.html(), secret) || strings.Contains(b.html(), "data:image") {
		t.Error("the QR page shows the secret again")
	}

	// 8. Linking from outside the allowed networks needs a ticket; bob has one. He uses a phone.
	e.setAllowed(false)

	// A separate browser context: its own cookies, so a new session.
	phone, cancelPhone := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	defer cancelPhone()
	p := &tab{t: t, ctx: phone, base: b.base, dir: dir}
	p.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	noScript(t, phone)
	p.load("/")
	p.expect("start page from outside", "outside the campus network or VPN", "One-time ticket")
	p.shot("09-phone-sign-in-with-ticket")
	p.typeInto("#username", "bob")
	p.typeInto("#password", "bobs password")
	p.typeInto("#ticket", strings.ToUpper(bobTicket)) // as read out over the phone
	p.click("form.stack button[type=submit]")
	p.expect("account page with a ticket", "No phone linked yet", "one-time ticket")
	p.click("a.button[href='/link']")
	p.click("form[action='/link/start'] button")
	p.expect("QR page on the phone", "Scan the QR code")
	p.shot("10-phone-qr-code")
	if err := e.svc.Store.CheckTicket("bob", bobTicket, time.Now()); err == nil {
		t.Error("the ticket was not used up")
	}

	// 9. A second tab, and a reload, of bob's QR page: the secret is not shown again.
	bobSecret := strings.ReplaceAll(p.textOf(".secret code"), " ", "")
	second, cancelSecond := chromedp.NewContext(phone) // bob's browser, another tab
	defer cancelSecond()
	s2 := &tab{t: t, ctx: second, base: b.base, dir: dir}
	s2.do(chromedp.EmulateViewport(1000, 900))
	s2.load("/link/qr")
	if strings.Contains(s2.html(), bobSecret) || strings.Contains(s2.html(), "data:image") {
		t.Error("a second tab shows bob's secret")
	}
	p.do(chromedp.Reload())
	if strings.Contains(p.html(), bobSecret) || strings.Contains(p.html(), "data:image") {
		t.Error("reloading shows bob's secret again")
	}
	p.expect("reloaded QR page", "For your security the code is shown only once.", "enter a code from the app below")
	p.shot("11-phone-qr-reloaded")

	// 10. A wrong code says so.
	p.typeInto("#code", "12345")
	p.click("form[action='/link/confirm'] button")
	p.expect("wrong code", "That code did not match")
	p.shot("12-phone-wrong-code")
	p.load("/")
	p.expect("account page while pending", "Linking started but not finished", "If you did not scan it")
	p.shot("13-phone-account-pending")

	if t.Failed() {
		t.Logf("screenshots in %s", dir)
	}
}

// serve runs e's portal on 127.0.0.1:0 until the test ends and returns its base URL.
func serve(t *testing.T, e *env) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// startBrowser starts headless Chromium for the test and returns the context of its first tab;
// the browser ends with ctx or the test.
func startBrowser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 900),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	return bctx
}

// noScript switches page scripts off in the tab of ctx.
func noScript(t *testing.T, ctx context.Context) {
	t.Helper()
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatalf("switching scripts off: %v", err)
	}
}

// TestBrowserBackAfterQR: after the QR page, the browser's Back button must not bring the QR
// page (and the secret) back, not even from the back/forward cache, which restores a page
// without asking the server. The page after the QR page renews the session id and sends
// Clear-Site-Data: "cache"; either makes Chromium drop the stored QR page.
func TestBrowserBackAfterQR(t *testing.T) {
	needTools(t)
	tests := []struct {
		name string
		next func(b *tab, secret string) // leaves the QR page
	}{
		{"after a wrong code", func(b *tab, _ string) {
			b.typeInto("#code", "12345")
			b.click("form[action='/link/confirm'] button")
			b.expect("wrong code page", "That code did not match")
		}},
		{"after the account page", func(b *tab, _ string) {
			b.load("/")
			b.expect("account page", "Linking started but not finished")
		}},
		{"after linking", func(b *tab, secret string) {
			b.typeInto("#code", oathtool(b.t, b.ctx, secret))
			b.click("form[action='/link/confirm'] button")
			b.expect("done page", "Your recovery codes")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			bctx := startBrowser(t, ctx)
			b := &tab{t: t, ctx: bctx, base: serve(t, e), dir: screenshotDir(t)}
			noScript(t, bctx)
			b.load("/")
			b.typeInto("#username", testUser)
			b.typeInto("#password", testPassword)
			b.click("form.stack button[type=submit]")
			b.click("a.button[href='/link']")
			b.click("form[action='/link/start'] button")
			b.expect("QR page", "Scan the QR code")
			secret := strings.ReplaceAll(b.textOf(".secret code"), " ", "")
			if !strings.Contains(b.html(), secret) {
				t.Fatal("the QR page does not hold the secret it shows")
			}
			tt.next(b, secret)

			how, html := b.back()
			if strings.Contains(html, secret) || strings.Contains(html, "data:image") {
				t.Errorf("Back (%s) shows the QR page again:\n%.300s", how, html)
			}
			if how == cdppage.NavigationTypeBackForwardCacheRestore {
				t.Errorf("Back restored a page from the back/forward cache")
			}
			t.Logf("Back: %s", how)
		})
	}
}

// back goes one step back in the tab's history, as the Back button does, and returns how the
// page came (a new navigation, or restored from the back/forward cache) and its HTML. It does
// not wait for a load event, which a restored page never fires.
func (b *tab) back() (cdppage.NavigationType, string) {
	b.t.Helper()
	goBack := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		h, err := cdp.Call(ctx, tg, cdppage.GetNavigationHistory, cdp.Empty{})
		if err != nil {
			return err
		}
		if h.CurrentIndex < 1 {
			return errors.New("no history to go back to")
		}
		_, err = cdp.Call(ctx, tg, cdppage.NavigateToHistoryEntry,
			cdppage.NavigateToHistoryEntryParams{EntryID: h.Entries[h.CurrentIndex-1].ID})
		return err
	})
	nav, err := chromedp.Run(b.ctx, chromedp.WaitEvent(cdppage.FrameNavigated,
		func(ev cdppage.EventFrameNavigated) bool { return ev.Frame.ParentID == "" }, goBack))
	if err != nil {
		b.t.Fatalf("going back: %v", err)
	}
	if nav.Type != cdppage.NavigationTypeBackForwardCacheRestore {
		// A real load: wait until it has finished before reading the page.
		if _, err := chromedp.Run(b.ctx, chromedp.WaitReady(chromedp.CSS("footer, main"))); err != nil {
			b.t.Fatalf("waiting for the page after Back: %v", err)
		}
	}
	// Read the document directly: a restored page is not one chromedp has seen load.
	res, err := chromedp.Call(b.ctx, runtime.Evaluate, runtime.EvaluateParams{
		Expression: "document.documentElement.outerHTML", ReturnByValue: new(true)})
	if err != nil {
		b.t.Fatalf("reading the page after Back: %v", err)
	}
	var html string
	if err := json.Unmarshal(res.Result.Value, &html); err != nil {
		b.t.Fatalf("reading the page after Back: %v", err)
	}
	return nav.Type, html
}

// textOf is the text of the first element matching sel.
func (b *tab) textOf(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("reading %s: %v", sel, err)
	}
	return html.UnescapeString(s)
}

// oathtool computes the current TOTP code of a base32 secret with the real oathtool.
func oathtool(t *testing.T, ctx context.Context, secret string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "oathtool", "--totp", "-b", secret).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	code := strings.TrimSpace(string(out))
	if len(code) != 6 {
		t.Fatalf("oathtool printed %q", code)
	}
	return code
}
