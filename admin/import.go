package admin

import (
	"context"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
)

// Limits on an imported device, the same as package gauth's for the files it reads.
const (
	// importMinSecret is the shortest imported secret: 80 bits, what the oldest
	// google-authenticator versions generated.
	importMinSecret = 10
	// importMaxSecret is the longest: 512 bits, an HMAC-SHA1 block.
	importMaxSecret = 64
	// importMaxScratch is the most scratch codes an import brings, as many as a link's
	// recovery codes.
	importMaxScratch = enroll.RecoveryCodes
	// importFutureSteps bounds how far past now an imported last used step may be: the PAM
	// module records steps up to half its largest window (100) ahead. Anything further is a
	// clock problem, and would make every code of the user's app count as replayed.
	importFutureSteps = 100
)

// ErrBadImport matches (errors.Is) the error Import returns for input it cannot use; its message
// says what is wrong.
var ErrBadImport = errors.New("cannot import")

// ImportRequest is the body of POST /v1/users/{name}/import: a device the user already has,
// from a pam_google_authenticator file (package gauth), made the user's active device.
//
// The request carries the TOTP secret into the daemon, the one process that may hold the
// database. It travels once, inbound, over the admin socket, which only root and the
// gatekeeper group can open (mode 0660): the same people who can read the file it came from
// and the database's key. It is never logged and never sent back.
type ImportRequest struct {
	// SecretBase32 is the TOTP key in base32 (RFC 4648, padding optional, any case).
	SecretBase32 string `json:"secret_base32"`
	// LastStep is the last time step already used (the largest of the file's DISALLOW_REUSE
	// steps), so that a code used through PAM just before the switch cannot be replayed; 0 for
	// none. A larger last used step on record is kept.
	LastStep uint64 `json:"last_step"`
	// Scratch are the file's unused scratch codes; they become the user's recovery codes.
	Scratch []string `json:"scratch"`
	// Force replaces a device the user has linked already.
	Force bool `json:"force"`
}

// ImportResult is the answer to an import.
type ImportResult struct {
	User string `json:"user"`
	// Replaced says whether an active device was replaced (only with Force).
	Replaced bool `json:"replaced"`
	// RecoveryCodes counts the recovery codes the user has now.
	RecoveryCodes int `json:"recovery_codes"`
	// SessionsEnded counts the live sessions ended because an active device was replaced: a
	// credential change logs the user out, as a reset does.
	SessionsEnded int `json:"sessions_ended"`
}

// Import makes req's device user's active device in st and writes an "import" event with actor
// to the audit log (a failure to write it goes to log: the import has happened by then). A user with an active device gets an error matching enroll.ErrAlreadyLinked
// unless req.Force; a pending link is replaced. Input it cannot use gets ErrBadImport. The
// daemon's endpoint and commands working on the database directly both use it.
func Import(st store.Store, user string, req ImportRequest, actor string, now time.Time, log *slog.Logger) (ImportResult, error) {
	res := ImportResult{User: user}
	if err := store.CheckName(user); err != nil {
		return res, err
	}
	secret, err := decodeImportSecret(req.SecretBase32)
	if err != nil {
		return res, err
	}
	if len(req.Scratch) > importMaxScratch {
		return res, fmt.Errorf("%w: %d scratch codes, at most %d", ErrBadImport, len(req.Scratch), importMaxScratch)
	}
	for i, c := range req.Scratch {
		if len(c) != 8 || strings.Trim(c, "0123456789") != "" {
			return res, fmt.Errorf("%w: scratch code %d is not 8 digits", ErrBadImport, i+1)
		}
	}
	if cur := totp.Step(now); req.LastStep > cur+importFutureSteps {
		return res, fmt.Errorf("%w: last used time step %d is %d steps in the future (now %d): check this machine's clock",
			ErrBadImport, req.LastStep, req.LastStep-cur, cur)
	}
	// The scratch codes are hashed (slow on purpose) before the transaction, not inside it.
	var recovery enroll.RecoverySet
	if len(req.Scratch) > 0 {
		if recovery, err = enroll.HashRecovery(context.Background(), req.Scratch); err != nil {
			return res, err
		}
	}
	err = st.Update(user, func(u *store.User) error {
		res.Replaced = false // fn may run again, on newer values
		if u.State == store.StateActive {
			if !req.Force {
				return fmt.Errorf("%w for %s (linked on %s): import with force to replace it",
					enroll.ErrAlreadyLinked, user, u.EnrolledAt.Local().Format(time.DateOnly))
			}
			res.Replaced = true
		}
		u.State = store.StateActive
		u.Secret = secret
		// A replacement begun for the device this one replaces would replace the import.
		u.NextSecret, u.NextSince = nil, time.Time{}
		u.ConfirmTries, u.PendingBinding = 0, nil
		u.LastStep = max(u.LastStep, req.LastStep)
		u.PendingSince = time.Time{}
		u.EnrolledAt = now
		if u.CreatedAt.IsZero() {
			u.CreatedAt = now
		}
		recovery.SetOn(u)
		res.RecoveryCodes = len(u.Recovery)
		return nil
	})
	if err != nil {
		return ImportResult{User: user}, err
	}
	detail := fmt.Sprintf("google_authenticator device imported with %d recovery codes", res.RecoveryCodes)
	if res.Replaced {
		detail += "; replaced the linked device"
	}
	if err := st.Append(store.Event{Kind: store.EventImport, User: user, Actor: actor, Door: store.DoorConsole, Detail: detail}); err != nil {
		log.Error("audit log write failed", "err", err, "kind", store.EventImport, "user", user)
	}
	return res, nil
}

// decodeImportSecret decodes a base32 TOTP key as authenticator apps accept it: any case,
// padding and spaces optional.
func decodeImportSecret(s string) ([]byte, error) {
	s = strings.TrimRight(strings.ToUpper(strings.ReplaceAll(s, " ", "")), "=")
	if s == "" {
		return nil, fmt.Errorf("%w: no secret", ErrBadImport)
	}
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
	// Go's unpadded decoder accepts lengths that are no whole number of bytes and drops the
	// rest; such a key would silently differ from the app's.
	if err != nil || len(secret) != len(s)*5/8 || len(s)%8 == 1 || len(s)%8 == 3 || len(s)%8 == 6 {
		return nil, fmt.Errorf("%w: the secret is not base32", ErrBadImport)
	}
	if len(secret) < importMinSecret || len(secret) > importMaxSecret {
		return nil, fmt.Errorf("%w: the secret is %d bits, want %d to %d", ErrBadImport, 8*len(secret), 8*importMinSecret, 8*importMaxSecret)
	}
	return secret, nil
}

// handleImport answers POST /v1/users/{name}/import with an ImportRequest body. Replacing an
// active device ends the user's live sessions when the OnReset hook is set.
func (s *Server) handleImport(w http.ResponseWriter, r *http.Request) {
	name := s.pathUser(w, r)
	if name == "" {
		return
	}
	var req ImportRequest
	if !s.decode(w, r, &req) {
		return
	}
	res, err := Import(s.store(), name, req, actorOf(r), s.now(), s.log())
	if errors.Is(err, ErrBadImport) {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	if res.Replaced && s.OnReset != nil {
		res.SessionsEnded = s.OnReset(name)
	}
	s.log().InfoContext(r.Context(), "device imported", "user", name, "actor", actorOf(r),
		"replaced", res.Replaced, "recovery_codes", res.RecoveryCodes, "sessions_ended", res.SessionsEnded)
	writeJSON(w, http.StatusOK, res)
}

// Import makes req's device user's active device on the daemon (see ImportRequest).
func (c *Client) Import(ctx context.Context, user string, req ImportRequest) (ImportResult, error) {
	var res ImportResult
	p, err := userPath(user, "import")
	if err != nil {
		return res, err
	}
	err = c.postHashing(ctx, p, req, &res)
	return res, err
}
