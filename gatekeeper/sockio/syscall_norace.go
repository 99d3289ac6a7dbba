//go:build linux && !race

package sockio

import (
	"syscall"
	"unsafe"
)

// recv and send are the raw system calls. MSG_DONTWAIT makes them
// non-blocking whatever the socket's O_NONBLOCK flag says (something that
// calls File().Fd() on the connection clears it): a raw call that blocked
// would hold its processor, and a garbage collection waiting for it would
// stop the whole process. MSG_NOSIGNAL: a reset connection is an EPIPE
// error, never a SIGPIPE.

func recv(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		syscall.MSG_DONTWAIT, 0, 0)
	return int(n), errno
}

func send(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, 0, 0)
	return int(n), errno
}
