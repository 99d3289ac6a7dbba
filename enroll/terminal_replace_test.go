package enroll

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// startReplace runs TerminalReplace for alice against svc with pipes.
func startReplace(t *testing.T, svc *Service) *session {
	t.Helper()
	return startFlow(t, func(in io.Reader, out io.Writer) error {
		return TerminalReplace(context.Background(), svc, "alice", in, out)
	})
}

// TestTerminalReplace: the console replacement shows the new secret, explains a clock that is
// off and a code from the old phone, and on a good code prints the new recovery codes.
func TestTerminalReplace(t *testing.T) {
	clock := &fakeClock{t: t0}
	svc := newService(t, clock, nil)
	oldCodes := linked(t, svc, clock)
	old := peek(t, svc.Store, "alice").Secret
	clock.t = clock.t.Add(time.Minute)

	s := startReplace(t, svc)
	next := decodeSecret(t, strings.ReplaceAll(s.waitLine(t, "Secret: "), " ", ""))
	s.typeLine(t, codeAt(next, clock.t.Add(4*time.Minute)))
	s.waitLine(t, "Code from your app: Your phone's clock is about 4 minutes fast. Turn on automatic date and time on the phone, then try a new code.")
	s.typeLine(t, codeAt(next, clock.t.Add(-3*time.Minute)))
	s.waitLine(t, "Code from your app: Your phone's clock is about 3 minutes slow.")
	s.typeLine(t, codeAt(old, clock.t))
	s.waitLine(t, "Code from your app: That code is from the phone linked now. Type a code from the app on the new phone.")
	// The old phone still works while the flow waits.
	if err := login(svc, "alice", clock.t.Add(30*time.Second), codeAt(old, clock.t.Add(30*time.Second))); err != nil {
		t.Fatalf("old phone during the replacement: %v", err)
	}
	// The new phone's code of the window that login used: used already, and said so.
	s.typeLine(t, codeAt(next, clock.t.Add(30*time.Second)))
	s.waitLine(t, "Code from your app: That code was used already (each code works once, across phones too). Wait for the next code in the app, then type it.")
	clock.t = clock.t.Add(time.Minute)
	s.typeLine(t, codeAt(next, clock.t))
	out, err := s.finish(t)
	if err != nil {
		t.Fatalf("TerminalReplace: %v\n%s", err, out)
	}
	for _, want := range []string{
		"Replacing the authenticator app of alice.\n",
		"The phone linked now keeps working until a code from the new one is confirmed here.\n",
		"Scan this QR code with the app on the new phone. It is shown only once.\n",
		"Code from your app: Device replaced for alice. From now on only codes from the new phone work; " +
			"the old phone's codes and the old recovery codes no longer do.\n",
		"Your recovery codes (shown only this once):",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if len(qrBlock(out)) < 10 {
		t.Errorf("no QR code drawn:\n%s", out)
	}
	codes := printedCodes(out)
	if len(codes) != RecoveryCodes {
		t.Fatalf("printed %d recovery codes, want %d", len(codes), RecoveryCodes)
	}
	u := peek(t, svc.Store, "alice")
	if !bytes.Equal(u.Secret, next) || u.NextSecret != nil {
		t.Error("the new phone is not the linked one")
	}
	if !VerifyRecovery(&u, codes[0]) || VerifyRecovery(&u, oldCodes[0]) {
		t.Error("the printed codes are not the stored ones, or an old one still works")
	}
}

// TestTerminalReplaceEnds: a replacement flow that ends without a code cancels its replacement,
// so that another can start at once; one voided by wrong codes is over anyway.
func TestTerminalReplaceEnds(t *testing.T) {
	tests := []struct {
		name    string
		input   func(next []byte) string
		wantErr string
		wantIs  error
		cancel  bool // replace_cancelled audited
	}{
		{name: "no input", input: func([]byte) string { return "" },
			wantErr: "no code given; the replacement was cancelled and your current phone keeps working", cancel: true},
		{name: "wrong codes", input: func(next []byte) string {
			return strings.Repeat(wrongCodeAt(next, t0.Add(time.Minute))+"\n", MaxConfirmTries+1)
		}, wantErr: ErrReplaceVoided.Error(), wantIs: ErrVoided},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: t0}
			svc := newService(t, clock, nil)
			linked(t, svc, clock)
			old := peek(t, svc.Store, "alice").Secret
			clock.t = clock.t.Add(time.Minute)
			// The secret is only known once shown, so the input is fed after it.
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			done := make(chan error, 1)
			go func() {
				done <- TerminalReplace(context.Background(), svc, "alice", inR, outW)
				outW.Close()
			}()
			var out strings.Builder
			buf := make([]byte, 4096)
			for !strings.Contains(out.String(), "Code from your app: ") {
				n, err := outR.Read(buf)
				if err != nil {
					t.Fatalf("output ended: %v\n%s", err, out.String())
				}
				out.Write(buf[:n])
			}
			next := peek(t, svc.Store, "alice").NextSecret
			go func() {
				io.WriteString(inW, tt.input(next))
				inW.Close()
			}()
			go io.Copy(io.Discard, outR)
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("TerminalReplace did not return")
			}
			if err == nil || err.Error() != tt.wantErr || tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("TerminalReplace = %v, want %q", err, tt.wantErr)
			}
			u := peek(t, svc.Store, "alice")
			if u.State != store.StateActive || !bytes.Equal(u.Secret, old) || u.NextSecret != nil {
				t.Errorf("after the flow: state %s, old secret kept %v, replacement left %v", u.State, bytes.Equal(u.Secret, old), u.NextSecret != nil)
			}
			if got := count(kinds(t, svc.Store, "alice"), store.EventReplaceCancelled); got != map[bool]int{true: 1}[tt.cancel] {
				t.Errorf("%d replace_cancelled events", got)
			}
		})
	}
}

func TestTerminalReplaceRefused(t *testing.T) {
	svc := newService(t, &fakeClock{t: t0}, nil)
	var out strings.Builder
	err := TerminalReplace(context.Background(), svc, "alice", strings.NewReader("123456\n"), &out)
	if !errors.Is(err, ErrNotLinked) || out.Len() != 0 {
		t.Errorf("TerminalReplace without a device = %v, printed %q; want ErrNotLinked and nothing", err, out.String())
	}
}

// TestTerminalClockMessage: the first link explains a phone clock that is off, too.
func TestTerminalClockMessage(t *testing.T) {
	clock := &fakeClock{t: t0}
	svc := newService(t, clock, nil)
	s := startTerminal(t, svc, "alice")
	secret := decodeSecret(t, strings.ReplaceAll(s.waitLine(t, "Secret: "), " ", ""))
	s.typeLine(t, codeAt(secret, clock.t.Add(-3*time.Minute)))
	s.waitLine(t, "Code from your app: Your phone's clock is about 3 minutes slow. Turn on automatic date and time on the phone, then try a new code.")
	s.typeLine(t, codeAt(secret, clock.t))
	if out, err := s.finish(t); err != nil || !strings.Contains(out, "Device linked for alice.") {
		t.Errorf("Terminal = %v\n%s", err, out)
	}
}
