package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"gatekeeper/gatekeeper/store"
	bbolt "go.etcd.io/bbolt"
)

// Dump calls fn with every user record and ticket as stored, and with the
// audit events when audit is true, all read in one transaction (a consistent
// snapshot). Each is checked (store.Codec.CheckItem): one that fails has
// Damaged set. fn must not use the Store.
func (s *Store) Dump(audit bool, fn func(store.Item) error) error {
	checked := func(it store.Item) error {
		it.Damaged = s.codec.CheckItem(it)
		return fn(it)
	}
	return s.view(func(tx *bbolt.Tx) error {
		err := tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			return checked(store.Item{Kind: store.ItemUser, Key: string(k), Value: bytes.Clone(v)})
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketTickets).ForEach(func(k, v []byte) error {
			return checked(store.Item{Kind: store.ItemTicket, Key: hex.EncodeToString(k), Value: bytes.Clone(v)})
		})
		if err != nil || !audit {
			return err
		}
		return tx.Bucket(bucketAudit).ForEach(func(k, v []byte) error {
			return checked(store.Item{Kind: store.ItemEvent, Value: bytes.Clone(v)})
		})
	})
}

// Load writes items (from Dump of any backend) in one transaction, after
// checking all of them (store.Codec.CheckItems). Users who already have a
// record are refused, all of them named, unless force is set. Events are
// appended after the existing ones, in the items' order, except those the log
// already holds (the same bytes, as many times as it holds them): a backup
// restored twice adds its events once, as etcd's Load. They are counted as
// restored, and in EventsHeld.
func (s *Store) Load(items []store.Item, force bool) (store.LoadResult, error) {
	var res store.LoadResult
	if _, err := s.codec.CheckItems(items); err != nil {
		return res, err
	}
	// The log is read for the events it holds before the write transaction, in a read one:
	// a long log read under bbolt's one writer lock would hold up every login meanwhile.
	held := store.NewHeldEvents(items)
	if held != nil {
		err := s.view(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketAudit).ForEach(func(_, v []byte) error {
				held.See(v)
				return nil
			})
		})
		if err != nil {
			return res, err
		}
	}
	err := s.update(func(tx *bbolt.Tx) error {
		res = store.LoadResult{}
		users, tickets, audit := tx.Bucket(bucketUsers), tx.Bucket(bucketTickets), tx.Bucket(bucketAudit)
		if !force {
			var exist []string
			for _, it := range items {
				if it.Kind == store.ItemUser && users.Get([]byte(it.Key)) != nil {
					exist = append(exist, it.Key)
				}
			}
			if len(exist) > 0 {
				return store.ExistsError(exist)
			}
		}
		seq := audit.Sequence()
		if k, _ := audit.Cursor().Last(); len(k) == 8 {
			seq = max(seq, binary.BigEndian.Uint64(k))
		}
		for _, it := range items {
			var err error
			switch it.Kind {
			case store.ItemUser:
				err = users.Put([]byte(it.Key), it.Value)
				res.Users++
			case store.ItemTicket:
				k, _ := hex.DecodeString(it.Key) // checked
				err = tickets.Put(k, it.Value)
				res.Tickets++
			case store.ItemEvent:
				res.Events++
				if held.Take(it.Value) {
					res.EventsHeld++
					continue
				}
				seq++
				err = audit.Put(seqKey(seq), it.Value)
			}
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
		}
		return audit.SetSequence(seq)
	})
	return res, err
}

// Leader reports that this node prunes the audit log: it is the only one.
func (s *Store) Leader() bool { return true }

var _ store.Store = (*Store)(nil)
