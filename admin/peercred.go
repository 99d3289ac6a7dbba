package admin

import (
	"context"
	"net"
)

// peer is the process at the other end of an admin connection, as the kernel recorded it when
// the connection was made (SO_PEERCRED, SO_PEERGROUPS): the peer cannot forge it.
type peer struct {
	UID, GID, PID uint32
	// Groups are the peer's supplementary groups; GroupsErr says why they are unknown (then
	// only UID and GID count).
	Groups    []uint32
	GroupsErr error
}

type peerKey struct{}

// CallerUID returns the uid of the process that sent the request whose context is ctx, as the
// kernel reported it for the connection (SO_PEERCRED). ok is false when it is unknown (not a
// Unix socket, or a platform without SO_PEERCRED).
func CallerUID(ctx context.Context) (uid uint32, ok bool) {
	p, ok := callerOf(ctx)
	return p.UID, ok
}

func callerPID(ctx context.Context) (uint32, bool) {
	p, ok := callerOf(ctx)
	return p.PID, ok
}

// callerOf returns the credentials connContext recorded for the request's connection.
func callerOf(ctx context.Context) (peer, bool) {
	p, ok := ctx.Value(peerKey{}).(peer)
	return p, ok
}

// connContext is http.Server.ConnContext: it records the peer's credentials once per
// connection, so that every request on it carries them. A connection whose peer is unknown
// gets none, and every request on it is refused.
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
