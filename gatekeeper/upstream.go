package gatekeeper

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
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
)

// lander dials the real sshd and authenticates there with the user's
// password. It holds no per-user state and is safe for concurrent use.
type lander struct {
	addr          string
	hostKeyCheck  ssh.HostKeyCallback
	hostKeyAlgos  []string
	handshakeTime time.Duration
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
	return &lander{addr: addr, hostKeyCheck: cb, hostKeyAlgos: algos, handshakeTime: 15 * time.Second}, nil
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
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	var keyErr *knownhosts.KeyError
	if err := cb(addr, tcp, probe); !errors.As(err, &keyErr) {
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
func (l *lander) dial(ctx context.Context, user, password string) (*upstreamConn, error) {
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

	var hostKeyOK, hostKeyBad, offered bool
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
		ClientVersion:     "SSH-2.0-gatekeeper",
		Auth: []ssh.AuthMethod{
			ssh.PasswordCallback(func() (string, error) {
				offered = true
				return password, nil
			}),
			ssh.KeyboardInteractive(func(name, instruction string, questions []string, echos []bool) ([]string, error) {
				if len(questions) == 0 {
					return nil, nil // an informational round
				}
				if offered {
					return nil, ErrPasswordRejected
				}
				offered = true
				answers := make([]string, len(questions))
				for i := range questions {
					if !echos[i] {
						answers[i] = password
					}
				}
				return answers, nil
			}),
		},
	}
	// AES-GCM first on the leg to the lander: both ends usually have AES
	// instructions, where it is the fastest cipher.
	cfg.Ciphers = []string{
		"aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
		"chacha20-poly1305@openssh.com",
		"aes128-ctr", "aes192-ctr", "aes256-ctr",
	}

	conn, chans, reqs, err := ssh.NewClientConn(nc, l.addr, cfg)
	if err != nil {
		nc.Close()
		switch {
		case hostKeyBad:
			return nil, fmt.Errorf("%w: %v", ErrLanderHostKey, err)
		case hostKeyOK && offered:
			return nil, ErrPasswordRejected
		default:
			return nil, fmt.Errorf("%w: %v", ErrLanderUnavailable, err)
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return &upstreamConn{conn: conn, chans: chans, reqs: reqs}, nil
}

// ping checks that the lander answers with an SSH version line, without
// logging in.
func (l *lander) ping(ctx context.Context) error {
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
