package gatekeeper

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/config"
	"gatekeeper/gatekeeper/store"
)

// newKeyGate is a test gate with keys.enabled whose fake lander trusts the
// gate's CA; remember is keys.remember.
func newKeyGate(t *testing.T, remember time.Duration) *testGate {
	t.Helper()
	return newKeyGateWith(t, remember, nil)
}

// newKeyGateWith is newKeyGate with the config changed by edit as well.
func newKeyGateWith(t *testing.T, remember time.Duration, edit func(*config.Config)) *testGate {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "lander_user_ca")
	g := newTestGate(t, func(c *config.Config) {
		c.Keys = config.Keys{Enabled: true, LanderCAFile: caFile, CertValidity: 2 * time.Minute,
			Remember: remember, AutomationMaxLifetime: 720 * time.Hour}
		if edit != nil {
			edit(c)
		}
	})
	fi, err := os.Stat(caFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lander CA: %v, mode %v; want it created 0600", err, fi.Mode())
	}
	line, err := ReadLanderCA(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		t.Fatal(err)
	}
	g.lander.ca.Store(&pub)
	return g
}

// addKey registers a new ed25519 key for alice, shaped by edit, and returns
// its signer.
func (g *testGate) addKey(t *testing.T, edit func(k *store.Key)) ssh.Signer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	g.registerKey(t, signer.PublicKey(), edit)
	return signer
}

// registerKey registers pub for alice, shaped by edit.
func (g *testGate) registerKey(t *testing.T, pub ssh.PublicKey, edit func(k *store.Key)) {
	t.Helper()
	k := store.Key{Fingerprint: ssh.FingerprintSHA256(pub),
		PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), Label: "test"}
	if edit != nil {
		edit(&k)
	}
	err := g.store.Update("alice", func(u *store.User) error {
		u.Keys = append(slices.Clone(u.Keys), k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestKeyLogin(t *testing.T) {
	type want struct {
		ok      bool
		prompts []string // questions asked after the key
		certs   int      // certificates the lander accepted
	}
	tests := []struct {
		name string
		key  func(k *store.Key) // nil: a personal key; skip: unregistered
		skip bool
		from string
		code bool // answer the right code (else a wrong one)
		want want
	}{
		{name: "outside: key then code", from: "127.0.0.1", code: true,
			want: want{ok: true, prompts: []string{PromptCode}, certs: 1}},
		{name: "outside: key and a wrong code", from: "127.0.0.1",
			want: want{prompts: []string{PromptCode}}},
		{name: "trusted: key alone", from: "127.0.0.2",
			want: want{ok: true, certs: 1}},
		{name: "automation key from its network", from: "127.0.0.3",
			key: func(k *store.Key) {
				k.Automation, k.From, k.Expires = true, []string{"127.0.0.3/32"}, time.Now().Add(time.Hour)
			},
			want: want{ok: true, certs: 1}},
		{name: "key with networks, from elsewhere: the password is asked", from: "127.0.0.1",
			key: func(k *store.Key) {
				k.Automation, k.From, k.Expires = true, []string{"127.0.0.3/32"}, time.Now().Add(time.Hour)
			},
			code: true, want: want{ok: true, prompts: []string{PromptPassword, PromptCode}}},
		{name: "expired key: the password is asked", from: "127.0.0.1", code: true,
			key:  func(k *store.Key) { k.Expires = time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC) },
			want: want{ok: true, prompts: []string{PromptPassword, PromptCode}}},
		{name: "unregistered key: the password is asked", from: "127.0.0.1", skip: true, code: true,
			want: want{ok: true, prompts: []string{PromptPassword, PromptCode}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newKeyGate(t, 0)
			signer := g.addKey(t, tc.key)
			if tc.skip {
				_, priv, _ := ed25519.GenerateKey(rand.Reader)
				signer, _ = ssh.NewSignerFromKey(priv)
			}
			code := g.code(t, 0)
			if !tc.code {
				code = "000000"
			}
			r := g.login("alice", landerPassword, code, tc.from, ssh.PublicKeys(signer))
			if ok := r.err == nil && r.output == "ran: hello"; ok != tc.want.ok {
				t.Fatalf("login ok = %v (%v, output %q), want %v\nlog:\n%s", ok, r.err, r.output, tc.want.ok, g.logs)
			}
			if !slices.Equal(r.prompts, tc.want.prompts) {
				t.Errorf("prompts %q, want %q", r.prompts, tc.want.prompts)
			}
			certs := g.lander.acceptedCerts()
			if len(certs) != tc.want.certs {
				t.Fatalf("lander accepted %d certificates, want %d", len(certs), tc.want.certs)
			}
			if tc.want.certs == 0 {
				return
			}
			c := certs[0]
			fp := ssh.FingerprintSHA256(signer.PublicKey())
			life := time.Duration(c.ValidBefore-c.ValidAfter) * time.Second
			switch {
			case !slices.Equal(c.ValidPrincipals, []string{"alice"}):
				t.Errorf("principals %q, want alice", c.ValidPrincipals)
			case c.CriticalOptions["source-address"] != "127.0.0.1":
				t.Errorf("source-address %q, want the gatekeeper's address towards the lander", c.CriticalOptions["source-address"])
			case !strings.Contains(c.KeyId, "client="+tc.from) || !strings.Contains(c.KeyId, "key="+fp) || !strings.Contains(c.KeyId, "session="):
				t.Errorf("key id %q does not name the client %s, the session and the key %s", c.KeyId, tc.from, fp)
			case life != 2*time.Minute+certBackdate:
				t.Errorf("certificate valid for %v, want 2m (and %v back)", life, certBackdate)
			}
			if got := g.store.users["alice"].Keys[0].LastUsed; got.IsZero() {
				t.Error("the key's last use was not recorded")
			}
		})
	}
}

func TestKeyForcedCommand(t *testing.T) {
	g := newKeyGate(t, 0)
	signer := g.addKey(t, func(k *store.Key) {
		k.Automation, k.From, k.Expires, k.Command = true, []string{"127.0.0.0/24"}, time.Now().Add(time.Hour), "rsync --server -e.LsfxCIvu . /data"
	})
	if r := g.login("alice", "", "", "127.0.0.5", ssh.PublicKeys(signer)); r.err != nil {
		t.Fatalf("automation login: %v\nlog:\n%s", r.err, g.logs)
	}
	certs := g.lander.acceptedCerts()
	if len(certs) != 1 || certs[0].CriticalOptions["force-command"] != "rsync --server -e.LsfxCIvu . /data" {
		t.Fatalf("certificates %v: want one with the key's force-command", certs)
	}
	// Only the command: no forwarding, pty or ~/.ssh/rc, as authorized_keys' restrict.
	if len(certs[0].Extensions) != 0 {
		t.Errorf("a certificate with a forced command permits %v", certs[0].Extensions)
	}
}

// TestAutomationKeyFromCampusDuringAnAttack: failures from outside lock the user's outside
// logins, never an automation key's logins from the trusted networks.
func TestAutomationKeyFromCampusDuringAnAttack(t *testing.T) {
	g := newKeyGate(t, 0)
	signer := g.addKey(t, func(k *store.Key) {
		k.Automation, k.From, k.Expires = true, []string{"127.0.0.0/24"}, time.Now().Add(time.Hour)
	})
	for range testRateLimit.Failures {
		g.login("alice", landerPassword, "000000", "127.0.0.7")
	}
	if r := g.login("alice", "", "", "127.0.0.1", ssh.PublicKeys(signer)); r.err == nil {
		t.Fatal("automation key from outside let in while the user is locked out from outside")
	}
	if r := g.login("alice", "", "", "127.0.0.2", ssh.PublicKeys(signer)); r.err != nil {
		t.Fatalf("automation key from the trusted network refused during an attack from outside: %v", r.err)
	}
}

// TestKeyExpiryEndsSession: an automation key's live session ends when the key expires.
func TestKeyExpiryEndsSession(t *testing.T) {
	g := newKeyGate(t, 0)
	signer := g.addKey(t, func(k *store.Key) {
		k.Automation, k.From, k.Expires = true, []string{"127.0.0.0/8"}, g.clock.Now().Add(300*time.Millisecond)
	})
	c, err := ssh.Dial("tcp", g.addr, &ssh.ClientConfig{User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ended := make(chan error, 1)
	go func() { ended <- c.Wait() }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the session of an expired key still runs")
	}
}

func TestKeyRemembered(t *testing.T) {
	g := newKeyGate(t, time.Hour)
	signer := g.addKey(t, nil)
	r := g.login("alice", "", g.code(t, 0), "127.0.0.1", ssh.PublicKeys(signer))
	if r.err != nil || !slices.Equal(r.prompts, []string{PromptCode}) {
		t.Fatalf("first login: %v, prompts %q", r.err, r.prompts)
	}
	if rem := g.store.users["alice"].Remembered; len(rem) != 1 || rem[0].Network != "127.0.0.0/24" {
		t.Fatalf("remembered %+v, want 127.0.0.0/24", rem)
	}
	// Same key, same /24: no code.
	if r := g.login("alice", "", "", "127.0.0.9", ssh.PublicKeys(signer)); r.err != nil || len(r.prompts) != 0 {
		t.Fatalf("remembered login: %v, prompts %q", r.err, r.prompts)
	}
	// Another /24 asks.
	g.clock.Advance(30 * time.Second)
	if r := g.login("alice", "", g.code(t, 0), "127.0.1.9", ssh.PublicKeys(signer)); r.err != nil || !slices.Equal(r.prompts, []string{PromptCode}) {
		t.Fatalf("login from another /24: %v, prompts %q", r.err, r.prompts)
	}
	// After keys.remember it asks again.
	g.clock.Advance(time.Hour)
	if r := g.login("alice", "", g.code(t, 0), "127.0.0.9", ssh.PublicKeys(signer)); r.err != nil || !slices.Equal(r.prompts, []string{PromptCode}) {
		t.Fatalf("login after keys.remember: %v, prompts %q", r.err, r.prompts)
	}
}

func TestKeyLoginAfterReset(t *testing.T) {
	g := newKeyGate(t, time.Hour)
	signer := g.addKey(t, nil)
	// A reset that keeps the keys: no device, so a code cannot be right.
	_ = g.store.Update("alice", func(u *store.User) error {
		u.State, u.Secret = store.StateNone, nil
		return nil
	})
	r := g.login("alice", "", g.code(t, 0), "127.0.0.1", ssh.PublicKeys(signer))
	if r.err == nil {
		t.Fatal("key login of a user without a device was let in")
	}
	if n := len(g.lander.acceptedCerts()); n != 0 {
		t.Fatalf("the lander saw %d certificates", n)
	}
}

func TestKillKey(t *testing.T) {
	g := newKeyGate(t, 0)
	automation := func(k *store.Key) {
		k.Automation, k.From, k.Expires = true, []string{"127.0.0.0/8"}, time.Now().Add(time.Hour)
	}
	revoked, kept := g.addKey(t, automation), g.addKey(t, automation)
	dial := func(signer ssh.Signer) *ssh.Client {
		c, err := ssh.Dial("tcp", g.addr, &ssh.ClientConfig{User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial(revoked), dial(kept)
	fp := ssh.FingerprintSHA256(revoked.PublicKey())
	// The client is in once it has read the server's success; the server
	// registers the session right after sending it.
	waitFor(t, "both sessions registered", func() bool { return len(g.srv.Sessions()) == 2 })
	if got := g.srv.Sessions(); !slices.ContainsFunc(got, func(s SessionInfo) bool { return s.Key == fp }) {
		t.Fatalf("sessions %+v: want one with key %s", got, fp)
	}
	if n := g.srv.KillKey("alice", fp); n != 1 {
		t.Errorf("KillKey ended %d sessions, want 1", n)
	}
	ended := make(chan error, 1)
	go func() { ended <- a.Wait() }()
	select {
	case <-ended:
	case <-time.After(2 * time.Second):
		t.Fatal("the revoked key's session still runs 2 s after KillKey")
	}
	if _, _, err := b.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Errorf("the other key's session ended too: %v", err)
	}
}

func TestRememberPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.77":         "203.0.113.0/24",
		"::ffff:203.0.113.77":  "203.0.113.0/24",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
	} {
		if got := rememberPrefix(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("rememberPrefix(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestKeySignatureAlgorithms: a registered RSA key signs with SHA-2 as
// OpenSSH's client does; a SHA-1 signature (ssh-rsa), which the lander's own
// sshd refuses since OpenSSH 8.8, does not log in with the key: the password
// is asked instead.
func TestKeySignatureAlgorithms(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		algo        string
		wantPrompts []string
	}{
		{ssh.KeyAlgoRSASHA256, nil},
		{ssh.KeyAlgoRSASHA512, nil},
		{ssh.KeyAlgoRSA, []string{PromptPassword}},
	}
	for _, tc := range tests {
		t.Run(tc.algo, func(t *testing.T) {
			g := newKeyGate(t, 0)
			g.registerKey(t, rsaKey.PublicKey(), nil)
			signer, err := ssh.NewSignerWithAlgorithms(rsaKey.(ssh.AlgorithmSigner), []string{tc.algo})
			if err != nil {
				t.Fatal(err)
			}
			r := g.login("alice", landerPassword, "", "127.0.0.2", ssh.PublicKeys(signer))
			if r.err != nil {
				t.Fatalf("login: %v", r.err)
			}
			if !slices.Equal(r.prompts, tc.wantPrompts) {
				t.Errorf("prompts %q, want %q", r.prompts, tc.wantPrompts)
			}
		})
	}
}

// TestKeyFromUnknownClient: over a connection whose PROXY header names no
// client (v1 UNKNOWN), the address is the load balancer's own: a key bound to
// networks that hold the balancer does not get in by it, and a key login with
// a code there leaves no network remembered.
func TestKeyFromUnknownClient(t *testing.T) {
	g := newKeyGateWith(t, time.Hour, func(c *config.Config) {
		c.ProxyProtocol = true
		c.ProxyFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	bound := g.addKey(t, func(k *store.Key) {
		k.Automation, k.From, k.Expires = true, []string{"127.0.0.0/24"}, time.Now().Add(time.Hour)
	})
	personal := g.addKey(t, nil)
	g.addr = proxyFront(t, g.addr, "PROXY UNKNOWN\r\n")

	r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1", ssh.PublicKeys(bound))
	if r.err != nil {
		t.Fatalf("login: %v", r.err)
	}
	if want := []string{PromptPassword, PromptCode}; !slices.Equal(r.prompts, want) {
		t.Errorf("automation key bound to the balancer's network, client unknown: prompts %q, want %q (the key refused)", r.prompts, want)
	}

	g.clock.Advance(30 * time.Second)
	if r := g.login("alice", landerPassword, g.code(t, 0), "127.0.0.1", ssh.PublicKeys(personal)); r.err != nil {
		t.Fatalf("key and code, client unknown: %v", r.err)
	}
	if u, _ := g.store.Get("alice"); len(u.Remembered) != 0 {
		t.Errorf("a key login from an unknown client remembered %+v", u.Remembered)
	}
}
