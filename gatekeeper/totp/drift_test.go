package totp

import (
	"crypto/hmac"
	"crypto/sha1"
	"fmt"
	"testing"
	"time"
)

// refCode is an HOTP code written from RFC 4226 section 5.3 without any of the package's
// helpers, so that Drift is checked against an independent implementation.
func refCode(secret []byte, counter int64) string {
	msg := []byte{
		byte(counter >> 56), byte(counter >> 48), byte(counter >> 40), byte(counter >> 32),
		byte(counter >> 24), byte(counter >> 16), byte(counter >> 8), byte(counter),
	}
	m := hmac.New(sha1.New, secret)
	m.Write(msg)
	h := m.Sum(nil)
	off := int(h[19] & 0xf)
	bin := (int(h[off])&0x7f)<<24 | int(h[off+1])<<16 | int(h[off+2])<<8 | int(h[off+3])
	return fmt.Sprintf("%06d", bin%1000000)
}

func TestRefCodeMatchesRFC4226(t *testing.T) {
	// RFC 4226 Appendix D, the first counters.
	for c, want := range []string{"755224", "287082", "359152", "969429"} {
		if got := refCode(rfcSecret, int64(c)); got != want {
			t.Fatalf("refCode(%d) = %s, want %s", c, got, want)
		}
	}
}

func TestDrift(t *testing.T) {
	secret := []byte("drift test secret 20")
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	cur := int64(Step(now))
	at := func(off int64) string { return refCode(secret, cur+off) }
	tests := []struct {
		name         string
		secret       []byte
		code         string
		now          time.Time
		skew, window int
		want         int
		wantOK       bool
	}{
		{name: "4 minutes ahead", code: at(8), skew: 1, window: 20, want: 8, wantOK: true},
		{name: "3 minutes behind", code: at(-6), skew: 1, window: 20, want: -6, wantOK: true},
		{name: "just outside the skew ahead", code: at(2), skew: 1, window: 20, want: 2, wantOK: true},
		{name: "just outside the skew behind", code: at(-2), skew: 1, window: 20, want: -2, wantOK: true},
		{name: "at the window's edge", code: at(20), skew: 1, window: 20, want: 20, wantOK: true},
		{name: "at the window's other edge", code: at(-20), skew: 1, window: 20, want: -20, wantOK: true},
		{name: "within the skew is not drift", code: at(1), skew: 1, window: 20},
		{name: "the current step is not drift", code: at(0), skew: 1, window: 20},
		{name: "skew 0: one step off is drift", code: at(1), skew: 0, window: 20, want: 1, wantOK: true},
		{name: "15 minutes off is outside a 10 minute window", code: at(30), skew: 1, window: 20},
		{name: "15 minutes behind, outside", code: at(-30), skew: 1, window: 20},
		{name: "one past the window", code: at(21), skew: 1, window: 20},
		{name: "a wider window finds it", code: at(30), skew: 1, window: 40, want: 30, wantOK: true},
		{name: "the window is capped at an hour", code: at(121), skew: 1, window: 1000},
		{name: "inside the capped window", code: at(120), skew: 1, window: 1000, want: 120, wantOK: true},
		{name: "skew clamped to 10", code: at(11), skew: 50, window: 20, want: 11, wantOK: true},
		{name: "window below the skew looks at nothing", code: at(2), skew: 3, window: 2},
		{name: "negative window", code: at(2), skew: 1, window: -5},
		{name: "spaces are ignored", code: at(8)[:3] + " " + at(8)[3:], skew: 1, window: 20, want: 8, wantOK: true},
		{name: "malformed", code: "12345", skew: 1, window: 20},
		{name: "letters", code: "12a456", skew: 1, window: 20},
		{name: "empty secret", secret: []byte{}, code: refCode(nil, cur+5), skew: 1, window: 20},
		{name: "no negative steps near the epoch", now: time.Unix(45, 0), code: "000000", skew: 0, window: 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sec, n := secret, now
			if tt.secret != nil {
				sec = tt.secret
			}
			if !tt.now.IsZero() {
				n = tt.now
			}
			got, ok := Drift(sec, tt.code, n, tt.skew, tt.window)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Drift = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
			// Drift only looks where Verify does not.
			if skew := min(max(tt.skew, 0), maxSkew); ok && got >= -skew && got <= skew {
				t.Errorf("Drift = %d, inside the skew %d", got, skew)
			}
		})
	}
}

// TestDriftNearestFirst finds two steps of one secret with the same code and checks that Drift
// reports the one nearer to now, whichever side it is on.
func TestDriftNearestFirst(t *testing.T) {
	secret := []byte("nearest first secret")
	codes := map[string]int64{}
	var lo, hi int64 = -1, -1
	for c := int64(1000); c < 3_000_000 && lo < 0; c++ {
		code := refCode(secret, c)
		if prev, seen := codes[code]; seen && c-prev >= 6 && c-prev <= 22 {
			lo, hi = prev, c
		}
		codes[code] = c
	}
	if lo < 0 {
		// The secret is fixed: the search finds the same pair every time.
		t.Fatal("no two nearby steps share a code in the range searched")
	}
	code := refCode(secret, lo)
	stepTime := func(s int64) time.Time { return time.Unix(s*30+7, 0) }
	// Now two steps after lo: lo is 2 behind, hi is further ahead.
	if got, ok := Drift(secret, code, stepTime(lo+2), 1, 20); !ok || got != -2 {
		t.Errorf("now 2 after the first match (%d, %d): Drift = %d, %v; want -2", lo, hi, got, ok)
	}
	// Now two steps before hi: hi is 2 ahead, lo is further behind.
	if got, ok := Drift(secret, code, stepTime(hi-2), 1, 20); !ok || got != 2 {
		t.Errorf("now 2 before the second match (%d, %d): Drift = %d, %v; want 2", lo, hi, got, ok)
	}
}
