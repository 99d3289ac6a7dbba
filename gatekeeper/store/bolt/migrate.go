package bolt

import (
	"gatekeeper/gatekeeper/store"

	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"go.etcd.io/bbolt"
)

// Migration reports what Open did to a schema 1 database.
type Migration struct {
	// From is the schema version migrated from.
	From int
	// Records and Tickets count the values rewritten in the authenticated
	// form.
	Records, Tickets int
	// Damaged names the users whose records were left as they were because
	// schema 1 could not read them either (see migrateV1); they read as
	// damaged until an admin resets them.
	Damaged []string
	// DamagedTickets counts the tickets left as they were (unreadable).
	DamagedTickets int
}

// Migrated returns what Open migrated, or nil when the database was already
// of the current schema (or new).
func (s *Store) Migrated() *Migration {
	return s.migrated
}

// migrateV1 rewrites the user records and tickets of a schema 1 database in
// the authenticated form of schema 2, inside init's transaction (so all of
// them or none). Open has checked the key file against the database before.
//
// A value that schema 1 would not have accepted either is left exactly as it
// was: the migration must not vouch for it, and one bad record must not keep
// every other user out by failing Open. Such a record then reads as damaged
// (ErrDamaged naming the user) and Delete removes it; such a ticket reads as
// no ticket and is swept on the next use of a ticket.
func (s *Store) migrateV1(tx *bbolt.Tx) (*Migration, error) {
	m := &Migration{From: 1}
	var err error
	m.Records, m.Damaged, err = s.migrateBucket(tx.Bucket(bucketUsers), s.migrateUserV1)
	if err != nil {
		return nil, fmt.Errorf("migrate user records to schema %d: %w", schemaVersion, err)
	}
	var badTickets []string
	m.Tickets, badTickets, err = s.migrateBucket(tx.Bucket(bucketTickets), s.migrateTicketV1)
	if err != nil {
		return nil, fmt.Errorf("migrate tickets to schema %d: %w", schemaVersion, err)
	}
	m.DamagedTickets = len(badTickets)
	return m, nil
}

// migrateBucket replaces every value of b by what convert makes of it where
// convert says ok, and returns how many it replaced and the keys it left
// alone. The values are read first and written after: bbolt does not allow
// changing a bucket under ForEach.
func (s *Store) migrateBucket(b *bbolt.Bucket, convert func(k, v []byte) ([]byte, bool)) (done int, left []string, err error) {
	type kv struct{ k, v []byte }
	var todo []kv
	err = b.ForEach(func(k, v []byte) error {
		if nv, ok := convert(k, v); ok {
			todo = append(todo, kv{bytes.Clone(k), nv})
		} else {
			left = append(left, string(k))
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	for _, e := range todo {
		if err := b.Put(e.k, e.v); err != nil {
			return 0, nil, err
		}
	}
	return len(todo), left, nil
}

// migrateUserV1 converts a schema 1 user record (the record JSON alone),
// when it is one that schema 1's Update would have accepted: a valid name, a
// known state, a secret for a pending or active user, and a secret that opens
// under this user's name (not one copied from another user).
func (s *Store) migrateUserV1(k, v []byte) ([]byte, bool) {
	name := string(k)
	var r store.Record
	switch {
	case store.CheckName(name) != nil, json.Unmarshal(v, &r) != nil:
		return nil, false
	case r.State != store.StateNone && r.State != store.StatePending && r.State != store.StateActive:
		return nil, false
	case r.State != store.StateNone && len(r.Sealed) == 0:
		return nil, false
	}
	if len(r.Sealed) > 0 {
		if _, err := s.codec.Open(r.Sealed, store.UserAD(name)); err != nil {
			return nil, false
		}
	}
	nv, err := s.codec.Authenticate(store.BucketUsers, k, r)
	return nv, err == nil
}

// migrateTicketV1 converts a schema 1 ticket (its JSON alone, keyed by the
// token's SHA-256) that names a valid user and an expiry time.
func (s *Store) migrateTicketV1(k, v []byte) ([]byte, bool) {
	var t store.Ticket
	if len(k) != sha256.Size || json.Unmarshal(v, &t) != nil || store.CheckName(t.User) != nil || t.Expires.IsZero() {
		return nil, false
	}
	nv, err := s.codec.Authenticate(store.BucketTickets, k, t)
	return nv, err == nil
}
