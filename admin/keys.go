package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// SSH keys registered at the gatekeeper (keys.enabled), over the admin socket:
//
//	GET  /v1/users/{name}/keys         UserKeys
//	POST /v1/users/{name}/keys         AddKeyRequest → store.Key
//	POST /v1/users/{name}/keys/revoke  RevokeKeyRequest → RevokeKeyResult
//	POST /v1/users/{name}/keys/import  ImportKeysRequest → ImportKeysResult
//
// The enroll.Service does the work and writes key_added and key_revoked to the audit log with
// the caller as the actor; commands working on the database directly call the same functions.

// maxImportBodyBytes bounds the body of a key import: an authorized_keys file of
// enroll.MaxKeyFileSize, with room for its JSON escapes (at most 6 bytes for one).
const maxImportBodyBytes = 6*enroll.MaxKeyFileSize + maxBodyBytes

// UserKeys is a user's registered keys, in the order they were added.
type UserKeys struct {
	User string      `json:"user"`
	Keys []store.Key `json:"keys"`
}

// AddKeyRequest is the body of POST /v1/users/{name}/keys: a key an admin registers for the
// user (see enroll.NewKey).
type AddKeyRequest struct {
	// PublicKey is one public key line: "ssh-ed25519 AAAA... comment".
	PublicKey string `json:"public_key"`
	// Label names the key; empty: the line's comment.
	Label string `json:"label,omitempty"`
	// Automation marks a key for scripts: it needs From, and expires after at most
	// keys.automation_max_lifetime (the default when Expires is zero).
	Automation bool      `json:"automation,omitempty"`
	From       []string  `json:"from,omitempty"`
	Expires    time.Time `json:"expires,omitzero"`
	Command    string    `json:"command,omitempty"`
}

// RevokeKeyRequest is the body of POST /v1/users/{name}/keys/revoke.
type RevokeKeyRequest struct {
	Fingerprint string `json:"fingerprint"`
}

// RevokeKeyResult is the answer to a revoke: the key that is gone, and how many live sessions
// that had logged in with it were ended.
type RevokeKeyResult struct {
	User          string    `json:"user"`
	Key           store.Key `json:"key"`
	SessionsEnded int       `json:"sessions_ended"`
}

// ImportKeysRequest is the body of POST /v1/users/{name}/keys/import: an authorized_keys file.
type ImportKeysRequest struct {
	AuthorizedKeys string `json:"authorized_keys"`
}

// ImportKeysResult says what became of each key line of an imported authorized_keys file.
type ImportKeysResult struct {
	User    string         `json:"user"`
	Added   []ImportedLine `json:"added"`
	Skipped []ImportedLine `json:"skipped"`
}

// ImportedLine is one key line of an imported authorized_keys file.
type ImportedLine struct {
	// Line is the line's number in the file.
	Line int `json:"line"`
	// Fingerprint names the key, when the line held one that could be read.
	Fingerprint string `json:"fingerprint,omitempty"`
	Label       string `json:"label,omitempty"`
	// From, Expires and Command are what the line's from=, expiry-time= and command= options
	// became (added keys only; an automation key never comes from an import).
	From    []string  `json:"from,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
	Command string    `json:"command,omitempty"`
	// Reason says why a skipped line was not added.
	Reason string `json:"reason,omitempty"`
	// Dropped lists the line's options that were not carried over (only from=, command= and
	// expiry-time= are).
	Dropped []string `json:"dropped_options,omitempty"`
}

// AddKey registers req's key for user through svc, added by actor (the audit log's actor comes
// from ctx, see enroll.WithActor). The daemon's endpoint and the commands working on the
// database directly both use it.
func AddKey(ctx context.Context, svc *enroll.Service, user string, req AddKeyRequest, actor string) (store.Key, error) {
	return svc.AddKey(ctx, user, enroll.NewKey{
		PublicKey: req.PublicKey, Label: req.Label, Automation: req.Automation,
		From: req.From, Expires: req.Expires, Command: req.Command,
	}, actor)
}

// ImportKeys registers the keys of the authorized_keys file data for user through svc, added by
// actor, and says what became of each key line.
func ImportKeys(ctx context.Context, svc *enroll.Service, user string, data []byte, actor string) (ImportKeysResult, error) {
	out := ImportKeysResult{User: user, Added: []ImportedLine{}, Skipped: []ImportedLine{}}
	if err := store.CheckName(user); err != nil {
		return out, err
	}
	lines, err := enroll.ParseAuthorizedKeys(data)
	if err != nil {
		return out, err
	}
	res, err := svc.ImportKeys(ctx, user, data, actor)
	if err != nil {
		return out, err
	}
	// ImportKeys adds the lines it does not skip, in the file's order: the i-th line not
	// skipped is the i-th key added.
	skipped := map[int]enroll.ImportedKey{}
	for _, ik := range res.Skipped {
		skipped[ik.Line] = ik
	}
	added := 0
	for _, ik := range lines {
		if sk, ok := skipped[ik.Line]; ok {
			l := ImportedLine{Line: sk.Line, Label: sk.Key.Label, Dropped: sk.Dropped}
			if sk.Err != nil {
				l.Reason = sk.Err.Error()
			}
			if pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(sk.Key.PublicKey)); err == nil {
				l.Fingerprint = ssh.FingerprintSHA256(pub)
			}
			out.Skipped = append(out.Skipped, l)
			continue
		}
		if added >= len(res.Added) {
			break
		}
		k := res.Added[added]
		added++
		out.Added = append(out.Added, ImportedLine{
			Line: ik.Line, Fingerprint: k.Fingerprint, Label: k.Label,
			From: k.From, Expires: k.Expires, Command: k.Command, Dropped: ik.Dropped,
		})
	}
	return out, nil
}

// handleKeys answers GET /v1/users/{name}/keys.
func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request) {
	name := s.pathUser(w, r)
	if name == "" {
		return
	}
	keys, err := s.Enroll.Keys(r.Context(), name)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	if keys == nil {
		keys = []store.Key{}
	}
	writeJSON(w, http.StatusOK, UserKeys{User: name, Keys: keys})
}

// handleAddKey answers POST /v1/users/{name}/keys.
func (s *Server) handleAddKey(w http.ResponseWriter, r *http.Request) {
	name := s.pathUser(w, r)
	if name == "" {
		return
	}
	var req AddKeyRequest
	if !s.decode(w, r, &req) {
		return
	}
	k, err := AddKey(s.actorContext(r), s.Enroll, name, req, actorOf(r))
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, k)
}

// handleRevokeKey answers POST /v1/users/{name}/keys/revoke: the key goes, with the devices
// remembered for it, and the live sessions that logged in with it end (the enroll.Service's
// EndKeySessions hook; without one, none are ended).
func (s *Server) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	name := s.pathUser(w, r)
	if name == "" {
		return
	}
	var req RevokeKeyRequest
	if !s.decode(w, r, &req) {
		return
	}
	k, ended, err := s.Enroll.RevokeKey(s.actorContext(r), name, req.Fingerprint)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RevokeKeyResult{User: name, Key: k, SessionsEnded: ended})
}

// handleImportKeys answers POST /v1/users/{name}/keys/import.
func (s *Server) handleImportKeys(w http.ResponseWriter, r *http.Request) {
	name := s.pathUser(w, r)
	if name == "" {
		return
	}
	var req ImportKeysRequest
	if !s.decodeLimit(w, r, &req, maxImportBodyBytes) {
		return
	}
	res, err := ImportKeys(s.actorContext(r), s.Enroll, name, []byte(req.AuthorizedKeys), actorOf(r))
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// keysPath is the API path of user's keys, with action ("", "revoke", "import") after it.
func keysPath(user, action string) (string, error) {
	if err := store.CheckName(user); err != nil {
		return "", err
	}
	p := "/v1/users/" + url.PathEscape(user) + "/keys"
	if action != "" {
		p += "/" + action
	}
	return p, nil
}

// Keys returns user's registered SSH keys (none for a user without a record).
func (c *Client) Keys(ctx context.Context, user string) ([]store.Key, error) {
	p, err := keysPath(user, "")
	if err != nil {
		return nil, err
	}
	var res UserKeys
	if err := c.call(ctx, http.MethodGet, p, nil, &res); err != nil {
		return nil, err
	}
	return res.Keys, nil
}

// AddKey registers req's key for user and returns it as stored. A key the daemon cannot take
// gets an error matching enroll.ErrBadKey (saying why), one the user has already
// enroll.ErrKeyExists, one too many enroll.ErrTooManyKeys.
func (c *Client) AddKey(ctx context.Context, user string, req AddKeyRequest) (store.Key, error) {
	var k store.Key
	p, err := keysPath(user, "")
	if err != nil {
		return k, err
	}
	err = c.call(ctx, http.MethodPost, p, req, &k)
	return k, err
}

// RevokeKey removes user's key with fingerprint fp and ends the live sessions that logged in
// with it. An unknown key gets enroll.ErrNoKey.
func (c *Client) RevokeKey(ctx context.Context, user, fp string) (RevokeKeyResult, error) {
	var res RevokeKeyResult
	p, err := keysPath(user, "revoke")
	if err != nil {
		return res, err
	}
	err = c.call(ctx, http.MethodPost, p, RevokeKeyRequest{Fingerprint: fp}, &res)
	return res, err
}

// ImportKeys registers the keys of an authorized_keys file for user.
func (c *Client) ImportKeys(ctx context.Context, user string, data []byte) (ImportKeysResult, error) {
	var res ImportKeysResult
	p, err := keysPath(user, "import")
	if err != nil {
		return res, err
	}
	if len(data) > enroll.MaxKeyFileSize {
		return res, fmt.Errorf("%w: file of %d bytes, at most %d", enroll.ErrBadKey, len(data), enroll.MaxKeyFileSize)
	}
	err = c.call(ctx, http.MethodPost, p, ImportKeysRequest{AuthorizedKeys: string(data)}, &res)
	return res, err
}
