package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/internal/etcdtest"
)

// loadFaults is what loadIntercept does to the restore's transactions (puts of users and
// events under the prefix).
type loadFaults struct {
	delay     atomic.Int64 // nanoseconds added to each
	okLeft    atomic.Int64 // with failRest: how many more pass
	failRest  atomic.Bool  // after okLeft, each fails unanswered (not applied)
	loseFirst atomic.Bool  // the next is applied, its answer lost
	txns      atomic.Int64 // how many were sent
}

func (f *loadFaults) intercept(prefix string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		txn, ok := req.(*etcdserverpb.TxnRequest)
		restore := ok && len(txn.Success) > 0 && txn.Success[0].GetRequestPut() != nil &&
			(strings.HasPrefix(string(txn.Success[0].GetRequestPut().Key), prefix+"users/") ||
				strings.HasPrefix(string(txn.Success[0].GetRequestPut().Key), prefix+"audit/"))
		if !restore {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		f.txns.Add(1)
		time.Sleep(time.Duration(f.delay.Load()))
		if f.failRest.Load() && f.okLeft.Add(-1) < 0 {
			return status.Error(codes.Unavailable, "test: no quorum")
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil && f.loseFirst.CompareAndSwap(true, false) {
			return status.Error(codes.Unavailable, "test: answer lost")
		}
		return err
	}
}

// loadItems is a backup of two users (linked in a store under another prefix of c, with the
// key file at key) and n audit events.
func loadItems(t *testing.T, c *etcdtest.Cluster, key string, n int) []store.Item {
	t.Helper()
	src := open(t, c, "/load-src/", key, "a")
	for _, u := range []string{"alice", "bob"} {
		if err := src.Update(u, func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("k"); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var items []store.Item
	if err := src.Dump(false, func(it store.Item) error { items = append(items, it); return nil }); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range n {
		v, err := store.EncodeEvent(store.Event{Kind: store.EventLoginOK, User: "alice", Time: t0.Add(time.Duration(i) * time.Millisecond)}, t0)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, store.Item{Kind: store.ItemEvent, Value: v})
	}
	return items
}

// openLoad opens a store under prefix with the request timeout given, its restore
// transactions going through f.
func openLoad(t *testing.T, c *etcdtest.Cluster, prefix, key string, timeout time.Duration, f *loadFaults) *Store {
	t.Helper()
	s, err := Open(Config{Endpoints: c.Endpoints(), Prefix: prefix, DialTimeout: 5 * time.Second, RequestTimeout: timeout,
		KeyFile: key, Node: "a", dialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(f.intercept(prefix))}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// count is how many keys s holds under sub.
func count(t *testing.T, s *Store, sub string) int64 {
	t.Helper()
	resp, err := s.cli.Get(context.Background(), s.key(sub), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestLoadBatches: a restore takes as long as its size needs, each batch with its own
// deadline (a whole restore under one deadline of 10 request timeouts stopped part-way through
// a long audit log), and a batch whose answer was lost is not written twice nor taken for a
// user linked meanwhile.
func TestLoadBatches(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	const events = 20000
	items := loadItems(t, c, key, events)
	tests := []struct {
		name      string
		delay     time.Duration // per restore transaction: 200 of them take over 10 request timeouts
		loseFirst bool
		force     bool
	}{
		{name: "slow batches", delay: 20 * time.Millisecond},
		{name: "first answer lost", loseFirst: true},
		{name: "first answer lost, force", loseFirst: true, force: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &loadFaults{}
			s := openLoad(t, c, fmt.Sprintf("/load%d/", i), key, 300*time.Millisecond, f)
			f.delay.Store(int64(tc.delay))
			f.loseFirst.Store(tc.loseFirst)
			start := time.Now()
			res, err := s.Load(items, tc.force)
			if err != nil || res.Users != 2 || res.Events != events {
				t.Fatalf("Load after %v = %+v, %v; want 2 users and %d events", time.Since(start).Round(time.Millisecond), res, err, events)
			}
			if f.loseFirst.Load() {
				t.Fatal("no answer was lost")
			}
			if n := count(t, s, "users/"); n != 2 {
				t.Errorf("%d users stored, want 2", n)
			}
			if n := count(t, s, "audit/"); n != events {
				t.Errorf("%d events stored, want %d", n, events)
			}
		})
	}
}

// TestLoadStopsPartWay: a restore that fails part-way says how much it wrote, a LoadError
// matching the cause; run again with force it writes the rest, the events it had written
// replaced rather than added twice.
func TestLoadStopsPartWay(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	const events = 1000
	items := loadItems(t, c, key, events)
	f := &loadFaults{}
	s := openLoad(t, c, "/partway/", key, 300*time.Millisecond, f)
	f.okLeft.Store(3)
	f.failRest.Store(true)
	_, err := s.Load(items, false)
	le, ok := errors.AsType[*store.LoadError](err)
	if !ok || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Load with the cluster gone after 3 batches = %v, want a LoadError matching ErrUnavailable", err)
	}
	// 3 batches of 100: the 2 users and 298 events.
	if le.Written != (store.LoadResult{Users: 2, Events: 3*maxTxnOps - 2}) || le.Of != (store.LoadResult{Users: 2, Events: events}) || !le.Unsure {
		t.Errorf("LoadError = written %+v of %+v, unsure %v", le.Written, le.Of, le.Unsure)
	}
	for _, want := range []string{"store unavailable", "2 of 2 users, 0 of 0 tickets and 298 of 1000 events were written",
		"may have been too", "run the same restore again, without --force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	// The same restore again, without force, goes on where it stopped: the users written
	// already hold exactly the backup's records and are left as they are.
	f.failRest.Store(false)
	res, err := s.Load(items, false)
	if err != nil || res.Users != 2 || res.Events != events {
		t.Fatalf("Load again without force = %+v, %v", res, err)
	}
	if n := count(t, s, "audit/"); n != events {
		t.Errorf("after the second restore %d events stored, want %d (each once)", n, events)
	}
	// A user whose record changed since (a login, a reset) is never overwritten without force.
	if err := s.Update("bob", func(u *store.User) error { u.LastStep = 55555555; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(items, false); !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), "bob") || strings.Contains(err.Error(), "alice") {
		t.Errorf("Load again after bob's record changed = %v, want ErrExists naming bob only", err)
	}
	if u, err := s.Get("bob"); err != nil || u.LastStep != 55555555 {
		t.Errorf("bob after the refused restore: %+v, %v; want his used step kept", u, err)
	}
}

// TestDumpPagesAndDamage: Dump reads in pages (an audit log longer than a page comes whole),
// and marks a record that fails its integrity check damaged, for the backup to leave out.
func TestDumpPagesAndDamage(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c, "/dump/", t.TempDir()+"/secret.key", "a")
	for _, u := range []string{"alice", "x"} {
		if err := s.Update(u, func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("k"); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	const events = 2*dumpPage + 10
	batch := make([]store.Event, 0, 100)
	for i := range events {
		batch = append(batch, store.Event{Kind: store.EventLoginOK, User: "alice"})
		if len(batch) == cap(batch) || i == events-1 {
			if err := s.Append(batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	resp, err := s.cli.Get(context.Background(), s.key("users/x"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("x's record: %v", err)
	}
	v := resp.Kvs[0].Value
	v[len(v)/2] ^= 1
	if _, err := s.cli.Put(context.Background(), s.key("users/x"), string(v)); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	var damaged []string
	if err := s.Dump(true, func(it store.Item) error {
		if it.Damaged != nil {
			if !errors.Is(it.Damaged, store.ErrDamaged) {
				t.Errorf("%s %s: Damaged = %v, want ErrDamaged", it.Kind, it.Key, it.Damaged)
			}
			damaged = append(damaged, it.Key)
		}
		kinds[it.Kind]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if kinds[store.ItemUser] != 2 || kinds[store.ItemEvent] != events || len(damaged) != 1 || damaged[0] != "x" {
		t.Errorf("Dump = %v, damaged %q; want 2 users, %d events, x damaged", kinds, damaged, events)
	}
}

// TestLoadAgainLeavesTicketsOut: the same restore run again without force (as after one that
// stopped part-way) writes no ticket: one written by the first run may have been used since,
// and a used ticket must not work again.
func TestLoadAgainLeavesTicketsOut(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	src := open(t, c, "/tickets-src/", key, "a")
	if err := src.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("k"); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := src.AddTicket("carol", "ticket-for-carol", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var items []store.Item
	if err := src.Dump(false, func(it store.Item) error { items = append(items, it); return nil }); err != nil {
		t.Fatal(err)
	}
	dst := open(t, c, "/tickets-dst/", key, "b")
	if res, err := dst.Load(items, false); err != nil || res.Tickets != 1 {
		t.Fatalf("Load = %+v, %v; want the ticket restored", res, err)
	}
	if err := dst.UseTicket("carol", "ticket-for-carol", time.Now()); err != nil {
		t.Fatal(err)
	}
	res, err := dst.Load(items, false)
	if err != nil || res.Users != 1 || res.Tickets != 0 {
		t.Fatalf("Load again = %+v, %v; want alice left as she is and no ticket", res, err)
	}
	if err := dst.CheckTicket("carol", "ticket-for-carol", time.Now()); err == nil {
		t.Error("the used ticket works again after the restore ran again")
	}
}

// TestLoadTicketsAfterIdenticalUsers: a restore into a store whose users are already the
// backup's, but that never got the backup's tickets (its events are not there either: an
// earlier run stopped before them, or an older backup was restored), writes the tickets.
func TestLoadTicketsAfterIdenticalUsers(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	src := open(t, c, "/tickets2-src/", key, "a")
	if err := src.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("k"); return nil }); err != nil {
		t.Fatal(err)
	}
	var usersOnly []store.Item
	if err := src.Dump(false, func(it store.Item) error { usersOnly = append(usersOnly, it); return nil }); err != nil {
		t.Fatal(err)
	}
	dst := open(t, c, "/tickets2-dst/", key, "b")
	if _, err := dst.Load(usersOnly, false); err != nil {
		t.Fatal(err)
	}
	if err := src.AddTicket("carol", "ticket-for-carol", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := src.Append(store.Event{Kind: store.EventLoginOK, User: "alice"}); err != nil {
		t.Fatal(err)
	}
	var later []store.Item
	if err := src.Dump(true, func(it store.Item) error { later = append(later, it); return nil }); err != nil {
		t.Fatal(err)
	}
	if res, err := dst.Load(later, false); err != nil || res.Users != 1 || res.Tickets != 1 {
		t.Fatalf("Load = %+v, %v; want alice left as she is and the new ticket written", res, err)
	}
	if err := dst.CheckTicket("carol", "ticket-for-carol", time.Now()); err != nil {
		t.Errorf("the ticket after the restore: %v", err)
	}
}

// TestLoadIntoItsOwnCluster: a backup with audit restored into the cluster it came from, whose
// log holds its events as they were appended live (under keys of another form than a
// restore's), adds none of them again, also when they take several pages to read
// (heldEvents), and events appended since are kept.
func TestLoadIntoItsOwnCluster(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c, "/own/", t.TempDir()+"/secret.key", "a")
	const n = 2*heldPage + 17
	base := time.Now().Add(-time.Hour)
	var batch []store.Event
	for i := range n {
		batch = append(batch, store.Event{Kind: store.EventLoginOK, User: "alice", Time: base.Add(time.Duration(i) * time.Millisecond)})
		if len(batch) == store.MaxAppend || i == n-1 {
			if err := s.Append(batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	var items []store.Item
	if err := s.Dump(true, func(it store.Item) error { items = append(items, it); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(store.Event{Kind: store.EventLoginOK, User: "bob"}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Load(items, true)
	if err != nil || res.Events != n || res.EventsHeld != n {
		t.Fatalf("Load = %+v, %v; want all %d events held already", res, err, n)
	}
	if got := count(t, s, "audit/"); got != n+1 {
		t.Errorf("%d events in the log after the restore, want %d", got, n+1)
	}
}
