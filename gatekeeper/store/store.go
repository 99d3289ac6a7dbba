// Package store keeps gatekeeper's state in one bbolt file: per-user records
// (enrollment state, sealed TOTP secret, last used time step, recovery code
// hashes, timestamps), the append-only audit log and one-time enrollment
// tickets.
//
// TOTP secrets are sealed with AES-256-GCM under a 32-byte key kept in a
// separate file, so that the database alone (a backup, a copied file) reveals
// no secret. Every change goes through Update: one read-write bbolt
// transaction, fsync'd before it returns, which is what makes the "a time
// step is used at most once" check race-free across concurrent logins and
// restarts.
//
// Schema: version 1. The audit and tickets buckets and the recovery fields
// of a user record were added later without a version change, because they
// are backward compatible: Open creates missing buckets, and a record without
// the recovery fields reads as "no recovery codes". (A gatekeeper older than
// these additions ignores the new buckets and would drop a user's recovery
// codes the next time it rewrites that user's record.)
package store

import (
	"bytes"
	"crypto/aes"
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
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
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
	// session, SSH channel or console that began it; only that holder may confirm it.
	PendingBinding []byte
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
	// ErrDamaged matches (errors.Is) the error for a user record that cannot
	// be read or whose secret cannot be decrypted. Delete still removes such
	// a record.
	ErrDamaged = errors.New("damaged")
)

// damagedError marks an error as ErrDamaged without changing its message.
type damagedError struct{ error }

func (e damagedError) Unwrap() error        { return e.error }
func (e damagedError) Is(target error) bool { return target == ErrDamaged }

const (
	// schemaVersion is the record layout this code reads and writes.
	schemaVersion = 1
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
	// key file is caught at Open, not at the first login.
	checkPlain = []byte("gatekeeper secret key check v1")
	checkAD    = []byte("gatekeeper keycheck")
	// errFnPanicked aborts the transaction when Update's fn panics; the panic
	// is re-raised after bbolt has rolled back.
	errFnPanicked = errors.New("update function panicked")
)

// Store is an open gatekeeper database. Its methods are safe for concurrent
// use.
type Store struct {
	db      *bolt.DB
	aead    cipher.AEAD
	path    string
	keyPath string
	// afterPruneTx, when set (by tests), is called after each of
	// PruneEvents' transactions with the number of events it deleted.
	afterPruneTx func(deleted int)
}

// record is a user's stored form (JSON, keyed by name in the users bucket).
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
}

// Open opens (creating if needed) the database at dbPath, with TOTP secrets
// sealed under the key in keyPath.
//
// The database's directory is created 0700 and the file 0600. The key file is
// created (32 random bytes, 0600) only while the database holds no sealed
// secret; after that a missing key is ErrKeyMissing and a different one
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
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// openBolt opens the bbolt file, turning its errors into ones an operator
// can act on.
func openBolt(path string) (db *bolt.DB, err error) {
	// A damaged file can make bbolt panic; a bad file must be an error.
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("database %s is damaged (bbolt: %v)", path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: openTimeout})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, &InUseError{Path: path, PID: lockHolder(path)}
	case errors.As(err, new(*fs.PathError)):
		// Could not open the file at all (permissions, a directory, ...).
		return nil, fmt.Errorf("open database: %w", err)
	default:
		// bbolt read the file and did not like it (ErrInvalid, ErrChecksum,
		// ErrVersionMismatch, "file size too small", ...).
		return nil, fmt.Errorf("database %s is not a gatekeeper database or is damaged: %w", path, err)
	}
}

// dbInfo is what init learns from the database before touching the key.
type dbInfo struct {
	fresh      bool   // no gatekeeper buckets yet
	noUsers    bool   // users bucket missing
	noBuckets  bool   // audit or tickets bucket missing (added after schema 1 first shipped)
	check      []byte // sealed key-check record, nil if none
	hasSecrets bool   // some user record holds (or may hold) a sealed secret
	firstUser  string // a user with a sealed secret, to test a key against
	firstSeal  []byte
}

// init checks the schema, loads or creates the key and verifies it against
// the key-check record (writing one on first use).
func (s *Store) init() error {
	var info dbInfo
	if err := s.view(func(tx *bolt.Tx) error {
		var err error
		info, err = s.inspect(tx)
		return err
	}); err != nil {
		return err
	}

	key, created, err := loadKey(s.keyPath, s.path, info.hasSecrets)
	if err != nil {
		return err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("secret key %s: %w", s.keyPath, err)
	}
	if s.aead, err = cipher.NewGCM(block); err != nil {
		return fmt.Errorf("secret key %s: %w", s.keyPath, err)
	}
	mismatch := fmt.Errorf("secret key file %s does not match database %s: %w", s.keyPath, s.path, ErrKeyMismatch)

	if !created {
		switch {
		case info.check != nil:
			if plain, err := s.open(info.check, checkAD); err != nil || !bytes.Equal(plain, checkPlain) {
				return mismatch
			}
			if !info.noUsers && !info.noBuckets {
				return nil // nothing to write
			}
			if info.noUsers {
				break // write a fresh check too, below
			}
			// Only the buckets added since are missing: create them and
			// leave the check record alone.
			return s.update(createBuckets)
		case info.firstSeal != nil:
			// Secrets but no check record (written by hand?): test the key on
			// a real secret before vouching for it.
			if _, err := s.open(info.firstSeal, userAD(info.firstUser)); err != nil {
				return mismatch
			}
		}
	}
	// Fresh database, new key, or a missing check record: record the schema
	// and a check sealed with this key, in one commit.
	check, err := s.seal(checkPlain, checkAD)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if info.fresh {
			if err := meta.Put(keySchema, []byte(strconv.Itoa(schemaVersion))); err != nil {
				return err
			}
		}
		if err := createBuckets(tx); err != nil {
			return err
		}
		return meta.Put(keyCheck, check)
	})
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
// sealed secret exists.
func (s *Store) inspect(tx *bolt.Tx) (dbInfo, error) {
	var info dbInfo
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return info, fmt.Errorf("database %s is not a gatekeeper database (no schema record): %w", s.path, ErrSchema)
		}
		info.fresh = true
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
	if c := meta.Get(keyCheck); c != nil {
		info.check = bytes.Clone(c)
	}
	info.noBuckets = tx.Bucket(bucketAudit) == nil || tx.Bucket(bucketTickets) == nil
	users := tx.Bucket(bucketUsers)
	if users == nil {
		info.noUsers = true
		return info, nil
	}
	err = users.ForEach(func(k, v []byte) error {
		var r record
		if json.Unmarshal(v, &r) != nil {
			// Unreadable: it may well hold a secret, so never treat the
			// database as secret-free because of it.
			info.hasSecrets = true
			return nil
		}
		if len(r.Sealed) > 0 {
			info.hasSecrets = true
			if info.firstSeal == nil {
				info.firstUser, info.firstSeal = string(k), r.Sealed
			}
		}
		return nil
	})
	return info, err
}

// loadKey reads the secret key file, creating it when it is missing and the
// database holds no sealed secret (hasSecrets false). created reports a new
// key.
func loadKey(keyPath, dbPath string, hasSecrets bool) (key []byte, created bool, err error) {
	f, err := os.Open(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		if hasSecrets {
			return nil, false, fmt.Errorf("database %s holds encrypted TOTP secrets but secret key file %s does not exist; "+
				"restore that key file from a backup (a new key cannot decrypt the existing secrets): %w",
				dbPath, keyPath, ErrKeyMissing)
		}
		key, err := createKey(keyPath)
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

// Close closes the database, releasing its lock.
func (s *Store) Close() error {
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
// record of is returned as StateNone, with a nil error.
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
// returns an error. A record that cannot be read or decrypted is an error
// matching ErrDamaged and fn is not called.
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

		if err := callFn(fn, &u, &fnPanic); err != nil {
			return err
		}

		switch {
		case u.Name != name:
			return fmt.Errorf("user %q: update may not rename the user (to %q)", name, u.Name)
		case u.State != StateNone && u.State != StatePending && u.State != StateActive:
			return fmt.Errorf("user %q: unknown state %q", name, u.State)
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
		}
		if oldPlain != nil && bytes.Equal(u.Secret, oldPlain) {
			r.Sealed = old.Sealed // unchanged: spend no fresh nonce
		} else if r.Sealed, err = s.seal(u.Secret, userAD(name)); err != nil {
			return err
		}
		v, err := json.Marshal(r)
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

// decode parses a stored record; raw nil means no record. bbolt's slice is
// only valid during the transaction: json.Unmarshal copies what it keeps.
func (s *Store) decode(name string, raw []byte) (record, error) {
	if raw == nil {
		return record{State: StateNone}, nil
	}
	var r record
	err := json.Unmarshal(raw, &r)
	switch {
	case err != nil:
	case r.State != StateNone && r.State != StatePending && r.State != StateActive:
		err = fmt.Errorf("unknown state %q", r.State)
	case r.State != StateNone && len(r.Sealed) == 0:
		err = fmt.Errorf("state %s without a secret", r.State)
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

// view runs a read-only transaction, turning a bbolt panic on a damaged
// page into an error.
func (s *Store) view(fn func(*bolt.Tx) error) (err error) {
	defer s.recoverDamage(&err)
	return s.db.View(fn)
}

// update runs a read-write transaction (never Batch: auth state must not be
// retried or coalesced), turning a bbolt panic into an error; bbolt has
// rolled back by then.
func (s *Store) update(fn func(*bolt.Tx) error) (err error) {
	defer s.recoverDamage(&err)
	return s.db.Update(fn)
}

func (s *Store) recoverDamage(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("database %s is damaged (bbolt: %v)", s.path, r)
	}
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
