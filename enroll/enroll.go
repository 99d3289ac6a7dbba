// Package enroll links a user's authenticator app ("device") to the gatekeeper: it creates a
// TOTP secret, shows it exactly once, and activates it only after the user typed one code from
// the app. The link state lives in the store; the check-and-record of the confirming code is one
// store transaction, so that code counts as used and can never log in.
//
// A confirmed link comes with recovery codes (stored only as argon2id hashes) that work once
// each at the login prompt instead of a code from the app; tickets let an admin allow one link
// from outside the allowed networks.
//
// A user with an active device can replace it (BeginReplace, ConfirmReplace): the new secret
// waits beside the old one, which keeps working until a code from the new device is confirmed,
// and then the old device and the old recovery codes stop working. RenewRecovery issues new
// recovery codes on their own. A confirmation code that is wrong now but right a few minutes
// off gets a *ClockError, which tells the user to fix the phone's clock. Every step goes to the
// store's audit log, naming the door it came through (WithDoor); SecurityLog reads a user's
// own events back.
package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
)

// Defaults used when the Service's fields are left zero.
const (
	// DefaultIssuer names the service in the authenticator app when no issuer is configured.
	DefaultIssuer = "gatekeeper"
	// DefaultConfirmWithin is how long an unconfirmed link stays pending.
	DefaultConfirmWithin = 10 * time.Minute
)

// MaxConfirmTries is how many confirmation codes are ever checked against one pending link,
// counted per user in the store, whichever flow or how many at once send them. The attempt
// after the last one voids the link (EventLinkVoided): a sixth guess is never evaluated, and
// linking starts again with a new secret.
const MaxConfirmTries = 5

// EventLinkVoided is the audit event of a pending link cancelled because MaxConfirmTries wrong
// codes were tried: its secret is dropped. (Event kinds are free strings in the store; this
// one belongs to package enroll.)
const EventLinkVoided = "link_voided"

// RefusalDelay is how long the linking portal and SSH listener take to refuse a sign-in that
// fails before the password is checked (no ticket, a wrong ticket, a malformed name): about as
// long as the password check's own refusal (the front door's failure_delay), so that the reply's
// timing does not say which part was wrong, and so that such refusals cannot be repeated at
// connection speed.
const RefusalDelay = 3 * time.Second

// WaitRefusal waits RefusalDelay, or until ctx ends.
func WaitRefusal(ctx context.Context) {
	t := time.NewTimer(RefusalDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Sentinel errors of the link flow. They are returned wrapped with a message for the user
// (which says, for example, when a pending link expires), so test with errors.Is; ErrVoided's
// own text is that message.
var (
	// ErrAlreadyLinked means the user has an active device: it can be replaced (BeginReplace),
	// or an admin resets it, but a second first link is refused.
	ErrAlreadyLinked = errors.New("a device is already linked")
	// ErrNotLinked means the user has no active device: there is nothing to replace and no
	// recovery codes to renew; link a device first.
	ErrNotLinked = errors.New("no device is linked")
	// ErrPending means a link was started and is neither confirmed nor expired yet.
	ErrPending = errors.New("a device link is already pending")
	// ErrNoPending means Confirm (or ConfirmReplace, CancelReplace) was called but no link (or
	// replacement) is waiting for a code.
	ErrNoPending = errors.New("no device link is pending")
	// ErrExpired means the pending link was not confirmed in time; a new one may be started.
	ErrExpired = errors.New("the device link expired")
	// ErrBadCode means the code did not match (wrong, malformed or already used).
	ErrBadCode = errors.New("the code did not match")
	// ErrUsedCode means the code's 30-second window was used already, by a login or by the
	// code that confirmed a link: every window's code is good once, across phones too (a
	// replacement confirmed in the window its sign-in used). It matches ErrBadCode.
	ErrUsedCode = fmt.Errorf("%w: %w", ErrBadCode, totp.ErrReplay)
	// ErrVoided means too many wrong codes were tried: the pending link was cancelled and its
	// secret dropped. Its text is what users are shown.
	ErrVoided = errors.New("too many wrong codes: this link was cancelled; start again")
	// ErrStartedElsewhere means Confirm's binding is not the one Begin handed out for the
	// pending link: the link belongs to another browser session, SSH connection or console
	// process. Nothing was counted and the code was not looked at.
	ErrStartedElsewhere = errors.New("this device link was started elsewhere")
)

// ClockWindow is how far either side of now, in 30 s time steps, a refused confirmation code is
// looked for in order to tell the user that the phone's clock is off: 20 steps, ten minutes.
// Further off than that, the code is more likely a typo than a clock.
const ClockWindow = 20

// ClockError is the error of a confirmation code that is wrong now but is what the new secret
// gives at a time step outside the skew and within ClockWindow of now: the phone's clock is off
// by about that much. It matches ErrBadCode (the attempt counted as a try and confirmed
// nothing); its text is the message for the user.
type ClockError struct {
	// Steps is how many 30 s time steps the phone's clock is off: positive when it is ahead
	// (fast), negative when it is behind (slow).
	Steps int
}

// Minutes is how far off the phone's clock is, in whole minutes (rounded, at least 1).
func (e *ClockError) Minutes() int {
	return max(int(math.Round(math.Abs(float64(e.Steps)*totp.Period.Minutes()))), 1)
}

// Fast reports whether the phone's clock is ahead.
func (e *ClockError) Fast() bool { return e.Steps > 0 }

// Error is the message for the user, such as "Your phone's clock is about 4 minutes fast. Turn
// on automatic date and time on the phone, then try a new code."
func (e *ClockError) Error() string {
	way := "slow"
	if e.Fast() {
		way = "fast"
	}
	n, unit := e.Minutes(), "minutes"
	if n == 1 {
		unit = "minute"
	}
	return fmt.Sprintf("Your phone's clock is about %d %s %s. Turn on automatic date and time on the phone, then try a new code.",
		n, unit, way)
}

// Unwrap makes a ClockError match ErrBadCode.
func (e *ClockError) Unwrap() error { return ErrBadCode }

// userError is a sentinel error whose text is shown to users as it is and which also matches a
// more general sentinel.
type userError struct {
	msg  string
	base error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.base }

// Sentinel errors of the replacement flow that are also the message for the user.
var (
	// ErrReplaceVoided means too many wrong codes were tried against a replacement: it was
	// cancelled and its secret dropped, and the device linked before keeps working. It matches
	// ErrVoided.
	ErrReplaceVoided error = &userError{
		msg:  "too many wrong codes: the phone replacement was cancelled; your current phone still works; start again",
		base: ErrVoided,
	}
	// ErrCurrentDeviceCode means ConfirmReplace was given a code of the device linked now
	// rather than of the new one. It matches ErrBadCode; the attempt counted as a try.
	ErrCurrentDeviceCode error = &userError{
		msg:  "that code is from the phone linked now, not from the new one: type a code from the app you just set up",
		base: ErrBadCode,
	}
)

// Link is the one showing of a new secret: whoever receives it must display it to the user and
// then forget it. It is never produced twice for the same secret.
type Link struct {
	User      string    `json:"user"`
	Issuer    string    `json:"issuer"`
	Secret    string    `json:"secret"` // base32, no padding
	URI       string    `json:"uri"`    // otpauth://totp/...
	ExpiresAt time.Time `json:"expires_at"`
}

// Binding ties a pending link to the one flow that began it (a portal session, an SSH channel,
// a console process): Begin hands it out, the store keeps only its SHA-256, and Confirm works
// only with it. Without it, anyone who knows the user's password could confirm (and collect the
// recovery codes of) a link that someone else is in the middle of. The holder keeps it in
// memory; it is never shown to the user. String and LogValue hide it, so that printing or
// logging one by mistake gives nothing away; string(b) is the token itself.
type Binding string

// String hides the token.
func (Binding) String() string { return "[binding]" }

// GoString hides the token from %#v.
func (Binding) GoString() string { return "enroll.Binding([hidden])" }

// LogValue hides the token from log/slog.
func (Binding) LogValue() slog.Value { return slog.StringValue("[binding]") }

// newBinding returns a fresh random binding token (130 bits).
func newBinding() Binding { return Binding(rand.Text()) }

// hash is the form the store keeps.
func (b Binding) hash() []byte {
	h := sha256.Sum256([]byte(b))
	return h[:]
}

// matches reports whether b is the token whose hash is stored. A record without a stored hash
// (a link begun by an older gatekeeper) matches nothing: such a link simply expires.
func (b Binding) matches(stored []byte) bool {
	return len(stored) == sha256.Size && b != "" && subtle.ConstantTimeCompare(b.hash(), stored) == 1
}

// Linker starts and confirms device links. *Service implements it in the daemon; the admin
// socket client implements it for the command line, so Terminal works with either. Begin
// returns the one showing of the secret and the binding that Confirm needs; Confirm returns
// the link's recovery codes: their one showing, to the binding's holder only.
type Linker interface {
	Begin(ctx context.Context, user string) (Link, Binding, error)
	Confirm(ctx context.Context, user string, binding Binding, code string) ([]string, error)
}

// Replacer replaces an active user's device: BeginReplace returns the one showing of the new
// secret and the binding that ConfirmReplace and CancelReplace need; until ConfirmReplace
// accepts a code from the new device, the old one keeps working. ConfirmReplace returns the new
// recovery codes (their one showing). *Service implements it in the daemon and the admin socket
// client for the command line, so TerminalReplace works with either.
type Replacer interface {
	BeginReplace(ctx context.Context, user string) (Link, Binding, error)
	ConfirmReplace(ctx context.Context, user string, binding Binding, code string) ([]string, error)
	CancelReplace(ctx context.Context, user string, binding Binding) error
}

// ActorConsole is the audit log's actor for calls without WithActor: a command working on the
// database directly, on the console.
const ActorConsole = "console"

type actorKey struct{}

// WithActor returns ctx carrying actor, who the audit log names for the Service calls made with
// it: "uid 0" for an admin socket caller, "portal" for the browser portal, and so on.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns the actor WithActor put in ctx, or ActorConsole.
func ActorFrom(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return ActorConsole
}

type doorKey struct{}

// WithDoor returns ctx carrying door (store.DoorSSH, DoorPortal, DoorLinking or DoorConsole):
// where the Service calls made with it come from. Every audit event the Service writes names it,
// so that the user's security log can say where something happened.
func WithDoor(ctx context.Context, door string) context.Context {
	return context.WithValue(ctx, doorKey{}, door)
}

// DoorFrom returns the door WithDoor put in ctx, or "" when it is not known.
func DoorFrom(ctx context.Context) string {
	d, _ := ctx.Value(doorKey{}).(string)
	return d
}

// Service implements Linker and Replacer on top of the store. The zero values of Issuer,
// ConfirmWithin, Now and Log fall back to DefaultIssuer, DefaultConfirmWithin, time.Now and a
// discarding logger. Skew is the number of 30 s steps accepted on either side of now (0 = the
// current step only); SetSkew changes it while the Service is in use.
type Service struct {
	Store         store.Store
	Issuer        string
	Skew          int
	ConfirmWithin time.Duration
	Now           func() time.Time
	Log           *slog.Logger
	// KeyPolicy is what keys.* allows for registered SSH keys.
	KeyPolicy KeyPolicy
	// EndKeySessions, when set, ends user's live sessions that logged in
	// with the key of fingerprint fp, on every node, and returns how many
	// there were (RevokeKey calls it).
	EndKeySessions func(user, fp string) int

	// reloadedSkew, once set by SetSkew, replaces Skew.
	reloadedSkew atomic.Pointer[int]
}

// SetSkew makes the confirmations that follow accept n steps either side of now (a config
// reload); it is safe to call while the Service is in use.
func (s *Service) SetSkew(n int) { s.reloadedSkew.Store(&n) }

func (s *Service) skew() int {
	if p := s.reloadedSkew.Load(); p != nil {
		return *p
	}
	return s.Skew
}

var (
	_ Linker   = (*Service)(nil)
	_ Replacer = (*Service)(nil)
)

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) issuer() string {
	if s.Issuer != "" {
		return s.Issuer
	}
	return DefaultIssuer
}

func (s *Service) confirmWithin() time.Duration {
	if s.ConfirmWithin > 0 {
		return s.ConfirmWithin
	}
	return DefaultConfirmWithin
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// audit appends events to the audit log, each naming ctx's door (DoorFrom) unless it names one
// already. The change they record is committed already, so a failure is logged rather than
// returned: the user's link must not fail after the fact.
func (s *Service) audit(ctx context.Context, events ...store.Event) {
	door := DoorFrom(ctx)
	for i := range events {
		if events[i].Door == "" {
			events[i].Door = door
		}
	}
	if err := s.Store.Append(events...); err != nil {
		s.log().ErrorContext(ctx, "audit log write failed", "err", err, "kind", events[0].Kind, "user", events[0].User)
	}
}

// Begin starts a device link for user and returns the new secret with the binding that
// Confirm needs. It refuses while a device is active (ErrAlreadyLinked) or while an earlier
// link is pending and unexpired (ErrPending; the earlier secret is not shown again). An
// expired pending link, or one that used up its MaxConfirmTries codes, is replaced by a new
// secret. The user's last used TOTP step is kept, so no code can ever be accepted twice;
// recovery codes left from an earlier link are dropped. The audit log gets link_started and
// qr_shown (the returned Link is the one showing of the secret), after link_expired or
// link_voided for a replaced link. The binding is neither logged nor audited.
func (s *Service) Begin(ctx context.Context, user string) (Link, Binding, error) {
	if err := store.CheckName(user); err != nil {
		return Link{}, "", err
	}
	if err := ctx.Err(); err != nil {
		return Link{}, "", err
	}
	now := s.now()
	within := s.confirmWithin()
	binding := newBinding()
	var link Link
	var expiredAt time.Time
	var exhausted bool
	err := s.Store.Update(user, func(u *store.User) error {
		expiredAt, exhausted = time.Time{}, false
		switch u.State {
		case store.StateActive:
			return fmt.Errorf("%w for %s: linked on %s; replace it with the new device instead, or have an admin reset it",
				ErrAlreadyLinked, user, u.EnrolledAt.Local().Format(time.DateOnly))
		case store.StatePending:
			exp := u.PendingSince.Add(within)
			switch {
			case !exp.After(now):
				expiredAt = exp
			case u.ConfirmTries >= MaxConfirmTries:
				// No code can confirm it any more: it only waits for the void.
				exhausted = true
			default:
				return fmt.Errorf("%w for %s: confirm it with a code from the app where it was started, or start again after it expires at %s (in %s) or after an admin resets it",
					ErrPending, user, formatTime(exp), exp.Sub(now).Round(time.Second))
			}
		}
		secret, err := totp.NewSecret()
		if err != nil {
			return fmt.Errorf("new secret: %w", err)
		}
		if u.CreatedAt.IsZero() {
			u.CreatedAt = now
		}
		u.State = store.StatePending
		u.Secret = secret
		u.PendingSince = now
		u.EnrolledAt = time.Time{}
		u.RecoverySalt, u.Recovery = nil, nil
		u.ConfirmTries = 0
		u.PendingBinding = binding.hash()
		link = Link{
			User:      user,
			Issuer:    s.issuer(),
			Secret:    totp.EncodeSecret(secret),
			URI:       totp.URI(s.issuer(), user, secret),
			ExpiresAt: now.Add(within),
		}
		return nil
	})
	if err != nil {
		return Link{}, "", err
	}
	actor := ActorFrom(ctx)
	s.log().InfoContext(ctx, "link started", "user", user, "actor", actor, "expires_at", link.ExpiresAt)
	var events []store.Event
	switch {
	case !expiredAt.IsZero():
		events = append(events, expiredEvent(user, actor, expiredAt))
	case exhausted:
		s.log().WarnContext(ctx, "link voided", "user", user, "actor", actor, "reason", "too many wrong codes")
		events = append(events, store.Event{Kind: EventLinkVoided, User: user, Actor: actor,
			Detail: fmt.Sprintf("%d wrong codes tried; the pending link and its secret were dropped for a new link", MaxConfirmTries)})
	}
	until := "confirm by " + link.ExpiresAt.UTC().Format(time.RFC3339)
	events = append(events,
		store.Event{Kind: store.EventLinkStarted, User: user, Actor: actor, Detail: until},
		store.Event{Kind: store.EventQRShown, User: user, Actor: actor, Detail: "secret handed out for its one showing"})
	s.audit(ctx, events...)
	return link, binding, nil
}

func expiredEvent(user, actor string, at time.Time) store.Event {
	return store.Event{Kind: store.EventLinkExpired, User: user, Actor: actor,
		Detail: "unconfirmed link expired at " + at.UTC().Format(time.RFC3339)}
}

// dropPending forgets u's pending link: state none, secret and binding gone, count reset.
func dropPending(u *store.User) {
	u.State = store.StateNone
	u.Secret = nil
	u.PendingSince = time.Time{}
	u.ConfirmTries = 0
	u.PendingBinding = nil
}

// attempt is what Confirm's first transaction found out. Update writes nothing when its fn
// fails, so every outcome that must be committed (a counted try, an expired or voided link)
// is returned as nil from fn and reported through this instead.
type attempt struct {
	expiredAt time.Time // the link had expired and was dropped
	voided    bool      // the tries were used up and the link was dropped
	try       int       // this attempt's number, 1 to MaxConfirmTries
	bad       error     // the code did not match (wraps ErrBadCode)
	step      uint64    // the matched time step, when bad is nil
}

// Confirm activates user's pending link if binding is the one Begin returned for it and code
// is a valid code of its secret, and returns RecoveryCodes new recovery codes (stored only as
// hashes: this is their one showing).
//
// Every code is counted before it is checked, in the same store transaction, and the count is
// committed even when the code is wrong; at most MaxConfirmTries codes are ever checked per
// pending link, however many Confirm calls race. The next attempt voids the link (ErrVoided,
// audited as EventLinkVoided): linking then starts again with a new secret. A wrong binding
// is refused with ErrStartedElsewhere before anything is counted or checked. An expired link
// is dropped (ErrExpired) so that a new one can be started.
//
// A good code is not yet the end: the recovery codes are hashed (slow on purpose) outside the
// store's write lock, and a second transaction activates the link, recording the matched step
// as used so that the confirming code cannot log in afterwards. That transaction counts
// nothing (the attempt was counted in the first) and fails if the link changed in between, or
// with ctx's error if ctx ended first: a caller that gave up would never see the recovery codes,
// so the link is not activated without them.
func (s *Service) Confirm(ctx context.Context, user string, binding Binding, code string) ([]string, error) {
	if err := store.CheckName(user); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := s.now()
	within := s.confirmWithin()
	actor := ActorFrom(ctx)

	var at attempt
	err := s.Store.Update(user, func(u *store.User) error {
		at = attempt{}
		if u.State != store.StatePending {
			return fmt.Errorf("%w for %s (state %s): start a new link first", ErrNoPending, user, u.State)
		}
		exp := u.PendingSince.Add(within)
		if !now.Before(exp) {
			// Dead anyway: whoever finds it drops it, as Begin would.
			at.expiredAt = exp
			dropPending(u)
			return nil
		}
		if !binding.matches(u.PendingBinding) {
			return fmt.Errorf("%w: it can only be confirmed in the browser session, SSH connection or enroll command that started it; start again there, or anywhere after it expires at %s",
				ErrStartedElsewhere, formatTime(exp))
		}
		if u.ConfirmTries >= MaxConfirmTries {
			at.voided = true
			dropPending(u)
			return nil
		}
		u.ConfirmTries++
		at.try = u.ConfirmTries
		step, err := totp.Verify(u.Secret, code, now, s.skew(), u.LastStep)
		if err != nil {
			at.bad = s.badCode(u, u.Secret, code, now, err)
			return nil
		}
		at.step = step
		return nil
	})
	switch {
	case errors.Is(err, ErrStartedElsewhere):
		s.log().WarnContext(ctx, "link confirm refused", "user", user, "actor", actor, "reason", "binding does not match the pending link")
		return nil, err
	case err != nil:
		return nil, err
	case !at.expiredAt.IsZero():
		s.log().InfoContext(ctx, "link expired", "user", user, "actor", actor, "expired_at", at.expiredAt)
		s.audit(ctx, expiredEvent(user, actor, at.expiredAt))
		return nil, fmt.Errorf("%w for %s at %s: start a new link", ErrExpired, user, formatTime(at.expiredAt))
	case at.voided:
		s.log().WarnContext(ctx, "link voided", "user", user, "actor", actor, "reason", "too many wrong codes")
		s.audit(ctx, store.Event{Kind: EventLinkVoided, User: user, Actor: actor,
			Detail: fmt.Sprintf("%d wrong codes tried; a further attempt cancelled the pending link and dropped its secret", MaxConfirmTries)})
		return nil, ErrVoided
	case at.bad != nil:
		s.logBadCode(ctx, "link confirm failed", user, actor, at)
		return nil, at.bad
	}

	codes, rs, err := newRecoverySet(ctx)
	if err != nil {
		return nil, err
	}
	err = s.Store.Update(user, func(u *store.User) error {
		// A caller that has gone away (the admin command timed out, the browser closed) would
		// never see the recovery codes: the link stays pending, to be confirmed again.
		if err := ctx.Err(); err != nil {
			return err
		}
		// The link may have changed since the first transaction: confirmed by a concurrent
		// Confirm with the same code, voided by concurrent wrong codes, reset by an admin.
		switch {
		case u.State != store.StatePending:
			return fmt.Errorf("%w for %s (state %s): it changed while the code was checked; start a new link if needed", ErrNoPending, user, u.State)
		case !binding.matches(u.PendingBinding):
			return fmt.Errorf("%w for %s: it was replaced while the code was checked", ErrNoPending, user)
		case at.step <= u.LastStep:
			return ErrUsedCode
		}
		u.State = store.StateActive
		u.EnrolledAt = now
		u.LastStep = at.step
		rs.SetOn(u)
		u.ConfirmTries = 0
		u.PendingBinding = nil
		// A new device: whatever drift was seen while linking it is history.
		u.DriftSteps, u.DriftAt = 0, time.Time{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log().InfoContext(ctx, "device linked", "user", user, "actor", actor, "step", at.step, "try", at.try)
	s.audit(ctx, store.Event{Kind: store.EventLinkConfirmed, User: user, Actor: actor,
		Detail: fmt.Sprintf("%d recovery codes issued", len(codes))})
	return codes, nil
}

// badCode is the error for code, refused by totp.Verify with err against secret (the secret
// being confirmed) inside the store transaction that counted the try. A code that secret gives
// at a step within ClockWindow (outside the skew) is a *ClockError, and that drift is recorded
// in u for support; anything else wraps ErrBadCode and err.
func (s *Service) badCode(u *store.User, secret []byte, code string, now time.Time, err error) error {
	if errors.Is(err, totp.ErrMismatch) {
		if steps, ok := totp.Drift(secret, code, now, s.skew(), ClockWindow); ok {
			u.DriftSteps, u.DriftAt = steps, now
			return &ClockError{Steps: steps}
		}
	}
	if errors.Is(err, totp.ErrReplay) {
		return ErrUsedCode
	}
	return fmt.Errorf("%w: %w", ErrBadCode, err)
}

// logBadCode logs a refused confirmation code, with the clock drift when that is why.
func (s *Service) logBadCode(ctx context.Context, msg, user, actor string, at attempt) {
	attrs := []any{"user", user, "actor", actor, "try", at.try, "max_tries", MaxConfirmTries, "reason", at.bad.Error()}
	if ce, ok := errors.AsType[*ClockError](at.bad); ok {
		attrs = append(attrs, "clock_steps", ce.Steps)
	}
	s.log().WarnContext(ctx, msg, attrs...)
}

// formatTime renders a time for messages shown to users: local time with zone, to the second.
func formatTime(t time.Time) string {
	return t.Local().Format("2006-01-02 15:04:05 MST")
}
