package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAdoptNew: as root, files that create made go to the directory's owner, also when create
// failed after making them; a name that create left as a link, or a file with a second link,
// is not changed (the directory's owner could have put it there to make root change a file of
// root's); paths that existed before keep their owner.
func TestAdoptNew(t *testing.T) {
	needRoot(t, "give files to another uid")
	const uid, gid = 54321, 54322
	dir := t.TempDir()
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(t.TempDir(), "roots")
	if err := os.WriteFile(rootFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	if err := os.WriteFile(p("old"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	failed := errors.New("the second file failed")
	err := adoptNew([]string{p("made"), p("link"), p("hard"), p("old"), p("never")}, func() error {
		if err := os.WriteFile(p("made"), nil, 0o600); err != nil {
			return err
		}
		if err := os.Symlink(rootFile, p("link")); err != nil {
			return err
		}
		if err := os.Link(rootFile, p("hard")); err != nil {
			return err
		}
		return failed
	})
	if !errors.Is(err, failed) {
		t.Errorf("adoptNew = %v, want create's error", err)
	}
	owner := func(path string) uint32 {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Uid
	}
	if u := owner(p("made")); u != uid {
		t.Errorf("a file made before create failed is uid %d's, want the directory owner's %d", u, uid)
	}
	for _, path := range []string{rootFile, p("link"), p("old")} {
		if u := owner(path); u != 0 {
			t.Errorf("%s went to uid %d", path, u)
		}
	}
	// Without the failure, a link left at a new name is an error of its own.
	err = adoptNew([]string{p("link2")}, func() error { return os.Symlink(rootFile, p("link2")) })
	if err == nil || !strings.Contains(err.Error(), "give "+p("link2")) {
		t.Errorf("adoptNew of a name made a link = %v, want an error naming it", err)
	}
	if u := owner(rootFile); u != 0 {
		t.Errorf("root's file went to uid %d", u)
	}
}

// needRoot stops t unless it runs as root, which it needs to do what: skipped outside CI, failed
// in CI, which must run it.
func needRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs root to %s; CI must run this test", what)
	}
	t.Skipf("needs root to %s", what)
}
