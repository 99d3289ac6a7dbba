package admin

import (
	"context"
	"net"
)

// peer is the process at the other end of an admin connection, from SO_PEERCRED.
type peer struct {
	UID, PID uint32
}

type peerKey struct{}

// CallerUID returns the uid of the process that sent the request whose context is ctx, as the
// kernel reported it for the connection (SO_PEERCRED). ok is false when it is unknown (not a
// Unix socket, or a platform without SO_PEERCRED).
func CallerUID(ctx context.Context) (uid uint32, ok bool) {
	p, ok := ctx.Value(peerKey{}).(peer)
	return p.UID, ok
}

func callerPID(ctx context.Context) (uint32, bool) {
	p, ok := ctx.Value(peerKey{}).(peer)
	return p.PID, ok
}

// connContext is http.Server.ConnContext: it records the peer's credentials once per
// connection, so that every request on it carries them.
func connContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	p, err := peerCred(uc)
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, p)
}
