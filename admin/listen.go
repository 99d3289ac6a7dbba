// Package admin is the daemon's admin interface: HTTP+JSON over a Unix socket (mode 0660, so
// root and the gatekeeper group may use it). bbolt lets only one process open the database, so
// the `gatekeeper enroll` and `gatekeeper admin` commands talk to the running daemon through this
// socket. Every request is logged with the caller's uid and pid from SO_PEERCRED.
//
// Both ends check who is at the other: the Server answers only root and members of
// admin.groups (authz.go), and the Client talks only to a socket made and served by root, the
// gatekeeper system user or the caller itself (socketowner.go).
//
// It sits beside package enroll rather than inside the daemon's gatekeeper/ folder because it
// orchestrates linking, resets and imports through enroll and the store: the daemon (cmd) and the
// console commands both call it, and the arrows point one way, cmd → admin → enroll → store.
package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// socketMode is the permission of the admin socket: owner and group may connect.
const socketMode fs.FileMode = 0o660

// dialProbeTimeout bounds the check whether an existing socket file still has a listener.
const dialProbeTimeout = time.Second

// Listen listens on the Unix socket path with mode 0660. A missing parent directory is created
// with mode 0750. An existing socket file is probed: if a daemon answers on it, Listen fails
// (two daemons must not share one database); if nothing answers, the stale file is removed.
// Anything at path that is not a socket is left alone and reported.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("admin socket directory: %w", err)
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("admin socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("admin socket %s exists and is not a socket; remove it or choose another path", path)
	default:
		conn, err := net.DialTimeout("unix", path, dialProbeTimeout)
		if err == nil {
			conn.Close()
			return nil, fmt.Errorf("another gatekeeper is already running (admin socket %s answers)", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("admin socket %s exists and cannot be checked: %w", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("removing stale admin socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// The socket is created with the umask's mode; a 0750 parent directory keeps others out
	// until the chmod below.
	if err := os.Chmod(path, socketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}
