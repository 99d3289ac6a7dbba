package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// ErrUntrustedSocket means the client refused to talk to the admin socket because someone other
// than root, the daemon's system user or the caller may have put it there.
var ErrUntrustedSocket = errors.New("untrusted admin socket")

// daemonUser is the system user the packaged daemon runs as (systemd/gatekeeper.sysusers).
const daemonUser = "gatekeeper"

// socketOwners are the uids a client trusts to run the daemon behind an admin socket:
//
//   - root, who can impersonate anyone anyway;
//   - the gatekeeper system user, if this machine has one: the systemd unit runs the daemon as
//     that user, so the socket it creates belongs to it;
//   - the caller itself (its effective uid), for a daemon a developer runs as themself: only the
//     caller or root could have made such a socket.
//
// Anyone else could have created a socket at the configured path (say, in a directory left
// writable) to pose as the daemon and collect the secrets `gatekeeper enroll` shows and the
// codes it reads, so their sockets are refused.
type socketOwners struct {
	uids  []uint32
	names []string // for the refusal message, in the order of uids
}

// trustedSocketOwners looks up the daemon's user; a machine without one trusts root and the caller.
func trustedSocketOwners() socketOwners {
	o := socketOwners{uids: []uint32{0}, names: []string{"root"}}
	if u, err := user.Lookup(daemonUser); err == nil {
		if uid, err := strconv.ParseUint(u.Uid, 10, 32); err == nil && uid != 0 {
			o.uids = append(o.uids, uint32(uid))
			o.names = append(o.names, fmt.Sprintf("the %s user (uid %d)", daemonUser, uid))
		}
	}
	if me := uint32(os.Geteuid()); !slices.Contains(o.uids, me) {
		o.uids = append(o.uids, me)
		o.names = append(o.names, fmt.Sprintf("you (uid %d)", me))
	}
	return o
}

func (o socketOwners) trusts(uid uint32) bool { return slices.Contains(o.uids, uid) }

// String lists the trusted owners: "root, the gatekeeper user (uid 999) or you (uid 1000)".
func (o socketOwners) String() string {
	if len(o.names) == 1 {
		return o.names[0]
	}
	return strings.Join(o.names[:len(o.names)-1], ", ") + " or " + o.names[len(o.names)-1]
}

// checkSocketFile refuses path unless it is a socket (not a symbolic link to one) owned by a
// trusted uid. A missing file gives the Lstat error (matching fs.ErrNotExist), so that the
// caller reports that no daemon runs.
func (o socketOwners) checkSocketFile(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symbolic link; point admin.socket at the socket itself", ErrUntrustedSocket, path)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%w: %s is not a socket", ErrUntrustedSocket, path)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: cannot tell who owns %s on this platform", ErrUntrustedSocket, path)
	}
	if !o.trusts(st.Uid) {
		return fmt.Errorf("%w: %s is owned by uid %d, not by %s; refusing to talk to it", ErrUntrustedSocket, path, st.Uid, o)
	}
	return nil
}

// checkServer refuses a connection whose listening process (SO_PEERCRED of the client's end:
// the credentials of whoever called listen) is not a trusted uid. The socket file may have been
// swapped between checkSocketFile and the connect; the kernel's answer cannot be.
func (o socketOwners) checkServer(c net.Conn, path string) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%w: %s is not a Unix socket connection", ErrUntrustedSocket, path)
	}
	p, err := peerCred(uc)
	if err != nil {
		return fmt.Errorf("%w: cannot tell who listens on %s: %w", ErrUntrustedSocket, path, err)
	}
	if !o.trusts(p.UID) {
		return fmt.Errorf("%w: the process listening on %s (pid %d) runs as uid %d, not as %s; refusing to talk to it",
			ErrUntrustedSocket, path, p.PID, p.UID, o)
	}
	return nil
}
