package admin

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"
)

// ErrForbidden means the daemon refused the caller: not root and in none of admin.groups. The
// Client's errors match it with errors.Is and carry the daemon's message.
var ErrForbidden = errors.New("not allowed to use the admin socket")

// authorizer decides who may use the admin API: root, and processes whose primary or
// supplementary group is one of admin.groups. The socket's mode (0660) already keeps others
// out, but only as long as nobody loosens it or the directory; this check holds regardless.
//
// A caller running as the daemon's own user is let in too: it could open the daemon's database
// and key files directly, so refusing it would protect nothing, and it lets a developer who
// runs the daemon as themself use the admin commands without editing admin.groups.
type authorizer struct {
	names []string        // admin.groups as configured, for the refusal message
	gids  map[uint32]bool // the groups of names that exist on this machine
	self  uint32          // the daemon's effective uid
}

// newAuthorizer resolves the group names once, at start. A name that does not exist on this
// machine is logged as a warning and ignored: a typo must not let anyone in, nor stop the daemon.
func newAuthorizer(names []string, log *slog.Logger) *authorizer {
	a := &authorizer{names: slices.Clone(names), gids: map[uint32]bool{}, self: uint32(os.Geteuid())}
	for _, name := range names {
		g, err := user.LookupGroup(name)
		if err != nil {
			log.Warn("admin.groups: no such group on this machine; ignored", "group", name, "err", err)
			continue
		}
		gid, err := strconv.ParseUint(g.Gid, 10, 32)
		if err != nil {
			log.Warn("admin.groups: group has a non-numeric gid; ignored", "group", name, "gid", g.Gid)
			continue
		}
		a.gids[uint32(gid)] = true
	}
	return a
}

// allow returns nil when the peer may use the API, else an error wrapping ErrForbidden whose
// message the caller may see (it tells nothing the caller does not know).
func (a *authorizer) allow(p peer, known bool) error {
	switch {
	case !known:
		return fmt.Errorf("%w: the caller's credentials are unknown (no SO_PEERCRED on this connection)", ErrForbidden)
	case p.UID == 0, p.UID == a.self, a.gids[p.GID]:
		return nil
	}
	for _, g := range p.Groups {
		if a.gids[g] {
			return nil
		}
	}
	return fmt.Errorf("%w: uid %d is not root and not in admin.groups %v", ErrForbidden, p.UID, a.names)
}

// authorize answers 403 to callers a refuses and logs them; others reach next.
func (s *Server) authorize(a *authorizer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, known := callerOf(r.Context())
		if err := a.allow(p, known); err != nil {
			attrs := []any{"method", r.Method, "path", r.URL.Path, "reason", err.Error()}
			if known {
				attrs = append(attrs, "caller_uid", p.UID, "caller_gid", p.GID, "caller_pid", p.PID, "caller_groups", p.Groups)
				if p.GroupsErr != nil {
					attrs = append(attrs, "groups_err", p.GroupsErr.Error())
				}
			}
			s.log().WarnContext(r.Context(), "admin request refused", attrs...)
			writeError(w, http.StatusForbidden, codeForbidden, err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}
