package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
)

// Error codes of the admin API's JSON error body {"error": "...", "code": "..."}.
const (
	codeAlreadyLinked = "already_linked"
	codeNotLinked     = "not_linked"
	codePending       = "pending"
	codeNoPending     = "no_pending"
	codeExpired       = "expired"
	codeBadCode       = "bad_code"
	codeVoided        = "voided"
	codeElsewhere     = "started_elsewhere"
	codeBadName       = "bad_name"
	codeBadRequest    = "bad_request"
	codeNotFound      = "not_found"
	codeUnknownUser   = "unknown_user"
	codeNoSession     = "no_session"
	codeAmbiguous     = "ambiguous_session"
	codeNotImpl       = "not_implemented"
	codeDamaged       = "damaged"
	codeInternal      = "internal"
	codeForbidden     = "forbidden"
	codeExists        = "exists"
	codeBadBackup     = "bad_backup"
	codeUnavailable   = "unavailable"
	codeBadKey        = "bad_key"
	codeKeyExists     = "key_exists"
	codeNoKey         = "no_key"
	codeTooManyKeys   = "too_many_keys"
	codeNoSpace       = "no_space"
)

// Errors of the admin API besides the enroll and store sentinels. The Client's errors match
// them with errors.Is.
var (
	// ErrNoSuchUser means the user has no record and no live session: nothing to act on.
	ErrNoSuchUser = errors.New("no such user")
	// ErrNoSuchSession means no live session has the given id.
	ErrNoSuchSession = errors.New("no such session")
	// ErrAmbiguousSession means several nodes have a live session with the given id: name
	// the node.
	ErrAmbiguousSession = errors.New("ambiguous session id")
	// ErrNotImplemented means the daemon was started without the hook the request needs.
	ErrNotImplemented = errors.New("not supported by this daemon")
)

// maxBodyBytes bounds a request body; the API's requests are a few dozen bytes.
const maxBodyBytes = 64 << 10

// internalMessage is all a client learns about an internal error; the details go to the log.
const internalMessage = "internal error, see the daemon's log"

// noSpaceMessage is the answer to a request whose write found no room (store.ErrNoSpace).
const noSpaceMessage = "database disk full: the filesystem holding gatekeeper's database has no room left (or a quota or " +
	"file size limit was reached), and the change could not be written; free some space and try again (the daemon's log names the file)"

// Timeouts of the HTTP server. The clients are local commands, so these only guard against a
// stuck or hostile peer holding a connection.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = time.Minute
)

// Server serves the admin API. Enroll must be set; Store defaults to Enroll.Store and Log to a
// discarding logger. Every request that changes something is written to the audit log with the
// caller's uid from SO_PEERCRED as the actor ("uid N").
//
// Only root, the daemon's own user and members of Groups may use it: any other caller, and any
// caller whose credentials the kernel does not report, gets 403 Forbidden (ErrForbidden) and a
// log line.
//
// The hooks connect the API to the SSH front door's live state. Set them before Serve; a nil
// hook makes the endpoints that need it answer 501 Not Implemented (ErrNotImplemented), except
// Locks, which is optional.
type Server struct {
	Enroll *enroll.Service
	Store  store.Store
	Log    *slog.Logger
	// Groups names the groups (admin.groups) whose members may use the API besides root: a
	// caller is let in when its primary or a supplementary group is one of them. The names are
	// looked up when Serve starts; one that does not exist is logged and ignored.
	Groups []string
	// Backend ("bolt" or "etcd") and Node (node_name) name this daemon's store in the header
	// of a backup.
	Backend, Node string

	// OnReset ends user's live sessions after a reset; it returns how many it ended.
	OnReset func(user string) int
	// OnUnlock clears every rate-limit lock and failure count of user; it returns what was
	// in force, or an error (store.ErrUnavailable: the lockout store did not answer, and the
	// unlock may not have been applied).
	OnUnlock func(user string) ([]LockInfo, error)
	// OnUnlockAddress clears the rate-limit locks and failure counts of a source address (and
	// its network); it returns what was in force, or an error as OnUnlock does.
	OnUnlockAddress func(addr netip.Addr) ([]LockInfo, error)
	// Locks returns user's rate-limit locks and failure counts, for admin show and list.
	Locks func(user string) []LockInfo
	// Sessions returns the live sessions of every node in a JSON-encodable form; incomplete,
	// when not nil, says which part of the cluster could not be read (the answer holds the
	// rest, and its header Gatekeeper-Incomplete says so).
	Sessions func(ctx context.Context) (sessions any, incomplete error)
	// Kill ends the live session id of node, wherever it runs; node "" names the only session
	// with that id the daemon can see. It returns the session, for the audit log, and whether
	// it is known to have ended (a session of another node: whether that node confirmed
	// within a few seconds). An unknown session is an error matching ErrNoSuchSession, an id
	// several nodes have one under matching ErrAmbiguousSession.
	Kill func(ctx context.Context, node string, id uint64) (KillResult, error)

	mu     sync.Mutex
	srv    *http.Server
	closed bool
}

// UserInfo is the public state of one user. It never holds the secret.
type UserInfo struct {
	Name             string      `json:"name"`
	State            store.State `json:"state"`
	CreatedAt        time.Time   `json:"created_at,omitzero"`
	PendingSince     time.Time   `json:"pending_since,omitzero"`
	PendingExpiresAt time.Time   `json:"pending_expires_at,omitzero"`
	EnrolledAt       time.Time   `json:"enrolled_at,omitzero"`
	LastLogin        time.Time   `json:"last_login,omitzero"`
	// RecoveryCodesLeft counts the recovery codes not used yet.
	RecoveryCodesLeft int `json:"recovery_codes_left"`
	// LockedUntil is when the last of the user's rate-limit lockouts ends; zero (left out) when
	// there is none or the daemon does not say.
	LockedUntil time.Time `json:"locked_until,omitzero"`
	// Locks are the user's lockouts and failure counts, outside and trusted (see LockInfo).
	Locks []LockInfo `json:"locks,omitempty"`
	// ReplacePendingSince is when a replacement of the active device began that is not
	// confirmed yet, ReplaceExpiresAt when it expires; zero (left out) when there is none.
	ReplacePendingSince time.Time `json:"replace_pending_since,omitzero"`
	ReplaceExpiresAt    time.Time `json:"replace_expires_at,omitzero"`
	// DriftSteps is how many 30 s steps off the user's phone clock was last seen (positive:
	// ahead), DriftAt when, and ClockDrift the same for people ("codes match 3 min ahead"); all
	// left out when nothing was seen since the last good code. They answer "my codes stopped
	// working" in one look.
	DriftSteps int       `json:"drift_steps,omitempty"`
	DriftAt    time.Time `json:"drift_at,omitzero"`
	ClockDrift string    `json:"clock_drift,omitempty"`
	// Keys are the user's registered SSH keys (public keys only), Remembered the key and
	// network pairs that skip the code until a time (keys.remember).
	Keys       []store.Key        `json:"keys,omitempty"`
	Remembered []store.Remembered `json:"remembered,omitempty"`
	// Damaged, in a list of users, says why the record stored under Name cannot be read (State
	// is then StateDamaged and nothing else is set): `admin reset` removes it.
	Damaged string `json:"damaged,omitempty"`
}

// UserInfoOf is the public state of u, whose pending link expires confirmWithin after it began
// (0 = enroll.DefaultConfirmWithin). Commands working on the database directly use it to show
// what the daemon would.
func UserInfoOf(u store.User, confirmWithin time.Duration) UserInfo {
	if confirmWithin <= 0 {
		confirmWithin = enroll.DefaultConfirmWithin
	}
	info := UserInfo{
		Name:              u.Name,
		State:             u.State,
		CreatedAt:         u.CreatedAt,
		EnrolledAt:        u.EnrolledAt,
		LastLogin:         u.LastLogin,
		RecoveryCodesLeft: len(u.Recovery),
		DriftSteps:        u.DriftSteps,
		DriftAt:           u.DriftAt,
		Keys:              u.Keys,
		Remembered:        u.Remembered,
	}
	if u.State == store.StatePending {
		info.PendingSince = u.PendingSince
		info.PendingExpiresAt = u.PendingSince.Add(confirmWithin)
	}
	if u.State == store.StateActive && !u.NextSince.IsZero() {
		info.ReplacePendingSince = u.NextSince
		info.ReplaceExpiresAt = u.NextSince.Add(confirmWithin)
	}
	if !u.DriftAt.IsZero() {
		info.DriftSteps, info.DriftAt, info.ClockDrift = u.DriftSteps, u.DriftAt, totp.DriftText(u.DriftSteps)
	}
	return info
}

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// Reason refines a bad_code answer, so that the client can give back the error the Service
	// returned: reasonClock (with ClockSteps) or reasonCurrentDevice.
	Reason     string `json:"reason,omitempty"`
	ClockSteps int    `json:"clock_steps,omitempty"`
}

// Reasons of a bad_code answer.
const (
	reasonClock         = "clock"          // an *enroll.ClockError
	reasonCurrentDevice = "current_device" // enroll.ErrCurrentDeviceCode
)

type beginRequest struct {
	User string `json:"user"`
}

// beginResponse is the link's one showing and its binding: the calling process keeps the
// binding to confirm the link, and nobody else can.
type beginResponse struct {
	enroll.Link
	Binding enroll.Binding `json:"binding"`
}

type confirmRequest struct {
	User    string         `json:"user"`
	Binding enroll.Binding `json:"binding"`
	Code    string         `json:"code"`
}

type confirmResponse struct {
	RecoveryCodes []string `json:"recovery_codes"`
}

// cancelRequest cancels the replacement that the binding's holder began.
type cancelRequest struct {
	User    string         `json:"user"`
	Binding enroll.Binding `json:"binding"`
}

type cancelResponse struct {
	User      string `json:"user"`
	Cancelled bool   `json:"cancelled"`
}

// store is s.Store, or the enrollment service's store when Store is left nil.
func (s *Server) store() store.Store {
	if s.Store != nil {
		return s.Store
	}
	return s.Enroll.Store
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Serve answers admin requests on ln until Shutdown. Like http.Server's, it always returns a
// non-nil error: http.ErrServerClosed after Shutdown (also when called after it), the
// listener's error otherwise; it closes ln either way.
func (s *Server) Serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler(newAuthorizer(s.Groups, s.log())),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxBodyBytes,
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(s.log().Handler(), slog.LevelWarn),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.srv = srv
	s.mu.Unlock()
	return srv.Serve(ln)
}

// Shutdown stops accepting connections and waits for running requests until ctx ends. A Serve
// called after Shutdown returns at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// handler routes the API; every request is logged, and only callers authz allows get past it.
func (s *Server) handler(authz *authorizer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll/begin", s.handleBegin)
	mux.HandleFunc("POST /v1/enroll/confirm", s.handleConfirm)
	mux.HandleFunc("POST /v1/enroll/replace/begin", s.handleReplaceBegin)
	mux.HandleFunc("POST /v1/enroll/replace/confirm", s.handleReplaceConfirm)
	mux.HandleFunc("POST /v1/enroll/replace/cancel", s.handleReplaceCancel)
	mux.HandleFunc("GET /v1/users", s.handleUsers)
	mux.HandleFunc("GET /v1/users/{name}", s.handleUser)
	mux.HandleFunc("POST /v1/users/{name}/reset", s.handleReset)
	mux.HandleFunc("POST /v1/users/{name}/unlock", s.handleUnlock)
	mux.HandleFunc("POST /v1/addresses/{addr}/unlock", s.handleUnlockAddress)
	mux.HandleFunc("POST /v1/users/{name}/ticket", s.handleTicket)
	mux.HandleFunc("POST /v1/users/{name}/import", s.handleImport)
	mux.HandleFunc("GET /v1/users/{name}/keys", s.handleKeys)
	mux.HandleFunc("POST /v1/users/{name}/keys", s.handleAddKey)
	mux.HandleFunc("POST /v1/users/{name}/keys/revoke", s.handleRevokeKey)
	mux.HandleFunc("POST /v1/users/{name}/keys/import", s.handleImportKeys)
	mux.HandleFunc("GET /v1/audit", s.handleAudit)
	mux.HandleFunc("GET /v1/backup", s.handleBackup)
	mux.HandleFunc("POST /v1/restore", s.handleRestore)
	mux.HandleFunc("GET /v1/sessions", s.handleSessions)
	mux.HandleFunc("POST /v1/sessions/{id}/kill", s.handleKill)
	mux.HandleFunc("POST /v1/sessions/{node}/{id}/kill", s.handleKill)
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("no such admin endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s.logRequests(s.authorize(authz, mux))
}

// statusWriter remembers the status code for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (deadlines of the backup stream).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// logRequests logs every request with the caller's uid and pid and recovers from a panic in a
// handler, so that a bug answers 500 instead of dropping the connection without a word.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		attrs := []any{"method", r.Method, "path", r.URL.Path}
		if uid, ok := CallerUID(r.Context()); ok {
			attrs = append(attrs, "caller_uid", uid)
		}
		if pid, ok := callerPID(r.Context()); ok {
			attrs = append(attrs, "caller_pid", pid)
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log().ErrorContext(r.Context(), "admin request panicked", append(attrs, "panic", fmt.Sprint(p))...)
				if sw.status == 0 {
					writeError(sw, http.StatusInternalServerError, codeInternal, internalMessage)
				}
			}
			s.log().InfoContext(r.Context(), "admin request",
				append(attrs, "status", sw.status, "duration", time.Since(start))...)
		}()
		next.ServeHTTP(sw, r)
	})
}

func (s *Server) handleBegin(w http.ResponseWriter, r *http.Request) {
	var req beginRequest
	if !s.decode(w, r, &req) {
		return
	}
	link, binding, err := s.Enroll.Begin(s.actorContext(r), req.User)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	// This response is the one showing of the secret: nothing may keep a copy.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, beginResponse{Link: link, Binding: binding})
}

func (s *Server) handleConfirm(w http.ResponseWriter, r *http.Request) {
	var req confirmRequest
	if !s.decode(w, r, &req) {
		return
	}
	codes, err := s.Enroll.Confirm(s.actorContext(r), req.User, req.Binding, req.Code)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	// The one showing of the recovery codes.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, confirmResponse{RecoveryCodes: codes})
}

// handleReplaceBegin starts replacing an active user's device (gatekeeper enroll --replace):
// like handleBegin, the answer is the one showing of the new secret and its binding.
func (s *Server) handleReplaceBegin(w http.ResponseWriter, r *http.Request) {
	var req beginRequest
	if !s.decode(w, r, &req) {
		return
	}
	link, binding, err := s.Enroll.BeginReplace(s.actorContext(r), req.User)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, beginResponse{Link: link, Binding: binding})
}

func (s *Server) handleReplaceConfirm(w http.ResponseWriter, r *http.Request) {
	var req confirmRequest
	if !s.decode(w, r, &req) {
		return
	}
	codes, err := s.Enroll.ConfirmReplace(s.actorContext(r), req.User, req.Binding, req.Code)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, confirmResponse{RecoveryCodes: codes})
}

func (s *Server) handleReplaceCancel(w http.ResponseWriter, r *http.Request) {
	var req cancelRequest
	if !s.decode(w, r, &req) {
		return
	}
	if err := s.Enroll.CancelReplace(s.actorContext(r), req.User, req.Binding); err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cancelResponse{User: req.User, Cancelled: true})
}

func (s *Server) handleUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := store.CheckName(name); err != nil {
		s.writeErr(w, r, err)
		return
	}
	u, err := s.store().Get(name)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.userInfo(u))
}

// decode reads r's JSON body into v: at most maxBodyBytes, no unknown fields, exactly one
// value. On failure it answers the client and returns false.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return s.decodeLimit(w, r, v, maxBodyBytes)
}

// decodeLimit is decode with another limit than maxBodyBytes (a key import carries a file).
func (s *Server) decodeLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&struct{}{}) != io.EOF {
			err = errors.New("unexpected data after the JSON object")
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, codeBadRequest,
			fmt.Sprintf("request body too large (limit %d bytes)", tooBig.Limit))
		return false
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("empty body")
	}
	writeError(w, http.StatusBadRequest, codeBadRequest, "bad request: "+err.Error())
	return false
}

// writeErr maps err to a status and code. Errors the caller can act on carry their message;
// anything else is logged and the client only learns that something went wrong inside.
func (s *Server) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var status int
	var code string
	switch {
	case errors.Is(err, enroll.ErrBadCode):
		// Before the others: the reason lets the client rebuild a clock error.
		body := errorBody{Error: err.Error(), Code: codeBadCode}
		if ce, ok := errors.AsType[*enroll.ClockError](err); ok {
			body.Reason, body.ClockSteps = reasonClock, ce.Steps
		} else if errors.Is(err, enroll.ErrCurrentDeviceCode) {
			body.Reason = reasonCurrentDevice
		}
		writeJSON(w, http.StatusUnprocessableEntity, body)
		return
	case errors.Is(err, enroll.ErrAlreadyLinked):
		status, code = http.StatusConflict, codeAlreadyLinked
	case errors.Is(err, enroll.ErrNotLinked):
		status, code = http.StatusConflict, codeNotLinked
	case errors.Is(err, enroll.ErrPending):
		status, code = http.StatusConflict, codePending
	case errors.Is(err, enroll.ErrNoPending):
		status, code = http.StatusConflict, codeNoPending
	case errors.Is(err, enroll.ErrExpired):
		status, code = http.StatusGone, codeExpired
	case errors.Is(err, enroll.ErrVoided):
		status, code = http.StatusGone, codeVoided
	case errors.Is(err, enroll.ErrStartedElsewhere):
		status, code = http.StatusForbidden, codeElsewhere
	case errors.Is(err, enroll.ErrBadKey):
		status, code = http.StatusBadRequest, codeBadKey
	case errors.Is(err, enroll.ErrKeyExists):
		status, code = http.StatusConflict, codeKeyExists
	case errors.Is(err, enroll.ErrNoKey):
		status, code = http.StatusNotFound, codeNoKey
	case errors.Is(err, enroll.ErrTooManyKeys):
		status, code = http.StatusConflict, codeTooManyKeys
	case errors.Is(err, store.ErrBadName):
		status, code = http.StatusBadRequest, codeBadName
	case errors.Is(err, ErrNoSuchUser):
		status, code = http.StatusNotFound, codeUnknownUser
	case errors.Is(err, ErrNoSuchSession):
		status, code = http.StatusNotFound, codeNoSession
	case errors.Is(err, ErrAmbiguousSession):
		status, code = http.StatusConflict, codeAmbiguous
	case errors.Is(err, store.ErrExists):
		status, code = http.StatusConflict, codeExists
	case errors.Is(err, ErrBadBackup):
		status, code = http.StatusBadRequest, codeBadBackup
	case errors.Is(err, store.ErrUnavailable):
		s.log().ErrorContext(r.Context(), "store unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		status, code = http.StatusServiceUnavailable, codeUnavailable
	case errors.Is(err, store.ErrNoSpace):
		// Said as such, not as an internal error: the admin can act on it. The file's path
		// stays in the log.
		s.log().ErrorContext(r.Context(), "database disk full", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInsufficientStorage, codeNoSpace, noSpaceMessage)
		return
	case errors.Is(err, ErrNotImplemented):
		status, code = http.StatusNotImplemented, codeNotImpl
	case errors.Is(err, store.ErrDamaged):
		// Not an internal error: the admin must act on it (a reset removes the record).
		s.log().ErrorContext(r.Context(), "damaged user record", "method", r.Method, "path", r.URL.Path, "err", err)
		status, code = http.StatusInternalServerError, codeDamaged
	default:
		s.log().ErrorContext(r.Context(), "admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, codeInternal, internalMessage)
		return
	}
	writeError(w, status, code, err.Error())
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the fixed types above are encoded; this cannot happen short of a bug.
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: internalMessage, Code: codeInternal})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
