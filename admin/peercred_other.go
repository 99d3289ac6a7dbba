//go:build !linux

package admin

import (
	"errors"
	"net"
)

// peerCred is not implemented off Linux: the caller is then unknown, and every request is
// refused (the admin socket fails closed).
func peerCred(*net.UnixConn) (peer, error) {
	return peer{}, errors.New("SO_PEERCRED is not supported on this platform")
}
