package sshlink

import (
	"context"
	"strings"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// linkedSession links a device for alice, signs in with both factors and starts a session (a
// shell, with a pty if pty); it returns the session, the device's secret and recovery codes.
func linkedSession(e *env, pty bool) (cs *clientSession, secret string, recovery []string) {
	e.t.Helper()
	secret, recovery = e.link(testUser)
	c := e.mustDialCode(testUser, testPassword, "", e.code(testUser, secret))
	cs = startSession(e.t, c, pty, "")
	cs.waitFor(promptChoice)
	return cs, secret, recovery
}

// enter is the line end the session's client sends: Enter on a pty, a newline on a pipe.
func enter(pty bool) string {
	if pty {
		return "\r"
	}
	return "\n"
}

func TestMenu(t *testing.T) {
	t.Parallel()
	for _, pty := range []bool{true, false} {
		name := map[bool]string{true: "pty", false: "no pty"}[pty]
		nl := enter(pty)
		t.Run(name, func(t *testing.T) {
			t.Parallel()

			t.Run("shown to a linked user; quit", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				linking := e.now()
				cs, _, _ := linkedSession(e, pty)
				linked := e.now()
				cs.write("x" + nl)
				cs.waitCount(promptChoice, 2)
				cs.write("9" + nl)
				cs.waitCount(promptChoice, 3)
				cs.write("3" + nl)
				exit, out := cs.wait()
				if exit != 0 {
					t.Errorf("exit %d, want 0", exit)
				}
				if !hasLinkDay(out, "linked (since ", ")", linking, linked) {
					t.Errorf("no \"linked (since DAY)\" with the day of the link in the output:\n%s", out)
				}
				for _, w := range []string{"Signed in as alice",
					"1) Replace this device (link a new phone)", "2) New recovery codes", "3) Quit", "Bye."} {
					if !strings.Contains(out, w) {
						t.Errorf("no %q in the output:\n%s", w, out)
					}
				}
				if n := strings.Count(out, msgBadChoice); n != 2 {
					t.Errorf("%d× %q, want 2:\n%s", n, msgBadChoice, out)
				}
				if strings.Contains(out, "otpauth") || e.linker.begins.Load() != 0 {
					t.Errorf("quitting started a link:\n%s", out)
				}
			})

			// The input ends: the client's stdin closes, or, on a pty, the user types ^D, which
			// the line editor takes as an abort (TestLineEditor).
			t.Run("input ends at the menu", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				cs, _, _ := linkedSession(e, pty)
				want := "No answer given, so nothing was changed."
				if pty {
					cs.write("\x04")
					want = "Aborted."
				} else {
					cs.stdin.Close()
				}
				if exit, out := cs.wait(); exit != 1 || !strings.Contains(out, want) {
					t.Errorf("exit %d, want 1 and %q in the output:\n%s", exit, want, out)
				}
				if e.linker.begins.Load() != 0 {
					t.Error("the input's end started a link")
				}
			})

			t.Run("new recovery codes", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				cs, _, old := linkedSession(e, pty)
				cs.write("2" + nl)
				cs.waitFor(promptRenew)
				cs.write("perhaps" + nl)
				cs.waitCount(promptRenew, 2)
				cs.write("y" + nl)
				exit, out := cs.wait()
				if exit != 0 || !strings.Contains(out, msgBadYesNo) || !strings.Contains(out, "Your recovery codes (shown only this once):") {
					t.Fatalf("exit %d, output:\n%s", exit, out)
				}
				codes := recoveryCodes(out)
				if len(codes) != 10 {
					t.Fatalf("%d recovery codes in the output, want 10:\n%s", len(codes), out)
				}
				if err := e.signIn(testUser, old[0]); err == nil {
					t.Error("an old recovery code still signs in")
				}
				if err := e.signIn(testUser, codes[0]); err != nil {
					t.Errorf("a new recovery code does not sign in: %v", err)
				}
				if err := e.signIn(testUser, codes[0]); err == nil {
					t.Error("a new recovery code signed in twice")
				}
				ev, _ := e.st.Events(store.EventQuery{User: testUser})
				if last := ev[len(ev)-1]; last.Kind != store.EventRecoveryRenewed || last.Door != store.DoorLinking {
					t.Errorf("last audit event %+v, want %s at door %s", last, store.EventRecoveryRenewed, store.DoorLinking)
				}
			})

			t.Run("new recovery codes: no", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				cs, _, old := linkedSession(e, pty)
				cs.write("2" + nl)
				cs.waitFor(promptRenew)
				cs.write(nl)
				exit, out := cs.wait()
				if exit != 0 || !strings.Contains(out, msgNothingChange) || len(recoveryCodes(out)) != 0 {
					t.Fatalf("exit %d, output:\n%s", exit, out)
				}
				if err := e.signIn(testUser, old[0]); err != nil {
					t.Errorf("an old recovery code no longer signs in: %v", err)
				}
			})

			t.Run("replace", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				cs, oldSecret, oldRecovery := linkedSession(e, pty)
				cs.write("1" + nl)
				cs.waitFor(promptEndSSH)
				cs.write("n" + nl)
				secret := secretFrom(t, cs.waitFor("Code from your app: "))
				if secret == oldSecret {
					t.Fatal("the replacement shows the old secret")
				}
				// Until the new phone is confirmed the old one works.
				if err := e.signIn(testUser, e.code(testUser, oldSecret)); err != nil {
					t.Errorf("the old phone stopped working before the new one was confirmed: %v", err)
				}
				cs.write(wrongCode(t, secret) + nl)
				cs.waitCount("Code from your app: ", 2)
				// A phone whose clock is 4 minutes fast.
				cs.write(codeAt(t, secret, e.now().Add(4*time.Minute)) + nl)
				cs.waitCount("Code from your app: ", 3)
				// Newer than the old phone's last code: a time step is used once, whichever phone.
				cs.write(e.code(testUser, secret) + nl)
				exit, out := cs.wait()
				if exit != 0 {
					t.Fatalf("exit %d, output:\n%s", exit, out)
				}
				for _, w := range []string{"Replacing the authenticator app of alice", "That code did not match.",
					"Your phone's clock is about 4 minutes fast.", "Device replaced for alice", "Your open SSH sessions keep running."} {
					if !strings.Contains(out, w) {
						t.Errorf("no %q in the output:\n%s", w, out)
					}
				}
				codes := recoveryCodes(out)
				if len(codes) != 10 {
					t.Errorf("%d recovery codes in the output, want 10", len(codes))
				}
				if err := e.signIn(testUser, e.code(testUser, oldSecret)); err == nil {
					t.Error("the old phone still signs in after the replacement")
				}
				if err := e.signIn(testUser, oldRecovery[0]); err == nil {
					t.Error("an old recovery code still signs in after the replacement")
				}
				if err := e.signIn(testUser, e.code(testUser, secret)); err != nil {
					t.Errorf("the new phone does not sign in: %v", err)
				}
				if len(codes) > 0 {
					if err := e.signIn(testUser, codes[0]); err != nil {
						t.Errorf("a new recovery code does not sign in: %v", err)
					}
				}
				if got := e.endCalls(); len(got) != 1 || got[0] != (endCall{testUser, false}) {
					t.Errorf("EndSessions calls %+v, want one for alice without SSH", got)
				}
				if strings.Contains(e.logs.String(), secret) {
					t.Error("the new secret is in the log")
				}
			})
		})
	}
}

// TestMenuReplaceEndsSessions: a user who says yes gets their SSH sessions ended; their other
// connections to the linking listener end in any case, with a message.
func TestMenuReplaceEndsSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cs, _, recovery := linkedSession(e, true)
	// A second menu session of the same user, signed in with a recovery code.
	other := startSession(t, e.mustDialCode(testUser, testPassword, "", recovery[0]), true, "")
	other.waitFor(promptChoice)
	bob := startSession(t, e.mustDial("bob", "bobs password", ""), true, "")
	bob.waitFor("Code from your app: ")

	cs.write("1\r")
	cs.waitFor(promptEndSSH)
	cs.write("Y\r")
	secret := secretFrom(t, cs.waitFor("Code from your app: "))
	cs.write(e.code(testUser, secret) + "\r")
	exit, out := cs.wait()
	if exit != 0 || !strings.Contains(out, "Your open SSH sessions were ended") {
		t.Fatalf("exit %d, output:\n%s", exit, out)
	}
	if got := e.endCalls(); len(got) != 1 || got[0] != (endCall{testUser, true}) {
		t.Errorf("EndSessions calls %+v, want one for alice with SSH", got)
	}
	if exit, out := other.wait(); exit != 1 || !strings.Contains(out, "Your device was replaced in another session") {
		t.Errorf("alice's other session: exit %d, output:\n%s", exit, out)
	}
	if bob.finished() {
		t.Error("bob's session ended too")
	}
}

// TestMenuReplaceCancelled: a replacement left without a code is cancelled, the old phone keeps
// working, and a new replacement can start at once.
func TestMenuReplaceCancelled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		idle    time.Duration
		drive   func(cs *clientSession, secret string)
		wantOut string
	}{
		{name: "ctrl-c", drive: func(cs *clientSession, _ string) { cs.write("12\x03") },
			wantOut: "Aborted. The phone replacement was cancelled; your current phone keeps working."},
		{name: "idle", idle: 2 * time.Second, drive: func(*clientSession, string) {},
			wantOut: "No code was entered for 2s, so the session ends. The phone replacement was cancelled; your current phone keeps working."},
		{name: "too many wrong codes", drive: func(cs *clientSession, secret string) {
			for i := 1; i <= enroll.MaxConfirmTries+1; i++ {
				cs.waitCount("Code from your app: ", i)
				cs.write(wrongCode(cs.t, secret) + "\r")
			}
		}, wantOut: "the phone replacement was cancelled; your current phone still works"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(e *env) { e.srv.IdleTimeout = tc.idle })
			cs, oldSecret, _ := linkedSession(e, true)
			cs.write("1\r")
			cs.waitFor(promptEndSSH)
			cs.write("\r")
			tc.drive(cs, secretFrom(t, cs.waitFor("Code from your app: ")))
			exit, out := cs.wait()
			if exit != 1 || !strings.Contains(out, tc.wantOut) {
				t.Errorf("exit %d, want 1 and %q in:\n%s", exit, tc.wantOut, out)
			}
			if err := e.signIn(testUser, e.code(testUser, oldSecret)); err != nil {
				t.Errorf("the old phone no longer works: %v", err)
			}
			if _, _, err := e.svc.BeginReplace(context.Background(), testUser); err != nil {
				t.Errorf("a new replacement cannot start: %v", err)
			}
			if len(e.endCalls()) != 0 {
				t.Errorf("sessions were ended: %+v", e.endCalls())
			}
		})
	}
}

// TestMenuIdle: the menu waits IdleTimeout for a choice.
func TestMenuIdle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(e *env) { e.srv.IdleTimeout = time.Second })
	cs, _, _ := linkedSession(e, true)
	if exit, out := cs.wait(); exit != 1 || !strings.Contains(out, "Nothing was typed for 1s, so the session ends.") {
		t.Errorf("exit %d, output:\n%s", exit, out)
	}
}

// TestMenuReset: an admin reset ends a session waiting at the menu.
func TestMenuReset(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cs, _, _ := linkedSession(e, false)
	if n := e.srv.EndUser(testUser); n != 1 {
		t.Errorf("EndUser = %d, want 1", n)
	}
	if exit, out := cs.wait(); exit != 1 || !strings.Contains(out, "An admin reset your account") {
		t.Errorf("exit %d, output:\n%s", exit, out)
	}
}

// TestNoMenuWithoutAccountManager: a Linker that cannot replace devices leaves linked users
// with today's message.
func TestNoMenuWithoutAccountManager(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(e *env) { e.srv.Linker = linkerOnly{e.linker} })
	secret, _ := e.link(testUser)
	cs := startSession(t, e.mustDialCode(testUser, testPassword, "", e.code(testUser, secret)), true, "")
	if exit, out := cs.wait(); exit != 1 || !strings.Contains(out, "Lost your phone? Ask your admin.") || strings.Contains(out, promptChoice) {
		t.Errorf("exit %d, output:\n%s", exit, out)
	}
}

// linkerOnly hides everything but enroll.Linker.
type linkerOnly struct{ enroll.Linker }

// recoveryCodes returns the recovery codes printed in out.
func recoveryCodes(out string) []string {
	var codes []string
	for _, m := range recoveryLine.FindAllString(out, -1) {
		codes = append(codes, strings.TrimSpace(m))
	}
	return codes
}

// finished reports whether the session has ended.
func (cs *clientSession) finished() bool {
	select {
	case <-cs.done:
		return true
	default:
		return false
	}
}

// TestLinkedAfterLogin: a user who signed in without a device, and whose device was linked
// elsewhere before the session started, proved one factor only: no menu, and a message that says
// how to get it.
func TestLinkedAfterLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.mustDial(testUser, testPassword, "")
	linking := e.now()
	e.link(testUser)
	linked := e.now()
	cs := startSession(t, c, true, "")
	exit, out := cs.wait()
	if exit != 1 || strings.Contains(out, promptChoice) ||
		!hasLinkDay(out, "Your device is already linked (since ", "). To replace it, connect again", linking, linked) {
		t.Errorf("exit %d, output:\n%s", exit, out)
	}
}
