package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// Limits of GET /v1/audit.
const (
	// DefaultAuditLimit is how many of the newest events /v1/audit returns without a limit.
	DefaultAuditLimit = 1000
	// MaxAuditLimit is the largest limit /v1/audit accepts.
	MaxAuditLimit = 100000
)

// ResetResult is the answer to a reset.
type ResetResult struct {
	User string `json:"user"`
	// HadRecord says whether a device link (active or pending) was removed.
	HadRecord bool `json:"had_record"`
	// SessionsEnded counts the live sessions that were ended.
	SessionsEnded int `json:"sessions_ended"`
	// KeysKept counts the user's SSH keys that stay registered (a reset without Keys);
	// KeysRemoved those removed with it (ResetOptions.Keys).
	KeysKept    int `json:"keys_kept,omitempty"`
	KeysRemoved int `json:"keys_removed,omitempty"`
	// RememberedForgotten counts the remembered devices (key and network pairs that skipped
	// the code) that were forgotten: a reset forgets them all.
	RememberedForgotten int `json:"remembered_forgotten,omitempty"`
	// Damaged says that the record failed its integrity check and was removed whole: any SSH
	// keys it held are gone too.
	Damaged bool `json:"damaged,omitempty"`
}

// ResetOptions are the choices of a reset.
type ResetOptions struct {
	// Keys removes the user's registered SSH keys too; without it they are kept.
	Keys bool
}

// ResetRecord forgets name's device in st: the secret, recovery codes, a pending link or
// replacement, the clock drift and every remembered device; the last used time step stays, so
// that no old code comes back. The SSH keys stay unless opts.Keys. A record that fails its
// integrity check (store.ErrDamaged) cannot be changed, so it is deleted whole, keys and all
// (res.Damaged). existed says whether name had a record at all. The daemon's endpoint and the
// commands working on the database directly both use it; ending sessions and the audit log are
// the caller's.
func ResetRecord(st store.Store, name string, opts ResetOptions) (res ResetResult, existed bool, err error) {
	if err := store.CheckName(name); err != nil {
		// No user has this name, but a record put under it by hand (admin list names it as
		// damaged) must be removable: Delete removes one if there is one, else refuses the name.
		if existed, err = st.Delete(name); err != nil {
			return ResetResult{}, false, err
		}
		return ResetResult{User: name, HadRecord: existed, Damaged: existed}, existed, nil
	}
	err = st.Update(name, func(u *store.User) error {
		// fn may run more than once (etcd): everything it reports starts afresh.
		res = ResetResult{User: name}
		existed = u.State != store.StateNone || len(u.Secret) > 0 || len(u.Keys) > 0 || len(u.Remembered) > 0
		res.HadRecord = u.State != store.StateNone
		res.RememberedForgotten = len(u.Remembered)
		if opts.Keys {
			res.KeysRemoved = len(u.Keys)
			u.Keys = nil
		} else {
			res.KeysKept = len(u.Keys)
		}
		u.State, u.Secret = store.StateNone, nil
		u.Recovery, u.RecoverySalt = nil, nil
		u.PendingSince, u.PendingBinding, u.ConfirmTries = time.Time{}, nil, 0
		u.NextSecret, u.NextSince = nil, time.Time{}
		u.DriftSteps, u.DriftAt = 0, time.Time{}
		u.EnrolledAt = time.Time{}
		enroll.ForgetRemembered(u)
		return nil
	})
	if errors.Is(err, store.ErrDamaged) {
		// What it held cannot be read, so nothing of it can be kept.
		existed, err = st.Delete(name)
		res = ResetResult{User: name, HadRecord: existed, Damaged: existed}
	}
	if err != nil {
		return ResetResult{}, false, err
	}
	return res, existed, nil
}

// changed reports whether the reset res changed anything in the record.
func (res ResetResult) changed() bool {
	return res.HadRecord || res.Damaged || res.KeysRemoved > 0 || res.RememberedForgotten > 0
}

// ResetDetail is the audit log's detail of reset res, up to the live sessions: what was removed
// and what became of the SSH keys.
func ResetDetail(res ResetResult, opts ResetOptions) string {
	d := "device link and recovery codes removed"
	if !res.HadRecord {
		d = "no device was linked"
	}
	switch {
	case res.Damaged:
		d += "; the record was damaged, so it was removed whole with any SSH keys it held"
	case opts.Keys || res.KeysRemoved > 0:
		d += "; " + plural(res.KeysRemoved, "SSH key") + " removed"
	case res.KeysKept > 0:
		d += "; " + plural(res.KeysKept, "SSH key") + " kept"
	}
	if res.RememberedForgotten > 0 {
		d += "; " + plural(res.RememberedForgotten, "remembered device") + " forgotten"
	}
	return d
}

// NothingToReset is the error (matching ErrNoSuchUser) of a reset that found nothing to do: res
// changed nothing and ended no live session; nil otherwise. also follows "has no linked device"
// in the message (" and no live session").
func NothingToReset(res ResetResult, also string) error {
	if res.changed() || res.SessionsEnded > 0 {
		return nil
	}
	keys := ""
	if res.KeysKept > 0 {
		keys = " (" + plural(res.KeysKept, "SSH key") + " kept; --keys removes them)"
	}
	return fmt.Errorf("%w: %s has no linked device%s, nothing to reset%s", ErrNoSuchUser, res.User, also, keys)
}

type ticketResponse struct {
	User      string    `json:"user"`
	Ticket    string    `json:"ticket"`
	ExpiresAt time.Time `json:"expires_at"`
}

// KillResult is the answer to a kill: the session (its node, id, user and client address) and
// whether it is known to have ended; a session of another node that has not confirmed within a
// few seconds is not (that node was asked; if it is down, its sessions vanish from the
// registry when its lease ends).
type KillResult struct {
	Node   string `json:"node"`
	ID     uint64 `json:"id"`
	User   string `json:"user"`
	Remote string `json:"remote,omitempty"`
	Ended  bool   `json:"ended"`
}

// actorOf names the caller for the audit log: "uid N" from SO_PEERCRED.
func actorOf(r *http.Request) string {
	if uid, ok := CallerUID(r.Context()); ok {
		return fmt.Sprintf("uid %d", uid)
	}
	return "admin socket (uid unknown)"
}

// actorContext is r's context carrying the caller as the enroll.Service's actor, and the console
// as the door: the admin socket is only reachable on this machine.
func (s *Server) actorContext(r *http.Request) context.Context {
	return enroll.WithDoor(enroll.WithActor(r.Context(), actorOf(r)), store.DoorConsole)
}

func (s *Server) now() time.Time {
	if s.Enroll != nil && s.Enroll.Now != nil {
		return s.Enroll.Now()
	}
	return time.Now()
}

// audit writes an admin action to the audit log, through the console door unless e names
// another. The action has happened, so a failure is logged, not reported to the caller as if
// the action had failed.
func (s *Server) audit(r *http.Request, e store.Event) {
	if e.Door == "" {
		e.Door = store.DoorConsole
	}
	if err := s.store().Append(e); err != nil {
		s.log().ErrorContext(r.Context(), "audit log write failed", "err", err, "kind", e.Kind, "user", e.User)
	}
}

// userInfo is u's public state plus the front door's lockout, when known.
func (s *Server) userInfo(u store.User) UserInfo {
	info := UserInfoOf(u, s.Enroll.ConfirmWithin)
	if s.Locks != nil {
		info.Locks = s.Locks(u.Name)
		for _, lk := range info.Locks {
			if lk.Until.After(s.now()) && lk.Until.After(info.LockedUntil) {
				info.LockedUntil = lk.Until
			}
		}
	}
	return info
}

// pathUser is the {name} of r's path, or "" after answering a bad name.
func (s *Server) pathUser(w http.ResponseWriter, r *http.Request) string {
	name := r.PathValue("name")
	if err := store.CheckName(name); err != nil {
		s.writeErr(w, r, err)
		return ""
	}
	return name
}

// notImplemented answers for a nil hook.
func (s *Server) notImplemented(w http.ResponseWriter, r *http.Request, what string) {
	s.writeErr(w, r, fmt.Errorf("%w: the daemon was started without %s", ErrNotImplemented, what))
}

func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) {
	infos, err := ListInfos(s.store(), s.userInfo)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	for _, in := range infos {
		if in.State == StateDamaged {
			s.log().ErrorContext(r.Context(), "damaged user record", "user", in.Name, "err", in.Damaged)
		}
	}
	writeJSON(w, http.StatusOK, infos)
}

// StateDamaged is the state a list of users gives a record that cannot be read (UserInfo.Damaged
// says why): it failed its integrity check, or is stored under a name gatekeeper never writes.
// `admin reset` removes it; the user then links again.
const StateDamaged store.State = "damaged"

// ListInfos lists st's users as info describes them, sorted by name. A damaged record does not
// hide the others: it is listed with StateDamaged and the reason.
func ListInfos(st store.Store, info func(store.User) UserInfo) ([]UserInfo, error) {
	users, err := st.List()
	var damaged *store.DamagedError
	if err != nil && !errors.As(err, &damaged) {
		return nil, err
	}
	infos := make([]UserInfo, 0, len(users))
	for _, u := range users {
		infos = append(infos, info(u))
	}
	if damaged != nil {
		for _, d := range damaged.Records {
			infos = append(infos, UserInfo{Name: d.Name, State: StateDamaged, Damaged: d.Err.Error()})
		}
		slices.SortStableFunc(infos, func(a, b UserInfo) int { return strings.Compare(a.Name, b.Name) })
	}
	return infos, nil
}

// handleReset forgets the user's device link and recovery codes (even a damaged record) and ends
// their live sessions: a lost phone must stop working at once. The user's SSH keys stay unless
// the query says keys=true. POST /v1/users/{name}/reset[?keys=true].
func (s *Server) handleReset(w http.ResponseWriter, r *http.Request) {
	// Not pathUser: a record stored under an invalid name (by hand) is removed too, if there is
	// one (ResetRecord); nobody can log in under such a name, so it has no sessions to end.
	name := r.PathValue("name")
	valid := store.CheckName(name) == nil
	var opts ResetOptions
	if v := r.URL.Query().Get("keys"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("keys %q: want true or false", v))
			return
		}
		opts.Keys = b
	}
	if s.OnReset == nil {
		s.notImplemented(w, r, "a way to end live sessions; nothing was reset")
		return
	}
	res, _, err := ResetRecord(s.store(), name, opts)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	if valid {
		res.SessionsEnded = s.OnReset(name)
	}
	if err := NothingToReset(res, " and no live session"); err != nil {
		s.writeErr(w, r, err)
		return
	}
	detail := ResetDetail(res, opts) + "; " + plural(res.SessionsEnded, "live session") + " ended"
	s.audit(r, store.Event{Kind: store.EventReset, User: name, Actor: actorOf(r), Detail: detail})
	s.log().InfoContext(r.Context(), "user reset", "user", name, "actor", actorOf(r), "had_record", res.HadRecord,
		"keys_kept", res.KeysKept, "keys_removed", res.KeysRemoved, "damaged", res.Damaged, "sessions_ended", res.SessionsEnded)
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleTicket(w http.ResponseWriter, r *http.Request) {
	name := s.pathUser(w, r)
	if name == "" {
		return
	}
	token, expires, err := s.Enroll.Ticket(r.Context(), name, actorOf(r))
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	// The one showing of the ticket.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, ticketResponse{User: name, Ticket: token, ExpiresAt: expires})
}

// handleAudit answers GET /v1/audit?user=U&since=S&limit=N: the newest N (default
// DefaultAuditLimit) events, oldest first, of user U (default all) at or after S (an RFC 3339
// time, a date, or a duration back from now such as 90m, 24h or 7d).
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	q := store.EventQuery{Limit: DefaultAuditLimit}
	v := r.URL.Query()
	if u := v.Get("user"); u != "" {
		if err := store.CheckName(u); err != nil {
			s.writeErr(w, r, err)
			return
		}
		q.User = u
	}
	if since := v.Get("since"); since != "" {
		t, err := ParseSince(since, s.now())
		if err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
			return
		}
		q.Since = t
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxAuditLimit {
			writeError(w, http.StatusBadRequest, codeBadRequest,
				fmt.Sprintf("limit %q: want a number from 1 to %d", l, MaxAuditLimit))
			return
		}
		q.Limit = n
	}
	events, err := s.store().Events(q)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, events)
}

// ParseSince reads a point in time for an audit query: an RFC 3339 time
// (2026-11-23T10:00:00Z), a date (2026-11-23, local midnight), or a duration back from now:
// Go's form (90m, 36h) or whole days (7d).
func ParseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, v, time.Local); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 && n <= 100*365 {
			return now.AddDate(0, 0, -n), nil
		}
	} else if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("since %q: want a time (2026-11-23T10:00:00Z), a date (2026-11-23) or a duration back from now (90m, 24h, 7d)", v)
}

func (s *Server) handleSessions(w http.ResponseWriter, r *http.Request) {
	if s.Sessions == nil {
		s.notImplemented(w, r, "session tracking")
		return
	}
	sessions, incomplete := s.Sessions(r.Context())
	b, err := json.Marshal(sessions)
	if err != nil {
		s.writeErr(w, r, fmt.Errorf("encode sessions: %w", err))
		return
	}
	if incomplete != nil {
		s.log().WarnContext(r.Context(), "session list incomplete", "err", incomplete)
		w.Header().Set(incompleteHeader, headerText(incomplete.Error()))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	w.Write(append(b, '\n'))
}

// incompleteHeader carries, in an answer to GET /v1/sessions, what part of the cluster could not
// be read.
const incompleteHeader = "Gatekeeper-Incomplete"

// headerText is s fit for a header value: printable ASCII, at most 1 KiB.
func headerText(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '?'
		}
	}
	if len(b) > 1024 {
		b = b[:1024]
	}
	return string(b)
}

// handleKill ends a live session: POST /v1/sessions/ID/kill names it by its id alone (the only
// session with that id the daemon can see), POST /v1/sessions/NODE/ID/kill with its node.
func (s *Server) handleKill(w http.ResponseWriter, r *http.Request) {
	node, raw := r.PathValue("node"), r.PathValue("id")
	id, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("session id %q: want a number", raw))
		return
	}
	if s.Kill == nil {
		s.notImplemented(w, r, "session tracking")
		return
	}
	res, err := s.Kill(r.Context(), node, id)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	detail := fmt.Sprintf("session %d", res.ID)
	if res.Node != "" {
		detail = fmt.Sprintf("session %s/%d", res.Node, res.ID)
	}
	if !res.Ended {
		detail += fmt.Sprintf(" (%s was asked to end it and has not confirmed)", res.Node)
	}
	s.audit(r, store.Event{Kind: store.EventSessionKilled, User: res.User, Remote: res.Remote, Actor: actorOf(r), Detail: detail})
	s.log().InfoContext(r.Context(), "session killed", "node", res.Node, "session", res.ID, "user", res.User,
		"ended", res.Ended, "actor", actorOf(r))
	writeJSON(w, http.StatusOK, res)
}
