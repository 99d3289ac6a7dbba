package gatekeeper

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/gatekeeper/store"
)

// Key logins (keys.enabled). A user's SSH key registered at the gatekeeper
// takes the place of the password: from outside the trusted networks the key
// and then a code, from the trusted networks the key alone; an automation
// key logs in without a code from its networks until it expires; a key that
// logged in with a code from a network may skip the code from there for
// keys.remember. The client's signature is bound to this connection and
// cannot be passed on, so the gatekeeper logs in to the lander with a
// certificate of its own CA, made for that one login (certSigner).
//
// x/crypto calls publicKey for every key the client offers (with or without
// a signature; it remembers the answer per key for the connection), and
// verifiedKey only once the client has proven it holds the key. Nothing is
// decided or recorded before that.

// How a key login's second factor was satisfied, beside secondFactorCode,
// secondFactorRecovery and secondFactorTrusted.
const (
	secondFactorAutomation = "automation_key"
	secondFactorRemembered = "remembered"
)

// keyExtension carries a registered key's fingerprint from publicKey to
// verifiedKey.
const keyExtension = "fingerprint@gatekeeper"

// certBackdate makes a certificate valid from a little before now, for a
// lander whose clock is behind.
const certBackdate = time.Minute

// errKeyNotAccepted is x/crypto's answer for a key that is not registered,
// has expired or is offered from outside its networks: the client goes on
// with its next key or method (the password, as without keys).
var errKeyNotAccepted = errors.New("key not registered for this user")

// publicKey is the PublicKeyCallback: it accepts a key registered for the
// user, unexpired, offered from one of its networks.
func (a *attempt) publicKey(conn ssh.ConnMetadata, pub ssh.PublicKey) (*ssh.Permissions, error) {
	s := a.srv
	user := conn.User()
	if s.checkName(user) != nil {
		return nil, errKeyNotAccepted
	}
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return nil, errKeyNotAccepted
	}
	u, err := s.store.Get(user)
	if err != nil {
		a.log.Warn("key login: the user's record could not be read", "user", user, "err", err)
		return nil, errKeyNotAccepted
	}
	fp := ssh.FingerprintSHA256(pub)
	i := store.FindKey(u.Keys, fp)
	if i < 0 {
		return nil, errKeyNotAccepted
	}
	k := u.Keys[i]
	switch {
	case k.Expired(s.now()):
		a.log.Info("key refused: expired", "user", user, "fingerprint", fp, "expired", k.Expires)
		return nil, errKeyNotAccepted
	case !a.keyAllowedFrom(k):
		a.log.Info("key refused: not from its networks", "user", user, "fingerprint", fp, "from", k.From)
		return nil, errKeyNotAccepted
	}
	return &ssh.Permissions{Extensions: map[string]string{keyExtension: fp}}, nil
}

// verifiedKey is the VerifiedPublicKeyCallback: the client holds a key
// publicKey accepted. It lets the user in without a code (automation key,
// trusted network, remembered device) or asks for the code.
func (a *attempt) verifiedKey(conn ssh.ConnMetadata, _ ssh.PublicKey, perms *ssh.Permissions, _ string) (*ssh.Permissions, error) {
	s := a.srv
	user := conn.User()
	fp := perms.Extensions[keyExtension]
	a.keyFP, a.keyEpoch = fp, s.keyEpoch(user)
	how := secondFactorCode
	u, err := s.store.Get(user)
	if i := store.FindKey(u.Keys, fp); err == nil && i >= 0 {
		how = s.keyNeeds(u, u.Keys[i], a.remote, a.known, a.trusted)
	}
	if how != secondFactorCode {
		return a.decide(conn, "publickey", time.Now(), func(ctx context.Context) (*upstreamConn, string, error) {
			return a.keyLogin(ctx, user, fp, "", how)
		})
	}
	return nil, &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{
		KeyboardInteractiveCallback: func(conn ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			code, err := askOne(ask, PromptCode)
			if err != nil {
				return nil, err
			}
			return a.decide(conn, "publickey+keyboard-interactive", time.Now(), func(ctx context.Context) (*upstreamConn, string, error) {
				return a.keyLogin(ctx, user, fp, code, secondFactorCode)
			})
		},
	}}
}

// keyAllowedFrom reports whether k may log in from where this attempt comes
// from. A key bound to networks is never let in over a connection whose
// client is unknown (a PROXY header without an address): its remote is the
// load balancer's own address.
func (a *attempt) keyAllowedFrom(k store.Key) bool {
	if len(k.From) > 0 && !a.known {
		return false
	}
	return k.AllowsFrom(a.remote)
}

// keyNeeds says what k must show besides itself from remote: nothing for an
// automation key, from the trusted networks, or from a network remembered
// for it; otherwise a code (secondFactorCode). known is false when remote is
// not the client's (see attempt.known): no network is remembered for it.
func (s *Server) keyNeeds(u store.User, k store.Key, remote netip.Addr, known, trusted bool) string {
	switch {
	case k.Automation:
		return secondFactorAutomation
	case trusted:
		return secondFactorTrusted
	case known && u.State == store.StateActive && s.remembered(u, k.Fingerprint, remote):
		return secondFactorRemembered
	}
	return secondFactorCode
}

// rememberPrefix is the network a remembered device is bound to: the
// address's /24, or /64 for IPv6.
func rememberPrefix(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := 24
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// remembered reports whether key fp logged in with a code from remote's
// network less than keys.remember ago.
func (s *Server) remembered(u store.User, fp string, remote netip.Addr) bool {
	if s.config().Keys.Remember <= 0 {
		return false
	}
	network, now := rememberPrefix(remote).String(), s.now()
	return slices.ContainsFunc(u.Remembered, func(m store.Remembered) bool {
		return m.Fingerprint == fp && m.Network == network && now.Before(m.Until)
	})
}

// keyLogin is the policy of a key login: the key is read again (it may have
// been revoked or have expired since it was offered), lockouts apply as to
// password logins, a code is checked (how secondFactorCode) exactly as
// withCode does, and the lander is logged in to with a certificate.
func (a *attempt) keyLogin(ctx context.Context, user, fp, code, how string) (*upstreamConn, string, error) {
	s := a.srv
	u, err := s.store.Get(user)
	if err != nil {
		return nil, "", internalError(err)
	}
	i := store.FindKey(u.Keys, fp)
	if i < 0 || u.Keys[i].Expired(s.now()) || !a.keyAllowedFrom(u.Keys[i]) {
		return nil, "", &LoginError{ReasonKeyRevoked, fmt.Errorf("key %s is no longer registered, has expired or is not allowed from here", fp)}
	}
	k := u.Keys[i]
	a.keyExpires = k.Expires
	if how != secondFactorCode {
		// No guess is checked here, so nothing is reserved or counted; a
		// locked-out user or source stays locked out all the same, in the
		// scope of where the login comes from: failures from outside never
		// refuse a login from the trusted networks, an automation key's
		// included.
		keys := append(sourceKeys(a.remote, a.trusted), userKey(user, a.trusted))
		if lk := s.limiter.check(keys); lk != nil {
			return nil, "", lockedError(lk)
		}
		up, err := a.landerCert(ctx, user, k)
		if err != nil {
			return nil, "", err
		}
		s.keyUsed(user, fp, netip.Prefix{}, time.Time{})
		return up, how, nil
	}

	src := sourceKeys(a.remote, false)
	var mark loginMark
	res, how, err := s.spendCode(ctx, user, code, u.State == store.StateActive, a.remote, src, codeKey(user, false), &mark)
	if err != nil {
		return nil, "", err
	}
	// The code was right and the key is the first factor: nothing is left
	// to guess, so the places go back whatever the lander says.
	res.succeed() // the address's failures too: its place is still held
	up, err := a.landerCert(ctx, user, k)
	if err != nil {
		s.unrecordLogin(user, mark)
		return nil, "", err
	}
	var remember netip.Prefix
	if s.config().Keys.Remember > 0 && a.known {
		remember = rememberPrefix(a.remote)
	}
	s.keyUsed(user, fp, remember, u.EnrolledAt)
	return up, how, nil
}

// landerCert logs user in at the lander with a certificate for key k.
func (a *attempt) landerCert(ctx context.Context, user string, k store.Key) (*upstreamConn, error) {
	s := a.srv
	if a.sessionID == 0 {
		a.sessionID = s.reserveSessionID()
	}
	up, err := s.lander.dialCert(ctx, user, s.certSigner(user, k, a.remote, a.sessionID))
	switch {
	case errors.Is(err, ErrLanderRefusedCert):
		return nil, &LoginError{ReasonLanderRefusedCert, err}
	case errors.Is(err, ErrLanderHostKey):
		return nil, &LoginError{ReasonLanderHostKey, err}
	case err != nil:
		return nil, &LoginError{ReasonLanderUnavailable, err}
	}
	return up, nil
}

// certSigner returns what makes the certificate of one key login once the
// connection to the lander is open: a new ed25519 key signed by the lander
// CA for principal user, valid for keys.cert_validity, usable only from the
// gatekeeper's own address towards the lander (source-address), running only
// k's command if it has one (force-command), and with a key id naming this
// node, the session and the client's real address, so that the lander's own
// log says who came from where.
func (s *Server) certSigner(user string, k store.Key, remote netip.Addr, sessionID uint64) func(local net.Addr) (ssh.Signer, error) {
	return func(local net.Addr) (ssh.Signer, error) {
		if s.landerCA == nil {
			return nil, errors.New("no lander CA (keys.enabled is off)")
		}
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		signer, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			return nil, err
		}
		var serial [8]byte
		if _, err := rand.Read(serial[:]); err != nil {
			return nil, err
		}
		from := local.String()
		if t, ok := local.(*net.TCPAddr); ok {
			from = t.IP.String()
		}
		// The lander checks the times with its own clock, not the
		// gatekeeper's injected one.
		now := time.Now()
		cert := &ssh.Certificate{
			Key:             signer.PublicKey(),
			Serial:          binary.BigEndian.Uint64(serial[:]),
			CertType:        ssh.UserCert,
			KeyId:           fmt.Sprintf("gatekeeper node=%s session=%d client=%s key=%s", s.node, sessionID, remote, k.Fingerprint),
			ValidPrincipals: []string{user},
			ValidAfter:      uint64(now.Add(-certBackdate).Unix()),
			ValidBefore:     uint64(now.Add(s.config().Keys.CertValidity).Unix()),
			Permissions: ssh.Permissions{
				CriticalOptions: map[string]string{"source-address": from},
				// What OpenSSH's ssh-keygen grants a user certificate by
				// default: the lander's own sshd_config still decides.
				Extensions: map[string]string{
					"permit-X11-forwarding":   "",
					"permit-agent-forwarding": "",
					"permit-port-forwarding":  "",
					"permit-pty":              "",
					"permit-user-rc":          "",
				},
			},
		}
		if k.Command != "" {
			// Only the command, as authorized_keys' command= with
			// restrict: no forwarding (a tunnel into the cluster), no
			// pty, and no ~/.ssh/rc, which sshd would run before it.
			cert.CriticalOptions["force-command"] = k.Command
			cert.Extensions = map[string]string{}
		}
		if err := cert.SignCert(rand.Reader, s.landerCA); err != nil {
			return nil, fmt.Errorf("sign the lander certificate: %w", err)
		}
		return ssh.NewCertSigner(cert, signer)
	}
}

// keyUsed records a key login: the key's last use, the user's last login
// and, when remember is valid, that the key may skip the code from that
// network for keys.remember, if the device whose code was checked (linked at
// enrolledAt) is still the user's: a phone replaced or reset meanwhile
// forgot the remembered networks, and this login must not bring one back.
// It is bookkeeping: a failure is only logged.
func (s *Server) keyUsed(user, fp string, remember netip.Prefix, enrolledAt time.Time) {
	if s.limiter.down() {
		return // the shared store is not answering: do not make the user wait for it again
	}
	now := s.now()
	err := s.store.Update(user, func(u *store.User) error {
		i := store.FindKey(u.Keys, fp)
		if i < 0 {
			return nil
		}
		u.Keys = slices.Clone(u.Keys)
		u.Keys[i].LastUsed = now
		if u.State != store.StateNone {
			u.LastLogin = now
		}
		if remember.IsValid() && u.State == store.StateActive && u.EnrolledAt.Equal(enrolledAt) {
			network := remember.String()
			kept := slices.DeleteFunc(slices.Clone(u.Remembered), func(m store.Remembered) bool {
				return !now.Before(m.Until) || m.Fingerprint == fp && m.Network == network
			})
			if len(kept) >= store.MaxRemembered {
				kept = kept[len(kept)-store.MaxRemembered+1:]
			}
			u.Remembered = append(kept, store.Remembered{Fingerprint: fp, Network: network, Since: now,
				Until: now.Add(s.config().Keys.Remember)})
		}
		return nil
	})
	if err != nil {
		s.log.Warn("recording a key login failed", "user", user, "fingerprint", fp, "err", err)
		s.storeWriteFailed(err)
	}
}
