package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// keysSetup is a gatekeeper with keys.enabled in front of a lander of its own whose sshd trusts
// the gatekeeper's user CA (the line `gatekeeper admin lander-ca` prints), with keys.remember
// set.
type keysSetup struct {
	g      *gatekeeper
	lander *lander
	// caTrust is the lander's TrustedUserCAKeys file.
	caTrust string
}

func newKeysSetup(t *testing.T, remember string) *keysSetup {
	t.Helper()
	hs := base(t)
	dir, err := os.MkdirTemp(hs.tmp, "keys")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ks := &keysSetup{caTrust: filepath.Join(dir, "trusted_user_ca_keys")}
	// sshd reads TrustedUserCAKeys at each login, so the file may come after it starts.
	l, err := startLanderWith(dir, "TrustedUserCAKeys "+ks.caTrust+"\n")
	if err != nil {
		t.Fatal("starting the lander: ", err)
	}
	t.Cleanup(func() {
		if err := l.stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("lander log:\n%s", tail(l.logBytes(), 40))
		}
	})
	ks.lander = l
	caFile := filepath.Join(dir, "lander_user_ca")
	g := gatekeeperBefore(t, l, gkOptions{edit: func(y string) string {
		return y + "keys:\n  enabled: true\n  lander_ca_file: \"" + caFile + "\"\n  remember: \"" + remember + "\"\n"
	}})
	ks.g = g
	if fi, err := os.Stat(caFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lander CA %s: %v, mode %v; want it created 0600", caFile, err, fi.Mode())
	}
	line := g.admin(t, "lander-ca")
	if !strings.HasPrefix(line, "ssh-ed25519 ") {
		t.Fatalf("admin lander-ca printed %q, want an ssh-ed25519 key line", line)
	}
	if err := os.WriteFile(ks.caTrust, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	return ks
}

// newKey makes an ed25519 key pair in c's directory with ssh-keygen and returns the private
// key's path (the public key is path + ".pub").
func newKey(t testing.TB, c *client, name string) string {
	t.Helper()
	path := filepath.Join(c.dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	return path
}

// fingerprint is ssh-keygen's SHA256 fingerprint of the key at path.
func fingerprint(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", path+".pub").Output()
	if err != nil {
		t.Fatalf("ssh-keygen -l: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		t.Fatalf("ssh-keygen -l printed %q", out)
	}
	return f[1]
}

// keyOpts make ssh log in with the key at path first and nothing but it, then fall back to
// keyboard-interactive (the password), as a user's ssh does.
func keyOpts(path string, only bool) []string {
	methods := "publickey,keyboard-interactive"
	if only {
		methods = "publickey"
	}
	return []string{"-i", path, "-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=" + methods}
}

// loginWith runs `ssh opts echo ok` and returns the result and the prompts the user was asked.
func loginWith(c *client, opts []string) (result, []string) {
	r := c.ssh(opts, "echo", "ok")
	return r, c.prompts()
}

// TestKeyLogins drives the real OpenSSH client with registered keys through the gatekeeper to
// a lander that trusts only the gatekeeper's certificates for them.
func TestKeyLogins(t *testing.T) {
	t.Parallel()
	ks := newKeysSetup(t, "12h")
	g := ks.g
	u := newUser(t)
	g.enroll(t, u)
	c := newClient(t, u, g.port, "")
	c.setPassword("not-the-password") // a key login never asks for it
	key := newKey(t, c, "laptop")
	fp := fingerprint(t, key)
	out := g.admin(t, "keys", "add", u.name, key+".pub", "--label", "laptop")
	if !strings.Contains(out, fp) {
		t.Fatalf("admin keys add printed %q, want the fingerprint %s", out, fp)
	}

	t.Run("outside: key, then only the code", func(t *testing.T) {
		c.setCode(u.nextCode(t))
		r, prompts := loginWith(c, keyOpts(key, false))
		if r.exit != 0 || r.stdout != "ok\n" {
			t.Fatalf("key login failed: %s (prompts %q)", r, prompts)
		}
		if len(prompts) != 1 || !strings.Contains(prompts[0], "Verification code:") {
			t.Errorf("prompts %q, want only the verification code", prompts)
		}
		// The lander's log names the certificate: this node's session and the client.
		log := string(ks.lander.logBytes())
		re := regexp.MustCompile(`Accepted publickey for ` + u.name + ` .*ED25519-CERT .*ID gatekeeper node=\S+ session=\d+ client=127\.0\.0\.1 key=` + regexp.QuoteMeta(fp))
		if !re.MatchString(log) {
			t.Errorf("lander log has no certificate login naming the client and key:\n%s", tail(ks.lander.logBytes(), 10))
		}
	})

	t.Run("a wrong code is refused", func(t *testing.T) {
		// Another /24, where no device is remembered.
		c2 := newClient(t, u, g.port, "127.0.1.5")
		c2.setPassword("not-the-password")
		c2.setCode(u.wrongCode(t))
		r, prompts := loginWith(c2, keyOpts(copyKey(t, key, c2), false))
		if r.exit != 255 || !strings.Contains(r.stderr, "Permission denied") {
			t.Fatalf("wrong code with a registered key: %s", r)
		}
		if len(prompts) != 1 || !strings.Contains(prompts[0], "Verification code:") {
			t.Errorf("prompts %q, want the verification code once", prompts)
		}
	})

	t.Run("remembered: same key, same /24, no code", func(t *testing.T) {
		c.setCode("")
		r, prompts := loginWith(c, keyOpts(key, true))
		if r.exit != 0 || r.stdout != "ok\n" {
			t.Fatalf("remembered key login failed: %s (prompts %q)", r, prompts)
		}
		if len(prompts) != 1 || prompts[0] != "" {
			t.Errorf("prompts %q, want none", prompts)
		}
		if show := g.admin(t, "show", u.name); !strings.Contains(show, "127.0.0.0/24") {
			t.Errorf("admin show does not list the remembered network:\n%s", show)
		}
	})

	t.Run("remembered: another /24 asks for the code", func(t *testing.T) {
		c2 := newClient(t, u, g.port, "127.0.1.5")
		c2.setPassword("not-the-password")
		c2.setCode(u.nextCode(t))
		r, prompts := loginWith(c2, keyOpts(copyKey(t, key, c2), false))
		if r.exit != 0 || r.stdout != "ok\n" {
			t.Fatalf("key login from another /24 failed: %s", r)
		}
		if !slices.ContainsFunc(prompts, func(p string) bool { return strings.Contains(p, "Verification code:") }) {
			t.Errorf("prompts %q: a key from another /24 must be asked for the code", prompts)
		}
	})

	t.Run("trusted network: the key alone", func(t *testing.T) {
		ct := newClient(t, u, g.port, trustedAddr)
		ct.setPassword("not-the-password")
		r, prompts := loginWith(ct, keyOpts(copyKey(t, key, ct), true))
		if r.exit != 0 || r.stdout != "ok\n" {
			t.Fatalf("trusted key login failed: %s", r)
		}
		if len(prompts) != 1 || prompts[0] != "" {
			t.Errorf("prompts %q, want none from a trusted network", prompts)
		}
	})

	t.Run("an unregistered key falls through to the password", func(t *testing.T) {
		other := newKey(t, c, "unregistered")
		c.setPassword(u.password)
		c.setCode(u.nextCode(t))
		r, prompts := loginWith(c, keyOpts(other, false))
		c.setPassword("not-the-password")
		if r.exit != 0 || r.stdout != "ok\n" {
			t.Fatalf("password login after an unregistered key failed: %s", r)
		}
		if !slices.ContainsFunc(prompts, func(p string) bool { return strings.Contains(p, "Password:") }) {
			t.Errorf("prompts %q: want the password asked", prompts)
		}
	})

	t.Run("automation key", func(t *testing.T) {
		const net = "127.0.0.3"
		ca := newClient(t, u, g.port, net)
		ca.setPassword("not-the-password")
		forced := newKey(t, ca, "nightly-rsync")
		g.admin(t, "keys", "add", u.name, forced+".pub", "--automation", "--from", net+"/32", "--expires", "24h",
			"--command", "echo forced")
		r, prompts := loginWith(ca, keyOpts(forced, true))
		if r.exit != 0 || r.stdout != "forced\n" {
			t.Fatalf("automation key with a forced command: %s, want its command's output", r)
		}
		if len(prompts) != 1 || prompts[0] != "" {
			t.Errorf("prompts %q, want none for an automation key", prompts)
		}

		// From another address the key is not accepted.
		elsewhere := newClient(t, u, g.port, "127.0.0.4")
		r, _ = loginWith(elsewhere, keyOpts(copyKey(t, forced, elsewhere), true))
		if r.exit != 255 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("automation key from outside its networks: %s, want it refused", r)
		}

		// Revoking a key ends its live sessions within 2 s.
		live := newKey(t, ca, "live")
		liveFP := fingerprint(t, live)
		g.admin(t, "keys", "add", u.name, live+".pub", "--automation", "--from", net+"/32", "--expires", "1h")
		s := ca.liveSSH(keyOpts(live, true), "echo started; sleep 60; echo never")
		s.waitFor("started")
		out := g.admin(t, "keys", "revoke", u.name, liveFP)
		if !strings.Contains(out, "1") {
			t.Errorf("admin keys revoke printed %q, want the one session ended", out)
		}
		if code := s.wait(2 * time.Second); code == 0 || strings.Contains(s.stdout.String(), "never") {
			t.Errorf("session of a revoked key: exit %d, %s", code, s)
		}
		r, _ = loginWith(ca, keyOpts(live, true))
		if r.exit != 255 {
			t.Errorf("revoked automation key still logs in: %s", r)
		}

		// An expired automation key is refused.
		short := newKey(t, ca, "short")
		g.admin(t, "keys", "add", u.name, short+".pub", "--automation", "--from", net+"/32", "--expires", "2s")
		deadline := time.Now().Add(2 * time.Second)
		time.Sleep(time.Until(deadline) + 100*time.Millisecond) // waiting for the clock, not for a service
		r, _ = loginWith(ca, keyOpts(short, true))
		if r.exit != 255 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("expired automation key: %s, want it refused", r)
		}
	})

	t.Run("after admin reset a key login needs a new device", func(t *testing.T) {
		g.admin(t, "reset", u.name)
		c2 := newClient(t, u, g.port, "127.0.1.6")
		c2.setPassword("not-the-password")
		// The old phone's current code: right for the old secret, no device to check it against.
		c2.setCode(oathCode(t, u.secret, stepNow()))
		k2 := copyKey(t, key, c2)
		r, prompts := loginWith(c2, keyOpts(k2, false))
		if r.exit != 255 || !strings.Contains(r.stderr, "Permission denied") {
			t.Fatalf("key login after a reset: %s, want it refused", r)
		}
		if len(prompts) != 1 || !strings.Contains(prompts[0], "Verification code:") {
			t.Errorf("prompts %q: after a reset the key is asked for a code (and no code can be right)", prompts)
		}
		// The remembered network went with the reset too.
		c.setCode("")
		if r, _ := loginWith(c, keyOpts(key, true)); r.exit != 255 {
			t.Errorf("remembered key after a reset still logs in without a code: %s", r)
		}
		g.enroll(t, u)
		c2.setCode(u.nextCode(t))
		if r, _ := loginWith(c2, keyOpts(k2, false)); r.exit != 0 || r.stdout != "ok\n" {
			t.Fatalf("key kept through the reset does not log in with the new device: %s", r)
		}
	})
}

// copyKey copies the key pair at path into c's directory (ssh wants its own key file).
func copyKey(t testing.TB, path string, c *client) string {
	t.Helper()
	dst := filepath.Join(c.dir, filepath.Base(path))
	for _, ext := range []string{"", ".pub"} {
		b, err := os.ReadFile(path + ext)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+ext, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
