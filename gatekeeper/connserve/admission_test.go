package connserve

import (
	"net/netip"
	"testing"
)

var testLimits = Limits{PerAddress: 10, PerNetwork: 32, Max: 100, DropStart: 50, TrustedReserve: 20}

func TestAdmissionFlood(t *testing.T) {
	a := NewAdmission(testLimits)
	a.random = func() float64 { return 0.99 } // early drop only where it is certain
	// 1,000 connections from one address, then 250 from one /24.
	admitted := 0
	for range 1000 {
		if _, why := a.Enter(netip.MustParseAddr("198.51.100.7"), false); why == "" {
			admitted++
		}
	}
	if admitted != testLimits.PerAddress {
		t.Fatalf("%d connections from one address admitted, want %d", admitted, testLimits.PerAddress)
	}
	for i := range 250 {
		a.Enter(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), false)
	}
	if got := a.Len(); got != testLimits.PerAddress+testLimits.PerNetwork {
		t.Fatalf("%d admitted after the /24 flood, want %d", got, testLimits.PerAddress+testLimits.PerNetwork)
	}
	// Someone else, and someone from campus, still get in.
	if _, why := a.Enter(netip.MustParseAddr("192.0.2.1"), false); why != "" {
		t.Errorf("another outside address refused: %s", why)
	}
	if _, why := a.Enter(netip.MustParseAddr("10.1.2.3"), true); why != "" {
		t.Errorf("trusted address refused: %s", why)
	}
	got := a.TakeRefused()
	if got[RefusedPerAddress] != 990 || got[RefusedPerNetwork] != uint64(250-testLimits.PerNetwork) {
		t.Errorf("refusals %v", got)
	}
	if again := a.TakeRefused(); again != nil {
		t.Errorf("refusals reported twice: %v", again)
	}
}

func TestAdmissionLimits(t *testing.T) {
	outside := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i / 200), byte(i % 200)}) }
	tests := []struct {
		name    string
		random  float64
		fill    int // outside connections from distinct /24s admitted first
		trusted bool
		want    string
	}{
		{"below drop start", 0, 49, false, ""},
		{"at drop start, lucky", 0.31, 50, false, ""},
		{"at drop start, unlucky", 0.29, 50, false, RefusedEarlyDrop},
		{"nearly full", 0.98, 99, false, RefusedEarlyDrop},
		{"full", 0.999, 100, false, RefusedFull},
		{"full, trusted uses the reserve", 0, 100, true, ""},
		{"reserve used up", 0, 120, true, RefusedFull},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAdmission(testLimits)
			a.random = func() float64 { return 1 } // never drop while filling
			for i := range tc.fill {
				// Each from its own /24; past Max the fill goes in as trusted
				// (the reserve), so that it is admitted itself.
				addr := netip.AddrFrom4([4]byte{100, byte(64 + i/256), byte(i % 256), 1})
				if _, why := a.Enter(addr, i >= testLimits.Max); why != "" {
					t.Fatalf("fill %d refused: %s", i, why)
				}
			}
			a.random = func() float64 { return tc.random }
			_, why := a.Enter(outside(tc.fill), tc.trusted)
			if why != tc.want {
				t.Errorf("Enter = %q, want %q", why, tc.want)
			}
		})
	}
}

func TestAdmissionRelease(t *testing.T) {
	a := NewAdmission(Limits{PerAddress: 1, PerNetwork: 1, Max: 1, TrustedReserve: 0})
	addr := netip.MustParseAddr("2001:db8:1:2::5")
	release, why := a.Enter(addr, false)
	if why != "" {
		t.Fatal(why)
	}
	// Same /64: same host.
	if _, why := a.Enter(netip.MustParseAddr("2001:db8:1:2::6"), false); why != RefusedPerAddress {
		t.Fatalf("same /64: %q", why)
	}
	release()
	release() // a second call gives nothing back twice
	if a.Len() != 0 {
		t.Fatalf("Len %d after release", a.Len())
	}
	for i := range 3 {
		r, why := a.Enter(addr, false)
		if why != "" {
			t.Fatalf("enter %d after release: %s", i, why)
		}
		r()
	}
	if n := len(a.perAddr) + len(a.perNet); n != 0 {
		t.Errorf("%d per-source counters left behind", n)
	}
}

func TestLimitsOr(t *testing.T) {
	d := Limits{PerAddress: 10, PerNetwork: 32, Max: 100, DropStart: 70, TrustedReserve: 20}
	got := Limits{PerNetwork: 5, TrustedReserve: 0}.Or(d)
	want := Limits{PerAddress: 10, PerNetwork: 5, Max: 100}
	if got != want {
		t.Errorf("Or = %+v, want %+v (DropStart and TrustedReserve kept as given)", got, want)
	}
}
