// Package storetest is the conformance suite of store.Store: every backend
// runs Run against itself (bbolt in a temporary directory, etcd as a real
// server), so that the daemon can count on the same behaviour from both.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// Backend opens stores for the suite.
type Backend struct {
	// New returns an empty store whose key file is keyPath (created when
	// missing). Each call is a new, separate store.
	New func(t *testing.T, keyPath string) store.Store
	// Peer returns a second handle on the same data as s, the way a second
	// node sees it (nil: the backend has one node only, and the suite runs
	// its concurrency cases on s alone).
	Peer func(t *testing.T, s store.Store) store.Store
	// Reopen closes s and opens its data again, the way a restarted daemon
	// (or one that crashed after its last committed write) does.
	Reopen func(t *testing.T, s store.Store) store.Store
}

// Run runs the suite.
func Run(t *testing.T, b Backend) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"Records", testRecords},
		{"UpdateRules", testUpdateRules},
		{"UpdatePanics", testUpdatePanics},
		{"OneUseStepConcurrent", testOneUseStep},
		{"Tickets", testTickets},
		{"TicketSpentOnce", testTicketSpentOnce},
		{"Audit", testAudit},
		{"Prune", testPrune},
		{"Reopen", testReopen},
		{"DumpLoad", testDumpLoad},
		{"WrongKey", testWrongKey},
		{"Keys", testKeys},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, b) })
	}
}

func newStore(t *testing.T, b Backend) (store.Store, string) {
	t.Helper()
	key := t.TempDir() + "/secret.key"
	return b.New(t, key), key
}

// link makes name an active user with secret at step.
func link(t *testing.T, s store.Store, name string, secret []byte, step uint64) {
	t.Helper()
	err := s.Update(name, func(u *store.User) error {
		u.State, u.Secret, u.LastStep, u.EnrolledAt = store.StateActive, secret, step, time.Now()
		return nil
	})
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
}

func testRecords(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	u, err := s.Get("alice")
	if err != nil || u.State != store.StateNone || u.Name != "alice" {
		t.Fatalf("Get of an unknown user = %+v, %v; want StateNone, nil", u, err)
	}
	if _, err := s.Get("../etc"); !errors.Is(err, store.ErrBadName) {
		t.Errorf("Get(../etc) = %v, want ErrBadName", err)
	}
	link(t, s, "alice", []byte("secret-a"), 100)
	link(t, s, "bob", []byte("secret-b"), 0)
	u, err = s.Get("alice")
	if err != nil || u.State != store.StateActive || u.LastStep != 100 || u.Secret != nil {
		t.Fatalf("Get(alice) = %+v, %v; want active, step 100, no secret", u, err)
	}
	var seen []byte
	if err := s.Update("alice", func(u *store.User) error { seen = bytes.Clone(u.Secret); return nil }); err != nil {
		t.Fatal(err)
	}
	if string(seen) != "secret-a" {
		t.Errorf("Update's fn saw secret %q, want the stored one", seen)
	}
	// Times come back to the nanosecond: a login's failure takes back the last
	// login it recorded only while the record still holds exactly that time.
	at := time.Date(2026, 12, 7, 23, 30, 1, 123456789, time.FixedZone("X", 3600))
	if err := s.Update("alice", func(u *store.User) error { u.LastLogin = at; return nil }); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.Get("alice"); !u.LastLogin.Equal(at) {
		t.Errorf("LastLogin stored as %v, read back as %v", at, u.LastLogin)
	}
	users, err := s.List()
	if err != nil || len(users) != 2 || users[0].Name != "alice" || users[1].Name != "bob" {
		t.Fatalf("List = %+v, %v; want alice, bob", users, err)
	}
	// StateNone without a secret deletes the record.
	if err := s.Update("bob", func(u *store.User) error { *u = store.User{Name: "bob", State: store.StateNone}; return nil }); err != nil {
		t.Fatal(err)
	}
	if users, _ := s.List(); len(users) != 1 {
		t.Errorf("after reset List = %+v, want alice alone", users)
	}
	existed, err := s.Delete("alice")
	if err != nil || !existed {
		t.Errorf("Delete(alice) = %v, %v", existed, err)
	}
	if existed, _ := s.Delete("alice"); existed {
		t.Error("second Delete reported a record")
	}
}

func testUpdateRules(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	link(t, s, "alice", []byte("k"), 50)
	boom := errors.New("boom")
	tests := []struct {
		name string
		fn   func(u *store.User) error
		want error // nil: any error
	}{
		{"fn error comes back unchanged", func(u *store.User) error { u.LastStep = 60; return boom }, boom},
		{"step may not go back", func(u *store.User) error { u.LastStep = 49; return nil }, nil},
		{"no rename", func(u *store.User) error { u.Name = "mallory"; return nil }, nil},
		{"active needs a secret", func(u *store.User) error { u.Secret = nil; return nil }, nil},
		{"short recovery hash", func(u *store.User) error {
			u.RecoverySalt, u.Recovery = []byte("salt"), [][]byte{[]byte("short")}
			return nil
		}, nil},
	}
	for _, tt := range tests {
		err := s.Update("alice", tt.fn)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: Update = %v", tt.name, err)
		}
		if u, _ := s.Get("alice"); u.LastStep != 50 || u.State != store.StateActive || len(u.Recovery) != 0 {
			t.Errorf("%s: a refused Update changed the record: %+v", tt.name, u)
		}
	}
}

// testUpdatePanics: a panic in Update's fn (a bug, or a crash mid-change)
// reaches the caller and writes nothing; the store goes on working.
func testUpdatePanics(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	link(t, s, "alice", []byte("k"), 5)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic in fn did not reach the caller")
			}
		}()
		_ = s.Update("alice", func(u *store.User) error {
			u.LastStep = 9
			panic("boom")
		})
	}()
	if u, err := s.Get("alice"); err != nil || u.LastStep != 5 {
		t.Errorf("after a panicking Update: %+v, %v; want step 5", u, err)
	}
	link(t, s, "bob", []byte("j"), 1)
}

// testOneUseStep is the one-use rule under contention: 40 logins with the
// same code at once, spread over two nodes where the backend has them, let
// exactly one in.
func testOneUseStep(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	link(t, s, "alice", []byte("k"), 10)
	nodes := []store.Store{s}
	if b.Peer != nil {
		nodes = append(nodes, b.Peer(t, s))
	}
	const step = 11
	var accepted atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() {
			<-start
			ok := false
			err := nodes[i%len(nodes)].Update("alice", func(u *store.User) error {
				ok = false
				if u.LastStep >= step {
					return nil // replay: nothing to write
				}
				u.LastStep, ok = step, true
				return nil
			})
			if err != nil {
				errs <- err
				return
			}
			if ok {
				accepted.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Update: %v", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("%d of 40 concurrent logins with one code were accepted, want exactly 1", n)
	}
	if u, _ := nodes[len(nodes)-1].Get("alice"); u.LastStep != step {
		t.Errorf("LastStep = %d, want %d", u.LastStep, step)
	}
}

func testTickets(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	now := time.Now()
	if err := s.AddTicket("alice", "AAAA-bbbb", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckTicket("alice", "aaaabbbb", now); err != nil {
		t.Errorf("CheckTicket in another typing = %v", err)
	}
	if err := s.CheckTicket("bob", "aaaabbbb", now); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("another user's ticket: %v, want ErrNoTicket", err)
	}
	if err := s.CheckTicket("alice", "aaaabbbb", now.Add(2*time.Hour)); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("expired ticket: %v, want ErrNoTicket", err)
	}
	// A newer ticket revokes the older one.
	if err := s.AddTicket("alice", "cccc", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckTicket("alice", "aaaabbbb", now); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("revoked ticket: %v, want ErrNoTicket", err)
	}
	if err := s.UseTicket("alice", "cccc", now); err != nil {
		t.Fatalf("UseTicket = %v", err)
	}
	if err := s.UseTicket("alice", "cccc", now); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("second UseTicket = %v, want ErrNoTicket", err)
	}
	for _, bad := range []string{"", " - ", string(make([]byte, 300))} {
		if err := s.CheckTicket("alice", bad, now); !errors.Is(err, store.ErrNoTicket) {
			t.Errorf("CheckTicket(%q) = %v, want ErrNoTicket", bad, err)
		}
	}
	if err := s.AddTicket("alice", "", now.Add(time.Hour)); err == nil {
		t.Error("AddTicket with an empty token succeeded")
	}
}

func testTicketSpentOnce(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	nodes := []store.Store{s}
	if b.Peer != nil {
		nodes = append(nodes, b.Peer(t, s))
	}
	now := time.Now()
	if err := s.AddTicket("alice", "tok", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var spent atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			err := nodes[i%len(nodes)].UseTicket("alice", "tok", now)
			switch {
			case err == nil:
				spent.Add(1)
			case !errors.Is(err, store.ErrNoTicket):
				t.Errorf("UseTicket: %v", err)
			}
		})
	}
	wg.Wait()
	if n := spent.Load(); n != 1 {
		t.Errorf("a ticket was spent %d times by 20 concurrent uses, want once", n)
	}
}

func testAudit(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	day0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 5 {
		user := "alice"
		if i%2 == 1 {
			user = "bob"
		}
		if err := s.Append(store.Event{Kind: store.EventLoginOK, User: user, Time: day0.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Append(store.Event{User: "alice"}); err == nil {
		t.Error("Append of an event without a kind succeeded")
	}
	all, err := s.Events(store.EventQuery{})
	if err != nil || len(all) != 5 {
		t.Fatalf("Events = %d events, %v; want 5", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq || all[i].Time.Before(all[i-1].Time) {
			t.Errorf("events out of order: %+v then %+v", all[i-1], all[i])
		}
	}
	alice, _ := s.Events(store.EventQuery{User: "alice"})
	if len(alice) != 3 {
		t.Errorf("alice's events = %d, want 3", len(alice))
	}
	last2, _ := s.Events(store.EventQuery{Limit: 2})
	if len(last2) != 2 || !last2[1].Time.Equal(day0.Add(4*time.Minute)) {
		t.Errorf("Limit 2 = %+v, want the newest two, oldest first", last2)
	}
	since, _ := s.Events(store.EventQuery{Since: day0.Add(3 * time.Minute)})
	if len(since) != 2 {
		t.Errorf("Since = %d events, want 2", len(since))
	}
	// Many events from several writers at once all arrive.
	nodes := []store.Store{s}
	if b.Peer != nil {
		nodes = append(nodes, b.Peer(t, s))
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if err := nodes[i%len(nodes)].Append(store.Event{Kind: store.EventLoginRefused, User: fmt.Sprint("u", i)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if all, _ := s.Events(store.EventQuery{}); len(all) != 55 {
		t.Errorf("after 50 concurrent appends Events = %d, want 55", len(all))
	}
}

func testPrune(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	base := time.Now().Add(-48 * time.Hour)
	var evs []store.Event
	for i := range 1200 {
		evs = append(evs, store.Event{Kind: store.EventLoginOK, User: "alice", Time: base.Add(time.Duration(i) * time.Second)})
		if len(evs) == 100 {
			if err := s.Append(evs...); err != nil {
				t.Fatal(err)
			}
			evs = nil
		}
	}
	if err := s.Append(store.Event{Kind: store.EventReset, User: "alice"}); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneEvents(time.Now().Add(-time.Hour))
	if err != nil || n != 1200 {
		t.Errorf("PruneEvents = %d, %v; want 1200", n, err)
	}
	left, _ := s.Events(store.EventQuery{})
	if len(left) != 1 || left[0].Kind != store.EventReset {
		t.Errorf("after pruning: %+v, want the recent event alone", left)
	}
}

func testReopen(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	link(t, s, "alice", []byte("k"), 77)
	if err := s.AddTicket("bob", "tok", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s = b.Reopen(t, s)
	if u, err := s.Get("alice"); err != nil || u.LastStep != 77 || u.State != store.StateActive {
		t.Errorf("after reopening Get = %+v, %v", u, err)
	}
	if err := s.UseTicket("bob", "tok", time.Now()); err != nil {
		t.Errorf("after reopening the ticket = %v", err)
	}
}

func testDumpLoad(t *testing.T, b Backend) {
	src, key := newStore(t, b)
	link(t, src, "alice", []byte("k"), 77)
	link(t, src, "bob", []byte("j"), 5)
	if err := src.AddTicket("carol", "tok", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := src.Append(store.Event{Kind: store.EventLinkConfirmed, User: "alice"}); err != nil {
		t.Fatal(err)
	}
	var items []store.Item
	if err := src.Dump(true, func(it store.Item) error { items = append(items, it); return nil }); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, it := range items {
		kinds[it.Kind]++
	}
	if kinds[store.ItemUser] != 2 || kinds[store.ItemTicket] != 1 || kinds[store.ItemEvent] != 1 {
		t.Fatalf("Dump = %v, want 2 users, 1 ticket, 1 event", kinds)
	}

	dst := b.New(t, key) // the same key file: a migration
	if err := dst.Update("bob", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("x"); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Load(items, false); !errors.Is(err, store.ErrExists) {
		t.Fatalf("Load over an existing user = %v, want ErrExists", err)
	}
	if u, _ := dst.Get("alice"); u.State != store.StateNone {
		t.Error("a refused Load wrote records")
	}
	res, err := dst.Load(items, true)
	if err != nil || res.Users != 2 || res.Tickets != 1 || res.Events != 1 {
		t.Fatalf("Load --force = %+v, %v", res, err)
	}
	var secret []byte
	if err := dst.Update("alice", func(u *store.User) error { secret = bytes.Clone(u.Secret); return nil }); err != nil || string(secret) != "k" {
		t.Errorf("restored alice: secret %q, %v", secret, err)
	}
	if u, _ := dst.Get("alice"); u.LastStep != 77 {
		t.Errorf("restored LastStep = %d, want 77 (used steps stay used)", u.LastStep)
	}
	if err := dst.UseTicket("carol", "tok", time.Now()); err != nil {
		t.Errorf("restored ticket: %v", err)
	}

	// A store with another key file refuses the backup whole.
	other := b.New(t, t.TempDir()+"/other.key")
	if _, err := other.Load(items, true); err == nil {
		t.Error("Load of a backup sealed under another key succeeded")
	}
	if users, _ := other.List(); len(users) != 0 {
		t.Errorf("a refused Load wrote %d users", len(users))
	}
	evs, _ := dst.Events(store.EventQuery{})
	if !slices.ContainsFunc(evs, func(e store.Event) bool { return e.Kind == store.EventLinkConfirmed }) {
		t.Error("restored audit event missing")
	}

	// The same backup restored again (an admin's second try) adds no event
	// twice; a backup holding the same event twice keeps both, once.
	var event store.Item
	for _, it := range items {
		if it.Kind == store.ItemEvent {
			event = it
		}
	}
	twice := append(slices.Clone(items), event)
	for run := 1; run <= 2; run++ {
		res, err := dst.Load(twice, true)
		if err != nil || res.Events != 2 || res.EventsHeld != run {
			t.Fatalf("Load again (run %d) = %+v, %v; want 2 events restored, %d of them held already", run, res, err, run)
		}
		evs, _ = dst.Events(store.EventQuery{})
		n := 0
		for _, e := range evs {
			if e.Kind == store.EventLinkConfirmed {
				n++
			}
		}
		if n != 2 {
			t.Errorf("after restoring a backup holding an event twice (run %d): %d copies of it in the log, want 2", run, n)
		}
	}
	// Restored into the store it came from, whose log holds its events as they were written
	// live: none is added again.
	res, err = src.Load(items, true)
	if err != nil || res.Events != 1 || res.EventsHeld != 1 {
		t.Fatalf("Load into the store the backup came from = %+v, %v; want its event held already", res, err)
	}
	evs, _ = src.Events(store.EventQuery{})
	if n := len(slices.DeleteFunc(evs, func(e store.Event) bool { return e.Kind != store.EventLinkConfirmed })); n != 1 {
		t.Errorf("after restoring a backup into the store it came from: %d copies of its event, want 1", n)
	}
}

// testWrongKey: data written under one key file cannot be opened with
// another. New is called with a fresh key path, so this needs Reopen's data
// under a different key; backends check it in their own tests (the key check
// is backend-specific). Here: a Load of foreign records is refused (above),
// and a record from another user does not verify.
func testWrongKey(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	link(t, s, "alice", []byte("k"), 1)
	var alice store.Item
	if err := s.Dump(false, func(it store.Item) error {
		if it.Key == "alice" {
			alice = it
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	alice.Key = "mallory" // alice's record copied to another user
	if _, err := s.Load([]store.Item{alice}, true); !errors.Is(err, store.ErrDamaged) {
		t.Errorf("Load of a record moved to another user = %v, want ErrDamaged", err)
	}
}

// testKeys: registered SSH keys and remembered networks are kept with the
// record, a record of state none is kept while it holds keys (a reset that
// keeps them) and goes with the last one, and what a record may not hold is
// refused without a write.
func testKeys(t *testing.T, b Backend) {
	s, _ := newStore(t, b)
	expires := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	key := store.Key{Fingerprint: "SHA256:abc", PublicKey: "ssh-ed25519 AAAAC3Nz", Label: "laptop",
		Automation: true, From: []string{"192.0.2.0/24"}, Expires: expires, Command: "rsync --server"}
	link(t, s, "alice", []byte("secret-a"), 7)
	err := s.Update("alice", func(u *store.User) error {
		u.Keys = []store.Key{key}
		u.Remembered = []store.Remembered{{Fingerprint: key.Fingerprint, Network: "192.0.2.0/24", Until: expires}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.Get("alice")
	if err != nil || len(u.Keys) != 1 || !reflect.DeepEqual(u.Keys[0], key) || len(u.Remembered) != 1 || !u.Remembered[0].Until.Equal(expires) {
		t.Fatalf("Get = %+v, %v; want the key %+v and its remembered network", u, err, key)
	}

	// A reset that keeps the keys: state none, no secret, the record stays.
	err = s.Update("alice", func(u *store.User) error {
		u.State, u.Secret, u.Remembered = store.StateNone, nil, nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := s.Get("alice"); err != nil || u.State != store.StateNone || len(u.Keys) != 1 || u.LastStep != 7 {
		t.Fatalf("after a reset keeping keys: %+v, %v", u, err)
	}
	if users, _ := s.List(); len(users) != 1 {
		t.Fatalf("List = %+v, want alice kept for her key", users)
	}

	// Refused, and nothing written: the same key twice, an automation key without networks.
	for name, fn := range map[string]func(u *store.User){
		"duplicate": func(u *store.User) { u.Keys = append(u.Keys, key) },
		"automation everywhere": func(u *store.User) {
			u.Keys = []store.Key{{Fingerprint: "SHA256:x", PublicKey: "k", Automation: true, Expires: expires}}
		},
		"no fingerprint": func(u *store.User) { u.Keys = []store.Key{{PublicKey: "k"}} },
	} {
		if err := s.Update("alice", func(u *store.User) error { fn(u); return nil }); err == nil {
			t.Errorf("%s: Update accepted it", name)
		}
	}
	if u, _ := s.Get("alice"); len(u.Keys) != 1 {
		t.Errorf("after refused updates: keys %+v", u.Keys)
	}

	// The last key gone, a record of state none has nothing left to keep.
	if err := s.Update("alice", func(u *store.User) error { u.Keys = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if users, _ := s.List(); len(users) != 0 {
		t.Errorf("List = %+v, want no record once the last key is gone", users)
	}
}
