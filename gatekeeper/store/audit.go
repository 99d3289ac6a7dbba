package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Event kinds of the audit log. Kind is a free string so that new kinds need
// no store change; these are the ones gatekeeper writes.
const (
	EventLoginOK       = "login_ok"
	EventLoginRefused  = "login_refused"
	EventTrustedBypass = "trusted_bypass"
	EventCodeReuse     = "code_reuse"
	EventLockout       = "lockout"
	// EventLockoutEnded closes a lockout with the number of logins it
	// refused: refusals while locked get no event of their own.
	EventLockoutEnded  = "lockout_ended"
	EventLinkStarted   = "link_started"
	EventQRShown       = "qr_shown"
	EventLinkConfirmed = "link_confirmed"
	EventLinkExpired   = "link_expired"
	EventRecoveryUsed  = "recovery_used"
	EventReset         = "reset"
	EventUnlock        = "unlock"
	EventTicketIssued  = "ticket_issued"
	EventTicketUsed    = "ticket_used"
	EventSessionKilled = "session_killed"
	EventImport        = "import"
	// A replacement of an active device (package enroll): started, then confirmed
	// (device_replaced), expired, voided by too many wrong codes or cancelled.
	EventReplaceStarted   = "replace_started"
	EventDeviceReplaced   = "device_replaced"
	EventReplaceExpired   = "replace_expired"
	EventReplaceVoided    = "replace_voided"
	EventReplaceCancelled = "replace_cancelled"
	// EventRecoveryRenewed: new recovery codes replaced the old ones.
	EventRecoveryRenewed = "recovery_renewed"
	// EventDamaged is what Events reports for a stored event it cannot
	// read, so that damage shows instead of silently thinning the log.
	EventDamaged = "damaged"
)

// Event is one entry of the audit log.
type Event struct {
	// Seq is the event's position in the log, set by Append; it only grows.
	Seq uint64 `json:"seq"`
	// Time is when it happened; Append sets it to now when it is zero.
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	User   string    `json:"user,omitempty"`
	Remote string    `json:"remote,omitempty"`
	Reason string    `json:"reason,omitempty"`
	// Actor is who caused it when not the user: "uid 0" for an admin socket
	// caller, "console" for a command using the database directly.
	Actor string `json:"actor,omitempty"`
	// Door is where it happened, for the user's security log: DoorSSH,
	// DoorPortal, DoorLinking or DoorConsole ("" when not known).
	Door   string `json:"door,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// The doors an event can come through.
const (
	DoorSSH     = "ssh"     // the SSH front door
	DoorPortal  = "portal"  // the browser portal
	DoorLinking = "linking" // the SSH linking listener
	DoorConsole = "console" // gatekeeper enroll / admin on the lander
)

// EventQuery selects events: all of them when every field is zero.
type EventQuery struct {
	// User keeps only this user's events ("" = everyone's).
	User string
	// Since keeps only events at or after this time (zero = from the start).
	Since time.Time
	// Limit keeps only the newest Limit matching events (0 = no limit).
	Limit int
}

// Field size limits: the log holds what clients typed (user names in refused
// logins), so a hostile client must not be able to bloat it.
const (
	maxEventKind  = 64
	maxEventField = 1024
)

// errBadEvent is returned by Append for an event without a kind.
var errBadEvent = errors.New("audit event without a kind")

// Append adds events to the audit log in one committed transaction: all or
// none. It sets each event's Seq and, when zero, its Time (to now); strings
// longer than 1 KiB are cut. The log is append-only: nothing changes or
// removes an event except PruneEvents. On a full disk it fails with an error
// matching ErrNoSpace.
func (s *Store) Append(events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	now := time.Now().UTC()
	vals := make([][]byte, len(events))
	for i, e := range events {
		if e.Kind == "" {
			return errBadEvent
		}
		e.Seq = 0 // the key holds it
		if e.Time.IsZero() {
			e.Time = now
		}
		e.Time = e.Time.UTC()
		e.Kind = cut(e.Kind, maxEventKind)
		e.User = cut(e.User, maxEventField)
		e.Remote = cut(e.Remote, maxEventField)
		e.Reason = cut(e.Reason, maxEventField)
		e.Actor = cut(e.Actor, maxEventField)
		e.Door = cut(e.Door, maxEventKind)
		e.Detail = cut(e.Detail, maxEventField)
		v, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode audit event: %w", err)
		}
		vals[i] = v
	}
	return s.update(func(tx *bolt.Tx) error {
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
func (s *Store) Events(q EventQuery) ([]Event, error) {
	events := []Event{} // never nil: "no events" encodes as [], not null
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			e, ok := decodeEvent(k, v)
			switch {
			case !ok && q.User != "":
				continue
			case ok && q.User != "" && e.User != q.User:
				continue
			case ok && e.Time.Before(q.Since):
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
	err = s.update(func(tx *bolt.Tx) error {
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

// decodeEvent reads a stored event; ok is false (and e an EventDamaged
// event) when it cannot be read.
func decodeEvent(k, v []byte) (e Event, ok bool) {
	var seq uint64
	if len(k) == 8 {
		seq = binary.BigEndian.Uint64(k)
	}
	if err := json.Unmarshal(v, &e); err != nil || len(k) != 8 || e.Kind == "" {
		return Event{Seq: seq, Kind: EventDamaged, Detail: "stored audit event cannot be read"}, false
	}
	e.Seq = seq
	return e, true
}

// seqKey is the audit bucket key of seq: big-endian, so keys sort in order.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// cut shortens s to at most n bytes (plus a marker), on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && s[i]&0xc0 == 0x80 { // continuation byte
		i--
	}
	return s[:i] + "..."
}
