// Copyright 2013 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package ssh

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// OpenChannelError is returned if the other side rejects an
// OpenChannel request.
type OpenChannelError struct {
	Reason  RejectionReason
	Message string
}

func (e *OpenChannelError) Error() string {
	return fmt.Sprintf("ssh: rejected: %s (%q)", e.Reason, e.Message)
}

// ConnMetadata holds metadata for the connection.
type ConnMetadata interface {
	// User returns the user ID for this connection.
	User() string

	// SessionID returns the session hash, also denoted by H.
	SessionID() []byte

	// ClientVersion returns the client's version string as hashed
	// into the session ID.
	ClientVersion() []byte

	// ServerVersion returns the server's version string as hashed
	// into the session ID.
	ServerVersion() []byte

	// RemoteAddr returns the remote address for this connection.
	RemoteAddr() net.Addr

	// LocalAddr returns the local address for this connection.
	LocalAddr() net.Addr
}

// Conn represents an SSH connection for both server and client roles.
// Conn is the basis for implementing an application layer, such
// as ClientConn, which implements the traditional shell access for
// clients.
type Conn interface {
	ConnMetadata

	// SendRequest sends a global request, and returns the
	// reply. If wantReply is true, it returns the response status
	// and payload. See also RFC 4254, section 4.
	SendRequest(name string, wantReply bool, payload []byte) (bool, []byte, error)

	// OpenChannel tries to open an channel. If the request is
	// rejected, it returns *OpenChannelError. On success it returns
	// the SSH Channel and a Go channel for incoming, out-of-band
	// requests. The Go channel must be serviced, or the
	// connection will hang.
	OpenChannel(name string, data []byte) (Channel, <-chan *Request, error)

	// Close closes the underlying network connection
	Close() error

	// Wait blocks until the connection has shut down, and returns the
	// error causing the shutdown.
	Wait() error

	// TODO(hanwen): consider exposing:
	//   RequestKeyChange
	//   Disconnect
}

// AlgorithmsConnMetadata is a ConnMetadata that can return the algorithms
// negotiated between client and server.
type AlgorithmsConnMetadata interface {
	ConnMetadata
	Algorithms() NegotiatedAlgorithms
}

// DiscardRequests consumes and rejects all requests from the
// passed-in channel.
func DiscardRequests(in <-chan *Request) {
	for req := range in {
		if req.WantReply {
			req.Reply(false, nil)
		}
	}
}

// A connTransport represents the transport for a connection.
type connTransport interface {
	packetConn
	getAlgorithms() NegotiatedAlgorithms
	getSessionID() []byte
	waitSession() error
}

// A connection represents an incoming connection.
type connection struct {
	transport connTransport
	sshConn

	// The connection protocol.
	*mux

	// accepted is when a server sent SSH_MSG_SERVICE_ACCEPT, and rtt the
	// time until the client's first authentication request arrived:
	// see HandshakeRTT. GATEKEEPER PATCH 16.
	accepted time.Time
	rtt      time.Duration
}

// HandshakeRTT returns, on a server's connection, the round trip time seen
// during the handshake: from sending SSH_MSG_SERVICE_ACCEPT to receiving
// the client's first SSH_MSG_USERAUTH_REQUEST, which clients (OpenSSH,
// this package) send in reply to it and nothing else in between. Zero
// means unknown: on a client's connection, or before that request came.
// A client that sends its request without waiting for the accept shows a
// round trip near zero, one that waits longer a larger one; the caller
// must treat it as the client's claim, which is all it is. Reached through
// a type assertion on ServerConn.Conn:
//
//	conn.Conn.(interface{ HandshakeRTT() time.Duration })
//
// GATEKEEPER PATCH 16: the gatekeeper sizes a channel's receive window
// by it.
func (c *connection) HandshakeRTT() time.Duration { return c.rtt }

func (c *connection) Close() error {
	return c.sshConn.conn.Close()
}

// CloseWrite shuts down the writing half of the connection's net.Conn (on
// TCP, a FIN after everything written so far) while reading goes on until
// the peer closes; later writes fail. During a key exchange, the packets
// written meanwhile wait in a queue, and the shutdown waits for them: it
// comes once the exchange is over and they are out. It returns
// errors.ErrUnsupported when the net.Conn has no CloseWrite method
// (*net.TCPConn has one). A relay ends a connection so without losing what
// it wrote last: Close with the peer's last packets (window adjustments)
// unread makes the kernel reset the connection, discarding data still on
// its way to the peer. Reached through a type assertion on Conn.
// GATEKEEPER PATCH 21.
func (c *connection) CloseWrite() error {
	cw, ok := c.sshConn.conn.(interface{ CloseWrite() error })
	if !ok {
		return errors.ErrUnsupported
	}
	if t, ok := c.transport.(*handshakeTransport); ok {
		return t.closeWriteAfterKex(cw.CloseWrite)
	}
	return cw.CloseWrite()
}

// sshConn provides net.Conn metadata, but disallows direct reads and
// writes.
type sshConn struct {
	conn net.Conn

	user          string
	sessionID     []byte
	clientVersion []byte
	serverVersion []byte
	algorithms    NegotiatedAlgorithms
}

func dup(src []byte) []byte {
	dst := make([]byte, len(src))
	copy(dst, src)
	return dst
}

func (c *sshConn) User() string {
	return c.user
}

func (c *sshConn) RemoteAddr() net.Addr {
	return c.conn.RemoteAddr()
}

func (c *sshConn) Close() error {
	return c.conn.Close()
}

func (c *sshConn) LocalAddr() net.Addr {
	return c.conn.LocalAddr()
}

func (c *sshConn) SessionID() []byte {
	return dup(c.sessionID)
}

func (c *sshConn) ClientVersion() []byte {
	return dup(c.clientVersion)
}

func (c *sshConn) ServerVersion() []byte {
	return dup(c.serverVersion)
}

func (c *sshConn) Algorithms() NegotiatedAlgorithms {
	return c.algorithms
}
