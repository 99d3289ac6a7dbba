package store

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestCheckItem: what Dump marks damaged and Load refuses, and how a restore names it: the item
// in the backup, never the store it was to go into.
func TestCheckItem(t *testing.T) {
	c, err := NewCodec(bytes.Repeat([]byte{1}, KeySize), "/var/lib/gatekeeper/target.db")
	if err != nil {
		t.Fatal(err)
	}
	other := mustCodec(t, bytes.Repeat([]byte{2}, KeySize))
	record := func(c *Codec, name string, r Record) Item {
		v, err := c.Authenticate(BucketUsers, []byte(name), r)
		if err != nil {
			t.Fatal(err)
		}
		return Item{Kind: ItemUser, Key: name, Value: v}
	}
	good := record(c, "alice", Record{State: StateActive, Sealed: []byte("sealed")})
	flipped := record(c, "alice", Record{State: StateActive, Sealed: []byte("sealed")})
	flipped.Value[len(flipped.Value)/2] ^= 1
	k, v, err := c.NewTicket("bob", "tok", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ticket := Item{Kind: ItemTicket, Key: hex.EncodeToString(k), Value: v}
	badTicket := Item{Kind: ItemTicket, Key: ticket.Key, Value: bytes.Clone(v)}
	badTicket.Value[len(v)/2] ^= 1
	event, _ := EncodeEvent(Event{Kind: EventLoginOK, User: "alice"}, time.Now())

	tests := []struct {
		name    string
		it      Item
		damaged bool   // matches ErrDamaged
		why     string // CheckItem's error ("" none)
		restore string // CheckItems' error
	}{
		{name: "record", it: good},
		{name: "ticket", it: ticket},
		{name: "event", it: Item{Kind: ItemEvent, Value: event}},
		{name: "record with a byte changed", it: flipped, damaged: true, why: "fails its integrity check",
			restore: `user "alice": its record in the backup fails its integrity check (damaged or edited in the backup, or the backup was made with another secret key file)`},
		{name: "record under another key", it: record(other, "alice", Record{State: StateActive, Sealed: []byte("s")}), damaged: true,
			why: "fails its integrity check", restore: "another secret key file"},
		{name: "record moved to another user", it: Item{Kind: ItemUser, Key: "mallory", Value: good.Value}, damaged: true,
			why: "fails its integrity check", restore: `user "mallory": its record in the backup fails`},
		{name: "impossible record", it: record(c, "carol", Record{State: StatePending}), damaged: true,
			why: "holds impossible values: state pending without a secret", restore: `user "carol": its record in the backup holds impossible values`},
		{name: "invalid name", it: Item{Kind: ItemUser, Key: "bad name", Value: good.Value}, why: "invalid user name", restore: "invalid user name"},
		{name: "ticket edited", it: badTicket, damaged: true, why: "fails its integrity check", restore: "ticket " + ticket.Key[:8] + "…: in the backup it fails"},
		{name: "unreadable event", it: Item{Kind: ItemEvent, Value: []byte("{")}, why: "cannot be read", restore: "audit event cannot be read"},
		{name: "unknown kind", it: Item{Kind: "group", Value: []byte("x")}, why: `unknown kind "group"`, restore: `unknown kind "group"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := c.CheckItem(tc.it)
			if tc.why == "" {
				if err != nil {
					t.Fatalf("CheckItem = %v, want nil", err)
				}
				if _, err := c.CheckItems([]Item{tc.it}); err != nil {
					t.Errorf("CheckItems = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.why) || errors.Is(err, ErrDamaged) != tc.damaged {
				t.Errorf("CheckItem = %v, want %q (damaged %v)", err, tc.why, tc.damaged)
			}
			_, err = c.CheckItems([]Item{good, tc.it})
			ie, ok := errors.AsType[*ItemError](err)
			if !ok || ie.Index != 2 || !strings.Contains(err.Error(), tc.restore) || strings.Contains(err.Error(), c.Where) ||
				errors.Is(err, ErrDamaged) != tc.damaged {
				t.Errorf("CheckItems = %v, want item 2: %q", err, tc.restore)
			}
		})
	}
}
