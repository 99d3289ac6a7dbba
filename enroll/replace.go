package enroll

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
)

// A replacement is a second link made while a device is active: its secret waits in the
// record's NextSecret (the record stays active, and logins keep using Secret) until a code from
// the new device confirms it. It follows the rules of a first link, with the record's
// PendingBinding and ConfirmTries: a binding to the flow that began it, tries counted before
// they are checked, MaxConfirmTries at most, expiry after ConfirmWithin.
//
// Who may start one is the caller's business: the portal and the SSH linking listener only
// after the user proved both factors, the console only for an admin.

// notLinked is the error for a user without an active device.
func notLinked(user string, state store.State) error {
	if state == store.StatePending {
		return fmt.Errorf("%w for %s: a device link is pending; confirm it first", ErrNotLinked, user)
	}
	return fmt.Errorf("%w for %s: link a device first", ErrNotLinked, user)
}

// dropNext forgets u's replacement in progress; the device linked now stays as it is.
func dropNext(u *store.User) {
	u.NextSecret = nil
	u.NextSince = time.Time{}
	u.ConfirmTries = 0
	u.PendingBinding = nil
}

// BeginReplace starts replacing active user's device and returns the new secret's one showing
// with the binding that ConfirmReplace and CancelReplace need. The device linked now keeps
// working until ConfirmReplace accepts a code from the new one.
//
// It refuses a user without an active device (ErrNotLinked) and, while an earlier replacement
// is pending and unexpired, starts nothing (ErrPending, saying when it expires; its secret is
// not shown again). An expired replacement, or one that used up its MaxConfirmTries codes, is
// dropped for the new one. The audit log gets replace_started and qr_shown, after
// replace_expired or replace_voided for a dropped one.
func (s *Service) BeginReplace(ctx context.Context, user string) (Link, Binding, error) {
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
		if u.State != store.StateActive {
			return notLinked(user, u.State)
		}
		if len(u.NextSecret) > 0 {
			exp := u.NextSince.Add(within)
			switch {
			case !exp.After(now):
				expiredAt = exp
			case u.ConfirmTries >= MaxConfirmTries:
				exhausted = true
			default:
				return fmt.Errorf("%w for %s: a phone replacement was started at %s; confirm it with a code from the new phone where it was started, or start again after it expires at %s (in %s)",
					ErrPending, user, formatTime(u.NextSince), formatTime(exp), exp.Sub(now).Round(time.Second))
			}
		}
		secret, err := totp.NewSecret()
		if err != nil {
			return fmt.Errorf("new secret: %w", err)
		}
		u.NextSecret = secret
		u.NextSince = now
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
	s.log().InfoContext(ctx, "replacement started", "user", user, "actor", actor, "door", DoorFrom(ctx), "expires_at", link.ExpiresAt)
	var events []store.Event
	switch {
	case !expiredAt.IsZero():
		events = append(events, store.Event{Kind: store.EventReplaceExpired, User: user, Actor: actor,
			Detail: "unconfirmed phone replacement expired at " + expiredAt.UTC().Format(time.RFC3339)})
	case exhausted:
		s.log().WarnContext(ctx, "replacement voided", "user", user, "actor", actor, "reason", "too many wrong codes")
		events = append(events, store.Event{Kind: store.EventReplaceVoided, User: user, Actor: actor,
			Detail: fmt.Sprintf("%d wrong codes tried; the replacement and its secret were dropped for a new one; the linked device still works", MaxConfirmTries)})
	}
	events = append(events,
		store.Event{Kind: store.EventReplaceStarted, User: user, Actor: actor,
			Detail: "confirm by " + link.ExpiresAt.UTC().Format(time.RFC3339) + "; the linked device works until then"},
		store.Event{Kind: store.EventQRShown, User: user, Actor: actor, Detail: "replacement secret handed out for its one showing"})
	s.audit(ctx, events...)
	return link, binding, nil
}

// ConfirmReplace makes the new device of user's replacement the linked one, if binding is the
// one BeginReplace returned and code is a valid code of the new secret, and returns
// RecoveryCodes new recovery codes (their one showing; the old ones are void from then on).
//
// The rules are Confirm's: a wrong binding is refused with ErrStartedElsewhere before anything
// is counted or checked; every code is counted before it is checked, in the same transaction,
// and at most MaxConfirmTries are ever checked per replacement; the attempt after them cancels
// it (ErrReplaceVoided, which matches ErrVoided; audited replace_voided), and an expired one is
// dropped (ErrExpired). Either way the device linked before stays linked and working. A code of
// the device linked now is refused with ErrCurrentDeviceCode, a code that the new secret gives
// at a step a few minutes off with a *ClockError; both match ErrBadCode and count as tries.
//
// A good code must also be newer than the last step used by the old device (the one-use rule
// holds across the change). The recovery codes are hashed outside the store's write lock, and a
// second transaction swaps the secrets, records the step as used and stores the new codes; it
// fails if the replacement changed in between. The audit log gets device_replaced.
func (s *Service) ConfirmReplace(ctx context.Context, user string, binding Binding, code string) ([]string, error) {
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
		switch {
		case u.State != store.StateActive:
			return notLinked(user, u.State)
		case len(u.NextSecret) == 0:
			return fmt.Errorf("%w for %s: no phone replacement is in progress; start one first", ErrNoPending, user)
		}
		exp := u.NextSince.Add(within)
		if !now.Before(exp) {
			at.expiredAt = exp
			dropNext(u)
			return nil
		}
		if !binding.matches(u.PendingBinding) {
			return fmt.Errorf("%w: this phone replacement can only be confirmed in the browser session, SSH connection or enroll command that started it; start again there, or anywhere after it expires at %s",
				ErrStartedElsewhere, formatTime(exp))
		}
		if u.ConfirmTries >= MaxConfirmTries {
			at.voided = true
			dropNext(u)
			return nil
		}
		u.ConfirmTries++
		at.try = u.ConfirmTries
		step, err := totp.Verify(u.NextSecret, code, now, s.skew(), u.LastStep)
		if err == nil {
			at.step = step
			return nil
		}
		// Last used step 0: whether the code is the current device's at all, used or not.
		if errors.Is(err, totp.ErrMismatch) {
			if _, cur := totp.Verify(u.Secret, code, now, s.skew(), 0); cur == nil {
				at.bad = ErrCurrentDeviceCode
				return nil
			}
		}
		at.bad = s.badCode(u, u.NextSecret, code, now, err)
		return nil
	})
	switch {
	case errors.Is(err, ErrStartedElsewhere):
		s.log().WarnContext(ctx, "replacement confirm refused", "user", user, "actor", actor, "reason", "binding does not match the replacement")
		return nil, err
	case err != nil:
		return nil, err
	case !at.expiredAt.IsZero():
		s.log().InfoContext(ctx, "replacement expired", "user", user, "actor", actor, "expired_at", at.expiredAt)
		s.audit(ctx, store.Event{Kind: store.EventReplaceExpired, User: user, Actor: actor,
			Detail: "unconfirmed phone replacement expired at " + at.expiredAt.UTC().Format(time.RFC3339)})
		return nil, fmt.Errorf("%w: the phone replacement for %s was not confirmed by %s; your current phone still works; start again",
			ErrExpired, user, formatTime(at.expiredAt))
	case at.voided:
		s.log().WarnContext(ctx, "replacement voided", "user", user, "actor", actor, "reason", "too many wrong codes")
		s.audit(ctx, store.Event{Kind: store.EventReplaceVoided, User: user, Actor: actor,
			Detail: fmt.Sprintf("%d wrong codes tried; a further attempt cancelled the replacement and dropped its secret; the linked device still works", MaxConfirmTries)})
		return nil, ErrReplaceVoided
	case at.bad != nil:
		s.logBadCode(ctx, "replacement confirm failed", user, actor, at)
		return nil, at.bad
	}

	codes, rs, err := newRecoverySet(ctx)
	if err != nil {
		return nil, err
	}
	err = s.Store.Update(user, func(u *store.User) error {
		// A caller that has gone away would never see the new recovery codes: the
		// replacement stays pending.
		if err := ctx.Err(); err != nil {
			return err
		}
		// Since the first transaction the replacement may have been confirmed by a concurrent
		// call with the same code, voided by concurrent wrong codes or cancelled, the user reset
		// by an admin, or the step used by a login of the old device.
		switch {
		case u.State != store.StateActive:
			return fmt.Errorf("%w for %s: the device was reset while the code was checked", ErrNotLinked, user)
		case len(u.NextSecret) == 0 || !binding.matches(u.PendingBinding):
			return fmt.Errorf("%w for %s: the phone replacement changed while the code was checked; start again if needed", ErrNoPending, user)
		case at.step <= u.LastStep:
			return ErrUsedCode
		}
		u.Secret = u.NextSecret
		u.EnrolledAt = now
		u.LastStep = at.step
		rs.SetOn(u)
		u.DriftSteps, u.DriftAt = 0, time.Time{}
		// Devices remembered after a key and a code from the old phone
		// must show a code from the new one.
		ForgetRemembered(u)
		dropNext(u)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log().InfoContext(ctx, "device replaced", "user", user, "actor", actor, "door", DoorFrom(ctx), "step", at.step, "try", at.try)
	s.audit(ctx, store.Event{Kind: store.EventDeviceReplaced, User: user, Actor: actor,
		Detail: fmt.Sprintf("the new device is linked, the old one no longer works; %d new recovery codes issued, the old ones are void", len(codes))})
	return codes, nil
}

// CancelReplace drops user's replacement in progress (its secret is forgotten; the device linked
// now stays linked), for the flow that began it: binding must be the one BeginReplace returned
// (ErrStartedElsewhere otherwise). Without a replacement in progress it returns ErrNoPending;
// without an active device, ErrNotLinked. The audit log gets replace_cancelled.
func (s *Service) CancelReplace(ctx context.Context, user string, binding Binding) error {
	if err := store.CheckName(user); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.Store.Update(user, func(u *store.User) error {
		switch {
		case u.State != store.StateActive:
			return notLinked(user, u.State)
		case len(u.NextSecret) == 0:
			return fmt.Errorf("%w for %s: no phone replacement is in progress", ErrNoPending, user)
		case !binding.matches(u.PendingBinding):
			return fmt.Errorf("%w: only the browser session, SSH connection or enroll command that started the phone replacement can cancel it", ErrStartedElsewhere)
		}
		dropNext(u)
		return nil
	})
	if err != nil {
		return err
	}
	actor := ActorFrom(ctx)
	s.log().InfoContext(ctx, "replacement cancelled", "user", user, "actor", actor, "door", DoorFrom(ctx))
	s.audit(ctx, store.Event{Kind: store.EventReplaceCancelled, User: user, Actor: actor,
		Detail: "the replacement and its secret were dropped; the linked device still works"})
	return nil
}

// RenewRecovery gives active user RecoveryCodes new recovery codes and returns them (their one
// showing); the codes left from before are void. A user without an active device gets
// ErrNotLinked. The codes are hashed before the store's write lock is taken. The audit log gets
// recovery_renewed.
func (s *Service) RenewRecovery(ctx context.Context, user string) ([]string, error) {
	if err := store.CheckName(user); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Refuse early, before the slow hashing, for a user who cannot have codes.
	u, err := s.Store.Get(user)
	if err != nil {
		return nil, err
	}
	if u.State != store.StateActive {
		return nil, notLinked(user, u.State)
	}
	codes, rs, err := newRecoverySet(ctx)
	if err != nil {
		return nil, err
	}
	var left int
	err = s.Store.Update(user, func(u *store.User) error {
		// A caller that has gone away would never see the new codes: the old ones stay.
		if err := ctx.Err(); err != nil {
			return err
		}
		if u.State != store.StateActive {
			return notLinked(user, u.State)
		}
		left = len(u.Recovery)
		rs.SetOn(u)
		return nil
	})
	if err != nil {
		return nil, err
	}
	actor := ActorFrom(ctx)
	s.log().InfoContext(ctx, "recovery codes renewed", "user", user, "actor", actor, "door", DoorFrom(ctx))
	s.audit(ctx, store.Event{Kind: store.EventRecoveryRenewed, User: user, Actor: actor,
		Detail: fmt.Sprintf("%d new recovery codes issued; the %d left from before are void", len(codes), left)})
	return codes, nil
}

// Sizes of SecurityLog.
const (
	// SecurityLogSize is how many events SecurityLog returns when asked for 0 or fewer.
	SecurityLogSize = 20
	// MaxSecurityLog is the most events SecurityLog returns.
	MaxSecurityLog = 1000
)

// SecurityLog returns user's last n audit events, newest first (n at most MaxSecurityLog; 0 or
// less means SecurityLogSize), for the user's own account page: logins accepted and refused,
// links, replacements, recovery codes used or renewed, resets. Events that cannot be read are
// left out (store.Events with a user does that).
func (s *Service) SecurityLog(ctx context.Context, user string, n int) ([]store.Event, error) {
	if err := store.CheckName(user); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if n <= 0 {
		n = SecurityLogSize
	}
	ev, err := s.Store.Events(store.EventQuery{User: user, Limit: min(n, MaxSecurityLog)})
	if err != nil {
		return nil, err
	}
	slices.Reverse(ev)
	return ev, nil
}
