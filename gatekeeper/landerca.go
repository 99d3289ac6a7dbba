package gatekeeper

import (
	"bytes"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"
)

// landerCAComment names the CA key in its file and in the lander's
// TrustedUserCAKeys line.
const landerCAComment = "gatekeeper lander user CA"

// LoadLanderCA reads the user CA that signs the certificates of key logins at
// the lander (keys.lander_ca_file), creating a new ed25519 key 0600 when the
// file does not exist, and keeps its public half in path+".pub" (0644), the
// line for the lander's TrustedUserCAKeys. The private key never leaves the
// daemon.
func LoadLanderCA(path string) (ssh.Signer, error) {
	signer, err := loadOrCreateKey(path, landerCAComment)
	if err != nil {
		return nil, fmt.Errorf("keys.lander_ca_file: %w", err)
	}
	if _, ok := signer.PublicKey().(ssh.CryptoPublicKey); !ok || signer.PublicKey().Type() == "" {
		return nil, fmt.Errorf("keys.lander_ca_file: %s: not a plain private key", path)
	}
	line := LanderCALine(signer.PublicKey())
	if old, err := os.ReadFile(path + ".pub"); err != nil || !bytes.Equal(old, line) {
		// Rewritten when missing or stale (the key file was replaced), so
		// that admin lander-ca never prints a key the daemon does not sign
		// with.
		if err := os.WriteFile(path+".pub.tmp", line, 0o644); err != nil {
			return nil, fmt.Errorf("keys.lander_ca_file: write the public key: %w", err)
		}
		if err := os.Rename(path+".pub.tmp", path+".pub"); err != nil {
			return nil, fmt.Errorf("keys.lander_ca_file: write the public key: %w", err)
		}
	}
	return signer, nil
}

// LanderCALine is pub as a TrustedUserCAKeys line.
func LanderCALine(pub ssh.PublicKey) []byte {
	line := bytes.TrimSpace(ssh.MarshalAuthorizedKey(pub))
	return append(line, []byte(" "+landerCAComment+"\n")...)
}

// ReadLanderCA returns the TrustedUserCAKeys line of the CA at path without
// creating anything: from the private key when it can be read, else from
// path+".pub".
func ReadLanderCA(path string) ([]byte, error) {
	if data, err := os.ReadFile(path); err == nil {
		signer, err := ssh.ParsePrivateKey(data)
		if err != nil {
			return nil, fmt.Errorf("%s is not a usable private key: %w", path, err)
		}
		return LanderCALine(signer.PublicKey()), nil
	}
	data, err := os.ReadFile(path + ".pub")
	if err != nil {
		return nil, fmt.Errorf("no lander CA yet (%s and its .pub are not readable: %w); the daemon creates it on its first start with keys.enabled", path, err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s.pub is not a public key: %w", path, err)
	}
	return LanderCALine(pub), nil
}
