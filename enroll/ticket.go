package enroll

import (
	"context"
	"fmt"
	"time"

	"gatekeeper/gatekeeper/store"
)

// TicketTTL is how long an enrollment ticket stays valid.
const TicketTTL = 24 * time.Hour

// ticketChars is a ticket's length: 20 characters of codeAlphabet, 100 bits.
const ticketChars = 20

// NewTicket returns a new random enrollment ticket token: 20 lowercase letters and digits without
// look-alikes (100 bits), in groups of four, such as "abcd-efgh-ijkm-npqr-stuv".
func NewTicket() (string, error) {
	t, err := randomCode(ticketChars)
	if err != nil {
		return "", err
	}
	return group(t), nil
}

// Ticket issues a one-time enrollment ticket for user, valid for TicketTTL: it lets the user
// link a device from outside the allowed networks, once. Only the newest ticket of a user works.
// actor is who asked for it, for the audit log ("" = ActorFrom(ctx)). A user with an active
// device gets ErrAlreadyLinked: the ticket would be useless until an admin reset.
// The token is returned once and never logged.
func (s *Service) Ticket(ctx context.Context, user, actor string) (token string, expires time.Time, err error) {
	if err := store.CheckName(user); err != nil {
		return "", time.Time{}, err
	}
	if err := ctx.Err(); err != nil {
		return "", time.Time{}, err
	}
	if actor == "" {
		actor = ActorFrom(ctx)
	}
	u, err := s.Store.Get(user)
	if err != nil {
		return "", time.Time{}, err
	}
	if u.State == store.StateActive {
		return "", time.Time{}, fmt.Errorf("%w for %s: linked on %s; reset it first, then issue the ticket",
			ErrAlreadyLinked, user, u.EnrolledAt.Local().Format(time.DateOnly))
	}
	token, err = NewTicket()
	if err != nil {
		return "", time.Time{}, err
	}
	expires = s.now().Add(TicketTTL)
	if err := s.Store.AddTicket(user, token, expires); err != nil {
		return "", time.Time{}, err
	}
	s.log().InfoContext(ctx, "ticket issued", "user", user, "actor", actor, "expires_at", expires)
	s.audit(ctx, store.Event{Kind: store.EventTicketIssued, User: user, Actor: actor,
		Detail: "valid until " + expires.UTC().Format(time.RFC3339)})
	return token, expires, nil
}

// State returns user's record as the store has it, never with the secret (store.Get). With
// Begin and Confirm it makes *Service the browser portal's Linker.
func (s *Service) State(ctx context.Context, user string) (store.User, error) {
	if err := ctx.Err(); err != nil {
		return store.User{}, err
	}
	return s.Store.Get(user)
}

// CheckTicket reports whether token is a valid, unused ticket for user,
// without using it up.
func (s *Service) CheckTicket(user, token string, now time.Time) error {
	return s.Store.CheckTicket(user, token, now)
}

// UseTicket spends user's ticket (it works once) and records that in the
// audit log.
func (s *Service) UseTicket(user, token string, now time.Time) error {
	if err := s.Store.UseTicket(user, token, now); err != nil {
		return err
	}
	s.audit(context.Background(), store.Event{Kind: store.EventTicketUsed, User: user})
	s.log().Info("linking ticket used", "user", user)
	return nil
}
