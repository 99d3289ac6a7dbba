package portal

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	"gatekeeper/enroll"
)

// cookieName is the session cookie's name.
const cookieName = "gk_session"

// sweepEvery is how often, at most, creating a session also drops every idle one. Between sweeps
// an idle session is still refused when it is looked up; the sweep only frees its memory (and any
// secret it held) without a goroutine of its own.
const sweepEvery = time.Minute

// Errors of create.
var (
	// errBusy is returned when every session slot is taken by a signed-in user.
	errBusy = errors.New("portal: too many sessions")
	// errUserSessions is returned when the user already has the most signed-in sessions
	// allowed (MaxSessionsPerUser).
	errUserSessions = errors.New("portal: too many sessions for this user")
)

// session is one browser's server-side state. The browser holds only the random id.
type session struct {
	csrf string
	// user is "" until the sign-in was accepted.
	user string
	// twoFactor is set when the sign-in proved both factors (password and a code from the app
	// or a recovery code). Only such a session may change the user's credentials once a device
	// is linked; a session signed in with the password alone (a user without a device) may
	// link a first device and nothing more.
	twoFactor bool
	// ticket is the one-time ticket accepted at sign-in from outside the allowed networks; it is
	// used up (and cleared) when a link starts.
	ticket string
	// created bounds the session's whole life (MaxLifetime), lastSeen its idle time.
	created, lastSeen time.Time
	// link is the new secret between the POST that started the link and the one page that shows
	// it; taking it for that page removes it.
	link *enroll.Link
	// binding is what lets this session, and no other, confirm the link it started; it is kept
	// until the link is confirmed, voided, expired or found replaced.
	binding enroll.Binding
	// replacing is set when link and binding belong to a replacement of the active device
	// (Replace my phone) rather than to a first link.
	replacing bool
	// endSSH is the replacement's "also end my open SSH sessions" box, kept until it is confirmed.
	endSSH bool
	// replaceUntil is when the replacement this session started expires (the link's ExpiresAt,
	// kept after the secret is gone): the code form is offered until then.
	replaceUntil time.Time
	// codes are the recovery codes between the confirmation and the one page that shows them;
	// codesFor names that page (codesLink, codesReplace, codesRenew), so that no other shows them.
	codes    []string
	codesFor string
	// codesNote is said on that page too: which other sessions the change ended.
	codesNote string
	// flash is a notice for the next account page (what a key change did), shown once.
	flash string
	// rotate is set when the QR page was shown: the next page request gets a new session id
	// and tells the browser to drop its cache, so that Back cannot bring the QR page back.
	rotate bool
}

// view is the part of a session a handler may read outside the store's lock: never the secret
// nor the binding, only whether there is one.
type view struct {
	id, csrf, user, ticket string
	twoFactor, bound       bool
	// replacing: the session's binding is for a replacement, which expires at replaceUntil.
	replacing    bool
	replaceUntil time.Time
}

// sessionStore holds the sessions in memory, keyed by the SHA-256 of their id so that a lookup
// takes no time that depends on how much of a guessed id is right.
type sessionStore struct {
	mu        sync.Mutex
	m         map[[sha256.Size]byte]*session
	limit     int           // sessions in all
	perUser   int           // signed-in sessions per user
	idle      time.Duration // since the last request
	lifetime  time.Duration // since the session began, however busy
	lastSweep time.Time
}

func newSessionStore(limit, perUser int, idle, lifetime time.Duration) *sessionStore {
	return &sessionStore{m: make(map[[sha256.Size]byte]*session), limit: limit, perUser: perUser,
		idle: idle, lifetime: lifetime}
}

// over reports whether ss has ended at now: idle too long, or older than the lifetime.
func (st *sessionStore) over(ss *session, now time.Time) bool {
	return now.Sub(ss.lastSeen) >= st.idle || now.Sub(ss.created) >= st.lifetime
}

func sessionKey(id string) [sha256.Size]byte { return sha256.Sum256([]byte(id)) }

// newToken returns 128 random bits as text, for session ids and CSRF tokens.
func newToken() string { return rand.Text() }

// live returns the session with the given id if it exists and has not ended, and marks it used
// at now. The caller holds st.mu.
func (st *sessionStore) live(id string, now time.Time) *session {
	if id == "" {
		return nil
	}
	k := sessionKey(id)
	ss := st.m[k]
	if ss == nil {
		return nil
	}
	if st.over(ss, now) {
		delete(st.m, k)
		return nil
	}
	ss.lastSeen = now
	return ss
}

// viewOf is the view of ss under id. The caller holds st.mu.
func viewOf(id string, ss *session) view {
	return view{id: id, csrf: ss.csrf, user: ss.user, ticket: ss.ticket, twoFactor: ss.twoFactor,
		bound: ss.binding != "", replacing: ss.replacing && ss.binding != "", replaceUntil: ss.replaceUntil}
}

// get returns a view of a live session.
func (st *sessionStore) get(id string, now time.Time) (view, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	ss := st.live(id, now)
	if ss == nil {
		return view{}, false
	}
	return viewOf(id, ss), true
}

// update runs fn on a live session under the store's lock; it reports false (without calling
// fn) when there is no such session.
func (st *sessionStore) update(id string, now time.Time, fn func(*session)) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	ss := st.live(id, now)
	if ss == nil {
		return false
	}
	fn(ss)
	return true
}

// signedInAs is what an accepted sign-in gives a new session.
type signedInAs struct {
	user      string
	ticket    string // the ticket accepted from outside the allowed networks, if any
	twoFactor bool   // both factors were proved
}

// create starts a new session for who (the zero signedInAs for a visitor who has not signed in)
// with a fresh id and CSRF token. A user who already has perUser live sessions gets errUserSessions. When the
// store is full it drops ended sessions, then the least recently used session that has not
// signed in; if all are signed in it returns errBusy.
func (st *sessionStore) create(now time.Time, who signedInAs) (view, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.m) >= st.limit || now.Sub(st.lastSweep) >= sweepEvery {
		st.sweep(now)
	}
	if who.user != "" {
		n := 0
		for _, ss := range st.m {
			if ss.user == who.user && !st.over(ss, now) {
				n++
			}
		}
		if n >= st.perUser {
			return view{}, errUserSessions
		}
	}
	if len(st.m) >= st.limit && !st.evictVisitor() {
		return view{}, errBusy
	}
	id := newToken()
	ss := &session{csrf: newToken(), user: who.user, ticket: who.ticket, twoFactor: who.twoFactor,
		created: now, lastSeen: now}
	st.m[sessionKey(id)] = ss
	return viewOf(id, ss), nil
}

// sweep drops every session that has ended. The caller holds st.mu.
func (st *sessionStore) sweep(now time.Time) {
	st.lastSweep = now
	for k, ss := range st.m {
		if st.over(ss, now) {
			delete(st.m, k)
		}
	}
}

// rotateDue gives a live session that showed the QR page (rotate set) a new id, and reports it;
// the old id stops working at once. Other sessions are left alone (ok false).
func (st *sessionStore) rotateDue(id string, now time.Time) (newID string, ok bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	ss := st.live(id, now)
	if ss == nil || !ss.rotate {
		return "", false
	}
	ss.rotate = false
	delete(st.m, sessionKey(id))
	newID = newToken()
	st.m[sessionKey(newID)] = ss
	return newID, true
}

// endUser ends every session of user, and with them any secret, binding or recovery codes
// they hold; it returns how many had not ended already.
func (st *sessionStore) endUser(user string, now time.Time) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for k, ss := range st.m {
		if ss.user == user {
			if !st.over(ss, now) {
				n++
			}
			delete(st.m, k)
		}
	}
	return n
}

// endUserExcept ends every session of user but keep (the one that just changed the user's
// credentials), and returns how many had not ended already.
func (st *sessionStore) endUserExcept(user, keep string, now time.Time) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	kept := sessionKey(keep)
	n := 0
	for k, ss := range st.m {
		if ss.user == user && k != kept {
			if !st.over(ss, now) {
				n++
			}
			delete(st.m, k)
		}
	}
	return n
}

// evictVisitor drops the least recently used session that has not signed in. A flood of
// visitors can thus only push out other visitors (who get a fresh sign-in form), never a user
// in the middle of linking. The caller holds st.mu.
func (st *sessionStore) evictVisitor() bool {
	var (
		oldest time.Time
		victim [sha256.Size]byte
		found  bool
	)
	for k, ss := range st.m {
		if ss.user == "" && (!found || ss.lastSeen.Before(oldest)) {
			oldest, victim, found = ss.lastSeen, k, true
		}
	}
	if found {
		delete(st.m, victim)
	}
	return found
}

// delete ends a session.
func (st *sessionStore) delete(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.m, sessionKey(id))
}

// clear ends every session.
func (st *sessionStore) clear() {
	st.mu.Lock()
	defer st.mu.Unlock()
	clear(st.m)
}

// len is the number of sessions held, idle ones included.
func (st *sessionStore) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.m)
}
