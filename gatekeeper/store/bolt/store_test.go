package bolt

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"gatekeeper/gatekeeper/store"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// paths returns a database and key path in a fresh temporary directory.
func paths(t *testing.T) (dbPath, keyPath string) {
	dir := t.TempDir()
	return filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key")
}

func mustOpen(t *testing.T, dbPath, keyPath string) *Store {
	t.Helper()
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// enroll makes name an active user with secret.
func enroll(t *testing.T, s *Store, name string, secret []byte) {
	t.Helper()
	err := s.Update(name, func(u *store.User) error {
		u.State, u.Secret, u.EnrolledAt = store.StateActive, secret, time.Now()
		return nil
	})
	if err != nil {
		t.Fatalf("Update(%s): %v", name, err)
	}
}

// secretOf reads name's plaintext secret the only way there is: inside Update.
func secretOf(t *testing.T, s *Store, name string) []byte {
	t.Helper()
	var secret []byte
	errLook := errors.New("just looking")
	err := s.Update(name, func(u *store.User) error {
		secret = u.Secret
		return errLook
	})
	if !errors.Is(err, errLook) {
		t.Fatalf("Update(%s): %v", name, err)
	}
	return secret
}

// rawPut writes a value straight into the (closed) bbolt file.
func rawPut(t *testing.T, dbPath string, bucket, key, value []byte) {
	t.Helper()
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.Put(key, value)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rawGet reads a value straight from the (closed) bbolt file.
func rawGet(t *testing.T, dbPath string, bucket, key []byte) []byte {
	t.Helper()
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	_ = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucket); b != nil {
			v = bytes.Clone(b.Get(key))
		}
		return nil
	})
	return v
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"a", true},
		{"Bob_Smith-2.x", true},
		{"9lives", true},
		{"a-", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"-rf", false},
		{"al ice", false},
		{"alice\n", false},
		{"alice@example.org", false},
		{"a/b", false},
		{"a:b", false},
		{"ällo", false},
		{"a\x00", false},
		{".", false},
		{"..", false},
		{"...", true},
		{".profile", true},
	}
	for _, tt := range tests {
		err := store.CheckName(tt.name)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, store.ErrBadName)) {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600))
	secret := randBytes(t, 20)

	err := s.Update("alice", func(u *store.User) error {
		if u.Name != "alice" || u.State != store.StateNone || u.Secret != nil || u.LastStep != 0 || !u.CreatedAt.IsZero() {
			t.Errorf("absent user seen by fn as %+v", *u)
		}
		u.State, u.Secret = store.StatePending, secret
		u.CreatedAt, u.PendingSince = t0, t0.Add(time.Minute)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update("alice", func(u *store.User) error {
		if !bytes.Equal(u.Secret, secret) || u.State != store.StatePending {
			t.Errorf("fn sees %+v", *u)
		}
		u.State, u.LastStep = store.StateActive, 58907520
		u.EnrolledAt, u.LastLogin = t0.Add(2*time.Minute), t0.Add(3*time.Minute)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "bob", randBytes(t, 20))

	got, err := s.Get("alice")
	if err != nil {
		t.Fatal(err)
	}
	want := store.User{Name: "alice", State: store.StateActive, LastStep: 58907520,
		CreatedAt: t0, PendingSince: t0.Add(time.Minute), EnrolledAt: t0.Add(2 * time.Minute), LastLogin: t0.Add(3 * time.Minute)}
	if !sameUser(got, want) {
		t.Errorf("Get = %+v\nwant %+v", got, want)
	}
	if got.Secret != nil {
		t.Error("Get exposed the secret")
	}
	if !bytes.Equal(secretOf(t, s, "alice"), secret) {
		t.Error("secret changed")
	}

	none, err := s.Get("carol")
	if err != nil || !sameUser(none, store.User{Name: "carol", State: store.StateNone}) {
		t.Errorf("Get(absent) = %+v, %v", none, err)
	}
	if _, err := s.Get("bad name"); !errors.Is(err, store.ErrBadName) {
		t.Errorf("Get(bad name) = %v", err)
	}

	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alice" || list[1].Name != "bob" {
		t.Fatalf("List = %+v", list)
	}
	for _, u := range list {
		if u.Secret != nil {
			t.Errorf("List exposed %s's secret", u.Name)
		}
	}
	if !sameUser(list[0], want) {
		t.Errorf("List[0] = %+v", list[0])
	}
}

func sameUser(a, b store.User) bool {
	return a.Name == b.Name && a.State == b.State && bytes.Equal(a.Secret, b.Secret) && a.LastStep == b.LastStep &&
		a.CreatedAt.Equal(b.CreatedAt) && a.PendingSince.Equal(b.PendingSince) &&
		a.EnrolledAt.Equal(b.EnrolledAt) && a.LastLogin.Equal(b.LastLogin)
}

func TestUpdateRules(t *testing.T) {
	errFn := errors.New("fn says no")
	tests := []struct {
		name    string
		fn      func(u *store.User) error
		wantErr string // "" = success
		isErr   error
	}{
		{"fn error", func(u *store.User) error { u.LastStep = 999; u.State = store.StateNone; return errFn }, "fn says no", errFn},
		{"wrapped fn error", func(u *store.User) error { u.Secret = nil; return fmt.Errorf("ctx: %w", errFn) }, "ctx: fn says no", errFn},
		{"rename", func(u *store.User) error { u.Name = "mallory"; return nil }, "rename", nil},
		{"unknown state", func(u *store.User) error { u.State = "admin"; return nil }, "unknown state", nil},
		{"active without secret", func(u *store.User) error { u.Secret = nil; return nil }, "needs a secret", nil},
		{"pending without secret", func(u *store.User) error { u.State, u.Secret = store.StatePending, nil; return nil }, "needs a secret", nil},
		{"last step back", func(u *store.User) error { u.LastStep = 99; return nil }, "may not go back", nil},
		{"last step zeroed", func(u *store.User) error {
			*u = store.User{Name: u.Name, State: store.StateActive, Secret: u.Secret}
			return nil
		}, "may not go back", nil},
		{"last step forward", func(u *store.User) error { u.LastStep = 101; return nil }, "", nil},
		{"new secret", func(u *store.User) error { u.Secret = []byte("another secret"); return nil }, "", nil},
		{"reset deletes", func(u *store.User) error { u.State, u.Secret = store.StateNone, nil; return nil }, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s := mustOpen(t, dbPath, keyPath)
			secret := randBytes(t, 20)
			enroll(t, s, "alice", secret)
			if err := s.Update("alice", func(u *store.User) error { u.LastStep = 100; return nil }); err != nil {
				t.Fatal(err)
			}
			before, _ := s.Get("alice")

			err := s.Update("alice", tt.fn)
			after, gerr := s.Get("alice")
			if gerr != nil {
				t.Fatal(gerr)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Update: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Update = %v, want error containing %q", err, tt.wantErr)
			}
			if tt.isErr != nil && !errors.Is(err, tt.isErr) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.isErr)
			}
			if tt.name == "fn error" && err != errFn {
				t.Errorf("fn's error not returned unchanged: %#v", err)
			}
			if !sameUser(before, after) || !bytes.Equal(secretOf(t, s, "alice"), secret) {
				t.Errorf("failed Update changed the record: %+v -> %+v", before, after)
			}
		})
	}
}

func TestUpdateOutcomes(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	enroll(t, s, "alice", []byte("s1"))

	// A reset (state none, no secret) removes the user altogether.
	if err := s.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateNone, nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Errorf("after reset List = %+v, %v", list, err)
	}
	if raw := rawGetOpen(t, s, "alice"); raw != nil {
		t.Errorf("reset left a record: %s", raw)
	}
	// A state-none update of an absent user writes nothing either.
	if err := s.Update("ghost", func(u *store.User) error { u.LastLogin = time.Now(); return nil }); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("List = %+v", list)
	}
	// Re-enrolling after a reset gets the new secret.
	enroll(t, s, "alice", []byte("s2"))
	if got := secretOf(t, s, "alice"); string(got) != "s2" {
		t.Errorf("secret = %q", got)
	}
	// A bad name never reaches fn.
	called := false
	if err := s.Update("../etc", func(*store.User) error { called = true; return nil }); !errors.Is(err, store.ErrBadName) || called {
		t.Errorf("Update(bad name) = %v, fn called %v", err, called)
	}
}

// rawGetOpen reads a user's raw record through the open store's handle.
func rawGetOpen(t *testing.T, s *Store, name string) []byte {
	t.Helper()
	var v []byte
	if err := s.db.View(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucketUsers).Get([]byte(name)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestUpdateSecretNonceReuse(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	enroll(t, s, "alice", []byte("secret"))
	first := rawGetOpen(t, s, "alice")
	// Changing another field keeps the sealed secret as it was.
	if err := s.Update("alice", func(u *store.User) error { u.LastStep = 5; return nil }); err != nil {
		t.Fatal(err)
	}
	second := rawGetOpen(t, s, "alice")
	if sealedOf(t, first) != sealedOf(t, second) {
		t.Error("unchanged secret was sealed again")
	}
	// The same plaintext set again under another user seals differently.
	enroll(t, s, "bob", []byte("secret"))
	if sealedOf(t, rawGetOpen(t, s, "bob")) == sealedOf(t, second) {
		t.Error("two users' equal secrets have equal ciphertexts")
	}
}

func sealedOf(t *testing.T, raw []byte) string {
	t.Helper()
	const field = `"sealed_secret":"`
	i := bytes.Index(raw, []byte(field))
	if i < 0 {
		t.Fatalf("no sealed secret in %s", raw)
	}
	rest := raw[i+len(field):]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

func TestUpdatePanicRollsBack(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	enroll(t, s, "alice", []byte("secret"))
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the fn's panic", r)
			}
		}()
		_ = s.Update("alice", func(u *store.User) error { u.LastStep = 7; panic("boom") })
	}()
	// The writer lock was released and nothing was written.
	done := make(chan error, 1)
	go func() { done <- s.Update("alice", func(u *store.User) error { u.LastStep = 3; return nil }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Update after a panicking fn hangs: transaction not rolled back")
	}
	if u, _ := s.Get("alice"); u.LastStep != 3 {
		t.Errorf("LastStep = %d, want 3", u.LastStep)
	}
}

// TestConcurrentStepClaim is the one-use-step check under concurrent logins:
// many goroutines observe the same LastStep and try to claim the next step;
// exactly one may succeed.
func TestConcurrentStepClaim(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	enroll(t, s, "alice", []byte("secret"))
	if err := s.Update("alice", func(u *store.User) error { u.LastStep = 100; return nil }); err != nil {
		t.Fatal(err)
	}
	errUsed := errors.New("step already used")
	const n, want = 16, 101

	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.Update("alice", func(u *store.User) error {
				if u.LastStep >= want {
					return errUsed
				}
				u.LastStep = want
				return nil
			})
		})
	}
	close(start)
	wg.Wait()

	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, errUsed):
			t.Errorf("unexpected error %v", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d goroutines claimed step %d, want exactly 1", wins, want)
	}
	if u, _ := s.Get("alice"); u.LastStep != want {
		t.Errorf("LastStep = %d", u.LastStep)
	}
}

func TestReopenKeepsState(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	secret := randBytes(t, 20)
	enroll(t, s, "alice", secret)
	if err := s.Update("alice", func(u *store.User) error { u.LastStep = 4242; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dbPath, keyPath)
	u, err := s.Get("alice")
	if err != nil || u.State != store.StateActive || u.LastStep != 4242 {
		t.Fatalf("after reopen Get = %+v, %v", u, err)
	}
	if got := secretOf(t, s, "alice"); !bytes.Equal(got, secret) {
		t.Errorf("after reopen secret = %x, want %x", got, secret)
	}
}

func TestNoPlaintextOnDisk(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{}
	for i := range 20 {
		name := "user" + strconv.Itoa(i)
		secrets[name] = randBytes(t, 20)
		enroll(t, s, name, secrets[name])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	lower := bytes.ToLower(raw)
	for name, sec := range secrets {
		b32 := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sec)
		for _, form := range [][]byte{sec, []byte(b32), []byte(strings.ToLower(b32)), []byte(hex.EncodeToString(sec))} {
			if bytes.Contains(raw, form) || bytes.Contains(lower, bytes.ToLower(form)) {
				t.Errorf("database holds %s's secret in the clear (%q)", name, form)
			}
		}
	}
	if bytes.Contains(raw, key) {
		t.Error("database holds the secret key")
	}
	// ...while the records are there and decrypt with the key.
	s = mustOpen(t, dbPath, keyPath)
	for name, sec := range secrets {
		if !bytes.Equal(secretOf(t, s, name), sec) {
			t.Errorf("%s's secret lost", name)
		}
	}
}

// TestMovedSecret: a record copied to another user's name must not be
// accepted there (its MAC and its secret's AEAD both bind the name).
func TestMovedSecret(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "alice", []byte("alice's secret"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawPut(t, dbPath, bucketUsers, []byte("mallory"), rawGet(t, dbPath, bucketUsers, []byte("alice")))

	s = mustOpen(t, dbPath, keyPath)
	called := false
	err = s.Update("mallory", func(*store.User) error { called = true; return nil })
	if err == nil || called || !strings.Contains(err.Error(), `"mallory"`) || !strings.Contains(err.Error(), "integrity check") ||
		!errors.Is(err, store.ErrDamaged) {
		t.Errorf("Update(mallory) = %v, fn called %v; want ErrDamaged", err, called)
	}
	if string(secretOf(t, s, "alice")) != "alice's secret" {
		t.Error("alice damaged")
	}
}

func TestDamagedRecord(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"not json", "{not json"},
		{"binary", "\x00\xff\x10"},
		{"unknown state", `{"state":"root"}`},
		{"active without secret", `{"state":"active","last_step":5}`},
		{"wrong type", `{"state":"active","sealed_secret":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","last_step":"x"}`},
		{"bad base64", `{"state":"active","sealed_secret":"!!!"}`},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s, err := Open(dbPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			enroll(t, s, "alice", []byte("fine"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			rawPut(t, dbPath, bucketUsers, []byte("bob"), []byte(tt.raw))

			s = mustOpen(t, dbPath, keyPath)
			check := func(op string, err error) {
				t.Helper()
				if err == nil || !strings.Contains(err.Error(), `user "bob"`) || !strings.Contains(err.Error(), "damaged") ||
					!errors.Is(err, store.ErrDamaged) {
					t.Errorf("%s: %v, want an ErrDamaged error naming bob's damaged record", op, err)
				}
			}
			_, err = s.Get("bob")
			check("Get", err)
			_, err = s.List()
			check("List", err)
			called := false
			err = s.Update("bob", func(*store.User) error { called = true; return nil })
			check("Update", err)
			if called {
				t.Error("Update called fn on a damaged record")
			}
			if got := rawGetOpen(t, s, "bob"); string(got) != tt.raw {
				t.Errorf("damaged record overwritten: %q", got)
			}
			if u, err := s.Get("alice"); err != nil || u.State != store.StateActive {
				t.Errorf("other user: %+v, %v", u, err)
			}
		})
	}
}

// TestDamagedRecordKeyMissing: an unreadable record may hold a secret, so it
// must stop a new key from being made.
func TestDamagedRecordKeyMissing(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawPut(t, dbPath, bucketUsers, []byte("bob"), []byte("{garbage"))
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dbPath, keyPath); !errors.Is(err, store.ErrKeyMissing) {
		t.Errorf("Open = %v, want ErrKeyMissing", err)
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dbPath, keyPath string) // after a first Open+enroll+Close
		is    error
		want  []string // substrings; "DB"/"KEY" stand for the paths
	}{
		{"key mismatch", func(t *testing.T, _, keyPath string) {
			writeKey(t, keyPath, randBytes(t, 32), 0o600)
		}, store.ErrKeyMismatch, []string{"secret key file KEY does not match database DB"}},
		{"key missing", func(t *testing.T, _, keyPath string) {
			if err := os.Remove(keyPath); err != nil {
				t.Fatal(err)
			}
		}, store.ErrKeyMissing, []string{"DB", "KEY", "restore"}},
		{"key group readable", func(t *testing.T, _, keyPath string) {
			chmod(t, keyPath, 0o640)
		}, nil, []string{"KEY", "0640", "chmod 600"}},
		{"key other readable", func(t *testing.T, _, keyPath string) {
			chmod(t, keyPath, 0o604)
		}, nil, []string{"KEY", "0604"}},
		{"key group writable", func(t *testing.T, _, keyPath string) {
			chmod(t, keyPath, 0o620)
		}, nil, []string{"KEY", "0620"}},
		{"key too short", func(t *testing.T, _, keyPath string) {
			writeKey(t, keyPath, randBytes(t, 31), 0o600)
		}, nil, []string{"KEY", "31 bytes"}},
		{"key too long", func(t *testing.T, _, keyPath string) {
			writeKey(t, keyPath, randBytes(t, 64), 0o600)
		}, nil, []string{"KEY", "64 bytes"}},
		{"key empty", func(t *testing.T, _, keyPath string) {
			writeKey(t, keyPath, nil, 0o600)
		}, nil, []string{"KEY", "0 bytes"}},
		{"key is a directory", func(t *testing.T, _, keyPath string) {
			if err := os.Remove(keyPath); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(keyPath, 0o700); err != nil {
				t.Fatal(err)
			}
		}, nil, []string{"KEY", "not a regular file"}},
		{"schema too new", func(t *testing.T, dbPath, _ string) {
			rawPut(t, dbPath, bucketMeta, keySchema, []byte("3"))
		}, store.ErrSchema, []string{"DB", "version 3", "up to version 2"}},
		{"schema set back", func(t *testing.T, dbPath, _ string) {
			rawPut(t, dbPath, bucketMeta, keySchema, []byte("1"))
		}, store.ErrSchema, []string{"DB", "schema version 1 but a key check record of another version"}},
		{"schema 1 key check", func(t *testing.T, dbPath, keyPath string) {
			key, _ := os.ReadFile(keyPath)
			check, _ := v1Sealer(t, key).seal(checkPlainV1, checkAD)
			rawPut(t, dbPath, bucketMeta, keyCheck, check)
		}, store.ErrSchema, []string{"DB", "schema version 2 but a key check record of another version"}},
		{"schema garbage", func(t *testing.T, dbPath, _ string) {
			rawPut(t, dbPath, bucketMeta, keySchema, []byte("one"))
		}, store.ErrSchema, []string{"DB", `"one"`}},
		{"key check damaged", func(t *testing.T, dbPath, _ string) {
			rawPut(t, dbPath, bucketMeta, keyCheck, []byte("short"))
		}, store.ErrKeyMismatch, []string{"KEY", "DB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s, err := Open(dbPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			enroll(t, s, "alice", []byte("secret"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			keyBefore, _ := os.ReadFile(keyPath)
			tt.setup(t, dbPath, keyPath)
			keyAfterSetup, keyErr := os.ReadFile(keyPath)

			s, err = Open(dbPath, keyPath)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Open = %v, want errors.Is %v", err, tt.is)
			}
			for _, w := range tt.want {
				w = strings.NewReplacer("DB", dbPath, "KEY", keyPath).Replace(w)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open = %q, want it to contain %q", err, w)
				}
			}
			// A refused key is never replaced, and a missing one not created.
			now, nowErr := os.ReadFile(keyPath)
			if !bytes.Equal(now, keyAfterSetup) || (nowErr == nil) != (keyErr == nil) {
				t.Errorf("Open touched the key file (before %x, now %x, %v)", keyBefore, now, nowErr)
			}
		})
	}
}

// TestKeyCreatedOnlyWithoutSecrets: a missing key is made anew for a
// database without secrets (fresh, or every user reset).
func TestKeyCreatedOnlyWithoutSecrets(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "alice", []byte("old"))
	if err := s.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateNone, nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	oldKey, _ := os.ReadFile(keyPath)
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dbPath, keyPath)
	if err != nil {
		t.Fatalf("Open without secrets and key: %v", err)
	}
	newKey, err := os.ReadFile(keyPath)
	if err != nil || len(newKey) != 32 || bytes.Equal(newKey, oldKey) {
		t.Fatalf("new key %x, %v", newKey, err)
	}
	enroll(t, s, "alice", []byte("new"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The key check now follows the new key.
	s = mustOpen(t, dbPath, keyPath)
	if string(secretOf(t, s, "alice")) != "new" {
		t.Error("secret lost")
	}
	_ = s.Close()
	writeKey(t, keyPath, oldKey, 0o600)
	if _, err := Open(dbPath, keyPath); !errors.Is(err, store.ErrKeyMismatch) {
		t.Errorf("old key: %v, want ErrKeyMismatch", err)
	}
}

func writeKey(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	chmod(t, path, mode)
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestGarbageDatabase(t *testing.T) {
	tests := []struct {
		name    string
		content func(t *testing.T) []byte
	}{
		{"random 100 bytes", func(t *testing.T) []byte { return randBytes(t, 100) }},
		{"random 4 KiB", func(t *testing.T) []byte { return randBytes(t, 4096) }},
		{"random 64 KiB", func(t *testing.T) []byte { return randBytes(t, 64<<10) }},
		{"zeros 64 KiB", func(t *testing.T) []byte { return make([]byte, 64<<10) }},
		{"text", func(*testing.T) []byte { return []byte("listen: 0.0.0.0:22\n") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			content := tt.content(t)
			if err := os.WriteFile(dbPath, content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dbPath, keyPath)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open of a garbage file succeeded")
			}
			if !strings.Contains(err.Error(), dbPath) || !strings.Contains(err.Error(), "not a gatekeeper database") {
				t.Errorf("Open = %v", err)
			}
			if got, _ := os.ReadFile(dbPath); !bytes.Equal(got, content) {
				t.Error("garbage file was modified")
			}
			if _, err := os.Stat(keyPath); err == nil {
				t.Error("key file created for a garbage database")
			}
		})
	}
}

func TestOpenNotAFile(t *testing.T) {
	dbPath, keyPath := paths(t)
	if err := os.Mkdir(dbPath, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dbPath, keyPath)
	if err == nil || !strings.Contains(err.Error(), dbPath) || strings.Contains(err.Error(), "damaged") {
		t.Errorf("Open(directory) = %v", err)
	}
}

// TestForeignBoltFile: a valid bbolt file of some other program is refused,
// not adopted.
func TestForeignBoltFile(t *testing.T) {
	dbPath, keyPath := paths(t)
	rawPut(t, dbPath, []byte("widgets"), []byte("a"), []byte("b"))
	if _, err := Open(dbPath, keyPath); !errors.Is(err, store.ErrSchema) || !strings.Contains(err.Error(), "not a gatekeeper database") {
		t.Errorf("Open = %v", err)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "gatekeeper")
	dbPath, keyPath := filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key")
	s := mustOpen(t, dbPath, keyPath)
	enroll(t, s, "alice", []byte("secret"))
	for path, want := range map[string]os.FileMode{
		dir:               os.ModeDir | 0o700,
		filepath.Dir(dir): os.ModeDir | 0o700,
		dbPath:            0o600,
		keyPath:           0o600,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, st.Mode(), want)
		}
	}
	if st, _ := os.Stat(keyPath); st.Size() != 32 {
		t.Errorf("key file has %d bytes", st.Size())
	}
}

func TestParseLocks(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  WRITE 700 fd:01:5678 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
2: -> FLOCK  ADVISORY  WRITE 999 fd:01:5678 0 EOF
3: FLOCK  ADVISORY  WRITE 4321 103:0a:42 0 EOF
4: OFDLCK ADVISORY  READ  -1 00:05:42 0 EOF
5: FLOCK  ADVISORY  WRITE 77 00:2a:9001 0 EOF
6: FLOCK  ADVISORY  WRITE 78 00:2b:9002 0 EOF
6: FLOCK  ADVISORY  WRITE 79 00:2c:9002 0 EOF
garbage line
`
	tests := []struct {
		name              string
		major, minor, ino uint64
		want              int
	}{
		{"exact", 0xfd, 1, 5678, 1234},
		{"hex major/minor", 0x103, 0x0a, 42, 4321},
		{"other device, unique inode", 0x08, 0x01, 9001, 77},
		{"other device, ambiguous inode", 0x08, 0x01, 9002, 0},
		{"no lock", 0xfd, 1, 1, 0},
	}
	for _, tt := range tests {
		if got := parseLocks(strings.NewReader(locks), tt.major, tt.minor, tt.ino); got != tt.want {
			t.Errorf("%s: pid %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestInUseErrorMessage(t *testing.T) {
	if got := (&InUseError{Path: "/x", PID: 42}).Error(); got != "database /x is in use by pid 42 (is gatekeeper serve running?)" {
		t.Errorf("got %q", got)
	}
	if got := (&InUseError{Path: "/x"}).Error(); got != "database /x is in use by another process (is gatekeeper serve running?)" {
		t.Errorf("got %q", got)
	}
}

// TestInUse opens the database in a child process (this test binary,
// re-executed as TestHelperProcess) and checks that Open here fails fast
// with the child's pid instead of hanging on bbolt's lock.
func TestInUse(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "alice", []byte("secret"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "GK_STORE_HELPER=1", "GK_STORE_DB="+dbPath, "GK_STORE_KEY="+keyPath)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}

	start := time.Now()
	s, err = Open(dbPath, keyPath)
	elapsed := time.Since(start)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open succeeded while another process holds the database")
	}
	var inUse *InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("Open = %v, want *InUseError", err)
	}
	if inUse.Path != dbPath || inUse.PID != cmd.Process.Pid {
		t.Errorf("InUseError %+v, want path %s pid %d", inUse, dbPath, cmd.Process.Pid)
	}
	want := fmt.Sprintf("database %s is in use by pid %d (is gatekeeper serve running?)", dbPath, cmd.Process.Pid)
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if elapsed < 500*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("Open took %v, want about 1s", elapsed)
	}

	// Once the child has let go, the database opens again.
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	s = mustOpen(t, dbPath, keyPath)
	if u, err := s.Get("alice"); err != nil || u.State != store.StateActive {
		t.Errorf("after child exit: %+v, %v", u, err)
	}
}

// TestHelperProcess is not a test: TestInUse runs it in a child process,
// where it holds the database open until its stdin closes.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("GK_STORE_HELPER") != "1" {
		return
	}
	s, err := Open(os.Getenv("GK_STORE_DB"), os.Getenv("GK_STORE_KEY"))
	if err != nil {
		fmt.Fprintln(os.Stdout, "open:", err)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stdout, "ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = s.Close()
	os.Exit(0)
}
