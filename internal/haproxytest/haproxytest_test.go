package haproxytest

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// source is the loopback address HAProxy connects from in these tests.
const source = "127.0.0.9"

// backend is a tiny TCP server that reads the PROXY v2 header of each connection and answers
// "NAME HEADER-SOURCE TCP-PEER" on a line. It records the TCP peers of health checks (LOCAL
// headers) and closes them.
type backend struct {
	name string
	ln   net.Listener
	wg   sync.WaitGroup

	mu          sync.Mutex
	checkPeers  []string
	headerError error
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, ln: ln}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) serve() {
	defer b.wg.Done()
	for {
		conn, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			h, err := proxyproto.Read(bufio.NewReader(conn))
			if err != nil {
				b.mu.Lock()
				b.headerError = fmt.Errorf("from %s: %w", conn.RemoteAddr(), err)
				b.mu.Unlock()
				return
			}
			if h.Command.IsLocal() {
				b.mu.Lock()
				b.checkPeers = append(b.checkPeers, conn.RemoteAddr().String())
				b.mu.Unlock()
				return
			}
			fmt.Fprintf(conn, "%s %s %s\n", b.name, h.SourceAddr, conn.RemoteAddr())
		}()
	}
}

// close stops accepting (HAProxy's checks then see "connection refused") and waits for the
// connections in progress.
func (b *backend) close() {
	_ = b.ln.Close()
	b.wg.Wait()
}

// state returns what the backend saw besides answered connections.
func (b *backend) state() (checkPeers []string, headerError error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.checkPeers...), b.headerError
}

// ask connects through the proxy from 127.0.0.1 and returns the answering backend's name, the
// client address in the PROXY header and the TCP peer the backend saw, checking that the header
// carries exactly this connection's address.
func ask(t *testing.T, addr string) (name, peer string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 2 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 3 {
		t.Fatalf("answer %q", line)
	}
	if f[1] != conn.LocalAddr().String() {
		t.Errorf("PROXY header source %s, want the client's address %s", f[1], conn.LocalAddr())
	}
	return f[0], f[2]
}

func TestRoundRobinProxyV2FromSource(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	start := time.Now()
	p := Start(t, Config{Backends: []string{a.addr(), b.addr()}, Source: source})
	t.Logf("frontend %s open after %v", p.Addr(), time.Since(start).Round(time.Millisecond))
	if host, _, _ := net.SplitHostPort(p.Addr()); host != "127.0.0.1" {
		t.Errorf("Addr() = %s, want 127.0.0.1:PORT", p.Addr())
	}
	p.WaitBackendsUp(t, 2)
	t.Logf("both backends UP after %v", time.Since(start).Round(time.Millisecond))

	seen := map[string]int{}
	for range 6 {
		name, peer := ask(t, p.Addr())
		seen[name]++
		if host, _, _ := net.SplitHostPort(peer); host != source {
			t.Errorf("backend %s saw TCP peer %s, want HAProxy's source %s", name, peer, source)
		}
	}
	if seen["a"] != 3 || seen["b"] != 3 {
		t.Errorf("answers by backend %v, want 3 each (round robin)", seen)
	}

	for _, be := range []*backend{a, b} {
		checks, herr := be.state()
		if herr != nil {
			t.Errorf("backend %s: a connection without a valid PROXY header: %v", be.name, herr)
		}
		if len(checks) == 0 {
			t.Errorf("backend %s: no health check with a PROXY v2 LOCAL header", be.name)
		}
		for _, c := range checks {
			if host, _, _ := net.SplitHostPort(c); host != source {
				t.Errorf("backend %s: health check from %s, want %s", be.name, c, source)
			}
		}
	}

	// Backend a goes away: once HAProxy has marked it DOWN, every connection goes to b.
	a.close()
	start = time.Now()
	p.WaitBackendDown(t, ServerName(0))
	t.Logf("%s DOWN %v after its listener closed", ServerName(0), time.Since(start).Round(time.Millisecond))
	for range 4 {
		if name, _ := ask(t, p.Addr()); name != "b" {
			t.Fatalf("answer from %s after a is down", name)
		}
	}
	st := p.Status(t)
	if !st[ServerName(0)].Down() || !st[ServerName(1)].Up() {
		t.Errorf("Status() = %v, want b0 down and b1 up", st)
	}
}

// A backend that dies before HAProxy has noticed: the connection HAProxy tries on it is refused
// and redispatched to the other one, so the client never sees the failure.
func TestRedispatchBeforeCheckNotices(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := Start(t, Config{Backends: []string{a.addr(), b.addr()}, Source: source})
	p.WaitBackendsUp(t, 2)
	a.close()
	for range 4 {
		if name, _ := ask(t, p.Addr()); name != "b" {
			t.Fatalf("answer from %s after a closed", name)
		}
	}
}

// Without Source, HAProxy connects from the kernel's choice, 127.0.0.1.
func TestNoSource(t *testing.T) {
	a := startBackend(t, "a")
	p := Start(t, Config{Backends: []string{a.addr()}})
	p.WaitBackendsUp(t, 1)
	if _, peer := ask(t, p.Addr()); !strings.HasPrefix(peer, "127.0.0.1:") {
		t.Errorf("TCP peer %s, want 127.0.0.1", peer)
	}
}
