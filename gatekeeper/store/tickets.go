package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNoTicket is returned by UseTicket and CheckTicket for a ticket that is
// unknown, already used, expired or issued for another user.
var ErrNoTicket = errors.New("no valid ticket")

// maxTokenLen bounds a ticket token as typed (hostile input is hashed).
const maxTokenLen = 256

// Ticket is the stored form of a ticket, keyed by the SHA-256 of its token
// (the store never holds a usable token) and authenticated with that key
// (see Codec.Authenticate), so that it can be neither forged nor moved to
// another user or token by editing the stored data.
type Ticket struct {
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

// NormalizeTyped returns a code as a person may type it — any case, with
// spaces or dashes — in the one form it was issued in: lower case, without
// spaces and dashes. Tickets and recovery codes are compared in this form.
func NormalizeTyped(token string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == ' ' || r == '-' || r == '\t':
			return -1
		case 'A' <= r && r <= 'Z':
			return r + ('a' - 'A')
		}
		return r
	}, token)
}

// TicketKey is the storage key of token (its SHA-256), or nil for a token
// that cannot be one.
func TicketKey(token string) []byte {
	if len(token) > maxTokenLen {
		return nil
	}
	t := NormalizeTyped(token)
	if t == "" {
		return nil
	}
	h := sha256.Sum256([]byte(t))
	return h[:]
}

// NewTicket checks AddTicket's arguments and returns the key and stored value
// of the ticket.
func (c *Codec) NewTicket(user, token string, expires time.Time) (key, value []byte, err error) {
	if err := CheckName(user); err != nil {
		return nil, nil, err
	}
	key = TicketKey(token)
	if key == nil {
		return nil, nil, errors.New("ticket token is empty or too long")
	}
	if expires.IsZero() {
		return nil, nil, errors.New("ticket without an expiry time")
	}
	value, err = c.Authenticate(BucketTickets, key, Ticket{User: user, Expires: expires.UTC()})
	if err != nil {
		return nil, nil, fmt.Errorf("encode ticket: %w", err)
	}
	return key, value, nil
}

// ReadTicket checks and decodes the stored ticket v under key k; ok is false
// for one that fails its integrity check or cannot be read.
func (c *Codec) ReadTicket(k, v []byte) (t Ticket, ok bool) {
	if err := c.Verify(BucketTickets, k, v, &t); err != nil || t.User == "" || t.Expires.IsZero() {
		return Ticket{}, false
	}
	return t, true
}

// CheckTicket is the validity check of UseTicket and CheckTicket, given the
// stored value found under the token's key (nil: none). Another user's
// ticket reads as unknown: a guess learns nothing about it.
func (c *Codec) CheckTicket(key, stored []byte, user string, now time.Time) error {
	if key == nil || stored == nil {
		return fmt.Errorf("%w: unknown or already used", ErrNoTicket)
	}
	t, ok := c.ReadTicket(key, stored)
	switch {
	case !ok:
		return fmt.Errorf("%w: the stored ticket fails its integrity check (edited by hand?)", ErrNoTicket)
	case t.User != user:
		return fmt.Errorf("%w: unknown or already used", ErrNoTicket)
	}
	if !now.Before(t.Expires) {
		return fmt.Errorf("%w: expired at %s", ErrNoTicket, t.Expires.Format(time.RFC3339))
	}
	return nil
}
