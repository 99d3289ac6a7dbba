package bolt

import (
	"bytes"
	"encoding/json"
	"errors"
	"gatekeeper/gatekeeper/store"
	"os"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// nextOf reads name's plaintext replacement secret the only way there is: inside Update.
func nextOf(t *testing.T, s *Store, name string) []byte {
	t.Helper()
	var next []byte
	errLook := errors.New("just looking")
	if err := s.Update(name, func(u *store.User) error { next = u.NextSecret; return errLook }); !errors.Is(err, errLook) {
		t.Fatalf("Update(%s): %v", name, err)
	}
	return next
}

// TestNextAndDriftRoundTrip: the replacement and drift fields survive Update, Get, List and a
// reopen; the replacement secret, like the secret, is seen only inside Update.
func TestNextAndDriftRoundTrip(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	t0 := time.Date(2026, 5, 6, 7, 8, 9, 10, time.FixedZone("CEST", 7200))
	secret, next := randBytes(t, 20), randBytes(t, 20)
	enroll(t, s, "alice", secret)
	err := s.Update("alice", func(u *store.User) error {
		u.NextSecret, u.NextSince = next, t0
		u.PendingBinding, u.ConfirmTries = bytes.Repeat([]byte{7}, 32), 2
		u.DriftSteps, u.DriftAt = -6, t0.Add(time.Minute)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string, u store.User) {
		t.Helper()
		if u.NextSecret != nil || u.Secret != nil {
			t.Errorf("%s: a secret is exposed", when)
		}
		if !u.NextSince.Equal(t0) || u.DriftSteps != -6 || !u.DriftAt.Equal(t0.Add(time.Minute)) || u.ConfirmTries != 2 ||
			u.State != store.StateActive {
			t.Errorf("%s: %+v", when, u)
		}
	}
	u, err := s.Get("alice")
	if err != nil {
		t.Fatal(err)
	}
	check("Get", u)
	list, err := s.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	check("List", list[0])
	if got := nextOf(t, s, "alice"); !bytes.Equal(got, next) {
		t.Errorf("next secret = %x, want %x", got, next)
	}
	if got := secretOf(t, s, "alice"); !bytes.Equal(got, secret) {
		t.Error("the current secret changed")
	}

	// Another change seals neither secret again (no fresh nonce spent).
	before := rawGetOpen(t, s, "alice")
	if err := s.Update("alice", func(u *store.User) error { u.LastStep = 9; return nil }); err != nil {
		t.Fatal(err)
	}
	after := rawGetOpen(t, s, "alice")
	if sealedOf(t, before) != sealedOf(t, after) || sealedNextOf(t, before) != sealedNextOf(t, after) {
		t.Error("an unchanged secret was sealed again")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dbPath, keyPath)
	u, err = s.Get("alice")
	if err != nil {
		t.Fatal(err)
	}
	check("after reopen", u)
	if got := nextOf(t, s, "alice"); !bytes.Equal(got, next) {
		t.Error("next secret lost on reopen")
	}

	// The replacement confirmed: the next secret becomes the secret and goes.
	err = s.Update("alice", func(u *store.User) error {
		u.Secret, u.NextSecret, u.NextSince = u.NextSecret, nil, time.Time{}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	raw := rawGetOpen(t, s, "alice")
	if bytes.Contains(raw, []byte("sealed_next_secret")) || bytes.Contains(raw, []byte("next_since")) {
		t.Errorf("a dropped replacement left fields behind: %s", raw)
	}
	if got := secretOf(t, s, "alice"); !bytes.Equal(got, next) {
		t.Error("the replacement did not become the secret")
	}
}

func sealedNextOf(t *testing.T, raw []byte) string {
	t.Helper()
	const field = `"sealed_next_secret":"`
	i := bytes.Index(raw, []byte(field))
	if i < 0 {
		t.Fatalf("no sealed next secret in %s", raw)
	}
	rest := raw[i+len(field):]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

// TestNextSecretRules: only an active record may hold a replacement secret.
func TestNextSecretRules(t *testing.T) {
	next := []byte("the new phone's key!")
	tests := []struct {
		name    string
		start   store.State // the record's state before (none: no record)
		fn      func(u *store.User) error
		wantErr string // "" = success
	}{
		{"active gets one", store.StateActive, func(u *store.User) error { u.NextSecret = next; return nil }, ""},
		{"active drops it", store.StateActive, func(u *store.User) error { u.NextSecret = nil; return nil }, ""},
		{"pending may not", store.StatePending, func(u *store.User) error { u.NextSecret = next; return nil }, "needs an active device (state pending)"},
		{"none may not", store.StateNone, func(u *store.User) error { u.NextSecret = next; return nil }, "needs an active device (state none)"},
		{"none with a secret may not", store.StateNone, func(u *store.User) error { u.Secret, u.NextSecret = next, next; return nil }, "needs an active device"},
		{"a reset must drop it", store.StateActive, func(u *store.User) error { u.State, u.Secret = store.StateNone, nil; return nil }, "needs an active device (state none)"},
		{"a reset that drops it", store.StateActive, func(u *store.User) error { u.State, u.Secret, u.NextSecret = store.StateNone, nil, nil; return nil }, ""},
		{"back to pending must drop it", store.StateActive, func(u *store.User) error { u.State = store.StatePending; return nil }, "needs an active device (state pending)"},
		{"drift on any record", store.StatePending, func(u *store.User) error { u.DriftSteps, u.DriftAt = 3, time.Now(); return nil }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s := mustOpen(t, dbPath, keyPath)
			if tt.start != store.StateNone {
				err := s.Update("alice", func(u *store.User) error {
					u.State, u.Secret = tt.start, []byte("old secret")
					if tt.start == store.StateActive {
						u.NextSecret = []byte("a replacement")
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			before := rawGetOpen(t, s, "alice")
			err := s.Update("alice", tt.fn)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Update: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `"alice"`) {
				t.Fatalf("Update = %v, want an error containing %q", err, tt.wantErr)
			}
			if after := rawGetOpen(t, s, "alice"); !bytes.Equal(before, after) {
				t.Error("a refused Update changed the record")
			}
		})
	}
}

// TestNextSecretAuthenticDamage: records that only a gatekeeper bug (or someone with the key
// file) could write: they carry a valid MAC, and are still refused as damaged, naming the user.
func TestNextSecretAuthenticDamage(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(r *record)
		wantErr string
	}{
		{"the current secret sealed as the next one", func(r *record) { r.SealedNext = r.Sealed },
			"replacement secret cannot be decrypted"},
		{"the next secret sealed as the current one", func(r *record) { r.Sealed = r.SealedNext },
			"secret cannot be decrypted"},
		{"a pending record with a next secret", func(r *record) { r.State = store.StatePending },
			"state pending with a replacement secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s := mustOpen(t, dbPath, keyPath)
			enroll(t, s, "alice", []byte("current"))
			if err := s.Update("alice", func(u *store.User) error { u.NextSecret = []byte("next"); return nil }); err != nil {
				t.Fatal(err)
			}
			var r record
			if err := s.verify(bucketUsers, []byte("alice"), rawGetOpen(t, s, "alice"), &r); err != nil {
				t.Fatal(err)
			}
			tt.edit(&r)
			v, err := s.authenticate(bucketUsers, []byte("alice"), r)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketUsers).Put([]byte("alice"), v) }); err != nil {
				t.Fatal(err)
			}
			called := false
			err = s.Update("alice", func(*store.User) error { called = true; return nil })
			if !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), `user "alice"`) || !strings.Contains(err.Error(), tt.wantErr) || called {
				t.Errorf("Update = %v (fn called: %v), want ErrDamaged naming alice: %q", err, called, tt.wantErr)
			}
			if existed, err := s.Delete("alice"); !existed || err != nil {
				t.Errorf("Delete = %v, %v", existed, err)
			}
		})
	}
}

// TestNoPlaintextNextSecret: replacement secrets are never on disk in the clear either.
func TestNoPlaintextNextSecret(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	next := randBytes(t, 20)
	enroll(t, s, "alice", randBytes(t, 20))
	if err := s.Update("alice", func(u *store.User) error { u.NextSecret = next; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, next) {
		t.Error("database holds the replacement secret in the clear")
	}
	var a authenticated
	if err := json.Unmarshal(rawGet(t, dbPath, bucketUsers, []byte("alice")), &a); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(a.Data, []byte(`"sealed_next_secret"`)) {
		t.Errorf("no sealed next secret in %s", a.Data)
	}
}
