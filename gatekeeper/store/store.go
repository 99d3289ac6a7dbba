// Package store keeps gatekeeper's state in one bbolt file: per-user records
// (enrollment state, sealed TOTP secret, last used time step, recovery code
// hashes, timestamps, the pending link's confirmation tries and binding, the
// sealed secret of a replacement device being linked, the last seen clock
// drift), the
// append-only audit log and one-time enrollment tickets.
//
// # Secrets and integrity
//
// Both rest on a 32-byte key kept in a separate file. TOTP secrets are
// sealed with AES-256-GCM under it, with "user:"+name as additional data, so
// that the database alone (a backup, a copied file) reveals no secret. The
// secret of a replacement device being linked (User.NextSecret) is sealed the
// same way under "next:"+name, so that neither can pass for the other.
//
// Every user record and every ticket is also authenticated under that key
// file, so that someone who can write the database but not read the key file
// cannot lower a last used step, flip a state, swap recovery code hashes,
// copy one user's record to another, or forge, extend or move a ticket. A
// value is stored as
//
//	{"data":<the record as JSON>,"mac":"<base64 HMAC-SHA256>"}
//
// where the MAC covers the bucket's name, the value's key (the user name; for
// a ticket the hash of its token) and the data bytes as stored. Its key is
// derived from the key file with HKDF-SHA256 under its own label, so it is
// independent of the sealing key. A user record that fails the check is an
// error matching ErrDamaged that names the user (Get, Update and List refuse
// it; Delete removes it, so that an admin can reset the user); a ticket that
// fails it is no ticket.
//
// The secret stays sealed inside the record, as before, rather than the
// whole record being sealed: nothing else in it is confidential (admin list
// shows it all), and a MAC needs no nonce. Every login rewrites the record
// (its last used step), and sealing it each time would spend a fresh random
// GCM nonce per login, while the secret is sealed again only when it changes.
// The file also stays readable with bbolt's tools.
//
// What this cannot catch: a MAC proves that gatekeeper wrote a value for this
// user (or ticket), not that it is the newest one. An authentic older copy of
// a record, a ticket or the whole file put back (a rollback) passes: that
// way a user's last used step can be set back to an older value, or a spent
// ticket revived. Nor is a deleted record noticed (it reads as a user without
// a linked device), and the audit log is not authenticated. Guard write
// access to the database file, and its old copies, as carefully as the key
// file.
//
// # Schema
//
// Version 2 (since issue 8). Version 1 stored records and tickets as plain
// JSON, authenticated only in the sealed secret. Open migrates a version 1
// database in one transaction, only after the key file has passed the
// database's key check (a wrong key changes nothing): every record and ticket
// is rewritten in the authenticated form, the key check is sealed anew naming
// version 2, and the schema record becomes 2. A version 1 record that is
// already damaged (unreadable, an unknown state, a secret that does not open
// under its user's name) is not vouched for: it is left exactly as it was and
// then reads as damaged (ErrDamaged naming the user) until an admin resets
// it, while everybody else goes on logging in. Tickets that cannot be read
// are left too; they count as no ticket and are swept on the next use of any
// ticket.
//
// The migration trusts what a version 1 file holds: an edit made before the
// upgrade cannot be told apart. Going back is refused: a version 2 database
// whose schema record is set back to 1 by hand still has a version 2 key
// check (sealed with the key, so it cannot be faked) and is refused with
// ErrSchema rather than migrated again, and so is a version 1 database
// without a key check (gatekeeper always wrote one). Only a pre-upgrade copy
// of the key check put back with it would pass: treat copies of the file from
// before the upgrade like the rollback above. A database of a later version
// is refused with ErrSchema, so an older gatekeeper refuses a migrated file:
// going back to an older release means going back to the file as it was
// before the upgrade.
//
// Within version 1 the audit and tickets buckets and the recovery fields were
// added without a version change; Open still creates missing buckets, and a
// record without recovery fields reads as "no recovery codes".
//
// Within version 2 the replacement fields (a sealed next secret and when the
// replacement began) and the clock drift fields were added the same way: they
// are inside the authenticated data like every other field, and a record
// without them reads as "no replacement in progress, no drift seen". An older
// gatekeeper of schema 2 reads such a record too but drops those fields when it
// next writes the record (a replacement in progress is then lost and has to be
// started again).
//
// # Transactions
//
// Every change goes through one read-write bbolt transaction, fsync'd before
// it returns, which is what makes the "a time step is used at most once"
// check race-free across concurrent logins and restarts. bbolt has a single
// writer lock, so long writes would hold up logins: audit pruning deletes at
// most pruneBatch events per transaction.
//
// A write that fails because the disk is full (also a used-up quota, or the
// file size limit) returns an error matching ErrNoSpace that names the file;
// reads go on working. See bolt.go for why a full disk cannot crash the
// process through bbolt's memory map.
package store

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
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
}

// RecoveryHashSize is the size of a stored recovery code hash.
const RecoveryHashSize = 32

// InUseError is returned by Open when another process holds the database's
// lock (bbolt allows one process per file).
type InUseError struct {
	Path string
	// PID is the lock holder's process id as /proc/locks reports it, 0 when
	// it cannot be found (another PID namespace, no /proc).
	PID int
}

// Error says who holds the database, and the likely reason.
func (e *InUseError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("database %s is in use by pid %d (is gatekeeper serve running?)", e.Path, e.PID)
	}
	return fmt.Sprintf("database %s is in use by another process (is gatekeeper serve running?)", e.Path)
}

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
)

// damagedError marks an error as ErrDamaged without changing its message.
type damagedError struct{ error }

func (e damagedError) Unwrap() error        { return e.error }
func (e damagedError) Is(target error) bool { return target == ErrDamaged }

const (
	// schemaVersion is the record layout this code reads and writes; Open
	// migrates version 1 (see the package doc).
	schemaVersion = 2
	// keySize is the secret key file's size: an AES-256 key.
	keySize = 32
	// maxNameLen bounds user names (bbolt keys, log fields, URI labels).
	maxNameLen = 64
	// openTimeout is how long Open waits for another process's lock before
	// giving up with an InUseError instead of hanging.
	openTimeout = time.Second
)

var (
	bucketMeta    = []byte("meta")
	bucketUsers   = []byte("users")
	bucketAudit   = []byte("audit")
	bucketTickets = []byte("tickets")
	keySchema     = []byte("schema")
	keyCheck      = []byte("keycheck")
	// checkPlain is sealed into the meta bucket with the key so that a wrong
	// key file is caught at Open, not at the first login. It names the
	// schema version, so that a schema record set back by hand is caught too;
	// checkPlainV1 is what version 1 sealed.
	checkPlain   = []byte("gatekeeper secret key check v2")
	checkPlainV1 = []byte("gatekeeper secret key check v1")
	checkAD      = []byte("gatekeeper keycheck")
	// errFnPanicked aborts the transaction when Update's fn panics; the panic
	// is re-raised after bbolt has rolled back.
	errFnPanicked = errors.New("update function panicked")
)

// Store is an open gatekeeper database. Its methods are safe for concurrent
// use.
type Store struct {
	db   *bolt.DB
	aead cipher.AEAD // seals TOTP secrets
	// macKey authenticates stored records and tickets (see integrity.go).
	macKey  []byte
	path    string
	keyPath string
	// writeMu lets one write transaction at a time reach bbolt (which runs
	// only one anyway). If bbolt panics or faults mid-write, its own writer
	// lock may stay held for good; writers then wait here instead, and learn
	// from writeBroken what happened rather than block forever.
	writeMu     sync.Mutex
	writeBroken error // set for good by update; guarded by writeMu
	// migrated is what Open migrated (see Migrated).
	migrated *Migration
	// afterPruneTx, when set (by tests), is called after each of
	// PruneEvents' transactions with the number of events it deleted.
	afterPruneTx func(deleted int)
}

// record is a user's stored form: JSON, authenticated (see authenticate),
// keyed by name in the users bucket. Schema 1 stored this JSON alone.
type record struct {
	State State `json:"state"`
	// Sealed is nonce || AES-256-GCM(secret), with "user:"+name as
	// additional data so a sealed secret copied to another user fails.
	Sealed         []byte    `json:"sealed_secret,omitempty"`
	LastStep       uint64    `json:"last_step,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	PendingSince   time.Time `json:"pending_since,omitzero"`
	EnrolledAt     time.Time `json:"enrolled_at,omitzero"`
	LastLogin      time.Time `json:"last_login,omitzero"`
	RecoverySalt   []byte    `json:"recovery_salt,omitempty"`
	Recovery       [][]byte  `json:"recovery,omitempty"`
	ConfirmTries   int       `json:"confirm_tries,omitempty"`
	PendingBinding []byte    `json:"pending_binding,omitempty"`
	// SealedNext is the replacement secret (User.NextSecret), sealed like Sealed but with
	// "next:"+name as additional data, so that it cannot be swapped with the current secret.
	// These fields came after schema 2 first shipped; a record without them reads as "no
	// replacement, no drift", so no schema change was needed.
	SealedNext []byte    `json:"sealed_next_secret,omitempty"`
	NextSince  time.Time `json:"next_since,omitzero"`
	DriftSteps int       `json:"drift_steps,omitempty"`
	DriftAt    time.Time `json:"drift_at,omitzero"`
}

// Open opens (creating if needed) the database at dbPath, with TOTP secrets
// sealed and records authenticated under the key in keyPath, migrating a
// schema 1 database (see the package doc).
//
// The database's directory is created 0700 and the file 0600. The key file is
// created (32 random bytes, 0600) only while the database holds no user
// record; after that a missing key is ErrKeyMissing and a different one
// ErrKeyMismatch. A key file readable by group or others, or of the wrong
// size, is refused. If another process has the database open, Open gives up
// after about a second with an *InUseError.
func Open(dbPath, keyPath string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	db, err := openBolt(dbPath)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, path: dbPath, keyPath: keyPath}
	if err := s.init(); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// dbInfo is what init learns from the database before touching the key.
type dbInfo struct {
	schema     int    // 0: a fresh database (no gatekeeper buckets yet)
	check      []byte // sealed key-check record, nil if none
	allBuckets bool   // users, audit and tickets buckets all exist
	hasRecords bool   // some user record exists (sealed and authenticated under the key)
	firstUser  string // a user with a sealed secret, to test a key against
	firstSeal  []byte
}

// init checks the schema, loads or creates the key, verifies it against the
// key-check record and then, in one transaction, writes what is missing:
// the schema and key check of a fresh database, the buckets added since
// schema 1 first shipped, or the migration of a schema 1 database.
func (s *Store) init() error {
	var info dbInfo
	if err := s.view(func(tx *bolt.Tx) error {
		var err error
		info, err = s.inspect(tx)
		return err
	}); err != nil {
		return err
	}

	key, created, err := loadKey(s.keyPath, s.path, info.hasRecords)
	if err != nil {
		return err
	}
	if err := s.setKey(key); err != nil {
		return err
	}
	writeCheck := true // a fresh database, or a new key
	if !created && info.schema != 0 {
		if writeCheck, err = s.checkKey(info); err != nil {
			return err
		}
	}
	if !writeCheck && info.schema == schemaVersion && info.allBuckets {
		return nil // nothing to write
	}

	check, err := s.seal(checkPlain, checkAD)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if err := createBuckets(tx); err != nil {
			return err
		}
		if info.schema == 1 {
			if s.migrated, err = s.migrateV1(tx); err != nil {
				return err
			}
		}
		if err := meta.Put(keySchema, []byte(strconv.Itoa(schemaVersion))); err != nil {
			return err
		}
		if !writeCheck {
			return nil
		}
		return meta.Put(keyCheck, check)
	})
}

// checkKey verifies the (existing) key against an existing database: against
// its key-check record, or when that is missing against a sealed secret.
// writeCheck reports that a key-check record must be written: the database
// has none, or one of schema 1 that the migration replaces.
func (s *Store) checkKey(info dbInfo) (writeCheck bool, err error) {
	mismatch := fmt.Errorf("secret key file %s does not match database %s: %w", s.keyPath, s.path, ErrKeyMismatch)
	if info.check == nil {
		if info.schema == 1 {
			// Gatekeeper wrote the schema record and the key check in one
			// transaction. Without the check, the schema record may have
			// been set back by hand to have forged records migrated.
			return false, fmt.Errorf("database %s has schema version 1 but no key check record (edited by hand?); "+
				"refusing to vouch for its records: restore it from a backup: %w", s.path, ErrSchema)
		}
		// Secrets but no check record (written by hand?): test the key on a
		// real secret before vouching for it.
		if info.firstSeal != nil {
			if _, err := s.open(info.firstSeal, userAD(info.firstUser)); err != nil {
				return false, mismatch
			}
		}
		return true, nil
	}

	plain, err := s.open(info.check, checkAD)
	switch {
	case err != nil:
		return false, mismatch
	case bytes.Equal(plain, checkPlain) && info.schema == schemaVersion:
		return false, nil
	case bytes.Equal(plain, checkPlainV1) && info.schema == 1:
		return true, nil // the migration seals a new one
	case bytes.Equal(plain, checkPlain) || bytes.Equal(plain, checkPlainV1):
		return false, fmt.Errorf("database %s has schema version %d but a key check record of another version "+
			"(its schema record was edited?); refusing to open it: restore it from a backup: %w", s.path, info.schema, ErrSchema)
	default:
		return false, mismatch
	}
}

// createBuckets creates the data buckets that do not exist yet.
func createBuckets(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketUsers, bucketAudit, bucketTickets} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	return nil
}

// inspect reads the schema version, the key-check record and whether any
// user record exists, without the key (so without checking anything).
func (s *Store) inspect(tx *bolt.Tx) (dbInfo, error) {
	var info dbInfo
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return info, fmt.Errorf("database %s is not a gatekeeper database (no schema record): %w", s.path, ErrSchema)
		}
		return info, nil
	}
	raw := meta.Get(keySchema)
	v, err := strconv.Atoi(string(raw))
	switch {
	case err != nil || v < 1:
		return info, fmt.Errorf("database %s has an invalid schema record %q: %w", s.path, raw, ErrSchema)
	case v > schemaVersion:
		return info, fmt.Errorf("database %s has schema version %d, this gatekeeper supports up to version %d (upgrade gatekeeper): %w",
			s.path, v, schemaVersion, ErrSchema)
	}
	info.schema = v
	if c := meta.Get(keyCheck); c != nil {
		info.check = bytes.Clone(c)
	}
	info.allBuckets = tx.Bucket(bucketUsers) != nil && tx.Bucket(bucketAudit) != nil && tx.Bucket(bucketTickets) != nil
	users := tx.Bucket(bucketUsers)
	if users == nil {
		return info, nil
	}
	err = users.ForEach(func(k, v []byte) error {
		// Any record, readable or not, is tied to the key: its secret is
		// sealed under it, and (schema 2) it is authenticated under it.
		info.hasRecords = true
		var r record
		if peekRecord(v, info.schema, &r) == nil && len(r.Sealed) > 0 && info.firstSeal == nil {
			info.firstUser, info.firstSeal = string(k), bytes.Clone(r.Sealed)
		}
		return nil
	})
	return info, err
}

// peekRecord decodes a stored record of the given schema without checking
// it, for inspect.
func peekRecord(raw []byte, schema int, r *record) error {
	if schema == 1 {
		return json.Unmarshal(raw, r)
	}
	return peekAuthenticated(raw, r)
}

// loadKey reads the secret key file, creating it when it is missing and the
// database holds no user record (hasRecords false): a new key would make
// every record unusable. created reports a new key.
func loadKey(keyPath, dbPath string, hasRecords bool) (key []byte, created bool, err error) {
	f, err := os.Open(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		if hasRecords {
			return nil, false, fmt.Errorf("database %s holds encrypted TOTP secrets but secret key file %s does not exist; "+
				"restore that key file from a backup (a new key cannot decrypt the existing secrets): %w",
				dbPath, keyPath, ErrKeyMissing)
		}
		key, err := createKey(keyPath)
		if err != nil && isNoSpace(err) {
			err = noSpace(keyPath, err)
		}
		return key, err == nil, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("secret key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	switch {
	case err != nil:
		return nil, false, fmt.Errorf("secret key file: %w", err)
	case !st.Mode().IsRegular():
		return nil, false, fmt.Errorf("secret key file %s is not a regular file", keyPath)
	case st.Mode().Perm()&0o077 != 0:
		return nil, false, fmt.Errorf("secret key file %s has mode %04o: it must not be accessible to group or others (chmod 600 %s)",
			keyPath, st.Mode().Perm(), keyPath)
	case st.Size() != keySize:
		return nil, false, fmt.Errorf("secret key file %s holds %d bytes, a gatekeeper key has %d", keyPath, st.Size(), keySize)
	}
	key = make([]byte, keySize)
	if _, err := io.ReadFull(f, key); err != nil {
		return nil, false, fmt.Errorf("read secret key file %s: %w", keyPath, err)
	}
	return key, false, nil
}

// createKey writes a new random key to keyPath (0600, never over an existing
// file) and syncs it and its directory before the key is used, so that no
// secret is ever sealed under a key that a crash could lose.
func createKey(keyPath string) (key []byte, err error) {
	key = make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate secret key: %w", err)
	}
	dir := filepath.Dir(keyPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create secret key directory: %w", err)
	}
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create secret key file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(keyPath)
		}
	}()
	if _, err := f.Write(key); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("write secret key file %s: %w", keyPath, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("sync secret key file %s: %w", keyPath, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write secret key file %s: %w", keyPath, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		_ = d.Close()
		if err != nil {
			return nil, fmt.Errorf("sync directory %s: %w", dir, err)
		}
	}
	return key, nil
}

// Close closes the database, releasing its lock. After a write that broke
// inside bbolt (see update) it returns that error instead: bbolt's Close
// would wait forever for the writer lock, and the process's exit releases
// the file.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.writeBroken != nil {
		return s.writeBroken
	}
	return s.db.Close()
}

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
			return fmt.Errorf("%w %q: only letters, digits, '.', '_' and '-' are allowed", ErrBadName, name)
		}
	}
	return nil
}

// Get returns name's record without its secret. A user the store has no
// record of is returned as StateNone, with a nil error; a record that fails
// its integrity check is an error matching ErrDamaged.
func (s *Store) Get(name string) (User, error) {
	if err := CheckName(name); err != nil {
		return User{}, err
	}
	var u User
	err := s.view(func(tx *bolt.Tx) error {
		r, err := s.decode(name, tx.Bucket(bucketUsers).Get([]byte(name)))
		u = r.user(name)
		return err
	})
	if err != nil {
		return User{Name: name}, err
	}
	return u, nil
}

// List returns every user with a record, sorted by name, without secrets.
// A damaged record makes it fail with an error naming that user.
func (s *Store) List() ([]User, error) {
	users := []User{} // never nil: "no users" encodes as [], not null
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			name := string(k)
			r, err := s.decode(name, v)
			if err != nil {
				return err
			}
			users = append(users, r.user(name))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return users, nil
}

// Delete removes name's record, whatever it holds: the secret, the recovery
// codes, the last used step. It works on a damaged record too (the way out
// for one that Get or Update refuse). existed reports whether there was a
// record. The audit log and tickets are left alone: a ticket issued for the
// user still lets them link a new device.
func (s *Store) Delete(name string) (existed bool, err error) {
	if err := CheckName(name); err != nil {
		return false, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		existed = b.Get([]byte(name)) != nil
		if !existed {
			return nil
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return false, err
	}
	return existed, nil
}

// Update changes name's record in one bbolt read-write transaction, committed
// and fsync'd before Update returns. fn sees the current record with Secret
// decrypted (StateNone and zero fields when there is none). If fn returns nil
// the record is written (the secret sealed afresh only when it changed); a
// StateNone record without a secret is deleted. If fn returns an error
// nothing is written and that error is returned unchanged.
//
// The result must keep the name, must not lower LastStep, a pending or
// active record must have a secret, and recovery code hashes need a salt and
// RecoveryHashSize bytes each; otherwise nothing is written and Update
// returns an error. A stored record that fails its integrity check, cannot be
// read or whose secret cannot be decrypted is an error matching ErrDamaged
// and fn is not called. A commit that fails for lack of disk space is an
// error matching ErrNoSpace.
func (s *Store) Update(name string, fn func(u *User) error) error {
	if err := CheckName(name); err != nil {
		return err
	}
	var fnPanic any
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		key := []byte(name)
		old, err := s.decode(name, b.Get(key))
		if err != nil {
			return err
		}
		u := old.user(name)
		var oldPlain []byte
		if len(old.Sealed) > 0 {
			if oldPlain, err = s.open(old.Sealed, userAD(name)); err != nil {
				return damagedError{fmt.Errorf("user %q: stored secret cannot be decrypted (record damaged or copied from another user): %w", name, err)}
			}
			u.Secret = bytes.Clone(oldPlain)
		}
		var oldNext []byte
		if len(old.SealedNext) > 0 {
			if oldNext, err = s.open(old.SealedNext, nextAD(name)); err != nil {
				return damagedError{fmt.Errorf("user %q: stored replacement secret cannot be decrypted (record damaged or copied from another user): %w", name, err)}
			}
			u.NextSecret = bytes.Clone(oldNext)
		}

		if err := callFn(fn, &u, &fnPanic); err != nil {
			return err
		}

		switch {
		case u.Name != name:
			return fmt.Errorf("user %q: update may not rename the user (to %q)", name, u.Name)
		case u.State != StateNone && u.State != StatePending && u.State != StateActive:
			return fmt.Errorf("user %q: unknown state %q", name, u.State)
		case len(u.NextSecret) > 0 && u.State != StateActive:
			// Checked before the delete below: a reset must drop the replacement knowingly.
			return fmt.Errorf("user %q: a replacement secret needs an active device (state %s)", name, u.State)
		case u.State == StateNone && len(u.Secret) == 0:
			return b.Delete(key)
		case u.State != StateNone && len(u.Secret) == 0:
			return fmt.Errorf("user %q: state %s needs a secret", name, u.State)
		case u.LastStep < old.LastStep:
			return fmt.Errorf("user %q: last used time step may not go back (%d to %d)", name, old.LastStep, u.LastStep)
		case len(u.Recovery) > 0 && len(u.RecoverySalt) == 0:
			return fmt.Errorf("user %q: recovery code hashes without a salt", name)
		}
		for i, h := range u.Recovery {
			if len(h) != RecoveryHashSize {
				return fmt.Errorf("user %q: recovery code hash %d has %d bytes, want %d", name, i, len(h), RecoveryHashSize)
			}
		}
		r := record{
			State:          u.State,
			LastStep:       u.LastStep,
			CreatedAt:      utc(u.CreatedAt),
			PendingSince:   utc(u.PendingSince),
			EnrolledAt:     utc(u.EnrolledAt),
			LastLogin:      utc(u.LastLogin),
			RecoverySalt:   u.RecoverySalt,
			Recovery:       u.Recovery,
			ConfirmTries:   u.ConfirmTries,
			PendingBinding: u.PendingBinding,
			NextSince:      utc(u.NextSince),
			DriftSteps:     u.DriftSteps,
			DriftAt:        utc(u.DriftAt),
		}
		if oldPlain != nil && bytes.Equal(u.Secret, oldPlain) {
			r.Sealed = old.Sealed // unchanged: spend no fresh nonce
		} else if r.Sealed, err = s.seal(u.Secret, userAD(name)); err != nil {
			return err
		}
		switch {
		case len(u.NextSecret) == 0:
		case oldNext != nil && bytes.Equal(u.NextSecret, oldNext):
			r.SealedNext = old.SealedNext
		default:
			if r.SealedNext, err = s.seal(u.NextSecret, nextAD(name)); err != nil {
				return err
			}
		}
		v, err := s.authenticate(bucketUsers, key, r)
		if err != nil {
			return fmt.Errorf("user %q: encode record: %w", name, err)
		}
		return b.Put(key, v)
	})
	if fnPanic != nil {
		panic(fnPanic)
	}
	return err
}

// callFn runs fn, turning a panic into errFnPanicked (so that bbolt rolls
// the transaction back and releases the writer lock) and keeping the value
// for Update to re-raise.
func callFn(fn func(*User) error, u *User, p *any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			*p, err = r, errFnPanicked
		}
	}()
	return fn(u)
}

// decode checks and parses a stored record; raw nil means no record. A
// record that fails its integrity check or holds impossible values is an
// error matching ErrDamaged that names the user. bbolt's slice is only valid
// during the transaction: json.Unmarshal copies what it keeps.
func (s *Store) decode(name string, raw []byte) (record, error) {
	if raw == nil {
		return record{State: StateNone}, nil
	}
	var r record
	err := s.verify(bucketUsers, []byte(name), raw, &r)
	if errors.Is(err, errIntegrity) {
		return record{}, damagedError{fmt.Errorf("user %q: stored record in %s fails its integrity check "+
			"(damaged, edited, or copied from another user; deleting it resets the user)", name, s.path)}
	}
	// An authentic record was written by gatekeeper; these checks catch a
	// gatekeeper bug, not an attacker.
	switch {
	case err != nil:
	case r.State != StateNone && r.State != StatePending && r.State != StateActive:
		err = fmt.Errorf("unknown state %q", r.State)
	case r.State != StateNone && len(r.Sealed) == 0:
		err = fmt.Errorf("state %s without a secret", r.State)
	case len(r.SealedNext) > 0 && r.State != StateActive:
		err = fmt.Errorf("state %s with a replacement secret", r.State)
	}
	if err != nil {
		return record{}, damagedError{fmt.Errorf("user %q: stored record in %s is damaged: %w", name, s.path, err)}
	}
	return r, nil
}

// user is r as a User (without the secret).
func (r record) user(name string) User {
	return User{
		Name:           name,
		State:          r.State,
		LastStep:       r.LastStep,
		CreatedAt:      r.CreatedAt,
		PendingSince:   r.PendingSince,
		EnrolledAt:     r.EnrolledAt,
		LastLogin:      r.LastLogin,
		RecoverySalt:   r.RecoverySalt,
		Recovery:       r.Recovery,
		ConfirmTries:   r.ConfirmTries,
		PendingBinding: r.PendingBinding,
		NextSince:      r.NextSince,
		DriftSteps:     r.DriftSteps,
		DriftAt:        r.DriftAt,
	}
}

// utc drops the monotonic reading and location so records compare and read
// the same everywhere; the zero time stays zero (and is left out).
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// userAD is the additional data a user's secret is sealed with.
func userAD(name string) []byte {
	return []byte("user:" + name)
}

// nextAD is the additional data a user's replacement secret is sealed with: not userAD, so that
// the two sealed secrets of one record cannot be swapped for each other.
func nextAD(name string) []byte {
	return []byte("next:" + name)
}

// seal encrypts plain with a fresh random nonce: nonce || ciphertext+tag.
func (s *Store) seal(plain, ad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, ns, ns+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return s.aead.Seal(out, out[:ns], plain, ad), nil
}

// open reverses seal.
func (s *Store) open(sealed, ad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < ns+s.aead.Overhead() {
		return nil, errors.New("sealed value too short")
	}
	return s.aead.Open(nil, sealed[:ns], sealed[ns:], ad)
}

// deleteWhere deletes the entries of b for which match is true and returns
// how many it deleted. The keys are collected first: deleting under a moving
// cursor can skip keys.
func deleteWhere(b *bolt.Bucket, match func(k, v []byte) bool) (int, error) {
	var gone [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if match(k, v) {
			gone = append(gone, slices.Clone(k))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range gone {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(gone), nil
}
