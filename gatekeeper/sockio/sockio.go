// Package sockio gives the relay's TCP connections reads and writes that do not hand their
// processor to another thread.
//
// Why: a read or write on a socket through package net is a system call that tells Go's
// scheduler it may block (entersyscall). It never blocks, the socket being non-blocking, but on
// loopback and on fast links a 32 KiB write runs the receiver's TCP processing too and takes
// tens of microseconds; the scheduler's monitor (sysmon) sees a processor "in a system call"
// that long, hands it to another thread, and polls every 20 µs for a millisecond after each
// time it did so. A relay moving a packet per system call paid for that in thread wake-ups and
// context switches: about a fifth of the gatekeeper's CPU per GiB (see the README's performance
// section). Reads and writes made as raw system calls keep their processor, like any other
// work; they still wait for the socket in Go's poller, so deadlines, Close and blocking
// semantics are those of package net.
package sockio

import "net"

// Conn returns nc reading and writing with raw system calls when it is a TCP connection on
// Linux, and nc itself otherwise. The returned connection embeds the *net.TCPConn, so
// everything but Read and Write (deadlines, SyscallConn, CloseWrite) is the original's.
func Conn(nc net.Conn) net.Conn {
	return wrap(nc)
}

// Listener returns ln with every connection it accepts passed through Conn.
func Listener(ln net.Listener) net.Listener {
	return &listener{Listener: ln}
}

type listener struct {
	net.Listener
}

// Accept waits for the next connection and returns it through Conn.
func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Conn(nc), nil
}
