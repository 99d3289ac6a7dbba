package gatekeeper

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// upstreamWait bounds every wait in these tests; generous for -race.
const upstreamWait = 20 * time.Second

// authLander is an in-process sshd whose authentication is set by a test,
// to check what lander.dial accepts.
type authLander struct {
	addr       string
	knownHosts string
	// passwords counts every time the user's password reached it, by
	// either method: one login must be one guess.
	passwords atomic.Int32
	// ended receives one value per connection that got in, when the
	// connection ends.
	ended chan struct{}
}

// startAuthLander serves cfg (its host key is added here) on 127.0.0.1:0
// and writes its key to a known_hosts file. The auth callbacks of cfg are
// wrapped by setup, which gets the lander to count passwords.
func startAuthLander(t *testing.T, setup func(l *authLander) *ssh.ServerConfig) *authLander {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	l := &authLander{ended: make(chan struct{}, 16)}
	cfg := setup(l)
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	l.addr = ln.Addr().String()
	l.knownHosts = writeKnownHosts(t, l.addr, signer.PublicKey())
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(upstreamWait))
				conn, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				go func() {
					for nch := range chans {
						_ = nch.Reject(ssh.Prohibited, "test lander")
					}
				}()
				_ = conn.Wait()
				l.ended <- struct{}{}
			})
		}
	})
	return l
}

// writeKnownHosts files key for addr in a known_hosts file in t.TempDir().
func writeKnownHosts(t *testing.T, addr string, key ssh.PublicKey) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key)
	if err := os.WriteFile(p, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkPassword is a lander's password check that counts what it sees.
func (l *authLander) checkPassword(_ ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
	l.passwords.Add(1)
	if string(pw) == landerPassword {
		return nil, nil
	}
	return nil, errors.New("wrong password")
}

// pamPrompt is a keyboard-interactive check like sshd's with PAM: an
// optional informational round, then "Password:".
func (l *authLander) pamPrompt(info bool) func(ssh.ConnMetadata, ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	return func(_ ssh.ConnMetadata, client ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
		if info {
			if _, err := client("", "Welcome to the lander", nil, nil); err != nil {
				return nil, err
			}
		}
		ans, err := client("", "", []string{"Password: "}, []bool{false})
		if err != nil {
			return nil, err
		}
		if len(ans) == 1 {
			l.passwords.Add(1)
			if ans[0] == landerPassword {
				return nil, nil
			}
		}
		return nil, errors.New("wrong password")
	}
}

// noQuestions is a keyboard-interactive check that asks nothing and lets
// everyone in: PAM with pam_unix nullok on an account without a password.
func noQuestions(_ ssh.ConnMetadata, client ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	if _, err := client("", "", nil, nil); err != nil {
		return nil, err
	}
	return nil, nil
}

func TestLanderDialNeedsThePassword(t *testing.T) {
	tests := []struct {
		name     string
		lander   func(l *authLander) *ssh.ServerConfig
		password string
		// wantErr is nil for a login that gets in; else the errors
		// the dial's error must wrap.
		wantErr []error
		// notErr are errors it must not wrap.
		notErr []error
		// wantPasswords is how often the password reached the lander.
		wantPasswords int32
	}{
		{
			name: "password method",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{PasswordCallback: l.checkPassword}
			},
			password: landerPassword, wantPasswords: 1,
		},
		{
			name: "keyboard-interactive password prompt after an informational round",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{KeyboardInteractiveCallback: l.pamPrompt(true)}
			},
			password: landerPassword, wantPasswords: 1,
		},
		{
			name: "wrong password",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{PasswordCallback: l.checkPassword}
			},
			password: "wrong", wantErr: []error{ErrPasswordRejected}, notErr: []error{ErrLanderNoPassword},
			wantPasswords: 1,
		},
		{
			name: "wrong password is not tried again by keyboard-interactive",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{PasswordCallback: l.checkPassword, KeyboardInteractiveCallback: l.pamPrompt(false)}
			},
			password: "wrong", wantErr: []error{ErrPasswordRejected}, wantPasswords: 1,
		},
		{
			name: "none accepted (PermitEmptyPasswords)",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{NoClientAuth: true, PasswordCallback: l.checkPassword}
			},
			password: landerPassword, wantErr: []error{ErrLanderNoPassword, ErrPasswordRejected},
		},
		{
			name: "keyboard-interactive without questions",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{KeyboardInteractiveCallback: noQuestions}
			},
			password: landerPassword, wantErr: []error{ErrLanderNoPassword, ErrPasswordRejected},
		},
		{
			name: "wrong password, then keyboard-interactive without questions",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{PasswordCallback: l.checkPassword, KeyboardInteractiveCallback: noQuestions}
			},
			password: "wrong", wantErr: []error{ErrPasswordRejected}, wantPasswords: 1,
		},
		{
			name: "a second step after the password",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
					if _, err := l.checkPassword(c, pw); err != nil {
						return nil, err
					}
					return nil, &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{KeyboardInteractiveCallback: noQuestions}}
				}}
			},
			password: landerPassword, wantErr: []error{ErrPasswordRejected}, wantPasswords: 1,
		},
		{
			name: "no method to send a password to",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
					return nil, errors.New("no")
				}}
			},
			password: landerPassword, wantErr: []error{ErrLanderUnavailable}, notErr: []error{ErrPasswordRejected},
		},
		{
			name: "keyboard-interactive without a hidden prompt",
			lander: func(l *authLander) *ssh.ServerConfig {
				return &ssh.ServerConfig{KeyboardInteractiveCallback: func(_ ssh.ConnMetadata, client ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
					if _, err := client("", "", []string{"Favourite colour? "}, []bool{true}); err != nil {
						return nil, err
					}
					return nil, nil
				}}
			},
			password: landerPassword, wantErr: []error{ErrLanderUnavailable}, notErr: []error{ErrPasswordRejected},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fl := startAuthLander(t, tc.lander)
			l, err := newLander(fl.addr, fl.knownHosts)
			if err != nil {
				t.Fatal(err)
			}
			up, err := l.dial(context.Background(), "alice", tc.password)
			if got := fl.passwords.Load(); got != tc.wantPasswords {
				t.Errorf("the password reached the lander %d times, want %d", got, tc.wantPasswords)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("dial = %v, want a login", err)
				}
				up.conn.Close()
				return
			}
			if err == nil {
				up.conn.Close()
				t.Fatalf("dial got in, want an error wrapping %v", tc.wantErr)
			}
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("dial = %v, want it to wrap %v", err, want)
				}
			}
			for _, not := range tc.notErr {
				if errors.Is(err, not) {
					t.Errorf("dial = %v, must not wrap %v", err, not)
				}
			}
			if errors.Is(err, ErrLanderNoPassword) {
				// The lander had let us in: the connection must be
				// closed, not left open.
				select {
				case <-fl.ended:
				case <-time.After(upstreamWait):
					t.Fatal("the login the lander let in without a password was not closed")
				}
			}
		})
	}
}

// testClock is a clock that moves only when told.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingLander accepts TCP connections, counts them, and either sends an
// SSH version line or closes at once.
func countingLander(t *testing.T, answer bool) (addr string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			// Counted before the answer (or the close) that ends the
			// probe, so the count is settled when ping returns.
			accepted.Add(1)
			if answer {
				_, _ = nc.Write([]byte("SSH-2.0-counting\r\n"))
			}
			nc.Close()
		}
	})
	return ln.Addr().String(), accepted
}

func TestPingCachesTheProbe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  bool
		wantErr error
	}{
		{"lander answers", true, nil},
		{"lander mute", false, ErrLanderUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, accepted := countingLander(t, tc.answer)
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			pub, _ := ssh.NewSignerFromKey(priv)
			l, err := newLander(addr, writeKnownHosts(t, addr, pub.PublicKey()))
			if err != nil {
				t.Fatal(err)
			}
			clock := &testClock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
			l.health.now = clock.Now

			ping := func(what string) {
				t.Helper()
				if err := l.ping(context.Background()); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
					t.Fatalf("%s: ping = %v, want %v", what, err, tc.wantErr)
				}
			}
			for range 10 {
				ping("within the first 5 s")
				clock.Advance(probeTTL / 20) // 10 × 250 ms = 2.5 s
			}
			clock.Advance(probeTTL/2 - time.Millisecond) // 4.999 s after the probe
			ping("just before the cache expires")
			if n := accepted.Load(); n != 1 {
				t.Fatalf("%d connections to the lander for 11 pings within %v, want 1", n, probeTTL)
			}
			clock.Advance(time.Millisecond)
			ping("once the cache expired")
			ping("right after the second probe")
			if n := accepted.Load(); n != 2 {
				t.Fatalf("%d connections to the lander after the cache expired, want 2", n)
			}
		})
	}
}

// Callers that come while a probe runs share it; a caller that gives up
// does not leave its cancellation in the cache.
func TestProbeCacheSharesOneProbe(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	var probes atomic.Int32
	c := &probeCache{ttl: probeTTL, now: clock.Now, probe: func(ctx context.Context) error {
		probes.Add(1)
		started <- struct{}{}
		<-release
		return ctx.Err() // nil unless the caller's cancellation leaked in
	}}

	// The first caller gives up at once; the probe it started must still
	// finish with its own verdict.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	first := make(chan error, 1)
	go func() { first <- c.get(cancelled) }()
	<-started

	// A waiter whose context ends is told the lander is unavailable.
	if err := c.get(cancelled); !errors.Is(err, ErrLanderUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter with a cancelled context: %v, want ErrLanderUnavailable and context.Canceled", err)
	}

	const waiters = 8
	results := make(chan error, waiters)
	for range waiters {
		go func() { results <- c.get(context.Background()) }()
	}
	close(release)
	for range waiters {
		if err := <-results; err != nil {
			t.Fatalf("waiter: %v, want nil", err)
		}
	}
	if err := <-first; err != nil {
		t.Fatalf("first caller (cancelled): %v, want the probe's own nil", err)
	}
	if n := probes.Load(); n != 1 {
		t.Fatalf("%d probes for %d callers within the TTL, want 1", n, waiters+2)
	}
}
