//go:build !linux

package admin

import (
	"errors"
	"net"
)

// peerCred is not implemented off Linux: requests are then logged without a caller uid.
func peerCred(*net.UnixConn) (peer, error) {
	return peer{}, errors.New("SO_PEERCRED is not supported on this platform")
}
