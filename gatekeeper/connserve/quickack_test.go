package connserve

import (
	"io"
	"net"
	"testing"

	"gatekeeper/gatekeeper/sockio"
)

func TestWithQuickAck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	c := withQuickAck(server, 10)
	q, ok := c.(*quickAckConn)
	if !ok {
		if quickAckSupported {
			t.Fatalf("a TCP connection was not wrapped: %T", c)
		}
		return
	}
	// Data passes through untouched; the budget runs out after 10 bytes.
	go client.Write([]byte("0123456789abcdef"))
	buf := make([]byte, 16)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "0123456789abcdef" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if q.budget > 0 {
		t.Errorf("budget %d left after 16 bytes, want it spent", q.budget)
	}

	// CloseWrite reaches the socket (the relay ends a connection so): the
	// peer reads EOF, and can still write.
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if n, err := client.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("the peer read %d, %v after CloseWrite; want EOF", n, err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatalf("the peer's write after CloseWrite: %v", err)
	}
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		t.Fatalf("a read after CloseWrite: %v", err)
	}

	// A connection whose reads and writes are sockio's raw system calls
	// (both legs of the gatekeeper) is still a socket to wrap: were it not,
	// the quick ACKs would be lost without a sign.
	if quickAckSupported {
		if _, ok := WithQuickAck(sockio.Conn(server), 10).(*quickAckConn); !ok {
			t.Error("a sockio connection was not wrapped")
		}
	}

	// Connections without a socket underneath are left alone.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := withQuickAck(a, 10); got != a {
		t.Errorf("net.Pipe was wrapped: %T", got)
	}
}
