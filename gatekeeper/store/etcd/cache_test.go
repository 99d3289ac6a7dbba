package etcd

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/internal/etcdtest"
)

// openCounting opens a Store like open and counts the requests it sends to
// the cluster's KV service about users and lockout counters (not the
// election's, which runs on its own).
func openCounting(t *testing.T, c *etcdtest.Cluster, prefix, keyPath, node string) (*Store, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasPrefix(method, "/etcdserverpb.KV/") && touchesRecords(req, prefix) {
			n.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	s, err := Open(Config{
		Endpoints: c.Endpoints(), Prefix: prefix, DialTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second,
		KeyFile: keyPath, Node: node, dialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(count)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &n
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
	a, n := openCounting(t, c, "/rt/", key, "a")
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
		before := n.Load()
		if err := tc.do(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := n.Load() - before; got != tc.want {
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
