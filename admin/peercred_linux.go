package admin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerCred asks the kernel who is connected on c: uid, gid and pid from SO_PEERCRED, and the
// supplementary groups from SO_PEERGROUPS (Linux 4.13+), all as they were when the connection
// was made, which the peer cannot forge. Only on kernels without SO_PEERGROUPS are the groups
// read from /proc/<pid>/status instead: that is racy (the pid may have exited or changed its
// groups since), and under the unit's ProtectProc=invisible the daemon cannot see other users'
// processes at all, so there the groups are then simply unknown.
func peerCred(c *net.UnixConn) (peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var p peer
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr != nil {
			return
		}
		p = peer{UID: cred.Uid, GID: cred.Gid, PID: uint32(cred.Pid)}
		p.Groups, p.GroupsErr = peerGroups(int(fd))
	}); err != nil {
		return peer{}, err
	}
	if credErr != nil {
		return peer{}, credErr
	}
	if errors.Is(p.GroupsErr, unix.ENOPROTOOPT) {
		p.Groups, p.GroupsErr = procGroups(fmt.Sprintf("/proc/%d/status", p.PID))
	}
	return p, nil
}

// peerGroups reads SO_PEERGROUPS, growing the buffer when the kernel says it is too small
// (ERANGE, with the size it needs in the length).
func peerGroups(fd int) ([]uint32, error) {
	n := 64
	for {
		buf := make([]uint32, n)
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == 0:
			return buf[:size/4], nil
		case errno == unix.ERANGE && int(size/4) > n:
			n = int(size / 4)
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
}

// procGroups reads the supplementary groups from the "Groups:" line of a /proc/<pid>/status file.
func procGroups(path string) ([]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseGroupsLine(f)
}

// parseGroupsLine finds the "Groups:" line of a /proc/<pid>/status text and parses its gids.
func parseGroupsLine(r io.Reader) ([]uint32, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		groups := []uint32{}
		for _, f := range strings.Fields(rest) {
			g, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("bad gid %q in Groups: line", f)
			}
			groups = append(groups, uint32(g))
		}
		return groups, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("no Groups: line")
}
