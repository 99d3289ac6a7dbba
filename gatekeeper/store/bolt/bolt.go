package bolt

import (
	"gatekeeper/gatekeeper/store"

	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// This file is everything about driving bbolt safely: opening the file,
// transactions, and turning what goes wrong underneath (a damaged or
// truncated file, a full disk) into errors an operator can act on.
//
// bbolt reads the database through a read-only shared memory map and writes
// it with pwrite. A write that fails (no space) is an ordinary error and the
// transaction is rolled back. A read through the map of a page the file
// cannot supply is not: the kernel sends SIGBUS (or SIGSEGV), which kills a Go
// program outright unless the goroutine has asked for a panic instead with
// debug.SetPanicOnFault. That happens when the file is shorter than bbolt's
// own metadata says (cut short, or only partly written because it was
// created on a full disk: see openBolt) and, on tmpfs, when a page of the
// file that is a hole must be allocated to be read while the filesystem is
// full (tmpfs allocates a page on a read fault; reading a hole through a
// shared mapping of a file on a full tmpfs faults). In normal operation bbolt
// reads only pages it has written before its meta page pointed at them, so a
// full disk by itself makes writes fail cleanly (TestDiskFull) and the one
// way it leads to a short file is a new file's first write (openBolt). Hence
// openBolt checks the file's length before bbolt maps it and empties a file
// whose creation ran out of space, and every transaction runs with
// SetPanicOnFault so that a fault that slips past (a file cut short while
// open) becomes an error instead of a crash; in a write it also ends writing
// (see update).

// openBolt opens the bbolt file, turning its errors into ones an operator
// can act on.
func openBolt(path string) (*bbolt.DB, error) {
	existed := false
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
		existed = true
		if st.Size() == 0 {
			return nil, emptyFileError(path)
		}
		if err := checkLength(path); err != nil {
			return nil, err
		}
	}
	db, err := boltOpen(path, &bbolt.Options{Timeout: openTimeout})
	if err != nil && !existed && errors.Is(err, store.ErrNoSpace) {
		// bbolt creates a new file by writing its first four pages at once.
		// On a full disk that write may have stored only some of them, and
		// the next Open would map a file shorter than its metadata says.
		// The file did not exist before: remove it, so that the next Open
		// creates it afresh (an empty one would be refused).
		_ = os.Remove(path)
	}
	return db, err
}

// emptyFileError is Open's error for a database file that exists but holds
// nothing. bbolt would format it as a new database, and gatekeeper would then
// know no user: every linked device forgotten, and anyone could link one
// again from the allowed networks with only a password. Gatekeeper itself
// never leaves an empty file (see openBolt), so it was emptied by hand, by a
// failed copy or restore, or by a filesystem check: an admin must decide.
func emptyFileError(path string) error {
	return fmt.Errorf("database %s exists but is empty (0 bytes): it was emptied or cut short (by hand, a failed copy, "+
		"a filesystem repair), and gatekeeper will not start it afresh, which would forget every linked device. "+
		"Restore it from a backup (delete the empty file, then `gatekeeper admin restore FILE`), or delete it to "+
		"start with no users (every user then links a device again)", path)
}

// checkLength refuses a database file that is shorter than bbolt's
// metadata says, before bbolt opens it read-write: in read-write mode bbolt
// reads the free page list at once, through the memory map, and a page past
// the end of the file would kill the process. A read-only bbolt handle reads
// only the two meta pages, which bbolt has checked are there.
func checkLength(path string) error {
	db, err := boltOpen(path, &bbolt.Options{Timeout: openTimeout, ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.Begin(false)
	if err != nil {
		return fmt.Errorf("database %s: %w", path, err)
	}
	need := tx.Size() // the end of bbolt's highest page
	_ = tx.Rollback()
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	if st.Size() < need {
		return fmt.Errorf("database %s is damaged: the file has %d bytes but its pages reach to byte %d "+
			"(it was cut short; restore it from a backup)", path, st.Size(), need)
	}
	return nil
}

// boltOpen is bbolt.Open with its errors (and panics, and memory faults)
// explained.
func boltOpen(path string, opts *bbolt.Options) (db *bbolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	// A damaged file can make bbolt panic; a bad file must be an error.
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("database %s is damaged (bbolt: %v)", path, r)
		}
	}()
	db, err = bbolt.Open(path, 0o600, opts)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, &InUseError{Path: path, PID: lockHolder(path)}
	case store.IsNoSpace(err):
		return nil, store.NoSpace(path, err)
	case errors.As(err, new(*fs.PathError)):
		// Could not open the file at all (permissions, a directory, ...).
		return nil, fmt.Errorf("open database: %w", err)
	default:
		// bbolt read the file and did not like it (ErrInvalid, ErrChecksum,
		// ErrVersionMismatch, "file size too small", ...).
		return nil, fmt.Errorf("database %s is not a gatekeeper database or is damaged: %w", path, err)
	}
}

// view runs a read-only transaction, turning a bbolt panic on a damaged
// page, or a memory fault reading the file, into an error.
func (s *Store) view(fn func(*bbolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.recoverDamage(&err)
	return s.db.View(fn)
}

// update runs a read-write transaction (never Batch: auth state must not be
// retried or coalesced). An error from fn comes back unchanged; one from
// bbolt's commit that says the disk is full becomes ErrNoSpace.
//
// A bbolt panic or memory fault becomes an error too, but it also ends
// writing for this Store (see writeMu): bbolt's rollback can fault again on
// the same pages and leave its writer lock held for good, and its in-memory
// state is not to be trusted after a panic mid-write anyway.
func (s *Store) update(fn func(*bbolt.Tx) error) (err error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.Health(); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			broken := fmt.Errorf("database %s is damaged (bbolt: %v); it takes no more writes until gatekeeper is restarted. "+
				"If it breaks again after a restart, copy the records into a new database file: `gatekeeper admin backup FILE` "+
				"(without --audit if the damage is in the audit log), stop gatekeeper, move the database file aside, "+
				"`gatekeeper admin restore FILE`, start gatekeeper (README: Backup and restore)", s.path, r)
			s.broken.Store(&broken)
			err = broken
		}
	}()
	fnFailed := false
	err = s.db.Update(func(tx *bbolt.Tx) error {
		err := fn(tx)
		fnFailed = err != nil
		return err
	})
	if err != nil && !fnFailed && store.IsNoSpace(err) {
		return store.NoSpace(s.path, err)
	}
	return err
}

var _ store.HealthChecker = (*Store)(nil)

// Health returns nil while the Store takes writes, and after a write broke
// inside bbolt (see update) that write's error, which every later write
// returns too: reads may still answer, but no login with a code can record its
// time step. It backs /healthz (store.HealthChecker).
func (s *Store) Health() error {
	if p := s.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// recoverDamage turns a panic in a read transaction into an error. A read
// transaction's rollback touches no page, so the Store stays usable.
func (s *Store) recoverDamage(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("database %s is damaged (bbolt: %v)", s.path, r)
	}
}
