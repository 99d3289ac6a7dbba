package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// holdServer is the far end of a local forward: it accepts TCP connections and keeps each open
// until its peer closes it, counting the ones open and the ones accepted.
type holdServer struct {
	port int

	mu       sync.Mutex
	open     int
	accepted int
	changed  chan struct{} // closed and replaced on every change
}

// newHoldServer listens on 127.0.0.1:0 until the test ends.
func newHoldServer(t testing.TB) *holdServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &holdServer{port: ln.Addr().(*net.TCPAddr).Port, changed: make(chan struct{})}
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns = append(conns, c)
			connsMu.Unlock()
			s.update(func() { s.open++; s.accepted++ })
			wg.Go(func() {
				_, _ = io.Copy(io.Discard, c)
				c.Close()
				s.update(func() { s.open-- })
			})
		}
	})
	return s
}

func (s *holdServer) update(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
	close(s.changed)
	s.changed = make(chan struct{})
}

// counts returns the connections open and accepted so far, and a channel closed on change.
func (s *holdServer) counts() (open, accepted int, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open, s.accepted, s.changed
}

// waitOpen waits until exactly n connections are open.
func (s *holdServer) waitOpen(t testing.TB, n int) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		open, _, changed := s.counts()
		if open == n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%d forwarded connections open at the far end, want %d", open, n)
		}
	}
}

// forwardOutcome tells what became of one connection to a local forward: it reached the far
// end (true), or ssh closed it because the channel was refused (false). sshLog gives what ssh
// printed, shown when neither happens.
func forwardOutcome(t testing.TB, s *holdServer, conn net.Conn, sshLog func() string) bool {
	t.Helper()
	_, before, _ := s.counts()
	closed := make(chan error, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
		_, err := conn.Read(make([]byte, 1))
		closed <- err
	}()
	timeout := time.After(waitTimeout)
	for {
		_, accepted, changed := s.counts()
		if accepted > before {
			return true
		}
		select {
		case err := <-closed:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("a forwarded connection neither reached the far end nor was closed; ssh:\n%s", sshLog())
			}
			return false
		case <-changed:
		case <-timeout:
			t.Fatalf("a forwarded connection neither reached the far end nor was closed; ssh:\n%s", sshLog())
		}
	}
}

// TestMaxChannelsOpenSSH opens more parallel connections through one `ssh -L` than
// max_channels allows (64 in the tests' config): the gatekeeper refuses the channels beyond it with a
// clear reason that the OpenSSH client prints, and a connection closed frees its slot.
func TestMaxChannelsOpenSSH(t *testing.T) {
	// Not parallel: 65 forwarded connections through one ssh, each waited for, need a machine
	// that is not busy with the other tests (under the full suite's load one took over 30 s).
	const limit = 64 // max_channels in gatekeeperConfig
	g := sharedGatekeeper(t)
	u := newUser(t)
	explain(t, g, u)
	c := newClient(t, u, g.port, trustedAddr)
	hold := newHoldServer(t)
	lport := freePort()
	// -N: no session channel, so every channel is a forwarded connection. LogLevel=INFO goes
	// first (ssh keeps the first value) so that ssh prints why a channel open failed.
	_, stderr, done := c.background("ssh", c.sshArgs([]string{"-N", "-o", "LogLevel=INFO",
		"-o", "ExitOnForwardFailure=yes", "-L", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", lport, hold.port)})...)
	_, sshLog := stderrLines(stderr)
	addr := fmt.Sprintf("127.0.0.1:%d", lport)

	// The first connection that gets through is also the readiness check: it stays open as
	// one of the limit.
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	deadline := time.Now().Add(startTimeout)
	for len(held) == 0 {
		select {
		case <-done:
			t.Fatalf("ssh -L exited: %s", sshLog())
		default:
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			held = append(held, conn)
		} else if time.Now().After(deadline) {
			t.Fatalf("ssh -L not listening on %s after %v: %s", addr, startTimeout, sshLog())
		} else {
			time.Sleep(pollInterval) // the listener is not up yet
		}
	}
	for len(held) < limit {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	hold.waitOpen(t, limit)

	over, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if forwardOutcome(t, hold, over, sshLog) {
		t.Fatalf("connection %d through one SSH connection reached the far end; want it refused (max_channels %d)", limit+1, limit)
	}
	const reason = "open failed: resource shortage: too many channels open on this connection"
	deadline = time.Now().Add(waitTimeout)
	for !strings.Contains(sshLog(), reason) {
		if time.Now().After(deadline) {
			t.Fatalf("ssh did not print %q:\n%s", reason, sshLog())
		}
		time.Sleep(pollInterval) // ssh's stderr arrives on its own schedule
	}
	g.waitLog(t, 0, "channel refused: too many channels open on this connection", u.name)

	// Closing one frees its slot once both sides have closed the channel; until then a new
	// connection may still be refused, so try until one gets through.
	held[0].Close()
	held = held[1:]
	hold.waitOpen(t, limit-1)
	deadline = time.Now().Add(waitTimeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if forwardOutcome(t, hold, conn, sshLog) {
			held = append(held, conn)
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no connection got through within %v after one was closed", waitTimeout)
		}
	}
	hold.waitOpen(t, limit)
	select {
	case <-done:
		t.Fatalf("ssh -L exited: %s", sshLog())
	default:
	}
}

// TestMaxSessionsPerUserOpenSSH: with session.max_per_user 1, OpenSSH's client holding one
// session is told why a second login with the right password and code is refused, and is asked
// nothing more; a session of another user is not counted; once the first ends, the login works.
func TestMaxSessionsPerUserOpenSSH(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{edit: func(y string) string { return y + "session:\n  max_per_user: 1\n" }})
	u := enrolledUser(t, g)
	held := newClient(t, u, g.port, trustedAddr)
	s := held.liveSSH(nil, "echo started; read line")
	s.waitFor("started")

	other := newClient(t, enrolledUser(t, g), g.port, trustedAddr)
	if r := other.ssh(nil, "echo", "ok"); r.exit != 0 {
		t.Fatalf("another user's login while alice holds her one session: %s", r)
	}

	c := newClient(t, u, g.port, "")
	c.setCode(u.nextCode(t))
	// ssh's defaults, which the harness narrows: banners shown (LogLevel INFO), the password
	// method after keyboard-interactive, three password prompts.
	defaults := []string{"-o", "LogLevel=INFO", "-o", "PreferredAuthentications=publickey,keyboard-interactive,password",
		"-o", "NumberOfPasswordPrompts=3"}
	r := c.ssh(defaults, "echo", "second")
	if r.exit != 255 || !strings.Contains(r.stderr, u.name+" already has 1 session open on this login node") {
		t.Fatalf("a second session at max_per_user 1: want exit 255 and the reason shown, got %s", r)
	}
	if prompts := c.prompts(); strings.Count(strings.Join(prompts, "\n"), "assword") != 1 {
		t.Errorf("the client was asked for a password %q, want once (nothing after the refusal)", prompts)
	}

	s.write("done\n")
	if exit := s.wait(waitTimeout); exit != 0 {
		t.Fatalf("the held session: %s", s)
	}
	c.setCode(u.nextCode(t))
	if r := c.ssh(nil, "echo", "again"); r.exit != 0 || strings.TrimSpace(r.stdout) != "again" {
		t.Errorf("a login after the session ended: %s", r)
	}
}
