// Package portal is the browser side of device linking and of the user's own account security:
// a small web site where a user signs in (with the login node's password and, once a device is
// linked, a code from it or a recovery code), reads what will happen, sees the new secret once
// as a QR code (and as text), confirms it with one code from the app and gets the recovery
// codes. Later the account page shows the user's security log and lets a user who signed in with
// both factors replace the phone or get new recovery codes.
//
// It works with JavaScript switched off (there is none): every step is a plain HTML form. The
// secret is shown exactly once: it is kept in the server-side session only between the POST that
// starts the link and the page that renders it, and is dropped as that page is rendered, so a
// reload, the back button or a second tab get a page that explains why it is gone.
//
// Everything the portal needs from the rest of the daemon comes through the small interfaces
// below, so it can be tested, and wired by the daemon, without knowing the store or the SSH side.
package portal

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/connserve"
	"gatekeeper/gatekeeper/store"
)

// Authenticator checks who signs in. SignIn is the front door's own check, offered to the
// other doors (door names which one, for the log and the audit trail): once user has a linked
// device it needs the password and a code from the app or a recovery code, from everywhere,
// the code checked first and spent across doors as at the SSH door; a user without a device
// signs in with the password alone, and code is ignored. linked reports which of the two it
// was. Every refusal (lockouts included) is an error after the same delay; the portal shows all
// of them the same way. *gatekeeper.Server implements it.
//
// SignInLinked is the same for a user who must have a linked device: from outside the allowed
// networks without a ticket, both factors are the proof of who signs in, and for a user without
// a device the password never reaches the lander.
type Authenticator interface {
	SignIn(ctx context.Context, user, password, code string, remote netip.Addr, door string) (linked bool, err error)
	SignInLinked(ctx context.Context, user, password, code string, remote netip.Addr, door string) error
}

// SecurityLogReader returns the newest n events of user's audit trail (logins accepted and
// refused at every door, device links and replacements, recovery codes used and renewed, admin
// actions), for the user's own security log on the account page. The order does not matter:
// the page sorts them. *enroll.Service implements it.
type SecurityLogReader interface {
	SecurityLog(ctx context.Context, user string, n int) ([]store.Event, error)
}

// Linker starts and confirms device links and reports a user's link state. Begin and Confirm
// behave as enroll.Service's do (errors wrapping enroll.ErrAlreadyLinked, ErrPending,
// ErrNoPending, ErrExpired, ErrBadCode, ErrVoided, ErrStartedElsewhere); the portal keeps the
// binding Begin returns in the server-side session that started the link, so only that session
// can confirm it. Confirm returns the new recovery codes. State never returns the secret.
type Linker interface {
	Begin(ctx context.Context, user string) (enroll.Link, enroll.Binding, error)
	Confirm(ctx context.Context, user string, binding enroll.Binding, code string) ([]string, error)
	State(ctx context.Context, user string) (store.User, error)
}

// CredentialChanger changes the credentials of a user whose device is active; the portal calls
// it only for a session signed in with both factors. *enroll.Service implements it.
//
// BeginReplace starts replacing the device: a new secret, shown once, and the binding that
// ConfirmReplace and CancelReplace need; the old device keeps working meanwhile. ConfirmReplace
// checks a code of the new secret as Linker.Confirm does (errors matching enroll.ErrBadCode,
// ErrVoided, ErrExpired, ErrNoPending, ErrStartedElsewhere; a code that the new secret gives a
// few minutes off is an *enroll.ClockError, whose text tells the user to fix the phone's clock)
// and on success makes the new device the only one and returns the new recovery codes, the old
// ones void. CancelReplace drops the replacement. RenewRecovery replaces the recovery codes
// alone. Each returns an error matching enroll.ErrNotLinked for a user without an active device.
type CredentialChanger interface {
	BeginReplace(ctx context.Context, user string) (enroll.Link, enroll.Binding, error)
	ConfirmReplace(ctx context.Context, user string, binding enroll.Binding, code string) ([]string, error)
	CancelReplace(ctx context.Context, user string, binding enroll.Binding) error
	RenewRecovery(ctx context.Context, user string) ([]string, error)
}

// KeyManager registers, lists and revokes a user's SSH keys (keys.enabled), as enroll.Service
// does: AddKey with enroll.AddedBySelf refuses a user without an active device (an error
// matching enroll.ErrNotLinked); the errors matching enroll.ErrBadKey, ErrKeyExists, ErrNoKey
// and ErrTooManyKeys have messages fit for the user. RevokeKey returns the key and how many
// live sessions that logged in with it were ended. The portal calls them only for a session
// signed in with both factors. *enroll.Service implements it.
type KeyManager interface {
	AddKey(ctx context.Context, user string, nk enroll.NewKey, addedBy string) (store.Key, error)
	Keys(ctx context.Context, user string) ([]store.Key, error)
	RevokeKey(ctx context.Context, user, fp string) (store.Key, int, error)
}

// Tickets checks and uses up the one-time tickets that let a user link a device from outside
// the allowed networks. Both return an error for an unknown, expired, used or other user's
// ticket. The implementation is expected to accept the ticket the way the admin command prints
// it (the portal only trims surrounding spaces).
type Tickets interface {
	CheckTicket(user, token string, now time.Time) error
	UseTicket(user, token string, now time.Time) error
}

// Limits of the portal. They are constants rather than settings: they protect the daemon and
// nobody has a reason to tune them.
//
// Wrong confirmation codes are not limited here but per user in the store (see
// enroll.MaxConfirmTries), so that more sessions do not buy more guesses.
const (
	// IdleTimeout ends a session that made no request for this long.
	IdleTimeout = 15 * time.Minute
	// MaxLifetime ends a session this long after it began, however busy: a stolen or forgotten
	// session id is worth nothing after it.
	MaxLifetime = time.Hour
	// MaxSessions caps the sessions held in memory. When it is reached, the least recently used
	// session that has not signed in is dropped; if every session is signed in, new visitors get
	// a "busy" page until one ends.
	MaxSessions = 10000
	// MaxSessionsPerUser caps the signed-in sessions of one user; a further sign-in is refused
	// until one ends (sign-out, IdleTimeout, MaxLifetime).
	MaxSessionsPerUser = 5
	// MaxConnsPerSource caps the open connections from one client address (an IPv6 client's
	// whole /64, which one host usually has to itself); more are closed at once. Browsers open
	// six at most.
	MaxConnsPerSource = 16
	// MaxConnsPerNetwork caps the open connections from one /24 (IPv6 /48).
	MaxConnsPerNetwork = 64
	// MaxConns caps the open connections from outside the allowed networks in all;
	// MaxConnsReserve more are kept for the allowed networks.
	MaxConns        = 512
	MaxConnsReserve = 64
	// SecurityLogEvents is how many of the user's latest events the account page lists.
	SecurityLogEvents = 20
	// MaxBodyBytes caps a request body: every form of the portal fits in far less.
	MaxBodyBytes = 16 << 10
	// MaxHeaderBytes caps the request line and headers.
	MaxHeaderBytes = 16 << 10
)

// Timeouts of the http.Server that Serve and ServeTLS run.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
)

// Server is the device-linking portal. Set the fields, then either mount Handler in your own
// http.Server or call Serve/ServeTLS, which run one with the portal's timeouts and limits.
// A Server must not be copied or have its fields changed after the first call of a method.
type Server struct {
	// Auth checks the sign-in: the password, and the code once the user has a device (required).
	Auth Authenticator
	// Linker starts and confirms links (required).
	Linker Linker
	// Credentials replaces the phone and renews recovery codes; nil leaves both out.
	Credentials CredentialChanger
	// EndSSH ends user's live SSH sessions and returns how many there were (the front door's
	// KillUser); a confirmed replacement calls it when the user ticked "also end my open SSH
	// sessions". Nil leaves that box out.
	EndSSH func(user string) int
	// SecurityLog reads the user's security log for the account page; nil leaves it out.
	SecurityLog SecurityLogReader
	// KeysEnabled is keys.enabled: the account page of a user signed in with both factors
	// gets the "SSH keys" section (list, add, revoke, remembered devices).
	KeysEnabled bool
	// Keys makes the key changes when KeysEnabled is set; nil means the Linker, which must
	// then implement KeyManager (*enroll.Service does). Without either the section is left out.
	Keys KeyManager
	// Tickets checks one-time tickets; nil means tickets are not accepted.
	Tickets Tickets
	// Allowed reports whether a client address may link without a ticket
	// (enroll.allowed_networks). The address is unmapped (IPv4-mapped IPv6 → IPv4). Nil allows
	// no address: then only users with a ticket may link.
	Allowed func(netip.Addr) bool
	// Issuer is the service's name shown on the pages; "" means enroll.DefaultIssuer.
	Issuer string
	// ConfirmWithin is enroll.confirm_within, used to tell the user when a pending link expires;
	// zero means enroll.DefaultConfirmWithin. It must match the Linker's.
	ConfirmWithin time.Duration
	// Log receives the portal's log lines; nil discards them.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Secure marks the session cookie Secure; set it when the portal is served over TLS.
	Secure bool

	// maxSessions and maxConnsPerSource override MaxSessions and MaxConnsPerSource in tests.
	maxSessions       int
	maxConnsPerSource int
	// refusalDelay replaces enroll.WaitRefusal in tests.
	refusalDelay func(context.Context)

	initOnce sync.Once
	handler  http.Handler
	pages    *pages
	sessions *sessionStore

	srvMu sync.Mutex
	srv   *http.Server
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

func (s *Server) issuer() string {
	if s.Issuer != "" {
		return s.Issuer
	}
	return enroll.DefaultIssuer
}

func (s *Server) confirmWithin() time.Duration {
	if s.ConfirmWithin > 0 {
		return s.ConfirmWithin
	}
	return enroll.DefaultConfirmWithin
}

// allowed reports whether remote may link without a ticket. An address that cannot be parsed
// (not a TCP peer) is never allowed.
func (s *Server) allowed(remote netip.Addr) bool {
	return remote.IsValid() && s.Allowed != nil && s.Allowed(remote)
}

// Handler returns the portal's HTTP handler. It is safe for concurrent use; every call returns
// the same handler, sharing one session store.
func (s *Server) Handler() http.Handler {
	s.init()
	return s.handler
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.pages = mustParsePages()
		limit := s.maxSessions
		if limit <= 0 {
			limit = MaxSessions
		}
		s.sessions = newSessionStore(limit, MaxSessionsPerUser, IdleTimeout, MaxLifetime)
		s.handler = s.routes()
	})
}

// httpServer returns the http.Server that Serve, ServeTLS and Shutdown share, creating it on
// first use.
func (s *Server) httpServer() *http.Server {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.srv == nil {
		s.srv = &http.Server{
			Handler:           s.Handler(),
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    MaxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(s.log().Handler(), slog.LevelWarn),
		}
	}
	return s.srv
}

// Serve serves the portal over plain HTTP on ln until Shutdown; it then returns
// http.ErrServerClosed. Use it behind a TLS-terminating proxy or on loopback only. Each client
// address gets at most MaxConnsPerSource connections at a time.
func (s *Server) Serve(ln net.Listener) error {
	return s.httpServer().Serve(s.limitListener(ln))
}

// ServeTLS serves the portal over HTTPS on ln with the certificate and key in the given PEM
// files, until Shutdown; it then returns http.ErrServerClosed. Set Secure as well. Each client
// address gets at most MaxConnsPerSource connections at a time.
func (s *Server) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	return s.httpServer().ServeTLS(s.limitListener(ln), certFile, keyFile)
}

// waitRefusal waits before a sign-in refusal that did not go through the password check (see
// enroll.RefusalDelay), whatever the request's context says: net/http cancels it as soon as the
// client half-closes its connection, and such a client can still read an answer that would then
// come at once.
func (s *Server) waitRefusal(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	if s.refusalDelay != nil {
		s.refusalDelay(ctx)
		return
	}
	enroll.WaitRefusal(ctx)
}

// limitListener wraps ln with the connection caps.
func (s *Server) limitListener(ln net.Listener) net.Listener {
	n := s.maxConnsPerSource
	if n <= 0 {
		n = MaxConnsPerSource
	}
	limits := connserve.Limits{PerAddress: n, PerNetwork: max(n, MaxConnsPerNetwork), Max: MaxConns,
		DropStart: MaxConns, TrustedReserve: MaxConnsReserve}
	return newSourceLimitListener(ln, limits, s.Allowed, s.log())
}

// EndUser ends every portal session of user, with any secret, binding or recovery codes they
// hold, and returns how many were live. An admin reset calls it: the user must sign in again,
// and a link begun before the reset cannot be confirmed from the old session.
func (s *Server) EndUser(user string) int {
	s.init()
	n := s.sessions.endUser(user, s.now())
	if n > 0 {
		s.log().Info("portal sessions ended", "user", user, "sessions", n)
	}
	return n
}

// Shutdown stops Serve/ServeTLS gracefully (see http.Server.Shutdown) and then forgets every
// session, so that no secret or recovery code waiting to be shown stays in memory.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.httpServer().Shutdown(ctx)
	s.init()
	s.sessions.clear()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
