// Command gatekeeper is the SSH two-factor gate of an HPC lander node. This
// file only wires cobra commands to the packages that do the work; signals
// are handled here and nowhere else.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/crypto/ssh"

	"gatekeeper/admin"
	"gatekeeper/config"
	"gatekeeper/enroll"
	"gatekeeper/enroll/portal"
	"gatekeeper/enroll/sshlink"
	"gatekeeper/gatekeeper"
	"gatekeeper/gatekeeper/metrics"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/etcd"
)

// Set by the Makefile with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

// shutdownGrace is how long SIGTERM lets live sessions finish.
const shutdownGrace = 30 * time.Second

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "gatekeeper:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "gatekeeper",
		Short:         "SSH two-factor gate in front of an HPC lander's sshd",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "config file (default $GATEKEEPER_CONFIG or /etc/gatekeeper/gatekeeper.yaml)")
	root.AddCommand(newServeCmd(), newConfigCmd(), newEnrollCmd(), newVersionCmd())
	root.AddCommand(newAdminCmd())
	return root
}

// loadConfig reads the config named by --config, with flags from fs
// overriding it where they were set.
func loadConfig(cmd *cobra.Command, fs *pflag.FlagSet) (*config.Config, error) {
	file, _ := cmd.Flags().GetString("config")
	return config.Load(file, fs)
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

func newServeCmd() *cobra.Command {
	var cpuProfile string
	var pprofOn bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon (SSH front door, linking portal and SSH linking, admin socket, metrics)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, cmd.Flags())
			if err != nil {
				return err
			}
			reload := func() (*config.Config, error) { return loadConfig(cmd, cmd.Flags()) }
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			return serve(cmd.Context(), cfg, newLogger(cfg.LogFormat, os.Stderr), reload, pprofOn)
		},
	}
	config.RegisterFlags(cmd.Flags())
	// Hidden: for `make bench` (bench/profile.sh), not for production.
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile to `FILE` until shutdown")
	_ = cmd.Flags().MarkHidden("cpuprofile")
	cmd.Flags().BoolVar(&pprofOn, "pprof", false, "serve /debug/pprof/ on metrics_listen")
	_ = cmd.Flags().MarkHidden("pprof")
	return cmd
}

// startCPUProfile writes a pprof CPU profile to file until stop is called.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// serve runs the daemon until SIGINT or SIGTERM, then shuts down in order:
// the SSH front door first (stop accepting, let sessions finish up to
// shutdownGrace), then SSH linking, the linking portal, the metrics listener
// and the admin socket, the store last. SIGHUP re-reads the config with reload and
// applies its policy settings to new logins.
//
// With pprofOn (the hidden flag --pprof, for bench/idle.sh and profiling),
// metrics_listen also serves net/http/pprof's /debug/pprof/.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, reload func() (*config.Config, error), pprofOn bool) error {
	// Signals are caught from the start and until serve has returned: deferred
	// first, signal.Stop runs last, so a second SIGTERM during the ordered
	// shutdown below cannot kill the process half-way. One that arrives
	// during start-up waits in the channel.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	for _, w := range cfg.Warnings() {
		log.Warn("config: " + w)
	}
	// The lander's host key before anything is created: a config serve cannot run with
	// leaves no database or key file behind.
	if err := gatekeeper.CheckKnownHosts(cfg); err != nil {
		return err
	}
	raw, err := openStore(cfg, log, false)
	if err != nil {
		return err
	}
	defer raw.Close()
	warnUppercaseNames(cfg, raw, log)

	reg := metrics.NewRegistry()
	gm := metrics.NewGatekeeper(reg)
	gm.SetStoreUp(true) // it just answered Open
	// Everything but the wiring below sees the store through the metrics; the wiring asks the
	// backend itself what more it offers (a shared store).
	st := store.Store(instrumented{raw, gm})
	opts := gatekeeper.Options{
		Store:    st,
		Log:      log,
		Recovery: enroll.VerifyRecovery,
		Metrics:  gm,
	}
	if kv, ok := raw.(gatekeeper.SharedKV); ok {
		// Several nodes: lockouts and guess budgets are the cluster's.
		opts.Limits = func(func(gatekeeper.LockKey, *gatekeeper.LimitEntry, int) bool) gatekeeper.LimitStore {
			return gatekeeper.NewSharedLimits(kv)
		}
		if p, ok := raw.(store.Pruner); ok {
			opts.SweepHere = p.Leader // the node that prunes the audit log also sweeps
		}
	}
	if sessions := sessionRegistry(raw, log); sessions != nil {
		// Several nodes: admin sessions, kill and reset reach every node's sessions. Closed
		// (deferred) after the front door's Shutdown has ended this node's sessions and
		// before the store: its lease goes, and with it whatever this node left listed.
		defer sessions.Close()
		opts.Sessions = sessions
	}
	// Host keys and the lander CA are created on the first start: the service's own, as the
	// database (adoptNew).
	var gk *gatekeeper.Server
	generated := slices.Clone(cfg.HostKeyFiles)
	if cfg.Keys.Enabled {
		generated = append(generated, cfg.Keys.LanderCAFile, cfg.Keys.LanderCAFile+".pub")
	}
	err = adoptNew(generated, func() (err error) {
		gk, err = gatekeeper.New(cfg, opts)
		return err
	})
	if err != nil {
		if gk != nil {
			gk.Close()
		}
		return err
	}
	// Stops the front door's background work on the error paths below; at
	// the end it runs once the doors that sign users in through it are down.
	defer gk.Close()
	if c, ok := raw.(hostKeyClaimer); ok {
		if err := c.ClaimHostKeys(hostKeysOf(gk.HostKeys()), log); err != nil {
			return err
		}
	}
	linker := &enroll.Service{
		Store: st, Issuer: cfg.TOTP.Issuer, Skew: cfg.TOTP.Skew,
		ConfirmWithin: cfg.Enroll.ConfirmWithin, Log: log,
		KeyPolicy: enroll.KeyPolicy{AutomationMaxLifetime: cfg.Keys.AutomationMaxLifetime},
		// A revoked key's sessions end at once, on every node.
		EndKeySessions: gk.KillKey,
	}

	var policy livePolicy
	policy.cfg.Store(cfg)

	// Every listener is opened before anything is served, so that a port in
	// use fails the start instead of leaving a half-working daemon.
	var lns listeners
	defer lns.closeAll()
	sshLn, err := lns.listen("listen", cfg.Listen)
	if err != nil {
		return err
	}
	adminLn, err := admin.Listen(cfg.Admin.Socket)
	if err != nil {
		return fmt.Errorf("admin.socket: %w", err)
	}
	lns = append(lns, adminLn)
	portalLn, err := lns.listen("enroll.portal_listen", cfg.Enroll.PortalListen)
	if err != nil {
		return err
	}
	metricsLn, err := lns.listen("metrics_listen", cfg.MetricsListen)
	if err != nil {
		return err
	}
	linkLn, err := lns.listen("enroll.ssh_listen", cfg.Enroll.SSHListen)
	if err != nil {
		return err
	}

	prt := &portal.Server{
		Auth:          gk, // both factors once a device is linked
		Linker:        linker,
		Credentials:   linker,      // replace the phone, new recovery codes
		EndSSH:        gk.KillUser, // "also end my open SSH sessions"
		SecurityLog:   linker,
		Tickets:       linker,
		Allowed:       policy.enrollAllowed,
		Issuer:        cfg.TOTP.Issuer,
		ConfirmWithin: cfg.Enroll.ConfirmWithin,
		Log:           log,
		Secure:        cfg.Enroll.TLSCert != "",
		KeysEnabled:   cfg.Keys.Enabled,
	}
	sshLink := &sshlink.Server{
		Signers:        gatekeeper.HandshakeKeys(gk.HostKeys()),
		Auth:           gk,
		Linker:         linker,
		Tickets:        linker,
		Allowed:        policy.enrollAllowed,
		Log:            log,
		LoginGraceTime: cfg.LoginGraceTime,
		KeysEnabled:    cfg.Keys.Enabled,
		// Its own counters, with the front door's limits.
		Preauth:          gatekeeper.AdmissionLimits(cfg),
		HandshakeTimeout: cfg.Preauth.HandshakeTimeout,
		// A phone replaced over SSH signs the user out of the portal, and out of their SSH
		// sessions if they ask for it.
		EndSessions: func(user string, ssh bool) int {
			n := prt.EndUser(user)
			if ssh {
				n += gk.KillUser(user)
			}
			return n
		},
	}
	// A reset (or a phone replaced) on another node ends the user's portal and SSH-linking
	// sessions here too, as it does there.
	gk.EndUserAlso(prt.EndUser, sshLink.EndUser)
	adm := &admin.Server{
		Enroll: linker,
		Store:  st,
		Log:    log,
		Groups: cfg.Admin.Groups,
		// Named in the header of a backup.
		Backend: cmp.Or(cfg.Store.Backend, "bolt"),
		Node:    cfg.NodeName,
		// A reset ends the user's proxied SSH sessions, portal sessions and SSH-linking
		// sessions: a lost phone stops working at once, and a link begun before the reset
		// cannot be finished after it.
		OnReset: endUserEverywhere(gk.KillUser, prt.EndUser, sshLink.EndUser),
		OnUnlock: func(u string) ([]admin.LockInfo, error) {
			locks, err := gk.Unlock(u)
			return lockInfos(locks), err
		},
		OnUnlockAddress: func(a netip.Addr) ([]admin.LockInfo, error) {
			locks, err := gk.UnlockAddress(a)
			return lockInfos(locks), err
		},
		Locks:    func(u string) []admin.LockInfo { return lockInfos(gk.Locks(u)) },
		Sessions: func(ctx context.Context) (any, error) { return gk.ClusterSessions(ctx) },
		Kill:     killSession(gk),
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", reg.Handler())
	// stopping is set when shutdown begins: /healthz then says so, and a load balancer that
	// polls it sends new users to the other nodes while this one drains.
	var stopping atomic.Bool
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if stopping.Load() {
			http.Error(w, "unhealthy: shutting down", http.StatusServiceUnavailable)
			return
		}
		// The store is read on every request; the lander's answer is
		// reused for 5 s, so frequent polling does not add up to
		// per-source penalties at the lander's sshd (upstream.go, probeTTL).
		if err := gk.Health(r.Context()); err != nil {
			// The detail (addresses, paths) goes to the log, not to the client.
			log.Warn("health check failed", "err", err)
			what := "database"
			if errors.Is(err, gatekeeper.ErrLanderUnavailable) {
				what = "lander not answering"
			}
			http.Error(w, "unhealthy: "+what, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if pprofOn {
		mux.HandleFunc("GET /debug/pprof/", httppprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", httppprof.Profile)
	}
	metricsSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 5)
	go func() { errc <- gk.Serve(sshLn) }()
	go func() { errc <- adm.Serve(adminLn) }()
	if portalLn != nil {
		go func() {
			if cfg.Enroll.TLSCert != "" {
				errc <- prt.ServeTLS(portalLn, cfg.Enroll.TLSCert, cfg.Enroll.TLSKey)
			} else {
				errc <- prt.Serve(portalLn)
			}
		}()
	}
	if metricsLn != nil {
		go func() { errc <- metricsSrv.Serve(metricsLn) }()
	}
	if linkLn != nil {
		go func() { errc <- sshLink.Serve(linkLn) }()
	}
	log.Info("gatekeeper started", "version", version, "node", cfg.NodeName, "store", cfg.Store.Backend, "listen", sshLn.Addr().String(),
		"upstream", cfg.Upstream.Address, "admin_socket", cfg.Admin.Socket,
		"portal", addrOf(portalLn), "link_ssh", addrOf(linkLn), "metrics", addrOf(metricsLn))

	stopPruning := pruneAudit(raw, cfg.Audit.Retention, log)
	defer stopPruning()

	var runErr error
wait:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reloadConfig(gk, linker, sshLink, &policy, reload, log)
				continue
			}
			log.Info("shutting down", "signal", sig.String(), "grace", shutdownGrace.String())
		case runErr = <-errc:
			log.Error("listener failed; shutting down", "err", runErr)
		case <-ctx.Done():
		}
		break wait
	}

	// Ordered shutdown: the three doors users come in by stop accepting at once and drain
	// together within the grace; the front door's background work and audit log outlive them
	// (the portal and SSH linking sign users in through it), then metrics and the admin
	// socket, which answer until the end; the store closes last (deferred).
	stopping.Store(true)
	drain, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	var doors sync.WaitGroup
	for _, d := range []struct {
		what     string
		shutdown func(context.Context) error
	}{
		{"sessions still open at the end of the grace period were closed", gk.Shutdown},
		{"ssh linking shutdown", sshLink.Shutdown},
		{"portal shutdown", prt.Shutdown},
	} {
		doors.Go(func() {
			if err := d.shutdown(drain); err != nil {
				log.Warn(d.what, "err", err)
			}
		})
	}
	doors.Wait()
	gk.Close()
	// Metrics and the admin socket get a moment of their own: the grace may be spent.
	last, cancelLast := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelLast()
	if err := metricsSrv.Shutdown(last); err != nil {
		log.Warn("metrics shutdown", "err", err)
	}
	if err := adm.Shutdown(last); err != nil {
		log.Warn("admin socket shutdown", "err", err)
	}
	log.Info("gatekeeper stopped")
	if errors.Is(runErr, gatekeeper.ErrServerClosed) || errors.Is(runErr, http.ErrServerClosed) || errors.Is(runErr, sshlink.ErrServerClosed) {
		runErr = nil
	}
	return runErr
}

// killSession is the admin socket's Kill on the front door, its errors matched to the admin
// API's.
func killSession(gk *gatekeeper.Server) func(ctx context.Context, node string, id uint64) (admin.KillResult, error) {
	return func(ctx context.Context, node string, id uint64) (admin.KillResult, error) {
		s, ended, err := gk.KillSession(ctx, node, id)
		switch {
		case errors.Is(err, gatekeeper.ErrNoSession):
			return admin.KillResult{}, apiError{err, admin.ErrNoSuchSession}
		case errors.Is(err, gatekeeper.ErrAmbiguousSession):
			return admin.KillResult{}, apiError{err, admin.ErrAmbiguousSession}
		case err != nil:
			return admin.KillResult{}, err
		}
		return admin.KillResult{Node: s.Node, ID: s.ID, User: s.User, Remote: s.Remote, Ended: ended}, nil
	}
}

// apiError is err, with its message, matching the admin API's sentinel too.
type apiError struct{ err, sentinel error }

func (e apiError) Error() string   { return e.err.Error() }
func (e apiError) Unwrap() []error { return []error{e.err, e.sentinel} }

// endUserEverywhere returns a function that ends user's live sessions with each of enders and
// returns how many were ended in all.
func endUserEverywhere(enders ...func(user string) int) func(user string) int {
	return func(user string) int {
		n := 0
		for _, end := range enders {
			n += end(user)
		}
		return n
	}
}

// pruneAudit deletes audit events older than retention now and then hourly,
// until the returned func is called (it waits for a prune in progress).
// Zero retention keeps events forever.
func pruneAudit(st store.Store, retention time.Duration, log *slog.Logger) (stop func()) {
	if retention <= 0 {
		return func() {}
	}
	prune := func() {
		if p, ok := st.(store.Pruner); ok && !p.Leader() {
			return // another node of the cluster prunes
		}
		n, err := st.PruneEvents(time.Now().Add(-retention))
		if err != nil {
			log.Error("pruning the audit log failed", "err", err)
		} else if n > 0 {
			log.Info("pruned old audit events", "events", n, "retention", retention.String())
		}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		prune()
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				prune()
			}
		}
	}()
	return func() { close(done); <-finished }
}

// livePolicy holds the config whose enroll.allowed_networks the linking portal and SSH listener
// apply; SIGHUP replaces it.
type livePolicy struct {
	cfg atomic.Pointer[config.Config]
}

func (p *livePolicy) enrollAllowed(a netip.Addr) bool { return p.cfg.Load().IsEnrollAllowed(a) }

// lockInfos are the front door's locks as the admin API reports them.
func lockInfos(locks []gatekeeper.Lock) []admin.LockInfo {
	out := make([]admin.LockInfo, len(locks))
	for i, l := range locks {
		out[i] = admin.LockInfo{Scope: string(l.Key.Scope), Name: l.Key.Name, Until: l.Until, Level: l.Level, Failures: l.Failures, Refused: l.Refused}
	}
	return out
}

// listeners collects the daemon's listeners so that a failed start closes
// the ones already open.
type listeners []net.Listener

// listen opens addr for key; an empty addr means the listener is disabled
// and returns a nil listener.
func (l *listeners) listen(key, addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	*l = append(*l, ln)
	return ln, nil
}

func (l listeners) closeAll() {
	for _, ln := range l {
		ln.Close()
	}
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return "off"
	}
	return ln.Addr().String()
}

// reloadConfig applies a re-read config; a broken one is logged and the old
// settings stay in force, as sshd does on SIGHUP with a bad config.
func reloadConfig(gk *gatekeeper.Server, linker *enroll.Service, link *sshlink.Server, policy *livePolicy, reload func() (*config.Config, error), log *slog.Logger) {
	cfg, err := reload()
	if err != nil {
		log.Error("config reload failed; keeping the current settings", "err", err)
		return
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config: " + w)
	}
	needRestart := gk.Reload(cfg)
	linker.SetSkew(cfg.TOTP.Skew)
	// The linking listener has its own counters, with the front door's limits.
	link.SetLimits(gatekeeper.AdmissionLimits(cfg), cfg.Preauth.HandshakeTimeout, cfg.LoginGraceTime)
	policy.cfg.Store(cfg)
	log.Info("config reloaded", "applied", "trusted_networks, rate_limit, totp.skew, failure_delay, login_grace_time, "+
		"max_auth_tries, allow_uppercase_usernames, max_startups, preauth, max_channels, session, enroll.allowed_networks")
	if len(needRestart) > 0 {
		log.Warn("changed settings that take effect only after a restart", "keys", needRestart)
	}
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with the config file"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Validate the config and print the effective settings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, nil)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), cfg.Effective())
			for _, w := range cfg.Warnings() {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			// An error, as a missing known_hosts is: serve would refuse to start with this
			// config, and the admin should learn it here, not from a unit that fails.
			if err := gatekeeper.CheckKnownHosts(cfg); err != nil {
				return fmt.Errorf("%w: serve refuses to start without the lander's host key", err)
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "config OK")
			return nil
		},
	})
	return cmd
}

func newEnrollCmd() *cobra.Command {
	var replace bool
	cmd := &cobra.Command{
		Use:   "enroll [--replace] USER",
		Short: "Link USER's authenticator app on this console (QR code, then one code)",
		Long: "Link USER's authenticator app on this console: the new secret is shown once (QR code, otpauth URI, text),\n" +
			"then a code from the app, read from standard input, confirms it and the recovery codes are printed.\n" +
			"A user whose device is linked already is refused; --replace links a new phone in its place\n" +
			"(the old one keeps working until a code from the new one is confirmed; its recovery codes are replaced).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, nil)
			if err != nil {
				return err
			}
			if err := doorsTake(cfg, args[0]); err != nil {
				return err
			}
			linker, closeFn, err := openLinker(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer closeFn()
			user := args[0]
			// Over the admin socket the daemon names the console door itself; this is for the
			// database opened directly.
			ctx := enroll.WithDoor(cmd.Context(), store.DoorConsole)
			if replace {
				return enroll.TerminalReplace(ctx, linker, user, cmd.InOrStdin(), cmd.OutOrStdout())
			}
			err = enroll.Terminal(ctx, linker, user, cmd.InOrStdin(), cmd.OutOrStdout())
			if errors.Is(err, enroll.ErrAlreadyLinked) {
				return fmt.Errorf("%w (to link a new phone in its place: gatekeeper enroll --replace %s)", err, user)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&replace, "replace", false,
		"replace USER's linked device with a new one (the old one works until the new one is confirmed)")
	return cmd
}

// doorsTake refuses to link a device to (or issue a ticket for) a name that the doors refuse,
// one with capitals while allow_uppercase_usernames is off: its user could never log in with it.
func doorsTake(cfg *config.Config, user string) error {
	if cfg.RefusesCapitals(user) {
		return fmt.Errorf("user name %q has capitals, which the front door and the linking doors refuse "+
			"(allow_uppercase_usernames is off): did you mean %q?", user, strings.ToLower(user))
	}
	return nil
}

// consoleLinker is what gatekeeper enroll needs: a first link or a replacement, from the daemon
// (*admin.Client) or the database (*enroll.Service).
type consoleLinker interface {
	enroll.Linker
	enroll.Replacer
}

// openLinker talks to the running daemon over its admin socket and, only when
// no daemon runs, opens the database directly (bbolt allows one process).
func openLinker(ctx context.Context, cfg *config.Config) (consoleLinker, func(), error) {
	client := admin.NewClient(cfg.Admin.Socket)
	err := client.Ping(ctx)
	if err == nil {
		return client, func() {}, nil
	}
	if !errors.Is(err, admin.ErrNoDaemon) {
		return nil, nil, err
	}
	st, err := openStore(cfg, slog.New(slog.DiscardHandler), false)
	if err != nil {
		return nil, nil, err
	}
	svc := &enroll.Service{
		Store: st, Issuer: cfg.TOTP.Issuer, Skew: cfg.TOTP.Skew,
		ConfirmWithin: cfg.Enroll.ConfirmWithin, Log: newLogger(cfg.LogFormat, io.Discard),
		KeyPolicy: enroll.KeyPolicy{AutomationMaxLifetime: cfg.Keys.AutomationMaxLifetime},
	}
	return svc, func() { st.Close() }, nil
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version and build information",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			c := commit
			if c == "" {
				if bi, ok := debug.ReadBuildInfo(); ok {
					for _, s := range bi.Settings {
						if s.Key == "vcs.revision" {
							c = s.Value
						}
					}
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "gatekeeper %s (commit %s, %s, %s/%s)\n",
				version, orUnknown(c), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// hostKeyClaimer is a store shared by several nodes, whose SSH host keys
// must go together (see etcd.Store.ClaimHostKeys).
type hostKeyClaimer interface {
	ClaimHostKeys(mine etcd.HostKeys, log *slog.Logger) error
}

// hostKeysOf names keys, the gatekeeper's host keys, by their SHA-256
// fingerprints: the one of each type its key exchanges use, and all it
// announces (sorted, each once).
func hostKeysOf(keys []ssh.Signer) etcd.HostKeys {
	h := etcd.HostKeys{Handshake: map[string]string{}}
	for _, k := range gatekeeper.HandshakeKeys(keys) {
		h.Handshake[k.PublicKey().Type()] = ssh.FingerprintSHA256(k.PublicKey())
	}
	for _, k := range keys {
		h.Announced = append(h.Announced, ssh.FingerprintSHA256(k.PublicKey()))
	}
	slices.Sort(h.Announced)
	h.Announced = slices.Compact(h.Announced)
	return h
}
