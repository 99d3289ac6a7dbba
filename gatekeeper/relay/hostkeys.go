package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Host key announcements, as OpenSSH's sshd makes them for its clients'
// UpdateHostKeys (on by default for a user with the default known_hosts):
// once logged in, the client is told every host key of the gatekeeper
// (hostkeys-00@openssh.com), asks the gatekeeper to prove that it holds the
// ones it does not know yet (hostkeys-prove-00@openssh.com), and then
// records them, forgetting keys of the gatekeeper it was not told. A new
// host key listed after the one in use is so learned by the users who log
// in before the switch to it, who then see no "host key changed" warning.
// The lander's announcements are dropped (see global): they would teach the
// client the lander's keys under the gatekeeper's name.

// announceHostKeys tells the client the gatekeeper's host keys.
//
// Not inlined: Relay's frame stays on the stack for the session's life (see
// run).
//
//go:noinline
func (r *relay) announceHostKeys() {
	if len(r.hostKeys) == 0 || cannotTakeHostKeys(r.down.ClientVersion()) {
		return
	}
	var payload []byte
	for i, k := range r.hostKeys {
		// A key listed twice is announced once: OpenSSH's client
		// ignores an announcement that repeats a key.
		if blob := k.PublicKey().Marshal(); r.hostKeyIndex(blob) == i {
			payload = appendString(payload, blob)
		}
	}
	if _, _, err := r.down.SendRequest(reqHostkeys, false, payload); err != nil {
		r.log.Debug("host keys not announced", "err", err)
	}
}

// cannotTakeHostKeys reports whether a client of this version breaks on
// hostkeys-00@openssh.com: those OpenSSH's sshd does not send it to (its
// compat.c, SSH_BUG_HOSTKEYS: old Tera Term and Cisco clients).
func cannotTakeHostKeys(version []byte) bool {
	v := string(version)
	for _, proto := range []string{"SSH-2.0-", "SSH-1.99-"} {
		if sw, ok := strings.CutPrefix(v, proto); ok {
			for _, old := range []string{"Cisco-1.", "TeraTerm SSH", "TTSSH/1.5.", "TTSSH/2.1", "TTSSH/2.2",
				"TTSSH/2.3", "TTSSH/2.4", "TTSSH/2.5", "TTSSH/2.6", "TTSSH/2.70", "TTSSH/2.71", "TTSSH/2.72"} {
				if strings.HasPrefix(sw, old) {
					return true
				}
			}
		}
	}
	return false
}

// proveHostKeys answers the client's hostkeys-prove-00@openssh.com: for
// each key it names (each one of r.hostKeys, each at most once) a
// signature of the request's prefix, the session ID and the key, made as
// sshd makes it; refused when a key is not one of ours, so that a client
// cannot have the gatekeeper sign anything else or sign over and over.
func (r *relay) proveHostKeys(req *ssh.Request) {
	if !req.WantReply {
		return
	}
	// OpenSSH's client asks once a connection; more would only make the
	// gatekeeper sign, over and over.
	if r.proved.Swap(true) {
		r.log.Debug("host key proof refused: asked before on this connection")
		_ = req.Reply(false, nil)
		return
	}
	resp, ok := r.hostKeyProofs(req.Payload)
	if !ok {
		r.log.Debug("host key proof refused", "bytes", len(req.Payload))
		_ = req.Reply(false, nil)
		return
	}
	if err := req.Reply(true, resp); err != nil {
		r.log.Debug("host key proof not sent", "err", err)
	}
}

// hostKeyProofs is proveHostKeys' answer to payload, false when it cannot
// be given.
func (r *relay) hostKeyProofs(payload []byte) ([]byte, bool) {
	sessionID := r.down.SessionID()
	kexAlgo := ""
	if a, ok := innerConn(r.down).(ssh.AlgorithmsConnMetadata); ok {
		kexAlgo = a.Algorithms().HostKey
	}
	var resp []byte
	used := make([]bool, len(r.hostKeys))
	for len(payload) > 0 {
		blob, rest, ok := parseString(payload)
		if !ok {
			return nil, false
		}
		payload = rest
		i := r.hostKeyIndex(blob)
		if i < 0 || used[i] {
			return nil, false
		}
		used[i] = true
		data := ssh.Marshal(struct {
			Prefix    string
			SessionID []byte
			Key       []byte
		}{reqHostkeysPrv, sessionID, blob})
		sig, err := signProof(r.hostKeys[i], data, kexAlgo)
		if err != nil {
			r.log.Warn("host key proof not signed", "err", err)
			return nil, false
		}
		resp = appendString(resp, ssh.Marshal(sig))
	}
	return resp, true
}

// hostKeyIndex returns the index in r.hostKeys of the key whose wire form
// is blob, or -1.
func (r *relay) hostKeyIndex(blob []byte) int {
	for i, k := range r.hostKeys {
		if bytes.Equal(k.PublicKey().Marshal(), blob) {
			return i
		}
	}
	return -1
}

// signProof signs data with k as sshd signs a host key proof: an RSA key
// with the RSA algorithm of the key exchange when that used one (OpenSSH's
// client checks the proof with it; ssh-rsa only for an old client that
// asked for it in the key exchange, whose signature it already took), else
// with rsa-sha2-512; any other key with its own algorithm.
func signProof(k ssh.Signer, data []byte, kexAlgo string) (*ssh.Signature, error) {
	if k.PublicKey().Type() != ssh.KeyAlgoRSA {
		return k.Sign(rand.Reader, data)
	}
	algo := ssh.KeyAlgoRSASHA512
	if kexAlgo == ssh.KeyAlgoRSA || strings.HasPrefix(kexAlgo, "rsa-sha2-") {
		algo = kexAlgo
	}
	as, ok := k.(ssh.AlgorithmSigner)
	if !ok {
		// Sign would choose ssh-rsa (SHA-1) for it.
		return nil, errors.New("an RSA host key that cannot choose its signature algorithm")
	}
	return as.SignWithAlgorithm(rand.Reader, data, algo)
}

// innerConn returns the connection under c when c is a *ssh.ServerConn,
// whose own method set holds only the ssh.Conn interface's methods.
func innerConn(c ssh.Conn) ssh.Conn {
	if sc, ok := c.(*ssh.ServerConn); ok {
		return sc.Conn
	}
	return c
}

// appendString appends s as an SSH string (RFC 4251 5).
func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// parseString takes an SSH string from the front of b.
func parseString(b []byte) (s, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}
