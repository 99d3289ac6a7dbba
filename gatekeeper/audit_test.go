package gatekeeper

import (
	"log/slog"
	"sync"
	"testing"

	"gatekeeper/gatekeeper/store"
)

// batchStore records the size of each Append; the first one waits for
// release, so that the events recorded meanwhile pile up in the queue.
type batchStore struct {
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	sizes   []int
}

func (b *batchStore) Append(events ...store.Event) error {
	b.once.Do(func() { <-b.release })
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sizes = append(b.sizes, len(events))
	return nil
}

// TestAuditorBatches: a backlog of events is written in batches of at most
// store.MaxAppend, each of which the store writes whole (etcd's transactions
// are bounded), so that a failed write loses exactly the events it reports.
func TestAuditorBatches(t *testing.T) {
	st := &batchStore{release: make(chan struct{})}
	a := newAuditor(st, slog.New(slog.DiscardHandler), func(error) {})
	const n = 3*store.MaxAppend + 7
	for range n {
		a.record(store.Event{Kind: store.EventLoginRefused, User: "alice"})
	}
	close(st.release)
	a.close()
	total := 0
	for _, size := range st.sizes {
		if size > store.MaxAppend {
			t.Errorf("an Append of %d events, more than store.MaxAppend (%d)", size, store.MaxAppend)
		}
		total += size
	}
	if total != n {
		t.Errorf("%d events written, want %d (batches %v)", total, n, st.sizes)
	}
}
