package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
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
	// EventBackup: an admin copied every record (admin backup); EventRestore:
	// an admin loaded a backup into the store (admin restore). Detail counts
	// what was copied or loaded.
	EventBackup  = "backup"
	EventRestore = "restore"
	// A replacement of an active device (package enroll): started, then confirmed
	// (device_replaced), expired, voided by too many wrong codes or cancelled.
	EventReplaceStarted   = "replace_started"
	EventDeviceReplaced   = "device_replaced"
	EventReplaceExpired   = "replace_expired"
	EventReplaceVoided    = "replace_voided"
	EventReplaceCancelled = "replace_cancelled"
	// EventRecoveryRenewed: new recovery codes replaced the old ones.
	EventRecoveryRenewed = "recovery_renewed"
	// EventKeyAdded, EventKeyRevoked: an SSH key registered at the gatekeeper
	// (keys.enabled) was added or revoked; Detail names it.
	EventKeyAdded   = "key_added"
	EventKeyRevoked = "key_revoked"
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

// EncodeEvent checks e and returns it as stored: Seq cleared (the storage key
// holds the position), Time set to now when zero and made UTC, strings cut
// to their limits, as JSON.
func EncodeEvent(e Event, now time.Time) ([]byte, error) {
	if e.Kind == "" {
		return nil, errBadEvent
	}
	e.Seq = 0
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
		return nil, fmt.Errorf("encode audit event: %w", err)
	}
	return v, nil
}

// DecodeEvent reads a stored event at position seq; ok is false (and e an
// EventDamaged event) when it cannot be read.
func DecodeEvent(seq uint64, v []byte) (e Event, ok bool) {
	if err := json.Unmarshal(v, &e); err != nil || e.Kind == "" || seq == 0 {
		return Event{Seq: seq, Kind: EventDamaged, Detail: "stored audit event cannot be read"}, false
	}
	e.Seq = seq
	return e, true
}

// Matches reports whether q selects e (its Limit aside). A damaged event
// (ok false) is kept only when q selects no user.
func (q EventQuery) Matches(e Event, ok bool) bool {
	switch {
	case !ok:
		return q.User == ""
	case q.User != "" && e.User != q.User:
		return false
	case e.Time.Before(q.Since):
		return false
	}
	return true
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
