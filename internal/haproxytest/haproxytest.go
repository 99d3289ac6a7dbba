// Package haproxytest runs a real HAProxy (Debian's haproxy 2.6) on loopback for tests: a TCP
// frontend on a free 127.0.0.1 port balancing round robin over the given backends, sending each
// of them a PROXY protocol v2 header (health checks included) from a chosen loopback source
// address, so that the backends can trust exactly that address. HAProxy runs in the foreground
// with its configuration, log and stats socket in the test's temporary directory and is stopped
// when the test ends.
package haproxytest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// startAttempts is how often Start tries a fresh port when HAProxy could not bind its own.
	startAttempts = 3
	// waitTimeout bounds every wait: for the frontend to open, for servers to go up or down.
	waitTimeout = 15 * time.Second
	// pollInterval is the pause between two looks at the stats socket.
	pollInterval = 20 * time.Millisecond
	// stopTimeout is how long cleanup waits after SIGTERM before it kills HAProxy.
	stopTimeout = 5 * time.Second
	// logTailLines is how much of HAProxy's log is printed when the test fails.
	logTailLines = 100
	// backendName names the backend section in the generated configuration.
	backendName = "gatekeepers"
	// frontendName names the frontend section in the generated configuration.
	frontendName = "ssh"
)

// Config describes the load balancer Start runs.
type Config struct {
	// Backends are the host:port addresses of the servers (the gatekeepers' SSH listeners).
	// Backends[i] is the server named ServerName(i) in HAProxy's stats and log.
	Backends []string
	// Source is the loopback address HAProxy connects to the backends from (its `source`
	// directive), e.g. "127.0.0.9": the address the backends see as the TCP peer and list in
	// proxy_protocol_from. Empty leaves the choice to the kernel (127.0.0.1 on loopback).
	Source string
}

// Proxy is a running HAProxy started by Start.
type Proxy struct {
	t       testing.TB
	addr    string
	sock    string
	cfgPath string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when HAProxy has exited
	waitErr error         // cmd.Wait's result, set before done is closed
}

// ServerName is the name HAProxy gives the server for Config.Backends[i] ("b0", "b1", ...), as
// WaitBackendDown and Status take it.
func ServerName(i int) string { return "b" + strconv.Itoa(i) }

// Start writes an HAProxy configuration for cfg, runs `haproxy -db` (from PATH or /usr/sbin) with
// it and returns once the frontend is open. Backends get `send-proxy-v2 check check-send-proxy
// inter 200ms fall 2 rise 1`: a backend that stops accepting is out of the rotation about 0.4 s
// later (see WaitBackendDown), and a connection that a dead backend refuses before then is retried
// on another one (`option redispatch`). t.Cleanup stops HAProxy. When the `haproxy` binary is
// missing, Start fails the test (it never skips): `make test` installs Debian's haproxy.
func Start(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	if len(cfg.Backends) == 0 {
		t.Fatal("haproxytest.Start: no backends")
	}
	for _, b := range cfg.Backends {
		if _, _, err := net.SplitHostPort(b); err != nil {
			t.Fatalf("haproxytest.Start: backend %q: %v", b, err)
		}
	}
	if cfg.Source != "" && net.ParseIP(cfg.Source) == nil {
		t.Fatalf("haproxytest.Start: Source %q is not an IP address", cfg.Source)
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		// Debian installs it in /usr/sbin, which is not on every user's PATH.
		bin, err = exec.LookPath("/usr/sbin/haproxy")
	}
	if err != nil {
		t.Fatalf("haproxytest: the haproxy binary is not on PATH (%v): `make test` installs it "+
			"(scripts/install-deps.sh, Debian package haproxy), or run apt-get install haproxy", err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "stats.sock")
	if len(sock) > 100 { // a Unix socket path has room for 107 bytes
		short, err := os.MkdirTemp("", "haproxytest")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(short) })
		sock = filepath.Join(short, "stats.sock")
	}

	for attempt := 1; ; attempt++ {
		p := &Proxy{
			t:       t,
			sock:    sock,
			cfgPath: filepath.Join(dir, fmt.Sprintf("haproxy%d.cfg", attempt)),
			logPath: filepath.Join(dir, fmt.Sprintf("haproxy%d.log", attempt)),
		}
		err := p.start(bin, cfg)
		if err == nil {
			t.Cleanup(p.cleanup)
			return p
		}
		p.stop()
		if !p.portTaken() || attempt == startAttempts {
			p.logTail()
			t.Fatalf("haproxytest.Start: %v", err)
		}
		t.Logf("haproxytest.Start: %v; retrying with a new port", err)
	}
}

// Addr returns the frontend's address, 127.0.0.1:PORT, where clients connect.
func (p *Proxy) Addr() string { return p.addr }

// WaitBackendsUp waits until at least n servers are UP with a passed health check.
func (p *Proxy) WaitBackendsUp(t testing.TB, n int) {
	t.Helper()
	p.waitFor(t, fmt.Sprintf("%d servers UP", n), func(st map[string]ServerStatus) bool {
		up := 0
		for _, s := range st {
			if s.Up() {
				up++
			}
		}
		return up >= n
	})
}

// WaitBackendDown waits until the server called name (see ServerName) is out of the rotation:
// DOWN after failed health checks, or in maintenance.
func (p *Proxy) WaitBackendDown(t testing.TB, name string) {
	t.Helper()
	p.waitFor(t, name+" DOWN", func(st map[string]ServerStatus) bool {
		s, ok := st[name]
		if !ok {
			t.Fatalf("haproxytest: no server %q (servers: %v)", name, st)
		}
		return s.Down()
	})
}

// ServerStatus is one server's state as HAProxy's `show stat` reports it.
type ServerStatus struct {
	// Status is HAProxy's status column: "UP", "DOWN", "UP 1/2" (failing, still in the
	// rotation), "DOWN 0/1" (recovering, not yet in it), "MAINT", ...
	Status string
	// Check is the last health check's result: "L4OK", "L4CON" (refused), "L4TOUT", "INI", ...
	Check string
}

// Up reports whether the server is in the rotation with a passed health check.
func (s ServerStatus) Up() bool {
	return s.Status == "UP" && strings.HasSuffix(s.Check, "OK")
}

// Down reports whether the server is out of the rotation.
func (s ServerStatus) Down() bool {
	return strings.HasPrefix(s.Status, "DOWN") || strings.HasPrefix(s.Status, "MAINT")
}

// Status returns every server's state by server name, from the stats socket.
func (p *Proxy) Status(t testing.TB) map[string]ServerStatus {
	t.Helper()
	st, err := p.status()
	if err != nil {
		t.Fatalf("haproxytest: %v", err)
	}
	return st
}

// start writes the configuration for a fresh port, starts HAProxy and waits until its frontend
// is open.
func (p *Proxy) start(bin string, cfg Config) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	p.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := os.WriteFile(p.cfgPath, []byte(p.config(cfg)), 0o600); err != nil {
		return err
	}
	logFile, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close() // HAProxy has its own descriptor
	_ = os.Remove(p.sock)
	p.cmd = exec.Command(bin, "-db", "-f", p.cfgPath)
	p.cmd.Stdout = logFile
	p.cmd.Stderr = logFile
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		p.cmd = nil
		return fmt.Errorf("start haproxy: %w", err)
	}
	p.done = make(chan struct{})
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()

	// The listeners are bound before the stats socket answers, so an open frontend in `show
	// stat` means clients can connect. (No test connection through the frontend: it would reach
	// a backend.)
	deadline := time.Now().Add(waitTimeout)
	for {
		err := p.frontendOpen()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("haproxy exited (%v); log %s", p.waitErr, p.logPath)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("frontend %s not open after %v: %v", p.addr, waitTimeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// config renders HAProxy's configuration.
func (p *Proxy) config(cfg Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by gatekeeper internal/haproxytest
global
    nbthread 1
    maxconn 4096
    log stderr format raw local0 info
    stats socket %s mode 600 level admin

defaults
    mode tcp
    log global
    option tcplog
    retries 2
    option redispatch 1
    timeout connect 2s
    timeout check 1s
    timeout client 1h
    timeout server 1h

frontend %s
    bind %s
    default_backend %s

backend %s
    balance roundrobin
`, p.sock, frontendName, p.addr, backendName, backendName)
	if cfg.Source != "" {
		fmt.Fprintf(&b, "    source %s\n", cfg.Source)
	}
	b.WriteString("    default-server send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 1\n")
	for i, addr := range cfg.Backends {
		fmt.Fprintf(&b, "    server %s %s\n", ServerName(i), addr)
	}
	return b.String()
}

// frontendOpen asks the stats socket whether the frontend is open.
func (p *Proxy) frontendOpen() error {
	rows, err := p.showStat()
	if err != nil {
		return err
	}
	for _, r := range rows {
		if r["pxname"] == frontendName && r["svname"] == "FRONTEND" {
			if r["status"] == "OPEN" {
				return nil
			}
			return fmt.Errorf("frontend is %s", r["status"])
		}
	}
	return errors.New("no frontend in show stat")
}

// waitFor polls the servers' states until cond holds, failing t after waitTimeout or when
// HAProxy exits.
func (p *Proxy) waitFor(t testing.TB, what string, cond func(map[string]ServerStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		st, err := p.status()
		if err == nil && cond(st) {
			return
		}
		select {
		case <-p.done:
			p.logTail()
			t.Fatalf("haproxytest: waiting for %s: haproxy exited (%v)", what, p.waitErr)
		default:
		}
		if time.Now().After(deadline) {
			p.logTail()
			t.Fatalf("haproxytest: no %s after %v: servers %v (err %v)", what, waitTimeout, st, err)
		}
		time.Sleep(pollInterval)
	}
}

// status returns the backend's servers by name.
func (p *Proxy) status() (map[string]ServerStatus, error) {
	rows, err := p.showStat()
	if err != nil {
		return nil, err
	}
	st := make(map[string]ServerStatus)
	for _, r := range rows {
		if r["pxname"] != backendName || r["svname"] == "BACKEND" {
			continue
		}
		st[r["svname"]] = ServerStatus{
			Status: r["status"],
			// "* L4OK": a check is running; the result is the last one's.
			Check: strings.TrimPrefix(r["check_status"], "* "),
		}
	}
	return st, nil
}

// showStat runs `show stat` on the stats socket and returns its CSV rows as column → value.
func (p *Proxy) showStat() ([]map[string]string, error) {
	out, err := p.command("show stat")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "# ") {
		return nil, fmt.Errorf("show stat: unexpected answer %q", out)
	}
	cols := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	var rows []map[string]string
	for _, line := range lines[1:] {
		if line == "" {
			continue
		}
		row := make(map[string]string, len(cols))
		for i, v := range strings.Split(line, ",") {
			if i < len(cols) {
				row[cols[i]] = v
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// command sends one command to the stats socket and returns the answer.
func (p *Proxy) command(cmd string) (string, error) {
	conn, err := net.DialTimeout("unix", p.sock, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", err
	}
	out, err := io.ReadAll(bufio.NewReader(conn))
	return string(out), err
}

// portTaken reports whether HAProxy's log says it could not bind its frontend.
func (p *Proxy) portTaken() bool {
	log, _ := os.ReadFile(p.logPath)
	return strings.Contains(string(log), "cannot bind socket") || strings.Contains(string(log), "Address already in use")
}

// cleanup prints the log when the test failed and stops HAProxy.
func (p *Proxy) cleanup() {
	if p.t.Failed() {
		p.logTail()
	}
	p.stop()
}

// stop ends HAProxy with SIGTERM (immediate in -db mode) and waits, killing it after stopTimeout.
func (p *Proxy) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// logTail prints the end of HAProxy's log and its configuration's path through t.Log.
func (p *Proxy) logTail() {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		p.t.Logf("haproxytest: log: %v", err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	p.t.Logf("haproxytest: config %s; last %d lines of %s:\n%s", p.cfgPath, len(lines), p.logPath, strings.Join(lines, "\n"))
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
