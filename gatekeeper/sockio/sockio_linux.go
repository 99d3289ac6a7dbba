package sockio

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// tcpConn is a *net.TCPConn whose Read and Write are raw system calls.
type tcpConn struct {
	*net.TCPConn
	raw syscall.RawConn
}

func wrap(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	return &tcpConn{TCPConn: tc, raw: raw}
}

// Read reads as net.Conn's Read: io.EOF at the end of the stream, errors as *net.OpError.
func (c *tcpConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	// RawConn.Read calls the function until it returns true, waiting in the poller between
	// calls (returning the poller's error on a deadline or Close).
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, errno = int(r), e
			return true
		}
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("read", errno)
	}
	if err != nil {
		return 0, c.opError("read", err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	raceWrite(p[:n])
	return n, nil
}

// Write writes all of p, as net.Conn's Write, or returns how much went out and why no more did.
func (c *tcpConn) Write(p []byte) (int, error) {
	raceRead(p)
	var n int
	for n < len(p) {
		var errno syscall.Errno
		err := c.raw.Write(func(fd uintptr) bool {
			for {
				r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
				switch e {
				case syscall.EINTR:
					continue
				case syscall.EAGAIN:
					return false
				case 0:
					n += int(r)
				default:
					errno = e
				}
				return true
			}
		})
		if err == nil && errno != 0 {
			err = os.NewSyscallError("write", errno)
		}
		if err != nil {
			return n, c.opError("write", err)
		}
	}
	return n, nil
}

// opError wraps err as package net does, so that callers' checks (errors.Is with
// net.ErrClosed or os.ErrDeadlineExceeded, net.Error's Timeout) work unchanged.
func (c *tcpConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
