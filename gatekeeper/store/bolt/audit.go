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

// futureSlack is how far ahead of now an event's time must be for pruning to
// pass over it as dated in the future rather than stop at it (clocks of
// nodes and of the machine a backup came from differ a little).
const futureSlack = time.Hour

// pruneScan is the most events one pass of PruneEvents reads (in a read
// transaction, which holds up no writer) before it deletes what it found.
const pruneScan = 10 * pruneBatch

// PruneEvents removes the events older than before, and the ones that cannot
// be read, and returns how many it removed. It is the audit log's retention.
//
// Events are stored in the order they were appended, which is time order but
// for two cases: an event stamped while the clock was set ahead (or restored
// from a backup made so), and a backup's events restored behind newer ones.
// PruneEvents walks from the oldest and stops at the first event that is
// neither old enough nor dated in the future (more than futureSlack ahead of
// now): so an hourly run reads only what it deletes, however large the log
// (a full walk of a million events took 2 s), while an event dated in the
// future, which would otherwise hold up everything behind it for good, is
// passed over and stays until its time is past. Events restored behind newer
// ones go when those do. The walk goes in passes, each reading at most
// pruneScan events and deleting at most pruneBatch of them in one write
// transaction of its own, the next pass going on where the last one stopped.
// If a pass fails, what the earlier ones deleted stays deleted, and that count
// comes back with the error.
func (s *Store) PruneEvents(before time.Time) (int, error) {
	total := 0
	var from []byte
	for {
		n, next, err := s.pruneOnce(before, from)
		total += n
		if err != nil {
			return total, fmt.Errorf("audit log: %w", err)
		}
		if s.afterPruneTx != nil {
			s.afterPruneTx(n)
		}
		if next == nil {
			return total, nil
		}
		from = next
	}
}

// pruneOnce is one pass of PruneEvents: from the key from on (nil: the
// oldest event) it reads up to pruneScan events and collects up to
// pruneBatch of those to delete, then deletes them in one write transaction.
// next is the key the next pass starts at, nil once the walk reached the
// first event to keep or the end of the log. Keys are collected in a read
// transaction and deleted in a write one: nothing but PruneEvents removes an
// event, and appends only add keys after the walk's.
func (s *Store) pruneOnce(before time.Time, from []byte) (n int, next []byte, err error) {
	var gone [][]byte
	err = s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		k, v := c.First()
		if from != nil {
			k, v = c.Seek(from)
		}
		future := time.Now().Add(futureSlack)
		for seen := 0; k != nil; k, v = c.Next() {
			if seen == pruneScan {
				next = bytes.Clone(k)
				return nil
			}
			seen++
			switch e, ok := decodeEvent(k, v); {
			case !ok || e.Time.Before(before):
				if len(gone) == pruneBatch {
					next = bytes.Clone(k)
					return nil
				}
				gone = append(gone, bytes.Clone(k))
			case e.Time.After(future):
				// Passed over: see PruneEvents.
			default:
				return nil // the first event to keep: the rest are newer
			}
		}
		return nil
	})
	if err != nil || len(gone) == 0 {
		return 0, next, err
	}
	err = s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		for _, k := range gone {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return len(gone), next, nil
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
