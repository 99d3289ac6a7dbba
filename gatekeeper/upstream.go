package gatekeeper

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"gatekeeper/config"
	"gatekeeper/gatekeeper/connserve"
	"gatekeeper/gatekeeper/sockio"
)

// Errors from dialing the lander. They are for the log and the audit trail;
// the SSH client only ever sees a generic failure (or, for an unavailable
// lander, a banner saying so).
var (
	// ErrPasswordRejected means the lander refused the password (or the user).
	ErrPasswordRejected = errors.New("lander rejected the password")
	// ErrLanderUnavailable means the lander could not be reached or the SSH
	// handshake with it failed for a reason other than authentication.
	ErrLanderUnavailable = errors.New("lander unavailable")
	// ErrLanderHostKey means the lander presented a host key that is not the
	// one in upstream.known_hosts: a misconfiguration or an attack.
	ErrLanderHostKey = errors.New("lander host key does not match upstream.known_hosts")
	// ErrLanderNoPassword means the lander let the user in although the
	// gatekeeper never sent the password: it accepted the "none" method or
	// a keyboard-interactive exchange without questions (PermitEmptyPasswords,
	// pam_unix nullok, an AuthenticationMethods without a password). Such a
	// login is refused: otherwise a code alone, or just a trusted source
	// address, would open the door. dial's error wraps ErrPasswordRejected
	// too, so that the login fails and counts like a wrong password.
	ErrLanderNoPassword = errors.New("lander let the user in without checking the password")
	// ErrLanderRefusedCert means the lander did not accept the certificate
	// of a key login: its TrustedUserCAKeys lacks the gatekeeper's CA (see
	// admin lander-ca), or it refuses the user. It wraps ErrPasswordRejected.
	ErrLanderRefusedCert = errors.New("lander refused the gatekeeper's certificate (is the line of `gatekeeper admin lander-ca` in its TrustedUserCAKeys?)")
)

// Authentication method names of RFC 4252 and RFC 4256.
const (
	methodPassword            = "password"
	methodKeyboardInteractive = "keyboard-interactive"
)

// probeTTL is how long ping reuses the lander's last answer, good or bad.
// Monitoring that polls /healthz every second must not become a connection
// a second to the lander, whose sshd counts unauthenticated connections from
// one address against it (PerSourcePenalties, MaxStartups): the gatekeeper's
// address is every user's.
const probeTTL = 5 * time.Second

// lander dials the real sshd and authenticates there with the user's
// password. It holds no per-user state and is safe for concurrent use.
type lander struct {
	addr          string
	hostKeyCheck  ssh.HostKeyCallback
	hostKeyAlgos  []string
	handshakeTime time.Duration
	// health caches probe for ping.
	health *probeCache
}

// newLander reads known_hosts and learns which key algorithms are on file
// for addr, so that the negotiation asks the lander only for a key type we
// can verify (LIBRARY-NOTES: otherwise it may pick one we do not have).
func newLander(addr, knownHostsFile string) (*lander, error) {
	cb, err := knownhosts.New(knownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("upstream.known_hosts: %w", err)
	}
	algos, err := knownAlgorithms(cb, addr)
	if err != nil {
		return nil, fmt.Errorf("upstream.known_hosts %s: %w", knownHostsFile, err)
	}
	l := &lander{addr: addr, hostKeyCheck: cb, hostKeyAlgos: algos, handshakeTime: 15 * time.Second}
	l.health = &probeCache{ttl: probeTTL, now: time.Now, probe: l.probe}
	return l, nil
}

// VersionString is the SSH identification the gatekeeper sends to clients
// and to the lander. Its software version starts with "OpenSSH" because
// OpenSSH turns on two messages only for peers whose version does (compat.c,
// SSH_NEW_OPENSSH), and a relay must pass both ends': eow@openssh.com, with
// which a client whose output is closed (`ssh host yes | head -1`) tells sshd
// to stop the command, and sshd tells a client that the command stopped
// reading its input; and no-more-sessions@openssh.com. Without it, such a
// pipeline hung through the gatekeeper while the remote command ran on. It
// names no OpenSSH version: the gatekeeper is not one.
const VersionString = "SSH-2.0-OpenSSH_gatekeeper"

// CheckKnownHosts reports whether serve could start with upstream.known_hosts
// as it is: the file is readable and holds a host key for upstream.address
// (recorded for its port: ssh-keyscan -p PORT). For config check, which
// reads the file but does not contact the lander.
func CheckKnownHosts(cfg *config.Config) error {
	_, err := newLander(cfg.Upstream.Address, cfg.Upstream.KnownHosts)
	return err
}

// knownAlgorithms asks the known_hosts callback about a throwaway key: the
// resulting *knownhosts.KeyError lists every key on file for addr.
func knownAlgorithms(cb ssh.HostKeyCallback, addr string) ([]string, error) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	// knownhosts looks the key up by addr's own host and port; the remote
	// address is only parsed. So no DNS lookup here: a lander name that
	// does not resolve right now (DNS down at start, config check on
	// another machine) is no reason to refuse.
	var keyErr *knownhosts.KeyError
	if err := cb(addr, &net.TCPAddr{}, probe); !errors.As(err, &keyErr) {
		return nil, fmt.Errorf("cannot learn the key types on file for %s: %v", addr, err)
	}
	if len(keyErr.Want) == 0 {
		return nil, fmt.Errorf("no host key on file for %s (add the line from ssh-keyscan)", knownhosts.Normalize(addr))
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range keyErr.Want {
		for _, a := range algorithmsForKeyType(k.Key.Type()) {
			if !seen[a] {
				seen[a] = true
				algos = append(algos, a)
			}
		}
	}
	return algos, nil
}

// algorithmsForKeyType maps a key type to the host key signature algorithms
// that can be verified with it: an RSA key signs with SHA-2 these days.
func algorithmsForKeyType(t string) []string {
	if t == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{t}
}

// upstreamConn is an authenticated SSH connection to the lander whose
// channels and requests have not been serviced yet.
type upstreamConn struct {
	conn  ssh.Conn
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
}

// dial connects to the lander as user and authenticates with password. The
// password is offered once: by the password method if the lander offers it,
// else as the answer to the lander's keyboard-interactive password prompt.
// It never goes to the lander twice, so one login is one guess there.
//
// The login succeeds only if the lander let the user in with the attempt
// that carried the password: a lander that lets anyone in without it
// (ErrLanderNoPassword) is refused, and so is one that wants more after it.
func (l *lander) dial(ctx context.Context, user, password string) (*upstreamConn, error) {
	auth := &passwordOnce{password: password}
	up, err := l.connect(ctx, user, func(cfg *ssh.ClientConfig, _ net.Conn) error {
		// The callback, not a list in Auth, picks each method: only it
		// sees whether the attempt that carried the password failed.
		cfg.AuthCallback = auth.next
		return nil
	}, func() bool { return auth.sent })
	if err != nil {
		return nil, err
	}
	if !auth.sent {
		// The lander let the user in before the password went out: by
		// "none", or a keyboard-interactive exchange without questions.
		// No later attempt can follow the one that carried the password
		// (passwordOnce.next), so a password sent means the password let
		// the user in.
		up.conn.Close()
		return nil, fmt.Errorf("%w; refused as if %w", ErrLanderNoPassword, ErrPasswordRejected)
	}
	return up, nil
}

// dialCert connects to the lander as user and authenticates with a
// certificate that sign makes for the connection's local address (the
// certificate's source-address): a key login (see certFor).
func (l *lander) dialCert(ctx context.Context, user string, sign func(local net.Addr) (ssh.Signer, error)) (*upstreamConn, error) {
	offered := false
	up, err := l.connect(ctx, user, func(cfg *ssh.ClientConfig, nc net.Conn) error {
		signer, err := sign(nc.LocalAddr())
		if err != nil {
			return err
		}
		cfg.Auth = []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			offered = true
			return []ssh.Signer{signer}, nil
		})}
		return nil
	}, func() bool { return offered })
	if errors.Is(err, ErrPasswordRejected) {
		err = fmt.Errorf("%w: %w", ErrLanderRefusedCert, err)
	}
	return up, err
}

// connect dials the lander and logs in as user with the methods setAuth
// puts into the client config; sent reports, after a failed handshake,
// whether the credential went out (then the failure is the lander refusing
// it, ErrPasswordRejected).
func (l *lander) connect(ctx context.Context, user string, setAuth func(*ssh.ClientConfig, net.Conn) error, sent func() bool) (*upstreamConn, error) {
	var d net.Dialer
	dialCtx, cancel := context.WithTimeout(ctx, l.handshakeTime)
	defer cancel()
	nc, err := d.DialContext(dialCtx, "tcp", l.addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLanderUnavailable, err)
	}
	// ClientConfig.Timeout covers only the TCP dial; the deadline covers the
	// handshake and authentication, so a wedged lander cannot hold a login.
	deadline, _ := dialCtx.Deadline()
	_ = nc.SetDeadline(deadline)

	var hostKeyOK, hostKeyBad bool
	cfg := &ssh.ClientConfig{
		User: user,
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			if err := l.hostKeyCheck(host, remote, key); err != nil {
				hostKeyBad = true
				return err
			}
			hostKeyOK = true
			return nil
		},
		HostKeyAlgorithms: l.hostKeyAlgos,
		ClientVersion:     VersionString,
	}
	// AES-GCM first on the leg to the lander: both ends usually have AES
	// instructions, where it is the fastest cipher.
	cfg.Ciphers = []string{
		"aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
		"chacha20-poly1305@openssh.com",
		"aes128-ctr", "aes192-ctr", "aes256-ctr",
	}
	if err := setAuth(cfg, nc); err != nil {
		nc.Close()
		return nil, err
	}

	// Quick ACKs on this leg too: sshd leaves Nagle's algorithm on during
	// the handshake as the OpenSSH client does, and a packet it sends right
	// after another waited for our delayed ACK, up to 40 ms, in many logins
	// (bench/ab.sh with LOGINS=40, taking turns: medians 433 → 390 ms).
	// The caller may give up (the client's connection closed under a
	// shutdown): the handshake, which watches only its deadline, ends too.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	conn, chans, reqs, err := ssh.NewClientConn(connserve.WithQuickAck(sockio.Conn(nc), sshSetupBytes), l.addr, cfg)
	if !stop() && err == nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %w", ErrLanderUnavailable, context.Cause(ctx))
	}
	if err != nil {
		nc.Close()
		switch {
		case ctx.Err() != nil:
			// Given up on, not refused: no failure counts against the user.
			return nil, fmt.Errorf("%w: %w", ErrLanderUnavailable, context.Cause(ctx))
		case hostKeyBad:
			return nil, fmt.Errorf("%w: %v", ErrLanderHostKey, err)
		case hostKeyOK && sent():
			return nil, fmt.Errorf("%w: %v", ErrPasswordRejected, err)
		default:
			return nil, fmt.Errorf("%w: %v", ErrLanderUnavailable, err)
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return &upstreamConn{conn: conn, chans: chans, reqs: reqs}, nil
}

// passwordOnce is the gatekeeper's side of one login at the lander: it
// sends the password at most once and tries nothing after the attempt that
// carried it. x/crypto runs its methods on the dialing goroutine, one at a
// time, so it needs no lock.
type passwordOnce struct {
	password string
	// sent is set when the password has gone out, by either method.
	sent bool
}

// next is the ssh.ClientAuthCallback: x/crypto calls it after "none" and
// after each failed or partly successful attempt, to pick the next method.
func (p *passwordOnce) next(ctx *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
	if p.sent {
		// The attempt that carried the password did not let the user in:
		// the password was wrong (one guess only), or the lander wants
		// more than a password, which the gatekeeper cannot give.
		return nil, fmt.Errorf("lander did not accept the password alone (refused %v, partly accepted %v, now offers %v)",
			ctx.TriedMethods, ctx.PartialSuccessMethods, ctx.AllowedMethods)
	}
	untried := func(m string) bool {
		return slices.Contains(ctx.AllowedMethods, m) && !slices.Contains(ctx.TriedMethods, m) &&
			!slices.Contains(ctx.PartialSuccessMethods, m)
	}
	switch {
	case untried(methodPassword):
		return ssh.PasswordCallback(p.passwordMethod), nil
	case untried(methodKeyboardInteractive):
		return ssh.KeyboardInteractive(p.challenge), nil
	}
	return nil, fmt.Errorf("lander offers no method to send a password to (offers %v)", ctx.AllowedMethods)
}

// passwordMethod answers the password method.
func (p *passwordOnce) passwordMethod() (string, error) {
	if p.sent {
		return "", errors.New("password already sent once")
	}
	p.sent = true
	return p.password, nil
}

// challenge answers one keyboard-interactive round: the password goes into
// the hidden prompts (PAM's "Password:"); rounds without questions are
// informational and get an empty answer.
func (p *passwordOnce) challenge(_, _ string, questions []string, echos []bool) ([]string, error) {
	if len(questions) == 0 {
		return nil, nil
	}
	if p.sent {
		return nil, errors.New("lander asked again after the password: wrong password, or a second factor of its own")
	}
	answers := make([]string, len(questions))
	hidden := false
	for i := range questions {
		if !echos[i] {
			answers[i] = p.password
			hidden = true
		}
	}
	if !hidden {
		// Echoed questions are not a password prompt: do not guess.
		return nil, fmt.Errorf("lander asked %d question(s) without a hidden password prompt", len(questions))
	}
	p.sent = true
	return answers, nil
}

// ping checks that the lander answers with an SSH version line, without
// logging in. The answer is reused for probeTTL (see probeCache).
func (l *lander) ping(ctx context.Context) error { return l.health.get(ctx) }

// probe dials the lander and reads the start of its version line.
func (l *lander) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", l.addr)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLanderUnavailable, err)
	}
	defer nc.Close()
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	buf := make([]byte, 4)
	if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != "SSH-" {
		return fmt.Errorf("%w: no SSH version line from %s", ErrLanderUnavailable, l.addr)
	}
	return nil
}

// probeCache reuses the result of a probe, success or failure, for ttl, and
// lets callers that arrive while a probe runs wait for it instead of
// starting their own: however often it is asked, the lander sees at most
// one probe per ttl.
type probeCache struct {
	ttl   time.Duration
	now   func() time.Time // the clock; tests replace it
	probe func(context.Context) error

	mu sync.Mutex
	// at is when the last probe finished (zero: none yet), err its result.
	at  time.Time
	err error
	// running is closed when the probe in flight finishes; nil if none.
	running chan struct{}
}

// get returns the last probe's result if it is younger than ttl, else
// probes. A caller whose ctx ends while it waits for another caller's probe
// gets ErrLanderUnavailable; the probe itself runs to its own timeout, so
// that an impatient caller does not leave a failure in the cache.
func (c *probeCache) get(ctx context.Context) error {
	c.mu.Lock()
	if age := c.now().Sub(c.at); !c.at.IsZero() && age >= 0 && age < c.ttl {
		defer c.mu.Unlock()
		return c.err
	}
	if running := c.running; running != nil {
		c.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrLanderUnavailable, ctx.Err())
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	}
	running := make(chan struct{})
	c.running = running
	c.mu.Unlock()

	err := c.probe(context.WithoutCancel(ctx))

	c.mu.Lock()
	defer c.mu.Unlock()
	c.at, c.err, c.running = c.now(), err, nil
	close(running)
	return err
}
