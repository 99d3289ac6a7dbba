// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCH 22
// (a server refuses lines before the client's version).

package ssh

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
)

// TestClientLineBeforeVersion: reading a client's version, any other line
// first is refused at once (a PROXY protocol v1 header, an HTTP request); a
// server's lines before its version are still skipped, and a client's plain
// version is read as before.
func TestClientLineBeforeVersion(t *testing.T) {
	for _, in := range []string{
		"PROXY TCP4 192.0.2.1 127.0.0.1 40000 22\r\nSSH-2.0-OpenSSH_9.2\r\n",
		"GET / HTTP/1.1\r\n",
		"\r\nSSH-2.0-OpenSSH_9.2\r\n",
	} {
		var lbv *LineBeforeVersionError
		if _, err := readPeerVersion(bytes.NewBufferString(in), true); !errors.As(err, &lbv) {
			t.Errorf("client sent %q: %v, want a LineBeforeVersionError", in, err)
		} else if want, _, _ := strings.Cut(in, "\r"); want != "" && !strings.HasPrefix(want, lbv.Start) || len(lbv.Start) > 16 {
			t.Errorf("client sent %q: Start %q", in, lbv.Start)
		}
		if v, err := readPeerVersion(bytes.NewBufferString(in+"SSH-2.0-x\r\n"), false); err != nil || !bytes.HasPrefix(v, []byte("SSH-2.0-")) {
			t.Errorf("server sent %q first: %q, %v; want its version", in, v, err)
		}
	}
	if v, err := readPeerVersion(bytes.NewBufferString("SSH-2.0-OpenSSH_9.2\r\n"), true); err != nil || string(v) != "SSH-2.0-OpenSSH_9.2" {
		t.Errorf("a client's version: %q, %v", v, err)
	}

	// Through NewServerConn: the handshake fails at once.
	c, s := net.Pipe()
	defer c.Close()
	go func() {
		_, _ = c.Write([]byte("PROXY TCP4 192.0.2.1 127.0.0.1 40000 22\r\nSSH-2.0-Go\r\n"))
	}()
	go func() {
		buf := make([]byte, 256)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	cfg := &ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(testSigners["ed25519"])
	var lbv *LineBeforeVersionError
	if _, _, _, err := NewServerConn(s, cfg); !errors.As(err, &lbv) || lbv.Start != "PROXY TCP4 192.0" {
		t.Errorf("NewServerConn = %v, want a LineBeforeVersionError starting PROXY", err)
	}
	if lbv := lineBeforeVersion([]byte("\x00\xffabc\r"), nil); lbv.(*LineBeforeVersionError).Start != "??abc" {
		t.Errorf("unprintable bytes: %q", lbv.(*LineBeforeVersionError).Start)
	}
	// A PROXY protocol v2 header: its 12-byte signature in Raw.
	v2 := "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
	if _, err := readPeerVersion(bytes.NewBufferString(v2+"SSH-2.0-Go\r\n"), true); !errors.As(err, &lbv) ||
		!bytes.HasPrefix(lbv.Raw, []byte("\r\n\r\n\x00\r\nQUIT\n")) {
		t.Errorf("a PROXY v2 header: %v, Raw %q", err, lbv.Raw)
	}
}
