package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// v2Sig is the 12-byte signature of a v2 header, from the specification.
var v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// v2Header builds a v2 header with the given version/command byte, family byte and payload.
func v2Header(verCmd, fam byte, payload []byte) []byte {
	h := append([]byte{}, v2Sig...)
	h = append(h, verCmd, fam, 0, 0)
	binary.BigEndian.PutUint16(h[14:], uint16(len(payload)))
	return append(h, payload...)
}

// v2Addr4 is the AF_INET payload 192.0.2.1:40000 -> 198.51.100.1:22.
func v2Addr4() []byte {
	return []byte{192, 0, 2, 1, 198, 51, 100, 1, 0x9c, 0x40, 0, 22}
}

// v2Addr6 is the AF_INET6 payload [2001:db8::1]:40000 -> [2001:db8::2]:22.
func v2Addr6() []byte {
	p := make([]byte, 36)
	src, dst := netip.MustParseAddr("2001:db8::1").As16(), netip.MustParseAddr("2001:db8::2").As16()
	copy(p, src[:])
	copy(p[16:], dst[:])
	binary.BigEndian.PutUint16(p[32:], 40000)
	binary.BigEndian.PutUint16(p[34:], 22)
	return p
}

// v2Unix is an AF_UNIX payload: two 108-byte paths.
func v2Unix() []byte {
	p := make([]byte, 216)
	copy(p, "/run/client.sock")
	copy(p[108:], "/run/server.sock")
	return p
}

// tlvs are a PP2_TYPE_AUTHORITY and a PP2_TYPE_NOOP, which must be skipped.
var tlvs = []byte{0x02, 0x00, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'o', 'r', 'g', 0x04, 0x00, 0x02, 0, 0}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// unknown in a test table: the header is accepted but names no client (*UnknownAddr).
const unknown = "unknown"

// TestHeaders sends each input from a listed load balancer, followed by an SSH banner, and checks
// what the server sees: the client address, an *UnknownAddr (and the banner still readable), or
// a failing Read. The header is parsed by the library; these cases pin down the behaviour the
// gatekeeper relies on, above all that nothing but a well-formed TCP header yields an address.
func TestHeaders(t *testing.T) {
	ffff := "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	maxUnknown := "PROXY UNKNOWN " + ffff + " " + ffff + " 65535 65535\r\n"
	tests := []struct {
		name    string
		in      string
		want    string // client address, or unknown; "" when wantErr is set
		wantErr error
	}{
		{name: "v1 TCP4", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\r\n", want: "192.0.2.1:40000"},
		{name: "v1 TCP6", in: "PROXY TCP6 2001:db8::1 2001:db8::2 40000 22\r\n", want: "[2001:db8::1]:40000"},
		{name: "v1 ports 0 and 65535", in: "PROXY TCP4 192.0.2.1 198.51.100.1 0 65535\r\n", want: "192.0.2.1:0"},
		{name: "v1 UNKNOWN", in: "PROXY UNKNOWN\r\n", want: unknown},
		{name: "v1 UNKNOWN with addresses", in: "PROXY UNKNOWN 192.0.2.1 198.51.100.1 40000 22\r\n", want: unknown},
		{name: "v1 UNKNOWN 107 bytes", in: maxUnknown, want: unknown},
		{name: "v1 108 bytes", in: strings.Replace(maxUnknown, "65535 ", "65535  ", 1), wantErr: ErrInvalidHeader},
		{name: "v1 no CRLF within 107 bytes", in: "PROXY UNKNOWN " + strings.Repeat("x", 200), wantErr: ErrInvalidHeader},
		{name: "v1 LF without CR", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\n", wantErr: ErrInvalidHeader},
		{name: "v1 CR inside", in: "PROXY TCP4 192.0.2.1\r198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 UNKNOWNX", in: "PROXY UNKNOWNX\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 UDP4", in: "PROXY UDP4 192.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 TCP4 with IPv6", in: "PROXY TCP4 2001:db8::1 2001:db8::2 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 TCP6 with IPv4", in: "PROXY TCP6 192.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 zone", in: "PROXY TCP6 fe80::1%eth0 2001:db8::2 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 IPv4 leading zero", in: "PROXY TCP4 192.0.2.01 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 bad address", in: "PROXY TCP4 999.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 port 65536", in: "PROXY TCP4 192.0.2.1 198.51.100.1 65536 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 port +22", in: "PROXY TCP4 192.0.2.1 198.51.100.1 +22 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 port -1", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 -1\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 port hex", in: "PROXY TCP4 192.0.2.1 198.51.100.1 0x16 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 double space", in: "PROXY TCP4  192.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 trailing space", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 22 \r\n", wantErr: ErrInvalidHeader},
		{name: "v1 missing field", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 extra field", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 22 1\r\n", wantErr: ErrInvalidHeader},
		{name: "lowercase", in: "proxy TCP4 192.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrNoHeader},
		{name: "PROXY without space", in: "PROXYTCP4\r\n", wantErr: ErrInvalidHeader},
		{name: "SSH banner only", in: "", wantErr: ErrNoHeader},

		{name: "v2 PROXY IPv4", in: string(v2Header(0x21, 0x11, v2Addr4())), want: "192.0.2.1:40000"},
		{name: "v2 PROXY IPv6", in: string(v2Header(0x21, 0x21, v2Addr6())), want: "[2001:db8::1]:40000"},
		{name: "v2 PROXY IPv4 TLVs", in: string(v2Header(0x21, 0x11, cat(v2Addr4(), tlvs))), want: "192.0.2.1:40000"},
		{name: "v2 PROXY IPv6 TLVs", in: string(v2Header(0x21, 0x21, cat(v2Addr6(), tlvs))), want: "[2001:db8::1]:40000"},
		{name: "v2 LOCAL", in: string(v2Header(0x20, 0x11, v2Addr4())), want: unknown},
		{name: "v2 LOCAL UNSPEC empty", in: string(v2Header(0x20, 0x00, nil)), want: unknown},
		{name: "v2 LOCAL IPv4 empty", in: string(v2Header(0x20, 0x11, nil)), want: unknown},
		{name: "v2 PROXY AF_UNIX", in: string(v2Header(0x21, 0x31, v2Unix())), want: unknown},
		{name: "v2 PROXY IPv4 DGRAM", in: string(v2Header(0x21, 0x12, v2Addr4())), want: unknown},
		{name: "v2 PROXY UNSPEC", in: string(v2Header(0x21, 0x00, nil)), wantErr: ErrInvalidHeader},
		{name: "v2 length 65535", in: string(v2Header(0x21, 0x11, make([]byte, 65535))), wantErr: ErrInvalidHeader},
		{name: "v2 version 1", in: string(v2Header(0x11, 0x11, v2Addr4())), wantErr: ErrInvalidHeader},
		{name: "v2 version 3", in: string(v2Header(0x31, 0x11, v2Addr4())), wantErr: ErrInvalidHeader},
		{name: "v2 command 2", in: string(v2Header(0x22, 0x11, v2Addr4())), wantErr: ErrInvalidHeader},
		{name: "v2 IPv4 short", in: string(v2Header(0x21, 0x11, v2Addr4()[:11])), wantErr: ErrInvalidHeader},
		{name: "v2 IPv6 short", in: string(v2Header(0x21, 0x21, v2Addr6()[:35])), wantErr: ErrInvalidHeader},
		{name: "v2 IPv4 transport UNSPEC", in: string(v2Header(0x21, 0x10, v2Addr4())), wantErr: ErrInvalidHeader},
		{name: "v2 bad signature", in: "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c", wantErr: ErrNoHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := listen(t, trusted, 5*time.Second)
			client, server := connect(t, l)
			sent := make(chan error, 1)
			// From a goroutine: the big inputs do not fit in the socket buffers when the
			// server stops reading at a bad header.
			go func() {
				_, err := client.Write([]byte(tt.in + banner))
				sent <- err
			}()
			got := make([]byte, len(banner))
			_, err := io.ReadFull(server, got)
			remote := server.RemoteAddr()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Read() error = %v, want %v", err, tt.wantErr)
				}
				if _, ok := remote.(*UnknownAddr); !ok {
					t.Errorf("RemoteAddr() = %T %v after a bad header, want *UnknownAddr", remote, remote)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read() error = %v", err)
			}
			if string(got) != banner {
				t.Errorf("read after the header %q, want %q", got, banner)
			}
			if tt.want == unknown {
				u, ok := remote.(*UnknownAddr)
				if !ok || u.Proxy.String() != client.LocalAddr().String() {
					t.Errorf("RemoteAddr() = %T %v, want *UnknownAddr{%s}", remote, remote, client.LocalAddr())
				}
			} else if _, ok := remote.(*net.TCPAddr); !ok || remote.String() != tt.want {
				t.Errorf("RemoteAddr() = %T %v, want *net.TCPAddr %s", remote, remote, tt.want)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// FuzzListener sends arbitrary bytes from a listed load balancer through the Listener and checks
// what the gatekeeper would act on: no panic, never a client address that the bytes did not
// spell out in a well-formed header, an *UnknownAddr whenever there is no such header, and after
// the header exactly the bytes that followed it.
func FuzzListener(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\r\nSSH-2.0-x\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 40000 22\r\n"))
	f.Add([]byte("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 22\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\nPROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\n"))
	f.Add(cat(v2Header(0x21, 0x11, v2Addr4()), []byte("SSH-2.0-x\r\n")))
	f.Add(v2Header(0x21, 0x21, cat(v2Addr6(), tlvs)))
	f.Add(v2Header(0x20, 0x00, nil))
	f.Add(v2Header(0x21, 0x31, v2Unix()))
	f.Add(v2Header(0x21, 0x11, v2Addr4()[:11]))
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := &Listener{Listener: newPipeListener(), From: []netip.Prefix{netip.MustParsePrefix(trusted)}, HeaderTimeout: time.Second}
		defer l.Close()
		client := l.Listener.(*pipeListener).dial(t)
		defer client.Close()
		go func() {
			client.Write(data) // fails once the server closes after a bad header
			client.Close()
		}()
		server, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		rest, readErr := io.ReadAll(server)
		remote := server.RemoteAddr()

		tcp, isTCP := remote.(*net.TCPAddr)
		_, isUnknown := remote.(*UnknownAddr)
		if !isTCP && !isUnknown {
			t.Fatalf("RemoteAddr() = %T %v, want *net.TCPAddr or *UnknownAddr", remote, remote)
		}
		if readErr != nil {
			if !errors.Is(readErr, ErrNoHeader) && !errors.Is(readErr, ErrInvalidHeader) {
				t.Fatalf("Read error %v wraps neither sentinel", readErr)
			}
			if !isUnknown {
				t.Fatalf("header refused (%v) but RemoteAddr() = %v", readErr, remote)
			}
			return
		}
		// Accepted: what follows is the tail of the input, after a header that was consumed.
		if !bytes.HasSuffix(data, rest) || len(rest) == len(data) {
			t.Fatalf("read %q after a header, not a proper suffix of the input %q", rest, data)
		}
		header := data[:len(data)-len(rest)]
		if !isTCP {
			return
		}
		// A client address must be spelt out in the header that was consumed.
		ip, ok := netip.AddrFromSlice(tcp.IP)
		if !ok {
			t.Fatalf("client address %v has no valid IP", tcp)
		}
		switch {
		case bytes.HasPrefix(header, []byte("PROXY TCP4 ")), bytes.HasPrefix(header, []byte("PROXY TCP6 ")):
			f := strings.Fields(string(header))
			if len(f) != 6 {
				t.Fatalf("client %v from v1 header %q without 6 fields", tcp, header)
			}
			if src, err := netip.ParseAddr(f[2]); err != nil || src.Unmap() != ip.Unmap() || f[4] != strconv.Itoa(tcp.Port) {
				t.Fatalf("client %v is not the source of v1 header %q", tcp, header)
			}
		case bytes.HasPrefix(header, v2Sig) && len(header) >= 16:
			fam := header[13]
			var src []byte
			var port uint16
			switch {
			case fam == 0x11 && len(header) >= 16+12:
				src, port = header[16:20], binary.BigEndian.Uint16(header[24:26])
			case fam == 0x21 && len(header) >= 16+36:
				src, port = header[16:32], binary.BigEndian.Uint16(header[48:50])
			default:
				t.Fatalf("client %v from v2 header with family 0x%02x: %q", tcp, fam, header)
			}
			if header[12] != 0x21 {
				t.Fatalf("client %v from a v2 header whose command is not PROXY: %q", tcp, header)
			}
			if want, _ := netip.AddrFromSlice(src); want.Unmap() != ip.Unmap() || int(port) != tcp.Port {
				t.Fatalf("client %v is not the source %v:%d of v2 header %q", tcp, want, port, header)
			}
		default:
			t.Fatalf("client %v from bytes that are no header: %q", tcp, header)
		}
	})
}

// pipeListener hands out in-memory connections that look like TCP connections from 127.0.0.1,
// so that the fuzz target runs the real Listener without using up loopback ports.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
}

// dial returns the client end of a new connection that Accept will return.
func (l *pipeListener) dial(t *testing.T) net.Conn {
	client, server := net.Pipe()
	l.conns <- &tcpPipe{Conn: server, remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}}
	return client
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { close(l.closed); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22} }

// tcpPipe is a net.Pipe end whose RemoteAddr is a TCP address.
type tcpPipe struct {
	net.Conn
	remote net.Addr
}

func (c *tcpPipe) RemoteAddr() net.Addr { return c.remote }
