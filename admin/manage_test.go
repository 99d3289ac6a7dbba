package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store/bolt"

	bbolt "go.etcd.io/bbolt"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// me is the actor the audit log must name for this test process's requests.
var me = fmt.Sprintf("uid %d", os.Getuid())

// link makes user an active user through the client and returns the recovery codes.
func link(t *testing.T, d *daemon, c *Client, user string) []string {
	t.Helper()
	l, b, err := c.Begin(context.Background(), user)
	if err != nil {
		t.Fatalf("Begin(%s): %v", user, err)
	}
	codes, err := c.Confirm(context.Background(), user, b, codeAt(t, l.Secret, d.clock.Now()))
	if err != nil {
		t.Fatalf("Confirm(%s): %v", user, err)
	}
	return codes
}

// auditOf returns user's audit events as "kind/actor/detail" strings.
func auditOf(t *testing.T, st store.Store, user string) []string {
	t.Helper()
	ev, err := st.Events(store.EventQuery{User: user})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ev {
		out = append(out, e.Kind+"/"+e.Actor+"/"+e.Detail)
	}
	return out
}

// rawDo sends a request to the socket and returns status, headers and body.
func rawDo(t *testing.T, path, method, url string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://x"+url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient(path).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// damage stores a broken record for user in the closed database.
func damage(user string) func(t *testing.T, dbPath, keyPath string) {
	return func(t *testing.T, dbPath, keyPath string) {
		st, err := bolt.Open(dbPath, keyPath)
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		db, err := bbolt.Open(dbPath, 0o600, &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("users")).Put([]byte(user), []byte("{broken"))
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUsers(t *testing.T) {
	d := startDaemonWith(t, nil, func(s *Server) {
		s.Locks = func(user string) []LockInfo {
			switch user {
			case "bob":
				return []LockInfo{{Scope: "user", Name: "bob", Until: t0.Add(5 * time.Minute), Level: 1}}
			case "carol":
				return []LockInfo{{Scope: "user", Name: "carol", Until: t0.Add(-time.Minute), Level: 1}} // over already
			}
			return nil
		}
	})
	c := NewClient(d.path)
	ctx := context.Background()

	if users, err := c.Users(ctx); err != nil || users == nil || len(users) != 0 {
		t.Fatalf("Users of an empty store = %#v, %v; want an empty list", users, err)
	}
	if _, _, body := rawDo(t, d.path, "GET", "/v1/users"); strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("empty list encodes as %s, want []", body)
	}

	link(t, d, c, "alice")
	bobLink, _, err := c.Begin(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	link(t, d, c, "carol")

	users, err := c.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []UserInfo{
		{Name: "alice", State: store.StateActive, CreatedAt: t0, EnrolledAt: t0, RecoveryCodesLeft: 10},
		{Name: "bob", State: store.StatePending, CreatedAt: t0, PendingSince: t0, PendingExpiresAt: t0.Add(10 * time.Minute), LockedUntil: t0.Add(5 * time.Minute),
			Locks: []LockInfo{{Scope: "user", Name: "bob", Until: t0.Add(5 * time.Minute), Level: 1}}},
		{Name: "carol", State: store.StateActive, CreatedAt: t0, EnrolledAt: t0, RecoveryCodesLeft: 10},
	}
	if len(users) != len(want) {
		t.Fatalf("Users = %+v", users)
	}
	for i := range want {
		if !sameInfo(users[i], want[i]) {
			t.Errorf("user %d = %+v\nwant %+v", i, users[i], want[i])
		}
	}
	_, _, body := rawDo(t, d.path, "GET", "/v1/users")
	if strings.Contains(string(body), bobLink.Secret) || strings.Contains(string(body), "recovery_salt") || !strings.Contains(string(body), `"recovery_codes_left":10`) {
		t.Errorf("user list shows secrets or lacks the recovery count: %s", body)
	}

	// One user shows the same as in the list.
	info, err := c.User(ctx, "bob")
	if err != nil || !sameInfo(info, want[1]) {
		t.Errorf("User(bob) = %+v, %v", info, err)
	}
	if info, err := c.User(ctx, "dave"); err != nil || info.State != store.StateNone {
		t.Errorf("User(dave) = %+v, %v; want state none", info, err)
	}
}

func sameInfo(a, b UserInfo) bool {
	return a.Name == b.Name && a.State == b.State && a.CreatedAt.Equal(b.CreatedAt) && a.PendingSince.Equal(b.PendingSince) &&
		a.PendingExpiresAt.Equal(b.PendingExpiresAt) && a.EnrolledAt.Equal(b.EnrolledAt) && a.LastLogin.Equal(b.LastLogin) &&
		a.RecoveryCodesLeft == b.RecoveryCodesLeft && a.LockedUntil.Equal(b.LockedUntil)
}

func TestReset(t *testing.T) {
	tests := []struct {
		name      string
		user      string
		prepare   func(t *testing.T, dbPath, keyPath string)
		linked    bool // link user first
		noHook    bool
		sessions  int // the hook ends this many
		want      ResetResult
		wantErr   error
		wantAudit string // detail of the reset event
	}{
		{name: "linked user", user: "alice", linked: true, sessions: 2,
			want: ResetResult{User: "alice", HadRecord: true, SessionsEnded: 2}, wantAudit: "device link and recovery codes removed; 2 live sessions ended"},
		{name: "linked user without sessions", user: "alice", linked: true,
			want: ResetResult{User: "alice", HadRecord: true}, wantAudit: "device link and recovery codes removed; 0 live sessions ended"},
		{name: "damaged record", user: "bob", prepare: damage("bob"),
			want:      ResetResult{User: "bob", HadRecord: true, Damaged: true},
			wantAudit: "device link and recovery codes removed; the record was damaged, so it was removed whole with any SSH keys it held; 0 live sessions ended"},
		{name: "no record but a session", user: "carol", sessions: 1,
			want: ResetResult{User: "carol", SessionsEnded: 1}, wantAudit: "no device was linked; 1 live session ended"},
		{name: "nothing to reset", user: "carol", wantErr: ErrNoSuchUser},
		{name: "no session hook", user: "alice", linked: true, noHook: true, wantErr: ErrNotImplemented},
		{name: "bad name", user: "-rf", wantErr: store.ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var hookCalls []string
			d := startDaemonWith(t, tt.prepare, func(s *Server) {
				if !tt.noHook {
					s.OnReset = func(user string) int {
						mu.Lock()
						defer mu.Unlock()
						hookCalls = append(hookCalls, user)
						return tt.sessions
					}
				}
			})
			c := NewClient(d.path)
			var codes []string
			if tt.linked {
				codes = link(t, d, c, tt.user)
			}

			res, err := c.Reset(context.Background(), tt.user)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Reset = %+v, %v; want %v", res, err, tt.wantErr)
				}
				if tt.linked {
					if u, _ := d.st.Get(tt.user); u.State != store.StateActive {
						t.Errorf("refused reset changed the user: %s", u.State)
					}
				}
				for _, e := range auditOf(t, d.st, tt.user) {
					if strings.HasPrefix(e, "reset/") {
						t.Errorf("refused reset audited: %s", e)
					}
				}
				return
			}
			if err != nil || res != tt.want {
				t.Fatalf("Reset = %+v, %v; want %+v", res, err, tt.want)
			}
			mu.Lock()
			if len(hookCalls) != 1 || hookCalls[0] != tt.user {
				t.Errorf("OnReset called with %q, want [%s]", hookCalls, tt.user)
			}
			mu.Unlock()
			u, err := d.st.Get(tt.user)
			if err != nil || u.State != store.StateNone || len(u.Recovery) != 0 {
				t.Errorf("after reset %+v, %v; want no record", u, err)
			}
			audit := auditOf(t, d.st, tt.user)
			if want := "reset/" + me + "/" + tt.wantAudit; len(audit) == 0 || audit[len(audit)-1] != want {
				t.Errorf("audit log %q, want it to end with %q", audit, want)
			}
			// The user can link again, and the old recovery codes are gone with the record.
			newCodes := link(t, d, c, tt.user)
			for _, old := range codes {
				for _, n := range newCodes {
					if old == n {
						t.Error("a recovery code survived the reset")
					}
				}
			}
		})
	}
}

func TestUnlock(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	if _, err := c.Unlock(context.Background(), "alice"); !errors.Is(err, ErrNotImplemented) || !strings.Contains(err.Error(), "rate limiting") {
		t.Errorf("Unlock without a hook = %v, want ErrNotImplemented", err)
	}
	status, _, _ := rawDo(t, d.path, "POST", "/v1/users/alice/unlock")
	if status != http.StatusNotImplemented {
		t.Errorf("status %d, want 501", status)
	}

	lock := LockInfo{Scope: "user", Name: "alice", Until: t0.Add(time.Hour), Level: 2}
	locked := map[string]bool{"alice": true}
	var mu sync.Mutex
	var unlockedAddr netip.Addr
	d2 := startDaemonWith(t, nil, func(s *Server) {
		s.OnUnlock = func(user string) ([]LockInfo, error) {
			if user == "down" {
				return nil, fmt.Errorf("lockout counters: %w", store.ErrUnavailable)
			}
			mu.Lock()
			defer mu.Unlock()
			was := locked[user]
			delete(locked, user)
			if was {
				return []LockInfo{lock}, nil
			}
			return nil, nil
		}
		s.OnUnlockAddress = func(a netip.Addr) ([]LockInfo, error) {
			mu.Lock()
			defer mu.Unlock()
			unlockedAddr = a
			return []LockInfo{{Scope: "address", Name: a.String(), Until: t0.Add(time.Minute), Level: 1}}, nil
		}
	})
	c2 := NewClient(d2.path)
	for i, want := range []int{1, 0} {
		res, err := c2.Unlock(context.Background(), "alice")
		if err != nil || len(res.Cleared) != want || res.User != "alice" {
			t.Errorf("Unlock %d = %+v, %v; want %d locks cleared", i, res, err, want)
		}
	}
	// A lockout store that does not answer is an error, neither "cleared" nor "was not locked
	// out", and nothing is audited as done.
	if res, err := c2.Unlock(context.Background(), "down"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Unlock with the lockout store down = %+v, %v; want store unavailable", res, err)
	}
	if got := auditOf(t, d2.st, "down"); len(got) != 0 {
		t.Errorf("a failed unlock was audited: %q", got)
	}
	want := []string{"unlock/" + me + "/cleared " + lock.String(), "unlock/" + me + "/was not locked out"}
	if got := auditOf(t, d2.st, "alice"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("audit %q, want %q", got, want)
	}
	res, err := c2.UnlockAddress(context.Background(), netip.MustParseAddr("::ffff:203.0.113.9"))
	mu.Lock()
	got := unlockedAddr
	mu.Unlock()
	if err != nil || len(res.Cleared) != 1 || res.Address != "203.0.113.9" || got != netip.MustParseAddr("203.0.113.9") {
		t.Errorf("UnlockAddress = %+v, %v (hook saw %v)", res, err, got)
	}
	if status, _, _ := rawDo(t, d2.path, "POST", "/v1/addresses/not-an-ip/unlock"); status != http.StatusBadRequest {
		t.Errorf("unlock of a bad address: status %d, want 400", status)
	}
}

func TestTicketAPI(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	ctx := context.Background()

	token, expires, err := c.Ticket(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !expires.Equal(t0.Add(enroll.TicketTTL)) || len(token) < 20 {
		t.Errorf("Ticket = %q until %v", token, expires)
	}
	if err := d.st.CheckTicket("alice", token, t0); err != nil {
		t.Errorf("issued ticket not valid: %v", err)
	}
	if strings.Contains(d.log.String(), token) {
		t.Error("the daemon's log shows the ticket")
	}
	audit := auditOf(t, d.st, "alice")
	if len(audit) != 1 || !strings.HasPrefix(audit[0], "ticket_issued/"+me+"/valid until ") || strings.Contains(audit[0], token) {
		t.Errorf("audit %q, want one ticket_issued by %s without the token", audit, me)
	}
	status, hdr, body := rawDo(t, d.path, "POST", "/v1/users/alice/ticket")
	if status != http.StatusOK || hdr.Get("Cache-Control") != "no-store" || !strings.Contains(string(body), `"ticket":"`) {
		t.Errorf("raw ticket answer %d %v %s", status, hdr, body)
	}
	// That second ticket replaced the first.
	if err := d.st.CheckTicket("alice", token, t0); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("first ticket after a second one: %v", err)
	}

	link(t, d, c, "bob")
	if _, _, err := c.Ticket(ctx, "bob"); !errors.Is(err, enroll.ErrAlreadyLinked) {
		t.Errorf("Ticket for a linked user = %v, want ErrAlreadyLinked", err)
	}
	if _, _, err := c.Ticket(ctx, "a/b"); !errors.Is(err, store.ErrBadName) {
		t.Errorf("Ticket(a/b) = %v", err)
	}
}

func TestAuditAPI(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	ctx := context.Background()
	var batch []store.Event
	for i := range 1005 {
		user := "alice"
		if i%5 == 0 {
			user = "bob"
		}
		batch = append(batch, store.Event{Kind: store.EventLoginOK, User: user, Time: t0.Add(time.Duration(i-1005) * time.Minute), Detail: fmt.Sprint(i)})
	}
	if err := d.st.Append(batch...); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		q           store.EventQuery
		n           int
		first, last string // details
	}{
		{"default limit", store.EventQuery{}, DefaultAuditLimit, "5", "1004"},
		{"all", store.EventQuery{Limit: MaxAuditLimit}, 1005, "0", "1004"},
		{"user", store.EventQuery{User: "bob", Limit: 3}, 3, "990", "1000"},
		{"since", store.EventQuery{Since: t0.Add(-3 * time.Minute)}, 3, "1002", "1004"},
		{"user since", store.EventQuery{User: "bob", Since: t0.Add(-11 * time.Minute)}, 2, "995", "1000"},
		{"nobody", store.EventQuery{User: "carol"}, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := c.Audit(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(ev) != tt.n {
				t.Fatalf("%d events, want %d", len(ev), tt.n)
			}
			if tt.n > 0 && (ev[0].Detail != tt.first || ev[len(ev)-1].Detail != tt.last) {
				t.Errorf("events %s..%s, want %s..%s", ev[0].Detail, ev[len(ev)-1].Detail, tt.first, tt.last)
			}
		})
	}

	// A duration is counted back from the daemon's clock.
	_, _, body := rawDo(t, d.path, "GET", "/v1/audit?since=2m&user=alice")
	var ev []store.Event
	if err := json.Unmarshal(body, &ev); err != nil || len(ev) != 2 || ev[0].Detail != "1003" {
		t.Errorf("since=2m: %s", body)
	}

	for _, bad := range []struct{ query, code string }{
		{"since=yesterday", "bad_request"},
		{"since=-5m", "bad_request"},
		{"limit=0", "bad_request"},
		{"limit=abc", "bad_request"},
		{"limit=100001", "bad_request"},
		{"user=-x", "bad_name"},
	} {
		status, _, body := rawDo(t, d.path, "GET", "/v1/audit?"+bad.query)
		var eb errorBody
		if json.Unmarshal(body, &eb) != nil || status != http.StatusBadRequest || eb.Code != bad.code || eb.Error == "" {
			t.Errorf("?%s: %d %s, want 400 %s", bad.query, status, body, bad.code)
		}
	}
}

// TestEnrollAudited: linking over the socket names the caller in the audit log.
func TestEnrollAudited(t *testing.T) {
	d := startDaemon(t)
	link(t, d, NewClient(d.path), "alice")
	var kinds []string
	for _, e := range auditOf(t, d.st, "alice") {
		kinds = append(kinds, strings.SplitN(e, "/", 3)[0]+"/"+strings.SplitN(e, "/", 3)[1])
	}
	want := "link_started/" + me + " qr_shown/" + me + " link_confirmed/" + me
	if strings.Join(kinds, " ") != want {
		t.Errorf("audit %q, want %q", kinds, want)
	}
}

type fakeSession struct {
	ID   uint64 `json:"id"`
	User string `json:"user"`
}

func TestSessionsAPI(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	ctx := context.Background()
	if _, _, err := c.Sessions(ctx); !errors.Is(err, ErrNotImplemented) {
		t.Errorf("Sessions without a hook = %v", err)
	}
	if _, err := c.Kill(ctx, "", 1); !errors.Is(err, ErrNotImplemented) {
		t.Errorf("Kill without a hook = %v", err)
	}

	var mu sync.Mutex
	live := map[uint64]fakeSession{3: {3, "alice"}, 4: {4, "bob"}}
	var killed []string // node/id as the hook got them
	d2 := startDaemonWith(t, nil, func(s *Server) {
		s.Sessions = func(context.Context) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			out := []fakeSession{}
			for _, id := range []uint64{3, 4} {
				if s, ok := live[id]; ok {
					out = append(out, s)
				}
			}
			return out, nil
		}
		s.Kill = func(_ context.Context, node string, id uint64) (KillResult, error) {
			mu.Lock()
			defer mu.Unlock()
			killed = append(killed, fmt.Sprintf("%s/%d", node, id))
			x, ok := live[id]
			if !ok {
				return KillResult{}, fmt.Errorf("%w: no live session has id %d", ErrNoSuchSession, id)
			}
			delete(live, id)
			return KillResult{Node: node, ID: id, User: x.User, Remote: "192.0.2.1:2222", Ended: true}, nil
		}
	})
	c2 := NewClient(d2.path)
	raw, incomplete, err := c2.Sessions(ctx)
	if err != nil || incomplete != "" {
		t.Fatal(err, incomplete)
	}
	var got []fakeSession
	if err := json.Unmarshal(raw, &got); err != nil || len(got) != 2 || got[1].User != "bob" {
		t.Errorf("Sessions = %s, %v", raw, err)
	}
	if res, err := c2.Kill(ctx, "", 3); err != nil || !res.Ended || res.ID != 3 || res.User != "alice" {
		t.Errorf("Kill(3) = %+v, %v", res, err)
	}
	if _, err := c2.Kill(ctx, "", 3); !errors.Is(err, ErrNoSuchSession) || !strings.Contains(err.Error(), "3") {
		t.Errorf("Kill(3) again = %v, want ErrNoSuchSession", err)
	}
	raw, _, _ = c2.Sessions(ctx)
	if err := json.Unmarshal(raw, &got); err != nil || len(got) != 1 || got[0].ID != 4 {
		t.Errorf("Sessions after kill = %s", raw)
	}
	ev, err := d2.st.Events(store.EventQuery{})
	if err != nil || len(ev) != 1 || ev[0].Kind != store.EventSessionKilled || ev[0].Actor != me || ev[0].Detail != "session 3" || ev[0].User != "alice" {
		t.Errorf("audit = %+v, %v; want one session_killed of session 3 by %s", ev, err, me)
	}
	// NODE/ID reaches the hook with the node, and the audit names it.
	if res, err := c2.Kill(ctx, "node-b", 4); err != nil || res.Node != "node-b" || !res.Ended {
		t.Errorf("Kill(node-b/4) = %+v, %v", res, err)
	}
	if want := []string{"/3", "/3", "node-b/4"}; !slices.Equal(killed, want) {
		t.Errorf("the hook got %q, want %q", killed, want)
	}
	ev, _ = d2.st.Events(store.EventQuery{})
	if len(ev) != 2 || ev[1].Detail != "session node-b/4" || ev[1].User != "bob" {
		t.Errorf("audit = %+v, want session node-b/4 of bob", ev)
	}
	for _, bad := range []string{"abc", "-1", "18446744073709551616"} {
		if status, _, _ := rawDo(t, d2.path, "POST", "/v1/sessions/"+bad+"/kill"); status != http.StatusBadRequest {
			t.Errorf("kill %s: status %d, want 400", bad, status)
		}
	}
}

// TestSessionsAPICluster: what a daemon in a cluster answers besides the plain cases: a list
// that misses other nodes says so in a header, an id several nodes have is a conflict, a
// cluster out of reach is 503, and a kill another node has not confirmed comes back (and is
// audited) as asked, not ended.
func TestSessionsAPICluster(t *testing.T) {
	d := startDaemonWith(t, nil, func(s *Server) {
		s.Sessions = func(context.Context) (any, error) {
			return []fakeSession{{1, "alice"}}, fmt.Errorf("the sessions of the other nodes could not be read: etcd: %w\n(timeout)", store.ErrUnavailable)
		}
		s.Kill = func(_ context.Context, node string, id uint64) (KillResult, error) {
			switch {
			case node == "" && id == 1:
				return KillResult{}, fmt.Errorf("%w: several nodes have a session 1 (a/1, b/1): name one as NODE/ID", ErrAmbiguousSession)
			case node == "c":
				return KillResult{}, fmt.Errorf("the sessions of the other nodes could not be read: %w", store.ErrUnavailable)
			}
			return KillResult{Node: node, ID: id, User: "bob", Ended: false}, nil
		}
	})
	c := NewClient(d.path)
	ctx := context.Background()
	raw, incomplete, err := c.Sessions(ctx)
	if err != nil || !strings.Contains(string(raw), "alice") || !strings.HasPrefix(incomplete, "the sessions of the other nodes could not be read") ||
		strings.ContainsAny(incomplete, "\n\r") {
		t.Errorf("Sessions = %s, %q, %v", raw, incomplete, err)
	}
	if _, err := c.Kill(ctx, "", 1); !errors.Is(err, ErrAmbiguousSession) || !strings.Contains(err.Error(), "a/1, b/1") {
		t.Errorf("Kill(1) = %v, want ErrAmbiguousSession naming a/1 and b/1", err)
	}
	if _, err := c.Kill(ctx, "c", 1); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Kill(c/1) = %v, want ErrUnavailable", err)
	}
	if res, err := c.Kill(ctx, "b", 7); err != nil || res.Ended || res.Node != "b" {
		t.Errorf("Kill(b/7) = %+v, %v; want asked, not ended", res, err)
	}
	ev, _ := d.st.Events(store.EventQuery{})
	if len(ev) != 1 || !strings.HasPrefix(ev[0].Detail, "session b/7 (b was asked to end it") {
		t.Errorf("audit = %+v", ev)
	}
}

// TestDamagedRecordAPI: a damaged record, or one stored by hand under an invalid name, does not
// hide the other users from the list: it is listed with state damaged and the reason, and a reset
// by the name the list gives removes it (for an invalid name only while a record is stored under
// it), ending no one's sessions for an invalid name.
func TestDamagedRecordAPI(t *testing.T) {
	for _, name := range []string{"bob", "bad name", "a/b", "-x"} {
		t.Run(name, func(t *testing.T) {
			var resetFor []string
			d := startDaemonWith(t, func(t *testing.T, dbPath, keyPath string) {
				st, err := bolt.Open(dbPath, keyPath)
				if err != nil {
					t.Fatal(err)
				}
				for _, u := range []string{"alice", "carol"} {
					if err := st.Update(u, func(x *store.User) error { x.State, x.Secret = store.StateActive, []byte(u); return nil }); err != nil {
						t.Fatal(err)
					}
				}
				st.Close()
				damage(name)(t, dbPath, keyPath)
			}, func(s *Server) { s.OnReset = func(u string) int { resetFor = append(resetFor, u); return 0 } })
			c := NewClient(d.path)
			ctx := context.Background()
			if name == "bob" {
				if _, err := c.User(ctx, "bob"); !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), `"bob"`) {
					t.Errorf("User(bob) = %v, want ErrDamaged naming bob", err)
				}
			}
			users, err := c.Users(ctx)
			if err != nil {
				t.Fatalf("Users = %v", err)
			}
			var got []string
			for _, u := range users {
				got = append(got, u.Name+"/"+string(u.State))
				if u.State == StateDamaged && !strings.Contains(u.Damaged, fmt.Sprintf("%q", name)) {
					t.Errorf("damaged entry %+v does not name %q", u, name)
				}
			}
			want := []string{"alice/active", "carol/active", name + "/damaged"}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("Users = %v, want %v", got, want)
			}
			if strings.Count(d.log.String(), `"msg":"damaged user record","user":`) != 1 {
				t.Errorf("log has no line about the damaged record:\n%s", d.log.String())
			}

			res, err := c.Reset(ctx, name)
			if err != nil || !res.Damaged || !res.HadRecord {
				t.Fatalf("Reset(%q) = %+v, %v", name, res, err)
			}
			if users, err := c.Users(ctx); err != nil || len(users) != 2 {
				t.Errorf("Users after reset = %+v, %v", users, err)
			}
			if ev := auditOf(t, d.st, name); len(ev) != 1 || !strings.HasPrefix(ev[0], "reset/") {
				t.Errorf("audit of %q = %v, want the reset", name, ev)
			}
			valid := store.CheckName(name) == nil
			if wantReset := []string{name}; valid && !slices.Equal(resetFor, wantReset) || !valid && len(resetFor) != 0 {
				t.Errorf("sessions ended for %q, want them ended only for a valid name", resetFor)
			}
			// Gone now: a second reset of an invalid name is refused as such.
			if _, err := c.Reset(ctx, name); valid != errors.Is(err, ErrNoSuchUser) || !valid != errors.Is(err, store.ErrBadName) {
				t.Errorf("second Reset(%q) = %v", name, err)
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-11-20T08:30:00Z", time.Date(2026, 11, 20, 8, 30, 0, 0, time.UTC), true},
		{"2026-11-20T08:30:00.5+01:00", time.Date(2026, 11, 20, 7, 30, 0, 5e8, time.UTC), true},
		{"2026-11-20", time.Date(2026, 11, 20, 0, 0, 0, 0, time.Local), true},
		{"90m", now.Add(-90 * time.Minute), true},
		{"36h", now.Add(-36 * time.Hour), true},
		{"7d", now.AddDate(0, 0, -7), true},
		{"0d", now, true},
		{"", time.Time{}, false},
		{"-1h", time.Time{}, false},
		{"-2d", time.Time{}, false},
		{"7 days", time.Time{}, false},
		{"99999999d", time.Time{}, false},
		{"2026-13-01", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := ParseSince(tt.in, now)
		if tt.ok != (err == nil) || (tt.ok && !got.Equal(tt.want)) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
