package enroll

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/bolt"
	"gatekeeper/gatekeeper/totp"
)

// t0 is the fake clock's start: in the middle of a 30 s step, so that ±1 step is unambiguous.
var t0 = time.Date(2026, 11, 23, 10, 0, 15, 0, time.UTC)

// fakeClock is a settable clock for Service.Now.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func openStore(t *testing.T) store.Store {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newService(t *testing.T, clock *fakeClock, log *slog.Logger) *Service {
	t.Helper()
	return &Service{
		Store:         openStore(t),
		Issuer:        "Example HPC",
		Skew:          1,
		ConfirmWithin: 10 * time.Minute,
		Now:           clock.Now,
		Log:           log,
	}
}

// codeAt computes the RFC 6238 code of secret at time at, independently of package totp.
func codeAt(secret []byte, at time.Time) string {
	mac := hmac.New(sha1.New, secret)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(at.Unix()/30))
	mac.Write(msg[:])
	h := mac.Sum(nil)
	off := h[len(h)-1] & 0x0f
	v := binary.BigEndian.Uint32(h[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", v%1_000_000)
}

func decodeSecret(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
	if err != nil {
		t.Fatalf("secret %q is not unpadded base32: %v", s, err)
	}
	return b
}

var errNoWrite = errors.New("read only")

// peek returns the stored record of user including its decrypted secret, writing nothing.
func peek(t *testing.T, st store.Store, user string) store.User {
	t.Helper()
	var got store.User
	err := st.Update(user, func(u *store.User) error {
		got = *u
		got.Secret = bytes.Clone(u.Secret)
		return errNoWrite
	})
	if !errors.Is(err, errNoWrite) {
		t.Fatalf("reading %s: %v", user, err)
	}
	return got
}

func TestBegin(t *testing.T) {
	tests := []struct {
		name    string
		user    string
		setup   func(t *testing.T, s *Service, c *fakeClock) // runs at t0
		advance time.Duration                                // clock moves on after setup
		wantErr error
		wantMsg []string // substrings of the error message
	}{
		{name: "new user", user: "alice"},
		{
			name: "pending unexpired is refused without a secret",
			user: "alice",
			setup: func(t *testing.T, s *Service, c *fakeClock) {
				mustBegin(t, s, "alice")
			},
			advance: 9 * time.Minute,
			wantErr: ErrPending,
			wantMsg: []string{"alice", "expires at " + formatTime(t0.Add(10*time.Minute)), "in 1m0s"},
		},
		{
			name: "expired pending may start again",
			user: "alice",
			setup: func(t *testing.T, s *Service, c *fakeClock) {
				mustBegin(t, s, "alice")
			},
			advance: 10 * time.Minute,
		},
		{
			name: "active is refused",
			user: "alice",
			setup: func(t *testing.T, s *Service, c *fakeClock) {
				l, b := mustBegin(t, s, "alice")
				if _, err := s.Confirm(context.Background(), "alice", b, codeAt(decodeSecret(t, l.Secret), c.t)); err != nil {
					t.Fatalf("Confirm: %v", err)
				}
			},
			advance: 48 * time.Hour,
			wantErr: ErrAlreadyLinked,
			wantMsg: []string{"linked on 2026-11-23; replace it with the new device instead, or have an admin reset it"},
		},
		{name: "empty name", user: "", wantErr: store.ErrBadName},
		{name: "leading dash", user: "-oProxyCommand", wantErr: store.ErrBadName},
		{name: "slash", user: "a/b", wantErr: store.ErrBadName},
		{name: "too long", user: strings.Repeat("a", 65), wantErr: store.ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			clock := &fakeClock{t: t0}
			s := newService(t, clock, slog.New(slog.NewTextHandler(&logBuf, nil)))
			var before store.User
			if tt.setup != nil {
				tt.setup(t, s, clock)
				before = peek(t, s.Store, tt.user)
			}
			clock.t = clock.t.Add(tt.advance)

			link, binding, err := s.Begin(context.Background(), tt.user)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Begin error = %v, want %v", err, tt.wantErr)
				}
				if link != (Link{}) || binding != "" {
					t.Errorf("Begin returned %+v and a binding with the error; want no link (no secret)", link)
				}
				for _, m := range tt.wantMsg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error %q does not say %q", err, m)
					}
				}
				if before.Secret != nil {
					if strings.Contains(err.Error(), totp.EncodeSecret(before.Secret)) {
						t.Errorf("error message shows the secret: %q", err)
					}
					after := peek(t, s.Store, tt.user)
					if !bytes.Equal(after.Secret, before.Secret) || after.State != before.State {
						t.Errorf("refused Begin changed the record: %s → %s", before.State, after.State)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Begin: %v", err)
			}
			secret := decodeSecret(t, link.Secret)
			if len(secret) < 16 {
				t.Errorf("secret has %d bytes, want >= 16", len(secret))
			}
			wantURI := totp.URI("Example HPC", tt.user, secret)
			if link.User != tt.user || link.Issuer != "Example HPC" || link.URI != wantURI {
				t.Errorf("link = %+v, want user %q issuer %q URI %q", link, tt.user, "Example HPC", wantURI)
			}
			if want := clock.t.Add(10 * time.Minute); !link.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt = %v, want %v", link.ExpiresAt, want)
			}
			u := peek(t, s.Store, tt.user)
			if u.State != store.StatePending || !bytes.Equal(u.Secret, secret) || !u.PendingSince.Equal(clock.t) {
				t.Errorf("stored %s since %v, secret match %v; want pending since %v with the link's secret",
					u.State, u.PendingSince, bytes.Equal(u.Secret, secret), clock.t)
			}
			if before.Secret != nil && bytes.Equal(before.Secret, secret) {
				t.Error("a new link reused the expired link's secret")
			}
			if !strings.Contains(logBuf.String(), "link started") {
				t.Errorf("log does not say \"link started\":\n%s", logBuf.String())
			}
			if strings.Contains(logBuf.String(), link.Secret) {
				t.Errorf("log shows the secret:\n%s", logBuf.String())
			}
			if len(binding) < 20 || strings.Contains(logBuf.String(), string(binding)) {
				t.Errorf("binding of %d characters, or the log shows it:\n%s", len(binding), logBuf.String())
			}
			if h := sha256.Sum256([]byte(binding)); !bytes.Equal(u.PendingBinding, h[:]) || u.ConfirmTries != 0 {
				t.Errorf("stored binding hash %x tries %d, want the binding's SHA-256 and 0", u.PendingBinding, u.ConfirmTries)
			}
		})
	}
}

func mustBegin(t *testing.T, s *Service, user string) (Link, Binding) {
	t.Helper()
	l, b, err := s.Begin(context.Background(), user)
	if err != nil {
		t.Fatalf("Begin(%s): %v", user, err)
	}
	return l, b
}

// TestBeginKeepsLastStep: a new link must never lower the last used step, or a code from
// before could be accepted again.
func TestBeginKeepsLastStep(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	mustBegin(t, s, "alice")
	high := totp.Step(t0) + 1000
	if err := s.Store.Update("alice", func(u *store.User) error { u.LastStep = high; return nil }); err != nil {
		t.Fatal(err)
	}
	clock.t = t0.Add(time.Hour) // the pending link has expired
	mustBegin(t, s, "alice")
	if got := peek(t, s.Store, "alice").LastStep; got != high {
		t.Errorf("LastStep = %d after a new link, want %d", got, high)
	}
}

func TestConfirm(t *testing.T) {
	tests := []struct {
		name      string
		noBegin   bool
		lastStep  uint64        // stored before Confirm (0 = leave)
		advance   time.Duration // between Begin and Confirm
		codeAt    time.Duration // offset from Confirm's time of the code typed
		code      string        // typed instead of a computed code
		wantErr   []error
		wantClock int // the *ClockError's Steps, 0 = no clock error
		wantState store.State
	}{
		{name: "current code", advance: time.Minute, wantState: store.StateActive},
		{name: "previous step within skew", advance: time.Minute, codeAt: -30 * time.Second, wantState: store.StateActive},
		{name: "next step within skew", advance: time.Minute, codeAt: 30 * time.Second, wantState: store.StateActive},
		{name: "two steps off is a clock error", advance: time.Minute, codeAt: -60 * time.Second,
			wantErr: []error{ErrBadCode}, wantClock: -2, wantState: store.StatePending},
		{name: "4 minutes ahead", advance: time.Minute, codeAt: 4 * time.Minute,
			wantErr: []error{ErrBadCode}, wantClock: 8, wantState: store.StatePending},
		{name: "3 minutes behind", advance: time.Minute, codeAt: -3 * time.Minute,
			wantErr: []error{ErrBadCode}, wantClock: -6, wantState: store.StatePending},
		{name: "15 minutes off is just wrong", advance: time.Minute, codeAt: 15 * time.Minute,
			wantErr: []error{ErrBadCode, totp.ErrMismatch}, wantState: store.StatePending},
		{name: "wrong code", code: "wrong!", wantErr: []error{ErrBadCode, totp.ErrMalformed}, wantState: store.StatePending},
		{name: "five digits", code: "12345", wantErr: []error{ErrBadCode, totp.ErrMalformed}, wantState: store.StatePending},
		{name: "already used step", lastStep: totp.Step(t0) + 1,
			wantErr: []error{ErrBadCode, totp.ErrReplay}, wantState: store.StatePending},
		{name: "expired", advance: 10 * time.Minute, wantErr: []error{ErrExpired}, wantState: store.StateNone},
		{name: "nothing pending", noBegin: true, wantErr: []error{ErrNoPending}, wantState: store.StateNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: t0}
			s := newService(t, clock, nil)
			var secret []byte
			var binding Binding
			if !tt.noBegin {
				var l Link
				l, binding = mustBegin(t, s, "alice")
				secret = decodeSecret(t, l.Secret)
			}
			if tt.lastStep != 0 {
				if err := s.Store.Update("alice", func(u *store.User) error { u.LastStep = tt.lastStep; return nil }); err != nil {
					t.Fatal(err)
				}
			}
			clock.t = clock.t.Add(tt.advance)
			code := tt.code
			if code == "" {
				code = codeAt(secret, clock.t.Add(tt.codeAt))
			}

			codes, err := s.Confirm(context.Background(), "alice", binding, code)
			if (err == nil) != (len(codes) == RecoveryCodes) {
				t.Errorf("Confirm returned %d recovery codes with error %v; want %d exactly on success", len(codes), err, RecoveryCodes)
			}
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("Confirm error = %v, want %v", err, want)
				}
			}
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Confirm: %v", err)
			}
			ce, isClock := errors.AsType[*ClockError](err)
			switch {
			case tt.wantClock == 0 && isClock:
				t.Errorf("Confirm error = %v, a clock error; want none", err)
			case tt.wantClock != 0 && (!isClock || ce.Steps != tt.wantClock):
				t.Errorf("Confirm error = %#v, want a clock error of %d steps", err, tt.wantClock)
			}
			u := peek(t, s.Store, "alice")
			if tt.wantClock != 0 && (u.DriftSteps != tt.wantClock || !u.DriftAt.Equal(clock.t) || u.ConfirmTries != 1) {
				t.Errorf("after a clock error the record has drift %d at %v, %d tries; want %d at %v and the try counted",
					u.DriftSteps, u.DriftAt, u.ConfirmTries, tt.wantClock, clock.t)
			}
			if u.State != tt.wantState {
				t.Fatalf("state = %s, want %s", u.State, tt.wantState)
			}
			switch tt.wantState {
			case store.StateActive:
				step := totp.Step(clock.t.Add(tt.codeAt))
				if u.LastStep != step || !u.EnrolledAt.Equal(clock.t) {
					t.Errorf("LastStep %d EnrolledAt %v, want %d and %v", u.LastStep, u.EnrolledAt, step, clock.t)
				}
				if len(u.Recovery) != RecoveryCodes {
					t.Errorf("%d recovery code hashes stored, want %d", len(u.Recovery), RecoveryCodes)
				}
				// The confirming code counts as used: the login check refuses it ...
				if _, err := totp.Verify(u.Secret, code, clock.t, s.Skew, u.LastStep); !errors.Is(err, totp.ErrReplay) {
					t.Errorf("login check of the confirming code: %v, want ErrReplay", err)
				}
				// ... and confirming again finds nothing pending.
				if _, err := s.Confirm(context.Background(), "alice", binding, code); !errors.Is(err, ErrNoPending) {
					t.Errorf("second Confirm with the same code: %v, want ErrNoPending", err)
				}
			case store.StatePending:
				if !bytes.Equal(u.Secret, secret) {
					t.Error("a failed Confirm changed the pending secret")
				}
			case store.StateNone:
				if u.Secret != nil {
					t.Error("an expired link kept its secret")
				}
				if !tt.noBegin {
					// A new link may start at once, with a new secret.
					l, _ := mustBegin(t, s, "alice")
					if bytes.Equal(decodeSecret(t, l.Secret), secret) {
						t.Error("the new link reused the expired secret")
					}
				}
			}
		})
	}
}

func TestConfirmBadName(t *testing.T) {
	s := newService(t, &fakeClock{t: t0}, nil)
	for _, name := range []string{"", "-x", "a b", "ä"} {
		if _, err := s.Confirm(context.Background(), name, "x", "123456"); !errors.Is(err, store.ErrBadName) {
			t.Errorf("Confirm(%q) = %v, want ErrBadName", name, err)
		}
	}
}

// TestSetSkew: a config reload's totp.skew applies to the confirmations that follow.
func TestSetSkew(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	link, b := mustBegin(t, s, "alice")
	secret := decodeSecret(t, link.Secret)
	s.SetSkew(0)
	// One step ahead: accepted with skew 1, refused with skew 0.
	if _, err := s.Confirm(context.Background(), "alice", b, codeAt(secret, t0.Add(30*time.Second))); !errors.Is(err, ErrBadCode) {
		t.Fatalf("Confirm with a code one step ahead after SetSkew(0) = %v, want ErrBadCode", err)
	}
	s.SetSkew(1)
	if _, err := s.Confirm(context.Background(), "alice", b, codeAt(secret, t0.Add(30*time.Second))); err != nil {
		t.Fatalf("Confirm with a code one step ahead after SetSkew(1): %v", err)
	}
}
