//go:build linux && race

package sockio

import "syscall"

// Under the race detector, recv and send are package syscall's Read and
// Write: those tell the detector what the kernel read and wrote and order
// a write before the read that gets its bytes (syscall's ioSync), which a
// raw system call cannot, so that tests of code on both ends of a
// connection report no false races. They take no flags, so the socket is
// made non-blocking first (see syscall_norace.go for why it must be).
// `make test` also runs this package's tests without -race, which take the
// raw calls.

func recv(fd uintptr, p []byte) (int, syscall.Errno) {
	if err := syscall.SetNonblock(int(fd), true); err != nil {
		return 0, err.(syscall.Errno)
	}
	return errnoOf(syscall.Read(int(fd), p))
}

func send(fd uintptr, p []byte) (int, syscall.Errno) {
	if err := syscall.SetNonblock(int(fd), true); err != nil {
		return 0, err.(syscall.Errno)
	}
	return errnoOf(syscall.Write(int(fd), p))
}

func errnoOf(n int, err error) (int, syscall.Errno) {
	if err != nil {
		return n, err.(syscall.Errno)
	}
	return n, 0
}
