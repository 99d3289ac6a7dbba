package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mathrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// trustedAddr is the client source address listed in trusted_networks: `ssh -b 127.0.0.2`
	// comes from a trusted network, the default source 127.0.0.1 does not.
	trustedAddr = "127.0.0.2"
	// userPrefix names every local user the tests create; the lander only admits these.
	userPrefix = "gktest-"
	// sshdPath is the OpenSSH daemon used as the lander.
	sshdPath = "/usr/sbin/sshd"
	// cmdTimeout bounds every client command so that a wedged relay fails the test, not the run.
	cmdTimeout = 3 * time.Minute
	// startTimeout bounds the wait for a daemon's SSH banner.
	startTimeout = 60 * time.Second
	// failureDelay is the gatekeeper's failure_delay in the tests: short, to keep them fast.
	failureDelay = 200 * time.Millisecond
	// totpSkew lets the tests log in with codes of future steps, several logins per 30 s window:
	// with 6, eleven logins of one user before a test waits for the clock (3 allowed five, and
	// the end-to-end tests spent 2.5 of their 6 minutes waiting). The "clock 4 minutes fast"
	// tests send a code 8 steps ahead, which must stay outside it.
	totpSkew = 6
)

// requiredTools are the programs the tests run; scripts/install-deps.sh installs them.
var requiredTools = []string{sshdPath, "ssh", "scp", "sftp", "rsync", "oathtool", "ssh-agent",
	"ssh-add", "ssh-keygen", "useradd", "userdel", "chpasswd", "xauth"}

// h is the state shared by all tests of the package (binary, lander, one shared gatekeeper). It
// is package-level because TestMain must tear it down after the last test; everything in it is
// set up lazily, so that a run without root skips instead of failing in TestMain.
var h harness

type harness struct {
	baseOnce sync.Once
	baseErr  error
	tmp      string // short private directory: unix socket paths must stay under 108 bytes
	repo     string // repository root (holds go.mod)
	askpass  string // SSH_ASKPASS script

	landerOnce sync.Once
	lander     *lander
	landerErr  error

	binOnce sync.Once
	bin     string
	binErr  error

	sharedOnce sync.Once
	shared     *gatekeeper
	sharedErr  error

	userMu sync.Mutex // useradd/userdel lock /etc/passwd: one at a time

	sensMu    sync.Mutex
	sensitive []string // every password and TOTP secret the tests used: must never be stored or logged
}

// remember records a password or base32 secret that no DB file or log may contain.
func (hs *harness) remember(s string) {
	hs.sensMu.Lock()
	defer hs.sensMu.Unlock()
	hs.sensitive = append(hs.sensitive, s)
}

// leaks reports every remembered password or secret (in any common encoding) found in the files.
func (hs *harness) leaks(files ...string) error {
	hs.sensMu.Lock()
	values := slices.Clone(hs.sensitive)
	hs.sensMu.Unlock()
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		for _, v := range values {
			for _, form := range encodings(v) {
				if i := bytes.Index(b, form); i >= 0 {
					errs = append(errs, fmt.Errorf("%s contains a password or secret (%q) at byte %d", f, form, i))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// encodings are the forms in which a password or a base32 secret could leak.
func encodings(v string) [][]byte {
	forms := [][]byte{[]byte(v)}
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(v)
	if err != nil || len(raw) < 10 {
		return forms // a password
	}
	var grouped []string
	for c := range slices.Chunk([]byte(v), 4) {
		grouped = append(grouped, string(c))
	}
	return append(forms, []byte(strings.ToLower(v)), []byte(strings.Join(grouped, " ")), raw,
		[]byte(hex.EncodeToString(raw)), []byte(base64.StdEncoding.EncodeToString(raw)),
		[]byte(base64.RawURLEncoding.EncodeToString(raw)))
}

func TestMain(m *testing.M) {
	code := m.Run()
	if err := h.close(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e teardown:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// close stops the shared daemons and removes the shared temporary directory. A data race or a
// panic in the shared gatekeeper's log fails the run even when every test passed.
func (hs *harness) close() error {
	var errs []error
	if hs.shared != nil {
		if err := hs.shared.stop(); err != nil {
			errs = append(errs, fmt.Errorf("shared gatekeeper: %w", err))
		}
		if err := hs.leaks(hs.shared.db, hs.shared.logPath); err != nil {
			errs = append(errs, err)
		}
		if err := hs.shared.logProblems(); err != nil {
			errs = append(errs, fmt.Errorf("shared gatekeeper: %w\n%s", err, tail(hs.shared.logBytes(), 80)))
		}
	}
	if hs.lander != nil {
		if err := hs.lander.stop(); err != nil {
			errs = append(errs, fmt.Errorf("lander sshd: %w", err))
		}
	}
	if hs.tmp != "" && os.Getenv("GK_E2E_KEEP") != "" {
		fmt.Fprintf(os.Stderr, "e2e: GK_E2E_KEEP set, keeping %s (logs, configs, DBs)\n", hs.tmp)
	} else if hs.tmp != "" {
		if err := os.RemoveAll(hs.tmp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// requireRoot skips the test without root, except under CI=true where skipping would hide that
// the end-to-end tests never ran.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const why = "end-to-end tests need root: they create local users and the throwaway sshd checks passwords"
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: refusing to skip)")
	}
	t.Skip(why + "; run `sudo make test`")
}

// base checks root and the tools and prepares the shared directory with the askpass script.
func base(t testing.TB) *harness {
	t.Helper()
	requireRoot(t)
	h.baseOnce.Do(func() { h.baseErr = h.initBase() })
	if h.baseErr != nil {
		t.Fatal(h.baseErr)
	}
	return &h
}

func (hs *harness) initBase() error {
	var missing []string
	for _, tool := range requiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing programs %v: run scripts/install-deps.sh (or `make test`) as root", missing)
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	hs.repo = filepath.Dir(wd)
	if _, err := os.Stat(filepath.Join(hs.repo, "go.mod")); err != nil {
		return fmt.Errorf("repository root not found above %s: %w", wd, err)
	}
	if hs.tmp, err = os.MkdirTemp("", "gke2e"); err != nil {
		return err
	}
	// Users' shells must reach files the tests share with them (the askpass script is run by
	// the client as root, but test data is read by the users).
	if err := os.Chmod(hs.tmp, 0o755); err != nil {
		return err
	}
	hs.askpass = filepath.Join(hs.tmp, "askpass")
	return os.WriteFile(hs.askpass, []byte(askpassScript), 0o755)
}

// askpassScript answers the OpenSSH client's prompts from files in $GK_ASKPASS_DIR and records
// every prompt, so that tests can assert which prompts were asked. Any other prompt fails loudly.
//
// With a file "delay" in $GK_ASKPASS_DIR it waits that many seconds before each answer (a slow
// typist), and it appends the time of each answer (seconds since the epoch) to "answered".
const askpassScript = `#!/bin/sh
d="${GK_ASKPASS_DIR:?GK_ASKPASS_DIR not set}"
printf '%s\n' "$1" >> "$d/prompts"
if [ -f "$d/delay" ]; then sleep "$(cat "$d/delay")"; fi
case "$1" in
*"Verification code:"*)
	if [ -f "$d/code" ]; then cat "$d/code"; date +%s.%N >> "$d/answered"; exit 0; fi
	echo "askpass: asked for a code but the test gave none: $1" >&2
	exit 1 ;;
*[Pp]assword:*)
	cat "$d/password"; date +%s.%N >> "$d/answered"; exit 0 ;;
*)
	echo "askpass: unexpected prompt: $1" >&2
	exit 1 ;;
esac
`

// landerFor returns the shared throwaway sshd, starting it on first use.
func landerFor(t testing.TB) *lander {
	t.Helper()
	hs := base(t)
	hs.landerOnce.Do(func() {
		dir := filepath.Join(hs.tmp, "lander")
		if hs.landerErr = os.Mkdir(dir, 0o700); hs.landerErr != nil {
			return
		}
		hs.lander, hs.landerErr = startLander(dir)
	})
	if hs.landerErr != nil {
		t.Fatal("lander sshd: ", hs.landerErr)
	}
	return hs.lander
}

// binary returns the race-enabled gatekeeper binary, building it on first use.
func binary(t testing.TB) string {
	t.Helper()
	hs := base(t)
	hs.binOnce.Do(func() {
		// GK_E2E_BIN runs the tests against a prebuilt binary (e.g. an older build, to check
		// that a test catches a bug).
		if bin := os.Getenv("GK_E2E_BIN"); bin != "" {
			hs.bin, hs.binErr = filepath.Abs(bin)
			return
		}
		hs.bin = filepath.Join(hs.tmp, "gatekeeper")
		cmd := exec.Command("go", "build", "-race", "-o", hs.bin, "./cmd/gatekeeper")
		cmd.Dir = hs.repo
		if out, err := cmd.CombinedOutput(); err != nil {
			hs.binErr = fmt.Errorf("go build -race ./cmd/gatekeeper: %w\n%s", err, out)
		}
	})
	if hs.binErr != nil {
		t.Fatal(hs.binErr)
	}
	return hs.bin
}

// sharedGatekeeper returns the gatekeeper most tests share (default test options), started on
// first use and stopped by TestMain.
func sharedGatekeeper(t testing.TB) *gatekeeper {
	t.Helper()
	hs := base(t)
	l := landerFor(t)
	bin := binary(t)
	hs.sharedOnce.Do(func() {
		hs.shared, hs.sharedErr = newGatekeeper(bin, hs.tmp, l, gkOptions{})
	})
	if hs.sharedErr != nil {
		t.Fatal("shared gatekeeper: ", hs.sharedErr)
	}
	return hs.shared
}

// ---------------------------------------------------------------------------------------------
// lander: a throwaway OpenSSH sshd

type lander struct {
	dir      string
	port     int
	hostKey  string // "ssh-ed25519 AAAA..." (public)
	logPath  string
	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	stopOnce sync.Once
}

func (l *lander) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(l.port)) }

func (l *lander) logBytes() []byte {
	b, _ := os.ReadFile(l.logPath)
	return b
}

// landerConfig is the throwaway sshd's configuration; %[1]d port, %[2]s dir, %[3]s extra lines.
const landerConfig = `# throwaway lander for gatekeeper's end-to-end tests
Port %[1]d
ListenAddress 127.0.0.1
HostKey %[2]s/ssh_host_ed25519_key
PidFile %[2]s/sshd.pid
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication yes
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers gktest-*
AllowTcpForwarding yes
AllowAgentForwarding yes
X11Forwarding yes
X11UseLocalhost yes
Subsystem sftp internal-sftp
StrictModes no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 200
MaxSessions 50
LoginGraceTime 60
%[3]s`

func startLander(dir string) (*lander, error) { return startLanderWith(dir, "") }

// startLanderWith starts a lander whose sshd_config ends with the lines extra.
func startLanderWith(dir, extra string) (*lander, error) {
	// sshd insists on its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	key := filepath.Join(dir, "ssh_host_ed25519_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gk-e2e-lander", "-f", key).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(pub))
	l := &lander{dir: dir, port: freePort(), hostKey: f[0] + " " + f[1], logPath: filepath.Join(dir, "sshd.log")}
	cfg := filepath.Join(dir, "sshd_config")
	// PerSourcePenalties (OpenSSH 9.8+) would lock out 127.0.0.1 after the tests' deliberate
	// failures; older versions reject the keyword, so ask sshd itself whether it knows it.
	penalties := "PerSourcePenalties no\n"
	for _, e := range []string{penalties + extra, extra} {
		if err := os.WriteFile(cfg, fmt.Appendf(nil, landerConfig, l.port, dir, e), 0o600); err != nil {
			return nil, err
		}
		out, err := exec.Command(sshdPath, "-t", "-f", cfg).CombinedOutput()
		if err == nil {
			break
		}
		if e == extra || !bytes.Contains(out, []byte("PerSourcePenalties")) {
			return nil, fmt.Errorf("sshd -t: %w: %s", err, out)
		}
	}
	logf, err := os.OpenFile(l.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	l.cmd = exec.Command(sshdPath, "-D", "-e", "-f", cfg)
	l.cmd.Stdout, l.cmd.Stderr = logf, logf
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := l.cmd.Start(); err != nil {
		return nil, err
	}
	l.exited = make(chan struct{})
	go func() { l.waitErr = l.cmd.Wait(); close(l.exited) }()
	if err := waitBanner(l.addr(), l.exited, startTimeout); err != nil {
		l.stop()
		return nil, fmt.Errorf("%w\n%s", err, l.logBytes())
	}
	return l, nil
}

// stop ends this sshd's process group (its listener and per-connection children), never the
// machine's own sshd.
func (l *lander) stop() error {
	var err error
	l.stopOnce.Do(func() {
		pgid := l.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-l.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-l.exited
			err = errors.New("sshd did not stop on SIGTERM")
		}
	})
	return err
}

// ---------------------------------------------------------------------------------------------
// gatekeeper instances

// gkOptions are the settings a test may change; zero values mean the defaults of the tests.
type gkOptions struct {
	failures     int    // rate_limit.failures (default 1000: never interferes)
	window       string // rate_limit.window (default "30s")
	lockout      string // rate_limit.lockout (default "5s")
	upstreamPort int    // lander port (default: the lander's)
	// requestTimeout is store.etcd.request_timeout for gatekeepers on etcd
	// (default "1s"); see cluster.
	requestTimeout string
	// edit, if set, rewrites the YAML before it is written (extra keys such as
	// enroll.allowed_networks); see test/helpers2_test.go.
	edit func(yaml string) string
}

type gatekeeper struct {
	bin         string
	dir         string
	cfgPath     string
	logPath     string
	knownHosts  string
	db          string
	secretKey   string
	hostKey     string
	socket      string
	port        int
	opts        gkOptions
	metricsPort int

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// gatekeeperConfig is the YAML the tests give the daemon.
const gatekeeperConfig = `listen: "127.0.0.1:%[1]d"
host_key_files: ["%[2]s"]
db: "%[3]s"
secret_key_file: "%[4]s"
upstream:
  address: "127.0.0.1:%[5]d"
  known_hosts: "%[6]s"
first_factor: "upstream"
trusted_networks: ["127.0.0.2/32"]
totp:
  issuer: "gatekeeper-e2e"
  skew: %[7]d
rate_limit:
  failures: %[8]d
  window: "%[9]s"
  lockout: "%[10]s"
  network_failures: %[8]d
  trusted_failures: 1000
failure_delay: "%[11]s"
# Many tests log in at once from 127.0.0.1: the pre-auth caps are the flood tests' business.
max_startups: 1000
preauth:
  per_address: 500
  per_network: 1000
# TestMaxChannelsOpenSSH opens one forwarded connection more than this (the default, 256, would
# take minutes under the suite's load).
max_channels: 64
enroll:
  portal_listen: "127.0.0.1:%[12]d"
  ssh_listen: "127.0.0.1:%[13]d"
admin:
  socket: "%[14]s"
metrics_listen: "127.0.0.1:%[15]d"
log_format: "json"
`

// newGatekeeper writes a config into a fresh directory under parent and starts the daemon.
func newGatekeeper(bin, parent string, l *lander, o gkOptions) (*gatekeeper, error) {
	if o.failures == 0 {
		o.failures = 1000
	}
	if o.window == "" {
		o.window = "30s"
	}
	if o.lockout == "" {
		o.lockout = "5s"
	}
	if o.upstreamPort == 0 {
		o.upstreamPort = l.port
	}
	dir, err := os.MkdirTemp(parent, "gk")
	if err != nil {
		return nil, err
	}
	g := &gatekeeper{
		bin:        bin,
		dir:        dir,
		opts:       o,
		knownHosts: filepath.Join(dir, "lander_known_hosts"),
		db:         filepath.Join(dir, "gatekeeper.db"),
		secretKey:  filepath.Join(dir, "secret.key"),
		hostKey:    filepath.Join(dir, "ssh_host_ed25519_key"),
	}
	// The lander's key, filed under the upstream address (a dead port in the lander-down test).
	line := fmt.Sprintf("[127.0.0.1]:%d %s\n", o.upstreamPort, l.hostKey)
	if err := os.WriteFile(g.knownHosts, []byte(line), 0o644); err != nil {
		return nil, err
	}
	if err := g.writeConfig("gatekeeper"); err != nil {
		return nil, err
	}
	return g, g.start()
}

// writeConfig gives g fresh ports, an admin socket and config and log files named after name in
// its directory (the data files stay: a second config can point at the same database).
func (g *gatekeeper) writeConfig(name string) error {
	g.port = freePort()
	g.metricsPort = freePort()
	g.cfgPath = filepath.Join(g.dir, name+".yaml")
	g.logPath = filepath.Join(g.dir, name+".log")
	g.socket = filepath.Join(g.dir, name+".sock")
	if len(g.socket) >= 100 {
		return fmt.Errorf("admin socket path too long for sun_path: %s", g.socket)
	}
	o := g.opts
	cfg := fmt.Sprintf(gatekeeperConfig, g.port, g.hostKey, g.db, g.secretKey, o.upstreamPort,
		g.knownHosts, totpSkew, o.failures, o.window, o.lockout, failureDelay, freePort(), freePort(),
		g.socket, g.metricsPort)
	if o.edit != nil {
		cfg = o.edit(cfg)
	}
	return os.WriteFile(g.cfgPath, []byte(cfg), 0o600)
}

// ownGatekeeper starts a gatekeeper for one test (for restarts, rate limits, broken landers) in
// front of the shared lander; see gatekeeperBefore.
func ownGatekeeper(t *testing.T, o gkOptions) *gatekeeper {
	t.Helper()
	return gatekeeperBefore(t, landerFor(t), o)
}

// gatekeeperBefore starts a gatekeeper for one test in front of l (the shared lander, or one of
// the test's own). When the test ends it is stopped, its log checked for races and panics, its
// database and log for the secrets the tests used, and its directory removed (kept with
// GK_E2E_KEEP set).
func gatekeeperBefore(t *testing.T, l *lander, o gkOptions) *gatekeeper {
	t.Helper()
	hs := base(t)
	g, err := newGatekeeper(binary(t), hs.tmp, l, o)
	if g != nil {
		t.Cleanup(func() {
			if err := g.stop(); err != nil {
				t.Errorf("stopping gatekeeper: %v", err)
			}
			if err := g.logProblems(); err != nil {
				t.Error(err)
			}
			if err := hs.leaks(g.db, g.logPath); err != nil {
				t.Error(err)
			}
			if t.Failed() {
				t.Logf("gatekeeper log (%s):\n%s", g.logPath, tail(g.logBytes(), 60))
			}
			if os.Getenv("GK_E2E_KEEP") == "" {
				_ = os.RemoveAll(g.dir)
			}
		})
	}
	if err != nil {
		t.Fatal("starting gatekeeper: ", err)
	}
	return g
}

func (g *gatekeeper) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(g.port)) }

// start runs `gatekeeper serve --config` and waits for its SSH banner; stderr goes to the log.
func (g *gatekeeper) start() error {
	exited, err := g.startProcess()
	if err != nil {
		return err
	}
	if err := waitBanner(g.addr(), exited, startTimeout); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(g.logBytes(), 40))
	}
	return nil
}

// startProcess starts the daemon without waiting for it to serve (for tests that expect it to
// refuse to start); it returns a channel closed when the process ends.
func (g *gatekeeper) startProcess() (<-chan struct{}, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.startLocked()
}

func (g *gatekeeper) startLocked() (<-chan struct{}, error) {
	logf, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(g.bin, "serve", "--config", g.cfgPath)
	cmd.Env = cleanEnv("HOME=" + g.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	g.cmd, g.exited, g.waitErr = cmd, exited, nil
	go func() {
		err := cmd.Wait()
		g.mu.Lock()
		if g.cmd == cmd {
			g.waitErr = err
		}
		g.mu.Unlock()
		close(exited)
	}()
	return exited, nil
}

// sibling is a gatekeeper on the same data files (DB, keys, known_hosts) as g; it needs its own
// writeConfig before it starts.
func (g *gatekeeper) sibling() *gatekeeper {
	return &gatekeeper{bin: g.bin, dir: g.dir, opts: g.opts, knownHosts: g.knownHosts, db: g.db,
		secretKey: g.secretKey, hostKey: g.hostKey}
}

// forget drops a process that has exited (a start that was meant to fail), so that stop does
// not report its exit status.
func (g *gatekeeper) forget() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cmd = nil
}

// running reports whether the daemon process is alive.
func (g *gatekeeper) running() bool {
	g.mu.Lock()
	exited := g.exited
	g.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits; a daemon that ignores it is killed and reported. It returns the
// process's exit error (a clean shutdown exits 0).
func (g *gatekeeper) stop() error {
	g.mu.Lock()
	cmd, exited := g.cmd, g.exited
	g.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		err = errors.New("gatekeeper did not exit within 15s of SIGTERM")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil && g.waitErr != nil {
		err = fmt.Errorf("gatekeeper exited badly after SIGTERM: %w", g.waitErr)
	}
	g.cmd = nil
	return err
}

// kill9 kills the daemon with SIGKILL, as a crash or power cut would.
func (g *gatekeeper) kill9(t testing.TB) {
	t.Helper()
	g.mu.Lock()
	cmd, exited := g.cmd, g.exited
	g.cmd = nil
	g.mu.Unlock()
	if cmd == nil {
		t.Fatal("kill9: gatekeeper not running")
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

func (g *gatekeeper) logBytes() []byte {
	b, _ := os.ReadFile(g.logPath)
	return b
}

// logProblems reports a data race, a panic or a fatal runtime error in the daemon's log.
func (g *gatekeeper) logProblems() error {
	log := g.logBytes()
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if i := bytes.Index(log, []byte(bad)); i >= 0 {
			return fmt.Errorf("gatekeeper log contains %q:\n%s", bad, snippet(log, i, 3000))
		}
	}
	return nil
}

// userLog returns the daemon's log lines that mention the user (to explain a failure).
func (g *gatekeeper) userLog(name string) string {
	var b strings.Builder
	for line := range strings.Lines(string(g.logBytes())) {
		if strings.Contains(line, name) {
			b.WriteString(line)
		}
	}
	return b.String()
}

// enroll links a device for u with `gatekeeper enroll`, exactly as a user at the console would:
// it reads the otpauth URI, computes the current code with oathtool and types it. It records the
// secret and the confirming step in u.
func (g *gatekeeper) enroll(t testing.TB, u *user) {
	t.Helper()
	out, err := g.runEnroll(t, u.name, func(secret string) string {
		// A step the user has not spent: a reset that keeps the user's SSH keys keeps the
		// record, and with it the last used step, so a new device's code must be newer.
		step := max(stepNow(), u.last+1)
		for step > stepNow()+(totpSkew-1) {
			next := time.Unix(int64(stepNow()+1)*30, 0)
			time.Sleep(time.Until(next) + 50*time.Millisecond) // waiting for the clock, not for a service
		}
		u.secret, u.last = secret, step
		return oathCode(t, secret, step)
	})
	if err != nil {
		t.Fatalf("gatekeeper enroll %s: %v\n%s\ngatekeeper log:\n%s", u.name, err, out, g.userLog(u.name))
	}
	if u.secret == "" {
		t.Fatalf("gatekeeper enroll %s: no otpauth URI with a secret in its output:\n%s", u.name, out)
	}
}

// runEnroll runs `gatekeeper enroll NAME --config CFG`, reads stdout until the prompt
// "Code from your app: ", and answers with answer(secret) where secret is the URI's secret=
// parameter. It returns the whole output and the command's error (nil = exit 0).
func (g *gatekeeper) runEnroll(t testing.TB, name string, answer func(secret string) string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.bin, "enroll", name, "--config", g.cfgPath)
	cmd.Env = cleanEnv("HOME=" + g.dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	var out bytes.Buffer
	r := bufio.NewReader(stdout)
	prompted := false
	for !prompted {
		b, err := r.ReadByte()
		if err != nil {
			break // no prompt: the command refused; Wait tells why
		}
		out.WriteByte(b)
		prompted = bytes.HasSuffix(out.Bytes(), []byte("Code from your app: "))
	}
	if prompted {
		secret, err := secretFromOutput(out.String())
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return out.String() + stderr.String(), err
		}
		h.remember(secret)
		if _, err := io.WriteString(stdin, answer(secret)+"\n"); err != nil {
			t.Logf("writing code to enroll: %v", err)
		}
	}
	_ = stdin.Close()
	rest, _ := io.ReadAll(r)
	out.Write(rest)
	err = cmd.Wait()
	return out.String() + stderr.String(), err
}

// secretFromOutput parses the "otpauth URI: " line of `gatekeeper enroll` and checks that the
// "Secret: " line shows the same secret.
func secretFromOutput(out string) (string, error) {
	var secret, shown string
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\r\n")
		if _, uri, ok := strings.Cut(line, "otpauth URI: "); ok {
			u, err := url.Parse(strings.TrimSpace(uri))
			if err != nil {
				return "", fmt.Errorf("bad otpauth URI %q: %w", uri, err)
			}
			if u.Scheme != "otpauth" || u.Host != "totp" {
				return "", fmt.Errorf("otpauth URI %q is not otpauth://totp/...", uri)
			}
			secret = u.Query().Get("secret")
		}
		if _, s, ok := strings.Cut(line, "Secret: "); ok {
			shown = strings.ReplaceAll(strings.TrimSpace(s), " ", "")
		}
	}
	if secret == "" {
		return "", errors.New(`no "otpauth URI: " line with a secret= parameter before the prompt`)
	}
	if shown != secret {
		return "", fmt.Errorf(`"Secret: " line shows %q, the URI has %q`, shown, secret)
	}
	return secret, nil
}

// ---------------------------------------------------------------------------------------------
// users and codes

// user is a local account on this machine, known to the lander's PAM.
type user struct {
	name     string
	password string
	home     string
	secret   string // base32, once enrolled
	last     uint64 // the newest TOTP step the test has spent (confirming or logging in)
}

// newUser creates a local user gktest-<random> with a random password; it is removed with its
// home directory when the test ends, also when it fails.
func newUser(t testing.TB) *user {
	t.Helper()
	hs := base(t)
	u := &user{name: userPrefix + randHex(5), password: "pw-" + randHex(12) + "-X!"}
	hs.remember(u.password)
	hs.userMu.Lock()
	out, err := exec.Command("useradd", "-m", "-s", "/bin/bash", u.name).CombinedOutput()
	if err == nil {
		t.Cleanup(func() {
			hs.userMu.Lock()
			defer hs.userMu.Unlock()
			// -f: the test's ssh sessions may still be winding down on the lander.
			if out, err := exec.Command("userdel", "-r", "-f", u.name).CombinedOutput(); err != nil {
				if _, lookErr := exec.Command("id", u.name).CombinedOutput(); lookErr == nil {
					t.Errorf("userdel %s: %v: %s", u.name, err, out)
				}
			}
		})
		cmd := exec.Command("chpasswd")
		cmd.Stdin = strings.NewReader(u.name + ":" + u.password + "\n")
		out, err = cmd.CombinedOutput()
	}
	hs.userMu.Unlock()
	if err != nil {
		t.Fatalf("creating user %s: %v: %s", u.name, err, out)
	}
	u.home = "/home/" + u.name
	if out, err := exec.Command("getent", "passwd", u.name).Output(); err == nil {
		if f := strings.Split(strings.TrimSpace(string(out)), ":"); len(f) >= 6 {
			u.home = f[5]
		}
	}
	return u
}

// stepNow is the current RFC 6238 time step (30 s).
func stepNow() uint64 { return uint64(time.Now().Unix() / 30) }

// oathCode is the code for the step, from the real oathtool (never from the code under test).
func oathCode(t testing.TB, secret string, step uint64) string {
	t.Helper()
	codes := oathCodes(t, secret, step, 0)
	return codes[0]
}

// oathCodes returns the codes of steps first..first+window.
func oathCodes(t testing.TB, secret string, first uint64, window int) []string {
	t.Helper()
	out, err := exec.Command("oathtool", "--totp", "-b", "-w", strconv.Itoa(window),
		"--now", fmt.Sprintf("@%d", first*30), secret).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	codes := strings.Fields(string(out))
	if len(codes) != window+1 {
		t.Fatalf("oathtool printed %q", out)
	}
	return codes
}

// nextCode returns a code for a step the user has not spent yet and the daemon accepts now
// (within the skew, keeping a margin of one step each side), waiting for the clock if the test
// has used up the window ahead. It marks the step as spent.
func (u *user) nextCode(t testing.TB) string {
	t.Helper()
	step := max(u.last+1, stepNow()-(totpSkew-1))
	for step > stepNow()+(totpSkew-1) {
		next := time.Unix(int64(stepNow()+1)*30, 0)
		time.Sleep(time.Until(next) + 50*time.Millisecond) // waiting for the clock, not for a service
	}
	u.last = step
	return oathCode(t, u.secret, step)
}

// wrongCode returns a 6-digit code that matches no step within ±(skew+1) of now.
func (u *user) wrongCode(t testing.TB) string {
	t.Helper()
	now := stepNow()
	valid := oathCodes(t, u.secret, now-totpSkew-1, 2*totpSkew+2)
	for i := 0; ; i++ {
		n, _ := strconv.Atoi(valid[totpSkew+1])
		c := fmt.Sprintf("%06d", (n+500000+i*7919)%1000000)
		clash := false
		for _, v := range valid {
			clash = clash || v == c
		}
		if !clash {
			return c
		}
	}
}

// ---------------------------------------------------------------------------------------------
// the OpenSSH client

// client runs ssh, scp, sftp and rsync as one user against one SSH port, non-interactively:
// SSH_ASKPASS answers the prompts from files in dir.
type client struct {
	t     testing.TB
	dir   string
	user  *user
	port  int
	bind  string   // source address ("" = 127.0.0.1)
	extra []string // environment additions
}

// result is what a client command did.
type result struct {
	stdout, stderr string
	exit           int
	dur            time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout: %q\nstderr: %q", r.exit, r.dur.Round(time.Millisecond), tailStr(r.stdout, 2000), tailStr(r.stderr, 2000))
}

// newClient prepares a client for u on port; bind is the source address ("" for 127.0.0.1,
// trustedAddr for a trusted source).
func newClient(t testing.TB, u *user, port int, bind string) *client {
	t.Helper()
	dir, err := os.MkdirTemp(base(t).tmp, "c")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte(u.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &client{t: t, dir: dir, user: u, port: port, bind: bind}
}

// setCode sets the answer to "Verification code:"; "" means the test expects no such prompt.
func (c *client) setCode(code string) {
	p := filepath.Join(c.dir, "code")
	if code == "" {
		_ = os.Remove(p)
		return
	}
	if err := os.WriteFile(p, []byte(code+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// setPassword changes the answer to the password prompt.
func (c *client) setPassword(pw string) {
	if err := os.WriteFile(filepath.Join(c.dir, "password"), []byte(pw+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// prompts returns the prompts asked since the last call, and forgets them.
func (c *client) prompts() []string {
	p := filepath.Join(c.dir, "prompts")
	b, _ := os.ReadFile(p)
	_ = os.Remove(p)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// opts are the client options common to ssh, scp, sftp and rsync's ssh. ssh takes the first
// value it sees for an option, so a test's own -o options go before these.
func (c *client) opts() []string {
	o := []string{"-F", "/dev/null",
		"-o", "UserKnownHostsFile=" + filepath.Join(c.dir, "known_hosts"),
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=accept-new",
		"-o", "NumberOfPasswordPrompts=1",
		"-o", "PreferredAuthentications=keyboard-interactive",
		"-o", "BatchMode=no",
		"-o", "ConnectTimeout=20",
		"-o", "ControlMaster=no",
		"-o", "ControlPath=none",
		"-o", "UpdateHostKeys=no",
		"-o", "LogLevel=ERROR",
	}
	if c.bind != "" {
		o = append(o, "-o", "BindAddress="+c.bind)
	}
	return o
}

// target is user@127.0.0.1.
func (c *client) target() string { return c.user.name + "@127.0.0.1" }

func (c *client) env() []string {
	env := cleanEnv("HOME="+c.dir, "SSH_ASKPASS="+h.askpass, "SSH_ASKPASS_REQUIRE=force",
		"GK_ASKPASS_DIR="+c.dir)
	return append(env, c.extra...)
}

// sshArgs is the argument list of `ssh [opts...] [common] user@127.0.0.1 [command...]`.
func (c *client) sshArgs(opts []string, command ...string) []string {
	args := append([]string{"-p", strconv.Itoa(c.port)}, opts...)
	args = append(args, c.opts()...)
	args = append(args, c.target())
	return append(args, command...)
}

// ssh runs `ssh [opts] user@127.0.0.1 command` with no stdin.
func (c *client) ssh(opts []string, command ...string) result {
	return c.run(nil, nil, "ssh", c.sshArgs(opts, command...)...)
}

// sshRSH is rsync's -e: the ssh command with the common options.
func (c *client) sshRSH() string {
	return strings.Join(append([]string{"ssh", "-p", strconv.Itoa(c.port)}, c.opts()...), " ")
}

// run runs a client program; stdout goes to out if given, else into the result.
func (c *client) run(stdin io.Reader, out io.Writer, name string, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.env()
	cmd.Dir = c.dir
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if out != nil {
		cmd.Stdout = out
	}
	// No controlling terminal: the prompts must go to SSH_ASKPASS.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), dur: time.Since(start), exit: -1}
	if cmd.ProcessState != nil {
		r.exit = cmd.ProcessState.ExitCode()
	}
	// Errorf, not Fatalf: run is also called from goroutines (concurrent logins).
	if ctx.Err() != nil {
		c.t.Errorf("%s timed out after %v: %v\n%s", name, cmdTimeout, err, r)
		r.exit = -1
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		c.t.Errorf("%s: %v", name, err)
	}
	return r
}

// background starts a long-running client program (forwarding); it is killed when the test
// ends. Its stderr is available through the returned reader.
func (c *client) background(name string, args ...string) (*exec.Cmd, io.Reader, <-chan struct{}) {
	c.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = c.env()
	cmd.Dir = c.dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.Copy(pw, stderr)
		_ = cmd.Wait()
		pw.Close()
		close(done)
	}()
	c.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		go func() { _, _ = io.Copy(io.Discard, pr) }()
		<-done
	})
	return cmd, pr, done
}

// ---------------------------------------------------------------------------------------------
// assertions

// mustLogIn asserts that `ssh ... echo ok` gets in.
func mustLogIn(t testing.TB, c *client, what string) {
	t.Helper()
	r := c.ssh(nil, "echo", "ok")
	if r.exit != 0 || r.stdout != "ok\n" {
		t.Fatalf("%s: login failed: %s", what, r)
	}
}

// mustBeDenied asserts that a login fails the way a user sees every failure.
func mustBeDenied(t testing.TB, c *client, what string) result {
	t.Helper()
	r := c.ssh(nil, "echo", "ok")
	if r.exit != 255 || strings.Contains(r.stdout, "ok") {
		t.Fatalf("%s: expected the login to be refused, got %s", what, r)
	}
	if !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("%s: refused, but ssh did not say \"Permission denied\": %s", what, r)
	}
	return r
}

// ---------------------------------------------------------------------------------------------
// small helpers

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
//
// It is picked below the kernel's ephemeral range (32768 and up by default): a port from that
// range, as listening on port 0 gives, can be taken as the local end of one of the many outgoing
// connections the tests make before the daemon binds it. A port is never returned twice in a
// test run, so that two listeners of one config never get the same one.
func freePort() int {
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		port := 10000 + mathrand.IntN(22000)
		if portsGiven[port] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // in use
		}
		ln.Close()
		portsGiven[port] = true
		return port
	}
}

// portsGiven are the ports freePort returned; portsMu protects it.
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// waitBanner polls until an SSH server on addr sends its "SSH-2.0" banner, the process exits, or
// the timeout passes.
func waitBanner(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("process exited before serving %s", addr)
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 0, 256)
			tmp := make([]byte, 256)
			for !bytes.Contains(buf, []byte("\n")) && len(buf) < 255 {
				n, rerr := conn.Read(tmp)
				buf = append(buf, tmp[:n]...)
				if rerr != nil {
					break
				}
			}
			conn.Close()
			if bytes.HasPrefix(buf, []byte("SSH-2.0-")) {
				return nil
			}
			last = fmt.Errorf("no SSH-2.0 banner from %s (got %q)", addr, buf)
		} else {
			last = err
		}
		time.Sleep(25 * time.Millisecond) // poll interval
	}
	return fmt.Errorf("no SSH banner on %s within %v: %v", addr, timeout, last)
}

// waitPort polls until something accepts TCP connections on addr.
func waitPort(t testing.TB, addr string, done <-chan struct{}, stderr func() string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("client exited before %s was listening: %s", addr, stderr())
		default:
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %s after %v", addr, startTimeout)
}

// cleanEnv is a minimal environment: no GATEKEEPER_* or SSH_* leaking in from the caller.
func cleanEnv(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8", "TERM=xterm"}
	if r := os.Getenv("GORACE"); r != "" {
		env = append(env, "GORACE="+r)
	}
	return append(env, extra...)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.SplitAfter(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// snippet returns up to n bytes of b starting a little before i.
func snippet(b []byte, i, n int) string {
	start := max(0, i-200)
	return string(b[start:min(len(b), start+n)])
}
