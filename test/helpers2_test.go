package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Helpers of the device-linking and admin tests (link_e2e_test.go, admin_e2e_test.go): the
// daemon's other listeners, admin commands, live sessions, metrics, and a real Chromium.

const (
	// chromiumPath is Debian's Chromium, driven headless by the portal tests.
	chromiumPath = "/usr/bin/chromium"
	// waitTimeout bounds every poll for something the daemon or a client should do soon.
	waitTimeout = 30 * time.Second
	// pollInterval is how often a poll looks again.
	pollInterval = 50 * time.Millisecond
)

// needTools fails the test (it never skips: base already skipped without root) when a program
// the linking and admin tests run is missing.
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	base(t)
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("missing programs %v (Debian: chromium, zbar-tools, oathtool, libpam-google-authenticator): "+
			"run scripts/install-deps.sh as root", missing)
	}
}

// enrollSettings is a gkOptions.edit that sets enroll.allowed_networks (a YAML list) and, if not
// empty, enroll.confirm_within.
func enrollSettings(allowed, confirmWithin string) func(string) string {
	return func(cfg string) string {
		extra := "enroll:\n  allowed_networks: " + allowed + "\n"
		if confirmWithin != "" {
			extra += fmt.Sprintf("  confirm_within: %q\n", confirmWithin)
		}
		if !strings.Contains(cfg, "enroll:\n") {
			panic("enrollSettings: the tests' config template has no enroll: section")
		}
		return strings.Replace(cfg, "enroll:\n", extra, 1)
	}
}

// configValue returns the quoted value of key in g's config file (e.g. portal_listen).
func (g *gatekeeper) configValue(t testing.TB, key string) string {
	t.Helper()
	b, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(key) + `: "([^"]*)"`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in %s", key, g.cfgPath)
	}
	return string(m[1])
}

// portalAddr is the address of g's linking portal (enroll.portal_listen).
func (g *gatekeeper) portalAddr(t testing.TB) string { return g.configValue(t, "portal_listen") }

// linkPort is the port of g's SSH linking listener (enroll.ssh_listen).
func (g *gatekeeper) linkPort(t testing.TB) int {
	t.Helper()
	_, p, err := net.SplitHostPort(g.configValue(t, "ssh_listen"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// signal sends sig to the running daemon.
func (g *gatekeeper) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	g.mu.Lock()
	cmd := g.cmd
	g.mu.Unlock()
	if cmd == nil {
		t.Fatalf("signal %v: gatekeeper not running", sig)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// waitExit waits up to timeout for the daemon to exit on its own and returns its exit error
// (nil for exit status 0); ok is false when it is still running.
func (g *gatekeeper) waitExit(timeout time.Duration) (exitErr error, ok bool) {
	g.mu.Lock()
	exited := g.exited
	g.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(timeout):
		return nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	exitErr, g.cmd = g.waitErr, nil
	return exitErr, true
}

// waitLog polls the daemon's log, from byte offset from on, until a line contains every one
// of want, and returns that line.
func (g *gatekeeper) waitLog(t testing.TB, from int, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		log := g.logBytes()
		if from <= len(log) {
			for line := range strings.Lines(string(log[from:])) {
				if containsAll(line, want...) {
					return line
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within %v; log since then:\n%s", want, waitTimeout, tail(log[min(from, len(log)):], 30))
		}
		time.Sleep(pollInterval)
	}
}

func containsAll(s string, want ...string) bool {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------------------------
// admin commands

// adminRun runs `gatekeeper admin ARGS... --config CFG` as root, the way an admin would.
func (g *gatekeeper) adminRun(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.bin, append(append([]string{"admin"}, args...), "--config", g.cfgPath)...)
	cmd.Env = cleanEnv("HOME=" + g.dir)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// admin runs an admin command that must succeed and returns its standard output.
func (g *gatekeeper) admin(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := g.adminRun(t, args...)
	if err != nil {
		t.Fatalf("gatekeeper admin %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// adminJSON runs `gatekeeper admin ARGS -o json`, which must succeed, and decodes its output
// into v, strictly: the output is for scripts, so it must be one JSON document.
func (g *gatekeeper) adminJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	out := g.admin(t, append(args, "-o", "json")...)
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("gatekeeper admin %s -o json: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Fatalf("gatekeeper admin %s -o json: more than one JSON document:\n%s", strings.Join(args, " "), out)
	}
}

// auditEvent is one entry of `gatekeeper admin audit -o json`.
type auditEvent struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	User   string    `json:"user"`
	Remote string    `json:"remote"`
	Reason string    `json:"reason"`
	Actor  string    `json:"actor"`
	Detail string    `json:"detail"`
}

func (e auditEvent) String() string {
	return fmt.Sprintf("#%d %s %s user=%q remote=%q actor=%q reason=%q detail=%q",
		e.Seq, e.Time.Format(time.RFC3339), e.Kind, e.User, e.Remote, e.Actor, e.Reason, e.Detail)
}

// audit returns user's audit events from `gatekeeper admin audit --user U -o json`.
func (g *gatekeeper) audit(t testing.TB, user string) []auditEvent {
	t.Helper()
	var events []auditEvent
	g.adminJSON(t, &events, "audit", "--user", user)
	return events
}

// waitAudit polls user's audit log until ok accepts it (the daemon writes audit events in
// batches, a moment after the decision) and returns the events.
func (g *gatekeeper) waitAudit(t testing.TB, user, what string, ok func([]auditEvent) bool) []auditEvent {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		events := g.audit(t, user)
		if ok(events) {
			return events
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, e := range events {
				b.WriteString(e.String() + "\n")
			}
			t.Fatalf("audit log of %s: no %s within %v; it holds:\n%s", user, what, waitTimeout, b.String())
		}
		time.Sleep(4 * pollInterval)
	}
}

// countKind counts the events of kind (and, if actor is not empty, by that actor).
func countKind(events []auditEvent, kind, actor string) int {
	n := 0
	for _, e := range events {
		if e.Kind == kind && (actor == "" || e.Actor == actor) {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------------------------------------
// recovery codes and linking output

// recoveryCodeLine finds the recovery codes the linking flows print, one per indented line.
var recoveryCodeLine = regexp.MustCompile(`(?m)^\s+([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{2})\r?$`)

// recoveryCodesIn returns the recovery codes in a linking flow's output.
func recoveryCodesIn(out string) []string {
	var codes []string
	for _, m := range recoveryCodeLine.FindAllStringSubmatch(out, -1) {
		codes = append(codes, m[1])
	}
	return codes
}

// enrollWithCodes links u's device with `gatekeeper enroll`, like g.enroll, and returns the
// 10 recovery codes it printed.
func (g *gatekeeper) enrollWithCodes(t testing.TB, u *user) []string {
	t.Helper()
	out, err := g.runEnroll(t, u.name, func(secret string) string {
		step := stepNow()
		u.secret, u.last = secret, step
		return oathCode(t, secret, step)
	})
	if err != nil {
		t.Fatalf("gatekeeper enroll %s: %v\n%s", u.name, err, out)
	}
	codes := recoveryCodesIn(out)
	if len(codes) != 10 {
		t.Fatalf("gatekeeper enroll %s printed %d recovery codes, want 10:\n%s", u.name, len(codes), out)
	}
	for _, c := range codes {
		h.remember(c)
	}
	return codes
}

// ---------------------------------------------------------------------------------------------
// live sessions

// syncBuffer is a goroutine-safe buffer that can wait for text to appear in it.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the buffer holds want n times, done is closed, or timeout passes; it
// returns the buffer and whether want appeared.
func (b *syncBuffer) waitFor(want string, n int, done <-chan struct{}, timeout time.Duration) (string, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		b.mu.Lock()
		s, changed := b.buf.String(), b.changed
		b.mu.Unlock()
		if strings.Count(s, want) >= n {
			return s, true
		}
		select {
		case <-changed:
		case <-done:
			s := b.String()
			return s, strings.Count(s, want) >= n
		case <-timer.C:
			return s, false
		}
	}
}

// liveSession is an ssh client that keeps running while the test looks at it: its stdin is a
// pipe the test writes to, its output is collected as it comes.
type liveSession struct {
	t      testing.TB
	what   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	exit   int // after done
}

// live starts `ssh [opts] user@127.0.0.1 command` (or another program of the client, when
// prog is not "ssh") in the background; it is killed when the test ends.
func (c *client) live(prog string, args ...string) *liveSession {
	c.t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = c.env()
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	s := &liveSession{t: c.t, what: prog + " " + strings.Join(args, " "), cmd: cmd,
		stdout: newSyncBuffer(), stderr: newSyncBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	var err error
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("starting %s: %v", prog, err)
	}
	go func() {
		err := cmd.Wait()
		s.exit = -1
		if cmd.ProcessState != nil {
			s.exit = cmd.ProcessState.ExitCode()
		}
		if err != nil && cmd.ProcessState == nil {
			s.stderr.Write([]byte(err.Error()))
		}
		close(s.done)
	}()
	c.t.Cleanup(func() {
		_ = s.stdin.Close()
		_ = cmd.Process.Kill()
		<-s.done
	})
	return s
}

// liveSSH starts `ssh user@127.0.0.1 command` in the background with the client's options.
func (c *client) liveSSH(opts []string, command ...string) *liveSession {
	c.t.Helper()
	return c.live("ssh", c.sshArgs(opts, command...)...)
}

func (s *liveSession) String() string {
	exit := "running"
	if !s.running() {
		exit = fmt.Sprintf("exit %d", s.exit)
	}
	return fmt.Sprintf("%s (%s)\nstdout: %q\nstderr: %q", s.what, exit, tailStr(s.stdout.String(), 3000), tailStr(s.stderr.String(), 2000))
}

// waitFor waits for want on stdout and returns stdout so far; the test fails if it does not come.
func (s *liveSession) waitFor(want string) string {
	s.t.Helper()
	out, ok := s.stdout.waitFor(want, 1, s.done, waitTimeout)
	if !ok {
		s.t.Fatalf("no %q from %s", want, s)
	}
	return out
}

// waitCount is waitFor for the n-th appearance of want.
func (s *liveSession) waitCount(want string, n int) {
	s.t.Helper()
	if _, ok := s.stdout.waitFor(want, n, s.done, waitTimeout); !ok {
		s.t.Fatalf("no %q (%d times) from %s", want, n, s)
	}
}

// write sends text to the program's stdin.
func (s *liveSession) write(text string) {
	s.t.Helper()
	if _, err := io.WriteString(s.stdin, text); err != nil {
		s.t.Fatalf("writing to %s: %v\n%s", s.what, err, s)
	}
}

func (s *liveSession) running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// wait waits up to timeout for the program to exit and returns its exit code.
func (s *liveSession) wait(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
		return s.exit
	case <-time.After(timeout):
		s.t.Fatalf("%s still running after %v", s.what, timeout)
		return -1
	}
}

// ---------------------------------------------------------------------------------------------
// metrics

// scrape reads g's /metrics into a map from series (name{label="value",...}, labels sorted) to
// value.
func (g *gatekeeper) scrape(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", g.metricsPort))
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	series := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics: bad line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics: bad value in %q: %v", line, err)
		}
		series[normSeries(line[:i])] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return series
}

// normSeries sorts the labels of a series name, so that lookups do not depend on their order.
func normSeries(s string) string {
	name, labels, ok := strings.Cut(strings.TrimSpace(s), "{")
	if !ok {
		return name
	}
	parts := strings.Split(strings.TrimSuffix(labels, "}"), ",")
	parts = slices.DeleteFunc(parts, func(p string) bool { return p == "" })
	sort.Strings(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

// ---------------------------------------------------------------------------------------------
// network plumbing

// forwardFrom listens on 127.0.0.1:0 and forwards every connection to target from the local
// source address src, so that a client on loopback (a browser) reaches the daemon from src.
// It returns the listening address; it stops when the test ends.
func forwardFrom(t testing.TB, src, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
	}
	wg.Go(func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer down.Close()
				up, err := d.Dial("tcp", target)
				if err != nil {
					t.Logf("forwarder: %v", err)
					return
				}
				defer up.Close()
				track(down, true)
				track(up, true)
				defer track(down, false)
				defer track(up, false)
				copied := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, down); copied <- struct{}{} }()
				go func() { _, _ = io.Copy(down, up); copied <- struct{}{} }()
				<-copied // one side ended: end both
				up.Close()
				down.Close()
				<-copied
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// portalClient is a plain HTTP client of the portal that keeps cookies and the last CSRF token
// it saw, and does not follow redirects (the tests look at them).
type portalClient struct {
	t    testing.TB
	base string
	hc   *http.Client
	csrf string
}

// page is one portal response.
type page struct {
	status int
	header http.Header
	body   string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]*)"`)

// newPortalClient talks to the portal at addr from the local address src ("" = 127.0.0.1).
func newPortalClient(t testing.TB, addr, src string) *portalClient {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &portalClient{t: t, base: "http://" + addr, hc: &http.Client{
		Jar:       jar,
		Transport: tr,
		Timeout:   time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

func (p *portalClient) do(req *http.Request) page {
	p.t.Helper()
	resp, err := p.hc.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	if m := csrfField.FindSubmatch(body); m != nil {
		p.csrf = html.UnescapeString(string(m[1]))
	}
	return page{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (p *portalClient) get(path string) page {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.base+path, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.do(req)
}

// post sends form as is: the caller decides whether it carries the CSRF token.
func (p *portalClient) post(path string, form url.Values) page {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return p.do(req)
}

// withCSRF is form plus the last CSRF token the client saw.
func (p *portalClient) withCSRF(form url.Values) url.Values {
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	f.Set("csrf", p.csrf)
	return f
}

// ---------------------------------------------------------------------------------------------
// Chromium

// startBrowser starts a headless Chromium for the test and its subtests, with a fresh profile;
// each tab gets a browser context of its own (its own cookies). It ends with the test.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
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
	root, cancelRoot := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelRoot()
		cancelAlloc()
	})
	// The first action on a context starts the browser (or the tab) and ties it to the context
	// it runs with: so not a context with a timeout, which would end it with that action.
	if err := chromedp.Do(root, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	return root
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

// tab is one browser tab in a browser context of its own.
type tab struct {
	t      *testing.T
	ctx    context.Context
	base   string // http://host:port
	dir    string // screenshots
	prefix string // of screenshot names
	n      int    // screenshots taken
}

// newTab opens a tab on base with its own cookies; it closes when the test ends.
func newTab(t *testing.T, browser context.Context, base, dir, prefix string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// Not b.do: the first action opens the tab, which must live as long as ctx (see startBrowser).
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1000, 900)); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	return &tab{t: t, ctx: ctx, base: base, dir: dir, prefix: prefix}
}

// timeout bounds one browser step, so that a hung page fails the test instead of the run.
func (b *tab) timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, time.Minute)
}

func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// load opens path and waits for the page; it returns the HTTP status.
func (b *tab) load(path string) int64 {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(b.base+path))
	if err != nil {
		b.t.Fatalf("navigate %s: %v", path, err)
	}
	return resp.Status
}

// reload reloads the page, as the browser's reload button does, and returns the HTTP status.
func (b *tab) reload() int64 {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Reload())
	if err != nil {
		b.t.Fatalf("reload: %v", err)
	}
	return resp.Status
}

// click clicks the element and waits until the page it leads to has loaded; it returns the
// HTTP status of that page.
func (b *tab) click(sel string) int64 {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		b.t.Fatalf("click %s: %v", sel, err)
	}
	return resp.Status
}

func (b *tab) typeInto(sel, text string) {
	b.t.Helper()
	b.do(chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible))
}

// textOf is the visible text of the first element matching sel.
func (b *tab) textOf(sel string) string {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("reading %s on %s: %v", sel, b.location(), err)
	}
	return html.UnescapeString(s)
}

// text is the visible text of the page's main part.
func (b *tab) text() string {
	b.t.Helper()
	return b.textOf("main")
}

// html is the whole page's markup.
func (b *tab) html() string {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		b.t.Fatalf("reading the page: %v", err)
	}
	return s
}

func (b *tab) location() string {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		b.t.Fatal(err)
	}
	return strings.TrimPrefix(s, b.base)
}

// expect fails the test unless the page's text says each of want.
func (b *tab) expect(what string, want ...string) {
	b.t.Helper()
	text := b.text()
	for _, w := range want {
		if !strings.Contains(text, w) {
			b.t.Fatalf("%s (%s) does not say %q; it says:\n%s", what, b.location(), w, text)
		}
	}
}

// shot saves a screenshot of the whole page as PREFIX-NN-NAME.png.
func (b *tab) shot(name string) {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG; less is JPEG
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	b.n++
	file := filepath.Join(b.dir, fmt.Sprintf("%s-%02d-%s.png", b.prefix, b.n, name))
	if err := os.WriteFile(file, buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// scanQR reads the QR code on the page the way a phone does, from the pixels of its inline PNG,
// with the real zbarimg, and returns the otpauth URI it holds after checking it against the
// secret shown as text.
func (b *tab) scanQR(issuer, account string) (uri, secret string) {
	b.t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	src, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(".qr img"), "src"))
	if err != nil || !src.Exists {
		b.t.Fatalf("no QR image on %s: %v", b.location(), err)
	}
	b64, ok := strings.CutPrefix(src.Value, "data:image/png;base64,")
	if !ok {
		b.t.Fatalf("the QR image is not an inline PNG: %.60s", src.Value)
	}
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		b.t.Fatalf("QR image: %v", err)
	}
	file := filepath.Join(b.t.TempDir(), "qr.png")
	if err := os.WriteFile(file, png, 0o600); err != nil {
		b.t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "zbarimg", "--raw", "-q", file).Output()
	if err != nil {
		b.t.Fatalf("zbarimg could not read the QR code: %v", err)
	}
	uri = strings.TrimSpace(string(out))
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/"+issuer+":"+account {
		b.t.Fatalf("the QR code holds %q; want otpauth://totp/%s:%s?...", uri, issuer, account)
	}
	q := u.Query()
	if q.Get("issuer") != issuer || q.Get("digits") != "6" || q.Get("period") != "30" || q.Get("algorithm") != "SHA1" {
		b.t.Errorf("QR code parameters: %v", q)
	}
	secret = q.Get("secret")
	if secret == "" {
		b.t.Fatalf("the QR code's URI has no secret: %q", uri)
	}
	h.remember(secret)
	if shown := strings.ReplaceAll(b.textOf(".secret code"), " ", ""); shown != secret {
		b.t.Errorf("the secret shown as text, %q, differs from the QR code's %q", shown, secret)
	}
	return uri, secret
}
