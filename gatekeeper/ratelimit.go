package gatekeeper

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Scope names what a lockout applies to. Outside and trusted logins are
// counted in separate scopes, so that failures from the internet can never
// lock anyone out of logins from the trusted networks.
type Scope string

// The lockout scopes.
const (
	// ScopeUser counts a user's failed logins from outside the trusted
	// networks, from all sources together: it is what bounds guessing of
	// that user's codes. Its failures are remembered for failureMemory (not
	// only for the window) and cleared by a login with a code, so that
	// pacing guesses below the threshold gains nothing.
	ScopeUser Scope = "user"
	// ScopeAddress counts failures from one outside address (IPv6: its /64).
	ScopeAddress Scope = "address"
	// ScopeNetwork counts failures from one outside /24 (IPv6: /48), with a
	// higher threshold.
	ScopeNetwork Scope = "network"
	// ScopeTrustedUser counts a user's failed logins from the trusted
	// networks (wrong passwords).
	ScopeTrustedUser Scope = "trusted_user"
	// ScopeTrustedAddress counts failures from one trusted source address.
	ScopeTrustedAddress Scope = "trusted_address"
)

const (
	// failureMemory is how long ScopeUser remembers a failure, and how long
	// any scope remembers its lockout level: a lockout that starts within
	// this time after the previous one ended lasts twice as long.
	failureMemory = 24 * time.Hour
	// trustedAddressFactor multiplies trusted_failures for one trusted
	// source address: a campus NAT or VPN concentrator carries many users.
	trustedAddressFactor = 5
	// maxLimiterKeys bounds the limiter's memory under a flood of distinct
	// addresses; past it, entries that hold nothing a lockout depends on are
	// dropped first (see makeRoom).
	maxLimiterKeys = 100_000
)

// RateLimit is the lockout policy (config key rate_limit).
type RateLimit struct {
	// Failures lock out a user (ScopeUser) and an outside address.
	Failures int
	// Window is the period in which failures are counted, in every scope
	// but ScopeUser.
	Window time.Duration
	// Lockout is the first lockout's length; consecutive ones double ...
	Lockout time.Duration
	// MaxLockout ... up to this.
	MaxLockout time.Duration
	// NetworkFailures lock out an outside /24 (IPv6 /48).
	NetworkFailures int
	// TrustedFailures lock out a user's trusted logins, and
	// trustedAddressFactor times as many a trusted source address.
	TrustedFailures int
}

// threshold is how many failures (and attempts in flight) lock scope out.
func (p RateLimit) threshold(scope Scope) int {
	switch scope {
	case ScopeUser, ScopeAddress:
		return p.Failures
	case ScopeNetwork:
		return max(p.NetworkFailures, p.Failures)
	case ScopeTrustedUser:
		return p.TrustedFailures
	case ScopeTrustedAddress:
		return p.TrustedFailures * trustedAddressFactor
	}
	return p.Failures
}

// memory is how long a failure counts in scope.
func (p RateLimit) memory(scope Scope) time.Duration {
	if scope == ScopeUser {
		return failureMemory
	}
	return p.Window
}

// lockoutFor is the length of a lockout at level (1 for the first).
func (p RateLimit) lockoutFor(level int) time.Duration {
	d := p.Lockout
	for i := 1; i < level && d < p.MaxLockout; i++ {
		d *= 2
	}
	return min(d, max(p.MaxLockout, p.Lockout))
}

// GuessesPerDay is the most codes of one user that can be checked in 24
// hours from outside the trusted networks, from every source together, when
// the user does not log in themselves: every lockout is preceded by at most
// Failures checked codes, lockouts follow each other with the doubling
// lengths, and after the last one fewer than Failures more fit. Each of the
// user's own logins with a code clears the count and so adds at most
// Failures-1 to it. It is the bound the README states.
func (p RateLimit) GuessesPerDay() int {
	if p.Failures <= 0 || p.Lockout <= 0 {
		return 0
	}
	var elapsed time.Duration
	guesses := 0
	for level := 1; elapsed < 24*time.Hour; level++ {
		guesses += p.Failures // the guesses that start this lockout
		elapsed += p.lockoutFor(level)
	}
	return guesses + p.Failures - 1
}

// LockKey names one counter of the limiter: a scope and who in it (a user
// name, or an address or network in canonical form).
type LockKey struct {
	Scope Scope
	Name  string
}

func (k LockKey) String() string { return string(k.Scope) + " " + k.Name }

// Lock is a lockout in force, as admin show reports it.
type Lock struct {
	Key   LockKey
	Until time.Time
	// Level is the number of consecutive lockouts (1 for the first); the
	// next one lasts twice as long, up to max_lockout.
	Level int
	// Failures counted now (in ScopeUser, since the last login with a code).
	Failures int
	// Refused is how many logins were turned away by this lockout so far.
	Refused int
}

// LockEnded is a lockout that ran out, with the refusals it caused: the one
// audit event a locked-out source produces, however many times it knocks.
type LockEnded struct {
	Key     LockKey
	Until   time.Time
	Level   int
	Refused int
}

// limiter counts failed logins per LockKey and locks a key out once it has
// failed too often. Attempts reserve a place before their code is checked
// (reserve), so concurrent attempts cannot check more codes than the
// threshold allows. It is in memory on purpose: a restart forgets lockouts,
// while the one-use rule for codes lives in the store and survives restarts.
type limiter struct {
	now func() time.Time

	// mu protects the following.
	mu      sync.Mutex
	policy  RateLimit
	entries map[LockKey]*limitEntry
}

type limitEntry struct {
	failures    []time.Time // remembered failures, oldest first
	inFlight    int         // reserved places of attempts being checked
	lockedUntil time.Time
	level       int       // consecutive lockouts; 0 when none is remembered
	lastLockEnd time.Time // end of the latest lockout, for the level's memory
	refused     int       // refusals during the current lockout
}

func newLimiter(policy RateLimit, now func() time.Time) *limiter {
	return &limiter{now: now, policy: policy, entries: map[LockKey]*limitEntry{}}
}

// setPolicy replaces the policy (config reload); counts are kept.
func (l *limiter) setPolicy(p RateLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.policy = p
}

// lockedLocked returns the first of keys that is locked out at now, or nil.
// A refusal is counted on it. l.mu must be held.
func (l *limiter) lockedLocked(keys []LockKey, now time.Time) *Lock {
	for _, k := range keys {
		e := l.entries[k]
		if e != nil && now.Before(e.lockedUntil) {
			e.refused++
			return l.lockOf(k, e, now)
		}
	}
	return nil
}

// check reports the first of keys that is locked out (counting the refusal
// on it), or nil. It is the gate for attempts that need no reservation:
// logins from the trusted networks, whose password guesses go to the lander
// and are limited there too.
func (l *limiter) check(keys []LockKey) *Lock {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lockedLocked(keys, l.now())
}

// reservation is an attempt's place in the budget of each of its keys,
// taken by reserve before the code is checked. Exactly one of succeed, fail
// or cancel must end it.
type reservation struct {
	l    *limiter
	keys []LockKey
	done bool
}

// reserve takes a place for one attempt in the budget of every key: the
// failures remembered plus the attempts in flight must stay below each
// key's threshold. When a key is locked, or its budget is full, nothing is
// reserved and the refusing key's lock is returned (a full budget reads as
// a lock until the attempts in flight are settled).
func (l *limiter) reserve(keys []LockKey) (*reservation, *Lock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if lk := l.lockedLocked(keys, now); lk != nil {
		return nil, lk
	}
	for _, k := range keys {
		e := l.entries[k]
		if e == nil {
			continue
		}
		e.failures = recent(e.failures, now.Add(-l.policy.memory(k.Scope)))
		if len(e.failures)+e.inFlight >= l.policy.threshold(k.Scope) {
			e.refused++
			return nil, l.lockOf(k, e, now)
		}
	}
	l.makeRoom(now, len(keys))
	for _, k := range keys {
		l.entry(k).inFlight++
	}
	return &reservation{l: l, keys: keys}, nil
}

// succeed ends r for a code that was right: its places are given back, and
// the user's and the address's remembered failures are cleared (a login
// with both factors proves they were the user's own typing errors).
func (r *reservation) succeed() {
	r.end(func(k LockKey, e *limitEntry, _ time.Time) []LockEnded {
		if k.Scope == ScopeUser || k.Scope == ScopeAddress {
			e.failures = nil
		}
		return nil
	})
}

// release gives back, without a verdict, the places of the keys that give
// selects, and leaves r holding the others.
func (r *reservation) release(give func(LockKey) bool) {
	if r == nil || r.done {
		return
	}
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := r.keys[:0:0]
	for _, k := range r.keys {
		if give(k) {
			l.entry(k).inFlight--
			continue
		}
		kept = append(kept, k)
	}
	r.keys = kept
}

// cancel ends r without a verdict (the store or the lander failed): its
// places are given back and nothing is counted.
func (r *reservation) cancel() { r.end(nil) }

// fail ends r as a failure counted in every one of its keys; it returns the
// lockouts this failure started.
func (r *reservation) fail() []Lock {
	var started []Lock
	r.end(func(k LockKey, e *limitEntry, now time.Time) []LockEnded {
		if lk, ok := r.l.failLocked(k, e, now); ok {
			started = append(started, lk)
		}
		return nil
	})
	return started
}

func (r *reservation) end(fn func(LockKey, *limitEntry, time.Time) []LockEnded) {
	if r == nil || r.done {
		return
	}
	r.done = true
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range r.keys {
		e := l.entry(k)
		e.inFlight--
		if fn != nil {
			fn(k, e, now)
		}
	}
}

// fail counts one failure, without a reservation, in every key (logins from
// the trusted networks, and failures found after a code was accepted, such
// as a wrong password). It returns the lockouts it started.
func (l *limiter) fail(keys []LockKey) []Lock {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.makeRoom(now, len(keys))
	var started []Lock
	for _, k := range keys {
		if lk, ok := l.failLocked(k, l.entry(k), now); ok {
			started = append(started, lk)
		}
	}
	return started
}

// failLocked records a failure of k and starts a lockout when it reaches
// the threshold. l.mu must be held.
func (l *limiter) failLocked(k LockKey, e *limitEntry, now time.Time) (Lock, bool) {
	if now.Before(e.lockedUntil) {
		// Settled while a lockout began (say, a wrong password after a
		// right code): the lockout covers it, and counting it would leave
		// a full budget behind when the lockout ends.
		return Lock{}, false
	}
	e.failures = append(recent(e.failures, now.Add(-l.policy.memory(k.Scope))), now)
	if len(e.failures) < l.policy.threshold(k.Scope) {
		return Lock{}, false
	}
	if e.level > 0 && now.Sub(e.lastLockEnd) >= failureMemory {
		e.level = 0 // a quiet day forgets earlier lockouts
	}
	e.level++
	e.lockedUntil = now.Add(l.policy.lockoutFor(e.level))
	e.lastLockEnd = e.lockedUntil
	e.failures = nil
	return *l.lockOf(k, e, now), true
}

// clear forgets keys' failures (not their lockouts): a login that proved
// both factors, or a trusted login that proved the password.
func (l *limiter) clear(keys []LockKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if e := l.entries[k]; e != nil {
			e.failures = nil
		}
	}
}

// unlock forgets everything about keys: failures, lockouts and levels (an
// admin's unlock). It returns the lockouts that were in force.
func (l *limiter) unlock(keys []LockKey) []Lock {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var was []Lock
	for _, k := range keys {
		e := l.entries[k]
		if e == nil {
			continue
		}
		if now.Before(e.lockedUntil) || len(e.failures) > 0 {
			was = append(was, *l.lockOf(k, e, now))
		}
		if e.inFlight > 0 {
			// Attempts being checked still give their places back to it.
			*e = limitEntry{inFlight: e.inFlight}
			continue
		}
		delete(l.entries, k)
	}
	return was
}

// locks returns what the limiter holds on keys: lockouts in force and
// counted failures, for admin show.
func (l *limiter) locks(keys []LockKey) []Lock {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var out []Lock
	for _, k := range keys {
		e := l.entries[k]
		if e == nil {
			continue
		}
		e.failures = recent(e.failures, now.Add(-l.policy.memory(k.Scope)))
		if now.Before(e.lockedUntil) || len(e.failures) > 0 {
			out = append(out, *l.lockOf(k, e, now))
		}
	}
	return out
}

// sweep reports the lockouts that have ended since the last sweep, and the
// refusals of attempts turned away while a budget was full of attempts in
// flight; it drops entries that hold nothing any more. The caller audits
// what it reports: one event per lockout, with the number of logins it
// turned away, so that a locked-out source cannot grow the audit log.
func (l *limiter) sweep() []LockEnded {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var ended []LockEnded
	for k, e := range l.entries {
		if now.Before(e.lockedUntil) {
			continue
		}
		if !e.lockedUntil.IsZero() || e.refused > 0 {
			ended = append(ended, LockEnded{Key: k, Until: e.lockedUntil, Level: e.level, Refused: e.refused})
			e.lockedUntil, e.refused = time.Time{}, 0
		}
		if l.idle(k, e, now) {
			delete(l.entries, k)
		}
	}
	slices.SortFunc(ended, func(a, b LockEnded) int { return a.Until.Compare(b.Until) })
	return ended
}

// idle reports whether e holds nothing that a decision depends on.
func (l *limiter) idle(k LockKey, e *limitEntry, now time.Time) bool {
	return e.inFlight == 0 && !now.Before(e.lockedUntil) &&
		len(recent(e.failures, now.Add(-l.policy.memory(k.Scope)))) == 0 &&
		(e.level == 0 || now.Sub(e.lastLockEnd) >= failureMemory)
}

// makeRoom keeps the map within maxLimiterKeys when n entries may be added:
// first idle entries go, then entries that only remember a lockout level or
// a few failures of a source; never a lockout in force, an attempt in
// flight, or a user's failures (which bound guessing of that user's codes,
// and which a flood of addresses must not be able to flush). l.mu must be
// held.
func (l *limiter) makeRoom(now time.Time, n int) {
	if len(l.entries)+n <= maxLimiterKeys {
		return
	}
	for k, e := range l.entries {
		if l.idle(k, e, now) {
			delete(l.entries, k)
		}
	}
	for k, e := range l.entries {
		if len(l.entries)+n <= maxLimiterKeys {
			return
		}
		if k.Scope != ScopeUser && e.inFlight == 0 && !now.Before(e.lockedUntil) {
			delete(l.entries, k)
		}
	}
}

// entry returns k's entry, creating it. l.mu must be held.
func (l *limiter) entry(k LockKey) *limitEntry {
	e := l.entries[k]
	if e == nil {
		e = &limitEntry{}
		l.entries[k] = e
	}
	return e
}

// lockOf describes k's state at now. l.mu must be held.
func (l *limiter) lockOf(k LockKey, e *limitEntry, now time.Time) *Lock {
	lk := &Lock{Key: k, Level: e.level, Failures: len(e.failures), Refused: e.refused}
	if now.Before(e.lockedUntil) {
		lk.Until = e.lockedUntil
	}
	return lk
}

// recent returns the suffix of ts (sorted oldest first) that is after since.
func recent(ts []time.Time, since time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(since) {
		i++
	}
	return ts[i:]
}

// sourceKeys are the keys an attempt from remote counts against: for an
// outside address its /32 (IPv6 /64: one host usually owns a whole /64, and
// per-address counting would let it rotate addresses without limit) and its
// /24 (/48); for a trusted one, the address alone.
func sourceKeys(remote netip.Addr, trusted bool) []LockKey {
	remote = remote.Unmap()
	if trusted {
		return []LockKey{{ScopeTrustedAddress, remote.String()}}
	}
	return []LockKey{{ScopeAddress, addressName(remote)}, {ScopeNetwork, networkName(remote)}}
}

// userKey is the key of user's logins from outside (or, trusted, from the
// trusted networks).
func userKey(user string, trusted bool) LockKey {
	if trusted {
		return LockKey{ScopeTrustedUser, user}
	}
	return LockKey{ScopeUser, user}
}

// addressName is a's /32 (IPv6 /64) in canonical form.
func addressName(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// networkName is a's /24 (IPv6 /48) in canonical form.
func networkName(a netip.Addr) string {
	bits := 24
	if a.Is6() {
		bits = 48
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

// addressKeys are every key that names addr, in every scope, for admin
// unlock --address.
func addressKeys(addr netip.Addr) []LockKey {
	addr = addr.Unmap()
	return []LockKey{
		{ScopeAddress, addressName(addr)},
		{ScopeNetwork, networkName(addr)},
		{ScopeTrustedAddress, addr.String()},
	}
}

// describe is a lock for logs and audit details: "user alice until
// 2026-01-01T10:05:00Z (level 2)".
func (lk Lock) describe() string {
	return fmt.Sprintf("%s until %s (level %d)", lk.Key, lk.Until.UTC().Format(time.RFC3339), lk.Level)
}
