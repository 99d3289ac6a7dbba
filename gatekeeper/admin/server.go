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
	"sync"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// Error codes of the admin API's JSON error body {"error": "...", "code": "..."}.
const (
	codeAlreadyLinked = "already_linked"
	codePending       = "pending"
	codeNoPending     = "no_pending"
	codeExpired       = "expired"
	codeBadCode       = "bad_code"
	codeBadName       = "bad_name"
	codeBadRequest    = "bad_request"
	codeNotFound      = "not_found"
	codeInternal      = "internal"
)

// maxBodyBytes bounds a request body; the API's requests are a few dozen bytes.
const maxBodyBytes = 64 << 10

// internalMessage is all a client learns about an internal error; the details go to the log.
const internalMessage = "internal error, see the daemon's log"

// Timeouts of the HTTP server. The clients are local commands, so these only guard against a
// stuck or hostile peer holding a connection.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = time.Minute
)

// Server serves the admin API. Enroll must be set; Store defaults to Enroll.Store and Log to a
// discarding logger.
type Server struct {
	Enroll *enroll.Service
	Store  *store.Store
	Log    *slog.Logger

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
}

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

type beginRequest struct {
	User string `json:"user"`
}

type confirmRequest struct {
	User string `json:"user"`
	Code string `json:"code"`
}

// store is s.Store, or the enrollment service's store when Store is left nil.
func (s *Server) store() *store.Store {
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

// Serve answers admin requests on ln until Shutdown. It returns nil after Shutdown and the
// listener's error otherwise; it closes ln either way.
func (s *Server) Serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler(),
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
		return nil
	}
	s.srv = srv
	s.mu.Unlock()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
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

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll/begin", s.handleBegin)
	mux.HandleFunc("POST /v1/enroll/confirm", s.handleConfirm)
	mux.HandleFunc("GET /v1/users/{name}", s.handleUser)
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("no such admin endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s.logRequests(mux)
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
	link, err := s.Enroll.Begin(r.Context(), req.User)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	// This response is the one showing of the secret: nothing may keep a copy.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, link)
}

func (s *Server) handleConfirm(w http.ResponseWriter, r *http.Request) {
	var req confirmRequest
	if !s.decode(w, r, &req) {
		return
	}
	if err := s.Enroll.Confirm(r.Context(), req.User, req.Code); err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
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
	info := UserInfo{
		Name:         u.Name,
		State:        u.State,
		CreatedAt:    u.CreatedAt,
		PendingSince: u.PendingSince,
		EnrolledAt:   u.EnrolledAt,
		LastLogin:    u.LastLogin,
	}
	if u.State == store.StatePending {
		within := s.Enroll.ConfirmWithin
		if within <= 0 {
			within = enroll.DefaultConfirmWithin
		}
		info.PendingExpiresAt = u.PendingSince.Add(within)
	} else {
		info.PendingSince = time.Time{}
	}
	writeJSON(w, http.StatusOK, info)
}

// decode reads r's JSON body into v: at most maxBodyBytes, no unknown fields, exactly one
// value. On failure it answers the client and returns false.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
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
	case errors.Is(err, enroll.ErrAlreadyLinked):
		status, code = http.StatusConflict, codeAlreadyLinked
	case errors.Is(err, enroll.ErrPending):
		status, code = http.StatusConflict, codePending
	case errors.Is(err, enroll.ErrNoPending):
		status, code = http.StatusConflict, codeNoPending
	case errors.Is(err, enroll.ErrExpired):
		status, code = http.StatusGone, codeExpired
	case errors.Is(err, enroll.ErrBadCode):
		status, code = http.StatusUnprocessableEntity, codeBadCode
	case errors.Is(err, store.ErrBadName):
		status, code = http.StatusBadRequest, codeBadName
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
