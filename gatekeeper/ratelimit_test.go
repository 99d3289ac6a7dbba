package gatekeeper

import (
	"net/netip"
	"strconv"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	policy := RateLimit{Failures: 3, Window: 30 * time.Second, Lockout: 5 * time.Minute}
	type step struct {
		advance    time.Duration
		op         string // "fail", "reset" or "check"
		wantLocked bool   // after the step
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"below the limit", []step{
			{0, "fail", false}, {time.Second, "fail", false}, {0, "check", false},
		}},
		{"limit reached locks", []step{
			{0, "fail", false}, {time.Second, "fail", false}, {time.Second, "fail", true},
			{4 * time.Minute, "check", true},
		}},
		{"lockout expires", []step{
			{0, "fail", false}, {0, "fail", false}, {0, "fail", true},
			{5 * time.Minute, "check", false},
		}},
		{"failures outside the window do not add up", []step{
			{0, "fail", false}, {0, "fail", false}, {31 * time.Second, "fail", false},
		}},
		{"reset clears a lockout", []step{
			{0, "fail", false}, {0, "fail", false}, {0, "fail", true}, {0, "reset", false},
		}},
		{"after a lockout the count starts again", []step{
			{0, "fail", false}, {0, "fail", false}, {0, "fail", true},
			{5 * time.Minute, "fail", false}, {0, "check", false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{}
			clock.Set(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			l := newLimiter(policy, clock.Now)
			for i, s := range tc.steps {
				clock.Advance(s.advance)
				switch s.op {
				case "fail":
					l.fail("k")
				case "reset":
					l.reset("k")
				}
				if got := !l.lockedUntil("k").IsZero(); got != s.wantLocked {
					t.Fatalf("step %d (%s): locked = %v, want %v", i, s.op, got, s.wantLocked)
				}
			}
		})
	}
}

func TestLimiterKeysAreSeparate(t *testing.T) {
	clock := &fakeClock{}
	l := newLimiter(RateLimit{Failures: 1, Window: time.Minute, Lockout: time.Minute}, clock.Now)
	l.fail(userKey("alice"))
	if l.lockedUntil(userKey("alice")).IsZero() {
		t.Fatal("alice not locked")
	}
	if !l.lockedUntil(userKey("bob")).IsZero() {
		t.Fatal("bob locked by alice's failure")
	}
}

func TestAddrKey(t *testing.T) {
	tests := []struct{ a, b string }{
		{"10.1.2.3", "::ffff:10.1.2.3"},
		{"2001:db8::1", "2001:db8::ffff:1"}, // same /64
	}
	for _, tc := range tests {
		if addrKey(netip.MustParseAddr(tc.a)) != addrKey(netip.MustParseAddr(tc.b)) {
			t.Errorf("%s and %s should share a rate-limit key", tc.a, tc.b)
		}
	}
	if addrKey(netip.MustParseAddr("2001:db8:0:1::1")) == addrKey(netip.MustParseAddr("2001:db8:0:2::1")) {
		t.Error("different /64s share a key")
	}
}

func TestLimiterBoundsMemory(t *testing.T) {
	clock := &fakeClock{}
	l := newLimiter(RateLimit{Failures: 3, Window: time.Second, Lockout: time.Minute}, clock.Now)
	for i := range maxLimiterKeys {
		l.fail(userKey(strconv.Itoa(i)))
	}
	clock.Advance(2 * time.Second)
	l.fail(userKey("last"))
	if n := len(l.entries); n > 1 {
		t.Fatalf("%d stale entries kept after pruning", n)
	}
}
