package bolt

import (
	"errors"
	"fmt"
	"gatekeeper/gatekeeper/store"
	"strings"
	"sync"
	"testing"
	"time"
)

// day0 is a fixed time for events and tickets.
var day0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// kinds lists the kinds of events, for compact comparisons.
func kinds(events []store.Event) string {
	var k []string
	for _, e := range events {
		k = append(k, e.Kind)
	}
	return strings.Join(k, ",")
}

func TestAppend(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	cet := time.FixedZone("CET", 3600)
	before := time.Now()
	err := s.Append(
		store.Event{Kind: store.EventLinkStarted, User: "alice", Actor: "uid 0"},
		store.Event{Kind: store.EventLoginOK, User: "alice", Remote: "192.0.2.7:5555", Time: day0.In(cet), Seq: 999},
		store.Event{Kind: store.EventLoginRefused, User: strings.Repeat("x", 5000), Reason: "wrong_code", Detail: strings.Repeat("é", 1000)},
	)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	after := time.Now()
	got, err := s.Events(store.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || kinds(got) != "link_started,login_ok,login_refused" {
		t.Fatalf("Events = %+v", got)
	}
	for i, e := range got {
		if e.Seq != uint64(i+1) {
			t.Errorf("event %d has Seq %d, want %d (the caller's Seq is ignored)", i, e.Seq, i+1)
		}
	}
	if tm := got[0].Time; tm.Before(before.Add(-time.Second)) || tm.After(after.Add(time.Second)) || tm.Location() != time.UTC {
		t.Errorf("zero Time became %v, want now in UTC", tm)
	}
	if !got[1].Time.Equal(day0) || got[1].Time.Location() != time.UTC || got[1].Remote != "192.0.2.7:5555" {
		t.Errorf("event = %+v, want the given time in UTC", got[1])
	}
	if len(got[2].User) > maxEventField+3 || len(got[2].Detail) > maxEventField+3 ||
		!strings.HasSuffix(got[2].User, "...") || !strings.HasPrefix(got[2].Detail, "éé") || strings.ContainsRune(got[2].Detail, '\uFFFD') {
		t.Errorf("long fields not cut cleanly: user %d bytes, detail %q...", len(got[2].User), got[2].Detail[:10])
	}

	// All or nothing: one bad event stores none of the batch.
	if err := s.Append(store.Event{Kind: store.EventReset}, store.Event{User: "alice"}); err == nil {
		t.Error("Append of an event without a kind succeeded")
	}
	if got, _ := s.Events(store.EventQuery{}); len(got) != 3 {
		t.Errorf("a failed Append stored events: %+v", got)
	}
	if err := s.Append(); err != nil {
		t.Errorf("empty Append = %v", err)
	}

	// Sequence numbers keep growing across reopening.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dbPath, keyPath)
	if err := s.Append(store.Event{Kind: store.EventUnlock}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Events(store.EventQuery{Limit: 1}); len(got) != 1 || got[0].Seq != 4 || got[0].Kind != store.EventUnlock {
		t.Errorf("after reopen newest event = %+v, want seq 4 unlock", got)
	}
}

func TestEvents(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	// One event an hour: alice, bob, alice, bob, ... kinds k0..k9.
	for i := range 10 {
		user := "alice"
		if i%2 == 1 {
			user = "bob"
		}
		if err := s.Append(store.Event{Kind: fmt.Sprintf("k%d", i), User: user, Time: day0.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		q    store.EventQuery
		want string
	}{
		{"all", store.EventQuery{}, "k0,k1,k2,k3,k4,k5,k6,k7,k8,k9"},
		{"user", store.EventQuery{User: "bob"}, "k1,k3,k5,k7,k9"},
		{"unknown user", store.EventQuery{User: "carol"}, ""},
		{"since", store.EventQuery{Since: day0.Add(7 * time.Hour)}, "k7,k8,k9"},
		{"since between", store.EventQuery{Since: day0.Add(7*time.Hour + time.Second)}, "k8,k9"},
		{"since in the future", store.EventQuery{Since: day0.Add(100 * time.Hour)}, ""},
		{"limit keeps the newest", store.EventQuery{Limit: 3}, "k7,k8,k9"},
		{"limit above count", store.EventQuery{Limit: 30}, "k0,k1,k2,k3,k4,k5,k6,k7,k8,k9"},
		{"user and limit", store.EventQuery{User: "alice", Limit: 2}, "k6,k8"},
		{"user, since and limit", store.EventQuery{User: "alice", Since: day0.Add(3 * time.Hour), Limit: 5}, "k4,k6,k8"},
		{"negative limit is none", store.EventQuery{Limit: -1}, "k0,k1,k2,k3,k4,k5,k6,k7,k8,k9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Events(tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil {
				t.Error("Events returned nil, want an empty slice")
			}
			if kinds(got) != tt.want {
				t.Errorf("Events(%+v) = %s, want %s", tt.q, kinds(got), tt.want)
			}
			for i := 1; i < len(got); i++ {
				if got[i].Seq <= got[i-1].Seq {
					t.Errorf("not oldest first: %+v", got)
				}
			}
		})
	}
}

func TestDamagedEvent(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(store.Event{Kind: store.EventLoginOK, User: "alice", Time: day0}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawPut(t, dbPath, bucketAudit, seqKey(2), []byte("{garbage"))
	rawPut(t, dbPath, bucketAudit, seqKey(3), []byte(`{"user":"alice"}`)) // no kind
	s = mustOpen(t, dbPath, keyPath)
	if err := s.Append(store.Event{Kind: store.EventReset, User: "alice", Time: day0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	all, err := s.Events(store.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if kinds(all) != "login_ok,damaged,damaged,reset" || all[1].Seq != 2 || all[2].Seq != 3 || all[3].Seq != 4 {
		t.Errorf("Events = %+v, want the damaged ones marked in place", all)
	}
	if got, _ := s.Events(store.EventQuery{User: "alice"}); kinds(got) != "login_ok,reset" {
		t.Errorf("Events(alice) = %s", kinds(got))
	}
	// Retention removes the unreadable ones it finds on its way from the
	// oldest end, up to the first event it keeps.
	n, err := s.PruneEvents(day0.Add(time.Minute))
	if err != nil || n != 3 {
		t.Errorf("PruneEvents = %d, %v; want 3", n, err)
	}
	if got, _ := s.Events(store.EventQuery{}); kinds(got) != "reset" || got[0].Seq != 4 {
		t.Errorf("after prune Events = %+v", got)
	}
}

// TestPruneOutOfOrder: events stored out of time order (a restored backup's, those written while
// the clock was set ahead) are pruned by their time, as etcd's time-ordered log is: an event dated
// in the future, or any other kept event, holds up nothing behind it, and an unreadable one goes.
func TestPruneOutOfOrder(t *testing.T) {
	y2099 := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	y2020 := time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		times  []time.Time // appended in this order, kinds k0, k1, ...
		before time.Time
		n      int
		want   string
	}{
		// A future event is passed over, and holds up nothing behind it.
		{"a future event first", []time.Time{y2099, y2020, y2020, y2020, y2020, y2020}, day0, 5, "k0"},
		{"future ones between", []time.Time{y2020, y2099, y2020, y2099, y2020}, day0, 3, "k1,k3"},
		// The walk stops at the first event to keep: old ones restored behind it go with it.
		{"a kept event first", []time.Time{day0, y2020, y2020}, day0, 0, "k0,k1,k2"},
		{"old after new", []time.Time{y2020, day0.Add(2 * time.Hour), day0}, day0.Add(time.Hour), 1, "k1,k2"},
		{"kept ones between", []time.Time{y2020, y2099, y2020, day0, y2020}, day0, 2, "k1,k3,k4"},
		{"all in order", []time.Time{y2020, y2020, day0}, day0, 2, "k2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s := mustOpen(t, dbPath, keyPath)
			for i, at := range tt.times {
				if err := s.Append(store.Event{Kind: fmt.Sprintf("k%d", i), Time: at}); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := s.PruneEvents(tt.before); err != nil || n != tt.n {
				t.Errorf("PruneEvents = %d, %v; want %d", n, err, tt.n)
			}
			if got, _ := s.Events(store.EventQuery{}); kinds(got) != tt.want {
				t.Errorf("left %s, want %s", kinds(got), tt.want)
			}
		})
	}
}

// TestPruneDamagedEvent: an event that cannot be read is pruned when the walk
// reaches it, whatever its place.
func TestPruneDamagedEvent(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(store.Event{Kind: "old", Time: day0}, store.Event{Kind: "damaged", Time: day0.Add(3 * time.Hour)},
		store.Event{Kind: "new", Time: day0.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawPut(t, dbPath, bucketAudit, seqKey(2), []byte("{garbage"))
	s = mustOpen(t, dbPath, keyPath)
	if n, err := s.PruneEvents(day0.Add(time.Hour)); err != nil || n != 2 {
		t.Errorf("PruneEvents = %d, %v; want 2", n, err)
	}
	if got, _ := s.Events(store.EventQuery{}); kinds(got) != "new" {
		t.Errorf("left %s, want new", kinds(got))
	}
}

func TestPruneEvents(t *testing.T) {
	tests := []struct {
		name   string
		before time.Time
		n      int
		want   string
	}{
		{"nothing older", day0, 0, "k0,k1,k2,k3,k4"},
		{"some", day0.Add(2 * time.Hour), 2, "k2,k3,k4"},
		{"exact time is kept", day0.Add(time.Hour), 1, "k1,k2,k3,k4"},
		{"everything", day0.Add(24 * time.Hour), 5, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s := mustOpen(t, dbPath, keyPath)
			for i := range 5 {
				if err := s.Append(store.Event{Kind: fmt.Sprintf("k%d", i), Time: day0.Add(time.Duration(i) * time.Hour)}); err != nil {
					t.Fatal(err)
				}
			}
			n, err := s.PruneEvents(tt.before)
			if err != nil || n != tt.n {
				t.Fatalf("PruneEvents = %d, %v; want %d", n, err, tt.n)
			}
			got, _ := s.Events(store.EventQuery{})
			if kinds(got) != tt.want {
				t.Errorf("left %s, want %s", kinds(got), tt.want)
			}
			// New events still get new sequence numbers, never reused ones.
			if err := s.Append(store.Event{Kind: "new"}); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.Events(store.EventQuery{Limit: 1}); got[0].Seq != 6 {
				t.Errorf("after prune new event has Seq %d, want 6", got[0].Seq)
			}
		})
	}
}

func TestAppendConcurrent(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = s.Append(store.Event{Kind: store.EventLoginOK, User: fmt.Sprintf("u%d", i)}) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	got, err := s.Events(store.EventQuery{})
	if err != nil || len(got) != n {
		t.Fatalf("Events = %d events, %v; want %d", len(got), err, n)
	}
	for i, e := range got {
		if e.Seq != uint64(i+1) {
			t.Errorf("event %d has Seq %d", i, e.Seq)
		}
	}
}

// TestPruneEventsInBatches: pruning a large log takes many small write
// transactions of at most pruneBatch events each, and bbolt's writer lock is
// free between them, so a login's Update is never held up behind the whole
// prune.
func TestPruneEventsInBatches(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	enroll(t, s, "alice", []byte("secret"))
	const total, old = 20000, 10000
	batch := make([]store.Event, 0, 1000)
	for i := range total {
		batch = append(batch, store.Event{Kind: store.EventLoginOK, User: "u", Time: day0.Add(time.Duration(i) * time.Second)})
		if len(batch) == cap(batch) {
			if err := s.Append(batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}

	var perTx []int
	s.afterPruneTx = func(deleted int) {
		perTx = append(perTx, deleted)
		// Called between two of PruneEvents' transactions: a login's Update
		// must get through now, not after the prune.
		done := make(chan error, 1)
		go func() { done <- s.Update("alice", func(u *store.User) error { u.LastStep++; return nil }) }()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Update blocked between two prune transactions")
		}
	}
	n, err := s.PruneEvents(day0.Add(old * time.Second))
	if err != nil || n != old {
		t.Fatalf("PruneEvents = %d, %v; want %d", n, err, old)
	}
	// The walk stops at the first event to keep: it reads only what it deletes.
	if len(perTx) != old/pruneBatch {
		t.Errorf("%d passes, want %d", len(perTx), old/pruneBatch)
	}
	for i, d := range perTx {
		if d > pruneBatch {
			t.Errorf("transaction %d deleted %d events, more than %d", i, d, pruneBatch)
		}
	}
	if u, _ := s.Get("alice"); u.LastStep != uint64(len(perTx)) {
		t.Errorf("alice's LastStep = %d, want one Update per transaction (%d)", u.LastStep, len(perTx))
	}

	left, err := s.Events(store.EventQuery{})
	if err != nil || len(left) != total-old {
		t.Fatalf("Events = %d events, %v; want %d", len(left), err, total-old)
	}
	if left[0].Seq != old+1 || !left[0].Time.Equal(day0.Add(old*time.Second)) || left[len(left)-1].Seq != total {
		t.Errorf("left events %d (%v) to %d, want %d to %d", left[0].Seq, left[0].Time, left[len(left)-1].Seq, old+1, total)
	}

	// Nothing more to prune: one pass, which reads one event and deletes nothing.
	perTx = nil
	if n, err := s.PruneEvents(day0.Add(old * time.Second)); err != nil || n != 0 || len(perTx) != 1 {
		t.Errorf("second PruneEvents = %d, %v in %d passes; want 0 in 1", n, err, len(perTx))
	}
}

// maxEventField is the length store.EncodeEvent cuts event strings to.
const maxEventField = 1024
