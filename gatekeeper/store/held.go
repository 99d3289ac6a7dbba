package store

import "crypto/sha256"

// HeldEvents tells which of a backup's audit events a log holds already, by
// the SHA-256 of their bytes and as a multiset (an event the backup holds
// twice and the log once is held once), so that a backend's Load adds none of
// them twice: NewHeldEvents with the backup's items, See with each event of
// the log, then Take with each of the items' events in turn.
type HeldEvents struct {
	want, held map[[sha256.Size]byte]int
}

// NewHeldEvents returns the HeldEvents of items' events, or nil when items
// hold none (then no log needs reading; a nil *HeldEvents holds nothing).
func NewHeldEvents(items []Item) *HeldEvents {
	want := map[[sha256.Size]byte]int{}
	for _, it := range items {
		if it.Kind == ItemEvent {
			want[sha256.Sum256(it.Value)]++
		}
	}
	if len(want) == 0 {
		return nil
	}
	return &HeldEvents{want: want, held: map[[sha256.Size]byte]int{}}
}

// See counts the log's event v, if it is one of the items' events and not
// yet counted as many times as they hold it.
func (h *HeldEvents) See(v []byte) {
	if k := sha256.Sum256(v); h.want[k] > h.held[k] {
		h.held[k]++
	}
}

// Take reports whether the log holds the items' event v (once more than
// Take has reported so far): Load leaves it out.
func (h *HeldEvents) Take(v []byte) bool {
	if h == nil {
		return false
	}
	k := sha256.Sum256(v)
	if h.held[k] == 0 {
		return false
	}
	h.held[k]--
	return true
}
