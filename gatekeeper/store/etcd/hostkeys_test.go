package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"gatekeeper/internal/etcdtest"
	"gatekeeper/internal/logbuf"
)

// keysOf is HostKeys for a node whose host_key_files list these keys, each
// "TYPE:NAME" (the name standing in for its fingerprint).
func keysOf(keys ...string) HostKeys {
	h := HostKeys{Handshake: map[string]string{}}
	for _, k := range keys {
		typ, _, _ := strings.Cut(k, ":")
		if _, ok := h.Handshake[typ]; !ok {
			h.Handshake[typ] = k
		}
		h.Announced = append(h.Announced, k)
	}
	slices.Sort(h.Announced)
	return h
}

// TestHostKeys walks nodes through restarts: the first node's keys go; a
// node with another key, or with none of the running nodes' key types, is
// refused with a message saying what to copy; a rotation (a new key listed
// last, then first, then alone) rolls through the nodes one at a time, and
// a node a step ahead of a running one is refused; a key type added beside
// the known one goes; with every node stopped, any keys go.
func TestHostKeys(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	nodes := map[string]*Store{}
	restart := func(node string, have HostKeys) error {
		if s := nodes[node]; s != nil {
			s.Close()
		}
		nodes[node] = open(t, c, "/h/", key, node)
		return nodes[node].ClaimHostKeys(have, nil)
	}
	stop := func(node string) {
		nodes[node].Close()
		delete(nodes, node)
	}
	for _, step := range []struct {
		what string
		node string
		have HostKeys
		ok   bool
	}{
		{"the first node", "a", keysOf("ed:old"), true},
		{"a node with the same key", "b", keysOf("ed:old"), true},
		{"a node with another key", "c", keysOf("ed:other"), false},
		{"a node with a key of another type only", "c", keysOf("ecdsa:other"), false},
		{"rotation, 1: the new key listed last", "a", keysOf("ed:old", "ed:new"), true},
		{"step 2 while b has not taken step 1", "a", keysOf("ed:new", "ed:old"), false},
		{"rotation, 1, the other node", "b", keysOf("ed:old", "ed:new"), true},
		{"step 3 while b uses the old key", "a", keysOf("ed:new"), false},
		{"rotation, 2: the new key first", "a", keysOf("ed:new", "ed:old"), true},
		{"rotation, 2, the other node", "b", keysOf("ed:new", "ed:old"), true},
		{"rotation, 3: the old key removed", "a", keysOf("ed:new"), true},
		{"a node back on the old key", "b", keysOf("ed:old"), false},
		{"rotation, 3, the other node", "b", keysOf("ed:new"), true},
		{"a key type added", "a", keysOf("ed:new", "rsa:added"), true},
	} {
		err := restart(step.node, step.have)
		var he *HostKeyError
		switch {
		case step.ok && err != nil:
			t.Errorf("%s: refused: %v", step.what, err)
		case !step.ok && !errors.As(err, &he):
			t.Errorf("%s: %v, want a HostKeyError", step.what, err)
		case !step.ok && !strings.Contains(err.Error(), "Copy the files of host_key_files"):
			t.Errorf("%s: the error does not say what to copy: %v", step.what, err)
		}
		if !step.ok {
			stop(step.node) // refused: the node does not run
		}
	}

	// Every node stopped (their entries go with their leases): a new key goes.
	for node := range nodes {
		stop(node)
	}
	if err := restart("a", keysOf("ed:after-a-theft")); err != nil {
		t.Errorf("with no node running: %v", err)
	}
	// What gatekeepers before key announcements compare with theirs.
	resp, err := c.Client(t).Get(context.Background(), "/h/meta/hostkeys")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "ed:after-a-theft" {
		t.Errorf("meta/hostkeys = %v, %v; want the announced keys", resp, err)
	}
}

// TestHostKeysAtOnce: of two nodes with keys that do not go together,
// started at the same moment, one is refused.
func TestHostKeysAtOnce(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	for i := range 10 {
		prefix := fmt.Sprintf("/once%d/", i)
		a, b := open(t, c, prefix, key, "a"), open(t, c, prefix, key, "b")
		errs := make(chan error, 2)
		go func() { errs <- a.ClaimHostKeys(keysOf("ed:one"), nil) }()
		go func() { errs <- b.ClaimHostKeys(keysOf("ed:two"), nil) }()
		var refused int
		for range 2 {
			var he *HostKeyError
			if err := <-errs; errors.As(err, &he) {
				refused++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if refused != 1 {
			t.Errorf("round %d: %d of the two nodes refused, want 1", i, refused)
		}
	}
}

// TestHostKeysSameNodeName: a second process with the node_name of a
// running one is checked like any other node, and its end leaves the
// running one's entry in place.
func TestHostKeysSameNodeName(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	a1 := open(t, c, "/h/", key, "a")
	if err := a1.ClaimHostKeys(keysOf("ed:one"), nil); err != nil {
		t.Fatal(err)
	}
	a2 := open(t, c, "/h/", key, "a")
	var he *HostKeyError
	if err := a2.ClaimHostKeys(keysOf("ed:two"), nil); !errors.As(err, &he) {
		t.Errorf("a second a with another key beside the running a: %v, want a HostKeyError", err)
	}
	a3 := open(t, c, "/h/", key, "a")
	if err := a3.ClaimHostKeys(keysOf("ed:one"), nil); err != nil {
		t.Fatal(err)
	}
	a3.Close()
	b := open(t, c, "/h/", key, "b")
	if err := b.ClaimHostKeys(keysOf("ed:three"), nil); !errors.As(err, &he) {
		t.Errorf("b with another key while a runs, after a second a stopped: %v, want a HostKeyError", err)
	}
}

// TestHostKeysLeaseLost: a node whose entry went with its lease (the cluster
// out of reach) claims it again with the check: beside a node that started
// meanwhile with keys that do not go with its own, it writes nothing and
// says so at Error; once that node is gone, its entry is back.
func TestHostKeysLeaseLost(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key := t.TempDir() + "/secret.key"
	var logs logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a := open(t, c, "/h/", key, "a")
	if err := a.ClaimHostKeys(keysOf("ed:one"), log); err != nil {
		t.Fatal(err)
	}
	cli := c.Client(t)
	entries := func() []string {
		t.Helper()
		r, err := cli.Get(context.Background(), "/h/hostkeys/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, kv := range r.Kvs {
			keys = append(keys, string(kv.Key))
		}
		return keys
	}
	r, err := cli.Get(context.Background(), "/h/hostkeys/", clientv3.WithPrefix())
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("entries %v, %v; want a's", r, err)
	}
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(r.Kvs[0].Lease)); err != nil { // as if expired
		t.Fatal(err)
	}
	b := open(t, c, "/h/", key, "b")
	if err := b.ClaimHostKeys(keysOf("ed:two"), nil); err != nil {
		t.Fatalf("b while a's entry was gone: %v", err)
	}
	waitUntil(t, "a's error about b", func() bool { return strings.Contains(logs.String(), "do not go together") })
	if got := entries(); len(got) != 1 || !strings.HasPrefix(got[0], "/h/hostkeys/b/") {
		t.Errorf("entries %q, want b's alone", got)
	}
	b.Close()
	waitUntil(t, "a's entry back", func() bool {
		got := entries()
		return len(got) == 1 && strings.HasPrefix(got[0], "/h/hostkeys/a/")
	})
}

// waitUntil fails t if cond does not hold within 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
