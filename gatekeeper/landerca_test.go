package gatekeeper

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestLanderCAPublicKeyNotThroughALink: the public key file is written through a new
// temporary file, never through a name someone placed in the directory beforehand (the
// service user owns it; root may run serve there): a symbolic link at the old fixed
// temporary name is left alone, and its target untouched.
func TestLanderCAPublicKeyNotThroughALink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "lander_user_ca")
	if err := os.Symlink(victim, path+".pub.tmp"); err != nil {
		t.Fatal(err)
	}
	signer, err := LoadLanderCA(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the link's target was written: %q", b)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil || !bytes.Equal(pub, LanderCALine(signer.PublicKey())) {
		t.Errorf("public key file = %q, %v", pub, err)
	}
	if fi, err := os.Lstat(path + ".pub"); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Errorf("public key file: %v, %v; want a regular file, 0644", fi, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 { // the key, its .pub, the planted link
		t.Errorf("%d files left in the directory, want 3", len(ents))
	}
}
