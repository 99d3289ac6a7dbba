package gatekeeper

import (
	"log/slog"
	"sync"

	"gatekeeper/gatekeeper/store"
)

// auditQueue is how many audit events may wait for the disk before new ones
// are dropped (and the drop logged): a stalled disk must not stall logins.
const auditQueue = 4096

// auditor writes audit events to the store from one goroutine, in batches,
// so that a login does not wait for an extra fsync. The login decision itself
// (the used time step) is committed synchronously by useCode; the audit trail
// may lag it by one batch, and a crash can lose at most that batch.
//
// The goroutine is started by newAuditor and ends in close, after it has
// written everything queued before close was called.
type auditor struct {
	st  interface{ Append(...store.Event) error }
	log *slog.Logger
	// writeFailed counts a failed write (see Server.storeWriteFailed).
	writeFailed func(err error)
	ch          chan store.Event
	// done is closed when the goroutine has written its last batch.
	done chan struct{}

	// mu protects closed; record holds it shared so that close cannot
	// close ch during a send.
	mu     sync.RWMutex
	closed bool
}

func newAuditor(st interface{ Append(...store.Event) error }, log *slog.Logger, writeFailed func(error)) *auditor {
	a := &auditor{st: st, log: log, writeFailed: writeFailed, ch: make(chan store.Event, auditQueue), done: make(chan struct{})}
	go a.run()
	return a
}

// record queues ev; it never blocks. After close it drops ev: the daemon is
// stopping, and the event has gone to the structured log anyway.
func (a *auditor) record(ev store.Event) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		return
	}
	select {
	case a.ch <- ev:
	default:
		a.log.Error("audit queue full; event dropped", "kind", ev.Kind, "user", ev.User)
	}
}

func (a *auditor) run() {
	defer close(a.done)
	for ev := range a.ch {
		batch := []store.Event{ev}
	drain:
		for len(batch) < store.MaxAppend { // all written or none, so the error below is true
			select {
			case ev, ok := <-a.ch:
				if !ok {
					break drain
				}
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		if err := a.st.Append(batch...); err != nil {
			a.log.Error("writing audit events failed; they are in this log only", "events", len(batch), "err", err)
			a.writeFailed(err)
		}
	}
}

// close writes what is queued and stops the goroutine.
func (a *auditor) close() {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.ch)
	}
	a.mu.Unlock()
	<-a.done
}
