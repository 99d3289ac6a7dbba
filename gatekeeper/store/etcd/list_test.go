package etcd

import (
	"context"
	"errors"
	"strings"
	"testing"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/internal/etcdtest"
)

// TestListDamaged: records put by hand with etcdctl (one under an invalid
// name, one that fails its integrity check) do not hide the other users:
// List returns them with a *store.DamagedError naming the bad ones, and
// Delete removes each by that name; an invalid name without a record is
// still refused, and the delete is of that one key, never a range.
func TestListDamaged(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c, "/ld/", t.TempDir()+"/secret.key", "a")
	for _, u := range []string{"alice", "bob", "carol"} {
		if err := s.Update(u, func(x *store.User) error { x.State, x.Secret = store.StateActive, []byte(u); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for k, v := range map[string]string{"bad name": "x", "bob": "{broken", "": "x"} {
		if _, err := s.cli.Put(ctx, "/ld/users/"+k, v); err != nil {
			t.Fatal(err)
		}
	}

	users, err := s.List()
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	if strings.Join(names, ",") != "alice,carol" {
		t.Errorf("List = %v, want alice,carol", names)
	}
	var de *store.DamagedError
	if !errors.Is(err, store.ErrDamaged) || !errors.As(err, &de) {
		t.Fatalf("List error = %v, want a *store.DamagedError", err)
	}
	var bad []string
	for _, r := range de.Records {
		bad = append(bad, r.Name)
	}
	if strings.Join(bad, "|") != "|bad name|bob" {
		t.Errorf("damaged records %q, want \"\", \"bad name\" and bob", bad)
	}

	for _, tt := range []struct {
		name    string
		existed bool
		err     error
	}{
		{"bad name", true, nil},
		{"bad name", false, store.ErrBadName}, // gone now: the name is refused again
		{"bob", true, nil},
		{"", true, nil},
		{"bad", false, nil},
		{"al", false, nil}, // never a prefix of alice's key
		{"no such", false, store.ErrBadName},
	} {
		existed, err := s.Delete(tt.name)
		if existed != tt.existed || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
			t.Errorf("Delete(%q) = %v, %v; want %v, %v", tt.name, existed, err, tt.existed, tt.err)
		}
	}
	if users, err := s.List(); err != nil || len(users) != 2 {
		t.Errorf("List after the deletes = %+v, %v; want alice and carol", users, err)
	}
}
