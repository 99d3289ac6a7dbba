package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
)

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

// tlvs are a PP2_TYPE_AUTHORITY and a PP2_TYPE_NOOP, which must be skipped.
var tlvs = []byte{0x02, 0x00, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'o', 'r', 'g', 0x04, 0x00, 0x02, 0, 0}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestReadHeader(t *testing.T) {
	ffff := "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	maxUnknown := "PROXY UNKNOWN " + ffff + " " + ffff + " 65535 65535\r\n"
	tests := []struct {
		name    string
		in      string
		want    string // client address; "" = keep the direct peer's
		wantErr error
	}{
		{name: "v1 TCP4", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\r\n", want: "192.0.2.1:40000"},
		{name: "v1 TCP6", in: "PROXY TCP6 2001:db8::1 2001:db8::2 40000 22\r\n", want: "[2001:db8::1]:40000"},
		{name: "v1 TCP6 mapped", in: "PROXY TCP6 ::ffff:192.0.2.1 ::1 1 22\r\n", want: "[::ffff:192.0.2.1]:1"},
		{name: "v1 ports 0 and 65535", in: "PROXY TCP4 192.0.2.1 198.51.100.1 0 65535\r\n", want: "192.0.2.1:0"},
		{name: "v1 UNKNOWN", in: "PROXY UNKNOWN\r\n"},
		{name: "v1 UNKNOWN 107 bytes", in: maxUnknown},
		{name: "v1 108 bytes", in: strings.Replace(maxUnknown, "65535 ", "65535  ", 1), wantErr: ErrInvalidHeader},
		{name: "v1 no CRLF within 107 bytes", in: "PROXY UNKNOWN " + strings.Repeat("x", 200), wantErr: ErrInvalidHeader},
		{name: "v1 LF without CR", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\n", wantErr: ErrInvalidHeader},
		{name: "v1 CR inside", in: "PROXY TCP4 192.0.2.1\r198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 CR inside UNKNOWN", in: "PROXY UNKNOWN a\rb\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 UNKNOWNX", in: "PROXY UNKNOWNX\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 UDP4", in: "PROXY UDP4 192.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 TCP4 with IPv6", in: "PROXY TCP4 2001:db8::1 2001:db8::2 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 TCP6 with IPv4", in: "PROXY TCP6 192.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 TCP6 dst IPv4", in: "PROXY TCP6 2001:db8::1 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 zone", in: "PROXY TCP6 fe80::1%eth0 2001:db8::2 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 IPv4 leading zero", in: "PROXY TCP4 192.0.2.01 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 bad address", in: "PROXY TCP4 999.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 port 65536", in: "PROXY TCP4 192.0.2.1 198.51.100.1 65536 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 port +22", in: "PROXY TCP4 192.0.2.1 198.51.100.1 +22 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 port -1", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 -1\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 port leading zero", in: "PROXY TCP4 192.0.2.1 198.51.100.1 040000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 port hex", in: "PROXY TCP4 192.0.2.1 198.51.100.1 0x16 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 double space", in: "PROXY TCP4  192.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 trailing space", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 22 \r\n", wantErr: ErrInvalidHeader},
		{name: "v1 missing field", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 extra field", in: "PROXY TCP4 192.0.2.1 198.51.100.1 40000 22 1\r\n", wantErr: ErrInvalidHeader},
		{name: "v1 truncated", in: "PROXY TCP4 192.0.2.1", wantErr: ErrInvalidHeader},
		{name: "lowercase", in: "proxy TCP4 192.0.2.1 198.51.100.1 40000 22\r\n", wantErr: ErrNoHeader},
		{name: "PROXY without space", in: "PROXYTCP4\r\n", wantErr: ErrNoHeader},
		{name: "truncated signature", in: "PROX", wantErr: ErrNoHeader},
		{name: "SSH banner", in: "SSH-2.0-OpenSSH_9.6\r\n", wantErr: ErrNoHeader},
		{name: "empty", in: "", wantErr: ErrNoHeader},

		{name: "v2 PROXY IPv4", in: string(v2Header(0x21, 0x11, v2Addr4())), want: "192.0.2.1:40000"},
		{name: "v2 PROXY IPv6", in: string(v2Header(0x21, 0x21, v2Addr6())), want: "[2001:db8::1]:40000"},
		{name: "v2 PROXY IPv4 TLVs", in: string(v2Header(0x21, 0x11, cat(v2Addr4(), tlvs))), want: "192.0.2.1:40000"},
		{name: "v2 PROXY IPv6 TLVs", in: string(v2Header(0x21, 0x21, cat(v2Addr6(), tlvs))), want: "[2001:db8::1]:40000"},
		{name: "v2 length 1536", in: string(v2Header(0x21, 0x11, cat(v2Addr4(), make([]byte, 1536-12)))), want: "192.0.2.1:40000"},
		{name: "v2 LOCAL", in: string(v2Header(0x20, 0x11, v2Addr4()))},
		{name: "v2 LOCAL UNSPEC empty", in: string(v2Header(0x20, 0x00, nil))},
		{name: "v2 PROXY UNSPEC", in: string(v2Header(0x21, 0x00, nil))},
		{name: "v2 PROXY UNSPEC TLVs", in: string(v2Header(0x21, 0x00, tlvs))},
		{name: "v2 length 1537", in: string(v2Header(0x21, 0x11, cat(v2Addr4(), make([]byte, 1537-12)))), wantErr: ErrInvalidHeader},
		{name: "v2 length 65535", in: string(v2Header(0x21, 0x11, make([]byte, 65535))), wantErr: ErrInvalidHeader},
		{name: "v2 version 1", in: string(v2Header(0x11, 0x11, v2Addr4())), wantErr: ErrInvalidHeader},
		{name: "v2 version 3", in: string(v2Header(0x31, 0x11, v2Addr4())), wantErr: ErrInvalidHeader},
		{name: "v2 command 2", in: string(v2Header(0x22, 0x11, v2Addr4())), wantErr: ErrInvalidHeader},
		{name: "v2 IPv4 short", in: string(v2Header(0x21, 0x11, v2Addr4()[:11])), wantErr: ErrInvalidHeader},
		{name: "v2 IPv6 short", in: string(v2Header(0x21, 0x21, v2Addr6()[:35])), wantErr: ErrInvalidHeader},
		{name: "v2 IPv4 DGRAM", in: string(v2Header(0x21, 0x12, v2Addr4())), wantErr: ErrInvalidHeader},
		{name: "v2 IPv4 transport UNSPEC", in: string(v2Header(0x21, 0x10, v2Addr4())), wantErr: ErrInvalidHeader},
		{name: "v2 AF_UNIX", in: string(v2Header(0x21, 0x31, make([]byte, 216))), wantErr: ErrInvalidHeader},
		{name: "v2 truncated payload", in: string(v2Header(0x21, 0x11, make([]byte, 1000))[:28]), wantErr: ErrInvalidHeader},
		{name: "v2 truncated fixed part", in: string(v2Sig) + "\x21\x11", wantErr: ErrInvalidHeader},
		{name: "v2 bad signature", in: "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c", wantErr: ErrNoHeader},
	}
	const trailer = "SSH-2.0-client\r\n"
	readers := map[string]func([]byte) io.Reader{
		"whole":    func(b []byte) io.Reader { return bytes.NewReader(b) },
		"one byte": func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
	}
	for _, tt := range tests {
		for rname, newReader := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				// The trailer stands for the SSH banner the client sends right after the
				// header: it must be left unread.
				r := newReader([]byte(tt.in + trailer))
				got, err := readHeader(r)
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("readHeader() error = %v, want %v", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatalf("readHeader() error = %v", err)
				}
				if gotStr := addrString(got); gotStr != tt.want {
					t.Errorf("readHeader() = %q, want %q", gotStr, tt.want)
				}
				rest, _ := io.ReadAll(r)
				if string(rest) != trailer {
					t.Errorf("left after header = %q, want %q", rest, trailer)
				}
			})
		}
	}
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func TestParseV1Port(t *testing.T) {
	tests := []struct {
		in   string
		want uint16
		ok   bool
	}{
		{"0", 0, true}, {"22", 22, true}, {"65535", 65535, true},
		{"65536", 0, false}, {"99999", 0, false}, {"100000", 0, false}, {"", 0, false},
		{"00", 0, false}, {"022", 0, false}, {"+1", 0, false}, {"-1", 0, false},
		{" 1", 0, false}, {"1_0", 0, false}, {"١", 0, false},
	}
	for _, tt := range tests {
		got, err := parseV1Port(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseV1Port(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidHeader) {
			t.Errorf("parseV1Port(%q) error %v does not wrap ErrInvalidHeader", tt.in, err)
		}
	}
}

// FuzzParseHeader checks that the parser never panics, fails only with its sentinel errors, and
// on success has consumed exactly the header: up to the first LF for v1 (CRLF-terminated, at most
// 107 bytes) and 16 plus the length field for v2 — never a byte of what follows.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\r\nSSH-2.0-x\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 40000 22\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\nPROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.1 40000 22\n"))
	f.Add(cat(v2Header(0x21, 0x11, v2Addr4()), []byte("SSH-2.0-x\r\n")))
	f.Add(v2Header(0x21, 0x21, cat(v2Addr6(), tlvs)))
	f.Add(v2Header(0x20, 0x00, nil))
	f.Add(v2Header(0x21, 0x11, v2Addr4()[:11]))
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		got, err := readHeader(r)
		used := len(data) - r.Len()
		if err != nil {
			if !errors.Is(err, ErrNoHeader) && !errors.Is(err, ErrInvalidHeader) {
				t.Fatalf("error %v wraps neither sentinel", err)
			}
			if used > v2HeaderLen+maxV2Payload {
				t.Fatalf("consumed %d bytes before failing", used)
			}
			return
		}
		var want int
		switch {
		case bytes.HasPrefix(data, v1Sig):
			want = bytes.IndexByte(data, '\n') + 1
			if want < 2 || want > maxV1Len || data[want-2] != '\r' {
				t.Fatalf("accepted v1 line %q", data[:used])
			}
		case bytes.HasPrefix(data, v2Sig) && len(data) >= v2HeaderLen:
			want = v2HeaderLen + int(binary.BigEndian.Uint16(data[14:16]))
		default:
			t.Fatalf("accepted %q without a signature", data[:used])
		}
		if used != want {
			t.Fatalf("consumed %d bytes, header is %d bytes", used, want)
		}
		if got.IsValid() && got.Addr().Zone() != "" {
			t.Fatalf("address with zone %v", got)
		}
	})
}
