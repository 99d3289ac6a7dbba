package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNoTicket is returned by UseTicket and CheckTicket for a ticket that is
// unknown, already used, expired or issued for another user.
var ErrNoTicket = errors.New("no valid ticket")

// maxTokenLen bounds a ticket token as typed (hostile input is hashed).
const maxTokenLen = 256

// ticket is the stored form of a ticket, keyed by sha256 of its token (the
// database never holds a usable token) and authenticated with that key (see
// authenticate), so that it can be neither forged nor moved to another user
// or token by editing the file.
type ticket struct {
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

// ticketKey is the tickets bucket key of token, or nil for a token that
// cannot be one.
func ticketKey(token string) []byte {
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

// AddTicket stores a one-time enrollment ticket token for user, valid until
// expires (the caller picks it, 24 h after issuing). Only the token's
// SHA-256 is stored; case, spaces and dashes in the token do not count. Any
// earlier ticket of user is revoked, so only the newest one handed out works.
func (s *Store) AddTicket(user, token string, expires time.Time) error {
	if err := CheckName(user); err != nil {
		return err
	}
	key := ticketKey(token)
	if key == nil {
		return errors.New("ticket token is empty or too long")
	}
	if expires.IsZero() {
		return errors.New("ticket without an expiry time")
	}
	v, err := s.authenticate(bucketTickets, key, ticket{User: user, Expires: expires.UTC()})
	if err != nil {
		return fmt.Errorf("encode ticket: %w", err)
	}
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTickets)
		_, err := deleteWhere(b, func(k, v []byte) bool {
			t, ok := s.readTicket(k, v)
			return ok && t.User == user
		})
		if err != nil {
			return err
		}
		return b.Put(key, v)
	})
}

// UseTicket spends user's ticket token at time now: it is deleted in the same
// committed transaction that found it valid, so it works once. An unknown,
// used, expired or other user's ticket, or one that fails its integrity
// check, is ErrNoTicket. Expired and unreadable tickets (of anyone) are
// deleted on the way.
func (s *Store) UseTicket(user, token string, now time.Time) error {
	var result error
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTickets)
		result = s.checkTicket(b, user, token, now)
		var used []byte
		if result == nil {
			used = ticketKey(token)
		}
		_, err := deleteWhere(b, func(k, v []byte) bool {
			if used != nil && bytes.Equal(k, used) {
				return true
			}
			t, ok := s.readTicket(k, v)
			return !ok || !now.Before(t.Expires)
		})
		return err
	})
	if err != nil {
		return err
	}
	return result
}

// CheckTicket reports whether user's ticket token is valid at now, without
// using it up: nil, or ErrNoTicket as UseTicket would return it.
func (s *Store) CheckTicket(user, token string, now time.Time) error {
	var result error
	err := s.view(func(tx *bolt.Tx) error {
		result = s.checkTicket(tx.Bucket(bucketTickets), user, token, now)
		return nil
	})
	if err != nil {
		return err
	}
	return result
}

// checkTicket is the validity check of UseTicket and CheckTicket. Another
// user's ticket reads as unknown: a guess learns nothing about it.
func (s *Store) checkTicket(b *bolt.Bucket, user, token string, now time.Time) error {
	key := ticketKey(token)
	if key == nil {
		return fmt.Errorf("%w: unknown or already used", ErrNoTicket)
	}
	v := b.Get(key)
	if v == nil {
		return fmt.Errorf("%w: unknown or already used", ErrNoTicket)
	}
	t, ok := s.readTicket(key, v)
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

// readTicket checks and decodes the stored ticket v under key k; ok is false
// for one that fails its integrity check or cannot be read.
func (s *Store) readTicket(k, v []byte) (t ticket, ok bool) {
	if err := s.verify(bucketTickets, k, v, &t); err != nil || t.User == "" || t.Expires.IsZero() {
		return ticket{}, false
	}
	return t, true
}
