package bolt

import (
	"bytes"
	"errors"
	"gatekeeper/gatekeeper/store"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// hashes returns n distinct fake recovery code hashes of the stored size.
func hashes(n int) [][]byte {
	var hs [][]byte
	for i := range n {
		hs = append(hs, bytes.Repeat([]byte{byte(i + 1)}, store.RecoveryHashSize))
	}
	return hs
}

func TestRecoveryFields(t *testing.T) {
	salt := []byte("0123456789abcdef")
	tests := []struct {
		name     string
		fn       func(u *store.User) error
		wantErr  string // "" = success
		wantLeft int    // hashes stored afterwards
	}{
		{"set ten", func(u *store.User) error { u.RecoverySalt, u.Recovery = salt, hashes(10); return nil }, "", 10},
		{"use one", func(u *store.User) error { u.Recovery = slices.Delete(u.Recovery, 1, 2); return nil }, "", 2},
		{"use the last ones", func(u *store.User) error { u.Recovery = nil; return nil }, "", 0},
		{"hashes without salt", func(u *store.User) error { u.RecoverySalt, u.Recovery = nil, hashes(2); return nil }, "without a salt", 3},
		{"short hash", func(u *store.User) error { u.Recovery = append(u.Recovery, []byte("short")); return nil }, "hash 3 has 5 bytes", 3},
		{"long hash", func(u *store.User) error { u.Recovery[0] = make([]byte, 64); return nil }, "hash 0 has 64 bytes", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s := mustOpen(t, dbPath, keyPath)
			enroll(t, s, "alice", []byte("secret"))
			if err := s.Update("alice", func(u *store.User) error { u.RecoverySalt, u.Recovery = salt, hashes(3); return nil }); err != nil {
				t.Fatal(err)
			}

			err := s.Update("alice", tt.fn)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Update: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Update = %v, want an error containing %q", err, tt.wantErr)
			}
			// What Get, List and a reopened store see.
			u, err := s.Get("alice")
			if err != nil {
				t.Fatal(err)
			}
			if len(u.Recovery) != tt.wantLeft || !bytes.Equal(u.RecoverySalt, salt) {
				t.Errorf("Get: %d hashes, salt %q; want %d hashes and the salt", len(u.Recovery), u.RecoverySalt, tt.wantLeft)
			}
			list, err := s.List()
			if err != nil || len(list) != 1 || len(list[0].Recovery) != tt.wantLeft {
				t.Errorf("List = %+v, %v", list, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dbPath, keyPath)
			var seen [][]byte
			errLook := errors.New("look")
			_ = s.Update("alice", func(u *store.User) error { seen = u.Recovery; return errLook })
			if len(seen) != tt.wantLeft {
				t.Errorf("after reopen Update's fn sees %d hashes, want %d", len(seen), tt.wantLeft)
			}
		})
	}
}

// TestRecoveryGoneWithReset: a reset through Update (state none, no secret)
// removes the recovery codes with the record.
func TestRecoveryGoneWithReset(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	enroll(t, s, "alice", []byte("secret"))
	if err := s.Update("alice", func(u *store.User) error { u.RecoverySalt, u.Recovery = []byte("salt"), hashes(10); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateNone, nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if u, err := s.Get("alice"); err != nil || u.Recovery != nil || u.RecoverySalt != nil {
		t.Errorf("after reset Get = %+v, %v; want no recovery codes", u, err)
	}
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name        string
		user        string
		raw         string // stored as bob's raw record when not ""
		wantExisted bool
		wantErr     error
	}{
		{name: "active user", user: "alice", wantExisted: true},
		{name: "no record", user: "carol", wantExisted: false},
		{name: "damaged json", user: "bob", raw: "{not json", wantExisted: true},
		{name: "damaged state", user: "bob", raw: `{"state":"root"}`, wantExisted: true},
		{name: "undecryptable secret", user: "bob", raw: `{"state":"active","sealed_secret":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`, wantExisted: true},
		{name: "bad name", user: "../alice", wantErr: store.ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s, err := Open(dbPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			enroll(t, s, "alice", []byte("alice's secret"))
			enroll(t, s, "dave", []byte("dave's secret"))
			if err := s.AddTicket(tt.user, "ticket-for-user", day0.Add(time.Hour)); err != nil && tt.wantErr == nil {
				t.Fatal(err)
			}
			if err := s.Append(store.Event{Kind: store.EventLinkConfirmed, User: tt.user}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if tt.raw != "" {
				rawPut(t, dbPath, bucketUsers, []byte(tt.user), []byte(tt.raw))
			}
			s = mustOpen(t, dbPath, keyPath)

			existed, err := s.Delete(tt.user)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Delete = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || existed != tt.wantExisted {
				t.Fatalf("Delete = %v, %v; want %v, nil", existed, err, tt.wantExisted)
			}
			if u, err := s.Get(tt.user); err != nil || u.State != store.StateNone {
				t.Errorf("after Delete Get = %+v, %v; want state none", u, err)
			}
			if raw := rawGetOpen(t, s, tt.user); raw != nil {
				t.Errorf("record still stored: %q", raw)
			}
			// Deleting again finds nothing; the other user, the ticket and the
			// audit log are untouched.
			if existed, err := s.Delete(tt.user); existed || err != nil {
				t.Errorf("second Delete = %v, %v", existed, err)
			}
			if string(secretOf(t, s, "dave")) != "dave's secret" {
				t.Error("another user's record changed")
			}
			if err := s.CheckTicket(tt.user, "ticket-for-user", day0); err != nil {
				t.Errorf("ticket after Delete: %v", err)
			}
			if ev, err := s.Events(store.EventQuery{User: tt.user}); err != nil || len(ev) != 1 {
				t.Errorf("audit after Delete: %+v, %v", ev, err)
			}
			// The user can be linked afresh.
			enroll(t, s, tt.user, []byte("new"))
			if string(secretOf(t, s, tt.user)) != "new" {
				t.Error("re-link after Delete failed")
			}
		})
	}
}

// TestOpenAddsBuckets: a database missing the audit or tickets bucket (they
// were added after schema 1 first shipped) gains them, keeps its users and
// its key check.
func TestOpenAddsBuckets(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "alice", []byte("secret"))
	if err := s.Update("alice", func(u *store.User) error { u.LastStep = 77; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check := rawGet(t, dbPath, bucketMeta, keyCheck)
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAudit, bucketTickets} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dbPath, keyPath)
	if u, err := s.Get("alice"); err != nil || u.State != store.StateActive || u.LastStep != 77 || u.Recovery != nil {
		t.Errorf("record reads as %+v, %v", u, err)
	}
	if err := s.Append(store.Event{Kind: store.EventReset, User: "alice"}); err != nil {
		t.Errorf("Append on an upgraded database: %v", err)
	}
	if err := s.AddTicket("alice", "tok", day0.Add(time.Hour)); err != nil {
		t.Errorf("AddTicket on an upgraded database: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rawGet(t, dbPath, bucketMeta, keySchema); string(got) != "2" {
		t.Errorf("schema = %q, want 2", got)
	}
	if got := rawGet(t, dbPath, bucketMeta, keyCheck); !bytes.Equal(got, check) {
		t.Error("the key check record was rewritten")
	}
}
