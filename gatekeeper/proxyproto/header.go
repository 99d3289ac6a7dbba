package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ErrNoHeader is returned (wrapped) when a connection from a trusted proxy does not start with a
// PROXY protocol signature, or ends or times out before the signature is complete.
var ErrNoHeader = errors.New("proxyproto: no PROXY protocol header")

// ErrInvalidHeader is returned (wrapped) when a connection starts with a PROXY protocol signature
// but the rest of the header is malformed, oversized, truncated or too slow to arrive.
var ErrInvalidHeader = errors.New("proxyproto: invalid PROXY protocol header")

const (
	// maxV1Len is the longest v1 line the specification allows, CRLF included.
	maxV1Len = 107
	// maxV2Payload caps the v2 length field. The specification allows 65535, but addresses plus
	// the TLVs a load balancer sends fit easily; a bigger value only lets a peer make us buffer.
	maxV2Payload = 1536
	// v2HeaderLen is the fixed part of a v2 header: signature, ver_cmd, fam and length.
	v2HeaderLen = 16
)

var (
	v1Sig = []byte("PROXY ")
	v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// readHeader reads one PROXY protocol header (v1 or v2) from r and returns the client address it
// names. An invalid AddrPort with a nil error means the header is valid but names no address to
// use (v1 UNKNOWN, v2 LOCAL or AF_UNSPEC): the caller keeps the direct peer's address.
//
// It never asks r for a byte beyond the end of the header, so whatever the peer sent after it
// (the SSH banner, possibly in the same segment) stays in r for the caller. The signature is
// read byte by byte so that a peer sending something else fails at once instead of waiting for
// the timeout.
func readHeader(r io.Reader) (netip.AddrPort, error) {
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrNoHeader, err)
	}
	switch first[0] {
	case v1Sig[0]:
		if err := expect(r, v1Sig[1:]); err != nil {
			return netip.AddrPort{}, err
		}
		return readV1(r)
	case v2Sig[0]:
		if err := expect(r, v2Sig[1:]); err != nil {
			return netip.AddrPort{}, err
		}
		return readV2(r)
	default:
		return netip.AddrPort{}, fmt.Errorf("%w: connection starts with %q", ErrNoHeader, first[:])
	}
}

// expect reads len(sig) bytes one at a time and fails with ErrNoHeader at the first mismatch.
func expect(r io.Reader, sig []byte) error {
	var b [1]byte
	for _, want := range sig {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return fmt.Errorf("%w: %w", ErrNoHeader, err)
		}
		if b[0] != want {
			return fmt.Errorf("%w: bad signature byte %q", ErrNoHeader, b[:])
		}
	}
	return nil
}

// readV1 reads the rest of a v1 line after "PROXY " one byte at a time up to the first LF, so
// nothing after the CRLF is consumed, and parses it strictly.
func readV1(r io.Reader) (netip.AddrPort, error) {
	line := make([]byte, 0, maxV1Len-len(v1Sig))
	var b [1]byte
	for {
		if len(line) == cap(line) {
			return netip.AddrPort{}, fmt.Errorf("%w: v1 line longer than %d bytes", ErrInvalidHeader, maxV1Len)
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrInvalidHeader, err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	body, ok := bytes.CutSuffix(line, []byte{'\r'})
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w: v1 line not terminated by CRLF", ErrInvalidHeader)
	}
	return parseV1(string(body))
}

// parseV1 parses the part of a v1 line between "PROXY " and the CRLF.
func parseV1(s string) (netip.AddrPort, error) {
	proto, rest, _ := cutSpace(s)
	switch proto {
	case "UNKNOWN":
		// The specification says to ignore whatever follows UNKNOWN up to the CRLF; a stray CR
		// in there still marks a broken sender.
		if strings.ContainsRune(rest, '\r') {
			return netip.AddrPort{}, fmt.Errorf("%w: CR inside v1 line", ErrInvalidHeader)
		}
		return netip.AddrPort{}, nil
	case "TCP4", "TCP6":
	default:
		return netip.AddrPort{}, fmt.Errorf("%w: v1 protocol %q", ErrInvalidHeader, proto)
	}
	// Exactly four single-space separated fields; strings.Fields would accept runs of spaces.
	var f [4]string
	for i := range f {
		var more bool
		f[i], rest, more = cutSpace(rest)
		if more != (i < len(f)-1) {
			return netip.AddrPort{}, fmt.Errorf("%w: v1 line %q needs 5 fields", ErrInvalidHeader, s)
		}
	}
	src, err := parseV1Addr(f[0], proto)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if _, err := parseV1Addr(f[1], proto); err != nil {
		return netip.AddrPort{}, err
	}
	sport, err := parseV1Port(f[2])
	if err != nil {
		return netip.AddrPort{}, err
	}
	if _, err := parseV1Port(f[3]); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(src, sport), nil
}

// cutSpace splits s at its first space; more reports whether there was one.
func cutSpace(s string) (before, after string, more bool) {
	return strings.Cut(s, " ")
}

// parseV1Addr parses an address that must belong to the family proto names. Zones are refused:
// they mean nothing on another host. (netip.ParseAddr already refuses IPv4 leading zeros.)
func parseV1Addr(s, proto string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || (proto == "TCP4") != a.Is4() {
		return netip.Addr{}, fmt.Errorf("%w: %s address %q", ErrInvalidHeader, proto, s)
	}
	return a, nil
}

// parseV1Port accepts only the canonical decimal form 0-65535: no sign, no leading zeros.
func parseV1Port(s string) (uint16, error) {
	bad := s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0')
	for i := 0; i < len(s) && !bad; i++ {
		bad = s[i] < '0' || s[i] > '9'
	}
	if !bad {
		if n, err := strconv.ParseUint(s, 10, 16); err == nil {
			return uint16(n), nil
		}
	}
	return 0, fmt.Errorf("%w: port %q", ErrInvalidHeader, s)
}

// readV2 reads the rest of a v2 header after the 12-byte signature: exactly 4 more fixed bytes,
// then exactly the number of bytes the length field announces.
func readV2(r io.Reader) (netip.AddrPort, error) {
	var fixed [v2HeaderLen - 12]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrInvalidHeader, err)
	}
	verCmd, fam := fixed[0], fixed[1]
	n := int(binary.BigEndian.Uint16(fixed[2:]))
	if verCmd>>4 != 2 {
		return netip.AddrPort{}, fmt.Errorf("%w: v2 version %d", ErrInvalidHeader, verCmd>>4)
	}
	if n > maxV2Payload {
		return netip.AddrPort{}, fmt.Errorf("%w: v2 length %d exceeds %d", ErrInvalidHeader, n, maxV2Payload)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrInvalidHeader, err)
	}
	switch verCmd & 0x0f {
	case 0x0: // LOCAL: the proxy's own connection (health check); addresses are to be ignored.
		return netip.AddrPort{}, nil
	case 0x1: // PROXY
	default:
		return netip.AddrPort{}, fmt.Errorf("%w: v2 command %d", ErrInvalidHeader, verCmd&0x0f)
	}
	// The TLVs after the addresses carry nothing we need; they are skipped unparsed.
	switch fam {
	case 0x00: // AF_UNSPEC: the proxy does not know the source; keep the peer address.
		return netip.AddrPort{}, nil
	case 0x11: // AF_INET, STREAM: src(4) dst(4) sport(2) dport(2)
		if n < 12 {
			return netip.AddrPort{}, fmt.Errorf("%w: v2 length %d too short for IPv4", ErrInvalidHeader, n)
		}
		src := netip.AddrFrom4([4]byte(payload[0:4]))
		return netip.AddrPortFrom(src, binary.BigEndian.Uint16(payload[8:10])), nil
	case 0x21: // AF_INET6, STREAM: src(16) dst(16) sport(2) dport(2)
		if n < 36 {
			return netip.AddrPort{}, fmt.Errorf("%w: v2 length %d too short for IPv6", ErrInvalidHeader, n)
		}
		src := netip.AddrFrom16([16]byte(payload[0:16]))
		return netip.AddrPortFrom(src, binary.BigEndian.Uint16(payload[32:34])), nil
	default:
		// AF_UNIX, DGRAM or an unspecified transport cannot describe an SSH client.
		return netip.AddrPort{}, fmt.Errorf("%w: v2 family/transport 0x%02x", ErrInvalidHeader, fam)
	}
}
