package bolt

import (
	"path/filepath"
	"testing"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/storetest"
)

// TestConformance runs the store.Store suite against a bbolt file.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		New: func(t *testing.T, keyPath string) store.Store {
			s, err := Open(filepath.Join(t.TempDir(), "gatekeeper.db"), keyPath)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			b := s.(*Store)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			n, err := Open(b.path, b.keyPath)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close() })
			return n
		},
	})
}
