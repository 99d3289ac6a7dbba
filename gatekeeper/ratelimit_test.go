package gatekeeper

import (
	"errors"
	"fmt"
	"gatekeeper/gatekeeper/store"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testPolicy is the default rate_limit section.
var testPolicy = RateLimit{Failures: 3, Window: 30 * time.Second, Lockout: 5 * time.Minute,
	MaxLockout: time.Hour, NetworkFailures: 10, TrustedFailures: 10}

func newTestLimiter(t *testing.T) (*limiter, *fakeClock) {
	t.Helper()
	clock := &fakeClock{}
	clock.Set(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	return newLimiter(testPolicy, clock.Now), clock
}

var (
	alice    = LockKey{ScopeUser, "alice"}
	aliceIn  = LockKey{ScopeTrustedUser, "alice"}
	outside  = LockKey{ScopeAddress, "203.0.113.7"}
	outside2 = LockKey{ScopeAddress, "198.51.100.9"}
)

// failN fails n reserved attempts on keys and reports whether the last one
// started a lockout.
func failN(t *testing.T, l *limiter, n int, keys ...LockKey) (started []Lock) {
	t.Helper()
	for i := range n {
		r, lk, _ := l.reserve(keys)
		if lk != nil {
			t.Fatalf("attempt %d refused: %+v", i+1, lk)
		}
		started = r.fail()
	}
	return started
}

func TestLimiterSteps(t *testing.T) {
	type step struct {
		advance    time.Duration
		op         string // "fail", "succeed", "trusted-fail", "unlock", "check"
		wantLocked bool   // is alice (outside) locked after the step
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
		{"a user's failures are remembered beyond the window: pacing gains nothing", []step{
			{0, "fail", false}, {time.Hour, "fail", false}, {10 * time.Hour, "fail", true},
		}},
		{"a user's failures are forgotten after a day", []step{
			{0, "fail", false}, {0, "fail", false}, {failureMemory, "fail", false},
		}},
		{"a login with a code clears the failures", []step{
			{0, "fail", false}, {0, "fail", false}, {0, "succeed", false}, {0, "fail", false}, {0, "fail", false},
		}},
		{"trusted failures never lock outside logins", []step{
			{0, "trusted-fail", false}, {0, "trusted-fail", false}, {0, "trusted-fail", false},
			{0, "trusted-fail", false}, {0, "trusted-fail", false}, {0, "check", false},
		}},
		{"unlock clears a lockout", []step{
			{0, "fail", false}, {0, "fail", false}, {0, "fail", true}, {0, "unlock", false},
		}},
		{"the second lockout lasts twice as long", []step{
			{0, "fail", false}, {0, "fail", false}, {0, "fail", true},
			{5 * time.Minute, "fail", false}, {0, "fail", false}, {0, "fail", true},
			{9 * time.Minute, "check", true}, {time.Minute, "check", false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, clock := newTestLimiter(t)
			keys := []LockKey{outside, alice}
			for i, s := range tc.steps {
				clock.Advance(s.advance)
				switch s.op {
				case "fail":
					// A new address each time: the user's count is what matters.
					r, lk, _ := l.reserve([]LockKey{{ScopeAddress, "192.0.2." + strconv.Itoa(i)}, alice})
					if lk != nil {
						t.Fatalf("step %d: refused %+v", i, lk)
					}
					r.fail()
				case "succeed":
					r, lk, _ := l.reserve(keys)
					if lk != nil {
						t.Fatalf("step %d: refused %+v", i, lk)
					}
					r.succeed()
				case "trusted-fail":
					l.fail([]LockKey{aliceIn})
				case "unlock":
					l.unlock([]LockKey{alice})
				}
				if got := l.check([]LockKey{alice}) != nil; got != s.wantLocked {
					t.Fatalf("step %d (%s): locked = %v, want %v", i, s.op, got, s.wantLocked)
				}
			}
		})
	}
}

// TestLimiterOutsideNeverLocksTrusted: an attacker on the internet who locks
// alice out of logins from outside leaves her logins from campus alone.
func TestLimiterOutsideNeverLocksTrusted(t *testing.T) {
	l, _ := newTestLimiter(t)
	failN(t, l, 3, outside, alice)
	if l.check([]LockKey{alice}) == nil {
		t.Fatal("alice not locked out from outside")
	}
	if lk := l.check([]LockKey{aliceIn, {ScopeTrustedAddress, "10.1.2.3"}}); lk != nil {
		t.Fatalf("trusted login refused by %+v", lk)
	}
}

// TestLimiterReservesBeforeChecking: however many attempts arrive at once,
// from however many addresses, no more than rate_limit.failures get a place.
func TestLimiterReservesBeforeChecking(t *testing.T) {
	l, _ := newTestLimiter(t)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var held []*reservation
	for i := range 60 {
		wg.Go(func() {
			r, lk, _ := l.reserve([]LockKey{{ScopeAddress, "192.0.2." + strconv.Itoa(i)}, alice})
			if lk == nil {
				mu.Lock()
				held = append(held, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(held) != testPolicy.Failures {
		t.Fatalf("%d attempts got a place, want %d", len(held), testPolicy.Failures)
	}
	var started []Lock
	for _, r := range held {
		started = append(started, r.fail()...)
	}
	if len(started) != 1 || started[0].Key != alice {
		t.Fatalf("lockouts started: %+v, want alice's", started)
	}
	if _, lk, _ := l.reserve([]LockKey{outside2, alice}); lk == nil || lk.Until.IsZero() {
		t.Fatalf("reserve after the lockout: %+v", lk)
	}
}

// TestLimiterSuccessGivesThePlaceBack: a right code does not use up a place.
func TestLimiterSuccessGivesThePlaceBack(t *testing.T) {
	l, _ := newTestLimiter(t)
	for range 10 {
		r, lk, _ := l.reserve([]LockKey{outside, alice})
		if lk != nil {
			t.Fatalf("refused: %+v", lk)
		}
		r.succeed()
	}
	r, _, _ := l.reserve([]LockKey{outside, alice})
	r.cancel()
	r.fail() // after cancel: no effect
	if lk, _ := l.locks([]LockKey{alice}); len(lk) != 0 {
		t.Fatalf("locks after successes: %+v", lk)
	}
}

// TestLimiterReleaseThenSucceed: what a login with a code does to the
// limiter. The source's places go back (in the background) while the user's
// stays held for the lander's answer; success then gives the user's back and
// clears the address's failures in one update, creating no entry for a key
// that has none.
func TestLimiterReleaseThenSucceed(t *testing.T) {
	l, _ := newTestLimiter(t)
	network := LockKey{ScopeNetwork, "203.0.113.0/24"}
	l.fail([]LockKey{outside}) // a typing error a minute ago
	r, lk, _ := l.reserve([]LockKey{outside, network, alice})
	if lk != nil {
		t.Fatalf("refused: %+v", lk)
	}
	holds := func() map[LockKey]int {
		t.Helper()
		out := map[LockKey]int{}
		keys := []LockKey{outside, network, alice, outside2}
		if err := l.st.Update(keys, func(es []*LimitEntry) error {
			for i, e := range es {
				if e != nil {
					out[keys[i]] = len(e.Holds)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	wait := r.release(func(k LockKey) bool { return k.Scope != ScopeUser })
	wait()
	if h := holds(); h[outside] != 0 || h[network] != 0 || h[alice] != 1 {
		t.Fatalf("after release, places held: %v; want alice's only", h)
	}
	campus := LockKey{ScopeTrustedAddress, "10.1.2.3"} // a portal sign-in's source
	l.fail([]LockKey{campus})
	r.succeed(outside, outside2, campus)
	if h := holds(); h[alice] != 0 {
		t.Fatalf("after success, places held: %v; want none", h)
	}
	if _, ok := holds()[outside2]; ok {
		t.Error("success created an entry for a key that had none")
	}
	if keys, _ := l.st.Keys(); len(keys) != 0 {
		t.Errorf("entries left that hold nothing: %v", keys)
	}
	if lk, _ := l.locks([]LockKey{outside, alice, campus}); len(lk) != 0 {
		t.Errorf("failures left after success: %+v", lk)
	}
	r.fail() // after succeed: no effect
	if lk, _ := l.locks([]LockKey{outside}); len(lk) != 0 {
		t.Errorf("a verdict after success counted: %+v", lk)
	}
}

func TestLimiterLockoutsDoubleUpToMax(t *testing.T) {
	l, clock := newTestLimiter(t)
	want := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour}
	for i, d := range want {
		started := failN(t, l, 3, alice)
		if len(started) != 1 {
			t.Fatalf("lockout %d not started", i+1)
		}
		if got := started[0].Until.Sub(clock.Now()); got != d || started[0].Level != i+1 {
			t.Fatalf("lockout %d: %s at level %d, want %s at level %d", i+1, got, started[0].Level, d, i+1)
		}
		clock.Advance(d)
	}
	// A quiet day forgets the level.
	clock.Advance(failureMemory)
	if started := failN(t, l, 3, alice); started[0].Level != 1 {
		t.Fatalf("level after a quiet day: %d", started[0].Level)
	}
}

// TestGuessesPerDay simulates the most patient attacker, one who guesses
// again the moment each lockout ends, and compares with the stated bound.
func TestGuessesPerDay(t *testing.T) {
	l, clock := newTestLimiter(t)
	start := clock.Now()
	guesses := 0
	for clock.Now().Sub(start) < 24*time.Hour {
		r, lk, _ := l.reserve([]LockKey{alice})
		if lk != nil {
			clock.Set(lk.Until)
			continue
		}
		guesses++
		r.fail()
	}
	if bound := testPolicy.GuessesPerDay(); guesses > bound || guesses < bound-testPolicy.Failures {
		t.Fatalf("attacker got %d guesses in a day; stated bound %d", guesses, bound)
	}
	if got := testPolicy.GuessesPerDay(); got != 83 {
		t.Errorf("GuessesPerDay() = %d for the defaults, the README says 83", got)
	}
}

func TestLimiterSourceScopes(t *testing.T) {
	l, _ := newTestLimiter(t)
	// Ten addresses of one /24, one failure each: the network locks.
	var started []Lock
	for i := range 10 {
		a := netip.MustParseAddr("198.51.100." + strconv.Itoa(i+1))
		started = append(started, l.fail(sourceKeys(a, false))...)
	}
	if len(started) != 1 || started[0].Key != (LockKey{ScopeNetwork, "198.51.100.0/24"}) {
		t.Fatalf("lockouts: %+v, want the /24", started)
	}
	if l.check(sourceKeys(netip.MustParseAddr("198.51.100.200"), false)) == nil {
		t.Fatal("another address of the locked /24 let in")
	}
	if lk := l.check(sourceKeys(netip.MustParseAddr("198.51.101.1"), false)); lk != nil {
		t.Fatalf("the next /24 locked: %+v", lk)
	}
	// A trusted address takes five times trusted_failures.
	in := sourceKeys(netip.MustParseAddr("10.1.2.3"), true)
	for i := range testPolicy.TrustedFailures*trustedAddressFactor - 1 {
		if s := l.fail(in); len(s) != 0 {
			t.Fatalf("trusted address locked after %d failures", i+1)
		}
	}
	if s := l.fail(in); len(s) != 1 {
		t.Fatal("trusted address not locked at its threshold")
	}
	if was, _ := l.unlock(addressKeys(netip.MustParseAddr("10.1.2.3"))); len(was) != 1 {
		t.Fatalf("unlock --address cleared %+v", was)
	}
	if l.check(in) != nil {
		t.Fatal("still locked after unlock")
	}
}

func TestSourceKeys(t *testing.T) {
	tests := []struct{ a, b string }{
		{"10.1.2.3", "::ffff:10.1.2.3"},
		{"2001:db8::1", "2001:db8::ffff:1"}, // same /64
	}
	for _, tc := range tests {
		ka := sourceKeys(netip.MustParseAddr(tc.a), false)
		kb := sourceKeys(netip.MustParseAddr(tc.b), false)
		if ka[0] != kb[0] {
			t.Errorf("%s and %s should share a rate-limit key: %v %v", tc.a, tc.b, ka[0], kb[0])
		}
	}
	if sourceKeys(netip.MustParseAddr("2001:db8:0:1::1"), false)[0] == sourceKeys(netip.MustParseAddr("2001:db8:0:2::1"), false)[0] {
		t.Error("different /64s share a key")
	}
	if got := sourceKeys(netip.MustParseAddr("2001:db8:0:1::1"), false)[1].Name; got != "2001:db8::/48" {
		t.Errorf("IPv6 network key %q, want the /48", got)
	}
}

// TestLimiterSweepAggregates: refusals while locked are counted on the
// lockout and reported once, when it ends.
func TestLimiterSweepAggregates(t *testing.T) {
	l, clock := newTestLimiter(t)
	failN(t, l, 3, outside)
	for range 1000 {
		if _, lk, _ := l.reserve([]LockKey{outside, alice}); lk == nil {
			t.Fatal("locked address let in")
		}
	}
	if ended := l.sweep(); len(ended) != 0 {
		t.Fatalf("sweep during the lockout reported %+v", ended)
	}
	clock.Advance(5 * time.Minute)
	ended := l.sweep()
	if len(ended) != 1 || ended[0].Key != outside || ended[0].Refused != 1000 {
		t.Fatalf("sweep after the lockout: %+v", ended)
	}
	if ended := l.sweep(); len(ended) != 0 {
		t.Fatalf("second sweep reported again: %+v", ended)
	}
	clock.Advance(failureMemory)
	l.sweep()
	if n := l.st.(*memoryLimits).len(); n != 0 {
		t.Fatalf("%d entries left after everything was forgotten", n)
	}
}

// refuseWhileFull holds every place of outside's budget, has n more
// attempts refused meanwhile, then gives the places back without a verdict.
func refuseWhileFull(t *testing.T, l *limiter, n int) {
	t.Helper()
	var held []*reservation
	for range testPolicy.Failures {
		r, lk, _ := l.reserve([]LockKey{outside})
		if lk != nil {
			t.Fatalf("refused with places free: %+v", lk)
		}
		held = append(held, r)
	}
	for range n {
		if _, lk, _ := l.reserve([]LockKey{outside}); lk == nil {
			t.Fatal("an attempt got a place beyond the budget")
		}
	}
	for _, r := range held {
		r.cancel()
	}
}

// TestLimiterSweepReportsRefusalsAfterRelease: logins turned away while
// every place was held are reported by the sweep even when the places were
// given back (and the emptied entry deleted) before it ran.
func TestLimiterSweepReportsRefusalsAfterRelease(t *testing.T) {
	l, _ := newTestLimiter(t)
	refuseWhileFull(t, l, 5)
	if n := l.st.(*memoryLimits).len(); n != 0 {
		t.Fatalf("%d entries left after every place was given back", n)
	}
	ended := l.sweep()
	if len(ended) != 1 || ended[0].Key != outside || ended[0].Refused != 5 || !ended[0].Until.IsZero() {
		t.Fatalf("sweep: %+v, want the 5 refusals of %v", ended, outside)
	}
	if ended := l.sweep(); len(ended) != 0 {
		t.Fatalf("second sweep reported again: %+v", ended)
	}
	if n := l.st.(*memoryLimits).len(); n != 0 {
		t.Fatalf("%d entries left after the sweep", n)
	}
}

// TestLimiterSweepKeepsRefusals: refusal counts a sweep could not hand in
// (the store down) wait for the next one; a node that does not sweep hands
// its counts in for the one that does.
func TestLimiterSweepKeepsRefusals(t *testing.T) {
	for _, sweepHere := range []bool{true, false} {
		l, clock := newTestLimiter(t)
		sweeper, _ := newTestLimiter(t)
		sweeper.st = l.st // one shared store, two nodes
		l.sweepHere = func() bool { return sweepHere }
		refuseWhileFull(t, l, 4)
		shared := l.st
		l.st = &downLimits{}
		if ended := l.sweep(); len(ended) != 0 {
			t.Fatalf("sweepHere %v: sweep with the store down reported %+v", sweepHere, ended)
		}
		l.st = shared
		clock.Advance(downFor)
		ended := l.sweep()
		if !sweepHere {
			if len(ended) != 0 {
				t.Fatalf("a node that does not sweep reported %+v", ended)
			}
			ended = sweeper.sweep()
		}
		if len(ended) != 1 || ended[0].Key != outside || ended[0].Refused != 4 {
			t.Errorf("sweepHere %v: after the store came back the sweep reported %+v, want the 4 refusals of %v", sweepHere, ended, outside)
		}
	}
}

func TestLimiterBoundsMemory(t *testing.T) {
	l, clock := newTestLimiter(t)
	failN(t, l, 2, alice) // a user's failures must survive the flood
	for i := range maxLimiterKeys + 10 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.fail([]LockKey{{ScopeAddress, a.String()}})
	}
	if n := l.st.(*memoryLimits).len(); n > maxLimiterKeys {
		t.Fatalf("%d entries, cap %d", n, maxLimiterKeys)
	}
	clock.Advance(time.Second)
	if lk, _ := l.locks([]LockKey{alice}); len(lk) != 1 || lk[0].Failures != 2 {
		t.Fatalf("alice's failures after a flood of addresses: %+v", lk)
	}
}

// downLimits is a LimitStore that does not answer, like etcd without quorum.
type downLimits struct{ calls atomic.Int32 }

func (d *downLimits) Update([]LockKey, func([]*LimitEntry) error) error {
	d.calls.Add(1)
	return fmt.Errorf("etcd: read: %w", store.ErrUnavailable)
}

func (d *downLimits) Keys() ([]LockKey, error) {
	d.calls.Add(1)
	return nil, fmt.Errorf("etcd: list: %w", store.ErrUnavailable)
}

// TestLimiterStoreDown: without an answer from the LimitStore, a trusted
// login's check lets it through and a code login's reservation is refused
// (fail closed); after one failure the store is not asked again for downFor,
// so that every login does not wait out its timeout; then it is asked again.
func TestLimiterStoreDown(t *testing.T) {
	l, clock := newTestLimiter(t)
	st := &downLimits{}
	l.st = st
	if _, _, err := l.reserve([]LockKey{outside, alice}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("reserve with the store down = %v, want ErrUnavailable", err)
	}
	if lk := l.check([]LockKey{aliceIn}); lk != nil {
		t.Errorf("check with the store down = %+v, want a pass (trusted logins go on)", lk)
	}
	l.fail([]LockKey{aliceIn})
	l.clear([]LockKey{aliceIn})
	l.sweep()
	if n := st.calls.Load(); n != 1 {
		t.Errorf("the store was asked %d times within downFor of a failure, want once", n)
	}
	clock.Advance(downFor)
	if _, _, err := l.reserve([]LockKey{outside, alice}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("reserve = %v", err)
	}
	if n := st.calls.Load(); n != 2 {
		t.Errorf("after downFor the store was asked %d times in all, want 2", n)
	}
	// An admin's unlock is not a login: it asks all the same, and says it failed.
	if was, err := l.unlock([]LockKey{alice}); !errors.Is(err, store.ErrUnavailable) || len(was) != 0 {
		t.Errorf("unlock with the store down = %+v, %v; want ErrUnavailable", was, err)
	}
}
