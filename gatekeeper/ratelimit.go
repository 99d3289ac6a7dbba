package gatekeeper

import (
	"crypto/rand"
	"errors"
	"fmt"
	"gatekeeper/gatekeeper/store"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
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
	// ScopeTrustedCode counts a user's wrong codes from the trusted networks
	// (a user with a device signing in at the linking portal or SSH
	// listener), and bounds guessing of that user's codes there exactly as
	// ScopeUser does from outside: the same threshold, remembered as long,
	// cleared only by a sign-in with a right code. It is apart from
	// ScopeUser so that failures from outside never keep a user from
	// replacing a phone on campus, and from ScopeTrustedUser, which forgets
	// after the window and which a password login clears.
	ScopeTrustedCode Scope = "trusted_code"
)

// codeScope reports whether scope bounds guessing of one user's codes.
func codeScope(scope Scope) bool { return scope == ScopeUser || scope == ScopeTrustedCode }

// userScope reports whether scope counts one user's failures (rather than
// a source's).
func userScope(scope Scope) bool { return codeScope(scope) || scope == ScopeTrustedUser }

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
	case ScopeUser, ScopeTrustedCode, ScopeAddress:
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
	if codeScope(scope) {
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

// LimitEntry is one counter of the limiter (one LockKey), as a LimitStore
// keeps it.
type LimitEntry struct {
	// Failures are the remembered failures, oldest first.
	Failures []time.Time `json:"failures,omitempty"`
	// Holds are the places reserved by attempts being checked, by
	// reservation id, each until a time after which it is given back
	// anyway (the node holding it may have died).
	Holds       map[string]time.Time `json:"holds,omitempty"`
	LockedUntil time.Time            `json:"locked_until,omitzero"`
	// Level counts consecutive lockouts; 0 when none is remembered.
	Level int `json:"level,omitempty"`
	// LastLockEnd is the end of the latest lockout, for the level's memory.
	LastLockEnd time.Time `json:"last_lock_end,omitzero"`
	// Refused counts the refusals during the current lockout.
	Refused int `json:"refused,omitempty"`
}

// clone returns a copy of e that shares nothing with it; nil for nil.
func (e *LimitEntry) clone() *LimitEntry {
	if e == nil {
		return nil
	}
	c := *e
	c.Failures = slices.Clone(e.Failures)
	c.Holds = maps.Clone(e.Holds)
	return &c
}

// LimitStore keeps the limiter's entries: in memory for one node
// (NewMemoryLimits), or in the store the nodes of a cluster share, so that
// lockouts and the budgets of guesses hold for the whole cluster.
type LimitStore interface {
	// Update calls fn with the entries of keys, in their order (nil for a
	// key without one; fn may put a new one in its place), and then stores
	// them as fn left them, a nil entry deleted, atomically for all keys. fn
	// may be called more than once (another node changed an entry
	// meanwhile, or the entries first given were what this node saw last)
	// and must depend on nothing but the entries. An error of fn is
	// returned unchanged and nothing is stored.
	Update(keys []LockKey, fn func(entries []*LimitEntry) error) error
	// Keys lists the keys that have an entry, for the sweep.
	Keys() ([]LockKey, error)
}

// holdFor is how long a reservation's place is held at most. An attempt
// holds it while its code is checked and the lander answers the password,
// within login_grace_time; a place still held after this belonged to a node
// that died mid-attempt, and goes back to the budget.
const holdFor = 5 * time.Minute

// limiter counts failed logins per LockKey and locks a key out once it has
// failed too often. Attempts reserve a place before their code is checked
// (reserve), so concurrent attempts cannot check more codes than the
// threshold allows. With the in-memory LimitStore a restart forgets
// lockouts, while the one-use rule for codes lives in the store and survives
// restarts; with a shared one, the counters are the cluster's.
//
// When the LimitStore fails (a cluster without quorum), reserve returns the
// error and the attempt is refused; the other operations report it to
// onError and go on: check lets the attempt through (trusted logins go on,
// the lander still checks their passwords), an unrecorded failure is lost,
// and a place that cannot be given back is given back by its hold's expiry.
type limiter struct {
	now     func() time.Time
	st      LimitStore
	onError func(op string, err error)
	// sweepHere reports whether this node sweeps ended lockouts: always with
	// the in-memory store; with a shared one, only the node elected to (one
	// scan of the cluster's counters, not one per node).
	sweepHere func() bool

	// downUntil (unix nanoseconds of l.now) is until when the limiter does
	// not ask the LimitStore after it failed to answer (see downFor).
	downUntil atomic.Int64

	// mu protects the following. It is taken after memoryLimits.mu, never
	// held across a call to st (see memoryLimits.mu).
	mu     sync.Mutex
	policy RateLimit
	// refused counts, per key, the attempts this node turned away because
	// the key was locked (or its budget full) since the last sweep. They are
	// added to the stored entry by the next sweep rather than at each
	// refusal, so that knocking on a lockout costs a shared store a read,
	// not a write.
	refused map[LockKey]int
}

func newLimiter(policy RateLimit, now func() time.Time) *limiter {
	l := &limiter{now: now, policy: policy, onError: func(string, error) {}, sweepHere: func() bool { return true },
		refused: map[LockKey]int{}}
	l.st = NewMemoryLimits(l.evictable)
	return l
}

// setPolicy replaces the policy (config reload); counts are kept.
func (l *limiter) setPolicy(p RateLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.policy = p
}

// downFor is how long after the LimitStore failed to answer (a cluster
// without quorum) the limiter stops asking it: trusted logins then pass at
// once instead of each waiting out the store's request timeout again, and
// logins that need a code are refused at once, with the same banner.
const downFor = 5 * time.Second

// errLimitsDown is reserve's error while the LimitStore is taken as down.
var errLimitsDown = fmt.Errorf("lockout counters: %w (not asked again for %v after a failure)", store.ErrUnavailable, downFor)

// down reports whether the LimitStore failed to answer less than downFor ago.
func (l *limiter) down() bool { return l.now().UnixNano() < l.downUntil.Load() }

// failed reports err of op to onError and, when the store did not answer,
// takes it as down for downFor.
func (l *limiter) failed(op string, err error) {
	if errors.Is(err, store.ErrUnavailable) {
		l.downUntil.Store(l.now().Add(downFor).UnixNano())
	}
	l.onError(op, err)
}

func (l *limiter) pol() RateLimit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.policy
}

// lockedIn returns the first of keys that is locked out at now, or nil.
func (l *limiter) lockedIn(keys []LockKey, es []*LimitEntry, now time.Time) *Lock {
	for i, k := range keys {
		e := es[i]
		if e != nil && now.Before(e.LockedUntil) {
			return lockOf(k, e, now)
		}
	}
	return nil
}

// takeRefused adds to each of locks the refusals this node counted on its
// key since the last sweep, forgetting them when forget is set (an unlock
// reports them itself).
func (l *limiter) takeRefused(locks []Lock, forget bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range locks {
		locks[i].Refused += l.refused[locks[i].Key]
		if forget {
			delete(l.refused, locks[i].Key)
		}
	}
}

// noteRefused counts a refusal by lk on this node (see limiter.refused) and
// returns lk.
func (l *limiter) noteRefused(lk *Lock) *Lock {
	if lk == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refused[lk.Key]++
	lk.Refused += l.refused[lk.Key]
	return lk
}

// check reports the first of keys that is locked out (counting the refusal
// on it), or nil. It is the gate for attempts that need no reservation:
// logins from the trusted networks, whose password guesses go to the lander
// and are limited there too.
func (l *limiter) check(keys []LockKey) *Lock {
	if l.down() {
		return nil
	}
	var lk *Lock
	err := l.st.Update(keys, func(es []*LimitEntry) error {
		lk = l.lockedIn(keys, es, l.now())
		return nil
	})
	if err != nil {
		l.failed("check", err)
		return nil
	}
	return l.noteRefused(lk)
}

// reservation is an attempt's place in the budget of each of its keys,
// taken by reserve before the code is checked. Exactly one of succeed, fail
// or cancel must end it.
type reservation struct {
	l    *limiter
	id   string
	keys []LockKey
	done bool
}

// reserve takes a place for one attempt in the budget of every key: the
// failures remembered plus the attempts in flight must stay below each
// key's threshold. When a key is locked, or its budget is full, nothing is
// reserved and the refusing key's lock is returned (a full budget reads as
// a lock until the attempts in flight are settled). An error means the
// LimitStore failed and nothing was reserved.
func (l *limiter) reserve(keys []LockKey) (*reservation, *Lock, error) {
	if l.down() {
		return nil, nil, errLimitsDown
	}
	p := l.pol()
	id := rand.Text()
	var lk *Lock
	err := l.st.Update(keys, func(es []*LimitEntry) error {
		now := l.now()
		lk = l.lockedIn(keys, es, now)
		if lk != nil {
			return nil
		}
		for i, k := range keys {
			e := es[i]
			if e == nil {
				continue
			}
			e.Failures = recent(e.Failures, now.Add(-p.memory(k.Scope)))
			if len(e.Failures)+liveHolds(e, now) >= p.threshold(k.Scope) {
				lk = lockOf(k, e, now)
				return nil
			}
		}
		for i := range keys {
			if es[i] == nil {
				es[i] = &LimitEntry{}
			}
			if es[i].Holds == nil {
				es[i].Holds = map[string]time.Time{}
			}
			es[i].Holds[id] = now.Add(holdFor)
		}
		return nil
	})
	if err != nil {
		l.failed("reserve", err)
		return nil, nil, err
	}
	if lk != nil {
		return nil, l.noteRefused(lk), nil
	}
	return &reservation{l: l, id: id, keys: keys}, nil, nil
}

// liveHolds counts e's places held at now. An expired one is dropped and
// counted as a failure at its expiry: its attempt's verdict was never
// recorded (the node died, or the store failed when it was settled), and a
// guess that cannot be shown harmless counts against the budget.
func liveHolds(e *LimitEntry, now time.Time) int {
	for id, until := range e.Holds {
		if !now.Before(until) {
			delete(e.Holds, id)
			e.Failures = append(e.Failures, until)
			slices.SortFunc(e.Failures, time.Time.Compare)
		}
	}
	return len(e.Holds)
}

// succeed ends r for a code that was right: its places are given back, and
// the user's and the address's remembered failures are cleared (a login
// with both factors proves they were the user's own typing errors). The
// failures of the keys in also are cleared in the same update, whatever
// their scope: the source address whose place went back before the lander
// answered (see release).
func (r *reservation) succeed(also ...LockKey) {
	r.end("succeed", also, nil, func(k LockKey, e *LimitEntry, _ time.Time) {
		if codeScope(k.Scope) || k.Scope == ScopeAddress || slices.Contains(also, k) {
			e.Failures = nil
		}
	})
}

// release gives back, without a verdict, the places of the keys that give
// selects, and leaves r holding the others. The places go back in the
// background, so that a shared store's round trip overlaps what the caller
// does next (the lander checking the password); wait returns once they have,
// and must be called before r is ended.
func (r *reservation) release(give func(LockKey) bool) (wait func()) {
	if r == nil || r.done {
		return func() {}
	}
	var gone, kept []LockKey
	for _, k := range r.keys {
		if give(k) {
			gone = append(gone, k)
		} else {
			kept = append(kept, k)
		}
	}
	r.keys = kept
	given := &reservation{l: r.l, id: r.id, keys: gone}
	done := make(chan struct{})
	go func() {
		defer close(done)
		given.end("release", nil, nil, nil)
	}()
	return func() { <-done }
}

// cancel ends r without a verdict (the store or the lander failed): its
// places are given back and nothing is counted.
func (r *reservation) cancel() { r.end("cancel", nil, nil, nil) }

// fail ends r as a failure counted in every one of its keys; it returns the
// lockouts this failure started.
func (r *reservation) fail() []Lock {
	var started []Lock
	p := r.l.pol()
	r.end("fail", nil, func() { started = started[:0] }, func(k LockKey, e *LimitEntry, now time.Time) {
		if lk, ok := failEntry(p, k, e, now); ok {
			started = append(started, lk)
		}
	})
	return started
}

// end gives back r's places, applying fn to each key's entry in the same
// update, and to the entries the keys in also have (keys r does not hold;
// none is created for them). The update may be tried more than once (see
// LimitStore); reset, when set, is called before each try so that fn's
// results are collected afresh.
func (r *reservation) end(op string, also []LockKey, reset func(), fn func(LockKey, *LimitEntry, time.Time)) {
	if r == nil || r.done {
		return
	}
	r.done = true
	keys := slices.Clip(r.keys)
	for _, k := range also {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	l := r.l
	if l.down() {
		return // the hold expires, and counts, on its own
	}
	err := l.st.Update(keys, func(es []*LimitEntry) error {
		if reset != nil {
			reset()
		}
		now := l.now()
		for i, k := range keys {
			if i >= len(r.keys) {
				if es[i] != nil && fn != nil {
					fn(k, es[i], now)
				}
			} else {
				if es[i] == nil {
					es[i] = &LimitEntry{}
				}
				delete(es[i].Holds, r.id)
				if fn != nil {
					fn(k, es[i], now)
				}
			}
			es[i] = dropEmpty(es[i])
		}
		return nil
	})
	if err != nil {
		l.failed(op, err)
	}
}

// fail counts one failure, without a reservation, in every key (logins from
// the trusted networks, and failures found after a code was accepted, such
// as a wrong password). It returns the lockouts it started.
func (l *limiter) fail(keys []LockKey) []Lock {
	if l.down() {
		return nil
	}
	p := l.pol()
	var started []Lock
	err := l.st.Update(keys, func(es []*LimitEntry) error {
		started = started[:0]
		now := l.now()
		for i, k := range keys {
			if es[i] == nil {
				es[i] = &LimitEntry{}
			}
			if lk, ok := failEntry(p, k, es[i], now); ok {
				started = append(started, lk)
			}
		}
		return nil
	})
	if err != nil {
		l.failed("fail", err)
		return nil
	}
	return started
}

// failEntry records a failure of k in e and starts a lockout when it
// reaches the threshold.
func failEntry(p RateLimit, k LockKey, e *LimitEntry, now time.Time) (Lock, bool) {
	if now.Before(e.LockedUntil) {
		// Settled while a lockout began (say, a wrong password after a
		// right code): the lockout covers it, and counting it would leave
		// a full budget behind when the lockout ends.
		return Lock{}, false
	}
	e.Failures = append(recent(e.Failures, now.Add(-p.memory(k.Scope))), now)
	if len(e.Failures) < p.threshold(k.Scope) {
		return Lock{}, false
	}
	if e.Level > 0 && now.Sub(e.LastLockEnd) >= failureMemory {
		e.Level = 0 // a quiet day forgets earlier lockouts
	}
	e.Level++
	e.LockedUntil = now.Add(p.lockoutFor(e.Level))
	e.LastLockEnd = e.LockedUntil
	e.Failures = nil
	return *lockOf(k, e, now), true
}

// clear forgets keys' failures (not their lockouts): a login that proved
// both factors, or a trusted login that proved the password.
func (l *limiter) clear(keys []LockKey) {
	if l.down() {
		return
	}
	err := l.st.Update(keys, func(es []*LimitEntry) error {
		for i, e := range es {
			if e != nil {
				e.Failures = nil
				es[i] = dropEmpty(e)
			}
		}
		return nil
	})
	if err != nil {
		l.failed("clear", err)
	}
}

// unlock forgets everything about keys: failures, lockouts and levels (an
// admin's unlock). It returns the lockouts that were in force.
func (l *limiter) unlock(keys []LockKey) ([]Lock, error) {
	var was []Lock
	err := l.st.Update(keys, func(es []*LimitEntry) error {
		was = was[:0]
		now := l.now()
		for i, k := range keys {
			e := es[i]
			if e == nil {
				continue
			}
			if now.Before(e.LockedUntil) || len(e.Failures) > 0 {
				was = append(was, *lockOf(k, e, now))
			}
			if liveHolds(e, now) > 0 {
				// Attempts being checked still give their places back to it.
				es[i] = &LimitEntry{Holds: e.Holds}
				continue
			}
			es[i] = nil
		}
		return nil
	})
	if err == nil {
		l.takeRefused(was, true)
	}
	return was, err
}

// locks returns what the limiter holds on keys: lockouts in force and
// counted failures, for admin show.
func (l *limiter) locks(keys []LockKey) ([]Lock, error) {
	p := l.pol()
	var out []Lock
	err := l.st.Update(keys, func(es []*LimitEntry) error {
		out = out[:0]
		now := l.now()
		for i, k := range keys {
			e := es[i]
			if e == nil {
				continue
			}
			e.Failures = recent(e.Failures, now.Add(-p.memory(k.Scope)))
			if now.Before(e.LockedUntil) || len(e.Failures) > 0 {
				out = append(out, *lockOf(k, e, now))
			}
		}
		return nil
	})
	l.takeRefused(out, false)
	return out, err
}

// sweep adds this node's refusal counts to the stored entries and reports
// the lockouts that have ended since the last sweep, with the logins they
// turned away; it drops entries that hold nothing any more. The caller
// audits what it reports: one event per lockout, so that a locked-out
// source cannot grow the audit log. With a shared LimitStore only the node
// for which sweepHere is true looks for ended lockouts (the others only
// hand in their counts); each ended lockout is reported by the one update
// that took effect.
func (l *limiter) sweep() []LockEnded {
	if l.down() {
		return nil
	}
	l.mu.Lock()
	counts := l.refused
	l.refused = map[LockKey]int{}
	l.mu.Unlock()
	// add hands in this node's count for k, to an entry made for it when
	// there is none: the places held while attempts were refused may have
	// been given back since, and an entry left holding nothing is deleted
	// at once (see dropEmpty), but the refusals are still to be reported.
	add := func(k LockKey, es []*LimitEntry) {
		if n := counts[k]; n > 0 {
			if es[0] == nil {
				es[0] = &LimitEntry{}
			}
			es[0].Refused += n
		}
	}
	// keep puts the counts not handed in back, for the next sweep: a store
	// that fails now must not make the refusals vanish from the audit log.
	// A count is deleted from counts once its update went through.
	keep := func() {
		l.mu.Lock()
		for k, n := range counts {
			l.refused[k] += n
		}
		l.mu.Unlock()
	}
	if !l.sweepHere() {
		for k := range counts {
			if err := l.st.Update([]LockKey{k}, func(es []*LimitEntry) error { add(k, es); return nil }); err != nil {
				l.failed("sweep", err)
				keep()
				return nil
			}
			delete(counts, k)
		}
		return nil
	}
	keys, err := l.st.Keys()
	if err != nil {
		l.failed("sweep", err)
		keep()
		return nil
	}
	stored := make(map[LockKey]bool, len(keys))
	for _, k := range keys {
		stored[k] = true
	}
	for k := range counts {
		if !stored[k] {
			keys = append(keys, k)
		}
	}
	p := l.pol()
	var ended []LockEnded
	for _, k := range keys {
		var got *LockEnded
		err := l.st.Update([]LockKey{k}, func(es []*LimitEntry) error {
			got = nil
			add(k, es)
			e := es[0]
			now := l.now()
			if e == nil || now.Before(e.LockedUntil) {
				return nil
			}
			if !e.LockedUntil.IsZero() || e.Refused > 0 {
				got = &LockEnded{Key: k, Until: e.LockedUntil, Level: e.Level, Refused: e.Refused}
				e.LockedUntil, e.Refused = time.Time{}, 0
			}
			if idle(p, k, e, now) {
				es[0] = nil
			}
			return nil
		})
		if err != nil {
			l.failed("sweep", err)
			keep()
			return ended
		}
		delete(counts, k)
		if got != nil {
			ended = append(ended, *got)
		}
	}
	slices.SortFunc(ended, func(a, b LockEnded) int { return a.Until.Compare(b.Until) })
	return ended
}

// dropEmpty returns e, or nil when e holds nothing at all: then the entry is
// deleted at once rather than kept empty for the sweep to delete, which on a
// shared store would be one more write per key and login.
func dropEmpty(e *LimitEntry) *LimitEntry {
	if e == nil || len(e.Failures) > 0 || len(e.Holds) > 0 || !e.LockedUntil.IsZero() ||
		e.Level != 0 || !e.LastLockEnd.IsZero() || e.Refused != 0 {
		return e
	}
	return nil
}

// idle reports whether e holds nothing that a decision depends on.
func idle(p RateLimit, k LockKey, e *LimitEntry, now time.Time) bool {
	return liveHolds(e, now) == 0 && !now.Before(e.LockedUntil) &&
		len(recent(e.Failures, now.Add(-p.memory(k.Scope)))) == 0 &&
		(e.Level == 0 || now.Sub(e.LastLockEnd) >= failureMemory)
}

// evictable tells the in-memory LimitStore which entries may go when it is
// full: in the first pass idle ones, in the second entries that only
// remember a lockout level or a few failures of a source; never a lockout in
// force, an attempt in flight, or a user's failures (which bound guessing of
// that user's codes, and which a flood of addresses must not be able to
// flush).
func (l *limiter) evictable(k LockKey, e *LimitEntry, pass int) bool {
	now := l.now()
	if pass == 0 {
		return idle(l.pol(), k, e, now)
	}
	return !codeScope(k.Scope) && liveHolds(e, now) == 0 && !now.Before(e.LockedUntil)
}

// lockOf describes k's state at now.
func lockOf(k LockKey, e *LimitEntry, now time.Time) *Lock {
	lk := &Lock{Key: k, Level: e.Level, Failures: len(e.Failures), Refused: e.Refused}
	if now.Before(e.LockedUntil) {
		lk.Until = e.LockedUntil
	}
	return lk
}

// memoryLimits is the LimitStore of one node: a map, bounded by
// maxLimiterKeys.
type memoryLimits struct {
	evictable func(k LockKey, e *LimitEntry, pass int) bool

	// mu protects entries. Lock order: mu before limiter.mu (makeRoom calls
	// evictable, which reads the policy under limiter.mu), so the limiter
	// never calls its LimitStore while it holds its own mu.
	mu      sync.Mutex
	entries map[LockKey]*LimitEntry
}

// NewMemoryLimits returns an in-memory LimitStore holding at most
// maxLimiterKeys entries; when a new one would pass that, entries for which
// evictable says so go, first those of pass 0, then those of pass 1.
func NewMemoryLimits(evictable func(k LockKey, e *LimitEntry, pass int) bool) LimitStore {
	return &memoryLimits{evictable: evictable, entries: map[LockKey]*LimitEntry{}}
}

// Update runs fn once, under the lock, on copies of the entries, so that an
// error of fn leaves them as they were.
func (m *memoryLimits) Update(keys []LockKey, fn func([]*LimitEntry) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	es := make([]*LimitEntry, len(keys))
	for i, k := range keys {
		es[i] = m.entries[k].clone()
	}
	if err := fn(es); err != nil {
		return err
	}
	added := 0
	for i, k := range keys {
		if es[i] != nil && m.entries[k] == nil {
			added++
		}
	}
	m.makeRoom(added, keys)
	for i, k := range keys {
		if es[i] == nil {
			delete(m.entries, k)
		} else {
			m.entries[k] = es[i]
		}
	}
	return nil
}

// makeRoom keeps the map within maxLimiterKeys when n entries are added,
// sparing the keys being written. m.mu must be held.
func (m *memoryLimits) makeRoom(n int, keep []LockKey) {
	for pass := range 2 {
		if len(m.entries)+n <= maxLimiterKeys {
			return
		}
		for k, e := range m.entries {
			if len(m.entries)+n <= maxLimiterKeys && pass == 1 {
				return
			}
			if !slices.Contains(keep, k) && m.evictable(k, e, pass) {
				delete(m.entries, k)
			}
		}
	}
}

// Keys lists the keys with an entry.
func (m *memoryLimits) Keys() ([]LockKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]LockKey, 0, len(m.entries))
	for k := range m.entries {
		out = append(out, k)
	}
	return out, nil
}

// len is the number of entries, for tests.
func (m *memoryLimits) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
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

// userKeys are every key that counts user's failures, for admin show and
// unlock.
func userKeys(user string) []LockKey {
	return []LockKey{userKey(user, false), userKey(user, true), codeKey(user, true)}
}

// codeKey is the key that bounds the codes checked for user from outside
// (or, trusted, from the trusted networks).
func codeKey(user string, trusted bool) LockKey {
	if trusted {
		return LockKey{ScopeTrustedCode, user}
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
