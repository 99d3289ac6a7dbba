package connserve

import (
	"errors"
	"net"
	"syscall"
)

// quickAckConn acknowledges what it reads at once during connection setup.
//
// Why: the OpenSSH client leaves Nagle's algorithm on until it has an
// interactive session, and sends some handshake packets back to back
// (KEXINIT then KEX_ECDH_INIT; NEWKEYS then SERVICE_REQUEST). The second
// waits for the ACK of the first, and Linux delays that ACK by up to 40 ms
// when the gatekeeper has nothing to send yet — two such stalls added about
// 80 ms to a third of the logins. Setting TCP_QUICKACK after a read sends a
// pending ACK now; the kernel clears the flag by itself, so it is set again
// after each read until the budget is spent.
type quickAckConn struct {
	net.Conn
	raw    syscall.RawConn
	budget int
}

// withQuickAck wraps nc, if it is a socket that supports quick ACKs, so that
// its first budget bytes are acknowledged at once.
func withQuickAck(nc net.Conn, budget int) net.Conn {
	sc, ok := nc.(syscall.Conn)
	if !ok || !quickAckSupported {
		return nc
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nc
	}
	return &quickAckConn{Conn: nc, raw: raw, budget: budget}
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.budget > 0 && n > 0 {
		c.budget -= n
		_ = c.raw.Control(setQuickAck)
	}
	return n, err
}

// CloseWrite shuts down the writing half of the connection underneath (the
// relay ends a connection so), or returns errors.ErrUnsupported when it has
// no CloseWrite.
func (c *quickAckConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// WithQuickAck wraps nc so that its first budget bytes are acknowledged at
// once, as Server does with QuickAck, for connections it does not accept:
// the gatekeeper's own connection to the lander, whose sshd keeps Nagle's
// algorithm on during the handshake too. nc is returned as it is when it
// is not a socket that supports quick ACKs.
func WithQuickAck(nc net.Conn, budget int) net.Conn { return withQuickAck(nc, budget) }
