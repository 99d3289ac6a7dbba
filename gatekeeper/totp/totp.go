// Package totp checks RFC 6238 time-based one-time passwords (SHA1, 6 digits,
// 30 s steps: what Google Authenticator and its clones produce) with one-use
// time steps: Verify reports which step a code matched so that the caller can
// record it and refuse that step, and every older one, from then on.
package totp

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Period is the length of one TOTP time step.
const Period = 30 * time.Second

// Digits is the number of digits in a code.
const Digits = 6

// secretSize is the length of a new secret: 160 bits, the HMAC-SHA1 block
// output size that RFC 4226 recommends and authenticator apps expect.
const secretSize = 20

// maxSkew caps the steps looked at either side of now. A larger window buys
// nothing for clock drift but multiplies the chance of a guessed code and the
// cost of each check; google-authenticator's own maximum is ±10 as well.
const maxSkew = 10

// maxCodeInput bounds the raw code a client may send before it is even
// looked at, so that a hostile megabyte of spaces costs nothing.
const maxCodeInput = 64

var (
	// ErrMalformed is returned for a code that, spaces removed, is not exactly
	// Digits ASCII digits.
	ErrMalformed = errors.New("totp: malformed code")
	// ErrMismatch is returned when the code matches no step in the window.
	ErrMismatch = errors.New("totp: wrong code")
	// ErrReplay is returned when the code matches only steps at or before the
	// last step already used: a replayed (or superseded) code.
	ErrReplay = errors.New("totp: code already used")
)

// b32 is the base32 alphabet authenticator apps expect, without the '='
// padding that some of them reject.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Step returns the RFC 6238 time step (counter) of t. Times before the Unix
// epoch have no step and map to 0.
func Step(t time.Time) uint64 {
	s := floorStep(t)
	if s < 0 {
		return 0
	}
	return uint64(s)
}

// floorStep is the signed step of t, rounding towards minus infinity so that
// the step boundaries stay 30 s apart before the epoch too.
func floorStep(t time.Time) int64 {
	u := t.Unix()
	p := int64(Period / time.Second)
	s := u / p
	if u%p < 0 {
		s--
	}
	return s
}

// Verify checks code against secret at time now, looking at the steps within
// skew of now's step (skew is clamped to [0, 10]; steps below 0 do not
// exist). Spaces in code are ignored ("123 456" as the apps show it).
//
// It returns the newest matching step that is greater than last; the caller
// must store it as the new last step, in the same transaction, so that the
// code cannot be used again. If the code matches only steps at or before last
// the error is ErrReplay; if it matches nothing, ErrMismatch; if it is not
// exactly six ASCII digits, ErrMalformed. An empty secret matches nothing.
//
// All steps in the window are always computed and compared in constant time,
// so the time taken does not tell which step matched.
func Verify(secret []byte, code string, now time.Time, skew int, last uint64) (step uint64, err error) {
	var want [Digits]byte
	if !parseCode(code, &want) {
		return 0, ErrMalformed
	}
	skew = min(max(skew, 0), maxSkew)

	cur := floorStep(now)
	var (
		best    uint64
		found   bool
		replay  bool
		got     [Digits]byte
		counter uint64
	)
	for s := cur - int64(skew); s <= cur+int64(skew); s++ {
		if s < 0 {
			continue
		}
		counter = uint64(s)
		formatCode(truncated(secret, counter), &got)
		match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
		switch {
		case !match:
		case counter > last:
			// Steps ascend, so the last hit above last is the newest.
			best, found = counter, true
		default:
			replay = true
		}
	}
	switch {
	case len(secret) == 0:
		// An empty key's codes are computable by anyone: never accept one.
		return 0, ErrMismatch
	case found:
		return best, nil
	case replay:
		return 0, ErrReplay
	default:
		return 0, ErrMismatch
	}
}

// maxDriftWindow caps Drift's window: an hour either side. Clocks further off than that are not
// drift worth diagnosing, and every step looked at costs an HMAC.
const maxDriftWindow = 120

// Drift reports how far off the clock of the device that produced code is: the offset in steps
// (positive: the device is ahead of now) at which code matches secret, looking only outside skew
// (the steps Verify accepts) and within window steps of now's step. The nearest offset is tried
// first, ahead before behind at the same distance. skew is clamped to [0, 10] as in Verify,
// window to at most 120; steps below 0 do not exist.
//
// Drift never accepts a code and ignores which steps are used: it is for telling a user (or
// support) that the phone's clock is wrong after a code has been refused. A malformed code, an
// empty secret or no match gives ok false. Codes of six digits collide by chance, about once in
// a million per step looked at, so a match is a strong hint, not a proof.
func Drift(secret []byte, code string, now time.Time, skew, window int) (steps int, ok bool) {
	var want [Digits]byte
	if len(secret) == 0 || !parseCode(code, &want) {
		return 0, false
	}
	skew = min(max(skew, 0), maxSkew)
	window = min(window, maxDriftWindow)
	cur := floorStep(now)
	var got [Digits]byte
	for d := skew + 1; d <= window; d++ {
		for _, off := range [2]int{d, -d} {
			s := cur + int64(off)
			if s < 0 {
				continue
			}
			formatCode(truncated(secret, uint64(s)), &got)
			if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
				return off, true
			}
		}
	}
	return 0, false
}

// parseCode strips spaces from code and stores its digits in out; it reports
// false unless exactly Digits ASCII digits remain.
func parseCode(code string, out *[Digits]byte) bool {
	if len(code) > maxCodeInput {
		return false
	}
	n := 0
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case c == ' ':
			continue
		case c < '0' || c > '9' || n == Digits:
			return false
		}
		out[n] = c
		n++
	}
	return n == Digits
}

// truncated is RFC 4226's HOTP value before the final modulo: HMAC-SHA1 of
// the big-endian counter, dynamically truncated to 31 bits. The 6-digit code
// is this modulo 10^6; the RFC 6238 test vectors use 10^8.
func truncated(secret []byte, counter uint64) uint32 {
	mac := hmac.New(sha1.New, secret)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], counter)
	mac.Write(msg[:])
	var sum [sha1.Size]byte
	h := mac.Sum(sum[:0])
	off := h[len(h)-1] & 0x0f
	return binary.BigEndian.Uint32(h[off:off+4]) & 0x7fffffff
}

// formatCode writes the low Digits decimal digits of v, zero-padded, to out.
func formatCode(v uint32, out *[Digits]byte) {
	for i := Digits - 1; i >= 0; i-- {
		out[i] = byte('0' + v%10)
		v /= 10
	}
}

// NewSecret returns a new random 20-byte TOTP key.
func NewSecret() ([]byte, error) {
	s := make([]byte, secretSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("totp: new secret: %w", err)
	}
	return s, nil
}

// EncodeSecret returns secret in unpadded base32, the form authenticator
// apps take when a key is typed in by hand and the form URI embeds.
func EncodeSecret(secret []byte) string {
	return b32.EncodeToString(secret)
}

// URI returns the otpauth:// key URI (Google Authenticator "Key Uri Format")
// that a QR code carries. It holds only what an app needs, so that the QR
// stays small: the label ISSUER:ACCOUNT (each path-escaped, with ':' escaped
// inside them so that the single literal ':' separates the two), the secret,
// the issuer again as a parameter, and the SHA1/6/30 parameters spelled out
// for apps that do not assume them. An empty issuer leaves out both issuer
// parts.
func URI(issuer, account string, secret []byte) string {
	var b strings.Builder
	b.WriteString("otpauth://totp/")
	if issuer != "" {
		b.WriteString(labelEscape(issuer))
		b.WriteByte(':')
	}
	b.WriteString(labelEscape(account))
	b.WriteString("?secret=")
	b.WriteString(EncodeSecret(secret))
	if issuer != "" {
		b.WriteString("&issuer=")
		b.WriteString(queryEscape(issuer))
	}
	fmt.Fprintf(&b, "&algorithm=SHA1&digits=%d&period=%d", Digits, int(Period/time.Second))
	return b.String()
}

// labelEscape path-escapes one half of the label. url.PathEscape leaves ':'
// alone, but a ':' inside the issuer would move the issuer/account split.
func labelEscape(s string) string {
	return strings.ReplaceAll(url.PathEscape(s), ":", "%3A")
}

// queryEscape escapes a query value with %20 for spaces: several apps show a
// '+' literally instead of decoding it as a space.
func queryEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
