package portal

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
)

// sourceLimitListener caps the open connections per client source: one address for IPv4, one
// /64 for IPv6 (a single host usually has a whole /64 to pick addresses from). A connection
// over the cap is closed as soon as it is accepted, before a byte is read, so that one client
// cannot hold all of the server's connections (slow headers, idle keep-alives) while the
// http.Server's timeouts run.
type sourceLimitListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu   sync.Mutex
	open map[netip.Prefix]*source
}

// source is the count of one source's open connections.
type source struct {
	n int
	// warned is set once a refusal was logged, and cleared when the source drops under the
	// cap: one log line per burst, not one per refused connection.
	warned bool
}

func newSourceLimitListener(ln net.Listener, max int, log *slog.Logger) *sourceLimitListener {
	return &sourceLimitListener{Listener: ln, max: max, log: log, open: make(map[netip.Prefix]*source)}
}

// sourceOf is the key a connection from a counts under: its IPv4 address, or the /64 of its
// IPv6 address (IPv4-mapped addresses count as IPv4). An address that is not IP gives the zero
// Prefix: all such connections share one count.
func sourceOf(a net.Addr) netip.Prefix {
	var ip netip.Addr
	if ta, ok := a.(*net.TCPAddr); ok {
		ip = ta.AddrPort().Addr()
	} else if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	case ip.Is6():
		p, _ := ip.WithZone("").Prefix(64)
		return p
	default:
		return netip.Prefix{}
	}
}

// Accept returns the next connection whose source is under the cap; the others are closed
// without a word and Accept waits for the next one.
func (l *sourceLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := sourceOf(c.RemoteAddr())
		if l.enter(key) {
			return &limitedConn{Conn: c, release: sync.OnceFunc(func() { l.leave(key) })}, nil
		}
		c.Close()
	}
}

// enter counts a new connection from key, unless key is at the cap.
func (l *sourceLimitListener) enter(key netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	src := l.open[key]
	if src == nil {
		src = &source{}
		l.open[key] = src
	}
	if src.n >= l.max {
		if !src.warned {
			src.warned = true
			l.log.Warn("portal: too many connections from one source; closing the excess",
				"source", key.String(), "max_conns_per_source", l.max)
		}
		return false
	}
	src.n++
	return true
}

// leave uncounts a closed connection from key.
func (l *sourceLimitListener) leave(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	src := l.open[key]
	if src == nil {
		return
	}
	src.n--
	src.warned = false
	if src.n <= 0 {
		delete(l.open, key)
	}
}

// limitedConn gives its slot back when closed (once, however often Close is called).
type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	c.release()
	return c.Conn.Close()
}
