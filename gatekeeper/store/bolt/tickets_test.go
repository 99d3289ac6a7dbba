package bolt

import (
	"bytes"
	"errors"
	"gatekeeper/gatekeeper/store"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTickets(t *testing.T) {
	const token = "abcd-efgh-ijkm-npqr-stuv"
	expires := day0.Add(24 * time.Hour)
	tests := []struct {
		name     string
		user     string
		token    string
		now      time.Time
		wantErr  string // "" = valid
		consumed bool   // a failed UseTicket still removes the ticket (expired)
	}{
		{name: "valid", user: "alice", token: token, now: day0},
		{name: "typed in capitals with spaces", user: "alice", token: "ABCD EFGH IJKM NPQR STUV", now: day0},
		{name: "without dashes", user: "alice", token: "abcdefghijkmnpqrstuv", now: day0},
		{name: "just before expiry", user: "alice", token: token, now: expires.Add(-time.Second)},
		{name: "at expiry", user: "alice", token: token, now: expires, wantErr: "expired at 2026-11-24T10:00:00Z", consumed: true},
		{name: "other user", user: "bob", token: token, now: day0, wantErr: "unknown or already used"},
		{name: "wrong token", user: "alice", token: "abcd-efgh-ijkm-npqr-stuw", now: day0, wantErr: "unknown or already used"},
		{name: "empty token", user: "alice", token: "", now: day0, wantErr: "unknown"},
		{name: "dashes only", user: "alice", token: "- -", now: day0, wantErr: "unknown"},
		{name: "huge token", user: "alice", token: strings.Repeat("a", 10000), now: day0, wantErr: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s := mustOpen(t, dbPath, keyPath)
			if err := s.AddTicket("alice", token, expires); err != nil {
				t.Fatal(err)
			}
			check := func(op string, err error) {
				t.Helper()
				if tt.wantErr == "" {
					if err != nil {
						t.Errorf("%s = %v, want valid", op, err)
					}
					return
				}
				if !errors.Is(err, store.ErrNoTicket) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("%s = %v, want ErrNoTicket saying %q", op, err, tt.wantErr)
				}
			}
			// CheckTicket never uses it up.
			check("CheckTicket", s.CheckTicket(tt.user, tt.token, tt.now))
			check("CheckTicket again", s.CheckTicket(tt.user, tt.token, tt.now))
			check("UseTicket", s.UseTicket(tt.user, tt.token, tt.now))

			// Afterwards the ticket is gone if it was used (or expired), else
			// alice can still use it once.
			left := s.CheckTicket("alice", token, day0)
			if gone := tt.wantErr == "" || tt.consumed; gone != (left != nil) {
				t.Errorf("ticket left after the test: %v (want gone: %v)", left, gone)
			}
			if tt.wantErr == "" {
				if err := s.UseTicket(tt.user, tt.token, tt.now); !errors.Is(err, store.ErrNoTicket) {
					t.Errorf("second UseTicket = %v, want ErrNoTicket", err)
				}
			}
		})
	}
}

func TestAddTicket(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	exp := day0.Add(24 * time.Hour)
	for _, tt := range []struct {
		name, user, token string
		expires           time.Time
	}{
		{"bad user", "../x", "tok", exp},
		{"empty token", "alice", "", exp},
		{"blank token", "alice", " - ", exp},
		{"no expiry", "alice", "tok", time.Time{}},
	} {
		if err := s.AddTicket(tt.user, tt.token, tt.expires); err == nil {
			t.Errorf("%s: AddTicket succeeded", tt.name)
		}
	}

	// A new ticket revokes the user's earlier one, not other users'.
	for _, tk := range []struct{ user, token string }{{"alice", "first"}, {"bob", "bobs"}, {"alice", "second"}} {
		if err := s.AddTicket(tk.user, tk.token, exp); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CheckTicket("alice", "first", day0); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("replaced ticket: %v, want ErrNoTicket", err)
	}
	for _, tk := range []struct{ user, token string }{{"alice", "second"}, {"bob", "bobs"}} {
		if err := s.CheckTicket(tk.user, tk.token, day0); err != nil {
			t.Errorf("%s's ticket: %v", tk.user, err)
		}
	}
}

// TestUseTicketSweepsExpired: using any ticket removes every expired one.
func TestUseTicketSweepsExpired(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	if err := s.AddTicket("old", "old-token", day0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTicket("alice", "alice-token", day0.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	later := day0.Add(2 * time.Hour)
	if err := s.UseTicket("alice", "nonsense", later); !errors.Is(err, store.ErrNoTicket) {
		t.Fatalf("UseTicket = %v", err)
	}
	// Even at an earlier "now" the expired ticket is no longer there.
	if err := s.CheckTicket("old", "old-token", day0); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("expired ticket kept: %v", err)
	}
	if err := s.CheckTicket("alice", "alice-token", later); err != nil {
		t.Errorf("valid ticket swept: %v", err)
	}
}

func TestTicketNotStoredInClear(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	const token = "zq7k-m3xp-t9wd-h4cn-r8vb"
	if err := s.AddTicket("alice", token, day0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{token, strings.ReplaceAll(token, "-", ""), strings.ToUpper(token)} {
		if bytes.Contains(raw, []byte(form)) {
			t.Errorf("database holds the ticket token %q", form)
		}
	}
	s = mustOpen(t, dbPath, keyPath)
	if err := s.UseTicket("alice", token, day0); err != nil {
		t.Errorf("ticket lost across reopen: %v", err)
	}
}

// TestUseTicketConcurrent: a ticket used from many places at once lets
// exactly one in.
func TestUseTicketConcurrent(t *testing.T) {
	dbPath, keyPath := paths(t)
	s := mustOpen(t, dbPath, keyPath)
	if err := s.AddTicket("alice", "once", day0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	const n = 16
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.UseTicket("alice", "once", day0)
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, store.ErrNoTicket):
			t.Errorf("unexpected error %v", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d uses of one ticket succeeded, want 1", wins)
	}
}
