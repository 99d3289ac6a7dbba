package enroll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
)

var errRefused = errors.New("refused")

// login checks code for user the way the front door does: a code of the linked device, newer
// than the last used step, recorded in the same transaction; anything else is a recovery code.
func login(s *Service, user string, at time.Time, code string) error {
	return s.Store.Update(user, func(u *store.User) error {
		if u.State != store.StateActive {
			return errRefused
		}
		if len(code) == 6 {
			step, err := totp.Verify(u.Secret, code, at, s.Skew, u.LastStep)
			if err != nil {
				return fmt.Errorf("%w: %w", errRefused, err)
			}
			u.LastStep = step
			return nil
		}
		if !VerifyRecovery(u, code) {
			return errRefused
		}
		return nil
	})
}

// replacing links alice at t0 and starts replacing her phone a minute later; it returns the old
// secret, the old recovery codes, the new secret and the replacement's binding.
func replacing(t *testing.T, s *Service, clock *fakeClock, ctx context.Context) (old []byte, oldCodes []string, next []byte, b Binding) {
	t.Helper()
	l, lb := mustBegin(t, s, "alice")
	old = decodeSecret(t, l.Secret)
	oldCodes, err := s.Confirm(context.Background(), "alice", lb, codeAt(old, clock.t))
	if err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	clock.t = clock.t.Add(time.Minute)
	nl, b, err := s.BeginReplace(ctx, "alice")
	if err != nil {
		t.Fatalf("BeginReplace: %v", err)
	}
	if nl.User != "alice" || nl.Issuer != "Example HPC" || !nl.ExpiresAt.Equal(clock.t.Add(10*time.Minute)) ||
		!strings.HasPrefix(nl.URI, "otpauth://totp/Example%20HPC:alice?secret="+nl.Secret) {
		t.Errorf("replacement link %+v", nl)
	}
	return old, oldCodes, decodeSecret(t, nl.Secret), b
}

// TestReplaceDevice: the old phone works until the new one is confirmed, then only the new one
// does; the old recovery codes go, the new ones work once; the confirming code cannot log in.
func TestReplaceDevice(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	ctx := WithDoor(WithActor(context.Background(), "portal"), store.DoorPortal)
	old, oldCodes, next, b := replacing(t, s, clock, ctx)
	if bytes.Equal(old, next) {
		t.Fatal("the replacement reuses the old secret")
	}
	// A key, and a network remembered for it after a code from the old phone.
	key := store.Key{Fingerprint: "SHA256:test", PublicKey: "ssh-ed25519 AAAA"}
	if err := s.Store.Update("alice", func(u *store.User) error {
		u.Keys = []store.Key{key}
		u.Remembered = []store.Remembered{{Fingerprint: key.Fingerprint, Network: "192.0.2.0/24", Until: clock.t.Add(time.Hour)}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	u := peek(t, s.Store, "alice")
	if u.State != store.StateActive || !bytes.Equal(u.Secret, old) || !bytes.Equal(u.NextSecret, next) ||
		!u.NextSince.Equal(clock.t) || u.ConfirmTries != 0 || !b.matches(u.PendingBinding) {
		t.Fatalf("during the replacement: %+v", u)
	}
	if got, _ := s.Store.Get("alice"); got.NextSecret != nil {
		t.Error("Get exposes the replacement secret")
	}

	// The old phone and an old recovery code keep working meanwhile; the new phone does not yet.
	clock.t = clock.t.Add(time.Minute)
	if err := login(s, "alice", clock.t, codeAt(old, clock.t)); err != nil {
		t.Fatalf("old phone during the replacement: %v", err)
	}
	if err := login(s, "alice", clock.t, oldCodes[0]); err != nil {
		t.Fatalf("old recovery code during the replacement: %v", err)
	}
	if err := login(s, "alice", clock.t.Add(30*time.Second), codeAt(next, clock.t.Add(30*time.Second))); !errors.Is(err, errRefused) {
		t.Fatalf("new phone before it is confirmed: %v, want refused", err)
	}

	// Confirmed at the next step (the old phone used this one).
	clock.t = clock.t.Add(30 * time.Second)
	confirming := codeAt(next, clock.t)
	codes, err := s.ConfirmReplace(ctx, "alice", b, confirming)
	if err != nil || len(codes) != RecoveryCodes {
		t.Fatalf("ConfirmReplace = %d codes, %v", len(codes), err)
	}
	u = peek(t, s.Store, "alice")
	if u.State != store.StateActive || !bytes.Equal(u.Secret, next) || u.NextSecret != nil || !u.NextSince.IsZero() ||
		u.PendingBinding != nil || u.ConfirmTries != 0 || u.LastStep != totp.Step(clock.t) || !u.EnrolledAt.Equal(clock.t) ||
		len(u.Recovery) != RecoveryCodes {
		t.Fatalf("after the replacement: %+v", u)
	}
	if len(u.Remembered) != 0 || len(u.Keys) != 1 {
		t.Errorf("after the replacement: remembered %+v, keys %+v; want the remembered network gone, the key kept", u.Remembered, u.Keys)
	}
	// The confirming code is used; the old phone's codes fail from now on, the new phone's work.
	if err := login(s, "alice", clock.t, confirming); !errors.Is(err, totp.ErrReplay) {
		t.Errorf("the confirming code at login: %v, want ErrReplay", err)
	}
	clock.t = clock.t.Add(30 * time.Second)
	if err := login(s, "alice", clock.t, codeAt(old, clock.t)); !errors.Is(err, totp.ErrMismatch) {
		t.Errorf("old phone after the replacement: %v, want ErrMismatch", err)
	}
	if err := login(s, "alice", clock.t, codeAt(next, clock.t)); err != nil {
		t.Errorf("new phone after the replacement: %v", err)
	}
	for i, c := range oldCodes {
		if err := login(s, "alice", clock.t, c); !errors.Is(err, errRefused) {
			t.Fatalf("old recovery code %d after the replacement: %v, want refused", i, err)
		}
	}
	if err := login(s, "alice", clock.t, codes[3]); err != nil {
		t.Errorf("new recovery code: %v", err)
	}
	if err := login(s, "alice", clock.t, codes[3]); !errors.Is(err, errRefused) {
		t.Errorf("new recovery code a second time: %v, want refused", err)
	}
	// Nothing is pending any more.
	if _, err := s.ConfirmReplace(ctx, "alice", b, codeAt(next, clock.t.Add(30*time.Second))); !errors.Is(err, ErrNoPending) {
		t.Errorf("ConfirmReplace again: %v, want ErrNoPending", err)
	}

	var got []string
	for _, e := range events(t, s.Store, "alice")[3:] { // after link_started, qr_shown, link_confirmed
		got = append(got, e.Kind+"/"+e.Actor+"/"+e.Door)
		if strings.Contains(e.Detail, totp.EncodeSecret(next)) {
			t.Errorf("event %+v shows the secret", e)
		}
	}
	want := "replace_started/portal/portal qr_shown/portal/portal device_replaced/portal/portal"
	if strings.Join(got, " ") != want {
		t.Errorf("audit = %s\nwant    %s", strings.Join(got, " "), want)
	}
}

// TestConfirmReplace: what one ConfirmReplace does with each kind of code; whatever fails
// leaves the old device linked and working.
func TestConfirmReplace(t *testing.T) {
	tests := []struct {
		name string
		// prepare runs after BeginReplace (clock at the replacement's start) and returns the
		// code to type; it may change the clock or the record.
		prepare   func(t *testing.T, s *Service, c *fakeClock, old, next []byte) string
		binding   Binding // "" = the replacement's own
		wantErr   []error
		wantClock int    // the *ClockError's Steps (0 = none)
		wantMsg   string // in the error
		wantTries int    // ConfirmTries after (when the replacement is still there)
		wantNext  bool   // the replacement is still pending after
	}{
		{name: "a code of the new phone", prepare: func(_ *testing.T, _ *Service, c *fakeClock, _, next []byte) string {
			return codeAt(next, c.t)
		}},
		{name: "the next step, within the skew", prepare: func(_ *testing.T, _ *Service, c *fakeClock, _, next []byte) string {
			return codeAt(next, c.t.Add(30*time.Second))
		}},
		{name: "a code of the old phone", prepare: func(_ *testing.T, _ *Service, c *fakeClock, old, _ []byte) string {
			return codeAt(old, c.t)
		}, wantErr: []error{ErrBadCode, ErrCurrentDeviceCode}, wantMsg: "from the phone linked now", wantTries: 1, wantNext: true},
		{name: "the phone 4 minutes ahead", prepare: func(_ *testing.T, _ *Service, c *fakeClock, _, next []byte) string {
			return codeAt(next, c.t.Add(4*time.Minute))
		}, wantErr: []error{ErrBadCode}, wantClock: 8, wantMsg: "Your phone's clock is about 4 minutes fast. Turn on automatic date and time on the phone, then try a new code.",
			wantTries: 1, wantNext: true},
		{name: "the phone 3 minutes behind", prepare: func(_ *testing.T, _ *Service, c *fakeClock, _, next []byte) string {
			return codeAt(next, c.t.Add(-3*time.Minute))
		}, wantErr: []error{ErrBadCode}, wantClock: -6, wantMsg: "Your phone's clock is about 3 minutes slow. Turn on automatic date and time on the phone, then try a new code.",
			wantTries: 1, wantNext: true},
		{name: "the phone 15 minutes off", prepare: func(_ *testing.T, _ *Service, c *fakeClock, _, next []byte) string {
			return codeAt(next, c.t.Add(15*time.Minute))
		}, wantErr: []error{ErrBadCode, totp.ErrMismatch}, wantTries: 1, wantNext: true},
		{name: "malformed", prepare: func(*testing.T, *Service, *fakeClock, []byte, []byte) string { return "12 34" },
			wantErr: []error{ErrBadCode, totp.ErrMalformed}, wantTries: 1, wantNext: true},
		{name: "a step the old phone already used", prepare: func(t *testing.T, s *Service, c *fakeClock, old, next []byte) string {
			if err := login(s, "alice", c.t, codeAt(old, c.t.Add(30*time.Second))); err != nil {
				t.Fatal(err)
			}
			return codeAt(next, c.t)
		}, wantErr: []error{ErrBadCode, totp.ErrReplay}, wantTries: 1, wantNext: true},
		{name: "another binding", binding: "someone else's", prepare: func(_ *testing.T, _ *Service, c *fakeClock, _, next []byte) string {
			return codeAt(next, c.t)
		}, wantErr: []error{ErrStartedElsewhere}, wantTries: 0, wantNext: true},
		{name: "expired", prepare: func(_ *testing.T, _ *Service, c *fakeClock, _, next []byte) string {
			c.t = c.t.Add(10 * time.Minute)
			return codeAt(next, c.t)
		}, wantErr: []error{ErrExpired}, wantMsg: "your current phone still works"},
		{name: "cancelled", prepare: func(t *testing.T, s *Service, c *fakeClock, _, next []byte) string {
			if err := s.Store.Update("alice", func(u *store.User) error { dropNext(u); return nil }); err != nil {
				t.Fatal(err)
			}
			return codeAt(next, c.t)
		}, wantErr: []error{ErrNoPending}, wantMsg: "no phone replacement is in progress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: t0}
			s := newService(t, clock, nil)
			old, _, next, own := replacing(t, s, clock, context.Background())
			code := tt.prepare(t, s, clock, old, next)
			b := own
			if tt.binding != "" {
				b = tt.binding
			}
			codes, err := s.ConfirmReplace(context.Background(), "alice", b, code)
			u := peek(t, s.Store, "alice")
			if tt.wantErr == nil {
				if err != nil || len(codes) != RecoveryCodes {
					t.Fatalf("ConfirmReplace = %d codes, %v", len(codes), err)
				}
				if !bytes.Equal(u.Secret, next) || u.NextSecret != nil {
					t.Error("the new secret is not the linked one")
				}
				return
			}
			if codes != nil {
				t.Errorf("a failed ConfirmReplace returned %d codes", len(codes))
			}
			for _, w := range tt.wantErr {
				if !errors.Is(err, w) {
					t.Errorf("ConfirmReplace = %v, want %v", err, w)
				}
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("message %q does not say %q", err, tt.wantMsg)
			}
			ce, isClock := errors.AsType[*ClockError](err)
			if (tt.wantClock != 0) != isClock || isClock && ce.Steps != tt.wantClock {
				t.Errorf("ConfirmReplace = %#v, want a clock error of %d steps (0: none)", err, tt.wantClock)
			}
			if isClock && (u.DriftSteps != tt.wantClock || !u.DriftAt.Equal(clock.t)) {
				t.Errorf("drift recorded %d at %v, want %d at %v", u.DriftSteps, u.DriftAt, tt.wantClock, clock.t)
			}
			// The old device is untouched.
			if u.State != store.StateActive || !bytes.Equal(u.Secret, old) {
				t.Fatalf("after a failed ConfirmReplace: state %s, old secret kept %v", u.State, bytes.Equal(u.Secret, old))
			}
			if got := u.NextSecret != nil; got != tt.wantNext {
				t.Errorf("replacement still pending = %v, want %v", got, tt.wantNext)
			}
			if tt.wantNext && (u.ConfirmTries != tt.wantTries || !bytes.Equal(u.NextSecret, next)) {
				t.Errorf("%d tries counted, want %d; next secret kept %v", u.ConfirmTries, tt.wantTries, bytes.Equal(u.NextSecret, next))
			}
			if !tt.wantNext && (u.PendingBinding != nil || !u.NextSince.IsZero() || u.ConfirmTries != 0) {
				t.Errorf("a dropped replacement left %+v", u)
			}
		})
	}
}

// TestConfirmReplaceLimit: MaxConfirmTries codes are checked, the attempt after them cancels the
// replacement; the old device stays linked.
func TestConfirmReplaceLimit(t *testing.T) {
	tests := []struct {
		name   string
		wrong  int
		wantOK bool
	}{
		{name: "a good code on the last try replaces", wrong: MaxConfirmTries - 1, wantOK: true},
		{name: "a good code after the last try is not checked", wrong: MaxConfirmTries},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: t0}
			s := newService(t, clock, nil)
			old, _, next, b := replacing(t, s, clock, context.Background())
			wrong := wrongCodeAt(next, clock.t)
			for i := 1; i <= tt.wrong; i++ {
				if _, err := s.ConfirmReplace(context.Background(), "alice", b, wrong); !errors.Is(err, ErrBadCode) {
					t.Fatalf("wrong code %d = %v", i, err)
				}
				if got := peek(t, s.Store, "alice").ConfirmTries; got != i {
					t.Fatalf("after wrong code %d: %d tries stored", i, got)
				}
			}
			codes, err := s.ConfirmReplace(context.Background(), "alice", b, codeAt(next, clock.t))
			u := peek(t, s.Store, "alice")
			if tt.wantOK {
				if err != nil || len(codes) != RecoveryCodes || !bytes.Equal(u.Secret, next) {
					t.Fatalf("good code on the last try = %d codes, %v", len(codes), err)
				}
				return
			}
			if !errors.Is(err, ErrReplaceVoided) || !errors.Is(err, ErrVoided) ||
				err.Error() != "too many wrong codes: the phone replacement was cancelled; your current phone still works; start again" {
				t.Fatalf("attempt %d = %v, want ErrReplaceVoided", MaxConfirmTries+1, err)
			}
			if u.State != store.StateActive || !bytes.Equal(u.Secret, old) || u.NextSecret != nil || u.ConfirmTries != 0 || u.PendingBinding != nil {
				t.Errorf("after the void: %+v", u)
			}
			if err := login(s, "alice", clock.t.Add(30*time.Second), codeAt(old, clock.t.Add(30*time.Second))); err != nil {
				t.Errorf("old phone after the void: %v", err)
			}
			ev := events(t, s.Store, "alice")
			if last := ev[len(ev)-1]; last.Kind != store.EventReplaceVoided || !strings.Contains(last.Detail, "5 wrong codes") {
				t.Errorf("last event %+v, want %s", last, store.EventReplaceVoided)
			}
			// A new replacement can start at once.
			if _, _, err := s.BeginReplace(context.Background(), "alice"); err != nil {
				t.Errorf("BeginReplace after the void: %v", err)
			}
		})
	}
}

// TestConfirmReplaceConcurrentWrongCodes: 50 wrong codes at once: exactly MaxConfirmTries are
// checked, one attempt voids the replacement, and the user stays active with the old secret.
func TestConfirmReplaceConcurrentWrongCodes(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	old, _, next, b := replacing(t, s, clock, context.Background())
	wrong := wrongCodeAt(next, clock.t)
	const n = 50
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.ConfirmReplace(context.Background(), "alice", b, wrong)
		})
	}
	close(start)
	wg.Wait()
	var bad, voided, none int
	for _, err := range errs {
		switch {
		case errors.Is(err, ErrBadCode):
			bad++
		case errors.Is(err, ErrReplaceVoided):
			voided++
		case errors.Is(err, ErrNoPending):
			none++
		default:
			t.Errorf("unexpected result %v", err)
		}
	}
	if bad != MaxConfirmTries || voided != 1 || none != n-MaxConfirmTries-1 {
		t.Errorf("%d codes checked, %d voids, %d found nothing pending; want %d, 1, %d",
			bad, voided, none, MaxConfirmTries, n-MaxConfirmTries-1)
	}
	if u := peek(t, s.Store, "alice"); u.State != store.StateActive || !bytes.Equal(u.Secret, old) || u.NextSecret != nil {
		t.Errorf("state %s, old secret kept %v, replacement left %v; want active with the old secret only",
			u.State, bytes.Equal(u.Secret, old), u.NextSecret != nil)
	}
	if got := count(kinds(t, s.Store, "alice"), store.EventReplaceVoided); got != 1 {
		t.Errorf("%d %s events, want 1", got, store.EventReplaceVoided)
	}
}

// TestConfirmReplaceConcurrentGoodCode: the same good code twice at once replaces once.
func TestConfirmReplaceConcurrentGoodCode(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	_, _, next, b := replacing(t, s, clock, context.Background())
	code := codeAt(next, clock.t)
	const n = 4
	results := make([][]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = s.ConfirmReplace(context.Background(), "alice", b, code) })
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		if err == nil {
			if won >= 0 {
				t.Fatalf("two confirmations won")
			}
			won = i
		}
	}
	if won < 0 {
		t.Fatalf("no confirmation won: %v", errs)
	}
	u := peek(t, s.Store, "alice")
	if !VerifyRecovery(&u, results[won][0]) {
		t.Error("the winner's recovery codes are not the stored ones")
	}
	if got := count(kinds(t, s.Store, "alice"), store.EventDeviceReplaced); got != 1 {
		t.Errorf("%d %s events, want 1", got, store.EventDeviceReplaced)
	}
}

func TestBeginReplace(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, s *Service, c *fakeClock)
		wantErr   error
		wantMsg   string
		wantKinds string // the audit events BeginReplace wrote
	}{
		{name: "no device", setup: func(*testing.T, *Service, *fakeClock) {},
			wantErr: ErrNotLinked, wantMsg: "no device is linked for alice: link a device first"},
		{name: "a link pending", setup: func(t *testing.T, s *Service, _ *fakeClock) { mustBegin(t, s, "alice") },
			wantErr: ErrNotLinked, wantMsg: "a device link is pending; confirm it first"},
		{name: "active", setup: func(t *testing.T, s *Service, c *fakeClock) { linked(t, s, c) },
			wantKinds: "replace_started qr_shown"},
		{name: "a replacement pending", setup: func(t *testing.T, s *Service, c *fakeClock) {
			linked(t, s, c)
			if _, _, err := s.BeginReplace(context.Background(), "alice"); err != nil {
				t.Fatal(err)
			}
			c.t = c.t.Add(4 * time.Minute)
		}, wantErr: ErrPending, wantMsg: "start again after it expires at " + formatTime(t0.Add(10*time.Minute)) + " (in 6m0s)"},
		{name: "a replacement expired", setup: func(t *testing.T, s *Service, c *fakeClock) {
			linked(t, s, c)
			if _, _, err := s.BeginReplace(context.Background(), "alice"); err != nil {
				t.Fatal(err)
			}
			c.t = c.t.Add(10 * time.Minute)
		}, wantKinds: "replace_expired replace_started qr_shown"},
		{name: "a replacement out of tries", setup: func(t *testing.T, s *Service, c *fakeClock) {
			linked(t, s, c)
			_, b, err := s.BeginReplace(context.Background(), "alice")
			if err != nil {
				t.Fatal(err)
			}
			for range MaxConfirmTries {
				_, _ = s.ConfirmReplace(context.Background(), "alice", b, "000000")
			}
		}, wantKinds: "replace_voided replace_started qr_shown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: t0}
			s := newService(t, clock, nil)
			tt.setup(t, s, clock)
			before := peek(t, s.Store, "alice")
			n := len(events(t, s.Store, "alice"))
			ctx := WithDoor(context.Background(), store.DoorLinking)
			l, b, err := s.BeginReplace(ctx, "alice")
			after := peek(t, s.Store, "alice")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) || l != (Link{}) || b != "" {
					t.Fatalf("BeginReplace = %+v, %v; want %v saying %q", l, err, tt.wantErr, tt.wantMsg)
				}
				if !bytes.Equal(after.NextSecret, before.NextSecret) || !bytes.Equal(after.Secret, before.Secret) || after.ConfirmTries != before.ConfirmTries {
					t.Error("a refused BeginReplace changed the record")
				}
				if got := len(events(t, s.Store, "alice")); got != n {
					t.Errorf("a refused BeginReplace wrote %d events", got-n)
				}
				return
			}
			if err != nil {
				t.Fatalf("BeginReplace: %v", err)
			}
			if after.State != store.StateActive || !bytes.Equal(after.Secret, before.Secret) ||
				!bytes.Equal(after.NextSecret, decodeSecret(t, l.Secret)) || bytes.Equal(after.NextSecret, before.NextSecret) ||
				!after.NextSince.Equal(clock.t) || after.ConfirmTries != 0 || !b.matches(after.PendingBinding) ||
				after.LastStep != before.LastStep || len(after.Recovery) != len(before.Recovery) {
				t.Errorf("after BeginReplace: %+v", after)
			}
			var got []string
			for _, e := range events(t, s.Store, "alice")[n:] {
				got = append(got, e.Kind)
				if e.Door != store.DoorLinking || e.Actor != ActorConsole {
					t.Errorf("event %+v does not name its door and actor", e)
				}
			}
			if strings.Join(got, " ") != tt.wantKinds {
				t.Errorf("audit = %v, want %s", got, tt.wantKinds)
			}
		})
	}
}

func TestCancelReplace(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	if err := s.CancelReplace(context.Background(), "alice", "x"); !errors.Is(err, ErrNotLinked) {
		t.Errorf("CancelReplace without a device = %v, want ErrNotLinked", err)
	}
	old, _, _, b := replacing(t, s, clock, context.Background())
	if err := s.CancelReplace(context.Background(), "alice", "another"); !errors.Is(err, ErrStartedElsewhere) {
		t.Errorf("CancelReplace with another binding = %v, want ErrStartedElsewhere", err)
	}
	if u := peek(t, s.Store, "alice"); u.NextSecret == nil {
		t.Fatal("a foreign CancelReplace dropped the replacement")
	}
	ctx := WithDoor(WithActor(context.Background(), "uid 0"), store.DoorConsole)
	if err := s.CancelReplace(ctx, "alice", b); err != nil {
		t.Fatalf("CancelReplace: %v", err)
	}
	u := peek(t, s.Store, "alice")
	if u.State != store.StateActive || !bytes.Equal(u.Secret, old) || u.NextSecret != nil || !u.NextSince.IsZero() || u.PendingBinding != nil {
		t.Errorf("after CancelReplace: %+v", u)
	}
	ev := events(t, s.Store, "alice")
	if last := ev[len(ev)-1]; last.Kind != store.EventReplaceCancelled || last.Actor != "uid 0" || last.Door != store.DoorConsole {
		t.Errorf("last event %+v, want replace_cancelled by uid 0 on the console", last)
	}
	if err := s.CancelReplace(ctx, "alice", b); !errors.Is(err, ErrNoPending) {
		t.Errorf("CancelReplace again = %v, want ErrNoPending", err)
	}
	// A new replacement may start at once.
	if _, _, err := s.BeginReplace(ctx, "alice"); err != nil {
		t.Errorf("BeginReplace after a cancel: %v", err)
	}
}

func TestRenewRecovery(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	if _, err := s.RenewRecovery(context.Background(), "alice"); !errors.Is(err, ErrNotLinked) {
		t.Errorf("RenewRecovery without a device = %v, want ErrNotLinked", err)
	}
	mustBegin(t, s, "bob")
	if _, err := s.RenewRecovery(context.Background(), "bob"); !errors.Is(err, ErrNotLinked) {
		t.Errorf("RenewRecovery with a link pending = %v, want ErrNotLinked", err)
	}
	if _, err := s.RenewRecovery(context.Background(), "../x"); !errors.Is(err, store.ErrBadName) {
		t.Errorf("RenewRecovery with a bad name = %v", err)
	}
	old := linked(t, s, clock)
	if err := login(s, "alice", clock.t, old[0]); err != nil {
		t.Fatal(err)
	}
	before := peek(t, s.Store, "alice")
	ctx := WithDoor(WithActor(context.Background(), "portal"), store.DoorPortal)
	codes, err := s.RenewRecovery(ctx, "alice")
	if err != nil || len(codes) != RecoveryCodes {
		t.Fatalf("RenewRecovery = %d codes, %v", len(codes), err)
	}
	for _, c := range codes {
		if !recoveryCodeRE.MatchString(c) {
			t.Errorf("code %q has the wrong shape", c)
		}
	}
	after := peek(t, s.Store, "alice")
	if !bytes.Equal(after.Secret, before.Secret) || after.LastStep != before.LastStep || after.State != store.StateActive {
		t.Error("RenewRecovery changed more than the recovery codes")
	}
	for i, c := range old[1:] {
		if err := login(s, "alice", clock.t, c); !errors.Is(err, errRefused) {
			t.Fatalf("old code %d after renewal: %v, want refused", i+1, err)
		}
	}
	for i, c := range codes {
		if err := login(s, "alice", clock.t, c); err != nil {
			t.Fatalf("new code %d: %v", i, err)
		}
		if err := login(s, "alice", clock.t, c); !errors.Is(err, errRefused) {
			t.Fatalf("new code %d twice: %v, want refused", i, err)
		}
	}
	ev := events(t, s.Store, "alice")
	last := ev[len(ev)-1]
	if last.Kind != store.EventRecoveryRenewed || last.Actor != "portal" || last.Door != store.DoorPortal ||
		last.Detail != "10 new recovery codes issued; the 9 left from before are void" {
		t.Errorf("last event %+v, want recovery_renewed by the portal", last)
	}
	for _, c := range codes {
		if strings.Contains(last.Detail, c) {
			t.Error("the audit log shows a recovery code")
		}
	}
}

func TestSecurityLog(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	for i := range 30 {
		user := "alice"
		if i%3 == 0 {
			user = "bob"
		}
		if err := s.Store.Append(store.Event{Kind: store.EventLoginRefused, User: user, Remote: fmt.Sprintf("192.0.2.%d", i), Door: store.DoorSSH}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		n         int
		wantLen   int
		wantFirst string // the newest event's remote
	}{
		{n: 5, wantLen: 5, wantFirst: "192.0.2.29"},
		{n: 0, wantLen: SecurityLogSize, wantFirst: "192.0.2.29"},
		{n: -1, wantLen: SecurityLogSize, wantFirst: "192.0.2.29"},
		{n: 100, wantLen: 20, wantFirst: "192.0.2.29"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			ev, err := s.SecurityLog(context.Background(), "alice", tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if len(ev) != tt.wantLen || ev[0].Remote != tt.wantFirst {
				t.Fatalf("SecurityLog(%d) = %d events, first %+v", tt.n, len(ev), ev[0])
			}
			for i, e := range ev {
				if e.User != "alice" {
					t.Errorf("event %+v is someone else's", e)
				}
				if i > 0 && e.Seq >= ev[i-1].Seq {
					t.Errorf("not newest first at %d", i)
				}
			}
		})
	}
	if _, err := s.SecurityLog(context.Background(), "a/b", 5); !errors.Is(err, store.ErrBadName) {
		t.Errorf("SecurityLog with a bad name = %v", err)
	}
	if ev, err := s.SecurityLog(context.Background(), "carol", 5); err != nil || len(ev) != 0 {
		t.Errorf("SecurityLog of a user without events = %v, %v", ev, err)
	}
}

func TestDoorFrom(t *testing.T) {
	ctx := context.Background()
	if got := DoorFrom(ctx); got != "" {
		t.Errorf("DoorFrom(background) = %q, want \"\"", got)
	}
	if got := DoorFrom(WithDoor(ctx, store.DoorSSH)); got != store.DoorSSH {
		t.Errorf("DoorFrom = %q", got)
	}
	// Every event of the first link names the door too.
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	dctx := WithDoor(ctx, store.DoorPortal)
	l, b, err := s.Begin(dctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Confirm(dctx, "alice", b, codeAt(decodeSecret(t, l.Secret), clock.t)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Ticket(dctx, "bob", ""); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "bob"} {
		for _, e := range events(t, s.Store, user) {
			if e.Door != store.DoorPortal {
				t.Errorf("event %+v does not name the portal", e)
			}
		}
	}
}

func TestClockErrorMessage(t *testing.T) {
	tests := []struct {
		steps int
		want  string
	}{
		{8, "about 4 minutes fast"},
		{-6, "about 3 minutes slow"},
		{2, "about 1 minute fast"},
		{-2, "about 1 minute slow"},
		{3, "about 2 minutes fast"}, // 1.5 rounds up
		{-7, "about 4 minutes slow"},
		{20, "about 10 minutes fast"},
		{1, "about 1 minute fast"}, // never "0 minutes"
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.steps), func(t *testing.T) {
			err := error(&ClockError{Steps: tt.steps})
			want := "Your phone's clock is " + tt.want + ". Turn on automatic date and time on the phone, then try a new code."
			if err.Error() != want {
				t.Errorf("message %q, want %q", err, want)
			}
			if !errors.Is(err, ErrBadCode) {
				t.Error("a clock error does not match ErrBadCode")
			}
			if wrapped := fmt.Errorf("x: %w", err); !errors.Is(wrapped, ErrBadCode) {
				t.Error("a wrapped clock error does not match ErrBadCode")
			}
		})
	}
}
