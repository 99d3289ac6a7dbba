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
	"errors"
	"fmt"
	"log/slog"
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

// Sentinel errors of the link flow. They are always returned wrapped with a message for the
// user (which says, for example, when a pending link expires), so test with errors.Is.
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

// Linker starts and confirms device links. *Service implements it in the daemon; the admin
// socket client implements it for the command line, so Terminal works with either. Confirm
// returns the link's recovery codes: their one showing.
type Linker interface {
	Begin(ctx context.Context, user string) (Link, error)
	Confirm(ctx context.Context, user, code string) ([]string, error)
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
// Skew is the number of 30 s steps accepted on either side of now (0 = the current step only).
type Service struct {
	Store         *store.Store
	Issuer        string
	Skew          int
	ConfirmWithin time.Duration
	Now           func() time.Time
	Log           *slog.Logger
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

// Begin starts a device link for user and returns the new secret. It refuses while a device is
// active (ErrAlreadyLinked) or while an earlier link is pending and unexpired (ErrPending; the
// earlier secret is not shown again). An expired pending link is replaced by a new secret.
// The user's last used TOTP step is kept, so no code can ever be accepted twice; recovery codes
// left from an earlier link are dropped. The audit log gets link_started and qr_shown (the
// returned Link is the one showing of the secret), after link_expired for a replaced link.
func (s *Service) Begin(ctx context.Context, user string) (Link, error) {
	if err := store.CheckName(user); err != nil {
		return Link{}, err
	}
	if err := ctx.Err(); err != nil {
		return Link{}, err
	}
	now := s.now()
	within := s.confirmWithin()
	var link Link
	var expiredAt time.Time
	err := s.Store.Update(user, func(u *store.User) error {
		expiredAt = time.Time{}
		switch u.State {
		case store.StateActive:
			return fmt.Errorf("%w for %s: linked on %s; an admin must reset it",
				ErrAlreadyLinked, user, u.EnrolledAt.Local().Format(time.DateOnly))
		case store.StatePending:
			if exp := u.PendingSince.Add(within); exp.After(now) {
				return fmt.Errorf("%w for %s: confirm it with a code from the app, or start again after it expires at %s (in %s)",
					ErrPending, user, formatTime(exp), exp.Sub(now).Round(time.Second))
			} else {
				expiredAt = exp
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
		return Link{}, err
	}
	actor := ActorFrom(ctx)
	s.log().InfoContext(ctx, "link started", "user", user, "actor", actor, "expires_at", link.ExpiresAt)
	var events []store.Event
	if !expiredAt.IsZero() {
		events = append(events, expiredEvent(user, actor, expiredAt))
	}
	until := "confirm by " + link.ExpiresAt.UTC().Format(time.RFC3339)
	events = append(events,
		store.Event{Kind: store.EventLinkStarted, User: user, Actor: actor, Detail: until},
		store.Event{Kind: store.EventQRShown, User: user, Actor: actor, Detail: "secret handed out for its one showing"})
	s.audit(ctx, events...)
	return link, nil
}

func expiredEvent(user, actor string, at time.Time) store.Event {
	return store.Event{Kind: store.EventLinkExpired, User: user, Actor: actor,
		Detail: "unconfirmed link expired at " + at.UTC().Format(time.RFC3339)}
}

// errNeedCodes makes Confirm's first transaction stop once the code is known to be good, so the
// recovery codes are hashed (slow on purpose) outside the store's write lock, and only for a
// good code.
var errNeedCodes = errors.New("recovery codes not made yet")

// Confirm activates user's pending link if code is a valid code of the pending secret, and
// returns its RecoveryCodes new recovery codes (stored only as hashes: this is their one
// showing). The matched time step is recorded as used in the same transaction that activates
// the link and stores the recovery codes, so the confirming code cannot log in afterwards. An
// expired link is dropped (ErrExpired) so that a new one can be started.
func (s *Service) Confirm(ctx context.Context, user, code string) ([]string, error) {
	if err := store.CheckName(user); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := s.now()
	within := s.confirmWithin()
	var expiredAt time.Time
	var step uint64
	var codes []string
	var salt []byte
	var hashes [][]byte
	fn := func(u *store.User) error {
		expiredAt = time.Time{}
		if u.State != store.StatePending {
			return fmt.Errorf("%w for %s (state %s): start a new link first", ErrNoPending, user, u.State)
		}
		if exp := u.PendingSince.Add(within); !now.Before(exp) {
			// Update writes nothing when fn fails, so reset the record here, return nil to
			// commit the reset, and report ErrExpired after the commit.
			expiredAt = exp
			u.State = store.StateNone
			u.Secret = nil
			u.PendingSince = time.Time{}
			return nil
		}
		var err error
		step, err = totp.Verify(u.Secret, code, now, s.Skew, u.LastStep)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadCode, err)
		}
		if hashes == nil {
			return errNeedCodes
		}
		u.State = store.StateActive
		u.EnrolledAt = now
		u.LastStep = step
		u.RecoverySalt, u.Recovery = salt, hashes
		return nil
	}
	err := s.Store.Update(user, fn)
	if errors.Is(err, errNeedCodes) {
		// The code was good a moment ago; the second transaction checks it again, so a code
		// used in between (a concurrent Confirm) is refused as a replay.
		if codes, err = NewRecoveryCodes(); err != nil {
			return nil, err
		}
		if salt, hashes, err = recoverySet(codes); err != nil {
			return nil, err
		}
		err = s.Store.Update(user, fn)
	}
	actor := ActorFrom(ctx)
	switch {
	case err != nil:
		if errors.Is(err, ErrBadCode) {
			s.log().WarnContext(ctx, "link confirm failed", "user", user, "actor", actor, "reason", err.Error())
		}
		return nil, err
	case !expiredAt.IsZero():
		s.log().InfoContext(ctx, "link expired", "user", user, "actor", actor, "expired_at", expiredAt)
		s.audit(ctx, expiredEvent(user, actor, expiredAt))
		return nil, fmt.Errorf("%w for %s at %s: start a new link", ErrExpired, user, formatTime(expiredAt))
	}
	s.log().InfoContext(ctx, "device linked", "user", user, "actor", actor, "step", step)
	s.audit(ctx, store.Event{Kind: store.EventLinkConfirmed, User: user, Actor: actor,
		Detail: fmt.Sprintf("%d recovery codes issued", len(codes))})
	return codes, nil
}

// formatTime renders a time for messages shown to users: local time with zone, to the second.
func formatTime(t time.Time) string {
	return t.Local().Format("2006-01-02 15:04:05 MST")
}
