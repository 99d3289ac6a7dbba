package gatekeeper

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

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
		if err := replaceFile(path+".pub", line, 0o644); err != nil {
			return nil, fmt.Errorf("keys.lander_ca_file: write the public key: %w", err)
		}
	}
	return signer, nil
}

// replaceFile puts data at path with mode through a new temporary file in
// the same directory, renamed over path. The temporary file is made with a
// new random name (O_EXCL): never through a name someone else placed there,
// such as a symbolic link to a file of root's, which a fixed name would
// follow when root runs serve in the service user's directory.
func replaceFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
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
