package admin

import (
	"net"
	"syscall"
)

// peerCred asks the kernel who is connected on c (SO_PEERCRED: the credentials at connect time,
// which the peer cannot forge).
func peerCred(c *net.UnixConn) (peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if credErr != nil {
		return peer{}, credErr
	}
	return peer{UID: cred.Uid, PID: uint32(cred.Pid)}, nil
}
