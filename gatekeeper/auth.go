package gatekeeper

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
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
	ReasonInternal          = "internal"
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

// attempt is one connection's authentication state. The SSH library calls its
// callbacks from the connection's handshake goroutine only, one at a time.
type attempt struct {
	srv     *Server
	remote  netip.Addr
	trusted bool
	log     *slog.Logger

	// pendingPassword holds what the password method gave until the code round
	// that completes it.
	pendingPassword string
	// up is the lander connection, set when authentication succeeds.
	up *upstreamConn
}

// keyboardInteractive asks for the password and, outside trusted networks,
// the verification code, in two rounds as pam_google_authenticator does.
func (a *attempt) keyboardInteractive(conn ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	start := time.Now()
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
	return a.finish(conn, "keyboard-interactive", pw, code, start)
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
	start := time.Now()
	code, err := askOne(ask, PromptCode)
	if err != nil {
		return nil, err
	}
	return a.finish(conn, "password+keyboard-interactive", a.pendingPassword, code, start)
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
// refusal take the same time (failure_delay) whatever its reason.
func (a *attempt) finish(conn ssh.ConnMetadata, method, password, code string, start time.Time) (*ssh.Permissions, error) {
	s := a.srv
	user := conn.User()
	up, how, err := s.authenticate(context.Background(), user, password, code, a.remote, a.trusted)
	elapsed := time.Since(start)
	s.metrics.AuthDuration.Observe(elapsed.Seconds())
	remote := a.remote.String()
	if err == nil {
		a.up = up
		a.log.Info("login accepted", "user", user, "method", method, "trusted", a.trusted,
			"second_factor", how, "auth_ms", elapsed.Milliseconds())
		s.metrics.Logins.With(metricsResultOK, how).Inc()
		s.audit.record(store.Event{Kind: store.EventLoginOK, User: user, Remote: remote, Detail: method + ", " + how})
		switch how {
		case secondFactorTrusted:
			s.metrics.TrustedBypass.Inc()
			s.audit.record(store.Event{Kind: store.EventTrustedBypass, User: user, Remote: remote})
		case secondFactorRecovery:
			s.audit.record(store.Event{Kind: store.EventRecoveryUsed, User: user, Remote: remote})
		}
		return nil, nil
	}

	var le *LoginError
	reason := ReasonInternal
	if errors.As(err, &le) {
		reason = le.Reason
	}
	level := slog.LevelInfo
	if reason == ReasonLanderHostKey || reason == ReasonInternal {
		level = slog.LevelError
	}
	a.log.Log(context.Background(), level, "login refused", "user", logName(user), "method", method,
		"trusted", a.trusted, "reason", reason, "err", err.Error())
	s.metrics.Logins.With(metricsResultRefused, reason).Inc()
	s.audit.record(store.Event{Kind: store.EventLoginRefused, User: logName(user), Remote: remote, Reason: reason})
	if reason == ReasonReplayedCode {
		s.metrics.CodeReuseRefusals.Inc()
		s.audit.record(store.Event{Kind: store.EventCodeReuse, User: user, Remote: remote})
	}
	s.sleepUntil(start.Add(s.failureDelay()))
	if reason == ReasonLanderUnavailable || reason == ReasonLanderHostKey {
		return nil, &ssh.BannerError{Err: errDenied, Message: unavailableBanner}
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
func (s *Server) authenticate(ctx context.Context, user, password, code string, remote netip.Addr, trusted bool) (*upstreamConn, string, error) {
	if err := s.checkLocks(user, password, remote, trusted); err != nil {
		return nil, "", err
	}
	how := secondFactorTrusted
	if !trusted {
		var err error
		if how, err = s.useSecondFactor(user, code); err != nil {
			s.noteFailure(user, remote, trusted)
			return nil, "", err
		}
	}
	up, err := s.landerLogin(ctx, user, password, remote, trusted)
	if err != nil {
		return nil, "", err
	}
	if trusted {
		s.touchLastLogin(user)
	}
	return up, how, nil
}

// checkLocks refuses hostile input and locked-out users and addresses before
// any work is done for them.
func (s *Server) checkLocks(user, password string, remote netip.Addr, trusted bool) error {
	if err := store.CheckName(user); err != nil {
		return &LoginError{ReasonBadUsername, err}
	}
	if len(password) > maxPasswordLen {
		return &LoginError{ReasonBadPassword, errors.New("password longer than 1 KiB")}
	}
	if t := s.limiter.lockedUntil(userKey(user)); !t.IsZero() {
		return &LoginError{ReasonLocked, fmt.Errorf("%w: user until %s", ErrLocked, t.Format(time.RFC3339))}
	}
	if !trusted {
		if t := s.limiter.lockedUntil(addrKey(remote)); !t.IsZero() {
			return &LoginError{ReasonLocked, fmt.Errorf("%w: address until %s", ErrLocked, t.Format(time.RFC3339))}
		}
	}
	return nil
}

// landerLogin checks the password by logging in to the lander.
func (s *Server) landerLogin(ctx context.Context, user, password string, remote netip.Addr, trusted bool) (*upstreamConn, error) {
	up, err := s.lander.dial(ctx, user, password)
	switch {
	case errors.Is(err, ErrPasswordRejected):
		s.noteFailure(user, remote, trusted)
		return nil, &LoginError{ReasonWrongPassword, err}
	case errors.Is(err, ErrLanderHostKey):
		return nil, &LoginError{ReasonLanderHostKey, err}
	case err != nil:
		return nil, &LoginError{ReasonLanderUnavailable, err}
	}
	s.limiter.reset(userKey(user))
	return up, nil
}

// CheckPassword checks user's password at the lander, with the same lockouts,
// failure accounting and failure delay as an SSH login, and without a second
// factor. Device linking (portal and SSH) uses it as the first factor.
func (s *Server) CheckPassword(ctx context.Context, user, password string, remote netip.Addr) error {
	start := time.Now()
	remote = remote.Unmap()
	trusted := s.config().IsTrusted(remote)
	err := s.checkLocks(user, password, remote, trusted)
	if err == nil {
		var up *upstreamConn
		if up, err = s.landerLogin(ctx, user, password, remote, trusted); err == nil {
			up.conn.Close()
			return nil
		}
	}
	reason := ReasonInternal
	var le *LoginError
	if errors.As(err, &le) {
		reason = le.Reason
	}
	s.log.Info("password check refused", "user", logName(user), "remote", remote.String(), "reason", reason, "err", err.Error())
	s.sleepUntil(start.Add(s.failureDelay()))
	return err
}

// useSecondFactor accepts a code from the app or, if that is what the user
// typed, one of their recovery codes, and says which it was.
func (s *Server) useSecondFactor(user, answer string) (string, error) {
	if s.recovery != nil && !looksLikeTOTP(answer) {
		return secondFactorRecovery, s.useRecoveryCode(user, answer)
	}
	return secondFactorCode, s.useCode(user, answer)
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
// most one in, also across restarts.
func (s *Server) useCode(user, code string) error {
	err := s.store.Update(user, func(u *store.User) error {
		if u.State != store.StateActive {
			return ErrNotLinked
		}
		now := s.now()
		step, err := totp.Verify(u.Secret, code, now, s.config().TOTP.Skew, u.LastStep)
		if err != nil {
			return err
		}
		u.LastStep = step
		u.LastLogin = now
		return nil
	})
	return classifyCodeError(err)
}

// useRecoveryCode accepts one of user's unused recovery codes and removes
// it, in one store transaction. The expensive hash is first computed outside
// the transaction, so that guesses cannot hold the store's write lock; only
// a code that matched is hashed again inside it.
func (s *Server) useRecoveryCode(user, answer string) error {
	u, err := s.store.Get(user)
	if err != nil {
		return classifyCodeError(err)
	}
	if u.State != store.StateActive {
		return classifyCodeError(ErrNotLinked)
	}
	if !s.recovery(&u, answer) {
		return classifyCodeError(totp.ErrMismatch)
	}
	err = s.store.Update(user, func(u *store.User) error {
		if u.State != store.StateActive {
			return ErrNotLinked
		}
		if !s.recovery(u, answer) {
			return totp.ErrReplay // used by a concurrent login in between
		}
		u.LastLogin = s.now()
		return nil
	})
	return classifyCodeError(err)
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
		return &LoginError{ReasonInternal, err}
	}
}

// touchLastLogin records a trusted-network login for users that have a
// record; it is bookkeeping, so a failure is only logged.
func (s *Server) touchLastLogin(user string) {
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
	}
}

// noteFailure counts a failure against the user and, outside trusted
// networks, the source address; it logs when that locks one of them out.
// Trusted sources are not locked out by address: a campus NAT would lock out
// everyone behind it.
func (s *Server) noteFailure(user string, remote netip.Addr, trusted bool) {
	lockout := s.config().RateLimit.Lockout.String()
	if s.limiter.fail(userKey(user)) {
		s.log.Warn("user locked out", "user", user, "lockout", lockout)
		s.metrics.Lockouts.Inc()
		s.audit.record(store.Event{Kind: store.EventLockout, User: user, Remote: remote.String(), Detail: "user, " + lockout})
	}
	if !trusted && s.limiter.fail(addrKey(remote)) {
		s.log.Warn("source address locked out", "addr", addrKey(remote), "lockout", lockout)
		s.metrics.Lockouts.Inc()
		s.audit.record(store.Event{Kind: store.EventLockout, User: user, Remote: remote.String(), Detail: "address, " + lockout})
	}
}

func (s *Server) failureDelay() time.Duration {
	if d := s.config().FailureDelay; d > 0 {
		return d
	}
	return 2 * time.Second
}

// sleepUntil waits until t plus up to 10% jitter of the failure delay, so
// that a refusal's timing says nothing about its reason.
func (s *Server) sleepUntil(t time.Time) {
	if n, err := rand.Int(rand.Reader, big.NewInt(int64(s.failureDelay()/10)+1)); err == nil {
		t = t.Add(time.Duration(n.Int64()))
	}
	time.Sleep(time.Until(t))
}

// logName keeps hostile usernames from bloating the log.
func logName(user string) string {
	if len(user) > 64 {
		return fmt.Sprintf("%.64q...(%d bytes)", user, len(user))
	}
	return user
}
