package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// tcpConn is a *net.TCPConn whose Read and Write are raw system calls.
type tcpConn struct {
	*net.TCPConn
	raw syscall.RawConn

	// rmu serialises Reads and protects the following: the state of the
	// Read under way, which readFn (built once: a closure per call would be
	// an allocation per packet) fills in.
	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	// wmu serialises Writes and protects the following, as rmu for Read.
	// Holding it for a whole Write also keeps concurrent Writes from
	// interleaving, as package net does.
	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
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
	c := &tcpConn{TCPConn: tc, raw: raw}
	c.readFn, c.writeFn = c.read, c.write
	return c
}

// Read reads as net.Conn's Read: io.EOF at the end of the stream, errors as *net.OpError.
func (c *tcpConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return c.TCPConn.Read(p) // package net's answer, net.ErrClosed included
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = p, 0, nil
	defer func() { c.rbuf = nil }()
	// RawConn.Read calls readFn until it returns true, waiting in the
	// poller in between, and fails on a deadline or Close.
	err := c.raw.Read(c.readFn)
	if err == nil {
		err = c.rerr
	}
	if err != nil {
		return 0, c.opError("read", err)
	}
	if c.rn == 0 {
		return 0, io.EOF
	}
	return c.rn, nil
}

// read is the body of RawConn.Read for Read: false when the socket is empty.
func (c *tcpConn) read(fd uintptr) bool {
	for {
		n, errno := recv(fd, c.rbuf)
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			c.rn = n
		default:
			c.rerr = os.NewSyscallError("read", errno)
		}
		return true
	}
}

// Write writes all of p, as net.Conn's Write, or returns how much went out and why no more did.
func (c *tcpConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return c.TCPConn.Write(p)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, nil
	defer func() { c.wbuf = nil }()
	err := c.raw.Write(c.writeFn)
	if err == nil {
		err = c.werr
	}
	if err != nil {
		return c.wn, c.opError("write", err)
	}
	return c.wn, nil
}

// write is the body of RawConn.Write for Write: false when the socket is
// full before all of wbuf went out.
func (c *tcpConn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, errno := send(fd, c.wbuf[c.wn:])
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return false
		case errno != 0:
			c.werr = os.NewSyscallError("write", errno)
			return true
		case n <= 0 || n > len(c.wbuf)-c.wn:
			// Never from Linux TCP; package net says the same.
			c.werr = io.ErrUnexpectedEOF
			return true
		}
		c.wn += n
	}
	return true
}

// opError wraps err as package net does, so that callers' checks (errors.Is with
// net.ErrClosed or os.ErrDeadlineExceeded, net.Error's Timeout) and logs read the same.
func (c *tcpConn) opError(op string, err error) error {
	var rawErr *net.OpError
	if errors.As(err, &rawErr) {
		err = rawErr.Err // RawConn's own, "raw-read" or "raw-write"
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
