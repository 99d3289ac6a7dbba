package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The relay tests run every client feature twice: straight at the lander (which proves the
// harness and the machine, so that a failure through the gatekeeper is the gatekeeper's) and
// through the shared gatekeeper from the trusted source (password only, so that a test can log
// in as often as it needs; the code path has its own tests).

// forEachPath runs f with a fresh user and client for each path to the lander.
func forEachPath(t *testing.T, f func(t *testing.T, c *client)) {
	t.Parallel()
	t.Run("direct", func(t *testing.T) {
		t.Parallel()
		l := landerFor(t)
		f(t, newClient(t, newUser(t), l.port, ""))
	})
	t.Run("gatekeeper", func(t *testing.T) {
		t.Parallel()
		g := sharedGatekeeper(t)
		u := newUser(t)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("gatekeeper log for %s:\n%s", u.name, g.userLog(u.name))
			}
		})
		f(t, newClient(t, u, g.port, trustedAddr))
	})
}

func TestExitStatus(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		for _, code := range []int{0, 3, 42} {
			r := c.ssh(nil, fmt.Sprintf("echo bye; exit %d", code))
			if r.exit != code || r.stdout != "bye\n" {
				t.Errorf("`exit %d`: %s", code, r)
			}
		}
		// A command killed by a signal: ssh reports it (exit-signal) and exits 255.
		r := c.ssh(nil, "kill -KILL $$")
		if r.exit != 255 {
			t.Errorf("`kill -KILL $$`: want ssh exit 255 (remote killed by a signal), got %s", r)
		}
	})
}

func TestStdoutStderrApart(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		r := c.ssh(nil, "echo out; echo err >&2")
		if r.exit != 0 || r.stdout != "out\n" || r.stderr != "err\n" {
			t.Errorf("want stdout \"out\\n\" and stderr \"err\\n\", got %s", r)
		}
		// Enough of both to fill the channel windows, written at the same time.
		r = c.ssh(nil, "seq 1 100000 >&2 & seq 100001 200000; wait")
		want1, want2 := seqString(100001, 200000), seqString(1, 100000)
		if r.exit != 0 || r.stdout != want1 || r.stderr != want2 {
			t.Errorf("200000 lines on stdout and stderr at once: exit %d, stdout %d bytes (want %d, equal %v), stderr %d bytes (want %d, equal %v)",
				r.exit, len(r.stdout), len(want1), r.stdout == want1, len(r.stderr), len(want2), r.stderr == want2)
		}
	})
}

func seqString(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.String()
}

func TestPTY(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		r := c.ssh([]string{"-tt"}, "tty; echo $TERM")
		if r.exit != 0 || !regexp.MustCompile(`^/dev/pts/\d+\r?\nxterm\r?\n$`).MatchString(r.stdout) {
			t.Errorf("`ssh -tt HOST 'tty; echo $TERM'`: want /dev/pts/N and xterm, got %s", r)
		}
		r = c.ssh([]string{"-T"}, "tty")
		if r.exit != 1 || r.stdout != "not a tty\n" {
			t.Errorf("`ssh -T HOST tty`: want \"not a tty\" and exit 1, got %s", r)
		}
	})
}

func TestKeepalive(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		// The client sends keepalive@openssh.com every second while the command is silent and
		// gives up after two without an answer.
		r := c.ssh([]string{"-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"}, "sleep 5; echo ok")
		if r.exit != 0 || r.stdout != "ok\n" {
			t.Errorf("keepalives during a 5 s silent command: %s", r)
		}
	})
}

// data32 is a 32 MiB random file shared by the transfer tests, and its SHA-256.
var data32 = sync.OnceValues(func() (string, error) {
	p := filepath.Join(h.tmp, "data32")
	b := make([]byte, 32<<20)
	_, _ = rand.Read(b)
	return p, os.WriteFile(p, b, 0o644)
})

func sha256File(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(hash.Sum(nil))
}

func TestTransfer32MiB(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		src, err := data32()
		if err != nil {
			t.Fatal(err)
		}
		want := sha256File(t, src)
		home := c.user.home
		// dl.bin is in the user's home for the downloads.
		if out, err := exec.Command("install", "-o", c.user.name, "-m", "0644", src, filepath.Join(home, "dl.bin")).CombinedOutput(); err != nil {
			t.Fatalf("install: %v: %s", err, out)
		}
		local := func(name string) string { return filepath.Join(c.dir, name) }
		check := func(what, path string) {
			t.Helper()
			if got := sha256File(t, path); got != want {
				t.Errorf("%s: sha256 %s, want %s", what, got, want)
			}
		}
		port := strconv.Itoa(c.port)

		t.Run("stdin", func(t *testing.T) {
			f, err := os.Open(src)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r := c.run(f, nil, "ssh", c.sshArgs(nil, "cat > up-stdin.bin")...)
			if r.exit != 0 {
				t.Fatalf("cat > file: %s", r)
			}
			check("upload through stdin", filepath.Join(home, "up-stdin.bin"))
		})
		t.Run("stdout", func(t *testing.T) {
			hash := sha256.New()
			r := c.run(nil, hash, "ssh", c.sshArgs(nil, "cat dl.bin")...)
			if got := hex.EncodeToString(hash.Sum(nil)); r.exit != 0 || got != want {
				t.Errorf("cat file > stdout: sha256 %s, want %s; %s", got, want, r)
			}
		})
		for _, mode := range []struct{ name, flag string }{{"scp", ""}, {"scp-legacy", "-O"}} {
			t.Run(mode.name, func(t *testing.T) {
				args := func(from, to string) []string {
					a := []string{"-q", "-P", port}
					if mode.flag != "" {
						a = append(a, mode.flag)
					}
					return append(append(a, c.opts()...), from, to)
				}
				up := "up-" + mode.name + ".bin"
				if r := c.run(nil, nil, "scp", args(src, c.target()+":"+up)...); r.exit != 0 {
					t.Fatalf("scp upload: %s", r)
				}
				check(mode.name+" upload", filepath.Join(home, up))
				if r := c.run(nil, nil, "scp", args(c.target()+":dl.bin", local(mode.name+".bin"))...); r.exit != 0 {
					t.Fatalf("scp download: %s", r)
				}
				check(mode.name+" download", local(mode.name+".bin"))
			})
		}
		t.Run("sftp", func(t *testing.T) {
			// Commands on stdin, not -b: sftp -b forces BatchMode, which disables the prompts.
			cmds := fmt.Sprintf("put %s up-sftp.bin\nget dl.bin %s\nbye\n", src, local("sftp.bin"))
			args := append(append([]string{"-q", "-P", port}, c.opts()...), c.target())
			r := c.run(strings.NewReader(cmds), nil, "sftp", args...)
			if r.exit != 0 {
				t.Fatalf("sftp: %s", r)
			}
			check("sftp put", filepath.Join(home, "up-sftp.bin"))
			check("sftp get", local("sftp.bin"))
		})
		t.Run("rsync", func(t *testing.T) {
			if r := c.run(nil, nil, "rsync", "-e", c.sshRSH(), src, c.target()+":up-rsync.bin"); r.exit != 0 {
				t.Fatalf("rsync upload: %s", r)
			}
			check("rsync upload", filepath.Join(home, "up-rsync.bin"))
			if r := c.run(nil, nil, "rsync", "-e", c.sshRSH(), c.target()+":dl.bin", local("rsync.bin")); r.exit != 0 {
				t.Fatalf("rsync download: %s", r)
			}
			check("rsync download", local("rsync.bin"))
		})
	})
}

// TestRekeyDuringTransfer moves 32 MiB up and down while OpenSSH renews the keys of both legs
// every 4 MiB: the client those of its leg (RekeyLimit), the lander's sshd those of the
// gatekeeper's (its own RekeyLimit), each in the middle of the data. Researchers' transfers of
// terabytes do this every gigabyte or so.
func TestRekeyDuringTransfer(t *testing.T) {
	t.Parallel()
	hs := base(t)
	dir, err := os.MkdirTemp(hs.tmp, "rekey")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	l, err := startLanderWith(dir, "RekeyLimit 4M\nLogLevel DEBUG1\n")
	if err != nil {
		t.Fatal("starting the lander: ", err)
	}
	t.Cleanup(func() {
		if err := l.stop(); err != nil {
			t.Error(err)
		}
	})
	g := gatekeeperBefore(t, l, gkOptions{})
	c := newClient(t, newUser(t), g.port, trustedAddr)
	src, err := data32()
	if err != nil {
		t.Fatal(err)
	}
	want := sha256File(t, src)
	opts := []string{"-o", "RekeyLimit=4M", "-o", "LogLevel=DEBUG1"}
	newKeys := func(log string) int { return strings.Count(log, "SSH2_MSG_NEWKEYS received") }

	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	up := c.run(f, nil, "ssh", c.sshArgs(opts, "cat > up.bin")...)
	if up.exit != 0 {
		t.Fatalf("upload: %s", tailStr(up.stderr, 3000))
	}
	if got := sha256File(t, filepath.Join(c.user.home, "up.bin")); got != want {
		t.Fatalf("upload: sha256 %s, want %s", got, want)
	}
	hash := sha256.New()
	down := c.run(nil, hash, "ssh", c.sshArgs(opts, "cat up.bin")...)
	if got := hex.EncodeToString(hash.Sum(nil)); down.exit != 0 || got != want {
		t.Fatalf("download: sha256 %s, want %s; exit %d\n%s", got, want, down.exit, tailStr(down.stderr, 3000))
	}
	t.Logf("sets of keys: client upload %d, client download %d, lander %d", newKeys(up.stderr), newKeys(down.stderr), newKeys(string(l.logBytes())))
	// The first key exchange of each connection, then one every 4 MiB of the 32 (at least 6:
	// the count of bytes differs a little between the ends).
	if n := newKeys(up.stderr); n < 1+6 {
		t.Errorf("the client's upload connection took %d sets of keys, want a new one every 4 MiB", n)
	}
	if n := newKeys(down.stderr); n < 1+6 {
		t.Errorf("the client's download connection took %d sets of keys, want a new one every 4 MiB", n)
	}
	if n := newKeys(string(l.logBytes())); n < 2*(1+6) {
		t.Errorf("the lander took %d sets of keys over the two connections, want a new one every 4 MiB", n)
	}
}

// echoServer is a TCP echo service on 127.0.0.1, the far end of the forwarding tests.
func echoServer(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			})
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// checkEcho sends 1 MiB through addr and expects it back unchanged.
func checkEcho(t testing.TB, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	msg := make([]byte, 1<<20)
	_, _ = rand.Read(msg)
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(msg)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the echo through %s: %v", addr, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing through %s: %v", addr, err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo through %s: got %d bytes back, want the 1 MiB sent", addr, len(got))
	}
}

// stderrLines collects a background client's stderr lines and offers them on a channel.
func stderrLines(r io.Reader) (<-chan string, func() string) {
	var mu sync.Mutex
	var all strings.Builder
	ch := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			mu.Lock()
			all.WriteString(s.Text() + "\n")
			mu.Unlock()
			select {
			case ch <- s.Text():
			default:
			}
		}
		close(ch)
	}()
	return ch, func() string { mu.Lock(); defer mu.Unlock(); return all.String() }
}

func TestForwardLocal(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		echo := echoServer(t)
		lport := freePort()
		_, stderr, done := c.background("ssh", c.sshArgs([]string{"-N", "-o", "ExitOnForwardFailure=yes",
			"-L", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", lport, echo)})...)
		_, all := stderrLines(stderr)
		addr := fmt.Sprintf("127.0.0.1:%d", lport)
		waitPort(t, addr, done, all)
		checkEcho(t, addr)
		checkEcho(t, addr) // a second connection over the same session
	})
}

func TestForwardRemote(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		echo := echoServer(t)
		t.Run("fixed-port", func(t *testing.T) {
			rport := freePort()
			_, stderr, done := c.background("ssh", c.sshArgs([]string{"-N", "-o", "ExitOnForwardFailure=yes",
				"-R", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", rport, echo)})...)
			_, all := stderrLines(stderr)
			addr := fmt.Sprintf("127.0.0.1:%d", rport)
			waitPort(t, addr, done, all)
			checkEcho(t, addr)
		})
		t.Run("allocated-port", func(t *testing.T) {
			// -R 0:...: the lander picks the port and the client prints it: the relay must pass
			// the tcpip-forward reply's payload through.
			_, stderr, done := c.background("ssh", c.sshArgs([]string{"-N", "-o", "ExitOnForwardFailure=yes",
				"-o", "LogLevel=INFO", "-R", fmt.Sprintf("0:127.0.0.1:%d", echo)})...)
			lines, all := stderrLines(stderr)
			re := regexp.MustCompile(`Allocated port (\d+) for remote forward`)
			var rport string
			timeout := time.After(startTimeout)
			for rport == "" {
				select {
				case line, ok := <-lines:
					if !ok {
						<-done
						t.Fatalf("ssh -R 0:... ended without an allocated port: %s", all())
					}
					if m := re.FindStringSubmatch(line); m != nil {
						rport = m[1]
					}
				case <-timeout:
					t.Fatalf("no \"Allocated port\" from ssh -R 0:... within %v: %s", startTimeout, all())
				}
			}
			if rport == "0" {
				t.Fatal("allocated port 0: the tcpip-forward reply payload was lost")
			}
			addr := "127.0.0.1:" + rport
			waitPort(t, addr, done, all)
			checkEcho(t, addr)
		})
	})
}

func TestAgentForwarding(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		sock := filepath.Join(c.dir, "agent.sock")
		agent := exec.Command("ssh-agent", "-D", "-a", sock)
		agent.Env = cleanEnv()
		if err := agent.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
		deadline := time.Now().Add(startTimeout)
		for {
			if conn, err := net.Dial("unix", sock); err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("ssh-agent socket never appeared")
			}
			time.Sleep(20 * time.Millisecond)
		}
		key := filepath.Join(c.dir, "id_ed25519")
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-agent", "-f", key).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
		add := exec.Command("ssh-add", "-q", key)
		add.Env = cleanEnv("SSH_AUTH_SOCK=" + sock)
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("ssh-add: %v: %s", err, out)
		}
		out, err := exec.Command("ssh-keygen", "-l", "-f", key+".pub").Output()
		if err != nil {
			t.Fatal(err)
		}
		fp := strings.Fields(string(out))[1] // "256 SHA256:... e2e-agent (ED25519)"
		c.extra = append(c.extra, "SSH_AUTH_SOCK="+sock)
		r := c.ssh([]string{"-A"}, "ssh-add -l")
		if r.exit != 0 || !strings.Contains(r.stdout, fp) {
			t.Errorf("`ssh -A HOST ssh-add -l`: want the key %s listed, got %s", fp, r)
		}
		r = c.ssh([]string{"-a"}, "ssh-add -l")
		if r.exit == 0 || strings.Contains(r.stdout, fp) {
			t.Errorf("`ssh -a HOST ssh-add -l` (no forwarding): want no agent, got %s", r)
		}
	})
}

func TestX11Forwarding(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		// A fake X server on the client side, display 127.0.0.1:N (TCP port 6000+N).
		var ln net.Listener
		var display int
		for n := 20; n < 100 && ln == nil; n++ {
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 6000+n)); err == nil {
				ln, display = l, n
			}
		}
		if ln == nil {
			t.Fatal("no free X display port in 6020-6099")
		}
		setups := make(chan []byte, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			buf := make([]byte, 12)
			_ = conn.SetDeadline(time.Now().Add(time.Minute))
			if _, err := io.ReadFull(conn, buf); err == nil {
				setups <- buf
				_, _ = conn.Write([]byte("XFAKE-OK"))
			}
		}()
		t.Cleanup(func() { ln.Close() })
		c.extra = append(c.extra, fmt.Sprintf("DISPLAY=127.0.0.1:%d", display))
		// On the lander: an X client that sends a connection setup with the cookie sshd stored
		// and prints the server's first bytes.
		script := `set -e
echo "DISPLAY=$DISPLAY"
d=${DISPLAY#*:}; d=${d%.*}
cookie=$(xauth list | awk '{print $3; exit}')
exec 3<>/dev/tcp/127.0.0.1/$((6000 + d))
printf 'l\000\013\000\000\000\022\000\020\000\000\000MIT-MAGIC-COOKIE-1\000\000' >&3
printf "$(echo "$cookie" | sed 's/../\\x&/g')" >&3
head -c 8 <&3; echo`
		r := c.ssh([]string{"-Y"}, script)
		if r.exit != 0 || !regexp.MustCompile(`(?m)^DISPLAY=localhost:\d+\.0$`).MatchString(r.stdout) ||
			!strings.Contains(r.stdout, "XFAKE-OK") {
			t.Fatalf("X11 forwarding: want DISPLAY set and the fake X server's answer, got %s", r)
		}
		select {
		case b := <-setups:
			if b[0] != 'l' {
				t.Errorf("fake X server got setup %q", b)
			}
		default:
			t.Error("the fake X server was never contacted")
		}
	})
}

// goClient logs c's user in with the x/crypto SSH client (password only: the direct lander, or
// the gatekeeper from the trusted source), for tests that need many sessions on one connection.
func goClient(t *testing.T, c *client) *ssh.Client {
	t.Helper()
	d := net.Dialer{Timeout: 20 * time.Second}
	if c.bind != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.bind)}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", c.port)
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ClientConfig{
		User: c.user.name,
		Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
			ans := make([]string, len(qs))
			for i, q := range qs {
				if !strings.Contains(q, "Password:") {
					return nil, fmt.Errorf("unexpected prompt %q", q)
				}
				ans[i] = c.user.password
			}
			return ans, nil
		})},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // loopback test; the host key is not under test here
		Timeout:         20 * time.Second,
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		t.Fatalf("x/crypto client login: %v", err)
	}
	_ = conn.SetDeadline(time.Time{})
	client := ssh.NewClient(sc, chans, reqs)
	t.Cleanup(func() { client.Close() })
	return client
}

func TestManySessionsOneConnection(t *testing.T) {
	// Concurrent sessions on one connection, each with stdin, stdout, stderr and an exit
	// status: the relay must keep every channel's data, EOF, exit-status and close in order.
	forEachPath(t, func(t *testing.T, c *client) {
		conn := goClient(t, c)
		const sessions, rounds, size = 20, 3, 256 << 10
		input := make([]byte, size)
		_, _ = rand.Read(input)
		for round := range rounds {
			var wg sync.WaitGroup
			for i := range sessions {
				wg.Go(func() {
					s, err := conn.NewSession()
					if err != nil {
						t.Errorf("round %d session %d: %v", round, i, err)
						return
					}
					defer s.Close()
					var stdout, stderr bytes.Buffer
					s.Stdout, s.Stderr = &stdout, &stderr
					stdin, err := s.StdinPipe()
					if err != nil {
						t.Error(err)
						return
					}
					if err := s.Start(fmt.Sprintf("wc -c; echo err%d >&2; exit %d", i, i%7)); err != nil {
						t.Errorf("round %d session %d: start: %v", round, i, err)
						return
					}
					_, werr := stdin.Write(input)
					_ = stdin.Close()
					err = s.Wait()
					status := 0
					var ee *ssh.ExitError
					if errors.As(err, &ee) {
						status, err = ee.ExitStatus(), nil
					}
					if werr != nil || err != nil || status != i%7 || strings.TrimSpace(stdout.String()) != strconv.Itoa(size) ||
						stderr.String() != fmt.Sprintf("err%d\n", i) {
						t.Errorf("round %d session %d: write %v, wait %v, exit %d (want %d), stdout %q (want %d), stderr %q",
							round, i, werr, err, status, i%7, stdout.String(), size, stderr.String())
					}
				})
			}
			wg.Wait()
		}
	})
}

// delayProxy starts bench/delayproxy, the benchmarks' relay that holds every chunk for delay in
// each direction (a path 2 × delay long; this kernel has no netem), in front of target, dialling
// it from the trusted source address. It returns the proxy's port; the proxy is stopped when the
// test ends.
func delayProxy(t *testing.T, target string, delay time.Duration) int {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "delayproxy")
	build := exec.Command("go", "build", "-o", bin, "./bench/delayproxy")
	build.Dir = base(t).repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./bench/delayproxy: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-target", target, "-source", trustedAddr, "-delay", delay.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Its first line is the address it listens on.
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("delayproxy printed no address: %v\n%s", err, stderr.String())
	}
	_, port, err := net.SplitHostPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("delayproxy printed %q: %v", line, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("delayproxy printed %q: %v", line, err)
	}
	return n
}

// TestRoundTripSeen: the gatekeeper sees a far client's round trip in its SSH handshake (x/crypto
// patch 16), which sizes the client's receive windows (relay.window): OpenSSH's client waits for
// the service accept before its first authentication request, which the measure relies on. The
// session's start is logged with it.
func TestRoundTripSeen(t *testing.T) {
	t.Parallel()
	const delay = 40 * time.Millisecond
	g := sharedGatekeeper(t)
	u := newUser(t)
	rtts := func() []time.Duration {
		var out []time.Duration
		for line := range strings.Lines(g.userLog(u.name)) {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "session started" {
				continue
			}
			s, _ := m["rtt"].(string)
			d, err := time.ParseDuration(s)
			if err != nil {
				t.Fatalf("session started with rtt %q: %v", m["rtt"], err)
			}
			out = append(out, d)
		}
		return out
	}
	mustLogIn(t, newClient(t, u, g.port, trustedAddr), "near")
	mustLogIn(t, newClient(t, u, delayProxy(t, g.addr(), delay), ""), "far")
	got := rtts()
	if len(got) != 2 {
		t.Fatalf("%d session started lines with rtt, want 2:\n%s", len(got), g.userLog(u.name))
	}
	near, far := got[0], got[1]
	t.Logf("round trips seen: %v on loopback, %v through a %v path", near, far, 2*delay)
	if far < 2*delay {
		t.Errorf("a client %v away logged in with rtt %v, want at least that", 2*delay, far)
	}
	if near <= 0 || near >= far {
		t.Errorf("a client on loopback logged in with rtt %v (the far one: %v)", near, far)
	}
}

// TestControlMaster: one authenticated connection carries the user's later ssh and scp runs
// (ControlMaster, as the README advises for bursts of copies), each with its own exit status.
// OpenSSH's master closes a channel as soon as its input is done (`ssh -n`) and the command's
// EOF came: its CLOSE then goes out before the command's exit status, which sshd still sends
// after it (the channel is closed once both sides sent CLOSE). Through the gatekeeper that
// status was lost (exit 255), every time when the command closes its output before it ends.
func TestControlMaster(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		sock := filepath.Join(c.dir, "cm")
		mux := []string{"-o", "ControlPath=" + sock, "-o", "ControlMaster=no"}
		_, _, exited := c.background("ssh", c.sshArgs([]string{"-N",
			"-o", "ControlPath=" + sock, "-o", "ControlMaster=yes", "-o", "ControlPersist=no"})...)
		deadline := time.Now().Add(cmdTimeout)
		for c.ssh(append([]string{"-O", "check"}, mux...)).exit != 0 {
			select {
			case <-exited:
				t.Fatal("the master connection ended before its control socket worked")
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no working control socket after %v", cmdTimeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
		defer c.ssh(append([]string{"-O", "exit"}, mux...))

		for i := range 4 {
			if r := c.ssh(append([]string{"-n"}, mux...), "exec >&- 2>&-; sleep 0.2; exit 3"); r.exit != 3 {
				t.Errorf("run %d of a command that closes its output, then exits 3: %s", i, r)
			}
			if r := c.ssh(append([]string{"-n"}, mux...), "echo bye; exit 42"); r.exit != 42 || r.stdout != "bye\n" {
				t.Errorf("run %d of `echo bye; exit 42`: %s", i, r)
			}
			if r := c.ssh(mux, "exit 5"); r.exit != 5 {
				t.Errorf("run %d of `exit 5` with stdin open: %s", i, r)
			}
		}
		src := filepath.Join(c.dir, "up.txt")
		if err := os.WriteFile(src, []byte("through the master\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		scp := append(append([]string{"-q", "-P", strconv.Itoa(c.port)}, mux...), c.opts()...)
		if r := c.run(nil, nil, "scp", append(scp, src, c.target()+":cm-up.txt")...); r.exit != 0 {
			t.Fatalf("scp through the master: %s", r)
		}
		if r := c.ssh(append([]string{"-n"}, mux...), "cat cm-up.txt"); r.exit != 0 || r.stdout != "through the master\n" {
			t.Errorf("the copy through the master: %s", r)
		}
		select {
		case <-exited:
			t.Error("the master connection ended while it was in use")
		default:
		}
	})
}

// processesOf returns the pids of the processes whose command line contains pattern (pgrep -f).
func processesOf(t *testing.T, pattern string) []int {
	t.Helper()
	out, _ := exec.Command("pgrep", "-f", pattern).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// startSSH starts `ssh [opts] user@127.0.0.1 command` in the background and returns once its
// first line of output, want, has come; the caller ends it. out is its standard output; its
// standard error is cmd.Stderr, a *bytes.Buffer to read once cmd.Wait has returned.
func startSSH(t *testing.T, c *client, opts []string, command, want string) (*exec.Cmd, io.ReadCloser) {
	t.Helper()
	cmd := exec.Command("ssh", c.sshArgs(opts, command)...)
	cmd.Env = c.env()
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stderr = new(bytes.Buffer)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != want+"\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("first line %q, %v; want %q", line, err, want)
	}
	return cmd, out
}

// TestOutputClosedEarly: `ssh host yes | head -1` ends, and so does the remote command, as
// directly: OpenSSH's client tells the server that its output is closed (eow@openssh.com) only
// to a server whose version starts with "OpenSSH", and the gatekeeper's did not, so the pipeline
// hung while the remote command ran on.
func TestOutputClosedEarly(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		marker := "gk-eow-" + randHex(4)
		cmd, out := startSSH(t, c, nil, "exec yes "+marker, marker)
		defer func() {
			_ = cmd.Process.Kill()
			_ = exec.Command("pkill", "-KILL", "-f", "yes "+marker).Run()
		}()
		out.Close() // as head does once it has its line
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("ssh still running 20 s after its output was closed")
		}
		waitUntil(t, "the remote command to end after the client's output was closed",
			func() bool { return len(processesOf(t, "yes "+marker)) == 0 })
	})
}

// TestServerAliveSeesHungLander: a client with ServerAliveInterval gives up on a login node
// whose sshd stopped answering (here: stopped with SIGSTOP), as directly; the gatekeeper
// passes the client's keepalives to the lander rather than answering them itself.
func TestServerAliveSeesHungLander(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		cmd, _ := startSSH(t, c, []string{"-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"}, "echo up; exec sleep 600", "up")
		defer func() { _ = cmd.Process.Kill() }()
		sshd := processesOf(t, "sshd: "+c.user.name)
		if len(sshd) == 0 {
			t.Fatal("no sshd process of the session found")
		}
		for _, pid := range sshd {
			_ = syscall.Kill(pid, syscall.SIGSTOP)
		}
		defer func() {
			for _, pid := range sshd {
				_ = syscall.Kill(pid, syscall.SIGCONT)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			// The session's sleep, left without its sshd.
			_ = exec.Command("pkill", "-KILL", "-u", c.user.name).Run()
		}()
		if !waitExit255(t, cmd, 30*time.Second) {
			t.Fatal("ssh with ServerAliveInterval=1 still running 30 s after the login node stopped answering")
		}
	})
}

// waitExit255 waits up to limit for cmd, an ssh, to end, and checks that it exited 255 (the
// connection lost); false if it was still running.
func waitExit255(t *testing.T, cmd *exec.Cmd, limit time.Duration) bool {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 255 {
			t.Errorf("ssh ended with %v, want exit 255", err)
		}
		return true
	case <-time.After(limit):
		return false
	}
}

// TestLanderDropsSession: when the login node's sshd goes away in the middle of a session
// (killed, out of memory, the node rebooting), ssh says "Connection to ... closed by remote
// host." and exits 255, as directly. The gatekeeper used to close the session's channel first,
// and ssh then ended (255) without a word.
func TestLanderDropsSession(t *testing.T) {
	forEachPath(t, func(t *testing.T, c *client) {
		cmd, _ := startSSH(t, c, nil, "echo up; exec sleep 600", "up")
		defer func() { _ = cmd.Process.Kill() }()
		sshd := processesOf(t, "sshd: "+c.user.name)
		if len(sshd) == 0 {
			t.Fatal("no sshd process of the session found")
		}
		defer func() {
			// The session's sleep, left without its sshd.
			_ = exec.Command("pkill", "-KILL", "-u", c.user.name).Run()
		}()
		for _, pid := range sshd {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// Within 5 s: not the relay's drain timeout (10 s) cutting the connection.
		if !waitExit255(t, cmd, 5*time.Second) {
			t.Fatal("ssh still running 5 s after the login node's sshd was killed")
		}
		if stderr := cmd.Stderr.(*bytes.Buffer).String(); !strings.Contains(stderr, "closed by remote host") {
			t.Errorf("ssh's stderr %q does not say that the connection was closed", stderr)
		}
		if c.bind == trustedAddr {
			// Through the gatekeeper: its log says who ended the session.
			g := sharedGatekeeper(t)
			waitUntil(t, "the gatekeeper's log line for the session's end", func() bool {
				return strings.Contains(g.userLog(c.user.name), `"msg":"session ended"`)
			})
			if log := g.userLog(c.user.name); !strings.Contains(log, `"closed_first":"lander"`) {
				t.Errorf("the session's end is not logged with closed_first lander:\n%s", log)
			}
		}
	})
}
