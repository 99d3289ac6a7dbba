package gatekeeper

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gatekeeper/gatekeeper/store"
)

// SessionRegistry is the cluster's view of the live sessions, for a node that
// shares its store with others (package store/etcd implements it): each node
// registers its own sessions, lists everyone's, and asks the node that holds a
// session to end it. Without one (Options.Sessions nil: one node, the bbolt
// store) the Server sees its own sessions only, as it always did.
type SessionRegistry interface {
	// Register records a live session of this node, Unregister forgets it.
	// Neither may block on the cluster: they run on the login path, and must
	// keep working while the cluster is out of reach (the registry writes
	// them when it is back).
	Register(s store.LiveSession)
	Unregister(id uint64)
	// List returns the live sessions of every node, this one's included.
	List(ctx context.Context) ([]store.LiveSession, error)
	// RequestKill asks node to end its session id; RequestKillUser asks every
	// other node to end user's sessions.
	RequestKill(ctx context.Context, node string, id uint64) error
	RequestKillUser(ctx context.Context, user string) error
	// RequestKillKey asks every other node to end user's sessions that
	// logged in with the key of fingerprint fp.
	RequestKillKey(ctx context.Context, user, fp string) error
	// Kills delivers the requests other nodes address to this one.
	Kills() <-chan store.KillRequest
}

// oneNode is the registry of a node alone: there is nobody to tell.
type oneNode struct{}

func (oneNode) Register(store.LiveSession)                           {}
func (oneNode) Unregister(uint64)                                    {}
func (oneNode) List(context.Context) ([]store.LiveSession, error)    { return nil, nil }
func (oneNode) RequestKillUser(context.Context, string) error        { return nil }
func (oneNode) RequestKillKey(context.Context, string, string) error { return nil }
func (oneNode) Kills() <-chan store.KillRequest                      { return nil }
func (oneNode) RequestKill(_ context.Context, node string, _ uint64) error {
	return fmt.Errorf("no node %q: this gatekeeper runs alone", node)
}

var (
	// ErrNoSession is KillSession's error for a session that does not exist.
	ErrNoSession = errors.New("no such session")
	// ErrAmbiguousSession is KillSession's error for a bare id that several
	// nodes have a session under: the caller must name the node.
	ErrAmbiguousSession = errors.New("ambiguous session id")
)

// Bounds of the cluster-wide session operations.
const (
	// killWait is how long KillSession waits for another node to confirm
	// that the session it was asked to end is gone.
	killWait = 3 * time.Second
	// killPoll is how often it looks.
	killPoll = 100 * time.Millisecond
	// clusterTimeout bounds the registry calls of KillUser, which has no
	// context of its own.
	clusterTimeout = 5 * time.Second
)

// EndUserAlso adds what a request from another node to end a user's sessions
// (a reset or a replaced phone there) ends on this node besides the user's
// SSH sessions: the daemon adds its linking portal's and SSH linking's
// sessions, so that a reset on any node ends them on every node. Call it
// before Serve.
func (s *Server) EndUserAlso(enders ...func(user string) int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endAlso = append(s.endAlso, enders...)
}

// ClusterSessions lists the live sessions of every node, ordered by node and
// id: this node's from memory (with byte counts, ThisNode set), the others'
// from the registry. When the registry cannot be read, the list holds this
// node's sessions only and the error says what is missing.
func (s *Server) ClusterSessions(ctx context.Context) ([]SessionInfo, error) {
	out := s.Sessions()
	others, err := s.otherSessions(ctx)
	if err != nil {
		return out, fmt.Errorf("the sessions of the other nodes could not be read: %w", err)
	}
	out = append(out, others...)
	slices.SortStableFunc(out, func(a, b SessionInfo) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return cmpUint(a.ID, b.ID)
	})
	return out, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// otherSessions are the registry's sessions of the other nodes.
func (s *Server) otherSessions(ctx context.Context) ([]SessionInfo, error) {
	all, err := s.registry.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []SessionInfo
	for _, l := range all {
		if l.Node != s.node {
			out = append(out, SessionInfo{Node: l.Node, ID: l.ID, User: l.User, Remote: l.Remote, Trusted: l.Trusted, Start: l.Start, Key: l.Key})
		}
	}
	return out, nil
}

// KillSession ends the session id of node, wherever it runs: at once when it
// is this node's, otherwise by asking its node through the registry and
// waiting up to 3 s for it to be gone (ended false: it was asked but has not
// confirmed; a node that is down loses its sessions when its lease ends). An
// empty node names the only session with that id this node can see: its own
// or another node's; when several nodes have one, the error
// (ErrAmbiguousSession) names them. It returns the session it ended.
func (s *Server) KillSession(ctx context.Context, node string, id uint64) (sess SessionInfo, ended bool, err error) {
	if node == s.node {
		return s.killHere(id)
	}
	var found []SessionInfo
	if node == "" {
		if x := s.session(id); x != nil {
			found = append(found, x.info(s.node))
		}
	}
	others, err := s.otherSessions(ctx)
	if err != nil {
		if len(found) == 1 {
			// The others are out of reach, and so out of the admin's view too.
			return s.killHere(id)
		}
		return SessionInfo{}, false, fmt.Errorf("the sessions of the other nodes could not be read: %w", err)
	}
	for _, x := range others {
		if x.ID == id && (node == "" || x.Node == node) {
			found = append(found, x)
		}
	}
	switch {
	case len(found) == 0 && node == "":
		return SessionInfo{}, false, fmt.Errorf("%w: no live session has id %d", ErrNoSession, id)
	case len(found) == 0:
		return SessionInfo{}, false, fmt.Errorf("%w: no live session %s/%d", ErrNoSession, node, id)
	case len(found) > 1:
		var names []string
		for _, x := range found {
			names = append(names, fmt.Sprintf("%s/%d", x.Node, x.ID))
		}
		return SessionInfo{}, false, fmt.Errorf("%w: several nodes have a session %d (%s): name one as NODE/ID",
			ErrAmbiguousSession, id, strings.Join(names, ", "))
	}
	if found[0].ThisNode {
		return s.killHere(id)
	}
	target := found[0]
	if err := s.registry.RequestKill(ctx, target.Node, target.ID); err != nil {
		return target, false, fmt.Errorf("asking %s to end session %d: %w", target.Node, target.ID, err)
	}
	s.log.Info("asked another node to end a session", "node", target.Node, "session", target.ID, "user", target.User)
	return target, s.waitGone(ctx, target), nil
}

// killHere ends this node's session id.
func (s *Server) killHere(id uint64) (SessionInfo, bool, error) {
	x := s.session(id)
	if x == nil {
		return SessionInfo{}, false, fmt.Errorf("%w: no live session has id %d", ErrNoSession, id)
	}
	info := x.info(s.node)
	if _, _, ok := s.Kill(id); !ok {
		return SessionInfo{}, false, fmt.Errorf("%w: no live session has id %d", ErrNoSession, id)
	}
	return info, true, nil
}

// waitGone reports whether target left the registry within killWait.
func (s *Server) waitGone(ctx context.Context, target SessionInfo) bool {
	ctx, cancel := context.WithTimeout(ctx, killWait)
	defer cancel()
	t := time.NewTicker(killPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		others, err := s.otherSessions(ctx)
		if err != nil {
			continue
		}
		if !slices.ContainsFunc(others, func(x SessionInfo) bool { return x.Node == target.Node && x.ID == target.ID }) {
			return true
		}
	}
}

// killUserElsewhere asks the other nodes to end user's sessions and returns
// how many the registry listed for them. The request goes out even when none
// is listed: logins of user being decided there are refused too, and the
// other nodes' linking sessions end (see EndUserAlso).
func (s *Server) killUserElsewhere(user string) int {
	if _, alone := s.registry.(oneNode); alone {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	n := 0
	if others, err := s.otherSessions(ctx); err != nil {
		s.log.Warn("the sessions of the other nodes could not be read", "user", user, "err", err)
	} else {
		for _, x := range others {
			if x.User == user {
				n++
			}
		}
	}
	if err := s.registry.RequestKillUser(ctx, user); err != nil {
		s.log.Error("the other nodes could not be asked to end the user's sessions", "user", user, "err", err)
	}
	return n
}

// killLoop carries out the kill requests of other nodes until stopReporting.
// It is started by New.
func (s *Server) killLoop(reqs <-chan store.KillRequest) {
	defer close(s.killDone)
	for {
		select {
		case <-s.reportStop:
			return
		case r, ok := <-reqs:
			if !ok {
				return
			}
			s.handleKillRequest(r)
		}
	}
}

// handleKillRequest ends what another node asked this one to end.
func (s *Server) handleKillRequest(r store.KillRequest) {
	if r.User != "" && r.Key != "" {
		n := s.killLocalKey(r.User, r.Key)
		s.log.Info("sessions of a revoked key ended at another node's request", "user", r.User, "fingerprint", r.Key, "by", r.By, "sessions", n)
		return
	}
	if r.User != "" {
		n := s.killLocalUser(r.User)
		s.mu.Lock()
		also := s.endAlso
		s.mu.Unlock()
		for _, end := range also {
			n += end(r.User)
		}
		s.log.Info("user's sessions ended at another node's request", "user", r.User, "by", r.By, "sessions", n)
		return
	}
	if user, _, ok := s.Kill(r.ID); ok {
		s.log.Info("session ended at another node's request", "session", r.ID, "user", user, "by", r.By)
	}
}

// KillKey ends every live session of user that logged in with the key of
// fingerprint fp, on this node and (asking them, without waiting) on the
// others, and returns how many there were: a revoked key must stop working
// at once, like a revoked token ends the transfers running on it.
func (s *Server) KillKey(user, fp string) int {
	n := s.killLocalKey(user, fp)
	if _, alone := s.registry.(oneNode); alone {
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if others, err := s.otherSessions(ctx); err == nil {
		for _, x := range others {
			if x.User == user && x.Key == fp {
				n++
			}
		}
	}
	if err := s.registry.RequestKillKey(ctx, user, fp); err != nil {
		s.log.Error("the other nodes could not be asked to end the sessions of a revoked key", "user", user, "err", err)
	}
	return n
}

// killLocalKey is KillKey on this node only. Logins with the key being
// decided at that moment read the key again before they are let in (see
// addSession).
func (s *Server) killLocalKey(user, fp string) int {
	s.mu.Lock()
	s.keyRevokes[user]++
	var victims []*Session
	for _, x := range s.sessions {
		if x.User == user && x.KeyFP == fp {
			victims = append(victims, x)
		}
	}
	s.mu.Unlock()
	for _, x := range victims {
		x.conn.Close()
		s.log.Info("session ended: its key was revoked", "session", x.ID, "user", x.User, "fingerprint", fp)
	}
	return len(victims)
}
