package main

import (
	"os"
	"strings"
	"testing"

	"gatekeeper/gatekeeper/store"
)

// TestEmptyDatabaseFile: with the database file emptied (`: > gatekeeper.db`) and the key file
// still there, the commands that open it refuse it, saying what happened and what to do, instead
// of formatting it as a new database in which nobody has linked a device.
func TestEmptyDatabaseFile(t *testing.T) {
	e := newEnv(t, "")
	e.withStore(t, func(st store.Store) { seedActive(t, st, "alice") })
	if err := os.Truncate(e.db, 0); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"admin", "list"}, {"admin", "show", "alice"}, {"admin", "ticket", "alice"}, {"enroll", "alice"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, _, err := e.run(t, args...)
			if err == nil || !strings.Contains(err.Error(), "exists but is empty") || !strings.Contains(err.Error(), "admin restore") {
				t.Errorf("%s = %q, %v; want the empty file refused", args, out, err)
			}
			if st, err := os.Stat(e.db); err != nil || st.Size() != 0 {
				t.Errorf("%s changed the empty file: %v, %v", args, st, err)
			}
		})
	}
}
