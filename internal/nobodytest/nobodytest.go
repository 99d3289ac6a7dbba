// Package nobodytest runs a test again as the user nobody, for the tests of what an ordinary
// user meets (a permission check) when the suite runs as root, as make test does.
package nobodytest

import (
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Rerun runs the top-level test t again, in a copy of the test binary, as the user nobody,
// and fails t unless it passes there. A test of what an ordinary user meets (a permission
// check) calls it when it runs as root, who passes every such check, and returns: so `make
// test`, which runs as root, still checks it. The copy and the temporary directory (TMPDIR)
// of the child are where nobody may reach them: the build directory is private to root.
func Rerun(t *testing.T) {
	t.Helper()
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("nobodytest.Rerun runs top-level tests only, not %s", t.Name())
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("user nobody, to run %s as: %v", t.Name(), err)
	}
	uid, err1 := strconv.ParseUint(nobody.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(nobody.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		t.Fatalf("user nobody has uid %q, gid %q", nobody.Uid, nobody.Gid)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "gktest-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tmp := filepath.Join(dir, "tmp")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(self))
	copyExecutable(t, self, bin)

	cmd := exec.Command(bin, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	// GORACE: the race detector otherwise waits a second before a clean exit.
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "HOME="+tmp, "GORACE=atexit_sleep_ms=0")
	cmd.Dir = tmp
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	// -test.v prints "--- SKIP" for a skip: only a pass counts.
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()+" ") {
		t.Fatalf("%s as nobody (uid %d): %v\n%s", t.Name(), uid, err, out)
	}
}

// copyExecutable copies the program src to dst, executable by everyone.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
