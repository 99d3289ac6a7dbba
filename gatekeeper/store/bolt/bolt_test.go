package bolt

import (
	"errors"
	"fmt"
	"gatekeeper/gatekeeper/store"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestIsNoSpace(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"ENOSPC from a write", &fs.PathError{Op: "write", Path: "/db", Err: syscall.ENOSPC}, true},
		{"EDQUOT", fmt.Errorf("commit: %w", syscall.EDQUOT), true},
		{"EFBIG", syscall.EFBIG, true},
		// bbolt's grow and allocate format the cause with %s.
		{"bbolt file resize", fmt.Errorf("file resize error: %s", &fs.PathError{Op: "truncate", Path: "/db", Err: syscall.EFBIG}), true},
		{"bbolt mmap allocate", fmt.Errorf("mmap allocate error: %s", syscall.ENOSPC), true},
		{"EIO", &fs.PathError{Op: "write", Path: "/db", Err: syscall.EIO}, false},
		{"permission", fs.ErrPermission, false},
		{"other", errors.New("database not open"), false},
	}
	for _, tt := range tests {
		if got := store.IsNoSpace(tt.err); got != tt.want {
			t.Errorf("%s: store.IsNoSpace(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
	err := store.NoSpace("/var/lib/gatekeeper/gatekeeper.db", &fs.PathError{Op: "write", Path: "/db", Err: syscall.ENOSPC})
	if !errors.Is(err, store.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) ||
		!strings.HasPrefix(err.Error(), "database disk full: free space on the filesystem holding /var/lib/gatekeeper/gatekeeper.db (") {
		t.Errorf("noSpace = %v", err)
	}
}

// highWater is where bbolt's pages end in the (closed) database file.
func highWater(t *testing.T, dbPath string) int64 {
	t.Helper()
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	_ = db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// populate gives s a few users and enough audit events to span many pages.
func populate(t *testing.T, s *Store) {
	t.Helper()
	fullUser(t, s, "alice", 1)
	fullUser(t, s, "bob", 2)
	events := make([]store.Event, 2000)
	for i := range events {
		events[i] = store.Event{Kind: store.EventLoginOK, User: "alice", Detail: strings.Repeat("x", 100)}
	}
	if err := s.Append(events...); err != nil {
		t.Fatal(err)
	}
}

// TestTruncatedDatabase: a file shorter than bbolt's pages would make bbolt
// read past its end through the memory map (SIGBUS, which kills the
// process); Open refuses it with a clear error instead.
func TestTruncatedDatabase(t *testing.T) {
	page := int64(os.Getpagesize())
	tests := []struct {
		name string
		size func(hwm int64) int64
		want string
	}{
		{"meta pages only", func(int64) int64 { return 2 * page }, "cut short"},
		{"three pages", func(int64) int64 { return 3 * page }, "cut short"},
		{"half", func(hwm int64) int64 { return hwm / 2 / page * page }, "cut short"},
		{"last page missing", func(hwm int64) int64 { return hwm - page }, "cut short"},
		{"one page", func(int64) int64 { return page }, "not a gatekeeper database or is damaged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s, err := Open(dbPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			populate(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			size := tt.size(highWater(t, dbPath))
			if err := os.Truncate(dbPath, size); err != nil {
				t.Fatal(err)
			}

			s, err = Open(dbPath, keyPath)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open of a truncated database succeeded")
			}
			if !strings.Contains(err.Error(), dbPath) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v, want it to name the file and say %q", err, tt.want)
			}
			if st, _ := os.Stat(dbPath); st.Size() != size {
				t.Errorf("Open changed the file's size from %d to %d", size, st.Size())
			}
		})
	}
}

// TestTruncatedWhileOpen: the file cut short under an open store makes
// reads fault on the memory map; every transaction runs with
// SetPanicOnFault, so that is an error, not a dead process.
func TestTruncatedWhileOpen(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	populate(t, s)
	if err := os.Truncate(dbPath, 2*int64(os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	wantDamaged := func(op string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "database "+dbPath+" is damaged") {
			t.Errorf("%s = %v, want the database reported damaged", op, err)
		}
	}
	_, err := s.Get("alice")
	wantDamaged("Get", err)
	_, err = s.Events(store.EventQuery{})
	wantDamaged("Events", err)
	// A fault inside a write leaves bbolt's writer lock held: writes end,
	// without anyone blocking on that lock, and Close does not wait for it.
	wantDamaged("Update", s.Update("alice", func(u *store.User) error { u.LastStep++; return nil }))
	done := make(chan error, 2)
	go func() {
		done <- s.Append(store.Event{Kind: store.EventReset})
		done <- s.Close()
	}()
	for _, op := range []string{"Append after the fault", "Close"} {
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "no more writes") {
				t.Errorf("%s = %v, want the earlier fault", op, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s blocks", op)
		}
	}
}

// TestEmptyFile: a database file that exists but is empty (`: > gatekeeper.db`) is refused with
// a message saying what happened and what to do, and left as it is: bbolt would format it as a
// new database, forgetting every linked device.
func TestEmptyFile(t *testing.T) {
	tests := []struct {
		name    string
		withKey bool
	}{
		{"key file still there", true},
		{"no key file", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s := mustOpen(t, dbPath, keyPath)
			enroll(t, s, "alice", []byte("secret"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(dbPath, 0); err != nil {
				t.Fatal(err)
			}
			if !tt.withKey {
				if err := os.Remove(keyPath); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Open(dbPath, keyPath)
			for _, want := range []string{"database " + dbPath + " exists but is empty", "gatekeeper admin restore FILE", "delete it to start with no users"} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Open = %v, want it to say %q", err, want)
				}
			}
			if st, err := os.Stat(dbPath); err != nil || st.Size() != 0 {
				t.Errorf("the empty file was changed: %v, %v", st, err)
			}
			if _, err := os.Stat(keyPath); tt.withKey == errors.Is(err, os.ErrNotExist) {
				t.Errorf("key file: %v, want it as it was", err)
			}
		})
	}
}
