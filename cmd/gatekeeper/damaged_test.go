package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"gatekeeper/gatekeeper/store"
)

// putRaw writes value under key in the users bucket of e's (closed) database, as an edit of the
// file would.
func putRaw(t *testing.T, e env, key, value string) {
	t.Helper()
	db, err := bbolt.Open(e.db, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("users")).Put([]byte(key), []byte(value)) }); err != nil {
		t.Fatal(err)
	}
}

// TestAdminListDamaged: a record that fails its integrity check, and one stored under an invalid
// name, do not hide the healthy users: admin list prints them all, the bad ones with state
// damaged, then fails (exit 1) naming each with the reason and the way out; admin reset removes
// each by the name the list gives. With and without a daemon alike.
func TestAdminListDamaged(t *testing.T) {
	for _, daemon := range []bool{false, true} {
		name := "without daemon"
		if daemon {
			name = "with daemon"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, "")
			e.withStore(t, func(st store.Store) {
				for _, u := range []string{"alice", "bob", "carol"} {
					seedActive(t, st, u)
				}
			})
			putRaw(t, e, "bob", `{"data":{"state":"none","last_step":1},"mac":"AAAA"}`)
			putRaw(t, e, "bad name", "x")
			if daemon {
				startDaemon(t, e, &frontDoor{})
			}

			for _, args := range [][]string{{"admin", "list"}, {"admin", "list", "-o", "json"}} {
				out, _, err := e.run(t, args...)
				for _, u := range []string{"alice", "carol", "bob", "bad name"} {
					if !strings.Contains(out, u) {
						t.Errorf("%s: output does not name %s:\n%s", args, u, out)
					}
				}
				if !errors.Is(err, store.ErrDamaged) {
					t.Fatalf("%s = %v, want an error matching ErrDamaged", args, err)
				}
				for _, want := range []string{"2 user records", `bob: user "bob": stored record`, "fails its integrity check",
					`bad name: a record is stored under "bad name", which is not a valid user name`, "gatekeeper admin reset USER"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s: error %q does not say %q", args, err, want)
					}
				}
			}
			out, _, err := e.run(t, "admin", "list")
			t.Logf("admin list:\n%sgatekeeper: %v", out, err)
			if row := tableRow(t, out, []string{"USER", "STATE", "ENROLLED"}, "bob"); row[1] != "damaged" {
				t.Errorf("bob's row = %q, want state damaged", row)
			}
			if row := tableRow(t, out, []string{"USER", "STATE", "ENROLLED"}, "alice"); row[1] != "active" {
				t.Errorf("alice's row = %q, want state active", row)
			}

			out, _, err = e.run(t, "admin", "reset", "bad name")
			if err != nil || !strings.Contains(out, "bad name: the damaged record stored under this name (not a valid user name) was removed") {
				t.Errorf("reset 'bad name' = %q, %v", out, err)
			}
			if _, _, err := e.run(t, "admin", "reset", "bad name"); !errors.Is(err, store.ErrBadName) {
				t.Errorf("second reset 'bad name' = %v, want ErrBadName", err)
			}
			if out, _, err := e.run(t, "admin", "reset", "bob"); err != nil || !strings.Contains(out, "the record was damaged") {
				t.Errorf("reset bob = %q, %v", out, err)
			}
			out, _, err = e.run(t, "admin", "list")
			if err != nil || strings.Contains(out, "bob") || strings.Contains(out, "damaged") {
				t.Errorf("list after the resets = %q, %v", out, err)
			}
		})
	}
}
