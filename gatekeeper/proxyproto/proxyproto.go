// Package proxyproto accepts the PROXY protocol (v1 text and v2 binary) in front of the SSH
// server, so that a load balancer can pass on the real client address — but only a load balancer
// listed in the configuration: a header from anyone else is never honoured, or any client could
// claim an address in a trusted network and skip the verification code.
//
// The header is parsed by github.com/pires/go-proxyproto. This package adds what the gatekeeper
// needs on top: the policy (headers required from the listed balancers, never read from anyone
// else) and failing closed when a header names no client address (UnknownAddr).
package proxyproto

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	goproxy "github.com/pires/go-proxyproto"
)

// DefaultHeaderTimeout is used when Listener.HeaderTimeout is zero or negative.
const DefaultHeaderTimeout = 5 * time.Second

// ErrNoHeader is returned (wrapped, together with the library's error) by Read and Write on a
// connection from a listed load balancer that did not start with a PROXY protocol signature,
// or whose header did not arrive within the header timeout.
var ErrNoHeader = errors.New("proxyproto: no PROXY protocol header from a listed load balancer")

// ErrInvalidHeader is returned (wrapped, together with the library's error) by Read and Write
// on a connection from a listed load balancer whose PROXY header is malformed or truncated.
var ErrInvalidHeader = errors.New("proxyproto: invalid PROXY protocol header from a listed load balancer")

// Listener wraps a net.Listener. Connections whose direct peer is inside From must start with a
// PROXY protocol header (v1 text or v2 binary); their RemoteAddr() is then the client address the
// header names. Connections from any other peer are passed through untouched: nothing is read
// from them, so a header they send is never honoured (it just becomes garbage for the SSH
// handshake), and nobody can claim a trusted address.
//
// Accept never reads from the connection. The header is read on the first Read, Write or
// RemoteAddr call (from whichever goroutine comes first), within HeaderTimeout. If it is missing,
// invalid or late, every Read and Write fails with an error wrapping ErrNoHeader or
// ErrInvalidHeader, RemoteAddr returns an *UnknownAddr, and the caller is expected to close the
// connection.
//
// A header that names no client address — v1 UNKNOWN, v2 LOCAL (the balancer's health checks),
// or a v2 address that is not TCP over IPv4/IPv6 (AF_UNSPEC, AF_UNIX, UDP) — is accepted and the
// connection is served, but its RemoteAddr() is an *UnknownAddr: the connection counts as one
// from outside every trusted network, never as one from the balancer's own address.
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
	// The library's listener holds no state of its own, so one per call costs nothing and
	// keeps Listener a plain struct that callers fill in.
	inner := &goproxy.Listener{
		Listener:          l.Listener,
		ConnPolicy:        l.policy,
		ReadHeaderTimeout: l.headerTimeout(),
	}
	c, err := inner.Accept()
	if err != nil {
		return nil, err
	}
	if pc, ok := c.(*goproxy.Conn); ok {
		return &conn{Conn: pc}, nil
	}
	return c, nil
}

// headerTimeout is HeaderTimeout, or DefaultHeaderTimeout when that is not positive.
func (l *Listener) headerTimeout() time.Duration {
	if l.HeaderTimeout <= 0 {
		return DefaultHeaderTimeout
	}
	return l.HeaderTimeout
}

// policy is the library's ConnPolicy: REQUIRE a header from the listed balancers, SKIP (never
// read, never honour) for everyone else. It never fails: an error would stop the accept loop.
func (l *Listener) policy(opts goproxy.ConnPolicyOptions) (goproxy.Policy, error) {
	if fromProxy(opts.Upstream, l.From) {
		return goproxy.REQUIRE, nil
	}
	return goproxy.SKIP, nil
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
// (v1 UNKNOWN, v2 LOCAL, an AF_UNSPEC or AF_UNIX address) or could not be read: Proxy is the load
// balancer's own address. Such a connection must be handled as one from outside the trusted
// networks, never judged by the balancer's address (which may well be inside them).
type UnknownAddr struct {
	Proxy *net.TCPAddr
}

// Network is "tcp".
func (a *UnknownAddr) Network() string { return "tcp" }

// String is the load balancer's address.
func (a *UnknownAddr) String() string { return a.Proxy.String() }

// conn is a connection from a listed load balancer. The library reads its header on first use;
// conn decides what RemoteAddr reports and marks header errors with this package's sentinels.
type conn struct {
	*goproxy.Conn

	once   sync.Once
	remote net.Addr // set inside once
}

// IsHeader reports whether b, the first bytes of a connection, start a PROXY
// protocol header (v1 or v2, by the library's signatures): what a load
// balancer sends to a gatekeeper not told to read it.
func IsHeader(b []byte) bool {
	return bytes.HasPrefix(b, goproxy.SIGV1) || bytes.HasPrefix(b, goproxy.SIGV2)
}

// CloseWrite shuts down the writing half of the connection underneath (the relay ends a
// connection so, see relay.Relay), or returns errors.ErrUnsupported when it has no CloseWrite.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.Raw().(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// RemoteAddr returns the client address from the PROXY header, or an *UnknownAddr holding the
// balancer's address when the header names none or could not be read. It waits for the header
// if it has not been read yet.
func (c *conn) RemoteAddr() net.Addr {
	c.once.Do(func() { c.remote = clientAddr(c.Conn.ProxyHeader(), c.Conn.Raw().RemoteAddr()) })
	return c.remote
}

// clientAddr is the address a header names for the client, or an *UnknownAddr for the proxy at
// direct when h is nil (no valid header) or names no TCP client. The library itself falls back
// to the direct peer's address in these cases; that is exactly what must not happen here.
func clientAddr(h *goproxy.Header, direct net.Addr) net.Addr {
	if h != nil && !h.Command.IsLocal() && h.TransportProtocol.IsStream() &&
		(h.TransportProtocol.IsIPv4() || h.TransportProtocol.IsIPv6()) {
		if src, ok := h.SourceAddr.(*net.TCPAddr); ok && src != nil && src.IP != nil {
			return src
		}
	}
	proxy, _ := direct.(*net.TCPAddr) // always a TCP peer: the policy requires headers only from those
	return &UnknownAddr{Proxy: proxy}
}

// Read reads the PROXY header first if nobody has yet, then data after it.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	return n, c.headerError(err)
}

// Write waits for the PROXY header (the library refuses to write before it), then writes.
func (c *conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	return n, c.headerError(err)
}

// headerError wraps err with ErrNoHeader or ErrInvalidHeader when it comes from a failed header;
// other errors (the connection's own, after a good header) pass through unchanged. Under the
// REQUIRE policy the library keeps a header exactly when it read a valid one.
func (c *conn) headerError(err error) error {
	if err == nil || c.Conn.ProxyHeader() != nil {
		return err
	}
	if errors.Is(err, goproxy.ErrNoProxyProtocol) {
		return fmt.Errorf("%w: %w", ErrNoHeader, err)
	}
	return fmt.Errorf("%w: %w", ErrInvalidHeader, err)
}
