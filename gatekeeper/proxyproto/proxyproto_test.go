package proxyproto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

const (
	trusted   = "127.0.0.1/32" // the test client's address: it plays the load balancer
	untrusted = "10.0.0.0/8"   // only a prefix in the config; nothing is sent there
	banner    = "SSH-2.0-OpenSSH_9.6\r\n"
)

// listen starts a Listener on 127.0.0.1:0 trusting the given prefix.
func listen(t *testing.T, from string, timeout time.Duration) *Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &Listener{Listener: inner, From: []netip.Prefix{netip.MustParsePrefix(from)}, HeaderTimeout: timeout}
	t.Cleanup(func() { l.Close() })
	return l
}

// connect dials l and accepts the connection; Accept must not take long whatever the client does.
func connect(t *testing.T, l *Listener) (client, server net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		// A broken implementation must fail the test, not hang it: closing unblocks any Read.
		watchdog := time.AfterFunc(10*time.Second, func() {
			t.Error("connection still in use after 10s; closing it")
			client.Close()
			r.c.Close()
		})
		t.Cleanup(func() { watchdog.Stop() })
		return client, r.c
	case <-time.After(5 * time.Second):
		t.Fatal("Accept blocked")
		return nil, nil
	}
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func TestTrustedHeader(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16) // more than one segment
	tests := []struct {
		name    string
		header  []byte
		want    string // "" = an *UnknownAddr holding the balancer's address
		payload []byte
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\r\n"), "192.0.2.1:40000", []byte(banner)},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 40000 22\r\n"), "[2001:db8::1]:40000", []byte(banner)},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), "", []byte(banner)},
		{"v2 PROXY IPv4", v2Header(0x21, 0x11, v2Addr4()), "192.0.2.1:40000", []byte(banner)},
		{"v2 PROXY IPv6", v2Header(0x21, 0x21, v2Addr6()), "[2001:db8::1]:40000", []byte(banner)},
		{"v2 LOCAL", v2Header(0x20, 0x00, nil), "", []byte(banner)},
		{"v2 PROXY TLVs", v2Header(0x21, 0x11, cat(v2Addr4(), tlvs)), "192.0.2.1:40000", []byte(banner)},
		{"v2 big payload", v2Header(0x21, 0x21, cat(v2Addr6(), tlvs)), "[2001:db8::1]:40000", big},
		{"v1 header looks like payload", []byte("PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\r\n"), "192.0.2.1:40000",
			[]byte("PROXY TCP4 10.9.9.9 198.51.100.1 1 22\r\n")},
	}
	// How the server side first touches the connection, and how the client sends its bytes.
	modes := []struct {
		name       string
		sameWrite  bool // header and payload in one Write (one segment for small payloads)
		remoteLast bool // Read before RemoteAddr, so Read triggers the header
		concurrent bool // RemoteAddr from another goroutine while Read runs
	}{
		{name: "same write, RemoteAddr first", sameWrite: true},
		{name: "same write, Read first", sameWrite: true, remoteLast: true},
		{name: "same write, concurrent", sameWrite: true, concurrent: true},
		{name: "payload after RemoteAddr"},
	}
	for _, tt := range tests {
		for _, m := range modes {
			t.Run(tt.name+"/"+m.name, func(t *testing.T) {
				l := listen(t, trusted, 5*time.Second)
				client, server := connect(t, l)
				want := tt.want
				if want == "" {
					want = client.LocalAddr().String()
				}
				// Written from a goroutine: a big payload does not fit in the socket buffers.
				sent := make(chan error, 1)
				wrote := make(chan struct{})
				go func() {
					if m.sameWrite {
						_, err := client.Write(cat(tt.header, tt.payload))
						sent <- err
						return
					}
					if _, err := client.Write(tt.header); err != nil {
						sent <- err
						return
					}
					<-wrote // the server has read the header: the payload is a separate segment
					_, err := client.Write(tt.payload)
					sent <- err
				}()
				remote := make(chan string, 1)
				if m.concurrent {
					go func() { remote <- server.RemoteAddr().String() }()
				} else if !m.remoteLast {
					remote <- server.RemoteAddr().String()
				}
				if !m.sameWrite {
					close(wrote)
				}
				got := make([]byte, len(tt.payload))
				if _, err := io.ReadFull(server, got); err != nil {
					t.Fatalf("Read: %v", err)
				}
				if !bytes.Equal(got, tt.payload) {
					t.Errorf("payload after header = %.60q..., want %.60q...", got, tt.payload)
				}
				if m.remoteLast {
					remote <- server.RemoteAddr().String()
				}
				if r := <-remote; r != want {
					t.Errorf("RemoteAddr() = %s, want %s", r, want)
				}
				if _, ok := server.RemoteAddr().(*UnknownAddr); ok != (tt.want == "") {
					t.Errorf("RemoteAddr() is %T, want an *UnknownAddr exactly when the header names no client", server.RemoteAddr())
				}
				if err := <-sent; err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestUntrustedPeerHeaderIgnored(t *testing.T) {
	tests := []struct {
		name   string
		header []byte
	}{
		{"v1", []byte("PROXY TCP4 10.1.2.3 198.51.100.1 40000 22\r\n")},
		{"v2", v2Header(0x21, 0x11, []byte{10, 1, 2, 3, 198, 51, 100, 1, 0x9c, 0x40, 0, 22})},
		{"garbage", []byte("PROXY nonsense\r\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := listen(t, untrusted, 5*time.Second)
			client, server := connect(t, l)
			sent := cat(tt.header, []byte(banner))
			write(t, client, sent)
			if got, want := server.RemoteAddr().String(), client.LocalAddr().String(); got != want {
				t.Errorf("RemoteAddr() = %s, want the direct peer %s", got, want)
			}
			got := make([]byte, len(sent))
			if _, err := io.ReadFull(server, got); err != nil {
				t.Fatalf("Read: %v", err)
			}
			if !bytes.Equal(got, sent) {
				t.Errorf("Read = %q, want the header passed through: %q", got, sent)
			}
		})
	}
}

func TestTrustedPeerBadHeader(t *testing.T) {
	tests := []struct {
		name    string
		send    []byte // then the client closes its sending side if close
		close   bool
		wantErr error
	}{
		{name: "SSH banner without header", send: []byte(banner), wantErr: ErrNoHeader},
		{name: "closed without a byte", close: true, wantErr: ErrNoHeader},
		{name: "bad v1 address", send: []byte("PROXY TCP4 999.0.2.1 198.51.100.1 40000 22\r\n" + banner), wantErr: ErrInvalidHeader},
		{name: "v1 family mismatch", send: []byte("PROXY TCP4 2001:db8::1 198.51.100.1 40000 22\r\n" + banner), wantErr: ErrInvalidHeader},
		{name: "oversized v1", send: append([]byte("PROXY UNKNOWN "), bytes.Repeat([]byte("x"), 300)...), wantErr: ErrInvalidHeader},
		{name: "oversized v2", send: v2Header(0x21, 0x11, make([]byte, 5000)), wantErr: ErrInvalidHeader},
		{name: "v2 bad version", send: v2Header(0x11, 0x11, v2Addr4()), wantErr: ErrInvalidHeader},
		{name: "v2 truncated then closed", send: v2Header(0x21, 0x11, v2Addr4())[:20], close: true, wantErr: ErrInvalidHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A long timeout: each of these must fail on what arrives, not by waiting.
			l := listen(t, trusted, time.Minute)
			client, server := connect(t, l)
			go func() {
				// Errors are irrelevant: the server may reset a connection it rejects.
				client.Write(tt.send)
				if tt.close {
					client.(*net.TCPConn).CloseWrite()
				}
			}()
			start := time.Now()
			n, err := server.Read(make([]byte, 64))
			if n != 0 || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Read() = %d, %v; want 0, %v", n, err, tt.wantErr)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Read took %v to reject the header", d)
			}
			if _, err2 := server.Read(make([]byte, 64)); !errors.Is(err2, tt.wantErr) {
				t.Errorf("second Read() error = %v, want %v again", err2, tt.wantErr)
			}
			if u, ok := server.RemoteAddr().(*UnknownAddr); !ok || u.String() != client.LocalAddr().String() {
				t.Errorf("RemoteAddr() = %T %v, want *UnknownAddr{%s}", server.RemoteAddr(), server.RemoteAddr(), client.LocalAddr())
			}
		})
	}
}

func TestHeaderTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	tests := []struct {
		name     string
		send     []byte
		wantErr  error
		wantWait bool // fails only when the timeout passes (else at once)
	}{
		{"silent", nil, ErrNoHeader, true},
		{"partial signature", []byte("PROX"), ErrNoHeader, true},
		{"partial v2", v2Header(0x21, 0x11, v2Addr4())[:20], ErrInvalidHeader, true},
		// The library wants a v1 line in one piece (its defence against slow senders); a real
		// balancer sends it in one segment.
		{"partial v1", []byte("PROXY TCP4 192.0.2.1 "), ErrInvalidHeader, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := listen(t, trusted, timeout)
			client, server := connect(t, l)
			write(t, client, tt.send)
			start := time.Now()
			_, err := server.Read(make([]byte, 64))
			elapsed := time.Since(start)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Read() error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantWait && elapsed < timeout/2 || elapsed > 5*time.Second {
				t.Errorf("Read failed after %v, want about %v", elapsed, timeout)
			}
			if u, ok := server.RemoteAddr().(*UnknownAddr); !ok || u.String() != client.LocalAddr().String() {
				t.Errorf("RemoteAddr() = %T %v, want *UnknownAddr{%s}", server.RemoteAddr(), server.RemoteAddr(), client.LocalAddr())
			}
		})
	}
}

func TestAcceptDoesNotWaitForHeader(t *testing.T) {
	// A minute-long header timeout: if Accept read the header, the second connect would block
	// and connect fails the test after 5s.
	l := listen(t, trusted, time.Minute)
	silentClient, silent := connect(t, l)
	client, server := connect(t, l)
	write(t, client, []byte("PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\r\n"+banner))
	if got := server.RemoteAddr().String(); got != "192.0.2.1:40000" {
		t.Errorf("second connection RemoteAddr() = %s, want 192.0.2.1:40000", got)
	}
	// The silent one is still pending; closing it makes its header read fail at once.
	silentClient.Close()
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, ErrNoHeader) {
		t.Errorf("silent connection Read() error = %v, want %v", err, ErrNoHeader)
	}
}

func TestDeadlines(t *testing.T) {
	header := []byte("PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\r\n")

	t.Run("header deadline removed afterwards", func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		l := listen(t, trusted, timeout)
		client, server := connect(t, l)
		write(t, client, header)
		server.RemoteAddr()
		// The payload comes well after the header timeout, which must no longer apply.
		time.Sleep(3 * timeout)
		write(t, client, []byte(banner))
		got := make([]byte, len(banner))
		if _, err := io.ReadFull(server, got); err != nil || string(got) != banner {
			t.Fatalf("Read() = %q, %v; want %q", got, err, banner)
		}
	})

	t.Run("caller deadline set before the header survives it", func(t *testing.T) {
		l := listen(t, trusted, time.Minute)
		client, server := connect(t, l)
		write(t, client, header) // and then nothing
		if err := server.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := server.Read(make([]byte, 1))
		if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrNoHeader) || errors.Is(err, ErrInvalidHeader) {
			t.Fatalf("Read() error = %v, want the caller's deadline after a good header", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Read returned after %v", d)
		}
		if got := server.RemoteAddr().String(); got != "192.0.2.1:40000" {
			t.Errorf("RemoteAddr() = %s, want 192.0.2.1:40000", got)
		}
	})

	t.Run("caller deadline cuts a header read short", func(t *testing.T) {
		l := listen(t, trusted, time.Minute)
		_, server := connect(t, l)
		if err := server.SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := server.Read(make([]byte, 1)); !errors.Is(err, ErrNoHeader) {
			t.Errorf("Read() error = %v, want %v", err, ErrNoHeader)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Read ignored the caller's deadline: returned after %v", d)
		}
	})

	t.Run("caller deadline cleared during header read stays cleared", func(t *testing.T) {
		l := listen(t, trusted, 5*time.Second)
		client, server := connect(t, l)
		if err := server.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		write(t, client, header)
		server.RemoteAddr()
		if err := server.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		write(t, client, []byte(banner))
		got := make([]byte, len(banner))
		if _, err := io.ReadFull(server, got); err != nil || string(got) != banner {
			t.Fatalf("Read() = %q, %v; want %q", got, err, banner)
		}
	})
}

func TestFromProxy(t *testing.T) {
	from := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("2001:db8::/32")}
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	tests := []struct {
		name string
		addr net.Addr
		from []netip.Prefix
		want bool
	}{
		{"IPv4 inside", tcp("127.0.0.1:5000"), from, true},
		{"IPv4 outside", tcp("127.0.0.2:5000"), from, false},
		{"IPv4-mapped inside", tcp("[::ffff:127.0.0.1]:5000"), from, true},
		{"IPv4-mapped outside", tcp("[::ffff:127.0.0.2]:5000"), from, false},
		{"IPv6 inside", tcp("[2001:db8::7]:5000"), from, true},
		{"IPv6 outside", tcp("[2001:db9::7]:5000"), from, false},
		{"no From", tcp("127.0.0.1:5000"), nil, false},
		{"unix peer", &net.UnixAddr{Name: "@x", Net: "unix"}, from, false},
		{"nil TCPAddr", (*net.TCPAddr)(nil), from, false},
		{"nil", nil, from, false},
	}
	for _, tt := range tests {
		if got := fromProxy(tt.addr, tt.from); got != tt.want {
			t.Errorf("%s: fromProxy(%v) = %v, want %v", tt.name, tt.addr, got, tt.want)
		}
	}
}

func TestHeaderTimeoutDefault(t *testing.T) {
	for _, tt := range []struct {
		set, want time.Duration
	}{
		{0, DefaultHeaderTimeout},
		{-time.Second, DefaultHeaderTimeout},
		{time.Second, time.Second},
	} {
		l := &Listener{HeaderTimeout: tt.set}
		if got := l.headerTimeout(); got != tt.want {
			t.Errorf("HeaderTimeout %v: header timeout %v, want %v", tt.set, got, tt.want)
		}
	}
}

// TestCloseWrite: a connection from a listed balancer shuts down its writing half (the relay
// ends a client's connection so) after what it wrote; the balancer reads it, then EOF.
func TestCloseWrite(t *testing.T) {
	l := listen(t, trusted, time.Second)
	client, server := connect(t, l)
	write(t, client, []byte("PROXY TCP4 192.0.2.1 127.0.0.1 5555 22\r\n"+banner))
	buf := make([]byte, len(banner))
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != banner {
		t.Fatalf("read %q, %v", buf, err)
	}
	write(t, server, []byte("bye"))
	cw, ok := server.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", server)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if got, err := io.ReadAll(client); err != nil || string(got) != "bye" {
		t.Fatalf("the balancer read %q, %v; want \"bye\" and EOF", got, err)
	}
}

// TestIsHeader: the start of a v1 or v2 header, not an SSH version or an HTTP request.
func TestIsHeader(t *testing.T) {
	for in, want := range map[string]bool{
		"PROXY TCP4 192.0.2.1 127.0.0.1 5555 22\r\n": true,
		"\r\n\r\n\x00\r\nQUIT\n\x21\x11":             true,
		"SSH-2.0-OpenSSH_9.2\r\n":                    false,
		"GET / HTTP/1.1\r\n":                         false,
		"\r\n":                                       false,
	} {
		if got := IsHeader([]byte(in)); got != want {
			t.Errorf("IsHeader(%q) = %v, want %v", in, got, want)
		}
	}
}
