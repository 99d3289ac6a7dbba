package gatekeeper

import (
	"net/netip"
	"sync"
	"time"
)

// maxLimiterKeys bounds the limiter's memory under a flood of distinct
// usernames or addresses; past it, keys with nothing to remember are dropped.
const maxLimiterKeys = 100_000

// RateLimit is the lockout policy: Failures failed logins within Window lock
// the key out for Lockout.
type RateLimit struct {
	Failures int
	Window   time.Duration
	Lockout  time.Duration
}

// limiter counts failed logins per key (a user, or a source address) and
// locks a key out once it has failed too often within a window. It is in
// memory on purpose: a restart forgets lockouts, while the one-use rule for
// codes lives in the store and survives restarts.
type limiter struct {
	now func() time.Time

	// mu protects the following.
	mu      sync.Mutex
	policy  RateLimit
	entries map[string]*limitEntry
}

type limitEntry struct {
	failures    []time.Time // within the window, oldest first
	lockedUntil time.Time
}

func newLimiter(policy RateLimit, now func() time.Time) *limiter {
	return &limiter{now: now, policy: policy, entries: map[string]*limitEntry{}}
}

// setPolicy replaces the policy (config reload); counts are kept.
func (l *limiter) setPolicy(p RateLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.policy = p
}

// lockedUntil reports until when key is locked out, or the zero time.
func (l *limiter) lockedUntil(key string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[key]
	if e == nil || !l.now().Before(e.lockedUntil) {
		return time.Time{}
	}
	return e.lockedUntil
}

// fail records a failure for key and reports whether this failure locked it.
func (l *limiter) fail(key string) (locked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.entries) >= maxLimiterKeys {
		l.pruneLocked(now)
	}
	e := l.entries[key]
	if e == nil {
		e = &limitEntry{}
		l.entries[key] = e
	}
	e.failures = append(recent(e.failures, now.Add(-l.policy.Window)), now)
	if l.policy.Failures > 0 && len(e.failures) >= l.policy.Failures && !now.Before(e.lockedUntil) {
		e.lockedUntil = now.Add(l.policy.Lockout)
		e.failures = nil
		return true
	}
	return false
}

// reset forgets key's failures and lockout (a successful login, or an admin's
// unlock). It reports whether there was anything to forget.
func (l *limiter) reset(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.entries[key]
	delete(l.entries, key)
	return ok
}

// pruneLocked drops keys that are neither locked nor have recent failures.
// l.mu must be held.
func (l *limiter) pruneLocked(now time.Time) {
	since := now.Add(-l.policy.Window)
	for k, e := range l.entries {
		if !now.Before(e.lockedUntil) && len(recent(e.failures, since)) == 0 {
			delete(l.entries, k)
		}
	}
}

// recent returns the suffix of ts (sorted oldest first) that is after since.
func recent(ts []time.Time, since time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(since) {
		i++
	}
	return ts[i:]
}

// userKey and addrKey name the two kinds of limiter keys.
func userKey(user string) string { return "user:" + user }

// addrKey limits IPv6 clients per /64: one host usually owns a whole /64, and
// per-address counting would let it rotate addresses without limit.
func addrKey(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return "addr:" + p.String()
	}
	return "addr:" + a.String()
}
