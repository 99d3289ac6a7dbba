package etcd

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/internal/etcdtest"
)

// watchCutter breaks a node's watch streams, and refuses new ones, while it
// is on: the node's link to the cluster failing for a while.
type watchCutter struct {
	mu      sync.Mutex
	on      bool
	cancels []context.CancelFunc
}

func (c *watchCutter) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if method != "/etcdserverpb.Watch/Watch" {
		return streamer(ctx, desc, cc, method, opts...)
	}
	c.mu.Lock()
	if c.on {
		c.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "cut")
	}
	ctx, cancel := context.WithCancel(ctx)
	c.cancels = append(c.cancels, cancel)
	c.mu.Unlock()
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &cutStream{ClientStream: s, ctx: ctx}, nil
}

// cutStream makes a stream cut under it look like a broken connection.
type cutStream struct {
	grpc.ClientStream
	ctx context.Context
}

func (s *cutStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil && s.ctx.Err() != nil {
		return status.Error(codes.Unavailable, "cut")
	}
	return err
}

func (c *watchCutter) set(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = on
	if on {
		for _, cancel := range c.cancels {
			cancel()
		}
		c.cancels = nil
	}
}

// TestKillAcrossCompaction: a reset on node b while node a's watch is down,
// and the cluster compacts its history meanwhile (auto-compaction), still
// reaches node a when its watch comes back: the request is still live in
// etcd (on its lease) though its revision is gone.
func TestKillAcrossCompaction(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	cut := &watchCutter{}
	sa, err := Open(Config{Endpoints: c.Endpoints(), Prefix: "/k/", DialTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second,
		KeyFile: key, Node: "a", dialOptions: []grpc.DialOption{grpc.WithChainStreamInterceptor(cut.intercept)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sa.Close() })
	a := registry(t, sa)
	b := registry(t, open(t, c, "/k/", key, "b"))
	a.Register(store.LiveSession{ID: 1, User: "alice"})
	waitListed(t, b, 3*time.Second, "a/1 alice")
	ctx := context.Background()
	if err := b.RequestKillUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if req := nextKill(t, a, 3*time.Second); req.User != "bob" {
		t.Fatalf("before the cut: %+v, want bob's", req)
	}

	cut.set(true)
	if err := b.RequestKillUser(ctx, "alice"); err != nil { // admin reset alice, on node b
		t.Fatal(err)
	}
	cli := c.Client(t)
	var rev int64
	for range 5 { // other traffic: audit events, counters
		resp, err := cli.Put(ctx, "/k/other", "x")
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if r, err := cli.Get(ctx, "/k/killuser/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || r.Count == 0 {
		t.Fatalf("the request is no longer in etcd (%v, %v): the test shows nothing", r, err)
	}
	cut.set(false)
	if req := nextKill(t, a, 5*time.Second); req.User != "alice" {
		t.Errorf("after the compaction: %+v, want alice's", req)
	}
}
