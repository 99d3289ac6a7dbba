package etcd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
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

// TestHostKeys: the first node records its host keys; another with the same
// is let in, one with others is refused with a message saying what to copy;
// a rotation (a new key listed last, then first, then alone) goes through
// one node at a time, and a node that skips a step is refused. A record
// written before key announcements (all fingerprints, space-separated) is
// read as keys both used and announced.
func TestHostKeys(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	a := open(t, c, "/h/", key, "a")
	b := open(t, c, "/h/", key, "b")
	keys := func(handshake string, more ...string) HostKeys {
		all := append([]string{handshake}, more...)
		slices.Sort(all)
		return HostKeys{Handshake: []string{handshake}, Announced: all}
	}
	for _, step := range []struct {
		what string
		node *Store
		have HostKeys
		ok   bool
	}{
		{"the first node", a, keys("SHA256:old"), true},
		{"a node with the same key", b, keys("SHA256:old"), true},
		{"a node with another key", b, keys("SHA256:other"), false},
		{"rotation, 1: the new key listed last", a, keys("SHA256:old", "SHA256:new"), true},
		{"rotation, 1, the other node", b, keys("SHA256:old", "SHA256:new"), true},
		{"skipping step 2: the old key removed while in use", b, keys("SHA256:new"), false},
		{"rotation, 2: the new key first", a, keys("SHA256:new", "SHA256:old"), true},
		{"rotation, 2, the other node", b, keys("SHA256:new", "SHA256:old"), true},
		{"rotation, 3: the old key removed", a, keys("SHA256:new"), true},
		{"rotation, 3, the other node", b, keys("SHA256:new"), true},
		{"a node still on the old key", b, keys("SHA256:old"), false},
	} {
		err := step.node.ClaimHostKeys(step.have)
		var he *HostKeyError
		switch {
		case step.ok && err != nil:
			t.Errorf("%s: refused: %v", step.what, err)
		case !step.ok && !errors.As(err, &he):
			t.Errorf("%s: %v, want a HostKeyError", step.what, err)
		case !step.ok && !strings.Contains(err.Error(), "Copy the files of host_key_files"):
			t.Errorf("%s: the error does not say what to copy: %v", step.what, err)
		}
	}

	if _, err := c.Client(t).Put(context.Background(), "/h/meta/hostkeys", "SHA256:x SHA256:y"); err != nil {
		t.Fatal(err)
	}
	if err := a.ClaimHostKeys(keys("SHA256:x", "SHA256:y")); err != nil {
		t.Errorf("against a record of the keys before announcements: %v", err)
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
