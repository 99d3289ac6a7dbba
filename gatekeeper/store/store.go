// Package store defines what gatekeeper keeps and the one interface every
// storage backend implements: per-user records (enrollment state, sealed TOTP
// secret, last used time step, recovery code hashes, the pending link's
// confirmation tries and binding, a replacement device being linked, the last
// seen clock drift), one-time enrollment tickets and the append-only audit
// log. Two backends implement Store: package store/bolt keeps everything in
// one bbolt file on one node; package store/etcd shares it between several
// nodes through an etcd cluster. Package store/storetest is the conformance
// suite both pass.
//
// # Secrets and integrity
//
// Both rest on a 32-byte key kept in a separate file (see LoadKey), the same
// on every node. TOTP secrets are sealed with AES-256-GCM under it, with
// "user:"+name as additional data, so that the stored data alone (a backup, a
// copied file, an etcd snapshot) reveals no secret. The secret of a
// replacement device being linked (User.NextSecret) is sealed the same way
// under "next:"+name, so that neither can pass for the other.
//
// Every user record and every ticket is also authenticated under that key
// file, so that someone who can write the stored data but not read the key
// file cannot lower a last used step, flip a state, swap recovery code
// hashes, copy one user's record to another, or forge, extend or move a
// ticket. A value is stored as
//
//	{"data":<the record as JSON>,"mac":"<base64 HMAC-SHA256>"}
//
// where the MAC covers the bucket's name (BucketUsers, BucketTickets), the
// value's key (the user name; for a ticket the hash of its token) and the
// data bytes as stored. Its key is derived from the key file with HKDF-SHA256
// under its own label, so it is independent of the sealing key. Codec does
// all of this, for every backend alike, so that a stored value moves between
// backends (admin backup and restore) unchanged and still verifies. A user
// record that fails the check is an error matching ErrDamaged that names the
// user (Get and Update refuse it, List names it apart from the others; Delete
// removes it, so that an admin can reset the user); a ticket that fails it is
// no ticket.
//
// What this cannot catch: a MAC proves that gatekeeper wrote a value for this
// user (or ticket), not that it is the newest one. An authentic older copy of
// a record or a ticket put back (a rollback) passes. Guard write access to the
// stored data, and its old copies, as carefully as the key file.
//
// # Transactions
//
// Every change of a record is one atomic read-modify-write in the backend
// (a bbolt read-write transaction; an etcd compare-and-swap on the record's
// revision, retried on a conflict), durable before it returns. That is what
// makes the "a time step is used at most once" check race-free across
// concurrent logins, restarts and nodes.
package store

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// State is a user's enrollment state.
type State string

// The enrollment states.
const (
	// StateNone: no device linked (also every user the store has no record of).
	StateNone State = "none"
	// StatePending: a secret has been shown but not yet confirmed with a code.
	StatePending State = "pending"
	// StateActive: a device is linked; logins need its codes.
	StateActive State = "active"
)

// User is one user's record.
type User struct {
	Name  string
	State State
	// Secret is the plaintext TOTP key. Only Update's fn sees it (and may set
	// it); Get and List always leave it nil so it cannot leak by accident.
	Secret []byte
	// LastStep is the last accepted TOTP time step (0 = none). It only ever
	// grows: Update refuses to lower it.
	LastStep     uint64
	CreatedAt    time.Time
	PendingSince time.Time
	EnrolledAt   time.Time
	LastLogin    time.Time
	// RecoverySalt is the per-user random salt of the recovery code hashes.
	RecoverySalt []byte
	// Recovery holds one RecoveryHashSize-byte hash (argon2id of the code
	// with RecoverySalt, see package enroll) per recovery code not used yet.
	// Hashes are not secrets, so Get and List return them (for counting).
	Recovery [][]byte
	// ConfirmTries counts the codes tried against the pending link, each counted in the same
	// transaction that checks it (package enroll voids the link past its limit).
	ConfirmTries int
	// PendingBinding is the SHA-256 of the token that binds a pending link to the portal
	// session, SSH channel or console that began it; only that holder may confirm it. A
	// replacement in progress (NextSecret) uses it, and ConfirmTries, the same way.
	PendingBinding []byte
	// NextSecret is the plaintext TOTP key of a replacement device being linked while the
	// record stays StateActive and Secret keeps working; nil when no replacement is in
	// progress. Like Secret, only Update's fn sees it; Get and List leave it nil. It is sealed
	// on its own, under "next:"+name, and only an active record may hold one.
	NextSecret []byte
	// NextSince is when the replacement began (zero: none in progress).
	NextSince time.Time
	// DriftSteps is, for support, how many time steps off the user's phone clock was last seen
	// (positive: the phone is ahead); DriftAt is when that was seen (zero: nothing recorded).
	DriftSteps int
	DriftAt    time.Time
	// Keys are the SSH public keys registered for the user (keys.enabled): a
	// first factor in place of the password. They outlive a reset of the
	// device unless the admin drops them too.
	Keys []Key
	// Remembered are the key and network pairs that skip the code until a
	// time (keys.remember); a reset, a replaced phone or revoking the key
	// ends them.
	Remembered []Remembered
}

// Key is an SSH public key registered at the gatekeeper for one user.
type Key struct {
	// Fingerprint is the key's SHA256 fingerprint (ssh.FingerprintSHA256,
	// "SHA256:..."); it names the key, and a user has each key once.
	Fingerprint string `json:"fingerprint"`
	// PublicKey is the key in authorized_keys form, without options or
	// comment ("ssh-ed25519 AAAA...").
	PublicKey string `json:"public_key"`
	// Label is the user's or admin's name for the key (its comment when
	// imported).
	Label   string    `json:"label,omitempty"`
	AddedAt time.Time `json:"added_at,omitzero"`
	// AddedBy says who added it: "self" (the user, portal or SSH linking) or
	// the admin's name.
	AddedBy  string    `json:"added_by,omitempty"`
	LastUsed time.Time `json:"last_used,omitzero"`
	// Automation marks a key for scripts: it logs in without a code, only
	// from From, only until Expires.
	Automation bool `json:"automation,omitempty"`
	// From lists the networks (CIDR prefixes) the key may log in from;
	// empty: anywhere. Required for an automation key.
	From []string `json:"from,omitempty"`
	// Expires ends the key (zero: never; an automation key always has one).
	Expires time.Time `json:"expires,omitzero"`
	// Command, when set, is the only command the key may run at the lander
	// (the certificate's force-command).
	Command string `json:"command,omitempty"`
}

// Remembered is a key that logged in with a code from a network: the same
// key from the same network needs no code until Until.
type Remembered struct {
	Fingerprint string    `json:"fingerprint"`
	Network     string    `json:"network"` // e.g. "203.0.113.0/24", "2001:db8:1:2::/64"
	Since       time.Time `json:"since"`
	Until       time.Time `json:"until"`
}

// Limits of what a record may hold, so that no one can grow it without
// bound.
const (
	MaxKeys       = 64
	MaxRemembered = 64
)

// Expired reports whether k has expired at now.
func (k Key) Expired(now time.Time) bool { return !k.Expires.IsZero() && !now.Before(k.Expires) }

// AllowsFrom reports whether k may log in from addr: k.From is empty or one
// of its networks holds addr.
func (k Key) AllowsFrom(addr netip.Addr) bool {
	if len(k.From) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, f := range k.From {
		if p, err := netip.ParsePrefix(f); err == nil && p.Contains(addr) {
			return true
		}
	}
	return false
}

// FindKey returns the index of the key with fingerprint fp in keys, or -1.
func FindKey(keys []Key, fp string) int {
	for i, k := range keys {
		if k.Fingerprint == fp {
			return i
		}
	}
	return -1
}

// RecoveryHashSize is the size of a stored recovery code hash.
const RecoveryHashSize = 32

var (
	// ErrBadName is returned for a user name outside the allowed form (see
	// CheckName).
	ErrBadName = errors.New("invalid user name")
	// ErrKeyMismatch is returned by Open when the secret key file is not the
	// one the database's secrets were sealed with.
	ErrKeyMismatch = errors.New("wrong secret key")
	// ErrKeyMissing is returned by Open when the database holds sealed
	// secrets but the secret key file does not exist. A new key would make
	// every enrollment unusable, so none is created.
	ErrKeyMissing = errors.New("secret key file missing")
	// ErrSchema is returned by Open for a database written by a newer
	// gatekeeper (or not by gatekeeper at all).
	ErrSchema = errors.New("unsupported database schema")
	// ErrDamaged matches (errors.Is) the error for a user record that fails
	// its integrity check (see the package doc), cannot be read or whose
	// secret cannot be decrypted; the error names the user. Delete still
	// removes such a record.
	ErrDamaged = errors.New("damaged")
	// ErrNoSpace matches (errors.Is) the error of a write that found no room:
	// the filesystem holding the database is full (ENOSPC), its owner's quota
	// is used up (EDQUOT) or the file would pass its size limit (EFBIG).
	// Nothing was written; reads keep working.
	ErrNoSpace = errors.New("database disk full")
	// ErrUnavailable matches (errors.Is) the error of an operation the
	// backend could not carry out in time: the etcd cluster has no quorum or
	// cannot be reached. Nothing was written (or it is not known whether a
	// write took effect, for a write that timed out: the caller treats it as
	// failed).
	ErrUnavailable = errors.New("store unavailable")
	// ErrExists is returned by Load for a user who already has a record,
	// unless it is told to overwrite.
	ErrExists = errors.New("user already has a record")
)

// damagedError marks an error as ErrDamaged without changing its message.
type damagedError struct{ error }

func (e damagedError) Unwrap() error        { return e.error }
func (e damagedError) Is(target error) bool { return target == ErrDamaged }

// Damaged returns err marked so that it matches ErrDamaged, its message
// unchanged.
func Damaged(err error) error { return damagedError{err} }

// maxNameLen bounds user names (storage keys, log fields, URI labels).
const maxNameLen = 64

// CheckName reports (wrapping ErrBadName) whether name is not a usable user
// name: empty, longer than 64 bytes, starting with '-' (it would read as an
// option on a command line), "." or ".." (path components: they cannot be
// named in an admin API URL, and are no one's login name), or holding
// anything but ASCII letters, digits, '.', '_' and '-'.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case name == "." || name == "..":
		return fmt.Errorf("%w %q", ErrBadName, name)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: %d bytes long, at most %d allowed", ErrBadName, len(name), maxNameLen)
	case name[0] == '-':
		return fmt.Errorf("%w %q: must not start with '-'", ErrBadName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w %q: only ASCII letters, digits, '.', '_' and '-' are allowed", ErrBadName, name)
		}
	}
	return nil
}

// MaxAppend is the most events one Store.Append writes all or none: etcd
// takes a bounded number of operations per transaction.
const MaxAppend = 100

// Store is everything gatekeeper keeps, whatever the backend. Its methods are
// safe for concurrent use. The daemon, package enroll and the admin commands
// depend on this interface only; package storetest states its contract as a
// test suite.
type Store interface {
	// Get returns name's record without its secrets. A user the store has no
	// record of is StateNone with a nil error; a record that fails its
	// integrity check is an error matching ErrDamaged.
	Get(name string) (User, error)
	// List returns every user with a record, sorted by name, without secrets.
	// Damaged records (also one stored under an invalid name) do not stop
	// it: it returns the others together with a *DamagedError naming them
	// (matching ErrDamaged); any other error comes with no users.
	List() ([]User, error)
	// Delete removes name's record, whatever it holds, damaged or not.
	// existed reports whether there was one. Tickets and the audit log are
	// left alone. A name that is not a valid user name is ErrBadName unless
	// a record is stored under it (see CheckDeleteName), which it removes.
	Delete(name string) (existed bool, err error)
	// Update changes name's record atomically and durably. fn sees the
	// current record with its secrets opened (StateNone and zero fields when
	// there is none) and may be called more than once when another writer
	// got there first or the record it first saw was the one this node
	// remembered (etcd): it must depend on nothing but the record, and set
	// afresh what it reports to its caller on every call. If
	// fn returns an error nothing is written and that error is returned
	// unchanged. The rules Codec.Apply enforces hold for the result (the
	// name stays, LastStep never goes back, ...).
	Update(name string, fn func(u *User) error) error

	// Append adds events to the audit log, all or none for up to MaxAppend
	// events (a longer call may be written in parts, each whole), setting
	// each one's Seq and (when zero) Time. Strings longer than 1 KiB are cut.
	Append(events ...Event) error
	// Events returns the events q selects, oldest first.
	Events(q EventQuery) ([]Event, error)
	// PruneEvents removes the events older than before (in batches) and
	// returns how many it removed.
	PruneEvents(before time.Time) (int, error)

	// AddTicket stores a one-time enrollment ticket for user, valid until
	// expires, revoking the user's earlier tickets.
	AddTicket(user, token string, expires time.Time) error
	// UseTicket spends user's ticket at now: it works once. An unknown,
	// used, expired or other user's ticket is ErrNoTicket.
	UseTicket(user, token string, now time.Time) error
	// CheckTicket reports whether user's ticket is valid at now without
	// using it: nil or ErrNoTicket.
	CheckTicket(user, token string, now time.Time) error

	// Dump calls fn with every stored user record and ticket, in their
	// stored (sealed, authenticated) form, and with the audit events when
	// audit is true. It is admin backup. An item that fails its check
	// under the key (Codec.CheckItem) is passed with Item.Damaged set.
	Dump(audit bool, fn func(Item) error) error
	// Load writes items written by Dump (of this or another backend) into
	// the store: records and tickets must verify under this store's key;
	// an existing user is refused with ErrExists unless force is set.
	// Audit events are appended.
	Load(items []Item, force bool) (LoadResult, error)

	// Close releases the store.
	Close() error
}

// Item is one stored value, as Dump writes it and Load reads it: a user
// record (Kind "user", Key the name), a ticket (Kind "ticket", Key the hex
// SHA-256 of its token) or an audit event (Kind "event"), Value in the
// stored, authenticated form (an event as its JSON).
type Item struct {
	Kind  string `json:"kind"`
	Key   string `json:"key,omitempty"`
	Value []byte `json:"value"`
	// Damaged is set by Dump on an item that fails Codec.CheckItem (a
	// record that fails its integrity check, an unreadable event): a backup
	// leaves it out and names it. It is not part of a backup file.
	Damaged error `json:"-"`
}

// LoadResult counts what Load wrote. Events counts the events restored,
// EventsHeld those of them the log held already, which were not added again.
type LoadResult struct {
	Users, Tickets, Events int
	EventsHeld             int
}

// The kinds of Item.
const (
	ItemUser   = "user"
	ItemTicket = "ticket"
	ItemEvent  = "event"
)

// HealthChecker is implemented by a store that can know, without a request,
// that it no longer works even though reads still answer: bbolt after a write
// broke inside bbolt (a damaged page), which ends writing until a restart.
// Health returns that error (nil while the store works); it is cheap, so the
// health check and the metrics may ask it as often as they like.
type HealthChecker interface {
	Health() error
}

// Pruner is implemented by stores shared by several nodes, where only one
// node should prune the audit log at a time. Leader reports whether this
// node is the one (a store of one node always is).
type Pruner interface {
	Leader() bool
}
