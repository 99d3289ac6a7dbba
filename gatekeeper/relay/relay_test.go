package relay

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/internal/logbuf"
)

// waitLimit bounds every step a test waits for; generous for -race.
const waitLimit = 20 * time.Second

// Fixed facts of the test lander.
const (
	allocatedPort = 4242 // what tcpip-forward with port 0 allocates
	refusedPort   = 9    // direct-tcpip to it fails: connect failed
	forbiddenPort = 10   // direct-tcpip to it fails: prohibited
	refusedMsg    = "connect to port 9 failed: Connection refused"
	forbiddenMsg  = "administratively prohibited by test lander"
	exitSignalMsg = "killed by test lander"
	burstSize     = 1 << 20
)

func newSigner(tb testing.TB) ssh.Signer {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (net.Conn, net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		acc <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	r := <-acc
	if r.err != nil {
		tb.Fatal(r.err)
	}
	return a, r.c
}

// wedgeConn can hold back what was read until unwedged: a lander that
// stops processing its input.
type wedgeConn struct {
	net.Conn
	mu   sync.Mutex
	gate chan struct{}
}

func (c *wedgeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	g := c.gate
	c.mu.Unlock()
	if g != nil {
		<-g
	}
	return n, err
}

func (c *wedgeConn) wedge() {
	c.mu.Lock()
	c.gate = make(chan struct{})
	c.mu.Unlock()
}

func (c *wedgeConn) unwedge() {
	c.mu.Lock()
	if c.gate != nil {
		close(c.gate)
		c.gate = nil
	}
	c.mu.Unlock()
}

// recorder is a goroutine-safe list of strings with change notification.
type recorder struct {
	mu      sync.Mutex
	items   []string
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.items = append(r.items, s)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.items)
}

// waitFor blocks until ok(list) holds or the limit passes.
func (r *recorder) waitFor(ok func([]string) bool) bool {
	deadline := time.After(waitLimit)
	for {
		if ok(r.list()) {
			return true
		}
		select {
		case <-r.changed:
		case <-deadline:
			return false
		}
	}
}

func hasPrefix(prefix string) func([]string) bool {
	return func(l []string) bool {
		return slices.ContainsFunc(l, func(s string) bool { return strings.HasPrefix(s, prefix) })
	}
}

// lander is a tiny in-process stand-in for the lander's sshd.
type lander struct {
	conn    *ssh.ServerConn
	raw     *wedgeConn
	globals *recorder // global request types received
	wg      sync.WaitGroup

	// A "hold@test" request, on a channel or global, is reported on
	// holding and makes the lander send "poke@test" (no reply wanted)
	// back the same way once flooded is closed, and answer it only once
	// release is closed.
	holding          chan struct{}
	flooded, release chan struct{}
	// told is sent on once "source-tell" has exited and its marker
	// reached the client, and once "exit-then-flood" has sent all.
	told chan struct{}
	// keepalive gets whether "exit-then-keepalive"'s keepalive was
	// answered.
	keepalive chan bool

	mu   sync.Mutex
	port uint32 // last tcpip-forward port
}

func startLander(raw net.Conn, key ssh.Signer, rekey uint64) (*lander, <-chan error) {
	l := &lander{raw: &wedgeConn{Conn: raw}, globals: newRecorder(),
		holding: make(chan struct{}, 1), flooded: make(chan struct{}), release: make(chan struct{}),
		told: make(chan struct{}, 1), keepalive: make(chan bool, 1)}
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.RekeyThreshold = rekey
	cfg.AddHostKey(key)
	ready := make(chan error, 1)
	l.wg.Go(func() {
		conn, chans, reqs, err := ssh.NewServerConn(l.raw, cfg)
		if err != nil {
			ready <- err
			return
		}
		l.conn = conn
		ready <- nil
		l.wg.Go(func() { l.serveGlobal(reqs) })
		for nc := range chans {
			l.wg.Go(func() { l.serveChannel(nc) })
		}
	})
	return l, ready
}

func (l *lander) serveGlobal(reqs <-chan *ssh.Request) {
	for req := range reqs {
		l.globals.add(req.Type)
		switch req.Type {
		case "tcpip-forward":
			var p struct {
				Addr string
				Port uint32
			}
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			var reply []byte
			if p.Port == 0 {
				p.Port = allocatedPort
				reply = ssh.Marshal(struct{ Port uint32 }{p.Port})
			}
			l.mu.Lock()
			l.port = p.Port
			l.mu.Unlock()
			_ = req.Reply(true, reply)
		case "sync@test", "keepalive@openssh.com": // sshd answers keepalives false; true tells the lander's answer
			_ = req.Reply(true, nil)
		case "hold@test":
			l.holding <- struct{}{}
			<-l.flooded
			_, _, _ = l.conn.SendRequest("poke@test", false, nil)
			<-l.release
			_ = req.Reply(true, nil)
		default:
			_ = req.Reply(false, nil)
		}
	}
}

func (l *lander) serveChannel(nc ssh.NewChannel) {
	switch nc.ChannelType() {
	case "session":
		l.session(nc)
	case "direct-tcpip":
		var p struct {
			Host     string
			Port     uint32
			OrigHost string
			OrigPort uint32
		}
		if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
			_ = nc.Reject(ssh.ConnectionFailed, "bad payload")
			return
		}
		switch p.Port {
		case refusedPort:
			_ = nc.Reject(ssh.ConnectionFailed, refusedMsg)
			return
		case forbiddenPort:
			_ = nc.Reject(ssh.Prohibited, forbiddenMsg)
			return
		}
		ch, reqs, err := nc.Accept()
		if err != nil {
			return
		}
		l.wg.Go(func() { ssh.DiscardRequests(reqs) })
		data, _ := io.ReadAll(ch)
		_, _ = fmt.Fprintf(ch, "echo from %s:%d: %s", p.Host, p.Port, data)
		_ = ch.Close()
	default:
		_ = nc.Reject(ssh.UnknownChannelType, "unknown channel type: "+nc.ChannelType())
	}
}

func (l *lander) session(nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	seen := newRecorder()
	execd := false
	defer func() {
		// The channel's requests end with the client's CLOSE. A session
		// that ran no command answers it here; a command's goroutine
		// does (with "late-status", after the exit status, as sshd).
		seen.add("closed")
		if !execd {
			_ = ch.Close()
		}
	}()
	for req := range reqs {
		ok := true
		var rec string
		switch req.Type {
		case "pty-req":
			var p struct {
				Term                         string
				Columns, Rows, Width, Height uint32
				Modes                        string
			}
			ok = ssh.Unmarshal(req.Payload, &p) == nil
			rec = fmt.Sprintf("pty-req %s %dx%d", p.Term, p.Columns, p.Rows)
		case "env":
			var p struct{ Name, Value string }
			ok = ssh.Unmarshal(req.Payload, &p) == nil
			rec = fmt.Sprintf("env %s=%s", p.Name, p.Value)
		case "window-change":
			var p struct{ Columns, Rows, Width, Height uint32 }
			ok = ssh.Unmarshal(req.Payload, &p) == nil
			rec = fmt.Sprintf("window-change %dx%d", p.Columns, p.Rows)
		case "signal":
			var p struct{ Signal string }
			ok = ssh.Unmarshal(req.Payload, &p) == nil
			rec = "signal " + p.Signal
		case "exec":
			var p struct{ Command string }
			ok = ssh.Unmarshal(req.Payload, &p) == nil
			rec = "exec " + p.Command
			if ok {
				// Like sshd: reply first, then the command runs.
				seen.add(rec)
				_ = req.Reply(true, nil)
				execd = true
				l.wg.Go(func() { l.run(ch, p.Command, seen) })
				continue
			}
		case "x-refuse@test":
			ok = false
			rec = req.Type
		case "reply-then-close@test":
			_ = req.Reply(true, nil)
			_ = ch.Close()
			continue
		case "hold@test":
			seen.add(req.Type)
			l.holding <- struct{}{}
			<-l.flooded
			_, _ = ch.SendRequest("poke@test", false, nil)
			<-l.release
			_ = req.Reply(true, nil)
			continue
		default:
			rec = req.Type
		}
		seen.add(rec)
		_ = req.Reply(ok, nil)
	}
}

// exit ends a session one way sshd does: EOF, exit-status, CLOSE (when
// the command's output is all read before it is reaped; otherwise the
// exit-status comes first, see "exit-then-keepalive").
func exit(ch ssh.Channel, status uint32) {
	_ = ch.CloseWrite()
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	_ = ch.Close()
}

// run executes one of the lander's fixed commands.
func (l *lander) run(ch ssh.Channel, cmd string, seen *recorder) {
	name, arg, _ := strings.Cut(cmd, " ")
	switch name {
	case "echo": // stdin → stdout
		_, _ = io.Copy(ch, ch)
		exit(ch, 0)
	case "exit":
		n, _ := strconv.Atoi(arg)
		exit(ch, uint32(n))
	case "signal":
		_ = ch.CloseWrite()
		_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{"KILL", false, exitSignalMsg, ""}))
		_ = ch.Close()
	case "stderr": // distinct streams, written concurrently
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = ch.Write(bytes.Repeat([]byte("o"), 300_000)) })
		wg.Go(func() { _, _ = ch.Stderr().Write(bytes.Repeat([]byte("e"), 300_000)) })
		wg.Wait()
		exit(ch, 0)
	case "count": // reads stdin to EOF, then answers
		n, _ := io.Copy(io.Discard, ch)
		_, _ = fmt.Fprintf(ch, "got %d bytes\n", n)
		exit(ch, 0)
	case "late-status": // as sshd when the client closes first: EOF; the exit status after the client's CLOSE
		_ = ch.CloseWrite()
		seen.waitFor(func(l []string) bool { return slices.Contains(l, "closed") })
		n, _ := strconv.Atoi(arg)
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(n)}))
		_ = ch.Close()
	case "halfclose": // EOF first, then read stdin; status = bytes read
		_ = ch.CloseWrite()
		n, _ := io.Copy(io.Discard, ch)
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(n)}))
		_ = ch.Close()
	case "drain": // reads stdin to EOF, then does what "requests" does
		_, _ = io.Copy(io.Discard, ch)
		fallthrough
	case "requests": // reports the session's requests once a signal came
		if !seen.waitFor(hasPrefix("signal ")) {
			exit(ch, 1)
			return
		}
		_, _ = io.WriteString(ch, strings.Join(seen.list(), "\n")+"\n")
		exit(ch, 0)
	case "forward": // opens forwarded-tcpip for the last tcpip-forward
		l.mu.Lock()
		port := l.port
		l.mu.Unlock()
		fc, reqs, err := l.conn.OpenChannel("forwarded-tcpip", ssh.Marshal(struct {
			Addr       string
			Port       uint32
			OriginAddr string
			OriginPort uint32
		}{"127.0.0.1", port, "192.0.2.7", 5555}))
		if err != nil {
			_, _ = fmt.Fprintf(ch, "forward failed: %v\n", err)
			exit(ch, 1)
			return
		}
		l.wg.Go(func() { ssh.DiscardRequests(reqs) })
		_, _ = io.WriteString(fc, "hello via -R")
		_ = fc.CloseWrite()
		reply, _ := io.ReadAll(fc)
		_ = fc.Close()
		_, _ = fmt.Fprintf(ch, "forward reply: %s\n", reply)
		exit(ch, 0)
	case "agent": // asks the client's agent over auth-agent@openssh.com
		ac, reqs, err := l.conn.OpenChannel("auth-agent@openssh.com", nil)
		if err != nil {
			_, _ = fmt.Fprintf(ch, "agent failed: %v\n", err)
			exit(ch, 1)
			return
		}
		l.wg.Go(func() { ssh.DiscardRequests(reqs) })
		_, _ = io.WriteString(ac, "ping")
		_ = ac.CloseWrite()
		reply, _ := io.ReadAll(ac)
		_ = ac.Close()
		_, _ = fmt.Fprintf(ch, "agent said: %s\n", reply)
		exit(ch, 0)
	case "hostkeys": // what sshd sends after auth, then a marker
		_, _, _ = l.conn.SendRequest("hostkeys-00@openssh.com", false, ssh.Marshal(struct{ Key string }{"k"}))
		prove, _, _ := l.conn.SendRequest("hostkeys-prove-00@openssh.com", true, nil)
		marker, _, _ := l.conn.SendRequest("marker@test", true, nil)
		_, _ = fmt.Fprintf(ch, "prove=%v marker=%v\n", prove, marker)
		exit(ch, 0)
	case "burst-and-die": // output, exit 7, then the lander ends the connection
		_, _ = ch.Write(bytes.Repeat([]byte("b"), burstSize))
		exit(ch, 7)
		// A FIN, not Close: closing with unread input makes the
		// kernel send RST, which discards data in flight even to a
		// direct client.
		_ = l.raw.Conn.(*net.TCPConn).CloseWrite()
	case "burst-and-vanish": // output, then the lander's connection ends with the channel open (sshd killed)
		_, _ = ch.Write(bytes.Repeat([]byte("v"), burstSize))
		_ = l.raw.Conn.(*net.TCPConn).CloseWrite()
	case "source": // writes arg bytes
		n, _ := strconv.ParseInt(arg, 10, 64)
		_, _ = io.Copy(ch, io.LimitReader(zeroReader{}, n))
		exit(ch, 0)
	case "source-tell": // writes arg bytes, exits, then a global marker the client answers
		n, _ := strconv.ParseInt(arg, 10, 64)
		_, _ = io.Copy(ch, io.LimitReader(zeroReader{}, n))
		exit(ch, 0)
		_, _, _ = l.conn.SendRequest("marker@test", true, nil)
		l.told <- struct{}{}
	case "exit-then-keepalive": // as sshd: arg bytes, exit-status before EOF, then a ClientAlive keepalive
		n, _ := strconv.ParseInt(arg, 10, 64)
		_, _ = io.Copy(ch, io.LimitReader(zeroReader{}, n))
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
		_, err := ch.SendRequest("keepalive@openssh.com", true, nil)
		l.keepalive <- err == nil
		_ = ch.CloseWrite()
		_ = ch.Close()
	case "exit-then-flood": // arg bytes, exit-status, more requests than x/crypto queues, EOF
		n, _ := strconv.ParseInt(arg, 10, 64)
		_, _ = io.Copy(ch, io.LimitReader(zeroReader{}, n))
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
		for range 6 {
			_, _ = ch.SendRequest("keepalive@openssh.com", false, nil)
		}
		l.told <- struct{}{}
		_ = ch.CloseWrite()
		_ = ch.Close()
	case "sink": // discards stdin
		_, _ = io.Copy(io.Discard, ch)
		exit(ch, 0)
	default:
		_, _ = fmt.Fprintf(ch.Stderr(), "unknown command %q\n", cmd)
		exit(ch, 127)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// env is a lander, a Relay in front of it and an x/crypto client.
type env struct {
	tb        testing.TB
	lander    *lander
	client    *ssh.Client
	clientRaw net.Conn
	globals   *recorder   // global request types the client received
	announced chan []byte // payloads of the hostkeys-00@openssh.com the client received
	stats     *Stats
	logs      *logbuf.Buffer
	relayDone chan error
	front     chan *ssh.ServerConn // the relay's client-side conn, once up
	relayErr  error
	returned  bool
	wg        sync.WaitGroup
}

// newEnv wires client → Relay → lander over loopback TCP; direct skips
// the relay (for the benchmark baseline). Cleanup tears everything down
// and checks that no goroutine is left.
func newEnv(tb testing.TB, direct bool) *env {
	tb.Helper()
	return newEnvOpts(tb, direct, Options{})
}

// newEnvOpts is newEnv with Relay options; Log and Stats are the env's own.
func newEnvOpts(tb testing.TB, direct bool, opts Options) *env {
	tb.Helper()
	return newEnvRekey(tb, direct, opts, 0)
}

// newEnvRekey is newEnvOpts whose four SSH ends (client, both of the
// relay's, lander) each ask for a key exchange after rekey bytes (0: x/crypto's
// default).
func newEnvRekey(tb testing.TB, direct bool, opts Options, rekey uint64) *env {
	tb.Helper()
	return newEnvLinks(tb, direct, opts, rekey, rekey)
}

// newEnvLinks is newEnvRekey with the thresholds of the client's link
// (client and relay's front, or the lander when direct) and of the
// lander's link (relay and lander) apart.
func newEnvLinks(tb testing.TB, direct bool, opts Options, frontRekey, landerRekey uint64) *env {
	tb.Helper()
	baseline := runtime.NumGoroutine()
	e := &env{tb: tb, globals: newRecorder(), announced: make(chan []byte, 4), stats: new(Stats), logs: new(logbuf.Buffer), relayDone: make(chan error, 1), front: make(chan *ssh.ServerConn, 1)}
	landerKey, gkKey := newSigner(tb), newSigner(tb)

	landerRaw, upRaw := tcpPair(tb)
	rekey := landerRekey
	if direct {
		rekey = frontRekey
	}
	l, ready := startLander(landerRaw, landerKey, rekey)
	e.lander = l
	serverKey := gkKey

	if direct {
		e.clientRaw = upRaw
		serverKey = landerKey
		e.relayDone <- nil
	} else {
		clientRaw, downRaw := tcpPair(tb)
		e.clientRaw = clientRaw
		up, upChans, upReqs, err := ssh.NewClientConn(upRaw, "lander", &ssh.ClientConfig{
			Config:          ssh.Config{RekeyThreshold: landerRekey},
			User:            "alice",
			HostKeyCallback: ssh.FixedHostKey(landerKey.PublicKey()),
		})
		if err != nil {
			tb.Fatal(err)
		}
		cfg := &ssh.ServerConfig{NoClientAuth: true}
		cfg.RekeyThreshold = frontRekey
		cfg.AddHostKey(gkKey)
		log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		e.wg.Go(func() {
			down, downChans, downReqs, err := ssh.NewServerConn(downRaw, cfg)
			if err != nil {
				_ = up.Close()
				e.relayDone <- fmt.Errorf("front handshake: %w", err)
				return
			}
			e.front <- down
			opts.Log, opts.Stats = log, e.stats
			e.relayDone <- Relay(down, downChans, downReqs, up, upChans, upReqs, &opts)
		})
	}
	conn, chans, reqs, err := ssh.NewClientConn(e.clientRaw, "gatekeeper", &ssh.ClientConfig{
		Config:          ssh.Config{RekeyThreshold: frontRekey},
		User:            "alice",
		HostKeyCallback: ssh.FixedHostKey(serverKey.PublicKey()),
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := <-ready; err != nil {
		tb.Fatal(err)
	}
	fwd := make(chan *ssh.Request)
	e.wg.Go(func() {
		defer close(fwd)
		for req := range reqs {
			e.globals.add(req.Type)
			if req.Type == reqHostkeys {
				select {
				case e.announced <- req.Payload:
				default:
				}
			}
			if req.Type == "marker@test" {
				_ = req.Reply(true, nil)
				continue
			}
			fwd <- req
		}
	})
	e.client = ssh.NewClient(conn, chans, fwd)

	tb.Cleanup(func() {
		_ = e.client.Close()
		l.raw.unwedge()
		_ = l.raw.Close()
		e.waitRelay()
		waitGroup(tb, &e.wg, "test client")
		waitGroup(tb, &l.wg, "test lander")
		if !poll(func() bool { return runtime.NumGoroutine() <= baseline }) {
			tb.Errorf("goroutines leaked: %d running, %d before\n%s", runtime.NumGoroutine(), baseline, stacks())
		}
		if tb.Failed() {
			tb.Logf("relay log:\n%s", e.logs)
		}
	})
	return e
}

// waitRelay waits for Relay to return and checks that it left none of its
// goroutines behind.
func (e *env) waitRelay() error {
	e.tb.Helper()
	if e.returned {
		return e.relayErr
	}
	select {
	case e.relayErr = <-e.relayDone:
		e.returned = true
	case <-time.After(waitLimit):
		e.tb.Fatalf("Relay did not return\n%s", stacks())
	}
	if !poll(func() bool { return !strings.Contains(stacks(), "gatekeeper/relay/relay.go:") }) {
		e.tb.Errorf("Relay returned but left goroutines:\n%s", stacks())
	}
	return e.relayErr
}

func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// poll checks cond until it holds or the limit passes.
func poll(cond func() bool) bool {
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func waitGroup(tb testing.TB, wg *sync.WaitGroup, what string) {
	tb.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		tb.Errorf("%s goroutines did not finish\n%s", what, stacks())
	}
}

// within runs f, failing the test if it takes longer than waitLimit.
func within(tb testing.TB, what string, f func()) {
	tb.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		tb.Fatalf("%s: timed out\n%s", what, stacks())
	}
}

// run runs cmd in a new session and returns stdout, stderr and Run's error.
func (e *env) run(cmd string, stdin io.Reader) (string, string, error) {
	e.tb.Helper()
	s, err := e.client.NewSession()
	if err != nil {
		e.tb.Fatalf("new session: %v", err)
	}
	defer s.Close()
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errOut, stdin
	within(e.tb, cmd, func() { err = s.Run(cmd) })
	return out.String(), errOut.String(), err
}

func TestExitStatusAndSignal(t *testing.T) {
	e := newEnv(t, false)
	tests := []struct {
		cmd        string
		wantStatus int // -1: success
		wantSignal string
	}{
		{"exit 0", -1, ""},
		{"exit 3", 3, ""},
		{"exit 255", 255, ""},
		{"signal", 0, "KILL"},
	}
	for _, tc := range tests {
		t.Run(tc.cmd, func(t *testing.T) {
			_, _, err := e.run(tc.cmd, nil)
			if tc.wantStatus == -1 {
				if err != nil {
					t.Fatalf("Run = %v, want success (exit-status 0 before CLOSE)", err)
				}
				return
			}
			var ee *ssh.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("Run = %v (%T), want *ssh.ExitError", err, err)
			}
			if tc.wantSignal != "" {
				if ee.Signal() != tc.wantSignal || ee.Msg() != exitSignalMsg {
					t.Fatalf("signal %q msg %q, want %q %q", ee.Signal(), ee.Msg(), tc.wantSignal, exitSignalMsg)
				}
				return
			}
			if ee.ExitStatus() != tc.wantStatus {
				t.Fatalf("exit status %d, want %d", ee.ExitStatus(), tc.wantStatus)
			}
		})
	}
}

// TestExitStatusAfterOutput: a command's exit status reaches the client
// after all its output, as a client of sshd finds it in its window, though
// the lander sent it while the client's window still held output back: a
// client that stops reading at the exit status must not lose the tail.
func TestExitStatusAfterOutput(t *testing.T) {
	// More than the client's window (2 MiB), less than the two legs'
	// windows together: the lander can send it all and exit while the
	// client reads nothing.
	const size = 3 << 20
	e := newEnv(t, false)
	ch, reqs, err := e.client.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{fmt.Sprintf("source-tell %d", size)}))
	if err != nil || !ok {
		t.Fatalf("exec: %v, %v", ok, err)
	}
	within(t, "the lander's exit and marker", func() { <-e.lander.told })
	// The marker came after the exit status, through the same relay; give
	// a status forwarded out of order a moment to arrive as well.
	select {
	case req := <-reqs:
		t.Fatalf("%s arrived while %d bytes of output waited for the client's window", req.Type, size-(2<<20))
	case <-time.After(100 * time.Millisecond):
	}
	var n int64
	within(t, "the output", func() { n, err = io.Copy(io.Discard, ch) })
	if err != nil || n != size {
		t.Fatalf("read %d bytes (%v), want %d", n, err, size)
	}
	within(t, "the exit status", func() {
		req := <-reqs
		if req == nil || req.Type != "exit-status" {
			t.Errorf("request after the output: %+v, want exit-status", req)
		}
	})
}

// TestCommandEndParkedAlone: while the exit status waits for the output,
// the lander's other requests still go through. sshd (ClientAliveInterval)
// asks its client for a reply on the session channel when the client has
// been quiet, as one is that does not read; unanswered, it would drop the
// connection. And more requests than x/crypto queues for a channel must not
// stop the relay reading the lander's connection, with the EOF behind them.
func TestCommandEndParkedAlone(t *testing.T) {
	const size = 3 << 20 // as in TestExitStatusAfterOutput
	for _, cmd := range []string{"exit-then-keepalive", "exit-then-flood"} {
		t.Run(cmd, func(t *testing.T) {
			e := newEnv(t, false)
			ch, reqs, err := e.client.OpenChannel("session", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			var got []string
			answered := make(chan struct{})
			go func() { // as OpenSSH's client does
				defer close(answered)
				for req := range reqs {
					got = append(got, req.Type)
					_ = req.Reply(false, nil)
				}
			}()
			ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{fmt.Sprintf("%s %d", cmd, size)}))
			if err != nil || !ok {
				t.Fatalf("exec: %v, %v", ok, err)
			}
			if cmd == "exit-then-keepalive" {
				within(t, "the keepalive's answer", func() {
					if !<-e.lander.keepalive {
						t.Error("the lander's keepalive was not answered")
					}
				})
			} else {
				within(t, "the lander's requests", func() { <-e.lander.told })
			}
			var n int64
			within(t, "the output and EOF", func() { n, err = io.Copy(io.Discard, ch) })
			if err != nil || n != size {
				t.Fatalf("read %d bytes (%v), want %d", n, err, size)
			}
			_ = ch.Close()
			within(t, "the channel's requests to end", func() { <-answered })
			if !slices.Contains(got, "exit-status") {
				t.Errorf("requests %q: no exit-status", got)
			}
		})
	}
}

// TestClientExitStatusNotParked: a client's "exit-status" means nothing to
// sshd and is not held back; followed by more requests than x/crypto queues
// and the client leaving, it must not keep the relay alive.
func TestClientExitStatusNotParked(t *testing.T) {
	e := newEnv(t, false)
	ch, _, err := e.client.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"sink"})); err != nil || !ok {
		t.Fatalf("exec: %v, %v", ok, err)
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
	for range 6 {
		_, _ = ch.SendRequest("env", false, ssh.Marshal(struct{ Name, Value string }{"A", "B"}))
	}
	_ = e.client.Close()
	_ = e.waitRelay() // fails the test when Relay does not return
}

func TestStdoutStderrApart(t *testing.T) {
	e := newEnv(t, false)
	out, errOut, err := e.run("stderr", nil)
	if err != nil {
		t.Fatal(err)
	}
	if out != strings.Repeat("o", 300_000) {
		t.Errorf("stdout: %d bytes, %d of them 'o'; want 300000 'o'", len(out), strings.Count(out, "o"))
	}
	if errOut != strings.Repeat("e", 300_000) {
		t.Errorf("stderr: %d bytes, %d of them 'e'; want 300000 'e'", len(errOut), strings.Count(errOut, "e"))
	}
}

// echoBulk sends size bytes from a seeded generator through the lander's
// "echo" in one session and checks that the same bytes come back.
func echoBulk(t *testing.T, e *env, size int64, seed byte) {
	t.Helper()
	in := sha256.New()
	src := io.TeeReader(io.LimitReader(mrand.NewChaCha8([32]byte{seed}), size), in)
	out := sha256.New()
	s, err := e.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	s.Stdin, s.Stdout = src, out
	within(t, fmt.Sprintf("echo %d MiB", size>>20), func() { err = s.Run("echo") })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in.Sum(nil), out.Sum(nil)) {
		t.Fatal("sha256 of stdout differs from stdin")
	}
}

func TestBulkEchoAndStats(t *testing.T) {
	const size = 32 << 20
	e := newEnv(t, false)
	echoBulk(t, e, size, 7)
	_ = e.client.Close()
	if err := e.waitRelay(); err != nil {
		t.Fatalf("Relay = %v, want nil after the client closed", err)
	}
	if up, down := e.stats.Up.Load(), e.stats.Down.Load(); up != size || down != size {
		t.Fatalf("stats up %d down %d, want %d each", up, down, size)
	}
}

// TestRekeyDuringBulk moves data both ways at once while every one of the
// four SSH ends asks for a new key exchange every 64 KiB (a few dozen of
// them, started from both sides of each leg, in the middle of channel data
// and window adjustments): every byte arrives, in order, and the session
// ends with its exit status.
func TestRekeyDuringBulk(t *testing.T) {
	const size = 8 << 20
	e := newEnvRekey(t, false, Options{}, 64<<10)
	echoBulk(t, e, size, 9)
	if up, down := e.stats.Up.Load(), e.stats.Down.Load(); up != size || down != size {
		t.Fatalf("stats up %d down %d, want %d each", up, down, size)
	}
}

func TestEOFPropagation(t *testing.T) {
	e := newEnv(t, false)
	t.Run("client EOF reaches lander, which still answers", func(t *testing.T) {
		out, _, err := e.run("count", strings.NewReader("abc"))
		if err != nil || out != "got 3 bytes\n" {
			t.Fatalf("got %q, %v; want %q", out, err, "got 3 bytes\n")
		}
	})
	t.Run("lander EOF reaches client, which still sends", func(t *testing.T) {
		s, err := e.client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stdout, _ := s.StdoutPipe()
		stdin, _ := s.StdinPipe()
		if err := s.Start("halfclose"); err != nil {
			t.Fatal(err)
		}
		within(t, "stdout EOF", func() { _, err = io.ReadAll(stdout) })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(stdin, "xyz"); err != nil {
			t.Fatalf("write after lander EOF: %v", err)
		}
		_ = stdin.Close()
		within(t, "wait", func() { err = s.Wait() })
		var ee *ssh.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
			t.Fatalf("Wait = %v, want exit status 3 (lander read 3 bytes)", err)
		}
	})
}

func TestChannelRequests(t *testing.T) {
	e := newEnv(t, false)
	s, err := e.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RequestPty("xterm-256color", 40, 80, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
		t.Fatalf("pty-req: %v", err)
	}
	if err := s.Setenv("GK_SECRET", "s3cr3t-payload"); err != nil {
		t.Fatalf("env: %v", err)
	}
	for _, tc := range []struct {
		req  string
		want bool
	}{{"x-refuse@test", false}, {"x-ok@test", true}} {
		ok, err := s.SendRequest(tc.req, true, nil)
		if err != nil || ok != tc.want {
			t.Fatalf("%s: reply %v, %v; want %v", tc.req, ok, err, tc.want)
		}
	}
	var out bytes.Buffer
	s.Stdout = &out
	if err := s.Start("requests"); err != nil {
		t.Fatal(err)
	}
	if err := s.WindowChange(50, 132); err != nil {
		t.Fatal(err)
	}
	if err := s.Signal(ssh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	within(t, "wait", func() { err = s.Wait() })
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"pty-req xterm-256color 80x40",
		"env GK_SECRET=s3cr3t-payload",
		"x-refuse@test",
		"x-ok@test",
		"exec requests",
		"window-change 132x50",
		"signal TERM",
	}, "\n") + "\n"
	if out.String() != want {
		t.Fatalf("lander saw\n%s\nwant\n%s", out.String(), want)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `msg="channel open" type=session from=client`) {
		t.Errorf("no channel open line in log:\n%s", logs)
	}
	if strings.Contains(logs, "s3cr3t") {
		t.Errorf("payload leaked into log:\n%s", logs)
	}
}

// TestRequestJustBeforeEOF: a request that wants no reply, sent right before EOF while the
// channel carries no data (so no copy runs), still reaches the lander: the pair that takes the
// EOF must not end before it has forwarded what came first.
func TestRequestJustBeforeEOF(t *testing.T) {
	e := newEnv(t, false)
	for i := range 20 {
		s, err := e.client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := s.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		s.Stdout = &out
		if err := s.Start("drain"); err != nil {
			t.Fatal(err)
		}
		if err := s.Signal(ssh.SIGTERM); err != nil {
			t.Fatal(err)
		}
		_ = stdin.Close()
		within(t, "wait", func() { err = s.Wait() })
		if err != nil || out.String() != "exec drain\nsignal TERM\n" {
			t.Fatalf("round %d: lander saw %q, %v; want the exec and the signal, exit 0", i, out.String(), err)
		}
		_ = s.Close()
	}
}

// TestRequestFlood: a client that sends requests faster than the lander
// answers them fills the relay's queue for them (reqQueueLen); the relay
// then stops taking that client's requests (x/crypto holds the rest back)
// but goes on serving the lander, whose request meanwhile reaches the
// client. Once the lander answers, every request arrives, in order. Both
// for a channel's requests and for global ones.
func TestRequestFlood(t *testing.T) {
	const flood = 3 * reqQueueLen
	for _, level := range []string{"channel", "global"} {
		t.Run(level, func(t *testing.T) {
			var peak atomic.Int64
			e := newEnvOpts(t, false, Options{peakQueue: &peak})
			var send func(typ string, wantReply bool) (bool, error)
			var poked func() bool         // waits for the lander's poke at the client
			var landerSaw func() []string // what the lander got, in order
			if level == "channel" {
				ch, reqs, err := e.client.OpenChannel("session", nil)
				if err != nil {
					t.Fatal(err)
				}
				got := newRecorder()
				e.wg.Go(func() {
					for req := range reqs {
						got.add(req.Type)
					}
				})
				send = func(typ string, wantReply bool) (bool, error) {
					return ch.SendRequest(typ, wantReply, nil)
				}
				poked = func() bool { return got.waitFor(hasPrefix("poke@test")) }
				landerSaw = func() []string {
					// The lander lists a session's requests once a
					// signal came.
					_, _ = ch.SendRequest("signal", false, ssh.Marshal(struct{ Signal string }{"TERM"}))
					_, _ = ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"requests"}))
					var out []byte
					within(t, "requests", func() { out, _ = io.ReadAll(ch) })
					return strings.Split(string(out), "\n")
				}
			} else {
				send = func(typ string, wantReply bool) (bool, error) {
					ok, _, err := e.client.SendRequest(typ, wantReply, nil)
					return ok, err
				}
				poked = func() bool { return e.globals.waitFor(hasPrefix("poke@test")) }
				landerSaw = func() []string {
					last := fmt.Sprintf("x-%d@test", flood-1)
					e.lander.globals.waitFor(func(l []string) bool { return slices.Contains(l, last) })
					return e.lander.globals.list()
				}
			}

			held := make(chan error, 1)
			go func() {
				ok, err := send("hold@test", true)
				if err == nil && !ok {
					err = errors.New("refused")
				}
				held <- err
			}()
			select {
			case <-e.lander.holding:
			case <-time.After(waitLimit):
				t.Fatal("the hold request did not reach the lander")
			}
			for i := range flood {
				if _, err := send(fmt.Sprintf("x-%d@test", i), false); err != nil {
					t.Fatal(err)
				}
			}
			close(e.lander.flooded)
			if !poked() {
				t.Fatalf("the lander's request did not reach the client while the client's were held up\n%s", stacks())
			}
			// The queue behind the held request fills, and the
			// client's side pauses (see the end).
			if !poll(func() bool { return peak.Load() >= reqQueueLen }) {
				t.Fatalf("the forwarder queue never filled: longest %d, want %d", peak.Load(), reqQueueLen)
			}
			close(e.lander.release)
			within(t, "held request", func() {
				if err := <-held; err != nil {
					t.Errorf("held request: %v", err)
				}
			})
			var xs []string
			for _, typ := range landerSaw() {
				if strings.HasPrefix(typ, "x-") {
					xs = append(xs, typ)
				}
			}
			for i, typ := range xs {
				if want := fmt.Sprintf("x-%d@test", i); typ != want {
					t.Fatalf("request %d reached the lander as %q, want %q", i, typ, want)
				}
			}
			if len(xs) != flood {
				t.Fatalf("%d of %d requests reached the lander", len(xs), flood)
			}
			// The flood paused the client's side instead of
			// queuing without bound (plus a channel's EOF and
			// close, behind a full queue).
			if p := peak.Load(); p > reqQueueLen+2 {
				t.Fatalf("longest forwarder queue %d, want at most %d", p, reqQueueLen+2)
			}
		})
	}
}

// relayGoroutines counts the goroutines running relay code.
func relayGoroutines() int {
	n := 0
	for g := range strings.SplitSeq(stacks(), "\n\n") {
		if strings.Contains(g, "gatekeeper/relay/relay.go:") {
			n++
		}
	}
	return n
}

// TestIdleGoroutines pins what an idle session costs in goroutines, most
// of its memory: Relay's caller, and nothing per channel pair once its
// channels have been quiet for copyLinger. Data that comes afterwards still
// goes through, both ways (x/crypto patch 7 starts the copies again).
func TestIdleGoroutines(t *testing.T) {
	e := newEnv(t, false)
	want := func(n int, what string) {
		t.Helper()
		if !poll(func() bool { return relayGoroutines() == n }) {
			t.Fatalf("%s: %d goroutines run relay code, want %d\n%s", what, relayGoroutines(), n, stacks())
		}
	}
	want(1, "no channel")
	type session struct {
		s     *ssh.Session
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	var sessions []session
	for i := 1; i <= 2; i++ {
		s, err := e.client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		// Like a terminal: stdin stays open.
		stdin, err := s.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := s.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RequestPty("xterm", 24, 80, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Start("echo"); err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, session{s, stdin, bufio.NewReader(stdout)})
		want(1, fmt.Sprintf("%d idle sessions", i))
	}
	for round := range 2 {
		for i, s := range sessions {
			line := fmt.Sprintf("round %d, session %d\n", round, i)
			if _, err := io.WriteString(s.stdin, line); err != nil {
				t.Fatal(err)
			}
			var got string
			within(t, "echo", func() { got, _ = s.out.ReadString('\n') })
			if got != line {
				t.Fatalf("echoed %q, want %q", got, line)
			}
		}
		want(1, fmt.Sprintf("sessions quiet again after round %d", round))
	}
	_ = sessions[0].s.Close()
	if !poll(func() bool {
		return len(regexp.MustCompile(`msg="channel closed"`).FindAllString(e.logs.String(), -1)) == 1
	}) {
		t.Fatalf("the closed session's pair did not finish\n%s", e.logs.String())
	}
	want(1, "one session closed")
}

// TestShortLinger: with copies that end as soon as their channel has
// nothing to read (and start again when it has), every byte still goes
// through, in order, with its EOF and exit status.
func TestShortLinger(t *testing.T) {
	e := newEnvOpts(t, false, Options{linger: time.Microsecond})
	in := make([]byte, 1<<20)
	_, _ = rand.Read(in)
	for round := range 3 {
		out, _, err := e.run("echo", bytes.NewReader(in))
		if err != nil || out != string(in) {
			t.Fatalf("round %d: echo of %d bytes gave %d, %v", round, len(in), len(out), err)
		}
		out, errOut, err := e.run("stderr", nil)
		if err != nil || out != strings.Repeat("o", 300_000) || errOut != strings.Repeat("e", 300_000) {
			t.Fatalf("round %d: stderr: %d bytes out, %d err, %v", round, len(out), len(errOut), err)
		}
		out, _, err = e.run("count", bytes.NewReader(in[:200_000]))
		if err != nil || out != "got 200000 bytes\n" {
			t.Fatalf("round %d: count: %q, %v", round, out, err)
		}
		var ee *ssh.ExitError
		if _, _, err := e.run("exit 3", nil); !errors.As(err, &ee) || ee.ExitStatus() != 3 {
			t.Fatalf("round %d: exit 3: %v", round, err)
		}
	}
}

// A reply the lander sends just before closing the channel (as sshd does
// for "exec" of a command that exits at once) must reach the client before
// the CLOSE. The window is small, so try many times.
func TestReplyBeforeClose(t *testing.T) {
	e := newEnv(t, false)
	for i := range 500 {
		ch, reqs, err := e.client.OpenChannel("session", nil)
		if err != nil {
			t.Fatal(err)
		}
		go ssh.DiscardRequests(reqs)
		var ok bool
		within(t, "request", func() { ok, err = ch.SendRequest("reply-then-close@test", true, nil) })
		_ = ch.Close()
		if !ok || err != nil {
			t.Fatalf("attempt %d: reply %v, %v; want true, nil", i, ok, err)
		}
	}
}

// TestExitStatusAfterClientClose: a client that closes the channel once its
// input is done and the command's EOF came (OpenSSH's ControlMaster) gets the
// exit status that sshd sends after that CLOSE, directly and through the
// relay, which answers the client's CLOSE only with the lander's (x/crypto
// patch 20). The lander here answers CLOSE itself, as sshd does.
func TestExitStatusAfterClientClose(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "relay"}[direct], func(t *testing.T) {
			e := newEnv(t, direct)
			e.lander.conn.Conn.(interface{ OwnerAnswersClose() }).OwnerAnswersClose()
			for i := range 20 {
				ch, reqs, err := e.client.OpenChannel("session", nil)
				if err != nil {
					t.Fatal(err)
				}
				if ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"late-status 3"})); !ok || err != nil {
					t.Fatalf("exec: %v, %v", ok, err)
				}
				_ = ch.CloseWrite()
				within(t, "the command's EOF", func() { _, _ = io.Copy(io.Discard, ch) })
				_ = ch.Close()
				var got []string
				within(t, "the lander's CLOSE", func() {
					for req := range reqs {
						got = append(got, fmt.Sprintf("%s %x", req.Type, req.Payload))
					}
				})
				if want := []string{"exit-status 00000003"}; !slices.Equal(got, want) {
					t.Fatalf("attempt %d: requests after the client's CLOSE %q, want %q", i, got, want)
				}
			}
		})
	}
}

func TestPortForwarding(t *testing.T) {
	e := newEnv(t, false)
	t.Run("direct-tcpip", func(t *testing.T) {
		c, err := e.client.Dial("tcp", "10.0.0.1:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "hello")
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
		var got []byte
		within(t, "read", func() { got, err = io.ReadAll(c) })
		if want := "echo from 10.0.0.1:7: hello"; string(got) != want || err != nil {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	})
	for _, tc := range []struct {
		name, typ  string
		extra      []byte
		wantReason ssh.RejectionReason
		wantMsg    string
	}{
		{"refused", "direct-tcpip", directExtra(refusedPort), ssh.ConnectionFailed, refusedMsg},
		{"prohibited", "direct-tcpip", directExtra(forbiddenPort), ssh.Prohibited, forbiddenMsg},
		{"unknown type", "x-unknown@test", nil, ssh.UnknownChannelType, "unknown channel type: x-unknown@test"},
	} {
		t.Run("open failure "+tc.name, func(t *testing.T) {
			_, _, err := e.client.OpenChannel(tc.typ, tc.extra)
			var oce *ssh.OpenChannelError
			if !errors.As(err, &oce) || oce.Reason != tc.wantReason || oce.Message != tc.wantMsg {
				t.Fatalf("OpenChannel = %v, want %v %q", err, tc.wantReason, tc.wantMsg)
			}
		})
	}
	for _, tc := range []struct {
		listen   string
		wantPort int
	}{{"127.0.0.1:0", allocatedPort}, {"127.0.0.1:2222", 2222}} {
		t.Run("tcpip-forward "+tc.listen, func(t *testing.T) {
			ln, err := e.client.Listen("tcp", tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if p := ln.Addr().(*net.TCPAddr).Port; p != tc.wantPort {
				t.Fatalf("listener port %d, want %d", p, tc.wantPort)
			}
			accepted := make(chan string, 1)
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Go(func() {
				c, err := ln.Accept()
				if err != nil {
					accepted <- "accept: " + err.Error()
					return
				}
				defer c.Close()
				got, _ := io.ReadAll(c)
				_, _ = io.WriteString(c, "hi from client")
				accepted <- fmt.Sprintf("%s from %s", got, c.RemoteAddr())
			})
			out, _, err := e.run("forward", nil)
			if err != nil || out != "forward reply: hi from client\n" {
				t.Fatalf("lander: %q, %v", out, err)
			}
			if got, want := <-accepted, "hello via -R from 192.0.2.7:5555"; got != want {
				t.Fatalf("client got %q, want %q", got, want)
			}
		})
	}
}

func directExtra(port uint32) []byte {
	return ssh.Marshal(struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}{"10.0.0.1", port, "127.0.0.1", 40000})
}

func TestAgentChannel(t *testing.T) {
	e := newEnv(t, false)
	agents := e.client.HandleChannelOpen("auth-agent@openssh.com")
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		nc, ok := <-agents
		if !ok {
			return
		}
		ch, reqs, err := nc.Accept()
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		got, _ := io.ReadAll(ch)
		if string(got) == "ping" {
			_, _ = io.WriteString(ch, "pong")
		}
		_ = ch.Close()
	})
	out, _, err := e.run("agent", nil)
	if err != nil || out != "agent said: pong\n" {
		t.Fatalf("got %q, %v; want %q", out, err, "agent said: pong\n")
	}
}

func TestHostkeysNotRelayed(t *testing.T) {
	e := newEnv(t, false)
	out, _, err := e.run("hostkeys", nil)
	if err != nil || out != "prove=false marker=true\n" {
		t.Fatalf("got %q, %v; want %q", out, err, "prove=false marker=true\n")
	}
	// Requests are relayed in order: the marker came after both.
	got := e.globals.list()
	if !slices.Contains(got, "marker@test") || slices.Contains(got, "hostkeys-00@openssh.com") ||
		slices.Contains(got, "hostkeys-prove-00@openssh.com") {
		t.Fatalf("client received global requests %q; want the marker only", got)
	}
}

// TestHostKeysAnnounced: the client is told the gatekeeper's host keys
// (each once), and the gatekeeper proves the ones it is asked about with
// signatures OpenSSH's client accepts (prefix, session ID and key, RSA with
// rsa-sha2-512), once a connection; a key it does not have, one asked twice
// or a malformed request is refused.
func TestHostKeysAnnounced(t *testing.T) {
	edKey, otherEd := newSigner(t), newSigner(t)
	rsaPriv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := ssh.NewSignerFromKey(rsaPriv)
	if err != nil {
		t.Fatal(err)
	}
	prove := func(t *testing.T, e *env, payload []byte) (bool, []byte) {
		t.Helper()
		ok, resp, err := e.client.SendRequest(reqHostkeysPrv, true, payload)
		if err != nil {
			t.Fatal(err)
		}
		return ok, resp
	}
	payloadOf := func(keys ...ssh.PublicKey) []byte {
		var payload []byte
		for _, k := range keys {
			payload = appendString(payload, k.Marshal())
		}
		return payload
	}
	for what, payload := range map[string][]byte{
		"a key the gatekeeper does not have": payloadOf(newSigner(t).PublicKey()),
		"a key asked twice":                  payloadOf(edKey.PublicKey(), edKey.PublicKey()),
		"a malformed request":                {0, 0, 1},
	} {
		// One relay at a time: an env's cleanup checks that no relay
		// goroutine is left.
		t.Run(what, func(t *testing.T) {
			fresh := newEnvOpts(t, false, Options{HostKeys: []ssh.Signer{edKey}})
			if ok, _ := prove(t, fresh, payload); ok {
				t.Error("proven")
			}
		})
	}
	e := newEnvOpts(t, false, Options{HostKeys: []ssh.Signer{edKey, rsaKey, otherEd, edKey}})
	var announced []byte
	select {
	case announced = <-e.announced:
	case <-time.After(waitLimit):
		t.Fatal("no hostkeys-00@openssh.com came")
	}
	var blobs [][]byte
	for rest := announced; len(rest) > 0; {
		blob, next, ok := parseString(rest)
		if !ok {
			t.Fatalf("malformed announcement %x", announced)
		}
		blobs, rest = append(blobs, blob), next
	}
	want := [][]byte{edKey.PublicKey().Marshal(), rsaKey.PublicKey().Marshal(), otherEd.PublicKey().Marshal()}
	if !slices.EqualFunc(blobs, want, bytes.Equal) {
		t.Fatalf("announced %d keys, want the 3 keys once each, in order", len(blobs))
	}

	ok, resp := prove(t, e, payloadOf(otherEd.PublicKey(), rsaKey.PublicKey()))
	if !ok {
		t.Fatal("proof of two announced keys refused")
	}
	for _, k := range []ssh.PublicKey{otherEd.PublicKey(), rsaKey.PublicKey()} {
		sigBlob, rest, ok := parseString(resp)
		if !ok {
			t.Fatalf("proof answer too short for %s", k.Type())
		}
		resp = rest
		var sig ssh.Signature
		if err := ssh.Unmarshal(sigBlob, &sig); err != nil {
			t.Fatal(err)
		}
		data := ssh.Marshal(struct {
			Prefix    string
			SessionID []byte
			Key       []byte
		}{reqHostkeysPrv, e.client.SessionID(), k.Marshal()})
		if err := k.Verify(data, &sig); err != nil {
			t.Errorf("proof for %s (%s) does not verify: %v", k.Type(), sig.Format, err)
		}
		if k.Type() == ssh.KeyAlgoRSA && sig.Format != ssh.KeyAlgoRSASHA512 {
			t.Errorf("RSA proof signed with %s, want %s", sig.Format, ssh.KeyAlgoRSASHA512)
		}
	}
	if len(resp) != 0 {
		t.Errorf("%d bytes left after the proofs", len(resp))
	}
	if ok, _ := prove(t, e, payloadOf(edKey.PublicKey())); ok {
		t.Error("a second request on the connection was answered (OpenSSH's client asks once)")
	}
	// The session still works.
	if out, _, err := e.run("echo", strings.NewReader("still here")); err != nil || out != "still here" {
		t.Errorf("echo after the proofs: %q, %v", out, err)
	}
}

// TestCannotTakeHostKeys: the clients OpenSSH's sshd does not announce its
// host keys to are spared the announcement, and no others.
func TestCannotTakeHostKeys(t *testing.T) {
	for v, want := range map[string]bool{
		"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3": false,
		"SSH-2.0-PuTTY_Release_0.81":             false,
		"SSH-2.0-TTSSH/2.72 Win32":               true,
		"SSH-2.0-TTSSH/2.73 Win32":               false,
		"SSH-2.0-TTSSH/2.1":                      true,
		"SSH-2.0-TTSSH/3.1":                      false,
		"SSH-1.99-Cisco-1.25":                    true,
		"SSH-2.0-TeraTerm SSH":                   true,
		"SSH-2.0-Go":                             false,
	} {
		if got := cannotTakeHostKeys([]byte(v)); got != want {
			t.Errorf("cannotTakeHostKeys(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestKeepaliveForwarded: the client's keepalive@openssh.com is answered by
// the lander, not by the relay (whose answer would keep a client's
// ServerAliveInterval from noticing a hung lander): the test lander answers
// true, where the relay used to answer false, as sshd does.
func TestKeepaliveForwarded(t *testing.T) {
	e := newEnv(t, false)
	var ok bool
	var err error
	within(t, "keepalive", func() { ok, _, err = e.client.SendRequest("keepalive@openssh.com", true, nil) })
	if err != nil || !ok {
		t.Fatalf("keepalive reply %v, %v; want the lander's (true)", ok, err)
	}
	if got := e.lander.globals.list(); !slices.Contains(got, "keepalive@openssh.com") {
		t.Fatalf("lander received %q, not the keepalive", got)
	}
}

// TestNoMoreSessionsNotForwarded: OpenSSH's no-more-sessions@openssh.com,
// sent right after the session's channel open, is not passed to the lander:
// handed over apart from the open, it could overtake it, and sshd then ends
// the connection. A session opened after it works, and the lander never sees it.
func TestNoMoreSessionsNotForwarded(t *testing.T) {
	e := newEnv(t, false)
	if _, _, err := e.client.SendRequest("no-more-sessions@openssh.com", false, nil); err != nil {
		t.Fatal(err)
	}
	if out, _, err := e.run("exit 0", nil); err != nil {
		t.Fatalf("a session after no-more-sessions: %v (%q)", err, out)
	}
	var ok bool
	var err error
	within(t, "sync", func() { ok, _, err = e.client.SendRequest("sync@test", true, nil) })
	if err != nil || !ok {
		t.Fatalf("sync: %v, %v", ok, err)
	}
	if got := e.lander.globals.list(); slices.Contains(got, "no-more-sessions@openssh.com") {
		t.Fatalf("lander received %q", got)
	}
}

func TestTeardown(t *testing.T) {
	tests := []struct {
		name string
		end  func(e *env)
		// errOK tells whether Relay's result fits the way it ended.
		errOK func(error) bool
		// what the far side must observe
		check func(t *testing.T, e *env)
	}{
		{
			name: "lander connection killed",
			end:  func(e *env) { _ = e.lander.raw.Close() },
			// EOF, or a reset when the kill left input unread.
			errOK: func(err error) bool {
				return err == nil || strings.HasPrefix(err.Error(), "relay: lander connection: ")
			},
			check: func(t *testing.T, e *env) {
				within(t, "client conn closed", func() { _ = e.client.Wait() })
			},
		},
		{
			// e.g. an admin ending the session
			name:  "caller closes the client conn",
			end:   func(e *env) { _ = (<-e.front).Close() },
			errOK: func(err error) bool { return err == nil },
			check: func(t *testing.T, e *env) {
				within(t, "client conn closed", func() { _ = e.client.Wait() })
				within(t, "lander conn closed", func() { _ = e.lander.conn.Wait() })
			},
		},
		{
			name:  "client closes",
			end:   func(e *env) { _ = e.client.Close() },
			errOK: func(err error) bool { return err == nil },
			check: func(t *testing.T, e *env) {
				within(t, "lander conn closed", func() { _ = e.lander.conn.Wait() })
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false)
			// A session in progress must not keep anything alive.
			s, err := e.client.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			stdin, _ := s.StdinPipe()
			if err := s.Start("echo"); err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(stdin, "x")
			start := time.Now()
			tc.end(e)
			if err := e.waitRelay(); !tc.errOK(err) {
				t.Errorf("Relay = %v", err)
			}
			if d := time.Since(start); d > drainTimeout/2 {
				t.Errorf("Relay took %v to end", d)
			}
			tc.check(t, e)
			within(t, "session ends", func() { _ = s.Wait() })
		})
	}
}

// The lander's last output, sent just before its connection drops, still
// reaches the client with the exit status, as it would without the relay.
func TestLanderOutputDeliveredAfterDrop(t *testing.T) {
	e := newEnv(t, false)
	out, _, err := e.run("burst-and-die", nil)
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 7 {
		t.Fatalf("Run = %v, want exit status 7", err)
	}
	if out != strings.Repeat("b", burstSize) {
		t.Fatalf("got %d bytes of output, want %d", len(out), burstSize)
	}
	within(t, "client conn closed", func() { _ = e.client.Wait() })
	if err := e.waitRelay(); err != nil {
		t.Fatalf("Relay = %v, want nil", err)
	}
}

// TestLanderVanished: when the lander's connection ends with a channel
// still open (sshd killed, the node down), the client gets the output sent
// before, and then its connection ends with the channel open, as directly:
// no CLOSE or exit status the lander never sent. OpenSSH's client
// says "Connection to ... closed by remote host." only then; given a
// CLOSE it ends without a word. A channel closed before is closed.
func TestLanderVanished(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			checkVanished(t, newEnv(t, direct), direct)
		})
	}
	// The output's last packets may wait for a key exchange with the
	// client (written during one, or starting one): the connection's end
	// must come after them, not cut them off (a review found 13 runs in 30
	// short before the end waited for the exchange).
	t.Run("key exchanges with the client", func(t *testing.T) {
		for i := range 20 {
			rekey := uint64(100_000 + 7_919*i)
			checkVanished(t, newEnvLinks(t, false, Options{}, rekey, 0), false)
		}
	})
}

// checkVanished runs TestLanderVanished's session in e.
func checkVanished(t *testing.T, e *env, direct bool) {
	t.Helper()
	closed, err := e.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := closed.Run("exit 3"); err == nil {
		t.Fatal("exit 3: no error")
	}
	ch, reqs, err := e.client.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	reqsDone := make(chan struct{})
	go func() {
		defer close(reqsDone)
		for req := range reqs {
			got = append(got, req.Type)
		}
	}()
	ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"burst-and-vanish"}))
	if !ok || err != nil {
		t.Fatalf("exec = %v, %v", ok, err)
	}
	var out []byte
	within(t, "reading the output", func() { out, _ = io.ReadAll(ch) })
	if len(out) != burstSize || strings.Trim(string(out), "v") != "" {
		t.Errorf("got %d bytes of output, want %d", len(out), burstSize)
	}
	within(t, "client conn closed", func() { _ = e.client.Wait() })
	within(t, "channel requests ending", func() { <-reqsDone })
	if len(got) != 0 {
		t.Errorf("channel requests %v, want none", got)
	}
	if !ch.(interface{ Lost() bool }).Lost() {
		t.Error("the client's channel was closed, not left open when the connection ended")
	}
	if !direct {
		if err := e.waitRelay(); err != nil {
			t.Errorf("Relay = %v, want nil", err)
		}
		if !e.stats.LanderFirst.Load() {
			t.Error("Stats.LanderFirst not set")
		}
	}
}

// BenchmarkRelayThroughput measures one session's throughput through the
// relay over loopback TCP; "direct" is the same without the relay.
func BenchmarkRelayThroughput(b *testing.B) {
	const chunk = 1 << 20
	for _, bc := range []struct {
		name   string
		direct bool
		upload bool
	}{
		{"relay/download", false, false},
		{"relay/upload", false, true},
		{"direct/download", true, false},
		{"direct/upload", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b, bc.direct)
			s, err := e.client.NewSession()
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(chunk)
			b.ResetTimer()
			if bc.upload {
				s.Stdin = io.LimitReader(zeroReader{}, int64(b.N)*chunk)
				err = s.Run("sink")
			} else {
				s.Stdout = io.Discard
				err = s.Run(fmt.Sprintf("source %d", int64(b.N)*chunk))
			}
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}

func TestEndErr(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string // "" = nil
	}{
		{nil, ""},
		{io.EOF, ""},
		{fmt.Errorf("read: %w", net.ErrClosed), ""},
		{errors.New("ssh: disconnect, reason 11: \"disconnected by user\""), ""},
		{errors.New("ssh: disconnect, reason 2: \"protocol error\""), "relay: lander connection: ssh: disconnect, reason 2"},
		{errors.New("connection reset by peer"), "relay: lander connection: connection reset by peer"},
	} {
		got := endErr(fromLander, tc.err)
		if (got == nil) != (tc.want == "") || (got != nil && !strings.HasPrefix(got.Error(), tc.want)) {
			t.Errorf("endErr(%v) = %v, want %q", tc.err, got, tc.want)
		}
	}
}

// openHeld opens a channel of type typ from conn and keeps it open; the
// lander holds sessions and direct-tcpip channels open until the client
// closes them.
func openHeld(t *testing.T, conn ssh.Conn, typ string, extra []byte) (ssh.Channel, error) {
	t.Helper()
	var ch ssh.Channel
	var reqs <-chan *ssh.Request
	var err error
	within(t, "open "+typ, func() { ch, reqs, err = conn.OpenChannel(typ, extra) })
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	t.Cleanup(func() { _ = ch.Close() })
	return ch, nil
}

// wantTooMany checks that err is the refusal of a channel over the cap.
func wantTooMany(t *testing.T, err error, what string) {
	t.Helper()
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.ResourceShortage || oce.Message != tooManyChannels {
		t.Fatalf("%s: OpenChannel = %v, want %v %q", what, err, ssh.ResourceShortage, tooManyChannels)
	}
}

// A client cannot hold more than MaxChannels channels open on one
// connection; a closed channel's slot can be used again.
func TestMaxChannelsClient(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int // Options.MaxChannels
		limit int // the cap in force
		typ   string
		extra []byte
	}{
		{"sessions", 3, 3, "session", nil},
		{"direct-tcpip", 2, 2, "direct-tcpip", directExtra(7)},
		{"default cap", 0, DefaultMaxChannels, "session", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvOpts(t, false, Options{MaxChannels: tc.max})
			conn := e.client.Conn
			var held []ssh.Channel
			for i := range tc.limit {
				ch, err := openHeld(t, conn, tc.typ, tc.extra)
				if err != nil {
					t.Fatalf("channel %d of %d: %v", i+1, tc.limit, err)
				}
				held = append(held, ch)
			}
			_, err := openHeld(t, conn, tc.typ, tc.extra)
			wantTooMany(t, err, "one channel over the cap")
			// Every other kind of channel counts against the same cap.
			_, err = openHeld(t, conn, "session", nil)
			wantTooMany(t, err, "a session over the cap")

			// The slot comes free once the relay has closed both
			// halves, a moment after the client's CLOSE.
			_ = held[0].Close()
			if !poll(func() bool { _, err = openHeld(t, conn, tc.typ, tc.extra); return err == nil }) {
				t.Fatalf("after closing a channel: OpenChannel = %v, want a free slot", err)
			}
			_, err = openHeld(t, conn, tc.typ, tc.extra)
			wantTooMany(t, err, "over the cap again")

			logs := e.logs.String()
			if n := strings.Count(logs, `level=WARN msg="channel refused: too many channels open on this connection"`); n != 1 {
				t.Errorf("%d Warn lines about refused channels, want 1 (the rest at Debug):\n%s", n, logs)
			}
			_ = e.client.Close()
			if err := e.waitRelay(); err != nil {
				t.Fatalf("Relay = %v", err)
			}
			// Three refusals above, and any the poll ran into.
			summary := regexp.MustCompile(`msg="channel opens refused over max_channels" from_client=(\d+) from_lander=0 max_channels=(\d+)`)
			m := summary.FindStringSubmatch(e.logs.String())
			if m == nil {
				t.Fatalf("no summary of refused opens in the log:\n%s", e.logs)
			}
			if n, _ := strconv.Atoi(m[1]); n < 3 || m[2] != strconv.Itoa(tc.limit) {
				t.Errorf("summary %q, want from_client ≥ 3 and max_channels=%d", m[0], tc.limit)
			}
		})
	}
}

// Channels the lander opens (agent, X11, -R connections) have a cap of
// their own: they are refused beyond it, and they do not use up the
// client's slots.
func TestMaxChannelsLander(t *testing.T) {
	const limit = 2
	e := newEnvOpts(t, false, Options{MaxChannels: limit})
	agents := e.client.HandleChannelOpen("auth-agent@openssh.com")
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for nc := range agents {
			ch, reqs, err := nc.Accept()
			if err != nil {
				continue
			}
			go ssh.DiscardRequests(reqs)
			// Held open until the lander closes it.
			go func() { _, _ = io.Copy(io.Discard, ch); _ = ch.Close() }()
		}
	})
	var fromLander []ssh.Channel
	for i := range limit {
		ch, err := openHeld(t, e.lander.conn, "auth-agent@openssh.com", nil)
		if err != nil {
			t.Fatalf("lander's channel %d: %v", i+1, err)
		}
		fromLander = append(fromLander, ch)
	}
	_, err := openHeld(t, e.lander.conn, "auth-agent@openssh.com", nil)
	wantTooMany(t, err, "lander's channel over the cap")

	for i := range limit {
		if _, err := openHeld(t, e.client.Conn, "session", nil); err != nil {
			t.Fatalf("client's session %d while the lander holds %d channels: %v", i+1, limit, err)
		}
	}
	_, err = openHeld(t, e.client.Conn, "session", nil)
	wantTooMany(t, err, "client's session over its own cap")

	_ = fromLander[0].Close()
	if !poll(func() bool {
		_, err = openHeld(t, e.lander.conn, "auth-agent@openssh.com", nil)
		return err == nil
	}) {
		t.Fatalf("after the lander closed a channel: OpenChannel = %v, want a free slot", err)
	}
	_ = e.client.Close()
	if err := e.waitRelay(); err != nil {
		t.Fatalf("Relay = %v", err)
	}
	if !strings.Contains(e.logs.String(), "from_client=1 from_lander=") {
		t.Errorf("no summary of refused opens in the log:\n%s", e.logs)
	}
}

// TestWindow: with Options.Window, a client's session can run 10 MiB ahead
// of a lander that reads nothing (with OpenSSH's 2 MiB it stalls after
// about 4 MiB: the lander's window, the copy's buffer and its own).
func TestWindow(t *testing.T) {
	e := newEnvOpts(t, false, Options{Window: 16 << 20, Windows: NewWindowBudget(64 << 20), roundTrip: 50 * time.Millisecond})
	s, err := e.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("sink"); err != nil {
		t.Fatal(err)
	}
	// The lander has the session running; from now on it reads nothing.
	e.lander.raw.wedge()
	within(t, "writing 10 MiB ahead of a stalled lander", func() {
		if _, err := io.Copy(stdin, io.LimitReader(zeroReader{}, 10<<20)); err != nil {
			t.Errorf("write: %v", err)
		}
	})
	e.lander.raw.unwedge()
	_ = stdin.Close()
	if err := s.Wait(); err != nil {
		t.Errorf("sink: %v", err)
	}
}

// TestWindowBudget: enlarged windows go to at most maxBigWindowsPerConn
// channels of a connection and only while the node's budget has room; a
// closed channel gives its window back.
func TestWindowBudget(t *testing.T) {
	const big = 16 << 20
	for _, tc := range []struct {
		name   string
		budget int64
		want   []uint32 // the windows of channels opened one after another
	}{
		{"per connection cap", 100 << 20, []uint32{big, big, big, big, DefaultWindow}},
		{"node budget", 2*big + big/2, []uint32{big, big, DefaultWindow}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvOpts(t, false, Options{Window: big, Windows: NewWindowBudget(tc.budget), roundTrip: time.Second})
			var held []ssh.Channel
			for i := range tc.want {
				ch, err := openHeld(t, e.client, "session", nil)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, ch)
				want := fmt.Sprintf("window=%d", tc.want[i])
				if !poll(func() bool { return strings.Count(e.logs.String(), "msg=\"channel open\"") == i+1 }) {
					t.Fatalf("channel %d: no open logged", i)
				}
				if opens := channelOpenLines(e.logs.String()); !strings.Contains(opens[i], want) {
					t.Errorf("channel %d: %s, want %s", i, opens[i], want)
				}
			}
			// A big window given back goes to the next channel.
			_ = held[0].Close()
			if !poll(func() bool { return strings.Contains(e.logs.String(), "msg=\"channel closed\"") }) {
				t.Fatal("channel close not logged")
			}
			if _, err := openHeld(t, e.client, "session", nil); err != nil {
				t.Fatal(err)
			}
			if !poll(func() bool { return len(channelOpenLines(e.logs.String())) == len(tc.want)+1 }) {
				t.Fatal("last open not logged")
			}
			if last := channelOpenLines(e.logs.String())[len(tc.want)]; !strings.Contains(last, fmt.Sprintf("window=%d", big)) {
				t.Errorf("after a close: %s, want window=%d", last, big)
			}
		})
	}
}

// TestWindowFor: a client's window is its round trip times windowRate,
// within DefaultWindow and the configured window; as configured when the
// round trip is unknown.
func TestWindowFor(t *testing.T) {
	const big = 16 << 20
	for _, tc := range []struct {
		rtt  time.Duration
		max  uint32
		want uint32
	}{
		{0, big, big},
		{100 * time.Microsecond, big, DefaultWindow},
		{time.Millisecond, big, DefaultWindow},
		{4 * time.Millisecond, big, 4 << 30 / 1000},
		{15 * time.Millisecond, big, 15 << 30 / 1000},
		{50 * time.Millisecond, big, big},
		{50 * time.Millisecond, DefaultWindow, DefaultWindow},
		{time.Second, maxWindow, maxWindow},
		{time.Hour, big, big},
	} {
		if got := windowFor(tc.rtt, tc.max); got != tc.want {
			t.Errorf("windowFor(%v, %d) = %d, want %d", tc.rtt, tc.max, got, tc.want)
		}
	}
}

// TestWindowByRoundTrip: the relay sizes the client's windows by the round
// trip its handshake showed (x/crypto patch 16): on loopback that is far
// below what a larger window than OpenSSH's needs, and every channel the
// client opens gets the window logged for the connection.
func TestWindowByRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name      string
		roundTrip time.Duration // 0: as measured
		want      uint32        // 0: windowFor the measured round trip
	}{
		{"measured", 0, 0},
		{"near", 200 * time.Microsecond, DefaultWindow},
		{"10ms", 10 * time.Millisecond, 10 << 30 / 1000},
		{"far", 80 * time.Millisecond, 16 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvOpts(t, false, Options{Window: 16 << 20, Windows: NewWindowBudget(64 << 20), roundTrip: tc.roundTrip})
			if _, err := openHeld(t, e.client, "session", nil); err != nil {
				t.Fatal(err)
			}
			if !poll(func() bool { return len(channelOpenLines(e.logs.String())) == 1 }) {
				t.Fatal("channel open not logged")
			}
			var rtt time.Duration
			var window uint32
			for line := range strings.Lines(e.logs.String()) {
				if !strings.Contains(line, `msg="client receive window"`) {
					continue
				}
				for f := range strings.FieldsSeq(line) {
					if v, ok := strings.CutPrefix(f, "rtt="); ok {
						d, err := time.ParseDuration(v)
						if err != nil {
							t.Fatalf("rtt in %q: %v", line, err)
						}
						rtt = d
					}
					if v, ok := strings.CutPrefix(f, "window="); ok {
						n, err := strconv.ParseUint(v, 10, 32)
						if err != nil {
							t.Fatalf("window in %q: %v", line, err)
						}
						window = uint32(n)
					}
				}
			}
			want := tc.want
			if want == 0 {
				if rtt <= 0 || rtt > 10*time.Second {
					t.Fatalf("measured round trip %v on loopback", rtt)
				}
				want = windowFor(rtt, 16<<20)
			}
			if window != want {
				t.Errorf("client receive window %d (rtt %v), want %d", window, rtt, want)
			}
			if open := channelOpenLines(e.logs.String())[0]; !slices.Contains(strings.Fields(open), fmt.Sprintf("window=%d", want)) {
				t.Errorf("%s, want window=%d", open, want)
			}
		})
	}
}

// channelOpenLines returns the relay's "channel open" log lines in order.
func channelOpenLines(logs string) []string {
	var out []string
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "msg=\"channel open\"") {
			out = append(out, line)
		}
	}
	return out
}

// TestForwarderBound: push reports a full queue at reqQueueLen items
// waiting (so that its caller stops taking work), room receives once one
// has been taken, and every item runs once, in order.
func TestForwarderBound(t *testing.T) {
	var wg sync.WaitGroup
	gate := make(chan struct{})
	var got []int
	f := newForwarder(func(it item) {
		<-gate
		got = append(got, int(it.req.Payload[0])|int(it.req.Payload[1])<<8)
	}, wg.Go, nil, nil)
	push := func(i int) bool { return f.push(item{req: &ssh.Request{Payload: []byte{byte(i), byte(i >> 8)}}}) }
	// The goroutine takes the first item and waits in fn; the queue
	// holds the rest.
	queued := func() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.queue) }
	push(0)
	if !poll(func() bool { return queued() == 0 }) {
		t.Fatal("the forwarder did not take its first item")
	}
	for i := 1; i < reqQueueLen; i++ {
		if full := push(i); full {
			t.Fatalf("push %d reported a full queue with %d waiting", i, queued())
		}
	}
	if !push(reqQueueLen) {
		t.Fatalf("push %d: queue not reported full", reqQueueLen)
	}
	select {
	case <-f.room:
		t.Fatal("room before any item was taken")
	default:
	}
	gate <- struct{}{} // the first item runs; the next is taken
	select {
	case <-f.room:
	case <-time.After(waitLimit):
		t.Fatal("no room after an item was taken from the full queue")
	}
	close(gate)
	f.wait()
	wg.Wait()
	if len(got) != reqQueueLen+1 || !slices.IsSorted(got) || got[0] != 0 {
		t.Fatalf("ran %d items (want %d), in order: %v", len(got), reqQueueLen+1, slices.IsSorted(got))
	}
}
