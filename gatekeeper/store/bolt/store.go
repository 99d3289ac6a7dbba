// Package bolt is the store.Store of one node: everything in one bbolt file
// (config key db), beside the secret key file.
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
// before the upgrade like a rollback. A database of a later version is
// refused with ErrSchema, so an older gatekeeper refuses a migrated file:
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
// it returns. bbolt has a single writer lock, so long writes would hold up
// logins: audit pruning deletes at most pruneBatch events per transaction.
//
// A write that fails because the disk is full (also a used-up quota, or the
// file size limit) returns an error matching ErrNoSpace that names the file;
// reads go on working. See bolt.go for why a full disk cannot crash the
// process through bbolt's memory map.
package bolt

import (
	"gatekeeper/gatekeeper/store"

	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

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

const (
	// schemaVersion is the record layout this code reads and writes; Open
	// migrates version 1 (see the package doc).
	schemaVersion = 2
	// openTimeout is how long Open waits for another process's lock before
	// giving up with an InUseError instead of hanging.
	openTimeout = time.Second
)

var (
	bucketMeta    = []byte("meta")
	bucketUsers   = []byte(store.BucketUsers)
	bucketAudit   = []byte("audit")
	bucketTickets = []byte(store.BucketTickets)
	keySchema     = []byte("schema")
	// keyCheck holds the sealed key check (store.Codec.KeyCheck).
	keyCheck = []byte("keycheck")
	// errFnPanicked aborts the transaction when Update's fn panics; the panic
	// is re-raised after bbolt has rolled back.
	errFnPanicked = errors.New("update function panicked")
)

// Store is an open gatekeeper database. Its methods are safe for concurrent
// use.
type Store struct {
	db *bbolt.DB
	// codec seals secrets and authenticates records and tickets.
	codec   *store.Codec
	path    string
	keyPath string
	// writeMu lets one write transaction at a time reach bbolt (which runs
	// only one anyway). If bbolt panics or faults mid-write, its own writer
	// lock may stay held for good; writers then wait here instead, and learn
	// from broken what happened rather than block forever.
	writeMu sync.Mutex
	// broken is the error of the write that broke, set for good by update
	// (under writeMu); atomic so that Health need not wait for writeMu
	// behind a write.
	broken atomic.Pointer[error]
	// migrated is what Open migrated (see Migrated).
	migrated *Migration
	// afterPruneTx, when set (by tests), is called after each of
	// PruneEvents' transactions with the number of events it deleted.
	afterPruneTx func(deleted int)
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
	if err := s.view(func(tx *bbolt.Tx) error {
		var err error
		info, err = s.inspect(tx)
		return err
	}); err != nil {
		return err
	}

	key, created, err := store.LoadKey(s.keyPath, "database "+s.path, info.hasRecords)
	if err != nil {
		return err
	}
	if s.codec, err = store.NewCodec(key, s.path); err != nil {
		return fmt.Errorf("secret key %s: %w", s.keyPath, err)
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

	check, err := s.codec.KeyCheck()
	if err != nil {
		return err
	}
	return s.update(func(tx *bbolt.Tx) error {
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
	mismatch := fmt.Errorf("secret key file %s does not match database %s: %w", s.keyPath, s.path, store.ErrKeyMismatch)
	if info.check == nil {
		if info.schema == 1 {
			// Gatekeeper wrote the schema record and the key check in one
			// transaction. Without the check, the schema record may have
			// been set back by hand to have forged records migrated.
			return false, fmt.Errorf("database %s has schema version 1 but no key check record (edited by hand?); "+
				"refusing to vouch for its records: restore it from a backup: %w", s.path, store.ErrSchema)
		}
		// Secrets but no check record (written by hand?): test the key on a
		// real secret before vouching for it.
		if info.firstSeal != nil {
			if _, err := s.codec.Open(info.firstSeal, store.UserAD(info.firstUser)); err != nil {
				return false, mismatch
			}
		}
		return true, nil
	}

	plain, err := s.codec.OpenKeyCheck(info.check)
	switch {
	case err != nil:
		return false, mismatch
	case string(plain) == store.CheckPlain && info.schema == schemaVersion:
		return false, nil
	case string(plain) == store.CheckPlainV1 && info.schema == 1:
		return true, nil // the migration seals a new one
	case string(plain) == store.CheckPlain || string(plain) == store.CheckPlainV1:
		return false, fmt.Errorf("database %s has schema version %d but a key check record of another version "+
			"(its schema record was edited?); refusing to open it: restore it from a backup: %w", s.path, info.schema, store.ErrSchema)
	default:
		return false, mismatch
	}
}

// createBuckets creates the data buckets that do not exist yet.
func createBuckets(tx *bbolt.Tx) error {
	for _, b := range [][]byte{bucketUsers, bucketAudit, bucketTickets} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	return nil
}

// inspect reads the schema version, the key-check record and whether any
// user record exists, without the key (so without checking anything).
func (s *Store) inspect(tx *bbolt.Tx) (dbInfo, error) {
	var info dbInfo
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bbolt.Bucket) error { empty = false; return nil })
		if !empty {
			return info, fmt.Errorf("database %s is not a gatekeeper database (no schema record): %w", s.path, store.ErrSchema)
		}
		return info, nil
	}
	raw := meta.Get(keySchema)
	v, err := strconv.Atoi(string(raw))
	switch {
	case err != nil || v < 1:
		return info, fmt.Errorf("database %s has an invalid schema record %q: %w", s.path, raw, store.ErrSchema)
	case v > schemaVersion:
		return info, fmt.Errorf("database %s has schema version %d, this gatekeeper supports up to version %d (upgrade gatekeeper): %w",
			s.path, v, schemaVersion, store.ErrSchema)
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
		var r store.Record
		if peekRecord(v, info.schema, &r) == nil && len(r.Sealed) > 0 && info.firstSeal == nil {
			info.firstUser, info.firstSeal = string(k), bytes.Clone(r.Sealed)
		}
		return nil
	})
	return info, err
}

// peekRecord decodes a stored record of the given schema without checking
// it, for inspect.
func peekRecord(raw []byte, schema int, r *store.Record) error {
	if schema == 1 {
		return json.Unmarshal(raw, r)
	}
	return store.PeekAuthenticated(raw, r)
}

// Close closes the database, releasing its lock. After a write that broke
// inside bbolt (see update) it returns that error instead: bbolt's Close
// would wait forever for the writer lock, and the process's exit releases
// the file.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.Health(); err != nil {
		return err
	}
	return s.db.Close()
}

// Get returns name's record without its secret. A user the store has no
// record of is returned as StateNone, with a nil error; a record that fails
// its integrity check is an error matching ErrDamaged.
func (s *Store) Get(name string) (store.User, error) {
	if err := store.CheckName(name); err != nil {
		return store.User{}, err
	}
	var u store.User
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		u, err = s.codec.DecodeUser(name, tx.Bucket(bucketUsers).Get([]byte(name)))
		return err
	})
	if err != nil {
		return store.User{Name: name}, err
	}
	return u, nil
}

// List returns every user with a record, sorted by name, without secrets.
// Damaged records come back apart, in a *store.DamagedError, with the
// others (see store.Store).
func (s *Store) List() ([]store.User, error) {
	l := store.Lister{Codec: s.codec}
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			l.Add(string(k), v)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return l.Result()
}

// Delete removes name's record, whatever it holds: the secret, the recovery
// codes, the last used step. It works on a damaged record too (the way out
// for one that Get or Update refuse). existed reports whether there was a
// record. The audit log and tickets are left alone: a ticket issued for the
// user still lets them link a new device. A record stored under an invalid
// name (by hand) is removed too; an invalid name without one is ErrBadName.
func (s *Store) Delete(name string) (existed bool, err error) {
	if name == "" {
		return false, store.CheckName(name) // bbolt has no empty keys
	}
	err = s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		existed = b.Get([]byte(name)) != nil
		if err := store.CheckDeleteName(name, existed); err != nil {
			return err
		}
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
// and fsync'd before Update returns, as store.Store.Update describes (fn runs
// once; Codec.Apply checks the result). A panic in fn rolls the transaction
// back and is then re-raised. A commit that fails for lack of disk space is
// an error matching ErrNoSpace.
func (s *Store) Update(name string, fn func(u *store.User) error) error {
	if err := store.CheckName(name); err != nil {
		return err
	}
	var fnPanic any
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		key := []byte(name)
		v, del, err := s.codec.Apply(name, b.Get(key), func(u *store.User) error {
			return callFn(fn, u, &fnPanic)
		})
		switch {
		case err != nil:
			return err
		case del:
			return b.Delete(key)
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
func callFn(fn func(*store.User) error, u *store.User, p *any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			*p, err = r, errFnPanicked
		}
	}()
	return fn(u)
}

// deleteWhere deletes the entries of b for which match is true and returns
// how many it deleted. The keys are collected first: deleting under a moving
// cursor can skip keys.
func deleteWhere(b *bbolt.Bucket, match func(k, v []byte) bool) (int, error) {
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
