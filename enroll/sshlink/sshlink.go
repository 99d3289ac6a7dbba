// Package sshlink is device linking over SSH: `ssh -p PORT alice@host` asks for alice's password
// (and, from outside the allowed networks, a one-time linking ticket) and a verification code,
// then draws the QR code of a new TOTP secret in the session, asks for one code from the app and
// prints the recovery codes.
//
// Everybody is asked for the verification code, so that the prompts do not tell who has a device
// linked: a user with a device must answer it (a code from the app or a recovery code: both
// factors are needed before anything about the account changes), a user without one leaves it
// empty. A user who signed in with both factors gets a menu instead of the linking flow:
// replace the device (a new secret shown once; the old phone works until a code from the new
// one is confirmed), new recovery codes, or quit.
//
// The listener never proxies anywhere: after authentication the only thing a client can do is
// run the linking flow (enroll.Terminal) in one session channel. The QR code goes as session
// data, never as a keyboard-interactive instruction, which OpenSSH clients escape and truncate.
//
// Everything the flow needs from the rest of the daemon comes through the small interfaces
// below, so the package can be tested, and wired by the daemon, without the front door.
package sshlink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/connserve"
	"gatekeeper/gatekeeper/store"
)

// The keyboard-interactive prompts. The password and code prompts are the front door's, so
// users' askpass scripts work here too.
const (
	PromptPassword = "Password: "
	PromptTicket   = "Linking ticket: "
	PromptCode     = "Verification code: "
)

// codeInstruction goes with the code prompt: the one question a user without a device cannot
// answer. (OpenSSH prints it on its own line before the prompt; askpass scripts see only the
// prompt.)
const codeInstruction = "A code from your authenticator app, or a recovery code. No device linked yet? Leave it empty."

// Defaults for the Server's zero fields.
const (
	// DefaultLoginGraceTime is how long a client has to authenticate and start its session.
	DefaultLoginGraceTime = 60 * time.Second
	// DefaultHandshakeTimeout bounds the version and key exchange.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long a session waits for input (the code) before it ends; it
	// matches enroll.DefaultConfirmWithin, after which the code could not confirm anyway.
	DefaultIdleTimeout = enroll.DefaultConfirmWithin
)

// Limits that protect the daemon; nobody has a reason to tune them.
const (
	// MaxInput caps what a session reads from its client in total: a code needs a few bytes.
	MaxInput = 64 << 10
	// maxPasswordLen bounds the password passed on to the Authenticator (sshd refuses longer).
	maxPasswordLen = 1024
	// maxCodeLen bounds the verification code passed on to the Authenticator: a code from the
	// app has 6 digits, a recovery code 12 characters, either maybe spaced.
	maxCodeLen = 64
	// maxTicketLen bounds the ticket passed on to Tickets.
	maxTicketLen = 256
	// maxAuthTries is how many authentication attempts one connection gets.
	maxAuthTries = 3
	// closeWait is how long a finished session waits for the client to hang up before the
	// server closes the TCP connection: closing first could reset the connection and lose the
	// last output and the exit status on their way to the client.
	closeWait = 5 * time.Second
	// stopWait is how long a timed-out session may take to say so before its connection is
	// closed under it (a client that reads nothing could block the writes forever).
	stopWait = 10 * time.Second
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("sshlink: server closed")

// errDenied is what the SSH library gets for every refusal: the client sees "Permission denied"
// whatever the reason, which goes to the log only.
var errDenied = errors.New("permission denied")

// Authenticator signs a user in at this door (*gatekeeper.Server implements it, with door
// store.DoorLinking). For a user with a linked device it checks both factors, the code first (a
// code from the app or a recovery code, used up across all doors), and reports linked; a user
// without a device signs in with the password alone and code is ignored. The implementation
// rate-limits (per user and per source address), pads its refusals and answers every failure,
// including "too many attempts", with an error; all of them are refused alike.
//
// SignInLinked is the same for a user who must have a linked device: from outside the allowed
// networks without a ticket, both factors are the proof of who signs in, and for a user without
// a device the password never reaches the lander.
type Authenticator interface {
	SignIn(ctx context.Context, user, password, code string, remote netip.Addr, door string) (linked bool, err error)
	SignInLinked(ctx context.Context, user, password, code string, remote netip.Addr, door string) error
}

// Linker starts and confirms device links, as enroll.Service does (errors wrapping
// enroll.ErrAlreadyLinked, ErrPending, ErrNoPending, ErrExpired, ErrBadCode, ErrVoided,
// ErrStartedElsewhere); Confirm returns the new recovery codes. The binding Begin returns stays
// with the session channel that began the link (in its run of enroll.Terminal), so no other
// connection can confirm it. If the Linker also has enroll.Service's
// State(ctx, user) (store.User, error), the "already linked" message says since when; if it is
// also an AccountManager, users with a linked device get the menu.
type Linker = enroll.Linker

// Tickets checks and uses up the one-time tickets that let a user link a device from outside
// the allowed networks (store.Store implements it). Both return an error for an unknown,
// expired, used or other user's ticket.
type Tickets interface {
	CheckTicket(user, token string, now time.Time) error
	UseTicket(user, token string, now time.Time) error
}

// KeyManager registers, lists and revokes a user's SSH keys (keys.enabled), as enroll.Service
// does: AddKey with enroll.AddedBySelf refuses a user without an active device (an error
// matching enroll.ErrNotLinked); the errors matching enroll.ErrBadKey, ErrKeyExists, ErrNoKey
// and ErrTooManyKeys have messages fit for the user. RevokeKey returns the key and how many
// live sessions that logged in with it were ended. The menu, which only a user who proved
// both factors gets, calls them.
type KeyManager interface {
	AddKey(ctx context.Context, user string, nk enroll.NewKey, addedBy string) (store.Key, error)
	Keys(ctx context.Context, user string) ([]store.Key, error)
	RevokeKey(ctx context.Context, user, fp string) (store.Key, int, error)
}

// stater is the optional part of a Linker that tells since when a user's device is linked.
type stater interface {
	State(ctx context.Context, user string) (store.User, error)
}

// Server is the SSH device-linking listener. Set the fields, then call Serve; stop it with
// Shutdown or Close, as with net/http.Server. The fields must not change after the first call.
type Server struct {
	// Signers are the host keys (required); the daemon passes the front door's.
	Signers []ssh.Signer
	// Auth checks the password, and the code of a user with a linked device (required).
	Auth Authenticator
	// Linker starts and confirms links (required).
	Linker Linker
	// Tickets checks and uses tickets; nil means tickets are not accepted.
	Tickets Tickets
	// Allowed reports whether a client address may link without a ticket
	// (enroll.allowed_networks). It gets the address unmapped (IPv4-mapped IPv6 → IPv4). Nil
	// allows no address: then only users with a ticket may link.
	Allowed func(netip.Addr) bool
	// Log receives the listener's log lines; nil discards them.
	Log *slog.Logger
	// Now is the clock for tickets and link expiry; it must be the Linker's clock. Nil means
	// time.Now.
	Now func() time.Time
	// LoginGraceTime is how long a client has to authenticate and start its session; zero
	// means DefaultLoginGraceTime.
	LoginGraceTime time.Duration
	// Preauth limits the connections that have not authenticated yet: per address, per
	// network and in total, with random early drop; connections from Allowed addresses may use
	// the reserve. Zero fields mean DefaultPreauth's. The daemon passes the front door's
	// max_startups and preauth settings.
	Preauth connserve.Limits
	// HandshakeTimeout bounds the SSH version and key exchange, so that idle connections give
	// their place back soon; LoginGraceTime then bounds authentication. Zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout is how long a session waits for input before it ends; zero means
	// DefaultIdleTimeout. A session also ends when its link expires.
	IdleTimeout time.Duration
	// EndSessions ends user's sessions at the daemon's other doors once user replaced their
	// device here, and returns how many it ended: the portal sessions always (a credential
	// change signs out), the SSH sessions through the front door only when ssh is set (the
	// user asked for it; jobs on the lander are not touched). Nil ends none, and the menu
	// then does not offer to end the SSH sessions. The user's other connections to this
	// listener end in any case.
	EndSessions func(user string, ssh bool) int
	// KeysEnabled is keys.enabled: the menu of a user who proved both factors offers "SSH
	// keys" (list, add, revoke).
	KeysEnabled bool
	// Keys makes the key changes when KeysEnabled is set; nil means the Linker, which must
	// then implement KeyManager (*enroll.Service does). Without either the menu has no keys.
	Keys KeyManager

	// refusalDelay replaces enroll.WaitRefusal in tests.
	refusalDelay func(context.Context)

	initOnce  sync.Once
	admission *connserve.Admission
	// grace and handshake are LoginGraceTime and HandshakeTimeout in force,
	// changed by SetLimits while connections are served.
	grace, handshake atomic.Int64
	// live holds the authenticated connections, for EndUser.
	liveMu sync.Mutex
	live   map[*liveConn]struct{}
	// accept runs the accept loop and tracks the connections for Shutdown and Close; the
	// context it gives handleConn is cancelled when connections are closed under it.
	accept connserve.Server
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.admission = connserve.NewAdmission(preauthLimits(s.Preauth))
		s.grace.Store(int64(s.LoginGraceTime))
		s.handshake.Store(int64(s.HandshakeTimeout))
		s.live = make(map[*liveConn]struct{})
		s.accept.Handle = s.handleConn
		s.accept.Log = s.log()
		s.accept.Name = "sshlink"
		s.accept.QuickAck = 256 << 10 // the whole linking dialogue; see connserve.Server.QuickAck
	})
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// SetLimits replaces Preauth, HandshakeTimeout and LoginGraceTime for the connections that
// arrive from now on (a config reload); those in progress keep theirs. Zero values mean the
// defaults, as in the fields.
func (s *Server) SetLimits(preauth connserve.Limits, handshake, grace time.Duration) {
	s.init()
	s.admission.SetLimits(preauthLimits(preauth))
	s.handshake.Store(int64(handshake))
	s.grace.Store(int64(grace))
}

// preauthLimits is p, or DefaultPreauth when p is all zero; zero fields take DefaultPreauth's.
func preauthLimits(p connserve.Limits) connserve.Limits {
	if p == (connserve.Limits{}) {
		return DefaultPreauth()
	}
	return p.Or(DefaultPreauth())
}

// DefaultPreauth returns the limits on unauthenticated connections used where Preauth leaves
// them zero.
func DefaultPreauth() connserve.Limits {
	return connserve.Limits{PerAddress: 4, PerNetwork: 16, Max: 32, TrustedReserve: 8}
}

// waitRefusal waits before a refusal that did not go through the password check (see
// enroll.RefusalDelay); tests set refusalDelay to skip it.
func (s *Server) waitRefusal(ctx context.Context) {
	if s.refusalDelay != nil {
		s.refusalDelay(ctx)
		return
	}
	enroll.WaitRefusal(ctx)
}

func (s *Server) graceTime() time.Duration {
	if g := time.Duration(s.grace.Load()); g > 0 {
		return g
	}
	return DefaultLoginGraceTime
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (s *Server) allowed(a netip.Addr) bool {
	return s.Allowed != nil && s.Allowed(a.Unmap())
}

// Serve accepts connections on ln until Shutdown or Close and always returns a non-nil error:
// ErrServerClosed after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	if len(s.Signers) == 0 || s.Auth == nil || s.Linker == nil {
		return errors.New("sshlink: Signers, Auth and Linker are required")
	}
	err := s.accept.Serve(ln)
	if errors.Is(err, connserve.ErrServerClosed) {
		return ErrServerClosed
	}
	return err
}

// Shutdown stops accepting connections and waits for the live ones to end on their own (a
// session ends at the latest when it has waited IdleTimeout for input). When ctx ends first it
// cancels the sessions' work (password checks, the linking flow), closes their connections and
// returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	return s.accept.Shutdown(ctx)
}

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	s.init()
	return s.accept.Close()
}

// handleConn authenticates one client and runs its linking session. ctx ends when the server
// closes connections under their sessions.
func (s *Server) handleConn(ctx context.Context, nc net.Conn) {
	remote := remoteAddr(nc.RemoteAddr())
	log := s.log().With("remote", remote.String())

	release, refused := s.admission.Enter(remote.Addr(), s.allowed(remote.Addr()))
	if refused != "" {
		log.Debug("sshlink: connection refused before authentication", "reason", refused)
		return
	}
	defer release()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The version and key exchange get a short deadline; authentication then gets the grace
	// time from the start, as at the front door.
	start := time.Now()
	handshake := time.Duration(s.handshake.Load())
	if handshake <= 0 {
		handshake = DefaultHandshakeTimeout
	}
	_ = nc.SetDeadline(start.Add(min(handshake, s.graceTime())))
	a := &authState{srv: s, ctx: ctx, remote: remote, log: log}
	cfg := &ssh.ServerConfig{
		MaxAuthTries:  maxAuthTries,
		ServerVersion: "SSH-2.0-gatekeeper-link",
		// The grace time starts counting only when the client begins to authenticate, so
		// that an idle client gives its place back after the handshake deadline.
		KeyboardInteractiveCallback: func(c ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			_ = nc.SetDeadline(start.Add(s.graceTime()))
			return a.keyboardInteractive(c, ask)
		},
	}
	for _, k := range s.Signers {
		cfg.AddHostKey(k)
	}
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		log.Debug("sshlink: connection ended before login", "err", err)
		return
	}
	defer sc.Close()
	release()
	// A fresh grace period to open the session and ask for the shell; the session clears it.
	_ = nc.SetDeadline(time.Now().Add(s.graceTime()))
	go ssh.DiscardRequests(reqs)

	log = log.With("user", sc.User())
	lc := &liveConn{user: sc.User(), conn: sc}
	s.track(lc, true)
	defer s.track(lc, false)
	var wg sync.WaitGroup
	started := false
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.Prohibited, "this server only links authenticator apps")
			continue
		}
		if started {
			_ = nch.Reject(ssh.Prohibited, "one session per connection")
			continue
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			log.Debug("sshlink: accepting the session failed", "err", err)
			return
		}
		started = true
		ss := newSession(&session{srv: s, ctx: ctx, conn: sc, nc: nc, ch: ch, reqs: chReqs,
			user: sc.User(), remote: remote, ticket: a.ticket, linked: a.linked, log: log})
		lc.setSession(ss)
		wg.Go(func() {
			ss.run()
			// The session is over: let the client hang up first, then close.
			done := make(chan struct{})
			go func() { _ = sc.Wait(); close(done) }()
			t := time.NewTimer(closeWait)
			select {
			case <-done:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			sc.Close()
		})
	}
	wg.Wait()
}

// liveConn is one authenticated connection, as EndUser sees it.
type liveConn struct {
	user string
	conn *ssh.ServerConn

	mu sync.Mutex
	ss *session // its session channel, once accepted
}

func (lc *liveConn) setSession(ss *session) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.ss = ss
}

// end ends the connection for reason (errReset, errReplaced): a running flow is told why and
// the connection is closed under it at the latest stopWait later; otherwise it is closed now.
// It reports whether the connection was still in use (not a finished session waiting for the
// client to hang up).
func (lc *liveConn) end(reason error) bool {
	lc.mu.Lock()
	ss := lc.ss
	lc.mu.Unlock()
	switch {
	case ss == nil:
		lc.conn.Close()
		return true
	case ss.stop(reason):
		return true
	default:
		lc.conn.Close()
		return !ss.finished()
	}
}

// track adds lc to the live connections, or removes it.
func (s *Server) track(lc *liveConn, add bool) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if add {
		s.live[lc] = struct{}{}
	} else {
		delete(s.live, lc)
	}
}

// EndUser ends every authenticated connection of user and returns how many were still in use.
// An admin reset calls it: a linking session in progress says that an admin reset the account
// and ends; the link it started cannot be confirmed by anyone after it.
func (s *Server) EndUser(user string) int {
	s.init()
	n := s.endUser(user, errReset, nil)
	if n > 0 {
		s.log().Info("sshlink: sessions ended by a reset", "user", user, "sessions", n)
	}
	return n
}

// endUser ends user's connections but the one of session except, telling their flows reason,
// and returns how many were still in use.
func (s *Server) endUser(user string, reason error, except *session) int {
	s.liveMu.Lock()
	var victims []*liveConn
	for lc := range s.live {
		if lc.user == user {
			victims = append(victims, lc)
		}
	}
	s.liveMu.Unlock()
	n := 0
	for _, lc := range victims {
		lc.mu.Lock()
		mine := except != nil && lc.ss == except
		lc.mu.Unlock()
		if !mine && lc.end(reason) {
			n++
		}
	}
	return n
}

// remoteAddr is the client's address as the policy sees it: unmapped, with its port.
func remoteAddr(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// authState is one connection's authentication. The SSH library calls its callback from the
// connection's handshake goroutine only, and the session starts after it returned.
type authState struct {
	srv    *Server
	ctx    context.Context
	remote netip.AddrPort
	log    *slog.Logger
	// ticket is the ticket that let the user in from outside the allowed networks; the
	// session uses it up.
	ticket string
	// linked is whether the user has a linked device and so proved both factors.
	linked bool
}

// keyboardInteractive asks for the password, from outside the allowed networks a ticket, and
// the verification code, one question a round as the front door does. The ticket is checked
// before the password, so that nobody without one can use this listener to try passwords; the
// Authenticator checks the code before the password. Every refusal is the same errDenied.
func (a *authState) keyboardInteractive(conn ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	s := a.srv
	user := conn.User()
	password, err := askOne(ask, "", PromptPassword)
	if err != nil {
		return nil, err
	}
	outside := !s.allowed(a.remote.Addr())
	ticket := ""
	if outside {
		if ticket, err = askOne(ask, "", PromptTicket); err != nil {
			return nil, err
		}
	}
	// Asked of everybody, linked or not: whether the question comes must not tell.
	code, err := askOne(ask, codeInstruction, PromptCode)
	if err != nil {
		return nil, err
	}
	// From outside, a ticket lets a user link a first device; without one, only a user whose
	// device is linked signs in, with a code from it (SignInLinked below).
	withTicket := outside && ticket != "" && s.Tickets != nil
	reason := ""
	switch {
	case store.CheckName(user) != nil:
		reason = "invalid user name"
	case password == "" || len(password) > maxPasswordLen:
		reason = "empty or oversized password"
	case len(code) > maxCodeLen:
		reason = "oversized code"
	case outside && !withTicket && code == "":
		reason = "outside the allowed networks without a ticket or a code"
	case !withTicket:
	case len(ticket) > maxTicketLen:
		reason = "oversized ticket"
	default:
		if err := s.Tickets.CheckTicket(user, ticket, s.now()); err != nil {
			reason = "ticket: " + err.Error()
		}
	}
	if reason != "" {
		// Refused before the sign-in, which pads its own refusals: wait as long.
		a.log.Debug("sshlink: login refused", "user", logName(user), "ticket", ticket != "", "reason", reason)
		s.waitRefusal(a.ctx)
		return nil, errDenied
	}
	var linked bool
	if outside && !withTicket {
		linked, err = true, s.Auth.SignInLinked(a.ctx, user, password, code, a.remote.Addr(), store.DoorLinking)
	} else {
		linked, err = s.Auth.SignIn(a.ctx, user, password, code, a.remote.Addr(), store.DoorLinking)
	}
	if err != nil {
		a.log.Info("sshlink: login refused", "user", logName(user), "ticket", ticket != "", "reason", "sign-in: "+err.Error())
		return nil, errDenied
	}
	a.ticket = ticket
	a.linked = linked
	a.log.Info("sshlink: login accepted", "user", user, "ticket", ticket != "", "linked", linked)
	return &ssh.Permissions{}, nil
}

// askOne asks one question with echo off, with instruction shown before it.
func askOne(ask ssh.KeyboardInteractiveChallenge, instruction, prompt string) (string, error) {
	answers, err := ask("", instruction, []string{prompt}, []bool{false})
	if err != nil {
		return "", err
	}
	if len(answers) != 1 {
		return "", fmt.Errorf("client sent %d answers to one question", len(answers))
	}
	return answers[0], nil
}

// logName keeps hostile user names from bloating the log.
func logName(user string) string {
	if len(user) > 64 {
		return fmt.Sprintf("%.64q...(%d bytes)", user, len(user))
	}
	return user
}
