package bolt

import (
	"bufio"
	"errors"
	"fmt"
	"gatekeeper/gatekeeper/store"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// mountTmpfs mounts a tmpfs of the given size (mount's size= option) on a
// fresh temporary directory and unmounts it when the test ends. Mounting
// needs root: without it the test is skipped, except under CI (CI=true),
// where it must run and fails instead.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test mounts a tmpfs and must run as root under CI")
		}
		t.Skip("needs root to mount a tmpfs (runs under CI)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	// Registered after TempDir's cleanup, so it runs before the removal.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file into dir until its filesystem is full and returns the
// file's path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return path
		}
	}
}

// wantNoSpace checks that err is the full-disk error for dbPath.
func wantNoSpace(t *testing.T, op string, err error, dbPath string) {
	t.Helper()
	want := "database disk full: free space on the filesystem holding " + dbPath
	if !errors.Is(err, store.ErrNoSpace) || !strings.Contains(err.Error(), want) {
		t.Errorf("%s = %v, want ErrNoSpace saying %q", op, err, want)
	}
}

// bigEvent is an audit event of about 5 KiB.
func bigEvent() store.Event {
	x := strings.Repeat("x", maxEventField)
	return store.Event{Kind: "filler", User: x, Remote: x, Reason: x, Actor: x, Detail: x}
}

// TestDiskFull fills the filesystem holding the database (a real, small
// tmpfs): writes fail with ErrNoSpace and change nothing, reads go on
// working, nothing crashes, and once space is freed writes work again on an
// intact database.
func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	dbPath, keyPath := filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key")
	s := mustOpen(t, dbPath, keyPath)
	fullUser(t, s, "alice", 1)
	if err := s.AddTicket("bob", "bobs-ticket", day0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(store.Event{Kind: store.EventLinkConfirmed, User: "alice"}); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, dir)

	// bbolt first reuses the pages it has freed, so a few writes may still
	// fit; big ones soon do not.
	var err error
	appended := 0
	for ; appended < 1000; appended++ {
		if err = s.Append(bigEvent(), bigEvent()); err != nil {
			break
		}
	}
	wantNoSpace(t, "Append", err, dbPath)
	t.Logf("disk full after %d appends: %v", appended, err)
	err = s.Update("alice", func(u *store.User) error {
		u.LastStep = 99999999
		u.Recovery = hashes(3000) // about 130 KB
		return nil
	})
	wantNoSpace(t, "Update", err, dbPath)
	err = s.AddTicket("carol", strings.Repeat("t", maxTokenLen), day0.Add(time.Hour))
	if err != nil {
		wantNoSpace(t, "AddTicket", err, dbPath)
	}

	// Reads work, and the failed writes left no trace.
	u, err := s.Get("alice")
	if err != nil || u.LastStep != 58000001 || len(u.Recovery) != 2 {
		t.Errorf("Get = %+v, %v; want alice as before", u, err)
	}
	if list, err := s.List(); err != nil || len(list) != 1 {
		t.Errorf("List = %+v, %v", list, err)
	}
	if ev, err := s.Events(store.EventQuery{}); err != nil || len(ev) != 1+2*appended {
		t.Errorf("Events = %d events, %v; want %d", len(ev), err, 1+2*appended)
	}
	if err := s.CheckTicket("bob", "bobs-ticket", day0); err != nil {
		t.Errorf("CheckTicket = %v", err)
	}
	if got := secretOf(t, s, "alice"); len(got) != 20 {
		t.Errorf("secret = %x", got)
	}

	// Many writes on the full disk, small updates between audit events of
	// growing size: each one commits (into pages bbolt has freed) or fails
	// with ErrNoSpace, and reads after it see exactly the updates that
	// committed.
	step, committed, failed := u.LastStep, 0, 0
	for i := range 300 {
		if err := s.Append(store.Event{Kind: "filler", Detail: strings.Repeat("d", i*4)}); err != nil {
			wantNoSpace(t, "Append", err, dbPath)
		}
		err := s.Update("alice", func(u *store.User) error { u.LastStep++; return nil })
		if err == nil {
			step++
			committed++
		} else {
			wantNoSpace(t, "small Update", err, dbPath)
			failed++
		}
		if u, err := s.Get("alice"); err != nil || u.LastStep != step {
			t.Fatalf("after write %d Get = %+v, %v; want LastStep %d", i, u, err, step)
		}
	}
	t.Logf("on the full disk %d small updates committed, %d failed", committed, failed)

	// With space again, writes work, and the file is consistent.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(bigEvent()); err != nil {
		t.Errorf("Append after freeing space: %v", err)
	}
	if err := s.Update("alice", func(u *store.User) error { u.LastStep++; return nil }); err != nil {
		t.Errorf("Update after freeing space: %v", err)
	}
	step++
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkBolt(t, dbPath)
	s = mustOpen(t, dbPath, keyPath)
	if u, err := s.Get("alice"); err != nil || u.LastStep != step {
		t.Errorf("after reopen Get = %+v, %v", u, err)
	}
}

// checkBolt runs bbolt's consistency check on the (closed) database file.
func checkBolt(t *testing.T, dbPath string) {
	t.Helper()
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDiskFullOnCreate: a database created on a nearly full disk gets only
// part of its first pages written. Open fails with ErrNoSpace and removes the
// file, so that the next Open (with space) starts afresh instead of mapping a
// file shorter than its metadata says, which would crash with SIGBUS (or
// refusing an empty file: TestEmptyFile).
func TestDiskFullOnCreate(t *testing.T) {
	dir := mountTmpfs(t, "256k")
	dbPath, keyPath := filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key")
	filler := fill(t, dir)
	// Leave room for two of the four pages bbolt writes to create a file.
	page := int64(os.Getpagesize())
	st, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, st.Size()/page*page-2*page); err != nil {
		t.Fatal(err)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if free := int64(fs.Bavail) * fs.Bsize; free < 2*page || free >= 4*page {
		t.Fatalf("%d bytes free, want room for 2 or 3 pages", free)
	}

	_, err = Open(dbPath, keyPath)
	wantNoSpace(t, "Open", err, dbPath)
	if _, err := os.Stat(dbPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after the failed Open the file is there (%v); want it removed", err)
	}
	if _, err := os.Stat(keyPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("key file made for a database that could not be created: %v", err)
	}
	// Still full: Open fails the same way again.
	_, err = Open(dbPath, keyPath)
	wantNoSpace(t, "second Open", err, dbPath)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, dbPath, keyPath)
	enroll(t, s, "alice", []byte("secret"))
	if got := secretOf(t, s, "alice"); string(got) != "secret" {
		t.Errorf("secret = %q", got)
	}
}

// TestFileSizeLimit: a write past the process's file size limit
// (RLIMIT_FSIZE, EFBIG; bbolt reports it from growing the file, with the
// error chain cut) is ErrNoSpace too. The limit is set in a child process
// (this test binary, running TestFileSizeLimitHelper), not in the tests.
func TestFileSizeLimit(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFileSizeLimitHelper$")
	cmd.Env = append(os.Environ(), "GK_STORE_FSIZE_HELPER="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v; said %s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	var lines []string
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "gk: ") {
			lines = append(lines, strings.TrimPrefix(l, "gk: "))
		}
	}
	dbPath := filepath.Join(dir, "gatekeeper.db")
	want := []string{
		"append: no space: true: database disk full: free space on the filesystem holding " + dbPath,
		"get: ok",
	}
	if len(lines) != len(want) {
		t.Fatalf("helper said %q", out)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("helper said %q, want %q...", lines[i], want[i])
		}
	}
}

// TestFileSizeLimitHelper is not a test: TestFileSizeLimit runs it in a child
// process, where it limits the size of files it may write to 1 MiB and
// appends to a database until that fails.
func TestFileSizeLimitHelper(t *testing.T) {
	dir := os.Getenv("GK_STORE_FSIZE_HELPER")
	if dir == "" {
		return
	}
	// Go ignores SIGXFSZ, so passing the limit is EFBIG from the write.
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(dir, "gatekeeper.db"), filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enroll(t, s, "alice", []byte("secret"))
	for range 2000 {
		if err = s.Append(bigEvent(), bigEvent()); err != nil {
			break
		}
	}
	fmt.Printf("gk: append: no space: %v: %v\n", errors.Is(err, store.ErrNoSpace), err)
	if u, err := s.Get("alice"); err != nil || u.State != store.StateActive {
		fmt.Printf("gk: get: %+v, %v\n", u, err)
	} else {
		fmt.Println("gk: get: ok")
	}
}
