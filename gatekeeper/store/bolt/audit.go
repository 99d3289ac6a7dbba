package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"gatekeeper/gatekeeper/store"

	"go.etcd.io/bbolt"
)

// Append adds events to the audit log in one committed transaction: all or
// none. It sets each event's Seq and, when zero, its Time (to now); strings
// longer than 1 KiB are cut. The log is append-only: nothing changes or
// removes an event except PruneEvents. On a full disk it fails with an error
// matching ErrNoSpace.
func (s *Store) Append(events ...store.Event) error {
	if len(events) == 0 {
		return nil
	}
	now := time.Now().UTC()
	vals := make([][]byte, len(events))
	for i, e := range events {
		v, err := store.EncodeEvent(e, now)
		if err != nil {
			return err
		}
		vals[i] = v
	}
	return s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		// Append-only: start after both the bucket's sequence and its last
		// key, so that not even a sequence counter gone back (a restored
		// or hand-edited file) overwrites an event.
		seq := b.Sequence()
		if k, _ := b.Cursor().Last(); len(k) == 8 {
			seq = max(seq, binary.BigEndian.Uint64(k))
		}
		for _, v := range vals {
			seq++
			if err := b.Put(seqKey(seq), v); err != nil {
				return fmt.Errorf("audit log: %w", err)
			}
		}
		return b.SetSequence(seq)
	})
}

// Events returns the events q selects, oldest first. With a Limit it walks
// the log from the newest end and stops once it has Limit events. A stored
// event that cannot be read comes back as an EventDamaged event (with its
// Seq) unless q selects a user.
func (s *Store) Events(q store.EventQuery) ([]store.Event, error) {
	events := []store.Event{} // never nil: "no events" encodes as [], not null
	err := s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			e, ok := decodeEvent(k, v)
			if !q.Matches(e, ok) {
				continue
			}
			events = append(events, e)
			if q.Limit > 0 && len(events) >= q.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Reverse(events)
	return events, nil
}

// pruneBatch is the most events PruneEvents deletes in one write
// transaction. bbolt has one writer lock, and every login needs it to record
// its time step: a batch this size commits in a few milliseconds, so logins
// never wait long behind retention, however large the log has grown.
const pruneBatch = 500

// PruneEvents removes the events older than before and returns how many it
// removed. It is the audit log's retention.
//
// Events are appended in time order (nearly: Append takes the caller's time
// when it is set), so PruneEvents deletes from the oldest end and stops at
// the first event that is not older than before; an unreadable event on the
// way goes too. An event that is older than before but was appended after a
// newer one stays until the one ahead of it goes. It deletes in transactions
// of at most pruneBatch events, each committed on its own: if one fails, what
// the earlier ones deleted stays deleted, and that count comes back with the
// error.
func (s *Store) PruneEvents(before time.Time) (int, error) {
	total := 0
	for {
		n, more, err := s.pruneOnce(before)
		total += n
		if err != nil {
			return total, fmt.Errorf("audit log: %w", err)
		}
		if s.afterPruneTx != nil {
			s.afterPruneTx(n)
		}
		if !more {
			return total, nil
		}
	}
}

// pruneOnce deletes up to pruneBatch events from the oldest end of the log in
// one transaction, as PruneEvents describes; more reports that it stopped
// only because the batch was full.
func (s *Store) pruneOnce(before time.Time) (n int, more bool, err error) {
	err = s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		var gone [][]byte
		more = false
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if e, ok := decodeEvent(k, v); ok && !e.Time.Before(before) {
				break
			}
			if len(gone) == pruneBatch {
				more = true
				break
			}
			gone = append(gone, bytes.Clone(k))
		}
		// Deleted after the walk: deleting under a moving cursor can skip
		// keys.
		for _, k := range gone {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(gone)
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return n, more, nil
}

// seqKey is the audit bucket key of seq: big-endian, so keys sort in order.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// decodeEvent reads a stored event under key k (its big-endian Seq).
func decodeEvent(k, v []byte) (store.Event, bool) {
	var seq uint64
	if len(k) == 8 {
		seq = binary.BigEndian.Uint64(k)
	}
	return store.DecodeEvent(seq, v)
}
