// Package proxyproto accepts the PROXY protocol (v1 text and v2 binary) in front of the SSH
// server, so that a load balancer can pass on the real client address — but only a load balancer
// listed in the configuration: a header from anyone else is never honoured, or any client could
// claim an address in a trusted network and skip the verification code.
package proxyproto

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultHeaderTimeout is used when Listener.HeaderTimeout is zero or negative.
const DefaultHeaderTimeout = 5 * time.Second

// Listener wraps a net.Listener. Connections whose direct peer is inside From must start with a
// PROXY protocol header (v1 text or v2 binary); their RemoteAddr() is then the client address the
// header names. Connections from any other peer are passed through untouched: a header they send is
// never honoured (it just becomes garbage for the SSH handshake), so nobody can claim a trusted address.
//
// Accept never reads from the connection. The header is read on the first Read or RemoteAddr
// call (from whichever goroutine comes first), within HeaderTimeout. If it is missing, invalid or
// late, every Read fails with an error wrapping ErrNoHeader or ErrInvalidHeader, RemoteAddr
// returns the direct peer's address, and the caller is expected to close the connection.
type Listener struct {
	net.Listener
	// From lists the proxies (load balancers) whose headers are honoured and required.
	// IPv4-mapped IPv6 peer addresses are unmapped before they are compared.
	From []netip.Prefix
	// HeaderTimeout bounds the time to receive the whole header; DefaultHeaderTimeout if <= 0.
	HeaderTimeout time.Duration
}

// Accept waits for the next connection. A connection from a peer inside From is returned wrapped,
// at once and without reading anything; any other connection is returned as it is.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if !fromProxy(c.RemoteAddr(), l.From) {
		return c, nil
	}
	timeout := l.HeaderTimeout
	if timeout <= 0 {
		timeout = DefaultHeaderTimeout
	}
	return &conn{Conn: c, timeout: timeout, remote: c.RemoteAddr()}, nil
}

// fromProxy reports whether addr, the direct peer of a connection, is inside one of the prefixes.
// Only TCP peers can be proxies; anything else is treated as untrusted.
func fromProxy(addr net.Addr, from []netip.Prefix) bool {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || tcp == nil {
		return false
	}
	ip := tcp.AddrPort().Addr().Unmap()
	for _, p := range from {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// UnknownAddr is the RemoteAddr of a connection whose PROXY header names no client address
// (v1 UNKNOWN, v2 LOCAL, an AF_UNSPEC or AF_UNIX address): Proxy is the load balancer's own
// address. Such a connection must be handled as one from outside the trusted networks, never
// judged by the balancer's address (which may well be inside them).
type UnknownAddr struct {
	Proxy *net.TCPAddr
}

// Network is "tcp".
func (a *UnknownAddr) Network() string { return "tcp" }

// String is the load balancer's address.
func (a *UnknownAddr) String() string { return a.Proxy.String() }

// conn is a connection from a trusted proxy whose PROXY header is read lazily.
type conn struct {
	net.Conn
	timeout time.Duration

	once   sync.Once
	remote net.Addr // the direct peer until the header names a client; written only inside once
	err    error    // the header error, if any; written only inside once

	// mu guards the read-deadline bookkeeping shared by the header read and SetDeadline calls,
	// so that a deadline the caller sets is neither lost nor clobbered by the header's own.
	mu             sync.Mutex
	state          headerState
	headerDeadline time.Time // while state == reading
	userDeadline   time.Time // the caller's last read deadline (zero: none)
}

type headerState int

const (
	pending headerState = iota
	reading
	done
)

// readHeader runs once per connection, in whichever goroutine first calls Read or RemoteAddr;
// the others wait for it through sync.Once.
func (c *conn) readHeader() {
	c.mu.Lock()
	c.state = reading
	c.headerDeadline = time.Now().Add(c.timeout)
	err := c.Conn.SetReadDeadline(earliest(c.headerDeadline, c.userDeadline))
	c.mu.Unlock()

	var src netip.AddrPort
	if err == nil {
		src, err = readHeader(c.Conn)
	}

	c.mu.Lock()
	c.state = done
	// Put back whatever the caller asked for (usually no deadline at all).
	if derr := c.Conn.SetReadDeadline(c.userDeadline); err == nil {
		err = derr
	}
	c.mu.Unlock()

	if err != nil {
		c.err = err
		return
	}
	if src.IsValid() {
		c.remote = net.TCPAddrFromAddrPort(src)
		return
	}
	if tcp, ok := c.Conn.RemoteAddr().(*net.TCPAddr); ok {
		c.remote = &UnknownAddr{Proxy: tcp}
	}
}

// Read reads the PROXY header first if nobody has yet, then data after it.
func (c *conn) Read(b []byte) (int, error) {
	c.once.Do(c.readHeader)
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}

// RemoteAddr returns the client address from the PROXY header, or the direct peer's address if
// the header names none (v1 UNKNOWN, v2 LOCAL/UNSPEC) or could not be read. It waits for the
// header if it has not been read yet.
func (c *conn) RemoteAddr() net.Addr {
	c.once.Do(c.readHeader)
	return c.remote
}

// SetDeadline sets both deadlines; the read one goes through SetReadDeadline's bookkeeping.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// SetReadDeadline records the caller's deadline so the header read restores it afterwards, and
// applies it at once — while the header is being read, only if it is earlier than the header's
// own deadline, so that it can still cut a blocked header read short.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.userDeadline = t
	if c.state == reading {
		return c.Conn.SetReadDeadline(earliest(c.headerDeadline, t))
	}
	return c.Conn.SetReadDeadline(t)
}

// earliest returns the earlier of two deadlines, where zero means none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
