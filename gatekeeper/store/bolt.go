package store

import (
	"errors"
	"fmt"
	"io/fs"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// This file is everything about driving bbolt: opening the file, and
// transactions that turn what goes wrong underneath into errors an operator
// can act on.

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
