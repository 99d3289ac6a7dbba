package etcd

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/internal/etcdtest"
)

// wire counts the requests a Store sends to the cluster's KV service about
// users and lockout counters (not the election's, which runs on its own),
// and can lose the answer to the next write of them after the cluster
// applied it, or refuse the next request with a server's error.
type wire struct {
	prefix   string
	requests atomic.Int64
	loseNext atomic.Bool
	// refuseNext, when set, is the error the next transaction is refused
	// with, before it reaches the cluster.
	refuseNext atomic.Pointer[error]
}

func (w *wire) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !strings.HasPrefix(method, "/etcdserverpb.KV/") || !touchesRecords(req, w.prefix) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	w.requests.Add(1)
	if _, ok := req.(*etcdserverpb.TxnRequest); ok {
		if err := w.refuseNext.Swap(nil); err != nil {
			return *err
		}
	}
	err := invoker(ctx, method, req, reply, cc, opts...)
	if txn, ok := req.(*etcdserverpb.TxnRequest); ok && err == nil && len(txn.Success) > 0 &&
		txn.Success[0].GetRequestRange() == nil && w.loseNext.CompareAndSwap(true, false) {
		return status.Error(codes.Unavailable, "test: answer lost")
	}
	return err
}

// openWire opens a Store like open, its requests going through a wire.
func openWire(t *testing.T, c *etcdtest.Cluster, prefix, keyPath, node string) (*Store, *wire) {
	t.Helper()
	w := &wire{prefix: prefix}
	return openIntercepted(t, c, prefix, keyPath, node, w.intercept), w
}

// TestAppendDuringElection: audit events whose transaction met an election
// (refused unapplied, or applied with the answer lost) are each in the log
// once.
func TestAppendDuringElection(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	var refuse, lose atomic.Bool
	intercept := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		txn, ok := req.(*etcdserverpb.TxnRequest)
		audit := ok && len(txn.Success) > 0 && txn.Success[0].GetRequestPut() != nil &&
			strings.HasPrefix(string(txn.Success[0].GetRequestPut().Key), "/append/audit/")
		if audit && refuse.CompareAndSwap(true, false) {
			return rpctypes.ErrGRPCLeaderChanged
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		if audit && err == nil && lose.CompareAndSwap(true, false) {
			return status.Error(codes.Unavailable, "test: answer lost")
		}
		return err
	}
	s := openIntercepted(t, c, "/append/", key, "a", intercept)
	refuse.Store(true)
	if err := s.Append(store.Event{Kind: store.EventLoginOK, User: "alice"}); err != nil {
		t.Errorf("Append refused once with leader changed: %v", err)
	}
	lose.Store(true)
	if err := s.Append(store.Event{Kind: store.EventLoginOK, User: "bob"}, store.Event{Kind: store.EventLoginOK, User: "carol"}); err != nil {
		t.Errorf("Append with its answer lost: %v", err)
	}
	if refuse.Load() || lose.Load() {
		t.Fatal("the interceptor did not refuse and lose an answer")
	}
	evs, err := s.Events(store.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, e := range evs {
		users = append(users, e.User)
	}
	if !slices.Equal(users, []string{"alice", "bob", "carol"}) {
		t.Errorf("audit log holds events of %q, want alice, bob and carol once each", users)
	}
}

// touchesRecords reports whether req, a KV request, reads or writes a user
// record or a lockout counter under prefix.
func touchesRecords(req any, prefix string) bool {
	var keys [][]byte
	switch r := req.(type) {
	case *etcdserverpb.RangeRequest:
		keys = append(keys, r.Key)
	case *etcdserverpb.TxnRequest:
		for _, c := range r.Compare {
			keys = append(keys, c.Key)
		}
		for _, ops := range [][]*etcdserverpb.RequestOp{r.Success, r.Failure} {
			for _, op := range ops {
				switch {
				case op.GetRequestRange() != nil:
					keys = append(keys, op.GetRequestRange().Key)
				case op.GetRequestPut() != nil:
					keys = append(keys, op.GetRequestPut().Key)
				case op.GetRequestDeleteRange() != nil:
					keys = append(keys, op.GetRequestDeleteRange().Key)
				}
			}
		}
	}
	for _, k := range keys {
		if strings.HasPrefix(string(k), prefix+"users/") || strings.HasPrefix(string(k), prefix+"limits/") {
			return true
		}
	}
	return false
}

// TestOneRoundTrip: a change of keys this node read or wrote last, or of
// keys that do not exist, is one request to the cluster; the first change
// of a key that exists but was never seen here takes two.
func TestOneRoundTrip(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	a, w := openWire(t, c, "/rt/", key, "a")
	b := open(t, c, "/rt/", key, "b")
	step := func(u *store.User) error { u.LastStep++; return nil }
	if err := b.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("x"); return nil }); err != nil {
		t.Fatal(err)
	}
	add := func(vals [][]byte) error {
		for i := range vals {
			vals[i] = append(vals[i], 'x')
		}
		return nil
	}
	cases := []struct {
		name string
		do   func() error
		want int64
	}{
		{"Get", func() error { _, err := a.Get("alice"); return err }, 1},
		{"Update after Get", func() error { return a.Update("alice", step) }, 1},
		{"Update after Update", func() error { return a.Update("alice", step) }, 1},
		{"Update of a record another node wrote", func() error {
			if err := b.Update("alice", step); err != nil {
				return err
			}
			return a.Update("alice", step)
		}, 2},
		{"UpdateKeys of new keys", func() error { return a.UpdateKeys([]string{"limits/t/1", "limits/t/2"}, add) }, 1},
		{"UpdateKeys again", func() error { return a.UpdateKeys([]string{"limits/t/1", "limits/t/2"}, add) }, 1},
		{"UpdateKeys of keys another node wrote", func() error {
			if err := b.UpdateKeys([]string{"limits/t/2"}, add); err != nil {
				return err
			}
			return a.UpdateKeys([]string{"limits/t/1", "limits/t/2"}, add)
		}, 2},
		{"UpdateKeys changing nothing", func() error { return a.UpdateKeys([]string{"limits/t/1"}, func([][]byte) error { return nil }) }, 1},
	}
	for _, tc := range cases {
		before := w.requests.Load()
		if err := tc.do(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := w.requests.Load() - before; got != tc.want {
			t.Errorf("%s: %d requests, want %d", tc.name, got, tc.want)
		}
	}
	u, err := b.Get("alice")
	if err != nil || u.LastStep != 4 {
		t.Errorf("alice's LastStep = %d (%v), want 4: every step counted once", u.LastStep, err)
	}
	var got [][]byte
	if err := b.UpdateKeys([]string{"limits/t/1", "limits/t/2"}, func(vals [][]byte) error { got = vals; return nil }); err != nil {
		t.Fatal(err)
	}
	if string(got[0]) != "xxx" || string(got[1]) != "xxxx" {
		t.Errorf("counters = %q, %q; want xxx, xxxx", got[0], got[1])
	}
}

// TestStaleCacheDecidesNothing: what a node remembers of a key another node
// has changed since is never what fn's result rests on. A refusal, a change
// of nothing and a change all see the other node's write.
func TestStaleCacheDecidesNothing(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	a := open(t, c, "/stale/", key, "a")
	b := open(t, c, "/stale/", key, "b")
	errNotActive := errors.New("not active")
	mustBeActive := func(u *store.User) error {
		if u.State != store.StateActive {
			return errNotActive
		}
		u.LastStep++
		return nil
	}

	// a saw alice with no device; b links one since.
	if _, err := a.Get("alice"); err != nil {
		t.Fatal(err)
	}
	if err := b.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("x"); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := a.Update("alice", mustBeActive); err != nil {
		t.Errorf("refused on what a remembered: %v", err)
	}

	// a remembers a counter; b changes it; a's look that changes nothing
	// reads b's value.
	set := func(v string) func([][]byte) error {
		return func(vals [][]byte) error { vals[0] = []byte(v); return nil }
	}
	if err := a.UpdateKeys([]string{"limits/s/1"}, set("one")); err != nil {
		t.Fatal(err)
	}
	if err := b.UpdateKeys([]string{"limits/s/1"}, set("two")); err != nil {
		t.Fatal(err)
	}
	var seen string
	if err := a.UpdateKeys([]string{"limits/s/1"}, func(vals [][]byte) error { seen = string(vals[0]); return nil }); err != nil {
		t.Fatal(err)
	}
	if seen != "two" {
		t.Errorf("a read %q, want b's %q", seen, "two")
	}

	// b deletes the counter; a's change starts from nothing.
	if err := b.UpdateKeys([]string{"limits/s/1"}, func(vals [][]byte) error { vals[0] = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateKeys([]string{"limits/s/1"}, func(vals [][]byte) error {
		vals[0] = append(vals[0], 'x')
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.UpdateKeys([]string{"limits/s/1"}, func(vals [][]byte) error { seen = string(vals[0]); return nil }); err != nil {
		t.Fatal(err)
	}
	if seen != "x" {
		t.Errorf("after a delete on b, a's append left %q, want %q", seen, "x")
	}

	// A refusal on fresh values stands.
	if err := a.UpdateKeys([]string{"limits/s/1"}, func([][]byte) error { return errNotActive }); !errors.Is(err, errNotActive) {
		t.Errorf("fn's error = %v, want it returned", err)
	}
}

// TestLostAnswer: a change applied by the cluster whose answer was lost is
// recognised as applied, on a remembered record and on a read one, and is
// not made twice; a remembered counter deleted meanwhile by another node is
// not taken for this node's delete.
func TestLostAnswer(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	a, w := openWire(t, c, "/lost/", key, "a")
	b := open(t, c, "/lost/", key, "b")
	if err := a.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("x"); return nil }); err != nil {
		t.Fatal(err)
	}
	spent := 0
	spend := func(u *store.User) error {
		spent++
		u.LastStep++
		return nil
	}
	for _, prep := range []struct {
		name string
		do   func() error
	}{
		{"remembered", func() error { return nil }},
		{"read", func() error { a.cache.forget(); _, err := a.Get("alice"); return err }},
	} {
		if err := prep.do(); err != nil {
			t.Fatal(err)
		}
		w.loseNext.Store(true)
		if err := a.Update("alice", spend); err != nil {
			t.Errorf("%s record: Update with its answer lost: %v", prep.name, err)
		}
		if w.loseNext.Load() {
			t.Fatalf("%s record: no answer was lost", prep.name)
		}
	}
	u, err := b.Get("alice")
	if err != nil || u.LastStep != 2 {
		t.Errorf("LastStep = %d (%v) after two steps spent with their answers lost, want 2 (fn ran %d times)", u.LastStep, err, spent)
	}

	// a remembers a counter, b deletes it, a's delete (answer lost) did not
	// happen: fn runs again on what is there.
	ks := []string{"limits/l/1"}
	if err := a.UpdateKeys(ks, func(vals [][]byte) error { vals[0] = []byte("held"); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.UpdateKeys(ks, func(vals [][]byte) error { vals[0] = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	var saw []string
	w.loseNext.Store(true)
	if err := a.UpdateKeys(ks, func(vals [][]byte) error {
		saw = append(saw, string(vals[0]))
		vals[0] = nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(saw) < 2 || saw[len(saw)-1] != "" {
		t.Errorf("fn saw %q: want it run again on the deleted counter", saw)
	}
}

// TestRevCacheForgets: a value is guessed for cacheFor at most, a key that
// does not exist is not kept, and an answer showing the cluster went back
// in time (a revision below one seen before the request) or is another
// cluster empties the cache.
// TestRetryOnlyWhenUnavailable: a read refused because the cluster or the
// member asked cannot serve it now is tried again; one refused as such is
// not.
func TestRetryOnlyWhenUnavailable(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	a, w := openWire(t, c, "/elect/", key, "a")
	if err := a.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("x"); return nil }); err != nil {
		t.Fatal(err)
	}
	get := func() error { _, err := a.Get("alice"); return err }
	update := func() error { return a.Update("alice", func(u *store.User) error { u.LastStep++; return nil }) }
	for _, tc := range []struct {
		name      string
		refusal   error
		do        func() error
		transient bool
	}{
		// A linearized read that met an election: tried again, not a
		// failed login (the client retries a plain Get itself but not the
		// transaction Get reads with).
		{"Get, leader changed", rpctypes.ErrGRPCLeaderChanged, get, true},
		{"Update, leader changed", rpctypes.ErrGRPCLeaderChanged, update, true},
		// One member's answers during an upgrade or while it is a learner:
		// another member serves the request.
		{"Get, not capable", rpctypes.ErrGRPCNotCapable, get, true},
		{"Get, learner", rpctypes.ErrGRPCNotSupportedForLearner, get, true},
		// Refused as such, not the cluster failing to answer: no retry,
		// and not ErrUnavailable (whose banner would tell users the service
		// is down and send admins looking at the wrong thing).
		{"Get, not permitted", rpctypes.ErrGRPCPermissionDenied, get, false},
		{"Update, not permitted", rpctypes.ErrGRPCPermissionDenied, update, false},
	} {
		a.cache.forget()
		w.refuseNext.Store(&tc.refusal)
		w.requests.Store(0)
		err := tc.do()
		if w.refuseNext.Load() != nil {
			t.Fatalf("%s: no request was refused", tc.name)
		}
		n := w.requests.Load()
		switch {
		case tc.transient && err != nil:
			t.Errorf("%s: %v, want it tried again", tc.name, err)
		case tc.transient && n < 2:
			t.Errorf("%s: %d requests, want the refused read and its retry", tc.name, n)
		case !tc.transient && (err == nil || errors.Is(err, store.ErrUnavailable)):
			t.Errorf("%s: %v, want an error that is not ErrUnavailable", tc.name, err)
		case !tc.transient && n != 1:
			t.Errorf("%s: %d requests, want 1", tc.name, n)
		}
	}
}

func TestRevCacheForgets(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := revCache{now: func() time.Time { return now }}
	put := func() {
		c.store([]string{"k", "gone"}, []seen{{val: []byte("v"), rev: 7}, {}})
	}
	held := func() bool { return c.lookup([]string{"k"})[0].rev == 7 }
	put()
	if !held() || len(c.m) != 1 {
		t.Fatalf("after store: %v", c.m)
	}
	now = now.Add(cacheFor)
	if held() {
		t.Error("a value older than cacheFor was guessed")
	}
	put()
	c.observe(1, 100, 0)
	c.observe(1, 99, 0) // two answers crossing: nothing lost
	if !held() {
		t.Error("an answer sent before a later one arrived emptied the cache")
	}
	before := c.revision()
	c.observe(1, 50, before)
	if held() {
		t.Error("a revision below one seen before the request left the cache")
	}
	put()
	c.observe(2, 200, c.revision())
	if held() {
		t.Error("another cluster's answer left the cache")
	}
}

// TestRevCacheBounds: the cache keeps at most maxCachedKeys keys and
// maxCachedBytes of values, and no value too large to be worth it.
func TestRevCacheBounds(t *testing.T) {
	var c revCache
	for i := range 3 * maxCachedKeys {
		c.store([]string{string(rune('a'+i%26)) + strings.Repeat("k", i/26)}, []seen{{val: []byte("v"), rev: int64(i + 1)}})
	}
	if len(c.m) > maxCachedKeys {
		t.Errorf("%d keys cached, want at most %d", len(c.m), maxCachedKeys)
	}
	big := make([]byte, maxCachedBytes/64)
	for i := range 200 {
		c.store([]string{"big" + strings.Repeat("x", i)}, []seen{{val: big, rev: 1}})
	}
	if c.bytes > maxCachedBytes || len(c.m) > maxCachedKeys {
		t.Errorf("%d bytes in %d keys cached, want at most %d bytes", c.bytes, len(c.m), maxCachedBytes)
	}
	sum := 0
	for _, v := range c.m {
		sum += len(v.val)
	}
	if sum != c.bytes {
		t.Errorf("bytes = %d, but the values hold %d", c.bytes, sum)
	}
	c.store([]string{"huge"}, []seen{{val: make([]byte, maxCachedBytes/64+1), rev: 1}})
	if got := c.lookup([]string{"huge"}); got[0].val != nil {
		t.Error("a value over maxCachedBytes/64 was cached")
	}
}
