package etcd

import (
	"path/filepath"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/bolt"
	"gatekeeper/internal/etcdtest"
)

// loginWrites does to s what one login with a code does to the store: read
// the user, reserve places in the lockout counters (shared ones only: with
// bbolt they are in memory), spend the code's step, give the places back and
// append the audit event. The difference between the two backends is what
// etcd adds to a code login.
func loginWrites(b *testing.B, s store.Store, kv interface {
	UpdateKeys([]string, func([][]byte) error) error
}) {
	b.Helper()
	name := "alice"
	if err := s.Update(name, func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("k"); return nil }); err != nil {
		b.Fatal(err)
	}
	keys := []string{"limits/address/192.0.2.1", "limits/network/192.0.2.0/24", "limits/user/alice"}
	touch := func(vals [][]byte) error {
		for i := range vals {
			vals[i] = []byte(time.Now().String())
		}
		return nil
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Get(name); err != nil {
			b.Fatal(err)
		}
		if kv != nil {
			if err := kv.UpdateKeys(keys, touch); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Update(name, func(u *store.User) error { u.LastStep++; return nil }); err != nil {
			b.Fatal(err)
		}
		if kv != nil {
			if err := kv.UpdateKeys(keys, touch); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Append(store.Event{Kind: store.EventLoginOK, User: name}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoginStoreBolt: a code login's store work on one node's bbolt file.
func BenchmarkLoginStoreBolt(b *testing.B) {
	dir := b.TempDir()
	s, err := bolt.Open(filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	loginWrites(b, s, nil)
}

// BenchmarkLoginStoreEtcd: the same on a 3-member etcd cluster on loopback.
func BenchmarkLoginStoreEtcd(b *testing.B) {
	c := etcdtest.Start(b, 3)
	s, err := Open(Config{Endpoints: c.Endpoints(), Prefix: "/bench/", DialTimeout: 5 * time.Second,
		RequestTimeout: 2 * time.Second, KeyFile: filepath.Join(b.TempDir(), "secret.key"), Node: "a"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	loginWrites(b, s, s)
}
