package admin

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"

	"gatekeeper/gatekeeper/store/bolt"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 15, 0, time.UTC)

// shortDir is a temporary directory with a short path: t.TempDir's can exceed the 108 bytes of
// sun_path.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// logBuffer collects log output from the server's goroutines and lets a test wait for a line.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
	return b.buf.Write(p)
}

// waitFor returns the first JSON log record for which match is true.
func (b *logBuffer) waitFor(t *testing.T, match func(rec map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		b.mu.Lock()
		text, changed := b.buf.String(), b.changed
		b.mu.Unlock()
		for _, line := range strings.Split(text, "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && match(rec) {
				return rec
			}
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no matching log record within 10s; log:\n%s", text)
		}
	}
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type daemon struct {
	path  string
	srv   *Server
	st    store.Store
	clock *fakeClock
	log   *logBuffer
}

// startDaemon serves the admin API on a real socket with a real store and a fake clock.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	return startDaemonWith(t, nil, nil)
}

// startDaemonWith is startDaemon with prepare run on the database files before the store opens
// them, and configure on the Server (to set hooks) before it serves.
func startDaemonWith(t *testing.T, prepare func(t *testing.T, dbPath, keyPath string), configure func(*Server)) *daemon {
	t.Helper()
	dir := shortDir(t)
	if prepare != nil {
		prepare(t, filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key"))
	}
	st, err := bolt.Open(filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	d := &daemon{path: filepath.Join(dir, "run", "admin.sock"), st: st, clock: &fakeClock{t: t0}, log: newLogBuffer()}
	logger := slog.New(slog.NewJSONHandler(d.log, nil))
	d.srv = &Server{
		Enroll: &enroll.Service{Store: st, Issuer: "Example HPC", Skew: 1, ConfirmWithin: 10 * time.Minute, Now: d.clock.Now, Log: logger},
		Store:  st,
		Log:    logger,
	}
	if configure != nil {
		configure(d.srv)
	}
	ln, err := Listen(d.path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- d.srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := d.srv.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve after Shutdown = %v, want http.ErrServerClosed", err)
		}
	})
	return d
}

// httpClient talks raw HTTP to the socket, for requests the Client never sends.
func httpClient(path string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}

// codeAt computes the RFC 6238 code of a base32 secret at time at.
func codeAt(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha1.New, key)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(at.Unix()/30))
	mac.Write(msg[:])
	h := mac.Sum(nil)
	off := h[len(h)-1] & 0x0f
	return fmt.Sprintf("%06d", (binary.BigEndian.Uint32(h[off:off+4])&0x7fffffff)%1_000_000)
}

// wrongCode returns a well-formed code that matches none of the steps within ±1 of at.
func wrongCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	valid := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		valid[codeAt(t, secret, at.Add(d))] = true
	}
	for i := 0; ; i++ {
		if c := fmt.Sprintf("%06d", i); !valid[c] {
			return c
		}
	}
}

func TestListen(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "run", "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, want socket 0660", fi.Mode())
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm()&0o007 != 0 {
		t.Errorf("socket directory mode = %v (%v), want no access for others", di.Mode(), err)
	}

	// A live socket is not taken over.
	if ln2, err := Listen(path); err == nil {
		ln2.Close()
		t.Error("second Listen on a live socket succeeded")
	} else if want := fmt.Sprintf("another gatekeeper is already running (admin socket %s answers)", path); err.Error() != want {
		t.Errorf("second Listen: %q, want %q", err, want)
	}

	// Closing removes the socket file.
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want gone", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "admin.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false) // as a killed daemon leaves it
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}

	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dialling the new socket: %v", err)
	}
	c.Close()
}

func TestListenLeavesOtherFiles(t *testing.T) {
	path := filepath.Join(shortDir(t), "admin.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("regular file changed: %q %v", b, err)
	}
}

func TestLinkRoundTrip(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	ctx := context.Background()

	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	link, binding, err := c.Begin(ctx, "alice")
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if link.User != "alice" || link.Issuer != "Example HPC" || link.Secret == "" ||
		!strings.Contains(link.URI, "secret="+link.Secret) || !link.ExpiresAt.Equal(t0.Add(10*time.Minute)) {
		t.Errorf("link = %+v", link)
	}

	// The secret is shown once: neither a second Begin nor the user's state shows it again.
	_, _, err = c.Begin(ctx, "alice")
	if !errors.Is(err, enroll.ErrPending) || strings.Contains(err.Error(), link.Secret) {
		t.Errorf("second Begin = %v, want ErrPending without the secret", err)
	}
	resp, err := httpClient(d.path).Get("http://x/v1/users/alice")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || bytes.Contains(raw, []byte(link.Secret)) || !bytes.Contains(raw, []byte(`"state":"pending"`)) {
		t.Errorf("GET user = %d %s; want 200, pending, no secret", resp.StatusCode, raw)
	}
	if strings.Contains(d.log.String(), link.Secret) || strings.Contains(d.log.String(), string(binding)) {
		t.Error("the daemon's log shows the secret or the binding")
	}

	if _, err := c.Confirm(ctx, "alice", binding, wrongCode(t, link.Secret, t0)); !errors.Is(err, enroll.ErrBadCode) {
		t.Errorf("Confirm with a wrong code = %v, want ErrBadCode", err)
	}
	d.clock.Add(time.Minute)
	code := codeAt(t, link.Secret, d.clock.Now())
	codes, err := c.Confirm(ctx, "alice", binding, code)
	if err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	if len(codes) != enroll.RecoveryCodes {
		t.Errorf("Confirm returned %d recovery codes, want %d", len(codes), enroll.RecoveryCodes)
	}
	for _, rc := range codes {
		if strings.Contains(d.log.String(), rc) {
			t.Error("the daemon's log shows a recovery code")
		}
	}
	if _, err := c.Confirm(ctx, "alice", binding, code); !errors.Is(err, enroll.ErrNoPending) {
		t.Errorf("Confirm again = %v, want ErrNoPending", err)
	}
	info, err := c.User(ctx, "alice")
	if err != nil {
		t.Fatalf("User: %v", err)
	}
	if info.State != store.StateActive || !info.EnrolledAt.Equal(d.clock.Now()) || !info.PendingExpiresAt.IsZero() ||
		info.RecoveryCodesLeft != enroll.RecoveryCodes {
		t.Errorf("User = %+v, want active since %v", info, d.clock.Now())
	}
	_, _, err = c.Begin(ctx, "alice")
	if !errors.Is(err, enroll.ErrAlreadyLinked) || !strings.Contains(err.Error(), "linked on 2026-11-23; replace it with the new device instead, or have an admin reset it") {
		t.Errorf("Begin for an active user = %v, want ErrAlreadyLinked with the date", err)
	}
}

func TestClientErrors(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	ctx := context.Background()
	bindings := map[string]enroll.Binding{}
	mustBegin := func(user string) enroll.Link {
		t.Helper()
		l, b, err := c.Begin(ctx, user)
		if err != nil {
			t.Fatalf("Begin(%s): %v", user, err)
		}
		bindings[user] = b
		return l
	}
	mustBegin("pending")
	mustBegin("expiring")
	d.clock.Add(5 * time.Minute)
	mustBegin("fresh")
	d.clock.Add(6 * time.Minute) // "pending" and "expiring" have expired; "fresh" has not
	badCode := wrongCode(t, mustBegin("pending").Secret, d.clock.Now())
	mustBegin("voided")
	for range enroll.MaxConfirmTries {
		if _, err := c.Confirm(ctx, "voided", bindings["voided"], "000000x"); !errors.Is(err, enroll.ErrBadCode) {
			t.Fatalf("wrong code: %v", err)
		}
	}

	tests := []struct {
		name string
		call func() error
		want error
		msg  string // part of the message the daemon sent
	}{
		{"pending", func() error { _, _, err := c.Begin(ctx, "fresh"); return err }, enroll.ErrPending, "expires at"},
		{"no pending", func() error { _, err := c.Confirm(ctx, "nobody", "", "123456"); return err }, enroll.ErrNoPending, "nobody"},
		{"expired", func() error { _, err := c.Confirm(ctx, "expiring", bindings["expiring"], "123456"); return err }, enroll.ErrExpired, "start a new link"},
		{"bad code", func() error { _, err := c.Confirm(ctx, "pending", bindings["pending"], badCode); return err }, enroll.ErrBadCode, "did not match"},
		{"malformed code", func() error { _, err := c.Confirm(ctx, "pending", bindings["pending"], "12ab56"); return err }, enroll.ErrBadCode, "did not match"},
		{"other binding", func() error { _, err := c.Confirm(ctx, "fresh", bindings["pending"], "123456"); return err }, enroll.ErrStartedElsewhere, "enroll command that started it"},
		{"voided", func() error { _, err := c.Confirm(ctx, "voided", bindings["voided"], "123456"); return err }, enroll.ErrVoided, "too many wrong codes: this link was cancelled; start again"},
		{"bad name begin", func() error { _, _, err := c.Begin(ctx, "-oProxyCommand=x"); return err }, store.ErrBadName, ""},
		{"bad name confirm", func() error { _, err := c.Confirm(ctx, "a/b", "", "123456"); return err }, store.ErrBadName, ""},
		{"bad name user", func() error { _, err := c.User(ctx, "../etc"); return err }, store.ErrBadName, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
	// After ErrExpired the link can start again.
	if _, _, err := c.Begin(ctx, "expiring"); err != nil {
		t.Errorf("Begin after expiry: %v", err)
	}
}

func TestBadRequests(t *testing.T) {
	d := startDaemon(t)
	hc := httpClient(d.path)
	big := `{"user":"` + strings.Repeat("a", 70<<10) + `"}`
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"oversized body", "POST", "/v1/enroll/begin", big, http.StatusRequestEntityTooLarge, "bad_request"},
		{"garbage", "POST", "/v1/enroll/begin", "\x00\xff{{{", http.StatusBadRequest, "bad_request"},
		{"empty body", "POST", "/v1/enroll/confirm", "", http.StatusBadRequest, "bad_request"},
		{"wrong type", "POST", "/v1/enroll/begin", `{"user":42}`, http.StatusBadRequest, "bad_request"},
		{"unknown field", "POST", "/v1/enroll/begin", `{"user":"alice","admin":true}`, http.StatusBadRequest, "bad_request"},
		{"two objects", "POST", "/v1/enroll/begin", `{"user":"alice"}{"user":"bob"}`, http.StatusBadRequest, "bad_request"},
		{"array", "POST", "/v1/enroll/confirm", `[1,2,3]`, http.StatusBadRequest, "bad_request"},
		{"bad name", "POST", "/v1/enroll/begin", `{"user":""}`, http.StatusBadRequest, "bad_name"},
		{"unknown path", "GET", "/v1/secrets", "", http.StatusNotFound, "not_found"},
		{"wrong method", "GET", "/v1/enroll/begin", "", http.StatusNotFound, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://x"+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			defer resp.Body.Close()
			var eb errorBody
			if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
				t.Fatalf("error body is not JSON: %v", err)
			}
			if resp.StatusCode != tt.status || eb.Code != tt.code || eb.Error == "" {
				t.Errorf("answer %d %+v, want %d code %q with a message", resp.StatusCode, eb, tt.status, tt.code)
			}
		})
	}
	// The daemon still works, and nothing was stored for the rejected requests.
	if err := NewClient(d.path).Ping(context.Background()); err != nil {
		t.Errorf("Ping after bad requests: %v", err)
	}
	if users, err := d.st.List(); err != nil || len(users) != 0 {
		t.Errorf("users after bad requests: %v %v, want none", users, err)
	}
}

func TestInternalErrorHidden(t *testing.T) {
	d := startDaemon(t)
	d.st.Close() // every store call now fails
	_, _, err := NewClient(d.path).Begin(context.Background(), "alice")
	if err == nil || !strings.Contains(err.Error(), "internal error, see the daemon's log") {
		t.Fatalf("Begin with a broken store = %v, want the internal error message", err)
	}
	for _, s := range []error{enroll.ErrAlreadyLinked, enroll.ErrPending, enroll.ErrNoPending, enroll.ErrExpired, enroll.ErrBadCode, store.ErrBadName, ErrNoDaemon} {
		if errors.Is(err, s) {
			t.Errorf("internal error matches %v", s)
		}
	}
	d.log.waitFor(t, func(rec map[string]any) bool {
		return rec["msg"] == "admin request failed" && rec["err"] != nil && rec["err"] != ""
	})
}

func TestCallerUIDLogged(t *testing.T) {
	d := startDaemon(t)
	if err := NewClient(d.path).Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := d.log.waitFor(t, func(rec map[string]any) bool {
		return rec["msg"] == "admin request" && rec["path"] == "/v1/health"
	})
	if uid, ok := rec["caller_uid"].(float64); !ok || int(uid) != os.Getuid() {
		t.Errorf("logged caller_uid = %v, want %d", rec["caller_uid"], os.Getuid())
	}
	if pid, ok := rec["caller_pid"].(float64); !ok || int(pid) != os.Getpid() {
		t.Errorf("logged caller_pid = %v, want %d", rec["caller_pid"], os.Getpid())
	}
	if rec["status"] != float64(200) {
		t.Errorf("logged status = %v, want 200", rec["status"])
	}
}

func TestCallerUIDInContext(t *testing.T) {
	path := filepath.Join(shortDir(t), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ConnContext: connContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			uid, ok := CallerUID(r.Context())
			fmt.Fprintf(w, "%d %v", uid, ok)
		}),
	}
	go srv.Serve(ln)
	defer srv.Close()
	resp, err := httpClient(path).Get("http://x/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d true", os.Getuid()); string(b) != want {
		t.Errorf("CallerUID in the handler = %q, want %q", b, want)
	}
	if _, ok := CallerUID(context.Background()); ok {
		t.Error("CallerUID of a context without a connection reports ok")
	}
}

func TestNoDaemon(t *testing.T) {
	dir := shortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()

	for _, path := range []string{filepath.Join(dir, "missing.sock"), stale} {
		c := NewClient(path)
		err := c.Ping(context.Background())
		if !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), path) {
			t.Errorf("Ping %s = %v, want ErrNoDaemon naming the socket", path, err)
		}
		if _, _, err := c.Begin(context.Background(), "alice"); !errors.Is(err, ErrNoDaemon) {
			t.Errorf("Begin %s = %v, want ErrNoDaemon", path, err)
		}
	}
}

func TestPermissionDenied(t *testing.T) {
	// Root passes every permission check, so feed the error the dialer would return.
	c := NewClient("/run/gatekeeper/admin.sock")
	dialErr := &url.Error{Op: "Get", URL: "http://gatekeeper/v1/health", Err: &dialError{&net.OpError{
		Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)}}}
	err := c.connError(context.Background(), DefaultTimeout, dialErr)
	want := "permission denied on admin socket /run/gatekeeper/admin.sock (are you in the gatekeeper group or root?)"
	if !strings.HasPrefix(err.Error(), want) || errors.Is(err, ErrNoDaemon) {
		t.Errorf("connError(EACCES) = %q, want it to start with %q", err, want)
	}
}

func TestClientTimeout(t *testing.T) {
	path := filepath.Join(shortDir(t), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c // hold the connection open and never answer
		}
	}()
	c := NewClient(path)
	c.Timeout = 200 * time.Millisecond
	err = c.Ping(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") || errors.Is(err, ErrNoDaemon) {
		t.Errorf("Ping of a silent daemon = %v, want a timeout error", err)
	}
	(<-accepted).Close()
}

func TestShutdownBeforeServe(t *testing.T) {
	path := filepath.Join(shortDir(t), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v, want http.ErrServerClosed", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Serve returned: %v, want gone", err)
	}
}
