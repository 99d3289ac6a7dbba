// Package enroll links a user's authenticator app ("device") to the gatekeeper: it creates a
// TOTP secret, shows it exactly once, and activates it only after the user typed one code from
// the app. The link state lives in the store; the check-and-record of the confirming code is one
// store transaction, so that code counts as used and can never log in.
//
// A confirmed link comes with recovery codes (stored only as argon2id hashes) that work once
// each at the login prompt instead of a code from the app; tickets let an admin allow one link
// from outside the allowed networks. Every step goes to the store's audit log.
package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
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
	// ErrAlreadyLinked means the user has an active device; an admin must reset it first.
	ErrAlreadyLinked = errors.New("a device is already linked")
	// ErrPending means a link was started and is neither confirmed nor expired yet.
	ErrPending = errors.New("a device link is already pending")
	// ErrNoPending means Confirm was called but no link is waiting for a code.
	ErrNoPending = errors.New("no device link is pending")
	// ErrExpired means the pending link was not confirmed in time; a new one may be started.
	ErrExpired = errors.New("the device link expired")
	// ErrBadCode means the code did not match (wrong, malformed or already used).
	ErrBadCode = errors.New("the code did not match")
	// ErrVoided means too many wrong codes were tried: the pending link was cancelled and its
	// secret dropped. Its text is what users are shown.
	ErrVoided = errors.New("too many wrong codes: this link was cancelled; start again")
	// ErrStartedElsewhere means Confirm's binding is not the one Begin handed out for the
	// pending link: the link belongs to another browser session, SSH connection or console
	// process. Nothing was counted and the code was not looked at.
	ErrStartedElsewhere = errors.New("this device link was started elsewhere")
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

// Service implements Linker on top of the store. The zero values of Issuer, ConfirmWithin, Now
// and Log fall back to DefaultIssuer, DefaultConfirmWithin, time.Now and a discarding logger.
// Skew is the number of 30 s steps accepted on either side of now (0 = the current step only);
// SetSkew changes it while the Service is in use.
type Service struct {
	Store         *store.Store
	Issuer        string
	Skew          int
	ConfirmWithin time.Duration
	Now           func() time.Time
	Log           *slog.Logger

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

var _ Linker = (*Service)(nil)

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

// audit appends events to the audit log. The change they record is committed already, so a
// failure is logged rather than returned: the user's link must not fail after the fact.
func (s *Service) audit(ctx context.Context, events ...store.Event) {
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
			return fmt.Errorf("%w for %s: linked on %s; an admin must reset it",
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
				return fmt.Errorf("%w for %s: confirm it with a code from the app where it was started, or start again after it expires at %s (in %s)",
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
// nothing (the attempt was counted in the first) and fails if the link changed in between.
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
			at.bad = fmt.Errorf("%w: %w", ErrBadCode, err)
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
		s.log().WarnContext(ctx, "link confirm failed", "user", user, "actor", actor,
			"try", at.try, "max_tries", MaxConfirmTries, "reason", at.bad.Error())
		return nil, at.bad
	}

	codes, err := NewRecoveryCodes()
	if err != nil {
		return nil, err
	}
	salt, hashes, err := recoverySet(codes)
	if err != nil {
		return nil, err
	}
	err = s.Store.Update(user, func(u *store.User) error {
		// The link may have changed since the first transaction: confirmed by a concurrent
		// Confirm with the same code, voided by concurrent wrong codes, reset by an admin.
		switch {
		case u.State != store.StatePending:
			return fmt.Errorf("%w for %s (state %s): it changed while the code was checked; start a new link if needed", ErrNoPending, user, u.State)
		case !binding.matches(u.PendingBinding):
			return fmt.Errorf("%w for %s: it was replaced while the code was checked", ErrNoPending, user)
		case at.step <= u.LastStep:
			return fmt.Errorf("%w: %w", ErrBadCode, totp.ErrReplay)
		}
		u.State = store.StateActive
		u.EnrolledAt = now
		u.LastStep = at.step
		u.RecoverySalt, u.Recovery = salt, hashes
		u.ConfirmTries = 0
		u.PendingBinding = nil
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

// formatTime renders a time for messages shown to users: local time with zone, to the second.
func formatTime(t time.Time) string {
	return t.Local().Format("2006-01-02 15:04:05 MST")
}
