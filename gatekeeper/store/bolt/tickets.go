package bolt

import (
	"bytes"
	"time"

	"gatekeeper/gatekeeper/store"

	"go.etcd.io/bbolt"
)

// AddTicket stores a one-time enrollment ticket token for user, valid until
// expires (the caller picks it, 24 h after issuing). Only the token's
// SHA-256 is stored; case, spaces and dashes in the token do not count. Any
// earlier ticket of user is revoked, so only the newest one handed out works.
func (s *Store) AddTicket(user, token string, expires time.Time) error {
	key, v, err := s.codec.NewTicket(user, token, expires)
	if err != nil {
		return err
	}
	return s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTickets)
		_, err := deleteWhere(b, func(k, v []byte) bool {
			t, ok := s.codec.ReadTicket(k, v)
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
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTickets)
		result = s.checkTicket(b, user, token, now)
		var used []byte
		if result == nil {
			used = store.TicketKey(token)
		}
		_, err := deleteWhere(b, func(k, v []byte) bool {
			if used != nil && bytes.Equal(k, used) {
				return true
			}
			t, ok := s.codec.ReadTicket(k, v)
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
	err := s.view(func(tx *bbolt.Tx) error {
		result = s.checkTicket(tx.Bucket(bucketTickets), user, token, now)
		return nil
	})
	if err != nil {
		return err
	}
	return result
}

// checkTicket is the validity check of UseTicket and CheckTicket.
func (s *Store) checkTicket(b *bbolt.Bucket, user, token string, now time.Time) error {
	key := store.TicketKey(token)
	var v []byte
	if key != nil {
		v = b.Get(key)
	}
	return s.codec.CheckTicket(key, v, user, now)
}
