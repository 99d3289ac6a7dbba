package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"gatekeeper/gatekeeper/store"
)

// LockInfo is one rate-limit counter of the front door that holds something: a lockout in
// force, or failures counted towards one.
type LockInfo struct {
	// Scope is what the lock applies to: "user" (logins from outside the trusted networks, all
	// sources together), "trusted_user" (logins from the trusted networks), "trusted_code"
	// (codes typed at the linking portal or SSH listener from the trusted networks), "address"
	// (an outside address, IPv6 /64), "network" (an outside /24 or /48), "trusted_address".
	Scope string `json:"scope"`
	// Name is the user, address or network.
	Name string `json:"name"`
	// Until is when the lockout ends; zero (left out) when only failures are counted.
	Until time.Time `json:"until,omitzero"`
	// Level is the number of consecutive lockouts: the next lasts twice as long, up to
	// rate_limit.max_lockout.
	Level int `json:"level"`
	// Failures are the failures counted now towards the next lockout.
	Failures int `json:"failures"`
	// Refused is how many logins the lockout has turned away so far (they are audited
	// together, when it ends or is cleared).
	Refused int `json:"refused"`
}

// String is the lock for people: "user alice: locked until 10:05:00 (level 2)".
func (l LockInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", l.Scope, l.Name)
	if !l.Until.IsZero() {
		fmt.Fprintf(&b, "locked until %s (level %d)", l.Until.Local().Format(time.DateTime), l.Level)
	} else {
		fmt.Fprintf(&b, "not locked (level %d)", l.Level)
	}
	if l.Failures > 0 {
		b.WriteString(", " + plural(l.Failures, "failure") + " counted")
	}
	if l.Refused > 0 {
		b.WriteString(", " + plural(l.Refused, "login") + " refused")
	}
	return b.String()
}

// UnlockResult is what an unlock cleared.
type UnlockResult struct {
	// User or Address is what was unlocked.
	User    string `json:"user,omitempty"`
	Address string `json:"address,omitempty"`
	// Cleared are the locks and failure counts that were in force.
	Cleared []LockInfo `json:"cleared"`
}

func (s *Server) handleUnlock(w http.ResponseWriter, r *http.Request) {
	name := s.pathUser(w, r)
	if name == "" {
		return
	}
	if s.OnUnlock == nil {
		s.notImplemented(w, r, "rate limiting")
		return
	}
	cleared, err := s.OnUnlock(name)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	res := UnlockResult{User: name, Cleared: nonNilLocks(cleared)}
	s.audit(r, store.Event{Kind: store.EventUnlock, User: name, Actor: actorOf(r), Detail: clearedDetail(res.Cleared)})
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleUnlockAddress(w http.ResponseWriter, r *http.Request) {
	addr, err := netip.ParseAddr(r.PathValue("addr"))
	if err != nil || addr.Zone() != "" {
		writeError(w, http.StatusBadRequest, "bad_address", fmt.Sprintf("%q is not an IP address", r.PathValue("addr")))
		return
	}
	if s.OnUnlockAddress == nil {
		s.notImplemented(w, r, "rate limiting")
		return
	}
	addr = addr.Unmap()
	cleared, err := s.OnUnlockAddress(addr)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	res := UnlockResult{Address: addr.String(), Cleared: nonNilLocks(cleared)}
	s.audit(r, store.Event{Kind: store.EventUnlock, Remote: addr.String(), Actor: actorOf(r), Detail: clearedDetail(res.Cleared)})
	writeJSON(w, http.StatusOK, res)
}

func nonNilLocks(l []LockInfo) []LockInfo {
	if l == nil {
		return []LockInfo{}
	}
	return l
}

// clearedDetail is the audit detail of an unlock.
func clearedDetail(cleared []LockInfo) string {
	if len(cleared) == 0 {
		return "was not locked out"
	}
	parts := make([]string, len(cleared))
	for i, l := range cleared {
		parts[i] = l.String()
	}
	return "cleared " + strings.Join(parts, "; ")
}

// Unlock clears every rate-limit lock and failure count of user and returns what was in force.
func (c *Client) Unlock(ctx context.Context, user string) (UnlockResult, error) {
	var res UnlockResult
	p, err := userPath(user, "unlock")
	if err != nil {
		return res, err
	}
	err = c.call(ctx, http.MethodPost, p, nil, &res)
	return res, err
}

// UnlockAddress clears the rate-limit locks and failure counts of addr (its address, IPv6 /64,
// and its network, /24 or /48) and returns what was in force.
func (c *Client) UnlockAddress(ctx context.Context, addr netip.Addr) (UnlockResult, error) {
	var res UnlockResult
	err := c.call(ctx, http.MethodPost, "/v1/addresses/"+url.PathEscape(addr.String())+"/unlock", nil, &res)
	return res, err
}
