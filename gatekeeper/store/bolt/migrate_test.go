package bolt

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"gatekeeper/gatekeeper/store"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// v1Record and v1Ticket are a user record and a ticket as schema 1 stored
// them (plain JSON), frozen here so that these tests keep building schema 1
// databases whatever later happens to record and ticket.
type v1Record struct {
	State          string    `json:"state"`
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

type v1Ticket struct {
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

// v1DB describes a schema 1 database for buildV1.
type v1DB struct {
	users   map[string][]byte // raw values of the users bucket
	tickets map[string][]byte // raw values of the tickets bucket, by token
	noCheck bool              // leave out the key check record
	// noBuckets leaves out the audit and tickets buckets, as in a database
	// from before they were added.
	noBuckets bool
}

// v1User is name's schema 1 record: fields of r, with secret sealed as
// schema 1 sealed it.
func v1User(t *testing.T, key []byte, name string, secret []byte, r v1Record) []byte {
	t.Helper()
	if secret != nil {
		sealed, err := v1Sealer(t, key).seal(secret, userAD(name))
		if err != nil {
			t.Fatal(err)
		}
		r.Sealed = sealed
	}
	v, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func v1TicketValue(t *testing.T, user string, expires time.Time) []byte {
	t.Helper()
	v, err := json.Marshal(v1Ticket{User: user, Expires: expires})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// buildV1 writes a schema 1 database at dbPath with raw bbolt writes, as the
// schema 1 store left it: meta bucket with schema "1" and the key check
// sealed under key, and the given values.
func buildV1(t *testing.T, dbPath string, key []byte, d v1DB) {
	t.Helper()
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	check, err := v1Sealer(t, key).seal(checkPlainV1, checkAD)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchema, []byte("1")); err != nil {
			return err
		}
		if !d.noCheck {
			if err := meta.Put(keyCheck, check); err != nil {
				return err
			}
		}
		users, err := tx.CreateBucket(bucketUsers)
		if err != nil {
			return err
		}
		for name, v := range d.users {
			if err := users.Put([]byte(name), v); err != nil {
				return err
			}
		}
		if d.noBuckets {
			return nil
		}
		audit, err := tx.CreateBucket(bucketAudit)
		if err != nil {
			return err
		}
		if err := audit.Put(seqKey(1), []byte(`{"time":"2026-11-23T10:00:00Z","kind":"link_confirmed","user":"alice"}`)); err != nil {
			return err
		}
		if err := audit.SetSequence(1); err != nil {
			return err
		}
		tickets, err := tx.CreateBucket(bucketTickets)
		if err != nil {
			return err
		}
		for token, v := range d.tickets {
			if err := tickets.Put(ticketKey(token), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// dump returns every bucket's keys and values of the (closed) database file.
func dump(t *testing.T, dbPath string) map[string]string {
	t.Helper()
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newKey writes a fresh key file and returns the key.
func newKey(t *testing.T, keyPath string) []byte {
	t.Helper()
	key := randBytes(t, keySize)
	writeKey(t, keyPath, key, 0o600)
	return key
}

func TestMigrateV1(t *testing.T) {
	dbPath, keyPath := paths(t)
	key := newKey(t, keyPath)
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	alice := v1Record{
		State: "active", LastStep: 58000000,
		CreatedAt: t0, PendingSince: t0.Add(time.Minute), EnrolledAt: t0.Add(2 * time.Minute), LastLogin: t0.Add(time.Hour),
		RecoverySalt: []byte("salt-of-alice-16"), Recovery: hashes(3),
	}
	bob := v1Record{State: "pending", CreatedAt: t0, PendingSince: t0.Add(5 * time.Minute),
		ConfirmTries: 2, PendingBinding: bytes.Repeat([]byte{0xb0}, 32)}
	expires := day0.Add(24 * time.Hour)
	buildV1(t, dbPath, key, v1DB{
		users: map[string][]byte{
			"alice": v1User(t, key, "alice", []byte("alice's secret"), alice),
			"bob":   v1User(t, key, "bob", []byte("bob's secret"), bob),
		},
		tickets: map[string][]byte{
			"carols-ticket": v1TicketValue(t, "carol", expires),
			"daves-ticket":  v1TicketValue(t, "dave", expires),
		},
	})

	s := mustOpen(t, dbPath, keyPath)
	m := s.Migrated()
	if m == nil || m.From != 1 || m.Records != 2 || m.Tickets != 2 || len(m.Damaged) != 0 || m.DamagedTickets != 0 {
		t.Errorf("Migrated = %+v, want 2 records and 2 tickets from schema 1", m)
	}

	// Every field survived, and the secrets still decrypt.
	wantUsers := []store.User{
		{Name: "alice", State: store.StateActive, LastStep: alice.LastStep, CreatedAt: alice.CreatedAt, PendingSince: alice.PendingSince,
			EnrolledAt: alice.EnrolledAt, LastLogin: alice.LastLogin, RecoverySalt: alice.RecoverySalt, Recovery: alice.Recovery},
		{Name: "bob", State: store.StatePending, CreatedAt: bob.CreatedAt, PendingSince: bob.PendingSince,
			ConfirmTries: bob.ConfirmTries, PendingBinding: bob.PendingBinding},
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(wantUsers) {
		t.Fatalf("List = %+v", list)
	}
	for i, want := range wantUsers {
		if got, err := s.Get(want.Name); err != nil || !sameUserAll(got, want) || !sameUserAll(list[i], want) {
			t.Errorf("%s: Get = %+v, %v; List has %+v\nwant %+v", want.Name, got, err, list[i], want)
		}
	}
	if got := secretOf(t, s, "alice"); string(got) != "alice's secret" {
		t.Errorf("alice's secret = %q", got)
	}
	if got := secretOf(t, s, "bob"); string(got) != "bob's secret" {
		t.Errorf("bob's secret = %q", got)
	}
	// The tickets work, once, for their users only.
	if err := s.CheckTicket("dave", "carols-ticket", day0); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("carol's ticket for dave: %v", err)
	}
	if err := s.UseTicket("carol", "carols-ticket", day0); err != nil {
		t.Errorf("carol's ticket: %v", err)
	}
	if err := s.CheckTicket("dave", "daves-ticket", day0); err != nil {
		t.Errorf("dave's ticket: %v", err)
	}
	// The audit log is untouched, and the store goes on as usual.
	if ev, err := s.Events(store.EventQuery{}); err != nil || kinds(ev) != "link_confirmed" || ev[0].Seq != 1 {
		t.Errorf("Events = %+v, %v", ev, err)
	}
	if err := s.Update("alice", func(u *store.User) error { u.LastStep++; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// On disk: schema 2, a version 2 key check, every value authenticated.
	raw := dump(t, dbPath)
	if raw["meta/schema"] != "2" {
		t.Errorf("schema = %q, want 2", raw["meta/schema"])
	}
	if plain, err := v1Sealer(t, key).open([]byte(raw["meta/keycheck"]), checkAD); err != nil || !bytes.Equal(plain, checkPlain) {
		t.Errorf("key check opens to %q, %v; want the version 2 check", plain, err)
	}
	for k, v := range raw {
		if (strings.HasPrefix(k, "users/") || strings.HasPrefix(k, "tickets/")) && !strings.HasPrefix(v, `{"data":{`) {
			t.Errorf("%s not in the authenticated form: %s", k, v)
		}
	}

	// Opening again migrates nothing and writes nothing.
	s = mustOpen(t, dbPath, keyPath)
	if m := s.Migrated(); m != nil {
		t.Errorf("second Open migrated again: %+v", m)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if again := dump(t, dbPath); !mapsEqual(again, raw) {
		t.Error("second Open changed the database")
	}
}

// sameUserAll compares every field of two users.
func sameUserAll(a, b store.User) bool {
	return sameUser(a, b) && bytes.Equal(a.RecoverySalt, b.RecoverySalt) && slices.EqualFunc(a.Recovery, b.Recovery, bytes.Equal) &&
		a.ConfirmTries == b.ConfirmTries && bytes.Equal(a.PendingBinding, b.PendingBinding)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestMigrateGoldenV1 migrates a database written by the schema 1 code
// itself (testdata/README.md says what it holds).
func TestMigrateGoldenV1(t *testing.T) {
	dir := t.TempDir()
	dbPath, keyPath := filepath.Join(dir, "v1.db"), filepath.Join(dir, "v1.key")
	for src, dst := range map[string]string{"testdata/v1.db": dbPath, "testdata/v1.key": keyPath} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := rawGet(t, dbPath, bucketMeta, keySchema); string(got) != "1" {
		t.Fatalf("golden file has schema %q, want 1", got)
	}

	s := mustOpen(t, dbPath, keyPath)
	if m := s.Migrated(); m == nil || m.Records != 2 || m.Tickets != 1 || len(m.Damaged) != 0 {
		t.Errorf("Migrated = %+v", m)
	}
	t0 := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	want := map[string]store.User{
		"alice": {Name: "alice", State: store.StateActive, LastStep: 59000000, CreatedAt: t0, PendingSince: t0.Add(time.Minute),
			EnrolledAt: t0.Add(2 * time.Minute), LastLogin: t0.Add(time.Hour), RecoverySalt: []byte("alice-salt-16byt"),
			Recovery: [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}},
		"bob": {Name: "bob", State: store.StatePending, CreatedAt: t0, PendingSince: t0.Add(3 * time.Minute),
			ConfirmTries: 2, PendingBinding: bytes.Repeat([]byte{0xb0}, 32)},
	}
	secrets := map[string]string{"alice": "alice-secret-20bytes", "bob": "bob-secret-20bytes!!"}
	for name, w := range want {
		if got, err := s.Get(name); err != nil || !sameUserAll(got, w) {
			t.Errorf("Get(%s) = %+v, %v\nwant %+v", name, got, err, w)
		}
		if got := secretOf(t, s, name); string(got) != secrets[name] {
			t.Errorf("%s's secret = %q, want %q", name, got, secrets[name])
		}
	}
	if err := s.UseTicket("carol", "golden-ticket-token", day0); err != nil {
		t.Errorf("carol's ticket: %v", err)
	}
	if ev, err := s.Events(store.EventQuery{}); err != nil || kinds(ev) != "link_confirmed" || ev[0].User != "alice" {
		t.Errorf("Events = %+v, %v", ev, err)
	}
}

// TestMigrateDamagedV1: a schema 1 record that schema 1 could not read
// either is left as it was and reads as damaged; the others migrate, and an
// admin can delete it.
func TestMigrateDamagedV1(t *testing.T) {
	alicesRecord := func(t *testing.T, key []byte) []byte {
		return v1User(t, key, "alice", []byte("alice's secret"), v1Record{State: "active"})
	}
	tests := []struct {
		name string
		bob  func(t *testing.T, key []byte) []byte
	}{
		{"not json", func(*testing.T, []byte) []byte { return []byte("{not json") }},
		{"empty", func(*testing.T, []byte) []byte { return []byte{} }},
		{"unknown state", func(*testing.T, []byte) []byte { return []byte(`{"state":"root"}`) }},
		{"active without secret", func(*testing.T, []byte) []byte { return []byte(`{"state":"active","last_step":5}`) }},
		{"wrong type", func(t *testing.T, key []byte) []byte {
			return bytes.Replace(v1User(t, key, "bob", []byte("s"), v1Record{State: "active", LastStep: 7}), []byte(`"last_step":7`), []byte(`"last_step":"7"`), 1)
		}},
		{"secret copied from alice", alicesRecord},
		{"secret sealed under another key", func(t *testing.T, _ []byte) []byte {
			return v1User(t, randBytes(t, keySize), "bob", []byte("s"), v1Record{State: "active"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			key := newKey(t, keyPath)
			bobRaw := tt.bob(t, key)
			buildV1(t, dbPath, key, v1DB{users: map[string][]byte{
				"alice": alicesRecord(t, key),
				"bob":   bobRaw,
			}})

			s := mustOpen(t, dbPath, keyPath)
			if m := s.Migrated(); m == nil || m.Records != 1 || !slices.Equal(m.Damaged, []string{"bob"}) {
				t.Errorf("Migrated = %+v, want alice migrated and bob left", m)
			}
			if got := rawGetOpen(t, s, "bob"); !bytes.Equal(got, bobRaw) {
				t.Errorf("bob's record changed to %q", got)
			}
			wantDamaged := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), `user "bob"`) || !strings.Contains(err.Error(), "integrity check") {
					t.Errorf("%s = %v, want ErrDamaged naming bob's record failing its integrity check", op, err)
				}
			}
			_, err := s.Get("bob")
			wantDamaged("Get(bob)", err)
			_, err = s.List()
			wantDamaged("List", err)
			wantDamaged("Update(bob)", s.Update("bob", func(*store.User) error { return nil }))
			if got := secretOf(t, s, "alice"); string(got) != "alice's secret" {
				t.Errorf("alice's secret = %q", got)
			}

			if existed, err := s.Delete("bob"); !existed || err != nil {
				t.Fatalf("Delete(bob) = %v, %v", existed, err)
			}
			if list, err := s.List(); err != nil || len(list) != 1 || list[0].Name != "alice" {
				t.Errorf("after Delete List = %+v, %v", list, err)
			}
		})
	}
}

// TestMigrateDamagedTicketV1: unreadable schema 1 tickets are left, count as
// no ticket, and are swept by the next UseTicket.
func TestMigrateDamagedTicketV1(t *testing.T) {
	dbPath, keyPath := paths(t)
	key := newKey(t, keyPath)
	buildV1(t, dbPath, key, v1DB{tickets: map[string][]byte{
		"good":       v1TicketValue(t, "alice", day0.Add(time.Hour)),
		"garbage":    []byte("{garbage"),
		"bad user":   v1TicketValue(t, "../etc", day0.Add(time.Hour)),
		"no expiry":  []byte(`{"user":"bob"}`),
		"other user": v1TicketValue(t, "carol", day0.Add(time.Hour)),
	}})
	s := mustOpen(t, dbPath, keyPath)
	if m := s.Migrated(); m == nil || m.Tickets != 2 || m.DamagedTickets != 3 {
		t.Errorf("Migrated = %+v, want 2 tickets and 3 left", m)
	}
	if err := s.CheckTicket("bob", "no expiry", day0); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("ticket without expiry: %v", err)
	}
	if err := s.UseTicket("alice", "good", day0); err != nil {
		t.Errorf("good ticket: %v", err)
	}
	count := 0
	_ = s.db.View(func(tx *bolt.Tx) error { count = tx.Bucket(bucketTickets).Stats().KeyN; return nil })
	if count != 1 {
		t.Errorf("%d tickets left after UseTicket, want carol's only", count)
	}
	if err := s.CheckTicket("carol", "other user", day0); err != nil {
		t.Errorf("carol's ticket: %v", err)
	}
}

// TestMigrateV1Refused: what makes Open refuse a schema 1 database, and then
// change nothing in it.
func TestMigrateV1Refused(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dbPath, keyPath string) // builds the database
		is    error
		want  string
	}{
		{"wrong key", func(t *testing.T, dbPath, keyPath string) {
			key := randBytes(t, keySize)
			buildV1(t, dbPath, key, v1DB{users: map[string][]byte{"alice": v1User(t, key, "alice", []byte("s"), v1Record{State: "active"})}})
			newKey(t, keyPath)
		}, store.ErrKeyMismatch, "does not match"},
		{"key missing", func(t *testing.T, dbPath, _ string) {
			key := randBytes(t, keySize)
			buildV1(t, dbPath, key, v1DB{users: map[string][]byte{"alice": v1User(t, key, "alice", []byte("s"), v1Record{State: "active"})}})
		}, store.ErrKeyMissing, "restore it from a backup"},
		{"no key check", func(t *testing.T, dbPath, keyPath string) {
			key := newKey(t, keyPath)
			buildV1(t, dbPath, key, v1DB{noCheck: true, users: map[string][]byte{"alice": v1User(t, key, "alice", []byte("s"), v1Record{State: "active"})}})
		}, store.ErrSchema, "no key check record"},
		{"schema 2 set back to 1", func(t *testing.T, dbPath, keyPath string) {
			s, err := Open(dbPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			enroll(t, s, "alice", []byte("s"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// Someone rewrites alice's record in the schema 1 form with a
			// lower last step, and sets the schema back to have it vouched for.
			key, _ := os.ReadFile(keyPath)
			rawPut(t, dbPath, bucketUsers, []byte("alice"), v1User(t, key, "alice", []byte("s"), v1Record{State: "active"}))
			rawPut(t, dbPath, bucketMeta, keySchema, []byte("1"))
		}, store.ErrSchema, "key check record of another version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			tt.setup(t, dbPath, keyPath)
			before := dump(t, dbPath)
			s, err := Open(dbPath, keyPath)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), dbPath) {
				t.Errorf("Open = %v, want %v saying %q and naming the database", err, tt.is, tt.want)
			}
			if after := dump(t, dbPath); !mapsEqual(before, after) {
				t.Error("a refused Open changed the database")
			}
		})
	}
}

// TestMigrateV1WithoutBuckets: a schema 1 database from before the audit
// log and tickets (no such buckets, records without recovery fields)
// migrates and gains the buckets.
func TestMigrateV1WithoutBuckets(t *testing.T) {
	dbPath, keyPath := paths(t)
	key := newKey(t, keyPath)
	buildV1(t, dbPath, key, v1DB{noBuckets: true, users: map[string][]byte{
		"alice": []byte(`{"state":"active","sealed_secret":"` + b64(t, key, "alice", "secret") + `","last_step":77}`),
	}})
	s := mustOpen(t, dbPath, keyPath)
	if u, err := s.Get("alice"); err != nil || u.State != store.StateActive || u.LastStep != 77 || u.Recovery != nil {
		t.Errorf("old record reads as %+v, %v", u, err)
	}
	if err := s.Append(store.Event{Kind: store.EventReset, User: "alice"}); err != nil {
		t.Errorf("Append on a migrated database: %v", err)
	}
	if err := s.AddTicket("alice", "tok", day0.Add(time.Hour)); err != nil {
		t.Errorf("AddTicket on a migrated database: %v", err)
	}
}

// b64 is secret sealed for name under key, base64 as in a JSON record.
func b64(t *testing.T, key []byte, name, secret string) string {
	t.Helper()
	v := v1User(t, key, name, []byte(secret), v1Record{State: "active"})
	var r v1Record
	if err := json.Unmarshal(v, &r); err != nil {
		t.Fatal(err)
	}
	enc, _ := json.Marshal(r.Sealed)
	return strings.Trim(string(enc), `"`)
}

// TestMigrateV1NewKey: a schema 1 database without user records whose key
// file is gone gets a new key, and its tickets are migrated under it.
func TestMigrateV1NewKey(t *testing.T) {
	dbPath, keyPath := paths(t)
	buildV1(t, dbPath, randBytes(t, keySize), v1DB{tickets: map[string][]byte{"tok": v1TicketValue(t, "alice", day0.Add(time.Hour))}})
	s := mustOpen(t, dbPath, keyPath)
	if err := s.CheckTicket("alice", "tok", day0); err != nil {
		t.Errorf("ticket: %v", err)
	}
	enroll(t, s, "alice", []byte("s"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dbPath, keyPath)
	if got := secretOf(t, s, "alice"); string(got) != "s" {
		t.Errorf("secret = %q", got)
	}
}

// ticketHash is the tickets bucket key of token, for raw access in tests.
func ticketHash(token string) []byte {
	h := sha256.Sum256([]byte(store.NormalizeTyped(token)))
	return h[:]
}
