// Package etcdtest runs a real etcd cluster (Debian's etcd-server, the `etcd` binary) on loopback
// for tests: one or three members on free 127.0.0.1 ports, data directories and logs in the test's
// temporary directory, every member stopped when the test ends.
//
// Members can be stopped, killed and restarted on their data directories to test what a store does
// when one member or the quorum is lost. A member's log is printed through t.Log when the test fails.
package etcdtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// startAttempts is how often Start tries fresh ports when a member lost a port race.
	startAttempts = 3
	// healthyTimeout bounds every wait for a member or the cluster to serve.
	healthyTimeout = 30 * time.Second
	// stopTimeout is how long Stop waits after SIGTERM before it kills the member.
	stopTimeout = 10 * time.Second
	// probeTimeout is the deadline of one readiness probe (a linearizable Get).
	probeTimeout = 500 * time.Millisecond
	// probeInterval is the pause between readiness probes.
	probeInterval = 50 * time.Millisecond
	// logTailLines is how much of each member's log is printed when the test fails.
	logTailLines = 60
)

// Cluster is a running etcd cluster started by Start. Its methods must be called from the test's
// goroutine (they report problems with t.Fatal); Endpoints may be called from anywhere.
type Cluster struct {
	t       testing.TB
	bin     string
	token   string
	members []*member

	mu sync.Mutex // guards each member's proc
}

// member is one etcd process: its fixed name, ports and directories, and the running process.
type member struct {
	name       string
	dir        string // holds data/ and etcd.log
	clientPort int
	peerPort   int
	proc       *process // nil while stopped
}

// process is one run of etcd; done is closed once it has exited and err holds Wait's result.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts an etcd cluster of members members (1 or 3) on 127.0.0.1 with free client and peer
// ports and returns once every member serves linearizable reads. t.Cleanup kills every member;
// the data directories are removed with t's temporary directory. When the `etcd` binary is
// missing, Start fails the test (it never skips): `make test` installs Debian's etcd-server.
func Start(t testing.TB, members int) *Cluster {
	t.Helper()
	if members != 1 && members != 3 {
		t.Fatalf("etcdtest.Start: %d members; use 1 or 3", members)
	}
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcdtest: the etcd binary is not on PATH (%v): `make test` installs it "+
			"(scripts/install-deps.sh, Debian package etcd-server), or run apt-get install etcd-server", err)
	}
	root := t.TempDir() // before t.Cleanup below, so the members are gone before it is removed
	c := &Cluster{t: t, bin: bin, token: "etcdtest-" + randomHex(8)}
	t.Cleanup(c.cleanup)

	for attempt := 1; ; attempt++ {
		err := c.startOnce(filepath.Join(root, fmt.Sprintf("attempt%d", attempt)), members)
		if err == nil {
			return c
		}
		var pt portTakenError
		if !errors.As(err, &pt) || attempt == startAttempts {
			c.logAll()
			c.killAll()
			t.Fatalf("etcdtest.Start: %v", err)
		}
		t.Logf("etcdtest.Start: %v; retrying with new ports", err)
		c.killAll()
	}
}

// portTakenError is a member that exited because one of its ports was taken meanwhile.
type portTakenError struct{ err error }

func (e portTakenError) Error() string {
	return "a port was taken by another process: " + e.err.Error()
}

func (e portTakenError) Unwrap() error { return e.err }

// startOnce picks ports, starts every member in dir and waits until the cluster serves.
func (c *Cluster) startOnce(dir string, n int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.members = make([]*member, n)
	for i := range c.members {
		c.members[i] = &member{
			name:       fmt.Sprintf("m%d", i),
			dir:        filepath.Join(dir, fmt.Sprintf("m%d", i)),
			clientPort: ports[2*i],
			peerPort:   ports[2*i+1],
		}
	}
	c.mu.Unlock()
	for i := range c.members {
		if err := c.startMember(i, "new"); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(healthyTimeout)
	for i := range c.members {
		if err := c.waitServes(i, deadline); err != nil {
			return err
		}
	}
	return nil
}

// Endpoints returns the client URL of every member, http://127.0.0.1:PORT, in member order
// (stopped members included: a client given all of them finds the ones that serve).
func (c *Cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL()
	}
	return eps
}

// Client returns a client for all members with a 5 s dial timeout and no client logging; it is
// closed by t.Cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Leader returns the index of the member that is the raft leader, as the running members report
// it, waiting up to 30 s for one to be elected.
func (c *Cluster) Leader(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(healthyTimeout)
	for {
		c.mu.Lock()
		var eps []string
		for _, m := range c.members {
			if m.proc != nil {
				eps = append(eps, m.clientURL())
			}
		}
		c.mu.Unlock()
		i, err := c.leader(eps)
		if err == nil {
			return i
		}
		if time.Now().After(deadline) {
			c.logAll()
			t.Fatalf("etcdtest: Leader: %v", err)
		}
		time.Sleep(probeInterval)
	}
}

// leader asks the members at eps for their status and returns the index of the member that is
// the leader, by its member ID.
func (c *Cluster) leader(eps []string) (int, error) {
	if len(eps) == 0 {
		return -1, errors.New("no member is running")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: probeTimeout, Logger: zap.NewNop()})
	if err != nil {
		return -1, err
	}
	defer cli.Close()
	var last error
	for _, ep := range eps {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if st.Leader == 0 {
			last = fmt.Errorf("%s knows no leader", ep)
			continue
		}
		if st.Header.MemberId != st.Leader {
			continue
		}
		for i, u := range c.Endpoints() {
			if u == ep {
				return i, nil
			}
		}
	}
	if last == nil {
		last = errors.New("no running member is the leader")
	}
	return -1, last
}

// Stop stops member i with SIGTERM and waits until it has exited (killing it after 10 s).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	c.signal(i, syscall.SIGTERM, stopTimeout)
}

// Kill kills member i with SIGKILL and waits until it has exited.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.signal(i, syscall.SIGKILL, 0)
}

// Restart starts the stopped member i again on its data directory and ports (with
// --initial-cluster-state existing). It returns once the member serves linearizable reads when a
// majority of members is then running; otherwise (the member cannot serve without a quorum) once
// it accepts connections on its client port: restart more members, then call WaitHealthy.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.checkIndex(i)
	c.mu.Lock()
	running := c.members[i].proc != nil
	c.mu.Unlock()
	if running {
		c.t.Fatalf("etcdtest: Restart(%d): member is running; Stop or Kill it first", i)
	}
	if err := c.startMember(i, "existing"); err != nil {
		c.logMember(i)
		c.t.Fatalf("etcdtest: Restart(%d): %v", i, err)
	}
	deadline := time.Now().Add(healthyTimeout)
	var err error
	if c.running() > len(c.members)/2 {
		err = c.waitServes(i, deadline)
	} else {
		err = c.waitListening(i, deadline)
	}
	if err != nil {
		c.logMember(i)
		c.t.Fatalf("etcdtest: Restart(%d): %v", i, err)
	}
}

// WaitHealthy waits until every running member serves linearizable reads (which needs a quorum)
// and fails t if that takes longer than 30 s or a running member exits.
func (c *Cluster) WaitHealthy(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(healthyTimeout)
	for i := range c.members {
		c.mu.Lock()
		running := c.members[i].proc != nil
		c.mu.Unlock()
		if !running {
			continue
		}
		if err := c.waitServes(i, deadline); err != nil {
			c.logAll()
			t.Fatalf("etcdtest: WaitHealthy: %v", err)
		}
	}
}

// startMember starts member i's process with the given --initial-cluster-state.
func (c *Cluster) startMember(i int, state string) error {
	c.mu.Lock()
	m := c.members[i]
	peers := make([]string, len(c.members))
	for j, o := range c.members {
		peers[j] = o.name + "=" + o.peerURL()
	}
	c.mu.Unlock()

	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return err
	}
	logFile, err := os.OpenFile(m.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor
	fmt.Fprintf(logFile, "=== etcdtest: %s starting %s (initial-cluster-state %s)\n",
		time.Now().Format(time.RFC3339Nano), m.name, state)

	cmd := exec.Command(c.bin,
		"--name", m.name,
		"--data-dir", filepath.Join(m.dir, "data"),
		"--listen-client-urls", m.clientURL(),
		"--advertise-client-urls", m.clientURL(),
		"--listen-peer-urls", m.peerURL(),
		"--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", strings.Join(peers, ","),
		"--initial-cluster-state", state,
		"--initial-cluster-token", c.token,
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--quota-backend-bytes", strconv.Itoa(256<<20),
		"--logger", "zap",
		"--log-outputs", "stderr",
	)
	cmd.Env = etcdEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	c.mu.Lock()
	m.proc = p
	c.mu.Unlock()
	return nil
}

// etcdEnv is the test's environment without ETCD_* variables, which etcd would read as flags.
func etcdEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitServes waits until member i answers a linearizable Get. It gives up when any member that
// was running exits (one that lost a port race at start, say) or at deadline.
func (c *Cluster) waitServes(i int, deadline time.Time) error {
	// A gRPC client whose first dial is refused backs off for a second: dial only once the
	// port listens.
	if err := c.waitListening(i, deadline); err != nil {
		return err
	}
	m := c.members[i]
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.clientURL()},
		DialTimeout: probeTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("client for %s: %w", m.name, err)
	}
	defer cli.Close()
	return c.poll(deadline, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		_, err := cli.Get(ctx, "etcdtest-health")
		if err != nil {
			return fmt.Errorf("member %s (%s) does not serve: %w", m.name, m.clientURL(), err)
		}
		return nil
	})
}

// waitListening waits until member i accepts TCP connections on its client port (etcd listens
// before it can serve), under the same conditions as waitServes.
func (c *Cluster) waitListening(i int, deadline time.Time) error {
	m := c.members[i]
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.clientPort))
	return c.poll(deadline, func() error {
		conn, err := net.DialTimeout("tcp", addr, probeTimeout)
		if err != nil {
			return fmt.Errorf("member %s does not listen on %s: %w", m.name, addr, err)
		}
		return conn.Close()
	})
}

// poll calls probe every probeInterval until it succeeds. It fails at deadline with probe's last
// error, and as soon as a member that was running when poll began has exited.
func (c *Cluster) poll(deadline time.Time, probe func() error) error {
	c.mu.Lock()
	watched := make(map[*member]*process)
	for _, m := range c.members {
		if m.proc != nil {
			watched[m] = m.proc
		}
	}
	c.mu.Unlock()
	for {
		err := probe()
		if err == nil {
			return nil
		}
		for m, p := range watched {
			select {
			case <-p.done:
				return c.exitError(m, p)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", healthyTimeout, err)
		}
		time.Sleep(probeInterval)
	}
}

// exitError describes a member that exited while being waited for; a portTakenError when its log
// says it could not bind its ports.
func (c *Cluster) exitError(m *member, p *process) error {
	c.mu.Lock()
	if m.proc == p {
		m.proc = nil
	}
	c.mu.Unlock()
	err := fmt.Errorf("member %s exited (%v); log %s", m.name, p.err, m.logPath())
	if log, _ := os.ReadFile(m.logPath()); bytes.Contains(log, []byte("address already in use")) {
		err = portTakenError{err}
	}
	return err
}

// signal sends sig to member i and waits for it to exit; after grace (if non-zero) it kills it.
func (c *Cluster) signal(i int, sig syscall.Signal, grace time.Duration) {
	c.t.Helper()
	c.checkIndex(i)
	c.mu.Lock()
	m := c.members[i]
	p := m.proc
	c.mu.Unlock()
	if p == nil {
		c.t.Fatalf("etcdtest: member %d (%s) is not running", i, m.name)
	}
	_ = p.cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-p.done:
		case <-time.After(grace):
			c.t.Logf("etcdtest: %s still running %v after %v; killing it", m.name, grace, sig)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	} else {
		<-p.done
	}
	c.mu.Lock()
	m.proc = nil
	c.mu.Unlock()
}

// running counts the members whose process runs.
func (c *Cluster) running() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.members {
		if m.proc != nil {
			n++
		}
	}
	return n
}

// checkIndex fails the test for a member index out of range.
func (c *Cluster) checkIndex(i int) {
	c.t.Helper()
	if i < 0 || i >= len(c.members) {
		c.t.Fatalf("etcdtest: no member %d (cluster has %d)", i, len(c.members))
	}
}

// cleanup prints the logs when the test failed and kills every member.
func (c *Cluster) cleanup() {
	if c.t.Failed() {
		c.logAll()
	}
	c.killAll()
}

// killAll kills every running member and waits for it.
func (c *Cluster) killAll() {
	c.mu.Lock()
	var procs []*process
	for _, m := range c.members {
		if m.proc != nil {
			procs = append(procs, m.proc)
			m.proc = nil
		}
	}
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Kill()
	}
	for _, p := range procs {
		<-p.done
	}
}

// logAll prints the end of every member's log through t.Log.
func (c *Cluster) logAll() {
	for i := range c.members {
		c.logMember(i)
	}
}

// logMember prints the end of member i's log through t.Log.
func (c *Cluster) logMember(i int) {
	m := c.members[i]
	data, err := os.ReadFile(m.logPath())
	if err != nil {
		c.t.Logf("etcdtest: log of %s: %v", m.name, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	c.t.Logf("etcdtest: last %d lines of %s:\n%s", len(lines), m.logPath(), strings.Join(lines, "\n"))
}

func (m *member) clientURL() string { return "http://127.0.0.1:" + strconv.Itoa(m.clientPort) }
func (m *member) peerURL() string   { return "http://127.0.0.1:" + strconv.Itoa(m.peerPort) }
func (m *member) logPath() string   { return filepath.Join(m.dir, "etcd.log") }

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment ago (all held open at
// once, so they differ). Another process may take one before etcd binds it: Start retries.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
