package bolt

import (
	"errors"
	"strings"
	"testing"

	"gatekeeper/gatekeeper/store"
)

// TestListDamaged: damaged records (one that fails its integrity check, one
// stored by hand under a name gatekeeper never writes) do not hide the other
// users: List returns them with a *store.DamagedError naming the bad ones,
// and Delete removes each (an invalid name only when a record is stored
// under it).
func TestListDamaged(t *testing.T) {
	tests := []struct {
		name    string
		damage  map[string]string // key → raw value put into the users bucket
		want    string            // the users List returns
		damaged []string          // the records its error names
		reason  map[string]string // damaged name → part of its reason
	}{
		{name: "none", want: "alice,bob,carol"},
		{name: "one fails its check", damage: map[string]string{"bob": `{"data":{"state":"active"},"mac":"AAAA"}`},
			want: "alice,carol", damaged: []string{"bob"}, reason: map[string]string{"bob": "fails its integrity check"}},
		{name: "invalid name", damage: map[string]string{"bad name": "x"},
			want: "alice,bob,carol", damaged: []string{"bad name"}, reason: map[string]string{"bad name": "not a valid user name"}},
		{name: "several", damage: map[string]string{"alice": "{broken", "carol": "", "-x": "{}"},
			want: "bob", damaged: []string{"-x", "alice", "carol"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s, err := Open(dbPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range []string{"alice", "bob", "carol"} {
				enroll(t, s, u, []byte(u+"'s secret"))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.damage {
				rawPut(t, dbPath, bucketUsers, []byte(k), []byte(v))
			}
			s = mustOpen(t, dbPath, keyPath)

			users, err := s.List()
			var names []string
			for _, u := range users {
				names = append(names, u.Name)
			}
			if got := strings.Join(names, ","); got != tt.want {
				t.Errorf("List = %s, want %s", got, tt.want)
			}
			var de *store.DamagedError
			if len(tt.damaged) == 0 {
				if err != nil {
					t.Fatalf("List error = %v", err)
				}
				return
			}
			if !errors.Is(err, store.ErrDamaged) || !errors.As(err, &de) {
				t.Fatalf("List error = %v, want a *store.DamagedError", err)
			}
			var bad []string
			for _, r := range de.Records {
				bad = append(bad, r.Name)
				if !errors.Is(r.Err, store.ErrDamaged) || !strings.Contains(r.Err.Error(), r.Name) ||
					!strings.Contains(r.Err.Error(), tt.reason[r.Name]) {
					t.Errorf("record %q: %v, want ErrDamaged naming it and saying %q", r.Name, r.Err, tt.reason[r.Name])
				}
			}
			if strings.Join(bad, ",") != strings.Join(tt.damaged, ",") {
				t.Errorf("damaged = %v, want %v", bad, tt.damaged)
			}

			// Each one List names can be deleted by that name.
			for _, name := range tt.damaged {
				if existed, err := s.Delete(name); !existed || err != nil {
					t.Errorf("Delete(%q) = %v, %v; want removed", name, existed, err)
				}
			}
			if users, err := s.List(); err != nil || len(users) != 3-len(tt.damaged)+countInvalid(tt.damaged) {
				t.Errorf("List after the deletes = %+v, %v", users, err)
			}
			// An invalid name without a record is still refused.
			if existed, err := s.Delete("bad name"); existed || !errors.Is(err, store.ErrBadName) {
				t.Errorf("Delete of an invalid name without a record = %v, %v; want ErrBadName", existed, err)
			}
		})
	}
}

// countInvalid counts the invalid user names in names.
func countInvalid(names []string) int {
	n := 0
	for _, name := range names {
		if store.CheckName(name) != nil {
			n++
		}
	}
	return n
}
