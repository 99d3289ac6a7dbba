package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// ErrNoDaemon means no gatekeeper daemon listens on the admin socket (the socket file is
// missing or nobody accepts on it). Commands then open the database directly.
var ErrNoDaemon = errors.New("gatekeeper daemon is not running")

// DefaultTimeout bounds each Client call, from dialling to reading the answer.
const DefaultTimeout = 10 * time.Second

// HashTimeout bounds, instead of a shorter Timeout, the calls that hash recovery codes on the
// daemon (Confirm, ConfirmReplace, Import): up to ten argon2id computations of 19 MiB each,
// slow on purpose, and slower still on a login node busy with its users' compiles. The daemon
// stores the codes only while the call still waits for them.
const HashTimeout = time.Minute

// maxResponseBytes bounds what the client reads of an answer (an audit log of MaxAuditLimit
// events fits).
const maxResponseBytes = 64 << 20

// Client calls the admin API of a running daemon. It implements enroll.Linker, so the terminal
// link flow runs the same against the daemon as against a local enroll.Service. Errors the
// daemon reports match the enroll and store sentinel errors with errors.Is and carry the
// daemon's message.
type Client struct {
	path string
	// Timeout bounds each call; NewClient sets DefaultTimeout.
	Timeout time.Duration
	hc      *http.Client
}

var (
	_ enroll.Linker   = (*Client)(nil)
	_ enroll.Replacer = (*Client)(nil)
)

// dialError marks a failure to connect, as opposed to one after the daemon accepted.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// NewClient returns a client for the admin socket at path. It does not connect yet.
//
// Before each call it checks whom it talks to, and refuses (ErrUntrustedSocket, saying why) a
// socket path that is a symbolic link or not a socket, a socket file owned by anyone but root,
// the gatekeeper system user or the caller, and a connection whose listening process runs as
// anyone else (see socketOwners for why these).
func NewClient(path string) *Client {
	owners := trustedSocketOwners()
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if err := owners.checkSocketFile(path); err != nil {
				return nil, &dialError{err}
			}
			c, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, &dialError{err}
			}
			if err := owners.checkServer(c, path); err != nil {
				c.Close()
				return nil, &dialError{err}
			}
			return c, nil
		},
		// One connection per call: the commands make a handful of calls, and a fresh
		// connection is what the daemon's per-connection caller uid is taken from.
		DisableKeepAlives: true,
	}
	return &Client{path: path, Timeout: DefaultTimeout, hc: &http.Client{Transport: tr}}
}

// Begin starts a device link for user on the daemon and returns the one showing of the secret
// and the link's binding. The binding stays in this process: only a Confirm that passes it on
// can confirm the link, so another process (another `gatekeeper enroll` for the same user)
// cannot.
func (c *Client) Begin(ctx context.Context, user string) (enroll.Link, enroll.Binding, error) {
	var resp beginResponse
	if err := c.call(ctx, http.MethodPost, "/v1/enroll/begin", beginRequest{User: user}, &resp); err != nil {
		return enroll.Link{}, "", err
	}
	return resp.Link, resp.Binding, nil
}

// Confirm confirms user's pending link with code and the binding Begin returned, on the daemon,
// and returns the link's recovery codes (their one showing).
func (c *Client) Confirm(ctx context.Context, user string, binding enroll.Binding, code string) ([]string, error) {
	var resp confirmResponse
	req := confirmRequest{User: user, Binding: binding, Code: code}
	if err := c.postHashing(ctx, "/v1/enroll/confirm", req, &resp); err != nil {
		return nil, err
	}
	return resp.RecoveryCodes, nil
}

// BeginReplace starts replacing active user's device on the daemon (gatekeeper enroll
// --replace) and returns the one showing of the new secret and the replacement's binding, which
// stays in this process. The device linked now keeps working until ConfirmReplace.
func (c *Client) BeginReplace(ctx context.Context, user string) (enroll.Link, enroll.Binding, error) {
	var resp beginResponse
	if err := c.call(ctx, http.MethodPost, "/v1/enroll/replace/begin", beginRequest{User: user}, &resp); err != nil {
		return enroll.Link{}, "", err
	}
	return resp.Link, resp.Binding, nil
}

// ConfirmReplace confirms user's replacement with a code from the new device and the binding
// BeginReplace returned, on the daemon, and returns the new recovery codes (their one showing).
// A code refused because the phone's clock is off comes back as an *enroll.ClockError.
func (c *Client) ConfirmReplace(ctx context.Context, user string, binding enroll.Binding, code string) ([]string, error) {
	var resp confirmResponse
	req := confirmRequest{User: user, Binding: binding, Code: code}
	if err := c.postHashing(ctx, "/v1/enroll/replace/confirm", req, &resp); err != nil {
		return nil, err
	}
	return resp.RecoveryCodes, nil
}

// CancelReplace drops the replacement this process began (binding from BeginReplace), on the
// daemon; the device linked now stays linked.
func (c *Client) CancelReplace(ctx context.Context, user string, binding enroll.Binding) error {
	return c.call(ctx, http.MethodPost, "/v1/enroll/replace/cancel", cancelRequest{User: user, Binding: binding}, nil)
}

// Users returns every user with a record, sorted by name (never secrets).
func (c *Client) Users(ctx context.Context) ([]UserInfo, error) {
	var infos []UserInfo
	err := c.call(ctx, http.MethodGet, "/v1/users", nil, &infos)
	return infos, err
}

// userPath is the API path of user's action (user checked, so it is a single path element).
func userPath(user, action string) (string, error) {
	if err := store.CheckName(user); err != nil {
		return "", err
	}
	return "/v1/users/" + url.PathEscape(user) + "/" + action, nil
}

// Reset forgets user's device link and recovery codes and ends their live sessions; their SSH
// keys stay. A user without a record or a session gets ErrNoSuchUser.
func (c *Client) Reset(ctx context.Context, user string) (ResetResult, error) {
	return c.ResetWith(ctx, user, ResetOptions{})
}

// ResetWith is Reset with options: opts.Keys removes the user's SSH keys too.
func (c *Client) ResetWith(ctx context.Context, user string, opts ResetOptions) (ResetResult, error) {
	var res ResetResult
	p, err := userPath(user, "reset")
	if err != nil {
		if user == "" || user == "." || user == ".." {
			return res, err // no path element can carry it
		}
		// The daemon removes a record stored under an invalid name (by hand), if there is
		// one, and refuses the name otherwise.
		p = "/v1/users/" + url.PathEscape(user) + "/reset"
	}
	if opts.Keys {
		p += "?keys=true"
	}
	err = c.call(ctx, http.MethodPost, p, nil, &res)
	return res, err
}

// Ticket issues a one-time enrollment ticket for user and returns it with its expiry.
func (c *Client) Ticket(ctx context.Context, user string) (token string, expires time.Time, err error) {
	p, err := userPath(user, "ticket")
	if err != nil {
		return "", time.Time{}, err
	}
	var resp ticketResponse
	if err := c.call(ctx, http.MethodPost, p, nil, &resp); err != nil {
		return "", time.Time{}, err
	}
	return resp.Ticket, resp.ExpiresAt, nil
}

// Audit returns the audit events q selects, oldest first. q.Limit 0 means the daemon's default
// (DefaultAuditLimit newest events).
func (c *Client) Audit(ctx context.Context, q store.EventQuery) ([]store.Event, error) {
	v := url.Values{}
	if q.User != "" {
		if err := store.CheckName(q.User); err != nil {
			return nil, err
		}
		v.Set("user", q.User)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	p := "/v1/audit"
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	var events []store.Event
	err := c.call(ctx, http.MethodGet, p, nil, &events)
	return events, err
}

// Sessions returns the live sessions of every node as the JSON the daemon's Sessions hook
// produces, for the caller to decode into its own type (or print as it is). incomplete, when not
// empty, says which part of the cluster the daemon could not read.
func (c *Client) Sessions(ctx context.Context) (raw json.RawMessage, incomplete string, err error) {
	var h http.Header
	err = c.callHeader(ctx, http.MethodGet, "/v1/sessions", nil, &raw, &h)
	return raw, h.Get(incompleteHeader), err
}

// Kill ends the live session id of node, wherever it runs; node "" names the only session with
// that id the daemon can see. An unknown session gets ErrNoSuchSession, an id several nodes have
// a session under ErrAmbiguousSession. The result says whether the session is known to have
// ended.
func (c *Client) Kill(ctx context.Context, node string, id uint64) (KillResult, error) {
	p := "/v1/sessions/" + strconv.FormatUint(id, 10) + "/kill"
	if node != "" {
		p = "/v1/sessions/" + url.PathEscape(node) + "/" + strconv.FormatUint(id, 10) + "/kill"
	}
	var res KillResult
	err := c.call(ctx, http.MethodPost, p, nil, &res)
	return res, err
}

// User returns the state of user as the daemon sees it (never the secret).
func (c *Client) User(ctx context.Context, user string) (UserInfo, error) {
	var info UserInfo
	if err := store.CheckName(user); err != nil {
		return info, err
	}
	err := c.call(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(user), nil, &info)
	return info, err
}

// BackupTimeout bounds a Backup or Restore call: they move every record, and with the audit
// log that can be many megabytes.
const BackupTimeout = 10 * time.Minute

// Backup streams the daemon's backup: fn gets every record and ticket, and the audit events
// when audit is set, in the stored (sealed) form. It returns the header with the counts of
// what came, which the daemon's end line confirms; a stream cut short is an error.
func (c *Client) Backup(ctx context.Context, audit bool, fn func(store.Item) error) (BackupHeader, error) {
	ctx, cancel := context.WithTimeout(ctx, BackupTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://gatekeeper/v1/backup?audit="+strconv.FormatBool(audit), nil)
	if err != nil {
		return BackupHeader{}, fmt.Errorf("admin request: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return BackupHeader{}, c.connError(ctx, BackupTimeout, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
		return BackupHeader{}, remoteError(resp.StatusCode, b)
	}
	h, err := readStream(resp.Body, fn)
	if err != nil && ctx.Err() != nil {
		return h, c.connError(ctx, BackupTimeout, err)
	}
	return h, err
}

// Restore sends f, as it was read, to the daemon, which checks it again and loads it (see
// Restore). An existing user without force gets an error matching store.ErrExists that names
// them; a backup the daemon cannot use, ErrBadBackup.
func (c *Client) Restore(ctx context.Context, f *BackupFile, force bool) (RestoreResult, error) {
	var res RestoreResult
	ctx, cancel := context.WithTimeout(ctx, BackupTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://gatekeeper/v1/restore?force="+strconv.FormatBool(force), bytes.NewReader(f.raw))
	if err != nil {
		return res, fmt.Errorf("admin request: %w", err)
	}
	req.Header.Set("Content-Type", "application/jsonl")
	resp, err := c.hc.Do(req)
	if err != nil {
		return res, c.connError(ctx, BackupTimeout, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return res, c.connError(ctx, BackupTimeout, err)
	}
	if resp.StatusCode/100 != 2 {
		return res, remoteError(resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return res, fmt.Errorf("admin socket %s: unreadable answer: %w", c.path, err)
	}
	return res, nil
}

// Ping checks that a daemon answers on the socket; it returns an error matching ErrNoDaemon
// when none does.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, http.MethodGet, "/v1/health", nil, nil)
}

// call sends one request and decodes a 2xx answer into out (when out is not nil).
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	return c.callWithin(ctx, c.Timeout, method, path, in, out, nil)
}

// callHeader is call that also keeps the answer's header in header (when not nil).
func (c *Client) callHeader(ctx context.Context, method, path string, in, out any, header *http.Header) error {
	return c.callWithin(ctx, c.Timeout, method, path, in, out, header)
}

// postHashing is call with POST for a request that hashes recovery codes on the daemon: bounded
// by HashTimeout, or by Timeout when that is longer or none (0).
func (c *Client) postHashing(ctx context.Context, path string, in, out any) error {
	limit := c.Timeout
	if limit > 0 {
		limit = max(limit, HashTimeout)
	}
	return c.callWithin(ctx, limit, http.MethodPost, path, in, out, nil)
}

// callWithin is callHeader bounded by limit instead of Timeout (no bound when 0).
func (c *Client) callWithin(ctx context.Context, limit time.Duration, method, path string, in, out any, header *http.Header) error {
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	// The host is never used for a Unix socket, but HTTP needs one.
	req, err := http.NewRequestWithContext(ctx, method, "http://gatekeeper"+path, body)
	if err != nil {
		return fmt.Errorf("admin request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.connError(ctx, limit, err)
	}
	defer resp.Body.Close()
	if header != nil {
		*header = resp.Header
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return c.connError(ctx, limit, err)
	}
	if resp.StatusCode/100 != 2 {
		return remoteError(resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin socket %s: unreadable answer: %w", c.path, err)
	}
	return nil
}

// connError turns a transport failure of a call bounded by limit into a message that tells the
// operator what to do.
func (c *Client) connError(ctx context.Context, limit time.Duration, err error) error {
	var de *dialError
	switch {
	case errors.As(err, &de) && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)):
		return fmt.Errorf("%w (nothing answers on admin socket %s)", ErrNoDaemon, c.path)
	case errors.As(err, &de) && errors.Is(err, ErrUntrustedSocket):
		return de.err // names the socket and says why
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on admin socket %s (are you in the gatekeeper group or root?): %w", c.path, err)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("admin socket %s: no answer within %s: %w", c.path, limit, err)
	default:
		return fmt.Errorf("admin socket %s: %w", c.path, err)
	}
}

// apiError is an error reported by the daemon: its message is the daemon's, and it matches the
// sentinel error the daemon's code stands for.
type apiError struct {
	msg      string
	sentinel error
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.sentinel }

// remoteError maps an error answer back to the sentinel errors the daemon started from.
func remoteError(status int, b []byte) error {
	var eb errorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error == "" {
		return fmt.Errorf("admin socket: unexpected answer %d %s", status, http.StatusText(status))
	}
	var sentinel error
	switch eb.Code {
	case codeBadCode:
		// The daemon's refinements come back as the Service returned them.
		switch {
		case eb.Reason == reasonClock && eb.ClockSteps != 0:
			return &enroll.ClockError{Steps: eb.ClockSteps}
		case eb.Reason == reasonCurrentDevice:
			return enroll.ErrCurrentDeviceCode
		}
		sentinel = enroll.ErrBadCode
	case codeAlreadyLinked:
		sentinel = enroll.ErrAlreadyLinked
	case codeNotLinked:
		sentinel = enroll.ErrNotLinked
	case codePending:
		sentinel = enroll.ErrPending
	case codeNoPending:
		sentinel = enroll.ErrNoPending
	case codeExpired:
		sentinel = enroll.ErrExpired
	case codeVoided:
		sentinel = enroll.ErrVoided
	case codeElsewhere:
		sentinel = enroll.ErrStartedElsewhere
	case codeBadName:
		sentinel = store.ErrBadName
	case codeUnknownUser:
		sentinel = ErrNoSuchUser
	case codeNoSession:
		sentinel = ErrNoSuchSession
	case codeAmbiguous:
		sentinel = ErrAmbiguousSession
	case codeNotImpl:
		sentinel = ErrNotImplemented
	case codeDamaged:
		sentinel = store.ErrDamaged
	case codeForbidden:
		sentinel = ErrForbidden
	case codeExists:
		sentinel = store.ErrExists
	case codeBadBackup:
		sentinel = ErrBadBackup
	case codeUnavailable:
		sentinel = store.ErrUnavailable
	case codeNoSpace:
		sentinel = store.ErrNoSpace
	case codeBadKey:
		sentinel = enroll.ErrBadKey
	case codeKeyExists:
		sentinel = enroll.ErrKeyExists
	case codeNoKey:
		sentinel = enroll.ErrNoKey
	case codeTooManyKeys:
		sentinel = enroll.ErrTooManyKeys
	default:
		return fmt.Errorf("gatekeeper daemon: %s", eb.Error)
	}
	return &apiError{msg: eb.Error, sentinel: sentinel}
}
