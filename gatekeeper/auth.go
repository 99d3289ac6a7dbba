package gatekeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
)

// The prompts are those of OpenSSH with pam_google_authenticator, so that
// users' askpass and expect scripts keep working.
const (
	PromptPassword = "Password: "
	PromptCode     = "Verification code: "
)

// maxPasswordLen bounds what is sent on to the lander; sshd itself refuses
// passwords longer than 1 KiB.
const maxPasswordLen = 1024

// Reasons a login was refused. They go to the log (and later the audit
// trail and metrics); the client sees the same failure for all of them.
const (
	ReasonBadUsername       = "bad_username"
	ReasonBadPassword       = "bad_password" // too long to be real
	ReasonLocked            = "locked"
	ReasonNotLinked         = "not_linked"
	ReasonMalformedCode     = "malformed_code"
	ReasonWrongCode         = "wrong_code"
	ReasonReplayedCode      = "replayed_code"
	ReasonWrongPassword     = "wrong_password"
	ReasonLanderUnavailable = "lander_unavailable"
	ReasonLanderHostKey     = "lander_host_key"
	ReasonLanderNoPassword  = "lander_no_password"  // the lander let the user in without the password
	ReasonLanderRefusedCert = "lander_refused_cert" // the lander does not trust the gatekeeper's CA
	ReasonKeyRevoked        = "key_revoked"         // the key went while its login was decided
	ReasonInternal          = "internal"
	// ReasonStoreUnavailable: the store (an etcd cluster without quorum) did not answer; a login
	// that needs a code is refused rather than decided without the one-use record.
	ReasonStoreUnavailable = "store_unavailable"
	// ReasonTooManySessions: both factors were right, but the user already has
	// session.max_per_user live sessions on this node. Unlike the others it is
	// told to the client, who has proved to be the user.
	ReasonTooManySessions = "too_many_sessions"
)

// Sentinel errors of the login policy.
var (
	// ErrLocked means the user or the source address is locked out.
	ErrLocked = errors.New("locked out after too many failures")
	// ErrNotLinked means the user has no active device and is outside the
	// trusted networks.
	ErrNotLinked = errors.New("no linked device")
	// ErrReplay means the code's time step was already used.
	ErrReplay = totp.ErrReplay
)

// LoginError is why a login was refused; Reason is one of the Reason
// constants. It is never shown to the client.
type LoginError struct {
	Reason string
	Err    error
}

func (e *LoginError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *LoginError) Unwrap() error { return e.Err }

// errDenied is what the SSH library gets for every refusal: it tells the
// client nothing beyond "Permission denied".
var errDenied = errors.New("permission denied")

// unavailableBanner is the one failure the user is told about, because
// retrying cannot help and they would otherwise suspect their password.
const unavailableBanner = "The login node is not reachable right now. Please try again in a few minutes.\r\n"

// tooManySessionsBanner tells a user who logged in with both factors that
// they are at session.max_per_user.
func tooManySessionsBanner(user string, limit int) string {
	sessions := "sessions"
	if limit == 1 {
		sessions = "session"
	}
	return fmt.Sprintf("%s already has %d %s open on this login node, the most allowed. "+
		"Close one (or share one: ControlMaster in ~/.ssh/config) and log in again.\r\n", user, limit, sessions)
}

// storeUnavailableBanner tells a user refused because the store did not answer that it is not
// their password or code; from the trusted networks logins go on meanwhile.
const storeUnavailableBanner = "The login service is unavailable right now. Please try again in a few minutes.\r\n"

// internalError is the LoginError of a failure that is not the user's: the store not answering
// (ReasonStoreUnavailable), or anything else gone wrong (ReasonInternal).
func internalError(err error) *LoginError {
	if errors.Is(err, store.ErrUnavailable) {
		return &LoginError{ReasonStoreUnavailable, err}
	}
	return &LoginError{ReasonInternal, err}
}

// isInternal reports whether reason is one of internalError's: nobody's fault, so counted
// against no one.
func isInternal(reason string) bool {
	return reason == ReasonInternal || reason == ReasonStoreUnavailable
}

// attempt is one connection's authentication state. The SSH library calls its
// callbacks from the connection's handshake goroutine only, one at a time.
type attempt struct {
	srv *Server
	// ctx is the connection's (see Server.login): it ends when the server
	// closes the connection, and the decision under way with it.
	ctx    context.Context
	remote netip.Addr
	// known is false for a connection whose PROXY header named no client
	// (a health check): remote is then the load balancer's own address, by
	// which nothing is judged (neither trusted nor a key's networks).
	known   bool
	trusted bool
	log     *slog.Logger

	// pendingPassword holds what the password method gave until the code round
	// that completes it.
	pendingPassword string
	// up is the lander connection, set when authentication succeeds.
	up *upstreamConn
	// resetEpoch is the user's reset count when the last attempt began: a
	// session whose login raced an admin reset is not let in (addSession).
	resetEpoch uint64

	// Set by a key login (keyauth.go): the registered key's fingerprint,
	// the user's key revocation count when the login began (as
	// resetEpoch), the session id reserved for the lander's certificate,
	// and the key's expiry (an automation key's session ends then).
	keyFP      string
	keyEpoch   uint64
	sessionID  uint64
	keyExpires time.Time

	// preAuth is the connection before authentication ends, for sending a
	// banner outside a refusal (see decide); set by the ServerConfig's
	// PreAuthConnCallback before any method is tried.
	preAuth ssh.ServerPreAuthConn
}

// keyboardInteractive asks for the password and, outside trusted networks,
// the verification code, in two rounds as pam_google_authenticator does.
func (a *attempt) keyboardInteractive(conn ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	pw, err := askOne(ask, PromptPassword)
	if err != nil {
		return nil, err
	}
	code := ""
	if !a.trusted {
		if code, err = askOne(ask, PromptCode); err != nil {
			return nil, err
		}
	}
	return a.finish(conn, "keyboard-interactive", pw, code, time.Now())
}

// passwordMethod serves clients that prefer the password method: from a trusted
// network that is all; otherwise it succeeds partially and the client goes
// on with keyboard-interactive for the code.
func (a *attempt) passwordMethod(conn ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
	if a.trusted {
		return a.finish(conn, "password", string(pw), "", time.Now())
	}
	a.pendingPassword = string(pw)
	return nil, &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{
		KeyboardInteractiveCallback: a.codeOnly,
	}}
}

func (a *attempt) codeOnly(conn ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	code, err := askOne(ask, PromptCode)
	if err != nil {
		return nil, err
	}
	return a.finish(conn, "password+keyboard-interactive", a.pendingPassword, code, time.Now())
}

// askOne asks one question with echo off.
func askOne(ask ssh.KeyboardInteractiveChallenge, prompt string) (string, error) {
	answers, err := ask("", "", []string{prompt}, []bool{false})
	if err != nil {
		return "", err
	}
	if len(answers) != 1 {
		return "", fmt.Errorf("client sent %d answers to one question", len(answers))
	}
	return answers[0], nil
}

// finish decides the login, logs and audits the decision, and makes every
// refusal take the same time whatever its reason. answered is when the last
// answer arrived: the padding counts from there, so a client that answers
// slowly still sees every refusal take the same time (see refusalDelay).
func (a *attempt) finish(conn ssh.ConnMetadata, method, password, code string, answered time.Time) (*ssh.Permissions, error) {
	a.keyFP, a.keyExpires = "", time.Time{} // a password login after a refused key is no key session
	return a.decide(conn, method, answered, func(ctx context.Context) (*upstreamConn, string, error) {
		return a.srv.authenticate(ctx, conn.User(), password, code, a.remote, a.trusted)
	})
}

// decide runs auth, the policy of one login attempt, and reports its
// decision as finish describes.
func (a *attempt) decide(conn ssh.ConnMetadata, method string, answered time.Time,
	auth func(context.Context) (*upstreamConn, string, error)) (*ssh.Permissions, error) {
	s := a.srv
	user := conn.User()
	// Fixed before the decision, so that a slow lander refusal raises the
	// padding of later refusals, never its own (which would stand out).
	delay := s.refusalDelay()
	a.resetEpoch = s.resetEpoch(user)
	up, how, err := auth(a.ctx)
	elapsed := time.Since(answered)
	s.metrics.AuthDuration.Observe(elapsed.Seconds())
	remote := a.remote.String()
	if limit := s.config().Session.MaxPerUser; err == nil && limit > 0 && s.liveSessionsOf(user) >= limit {
		// Told to the client, who has proved to be the user, and without the
		// refusal's padding: nothing about the factors is left to hide.
		up.conn.Close()
		a.log.Warn("login refused: the user is at session.max_per_user on this node", "user", user, "method", method,
			"trusted", a.trusted, "reason", ReasonTooManySessions, "max_per_user", limit)
		s.metrics.Logins.With(metricsResultRefused, ReasonTooManySessions).Inc()
		s.audit.record(store.Event{Kind: store.EventLoginRefused, User: user, Remote: remote, Door: store.DoorSSH,
			Reason: ReasonTooManySessions, Detail: fmt.Sprintf("%d live sessions on %s (session.max_per_user)", limit, s.node)})
		// The banner, then a partial success that leaves no method to try:
		// x/crypto ends the connection there, so that the client is asked
		// nothing more (after a plain failure OpenSSH would ask for the
		// password again, as many times as NumberOfPasswordPrompts).
		if err := a.preAuth.SendAuthBanner(tooManySessionsBanner(user, limit)); err != nil {
			return nil, err
		}
		return nil, &ssh.PartialSuccessError{}
	}
	if err == nil {
		a.up = up
		a.log.Info("login accepted", "user", user, "method", method, "trusted", a.trusted,
			"second_factor", how, "auth_ms", elapsed.Milliseconds())
		s.metrics.Logins.With(metricsResultOK, how).Inc()
		s.audit.record(store.Event{Kind: store.EventLoginOK, User: user, Remote: remote, Door: store.DoorSSH, Detail: method + ", " + how})
		switch how {
		case secondFactorTrusted:
			s.metrics.TrustedBypass.Inc()
			s.audit.record(store.Event{Kind: store.EventTrustedBypass, User: user, Remote: remote, Door: store.DoorSSH})
		case secondFactorRecovery:
			s.audit.record(store.Event{Kind: store.EventRecoveryUsed, User: user, Remote: remote, Door: store.DoorSSH})
		}
		return nil, nil
	}

	var le *LoginError
	reason := ReasonInternal
	if errors.As(err, &le) {
		reason = le.Reason
	}
	level := slog.LevelInfo
	switch reason {
	case ReasonLanderHostKey, ReasonLanderNoPassword, ReasonInternal, ReasonStoreUnavailable, ReasonLanderRefusedCert:
		level = slog.LevelError
	case ReasonLocked:
		// Counted on the lockout and audited once when it ends (see
		// auditLockEnds), so that a locked-out source knocking all day
		// grows neither the database nor, much, the log.
		level = slog.LevelDebug
	}
	a.log.Log(a.ctx, level, "login refused", "user", logName(user), "method", method,
		"trusted", a.trusted, "reason", reason, "err", err.Error(), "auth_ms", elapsed.Milliseconds())
	s.metrics.Logins.With(metricsResultRefused, reason).Inc()
	if reason != ReasonLocked {
		ev := store.Event{Kind: store.EventLoginRefused, User: logName(user), Remote: remote, Door: store.DoorSSH, Reason: reason}
		if d, ok := errors.AsType[*clockDriftError](err); ok {
			ev.Detail = totp.DriftText(d.steps) + ": the phone's clock is probably off"
		}
		s.audit.record(ev)
	}
	if reason == ReasonReplayedCode {
		s.metrics.CodeReuseRefusals.Inc()
		s.audit.record(store.Event{Kind: store.EventCodeReuse, User: user, Remote: remote, Door: store.DoorSSH})
	}
	sleepUntil(a.ctx, answered.Add(delay))
	switch reason {
	case ReasonLanderUnavailable, ReasonLanderHostKey, ReasonLanderRefusedCert:
		return nil, &ssh.BannerError{Err: errDenied, Message: unavailableBanner}
	case ReasonStoreUnavailable:
		return nil, &ssh.BannerError{Err: errDenied, Message: storeUnavailableBanner}
	}
	return nil, errDenied
}

// How the second factor was satisfied, for the log, audit and metrics.
const (
	secondFactorCode     = "code"
	secondFactorRecovery = "recovery_code"
	secondFactorTrusted  = "trusted_network"
)

// Label values for gatekeeper_logins_total's result.
const (
	metricsResultOK      = "ok"
	metricsResultRefused = "refused"
)

// authenticate applies the policy: lockouts, the one-use code (checked and
// recorded before the lander ever sees the password), then the password at
// the lander. It returns the authenticated lander connection and how the
// second factor was satisfied.
//
// Logins from the trusted networks and from outside are counted in separate
// scopes (see Scope), so failures from outside never refuse a trusted login.
// An outside attempt reserves its place in every budget it counts against
// before its code is checked, so that no concurrency gets more codes checked
// than rate_limit.failures allows.
func (s *Server) authenticate(ctx context.Context, user, password, code string, remote netip.Addr, trusted bool) (*upstreamConn, string, error) {
	if err := s.checkInput(user, password, remote, trusted); err != nil {
		return nil, "", err
	}
	if trusted {
		return s.authenticateTrusted(ctx, user, password, remote)
	}
	return s.withCode(ctx, user, password, code, remote, false)
}

// withCode checks the code (or a recovery code) and then the password at the
// lander, counting against the budgets of the source and of the user's codes
// in the scope of where it comes from (trusted: a sign-in at the linking
// portal or SSH listener from the trusted networks; see ScopeTrustedCode),
// so that failures from outside never lock the user out of signing in from
// the trusted networks, and codes guessed there are bounded as from outside.
func (s *Server) withCode(ctx context.Context, user, password, code string, remote netip.Addr, trusted bool) (*upstreamConn, string, error) {
	// Only users with a linked device have codes to guess; counting the
	// others per user would only let a flood of made-up names fill memory.
	u, err := s.store.Get(user)
	if err != nil {
		return nil, "", internalError(err)
	}
	src, mine := sourceKeys(remote, trusted), codeKey(user, trusted)
	var mark loginMark
	res, how, err := s.spendCode(ctx, user, code, u.State == store.StateActive, remote, src, mine, &mark)
	if err != nil {
		return nil, "", err
	}
	// The code was right. The source's places go back now (many users may
	// share an address), but the user's is held until the lander has
	// answered the password: a right code must not clear the user's count
	// before the password is known to be right too, or whoever holds the
	// phone could guess passwords without ever being locked out.
	released := res.release(func(k LockKey) bool { return k != mine })
	up, err := s.landerLogin(ctx, user, password)
	released()
	if err != nil {
		s.unrecordLogin(user, mark)
	}
	switch {
	case errors.Is(err, ErrPasswordRejected):
		s.noteFailures(append(res.fail(), s.limiter.fail(src)...), remote)
	case err != nil:
		res.cancel()
	case trusted:
		// The user's code count clears; a trusted address's (a campus
		// NAT's) does not, as after a trusted password login.
		res.succeed()
	default:
		res.succeed(src[:1]...) // and the address's own typing errors
	}
	if err != nil {
		return nil, "", err
	}
	return up, how, nil
}

// spendCode checks code (or a recovery code) for user, active when the user
// has a linked device, with a place reserved in the budgets of src and (when
// active) mine, the user's own budget. A refused code counts as a failure (an
// internal error as none); an accepted one returns the reservation, still
// held, for the caller to end, and records the user's last login, as mark
// tells (see unrecordLogin).
func (s *Server) spendCode(ctx context.Context, user, code string, active bool, remote netip.Addr, src []LockKey, mine LockKey, mark *loginMark) (*reservation, string, error) {
	// A recovery-code hash waits for a free slot before the attempt takes
	// its place in the user's budget: a flood that keeps the slots busy
	// must not hold the user's places meanwhile.
	if s.recovery != nil && !looksLikeTOTP(code) {
		release, err := s.hashSlot(ctx)
		if err != nil {
			return nil, "", &LoginError{ReasonInternal, err}
		}
		defer release()
	}
	keys := src
	if active {
		keys = append(slices.Clip(src), mine)
	}
	res, lk, err := s.limiter.reserve(keys)
	switch {
	case err != nil:
		return nil, "", internalError(err)
	case lk != nil:
		return nil, "", lockedError(lk)
	}
	how, err := s.useSecondFactor(ctx, user, code, active, mark)
	if err != nil {
		if le, ok := errors.AsType[*LoginError](err); ok && isInternal(le.Reason) {
			res.cancel()
		} else {
			s.noteFailures(res.fail(), remote)
		}
		return nil, "", err
	}
	return res, how, nil
}

// authenticateTrusted logs in a user from the trusted networks with the
// password alone. Its failures count in the trusted scopes only; no place is
// reserved, because the lander checks each password guess itself and
// parallel logins of one user from campus (pdsh, parallel rsync) are normal.
func (s *Server) authenticateTrusted(ctx context.Context, user, password string, remote netip.Addr) (*upstreamConn, string, error) {
	keys := append(sourceKeys(remote, true), userKey(user, true))
	if lk := s.limiter.check(keys); lk != nil {
		return nil, "", lockedError(lk)
	}
	up, err := s.landerLogin(ctx, user, password)
	if errors.Is(err, ErrPasswordRejected) {
		s.noteFailures(s.limiter.fail(keys), remote)
	}
	if err != nil {
		return nil, "", err
	}
	s.limiter.clear(keys[len(keys)-1:])
	s.touchLastLogin(user)
	return up, secondFactorTrusted, nil
}

// checkInput refuses hostile input before any work is done for it. Junk
// counts against the source, so that a scanner is soon locked out; from a
// source locked out already it is a locked refusal (audited once, with the
// lockout), so that junk cannot grow the audit log either.
func (s *Server) checkInput(user, password string, remote netip.Addr, trusted bool) error {
	err := s.checkName(user)
	if err != nil {
		err = &LoginError{ReasonBadUsername, err}
	} else if len(password) > maxPasswordLen {
		err = &LoginError{ReasonBadPassword, errors.New("password longer than 1 KiB")}
	}
	if err == nil {
		return nil
	}
	src := sourceKeys(remote, trusted)
	if lk := s.limiter.check(src); lk != nil {
		return lockedError(lk)
	}
	s.noteFailures(s.limiter.fail(src), remote)
	return err
}

// checkName refuses a user name the doors do not take: one store.CheckName
// refuses, and one with upper-case letters unless allow_uppercase_usernames
// is set. Records, lockouts, resets and session kills are keyed by the name
// as typed, while a lander whose user directory ignores case (SSSD with
// Active Directory) logs "Alice" in as alice: someone holding alice's
// password could link a phone of their own to "Alice" from the trusted
// networks and then log in from outside past alice's own device.
func (s *Server) checkName(user string) error {
	if err := store.CheckName(user); err != nil {
		return err
	}
	if s.config().RefusesCapitals(user) {
		return fmt.Errorf("%w %q: upper-case letters (allow_uppercase_usernames is off)", store.ErrBadName, user)
	}
	return nil
}

// lockedError is the refusal for an attempt turned away by lk.
func lockedError(lk *Lock) error {
	if lk.Until.IsZero() {
		return &LoginError{ReasonLocked, fmt.Errorf("%w: %s has attempts being checked that fill its budget", ErrLocked, lk.Key)}
	}
	return &LoginError{ReasonLocked, fmt.Errorf("%w: %s", ErrLocked, lk.describe())}
}

// landerLogin checks the password by logging in to the lander. A refused
// password is a *LoginError wrapping ErrPasswordRejected.
func (s *Server) landerLogin(ctx context.Context, user, password string) (*upstreamConn, error) {
	start := time.Now()
	up, err := s.lander.dial(ctx, user, password)
	switch {
	case errors.Is(err, ErrLanderNoPassword):
		// A misconfigured lander (PermitEmptyPasswords, "none"): refused,
		// counted as a wrong password, and logged as an error to fix.
		return nil, &LoginError{ReasonLanderNoPassword, err}
	case errors.Is(err, ErrPasswordRejected):
		// The lander's own failure delay (PAM's, about 2 s) would tell a
		// wrong password from a wrong code; refusals are padded to cover it.
		s.landerDelay.observe(time.Since(start))
		return nil, &LoginError{ReasonWrongPassword, err}
	case errors.Is(err, ErrLanderHostKey):
		return nil, &LoginError{ReasonLanderHostKey, err}
	case err != nil:
		return nil, &LoginError{ReasonLanderUnavailable, err}
	}
	return up, nil
}

// SignInResult is what a sign-in found.
type SignInResult struct {
	// Linked is whether the user has a linked device, so that the code was
	// checked too.
	Linked bool
	// SecondFactor is how the second factor was satisfied ("code",
	// "recovery_code"), "" when the user has no device.
	SecondFactor string
}

// SignIn checks a user signing in at another door of the daemon (the
// linking portal or SSH listener, named by door for the log and the audit
// trail), and reports whether the user has a linked device. Once a device is linked, both factors are needed from everywhere,
// the trusted networks included: this is how a user proves who they are
// before changing their credentials. The code (or a recovery code) is
// checked first and counts as used, across doors, exactly as at the SSH front
// door; then the password at the lander. A user without a device signs in
// with the password alone (code is ignored). Lockouts, the failure delay and
// the audit trail are those of SSH logins.
func (s *Server) SignIn(ctx context.Context, user, password, code string, remote netip.Addr, door string) (linked bool, err error) {
	res, err := s.signInAt(ctx, user, password, code, remote, door, false)
	return res.Linked, err
}

// SignInLinked is SignIn for a user who must have a linked device: from
// outside the networks where linking needs no ticket, a user proves who they
// are with both factors instead of a ticket. A user without a device is
// refused like one with a wrong code, without the password ever reaching the
// lander (as at the SSH front door from outside).
func (s *Server) SignInLinked(ctx context.Context, user, password, code string, remote netip.Addr, door string) error {
	_, err := s.signInAt(ctx, user, password, code, remote, door, true)
	return err
}

// signInAt is SignIn, saying also how the second factor was satisfied.
func (s *Server) signInAt(ctx context.Context, user, password, code string, remote netip.Addr, door string, mustBeLinked bool) (SignInResult, error) {
	// A check under way is never cut short by the client: net/http cancels a
	// request's context as soon as its client half-closes the connection, and
	// a lander check given up on counts no failure (see lander.connect), while
	// such a client can still read the answer. Nor is the refusal's padding.
	ctx = context.WithoutCancel(ctx)
	answered, delay := time.Now(), s.refusalDelay()
	remote = remote.Unmap()
	trusted := s.config().IsTrusted(remote)
	res, err := s.signIn(ctx, user, password, code, remote, trusted, mustBeLinked)
	addr := remote.String()
	if err == nil {
		how := res.SecondFactor
		if !res.Linked {
			how = "password"
		}
		s.log.Info("sign-in accepted", "door", door, "user", user, "remote", addr, "trusted", trusted, "second_factor", how)
		s.audit.record(store.Event{Kind: store.EventLoginOK, User: user, Remote: addr, Door: door, Detail: door + " sign-in, " + how})
		if res.SecondFactor == secondFactorRecovery {
			s.audit.record(store.Event{Kind: store.EventRecoveryUsed, User: user, Remote: addr, Door: door})
		}
		return res, nil
	}
	reason := ReasonInternal
	if le, ok := errors.AsType[*LoginError](err); ok {
		reason = le.Reason
	}
	level := slog.LevelInfo
	switch reason {
	case ReasonLocked:
		level = slog.LevelDebug // counted on the lockout, as at the front door
	case ReasonInternal, ReasonStoreUnavailable, ReasonLanderHostKey, ReasonLanderNoPassword:
		level = slog.LevelError
	}
	s.log.Log(ctx, level, "sign-in refused", "door", door, "user", logName(user), "remote", addr, "reason", reason, "err", err.Error())
	if reason != ReasonLocked {
		ev := store.Event{Kind: store.EventLoginRefused, User: logName(user), Remote: addr, Door: door, Reason: reason}
		if d, ok := errors.AsType[*clockDriftError](err); ok {
			ev.Detail = totp.DriftText(d.steps) + ": the phone's clock is probably off"
		}
		s.audit.record(ev)
	}
	if reason == ReasonReplayedCode {
		s.metrics.CodeReuseRefusals.Inc()
	}
	sleepUntil(ctx, answered.Add(delay))
	return res, err
}

func (s *Server) signIn(ctx context.Context, user, password, code string, remote netip.Addr, trusted, mustBeLinked bool) (SignInResult, error) {
	if err := s.checkInput(user, password, remote, trusted); err != nil {
		return SignInResult{}, err
	}
	u, err := s.store.Get(user)
	if err != nil {
		return SignInResult{}, internalError(err)
	}
	var up *upstreamConn
	var res SignInResult
	if u.State == store.StateActive || mustBeLinked {
		// withCode refuses a user without a device (not_linked) before the
		// password reaches the lander, doing the same work as for one with.
		res.Linked = u.State == store.StateActive
		up, res.SecondFactor, err = s.withCode(ctx, user, password, code, remote, trusted)
	} else {
		up, err = s.passwordOnly(ctx, user, password, remote, trusted)
	}
	if err != nil {
		return res, err
	}
	up.conn.Close()
	return res, nil
}

// CheckPassword checks user's password at the lander, with the same lockouts,
// failure accounting and failure delay as an SSH login, and without a second
// factor.
func (s *Server) CheckPassword(ctx context.Context, user, password string, remote netip.Addr) error {
	ctx = context.WithoutCancel(ctx) // never cut short by the client, as in signInAt
	start, delay := time.Now(), s.refusalDelay()
	remote = remote.Unmap()
	trusted := s.config().IsTrusted(remote)
	err := s.checkInput(user, password, remote, trusted)
	var up *upstreamConn
	if err == nil {
		up, err = s.passwordOnly(ctx, user, password, remote, trusted)
	}
	if err == nil {
		up.conn.Close()
		return nil
	}
	reason := ReasonInternal
	if le, ok := errors.AsType[*LoginError](err); ok {
		reason = le.Reason
	}
	level := slog.LevelInfo
	if reason == ReasonLocked {
		level = slog.LevelDebug // counted on the lockout, as at the front door
	}
	s.log.Log(ctx, level, "password check refused", "user", logName(user), "remote", remote.String(), "reason", reason, "err", err.Error())
	sleepUntil(ctx, start.Add(delay))
	return err
}

// passwordOnly checks the password alone at the lander: from the trusted
// networks as a trusted login, from outside with a place reserved in the
// source's budget (and the user's, for a user with a device).
func (s *Server) passwordOnly(ctx context.Context, user, password string, remote netip.Addr, trusted bool) (*upstreamConn, error) {
	if trusted {
		up, _, err := s.authenticateTrusted(ctx, user, password, remote)
		return up, err
	}
	keys := sourceKeys(remote, false)
	if u, gerr := s.store.Get(user); gerr == nil && u.State == store.StateActive {
		keys = append(keys, userKey(user, false))
	}
	res, lk, err := s.limiter.reserve(keys)
	switch {
	case err != nil:
		return nil, internalError(err)
	case lk != nil:
		return nil, lockedError(lk)
	}
	up, err := s.landerLogin(ctx, user, password)
	if errors.Is(err, ErrPasswordRejected) {
		s.noteFailures(res.fail(), remote)
	} else {
		res.cancel()
	}
	return up, err
}

// useSecondFactor accepts a code from the app or, if that is what the user
// typed, one of their recovery codes, and says which it was. For a user
// without a linked device the same work is done (a recovery-shaped answer is
// hashed against nothing), so that timing does not tell such users apart.
func (s *Server) useSecondFactor(ctx context.Context, user, answer string, active bool, mark *loginMark) (string, error) {
	recovery := s.recovery != nil && !looksLikeTOTP(answer)
	if !active {
		if recovery {
			_ = s.checkRecovery(&store.User{Name: user}, answer)
		}
		return "", classifyCodeError(ErrNotLinked)
	}
	s.metrics.SecondFactorChecks.Inc()
	if recovery {
		return secondFactorRecovery, s.useRecoveryCode(ctx, user, answer, mark)
	}
	return secondFactorCode, s.useCode(user, answer, mark)
}

// looksLikeTOTP tells codes from the app (six digits, maybe spaced) from
// recovery codes, which have letters and dashes.
func looksLikeTOTP(answer string) bool {
	n := 0
	for _, r := range answer {
		switch {
		case r == ' ':
		case r >= '0' && r <= '9':
			n++
		default:
			return false
		}
	}
	return n == totp.Digits
}

// useCode accepts code for user only if its time step is newer than the last
// one the user used; the check and the record are one store transaction,
// committed before this returns, so concurrent logins with one code let at
// most one in, also across restarts. The same write records now as the
// user's last login, and mark what it wrote and replaced, which the caller
// takes back if the login fails after all (unrecordLogin): a write after the
// lander's answer would cost every login a store round trip.
//
// A wrong code that matches the user's secret up to driftWindow steps away
// is recorded as the user's clock drift (for admin show and the log, never
// for the client): "my codes stopped working" is usually a phone clock.
func (s *Server) useCode(user, code string, mark *loginMark) error {
	var drifted *clockDriftError
	err := s.store.Update(user, func(u *store.User) error {
		drifted = nil
		if u.State != store.StateActive {
			return ErrNotLinked
		}
		now := s.now()
		skew := s.config().TOTP.Skew
		step, err := totp.Verify(u.Secret, code, now, skew, u.LastStep)
		if errors.Is(err, totp.ErrMismatch) {
			steps, ok := totp.Drift(u.Secret, code, now, skew, driftWindow)
			if !ok {
				return err
			}
			// Refused all the same; the drift is written for support.
			drifted = &clockDriftError{steps: steps}
			u.DriftSteps, u.DriftAt = steps, now
			return nil
		}
		if err != nil {
			return err
		}
		u.LastStep = step
		mark.set(u, now)
		u.DriftSteps, u.DriftAt = 0, time.Time{} // the clock is right again
		return nil
	})
	if err == nil && drifted != nil {
		err = drifted
	}
	s.noteWriteError(err)
	return classifyCodeError(err)
}

// driftWindow is how far (in 30 s steps either way) a refused code is
// looked for, to tell a drifting phone clock: 10 minutes.
const driftWindow = 20

// clockDriftError is a wrong code that matches the user's secret steps time
// steps away from now: the phone's clock is off.
type clockDriftError struct{ steps int }

func (e *clockDriftError) Error() string {
	return "wrong code: " + totp.DriftText(e.steps)
}

func (e *clockDriftError) Unwrap() error { return totp.ErrMismatch }

// useRecoveryCode accepts one of user's unused recovery codes and removes
// it, in one store transaction. The expensive hash is first computed outside
// the transaction, so that guesses cannot hold the store's write lock; only
// a code that matched is hashed again inside it. The last login is recorded
// as in useCode.
func (s *Server) useRecoveryCode(ctx context.Context, user, answer string, mark *loginMark) error {
	u, err := s.store.Get(user)
	if err != nil {
		return classifyCodeError(err)
	}
	if u.State != store.StateActive {
		return classifyCodeError(ErrNotLinked)
	}
	if err := s.checkRecovery(&u, answer); err != nil {
		return classifyCodeError(err)
	}
	err = s.store.Update(user, func(u *store.User) error {
		if u.State != store.StateActive {
			return ErrNotLinked
		}
		if !s.recovery(u, answer) {
			return totp.ErrReplay // used by a concurrent login in between
		}
		mark.set(u, s.now())
		return nil
	})
	s.noteWriteError(err)
	return classifyCodeError(err)
}

// hashWait bounds how long an attempt waits for a free recovery-code hashing
// slot before it is refused as an internal error.
const hashWait = 10 * time.Second

// hashSlot waits for one of the server's few recovery-code hashing slots
// (argon2id takes 19 MiB a hash), so that a flood of recovery-shaped answers
// cannot take the machine's memory and cores. release gives it back.
func (s *Server) hashSlot(ctx context.Context) (release func(), err error) {
	ctx, cancel := context.WithTimeout(ctx, hashWait)
	defer cancel()
	select {
	case s.hashSlots <- struct{}{}:
		return func() { <-s.hashSlots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no free recovery-code hashing slot: %w", ctx.Err())
	}
}

// checkRecovery checks answer against u's recovery codes (the caller holds
// a hashSlot); it returns totp.ErrMismatch when answer is none of them.
func (s *Server) checkRecovery(u *store.User, answer string) error {
	if !s.recovery(u, answer) {
		return totp.ErrMismatch
	}
	return nil
}

// noteWriteError counts err when it is the store failing to write, not the
// code being refused.
func (s *Server) noteWriteError(err error) {
	if le, ok := errors.AsType[*LoginError](classifyCodeError(err)); ok && isInternal(le.Reason) {
		s.storeWriteFailed(err)
	}
}

// classifyCodeError turns a second-factor error into a LoginError.
func classifyCodeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotLinked):
		return &LoginError{ReasonNotLinked, err}
	case errors.Is(err, totp.ErrMalformed):
		return &LoginError{ReasonMalformedCode, err}
	case errors.Is(err, totp.ErrReplay):
		return &LoginError{ReasonReplayedCode, err}
	case errors.Is(err, totp.ErrMismatch):
		return &LoginError{ReasonWrongCode, err}
	default:
		return internalError(err)
	}
}

// loginMark is what the write that spent a login's code recorded as the
// user's last login (at) and the value it replaced (prev), for unrecordLogin.
type loginMark struct{ prev, at time.Time }

// set records now as u's last login, in the store's Update callback (which
// may run more than once: each run sets m afresh).
func (m *loginMark) set(u *store.User, now time.Time) {
	m.prev, m.at = u.LastLogin, now
	u.LastLogin = now
}

// unrecordLogin puts user's last login back to what the write that spent a
// login's code replaced (mark), where that login failed after all: the lander
// refused the password or could not be reached. "Last login" (admin list and
// show) is the last login that got in; the audit log has the refused ones.
// Unless another login has recorded its own since. It is bookkeeping, on the
// failure path only: a failure is only logged.
func (s *Server) unrecordLogin(user string, mark loginMark) {
	if mark.at.IsZero() || s.limiter.down() {
		return // nothing recorded; or the shared store is not answering: do not make the user wait for it again
	}
	err := s.store.Update(user, func(u *store.User) error {
		if !u.LastLogin.Equal(mark.at) {
			return errUnchanged
		}
		u.LastLogin = mark.prev
		return nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		s.log.Warn("taking back the last login failed", "user", user, "err", err)
		s.storeWriteFailed(err)
	}
}

// errUnchanged ends an Update that has nothing to write.
var errUnchanged = errors.New("unchanged")

// touchLastLogin records a trusted-network login for users that have a
// record; it is bookkeeping, so a failure is only logged.
func (s *Server) touchLastLogin(user string) {
	if s.limiter.down() {
		return // the shared store is not answering: do not make the user wait for it again
	}
	u, err := s.store.Get(user)
	if err != nil || u.State == store.StateNone {
		return
	}
	err = s.store.Update(user, func(u *store.User) error {
		u.LastLogin = s.now()
		return nil
	})
	if err != nil {
		s.log.Warn("recording last login failed", "user", user, "err", err)
		s.storeWriteFailed(err)
	}
}

// noteFailures logs, counts and audits the lockouts a failure started.
func (s *Server) noteFailures(started []Lock, remote netip.Addr) {
	for _, lk := range started {
		s.log.Warn("locked out", "scope", string(lk.Key.Scope), "key", lk.Key.Name,
			"until", lk.Until, "lock_level", lk.Level, "remote", remote.String())
		s.metrics.Lockouts.With(string(lk.Key.Scope)).Inc()
		ev := store.Event{Kind: store.EventLockout, Remote: remote.String(), Detail: lk.describe()}
		if userScope(lk.Key.Scope) {
			ev.User = lk.Key.Name
		}
		s.audit.record(ev)
	}
}

// auditLockEnds writes one audit event per ended lockout, with the number of
// logins it refused (see limiter.sweep).
func (s *Server) auditLockEnds(ended []LockEnded) {
	for _, e := range ended {
		detail := fmt.Sprintf("%s: %d logins refused while attempts were being checked", e.Key, e.Refused)
		if !e.Until.IsZero() {
			detail = fmt.Sprintf("%s ended %s (level %d): %d logins refused while locked",
				e.Key, e.Until.UTC().Format(time.RFC3339), e.Level, e.Refused)
		}
		ev := store.Event{Kind: store.EventLockoutEnded, Detail: detail}
		if userScope(e.Key.Scope) {
			ev.User = e.Key.Name
		}
		s.audit.record(ev)
	}
}

// refusalDelay is how long every refusal takes, counted from the client's
// last answer: failure_delay, or longer when the lander takes longer to
// refuse a wrong password (PAM's own delay), so that a right code with a
// wrong password takes as long as a wrong code.
func (s *Server) refusalDelay() time.Duration {
	d := s.config().FailureDelay
	if d <= 0 {
		d = 3 * time.Second
	}
	learned := s.landerDelay.max()
	if learned == 0 {
		return d // no password refused yet
	}
	learned += learned/4 + landerDelayMargin
	return max(d, min(learned, d+maxLanderDelayExtra))
}

// Bounds of the learned lander delay. PAM randomises its failure delay
// (pam_unix: 2 s, anywhere from 1 to 3 s), so refusals wait a quarter and a
// margin beyond the slowest of the recent password refusals; but a lander
// in trouble cannot stretch them by more than maxLanderDelayExtra.
const (
	landerDelayMargin   = 100 * time.Millisecond
	maxLanderDelayExtra = 8 * time.Second
	landerDelaySamples  = 32
)

// delayTracker remembers the last landerDelaySamples durations of the
// lander's password refusals.
type delayTracker struct {
	// mu protects the following.
	mu      sync.Mutex
	samples [landerDelaySamples]time.Duration
	next    int
}

func (t *delayTracker) observe(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.samples[t.next%landerDelaySamples] = d
	t.next++
}

// max is the longest remembered duration (0 before the first).
func (t *delayTracker) max() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Max(t.samples[:])
}

// sleepUntil waits until t, or until ctx ends. The front door passes the
// connection's context, which ends only when the server closes the
// connection (nobody is left to tell the reason); the linking doors' sign-ins
// pass none that can end (see signInAt). Refusals wait for a fixed deadline rather than
// a random one: only an equal time for every reason hides the reason.
func sleepUntil(ctx context.Context, t time.Time) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// logName keeps hostile usernames from bloating the log.
func logName(user string) string {
	if len(user) > 64 {
		return fmt.Sprintf("%.64q...(%d bytes)", user, len(user))
	}
	return user
}
