package etcd

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// registry starts node's session registry on st, closed when the test ends.
func registry(t *testing.T, st *Store) *Sessions {
	t.Helper()
	r := NewSessions(st, nil)
	t.Cleanup(func() { r.Close() })
	return r
}

// twoNodes starts a one-member cluster and the registries of nodes a and b
// on it, under prefix.
func twoNodes(t *testing.T, prefix string) (c *etcdtest.Cluster, a, b *Sessions) {
	t.Helper()
	c = etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	return c, registry(t, open(t, c, prefix, key, "a")), registry(t, open(t, c, prefix, key, "b"))
}

// tryListed returns the "node/id user" of every session r lists, sorted, or List's error.
func tryListed(r *Sessions) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	all, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range all {
		out = append(out, l.Node+"/"+strconv.FormatUint(l.ID, 10)+" "+l.User)
	}
	slices.Sort(out)
	return out, nil
}

// waitListed waits up to within for r to list exactly want. A List that
// fails meanwhile (a cluster just back, on a loaded machine) is tried
// again.
func waitListed(t *testing.T, r *Sessions, within time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := tryListed(r)
		if err == nil && slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the registry lists %q (err %v), want %q", within, got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nextKill returns the next request r delivers within within, or fails.
func nextKill(t *testing.T, r *Sessions, within time.Duration) store.KillRequest {
	t.Helper()
	select {
	case req := <-r.Kills():
		return req
	case <-time.After(within):
		t.Fatalf("no kill request delivered within %v", within)
	}
	return store.KillRequest{}
}

// noKill checks that r delivers nothing for a while.
func noKill(t *testing.T, r *Sessions) {
	t.Helper()
	select {
	case req := <-r.Kills():
		t.Errorf("unexpected kill request %+v", req)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestSessionsAcrossNodes: node a's sessions are listed from node b; kill
// requests of b reach a within 2 s (a user's reach every node but the
// one that asked); an unregistered session leaves the list, and a closed
// registry takes its node's sessions with it.
func TestSessionsAcrossNodes(t *testing.T) {
	c, a, b := twoNodes(t, "/s/")
	const ttl = 10 // seconds: the requests are seen to vanish below
	a.st.requestTTL, b.st.requestTTL = ttl, ttl
	start := time.Now().Round(time.Second)
	a.Register(store.LiveSession{ID: 1, User: "alice", Remote: "192.0.2.1:5000", Trusted: true, Start: start})
	a.Register(store.LiveSession{ID: 2, User: "bob", Remote: "192.0.2.2:5000", Start: start})
	b.Register(store.LiveSession{ID: 1, User: "carol"})
	waitListed(t, b, 2*time.Second, "a/1 alice", "a/2 bob", "b/1 carol")
	all, _ := b.List(context.Background())
	i := slices.IndexFunc(all, func(l store.LiveSession) bool { return l.Node == "a" && l.ID == 1 })
	if l := all[i]; l.Remote != "192.0.2.1:5000" || !l.Trusted || !l.Start.Equal(start) {
		t.Errorf("a/1 as b sees it: %+v", l)
	}

	ctx := context.Background()
	began := time.Now()
	if err := b.RequestKill(ctx, "a", 2); err != nil {
		t.Fatal(err)
	}
	if req := nextKill(t, a, 2*time.Second); req.ID != 2 || req.User != "" || req.By != "b" {
		t.Errorf("a got %+v, want session 2 by b", req)
	}
	t.Logf("kill request delivered in %v", time.Since(began))
	if err := b.RequestKillUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if req := nextKill(t, a, 2*time.Second); req.User != "alice" || req.Key != "" || req.By != "b" {
		t.Errorf("a got %+v, want alice's sessions by b", req)
	}
	if err := b.RequestKillKey(ctx, "alice", "SHA256:k/e+y"); err != nil {
		t.Fatal(err)
	}
	if req := nextKill(t, a, 2*time.Second); req.User != "alice" || req.Key != "SHA256:k/e+y" || req.By != "b" {
		t.Errorf("a got %+v, want the sessions of alice's key SHA256:k/e+y by b", req)
	}
	noKill(t, b) // its own requests, and a kill addressed to a
	// The requests vanish on their own.
	cli := c.Client(t)
	waitGone := func(k string) {
		t.Helper()
		deadline := time.Now().Add(ttl*time.Second + 5*time.Second)
		for {
			resp, err := cli.Get(ctx, k)
			if err == nil && len(resp.Kvs) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still there", k)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitGone("/s/kill/a/2")
	waitGone("/s/killuser/alice")

	a.Unregister(2)
	waitListed(t, b, 2*time.Second, "a/1 alice", "b/1 carol")
	a.Close()
	waitListed(t, b, 2*time.Second, "b/1 carol")
}

// TestSessionsOfADeadNode: a node that dies without closing its registry
// keeps its sessions listed until its lease ends (10 s), not longer; one
// that starts again under the same name clears what it left at once.
func TestSessionsOfADeadNode(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	stA := open(t, c, "/d/", key, "a")
	a := registry(t, stA)
	b := registry(t, open(t, c, "/d/", key, "b"))
	a.Register(store.LiveSession{ID: 1, User: "alice"})
	a.Register(store.LiveSession{ID: 2, User: "alice"})
	waitListed(t, b, 2*time.Second, "a/1 alice", "a/2 alice")
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/d/sessions/a/1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(resp, err)
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)

	// Node a dies: its connection goes, nothing is revoked. Its lease lives
	// on for what is left of its TTL since the last keep-alive, and the
	// sessions are listed as long.
	stA.Close()
	died := time.Now()
	ttl, err := cli.TimeToLive(ctx, lease)
	if err != nil {
		t.Fatal(err)
	}
	// TTL is the whole seconds left (the lease ends in under TTL+1 s), -1
	// for a lease that is gone.
	if ttl.TTL <= 0 {
		t.Fatalf("the dead node's lease is gone at once (TTL %d): closing its connection revoked it", ttl.TTL)
	}
	waitListed(t, b, 0, "a/1 alice", "a/2 alice")
	waitListed(t, b, sessionTTL*time.Second+3*time.Second)
	if d := time.Since(died); d < time.Duration(ttl.TTL)*time.Second {
		t.Errorf("the dead node's sessions left after %v, before its lease ended (%d s left at its death)", d, ttl.TTL)
	} else {
		t.Logf("the dead node's sessions left after %v (its lease had %d s left)", d, ttl.TTL)
	}

	// A node that crashed and starts again: what it left under its name goes
	// with its first lease, and only what lives now is listed.
	stC := open(t, c, "/d/", key, "c")
	c1 := NewSessions(stC, nil)
	c1.Register(store.LiveSession{ID: 1, User: "carol"})
	c1.Register(store.LiveSession{ID: 2, User: "carol"})
	waitListed(t, b, 2*time.Second, "c/1 carol", "c/2 carol")
	c1.cancel() // stops without revoking, as a crash would
	c1.wg.Wait()
	again := registry(t, open(t, c, "/d/", key, "c"))
	again.Register(store.LiveSession{ID: 1, User: "dave"})
	waitListed(t, b, 2*time.Second, "c/1 dave")
}

// TestSessionsLeaseLost: when a node's lease is lost (revoked here, as an
// outage longer than its TTL would end it), the node takes a new one and
// writes its sessions again.
func TestSessionsLeaseLost(t *testing.T) {
	c, a, b := twoNodes(t, "/l/")
	a.Register(store.LiveSession{ID: 1, User: "alice"})
	waitListed(t, b, 2*time.Second, "a/1 alice")

	cli := c.Client(t)
	ctx := context.Background()
	resp, err := cli.Get(ctx, "/l/sessions/a/1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(resp, err)
	}
	old := clientv3.LeaseID(resp.Kvs[0].Lease)
	if _, err := cli.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	waitListed(t, b, 2*time.Second)
	// The keep-alive learns of it within a third of the TTL.
	waitListed(t, b, sessionTTL*time.Second, "a/1 alice")
	resp, err = cli.Get(ctx, "/l/sessions/a/1")
	if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) == old {
		t.Errorf("after the lease was lost: %v, %v", resp, err)
	}
}

// TestSessionsOutage: while the cluster is down, registering does not wait
// and a kill cannot be asked for; when it is back, what changed meanwhile is
// written, and requests reach the node again.
func TestSessionsOutage(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	// cannotWrite is closed when a logs that it cannot write its sessions.
	cannotWrite := make(chan struct{})
	var once sync.Once
	logs := logWriter(func(line string) {
		if strings.Contains(line, "cannot write this node's sessions to etcd") {
			once.Do(func() { close(cannotWrite) })
		}
	})
	a := NewSessions(open(t, c, "/o/", key, "a"), slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(func() { a.Close() })
	b := registry(t, open(t, c, "/o/", key, "b"))
	a.Register(store.LiveSession{ID: 1, User: "alice"})
	waitListed(t, b, 2*time.Second, "a/1 alice") // written: a is not failing

	c.Stop(0)
	began := time.Now()
	a.Register(store.LiveSession{ID: 2, User: "bob"})
	a.Unregister(1)
	if d := time.Since(began); d > 100*time.Millisecond {
		t.Errorf("Register and Unregister took %v with the cluster down", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.List(ctx); err == nil {
		t.Error("List with the cluster down: no error")
	}
	if err := b.RequestKill(ctx, "a", 2); err == nil {
		t.Error("RequestKill with the cluster down: no error")
	}
	// The cluster comes back once a has tried to write the changes, and
	// said it could not.
	select {
	case <-cannotWrite:
	case <-time.After(10 * time.Second):
		t.Fatal("a did not report that it cannot write its sessions with the cluster down")
	}
	c.Restart(0)
	c.WaitHealthy(t)
	waitListed(t, b, sessionTTL*time.Second, "a/2 bob")

	// The watches are back: a request of b reaches a. A cluster just back
	// may still miss a request timeout on a loaded machine: asking again is
	// what a user does, and the request must still reach a in time.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := b.RequestKill(context.Background(), "a", 2); err != nil {
			if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
				t.Fatal(err)
			}
			continue
		}
		select {
		case req := <-a.Kills():
			if req.ID != 2 || req.By != "b" {
				t.Errorf("a got %+v", req)
			}
			return
		case <-time.After(2 * time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatal("no kill request reached a after the outage")
		}
	}
}

// logWriter is an io.Writer for a slog handler, which writes each record
// (a line) in one Write.
type logWriter func(line string)

func (w logWriter) Write(p []byte) (int, error) {
	w(string(p))
	return len(p), nil
}

// TestSessionsGathered: the registry writes the changes of publishAfter in
// one transaction, and a session that ended within it is never written.
func TestSessionsGathered(t *testing.T) {
	c, a, b := twoNodes(t, "/g/")
	a.Register(store.LiveSession{ID: 1, User: "alice"})
	waitListed(t, b, 2*time.Second, "a/1 alice") // the first lease's writes are done

	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now, err := cli.Get(ctx, "/g/")
	if err != nil {
		t.Fatal(err)
	}
	events := cli.Watch(ctx, "/g/sessions/a/", clientv3.WithPrefix(), clientv3.WithRev(now.Header.Revision+1))
	a.Register(store.LiveSession{ID: 2, User: "bob"}) // over at once
	a.Unregister(2)
	for id := uint64(3); id <= 5; id++ {
		a.Register(store.LiveSession{ID: id, User: "carol"})
	}
	a.Unregister(1)

	revs := map[string]int64{}
	for len(revs) < 4 {
		resp, ok := <-events
		if !ok {
			t.Fatalf("watch ended after %v: %v", revs, ctx.Err())
		}
		for _, ev := range resp.Events {
			revs[string(ev.Kv.Key)] = ev.Kv.ModRevision
		}
	}
	if _, ok := revs["/g/sessions/a/2"]; ok {
		t.Error("a session that ended before it was published was written")
	}
	r := revs["/g/sessions/a/1"]
	for _, k := range []string{"/g/sessions/a/3", "/g/sessions/a/4", "/g/sessions/a/5"} {
		if revs[k] != r {
			t.Errorf("writes at revisions %v, want one transaction", revs)
			break
		}
	}
	waitListed(t, b, 2*time.Second, "a/3 carol", "a/4 carol", "a/5 carol")
}

// TestSessionsLostAnswer: a batch the cluster applied but whose answer was
// lost does not leave its sessions listed after they end.
func TestSessionsLostAnswer(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	var lose atomic.Bool
	intercept := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if txn, ok := req.(*etcdserverpb.TxnRequest); ok && err == nil && len(txn.Success) > 0 {
			if put := txn.Success[0].GetRequestPut(); put != nil && strings.HasPrefix(string(put.Key), "/lost/sessions/") &&
				lose.CompareAndSwap(true, false) {
				return status.Error(codes.Unavailable, "test: answer lost")
			}
		}
		return err
	}
	a := registry(t, openIntercepted(t, c, "/lost/", key, "a", intercept))
	b := registry(t, open(t, c, "/lost/", key, "b"))

	lose.Store(true)
	a.Register(store.LiveSession{ID: 1, User: "alice"})
	waitListed(t, b, 2*time.Second, "a/1 alice") // applied, its answer lost
	// b may list the put before a's interceptor has lost its answer.
	for deadline := time.Now().Add(2 * time.Second); lose.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no answer was lost")
		}
	}
	a.Unregister(1) // before the retry, a second after the failure
	waitListed(t, b, 3*time.Second)
}

// TestSessionsBatches: more sessions than one transaction may hold are
// written in several, and all listed; so are their ends.
func TestSessionsBatches(t *testing.T) {
	_, a, b := twoNodes(t, "/many/")
	const n = 2*maxTxnOps + 50
	var want []string
	for id := uint64(1); id <= n; id++ {
		a.Register(store.LiveSession{ID: id, User: "alice"})
		want = append(want, "a/"+strconv.FormatUint(id, 10)+" alice")
	}
	slices.Sort(want)
	waitListed(t, b, 5*time.Second, want...)
	for id := uint64(1); id <= n; id++ {
		a.Unregister(id)
	}
	waitListed(t, b, 5*time.Second)
}
