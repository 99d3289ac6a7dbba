package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// LoadKey reads the secret key file, creating it when it is missing and the
// store (where: "database /var/lib/...", "etcd cluster ...") holds no user
// record (hasRecords false): a new key would make every record unusable.
// created reports a new key. A key file readable by group or others, or of
// the wrong size, is refused.
func LoadKey(keyPath, where string, hasRecords bool) (key []byte, created bool, err error) {
	f, err := os.Open(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		if hasRecords {
			return nil, false, fmt.Errorf("%s is sealed under a secret key already, but secret key file %s does not exist; "+
				"copy that key file from a node that uses the same store, or restore it from a backup "+
				"(a new key could not open what is sealed): %w",
				where, keyPath, ErrKeyMissing)
		}
		key, err := createKey(keyPath)
		if err != nil && IsNoSpace(err) {
			err = NoSpace(keyPath, err)
		}
		return key, err == nil, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("secret key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	switch {
	case err != nil:
		return nil, false, fmt.Errorf("secret key file: %w", err)
	case !st.Mode().IsRegular():
		return nil, false, fmt.Errorf("secret key file %s is not a regular file", keyPath)
	case st.Mode().Perm()&0o077 != 0:
		return nil, false, fmt.Errorf("secret key file %s has mode %04o: it must not be accessible to group or others (chmod 600 %s)",
			keyPath, st.Mode().Perm(), keyPath)
	case st.Size() != KeySize:
		return nil, false, fmt.Errorf("secret key file %s holds %d bytes, a gatekeeper key has %d", keyPath, st.Size(), KeySize)
	}
	key = make([]byte, KeySize)
	if _, err := io.ReadFull(f, key); err != nil {
		return nil, false, fmt.Errorf("read secret key file %s: %w", keyPath, err)
	}
	return key, false, nil
}

// createKey writes a new random key to keyPath (0600, never over an existing
// file) and syncs it and its directory before the key is used, so that no
// secret is ever sealed under a key that a crash could lose.
func createKey(keyPath string) (key []byte, err error) {
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate secret key: %w", err)
	}
	dir := filepath.Dir(keyPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create secret key directory: %w", err)
	}
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create secret key file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(keyPath)
		}
	}()
	if _, err := f.Write(key); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("write secret key file %s: %w", keyPath, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("sync secret key file %s: %w", keyPath, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write secret key file %s: %w", keyPath, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		_ = d.Close()
		if err != nil {
			return nil, fmt.Errorf("sync directory %s: %w", dir, err)
		}
	}
	return key, nil
}

// IsNoSpace reports whether err says that a write found no room: the
// filesystem is full (ENOSPC), the owner's quota is used up (EDQUOT), or the
// file would pass its size limit (EFBIG, RLIMIT_FSIZE). bbolt formats some of
// these with %s rather than %w ("file resize error: ...", "mmap allocate
// error: ..."), which cuts the error chain, so the errno's text counts too.
func IsNoSpace(err error) bool {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG} {
		if errors.Is(err, errno) || strings.Contains(err.Error(), errno.Error()) {
			return true
		}
	}
	return false
}

// NoSpace is the ErrNoSpace error for a failed write to path.
func NoSpace(path string, err error) error {
	return fmt.Errorf("%w: free space on the filesystem holding %s (%w)", ErrNoSpace, path, err)
}
