// Package gatekeeper is the SSH front door of an HPC lander: it asks for a
// password and a one-use TOTP code (skipped for trusted networks), checks the
// password by logging in to the lander's own sshd, and then relays the whole
// SSH connection to it.
//
// A connection goes through three stages, each owned by one goroutine:
// Serve's accept loop (package connserve, which also tracks the connections
// for Shutdown and Close) hands the net.Conn to handleConn, which runs the SSH
// handshake and authentication (auth.go) under the login grace deadline and a
// cap on unauthenticated connections, and then runs relay.Relay until either
// side hangs up. Three goroutines per Server run beside them, all started by
// New and ended by Shutdown or Close: the auditor, which writes audit events
// in batches, reportLoop, which adds live sessions' bytes to the metrics, and
// killLoop, which ends the sessions other nodes of a cluster ask this one to
// end (sessions.go: the SessionRegistry every node lists its sessions in).
package gatekeeper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/config"
	"gatekeeper/gatekeeper/connserve"
	"gatekeeper/gatekeeper/metrics"
	"gatekeeper/gatekeeper/proxyproto"
	"gatekeeper/gatekeeper/relay"
	"gatekeeper/gatekeeper/sockio"
	"gatekeeper/gatekeeper/store"
)

// sshSetupBytes covers an SSH connection's handshake, authentication and
// first channel requests: the part where the Nagle delays of the OpenSSH
// client, and of sshd on the lander leg, meet the kernel's delayed ACKs
// (see connserve.Server.QuickAck and connserve.WithQuickAck).
const sshSetupBytes = 256 << 10

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("gatekeeper: server closed")

// Store is the part of the user store the front door needs.
type Store interface {
	Get(name string) (store.User, error)
	Update(name string, fn func(u *store.User) error) error
	Append(events ...store.Event) error
}

// Options are a Server's dependencies.
type Options struct {
	// Store holds users' secrets and last used time steps. Required.
	Store Store
	// Limits, when set, makes the LimitStore that keeps the lockout counters (given the
	// in-memory store's eviction rule, which a shared store may ignore); nil keeps them in
	// memory (one node). Several nodes share one, so lockouts hold for the whole cluster.
	Limits func(evictable func(k LockKey, e *LimitEntry, pass int) bool) LimitStore
	// SweepHere, when set, says whether this node looks for ended lockouts in the LimitStore
	// (with a shared one: the node elected to); nil: always.
	SweepHere func() bool
	// Log receives one structured line per auth decision and session.
	// Defaults to slog.Default().
	Log *slog.Logger
	// Now is the clock of the rules kept in time (TOTP steps, rate limits and
	// lockouts, key expiry and remembered networks), which tests move.
	// Durations measured as they pass (session start and idle time, refusal
	// padding, the lander's answer time) use the real clock on purpose.
	// Defaults to time.Now.
	Now func() time.Time
	// Recovery checks answer against u's unused recovery codes and, on a
	// match, removes that code from u. Nil: recovery codes are not accepted.
	Recovery func(u *store.User, answer string) bool
	// Metrics counts logins, sessions and bytes. Nil: not exported.
	Metrics *metrics.Gatekeeper
	// Sessions shares the live sessions with the other nodes of a cluster
	// (see SessionRegistry). Nil: this node runs alone.
	Sessions SessionRegistry
}

// Server is the SSH front door. Create it with New, run it with Serve, stop
// it with Shutdown or Close — the same shape as net/http.Server.
type Server struct {
	// cfg is swapped whole by Reload; read it through config().
	cfg      atomic.Pointer[config.Config]
	store    Store
	log      *slog.Logger
	now      func() time.Time
	lander   *lander
	signers  []ssh.Signer
	limiter  *limiter
	recovery func(u *store.User, answer string) bool
	metrics  *metrics.Gatekeeper
	audit    *auditor
	// hashSlots bounds the recovery-code hashes (argon2id, 19 MiB each)
	// computed at once.
	hashSlots chan struct{}
	// proxyWarned is when a PROXY header the gatekeeper was not told to
	// read was last logged at Warn (UnixNano; see warnUnreadProxyHeader).
	proxyWarned atomic.Int64
	// landerDelay learns how long the lander takes to refuse a password.
	landerDelay delayTracker

	// reportStop ends reportLoop, which closes reportDone when it returns.
	reportStop, reportDone chan struct{}
	reportOnce             sync.Once

	// admission caps the connections that have not authenticated yet.
	admission *connserve.Admission
	// windows bounds the memory of enlarged channel windows (relay.window,
	// relay.window_total) over all sessions.
	windows *relay.WindowBudget
	// landerCA signs the certificates of key logins at the lander; nil
	// unless keys.enabled. keyAlgos are the signature algorithms key logins
	// may use (see serverConfig), shared read-only by every connection.
	landerCA ssh.Signer
	keyAlgos []string

	// accept runs the accept loop and tracks the connections for Shutdown
	// and Close.
	accept connserve.Server

	// node names this gatekeeper (node_name); registry shares its sessions
	// with the other nodes. killLoop closes killDone when it returns.
	node     string
	registry SessionRegistry
	killDone chan struct{}

	// mu protects the following.
	mu       sync.Mutex
	sessions map[uint64]*Session
	nextID   uint64
	// resets counts each user's token resets (KillUser), so that a login
	// that was being decided while a reset ran is not let in afterwards.
	resets map[string]uint64
	// keyRevokes counts each user's key revocations (KillKey), the same
	// way for key logins: a login with any key of the user that was being
	// decided while one of them was revoked is not let in (a few logins too
	// many refused once, rather than a map entry per key ever revoked).
	keyRevokes map[string]uint64
	// endAlso are the daemon's other enders of a user's sessions, run on
	// another node's request (see EndUserAlso).
	endAlso []func(user string) int
}

// storeWriteFailed counts a failed write to the store, by whether the disk
// was full, and says loudly when it was: logins that need a code are refused
// until there is room (their used time step must be recorded), while logins
// from the trusted networks go on.
func (s *Server) storeWriteFailed(err error) {
	if errors.Is(err, store.ErrNoSpace) {
		s.metrics.StoreWriteErrors.With("no_space").Inc()
		s.log.Error("database disk full: logins that need a code are refused until there is free space; trusted logins go on",
			"err", err)
		return
	}
	s.metrics.StoreWriteErrors.With("other").Inc()
}

// AdmissionLimits are the pre-authentication limits of cfg (max_startups
// and preauth), with defaults for zero values; SSH linking uses them too.
func AdmissionLimits(cfg *config.Config) connserve.Limits {
	return connserve.Limits{
		PerAddress:     cfg.Preauth.PerAddress,
		PerNetwork:     cfg.Preauth.PerNetwork,
		Max:            cfg.MaxStartups,
		DropStart:      cfg.Preauth.DropStart,
		TrustedReserve: cfg.Preauth.TrustedReserve,
	}.Or(connserve.Limits{PerAddress: 10, PerNetwork: 32, Max: 100})
}

// maxHashSlots is how many recovery-code hashes run at once.
const maxHashSlots = 4

// policyOf is the limiter's policy from the config.
func policyOf(rl config.RateLimit) RateLimit {
	return RateLimit{
		Failures:        rl.Failures,
		Window:          rl.Window,
		Lockout:         rl.Lockout,
		MaxLockout:      rl.MaxLockout,
		NetworkFailures: rl.NetworkFailures,
		TrustedFailures: rl.TrustedFailures,
	}
}

// New checks cfg's upstream settings and loads (or creates) the host keys.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("gatekeeper: no store")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	signers, err := LoadHostKeys(cfg.HostKeyFiles)
	if err != nil {
		return nil, err
	}
	used := map[string][]byte{} // key type → the key its exchanges use, in wire form
	for _, k := range HandshakeKeys(signers) {
		used[k.PublicKey().Type()] = k.PublicKey().Marshal()
	}
	for i, k := range signers {
		if !bytes.Equal(used[k.PublicKey().Type()], k.PublicKey().Marshal()) {
			opts.Log.Info("host key announced to clients, not used in key exchanges: an earlier key of its type is "+
				"(gatekeepers before key announcements used the last of each type)",
				"file", cfg.HostKeyFiles[i], "type", k.PublicKey().Type())
		}
	}
	l, err := newLander(cfg.Upstream.Address, cfg.Upstream.KnownHosts)
	if err != nil {
		return nil, err
	}
	var landerCA ssh.Signer
	if cfg.Keys.Enabled {
		if landerCA, err = LoadLanderCA(cfg.Keys.LanderCAFile); err != nil {
			return nil, err
		}
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewGatekeeper(metrics.NewRegistry())
	}
	// Every reason and scope exported at 0 from the first scrape: an alert on
	// a rate needs the series before its first increment.
	for _, r := range []string{connserve.RefusedPerAddress, connserve.RefusedPerNetwork, connserve.RefusedFull, connserve.RefusedEarlyDrop} {
		opts.Metrics.PreauthRefused.With(r)
	}
	for _, sc := range []Scope{ScopeUser, ScopeAddress, ScopeNetwork, ScopeTrustedUser, ScopeTrustedAddress, ScopeTrustedCode} {
		opts.Metrics.Lockouts.With(string(sc))
	}
	if opts.Sessions == nil {
		opts.Sessions = oneNode{}
	}
	s := &Server{
		store:      opts.Store,
		log:        opts.Log,
		now:        opts.Now,
		lander:     l,
		signers:    signers,
		limiter:    newLimiter(policyOf(cfg.RateLimit), opts.Now),
		recovery:   opts.Recovery,
		metrics:    opts.Metrics,
		hashSlots:  make(chan struct{}, maxHashSlots),
		admission:  connserve.NewAdmission(AdmissionLimits(cfg)),
		windows:    relay.NewWindowBudget(cfg.Relay.WindowTotalBytes),
		sessions:   map[uint64]*Session{},
		resets:     map[string]uint64{},
		keyRevokes: map[string]uint64{},
		landerCA:   landerCA,
		keyAlgos:   ssh.SupportedAlgorithms().PublicKeyAuths,
		node:       cfg.NodeName,
		registry:   opts.Sessions,
		killDone:   make(chan struct{}),
	}
	if opts.Limits != nil {
		s.limiter.st = opts.Limits(s.limiter.evictable)
	}
	if opts.SweepHere != nil {
		s.limiter.sweepHere = opts.SweepHere
	}
	s.limiter.onError = func(op string, err error) {
		s.log.Error("lockout counters could not be read or written; logins that need a code are refused until the store answers",
			"op", op, "err", err)
	}
	s.audit = newAuditor(opts.Store, opts.Log, s.storeWriteFailed)
	s.accept.Handle = s.handleConn
	s.accept.Log = opts.Log
	s.accept.QuickAck = sshSetupBytes
	s.cfg.Store(cfg)
	s.reportStop, s.reportDone = make(chan struct{}), make(chan struct{})
	go s.reportLoop()
	go s.killLoop(s.registry.Kills())
	return s, nil
}

// HostKeys returns the host keys the front door presents, loaded (or
// created) by New, for other SSH listeners of the daemon to present too.
func (s *Server) HostKeys() []ssh.Signer { return s.signers }

// config returns the settings in force now.
func (s *Server) config() *config.Config { return s.cfg.Load() }

// Reload applies the policy settings of cfg — trusted_networks, rate_limit,
// totp.skew, failure_delay, login_grace_time, max_auth_tries,
// allow_uppercase_usernames, max_startups,
// preauth, max_channels, session — to new logins
// without touching live sessions. Settings that need a restart (listeners,
// keys, upstream, database) keep their old values; Reload returns their
// names so the caller can say so.
func (s *Server) Reload(cfg *config.Config) (needRestart []string) {
	old := s.config()
	merged := *old
	merged.TrustedNetworks, merged.Trusted = cfg.TrustedNetworks, cfg.Trusted
	merged.RateLimit = cfg.RateLimit
	merged.TOTP.Skew = cfg.TOTP.Skew
	merged.FailureDelay = cfg.FailureDelay
	merged.LoginGraceTime = cfg.LoginGraceTime
	merged.MaxAuthTries = cfg.MaxAuthTries
	merged.AllowUppercaseUsernames = cfg.AllowUppercaseUsernames
	merged.Session = cfg.Session
	merged.MaxStartups, merged.Preauth, merged.MaxChannels = cfg.MaxStartups, cfg.Preauth, cfg.MaxChannels
	s.limiter.setPolicy(policyOf(cfg.RateLimit))
	s.admission.SetLimits(AdmissionLimits(&merged))
	s.cfg.Store(&merged)

	restartOnly := []struct {
		key      string
		old, new any
	}{
		{"listen", old.Listen, cfg.Listen},
		{"host_key_files", old.HostKeyFiles, cfg.HostKeyFiles},
		{"db", old.DB, cfg.DB},
		{"secret_key_file", old.SecretKeyFile, cfg.SecretKeyFile},
		{"upstream", old.Upstream, cfg.Upstream},
		{"proxy_protocol", old.ProxyProtocol, cfg.ProxyProtocol},
		{"proxy_protocol_from", old.ProxyProtocolFrom, cfg.ProxyProtocolFrom},
		{"admin.socket", old.Admin.Socket, cfg.Admin.Socket},
		{"admin.groups", old.Admin.Groups, cfg.Admin.Groups},
		{"enroll.portal_listen", old.Enroll.PortalListen, cfg.Enroll.PortalListen},
		{"enroll.ssh_listen", old.Enroll.SSHListen, cfg.Enroll.SSHListen},
		{"enroll.confirm_within", old.Enroll.ConfirmWithin, cfg.Enroll.ConfirmWithin},
		{"enroll.tls_cert", old.Enroll.TLSCert, cfg.Enroll.TLSCert},
		{"enroll.tls_key", old.Enroll.TLSKey, cfg.Enroll.TLSKey},
		{"totp.issuer", old.TOTP.Issuer, cfg.TOTP.Issuer},
		{"metrics_listen", old.MetricsListen, cfg.MetricsListen},
		{"log_format", old.LogFormat, cfg.LogFormat},
		{"audit.retention", old.Audit.Retention, cfg.Audit.Retention},
		{"relay.window", old.Relay.Window, cfg.Relay.Window},
		{"relay.window_total", old.Relay.WindowTotal, cfg.Relay.WindowTotal},
		{"keys", old.Keys, cfg.Keys},
		{"store", old.Store, cfg.Store},
		{"node_name", old.NodeName, cfg.NodeName},
	}
	for _, r := range restartOnly {
		if fmt.Sprint(r.old) != fmt.Sprint(r.new) {
			needRestart = append(needRestart, r.key)
		}
	}
	return needRestart
}

// Serve accepts connections on ln until Shutdown or Close; it always returns
// a non-nil error, ErrServerClosed after a shutdown. With proxy_protocol on,
// peers in proxy_protocol_from must send a PROXY header and the client
// address it names is the one the policy sees; nobody else can claim one.
func (s *Server) Serve(ln net.Listener) error {
	// Beneath the PROXY protocol, which reads its header through it.
	ln = sockio.Listener(ln)
	if cfg := s.config(); cfg.ProxyProtocol {
		ln = &proxyproto.Listener{Listener: ln, From: cfg.ProxyFrom}
	}
	err := s.accept.Serve(ln)
	if errors.Is(err, connserve.ErrServerClosed) {
		return ErrServerClosed
	}
	return err
}

// Shutdown stops accepting connections and waits for the live ones to end
// on their own. When ctx expires first it closes them and returns ctx.Err().
// The background work (lockout sweeps, other nodes' kill requests) and the
// audit log go on: the linking portal and SSH listener still sign users in
// through this Server while they drain. Call Close when they are down.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.accept.Shutdown(ctx)
}

// Close stops accepting and closes every connection at once, then stops the
// background work and writes out the audit events still queued; events
// recorded afterwards go to the log only.
func (s *Server) Close() error {
	s.accept.Close()
	s.stopReporting()
	s.audit.close()
	return nil
}

// Health reports whether the store can be read, still takes writes (when it
// can tell: store.HealthChecker) and the lander answers; it backs /healthz.
func (s *Server) Health(ctx context.Context) error {
	if h, ok := s.store.(store.HealthChecker); ok {
		if err := h.Health(); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	if _, err := s.store.Get("gatekeeper-healthz"); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return s.lander.ping(ctx)
}

// Unlock clears every lockout and failure count of user, from outside and
// from the trusted networks, levels included. It returns what was in force,
// or the error of a lockout store that did not answer (then the unlock may or
// may not have been applied; running it again is safe).
func (s *Server) Unlock(user string) ([]Lock, error) {
	was, err := s.limiter.unlock(userKeys(user))
	if err != nil {
		s.log.Error("unlock failed: the lockout store did not answer", "user", user, "err", err)
		return nil, fmt.Errorf("unlock %s: the lockout store did not answer, so it may not be cleared (run it again): %w", user, err)
	}
	return was, nil
}

// UnlockAddress clears the lockouts and failure counts of addr: its address
// (IPv6 /64), its network (/24, /48) and, if trusted, the address itself. It
// returns what was in force, or the error of a lockout store that did not
// answer, as Unlock does.
func (s *Server) UnlockAddress(addr netip.Addr) ([]Lock, error) {
	was, err := s.limiter.unlock(addressKeys(addr))
	if err != nil {
		s.log.Error("unlock failed: the lockout store did not answer", "address", addr, "err", err)
		return nil, fmt.Errorf("unlock %s: the lockout store did not answer, so it may not be cleared (run it again): %w", addr, err)
	}
	return was, nil
}

// Locks returns the lockouts in force on user and the failures counted
// against them, outside and trusted, for admin show.
func (s *Server) Locks(user string) []Lock {
	locks, err := s.limiter.locks(userKeys(user))
	if err != nil {
		s.log.Warn("lockouts unknown: the lockout store did not answer", "user", user, "err", err)
	}
	return locks
}

// handleConn authenticates one client and relays it to the lander. It
// waits in Relay for the session's whole life, which may be days, so the
// login and the session's start and end are functions of their own, gone
// from the stack meanwhile. The runtime halves an idle goroutine's stack
// only while less than a quarter of it is in use, counting an 800-byte
// reserve: waiting, this goroutine uses 1,152 bytes (gdb, 2026-12-07),
// under the 1,248 that let its stack go from 8 KiB to 4 (4 KiB less per
// idle session); it had crept to 1,256 before Relay took *Options. Keep
// the frames on that path (this one, Relay's and its run loop's) small;
// bench/idle.sh shows the stacks per session (12 KiB: 3 goroutines at 4).
func (s *Server) handleConn(ctx context.Context, nc net.Conn) {
	l := s.login(ctx, nc)
	if l == nil {
		return
	}
	sess, opts, end := s.startSession(l)
	if sess == nil {
		return
	}
	var err error
	defer end(&err)
	err = relay.Relay(l.sc, l.chans, l.reqs, l.a.up.conn, l.a.up.chans, l.a.up.reqs, opts)
}

// loggedIn is what login hands on to the session.
type loggedIn struct {
	sc     *ssh.ServerConn
	chans  <-chan ssh.NewChannel
	reqs   <-chan *ssh.Request
	a      *attempt
	remote netip.AddrPort
	log    *slog.Logger
	cfg    *config.Config
}

// login runs the handshake and authentication of nc, up to a connected
// lander; nil when the client did not log in (all is then closed or
// handed back). ctx ends when the server closes its connections (Close,
// or Shutdown's deadline): the decision under way, which may wait for the
// lander or a refusal's padding, stops with it.
func (s *Server) login(ctx context.Context, nc net.Conn) *loggedIn {
	start := time.Now()
	remote, known := clientAddr(nc.RemoteAddr())
	log := s.log.With("remote", remote.String())
	cfg := s.config()
	// A PROXY header that names no client (a health check) is never judged
	// by the load balancer's own address, which may be trusted.
	trusted := known && cfg.IsTrusted(remote.Addr())
	if !known {
		log = log.With("proxy_client", "unknown")
	}

	release, refused := s.admission.Enter(remote.Addr(), trusted)
	if refused != "" {
		// Logged in summary by reportLoop: a flood must not flood the log.
		s.metrics.PreauthRefused.With(refused).Inc()
		return nil
	}
	defer release()

	// The version and key exchange get a short deadline of their own, so
	// that idle connections give their place back soon; authentication
	// then gets login_grace_time from the start (see serverConfig).
	handshake := cfg.Preauth.HandshakeTimeout
	if handshake <= 0 {
		handshake = 10 * time.Second
	}
	_ = nc.SetDeadline(start.Add(handshake))

	a := &attempt{srv: s, ctx: ctx, remote: remote.Addr(), known: known, trusted: trusted, log: log}
	sc, chans, reqs, err := ssh.NewServerConn(nc, s.serverConfig(cfg, a, nc, start))
	if err != nil {
		if a.up != nil {
			a.up.conn.Close()
		}
		log.Debug("connection ended before login", "err", err)
		s.warnUnreadProxyHeader(log, err)
		return nil
	}
	_ = nc.SetDeadline(time.Time{})
	return &loggedIn{sc: sc, chans: chans, reqs: reqs, a: a, remote: remote, log: log, cfg: cfg}
}

// warnUnreadProxyHeader logs at Warn, at most once a minute, a connection
// refused for starting with a PROXY protocol header that the gatekeeper was
// not told to read (proxy_protocol off, or the sender not in
// proxy_protocol_from): a balancer set up to send one, which an admin would
// otherwise find only as every login failing. Such a connection fails (as
// with OpenSSH's sshd), never logs in with the balancer's address.
// log is the connection's (it names the sender: the balancer, or someone
// sending PROXY lines to mislead).
func (s *Server) warnUnreadProxyHeader(log *slog.Logger, err error) {
	var lbv *ssh.LineBeforeVersionError
	if !errors.As(err, &lbv) || !proxyproto.IsHeader(lbv.Raw) {
		return
	}
	now := s.now().UnixNano()
	last := s.proxyWarned.Load()
	if now-last < int64(time.Minute) || !s.proxyWarned.CompareAndSwap(last, now) {
		return
	}
	log.Warn("a connection began with a PROXY protocol header, which this gatekeeper does not read from it " +
		"(set proxy_protocol: true and list the load balancer in proxy_protocol_from): refused")
}

// startSession registers l's session, logs its start and starts its
// limits; end undoes all that and logs the end with Relay's result *err. sess
// is nil when the session may not start (l is then closed).
func (s *Server) startSession(l *loggedIn) (sess *Session, opts *relay.Options, end func(err *error)) {
	sc, a, log, cfg := l.sc, l.a, l.log, l.cfg
	sess, refused := s.addSession(sc, l.remote, a)
	if sess == nil {
		log.Warn("login refused: "+refused, "user", sc.User())
		a.up.conn.Close()
		sc.Close()
		return nil, opts, nil
	}
	s.metrics.Sessions.Inc()
	log = log.With("user", sc.User(), "session", sess.ID)
	// rtt: what sized the client's receive window (see relay.Options.Window).
	log.Info("session started", "trusted", a.trusted, "rtt", relay.ClientRTT(sc).Round(time.Microsecond).String())
	stopLimits := s.enforceLimits(sess, cfg.Session, log)
	var expiry *time.Timer
	if !a.keyExpires.IsZero() {
		// A key's sessions end when it expires, as a token's transfers do.
		expiry = time.AfterFunc(a.keyExpires.Sub(s.now()), func() {
			log.Info("session ended: its key expired", "fingerprint", a.keyFP, "expired", a.keyExpires)
			sess.conn.Close()
		})
	}
	opts = &relay.Options{Log: log, Stats: &sess.Stats,
		MaxChannels: cfg.MaxChannels, Window: uint32(cfg.Relay.WindowBytes), Windows: s.windows,
		HostKeys: s.signers}
	end = func(err *error) {
		sess.reportBytes(s.metrics)
		closedFirst := "client"
		if sess.Stats.LanderFirst.Load() {
			closedFirst = "lander"
		}
		log.Info("session ended", "duration", time.Since(sess.Start).Round(time.Millisecond).String(),
			"bytes_up", sess.Stats.Up.Load(), "bytes_down", sess.Stats.Down.Load(),
			"closed_first", closedFirst, "err", errString(*err))
		if expiry != nil {
			expiry.Stop()
		}
		stopLimits()
		s.metrics.Sessions.Dec()
		s.removeSession(sess)
	}
	return sess, opts, end
}

// enforceLimits ends sess when it has been idle for limits.IdleTimeout or has
// lasted limits.MaxDuration (each off when zero). Idle means no channel data
// either way; keepalives do not count. The returned func stops the watch; it
// must be called when the session ends.
func (s *Server) enforceLimits(sess *Session, limits config.Session, log *slog.Logger) (stop func()) {
	if limits.IdleTimeout <= 0 && limits.MaxDuration <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		var maxTimer <-chan time.Time
		if limits.MaxDuration > 0 {
			t := time.NewTimer(limits.MaxDuration)
			defer t.Stop()
			maxTimer = t.C
		}
		var tick <-chan time.Time
		if limits.IdleTimeout > 0 {
			t := time.NewTicker(min(max(limits.IdleTimeout/10, 10*time.Millisecond), 30*time.Second))
			defer t.Stop()
			tick = t.C
		}
		lastBytes, lastActive := int64(-1), time.Now()
		for {
			select {
			case <-done:
				return
			case <-maxTimer:
				log.Info("session reached session.max_duration; closing", "max_duration", limits.MaxDuration.String())
				sess.conn.Close()
				return
			case now := <-tick:
				if b := sess.Stats.Up.Load() + sess.Stats.Down.Load(); b != lastBytes {
					lastBytes, lastActive = b, now
				} else if now.Sub(lastActive) >= limits.IdleTimeout {
					log.Info("session idle for session.idle_timeout; closing", "idle_timeout", limits.IdleTimeout.String())
					sess.conn.Close()
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

// serverConfig builds one connection's SSH server config. It is built per
// connection so that the auth callbacks close over that connection's attempt,
// and so that nc's deadline moves from the handshake's to login_grace_time
// after start only when the client begins to authenticate: a client that
// finishes the key exchange and then sits idle gives its place back after
// preauth.handshake_timeout, like one that never speaks.
func (s *Server) serverConfig(cfg *config.Config, a *attempt, nc net.Conn, start time.Time) *ssh.ServerConfig {
	grace := cfg.LoginGraceTime
	if grace <= 0 {
		grace = 60 * time.Second
	}
	authBegins := func() { _ = nc.SetDeadline(start.Add(grace)) }
	c := &ssh.ServerConfig{
		MaxAuthTries:        cfg.MaxAuthTries,
		ServerVersion:       VersionString,
		PreAuthConnCallback: func(c ssh.ServerPreAuthConn) { a.preAuth = c },
		KeyboardInteractiveCallback: func(c ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			authBegins()
			return a.keyboardInteractive(c, ask)
		},
		PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			authBegins()
			return a.passwordMethod(c, pw)
		},
	}
	if s.landerCA != nil {
		c.PublicKeyCallback = func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			authBegins()
			return a.publicKey(c, key)
		}
		c.VerifiedPublicKeyCallback = a.verifiedKey
		// Without ssh-rsa (SHA-1) and ssh-dss signatures, which x/crypto
		// accepts by default and OpenSSH has refused since 8.8: a registered
		// key gets in on the terms the lander's own sshd would give it.
		c.PublicKeyAuthAlgorithms = s.keyAlgos
	}
	for _, k := range HandshakeKeys(s.signers) {
		c.AddHostKey(k)
	}
	return c
}

// Session is a live proxied connection.
type Session struct {
	ID      uint64
	User    string
	Remote  netip.AddrPort
	Trusted bool
	Start   time.Time
	// KeyFP is the fingerprint of the registered key the session logged in
	// with; empty for a password login.
	KeyFP string
	// Stats counts the bytes relayed; safe to read while the session runs.
	Stats relay.Stats

	conn ssh.Conn
	// reportedUp and reportedDown are the bytes already added to the
	// metrics; see reportBytes.
	reportedUp, reportedDown atomic.Int64
}

// bytesReportInterval is how often live sessions' traffic is added to
// gatekeeper_relayed_bytes_total, so that a long transfer shows while it runs.
const bytesReportInterval = 5 * time.Second

// reportBytes adds what sess relayed since the last report to m. It may run
// from the report loop and the session's end at once: each byte is added
// once, and the counters never go back.
func (sess *Session) reportBytes(m *metrics.Gatekeeper) {
	report := func(cur int64, reported *atomic.Int64, c *metrics.Counter) {
		for {
			old := reported.Load()
			if cur <= old {
				return
			}
			if reported.CompareAndSwap(old, cur) {
				c.Add(uint64(cur - old))
				return
			}
		}
	}
	report(sess.Stats.Up.Load(), &sess.reportedUp, m.RelayedUp)
	report(sess.Stats.Down.Load(), &sess.reportedDown, m.RelayedDown)
}

// reportLoop adds live sessions' traffic to the metrics every
// bytesReportInterval until stopReporting. It is started by New.
func (s *Server) reportLoop() {
	defer close(s.reportDone)
	t := time.NewTicker(bytesReportInterval)
	defer t.Stop()
	for {
		select {
		case <-s.reportStop:
			return
		case <-t.C:
			s.auditLockEnds(s.limiter.sweep())
			if refused := s.admission.TakeRefused(); refused != nil {
				s.log.Warn("connections refused before authentication (max_startups, preauth)",
					"period", bytesReportInterval.String(), "refused", refused, "unauthenticated", s.admission.Len())
			}
			s.mu.Lock()
			live := make([]*Session, 0, len(s.sessions))
			for _, x := range s.sessions {
				live = append(live, x)
			}
			s.mu.Unlock()
			for _, x := range live {
				x.reportBytes(s.metrics)
			}
		}
	}
}

// stopReporting ends reportLoop and killLoop and waits for them; calling it
// again is a no-op.
func (s *Server) stopReporting() {
	s.reportOnce.Do(func() { close(s.reportStop) })
	<-s.reportDone
	<-s.killDone
}

// SessionInfo is a snapshot of a Session for listing. Node and ID name it in
// the cluster; only the sessions of the node that lists them (ThisNode) have
// byte counts.
type SessionInfo struct {
	Node      string    `json:"node"`
	ID        uint64    `json:"id"`
	User      string    `json:"user"`
	Remote    string    `json:"remote"`
	Trusted   bool      `json:"trusted"`
	Start     time.Time `json:"start"`
	BytesUp   int64     `json:"bytes_up"`
	BytesDown int64     `json:"bytes_down"`
	ThisNode  bool      `json:"this_node"`
	// Key is the fingerprint of the registered SSH key of a key login.
	Key string `json:"key,omitempty"`
}

// info is the listing of sess, a session of node.
func (sess *Session) info(node string) SessionInfo {
	return SessionInfo{
		Node: node, ID: sess.ID, User: sess.User, Remote: sess.Remote.String(), Trusted: sess.Trusted, Start: sess.Start,
		BytesUp: sess.Stats.Up.Load(), BytesDown: sess.Stats.Down.Load(), ThisNode: true, Key: sess.KeyFP,
	}
}

// addSession registers a new session; nil when the user's token was reset
// since a's login began (the reset could not see, and so end, this session).
func (s *Server) addSession(sc *ssh.ServerConn, remote netip.AddrPort, a *attempt) (sess *Session, refused string) {
	s.mu.Lock()
	if s.resets[sc.User()] != a.resetEpoch || a.keyFP != "" && s.keyRevokes[sc.User()] != a.keyEpoch {
		s.mu.Unlock()
		return nil, "the user's token was reset while the login was decided"
	}
	// decide checked the cap already; this check, under the lock, holds it
	// against logins of the same user decided at once.
	if limit := s.config().Session.MaxPerUser; limit > 0 && s.liveSessionsOfLocked(sc.User()) >= limit {
		s.mu.Unlock()
		return nil, "the user reached session.max_per_user while the login was decided"
	}
	id := a.sessionID
	if id == 0 {
		s.nextID++
		id = s.nextID
	}
	sess = &Session{ID: id, User: sc.User(), Remote: remote, Trusted: a.trusted, Start: time.Now(), KeyFP: a.keyFP, conn: sc}
	s.sessions[sess.ID] = sess
	s.mu.Unlock()
	s.registry.Register(store.LiveSession{Node: s.node, ID: sess.ID, User: sess.User, Remote: remote.String(),
		Trusted: sess.Trusted, Start: sess.Start, Key: sess.KeyFP})
	return sess, ""
}

// liveSessionsOf counts user's live sessions on this node.
func (s *Server) liveSessionsOf(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveSessionsOfLocked(user)
}

// liveSessionsOfLocked is liveSessionsOf with s.mu held. It walks every
// session: it runs only with a cap set, once per login.
func (s *Server) liveSessionsOfLocked(user string) int {
	n := 0
	for _, sess := range s.sessions {
		if sess.User == user {
			n++
		}
	}
	return n
}

// reserveSessionID takes the id the next session of a key login will have,
// so that the lander's certificate can name it.
func (s *Server) reserveSessionID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	return s.nextID
}

// keyEpoch is the number of times a key of user was revoked (KillKey).
func (s *Server) keyEpoch(user string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keyRevokes[user]
}

func (s *Server) removeSession(sess *Session) {
	s.mu.Lock()
	delete(s.sessions, sess.ID)
	s.mu.Unlock()
	s.registry.Unregister(sess.ID)
}

// session is this node's live session id, or nil.
func (s *Server) session(id uint64) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

// Sessions lists this node's live sessions, oldest first (ClusterSessions
// lists every node's).
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for _, x := range s.sessions {
		out = append(out, x.info(s.node))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Kill ends this node's session with the given id; it reports whose session
// it was and whether it existed (KillSession finds one on any node).
func (s *Server) Kill(id uint64) (user, remote string, ok bool) {
	s.mu.Lock()
	sess := s.sessions[id]
	s.mu.Unlock()
	if sess == nil {
		return "", "", false
	}
	sess.conn.Close()
	s.log.Info("session killed by an admin", "session", id, "user", sess.User)
	return sess.User, sess.Remote.String(), true
}

// resetEpoch is the number of times user's token was reset (KillUser).
func (s *Server) resetEpoch(user string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resets[user]
}

// KillUser ends every live session of user and returns how many there were.
// Logins of user being decided at that moment are not let in either (see
// addSession). Call it after the reset is committed to the store. In a
// cluster it also asks every other node to do the same (it does not wait for
// them; the count includes the sessions the registry lists for them).
func (s *Server) KillUser(user string) int {
	return s.killLocalUser(user) + s.killUserElsewhere(user)
}

// killLocalUser is KillUser on this node only.
func (s *Server) killLocalUser(user string) int {
	s.mu.Lock()
	s.resets[user]++
	var victims []*Session
	for _, x := range s.sessions {
		if x.User == user {
			victims = append(victims, x)
		}
	}
	s.mu.Unlock()
	for _, x := range victims {
		x.conn.Close()
		s.log.Info("session ended by a token reset", "session", x.ID, "user", x.User)
	}
	return len(victims)
}

// clientAddr is the client's address, and whether it is known: a PROXY
// header without a client address gives the load balancer's address and
// false.
func clientAddr(a net.Addr) (netip.AddrPort, bool) {
	if u, ok := a.(*proxyproto.UnknownAddr); ok {
		return remoteAddrPort(u.Proxy), false
	}
	return remoteAddrPort(a), true
}

// remoteAddrPort extracts the client's address; IPv4-mapped IPv6 addresses
// are unmapped so that "10.0.0.0/8" matches a dual-stack listener's peers.
func remoteAddrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprint(err)
}
