package etcd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/storetest"
	"gatekeeper/internal/etcdtest"
)

// open opens a Store on cluster c under prefix, as node.
func open(t *testing.T, c *etcdtest.Cluster, prefix, keyPath, node string) *Store {
	t.Helper()
	return openIntercepted(t, c, prefix, keyPath, node, nil)
}

// openIntercepted opens a Store like open, its requests going through
// intercept (nil: none).
func openIntercepted(t *testing.T, c *etcdtest.Cluster, prefix, keyPath, node string, intercept grpc.UnaryClientInterceptor) *Store {
	t.Helper()
	cfg := Config{
		Endpoints: c.Endpoints(), Prefix: prefix, DialTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second,
		KeyFile: keyPath, Node: node,
	}
	if intercept != nil {
		cfg.dialOptions = []grpc.DialOption{grpc.WithChainUnaryInterceptor(intercept)}
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the store.Store suite against a real etcd, every
// case under its own prefix of one cluster, with a second node (a second
// client) for the concurrency cases.
func TestConformance(t *testing.T) {
	c := etcdtest.Start(t, 1)
	var n atomic.Int32
	storetest.Run(t, storetest.Backend{
		New: func(t *testing.T, keyPath string) store.Store {
			return open(t, c, fmt.Sprintf("/conf%d/", n.Add(1)), keyPath, "a")
		},
		Peer: func(t *testing.T, s store.Store) store.Store {
			e := s.(*Store)
			return open(t, c, e.prefix, e.keyPath, "b")
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			e := s.(*Store)
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, c, e.prefix, e.keyPath, "a")
		},
	})
}

// TestKeyFiles: a node with another key file, or none, is refused by the
// cluster's key check, naming the problem.
func TestKeyFiles(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	s := open(t, c, "/k/", key, "a")
	if err := s.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("x"); return nil }); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{Endpoints: c.Endpoints(), Prefix: "/k/", DialTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second,
		KeyFile: t.TempDir() + "/other.key", Node: "b"})
	if !errors.Is(err, store.ErrKeyMissing) {
		t.Errorf("a node without the key file: %v, want ErrKeyMissing", err)
	}
	other := t.TempDir() + "/other.key"
	if err := os.WriteFile(other, make([]byte, store.KeySize), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Config{Endpoints: c.Endpoints(), Prefix: "/k/", DialTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second,
		KeyFile: other, Node: "b"})
	if !errors.Is(err, store.ErrKeyMismatch) {
		t.Errorf("a node with another key file: %v, want ErrKeyMismatch", err)
	}
}

// TestQuorumLost: without quorum calls fail within the request timeout with
// ErrUnavailable; with quorum back they work again on the same Store.
func TestQuorumLost(t *testing.T) {
	c := etcdtest.Start(t, 3)
	s := open(t, c, "/q/", t.TempDir()+"/secret.key", "a")
	if err := s.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("x"); return nil }); err != nil {
		t.Fatal(err)
	}
	// The leader down: a write in flight is lost with it and retried once a
	// new leader is elected, within the request timeout.
	first := c.Leader(t)
	c.Kill(first)
	if err := s.Update("alice", func(u *store.User) error { u.LastStep++; return nil }); err != nil {
		t.Errorf("a write with the leader just killed: %v", err)
	}
	if _, err := s.Get("alice"); err != nil {
		t.Errorf("with one member of three down: %v", err)
	}
	second := (first + 1) % 3
	c.Kill(second)
	start := time.Now()
	_, err := s.Get("alice")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("without quorum Get = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("without quorum Get took %v", d)
	}
	c.Restart(first)
	c.Restart(second)
	c.WaitHealthy(t)
	if _, err := s.Get("alice"); err != nil {
		t.Errorf("after quorum returned: %v", err)
	}
}

// TestUpdateKeysConcurrent: the shared lockout counters' primitive adds up
// under contention from two nodes.
func TestUpdateKeysConcurrent(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	nodes := []*Store{open(t, c, "/u/", key, "a"), open(t, c, "/u/", key, "b")}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			err := nodes[i%2].UpdateKeys([]string{"limits/x/1", "limits/x/2"}, func(vals [][]byte) error {
				for j := range vals {
					n := 0
					if vals[j] != nil {
						fmt.Sscan(string(vals[j]), &n)
					}
					vals[j] = fmt.Append(nil, n+1)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var got [][]byte
	if err := nodes[0].UpdateKeys([]string{"limits/x/1", "limits/x/2"}, func(vals [][]byte) error { got = vals; return nil }); err != nil {
		t.Fatal(err)
	}
	if string(got[0]) != "40" || string(got[1]) != "40" {
		t.Errorf("counters = %s, %s; want 40, 40", got[0], got[1])
	}
	keys, err := nodes[1].ListKeys("limits/")
	if err != nil || len(keys) != 2 {
		t.Errorf("ListKeys = %v, %v", keys, err)
	}
}

// TestMustExist: with MustExist (the admin commands that only read), a prefix that holds no
// store, a mistyped one most likely, is refused and nothing is written under it, nor a key
// file created; one that holds a store opens.
func TestMustExist(t *testing.T) {
	c := etcdtest.Start(t, 1)
	dir := t.TempDir()
	cfg := Config{Endpoints: c.Endpoints(), Prefix: "/typo/", DialTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second,
		KeyFile: dir + "/secret.key", Node: "a", MustExist: true}
	if s, err := Open(cfg); !errors.Is(err, ErrNoStore) || !strings.Contains(err.Error(), "check store.etcd.prefix") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of an empty prefix with MustExist = %v, want ErrNoStore", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/typo/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("keys under the refused prefix: %v, %v; want none", resp.Count, err)
	}
	if _, err := os.Stat(cfg.KeyFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused Open left a key file: %v", err)
	}
	open(t, c, "/typo/", cfg.KeyFile, "a") // the daemon's first start
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open with MustExist of a prefix that holds a store: %v", err)
	}
	s.Close()
}
