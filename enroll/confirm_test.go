package enroll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
)

// wrongCodeAt returns a well-formed code that matches none of secret's steps within ±1 of at.
func wrongCodeAt(secret []byte, at time.Time) string {
	valid := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		valid[codeAt(secret, at.Add(d))] = true
	}
	for i := 0; ; i++ {
		if c := fmt.Sprintf("%06d", (123456+i*7919)%1_000_000); !valid[c] {
			return c
		}
	}
}

// kinds returns the kinds of user's audit events, oldest first.
func kinds(t *testing.T, st store.Store, user string) []string {
	t.Helper()
	var out []string
	for _, e := range events(t, st, user) {
		out = append(out, e.Kind)
	}
	return out
}

func count(list []string, want string) int {
	n := 0
	for _, s := range list {
		if s == want {
			n++
		}
	}
	return n
}

// TestConfirmLimit: every code is counted in the store before it is checked, the count is
// committed even for a wrong code, MaxConfirmTries codes are checked and the attempt after them
// voids the link whatever it holds.
func TestConfirmLimit(t *testing.T) {
	tests := []struct {
		name   string
		wrong  int  // wrong codes typed first
		last   bool // then a valid code
		wantOK bool // the valid code links
	}{
		{name: "a good code on the last try links", wrong: MaxConfirmTries - 1, last: true, wantOK: true},
		{name: "a good code after the last try is not checked", wrong: MaxConfirmTries, last: true},
		{name: "a wrong code after the last try voids", wrong: MaxConfirmTries + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: t0}
			var logBuf bytes.Buffer
			s := newService(t, clock, slog.New(slog.NewTextHandler(&logBuf, nil)))
			ctx := WithActor(context.Background(), "test")
			l, b := mustBegin(t, s, "alice")
			secret := decodeSecret(t, l.Secret)
			wrong := wrongCodeAt(secret, t0)

			var voided error
			for i := 1; i <= tt.wrong; i++ {
				_, err := s.Confirm(ctx, "alice", b, wrong)
				switch {
				case i <= MaxConfirmTries:
					if !errors.Is(err, ErrBadCode) {
						t.Fatalf("wrong code %d = %v, want ErrBadCode", i, err)
					}
					// Committed although the code was wrong.
					if got := peek(t, s.Store, "alice").ConfirmTries; got != i {
						t.Fatalf("after wrong code %d the store counts %d tries", i, got)
					}
				default:
					voided = err
				}
			}
			if tt.last {
				codes, err := s.Confirm(ctx, "alice", b, codeAt(secret, t0))
				if tt.wantOK {
					if err != nil || len(codes) != RecoveryCodes {
						t.Fatalf("good code after %d wrong ones = %d codes, %v; want it to link", tt.wrong, len(codes), err)
					}
					u := peek(t, s.Store, "alice")
					if u.State != store.StateActive || u.ConfirmTries != 0 || u.PendingBinding != nil {
						t.Errorf("after linking: state %s, tries %d, binding %x; want active, 0, none", u.State, u.ConfirmTries, u.PendingBinding)
					}
					return
				}
				voided = err
			}
			if !errors.Is(voided, ErrVoided) || voided.Error() != "too many wrong codes: this link was cancelled; start again" {
				t.Fatalf("attempt %d = %v, want ErrVoided with its message", MaxConfirmTries+1, voided)
			}
			u := peek(t, s.Store, "alice")
			if u.State != store.StateNone || u.Secret != nil || u.PendingBinding != nil || u.ConfirmTries != 0 {
				t.Errorf("voided link: state %s, secret %v, binding %x, tries %d; want none and nothing kept",
					u.State, u.Secret != nil, u.PendingBinding, u.ConfirmTries)
			}
			ev := events(t, s.Store, "alice")
			last := ev[len(ev)-1]
			if last.Kind != EventLinkVoided || last.Actor != "test" || !strings.Contains(last.Detail, "5 wrong codes tried") ||
				!strings.Contains(last.Detail, "dropped its secret") {
				t.Errorf("last audit event %+v, want %s by test saying why", last, EventLinkVoided)
			}
			if !strings.Contains(logBuf.String(), "link voided") {
				t.Errorf("log does not say the link was voided:\n%s", logBuf.String())
			}
			if _, err := s.Confirm(ctx, "alice", b, codeAt(secret, t0)); !errors.Is(err, ErrNoPending) {
				t.Errorf("Confirm after the void = %v, want ErrNoPending", err)
			}
			// Linking starts again with a new secret and a new binding.
			l2, b2 := mustBegin(t, s, "alice")
			if l2.Secret == l.Secret || b2 == b {
				t.Error("the new link reused the voided link's secret or binding")
			}
		})
	}
}

// TestConfirmConcurrentWrongCodes: however many wrong codes race, exactly MaxConfirmTries are
// checked, exactly one attempt voids the link and the audit log says so once.
func TestConfirmConcurrentWrongCodes(t *testing.T) {
	s := newService(t, &fakeClock{t: t0}, nil)
	l, b := mustBegin(t, s, "alice")
	wrong := wrongCodeAt(decodeSecret(t, l.Secret), t0)
	const n = 50
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Confirm(context.Background(), "alice", b, wrong)
		})
	}
	close(start)
	wg.Wait()
	var bad, voided, none int
	for _, err := range errs {
		switch {
		case errors.Is(err, ErrBadCode):
			bad++
		case errors.Is(err, ErrVoided):
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
	if u := peek(t, s.Store, "alice"); u.State != store.StateNone || u.Secret != nil {
		t.Errorf("state %s with secret %v, want none without", u.State, u.Secret != nil)
	}
	if got := count(kinds(t, s.Store, "alice"), EventLinkVoided); got != 1 {
		t.Errorf("%d %s events, want 1", got, EventLinkVoided)
	}
}

// TestConfirmBinding: only the binding Begin returned confirms; any other is refused before
// the code is counted or checked, so even a valid code does nothing.
func TestConfirmBinding(t *testing.T) {
	tests := []struct {
		name    string
		binding func(own, previous Binding) Binding
	}{
		{"none", func(Binding, Binding) Binding { return "" }},
		{"made up", func(Binding, Binding) Binding { return "ABCDEFGHIJKLMNOPQRSTUVWXYZ" }},
		{"own with a change", func(own, _ Binding) Binding { return own[:len(own)-1] + "x" }},
		{"the previous link's", func(_, previous Binding) Binding { return previous }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: t0}
			s := newService(t, clock, nil)
			_, previous := mustBegin(t, s, "alice")
			clock.t = clock.t.Add(11 * time.Minute) // the first link expires; Begin replaces it
			l, own := mustBegin(t, s, "alice")
			secret := decodeSecret(t, l.Secret)
			good := codeAt(secret, clock.t)
			for range MaxConfirmTries + 2 {
				codes, err := s.Confirm(context.Background(), "alice", tt.binding(own, previous), good)
				if !errors.Is(err, ErrStartedElsewhere) || codes != nil {
					t.Fatalf("Confirm = %d codes, %v; want ErrStartedElsewhere", len(codes), err)
				}
				if !strings.Contains(err.Error(), "only be confirmed in the browser session, SSH connection or enroll command that started it") {
					t.Errorf("message %q does not explain", err)
				}
			}
			u := peek(t, s.Store, "alice")
			if u.State != store.StatePending || u.ConfirmTries != 0 || u.LastStep != 0 {
				t.Fatalf("after foreign confirmations: state %s, tries %d, last step %d; want pending, 0, 0",
					u.State, u.ConfirmTries, u.LastStep)
			}
			if codes, err := s.Confirm(context.Background(), "alice", own, good); err != nil || len(codes) != RecoveryCodes {
				t.Errorf("the holder's Confirm = %d codes, %v", len(codes), err)
			}
		})
	}
}

// TestConfirmExpiredWithOtherBinding: an expired link is dead for everyone; whoever finds it
// drops it, as Begin would.
func TestConfirmExpiredWithOtherBinding(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	mustBegin(t, s, "alice")
	clock.t = clock.t.Add(10 * time.Minute)
	if _, err := s.Confirm(context.Background(), "alice", "other", "123456"); !errors.Is(err, ErrExpired) {
		t.Fatalf("Confirm = %v, want ErrExpired", err)
	}
	if u := peek(t, s.Store, "alice"); u.State != store.StateNone || u.PendingBinding != nil {
		t.Errorf("state %s binding %x, want none", u.State, u.PendingBinding)
	}
}

// TestBeginReplacesExhaustedLink: a link whose tries are used up can never be confirmed, so a
// new Begin (from any flow) voids it at once instead of waiting for it to expire; a link
// with tries left stays protected.
func TestBeginReplacesExhaustedLink(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	l, b := mustBegin(t, s, "alice")
	wrong := wrongCodeAt(decodeSecret(t, l.Secret), t0)
	for i := 1; i <= MaxConfirmTries; i++ {
		if _, err := s.Confirm(context.Background(), "alice", b, wrong); !errors.Is(err, ErrBadCode) {
			t.Fatalf("wrong code %d: %v", i, err)
		}
		if i < MaxConfirmTries {
			if _, _, err := s.Begin(context.Background(), "alice"); !errors.Is(err, ErrPending) {
				t.Fatalf("Begin after %d wrong codes = %v, want ErrPending", i, err)
			}
		}
	}
	l2, b2 := mustBegin(t, s, "alice")
	if l2.Secret == l.Secret {
		t.Error("the new link kept the exhausted secret")
	}
	if u := peek(t, s.Store, "alice"); u.ConfirmTries != 0 {
		t.Errorf("the new link starts with %d tries counted", u.ConfirmTries)
	}
	want := "link_started qr_shown link_voided link_started qr_shown"
	if got := strings.Join(kinds(t, s.Store, "alice"), " "); got != want {
		t.Errorf("audit %s, want %s", got, want)
	}
	if _, err := s.Confirm(context.Background(), "alice", b, codeAt(decodeSecret(t, l2.Secret), t0)); !errors.Is(err, ErrStartedElsewhere) {
		t.Errorf("the old binding on the new link = %v, want ErrStartedElsewhere", err)
	}
	if _, err := s.Confirm(context.Background(), "alice", b2, codeAt(decodeSecret(t, l2.Secret), t0)); err != nil {
		t.Errorf("the new link: %v", err)
	}
}

// TestConfirmSameGoodCodeTwice: linking clears the count and the binding, and the confirming
// code finds nothing pending afterwards.
func TestConfirmSameGoodCodeTwice(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	l, b := mustBegin(t, s, "alice")
	good := codeAt(decodeSecret(t, l.Secret), t0)
	if _, err := s.Confirm(context.Background(), "alice", b, good); err != nil {
		t.Fatal(err)
	}
	if u := peek(t, s.Store, "alice"); u.ConfirmTries != 0 || u.PendingBinding != nil || u.LastStep != totp.Step(t0) {
		t.Errorf("after linking: tries %d, binding %x, last step %d", u.ConfirmTries, u.PendingBinding, u.LastStep)
	}
	if _, err := s.Confirm(context.Background(), "alice", b, good); !errors.Is(err, ErrNoPending) {
		t.Errorf("again = %v, want ErrNoPending", err)
	}
}

func TestBindingHidden(t *testing.T) {
	_, b := mustBegin(t, newService(t, &fakeClock{t: t0}, nil), "alice")
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "binding", b)
	for what, s := range map[string]string{
		"%v": fmt.Sprintf("%v", b),
		//lint:ignore S1025 what fmt's %s verb prints is the point of the test
		"%s":  fmt.Sprintf("%s", b),
		"%#v": fmt.Sprintf("%#v", b),
		"%+v": fmt.Sprintf("%+v", struct{ B Binding }{b}),
		"log": logBuf.String(),
	} {
		if strings.Contains(s, string(b)) {
			t.Errorf("%s shows the binding: %s", what, s)
		}
	}
}
