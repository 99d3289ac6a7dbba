package gatekeeper

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// LoadHostKeys reads the gatekeeper's SSH host keys. A file that does not
// exist yet gets a new ed25519 key, written 0600 — the same first-start
// behaviour as sshd-keygen. A file that exists but cannot be parsed is an
// error: silently replacing it would change the host key users trust.
func LoadHostKeys(files []string) ([]ssh.Signer, error) {
	if len(files) == 0 {
		return nil, errors.New("host_key_files: at least one host key is required")
	}
	var signers []ssh.Signer
	for i, f := range files {
		s, err := loadOrCreateHostKey(f)
		if err != nil {
			return nil, fmt.Errorf("host_key_files[%d]: %w", i, err)
		}
		signers = append(signers, s)
	}
	return signers, nil
}

// HandshakeKeys returns the first key of each type in keys, in their order:
// the keys a door offers in its key exchanges, as sshd uses the first
// HostKey of each type. (x/crypto's ServerConfig.AddHostKey keeps the last
// key of a type.) Every key is announced to clients once they are logged in
// (OpenSSH's UpdateHostKeys, see relay.Options.HostKeys), so that a new key
// listed after the one in use is learned before it is put first.
func HandshakeKeys(keys []ssh.Signer) []ssh.Signer {
	var first []ssh.Signer
	seen := map[string]bool{}
	for _, k := range keys {
		if t := k.PublicKey().Type(); !seen[t] {
			seen[t] = true
			first = append(first, k)
		}
	}
	return first
}

func loadOrCreateHostKey(path string) (ssh.Signer, error) {
	return loadOrCreateKey(path, "gatekeeper host key")
}

// loadOrCreateKey reads the ed25519 private key at path, creating it (with
// comment) when the file does not exist.
func loadOrCreateKey(path, comment string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = createKey(path, comment)
	}
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s is not a usable private key: %w", path, err)
	}
	return signer, nil
}

// createKey writes a new ed25519 key with O_EXCL, so two daemons started
// at once cannot both write one and end up with different keys.
func createKey(path, comment string) ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, err
	}
	data := pem.EncodeToMemory(block)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return os.ReadFile(path) // another process won the race; use its key
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return data, nil
}
