package store

import "testing"

// TestHeldEvents: the log's events count against the items' as a multiset, by their bytes;
// items without events need no log read (nil), which holds nothing.
func TestHeldEvents(t *testing.T) {
	if h := NewHeldEvents([]Item{{Kind: ItemUser, Key: "alice"}}); h != nil || h.Take([]byte("a")) {
		t.Fatalf("HeldEvents of items without events = %v, want nil, holding nothing", h)
	}
	ev := func(v string) Item { return Item{Kind: ItemEvent, Value: []byte(v)} }
	h := NewHeldEvents([]Item{ev("a"), ev("a"), ev("b"), {Kind: ItemUser, Key: "a"}})
	for _, v := range []string{"a", "c", "b", "b", "a", "a"} { // the log: a thrice, b twice, c
		h.See([]byte(v))
	}
	// The items' a twice, b once: all held, as many times as the items hold them, no more.
	for _, tc := range []struct {
		v    string
		want bool
	}{{"a", true}, {"a", true}, {"a", false}, {"b", true}, {"b", false}, {"c", false}} {
		if got := h.Take([]byte(tc.v)); got != tc.want {
			t.Errorf("Take(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
