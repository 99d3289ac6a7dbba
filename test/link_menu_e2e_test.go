package e2e

import (
	"strings"
	"testing"
	"time"
)

// These tests drive the menu of the SSH linking listener (enroll.ssh_listen) with the real
// `ssh -tt`, as a user with a linked phone does: signed in with the password and a code, they
// replace the phone (the new one's codes from oathtool) or get new recovery codes, and then log
// in at the SSH front door with what they have now.

// The menu's prompts, as the user sees them.
const (
	menuChoice = "Choose 1, 2 or 3: "
	menuEndSSH = "Also end your open SSH sessions? [y/N] "
	menuRenew  = "Go on? [y/N] "
)

// linkMenu signs u in at g's linking listener from a trusted address with the password and a
// code from the phone, and waits for the menu.
func linkMenu(t *testing.T, g *gatekeeper, u *user) (*client, *liveSession) {
	t.Helper()
	lc := linkClient(t, g, u, trustedAddr)
	lc.setCode(u.nextCode(t))
	m := lc.liveSSH([]string{"-tt"})
	out := m.waitFor(menuChoice)
	for _, w := range []string{"1) Replace this device (link a new phone)", "2) New recovery codes", "3) Quit"} {
		if !strings.Contains(out, w) {
			t.Errorf("no %q in the menu:\n%s", w, out)
		}
	}
	wantPrompts(t, lc, "Password:", "Verification code:")
	return lc, m
}

// replacePhone chooses "replace" in the menu m, answers the question about SSH sessions with
// endSSH, calls beforeConfirm (if set) with the new secret, confirms with the new phone's code
// from oathtool and returns the output and the new recovery codes. From then on u's codes are the
// new phone's.
func replacePhone(t *testing.T, u *user, m *liveSession, endSSH string, beforeConfirm func(secret string)) (string, []string) {
	t.Helper()
	m.write("1\r")
	m.waitFor(menuEndSSH)
	m.write(endSSH + "\r")
	out := m.waitFor("Code from your app: ")
	secret, err := secretFromOutput(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	h.remember(secret)
	if secret == u.secret {
		t.Fatal("the replacement shows the old phone's secret")
	}
	if !strings.ContainsAny(out, "▀▄█") || !strings.Contains(out, "otpauth URI: otpauth://totp/") {
		t.Errorf("no QR code or URI for the new phone:\n%s", out)
	}
	if beforeConfirm != nil {
		beforeConfirm(secret)
	}
	// A time step is used once, whichever phone: the new phone's code is for the next step.
	u.secret = secret
	m.write(u.nextCode(t) + "\r")
	if exit := m.wait(waitTimeout); exit != 0 {
		t.Fatalf("the replacement: exit %d, want 0: %s", exit, m)
	}
	out = m.stdout.String()
	if !strings.Contains(out, "Device replaced for "+u.name) {
		t.Errorf("no \"Device replaced\" in the output:\n%s", out)
	}
	codes := recoveryCodesIn(out)
	if len(codes) != 10 {
		t.Errorf("%d recovery codes printed, want 10:\n%s", len(codes), out)
	}
	for _, c := range codes {
		h.remember(c)
	}
	return out, codes
}

func TestLinkMenuOverSSH(t *testing.T) {
	t.Parallel()
	g := sharedGatekeeper(t)

	t.Run("replace the phone, ending the SSH sessions", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		oldRecovery := g.enrollWithCodes(t, u)
		oldSecret := u.secret
		c := newClient(t, u, g.port, "")
		c.setCode(u.nextCode(t))
		s := c.liveSSH(nil, "echo started; sleep 300")
		s.waitFor("started")

		_, m := linkMenu(t, g, u)
		out, codes := replacePhone(t, u, m, "y", func(string) {
			// Until the new phone is confirmed, the old one logs in.
			c.setCode(u.nextCode(t))
			mustLogIn(t, c, "the old phone while the replacement waits for its code")
		})
		if !strings.Contains(out, "Your open SSH sessions were ended") {
			t.Errorf("the output does not say the SSH sessions were ended:\n%s", out)
		}
		if exit := s.wait(10 * time.Second); exit == 0 {
			t.Errorf("the SSH session after the replacement: %s", s)
		}

		newSecret := u.secret
		u.secret = oldSecret // a code the daemon would take now, were the old phone still linked
		c.setCode(u.nextCode(t))
		u.secret = newSecret
		mustBeDeniedSlowly(t, c, "the old phone's code after the replacement")
		c.setCode(oldRecovery[0])
		mustBeDeniedSlowly(t, c, "an old recovery code after the replacement")
		c.prompts() // forget those of the logins before
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "the new phone")
		wantPrompts(t, c, "Password:", "Verification code:")
		if len(codes) > 0 {
			c.setCode(codes[0])
			mustLogIn(t, c, "a new recovery code")
			mustBeDeniedSlowly(t, c, "the same new recovery code again")
		}
		g.waitAudit(t, u.name, "device_replaced", func(ev []auditEvent) bool {
			return countKind(ev, "device_replaced", "") == 1
		})
	})

	t.Run("replace the phone, keeping the SSH sessions", func(t *testing.T) {
		t.Parallel()
		u := enrolledUser(t, g)
		c := newClient(t, u, g.port, "")
		c.setCode(u.nextCode(t))
		s := c.liveSSH(nil, "echo started; read line; echo got $line")
		s.waitFor("started")

		_, m := linkMenu(t, g, u)
		out, _ := replacePhone(t, u, m, "", func(secret string) {
			// A new phone whose clock is 4 minutes fast: told so, and nothing confirmed.
			m.write(oathCode(t, secret, stepNow()+8) + "\r")
			m.waitFor("Your phone's clock is about 4 minutes fast.")
			m.waitCount("Code from your app: ", 2)
		})
		if !strings.Contains(out, "Your open SSH sessions keep running.") {
			t.Errorf("the output does not say the SSH sessions keep running:\n%s", out)
		}
		s.write("still here\n")
		s.waitFor("got still here")
		if exit := s.wait(waitTimeout); exit != 0 {
			t.Errorf("the SSH session kept through the replacement: %s", s)
		}
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "the new phone")
	})

	t.Run("new recovery codes work once", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		explain(t, g, u)
		oldRecovery := g.enrollWithCodes(t, u)
		_, m := linkMenu(t, g, u)
		m.write("2\r")
		m.waitFor(menuRenew)
		m.write("y\r")
		if exit := m.wait(waitTimeout); exit != 0 {
			t.Fatalf("new recovery codes: exit %d, want 0: %s", exit, m)
		}
		codes := recoveryCodesIn(m.stdout.String())
		if len(codes) != 10 {
			t.Fatalf("%d recovery codes printed, want 10: %s", len(codes), m)
		}
		for _, rc := range codes {
			h.remember(rc)
		}
		c := newClient(t, u, g.port, "")
		c.setCode(oldRecovery[1])
		mustBeDeniedSlowly(t, c, "an old recovery code after the renewal")
		c.setCode(codes[0])
		mustLogIn(t, c, "a new recovery code")
		mustBeDeniedSlowly(t, c, "the same new recovery code again")
		c.setCode(u.nextCode(t))
		mustLogIn(t, c, "the phone, unchanged by the renewal")
		g.waitAudit(t, u.name, "recovery_renewed", func(ev []auditEvent) bool {
			return countKind(ev, "recovery_renewed", "") == 1
		})
	})

	t.Run("a linked user without the code is refused", func(t *testing.T) {
		t.Parallel()
		u := enrolledUser(t, g)
		lc := linkClient(t, g, u, trustedAddr)
		for what, code := range map[string]string{"no code": "", "a wrong code": u.wrongCode(t)} {
			lc.setCode(code)
			s := lc.liveSSH([]string{"-tt"})
			if exit := s.wait(waitTimeout); exit != 255 || !strings.Contains(s.stderr.String(), "Permission denied") ||
				strings.Contains(s.stdout.String(), menuChoice) {
				t.Errorf("%s: want Permission denied (exit 255) and no menu, got %s", what, s)
			}
		}
	})
}
