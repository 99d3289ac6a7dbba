package portal

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"gatekeeper/gatekeeper/connserve"
)

// refusalLogEvery is how often, at most, the portal logs the connections it turned away: one
// line per period with the counts, not one per connection of a flood.
const refusalLogEvery = 10 * time.Second

// sourceLimitListener caps the portal's open connections with the same admission control as
// the SSH listeners (package connserve): per client address (an IPv6 client's whole /64), per
// network (/24, /48), and in total, with slots beyond the total for the networks where linking
// is allowed without a ticket. A connection over a cap is closed as soon as it is accepted,
// before a byte is read, so that no client, network or flood can hold all of the server's
// connections (and file descriptors) while the http.Server's timeouts run.
type sourceLimitListener struct {
	net.Listener
	adm     *connserve.Admission
	allowed func(netip.Addr) bool
	log     *slog.Logger

	// mu protects lastLog.
	mu      sync.Mutex
	lastLog time.Time
}

func newSourceLimitListener(ln net.Listener, limits connserve.Limits, allowed func(netip.Addr) bool, log *slog.Logger) *sourceLimitListener {
	return &sourceLimitListener{Listener: ln, adm: connserve.NewAdmission(limits), allowed: allowed, log: log}
}

// sourceOf is the client address of a connection from a, unmapped and without a zone; the zero
// Addr for an address that is not IP.
func sourceOf(a net.Addr) netip.Addr {
	var ip netip.Addr
	if ta, ok := a.(*net.TCPAddr); ok {
		ip = ta.AddrPort().Addr()
	} else if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		ip = ap.Addr()
	}
	return ip.Unmap().WithZone("")
}

// Accept returns the next connection that is within the caps; the others are closed without a
// word and Accept waits for the next one.
func (l *sourceLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr())
		release, refused := l.adm.Enter(src, l.allowed != nil && l.allowed(src))
		if refused == "" {
			return &limitedConn{Conn: c, release: release}, nil
		}
		c.Close()
		l.logRefusals()
	}
}

// logRefusals writes the refusals counted since the last line, at most once per
// refusalLogEvery.
func (l *sourceLimitListener) logRefusals() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.lastLog) < refusalLogEvery {
		return
	}
	l.lastLog = time.Now()
	if refused := l.adm.TakeRefused(); refused != nil {
		l.log.Warn("portal: connections closed at once (too many from one source, or in all)",
			"refused", refused, "open", l.adm.Len())
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
