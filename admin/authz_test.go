package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// nobody is the uid and gid the tests give to callers that are not root.
const nobody = 65534

func TestAuthorizerAllow(t *testing.T) {
	logs := newLogBuffer()
	a := newAuthorizer([]string{"root", "gk-no-such-group"}, slog.New(slog.NewJSONHandler(logs, nil)))
	a.self = 4242 // as if the daemon ran as uid 4242
	logs.waitFor(t, func(rec map[string]any) bool {
		return rec["level"] == "WARN" && rec["group"] == "gk-no-such-group"
	})
	tests := []struct {
		name    string
		p       peer
		known   bool
		wantErr string // "" = allowed
	}{
		{name: "root", p: peer{UID: 0, GID: nobody}, known: true},
		{name: "primary group listed", p: peer{UID: nobody, GID: 0}, known: true},
		{name: "supplementary group listed", p: peer{UID: nobody, GID: nobody, Groups: []uint32{5, 0}}, known: true},
		{name: "no group listed", p: peer{UID: 1000, GID: 1000, Groups: []uint32{5, 27}}, known: true,
			wantErr: "uid 1000 is not root and not in admin.groups [root gk-no-such-group]"},
		{name: "groups unknown", p: peer{UID: 1000, GID: 1000, GroupsErr: errors.New("ENOPROTOOPT")}, known: true,
			wantErr: "uid 1000 is not root and not in admin.groups [root gk-no-such-group]"},
		{name: "credentials unknown", known: false, wantErr: "the caller's credentials are unknown"},
		{name: "the daemon's own user", p: peer{UID: 4242, GID: 4242}, known: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.allow(tt.p, tt.known)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("allow() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("allow() = %v, want ErrForbidden saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestAuthorizerNoGroups(t *testing.T) {
	a := newAuthorizer(nil, slog.New(slog.DiscardHandler))
	if err := a.allow(peer{UID: 0}, true); err != nil {
		t.Errorf("root refused without admin.groups: %v", err)
	}
	if err := a.allow(peer{UID: nobody, GID: 0}, true); !errors.Is(err, ErrForbidden) {
		t.Errorf("gid 0 allowed without admin.groups: %v", err)
	}
}

func TestParseGroupsLine(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []uint32
		wantErr bool
	}{
		{name: "several", in: "Name:\tbash\nGroups:\t4 24 27 \nNgid:\t0\n", want: []uint32{4, 24, 27}},
		{name: "none", in: "Groups:\nNgid:\t0\n", want: []uint32{}},
		{name: "max gid", in: "Groups:\t4294967295\n", want: []uint32{4294967295}},
		{name: "missing line", in: "Name:\tbash\n", wantErr: true},
		{name: "bad gid", in: "Groups:\t4 x\n", wantErr: true},
		{name: "gid too big", in: "Groups:\t4294967296\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseGroupsLine(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
				t.Errorf("parseGroupsLine() = %v, %v; want %v (error: %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestPeerCredentials checks SO_PEERCRED, SO_PEERGROUPS and the /proc fallback against this
// process's own credentials, over a real Unix socket.
func TestPeerCredentials(t *testing.T) {
	path := filepath.Join(shortDir(t), "peer.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	p, err := peerCred(server)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	want := make([]uint32, len(groups))
	for i, g := range groups {
		want[i] = uint32(g)
	}
	slices.Sort(want)
	slices.Sort(p.Groups)
	if p.UID != uint32(os.Getuid()) || p.GID != uint32(os.Getgid()) || p.PID != uint32(os.Getpid()) ||
		p.GroupsErr != nil || !slices.Equal(p.Groups, want) {
		t.Errorf("peerCred() = %+v, want uid %d gid %d pid %d groups %v", p, os.Getuid(), os.Getgid(), os.Getpid(), want)
	}
	proc, err := procGroups(fmt.Sprintf("/proc/%d/status", os.Getpid()))
	slices.Sort(proc)
	if err != nil || !slices.Equal(proc, want) {
		t.Errorf("procGroups(self) = %v, %v; want %v", proc, err, want)
	}
}

// TestCallersByUser runs `Ping` from helper processes with other credentials against a daemon
// whose admin.groups is [root]: the daemon lets in root's group, as primary or supplementary
// group, and refuses the rest with 403 and a log line.
func TestCallersByUser(t *testing.T) {
	needRoot(t)
	d := startDaemonWith(t, nil, func(s *Server) { s.Groups = []string{"root"} })
	// The daemon's check is under test, not the file permissions: let everyone reach the socket.
	openUp(t, d.path)
	tests := []struct {
		name string
		cred *syscall.Credential
		want string // the helper's answer
	}{
		{"root", nil, "ok"},
		{"nobody", &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
			"forbidden: not allowed to use the admin socket: uid 65534 is not root and not in admin.groups [root]"},
		{"other supplementary group", &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{nobody - 1}},
			"forbidden: not allowed to use the admin socket: uid 65534 is not root and not in admin.groups [root]"},
		{"primary group root", &syscall.Credential{Uid: nobody, Gid: 0, Groups: []uint32{}}, "ok"},
		{"supplementary group root", &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{0}}, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runHelper(t, tt.cred, "ping", d.path)
			if out != tt.want {
				t.Errorf("Ping as %s: %q, want %q", tt.name, out, tt.want)
			}
		})
	}
	rec := d.log.waitFor(t, func(rec map[string]any) bool { return rec["msg"] == "admin request refused" })
	if rec["caller_uid"] != float64(nobody) || !strings.Contains(fmt.Sprint(rec["reason"]), "uid 65534 is not root") {
		t.Errorf("refusal log line %v: want caller_uid %d and the reason", rec, nobody)
	}
	d.log.waitFor(t, func(rec map[string]any) bool {
		return rec["msg"] == "admin request" && rec["status"] == float64(http.StatusForbidden)
	})
}

// TestClientChecksSocket: the client talks only to a socket owned by root (or the daemon's user,
// or itself) and served by such a process, and says why it refuses any other.
func TestClientChecksSocket(t *testing.T) {
	t.Run("owned by another user", func(t *testing.T) {
		needRoot(t)
		d := startDaemon(t)
		if err := os.Lchown(d.path, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		err := NewClient(d.path).Ping(context.Background())
		want := fmt.Sprintf("untrusted admin socket: %s is owned by uid %d, not by ", d.path, nobody)
		if !errors.Is(err, ErrUntrustedSocket) || errors.Is(err, ErrNoDaemon) || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Ping = %v, want ErrUntrustedSocket starting %q", err, want)
		}
		if strings.Contains(d.log.String(), `"msg":"admin request"`) {
			t.Errorf("the client connected anyway:\n%s", d.log)
		}
	})

	t.Run("symbolic link", func(t *testing.T) {
		d := startDaemon(t)
		link := filepath.Join(filepath.Dir(d.path), "link.sock")
		if err := os.Symlink(d.path, link); err != nil {
			t.Fatal(err)
		}
		err := NewClient(link).Ping(context.Background())
		if !errors.Is(err, ErrUntrustedSocket) || !strings.Contains(err.Error(), link+" is a symbolic link") {
			t.Errorf("Ping through a symlink = %v, want ErrUntrustedSocket naming the link", err)
		}
	})

	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "admin.sock")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err := NewClient(path).Ping(context.Background())
		if !errors.Is(err, ErrUntrustedSocket) || !strings.Contains(err.Error(), path+" is not a socket") {
			t.Errorf("Ping of a regular file = %v, want ErrUntrustedSocket", err)
		}
	})

	t.Run("served by another user", func(t *testing.T) {
		// The file passes the owner check (as after a swap between the check and the
		// connect), but the kernel says who listens.
		needRoot(t)
		parent := shortDir(t)
		if err := os.Chmod(parent, 0o755); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(parent, "other")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "admin.sock")
		startHelper(t, &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}, "listen", path)
		if err := os.Lchown(path, 0, 0); err != nil {
			t.Fatal(err)
		}
		err := NewClient(path).Ping(context.Background())
		want := fmt.Sprintf("runs as uid %d, not as root", nobody)
		if !errors.Is(err, ErrUntrustedSocket) || !strings.Contains(err.Error(), want) {
			t.Errorf("Ping of a socket served by uid %d = %v, want ErrUntrustedSocket saying %q", nobody, err, want)
		}
	})
}

func TestSocketOwnersString(t *testing.T) {
	tests := []struct {
		o    socketOwners
		want string
	}{
		{socketOwners{uids: []uint32{0}, names: []string{"root"}}, "root"},
		{socketOwners{uids: []uint32{0, 1000}, names: []string{"root", "you (uid 1000)"}}, "root or you (uid 1000)"},
		{socketOwners{uids: []uint32{0, 999, 1000}, names: []string{"root", "the gatekeeper user (uid 999)", "you (uid 1000)"}},
			"root, the gatekeeper user (uid 999) or you (uid 1000)"},
	}
	for _, tt := range tests {
		if got := tt.o.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	if o := trustedSocketOwners(); !o.trusts(0) || !o.trusts(uint32(os.Geteuid())) {
		t.Errorf("trustedSocketOwners() = %v: must trust root and the caller", o)
	}
}

// needRoot skips a test that must change file owners and credentials, except under CI=true.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root to run callers as other users (CI=true: refusing to skip)")
	}
	t.Skip("needs root to run callers as other users")
}

// openUp lets every user reach the socket at path: its directory and the one above (both the
// tests' own) and the socket itself.
func openUp(t *testing.T, path string) {
	t.Helper()
	for _, p := range []string{filepath.Dir(filepath.Dir(path)), filepath.Dir(path)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
}

// Environment of the helper process.
const (
	helperModeEnv = "GK_ADMIN_HELPER"        // "ping" or "listen"
	helperPathEnv = "GK_ADMIN_HELPER_SOCKET" // the socket
)

// TestAdminHelperProcess is not a test on its own: with GK_ADMIN_HELPER set, the test binary,
// started by the tests above with other credentials, is the other side of the admin socket.
//
//   - ping: calls NewClient(socket).Ping and prints "ok", "forbidden: MESSAGE" or "error: MESSAGE";
//   - backup, restore: the same with Backup (of everything) and Restore (of an empty backup);
//   - listen: serves a health endpoint on socket, prints "ready" and runs until killed.
func TestAdminHelperProcess(t *testing.T) {
	path := os.Getenv(helperPathEnv)
	switch os.Getenv(helperModeEnv) {
	case "":
		return
	case "ping", "backup", "restore":
		var err error
		switch c := NewClient(path); os.Getenv(helperModeEnv) {
		case "ping":
			err = c.Ping(context.Background())
		case "backup":
			_, err = c.Backup(context.Background(), true, func(store.Item) error { return nil })
		case "restore":
			var f *BackupFile
			if f, err = ParseBackup([]byte(`{"gatekeeper_backup":1}` + "\n")); err == nil {
				_, err = c.Restore(context.Background(), f, false)
			}
		}
		switch {
		case err == nil:
			fmt.Println("ok")
		case errors.Is(err, ErrForbidden):
			fmt.Println("forbidden: " + err.Error())
		default:
			fmt.Println("error: " + err.Error())
		}
	case "listen":
		ln, err := net.Listen("unix", path)
		if err != nil {
			fmt.Println("error: " + err.Error())
			os.Exit(1)
		}
		if err := os.Chmod(path, 0o666); err != nil {
			fmt.Println("error: " + err.Error())
			os.Exit(1)
		}
		fmt.Println("ready")
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"status":"ok"}`))
		}))
	}
	os.Exit(0)
}

// helperCmd is the test binary, copied where other users may run it (the build directory is
// private to root), as TestAdminHelperProcess in mode on socket, with credentials cred (nil:
// this process's).
func helperCmd(t *testing.T, cred *syscall.Credential, mode, socket string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "admin.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestAdminHelperProcess$")
	cmd.Env = append(os.Environ(), helperModeEnv+"="+mode, helperPathEnv+"="+socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Stderr = os.Stderr
	return cmd
}

// runHelper runs the helper to the end and returns its answer.
func runHelper(t *testing.T, cred *syscall.Credential, mode, socket string) string {
	t.Helper()
	cmd := helperCmd(t, cred, mode, socket)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper %s: %v\n%s", mode, err, out)
	}
	return strings.TrimSpace(string(out))
}

// startHelper starts the helper and waits for its "ready"; it is killed when the test ends.
func startHelper(t *testing.T, cred *syscall.Credential, mode, socket string) {
	t.Helper()
	cmd := helperCmd(t, cred, mode, socket)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper %s: %q, %v", mode, line, err)
	}
}
