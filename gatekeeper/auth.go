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

// finish decides the login, logs the decision, and makes every refusal take
// the same time (failure_delay) whatever its reason.
func (a *attempt) finish(conn ssh.ConnMetadata, method, password, code string, start time.Time) (*ssh.Permissions, error) {
	user := conn.User()
	up, err := a.srv.authenticate(context.Background(), user, password, code, a.remote, a.trusted)
	if err == nil {
		a.up = up
		a.log.Info("login accepted", "user", user, "method", method, "trusted", a.trusted,
			"auth_ms", time.Since(start).Milliseconds())
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
	a.srv.sleepUntil(start.Add(a.srv.failureDelay()))
	if reason == ReasonLanderUnavailable || reason == ReasonLanderHostKey {
		return nil, &ssh.BannerError{Err: errDenied, Message: unavailableBanner}
	}
	return nil, errDenied
}

// authenticate applies the policy: lockouts, the one-use code (checked and
// recorded before the lander ever sees the password), then the password at
// the lander. It returns the authenticated lander connection.
func (s *Server) authenticate(ctx context.Context, user, password, code string, remote netip.Addr, trusted bool) (*upstreamConn, error) {
	if err := store.CheckName(user); err != nil {
		return nil, &LoginError{ReasonBadUsername, err}
	}
	if len(password) > maxPasswordLen {
		return nil, &LoginError{ReasonBadPassword, errors.New("password longer than 1 KiB")}
	}
	if t := s.limiter.lockedUntil(userKey(user)); !t.IsZero() {
		return nil, &LoginError{ReasonLocked, fmt.Errorf("%w: user until %s", ErrLocked, t.Format(time.RFC3339))}
	}
	if !trusted {
		if t := s.limiter.lockedUntil(addrKey(remote)); !t.IsZero() {
			return nil, &LoginError{ReasonLocked, fmt.Errorf("%w: address until %s", ErrLocked, t.Format(time.RFC3339))}
		}
		if err := s.useCode(user, code); err != nil {
			s.noteFailure(user, remote, trusted)
			return nil, err
		}
	}

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
	if trusted {
		s.touchLastLogin(user)
	}
	return up, nil
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
	if s.limiter.fail(userKey(user)) {
		s.log.Warn("user locked out", "user", user, "lockout", s.config().RateLimit.Lockout.String())
	}
	if !trusted && s.limiter.fail(addrKey(remote)) {
		s.log.Warn("source address locked out", "addr", addrKey(remote), "lockout", s.config().RateLimit.Lockout.String())
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
